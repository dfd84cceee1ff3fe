/* The per-element math of every kernel, written once.
 *
 * This file is a template: loops.h includes it once per compute type (REAL = float, double;
 * FO_NAME() adds the _f32 / _f64 suffix). Each function performs, on one element, exactly the
 * operations of fastopt.reference in exactly its order, in the array's dtype:
 *   - a coefficient the reference computes as a Python float (lr, momentum*momentum, 1e-7, ...)
 *     arrives as k->name already rounded to REAL, as NumPy 2 rounds a Python float that meets an
 *     array of that dtype (NEP 50);
 *   - Adam's lr_t is a numpy.float64 in the reference, and a NumPy scalar keeps its own dtype,
 *     so for float32 the last line of Adam runs in double and rounds once at the end; it arrives
 *     unrounded as k->d.lr_t (k->d holds every coefficient as Python computed it).
 * The coefficient names of each kernel are FASTOPT_COEFFICIENTS_<kernel> in fastopt.h.
 * The build uses -ffp-contract=off so that no a*b+c here becomes a fused multiply-add.
 */

/* One struct of coefficients per kernel: <kernel>_coefficients_f32 / _f64. */
#define FO_COEFFICIENT_FIELD(name) REAL name;
#define FO_COEFFICIENT_DOUBLE_FIELD(name) double name;
#define FO_DEFINE_COEFFICIENTS(name, states, loop, ps_f32, ps_f64)                              \
    typedef struct {                                                                          \
        FASTOPT_COEFFICIENTS_##name(FO_COEFFICIENT_FIELD)                                    \
        struct {                                                                              \
            FASTOPT_COEFFICIENTS_##name(FO_COEFFICIENT_DOUBLE_FIELD) char none;              \
        } d;                                                                                  \
    } FO_NAME(name##_coefficients);
FASTOPT_FOR_EACH_KERNEL(FO_DEFINE_COEFFICIENTS)
#undef FO_DEFINE_COEFFICIENTS
#undef FO_COEFFICIENT_FIELD
#undef FO_COEFFICIENT_DOUBLE_FIELD

/* params[key] -= lr * grads[key] */
static inline void FO_NAME(sgd_element)(const FO_NAME(sgd_coefficients) *k, REAL g, REAL *p)
{
    *p = *p - k->lr * g;
}

/* v = momentum*v - lr*g; params += v */
static inline void FO_NAME(momentum_element)(const FO_NAME(momentum_coefficients) *k, REAL g,
                                             REAL *p, REAL *v)
{
    *v = k->momentum * *v - k->lr * g;
    *p = *p + *v;
}

/* v *= momentum; v -= lr*g; p += (momentum*momentum)*v; p -= ((1+momentum)*lr)*g */
static inline void FO_NAME(nesterov_element)(const FO_NAME(nesterov_coefficients) *k, REAL g,
                                             REAL *p, REAL *v)
{
    REAL velocity = *v * k->momentum;
    velocity = velocity - k->lr * g;
    *v = velocity;
    REAL param = *p + k->momentum_squared * velocity;
    *p = param - k->one_plus_momentum_times_lr * g;
}

/* h += g*g; params -= lr*g / (sqrt(h) + 1e-7) */
static inline void FO_NAME(adagrad_element)(const FO_NAME(adagrad_coefficients) *k, REAL g,
                                            REAL *p, REAL *h)
{
    REAL history = *h + g * g;
    *h = history;
    *p = *p - (k->lr * g) / (FO_SQRT(history) + k->epsilon);
}

/* h *= decay; h += ((1-decay)*g)*g; params -= lr*g / (sqrt(h) + 1e-7) */
static inline void FO_NAME(rmsprop_element)(const FO_NAME(rmsprop_coefficients) *k, REAL g,
                                            REAL *p, REAL *h)
{
    REAL history = *h * k->decay_rate;
    history = history + (k->one_minus_decay_rate * g) * g;
    *h = history;
    *p = *p - (k->lr * g) / (FO_SQRT(history) + k->epsilon);
}

/* m += (1-beta1)*(g-m); v += (1-beta2)*(g**2-v); params -= lr_t*m / (sqrt(v) + 1e-7)
 * lr_t*m is float64 (see above), so is the quotient, and params -= float64 array computes the
 * difference in float64 and rounds it to REAL once. For REAL = double the casts are no-ops.
 * In two stages, which loops.h may run as two passes over a block: the moments, returning the
 * denominator sqrt(v) + 1e-7, then the parameter from the new m and that denominator. */
static inline REAL FO_NAME(adam_moments)(REAL one_minus_beta1, REAL one_minus_beta2,
                                         REAL epsilon, REAL g, REAL *m, REAL *v)
{
    REAL first = *m + one_minus_beta1 * (g - *m);
    REAL second = *v + one_minus_beta2 * (g * g - *v);
    *m = first;
    *v = second;
    return FO_SQRT(second) + epsilon;
}

static inline REAL FO_NAME(adam_states)(const FO_NAME(adam_coefficients) *k, REAL g, REAL *m,
                                        REAL *v)
{
    return FO_NAME(adam_moments)(k->one_minus_beta1, k->one_minus_beta2, k->epsilon, g, m, v);
}

static inline void FO_NAME(adam_param)(const FO_NAME(adam_coefficients) *k, REAL first,
                                       REAL denominator, REAL *p)
{
    double step = ((double)first * k->d.lr_t) / (double)denominator;
    *p = (REAL)((double)*p - step);
}

static inline void FO_NAME(adam_element)(const FO_NAME(adam_coefficients) *k, REAL g, REAL *p,
                                         REAL *m, REAL *v)
{
    REAL denominator = FO_NAME(adam_states)(k, g, m, v);
    FO_NAME(adam_param)(k, *m, denominator, p);
}

/* Adam with a float32 lr_t (NumPy float32 hyperparameters): the same moments; lr_t*m, the
 * quotient and the difference all in REAL, as NumPy computes them when the scalar lr_t is no
 * wider than the array. For REAL = double this is adam_param (lr_t arrives exactly). */
static inline REAL FO_NAME(adam_lr_t_f32_states)(const FO_NAME(adam_lr_t_f32_coefficients) *k,
                                                 REAL g, REAL *m, REAL *v)
{
    return FO_NAME(adam_moments)(k->one_minus_beta1, k->one_minus_beta2, k->epsilon, g, m, v);
}

static inline void FO_NAME(adam_lr_t_f32_param)(const FO_NAME(adam_lr_t_f32_coefficients) *k,
                                                REAL first, REAL denominator, REAL *p)
{
    *p = *p - (k->lr_t * first) / denominator;
}

static inline void FO_NAME(adam_lr_t_f32_element)(const FO_NAME(adam_lr_t_f32_coefficients) *k,
                                                  REAL g, REAL *p, REAL *m, REAL *v)
{
    REAL denominator = FO_NAME(adam_lr_t_f32_states)(k, g, m, v);
    FO_NAME(adam_lr_t_f32_param)(k, *m, denominator, p);
}

/* The traffic-limit kernels: the same loads and stores as an optimizer with 0, 1 or 2 states,
 * one addition each. Not an optimizer; the benchmark's ceiling. */
static inline void FO_NAME(traffic0_element)(const FO_NAME(traffic0_coefficients) *k, REAL g,
                                              REAL *p)
{
    (void)k;
    *p = *p + g;
}

static inline void FO_NAME(traffic1_element)(const FO_NAME(traffic1_coefficients) *k, REAL g,
                                              REAL *p, REAL *s)
{
    (void)k;
    *s = *s + g;
    *p = *p + g;
}

static inline void FO_NAME(traffic2_element)(const FO_NAME(traffic2_coefficients) *k, REAL g,
                                              REAL *p, REAL *s, REAL *t)
{
    (void)k;
    *s = *s + g;
    *t = *t + g;
    *p = *p + g;
}

/* ---- fastopt.optim: PyTorch's optimizers (and Lion) ------------------------------------------
 * The twins are fastopt/reference/optim.py; each function below performs its expressions in its
 * order. Every kernel of the family starts from the same gradient prologue: the gradient times
 * gradient_scale (grad_scale x clipping factor, negated for maximize; x 1.0 is exact), then, if
 * l2 is not 0, plus weight_decay * p (torch's L2 decay). l2 is the same for every element of a
 * tensor, so the select below costs a blend, not a branch, and the vectoriser keeps it. */
static inline REAL FO_NAME(optim_gradient)(REAL gradient_scale, REAL l2, REAL weight_decay,
                                           REAL g, REAL p)
{
    const REAL scaled = g * gradient_scale;
    const REAL decayed = scaled + weight_decay * p;
    return l2 != 0 ? decayed : scaled;
}
#define FO_OPTIM_GRADIENT(k, g, p) \
    FO_NAME(optim_gradient)((k)->gradient_scale, (k)->l2, (k)->weight_decay, g, p)

/* NumPy's maximum: a if a >= b or a is NaN, else b (so a NaN on either side wins). */
static inline REAL FO_NAME(nan_maximum)(REAL a, REAL b)
{
    return (a >= b || a != a) ? a : b;
}

/* NumPy's sign: 1, -1, +0 for either zero, NaN for NaN. */
static inline REAL FO_NAME(sign)(REAL x)
{
    return x > 0 ? (REAL)1 : x < 0 ? (REAL)-1 : x == x ? (REAL)0 : x;
}

/* SGD without momentum: p -= lr*g */
static inline void FO_NAME(optim_sgd_element)(const FO_NAME(optim_sgd_coefficients) *k, REAL g,
                                              REAL *p)
{
    g = FO_OPTIM_GRADIENT(k, g, *p);
    *p = *p - k->lr * g;
}

/* SGD with momentum: buf = g on the first step, else buf*momentum + (1-dampening)*g;
 * d = g + momentum*buf (nesterov) or buf; p -= lr*d */
static inline void FO_NAME(optim_sgd_momentum_element)(
    const FO_NAME(optim_sgd_momentum_coefficients) *k, REAL g, REAL *p, REAL *buf)
{
    g = FO_OPTIM_GRADIENT(k, g, *p);
    REAL b = *buf * k->momentum;
    b = b + k->one_minus_dampening * g;
    b = k->first != 0 ? g : b;
    *buf = b;
    const REAL nesterov = g + k->momentum * b;
    const REAL d = k->nesterov != 0 ? nesterov : b;
    *p = *p - k->lr * d;
}

/* Adam and AdamW: p *= decay (1 - lr*wd for AdamW, 1 for Adam); m += (1-beta1)*(g-m);
 * v = v*beta2 + ((1-beta2)*g)*g; p += (neg_step_size*m) / (sqrt(v)/sqrt(bc2) + eps), with
 * amsgrad's running maximum of v in place of v. The two kernels share a coefficient list
 * (fastopt.h); their structs are distinct types, so the shared body takes the fields by name. */
#define FO_ADAM_FIELDS(k)                                                                       \
    (k)->gradient_scale, (k)->l2, (k)->weight_decay, (k)->decay, (k)->one_minus_beta1,          \
        (k)->beta2, (k)->one_minus_beta2, (k)->bias_correction2_sqrt, (k)->eps,                 \
        (k)->neg_step_size
static inline void FO_NAME(optim_adam_body)(REAL gradient_scale, REAL l2, REAL weight_decay,
                                            REAL decay, REAL one_minus_beta1, REAL beta2,
                                            REAL one_minus_beta2, REAL bias_correction2_sqrt,
                                            REAL eps, REAL neg_step_size, REAL g, REAL *p,
                                            REAL *m, REAL *v, REAL *vmax)
{
    g = FO_NAME(optim_gradient)(gradient_scale, l2, weight_decay, g, *p);
    const REAL param = *p * decay;
    const REAL first = *m + one_minus_beta1 * (g - *m);
    REAL second = *v * beta2;
    second = second + (one_minus_beta2 * g) * g;
    *m = first;
    *v = second;
    if (vmax) {
        second = FO_NAME(nan_maximum)(*vmax, second);
        *vmax = second;
    }
    const REAL denominator = FO_SQRT(second) / bias_correction2_sqrt + eps;
    *p = param + (neg_step_size * first) / denominator;
}

static inline void FO_NAME(optim_adam_element)(const FO_NAME(optim_adam_coefficients) *k, REAL g,
                                               REAL *p, REAL *m, REAL *v)
{
    FO_NAME(optim_adam_body)(FO_ADAM_FIELDS(k), g, p, m, v, NULL);
}

static inline void FO_NAME(optim_adam_amsgrad_element)(
    const FO_NAME(optim_adam_amsgrad_coefficients) *k, REAL g, REAL *p, REAL *m, REAL *v,
    REAL *vmax)
{
    FO_NAME(optim_adam_body)(FO_ADAM_FIELDS(k), g, p, m, v, vmax);
}
#undef FO_ADAM_FIELDS

/* Adagrad: sum += g*g; p += (neg_clr*g) / (sqrt(sum) + eps) */
static inline void FO_NAME(optim_adagrad_element)(const FO_NAME(optim_adagrad_coefficients) *k,
                                                  REAL g, REAL *p, REAL *sum)
{
    g = FO_OPTIM_GRADIENT(k, g, *p);
    const REAL total = *sum + g * g;
    *sum = total;
    *p = *p + (k->neg_clr * g) / (FO_SQRT(total) + k->eps);
}

/* RMSprop, four ways (centered or not, momentum or not): sq = sq*alpha + ((1-alpha)*g)*g;
 * centered: ga += (1-alpha)*(g-ga), avg = sqrt(sq - ga*ga) + eps; else avg = sqrt(sq) + eps;
 * momentum: buf = buf*momentum + g/avg, p += neg_lr*buf; else p += (neg_lr*g)/avg.
 * The four share one coefficient list (fastopt.h). */
#define FO_RMSPROP_FIELDS(k)                                                                    \
    (k)->gradient_scale, (k)->l2, (k)->weight_decay, (k)->alpha, (k)->one_minus_alpha,          \
        (k)->eps, (k)->momentum, (k)->neg_lr
static inline void FO_NAME(optim_rmsprop_body)(REAL gradient_scale, REAL l2, REAL weight_decay,
                                               REAL alpha, REAL one_minus_alpha, REAL eps,
                                               REAL momentum, REAL neg_lr, REAL g, REAL *p,
                                               REAL *sq, REAL *ga, REAL *buf)
{
    g = FO_NAME(optim_gradient)(gradient_scale, l2, weight_decay, g, *p);
    REAL square = *sq * alpha;
    square = square + (one_minus_alpha * g) * g;
    *sq = square;
    REAL avg;
    if (ga) {
        const REAL average = *ga + one_minus_alpha * (g - *ga);
        *ga = average;
        avg = FO_SQRT(square - average * average) + eps;
    } else {
        avg = FO_SQRT(square) + eps;
    }
    if (buf) {
        REAL b = *buf * momentum;
        b = b + g / avg;
        *buf = b;
        *p = *p + neg_lr * b;
    } else {
        *p = *p + (neg_lr * g) / avg;
    }
}

static inline void FO_NAME(optim_rmsprop_element)(const FO_NAME(optim_rmsprop_coefficients) *k,
                                                  REAL g, REAL *p, REAL *sq)
{
    FO_NAME(optim_rmsprop_body)(FO_RMSPROP_FIELDS(k), g, p, sq, NULL, NULL);
}

static inline void FO_NAME(optim_rmsprop_centered_element)(
    const FO_NAME(optim_rmsprop_centered_coefficients) *k, REAL g, REAL *p, REAL *sq, REAL *ga)
{
    FO_NAME(optim_rmsprop_body)(FO_RMSPROP_FIELDS(k), g, p, sq, ga, NULL);
}

static inline void FO_NAME(optim_rmsprop_momentum_element)(
    const FO_NAME(optim_rmsprop_momentum_coefficients) *k, REAL g, REAL *p, REAL *sq, REAL *buf)
{
    FO_NAME(optim_rmsprop_body)(FO_RMSPROP_FIELDS(k), g, p, sq, NULL, buf);
}

static inline void FO_NAME(optim_rmsprop_centered_momentum_element)(
    const FO_NAME(optim_rmsprop_centered_momentum_coefficients) *k, REAL g, REAL *p, REAL *sq,
    REAL *ga, REAL *buf)
{
    FO_NAME(optim_rmsprop_body)(FO_RMSPROP_FIELDS(k), g, p, sq, ga, buf);
}
#undef FO_RMSPROP_FIELDS

/* Adadelta: sq = sq*rho + ((1-rho)*g)*g; delta = (sqrt(acc+eps)/sqrt(sq+eps))*g;
 * acc = acc*rho + ((1-rho)*delta)*delta; p += neg_lr*delta */
static inline void FO_NAME(optim_adadelta_element)(const FO_NAME(optim_adadelta_coefficients) *k,
                                                   REAL g, REAL *p, REAL *sq, REAL *acc)
{
    g = FO_OPTIM_GRADIENT(k, g, *p);
    REAL square = *sq * k->rho;
    square = square + (k->one_minus_rho * g) * g;
    *sq = square;
    const REAL std = FO_SQRT(square + k->eps);
    const REAL delta = (FO_SQRT(*acc + k->eps) / std) * g;
    REAL accumulated = *acc * k->rho;
    accumulated = accumulated + (k->one_minus_rho * delta) * delta;
    *acc = accumulated;
    *p = *p + k->neg_lr * delta;
}

/* Adamax: m += (1-beta1)*(g-m); u = max(u*beta2, |g| + eps); p += (neg_clr*m)/u */
static inline void FO_NAME(optim_adamax_element)(const FO_NAME(optim_adamax_coefficients) *k,
                                                 REAL g, REAL *p, REAL *m, REAL *u)
{
    g = FO_OPTIM_GRADIENT(k, g, *p);
    const REAL first = *m + k->one_minus_beta1 * (g - *m);
    *m = first;
    const REAL largest = FO_NAME(nan_maximum)(*u * k->beta2, FO_ABS(g) + k->eps);
    *u = largest;
    *p = *p + (k->neg_clr * first) / largest;
}

/* NAdam: p *= decay; m += (1-beta1)*(g-m); v = v*beta2 + ((1-beta2)*g)*g;
 * denom = sqrt(v / bc2) + eps; p += (gradient_coefficient*g)/denom;
 * p += (average_coefficient*m)/denom */
static inline void FO_NAME(optim_nadam_element)(const FO_NAME(optim_nadam_coefficients) *k,
                                                REAL g, REAL *p, REAL *m, REAL *v)
{
    g = FO_OPTIM_GRADIENT(k, g, *p);
    REAL param = *p * k->decay;
    const REAL first = *m + k->one_minus_beta1 * (g - *m);
    REAL second = *v * k->beta2;
    second = second + (k->one_minus_beta2 * g) * g;
    *m = first;
    *v = second;
    const REAL denominator = FO_SQRT(second / k->bias_correction2) + k->eps;
    param = param + (k->gradient_coefficient * g) / denominator;
    *p = param + (k->average_coefficient * first) / denominator;
}

/* RAdam: p *= decay; m += (1-beta1)*(g-m); v = v*beta2 + ((1-beta2)*g)*g; c = m / bc1;
 * rectified: p -= ((c*lr) * (sqrt(bc2) / (sqrt(v) + eps))) * rect; else p -= c*lr.
 * Two kernels with one coefficient list; Python picks one per step (rho_t > 5). */
#define FO_RADAM_FIELDS(k)                                                                      \
    (k)->gradient_scale, (k)->l2, (k)->weight_decay, (k)->decay, (k)->one_minus_beta1,          \
        (k)->beta2, (k)->one_minus_beta2, (k)->bias_correction1, (k)->lr,                       \
        (k)->bias_correction2_sqrt, (k)->eps, (k)->rect
static inline void FO_NAME(optim_radam_body)(REAL gradient_scale, REAL l2, REAL weight_decay,
                                             REAL decay, REAL one_minus_beta1, REAL beta2,
                                             REAL one_minus_beta2, REAL bias_correction1,
                                             REAL lr, REAL bias_correction2_sqrt, REAL eps,
                                             REAL rect, int rectified, REAL g, REAL *p, REAL *m,
                                             REAL *v)
{
    g = FO_NAME(optim_gradient)(gradient_scale, l2, weight_decay, g, *p);
    const REAL param = *p * decay;
    const REAL first = *m + one_minus_beta1 * (g - *m);
    REAL second = *v * beta2;
    second = second + (one_minus_beta2 * g) * g;
    *m = first;
    *v = second;
    const REAL corrected = first / bias_correction1;
    if (rectified) {
        const REAL adaptive = bias_correction2_sqrt / (FO_SQRT(second) + eps);
        *p = param - ((corrected * lr) * adaptive) * rect;
    } else {
        *p = param - corrected * lr;
    }
}

static inline void FO_NAME(optim_radam_element)(const FO_NAME(optim_radam_coefficients) *k,
                                                REAL g, REAL *p, REAL *m, REAL *v)
{
    FO_NAME(optim_radam_body)(FO_RADAM_FIELDS(k), 0, g, p, m, v);
}

static inline void FO_NAME(optim_radam_rectified_element)(
    const FO_NAME(optim_radam_rectified_coefficients) *k, REAL g, REAL *p, REAL *m, REAL *v)
{
    FO_NAME(optim_radam_body)(FO_RADAM_FIELDS(k), 1, g, p, m, v);
}
#undef FO_RADAM_FIELDS

/* Lion: c = (1-beta1)*g + beta1*m; p += neg_lr * (sign(c) + weight_decay*p);
 * m = (1-beta2)*g + beta2*m. Its weight decay is its own (decoupled, inside the update). */
static inline void FO_NAME(optim_lion_element)(const FO_NAME(optim_lion_coefficients) *k, REAL g,
                                               REAL *p, REAL *m)
{
    g = g * k->gradient_scale;
    const REAL c = k->one_minus_beta1 * g + k->beta1 * *m;
    const REAL direction = FO_NAME(sign)(c) + k->weight_decay * *p;
    *p = *p + k->neg_lr * direction;
    *m = k->one_minus_beta2 * g + k->beta2 * *m;
}
