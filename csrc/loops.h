/* The loops over arrays, generic over kernels and dtypes.
 *
 * Each SIMD unit (loops_baseline.c, loops_avx2.c, loops_avx512.c) defines FASTOPT_UNIT and
 * includes this file; the unit is compiled with its own target flags, so the same C text becomes
 * baseline, AVX2 or AVX-512 machine code. The vectoriser only widens independent per-element
 * operations (no reductions, no reassociation, no contraction), so every path computes the same
 * bits as the scalar code and as NumPy.
 */
#include <math.h>
#include <stddef.h>
#include <stdint.h>

#include "convert.h"
#include "internal.h"

#ifndef FASTOPT_UNIT
#error "define FASTOPT_UNIT (the name of this unit's fastopt_unit) before including loops.h"
#endif

#if defined(_MSC_VER)
#define FO_RESTRICT __restrict
#else
#define FO_RESTRICT restrict
#endif

/* The element functions, once per compute type of the dtype table. */
#define REAL float
#define FO_NAME(name) name##_f32
#define FO_SQRT sqrtf
#define FO_ABS fabsf
#include "elementwise.h"
#undef REAL
#undef FO_NAME
#undef FO_SQRT
#undef FO_ABS

#define REAL double
#define FO_NAME(name) name##_f64
#define FO_SQRT sqrt
#define FO_ABS fabs
#include "elementwise.h"
#undef REAL
#undef FO_NAME
#undef FO_SQRT
#undef FO_ABS

/* Elements before p reaches a 64-byte boundary (at most n). A large NumPy array starts 16 bytes
 * past a page boundary, and the arrays of one step usually share that offset, so running these
 * few elements first leaves every vector load and store of the main loop inside one cache line
 * (about 10% faster at 1e7 float64 elements here). Same element function, same bits. */
static inline int64_t fo_head_elements(const void *p, size_t itemsize, int64_t n)
{
    const uintptr_t misalign = (uintptr_t)p & 63;
    int64_t head = (misalign && misalign % itemsize == 0)
                       ? (int64_t)((64 - misalign) / itemsize) : 0;
    return head < n ? head : n;
}

/* One loop per (kernel, dtype). The coefficients are copied by name into a local struct (each
 * rounded to REAL by the assignment, and kept in double in k.d) so the compiler knows no store
 * through p or the states can change them. */
#define FO_LOAD_COEFFICIENT(name)                                                               \
    k.name = coefficients[coefficient];                                                       \
    k.d.name = coefficients[coefficient];                                                     \
    ++coefficient;
#define FO_LOAD_COEFFICIENTS(name, SFX)                                                         \
    name##_coefficients_##SFX k;                                                              \
    int coefficient = 0;                                                                      \
    FASTOPT_COEFFICIENTS_##name(FO_LOAD_COEFFICIENT)                                          \
    (void)coefficient;                                                                        \
    (void)coefficients;

/* The state arrays of a kernel with N states: typed pointers s0, s1, ... and, for element i,
 * the arguments ", &s0[i], &s1[i], ..." of its element function. */
#define FO_STATE_POINTERS_0(REAL)
#define FO_STATE_POINTERS_1(REAL) REAL *FO_RESTRICT s0 = (REAL *)state[0];
#define FO_STATE_POINTERS_2(REAL) FO_STATE_POINTERS_1(REAL) REAL *FO_RESTRICT s1 = (REAL *)state[1];
#define FO_STATE_POINTERS_3(REAL) FO_STATE_POINTERS_2(REAL) REAL *FO_RESTRICT s2 = (REAL *)state[2];
#define FO_STATE_POINTERS_4(REAL) FO_STATE_POINTERS_3(REAL) REAL *FO_RESTRICT s3 = (REAL *)state[3];
#define FO_STATE_ARGUMENTS_0(i)
#define FO_STATE_ARGUMENTS_1(i) , &s0[i]
#define FO_STATE_ARGUMENTS_2(i) FO_STATE_ARGUMENTS_1(i), &s1[i]
#define FO_STATE_ARGUMENTS_3(i) FO_STATE_ARGUMENTS_2(i), &s2[i]
#define FO_STATE_ARGUMENTS_4(i) FO_STATE_ARGUMENTS_3(i), &s3[i]

/* The start of every loop: typed pointers, the coefficients, and the elements before p reaches
 * a 64-byte boundary. */
