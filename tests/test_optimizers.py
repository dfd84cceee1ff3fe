"""fastopt against fastopt.reference, bit for bit: every optimizer x dtype x shape family x SIMD
path x thread count, plus in-place identity, state, state_dict and pickling."""
import contextlib
import pickle
import sys
import threading

import numpy as np
import pytest

import fastopt
import fastopt.reference as reference
from fastopt import _kernels
from fastopt.optimizers import OPTIMIZERS
from fastopt.testing import (assert_bitwise_equal, assert_dict_bitwise_equal,
                             assert_state_bitwise_equal)

NAMES = list(OPTIMIZERS)
DTYPES = [np.float32, np.float64]
THREADS = [1, 2] if fastopt.build_info()["threads_enabled"] else [1]



def non_default_hyperparameters(cls):
    """A value other than the default for every hyperparameter, chosen from its range: 30 times
    the default for an unbounded one (a learning rate), halfway from the low end to the default
    for a bounded one (a decay rate). They change every coefficient and its rounding."""
    values = {}
    for name in cls._hyperparameters:
        descriptor, default = getattr(cls, name), getattr(cls(), name)
        values[name] = (default * 30 if descriptor.high == float("inf")
                        else (descriptor.low + default) / 2)
    return values


# Every registered optimizer with its defaults and with non-default hyperparameters.
HYPERPARAMETERS = {name: [{}, non_default_hyperparameters(cls)]
                   for name, cls in OPTIMIZERS.items()}


def make_params(rng, dtype):
    """One dict holding every shape family: 0-d, empty, the sizes around SIMD widths and tails
    (1, 7, 1003), 2-D and 3-D, and views the kernel cannot use as they are."""
    base = rng.standard_normal((40, 30)).astype(dtype)
    fortran = np.asfortranarray(rng.standard_normal((9, 13)).astype(dtype))
    return {
        "scalar": np.array(rng.standard_normal(), dtype=dtype),
        "empty": np.zeros((0,), dtype=dtype),
        "empty2d": np.zeros((3, 0), dtype=dtype),
        "one": rng.standard_normal(1).astype(dtype),
        "seven": rng.standard_normal(7).astype(dtype),
        "n1003": rng.standard_normal(1003).astype(dtype),
        "matrix": rng.standard_normal((31, 33)).astype(dtype),
        "cube": rng.standard_normal((3, 4, 5)).astype(dtype),
        "fortran": fortran,
        "transposed": rng.standard_normal((17, 6)).astype(dtype).T,
        "strided": base[::2, 1::3],
        "reversed": rng.standard_normal(101).astype(dtype)[::-1],
    }


def make_grads(rng, params):
    """Gradients for params: C-ordered arrays, except one strided view, so both paths run."""
    grads = {key: np.asarray(rng.standard_normal(p.shape) * 3, dtype=p.dtype)
             for key, p in params.items()}
    if "matrix" in grads:
        wide = (rng.standard_normal((31, 66))).astype(grads["matrix"].dtype)
        grads["matrix"] = wide[:, ::2]
    return grads


def copy_params(params):
    """Copies with the same memory layout (so the reference also sees views/Fortran order)."""
    return {key: p.copy(order="K") for key, p in params.items()}


def run_both(name, hyperparameters, params, steps, rng, grads_fn=make_grads):
    ours = OPTIMIZERS[name](**hyperparameters)
    theirs = getattr(reference, name)(**hyperparameters)
    expected = copy_params(params)
    for _ in range(steps):
        grads = grads_fn(rng, params)
        ours.update(params, grads)
        theirs.update(expected, grads)
    return ours, theirs, expected


@pytest.fixture(params=THREADS)
def threads(request):
    previous = fastopt.get_num_threads()
    fastopt.set_num_threads(request.param)
    yield request.param
    fastopt.set_num_threads(previous)


