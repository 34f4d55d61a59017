/* exec of a setuid program from a traced process.
 *
 *   setuid_exec PROGRAM [drop]
 *
 * Forks a child that execs PROGRAM --help (a setuid-root binary such as /usr/bin/passwd). With "drop", the
 * child first becomes uid/gid 65534 (nobody), so the exec is a real privilege change: the loader runs the
 * program in secure-execution mode and ignores LD_PRELOAD (the program runs untraced, writes no dump). Run as
 * root without "drop", there is no privilege change and the program is traced like any other.
 *
 * The parent allocates before and after, and must be unaffected. stdout: the child's own output (passed
 * through), then "child_status=N" and "ok". */
#include <grp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

int main(int argc, char **argv) {
    if (argc < 2) return 2;
    int drop = argc > 2 && strcmp(argv[2], "drop") == 0;
    char *before = malloc(1111);
    strcpy(before, "before");
    fflush(stdout);
    pid_t p = fork();
    if (p == 0) {
        if (drop) {
            if (setgroups(0, NULL) != 0 || setgid(65534) != 0 || setuid(65534) != 0) _exit(120);
        }
        execl(argv[1], argv[1], "--help", (char *)NULL);
        _exit(127);
    }
    int st = 0;
    waitpid(p, &st, 0);
    char *after = malloc(2222);
    strcpy(after, before);
    free(before);
    printf("child_status=%d\nok\n", WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st));
    free(after);
    return 0;
}
