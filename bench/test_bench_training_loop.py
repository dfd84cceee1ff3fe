"""Training loops (fastopt bench --training-loop's workloads): one iteration per call, NumPy's
forward and backward passes then opt.update, for each mode: fastopt at its thread count,
fastopt at 1 thread, the NumPy reference. Grouped by workload, so the three modes stand side
by side; extra_info has the step's mean time and its share of the iteration."""
import time

import pytest

import fastopt
from fastopt.benchmark import LOOP_WORKLOADS, LOOP_MODES

OPTIMIZER = "Adam"


@pytest.fixture(params=[mode.name for mode in LOOP_MODES])
def mode(request):
    """Each mode in turn; the 1-thread mode holds fastopt at one thread (restored after)."""
    chosen = next(mode for mode in LOOP_MODES if mode.name == request.param)
    threads = fastopt.get_num_threads()
    if chosen.single_thread:
        fastopt.set_num_threads(1)
    yield chosen
    fastopt.set_num_threads(threads)


@pytest.mark.parametrize("kind", list(LOOP_WORKLOADS))
def test_training_loop(benchmark, mode, kind):
    workload = LOOP_WORKLOADS[kind]
    params, compute = workload.make_loop(workload.make_data())
    optimizer = mode.implementation.make(OPTIMIZER)
    clock = time.perf_counter
    step_seconds, loop_seconds = [], []

    def iteration():
        began = clock()
        grads = compute()
        before = clock()
        optimizer.update(params, grads)
        after = clock()
        step_seconds.append(after - before)
        loop_seconds.append(after - began)

    for _ in range(3):  # the first update() creates the optimizer state: keep it out
        iteration()
    del step_seconds[:], loop_seconds[:]
    benchmark.group = f"{OPTIMIZER} {workload.dtype.name} {workload.label} loop"
    benchmark.extra_info["workload"] = f"{kind}: {workload.description}"
    benchmark.extra_info["threads"] = fastopt.get_num_threads()
    benchmark(iteration)
    benchmark.extra_info["step_mean_seconds"] = sum(step_seconds) / len(step_seconds)
    benchmark.extra_info["step_share"] = sum(step_seconds) / sum(loop_seconds)
