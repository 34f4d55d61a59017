// C++ exceptions for tests/unwind.rs.
//
//   throw   the thrower takes a reference backtrace right before `throw`; the exception object's block
//           (allocated by __cxa_allocate_exception) is kept alive through an exception_ptr
//   dtor    a local object's destructor allocates while _Unwind_RaiseException's phase 2 unwinds its frame:
//           the destructor runs from the landing pad of the frame being unwound, and takes the reference there;
//           then the same in the next frame out, reached through _Unwind_Resume from the first landing pad
#include "ref.h"
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>

static volatile long sink;
static std::exception_ptr *kept_exception;
static void *keep[4];

struct Payload {
  char bytes[1234];
};

NOINLINE void thrower() {
  ref_backtrace(1);
  throw Payload();
}

struct Guard {
  unsigned long id;
  NOINLINE ~Guard() {
    ref_backtrace(id);
    void *p = malloc(4000 + id);
    KEEP_FRAME();
    mark_block(id, p);
    keep[id & 3] = p;
  }
};

NOINLINE void throw_int(int n) {
  if (n == 0)
    throw 42;
  throw_int(n - 1);
  KEEP_FRAME();
}

NOINLINE void unwound(int n) {
  Guard g{2};
  throw_int(n);
  KEEP_FRAME();
  sink += (long)g.id;
}

NOINLINE void chain(int n, void (*bottom)()) {
  long x = sink + n;
  if (n == 0)
    bottom();
  else
    chain(n - 1, bottom);
  KEEP_FRAME();
  sink = x;
}

static void do_throw() {
  thrower();
  KEEP_FRAME();
}

NOINLINE void unwound_outer(int n) {
  Guard g{3};
  unwound(n);
  KEEP_FRAME();
  sink += (long)g.id;
}

static void do_unwound() {
  unwound_outer(5);
  KEEP_FRAME();
}

int main(int argc, char **argv) {
  if (argc < 2)
    return 2;
  if (std::strcmp(argv[1], "throw") == 0) {
    try {
      chain(8, do_throw);
    } catch (Payload &p) {
      mark_block(1, &p);
      kept_exception = new std::exception_ptr(std::current_exception());
    }
  } else if (std::strcmp(argv[1], "dtor") == 0) {
    try {
      chain(8, do_unwound);
    } catch (int) {
    }
  } else {
    return 2;
  }
  std::printf("done\n");
  return 0;
}
