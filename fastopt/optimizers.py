"""The optimizers: the textbook's dict-based classes, running on fastopt's compiled kernels.

"The textbook" is *Deep Learning from Scratch* (Koki Saitou), whose `common/optimizer.py` defines
the classes SGD, Momentum, Nesterov, AdaGrad, RMSprop and Adam that fastopt.reference reproduces.
Each class keeps the textbook's constructor arguments, defaults, attribute names and update(params,
grads) contract: params and grads are dicts of NumPy arrays with the same keys; update() changes
the arrays in params in place and returns None. Results are bit for bit those of
fastopt.reference.

This layer validates everything, keeps the state and the step counter, and computes this step's
scalar coefficients in double exactly as the reference's Python expressions do. The per-element
work is one call into compiled code (fastopt._kernels.Plan.step) for all arrays of the dict.
"""
import math
import numbers
import types

import numpy as np

from . import _kernels


_STATE_DICT_VERSION = 1
_MAX_STEP = 2**63 - 1  # the step counter is a signed 64-bit integer (and step + 1 must fit)
_SUPPORTED_DTYPES = _kernels.DTYPES  # the C dtype table's rows (native byte order)
_DTYPE_NAMES = " and ".join(dtype.name for dtype in _SUPPORTED_DTYPES)  # "float32 and float64"
EPSILON = 1e-7  # the textbook's constant, added to sqrt(h) or sqrt(v)


