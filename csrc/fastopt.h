/* fastopt: the C side of the optimizer kernels.
 *
 * Cython hands over a plan (pointer and length arrays for every tensor of an update() call)
 * and this step's coefficients in double; fastopt_run() applies one kernel to all of it, on the SIMD path chosen at import and on the configured number of threads.
 * Kernels trust their inputs: all validation happens in Python before anything gets here.
 */
#ifndef FASTOPT_H
#define FASTOPT_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* The registry of kernels, the one list every layer reads (Python asks for it at import through
 * fastopt_kernel_info): name, number of state arrays, loop (one_pass, or f32_two_pass: float32
 * runs in two passes over blocks, see loops.h), and the single-thread cost of one element in
 * picoseconds per dtype, in the order of FASTOPT_FOR_EACH_DTYPE (measured in cache on the 2-core
 * AMD EPYC machine, AVX2; only their size relative to the threshold matters, to decide on
 * threads). Each kernel's coefficients are named by FASTOPT_COEFFICIENTS_<name>, in the order
 * Python passes them; the element functions read them by name (k->lr).
 * A new optimizer is one element function in elementwise.h, one line here and its coefficient
 * list. The traffic kernels read and write exactly the bytes of an optimizer with 0, 1 or 2
 * state arrays with trivial arithmetic: the benchmark's measure of what the memory system
 * allows. */
#define FASTOPT_FOR_EACH_KERNEL(X)                \
    X(sgd, 0, one_pass, 100, 250)                 \
    X(momentum, 1, one_pass, 190, 370)            \
    X(nesterov, 1, one_pass, 200, 400)            \
    X(adagrad, 1, one_pass, 360, 1100)            \
    X(rmsprop, 1, one_pass, 380, 1100)            \
    X(adam, 2, f32_two_pass, 720, 1130)           \
    X(traffic0, 0, one_pass, 100, 250)            \
    X(traffic1, 1, one_pass, 190, 370)            \
    X(traffic2, 2, one_pass, 250, 500)            \
    X(adam_lr_t_f32, 2, f32_two_pass, 720, 1130)  \
    FASTOPT_FOR_EACH_OPTIM_KERNEL(X)

/* fastopt.optim's kernels (PyTorch's optimizers and Lion). A kernel's state arrays are a prefix
 * of the plan's: a plan keeps the widest variant's states, and a group of tensors that runs a
 * narrower variant (SGD without momentum next to SGD with it) leaves the rest untouched. */
#define FASTOPT_FOR_EACH_OPTIM_KERNEL(X)                    \
    X(optim_sgd, 0, one_pass, 150, 300)                     \
    X(optim_sgd_momentum, 1, one_pass, 250, 450)            \
    X(optim_adam, 2, one_pass, 900, 1400)                   \
    X(optim_adam_amsgrad, 3, one_pass, 1000, 1600)          \
    X(optim_adagrad, 1, one_pass, 450, 1200)                \
    X(optim_rmsprop, 1, one_pass, 450, 1200)                \
    X(optim_rmsprop_centered, 2, one_pass, 550, 1400)       \
    X(optim_rmsprop_momentum, 2, one_pass, 550, 1400)       \
    X(optim_rmsprop_centered_momentum, 3, one_pass, 650, 1600) \
    X(optim_adadelta, 2, one_pass, 900, 2000)               \
    X(optim_adamax, 2, one_pass, 600, 1200)                 \
    X(optim_nadam, 2, one_pass, 1000, 1700)                 \
    X(optim_radam, 2, one_pass, 500, 900)                   \
    X(optim_radam_rectified, 2, one_pass, 900, 1400)        \
    X(optim_lion, 1, one_pass, 300, 500)

#define FASTOPT_COEFFICIENTS_sgd(X) X(lr)
#define FASTOPT_COEFFICIENTS_momentum(X) X(momentum) X(lr)
#define FASTOPT_COEFFICIENTS_nesterov(X) \
    X(momentum) X(lr) X(momentum_squared) X(one_plus_momentum_times_lr)
#define FASTOPT_COEFFICIENTS_adagrad(X) X(lr) X(epsilon)
#define FASTOPT_COEFFICIENTS_rmsprop(X) X(decay_rate) X(one_minus_decay_rate) X(lr) X(epsilon)
#define FASTOPT_COEFFICIENTS_adam(X) X(one_minus_beta1) X(one_minus_beta2) X(lr_t) X(epsilon)
/* Adam when NumPy-scalar hyperparameters make lr_t a float32 (or narrower) scalar: with float32
 * arrays, the reference's last line then runs in float32, not float64. */
