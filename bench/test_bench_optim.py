"""fastopt.optim's classes (default arguments): every class x {float32, float64} x {1e4, 1e6,
1e7 with --large}, AdamW on 200 arrays of 4096 float32, and AdamW's clipping variant
(update(..., max_grad_norm=1.0)), each for fastopt, numpy (the twin in fastopt.reference.optim),
limit (the traffic-limit kernel with the same state arrays; none for the clipping variant) and
torch (torch.optim's class of the same name, fused where torch has a fused CPU kernel, else
foreach; for the clipping variant clip_grad_norm_ then the fused step; none for Lion)."""
import pytest

from fastopt import optim
from fastopt.benchmark import DTYPES, MULTI_ARRAY_WORKLOADS, single_array

SIZES = [10_000, 1_000_000, pytest.param(10_000_000, marks=pytest.mark.large)]
FAMILY = [f"optim.{name}" for name in optim.OPTIMIZERS]


def size_id(size):
    return f"{size:.0e}".replace("+0", "")


@pytest.mark.parametrize("size", SIZES, ids=size_id)
@pytest.mark.parametrize("dtype", list(DTYPES))
@pytest.mark.parametrize("optimizer", FAMILY)
def test_family_single_array(benchmark_family_update, optimizer, dtype, size):
    benchmark_family_update(optimizer, single_array(size, dtype))


def test_family_many_small_adamw(benchmark_family_update):
    """AdamW on 200 arrays of 4096 float32: where torch's per-tensor overhead shows."""
    benchmark_family_update("optim.AdamW", MULTI_ARRAY_WORKLOADS["many-small"])


@pytest.mark.parametrize("size", SIZES, ids=size_id)
def test_family_adamw_clipped(benchmark_family_update, size):
    """AdamW with max_grad_norm=1.0 on float32 (gradients of global norm 10: clipping bites)."""
    benchmark_family_update("optim.AdamW+clip", single_array(size, "float32"))
