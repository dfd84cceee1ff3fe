"""Smoke tests of `fastopt bench` at tiny sizes: output structure, --json, --plot, usage errors.

They check that the command works, not how fast anything is (that is the benchmark's job).
"""
import argparse
import gc
import json
import math
import os
import pathlib
import sys
import time
import types

import numpy as np
import pytest

import fastopt
from fastopt import benchmark
from fastopt.benchmark import cli as bench_cli
from fastopt.benchmark import training
from fastopt.benchmark.cpuload import busy_process
from fastopt.cli import main

# Tiny and short: no peers (importing torch takes seconds), one round of tiny batches.
TINY = ["bench", "--optimizers", "adam,SGD", "--sizes", "1,1e3", "--dtype", "float32",
        "--workloads", "single,mlp", "--peers", "none", "--min-time", "0.001", "--repeat", "1"]


def write_targets(path, *targets):
    """A targets file of (optimizer, dtype, workload, metric, bound) tuples; returns its path."""
    keys = ("optimizer", "dtype", "workload", "metric", "bound")
    path.write_text(json.dumps({"targets": [dict(zip(keys, target)) for target in targets]}))
    return str(path)


def test_table_and_json(tmp_path, capsys):
    json_path = tmp_path / "bench.json"
    # A targets file of its own: an installed fastopt (the wheel's test run) has no bench/.
    targets = write_targets(tmp_path / "targets.json", ("Adam", "float32", 1, "numpy", 5))
    assert main(TINY + ["--json", str(json_path), "--targets", targets]) == 0
    output = capsys.readouterr().out
    assert f"fastopt {fastopt.__version__} bench" in output
    assert "NumPy" in output and "simd_available" in output
    header = next(line for line in output.splitlines() if line.startswith("optimizer"))
    assert header.split() == ["optimizer", "dtype", "case", "elements", "fastopt", "GB/s",
                              "numpy", "xnumpy", "limit", "GB/s", "%limit", "others"]
    assert "targets:" in output
    assert "Adam float32 1 >= 5x numpy" in output

    document = json.loads(json_path.read_text())
    assert set(document) == {"machine", "settings", "results", "targets"}
    assert document["machine"]["fastopt"]["version"] == fastopt.__version__
    assert document["machine"]["threads"] == fastopt.get_num_threads()
    cases = {(r["optimizer"], r["dtype"], r["label"]): r for r in document["results"]}
    assert set(cases) == {(optimizer, dtype, label) for optimizer in ("Adam", "SGD")
                          for dtype, label in (("float32", "1"), ("float32", "1e3"),
                                               ("float64", "textbook MLP"))}
    adam = cases[("Adam", "float32", "1e3")]
    assert adam["elements"] == 1000 and adam["arrays"] == 1
    assert adam["bytes_per_update"] == 7 * 4 * 1000  # reads p, g, m, v; writes p, m, v
    assert set(adam["implementations"]) == {"fastopt", "numpy", "limit"}
    for timing in adam["implementations"].values():
        assert timing["median_seconds"] > 0
        assert timing["calls_per_batch"] >= 1 and timing["per_call_seconds_by_batch"]
    assert adam["speedup_over"]["numpy"] == pytest.approx(
        adam["implementations"]["numpy"]["median_seconds"]
        / adam["implementations"]["fastopt"]["median_seconds"])
    mlp = cases[("SGD", "float64", "textbook MLP")]
    assert mlp["arrays"] == 6 and mlp["elements"] == 784 * 40 + 40 + 40 * 20 + 20 + 20 * 10 + 10
    assert mlp["bytes_per_update"] == 3 * 8 * mlp["elements"]
    assert 0 <= adam["others_cpu_share"] <= 1  # other processes' share of the CPU
    assert {"description", "ratio", "met"} <= set(document["targets"][0])


def test_targets_file_is_checked_and_named(tmp_path, capsys):
    targets = write_targets(tmp_path / "mine.json", ("SGD", "float32", 1000, "numpy", 1.5))
    json_path = tmp_path / "bench.json"
    assert main(TINY + ["--targets", targets, "--json", str(json_path)]) == 0
    output = capsys.readouterr().out
    assert f" of 1 met (targets from {targets})" in output
    assert "SGD float32 1e3 >= 1.5x numpy: " in output
    assert "Adam float32 1 >= 5x numpy" not in output  # only the file's targets
    document = json.loads(json_path.read_text())
    assert document["settings"]["targets_file"] == targets
    assert [target["description"] for target in document["targets"]] == [
        "SGD float32 1e3 >= 1.5x numpy"]


def test_default_targets_are_the_source_checkouts(tmp_path, monkeypatch, capsys):
    # From a source checkout, bench/targets.json beside the package's folder, if it exists.
    checkout = benchmark.targets.DEFAULT_TARGETS_FILE
    assert checkout.parent.parent == pathlib.Path(fastopt.__file__).resolve().parent.parent
    monkeypatch.setattr(benchmark.targets, "DEFAULT_TARGETS_FILE", pathlib.Path(
        write_targets(tmp_path / "targets.json", ("Adam", "float32", 1000, "limit", 1.1))))
    assert main(TINY) == 0
    assert "Adam float32 1e3 within 1.10x of the traffic-limit time: " in capsys.readouterr().out
    # An installed fastopt has no bench/ beside it: no targets section, none in the JSON.
    monkeypatch.setattr(benchmark.targets, "DEFAULT_TARGETS_FILE", tmp_path / "absent.json")
    json_path = tmp_path / "bench.json"
    assert main(TINY + ["--json", str(json_path)]) == 0
    assert "targets:" not in capsys.readouterr().out
    document = json.loads(json_path.read_text())
    assert document["targets"] == [] and document["settings"]["targets_file"] is None


