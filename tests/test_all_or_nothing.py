"""update() is all or nothing (issue H): what slipped past the plan before. Each test failed on
the code before the fix."""
import copy
import ctypes
import ctypes.util
import os
import platform
import signal
import sys
import threading
import time

import numpy as np
import pytest

import fastopt
import fastopt.optimizers
import fastopt.reference as reference
from fastopt import _kernels
from fastopt.testing import assert_bitwise_equal

THREADS_AVAILABLE = fastopt.build_info()["threads_enabled"]


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_a_strided_parameter_whose_strides_change_is_revalidated():
    buffer = np.zeros(100)
    params = {"p": buffer[0:10:2], "q": buffer[50:60]}
    grads = {"p": np.ones(5), "q": np.ones(10)}
    opt = fastopt.SGD(lr=1.0)
    opt.update(params, grads)
    before = buffer.copy()
    params["p"].strides = (104,)  # now reaches buffer[52], inside q
    with pytest.raises(ValueError, match=r"params\['p'\] and params\['q'\] share memory"):
        opt.update(params, grads)
    assert_bitwise_equal(buffer, before)
    with pytest.raises(ValueError, match=r"params\['p'\] and params\['q'\] share memory"):
        fastopt.SGD(lr=1.0).update(params, grads)


def test_thread_count_is_bounded():
    previous = fastopt.get_num_threads()
    try:
        for bad in (100_000, 40_000, _kernels.MAX_THREADS + 1):
            with pytest.raises(ValueError, match=r"number of threads must be an integer >= 1 "
                                                 r"and <= 1024, got"):
                fastopt.set_num_threads(bad)
            assert fastopt.get_num_threads() == previous
        fastopt.set_num_threads(_kernels.MAX_THREADS)
        assert fastopt.get_num_threads() == 1024
    finally:
        fastopt.set_num_threads(previous)


@pytest.mark.skipif(not THREADS_AVAILABLE, reason="serial build")
def test_omp_num_threads_beyond_the_bound_is_clamped(run_python):
    result = run_python("-c", "import fastopt; print(fastopt.get_num_threads())",
                        extra_env={"OMP_NUM_THREADS": "100000", "FASTOPT_NUM_THREADS": ""},
                        check=True)
    assert result.stdout.strip() == "1024"


class Redirecting(dict):
    """A dict whose params[key] answers with another array than the one it stores."""

    def __init__(self, stored, answered):
        super().__init__(stored)
        self.answered = answered

    def __getitem__(self, key):
        return self.answered[key]


def test_dict_subclass_values_are_read_one_way():
    stored, answered = {"w": np.zeros(4)}, {"w": np.zeros(4)}
    params = Redirecting(stored, answered)
    grads = {"w": np.ones(4)}
    opt = fastopt.SGD(lr=0.5)
    for _ in range(3):
        opt.update(params, grads)  # was: AssertionError, a validated plan refused to run
    assert_bitwise_equal(answered["w"], np.full(4, -1.5))  # what params["w"] gives
    assert_bitwise_equal(stored["w"], np.zeros(4))
    # As grads: params[key] of the subclass aliases the parameter; it must be validated.
    params = {"w": np.ones(4)}
    aliasing = Redirecting({"w": np.ones(4)}, {"w": params["w"]})
    with pytest.raises(ValueError, match=r"params\['w'\] and grads\['w'\] share memory"):
        fastopt.SGD().update(params, aliasing)
    assert_bitwise_equal(params["w"], np.ones(4))


def test_the_step_uses_the_objects_validated(monkeypatch):
    """grads[key] replaced (by another thread, say) after validation and before the step: the
    step must use what was validated, not re-read the dict."""
    params = {"w": np.ones(8)}
    grads = {"w": np.full(8, 0.5)}
    prepare = fastopt.optimizers.Optimizer._prepare

    def prepare_then_swap(self, validated_params, validated_grads, *arguments):
        grads["w"] = params["w"]  # the caller's dict now aliases the parameter
        return prepare(self, validated_params, validated_grads, *arguments)

    monkeypatch.setattr(fastopt.optimizers.Optimizer, "_prepare", prepare_then_swap)
    fastopt.SGD(lr=1.0).update(params, grads)
    assert_bitwise_equal(params["w"], np.full(8, 0.5))