@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
@pytest.mark.parametrize("name", NAMES)
def test_bit_for_bit_1000_steps_every_shape(name, dtype, simd):
    for hyperparameters in HYPERPARAMETERS[name]:
        rng = np.random.default_rng(1234)
        params = make_params(rng, dtype)
        ours, theirs, expected = run_both(name, hyperparameters, params, 1000, rng)
        assert_dict_bitwise_equal(params, expected, f"{name} {hyperparameters}")
        assert_state_bitwise_equal(ours, theirs)


@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
@pytest.mark.parametrize("name", NAMES)
def test_bit_for_bit_large_arrays_threads(name, dtype, simd, threads):
    """Arrays large enough for several chunks and both threads (above the parallel threshold),
    with sizes that are not multiples of any vector width or chunk."""
    rng = np.random.default_rng(99)
    params = {"big": rng.standard_normal(300_007).astype(dtype),
              "odd": rng.standard_normal((257, 129)).astype(dtype),
              "tail": rng.standard_normal(3).astype(dtype)}
    ours, theirs, expected = run_both(name, {}, params, 12, rng)
    assert_dict_bitwise_equal(params, expected, name)
    assert_state_bitwise_equal(ours, theirs)


@contextlib.contextmanager
def thread_settings(threads, threshold, backoff):
    """Run with this many threads, this parallel threshold (picoseconds) and the back-off on or
    off; restore the previous settings afterwards."""
    previous = (fastopt.get_num_threads(), _kernels.get_parallel_threshold(),
                _kernels.get_thread_backoff())
    try:
        fastopt.set_num_threads(threads)
        _kernels.set_parallel_threshold(threshold)
        _kernels.set_thread_backoff(backoff)
        yield
    finally:
        fastopt.set_num_threads(previous[0])
        _kernels.set_parallel_threshold(previous[1])
        _kernels.set_thread_backoff(previous[2])


@pytest.mark.skipif(len(THREADS) < 2, reason="serial build")
@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
@pytest.mark.parametrize("name", NAMES)
def test_bit_for_bit_when_every_step_is_split_between_threads(name, dtype, simd):
    """Threshold 0: even the smallest step is split, so thread boundaries fall inside tiny
    tensors, between tensors, and on every shape family; 3 threads on 2 cores; and with the
    back-off on, which here (tiny steps always take longer than their estimate) switches
    between threaded and single-threaded steps mid-run."""
    for threads, backoff in ((2, False), (3, False), (2, True)):
        with thread_settings(threads, 0, backoff):
            rng = np.random.default_rng(threads)
            params = make_params(rng, dtype)
            params.update({f"small{i}": rng.standard_normal(i % 37 + 1).astype(dtype)
                           for i in range(60)})
            ours, theirs, expected = run_both(name, {}, params, 30, rng)
            assert_dict_bitwise_equal(params, expected, f"{name} {threads}")
            assert_state_bitwise_equal(ours, theirs)


@pytest.mark.skipif(len(THREADS) < 2, reason="serial build")
def test_a_plan_measures_both_modes_then_keeps_the_faster_and_rarely_retries():
    """A step of 64 elements split by a zero threshold: the pool (posting a job, waking a
    worker: microseconds) is far slower than one thread (nanoseconds). After its first step
    (on the pool, not measured) the plan runs 4 steps on the pool, 4 on one thread, both again,
    then stays on one thread; it retries the pool only after spending 100 times a 4-step burst of the pool
    on one thread, which here is thousands of steps away."""
    with thread_settings(2, 0, True):
        opt = fastopt.SGD()
        params, grads = {"w": np.zeros(64)}, {"w": np.ones(64)}
        states = []
        for _ in range(400):
            opt.update(params, grads)
            states.append(opt._plan.thread_state)
    assert [state["steps"] for state in states[:18:4]] == [
        (0, 0), (0, 4), (4, 4), (4, 8), (8, 8)]
    assert states[17]["steps"] == (9, 8)
    assert states[-1]["steps"] == (391, 8)
    one_thread, pool = states[-1]["mean_seconds"]
    assert 0 < one_thread < pool
    assert states[-1]["seconds_since_other"] < 100 * 4 * pool


