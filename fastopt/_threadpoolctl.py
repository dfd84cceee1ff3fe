"""fastopt's worker threads as seen by threadpoolctl (an optional dependency).

threadpoolctl lists and limits the thread pools of the native libraries loaded in a process:
BLAS (OpenBLAS, MKL) and OpenMP runtimes. fastopt's pool is neither, so fastopt registers a
controller for its own extension: threadpoolctl.threadpool_info() then shows it (internal_api
"fastopt", user_api "openmp": a pool of compute threads, limited with the OpenMP runtimes by
threadpool_limits(limits, user_api="openmp")), and threadpool_limits(1) sets it to one thread
for the duration, like fastopt.set_num_threads(1).
"""
import importlib.util


def register():
    """Register fastopt's controller with threadpoolctl if it is installed (else do nothing,
    without importing anything)."""
    if importlib.util.find_spec("threadpoolctl") is None:
        return
    import threadpoolctl

    from . import __version__

    class FastoptController(threadpoolctl.LibController):
        """fastopt's pool, through the two functions its extension exports."""

        user_api = "openmp"
        internal_api = "fastopt"
        filename_prefixes = ("_kernels",)
        check_symbols = ("fastopt_get_num_threads", "fastopt_set_num_threads")

        def get_num_threads(self):
            return self.dynlib.fastopt_get_num_threads()

        def set_num_threads(self, num_threads):
            self.dynlib.fastopt_set_num_threads(int(num_threads))

        def get_version(self):
            return __version__

    if not any(getattr(controller, "internal_api", None) == "fastopt"
               for controller in getattr(threadpoolctl, "_ALL_CONTROLLERS", ())):
        threadpoolctl.register(FastoptController)