def _check_real(name, value):
    """value as a Python float, or as a NumPy float16/float32/float64 scalar if it is a NumPy
    scalar (NumPy integers become float64); TypeError naming name otherwise."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__}")
    if isinstance(value, np.generic):
        # A NumPy scalar keeps its dtype (NEP 50): the reference computes its coefficients in
        # that dtype, and an array operation with it in the wider of the two dtypes.
        if isinstance(value, np.integer):
            return np.float64(value)  # what NumPy computes with an integer meeting a float array
        if value.dtype.itemsize > 8:
            raise TypeError(f"{name} is a numpy.{value.dtype.name} scalar; fastopt computes in "
                            f"float32 and float64: pass a Python float or a NumPy float16, "
                            f"float32 or float64 scalar")
        return value
    # A Python float: the coefficients are then computed in double and rounded to the array's
    # dtype, as with the textbook's float literals.
    return float(value)


def _describe(value):
    if isinstance(value, np.ndarray):
        return f"a numpy.ndarray of dtype {value.dtype}"
    return f"a {type(value).__module__}.{type(value).__qualname__}".replace("a builtins.", "a ")


class _Hyperparameter:
    """A validated constructor argument that stays assignable (opt.lr = 0.001 works): a real
    number in [low, high) (high = inf: any finite number >= low), stored as a Python float, or
    as the NumPy scalar it is (see _check_real). The range is data, so tests generate the
    values it must reject."""

    def __init__(self, low=0.0, high=math.inf):
        self.low, self.high = float(low), float(high)
        self.valid = (f"a finite number >= {self.low:g}" if self.high == math.inf
                      else f"in [{self.low:g}, {self.high:g})")

    def check(self, name, value):
        """value (see _check_real) if it is in range; TypeError or ValueError naming name if
        not."""
        value = _check_real(name, value)
        if not (self.low <= value < self.high):  # also rejects NaN and, with high = inf, inf
            raise ValueError(f"{name} must be {self.valid}, got {value!r}")
        return value

    def __set_name__(self, owner, name):
        self.name = name
        self.attribute = "_" + name

    def __get__(self, instance, owner=None):
        if instance is None:
            return self
        return getattr(instance, self.attribute)

    def __set__(self, instance, value):
        value = self.check(self.name, value)
        changed_type = type(value) is not type(getattr(instance, self.attribute, 0.0))
        setattr(instance, self.attribute, value)
        instance._fixed = None  # what _coefficients derived from the old values
        if changed_type:
            instance._hyperparameter_types_changed()


def _read_only_attribute(name):
    """A setter for an attribute the textbook's classes let users assign (opt.m = None,
    opt.iter = 0) but fastopt keeps consistent with its compiled plan: it raises
    AttributeError saying what to do instead."""
    in_place = "" if name == "iter" else (
        f"; to change state values, write into the arrays in place (opt.{name}[key][...] = ...)")

    def setter(self, value):
        raise AttributeError(
            f"{type(self).__name__}.{name} cannot be assigned: fastopt keeps the state and the "
            f"step count consistent with each other. To start over, call reset() (it forgets "
            f"the state and the step count) or create a new optimizer; to resume a saved run, "
            f"use load_state_dict(){in_place}")

    return setter


def _state_view(name):
    def getter(self):
        state = self._state
        return None if state is None else types.MappingProxyType(state[name])

    getter.__doc__ = (f"The optimizer's {name!r} state: a read-only mapping from parameter name "
                      "to array, None before the first update(). The arrays may be read and "
                      "written in place; use load_state_dict() to replace them, reset() to "
                      "forget them.")
    return property(getter, _read_only_attribute(name))


# Every optimizer class by name, in the order they are defined: each class that names a kernel
# in its own body registers itself (Optimizer.__init_subclass__). Tests, benchmarks and the demos
# iterate over this, so a new optimizer is tested and measured once it is defined here (and in
# fastopt.reference).
OPTIMIZERS = {}


class Optimizer:
    """Base class: validation, state, the plan, state_dict and pickling.

    Subclasses set _kernel (a name in fastopt._kernels.KERNELS, the C registry), _state_names
    (the textbook's attribute names of the state dicts, e.g. ("m", "v"), as many as the kernel
    has state arrays) and _hyperparameters, and implement _coefficients(step) -> tuple of floats
    in the order of the kernel's coefficient names. A public class whose body sets _kernel is
    registered in OPTIMIZERS (pass register=False in the class statement to opt out).
    """

    _kernel = None
    _state_names = ()
    _hyperparameters = ()
    # Optional: what _coefficients derives from the hyperparameters alone, computed at its first
    # call and kept until a hyperparameter is assigned (which resets it to None).
    _fixed = None
    # True while every hyperparameter is a Python float (the textbook's case): the class's
    # _kernel then computes as the reference does. With NumPy scalars, see _select_kernel.
    _plain = True
    # The kernels that may run this optimizer, each with the names of the coefficients it
    # multiplies in float64 even with float32 arrays (None: just _kernel, with none).
    _kernel_variants = None

    def __init_subclass__(cls, register=True, **kwargs):
        super().__init_subclass__(**kwargs)
        kernel = cls.__dict__.get("_kernel")
        if kernel is None or not register or cls.__name__.startswith("_"):
            return
        entry = _kernels.KERNELS.get(kernel)
        if entry is None:
            raise TypeError(f"{cls.__name__}._kernel = {kernel!r} is not a kernel of the C "
                            f"registry ({', '.join(_kernels.KERNELS)})")
        if entry.n_states != len(cls._state_names):
            raise TypeError(f"{cls.__name__} names {len(cls._state_names)} state arrays "
                            f"{cls._state_names}, but kernel {kernel!r} has {entry.n_states}")
        if cls.__name__ in OPTIMIZERS:
            raise TypeError(f"an optimizer named {cls.__name__} is already registered")
        OPTIMIZERS[cls.__name__] = cls

    def __init__(self, **hyperparameters):
        # The step counter, the state ({state name: {key: array}}, created at the first
        # update()) and the plan: kept and changed together by the core (see _kernels.Core).
        self._core = _kernels.Core()
        for name, value in hyperparameters.items():
            setattr(self, name, value)  # validated by the _Hyperparameter descriptors

    def _hyperparameter_types_changed(self):
        """A hyperparameter became (or stopped being) a NumPy scalar, or changed its dtype:
        which kernel runs may change, so the next update() validates and plans afresh."""
        self._plain = all(type(getattr(self, "_" + name, 0.0)) is float
                          for name in self._hyperparameters)
        core = self.__dict__.get("_core")
        if core is not None:
            core.drop_plan()

    def _select_kernel(self, coefficients, params):
        """The kernel that computes this step as the reference does given the types of the
        coefficients (Python floats, or NumPy scalars: see _check_real) and the dtypes of
        params; TypeError if none does (a float64 NumPy scalar with float32 arrays makes the
        reference compute each element in float64)."""
        if self._plain:
            return self._kernel
        names = _kernels.KERNELS[self._kernel].coefficient_names
        dtypes = {}  # dtype -> the first key of that dtype
        for key, array in params.items():
            dtypes.setdefault(array.dtype, key)
        for kernel, wide in self._kernel_variants or ((self._kernel, ()),):
            if all(_computed_in(value, dtype) == (np.float64 if name in wide else dtype)
                   for name, value in zip(names, coefficients) for dtype in dtypes):
                return kernel
        narrowest = min(dtypes, key=lambda dtype: dtype.itemsize)
        wider = [f"{name} (numpy.{value.dtype.name})" for name in self._hyperparameters
                 for value in [getattr(self, name)]
                 if isinstance(value, np.generic) and value.dtype.itemsize > narrowest.itemsize]
        raise TypeError(
            f"{type(self).__name__}: {', '.join(wider) or 'a hyperparameter'} is a NumPy scalar "
            f"wider than params[{dtypes[narrowest]!r}] ({narrowest}): the textbook's code then "
            f"computes every element in the wider dtype and rounds the result, which fastopt's "
            f"{narrowest} kernels do not. Pass it as a Python float (float(x)) or as a NumPy "
            f"scalar of the arrays' dtype")

    _step = property(lambda self: self._core.step)
    _state = property(lambda self: self._core.state)
    _plan = property(lambda self: self._core.plan)

    # ---- the hot path ------------------------------------------------------------------------

    # Compiled: it calls _coefficients(step), runs the current plan if params and grads fit it,
    # and counts the step; otherwise it calls _validate_and_step. Its docstring says the rest.
    update = _kernels.update

    def _validate_and_step(self, params, grads):
        """The slow path of update(), holding the core: validate in full, which raises for bad
        input, build or reuse a plan, run the step and commit it."""
        core = self._core
        core.hold()
        try:
            # The plan alone decides whether arrays overlap. The step runs on the very objects
            # validated (a snapshot of both dicts, read once through params[key]), whatever
            # other threads do to the dicts meanwhile.
            params, grads = _validate(params, grads)
            step = core.step + 1
            coefficients = self._coefficients(step)
            plan, state = self._prepare(params, grads, self._select_kernel(coefficients, params))
            # Only if the step runs do the new state and plan become the optimizer's.
            reason = core.commit(plan, state, params, grads, coefficients, step)
        finally:
            core.release()
        _raise_if_declined(plan, reason)

    def _coefficients(self, step):
        raise NotImplementedError

    def reset(self):
        """Forget the optimizer state and the step count, keeping the hyperparameters: the next
        update() starts afresh, as a new optimizer would, and creates the state for the keys
        it is given (the way to add or remove parameters after the first update()).
        RuntimeError if update() is running in another thread."""
        core = self._core
        core.hold()
        try:
            core.replace(0, None)
        finally:
            core.release()

    # ---- validation --------------------------------------------------------------------------

    def _prepare(self, params, grads, kernel):
        """Check params against the state; return (plan, state): the plan of kernel to run (the
        current one when it runs that kernel on the very parameter arrays it was built for) and
        the state it updates (created, not yet stored, at the first step). Raises ValueError if
        arrays the step writes share memory. params and grads have passed _validate()."""
        keys = list(params)
        state = self._state
        _check_state_fits(state, self._state_names, params)
        plan = self._plan
        if plan is not None and plan.kernel == kernel and plan.params_unchanged(params):
            return plan, state
        if state is None and self._state_names:
            # Laid out like the parameter, so the kernel reads both in one flat order.
            state = {name: {key: _zeros_like_layout(params[key]) for key in params}
                     for name in self._state_names}
        plan = _kernels.Plan(kernel, tuple(keys), [params[k] for k in keys],
                             [tuple(state[name][k] for name in self._state_names) for k in keys]
                             if self._state_names else [() for _ in keys], self._state_names)
        if plan.overlap is not None:
            raise _overlap_error(*plan.overlap)
        return plan, state

    # ---- state -------------------------------------------------------------------------------

    def state_dict(self):
        """Everything needed to resume: plain Python and NumPy data (arrays are copies).

        {"optimizer": class name, "version": 1, "hyperparameters": {name: float},
         "step": int, "state": None or {state name: {key: array}}}
        """
        state = None
        if self._state is not None:
            state = {name: {key: array.copy() for key, array in arrays.items()}
                     for name, arrays in self._state.items()}
        return {
            "optimizer": type(self).__name__,
            "version": _STATE_DICT_VERSION,
            "hyperparameters": {name: getattr(self, name) for name in self._hyperparameters},
            "step": self._step,
            "state": state,
        }

    def load_state_dict(self, state_dict):
        """Restore what state_dict() returned (the arrays are copied). The next update()
        continues the run bit for bit. Raises TypeError or ValueError and changes nothing if
        state_dict does not fit this optimizer; RuntimeError if update() is running in another
        thread."""
        if not isinstance(state_dict, dict):
            raise TypeError(f"state_dict must be a dict, got {_describe(state_dict)}")
        expected = {"optimizer", "version", "hyperparameters", "step", "state"}
        if set(state_dict) != expected:
            raise ValueError(f"state_dict must have exactly the keys {sorted(expected)}, got "
                             f"{sorted(state_dict, key=str)}")
        if state_dict["optimizer"] != type(self).__name__:
            raise ValueError(f"state_dict is for {state_dict['optimizer']!r}, not "
                             f"{type(self).__name__!r}")
        version = state_dict["version"]
        if (isinstance(version, bool) or not isinstance(version, numbers.Integral)
                or version != _STATE_DICT_VERSION):
            raise ValueError(f"state_dict version {state_dict['version']!r} is not supported "
                             f"(this fastopt reads version {_STATE_DICT_VERSION})")
        hyper = state_dict["hyperparameters"]
        if not isinstance(hyper, dict) or set(hyper) != set(self._hyperparameters):
            raise ValueError(f"state_dict['hyperparameters'] must have the keys "
                             f"{list(self._hyperparameters)}")
        checked = {name: getattr(type(self), name).check(name, value)
                   for name, value in hyper.items()}
        step = state_dict["step"]
        if (isinstance(step, bool) or not isinstance(step, numbers.Integral)
                or not 0 <= step < _MAX_STEP):
            raise ValueError(f"state_dict['step'] must be an integer >= 0 and < 2**63 - 1, "
                             f"got {step!r}")
        step = int(step)
        # The next update() computes its coefficients from step + 1: that must be possible
        # (beta**step overflows for a step such as 2**1024), or every later update would fail.
        # Coefficients that are infinite at step 1 already come from the hyperparameters (an
        # lr near the largest float), which update() accepts: the step is not to blame.
        probe = object.__new__(type(self))
        Optimizer.__init__(probe, **checked)
        try:
            coefficients = probe._coefficients(step + 1)
        except (OverflowError, ZeroDivisionError, ValueError):
            coefficients = (math.nan,)
        first = probe._coefficients(1)
        if any(not math.isfinite(value) and (len(first) != len(coefficients)
                                             or math.isfinite(first[i]))
               for i, value in enumerate(coefficients)):
            raise ValueError(f"state_dict['step'] = {step} is too large: the next update's "
                             f"coefficients cannot be computed from it")
        state = _load_state(state_dict["state"], self._state_names)

        core = self._core
        core.hold()  # RuntimeError if update() is running in another thread
        try:
            for name, value in checked.items():
                setattr(self, name, value)
            core.replace(step, state)
        finally:
            core.release()

    def __getstate__(self):
        return self.state_dict()

    def __setstate__(self, state_dict):
        Optimizer.__init__(self)
        self.load_state_dict(state_dict)

    def __repr__(self):
        arguments = ", ".join(f"{name}={getattr(self, name)!r}" for name in self._hyperparameters)
        return f"{type(self).__name__}({arguments})"


def _check_dtypes(key, p, g):
    """The textbook classes' rule: a float32 or float64 parameter, its gradient of the same
    dtype; TypeError naming the key otherwise."""
    if p.dtype not in _SUPPORTED_DTYPES:
        raise TypeError(f"params[{key!r}] has dtype {p.dtype}; fastopt updates "
                        f"{_DTYPE_NAMES} arrays in native byte order")
    if g.dtype != p.dtype:
        raise TypeError(f"grads[{key!r}] has dtype {g.dtype} but params[{key!r}] has dtype "
                        f"{p.dtype}; convert the gradient (grads[{key!r}].astype("
                        f"{p.dtype.name})) or the parameter")


def _validate(params, grads, check_dtypes=_check_dtypes):
    """Check the structure, types, dtypes (check_dtypes(key, param, grad) raises TypeError)
    and shapes of params and grads. Return snapshots of
    both as plain dicts in params' key order, each value read once (params[key]), with NumPy
    scalars (the gradient of a 0-d parameter is often one) as 0-d arrays and gradients of other
    ndarray subclasses as plain ndarray views of the same memory."""
    if not isinstance(params, dict):
        raise TypeError(f"params must be a dict of numpy arrays, got {_describe(params)}")
    if not isinstance(grads, dict):
        raise TypeError(f"grads must be a dict of numpy arrays, got {_describe(grads)}")
    keys = list(params)
    missing = [key for key in keys if key not in grads]
    if missing:
        raise ValueError(f"grads has no entry for the params {missing}")
    extra = [key for key in grads if key not in params]
    if extra:
        raise ValueError(f"grads has entries that are not in params: {extra}")
    params_read, grads_read = {}, {}
    for key in keys:
        p, g = params[key], grads[key]  # each read once: the step uses these very objects
        if not isinstance(p, np.ndarray):
            raise TypeError(f"params[{key!r}] must be a numpy.ndarray, got {_describe(p)}")
        if isinstance(g, np.floating):
            g = np.asarray(g)
        if not isinstance(g, np.ndarray):
            raise TypeError(f"grads[{key!r}] must be a numpy.ndarray, got {_describe(g)}")
        for name, value in ((f"params[{key!r}]", p), (f"grads[{key!r}]", g)):
            _reject_array_subclass(name, value)
        check_dtypes(key, p, g)
        if g.shape != p.shape:
            raise ValueError(f"grads[{key!r}] has shape {g.shape} but params[{key!r}] has "
                             f"shape {p.shape}")
        if not p.flags.writeable:
            raise ValueError(f"params[{key!r}] is read-only; update() changes parameters in "
                             f"place")
        params_read[key] = p
        grads_read[key] = g if type(g) is np.ndarray else g.view(np.ndarray)
    return params_read, grads_read


def _check_state_fits(state, state_names, params, state_dtype=lambda name, param: param.dtype):
    """ValueError unless state (None, or {state name: {key: array}}) has an array of each
    parameter's shape, and of dtype state_dtype(name, param), for every key of params."""
    if state is None:
        return
    for key, param in params.items():
        for name in state_names:
            if key not in state[name]:
                raise ValueError(
                    f"params[{key!r}] has no optimizer state: the state was created at the "
                    f"first update() for the keys {sorted(state[name], key=str)}. To train a "
                    f"different set of parameters, call reset() first (it forgets the state "
                    f"and the step count) or use a new optimizer")
            array = state[name][key]
            if array.shape != param.shape or array.dtype != state_dtype(name, param):
                raise ValueError(
                    f"params[{key!r}] has shape {param.shape} and dtype {param.dtype}, but the "
                    f"optimizer state {name}[{key!r}] has shape {array.shape} and dtype "
                    f"{array.dtype} (expected {state_dtype(name, param)})")


