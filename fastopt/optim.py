"""fastopt.optim: the optimizers of modern CPU training, with PyTorch's names, defaults and
per-element math, on fastopt's dict API and engine.

    from fastopt import optim
    opt = optim.AdamW(lr=1e-3, weight_decay=1e-2, overrides={"b*": {"weight_decay": 0.0}})
    norm = opt.update(params, grads, max_grad_norm=1.0)   # dicts of arrays, updated in place

SGD, Adam, AdamW, Adagrad, RMSprop, Adadelta, Adamax, NAdam and RAdam take torch.optim's
constructor arguments and defaults (not foreach, fused, capturable, differentiable); Lion takes
optax.lion's rule with the arguments (lr, betas, weight_decay). Every class also takes:
- overrides: per-key hyperparameters, {pattern: {name: value}}. A key gets the constructor's
  values, then those of every pattern that matches it, in order (a later match wins): a
  pattern matches a key equal to it, or a string key it matches as a shell wildcard
  (fnmatch.fnmatchcase: "b*", "*.bias", "embed?"). Every key still runs in one compiled call.
- lr: a number, or a callable of the step number (1, 2, ...) returning one (fastopt.schedules).
- skip_nonfinite: if True, a step whose gradients hold a NaN or infinity changes nothing but
  opt.skipped_steps.
- Low precision: parameters may be float16 or bfloat16 (ml_dtypes), computed in float32 and
  rounded once per stored value; state_dtype=None (float32 state for 16-bit parameters, the
  parameter's dtype otherwise) or bfloat16; master_weights=False (True: a float32 "master"
  copy of every parameter in the state, the caller's array gets its rounded value);
  rounding="nearest" (ties to even) or "stochastic" (bfloat16 only) with seed=0 (an integer
  in [0, 2**64): the random bits hash (seed, step, key position, array, element index), the
  same for any thread count, SIMD path and after a resume).
update(params, grads, grad_scale=None, max_grad_norm=None) fuses gradient scaling and clipping
into the step (the gradients are never modified) and returns the global norm when it computed
one. The exact order of operations is that of the NumPy twins in fastopt.reference.optim, which
fastopt matches bit for bit on every SIMD path and thread count.

Unlike the textbook classes (fastopt.Adam, ...), every scalar here is computed in double and
rounded to the arrays' dtype where it meets them; NumPy-scalar hyperparameters are taken as
Python floats.
"""
import math
import numbers
import types

import numpy as np

from . import _kernels
from .optimizers import (_MAX_STEP, _describe, _check_state_fits, _load_state, _overlap_error,
                         _raise_if_declined, _validate, flat_order)
from .reference.optim import low_precision_dtypes
from .reference.optim import RAdam as _RAdamTwin, clip_coefficient, pattern_matches

_STATE_DICT_VERSION = 1

# ---- hyperparameter checks -------------------------------------------------------------------


