/* A known allocation pattern: 5 leaked 30-byte blocks from make_tx() called by leaker(), one leaked 1000-byte
 * block from main(), and 3 blocks of 100 bytes that are freed. Nothing else touches the heap (no stdio).
 * Tests find the expected line numbers through the marker comments. */
#include <stdlib.h>
#include <string.h>

struct tx {
    char id[30];
};

__attribute__((noinline)) static struct tx *make_tx(int n) {
    struct tx *t = malloc(sizeof *t); /* ALLOC_LINE */
    memset(t, n, sizeof *t);
    return t;
}

__attribute__((noinline)) static void leaker(void) {
    for (int i = 0; i < 5; i++) {
        struct tx *t = make_tx(i); /* CALL_LINE */
        t->id[0] = 1;
    }
}

__attribute__((noinline)) static void churn(void) {
    for (int i = 0; i < 3; i++) {
        char *p = malloc(100);
        memset(p, i, 100);
        free(p);
    }
}

int main(void) {
    churn();
    leaker(); /* MAIN_LINE */
    char *big = malloc(1000); /* BIG_LINE */
    memset(big, 7, 1000);
    big = NULL;
    return 0;
}