@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
@pytest.mark.parametrize("name", NAMES)
def test_bit_for_bit_at_every_alignment(name, dtype, simd):
    """Contiguous views of one buffer starting at every offset modulo 16 elements, with
    gradients at other offsets: the loops run a few elements before the vector loop to reach a
    64-byte boundary, so every start and every head length (all of a short array included)
    must give the reference's bits, and nothing outside the views may change."""
    rng = np.random.default_rng(17)
    layout, cursor = [], 0
    for offset in range(16):
        for size in (1, 3, 17, 1003):
            cursor += (offset - cursor) % 16
            layout.append((f"at{offset}_{size}", cursor, size))
            cursor += size
    buffer = rng.standard_normal(cursor + 16).astype(dtype)
    expected_buffer = buffer.copy()
    ours, theirs = OPTIMIZERS[name](), getattr(reference, name)()
    params = {key: buffer[start:start + size] for key, start, size in layout}
    expected = {key: expected_buffer[start:start + size] for key, start, size in layout}
    for _ in range(20):
        grad_buffer = rng.standard_normal(cursor + 32).astype(dtype)
        grads = {key: grad_buffer[start + 5:start + 5 + size] for key, start, size in layout}
        ours.update(params, grads)
        theirs.update(expected, grads)
    assert_bitwise_equal(buffer, expected_buffer, f"{name}: the whole buffer")
    assert_state_bitwise_equal(ours, theirs)


@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
@pytest.mark.parametrize("name", NAMES)
def test_nonfinite_and_extreme_gradients_propagate_as_reference(name, dtype, simd):
    special = np.array([np.nan, np.inf, -np.inf, 0.0, -0.0, 1e-45, -1e-310, 1e30, -1e30, 1.0,
                        np.finfo(dtype).max, np.finfo(dtype).tiny], dtype=dtype)

    def grads_fn(rng, params):
        return {key: rng.permutation(np.resize(special, p.shape)).astype(dtype)
                for key, p in params.items()}

    rng = np.random.default_rng(5)
    params = {"a": rng.standard_normal(37).astype(dtype),
              "b": np.resize(special, (5, 7)).astype(dtype)}
    with np.errstate(all="ignore"):
        ours, theirs, expected = run_both(name, {}, params, 20, rng, grads_fn)
    assert_dict_bitwise_equal(params, expected, name)
    assert_state_bitwise_equal(ours, theirs)


def test_mixed_dtypes_in_one_dict():
    rng = np.random.default_rng(3)
    for name in NAMES:
        params = {"w": rng.standard_normal(1003).astype(np.float32),
                  "b": rng.standard_normal(7)}
        ours, theirs, expected = run_both(name, {}, params, 30, rng)
        assert_dict_bitwise_equal(params, expected, name)


@pytest.mark.parametrize("name", NAMES)
def test_updates_callers_arrays_in_place(name):
    rng = np.random.default_rng(0)
    base = rng.standard_normal((20, 20))
    params = {"w": rng.standard_normal((8, 5)), "view": base[::3, 1::2],
              "t": rng.standard_normal((4, 6)).T}
    objects = dict(params)
    snapshot = {key: p.copy() for key, p in params.items()}
    base_before = base.copy()
    grads = make_grads(rng, params)
    grads_before = {key: g.copy() for key, g in grads.items()}
    opt = OPTIMIZERS[name](lr=0.5)
    result = opt.update(params, grads)
    assert result is None
    for key in params:
        assert params[key] is objects[key]
        assert not np.array_equal(params[key], snapshot[key]), key
        assert_bitwise_equal(grads[key], grads_before[key], f"grads[{key!r}]")
    # The strided view's parent sees the change, and only at the view's elements.
    assert np.shares_memory(params["view"], base)
    changed = base != base_before
    expected_changed = np.zeros_like(changed)
    expected_changed[::3, 1::2] = True
    assert np.array_equal(changed, expected_changed)


