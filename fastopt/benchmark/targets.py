"""Performance targets: a ratio on one case and the bound it must meet, read from a JSON file.

The project's own targets are not part of the installed package: they are the source checkout's
bench/targets.json. `fastopt bench` checks the targets of the file given with --targets FILE;
without it, those of DEFAULT_TARGETS_FILE (bench/targets.json beside the folder that holds the
fastopt package) when fastopt runs from a source checkout, and none (no targets section) when
that file does not exist, as with an installed fastopt.

The file: {"targets": [TARGET, ...]}, and optionally "about": text, where each TARGET is
{"optimizer": "Adam", "dtype": "float32", "workload": 1000000, "metric": "numpy", "bound": 5}:
- optimizer: a name `fastopt bench --optimizers` takes, exactly spelled: "Adam" (the textbook's),
  "optim.AdamW" (fastopt.optim's), "optim.AdamW+clip" (its clipping variant);
- workload: an element count (a case of one array), a multi-array workload ("mlp",
  "book-mlp", "many-small") or a training loop of `fastopt bench --training-loop`
  ("loop-mlp", "loop-wide", "loop-arrays");
- metric, for the cases of one update(): "limit", fastopt's time over the traffic-limit
  kernel's, met when <= bound; "noclip" (a clipping variant's case only), fastopt's time over
  that of the same optimizer without clipping, measured interleaved, met when <= bound; or
  "numpy", "torch", "deepspeed", that implementation's time over fastopt's, met when >= bound;
- metric, for a training loop (fastopt.benchmark.training): "loop-threads", the mean loop time
  at fastopt's thread count over that at 1 thread, met when <= bound; "step-share", the
  optimizer step's share of the loop with the NumPy reference over its share with fastopt,
  met when >= bound. Both as measured round by round (the median over rounds of the ratio
  within a round: LoopResult.thread_ratio_by_round, share_ratio_by_round).
A target is checked when its case was run; its optimizer need not be registered.
"""
import dataclasses
import json
import pathlib

from .implementations import IMPLEMENTATIONS
from .training import LOOP_WORKLOADS, LoopResult
from .workloads import DTYPES, MULTI_ARRAY_WORKLOADS

# Where a source checkout keeps the project's targets: <checkout>/bench/targets.json, beside
# <checkout>/fastopt/benchmark/ (this file's folder).
DEFAULT_TARGETS_FILE = pathlib.Path(__file__).resolve().parents[2] / "bench" / "targets.json"
TARGET_KEYS = ("optimizer", "dtype", "workload", "metric", "bound")
# metric -> "<=" (met when the ratio is at most the bound) or ">=" (at least)
UPDATE_METRICS = {name: "<=" if name in ("limit", "noclip") else ">="
                  for name in IMPLEMENTATIONS if name != "fastopt"}
LOOP_METRICS = {"loop-threads": "<=", "step-share": ">="}
METRICS = (*UPDATE_METRICS, *LOOP_METRICS)


@dataclasses.dataclass(frozen=True)
class Target:
    """A performance goal on one case: a ratio and the bound it must meet."""

    optimizer: str
    dtype: str
    workload: str  # a multi-array kind or a training loop, or the element count of a single
    #                array ("1000000")
    metric: str  # see METRICS and the module's docstring
    bound: float

    def matches(self, result):
        """Is `result` (a CaseResult of fastopt.benchmark.timing, or a LoopResult of
        fastopt.benchmark.training) this target's case?"""
        if isinstance(result, LoopResult):
            optimizer, workload = result.optimizer, result.workload
            kind = workload.kind
        else:
            optimizer, workload = result.case.optimizer, result.case.workload
            kind = workload.kind if workload.kind != "single" else str(workload.elements)
        return (optimizer, workload.dtype.name, kind) == (self.optimizer, self.dtype,
                                                          self.workload)

    def evaluate(self, result):
        """(ratio, met): ratio None if the case lacks a measurement."""
        if self.metric == "loop-threads":  # by round: robust to a neighbour's bursts
            ratio = result.thread_ratio_by_round
        elif self.metric == "step-share":
            ratio = result.share_ratio_by_round
        elif self.metric == "limit":
            ratio = result.limit_ratio
        elif self.metric == "noclip":
            ratio = result.clip_ratio
        else:
            ratio = result.speedup(self.metric)
        if ratio is None:
            return None, None
        direction = UPDATE_METRICS.get(self.metric) or LOOP_METRICS[self.metric]
        return ratio, (ratio <= self.bound if direction == "<=" else ratio >= self.bound)

    def describe(self, result):
        if self.metric == "loop-threads":
            return (f"{result.title}: time at {result.threads} threads / at 1 thread, by "
                    f"round, <= {self.bound:g}")
        if self.metric == "step-share":
            return (f"{result.title}: numpy step share / fastopt step share, by round, "
                    f">= {self.bound:g}x")
        if self.metric == "limit":
            return f"{result.case.title} within {self.bound:.2f}x of the traffic-limit time"
        if self.metric == "noclip":
            return (f"{result.case.title} within {self.bound:.2f}x of the time without "
                    f"clipping")
        return f"{result.case.title} >= {self.bound:g}x {self.metric}"


