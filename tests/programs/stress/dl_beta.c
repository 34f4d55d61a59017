/* Loaded by dl_reuse after dl_alpha was unloaded (the loader typically maps it at the same address). Its code
 * is different: a leak of dl_alpha's must not be attributed to a function of this library, nor this library's
 * 1234-byte leak to dl_alpha. */
#include <stdlib.h>
static void *volatile keep;
__attribute__((noinline)) void beta_something_else(void) {
    keep = malloc(10);
    free(keep);
    keep = malloc(1234);
}
void entry(void) { beta_something_else(); }
/* 4 KiB of code never run, so that this library's executable range covers the other's return addresses: the
 * symbolizer must then tell the two apart by when each was mapped, not by where. */
void beta_padding(void) { __asm__ volatile(".skip 4096, 0xcc"); }
