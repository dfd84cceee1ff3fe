"""fastopt.torch against torch.optim on realistic parameter sets: the speed targets of issue F.

    python bench/torch_step.py [--model gpt2-small|gpt2-tiny|mlp|all] [--rounds N]

Models (shapes generated, nothing downloaded):
- gpt2-small: GPT-2 small's 148 tensors, 124.4M parameters (wte 50257x768, wpe 1024x768,
  12 blocks of ln_1, attn.c_attn, attn.c_proj, ln_2, mlp.c_fc, mlp.c_proj, then ln_f);
- gpt2-tiny: the same structure at n_embd 128, vocab 5000, 2 blocks, 1024 positions (seconds);
- mlp: the textbook's MLP, 784-100-100-100-100-10, weights and biases (per-call overhead).
Cases, each timed once per round in turn (interleaved; the machine is shared and noisy), at
fastopt's thread count for every implementation (torch.set_num_threads):
- float32 AdamW: fastopt.torch.AdamW, torch.optim.AdamW(fused=True), (foreach=True), and the
  traffic-limit kernel for the same 28 bytes per element (fastopt.benchmark.traffic);
- bfloat16 parameters and gradients (gpt2 models): fastopt.torch.AdamW with its default float32
  state, with bfloat16 state (state_dtype=torch.bfloat16: the bytes torch moves), and with
  master_weights=True, against torch fused AdamW on bfloat16 (which keeps its state in
  bfloat16: 14 bytes per element where fastopt's float32 state moves 24);
- clipping: fastopt.torch.AdamW.step(max_grad_norm=1.0) against clip_grad_norm_(..., 1.0) +
  fused AdamW.
Prints ms per step (median and best over the rounds), GB/s (bytes the step must move / median
time) and the ratio of torch fused's median to each. DeepSpeed's DeepSpeedCPUAdam is timed
when `deepspeed` is importable (it is not a dependency).
"""
import argparse
import gc
import statistics
import time

import numpy as np
import torch

import fastopt
import fastopt.torch as ft
from fastopt.benchmark.traffic import TrafficLimit


def gpt2_shapes(n_embd=768, vocab=50257, positions=1024, layers=12):
    shapes = [(vocab, n_embd), (positions, n_embd)]
    for _ in range(layers):
        shapes += [(n_embd,), (n_embd,), (n_embd, 3 * n_embd), (3 * n_embd,),
                   (n_embd, n_embd), (n_embd,), (n_embd,), (n_embd,),
                   (n_embd, 4 * n_embd), (4 * n_embd,), (4 * n_embd, n_embd), (n_embd,)]
    return shapes + [(n_embd,), (n_embd,)]


MODELS = {
    "gpt2-small": lambda: gpt2_shapes(),
    "gpt2-tiny": lambda: gpt2_shapes(128, 5000, 1024, 2),
    "mlp": lambda: [s for a, b in zip((784, 100, 100, 100, 100), (100, 100, 100, 100, 10))
                    for s in ((a, b), (b,))],
}


def make_params(shapes, dtype, seed=0):
    generator = torch.Generator().manual_seed(seed)
    params = []
    for shape in shapes:
        p = (torch.randn(shape, generator=generator) * 0.02).to(dtype).requires_grad_()
        p.grad = torch.randn(shape, generator=generator).to(dtype)
        params.append(p)
    return params


def deepspeed_adam(params):
    try:
        from deepspeed.ops.adam import DeepSpeedCPUAdam
    except Exception:  # not installed, or its C++ op does not build here
        return None
    return DeepSpeedCPUAdam(params, lr=1e-3, weight_decay=1e-2, adamw_mode=True)


