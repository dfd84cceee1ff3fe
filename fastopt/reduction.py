"""Reductions over every gradient of a step, with results that do not depend on threads or SIMD.

global_norm(grads) is the first user of the engine's reduction pass (csrc/fastopt.h,
fastopt_sum_of_squares): the sum of the squares of every element is accumulated in double in a
fixed order - blocks of 1024 elements of the concatenated run, 8 partial sums per block, a fixed
pairwise tree - so the result is the same, bit for bit, on every SIMD path and thread count.
fastopt.reference.global_norm computes the same bits in NumPy.
"""
import math

import numpy as np

from . import _kernels
from .optimizers import _DTYPE_NAMES, _describe, flat_order

__all__ = ["global_norm"]


def global_norm(grads):
    """The Euclidean norm of all gradients together: sqrt of the sum of the squares of every
    element of every array, accumulated in double (for float32 arrays too), as a Python float.

    grads: a dict of arrays (taken in dict order) or a list or tuple of arrays; each a float32 or
    float64 numpy.ndarray in native byte order (a NumPy float scalar counts as a 0-d array), any
    shape and layout; never modified. Each array is read in C order, or in Fortran order if it is
    Fortran-contiguous and not C-contiguous. An empty dict gives 0.0; a NaN gives NaN, an
    infinity inf.

    The result is bit-identical for every SIMD path and thread count (see fastopt.reduction),
    and equal to fastopt.reference.global_norm(grads) bit for bit. It can differ in the last
    bits from numpy.linalg.norm, which sums in another order.

    Raises TypeError if grads is not a dict, list or tuple, or an entry is not a float32/float64
    array in native byte order (naming the entry).
    """
    if isinstance(grads, dict):
        entries = [(f"grads[{key!r}]", value) for key, value in grads.items()]
    elif isinstance(grads, (list, tuple)):
        entries = [(f"grads[{index}]", value) for index, value in enumerate(grads)]
    else:
        raise TypeError(f"grads must be a dict, list or tuple of numpy arrays, got "
                        f"{_describe(grads)}")
    arrays = []
    for name, value in entries:
        if isinstance(value, np.floating):
            value = np.asarray(value)
        if not isinstance(value, np.ndarray):
            raise TypeError(f"{name} must be a numpy.ndarray, got {_describe(value)}")
        if value.dtype not in _kernels.DTYPES:
            raise TypeError(f"{name} has dtype {value.dtype}; global_norm takes "
                            f"{_DTYPE_NAMES} arrays in native byte order")
        # A copy only for an array that is not contiguous (or not aligned) in its flat order.
        arrays.append(np.require(value, requirements=(flat_order(value), "A")))
    total, _ = _kernels.sum_of_squares(tuple(arrays))
    return math.sqrt(total)
