"""fastopt.optim's API contract: clear errors naming the argument or key, and nothing modified
when a call fails (parameters, state, scalar state, steps, skipped_steps), for every class of
optim.OPTIMIZERS; skip_nonfinite and the returned norm; per-key overrides and assignments
between steps; state_dict, load_state_dict, pickle and reset; one optimizer in two threads.
The numbers are checked against the NumPy twins (fastopt.reference.optim), bit for bit."""
import copy
import inspect
import math
import pickle
import sys
import threading

import numpy as np
import pytest

import fastopt
from fastopt import optim
from fastopt.reference import optim as twins
from fastopt.testing import assert_bitwise_equal, assert_dict_bitwise_equal

NAMES = list(optim.OPTIMIZERS)

# Options that give each class all its state arrays (and NAdam's scalar state) in the tests
# below; a class added later runs with its defaults.
OPTIONS = {"SGD": dict(momentum=0.9), "Adam": dict(amsgrad=True), "AdamW": dict(amsgrad=True),
           "RMSprop": dict(centered=True, momentum=0.5), "Adagrad": dict(lr_decay=0.01),
           "NAdam": dict(weight_decay=0.01), "RAdam": dict(weight_decay=0.01)}


# ---- helpers ------------------------------------------------------------------------------------

def make_params(dtype=np.float64, seed=0):
    rng = np.random.default_rng(seed)
    shapes = {"W1": (4, 3), "b1": (3,), "W2": (3, 2), "b2": (2,), "emb": (5, 2), "last": (5,)}
    return {key: rng.standard_normal(shape).astype(dtype) for key, shape in shapes.items()}


def make_grads(params, seed):
    rng = np.random.default_rng(1000 + seed)
    return {key: rng.standard_normal(p.shape).astype(p.dtype) for key, p in params.items()}


def copy_params(params):
    return {key: np.copy(p) for key, p in params.items()}


def nonfinite(grads, value=np.nan, key="b1"):
    grads = dict(grads)
    grads[key] = grads[key].copy()
    grads[key][1] = value
    return grads


class Schedule:
    """A picklable lr schedule whose next call can be made to fail (armed), as a buggy or
    diverging schedule would."""

    def __init__(self, base):
        self.base = base
        self.armed = None

    def __call__(self, step):
        if self.armed is not None:
            if isinstance(self.armed, Exception):
                raise self.armed
            return self.armed
        return self.base * (1.0 + 0.05 * step)


class ScheduleError(Exception):
    pass


def pair(name, **arguments):
    """(fastopt.optim optimizer, its twin) built with the same arguments."""
    return optim.OPTIMIZERS[name](**arguments), twins.OPTIMIZERS[name](**arguments)


def snapshot(opt, params):
    # state_dict() copies the arrays and the dicts; a schedule stays the very object
    return opt.state_dict(), copy_params(params)


def assert_unchanged(opt, params, before):
    """Nothing the optimizer keeps or the caller's parameters hold has changed."""
    saved, saved_params = before
    now = opt.state_dict()
    for field in ("step", "skipped_steps", "hyperparameters", "overrides", "skip_nonfinite",
                  "scalars"):
        assert now[field] == saved[field], field
    assert (now["state"] is None) == (saved["state"] is None)
    for name, arrays in (saved["state"] or {}).items():
        assert_dict_bitwise_equal(now["state"][name], arrays, name)
    assert_dict_bitwise_equal({key: params[key] for key in saved_params}, saved_params, "params")


def assert_same_as_twin(opt, twin, params, expected, name=""):
    assert_dict_bitwise_equal(params, expected, f"{name} params")
    assert set(opt.state) == set(twin.state or {}), name
    for state_name, arrays in (twin.state or {}).items():
        assert_dict_bitwise_equal(dict(opt.state[state_name]), arrays, f"{name} {state_name}")
    assert opt.steps == twin.step and opt.skipped_steps == twin.skipped_steps
    if isinstance(twin, twins.NAdam) and twin.mu_product:
        assert opt.state_dict()["scalars"] == {"mu_product": twin.mu_product}


def assert_same_norm(norm, expected):
    assert norm == expected or (math.isnan(norm) and math.isnan(expected)), (norm, expected)


# ---- 1. constructor validation -------------------------------------------------------------------

# How each hyperparameter of the family is checked (torch's rules; betas at most 1 for Lion).
KINDS = {"lr": "number", "eps": "number", "weight_decay": "number", "momentum": "number",
         "lr_decay": "number", "initial_accumulator_value": "number", "alpha": "number",
         "momentum_decay": "number", "dampening": "any finite", "rho": "unit interval",
         "betas": "betas", "amsgrad": "flag", "nesterov": "flag", "maximize": "flag",
         "centered": "flag", "decoupled_weight_decay": "flag"}

NOT_A_NUMBER = [("0.1", "str"), (None, "NoneType"), (True, "bool"), ([0.1], "list"),
                (np.bool_(False), "numpy.bool")]


def invalid_values(cls, name):
    """[(value, exception type, message pattern after the name)] the argument must reject."""
    kind = KINDS[name]
    if kind == "flag":
        return [(value, TypeError, rf" must be True or False, got a {shown}")
                for value, shown in [(1, "int"), (0, "int"), (None, "NoneType"),
                                     ("True", "str"), (1.0, "float")]]
    if kind == "betas":
        lion = cls._defaults is optim.Lion._defaults
        cases = [(value, TypeError, r" must be a pair \(beta1, beta2\)")
                 for value in (0.9, (0.9,), (0.9, 0.99, 0.999), "ab", None, {0.9, 0.99})]
        cases += [((-0.1, 0.9), ValueError, r"\[0\] must be in \[0, 1"),
                  ((0.9, 1.01), ValueError, r"\[1\] must be in \[0, 1"),
                  ((math.nan, 0.9), ValueError, r"\[0\] must be in \[0, 1"),
                  ((0.9, math.inf), ValueError, r"\[1\] must be in \[0, 1"),
                  ((0.9, "0.99"), TypeError, r"\[1\] must be a real number, got a str"),
                  ((True, 0.9), TypeError, r"\[0\] must be a real number, got a bool")]
        if not lion:
            cases += [((0.9, 1.0), ValueError, r"\[1\] must be in \[0, 1\), got 1.0"),
                      ((1.0, 0.5), ValueError, r"\[0\] must be in \[0, 1\), got 1.0")]
        return cases
    cases = [(value, TypeError, rf" must be a real number, got a {shown}")
             for value, shown in NOT_A_NUMBER]
    cases += [(value, ValueError, r" must be ") for value in
              (math.nan, math.inf, -math.inf, np.float64(np.nan), np.float32(np.inf))]
    if kind != "any finite":
        cases += [(-1e-3, ValueError, r" must be .*, got -0.001"),
                  (np.float32(-1.0), ValueError, r" must be .*, got -1.0")]
    if kind == "unit interval":
        cases += [(1.0001, ValueError, r" must be in \[0, 1\], got 1.0001")]
    return cases