def test_the_projects_targets_file(run_python):
    path = benchmark.targets.DEFAULT_TARGETS_FILE
    if not path.is_file():
        pytest.skip("not a source checkout: no bench/targets.json beside the package")
    targets = benchmark.load_targets(path)
    assert benchmark.Target("Adam", "float32", "1", "numpy", 5) in targets
    assert benchmark.Target("Adam", "float64", "loop-mlp", "step-share", 5) in targets
    assert {(target.workload, target.bound) for target in targets
            if target.metric == "loop-threads"} == {
        ("loop-mlp", 1.02), ("loop-wide", 1.02), ("loop-arrays", 1.02)}
    # Every target names an optimizer `fastopt bench --optimizers` takes, spelled as it runs it.
    names = set(fastopt.optimizers.OPTIMIZERS) | set(benchmark.family_names())
    assert {target.optimizer for target in targets} <= names | {"optim.AdamW+clip"}
    # The targets for fastopt.optim: every class at the limit at 1e7, both dtypes, and
    # AdamW against torch, with and without clipping.
    assert {(target.optimizer, target.dtype) for target in targets
            if target.metric == "limit" and target.workload == "10000000"} >= {
        (name, dtype) for name in benchmark.family_names() for dtype in ("float32", "float64")}
    assert benchmark.Target("optim.AdamW", "float32", "many-small", "torch", 3) in targets
    assert benchmark.Target("optim.AdamW+clip", "float32", "10000000", "noclip", 1.25) in targets
    assert benchmark.Target("optim.AdamW+clip", "float32", "10000000", "torch", 1.3) in targets
    completed = run_python("-m", "fastopt", "bench", "--help")  # run from another folder
    assert str(path) in " ".join(completed.stdout.split())


@pytest.mark.parametrize("content, message", [
    ("{", "not JSON"),
    ('{"targets": {}}', 'expected {"targets": [...]}'),
    ('{"targets": [{"optimizer": "Adam"}]}', "targets[0]: expected an object with the keys"),
    ('{"targets": [{"optimizer": "Adam", "dtype": "float16", "workload": 1, "metric": "numpy", '
     '"bound": 5}]}', "targets[0]: dtype must be one of float32, float64, got 'float16'"),
    ('{"targets": [{"optimizer": "Adam", "dtype": "float32", "workload": "cnn", '
     '"metric": "numpy", "bound": 5}]}', "workload must be an element count >= 1 or one of"),
    ('{"targets": [{"optimizer": "Adam", "dtype": "float32", "workload": 1, "metric": "jax", '
     '"bound": 5}]}', "metric must be one of numpy, limit, torch, deepspeed, noclip, "
     "loop-threads, step-share, got 'jax'"),
    ('{"targets": [{"optimizer": "Adam", "dtype": "float32", "workload": 1, "metric": "numpy", '
     '"bound": "5"}]}', "bound must be a number > 0, got '5'"),
])
def test_bad_targets_file_exits_2_before_measuring(tmp_path, capsys, content, message):
    path = tmp_path / "targets.json"
    path.write_text(content)
    assert main(TINY + ["--targets", str(path)]) == 2
    captured = capsys.readouterr()
    assert captured.err.startswith(f"fastopt bench: error: cannot read the targets: {path}: ")
    assert message in captured.err and captured.out == ""


def test_plot_writes_png(tmp_path):
    pytest.importorskip("matplotlib")
    plot_path = tmp_path / "bench.png"
    assert main(TINY + ["--plot", str(plot_path)]) == 0
    assert plot_path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_unknown_optimizer_exits_2_with_message(run_python):
    completed = run_python("-m", "fastopt", "bench", "--optimizers", "adam,Adamax")
    assert completed.returncode == 2
    assert "unknown optimizer 'Adamax'" in completed.stderr
    assert "SGD, Momentum, Nesterov, AdaGrad, RMSprop, Adam" in completed.stderr
    assert completed.stdout == ""


@pytest.mark.parametrize("arguments, message", [
    (["--sizes", "1e3,0"], "'0' is not a whole number of elements >= 1"),
    (["--sizes", "1.5"], "'1.5' is not a whole number of elements >= 1"),
    (["--workloads", "single,cnn"], "unknown workload 'cnn'"),
    (["--peers", "jax"], "unknown peer 'jax'"),
    (["--dtype", "float16"], "invalid choice: 'float16'"),
    (["--threads", "0"], "expected a number > 0, got '0'"),
    (["--retries", "-1"], "expected a number >= 0, got '-1'"),
])
def test_bad_option_exits_2(arguments, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["bench", *arguments])
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_unavailable_simd_path_exits_2(capsys):
    assert main(TINY + ["--simd", "sse9"]) == 2
    assert capsys.readouterr().err.startswith("fastopt bench: error: ")


def test_bytes_moved_counts_every_array_read_and_written():
    # SGD reads p, g and writes p; one state array adds a read and a write; Adam has two.
    expected = {"SGD": 3, "Momentum": 5, "Nesterov": 5, "AdaGrad": 5, "RMSprop": 5, "Adam": 7}
    workload = benchmark.single_array(10, "float64")
    for optimizer, arrays in expected.items():
        assert workload.bytes_moved(optimizer) == arrays * 8 * 10


def fake_module(name, **attributes):
    module = types.ModuleType(name)
    module.__dict__.update(attributes)
    return module


