/* The process ends while other threads are still allocating: the final dump is written under their feet.
 *
 *   exit_race MODE [THREADS]
 *     exit           main calls exit(0) after the workers have run a while
 *     _exit          main calls _exit(0) (the dump is written from the _exit hook)
 *     return         main returns 0
 *     pthread_exit   main calls pthread_exit; the process ends when a worker calls exit(0)
 *     worker_exit    a worker calls exit(0) while the others (and main, blocked in join) are alive
 *
 * Workers loop forever: malloc/realloc/free of varied sizes, C strings, a linked list that grows and shrinks.
 * stdout: "ending MODE" (written and flushed before the end, so it survives _exit). */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

struct node {
    struct node *next;
    char *name;
};

static atomic_long progress;
static const char *mode;

static void *worker(void *arg) {
    unsigned s = (unsigned)(long)arg * 2654435761u + 1;
    struct node *list = NULL;
    long len = 0;
    for (;;) {
        s = s * 1103515245u + 12345u;
        if (len < 200 && (s >> 16) % 3 != 0) {
            struct node *n = malloc(sizeof *n);
            n->name = strdup("a node name of some length");
            n->name = realloc(n->name, 40 + (s >> 20) % 400);
            n->next = list;
            list = n;
            len++;
        } else if (list) {
            struct node *n = list;
            list = n->next;
            free(n->name);
            free(n);
            len--;
        }
        void *t = malloc(1 + (s >> 8) % 70000);
        free(t);
        atomic_fetch_add(&progress, 1);
        if (strcmp(mode, "worker_exit") == 0 && arg == (void *)1 && atomic_load(&progress) > 40000) {
            printf("ending %s\n", mode);
            fflush(stdout);
            exit(0);
        }
    }
    return NULL;
}

int main(int argc, char **argv) {
    mode = argc > 1 ? argv[1] : "exit";
    int n = argc > 2 ? atoi(argv[2]) : 8;
    pthread_t th[64];
    for (long i = 0; i < n && i < 64; i++) pthread_create(&th[i], NULL, worker, (void *)(i + 1));
    /* Let the workers get going (progress, not time: the traced run is slower). */
    while (atomic_load(&progress) < 20000) {
        struct timespec ts = {0, 1000000};
        nanosleep(&ts, NULL);
    }
    if (strcmp(mode, "worker_exit") == 0) {
        pthread_join(th[0], NULL); /* never returns: a worker ends the process */
        return 1;
    }
    printf("ending %s\n", mode);
    fflush(stdout);
    if (strcmp(mode, "exit") == 0) exit(0);
    if (strcmp(mode, "_exit") == 0) _exit(0);
    if (strcmp(mode, "pthread_exit") == 0) {
        /* The last thread to call pthread_exit ends the process; the workers never do, so ask one to exit. */
        mode = "worker_exit";
        atomic_store(&progress, 0);
        pthread_exit(NULL);
    }
    return 0;
}