def test_load_state_dict_rejects_a_step_whose_coefficients_cannot_be_computed():
    class Doubling(fastopt.SGD, register=False):
        """SGD whose learning rate doubles every step: 2.0**step overflows past 1023."""

        def _coefficients(self, step):
            return (self._lr * 2.0**step,)

    opt = Doubling()
    opt.update({"w": np.ones(2)}, {"w": np.ones(2)})
    state = opt.state_dict()
    opt.load_state_dict(dict(state, step=1000))
    with pytest.raises(ValueError, match=r"state_dict\['step'\] = 1023 is too large: the next "
                                         r"update's coefficients cannot be computed"):
        opt.load_state_dict(dict(state, step=1023))
    assert opt.state_dict()["step"] == 1000


def test_load_state_dict_rejects_unusable_steps_and_versions():
    opt = fastopt.Adam()
    params, grads = {"w": np.ones(3)}, {"w": np.ones(3)}
    opt.update(params, grads)
    before = copy.deepcopy(opt.state_dict())
    for step in (2**1024, 10**400, 2**63 - 1, -1):
        bad = dict(before, step=step)
        with pytest.raises(ValueError, match=r"state_dict\['step'\] must be an integer >= 0 "
                                             r"and < 2\*\*63 - 1"):
            opt.load_state_dict(bad)
        assert opt.state_dict()["step"] == 1
    for version in (True, 1.0, 1 + 0j, "1"):
        with pytest.raises(ValueError, match=r"state_dict version .* is not supported"):
            opt.load_state_dict(dict(before, version=version))
    assert opt.iter == 1 and opt.state_dict()["step"] == 1
    assert_bitwise_equal(opt.m["w"], before["state"]["m"]["w"])
    opt.load_state_dict(dict(before, step=2**63 - 2, version=np.int64(1)))  # the last step
    opt.update(params, grads)
    assert opt.iter == 2**63 - 1


@pytest.mark.filterwarnings("ignore:the matrix subclass:PendingDeprecationWarning")
@pytest.mark.parametrize("where", ["params", "grads"])
@pytest.mark.parametrize("kind", ["masked", "matrix"])
def test_masked_arrays_and_matrices_are_refused(where, kind):
    make = ((lambda a: np.ma.masked_array(a, mask=[[0, 1, 0]])) if kind == "masked"
            else np.asmatrix)
    params, grads = {"w": np.ones((1, 3))}, {"w": np.ones((1, 3))}
    data = params["w"]
    target = params if where == "params" else grads
    target["w"] = make(target["w"])
    opt = fastopt.SGD(lr=1.0)
    message = ("numpy.ma.MaskedArray: fastopt updates every element" if kind == "masked"
               else "numpy.matrix, whose \\* is a matrix product")
    with pytest.raises(TypeError, match=rf"{where}\['w'\] is a {message}"):
        opt.update(params, grads)
    assert_bitwise_equal(np.asarray(data), np.ones((1, 3)))
    # also when a plan already exists (the fast path must not take a subclass gradient)
    if where == "grads":
        plain = {"w": np.ones((1, 3))}
        opt.update({"w": data}, plain)
        with pytest.raises(TypeError, match=rf"grads\['w'\] is a {message}"):
            opt.update({"w": data}, grads)


def test_other_array_subclasses_are_updated_as_plain_arrays(tmp_path):
    mapped = np.memmap(tmp_path / "w.bin", dtype=np.float64, mode="w+", shape=(5,))
    params, grads = {"w": mapped}, {"w": np.memmap(tmp_path / "g.bin", dtype=np.float64,
                                                   mode="w+", shape=(5,))}
    grads["w"][:] = 2.0
    opt = fastopt.SGD(lr=0.25)
    for _ in range(2):
        opt.update(params, grads)
    assert_bitwise_equal(np.asarray(mapped), np.full(5, -1.0))


# ---- flush-to-zero in the calling thread --------------------------------------------------

MXCSR_FTZ_DAZ = (1 << 15) | (1 << 6)


def _glibc_x86_64_fenv():
    """fegetenv/fesetenv of glibc on x86-64, where fenv_t is 28 bytes of x87 state and then
    MXCSR: a way to switch flush-to-zero on in this thread without a compiler. None elsewhere."""
    if sys.platform != "linux" or platform.machine() != "x86_64":
        return None
    libm = ctypes.CDLL(ctypes.util.find_library("m") or "libm.so.6")
    if not hasattr(libm, "fegetenv") or platform.libc_ver()[0] != "glibc":
        return None
    return libm


