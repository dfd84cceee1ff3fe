"""fastopt.torch: torch.optim's optimizers for CPU tensors, on fastopt's kernels.

    import fastopt.torch
    opt = fastopt.torch.AdamW(model.parameters(), lr=1e-3)      # as torch.optim.AdamW
    loss.backward(); opt.step(); opt.zero_grad()
    opt.step(max_grad_norm=1.0)                                 # fused clipping; opt.grad_norm

SGD, Adam, AdamW, Adagrad, RMSprop, Adadelta, Adamax, NAdam and RAdam are subclasses of
torch.optim.Optimizer constructed exactly like torch.optim's (params or param groups, the same
arguments and defaults); Lion takes (lr=1e-4, betas=(0.9, 0.99), weight_decay=0) as
fastopt.optim.Lion. Everything torch.optim.Optimizer offers works: zero_grad, add_param_group,
step hooks, edits of param_groups between steps (so torch.optim.lr_scheduler), state_dict()
and load_state_dict() in torch's format and keys (a state saved by torch.optim.AdamW loads
into fastopt.torch.AdamW and the reverse).

step() updates the parameters in place through NumPy views of their memory (zero copies):
float32, float64, bfloat16 and float16 CPU tensors, strided or not, every parameter of every
group in one compiled call (one per distinct set of state arrays when param groups differ in
amsgrad, centered or momentum 0 / not 0). Parameters whose .grad is None are skipped, as torch
does. The per-element math and its order are fastopt.optim's (fastopt.reference.optim): the
result equals fastopt.optim's on the same data bit for bit, and torch.optim's (foreach=False)
to rounding.

Beyond torch.optim, every class takes (keyword only):
- skip_nonfinite=False: True skips (changes nothing but skipped_steps) a step whose gradients
  hold a NaN or an infinity;
- state_dtype=None, master_weights=False, rounding="nearest", seed=0: fastopt.optim's
  low-precision options. state_dtype None keeps float32 state for bfloat16 and float16
  parameters (torch.optim keeps it in the parameter's dtype; pass state_dtype=torch.bfloat16
  for that); master_weights=True keeps a float32 copy of each parameter in
  state[p]["master"].
and step(closure=None, *, grad_scale=None, max_grad_norm=None): gradients multiplied by
grad_scale and clipped to a global norm of max_grad_norm (torch.nn.utils.clip_grad_norm_'s
rule) inside the step, never modified; opt.grad_norm is then the norm (a float, else None).
foreach and fused are accepted and ignored (fastopt always runs one fused call);
capturable=True and differentiable=True raise ValueError.

Errors (TypeError or ValueError naming param_groups[i]['params'][j]) leave the parameters,
gradients and state untouched: a CUDA or other non-CPU tensor, a sparse gradient, a dtype
fastopt does not update, a gradient of another shape, a parameter that overlaps itself (an
expanded tensor) or shares memory with another, a tensor NumPy cannot view.
"""
import math
import numbers

import numpy as np
import torch

from . import _kernels
from . import optim as _optim
from .optimizers import _describe, _overlap_error, _validate, flat_order
from .reference.optim import clip_coefficient, low_precision_dtypes

__all__ = ["Optimizer", "SGD", "Adam", "AdamW", "Adagrad", "RMSprop", "Adadelta", "Adamax",
           "NAdam", "RAdam", "Lion", "OPTIMIZERS"]

OPTIMIZERS = {}

_TORCH_DTYPES = (torch.float32, torch.float64, torch.bfloat16, torch.float16)
_LOW = (torch.bfloat16, torch.float16)
# The param-group entries a step reads: fastopt.optim's hyperparameters and torch's flags.
_CHECKED = ("lr", "betas", "eps", "weight_decay", "momentum", "dampening", "nesterov",
            "lr_decay", "initial_accumulator_value", "alpha", "rho", "momentum_decay",
            "amsgrad", "maximize", "centered", "decoupled_weight_decay", "capturable",
            "differentiable")


def _bfloat16():
    """ml_dtypes' bfloat16 (imported on first use: a bfloat16 tensor's NumPy view needs it)."""
    try:
        import ml_dtypes  # noqa: F401
    except ImportError:
        pass
    dtypes = low_precision_dtypes()
    if len(dtypes) < 2:
        raise TypeError("bfloat16 tensors need ml_dtypes for their NumPy view: "
                        "pip install ml_dtypes (or fastopt[bfloat16])")
    return dtypes[1]


def _numpy_dtype(dtype):
    if dtype == torch.bfloat16:
        return _bfloat16()
    return {torch.float32: np.float32, torch.float64: np.float64,
            torch.float16: np.float16}[dtype]


def _torch_dtype(dtype):
    """The torch dtype of a NumPy dtype of the low-precision options."""
    if dtype is None:
        return None
    return {np.dtype(np.float32): torch.float32, np.dtype(np.float64): torch.float64,
            np.dtype(np.float16): torch.float16}.get(np.dtype(dtype), torch.bfloat16)


def _mutable(value):
    """Can value change without being replaced (a tensor, a list, a tuple holding a tensor)?"""
    if isinstance(value, tuple):
        return any(isinstance(v, torch.Tensor) for v in value)
    return isinstance(value, (torch.Tensor, list))


