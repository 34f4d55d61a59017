/* Stacks in a dump: three blocks from `kept` stay live; fifty from `dropped` are freed (their allocation and free
 * stacks are interned, but no block or error names them at exit); one from `twice` is freed twice (a double free:
 * its allocation stack and both free stacks are named by the error). No stdio: its buffer would be a fourth live
 * block. */
#include <stdlib.h>

#define NOINLINE __attribute__((noinline))
#define KEEP_FRAME(p) __asm__ volatile("" : "+r"(p) : : "memory")

NOINLINE static void *kept(size_t n) {
    void *p = malloc(n);
    KEEP_FRAME(p);
    return p;
}

NOINLINE static void *dropped(size_t n) {
    void *p = malloc(n);
    KEEP_FRAME(p);
    return p;
}

NOINLINE static void *twice(size_t n) {
    void *p = malloc(n);
    KEEP_FRAME(p);
    return p;
}

NOINLINE static void release(void *p) {
    free(p);
    KEEP_FRAME(p);
}

static void *live[3];

int main(void) {
    for (int i = 0; i < 3; i++) live[i] = kept(100 + i);
    for (int i = 0; i < 50; i++) free(dropped(200 + i));
    void *q = twice(300);
    release(q);
    release(q);
    return live[0] == NULL;
}
