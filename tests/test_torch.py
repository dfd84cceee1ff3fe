"""fastopt.torch: torch.optim's optimizers on fastopt's kernels, for CPU tensors.

1. Every class and option (test_optim_torch.TORCH_CASES) for 100 steps on shapes (3, 5),
   (1003,), (7,), () and (0,) plus a transposed (Fortran-ordered) view: bit for bit equal to
   fastopt.optim on the same data, and within torch.optim's (foreach=False) by a normwise
   relative difference of 1e-10 (float64) and 1e-4 (float32).
2. bfloat16 and float16 tensors: bit for bit equal to fastopt.optim with the same precision
   options; against torch.optim on bfloat16 (state in bfloat16 as torch keeps it, or float32),
   one step from the same state differs by at most 1 ulp of the largest parameter (normwise) and
   100 steps by at most 4 (measured: at most 3.0, RMSprop).
3. torch's machinery: state_dict() in torch's format loading both ways and resuming, .grad None
   skipped (per-parameter step counts), lr schedulers, add_param_group, hooks, closures,
   clip_grad_norm_ vs step(max_grad_norm=...), GradScaler, skip_nonfinite, deepcopy.
4. Errors name the parameter and leave everything untouched.
"""
import copy
import io
import os
import subprocess
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="fastopt.torch needs the torch extra "
                                            "(pip install '.[torch]')")
sys.path.insert(0, os.path.dirname(__file__))

import fastopt  # noqa: E402
import fastopt.torch as ft  # noqa: E402
from fastopt import optim  # noqa: E402
from test_optimizers import thread_settings  # noqa: E402
# dtype, float64: fixtures that also set torch's default dtype (its step counts' dtype)
from test_optim_torch import (TOLERANCE, TORCH_CASES, assert_params_close,  # noqa: E402
                              dtype, float64, make_problem, run_torch)

def with_transposed(params, grads, dtype):
    """Add a Fortran-ordered (transposed) parameter to a problem."""
    rng = np.random.default_rng(7)
    params = dict(params, wt=np.asarray(rng.standard_normal((6, 4)), dtype=dtype).T)
    grads = [dict(g, wt=np.asarray(rng.standard_normal((4, 6)), dtype=dtype)) for g in grads]
    return params, grads


def tensors_of(params):
    """Leaf tensors requiring grad, on copies of params (the layout kept: a transposed array
    gives a transposed tensor)."""
    out = {}
    for key, value in params.items():
        if value.flags.f_contiguous and not value.flags.c_contiguous:
            tensor = torch.tensor(np.array(value.T, order="C")).t()
        else:
            tensor = torch.tensor(value)
        out[key] = tensor.requires_grad_()
    return out


def run_ours(name, kwargs, params, grads, options=None, step_kwargs=None, groups=None):
    """fastopt.torch.<name> for len(grads) steps from a copy of params; returns (final params as
    NumPy arrays, the optimizer)."""
    tensors = tensors_of(params)
    if groups is None:
        param_groups = [{"params": list(tensors.values())}]
    else:
        param_groups = [{"params": [tensors[key] for key in keys], **o} for keys, o in groups]
    optimizer = getattr(ft, name)(param_groups, **kwargs, **(options or {}))
    for step_grads in grads:
        for key, tensor in tensors.items():
            tensor.grad = torch.tensor(np.array(step_grads[key], order="C"))
        optimizer.step(**(step_kwargs or {}))
    return {key: tensor.detach().numpy().copy() for key, tensor in tensors.items()}, optimizer


def run_optim(name, kwargs, params, grads, options=None, **update_kwargs):
    params = {key: value.copy(order="K") for key, value in params.items()}
    optimizer = getattr(optim, name)(**kwargs, **(options or {}))
    for step_grads in grads:
        optimizer.update(params, step_grads, **update_kwargs)
    return params


def assert_bit_equal(actual, expected):
    for key in expected:
        a, b = np.asarray(actual[key]), np.asarray(expected[key])
        assert a.dtype == b.dtype and a.shape == b.shape, key
        a, b = np.array(a, order="C").reshape(-1), np.array(b, order="C").reshape(-1)
        assert np.array_equal(a.view(np.uint8), b.view(np.uint8)), key


