/* dl_cycle SYMBOL N A [B]: N times, dlopen()s a plugin (A for the first half of the cycles, B — default A — for the
 * second), calls its function SYMBOL (which leaks) and dlclose()s it. The leaks' allocating code is gone by exit,
 * and the dump must still let them be symbolized. Every dlclose() makes the tracer drop its cached unwind rules;
 * N past a few hundred wraps the generation counter their tags carry. Exit codes: 2 usage, 3 dlopen failed,
 * 4 dlsym failed, 5 dlclose failed. */
#include <dlfcn.h>
#include <stdlib.h>

int main(int argc, char **argv) {
    if (argc != 4 && argc != 5)
        return 2;
    int n = atoi(argv[2]);
    const char *second = argc == 5 ? argv[4] : argv[3];
    for (int i = 0; i < n; i++) {
        void *h = dlopen(i < n / 2 ? argv[3] : second, RTLD_NOW | RTLD_LOCAL);
        if (h == NULL)
            return 3;
        void (*leak)(void) = (void (*)(void))dlsym(h, argv[1]);
        if (leak == NULL)
            return 4;
        leak(); /* CYCLE_CALL_LINE */
        if (dlclose(h) != 0)
            return 5;
    }
    return 0;
}
