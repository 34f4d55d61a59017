/* Allocations in signal handlers for tests/unwind.rs: the handler takes a reference backtrace and allocates a
 * marked block, so both stacks go through the kernel's signal frame (glibc's __restore_rt) into the interrupted
 * code.
 *
 *   raise      raise(SIGUSR1) at the bottom of a chain: interrupted inside libc, at a syscall's return
 *   fault      stores to a read-only page from a function with a frame and from a leaf: the SIGSEGV handler
 *              allocates, makes the page writable and returns, so the store is retried (the interrupted pc is
 *              the faulting instruction itself, not a return address)
 *   prof N     SIGPROF every 1 ms of CPU time while a recursion spins; each of the first N ticks allocates, so
 *              the interrupted pc is wherever the timer hit (prologues, epilogues, loop bodies) */
#define _GNU_SOURCE
#include "ref.h"
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/time.h>

static void *keep[64];
static volatile long sink;
static char *pages;
static long page_size;
static volatile sig_atomic_t ticks;
static int max_ticks;

static void on_usr1(int sig) {
  (void)sig;
  ref_backtrace(1);
  void *p = malloc(4001);
  KEEP_FRAME();
  mark_block(1, p);
  keep[0] = p;
}

static void on_segv(int sig, siginfo_t *si, void *uc) {
  (void)sig;
  (void)uc;
  char *page = (char *)((uintptr_t)si->si_addr & ~(uintptr_t)(page_size - 1));
  unsigned long id = page == pages ? 2 : 3;
  ref_backtrace(id);
  void *p = malloc(4000 + id);
  KEEP_FRAME();
  mark_block(id, p);
  keep[id] = p;
  if (page != pages && page != pages + page_size)
    abort();
  mprotect(page, (size_t)page_size, PROT_READ | PROT_WRITE);
}

static void on_prof(int sig) {
  (void)sig;
  int t = ticks;
  if (t >= max_ticks)
    return;
  unsigned long id = 100 + (unsigned long)t;
  ref_backtrace(id);
  void *p = malloc(4000 + id);
  KEEP_FRAME();
  mark_block(id, p);
  keep[t] = p;
  ticks = t + 1;
}

NOINLINE void chain(int n, void (*bottom)(void)) {
  long x = sink + n;
  if (n == 0)
    bottom();
  else
    chain(n - 1, bottom);
  KEEP_FRAME();
  sink = x;
}

static void do_raise(void) {
  raise(SIGUSR1);
  KEEP_FRAME();
}

/* A frame with saved registers and locals around the faulting store. */
NOINLINE long poke_framed(volatile char *p, int n) {
  volatile char local[200];
  local[n % 200] = (char)n;
  long a = sink, b = sink * 3;
  *p = (char)n;
  KEEP_FRAME();
  sink = a + b;
  return local[n % 200] + a * b;
}

/* No frame at all: the CFA is rsp + 8 at the faulting store. */
NOINLINE void poke_leaf(volatile char *p) { *p = 1; }

static void do_fault(void) {
  sink += poke_framed(pages, 5);
  KEEP_FRAME();
  poke_leaf(pages + page_size);
  KEEP_FRAME();
}

NOINLINE long spin(int n) {
  long acc = n;
  for (int i = 0; i < 3; i++)
    acc = acc * 31 + (i ^ n);
  if (n > 0) {
    acc += spin(n - 1);
    KEEP_FRAME();
  }
  return acc;
}

static void do_prof(void) {
  struct itimerval it = {{0, 1000}, {0, 1000}};
  setitimer(ITIMER_PROF, &it, NULL);
  while (ticks < max_ticks)
    sink += spin(20);
  struct itimerval off = {{0, 0}, {0, 0}};
  setitimer(ITIMER_PROF, &off, NULL);
}

int main(int argc, char **argv) {
  if (argc < 2)
    return 2;
  page_size = sysconf(_SC_PAGESIZE);
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sigemptyset(&sa.sa_mask);
  if (strcmp(argv[1], "raise") == 0) {
    sa.sa_handler = on_usr1;
    sigaction(SIGUSR1, &sa, NULL);
    chain(8, do_raise);
  } else if (strcmp(argv[1], "fault") == 0) {
    pages = (char *)mmap(NULL, (size_t)(2 * page_size), PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (pages == MAP_FAILED)
      return 3;
    sa.sa_sigaction = on_segv;
    sa.sa_flags = SA_SIGINFO;
    sigaction(SIGSEGV, &sa, NULL);
    chain(8, do_fault);
  } else if (strcmp(argv[1], "prof") == 0) {
    max_ticks = argc > 2 ? atoi(argv[2]) : 20;
    if (max_ticks > 64)
      return 2;
    sa.sa_handler = on_prof;
    sigaction(SIGPROF, &sa, NULL);
    chain(8, do_prof);
  } else {
    return 2;
  }
  printf("done\n");
  return 0;
}
