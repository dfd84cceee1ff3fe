"""The NumPy twins of fastopt.optim: PyTorch's optimizers (and Lion), written to fix the order of
every operation and the dtype of every intermediate. fastopt.optim matches these bit for bit.

Conventions (the same as the textbook twins in fastopt.reference):
- every scalar is a Python float computed in double; when it meets an array, NumPy 2 rounds it
  to the array's dtype (NEP 50), and the array operation runs in that dtype;
- the per-element expressions follow torch.optim's single-tensor code (foreach=False), in its
  order, except where a comment says otherwise; torch is a peer within a tolerance, these are
  the definition.

Options every class has:
- overrides: {pattern: {hyperparameter: value}}: a key takes the constructor's values, then
  those of every pattern that matches it, in order (a later match wins). A pattern matches a
  key equal to it, or a string key it matches as a shell-style wildcard (fnmatch.fnmatchcase).
- lr may be a callable of the step number (1, 2, ...), in the constructor or in an override.
- update(params, grads, grad_scale=None, max_grad_norm=None) -> the global norm or None:
  the gradient of each key is multiplied by one scalar before anything else,
      scale = grad_scale * clip (grad_scale 1.0 when None, clip 1.0 without max_grad_norm),
      negated for a key whose maximize is True;
  norm = sqrt(sum_of_squares(grads)) * abs(grad_scale), sum_of_squares from fastopt.reference
  (the engine's fixed order), each gradient read in its parameter's flat order (Fortran order
  for a Fortran-contiguous parameter that is not C-contiguous, else C order: the order of the
  state arrays), which is fastopt.global_norm's order whenever a gradient has its parameter's
  layout; clip = max_grad_norm / (norm + 1e-6) if that is below 1 (or NaN),
  else 1.0 (torch.nn.utils.clip_grad_norm_'s rule). With skip_nonfinite=True, a step whose
  gradients hold a NaN or an infinity, or whose norm is not finite, changes nothing but
  skipped_steps. The norm is returned when it was computed (max_grad_norm or skip_nonfinite).
"""
import fnmatch
import math
import sys

import numpy as np

from . import sum_of_squares

CLIP_EPSILON = 1e-6  # torch.nn.utils.clip_grad_norm_'s: clip = max_norm / (norm + 1e-6)


# ---- low precision ------------------------------------------------------------------------------
# A float16 or bfloat16 parameter (or gradient, or state array) is upcast to float32, the
# float32 twin runs on the copies, and every array the step writes is rounded back once (or,
# with a master copy, the parameter gets the rounded master). Rounding is to nearest even
# (NumPy's and ml_dtypes' astype), or, for bfloat16, stochastic: the 16 bits dropped from the
# float32 value plus 16 random bits, carried into the kept bits, then dropped. The random bits
# of element e (its index in the array's flat order) of array a (0: the parameter, 1 + s: state
# array s) of the key at position k in params, at step t, are random16(stream(seed, t, k, a),
# e): the same on any thread split or SIMD path, and after a resume.

def low_precision_dtypes():
    """(numpy.float16, ml_dtypes.bfloat16): bfloat16 only if ml_dtypes has been imported (a
    bfloat16 array cannot exist before)."""
    ml_dtypes = sys.modules.get("ml_dtypes")
    return (np.dtype(np.float16),) + ((np.dtype(ml_dtypes.bfloat16),) if ml_dtypes else ())


MASK64 = 2**64 - 1


def mix64(z):
    """splitmix64's finaliser on a Python int, modulo 2**64."""
    z = (z + 0x9E3779B97F4A7C15) & MASK64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK64
    return z ^ (z >> 31)


def stream(seed, step, key_index, array_index):
    """The random stream number of one array of one key at one step."""
    return mix64(mix64(mix64(mix64(seed) ^ step) ^ key_index) ^ array_index)


def hash32(x):
    """lowbias32 on a uint32 array (wrapping multiplications)."""
    x = x ^ (x >> np.uint32(16))
    x = x * np.uint32(0x7FEB352D)
    x = x ^ (x >> np.uint32(15))
    x = x * np.uint32(0x846CA68B)
    return x ^ (x >> np.uint32(16))


