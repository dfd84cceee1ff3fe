"""How `fastopt bench` times a case: interleaved batches of calls, medians, retries of cases that
other processes disturbed, and the meter of their share of the CPU.
"""
import dataclasses
import gc
import math
import os
import time

import numpy as np

from .implementations import NotApplicable, Unsupported
from .workloads import CLIP_SUFFIX, Case

BATCH_SECONDS = 0.004  # target length of one timed batch of calls
MAX_BATCHES_PER_ROUND = 8  # batches a fast implementation runs per round, at most
LARGE_CASE_BYTES = 16e6  # from this many bytes moved per update, how much of a case the caches
#                         hold (and how fast it runs) depends on where its pages land
LARGE_CASE_ALLOCATIONS = 3  # sets of array copies a large case is measured on, in turn
WARMUP_CALLS = 2  # untimed calls before calibration (the first one creates the state)
BUSY_LOAD = 1.0  # a 1-minute load average from this on before the run earns a warning
BUSY_SHARE = 0.05  # other processes' share of the CPU during the run that earns a warning
BUSY_CASE_SHARE = 0.10  # other processes' share of the CPU during a case that earns a retry
RETRY_BUDGET_SECONDS = 60.0  # time all retries of a run may take together


@dataclasses.dataclass
class Timing:
    """One implementation's timing of one case: per-call seconds of each batch."""

    calls_per_batch: int
    samples: list

    @property
    def median(self):
        """Median seconds per call (over batches)."""
        return float(np.median(self.samples))


def measure(steps, min_time, repeat):
    """Time each callable of `steps` ({name: callable doing one update}) interleaved.

    Each is called WARMUP_CALLS times, then once more timed to choose its batch size (calls
    lasting about BATCH_SECONDS together). Then rounds, in an order rotating from round to
    round: in each, every implementation runs its batches back to back, as many as fit in the
    slowest implementation's batch (at most MAX_BATCHES_PER_ROUND), so that the fast ones
    collect many samples while a slow one (NumPy at 1e7) runs few calls. Rounds go on until
    `repeat` rounds and `min_time` seconds have passed. Returns {name: Timing}.
    """
    names = list(steps)
    calls_per_batch, batch_seconds = {}, {}
    for name in names:
        for _ in range(WARMUP_CALLS):
            steps[name]()
        start = time.perf_counter()
        steps[name]()
        one_call = max(time.perf_counter() - start, 1e-9)
        calls_per_batch[name] = max(1, int(BATCH_SECONDS / one_call))
        batch_seconds[name] = calls_per_batch[name] * one_call
    slowest = max(batch_seconds.values())
    batches_per_round = {name: min(MAX_BATCHES_PER_ROUND, max(1, round(slowest / seconds)))
                         for name, seconds in batch_seconds.items()}
    samples = {name: [] for name in names}
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        began = time.perf_counter()
        rounds = 0
        while rounds < repeat or time.perf_counter() - began < min_time:
            shift = rounds % len(names)
            for name in names[shift:] + names[:shift]:
                step, calls = steps[name], range(calls_per_batch[name])
                for _ in range(batches_per_round[name]):
                    start = time.perf_counter()
                    for _ in calls:
                        step()
                    samples[name].append((time.perf_counter() - start) / len(calls))
            rounds += 1
    finally:
        if gc_was_enabled:
            gc.enable()
    return {name: Timing(calls_per_batch[name], samples[name]) for name in names}


@dataclasses.dataclass
class CaseResult:
    """The measurements of one case, and the ratios the table shows."""

    case: Case
    timings: dict  # implementation name -> Timing
    unsupported: dict  # implementation name -> reason
    others_cpu_share: float = None  # of the machine's CPU time, taken by other processes
    tries: int = 1  # measurements made of this case (see measure_case_retrying)
    allocations: int = 1  # sets of array copies the samples were pooled from (see run_case)

    def median(self, implementation):
        """Median seconds per update(), or None if not measured."""
        timing = self.timings.get(implementation)
        return None if timing is None else timing.median

    def gigabytes_per_second(self, implementation):
        """Effective GB/s: the bytes the optimizer must move over the median time (for noclip,
        those of the optimizer without clipping)."""
        seconds = self.median(implementation)
        if seconds is None:
            return None
        optimizer = self.case.optimizer
        if implementation == "noclip":
            optimizer = optimizer.removesuffix(CLIP_SUFFIX)
        return self.case.workload.bytes_moved(optimizer) / seconds / 1e9

    def speedup(self, over):
        """How many times faster fastopt is than `over` (its median / fastopt's median)."""
        return _ratio(self.median(over), self.median("fastopt"))

    @property
    def limit_ratio(self):
        """fastopt's time over the traffic-limit kernel's (1.00 = at this machine's ceiling)."""
        return _ratio(self.median("fastopt"), self.median("limit"))

    @property
    def clip_ratio(self):
        """In a clipping variant's case ("optim.AdamW+clip"): fastopt's time over that of the
        same optimizer without clipping (noclip), measured interleaved: the cost of clipping
        (1.00 = free). None elsewhere."""
        return _ratio(self.median("fastopt"), self.median("noclip"))

    def to_json(self):
        workload = self.case.workload
        return {
            "optimizer": self.case.optimizer,
            "dtype": workload.dtype.name,
            "workload": workload.kind,
            "label": workload.label,
            "elements": workload.elements,
            "arrays": workload.arrays,
            "bytes_per_update": workload.bytes_moved(self.case.optimizer),
            "implementations": {
                name: {"median_seconds": timing.median,
                       "gigabytes_per_second": self.gigabytes_per_second(name),
                       "calls_per_batch": timing.calls_per_batch,
                       "per_call_seconds_by_batch": timing.samples}
                for name, timing in self.timings.items()},
            "unsupported": self.unsupported,
            "speedup_over": {name: self.speedup(name) for name in self.timings
                             if name != "fastopt"},
            "fastopt_over_limit_time": self.limit_ratio,
            **({"fastopt_over_noclip_time": self.clip_ratio} if "noclip" in self.timings
               else {}),
            "others_cpu_share": self.others_cpu_share,
            "tries": self.tries,
            "allocations": self.allocations,
        }


