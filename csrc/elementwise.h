/* The per-element math of every kernel, written once.
 *
 * This file is a template: loops.h includes it once with REAL = float and once with REAL = double
 * (FO_NAME() adds the _f32 / _f64 suffix). Each function performs, on one element, exactly the
 * operations of fastopt.reference in exactly its order, in the array's dtype:
 *   - a coefficient the reference computes as a Python float (lr, momentum*momentum, 1e-7, ...)
 *     arrives in k->c[] already rounded to REAL, as NumPy 2 rounds a Python float that meets an
 *     array of that dtype (NEP 50);
 *   - Adam's lr_t is a numpy.float64 in the reference, and a NumPy scalar keeps its own dtype,
 *     so for float32 the last line of Adam runs in double and rounds once at the end; it arrives
 *     unrounded in k->d[].
 * The build uses -ffp-contract=off so that no a*b+c here becomes a fused multiply-add.
 */

typedef struct {
    REAL c[FASTOPT_MAX_COEFFICIENTS];   /* coefficients rounded to the array's dtype */
    double d[FASTOPT_MAX_COEFFICIENTS]; /* the same coefficients, as Python computed them */
} FO_NAME(coefficients);

/* params[key] -= lr * grads[key]                        c = {lr} */
static inline void FO_NAME(sgd_element)(const FO_NAME(coefficients) *k, REAL g, REAL *p)
{
    *p = *p - k->c[0] * g;
}

/* v = momentum*v - lr*g; params += v                    c = {momentum, lr} */
static inline void FO_NAME(momentum_element)(const FO_NAME(coefficients) *k, REAL g, REAL *p,
                                             REAL *v)
{
    *v = k->c[0] * *v - k->c[1] * g;
    *p = *p + *v;
}

/* v *= momentum; v -= lr*g; p += (momentum*momentum)*v; p -= ((1+momentum)*lr)*g
 *                                   c = {momentum, lr, momentum*momentum, (1+momentum)*lr} */
static inline void FO_NAME(nesterov_element)(const FO_NAME(coefficients) *k, REAL g, REAL *p,
                                             REAL *v)
{
    REAL velocity = *v * k->c[0];
    velocity = velocity - k->c[1] * g;
    *v = velocity;
    REAL param = *p + k->c[2] * velocity;
    *p = param - k->c[3] * g;
}

/* h += g*g; params -= lr*g / (sqrt(h) + 1e-7)           c = {lr, 1e-7} */
static inline void FO_NAME(adagrad_element)(const FO_NAME(coefficients) *k, REAL g, REAL *p,
                                            REAL *h)
{
    REAL history = *h + g * g;
    *h = history;
    *p = *p - (k->c[0] * g) / (FO_SQRT(history) + k->c[1]);
}

/* h *= decay; h += ((1-decay)*g)*g; params -= lr*g / (sqrt(h) + 1e-7)
 *                                                       c = {decay, 1-decay, lr, 1e-7} */
static inline void FO_NAME(rmsprop_element)(const FO_NAME(coefficients) *k, REAL g, REAL *p,
                                            REAL *h)
{
    REAL history = *h * k->c[0];
    history = history + (k->c[1] * g) * g;
    *h = history;
    *p = *p - (k->c[2] * g) / (FO_SQRT(history) + k->c[3]);
}

/* m += (1-beta1)*(g-m); v += (1-beta2)*(g**2-v); params -= lr_t*m / (sqrt(v) + 1e-7)
 *                                                       c = {1-beta1, 1-beta2, lr_t, 1e-7}
 * lr_t*m is float64 (see above), so is the quotient, and params -= float64 array computes the
 * difference in float64 and rounds it to REAL once. For REAL = double the casts are no-ops.
 * In two stages, which loops.h may run as two passes over a block: the moments, returning the
 * denominator sqrt(v) + 1e-7, then the parameter from the new m and that denominator. */
static inline REAL FO_NAME(adam_states)(const FO_NAME(coefficients) *k, REAL g, REAL *m, REAL *v)
{
    REAL first = *m + k->c[0] * (g - *m);
    REAL second = *v + k->c[1] * (g * g - *v);
    *m = first;
    *v = second;
    return FO_SQRT(second) + k->c[3];
}

static inline void FO_NAME(adam_param)(const FO_NAME(coefficients) *k, REAL first,
                                       REAL denominator, REAL *p)
{
    double step = ((double)first * k->d[2]) / (double)denominator;
    *p = (REAL)((double)*p - step);
}

static inline void FO_NAME(adam_element)(const FO_NAME(coefficients) *k, REAL g, REAL *p,
                                         REAL *m, REAL *v)
{
    REAL denominator = FO_NAME(adam_states)(k, g, m, v);
    FO_NAME(adam_param)(k, *m, denominator, p);
}

/* The traffic-limit kernels: the same loads and stores as an optimizer with 0, 1 or 2 states,
 * one addition each. Not an optimizer; the benchmark's ceiling. */
static inline void FO_NAME(traffic0_element)(const FO_NAME(coefficients) *k, REAL g, REAL *p)
{
    (void)k;
    *p = *p + g;
}

static inline void FO_NAME(traffic1_element)(const FO_NAME(coefficients) *k, REAL g, REAL *p,
                                             REAL *s)
{
    (void)k;
    *s = *s + g;
    *p = *p + g;
}

static inline void FO_NAME(traffic2_element)(const FO_NAME(coefficients) *k, REAL g, REAL *p,
                                             REAL *s, REAL *t)
{
    (void)k;
    *s = *s + g;
    *t = *t + g;
    *p = *p + g;
}
