/* A make-style parent: runs each of its arguments after the first as a child command line (the program in
 * argv[1] with that one argument), the way make runs recipes: fork, exec, wait; exits non-zero if a child
 * failed. It leaks nothing itself. */
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

int main(int argc, char **argv) {
    if (argc < 3)
        return 64;
    int failed = 0;
    for (int i = 2; i < argc; i++) {
        pid_t pid = fork();
        if (pid < 0)
            return 65;
        if (pid == 0) {
            execl(argv[1], argv[1], argv[i], (char *)NULL);
            _exit(127);
        }
        int status = 0;
        if (waitpid(pid, &status, 0) != pid || !WIFEXITED(status) || WEXITSTATUS(status) != 0)
            failed = 1;
    }
    return failed;
}
