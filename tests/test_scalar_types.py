"""NumPy-scalar hyperparameters (issue H, item 10): the reference keeps a NumPy scalar's dtype
(NEP 50), so its coefficients and, where the scalar is wider than the array, its element
operations change; fastopt must compute the same bits or refuse with a TypeError."""
import os
import sys

import numpy as np
import pytest

import fastopt
import fastopt.reference as reference
from fastopt import OPTIMIZERS
from fastopt.testing import assert_dict_bitwise_equal, assert_state_bitwise_equal

# The shared helpers of test_optimizers.py, also under --import-mode=importlib (the wheel checks
# and cibuildwheel), where the tests folder is not on sys.path.
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from test_optimizers import (THREADS, copy_params, make_grads, make_params,
                             non_default_hyperparameters, thread_settings)
from test_optimizers import run_both as run_both_with_rng

NAMES = list(OPTIMIZERS)


def as_type(hyperparameters, kind, only=None):
    """hyperparameters with every value (or only the named one) converted by kind."""
    return {name: kind(value) if only in (None, name) else value
            for name, value in hyperparameters.items()}


def run_both(name, hyperparameters, params, steps, seed=0):
    """steps updates of fastopt and the reference from the same hyperparameter objects."""
    return run_both_with_rng(name, hyperparameters, params, steps, np.random.default_rng(seed))


# (kind of scalar, dtypes of the arrays it keeps the reference's element operations in)
SCALARS = {
    "float32": (np.float32, [np.float32, np.float64]),
    "float16": (np.float16, [np.float32, np.float64]),
    "float64": (np.float64, [np.float64]),
    "int64 learning rate": (None, [np.float64]),
}


@pytest.mark.parametrize("scalar", list(SCALARS))
@pytest.mark.parametrize("name", NAMES)
def test_numpy_scalar_hyperparameters_give_the_reference_bits(name, scalar, simd):
    kind, dtypes = SCALARS[scalar]
    base = non_default_hyperparameters(OPTIMIZERS[name])
    if kind is None:  # an integer learning rate, the other hyperparameters Python floats
        variants = [dict(base, lr=np.int64(2))]
    else:
        variants = [as_type(base, kind)] + [as_type(base, kind, only) for only in base]
    for dtype in dtypes:
        for hyperparameters in variants:
            params = make_params(np.random.default_rng(1), dtype)
            ours, theirs, expected = run_both(name, hyperparameters, params, 20)
            label = f"{name} {np.dtype(dtype)} {hyperparameters}"
            assert_dict_bitwise_equal(params, expected, label)
            assert_state_bitwise_equal(ours, theirs)


@pytest.mark.parametrize("threads", THREADS)
def test_adam_float32_scalars_on_float32_and_float64_arrays_in_one_dict(simd, threads):
    """lr_t is a float32 then: the float32 arrays' last line runs in float32, the float64
    arrays' in float64; with 2 threads every step is split (threshold 0)."""
    rng = np.random.default_rng(3)
    params = {**{f"a{i}": rng.standard_normal(n).astype(np.float32)
                 for i, n in enumerate((1, 7, 1003, 4099))},
              **{f"b{i}": rng.standard_normal(n) for i, n in enumerate((1, 7, 1003))}}
    hyperparameters = as_type({"lr": 0.01, "beta1": 0.8, "beta2": 0.99}, np.float32)
    with thread_settings(threads, 0, False):
        ours, theirs, expected = run_both("Adam", hyperparameters, params, 25)
    assert_dict_bitwise_equal(params, expected)
    assert_state_bitwise_equal(ours, theirs)


def test_adam_float64_learning_rate_on_float32_arrays_is_the_default_case():
    """lr_t is a float64 in the reference whatever lr is: a numpy.float64 lr changes nothing."""
    params = make_params(np.random.default_rng(2), np.float32)
    ours, theirs, expected = run_both("Adam", {"lr": np.float64(0.003)}, params, 10)
    assert_dict_bitwise_equal(params, expected)
    assert_state_bitwise_equal(ours, theirs)


@pytest.mark.parametrize("name", NAMES)
def test_float64_scalars_on_float32_arrays_are_refused_before_anything_changes(name):
    """The reference computes every element in float64 then (and for Momentum even turns the
    state into float64); fastopt's float32 kernels do not, so it says so."""
    cls = OPTIMIZERS[name]
    hyperparameters = as_type(non_default_hyperparameters(cls), np.float64)
    if name == "Adam":
        hyperparameters["lr"] = float(hyperparameters["lr"])
    params = {"w": np.linspace(-1, 1, 9, dtype=np.float32)}
    grads = {"w": np.full(9, 0.5, dtype=np.float32)}
    opt = cls(**hyperparameters)
    for _ in range(2):  # the first update() (no state yet), then with state
        before = params["w"].copy()
        with pytest.raises(TypeError, match=r"is a NumPy scalar wider than params\['w'\] "
                                            r"\(float32\).*Python float"):
            opt.update(params, grads)
        assert np.array_equal(params["w"], before) and opt.state_dict()["step"] == 0
    # As Python floats, the same values run.
    for hyperparameter, value in hyperparameters.items():
        setattr(opt, hyperparameter, float(value))
    opt.update(params, grads)
    assert opt.state_dict()["step"] == 1


@pytest.mark.parametrize("name", NAMES)
def test_changing_a_hyperparameter_type_between_steps(name, simd):
    """Python floats, then NumPy float32 scalars, then Python floats again: the kernel follows
    (the plan is rebuilt when a type changes)."""
    cls = OPTIMIZERS[name]
    base = non_default_hyperparameters(cls)
    rng = np.random.default_rng(4)
    params = make_params(rng, np.float32)
    expected = copy_params(params)
    ours, theirs = cls(**base), getattr(reference, name)(**base)
    for phase, kind in enumerate((float, np.float32, float)):
        for hyperparameter, value in base.items():
            setattr(ours, hyperparameter, kind(value))
            setattr(theirs, hyperparameter, kind(value))
        for _ in range(5):
            grads = make_grads(rng, params)
            ours.update(params, grads)
            theirs.update(expected, grads)
        assert_dict_bitwise_equal(params, expected, f"{name} phase {phase}")
        assert_state_bitwise_equal(ours, theirs)


def test_hyperparameters_keep_their_numpy_type_and_wider_ones_are_refused():
    opt = fastopt.Adam(lr=np.float32(0.01), beta1=np.int64(0))
    assert type(opt.lr) is np.float32 and type(opt.beta1) is np.float64
    assert type(fastopt.SGD(lr=np.float32(1)).state_dict()["hyperparameters"]["lr"]) is np.float32
    if np.dtype(np.longdouble).itemsize <= 8:
        pytest.skip("numpy.longdouble is float64 on this platform")
    with pytest.raises(TypeError, match=r"lr is a numpy\.(float128|longdouble) scalar"):
        fastopt.SGD(lr=np.longdouble(0.01))
