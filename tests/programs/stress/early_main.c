/* Uses early_lib (a library whose constructor allocates before the tracer's constructor runs).
 *
 *   early_main linked   built with -learly_lib: the library is a DT_NEEDED dependency
 *   early_main dlsym    built without it: the library is preloaded (LD_PRELOAD order chosen by the test) and
 *                       found with dlsym
 * stdout: the library's report, then "ok". */
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifdef LINKED
extern void *early_for_main;
extern int early_report(void);
#endif

int main(int argc, char **argv) {
    (void)argc;
    (void)argv;
    void **for_main;
    int (*report)(void);
#ifdef LINKED
    for_main = &early_for_main;
    report = early_report;
#else
    for_main = dlsym(RTLD_DEFAULT, "early_for_main");
    report = (int (*)(void))dlsym(RTLD_DEFAULT, "early_report");
    if (!for_main || !report) {
        printf("early_lib not loaded\n");
        return 1;
    }
#endif
    report();
    free(*for_main);
    *for_main = NULL;
    char *mine = malloc(64);
    strcpy(mine, "main");
    free(mine);
    printf("ok\n");
    return 0;
}