CONSTRUCTOR_CASES = [(name, argument, i) for name, cls in optim.OPTIMIZERS.items()
                     for argument in cls._defaults
                     for i in range(len(invalid_values(cls, argument)))]


def test_every_hyperparameter_has_a_known_kind():
    """A new hyperparameter needs its validation rule written down here."""
    for name, cls in optim.OPTIMIZERS.items():
        unknown = set(cls._defaults) - set(KINDS)
        assert not unknown, f"{name}: add {unknown} to KINDS"


@pytest.mark.parametrize("name", NAMES)
def test_constructor_signature_is_torchs(name):
    """The positional arguments are _defaults' names, in order, with those defaults; overrides
    and skip_nonfinite are keyword-only; a default-built optimizer reads its defaults back."""
    cls = optim.OPTIMIZERS[name]
    parameters = list(inspect.signature(cls).parameters.values())
    positional = [p for p in parameters if p.kind is p.POSITIONAL_OR_KEYWORD]
    assert [p.name for p in positional] == list(cls._defaults)
    assert [p.default for p in positional] == list(cls._defaults.values())
    assert [(p.name, p.default) for p in parameters if p.kind is p.KEYWORD_ONLY] == [
        ("overrides", None), ("skip_nonfinite", False)]
    opt = cls()
    for argument, default in cls._defaults.items():
        assert getattr(opt, argument) == default
    assert opt.overrides == {} and opt.skip_nonfinite is False
    assert opt.steps == 0 and opt.skipped_steps == 0 and dict(opt.state) == {}


@pytest.mark.parametrize("name, argument, case", CONSTRUCTOR_CASES)
def test_invalid_hyperparameter_is_rejected_everywhere(name, argument, case):
    """The constructor, an override and an assignment reject the value, naming the argument
    (overrides[pattern][argument] in an override); the assignment leaves the old value."""
    cls = optim.OPTIMIZERS[name]
    value, error, message = invalid_values(cls, argument)[case]
    escaped = argument
    with pytest.raises(error, match=rf"^{escaped}{message}"):
        cls(**{argument: value})
    if argument not in cls._structural:
        with pytest.raises(error, match=rf"^overrides\['b\*'\]\['{escaped}'\]{message}"):
            cls(overrides={"b*": {argument: value}})
    opt = cls()
    with pytest.raises(error, match=rf"^{escaped}{message}"):
        setattr(opt, argument, value)
    assert getattr(opt, argument) == cls._defaults[argument]


@pytest.mark.parametrize("name", NAMES)
def test_edge_values_are_accepted_and_numpy_scalars_become_floats(name):
    cls = optim.OPTIMIZERS[name]
    edges = {"number": [0, 0.0, np.float32(0.5), 3], "any finite": [-0.5, 0.0, np.float64(0.3)],
             "unit interval": [0.0, 1.0, np.float32(0.5)], "flag": [True, np.bool_(True)],
             "betas": [(0.0, 0.0), [0.5, np.float32(0.25)]]}
    if name == "Lion":
        edges["betas"] += [(1.0, 1.0)]
    for argument in cls._defaults:
        for value in edges[KINDS[argument]]:
            if name == "SGD" and argument == "nesterov":
                opt = cls(nesterov=value, momentum=0.9)
            else:
                opt = cls(**{argument: value})
            stored = getattr(opt, argument)
            if KINDS[argument] == "betas":
                assert type(stored) is tuple and all(type(b) is float for b in stored)
                assert stored == tuple(float(b) for b in value)
            elif KINDS[argument] == "flag":
                assert stored is True
            else:
                assert type(stored) is float and stored == float(value), (argument, value)


@pytest.mark.parametrize("name", NAMES)
def test_bad_overrides_and_skip_nonfinite(name):
    cls = optim.OPTIMIZERS[name]
    with pytest.raises(TypeError, match=r"^overrides must be a dict \{pattern: "
                                        r"\{hyperparameter: value\}\}, got a list"):
        cls(overrides=[("b*", {"lr": 0.1})])
    with pytest.raises(TypeError, match=r"^overrides\['b\*'\] must be a dict of "
                                        r"hyperparameters, got a float"):
        cls(overrides={"b*": 0.1})
    with pytest.raises(ValueError, match=rf"^overrides\['emb'\]: {name} has no hyperparameter "
                                         r"'foo' \(it has lr, "):
        cls(overrides={"b*": {"lr": 0.1}, "emb": {"foo": 1.0}})
    with pytest.raises(ValueError, match=rf"^overrides\[\('layer', 0\)\]: {name} has no "
                                         r"hyperparameter 'skip_nonfinite'"):
        cls(overrides={("layer", 0): {"skip_nonfinite": True}})
    for structural in cls._structural:
        with pytest.raises(ValueError, match=rf"^overrides\['b\*'\]: {structural} decides the "
                                             r"optimizer's state arrays"):
            cls(overrides={"b*": {structural: cls._defaults[structural]}})
    for bad, shown in [(1, "int"), ("yes", "str"), (None, "NoneType")]:
        with pytest.raises(TypeError, match=rf"^skip_nonfinite must be True or False, got a "
                                            rf"{shown}"):
            cls(skip_nonfinite=bad)
    opt = cls()
    with pytest.raises(TypeError, match=r"^skip_nonfinite must be True or False"):
        opt.skip_nonfinite = 1
    assert opt.skip_nonfinite is False


@pytest.mark.parametrize("name, structural", [("Adam", "amsgrad"), ("AdamW", "amsgrad"),
                                              ("RMSprop", "centered")])
def test_structural_hyperparameters_cannot_be_overridden(name, structural):
    cls = optim.OPTIMIZERS[name]
    for value in (True, False):
        with pytest.raises(ValueError, match=rf"^overrides\['b1'\]: {structural} decides the "
                                             r"optimizer's state arrays and is the same for "
                                             r"every key; set it in the constructor"):
            cls(overrides={"b1": {structural: value}})
    opt = cls()
    with pytest.raises(ValueError, match=rf"overrides\['b1'\]: {structural} decides"):
        opt.overrides = {"b1": {structural: True}}
    assert opt.overrides == {}


