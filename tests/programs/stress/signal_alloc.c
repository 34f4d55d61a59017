/* A signal handler that allocates and frees (wrong — malloc is not async-signal-safe — but programs do it)
 * while the main thread is inside malloc/free/realloc.
 *
 * A timer fires every 40 µs. Its handler replaces a global 32-byte buffer (free + malloc) and makes one more
 * malloc/free pair of 48 bytes. Those sizes are served by glibc's per-thread cache, which needs no lock, and the
 * main loop only uses sizes above the cache's range (>= 2000 bytes), so the native run cannot deadlock on the
 * arena lock: whatever goes wrong under the tracer is the tracer's.
 *
 * Modes:
 *   (none)   the main loop runs ROUNDS rounds, then stops the timer, frees everything and prints "ok".
 *   leak     as above, but the handler also leaks one 24-byte block per 64 runs (at most 6: the cache holds 7
 *            blocks of that size, prefilled by main, so the native handler never needs the arena), and the global
 *            buffer is left live at exit: the dump must show exactly the leaked blocks as live.
 *
 * stdout is deterministic (it must equal the native run's); the handler's run count goes to stderr. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>

#define ROUNDS 300000

static char *volatile g_buf;
static volatile sig_atomic_t g_runs;
static volatile sig_atomic_t g_leak_mode;
static void *volatile g_leaks[6];
static volatile sig_atomic_t g_nleaks;

static void on_alarm(int sig) {
    (void)sig;
    free(g_buf);
    g_buf = malloc(32);
    if (g_buf) memset(g_buf, 0x5a, 32);
    void *t = malloc(48);
    if (t) memset(t, 1, 48);
    free(t);
    if (g_leak_mode && (g_runs % 64) == 0 && g_nleaks < 6) {
        /* Recorded in a global so the program can count them; never freed. */
        g_leaks[g_nleaks] = malloc(24);
        g_nleaks++;
    }
    g_runs++;
}

int main(int argc, char **argv) {
    g_leak_mode = argc > 1 && strcmp(argv[1], "leak") == 0;
    /* Warm the 32- and 48-byte caches so the handler never needs the arena. */
    free(malloc(32));
    free(malloc(48));
    void *prefill[7];
    for (int i = 0; i < 7; i++) prefill[i] = malloc(24);
    for (int i = 0; i < 7; i++) free(prefill[i]);
    g_buf = malloc(32);

    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_alarm;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = SA_RESTART;
    sigaction(SIGALRM, &sa, NULL);
    struct itimerval it = {{0, 40}, {0, 40}};
    setitimer(ITIMER_REAL, &it, NULL);

    unsigned long sum = 0;
    void *keep[16] = {0};
    for (int i = 0; i < ROUNDS; i++) {
        size_t n = 2000 + (size_t)(i % 997);
        char *p = malloc(n);
        p[0] = (char)i;
        p[n - 1] = 1;
        sum += (unsigned char)p[0] + (unsigned char)p[n - 1];
        int k = i & 15;
        if (keep[k]) {
            char *q = realloc(keep[k], n + 100);
            q[n + 99] = 2;
            sum += (unsigned char)q[n + 99];
            keep[k] = q;
            free(p);
        } else {
            keep[k] = p;
        }
        if ((i & 255) == 255) {
            for (int j = 0; j < 16; j++) {
                free(keep[j]);
                keep[j] = NULL;
            }
        }
    }
    struct itimerval off = {{0, 0}, {0, 0}};
    setitimer(ITIMER_REAL, &off, NULL);
    signal(SIGALRM, SIG_IGN);
    for (int j = 0; j < 16; j++) free(keep[j]);
    if (!g_leak_mode) {
        free(g_buf);
        g_buf = NULL;
    }
    printf("ok sum=%lu\n", sum);
    fprintf(stderr, "handler_runs=%d leaks=%d\n", (int)g_runs, (int)g_nleaks);
    return 0;
}
