/* Memory exhaustion under an address-space limit (the test sets RLIMIT_AS): the program allocates small blocks
 * until malloc returns NULL, so the tracer runs out of memory too (its table and stack store grow from mmap).
 * The program must keep running, see exactly what it would see natively (NULL + ENOMEM), and exit normally.
 *
 * Modes:
 *   fill        allocate 64-byte blocks until NULL, check errno == ENOMEM, free everything, allocate again
 *               (memory must be usable again), print "ok", exit 0.
 *   fill-exit   allocate until NULL, release 256 blocks so stdio can work, print "ok" and exit with the rest still
 *               allocated: the final dump is written while memory is exhausted.
 *   stacks      like fill, but each block is allocated from one of 4096 distinct call paths (distinct stacks), so
 *               the tracer's stack store fills too.
 *   budget MIB  allocate MIB blocks of 1 MiB (and touch them), free them, print "ok budget=MIB"; exit 1 if malloc
 *               fails. Run under a limit with room to spare natively: the tracer must not take the room.
 *
 * Only deterministic facts are printed (the number of blocks obtained differs between runs and with the tracer). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_BLOCKS 40000000L

struct node {
    struct node *next;
    char pad[56];
};

/* 12 levels of binary choice: 4096 distinct return-address paths to malloc. */
static __attribute__((noinline)) void *leaf(void) { return malloc(sizeof(struct node)); }
#define LEVEL(n, m)                                                                   \
    static __attribute__((noinline)) void *l##n(unsigned k) {                         \
        void *p;                                                                      \
        if (k & 1) p = l##m(k >> 1); else p = l##m(k >> 1);                           \
        __asm__ volatile("" ::: "memory");                                            \
        return p;                                                                     \
    }
static __attribute__((noinline)) void *l0(unsigned k) {
    (void)k;
    void *p = leaf();
    __asm__ volatile("" ::: "memory");
    return p;
}
LEVEL(1, 0)
LEVEL(2, 1)
LEVEL(3, 2)
LEVEL(4, 3)
LEVEL(5, 4)
LEVEL(6, 5)
LEVEL(7, 6)
LEVEL(8, 7)
LEVEL(9, 8)
LEVEL(10, 9)
LEVEL(11, 10)
LEVEL(12, 11)

static struct node *fill(int distinct, long *count, int *err) {
    struct node *head = NULL;
    long n = 0;
    *err = 0;
    while (n < MAX_BLOCKS) {
        errno = 0;
        struct node *b = distinct ? l12((unsigned)n) : malloc(sizeof *b);
        if (!b) {
            *err = errno;
            break;
        }
        b->next = head;
        b->pad[0] = (char)n;
        head = b;
        n++;
    }
    *count = n;
    return head;
}

static void release(struct node *head) {
    while (head) {
        struct node *next = head->next;
        free(head);
        head = next;
    }
}

int main(int argc, char **argv) {
    const char *mode = argc > 1 ? argv[1] : "fill";
    if (strcmp(mode, "budget") == 0) {
        long mib = argc > 2 ? atol(argv[2]) : 64;
        char **chunks = calloc((size_t)mib, sizeof *chunks);
        for (long i = 0; i < mib; i++) {
            chunks[i] = malloc(1 << 20);
            if (!chunks[i]) {
                printf("malloc(1 MiB) failed after %ld MiB (errno %d)\n", i, errno);
                return 1;
            }
            memset(chunks[i], 1, 4096);
        }
        for (long i = 0; i < mib; i++) free(chunks[i]);
        free(chunks);
        printf("ok budget=%ld\n", mib);
        return 0;
    }
    int distinct = strcmp(mode, "stacks") == 0;
    long n;
    int err;
    struct node *head = fill(distinct, &n, &err);
    if (n == MAX_BLOCKS) {
        printf("limit not reached\n");
        return 3;
    }
    if (strcmp(mode, "fill-exit") == 0) {
        for (int i = 0; i < 256 && head; i++) {
            struct node *next = head->next;
            free(head);
            head = next;
        }
        printf("ok errno_is_enomem=%d\n", err == ENOMEM);
        return 0;
    }
    release(head);
    /* Memory is usable again: a second fill must get a comparable number of blocks. */
    long n2;
    int err2;
    head = fill(0, &n2, &err2);
    int again = n2 > n / 2;
    release(head);
    printf("ok errno_is_enomem=%d usable_again=%d\n", err == ENOMEM, again);
    fprintf(stderr, "blocks=%ld second=%ld\n", n, n2);
    return 0;
}
