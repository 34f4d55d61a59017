/* Leaves many blocks live so that dumps are big, leaking them gradually (for periodic snapshots to grow).
 *
 *   leaky COUNT [DELAY_US]   leaks COUNT blocks of 100..163 bytes, DELAY_US microseconds apart (default 0),
 *                            allocating and freeing other blocks in between. stdout: "leaked=COUNT" "ok". */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static void *volatile sink;

int main(int argc, char **argv) {
    long count = argc > 1 ? atol(argv[1]) : 3000;
    long delay = argc > 2 ? atol(argv[2]) : 0;
    void **keep = calloc((size_t)count, sizeof *keep);
    for (long i = 0; i < count; i++) {
        keep[i] = malloc(100 + (size_t)(i % 64));
        memset(keep[i], 1, 100);
        free(malloc(1000));
        if (delay > 0) {
            struct timespec ts = {0, delay * 1000};
            nanosleep(&ts, NULL);
        }
    }
    sink = keep;
    printf("leaked=%ld\nok\n", count);
    return 0;
}
