/* A multithreaded program that allocates until its stdin reaches end of file: the target of the SIGUSR2
 * snapshot storm (the test sends SIGUSR2 1000 times in a second, then closes stdin).
 *
 *   snapshot_target [THREADS]
 *
 * Workers allocate and free continuously and each keeps a few hundred blocks live (so every snapshot has
 * blocks to copy while they change). The main thread blocks in read(0). The program never touches SIGUSR2
 * itself. At EOF the workers stop and free everything; stdout: "ok". */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static atomic_int stop;

static void *worker(void *arg) {
    unsigned s = (unsigned)(long)arg * 2246822519u + 1;
    void *keep[256] = {0};
    while (!atomic_load(&stop)) {
        s = s * 1103515245u + 12345u;
        int k = (s >> 16) & 255;
        if (s & 0x100) {
            void *p = realloc(keep[k], 1 + (s >> 8) % 3000);
            if (p) keep[k] = p;
        } else {
            free(keep[k]);
            keep[k] = (s & 0x200) ? calloc(1, 1 + (s >> 8) % 300) : malloc(1 + (s >> 8) % 300);
        }
    }
    for (int k = 0; k < 256; k++) free(keep[k]);
    return NULL;
}

int main(int argc, char **argv) {
    int n = argc > 1 ? atoi(argv[1]) : 3;
    pthread_t th[32];
    if (n > 32) n = 32;
    for (long i = 0; i < n; i++) pthread_create(&th[i], NULL, worker, (void *)i);
    char buf[256];
    for (;;) {
        ssize_t r = read(0, buf, sizeof buf);
        if (r == 0) break;
        if (r < 0) {
            perror("read");
            break;
        }
    }
    atomic_store(&stop, 1);
    for (int i = 0; i < n; i++) pthread_join(th[i], NULL);
    printf("ok\n");
    return 0;
}
