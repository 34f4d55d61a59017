/* Memory that libc allocates on the program's behalf, leaked on purpose: each allocation is made inside libc,
 * called from a use_* function of this file, so each leak's stack starts in libc and goes through that function.
 * argv[1]: a text file with at least one line; argv[2]: a directory holding exactly the entries "a" and "b".
 * No output through stdio (a stdout buffer would be one more block). */
#define _GNU_SOURCE
#include <dirent.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static void *volatile sink;

static void fail(const char *what) {
    write(2, "libc_alloc: ", 12);
    write(2, what, strlen(what));
    write(2, "\n", 1);
    exit(3);
}

__attribute__((noinline)) static void use_strdup(void) {
    char *s = strdup("heapledger"); /* STRDUP_LINE */
    if (s == NULL || strcmp(s, "heapledger") != 0)
        fail("strdup");
    sink = s;
}

__attribute__((noinline)) static void use_getline(const char *path) {
    FILE *f = fopen(path, "r");
    if (f == NULL)
        fail("fopen");
    char *line = NULL;
    size_t cap = 0;
    if (getline(&line, &cap, f) < 1) /* GETLINE_LINE */
        fail("getline");
    fclose(f);
    sink = line;
}

__attribute__((noinline)) static void use_asprintf(void) {
    char *s = NULL;
    if (asprintf(&s, "%d-%s", 42, "answer") != 9) /* ASPRINTF_LINE */
        fail("asprintf");
    sink = s;
}

__attribute__((noinline)) static void use_scandir(const char *dir) {
    struct dirent **list = NULL;
    int n = scandir(dir, &list, NULL, alphasort); /* SCANDIR_LINE */
    if (n != 4) /* ".", "..", "a", "b" */
        fail("scandir");
    sink = list;
}

__attribute__((noinline)) static void use_realpath(const char *dir) {
    char *p = realpath(dir, NULL); /* REALPATH_LINE */
    if (p == NULL || p[0] != '/')
        fail("realpath");
    sink = p;
}

__attribute__((noinline)) static void use_open_memstream(void) {
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    if (f == NULL)
        fail("open_memstream");
    fputs("in memory", f);
    fclose(f); /* MEMSTREAM_LINE */
    if (len != 9 || strcmp(buf, "in memory") != 0)
        fail("memstream contents");
    sink = buf;
}

int main(int argc, char **argv) {
    if (argc != 3)
        fail("usage: libc_alloc FILE DIR");
    use_strdup();
    use_getline(argv[1]);
    use_asprintf();
    use_scandir(argv[2]);
    use_realpath(argv[2]);
    use_open_memstream();
    return 0;
}