# ---- 1. every class and option --------------------------------------------------------------

@pytest.mark.parametrize("name, kwargs", TORCH_CASES)
def test_matches_fastopt_optim_bits_and_torch(dtype, name, kwargs):
    params, grads = with_transposed(*make_problem(dtype), dtype)
    ours, _ = run_ours(name, kwargs, params, grads)
    assert_bit_equal(ours, run_optim(name, kwargs, params, grads))
    expected, _ = run_torch(name, kwargs, params, grads)
    assert_params_close(ours, expected, TOLERANCE[dtype])


@pytest.mark.parametrize("kwargs", [{}, dict(lr=3e-3, betas=(0.8, 0.95), weight_decay=0.1)])
def test_lion_matches_fastopt_optim(dtype, kwargs):
    params, grads = with_transposed(*make_problem(dtype, steps=20), dtype)
    ours, _ = run_ours("Lion", kwargs, params, grads)
    assert_bit_equal(ours, run_optim("Lion", kwargs, params, grads))


def test_adam_decoupled_weight_decay_is_adamw(float64):
    params, grads = make_problem(np.float64, steps=10)
    ours, _ = run_ours("Adam", dict(lr=0.01, weight_decay=0.1, decoupled_weight_decay=True),
                       params, grads)
    assert_bit_equal(ours, run_optim("AdamW", dict(lr=0.01, weight_decay=0.1), params, grads))


def test_one_compiled_call_per_layout():
    params, grads = make_problem(np.float32, steps=2)
    _, opt = run_ours("AdamW", {}, params, grads)
    assert len(opt._fastopt["prepared"]) == 1
    _, opt = run_ours("Adam", {}, params, grads,
                      groups=[(["w1", "w2"], dict(amsgrad=True)), (["b1", "b2", "b3"], {})])
    assert len(opt._fastopt["prepared"]) == 2


@pytest.mark.parametrize("name, kwargs", [("Adam", dict(lr=0.01)), ("SGD", dict(lr=0.01,
                                                                             momentum=0.9)),
                                          ("RMSprop", dict(momentum=0.9, centered=True))])
def test_param_groups_with_different_state_arrays_match_torch(float64, name, kwargs):
    """Groups that keep different state arrays (amsgrad on one, momentum 0 on another) run in
    one call each, and still match torch."""
    params, grads = make_problem(np.float64, steps=30)
    other = {"Adam": dict(amsgrad=True), "SGD": dict(momentum=0.0),
             "RMSprop": dict(momentum=0.0)}[name]
    groups = [(["w1", "w2"], other), (["b1", "b2", "b3"], {})]
    ours, _ = run_ours(name, kwargs, params, grads, groups=groups)
    expected, _ = run_torch(name, kwargs, params, grads, groups=groups)
    assert_params_close(ours, expected, TOLERANCE[np.float64])


# ---- 2. low precision ------------------------------------------------------------------------

LOW_CONFIGURATIONS = [
    ("bfloat16", "bfloat16", {}),
    ("float16", "float16", {}),
    ("bfloat16", "bfloat16", dict(master_weights=True)),
    ("float16", "float16", dict(master_weights=True, state_dtype=torch.bfloat16)),
    ("float32", "bfloat16", {}),
    ("float32", "float16", dict(master_weights=True)),
    ("float32", "float32", dict(state_dtype=torch.bfloat16)),
    ("bfloat16", "bfloat16", dict(state_dtype=torch.bfloat16)),
    ("bfloat16", "bfloat16", dict(rounding="stochastic", seed=5)),
    ("bfloat16", "bfloat16", dict(rounding="stochastic", seed=2**64 - 1,
                                  master_weights=True, state_dtype=torch.bfloat16)),
]


