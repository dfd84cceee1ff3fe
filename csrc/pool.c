/* fastopt's own worker threads (issue C: threads that never slow a training loop).
 *
 * Why not OpenMP: a parallel region ends when every thread of the team has arrived, so a step
 * waits for a worker the OS has not scheduled yet (on a machine with a busy core that is a
 * scheduler slice, ~8 ms, against a step of microseconds), and libgomp's workers spin after each
 * region, taking the cores NumPy's BLAS threads need between steps. Here:
 *   - the caller posts a job of chunks and claims chunks itself, like the workers; it returns
 *     as soon as every chunk is done, so a worker that has not started is never waited for
 *     (when it wakes, the job is gone and it goes back to sleep);
 *   - workers spin for a few microseconds after a job (steps that follow each other closely
 *     find them awake), then sleep on a condition variable: between training steps they take
 *     no CPU;
 *   - every chunk is computed in the caller's floating-point environment, and which thread
 *     computes a chunk never changes a bit (chunks are independent).
 * One job at a time: a second caller (another optimizer in another Python thread) that finds
 * the pool busy runs its chunks alone rather than wait.
 */
#if !defined(_WIN32) && !defined(__APPLE__) && !defined(_POSIX_C_SOURCE)
#define _POSIX_C_SOURCE 200809L /* clock_gettime, CLOCK_MONOTONIC under -std=c99 */
#endif
#include <stdint.h>
#include <stdlib.h>

#include "internal.h"

#if FASTOPT_THREADS

#if defined(_WIN32)
#include <windows.h>
typedef SRWLOCK fo_mutex;
typedef CONDITION_VARIABLE fo_cond;
static void fo_mutex_init(fo_mutex *m) { InitializeSRWLock(m); }
static void fo_lock(fo_mutex *m) { AcquireSRWLockExclusive(m); }
static void fo_unlock(fo_mutex *m) { ReleaseSRWLockExclusive(m); }
static void fo_cond_init(fo_cond *c) { InitializeConditionVariable(c); }
static void fo_cond_wait(fo_cond *c, fo_mutex *m) { SleepConditionVariableSRW(c, m, INFINITE, 0); }
static void fo_cond_broadcast(fo_cond *c) { WakeAllConditionVariable(c); }
static void fo_yield(void) { SwitchToThread(); }
static DWORD WINAPI fo_worker_main(LPVOID argument);
static int fo_start_thread(intptr_t index)
{
    HANDLE thread = CreateThread(NULL, 256 * 1024, fo_worker_main, (LPVOID)index, 0, NULL);
    if (thread == NULL)
        return -1;
    CloseHandle(thread);
    return 0;
}
#define fo_load(p) InterlockedCompareExchange64((volatile LONG64 *)(p), 0, 0)
#define fo_store(p, v) InterlockedExchange64((volatile LONG64 *)(p), (v))
#define fo_add(p, v) InterlockedExchangeAdd64((volatile LONG64 *)(p), (v))
#define fo_cas(p, expected, desired)                                                            \
    (InterlockedCompareExchange64((volatile LONG64 *)(p), (desired), (expected)) == (expected))
#define fo_pause() YieldProcessor()
#else
#include <pthread.h>
#include <sched.h>
#include <time.h>
typedef pthread_mutex_t fo_mutex;
typedef pthread_cond_t fo_cond;
static void fo_mutex_init(fo_mutex *m) { pthread_mutex_init(m, NULL); }
static void fo_lock(fo_mutex *m) { pthread_mutex_lock(m); }
static void fo_unlock(fo_mutex *m) { pthread_mutex_unlock(m); }
static void fo_cond_init(fo_cond *c) { pthread_cond_init(c, NULL); }
static void fo_cond_wait(fo_cond *c, fo_mutex *m) { pthread_cond_wait(c, m); }
static void fo_cond_broadcast(fo_cond *c) { pthread_cond_broadcast(c); }
static void fo_yield(void) { sched_yield(); }
static void *fo_worker_main(void *argument);
static int fo_start_thread(intptr_t index)
{
    pthread_attr_t attributes;
    pthread_t thread;
    if (pthread_attr_init(&attributes) != 0)
        return -1;
    pthread_attr_setdetachstate(&attributes, PTHREAD_CREATE_DETACHED);
    pthread_attr_setstacksize(&attributes, 256 * 1024);
    const int failed = pthread_create(&thread, &attributes, fo_worker_main, (void *)index);
    pthread_attr_destroy(&attributes);
    return failed ? -1 : 0;
}
#define fo_load(p) __atomic_load_n((p), __ATOMIC_SEQ_CST)
#define fo_store(p, v) __atomic_store_n((p), (v), __ATOMIC_SEQ_CST)
#define fo_add(p, v) __atomic_fetch_add((p), (v), __ATOMIC_SEQ_CST)
#define fo_cas(p, expected, desired)                                                            \
    __extension__({                                                                           \
        int64_t fo_expected_ = (expected);                                                    \
        __atomic_compare_exchange_n((p), &fo_expected_, (desired), 0, __ATOMIC_SEQ_CST,       \
                                    __ATOMIC_SEQ_CST);                                        \
    })
