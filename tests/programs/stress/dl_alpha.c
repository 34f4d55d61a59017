/* Loaded, used and dlclose'd first by dl_reuse: alpha_leak() leaks one 4321-byte block. */
#include <stdlib.h>
static void *volatile keep;
__attribute__((noinline)) void alpha_leak(void) { keep = malloc(4321); }
void entry(void) { alpha_leak(); }