def random16(stream_number, elements):
    """The 16 random bits (as uint32) of each element index in elements (uint64 array)."""
    low, high = np.uint32(stream_number & 0xFFFFFFFF), np.uint32(stream_number >> 32)
    with np.errstate(over="ignore"):
        h = hash32(elements.astype(np.uint32) ^ low)
        h = hash32(h ^ (elements >> np.uint64(32)).astype(np.uint32) ^ high)
    return h & np.uint32(0xFFFF)


def round_to(values, dtype, stochastic=False, stream_number=0, order="C"):
    """float32 values rounded once to dtype: to nearest even, or (bfloat16, stochastic) with
    the random bits of each element's index in the given flat order."""
    if not stochastic or dtype != low_precision_dtypes()[-1] or dtype == np.float16:
        return values.astype(dtype)
    flat = np.ravel(values, order=order)
    bits = flat.view(np.uint32)
    with np.errstate(over="ignore"):
        rounded = ((bits + random16(stream_number, np.arange(flat.size, dtype=np.uint64)))
                   >> np.uint32(16)).astype(np.uint16)
    nan = np.isnan(flat)
    rounded[nan] = ((bits[nan] >> np.uint32(16)) | np.uint32(0x40)).astype(np.uint16)
    return rounded.view(dtype).reshape(values.shape, order=order)


def flat_order(array):
    """"F" for an array that is Fortran-contiguous and not C-contiguous, else "C"."""
    return "F" if array.flags.f_contiguous and not array.flags.c_contiguous else "C"


def pattern_matches(pattern, key):
    """Does an overrides pattern select key? Equal keys match; a string pattern also matches a
    string key as a shell-style wildcard (fnmatch.fnmatchcase: *, ?, [seq])."""
    if pattern == key:
        return True
    return isinstance(pattern, str) and isinstance(key, str) and fnmatch.fnmatchcase(key, pattern)


def hyperparameters_for(key, base, overrides):
    """The hyperparameters of key: base, updated by every matching pattern of overrides in
    order."""
    values = dict(base)
    for pattern, changes in overrides.items():
        if pattern_matches(pattern, key):
            values.update(changes)
    return values


def scheduled(lr, step):
    """lr, or lr(step) if it is callable, as a Python float."""
    return float(lr(step)) if callable(lr) else float(lr)


def clip_coefficient(max_grad_norm, norm):
    """min(1, max_grad_norm / (norm + 1e-6)), NaN if that is NaN (a NaN norm)."""
    coefficient = max_grad_norm / (norm + CLIP_EPSILON)
    return coefficient if (coefficient < 1.0 or coefficient != coefficient) else 1.0


def nan_maximum(a, b):
    """Elementwise maximum that returns a NaN operand (numpy.maximum does; torch.maximum too)."""
    return np.maximum(a, b)


