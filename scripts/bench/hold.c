/* Memory benchmark for scripts/bench-memory.sh: holds N live blocks (default 1M) of 16..64 bytes to exit.
 *
 *   hold [N [SNAPSHOT_PATH]]
 *
 * With SNAPSHOT_PATH, once the blocks are made it raises SIGUSR2 (run it with HEAPLEDGER_SIGNAL=USR2) and waits
 * until that file exists (dumps are renamed into place when complete), then prints "snapshot_ms=T" on stderr: the
 * time from the request to the finished file.
 *
 * The blocks stay reachable from a heap array (itself one more live block), as a cache or an index would keep
 * them, so the exit-time leak classification must scan them all. The last thing main does is print the
 * CLOCK_REALTIME in ns: what follows (exit handlers, the tracer's exit dump) is the exit time.
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

static long long now_ns(clockid_t c) {
    struct timespec t;
    clock_gettime(c, &t);
    return (long long)t.tv_sec * 1000000000LL + t.tv_nsec;
}

int main(int argc, char **argv) {
    long n = argc > 1 ? atol(argv[1]) : 1000000;
    void **keep = malloc(sizeof(void *) * (size_t)n);
    if (!keep) return 1;
    unsigned x = 12345;
    for (long i = 0; i < n; i++) {
        x = x * 1103515245u + 12345u;
        keep[i] = malloc(16 + (x >> 16) % 49);
        if (!keep[i]) return 1;
    }
    if (argc > 2) {
        long long t0 = now_ns(CLOCK_MONOTONIC);
        raise(SIGUSR2);
        while (access(argv[2], F_OK) != 0) {
            if (now_ns(CLOCK_MONOTONIC) - t0 > 60000000000LL) {
                fprintf(stderr, "hold: no snapshot at %s after 60 s\n", argv[2]);
                return 1;
            }
            usleep(1000);
        }
        fprintf(stderr, "snapshot_ms=%lld\n", (now_ns(CLOCK_MONOTONIC) - t0) / 1000000);
    }
    printf("%lld\n", now_ns(CLOCK_REALTIME));
    return 0;
}
