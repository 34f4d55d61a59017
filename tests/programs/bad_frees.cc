// Heap errors, one scenario per argv[1] ("none": no error, the C++ runtime's baseline). Each prints the pointer(s) involved on stdout as "name=<decimal>" lines
// (formatted on the stack and written with write(2): no stdio buffer on the heap), survives the error (the tracer
// must not pass a rejected free to the allocator), and prints "survived" before exiting 0.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <new>
#include <unistd.h>

static void say(const char *name, const void *p) {
    char buf[64];
    int n = snprintf(buf, sizeof buf, "%s=%lu\n", name, static_cast<unsigned long>(reinterpret_cast<uintptr_t>(p)));
    write(1, buf, static_cast<size_t>(n));
}

// Opaque to the optimiser and to -Wfree-nonheap-object: the bad pointers reach free() through this.
static void *volatile launder_slot;
static void *launder(void *p) {
    launder_slot = p;
    return launder_slot;
}

static char global_buffer[32];

// ---- double free ----
extern "C" __attribute__((noinline)) void *alloc_victim() {
    return malloc(64); /* DF_ALLOC_LINE */
}
extern "C" __attribute__((noinline)) void first_release(void *p) {
    free(p); /* DF_FIRST_LINE */
}
extern "C" __attribute__((noinline)) void second_release(void *p) {
    free(launder(p)); /* DF_SECOND_LINE */
}

static void s_double_free() {
    void *p = alloc_victim(); /* DF_CALL_ALLOC */
    say("addr", p);
    first_release(p);  /* DF_CALL_FIRST */
    second_release(p); /* DF_CALL_SECOND */
}

// ---- invalid frees ----
extern "C" __attribute__((noinline)) void free_stack_array() {
    char on_stack[16] = {0};
    say("addr", on_stack);
    free(launder(on_stack)); /* STACK_FREE_LINE */
}

extern "C" __attribute__((noinline)) void free_global() {
    say("addr", global_buffer + 8);
    free(launder(global_buffer + 8)); /* STATIC_FREE_LINE */
}

extern "C" __attribute__((noinline)) char *alloc_for_interior() {
    return static_cast<char *>(malloc(100)); /* INTERIOR_ALLOC_LINE */
}
extern "C" __attribute__((noinline)) void free_interior(char *p) {
    free(launder(p + 10)); /* INTERIOR_FREE_LINE */
}

static void s_invalid_stack() { free_stack_array(); }
static void s_invalid_static() { free_global(); }
static void s_interior() {
    char *p = alloc_for_interior();
    say("block", p);
    say("addr", p + 10);
    free_interior(p);
    free(p); // the block itself is still live and is freed properly
}

// ---- mismatched ----
extern "C" __attribute__((noinline)) void new_then_free() {
    char *p = new char; /* NEW_FREE_ALLOC_LINE */
    say("addr", p);
    free(launder(p)); /* NEW_FREE_LINE */
}
extern "C" __attribute__((noinline)) void malloc_then_delete() {
    char *p = static_cast<char *>(malloc(12)); /* MALLOC_DELETE_ALLOC_LINE */
    memset(p, 0, 12);
    say("addr", p);
    delete static_cast<char *>(launder(p)); /* MALLOC_DELETE_LINE */
}
extern "C" __attribute__((noinline)) void new_array_then_delete() {
    char *p = new char[20]; /* NEWARR_DELETE_ALLOC_LINE */
    say("addr", p);
    delete static_cast<char *>(launder(p)); /* NEWARR_DELETE_LINE */
}
extern "C" __attribute__((noinline)) void new_then_delete_array() {
    char *p = new char; /* NEW_DELETEARR_ALLOC_LINE */
    say("addr", p);
    delete[] static_cast<char *>(launder(p)); /* NEW_DELETEARR_LINE */
}

static void s_mismatched() {
    new_then_free();
    malloc_then_delete();
    new_array_then_delete();
    new_then_delete_array();
}

// ---- a stale pointer after realloc moved the block ----
extern "C" __attribute__((noinline)) void realloc_moves() {
    char *p = static_cast<char *>(malloc(10)); /* RA_ALLOC_LINE */
    memset(p, 1, 10);
    char *fence = static_cast<char *>(malloc(10)); // keeps realloc from growing p in place
    char *q = static_cast<char *>(realloc(p, 100000)); /* RA_REALLOC_LINE */
    say("addr", p);
    say("moved", q);
    free(launder(p)); /* RA_STALE_FREE_LINE */
    free(q);
    free(fence);
}

struct Scenario {
    const char *name;
    void (*run)();
};

static void s_none() {}

static const Scenario scenarios[] = {
    {"none", s_none},
    {"double_free", s_double_free}, {"invalid_stack", s_invalid_stack}, {"invalid_static", s_invalid_static},
    {"interior", s_interior},       {"mismatched", s_mismatched},           {"free_after_realloc", realloc_moves},
};

int main(int argc, char **argv) {
    if (argc != 2)
        return 2;
    for (const Scenario &s : scenarios) {
        if (strcmp(argv[1], s.name) == 0) {
            s.run();
            write(1, "survived\n", 9);
            return 0;
        }
    }
    return 2;
}
