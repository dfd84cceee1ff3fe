"""fastopt: the classic dict-based NumPy optimizers as fused, multi-threaded SIMD C kernels.

    from fastopt import Adam
    opt = Adam(lr=0.001)
    opt.update(params, grads)   # params: dict of float32/float64 arrays, updated in place

Results are bit for bit those of fastopt.reference: the optimizer classes of the textbook
*Deep Learning from Scratch* (its common/optimizer.py), in NumPy.
"""
import os as _os

from ._version import __version__


def _import_kernels():
    """The compiled extension, or an ImportError that says why it is missing and what to do."""
    try:
        from . import _kernels
    except ImportError as error:
        here = _os.path.dirname(_os.path.abspath(__file__))
        if any(name.startswith("_kernels.") and not name.endswith((".pyx", ".c"))
               for name in _os.listdir(here)):
            raise  # the extension is there but does not load: the original error says why
        raise ImportError(
            f"fastopt's compiled extension (fastopt._kernels) is not in {here}. This looks like "
            f"a fastopt source folder that was not built in place, imported instead of the "
            f"installed fastopt because Python puts the current folder first on sys.path. "
            f"Run Python from another folder, or build the source folder in place: "
            f"python setup.py build_ext --inplace") from error
    return _kernels


_kernels = _import_kernels()
from .optimizers import OPTIMIZERS, Optimizer
from .reduction import global_norm
from . import optim  # PyTorch's optimizers on the same API (fastopt.optim.AdamW, ...)
from . import _threadpoolctl

# Every registered optimizer class at the top level: fastopt.Adam, ... (see fastopt.optimizers).
globals().update(OPTIMIZERS)

__all__ = [*OPTIMIZERS, "Optimizer", "global_norm", "build_info", "set_num_threads",
           "get_num_threads", "set_simd", "get_simd", "available_simd", "__version__"]


def available_simd():
    """The SIMD paths this build contains and this CPU can run, e.g. ["baseline", "avx2"]."""
    return _kernels.simd_supported()


def get_simd():
    """The SIMD path in use: "baseline", "avx2" or "avx512"."""
    return _kernels.simd_active()


def set_simd(name):
    """Use the named SIMD path from now on (every path gives the same bits; this is for testing
    and measuring). ValueError if this build or CPU cannot run it."""
    _kernels.simd_select(name)


def get_num_threads():
    """The number of threads a large update() may use (the calling thread and up to n - 1
    workers). Default: FASTOPT_NUM_THREADS, else OMP_NUM_THREADS, else the number of cores
    this process may run on; at most 1024."""
    return _kernels.get_num_threads()


def set_num_threads(n):
    """Use n threads for large updates: an integer from 1 to 1024 (fastopt._kernels.MAX_THREADS).
    Results do not depend on n."""
    if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= _kernels.MAX_THREADS:
        raise ValueError(f"number of threads must be an integer >= 1 and <= "
                         f"{_kernels.MAX_THREADS}, got {n!r}")
    if n > 1 and not _kernels.threads_enabled():
        raise ValueError("this fastopt build has no threads (FASTOPT_THREADS=0); only 1 thread "
                         "is available")
    _kernels.set_num_threads(n)


def build_info():
    """How this fastopt was built and what it runs on: a dict with version, compiler, flags,
    simd (the path in use), simd_compiled, simd_available, threads_enabled (the build has
    worker threads), threads (the number a step may use) and parallel_threshold_ps (a step
    estimated to take less than this many picoseconds on one thread runs on one thread)."""
    try:
        from . import _build_config as config
        compiler, flags = config.compiler, list(config.flags)
    except ImportError:  # built by something other than setup.py
        compiler, flags = "unknown", []
    return {
        "version": __version__,
        "compiler": compiler,
        "flags": flags,
        "simd": _kernels.simd_active(),
        "simd_compiled": _kernels.simd_compiled(),
        "simd_available": _kernels.simd_supported(),
        "threads_enabled": _kernels.threads_enabled(),
        "threads": _kernels.get_num_threads(),
        "parallel_threshold_ps": _kernels.get_parallel_threshold(),
    }


def _select_simd_from_environment():
    name = _os.environ.get("FASTOPT_SIMD", "").strip().lower()
    if not name:
        return
    try:
        _kernels.simd_select(name)
    except ValueError as error:
        raise ImportError(f"FASTOPT_SIMD={name}: {error}") from None


def _default_num_threads():
    """FASTOPT_NUM_THREADS, else OMP_NUM_THREADS (its first entry, as OpenMP reads it), else
    the cores this process may run on; clamped to [1, 1024]."""
    for name in ("FASTOPT_NUM_THREADS", "OMP_NUM_THREADS"):
        value = _os.environ.get(name, "").split(",")[0].strip()
        if value:
            try:
                return max(1, min(int(value), _kernels.MAX_THREADS))
            except ValueError:
                pass  # not a number: as OpenMP does, ignore it
    try:
        cores = len(_os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cores = _os.cpu_count() or 1
    return max(1, min(cores, _kernels.MAX_THREADS))


_select_simd_from_environment()
_kernels.set_num_threads(_default_num_threads())
_threadpoolctl.register()
