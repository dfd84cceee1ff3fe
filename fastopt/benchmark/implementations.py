"""What `fastopt bench` measures: fastopt, the NumPy reference, the traffic-limit kernel, and the
peers (torch.optim, DeepSpeed's CPU Adam) when importable; in the cases of a clipping variant
("optim.AdamW+clip"), also noclip: fastopt's same optimizer without clipping. Each has a name
and prepare(optimizer, params, grads) -> a callable doing one update on its own copies of the
arrays, or raises Unsupported.

The optimizer names (fastopt.benchmark.workloads.parse_optimizer): a textbook class
("Adam": fastopt.optimizers, twin fastopt.reference), a class of fastopt.optim ("optim.AdamW":
default arguments, twin fastopt.reference.optim), or its clipping variant ("optim.AdamW+clip":
update(params, grads, max_grad_norm=1.0), on gradients rescaled to a global norm of 10).
"""
import contextlib
import functools
import math
import os
import sys
import tempfile

import numpy as np

from fastopt import optim, optimizers, reference
from fastopt.reference import optim as reference_optim

from .traffic import TrafficLimit
from .workloads import CLIP_GRADIENT_NORM, CLIP_MAX_GRAD_NORM, parse_optimizer, state_arrays

IMPLEMENTATIONS = ("fastopt", "numpy", "limit", "torch", "deepspeed", "noclip")
PEERS = ("torch", "deepspeed")


class Unsupported(Exception):
    """This implementation does not run this case (the message says why)."""


class NotApplicable(Unsupported):
    """This implementation has nothing to measure in this case by design (noclip outside the
    clipping variants): not reported as unsupported."""


def _copies(arrays):
    return {name: array.copy() for name, array in arrays.items()}


def case_gradients(optimizer, grads):
    """The gradients an implementation runs the named optimizer on: grads themselves, or for a
    clipping variant copies rescaled to a global norm of CLIP_GRADIENT_NORM (10x
    CLIP_MAX_GRAD_NORM), so that clipping bites at every size (the workloads' gradients, N(0,
    0.01), have a norm below 1 under 1e4 elements). The time does not depend on it anyway:
    fastopt and torch multiply by the clip coefficient whatever it is."""
    if not parse_optimizer(optimizer).clip:
        return grads
    norm = math.sqrt(sum(float(np.linalg.norm(g.astype(np.float64).ravel())) ** 2
                         for g in grads.values()))
    factor = CLIP_GRADIENT_NORM / norm if norm > 0 else 1.0
    return {name: (g * factor).astype(g.dtype) for name, g in grads.items()}


class _Clipped:
    """An optimizer whose update(params, grads) is update(params, grads, max_grad_norm=...)."""

    def __init__(self, optimizer, max_grad_norm):
        self.optimizer = optimizer
        self.max_grad_norm = max_grad_norm

    def update(self, params, grads):
        return self.optimizer.update(params, grads, max_grad_norm=self.max_grad_norm)


class DictImplementation:
    """An implementation with the textbook's API: make(optimizer name) -> object with
    update(params, grads), run on its own copies of the arrays."""

    def __init__(self, name, make):
        self.name = name
        self.make = make

    def prepare(self, optimizer, params, grads):
        """A callable doing one update() of a fresh optimizer on copies of params and grads."""
        grads = case_gradients(optimizer, grads)
        return functools.partial(self.make(optimizer).update, _copies(params), _copies(grads))


def _maker(textbook, family):
    """make(optimizer name) for a DictImplementation: textbook(class name) for a textbook
    name, family(class name) for a class of fastopt.optim (wrapped to clip for "+clip")."""
    def make(optimizer):
        parsed = parse_optimizer(optimizer)
        if not parsed.family:
            return textbook(parsed.class_name)
        instance = family(parsed.class_name)
        return _Clipped(instance, CLIP_MAX_GRAD_NORM) if parsed.clip else instance

    return make


def _traffic_limit(optimizer):
    """The traffic-limit kernel with the named optimizer's number of state arrays; Unsupported
    for a registered optimizer with more state arrays than any traffic kernel has, and for a
    clipping variant (the norm pass reads the gradients once more: no kernel moves its bytes)."""
    if parse_optimizer(optimizer).clip:
        raise Unsupported(f"no traffic-limit kernel for {optimizer}: its norm pass reads the "
                          f"gradients once more, and no traffic kernel moves those bytes")
    try:
        return TrafficLimit(state_arrays(optimizer))
    except ValueError as error:
        raise Unsupported(f"no traffic-limit kernel for {optimizer}: {error}") from None


def _unclipped(optimizer):
    """fastopt's optimizer of a clipping variant, stepping without max_grad_norm."""
    parsed = parse_optimizer(optimizer)
    if not parsed.clip:
        raise NotApplicable(f"{optimizer} is not a clipping variant")
    return optim.OPTIMIZERS[parsed.class_name]()


FASTOPT = DictImplementation("fastopt", _maker(lambda name: optimizers.OPTIMIZERS[name](),
                                               lambda name: optim.OPTIMIZERS[name]()))