def low_problem(param_dtype, grad_dtype, steps):
    """(params, grads) as NumPy arrays of the named dtypes (ml_dtypes' bfloat16)."""
    bfloat16 = pytest.importorskip("ml_dtypes", reason="bfloat16 needs the ml_dtypes extra"
                                   ).bfloat16
    names = {"bfloat16": bfloat16, "float16": np.float16, "float32": np.float32}
    params, grads = with_transposed(*make_problem(np.float32, steps=steps), np.float32)
    params = {k: v.astype(names[param_dtype], order="K") for k, v in params.items()}
    grads = [{k: v.astype(names[grad_dtype]) for k, v in g.items()} for g in grads]
    return params, grads


def to_tensor(array):
    if array.dtype.name == "bfloat16":
        return torch.from_numpy(np.array(array, order="C").view(np.int16)).view(torch.bfloat16)
    return torch.from_numpy(np.array(array, order="C"))


def to_array(tensor, like):
    if tensor.dtype == torch.bfloat16:
        return tensor.detach().contiguous().view(torch.int16).numpy().view(like.dtype).copy()
    return tensor.detach().numpy().copy()


@pytest.mark.parametrize("name, kwargs", [("AdamW", dict(lr=0.01)),
                                          ("SGD", dict(lr=0.01, momentum=0.9)),
                                          ("NAdam", {})])
@pytest.mark.parametrize("param_dtype, grad_dtype, options", LOW_CONFIGURATIONS,
                         ids=[f"{p}-{g}-{o}" for p, g, o in LOW_CONFIGURATIONS])
def test_low_precision_bit_for_bit_with_fastopt_optim(name, kwargs, param_dtype, grad_dtype,
                                                      options):
    if param_dtype != grad_dtype and not hasattr(torch.Tensor, "grad_dtype"):
        pytest.skip("this torch cannot give a parameter a gradient of another dtype "
                    "(Tensor.grad_dtype)")
    params, grads = low_problem(param_dtype, grad_dtype, steps=12)
    tensors = {}
    for key, value in params.items():
        if value.flags.f_contiguous and not value.flags.c_contiguous:
            tensors[key] = to_tensor(np.array(value.T, order="C")).t().requires_grad_()
        else:
            tensors[key] = to_tensor(value).clone().requires_grad_()
    opt = getattr(ft, name)(list(tensors.values()), **kwargs, **options)
    for g in grads:
        for key, t in tensors.items():
            t.grad_dtype = None  # torch then takes a gradient of another dtype
            t.grad = to_tensor(g[key])
        opt.step()
    numpy_options = dict(options)
    if numpy_options.get("state_dtype") is torch.bfloat16:
        numpy_options["state_dtype"] = "bfloat16"
    expected = run_optim(name, kwargs, params, grads, numpy_options)
    assert_bit_equal({k: to_array(t, params[k]) for k, t in tensors.items()}, expected)


@pytest.mark.parametrize("state_dtype", [torch.bfloat16, None], ids=["bf16-state", "f32-state"])
@pytest.mark.parametrize("name, kwargs", [("AdamW", {}), ("SGD", dict(lr=0.01, momentum=0.9)),
                                          ("Adam", dict(amsgrad=True)), ("RMSprop", {}),
                                          ("Adagrad", {}), ("NAdam", {}), ("RAdam", {}),
                                          ("Adamax", {}), ("Adadelta", {})])
def test_bfloat16_within_ulps_of_torch(name, kwargs, state_dtype):
    generator = torch.Generator().manual_seed(0)
    start = torch.randn(10000, generator=generator).bfloat16()
    a, b = start.clone().requires_grad_(), start.clone().requires_grad_()
    theirs = getattr(torch.optim, name)([a], foreach=False, **kwargs)
    ours = getattr(ft, name)([b], state_dtype=state_dtype, **kwargs)
    for step in range(1, 101):
        g = torch.randn(10000, generator=generator).bfloat16()
        a.grad, b.grad = g.clone(), g.clone()
        theirs.step()
        ours.step()
        ulps = ((a.detach().double() - b.detach().double()).abs().max()
                / a.detach().double().abs().max() / 2.0**-7).item()
        assert ulps <= (1.0 if step == 1 else 4.0), (step, ulps)


# ---- 3. torch's machinery --------------------------------------------------------------------

