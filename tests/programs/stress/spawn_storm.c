/* vfork+exec, posix_spawn and system() in a loop while other threads allocate.
 *
 *   spawn_storm ROUNDS [THREADS]
 *
 * Each round: vfork + execl("/bin/true"), vfork + _exit(7) (a vfork child that never execs: it shares the
 * parent's memory and must not write a dump), posix_spawn("/bin/true"), posix_spawnp("sh -c 'exit 3'") and
 * system("exit 5"). Every exit status is checked. Meanwhile THREADS workers allocate and free.
 *
 * stdout: "rounds=N" "ok" (deterministic). */
#include <pthread.h>
#include <spawn.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

extern char **environ;
static atomic_int stop;

static void *worker(void *arg) {
    unsigned s = (unsigned)(long)arg * 31u + 5;
    void *keep[16] = {0};
    while (!atomic_load(&stop)) {
        s = s * 1103515245u + 12345u;
        int k = (s >> 16) & 15;
        free(keep[k]);
        keep[k] = malloc(1 + (s >> 4) % 5000);
    }
    for (int k = 0; k < 16; k++) free(keep[k]);
    return NULL;
}

static int status_of(pid_t p) {
    int st;
    if (p <= 0 || waitpid(p, &st, 0) != p) return -1;
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

int main(int argc, char **argv) {
    int rounds = argc > 1 ? atoi(argv[1]) : 20;
    int threads = argc > 2 ? atoi(argv[2]) : 2;
    pthread_t th[16];
    if (threads > 16) threads = 16;
    for (long t = 0; t < threads; t++) pthread_create(&th[t], NULL, worker, (void *)t);
    int bad = 0;
    char *held = malloc(4321); /* live across every vfork: the vfork children must not free or dump it */
    for (int r = 0; r < rounds; r++) {
        pid_t p = vfork();
        if (p == 0) {
            execl("/bin/true", "true", (char *)NULL);
            _exit(127);
        }
        if (status_of(p) != 0) bad++;

        p = vfork();
        if (p == 0) _exit(7);
        if (status_of(p) != 7) bad++;

        char *args1[] = {"true", NULL};
        if (posix_spawn(&p, "/bin/true", NULL, NULL, args1, environ) != 0 || status_of(p) != 0) bad++;

        char *args2[] = {"sh", "-c", "exit 3", NULL};
        if (posix_spawnp(&p, "sh", NULL, NULL, args2, environ) != 0 || status_of(p) != 3) bad++;

        int st = system("exit 5");
        if (!WIFEXITED(st) || WEXITSTATUS(st) != 5) bad++;
    }
    atomic_store(&stop, 1);
    for (int t = 0; t < threads; t++) pthread_join(th[t], NULL);
    held[0] = 1;
    free(held);
    printf("rounds=%d\nbad=%d\nok\n", rounds, bad);
    return bad != 0;
}
