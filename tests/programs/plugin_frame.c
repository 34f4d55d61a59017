/* Built twice by the dlopen tests as a shared library (-O2 -fomit-frame-pointer), with two FRAME sizes: the same
 * code at the same offsets, but a different unwind rule (CFA = rsp + FRAME + ...) at the return address of
 * plugin_frame_leak's call to malloc. A rule cached for one build and applied to the other unwinds into garbage.
 * plugin_frame_leak() leaks one 4321-byte block. */
#include <stdlib.h>

static void *volatile sink;

__attribute__((noinline)) void plugin_frame_leak(void) {
    volatile char pad[FRAME];
    pad[0] = 1;
    pad[FRAME - 1] = 2;
    sink = malloc(4321);
    pad[1] = pad[0];
}