#if defined(__x86_64__) || defined(__i386__)
#define fo_pause() __builtin_ia32_pause()
#elif defined(__aarch64__)
#define fo_pause() __asm__ volatile("yield")
#else
#define fo_pause() ((void)0)
#endif
#endif

/* A job's chunks are claimed through one 64-bit word: generation (24 bits) | next chunk (20
 * bits) | number of chunks (20 bits). A worker that read an old job's word can only claim
 * with a compare-and-swap on that very word, which fails once a new job is posted: it never
 * runs a chunk of a job it did not see. (The generation wraps after 16M jobs; a worker would
 * have to stall between a load and its compare-and-swap for that long.) */
#define FO_CHUNK_BITS 20
#define FO_CHUNK_MASK (((int64_t)1 << FO_CHUNK_BITS) - 1)
#define FO_GENERATION_MASK (((int64_t)1 << 24) - 1)
#define FO_WORD(generation, next, count)                                                        \
    ((((int64_t)(generation) & FO_GENERATION_MASK) << (2 * FO_CHUNK_BITS))                    \
     | ((int64_t)(next) << FO_CHUNK_BITS) | (int64_t)(count))

/* A worker stays awake after a job for half as long as the job took, between 5 and 100 us:
 * the next step of a loop that steps several times in a row (or has little work between steps)
 * finds it awake, since waking a sleeping thread can take longer than a step; between training
 * steps with real work in between it sleeps, at a cost of at most half a step of CPU. The
 * caller waiting for chunks that workers are computing spins, then yields its core. */
#define FO_WORKER_AWAKE_MIN 5e-6
#define FO_WORKER_AWAKE_MAX 100e-6
#define FO_CALLER_SPINS 20000

static struct {
    fo_mutex lock;        /* guards sleeping, workers, posted and the wake-up */
    fo_cond wake;
    int initialised;
    int workers;          /* started so far */
    int sleeping;         /* workers waiting on wake */
    int64_t posted;       /* jobs posted (the generation), read by spinning workers */
    int64_t claim;        /* the current job's word (FO_WORD) */
    int64_t done;         /* chunks of the current job finished */
    int64_t busy;         /* 1 while a caller owns the pool */
    int helpers;          /* workers 0 .. helpers-1 may join the current job */
    double awake_seconds; /* how long workers stay awake after a job */
    fo_chunk_fn fn;       /* the current job */
    void *context;
    fo_fp_environment environment;
} pool;

#if !defined(_WIN32)
/* A forked child has none of the parent's threads: start afresh. */
static void fo_pool_after_fork(void)
{
    fo_mutex_init(&pool.lock);
    fo_cond_init(&pool.wake);
    pool.workers = pool.sleeping = 0;
    pool.busy = 0;
}
#endif

/* Run the chunks of the job of generation that this thread can still claim; 1 if it ran any. */
static int fo_claim_and_run(int64_t generation)
{
    int ran = 0;
    for (;;) {
        const int64_t word = fo_load(&pool.claim);
        const int64_t next = (word >> FO_CHUNK_BITS) & FO_CHUNK_MASK, count = word & FO_CHUNK_MASK;
        if ((word >> (2 * FO_CHUNK_BITS)) != (generation & FO_GENERATION_MASK) || next >= count)
            return ran;
        if (!fo_cas(&pool.claim, word, word + ((int64_t)1 << FO_CHUNK_BITS)))
            continue;
        pool.fn(pool.context, next); /* the job stays posted until its chunks are all done */
        fo_add(&pool.done, 1);
        ran = 1;
    }
}

