/* A request loop in the shape of issue #6's server, paced at RATE requests per second on CLOCK_MONOTONIC:
 *
 *   - every request strdup's a 30-byte transaction id that is never freed: the leak (TXID_LINE);
 *   - a cache of 100 entries of 256 bytes fills during the first 100 requests, then each request evicts one
 *     entry and inserts another: live bytes stay at 25600 (plateau);
 *   - a session table gets one 128-byte entry every 4 requests for the first SESSION_FILL requests, then
 *     replaces one entry every 4 requests: it rises for a while, then stays (plateau after a visible rise);
 *   - a pending queue of 48-byte entries random-walks between 0 and 64 entries (noise);
 *   - a scratch buffer is allocated and freed within each request (never live for long).
 *
 * usage: server REQUESTS RATE [SESSION_FILL]   (REQUESTS 0: run until killed)
 * Prints `start_ns=`, `end_ns=` (CLOCK_MONOTONIC), `requests=` and `txid_bytes=` on stdout at the end. */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define CACHE_SLOTS 100
#define SESSION_SLOTS 1000

static char *cache[CACHE_SLOTS];
static char *sessions[SESSION_SLOTS];
static unsigned long session_count;
struct pending {
    struct pending *next;
    char payload[40];
};
static struct pending *queue;
static unsigned queue_len;
static unsigned long rng = 12345;
static volatile unsigned long checksum;

static unsigned long now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (unsigned long)ts.tv_sec * 1000000000ul + (unsigned long)ts.tv_nsec;
}

__attribute__((noinline)) static char *make_txid(unsigned long n) {
    char buf[32];
    snprintf(buf, sizeof buf, "txn-%025lu", n); /* 29 characters: strdup allocates 30 bytes */
    return strdup(buf); /* TXID_LINE */
}

__attribute__((noinline)) static void log_txid(const char *id) {
    checksum += (unsigned char)id[28];
}

__attribute__((noinline)) static void cache_put(unsigned long n) {
    unsigned slot = n % CACHE_SLOTS;
    free(cache[slot]);
    cache[slot] = malloc(256); /* CACHE_LINE */
    memset(cache[slot], (int)n, 256);
}

__attribute__((noinline)) static void session_touch(unsigned long n, unsigned long fill) {
    if (n % 4 != 0)
        return;
    unsigned long slot;
    if (n < fill && session_count < SESSION_SLOTS) {
        slot = session_count++;
    } else if (session_count > 0) {
        slot = (n / 4) % session_count;
        free(sessions[slot]);
    } else {
        return;
    }
    sessions[slot] = malloc(128); /* SESSION_LINE */
    memset(sessions[slot], 1, 128);
}

__attribute__((noinline)) static void queue_step(void) {
    rng = rng * 6364136223846793005ul + 1442695040888963407ul;
    int push = (rng >> 33) & 1;
    if ((push && queue_len < 64) || queue_len == 0) {
        struct pending *p = malloc(sizeof *p); /* QUEUE_LINE */
        p->next = queue;
        queue = p;
        queue_len++;
    } else {
        struct pending *p = queue;
        queue = p->next;
        free(p);
        queue_len--;
    }
}

__attribute__((noinline)) static void handle_request(unsigned long n, unsigned long fill) {
    char *scratch = malloc(512);
    memset(scratch, 0, 512);
    char *id = make_txid(n); /* HANDLE_LINE */
    log_txid(id);
    /* the bug: `id` is never freed */
    cache_put(n);
    session_touch(n, fill);
    queue_step();
    free(scratch);
}

int main(int argc, char **argv) {
    unsigned long requests = argc > 1 ? strtoul(argv[1], NULL, 10) : 3000;
    unsigned long rate = argc > 2 ? strtoul(argv[2], NULL, 10) : 1000;
    unsigned long fill = argc > 3 ? strtoul(argv[3], NULL, 10) : 1000;
    if (rate == 0)
        rate = 1;
    unsigned long start = now_ns();
    unsigned long n;
    for (n = 0; requests == 0 || n < requests; n++) {
        unsigned long due = start + n * (1000000000ul / rate);
        struct timespec ts = {(time_t)(due / 1000000000ul), (long)(due % 1000000000ul)};
        while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) != 0) {
        }
        handle_request(n, fill); /* MAIN_LINE */
    }
    unsigned long end = now_ns();
    printf("start_ns=%lu\nend_ns=%lu\nrequests=%lu\ntxid_bytes=30\n", start, end, n);
    return 0;
}
