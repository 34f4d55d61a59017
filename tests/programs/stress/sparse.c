/* A big block that the program reserves but barely touches (a sparse table, an arena sized for the worst case):
 * with overcommit, malloc grants it and only touched pages cost memory.
 *
 *   sparse GIB    mallocs GIB GiB, touches one byte per 64 MiB, keeps it live until exit.
 *                 stdout: "granted=1" (or "granted=0" when the system refuses: the test then skips) and "ok".
 *
 * At exit the tracer's reachability scan reads live blocks looking for pointers: it must not turn an
 * instant exit into seconds of reading untouched memory. */
#include <stdio.h>
#include <stdlib.h>

static void *volatile keep;

int main(int argc, char **argv) {
    size_t gib = argc > 1 ? (size_t)atol(argv[1]) : 16;
    size_t n = gib << 30;
    char *p = malloc(n);
    printf("granted=%d\n", p != NULL);
    if (p) {
        for (size_t off = 0; off < n; off += (size_t)64 << 20) p[off] = 1;
        keep = p;
    }
    printf("ok\n");
    return 0;
}
