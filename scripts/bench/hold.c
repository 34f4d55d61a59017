/* Memory benchmark for scripts/bench-memory.sh: holds N live blocks (default 1M) of 16..64 bytes to exit.
 *
 *   hold [N]
 *
 * The blocks stay reachable from a heap array (itself one more live block), as a cache or an index would keep
 * them, so the exit-time leak classification must scan them all. The last thing main does is print the
 * CLOCK_REALTIME in ns: what follows (exit handlers, the tracer's exit dump) is the exit time.
 */
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

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
    struct timespec t;
    clock_gettime(CLOCK_REALTIME, &t);
    printf("%lld\n", (long long)t.tv_sec * 1000000000LL + t.tv_nsec);
    return 0;
}