def cases_for(model, shapes):
    """{label: (make a step function, bytes one step must move)}; each maker builds its own
    parameters, so implementations never share memory."""
    n = sum(int(np.prod(s)) for s in shapes)
    cases = {}

    def fastopt_case(dtype, **options):
        def make():
            params = make_params(shapes, dtype)
            opt = ft.AdamW(params, lr=1e-3, **options)
            return lambda: opt.step()
        return make

    def torch_case(dtype, **options):
        def make():
            params = make_params(shapes, dtype)
            opt = torch.optim.AdamW(params, lr=1e-3, **options)
            return opt.step
        return make

    def limit_case():
        rng = np.random.default_rng(0)
        params = {f"p{i}": rng.standard_normal(s).astype(np.float32)
                  for i, s in enumerate(shapes)}
        grads = {k: v.copy() for k, v in params.items()}
        limit = TrafficLimit(2)
        return lambda: limit.update(params, grads)

    cases["f32 fastopt.torch"] = (fastopt_case(torch.float32), 28 * n)
    cases["f32 torch fused"] = (torch_case(torch.float32, fused=True), 28 * n)
    cases["f32 torch foreach"] = (torch_case(torch.float32, foreach=True), 28 * n)
    cases["f32 traffic limit"] = (limit_case, 28 * n)

    def deepspeed_case():
        params = make_params(shapes, torch.float32)
        opt = deepspeed_adam(params)
        return opt.step

    if deepspeed_adam([torch.zeros(1, requires_grad=True)]) is not None:
        cases["f32 DeepSpeedCPUAdam"] = (deepspeed_case, 28 * n)
    if model != "mlp":
        def clip_case():
            params = make_params(shapes, torch.float32)
            opt = torch.optim.AdamW(params, lr=1e-3, fused=True)

            def step():
                torch.nn.utils.clip_grad_norm_(params, 1.0)
                opt.step()
            return step

        def fastopt_clip():
            params = make_params(shapes, torch.float32)
            opt = ft.AdamW(params, lr=1e-3)
            return lambda: opt.step(max_grad_norm=1.0)

        cases["clip fastopt.torch"] = (fastopt_clip, 32 * n)
        cases["clip torch (clip_grad_norm_ + fused)"] = (clip_case, 32 * n)
        cases["bf16 fastopt.torch (f32 state)"] = (fastopt_case(torch.bfloat16), 24 * n)
        cases["bf16 fastopt.torch (bf16 state)"] = (
            fastopt_case(torch.bfloat16, state_dtype=torch.bfloat16), 14 * n)
        cases["bf16 fastopt.torch master_weights"] = (
            fastopt_case(torch.bfloat16, master_weights=True), 32 * n)
        cases["bf16 torch fused (bf16 state)"] = (torch_case(torch.bfloat16, fused=True),
                                                  14 * n)
    return cases, n


def run(model, rounds, only=None):
    shapes = MODELS[model]()
    cases, n = cases_for(model, shapes)
    print(f"\n{model}: {len(shapes)} tensors, {n / 1e6:.2f}M parameters, "
          f"{fastopt.get_num_threads()} threads, {rounds} rounds")
    # Sections of cases that are compared (built together, freed before the next).
    sections = [[k for k in cases if k.startswith(prefix)] for prefix in ("f32", "clip", "bf16")]
    calls = 200 if model == "mlp" else (1 if n > 5e7 else 10)
    for section in filter(None, sections):
        if only and not section[0].startswith(only):
            continue
        steps = {label: cases[label][0]() for label in section}
        times = {label: [] for label in section}
        for step in steps.values():
            step()  # state created, plans built
        for _ in range(rounds):
            for label, step in steps.items():
                start = time.perf_counter()
                for _ in range(calls):
                    step()
                times[label].append((time.perf_counter() - start) / calls)
        reference = [k for k in section if "torch fused" in k or "clip torch" in k]
        base = statistics.median(times[reference[0]]) if reference else None
        for label in section:
            median, best = statistics.median(times[label]), min(times[label])
            moved = cases[label][1]
            ratio = f"{base / median:5.2f}x" if base else ""
            unit = (f"{median * 1e6:9.1f} us {best * 1e6:9.1f} us" if model == "mlp"
                    else f"{median * 1e3:9.2f} ms {best * 1e3:9.2f} ms")
            print(f"  {label:40s} {unit} {moved / median / 1e9:7.1f} GB/s  "
                  f"torch fused / this {ratio}")
        del steps
        gc.collect()


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", choices=(*MODELS, "all"), default="all")
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--only", choices=("f32", "clip", "bf16"), default=None,
                        help="run one section of cases")
    args = parser.parse_args()
    torch.set_num_threads(fastopt.get_num_threads())
    for model in (MODELS if args.model == "all" else [args.model]):
        run(model, args.rounds, args.only)


if __name__ == "__main__":
    main()
