"""sitecustomize for the Python processes of tools/sanitize.sh (copied there as sitecustomize.py,
first on PYTHONPATH, so the pytest process and every Python subprocess of a test run it).

GCC's UBSan runtime (libubsan), when it runs beside ASan, ignores UBSAN_OPTIONS=log_path and
writes its report to file descriptor 2, which pytest redirects to a temporary file while a test
runs: a finding that stops the process would vanish with that file. Setting the report path
through the runtime's own interface works, so a UBSan report lands beside ASan's, where the
script looks. Then the sitecustomize this one shadows, if any, runs as it would have.
"""
import os
import sys


def _set_ubsan_report_path():
    library, path = (os.environ.get("FASTOPT_SANITIZE_LIBUBSAN"),
                     os.environ.get("FASTOPT_SANITIZE_UBSAN_LOG"))
    if library and path:
        import ctypes

        ctypes.CDLL(library).__sanitizer_set_report_path(path.encode())


def _run_shadowed_sitecustomize():
    import importlib.machinery
    import importlib.util

    here = os.path.dirname(os.path.abspath(__file__))
    rest = [p for p in sys.path if os.path.abspath(p or os.curdir) != here]
    spec = importlib.machinery.PathFinder.find_spec("sitecustomize", rest)
    if spec is not None and spec.loader is not None:
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)


_set_ubsan_report_path()
_run_shadowed_sitecustomize()
