/* Deep mutual recursion for tests/unwind.rs: the innermost function takes a reference backtrace and allocates a
 * marked block. The three functions have different frame shapes (rsp-based with saved registers, rbp-based
 * because of a variable-length array, rsp-based with a large frame) so each kind of CFA rule is exercised.
 *
 *   recurse N      one chain of N levels
 *   threads N      four threads, each a chain of N levels, at once
 *   repeat         60 chains one after the other, of depths and entry functions that vary and repeat, each with
 *                  its own marked block (ids 100..159): the tracer's memory of previous walks (src/linux/stack.rs,
 *                  memos) takes over most of each walk, and an identical stack reuses a remembered id
 *   again          8 chains run 6 times each (ids 200..247), alternately below outer_x and outer_y: a walk that
 *                  starts where a remembered whole walk started (same hook, same stack pointer) must still tell
 *                  the two callers apart by the words above (src/linux/stack.rs, whole-walk cache)
 *   drap           a chain entered through a function whose CFA is a DWARF expression (stack realignment with
 *                  a dynamic realignment pointer, which GCC emits for an over-aligned local plus a VLA plus
 *                  arguments passed on the stack) */
#include "ref.h"
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>

static void *keep[64];
static volatile long sink;

NOINLINE void *leaf(unsigned long id) {
  ref_backtrace(id);
  void *p = malloc(4000 + id);
  KEEP_FRAME();
  mark_block(id, p);
  return p;
}

NOINLINE void *rec_b(int n, unsigned long id);
NOINLINE void *rec_c(int n, unsigned long id);

NOINLINE void *rec_a(int n, unsigned long id) {
  long x = sink + n;
  void *p = n == 0 ? leaf(id) : rec_b(n - 1, id);
  KEEP_FRAME();
  sink = x;
  return p;
}

NOINLINE void *rec_b(int n, unsigned long id) {
  /* A VLA makes GCC address this frame from rbp even with -fomit-frame-pointer. */
  char vla[(n & 7) + 1];
  vla[0] = (char)n;
  __asm__ volatile("" : : "r"(vla) : "memory");
  void *p = n == 0 ? leaf(id) : rec_c(n - 1, id);
  KEEP_FRAME();
  sink += vla[0];
  return p;
}

NOINLINE void *rec_c(int n, unsigned long id) {
  volatile char big[300];
  big[n % 300] = 1;
  void *p = n == 0 ? leaf(id) : rec_a(n - 1, id);
  KEEP_FRAME();
  sink += big[n % 300];
  return p;
}

struct job {
  int depth;
  unsigned long id;
  void *p;
};

static void *thread_main(void *arg) {
  struct job *j = (struct job *)arg;
  j->p = rec_a(j->depth, j->id);
  KEEP_FRAME();
  return NULL;
}

/* Two callers with the same frame shape: a chain below either sits at the same stack addresses with the same
 * return addresses, so only the words above it tell the two stacks apart (what a remembered walk must check). */
static volatile long calls_x, calls_y;

NOINLINE void *outer_x(void *(*entry)(int, unsigned long), int d, unsigned long id) {
  void *p = entry(d, id);
  KEEP_FRAME();
  calls_x++;
  return p;
}

NOINLINE void *outer_y(void *(*entry)(int, unsigned long), int d, unsigned long id) {
  void *p = entry(d, id);
  KEEP_FRAME();
  calls_y += 2;
  return p;
}

NOINLINE int drap(int a, int b, int c, int d, int e, int f, int s1, int s2) {
  int aligned[16] __attribute__((aligned(64)));
  int n = (s1 + s2) & 15;
  int vla[n + 1];
  memset(aligned, s1, sizeof aligned);
  vla[0] = s2;
  __asm__ volatile("" : : "r"(aligned), "r"(vla) : "memory");
  keep[0] = rec_a(s1, 30);
  KEEP_FRAME();
  return aligned[3] + vla[0] + a + b + c + d + e + f;
}

int main(int argc, char **argv) {
  if (argc < 2)
    return 2;
  int depth = argc > 2 ? atoi(argv[2]) : 10;
  if (strcmp(argv[1], "recurse") == 0) {
    keep[0] = rec_a(depth, 1);
  } else if (strcmp(argv[1], "threads") == 0) {
    pthread_t t[4];
    struct job jobs[4];
    for (int i = 0; i < 4; i++) {
      jobs[i].depth = depth + i;
      jobs[i].id = 10 + (unsigned long)i;
      if (pthread_create(&t[i], NULL, thread_main, &jobs[i]) != 0)
        return 3;
    }
    for (int i = 0; i < 4; i++) {
      pthread_join(t[i], NULL);
      keep[1 + i] = jobs[i].p;
    }
  } else if (strcmp(argv[1], "repeat") == 0) {
    /* Depths stay within what a memo holds (36 levels with main and libc's start-up frames). */
    /* 30 distinct chains, each run twice (k and k + 30): deeper and shallower than the one before, below
     * outer_x and outer_y in turn (k + 30 has the other parity: the same chain below the other caller). */
    for (int k = 0; k < 60; k++) {
      int d = 3 + ((k % 30) * 7) % 23;
      unsigned long id = 100 + (unsigned long)k;
      void *(*entry)(int, unsigned long) = (k % 30) / 10 == 0 ? rec_a : (k % 30) / 10 == 1 ? rec_b : rec_c;
      keep[k] = (k & 1 ? outer_x : outer_y)(entry, d, id);
    }
  } else if (strcmp(argv[1], "again") == 0) {
    static void *kept[48];
    for (int round = 0; round < 6; round++) {
      for (int c = 0; c < 8; c++) {
        unsigned long id = 200 + (unsigned long)(round * 8 + c);
        void *(*entry)(int, unsigned long) = c % 3 == 0 ? rec_a : c % 3 == 1 ? rec_b : rec_c;
        /* Rounds 0-2 below one caller, then the other for chains 0-3 and the same for 4-7, then alternating. */
        int x = round < 3 ? 1 : round < 5 ? c < 4 : (round + c) & 1;
        kept[round * 8 + c] = (x ? outer_x : outer_y)(entry, 4 + c, id);
      }
    }
    sink += kept[0] != kept[47];
  } else if (strcmp(argv[1], "drap") == 0) {
    sink = drap(1, 2, 3, 4, 5, 6, depth, 7);
  } else {
    return 2;
  }
  KEEP_FRAME();
  printf("done\n");
  return 0;
}
