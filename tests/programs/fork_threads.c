/* fork() while other threads are allocating: THREADS workers, each started for the round, allocate and free in a
 * loop while the main thread forks FORKS children (each child allocates, frees, leaks 44 bytes and calls _exit).
 * Several rounds, so that threads make their first allocation while a fork is in progress. At the end the main
 * thread frees a stack address: the tracer must still recognise it as an invalid free (it stops judging unknown
 * pointers once it has lost track of any block). Prints "children=<n>" and the pid of each child. */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#define THREADS 6
#define ROUNDS 4
#define FORKS 5
#define OPS 3000

static atomic_int go;
static void *volatile launder_slot;

static void *worker(void *arg) {
    (void)arg;
    while (!atomic_load(&go))
        ;
    for (int i = 0; i < OPS; i++) {
        void *p = malloc((size_t)(8 + i % 200));
        free(p);
    }
    return NULL;
}

static void say(const char *key, long v) {
    char buf[64];
    int n = snprintf(buf, sizeof buf, "%s=%ld\n", key, v);
    write(1, buf, (size_t)n);
}

int main(void) {
    int children = 0;
    for (int r = 0; r < ROUNDS; r++) {
        pthread_t t[THREADS];
        atomic_store(&go, 0);
        for (int i = 0; i < THREADS; i++)
            if (pthread_create(&t[i], NULL, worker, NULL) != 0)
                return 3;
        atomic_store(&go, 1);
        for (int f = 0; f < FORKS; f++) {
            pid_t pid = fork();
            if (pid < 0)
                return 4;
            if (pid == 0) {
                free(malloc(33));
                launder_slot = malloc(44);
                _exit(0);
            }
            int status = 0;
            if (waitpid(pid, &status, 0) != pid || !WIFEXITED(status) || WEXITSTATUS(status) != 0)
                return 5;
            say("child", pid);
            children++;
        }
        for (int i = 0; i < THREADS; i++)
            pthread_join(t[i], NULL);
    }
    say("children", children);
    char on_stack[8];
    launder_slot = on_stack;
    free(launder_slot); /* INVALID_FREE_LINE */
    return 0;
}
