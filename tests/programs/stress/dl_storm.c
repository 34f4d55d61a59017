/* dlopen and dlclose of many distinct libraries, while another thread allocates.
 *
 *   dl_storm DIR N [CYCLES]
 *
 * Opens DIR/libp<i>.so for i in 0..N (RTLD_NOW | RTLD_LOCAL), calls its plugin_work(i), closes it, and frees
 * the block plugin_work returned after the library is gone. CYCLES (default 1) repeats the whole sequence.
 * stdout: "opened=N" "ok" (deterministic). Each library's constructor leaks 5000 bytes: N * CYCLES leaks. */
#include <dlfcn.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>

static atomic_int stop;

static void *worker(void *arg) {
    (void)arg;
    void *keep[32] = {0};
    unsigned s = 17;
    while (!atomic_load(&stop)) {
        s = s * 1103515245u + 12345u;
        int k = (s >> 16) & 31;
        free(keep[k]);
        keep[k] = malloc(1 + (s >> 4) % 700);
    }
    for (int k = 0; k < 32; k++) free(keep[k]);
    return NULL;
}

int main(int argc, char **argv) {
    if (argc < 3) return 2;
    int n = atoi(argv[2]);
    int cycles = argc > 3 ? atoi(argv[3]) : 1;
    pthread_t th;
    pthread_create(&th, NULL, worker, NULL);
    long opened = 0;
    char path[4096];
    for (int c = 0; c < cycles; c++) {
        for (int i = 0; i < n; i++) {
            snprintf(path, sizeof path, "%s/libp%d.so", argv[1], i);
            void *h = dlopen(path, RTLD_NOW | RTLD_LOCAL);
            if (!h) {
                printf("dlopen %s: %s\n", path, dlerror());
                return 1;
            }
            void *(*work)(int) = (void *(*)(int))dlsym(h, "plugin_work");
            if (!work) {
                printf("dlsym: %s\n", dlerror());
                return 1;
            }
            void *r = work(i);
            if (dlclose(h) != 0) {
                printf("dlclose: %s\n", dlerror());
                return 1;
            }
            free(r);
            opened++;
        }
    }
    atomic_store(&stop, 1);
    pthread_join(th, NULL);
    printf("opened=%ld\nok\n", opened);
    return 0;
}
