/* Win32 heap scenarios for tests/windows.rs, one per argv[1]. Every scenario prints "alive" at the end: the
   program survived whatever the tracer did with its bad calls. Sizes are distinctive so the test can find its
   blocks among the C runtime's own.

   counts N      N rounds of HeapAlloc/HeapReAlloc/HeapFree on the process heap and on a private heap, then
                 N leaked blocks of 5000 bytes on the process heap and 2*N of 6000 on the private heap
   double        a block freed twice with HeapFree (the second must fail, not crash)
   invalid       HeapFree of a pointer inside a live block and of a stack address
   wrongheap     a private-heap block passed to HeapFree(GetProcessHeap(), ...)
   destroy       HeapDestroy with 3 live blocks of 7000 bytes; then a new heap is used normally
   lasterror     GetLastError() is what the program set, across every hooked call that succeeds
   threads       4 threads, each 1000 HeapAlloc/HeapFree and malloc/free pairs, each leaking 2 blocks
   exit7         returns 7
   child         starts itself with "leakchild" and waits; the child leaks one block of 4321 bytes */
#include <windows.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int fails;
#define CHECK(c) do { if (!(c)) { printf("FAIL line %d: %s\n", __LINE__, #c); fails++; } } while (0)

static void counts(int n) {
    HANDLE ph = GetProcessHeap();
    HANDLE priv = HeapCreate(0, 0, 0);
    for (int i = 0; i < n; i++) {
        void *a = HeapAlloc(ph, 0, 1000);
        a = HeapReAlloc(ph, 0, a, 2000);
        CHECK(a != NULL);
        HeapFree(ph, 0, a);
        void *b = HeapAlloc(priv, HEAP_ZERO_MEMORY, 3000);
        b = HeapReAlloc(priv, 0, b, 4000);
        CHECK(b != NULL);
        HeapFree(priv, 0, b);
    }
    for (int i = 0; i < n; i++) CHECK(HeapAlloc(ph, 0, 5000) != NULL);
    for (int i = 0; i < 2 * n; i++) CHECK(HeapAlloc(priv, 0, 6000) != NULL);
}

static void double_free(void) {
    HANDLE ph = GetProcessHeap();
    void *p = HeapAlloc(ph, 0, 1111);
    CHECK(HeapFree(ph, 0, p));
    BOOL r = HeapFree(ph, 0, p);
    printf("second HeapFree returned %d\n", r);
    CHECK(!r);
    /* The heap is intact: it still works. */
    void *q = HeapAlloc(ph, 0, 64);
    CHECK(q != NULL);
    CHECK(HeapFree(ph, 0, q));
}

static void invalid(void) {
    HANDLE ph = GetProcessHeap();
    char *p = HeapAlloc(ph, 0, 1212);
    int local = 0;
    printf("interior HeapFree returned %d\n", HeapFree(ph, 0, p + 16));
    printf("stack HeapFree returned %d\n", HeapFree(ph, 0, &local));
    CHECK(HeapFree(ph, 0, p));
}

static void wrong_heap(void) {
    HANDLE ph = GetProcessHeap();
    HANDLE priv = HeapCreate(0, 0, 0);
    void *p = HeapAlloc(priv, 0, 2222);
    /* Wrong heap: Wine's heap refuses it (FALSE), Windows' may corrupt itself; under the tracer it is released
       through its own heap (TRUE). */
    printf("HeapFree on the wrong heap returned %d\n", HeapFree(ph, 0, p));
    void *q = HeapAlloc(priv, 0, 64);
    CHECK(q != NULL);
    CHECK(HeapFree(priv, 0, q));
    CHECK(HeapDestroy(priv));
}

static void destroy(void) {
    HANDLE priv = HeapCreate(0, 0, 0);
    for (int i = 0; i < 3; i++) CHECK(HeapAlloc(priv, 0, 7000) != NULL);
    CHECK(HeapFree(priv, 0, HeapAlloc(priv, 0, 7001)));
    CHECK(HeapDestroy(priv));
    /* A new heap, probably at the same address: its blocks are its own. */
    HANDLE again = HeapCreate(0, 0, 0);
    void *p = HeapAlloc(again, 0, 7002);
    CHECK(HeapFree(again, 0, p));
    CHECK(HeapAlloc(again, 0, 7003) != NULL);
}

