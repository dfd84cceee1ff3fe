"""Shared fixtures of the pytest-benchmark suite (see bench/README.md).

The workloads and the implementations are fastopt.benchmark's, the same the `fastopt bench`
command runs: fastopt, numpy (fastopt.reference, the baseline) and limit (the traffic-limit
kernel, this machine's ceiling); for fastopt.optim's classes (test_bench_optim.py) also torch
(torch.optim's class of the same name, fused or foreach, at fastopt's thread count) where it
has one. Each benchmark's group is its case, so pytest-benchmark prints them side by side.
1e7-element cases run only with --large.
"""
import functools

import pytest

import fastopt
from fastopt.benchmark import FASTOPT, LIMIT, NUMPY, Unsupported, load_peers

IMPLEMENTATIONS = {"fastopt": FASTOPT, "numpy": NUMPY, "limit": LIMIT}
FAMILY_IMPLEMENTATIONS = ("fastopt", "numpy", "limit", "torch")
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


def _benchmark_update(benchmark, implementation, optimizer, workload):
    """Benchmark one update() of the implementation on its own copies of the workload's
    arrays, grouped by case; skip (with the reason) where the implementation does not run the
    case (the limit for a clipping variant, torch for optim.Lion)."""
    params, grads = workload.make_arrays()
    try:
        step = implementation.prepare(optimizer, params, grads)
    except Unsupported as reason:
        pytest.skip(f"{implementation.name}: {reason}")
    step()  # the first update() creates the optimizer state: keep it out of the timing
    benchmark.group = f"{optimizer} {workload.dtype.name} {workload.label}"
    benchmark.extra_info["elements"] = workload.elements
    benchmark.extra_info["arrays"] = workload.arrays
    benchmark.extra_info["bytes_per_update"] = workload.bytes_moved(optimizer)
    if workload.elements >= LARGE_ELEMENTS:
        benchmark.pedantic(step, rounds=LARGE_ROUNDS, iterations=1, warmup_rounds=1)
    else:
        benchmark(step)


@pytest.fixture
def benchmark_update(benchmark, implementation):
    """benchmark_update(optimizer, workload): benchmark one update() of the implementation on
    its own copies of the workload's arrays, grouped by case."""
    return functools.partial(_benchmark_update, benchmark, implementation)


@pytest.fixture(scope="session")
def torch_peer():
    """fastopt.benchmark's torch peer at fastopt's thread count (as `fastopt bench` runs it), or
    the reason it cannot run (torch not installed)."""
    peers, notes = load_peers(("torch",), fastopt.get_num_threads(), need_deepspeed=False)
    return peers[0] if peers else notes[0]


@pytest.fixture(params=FAMILY_IMPLEMENTATIONS)
def family_implementation(request, torch_peer):
    """For fastopt.optim's classes: fastopt, numpy (the twin), limit, torch in turn; torch is
    skipped with the reason when it is not installed."""
    if request.param != "torch":
        return IMPLEMENTATIONS[request.param]
    if isinstance(torch_peer, str):
        pytest.skip(torch_peer)
    return torch_peer


@pytest.fixture
def benchmark_family_update(benchmark, family_implementation):
    """benchmark_update for fastopt.optim's classes (names "optim.AdamW", "optim.AdamW+clip"),
    with torch among the implementations."""
    return functools.partial(_benchmark_update, benchmark, family_implementation)
