/* A timer signal interrupting (nearly) every call: SIGALRM every 50 µs, installed WITHOUT SA_RESTART, so
 * blocking system calls fail with EINTR and the handler runs inside malloc/free (and so inside the tracer's
 * hooks) over and over. The handler is a well-behaved one: async-signal-safe work, errno saved and restored.
 *
 *   alarm_eintr [ROUNDS]
 *
 * A helper thread (SIGALRM blocked) trickles data into a pipe; the main thread reads it back with an EINTR
 * retry loop, sleeps with nanosleep (cut short by EINTR, not resumed: with a timer this fast a resumed sleep can
 * livelock on a loaded machine), and allocates between calls, checking that free()
 * preserves errno (glibc guarantees it since 2.33; the tracer must too, even when interrupted).
 * The timer is still running when main returns: the exit dump is written while it fires.
 *
 * stdout (deterministic): "bytes=N" "errno_kept=1" "ok". */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

static volatile sig_atomic_t ticks;
static int fds[2];
static int rounds = 2000;

static void on_alarm(int sig) {
    (void)sig;
    int e = errno;
    (void)getppid();
    errno = EBADF; /* clobber, then restore: a careful handler */
    ticks++;
    errno = e;
}

static void *writer(void *arg) {
    (void)arg;
    sigset_t s;
    sigemptyset(&s);
    sigaddset(&s, SIGALRM);
    pthread_sigmask(SIG_BLOCK, &s, NULL);
    char chunk[100];
    memset(chunk, 'x', sizeof chunk);
    for (int i = 0; i < rounds; i++) {
        size_t n = 1 + (size_t)(i % 100);
        const char *p = chunk;
        while (n > 0) {
            ssize_t w = write(fds[1], p, n);
            if (w < 0 && errno == EINTR) continue;
            if (w < 0) return NULL;
            p += w;
            n -= (size_t)w;
        }
        if (i % 50 == 0) {
            struct timespec ts = {0, 200000};
            nanosleep(&ts, NULL);
        }
    }
    close(fds[1]);
    return NULL;
}

int main(int argc, char **argv) {
    if (argc > 1) rounds = atoi(argv[1]);
    if (pipe(fds) != 0) return 2;
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_alarm;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = 0; /* no SA_RESTART: EINTR everywhere */
    sigaction(SIGALRM, &sa, NULL);
    pthread_t th;
    pthread_create(&th, NULL, writer, NULL);
    struct itimerval it = {{0, 50}, {0, 50}};
    setitimer(ITIMER_REAL, &it, NULL);

    long total = 0;
    int errno_kept = 1;
    char *keep[32] = {0};
    char buf[512];
    for (unsigned i = 0;; i++) {
        ssize_t r = read(fds[0], buf, sizeof buf);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) break;
        total += r;
        int k = i & 31;
        free(keep[k]);
        keep[k] = malloc((size_t)r * 8);
        memcpy(keep[k], buf, (size_t)r);
        char *t = calloc(1, (size_t)r + 4000);
        errno = 4242;
        free(t);
        if (errno != 4242) errno_kept = 0;
        if (i % 64 == 0) {
            struct timespec ts = {0, 100000};
            nanosleep(&ts, NULL);
        }
    }
    pthread_join(th, NULL);
    for (int k = 0; k < 32; k++) free(keep[k]);
    printf("bytes=%ld\nerrno_kept=%d\nok\n", total, errno_kept);
    fflush(stdout);
    /* Exit with the timer still firing. */
    return 0;
}
