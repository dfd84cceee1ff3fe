/* The engine: run-time SIMD dispatch, splitting the work, threads. No per-element math. */
#include <math.h>
#include <stddef.h>
#include <stdint.h>

#include "convert.h"
#include "internal.h"

#if defined(FASTOPT_X86)
#if defined(_MSC_VER)
#include <immintrin.h>
#include <intrin.h>
#else
#include <cpuid.h>
#endif
#endif

/* ---- CPU features ------------------------------------------------------------------------- */

#ifdef FASTOPT_X86
static void cpuid_count(unsigned leaf, unsigned subleaf, unsigned regs[4])
{
#if defined(_MSC_VER)
    int r[4];
    __cpuidex(r, (int)leaf, (int)subleaf);
    for (int i = 0; i < 4; ++i)
        regs[i] = (unsigned)r[i];
#else
    if (!__get_cpuid_count(leaf, subleaf, &regs[0], &regs[1], &regs[2], &regs[3]))
        regs[0] = regs[1] = regs[2] = regs[3] = 0;
#endif
}

/* Which register states the OS saves on a context switch (XCR0). Only called after CPUID said
 * OSXSAVE, so the instruction exists. Written as bytes so the baseline unit needs no -mxsave. */
static uint64_t read_xcr0(void)
{
#if defined(_MSC_VER)
    return _xgetbv(0);
#else
    uint32_t eax, edx;
    __asm__ volatile(".byte 0x0f, 0x01, 0xd0" : "=a"(eax), "=d"(edx) : "c"(0));
    return ((uint64_t)edx << 32) | eax;
#endif
}

static int cpu_has(int simd)
{
    unsigned leaf0[4], leaf1[4], leaf7[4];
    cpuid_count(0, 0, leaf0);
    if (leaf0[0] < 7)
        return 0;
    cpuid_count(1, 0, leaf1);
    cpuid_count(7, 0, leaf7);
    const int osxsave = (leaf1[2] >> 27) & 1, avx = (leaf1[2] >> 28) & 1;
    if (!osxsave || !avx)
        return 0;
    const uint64_t xcr0 = read_xcr0();
    const int os_ymm = (xcr0 & 0x6) == 0x6;     /* SSE and AVX state */
    const int os_zmm = (xcr0 & 0xe6) == 0xe6;   /* plus opmask and both ZMM halves */
    const int avx2 = (leaf7[1] >> 5) & 1;
    const int avx512f = (leaf7[1] >> 16) & 1;
    if (simd == FASTOPT_SIMD_AVX2)
        return os_ymm && avx2;
    if (simd == FASTOPT_SIMD_AVX512)
        return os_ymm && os_zmm && avx2 && avx512f;
    return 0;
}
#else
static int cpu_has(int simd)
{
    (void)simd;
    return 0;
}
#endif

/* ---- dispatch ----------------------------------------------------------------------------- */

static const fastopt_unit *const units[FASTOPT_NUM_SIMD] = {
    &fastopt_unit_baseline,
#ifdef FASTOPT_HAVE_AVX2
    &fastopt_unit_avx2,
#else
    NULL,
#endif
#ifdef FASTOPT_HAVE_AVX512
    &fastopt_unit_avx512,
#else
    NULL,
#endif
};

static const char *const simd_names[FASTOPT_NUM_SIMD] = {"baseline", "avx2", "avx512"};

static int active_simd = -1; /* chosen lazily on first use, or by fastopt_simd_select() */

int fastopt_simd_compiled(int simd)
{
    return simd >= 0 && simd < FASTOPT_NUM_SIMD && units[simd] != NULL;
}

int fastopt_simd_supported(int simd)
{
    if (!fastopt_simd_compiled(simd))
        return 0;
    return simd == FASTOPT_SIMD_BASELINE || cpu_has(simd);
}

int fastopt_simd_best(void)
{
    for (int simd = FASTOPT_NUM_SIMD - 1; simd > 0; --simd)
        if (fastopt_simd_supported(simd))
            return simd;
    return FASTOPT_SIMD_BASELINE;
}

int fastopt_simd_active(void)
{
    if (active_simd < 0)
        active_simd = fastopt_simd_best();
    return active_simd;
}

int fastopt_simd_select(int simd)
{
    if (!fastopt_simd_supported(simd))
        return -1;
    active_simd = simd;
    return 0;
}

const char *fastopt_simd_name(int simd)
{
    return (simd >= 0 && simd < FASTOPT_NUM_SIMD) ? simd_names[simd] : "unknown";
}

