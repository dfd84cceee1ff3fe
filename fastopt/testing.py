"""Helpers to check fastopt against fastopt.reference (used by fastopt's own tests)."""
import numpy as np

__all__ = ["assert_bitwise_equal", "assert_dict_bitwise_equal", "assert_state_bitwise_equal"]


def assert_bitwise_equal(actual, expected, name="array"):
    """Assert two arrays have the same shape, dtype and bits: -0.0 != 0.0, every finite value
    and infinity exact. NaN equals NaN whatever its sign and payload: IEEE 754 leaves open which
    NaN an operation on two NaNs returns, and compilers (NumPy's too) may swap the operands of
    a commutative operation. Raises AssertionError naming the first differing element."""
    actual = np.asarray(actual)
    expected = np.asarray(expected)
    if actual.shape != expected.shape or actual.dtype != expected.dtype:
        raise AssertionError(f"{name}: shape/dtype {actual.shape} {actual.dtype} != "
                             f"{expected.shape} {expected.dtype}")
    itemsize = actual.dtype.itemsize
    actual_bytes = np.ascontiguousarray(actual).reshape(-1).view(np.uint8).reshape(-1, itemsize)
    expected_bytes = np.ascontiguousarray(expected).reshape(-1).view(np.uint8).reshape(
        -1, itemsize)
    differs = (actual_bytes != expected_bytes).any(axis=1)
    if actual.dtype.kind in "fc":
        differs &= ~(np.isnan(actual).reshape(-1) & np.isnan(expected).reshape(-1))
    differ = np.flatnonzero(differs)
    if differ.size:
        i = differ[0]
        raise AssertionError(
            f"{name}: {differ.size} of {actual.size} elements differ; first at flat index {i}: "
            f"{actual.reshape(-1)[i]!r} (bytes {actual_bytes[i].tobytes().hex()}) != "
            f"{expected.reshape(-1)[i]!r} (bytes {expected_bytes[i].tobytes().hex()})")


def assert_dict_bitwise_equal(actual, expected, name=""):
    """Assert two dicts of arrays (params, say) have the same keys and, key by key, the same
    bits (see assert_bitwise_equal)."""
    assert set(actual) == set(expected), f"{name}: keys {set(actual)} != {set(expected)}"
    for key in expected:
        assert_bitwise_equal(actual[key], expected[key], f"{name} [{key!r}]".strip())


def assert_state_bitwise_equal(optimizer, reference):
    """Assert a fastopt optimizer and a reference one hold the same state, bit for bit."""
    for name in type(optimizer)._state_names:
        ours, theirs = getattr(optimizer, name), getattr(reference, name)
        if theirs is None or ours is None:
            assert ours is None and theirs is None, f"{name}: {ours!r} vs {theirs!r}"
            continue
        assert_dict_bitwise_equal(ours, theirs, name)
    if hasattr(reference, "iter"):
        assert optimizer.iter == reference.iter
