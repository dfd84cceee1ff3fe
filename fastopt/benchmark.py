"""`fastopt bench`: time every optimizer against NumPy, the peers and this machine's memory ceiling.

Run it as ``fastopt bench`` or ``python -m fastopt bench`` (``--help`` lists the options;
``--quick`` for a one-minute look). For each case (an optimizer, a dtype and a workload: one
array of n elements, or a model's dict of arrays) it measures, interleaved within the case:

- fastopt: ``getattr(fastopt, name)().update(params, grads)``;
- numpy: the same class from ``fastopt.reference`` (the seeds' pure-NumPy code), the baseline;
- limit: ``fastopt.optimizers.TrafficLimit(n_states)`` through the same update() path, a kernel
  that reads and writes exactly the bytes the optimizer must move, with trivial math: the
  measured ceiling of this machine for that case;
- torch: ``torch.optim`` with ``fused=True`` where torch has a fused CPU kernel (``foreach=True``
  otherwise), at the same thread count, when torch is installed. Its formulas differ in details
  (Adam's eps placement, Momentum's lr), so it is a speed peer, not a numbers peer;
- deepspeed: ``deepspeed.ops.adam.DeepSpeedCPUAdam`` for Adam on float32, when importable.

It prints a table of median time per update(), effective GB/s (the bytes the optimizer must read
and write: 3 arrays for SGD, 5 for one state array, 7 for Adam, times itemsize times elements),
the speedup over NumPy and over the peers, and the fraction of the ceiling reached; then the
project's performance targets, met or not, with the ratios. ``--json`` writes every number,
``--plot`` draws GB/s against size with the ceiling.

Timing: time.perf_counter around batches of calls (a batch lasts about BATCH_SECONDS, or one call
when a call is longer), after warm-up calls; implementations take turns round by round, in a
rotating order (a fast one runs several batches per round while a slow one runs one), until the
case has run --repeat rounds and --min-time seconds; the median batch mean is reported. Each
implementation updates its own copies of the arrays; the gradients are the same every step (a
step does not change them). Large cases are measured on three sets of copies in turn, pooled,
since an array's speed there depends on where its pages land.

The pytest-benchmark suite in bench/ uses the same workloads and implementations (see
bench/README.md): ``pytest bench/``.
"""
import argparse
import contextlib
import dataclasses
import functools
import gc
import json
import math
import os
import platform
import sys
import tempfile
import time

import numpy as np

import fastopt
from fastopt import reference
from fastopt.optimizers import TrafficLimit

OPTIMIZERS = ("SGD", "Momentum", "Nesterov", "AdaGrad", "RMSprop", "Adam")

# State arrays each optimizer keeps per parameter; it reads p, g and every state array and writes
# p and every state array, so an update moves 3 + 2 * n_states arrays.
STATE_ARRAYS = {"SGD": 0, "Momentum": 1, "Nesterov": 1, "AdaGrad": 1, "RMSprop": 1, "Adam": 2}

DTYPES = {"float32": np.dtype(np.float32), "float64": np.dtype(np.float64)}
DEFAULT_SIZES = (1, 1_000, 100_000, 1_000_000, 10_000_000)
QUICK_SIZES = (1, 1_000, 100_000, 1_000_000)
DEFAULT_MIN_TIME = 0.8  # seconds of measurement per case
QUICK_MIN_TIME = 0.15
DEFAULT_REPEAT = 5  # rounds per case at least (each implementation runs one batch per round)
QUICK_REPEAT = 3
BATCH_SECONDS = 0.004  # target length of one timed batch of calls
MAX_BATCHES_PER_ROUND = 8  # batches a fast implementation runs per round, at most
LARGE_CASE_BYTES = 16e6  # from this many bytes moved per update, how much of a case the caches
#                         hold (and how fast it runs) depends on where its pages land
LARGE_CASE_ALLOCATIONS = 3  # sets of array copies a large case is measured on, in turn
WARMUP_CALLS = 2  # untimed calls before calibration (the first one creates the state)
BUSY_LOAD = 1.0  # a 1-minute load average from this on before the run earns a warning
BUSY_SHARE = 0.05  # other processes' share of the CPU during the run that earns a warning
BUSY_CASE_SHARE = 0.10  # other processes' share of the CPU during a case that earns a retry
DEFAULT_RETRIES = 2  # more measurements at most of a case disturbed by other processes
RETRY_BUDGET_SECONDS = 60.0  # time all retries of a run may take together

IMPLEMENTATIONS = ("fastopt", "numpy", "limit", "torch", "deepspeed")
PEERS = ("torch", "deepspeed")