/* ---- threads ------------------------------------------------------------------------------ */

static int num_threads = 1; /* Python sets the default at import (cores, or OMP_NUM_THREADS) */
/* A step whose estimated single-thread time is below this runs on the calling thread without
 * measuring threads at all: posting a job and waking a worker costs a few microseconds. */
static int64_t parallel_threshold = 3000000; /* picoseconds */

int fastopt_threads_enabled(void)
{
    return FASTOPT_THREADS;
}

void fastopt_threads_prepare(void)
{
    fo_pool_prepare();
}

int fastopt_get_num_threads(void)
{
    return num_threads;
}

void fastopt_set_num_threads(int n)
{
    num_threads = !FASTOPT_THREADS || n < 1 ? 1 : n > FASTOPT_MAX_THREADS ? FASTOPT_MAX_THREADS : n;
}

int64_t fastopt_get_parallel_threshold(void)
{
    return parallel_threshold;
}

void fastopt_set_parallel_threshold(int64_t picoseconds)
{
    parallel_threshold = picoseconds < 0 ? 0 : picoseconds;
}

static int adaptive_threads = 1;

int fastopt_get_thread_backoff(void)
{
    return adaptive_threads;
}

void fastopt_set_thread_backoff(int enabled)
{
    adaptive_threads = enabled != 0;
}

/* Converted dtypes (16-bit storage) cost the float32 loop plus the conversions. */
#define FO_COST_ROW(name, states, loop, ps_f32, ps_f64) {ps_f32, ps_f64, 2 * ps_f32, 2 * ps_f32},
typedef char fo_cost_row_has_a_column_per_dtype[FASTOPT_NUM_DTYPES == 4 ? 1 : -1];
static const int64_t element_cost[FASTOPT_NUM_KERNELS][FASTOPT_NUM_DTYPES] = {
    FASTOPT_FOR_EACH_KERNEL(FO_COST_ROW)};

int64_t fastopt_estimate_cost(int kernel, int64_t n_tensors, const int64_t *sizes,
                              const int *dtypes)
{
    int64_t cost = 0;
    for (int64_t t = 0; t < n_tensors; ++t)
        cost += sizes[t] * element_cost[kernel][dtypes[t]];
    return cost;
}

/* ---- the registry ------------------------------------------------------------------------- */

