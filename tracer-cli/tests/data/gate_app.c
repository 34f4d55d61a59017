/* A program the CLI's gate tests compile (never run) so that synthetic dumps can name real functions: the tests
 * put addresses inside these functions in the dumps' stacks, and the CLI symbolizes them from this program's
 * DWARF like any traced program's. */
#include <stdlib.h>

__attribute__((noinline)) void *leak_one(int n) {
    return malloc((size_t)n + 100);
}

__attribute__((noinline)) void *leak_two(int n) {
    return malloc((size_t)n + 200);
}

__attribute__((noinline)) void *make_node(int n) {
    return calloc(1, (size_t)n + 300);
}

static void *volatile slot;

__attribute__((noinline)) void release_twice(void *p) {
    slot = p;
    free(p);
    free(slot);
}

static volatile int offset = 8;

__attribute__((noinline)) void bad_release(void *p) {
    free((char *)p + offset);
}

int main(int argc, char **argv) {
    (void)argv;
    void *a = leak_one(argc);
    void *b = leak_two(argc);
    make_node(argc);
    release_twice(a);
    bad_release(b);
    return 0;
}