def _real(name, value, low=0.0, high=math.inf, high_inclusive=False):
    """value as a finite Python float in [low, high) (or [low, high]); TypeError or ValueError
    naming name otherwise."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {_describe(value)}")
    value = float(value)
    inside = low <= value <= high if high_inclusive else low <= value < high
    if not (inside and math.isfinite(value)):
        bound = (f"a finite number >= {low:g}" if high == math.inf
                 else f"in [{low:g}, {high:g}{']' if high_inclusive else ')'}")
        raise ValueError(f"{name} must be {bound}, got {value!r}")
    return value


def _finite(name, value):
    return _real(name, value, -math.inf)


def _flag(name, value):
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be True or False, got {_describe(value)}")
    return bool(value)


def _learning_rate(name, value):
    """A number >= 0, or a callable of the step number (checked when it is called)."""
    if callable(value) and not isinstance(value, numbers.Real):
        return value
    return _real(name, value)


def _betas(high_inclusive):
    def check(name, value):
        if not isinstance(value, (tuple, list)) or len(value) != 2:
            raise TypeError(f"{name} must be a pair (beta1, beta2), got {_describe(value)}")
        return tuple(_real(f"{name}[{i}]", beta, 0.0, 1.0, high_inclusive)
                     for i, beta in enumerate(value))
    return check


_CHECKS = {
    "lr": _learning_rate,
    "betas": _betas(False),
    "eps": _real,
    "weight_decay": _real,
    "momentum": _real,
    "dampening": _finite,
    "lr_decay": _real,
    "initial_accumulator_value": _real,
    "alpha": _real,
    "rho": lambda name, value: _real(name, value, 0.0, 1.0, True),
    "momentum_decay": _real,
    "amsgrad": _flag,
    "nesterov": _flag,
    "maximize": _flag,
    "centered": _flag,
    "decoupled_weight_decay": _flag,
}


def _scheduled(lr, step):
    """The learning rate of this step: lr, or lr(step) checked like a constant lr."""
    if not callable(lr):
        return lr
    value = lr(step)
    try:
        return _real("lr", value)
    except (TypeError, ValueError) as error:
        raise type(error)(f"the lr schedule {lr!r} returned {value!r} for step {step}: "
                          f"{error}") from None


# ---- low precision ----------------------------------------------------------------------------

_FLOAT32, _FLOAT64, _FLOAT16 = np.dtype(np.float32), np.dtype(np.float64), np.dtype(np.float16)
_MAX_SEED = 2**64


def _bfloat16():
    """ml_dtypes' bfloat16, or None if ml_dtypes is not installed (then no bfloat16 array can
    exist either)."""
    dtypes = low_precision_dtypes()
    return dtypes[1] if len(dtypes) > 1 else None


def _check_precision(state_dtype, master_weights, rounding, seed):
    """The low-precision options as a dict, checked: state_dtype None, float32 or bfloat16;
    master_weights a bool; rounding "nearest" or "stochastic"; seed an integer in
    [0, 2**64)."""
    if state_dtype is not None:
        if isinstance(state_dtype, str) and state_dtype == "bfloat16":
            try:  # the name exists for NumPy once ml_dtypes is imported
                import ml_dtypes  # noqa: F401
            except ImportError:
                pass
        bfloat16 = _bfloat16()
        try:
            dtype = np.dtype(state_dtype)
        except TypeError:
            dtype = None
        if dtype is None or dtype not in (_FLOAT32, bfloat16):
            raise TypeError(f"state_dtype must be None, numpy.float32 or ml_dtypes.bfloat16 "
                            f"(pip install ml_dtypes), got {state_dtype!r}")
        state_dtype = dtype
    if rounding not in ("nearest", "stochastic"):
        raise ValueError(f"rounding must be 'nearest' or 'stochastic', got {rounding!r}")
    if isinstance(seed, (bool, np.bool_)) or not isinstance(seed, numbers.Integral) \
            or not 0 <= seed < _MAX_SEED:
        raise ValueError(f"seed must be an integer in [0, 2**64), got {seed!r}")
    return {"state_dtype": state_dtype, "master_weights": _flag("master_weights", master_weights),
            "rounding": rounding, "seed": int(seed)}


def _check_optim_dtypes(key, p, g):
    """fastopt.optim's rule: float32, float64, float16 or bfloat16 parameters; gradients of the
    parameter's dtype, or float16/bfloat16 gradients for float32 parameters (an exact upcast);
    TypeError naming the key otherwise."""
    allowed = (_FLOAT32, _FLOAT64, *low_precision_dtypes())
    if p.dtype not in allowed or not p.dtype.isnative:
        raise TypeError(f"params[{key!r}] has dtype {p.dtype}; fastopt.optim updates float32, "
                        f"float64, float16 and bfloat16 (ml_dtypes) arrays in native byte order")
    if g.dtype == p.dtype:
        return
    if p.dtype == _FLOAT32 and g.dtype in low_precision_dtypes():
        return
    raise TypeError(f"grads[{key!r}] has dtype {g.dtype} but params[{key!r}] has dtype "
                    f"{p.dtype}; a gradient must have its parameter's dtype, or be float16 or "
                    f"bfloat16 for a float32 parameter. Convert the gradient "
                    f"(grads[{key!r}].astype({p.dtype.name}))")


# Every class of the family by name, in definition order (tests and benchmarks iterate it).
OPTIMIZERS = {}
# kernel name -> (its id, its coefficient names in the order the engine takes them)
_KERNEL_ORDER = {name: (kernel.id, kernel.coefficient_names)
                 for name, kernel in _kernels.KERNELS.items()}


def _coefficients(kernel, **values):
    """(kernel id, values in the order of the kernel's coefficient names)."""
    kernel_id, names = _KERNEL_ORDER[kernel]
    return kernel_id, tuple(map(values.__getitem__, names))


def _prologue(h, scale, decoupled=False):
    """The gradient prologue's coefficients of a group (see csrc/elementwise.h): its gradient
    scale (negated for maximize), and torch's L2 decay unless decay is decoupled."""
    weight_decay = h["weight_decay"]
    return dict(gradient_scale=-scale if h.get("maximize") else scale,
                l2=1.0 if weight_decay != 0 and not decoupled else 0.0,
                weight_decay=weight_decay)


class Optimizer:
    """Base class of fastopt.optim: hyperparameters, overrides, state, the plan, state_dict.

    A subclass sets _defaults (torch's arguments and defaults, in order), optionally
    _structural (arguments that decide the state arrays and may not be overridden per key) and
    _scalar_state, and implements _state_names() and _group_step(h, lr, step, scale, scalar) ->
    (kernel id, coefficients, new scalar state or None).
    """

    _defaults = {}
    _structural = ()
    _scalar_state = None  # the name of a per-key float the optimizer keeps (NAdam: mu_product)

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if not cls.__name__.startswith("_"):
            OPTIMIZERS[cls.__name__] = cls

    def __init__(self, *, overrides=None, skip_nonfinite=False, state_dtype=None,
                 master_weights=False, rounding="nearest", seed=0, **hyperparameters):
        unknown = [name for name in hyperparameters if name not in self._defaults]
        if unknown:
            raise TypeError(f"{type(self).__name__}() got an unexpected keyword argument "
                            f"{unknown[0]!r}")
        object.__setattr__(self, "_core", _kernels.Core())
        object.__setattr__(self, "_precision", _check_precision(state_dtype, master_weights,
                                                                rounding, seed))
        checked = {name: self._check(name, value) for name, value in hyperparameters.items()}
        self._check_combination(checked)
        object.__setattr__(self, "_hyperparameters", checked)
        object.__setattr__(self, "_overrides", self._check_overrides(overrides))
        object.__setattr__(self, "_skip_nonfinite", _flag("skip_nonfinite", skip_nonfinite))

    # ---- hyperparameters -----------------------------------------------------------------------

    def __getattr__(self, name):
        hyperparameters = self.__dict__.get("_hyperparameters")
        if hyperparameters is not None and name in hyperparameters:
            return hyperparameters[name]
        raise AttributeError(f"{type(self).__name__!r} has no attribute {name!r}")

    def __setattr__(self, name, value):
        """opt.lr = 0.01 (or any other argument) between steps: validated; an argument that
        would change the state arrays (amsgrad, centered, momentum from 0) after the first
        update() raises ValueError (reset() first); opt.overrides = {...} likewise."""
        if name == "overrides":
            overrides = self._check_overrides(value)
            self._replace_hyperparameters(self._hyperparameters, overrides)
        elif name in self._defaults:
            changed = {**self._hyperparameters, name: self._check(name, value)}
            self._check_combination(changed)
            for pattern, values in self._overrides.items():  # each key's values, too
                self._check_combination({**changed, **values}, f"overrides[{pattern!r}]")
            self._replace_hyperparameters(changed, self._overrides)
        elif name == "skip_nonfinite":
            object.__setattr__(self, "_skip_nonfinite", _flag(name, value))
        else:
            raise AttributeError(f"{type(self).__name__} has no hyperparameter {name!r}")

    def _replace_hyperparameters(self, hyperparameters, overrides):
        core = self._core
        core.hold()
        try:
            if core.state is not None and (self._state_names(hyperparameters, overrides)
                                           != self._state_names()):
                raise ValueError(
                    f"{type(self).__name__}: this change would change the optimizer's state "
                    f"arrays ({', '.join(self._state_names()) or 'none'}); call reset() first "
                    f"or create a new optimizer")
            object.__setattr__(self, "_hyperparameters", hyperparameters)
            if overrides is not self._overrides:
                object.__setattr__(self, "_overrides", overrides)
                core.drop_plan()  # the keys' groups follow the patterns
        finally:
            core.release()

    @property
    def overrides(self):
        """The per-key hyperparameters: {pattern: {name: value}} (read-only view; assign
        opt.overrides = {...} to replace them)."""
        return types.MappingProxyType({pattern: types.MappingProxyType(values)
                                       for pattern, values in self._overrides.items()})

    @property
    def skip_nonfinite(self):
        return self._skip_nonfinite

    def _check_overrides(self, overrides):
        if overrides is None:
            return {}
        if not isinstance(overrides, dict):
            raise TypeError(f"overrides must be a dict {{pattern: {{hyperparameter: value}}}}, "
                            f"got {_describe(overrides)}")
        checked = {}
        for pattern, values in overrides.items():
            where = f"overrides[{pattern!r}]"
            if not isinstance(values, dict):
                raise TypeError(f"{where} must be a dict of hyperparameters, got "
                                f"{_describe(values)}")
            for name in values:
                if name not in self._defaults:
                    raise ValueError(f"{where}: {type(self).__name__} has no hyperparameter "
                                     f"{name!r} (it has {', '.join(self._defaults)})")
                if name in self._structural:
                    raise ValueError(f"{where}: {name} decides the optimizer's state arrays "
                                     f"and is the same for every key; set it in the "
                                     f"constructor")
            group = {name: self._check(name, value, f"{where}[{name!r}]")
                     for name, value in values.items()}
            self._check_combination({**self._hyperparameters, **group}
                                    if "_hyperparameters" in self.__dict__ else None, where)
            checked[pattern] = group
        return checked

    # Checks that differ from _CHECKS for this class (Lion's betas may be 1).
    _special_checks = {}

    def _check(self, name, value, where=None):
        """value checked (and converted: floats, bools, a pair of betas), naming where (default
        name) in the TypeError or ValueError."""
        return self._special_checks.get(name, _CHECKS[name])(where or name, value)

    def _check_combination(self, h, where=None):
        """ValueError for values that are valid one by one but not together (SGD's nesterov)."""

    def _resolve(self, signature):
        """The hyperparameters of a group of keys: the constructor's, updated by the overrides
        at the indices in signature, in order."""
        h = self._hyperparameters
        if signature:
            h = dict(h)
            patterns = list(self._overrides.values())
            for index in signature:
                if isinstance(index, int):  # (not the scalar state that split a group)
                    h.update(patterns[index])
        return h

    def _partition(self, keys):
        """(per key its group index, per group its signature, per group its first key): keys
        matched by the same overrides patterns (and holding the same scalar state: NAdam's
        mu_product) share a group and so coefficients."""
        patterns = list(self._overrides)
        scalars = self._core.scalars or {}
        groups, signatures, first_keys = [], {}, []
        for key in keys:
            signature = tuple(i for i, pattern in enumerate(patterns)
                              if pattern_matches(pattern, key))
            if key in scalars:
                signature += (("scalar", scalars[key]),)
            if signature not in signatures:
                signatures[signature] = len(signatures)
                first_keys.append(key)
            groups.append(signatures[signature])
        return tuple(groups), tuple(signatures), tuple(first_keys)

    def _all_groups(self, hyperparameters=None, overrides=None):
        """The constructor's hyperparameters and each override applied to them."""
        h = self._hyperparameters if hyperparameters is None else hyperparameters
        o = self._overrides if overrides is None else overrides
        return [h, *({**h, **values} for values in o.values())]

    def _state_names(self, hyperparameters=None, overrides=None):
        raise NotImplementedError

    def _initial_value(self, name, h):
        """The value a state array starts at (0; Adagrad's sum: initial_accumulator_value)."""
        return 0.0

    # ---- the step ------------------------------------------------------------------------------

    # Compiled (fastopt/_kernels.pyx): its docstring is the contract of update().
    update = _kernels.update_groups

    def _check_step_arguments(self, grad_scale, max_grad_norm):
        if grad_scale is not None:
            _finite("grad_scale", grad_scale)
        if max_grad_norm is not None:
            _real("max_grad_norm", max_grad_norm)
            if max_grad_norm <= 0:
                raise ValueError(f"max_grad_norm must be > 0, got {max_grad_norm!r}")

    def _plan_step(self, plan, step, grad_scale, max_grad_norm):
        """This step's (kernel ids, coefficients, norm, scalar state) per group of plan, called
        by the engine with the gradients bound; kernels None: skip the step."""
        scale = 1.0 if grad_scale is None else float(grad_scale)
        norm = None
        if max_grad_norm is not None or self._skip_nonfinite:
            total, nonfinite = plan.bound_sum_of_squares()
            norm = math.sqrt(total) * abs(scale)
            if self._skip_nonfinite and (nonfinite or not math.isfinite(norm)):
                return None, None, norm, None
        if max_grad_norm is not None:
            scale = scale * clip_coefficient(float(max_grad_norm), norm)
        signatures, first_keys, _ = plan.tag
        kernels, coefficients = [], []
        old_scalars = self._core.scalars
        new_scalars = [] if self._scalar_state else None
        for signature, first_key in zip(signatures, first_keys):
            h = self._resolve(signature)
            lr = _scheduled(h["lr"], step)
            scalar = old_scalars[first_key] if old_scalars else None
            kernel, values, scalar = self._group_step(h, lr, step, scale, scalar)
            kernels.append(kernel)
            coefficients.append(values)
            if new_scalars is not None:
                new_scalars.append(scalar)
        scalars = None
        if new_scalars is not None:
            scalars = {key: new_scalars[group] for key, group in zip(plan.keys, plan.groups)}
        return kernels, coefficients, norm, scalars

    def _validate_and_step(self, params, grads, grad_scale, max_grad_norm):
        """The slow path of update(), holding the core: validate in full (raising for bad
        input), build or reuse a plan, run the step and commit it."""
        core = self._core
        core.hold()
        try:
            params, grads = _validate(params, grads, _check_optim_dtypes)
            plan, state = self._prepare(params, grads)
            reason, norm = core.commit_groups(plan, state, self, params, grads, core.step + 1,
                                              grad_scale, max_grad_norm)
        finally:
            core.release()
        _raise_if_declined(plan, reason)
        return norm

    def _all_state_names(self):
        """The state arrays of every key: the class's, then "master" with master_weights."""
        return self._state_names() + (("master",) if self._precision["master_weights"] else ())

    def _state_dtype(self, name, param):
        """The dtype of state array name of a parameter: float32 for the master copy; else
        state_dtype if set (float32 or bfloat16), else float32 for a 16-bit parameter and the
        parameter's own dtype otherwise."""
        if name == "master":
            return _FLOAT32
        chosen = self._precision["state_dtype"]
        if chosen is not None:
            return chosen
        return _FLOAT32 if param.dtype in low_precision_dtypes() else param.dtype

    def _check_precision_fits(self, params, grads):
        """TypeError for low-precision options these arrays cannot have."""
        precision = self._precision
        for key, param in params.items():
            if param.dtype == _FLOAT64 and precision["state_dtype"] not in (None, _FLOAT64):
                raise TypeError(f"params[{key!r}] is float64: state_dtype="
                                f"{precision['state_dtype']} is for float32, float16 and "
                                f"bfloat16 parameters")
            if param.dtype == _FLOAT64 and precision["master_weights"]:
                raise TypeError(f"params[{key!r}] is float64: master_weights keeps float32 "
                                f"copies of float32, float16 and bfloat16 parameters")
            stored = [param.dtype, self._state_dtype("", param)]
            if precision["rounding"] == "stochastic" and _FLOAT16 in stored:
                raise TypeError(f"params[{key!r}]: stochastic rounding is for bfloat16 "
                                f"storage; float16 values are rounded to nearest (rounding="
                                f"'nearest'), or use bfloat16")

    def _prepare(self, params, grads):
        """(plan, state) for params and grads (validated): the current plan if it was built for
        these very arrays (and gradient dtypes), else a new one (and, at the first step, a new
        state, not yet stored)."""
        names = self._all_state_names()
        state = self._core.state
        self._check_precision_fits(params, grads)
        _check_state_fits(state, names, params, self._state_dtype)
        grad_dtypes = tuple(grads[key].dtype for key in params)
        plan = self._core.plan
        if plan is not None and plan.tag[2] == grad_dtypes and plan.params_unchanged(params):
            return plan, state
        keys = tuple(params)
        groups, signatures, first_keys = self._partition(keys)
        for signature in signatures:
            self._check_combination(self._resolve(signature))
        if state is None:
            state = {name: {} for name in names}
            for key, group in zip(keys, groups):
                h = self._resolve(signatures[group])
                param = params[key]
                for name in names:
                    # Laid out like the parameter, so the kernel reads both in one flat order.
                    array = np.empty(param.shape, dtype=self._state_dtype(name, param),
                                     order=flat_order(param))
                    array[...] = param if name == "master" else self._initial_value(name, h)
                    state[name][key] = array
        precision = self._precision
        plan = _kernels.Plan(self._plan_kernel(len(self._state_names())), keys,
                             [params[key] for key in keys],
                             [tuple(state[name][key] for name in names) for key in keys],
                             tuple(names), groups, grad_dtypes, precision["master_weights"],
                             precision["rounding"] == "stochastic", precision["seed"])
        plan.tag = (signatures, first_keys, grad_dtypes)
        if plan.overlap is not None:
            raise _overlap_error(*plan.overlap)
        return plan, state

    _kernel_prefix = None  # the class's kernels are named optim_<prefix>...

    def _plan_kernel(self, n_states):
        """The kernel a plan is built for: the class's kernel with n_states state arrays (the
        plan's; its cost estimate decides on threads). Each group runs its own each step."""
        prefix = "optim_" + (self._kernel_prefix or type(self).__name__.lower())
        for name, kernel in _kernels.KERNELS.items():
            if name.startswith(prefix) and kernel.n_states == n_states:
                return name
        raise AssertionError(f"no kernel {prefix}* with {n_states} states")

    def reset(self):
        """Forget the state, the step count and the skipped steps, keeping the
        hyperparameters: the next update() starts afresh for the keys it is given.
        RuntimeError if update() is running in another thread."""
        core = self._core
        core.hold()
        try:
            core.replace(0, None)
        finally:
            core.release()

    # ---- what users read -----------------------------------------------------------------------

    @property
    def steps(self):
        """Steps taken (skipped steps not counted)."""
        return self._core.step

    @property
    def skipped_steps(self):
        """Steps skipped because a gradient held a NaN or an infinity (skip_nonfinite=True)."""
        return self._core.skipped

    @property
    def state(self):
        """The optimizer state: a read-only mapping {state name: {key: array}} (torch's names:
        exp_avg, exp_avg_sq, ...), empty before the first update(). The arrays may be read and
        written in place."""
        state = self._core.state or {}
        return types.MappingProxyType({name: types.MappingProxyType(arrays)
                                       for name, arrays in state.items()})

    def __repr__(self):
        arguments = ", ".join(f"{name}={value!r}" for name, value in
                              self._hyperparameters.items())
        if self._overrides:
            arguments += f", overrides={self._overrides!r}"
        if self._skip_nonfinite:
            arguments += ", skip_nonfinite=True"
        return f"optim.{type(self).__name__}({arguments})"

    # ---- saving and resuming -------------------------------------------------------------------

    def state_dict(self):
        """Everything needed to resume, as plain Python and NumPy data (arrays are copies):

        {"optimizer": "optim.<class>", "version": 1, "hyperparameters": {name: value},
         "precision": {"state_dtype": None or a dtype name, "master_weights": bool,
                       "rounding": "nearest" or "stochastic", "seed": int},
         "overrides": {pattern: {name: value}}, "skip_nonfinite": bool, "step": int,
         "skipped_steps": int, "state": None or {state name: {key: array}},
         "scalars": None or {name: {key: float}}}

        A schedule (callable lr) is stored as the object itself: fastopt.schedules' pickle.
        """
        core = self._core
        state = None
        if core.state is not None:
            state = {name: {key: array.copy() for key, array in arrays.items()}
                     for name, arrays in core.state.items()}
        scalars = None
        if core.scalars is not None:
            scalars = {self._scalar_state: dict(core.scalars)}
        precision = dict(self._precision)
        if precision["state_dtype"] is not None:
            precision["state_dtype"] = precision["state_dtype"].name
        return {
            "optimizer": f"optim.{type(self).__name__}",
            "version": _STATE_DICT_VERSION,
            "hyperparameters": dict(self._hyperparameters),
            "precision": precision,
            "overrides": {pattern: dict(values) for pattern, values in self._overrides.items()},
            "skip_nonfinite": self._skip_nonfinite,
            "step": core.step,
            "skipped_steps": core.skipped,
            "state": state,
            "scalars": scalars,
        }

    def load_state_dict(self, state_dict):
        """Restore what state_dict() returned (arrays copied); the next update() continues the
        run bit for bit. TypeError or ValueError, with nothing changed, if it does not fit this
        class; RuntimeError if update() is running in another thread."""
        if not isinstance(state_dict, dict):
            raise TypeError(f"state_dict must be a dict, got {_describe(state_dict)}")
        expected = {"optimizer", "version", "hyperparameters", "precision", "overrides",
                    "skip_nonfinite", "step", "skipped_steps", "state", "scalars"}
        if set(state_dict) != expected:
            raise ValueError(f"state_dict must have exactly the keys {sorted(expected)}, got "
                             f"{sorted(state_dict, key=str)}")
        name = f"optim.{type(self).__name__}"
        if state_dict["optimizer"] != name:
            raise ValueError(f"state_dict is for {state_dict['optimizer']!r}, not {name!r}")
        if state_dict["version"] != _STATE_DICT_VERSION:
            raise ValueError(f"state_dict version {state_dict['version']!r} is not supported "
                             f"(this fastopt reads version {_STATE_DICT_VERSION})")
        probe = object.__new__(type(self))
        hyper = state_dict["hyperparameters"]
        if not isinstance(hyper, dict) or set(hyper) != set(self._defaults):
            raise ValueError(f"state_dict['hyperparameters'] must have the keys "
                             f"{list(self._defaults)}")
        precision = state_dict["precision"]
        if not isinstance(precision, dict) or set(precision) != set(self._precision):
            raise ValueError(f"state_dict['precision'] must be a dict with the keys "
                             f"{sorted(self._precision)}")
        Optimizer.__init__(probe, overrides=state_dict["overrides"],
                           skip_nonfinite=state_dict["skip_nonfinite"], **precision, **hyper)
        counts = {}
        for field in ("step", "skipped_steps"):
            value = state_dict[field]
            if (isinstance(value, bool) or not isinstance(value, numbers.Integral)
                    or not 0 <= value < _MAX_STEP):
                raise ValueError(f"state_dict[{field!r}] must be an integer >= 0 and < "
                                 f"2**63 - 1, got {value!r}")
            counts[field] = int(value)
        names = probe._all_state_names()
        state = (_load_state(state_dict["state"], names,
                             (_FLOAT32, _FLOAT64, *low_precision_dtypes())) if names else None)
        if not names and state_dict["state"] not in (None, {}):
            raise ValueError("this optimizer keeps no state, but state_dict['state'] is not "
                             "None")
        scalars = self._load_scalars(state_dict["scalars"], state)
        core = self._core
        core.hold()
        try:
            for attribute in ("_hyperparameters", "_precision", "_overrides", "_skip_nonfinite"):
                object.__setattr__(self, attribute, getattr(probe, attribute))
            core.replace(counts["step"], state, scalars, counts["skipped_steps"])
        finally:
            core.release()

    def _load_scalars(self, scalars, state):
        if self._scalar_state is not None and state is not None and scalars is None:
            raise ValueError(f"state_dict['scalars'] must hold {self._scalar_state!r} for every "
                             f"key of the state")
        if self._scalar_state is None or scalars is None:
            if scalars is not None:
                raise ValueError("this optimizer keeps no scalar state, but "
                                 "state_dict['scalars'] is not None")
            return None
        if not isinstance(scalars, dict) or set(scalars) != {self._scalar_state}:
            raise ValueError(f"state_dict['scalars'] must be None or {{{self._scalar_state!r}: "
                             f"{{key: float}}}}")
        values = scalars[self._scalar_state]
        keys = set(next(iter(state.values()))) if state else set()
        if not isinstance(values, dict) or set(values) != keys:
            raise ValueError(f"state_dict['scalars'][{self._scalar_state!r}] must have one "
                             f"float per key of the state")
        return {key: _finite(f"state_dict['scalars'][{self._scalar_state!r}][{key!r}]", value)
                for key, value in values.items()}

    def __getstate__(self):
        return self.state_dict()

    def __setstate__(self, state_dict):
        cls = type(self)
        Optimizer.__init__(self, **cls._defaults)
        self.load_state_dict(state_dict)


# ---- the family ------------------------------------------------------------------------------

class SGD(Optimizer):
    """torch.optim.SGD: stochastic gradient descent, with optional momentum (heavy ball or
    Nesterov), dampening and L2 weight decay.

    Per element (g the gradient after grad_scale, clipping, maximize and weight decay
    g + weight_decay*p): without momentum p -= lr*g; with momentum, buf = g on the first step,
    then buf = momentum*buf + (1-dampening)*g, and p -= lr*(g + momentum*buf) (nesterov) or
    p -= lr*buf.
    Arguments (torch's defaults): lr=1e-3 (step size per unit of gradient, >= 0, or a schedule),
    momentum=0 (>= 0), dampening=0, weight_decay=0 (L2, >= 0), nesterov=False (needs
    momentum > 0 and dampening 0), maximize=False; and overrides, skip_nonfinite (see
    fastopt.optim).
    State: momentum_buffer, if momentum is not 0 (for some key).
    """

    _defaults = dict(lr=1e-3, momentum=0.0, dampening=0.0, weight_decay=0.0, nesterov=False,
                     maximize=False)

    def __init__(self, lr=1e-3, momentum=0.0, dampening=0.0, weight_decay=0.0, nesterov=False,
                 maximize=False, *, overrides=None, skip_nonfinite=False, **precision):
        super().__init__(lr=lr, momentum=momentum, dampening=dampening,
                         weight_decay=weight_decay, nesterov=nesterov, maximize=maximize,
                         overrides=overrides, skip_nonfinite=skip_nonfinite, **precision)

    def _check_combination(self, h, where=None):
        if h and h["nesterov"] and (h["momentum"] <= 0 or h["dampening"] != 0):
            raise ValueError(f"{where + ': ' if where else ''}Nesterov momentum requires a "
                             f"momentum > 0 and zero dampening")

    def _state_names(self, hyperparameters=None, overrides=None):
        groups = self._all_groups(hyperparameters, overrides)
        return ("momentum_buffer",) if any(h["momentum"] != 0 for h in groups) else ()

    def _group_step(self, h, lr, step, scale, scalar):
        if h["momentum"] == 0:
            return (*_coefficients("optim_sgd", **_prologue(h, scale), lr=lr), None)
        return (*_coefficients("optim_sgd_momentum", **_prologue(h, scale),
                               first=1.0 if step == 1 else 0.0, momentum=h["momentum"],
                               one_minus_dampening=1.0 - h["dampening"],
                               nesterov=1.0 if h["nesterov"] else 0.0, lr=lr), None)


class Adam(Optimizer):
    """torch.optim.Adam: adaptive moments with bias correction, L2 weight decay, AMSGrad.

    Per element (g after the prologue, with L2 decay g + weight_decay*p): m += (1-beta1)*(g-m);
    v = beta2*v + (1-beta2)*g*g; p += -(lr/bc1) * m / (sqrt(v)/sqrt(bc2) + eps), with
    bc1 = 1 - beta1**t, bc2 = 1 - beta2**t, t the step (1, 2, ...); amsgrad uses the running
    maximum of v. (The textbook's fastopt.Adam adds its 1e-7 before bias correction.)
    Arguments (torch's defaults): lr=1e-3 (or a schedule), betas=(0.9, 0.999) (each in [0, 1)),
    eps=1e-8, weight_decay=0 (L2), amsgrad=False, maximize=False; overrides, skip_nonfinite.
    State: exp_avg, exp_avg_sq (and max_exp_avg_sq with amsgrad).
    """

    _defaults = dict(lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, amsgrad=False,
                     maximize=False)
    _structural = ("amsgrad",)
    _decoupled = False

    def __init__(self, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, amsgrad=False,
                 maximize=False, *, overrides=None, skip_nonfinite=False, **precision):
        super().__init__(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay,
                         amsgrad=amsgrad, maximize=maximize, overrides=overrides,
                         skip_nonfinite=skip_nonfinite, **precision)

    def _state_names(self, hyperparameters=None, overrides=None):
        h = self._hyperparameters if hyperparameters is None else hyperparameters
        return ("exp_avg", "exp_avg_sq") + (("max_exp_avg_sq",) if h["amsgrad"] else ())

    def _group_step(self, h, lr, step, scale, scalar):
        beta1, beta2 = h["betas"]
        kernel = "optim_adam_amsgrad" if self._hyperparameters["amsgrad"] else "optim_adam"
        return (*_coefficients(
            kernel, **_prologue(h, scale, self._decoupled),
            decay=1.0 - lr * h["weight_decay"] if self._decoupled else 1.0,
            one_minus_beta1=1.0 - beta1, beta2=beta2, one_minus_beta2=1.0 - beta2,
            bias_correction2_sqrt=math.sqrt(1.0 - beta2**step), eps=h["eps"],
            neg_step_size=-(lr / (1.0 - beta1**step))), None)


class AdamW(Adam):
    """torch.optim.AdamW: Adam with decoupled weight decay, p *= 1 - lr*weight_decay before
    the Adam step (default weight_decay=1e-2). Arguments, state: as Adam."""

    _defaults = dict(Adam._defaults, weight_decay=1e-2)
    _decoupled = True
    _kernel_prefix = "adam"

    def __init__(self, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2, amsgrad=False,
                 maximize=False, *, overrides=None, skip_nonfinite=False, **precision):
        super().__init__(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay,
                         amsgrad=amsgrad, maximize=maximize, overrides=overrides,
                         skip_nonfinite=skip_nonfinite, **precision)


class Adagrad(Optimizer):
    """torch.optim.Adagrad: sum += g*g; p += -clr * g / (sqrt(sum) + eps), with
    clr = lr / (1 + (t-1)*lr_decay).
    Arguments (torch's defaults): lr=1e-2 (or a schedule), lr_decay=0, weight_decay=0 (L2),
    initial_accumulator_value=0 (where sum starts), eps=1e-10, maximize=False; overrides,
    skip_nonfinite.
    State: sum.
    """

    _defaults = dict(lr=1e-2, lr_decay=0.0, weight_decay=0.0, initial_accumulator_value=0.0,
                     eps=1e-10, maximize=False)

    def __init__(self, lr=1e-2, lr_decay=0.0, weight_decay=0.0, initial_accumulator_value=0.0,
                 eps=1e-10, maximize=False, *, overrides=None, skip_nonfinite=False, **precision):
        super().__init__(lr=lr, lr_decay=lr_decay, weight_decay=weight_decay,
                         initial_accumulator_value=initial_accumulator_value, eps=eps,
                         maximize=maximize, overrides=overrides, skip_nonfinite=skip_nonfinite, **precision)

    def _state_names(self, hyperparameters=None, overrides=None):
        return ("sum",)

    def _initial_value(self, name, h):
        return h["initial_accumulator_value"]

    def _group_step(self, h, lr, step, scale, scalar):
        clr = lr / (1.0 + (step - 1) * h["lr_decay"])
        return (*_coefficients("optim_adagrad", **_prologue(h, scale), neg_clr=-clr,
                               eps=h["eps"]), None)


class RMSprop(Optimizer):
    """torch.optim.RMSprop: sq = alpha*sq + (1-alpha)*g*g; avg = sqrt(sq) + eps (centered:
    sqrt(sq - ga*ga) + eps, with ga the running mean of g); p += -lr*g/avg, or with momentum
    buf = momentum*buf + g/avg and p += -lr*buf. (The textbook's RMSprop adds 1e-7 and has no
    centered or momentum variant.)
    Arguments (torch's defaults): lr=1e-2 (or a schedule), alpha=0.99, eps=1e-8,
    weight_decay=0 (L2), momentum=0, centered=False, maximize=False; overrides, skip_nonfinite.
    State: square_avg; grad_avg if centered; momentum_buffer if momentum > 0 (for some key).
    """

    _defaults = dict(lr=1e-2, alpha=0.99, eps=1e-8, weight_decay=0.0, momentum=0.0,
                     centered=False, maximize=False)
    _structural = ("centered",)

    def __init__(self, lr=1e-2, alpha=0.99, eps=1e-8, weight_decay=0.0, momentum=0.0,
                 centered=False, maximize=False, *, overrides=None, skip_nonfinite=False, **precision):
        super().__init__(lr=lr, alpha=alpha, eps=eps, weight_decay=weight_decay,
                         momentum=momentum, centered=centered, maximize=maximize,
                         overrides=overrides, skip_nonfinite=skip_nonfinite, **precision)

    def _state_names(self, hyperparameters=None, overrides=None):
        groups = self._all_groups(hyperparameters, overrides)
        return (("square_avg",) + (("grad_avg",) if groups[0]["centered"] else ())
                + (("momentum_buffer",) if any(h["momentum"] > 0 for h in groups) else ()))

    def _group_step(self, h, lr, step, scale, scalar):
        kernel = "optim_rmsprop"
        if self._hyperparameters["centered"]:
            kernel += "_centered"
        if h["momentum"] > 0:
            kernel += "_momentum"
        alpha = h["alpha"]
        return (*_coefficients(kernel, **_prologue(h, scale), alpha=alpha,
                               one_minus_alpha=1.0 - alpha, eps=h["eps"],
                               momentum=h["momentum"], neg_lr=-lr), None)


class Adadelta(Optimizer):
    """torch.optim.Adadelta: sq = rho*sq + (1-rho)*g*g;
    delta = sqrt(acc + eps) / sqrt(sq + eps) * g; acc = rho*acc + (1-rho)*delta*delta;
    p += -lr*delta.
    Arguments (torch's defaults): lr=1.0 (a scale on delta, or a schedule), rho=0.9 (in
    [0, 1]), eps=1e-6, weight_decay=0 (L2), maximize=False; overrides, skip_nonfinite.
    State: square_avg, acc_delta.
    """

    _defaults = dict(lr=1.0, rho=0.9, eps=1e-6, weight_decay=0.0, maximize=False)

    def __init__(self, lr=1.0, rho=0.9, eps=1e-6, weight_decay=0.0, maximize=False, *,
                 overrides=None, skip_nonfinite=False, **precision):
        super().__init__(lr=lr, rho=rho, eps=eps, weight_decay=weight_decay, maximize=maximize,
                         overrides=overrides, skip_nonfinite=skip_nonfinite, **precision)

    def _state_names(self, hyperparameters=None, overrides=None):
        return ("square_avg", "acc_delta")

    def _group_step(self, h, lr, step, scale, scalar):
        rho = h["rho"]
        return (*_coefficients("optim_adadelta", **_prologue(h, scale), rho=rho,
                               one_minus_rho=1.0 - rho, eps=h["eps"], neg_lr=-lr), None)


class Adamax(Optimizer):
    """torch.optim.Adamax: m += (1-beta1)*(g-m); u = max(beta2*u, |g| + eps);
    p += -(lr / (1 - beta1**t)) * m / u.
    Arguments (torch's defaults): lr=2e-3 (or a schedule), betas=(0.9, 0.999), eps=1e-8,
    weight_decay=0 (L2), maximize=False; overrides, skip_nonfinite.
    State: exp_avg, exp_inf.
    """

    _defaults = dict(lr=2e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, maximize=False)

    def __init__(self, lr=2e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, maximize=False,
                 *, overrides=None, skip_nonfinite=False, **precision):
        super().__init__(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay,
                         maximize=maximize, overrides=overrides, skip_nonfinite=skip_nonfinite, **precision)

    def _state_names(self, hyperparameters=None, overrides=None):
        return ("exp_avg", "exp_inf")

    def _group_step(self, h, lr, step, scale, scalar):
        beta1, beta2 = h["betas"]
        return (*_coefficients("optim_adamax", **_prologue(h, scale),
                               one_minus_beta1=1.0 - beta1, beta2=beta2, eps=h["eps"],
                               neg_clr=-(lr / (1.0 - beta1**step))), None)


class NAdam(Optimizer):
    """torch.optim.NAdam: Adam with Nesterov momentum and the momentum schedule
    mu_t = beta1 * (1 - 0.5 * 0.96**(t*momentum_decay)); mu_product (the product of mu_1..mu_t)
    is kept per key, in double.
    Arguments (torch's defaults): lr=2e-3 (or a schedule), betas=(0.9, 0.999), eps=1e-8,
    weight_decay=0, momentum_decay=4e-3, decoupled_weight_decay=False (True: p *= 1 - lr*wd,
    NAdamW), maximize=False; overrides, skip_nonfinite.
    State: exp_avg, exp_avg_sq; scalar state mu_product (in state_dict()["scalars"]).
    """

    _defaults = dict(lr=2e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0,
                     momentum_decay=4e-3, decoupled_weight_decay=False, maximize=False)
    _scalar_state = "mu_product"

    def __init__(self, lr=2e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0,
                 momentum_decay=4e-3, decoupled_weight_decay=False, maximize=False, *,
                 overrides=None, skip_nonfinite=False, **precision):
        super().__init__(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay,
                         momentum_decay=momentum_decay,
                         decoupled_weight_decay=decoupled_weight_decay, maximize=maximize,
                         overrides=overrides, skip_nonfinite=skip_nonfinite, **precision)

    def _state_names(self, hyperparameters=None, overrides=None):
        return ("exp_avg", "exp_avg_sq")

    def _group_step(self, h, lr, step, scale, mu_product):
        beta1, beta2 = h["betas"]
        decoupled = h["decoupled_weight_decay"]
        momentum_decay = h["momentum_decay"]
        mu = beta1 * (1.0 - 0.5 * (0.96 ** (step * momentum_decay)))
        mu_next = beta1 * (1.0 - 0.5 * (0.96 ** ((step + 1) * momentum_decay)))
        mu_product = (1.0 if mu_product is None else mu_product) * mu
        return (*_coefficients(
            "optim_nadam", **_prologue(h, scale, decoupled),
            decay=1.0 - lr * h["weight_decay"] if decoupled else 1.0,
            one_minus_beta1=1.0 - beta1, beta2=beta2, one_minus_beta2=1.0 - beta2,
            bias_correction2=1.0 - beta2**step, eps=h["eps"],
            gradient_coefficient=-lr * (1.0 - mu) / (1.0 - mu_product),
            average_coefficient=(-lr * mu_next) / (1.0 - mu_product * mu_next)), mu_product)


class RAdam(Optimizer):
    """torch.optim.RAdam: Adam with the variance rectification of Liu et al.; while the
    approximated SMA length rho_t is at most 5 (the first steps) the step is
    p -= lr * m / (1 - beta1**t), afterwards Adam's, scaled by the rectification term.
    Arguments (torch's defaults): lr=1e-3 (or a schedule), betas=(0.9, 0.999), eps=1e-8,
    weight_decay=0, decoupled_weight_decay=False (True: p *= 1 - lr*wd), maximize=False;
    overrides, skip_nonfinite.
    State: exp_avg, exp_avg_sq.
    """

    _defaults = dict(lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0,
                     decoupled_weight_decay=False, maximize=False)

    def __init__(self, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0,
                 decoupled_weight_decay=False, maximize=False, *, overrides=None,
                 skip_nonfinite=False, **precision):
        super().__init__(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay,
                         decoupled_weight_decay=decoupled_weight_decay, maximize=maximize,
                         overrides=overrides, skip_nonfinite=skip_nonfinite, **precision)

    def _state_names(self, hyperparameters=None, overrides=None):
        return ("exp_avg", "exp_avg_sq")

    def _group_step(self, h, lr, step, scale, scalar):
        beta1, beta2 = h["betas"]
        decoupled = h["decoupled_weight_decay"]
        rectified, rect = _RAdamTwin.rectification(beta2, step)  # the twin's rule, in double
        return (*_coefficients(
            "optim_radam_rectified" if rectified else "optim_radam",
            **_prologue(h, scale, decoupled),
            decay=1.0 - lr * h["weight_decay"] if decoupled else 1.0,
            one_minus_beta1=1.0 - beta1, beta2=beta2, one_minus_beta2=1.0 - beta2,
            bias_correction1=1.0 - beta1**step, lr=lr,
            bias_correction2_sqrt=math.sqrt(1.0 - beta2**step), eps=h["eps"], rect=rect), None)


class Lion(Optimizer):
    """Lion (Chen et al. 2023, "Symbolic Discovery of Optimization Algorithms"; optax.lion's
    rule): c = (1-beta1)*g + beta1*m; p += -lr * (sign(c) + weight_decay*p);
    m = (1-beta2)*g + beta2*m. Not in torch.optim.
    Arguments: lr=1e-4 (or a schedule; Lion wants a 3-10x smaller lr than AdamW),
    betas=(0.9, 0.99) (each in [0, 1]), weight_decay=0 (decoupled, inside the update);
    overrides, skip_nonfinite. (No maximize.)
    State: exp_avg.
    """

    _defaults = dict(lr=1e-4, betas=(0.9, 0.99), weight_decay=0.0)
    _special_checks = {"betas": _betas(True)}

    def __init__(self, lr=1e-4, betas=(0.9, 0.99), weight_decay=0.0, *, overrides=None,
                 skip_nonfinite=False, **precision):
        super().__init__(lr=lr, betas=betas, weight_decay=weight_decay, overrides=overrides,
                         skip_nonfinite=skip_nonfinite, **precision)

    def _state_names(self, hyperparameters=None, overrides=None):
        return ("exp_avg",)

    def _group_step(self, h, lr, step, scale, scalar):
        beta1, beta2 = h["betas"]
        return (*_coefficients("optim_lion", gradient_scale=scale,
                               weight_decay=h["weight_decay"], one_minus_beta1=1.0 - beta1,
                               beta1=beta1, one_minus_beta2=1.0 - beta2, beta2=beta2,
                               neg_lr=-lr), None)


__all__ = ["Optimizer", *OPTIMIZERS, "OPTIMIZERS"]
