/* Linked with -ljemalloc: malloc and friends resolve to jemalloc (and, under the tracer, to the tracer, which
 * forwards to the next definition: jemalloc's). The program proves jemalloc served its blocks, through jemalloc's
 * own statistics (mallctl "thread.allocated" / "thread.deallocated") and size classes (malloc_usable_size of a
 * 1000-byte block is jemalloc's 1024-byte class, glibc would say 1016), and exits non-zero otherwise.
 * Pattern: 20 blocks of 1000 bytes, 15 freed; 1 calloc(10, 10) kept; 1 realloc of a 100-byte block to 5000.
 * argv[1] = "baseline" returns at once: what the libraries allocate by themselves (jemalloc pulls in libstdc++,
 * whose emergency exception pool is allocated at start-up), which the test adds to the expected figures. */
#include <jemalloc/jemalloc.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static void fail(const char *what) {
    write(2, "jemalloc_user: ", 15);
    write(2, what, strlen(what));
    write(2, "\n", 1);
    exit(3);
}

static uint64_t stat(const char *name) {
    uint64_t v = 0;
    size_t len = sizeof v;
    if (mallctl(name, &v, &len, NULL, 0) != 0)
        fail(name);
    return v;
}

static void *volatile sink;

int main(int argc, char **argv) {
    if (argc > 1 && strcmp(argv[1], "baseline") == 0)
        return 0;
    uint64_t before = stat("thread.allocated");
    uint64_t freed_before = stat("thread.deallocated");
    char *blocks[20];
    for (int i = 0; i < 20; i++) {
        blocks[i] = malloc(1000);
        if (blocks[i] == NULL)
            fail("malloc");
        memset(blocks[i], i, 1000);
    }
    if (malloc_usable_size(blocks[0]) != 1024)
        fail("malloc_usable_size is not jemalloc's size class");
    for (int i = 0; i < 15; i++)
        free(blocks[i]);
    char *z = calloc(10, 10);
    char *r = malloc(100);
    r = realloc(r, 5000);
    if (z == NULL || r == NULL)
        fail("calloc/realloc");
    sink = z;
    sink = r;
    /* jemalloc counts usable sizes: 20 x 1024 + 112 (calloc 100) + 112 (malloc 100) + 5120 (realloc 5000). */
    if (stat("thread.allocated") - before != 20 * 1024 + 112 + 112 + 5120)
        fail("jemalloc did not serve the allocations");
    if (stat("thread.deallocated") - freed_before != 15 * 1024 + 112)
        fail("jemalloc did not see the frees");
    return 0;
}
