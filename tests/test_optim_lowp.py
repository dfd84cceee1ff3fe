"""fastopt.optim with bfloat16 and float16: parameters, gradients and state stored in 16 bits and
computed in float32, master weights, stochastic rounding; bit for bit against the twins
(fastopt.reference.optim) on every SIMD path and thread split, plus the properties the twins
cannot show (unbiased stochastic rounding, the seed matters) and agreement with torch."""
import os
import pickle
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
from test_optimizers import make_params, thread_settings

ml_dtypes = pytest.importorskip("ml_dtypes", reason="bfloat16 needs the ml_dtypes extra "
                                                    "(pip install ml_dtypes)")
BF16, F16, F32 = np.dtype(ml_dtypes.bfloat16), np.dtype(np.float16), np.dtype(np.float32)
THREADED = fastopt.build_info()["threads_enabled"]

# (parameter dtype, gradient dtype, options): every combination the family takes.
CONFIGURATIONS = [
    (BF16, BF16, {}),
    (F16, F16, {}),
    (BF16, BF16, dict(master_weights=True)),
    (F16, F16, dict(master_weights=True, state_dtype=BF16)),
    (F32, BF16, {}),
    (F32, F16, dict(master_weights=True)),
    (F32, F32, dict(state_dtype=BF16)),
    (BF16, BF16, dict(state_dtype="bfloat16")),
    (BF16, BF16, dict(rounding="stochastic", seed=5)),
    (BF16, BF16, dict(rounding="stochastic", seed=2**64 - 1, master_weights=True,
                      state_dtype=BF16)),
    (F32, F32, dict(state_dtype=BF16, rounding="stochastic", seed=7)),
]
CONFIGURATION_IDS = [f"{p.name}-{g.name}-{'-'.join(f'{k}={v}' for k, v in o.items()) or 'plain'}"
                     for p, g, o in CONFIGURATIONS]


def low_precision_params(rng, dtype):
    """make_params' shape families (0-d, empty, 1, 7, 1003, Fortran, strided views, ...) in
    dtype (values rounded from float32; strided views kept strided)."""
    params = {}
    for key, array in make_params(rng, np.float32).items():
        converted = np.empty_like(array, dtype=dtype)  # keeps the layout (Fortran, ...)
        converted[...] = array
        params[key] = converted
    # views the kernel cannot use as they are, in dtype
    params["strided"] = rng.standard_normal((40, 30)).astype(np.float32).astype(dtype)[::2, 1::3]
    params["reversed"] = rng.standard_normal(101).astype(np.float32).astype(dtype)[::-1]
    return params


def run_both(name, options, params, grad_dtype, steps, rng, update_arguments=lambda step: {}):
    ours = optim.OPTIMIZERS[name](**options)
    twin = twins.OPTIMIZERS[name](**options)
    expected = {key: p.copy(order="K") for key, p in params.items()}
    for step in range(steps):
        grads = {key: rng.standard_normal(p.shape).astype(np.float32).astype(grad_dtype)
                 for key, p in params.items()}
        extra = update_arguments(step)
        assert ours.update(params, grads, **extra) == twin.update(expected, grads, **extra)
    return ours, twin, expected


def assert_same(params, expected, ours, twin, label):
    assert_dict_bitwise_equal(params, expected, label)
    assert set(ours.state) == set(twin.state)
    for state_name, arrays in twin.state.items():
        assert_dict_bitwise_equal(dict(ours.state[state_name]), arrays, f"{label} {state_name}")


@pytest.mark.parametrize("param_dtype, grad_dtype, options", CONFIGURATIONS,
                         ids=CONFIGURATION_IDS)
@pytest.mark.parametrize("name", list(optim.OPTIMIZERS))
def test_bit_for_bit_every_configuration(name, param_dtype, grad_dtype, options, simd):
    rng = np.random.default_rng(21)
    params = low_precision_params(rng, param_dtype)
    defaults = optim.OPTIMIZERS[name]._defaults
    options = dict(options, overrides={"seven": {"lr": 10 * defaults["lr"]}})
    ours, twin, expected = run_both(
        name, options, params, grad_dtype, 12, rng,
        lambda step: {"max_grad_norm": 1.5, "grad_scale": 0.5} if step % 3 == 1 else {})
    assert_same(params, expected, ours, twin, name)


@pytest.mark.skipif(not THREADED, reason="serial build (FASTOPT_THREADS=0)")
@pytest.mark.parametrize("param_dtype, grad_dtype, options", CONFIGURATIONS[7:],
                         ids=CONFIGURATION_IDS[7:])