class Optimizer:
    """What every twin shares: overrides, the step counter, the gradient prologue."""

    defaults = {}

    def __init__(self, *, overrides=None, skip_nonfinite=False, state_dtype=None,
                 master_weights=False, rounding="nearest", seed=0, **hyperparameters):
        self.hyperparameters = {**self.defaults, **hyperparameters}
        self.overrides = dict(overrides or {})
        self.skip_nonfinite = skip_nonfinite
        self.state_dtype = None if state_dtype is None else np.dtype(state_dtype)
        self.master_weights = master_weights
        self.stochastic = rounding == "stochastic"
        self.seed = seed
        self.step = 0
        self.skipped_steps = 0
        self.state = None  # {state name: {key: array}}, created at the first step

    def state_names(self, keys):
        raise NotImplementedError

    def initial_value(self, name, h):
        return 0.0

    def update(self, params, grads, grad_scale=None, max_grad_norm=None):
        keys = list(params)
        step = self.step + 1
        norm = None
        scale = 1.0 if grad_scale is None else float(grad_scale)
        if max_grad_norm is not None or self.skip_nonfinite:
            # each gradient read in its parameter's flat order, as the state is laid out
            flat = [np.ravel(np.asarray(grads[key]), order=flat_order(params[key]))
                    for key in keys]
            norm = math.sqrt(sum_of_squares(flat)) * abs(scale)
            nonfinite = any(not np.all(np.isfinite(grads[key])) for key in keys)
            if self.skip_nonfinite and (nonfinite or not math.isfinite(norm)):
                self.skipped_steps += 1
                return norm
        if max_grad_norm is not None:
            scale = scale * clip_coefficient(float(max_grad_norm), norm)
        per_key = {key: hyperparameters_for(key, self.hyperparameters, self.overrides)
                   for key in keys}
        for h in per_key.values():
            h["lr"] = scheduled(h["lr"], step)
        if self.state is None:
            names = self.state_names(keys) + (("master",) if self.master_weights else ())
            self.state = {name: {} for name in names}
            for key in keys:
                p = params[key]
                for name in names:
                    value = p if name == "master" else self.initial_value(name, per_key[key])
                    self.state[name][key] = np.full(p.shape, value, self.dtype_of(name, p),
                                                    order=flat_order(p))
        for index, key in enumerate(keys):
            h = per_key[key]
            key_scale = -scale if h.get("maximize", False) else scale
            p = params[key]
            if self.is_mixed(p, grads[key]):
                self.update_mixed(index, key, p, grads[key], key_scale, h, step)
            else:
                g = np.asarray(grads[key]) * key_scale
                self.update_one(key, p, g, h, step)
        self.step = step
        return norm

    def dtype_of(self, name, p):
        """A state array's dtype: float32 for the master copy; else state_dtype if set, float32
        for a 16-bit parameter, the parameter's dtype otherwise."""
        if name == "master":
            return np.dtype(np.float32)
        if self.state_dtype is not None:
            return self.state_dtype
        return np.dtype(np.float32) if p.dtype in low_precision_dtypes() else p.dtype

    def is_mixed(self, p, g):
        return (p.dtype in low_precision_dtypes() or np.asarray(g).dtype != p.dtype
                or self.master_weights or self.state_dtype not in (None, p.dtype))

    def update_mixed(self, index, key, p, g, scale, h, step):
        """One key in float32: upcast, the float32 twin, every written array rounded once."""
        order = flat_order(p)
        storage = self.state
        master = storage["master"][key] if self.master_weights else None
        p32 = master if master is not None else p.astype(np.float32)
        g32 = np.asarray(g).astype(np.float32) * scale
        names = [name for name in storage if name != "master"]
        self.state = {name: {key: storage[name][key].astype(np.float32)} for name in names}
        try:
            self.update_one(key, p32, g32, h, step)
        finally:
            work, self.state = self.state, storage
        for array_index, name in enumerate(names, start=1):
            target = storage[name][key]
            if target.dtype != np.float32:
                target[...] = round_to(work[name][key], target.dtype, self.stochastic,
                                       stream(self.seed, step, index, array_index), order)
            else:
                target[...] = work[name][key]
        p[...] = round_to(p32, p.dtype, self.stochastic, stream(self.seed, step, index, 0),
                          order) if p.dtype != np.float32 else p32

    @staticmethod
    def l2(g, p, h):
        """torch's L2 decay: g + weight_decay * p, only where weight_decay is not 0."""
        weight_decay = float(h["weight_decay"])
        return g + weight_decay * p if weight_decay != 0 else g