def test_lion_has_no_maximize():
    with pytest.raises(TypeError, match="maximize"):
        optim.Lion(maximize=True)
    with pytest.raises(ValueError, match=r"^overrides\['b'\]: Lion has no hyperparameter "
                                         r"'maximize'"):
        optim.Lion(overrides={"b": {"maximize": True}})
    with pytest.raises(AttributeError, match=r"Lion has no hyperparameter 'maximize'"):
        optim.Lion().maximize = True


def test_sgd_nesterov_needs_momentum_and_no_dampening():
    message = r"Nesterov momentum requires a momentum > 0 and zero dampening"
    for arguments in (dict(nesterov=True), dict(nesterov=True, momentum=0.0),
                      dict(nesterov=True, momentum=0.9, dampening=0.1),
                      dict(nesterov=True, momentum=0.9, dampening=-0.1)):
        with pytest.raises(ValueError, match=rf"^{message}"):
            optim.SGD(**arguments)
    assert optim.SGD(nesterov=True, momentum=0.9).nesterov is True
    for arguments, overrides in [
            (dict(momentum=0.9), {"b*": {"nesterov": True, "dampening": 0.5}}),
            (dict(momentum=0.9, nesterov=True), {"b*": {"momentum": 0.0}}),
            (dict(momentum=0.9, nesterov=True), {"b*": {"dampening": 0.5}}),
            (dict(momentum=0.9, dampening=0.5), {"b*": {"nesterov": True}})]:
        with pytest.raises(ValueError, match=rf"^overrides\['b\*'\]: {message}"):
            optim.SGD(**arguments, overrides=overrides)
    opt = optim.SGD(momentum=0.9, nesterov=True)
    for argument, value in (("dampening", 0.5), ("momentum", 0.0)):
        with pytest.raises(ValueError, match=rf"^{message}"):
            setattr(opt, argument, value)
    assert (opt.momentum, opt.dampening, opt.nesterov) == (0.9, 0.0, True)


def test_sgd_assignment_checks_the_combination_with_the_overrides():
    """SGD(momentum=0.9, dampening=0.5, overrides={"b*": {"nesterov": True}}) raises; so must
    reaching the same hyperparameters by assignment."""
    opt = optim.SGD(momentum=0.9, overrides={"b*": {"nesterov": True}})
    params = make_params()
    opt.update(params, make_grads(params, 0))
    with pytest.raises(ValueError, match=r"overrides\['b\*'\]: Nesterov momentum requires"):
        opt.dampening = 0.5
    assert opt.dampening == 0.0


# ---- 2. update() with bad input changes nothing --------------------------------------------------

def _do(*done):
    """For a lambda that corrupts by side effect: no update() arguments."""
    return {}


def _set(key, value):
    def corrupt(params, grads, schedule):
        grads[key] = value(params, grads) if callable(value) else value
        return {}
    return corrupt


def _read_only(params, grads, schedule):
    params["last"] = params["last"].view()  # the very memory, made read-only through a view
    params["last"].setflags(write=False)
    return {}


def _arguments(**arguments):
    return lambda params, grads, schedule: arguments


def _arm(value):
    def corrupt(params, grads, schedule):
        schedule.armed = value
        return {}
    return corrupt


# case: (corrupt(params, grads, schedule) -> update() keyword arguments, error, message)
BAD_UPDATES = {
    "missing grad": (lambda p, g, s: _do(g.pop("last")), ValueError,
                     r"^grads has no entry for the params \['last'\]"),
    "extra grad": (lambda p, g, s: _do(g.update(extra=np.zeros(1))), ValueError,
                   r"^grads has entries that are not in params: \['extra'\]"),
    "grad dtype": (_set("last", lambda p, g: g["last"].astype(np.float32)), TypeError,
                   r"^grads\['last'\] has dtype float32 but params\['last'\] has dtype float64"),
    "grad shape": (_set("last", np.zeros(6)), ValueError,
                   r"^grads\['last'\] has shape \(6,\) but params\['last'\] has shape \(5,\)"),
    "grad transposed": (_set("W2", lambda p, g: g["W2"].T.copy()), ValueError,
                        r"^grads\['W2'\] has shape \(2, 3\) but params\['W2'\] has shape"),
    "grad None": (_set("last", None), TypeError,
                  r"^grads\['last'\] must be a numpy.ndarray, got a NoneType"),
    "read-only param": (_read_only, ValueError, r"^params\['last'\] is read-only"),
    "grad is its param": (_set("last", lambda p, g: p["last"]), ValueError,
                          r"^params\['last'\] and grads\['last'\] share memory"),
    "grad overlaps another param": (_set("last", lambda p, g: p["W1"].reshape(-1)[4:9]),
                                    ValueError, r"^params\['W1'\] and grads\['last'\] share"),
    "grad_scale str": (_arguments(grad_scale="2"), TypeError,
                       r"^grad_scale must be a real number, got a str"),
    "grad_scale bool": (_arguments(grad_scale=True), TypeError,
                        r"^grad_scale must be a real number, got a bool"),
    "grad_scale nan": (_arguments(grad_scale=math.nan), ValueError, r"^grad_scale must be a "
                                                                    r"finite number"),
    "grad_scale inf": (_arguments(grad_scale=np.float32(np.inf)), ValueError,
                       r"^grad_scale must be a finite number"),
    "max_grad_norm 0": (_arguments(max_grad_norm=0.0), ValueError,
                        r"^max_grad_norm must be > 0, got 0.0"),
    "max_grad_norm negative": (_arguments(max_grad_norm=-1.0), ValueError,
                               r"^max_grad_norm must be .*got -1.0"),
    "max_grad_norm nan": (_arguments(max_grad_norm=math.nan), ValueError,
                          r"^max_grad_norm must be a finite number"),
    "max_grad_norm inf": (_arguments(max_grad_norm=math.inf), ValueError,
                          r"^max_grad_norm must be a finite number"),
    "max_grad_norm str": (_arguments(max_grad_norm="1"), TypeError,
                          r"^max_grad_norm must be a real number, got a str"),
    "schedule raises": (_arm(ScheduleError("the schedule broke")), ScheduleError,
                        r"^the schedule broke$"),
    "schedule negative": (_arm(-0.5), ValueError, r"^the lr schedule .* returned -0.5 for step "
                                                  r"{step}: lr must be a finite number >= 0"),
    "schedule nan": (_arm(math.nan), ValueError, r"^the lr schedule .* returned nan for step "
                                                 r"{step}: lr must be"),
    "schedule inf": (_arm(np.float64(np.inf)), ValueError, r"returned np.float64\(inf\) for "
                                                           r"step {step}: lr must be"),
    "schedule str": (_arm("0.1"), TypeError, r"^the lr schedule .* returned '0.1' for step "
                                             r"{step}: lr must be a real number, got a str"),
    "new key after the state": (lambda p, g, s: _do(p.update(new=np.zeros(3)),
                                                    g.update(new=np.ones(3))),
                                ValueError, r"^params\['new'\] has no optimizer state"),
}

