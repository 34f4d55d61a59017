/* Reference backtraces for tests/unwind.rs, taken with libgcc's _Unwind_Backtrace.
 *
 * ref_backtrace(id) prints `ref <id> <ip> <ip> ...` (hex, innermost first) starting at the frame of its caller:
 * the first ip is the return address into the function that called ref_backtrace, so the frames of
 * ref_backtrace and of libgcc itself are dropped deterministically. An ip that is an interrupted instruction
 * rather than a return address (the frame below a signal frame: _Unwind_GetIPInfo's ip_before_insn) is printed
 * with a trailing `*`. mark_block(id, p) prints `block <id> <addr>` for the block the test must find in the dump.
 *
 * Output goes through one write(2) per line, never stdio: both are called from signal handlers and from
 * several threads at once, and a line must not be split. Nothing here allocates. */
#ifndef HEAPLEDGER_UNWIND_REF_H
#define HEAPLEDGER_UNWIND_REF_H

#include <stdint.h>
#include <string.h>
#include <unistd.h>
#include <unwind.h>

#define NOINLINE __attribute__((noinline, noclone))
/* After a call, this keeps the call out of tail position, so every frame of the chain stays on the stack. */
#define KEEP_FRAME() __asm__ volatile("" ::: "memory")

#define REF_MAX 300

struct ref_walk {
  uintptr_t stop;
  int started;
  int overflow;
  int n;
  uintptr_t ip[REF_MAX];
  int interrupted[REF_MAX];
};

static _Unwind_Reason_Code ref_frame(struct _Unwind_Context *ctx, void *arg) {
  struct ref_walk *w = (struct ref_walk *)arg;
  int before = 0;
  uintptr_t ip = _Unwind_GetIPInfo(ctx, &before);
  if (!w->started) {
    if (ip != w->stop || before)
      return _URC_NO_REASON;
    w->started = 1;
  }
  if (w->n == REF_MAX) {
    w->overflow = 1;
    return _URC_END_OF_STACK;
  }
  w->ip[w->n] = ip;
  w->interrupted[w->n] = before;
  w->n++;
  return _URC_NO_REASON;
}

static char *ref_put_str(char *o, const char *s) {
  while (*s)
    *o++ = *s++;
  return o;
}

static char *ref_put_hex(char *o, uintptr_t v) {
  char tmp[16];
  int k = 0;
  do {
    tmp[k++] = "0123456789abcdef"[v & 15];
    v >>= 4;
  } while (v);
  while (k)
    *o++ = tmp[--k];
  return o;
}

static char *ref_put_dec(char *o, unsigned long v) {
  char tmp[24];
  int k = 0;
  do {
    tmp[k++] = (char)('0' + v % 10);
    v /= 10;
  } while (v);
  while (k)
    *o++ = tmp[--k];
  return o;
}

static void ref_write(const char *buf, size_t len) {
  while (len > 0) {
    ssize_t w = write(1, buf, len);
    if (w <= 0)
      return;
    buf += w;
    len -= (size_t)w;
  }
}

NOINLINE void ref_backtrace(unsigned long id) {
  struct ref_walk w;
  memset(&w, 0, sizeof w);
  w.stop = (uintptr_t)__builtin_return_address(0);
  _Unwind_Backtrace(ref_frame, &w);
  char line[REF_MAX * 19 + 64];
  char *o = ref_put_str(line, "ref ");
  o = ref_put_dec(o, id);
  if (!w.started)
    o = ref_put_str(o, " caller-not-found");
  if (w.overflow)
    o = ref_put_str(o, " overflow");
  for (int i = 0; i < w.n; i++) {
    *o++ = ' ';
    o = ref_put_hex(o, w.ip[i]);
    if (w.interrupted[i])
      *o++ = '*';
  }
  *o++ = '\n';
  ref_write(line, (size_t)(o - line));
  KEEP_FRAME();
}

void mark_block(unsigned long id, const void *p) {
  char line[64];
  char *o = ref_put_str(line, "block ");
  o = ref_put_dec(o, id);
  *o++ = ' ';
  o = ref_put_hex(o, (uintptr_t)p);
  *o++ = '\n';
  ref_write(line, (size_t)(o - line));
}

#endif