#define FO_COUNT_COEFFICIENT(name) +1
#define FO_NAME_COEFFICIENT(name) #name ","
#define FO_KERNEL_INFO(name, states, loop, ps_f32, ps_f64)                                      \
    {#name, states, 0 FASTOPT_COEFFICIENTS_##name(FO_COUNT_COEFFICIENT),                     \
     "" FASTOPT_COEFFICIENTS_##name(FO_NAME_COEFFICIENT)},
static const fastopt_kernel_info kernel_info[FASTOPT_NUM_KERNELS] = {
    FASTOPT_FOR_EACH_KERNEL(FO_KERNEL_INFO)};

const fastopt_kernel_info *fastopt_kernel(int kernel)
{
    return kernel >= 0 && kernel < FASTOPT_NUM_KERNELS ? &kernel_info[kernel] : NULL;
}

#define FO_DTYPE_INFO(a, b, c, sfx, storage, compute, numpy_name, kind)                        \
    {numpy_name, sizeof(storage), FO_CONVERTED_##kind},
#define FO_CONVERTED_native 0
#define FO_CONVERTED_converted 1
static const fastopt_dtype_info dtype_info[FASTOPT_NUM_DTYPES] = {
    FASTOPT_FOR_EACH_DTYPE(FO_DTYPE_INFO, , , )};

const fastopt_dtype_info *fastopt_dtype(int dtype)
{
    return dtype >= 0 && dtype < FASTOPT_NUM_DTYPES ? &dtype_info[dtype] : NULL;
}

static size_t item_size(int dtype)
{
    return (size_t)dtype_info[dtype].item_size;
}

/* ---- the step ---------------------------------------------------------------------------- */

/* The tensor holding element begin of the concatenated run: the last t with offset[t] <= begin. */
static int64_t tensor_at(const fastopt_plan *plan, int64_t begin)
{
    int64_t low = 0, high = plan->n_tensors;
    while (high - low > 1) {
        const int64_t mid = low + (high - low) / 2;
        if (plan->offset[mid] <= begin)
            low = mid;
        else
            high = mid;
    }
    return low;
}

/* The part of tensor t inside the elements [begin, end) of the run: its elements
 * [*first, *last). 0 if that part is empty. */
static inline int tensor_piece(const fastopt_plan *plan, int64_t t, int64_t begin, int64_t end,
                               int64_t *first, int64_t *last)
{
    const int64_t *offset = plan->offset;
    *first = begin > offset[t] ? begin - offset[t] : 0;
    *last = (end < offset[t + 1] ? end : offset[t + 1]) - offset[t];
    return *last > *first;
}

/* What one step runs: the unit's loops of every kernel, the kernel of each group of tensors and
 * the coefficients of group g at coefficients + g * FASTOPT_MAX_COEFFICIENTS (one group, group
 * 0, when the plan has no group array). */
typedef struct {
    const fastopt_loop_fn (*loops)[FASTOPT_NUM_DTYPES];
    fastopt_mixed_fn mixed;
    const int *kernels;
    const double *coefficients;
} fo_step_kernels;

static inline int grad_dtype(const fastopt_plan *plan, int64_t t)
{
    return plan->grad_dtype ? plan->grad_dtype[t] : plan->dtype[t];
}

/* The elements [first, last) of tensor t in a mixed-precision plan (see fastopt_plan.mixed):
 * every array at its own item size, through the unit's mixed runner with the float32 loop. */
static void run_mixed_piece(const fo_step_kernels *step, const fastopt_plan *plan, int64_t t,
                            int64_t first, int64_t last, int kernel, const double *coefficients)
{
    const int64_t n = plan->n_tensors;
    fo_mixed_piece piece;
    piece.n = last - first;
    piece.first = first;
    piece.param_dtype = plan->dtype[t];
    piece.grad_dtype = grad_dtype(plan, t);
    piece.param = (char *)plan->param[t] + (size_t)first * item_size(piece.param_dtype);
    piece.grad = (const char *)plan->grad[t] + (size_t)first * item_size(piece.grad_dtype);
    piece.n_states = kernel_info[kernel].n_states;
    piece.master = NULL;
    if (plan->master) {
        float *master = (float *)plan->state[(plan->n_states - 1) * n + t];
        piece.master = master + first;
    }
    piece.stochastic = plan->stochastic;
    piece.stream[0] = fo_stream(plan->seed, plan->step, (uint64_t)t, 0);
    for (int s = 0; s < piece.n_states; ++s) {
        const int dtype = plan->state_dtype ? plan->state_dtype[s * n + t] : plan->dtype[t];
        piece.state_dtype[s] = dtype;
        piece.state[s] = (char *)plan->state[s * n + t] + (size_t)first * item_size(dtype);
        piece.stream[1 + s] = fo_stream(plan->seed, plan->step, (uint64_t)t, (uint64_t)(1 + s));
    }
    step->mixed(step->loops[kernel][FASTOPT_DTYPE_f32], &piece, coefficients);
}

/* Apply the kernels to the elements [begin, end) of the concatenated run. */
static void run_range(const fo_step_kernels *step, const fastopt_plan *plan, int64_t begin,
                      int64_t end)
{
    int64_t first, last;
    if (!plan->group && !plan->mixed) { /* the textbook classes: one kernel, one dtype per tensor */
        const fastopt_loop_fn *loops = step->loops[step->kernels[0]];
        for (int64_t t = tensor_at(plan, begin); t < plan->n_tensors && plan->offset[t] < end;
             ++t) {
            if (!tensor_piece(plan, t, begin, end, &first, &last))
                continue;
            const int dtype = plan->dtype[t];
            const size_t skip = (size_t)first * item_size(dtype);
            void *state[FASTOPT_MAX_STATES];
            for (int s = 0; s < plan->n_states; ++s)
                state[s] = (char *)plan->state[s * plan->n_tensors + t] + skip;
            loops[dtype](last - first, (char *)plan->param[t] + skip,
                         (const char *)plan->grad[t] + skip, state, step->coefficients);
        }
        return;
    }
    for (int64_t t = tensor_at(plan, begin); t < plan->n_tensors && plan->offset[t] < end; ++t) {
        if (!tensor_piece(plan, t, begin, end, &first, &last))
            continue;
        const int dtype = plan->dtype[t];
        const int group = plan->group ? plan->group[t] : 0;
        if (plan->mixed && dtype != FASTOPT_DTYPE_f64) {
            run_mixed_piece(step, plan, t, first, last, step->kernels[group],
                            step->coefficients + (size_t)group * FASTOPT_MAX_COEFFICIENTS);
            continue;
        }
        const size_t skip = (size_t)first * item_size(dtype);
        void *state[FASTOPT_MAX_STATES];
        for (int s = 0; s < plan->n_states; ++s)
            state[s] = (char *)plan->state[s * plan->n_tensors + t] + skip;
        step->loops[step->kernels[group]][dtype](
            last - first, (char *)plan->param[t] + skip, (const char *)plan->grad[t] + skip,
            state, step->coefficients + (size_t)group * FASTOPT_MAX_COEFFICIENTS);
    }
}

/* A step split into chunks for the pool: chunk c is the elements [begin, end) of the run with
 * begin = total * c / n_chunks rounded down to a multiple of 16 (so that neighbouring chunks
 * rarely share a cache line). Elements are independent: whichever thread runs a chunk, the
 * bits are the same. */
typedef struct {
    const fo_step_kernels *step;
    const fastopt_plan *plan;
    int64_t total, n_chunks;
} fo_step_job;

static inline int64_t chunk_start(int64_t total, int64_t n_chunks, int64_t c)
{
    if (c >= n_chunks)
        return total;
    /* total * c / n_chunks without overflow */
    return (total / n_chunks * c + total % n_chunks * c / n_chunks) & ~(int64_t)15;
}

static void run_step_chunk(void *context, int64_t c)
{
    const fo_step_job *job = (const fo_step_job *)context;
    run_range(job->step, job->plan, chunk_start(job->total, job->n_chunks, c),
              chunk_start(job->total, job->n_chunks, c + 1));
}

/* How a plan decides between one thread and the pool (fastopt_plan's policy fields). Its first
 * step runs on the pool and is not measured (first touches of fresh state arrays, workers
 * being started: a measurement of that would condemn the pool for hundreds of steps). Then the
 * modes take turns, a burst of FO_BURST steps each, the pool first, FO_WARMUP_BURSTS times (the
 * first bursts after a plan is built run slower here, the pool's most); from then on the plan
 * runs the mode whose mean step time is lower (by FO_SWITCH_MARGIN, to switch): the better
 * mode's mean is a weighted mean of its steps (stalls included, each capped at FO_OUTLIER
 * times the mean), the other's the mean of its latest burst. The other mode
 * gets a new burst only after the plan has spent FO_EXPLORE_RATIO times that burst's expected
 * cost in the better mode: re-measuring costs at most about 1/FO_EXPLORE_RATIO of the plan's
 * time, and a mode that was very slow (threads while another program had the other core) is
 * retried correspondingly rarely. */
#define FO_BURST 4
#define FO_WARMUP_BURSTS 2
#define FO_EXPLORE_RATIO 100.0
#define FO_MEAN_WEIGHT 0.125 /* weight of the newest step in the better mode's mean */
#define FO_OUTLIER 4.0
/* Each worker's share is cut into about this many chunks, so that a late worker leaves
 * little for the others; a chunk is at least FO_MIN_CHUNK elements. */
#define FO_CHUNKS_PER_THREAD 4
#define FO_MIN_CHUNK 512

/* The better mode, with hysteresis: the other one must be faster by FO_SWITCH_MARGIN, or noise
 * in two means that are close would flip the plan back and forth, and the time spent in the
 * truly slower mode would not be bounded. */
#define FO_SWITCH_MARGIN 0.05
static int better_mode(fastopt_plan *plan)
{
    const int current = plan->better, other = 1 - current;
    if (plan->mean_seconds[other] < (1.0 - FO_SWITCH_MARGIN) * plan->mean_seconds[current])
        plan->better = other;
    return plan->better;
}

static void start_burst(fastopt_plan *plan, int mode)
{
    plan->burst_mode = mode;
    plan->burst_left = FO_BURST;
    plan->burst_seconds = 0.0;
}

/* The mode of this step: 0 one thread, 1 the pool, -1 the pool without measuring. */
static int choose_mode(fastopt_plan *plan)
{
    if (!adaptive_threads)
        return 1;
    if (!plan->warm)
        return -1;
    if (plan->burst_left == 0) {
        if (plan->samples[1] < FO_WARMUP_BURSTS * FO_BURST
            && plan->samples[1] <= plan->samples[0])
            start_burst(plan, 1);
        else if (plan->samples[0] < FO_WARMUP_BURSTS * FO_BURST)
            start_burst(plan, 0);
        else {
            const int other = 1 - better_mode(plan);
            if (plan->seconds_since_other
                >= FO_EXPLORE_RATIO * FO_BURST * plan->mean_seconds[other])
                start_burst(plan, other);
        }
    }
    return plan->burst_left > 0 ? plan->burst_mode : better_mode(plan);
}

static void record_step(fastopt_plan *plan, int mode, double seconds)
{
    if (mode < 0) {
        plan->warm = 1;
        return;
    }
    plan->last_seconds[mode] = seconds;
    if (plan->burst_left > 0) {
        plan->burst_seconds += seconds;
        if (--plan->burst_left == 0) {
            plan->mean_seconds[mode] = plan->burst_seconds / FO_BURST;
            plan->samples[mode] += FO_BURST;
            plan->seconds_since_other = 0.0;
            if (plan->samples[0] == plan->samples[1]) /* warm-up: no incumbent yet */
                plan->better = plan->mean_seconds[1] < plan->mean_seconds[0] ? 1 : 0;
        }
        return;
    }
    /* One step counts for at most FO_OUTLIER times the mean: a hiccup of the machine (a 13 ms
     * one on one step in 3000 here) must not send the plan to the other mode for thousands of
     * steps; stalls that keep coming (threads on a loaded machine) still raise the mean, by
     * up to that factor each time. */
    const double cap = FO_OUTLIER * plan->mean_seconds[mode];
    if (seconds > cap)
        seconds = cap;
    plan->mean_seconds[mode] += FO_MEAN_WEIGHT * (seconds - plan->mean_seconds[mode]);
    if (plan->samples[mode] < INT32_MAX)
        ++plan->samples[mode];
    plan->seconds_since_other += seconds;
}

static void run_step(const fo_step_kernels *step, fastopt_plan *plan)
{
    const int64_t total = plan->offset[plan->n_tensors];
    const int threads = fastopt_get_num_threads();
    /* A zero threshold (for tests) splits even the smallest step, in chunks of 16 elements. */
    const int64_t min_chunk = parallel_threshold > 0 ? FO_MIN_CHUNK : 16;
    if (!FASTOPT_THREADS || threads < 2 || total < 2 * min_chunk
        || plan->cost < parallel_threshold) {
        run_range(step, plan, 0, total);
        return;
    }
    const int mode = choose_mode(plan);
    const double start = fo_seconds();
    if (mode == 0) {
        run_range(step, plan, 0, total);
    } else {
        int64_t n_chunks = (int64_t)threads * FO_CHUNKS_PER_THREAD;
        if (n_chunks > total / min_chunk)
            n_chunks = total / min_chunk;
        fo_step_job job = {step, plan, total, n_chunks};
        fo_pool_run(threads - 1, n_chunks, run_step_chunk, &job);
    }
    record_step(plan, mode, fo_seconds() - start);
}

void fastopt_run(int kernel, fastopt_plan *plan, const double *coefficients)
{
    const fastopt_unit *unit = units[fastopt_simd_active()];
    const fo_step_kernels step = {unit->loops, unit->mixed, &kernel, coefficients};
    run_step(&step, plan);
}

void fastopt_run_groups(const int *kernels, fastopt_plan *plan, const double *coefficients)
{
    const fastopt_unit *unit = units[fastopt_simd_active()];
    const fo_step_kernels step = {unit->loops, unit->mixed, kernels, coefficients};
    run_step(&step, plan);
}

/* ---- the reduction pass ------------------------------------------------------------------ */

int64_t fastopt_reduce_blocks(int64_t elements)
{
    return (elements + FASTOPT_REDUCE_BLOCK - 1) / FASTOPT_REDUCE_BLOCK;
}

/* s[0] = the pairwise-tree sum of s[0..n) (fastopt.h says which tree); s is overwritten. */
static void pairwise_tree(double *s, int64_t n)
{
    for (int64_t width = 1; width < n; width *= 2)
        for (int64_t i = 0; i + width < n; i += 2 * width)
            s[i] = s[i] + s[i + width];
}

/* The sum of the squares of block b's elements. */
static double block_sum_of_squares(const fastopt_sum_squares_fn *sum_squares,
                                   const fastopt_plan *plan, int64_t b)
{
    const int64_t *offset = plan->offset;
    const int64_t begin = b * FASTOPT_REDUCE_BLOCK, total = offset[plan->n_tensors];
    const int64_t end = begin + FASTOPT_REDUCE_BLOCK < total ? begin + FASTOPT_REDUCE_BLOCK : total;
    double partial_sums[FASTOPT_REDUCE_LANES] = {0};
    int64_t first, last;
    for (int64_t t = tensor_at(plan, begin); t < plan->n_tensors && offset[t] < end; ++t) {
        if (!tensor_piece(plan, t, begin, end, &first, &last))
            continue;
        const int dtype = grad_dtype(plan, t);
        sum_squares[dtype](last - first,
                           (const char *)plan->grad[t] + (size_t)first * item_size(dtype),
                           offset[t] + first - begin, partial_sums);
    }
    pairwise_tree(partial_sums, FASTOPT_REDUCE_LANES);
    return partial_sums[0];
}

/* Any NaN or infinity among the gradients? Only asked when the sum of squares is not finite
 * (which finite values can also cause, by overflow), so a plain loop will do. */
#define FO_NONFINITE_CASE(a, b, c, sfx, storage, compute, numpy_name, kind)                     \
    case FASTOPT_DTYPE_##sfx: {                                                               \
        const storage *x = (const storage *)plan->grad[t];                                    \
        for (int64_t i = 0; i < n; ++i)                                                       \
            if (!isfinite(FO_COMPUTE_##sfx(x[i])))                                            \
                return 1;                                                                     \
        break;                                                                                \
    }
#define FO_COMPUTE_f32(x) (x)
#define FO_COMPUTE_f64(x) (x)
#define FO_COMPUTE_bf16(x) fo_bf16_to_float(x)
#define FO_COMPUTE_f16(x) fo_f16_to_float(x)
static int any_nonfinite(const fastopt_plan *plan)
{
    for (int64_t t = 0; t < plan->n_tensors; ++t) {
        const int64_t n = plan->offset[t + 1] - plan->offset[t];
        switch (grad_dtype(plan, t)) {
            FASTOPT_FOR_EACH_DTYPE(FO_NONFINITE_CASE, , , )
        }
    }
    return 0;
}


/* The reduction pass split into chunks of whole blocks: each block sum is the same whoever
 * computes it (in the caller's floating-point environment). */
typedef struct {
    const fastopt_sum_squares_fn *sum_squares;
    const fastopt_plan *plan;
    double *block_sums;
    int64_t n_blocks, n_chunks;
} fo_reduce_job;

static void run_reduce_chunk(void *context, int64_t c)
{
    const fo_reduce_job *job = (const fo_reduce_job *)context;
    const int64_t first = job->n_blocks * c / job->n_chunks;
    const int64_t last = job->n_blocks * (c + 1) / job->n_chunks;
    for (int64_t b = first; b < last; ++b)
        job->block_sums[b] = block_sum_of_squares(job->sum_squares, job->plan, b);
}

double fastopt_sum_of_squares(const fastopt_plan *plan, double *block_sums, int *nonfinite)
{
    const fastopt_sum_squares_fn *sum_squares = units[fastopt_simd_active()]->sum_squares;
    const int64_t n_blocks = fastopt_reduce_blocks(plan->offset[plan->n_tensors]);
    /* Threads as for a step whose single-thread cost is SGD's (a read of the gradient and two
     * floating-point operations per element, like SGD's arithmetic). */
    int64_t cost = 0;
    for (int64_t t = 0; t < plan->n_tensors; ++t)
        cost += (plan->offset[t + 1] - plan->offset[t])
                * element_cost[FASTOPT_KERNEL_sgd][plan->dtype[t]];
    const int threads = fastopt_get_num_threads();
    int64_t n_chunks = 1;
    if (FASTOPT_THREADS && threads > 1 && n_blocks > 1 && cost >= parallel_threshold)
        n_chunks = n_blocks < (int64_t)threads * FO_CHUNKS_PER_THREAD
                       ? n_blocks : (int64_t)threads * FO_CHUNKS_PER_THREAD;
    fo_reduce_job job = {sum_squares, plan, block_sums, n_blocks, n_chunks};
    if (n_chunks > 1)
        fo_pool_run(threads - 1, n_chunks, run_reduce_chunk, &job);
    else if (n_blocks > 0)
        run_reduce_chunk(&job, 0);
    pairwise_tree(block_sums, n_blocks);
    const double sum = n_blocks ? block_sums[0] : 0.0;
    *nonfinite = isfinite(sum) ? 0 : any_nonfinite(plan);
    return sum;
}