#define FO_LOOP_START(name, states, REAL, SFX)                                                  \
    REAL *FO_RESTRICT p = (REAL *)param;                                                      \
    const REAL *FO_RESTRICT g = (const REAL *)grad;                                           \
    FO_STATE_POINTERS_##states(REAL)                                                          \
    (void)state;                                                                              \
    FO_LOAD_COEFFICIENTS(name, SFX)                                                           \
    const int64_t head = fo_head_elements(p, sizeof(REAL), n);                                \
    int64_t i = 0;

#define FO_LOOP_SIGNATURE(name, SFX)                                                            \
    static void name##_loop_##SFX(int64_t n, void *param, const void *grad, void *const *state, \
                                  const double *coefficients)

/* One pass; the head first, on its own, so that the main loop starts aligned. */
#define FO_DEFINE_LOOP_one_pass(name, states, REAL, SFX)                                        \
    FO_LOOP_SIGNATURE(name, SFX)                                                              \
    {                                                                                         \
        FO_LOOP_START(name, states, REAL, SFX)                                                \
        for (; i < head; ++i)                                                                 \
            name##_element_##SFX(&k, g[i], &p[i] FO_STATE_ARGUMENTS_##states(i));             \
        for (; i < n; ++i)                                                                    \
            name##_element_##SFX(&k, g[i], &p[i] FO_STATE_ARGUMENTS_##states(i));             \
    }

/* Two passes over each block of FO_BLOCK elements, which stays in L1: name_states() updates both
 * state arrays and returns a value per element (Adam: the denominator), then name_param() updates
 * the parameter from the new first state and that value. Same element functions, same operations
 * in the same order, same bits. It pays where one pass mixes float32 and float64: Adam's float32
 * loop spends its time converting and shuffling, and split in two it vectorises better (with
 * AVX2, in L1: 0.79 -> 0.67 ns per element; 200 arrays of 4096: 7% less time per step). The
 * float64 loop keeps one pass: it is memory-bound from 1e6 elements, where two passes cost it
 * 2-7%. Kernels with two states only. */
#define FO_BLOCK 256
#define FO_DEFINE_LOOP_f32_two_pass(name, states, REAL, SFX)                                    \
    FO_DEFINE_LOOP_two_pass_##SFX(name, states, REAL, SFX)
#define FO_DEFINE_LOOP_two_pass_f64(name, states, REAL, SFX)                                    \
    FO_DEFINE_LOOP_one_pass(name, states, REAL, SFX)
#define FO_DEFINE_LOOP_two_pass_f32(name, states, REAL, SFX)                                    \
    FO_LOOP_SIGNATURE(name, SFX)                                                              \
    {                                                                                         \
        FO_LOOP_START(name, states, REAL, SFX)                                                \
        REAL carry[FO_BLOCK];                                                                 \
        for (; i < head; ++i)                                                                 \
            name##_element_##SFX(&k, g[i], &p[i], &s0[i], &s1[i]);                            \
        for (; i < n; i += FO_BLOCK) {                                                        \
            const int64_t count = n - i < FO_BLOCK ? n - i : FO_BLOCK;                        \
            for (int64_t j = 0; j < count; ++j)                                               \
                carry[j] = name##_states_##SFX(&k, g[i + j], &s0[i + j], &s1[i + j]);         \
            for (int64_t j = 0; j < count; ++j)                                               \
                name##_param_##SFX(&k, s0[i + j], carry[j], &p[i + j]);                       \
        }                                                                                     \
    }

/* Every kernel for every native dtype of the table (converted ones use the float32 loop). */
#define FO_DEFINE_LOOP_FOR_DTYPE(name, states, loop, SFX, storage, compute, numpy_name, kind)   \
    FO_DEFINE_LOOP_FOR_##kind(name, states, loop, SFX, storage)
#define FO_DEFINE_LOOP_FOR_native(name, states, loop, SFX, storage)                             \
    FO_DEFINE_LOOP_##loop(name, states, storage, SFX)
#define FO_DEFINE_LOOP_FOR_converted(name, states, loop, SFX, storage)
#define FO_DEFINE_LOOPS(name, states, loop, ps_f32, ps_f64)                                     \
    FASTOPT_FOR_EACH_DTYPE(FO_DEFINE_LOOP_FOR_DTYPE, name, states, loop)
FASTOPT_FOR_EACH_KERNEL(FO_DEFINE_LOOPS)

/* The reduction pass (see fastopt_sum_of_squares in fastopt.h): x*x in double, added to the
 * partial sum of its lane, element after element. Up to the first lane 0 one at a time, then
 * groups of FASTOPT_REDUCE_LANES, which the vectoriser turns into vector additions of the
 * partial sums (each lane still adds its own elements in order: the same bits as the scalar
 * loop, on every SIMD path), then the tail. */
