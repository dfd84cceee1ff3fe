"""What `fastopt bench` measures: fastopt, the NumPy reference, the traffic-limit kernel, and the
peers (torch.optim, DeepSpeed's CPU Adam) when importable. Each has a name and
prepare(optimizer, params, grads) -> a callable doing one update on its own copies of the
arrays, or raises Unsupported.
"""
import contextlib
import functools
import os
import sys
import tempfile

import numpy as np

from fastopt import optimizers, reference

from .traffic import TrafficLimit
from .workloads import state_arrays

IMPLEMENTATIONS = ("fastopt", "numpy", "limit", "torch", "deepspeed")
PEERS = ("torch", "deepspeed")


class Unsupported(Exception):
    """This implementation does not run this case (the message says why)."""


def _copies(arrays):
    return {name: array.copy() for name, array in arrays.items()}


class DictImplementation:
    """An implementation with the textbook's API: make(optimizer name) -> object with
    update(params, grads), run on its own copies of the arrays."""

    def __init__(self, name, make):
        self.name = name
        self.make = make

    def prepare(self, optimizer, params, grads):
        """A callable doing one update() of a fresh optimizer on copies of params and grads."""
        return functools.partial(self.make(optimizer).update, _copies(params), _copies(grads))


def _traffic_limit(optimizer):
    """The traffic-limit kernel with the named optimizer's number of state arrays; Unsupported
    for a registered optimizer with more state arrays than any traffic kernel has."""
    try:
        return TrafficLimit(state_arrays(optimizer))
    except ValueError as error:
        raise Unsupported(f"no traffic-limit kernel for {optimizer}: {error}") from None


FASTOPT = DictImplementation("fastopt", lambda optimizer: optimizers.OPTIMIZERS[optimizer]())
NUMPY = DictImplementation("numpy", lambda optimizer: getattr(reference, optimizer)())
LIMIT = DictImplementation("limit", _traffic_limit)

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


class TorchImplementation:
    """torch.optim on CPU: fused=True where torch has a fused CPU kernel, else foreach=True."""

    name = "torch"

    def __init__(self, torch):
        self.torch = torch
        self.version = torch.__version__
        self.modes = {}  # optimizer name -> "fused" or "foreach", once known

    def prepare(self, optimizer, params, grads):
        if optimizer not in TORCH_OPTIMIZERS:  # a newly registered optimizer
            raise Unsupported(f"no torch.optim counterpart of {optimizer} is known")
        class_name, arguments = TORCH_OPTIMIZERS[optimizer]
        optimizer_class = getattr(self.torch.optim, class_name)
        tensors = _torch_parameters(self.torch, params, grads)
        try:
            instance = optimizer_class(tensors, fused=True, **arguments)
            instance.step()  # a fused kernel the build lacks fails here, not at construction
            self.modes[optimizer] = "fused"
        except (TypeError, RuntimeError):
            tensors = _torch_parameters(self.torch, params, grads)
            instance = optimizer_class(tensors, foreach=True, **arguments)
            self.modes[optimizer] = "foreach"
        return instance.step

    def describe(self):
        """A line for the report: version, threads, and (after a run) fused or foreach."""
        modes = ", ".join(f"{optimizer} {mode}" for optimizer, mode in self.modes.items())
        return (f"torch {self.version}: torch.optim at {self.torch.get_num_threads()} threads, "
                f"fused=True where torch has a fused CPU kernel, else foreach=True"
                f"{' (' + modes + ')' if modes else ''}; torch's own formulas: a speed peer, "
                f"not a numbers peer")


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