#define FASTOPT_COEFFICIENTS_adam_lr_t_f32(X) FASTOPT_COEFFICIENTS_adam(X)
/* fastopt.optim: every kernel but Lion's starts with the gradient prologue (see
 * elementwise.h): gradient_scale, then l2 (1: add weight_decay * p) and weight_decay. */
#define FASTOPT_OPTIM_PROLOGUE(X) X(gradient_scale) X(l2) X(weight_decay)
#define FASTOPT_COEFFICIENTS_optim_sgd(X) FASTOPT_OPTIM_PROLOGUE(X) X(lr)
#define FASTOPT_COEFFICIENTS_optim_sgd_momentum(X) \
    FASTOPT_OPTIM_PROLOGUE(X) X(first) X(momentum) X(one_minus_dampening) X(nesterov) X(lr)
#define FASTOPT_COEFFICIENTS_optim_adam(X)                                                     \
    FASTOPT_OPTIM_PROLOGUE(X) X(decay) X(one_minus_beta1) X(beta2) X(one_minus_beta2)         \
    X(bias_correction2_sqrt) X(eps) X(neg_step_size)
#define FASTOPT_COEFFICIENTS_optim_adam_amsgrad(X) FASTOPT_COEFFICIENTS_optim_adam(X)
#define FASTOPT_COEFFICIENTS_optim_adagrad(X) FASTOPT_OPTIM_PROLOGUE(X) X(neg_clr) X(eps)
#define FASTOPT_COEFFICIENTS_optim_rmsprop(X) \
    FASTOPT_OPTIM_PROLOGUE(X) X(alpha) X(one_minus_alpha) X(eps) X(momentum) X(neg_lr)
#define FASTOPT_COEFFICIENTS_optim_rmsprop_centered(X) FASTOPT_COEFFICIENTS_optim_rmsprop(X)
#define FASTOPT_COEFFICIENTS_optim_rmsprop_momentum(X) FASTOPT_COEFFICIENTS_optim_rmsprop(X)
#define FASTOPT_COEFFICIENTS_optim_rmsprop_centered_momentum(X) \
    FASTOPT_COEFFICIENTS_optim_rmsprop(X)
#define FASTOPT_COEFFICIENTS_optim_adadelta(X) \
    FASTOPT_OPTIM_PROLOGUE(X) X(rho) X(one_minus_rho) X(eps) X(neg_lr)
#define FASTOPT_COEFFICIENTS_optim_adamax(X) \
    FASTOPT_OPTIM_PROLOGUE(X) X(one_minus_beta1) X(beta2) X(eps) X(neg_clr)
#define FASTOPT_COEFFICIENTS_optim_nadam(X)                                                    \
    FASTOPT_OPTIM_PROLOGUE(X) X(decay) X(one_minus_beta1) X(beta2) X(one_minus_beta2)         \
    X(bias_correction2) X(eps) X(gradient_coefficient) X(average_coefficient)
#define FASTOPT_COEFFICIENTS_optim_radam(X)                                                    \
    FASTOPT_OPTIM_PROLOGUE(X) X(decay) X(one_minus_beta1) X(beta2) X(one_minus_beta2)         \
    X(bias_correction1) X(lr) X(bias_correction2_sqrt) X(eps) X(rect)
#define FASTOPT_COEFFICIENTS_optim_radam_rectified(X) FASTOPT_COEFFICIENTS_optim_radam(X)
#define FASTOPT_COEFFICIENTS_optim_lion(X)                                                     \
    X(gradient_scale) X(weight_decay) X(one_minus_beta1) X(beta1) X(one_minus_beta2) X(beta2) \
    X(neg_lr)
#define FASTOPT_COEFFICIENTS_traffic0(X)
#define FASTOPT_COEFFICIENTS_traffic1(X)
#define FASTOPT_COEFFICIENTS_traffic2(X)

#define FASTOPT_KERNEL_ENUM(name, states, loop, ps_f32, ps_f64) FASTOPT_KERNEL_##name,
enum { FASTOPT_FOR_EACH_KERNEL(FASTOPT_KERNEL_ENUM) FASTOPT_NUM_KERNELS };
#undef FASTOPT_KERNEL_ENUM