def roundtrip(state_dict):
    buffer = io.BytesIO()
    torch.save(state_dict, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=True)


STATE_CASES = [("AdamW", dict(lr=0.01)), ("Adam", dict(lr=0.01, amsgrad=True)),
               ("NAdam", {}), ("SGD", dict(lr=0.01, momentum=0.9)), ("Adagrad", {}),
               ("RMSprop", dict(momentum=0.9, centered=True)), ("Adadelta", {}),
               ("Adamax", {}), ("RAdam", dict(lr=0.01))]


@pytest.mark.parametrize("name, kwargs", STATE_CASES)
@pytest.mark.parametrize("direction", ["torch-to-fastopt", "fastopt-to-torch"])
def test_state_dict_loads_across_and_training_continues(float64, name, kwargs, direction):
    params, grads = with_transposed(*make_problem(np.float64, steps=20), np.float64)
    first, second = (torch.optim, ft) if direction == "torch-to-fastopt" else (ft, torch.optim)
    extra = {"foreach": False} if first is torch.optim else {}
    tensors = tensors_of(params)
    saver = getattr(first, name)(list(tensors.values()), **kwargs, **extra)
    for g in grads[:10]:
        for key, t in tensors.items():
            t.grad = torch.tensor(np.array(g[key], order="C"))
        saver.step()
    saved = roundtrip(saver.state_dict())
    middle = {key: t.detach().numpy().copy() for key, t in tensors.items()}
    resumed_tensors = tensors_of(middle)
    extra = {"foreach": False} if second is torch.optim else {}
    resumed = getattr(second, name)(list(resumed_tensors.values()), **kwargs, **extra)
    resumed.load_state_dict(saved)
    for g in grads[10:]:
        for key in tensors:
            tensors[key].grad = torch.tensor(np.array(g[key], order="C"))
            resumed_tensors[key].grad = torch.tensor(np.array(g[key], order="C"))
        saver.step()
        resumed.step()
    assert_params_close({k: t.detach().numpy() for k, t in resumed_tensors.items()},
                        {k: t.detach().numpy() for k, t in tensors.items()},
                        TOLERANCE[np.float64])
    assert set(resumed.state_dict()["state"][0]) == set(saver.state_dict()["state"][0])


@pytest.mark.parametrize("name, kwargs", STATE_CASES + [("Lion", {})])
def test_resume_from_own_state_dict_bit_for_bit(name, kwargs):
    params, grads = with_transposed(*make_problem(np.float32, steps=12), np.float32)
    straight, _ = run_ours(name, kwargs, params, grads)
    tensors = tensors_of(params)
    opt = getattr(ft, name)(list(tensors.values()), **kwargs)
    for i, g in enumerate(grads):
        if i == 6:
            saved = roundtrip(opt.state_dict())
            opt = getattr(ft, name)(list(tensors.values()), **kwargs)
            opt.load_state_dict(saved)
        for key, t in tensors.items():
            t.grad = torch.tensor(np.array(g[key], order="C"))
        opt.step()
    assert_bit_equal({k: t.detach().numpy() for k, t in tensors.items()}, straight)


def test_float32_state_of_bfloat16_params_survives_a_reload():
    pytest.importorskip("ml_dtypes", reason="bfloat16 needs the ml_dtypes extra")
    p = torch.randn(100).bfloat16().requires_grad_()
    opt = ft.AdamW([p])
    p.grad = torch.randn(100).bfloat16()
    opt.step()
    exp_avg = opt.state[p]["exp_avg"].clone()
    assert exp_avg.dtype == torch.float32
    other = ft.AdamW([p])
    other.load_state_dict(roundtrip(opt.state_dict()))
    assert other.state[p]["exp_avg"].dtype == torch.float32
    assert torch.equal(other.state[p]["exp_avg"], exp_avg)


@pytest.mark.parametrize("name, kwargs", [("Adam", dict(lr=0.01)), ("NAdam", {}),
                                          ("SGD", dict(lr=0.01, momentum=0.9)),
                                          ("RAdam", dict(lr=0.01)), ("Adagrad", {})])
