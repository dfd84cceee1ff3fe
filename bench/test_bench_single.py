"""One array of n elements: every optimizer x {float32, float64} x {1e3, 1e5, 1e6, 1e7}."""
import pytest

from fastopt.benchmark import DTYPES, OPTIMIZERS, single_array

SIZES = [1_000, 100_000, 1_000_000, pytest.param(10_000_000, marks=pytest.mark.large)]


@pytest.mark.parametrize("size", SIZES, ids=lambda size: f"{size:.0e}".replace("+0", ""))
@pytest.mark.parametrize("dtype", list(DTYPES))
@pytest.mark.parametrize("optimizer", list(OPTIMIZERS))
def test_single_array(benchmark_update, optimizer, dtype, size):
    benchmark_update(optimizer, single_array(size, dtype))


def test_one_element_adam(benchmark_update):
    """The per-call overhead: Adam on a single float64 element."""
    benchmark_update("Adam", single_array(1, "float64"))
