"""fastopt.torch under torch.distributed (gloo, 2 processes on this machine): plain
DistributedDataParallel, and ZeroRedundancyOptimizer(optimizer_class=fastopt.torch.AdamW).

Both ranks end with identical parameters (bit for bit), and those equal a single-process run of
the same optimizer on the whole batch to a normwise relative difference of 1e-10 (float64): the
ranks' gradients are averaged by gloo's allreduce, whose rounding differs from one backward
pass over the whole batch only in the last bits."""
import os
import subprocess
import sys

import pytest

torch = pytest.importorskip("torch", reason="fastopt.torch needs the torch extra "
                                            "(pip install '.[torch]')")
if not torch.distributed.is_available():
    pytest.skip("this torch build has no torch.distributed", allow_module_level=True)

sys.path.insert(0, os.path.dirname(__file__))
WORKER = os.path.join(os.path.dirname(__file__), "torch_distributed_worker.py")
TIMEOUT = 180


def run(mode, world, tmp_path):
    """Run the worker on world ranks (or once, single); return each rank's parameters."""
    init_file = tmp_path / f"init-{mode}"
    outputs = [tmp_path / f"{mode}-{rank}.pt" for rank in range(world)]
    env = dict(os.environ, OMP_NUM_THREADS="1", GLOO_SOCKET_IFNAME="lo",
               PYTHONPATH=os.pathsep.join(filter(None, [os.path.dirname(
                   os.path.dirname(os.path.abspath(__import__("fastopt").__file__))),
                   os.environ.get("PYTHONPATH")])))
    processes = [subprocess.Popen([sys.executable, WORKER, mode, str(rank), str(world),
                                   str(init_file), str(outputs[rank])], env=env,
                                  stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
                 for rank in range(world)]
    try:
        logs = [p.communicate(timeout=TIMEOUT)[0] for p in processes]
    finally:
        for p in processes:
            p.kill()
    for p, log in zip(processes, logs):
        assert p.returncode == 0, log
    return [torch.load(path, weights_only=True) for path in outputs]


def relative_difference(a, b):
    return ((a - b).abs().max() / b.abs().max()).item()


@pytest.mark.parametrize("mode", ["ddp", "zero"])
def test_ranks_agree_and_match_one_process(mode, tmp_path):
    (expected,) = run("single", 1, tmp_path)
    ranks = run(mode, 2, tmp_path)
    for a, b in zip(*ranks):
        assert torch.equal(a, b)
    for a, b in zip(ranks[0], expected):
        assert relative_difference(a, b) <= 1e-10
    # the run moved the parameters (a test that cannot fail is no test)
    from torch_distributed_worker import model_and_data
    start = [p.detach() for p in model_and_data()[0].parameters()]
    assert all(relative_difference(a, b) > 1e-3 for a, b in zip(ranks[0], start))