WHEN = ["first update", "after steps", "after a skipped step"]


@pytest.mark.parametrize("case", list(BAD_UPDATES))
@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("when", WHEN)
def test_bad_update_raises_and_changes_nothing(name, case, when):
    """The error names the key or argument; params, state, scalar state, steps and
    skipped_steps are untouched; the next good call continues bit for bit as a twin that never
    saw the bad call. The first update has no state yet; after steps the fast path runs a
    cached plan; the skipped step makes skipped_steps nonzero and computes the norm."""
    corrupt, error, message = BAD_UPDATES[case]
    if case == "new key after the state" and when == "first update":
        pytest.skip("a new key is fine at the first update")
    schedule = Schedule(optim.OPTIMIZERS[name]._defaults["lr"])
    skip = when == "after a skipped step"
    opt, twin = pair(name, **OPTIONS.get(name, {}), lr=schedule, skip_nonfinite=skip,
                     overrides={"b*": {"weight_decay": 0.0}, "emb": {"lr": 0.5 * schedule.base}})
    params = make_params()
    expected = copy_params(params)
    if when != "first update":
        for step in range(3):
            grads = make_grads(params, step)
            opt.update(params, grads)
            twin.update(expected, grads)
    if skip:
        grads = nonfinite(make_grads(params, 3))
        assert math.isnan(opt.update(params, grads))
        twin.update(expected, grads)
        assert opt.skipped_steps == 1
    bad_params, bad_grads = dict(params), make_grads(params, 50)
    arguments = corrupt(bad_params, bad_grads, schedule)
    before = snapshot(opt, params)
    with pytest.raises(error, match=message.format(step=opt.steps + 1)):
        opt.update(bad_params, bad_grads, **arguments)
    schedule.armed = None
    assert_unchanged(opt, params, before)
    if when == "first update":
        assert dict(opt.state) == {} and opt.state_dict()["state"] is None
    grads = make_grads(params, 51)
    assert_same_norm(opt.update(params, grads, max_grad_norm=2.0),
                     twin.update(expected, grads, max_grad_norm=2.0))
    assert_same_as_twin(opt, twin, params, expected, name)


@pytest.mark.parametrize("name", NAMES)
def test_a_failing_schedule_in_an_override_fails_the_whole_step(name):
    """Only emb's schedule fails, at step 3: the other groups' steps do not run either, and
    after it recovers the run is that of a twin that never failed."""
    schedule = Schedule(optim.OPTIMIZERS[name]._defaults["lr"])
    opt, twin = pair(name, **OPTIONS.get(name, {}), overrides={"emb": {"lr": schedule}})
    params = make_params()
    expected = copy_params(params)
    for step in range(5):
        grads = make_grads(params, step)
        if step == 2:
            schedule.armed = -1.0
            before = snapshot(opt, params)
            with pytest.raises(ValueError, match=r"returned -1.0 for step 3: lr must be"):
                opt.update(params, grads)
            assert_unchanged(opt, params, before)
            schedule.armed = None
        opt.update(params, grads)
        twin.update(expected, grads)
    assert opt.steps == 5
    assert_same_as_twin(opt, twin, params, expected, name)


# ---- 3. skip_nonfinite and the norm ------------------------------------------------------------

@pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning")  # in the twin
@pytest.mark.parametrize("bad", ["nan", "inf", "-inf", "overflowing norm"])
@pytest.mark.parametrize("name", NAMES)
def test_skip_nonfinite_skips_the_step_and_counts_it(name, bad):
    opt, twin = pair(name, **OPTIONS.get(name, {}), skip_nonfinite=True)
    params = make_params()
    expected = copy_params(params)
    for step in range(6):
        grads = make_grads(params, step)
        if step == 3:
            if bad == "overflowing norm":  # every element finite, the sum of squares not
                grads = nonfinite(grads, 1e200)
            else:
                grads = nonfinite(grads, float(bad))
            before = snapshot(opt, params)
            norm = opt.update(params, grads, grad_scale=0.5)
            assert math.isnan(norm) if bad == "nan" else norm == math.inf
            assert_same_norm(norm, twin.update(expected, grads, grad_scale=0.5))
            assert opt.skipped_steps == 1 and opt.steps == 3
            before[0]["skipped_steps"] += 1
            assert_unchanged(opt, params, before)
            continue
        norm = opt.update(params, grads)
        assert_same_norm(norm, twin.update(expected, grads))
        assert norm == fastopt.global_norm(grads)  # computed for the check even unclipped
    assert (opt.steps, opt.skipped_steps) == (5, 1)
    assert_same_as_twin(opt, twin, params, expected, name)


@pytest.mark.parametrize("name", NAMES)
def test_a_skipped_first_step_creates_no_state(name):
    opt, twin = pair(name, skip_nonfinite=True)
    params = make_params()
    expected = copy_params(params)
    before = snapshot(opt, params)
    grads = nonfinite(make_grads(params, 0), np.inf, key="last")
    assert opt.update(params, grads) == math.inf
    twin.update(expected, grads)
    assert opt.skipped_steps == 1 and opt.steps == 0 and dict(opt.state) == {}
    before[0]["skipped_steps"] = 1
    assert_unchanged(opt, params, before)
    for step in range(1, 3):
        grads = make_grads(params, step)
        opt.update(params, grads)
        twin.update(expected, grads)
    assert_same_as_twin(opt, twin, params, expected, name)


