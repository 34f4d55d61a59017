/* dlopen()s the plugin named by argv[1], calls plugin_leak() (which leaks 48 bytes), and dlclose()s it: the leak's
 * allocating code is gone by exit, and the dump must still let it be symbolized. Exit codes: 3 dlopen failed,
 * 4 dlsym failed, 5 dlclose failed. */
#include <dlfcn.h>
#include <stddef.h>

int main(int argc, char **argv) {
    if (argc != 2)
        return 2;
    void *h = dlopen(argv[1], RTLD_NOW | RTLD_LOCAL);
    if (h == NULL)
        return 3;
    void (*leak)(void) = (void (*)(void))dlsym(h, "plugin_leak");
    if (leak == NULL)
        return 4;
    leak(); /* DLOPEN_CALL_LINE */
    if (dlclose(h) != 0)
        return 5;
    return 0;
}
