/* Sampling mode when malloc fails: the program limits its own address space, allocates 64-byte blocks until malloc
 * returns NULL, frees them all, and prints how many it got. A failed malloc is no allocation: the dump's totals
 * must count exactly the blocks made (sampling mode's fast path decides before the real call and counts after
 * it). Output through write(2): stdio's buffer would be one more allocation. */
#include <stdio.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <unistd.h>

#define MAX_BLOCKS 4000000L
static void *blocks[MAX_BLOCKS];

int main(void) {
    struct rlimit r = {256L << 20, 256L << 20};
    if (setrlimit(RLIMIT_AS, &r) != 0) return 2;
    long n = 0, failed = 0;
    while (n < MAX_BLOCKS) {
        void *p = malloc(64);
        if (!p) {
            failed++;
            break;
        }
        blocks[n++] = p;
    }
    long made = n;
    while (n > 0) free(blocks[--n]);
    char buf[96];
    int len = snprintf(buf, sizeof buf, "allocations=%ld\nfailed=%ld\n", made, failed);
    return write(1, buf, (size_t)len) == len ? 0 : 3;
}