def _view(tensor):
    """A NumPy array on tensor's memory (no copy): same shape, strides and elements."""
    if tensor.dtype == torch.bfloat16:
        return tensor.view(torch.int16).numpy().view(_bfloat16())
    return tensor.numpy()


def _empty(shape, dtype, fortran):
    """An uninitialised tensor, C-contiguous or (fortran) Fortran-contiguous."""
    if not fortran:
        return torch.empty(shape, dtype=dtype)
    return torch.empty(tuple(reversed(shape)), dtype=dtype).permute(
        *reversed(range(len(shape))))


def _float(value):
    """A hyperparameter as torch may hold it (a number or a 1-element tensor) -> Python."""
    if isinstance(value, torch.Tensor):
        if value.numel() != 1:
            raise ValueError(f"a tensor hyperparameter must have 1 element, got shape "
                             f"{tuple(value.shape)}")
        return value.item()
    if isinstance(value, (tuple, list)):
        return tuple(_float(v) for v in value)
    return value


class Optimizer(torch.optim.Optimizer):
    """Base class of fastopt.torch: a torch.optim.Optimizer whose step() runs fastopt's kernels.

    A subclass sets _family (the fastopt.optim class whose math it runs; _family_for(group)
    may choose per group) and _state_step (does torch keep state["step"]).
    """

    _family = None
    _state_step = True
    _torch_name = None

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if not cls.__name__.startswith("_"):
            OPTIMIZERS[cls.__name__] = cls

    def __init__(self, params, defaults, *, skip_nonfinite=False, state_dtype=None,
                 master_weights=False, rounding="nearest", seed=0):
        if isinstance(state_dtype, torch.dtype):
            if state_dtype not in (torch.float32, torch.bfloat16):
                raise TypeError(f"state_dtype must be None, torch.float32 or torch.bfloat16, "
                                f"got {state_dtype}")
            state_dtype = "float32" if state_dtype == torch.float32 else "bfloat16"
        self._fastopt = self._new_fastopt(skip_nonfinite, state_dtype, master_weights,
                                          rounding, seed)
        self.grad_norm = None
        for name in ("capturable", "differentiable"):
            if defaults.get(name):
                raise ValueError(f"fastopt.torch.{type(self).__name__} does not support "
                                 f"{name}=True (it steps CPU tensors in compiled code)")
        super().__init__(params, defaults)
        for index, group in enumerate(self.param_groups):
            self._family_of(index, group)  # the hyperparameters, checked as fastopt.optim does

    @staticmethod
    def _new_fastopt(skip_nonfinite, state_dtype, master_weights, rounding, seed):
        """fastopt's own data: its options, counters, cached plans and engine cores."""
        precision = _optim._check_precision(state_dtype, master_weights, rounding, seed)
        return {"precision": precision,
                "skip_nonfinite": _optim._flag("skip_nonfinite", skip_nonfinite),
                "skipped": 0, "steps": 0, "prepared": None, "families": {}, "seen": {},
                "core": _kernels.Core(), "probe": _kernels.Core()}

    # ---- hyperparameters -----------------------------------------------------------------------

    def _family_for(self, group):
        return self._family

    def _family_of(self, index, group):
        """The fastopt.optim optimizer (validated, cached by value) whose coefficients a param
        group's step uses."""
        family = self._family_for(group)
        names = family._defaults
        # Between steps a group's values are usually the very same objects: then so is the
        # answer. (A tensor value may change in place, so it is always read again.)
        seen = self._fastopt["seen"].get(index)
        if seen is not None and seen[0] is group and seen[1] is family:
            for name, value in zip(_CHECKED, seen[2]):
                if group.get(name) is not value:
                    break
            else:
                return seen[3]
        instance = self._family_by_value(index, group, family, names)
        raw = tuple(group.get(name) for name in _CHECKED)
        if not any(map(_mutable, raw)):
            self._fastopt["seen"][index] = (group, family, raw, instance)
        return instance

    def _family_by_value(self, index, group, family, names):
        try:
            values = tuple(_float(group[name]) for name in names)
        except KeyError as error:
            raise ValueError(f"param_groups[{index}] has no {error.args[0]!r}") from None
        for name in ("capturable", "differentiable"):
            if group.get(name):
                raise ValueError(f"param_groups[{index}]: fastopt.torch does not support "
                                 f"{name}=True")
        cache = self._fastopt["families"]
        key = (family, values)
        instance = cache.get(key)
        if instance is None:
            try:
                instance = family(**dict(zip(names, values)), **self._fastopt["precision"])
            except (TypeError, ValueError) as error:
                raise type(error)(f"param_groups[{index}]: {error}") from None
            if len(cache) > 256:
                cache.clear()
            cache[key] = instance
        return instance

    def _state_names(self, instance):
        names = instance._state_names()
        if self._fastopt["precision"]["master_weights"]:
            names += ("master",)
        return names

    # ---- what users read -----------------------------------------------------------------------

    @property
    def skipped_steps(self):
        """Steps skipped because a gradient held a NaN or an infinity (skip_nonfinite=True)."""
        return self._fastopt["skipped"]

    @property
    def skip_nonfinite(self):
        return self._fastopt["skip_nonfinite"]

    # ---- the step ------------------------------------------------------------------------------

    def step(self, closure=None, *, grad_scale=None, max_grad_norm=None):
        """One optimizer step over every parameter with a gradient, in place; returns the
        closure's loss (None without a closure), as torch.optim does.

        closure: None, or a callable that recomputes the loss (called with gradients enabled).
        grad_scale: None, or a finite number every gradient is multiplied by first (e.g.
          1/loss_scale). max_grad_norm: None, or a number > 0: gradients are also multiplied by
          min(1, max_grad_norm / (norm + 1e-6)), norm the Euclidean norm of all (scaled)
          gradients together, accumulated in double in a fixed order. opt.grad_norm is that
          norm when it was computed (max_grad_norm or skip_nonfinite), else None. The
          gradients are never modified.
        Raises TypeError or ValueError (naming param_groups[i]['params'][j]) with nothing
        modified: see fastopt.torch.
        """
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        if grad_scale is not None:
            _optim._finite("grad_scale", grad_scale)
        if max_grad_norm is not None:
            _optim._real("max_grad_norm", max_grad_norm)
            if max_grad_norm <= 0:
                raise ValueError(f"max_grad_norm must be > 0, got {max_grad_norm!r}")
        self.grad_norm = self._fastopt_step(grad_scale, max_grad_norm)
        return loss

    def _fastopt_step(self, grad_scale, max_grad_norm):
        fo = self._fastopt
        instances, tensors, grads = [], [], []
        for index, group in enumerate(self.param_groups):
            instances.append(self._family_of(index, group))
            for p in group["params"]:
                g = p.grad
                if g is not None:
                    tensors.append(p)
                    grads.append(g)
        if not tensors:
            return None
        prepared = fo["prepared"]
        if prepared is None or not self._fits(prepared, instances, tensors, grads):
            fo["prepared"] = None
            prepared = self._prepare(instances, tensors, grads)
        step = fo["steps"] + 1
        layouts = prepared
        grad_views = [[_view(grads[i]) for i in layout.positions] for layout in layouts]
        scale = 1.0 if grad_scale is None else float(grad_scale)
        norm = None
        if max_grad_norm is not None or fo["skip_nonfinite"]:
            total, nonfinite = 0.0, False
            for layout, views in zip(layouts, grad_views):
                layout_total, layout_nonfinite = self._probe(layout, views)
                total += layout_total
                nonfinite = nonfinite or layout_nonfinite
            norm = math.sqrt(total) * abs(scale)
            if fo["skip_nonfinite"] and (nonfinite or not math.isfinite(norm)):
                fo["skipped"] += 1
                return norm
            if max_grad_norm is not None:
                scale = scale * clip_coefficient(float(max_grad_norm), norm)
        elif len(layouts) > 1:
            for layout, views in zip(layouts, grad_views):
                self._probe(layout, views)  # every layout binds before any runs
        runs = [self._coefficients(layout, instances, step, scale) for layout in layouts]
        core = fo["core"]
        core.hold()
        try:
            for layout, views, (kernels, coefficients, mu) in zip(layouts, grad_views, runs):
                layout.run = (kernels, coefficients)
                reason, _ = core.commit_groups(layout.plan, None, layout, layout.params_dict,
                                               dict(enumerate(views)), step, None, None)
                _raise_if_declined(layout, reason)  # (only the first can: see _probe)
                self._commit(layout, mu)
        finally:
            core.release()
        fo["steps"] = step
        torch.autograd.graph.increment_version(tensors)
        return norm

    def _commit(self, layout, mu):
        """After layout's kernel ran: the new state is the optimizer's, steps count on."""
        for p, new in layout.pending:
            self.state[p].update(new)
        layout.pending = []
        layout.steps += 1.0
        if layout.mu is not None:
            layout.mu[:] = mu

    def _probe(self, layout, views):
        """(sum of squares, non-finite?) of layout's gradients by the engine's reduction pass,
        with the gradients bound as for the step: a gradient the plan would decline raises
        here, before any kernel runs."""
        probe = self._fastopt["probe"]
        layout.norm = None
        probe.hold()
        try:
            reason, _ = probe.commit_groups(layout.plan, None, _NormPass(layout),
                                            layout.params_dict, dict(enumerate(views)), 1, None,
                                            None)
        finally:
            probe.release()
        _raise_if_declined(layout, reason)
        return layout.norm

    def _coefficients(self, layout, instances, step, scale):
        """(per engine group kernel id, coefficients; NAdam's new mu_product per parameter).
        Parameters that entered the layout with the same param group, step count (and
        mu_product) step together from then on, so each engine group's first parameter speaks
        for all of it."""
        kernels, coefficients, new_mu = [], [], []
        for group, first in zip(layout.signature_groups, layout.first_positions):
            taken = layout.steps[first]
            if not self._state_step:
                taken = min(taken, 1.0)  # SGD: only the first step differs
            mu = float(layout.mu[first]) if layout.mu is not None else None
            instance = instances[group]
            h = instance._hyperparameters
            kernel, values, mu = instance._group_step(h, h["lr"], int(taken) + 1, scale, mu)
            kernels.append(kernel)
            coefficients.append(values)
            new_mu.append(mu)
        mu = None
        if layout.mu is not None:
            mu = np.array([new_mu[g] for g in layout.partition], dtype=np.float64)
        return kernels, coefficients, mu

    def _fits(self, prepared, instances, tensors, grads):
        """Can the prepared layouts run this step: the same parameters in the same order, their
        memory and state unchanged, the same grouping and gradient dtypes?"""
        count = 0
        for layout in prepared:
            count += len(layout.tensors)
        if count != len(tensors):
            return False
        for layout in prepared:
            for position, (index, p, array, pointer, states) in enumerate(zip(
                    layout.positions, layout.tensors, layout.arrays, layout.pointers,
                    layout.states)):
                if tensors[index] is not p or p.data_ptr() != pointer or \
                        grads[index].dtype != layout.grad_dtypes[position]:
                    return False
                if layout.pending:
                    continue  # the state is not stored yet: the plan holds it
                state = self.state[p]
                for name, tensor in zip(layout.names, states):
                    if state.get(name) is not tensor:
                        return False
                if layout.step_views is not None and \
                        state.get("step") is not layout.step_views[position]:
                    return False
                if layout.mu_views is not None and \
                        state.get("mu_product") is not layout.mu_views[position]:
                    return False
            for group in layout.groups:
                if self._state_names(instances[group]) != layout.names:
                    return False
        return True

    def _partition(self, layout, instances):
        """(per parameter its engine group, per engine group its (param group, steps taken,
        mu_product)): parameters share coefficients when all three agree."""
        mu = layout.mu if layout.mu is not None else None
        steps = layout.steps
        signatures, groups = {}, []
        for position, group in enumerate(layout.group_index):
            taken = steps[position]
            if not self._state_step:
                taken = min(taken, 1.0)  # SGD: only the first step differs
            signature = (group, taken, None if mu is None else float(mu[position]))
            groups.append(signatures.setdefault(signature, len(signatures)))
        return tuple(groups), tuple(signatures)

    # ---- building the plans (the slow path) ----------------------------------------------------

    def _where(self):
        where = {}
        for i, group in enumerate(self.param_groups):
            for j, p in enumerate(group["params"]):
                where.setdefault(p, f"param_groups[{i}]['params'][{j}]")
        return where

    def _check_tensor(self, where, p, g):
        if not isinstance(g, torch.Tensor):
            raise TypeError(f"the gradient of {where} must be a torch.Tensor, got "
                            f"{_describe(g)}")
        for what, t in ((where, p), (f"the gradient of {where}", g)):
            if t.device.type != "cpu":
                raise TypeError(f"{what} is on {t.device}; fastopt.torch steps CPU tensors "
                                f"(use torch.optim for other devices)")
            if t.layout != torch.strided:
                raise TypeError(f"{what} has layout {t.layout}; fastopt.torch steps dense "
                                f"(strided) tensors, not sparse gradients")
        if p.dtype not in _TORCH_DTYPES:
            raise TypeError(f"{where} has dtype {p.dtype}; fastopt.torch updates float32, "
                            f"float64, bfloat16 and float16 tensors")
        if g.dtype != p.dtype and not (p.dtype == torch.float32 and g.dtype in _LOW):
            raise TypeError(f"the gradient of {where} has dtype {g.dtype} but the parameter "
                            f"{p.dtype}; a gradient must have its parameter's dtype (or be "
                            f"bfloat16/float16 for a float32 parameter)")
        if g.shape != p.shape:
            raise ValueError(f"the gradient of {where} has shape {tuple(g.shape)} but the "
                             f"parameter {tuple(p.shape)}")
        if torch._debug_has_internal_overlap(p) != 0:
            raise ValueError(f"{where} overlaps itself (an expanded or otherwise "
                             f"self-overlapping view); it cannot be updated in place")
        for what, t in ((where, p), (f"the gradient of {where}", g)):
            if t.is_conj() or t.is_neg() or type(t) not in (torch.Tensor, torch.nn.Parameter):
                raise TypeError(f"{what} is a {type(t).__name__} (or a lazily conjugated or "
                                f"negated view) that fastopt cannot view as memory")
            try:
                _view(t.detach())
            except (RuntimeError, TypeError, ValueError) as error:
                raise TypeError(f"fastopt cannot view the memory of {what}: {error}") from None

    def _state_tensor(self, where, name, value, p, dtype, fortran):
        """state value as a tensor of dtype laid out in the parameter's flat order (the value
        itself if it is one, else a converted copy)."""
        if not isinstance(value, torch.Tensor) or value.shape != p.shape:
            raise ValueError(f"the optimizer state {name!r} of {where} must be a tensor of shape "
                             f"{tuple(p.shape)}, got {_describe(value)}")
        if value.device.type != "cpu" or value.layout != torch.strided:
            raise ValueError(f"the optimizer state {name!r} of {where} is not a dense CPU "
                             f"tensor")
        array = _view(value) if value.dtype in _TORCH_DTYPES else None
        if (value.dtype == dtype and array is not None and array.flags.aligned and
                (array.flags.f_contiguous if fortran else array.flags.c_contiguous)):
            return value, False
        copy = _empty(tuple(p.shape), dtype, fortran)
        copy.copy_(value.detach())
        return copy, True

    def _prepare(self, instances, tensors, grads):
        """Validate every parameter with a gradient and build one layout (one plan) per set of
        state names. New or converted state is not stored until the first step ran."""
        where = self._where()
        precision = self._fastopt["precision"]
        for p, g in zip(tensors, grads):
            self._check_tensor(where[p], p, g)
        group_of = {}
        for index, group in enumerate(self.param_groups):
            for p in group["params"]:
                group_of.setdefault(p, index)
        by_names = {}
        for position, p in enumerate(tensors):
            names = self._state_names(instances[group_of[p]])
            by_names.setdefault(names, []).append(position)
        # fastopt.optim's validation of the views, keyed by where (dtypes, layout, overlap)
        params_np = {where[p]: _view(p.detach()) for p in tensors}
        grads_np = {where[p]: _view(g.detach()) for p, g in zip(tensors, grads)}
        if len(params_np) != len(tensors):
            raise ValueError("a parameter appears twice in param_groups")
        _validate(params_np, grads_np, _optim._check_optim_dtypes)
        for p in tensors:
            instances[group_of[p]]._check_precision_fits({where[p]: params_np[where[p]]}, None)
        layouts = []
        for names, positions in by_names.items():
            layouts.append(self._layout(names, positions, tensors, grads, where, group_of,
                                        instances, params_np, precision))
        # two layouts' written arrays must not overlap either
        if len(layouts) > 1:
            written = [(w, a) for layout in layouts for w, a in zip(layout.where, layout.arrays)]
            arrays = [a for _, a in written]
            for first, second in _kernels.bounds_overlapping(arrays):
                if np.shares_memory(arrays[first], arrays[second]):
                    raise _overlap_error(written[first][0], written[second][0])
        self._fastopt["prepared"] = layouts
        return layouts

    def _layout(self, names, positions, tensors, grads, where, group_of, instances, params_np,
                precision):
        layout = _Layout(names)
        layout.positions = tuple(positions)
        layout.tensors = [tensors[i] for i in positions]
        layout.where = [where[p] for p in layout.tensors]
        layout.group_index = [group_of[p] for p in layout.tensors]
        layout.groups = sorted(set(layout.group_index))
        layout.arrays = [params_np[w] for w in layout.where]
        layout.pointers = [p.data_ptr() for p in layout.tensors]
        layout.grad_dtypes = tuple(grads[i].dtype for i in positions)
        scalar_dtype = torch.float64 if torch.get_default_dtype() == torch.float64 \
            else torch.float32
        n = len(positions)
        steps = np.zeros(n, dtype=np.float64)
        mu = np.ones(n, dtype=np.float64) if self._family_uses_mu() else None
        states, pending = [], []
        for position, (p, w, group) in enumerate(zip(layout.tensors, layout.where,
                                                     layout.group_index)):
            instance = instances[group]
            array = layout.arrays[position]
            fortran = flat_order(array) == "F"
            state = self.state.get(p, {})
            fresh = not any(name in state for name in names if name != "master")
            new, ordered = {}, []
            for name in names:
                dtype = _torch_dtype(instance._state_dtype(name, array))
                if name in state:
                    tensor, converted = self._state_tensor(w, name, state[name], p, dtype,
                                                           fortran)
                    if converted:
                        new[name] = tensor
                elif fresh or name == "master":
                    tensor = _empty(tuple(p.shape), dtype, fortran)
                    if name == "master":
                        tensor.copy_(p.detach())
                    else:
                        tensor.fill_(instance._initial_value(name, instance._hyperparameters))
                    new[name] = tensor
                else:
                    raise ValueError(f"the optimizer state of {w} has no {name!r} (a "
                                     f"hyperparameter that decides the state arrays, such as "
                                     f"amsgrad, changed after its first step)")
                ordered.append(tensor)
            states.append(tuple(ordered))
            if self._state_step:
                if "step" in state and not fresh:
                    steps[position] = float(_float(state["step"]))
                if mu is not None and "mu_product" in state and not fresh:
                    mu[position] = float(_float(state["mu_product"]))
            elif not fresh:
                steps[position] = 1.0  # SGD: its momentum buffer exists
            pending.append((p, new))
        layout.states = states
        # the step counts (and NAdam's mu_product) live in shared buffers; state["step"] views
        if self._state_step:
            layout.step_buffer = torch.from_numpy(steps.astype(np.float64)).to(scalar_dtype)
            layout.steps = layout.step_buffer.numpy()
            layout.step_views = [layout.step_buffer[i] for i in range(n)]
            for position, (p, new) in enumerate(pending):
                new["step"] = layout.step_views[position]
            if mu is not None:
                layout.mu_buffer = torch.from_numpy(mu)
                layout.mu = layout.mu_buffer.numpy()
                layout.mu_views = [layout.mu_buffer[i] for i in range(n)]
                for position, (p, new) in enumerate(pending):
                    new["mu_product"] = layout.mu_views[position]
        else:
            layout.steps = steps
        layout.pending = pending
        layout.partition, signatures = self._partition(layout, instances)
        layout.signature_groups = [signature[0] for signature in signatures]
        layout.first_positions = [layout.partition.index(g) for g in range(len(signatures))]
        layout.params_dict = dict(enumerate(layout.arrays))
        keys = tuple(range(n))
        first = instances[layout.group_index[0]]
        kernel = first._plan_kernel(len(first._state_names()))
        plan = _kernels.Plan(kernel, keys, list(layout.arrays),
                             [tuple(_view(t) for t in ts) for ts in layout.states],
                             tuple(names), layout.partition,
                             tuple(_numpy_dtype(g) for g in layout.grad_dtypes),
                             precision["master_weights"], precision["rounding"] == "stochastic",
                             precision["seed"])
        if plan.overlap is not None:
            raise _overlap_error(*(self._rename(layout, name) for name in plan.overlap))
        layout.plan = plan
        return layout

    @staticmethod
    def _rename(layout, name):
        """A plan's name of a written array ("params[3]") in torch's terms."""
        if name.startswith("params["):
            return layout.where[int(name[7:-1])]
        return name

    def _family_uses_mu(self):
        return self._family._scalar_state == "mu_product"

    # ---- saving and resuming -------------------------------------------------------------------

    def load_state_dict(self, state_dict):
        """torch.optim.Optimizer.load_state_dict, keeping the saved dtype of each state tensor
        (torch casts state to the parameter's dtype; a float32 state of a bfloat16 parameter
        stays float32). The next step() converts state to the dtypes this optimizer keeps."""
        saved = state_dict.get("state", {}) if isinstance(state_dict, dict) else {}
        super().load_state_dict(state_dict)
        self._fastopt["prepared"] = None
        ids = [p for group in self.param_groups for p in group["params"]]
        saved_ids = [i for group in state_dict["param_groups"] for i in group["params"]]
        by_id = dict(zip(saved_ids, ids))
        for pid, values in saved.items():
            p = by_id.get(pid)
            if p is None or p not in self.state:
                continue
            for name, value in values.items():
                if name == "step" or not isinstance(value, torch.Tensor):
                    continue
                current = self.state[p].get(name)
                if isinstance(current, torch.Tensor) and current.dtype != value.dtype:
                    self.state[p][name] = value.detach().to("cpu", copy=True)

    def __getstate__(self):
        state = super().__getstate__()
        state["fastopt_options"] = dict(self._fastopt["precision"],
                                        skip_nonfinite=self._fastopt["skip_nonfinite"])
        return state

    def __setstate__(self, state):
        state = dict(state)
        options = state.pop("fastopt_options", None)
        super().__setstate__(state)
        if options is not None:
            if options["state_dtype"] is not None:
                options["state_dtype"] = np.dtype(options["state_dtype"]).name
            self._fastopt = self._new_fastopt(**options)
            self.grad_norm = None