@pytest.mark.parametrize("name", NAMES)
def test_state_attributes_like_the_textbook(name):
    opt = OPTIMIZERS[name]()
    ref = getattr(reference, name)()
    for state_name in ("v", "h", "m"):
        assert hasattr(opt, state_name) == hasattr(ref, state_name), state_name
        if hasattr(ref, state_name):
            assert getattr(opt, state_name) is None
    params = {"w": np.ones(3)}
    opt.update(params, {"w": np.ones(3)})
    for state_name in ("v", "h", "m"):
        if hasattr(ref, state_name):
            state = getattr(opt, state_name)
            assert list(state) == ["w"] and state["w"].shape == (3,)
            with pytest.raises(TypeError):
                state["w"] = np.zeros(3)  # read-only mapping: replace via load_state_dict()
    if name == "Adam":
        assert opt.iter == 1


def test_constructor_arguments_and_defaults_match_the_textbook():
    import inspect

    for name, cls in OPTIMIZERS.items():
        ours = inspect.signature(cls).parameters
        theirs = inspect.signature(getattr(reference, name)).parameters
        assert [(p.name, p.default) for p in ours.values()] == \
               [(p.name, p.default) for p in theirs.values()], name
        opt = cls()
        for parameter in theirs.values():
            assert getattr(opt, parameter.name) == parameter.default


def test_hyperparameters_assignable_between_steps():
    rng = np.random.default_rng(8)
    params = {"w": rng.standard_normal(50)}
    expected = copy_params(params)
    ours, theirs = fastopt.Momentum(), reference.Momentum()
    for step in range(10):
        grads = make_grads(rng, params)
        ours.lr = theirs.lr = 0.1 / (step + 1)
        ours.update(params, grads)
        theirs.update(expected, grads)
    assert_bitwise_equal(params["w"], expected["w"])


@pytest.mark.parametrize("name", NAMES)
def test_replacing_arrays_between_steps(name):
    """New array objects for params (same keys and shapes) keep the state and the numbers."""
    rng = np.random.default_rng(4)
    params = {"a": rng.standard_normal(64), "b": rng.standard_normal((3, 3))}
    expected = copy_params(params)
    ours, theirs = OPTIMIZERS[name](), getattr(reference, name)()
    for step in range(6):
        grads = make_grads(rng, params)
        ours.update(params, grads)
        theirs.update(expected, grads)
        if step % 2 == 0:
            params = {key: p.copy() for key, p in params.items()}
    assert_dict_bitwise_equal(params, expected)
    assert_state_bitwise_equal(ours, theirs)


@pytest.mark.parametrize("name", NAMES)
def test_dict_order_and_key_objects_may_change_between_steps(name):
    """Gradients in another order than params, keys equal to the params' but other objects, and
    params rebuilt in another order (same arrays) give the reference's numbers."""
    rng = np.random.default_rng(5)
    params = make_params(rng, np.float64)
    expected = copy_params(params)
    ours, theirs = OPTIMIZERS[name](), getattr(reference, name)()
    for step in range(8):
        grads = make_grads(rng, params)
        if step % 2:
            grads = dict(reversed(list(grads.items())))
        if step % 3 == 1:
            grads = {"".join(list(key)): g for key, g in grads.items()}
            assert all(new is not old for new, old in zip(sorted(grads), sorted(params)))
        if step % 4 == 2:
            params = dict(reversed(list(params.items())))
        ours.update(params, grads)
        theirs.update(expected, grads)
    assert_dict_bitwise_equal(params, expected)
    assert_state_bitwise_equal(ours, theirs)


@pytest.mark.parametrize("name", NAMES)
def test_update_holds_no_reference_to_the_gradients(name):
    """Neither a step nor a refused step keeps the caller's gradients alive."""
    rng = np.random.default_rng(6)
    params = {"a": rng.standard_normal(10), "b": rng.standard_normal(5)}
    grads = {key: rng.standard_normal(p.shape) for key, p in params.items()}
    opt = OPTIMIZERS[name]()
    opt.update(params, grads)  # the first step builds the plan that later steps reuse
    bad = dict(grads, b=np.zeros(6))  # "a" fits the plan, then "b" does not

    def references():
        return {key: sys.getrefcount(g) for key, g in grads.items()}

    before = references()
    opt.update(params, grads)
    assert references() == before
    try:
        opt.update(params, bad)
    except ValueError:
        pass
    else:
        pytest.fail("a gradient of the wrong shape was accepted")
    assert references() == before