@pytest.mark.skipif(not THREADS_AVAILABLE, reason="serial build")
@pytest.mark.skipif(_glibc_x86_64_fenv() is None, reason="needs glibc on x86-64")
def test_workers_compute_in_the_callers_flush_to_zero_mode(simd):
    """The worker threads exist before the calling thread switches FTZ/DAZ on (as a library
    built with -ffast-math does when it loads): every thread count must still give the
    reference's bits, which NumPy computes in the calling thread's mode."""
    libm = _glibc_x86_64_fenv()
    rng = np.random.default_rng(4)
    tiny = (rng.standard_normal(4096) * 1e-39).astype(np.float32)  # subnormal float32
    previous = (fastopt.get_num_threads(), _kernels.get_parallel_threshold(),
                _kernels.get_thread_backoff())
    saved = ctypes.create_string_buffer(32)
    libm.fegetenv(saved)
    try:
        fastopt.set_num_threads(2)
        _kernels.set_parallel_threshold(0)
        _kernels.set_thread_backoff(False)
        fastopt.SGD().update({"w": tiny.copy()}, {"w": tiny.copy()})  # workers exist now
        flushing = ctypes.create_string_buffer(saved.raw, 32)
        mxcsr = int.from_bytes(saved.raw[28:32], "little") | MXCSR_FTZ_DAZ
        flushing[28:32] = mxcsr.to_bytes(4, "little")
        libm.fesetenv(flushing)
        results = []
        for threads in (1, 2, 3):
            fastopt.set_num_threads(threads)
            params = {"w": tiny.copy()}
            fastopt.SGD(lr=0.5).update(params, {"w": tiny.copy()})
            results.append(params["w"])
        expected = {"w": tiny.copy()}
        reference.SGD(lr=0.5).update(expected, {"w": tiny.copy()})
    finally:
        libm.fesetenv(saved)
        fastopt.set_num_threads(previous[0])
        _kernels.set_parallel_threshold(previous[1])
        _kernels.set_thread_backoff(previous[2])
    assert np.count_nonzero(expected["w"]) < tiny.size  # FTZ/DAZ did flush in NumPy
    for threads, result in zip((1, 2, 3), results):
        assert_bitwise_equal(result, expected["w"], f"{threads} threads")


# ---- one optimizer, two threads -----------------------------------------------------------------

