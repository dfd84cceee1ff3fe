"""The registry: C kernels (states, named coefficients, dtypes) read at import, optimizer classes
registered by defining them, and Plan.step's reasons for declining a step."""
import numpy as np
import pytest

import fastopt
import fastopt.reference as reference
from fastopt import _kernels
from fastopt.optimizers import OPTIMIZERS, Optimizer
from fastopt.testing import assert_bitwise_equal


def test_every_registered_optimizer_fits_its_c_kernel_and_has_a_twin():
    assert list(OPTIMIZERS) == ["SGD", "Momentum", "Nesterov", "AdaGrad", "RMSprop", "Adam"]
    for name, cls in OPTIMIZERS.items():
        kernel = _kernels.KERNELS[cls._kernel]
        assert kernel.n_states == len(cls._state_names), name
        assert len(cls()._coefficients(1)) == len(kernel.coefficient_names), name
        assert getattr(fastopt, name) is cls and name in fastopt.__all__
        assert name in reference.__all__ and hasattr(getattr(reference, name), "update")


def test_c_registry_as_python_sees_it():
    adam = _kernels.KERNELS["adam"]
    assert (adam.n_states, adam.coefficient_names) == (
        2, ("one_minus_beta1", "one_minus_beta2", "lr_t", "epsilon"))
    assert _kernels.KERNELS["sgd"].coefficient_names == ("lr",)
    assert _kernels.KERNELS["traffic2"] == (adam.id + 3, 2, ())
    assert _kernels.DTYPES == (np.dtype(np.float32), np.dtype(np.float64))


def test_a_class_naming_a_kernel_registers_itself_and_is_checked(monkeypatch):
    monkeypatch.setattr(fastopt.optimizers, "OPTIMIZERS", dict(OPTIMIZERS))
    registry = fastopt.optimizers.OPTIMIZERS

    class Plain(Optimizer):
        _kernel = "sgd"
        _hyperparameters = ("lr",)
        lr = fastopt.optimizers._Hyperparameter(0.0)

        def __init__(self, lr=0.25):
            super().__init__(lr=lr)

        def _coefficients(self, step):
            return (self._lr,)

    assert registry["Plain"] is Plain
    params = {"w": np.ones(5)}
    Plain().update(params, {"w": np.ones(5)})
    assert_bitwise_equal(params["w"], np.full(5, 0.75))

    class Unlisted(Optimizer, register=False):
        _kernel = "sgd"

    class _Private(Optimizer):
        _kernel = "sgd"

    assert "Unlisted" not in registry and "_Private" not in registry
    with pytest.raises(TypeError, match=r"Unknown._kernel = 'lion' is not a kernel of the C "
                                        r"registry \(sgd, momentum"):
        class Unknown(Optimizer):
            _kernel = "lion"
    with pytest.raises(TypeError, match=r"TwoStates names 2 state arrays \('m', 'v'\), but "
                                        r"kernel 'momentum' has 1"):
        class TwoStates(Optimizer):
            _kernel = "momentum"
            _state_names = ("m", "v")
    with pytest.raises(TypeError, match="an optimizer named Plain is already registered"):
        class Plain(Optimizer):  # noqa: F811
            _kernel = "sgd"


def test_a_plan_takes_exactly_its_kernels_coefficients():
    params, grads = {"w": np.zeros(4)}, {"w": np.ones(4)}
    plan = _kernels.Plan("nesterov", ("w",), [params["w"]], [(np.zeros(4),)], ("v",))
    for coefficients in ((0.9, 0.1, 0.81), (0.9, 0.1, 0.81, 0.19, 0.0)):
        with pytest.raises(ValueError, match=f"this kernel takes 4 coefficients, got "
                                             f"{len(coefficients)}"):
            plan.step(params, grads, coefficients)
    assert_bitwise_equal(params["w"], np.zeros(4))


def test_plan_step_says_why_it_declined_and_changes_nothing():
    buffer = np.zeros(40)
    params = {"a": buffer[:10], "b": np.zeros(6)}
    grads = {"a": np.ones(10), "b": np.ones(6)}
    plan = _kernels.Plan("sgd", ("a", "b"), [params["a"], params["b"]], [(), ()])
    assert plan.overlap is None
    cases = [
        (params, [grads["a"]], _kernels.DECLINED_STRUCTURE, None),
        (params, {"a": grads["a"], "c": grads["b"]}, _kernels.DECLINED_GRAD, 1),
        (dict(params, b=np.zeros(6)), grads, _kernels.DECLINED_PARAM, 1),
        (params, dict(grads, b=np.ones(6, dtype=np.float32)), _kernels.DECLINED_GRAD, 1),
        (params, dict(grads, a=np.ones(11)[:10].reshape(2, 5)), _kernels.DECLINED_GRAD, 0),
        (params, dict(grads, b=buffer[4:10]), _kernels.DECLINED_OVERLAP, 1),
    ]
    for p, g, reason, index in cases:
        assert plan.step(p, g, (1.0,)) == reason
        if index is not None:
            assert plan.declined_index == index
        assert not buffer.any() and not params["b"].any()
    assert plan.written_name(plan.overlapping_index) == "params['a']"
    # A strided gradient interleaved with a parameter's elements shares no memory: it runs.
    interleaved = np.zeros(40)
    params_strided = {"a": interleaved[0::2]}
    plan = _kernels.Plan("sgd", ("a",), [params_strided["a"]], [()])
    interleaved[1::2] = 1.0
    assert plan.step(params_strided, {"a": interleaved[1::2]}, (0.5,)) == _kernels.STEP_RAN
    assert_bitwise_equal(params_strided["a"], np.full(20, -0.5))


def test_plan_reports_written_arrays_that_overlap():
    buffer = np.zeros(20)
    plan = _kernels.Plan("momentum", ("p", "q"), [buffer[:10], buffer[5:15]],
                         [(np.zeros(10),), (np.zeros(10),)], ("v",))
    assert plan.overlap == ("params['p']", "params['q']")
    assert plan.step({"p": buffer[:10], "q": buffer[5:15]},
                     {"p": np.ones(10), "q": np.ones(10)}, (0.9, 0.1)) == \
        _kernels.DECLINED_NOT_READY
    assert not buffer.any()
    assert plan.written_name(3) == "optimizer state v['q']"
