/* Leak scenarios for the CI gate's end-to-end tests, one per argv[1]. Tests find lines through the marker
 * comments. Nothing else touches the heap (no stdio).
 *   clean N     allocates and frees, keeps one block reachable from a global, exits with code N
 *   reachable   one block still reachable from a global at exit (not a leak)
 *   lost        one 64-byte block whose only pointer is dropped (definitely lost)
 *   struct      a leaked struct whose three fields point at leaked buffers: 1 definitely, 3 indirectly lost
 *   one         a leak in leak_alpha()
 *   two         a leak in leak_alpha() and one in leak_beta()
 *   wide        big blocks reached only through interior pointers past 64 KiB, and more blocks than the exit scan's
 *               work stack holds, reachable and lost (exact figures in tests/gate.rs)
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

static char *volatile global_inside;
static void **volatile global_many;

/* Reachable: a 200000-byte block known only by a pointer 100000 bytes in, holding at 150000 the only pointer to
 * a 100-byte block; 100000 blocks of 24 bytes held by an array. Lost: a 300000-byte block holding at 250000 the
 * only pointer to a 50-byte block; an array of 70000 pointers to 40-byte blocks. */
__attribute__((noinline)) static void wide(void) {
    char *big = malloc(200000);
    memset(big, 0, 200000);
    void *child = malloc(100);
    memcpy(big + 150000, &child, sizeof child);
    global_inside = big + 100000;
    void **many = malloc(100000 * sizeof *many);
    for (int i = 0; i < 100000; i++)
        many[i] = malloc(24);
    global_many = many;

    char *lost_big = malloc(300000);
    memset(lost_big, 0, 300000);
    void *lost_child = malloc(50);
    memcpy(lost_big + 250000, &lost_child, sizeof lost_child);
    void **lost_many = malloc(70000 * sizeof *lost_many);
    for (int i = 0; i < 70000; i++)
        lost_many[i] = malloc(40);
    sink = lost_big;
    sink = lost_many;
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
    } else if (strcmp(what, "wide") == 0) {
        wide();
    } else if (strcmp(what, "crash") == 0) {
        drop_block();
        raise(SIGSEGV);
    } else {
        return 64;
    }
    scrub_stack();
    return 0;
}
