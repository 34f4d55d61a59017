/* dlopen, use and dlclose each library named on the command line, one after the other (the loader usually maps
 * the next one where the previous one was). stdout: one line per library and "ok". */
#include <dlfcn.h>
#include <stdio.h>

int main(int argc, char **argv) {
    for (int i = 1; i < argc; i++) {
        void *h = dlopen(argv[i], RTLD_NOW | RTLD_LOCAL);
        if (!h) {
            printf("dlopen: %s\n", dlerror());
            return 1;
        }
        void (*e)(void) = (void (*)(void))dlsym(h, "entry");
        if (!e) return 1;
        e();
        dlclose(h);
        printf("library %d done\n", i);
    }
    printf("ok\n");
    return 0;
}
