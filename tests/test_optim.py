"""fastopt.optim against its NumPy twins (fastopt.reference.optim), bit for bit: every class x
option combination x dtype x shape family x SIMD path x thread split, with per-key overrides,
lr schedules, grad_scale, clipping and skipped steps."""
import os
import sys

import numpy as np
import pytest

import fastopt
from fastopt import optim
from fastopt.reference import optim as twins
from fastopt.testing import assert_dict_bitwise_equal

# The shared helpers of test_optimizers.py, also under --import-mode=importlib (the wheel checks
# and cibuildwheel), where the tests folder is not on sys.path.
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from test_optimizers import copy_params, make_grads, make_params, thread_settings

DTYPES = [np.float32, np.float64]
THREADED = fastopt.build_info()["threads_enabled"]


def option_matrix():
    """(class name, constructor arguments): for every class its defaults, each option torch
    has on its own, and options combined; the values are not the defaults, so each changes
    every coefficient it enters."""
    cases = {
        "SGD": [dict(lr=0.05), dict(momentum=0.9), dict(momentum=0.9, dampening=0.3),
                dict(momentum=0.8, nesterov=True), dict(weight_decay=0.05, maximize=True),
                dict(momentum=0.9, weight_decay=0.05, maximize=True)],
        "Adam": [dict(lr=0.01, betas=(0.8, 0.99), eps=1e-6), dict(amsgrad=True),
                 dict(weight_decay=0.1), dict(maximize=True, amsgrad=True, weight_decay=0.1)],
        "AdamW": [dict(weight_decay=0.3), dict(amsgrad=True, maximize=True)],
        "Adagrad": [dict(lr_decay=0.05), dict(initial_accumulator_value=0.2, eps=1e-6),
                    dict(weight_decay=0.1, maximize=True)],
        "RMSprop": [dict(alpha=0.9), dict(centered=True), dict(momentum=0.7),
                    dict(centered=True, momentum=0.5, weight_decay=0.1, maximize=True)],
        "Adadelta": [dict(lr=0.5, rho=0.8), dict(weight_decay=0.1, maximize=True)],
        "Adamax": [dict(betas=(0.7, 0.9)), dict(weight_decay=0.1, maximize=True)],
        "NAdam": [dict(momentum_decay=0.01), dict(weight_decay=0.1),
                  dict(weight_decay=0.1, decoupled_weight_decay=True, maximize=True)],
        "RAdam": [dict(betas=(0.9, 0.99)), dict(weight_decay=0.1),
                  dict(weight_decay=0.1, decoupled_weight_decay=True, maximize=True)],
        "Lion": [dict(lr=0.01, betas=(0.8, 0.95)), dict(weight_decay=0.5)],
    }
    assert set(cases) == set(optim.OPTIMIZERS), "every class of the family needs its options"
    return [(name, {}) for name in optim.OPTIMIZERS] + [
        (name, arguments) for name, options in cases.items() for arguments in options]


CASES = option_matrix()
CASE_IDS = [f"{name}-{'-'.join(f'{k}={v}' for k, v in arguments.items()) or 'defaults'}"
            for name, arguments in CASES]


def run_both(name, arguments, params, steps, rng, update_arguments=lambda step: {},
             grads_fn=make_grads):
    """steps updates of fastopt.optim and its twin on copies of params; returns (ours, twin,
    the twin's params); asserts every returned norm equal."""
    ours = optim.OPTIMIZERS[name](**arguments)
    twin = twins.OPTIMIZERS[name](**arguments)
    expected = copy_params(params)
    for step in range(steps):
        grads = grads_fn(rng, params)
        extra = update_arguments(step)
        norm = ours.update(params, grads, **extra)
        expected_norm = twin.update(expected, grads, **extra)
        assert (norm == expected_norm or (norm != norm and expected_norm != expected_norm)), (
            f"step {step}: norm {norm!r} != {expected_norm!r}")
    return ours, twin, expected


