"""fastopt's worker threads (issue C): the default count, threadpoolctl, fork, and the policy
that picks one thread or the pool per plan. Bit-for-bit results under every split are tested
with the optimizers (test_optimizers.py: thread_settings)."""
import multiprocessing
import os
import sys

import numpy as np
import pytest

import fastopt
import fastopt.reference
from fastopt import _kernels
from fastopt.testing import assert_bitwise_equal

# The shared helpers of test_optimizers.py, also under --import-mode=importlib (the wheel checks
# and cibuildwheel), where the tests folder is not on sys.path.
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from test_optimizers import thread_settings

THREADS_BUILT = fastopt.build_info()["threads_enabled"]
needs_threads = pytest.mark.skipif(not THREADS_BUILT, reason="built without threads")


@pytest.mark.parametrize("environment, expected", [
    ({"FASTOPT_NUM_THREADS": "3"}, 3),
    ({"OMP_NUM_THREADS": "3,2"}, 3),
    ({"FASTOPT_NUM_THREADS": "2", "OMP_NUM_THREADS": "5"}, 2),
    ({"OMP_NUM_THREADS": "0"}, 1),
])  # (OMP_NUM_THREADS alone, and beyond the bound: test_validation.py, test_all_or_nothing.py)
@needs_threads
def test_default_thread_count_from_the_environment(run_python, environment, expected):
    clean = {"FASTOPT_NUM_THREADS": "", "OMP_NUM_THREADS": "", **environment}
    result = run_python("-c", "import fastopt; print(fastopt.get_num_threads())",
                        extra_env=clean, check=True)
    assert int(result.stdout) == expected


def test_default_thread_count_is_the_usable_cores(run_python):
    result = run_python("-c", "import fastopt; print(fastopt.get_num_threads())",
                        extra_env={"FASTOPT_NUM_THREADS": "", "OMP_NUM_THREADS": ""}, check=True)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    assert int(result.stdout) == (min(cores, 1024) if THREADS_BUILT else 1)


def test_threadpoolctl_sees_and_limits_fastopts_threads():
    threadpoolctl = pytest.importorskip("threadpoolctl", reason="threadpoolctl not installed")
    ours = [info for info in threadpoolctl.threadpool_info() if info["internal_api"] == "fastopt"]
    assert len(ours) == 1
    assert ours[0]["user_api"] == "openmp" and ours[0]["version"] == fastopt.__version__
    assert os.path.samefile(ours[0]["filepath"], _kernels.__file__)
    assert ours[0]["num_threads"] == fastopt.get_num_threads()
    previous = fastopt.get_num_threads()
    with threadpoolctl.threadpool_limits(limits=1, user_api="openmp"):
        assert fastopt.get_num_threads() == 1
    assert fastopt.get_num_threads() == previous
    with threadpoolctl.threadpool_limits(limits=1):
        assert fastopt.get_num_threads() == 1
    assert fastopt.get_num_threads() == previous


def _update_in_child(queue):
    with thread_settings(2, 0, False):  # every step through the pool
        params = {"w": np.linspace(-1, 1, 5000)}
        opt = fastopt.Adam()
        for _ in range(3):
            opt.update(params, {"w": np.full(5000, 0.5)})
    queue.put(params["w"])


@needs_threads
@pytest.mark.skipif(sys.platform == "win32" or "fork" not in
                    multiprocessing.get_all_start_methods(), reason="needs fork()")
def test_a_forked_child_runs_threaded_steps():
    """The pool's workers do not survive fork(); the child starts its own."""
    with thread_settings(2, 0, False):  # the parent's workers exist before the fork
        fastopt.SGD().update({"w": np.ones(5000)}, {"w": np.ones(5000)})
    context = multiprocessing.get_context("fork")
    queue = context.Queue()
    child = context.Process(target=_update_in_child, args=(queue,))
    child.start()
    result = queue.get(timeout=60)
    child.join(timeout=60)
    assert child.exitcode == 0
    expected = {"w": np.linspace(-1, 1, 5000)}
    reference = fastopt.reference.Adam()
    for _ in range(3):
        reference.update(expected, {"w": np.full(5000, 0.5)})
    assert_bitwise_equal(result, expected["w"])


@needs_threads
def test_two_optimizers_share_the_pool_from_two_threads():
    """One job at a time: the second caller runs its chunks alone rather than wait; both
    results are exact."""
    import threading

    def train(params, results):
        opt = fastopt.Momentum()
        for _ in range(50):
            opt.update(params, {"w": np.full(params["w"].shape, 0.25)})
        results.append(params["w"])

    with thread_settings(2, 0, False):
        results = []
        workers = [threading.Thread(target=train, args=({"w": np.zeros(20000)}, results))
                   for _ in range(2)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
    expected = {"w": np.zeros(20000)}
    reference = fastopt.reference.Momentum()
    for _ in range(50):
        reference.update(expected, {"w": np.full(20000, 0.25)})
    for result in results:
        assert_bitwise_equal(result, expected["w"])