#define FO_LANES FASTOPT_REDUCE_LANES
/* How a stored value becomes a double: native types convert; 16-bit ones through float. */
#define FO_LOAD_f32(x) ((double)(x))
#define FO_LOAD_f64(x) ((double)(x))
#define FO_LOAD_bf16(x) ((double)fo_bf16_to_float(x))
#define FO_LOAD_f16(x) ((double)fo_f16_to_float(x))
#define FO_DEFINE_SUM_SQUARES(REAL, SFX)                                                        \
    static void sum_squares_##SFX(int64_t n, const void *data, int64_t lane0,                 \
                                  double *partial_sums)                                       \
    {                                                                                         \
        const REAL *FO_RESTRICT x = (const REAL *)data;                                       \
        double sums[FO_LANES];                                                                \
        for (int l = 0; l < FO_LANES; ++l)                                                    \
            sums[l] = partial_sums[l];                                                        \
        int64_t i = 0, lane = lane0 % FO_LANES;                                               \
        for (; i < n && lane != 0; ++i, lane = (lane + 1) % FO_LANES) {                       \
            const double v = FO_LOAD_##SFX(x[i]);                                                    \
            sums[lane] = sums[lane] + v * v;                                                  \
        }                                                                                     \
        for (; i + FO_LANES <= n; i += FO_LANES)                                              \
            for (int l = 0; l < FO_LANES; ++l) {                                              \
                const double v = FO_LOAD_##SFX(x[i + l]);                                            \
                sums[l] = sums[l] + v * v;                                                    \
            }                                                                                 \
        for (int l = 0; i < n; ++i, ++l) {                                                    \
            const double v = FO_LOAD_##SFX(x[i]);                                                    \
            sums[l] = sums[l] + v * v;                                                        \
        }                                                                                     \
        for (int l = 0; l < FO_LANES; ++l)                                                    \
            partial_sums[l] = sums[l];                                                        \
    }
#define FO_DEFINE_SUM_SQUARES_FOR_DTYPE(a, b, c, SFX, storage, compute, numpy_name, kind)       \
    FO_DEFINE_SUM_SQUARES(storage, SFX)
FASTOPT_FOR_EACH_DTYPE(FO_DEFINE_SUM_SQUARES_FOR_DTYPE, , , )

/* ---- mixed precision (fastopt.optim): 16-bit storage computed in float32 ------------------
 * Each block of FO_MIXED_BLOCK elements: every 16-bit array the kernel reads is converted to a
 * float32 buffer (float32 arrays are used where they are), the kernel's float32 loop runs on
 * the buffers, and every written 16-bit value is rounded once from float32 (to nearest even,
 * or stochastically). With a master copy the loop updates the float32 master in place and the
 * parameter gets its rounded value. Same element functions, so the same float32 bits as the
 * float32 kernel on the upcast arrays: fastopt.reference.optim computes exactly that. */
#define FO_MIXED_BLOCK 256

static void mixed_load(int dtype, const void *source, int64_t start, int64_t count,
                       float *FO_RESTRICT target)
{
    const uint16_t *FO_RESTRICT bits = (const uint16_t *)source + start;
    if (dtype == FASTOPT_DTYPE_bf16)
        for (int64_t j = 0; j < count; ++j)
            target[j] = fo_bf16_to_float(bits[j]);
    else
        for (int64_t j = 0; j < count; ++j)
            target[j] = fo_f16_to_float(bits[j]);
}

static void mixed_store(int dtype, int stochastic, uint64_t stream, int64_t element,
                        const float *FO_RESTRICT source, void *target, int64_t start,
                        int64_t count)
{
    uint16_t *FO_RESTRICT bits = (uint16_t *)target + start;
    if (dtype == FASTOPT_DTYPE_bf16 && stochastic)
        for (int64_t j = 0; j < count; ++j)
            bits[j] = fo_bf16_stochastic(source[j],
                                         fo_random16(stream, (uint64_t)(element + j)));
    else if (dtype == FASTOPT_DTYPE_bf16)
        for (int64_t j = 0; j < count; ++j)
            bits[j] = fo_bf16_from_float(source[j]);
    else
        for (int64_t j = 0; j < count; ++j)
            bits[j] = fo_f16_from_float(source[j]);
}

/* Ask for the next block of every array while this one is converted, computed and rounded:
 * the passes of a block each stream fewer arrays than one fused loop would, and without this
 * the memory system idles between them (at 1e7 elements, 10-15% of the step here). */
