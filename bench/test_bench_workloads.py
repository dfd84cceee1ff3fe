"""Dicts of many arrays: the textbook MLP (784-40-20-10, float64), the book's 5x100 MLP
(784-100x5-10, float64) and 200 arrays of 4096 float32, for every optimizer."""
import pytest

from fastopt.benchmark import MULTI_ARRAY_WORKLOADS, OPTIMIZERS


@pytest.mark.parametrize("workload", list(MULTI_ARRAY_WORKLOADS))
@pytest.mark.parametrize("optimizer", list(OPTIMIZERS))
def test_multi_array(benchmark_update, optimizer, workload):
    benchmark_update(optimizer, MULTI_ARRAY_WORKLOADS[workload])