def _hammer(opt, params, grads, calls, threads=2):
    """Call opt.update from several threads at once; return (steps that ran, RuntimeErrors)."""
    ran, refused = [0] * threads, [0] * threads
    start = threading.Barrier(threads)

    def work(me):
        start.wait()
        for _ in range(calls):
            try:
                opt.update(params, grads)
                ran[me] += 1
            except RuntimeError as error:
                assert "running update() in another thread" in str(error)
                refused[me] += 1

    previous = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        workers = [threading.Thread(target=work, args=(me,)) for me in range(threads)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
    finally:
        sys.setswitchinterval(previous)
    return sum(ran), sum(refused)


def test_one_optimizer_from_two_threads_loses_no_step():
    """Each call either runs a whole step or raises RuntimeError having changed nothing: the
    step count is the number of calls that returned, and the numbers are those of that many
    sequential steps."""
    params = {"w": np.linspace(-1, 1, 10)}
    grads = {"w": np.linspace(0.5, -0.5, 10)}
    opt = fastopt.Adam()
    ran, refused = _hammer(opt, params, grads, calls=400)
    assert ran + refused == 800 and ran > 0
    assert opt.iter == ran
    expected = {"w": np.linspace(-1, 1, 10)}
    twin = reference.Adam()
    for _ in range(ran):
        twin.update(expected, grads)
    assert_bitwise_equal(params["w"], expected["w"])
    assert_bitwise_equal(opt.m["w"], twin.m["w"])


def test_two_first_calls_from_two_threads_create_one_state():
    """The slow path (validation, state creation, a new plan) is guarded too."""
    for _ in range(3):
        params = {"w": np.ones(200_000)}
        grads = {"w": np.full(200_000, 0.25)}
        opt = fastopt.Momentum(lr=1.0, momentum=0.5)
        ran, refused = _hammer(opt, params, grads, calls=3)
        assert ran + refused == 6 and ran > 0
        expected = {"w": np.ones(200_000)}
        twin = reference.Momentum(lr=1.0, momentum=0.5)
        for _ in range(ran):
            twin.update(expected, grads)
        assert_bitwise_equal(params["w"], expected["w"])
        assert_bitwise_equal(opt.v["w"], twin.v["w"])


def test_reset_and_load_state_dict_refuse_while_an_update_runs():
    opt = fastopt.SGD(lr=1.0)
    params, grads = {"w": np.ones(4)}, {"w": np.ones(4)}
    opt.update(params, grads)
    state = opt.state_dict()
    entered, leave = threading.Event(), threading.Event()
    coefficients = opt._coefficients

    def slow_coefficients(step):  # this instance's only (load_state_dict computes some too)
        entered.set()
        assert leave.wait(10)
        return coefficients(step)

    opt._coefficients = slow_coefficients
    worker = threading.Thread(target=opt.update, args=(params, grads))
    worker.start()
    try:
        assert entered.wait(10)
        for call in (opt.reset, lambda: opt.load_state_dict(state),
                     lambda: opt.update(params, grads)):
            with pytest.raises(RuntimeError, match="running update\\(\\) in another thread"):
                call()
    finally:
        leave.set()
        worker.join()
    assert opt.state_dict()["step"] == 2
    assert_bitwise_equal(params["w"], np.full(4, -1.0))


# ---- Ctrl-C -------------------------------------------------------------------------------------

@pytest.mark.skipif(not hasattr(signal, "pthread_kill"), reason="needs signal.pthread_kill")
@pytest.mark.parametrize("layout", ["contiguous", "strided"])
def test_ctrl_c_leaves_the_whole_step_or_none_of_it(layout):
    """SIGINT at random moments of the second update(): afterwards the optimizer and the
    parameter hold exactly the state after step 1 or exactly the state after step 2. (Before
    the fix: the step count stayed behind, or a strided parameter was not written back.)"""
    n = 2_000_000
    rng = np.random.default_rng(5)
    start = rng.standard_normal(n).astype(np.float32)
    grads = {"w": rng.standard_normal(n).astype(np.float32)}
    after = []  # (params, m, v) after steps 1 and 2 of the reference
    twin, expected = reference.Adam(), {"w": start.copy()}
    for _ in range(2):
        twin.update(expected, grads)
        after.append((expected["w"].copy(), twin.m["w"].copy(), twin.v["w"].copy()))
    # How long a step takes here, to spread the signals over it.
    timing = fastopt.Adam()
    probe = {"w": start.copy()}
    timing.update(probe, grads)
    begin = time.perf_counter()
    timing.update(probe, grads)
    step_seconds = time.perf_counter() - begin
    main = threading.main_thread().ident
    outcomes = set()
    for trial in range(12):
        buffer = np.zeros(2 * n, np.float32)
        weights = buffer[::2] if layout == "strided" else buffer[:n]
        weights[...] = start
        params = {"w": weights}
        opt = fastopt.Adam()
        opt.update(params, grads)
        armed, lock = [True], threading.Lock()

        def interrupt():
            with lock:
                if armed[0]:
                    signal.pthread_kill(main, signal.SIGINT)

        timer = threading.Timer(step_seconds * trial / 10, interrupt)
        try:
            timer.start()
            opt.update(params, grads)
            with lock:  # from here on no signal is sent; one sent before lands in this block
                armed[0] = False
            time.sleep(0.001)
        except KeyboardInterrupt:
            pass
        finally:
            timer.cancel()
            timer.join()
        steps = opt.iter
        assert steps in (1, 2)
        outcomes.add(steps)
        expected_w, expected_m, expected_v = after[steps - 1]
        assert_bitwise_equal(params["w"], expected_w, f"trial {trial}: params after {steps}")
        assert_bitwise_equal(opt.m["w"], expected_m, f"trial {trial}: m after {steps}")
        assert_bitwise_equal(opt.v["w"], expected_v, f"trial {trial}: v after {steps}")
    assert outcomes  # (which outcomes occur depends on timing)
