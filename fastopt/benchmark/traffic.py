"""The traffic-limit kernel: the benchmark's ceiling, not an optimizer.

It lives here, not in fastopt.optimizers, because only the benchmark uses it; it runs through
the same Optimizer.update() path as the optimizers, so the ceiling includes the same per-call
overhead.
"""
from fastopt.optimizers import Optimizer


class TrafficLimit(Optimizer):
    """Not an optimizer: the benchmark's ceiling. Reads and writes exactly the bytes of an
    optimizer with n_states state arrays (p += g, and s += g for each state), so its time on
    large arrays is what the memory system allows for that optimizer.

    n_states: 0, 1 or 2 (the compiled kernels "traffic0" to "traffic2").
    """

    _hyperparameters = ()

    def __init__(self, n_states):
        if n_states not in (0, 1, 2):
            raise ValueError(f"n_states must be 0, 1 or 2, got {n_states!r}")
        super().__init__()
        self._kernel = f"traffic{n_states}"
        self._state_names = ("s0", "s1")[:n_states]

    def _coefficients(self, step):
        return ()
