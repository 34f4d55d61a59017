/* Programs that close fd 2, or whose stderr is a pipe nobody reads any more.
 *
 *   stderr_games closed           closes 0, 1 and 2 and keeps working (allocations, a file written); the
 *                                 result goes to the file named by argv[2]
 *   stderr_games reuse FILE       closes fd 2, then opens FILE, which gets descriptor 2: the program's data
 *                                 file now sits where stderr was. Writes its data there and exits 0.
 *   stderr_games quiet            writes nothing to stderr; the test runs it with stderr = a pipe whose read
 *                                 end is closed. stdout: "quiet ok".
 *
 * Nothing the tracer writes may land in the program's file, and nothing may kill the program with SIGPIPE. */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static unsigned long work(void) {
    unsigned long sum = 0;
    for (int i = 0; i < 5000; i++) {
        char *p = malloc(1 + (size_t)(i % 300));
        p[0] = (char)i;
        sum += (unsigned char)p[0];
        free(p);
    }
    return sum;
}

int main(int argc, char **argv) {
    const char *mode = argc > 1 ? argv[1] : "quiet";
    if (strcmp(mode, "closed") == 0 && argc > 2) {
        close(0);
        close(1);
        close(2);
        unsigned long s = work();
        int fd = open(argv[2], O_WRONLY | O_CREAT | O_TRUNC, 0644);
        if (fd < 0) return 3;
        char buf[64];
        int n = snprintf(buf, sizeof buf, "fd=%d sum=%lu\n", fd, s);
        if (write(fd, buf, (size_t)n) != n) return 4;
        return 0; /* fd left open: closed by exit, after the tracer's dump */
    }
    if (strcmp(mode, "reuse") == 0 && argc > 2) {
        close(2);
        int fd = open(argv[2], O_WRONLY | O_CREAT | O_TRUNC, 0644);
        if (fd != 2) return 3;
        unsigned long s = work();
        char buf[64];
        int n = snprintf(buf, sizeof buf, "data sum=%lu\n", s);
        if (write(fd, buf, (size_t)n) != n) return 4;
        printf("reuse fd=%d\n", fd);
        return 0; /* the file stays open as fd 2 until the process ends */
    }
    unsigned long s = work();
    printf("quiet ok sum=%lu\n", s);
    return 0;
}
