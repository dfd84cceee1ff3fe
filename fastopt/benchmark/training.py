"""`fastopt bench --training-loop`: the optimizer step where a user pays for it, inside a NumPy
training loop, between the matrix products of the forward and backward passes.

A step is never alone: between two steps NumPy's BLAS runs its own threads, and a fastopt step
that spreads over threads competes with them (or waits for them to go to sleep). So each
workload here is a whole loop, timed as a whole; an iteration computes the gradients with NumPy
and then calls opt.update(params, grads):

- loop-mlp: the textbook's MLP, 784-40-20-10, float64, batch 100;
- loop-wide: a wide MLP, 784-1024-1024-10, float32, batch 256;
- loop-arrays: no network: 200 arrays of 4096 float32 with fixed gradients (the many-small
  workload of the per-update table), and one 512x512 float32 matrix product between steps.

The networks are fastopt.demo.network's MultiLayerNet (the textbook's MultiLayerNet: affine,
ReLU, ..., softmax with cross-entropy, gradients by backpropagation) on synthetic data from a
seeded generator (Gaussian inputs, the labels of a random linear teacher; nothing is
downloaded), with mini-batches drawn as the textbook draws them (a random choice of rows, with
replacement).

Each workload runs in three modes, each on its own copy of the same model, data and batch
sequence:
- fastopt: fastopt's optimizer at fastopt's thread count (its default, or bench's --threads);
- fastopt-1t: the same with fastopt.set_num_threads(1) (set for its rounds only; the thread
  count is restored afterwards, also when the measurement fails);
- numpy: fastopt.reference, the textbook's NumPy code.
BLAS keeps its own thread count (bench's --blas-threads changes it), the same in every mode.

Timing: time.perf_counter around opt.update (the step) and at the end of every iteration (an
iteration runs from the end of the previous one: the batch, the forward and backward passes,
the step, the loop itself). After a warm-up (rounds of one iteration per mode, WARMUP_ROUNDS
at least and WARMUP_SECONDS at least), the modes take turns in rounds of K iterations each,
in every order in turn (so each mode follows each other equally often), so that whatever else
the machine does hits every mode alike; K is chosen so that a mode's round lasts about
ROUND_SECONDS. Rounds go on until
`repeat` rounds and `min_time` seconds have passed. Every mode runs the same iterations on the
same batches, so at the end the three copies of the parameters are compared bit for bit.

Reported per workload and mode: mean and median loop time per iteration, mean and median step
time, and the step's share of the loop (total step time / total loop time). Per workload:
- default/1-thread: the fastopt mode's mean loop time over the fastopt-1t mode's (target
  metric "loop-threads", met when <= bound): do fastopt's threads pay for themselves inside a
  loop, with BLAS's threads around them?
- numpy share / fastopt share: the numpy mode's step share over the fastopt mode's (target
  metric "step-share", met when >= bound): how much less of the loop the step takes.
Each pooled over all iterations, and by round: the median over rounds of the ratio within a
round, which the targets use (see LoopResult: on a shared machine a neighbour's burst on a few
rounds of one mode moves the pooled ratio, not this one, while a stall that fastopt's threads
cause in every round moves both).
"""
import dataclasses
import gc
import itertools
import time

import numpy as np

import fastopt

from .implementations import FASTOPT, NUMPY
from .report import format_seconds
from .timing import OthersCpuMeter
from .workloads import MULTI_ARRAY_WORKLOADS

ROUND_SECONDS = 0.1  # target length of one mode's round of iterations
WARMUP_ROUNDS = 3  # untimed rounds of one iteration per mode, at least (the first one creates
#                    the optimizer's state)
WARMUP_SECONDS = 0.2  # ... and at least this long
DATA_SAMPLES = 2048  # rows of the synthetic data set the mini-batches are drawn from
SEED = 0