@pytest.mark.parametrize("name", NAMES)
def test_state_dict_round_trip_mid_run(name):
    rng = np.random.default_rng(11)
    params = make_params(rng, np.float32)
    grads_sequence = [make_grads(rng, params) for _ in range(20)]
    uninterrupted = copy_params(params)
    opt = OPTIMIZERS[name](lr=0.05)
    for grads in grads_sequence:
        opt.update(uninterrupted, grads)

    interrupted = OPTIMIZERS[name](lr=0.05)
    for grads in grads_sequence[:10]:
        interrupted.update(params, grads)
    saved, saved_params = interrupted.state_dict(), copy_params(params)
    for grads in grads_sequence[10:12]:  # steps after saving must not leak into the save
        interrupted.update(params, grads)
    resumed = OPTIMIZERS[name]()
    resumed.load_state_dict(saved)
    assert resumed.lr == 0.05
    for grads in grads_sequence[10:]:
        resumed.update(saved_params, grads)
    assert_dict_bitwise_equal(saved_params, uninterrupted)
    assert_state_bitwise_equal(resumed, opt)


@pytest.mark.parametrize("name", NAMES)
def test_state_dict_is_plain_data_and_pickles(name):
    rng = np.random.default_rng(12)
    params = {"w": rng.standard_normal((5, 4)), "b": rng.standard_normal(4)}
    opt = OPTIMIZERS[name]()
    for _ in range(3):
        opt.update(params, make_grads(rng, params))
    state = opt.state_dict()
    assert state["optimizer"] == name and state["step"] == 3
    for arrays in (state["state"] or {}).values():
        for key, array in arrays.items():
            assert type(array) is np.ndarray
            assert not np.shares_memory(array, params[key])

    clone = pickle.loads(pickle.dumps(opt))
    expected = copy_params(params)
    grads = make_grads(rng, params)
    opt.update(params, grads)
    clone.update(expected, grads)
    assert_dict_bitwise_equal(params, expected)


def test_two_optimizers_in_two_threads_match_sequential_runs():
    rng = np.random.default_rng(21)
    sizes = {"a": 200_000, "b": 1003}
    start = {key: rng.standard_normal(n) for key, n in sizes.items()}
    grads = [{key: rng.standard_normal(n) for key, n in sizes.items()} for _ in range(20)]

    def train(params, opt):
        for g in grads:
            opt.update(params, g)

    sequential = [copy_params(start), copy_params(start)]
    train(sequential[0], fastopt.Adam())
    train(sequential[1], fastopt.RMSprop())
    parallel = [copy_params(start), copy_params(start)]
    workers = [threading.Thread(target=train, args=(parallel[0], fastopt.Adam())),
               threading.Thread(target=train, args=(parallel[1], fastopt.RMSprop()))]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    for ours, theirs in zip(parallel, sequential):
        for key in sizes:
            assert_bitwise_equal(ours[key], theirs[key], key)


@pytest.mark.parametrize("name", NAMES)
def test_numpy_scalar_gradient_of_a_0d_parameter(name):
    """x / 10 on a 0-d array is a numpy scalar, not an array: accepted like the reference."""
    params = {"x": np.array(-7.0), "y": np.array(2.0)}
    expected = copy_params(params)
    ours, theirs = OPTIMIZERS[name](lr=0.1), getattr(reference, name)(lr=0.1)
    for _ in range(30):
        for target, opt in ((params, ours), (expected, theirs)):
            grads = {"x": target["x"] / 10.0, "y": 2.0 * target["y"]}
            assert type(grads["x"]) is np.float64
            opt.update(target, grads)
    assert_dict_bitwise_equal(params, expected)


def test_empty_dict_is_a_step():
    opt, ref = fastopt.Adam(), reference.Adam()
    opt.update({}, {})
    ref.update({}, {})
    assert opt.iter == ref.iter == 1
