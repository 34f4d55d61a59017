/* Built by the dlopen test as a shared library (-g -fPIC -shared). plugin_leak() leaks one 48-byte block. */
#include <stdlib.h>
#include <string.h>

static void *volatile sink;

__attribute__((noinline)) void plugin_leak(void) {
    char *p = malloc(48); /* PLUGIN_ALLOC_LINE */
    memset(p, 0x5a, 48);
    sink = p;
}