class SGD(Optimizer):
    """torch.optim.SGD: momentum buffer = g on the first step, then
    buf = buf*momentum + (1-dampening)*g; d = g + momentum*buf (nesterov) or buf; p -= lr*d."""

    defaults = dict(lr=1e-3, momentum=0.0, dampening=0.0, weight_decay=0.0, nesterov=False,
                    maximize=False)

    def state_names(self, keys):
        groups = [self.hyperparameters, *self.overrides.values()]
        return ("momentum_buffer",) if any(g.get("momentum", 0.0) != 0 for g in groups) else ()

    def update_one(self, key, p, g, h, step):
        g = self.l2(g, p, h)
        momentum = float(h["momentum"])
        if momentum != 0:
            buf = self.state["momentum_buffer"][key]
            if step == 1:
                buf[...] = g
            else:
                buf *= momentum
                buf += (1.0 - float(h["dampening"])) * g
            g = g + momentum * buf if h["nesterov"] else buf
        p -= h["lr"] * g


class Adam(Optimizer):
    """torch.optim.Adam (L2 decay) and, with decoupled decay, AdamW:
    p *= 1 - lr*wd (AdamW); m += (1-beta1)*(g-m); v = v*beta2 + ((1-beta2)*g)*g;
    (amsgrad: vmax = max(vmax, v), used for v); p += (-lr/bc1 * m) / (sqrt(v)/sqrt(bc2) + eps)."""

    defaults = dict(lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, amsgrad=False,
                    maximize=False)
    decoupled = False

    def state_names(self, keys):
        return ("exp_avg", "exp_avg_sq") + (("max_exp_avg_sq",) if self.hyperparameters["amsgrad"]
                                            else ())

    def update_one(self, key, p, g, h, step):
        beta1, beta2 = map(float, h["betas"])
        lr, weight_decay = h["lr"], float(h["weight_decay"])
        if self.decoupled:
            p *= 1.0 - lr * weight_decay
        else:
            g = self.l2(g, p, h)
        m, v = self.state["exp_avg"][key], self.state["exp_avg_sq"][key]
        m += (1.0 - beta1) * (g - m)
        v *= beta2
        v += ((1.0 - beta2) * g) * g
        bias_correction1 = 1.0 - beta1**step
        bias_correction2_sqrt = math.sqrt(1.0 - beta2**step)
        if self.hyperparameters["amsgrad"]:
            vmax = self.state["max_exp_avg_sq"][key]
            vmax[...] = nan_maximum(vmax, v)
            v = vmax
        denominator = np.sqrt(v) / bias_correction2_sqrt + float(h["eps"])
        p += (-(lr / bias_correction1) * m) / denominator


class AdamW(Adam):
    """torch.optim.AdamW: Adam with decoupled weight decay (default 1e-2)."""

    defaults = dict(Adam.defaults, weight_decay=1e-2)
    decoupled = True


class Adagrad(Optimizer):
    """torch.optim.Adagrad: sum starts at initial_accumulator_value; sum += g*g;
    p += (-clr*g) / (sqrt(sum) + eps), clr = lr / (1 + (step-1)*lr_decay)."""

    defaults = dict(lr=1e-2, lr_decay=0.0, weight_decay=0.0, initial_accumulator_value=0.0,
                    eps=1e-10, maximize=False)

    def state_names(self, keys):
        return ("sum",)

    def initial_value(self, name, h):
        return float(h["initial_accumulator_value"])

    def update_one(self, key, p, g, h, step):
        g = self.l2(g, p, h)
        clr = h["lr"] / (1.0 + (step - 1) * float(h["lr_decay"]))
        total = self.state["sum"][key]
        total += g * g
        p += (-clr * g) / (np.sqrt(total) + float(h["eps"]))