@dataclasses.dataclass(frozen=True)
class LoopWorkload:
    """A training loop: a network trained on mini-batches, or a dict of arrays with fixed
    gradients and a square matrix product between steps.

    kind: its name in targets ("loop-mlp"). label: how the table names it.
    layer_sizes: a network's units per layer, input to output, e.g. (784, 40, 20, 10).
    batch_size: a network's mini-batch. arrays: the arrays workload's parameters (a Workload of
    fastopt.benchmark.workloads). matmul_size: the side of its matrix product.
    """

    kind: str
    label: str
    dtype: np.dtype
    layer_sizes: tuple = ()
    batch_size: int = 0
    arrays: object = None
    matmul_size: int = 0

    @property
    def description(self):
        """What one iteration does, e.g. "784-40-20-10, batch 100"."""
        if self.layer_sizes:
            return f"{'-'.join(map(str, self.layer_sizes))}, batch {self.batch_size}"
        shape = self.arrays.shapes[0]
        return (f"{self.arrays.arrays} x {'x'.join(map(str, shape))} arrays, "
                f"{self.matmul_size}x{self.matmul_size} matmul")

    @property
    def elements(self):
        """Parameters the optimizer updates per step."""
        if self.layer_sizes:
            return sum((inputs + 1) * outputs
                       for inputs, outputs in zip(self.layer_sizes, self.layer_sizes[1:]))
        return self.arrays.elements

    def make_data(self, seed=SEED):
        """What every mode shares, read only: for a network, (inputs, labels) of DATA_SAMPLES
        rows, Gaussian inputs in the workload's dtype and the labels a random linear teacher
        gives them; for the arrays workload, the two matrices of the product."""
        rng = np.random.default_rng(seed)
        if self.layer_sizes:
            inputs = rng.standard_normal((DATA_SAMPLES, self.layer_sizes[0])).astype(self.dtype)
            teacher = rng.standard_normal((self.layer_sizes[0], self.layer_sizes[-1]))
            return inputs, np.argmax(inputs @ teacher.astype(self.dtype), axis=1)
        shape = (self.matmul_size, self.matmul_size)
        return tuple(rng.standard_normal(shape).astype(self.dtype) for _ in range(2))

    def make_loop(self, data, seed=SEED):
        """(params, compute): a fresh copy of the model's parameters (the same values for the
        same seed) and a function doing the work of one iteration before the step and returning
        the gradients (a network's are new each time; the arrays workload's are fixed)."""
        if self.layer_sizes:
            return self._network_loop(data, seed)
        params, grads = self.arrays.make_arrays(seed)
        left, right = data
        product = np.empty((self.matmul_size, self.matmul_size), self.dtype)

        def compute():
            np.matmul(left, right, out=product)
            return grads

        return params, compute

    def _network_loop(self, data, seed):
        from fastopt.demo.network import MultiLayerNet  # NumPy only (fastopt.demo's rule)

        inputs, labels = data
        sizes = self.layer_sizes
        network = MultiLayerNet(sizes[0], sizes[1:-1], sizes[-1], activation="relu",
                                dtype=self.dtype, rng=np.random.default_rng(seed))
        batches = np.random.default_rng(seed + 1)  # the same batch sequence in every mode

        def compute():
            batch = batches.choice(len(labels), self.batch_size)
            return network.gradient(inputs[batch], labels[batch])[1]

        return network.params, compute


def _mlp(kind, label, layer_sizes, dtype, batch_size):
    return LoopWorkload(kind, label, np.dtype(dtype), layer_sizes=layer_sizes,
                        batch_size=batch_size)


LOOP_WORKLOADS = {
    "loop-mlp": _mlp("loop-mlp", "textbook MLP", (784, 40, 20, 10), np.float64, 100),
    "loop-wide": _mlp("loop-wide", "wide MLP", (784, 1024, 1024, 10), np.float32, 256),
    "loop-arrays": LoopWorkload("loop-arrays", "200 x 4096", np.dtype(np.float32),
                                arrays=MULTI_ARRAY_WORKLOADS["many-small"], matmul_size=512),
}


@dataclasses.dataclass(frozen=True)
class LoopMode:
    """How the optimizer step runs: which implementation, and on one thread or fastopt's."""

    name: str
    implementation: object  # FASTOPT or NUMPY (fastopt.benchmark.implementations)
    single_thread: bool = False

    def label(self, threads):
        """The table's name: "fastopt, 2 threads", "fastopt, 1 thread", "numpy"."""
        if self.implementation is NUMPY:
            return self.name
        count = 1 if self.single_thread else threads
        return f"fastopt, {count} thread{'s' if count != 1 else ''}"


