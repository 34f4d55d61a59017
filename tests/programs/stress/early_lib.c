/* A library whose constructor allocates before the tracer's own constructor has run (built with -shared -fPIC;
 * linked into early_main as a DT_NEEDED dependency, or preloaded after or before libheapledger.so).
 *
 * The constructor mallocs, callocs, reallocs, strdups, frees some of it, starts a thread that allocates while
 * the rest of start-up goes on (racing with the tracer's initialisation), and leaves:
 *   - one 4242-byte block live until exit (a leak the dump must show),
 *   - one 3131-byte block that main() frees later (a block allocated before our constructor, freed after it:
 *     it must be settled as a normal free, not reported as an invalid one).
 * early_report() is called by main to print what the constructor saw (deterministic). */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

void *early_leak;
void *early_for_main;
static int early_ok;
static pthread_t early_thread;
static int segv_default_at_start = -1;

/* The kernel's SIGSEGV disposition, read with the raw system call (the tracer interposes sigaction() and shows
 * the program its own view). The tracer's constructor installs a crash handler: SIG_DFL here means this
 * constructor ran before the tracer's. */
static int segv_is_default(void) {
    struct {
        void *handler;
        unsigned long flags;
        void *restorer;
        unsigned long mask;
    } k;
    if (syscall(SYS_rt_sigaction, 11, NULL, &k, 8) != 0) return -1;
    return k.handler == NULL;
}

static void *early_worker(void *arg) {
    (void)arg;
    void *keep[64];
    for (int round = 0; round < 200; round++) {
        for (int i = 0; i < 64; i++) keep[i] = malloc(16 + (size_t)i * 4);
        for (int i = 0; i < 64; i++) free(keep[i]);
    }
    return NULL;
}

__attribute__((constructor(101))) static void early_init(void) {
    segv_default_at_start = segv_is_default();
    char *a = malloc(100);
    char *b = calloc(10, 10);
    char *c = strdup("allocated by a constructor that ran early");
    a = realloc(a, 5000);
    if (!a || !b || !c) return;
    memset(a, 1, 5000);
    early_leak = malloc(4242);
    memset(early_leak, 2, 4242);
    early_for_main = malloc(3131);
    free(b);
    free(c);
    free(a);
    early_ok = pthread_create(&early_thread, NULL, early_worker, NULL) == 0;
}

int early_report(void) {
    if (early_ok) pthread_join(early_thread, NULL);
    printf("early constructor ran: leak=%d for_main=%d thread=%d\n", early_leak != NULL, early_for_main != NULL,
           early_ok);
    /* stderr: differs with the tracer by design (1 = this constructor ran before the tracer's). */
    fprintf(stderr, "early_before_tracer=%d\n", segv_default_at_start);
    return early_ok;
}
