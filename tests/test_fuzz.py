"""Differential fuzzer: fastopt against fastopt.reference, bit for bit, on generated cases.

Hypothesis generates a *case*: plain data (dicts, tuples, strings, ints, floats; a Python
literal) describing an optimizer with valid hyperparameters, memory buffers with their values,
the parameters and gradients as views into those buffers (any dtype mix, shape and layout, shared
and overlapping buffers), a SIMD path, a thread setting, and 1-6 steps with what changes between
them. run_optimizer_case() and run_global_norm_case() build the arrays twice, once for fastopt and
once for the reference, and compare every buffer and state bit for bit after every step. When
arrays a step writes share memory with each other or with a gradient (numpy.shares_memory
decides), fastopt must raise ValueError and change nothing: parameters, gradients, state and
step count stay as they were; a quarter of the cases may overlap, and the overlap property
corrupts one step of every case on purpose. Later steps must again match the reference.

This module is the one place the strategies and properties live. pytest runs it with the "ci"
profile (a fixed number of derandomized examples, no example database); tools/fuzz.py runs the
same properties with the "long" profile (FASTOPT_FUZZ_PROFILE=long, FASTOPT_FUZZ_EXAMPLES=n) and
replays a failing case from the literal this module prints with the failure.
"""
import collections
import contextlib
import math
import os
import struct

import numpy as np
import pytest

pytest.importorskip("hypothesis", reason="the fuzzer needs hypothesis (the test extra has it)")
from hypothesis import HealthCheck, given, note, settings  # noqa: E402
from hypothesis import strategies as st

import fastopt
import fastopt.reference as reference
from fastopt import _kernels
from fastopt.testing import assert_bitwise_equal, assert_state_bitwise_equal

# ---- profiles ----------------------------------------------------------------------------------