# ---- the family ------------------------------------------------------------------------------

_OPTIONS_DOC = """
    Also (keyword only, fastopt's): skip_nonfinite=False, state_dtype=None, master_weights=False,
    rounding="nearest", seed=0 (see fastopt.torch). step(closure=None, *, grad_scale=None,
    max_grad_norm=None)."""


class SGD(Optimizer):
    __doc__ = ("""torch.optim.SGD on fastopt's kernels: lr=1e-3, momentum=0, dampening=0,
    weight_decay=0, nesterov=False, *, maximize=False, foreach=None, differentiable=False,
    fused=None. State: momentum_buffer (if momentum != 0). Math: fastopt.optim.SGD."""
               + _OPTIONS_DOC)
    _family = _optim.SGD
    _state_step = False

    def __init__(self, params, lr=1e-3, momentum=0, dampening=0, weight_decay=0,
                 nesterov=False, *, maximize=False, foreach=None, differentiable=False,
                 fused=None, **fastopt_options):
        super().__init__(params, dict(lr=lr, momentum=momentum, dampening=dampening,
                                      weight_decay=weight_decay, nesterov=nesterov,
                                      maximize=maximize, foreach=foreach,
                                      differentiable=differentiable, fused=fused),
                         **fastopt_options)


class Adam(Optimizer):
    __doc__ = ("""torch.optim.Adam on fastopt's kernels: lr=1e-3, betas=(0.9, 0.999), eps=1e-8,
    weight_decay=0 (L2; decoupled_weight_decay=True makes it AdamW's), amsgrad=False, *,
    foreach=None, maximize=False, capturable=False, differentiable=False, fused=None,
    decoupled_weight_decay=False. State: step, exp_avg, exp_avg_sq (max_exp_avg_sq with
    amsgrad). Math: fastopt.optim.Adam / AdamW.""" + _OPTIONS_DOC)
    _family = _optim.Adam

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0,
                 amsgrad=False, *, foreach=None, maximize=False, capturable=False,
                 differentiable=False, fused=None, decoupled_weight_decay=False,
                 **fastopt_options):
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay,
                                      amsgrad=amsgrad, maximize=maximize, foreach=foreach,
                                      capturable=capturable, differentiable=differentiable,
                                      fused=fused,
                                      decoupled_weight_decay=decoupled_weight_decay),
                         **fastopt_options)

    def _family_for(self, group):
        return _optim.AdamW if group.get("decoupled_weight_decay") else _optim.Adam