@pytest.mark.parametrize("max_grad_norm", [None, 1.0])
@pytest.mark.parametrize("name", NAMES)
def test_without_skip_nonfinite_a_nan_propagates_as_in_the_twin(name, max_grad_norm):
    opt, twin = pair(name, **OPTIONS.get(name, {}))
    params = make_params()
    expected = copy_params(params)
    for step in range(4):
        grads = make_grads(params, step)
        if step == 2:
            grads = nonfinite(grads, np.nan)
        norm = opt.update(params, grads, max_grad_norm=max_grad_norm)
        assert_same_norm(norm, twin.update(expected, grads, max_grad_norm=max_grad_norm))
        if step == 2:
            assert norm is None if max_grad_norm is None else math.isnan(norm)
    assert np.isnan(params["b1"]).any()
    if max_grad_norm is not None:  # the NaN clip coefficient reaches every key
        assert all(np.isnan(p).all() for p in params.values())
    assert opt.skipped_steps == 0 and opt.steps == 4
    assert_same_as_twin(opt, twin, params, expected, name)


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("grad_scale", [None, -0.5, 3.0, np.float32(0.125)])
@pytest.mark.parametrize("name", NAMES)
def test_max_grad_norm_returns_the_global_norm_of_the_scaled_gradients(name, grad_scale,
                                                                       dtype):
    opt, twin = pair(name, **OPTIONS.get(name, {}))
    params = make_params(dtype)
    expected = copy_params(params)
    scale = 1.0 if grad_scale is None else abs(float(grad_scale))
    for step, max_grad_norm in enumerate([0.5, 1e6, 2.0, 1e-3]):  # clipping bites, or not
        grads = make_grads(params, step)
        norm = opt.update(params, grads, grad_scale=grad_scale, max_grad_norm=max_grad_norm)
        assert type(norm) is float
        assert norm == fastopt.global_norm(grads) * scale
        assert norm == twin.update(expected, grads, grad_scale=grad_scale,
                                   max_grad_norm=max_grad_norm)
    assert opt.update(params, make_grads(params, 9)) is None  # no norm unless computed
    twin.update(expected, make_grads(params, 9))
    assert_same_as_twin(opt, twin, params, expected, name)


# ---- 4. overrides and assignments between steps -----------------------------------------------

def test_the_issues_example_overrides_only_the_matching_keys():
    arguments = dict(lr=1e-3, weight_decay=0.1)
    overrides = {"b*": {"weight_decay": 0.0}, "emb": {"lr": 1e-4}}
    opt, twin = pair("AdamW", **arguments, overrides=overrides)
    plain = twins.AdamW(**arguments)
    params = make_params()
    expected, unoverridden = copy_params(params), copy_params(params)
    for step in range(4):
        grads = make_grads(params, step)
        opt.update(params, grads)
        twin.update(expected, grads)
        plain.update(unoverridden, grads)
    assert_same_as_twin(opt, twin, params, expected, "AdamW")
    for key in params:
        same = np.array_equal(params[key], unoverridden[key])
        assert same == (key not in ("b1", "b2", "emb")), key


@pytest.mark.parametrize("order", ["general first", "specific first"])
def test_a_later_pattern_wins_and_patterns_merge(order):
    general = ("*", {"lr": 0.5, "weight_decay": 0.5})
    specific = ("w*", {"lr": 0.25})
    overrides = dict([general, specific] if order == "general first" else [specific, general])
    opt = optim.SGD(lr=1.0, overrides=overrides)
    params = {"w1": np.ones(3), "b": np.ones(2)}
    opt.update(params, {"w1": np.ones(3), "b": np.ones(2)})
    # g + weight_decay*p = 1.5 everywhere (the general pattern's decay reaches w1 either way)
    w_lr = 0.25 if order == "general first" else 0.5
    assert_bitwise_equal(params["w1"], np.full(3, 1.0 - w_lr * 1.5))
    assert_bitwise_equal(params["b"], np.full(2, 1.0 - 0.5 * 1.5))


def test_non_string_keys_are_matched_by_equality_only():
    """An int or tuple pattern selects the equal key; a string pattern's wildcard never
    selects a non-string key (the last pattern, "*1", would win over the int pattern on key 1
    if it did) and the string "1" is not the int 1."""
    overrides = {1: {"lr": 0.5}, ("layer", 0): {"lr": 0.25}, "*1": {"lr": 0.125}}
    opt, twin = pair("SGD", lr=1.0, overrides=overrides)
    params = {1: np.ones(3), ("layer", 0): np.ones(2), "1": np.ones(4), "x1": np.ones(1),
              ("layer", 1): np.ones(2), 2: np.ones(1)}
    expected = copy_params(params)
    grads = {key: np.ones_like(p) for key, p in params.items()}
    opt.update(params, grads)
    twin.update(expected, grads)
    lrs = {1: 0.5, ("layer", 0): 0.25, "1": 0.125, "x1": 0.125, ("layer", 1): 1.0, 2: 1.0}
    for key, lr in lrs.items():
        assert_bitwise_equal(params[key], np.full(params[key].shape, 1.0 - lr), repr(key))
    assert_same_as_twin(opt, twin, params, expected)


def test_the_overrides_are_copied_and_read_only():
    user = {"b*": {"lr": 0.5}}
    opt = optim.SGD(lr=1.0, overrides=user)
    user["b*"]["lr"] = 0.0
    user["emb"] = {"lr": 0.0}
    assert opt.overrides == {"b*": {"lr": 0.5}}
    with pytest.raises(TypeError):
        opt.overrides["b*"]["lr"] = 0.0
    with pytest.raises(TypeError):
        opt.overrides["emb"] = {"lr": 0.0}
    params = {"b1": np.ones(2), "emb": np.ones(2)}
    opt.update(params, {"b1": np.ones(2), "emb": np.ones(2)})
    assert_bitwise_equal(params["b1"], np.full(2, 0.5))
    assert_bitwise_equal(params["emb"], np.zeros(2))


@pytest.mark.parametrize("name", NAMES)
def test_assigning_overrides_and_hyperparameters_between_steps(name):
    """opt.overrides = {...} regroups the keys, opt.lr = ... and opt.weight_decay = ... take
    effect at the next step (a number replaced by a schedule too), as in a twin given the same
    changes; invalid assignments raise and change nothing."""
    base = optim.OPTIMIZERS[name]._defaults["lr"]
    opt, twin = pair(name, **OPTIONS.get(name, {}), overrides={"b*": {"lr": 3 * base}})
    params = make_params()
    expected = copy_params(params)
    changes = {
        2: ("overrides", {"W*": {"weight_decay": 0.05}, "b1": {"lr": 0.5 * base},
                          "emb": {"lr": Schedule(base)}}),
        4: ("lr", 2 * base),
        5: ("weight_decay", 0.02),
        6: ("lr", Schedule(0.5 * base)),
        7: ("overrides", {}),
    }
    for step in range(9):
        if step in changes:
            attribute, value = changes[step]
            setattr(opt, attribute, value)
            if attribute == "overrides":
                twin.overrides = value
            else:
                twin.hyperparameters[attribute] = value
            assert getattr(opt, attribute) == value
        if step == 3:
            for attribute, value, error in [("lr", -1.0, ValueError), ("lr", "x", TypeError),
                                            ("overrides", {"b1": {"lr": -1.0}}, ValueError),
                                            ("overrides", {"b1": {"nope": 1}}, ValueError),
                                            ("overrides", ["b1"], TypeError)]:
                before = snapshot(opt, params)
                with pytest.raises(error, match=r"^(overrides\['b1'\]|overrides|lr)"):
                    setattr(opt, attribute, value)
                assert_unchanged(opt, params, before)
        grads = make_grads(params, step)
        opt.update(params, grads)
        twin.update(expected, grads)
        assert_same_as_twin(opt, twin, params, expected, f"{name} step {step}")


