// Huge and impossible allocations: what the program sees (pointer NULL or not, errno, return codes, exceptions)
// must be exactly what it sees without the tracer. One line per call, printed after the call so that nothing
// in between can touch errno.
//
//   huge            every case below
//   huge limited    the same, run by the test under an address-space limit (malloc returns NULL far sooner)
//
// The blocks that succeed are freed, except one 5 GiB block (when the system grants it) kept live until exit:
// the dump must show its exact size. stdout only (deterministic for a given machine and limit).
#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <malloc.h>
#include <new>
#include <unistd.h>

static void line(const char *what, const void *p, int e) {
    std::printf("%-34s %s errno=%d\n", what, p ? "ptr " : "NULL", e);
}

#define TRY(what, expr)                                                                             \
    do {                                                                                            \
        errno = 777;                                                                                \
        void *p_ = (void *)(expr);                                                                  \
        int e_ = errno;                                                                             \
        line(what, p_, e_);                                                                         \
        std::free(p_);                                                                              \
    } while (0)

int main(int argc, char **argv) {
    (void)argc;
    (void)argv;
    std::setvbuf(stdout, nullptr, _IOLBF, 0);
    const size_t G = 1024ull * 1024 * 1024;
    const size_t MAX = SIZE_MAX;

    TRY("malloc(SIZE_MAX)", std::malloc(MAX));
    TRY("malloc(SIZE_MAX/2)", std::malloc(MAX / 2));
    TRY("malloc(SIZE_MAX-4095)", std::malloc(MAX - 4095));
    TRY("malloc(1<<47)", std::malloc((size_t)1 << 47));
    TRY("calloc(SIZE_MAX/2,3) overflow", std::calloc(MAX / 2, 3));
    TRY("calloc(1<<33,1<<33) overflow", std::calloc((size_t)1 << 33, (size_t)1 << 33));
    TRY("calloc(1<<20,1<<27) 128TiB", std::calloc((size_t)1 << 20, (size_t)1 << 27));
    TRY("calloc(0,SIZE_MAX)", std::calloc(0, MAX));
    TRY("valloc(SIZE_MAX)", valloc(MAX));
    TRY("pvalloc(SIZE_MAX)", pvalloc(MAX));
    TRY("pvalloc(SIZE_MAX-8192)", pvalloc(MAX - 8192));
    TRY("memalign(64,SIZE_MAX)", memalign(64, MAX));
    TRY("memalign(1<<40,10)", memalign((size_t)1 << 40, 10));
    TRY("aligned_alloc(64,SIZE_MAX-63)", aligned_alloc(64, MAX - 63));
    TRY("reallocarray(NULL,SIZE_MAX,2)", reallocarray(nullptr, MAX, 2));

    {
        char *p = static_cast<char *>(std::malloc(100));
        std::strcpy(p, "survives");
        errno = 777;
        void *q = std::realloc(p, MAX);
        int e = errno;
        line("realloc(p,SIZE_MAX)", q, e);
        errno = 777;
        q = std::realloc(p, MAX - 4095);
        e = errno;
        line("realloc(p,SIZE_MAX-4095)", q, e);
        errno = 777;
        q = reallocarray(p, MAX / 2, 4);
        e = errno;
        line("reallocarray(p,SIZE_MAX/2,4)", q, e);
        std::printf("old block intact: %s\n", std::strcmp(p, "survives") == 0 ? "yes" : "no");
        std::free(p);
    }
    {
        void *out = reinterpret_cast<void *>(0x1234);
        errno = 777;
        int rc = posix_memalign(&out, 64, MAX - 100);
        int e = errno;
        std::printf("%-34s rc=%d out_unchanged=%d errno=%d\n", "posix_memalign(64,SIZE_MAX-100)", rc,
                    out == reinterpret_cast<void *>(0x1234), e);
        errno = 777;
        rc = posix_memalign(&out, 24, 100);
        e = errno;
        std::printf("%-34s rc=%d out_unchanged=%d errno=%d\n", "posix_memalign(24,100) bad align", rc,
                    out == reinterpret_cast<void *>(0x1234), e);
        errno = 777;
        rc = posix_memalign(&out, 0, 100);
        e = errno;
        std::printf("%-34s rc=%d out_unchanged=%d errno=%d\n", "posix_memalign(0,100) bad align", rc,
                    out == reinterpret_cast<void *>(0x1234), e);
    }
    // operator new: bad_alloc, nothrow NULL, bad_array_new_length.
    try {
        void *p = ::operator new(MAX - 10);
        std::printf("operator new(SIZE_MAX-10) returned %s\n", p ? "a block" : "NULL");
    } catch (const std::bad_alloc &e) {
        std::printf("operator new(SIZE_MAX-10) threw %s\n", e.what());
    }
    try {
        // libstdc++ rounds the size up to the alignment without an overflow check: natively this returns a
        // (tiny) block instead of throwing. Whatever happens natively must happen traced, and the block is
        // released the way the program would, with the matching operator delete.
        void *p = ::operator new(MAX - 10, std::align_val_t(64));
        std::printf("operator new(SIZE_MAX-10, align 64) returned %s\n", p ? "a block" : "NULL");
        ::operator delete(p, std::align_val_t(64));
    } catch (const std::bad_alloc &e) {
        std::printf("operator new(SIZE_MAX-10, align 64) threw %s\n", e.what());
    }
    {
        errno = 777;
        void *p = ::operator new(MAX - 10, std::nothrow);
        int e = errno;
        line("new(nothrow)(SIZE_MAX-10)", p, e);
        errno = 777;
        p = ::operator new[](MAX / 2, std::align_val_t(128), std::nothrow);
        e = errno;
        line("new[](nothrow, align 128)(huge)", p, e);
    }
    try {
        volatile size_t n = MAX / 4;
        long *p = new long[n];
        std::printf("new long[SIZE_MAX/4] returned %s\n", p ? "a block" : "NULL");
    } catch (const std::bad_array_new_length &e) {
        std::printf("new long[SIZE_MAX/4] threw bad_array_new_length\n");
    } catch (const std::bad_alloc &e) {
        std::printf("new long[SIZE_MAX/4] threw bad_alloc\n");
    }

    // Big but possible (with overcommit): more than 4 GiB. Kept live until exit when granted.
    errno = 777;
    char *big = static_cast<char *>(std::malloc(5 * G + 123));
    int e = errno;
    line("malloc(5GiB+123)", big, e);
    if (big) {
        big[0] = 1;
        big[5 * G + 122] = 2;
    }
    errno = 777;
    char *big2 = static_cast<char *>(std::calloc(1ull << 20, 4097)); // 4 GiB + 1 MiB, zeroed on demand
    e = errno;
    line("calloc(1<<20,4097)", big2, e);
    if (big2) std::printf("calloc zeroed: %s\n", big2[4097ull * (1 << 20) - 1] == 0 ? "yes" : "no");
    errno = 777;
    char *grown = static_cast<char *>(std::realloc(big2, 6 * G));
    e = errno;
    line("realloc(4GiB block, 6GiB)", grown, e);
    std::free(grown ? grown : big2);
    // errno after successful calls: glibc leaves it alone; so must the tracer.
    errno = 777;
    void *small = std::malloc(10);
    std::free(small);
    std::printf("errno after malloc+free = %d\n", errno);
    errno = 777;
    std::free(nullptr);
    std::printf("errno after free(NULL) = %d\n", errno);
    std::printf("done\n");
    return 0;
}