class AdamW(Adam):
    __doc__ = ("""torch.optim.AdamW on fastopt's kernels: lr=1e-3, betas=(0.9, 0.999), eps=1e-8,
    weight_decay=1e-2 (decoupled), amsgrad=False, *, maximize=False, foreach=None,
    capturable=False, differentiable=False, fused=None. State: step, exp_avg, exp_avg_sq
    (max_exp_avg_sq with amsgrad). Math: fastopt.optim.AdamW.""" + _OPTIONS_DOC)

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2,
                 amsgrad=False, *, maximize=False, foreach=None, capturable=False,
                 differentiable=False, fused=None, **fastopt_options):
        super().__init__(params, lr, betas, eps, weight_decay, amsgrad, foreach=foreach,
                         maximize=maximize, capturable=capturable,
                         differentiable=differentiable, fused=fused,
                         decoupled_weight_decay=True, **fastopt_options)

    def __setstate__(self, state):
        super().__setstate__(state)
        for group in self.param_groups:  # as torch.optim.AdamW: always decoupled
            group["decoupled_weight_decay"] = True


class Adagrad(Optimizer):
    __doc__ = ("""torch.optim.Adagrad on fastopt's kernels: lr=1e-2, lr_decay=0, weight_decay=0,
    initial_accumulator_value=0, eps=1e-10, foreach=None, *, maximize=False,
    differentiable=False, fused=None. State (created with the optimizer, as torch does): step,
    sum. Math: fastopt.optim.Adagrad.""" + _OPTIONS_DOC)
    _family = _optim.Adagrad

    def __init__(self, params, lr=1e-2, lr_decay=0, weight_decay=0, initial_accumulator_value=0,
                 eps=1e-10, foreach=None, *, maximize=False, differentiable=False, fused=None,
                 **fastopt_options):
        super().__init__(params, dict(lr=lr, lr_decay=lr_decay, eps=eps,
                                      weight_decay=weight_decay,
                                      initial_accumulator_value=initial_accumulator_value,
                                      foreach=foreach, maximize=maximize,
                                      differentiable=differentiable, fused=fused),
                         **fastopt_options)
        for group in self.param_groups:
            for p in group["params"]:
                state = self.state[p]
                if not isinstance(p, torch.Tensor) or p.dtype not in _TORCH_DTYPES:
                    continue  # step() names it
                dtype = torch.float32 if p.dtype in _LOW else p.dtype
                chosen = self._fastopt["precision"]["state_dtype"]
                if chosen is not None:
                    dtype = _torch_dtype(chosen)
                try:
                    fortran = flat_order(_view(p.detach())) == "F"
                except (RuntimeError, TypeError):
                    fortran = False  # (step() names what it cannot view)
                state["step"] = torch.tensor(0.0, dtype=torch.get_default_dtype()
                                             if torch.get_default_dtype() == torch.float64
                                             else torch.float32)
                state["sum"] = _empty(tuple(p.shape), dtype, fortran).fill_(
                    float(_float(group["initial_accumulator_value"])))