# ---- workloads ---------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Workload:
    """What one update() works on: a dict of arrays of the given shapes and dtype.

    kind: "single" (one array of n elements) or the name of a multi-array workload.
    label: how the table names it ("1e6", "seeds' MLP").
    """

    kind: str
    label: str
    shapes: tuple
    dtype: np.dtype

    @property
    def elements(self):
        """Elements in all arrays together."""
        return sum(math.prod(shape) for shape in self.shapes)

    @property
    def arrays(self):
        """Number of arrays in the dict."""
        return len(self.shapes)

    def bytes_moved(self, optimizer):
        """Bytes one update() of the named optimizer must read and write (the GB/s numerator)."""
        return (3 + 2 * STATE_ARRAYS[optimizer]) * self.dtype.itemsize * self.elements

    def make_arrays(self, seed=0):
        """(params, grads): dicts of fresh arrays, keys "W1", "b1", ... for a model's layers and
        "x0", "x1", ... otherwise; params ~ N(0, 0.1), grads ~ N(0, 0.01)."""
        rng = np.random.default_rng(seed)
        names = _array_names(self)
        params = {name: (0.1 * rng.standard_normal(shape)).astype(self.dtype)
                  for name, shape in zip(names, self.shapes)}
        grads = {name: (0.01 * rng.standard_normal(shape)).astype(self.dtype)
                 for name, shape in zip(names, self.shapes)}
        return params, grads


def _array_names(workload):
    if workload.kind in ("mlp", "book-mlp"):  # the seeds' naming: W1, b1, W2, b2, ...
        return [f"{'W' if index % 2 == 0 else 'b'}{index // 2 + 1}"
                for index in range(workload.arrays)]
    return [f"x{index}" for index in range(workload.arrays)]


def _mlp_shapes(layer_sizes):
    """Weight and bias shapes of a fully connected net, e.g. (784, 40, 20, 10)."""
    shapes = []
    for inputs, outputs in zip(layer_sizes, layer_sizes[1:]):
        shapes += [(inputs, outputs), (outputs,)]
    return tuple(shapes)


def single_array(size, dtype):
    """The workload of one 1-D array of `size` elements."""
    return Workload("single", format_count(size, exact=True), ((size,),), np.dtype(dtype))


# The multi-array workloads: the models the seeds and the book train, and a many-tensor case.
# Their dtypes are fixed (the seeds use float64), whatever --dtype says.
MULTI_ARRAY_WORKLOADS = {
    "mlp": Workload("mlp", "seeds' MLP", _mlp_shapes((784, 40, 20, 10)), np.dtype(np.float64)),
    "book-mlp": Workload("book-mlp", "book 5x100 MLP",
                         _mlp_shapes((784, 100, 100, 100, 100, 100, 10)), np.dtype(np.float64)),
    "many-small": Workload("many-small", "200 x 4096", ((4096,),) * 200, np.dtype(np.float32)),
}
WORKLOAD_KINDS = ("single",) + tuple(MULTI_ARRAY_WORKLOADS)


@dataclasses.dataclass(frozen=True)
class Case:
    """One row of the table: an optimizer on a workload."""

    optimizer: str
    workload: Workload

    @property
    def title(self):
        return f"{self.optimizer} {self.workload.dtype.name} {self.workload.label}"


def plan_cases(optimizers, dtypes, sizes, workload_kinds):
    """The cases to run, in table order: per optimizer, single arrays by dtype and size, then
    the multi-array workloads."""
    cases = []
    for optimizer in optimizers:
        if "single" in workload_kinds:
            cases += [Case(optimizer, single_array(size, dtype))
                      for dtype in dtypes for size in sizes]
        cases += [Case(optimizer, MULTI_ARRAY_WORKLOADS[kind])
                  for kind in workload_kinds if kind != "single"]
    return cases


# ---- implementations ---------------------------------------------------------------------------

class Unsupported(Exception):
    """This implementation does not run this case (the message says why)."""


def _copies(arrays):
    return {name: array.copy() for name, array in arrays.items()}


class DictImplementation:
    """An implementation with the seeds' API: make(optimizer name) -> object with
    update(params, grads), run on its own copies of the arrays."""

    def __init__(self, name, make):
        self.name = name
        self.make = make

    def prepare(self, optimizer, params, grads):
        """A callable doing one update() of a fresh optimizer on copies of params and grads."""
        return functools.partial(self.make(optimizer).update, _copies(params), _copies(grads))


FASTOPT = DictImplementation("fastopt", lambda optimizer: getattr(fastopt, optimizer)())
NUMPY = DictImplementation("numpy", lambda optimizer: getattr(reference, optimizer)())
LIMIT = DictImplementation("limit", lambda optimizer: TrafficLimit(STATE_ARRAYS[optimizer]))

# torch.optim class and arguments for each seeds' optimizer, with the seeds' hyperparameters
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


# ---- timing ------------------------------------------------------------------------------------

@dataclasses.dataclass
class Timing:
    """One implementation's timing of one case: per-call seconds of each batch."""

    calls_per_batch: int
    samples: list

    @property
    def median(self):
        """Median seconds per call (over batches)."""
        return float(np.median(self.samples))


