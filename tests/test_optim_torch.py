"""The torch.optim family (fastopt.reference.optim, and fastopt.optim once it is built) against
PyTorch itself, within a tolerance.

fastopt.reference.optim defines the numbers bit for bit; torch is a peer that rounds differently
(addcdiv, lerp, its own scalar order), so every comparison here is a tolerance:

- "relative difference" is the normwise relative error of one array, max|a - b| / max|b| over the
  array, b the expected array (torch's, or the plain formula's); see relative_difference. Each key
  (array) of a params dict is checked on its own, and the largest value over the keys is reported;
- after 100 steps from the same random params, with gradients that differ each step (drawn from
  a seeded RNG), that difference is at most 1e-10 in float64 and 1e-4 in float32.

Covered:
1. SGD, Adam, AdamW, Adagrad, RMSprop, Adadelta, Adamax, NAdam, RAdam against
   torch.optim.<Class>(..., foreach=False), each with its defaults, every option on its own, and
   the options together (TORCH_CASES), in float32 and float64, on arrays of shapes (3, 5),
   (1003,), (7,), () and (0,). RAdam runs both its unrectified (steps 1-5) and rectified branches.
2. Lion (optax.lion's rule; optax is not a dependency) against the paper's formula written out
   below in float64, relative 1e-12.
3. The options every class has: max_grad_norm (the returned norm against
   torch.nn.utils.clip_grad_norm_, relative 1e-12 in float64, and 100 steps of AdamW after
   clipping); grad_scale (update(g*1024, grad_scale=1/1024) equals update(g)); per-key overrides
   against torch param groups; a callable lr against torch.optim.lr_scheduler.LambdaLR.

Every test runs once per implementation: "reference" (fastopt.reference.optim) and "fastopt"
(fastopt.optim, skipped until it is built).
"""
import math

import numpy as np
import pytest

torch = pytest.importorskip(
    "torch", reason="torch is an optional extra (pip install torch==2.13.0)")

STEPS = 100
TOLERANCE = {np.float32: 1e-4, np.float64: 1e-10}
# Keys named so that "b*" selects the vector, the 0-d array and the empty array (the "biases").
SHAPES = {"w1": (3, 5), "w2": (1003,), "b1": (7,), "b2": (), "b3": (0,)}


# ------------------------------------------------------------------------------------- fixtures

@pytest.fixture(params=["reference", "fastopt"])
def implementation(request):
    """The module under test: fastopt.reference.optim (the NumPy twins), or the compiled
    fastopt.optim, skipped while it is not built."""
    if request.param == "reference":
        from fastopt.reference import optim
        return optim
    try:
        from fastopt import optim
    except ImportError:
        pytest.skip("fastopt.optim is not built yet")
    return optim


@pytest.fixture(params=[np.float32, np.float64], ids=["float32", "float64"])
def dtype(request):
    """The dtype of params and gradients, with torch's default dtype set to match (restored
    afterwards). torch keeps some scalar state as tensors of its default dtype, not of the
    params' (the step count, NAdam's mu_product): left at float32, a float64 run computes
    NAdam's mu_product in float32, and its params differ from the twin's by 1e-11 to 1e-10
    after 100 steps (measured), instead of 1e-16 with float64."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64 if request.param is np.float64 else torch.float32)
    try:
        yield request.param
    finally:
        torch.set_default_dtype(previous)


@pytest.fixture
def float64():
    """For the float64-only tests: torch's default dtype float64 (see the dtype fixture)."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        yield np.float64
    finally:
        torch.set_default_dtype(previous)


# -------------------------------------------------------------------------------------- helpers

def relative_difference(actual, expected):
    """The normwise relative difference of two arrays of one shape:
    max|actual - expected| / max|expected| over all elements, computed in float64.

    0.0 for empty arrays and for arrays equal element for element; infinity when they differ and
    expected is all zeros; NaN (which fails every `<= tolerance`) when either holds a NaN."""
    actual = np.asarray(actual, dtype=np.float64)
    expected = np.asarray(expected, dtype=np.float64)
    assert actual.shape == expected.shape, (actual.shape, expected.shape)
    if expected.size == 0:
        return 0.0
    difference = np.max(np.abs(actual - expected))
    if difference == 0:
        return 0.0
    scale = np.max(np.abs(expected))
    return float(difference / scale) if scale > 0 else math.inf