class RMSprop(Optimizer):
    __doc__ = ("""torch.optim.RMSprop on fastopt's kernels: lr=1e-2, alpha=0.99, eps=1e-8,
    weight_decay=0, momentum=0, centered=False, capturable=False, foreach=None,
    maximize=False, differentiable=False. State: step, square_avg (grad_avg if centered,
    momentum_buffer if momentum > 0). Math: fastopt.optim.RMSprop.""" + _OPTIONS_DOC)
    _family = _optim.RMSprop

    def __init__(self, params, lr=1e-2, alpha=0.99, eps=1e-8, weight_decay=0, momentum=0,
                 centered=False, capturable=False, foreach=None, maximize=False,
                 differentiable=False, **fastopt_options):
        super().__init__(params, dict(lr=lr, momentum=momentum, alpha=alpha, eps=eps,
                                      centered=centered, weight_decay=weight_decay,
                                      capturable=capturable, foreach=foreach,
                                      maximize=maximize, differentiable=differentiable),
                         **fastopt_options)


class Adadelta(Optimizer):
    __doc__ = ("""torch.optim.Adadelta on fastopt's kernels: lr=1.0, rho=0.9, eps=1e-6,
    weight_decay=0, foreach=None, *, capturable=False, maximize=False, differentiable=False.
    State: step, square_avg, acc_delta. Math: fastopt.optim.Adadelta.""" + _OPTIONS_DOC)
    _family = _optim.Adadelta

    def __init__(self, params, lr=1.0, rho=0.9, eps=1e-6, weight_decay=0, foreach=None, *,
                 capturable=False, maximize=False, differentiable=False, **fastopt_options):
        super().__init__(params, dict(lr=lr, rho=rho, eps=eps, weight_decay=weight_decay,
                                      maximize=maximize, capturable=capturable,
                                      foreach=foreach, differentiable=differentiable),
                         **fastopt_options)


