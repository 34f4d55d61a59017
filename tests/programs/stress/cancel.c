/* pthread_cancel inside an allocation-heavy loop.
 *
 *   cancel ROUNDS [THREADS]
 *
 * Each round starts THREADS workers that allocate in a tight loop (malloc, realloc, calloc, C++-free C code)
 * with a cancellation point (pthread_testcancel, plus a write(2) to /dev/null now and then) after each
 * allocation; the main thread cancels them at once and joins them. Cleanup handlers free the worker's blocks,
 * so nothing the workers allocated is live at the end. The first cancellation makes glibc dlopen libgcc_s for
 * the forced unwind: that happens inside the traced process, from a cancelled thread.
 *
 * Sizes 700..763 are used only by the workers: the test checks that no such block is live at exit.
 * stdout: "cancelled=N" (every worker reported PTHREAD_CANCELED) and "ok". */
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define KEEP 64

struct held {
    void *blocks[KEEP];
};

static atomic_int running;
static int devnull;

static void cleanup(void *arg) {
    struct held *h = arg;
    for (int i = 0; i < KEEP; i++) free(h->blocks[i]);
    free(h);
}

static void *worker(void *arg) {
    unsigned s = (unsigned)(long)arg + 7;
    struct held *h = calloc(1, sizeof *h);
    pthread_cleanup_push(cleanup, h);
    atomic_fetch_add(&running, 1);
    for (unsigned long i = 0;; i++) {
        s = s * 1103515245u + 12345u;
        int k = (s >> 16) % KEEP;
        size_t n = 700 + (s >> 8) % 64;
        if (h->blocks[k]) {
            void *p = realloc(h->blocks[k], n);
            if (p) h->blocks[k] = p;
        } else {
            h->blocks[k] = (s & 1) ? malloc(n) : calloc(1, n);
        }
        if ((i & 1023) == 0) {
            if (write(devnull, "x", 1) < 0) break;
        }
        pthread_testcancel();
    }
    pthread_cleanup_pop(1);
    return NULL;
}

int main(int argc, char **argv) {
    int rounds = argc > 1 ? atoi(argv[1]) : 200;
    int threads = argc > 2 ? atoi(argv[2]) : 8;
    if (threads > 64) threads = 64;
    devnull = open("/dev/null", O_WRONLY | O_CLOEXEC);
    long cancelled = 0;
    for (int r = 0; r < rounds; r++) {
        pthread_t th[64];
        atomic_store(&running, 0);
        for (long i = 0; i < threads; i++) pthread_create(&th[i], NULL, worker, (void *)(r * 64 + i));
        /* Cancel some while they are still starting, the rest once they are in the loop. */
        if (r & 1)
            while (atomic_load(&running) < threads) sched_yield();
        for (int i = 0; i < threads; i++) pthread_cancel(th[i]);
        for (int i = 0; i < threads; i++) {
            void *ret;
            pthread_join(th[i], &ret);
            if (ret == PTHREAD_CANCELED) cancelled++;
        }
    }
    close(devnull);
    printf("cancelled=%ld\nok\n", cancelled);
    return 0;
}
