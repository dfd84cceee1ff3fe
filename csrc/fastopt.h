/* fastopt: the C side of the optimizer kernels.
 *
 * Cython hands over a plan (pointer and length arrays for every tensor of an update() call, cut
 * into chunks once) and this step's coefficients in double; fastopt_run() applies one kernel to
 * all of it, on the SIMD path chosen at import and on the configured number of threads.
 * Kernels trust their inputs: all validation happens in Python before anything gets here.
 */
#ifndef FASTOPT_H
#define FASTOPT_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* The registry of kernels: name and number of state arrays. A new optimizer is one element
 * function in elementwise.h plus one line here. The traffic kernels read and write exactly the
 * bytes of an optimizer with 0, 1 or 2 state arrays with trivial arithmetic: the benchmark's
 * measure of what the memory system allows. */
#define FASTOPT_FOR_EACH_KERNEL(X) \
    X(sgd, 0)                      \
    X(momentum, 1)                 \
    X(nesterov, 1)                 \
    X(adagrad, 1)                  \
    X(rmsprop, 1)                  \
    X(adam, 2)                     \
    X(traffic0, 0)                 \
    X(traffic1, 1)                 \
    X(traffic2, 2)

#define FASTOPT_KERNEL_ENUM(name, n_states) FASTOPT_KERNEL_##name,
enum { FASTOPT_FOR_EACH_KERNEL(FASTOPT_KERNEL_ENUM) FASTOPT_NUM_KERNELS };
#undef FASTOPT_KERNEL_ENUM

enum { FASTOPT_FLOAT32 = 0, FASTOPT_FLOAT64 = 1, FASTOPT_NUM_DTYPES = 2 };

/* Most coefficients a kernel takes (doubles, as Python computed them). */
#define FASTOPT_MAX_COEFFICIENTS 4

/* SIMD paths, in increasing order of preference. */
enum { FASTOPT_SIMD_BASELINE = 0, FASTOPT_SIMD_AVX2 = 1, FASTOPT_SIMD_AVX512 = 2, FASTOPT_NUM_SIMD = 3 };

/* One contiguous run of elements of one tensor: the unit of work a thread takes. */
typedef struct {
    int64_t tensor;
    int64_t offset; /* in elements */
    int64_t length; /* in elements */
} fastopt_chunk;

typedef struct {
    int64_t n_chunks;
    const fastopt_chunk *chunks;
    int64_t total_elements;
    /* per tensor; state pointers may be NULL when the kernel has fewer states */
    const int *dtype; /* FASTOPT_FLOAT32 or FASTOPT_FLOAT64 */
    void *const *param;
    const void *const *grad;
    void *const *state0;
    void *const *state1;
} fastopt_plan;

/* Cut tensors of the given sizes into chunks of at most chunk_elements. Returns the number of
 * chunks written to out (which has room for fastopt_count_chunks() entries). */
int64_t fastopt_count_chunks(int64_t n_tensors, const int64_t *sizes, int64_t chunk_elements);
int64_t fastopt_make_chunks(int64_t n_tensors, const int64_t *sizes, int64_t chunk_elements,
                            fastopt_chunk *out);

/* Apply one kernel to the whole plan. Safe to call without the GIL. */
void fastopt_run(int kernel, const fastopt_plan *plan, const double *coefficients);

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
int64_t fastopt_get_parallel_threshold(void);
void fastopt_set_parallel_threshold(int64_t elements);

#ifdef __cplusplus
}
#endif

#endif
