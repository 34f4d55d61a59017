/* Writes "hello from exit_code" on stdout and "a line on stderr" on stderr (with write(2)), leaks one 10-byte
 * block, and exits with the code given as argv[1] (default 0). */
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static void *volatile sink;

int main(int argc, char **argv) {
    sink = malloc(10);
    memset(sink, 0, 10);
    write(1, "hello from exit_code\n", 21);
    write(2, "a line on stderr\n", 17);
    return argc > 1 ? atoi(argv[1]) : 0;
}