def fake_torch():
    """Just enough of torch for load_peers to reach DeepSpeed."""
    return fake_module("torch", __version__="0.0", set_num_threads=lambda threads: None,
                       zeros=lambda size: None, ones=lambda size: None,
                       nn=types.SimpleNamespace(Parameter=lambda data: types.SimpleNamespace()))


class Probe(fastopt.optimizers.Adam):
    """A test optimizer: Adam's kernel and two state arrays under a name no table knows."""


class ThreeStates(fastopt.optimizers.Optimizer):
    """A test optimizer with more state arrays than any traffic-limit kernel has (never run)."""

    _state_names = ("a", "b", "c")


def test_optimizers_and_state_arrays_come_from_the_registry(monkeypatch):
    monkeypatch.setitem(fastopt.optimizers.OPTIMIZERS, "Probe", Probe)
    monkeypatch.setitem(fastopt.optimizers.OPTIMIZERS, "ThreeStates", ThreeStates)
    registered = ("SGD", "Momentum", "Nesterov", "AdaGrad", "RMSprop", "Adam", "Probe",
                  "ThreeStates")
    assert benchmark.optimizer_names() == registered
    parser = argparse.ArgumentParser()
    bench_cli.add_arguments(parser)
    # The default: none named, so run() takes every optimizer registered then (Adam alone for
    # --training-loop).
    assert parser.parse_args([]).optimizers is None
    assert parser.parse_args(["--optimizer", "probe"]).optimizers == ("Probe",)
    assert parser.parse_args(["--optimizers", "all"]).optimizers == registered
    assert parser.parse_args(["--optimizers", "probe"]).optimizers == ("Probe",)

    cases = benchmark.plan_cases(registered, ("float32",), (10,), ("single",))
    assert [case.optimizer for case in cases] == list(registered)
    workload = benchmark.single_array(10, "float32")
    assert benchmark.state_arrays("Probe") == 2 and benchmark.state_arrays("ThreeStates") == 3
    assert workload.bytes_moved("Probe") == 7 * 4 * 10
    assert workload.bytes_moved("ThreeStates") == 9 * 4 * 10  # 3 + 2 * 3 arrays

    # A registered optimizer is measured: fastopt runs its class, the limit has its states.
    assert isinstance(benchmark.FASTOPT.make("Probe"), Probe)
    assert benchmark.LIMIT.make("Probe")._kernel == "traffic2"
    result = benchmark.run_case(cases[-2], [benchmark.FASTOPT, benchmark.LIMIT], min_time=0.001,
                                repeat=1)
    assert result.case.optimizer == "Probe" and set(result.timings) == {"fastopt", "limit"}
    # Where no traffic kernel or torch counterpart exists, that implementation sits the case out.
    with pytest.raises(benchmark.Unsupported, match="no traffic-limit kernel for ThreeStates"):
        benchmark.LIMIT.make("ThreeStates")
    torch_peer = benchmark.implementations.TorchImplementation(fake_torch())
    with pytest.raises(benchmark.Unsupported, match="no torch.optim counterpart of Probe"):
        torch_peer.prepare("Probe", {}, {})


def test_missing_peers_are_named_with_the_install_command(monkeypatch):
    monkeypatch.setitem(sys.modules, "torch", None)  # import torch raises ImportError
    peers, notes = benchmark.load_peers(("torch", "deepspeed"), threads=1, need_deepspeed=True)
    assert peers == []
    assert notes == ["torch: not installed (pip install torch)",
                     "deepspeed: not run (it needs torch: pip install torch deepspeed)"]


def test_deepspeed_not_installed(monkeypatch):
    monkeypatch.setitem(sys.modules, "torch", fake_torch())
    monkeypatch.setitem(sys.modules, "deepspeed", None)
    peers, notes = benchmark.load_peers(("deepspeed",), threads=1, need_deepspeed=True)
    assert peers == [] and notes == ["deepspeed: not installed (pip install deepspeed)"]


def test_deepspeed_build_failure_is_reported_not_raised(monkeypatch):
    def failing_build(*arguments, **keywords):
        print("ninja: build stopped: subcommand failed.")
        raise RuntimeError("Error building extension 'cpu_adam'")

    adam = fake_module("deepspeed.ops.adam", DeepSpeedCPUAdam=failing_build)
    monkeypatch.setitem(sys.modules, "torch", fake_torch())
    monkeypatch.setitem(sys.modules, "deepspeed", fake_module("deepspeed", __version__="9.9"))
    monkeypatch.setitem(sys.modules, "deepspeed.ops", fake_module("deepspeed.ops", adam=adam))
    monkeypatch.setitem(sys.modules, "deepspeed.ops.adam", adam)
    peers, notes = benchmark.load_peers(("deepspeed",), threads=1, need_deepspeed=True)
    assert peers == []
    assert notes == ["deepspeed 9.9: its CPU Adam op failed to build or load: RuntimeError: "
                     "Error building extension 'cpu_adam' (build output ends: ninja: build "
                     "stopped: subcommand failed.)"]


def test_help_lists_every_option(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["bench", "--help"])
    assert exit_info.value.code == 0
    help_text = capsys.readouterr().out
    for option in ("--optimizers", "--dtype", "--sizes", "--workloads", "--peers", "--threads",
                   "--simd", "--repeat", "--min-time", "--retries", "--quick", "--targets",
                   "--json", "--plot", "--training-loop", "--optimizer", "--load",
                   "--blas-threads"):
        assert option in help_text


