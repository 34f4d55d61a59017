/* heapledger benchmark workload: malloc/free churn.
 *
 *   churn THREADS TOTAL_ITERATIONS
 *
 * TOTAL_ITERATIONS malloc/free pairs (random sizes 16..4096, fixed-seed xorshift) are split evenly over
 * THREADS threads. Each thread keeps a pool of SLOTS live blocks: every iteration picks a slot, frees the
 * block in it and puts a new one there. Allocations come from 3 distinct call sites, each reached through a
 * recursive chain of noinline functions whose depth varies between 8 and 12 frames, so every allocation has
 * a ~10..15-frame stack and there are a few dozen distinct stacks. Built with -fomit-frame-pointer, so a
 * tracer must unwind with DWARF CFI.
 *
 * Cross-thread frees: every XCHG_EVERY-th iteration a thread, instead of freeing the slot's old block, posts it
 * into its right neighbour's mailbox (one atomic exchange); each thread empties its own mailbox in the same
 * step and frees what it finds, i.e. a block allocated by its left neighbour. With 1 thread the same code runs
 * (the thread posts to itself), so the work per iteration is identical across thread counts.
 * At exit every block is freed: a leak checker has nothing to report.
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SLOTS 1000
#define XCHG_EVERY 8
#define MIN_SIZE 16
#define MAX_SIZE 4096

#define NOINLINE __attribute__((noinline, noclone))
/* An empty asm after the call keeps the call from being a tail call, so each frame stays on the stack. */
#define KEEP_FRAME(p) __asm__ volatile("" : "+r"(p) : : "memory")

struct mailbox {
    _Atomic(void *) slot;
    char pad[64 - sizeof(void *)];
};

static struct mailbox *mailboxes;
static int nthreads;
static long iters_per_thread;
static _Atomic long checksum;
/* One counter per call site: it also keeps the three sites' code distinct, so identical-code folding cannot
 * merge them into one function (they are built with -fno-ipa-icf as well). */
static __thread long site_calls[3];

static inline uint64_t xorshift64(uint64_t *s) {
    uint64_t x = *s;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    return *s = x;
}

NOINLINE static void *site_a(int depth, size_t size) {
    void *p;
    if (depth <= 0) {
        site_calls[0]++;
        p = malloc(size);
    } else {
        p = site_a(depth - 1, size);
    }
    KEEP_FRAME(p);
    return p;
}

NOINLINE static void *site_b(int depth, size_t size) {
    void *p;
    if (depth <= 0) {
        site_calls[1]++;
        p = malloc(size);
    } else {
        p = site_b(depth - 1, size);
    }
    KEEP_FRAME(p);
    return p;
}

NOINLINE static void *site_c(int depth, size_t size) {
    void *p;
    if (depth <= 0) {
        site_calls[2]++;
        p = malloc(size);
    } else {
        p = site_c(depth - 1, size);
    }
    KEEP_FRAME(p);
    return p;
}

NOINLINE static void *alloc_one(uint64_t r) {
    size_t size = MIN_SIZE + (size_t)(r % (MAX_SIZE - MIN_SIZE + 1));
    int depth = 8 + (int)((r >> 20) % 5);
    void *p;
    switch ((r >> 32) % 3) {
    case 0: p = site_a(depth, size); break;
    case 1: p = site_b(depth, size); break;
    default: p = site_c(depth, size); break;
    }
    if (!p) {
        fprintf(stderr, "churn: malloc(%zu) failed\n", size);
        exit(2);
    }
    ((volatile char *)p)[0] = (char)r; /* touch the block, as a real program would */
    KEEP_FRAME(p);
    return p;
}

static void *worker(void *arg) {
    int id = (int)(intptr_t)arg;
    void **pool = calloc(SLOTS, sizeof(void *));
    if (!pool) {
        fprintf(stderr, "churn: calloc failed\n");
        exit(2);
    }
    uint64_t s = 0x9E3779B97F4A7C15ull ^ ((uint64_t)(id + 1) * 0xD1B54A32D192ED03ull);
    struct mailbox *mine = &mailboxes[id];
    struct mailbox *next = &mailboxes[(id + 1) % nthreads];
    long sum = 0;
    for (long i = 0; i < iters_per_thread; i++) {
        uint64_t r = xorshift64(&s);
        size_t slot = (size_t)((r >> 40) % SLOTS);
        void *old = pool[slot];
        if (old && (i % XCHG_EVERY) == 0) {
            /* hand the old block to the neighbour; free whatever was left there unread */
            void *prev = atomic_exchange_explicit(&next->slot, old, memory_order_acq_rel);
            free(prev);
            /* take what the left neighbour posted for us */
            void *in = atomic_exchange_explicit(&mine->slot, NULL, memory_order_acq_rel);
            free(in);
        } else {
            free(old);
        }
        pool[slot] = alloc_one(r);
        sum += ((char *)pool[slot])[0];
    }
    for (size_t k = 0; k < SLOTS; k++) free(pool[k]);
    free(pool);
    atomic_fetch_add(&checksum, sum);
    return NULL;
}

int main(int argc, char **argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: %s THREADS TOTAL_ITERATIONS\n", argv[0]);
        return 1;
    }
    nthreads = atoi(argv[1]);
    long total = atol(argv[2]);
    if (nthreads < 1 || nthreads > 256 || total < 1) {
        fprintf(stderr, "churn: bad arguments\n");
        return 1;
    }
    iters_per_thread = total / nthreads;
    mailboxes = aligned_alloc(64, sizeof(struct mailbox) * (size_t)nthreads);
    memset(mailboxes, 0, sizeof(struct mailbox) * (size_t)nthreads);
    if (nthreads == 1) {
        worker((void *)0);
    } else {
        pthread_t *t = malloc(sizeof(pthread_t) * (size_t)nthreads);
        for (int i = 0; i < nthreads; i++) {
            if (pthread_create(&t[i], NULL, worker, (void *)(intptr_t)i) != 0) {
                fprintf(stderr, "churn: pthread_create failed\n");
                return 2;
            }
        }
        for (int i = 0; i < nthreads; i++) pthread_join(t[i], NULL);
        free(t);
    }
    for (int i = 0; i < nthreads; i++) free(atomic_load(&mailboxes[i].slot));
    free(mailboxes);
    printf("churn: threads=%d iterations=%ld checksum=%ld\n", nthreads, iters_per_thread * nthreads,
           (long)atomic_load(&checksum));
    return 0;
}