class Adamax(Optimizer):
    __doc__ = ("""torch.optim.Adamax on fastopt's kernels: lr=2e-3, betas=(0.9, 0.999),
    eps=1e-8, weight_decay=0, foreach=None, *, maximize=False, differentiable=False,
    capturable=False. State: step, exp_avg, exp_inf. Math: fastopt.optim.Adamax."""
               + _OPTIONS_DOC)
    _family = _optim.Adamax

    def __init__(self, params, lr=2e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0,
                 foreach=None, *, maximize=False, differentiable=False, capturable=False,
                 **fastopt_options):
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay,
                                      foreach=foreach, maximize=maximize,
                                      differentiable=differentiable, capturable=capturable),
                         **fastopt_options)


class NAdam(Optimizer):
    __doc__ = ("""torch.optim.NAdam on fastopt's kernels: lr=2e-3, betas=(0.9, 0.999), eps=1e-8,
    weight_decay=0, momentum_decay=4e-3, decoupled_weight_decay=False, *, foreach=None,
    maximize=False, capturable=False, differentiable=False. State: step, mu_product (a
    float64 0-d tensor here: fastopt keeps it in double), exp_avg, exp_avg_sq. Math:
    fastopt.optim.NAdam.""" + _OPTIONS_DOC)
    _family = _optim.NAdam

    def __init__(self, params, lr=2e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0,
                 momentum_decay=4e-3, decoupled_weight_decay=False, *, foreach=None,
                 maximize=False, capturable=False, differentiable=False, **fastopt_options):
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay,
                                      momentum_decay=momentum_decay,
                                      decoupled_weight_decay=decoupled_weight_decay,
                                      maximize=maximize, foreach=foreach,
                                      capturable=capturable, differentiable=differentiable),
                         **fastopt_options)