@pytest.mark.parametrize("n_states", [0, 1, 2])
def test_traffic_limit_moves_the_bytes_of_n_states(n_states):
    # The ceiling's kernel: p += g and s += g for each state, through Optimizer.update().
    limit = benchmark.TrafficLimit(n_states)
    params = {"x": np.arange(5, dtype=np.float32)}
    grads = {"x": np.full(5, 0.5, dtype=np.float32)}
    limit.update(params, grads)
    limit.update(params, grads)
    np.testing.assert_array_equal(params["x"], np.arange(5, dtype=np.float32) + 1)
    state = limit.state_dict()["state"] or {}  # None without state arrays
    assert list(state) == ["s0", "s1"][:n_states]
    for arrays in state.values():
        np.testing.assert_array_equal(arrays["x"], np.ones(5, dtype=np.float32))
    with pytest.raises(ValueError, match="n_states must be 0, 1 or 2"):
        benchmark.TrafficLimit(3)


def test_busy_machine_warnings():
    # One test of a busy machine for `fastopt bench` and `fastopt compare`: the load average
    # before, other processes' CPU share during the measurement.
    assert benchmark.timing.load_warning(0.99, 2) is None
    assert benchmark.timing.load_warning(1.0, 2).startswith(
        "warning: load average 1.0 on 2 cores before the run: other processes compete")
    assert benchmark.timing.others_warning(None, "x") is None
    assert benchmark.timing.others_warning(0.049, "x") is None
    assert benchmark.timing.others_warning(0.25, "numbers unreliable") == (
        "warning: other processes took 25% of this machine's CPU time during the run; "
        "numbers unreliable")


# ---- fastopt bench --training-loop ----------------------------------------------------------

# The training loops at tiny sizes, under their own kinds and labels (so targets and output
# name them as usual): a few milliseconds per workload.
TINY_LOOPS = {
    "loop-mlp": training.LoopWorkload("loop-mlp", "textbook MLP", np.dtype(np.float64),
                                      layer_sizes=(20, 8, 4), batch_size=10),
    "loop-wide": training.LoopWorkload("loop-wide", "wide MLP", np.dtype(np.float32),
                                       layer_sizes=(20, 16, 16, 4), batch_size=12),
    "loop-arrays": training.LoopWorkload(
        "loop-arrays", "200 x 4096", np.dtype(np.float32), matmul_size=16,
        arrays=benchmark.Workload("many-small", "3 x 64", ((64,),) * 3, np.dtype(np.float32))),
}
TINY_LOOP_RUN = ["bench", "--training-loop", "--min-time", "0.001", "--repeat", "2"]
LOOP_TARGETS = (("Adam", "float64", "loop-mlp", "loop-threads", 1.02),
                ("Adam", "float64", "loop-mlp", "step-share", 5),
                ("Adam", "float32", "loop-arrays", "loop-threads", 1.02))


@pytest.fixture
def tiny_loops(monkeypatch):
    for kind, workload in TINY_LOOPS.items():
        monkeypatch.setitem(training.LOOP_WORKLOADS, kind, workload)


@pytest.fixture
def threads():
    """fastopt's thread count for the test: 3 with threads (not the 1 of the 1-thread mode),
    restored afterwards."""
    before = fastopt.get_num_threads()
    count = 3 if fastopt.build_info()["threads_enabled"] else 1
    fastopt.set_num_threads(count)
    yield count
    fastopt.set_num_threads(before)


def test_training_loop_runs_every_workload_and_mode(tiny_loops, threads, tmp_path, capsys):
    json_path = tmp_path / "loop.json"
    targets = write_targets(tmp_path / "targets.json", *LOOP_TARGETS)
    assert main(TINY_LOOP_RUN + ["--json", str(json_path), "--targets", targets]) == 0
    assert fastopt.get_num_threads() == threads  # the 1-thread mode restored it
    output = capsys.readouterr().out
    assert "training loop: Adam with the textbook's hyperparameters" in output
    assert "blas: " in output
    mode_labels = [f"fastopt, {threads} thread{'s' if threads > 1 else ''}",
                   "fastopt, 1 thread", "numpy"]
    table = output[output.index("loop mean"):]
    for label in ("textbook MLP (float64)", "wide MLP (float32)", "200 x 4096 (float32)"):
        rows = [line for line in table.splitlines() if line.startswith(label)]
        assert len(rows) == 3 and all(mode in row for mode, row in zip(mode_labels, rows))
    for description in ("20-8-4, batch 10", "20-16-16-4, batch 12",
                        "3 x 64 arrays, 16x16 matmul"):
        assert description in output
    assert " of 3 met (targets from " in output
    assert (f"Adam float64 textbook MLP loop: time at {threads} threads / at 1 thread, by "
            f"round, <= 1.02: " in output)
    assert ("Adam float64 textbook MLP loop: numpy step share / fastopt step share, by round, "
            ">= 5x: " in output)

    document = json.loads(json_path.read_text())
    assert document["settings"]["training_loop"] is True
    assert document["settings"]["optimizers"] == ["Adam"]
    assert document["settings"]["modes"] == ["fastopt", "fastopt-1t", "numpy"]
    loops = document["training_loop"]
    assert [loop["workload"] for loop in loops] == ["loop-mlp", "loop-wide", "loop-arrays"]
    for loop in loops:
        assert loop["identical_parameters"] is True  # same batches, same steps, same bits
        assert loop["threads"] == threads and loop["rounds"] >= 2
        assert set(loop["modes"]) == {"fastopt", "fastopt-1t", "numpy"}
        for mode in loop["modes"].values():
            assert mode["iterations"] == loop["rounds"] * loop["iterations_per_round"]
            for key in ("loop_mean_seconds", "loop_median_seconds", "step_mean_seconds",
                        "step_median_seconds"):
                assert math.isfinite(mode[key]) and mode[key] > 0
            assert 0 < mode["step_share"] < 1
            assert mode["step_mean_seconds"] < mode["loop_mean_seconds"]
        for key in ("default_over_1_thread_loop_time", "default_over_1_thread_by_round_median",
                    "numpy_share_over_fastopt_share",
                    "numpy_share_over_fastopt_share_by_round_median",
                    "numpy_step_over_fastopt_step"):
            assert math.isfinite(loop[key]) and loop[key] > 0
        by_round = {name: mode["loop_mean_seconds_by_round"]
                    for name, mode in loop["modes"].items()}
        assert loop["default_over_1_thread_by_round_median"] == pytest.approx(float(np.median(
            np.divide(by_round["fastopt"], by_round["fastopt-1t"]))))
        shares = {name: mode["step_share_by_round"] for name, mode in loop["modes"].items()}
        assert len(shares["numpy"]) == loop["rounds"]
        assert loop["numpy_share_over_fastopt_share_by_round_median"] == pytest.approx(float(
            np.median(np.divide(shares["numpy"], shares["fastopt"]))))
        assert loop["default_over_1_thread_loop_time"] == pytest.approx(
            loop["modes"]["fastopt"]["loop_mean_seconds"]
            / loop["modes"]["fastopt-1t"]["loop_mean_seconds"])
        assert loop["numpy_share_over_fastopt_share"] == pytest.approx(
            loop["modes"]["numpy"]["step_share"] / loop["modes"]["fastopt"]["step_share"])
    assert [target["description"].split(":")[0] for target in document["targets"]] == [
        "Adam float64 textbook MLP loop", "Adam float64 textbook MLP loop",
        "Adam float32 200 x 4096 loop"]
    assert all(math.isfinite(target["ratio"]) for target in document["targets"])
    # The targets take the by-round ratios.
    assert [target["ratio"] for target in document["targets"]] == [
        loops[0]["default_over_1_thread_by_round_median"],
        loops[0]["numpy_share_over_fastopt_share_by_round_median"],
        loops[2]["default_over_1_thread_by_round_median"]]


