"""`fastopt bench --load`: one busy process competing for the CPU while the benchmark measures.

On a shared machine a neighbour often keeps a core busy; the numbers that matter then are those
measured under such competition (a thread of fastopt or of BLAS waiting for its time slice
delays the whole step). busy_process() starts a Python process spinning in a loop and stops it
when its block ends, however it ends: normally, by an exception, or by Ctrl-C. Should this
process die without running its cleanup (killed, os._exit), the spinning process notices that
its parent is gone within a few hundredths of a second and exits by itself.
"""
import contextlib
import subprocess
import sys

# The busy process: ignores Ctrl-C (the terminal sends SIGINT to the whole foreground process
# group; the parent stops it, without a second traceback), says it runs, then spins until its
# parent changes, i.e. until the process that started it is gone.
SPIN_CODE = """\
import os, signal, sys
signal.signal(signal.SIGINT, signal.SIG_IGN)
parent = os.getppid()
sys.stdout.write("spinning\\n")
sys.stdout.flush()
while os.getppid() == parent:
    for _ in range(200_000):
        pass
"""
STOP_SECONDS = 5.0  # how long the process may take to end after SIGTERM before SIGKILL


@contextlib.contextmanager
def busy_process():
    """A context manager: a process spinning on one core for the duration of the block; yields
    its subprocess.Popen (its pid, for a report). When the block is entered, the process runs;
    when it is left, the process has ended and been waited for. RuntimeError if it could not
    start."""
    process = subprocess.Popen([sys.executable, "-c", SPIN_CODE], stdin=subprocess.DEVNULL,
                               stdout=subprocess.PIPE, close_fds=True)
    try:
        if process.stdout.readline() != b"spinning\n":  # EOF: it died at start
            raise RuntimeError(f"the busy process did not start (exit status "
                               f"{process.wait()})")
        yield process
    finally:
        stop(process)


def stop(process):
    """End the process (SIGTERM, then SIGKILL after STOP_SECONDS) and wait for it."""
    try:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(STOP_SECONDS)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
    finally:
        process.stdout.close()
