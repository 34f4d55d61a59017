/* dl_cycle A B N: N times, dlopen()s a plugin (A for the first half, B for the second), calls its
 * plugin_frame_leak() (one 4321-byte leak each) and dlclose()s it. Every dlclose() makes the tracer drop its cached
 * unwind rules; N past a few hundred wraps the generation counter their tags carry. Exit codes: 3 dlopen failed,
 * 4 dlsym failed, 5 dlclose failed. */
#include <dlfcn.h>
#include <stdlib.h>

int main(int argc, char **argv) {
    if (argc != 4)
        return 2;
    int n = atoi(argv[3]);
    for (int i = 0; i < n; i++) {
        void *h = dlopen(i < n / 2 ? argv[1] : argv[2], RTLD_NOW | RTLD_LOCAL);
        if (h == NULL)
            return 3;
        void (*leak)(void) = (void (*)(void))dlsym(h, "plugin_frame_leak");
        if (leak == NULL)
            return 4;
        leak(); /* CYCLE_CALL_LINE */
        if (dlclose(h) != 0)
            return 5;
    }
    return 0;
}