def _computed_in(coefficient, dtype):
    """The dtype NumPy computes coefficient * (array of dtype) in: the array's for a Python
    float (NEP 50: it adapts), the wider of the two for a NumPy scalar."""
    if type(coefficient) is float:
        return dtype
    return np.result_type(dtype, coefficient.dtype)


def _reject_array_subclass(name, value):
    """TypeError for the ndarray subclasses whose meaning an elementwise update would betray:
    a masked array (the kernel would update masked elements; the textbook's NumPy code does
    not) and numpy.matrix (whose * is a matrix product, so the textbook's formulas compute other
    numbers). Other subclasses (numpy.memmap, ...) are updated as plain arrays."""
    if isinstance(value, np.ma.MaskedArray):
        raise TypeError(f"{name} is a numpy.ma.MaskedArray: fastopt updates every element and "
                        f"would change masked ones; pass plain arrays (e.g. {name}.data, with "
                        f"the masked gradients set to 0)")
    if isinstance(value, np.matrix):
        raise TypeError(f"{name} is a numpy.matrix, whose * is a matrix product, so the "
                        f"textbook's formulas give other numbers; pass numpy.asarray({name})")


def _raise_if_declined(plan, reason):
    """After a validated plan ran (or not): nothing if it ran; ValueError naming the arrays if a
    gradient shares memory with what the step writes (the one thing only the plan checks);
    AssertionError for any other reason, which validation should have made impossible."""
    if reason == _kernels.DECLINED_OVERLAP:
        key = plan.keys[plan.declined_index]
        raise _overlap_error(plan.written_name(plan.overlapping_index), f"grads[{key!r}]")
    if reason != _kernels.STEP_RAN:
        raise AssertionError(f"fastopt: a validated plan declined to run (reason {reason}); "
                             f"please report")


