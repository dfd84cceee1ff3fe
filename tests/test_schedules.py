"""fastopt.schedules: values at the boundaries, equality, pickling, errors, and torch's
schedulers stepped the usual way."""
import math
import pickle

import numpy as np
import pytest

from fastopt import optim, schedules


def test_linear_warmup():
    s = schedules.linear_warmup(0.1, 4)
    assert [s(step) for step in (1, 2, 3, 4, 5, 1000)] == [0.1 * k / 4 for k in (1, 2, 3, 4, 4, 4)]


def test_cosine_decay():
    s = schedules.cosine_decay(1.0, 10, final_lr=0.1)
    assert s(1) == 1.0
    assert s(6) == pytest.approx(0.55, rel=1e-15)  # halfway: the mean of lr and final_lr
    assert s(11) == pytest.approx(0.1, rel=1e-15) and s(12) == s(11) == s(10**9)
    values = [s(step) for step in range(1, 12)]
    assert all(a > b for a, b in zip(values, values[1:]))


def test_step_decay():
    s = schedules.step_decay(1.0, 3, gamma=0.5)
    assert [s(step) for step in range(1, 8)] == [1.0, 1.0, 1.0, 0.5, 0.5, 0.5, 0.25]


def test_warmup_cosine():
    s = schedules.warmup_cosine(2.0, warmup_steps=2, total_steps=6, final_lr=0.0)
    assert s(1) == 1.0 and s(2) == 2.0
    assert s(4) == pytest.approx(1.0, rel=1e-15)  # halfway through the decay
    assert s(6) == pytest.approx(0.0, abs=1e-15) and s(7) == s(6)
    values = [s(step) for step in range(2, 7)]
    assert all(a > b for a, b in zip(values, values[1:]))


SCHEDULES = [schedules.linear_warmup(1e-3, 100), schedules.cosine_decay(1e-3, 1000, 1e-5),
             schedules.step_decay(0.1, 30, 0.5), schedules.warmup_cosine(1e-3, 10, 100, 1e-6)]


@pytest.mark.parametrize("schedule", SCHEDULES, ids=lambda s: type(s).__name__)
def test_equality_repr_and_pickle(schedule):
    copy = pickle.loads(pickle.dumps(schedule))
    assert copy == schedule and hash(copy) == hash(schedule)
    assert [copy(step) for step in range(1, 200)] == [schedule(step) for step in range(1, 200)]
    assert repr(schedule).startswith(f"schedules.{type(schedule).__name__}(lr=")
    assert eval(repr(schedule), {"schedules": schedules}) == schedule
    assert schedule != schedules.linear_warmup(7.0, 3)
    assert isinstance(schedule(1), float)


@pytest.mark.parametrize("make, error, message", [
    (lambda: schedules.linear_warmup("0.1", 3), TypeError, "lr must be a real number"),
    (lambda: schedules.linear_warmup(True, 3), TypeError, "lr must be a real number"),
    (lambda: schedules.linear_warmup(-0.1, 3), ValueError, "lr must be a finite number >= 0"),
    (lambda: schedules.linear_warmup(math.inf, 3), ValueError, "lr must be a finite"),
    (lambda: schedules.linear_warmup(0.1, 0), ValueError, "warmup_steps must be an integer >= 1"),
    (lambda: schedules.linear_warmup(0.1, 2.0), TypeError, "warmup_steps must be an integer"),
    (lambda: schedules.cosine_decay(0.1, 10, final_lr=math.nan), ValueError, "final_lr must"),
    (lambda: schedules.step_decay(0.1, 10, gamma=0.0), ValueError, r"gamma must be in \(0, 1\]"),
    (lambda: schedules.step_decay(0.1, 10, gamma=1.5), ValueError, r"gamma must be in \(0, 1\]"),
    (lambda: schedules.warmup_cosine(0.1, 10, 10), ValueError, "total_steps must be an integer >= 11"),
])
def test_arguments_are_checked(make, error, message):
    with pytest.raises(error, match=message):
        make()


@pytest.mark.parametrize("step, error", [(0, ValueError), (-1, ValueError), (1.0, TypeError),
                                         (True, TypeError)])
def test_the_step_is_an_integer_from_1(step, error):
    with pytest.raises(error, match="step must be an integer"):
        schedules.step_decay(0.1, 10)(step)


def test_an_optimizer_takes_a_schedule_and_keeps_it():
    opt = optim.SGD(lr=schedules.step_decay(1.0, 2, gamma=0.5))
    params, grads = {"w": np.zeros(1)}, {"w": np.ones(1)}
    for _ in range(5):
        opt.update(params, grads)
    assert params["w"][0] == -(1.0 + 1.0 + 0.5 + 0.5 + 0.25)
    copy = pickle.loads(pickle.dumps(opt))
    assert copy.lr == opt.lr


def torch_rates(torch, make_scheduler, steps):
    """The lr torch's scheduler gives each of `steps` optimizer steps (scheduler.step() after
    each optimizer.step())."""
    parameter = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([parameter], lr=1.0)
    scheduler = make_scheduler(torch.optim.lr_scheduler, optimizer)
    rates = []
    for _ in range(steps):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return rates


@pytest.mark.parametrize("ours, theirs, steps", [
    (schedules.step_decay(1.0, 7, 0.3), lambda m, o: m.StepLR(o, 7, 0.3), 50),
    (schedules.cosine_decay(1.0, 40, 0.05), lambda m, o: m.CosineAnnealingLR(o, 40, 0.05), 41),
    (schedules.linear_warmup(1.0, 10),
     lambda m, o: m.LinearLR(o, start_factor=0.1, end_factor=1.0, total_iters=9), 50),
])
def test_against_torch_schedulers(ours, theirs, steps):
    torch = pytest.importorskip("torch", reason="torch is an optional extra")
    expected = torch_rates(torch, theirs, steps)
    np.testing.assert_allclose([ours(step) for step in range(1, steps + 1)], expected,
                               rtol=1e-12, atol=1e-15)