def test_params_without_grad_are_skipped_as_torch_does(float64, name, kwargs):
    """Each parameter keeps its own step count: skipping some steps for some parameters
    splits them into coefficient groups."""
    params, grads = make_problem(np.float64, steps=24)
    results = []
    for module in (torch.optim, ft):
        tensors = tensors_of(params)
        extra = {"foreach": False} if module is torch.optim else {}
        opt = getattr(module, name)(list(tensors.values()), **kwargs, **extra)
        for step, g in enumerate(grads):
            for i, (key, t) in enumerate(tensors.items()):
                t.grad = None if (step + i) % 3 == 0 else torch.tensor(g[key])
            opt.step()
        results.append({k: t.detach().numpy().copy() for k, t in tensors.items()})
    assert_params_close(results[1], results[0], TOLERANCE[np.float64])


def test_lr_scheduler_and_group_edits_work_unchanged(float64):
    params, grads = make_problem(np.float64, steps=30)
    results = []
    for module in (torch.optim, ft):
        tensors = tensors_of(params)
        extra = {"foreach": False} if module is torch.optim else {}
        opt = module.AdamW([{"params": [tensors["w1"], tensors["w2"]]},
                            {"params": [tensors["b1"]], "weight_decay": 0.0}], lr=0.05, **extra)
        scheduler = torch.optim.lr_scheduler.StepLR(opt, step_size=7, gamma=0.5)
        for step, g in enumerate(grads):
            if step == 10:
                opt.add_param_group({"params": [tensors["b2"], tensors["b3"]], "lr": 0.02})
            if step == 20:
                opt.param_groups[0]["betas"] = (0.8, 0.9)
            for key, t in tensors.items():
                t.grad = torch.tensor(g[key])
            opt.step()
            scheduler.step()
        results.append({k: t.detach().numpy().copy() for k, t in tensors.items()})
    assert_params_close(results[1], results[0], TOLERANCE[np.float64])


def test_hooks_and_closure():
    p = torch.zeros(3, requires_grad=True)
    opt = ft.SGD([p], lr=0.1)
    calls = []
    opt.register_step_pre_hook(lambda o, args, kwargs: calls.append("pre"))
    opt.register_step_post_hook(lambda o, args, kwargs: calls.append("post"))

    def closure():
        opt.zero_grad()
        loss = ((p - 1.0) ** 2).sum()
        loss.backward()
        return loss

    loss = opt.step(closure)
    assert calls == ["pre", "post"]
    assert float(loss.detach()) == 3.0
    assert torch.allclose(p.detach(), torch.full((3,), 0.2))


def test_fused_clipping_matches_clip_grad_norm(float64):
    params, grads = make_problem(np.float64, steps=30, grad_scales=True)
    tensors, theirs = tensors_of(params), tensors_of(params)
    ours = ft.AdamW(list(tensors.values()), lr=0.01)
    torch_opt = torch.optim.AdamW(list(theirs.values()), lr=0.01, foreach=False)
    for g in grads:
        for key in tensors:
            tensors[key].grad = torch.tensor(g[key])
            theirs[key].grad = torch.tensor(g[key])
        norm = float(torch.nn.utils.clip_grad_norm_(list(theirs.values()), 3.0, foreach=False))
        torch_opt.step()
        ours.step(max_grad_norm=3.0)
        assert ours.grad_norm == pytest.approx(norm, rel=1e-12)
        for key in tensors:  # the gradients are left as they were
            assert np.array_equal(tensors[key].grad.numpy(), g[key])
    assert_params_close({k: t.detach().numpy() for k, t in tensors.items()},
                        {k: t.detach().numpy() for k, t in theirs.items()}, 1e-10)


def test_clipping_bit_for_bit_with_fastopt_optim():
    params, grads = with_transposed(*make_problem(np.float32, steps=15, grad_scales=True),
                                    np.float32)
    ours, _ = run_ours("AdamW", {}, params, grads,
                       step_kwargs=dict(max_grad_norm=3.0, grad_scale=0.5))
    assert_bit_equal(ours, run_optim("AdamW", {}, params, grads, max_grad_norm=3.0,
                                     grad_scale=0.5))