def _overlap_error(first, second):
    """The ValueError for two arrays of a step that share memory, named as the plan names them."""
    return ValueError(f"{first} and {second} share memory; fastopt updates each parameter from "
                      f"its own gradient and state, so they must not overlap")


def flat_order(array):
    """The order in which an array's elements enter a concatenated run: Fortran order for an
    array that is Fortran-contiguous but not C-contiguous, C order otherwise. The state arrays
    are laid out this way, so the plan reads parameter and state in one flat order, and the
    reduction pass reads gradients in it (fastopt.reference spells the same rule out)."""
    return "F" if array.flags.f_contiguous and not array.flags.c_contiguous else "C"


def _zeros_like_layout(array):
    order = flat_order(array)
    return np.zeros(array.shape, dtype=array.dtype, order=order)


def _load_state(state, state_names, dtypes=_SUPPORTED_DTYPES):
    if state is None:
        return None
    if not state_names:
        raise ValueError("this optimizer keeps no state, but state_dict['state'] is not None")
    if not isinstance(state, dict) or set(state) != set(state_names):
        raise ValueError(f"state_dict['state'] must be None or a dict with the keys "
                         f"{list(state_names)}")
    keys = None
    loaded = {}
    for name in state_names:
        arrays = state[name]
        if not isinstance(arrays, dict):
            raise TypeError(f"state_dict['state'][{name!r}] must be a dict of arrays")
        if keys is None:
            keys = set(arrays)
        elif set(arrays) != keys:
            raise ValueError("state_dict['state'] entries must all have the same keys")
        loaded[name] = {}
        for key, array in arrays.items():
            if not isinstance(array, np.ndarray) or array.dtype not in dtypes:
                names = " or ".join(dtype.name for dtype in dtypes)
                raise TypeError(f"state_dict['state'][{name!r}][{key!r}] must be a {names} "
                                f"numpy.ndarray, got {_describe(array)}")
            copy = _zeros_like_layout(array)
            copy[...] = array
            loaded[name][key] = copy
    return loaded


