/* C runtime scenarios for tests/windows.rs. mingw links this program with msvcrt.dll; ucrtbase.dll and
   msvcr120.dll are loaded with LoadLibrary (msvcr120 only now, so the tracer must hook a runtime that appears
   after start-up). Every bad free below must be reported and survived; the program prints "alive".

   cross       msvcrt malloc -> ucrtbase free, ucrtbase malloc -> msvcrt free, msvcr120 malloc -> msvcrt free
   aligned     _aligned_malloc -> free, malloc -> _aligned_free (both msvcrt), and a correct pair
   heapfree    HeapAlloc(process heap) -> free; HeapAlloc(the CRT's own heap) -> free (same heap: a warning)
   clean       correct pairs only (no error expected), plus one leak of 1234 bytes per runtime */
#include <windows.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <malloc.h>

typedef void *(*malloc_fn)(size_t);
typedef void (*free_fn)(void *);
typedef void *(*realloc_fn)(void *, size_t);
typedef void *(*aligned_malloc_fn)(size_t, size_t);
typedef void (*aligned_free_fn)(void *);
typedef intptr_t (*heap_handle_fn)(void);

struct crt {
    HMODULE dll;
    malloc_fn malloc;
    free_fn free;
    realloc_fn realloc;
    aligned_malloc_fn aligned_malloc;
    aligned_free_fn aligned_free;
    heap_handle_fn heap;
};

static int load(const char *name, struct crt *c) {
    c->dll = LoadLibraryA(name);
    if (!c->dll) {
        printf("cannot load %s\n", name);
        return 0;
    }
    c->malloc = (malloc_fn)GetProcAddress(c->dll, "malloc");
    c->free = (free_fn)GetProcAddress(c->dll, "free");
    c->realloc = (realloc_fn)GetProcAddress(c->dll, "realloc");
    c->aligned_malloc = (aligned_malloc_fn)GetProcAddress(c->dll, "_aligned_malloc");
    c->aligned_free = (aligned_free_fn)GetProcAddress(c->dll, "_aligned_free");
    c->heap = (heap_handle_fn)GetProcAddress(c->dll, "_get_heap_handle");
    return c->malloc && c->free;
}

int main(int argc, char **argv) {
    const char *mode = argc > 1 ? argv[1] : "";
    struct crt msvcrt, ucrt, r120;
    if (!load("msvcrt.dll", &msvcrt) || !load("ucrtbase.dll", &ucrt)) return 2;
    if (!strcmp(mode, "cross")) {
        if (!load("msvcr120.dll", &r120)) return 2;
        void *a = msvcrt.malloc(1001);
        ucrt.free(a);
        void *b = ucrt.malloc(1002);
        msvcrt.free(b);
        void *c = r120.malloc(1003);
        msvcrt.free(c);
        /* a correct pair in the late runtime */
        r120.free(r120.malloc(1004));
        /* the runtimes still work */
        void *d = msvcrt.malloc(64), *e = ucrt.malloc(64);
        msvcrt.free(d);
        ucrt.free(e);
    } else if (!strcmp(mode, "aligned")) {
        void *a = _aligned_malloc(2001, 64);
        printf("aligned %p\n", a);
        free(a);
        void *b = malloc(2002);
        _aligned_free(b);
        void *c = _aligned_malloc(2003, 128);
        _aligned_free(c);
    } else if (!strcmp(mode, "heapfree")) {
        void *a = HeapAlloc(GetProcessHeap(), 0, 3001);
        free(a);
        HANDLE own = (HANDLE)msvcrt.heap();
        void *b = HeapAlloc(own, 0, 3002);
        free(b);
    } else if (!strcmp(mode, "clean")) {
        if (!load("msvcr120.dll", &r120)) return 2;
        void *a = malloc(10);
        a = realloc(a, 20);
        free(a);
        ucrt.free(ucrt.realloc(ucrt.malloc(30), 40));
        r120.free(r120.realloc(r120.malloc(50), 60));
        _aligned_free(_aligned_malloc(70, 32));
        ucrt.aligned_free(ucrt.aligned_malloc(80, 32));
        static void *volatile leaks[3];
        leaks[0] = msvcrt.malloc(1234);
        leaks[1] = ucrt.malloc(1234);
        leaks[2] = r120.malloc(1234);
    } else {
        printf("unknown mode %s\n", mode);
        return 2;
    }
    printf("alive\n");
    fflush(stdout);
    return 0;
}
