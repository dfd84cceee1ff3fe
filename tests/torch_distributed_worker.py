"""One process of tests/test_torch_distributed.py: trains a small float64 network for a few
steps with fastopt.torch.AdamW under DistributedDataParallel (gloo), plain or inside
ZeroRedundancyOptimizer, each rank on its share of every batch, and saves its final parameters.

    python torch_distributed_worker.py MODE RANK WORLD INIT_FILE OUTPUT
MODE: ddp, zero, or single (one process, the whole batch: the reference)."""
import sys

import torch

import fastopt.torch as ft

STEPS, BATCH = 12, 24


def model_and_data():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.Tanh(),
                                torch.nn.Linear(16, 4)).double()
    generator = torch.Generator().manual_seed(1)
    x = torch.randn(STEPS, BATCH, 8, dtype=torch.float64, generator=generator)
    y = torch.randn(STEPS, BATCH, 4, dtype=torch.float64, generator=generator)
    return model, x, y


def main(mode, rank, world, init_file, output):
    model, x, y = model_and_data()
    if mode == "single":
        net, share = model, slice(None)
        opt = ft.AdamW(model.parameters(), lr=0.01, weight_decay=0.1)
    else:
        torch.distributed.init_process_group("gloo", init_method=f"file://{init_file}",
                                             rank=rank, world_size=world)
        net = torch.nn.parallel.DistributedDataParallel(model)
        per_rank = BATCH // world
        share = slice(rank * per_rank, (rank + 1) * per_rank)
        if mode == "zero":
            from torch.distributed.optim import ZeroRedundancyOptimizer
            opt = ZeroRedundancyOptimizer(net.parameters(), optimizer_class=ft.AdamW, lr=0.01,
                                          weight_decay=0.1)
        else:
            opt = ft.AdamW(net.parameters(), lr=0.01, weight_decay=0.1)
    for step in range(STEPS):
        opt.zero_grad()
        # the mean over this rank's share; DDP averages the ranks' gradients
        loss = (net(x[step, share]) - y[step, share]).square().mean()
        loss.backward()
        opt.step()
    torch.save([p.detach().clone() for p in model.parameters()], output)
    if mode != "single":
        # every rank done before any tears down: a rank that exits while gloo's threads still
        # talk to it aborts the other ("terminate called without an active exception")
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], sys.argv[5])
