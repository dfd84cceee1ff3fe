"""The NumPy oracle: the textbook's optimizer classes, as the textbook writes them.

Every test compares fastopt against these classes bit for bit, and every benchmark measures
against them. Do not "improve" them: their exact expressions (and NumPy 2's rules for how a
Python float or a numpy.float64 scalar meets a float32 array) define the numbers fastopt must
reproduce.
"""
import math

import numpy as np



class SGD:
    """Stochastic gradient descent: params -= lr * grads."""

    def __init__(self, lr=0.01):
        self.lr = lr

    def update(self, params, grads):
        for key in params.keys():
            params[key] -= self.lr * grads[key]


class Momentum:
    """Momentum SGD: v = momentum*v - lr*grads; params += v."""

    def __init__(self, lr=0.01, momentum=0.9):
        self.lr = lr
        self.momentum = momentum
        self.v = None

    def update(self, params, grads):
        if self.v is None:
            self.v = {}
            for key, val in params.items():
                self.v[key] = np.zeros_like(val)

        for key in params.keys():
            self.v[key] = self.momentum * self.v[key] - self.lr * grads[key]
            params[key] += self.v[key]


class Nesterov:
    """Nesterov's Accelerated Gradient (the textbook's formulation)."""

    def __init__(self, lr=0.01, momentum=0.9):
        self.lr = lr
        self.momentum = momentum
        self.v = None

    def update(self, params, grads):
        if self.v is None:
            self.v = {}
            for key, val in params.items():
                self.v[key] = np.zeros_like(val)

        for key in params.keys():
            self.v[key] *= self.momentum
            self.v[key] -= self.lr * grads[key]
            params[key] += self.momentum * self.momentum * self.v[key]
            params[key] -= (1 + self.momentum) * self.lr * grads[key]


class AdaGrad:
    """AdaGrad: h += grads**2; params -= lr * grads / (sqrt(h) + 1e-7)."""

    def __init__(self, lr=0.01):
        self.lr = lr
        self.h = None

    def update(self, params, grads):
        if self.h is None:
            self.h = {}
            for key, val in params.items():
                self.h[key] = np.zeros_like(val)

        for key in params.keys():
            self.h[key] += grads[key] * grads[key]
            params[key] -= self.lr * grads[key] / (np.sqrt(self.h[key]) + 1e-7)


class RMSprop:
    """RMSprop: h = decay_rate*h + (1-decay_rate)*grads**2; params -= lr*grads/(sqrt(h)+1e-7)."""

    def __init__(self, lr=0.01, decay_rate=0.99):
        self.lr = lr
        self.decay_rate = decay_rate
        self.h = None

    def update(self, params, grads):
        if self.h is None:
            self.h = {}
            for key, val in params.items():
                self.h[key] = np.zeros_like(val)

        for key in params.keys():
            self.h[key] *= self.decay_rate
            self.h[key] += (1 - self.decay_rate) * grads[key] * grads[key]
            params[key] -= self.lr * grads[key] / (np.sqrt(self.h[key]) + 1e-7)


class Adam:
    """Adam (http://arxiv.org/abs/1412.6980v8), the textbook's formulation."""

    def __init__(self, lr=0.001, beta1=0.9, beta2=0.999):
        self.lr = lr
        self.beta1 = beta1
        self.beta2 = beta2
        self.iter = 0
        self.m = None
        self.v = None

    def update(self, params, grads):
        if self.m is None:
            self.m, self.v = {}, {}
            for key, val in params.items():
                self.m[key] = np.zeros_like(val)
                self.v[key] = np.zeros_like(val)

        self.iter += 1
        lr_t = self.lr * np.sqrt(1.0 - self.beta2**self.iter) / (1.0 - self.beta1**self.iter)

        for key in params.keys():
            self.m[key] += (1 - self.beta1) * (grads[key] - self.m[key])
            self.v[key] += (1 - self.beta2) * (grads[key]**2 - self.v[key])
            params[key] -= lr_t * self.m[key] / (np.sqrt(self.v[key]) + 1e-7)


# ---- the reduction pass ------------------------------------------------------------------------
# Not in the textbook: the twin of fastopt.global_norm, which defines the order of its additions.

REDUCTION_BLOCK = 1024  # elements of the concatenated run per block
REDUCTION_LANES = 8  # partial sums per block


def pairwise_tree(sums):
    """Sum along the last axis by a fixed pairwise tree: for width = 1, 2, 4, ...:
    s[i] += s[i + width] for i = 0, 2*width, 4*width, ... while i + width < n; the result is
    s[0]. sums is not modified."""
    sums = np.array(sums, dtype=np.float64)
    n, width = sums.shape[-1], 1
    while width < n:
        left = np.arange(0, n - width, 2 * width)
        sums[..., left] = sums[..., left] + sums[..., left + width]
        width *= 2
    return sums[..., 0]


def sum_of_squares(arrays):
    """The sum of the squares of every element of arrays (an iterable of float32/float64
    arrays), in double, in fastopt's fixed order: the arrays' elements one after another (each
    in C order, or in Fortran order if it is Fortran-contiguous and not C-contiguous); blocks of
    REDUCTION_BLOCK elements; in a block, element j adds x*x to partial sum j % REDUCTION_LANES,
    in order of j; the partial sums of each block, then the block sums, combined by
    pairwise_tree."""
    flat = [np.ravel(a, order="F" if a.flags.f_contiguous and not a.flags.c_contiguous
                     else "C").astype(np.float64) for a in map(np.asarray, arrays)]
    values = np.concatenate(flat) if flat else np.zeros(0)
    blocks = -(-values.size // REDUCTION_BLOCK)
    if blocks == 0:
        return 0.0
    # Zeros pad the last block: adding +0.0 to a partial sum (itself +0.0 or more) changes no bit.
    padded = np.zeros(blocks * REDUCTION_BLOCK)
    padded[:values.size] = values
    rows = padded.reshape(blocks, REDUCTION_BLOCK // REDUCTION_LANES, REDUCTION_LANES)
    partial_sums = np.zeros((blocks, REDUCTION_LANES))
    for row in range(rows.shape[1]):  # every block's lanes, one element each, in order
        partial_sums = partial_sums + rows[:, row, :] * rows[:, row, :]
    return float(pairwise_tree(pairwise_tree(partial_sums)))


def global_norm(grads):
    """sqrt(sum_of_squares(...)) of a dict of arrays (in dict order) or a list of arrays."""
    values = grads.values() if isinstance(grads, dict) else grads
    return math.sqrt(sum_of_squares(values))


# Every optimizer class above (each has update()), then the reductions.
__all__ = [name for name, value in list(globals().items())
           if isinstance(value, type) and hasattr(value, "update")] + ["global_norm",
                                                                        "sum_of_squares"]
