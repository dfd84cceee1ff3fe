"""The benchmark's cases: the optimizers, dtypes and workloads (a dict of arrays per update()),
and the bytes an update() of each optimizer must move.
"""
import dataclasses
import math

import numpy as np

from fastopt import optim, optimizers

DTYPES = {"float32": np.dtype(np.float32), "float64": np.dtype(np.float64)}

# The names of fastopt.optim's classes in the benchmark: "optim." + the class name
# ("optim.AdamW"), and the clipping variant "optim.AdamW+clip": update(params, grads,
# max_grad_norm=CLIP_MAX_GRAD_NORM), on gradients rescaled to a global norm of
# CLIP_GRADIENT_NORM so that the clipping bites (it multiplies the gradients by 0.1).
FAMILY_PREFIX = "optim."
CLIP_SUFFIX = "+clip"
CLIP_MAX_GRAD_NORM = 1.0
CLIP_GRADIENT_NORM = 10.0


# The optimizers come from the registries, read at each call rather than copied at import, so an
# optimizer is benchmarked (and its bytes counted) once it is registered there.
def optimizer_names():
    """The names in fastopt.optimizers.OPTIMIZERS, in its order: the optimizers measured by
    default."""
    return tuple(optimizers.OPTIMIZERS)


def family_names():
    """The benchmark's names of fastopt.optim's classes, in fastopt.optim.OPTIMIZERS' order:
    "optim.SGD", "optim.Adam", ..., "optim.Lion"."""
    return tuple(FAMILY_PREFIX + name for name in optim.OPTIMIZERS)


@dataclasses.dataclass(frozen=True)
class OptimizerName:
    """What a benchmark optimizer name means: a textbook class (fastopt.optimizers), or a
    class of fastopt.optim (family=True), clipped (clip=True: "optim.AdamW+clip") or not."""

    class_name: str
    family: bool = False
    clip: bool = False

    @property
    def name(self):
        return ((FAMILY_PREFIX if self.family else "") + self.class_name
                + (CLIP_SUFFIX if self.clip else ""))


def parse_optimizer(name):
    """The OptimizerName of a benchmark optimizer name (exact spelling: "Adam", "optim.AdamW",
    "optim.AdamW+clip"); KeyError if no registered class has that name."""
    clip = name.endswith(CLIP_SUFFIX)
    base = name[:-len(CLIP_SUFFIX)] if clip else name
    if base.startswith(FAMILY_PREFIX) and base[len(FAMILY_PREFIX):] in optim.OPTIMIZERS:
        return OptimizerName(base[len(FAMILY_PREFIX):], family=True, clip=clip)
    if not clip and base in optimizers.OPTIMIZERS:
        return OptimizerName(base)
    raise KeyError(name)


def state_arrays(optimizer):
    """State arrays the named optimizer keeps per parameter: len(_state_names) of its class in
    fastopt.optimizers.OPTIMIZERS (0 for SGD, 1 for Momentum, 2 for Adam); for a class of
    fastopt.optim ("optim.AdamW"), len(opt._state_names()) of an instance with the default
    arguments (0 for optim.SGD, 1 for optim.Adagrad, RMSprop and Lion, 2 for the others). An
    update reads p, g and every state array and writes p and every state array: 3 + 2 *
    n_states arrays."""
    parsed = parse_optimizer(optimizer)
    if parsed.family:
        return len(optim.OPTIMIZERS[parsed.class_name]()._state_names())
    return len(optimizers.OPTIMIZERS[optimizer]._state_names)


def arrays_moved(optimizer):
    """Arrays of the parameters' size one update() must read or write: 3 + 2 * n_states, and
    one more for a clipping variant ("optim.AdamW+clip": fastopt reads the gradients once for
    the global norm before the step reads them again)."""
    extra = 1 if parse_optimizer(optimizer).clip else 0
    return 3 + 2 * state_arrays(optimizer) + extra


@dataclasses.dataclass(frozen=True)
class Workload:
    """What one update() works on: a dict of arrays of the given shapes and dtype.

    kind: "single" (one array of n elements) or the name of a multi-array workload.
    label: how the table names it ("1e6", "textbook MLP").
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
        """Bytes one update() of the named optimizer must read and write (the GB/s numerator):
        arrays_moved(optimizer) x itemsize x elements."""
        return arrays_moved(optimizer) * self.dtype.itemsize * self.elements

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
    if workload.kind in ("mlp", "book-mlp"):  # the textbook's naming: W1, b1, W2, b2, ...
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


# The multi-array workloads: the models the textbook trains, and a many-tensor case.
# Their dtypes are fixed (the textbook uses float64), whatever --dtype says.
MULTI_ARRAY_WORKLOADS = {
    "mlp": Workload("mlp", "textbook MLP", _mlp_shapes((784, 40, 20, 10)), np.dtype(np.float64)),
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