# ---- the six optimizers ------------------------------------------------------------------------

class SGD(Optimizer):
    """Stochastic gradient descent, as the textbook's SGD: params -= lr * grads.

    Arguments (Python floats or NumPy scalars: see the README; assignable between steps):
      lr: learning rate, the step size per unit of gradient; a finite real number >= 0
        (default 0.01).
    State: none.
    """

    _kernel = "sgd"
    _hyperparameters = ("lr",)
    lr = _Hyperparameter(0.0, math.inf)

    def __init__(self, lr=0.01):
        super().__init__(lr=lr)

    def _coefficients(self, step):
        return (self._lr,)


class _VelocityOptimizer(Optimizer):
    """What Momentum and Nesterov share: lr, momentum and the velocity state v."""

    _state_names = ("v",)
    _hyperparameters = ("lr", "momentum")
    lr = _Hyperparameter(0.0, math.inf)
    momentum = _Hyperparameter(0.0, 1.0)
    v = _state_view("v")

    def __init__(self, lr=0.01, momentum=0.9):
        super().__init__(lr=lr, momentum=momentum)


class Momentum(_VelocityOptimizer):
    """Momentum SGD, as the textbook's Momentum: v = momentum*v - lr*grads; params += v.

    Arguments (Python floats or NumPy scalars: see the README; assignable between steps):
      lr: learning rate, the step size per unit of gradient; a finite real number >= 0
        (default 0.01); folded into the velocity, so a new lr acts through new gradients.
      momentum: the fraction of the velocity kept from one step to the next, in [0, 1)
        (default 0.9).
    State: .v, the velocity per parameter (starts at 0; same shape and dtype).
    """

    _kernel = "momentum"

    def _coefficients(self, step):
        return (self._momentum, self._lr)


