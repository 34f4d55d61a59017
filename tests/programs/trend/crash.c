/* Allocates a known set of blocks, then dies of a signal: `crash segv` writes through a null pointer, `crash
 * abort` calls abort(). Live when it dies: 100 and 300 bytes from malloc and a 30-byte strdup (a 200-byte block
 * was freed). No stdio, so nothing else is on the heap. */
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static void *volatile keep[3];

__attribute__((noinline)) static void die(const char *how) {
    if (strcmp(how, "abort") == 0)
        abort(); /* ABORT_LINE */
    volatile int *null = NULL;
    *null = 1; /* SEGV_LINE */
}

int main(int argc, char **argv) {
    keep[0] = malloc(100);
    void *p = malloc(200);
    memset(p, 1, 200);
    free(p);
    keep[1] = malloc(300);
    keep[2] = strdup("txn-0000000000000000000000042"); /* STRDUP_LINE */ /* 29 characters, 30 bytes */
    write(1, "about to crash\n", 15);
    die(argc > 1 ? argv[1] : "segv");
    return 0;
}