NUMPY = DictImplementation("numpy", _maker(lambda name: getattr(reference, name)(),
                                           lambda name: reference_optim.OPTIMIZERS[name]()))
LIMIT = DictImplementation("limit", _traffic_limit)
# In the cases of a clipping variant: the same optimizer, the same (rescaled) gradients, no
# clipping, interleaved with the clipped one, for the cost of clipping (fastopt / noclip).
NOCLIP = DictImplementation("noclip", _unclipped)

# torch.optim class and arguments for each textbook optimizer, with the textbook's hyperparameters
# (and eps=1e-7 where torch has one); torch's formulas differ in details.
TORCH_OPTIMIZERS = {
    "SGD": ("SGD", {"lr": 0.01}),
    "Momentum": ("SGD", {"lr": 0.01, "momentum": 0.9}),
    "Nesterov": ("SGD", {"lr": 0.01, "momentum": 0.9, "nesterov": True}),
    "AdaGrad": ("Adagrad", {"lr": 0.01, "eps": 1e-7}),
    "RMSprop": ("RMSprop", {"lr": 0.01, "alpha": 0.99, "eps": 1e-7}),
    "Adam": ("Adam", {"lr": 0.001, "betas": (0.9, 0.999), "eps": 1e-7}),
}


def _torch_parameters(torch, params, grads):
    """torch Parameters on copies of params, with copies of grads as their .grad."""
    tensors = []
    for name in params:
        tensor = torch.nn.Parameter(torch.from_numpy(params[name].copy()))
        tensor.grad = torch.from_numpy(grads[name].copy())
        tensors.append(tensor)
    return tensors


def torch_counterpart(optimizer):
    """(torch.optim class name, arguments) of the named optimizer; Unsupported where none is
    known. A textbook class: TORCH_OPTIMIZERS. A class of fastopt.optim: the torch.optim class
    of the same name with every argument of fastopt's default instance (torch's own defaults:
    fastopt.optim takes torch's names and defaults); Lion has none (torch.optim has no Lion)."""
    parsed = parse_optimizer(optimizer)
    if not parsed.family:
        if optimizer not in TORCH_OPTIMIZERS:  # a newly registered optimizer
            raise Unsupported(f"no torch.optim counterpart of {optimizer} is known")
        return TORCH_OPTIMIZERS[optimizer]
    if parsed.class_name == "Lion":
        raise Unsupported(f"no torch.optim counterpart of {optimizer}: torch.optim has no Lion "
                          f"(fastopt.optim.Lion follows optax.lion)")
    if parsed.class_name not in TORCH_CLASSES:
        raise Unsupported(f"no torch.optim counterpart of {optimizer} is known")
    arguments = dict(optim.OPTIMIZERS[parsed.class_name]()._hyperparameters)
    return parsed.class_name, arguments


# The classes of fastopt.optim that torch.optim has under the same name, with the same arguments
TORCH_CLASSES = ("SGD", "Adam", "AdamW", "Adagrad", "RMSprop", "Adadelta", "Adamax", "NAdam",
                 "RAdam")


class TorchImplementation:
    """torch.optim on CPU: fused=True where torch has a fused CPU kernel, else foreach=True. For
    a clipping variant ("optim.AdamW+clip"): torch.nn.utils.clip_grad_norm_(parameters,
    max_norm) (torch's defaults otherwise), then the step, as a torch user writes it; it
    rescales the gradients in place, so after the first call their norm stays at the bound,
    but it multiplies them by the clip coefficient whatever it is: the time is the same."""

    name = "torch"

    def __init__(self, torch):
        self.torch = torch
        self.version = torch.__version__
        self.modes = {}  # optimizer name -> "fused" or "foreach", once known

    def prepare(self, optimizer, params, grads):
        class_name, arguments = torch_counterpart(optimizer)
        optimizer_class = getattr(self.torch.optim, class_name)
        grads = case_gradients(optimizer, grads)
        tensors = _torch_parameters(self.torch, params, grads)
        try:
            instance = optimizer_class(tensors, fused=True, **arguments)
            instance.step()  # a fused kernel the build lacks fails here, not at construction
            self.modes[optimizer] = "fused"
        except (TypeError, RuntimeError):
            tensors = _torch_parameters(self.torch, params, grads)
            instance = optimizer_class(tensors, foreach=True, **arguments)
            self.modes[optimizer] = "foreach"
        if not parse_optimizer(optimizer).clip:
            return instance.step
        clip_grad_norm = self.torch.nn.utils.clip_grad_norm_

        def clip_and_step():
            clip_grad_norm(tensors, CLIP_MAX_GRAD_NORM)
            instance.step()

        return clip_and_step

    def describe(self):
        """A line for the report: version, threads, and (after a run) fused or foreach."""
        modes = ", ".join(f"{optimizer} {mode}" for optimizer, mode in self.modes.items())
        clipping = any(parse_optimizer(optimizer).clip for optimizer in self.modes)
        return (f"torch {self.version}: torch.optim at {self.torch.get_num_threads()} threads, "
                f"fused=True where torch has a fused CPU kernel, else foreach=True"
                f"{' (' + modes + ')' if modes else ''}"
                f"{'; +clip: torch.nn.utils.clip_grad_norm_ then the step' if clipping else ''}"
                f"; torch's own formulas: a speed peer, not a numbers peer")


