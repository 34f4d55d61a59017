/* A fork storm from a multithreaded program.
 *
 *   fork_storm CHILDREN [THREADS]
 *
 * THREADS workers allocate and free continuously (glibc arenas, the tracer's shards and its private heap are
 * busy in other threads at every fork). The main thread forks CHILDREN children one after another, keeping up
 * to 8 alive at once. Child i allocates a block of exactly 100000 + i bytes and leaves it live (its dump must
 * contain it, and no other child's), allocates and frees a few more, and ends with exit(0) (even i) or
 * _exit(0) (odd i). One child in 10 forks a grandchild of its own, which leaks 200000 + i bytes and _exits.
 *
 * stdout: "children=N" "grandchildren=M" "ok" (deterministic). Every child's exit status is checked. */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static atomic_int stop;

static void *worker(void *arg) {
    unsigned s = (unsigned)(long)arg * 7919u + 3;
    void *keep[32] = {0};
    while (!atomic_load(&stop)) {
        s = s * 1103515245u + 12345u;
        int k = (s >> 16) & 31;
        free(keep[k]);
        keep[k] = malloc(8 + (s >> 4) % 3000);
        char *t = realloc(NULL, 100);
        t = realloc(t, 1000);
        free(t);
    }
    for (int k = 0; k < 32; k++) free(keep[k]);
    return NULL;
}

static void child(int i) {
    char *mine = malloc(100000 + (size_t)i);
    memset(mine, i, 100000 + (size_t)i);
    for (int k = 0; k < 50; k++) free(malloc(16 + (size_t)k * 8));
    if (i % 10 == 3) {
        pid_t g = fork();
        if (g == 0) {
            char *gm = malloc(200000 + (size_t)i);
            gm[0] = 1;
            _exit(0);
        }
        int st;
        if (g < 0 || waitpid(g, &st, 0) != g || !WIFEXITED(st) || WEXITSTATUS(st) != 0) _exit(2);
    }
    if (i % 2 == 0) exit(0);
    _exit(0);
}

int main(int argc, char **argv) {
    int n = argc > 1 ? atoi(argv[1]) : 200;
    int threads = argc > 2 ? atoi(argv[2]) : 4;
    pthread_t th[16];
    if (threads > 16) threads = 16;
    for (long t = 0; t < threads; t++) pthread_create(&th[t], NULL, worker, (void *)t);
    int alive = 0, failed = 0, grand = 0;
    for (int i = 0; i < n; i++) {
        if (alive == 8) {
            int st;
            if (wait(&st) < 0 || !WIFEXITED(st) || WEXITSTATUS(st) != 0) failed++;
            alive--;
        }
        pid_t p = fork();
        if (p == 0) child(i);
        if (p < 0) {
            printf("fork failed\n");
            return 1;
        }
        alive++;
        if (i % 10 == 3) grand++;
    }
    while (alive > 0) {
        int st;
        if (wait(&st) < 0 || !WIFEXITED(st) || WEXITSTATUS(st) != 0) failed++;
        alive--;
    }
    atomic_store(&stop, 1);
    for (int t = 0; t < threads; t++) pthread_join(th[t], NULL);
    printf("children=%d\ngrandchildren=%d\nfailed=%d\nok\n", n, grand, failed);
    return failed != 0;
}
