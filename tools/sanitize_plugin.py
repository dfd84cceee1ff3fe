"""pytest plugin that tools/sanitize.sh loads (-p sanitize_plugin) into the sanitized test run.

- Refuses to run unless the fastopt imported is the sanitized build in the script's work copy
  (FASTOPT_SANITIZE_SOURCE), so a stray installed fastopt can never be tested by mistake.
- Threads: 2, parallel threshold 0, no adaptive choice, so every step of 32 elements or more
  is split between the caller and a worker thread (tests that set their own values restore
  these afterwards).
- Hypothesis: no deadline per example (unless a test or --hypothesis-profile says otherwise).
- Writes the id of the test about to run to FASTOPT_SANITIZE_CURRENT: a sanitizer stops the
  process at its first finding, and the script names the test that was running.
- Leaks are checked in this process only: subprocesses the tests start get detect_leaks=0.
  LeakSanitizer's stop-the-world tracer now and then crashes at exit ("Tracer caught signal
  11", google/sanitizers#1353), which aborts the process; in a subprocess that would fail a test
  at random. For this process the script tells that crash from a finding: pytest's own exit
  status goes to FASTOPT_SANITIZE_STATUS before the leak check runs.
"""
import os

import pytest


def pytest_configure(config):
    import fastopt
    from fastopt import _kernels

    expected = os.path.realpath(os.environ["FASTOPT_SANITIZE_SOURCE"])
    found = os.path.realpath(os.path.dirname(os.path.dirname(fastopt.__file__)))
    if found != expected:
        raise pytest.UsageError(f"sanitize_plugin: imported fastopt from {found}, "
                                f"not the sanitized copy in {expected}")
    os.environ["ASAN_OPTIONS"] = os.environ.get("ASAN_OPTIONS", "") + ":detect_leaks=0"
    fastopt.set_num_threads(2)
    _kernels.set_parallel_threshold(0)
    _kernels.set_thread_backoff(False)
    # Sanitized code runs several times slower: Hypothesis's default 200 ms deadline per example
    # would fail tests for time alone. Tests that choose their own settings keep them, and so
    # does a profile named on the command line.
    try:
        from hypothesis import settings
    except ImportError:
        return
    if config.getoption("hypothesis_profile", None) is None:
        settings.register_profile("fastopt-sanitize", deadline=None)
        settings.load_profile("fastopt-sanitize")


def _describe():
    import fastopt
    from fastopt import _kernels

    return (f"SIMD paths run by the simd fixture: {', '.join(fastopt.available_simd())}; "
            f"worker threads built: {fastopt.build_info()['threads_enabled']}; threads: "
            f"{fastopt.get_num_threads()}, "
            f"parallel threshold: {_kernels.get_parallel_threshold()} ps, adaptive: "
            f"{_kernels.get_thread_backoff()}")


def pytest_report_header(config):
    import fastopt

    return [f"fastopt (sanitized): {os.path.dirname(fastopt.__file__)}", "  " + _describe()]


def pytest_terminal_summary(terminalreporter):
    """The same line at the end, where -q does not hide it (tests restore the thread settings
    they change, so these are the run's)."""
    terminalreporter.write_line("fastopt (sanitized): " + _describe())


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_logstart(nodeid, location):
    path = os.environ.get("FASTOPT_SANITIZE_CURRENT")
    if path:
        with open(path, "w") as f:
            f.write(nodeid + "\n")


def pytest_sessionfinish(session, exitstatus):
    path = os.environ.get("FASTOPT_SANITIZE_STATUS")
    if path:
        with open(path, "w") as f:
            f.write(f"{int(exitstatus)}\n")
