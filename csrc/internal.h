/* Declarations shared by the engine and the SIMD units; not part of the API Cython sees. */
#ifndef FASTOPT_INTERNAL_H
#define FASTOPT_INTERNAL_H

#include "fastopt.h"

/* A loop applies one kernel to n consecutive elements: state[s] points at state array s of the
 * same elements (as many as the kernel has), coefficients are the kernel's, in registry order. */
typedef void (*fastopt_loop_fn)(int64_t n, void *param, const void *grad, void *const *state,
                                const double *coefficients);

/* The reduction pass's piece of work: n consecutive elements of one array, the first of which
 * is element lane0 (mod FASTOPT_REDUCE_LANES) of its block, added into the block's partial
 * sums (see fastopt_sum_of_squares). */
typedef void (*fastopt_sum_squares_fn)(int64_t n, const void *data, int64_t lane0,
                                       double *partial_sums);

/* One tensor's piece of a mixed-precision step (see fastopt_plan.mixed): n elements from
 * element first of the tensor; the kernel's n_states state arrays (not the master copy);
 * master: NULL or the float32 master copy; stream: the random stream of the parameter (or its
 * master's rounding) [0] and of each state array [1 + s]. Pointers are at the piece's start. */
typedef struct {
    int64_t n, first;
    int param_dtype, grad_dtype;
    void *param;
    const void *grad;
    int n_states;
    void *state[FASTOPT_MAX_STATES];
    int state_dtype[FASTOPT_MAX_STATES];
    float *master;
    int stochastic;
    uint64_t stream[1 + FASTOPT_MAX_STATES];
} fo_mixed_piece;

/* Runs a float32 loop over a mixed piece: blocks converted to float32, the loop, each written
 * value rounded once to its storage type. */
typedef void (*fastopt_mixed_fn)(fastopt_loop_fn f32_loop, const fo_mixed_piece *piece,
                                 const double *coefficients);

/* What each SIMD unit (loops.h compiled with its flags) provides. Converted dtypes have no
 * loops of their own (NULL): they run through mixed with the float32 loop. */
typedef struct {
    fastopt_loop_fn loops[FASTOPT_NUM_KERNELS][FASTOPT_NUM_DTYPES];
    fastopt_sum_squares_fn sum_squares[FASTOPT_NUM_DTYPES];
    fastopt_mixed_fn mixed;
} fastopt_unit;

extern const fastopt_unit fastopt_unit_baseline;
#ifdef FASTOPT_HAVE_AVX2
extern const fastopt_unit fastopt_unit_avx2;
#endif
#ifdef FASTOPT_HAVE_AVX512
extern const fastopt_unit fastopt_unit_avx512;
#endif

/* ---- threads (pool.c) ---------------------------------------------------------------------- */

#if defined(__x86_64__) || defined(_M_X64) || defined(__i386__) || defined(_M_IX86)
#define FASTOPT_X86 1
#include <xmmintrin.h> /* _mm_getcsr, _mm_setcsr: SSE, part of every x86-64 baseline */
#else
#include <fenv.h>
#endif

/* ---- the floating-point environment ------------------------------------------------------ */

/* Worker threads compute in the calling thread's floating-point environment: rounding mode and,
 * on x86, flush-to-zero and denormals-are-zero (MXCSR). A library built with -ffast-math sets
 * FTZ/DAZ in the thread that loads it, after the workers exist; without this, the workers
 * would keep the old mode and results would depend on the number of threads. Each worker takes
 * the caller's environment for the step and restores its own afterwards. */
#ifdef FASTOPT_X86
typedef unsigned int fo_fp_environment;
static inline void fo_get_fp_environment(fo_fp_environment *e) { *e = _mm_getcsr(); }
static inline void fo_set_fp_environment(const fo_fp_environment *e) { _mm_setcsr(*e); }
#else
typedef fenv_t fo_fp_environment;
static inline void fo_get_fp_environment(fo_fp_environment *e) { fegetenv(e); }
static inline void fo_set_fp_environment(const fo_fp_environment *e) { fesetenv(e); }
#endif

/* In a worker: keep its own environment in *own and take the caller's. */
static inline void fo_adopt_fp_environment(const fo_fp_environment *caller, fo_fp_environment *own)
{
    fo_get_fp_environment(own);
    fo_set_fp_environment(caller);
}

/* Run fn(context, c) for every chunk c in [0, n_chunks), each exactly once, on the calling
 * thread and up to helpers worker threads, in the caller's floating-point environment; return
 * when all are done (1 if workers were asked to help, 0 if the caller ran every chunk because
 * the pool was busy with another caller, or threads are not built). A worker that has not
 * started by the time the caller is done is not waited for. */
typedef void (*fo_chunk_fn)(void *context, int64_t chunk);
int fo_pool_run(int helpers, int64_t n_chunks, fo_chunk_fn fn, void *context);
void fo_pool_prepare(void); /* once, before the first fo_pool_run (with the GIL held) */
double fo_seconds(void);    /* a monotonic clock, in seconds */

#endif