def assert_params_close(actual, expected, tolerance):
    """relative_difference(actual[key], expected[key]) <= tolerance for every key."""
    assert list(actual) == list(expected)
    differences = {key: relative_difference(actual[key], expected[key]) for key in expected}
    worst = max(differences, key=lambda key: (differences[key] != differences[key],
                                              differences[key]))
    assert all(d <= tolerance for d in differences.values()), (
        f"relative difference {differences[worst]:.3g} at {worst!r} > {tolerance:g}; "
        f"all: {differences}")


def make_problem(dtype, steps=STEPS, seed=0, grad_scales=False):
    """(params, [grads of step 1, ..., grads of step `steps`]), every array of dtype and of
    SHAPES, drawn from a seeded RNG (standard normal). With grad_scales, each step's gradients
    are multiplied by a factor drawn from [0.5, 1.5], so that a max_grad_norm near the typical
    norm clips some steps and not others."""
    rng = np.random.default_rng(seed)

    def draw(shape, factor=1.0):
        return np.asarray(rng.standard_normal(shape) * factor, dtype=dtype)

    params = {key: draw(shape) for key, shape in SHAPES.items()}
    grads = []
    for _ in range(steps):
        factor = rng.uniform(0.5, 1.5) if grad_scales else 1.0
        grads.append({key: draw(shape, factor) for key, shape in SHAPES.items()})
    return params, grads


def run_torch(name, kwargs, params, grads, groups=None, max_grad_norm=None, lr_lambda=None):
    """torch.optim.<name>(..., foreach=False, **kwargs) for len(grads) steps from a copy of
    params: each step sets every .grad, clips with clip_grad_norm_ if max_grad_norm is given,
    calls step(), then LambdaLR(lr_lambda).step() if lr_lambda is given.
    groups: [(keys, options)], torch param groups, instead of one group of every key.
    Returns (final params as NumPy arrays, [the norm clip_grad_norm_ returned at each step])."""
    tensors = {key: torch.tensor(value, requires_grad=True) for key, value in params.items()}
    if groups is None:
        param_groups = [{"params": list(tensors.values())}]
    else:
        param_groups = [{"params": [tensors[key] for key in keys], **options}
                        for keys, options in groups]
    optimizer = getattr(torch.optim, name)(param_groups, foreach=False, **kwargs)
    scheduler = (torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda)
                 if lr_lambda is not None else None)
    norms = []
    for step_grads in grads:
        for key, tensor in tensors.items():
            tensor.grad = torch.tensor(step_grads[key])
        if max_grad_norm is not None:
            norms.append(float(torch.nn.utils.clip_grad_norm_(
                list(tensors.values()), max_grad_norm, foreach=False)))
        optimizer.step()
        if scheduler is not None:
            scheduler.step()
    return {key: tensor.detach().numpy() for key, tensor in tensors.items()}, norms


def run_twin(module, name, kwargs, params, grads, **update_kwargs):
    """module.<name>(**kwargs) for len(grads) steps from a copy of params. Returns (final
    params, [what update returned at each step])."""
    params = {key: value.copy() for key, value in params.items()}
    optimizer = getattr(module, name)(**kwargs)
    returned = [optimizer.update(params, step_grads, **update_kwargs) for step_grads in grads]
    return params, returned


# ------------------------------------------------------------ 1. every class and option vs torch

def case(name, **kwargs):
    identifier = "-".join(f"{k}={v}" for k, v in kwargs.items()) or "defaults"
    return pytest.param(name, kwargs, id=f"{name}-{identifier}")