def test_nadam_keeps_mu_product_per_key_when_overrides_regroup_the_keys():
    opt, twin = pair("NAdam", overrides={"b*": {"momentum_decay": 0.05}})
    params = make_params()
    expected = copy_params(params)
    for step in range(6):
        if step == 3:
            opt.overrides = {}
            twin.overrides = {}
        grads = make_grads(params, step)
        opt.update(params, grads)
        twin.update(expected, grads)
    assert opt.state_dict()["scalars"] == {"mu_product": twin.mu_product}
    assert_same_as_twin(opt, twin, params, expected, "NAdam")


# (class, constructor arguments, the assignment that would change the state arrays)
STATE_CHANGES = [
    ("SGD", {}, "momentum", 0.9),
    ("SGD", dict(momentum=0.9), "momentum", 0.0),
    ("SGD", {}, "overrides", {"b1": {"momentum": 0.9}}),
    ("SGD", dict(overrides={"b1": {"momentum": 0.9}}), "overrides", {}),
    ("RMSprop", {}, "momentum", 0.5),
    ("RMSprop", {}, "overrides", {"b*": {"momentum": 0.5}}),
    ("RMSprop", {}, "centered", True),
    ("RMSprop", dict(centered=True), "centered", False),
    ("Adam", {}, "amsgrad", True),
    ("AdamW", dict(amsgrad=True), "amsgrad", False),
]


@pytest.mark.parametrize("name, arguments, attribute, value", STATE_CHANGES)
def test_an_assignment_that_changes_the_state_arrays_after_the_first_update(name, arguments,
                                                                            attribute, value):
    """Before the first update it is taken (and the state follows); after it, ValueError and
    nothing changed, the run continuing as if never attempted; after reset() it is taken."""
    early = optim.OPTIMIZERS[name](**arguments)
    setattr(early, attribute, value)
    params = make_params()
    early.update(params, make_grads(params, 0))
    fresh = optim.OPTIMIZERS[name](**{**arguments, attribute: value})
    fresh_params = make_params()
    fresh.update(fresh_params, make_grads(fresh_params, 0))
    assert tuple(early.state) == tuple(fresh.state)
    assert_dict_bitwise_equal(params, fresh_params)

    opt, twin = pair(name, **arguments)
    params = make_params()
    expected = copy_params(params)
    for step in range(2):
        grads = make_grads(params, step)
        opt.update(params, grads)
        twin.update(expected, grads)
    before = snapshot(opt, params)
    with pytest.raises(ValueError, match=rf"^{name}: this change would change the optimizer's "
                                         r"state arrays .*call reset\(\) first"):
        setattr(opt, attribute, value)
    assert_unchanged(opt, params, before)
    grads = make_grads(params, 2)
    opt.update(params, grads)
    twin.update(expected, grads)
    assert_same_as_twin(opt, twin, params, expected, name)
    opt.reset()
    setattr(opt, attribute, value)
    assert getattr(opt, attribute) == value


def test_changes_that_keep_the_state_arrays_are_taken_after_the_first_update():
    opt, twin = pair("SGD", momentum=0.9, overrides={"b1": {"momentum": 0.0}})
    params = make_params()
    expected = copy_params(params)
    for step in range(4):
        if step == 2:  # b1 now gets momentum too: same arrays, b1's buffer starts at 0
            opt.overrides = {"b2": {"momentum": 0.5}}
            twin.overrides = {"b2": {"momentum": 0.5}}
        grads = make_grads(params, step)
        opt.update(params, grads)
        twin.update(expected, grads)
    assert_same_as_twin(opt, twin, params, expected, "SGD")


@pytest.mark.parametrize("name", NAMES)
def test_unknown_attributes_cannot_be_assigned_or_read(name):
    opt = optim.OPTIMIZERS[name]()
    params = make_params()
    opt.update(params, make_grads(params, 0))
    before = snapshot(opt, params)
    for attribute in ("foo", "learning_rate", "steps", "skipped_steps", "state", "_core2"):
        with pytest.raises(AttributeError, match=rf"^{name} has no hyperparameter "
                                                 rf"'{attribute}'"):
            setattr(opt, attribute, 0.1)
    with pytest.raises(AttributeError, match=r"has no attribute 'foo'"):
        opt.foo
    assert_unchanged(opt, params, before)
    assert opt.steps == 1


# ---- 5. state_dict, load_state_dict, pickle, reset -------------------------------------------

def trained(name, steps=5, seed=0):
    """An optimizer with overrides, a picklable schedule and one skipped step, after steps
    calls; and its params."""
    base = optim.OPTIMIZERS[name]._defaults["lr"]
    opt = optim.OPTIMIZERS[name](**OPTIONS.get(name, {}), skip_nonfinite=True,
                                 overrides={"b*": {"lr": 2 * base}, "emb": {"lr": Schedule(base)}})
    params = make_params(seed=seed)
    for step in range(steps):
        grads = make_grads(params, step)
        opt.update(params, nonfinite(grads) if step == 2 else grads)
    assert opt.skipped_steps == (steps > 2)
    return opt, params


@pytest.mark.parametrize("name", NAMES)
def test_resume_from_state_dict_and_pickle_bit_for_bit(name):
    opt, params = trained(name)
    saved = opt.state_dict()
    kept = copy.deepcopy(saved)
    blob = pickle.dumps(opt)
    saved_params = copy_params(params)
    assert saved["optimizer"] == f"optim.{name}" and saved["version"] == 1
    assert (saved["step"], saved["skipped_steps"]) == (4, 1)
    for step in range(5, 10):
        opt.update(params, make_grads(params, step), max_grad_norm=3.0)
    # the saved dict holds copies: the run went on without touching it
    for name_, arrays in kept["state"].items():
        assert_dict_bitwise_equal(saved["state"][name_], arrays, name_)
    resumed = {"load_state_dict": optim.OPTIMIZERS[name](),
               "pickle": pickle.loads(blob),
               "deepcopy of a loaded one": None,
               "load of a pickled dict": optim.OPTIMIZERS[name]()}
    resumed["load_state_dict"].load_state_dict(saved)
    resumed["deepcopy of a loaded one"] = copy.deepcopy(resumed["load_state_dict"])
    resumed["load of a pickled dict"].load_state_dict(pickle.loads(pickle.dumps(saved)))
    for how, other in resumed.items():
        assert type(other) is type(opt), how
        assert other.state_dict()["scalars"] == saved["scalars"], how
        assert (other.steps, other.skipped_steps) == (4, 1), how
        other_params = copy_params(saved_params)
        for step in range(5, 10):
            other.update(other_params, make_grads(other_params, step), max_grad_norm=3.0)
        assert_dict_bitwise_equal(other_params, params, f"{how} params")
        for state_name, arrays in opt.state.items():
            assert_dict_bitwise_equal(dict(other.state[state_name]), dict(arrays),
                                      f"{how} {state_name}")
        final = other.state_dict()
        for field in ("step", "skipped_steps", "scalars", "skip_nonfinite"):
            assert final[field] == opt.state_dict()[field], (how, field)
        assert other.overrides["b*"] == opt.overrides["b*"], how