settings.register_profile(
    "fastopt-fuzz-ci", max_examples=200, deadline=None, derandomize=True, database=None,
    print_blob=True, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
settings.register_profile(
    "fastopt-fuzz-long", settings.get_profile("fastopt-fuzz-ci"), derandomize=False,
    max_examples=int(os.environ.get("FASTOPT_FUZZ_EXAMPLES", "20000")))
PROFILE = "fastopt-fuzz-" + os.environ.get("FASTOPT_FUZZ_PROFILE", "ci")
SETTINGS = settings.get_profile(PROFILE)

# What ran, for tools/fuzz.py: property name -> cases, plus what the cases covered.
STATS = collections.Counter()
# The last case that failed, per property (after shrinking: the minimal one).
FAILURES = {}
# Called with the property's name before each case (tools/fuzz.py prints progress).
ON_CASE = None

# ---- what is generated -------------------------------------------------------------------------

OPTIMIZER_NAMES = sorted(fastopt.OPTIMIZERS)
DTYPE_NAMES = ("float32", "float64")
SIMD_PATHS = tuple(fastopt.available_simd())
# (threads, thread back-off): every step split between threads (parallel threshold 0).
THREAD_SETTINGS = ((None,) + ((2, False), (3, False), (2, True))
                   if fastopt.build_info()["threads_enabled"] else (None,))
KEYS = ("W1", "b1", "W2", "b2", "gamma", 7, ("conv", 0))
SIZES = (1, 0, 2, 3, 7, 8, 9, 15, 16, 17, 31, 32, 33, 63, 64, 65, 127, 129, 1003, 1024, 1025,
         2051)


def _bits(value):
    return struct.unpack("<Q", struct.pack("<d", value))[0]


# Values as the bits of a double (exact in a literal: NaN signs and payloads, -0.0); cast to
# float32 for float32 buffers (huge ones become inf, tiny ones subnormal or zero).
SPECIAL_BITS = tuple(_bits(v) for v in (
    math.nan, -math.nan, math.inf, -math.inf, 0.0, -0.0, 1.0, -1.0, 5e-324, -5e-324, 1e-310,
    2.2250738585072014e-308, 1.401298464324817e-45, -1.401298464324817e-45, 1e-40,
    1.1754943508222875e-38, 3.4028234663852886e+38, 3.4028235677973366e+38, 1e38, 1e300,
    1.7976931348623157e+308, -1.7976931348623157e+308, 1e-7, 65504.0)) + (
    0x7FF0000000000001, 0xFFF8000000000123, 0x7FF4000000000000)  # a signalling NaN, payloads
# Powers of two the normal values are scaled by: normal, huge, tiny, subnormal, overflowing.
SCALES = (0, 0, -10, 10, -40, 40, -130, -149, 120, 127, 128, -1022, -1074, 300, 1023)


def hyperparameter_values(descriptor):
    """Python floats in the descriptor's range [low, high): edge values and any float."""
    low, high = descriptor.low, descriptor.high
    if high == math.inf:
        edges = (0.01, low, 0.001, 1.0, 30.0, 5e-324, 1e-300, 1e300, 1.7976931348623157e308)
        anything = st.floats(min_value=low, allow_nan=False, allow_infinity=False)
    else:
        edges = (0.9, low, 0.5, 0.99, 0.999, 1 - 2**-24, 1 - 2**-53, 5e-324)
        anything = st.floats(min_value=low, max_value=high, exclude_max=True)
    return st.one_of(st.sampled_from([v for v in edges if low <= v < high]), anything)


shapes = st.one_of(
    st.tuples(st.sampled_from(SIZES)),
    st.just(()),
    st.tuples(st.integers(0, 300)),
    st.tuples(st.integers(0, 40), st.integers(0, 40)),
    st.tuples(st.integers(0, 5), st.integers(0, 5), st.integers(0, 9)),
)

fills = st.tuples(
    st.integers(0, 2**32 - 1),                                    # seed of the normal values
    st.sampled_from(SCALES),                                       # scaled by 2**scale
    st.lists(st.one_of(st.sampled_from(SPECIAL_BITS), st.floats().map(_bits),
                       st.integers(0, 2**64 - 1)), max_size=5).map(tuple),  # special values
    st.sampled_from((0.1, 0.0, 0.5, 1.0)),                         # the share of them
)


@st.composite
def layouts(draw, ndim):
    """(order, steps, perm): a parent block in C or Fortran order, sliced with a step per
    dimension (negative: reversed), then transposed by perm. A third plain C-contiguous."""
    ones, identity = (1,) * ndim, tuple(range(ndim))
    kind = draw(st.sampled_from(("plain", "plain", "fortran", "transposed", "any", "any")))
    if ndim == 0 or kind == "plain":
        return "C", ones, identity
    if kind == "fortran":
        return "F", ones, identity
    if kind == "transposed":
        return "C", ones, identity[::-1]
    order = draw(st.sampled_from("CF"))
    steps = tuple(draw(st.sampled_from((1, 2, 3, -1, -2, 1))) for _ in range(ndim))
    perm = tuple(draw(st.permutations(range(ndim)))) if ndim > 1 else (0,)
    return order, steps, perm


def geometry(shape, dtype, layout, phase=None):
    """(parent elements, byte offset of the view's first element in its parent, strides) of a
    view of `shape` cut from a parent block as `layout` says, starting at `phase` (per parent
    dimension, 0 <= phase < |step|) in each dimension."""
    order, steps, perm = layout
    ndim = len(shape)
    inverse = np.argsort(perm) if ndim else ()
    base = tuple(shape[inverse[i]] for i in range(ndim))  # transposed by perm: shape
    parent_shape = tuple(n * abs(k) for n, k in zip(base, steps))
    phase = phase or (0,) * ndim
    count = math.prod(parent_shape)
    scratch = np.empty(max(count, 1), dtype)
    parent = scratch[:count].reshape(parent_shape, order=order)
    index = tuple(slice(p, None, k) if k > 0 else slice(size - 1 - p, None, k)
                  for p, k, size in zip(phase, steps, parent_shape))
    view = (parent[index] if ndim else parent).transpose(perm)
    assert view.shape == tuple(shape), (view.shape, shape, layout, phase)
    offset = view.__array_interface__["data"][0] - scratch.__array_interface__["data"][0]
    offset = min(max(offset, 0), count * scratch.itemsize)  # an empty view may point anywhere
    return count, offset, view.strides


class _Draft:
    """Generation state: the buffers so far and, for the step being generated, one open buffer
    per dtype (the arena) that views are packed into, disjoint or overlapping."""

    def __init__(self, draw, overlaps):
        self.draw = draw
        self.overlaps = overlaps  # whether views may overlap others of the same step
        self.buffers = []  # [step, dtype, elements, fill, byte shift] (elements grow in arenas)
        self.step = 0
        self.arenas = {}  # dtype -> (buffer index, [(start, elements) of parents placed])

    def open_step(self, step):
        self.step, self.arenas = step, {}

    def new_buffer(self, dtype, elements):
        shift = self.draw(st.sampled_from((0, 0, 0, 1, 4)))  # bytes: 1 and 4 misalign
        self.buffers.append([self.step, dtype, elements, self.draw(fills), shift])
        return len(self.buffers) - 1

    def place(self, dtype, shape, overlap_weight=1):
        """A view of this shape: (view spec, record for interleave())."""
        layout = self.draw(layouts(len(shape)))
        count, offset, strides = geometry(shape, dtype, layout)
        arena = self.arenas.get(dtype)
        where = self.draw(st.sampled_from(
            ("arena", "own", "arena", "own")
            + ("overlap",) * (overlap_weight if arena and self.overlaps else 0)))
        if where == "own":
            start = self.draw(st.sampled_from((0, 1, 2, 3)))
            index = self.new_buffer(dtype, start + count + self.draw(st.integers(0, 2)))
        else:
            if arena is None:
                arena = self.arenas[dtype] = (self.new_buffer(dtype, 0), [])
            index, parents = arena
            if where == "overlap":
                first, elements = self.draw(st.sampled_from(parents))
                start = first + self.draw(st.integers(0, max(elements - 1, 0)))
            else:
                end = max((s + n for s, n in parents), default=0)
                start = end + self.draw(st.sampled_from((0, 1, 5, 16)))
            parents.append((start, count))
            self.buffers[index][2] = max(self.buffers[index][2], start + count + 1)
        itemsize = np.dtype(dtype).itemsize
        return ((index, start * itemsize + offset, tuple(shape), strides),
                (index, start, dtype, tuple(shape), layout))

    def interleave(self, record):
        """A view of the same shape in the gaps of a parameter's parent block (disjoint from
        it, inside its extent), or None if its layout leaves no gaps."""
        index, start, dtype, shape, layout = record
        order, steps, perm = layout
        dims = [i for i, k in enumerate(steps) if abs(k) >= 2]
        if not dims:
            return None
        phase = [0] * len(steps)
        dim = self.draw(st.sampled_from(dims))
        phase[dim] = self.draw(st.integers(1, abs(steps[dim]) - 1))
        count, offset, strides = geometry(shape, dtype, layout, tuple(phase))
        return (index, start * np.dtype(dtype).itemsize + offset, shape, strides)

    def finish(self):
        return [tuple(b) for b in self.buffers]


def engine(draw):
    return {"simd": draw(st.sampled_from(SIMD_PATHS)),
            "threads": draw(st.sampled_from(THREAD_SETTINGS))}


CORRUPTIONS = ("grad is param", "grad views param", "grad in other param", "params overlap",
               "grad is state")


@st.composite
def optimizer_cases(draw, corrupt=False):
    """A case for run_optimizer_case(). corrupt=True: one step also gets arrays that share
    memory with a parameter or a state array (see corrupt_step)."""
    name = draw(st.sampled_from(OPTIMIZER_NAMES))
    cls = fastopt.OPTIMIZERS[name]
    hyper = {h: draw(hyperparameter_values(getattr(cls, h))) for h in cls._hyperparameters}
    # One case in four may hold arrays that share memory (a step must then raise ValueError).
    draft = _Draft(draw, overlaps=draw(st.integers(0, 3)) == 3)
    keys = draw(st.lists(st.sampled_from(KEYS), min_size=1, max_size=5, unique=True))
    mixed = draw(st.sampled_from((None,) + DTYPE_NAMES))
    dtypes = {k: mixed or draw(st.sampled_from(DTYPE_NAMES)) for k in keys}
    params, records = {}, {}
    for key in keys:
        others = [k for k in records if records[k][2] == dtypes[key] and records[k][4]]
        spec = None
        if others and draw(st.integers(0, 5)) == 0:  # the gaps of another parameter's block
            other = draw(st.sampled_from(others))
            spec = draft.interleave(records[other])
            if spec is not None:  # the gaps are taken: no gradient goes there
                records[key] = records[other] = records[other][:3] + (None, None)
        if spec is None:
            spec, records[key] = draft.place(dtypes[key], draw(shapes))
        params[key] = spec
    shape_of = {k: params[k][2] for k in keys}
    steps = []
    for step in range(draw(st.integers(1, 6))):
        if step:
            draft.open_step(step)
        actions = {}
        if step and draw(st.integers(0, 3)) == 0:
            names = draw(st.lists(st.sampled_from(cls._hyperparameters), min_size=1,
                                  unique=True))
            actions["set"] = {h: draw(hyperparameter_values(getattr(cls, h))) for h in names}
        if step and draw(st.integers(0, 5)) == 0:
            actions["reload"] = True  # continue on a new optimizer given the state_dict
        if step:
            replace = {}
            for key in keys:  # a new array of the same shape and dtype: the state is kept
                if draw(st.integers(0, 3)) == 0:
                    replace[key], records[key] = draft.place(dtypes[key], shape_of[key])
            if replace:
                actions["replace"] = replace
        grads = {}
        for key in keys:
            grads[key] = draw_grad(draw, draft, key, keys, step, dtypes, shape_of, records, cls)
        actions["grads"] = grads
        actions["order"] = draw(st.permutations(keys))
        actions["grad_order"] = draw(st.permutations(keys))
        steps.append(actions)
    case = {"optimizer": name, "hyperparameters": hyper, **engine(draw),
            "buffers": draft.finish(), "params": params, "steps": steps}
    if corrupt:
        filled = [k for k in keys if math.prod(shape_of[k])] or keys
        key = draw(st.sampled_from(filled))
        case["corrupt"] = {
            "step": draw(st.integers(0, len(steps) - 1)),
            "kind": draw(st.sampled_from(CORRUPTIONS)),
            "key": key,
            "other": draw(st.sampled_from([k for k in filled if k != key] or [key])),
            "shift": draw(st.integers(0, 8)),  # elements before the other's first one
            "state": draw(st.sampled_from(cls._state_names or (None,))),
        }
    return case


def draw_grad(draw, draft, key, keys, step, dtypes, shape_of, records, cls):
    """One gradient: mostly a new view (packed next to the step's other arrays, in its own
    buffer, or, rarely, overlapping them), sometimes the previous step's array, a view in the
    gaps of its parameter, a NumPy scalar for a 0-d parameter; rarely an array the step writes:
    its own parameter, another parameter, a state array."""
    kinds = ["new"] * 12 + ["interleave"] * 2 + (["param", "other param"] if draft.overlaps
                                                  else [])
    if step:
        kinds += ["keep"] * 3 + (["state"] if cls._state_names and draft.overlaps else [])
    kind = draw(st.sampled_from(kinds))
    shape, dtype = shape_of[key], dtypes[key]
    if kind == "interleave" and records[key][3] is not None:
        spec = draft.interleave(records[key])
        if spec is not None:
            return ("view", spec)
    if kind == "keep":
        return ("keep",)
    if kind == "param":
        return ("param", key)
    if kind == "other param":
        same = [k for k in keys if k != key and shape_of[k] == shape and dtypes[k] == dtype]
        if same:
            return ("param", draw(st.sampled_from(same)))
    if kind == "state":
        return ("state", draw(st.sampled_from(cls._state_names)), key)
    spec, _ = draft.place(dtype, shape)
    if shape == () and draw(st.booleans()):
        return ("scalar", spec)  # e.g. numpy.float32: what NumPy gives for a 0-d gradient
    return ("view", spec)


@st.composite
def global_norm_cases(draw):
    draft = _Draft(draw, overlaps=True)  # read only: overlapping arrays are fine
    mixed = draw(st.sampled_from((None,) + DTYPE_NAMES))
    arrays = []
    for _ in range(draw(st.integers(0, 6))):
        dtype = mixed or draw(st.sampled_from(DTYPE_NAMES))
        shape = draw(shapes)
        spec, _ = draft.place(dtype, shape, overlap_weight=2)
        arrays.append(("scalar" if shape == () and draw(st.booleans()) else "view", spec))
    return {"container": draw(st.sampled_from(("list", "dict", "tuple"))), **engine(draw),
            "buffers": draft.finish(), "arrays": arrays}


# ---- running a case ----------------------------------------------------------------------------

@contextlib.contextmanager
def engine_settings(simd, threads):
    """Use this SIMD path and, if threads is (n, backoff), n threads on every step (parallel
    threshold 0); restore everything afterwards."""
    previous = (fastopt.get_simd(), fastopt.get_num_threads(),
                _kernels.get_parallel_threshold(), _kernels.get_thread_backoff())
    try:
        fastopt.set_simd(simd)
        if threads is not None:
            fastopt.set_num_threads(threads[0])
            _kernels.set_parallel_threshold(0)
            _kernels.set_thread_backoff(threads[1])
        yield
    finally:
        fastopt.set_simd(previous[0])
        fastopt.set_num_threads(previous[1])
        _kernels.set_parallel_threshold(previous[2])
        _kernels.set_thread_backoff(previous[3])


def build_buffer(spec):
    """(raw bytes, typed view of the values): the values are normal numbers scaled by
    2**scale with the special values at a random share of the places, in the buffer's dtype,
    starting `shift` bytes into the raw buffer."""
    _, dtype, elements, (seed, scale, specials, share), shift = spec
    rng = np.random.default_rng(seed)
    with np.errstate(all="ignore"):  # huge values overflow to inf, in double or in float32
        values = rng.standard_normal(elements) * 2.0**scale
        if specials:
            picks = np.array(specials, dtype=np.uint64).view(np.float64)
            chosen = picks[rng.integers(0, len(picks), elements)]
            values = np.where(rng.random(elements) < share, chosen, values)
        raw = np.zeros(shift + elements * np.dtype(dtype).itemsize + 8, np.uint8)
        typed = typed_view(raw, spec)
        typed[...] = values.astype(dtype)
    return raw, typed


def typed_view(raw, spec):
    _, dtype, elements, _, shift = spec
    return np.ndarray((elements,), dtype, buffer=raw, offset=shift)


def build_view(buffers, case_buffers, spec):
    index, offset, shape, strides = spec
    return np.ndarray(shape, case_buffers[index][1], buffer=buffers[index],
                      offset=case_buffers[index][4] + offset, strides=strides)


def _snapshot(buffers):
    return [raw.tobytes() for raw in buffers]


def _state_arrays(opt):
    arrays = []
    for name in type(opt)._state_names:
        state = getattr(opt, name)
        if state is not None:
            arrays += [(f"{name}[{key!r}]", state[key]) for key in state]
    return arrays


def _first_overlap(params, grads, states):
    """The names of two arrays the step must refuse to run on, or None: two parameters that
    share memory, or a gradient sharing memory with a parameter or a state array."""
    written = [(f"params[{k!r}]", np.asarray(v)) for k, v in params.items()] + states
    for i, (name, array) in enumerate(written):
        for other, second in written[i + 1:]:
            if np.shares_memory(array, second):
                return name, other
    for key, grad in grads.items():
        for name, array in written:
            if np.shares_memory(np.asarray(grad), array):
                return name, f"grads[{key!r}]"
    return None


def run_optimizer_case(case):
    """Run the case on fastopt and on the reference; raise AssertionError at the first
    difference."""
    name, hyper = case["optimizer"], case["hyperparameters"]
    ours, theirs = fastopt.OPTIMIZERS[name](**hyper), getattr(reference, name)(**hyper)
    spec = case["buffers"]
    ours_raw, theirs_raw = [], []
    ours_params, theirs_params, param_specs, previous_grads = {}, {}, {}, {}
    steps_taken = 0
    with engine_settings(case["simd"], case["threads"]), np.errstate(all="ignore"):
        for step, actions in enumerate(case["steps"]):
            for buffer in spec[len(ours_raw):]:
                if buffer[0] != step:
                    break
                raw, _ = build_buffer(buffer)
                ours_raw.append(raw)
                theirs_raw.append(raw.copy())
            where = f"step {step}"
            for key, view in (case["params"] if step == 0 else actions.get("replace", {})).items():
                param_specs[key] = view
                ours_params[key] = build_view(ours_raw, spec, view)
                theirs_params[key] = build_view(theirs_raw, spec, view)
            if step == 0:
                _count_coverage(case, ours_params)
            for hyperparameter, value in actions.get("set", {}).items():
                setattr(ours, hyperparameter, value)
                setattr(theirs, hyperparameter, value)
            if actions.get("reload"):  # go on with a new optimizer given ours.state_dict()
                reloaded = type(ours)()
                reloaded.load_state_dict(ours.state_dict())
                ours = reloaded
            grads = {}
            for key, (kind, *what) in actions["grads"].items():
                if kind == "keep":
                    grads[key] = previous_grads[key]
                elif kind == "param":
                    grads[key] = ours_params[what[0]]
                elif kind == "state":
                    state = getattr(ours, what[0])
                    grads[key] = (state[what[1]] if state is not None else
                                  np.zeros_like(ours_params[key]))
                else:
                    grads[key] = build_view(ours_raw, spec, what[0])
                    if kind == "scalar":
                        grads[key] = grads[key][()]
            previous_grads = grads
            params = {key: ours_params[key] for key in actions["order"]}
            grads = {key: grads[key] for key in actions["grad_order"]}
            step_params = {key: theirs_params[key] for key in actions["order"]}
            corrupt = case.get("corrupt")
            if corrupt and corrupt["step"] == step:
                corrupt_step(corrupt, ours, params, grads, step_params, param_specs, spec,
                             ours_raw, theirs_raw)
            states = _state_arrays(ours)
            overlap = _first_overlap(params, grads, states)
            # The reference reads copies: it never writes gradients, and a gradient may live in
            # a buffer only fastopt's arrays are in (gaps of a parameter, a state array).
            theirs_grads = {key: np.copy(grads[key]) if isinstance(grads[key], np.ndarray)
                            else grads[key] for key in actions["grad_order"]}
            before = (_snapshot(ours_raw), [a.tobytes() for _, a in states],
                      ours.state_dict()["step"])
            objects = dict(params)
            try:
                ours.update(params, grads)
            except (TypeError, ValueError) as error:
                after = (_snapshot(ours_raw), [a.tobytes() for _, a in _state_arrays(ours)],
                         ours.state_dict()["step"])
                changed = [i for i, (old, new) in enumerate(zip(before[0], after[0])) if old != new]
                if changed:
                    raise AssertionError(f"{where}: {error!r} raised, but buffers {changed} "
                                         f"changed") from error
                changed = [name for (name, _), old, new in zip(states, before[1], after[1])
                           if old != new]
                if changed or len(before[1]) != len(after[1]):
                    raise AssertionError(f"{where}: {error!r} raised, but the state changed: "
                                         f"{changed or 'arrays added or removed'}") from error
                if after[2] != before[2]:
                    raise AssertionError(f"{where}: {error!r} raised, but the step count went "
                                         f"from {before[2]} to {after[2]}") from error
                if overlap is None:
                    raise AssertionError(f"{where}: fastopt raised {error!r}, but no arrays "
                                         f"overlap and the reference takes this step") from error
                assert isinstance(error, ValueError) and "share memory" in str(error), (
                    f"{where}: {overlap[0]} and {overlap[1]} share memory, but fastopt "
                    f"raised {error!r}")
                STATS["steps refused: " + ("a gradient overlaps" if overlap[1].startswith("grads")
                                           else "parameters overlap")] += 1
                continue
            assert overlap is None, (f"{where}: {overlap[0]} and {overlap[1]} share memory, but "
                                     f"fastopt took the step instead of raising ValueError")
            theirs.update(step_params, theirs_grads)
            steps_taken += 1
            STATS["steps"] += 1
            for index, buffer in enumerate(spec[:len(ours_raw)]):
                holds = [key for key, view in param_specs.items() if view[0] == index]
                assert_bitwise_equal(typed_view(ours_raw[index], buffer),
                                     typed_view(theirs_raw[index], buffer),
                                     f"{where}: buffer {index} (params {holds}), fastopt != "
                                     f"reference")
            assert all(params[key] is objects[key] for key in objects), "update() replaced arrays"
            assert_state_bitwise_equal(ours, theirs)
            assert ours.state_dict()["step"] == steps_taken


def corrupt_step(corrupt, ours, params, grads, theirs_params, param_specs, spec, ours_raw,
                 theirs_raw):
    """Make this step's dicts (not the arrays kept for later steps) share memory as
    corrupt["kind"] says; where that is impossible (no state yet, arrays too large for the
    buffer, dtypes differ), a gradient becomes the parameter itself. A corruption may leave the
    arrays disjoint after all (an empty array, a view into another's gaps): the step then runs,
    and the reference takes it too (theirs_params gets the same view of its buffers)."""
    kind, key, other = corrupt["kind"], corrupt["key"], corrupt["other"]
    target = params[key]
    STATS[f"corrupted: {kind}"] += 1
    if kind == "grad is state" and getattr(ours, corrupt["state"] or "", None) is not None:
        grads[key] = getattr(ours, corrupt["state"])[key]
        return
    if kind == "grad views param":
        grads[key] = target.view()  # another object over the same memory
        return
    if kind in ("grad in other param", "params overlap"):
        # A C-contiguous array of key's shape and dtype that starts `shift` elements before
        # the other parameter's first element, in the other's buffer.
        index, offset = param_specs[other][:2]
        raw_offset = spec[index][4] + offset - corrupt["shift"] * target.itemsize
        room = ours_raw[index].size - target.nbytes
        if room >= 0 and (kind == "grad in other param" or target.dtype == params[other].dtype):
            raw_offset = min(max(raw_offset, 0), room)
            if kind == "grad in other param":
                grads[key] = np.ndarray(target.shape, target.dtype, ours_raw[index], raw_offset)
            else:
                params[key], theirs_params[key] = (
                    np.ndarray(target.shape, target.dtype, raw[index], raw_offset)
                    for raw in (ours_raw, theirs_raw))
            return
    grads[key] = target
    STATS["corrupted: grad is param (instead)"] += kind != "grad is param"


def _count_coverage(case, params):
    """What the case holds, for tools/fuzz.py's summary."""
    STATS[f"simd {case['simd']}"] += 1
    STATS[f"threads {case['threads']}"] += 1
    arrays = list(params.values())
    STATS["params"] += len(arrays)
    STATS["params 0-d"] += sum(a.ndim == 0 for a in arrays)
    STATS["params empty"] += sum(a.size == 0 for a in arrays)
    STATS["params Fortran-only"] += sum(a.flags.f_contiguous and not a.flags.c_contiguous
                                        for a in arrays)
    STATS["params not contiguous"] += sum(not (a.flags.f_contiguous or a.flags.c_contiguous)
                                          for a in arrays)
    STATS["params unaligned"] += sum(not a.flags.aligned for a in arrays)
    buffers = collections.Counter(view[0] for view in case["params"].values())
    STATS["params sharing a buffer"] += sum(n for n in buffers.values() if n > 1)
    STATS["cases with mixed dtypes"] += len({a.dtype for a in arrays}) > 1
    for actions in case["steps"]:
        for kind, *_ in actions["grads"].values():
            STATS[f"grads {kind}"] += 1
        STATS["replaced params"] += len(actions.get("replace", ()))
        STATS["hyperparameters set"] += len(actions.get("set", ()))
        STATS["reloads"] += bool(actions.get("reload"))


def _same_float(a, b):
    return (math.isnan(a) and math.isnan(b)) or struct.pack("<d", a) == struct.pack("<d", b)


def run_global_norm_case(case):
    spec = case["buffers"]
    raw = [build_buffer(buffer)[0] for buffer in spec]
    arrays = [build_view(raw, spec, view) for _, view in case["arrays"]]
    arrays = [a[()] if kind == "scalar" else a for (kind, _), a in zip(case["arrays"], arrays)]
    container = {"list": list, "tuple": tuple,
                 "dict": lambda items: {f"g{i}": a for i, a in enumerate(items)}}[
        case["container"]](arrays)
    before = _snapshot(raw)
    with engine_settings(case["simd"], case["threads"]), np.errstate(all="ignore"):
        ours = fastopt.global_norm(container)
        theirs = reference.global_norm(container)
    assert type(ours) is float, type(ours)
    assert _same_float(ours, theirs), (f"global_norm: {ours!r} ({float.hex(ours)}) != "
                                       f"reference {theirs!r} ({float.hex(theirs)})")
    assert _snapshot(raw) == before, "global_norm changed its input"


RUNNERS = {"optimizer": run_optimizer_case, "overlap": run_optimizer_case,
           "global_norm": run_global_norm_case}


def run_recorded(prop, case):
    """Run one generated case; on failure, remember it and print the replay line."""
    STATS[prop] += 1
    if ON_CASE is not None:
        ON_CASE(prop)
    try:
        RUNNERS[prop](case)
    except Exception:
        FAILURES[prop] = case
        note(f"To replay, save this line to a file and run python tools/fuzz.py --replay FILE:\n"
             f"{ {'property': prop, 'case': case}!r}")
        raise


# ---- the properties ----------------------------------------------------------------------------

@SETTINGS
@given(case=optimizer_cases())
def test_optimizer_matches_reference(case):
    run_recorded("optimizer", case)


@SETTINGS
@given(case=optimizer_cases(corrupt=True))
def test_overlapping_arrays_are_refused_and_change_nothing(case):
    run_recorded("overlap", case)


@SETTINGS
@given(case=global_norm_cases())
def test_global_norm_matches_reference(case):
    run_recorded("global_norm", case)


# ---- what the fuzzer found ---------------------------------------------------------------------

def test_state_dict_round_trip_with_an_infinite_coefficient():
    """Found by this fuzzer: load_state_dict() (and so pickle and copy.deepcopy) refused a
    state_dict whose hyperparameters make a coefficient overflow to inf (here (1 + momentum) *
    lr), calling the step 'too large', although the constructor and update() accept them."""
    opt = fastopt.Nesterov(lr=1.7976931348623157e308, momentum=0.5)
    opt.update({"w": np.ones(3)}, {"w": np.ones(3)})
    reloaded = fastopt.Nesterov()
    reloaded.load_state_dict(opt.state_dict())
    assert reloaded.state_dict()["step"] == 1