# The defaults, each option alone, and the options together; lr is raised where the default
# would barely move the params in 100 steps.
TORCH_CASES = [
    case("SGD", lr=0.01),
    case("SGD", lr=0.01, weight_decay=0.01),
    case("SGD", lr=0.01, maximize=True),
    case("SGD", lr=0.01, momentum=0.9),
    case("SGD", lr=0.01, momentum=0.9, dampening=0.1),
    case("SGD", lr=0.01, momentum=0.9, nesterov=True),
    case("SGD", lr=0.01, momentum=0.9, dampening=0.1, weight_decay=0.01, maximize=True),
    case("SGD", lr=0.01, momentum=0.9, nesterov=True, weight_decay=0.01, maximize=True),
    case("Adam", lr=0.01),
    case("Adam", lr=0.01, amsgrad=True),
    case("Adam", lr=0.01, weight_decay=0.1),
    case("Adam", lr=0.01, maximize=True),
    case("Adam", lr=0.01, betas=(0.8, 0.99), eps=1e-6, amsgrad=True, weight_decay=0.1,
         maximize=True),
    case("AdamW", lr=0.01),
    case("AdamW", lr=0.01, amsgrad=True),
    case("AdamW", lr=0.01, weight_decay=0.0),
    case("AdamW", lr=0.01, weight_decay=0.5),
    case("AdamW", lr=0.01, maximize=True),
    case("AdamW", lr=0.01, betas=(0.8, 0.99), amsgrad=True, weight_decay=0.5, maximize=True),
    case("Adagrad"),
    case("Adagrad", lr_decay=0.01),
    case("Adagrad", initial_accumulator_value=0.5),
    case("Adagrad", weight_decay=0.1),
    case("Adagrad", maximize=True),
    case("Adagrad", lr=0.05, lr_decay=0.01, initial_accumulator_value=0.5, weight_decay=0.1,
         eps=1e-8, maximize=True),
    case("RMSprop"),
    case("RMSprop", centered=True),
    case("RMSprop", momentum=0.9),
    case("RMSprop", weight_decay=0.1),
    case("RMSprop", maximize=True),
    case("RMSprop", centered=True, momentum=0.9),
    case("RMSprop", lr=0.001, alpha=0.9, centered=True, momentum=0.9, weight_decay=0.1,
         maximize=True),
    case("Adadelta"),
    case("Adadelta", weight_decay=0.1),
    case("Adadelta", maximize=True),
    case("Adadelta", lr=0.5, rho=0.8, eps=1e-5, weight_decay=0.1, maximize=True),
    case("Adamax"),
    case("Adamax", weight_decay=0.1),
    case("Adamax", maximize=True),
    case("Adamax", lr=0.01, betas=(0.8, 0.99), weight_decay=0.1, maximize=True),
    case("NAdam"),
    case("NAdam", weight_decay=0.1),
    case("NAdam", weight_decay=0.1, decoupled_weight_decay=True),
    case("NAdam", maximize=True),
    case("NAdam", momentum_decay=0.01),
    case("NAdam", lr=0.01, betas=(0.8, 0.99), momentum_decay=0.01, weight_decay=0.1,
         decoupled_weight_decay=True, maximize=True),
    case("RAdam", lr=0.01),
    case("RAdam", lr=0.01, weight_decay=0.1),
    case("RAdam", lr=0.01, weight_decay=0.1, decoupled_weight_decay=True),
    case("RAdam", lr=0.01, maximize=True),
    case("RAdam", lr=0.01, betas=(0.8, 0.99), weight_decay=0.1, decoupled_weight_decay=True,
         maximize=True),
]


@pytest.mark.parametrize("name, kwargs", TORCH_CASES)
def test_matches_torch(implementation, dtype, name, kwargs):
    params, grads = make_problem(dtype)
    expected, _ = run_torch(name, kwargs, params, grads)
    actual, _ = run_twin(implementation, name, kwargs, params, grads)
    assert_params_close(actual, expected, TOLERANCE[dtype])


def rho_t(beta2, step):
    """RAdam's length of the approximated SMA (Liu et al. 2020), written out independently."""
    rho_infinity = 2 / (1 - beta2) - 1
    return rho_infinity - 2 * step * beta2**step / (1 - beta2**step)


def test_radam_cases_run_both_branches():
    """The RAdam cases above (betas (0.9, 0.999) and (0.8, 0.99)) go through the unrectified
    branch (rho_t <= 5) for the first steps and the rectified one afterwards, within STEPS."""
    for beta2 in (0.999, 0.99):
        branches = [rho_t(beta2, step) > 5 for step in range(1, STEPS + 1)]
        assert not branches[0] and branches[-1]
        assert branches == sorted(branches)  # once rectified, it stays so
    assert [rho_t(0.999, step) > 5 for step in range(1, 7)] == [False] * 5 + [True]


@pytest.mark.parametrize("kwargs", [{}, {"weight_decay": 0.1, "decoupled_weight_decay": True}],
                         ids=["defaults", "decoupled"])
def test_radam_unrectified_steps_match_torch(implementation, dtype, kwargs):
    """RAdam's first 5 steps alone (only the unrectified branch), so that a failure of the
    100-step cases can be told apart."""
    params, grads = make_problem(dtype, steps=5)
    expected, _ = run_torch("RAdam", dict(kwargs, lr=0.01), params, grads)
    actual, _ = run_twin(implementation, "RAdam", dict(kwargs, lr=0.01), params, grads)
    assert_params_close(actual, expected, TOLERANCE[dtype])


# ----------------------------------------------------------------------- 2. Lion vs the formula