def test_nadam_mu_product_round_trips():
    opt, twin = pair("NAdam", overrides={"b*": {"momentum_decay": 0.05}})
    params = make_params()
    expected = copy_params(params)
    for step in range(5):
        grads = make_grads(params, step)
        opt.update(params, grads)
        twin.update(expected, grads)
    saved = opt.state_dict()
    assert saved["scalars"] == {"mu_product": twin.mu_product}
    assert saved["scalars"]["mu_product"]["b1"] != saved["scalars"]["mu_product"]["W1"]
    assert all(type(v) is float for v in saved["scalars"]["mu_product"].values())
    for restored in (optim.NAdam(), pickle.loads(pickle.dumps(opt))):
        if not restored.steps:
            restored.load_state_dict(saved)
        assert restored.state_dict()["scalars"] == saved["scalars"]
        restored_params = copy_params(params)
        twin_copy = copy.deepcopy(twin)
        restored_expected = copy_params(expected)
        for step in range(5, 8):
            grads = make_grads(params, step)
            restored.update(restored_params, grads)
            twin_copy.update(restored_expected, grads)
        assert_same_as_twin(restored, twin_copy, restored_params, restored_expected, "NAdam")
    assert optim.NAdam().state_dict()["scalars"] is None
    assert optim.Adam().state_dict()["scalars"] is None


def _other_class(name):
    return NAMES[(NAMES.index(name) + 1) % len(NAMES)]


def _without(key):
    return lambda saved, name: {k: v for k, v in saved.items() if k != key}


def _with(**fields):
    return lambda saved, name: dict(saved, **fields)


def _hyperparameter(name_, value):
    return lambda saved, name: dict(saved, hyperparameters=dict(saved["hyperparameters"],
                                                                **{name_: value}))


def _drop_state_name(saved, name):
    state = dict(saved["state"])
    state.pop(next(iter(state)))
    return dict(saved, state=state)


def _integer_state(saved, name):
    first = next(iter(saved["state"]))
    arrays = dict(saved["state"][first], last=np.zeros(5, dtype=np.int64))
    return dict(saved, state=dict(saved["state"], **{first: arrays}))


# case: (make a bad dict from a good one, error, message)
BAD_STATE_DICTS = {
    "not a dict": (lambda saved, name: list(saved.items()), TypeError,
                   r"^state_dict must be a dict, got a list"),
    "another class": (lambda saved, name: trained(_other_class(name), 1)[0].state_dict(),
                      ValueError, r"^state_dict is for 'optim.\w+', not 'optim.{name}'"),
    "textbook Adam's": (lambda saved, name: fastopt.Adam().state_dict(), ValueError,
                        r"^state_dict must have exactly the keys"),
    "version 2": (_with(version=2), ValueError, r"^state_dict version 2 is not supported"),
    "version '1'": (_with(version="1"), ValueError, r"^state_dict version '1' is not"),
    "no scalars key": (_without("scalars"), ValueError, r"^state_dict must have exactly the "
                                                        r"keys"),
    "no state key": (_without("state"), ValueError, r"^state_dict must have exactly the keys"),
    "no step key": (_without("step"), ValueError, r"^state_dict must have exactly the keys"),
    "extra key": (_with(extra=1), ValueError, r"^state_dict must have exactly the keys"),
    "step -1": (_with(step=-1), ValueError, r"^state_dict\['step'\] must be an integer >= 0"),
    "step 1.5": (_with(step=1.5), ValueError, r"^state_dict\['step'\] must be an integer"),
    "step True": (_with(step=True), ValueError, r"^state_dict\['step'\] must be an integer"),
    "step '4'": (_with(step="4"), ValueError, r"^state_dict\['step'\] must be an integer"),
    "step 2**63": (_with(step=2**63), ValueError, r"^state_dict\['step'\] must be an integer"),
    "skipped -1": (_with(skipped_steps=-1), ValueError,
                   r"^state_dict\['skipped_steps'\] must be an integer >= 0"),
    "hyperparameter missing": (lambda saved, name: dict(saved, hyperparameters={
        k: v for k, v in saved["hyperparameters"].items() if k != "lr"}), ValueError,
        r"^state_dict\['hyperparameters'\] must have the keys"),
    "lr negative": (_hyperparameter("lr", -1.0), ValueError, r"^lr must be a finite number"),
    "weight_decay nan": (_hyperparameter("weight_decay", math.nan), ValueError,
                         r"^weight_decay must be"),
    "bad override": (_with(overrides={"b1": {"nope": 1.0}}), ValueError,
                     r"^overrides\['b1'\]: {name} has no hyperparameter 'nope'"),
    "skip_nonfinite 'yes'": (_with(skip_nonfinite="yes"), TypeError,
                             r"^skip_nonfinite must be True or False"),
    "a state name missing": (_drop_state_name, ValueError,
                             r"^state_dict\['state'\] must be None or a dict with the keys"),
    "an integer state array": (_integer_state, TypeError,
                               r"^state_dict\['state'\]\['\w+'\]\['last'\] must be a float32 or "
                               r"float64 or float16( or bfloat16)? numpy.ndarray"),
    "scalars for a class without": (_with(scalars={"mu_product": {}}), ValueError,
                                    r"keeps no scalar state|must have one float per key"),
}