static void fo_worker_loop(int index)
{
    fo_lock(&pool.lock);
    /* A new worker joins the job being posted as it starts (its word tells it whether any
     * chunk is left). */
    int64_t seen = pool.posted - 1;
    for (;;) {
        while (pool.posted == seen) {
            ++pool.sleeping;
            fo_cond_wait(&pool.wake, &pool.lock);
            --pool.sleeping;
        }
        seen = pool.posted;
        int invited = index < pool.helpers;
        fo_unlock(&pool.lock);
        for (;;) {
            if (invited) {
                fo_fp_environment own;
                fo_get_fp_environment(&own);
                fo_set_fp_environment(&pool.environment);
                fo_claim_and_run(seen);
                fo_set_fp_environment(&own);
            }
            /* Awake for a moment: a job posted meanwhile is taken without a wake-up. */
            const double until = fo_seconds() + pool.awake_seconds;
            for (int spins = 0; fo_load(&pool.posted) == seen; ++spins) {
                fo_pause();
                if (spins % 64 == 63 && fo_seconds() > until)
                    break;
            }
            if (fo_load(&pool.posted) == seen)
                break;
            fo_lock(&pool.lock);
            seen = pool.posted;
            invited = index < pool.helpers;
            fo_unlock(&pool.lock);
            if (!invited)
                break;
        }
        fo_lock(&pool.lock);
    }
}

#if defined(_WIN32)
static DWORD WINAPI fo_worker_main(LPVOID argument)
{
    fo_worker_loop((int)(intptr_t)argument);
    return 0;
}
#else
static void *fo_worker_main(void *argument)
{
    fo_worker_loop((int)(intptr_t)argument);
    return NULL;
}
#endif

/* One-time set-up; not thread-safe on its own: called with the GIL held (from Python's first
 * threaded step), which serialises the first calls. */
static void fo_pool_initialise(void)
{
    if (pool.initialised)
        return;
    fo_mutex_init(&pool.lock);
    fo_cond_init(&pool.wake);
#if !defined(_WIN32)
    pthread_atfork(NULL, NULL, fo_pool_after_fork);
#endif
    pool.initialised = 1;
}

int fo_pool_run(int helpers, int64_t n_chunks, fo_chunk_fn fn, void *context)
{
    if (helpers < 1 || n_chunks < 2 || n_chunks > FO_CHUNK_MASK || !pool.initialised
        || !fo_cas(&pool.busy, 0, 1)) {
        for (int64_t c = 0; c < n_chunks; ++c)
            fn(context, c);
        return 0;
    }
    fo_lock(&pool.lock);
    while (pool.workers < helpers && fo_start_thread(pool.workers) == 0)
        ++pool.workers;
    if (helpers > pool.workers)
        helpers = pool.workers;
    /* Close the old job's word first, so that no late worker claims from it once the job's
     * description below changes; then describe the job; then open it. */
    const int64_t generation = pool.posted + 1;
    fo_store(&pool.claim, FO_WORD(generation, 0, 0));
    pool.fn = fn;
    pool.context = context;
    fo_get_fp_environment(&pool.environment);
    pool.helpers = helpers;
    fo_store(&pool.done, 0);
    fo_store(&pool.claim, FO_WORD(generation, 0, n_chunks));
    fo_store(&pool.posted, generation);
    if (pool.sleeping > 0)
        fo_cond_broadcast(&pool.wake);
    fo_unlock(&pool.lock);

    const double start = fo_seconds();
    fo_claim_and_run(generation);
    /* Every chunk is claimed; wait for those that workers are still computing. */
    int spins = 0;
    while (fo_load(&pool.done) < n_chunks) {
        if (++spins < FO_CALLER_SPINS)
            fo_pause();
        else
            fo_yield();
    }
    double awake = 0.5 * (fo_seconds() - start);
    pool.awake_seconds = awake < FO_WORKER_AWAKE_MIN   ? FO_WORKER_AWAKE_MIN
                         : awake > FO_WORKER_AWAKE_MAX ? FO_WORKER_AWAKE_MAX
                                                       : awake;
    fo_store(&pool.busy, 0);
    return 1;
}

void fo_pool_prepare(void)
{
    fo_pool_initialise();
}

double fo_seconds(void)
{
#if defined(_WIN32)
    LARGE_INTEGER now, frequency;
    QueryPerformanceCounter(&now);
    QueryPerformanceFrequency(&frequency);
    return (double)now.QuadPart / (double)frequency.QuadPart;
#else
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (double)now.tv_sec + 1e-9 * (double)now.tv_nsec;
#endif
}

#else /* no threads in this build */

int fo_pool_run(int helpers, int64_t n_chunks, fo_chunk_fn fn, void *context)
{
    (void)helpers;
    for (int64_t c = 0; c < n_chunks; ++c)
        fn(context, c);
    return 0;
}

void fo_pool_prepare(void) {}

double fo_seconds(void)
{
    return 0.0;
}

#endif