class RMSprop(Optimizer):
    """torch.optim.RMSprop: sq = sq*alpha + ((1-alpha)*g)*g; centered: ga += (1-alpha)*(g-ga),
    avg = sqrt(sq - ga*ga) + eps, else sqrt(sq) + eps; momentum: buf = buf*momentum + g/avg,
    p += -lr*buf; else p += (-lr*g)/avg."""

    defaults = dict(lr=1e-2, alpha=0.99, eps=1e-8, weight_decay=0.0, momentum=0.0,
                    centered=False, maximize=False)

    def state_names(self, keys):
        groups = [self.hyperparameters, *self.overrides.values()]
        return (("square_avg",) + (("grad_avg",) if self.hyperparameters["centered"] else ())
                + (("momentum_buffer",) if any(g.get("momentum", 0.0) > 0 for g in groups)
                   else ()))

    def update_one(self, key, p, g, h, step):
        g = self.l2(g, p, h)
        alpha = float(h["alpha"])
        sq = self.state["square_avg"][key]
        sq *= alpha
        sq += ((1.0 - alpha) * g) * g
        if self.hyperparameters["centered"]:
            ga = self.state["grad_avg"][key]
            ga += (1.0 - alpha) * (g - ga)
            avg = np.sqrt(sq - ga * ga) + float(h["eps"])
        else:
            avg = np.sqrt(sq) + float(h["eps"])
        momentum = float(h["momentum"])
        if momentum > 0:
            buf = self.state["momentum_buffer"][key]
            buf *= momentum
            buf += g / avg
            p += -h["lr"] * buf
        else:
            p += (-h["lr"] * g) / avg


class Adadelta(Optimizer):
    """torch.optim.Adadelta: sq = sq*rho + ((1-rho)*g)*g; delta = sqrt(acc+eps)/sqrt(sq+eps)*g;
    acc = acc*rho + ((1-rho)*delta)*delta; p += -lr*delta."""

    defaults = dict(lr=1.0, rho=0.9, eps=1e-6, weight_decay=0.0, maximize=False)

    def state_names(self, keys):
        return ("square_avg", "acc_delta")

    def update_one(self, key, p, g, h, step):
        g = self.l2(g, p, h)
        rho, eps = float(h["rho"]), float(h["eps"])
        sq, acc = self.state["square_avg"][key], self.state["acc_delta"][key]
        sq *= rho
        sq += ((1.0 - rho) * g) * g
        std = np.sqrt(sq + eps)
        delta = (np.sqrt(acc + eps) / std) * g
        acc *= rho
        acc += ((1.0 - rho) * delta) * delta
        p += -h["lr"] * delta


class Adamax(Optimizer):
    """torch.optim.Adamax: m += (1-beta1)*(g-m); u = max(u*beta2, |g| + eps);
    p += (-clr*m) / u, clr = lr / (1 - beta1**step)."""

    defaults = dict(lr=2e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, maximize=False)

    def state_names(self, keys):
        return ("exp_avg", "exp_inf")

    def update_one(self, key, p, g, h, step):
        g = self.l2(g, p, h)
        beta1, beta2 = map(float, h["betas"])
        m, u = self.state["exp_avg"][key], self.state["exp_inf"][key]
        m += (1.0 - beta1) * (g - m)
        u[...] = nan_maximum(u * beta2, np.abs(g) + float(h["eps"]))
        clr = h["lr"] / (1.0 - beta1**step)
        p += (-clr * m) / u


class NAdam(Optimizer):
    """torch.optim.NAdam: mu_t = beta1*(1 - 0.5*0.96**(t*momentum_decay)), mu_product the
    product of mu_1..mu_t (a float per key, in double); p *= 1 - lr*wd (decoupled) or L2;
    m += (1-beta1)*(g-m); v = v*beta2 + ((1-beta2)*g)*g; denom = sqrt(v / bc2) + eps;
    p += (c_g*g)/denom; p += (c_m*m)/denom, c_g = -lr*(1-mu)/(1-mu_product),
    c_m = -lr*mu_next/(1-mu_product*mu_next)."""

    defaults = dict(lr=2e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0,
                    momentum_decay=4e-3, decoupled_weight_decay=False, maximize=False)

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.mu_product = {}

    def state_names(self, keys):
        return ("exp_avg", "exp_avg_sq")

    def update_one(self, key, p, g, h, step):
        beta1, beta2 = map(float, h["betas"])
        lr, weight_decay = h["lr"], float(h["weight_decay"])
        if h["decoupled_weight_decay"]:
            p *= 1.0 - lr * weight_decay
        else:
            g = self.l2(g, p, h)
        momentum_decay = float(h["momentum_decay"])
        mu = beta1 * (1.0 - 0.5 * (0.96 ** (step * momentum_decay)))
        mu_next = beta1 * (1.0 - 0.5 * (0.96 ** ((step + 1) * momentum_decay)))
        mu_product = self.mu_product.get(key, 1.0) * mu
        self.mu_product[key] = mu_product
        m, v = self.state["exp_avg"][key], self.state["exp_avg_sq"][key]
        m += (1.0 - beta1) * (g - m)
        v *= beta2
        v += ((1.0 - beta2) * g) * g
        denominator = np.sqrt(v / (1.0 - beta2**step)) + float(h["eps"])
        p += ((-lr * (1.0 - mu) / (1.0 - mu_product)) * g) / denominator
        p += (((-lr * mu_next) / (1.0 - mu_product * mu_next)) * m) / denominator


