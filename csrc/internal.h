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

/* What each SIMD unit (loops.h compiled with its flags) provides. */
typedef struct {
    fastopt_loop_fn loops[FASTOPT_NUM_KERNELS][FASTOPT_NUM_DTYPES];
    fastopt_sum_squares_fn sum_squares[FASTOPT_NUM_DTYPES];
} fastopt_unit;

extern const fastopt_unit fastopt_unit_baseline;
#ifdef FASTOPT_HAVE_AVX2
extern const fastopt_unit fastopt_unit_avx2;
#endif
#ifdef FASTOPT_HAVE_AVX512
extern const fastopt_unit fastopt_unit_avx512;
#endif

#endif
