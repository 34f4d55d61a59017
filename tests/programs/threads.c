/* 8 threads allocate; after a barrier each frees the blocks its neighbour allocated (cross-thread frees) and leaks
 * LEAKS blocks of its own. argv[1] = "baseline" creates and joins the same threads without any allocation of its
 * own, so the test can subtract what glibc itself allocates for threads and get exact figures.
 * Sizes are distinct per thread so the test can attribute every live block. */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define THREADS 8
#define PER_THREAD 500 /* blocks allocated by each thread and freed by its neighbour */
#define LEAKS 3        /* blocks each thread leaks */

static int baseline;
static pthread_barrier_t barrier;
static char *blocks[THREADS][PER_THREAD];
static void *volatile sink;

static void *worker(void *arg) {
    int me = (int)(long)arg;
    if (!baseline) {
        for (int i = 0; i < PER_THREAD; i++) {
            blocks[me][i] = malloc((size_t)(16 + me)); /* 16..23 bytes */
            memset(blocks[me][i], me, (size_t)(16 + me));
        }
    }
    pthread_barrier_wait(&barrier);
    if (!baseline) {
        int other = (me + 1) % THREADS;
        for (int i = 0; i < PER_THREAD; i++)
            free(blocks[other][i]);
        for (int i = 0; i < LEAKS; i++)
            sink = malloc((size_t)(1000 + me)); /* leaked: 1000..1007 bytes */
    }
    return NULL;
}

int main(int argc, char **argv) {
    baseline = argc > 1 && strcmp(argv[1], "baseline") == 0;
    pthread_t t[THREADS];
    pthread_barrier_init(&barrier, NULL, THREADS);
    for (long i = 0; i < THREADS; i++)
        if (pthread_create(&t[i], NULL, worker, (void *)i) != 0)
            return 3;
    for (int i = 0; i < THREADS; i++)
        pthread_join(t[i], NULL);
    pthread_barrier_destroy(&barrier);
    return 0;
}
