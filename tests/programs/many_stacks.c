/* More distinct stacks than the intern's first lookup table takes (131072), for tests/intern.rs.
 *
 *   many_stacks L [T]
 *
 * Runs every path of L choices among three functions (3^L chains): main calls F1, F1 calls F2, ... and FL
 * allocates, where Fk is a, b or c as digit k-1 of the path (base 3, least significant first) says. Each path
 * runs twice: a 16-byte block the first time, a 24-byte one the second, in path order. It prints the entry
 * addresses of a, b, c and main ("fn NAME 0xADDR") so the test can tell which function a return address lies in
 * without a symbolizer. Nothing else touches the heap (no stdio).
 *
 * With T, T threads instead run every path once each, all at the same time (a barrier starts them), thread t
 * allocating blocks of 32 + 8t bytes, even threads in path order and odd ones in reverse: threads of the same
 * parity intern the same new stacks at nearly the same moment while the others add different ones, so the first
 * table closes under them. */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define NOINLINE __attribute__((noinline, noclone))
#define KEEP_FRAME() __asm__ volatile("" ::: "memory")

static void *volatile keep;

NOINLINE void *a(int d, const unsigned char *path, size_t size);
NOINLINE void *b(int d, const unsigned char *path, size_t size);
NOINLINE void *c(int d, const unsigned char *path, size_t size);

static inline __attribute__((always_inline)) void *step(int d, const unsigned char *path, size_t size) {
    if (d == 0)
        return malloc(size);
    return path[0] == 0 ? a(d - 1, path + 1, size) : path[0] == 1 ? b(d - 1, path + 1, size) : c(d - 1, path + 1, size);
}

NOINLINE void *a(int d, const unsigned char *path, size_t size) {
    void *p = step(d, path, size);
    KEEP_FRAME();
    return p;
}

NOINLINE void *b(int d, const unsigned char *path, size_t size) {
    void *p = step(d, path, size);
    KEEP_FRAME();
    return p;
}

NOINLINE void *c(int d, const unsigned char *path, size_t size) {
    void *p = step(d, path, size);
    KEEP_FRAME();
    return p;
}

static void put_fn(const char *name, void *addr) {
    char line[64] = "fn ";
    size_t n = 3;
    memcpy(line + n, name, strlen(name));
    n += strlen(name);
    memcpy(line + n, " 0x", 3);
    n += 3;
    unsigned long v = (unsigned long)addr;
    for (int shift = 60; shift >= 0; shift -= 4)
        line[n++] = "0123456789abcdef"[(v >> shift) & 15];
    line[n++] = '\n';
    if (write(1, line, n) != (ssize_t)n)
        _exit(3);
}

static int levels;
static long paths;
static pthread_barrier_t start;

static void run_paths(size_t size, int reverse) {
    unsigned char path[16];
    for (long j = 0; j < paths; j++) {
        long x = reverse ? paths - 1 - j : j;
        for (int k = 0; k < levels; k++) {
            path[k] = (unsigned char)(x % 3);
            x /= 3;
        }
        keep = step(levels, path, size);
        KEEP_FRAME();
    }
}

static void *thread_main(void *arg) {
    pthread_barrier_wait(&start);
    run_paths(32 + 8 * (size_t)arg, (size_t)arg % 2);
    return NULL;
}

int main(int argc, char **argv) {
    levels = argc > 1 ? atoi(argv[1]) : 11;
    if (levels < 1 || levels > 15)
        return 2;
    paths = 1;
    for (int i = 0; i < levels; i++)
        paths *= 3;
    int threads = argc > 2 ? atoi(argv[2]) : 0;
    if (threads < 0 || threads > 16)
        return 2;
    if (threads > 0) {
        pthread_t t[16];
        pthread_barrier_init(&start, NULL, (unsigned)threads);
        for (long k = 0; k < threads; k++)
            if (pthread_create(&t[k], NULL, thread_main, (void *)k) != 0)
                return 4;
        for (int k = 0; k < threads; k++)
            pthread_join(t[k], NULL);
        put_fn("a", (void *)a);
        put_fn("b", (void *)b);
        put_fn("c", (void *)c);
        put_fn("main", (void *)main);
        return 0;
    }
    unsigned char path[16];
    for (int pass = 0; pass < 2; pass++) {
        for (long i = 0; i < paths; i++) {
            long x = i;
            for (int k = 0; k < levels; k++) {
                path[k] = (unsigned char)(x % 3);
                x /= 3;
            }
            /* One block per (pass, path), kept live: the test reads their stacks from the exit dump. */
            keep = step(levels, path, pass == 0 ? 16 : 24);
            KEEP_FRAME();
        }
    }
    put_fn("a", (void *)a);
    put_fn("b", (void *)b);
    put_fn("c", (void *)c);
    put_fn("main", (void *)main);
    return 0;
}
