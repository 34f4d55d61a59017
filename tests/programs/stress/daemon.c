/* Daemonize the classic way: fork, setsid, fork again, chdir("/"), umask(0), close every file descriptor,
 * reopen 0/1/2 on /dev/null, then work.
 *
 *   daemon RESULT_PATH
 *
 * The original process waits for the intermediate one, prints "started" and exits 0. The daemon allocates for a
 * while (with a thread), then writes "pid=<pid>\nsum=<checksum>\n" to RESULT_PATH.tmp and renames it to
 * RESULT_PATH (so a reader never sees half of it), and exits 0. Closing every descriptor must not break the
 * tracer (it owns none), and a relative HEAPLEDGER_OUT still points where it did before chdir("/"). */
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static unsigned long work(unsigned seed, int rounds) {
    unsigned long sum = 0;
    char *keep[64] = {0};
    for (int i = 0; i < rounds; i++) {
        seed = seed * 1103515245u + 12345u;
        int k = (seed >> 16) & 63;
        free(keep[k]);
        size_t n = 1 + (seed >> 4) % 2000;
        keep[k] = malloc(n);
        memset(keep[k], (int)(seed & 0xff), n);
        sum += (unsigned char)keep[k][n / 2];
    }
    for (int k = 0; k < 64; k++) free(keep[k]);
    return sum;
}

static void *thread_work(void *arg) {
    unsigned long *out = arg;
    *out = work(99, 200000);
    return NULL;
}

int main(int argc, char **argv) {
    if (argc < 2) return 2;
    const char *result = argv[1];
    char *keep_across = malloc(777); /* allocated before the forks: each process frees its own copy */
    pid_t p = fork();
    if (p < 0) return 1;
    if (p > 0) {
        int st;
        waitpid(p, &st, 0);
        free(keep_across);
        printf("started\n");
        return WIFEXITED(st) ? WEXITSTATUS(st) : 1;
    }
    if (setsid() < 0) _exit(3);
    p = fork();
    if (p < 0) _exit(4);
    if (p > 0) _exit(0); /* the intermediate process */

    /* The daemon. */
    if (chdir("/") != 0) _exit(5);
    umask(0);
    struct rlimit rl;
    long maxfd = getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY ? (long)rl.rlim_cur : 1024;
    if (maxfd > 65536) maxfd = 65536;
    for (long fd = 0; fd < maxfd; fd++) close((int)fd);
    int fd0 = open("/dev/null", O_RDWR);
    if (fd0 != 0) _exit(6);
    if (dup(0) != 1 || dup(0) != 2) _exit(7);

    /* Files opened now take low descriptor numbers that the tracer must not be writing to. */
    char tmp[4096];
    snprintf(tmp, sizeof tmp, "%s.tmp", result);
    int out = open(tmp, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (out < 0) _exit(8);

    pthread_t th;
    unsigned long tsum = 0;
    pthread_create(&th, NULL, thread_work, &tsum);
    unsigned long sum = work(7, 300000);
    /* Give periodic snapshots (HEAPLEDGER_INTERVAL in the traced run) time to happen after the fds were closed. */
    struct timespec ts = {0, 150 * 1000 * 1000};
    nanosleep(&ts, NULL);
    pthread_join(th, NULL);
    free(keep_across);
    char buf[128];
    int len = snprintf(buf, sizeof buf, "pid=%d\nsum=%lu\n", (int)getpid(), sum + tsum);
    if (write(out, buf, (size_t)len) != len) _exit(9);
    close(out);
    if (rename(tmp, result) != 0) _exit(10);
    return 0;
}
