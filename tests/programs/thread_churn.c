/* 60 threads, one after another (each joined before the next starts, so each reuses the stack glibc cached and the
 * tracer's per-thread walk memory of the one before). Thread i runs one of three call paths (i % 3), churns
 * through 200 malloc/free pairs on it, and leaks one block of 100 + i % 3 bytes from it. */
#include <pthread.h>
#include <stdlib.h>

#define THREADS 60

static void *volatile sink;

__attribute__((noinline)) static void *path_a(size_t n) { return malloc(n); /* PATH_A_LINE */ }
__attribute__((noinline)) static void *path_b(size_t n) { return malloc(n); /* PATH_B_LINE */ }
__attribute__((noinline)) static void *path_c(size_t n) { return malloc(n); /* PATH_C_LINE */ }

static void *worker(void *arg) {
    int which = (int)(long)arg % 3;
    void *(*path)(size_t) = which == 0 ? path_a : which == 1 ? path_b : path_c;
    for (int i = 0; i < 200; i++) {
        sink = path(32);
        free(sink);
    }
    sink = path(100 + (size_t)which); /* WORKER_LEAK_LINE */
    return NULL;
}

int main(void) {
    for (long i = 0; i < THREADS; i++) {
        pthread_t t;
        if (pthread_create(&t, NULL, worker, (void *)i) != 0)
            return 3;
        pthread_join(t, NULL);
    }
    return 0;
}
