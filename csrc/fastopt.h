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

/* The registry of kernels: name, loop (the number of state arrays, and for some kernels how
 * loops.h runs through them), and the single-thread cost of one element in picoseconds for
 * float32 and float64 (measured in cache on the 2-core AMD EPYC machine, AVX2; only their size
 * relative to the threshold matters, to decide on threads).
 * A new optimizer is one element function in elementwise.h plus one line here. The traffic
 * kernels read and write exactly the bytes of an optimizer with 0, 1 or 2 state arrays with
 * trivial arithmetic: the benchmark's measure of what the memory system allows. */
#define FASTOPT_FOR_EACH_KERNEL(X)         \
    X(sgd, 0, 100, 250)                    \
    X(momentum, 1, 190, 370)               \
    X(nesterov, 1, 200, 400)               \
    X(adagrad, 1, 360, 1100)               \
    X(rmsprop, 1, 380, 1100)               \
    X(adam, 2_f32_two_pass, 720, 1130)     \
    X(traffic0, 0, 100, 250)               \
    X(traffic1, 1, 190, 370)               \
    X(traffic2, 2, 250, 500)

#define FASTOPT_KERNEL_ENUM(name, loop, ps_f32, ps_f64) FASTOPT_KERNEL_##name,
enum { FASTOPT_FOR_EACH_KERNEL(FASTOPT_KERNEL_ENUM) FASTOPT_NUM_KERNELS };
#undef FASTOPT_KERNEL_ENUM

enum { FASTOPT_FLOAT32 = 0, FASTOPT_FLOAT64 = 1, FASTOPT_NUM_DTYPES = 2 };

/* Most coefficients a kernel takes (doubles, as Python computed them). */
#define FASTOPT_MAX_COEFFICIENTS 4

/* SIMD paths, in increasing order of preference. */
enum { FASTOPT_SIMD_BASELINE = 0, FASTOPT_SIMD_AVX2 = 1, FASTOPT_SIMD_AVX512 = 2, FASTOPT_NUM_SIMD = 3 };

/* Every tensor of one update(), seen as one concatenated run of elements: tensor t holds the
 * elements [offset[t], offset[t + 1]). Threads split that run into equal contiguous ranges. */
typedef struct {
    int64_t n_tensors;
    const int64_t *offset; /* n_tensors + 1 prefix sums of the sizes */
    int64_t cost;          /* estimated single-thread time in picoseconds: decides on threads */
    /* per tensor; state pointers may be NULL when the kernel has fewer states */
    const int *dtype; /* FASTOPT_FLOAT32 or FASTOPT_FLOAT64 */
    void *const *param;
    const void *const *grad;
    void *const *state0;
    void *const *state1;
    /* fastopt_run's memory of how threads fared on this plan (start all at 0) */
    int32_t serial_steps_left; /* run this many more steps on one thread */
    int32_t backoff;           /* steps to stay serial the next time threads are slow */
    double serial_seconds;     /* fastest one-thread step measured so far (0: none yet) */
} fastopt_plan;

/* The estimated single-thread time of one step of kernel over these tensors, in picoseconds. */
int64_t fastopt_estimate_cost(int kernel, int64_t n_tensors, const int64_t *sizes,
                              const int *dtypes);

/* Apply one kernel to the whole plan. Safe to call without the GIL, but not on one plan from
 * two threads at once (it updates the plan's thread back-off). */
void fastopt_run(int kernel, fastopt_plan *plan, const double *coefficients);

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

/* Threads. */
int fastopt_openmp_enabled(void);
int fastopt_get_num_threads(void);
void fastopt_set_num_threads(int n); /* n >= 1 */
/* Steps estimated to take less than this many picoseconds on one thread run on the calling
 * thread. */
int64_t fastopt_get_parallel_threshold(void);
void fastopt_set_parallel_threshold(int64_t picoseconds);
/* 1 (default): after a threaded step that took longer than one thread would have, run that
 * plan on one thread for a while (see fastopt_run). 0: always use threads above the
 * threshold (tests use this to force every split). */
int fastopt_get_thread_backoff(void);
void fastopt_set_thread_backoff(int enabled);

#ifdef __cplusplus
}
#endif

#endif