@pytest.mark.parametrize("name", ["AdamW", "SGD", "Lion"])
def test_bit_for_bit_on_any_thread_split(name, param_dtype, grad_dtype, options, simd):
    """Threshold 0: every step split between 2 and 3 threads, inside tensors and blocks: the
    stochastic rounding's bits depend on the element's index, never on who rounds it."""
    for threads in (2, 3):
        with thread_settings(threads, 0, False):
            rng = np.random.default_rng(threads)
            params = {f"x{i}": rng.standard_normal(n).astype(param_dtype)
                      for i, n in enumerate((1, 7, 1003, 2500, 77))}
            ours, twin, expected = run_both(name, options, params, grad_dtype, 6, rng)
            assert_same(params, expected, ours, twin, f"{name} {threads}")


def stochastic_master(x, n, seed, steps):
    """SGD with lr 0 and a float32 master copy holding x everywhere: the master never changes,
    and each step rounds it to the bfloat16 parameter anew. Returns the parameters of every
    step (steps x n, as float64)."""
    opt = optim.SGD(lr=0.0, master_weights=True, rounding="stochastic", seed=seed)
    params = {"w": np.zeros(n, dtype=BF16)}
    grads = {"w": np.zeros(n, dtype=BF16)}
    opt.update(params, grads)
    opt.state["master"]["w"][...] = x
    rounded = []
    for _ in range(steps):
        opt.update(params, grads)
        rounded.append(params["w"].astype(np.float64))
    return np.array(rounded)


@pytest.mark.parametrize("fraction", [0.1, 0.5, 0.77])
def test_stochastic_rounding_is_unbiased(fraction):
    """A value a fraction of the way from one bfloat16 to the next is rounded up with that
    probability: over 4 steps of 50,000 elements the mean lies within 5 standard deviations
    (of the binomial count) of the value itself, and both neighbours occur."""
    low = np.float32(1.0 + 2**-7 * 3)  # a bfloat16 value; its neighbour is 2**-7 above
    high = np.float32(low + np.float32(2**-7))
    x = np.float32(low + np.float32(fraction * 2**-7))
    rounded = stochastic_master(x, 50_000, seed=11, steps=4)
    assert set(np.unique(rounded)) == {float(low), float(high)}
    share_up = np.mean(rounded == float(high))
    exact_share = (float(x) - float(low)) / (float(high) - float(low))
    sigma = np.sqrt(exact_share * (1 - exact_share) / rounded.size)
    assert abs(share_up - exact_share) < 5 * sigma, (share_up, exact_share, sigma)


def test_the_seed_and_the_step_choose_the_bits():
    """Another seed gives other bits; the same seed the same bits; each step new bits."""
    x = np.float32(1.0 + 2**-9)
    first = stochastic_master(x, 4096, seed=1, steps=2)
    again = stochastic_master(x, 4096, seed=1, steps=2)
    other = stochastic_master(x, 4096, seed=2, steps=2)
    np.testing.assert_array_equal(first, again)
    assert np.mean(first[0] != other[0]) > 0.1
    assert np.mean(first[0] != first[1]) > 0.1


def test_nearest_rounding_is_numpy_and_ml_dtypes_astype():
    """With a master copy and lr 0, the parameter is the master's values rounded: exactly
    what astype gives, subnormals, ties, overflow and NaN included."""
    special = np.array([1.0 + 2**-8, 1.0 + 3 * 2**-8, 65519.0, 65520.0, 1e-7, 3e-8, -2.5e-8,
                        6.1e-5, 1e38, np.inf, -np.inf, np.nan, -0.0, 2**-133], np.float32)
    for dtype in (BF16, F16):
        opt = optim.SGD(lr=0.0, master_weights=True)
        params = {"w": np.zeros(special.size, dtype=dtype)}
        grads = {"w": np.zeros(special.size, dtype=dtype)}
        opt.update(params, grads)
        opt.state["master"]["w"][...] = special
        opt.update(params, grads)
        with np.errstate(over="ignore"):  # 65520 and 1e38 overflow float16, as they should
            expected = special.astype(dtype)
        assert_dict_bitwise_equal(params, {"w": expected}, dtype.name)


def test_resume_is_bit_for_bit_with_stochastic_rounding():
    rng = np.random.default_rng(3)
    params = {"w": rng.standard_normal(3000).astype(BF16)}
    grads = [{"w": rng.standard_normal(3000).astype(BF16)} for _ in range(6)]
    opt = optim.AdamW(rounding="stochastic", seed=9, master_weights=True, state_dtype=BF16)
    for g in grads[:3]:
        opt.update(params, g)
    saved, saved_params = pickle.dumps(opt), {"w": params["w"].copy()}
    for g in grads[3:]:
        opt.update(params, g)
    resumed = pickle.loads(saved)
    for g in grads[3:]:
        resumed.update(saved_params, g)
    assert_dict_bitwise_equal(saved_params, params)