/* The dtypes: short name, storage type (what the arrays hold), compute type (what the element
 * functions compute in), NumPy's name for it (Python maps NumPy dtypes to rows through
 * numpy.dtype(name).num; bfloat16 is ml_dtypes' and exists once ml_dtypes is imported) and
 * kind: native rows have their own loops (storage = compute); converted rows (16 bits stored,
 * float32 computed) run through fastopt.optim's mixed runner, which converts blocks to float32,
 * runs the float32 loop and rounds each stored value once (loops.h, mixed_run). X is called as
 * X(a, b, c, sfx, storage, compute, numpy_name, kind): a, b and c are passed through, so that a
 * kernel's X-macro can expand a line per dtype. */
#define FASTOPT_FOR_EACH_DTYPE(X, a, b, c)                          \
    X(a, b, c, f32, float, float, "float32", native)                \
    X(a, b, c, f64, double, double, "float64", native)              \
    X(a, b, c, bf16, uint16_t, float, "bfloat16", converted)        \
    X(a, b, c, f16, uint16_t, float, "float16", converted)

#define FASTOPT_DTYPE_ENUM(a, b, c, sfx, storage, compute, numpy_name, kind) FASTOPT_DTYPE_##sfx,
enum { FASTOPT_FOR_EACH_DTYPE(FASTOPT_DTYPE_ENUM, , , ) FASTOPT_NUM_DTYPES };
#undef FASTOPT_DTYPE_ENUM

/* Most state arrays and coefficients a kernel may have. */
#define FASTOPT_MAX_STATES 4
#define FASTOPT_MAX_COEFFICIENTS 16

/* What Python learns about kernel k (0 <= k < FASTOPT_NUM_KERNELS). */
typedef struct {
    const char *name;
    int n_states;
    int n_coefficients;
    const char *coefficient_names; /* comma-separated, in the order Python passes them */
} fastopt_kernel_info;
const fastopt_kernel_info *fastopt_kernel(int kernel);

/* What Python learns about dtype d (0 <= d < FASTOPT_NUM_DTYPES). */
typedef struct {
    const char *numpy_name;
    int item_size; /* bytes per stored element */
    int converted; /* 1: 16-bit storage computed in float32 (fastopt.optim only) */
} fastopt_dtype_info;
const fastopt_dtype_info *fastopt_dtype(int dtype);

/* SIMD paths, in increasing order of preference. */
enum { FASTOPT_SIMD_BASELINE = 0, FASTOPT_SIMD_AVX2 = 1, FASTOPT_SIMD_AVX512 = 2, FASTOPT_NUM_SIMD = 3 };

/* Every tensor of one update(), seen as one concatenated run of elements: tensor t holds the
 * elements [offset[t], offset[t + 1]). Threads split that run into equal contiguous ranges. */
typedef struct {
    int64_t n_tensors;
    const int64_t *offset; /* n_tensors + 1 prefix sums of the sizes */
    int64_t cost;          /* estimated single-thread time in picoseconds: decides on threads */
    /* per tensor */
    const int *dtype; /* a FASTOPT_DTYPE_* row */
    void *const *param;
    const void *const *grad;
    void *const *state; /* n_states * n_tensors: state array s of tensor t at [s * n_tensors + t] */
    int n_states;
    const int *group; /* NULL (every tensor in group 0), or per tensor its group: see
                         fastopt_run_groups */
    /* Mixed precision (fastopt.optim; all zero/NULL otherwise): mixed is 1 if any tensor has a
     * converted dtype, a gradient or state dtype other than its parameter's, or a master copy.
     * grad_dtype: per tensor (NULL: the parameter's); state_dtype: per state array, at
     * [s * n_tensors + t] (NULL: the parameter's); master: 1 if the plan's last state array is
     * a float32 master copy of each parameter, which the kernel updates in place of the
     * parameter (the parameter then gets its rounded value); stochastic: 1 to round the
     * stored 16-bit values stochastically, with random bits from (seed, step, tensor index,
     * array index, element index) (convert.h); step: this step's number, set before each run. */
    int mixed;
    const int *grad_dtype;
    const int *state_dtype;
    int master;
    int stochastic;
    uint64_t seed;
    uint64_t step;
    /* fastopt_run's memory of how each mode fared on this plan, [0] one thread, [1] the pool
     * (start all at 0; see choose_mode in engine.c) */
    int32_t samples[2];         /* steps measured */
    double mean_seconds[2];     /* mean step time (see choose_mode) */
    double last_seconds[2];     /* the latest step time */
    double seconds_since_other; /* time spent in the better mode since the other's burst */
    int32_t warm;               /* the first step (not measured) has run */
    int32_t better;             /* the mode the plan runs outside bursts */
    int32_t burst_mode;         /* the mode of the burst in progress */
    int32_t burst_left;         /* steps left in it (0: none) */
    double burst_seconds;       /* its time so far */
} fastopt_plan;