class DeepSpeedImplementation:
    """DeepSpeed's CPU Adam (DeepSpeedCPUAdam, adamw_mode=False, weight_decay=0), float32 only."""

    name = "deepspeed"

    def __init__(self, torch, optimizer_class, version):
        self.torch = torch
        self.optimizer_class = optimizer_class
        self.version = version

    def prepare(self, optimizer, params, grads):
        if optimizer != "Adam":
            raise Unsupported("DeepSpeed's CPU optimizer is Adam only")
        if next(iter(params.values())).dtype != np.float32:
            raise Unsupported("DeepSpeedCPUAdam runs float32 parameters only")
        tensors = _torch_parameters(self.torch, params, grads)
        with _captured_output():  # it prints a line per optimizer created
            instance = self.optimizer_class(tensors, lr=0.001, betas=(0.9, 0.999), eps=1e-7,
                                            weight_decay=0.0, adamw_mode=False)
        return instance.step

    def describe(self):
        """A line for the report."""
        return (f"deepspeed {self.version}: DeepSpeedCPUAdam (float32 Adam only), at torch's "
                f"OpenMP thread count")


@contextlib.contextmanager
def _captured_output():
    """Send what is written to stdout and stderr, by Python code (sys.stdout, sys.stderr) and by
    C code and subprocesses (file descriptors 1 and 2), to a temporary file; yields a function
    returning what was written so far (for error messages)."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = [os.dup(1), os.dup(2)]
    with tempfile.TemporaryFile(mode="w+b") as capture, \
            os.fdopen(os.dup(capture.fileno()), "w", buffering=1, errors="replace") as text:
        os.dup2(capture.fileno(), 1)
        os.dup2(capture.fileno(), 2)

        def captured():
            text.flush()
            capture.seek(0)
            return capture.read().decode(errors="replace")

        try:
            with contextlib.redirect_stdout(text), contextlib.redirect_stderr(text):
                yield captured
        finally:
            text.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            for descriptor in saved:
                os.close(descriptor)


def load_peers(wanted, threads, need_deepspeed):
    """Import the peers named in `wanted`. Returns (implementations, notes): the ones that can
    run, and a line for each peer that cannot, saying why."""
    implementations, notes = [], []
    torch = None
    if "torch" in wanted or (need_deepspeed and "deepspeed" in wanted):
        try:
            import torch
        except ImportError:
            torch = None
    if "torch" in wanted:
        if torch is None:
            notes.append("torch: not installed (pip install torch)")
        else:
            torch.set_num_threads(threads)
            implementations.append(TorchImplementation(torch))
    if "deepspeed" in wanted:
        if not need_deepspeed:
            notes.append("deepspeed: not run (it has only a float32 Adam, and no such case "
                         "was chosen)")
        elif torch is None:
            notes.append("deepspeed: not run (it needs torch: pip install torch deepspeed)")
        else:
            peer, note = _load_deepspeed(torch)
            torch.set_num_threads(threads)  # set again: importing deepspeed may change it
            if peer is not None:
                implementations.append(peer)
            else:
                notes.append(note)
    return implementations, notes


def _load_deepspeed(torch):
    """(DeepSpeedImplementation, None), or (None, the reason it cannot run)."""
    os.environ.setdefault("DS_ACCELERATOR", "cpu")
    print("loading DeepSpeed's CPU Adam (its first use compiles it with ninja, which can take "
          "minutes)...", file=sys.stderr, flush=True)
    with _captured_output() as captured:
        try:
            import deepspeed
            from deepspeed.ops.adam import DeepSpeedCPUAdam
        except ImportError:
            return None, "deepspeed: not installed (pip install deepspeed)"
        except Exception as error:  # a broken install raises anything at import
            return None, f"deepspeed: import failed: {_one_line(error)}"
        try:
            probe = DeepSpeedImplementation(torch, DeepSpeedCPUAdam, deepspeed.__version__)
            parameter = torch.nn.Parameter(torch.zeros(8))
            parameter.grad = torch.ones(8)
            DeepSpeedCPUAdam([parameter], lr=0.001, adamw_mode=False).step()
        except Exception as error:  # the JIT build of the op fails in many ways
            last_lines = " | ".join(captured().strip().splitlines()[-3:])
            return None, (f"deepspeed {deepspeed.__version__}: its CPU Adam op failed to build "
                          f"or load: {_one_line(error)}"
                          + (f" (build output ends: {last_lines})" if last_lines else ""))
    return probe, None


def _one_line(error):
    text = " ".join(str(error).split())
    return f"{type(error).__name__}: {text[:300]}"
