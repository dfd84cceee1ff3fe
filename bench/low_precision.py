"""fastopt.optim in 16 bits at 1e7 elements: the two speed targets of low precision.

    python bench/low_precision.py [--size 1e7] [--rounds 40]

- AdamW with bfloat16 parameters and gradients, a float32 master copy and float32 state
  against the traffic-limit kernel for the same bytes (28 per element: a float32 parameter, a
  float32 gradient and two float32 state arrays move as many), target <= 1.10;
- AdamW on float32 parameters with state_dtype=bfloat16 against float32 state (20 bytes per
  element against 28), target <= 0.80.
Each round times every case once, in turn (interleaved, so that a busy moment of this shared
machine hits all of them); the ratios are of medians and of bests over the rounds. Needs
ml_dtypes.
"""
import argparse
import time

import numpy as np

import fastopt
from fastopt import optim
from fastopt.benchmark.traffic import TrafficLimit


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=float, default=1e7)
    parser.add_argument("--rounds", type=int, default=40)
    args = parser.parse_args()
    import ml_dtypes

    bf16, n = ml_dtypes.bfloat16, int(args.size)
    rng = np.random.default_rng(0)
    p32, g32 = (rng.standard_normal(n).astype(np.float32) for _ in range(2))
    cases = {}

    def case(label, optimizer, params, grads):
        optimizer.update(params, grads)  # state created, plan built
        cases[label] = lambda: optimizer.update(params, grads)

    limit, limit_params = TrafficLimit(2), {"w": p32.copy()}
    cases["traffic limit, 28 B"] = lambda: limit.update(limit_params, {"w": g32})
    case("AdamW bf16 + master, 28 B", optim.AdamW(master_weights=True),
         {"w": p32.astype(bf16)}, {"w": g32.astype(bf16)})
    case("AdamW float32, 28 B", optim.AdamW(), {"w": p32.copy()}, {"w": g32})
    case("AdamW state bf16, 20 B", optim.AdamW(state_dtype=bf16), {"w": p32.copy()},
         {"w": g32})
    times = {label: [] for label in cases}
    for _ in range(args.rounds):
        for label, run in cases.items():
            start = time.perf_counter()
            run()
            times[label].append(time.perf_counter() - start)
    info = fastopt.build_info()
    print(f"{n:.0e} elements, {info['threads']} threads, {info['simd']}, {args.rounds} rounds")
    for label, values in times.items():
        print(f"  {label:28s} median {np.median(values) * 1e3:7.2f} ms   best "
              f"{min(values) * 1e3:7.2f} ms")
    for name, (top, bottom, target) in {
            "bf16 + master / traffic limit": ("AdamW bf16 + master, 28 B",
                                              "traffic limit, 28 B", 1.10),
            "state bf16 / state float32": ("AdamW state bf16, 20 B", "AdamW float32, 28 B",
                                           0.80)}.items():
        median = np.median(times[top]) / np.median(times[bottom])
        best = min(times[top]) / min(times[bottom])
        print(f"{name:32s} median {median:.3f}  best {best:.3f}  (target <= {target})")


if __name__ == "__main__":
    main()
