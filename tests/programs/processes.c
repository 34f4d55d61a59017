/* Process events under the tracer, one scenario per argv[1]:
 *   fork       parent keeps 100 bytes, then forks; the child frees them, leaks 200 and exits; the parent waits and
 *              leaks 300 more. Two dumps: child live [200], parent live [100, 300].
 *   exec PROG  leaks 40 bytes, then execs PROG with the argument "exec-child"; nothing of this image survives.
 *   _exit      the child leaks 77 bytes and calls _exit(3); the parent checks the status and leaks 88.
 *   _Exit      the same with _Exit(4).
 *   vfork      the parent leaks 55 bytes; a vfork child calls _exit(0) at once (no dump of its own, and the
 *              parent's ledger untouched); the parent then frees nothing and exits.
 *   spawn      leaks 123 bytes, then runs system("exit 3"), popen("echo hi") and posix_spawnp("true"): glibc starts
 *              these children with clone(CLONE_VM|CLONE_VFORK) and exec; each exec'd program writes its own dump.
 *   leak       (used as the exec target) leaks 30 bytes and exits.
 * Each process prints "pid=<pid>" on stdout with write(2) (no stdio buffer on the heap). */
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static void *volatile sink;

static void say_pid(const char *who) {
    char buf[64];
    int n = snprintf(buf, sizeof buf, "%s=%d\n", who, (int)getpid());
    write(1, buf, (size_t)n);
}

static int wait_for(pid_t pid) {
    int status = 0;
    if (waitpid(pid, &status, 0) != pid)
        exit(10);
    return status;
}

static int s_fork(void) {
    char *kept = malloc(100);
    memset(kept, 1, 100);
    pid_t pid = fork();
    if (pid < 0)
        return 11;
    if (pid == 0) {
        say_pid("child");
        free(kept);
        sink = malloc(200);
        exit(0);
    }
    say_pid("parent");
    int status = wait_for(pid);
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
        return 12;
    sink = malloc(300);
    sink = kept;
    return 0;
}

static int s_exec(const char *prog) {
    say_pid("before_exec");
    sink = malloc(40);
    execl(prog, prog, "leak", (char *)NULL);
    return 13;
}

static int s_underscore_exit(int upper) {
    pid_t pid = fork();
    if (pid < 0)
        return 11;
    if (pid == 0) {
        say_pid("child");
        sink = malloc(77);
        if (upper)
            _Exit(4);
        _exit(3);
    }
    say_pid("parent");
    int status = wait_for(pid);
    if (!WIFEXITED(status) || WEXITSTATUS(status) != (upper ? 4 : 3))
        return 12;
    sink = malloc(88);
    return 0;
}

static int s_vfork(void) {
    sink = malloc(55);
    say_pid("parent");
    pid_t pid = vfork();
    if (pid < 0)
        return 11;
    if (pid == 0)
        _exit(0);
    int status = wait_for(pid);
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
        return 12;
    return 0;
}

extern char **environ;

static int s_spawn(void) {
    say_pid("parent");
    sink = malloc(123);
    int status = system("exit 3");
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 3)
        return 14;
    FILE *f = popen("echo hi", "r");
    if (f == NULL)
        return 15;
    char line[16] = {0};
    if (fgets(line, sizeof line, f) == NULL || strcmp(line, "hi\n") != 0)
        return 16;
    if (pclose(f) != 0)
        return 17;
    pid_t pid;
    char *argv[] = {"true", NULL};
    if (posix_spawnp(&pid, "true", NULL, NULL, argv, environ) != 0)
        return 18;
    status = wait_for(pid);
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
        return 19;
    return 0;
}

int main(int argc, char **argv) {
    if (argc < 2)
        return 2;
    if (strcmp(argv[1], "fork") == 0)
        return s_fork();
    if (strcmp(argv[1], "exec") == 0 && argc == 3)
        return s_exec(argv[2]);
    if (strcmp(argv[1], "_exit") == 0)
        return s_underscore_exit(0);
    if (strcmp(argv[1], "_Exit") == 0)
        return s_underscore_exit(1);
    if (strcmp(argv[1], "vfork") == 0)
        return s_vfork();
    if (strcmp(argv[1], "spawn") == 0)
        return s_spawn();
    if (strcmp(argv[1], "leak") == 0) {
        say_pid("leak");
        sink = malloc(30);
        return 0;
    }
    return 2;
}