class RAdam(Optimizer):
    __doc__ = ("""torch.optim.RAdam on fastopt's kernels: lr=1e-3, betas=(0.9, 0.999), eps=1e-8,
    weight_decay=0, decoupled_weight_decay=False, *, foreach=None, maximize=False,
    capturable=False, differentiable=False. State: step, exp_avg, exp_avg_sq. Math:
    fastopt.optim.RAdam.""" + _OPTIONS_DOC)
    _family = _optim.RAdam

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0,
                 decoupled_weight_decay=False, *, foreach=None, maximize=False,
                 capturable=False, differentiable=False, **fastopt_options):
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay,
                                      maximize=maximize, foreach=foreach,
                                      capturable=capturable,
                                      decoupled_weight_decay=decoupled_weight_decay,
                                      differentiable=differentiable),
                         **fastopt_options)


class Lion(Optimizer):
    __doc__ = ("""Lion (not in torch.optim; fastopt.optim.Lion's rule, optax.lion's): lr=1e-4,
    betas=(0.9, 0.99), weight_decay=0. State: step, exp_avg.""" + _OPTIONS_DOC)
    _family = _optim.Lion

    def __init__(self, params, lr=1e-4, betas=(0.9, 0.99), weight_decay=0.0,
                 **fastopt_options):
        super().__init__(params, dict(lr=lr, betas=betas, weight_decay=weight_decay),
                         **fastopt_options)