MODES = (LoopMode("fastopt", FASTOPT), LoopMode("fastopt-1t", FASTOPT, single_thread=True),
         LoopMode("numpy", NUMPY))
MODE_NAMES = tuple(mode.name for mode in MODES)


@dataclasses.dataclass
class LoopTiming:
    """One mode's timed iterations: seconds per iteration (the whole loop) and per step, and
    the round each iteration belongs to."""

    loop_seconds: np.ndarray
    step_seconds: np.ndarray
    rounds: np.ndarray

    @property
    def loop_mean(self):
        return float(self.loop_seconds.mean())

    @property
    def loop_median(self):
        return float(np.median(self.loop_seconds))

    @property
    def step_mean(self):
        return float(self.step_seconds.mean())

    @property
    def step_median(self):
        return float(np.median(self.step_seconds))

    @property
    def step_share(self):
        """The step's share of the loop: total step time / total loop time (0 to 1)."""
        return float(self.step_seconds.sum() / self.loop_seconds.sum())

    def round_means(self):
        """Mean loop time per iteration of each round, in round order."""
        sums = np.bincount(self.rounds, weights=self.loop_seconds)
        counts = np.bincount(self.rounds)
        return sums[counts > 0] / counts[counts > 0]

    def round_shares(self):
        """The step's share of the loop in each round, in round order."""
        counts = np.bincount(self.rounds)
        steps = np.bincount(self.rounds, weights=self.step_seconds)[counts > 0]
        return steps / np.bincount(self.rounds, weights=self.loop_seconds)[counts > 0]


@dataclasses.dataclass
class LoopResult:
    """The measurement of one training loop in every mode, and the ratios the table shows."""

    optimizer: str
    workload: LoopWorkload
    threads: int  # fastopt's thread count in the fastopt mode
    timings: dict  # mode name -> LoopTiming
    rounds: int
    iterations_per_round: int
    warmup_iterations: int
    identical: bool  # every mode's parameters equal bit for bit at the end
    others_cpu_share: float = None  # of the machine's CPU time, taken by other processes

    @property
    def title(self):
        return f"{self.optimizer} {self.workload.dtype.name} {self.workload.label} loop"

    def mode_label(self, name):
        return next(mode for mode in MODES if mode.name == name).label(self.threads)

    def _ratio(self, numerator, denominator):
        if numerator is None or denominator is None or not denominator > 0:
            return None
        return numerator / denominator

    def _stat(self, mode, attribute):
        timing = self.timings.get(mode)
        return None if timing is None else getattr(timing, attribute)

    # Each ratio two ways. Pooled: over all iterations of the two modes (the mean a user pays).
    # By round: the ratio of each round's two values, then the median over rounds; rounds of
    # all modes run close together in time, so a neighbour's burst that fell on some rounds of
    # one mode moves the pooled ratio (one 50 ms stall weighs as much as a hundred 0.5 ms
    # iterations) but not this median, while a stall that fastopt's threads cause in every
    # round moves both. The targets take the by-round ratio.

    @property
    def thread_ratio(self):
        """Pooled: the fastopt mode's mean loop time over the fastopt-1t mode's (<= 1: the
        threads pay for themselves)."""
        return self._ratio(self._stat("fastopt", "loop_mean"),
                           self._stat("fastopt-1t", "loop_mean"))

    @property
    def thread_ratio_by_round(self):
        """By round: the median over rounds of the fastopt mode's mean loop time in that round
        over the fastopt-1t mode's."""
        return self._median_of_round_ratios("fastopt", "fastopt-1t", LoopTiming.round_means)

    @property
    def share_ratio(self):
        """Pooled: the numpy mode's step share of its loop over the fastopt mode's."""
        return self._ratio(self._stat("numpy", "step_share"), self._stat("fastopt", "step_share"))

    @property
    def share_ratio_by_round(self):
        """By round: the median over rounds of the numpy mode's step share in that round over
        the fastopt mode's."""
        return self._median_of_round_ratios("numpy", "fastopt", LoopTiming.round_shares)

    def _median_of_round_ratios(self, numerator, denominator, per_round):
        if numerator not in self.timings or denominator not in self.timings:
            return None
        return float(np.median(per_round(self.timings[numerator])
                               / per_round(self.timings[denominator])))

    @property
    def step_speedup(self):
        """The numpy mode's mean step time over the fastopt mode's."""
        return self._ratio(self._stat("numpy", "step_mean"), self._stat("fastopt", "step_mean"))

    @property
    def loop_speedup(self):
        """The numpy mode's mean loop time over the fastopt mode's."""
        return self._ratio(self._stat("numpy", "loop_mean"), self._stat("fastopt", "loop_mean"))

    def to_json(self):
        workload = self.workload
        return {
            "optimizer": self.optimizer,
            "dtype": workload.dtype.name,
            "workload": workload.kind,
            "label": workload.label,
            "description": workload.description,
            "elements": workload.elements,
            "threads": self.threads,
            "modes": {
                name: {"label": self.mode_label(name),
                       "iterations": int(timing.loop_seconds.size),
                       "loop_mean_seconds": timing.loop_mean,
                       "loop_median_seconds": timing.loop_median,
                       "step_mean_seconds": timing.step_mean,
                       "step_median_seconds": timing.step_median,
                       "step_share": timing.step_share,
                       "loop_mean_seconds_by_round": timing.round_means().tolist(),
                       "step_share_by_round": timing.round_shares().tolist()}
                for name, timing in self.timings.items()},
            "default_over_1_thread_loop_time": self.thread_ratio,
            "default_over_1_thread_by_round_median": self.thread_ratio_by_round,
            "numpy_share_over_fastopt_share": self.share_ratio,
            "numpy_share_over_fastopt_share_by_round_median": self.share_ratio_by_round,
            "numpy_step_over_fastopt_step": self.step_speedup,
            "numpy_loop_over_fastopt_loop": self.loop_speedup,
            "rounds": self.rounds,
            "iterations_per_round": self.iterations_per_round,
            "warmup_iterations": self.warmup_iterations,
            "identical_parameters": self.identical,
            "others_cpu_share": self.others_cpu_share,
        }