static void mixed_prefetch_range(const void *base, size_t item_size, int64_t start, int write)
{
#if defined(__GNUC__) || defined(__clang__)
    const char *first = (const char *)base + (size_t)start * item_size;
    for (size_t offset = 0; offset < FO_MIXED_BLOCK * item_size; offset += 64) {
        if (write)
            __builtin_prefetch(first + offset, 1);
        else
            __builtin_prefetch(first + offset, 0);
    }
#else
    (void)base, (void)item_size, (void)start, (void)write;
#endif
}

static void mixed_prefetch(const fo_mixed_piece *m, int64_t start)
{
    const size_t param_size = m->param_dtype == FASTOPT_DTYPE_f32 ? 4 : 2;
    if (m->master)
        mixed_prefetch_range(m->master, 4, start, 1);
    else
        mixed_prefetch_range(m->param, param_size, start, 1);
    mixed_prefetch_range(m->grad, m->grad_dtype == FASTOPT_DTYPE_f32 ? 4 : 2, start, 0);
    for (int s = 0; s < m->n_states; ++s)
        mixed_prefetch_range(m->state[s], m->state_dtype[s] == FASTOPT_DTYPE_f32 ? 4 : 2, start,
                             1);
}

static void mixed_run(fastopt_loop_fn loop, const fo_mixed_piece *m, const double *coefficients)
{
    float param_buffer[FO_MIXED_BLOCK], grad_buffer[FO_MIXED_BLOCK];
    float state_buffer[FASTOPT_MAX_STATES][FO_MIXED_BLOCK];
    const int param_converted = m->param_dtype != FASTOPT_DTYPE_f32;
    for (int64_t i = 0; i < m->n; i += FO_MIXED_BLOCK) {
        const int64_t count = m->n - i < FO_MIXED_BLOCK ? m->n - i : FO_MIXED_BLOCK;
        if (i + FO_MIXED_BLOCK < m->n)
            mixed_prefetch(m, i + FO_MIXED_BLOCK);
        float *param;
        if (m->master)
            param = m->master + i;
        else if (param_converted)
            mixed_load(m->param_dtype, m->param, i, count, param = param_buffer);
        else
            param = (float *)m->param + i;
        const float *grad = (const float *)m->grad + i;
        if (m->grad_dtype != FASTOPT_DTYPE_f32) {
            mixed_load(m->grad_dtype, m->grad, i, count, grad_buffer);
            grad = grad_buffer;
        }
        void *state[FASTOPT_MAX_STATES];
        for (int s = 0; s < m->n_states; ++s) {
            if (m->state_dtype[s] == FASTOPT_DTYPE_f32) {
                state[s] = (float *)m->state[s] + i;
            } else {
                mixed_load(m->state_dtype[s], m->state[s], i, count, state_buffer[s]);
                state[s] = state_buffer[s];
            }
        }
        loop(count, param, grad, state, coefficients);
        if (param_converted)
            mixed_store(m->param_dtype, m->stochastic, m->stream[0], m->first + i, param,
                        m->param, i, count);
        else if (m->master) /* a float32 parameter: its master copy, exactly */
            memcpy((float *)m->param + i, param, (size_t)count * sizeof(float));
        for (int s = 0; s < m->n_states; ++s)
            if (m->state_dtype[s] != FASTOPT_DTYPE_f32)
                mixed_store(m->state_dtype[s], m->stochastic, m->stream[1 + s], m->first + i,
                            state_buffer[s], m->state[s], i, count);
    }
}

/* This unit's tables, indexed by kernel and dtype (NULL for converted dtypes). */
#define FO_LOOP_POINTER(name, b, c, SFX, storage, compute, numpy_name, kind)                    \
    FO_LOOP_POINTER_##kind(name##_loop_##SFX)
#define FO_LOOP_POINTER_native(loop) loop,
#define FO_LOOP_POINTER_converted(loop) NULL,
#define FO_LOOP_ROW(name, states, loop, ps_f32, ps_f64)                                         \
    {FASTOPT_FOR_EACH_DTYPE(FO_LOOP_POINTER, name, , )},
#define FO_SUM_SQUARES_POINTER(a, b, c, SFX, storage, compute, numpy_name, kind) sum_squares_##SFX,
const fastopt_unit FASTOPT_UNIT = {
    .loops = {FASTOPT_FOR_EACH_KERNEL(FO_LOOP_ROW)},
    .sum_squares = {FASTOPT_FOR_EACH_DTYPE(FO_SUM_SQUARES_POINTER, , , )},
    .mixed = mixed_run,
};