def _ratio(numerator, denominator):
    if numerator is None or denominator is None or denominator <= 0:
        return None
    return numerator / denominator


def run_case(case, implementations, min_time, repeat):
    """Prepare every implementation on fresh copies of the case's arrays and measure them.

    A large case (LARGE_CASE_BYTES moved per update or more) is measured on
    LARGE_CASE_ALLOCATIONS sets of copies in turn, its rounds and time shared among them, and
    the samples pooled: there the speed of an array depends on where its pages land (by some
    10% from one allocation to the next here, more near the size of the L3 cache), and one
    allocation would give every implementation one lucky or unlucky draw."""
    large = case.workload.bytes_moved(case.optimizer) >= LARGE_CASE_BYTES
    allocations = LARGE_CASE_ALLOCATIONS if large else 1
    meter = OthersCpuMeter()
    timings, unsupported = {}, {}
    for allocation in range(allocations):
        params, grads = case.workload.make_arrays(seed=allocation)
        steps = {}
        for implementation in implementations:
            try:
                steps[implementation.name] = implementation.prepare(case.optimizer, params, grads)
            except NotApplicable:  # noclip outside the clipping variants: nothing to say
                pass
            except Unsupported as reason:
                unsupported[implementation.name] = str(reason)
        del params, grads
        measured = measure(steps, min_time / allocations, math.ceil(repeat / allocations))
        del steps  # free this set of copies before the next one is made
        for name, timing in measured.items():
            if name in timings:
                timings[name].samples += timing.samples
            else:
                timings[name] = timing
    return CaseResult(case, timings, unsupported, meter.share(), allocations=allocations)


def measure_case_retrying(case, implementations, min_time, repeat, retries, budget_seconds):
    """run_case, then again (at most `retries` more times, while the retries so far took less
    than `budget_seconds`) as long as other processes took more than BUSY_CASE_SHARE of the
    CPU during it: a neighbour's burst is often shorter than a case. Keeps the quietest try.
    Returns (result, seconds spent on retries)."""
    result = run_case(case, implementations, min_time, repeat)
    spent = 0.0
    tries = 1
    while (tries <= retries and spent < budget_seconds and result.others_cpu_share is not None
           and result.others_cpu_share > BUSY_CASE_SHARE):
        began = time.perf_counter()
        retry = run_case(case, implementations, min_time, repeat)
        spent += time.perf_counter() - began
        tries += 1
        if retry.others_cpu_share < result.others_cpu_share:
            result = retry
    result.tries = tries
    return result, spent


def load_warning(load_average=None, cores=None):
    """The warning printed before measuring on a busy machine (by `fastopt bench` and `fastopt
    compare`), or None: when the 1-minute load average (default: os.getloadavg()'s, None where
    that is missing) is BUSY_LOAD or more. cores: for the message (default os.cpu_count())."""
    if load_average is None:
        try:
            load_average = os.getloadavg()[0]
        except (AttributeError, OSError):  # no load average on this platform
            return None
    if load_average < BUSY_LOAD:
        return None
    return (f"warning: load average {load_average:.1f} on {cores or os.cpu_count()} cores "
            "before the run: other processes compete for the CPU, so timings are noisy "
            "(multi-threaded ones most)")


def others_warning(share, consequence):
    """The warning printed after measuring when other processes took BUSY_SHARE or more of the
    machine's CPU time meanwhile (share: from OthersCpuMeter.share(), None if unknown), or None.
    consequence: what it means for the numbers just printed, e.g. "the step times are
    unreliable"."""
    if share is None or share < BUSY_SHARE:
        return None
    return (f"warning: other processes took {100 * share:.0f}% of this machine's CPU time "
            f"during the run; {consequence}")


class OthersCpuMeter:
    """How much of the machine's CPU time other processes took since this meter was made:
    busy time from /proc/stat minus this process's (and its children's) CPU time, over wall
    time x cores. On a 2-core machine a busy neighbour delays every multi-threaded update() by
    milliseconds, so the table shows this next to each case. share() is None where /proc/stat
    is missing."""

    def __init__(self):
        self.start = self._snapshot()

    @staticmethod
    def _snapshot():
        try:
            with open("/proc/stat") as stat:
                fields = [int(value) for value in stat.readline().split()[1:]]
        except (OSError, ValueError):
            return None
        ticks_per_second = os.sysconf("SC_CLK_TCK")
        idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
        busy = (sum(fields[:8]) - idle) / ticks_per_second  # guest time is inside user time
        # This process and its finished children (DeepSpeedCPUAdam runs py-cpuinfo in one).
        own = sum(os.times()[:4])
        return time.perf_counter(), busy, own

    def share(self):
        """Other processes' share of the machine's CPU time since the start (0 to 1)."""
        end = self._snapshot()
        if self.start is None or end is None:
            return None
        wall = end[0] - self.start[0]
        others = (end[1] - self.start[1]) - (end[2] - self.start[2])
        return min(1.0, max(0.0, others / (wall * (os.cpu_count() or 1))))
