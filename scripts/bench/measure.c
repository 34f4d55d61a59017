/* Timing wrapper for scripts/bench.sh.
 *
 *   measure RESULT_FILE TIMEOUT_SECONDS COMMAND [ARGS...]
 *
 * Runs COMMAND in its own process group and writes one line to RESULT_FILE:
 *
 *   <wall_seconds> <peak_rss_kib> <cpu_seconds> <status>
 *
 * wall_seconds: CLOCK_MONOTONIC from fork to the end of waitpid (ns resolution, unlike /usr/bin/time's 10 ms).
 * peak_rss_kib: ru_maxrss of RUSAGE_CHILDREN, i.e. the largest peak RSS of any single process in the waited-for
 *               tree (for heaptrack that is the larger of the program and heaptrack_interpret).
 * cpu_seconds:  user + system time of the whole waited-for tree.
 * status:       exit:N, signal:N, or timeout (the group got SIGKILL after TIMEOUT_SECONDS; 0 = no limit).
 * The exit code of measure itself is 0 when COMMAND exited 0, else 1.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static volatile sig_atomic_t timed_out;
static pid_t child;

static void on_alarm(int sig) {
    (void)sig;
    timed_out = 1;
    if (child > 0) kill(-child, SIGKILL);
}

int main(int argc, char **argv) {
    if (argc < 4) {
        fprintf(stderr, "usage: %s RESULT_FILE TIMEOUT_SECONDS COMMAND [ARGS...]\n", argv[0]);
        return 2;
    }
    const char *result = argv[1];
    unsigned timeout = (unsigned)strtoul(argv[2], NULL, 10);
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    child = fork();
    if (child < 0) {
        perror("measure: fork");
        return 2;
    }
    if (child == 0) {
        setpgid(0, 0);
        execvp(argv[3], argv + 3);
        fprintf(stderr, "measure: exec %s: %s\n", argv[3], strerror(errno));
        _exit(127);
    }
    setpgid(child, child); /* also in the parent: no race with the kill on timeout */
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_alarm;
    sigaction(SIGALRM, &sa, NULL);
    if (timeout) alarm(timeout);
    int st = 0;
    while (waitpid(child, &st, 0) < 0) {
        if (errno != EINTR) {
            perror("measure: waitpid");
            return 2;
        }
    }
    clock_gettime(CLOCK_MONOTONIC, &t1);
    alarm(0);
    struct rusage ru;
    getrusage(RUSAGE_CHILDREN, &ru);
    double wall = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
    double cpu = (double)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) +
                 (double)(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
    char status[32];
    int ok = 0;
    if (timed_out) {
        snprintf(status, sizeof status, "timeout");
    } else if (WIFEXITED(st)) {
        snprintf(status, sizeof status, "exit:%d", WEXITSTATUS(st));
        ok = WEXITSTATUS(st) == 0;
    } else if (WIFSIGNALED(st)) {
        snprintf(status, sizeof status, "signal:%d", WTERMSIG(st));
    } else {
        snprintf(status, sizeof status, "unknown");
    }
    FILE *f = fopen(result, "w");
    if (!f) {
        perror("measure: result file");
        return 2;
    }
    fprintf(f, "%.6f %ld %.3f %s\n", wall, ru.ru_maxrss, cpu, status);
    fclose(f);
    return ok ? 0 : 1;
}