static void last_error(void) {
    HANDLE ph = GetProcessHeap();
    HANDLE priv = HeapCreate(HEAP_NO_SERIALIZE, 0, 0);
    SetLastError(4242);
    void *p = HeapAlloc(ph, 0, 100);
    CHECK(GetLastError() == 4242);
    p = HeapReAlloc(ph, 0, p, 200);
    CHECK(GetLastError() == 4242);
    CHECK(HeapSize(ph, 0, p) == 200);
    CHECK(GetLastError() == 4242);
    CHECK(HeapFree(ph, 0, p));
    CHECK(GetLastError() == 4242);
    void *q = HeapAlloc(priv, 0, 300);
    CHECK(GetLastError() == 4242);
    CHECK(HeapFree(priv, 0, q));
    CHECK(GetLastError() == 4242);
    void *m = malloc(400);
    CHECK(GetLastError() == 4242);
    m = realloc(m, 500);
    CHECK(GetLastError() == 4242);
    free(m);
    CHECK(GetLastError() == 4242);
    void *c = calloc(10, 10);
    CHECK(GetLastError() == 4242);
    free(c);
    CHECK(GetLastError() == 4242);
    /* HeapWalk still sees exactly the program's blocks on a heap the program walks itself. */
    void *w1 = HeapAlloc(priv, 0, 333), *w2 = HeapAlloc(priv, 0, 444);
    PROCESS_HEAP_ENTRY e;
    int busy = 0;
    memset(&e, 0, sizeof e);
    CHECK(HeapLock(priv));
    while (HeapWalk(priv, &e)) if (e.wFlags & PROCESS_HEAP_ENTRY_BUSY) busy++;
    CHECK(HeapUnlock(priv));
    printf("busy blocks in the walked heap: %d\n", busy);
    CHECK(busy == 2);
    SetLastError(4242);
    CHECK(HeapFree(priv, 0, w1) && HeapFree(priv, 0, w2));
    CHECK(GetLastError() == 4242);
    CHECK(HeapDestroy(priv));
    CHECK(GetLastError() == 4242);
}

static void *volatile leaked[4][2];

static DWORD WINAPI worker(LPVOID arg) {
    int k = (int)(INT_PTR)arg;
    HANDLE ph = GetProcessHeap();
    for (int i = 0; i < 1000; i++) {
        void *a = HeapAlloc(ph, 0, 16 + i % 64);
        void *b = malloc(24 + i % 32);
        HeapFree(ph, 0, a);
        free(b);
    }
    leaked[k][0] = HeapAlloc(ph, 0, 8000 + k);
    leaked[k][1] = malloc(9000 + k);
    return 0;
}

static void threads(void) {
    HANDLE t[4];
    for (int k = 0; k < 4; k++) t[k] = CreateThread(NULL, 0, worker, (LPVOID)(INT_PTR)k, 0, NULL);
    WaitForMultipleObjects(4, t, TRUE, INFINITE);
    for (int k = 0; k < 4; k++) CloseHandle(t[k]);
}

static int child(void) {
    char self[MAX_PATH], cmd[1024];
    GetModuleFileNameA(NULL, self, sizeof self);
    snprintf(cmd, sizeof cmd, "\"%s\" leakchild", self);
    STARTUPINFOA si;
    PROCESS_INFORMATION pi;
    memset(&si, 0, sizeof si);
    si.cb = sizeof si;
    if (!CreateProcessA(NULL, cmd, NULL, NULL, FALSE, 0, NULL, NULL, &si, &pi)) {
        printf("CreateProcess failed: %lu\n", GetLastError());
        return 1;
    }
    WaitForSingleObject(pi.hProcess, INFINITE);
    DWORD code = 99;
    GetExitCodeProcess(pi.hProcess, &code);
    printf("child exited with %lu\n", code);
    CloseHandle(pi.hThread);
    CloseHandle(pi.hProcess);
    return code == 3 ? 0 : 1;
}

int main(int argc, char **argv) {
    const char *mode = argc > 1 ? argv[1] : "";
    int rc = 0;
    if (!strcmp(mode, "counts")) counts(argc > 2 ? atoi(argv[2]) : 0);
    else if (!strcmp(mode, "double")) double_free();
    else if (!strcmp(mode, "invalid")) invalid();
    else if (!strcmp(mode, "wrongheap")) wrong_heap();
    else if (!strcmp(mode, "destroy")) destroy();
    else if (!strcmp(mode, "lasterror")) last_error();
    else if (!strcmp(mode, "threads")) threads();
    else if (!strcmp(mode, "exit7")) rc = 7;
    else if (!strcmp(mode, "child")) rc = child();
    else if (!strcmp(mode, "leakchild")) { HeapAlloc(GetProcessHeap(), 0, 4321); rc = 3; }
    else { printf("unknown mode %s\n", mode); return 2; }
    printf("alive\n");
    fflush(stdout);
    return fails ? 1 : rc;
}
