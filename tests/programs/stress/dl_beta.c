/* Loaded by dl_reuse after dl_alpha was unloaded (the loader typically maps it at the same address). Its code
 * is different: a leak of dl_alpha's must not be attributed to a function of this library. */
#include <stdlib.h>
static void *volatile keep;
__attribute__((noinline)) void beta_something_else(void) { keep = malloc(10); free(keep); }
void entry(void) { beta_something_else(); }
