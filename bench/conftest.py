"""Shared fixtures of the pytest-benchmark suite (see bench/README.md).

The workloads and the implementations are fastopt.benchmark's, the same the `fastopt bench`
command runs: fastopt, numpy (fastopt.reference, the baseline) and limit (the traffic-limit
kernel, this machine's ceiling). Each benchmark's group is its case, so pytest-benchmark prints
the three side by side. 1e7-element cases run only with --large.
"""
import pytest

from fastopt.benchmark import FASTOPT, LIMIT, NUMPY

IMPLEMENTATIONS = {"fastopt": FASTOPT, "numpy": NUMPY, "limit": LIMIT}
LARGE_ELEMENTS = 10_000_000
LARGE_ROUNDS = 5  # rounds of one call each for 1e7-element cases (NumPy takes ~0.3 s a call)


def pytest_addoption(parser):
    parser.addoption("--large", action="store_true", default=False,
                     help="also run the 1e7-element cases (about a minute more)")


def pytest_configure(config):
    config.addinivalue_line("markers", "large: a 1e7-element case, run only with --large")


def pytest_collection_modifyitems(config, items):
    if config.getoption("--large"):
        return
    skip = pytest.mark.skip(reason="1e7-element case: run with pytest bench/ --large")
    for item in items:
        if "large" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(params=list(IMPLEMENTATIONS))
def implementation(request):
    """Each implementation in turn: fastopt, numpy, limit."""
    return IMPLEMENTATIONS[request.param]


@pytest.fixture
def benchmark_update(benchmark, implementation):
    """benchmark_update(optimizer, workload): benchmark one update() of the implementation on
    its own copies of the workload's arrays, grouped by case."""

    def run(optimizer, workload):
        params, grads = workload.make_arrays()
        step = implementation.prepare(optimizer, params, grads)
        step()  # the first update() creates the optimizer state: keep it out of the timing
        benchmark.group = f"{optimizer} {workload.dtype.name} {workload.label}"
        benchmark.extra_info["elements"] = workload.elements
        benchmark.extra_info["arrays"] = workload.arrays
        benchmark.extra_info["bytes_per_update"] = workload.bytes_moved(optimizer)
        if workload.elements >= LARGE_ELEMENTS:
            benchmark.pedantic(step, rounds=LARGE_ROUNDS, iterations=1, warmup_rounds=1)
        else:
            benchmark(step)

    return run
