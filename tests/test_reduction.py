"""The reduction pass (fastopt.global_norm): bit for bit equal to fastopt.reference on every
SIMD path and thread count, for every shape family and layout, with blocks and thread shares
falling inside arrays and between them."""
import math

import numpy as np
import pytest

import fastopt
import fastopt.reference as reference
from fastopt import _kernels

THREADS = [1, 2, 3] if fastopt.build_info()["threads_enabled"] else [1]


@pytest.fixture(params=THREADS)
def split_threads(request):
    """This many threads, and a zero parallel threshold so that even tiny passes are split."""
    previous = fastopt.get_num_threads(), _kernels.get_parallel_threshold()
    fastopt.set_num_threads(request.param)
    _kernels.set_parallel_threshold(0)
    yield request.param
    fastopt.set_num_threads(previous[0])
    _kernels.set_parallel_threshold(previous[1])


def gradients(rng, dtype):
    """Every shape family: 0-d, empty, sizes around vector widths and block sizes, views with a
    step, a transpose, Fortran order; mixed magnitudes so that the order of additions shows."""
    base = rng.standard_normal(5000).astype(dtype)
    grads = {"scalar": np.array(1.5, dtype=dtype), "empty": np.zeros(0, dtype=dtype),
             "one": rng.standard_normal(1).astype(dtype),
             "seven": rng.standard_normal(7).astype(dtype),
             "odd": (rng.standard_normal(1003) * 1e3).astype(dtype),
             "block_straddle": rng.standard_normal(2049).astype(dtype),
             "strided": base[::3], "transposed": rng.standard_normal((33, 65)).astype(dtype).T,
             "fortran": np.asfortranarray(rng.standard_normal((31, 17)).astype(dtype)),
             "tiny": (rng.standard_normal(300) * 1e-20).astype(dtype)}
    return grads


def spec_sum_of_squares(arrays, block=1024, lanes=8):
    """The order fastopt.reference documents, element by element in plain Python floats."""
    values = [float(x) for a in arrays
              for x in np.ravel(a, order="F" if a.flags.f_contiguous and not a.flags.c_contiguous
                                else "C")]

    def tree(sums):
        sums, width = list(sums), 1
        while width < len(sums):
            for i in range(0, len(sums) - width, 2 * width):
                sums[i] = sums[i] + sums[i + width]
            width *= 2
        return sums[0]

    block_sums = []
    for start in range(0, len(values), block):
        partial = [0.0] * lanes
        for j, x in enumerate(values[start:start + block]):
            partial[j % lanes] = partial[j % lanes] + x * x
        block_sums.append(tree(partial))
    return tree(block_sums) if block_sums else 0.0


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
def test_reference_follows_its_documented_order(dtype):
    rng = np.random.default_rng(5)
    arrays = list(gradients(rng, dtype).values())
    assert reference.sum_of_squares(arrays) == spec_sum_of_squares(arrays)


@pytest.mark.parametrize("dtype", [np.float32, np.float64, "mixed"])
def test_global_norm_bit_for_bit_every_path_and_thread_count(dtype, simd, split_threads):
    rng = np.random.default_rng(11)
    if dtype == "mixed":
        grads = {**{f"{k}32": v for k, v in gradients(rng, np.float32).items()},
                 **{f"{k}64": v for k, v in gradients(rng, np.float64).items()}}
    else:
        grads = gradients(rng, dtype)
    before = {key: value.copy() for key, value in grads.items()}
    ours = fastopt.global_norm(grads)
    assert type(ours) is float
    assert ours.hex() == reference.global_norm(grads).hex()
    for key in grads:  # read only
        assert np.array_equal(grads[key], before[key]) and grads[key].flags.writeable


@pytest.mark.parametrize("size", [0, 1, 7, 8, 9, 1003, 1024, 1025, 3 * 1024 + 5, 300_007])
def test_global_norm_sizes_around_lanes_and_blocks(size, simd, split_threads):
    rng = np.random.default_rng(size)
    x = rng.standard_normal(size).astype(np.float32)
    assert fastopt.global_norm([x]) == reference.global_norm([x])
    # one array cut in two at every kind of place gives the same run, so the same bits
    cut = size // 3
    assert fastopt.global_norm((x[:cut], x[cut:])) == fastopt.global_norm([x])


def test_global_norm_close_to_numpy_and_independent_of_the_split():
    rng = np.random.default_rng(3)
    grads = {f"w{i}": rng.standard_normal(rng.integers(1, 50_000)) for i in range(20)}
    expected = np.sqrt(sum(float(np.sum(g.astype(np.float64) ** 2)) for g in grads.values()))
    assert fastopt.global_norm(grads) == pytest.approx(expected, rel=1e-12)
    results = set()
    for threads in THREADS:
        previous = fastopt.get_num_threads()
        fastopt.set_num_threads(threads)
        try:
            results.add(fastopt.global_norm(grads))
        finally:
            fastopt.set_num_threads(previous)
    assert len(results) == 1


def test_the_order_of_additions_matters_so_the_bitwise_tests_can_fail():
    """With these magnitudes a plain left-to-right sum differs from the blocked one, so a
    kernel that summed in another order would fail the tests above."""
    rng = np.random.default_rng(7)
    x = rng.standard_normal(4096) * np.logspace(-8, 8, 4096)
    plain = 0.0
    for value in x:
        plain += value * value
    assert plain != reference.sum_of_squares([x])
    assert fastopt.global_norm([x]) == reference.global_norm([x])


def test_nonfinite_values_and_overflow(simd):
    x = np.ones(3000)
    for bad, expected in ((np.nan, "nan"), (np.inf, "inf"), (-np.inf, "inf")):
        y = x.copy()
        y[2500] = bad
        assert str(fastopt.global_norm([y])) == expected
        assert _kernels.sum_of_squares((y,))[1] is True
    big = np.full(10, 1e200)  # finite, but the squares overflow
    assert fastopt.global_norm({"big": big}) == math.inf
    assert _kernels.sum_of_squares((big,)) == (math.inf, False)
    assert _kernels.sum_of_squares((x,)) == (3000.0, False)
    assert fastopt.global_norm({}) == 0.0 and fastopt.global_norm([]) == 0.0


def test_global_norm_rejects_bad_input_naming_the_entry():
    with pytest.raises(TypeError, match=r"grads must be a dict, list or tuple of numpy arrays, "
                                        r"got a numpy.ndarray"):
        fastopt.global_norm(np.ones(3))
    with pytest.raises(TypeError, match=r"grads\['b'\] must be a numpy.ndarray, got a list"):
        fastopt.global_norm({"a": np.ones(2), "b": [1.0]})
    with pytest.raises(TypeError, match=r"grads\[1\] has dtype int64; global_norm takes float32"):
        fastopt.global_norm([np.ones(2), np.arange(3)])
    with pytest.raises(TypeError, match=r"grads\[0\] has dtype >f8"):
        fastopt.global_norm([np.ones(2, dtype=">f8")])
    assert fastopt.global_norm({"s": np.float32(2.0)}) == 2.0
