/* Loaded, used and dlclose'd first by dl_reuse: alpha_leak() leaks one 4321-byte block. */
#include <stdlib.h>
static void *volatile keep;
__attribute__((noinline)) void alpha_leak(void) { keep = malloc(4321); }
void entry(void) { alpha_leak(); }
/* 4 KiB of code never run, so that this library's executable range covers the other's return addresses: the
 * symbolizer must then tell the two apart by when each was mapped, not by where. */
void alpha_padding(void) { __asm__ volatile(".skip 4096, 0xcc"); }