def assert_same_state(ours, twin, name=""):
    assert set(ours.state) == set(twin.state or {}), name
    for state_name, arrays in (twin.state or {}).items():
        assert_dict_bitwise_equal(dict(ours.state[state_name]), arrays,
                                  f"{name} {state_name}")
    assert ours.steps == twin.step and ours.skipped_steps == twin.skipped_steps


@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
@pytest.mark.parametrize("name, arguments", CASES, ids=CASE_IDS)
def test_bit_for_bit_every_option_every_shape(name, arguments, dtype, simd):
    """Every shape family (0-d, empty, 1, 7, 1003, 2-D, 3-D, Fortran, transposed, strided,
    reversed) on every SIMD path, 60 steps: long enough for RAdam's rectified branch and for
    amsgrad's maximum to both keep and replace values."""
    rng = np.random.default_rng(7)
    params = make_params(rng, dtype)
    ours, twin, expected = run_both(name, arguments, params, 60, rng)
    assert_dict_bitwise_equal(params, expected, f"{name} {arguments}")
    assert_same_state(ours, twin, name)


def test_the_options_change_the_result():
    """The matrix above can fail: every option of every class changes the parameters (an
    option the kernel ignored would still match a twin that ignored it too, so compare each
    case with the class's defaults)."""
    rng = np.random.default_rng(3)
    start = {"w": rng.standard_normal(50), "b": rng.standard_normal(5)}
    grads = [{key: rng.standard_normal(p.shape) for key, p in start.items()} for _ in range(8)]

    def final(name, arguments):
        params = copy_params(start)
        opt = optim.OPTIMIZERS[name](**arguments)
        for g in grads:
            opt.update(params, g)
        return params["w"]

    for name, arguments in CASES:
        if arguments:
            assert not np.array_equal(final(name, arguments), final(name, {})), (name, arguments)


def clip_and_scale(step):
    """Every step a different combination: nothing, grad_scale alone, clipping that bites
    (max_grad_norm far below the norm), clipping that does not, both."""
    return [{}, {"grad_scale": 0.25}, {"max_grad_norm": 0.5}, {"max_grad_norm": 1e6},
            {"grad_scale": -2.0, "max_grad_norm": 3.0}][step % 5]


@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
@pytest.mark.parametrize("name", list(optim.OPTIMIZERS))
def test_bit_for_bit_with_scaling_clipping_overrides_and_a_schedule(name, dtype, simd):
    """grad_scale, max_grad_norm (the norm from the reduction pass), per-key overrides (two
    patterns, one overriding the other on a key they share) and a callable lr, together."""
    rng = np.random.default_rng(11)
    params = make_params(rng, dtype)
    defaults = optim.OPTIMIZERS[name]._defaults
    overrides = {"*e*": {"lr": 0.5 * defaults["lr"]}, "seven": {"weight_decay": 0.2},
                 "cube": {"lr": 3 * defaults["lr"], "betas": (0.5, 0.9)}
                 if "betas" in defaults else {"lr": 3 * defaults["lr"]}}
    arguments = dict(overrides=overrides, lr=lambda step: 0.01 / step,
                     weight_decay=0.01)
    ours, twin, expected = run_both(name, arguments, params, 25, rng, clip_and_scale)
    assert_dict_bitwise_equal(params, expected, name)
    assert_same_state(ours, twin, name)


def nonfinite_grads(rng, params):
    """make_grads, with a NaN or an infinity in one gradient on some calls."""
    grads = make_grads(rng, params)
    choice = rng.integers(4)
    if choice < 2:
        grads["n1003"] = grads["n1003"].copy()
        grads["n1003"][rng.integers(1003)] = [np.nan, np.inf][choice]
    return grads


