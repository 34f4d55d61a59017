/* 32 threads hammering malloc/calloc/realloc/aligned_alloc/free with cross-thread frees.
 *
 * Blocks travel between threads through 1024 shared slots: each operation allocates a block, swaps it into a
 * random slot (atomic exchange) and releases whatever it took out (free, or realloc then free), so most blocks
 * are freed by a thread that did not allocate them. The slots are filled before the threads start, so every
 * exchange returns a block and the number of allocator calls is fixed: the program prints the totals the tracer
 * must report (allocations, bytes), computed from each thread's own deterministic sequence of sizes.
 *
 *   hammer [OPS_PER_THREAD]   default 20000
 *   hammer baseline           starts and joins the 32 threads without any allocation of its own
 *
 * stdout: "allocations=N" and "bytes=N" (deterministic), then "ok". At exit every block is freed. */
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define THREADS 32
#define SLOTS 1024

static _Atomic(void *) slots[SLOTS];
static long ops_per_thread = 20000;
static int baseline;
static atomic_ulong total_allocs, total_bytes;
static pthread_barrier_t start;

static uint64_t next(uint64_t *s) {
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    return *s;
}

/* Sizes from 1 byte to 4 KiB, with a tail of larger ones (up to 256 KiB: mmap'd by glibc). */
static size_t pick_size(uint64_t r) {
    if ((r & 63) == 0) return 4096 + (size_t)((r >> 8) % (252 * 1024));
    return 1 + (size_t)((r >> 8) % 4096);
}

static void *worker(void *arg) {
    uint64_t s = 0x9E3779B97F4A7C15ull * ((uintptr_t)arg + 1);
    unsigned long allocs = 0, bytes = 0;
    pthread_barrier_wait(&start);
    if (baseline) return NULL;
    for (long i = 0; i < ops_per_thread; i++) {
        uint64_t r = next(&s);
        size_t n = pick_size(r);
        char *p;
        switch ((r >> 40) & 7) {
        case 0:
            p = calloc(1, n);
            break;
        case 1:
            p = aligned_alloc(64, (n + 63) & ~(size_t)63);
            n = (n + 63) & ~(size_t)63;
            break;
        default:
            p = malloc(n);
        }
        if (!p) abort();
        p[0] = (char)i;
        p[n - 1] = (char)i;
        allocs++;
        bytes += n;
        void *q = atomic_exchange(&slots[(r >> 20) % SLOTS], p);
        if ((r >> 50) & 1) {
            size_t m = pick_size(next(&s));
            char *q2 = realloc(q, m);
            if (!q2) abort();
            q2[m - 1] = 1;
            allocs++;
            bytes += m;
            free(q2);
        } else {
            free(q);
        }
    }
    atomic_fetch_add(&total_allocs, allocs);
    atomic_fetch_add(&total_bytes, bytes);
    return NULL;
}

int main(int argc, char **argv) {
    if (argc > 1 && strcmp(argv[1], "baseline") == 0)
        baseline = 1;
    else if (argc > 1)
        ops_per_thread = atol(argv[1]);
    if (!baseline) {
        for (int i = 0; i < SLOTS; i++) {
            slots[i] = malloc(100 + i);
            total_allocs++;
            total_bytes += 100 + i;
        }
    }
    pthread_barrier_init(&start, NULL, THREADS);
    pthread_t th[THREADS];
    for (long i = 0; i < THREADS; i++) pthread_create(&th[i], NULL, worker, (void *)i);
    for (int i = 0; i < THREADS; i++) pthread_join(th[i], NULL);
    pthread_barrier_destroy(&start);
    for (int i = 0; i < SLOTS; i++) free(slots[i]);
    printf("allocations=%lu\nbytes=%lu\nok\n", (unsigned long)total_allocs, (unsigned long)total_bytes);
    return 0;
}