class Nesterov(_VelocityOptimizer):
    """Nesterov's accelerated gradient, in the textbook's formulation:
    v = momentum*v - lr*grads; params += momentum**2 * v - (1 + momentum) * lr * grads.

    Arguments (Python floats or NumPy scalars: see the README; assignable between steps):
      lr: learning rate, the step size per unit of gradient; a finite real number >= 0
        (default 0.01).
      momentum: the fraction of the velocity kept from one step to the next, in [0, 1)
        (default 0.9).
    State: .v, the velocity per parameter (starts at 0; same shape and dtype).
    """

    _kernel = "nesterov"

    def _coefficients(self, step):
        fixed = self._fixed
        if fixed is None:
            momentum, lr = self._momentum, self._lr
            fixed = self._fixed = (momentum, lr, momentum * momentum, (1 + momentum) * lr)
        return fixed


class AdaGrad(Optimizer):
    """AdaGrad, as the textbook's AdaGrad: h += grads**2; params -= lr*grads / (sqrt(h) + 1e-7).

    Arguments (Python floats or NumPy scalars: see the README; assignable between steps):
      lr: learning rate, the step size per unit of gradient; a finite real number >= 0
        (default 0.01).
    The 1e-7 that keeps the division finite is the textbook's constant (not an argument).
    State: .h, the sum of squared gradients per parameter (starts at 0).
    """

    _kernel = "adagrad"
    _state_names = ("h",)
    _hyperparameters = ("lr",)
    lr = _Hyperparameter(0.0, math.inf)
    h = _state_view("h")

    def __init__(self, lr=0.01):
        super().__init__(lr=lr)

    def _coefficients(self, step):
        return (self._lr, EPSILON)