/* The estimated single-thread time of one step of kernel over these tensors, in picoseconds. */
int64_t fastopt_estimate_cost(int kernel, int64_t n_tensors, const int64_t *sizes,
                              const int *dtypes);

/* Apply one kernel to the whole plan. Safe to call without the GIL, but not on one plan from
 * two threads at once (it updates the plan's thread statistics). */
void fastopt_run(int kernel, fastopt_plan *plan, const double *coefficients);

/* Apply to each tensor t the kernel of its group g = plan->group[t]: kernels[g], with the
 * coefficients at coefficients + g * FASTOPT_MAX_COEFFICIENTS (fastopt.optim's per-key
 * hyperparameters: one call for every group). Each kernel's state arrays must be a prefix of
 * the plan's. */
void fastopt_run_groups(const int *kernels, fastopt_plan *plan, const double *coefficients);

/* The reduction pass: a read-only pass over the gradients of a plan (plan->grad; params and
 * states are not touched) that returns the sum of the squares of every element, in double.
 * The result is bit-identical for every SIMD path and thread count, because the order of the
 * additions is fixed by the positions of the elements in the concatenated run alone:
 *   - the run is cut into blocks of FASTOPT_REDUCE_BLOCK elements (the last may be shorter);
 *   - in a block, element j adds (double)x * (double)x to partial sum j % FASTOPT_REDUCE_LANES,
 *     in order of j; the partial sums start at +0.0;
 *   - the partial sums of a block, then the block sums, are combined by the same pairwise tree:
 *     for width = 1, 2, 4, ...: s[i] += s[i + width] for i = 0, 2*width, 4*width, ...
 *     while i + width < n. The result is s[0] (+0.0 for an empty run).
 * Threads take whole blocks, so how the work is split never changes a bit. fastopt.reference
 * computes the same bits in NumPy. nonfinite is set to 1 if any element is NaN or infinite.
 * block_sums: room for fastopt_reduce_blocks(total elements) doubles (scratch). */
#define FASTOPT_REDUCE_BLOCK 1024
#define FASTOPT_REDUCE_LANES 8
int64_t fastopt_reduce_blocks(int64_t elements);
double fastopt_sum_of_squares(const fastopt_plan *plan, double *block_sums, int *nonfinite);

/* SIMD dispatch. */
int fastopt_simd_compiled(int simd);  /* 1 if this build contains the path */
int fastopt_simd_supported(int simd); /* 1 if compiled and this CPU (and OS) can run it */
int fastopt_simd_best(void);
int fastopt_simd_active(void);
int fastopt_simd_select(int simd);    /* 0 on success, -1 if not supported */
const char *fastopt_simd_name(int simd);

/* Threads: fastopt's own pool (pool.c), built unless FASTOPT_THREADS is 0. */
#ifndef FASTOPT_THREADS
#define FASTOPT_THREADS 1
#endif
int fastopt_threads_enabled(void);
void fastopt_threads_prepare(void); /* once, at import, before any step */
/* Exported from the extension (the rest is hidden) so that threadpoolctl can find and call
 * them: fastopt/_threadpoolctl.py. */
#if defined(_WIN32)
#define FASTOPT_EXPORT __declspec(dllexport)
#else
#define FASTOPT_EXPORT __attribute__((visibility("default")))
#endif
FASTOPT_EXPORT int fastopt_get_num_threads(void);
FASTOPT_EXPORT void fastopt_set_num_threads(int n); /* clamped to [1, FASTOPT_MAX_THREADS]; 1 if
                                                       the build has no threads */
/* Most threads a step may use: far beyond any core count, and a bound on the threads the pool
 * may start. */
#define FASTOPT_MAX_THREADS 1024
/* Steps estimated to take less than this many picoseconds on one thread run on the calling
 * thread. */
int64_t fastopt_get_parallel_threshold(void);
void fastopt_set_parallel_threshold(int64_t picoseconds);
/* 1 (default): each plan above the threshold measures its steps on one thread and on the
 * pool and runs the mode with the lower mean (see choose_mode in engine.c). 0: always the
 * pool above the threshold (tests use this to force every split). */
int fastopt_get_thread_backoff(void);
void fastopt_set_thread_backoff(int enabled);

#ifdef __cplusplus
}
#endif

#endif