@pytest.mark.parametrize("case", list(BAD_STATE_DICTS))
@pytest.mark.parametrize("name", NAMES)
def test_load_state_dict_rejects_bad_dicts_and_changes_nothing(name, case):
    make, error, message = BAD_STATE_DICTS[case]
    source, _ = trained(name)
    bad = make(source.state_dict(), name)
    opt, twin = pair(name, **OPTIONS.get(name, {}))
    params = make_params(seed=1)
    expected = copy_params(params)
    for step in range(2):
        grads = make_grads(params, step)
        opt.update(params, grads)
        twin.update(expected, grads)
    before = snapshot(opt, params)
    with pytest.raises(error, match=message.format(name=name)):
        opt.load_state_dict(bad)
    assert_unchanged(opt, params, before)
    grads = make_grads(params, 2)
    opt.update(params, grads)
    twin.update(expected, grads)
    assert_same_as_twin(opt, twin, params, expected, name)


def test_load_state_dict_rejects_bad_nadam_scalars():
    source, _ = trained("NAdam")
    saved = source.state_dict()
    keys = list(saved["scalars"]["mu_product"])
    for scalars, message in [
            ({"mu_product": {k: 0.5 for k in keys[1:]}}, r"must have one float per key"),
            ({"other": saved["scalars"]["mu_product"]}, r"^state_dict\['scalars'\] must be "),
            ({"mu_product": dict.fromkeys(keys, math.nan)},
             r"^state_dict\['scalars'\]\['mu_product'\]\['W1'\] must be a finite number")]:
        opt = optim.NAdam()
        with pytest.raises(ValueError, match=message):
            opt.load_state_dict(dict(saved, scalars=scalars))
        assert opt.state_dict()["scalars"] is None and opt.steps == 0


def test_load_state_dict_rejects_a_nadam_dict_with_state_but_no_scalars():
    source, _ = trained("NAdam")
    saved = source.state_dict()
    assert saved["state"] is not None
    opt = optim.NAdam()
    with pytest.raises(ValueError, match=r"state_dict\['scalars'\]"):
        opt.load_state_dict(dict(saved, scalars=None))
    assert opt.steps == 0


@pytest.mark.parametrize("name", NAMES)
def test_reset_forgets_state_steps_and_skipped_steps(name):
    opt, params = trained(name)
    hyperparameters = opt.state_dict()["hyperparameters"]
    opt.reset()
    assert (opt.steps, opt.skipped_steps, dict(opt.state)) == (0, 0, {})
    saved = opt.state_dict()
    assert saved["state"] is None and saved["scalars"] is None
    assert saved["hyperparameters"] == hyperparameters and "emb" in opt.overrides
    # other keys are now welcome, and the run is that of a new optimizer
    base = optim.OPTIMIZERS[name]._defaults["lr"]
    fresh = optim.OPTIMIZERS[name](**OPTIONS.get(name, {}), skip_nonfinite=True,
                                   overrides={"b*": {"lr": 2 * base},
                                              "emb": {"lr": Schedule(base)}})
    new_params = {"emb": np.ones((2, 2)), "b9": np.full(3, 0.5)}
    fresh_params = copy_params(new_params)
    for step in range(3):
        grads = make_grads(new_params, step)
        opt.update(new_params, grads)
        fresh.update(fresh_params, grads)
    assert_dict_bitwise_equal(new_params, fresh_params)
    assert opt.state_dict()["scalars"] == fresh.state_dict()["scalars"]
    assert opt.steps == 3


# ---- 6. one optimizer, two threads -------------------------------------------------------------

BUSY = r"running update\(\) in another thread"


class BlockingSchedule(Schedule):
    """A schedule that, at one step, signals and waits: the update is in progress meanwhile."""

    def __init__(self, base, block_at):
        super().__init__(base)
        self.block_at = block_at
        self.entered, self.leave = threading.Event(), threading.Event()

    def __call__(self, step):
        if step == self.block_at:
            self.entered.set()
            assert self.leave.wait(10)
        return super().__call__(step)


@pytest.mark.parametrize("block_at", [1, 3], ids=["first update", "cached plan"])
def test_a_second_call_while_an_update_runs_raises_and_changes_nothing(block_at):
    schedule = BlockingSchedule(1e-3, block_at)
    opt, twin = pair("AdamW", lr=schedule)
    params = make_params()
    expected = copy_params(params)
    grads = [make_grads(params, step) for step in range(4)]
    for step in range(block_at - 1):
        opt.update(params, grads[step])
    saved = opt.state_dict()
    worker = threading.Thread(target=opt.update, args=(params, grads[block_at - 1]))
    worker.start()
    try:
        assert schedule.entered.wait(10)
        for call in (lambda: opt.update(params, grads[block_at - 1]),
                     lambda: opt.update(params, grads[block_at - 1], max_grad_norm=1.0),
                     opt.reset, lambda: opt.load_state_dict(saved),
                     lambda: setattr(opt, "weight_decay", 0.5),
                     lambda: setattr(opt, "overrides", {"b*": {"weight_decay": 0.0}})):
            with pytest.raises(RuntimeError, match=BUSY):
                call()
    finally:
        schedule.leave.set()
        worker.join()
    assert opt.steps == block_at and opt.weight_decay == 1e-2 and opt.overrides == {}
    schedule.block_at = None
    for step in range(block_at):
        twin.update(expected, grads[step])
    grads_next = grads[block_at]
    opt.update(params, grads_next)
    twin.update(expected, grads_next)
    assert_same_as_twin(opt, twin, params, expected, "AdamW")


def test_one_optimizer_from_two_threads_loses_no_step():
    """Each call runs a whole step or raises RuntimeError having changed nothing: steps is the
    number of calls that returned, and the numbers those of that many sequential steps."""
    params = {"w": np.linspace(-1, 1, 10), "b": np.linspace(0, 1, 3)}
    grads = {"w": np.linspace(0.5, -0.5, 10), "b": np.full(3, 0.25)}
    opt = optim.NAdam(overrides={"b": {"lr": 0.01}}, skip_nonfinite=True)
    ran, refused = [0, 0], [0, 0]
    start = threading.Barrier(2)

    def work(me):
        start.wait()
        for _ in range(300):
            try:
                opt.update(params, grads)
                ran[me] += 1
            except RuntimeError as error:
                assert "running update() in another thread" in str(error)
                refused[me] += 1

    previous = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        workers = [threading.Thread(target=work, args=(me,)) for me in range(2)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
    finally:
        sys.setswitchinterval(previous)
    assert sum(ran) + sum(refused) == 600 and sum(ran) > 0
    assert (opt.steps, opt.skipped_steps) == (sum(ran), 0), (ran, refused)
    twin = twins.NAdam(overrides={"b": {"lr": 0.01}}, skip_nonfinite=True)
    expected = {"w": np.linspace(-1, 1, 10), "b": np.linspace(0, 1, 3)}
    for _ in range(sum(ran)):
        twin.update(expected, grads)
    assert_same_as_twin(opt, twin, params, expected, "NAdam")