def measure(steps, min_time, repeat):
    """Time each callable of `steps` ({name: callable doing one update}) interleaved.

    Each is called WARMUP_CALLS times, then once more timed to choose its batch size (calls
    lasting about BATCH_SECONDS together). Then rounds, in an order rotating from round to
    round: in each, every implementation runs its batches back to back, as many as fit in the
    slowest implementation's batch (at most MAX_BATCHES_PER_ROUND), so that the fast ones
    collect many samples while a slow one (NumPy at 1e7) runs few calls. Rounds go on until
    `repeat` rounds and `min_time` seconds have passed. Returns {name: Timing}.
    """
    names = list(steps)
    calls_per_batch, batch_seconds = {}, {}
    for name in names:
        for _ in range(WARMUP_CALLS):
            steps[name]()
        start = time.perf_counter()
        steps[name]()
        one_call = max(time.perf_counter() - start, 1e-9)
        calls_per_batch[name] = max(1, int(BATCH_SECONDS / one_call))
        batch_seconds[name] = calls_per_batch[name] * one_call
    slowest = max(batch_seconds.values())
    batches_per_round = {name: min(MAX_BATCHES_PER_ROUND, max(1, round(slowest / seconds)))
                         for name, seconds in batch_seconds.items()}
    samples = {name: [] for name in names}
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        began = time.perf_counter()
        rounds = 0
        while rounds < repeat or time.perf_counter() - began < min_time:
            shift = rounds % len(names)
            for name in names[shift:] + names[:shift]:
                step, calls = steps[name], range(calls_per_batch[name])
                for _ in range(batches_per_round[name]):
                    start = time.perf_counter()
                    for _ in calls:
                        step()
                    samples[name].append((time.perf_counter() - start) / len(calls))
            rounds += 1
    finally:
        if gc_was_enabled:
            gc.enable()
    return {name: Timing(calls_per_batch[name], samples[name]) for name in names}


@dataclasses.dataclass
class CaseResult:
    """The measurements of one case, and the ratios the table shows."""

    case: Case
    timings: dict  # implementation name -> Timing
    unsupported: dict  # implementation name -> reason
    others_cpu_share: float = None  # of the machine's CPU time, taken by other processes
    tries: int = 1  # measurements made of this case (see measure_case_retrying)
    allocations: int = 1  # sets of array copies the samples were pooled from (see run_case)

    def median(self, implementation):
        """Median seconds per update(), or None if not measured."""
        timing = self.timings.get(implementation)
        return None if timing is None else timing.median

    def gigabytes_per_second(self, implementation):
        """Effective GB/s: the bytes the optimizer must move over the median time."""
        seconds = self.median(implementation)
        if seconds is None:
            return None
        return self.case.workload.bytes_moved(self.case.optimizer) / seconds / 1e9

    def speedup(self, over):
        """How many times faster fastopt is than `over` (its median / fastopt's median)."""
        return _ratio(self.median(over), self.median("fastopt"))

    @property
    def limit_ratio(self):
        """fastopt's time over the traffic-limit kernel's (1.00 = at this machine's ceiling)."""
        return _ratio(self.median("fastopt"), self.median("limit"))

    def to_json(self):
        workload = self.case.workload
        return {
            "optimizer": self.case.optimizer,
            "dtype": workload.dtype.name,
            "workload": workload.kind,
            "label": workload.label,
            "elements": workload.elements,
            "arrays": workload.arrays,
            "bytes_per_update": workload.bytes_moved(self.case.optimizer),
            "implementations": {
                name: {"median_seconds": timing.median,
                       "gigabytes_per_second": self.gigabytes_per_second(name),
                       "calls_per_batch": timing.calls_per_batch,
                       "per_call_seconds_by_batch": timing.samples}
                for name, timing in self.timings.items()},
            "unsupported": self.unsupported,
            "speedup_over": {name: self.speedup(name) for name in self.timings
                             if name != "fastopt"},
            "fastopt_over_limit_time": self.limit_ratio,
            "others_cpu_share": self.others_cpu_share,
            "tries": self.tries,
            "allocations": self.allocations,
        }


def _ratio(numerator, denominator):
    if numerator is None or denominator is None or denominator <= 0:
        return None
    return numerator / denominator


def run_case(case, implementations, min_time, repeat):
    """Prepare every implementation on fresh copies of the case's arrays and measure them.

    A large case (LARGE_CASE_BYTES moved per update or more) is measured on
    LARGE_CASE_ALLOCATIONS sets of copies in turn, its rounds and time shared among them, and
    the samples pooled: there the speed of an array depends on where its pages land (by some
    10% from one allocation to the next here, more near the size of the L3 cache), and one
    allocation would give every implementation one lucky or unlucky draw."""
    large = case.workload.bytes_moved(case.optimizer) >= LARGE_CASE_BYTES
    allocations = LARGE_CASE_ALLOCATIONS if large else 1
    meter = OthersCpuMeter()
    timings, unsupported = {}, {}
    for allocation in range(allocations):
        params, grads = case.workload.make_arrays(seed=allocation)
        steps = {}
        for implementation in implementations:
            try:
                steps[implementation.name] = implementation.prepare(case.optimizer, params, grads)
            except Unsupported as reason:
                unsupported[implementation.name] = str(reason)
        del params, grads
        measured = measure(steps, min_time / allocations, math.ceil(repeat / allocations))
        del steps  # free this set of copies before the next one is made
        for name, timing in measured.items():
            if name in timings:
                timings[name].samples += timing.samples
            else:
                timings[name] = timing
    return CaseResult(case, timings, unsupported, meter.share(), allocations=allocations)