def _raise_if_declined(layout, reason):
    """Nothing if layout's plan ran (or bound) its gradients; else the error, nothing having
    been written: a gradient that shares memory with what the step writes (the one thing only
    the plan checks), or an AssertionError for what validation should have made impossible."""
    plan = layout.plan
    if reason == _kernels.DECLINED_OVERLAP:
        written = plan.written_name(plan.overlapping_index)
        raise _overlap_error(Optimizer._rename(layout, written),
                             f"the gradient of {layout.where[plan.declined_index]}")
    if reason != _kernels.STEP_RAN:
        raise AssertionError(f"fastopt.torch: a validated plan declined to run (reason "
                             f"{reason}); please report")


class _Layout:
    """What one compiled call needs between steps (Optimizer._layout builds it): the
    parameters with a gradient that keep the state arrays names, as tensors and NumPy views,
    their state tensors in the order the kernels take them, each one's step count (a shared
    buffer that state[p]["step"] views) and, for NAdam, its mu_product (likewise)."""

    def __init__(self, names):
        self.names = names
        self.plan = None
        self.positions = ()     # indices into the step's list of parameters with a gradient
        self.tensors = []       # the parameters, in the plan's order
        self.where = []         # their names: param_groups[i]['params'][j]
        self.group_index = []   # their torch param group
        self.groups = []        # the distinct param groups among them
        self.arrays = []        # NumPy views of the parameters
        self.pointers = []      # their data pointers when the views were taken
        self.states = []        # per parameter: a tuple of state tensors, in names order
        self.grad_dtypes = ()
        self.steps = None       # NumPy array: per parameter, steps taken
        self.step_buffer = self.step_views = None
        self.mu = None          # NAdam: NumPy float64 array of mu_product per parameter
        self.mu_buffer = self.mu_views = None
        self.pending = []       # (parameter, {name: tensor}) to store after the first step
        self.partition = None   # per parameter its engine group (the plan's groups)
        self.signature_groups = ()  # per engine group: its param group
        self.first_positions = ()   # per engine group: its first parameter
        self.params_dict = None     # {position: NumPy view}, what the plan binds
        self.norm = None        # the reduction pass's result (_NormPass)
        self.run = None         # this step's (kernels, coefficients) per engine group

    def _plan_step(self, plan, step, grad_scale, max_grad_norm):
        kernels, coefficients = self.run
        return kernels, coefficients, None, None


class _NormPass:
    """Core.commit_groups' optimizer for a pass that only binds the gradients and reduces."""

    def __init__(self, layout):
        self.layout = layout

    def _plan_step(self, plan, step, grad_scale, max_grad_norm):
        self.layout.norm = plan.bound_sum_of_squares()
        return None, None, None, None