def plain_lion(params, grads, lr, betas, weight_decay):
    """Lion as the paper (Chen et al. 2023, Algorithm 2) writes it, in float64:
    c = b1*m + (1-b1)*g; p = p - lr*(sign(c) + wd*p); m = b2*m + (1-b2)*g."""
    b1, b2 = betas
    params = {key: np.array(value, dtype=np.float64) for key, value in params.items()}
    m = {key: np.zeros_like(value) for key, value in params.items()}
    for step_grads in grads:
        for key in params:
            g = np.asarray(step_grads[key], dtype=np.float64)
            c = b1 * m[key] + (1 - b1) * g
            params[key] = params[key] - lr * (np.sign(c) + weight_decay * params[key])
            m[key] = b2 * m[key] + (1 - b2) * g
    return params


@pytest.mark.parametrize("kwargs", [
    {},
    {"lr": 1e-3, "weight_decay": 0.1},
    {"lr": 3e-3, "betas": (0.95, 0.98), "weight_decay": 1.0},
], ids=["defaults", "weight_decay", "betas"])
def test_lion_matches_plain_formula(implementation, kwargs):
    params, grads = make_problem(np.float64)
    options = {"lr": 1e-4, "betas": (0.9, 0.99), "weight_decay": 0.0, **kwargs}
    expected = plain_lion(params, grads, **options)
    actual, _ = run_twin(implementation, "Lion", kwargs, params, grads)
    assert_params_close(actual, expected, 1e-12)


# ------------------------------------------------------------------ 3. the options of the family

NORM_TOLERANCE = {np.float32: 1e-5, np.float64: 1e-12}


def test_max_grad_norm_matches_clip_grad_norm(implementation, dtype):
    """AdamW with max_grad_norm against clip_grad_norm_ + AdamW(foreach=False): the norm that
    update returns at each step (relative 1e-12 in float64) and the params after 100 steps. The
    gradients' scale varies so that about half of the steps clip."""
    max_grad_norm = 32.0  # about the norm of 1033 standard normal elements
    params, grads = make_problem(dtype, grad_scales=True)
    kwargs = {"lr": 0.01, "weight_decay": 0.1}
    expected, expected_norms = run_torch("AdamW", kwargs, params, grads,
                                         max_grad_norm=max_grad_norm)
    actual, norms = run_twin(implementation, "AdamW", kwargs, params, grads,
                             max_grad_norm=max_grad_norm)
    clipped = sum(norm > max_grad_norm for norm in expected_norms)
    assert 10 < clipped < STEPS - 10, clipped  # both branches of the clip run
    for step, (norm, expected_norm) in enumerate(zip(norms, expected_norms), start=1):
        assert isinstance(norm, float), (step, norm)
        assert abs(norm - expected_norm) <= NORM_TOLERANCE[dtype] * expected_norm, (
            step, norm, expected_norm)
    assert_params_close(actual, expected, TOLERANCE[dtype])


def test_no_norm_without_max_grad_norm(implementation):
    params, grads = make_problem(np.float64, steps=2)
    _, returned = run_twin(implementation, "SGD", {"lr": 0.01}, params, grads)
    assert returned == [None, None]


# One case a class: the grad_scale identity holds for every class, whatever its options.
GRAD_SCALE_CASES = [
    ("SGD", {"lr": 0.01, "momentum": 0.9, "nesterov": True, "maximize": True}),
    ("Adam", {"lr": 0.01, "amsgrad": True, "weight_decay": 0.1}),
    ("AdamW", {"lr": 0.01}),
    ("Adagrad", {"lr_decay": 0.01, "weight_decay": 0.1}),
    ("RMSprop", {"centered": True, "momentum": 0.9}),
    ("Adadelta", {"weight_decay": 0.1}),
    ("Adamax", {"maximize": True}),
    ("NAdam", {"weight_decay": 0.1, "decoupled_weight_decay": True}),
    ("RAdam", {"lr": 0.01}),
    ("Lion", {"lr": 1e-3, "weight_decay": 0.1}),
]