def default_targets_file():
    """DEFAULT_TARGETS_FILE if it exists (fastopt runs from a source checkout), else None."""
    return DEFAULT_TARGETS_FILE if DEFAULT_TARGETS_FILE.is_file() else None


def load_targets(path):
    """The targets of the JSON file at `path` (see the module's docstring), a tuple of Target in
    file order. Raises OSError if the file cannot be read, ValueError naming the file and the
    entry if it is not a targets file."""
    with open(path) as stream:
        try:
            document = json.load(stream)
        except json.JSONDecodeError as error:
            raise ValueError(f"{path}: not JSON ({error})") from None
    if (not isinstance(document, dict) or not isinstance(document.get("targets"), list)
            or not set(document) <= {"about", "targets"}):
        raise ValueError(f'{path}: expected {{"targets": [...]}}, and optionally "about"')
    return tuple(_parse_target(entry, f"{path}: targets[{index}]")
                 for index, entry in enumerate(document["targets"]))


def _parse_target(entry, where):
    """A Target from one entry of a targets file; ValueError saying `where` if it is malformed."""
    if not isinstance(entry, dict) or set(entry) != set(TARGET_KEYS):
        raise ValueError(f"{where}: expected an object with the keys {', '.join(TARGET_KEYS)}")
    optimizer, dtype, workload, metric, bound = (entry[key] for key in TARGET_KEYS)
    if not isinstance(optimizer, str):
        raise ValueError(f"{where}: optimizer must be a name, got {optimizer!r}")
    if not _is_name_in(dtype, DTYPES):
        raise ValueError(f"{where}: dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
    if isinstance(workload, int) and not isinstance(workload, bool) and workload >= 1:
        workload = str(workload)  # as Target.matches names a single array's case
    elif not (_is_name_in(workload, MULTI_ARRAY_WORKLOADS)
              or _is_name_in(workload, LOOP_WORKLOADS)):
        raise ValueError(f"{where}: workload must be an element count >= 1 or one of "
                         f"{', '.join([*MULTI_ARRAY_WORKLOADS, *LOOP_WORKLOADS])}, "
                         f"got {workload!r}")
    if not _is_name_in(metric, METRICS):
        raise ValueError(f"{where}: metric must be one of {', '.join(METRICS)}, got {metric!r}")
    if (workload in LOOP_WORKLOADS) != (metric in LOOP_METRICS):
        raise ValueError(f"{where}: the metric of a training loop ({', '.join(LOOP_WORKLOADS)}) "
                         f"is one of {', '.join(LOOP_METRICS)}, and only theirs is; got "
                         f"{metric!r} for {workload!r}")
    if isinstance(bound, bool) or not isinstance(bound, (int, float)) or not bound > 0:
        raise ValueError(f"{where}: bound must be a number > 0, got {bound!r}")
    return Target(optimizer, dtype, workload, metric, float(bound))


def _is_name_in(value, choices):
    """value is a str among `choices` (a str check first: a list or dict is not hashable)."""
    return isinstance(value, str) and value in choices


def evaluate_targets(targets, results):
    """[(description, ratio, met)] for every one of `targets` whose case was run; met is None
    when an implementation it needs was not measured."""
    evaluated = []
    for target in targets:
        for result in results:
            if target.matches(result):
                ratio, met = target.evaluate(result)
                evaluated.append((target.describe(result), ratio, met))
    return evaluated
