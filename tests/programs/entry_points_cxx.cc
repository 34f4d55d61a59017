// One scenario per C++ allocation operator, chosen by argv[1]; built with -std=c++17 -fsized-deallocation.
// Each scenario checks the operator's own contract and exits non-zero if it is broken; the test checks the dump.
// `none` allocates nothing: its dump is the C++ runtime's own baseline (libstdc++'s emergency exception pool),
// which the test adds to every scenario's expected figures. `throw` throws and catches one std::bad_alloc: libstdc++
// allocates each exception object on the heap (__cxa_allocate_exception), and the test uses its size for the
// scenarios in which a failing operator new throws. `oracle` runs the scenarios that throw nothing, for Valgrind
// (whose replacement nothrow operators return NULL without throwing). No iostreams: nothing else touches the heap.
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <new>
#include <unistd.h>

static void fail(const char *what) {
    write(2, "entry_points_cxx: ", 18);
    write(2, what, strlen(what));
    write(2, "\n", 1);
    exit(3);
}

#define CHECK(cond)                                                                                                \
    do {                                                                                                           \
        if (!(cond))                                                                                               \
            fail(#cond);                                                                                           \
    } while (0)

struct Obj {
    char bytes[24];
};

struct alignas(64) Wide {
    char bytes[64];
};

static void *volatile sink;
static volatile size_t huge = SIZE_MAX / 2 + 1;

static void s_none() {}

static void s_throw() {
    try {
        throw std::bad_alloc();
    } catch (const std::bad_alloc &) {
        return;
    }
    fail("not caught");
}

static void s_new() {
    Obj *o = new Obj; // leaked: 24, new
    sink = o;
    Obj *freed = new Obj;
    delete freed;
}

static void s_new_array() {
    char *a = new char[100]; // leaked: 100, new[]
    sink = a;
    int *freed = new int[10];
    delete[] freed;
}

static void s_nothrow() {
    Obj *o = new (std::nothrow) Obj; // leaked: 24, new
    CHECK(o != nullptr);
    sink = o;
    char *a = new (std::nothrow) char[50]; // leaked: 50, new[]
    CHECK(a != nullptr);
    sink = a;
    char *none = new (std::nothrow) char[huge]; // fails quietly: nothing counted
    CHECK(none == nullptr);
    void *none2 = operator new(huge, std::nothrow);
    CHECK(none2 == nullptr);
}

static void s_sized_delete() {
    // With -fsized-deallocation these call operator delete(void*, size_t) and operator delete[](void*, size_t).
    Obj *o = new Obj;
    delete o;
    Obj *a = new Obj[3];
    delete[] a;
    ::operator delete(::operator new(40), 40);
}

static void s_aligned_new() {
    Wide *w = new Wide; // operator new(size_t, align_val_t)
    CHECK((reinterpret_cast<uintptr_t>(w) & 63) == 0);
    delete w; // operator delete(void*, size_t, align_val_t)
    Wide *arr = new Wide[2]; // operator new[](size_t, align_val_t): leaked, 128, new[]
    CHECK((reinterpret_cast<uintptr_t>(arr) & 63) == 0);
    sink = arr;
    void *p = ::operator new(32, std::align_val_t(128)); // leaked: 32, new
    CHECK((reinterpret_cast<uintptr_t>(p) & 127) == 0);
    sink = p;
    void *q = ::operator new(16, std::align_val_t(256), std::nothrow);
    CHECK(q != nullptr);
    CHECK((reinterpret_cast<uintptr_t>(q) & 255) == 0);
    ::operator delete(q, std::align_val_t(256));
}

static void s_bad_alloc() {
    int caught = 0;
    try {
        char *p = new char[huge];
        sink = p;
    } catch (const std::bad_alloc &) {
        caught++;
    }
    try {
        sink = ::operator new(huge);
    } catch (const std::bad_alloc &) {
        caught++;
    }
    CHECK(caught == 2);
    // The program goes on allocating normally afterwards.
    Obj *o = new Obj; // leaked: 24, new
    sink = o;
}

struct Scenario {
    const char *name;
    void (*run)();
    bool in_oracle;
};

static const Scenario scenarios[] = {
    {"none", s_none, true},
    {"throw", s_throw, false},
    {"new", s_new, true},
    {"new_array", s_new_array, true},
    {"nothrow", s_nothrow, false},
    {"sized_delete", s_sized_delete, true},
    {"aligned_new", s_aligned_new, true},
    {"bad_alloc", s_bad_alloc, false},
};

int main(int argc, char **argv) {
    if (argc != 2)
        fail("usage: entry_points_cxx SCENARIO|all|oracle");
    // Keeps libstdc++ linked (and its start-up allocation made) in every scenario, `none` included.
    sink = reinterpret_cast<void *>(&std::set_new_handler);
    bool oracle = strcmp(argv[1], "oracle") == 0;
    bool all = strcmp(argv[1], "all") == 0;
    bool found = false;
    for (const Scenario &s : scenarios) {
        if (all || (oracle && s.in_oracle) || strcmp(argv[1], s.name) == 0) {
            s.run();
            found = true;
        }
    }
    if (!found)
        fail("unknown scenario");
    return 0;
}