@pytest.mark.parametrize("max_grad_norm", [None, 32.0], ids=["no-clip", "clip"])
@pytest.mark.parametrize("name, kwargs", GRAD_SCALE_CASES, ids=[c[0] for c in GRAD_SCALE_CASES])
def test_grad_scale_undoes_loss_scaling(implementation, dtype, name, kwargs, max_grad_norm):
    """update(grads * 1024, grad_scale=1/1024) equals update(grads), bit for bit: a
    power-of-two scale and its inverse are exact (short of overflow and subnormals), so the
    gradient the update sees, the norm (sqrt(2**20 * s) = 2**10 * sqrt(s)) and the clip are the
    same numbers."""
    params, grads = make_problem(dtype, steps=20, grad_scales=True)
    scaled = [{key: value * dtype(1024) for key, value in step.items()} for step in grads]
    expected, expected_returned = run_twin(implementation, name, kwargs, params, grads,
                                           max_grad_norm=max_grad_norm)
    actual, returned = run_twin(implementation, name, kwargs, params, scaled,
                                grad_scale=1 / 1024, max_grad_norm=max_grad_norm)
    assert returned == expected_returned
    for key in expected:
        np.testing.assert_array_equal(actual[key], expected[key], err_msg=key)


# overrides (a twin's pattern -> values) against the same split as torch param groups.
OVERRIDE_CASES = [
    pytest.param("AdamW", {"lr": 0.01, "weight_decay": 0.1}, {"weight_decay": 0.0},
                 id="AdamW-no-decay-on-biases"),
    pytest.param("SGD", {"lr": 0.01, "momentum": 0.9}, {"lr": 0.05, "momentum": 0.5,
                                                         "nesterov": True},
                 id="SGD-lr-momentum"),
    pytest.param("Adam", {"lr": 0.01}, {"betas": (0.8, 0.99), "eps": 1e-6, "maximize": True},
                 id="Adam-betas-eps-maximize"),
    pytest.param("RMSprop", {"momentum": 0.9}, {"alpha": 0.9, "momentum": 0.0,
                                                "weight_decay": 0.1},
                 id="RMSprop-alpha-momentum"),
    pytest.param("NAdam", {"weight_decay": 0.1, "decoupled_weight_decay": True},
                 {"weight_decay": 0.0, "momentum_decay": 0.01}, id="NAdam-decay"),
]


@pytest.mark.parametrize("name, kwargs, bias_options", OVERRIDE_CASES)
def test_overrides_match_param_groups(implementation, dtype, name, kwargs, bias_options):
    params, grads = make_problem(dtype)
    weights = [key for key in params if key.startswith("w")]
    biases = [key for key in params if key.startswith("b")]
    expected, _ = run_torch(name, kwargs, params, grads,
                            groups=[(weights, {}), (biases, bias_options)])
    actual, _ = run_twin(implementation, name, dict(kwargs, overrides={"b*": bias_options}),
                         params, grads)
    assert_params_close(actual, expected, TOLERANCE[dtype])


def schedule(k):
    """A warm-up then step decay, of torch's epoch count k = 0, 1, 2, ..."""
    return min(1.0, (k + 1) / 10) * 0.5 ** (k // 30)


@pytest.mark.parametrize("name, kwargs", [
    ("Adam", {"weight_decay": 0.1}),
    ("SGD", {"momentum": 0.9, "nesterov": True}),
    ("RAdam", {}),
], ids=["Adam", "SGD", "RAdam"])
def test_lr_callable_matches_lambda_lr(implementation, dtype, name, kwargs):
    """lr as a callable against torch's LambdaLR. With scheduler.step() after each
    optimizer.step(), torch's step k (1-based) uses base_lr * schedule(k - 1) (LambdaLR sets
    schedule(0) when it is created), while the twin calls lr(step) with step = 1, 2, ...: so the
    twin gets lambda step: base_lr * schedule(step - 1), the same float at every step."""
    base_lr = 0.02
    params, grads = make_problem(dtype)
    expected, _ = run_torch(name, dict(kwargs, lr=base_lr), params, grads, lr_lambda=schedule)
    actual, _ = run_twin(implementation, name,
                         dict(kwargs, lr=lambda step: base_lr * schedule(step - 1)),
                         params, grads)
    assert_params_close(actual, expected, TOLERANCE[dtype])


def test_lr_callable_in_overrides_matches_lambda_lr_per_group(implementation, float64):
    """An lr callable in an override against LambdaLR with one function a param group."""
    params, grads = make_problem(float64)
    weights = [key for key in params if key.startswith("w")]
    biases = [key for key in params if key.startswith("b")]
    expected, _ = run_torch("AdamW", {"lr": 0.01}, params, grads,
                            groups=[(weights, {}), (biases, {"lr": 0.03})],
                            lr_lambda=[lambda k: 1.0, schedule])
    actual, _ = run_twin(implementation, "AdamW",
                         {"lr": 0.01,
                          "overrides": {"b*": {"lr": lambda step: 0.03 * schedule(step - 1)}}},
                         params, grads)
    assert_params_close(actual, expected, TOLERANCE[float64])
