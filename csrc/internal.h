/* Declarations shared by the engine and the SIMD units; not part of the API Cython sees. */
#ifndef FASTOPT_INTERNAL_H
#define FASTOPT_INTERNAL_H

#include "fastopt.h"

/* A loop applies one kernel to n consecutive elements. */
typedef void (*fastopt_loop_fn)(int64_t n, void *param, const void *grad, void *state0,
                                void *state1, const double *coefficients);

extern const fastopt_loop_fn fastopt_loops_baseline[FASTOPT_NUM_KERNELS][FASTOPT_NUM_DTYPES];
#ifdef FASTOPT_HAVE_AVX2
extern const fastopt_loop_fn fastopt_loops_avx2[FASTOPT_NUM_KERNELS][FASTOPT_NUM_DTYPES];
#endif
#ifdef FASTOPT_HAVE_AVX512
extern const fastopt_loop_fn fastopt_loops_avx512[FASTOPT_NUM_KERNELS][FASTOPT_NUM_DTYPES];
#endif

#endif