@pytest.mark.parametrize("param_dtype, grad_dtype, options, message", [
    (np.float64, np.float64, dict(state_dtype=BF16), "is float64: state_dtype"),
    (np.float64, np.float64, dict(master_weights=True), "is float64: master_weights"),
    (F16, F16, dict(rounding="stochastic"), "stochastic rounding is for bfloat16"),
    (BF16, F16, {}, "grads['w'] has dtype float16 but params['w'] has dtype bfloat16"),
    (np.float64, np.float32, {}, "grads['w'] has dtype float32"),
    (F16, np.float32, {}, "grads['w'] has dtype float32 but params['w'] has dtype float16"),
])
def test_what_the_family_refuses_changes_nothing(param_dtype, grad_dtype, options, message):
    params = {"w": np.ones(5, dtype=param_dtype)}
    before = params["w"].copy()
    opt = optim.Adam(**options)
    with pytest.raises(TypeError, match=message.replace("[", r"\[").replace("]", r"\]")):
        opt.update(params, {"w": np.ones(5, dtype=grad_dtype)})
    assert_dict_bitwise_equal(params, {"w": before})
    assert opt.steps == 0 and not opt.state


@pytest.mark.parametrize("options, message", [
    (dict(state_dtype=np.float16), "state_dtype must be None, numpy.float32 or"),
    (dict(state_dtype="float64"), "state_dtype must be None"),
    (dict(rounding="up"), "rounding must be 'nearest' or 'stochastic'"),
    (dict(seed=-1), "seed must be an integer in"),
    (dict(seed=2**64), "seed must be an integer in"),
    (dict(seed=1.5), "seed must be an integer in"),
    (dict(master_weights=1), "master_weights must be True or False"),
])
def test_precision_options_are_checked(options, message):
    with pytest.raises((TypeError, ValueError), match=message):
        optim.AdamW(**options)


def test_state_dtype_halves_the_state():
    params = {"w": np.zeros(1000, np.float32)}
    opt = optim.AdamW(state_dtype=BF16)
    opt.update(params, {"w": np.ones(1000, np.float32)})
    assert {array["w"].dtype for array in opt.state.values()} == {BF16}
    assert sum(array["w"].nbytes for array in opt.state.values()) == 2 * 1000 * 2


def test_bfloat16_adamw_agrees_with_torch_to_one_ulp():
    """bfloat16 parameters with float32 state against torch's AdamW run the same way: the
    bfloat16 parameter upcast to a float32 tensor each step, AdamW (foreach=False) with
    float32 state on it, the result rounded to bfloat16. Every element within 1 bfloat16
    ulp after 50 steps."""
    torch = pytest.importorskip("torch", reason="torch is an optional extra")
    rng = np.random.default_rng(8)
    params = {"w": rng.standard_normal(2001).astype(BF16)}
    grads = [rng.standard_normal(2001).astype(BF16) for _ in range(50)]
    opt = optim.AdamW(lr=1e-2, weight_decay=0.1)
    tensor = torch.nn.Parameter(torch.from_numpy(params["w"].astype(np.float32)))
    peer = torch.optim.AdamW([tensor], lr=1e-2, weight_decay=0.1, foreach=False)
    for g in grads:
        opt.update(params, {"w": g})
        tensor.grad = torch.from_numpy(g.astype(np.float32))
        peer.step()
        with torch.no_grad():
            tensor.copy_(tensor.to(torch.bfloat16).to(torch.float32))
    ours = params["w"].view(np.uint16).astype(np.int32)
    theirs = tensor.detach().numpy().astype(BF16).view(np.uint16).astype(np.int32)
    assert np.max(np.abs(ours - theirs)) <= 1


def test_the_plan_refuses_dtypes_the_kernels_cannot_read():
    """The kernels trust the plan: a float64 parameter with float32 state, a float32 one with
    float64 state, or a master copy that is not float32 is refused where the plan is built."""
    from fastopt import _kernels
    f64 = np.dtype(np.float64)
    cases = [(np.zeros(4), (np.zeros(4, F32),) * 2, None, False),
             (np.zeros(4, F32), (np.zeros(4), np.zeros(4, F32)), None, False),
             (np.zeros(4, BF16), (np.zeros(4, F32), np.zeros(4, F32), np.zeros(4, BF16)),
              None, True),
             (np.zeros(4, F32), (np.zeros(4, F32),) * 2, (f64,), False)]
    for param, states, grad_dtypes, master in cases:
        with pytest.raises(TypeError, match="gradient and state dtypes do not fit"):
            _kernels.Plan("optim_adam", ("w",), [param], [states],
                          tuple(f"s{i}" for i in range(len(states))), (0,),
                          grad_dtypes or (param.dtype,), master)
