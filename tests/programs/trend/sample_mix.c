/* 1,000,000 allocations of mixed sizes (60% 8-128 bytes, 30% 129-1024, 9% 1-8 KiB, 1% 8-64 KiB, drawn from a
 * fixed-seed generator); every 8th block is kept until exit, the others are freed at once. Prints the true
 * figures with write(2) (stdio would allocate): `allocations=`, `bytes_allocated=`, `live_blocks=`,
 * `live_bytes=`. Used to check sampling's estimates against the truth. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define N 1000000
#define KEEP_EVERY 8

static void *kept[N / KEEP_EVERY + 1];
static unsigned long long rng = 0x9e3779b97f4a7c15ull;

static unsigned long next(void) {
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return (unsigned long)(rng >> 11);
}

static size_t size_of_next(void) {
    unsigned long bucket = next() % 100;
    unsigned long r = next();
    if (bucket < 60)
        return 8 + r % 121;
    if (bucket < 90)
        return 129 + r % 896;
    if (bucket < 99)
        return 1025 + r % 7168;
    return 8193 + r % 57344;
}

static void print(const char *key, unsigned long long v) {
    char buf[64];
    int n = snprintf(buf, sizeof buf, "%s=%llu\n", key, v);
    write(1, buf, (size_t)n);
}

int main(void) {
    unsigned long long total = 0, live = 0, nkept = 0;
    for (unsigned long i = 0; i < N; i++) {
        size_t size = size_of_next();
        char *p = malloc(size);
        p[0] = 1;
        total += size;
        if (i % KEEP_EVERY == 0) {
            kept[nkept++] = p;
            live += size;
        } else {
            free(p);
        }
    }
    print("allocations", N);
    print("bytes_allocated", total);
    print("live_blocks", nkept);
    print("live_bytes", live);
    return 0;
}