def test_clipping_across_two_layouts_uses_every_gradient(float64):
    params, grads = make_problem(np.float64, steps=10, grad_scales=True)
    groups = [(["w1", "w2"], dict(amsgrad=True)), (["b1", "b2", "b3"], {})]
    tensors = tensors_of(params)
    opt = ft.Adam([{"params": [tensors[k] for k in keys], **o} for keys, o in groups])
    for g in grads:
        for key, t in tensors.items():
            t.grad = torch.tensor(g[key])
        opt.step(max_grad_norm=1.0)
        expected = np.sqrt(sum(float(np.sum(g[k].astype(np.float64) ** 2)) for k in g))
        assert opt.grad_norm == pytest.approx(expected, rel=1e-12)


def test_skip_nonfinite_changes_nothing():
    p = torch.randn(5, requires_grad=True)
    opt = ft.Adam([p], skip_nonfinite=True)
    p.grad = torch.ones(5)
    opt.step()
    before = p.detach().clone()
    state = {k: v.clone() for k, v in opt.state[p].items()}
    p.grad = torch.tensor([1.0, float("nan"), 0, 0, 0])
    opt.step()
    assert opt.skipped_steps == 1 and opt.grad_norm != opt.grad_norm
    assert torch.equal(p.detach(), before)
    assert all(torch.equal(opt.state[p][k], v) for k, v in state.items())


def test_grad_scaler_on_cpu():
    scaler = torch.amp.GradScaler("cpu", init_scale=1024.0)
    results = []
    for module in (torch.optim, ft):
        torch.manual_seed(0)
        model = torch.nn.Linear(8, 2)
        opt = module.AdamW(model.parameters(), lr=0.01)
        scaler = torch.amp.GradScaler("cpu", init_scale=1024.0)
        x = torch.randn(16, 8, generator=torch.Generator().manual_seed(1))
        for _ in range(5):
            opt.zero_grad()
            scaler.scale(model(x).square().mean()).backward()
            scaler.step(opt)
            scaler.update()
        results.append([p.detach().clone() for p in model.parameters()])
    for a, b in zip(*results):
        assert torch.allclose(a, b, rtol=1e-5, atol=1e-6)


def test_deepcopy_continues_identically():
    params, grads = make_problem(np.float32, steps=6)
    tensors = tensors_of(params)
    opt = ft.NAdam(list(tensors.values()), state_dtype=torch.float32)
    for g in grads[:3]:
        for key, t in tensors.items():
            t.grad = torch.tensor(g[key])
        opt.step()
    twin = copy.deepcopy({"opt": opt, "tensors": tensors})
    for g in grads[3:]:
        for group in (tensors, twin["tensors"]):
            for key, t in group.items():
                t.grad = torch.tensor(g[key])
        opt.step()
        twin["opt"].step()
    assert_bit_equal({k: t.detach().numpy() for k, t in twin["tensors"].items()},
                     {k: t.detach().numpy() for k, t in tensors.items()})


def test_autograd_sees_the_in_place_update():
    w = torch.randn(3, requires_grad=True)
    opt = ft.SGD([w], lr=0.1)
    y = (w * w).sum()  # saves w for backward
    w.grad = torch.ones(3)
    opt.step()
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        y.backward()


