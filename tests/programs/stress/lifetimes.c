/* Threads created and joined in a loop: per-thread tracer state must neither leak nor crash at thread exit.
 *
 *   lifetimes TOTAL BATCH    TOTAL thread lifetimes, BATCH threads alive at a time (joinable); every 16th
 *                            batch also starts one detached thread. Each thread mallocs, reallocs and frees a
 *                            few blocks, one of them freed by the main thread after the join (a block whose
 *                            allocating thread is gone).
 *
 * stdout: "threads=N" (joined + detached, deterministic) and "ok". Nothing is left allocated by the threads. */
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static atomic_int detached_live;

static void *worker(void *arg) {
    long i = (long)arg;
    char *a = malloc(16 + (size_t)(i % 200));
    char *b = calloc(4, 8);
    a[0] = 1;
    b = realloc(b, 64 + (size_t)(i % 50));
    b[0] = 2;
    free(a);
    return b; /* freed by whoever joins */
}

static void *detached(void *arg) {
    free(worker(arg));
    atomic_fetch_sub(&detached_live, 1);
    return NULL;
}

int main(int argc, char **argv) {
    long total = argc > 1 ? atol(argv[1]) : 100000;
    int batch = argc > 2 ? atoi(argv[2]) : 8;
    if (batch < 1 || batch > 256) batch = 8;
    pthread_t th[256];
    long started = 0, rounds = 0, detached_started = 0;
    pthread_attr_t det;
    pthread_attr_init(&det);
    pthread_attr_setdetachstate(&det, PTHREAD_CREATE_DETACHED);
    while (started < total) {
        int n = 0;
        for (; n < batch && started < total; n++, started++) {
            if (pthread_create(&th[n], NULL, worker, (void *)started) != 0) {
                printf("pthread_create failed at %ld\n", started);
                return 1;
            }
        }
        if ((rounds++ & 15) == 0 && started < total) {
            pthread_t d;
            atomic_fetch_add(&detached_live, 1);
            if (pthread_create(&d, &det, detached, (void *)started) != 0) {
                printf("pthread_create (detached) failed at %ld\n", started);
                return 1;
            }
            started++;
            detached_started++;
        }
        for (int k = 0; k < n; k++) {
            void *r;
            pthread_join(th[k], &r);
            free(r);
        }
    }
    while (atomic_load(&detached_live) > 0) sched_yield();
    pthread_attr_destroy(&det);
    printf("threads=%ld\nok\n", started);
    (void)detached_started;
    return 0;
}
