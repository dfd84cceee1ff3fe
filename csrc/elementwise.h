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