def _run(params, compute, optimizer, count, loop_seconds, step_seconds):
    """`count` iterations: compute the gradients, then the step; append each iteration's and
    each step's seconds."""
    clock = time.perf_counter
    update = optimizer.update
    previous = clock()
    for _ in range(count):
        grads = compute()
        before = clock()
        update(params, grads)
        after = clock()
        step_seconds.append(after - before)
        loop_seconds.append(after - previous)
        previous = after


def measure_loop(workload, optimizer, min_time, repeat, modes=MODES):
    """Measure the training loop of `workload` with the named optimizer (a name of
    fastopt.optimizers.OPTIMIZERS, with its default hyperparameters) in every mode, interleaved
    (see the module's docstring). Returns a LoopResult. fastopt's thread count is what it was
    before, whatever happens."""
    threads = fastopt.get_num_threads()
    data = workload.make_data()
    loops = {}
    for mode in modes:
        params, compute = workload.make_loop(data)
        loops[mode.name] = (params, compute, mode.implementation.make(optimizer))
    samples = {mode.name: ([], [], []) for mode in modes}  # loop, step, round of each iteration
    meter = OthersCpuMeter()
    gc_was_enabled = gc.isenabled()
    orders = list(itertools.permutations(modes))  # every order in turn, round by round
    try:
        round_seconds, began = [], time.perf_counter()
        while len(round_seconds) < WARMUP_ROUNDS or time.perf_counter() - began < WARMUP_SECONDS:
            round_began = time.perf_counter()
            for mode in orders[len(round_seconds) % len(orders)]:
                _use_threads(mode, threads)
                _run(*loops[mode.name], 1, [], [])
            round_seconds.append(time.perf_counter() - round_began)
        warmup_rounds = len(round_seconds)
        iteration = float(np.median(round_seconds[1:])) / len(modes)  # the first made state
        per_round = max(1, round(ROUND_SECONDS / max(iteration, 1e-9)))

        gc.collect()
        gc.disable()
        rounds, began = 0, time.perf_counter()
        while rounds < repeat or time.perf_counter() - began < min_time:
            for mode in orders[rounds % len(orders)]:
                _use_threads(mode, threads)
                loop_seconds, step_seconds, round_numbers = samples[mode.name]
                _run(*loops[mode.name], per_round, loop_seconds, step_seconds)
                round_numbers.extend([rounds] * per_round)
            rounds += 1
    finally:
        if gc_was_enabled:
            gc.enable()
        fastopt.set_num_threads(threads)
    share = meter.share()
    first = loops[modes[0].name][0]
    identical = all(_bitwise_equal(first, loops[mode.name][0]) for mode in modes[1:])
    timings = {name: LoopTiming(np.array(loop), np.array(step), np.array(round_numbers))
               for name, (loop, step, round_numbers) in samples.items()}
    return LoopResult(optimizer, workload, threads, timings, rounds, per_round, warmup_rounds,
                      identical, share)


