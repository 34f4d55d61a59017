/* Leak scenarios for the CI gate's end-to-end tests, one per argv[1]. Tests find lines through the marker
 * comments. Nothing else touches the heap (no stdio).
 *   clean N     allocates and frees, keeps one block reachable from a global, exits with code N
 *   reachable   one block still reachable from a global at exit (not a leak)
 *   lost        one 64-byte block whose only pointer is dropped (definitely lost)
 *   struct      a leaked struct whose three fields point at leaked buffers: 1 definitely, 3 indirectly lost
 *   one         a leak in leak_alpha()
 *   two         a leak in leak_alpha() and one in leak_beta()
 *   crash       a leak, then SIGSEGV */
#include <signal.h>
#include <stdlib.h>
#include <string.h>

static void *volatile global_keep;
static void *volatile sink;

struct record {
    char *name;
    char *payload;
    long *counts;
};

__attribute__((noinline)) static void keep_reachable(void) {
    global_keep = malloc(48); /* REACHABLE_LINE */
}

__attribute__((noinline)) static void drop_block(void) {
    char *p = malloc(64); /* LOST_LINE */
    memset(p, 1, 64);
    sink = p;
    sink = NULL;
}

__attribute__((noinline)) static void leak_record(void) {
    struct record *r = malloc(sizeof *r); /* STRUCT_LINE */
    r->name = malloc(16);
    r->payload = malloc(100);
    r->counts = calloc(10, sizeof(long));
    sink = r;
    sink = NULL;
}

__attribute__((noinline)) void leak_alpha(void) {
    sink = malloc(111); /* ALPHA_LINE */
    sink = NULL;
}

__attribute__((noinline)) void leak_beta(void) {
    sink = malloc(222); /* BETA_LINE */
    sink = NULL;
}

/* Overwrites the dead stack below main's frame, where the callees above left their pointers: the scan at exit
 * is conservative, and a stale copy there would make a lost block look reachable. */
__attribute__((noinline)) static void scrub_stack(void) {
    volatile char junk[16384];
    for (size_t i = 0; i < sizeof junk; i++)
        junk[i] = 0;
}

int main(int argc, char **argv) {
    const char *what = argc > 1 ? argv[1] : "clean";
    if (strcmp(what, "clean") == 0) {
        for (int i = 0; i < 10; i++) {
            char *p = malloc(32 + (size_t)i);
            free(p);
        }
        keep_reachable();
        return argc > 2 ? atoi(argv[2]) : 0;
    }
    if (strcmp(what, "reachable") == 0) {
        keep_reachable();
    } else if (strcmp(what, "lost") == 0) {
        drop_block(); /* MAIN_LOST_LINE */
    } else if (strcmp(what, "struct") == 0) {
        leak_record();
    } else if (strcmp(what, "one") == 0) {
        leak_alpha();
    } else if (strcmp(what, "two") == 0) {
        leak_alpha();
        leak_beta();
    } else if (strcmp(what, "crash") == 0) {
        drop_block();
        raise(SIGSEGV);
    } else {
        return 64;
    }
    scrub_stack();
    return 0;
}
