/* A plugin for the dlopen/dlclose storm (built -shared -fPIC, then copied to many file names so that each copy
 * is a distinct library to the loader).
 *
 * Its constructor leaks one 5000-byte block (the dump must keep every copy's leak, with the copy's module in the
 * module map after dlclose); plugin_work() uses dynamic TLS (the loader allocates this thread's block for the
 * library, and frees it at dlclose), allocates and frees, and returns a block of 6000 + i % 10 bytes that the
 * caller frees after the library is gone. */
#include <stdlib.h>
#include <string.h>

static __thread char tls_scratch[256];
static void *volatile ctor_leak;

__attribute__((constructor)) static void plugin_init(void) {
    ctor_leak = malloc(5000);
    memset(ctor_leak, 3, 5000);
}

__attribute__((noinline)) void *plugin_work(int i) {
    tls_scratch[i & 255] = (char)i;
    for (int k = 0; k < 8; k++) free(malloc(32 + (size_t)k * 16));
    char *r = malloc(6000 + (size_t)(i % 10));
    r[0] = tls_scratch[i & 255];
    return r;
}