def test_training_loop_takes_the_optimizer_option(tiny_loops, threads, tmp_path, capsys):
    targets = write_targets(tmp_path / "targets.json", *LOOP_TARGETS)  # Adam's: not run
    assert main(TINY_LOOP_RUN + ["--optimizer", "sgd", "--targets", targets]) == 0
    output = capsys.readouterr().out
    assert "training loop: SGD with the textbook's hyperparameters" in output
    assert "targets: none of the targets' cases was run" in output


class Recording(training.LoopWorkload):
    """A tiny loop that records fastopt's thread count at every iteration of each of its loops
    (one loop per mode, made in mode order); if asked, loop `fail_loop` raises KeyboardInterrupt
    (as Ctrl-C would) at its first iteration of the warm-up or of the timed rounds (where the
    garbage collector is off)."""

    def __init__(self, fail_loop=None, fail_in=None):
        super().__init__("loop-mlp", "recording", np.dtype(np.float64), layer_sizes=(6, 5, 3),
                         batch_size=4)
        object.__setattr__(self, "seen", [])
        object.__setattr__(self, "failure", (fail_loop, fail_in))

    def make_loop(self, data, seed=training.SEED):
        params, compute = super().make_loop(data, seed)
        seen = []
        self.seen.append(seen)
        loop = len(self.seen) - 1
        fail_loop, fail_in = self.failure

        def recording_compute():
            seen.append(fastopt.get_num_threads())
            phase = "timed" if not gc.isenabled() else "warm-up"
            if loop == fail_loop and phase == fail_in:
                raise KeyboardInterrupt
            return compute()

        return params, recording_compute


def test_one_thread_mode_runs_on_one_thread_and_restores_the_count(threads):
    workload = Recording()
    result = training.measure_loop(workload, "Adam", min_time=0.001, repeat=3)
    assert fastopt.get_num_threads() == threads
    default, single, numpy_mode = workload.seen
    assert set(default) == {threads} and set(single) == {1} and set(numpy_mode) == {threads}
    assert len(default) == len(single) == len(numpy_mode)
    assert result.mode_label("fastopt-1t") == "fastopt, 1 thread"
    assert result.threads == threads and result.identical


@pytest.mark.parametrize("phase", ["warm-up", "timed"])
def test_thread_count_is_restored_when_the_loop_fails(threads, phase):
    workload = Recording(fail_loop=1, fail_in=phase)  # the 1-thread mode's loop
    with pytest.raises(KeyboardInterrupt):
        training.measure_loop(workload, "Adam", min_time=0.001, repeat=3)
    assert workload.seen[1][-1] == 1  # it failed on one thread
    assert fastopt.get_num_threads() == threads
    assert gc.isenabled()


def process_is_gone(pid):
    """No such process, or one that ended and waits for its parent to reap it (a zombie)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


def cpu_seconds(pid):
    """User + system CPU time of a process, from /proc (Linux)."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@pytest.mark.skipif(not hasattr(os, "kill") or sys.platform == "win32", reason="POSIX signals")
@pytest.mark.parametrize("run", [TINY_LOOP_RUN, TINY], ids=["training-loop", "update-table"])
def test_load_process_runs_during_the_measurement_and_is_gone_afterwards(tiny_loops, threads,
                                                                         tmp_path, capsys, run):
    json_path = tmp_path / "loop.json"
    assert main(run + ["--load", "--json", str(json_path)]) == 0
    output = capsys.readouterr().out
    line = next(line for line in output.splitlines() if line.startswith("--load: "))
    pid = int(line.split("(pid ")[1].split(")")[0])
    assert process_is_gone(pid)
    assert "other processes, the --load process among them, took " in output
    assert json.loads(json_path.read_text())["settings"]["load"] is True