class RMSprop(Optimizer):
    """RMSprop, as the textbook's RMSprop:
    h = decay_rate*h + (1-decay_rate)*grads**2; params -= lr*grads / (sqrt(h) + 1e-7).

    Arguments (Python floats or NumPy scalars: see the README; assignable between steps):
      lr: learning rate, the step size per unit of gradient; a finite real number >= 0
        (default 0.01).
      decay_rate: the fraction of h kept from one step to the next, in [0, 1) (default 0.99).
    The 1e-7 is the textbook's constant (not an argument).
    State: .h, the moving average of squared gradients per parameter (starts at 0).
    """

    _kernel = "rmsprop"
    _state_names = ("h",)
    _hyperparameters = ("lr", "decay_rate")
    lr = _Hyperparameter(0.0, math.inf)
    decay_rate = _Hyperparameter(0.0, 1.0)
    h = _state_view("h")

    def __init__(self, lr=0.01, decay_rate=0.99):
        super().__init__(lr=lr, decay_rate=decay_rate)

    def _coefficients(self, step):
        fixed = self._fixed
        if fixed is None:
            decay_rate = self._decay_rate
            fixed = self._fixed = (decay_rate, 1 - decay_rate, self._lr, EPSILON)
        return fixed


class Adam(Optimizer):
    """Adam, in the textbook's formulation: with t the step number (1, 2, ...),
    lr_t = lr * sqrt(1 - beta2**t) / (1 - beta1**t); m += (1-beta1)*(grads-m);
    v += (1-beta2)*(grads**2-v); params -= lr_t * m / (sqrt(v) + 1e-7).

    Arguments (Python floats or NumPy scalars: see the README; assignable between steps):
      lr: learning rate, the step size per unit of gradient; a finite real number >= 0
        (default 0.001); the bias correction is folded into lr_t.
      beta1: decay rate of the first-moment average m, in [0, 1) (default 0.9).
      beta2: decay rate of the second-moment average v, in [0, 1) (default 0.999).
    The 1e-7 is added to sqrt(v) before bias correction (the textbook's constant; PyTorch adds
    its eps after).
    State: .m and .v per parameter (start at 0), and .iter, the number of steps taken.
    """

    _kernel = "adam"
    _state_names = ("m", "v")
    _hyperparameters = ("lr", "beta1", "beta2")
    lr = _Hyperparameter(0.0, math.inf)
    beta1 = _Hyperparameter(0.0, 1.0)
    beta2 = _Hyperparameter(0.0, 1.0)
    m = _state_view("m")
    v = _state_view("v")

    def __init__(self, lr=0.001, beta1=0.9, beta2=0.999):
        super().__init__(lr=lr, beta1=beta1, beta2=beta2)

    iter = property(lambda self: self._step, _read_only_attribute("iter"),
                    doc="Steps taken so far (the textbook's Adam.iter); read-only: see reset() "
                        "and load_state_dict().")

    # lr_t is a NumPy scalar in the reference (np.sqrt): float64 from Python floats, then
    # multiplied in float64 with float32 arrays; float32 from float32 hyperparameters.
    _kernel_variants = (("adam", ("lr_t",)), ("adam_lr_t_f32", ()))

    def _coefficients(self, step):
        fixed = self._fixed
        if fixed is None:
            beta1, beta2 = self._beta1, self._beta2
            # math.sqrt gives np.sqrt's bits for a Python float, faster; a NumPy scalar keeps
            # its dtype through np.sqrt, as in the reference.
            fixed = self._fixed = (1 - beta1, 1 - beta2, math.sqrt if self._plain else np.sqrt)
        one_minus_beta1, one_minus_beta2, sqrt = fixed
        lr_t = self._lr * sqrt(1.0 - self._beta2**step) / (1.0 - self._beta1**step)
        return (one_minus_beta1, one_minus_beta2, lr_t, EPSILON)


__all__ = ["Optimizer", *OPTIMIZERS]