def measure_case_retrying(case, implementations, min_time, repeat, retries, budget_seconds):
    """run_case, then again (at most `retries` more times, while the retries so far took less
    than `budget_seconds`) as long as other processes took more than BUSY_CASE_SHARE of the
    CPU during it: a neighbour's burst is often shorter than a case. Keeps the quietest try.
    Returns (result, seconds spent on retries)."""
    result = run_case(case, implementations, min_time, repeat)
    spent = 0.0
    tries = 1
    while (tries <= retries and spent < budget_seconds and result.others_cpu_share is not None
           and result.others_cpu_share > BUSY_CASE_SHARE):
        began = time.perf_counter()
        retry = run_case(case, implementations, min_time, repeat)
        spent += time.perf_counter() - began
        tries += 1
        if retry.others_cpu_share < result.others_cpu_share:
            result = retry
    result.tries = tries
    return result, spent


class OthersCpuMeter:
    """How much of the machine's CPU time other processes took since this meter was made:
    busy time from /proc/stat minus this process's (and its children's) CPU time, over wall
    time x cores. On a 2-core machine a busy neighbour delays every multi-threaded update() by
    milliseconds, so the table shows this next to each case. share() is None where /proc/stat
    is missing."""

    def __init__(self):
        self.start = self._snapshot()

    @staticmethod
    def _snapshot():
        try:
            with open("/proc/stat") as stat:
                fields = [int(value) for value in stat.readline().split()[1:]]
        except (OSError, ValueError):
            return None
        ticks_per_second = os.sysconf("SC_CLK_TCK")
        idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
        busy = (sum(fields[:8]) - idle) / ticks_per_second  # guest time is inside user time
        # This process and its finished children (DeepSpeedCPUAdam runs py-cpuinfo in one).
        own = sum(os.times()[:4])
        return time.perf_counter(), busy, own

    def share(self):
        """Other processes' share of the machine's CPU time since the start (0 to 1)."""
        end = self._snapshot()
        if self.start is None or end is None:
            return None
        wall = end[0] - self.start[0]
        others = (end[1] - self.start[1]) - (end[2] - self.start[2])
        return min(1.0, max(0.0, others / (wall * (os.cpu_count() or 1))))


# ---- targets -----------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Target:
    """A performance goal on one case: a ratio and the bound it must meet."""

    optimizer: str
    dtype: str
    workload: str  # a multi-array kind, or the element count of a single array
    metric: str  # "numpy" or "torch" (speedup over it, >= bound) or "limit" (time ratio, <=)
    bound: float

    def matches(self, result):
        workload = result.case.workload
        kind = workload.kind if workload.kind != "single" else str(workload.elements)
        return ((result.case.optimizer, workload.dtype.name, kind)
                == (self.optimizer, self.dtype, self.workload))

    def evaluate(self, result):
        """(ratio, met): ratio None if the case lacks a measurement."""
        if self.metric == "limit":
            ratio = result.limit_ratio
            return ratio, (None if ratio is None else ratio <= self.bound)
        ratio = result.speedup(self.metric)
        return ratio, (None if ratio is None else ratio >= self.bound)

    def describe(self, result):
        if self.metric == "limit":
            return f"{result.case.title} within {self.bound:.2f}x of the traffic-limit time"
        return f"{result.case.title} >= {self.bound:g}x {self.metric}"


def _targets():
    """The issue's performance targets."""
    targets = []
    for optimizer in OPTIMIZERS:
        for dtype in DTYPES:
            targets.append(Target(optimizer, dtype, "10000000", "limit", 1.10))
    targets.append(Target("Adam", "float32", "10000000", "numpy", 10))
    for optimizer, bound in (("SGD", 2.5), ("Momentum", 3.5), ("Nesterov", 3.5),
                             ("AdaGrad", 5), ("RMSprop", 5), ("Adam", 5)):
        targets.append(Target(optimizer, "float64", "1000000", "numpy", bound))
    targets += [Target("Adam", "float32", "many-small", "numpy", 15),
                Target("Adam", "float32", "many-small", "torch", 2),
                Target("Adam", "float64", "mlp", "numpy", 6),
                Target("Adam", "float64", "1", "numpy", 5),
                Target("Adam", "float32", "1", "numpy", 5)]
    return tuple(targets)