def _use_threads(mode, threads):
    fastopt.set_num_threads(1 if mode.single_thread else threads)


def _bitwise_equal(first, second):
    return first.keys() == second.keys() and all(
        first[key].tobytes() == second[key].tobytes() for key in first)


# ---- the report --------------------------------------------------------------------------

COLUMNS_NOTE = (
    "columns: per iteration of the training loop (the batch, NumPy's forward and backward "
    "passes, opt.update): mean and median loop time; step = opt.update alone; share = total "
    "step time / total loop time. Ratios, each pooled (over all iterations) and by round (the "
    "median over rounds of the ratio within a round: a neighbour's burst on a few rounds does "
    "not move it; the targets use it): default/1t = mean loop time at fastopt's thread count / "
    "at 1 thread (<= 1: the threads pay for themselves); numpy/fastopt share = the step's share "
    "of the loop with the NumPy reference / with fastopt; numpy/fastopt step = mean step "
    "times; same params = the three modes' parameters equal bit for bit at the end; others = "
    "share of the machine's CPU taken by other processes during the workload")


def _format_ratio(ratio, digits=2):
    return "-" if ratio is None else f"{ratio:.{digits}f}x" if ratio < 10 else f"{ratio:.1f}x"


def print_loop_table(results, out):
    """Two tables: the times of every workload and mode, then the ratios per workload."""
    rows = []
    for result in results:
        for name, timing in result.timings.items():
            rows.append([f"{result.workload.label} ({result.workload.dtype.name})",
                         result.mode_label(name), format_seconds(timing.loop_mean),
                         format_seconds(timing.loop_median), format_seconds(timing.step_mean),
                         format_seconds(timing.step_median), f"{100 * timing.step_share:.1f}%"])
    _print_columns(["workload", "mode", "loop mean", "loop median", "step mean", "step median",
                    "share"], rows, out, labels=2)
    print(file=out)
    rows = []
    for result in results:
        iterations = total_iterations(result)
        rows.append([result.workload.label, result.workload.description,
                     f"{result.rounds} x {result.iterations_per_round} = {iterations}",
                     _format_ratio(result.thread_ratio, 3),
                     _format_ratio(result.thread_ratio_by_round, 3),
                     _format_ratio(result.share_ratio), _format_ratio(result.share_ratio_by_round),
                     _format_ratio(result.step_speedup),
                     "yes" if result.identical else "NO",
                     "-" if result.others_cpu_share is None
                     else f"{100 * result.others_cpu_share:.0f}%"])
    _print_columns(["workload", "one iteration", "rounds x its", "default/1t", "by round",
                    "numpy/fastopt share", "by round", "numpy/fastopt step", "same params",
                    "others"], rows, out, labels=2)


def _print_columns(headers, rows, out, labels):
    widths = [max(len(cell) for cell in column) for column in zip(headers, *rows)]
    for cells in [headers, *rows]:
        print("  ".join(cell.ljust(width) if index < labels else cell.rjust(width)
                        for index, (cell, width) in enumerate(zip(cells, widths))).rstrip(),
              file=out)


def total_iterations(result):
    """Timed iterations of each mode of a LoopResult."""
    return next(iter(result.timings.values())).loop_seconds.size


__all__ = ["LOOP_WORKLOADS", "MODES", "MODE_NAMES", "LoopMode", "LoopResult", "LoopTiming",
           "LoopWorkload", "measure_loop", "print_loop_table", "total_iterations",
           "COLUMNS_NOTE"]
