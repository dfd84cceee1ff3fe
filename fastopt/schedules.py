"""Learning-rate schedules for fastopt.optim: plain callables of the step number.

    from fastopt import optim, schedules
    opt = optim.AdamW(lr=schedules.warmup_cosine(1e-3, warmup_steps=100, total_steps=10_000))

An optimizer calls its lr with the number of the step it is about to take: 1, 2, 3, ...
Each schedule returns a learning rate (the step size per unit of gradient) as a Python float,
computed in double. They compare equal when their arguments do, print as the call that made
them, and pickle, so an optimizer's state_dict() and pickle keep them.

How they map onto torch.optim.lr_scheduler, used the usual way (scheduler.step() after each
optimizer.step(), so the k-th step uses the closed form at epoch k - 1):
- step_decay(lr, step_size, gamma) is StepLR(step_size, gamma);
- cosine_decay(lr, decay_steps, final_lr) is CosineAnnealingLR(T_max=decay_steps,
  eta_min=final_lr), held at final_lr after decay_steps + 1 steps (torch's goes back up);
- linear_warmup(lr, warmup_steps) is LinearLR(start_factor=1/warmup_steps,
  total_iters=warmup_steps - 1): lr * step / warmup_steps, then lr.
"""
import math
import numbers

__all__ = ["linear_warmup", "cosine_decay", "step_decay", "warmup_cosine"]


def _rate(name, value):
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__}")
    value = float(value)
    if not (0.0 <= value < math.inf):
        raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
    return value


def _count(name, value, low=1):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an integer, got {type(value).__name__}")
    if value < low:
        raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
    return int(value)


class _Schedule:
    """A schedule: its arguments (_fields, in order) define it."""

    _fields = ()

    def __call__(self, step):
        return self._at(_count("step", step))

    def _arguments(self):
        return tuple(getattr(self, name) for name in self._fields)

    def __eq__(self, other):
        return type(other) is type(self) and other._arguments() == self._arguments()

    def __hash__(self):
        return hash((type(self).__name__, self._arguments()))

    def __repr__(self):
        arguments = ", ".join(f"{name}={getattr(self, name)!r}" for name in self._fields)
        return f"schedules.{type(self).__name__}({arguments})"


class linear_warmup(_Schedule):
    """lr * step / warmup_steps for step < warmup_steps, lr from warmup_steps on.
    lr: the learning rate after warmup (finite, >= 0); warmup_steps: integer >= 1."""

    _fields = ("lr", "warmup_steps")

    def __init__(self, lr, warmup_steps):
        self.lr = _rate("lr", lr)
        self.warmup_steps = _count("warmup_steps", warmup_steps)

    def _at(self, step):
        return self.lr * min(step, self.warmup_steps) / self.warmup_steps


class cosine_decay(_Schedule):
    """Cosine decay from lr at step 1 to final_lr at step decay_steps + 1, then final_lr:
    final_lr + (lr - final_lr) * (1 + cos(pi * min(step - 1, decay_steps) / decay_steps)) / 2.
    lr, final_lr: finite, >= 0 (final_lr default 0); decay_steps: integer >= 1."""

    _fields = ("lr", "decay_steps", "final_lr")

    def __init__(self, lr, decay_steps, final_lr=0.0):
        self.lr = _rate("lr", lr)
        self.decay_steps = _count("decay_steps", decay_steps)
        self.final_lr = _rate("final_lr", final_lr)

    def _at(self, step):
        progress = min(step - 1, self.decay_steps) / self.decay_steps
        return self.final_lr + (self.lr - self.final_lr) * (1.0 + math.cos(math.pi * progress)) / 2


class step_decay(_Schedule):
    """lr * gamma ** ((step - 1) // step_size): lr for the first step_size steps, then
    multiplied by gamma every step_size steps. lr: finite, >= 0; step_size: integer >= 1;
    gamma: finite, in (0, 1] (default 0.1)."""

    _fields = ("lr", "step_size", "gamma")

    def __init__(self, lr, step_size, gamma=0.1):
        self.lr = _rate("lr", lr)
        self.step_size = _count("step_size", step_size)
        self.gamma = _rate("gamma", gamma)
        if not 0.0 < self.gamma <= 1.0:
            raise ValueError(f"gamma must be in (0, 1], got {gamma!r}")

    def _at(self, step):
        return self.lr * self.gamma ** ((step - 1) // self.step_size)


class warmup_cosine(_Schedule):
    """Linear warmup to lr over warmup_steps steps (linear_warmup), then cosine decay to
    final_lr at total_steps (cosine_decay over total_steps - warmup_steps steps), final_lr
    afterwards. lr, final_lr: finite, >= 0; warmup_steps >= 1 and total_steps > warmup_steps:
    integers."""

    _fields = ("lr", "warmup_steps", "total_steps", "final_lr")

    def __init__(self, lr, warmup_steps, total_steps, final_lr=0.0):
        self.lr = _rate("lr", lr)
        self.warmup_steps = _count("warmup_steps", warmup_steps)
        self.total_steps = _count("total_steps", total_steps, self.warmup_steps + 1)
        self.final_lr = _rate("final_lr", final_lr)

    def _at(self, step):
        if step <= self.warmup_steps:
            return self.lr * step / self.warmup_steps
        decay_steps = self.total_steps - self.warmup_steps
        progress = min(step - self.warmup_steps, decay_steps) / decay_steps
        return self.final_lr + (self.lr - self.final_lr) * (1.0 + math.cos(math.pi * progress)) / 2