TARGETS = _targets()


def evaluate_targets(results):
    """[(description, ratio, met)] for every target whose case was run; met is None when an
    implementation it needs was not measured."""
    evaluated = []
    for target in TARGETS:
        for result in results:
            if target.matches(result):
                ratio, met = target.evaluate(result)
                evaluated.append((target.describe(result), ratio, met))
    return evaluated


# ---- output ------------------------------------------------------------------------------------

def format_count(count, exact=False):
    """1 -> "1", 1000 -> "1e3", 32430 -> "32.4k" (exact=True: "1e3" only for exact powers)."""
    if count >= 1000 and math.log10(count).is_integer():
        return f"1e{int(math.log10(count))}"
    if exact or count < 1000:
        return str(count)
    for scale, suffix in ((1e6, "M"), (1e3, "k")):
        if count >= scale:
            return f"{count / scale:.3g}{suffix}"
    return str(count)


def format_seconds(seconds):
    """A duration with 3 significant digits and a unit: "812 ns", "1.63 ms"."""
    if seconds is None:
        return "-"
    for scale, unit in ((1.0, "s"), (1e-3, "ms"), (1e-6, "us")):
        if seconds >= scale:
            return f"{seconds / scale:.3g} {unit}"
    return f"{seconds / 1e-9:.3g} ns"


def _format_ratio(ratio):
    return "-" if ratio is None else f"{ratio:.2f}x" if ratio < 10 else f"{ratio:.1f}x"


def _format_rate(rate):
    return "-" if rate is None else f"{rate:.3g}"


def machine_info(threads, peer_notes):
    """What the numbers were measured on: a dict for --json and the header."""
    return {
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "python": platform.python_version(),
        "numpy": np.__version__,
        "fastopt": fastopt.build_info(),
        "threads": threads,
        "peers": peer_notes,
    }


def _cpu_model():
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def print_header(info, out):
    build = info["fastopt"]
    print(f"fastopt {build['version']} bench: {info['cpu']}, {info['cores']} cores; "
          f"Python {info['python']}, NumPy {info['numpy']}", file=out)
    # Every key build_info() has, whatever they are (they change as the build does).
    print("build: " + "; ".join(f"{key} {_format_build_value(value)}"
                                for key, value in build.items() if key != "version"), file=out)
    for note in info["peers"]:
        print(f"peer {note}", file=out)
    load = info["load_average"]
    if load is not None and load[0] >= BUSY_LOAD:
        print(f"warning: load average {load[0]:.1f} on {info['cores']} cores before the run: "
              "other processes compete for the CPU, so timings are noisy (multi-threaded "
              "cases most)", file=out)
    print("columns: median time per update(); GB/s = bytes the optimizer must read and write / "
          "time; xNAME = NAME's time / fastopt's; limit = TrafficLimit kernel (same bytes, "
          "trivial math); %limit = fastopt's GB/s as a share of the limit's; others = share of "
          "the machine's CPU taken by other processes during the case", file=out)


def _format_build_value(value):
    return " ".join(map(str, value)) if isinstance(value, (list, tuple)) else str(value)


TABLE_COLUMNS = (  # (implementation it needs or None, heading, width, CaseResult -> text)
    (None, "optimizer", 9, lambda r: r.case.optimizer),
    (None, "dtype", 7, lambda r: r.case.workload.dtype.name),
    (None, "case", 14, lambda r: r.case.workload.label),
    (None, "elements", 8, lambda r: format_count(r.case.workload.elements)),
    ("fastopt", "fastopt", 9, lambda r: format_seconds(r.median("fastopt"))),
    ("fastopt", "GB/s", 6, lambda r: _format_rate(r.gigabytes_per_second("fastopt"))),
    ("numpy", "numpy", 9, lambda r: format_seconds(r.median("numpy"))),
    ("numpy", "xnumpy", 7, lambda r: _format_ratio(r.speedup("numpy"))),
    ("limit", "limit", 9, lambda r: format_seconds(r.median("limit"))),
    ("limit", "GB/s", 6, lambda r: _format_rate(r.gigabytes_per_second("limit"))),
    ("limit", "%limit", 6,
     lambda r: "-" if r.limit_ratio is None else f"{100 / r.limit_ratio:.0f}%"),
    ("torch", "torch", 9, lambda r: format_seconds(r.median("torch"))),
    ("torch", "xtorch", 7, lambda r: _format_ratio(r.speedup("torch"))),
    ("deepspeed", "deepspeed", 9, lambda r: format_seconds(r.median("deepspeed"))),
    ("deepspeed", "xds", 6, lambda r: _format_ratio(r.speedup("deepspeed"))),
    (None, "others", 6,
     lambda r: "-" if r.others_cpu_share is None else f"{100 * r.others_cpu_share:.0f}%"),
)
LABEL_COLUMNS = 3  # left-aligned; the rest are numbers, right-aligned