def run_python(code, folder):
    """Run code in a fresh interpreter from folder (not the source tree, whose unbuilt fastopt/
    would shadow the installed one), importing the fastopt these tests import."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(fastopt.__file__)))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        filter(None, [root, os.environ.get("PYTHONPATH")])))
    subprocess.run([sys.executable, "-c", code], check=True, cwd=folder, env=env)


def test_import_fastopt_does_not_import_torch(tmp_path):
    run_python("import sys, fastopt, fastopt.optim; assert 'torch' not in sys.modules", tmp_path)


# ---- 4. errors -------------------------------------------------------------------------------

def assert_untouched(opt, tensors, before):
    for t, b in zip(tensors, before):
        assert torch.equal(t.detach(), b)
    assert all(len(s) == 0 for s in opt.state.values())


def test_errors_name_the_parameter_and_change_nothing():
    a = torch.randn(4, requires_grad=True)
    b = torch.randn(3, requires_grad=True)
    opt = ft.AdamW([a, b])
    before = [a.detach().clone(), b.detach().clone()]
    a.grad = torch.ones(4)
    b.grad = torch.ones(3).to_sparse()
    with pytest.raises(TypeError, match=r"gradient of param_groups\[0\]\['params'\]\[1\].*sparse"):
        opt.step()
    assert_untouched(opt, [a, b], before)
    b.grad = None
    opt.param_groups[0]["lr"] = -1.0
    with pytest.raises(ValueError, match=r"param_groups\[0\].*lr"):
        opt.step()
    assert_untouched(opt, [a, b], before)
    opt.param_groups[0]["lr"] = 1e-3
    opt.step()  # and it works once fixed
    assert not torch.equal(a.detach(), before[0])


def test_expanded_parameter_is_refused():
    p = torch.zeros(1).expand(5).detach().requires_grad_()
    opt = ft.SGD([p], lr=0.1)
    p.grad = torch.ones(5)
    with pytest.raises(ValueError, match="overlaps itself"):
        opt.step()


def test_non_cpu_tensor_is_refused():
    p = torch.zeros(3, device="meta", requires_grad=True)
    opt = ft.SGD([p], lr=0.1)
    p.grad = torch.zeros(3, device="meta")
    with pytest.raises(TypeError, match="meta.*CPU tensors"):
        opt.step()


def test_integer_and_complex_parameters_are_refused():
    p = torch.zeros(3, dtype=torch.complex64, requires_grad=True)
    opt = ft.SGD([p], lr=0.1)
    p.grad = torch.zeros(3, dtype=torch.complex64)
    with pytest.raises(TypeError, match="complex64"):
        opt.step()


@pytest.mark.parametrize("option", ["capturable", "differentiable"])
def test_unsupported_torch_options(option):
    with pytest.raises(ValueError, match=option):
        ft.Adam([torch.zeros(2, requires_grad=True)], **{option: True})


def test_constructor_checks_hyperparameters():
    with pytest.raises(ValueError, match="betas"):
        ft.Adam([torch.zeros(2, requires_grad=True)], betas=(1.0, 0.9))
    with pytest.raises(ValueError, match="Nesterov"):
        ft.SGD([torch.zeros(2, requires_grad=True)], lr=0.1, nesterov=True)


def test_a_gradient_sharing_memory_with_a_parameter_is_refused():
    p = torch.zeros(8, requires_grad=True)
    q = torch.zeros(4, requires_grad=True)
    opt = ft.SGD([p, q], lr=0.1)
    p.grad = torch.ones(8)
    q.grad = p.detach()[:4]
    with pytest.raises(ValueError, match="share memory"):
        opt.step()
    assert torch.equal(p.detach(), torch.zeros(8))


def test_threads_and_simd_paths_do_not_change_the_bits(simd):
    params, grads = with_transposed(*make_problem(np.float32, steps=8), np.float32)
    results = []
    for n in (1, 2, 3):
        with thread_settings(n, 0, False):  # threshold 0: every step is split
            results.append(run_ours("AdamW", {}, params, grads)[0])
    assert_bit_equal(results[0], run_optim("AdamW", {}, params, grads))
    assert_bit_equal(results[1], results[0])
    assert_bit_equal(results[2], results[0])


def test_bfloat16_tensors_need_no_prior_ml_dtypes_import(tmp_path):
    pytest.importorskip("ml_dtypes", reason="bfloat16 needs the ml_dtypes extra")
    code = ("import sys, torch, fastopt.torch as ft\n"
            "assert 'ml_dtypes' not in sys.modules\n"
            "p = torch.ones(3, dtype=torch.bfloat16, requires_grad=True)\n"
            "opt = ft.SGD([p], lr=0.5); p.grad = torch.ones(3, dtype=torch.bfloat16)\n"
            "opt.step(); assert p.tolist() == [0.5, 0.5, 0.5], p\n")
    run_python(code, tmp_path)
