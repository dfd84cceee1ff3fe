"""The project's performance targets: a ratio on one case and the bound it must meet."""
import dataclasses

from .workloads import DTYPES, optimizer_names


@dataclasses.dataclass(frozen=True)
class Target:
    """A performance goal on one case: a ratio and the bound it must meet."""

    optimizer: str
    dtype: str
    workload: str  # a multi-array kind, or the element count of a single array
    metric: str  # "numpy" or "torch" (speedup over it, >= bound) or "limit" (time ratio, <=)
    bound: float

    def matches(self, result):
        workload = result.case.workload
        kind = workload.kind if workload.kind != "single" else str(workload.elements)
        return ((result.case.optimizer, workload.dtype.name, kind)
                == (self.optimizer, self.dtype, self.workload))

    def evaluate(self, result):
        """(ratio, met): ratio None if the case lacks a measurement."""
        if self.metric == "limit":
            ratio = result.limit_ratio
            return ratio, (None if ratio is None else ratio <= self.bound)
        ratio = result.speedup(self.metric)
        return ratio, (None if ratio is None else ratio >= self.bound)

    def describe(self, result):
        if self.metric == "limit":
            return f"{result.case.title} within {self.bound:.2f}x of the traffic-limit time"
        return f"{result.case.title} >= {self.bound:g}x {self.metric}"


def _targets():
    """The issue's performance targets."""
    targets = []
    for optimizer in optimizer_names():
        for dtype in DTYPES:
            targets.append(Target(optimizer, dtype, "10000000", "limit", 1.10))
    targets.append(Target("Adam", "float32", "10000000", "numpy", 10))
    for optimizer, bound in (("SGD", 2.5), ("Momentum", 3.5), ("Nesterov", 3.5),
                             ("AdaGrad", 5), ("RMSprop", 5), ("Adam", 5)):
        targets.append(Target(optimizer, "float64", "1000000", "numpy", bound))
    targets += [Target("Adam", "float32", "many-small", "numpy", 15),
                Target("Adam", "float32", "many-small", "torch", 2),
                Target("Adam", "float64", "mlp", "numpy", 6),
                Target("Adam", "float64", "1", "numpy", 5),
                Target("Adam", "float32", "1", "numpy", 5)]
    return tuple(targets)


TARGETS = _targets()


def evaluate_targets(results):
    """[(description, ratio, met)] for every target whose case was run; met is None when an
    implementation it needs was not measured."""
    evaluated = []
    for target in TARGETS:
        for result in results:
            if target.matches(result):
                ratio, met = target.evaluate(result)
                evaluated.append((target.describe(result), ratio, met))
    return evaluated
