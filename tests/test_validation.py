"""Bad input: the exact exception and message, and nothing modified - not a parameter, not a
state element, not the step counter - even when the bad entry is the last key, and whether the
bad call is the first update() or comes after good ones (when a cached plan exists)."""
import copy
import pickle
import re
import sys
import threading

import numpy as np
import pytest

import fastopt
import fastopt.reference as reference
from fastopt import _kernels
from fastopt.optimizers import OPTIMIZERS
from fastopt.testing import assert_bitwise_equal

NAMES = list(OPTIMIZERS)


def good_inputs(dtype=np.float64):
    rng = np.random.default_rng(0)
    params = {"W1": rng.standard_normal((4, 3)).astype(dtype),
              "b1": rng.standard_normal(3).astype(dtype),
              "W2": rng.standard_normal((3, 2)).astype(dtype),
              "last": rng.standard_normal(5).astype(dtype)}
    grads = {key: rng.standard_normal(p.shape).astype(dtype) for key, p in params.items()}
    return params, grads


def snapshot(opt, params):
    return copy.deepcopy(opt.state_dict()), {key: np.copy(p) for key, p in params.items()
                                             if isinstance(p, np.ndarray)}


def assert_unchanged(opt, params, before):
    state_before, params_before = before
    state_after = opt.state_dict()
    assert state_after["step"] == state_before["step"]
    assert (state_after["state"] is None) == (state_before["state"] is None)
    for name, arrays in (state_before["state"] or {}).items():
        for key, array in arrays.items():
            assert_bitwise_equal(state_after["state"][name][key], array, f"{name}[{key!r}]")
    for key, array in params_before.items():
        assert_bitwise_equal(params[key], array, f"params[{key!r}]")


def bad_last_value(value):
    def corrupt(params, grads):
        grads["last"] = value
    return corrupt