def print_table(results, out):
    """One line per case, optimizers separated by a blank line; a peer's columns only if it
    ran."""
    measured = {name for result in results for name in result.timings}
    columns = [column for column in TABLE_COLUMNS if column[0] is None or column[0] in measured]

    def line(cells):
        return "  ".join(cell.ljust(width) if index < LABEL_COLUMNS else cell.rjust(width)
                         for index, (cell, (_, _, width, _)) in enumerate(zip(cells, columns)))

    print(line([heading for _, heading, _, _ in columns]).rstrip(), file=out)
    previous = None
    for result in results:
        if previous is not None and result.case.optimizer != previous:
            print(file=out)
        previous = result.case.optimizer
        print(line([cell(result) for _, _, _, cell in columns]).rstrip(), file=out)


def print_targets(evaluated, out):
    if not evaluated:
        print("targets: none of the targets' cases was run", file=out)
        return
    met = sum(1 for _, _, ok in evaluated if ok)
    print(f"targets: {met} of {len(evaluated)} met", file=out)
    for description, ratio, ok in evaluated:
        verdict = "not measured" if ok is None else "met" if ok else "NOT met"
        print(f"  {verdict:>12}  {description}: {_format_ratio(ratio)}", file=out)


def write_plot(results, path):
    """PNG: GB/s against elements per update(), a panel per optimizer (rows) and dtype (columns);
    a line per implementation for single arrays, markers for the multi-array workloads, the
    traffic-limit kernel dashed (the ceiling)."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot

    optimizers = list(dict.fromkeys(r.case.optimizer for r in results))
    dtypes = list(dict.fromkeys(r.case.workload.dtype.name for r in results))
    implementations = [name for name in IMPLEMENTATIONS if any(name in r.timings
                                                               for r in results)]
    colors = {"fastopt": "tab:red", "numpy": "tab:blue", "limit": "black",
              "torch": "tab:orange", "deepspeed": "tab:green"}
    markers = {"mlp": "s", "book-mlp": "^", "many-small": "D"}
    figure, axes = pyplot.subplots(len(optimizers), len(dtypes), squeeze=False,
                                   figsize=(6 * len(dtypes), 3.2 * len(optimizers)),
                                   sharex=True, sharey=True)
    for row, optimizer in enumerate(optimizers):
        for column, dtype in enumerate(dtypes):
            panel = axes[row][column]
            cases = [r for r in results
                     if r.case.optimizer == optimizer and r.case.workload.dtype.name == dtype]
            singles = sorted((r for r in cases if r.case.workload.kind == "single"),
                             key=lambda r: r.case.workload.elements)
            for name in implementations:
                points = [(r.case.workload.elements, r.gigabytes_per_second(name))
                          for r in singles if name in r.timings]
                if points:
                    panel.plot(*zip(*points), marker="o", markersize=3, color=colors[name],
                               linestyle="--" if name == "limit" else "-",
                               label=_plot_label(name))
                for result in cases:
                    kind = result.case.workload.kind
                    if kind != "single" and name in result.timings:
                        panel.scatter(result.case.workload.elements,
                                      result.gigabytes_per_second(name), color=colors[name],
                                      marker=markers[kind], s=30, zorder=3)
            panel.set_xscale("log")
            panel.set_yscale("log")
            panel.grid(True, which="major", alpha=0.3)
            panel.set_title(f"{optimizer}, {dtype}", fontsize=10)
            if column == 0:
                panel.set_ylabel("effective GB/s")
            if row == len(optimizers) - 1:
                panel.set_xlabel("elements per update()")
    legend = {}  # label -> handle, from every panel (a peer may be in some panels only)
    for panel in axes.flat:
        for handle, label in zip(*panel.get_legend_handles_labels()):
            legend.setdefault(label, handle)
    labels = [label for label in map(_plot_label, implementations) if label in legend]
    handles = [legend[label] for label in labels]
    for kind, marker in markers.items():
        if any(r.case.workload.kind == kind for r in results):
            handles.append(pyplot.Line2D([], [], color="gray", marker=marker, linestyle=""))
            labels.append(MULTI_ARRAY_WORKLOADS[kind].label)
    figure.legend(handles, labels, loc="upper center", ncol=min(len(labels), 8),
                  bbox_to_anchor=(0.5, 1.0), frameon=False)
    figure.suptitle("fastopt bench: effective memory throughput (higher is better)", y=1.03)
    figure.tight_layout()
    figure.savefig(path, dpi=110, bbox_inches="tight")
    pyplot.close(figure)


def _plot_label(implementation):
    return "traffic limit (ceiling)" if implementation == "limit" else implementation


class Progress:
    """A progress display on stderr: tqdm if installed, else a line per case."""

    def __init__(self, total):
        self.total = total
        self.done = 0
        try:
            from tqdm import tqdm
        except ImportError:
            self.bar = None
        else:
            self.bar = tqdm(total=total, file=sys.stderr, unit="case", leave=False,
                            dynamic_ncols=True)

    def start(self, title):
        if self.bar is not None:
            self.bar.set_description_str(title)
        else:
            end = "\r" if sys.stderr.isatty() else "\n"
            print(f"[{self.done + 1}/{self.total}] {title}".ljust(50), end=end,
                  file=sys.stderr, flush=True)

    def finish_case(self):
        self.done += 1
        if self.bar is not None:
            self.bar.update(1)

    def close(self):
        if self.bar is not None:
            self.bar.close()
        elif sys.stderr.isatty():
            print(" " * 50, end="\r", file=sys.stderr, flush=True)


# ---- the command -------------------------------------------------------------------------------

def _optimizer_list(text):
    by_lower = {name.lower(): name for name in OPTIMIZERS}
    names = []
    for item in filter(None, (part.strip() for part in text.split(","))):
        if item.lower() == "all":
            names += OPTIMIZERS
        elif item.lower() in by_lower:
            names.append(by_lower[item.lower()])
        else:
            raise argparse.ArgumentTypeError(
                f"unknown optimizer {item!r} (choose from {', '.join(OPTIMIZERS)}, or all)")
    if not names:
        raise argparse.ArgumentTypeError("give at least one optimizer")
    return tuple(dict.fromkeys(names))


def _size_list(text):
    sizes = []
    for item in filter(None, (part.strip() for part in text.split(","))):
        try:
            value = float(item)
        except ValueError:
            value = math.nan
        if not (value >= 1 and value == int(value)):
            raise argparse.ArgumentTypeError(
                f"{item!r} is not a whole number of elements >= 1 (write 1000 or 1e3)")
        sizes.append(int(value))
    if not sizes:
        raise argparse.ArgumentTypeError("give at least one size")
    return tuple(dict.fromkeys(sizes))


def _choice_list(choices, what):
    def parse(text):
        items = [item.strip() for item in text.split(",") if item.strip()]
        if items == ["none"]:
            return ()
        if items == ["all"]:
            return tuple(choices)
        unknown = [item for item in items if item not in choices]
        if unknown or not items:
            raise argparse.ArgumentTypeError(
                f"unknown {what} {', '.join(map(repr, unknown))} (choose from "
                f"{', '.join(choices)}, all or none)")
        return tuple(dict.fromkeys(items))

    return parse


def _positive(kind, allow_zero=False):
    """An argparse type: a number of the given kind, > 0 (or >= 0 with allow_zero)."""
    bound = ">= 0" if allow_zero else "> 0"

    def parse(text):
        try:
            value = kind(text)
        except ValueError:
            value = None
        if value is None or not (value >= 0 if allow_zero else value > 0):
            raise argparse.ArgumentTypeError(f"expected a number {bound}, got {text!r}")
        return value

    return parse


def add_arguments(parser):
    """The options of `fastopt bench`."""
    parser.add_argument("--optimizers", type=_optimizer_list, default=OPTIMIZERS,
                        metavar="LIST", help="comma-separated names, case-insensitive "
                        f"(default: all: {','.join(OPTIMIZERS)})")
    parser.add_argument("--dtype", choices=("float32", "float64", "both"), default="both",
                        help="dtype of the single-array cases (default: both); the "
                        "multi-array workloads keep their own (mlp, book-mlp: float64; "
                        "many-small: float32)")
    parser.add_argument("--sizes", type=_size_list, default=None, metavar="LIST",
                        help="elements of the single-array cases (default: "
                        f"{','.join(map(format_count, DEFAULT_SIZES))}; "
                        f"with --quick {','.join(map(format_count, QUICK_SIZES))})")
    parser.add_argument("--workloads", type=_choice_list(WORKLOAD_KINDS, "workload"),
                        default=WORKLOAD_KINDS, metavar="LIST",
                        help="single (one array per size), mlp (the seeds' 784-40-20-10 MLP, "
                        "6 arrays), book-mlp (784-100x5-10, 14 arrays), many-small (200 arrays "
                        "of 4096); comma-separated, all or none (default: all)")
    parser.add_argument("--peers", type=_choice_list(PEERS, "peer"), default=PEERS,
                        metavar="LIST", help="torch, deepspeed, all or none "
                        "(default: all; each runs only if importable)")
    parser.add_argument("--threads", type=_positive(int), default=None, metavar="N",
                        help="threads for fastopt and torch (default: fastopt's, "
                        f"now {fastopt.get_num_threads()})")
    parser.add_argument("--simd", default=None, metavar="PATH",
                        help=f"fastopt's SIMD path (this machine: "
                        f"{', '.join(fastopt.available_simd())}; default: {fastopt.get_simd()})")
    parser.add_argument("--repeat", type=_positive(int), default=None, metavar="N",
                        help=f"rounds per case at least (default {DEFAULT_REPEAT}, "
                        f"--quick {QUICK_REPEAT})")
    parser.add_argument("--min-time", type=_positive(float), default=None, metavar="SECONDS",
                        help=f"measuring time per case at least (default {DEFAULT_MIN_TIME}, "
                        f"--quick {QUICK_MIN_TIME})")
    parser.add_argument("--retries", type=_positive(int, allow_zero=True),
                        default=DEFAULT_RETRIES, metavar="N",
                        help="measure a case again, up to N more times, when other processes "
                        f"took more than {100 * BUSY_CASE_SHARE:.0f}%% of the CPU during it; "
                        f"keep the quietest (default {DEFAULT_RETRIES}; all retries together "
                        f"at most {RETRY_BUDGET_SECONDS:.0f} s)")
    parser.add_argument("--quick", action="store_true",
                        help="smaller sizes (no 1e7) and shorter timing: about a minute")
    parser.add_argument("--json", metavar="PATH", help="write machine info, every timing "
                        "and the targets as JSON")
    parser.add_argument("--plot", metavar="PATH", help="write a PNG of GB/s against size")


def run(args):
    """Run the benchmark; print the table and the targets. Returns the exit code."""
    def fail(message):
        print(f"fastopt bench: error: {message}", file=sys.stderr)
        return 2

    if args.plot:
        try:
            import matplotlib  # noqa: F401  (fail before measuring, not after)
        except ImportError:
            return fail("--plot needs matplotlib (pip install matplotlib)")
    try:
        if args.simd is not None:
            fastopt.set_simd(args.simd)
        if args.threads is not None:
            fastopt.set_num_threads(args.threads)
    except ValueError as error:
        return fail(str(error))
    threads = fastopt.get_num_threads()
    sizes = args.sizes or (QUICK_SIZES if args.quick else DEFAULT_SIZES)
    min_time = args.min_time or (QUICK_MIN_TIME if args.quick else DEFAULT_MIN_TIME)
    repeat = args.repeat or (QUICK_REPEAT if args.quick else DEFAULT_REPEAT)
    dtypes = tuple(DTYPES) if args.dtype == "both" else (args.dtype,)
    cases = plan_cases(args.optimizers, dtypes, sizes, args.workloads)
    if not cases:
        return fail("nothing to run: --workloads none")

    need_deepspeed = any(case.optimizer == "Adam" and case.workload.dtype == np.float32
                         for case in cases)
    peers, peer_notes = load_peers(args.peers, threads, need_deepspeed)
    implementations = [FASTOPT, NUMPY, LIMIT] + peers
    info = machine_info(threads, [peer.describe() for peer in peers] + peer_notes)
    print_header(info, sys.stdout)
    sys.stdout.flush()

    progress = Progress(len(cases))
    run_meter = OthersCpuMeter()
    results = []
    retry_budget = RETRY_BUDGET_SECONDS
    try:
        for case in cases:
            progress.start(case.title)
            result, spent = measure_case_retrying(case, implementations, min_time, repeat,
                                                  args.retries, retry_budget)
            retry_budget -= spent
            results.append(result)
            progress.finish_case()
    finally:
        progress.close()
    info["others_cpu_share"] = run_meter.share()

    info["peers"] = [peer.describe() for peer in peers] + peer_notes  # now with torch's modes

    print(file=sys.stdout)
    print_table(results, sys.stdout)
    print(file=sys.stdout)
    for note in info["peers"]:
        print(f"peer {note}", file=sys.stdout)
    retried = sum(1 for result in results if result.tries > 1)
    if retried:
        print(f"{retried} cases measured again because other processes took over "
              f"{100 * BUSY_CASE_SHARE:.0f}% of the CPU during them (the quietest try is shown)",
              file=sys.stdout)
    others = info["others_cpu_share"]
    if others is not None and others >= BUSY_SHARE:
        print(f"warning: other processes took {100 * others:.0f}% of this machine's CPU time "
              f"during the run; rows with a high 'others' share are unreliable", file=sys.stdout)
    print(file=sys.stdout)
    evaluated = evaluate_targets(results)
    print_targets(evaluated, sys.stdout)

    if args.json:
        document = {
            "machine": info,
            "settings": {"optimizers": list(args.optimizers), "dtypes": list(dtypes),
                         "sizes": list(sizes), "workloads": list(args.workloads),
                         "min_time": min_time, "repeat": repeat, "retries": args.retries,
                         "batch_seconds": BATCH_SECONDS, "warmup_calls": WARMUP_CALLS},
            "results": [result.to_json() for result in results],
            "targets": [{"description": description, "ratio": ratio, "met": met}
                        for description, ratio, met in evaluated],
        }
        with open(args.json, "w") as stream:
            json.dump(document, stream, indent=1)
        print(f"wrote {args.json}", file=sys.stdout)
    if args.plot:
        write_plot(results, args.plot)
        print(f"wrote {args.plot}", file=sys.stdout)
    return 0
