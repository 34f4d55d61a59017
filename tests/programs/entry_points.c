/* One scenario per C allocation entry point, chosen by argv[1]. Each scenario checks the function's own contract
 * (return value, errno, alignment, contents) and exits non-zero with a message if it is broken; the test then
 * checks the dump's totals and the live blocks the scenario leaves (size and allocator family). `all` runs every
 * scenario of group ALL or ORACLE in turn; `oracle` runs those of group ORACLE, for Valgrind, whose replacements
 * differ in a few ways: calloc leaves errno alone on overflow (so errno is not checked), pvalloc aborts the program,
 * and huge requests draw warnings. `odd_alignment` prints what memalign/aligned_alloc do with alignments that are
 * not powers of two (the test compares a native run with a traced one). No stdio streams: nothing but the scenario
 * touches the heap (snprintf into a stack buffer does not allocate). */
#define _GNU_SOURCE
#include <errno.h>
#include <malloc.h>
#include <stdio.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* The block passed to a failing realloc/reallocarray stays valid; GCC cannot know the call fails. */
#pragma GCC diagnostic ignored "-Wuse-after-free"

static void fail(const char *what) {
    write(2, "entry_points: ", 14);
    write(2, what, strlen(what));
    write(2, "\n", 1);
    exit(3);
}

