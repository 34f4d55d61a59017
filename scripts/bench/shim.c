/* Forwarding-only LD_PRELOAD shim: the floor for any interposing tracer.
 *
 * Interposes malloc, free, calloc, realloc, posix_memalign, aligned_alloc, memalign (and valloc, pvalloc,
 * malloc_usable_size) and forwards each to the next definition (glibc) found with dlsym(RTLD_NEXT). dlsym itself
 * may call calloc before the real one is known: those early requests are served from a static bootstrap
 * buffer, and freeing a pointer inside it is a no-op. Nothing is recorded.
 *
 *   cc -O2 -shared -fPIC -o shim.so shim.c -ldl
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

static void *(*real_malloc)(size_t);
static void (*real_free)(void *);
static void *(*real_calloc)(size_t, size_t);
static void *(*real_realloc)(void *, size_t);
static int (*real_posix_memalign)(void **, size_t, size_t);
static void *(*real_aligned_alloc)(size_t, size_t);
static void *(*real_memalign)(size_t, size_t);
static void *(*real_valloc)(size_t);
static void *(*real_pvalloc)(size_t);
static size_t (*real_malloc_usable_size)(void *);

static _Alignas(64) unsigned char bootstrap[64 * 1024];
static size_t bootstrap_used;
static int resolving;

static int in_bootstrap(const void *p) {
    return (const unsigned char *)p >= bootstrap && (const unsigned char *)p < bootstrap + sizeof bootstrap;
}

static void *bootstrap_alloc(size_t size) {
    size_t off = (bootstrap_used + 15) & ~(size_t)15;
    if (size > sizeof bootstrap - off) return NULL;
    bootstrap_used = off + size;
    return bootstrap + off; /* static storage: already zeroed, good for calloc */
}

static void resolve(void) {
    if (real_malloc || resolving) return;
    resolving = 1;
    real_calloc = dlsym(RTLD_NEXT, "calloc");
    real_free = dlsym(RTLD_NEXT, "free");
    real_realloc = dlsym(RTLD_NEXT, "realloc");
    real_posix_memalign = dlsym(RTLD_NEXT, "posix_memalign");
    real_aligned_alloc = dlsym(RTLD_NEXT, "aligned_alloc");
    real_memalign = dlsym(RTLD_NEXT, "memalign");
    real_valloc = dlsym(RTLD_NEXT, "valloc");
    real_pvalloc = dlsym(RTLD_NEXT, "pvalloc");
    real_malloc_usable_size = dlsym(RTLD_NEXT, "malloc_usable_size");
    real_malloc = dlsym(RTLD_NEXT, "malloc"); /* last: it is the "resolved" flag */
    resolving = 0;
}

__attribute__((constructor)) static void shim_init(void) { resolve(); }

void *malloc(size_t size) {
    if (__builtin_expect(!real_malloc, 0)) {
        resolve();
        if (!real_malloc) return bootstrap_alloc(size);
    }
    return real_malloc(size);
}

void free(void *p) {
    if (!p || in_bootstrap(p)) return;
    if (__builtin_expect(!real_free, 0)) resolve();
    real_free(p);
}

void *calloc(size_t n, size_t size) {
    if (__builtin_expect(!real_calloc || !real_malloc, 0)) {
        resolve();
        if (!real_calloc || !real_malloc) {
            if (size && n > SIZE_MAX / size) return NULL;
            return bootstrap_alloc(n * size);
        }
    }
    return real_calloc(n, size);
}

void *realloc(void *p, size_t size) {
    if (__builtin_expect(!real_realloc, 0)) resolve();
    if (in_bootstrap(p)) {
        /* move out of the bootstrap buffer; the old size is unknown, copy what fits */
        void *q = malloc(size);
        if (q) {
            size_t avail = (size_t)(bootstrap + sizeof bootstrap - (unsigned char *)p);
            memcpy(q, p, size < avail ? size : avail);
        }
        return q;
    }
    return real_realloc(p, size);
}

int posix_memalign(void **out, size_t align, size_t size) {
    if (__builtin_expect(!real_posix_memalign, 0)) resolve();
    return real_posix_memalign(out, align, size);
}

void *aligned_alloc(size_t align, size_t size) {
    if (__builtin_expect(!real_aligned_alloc, 0)) resolve();
    return real_aligned_alloc(align, size);
}

void *memalign(size_t align, size_t size) {
    if (__builtin_expect(!real_memalign, 0)) resolve();
    return real_memalign(align, size);
}

void *valloc(size_t size) {
    if (__builtin_expect(!real_valloc, 0)) resolve();
    return real_valloc(size);
}

void *pvalloc(size_t size) {
    if (__builtin_expect(!real_pvalloc, 0)) resolve();
    return real_pvalloc(size);
}

size_t malloc_usable_size(void *p) {
    if (!p) return 0;
    if (in_bootstrap(p)) return 0;
    if (__builtin_expect(!real_malloc_usable_size, 0)) resolve();
    return real_malloc_usable_size(p);
}