@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
@pytest.mark.parametrize("name", list(optim.OPTIMIZERS))
def test_skipped_steps_bit_for_bit(name, dtype):
    rng = np.random.default_rng(5)
    params = make_params(rng, dtype)
    ours, twin, expected = run_both(name, dict(skip_nonfinite=True), params, 40, rng,
                                    lambda step: {"max_grad_norm": 2.0} if step % 2 else {},
                                    nonfinite_grads)
    assert 5 < ours.skipped_steps < 35
    assert_dict_bitwise_equal(params, expected, name)
    assert_same_state(ours, twin, name)


@pytest.mark.skipif(not THREADED, reason="serial build (FASTOPT_THREADS=0)")
@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
@pytest.mark.parametrize("name", list(optim.OPTIMIZERS))
def test_bit_for_bit_when_every_step_is_split_between_threads(name, dtype, simd):
    """Threshold 0: every step and every reduction pass split between 2 or 3 threads, the
    boundaries falling inside tiny tensors and between groups; the norm too is bit-identical."""
    for threads in (2, 3):
        with thread_settings(threads, 0, False):
            rng = np.random.default_rng(threads)
            params = make_params(rng, dtype)
            params.update({f"small{i}": rng.standard_normal(i % 37 + 1).astype(dtype)
                           for i in range(40)})
            arguments = dict(overrides={"small1*": {"lr": 0.002}})
            ours, twin, expected = run_both(name, arguments, params, 12, rng, clip_and_scale)
            assert_dict_bitwise_equal(params, expected, f"{name} {threads}")
            assert_same_state(ours, twin, name)


@pytest.mark.skipif(not THREADED, reason="serial build (FASTOPT_THREADS=0)")
@pytest.mark.parametrize("name", ["AdamW", "SGD", "NAdam"])
def test_large_arrays_on_the_pool(name, simd):
    rng = np.random.default_rng(99)
    params = {"big": rng.standard_normal(300_007).astype(np.float32),
              "odd": rng.standard_normal((257, 129)), "tail": rng.standard_normal(3)}
    params["odd"] = params["odd"].astype(np.float32)
    params["tail"] = params["tail"].astype(np.float32)
    with thread_settings(2, fastopt.build_info()["parallel_threshold_ps"], False):
        ours, twin, expected = run_both(name, dict(momentum=0.9) if name == "SGD" else {},
                                        params, 6, rng, clip_and_scale)
    assert_dict_bitwise_equal(params, expected, name)


def test_every_key_in_one_compiled_call():
    """Groups of keys with different hyperparameters still run as one plan: a plan with one
    group per pattern combination, reused from step to step."""
    rng = np.random.default_rng(0)
    params = {"w1": rng.standard_normal(10), "b1": rng.standard_normal(3),
              "w2": rng.standard_normal(10), "b2": rng.standard_normal(3)}
    opt = optim.AdamW(overrides={"b*": {"weight_decay": 0.0}, "w2": {"lr": 0.1}})
    opt.update(params, {k: rng.standard_normal(v.shape) for k, v in params.items()})
    plan = opt._core.plan
    assert plan.groups == (0, 1, 2, 1) and plan.n_groups == 3
    opt.update(params, {k: rng.standard_normal(v.shape) for k, v in params.items()})
    assert opt._core.plan is plan


@pytest.mark.parametrize("name", list(optim.OPTIMIZERS))
def test_in_place_and_state_layout(name):
    """params are updated in place (the very arrays, also views), the state arrays have the
    parameter's shape, dtype and flat order, and the state names are torch's."""
    rng = np.random.default_rng(2)
    params = make_params(rng, np.float32)
    ids = {key: (id(p), p.__array_interface__["data"][0]) for key, p in params.items()}
    opt = optim.OPTIMIZERS[name]()
    opt.update(params, make_grads(rng, params))
    assert {key: (id(p), p.__array_interface__["data"][0]) for key, p in params.items()} == ids
    for state_name, arrays in opt.state.items():
        for key, array in arrays.items():
            assert array.shape == params[key].shape and array.dtype == np.float32
            assert array.flags.c_contiguous or array.flags.f_contiguous
    twin = twins.OPTIMIZERS[name]()
    assert tuple(opt.state) == twin.state_names(list(params))