@pytest.mark.skipif(not os.path.exists("/proc/self/stat"), reason="reads /proc (Linux)")
@pytest.mark.parametrize("error", [RuntimeError, KeyboardInterrupt])
def test_busy_process_spins_and_stops_on_errors_and_ctrl_c(error):
    with pytest.raises(error):
        with busy_process() as process:
            pid = process.pid
            assert process.poll() is None
            began = cpu_seconds(pid)
            time.sleep(0.5)
            assert cpu_seconds(pid) - began > 0.02  # it spins (a core, less on a busy machine)
            raise error("stop")
    assert process.returncode is not None and process_is_gone(pid)


@pytest.mark.skipif(not os.path.exists("/proc/self/stat"), reason="reads /proc (Linux)")
def test_busy_process_ends_by_itself_when_its_parent_dies(run_python):
    # A parent killed without cleanup (os._exit here, SIGKILL alike): the spinning process sees
    # its parent change and exits.
    code = ("import os, sys\n"
            "from fastopt.benchmark.cpuload import busy_process\n"
            "with busy_process() as process:\n"
            "    print(process.pid, flush=True)\n"
            "    os._exit(0)\n")
    completed = run_python("-c", code, check=True)
    pid = int(completed.stdout)
    deadline = time.monotonic() + 10
    while not process_is_gone(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert process_is_gone(pid)


def test_training_loop_options_and_targets_rules(capsys, tmp_path):
    assert main(["bench", "--training-loop", "--plot", str(tmp_path / "x.png")]) == 2
    assert "--plot draws the table of single update() calls" in capsys.readouterr().err
    path = write_targets(tmp_path / "bad.json", ("Adam", "float64", "mlp", "step-share", 5))
    assert main(TINY_LOOP_RUN + ["--targets", path]) == 2
    assert "targets[0]: the metric of a training loop (loop-mlp, loop-wide, loop-arrays) is " \
           "one of loop-threads, step-share, and only theirs is; got 'step-share' for 'mlp'" \
        in capsys.readouterr().err
    path = write_targets(tmp_path / "bad.json", ("Adam", "float64", "loop-mlp", "numpy", 5))
    assert main(TINY_LOOP_RUN + ["--targets", path]) == 2
    assert "got 'numpy' for 'loop-mlp'" in capsys.readouterr().err


def test_blas_threads_option(tiny_loops, threads, tmp_path, capsys):
    pytest.importorskip("threadpoolctl")
    from threadpoolctl import threadpool_info

    before = [pool["num_threads"] for pool in threadpool_info() if pool["user_api"] == "blas"]
    if not before:
        pytest.skip("NumPy's BLAS is not one threadpoolctl knows")
    targets = write_targets(tmp_path / "none.json")
    assert main(TINY_LOOP_RUN + ["--blas-threads", "1", "--targets", targets]) == 0
    output = capsys.readouterr().out
    header = next(line for line in output.splitlines() if line.startswith("blas: "))
    assert header.endswith(", 1 thread")
    after = [pool["num_threads"] for pool in threadpool_info() if pool["user_api"] == "blas"]
    assert after == before  # given back


# ---- fastopt.optim's classes: --optimizers optim.AdamW, optim, optim.AdamW+clip -------------

FAMILY = ("optim.SGD", "optim.Adam", "optim.AdamW", "optim.Adagrad", "optim.RMSprop",
          "optim.Adadelta", "optim.Adamax", "optim.NAdam", "optim.RAdam", "optim.Lion")
TINY_FAMILY = ["bench", "--sizes", "1e3", "--dtype", "float32", "--peers", "none",
               "--min-time", "0.001", "--repeat", "1"]


def parse_optimizers(*arguments):
    parser = argparse.ArgumentParser()
    bench_cli.add_arguments(parser)
    return parser.parse_args(["--optimizers", *arguments]).optimizers


def test_family_names_parse_case_insensitively():
    assert benchmark.family_names() == FAMILY
    assert parse_optimizers("optim.AdamW,optim.sgd") == ("optim.AdamW", "optim.SGD")
    assert parse_optimizers("OPTIM.ADAMW") == ("optim.AdamW",)
    assert parse_optimizers("optim") == FAMILY
    assert parse_optimizers("optim.all") == FAMILY
    assert parse_optimizers("Optim.All,adam") == FAMILY + ("Adam",)
    assert parse_optimizers("optim.adamw+CLIP,optim.AdamW") == ("optim.AdamW+clip", "optim.AdamW")
    assert parse_optimizers("sgd,optim.sgd,all") == (
        "SGD", "optim.SGD", "Momentum", "Nesterov", "AdaGrad", "RMSprop", "Adam")
    # The textbook's names and the default list are unchanged.
    assert parse_optimizers("all") == benchmark.optimizer_names()
    assert benchmark.parse_optimizer("optim.AdamW+clip") == benchmark.workloads.OptimizerName(
        "AdamW", family=True, clip=True)
    assert benchmark.parse_optimizer("Adam") == benchmark.workloads.OptimizerName("Adam")


@pytest.mark.parametrize("name, hint", [
    ("adamw", "; did you mean optim.AdamW?"),
    ("optim.adamx", ""),
    ("Adam+clip", "; did you mean optim.Adam+clip?"),
    ("momentum+clip", "; +clip is for fastopt.optim's classes only"),
    ("optim+clip", "; +clip is for fastopt.optim's classes only"),
])
def test_unknown_optimizer_lists_the_family(name, hint, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["bench", "--optimizers", name])
    assert exit_info.value.code == 2
    error = " ".join(capsys.readouterr().err.split())
    assert (f"unknown optimizer {name!r} (choose from SGD, Momentum, Nesterov, AdaGrad, "
            f"RMSprop, Adam, or all; fastopt.optim's: {', '.join(FAMILY)}, or optim (all of "
            f"them); optim.NAME+clip for its clipping variant){hint}") in error


def test_help_documents_the_family_and_the_clipping_variant(capsys):
    with pytest.raises(SystemExit):
        main(["bench", "--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    assert ", ".join(FAMILY) in help_text
    assert "optim.NAME+clip, e.g. optim.AdamW+clip" in help_text
    assert "max_grad_norm=1" in help_text and "clip_grad_norm_" in help_text


def test_family_state_arrays_and_bytes():
    expected = {"optim.SGD": 0, "optim.Adam": 2, "optim.AdamW": 2, "optim.Adagrad": 1,
                "optim.RMSprop": 1, "optim.Adadelta": 2, "optim.Adamax": 2, "optim.NAdam": 2,
                "optim.RAdam": 2, "optim.Lion": 1}
    workload = benchmark.single_array(10, "float32")
    for name, states in expected.items():
        assert benchmark.state_arrays(name) == states
        assert workload.bytes_moved(name) == (3 + 2 * states) * 4 * 10
        assert benchmark.LIMIT.make(name)._kernel == f"traffic{states}"
    # The clipping variant reads the gradients once more, for the norm.
    assert benchmark.state_arrays("optim.AdamW+clip") == 2
    assert workload.bytes_moved("optim.AdamW+clip") == 8 * 4 * 10
    with pytest.raises(benchmark.Unsupported, match="no traffic-limit kernel for "
                       "optim.AdamW\\+clip: its norm pass reads the gradients once more"):
        benchmark.LIMIT.make("optim.AdamW+clip")


def test_family_implementations_run_the_family_and_its_twins():
    assert type(benchmark.FASTOPT.make("optim.AdamW")) is fastopt.optim.AdamW
    assert type(benchmark.NUMPY.make("optim.AdamW")) is fastopt.reference.optim.AdamW
    assert type(benchmark.FASTOPT.make("optim.Lion")) is fastopt.optim.Lion
    params, grads = benchmark.single_array(3000, "float32").make_arrays()
    clipped = benchmark.implementations.case_gradients("optim.AdamW+clip", grads)
    total = math.sqrt(sum(float(np.sum(g.astype(np.float64) ** 2)) for g in clipped.values()))
    assert total == pytest.approx(10.0, rel=1e-5)  # above max_grad_norm=1: clipping bites
    assert benchmark.implementations.case_gradients("optim.AdamW", grads) is grads
    # fastopt and the twin do the same clipped steps, bit for bit; noclip differs from both.
    runs = {}
    for implementation in (benchmark.FASTOPT, benchmark.NUMPY, benchmark.NOCLIP):
        step = implementation.prepare("optim.AdamW+clip", params, grads)
        for _ in range(2):
            step()
        runs[implementation.name] = step.args[0]["x0"]
    expected = {key: value.copy() for key, value in params.items()}
    reference = fastopt.optim.AdamW()
    for _ in range(2):
        reference.update(expected, clipped, max_grad_norm=1.0)
    np.testing.assert_array_equal(runs["fastopt"], expected["x0"])
    np.testing.assert_array_equal(runs["numpy"], expected["x0"])
    assert not np.array_equal(runs["noclip"], expected["x0"])
    assert np.array_equal(params["x0"], benchmark.single_array(3000, "float32")
                          .make_arrays()[0]["x0"])  # the case's arrays are never changed
    with pytest.raises(benchmark.NotApplicable):
        benchmark.NOCLIP.prepare("optim.AdamW", params, grads)


def test_quick_run_of_a_family_optimizer(tmp_path, capsys):
    json_path = tmp_path / "bench.json"
    targets = write_targets(tmp_path / "targets.json",
                            ("optim.AdamW", "float32", 1000, "limit", 1.1),
                            ("optim.AdamW", "float32", "many-small", "numpy", 1.5))
    assert main(["bench", "--quick", "--optimizers", "optim.adamw", "--sizes", "1e3",
                 "--dtype", "float32", "--workloads", "single,many-small", "--peers", "none",
                 "--min-time", "0.001", "--repeat", "1", "--targets", targets,
                 "--json", str(json_path)]) == 0
    output = capsys.readouterr().out
    rows = [line.split() for line in output.splitlines() if line.startswith("optim.AdamW ")]
    assert [row[:3] for row in rows] == [["optim.AdamW", "float32", "1e3"],
                                        ["optim.AdamW", "float32", "200"]]
    assert "noclip" not in output and "not measured:" not in output
    assert "optim.AdamW float32 1e3 within 1.10x of the traffic-limit time: " in output
    assert "optim.AdamW float32 200 x 4096 >= 1.5x numpy: " in output
    document = json.loads(json_path.read_text())
    assert document["settings"]["optimizers"] == ["optim.AdamW"]
    for result in document["results"]:
        assert result["optimizer"] == "optim.AdamW"
        assert set(result["implementations"]) == {"fastopt", "numpy", "limit"}
        assert result["unsupported"] == {}
        assert result["bytes_per_update"] == 7 * 4 * result["elements"]
        assert result["fastopt_over_limit_time"] > 0
    assert [target["met"] is not None for target in document["targets"]] == [True, True]


def test_clipping_variant_gives_a_row(tmp_path, capsys):
    json_path = tmp_path / "bench.json"
    targets = write_targets(tmp_path / "targets.json",
                            ("optim.AdamW+clip", "float32", 1000, "noclip", 1.25),
                            ("optim.AdamW+clip", "float32", 1000, "limit", 1.1))
    assert main(TINY_FAMILY + ["--optimizers", "optim.AdamW+clip,optim.SGD", "--workloads",
                               "single", "--targets", targets, "--json", str(json_path)]) == 0
    output = capsys.readouterr().out
    header = next(line for line in output.splitlines() if line.startswith("optimizer"))
    assert header.split()[-3:] == ["noclip", "clip/no", "others"]
    row = next(line for line in output.splitlines() if line.startswith("optim.AdamW+clip "))
    assert row.split()[1:3] == ["float32", "1e3"]
    assert "clip/no = fastopt's time / noclip's" in " ".join(output.split())
    assert ("not measured: limit for optim.AdamW+clip: no traffic-limit kernel for "
            "optim.AdamW+clip") in output
    assert "optim.AdamW+clip float32 1e3 within 1.25x of the time without clipping: " in output
    document = json.loads(json_path.read_text())
    clip, sgd = document["results"]
    assert set(clip["implementations"]) == {"fastopt", "numpy", "noclip"}
    assert set(clip["unsupported"]) == {"limit"}
    assert clip["bytes_per_update"] == 8 * 4 * 1000
    assert clip["fastopt_over_noclip_time"] == pytest.approx(
        clip["implementations"]["fastopt"]["median_seconds"]
        / clip["implementations"]["noclip"]["median_seconds"])
    # noclip's GB/s counts the bytes of the step without the norm pass
    noclip = clip["implementations"]["noclip"]
    assert noclip["gigabytes_per_second"] == pytest.approx(
        7 * 4 * 1000 / noclip["median_seconds"] / 1e9)
    # noclip has nothing to do outside the clipping variants, and says nothing there.
    assert set(sgd["implementations"]) == {"fastopt", "numpy", "limit"}
    assert sgd["unsupported"] == {} and "fastopt_over_noclip_time" not in sgd
    assert [(target["ratio"], target["met"]) for target in document["targets"]] == [
        (clip["fastopt_over_noclip_time"], clip["fastopt_over_noclip_time"] <= 1.25),
        (None, None)]  # no limit in a clipping variant's case: not measured
    # The noclip metric: clipping variants only, like any other metric of one update().
    assert benchmark.targets.UPDATE_METRICS["noclip"] == "<="


def test_lion_has_no_torch_counterpart():
    torch_peer = benchmark.implementations.TorchImplementation(fake_torch())
    with pytest.raises(benchmark.Unsupported) as error:
        torch_peer.prepare("optim.Lion", {}, {})
    assert str(error.value) == ("no torch.optim counterpart of optim.Lion: torch.optim has no "
                                "Lion (fastopt.optim.Lion follows optax.lion)")
    with pytest.raises(benchmark.Unsupported, match="torch.optim has no Lion"):
        torch_peer.prepare("optim.Lion+clip", {}, {})


def test_torch_counterparts_take_fastopts_default_arguments():
    torch = pytest.importorskip("torch")
    for name in FAMILY[:-1]:
        class_name, arguments = benchmark.implementations.torch_counterpart(name)
        assert class_name == name.removeprefix("optim.")
        assert arguments == fastopt.optim.OPTIMIZERS[class_name]()._hyperparameters
        torch_class = getattr(torch.optim, class_name)
        parameter = torch.nn.Parameter(torch.zeros(4))
        instance = torch_class([parameter], **arguments)  # torch takes every one of them
        for key, value in arguments.items():
            assert instance.defaults[key] == value


def test_torch_runs_the_family_and_the_clipping_variant(tmp_path, capsys):
    pytest.importorskip("torch")
    json_path = tmp_path / "bench.json"
    assert main(["bench", "--optimizers", "optim.AdamW,optim.AdamW+clip,optim.NAdam,optim.Lion",
                 "--sizes", "1e3", "--dtype", "float32", "--workloads", "single",
                 "--peers", "torch", "--min-time", "0.001", "--repeat", "1",
                 "--json", str(json_path)]) == 0
    output = " ".join(capsys.readouterr().out.split())
    assert ("not measured: torch for optim.Lion: no torch.optim counterpart of optim.Lion: "
            "torch.optim has no Lion") in output
    assert "optim.AdamW fused" in output and "optim.NAdam foreach" in output
    assert "+clip: torch.nn.utils.clip_grad_norm_ then the step" in output
    results = {r["optimizer"]: r for r in json.loads(json_path.read_text())["results"]}
    for name in ("optim.AdamW", "optim.AdamW+clip", "optim.NAdam"):
        assert "torch" in results[name]["implementations"]
        assert results[name]["speedup_over"]["torch"] > 0
    assert set(results["optim.Lion"]["unsupported"]) == {"torch"}


def test_training_loop_takes_a_family_optimizer(tiny_loops, threads, tmp_path, capsys):
    targets = write_targets(tmp_path / "none.json")
    assert main(TINY_LOOP_RUN + ["--optimizer", "optim.adamw", "--targets", targets]) == 0
    output = capsys.readouterr().out
    assert "training loop: optim.AdamW with the default hyperparameters" in output
    assert "warning: the modes' parameters differ" not in output  # fastopt == its twin
