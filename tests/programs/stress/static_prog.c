/* Built with -static: the kernel starts it without the dynamic loader, so LD_PRELOAD means nothing to it and
 * it cannot be traced. It must run exactly as it does natively (no crash, same output, same exit status), no
 * dump appears, and `heapledger run` must say why.
 *
 *   static_prog [CODE]   allocates, prints "static sum=N", exits with CODE (default 0) */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int main(int argc, char **argv) {
    int code = argc > 1 ? atoi(argv[1]) : 0;
    unsigned long sum = 0;
    for (int i = 0; i < 1000; i++) {
        char *p = malloc(16 + (size_t)i);
        memset(p, i & 0xff, 16 + (size_t)i);
        sum += (unsigned char)p[i];
        free(p);
    }
    void *leak = malloc(99);
    (void)leak;
    printf("static sum=%lu\n", sum);
    return code;
}
