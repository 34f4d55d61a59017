/* Ways for a program to end that run no exit handler, for tests/watch.rs (the end watcher, src/linux/watch.rs).
 *
 *   ending MODE
 *
 * Every mode first leaves five 4321-byte blocks live. Then:
 *   exit          returns from main (the ordinary path: one dump, from the library's destructor)
 *   exit_group    the raw exit_group system call with status 3 (what Go's runtime does)
 *   sigkill       prints "ready", then waits for SIGKILL on stdin's end (the test kills it)
 *   exec          execv of argv[2] (the exec hook stops the watcher first)
 *   raw_exec      the raw execve system call of argv[2] (the watcher notices by itself)
 *   fork          a child leaves two 777-byte blocks and ends with a raw exit_group; the parent waits for it and
 *                 returns from main
 *   vfork         a vfork child execs argv[2]; the parent then ends with a raw exit_group (status 4)
 *   leak2         leaves two 999-byte blocks and returns (the program the exec modes run) */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

static void *volatile keep[8];

static void leave(int n, size_t size) {
  for (int i = 0; i < n; i++) keep[i] = malloc(size);
}

int main(int argc, char **argv) {
  if (argc < 2) return 2;
  const char *mode = argv[1];
  if (strcmp(mode, "leak2") == 0) {
    leave(2, 999);
    printf("leak2 done\n");
    return 0;
  }
  leave(5, 4321);
  fflush(stdout);
  if (strcmp(mode, "exit") == 0) {
    printf("exit\n");
    return 0;
  }
  if (strcmp(mode, "exit_group") == 0) {
    syscall(SYS_exit_group, 3);
  }
  if (strcmp(mode, "sigkill") == 0) {
    printf("ready\n");
    fflush(stdout);
    char c;
    while (read(0, &c, 1) > 0) {
    }
    return 0;
  }
  if (strcmp(mode, "exec") == 0 && argc > 2) {
    char *args[] = {argv[2], "leak2", NULL};
    execv(argv[2], args);
    return 5;
  }
  if (strcmp(mode, "raw_exec") == 0 && argc > 2) {
    char *args[] = {argv[2], "leak2", NULL};
    extern char **environ;
    syscall(SYS_execve, argv[2], args, environ);
    return 5;
  }
  if (strcmp(mode, "fork") == 0) {
    pid_t pid = fork();
    if (pid == 0) {
      leave(2, 777);
      syscall(SYS_exit_group, 0);
    }
    int status = 0;
    waitpid(pid, &status, 0);
    printf("child status %d\n", WEXITSTATUS(status));
    return 0;
  }
  if (strcmp(mode, "vfork") == 0 && argc > 2) {
    pid_t pid = vfork();
    if (pid == 0) {
      char *args[] = {argv[2], "leak2", NULL};
      execv(argv[2], args);
      _exit(127);
    }
    int status = 0;
    waitpid(pid, &status, 0);
    printf("vfork child status %d\n", WEXITSTATUS(status));
    fflush(stdout);
    syscall(SYS_exit_group, 4);
  }
  return 2;
}