class RAdam(Optimizer):
    """torch.optim.RAdam: p *= 1 - lr*wd (decoupled) or L2; m += (1-beta1)*(g-m);
    v = v*beta2 + ((1-beta2)*g)*g; with rho_t > 5:
    p -= (((m / bc1) * lr) * (sqrt(bc2) / (sqrt(v) + eps))) * rect, else p -= (m / bc1) * lr."""

    defaults = dict(lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0,
                    decoupled_weight_decay=False, maximize=False)

    def state_names(self, keys):
        return ("exp_avg", "exp_avg_sq")

    @staticmethod
    def rectification(beta2, step):
        """(rho_t > 5, rect): torch's variance rectification, in double."""
        bias_correction2 = 1.0 - beta2**step
        rho_inf = 2.0 / (1.0 - beta2) - 1.0
        rho_t = rho_inf - 2.0 * step * (beta2**step) / bias_correction2
        if not rho_t > 5.0:
            return False, 1.0
        rect = math.sqrt((rho_t - 4.0) * (rho_t - 2.0) * rho_inf
                         / ((rho_inf - 4.0) * (rho_inf - 2.0) * rho_t))
        return True, rect

    def update_one(self, key, p, g, h, step):
        beta1, beta2 = map(float, h["betas"])
        lr, weight_decay = h["lr"], float(h["weight_decay"])
        if h["decoupled_weight_decay"]:
            p *= 1.0 - lr * weight_decay
        else:
            g = self.l2(g, p, h)
        m, v = self.state["exp_avg"][key], self.state["exp_avg_sq"][key]
        m += (1.0 - beta1) * (g - m)
        v *= beta2
        v += ((1.0 - beta2) * g) * g
        corrected = m / (1.0 - beta1**step)
        rectified, rect = self.rectification(beta2, step)
        if rectified:
            adaptive = math.sqrt(1.0 - beta2**step) / (np.sqrt(v) + float(h["eps"]))
            p -= ((corrected * lr) * adaptive) * rect
        else:
            p -= corrected * lr


class Lion(Optimizer):
    """Lion (Chen et al. 2023; optax.lion): c = (1-beta1)*g + beta1*m;
    p += -lr * (sign(c) + weight_decay*p); m = (1-beta2)*g + beta2*m."""

    defaults = dict(lr=1e-4, betas=(0.9, 0.99), weight_decay=0.0)

    def state_names(self, keys):
        return ("exp_avg",)

    def update_one(self, key, p, g, h, step):
        beta1, beta2 = map(float, h["betas"])
        m = self.state["exp_avg"][key]
        c = (1.0 - beta1) * g + beta1 * m
        direction = np.sign(c) + float(h["weight_decay"]) * p
        p += -h["lr"] * direction
        m[...] = (1.0 - beta2) * g + beta2 * m


OPTIMIZERS = {cls.__name__: cls for cls in (SGD, Adam, AdamW, Adagrad, RMSprop, Adadelta, Adamax,
                                             NAdam, RAdam, Lion)}

__all__ = [*OPTIMIZERS, "OPTIMIZERS", "hyperparameters_for", "pattern_matches",
           "clip_coefficient", "low_precision_dtypes", "round_to", "stream", "random16"]