#define CHECK(cond)                                                                                                \
    do {                                                                                                           \
        if (!(cond))                                                                                               \
            fail(#cond);                                                                                           \
    } while (0)

/* Keeps leaked pointers out of the compiler's sight. */
static void *volatile sink;
static volatile size_t huge = SIZE_MAX / 2 + 1;
/* Cleared by the `oracle` scenario (see the top of the file). */
static int check_errno = 1;

static void s_malloc(void) {
    char *p = malloc(40);
    CHECK(p != NULL);
    memset(p, 1, 40);
    sink = p; /* leaked: 40 bytes, malloc */
}

static void s_malloc0(void) {
    void *p = malloc(0);
    CHECK(p != NULL);
    sink = p; /* leaked: 0 bytes, malloc */
}

static void s_calloc(void) {
    unsigned char *p = calloc(3, 20);
    CHECK(p != NULL);
    for (int i = 0; i < 60; i++)
        CHECK(p[i] == 0);
    sink = p; /* leaked: 60 bytes */
    errno = 0;
    CHECK(calloc(huge, 4) == NULL); /* overflow: NULL, ENOMEM, nothing counted */
    CHECK(!check_errno || errno == ENOMEM);
}

static void s_realloc_grow(void) {
    char *p = malloc(10);
    CHECK(p != NULL);
    memcpy(p, "abcdefghi", 10);
    char *q = realloc(p, 1000);
    CHECK(q != NULL);
    CHECK(memcmp(q, "abcdefghi", 10) == 0);
    sink = q; /* leaked: 1000 */
}

static void s_realloc_shrink(void) {
    char *p = malloc(1000);
    CHECK(p != NULL);
    memset(p, 'x', 1000);
    char *q = realloc(p, 10);
    CHECK(q != NULL);
    for (int i = 0; i < 10; i++)
        CHECK(q[i] == 'x');
    sink = q; /* leaked: 10 */
}

static void s_realloc_null(void) {
    char *p = realloc(NULL, 50);
    CHECK(p != NULL);
    memset(p, 0, 50);
    sink = p; /* leaked: 50 */
}

static void s_realloc_zero(void) {
    char *p = malloc(50);
    CHECK(p != NULL);
    char *q = realloc(p, 0); /* glibc: frees p, returns NULL */
    CHECK(q == NULL);
}

static void s_realloc_fail(void) {
    char *p = malloc(100);
    CHECK(p != NULL);
    memset(p, 'k', 100);
    errno = 0;
    char *q = realloc(p, huge); /* fails: NULL, ENOMEM, p untouched and still live */
    CHECK(q == NULL);
    CHECK(!check_errno || errno == ENOMEM);
    CHECK(p[0] == 'k' && p[99] == 'k');
    free(p);
}

static void s_free_null(void) {
    free(NULL);
    char *p = malloc(8);
    CHECK(p != NULL);
    free(p);
    free(NULL);
}

static void s_reallocarray(void) {
    int *p = reallocarray(NULL, 10, 12);
    CHECK(p != NULL);
    memset(p, 0, 120);
    int *q = reallocarray(p, 20, 12);
    CHECK(q != NULL);
    errno = 0;
    int *r = reallocarray(q, huge, 4); /* overflow: NULL, ENOMEM, q untouched */
    CHECK(r == NULL);
    CHECK(!check_errno || errno == ENOMEM);
    CHECK(q[0] == 0);
    sink = q; /* leaked: 240 */
}

static void s_posix_memalign(void) {
    void *p = NULL;
    CHECK(posix_memalign(&p, 64, 100) == 0);
    CHECK(((uintptr_t)p & 63) == 0);
    sink = p; /* leaked: 100, aligned */
    void *q = (void *)1;
    CHECK(posix_memalign(&q, 3, 100) == EINVAL);  /* not a power of two */
    CHECK(posix_memalign(&q, 4, 100) == EINVAL);  /* not a multiple of sizeof(void *) */
    CHECK(posix_memalign(&q, 24, 100) == EINVAL); /* multiple of 8, not a power of two */
    CHECK(q == (void *)1);                        /* untouched on error */
}

static void s_aligned_alloc(void) {
    void *p = aligned_alloc(128, 256);
    CHECK(p != NULL);
    CHECK(((uintptr_t)p & 127) == 0);
    sink = p; /* leaked: 256, aligned */
}

static void s_memalign(void) {
    void *p = memalign(256, 100);
    CHECK(p != NULL);
    CHECK(((uintptr_t)p & 255) == 0);
    sink = p; /* leaked: 100, aligned */
}

static void s_valloc(void) {
    long page = sysconf(_SC_PAGESIZE);
    void *p = valloc(100);
    CHECK(p != NULL);
    CHECK(((uintptr_t)p & (uintptr_t)(page - 1)) == 0);
    sink = p; /* leaked: 100, aligned */
}

static void s_pvalloc(void) {
    long page = sysconf(_SC_PAGESIZE);
    char *p = pvalloc(100);
    CHECK(p != NULL);
    CHECK(((uintptr_t)p & (uintptr_t)(page - 1)) == 0);
    memset(p, 1, (size_t)page); /* the whole page is usable */
    sink = p; /* leaked: one page (recorded rounded), aligned */
}

static void report_aligned(const char *call, void *p) {
    char buf[96];
    int n;
    if (p != NULL)
        n = snprintf(buf, sizeof buf, "%s=ok aligned32=%d\n", call, ((uintptr_t)p & 31) == 0);
    else
        n = snprintf(buf, sizeof buf, "%s=null errno=%d\n", call, errno);
    write(1, buf, (size_t)n);
    free(p);
}

static void s_odd_alignment(void) {
    errno = 0;
    report_aligned("memalign(24)", memalign(24, 100));
    errno = 0;
    report_aligned("memalign(0)", memalign(0, 100));
    errno = 0;
    report_aligned("aligned_alloc(24)", aligned_alloc(24, 100));
    errno = 0;
    report_aligned("aligned_alloc(0)", aligned_alloc(0, 100));
}

static void s_usable_size(void) {
    char *p = malloc(100);
    CHECK(p != NULL);
    size_t n = malloc_usable_size(p);
    CHECK(n >= 100);
    memset(p, 1, n); /* usable means usable */
    CHECK(malloc_usable_size(NULL) == 0);
    free(p);
}

enum group { BY_NAME, ALL, ORACLE };

struct scenario {
    const char *name;
    void (*run)(void);
    enum group group;
};

static const struct scenario scenarios[] = {
    {"malloc", s_malloc, ORACLE},
    {"malloc0", s_malloc0, ORACLE},
    {"calloc", s_calloc, ORACLE},
    {"realloc_grow", s_realloc_grow, ORACLE},
    {"realloc_shrink", s_realloc_shrink, ORACLE},
    {"realloc_null", s_realloc_null, ORACLE},
    {"realloc_zero", s_realloc_zero, ORACLE},
    {"realloc_fail", s_realloc_fail, ALL},
    {"free_null", s_free_null, ORACLE},
    {"reallocarray", s_reallocarray, ORACLE},
    {"posix_memalign", s_posix_memalign, ORACLE},
    {"aligned_alloc", s_aligned_alloc, ORACLE},
    {"memalign", s_memalign, ORACLE},
    {"valloc", s_valloc, ORACLE},
    {"pvalloc", s_pvalloc, ALL},
    {"usable_size", s_usable_size, ORACLE},
    {"odd_alignment", s_odd_alignment, BY_NAME},
};

int main(int argc, char **argv) {
    if (argc != 2)
        fail("usage: entry_points SCENARIO|all|oracle");
    int oracle = strcmp(argv[1], "oracle") == 0;
    int all = strcmp(argv[1], "all") == 0;
    check_errno = !oracle;
    int found = 0;
    for (size_t i = 0; i < sizeof scenarios / sizeof scenarios[0]; i++) {
        enum group g = scenarios[i].group;
        if ((oracle && g == ORACLE) || (all && g != BY_NAME) || strcmp(argv[1], scenarios[i].name) == 0) {
            scenarios[i].run();
            found = 1;
        }
    }
    if (!found)
        fail("unknown scenario");
    return 0;
}
