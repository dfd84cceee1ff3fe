"""Where do two threads start to pay? The measurement behind fastopt's parallel threshold.

    python bench/thread_threshold.py [--optimizers SGD,Adam] [--sizes 2048,8192,32768]

For each optimizer, dtype and size, times back-to-back update() calls on one thread and on two
threads with the threshold at 0 (every step split, back-off off), and prints the ratio. The
threshold in csrc/engine.c is set where two threads start to win for every kernel; the
per-element costs in csrc/fastopt.h are the one-thread columns divided by the size. Run it on
a quiet machine: another busy process makes every threaded step wait for a time slice.
"""
import argparse
import time

import numpy as np

import fastopt
from fastopt import _kernels
from fastopt.optimizers import OPTIMIZERS


def median_time(function, calls):
    times = []
    for _ in range(calls):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--optimizers", default=",".join(OPTIMIZERS))
    parser.add_argument("--sizes", default="2048,4096,8192,16384,32768,65536")
    parser.add_argument("--calls", type=int, default=200, help="calls per median")
    parser.add_argument("--rounds", type=int, default=5, help="alternating rounds per case")
    args = parser.parse_args()

    previous = (fastopt.get_num_threads(), _kernels.get_parallel_threshold(),
                _kernels.get_thread_backoff())
    _kernels.set_parallel_threshold(0)
    _kernels.set_thread_backoff(False)
    rng = np.random.default_rng(0)
    print(f"{'optimizer':9} {'dtype':7} {'elements':>8} {'1 thread':>10} {'2 threads':>10} "
          f"{'speedup':>7} {'ps/element':>10}")
    try:
        for name in args.optimizers.split(","):
            for dtype in (np.float32, np.float64):
                for size in (int(s) for s in args.sizes.split(",")):
                    params = {"w": rng.standard_normal(size).astype(dtype)}
                    grads = {"w": (rng.standard_normal(size) * 1e-3).astype(dtype)}
                    optimizer = OPTIMIZERS[name]()
                    optimizer.update(params, grads)
                    one, two = [], []
                    for _ in range(args.rounds):
                        fastopt.set_num_threads(1)
                        one.append(median_time(lambda: optimizer.update(params, grads),
                                               args.calls))
                        fastopt.set_num_threads(2)
                        two.append(median_time(lambda: optimizer.update(params, grads),
                                               args.calls))
                    one_thread, two_threads = np.median(one), np.median(two)
                    print(f"{name:9} {np.dtype(dtype).name:7} {size:8d} "
                          f"{one_thread * 1e6:8.1f}us {two_threads * 1e6:8.1f}us "
                          f"{one_thread / two_threads:7.2f} {one_thread * 1e12 / size:10.0f}",
                          flush=True)
    finally:
        fastopt.set_num_threads(previous[0])
        _kernels.set_parallel_threshold(previous[1])
        _kernels.set_thread_backoff(previous[2])


if __name__ == "__main__":
    main()