# name: (how to corrupt good inputs, exception type, message pattern)
BAD_INPUTS = {
    "missing grad": (lambda p, g: g.pop("last"), ValueError,
                     r"grads has no entry for the params \['last'\]"),
    "extra grad": (lambda p, g: g.update(extra=np.zeros(1)), ValueError,
                   r"grads has entries that are not in params: \['extra'\]"),
    "grad shape": (bad_last_value(np.zeros(6)), ValueError,
                   r"grads\['last'\] has shape \(6,\) but params\['last'\] has shape \(5,\)"),
    "grad transposed shape": (lambda p, g: g.update(W2=g["W2"].T.copy()), ValueError,
                              r"grads\['W2'\] has shape \(2, 3\) but params\['W2'\]"),
    "grad is a list": (bad_last_value([0.0] * 5), TypeError,
                       r"grads\['last'\] must be a numpy.ndarray, got a list"),
    "grad is None": (bad_last_value(None), TypeError,
                     r"grads\['last'\] must be a numpy.ndarray, got a NoneType"),
    "param is a list": (lambda p, g: p.update(last=[0.0] * 5), TypeError,
                        r"params\['last'\] must be a numpy.ndarray, got a list"),
    "integer param": (lambda p, g: (p.update(last=np.arange(5)), g.update(last=np.arange(5))),
                      TypeError, r"params\['last'\] has dtype int64; fastopt updates float32"),
    "bool param": (lambda p, g: (p.update(last=np.ones(5, bool)), g.update(last=np.ones(5, bool))),
                   TypeError, r"params\['last'\] has dtype bool"),
    "complex param": (lambda p, g: (p.update(last=np.ones(5, complex)),
                                    g.update(last=np.ones(5, complex))),
                      TypeError, r"params\['last'\] has dtype complex128"),
    "float16 param": (lambda p, g: (p.update(last=np.ones(5, np.float16)),
                                    g.update(last=np.ones(5, np.float16))),
                      TypeError, r"params\['last'\] has dtype float16"),
    "big-endian param": (lambda p, g: (p.update(last=np.ones(5, ">f8")),
                                       g.update(last=np.ones(5, ">f8"))),
                         TypeError, r"params\['last'\] has dtype >f8"),
    "grad dtype differs": (bad_last_value(np.zeros(5, np.float32)), TypeError,
                           r"grads\['last'\] has dtype float32 but params\['last'\] has dtype "
                           r"float64; convert the gradient"),
    "integer grad": (bad_last_value(np.zeros(5, np.int64)), TypeError,
                     r"grads\['last'\] has dtype int64 but params\['last'\] has dtype float64"),
    "read-only param": (lambda p, g: p["last"].setflags(write=False), ValueError,
                        r"params\['last'\] is read-only"),
    "grad aliases its param": (lambda p, g: g.update(last=p["last"]), ValueError,
                               r"params\['last'\] and grads\['last'\] share memory"),
    "grad aliases another param": (lambda p, g: g.update(last=p["W1"].reshape(-1)[:5]),
                                   ValueError, r"params\['W1'\] and grads\['last'\] share memory"),
    "params overlap": (lambda p, g: (p.update(last=p["W1"].reshape(-1)[3:8])),
                       ValueError, r"params\['W1'\] and params\['last'\] share memory"),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("when", ["first update", "after good updates"])
def test_bad_input_raises_and_modifies_nothing(name, case, when):
    corrupt, error, message = BAD_INPUTS[case]
    opt = OPTIMIZERS[name]()
    params, grads = good_inputs()
    if when == "after good updates":
        for _ in range(2):
            opt.update(params, grads)
    corrupt(params, grads)
    before = snapshot(opt, params)
    with pytest.raises(error, match=message):
        opt.update(params, grads)
    assert_unchanged(opt, params, before)
    if when == "first update" and OPTIMIZERS[name]._state_names:
        assert getattr(opt, OPTIMIZERS[name]._state_names[0]) is None


@pytest.mark.parametrize("name", NAMES)
def test_not_a_dict(name):
    opt = OPTIMIZERS[name]()
    params, grads = good_inputs()
    with pytest.raises(TypeError, match=r"params must be a dict of numpy arrays, got a list"):
        opt.update(list(params.values()), grads)
    with pytest.raises(TypeError, match=r"grads must be a dict of numpy arrays, got a tuple"):
        opt.update(params, tuple(grads.values()))


@pytest.mark.parametrize("name", [n for n in NAMES if OPTIMIZERS[n]._state_names])
def test_changed_structure_after_state_exists(name):
    opt = OPTIMIZERS[name]()
    params, grads = good_inputs()
    opt.update(params, grads)

    new_key = dict(params, extra=np.zeros(2))
    new_grads = dict(grads, extra=np.zeros(2))
    before = snapshot(opt, params)
    with pytest.raises(ValueError, match=r"params\['extra'\] has no optimizer state.*"
                                         r"call reset\(\) first .* or use a new optimizer"):
        opt.update(new_key, new_grads)
    assert_unchanged(opt, params, before)

    reshaped = dict(params, last=np.zeros(6))
    with pytest.raises(ValueError, match=r"params\['last'\] has shape \(6,\) and dtype float64, "
                                         r"but the optimizer state"):
        opt.update(reshaped, dict(grads, last=np.zeros(6)))
    assert_unchanged(opt, params, before)

    # the same array object reshaped in place: the cached plan must notice
    params["W1"].shape = (3, 4)
    with pytest.raises(ValueError, match=r"params\['W1'\] has shape \(3, 4\)"):
        opt.update(params, dict(grads, W1=np.zeros((3, 4))))
    params["W1"].shape = (4, 3)
    assert_unchanged(opt, params, before)


@pytest.mark.parametrize("name", [n for n in NAMES if OPTIMIZERS[n]._state_names])
def test_state_attributes_cannot_be_assigned_and_say_what_to_do(name):
    """The textbook's habits (opt.m = None, opt.iter = 0) raise AttributeError naming reset()
    and load_state_dict(), and change nothing."""
    opt = OPTIMIZERS[name]()
    params, grads = good_inputs()
    opt.update(params, grads)
    before = snapshot(opt, params)
    attributes = list(OPTIMIZERS[name]._state_names) + (["iter"] if name == "Adam" else [])
    for attribute in attributes:
        for value in (None, 0, {}):
            with pytest.raises(AttributeError, match=rf"{name}\.{attribute} cannot be assigned"
                                                     r".*call reset\(\).*load_state_dict\(\)"):
                setattr(opt, attribute, value)
    assert_unchanged(opt, params, before)


@pytest.mark.parametrize("name", NAMES)
def test_reset_starts_afresh_with_new_keys(name):
    """After reset() the optimizer behaves as a new one with the same hyperparameters: new
    keys are accepted, and the numbers are the reference's from step 1."""
    hyperparameters = {"lr": 0.05}
    opt = OPTIMIZERS[name](**hyperparameters)
    params, grads = good_inputs()
    for _ in range(3):
        opt.update(params, grads)
    opt.reset()
    assert opt.state_dict()["step"] == 0 and opt.state_dict()["state"] is None
    assert opt.lr == 0.05
    new_params = {"extra": np.linspace(-1, 1, 7), **good_inputs()[0]}
    new_grads = {"extra": np.linspace(1, 2, 7), **grads}
    expected = copy.deepcopy(new_params)
    ref = getattr(reference, name)(**hyperparameters)
    for _ in range(2):
        opt.update(new_params, new_grads)
        ref.update(expected, new_grads)
    for key in expected:
        assert_bitwise_equal(new_params[key], expected[key], key)


@pytest.mark.parametrize("name", NAMES)
def test_param_reshaped_in_place_between_steps(name):
    """The same array object with a new shape: stateless SGD follows it like the reference;
    optimizers with state refuse, since their state has the old shape."""
    rng = np.random.default_rng(2)
    params = {"w": rng.standard_normal((4, 6))}
    expected = {"w": params["w"].copy()}
    opt, ref = OPTIMIZERS[name](), getattr(reference, name)()
    opt.update(params, {"w": np.ones((4, 6))})
    ref.update(expected, {"w": np.ones((4, 6))})
    params["w"].shape = expected["w"].shape = (6, 4)
    grads = {"w": rng.standard_normal((6, 4))}
    if OPTIMIZERS[name]._state_names:
        with pytest.raises(ValueError, match=r"params\['w'\] has shape \(6, 4\)"):
            opt.update(params, grads)
    else:
        opt.update(params, grads)
        ref.update(expected, grads)
        assert_bitwise_equal(params["w"], expected["w"])


@pytest.mark.parametrize("name", NAMES)
def test_param_made_read_only_after_first_step(name):
    opt = OPTIMIZERS[name]()
    params, grads = good_inputs()
    opt.update(params, grads)
    params["b1"].setflags(write=False)
    before = snapshot(opt, params)
    with pytest.raises(ValueError, match=r"params\['b1'\] is read-only"):
        opt.update(params, grads)
    assert_unchanged(opt, params, before)


def test_subset_of_keys_after_state_exists_updates_only_those():
    params, grads = good_inputs()
    opt, ref = fastopt.Adam(), reference.Adam()
    expected = {key: p.copy() for key, p in params.items()}
    opt.update(params, grads)
    ref.update(expected, grads)
    subset = {"W1": params["W1"]}
    opt.update(subset, {"W1": grads["W1"]})
    ref.update({"W1": expected["W1"]}, {"W1": grads["W1"]})
    for key in params:
        assert_bitwise_equal(params[key], expected[key], key)


# ---- hyperparameters ---------------------------------------------------------------------------

HYPERPARAMETER_RANGES = {
    "lr": [(-0.1, ValueError, r"lr must be a finite number >= 0, got -0.1"),
           (float("nan"), ValueError, r"lr must be a finite number >= 0, got nan"),
           (float("inf"), ValueError, r"lr must be a finite number >= 0, got inf"),
           ("0.1", TypeError, r"lr must be a real number, got str"),
           (True, TypeError, r"lr must be a real number, got bool")],
    "momentum": [(1.0, ValueError, r"momentum must be in \[0, 1\), got 1.0"),
                 (-0.5, ValueError, r"momentum must be in \[0, 1\), got -0.5")],
    "decay_rate": [(1.5, ValueError, r"decay_rate must be in \[0, 1\), got 1.5"),
                   (float("nan"), ValueError, r"decay_rate must be in \[0, 1\), got nan")],
    "beta1": [(1.0, ValueError, r"beta1 must be in \[0, 1\), got 1.0")],
    "beta2": [(-1e-9, ValueError, r"beta2 must be in \[0, 1\), got -1e-09"),
              (None, TypeError, r"beta2 must be a real number, got NoneType")],
}


@pytest.mark.parametrize("name", NAMES)
def test_constructor_rejects_hyperparameters_out_of_range(name):
    cls = OPTIMIZERS[name]
    for hyperparameter in cls._hyperparameters:
        for value, error, message in HYPERPARAMETER_RANGES[hyperparameter]:
            with pytest.raises(error, match=message):
                cls(**{hyperparameter: value})
            opt = cls()
            with pytest.raises(error, match=message):
                setattr(opt, hyperparameter, value)
            assert getattr(opt, hyperparameter) == getattr(cls(), hyperparameter)


def invalid_values(descriptor):
    """Values a hyperparameter with this range must reject: (value, exception, message)."""
    message = re.escape(f"must be {descriptor.valid}, got")
    values = [(descriptor.low - 1.0, ValueError, message), (np.nextafter(descriptor.low, -1),
                                                             ValueError, message),
              (float("nan"), ValueError, message), (float("inf"), ValueError, message),
              (-float("inf"), ValueError, message), (True, TypeError, "must be a real number"),
              ("0.1", TypeError, "must be a real number"),
              (None, TypeError, "must be a real number"), (1j, TypeError, "must be a real number")]
    if descriptor.high != float("inf"):
        values += [(descriptor.high, ValueError, message),
                   (descriptor.high + 1.0, ValueError, message)]
    return values


@pytest.mark.parametrize("name", NAMES)
def test_every_hyperparameter_rejects_what_its_range_excludes(name):
    """Generated from each hyperparameter's declared range, for every registered optimizer:
    values outside it raise and change nothing; the ends inside it are accepted."""
    cls = OPTIMIZERS[name]
    for hyperparameter in cls._hyperparameters:
        descriptor = getattr(cls, hyperparameter)
        for value, error, message in invalid_values(descriptor):
            with pytest.raises(error, match=f"{hyperparameter} {message}"):
                cls(**{hyperparameter: value})
            opt = cls()
            with pytest.raises(error, match=f"{hyperparameter} {message}"):
                setattr(opt, hyperparameter, value)
            assert getattr(opt, hyperparameter) == getattr(cls(), hyperparameter)
        top = 1e300 if descriptor.high == float("inf") else np.nextafter(descriptor.high, 0)
        for value in (descriptor.low, top, np.float32(descriptor.low)):
            assert getattr(cls(**{hyperparameter: value}), hyperparameter) == float(value)


def test_edge_hyperparameters_accepted():
    fastopt.SGD(lr=0)
    fastopt.Momentum(momentum=0.0)
    fastopt.Adam(lr=np.float32(0.5), beta1=0, beta2=np.float64(0.5))


# ---- state_dict --------------------------------------------------------------------------------

@pytest.mark.parametrize("name", [n for n in NAMES if OPTIMIZERS[n]._state_names])
def test_load_state_dict_rejects_bad_input_and_changes_nothing(name):
    params, grads = good_inputs()
    opt = OPTIMIZERS[name]()
    opt.update(params, grads)
    good = opt.state_dict()
    other = "SGD" if name != "SGD" else "Adam"
    state_name = OPTIMIZERS[name]._state_names[0]
    cases = [
        ([], TypeError, r"state_dict must be a dict, got a list"),
        (dict(good, optimizer=other), ValueError, rf"state_dict is for '{other}', not '{name}'"),
        (dict(good, version=99), ValueError, r"state_dict version 99 is not supported"),
        ({k: v for k, v in good.items() if k != "step"}, ValueError,
         r"state_dict must have exactly the keys"),
        (dict(good, step=-1), ValueError, r"state_dict\['step'\] must be an integer >= 0"),
        (dict(good, hyperparameters=dict(good["hyperparameters"], lr=-1.0)), ValueError,
         r"lr must be a finite number >= 0"),
        (dict(good, state={state_name: {"W1": "nope"}} if len(OPTIMIZERS[name]._state_names) == 1
              else dict(good["state"], **{state_name: {"W1": [1.0]}})),
         (TypeError, ValueError), r"state_dict\['state'\]"),
    ]
    opt.lr = 0.125
    before = snapshot(opt, params)
    for bad, error, message in cases:
        with pytest.raises(error, match=message):
            opt.load_state_dict(bad)
        assert opt.lr == 0.125
        assert_unchanged(opt, params, before)


def test_state_dict_survives_pickle_of_the_dict_itself():
    params, grads = good_inputs(np.float32)
    opt = fastopt.RMSprop()
    opt.update(params, grads)
    restored = fastopt.RMSprop()
    restored.load_state_dict(pickle.loads(pickle.dumps(opt.state_dict())))
    assert_bitwise_equal(restored.h["W1"], opt.h["W1"])
    assert restored.h["W1"].dtype == np.float32


# ---- build and dispatch controls ---------------------------------------------------------------

def test_set_simd_rejects_unknown_and_unavailable_paths():
    with pytest.raises(ValueError, match=r"unknown SIMD path 'sse9'"):
        fastopt.set_simd("sse9")
    unavailable = [p for p in ("baseline", "avx2", "avx512") if p not in fastopt.available_simd()]
    for path in unavailable:
        with pytest.raises(ValueError, match=rf"SIMD path '{path}' is not available here"):
            fastopt.set_simd(path)
    assert "baseline" in fastopt.available_simd()


@pytest.mark.parametrize("bad", [0, -1, 1.5, True, "2"])
def test_set_num_threads_rejects_bad_values(bad):
    before = fastopt.get_num_threads()
    with pytest.raises(ValueError, match=r"number of threads must be an integer >= 1"):
        fastopt.set_num_threads(bad)
    assert fastopt.get_num_threads() == before


def test_build_info():
    info = fastopt.build_info()
    assert set(info) >= {"version", "compiler", "flags", "simd", "simd_compiled",
                         "simd_available", "threads_enabled", "threads", "parallel_threshold_ps"}
    assert info["version"] == fastopt.__version__
    assert info["simd"] in info["simd_available"]
    assert not any("march=native" in flag or "fast-math" in flag for flag in info["flags"])
    if info["compiler"] != "msvc" and info["flags"]:
        assert "-ffp-contract=off" in info["flags"]


@pytest.mark.skipif(not fastopt.build_info()["threads_enabled"], reason="serial build")
def test_omp_num_threads_is_the_default(run_python):
    for threads in ("1", "2", "3"):
        result = run_python("-c", "import fastopt; print(fastopt.get_num_threads())",
                            extra_env={"OMP_NUM_THREADS": threads, "FASTOPT_NUM_THREADS": ""},
                            check=True)
        assert result.stdout.strip() == threads


def test_fastopt_simd_environment_variable(run_python):
    for path in fastopt.available_simd():
        result = run_python("-c", "import fastopt; print(fastopt.build_info()['simd'])",
                            extra_env={"FASTOPT_SIMD": path}, check=True)
        assert result.stdout.strip() == path
    result = run_python("-c", "import fastopt", extra_env={"FASTOPT_SIMD": "sse9"})
    assert result.returncode != 0
    assert "FASTOPT_SIMD=sse9: unknown SIMD path 'sse9'" in result.stderr


def test_a_plan_runs_one_step_at_a_time_and_is_built_once():
    """While one thread is inside a step (here still reading its coefficients, which runs
    Python code) a second step on the same plan raises instead of rebinding the pointers under
    it; and a plan's __init__ cannot run again over a plan that exists."""
    params, grads = {"w": np.zeros(1000)}, {"w": np.ones(1000)}
    plan = _kernels.Plan("sgd", ("w",), [params["w"]], [()])
    entered, release = threading.Event(), threading.Event()

    class SlowCoefficients:
        def __len__(self):
            return 1

        def __getitem__(self, index):
            entered.set()
            release.wait(10)
            return 0.1

    results = []
    worker = threading.Thread(
        target=lambda: results.append(plan.step(params, grads, SlowCoefficients())))
    worker.start()
    try:
        assert entered.wait(10)
        with pytest.raises(RuntimeError, match=r"is running update\(\) in another thread"):
            plan.step(params, grads, (0.1,))
    finally:
        release.set()
        worker.join()
    assert results == [_kernels.STEP_RAN]
    assert_bitwise_equal(params["w"], np.full(1000, -0.1))
    with pytest.raises(RuntimeError, match="initialised once"):
        plan.__init__("sgd", ("w",), [params["w"]], [()])
    assert plan.step(params, grads, (0.1,)) == _kernels.STEP_RAN
    assert_bitwise_equal(params["w"], np.full(1000, -0.2))
