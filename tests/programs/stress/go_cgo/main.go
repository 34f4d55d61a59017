// A Go program with cgo under the tracer (long form: scripts/stress.sh installs golang-go when missing).
//
// The Go runtime allocates its own heap with mmap (invisible to the tracer), but with cgo the process starts
// through the C runtime, its threads are created with pthread_create, and C code allocates with malloc. This
// program calls C.malloc/C.free and C.strdup from many goroutines (so from several OS threads), and leaves
// exactly three C blocks of 7777 bytes live at exit.
//
// stdout is deterministic.
package main

/*
#include <stdlib.h>
#include <string.h>

// volatile: stores to a static array nobody reads (and the mallocs feeding them) are otherwise optimised away.
static void *volatile keep[3];

static unsigned long churn(int n, int seed) {
	unsigned long sum = 0;
	for (int i = 0; i < n; i++) {
		size_t sz = 1 + (size_t)((i * 7919 + seed) % 3000);
		char *p = malloc(sz);
		memset(p, i & 0xff, sz);
		sum += (unsigned char)p[sz / 2];
		p = realloc(p, sz * 2);
		free(p);
	}
	return sum;
}

static void leak_three(void) {
	for (int i = 0; i < 3; i++) keep[i] = malloc(7777);
}
*/
import "C"

import (
	"fmt"
	"sync"
	"unsafe"
)

func main() {
	var wg sync.WaitGroup
	sums := make([]uint64, 16)
	for g := 0; g < 16; g++ {
		wg.Add(1)
		go func(g int) {
			defer wg.Done()
			for r := 0; r < 20; r++ {
				sums[g] += uint64(C.churn(500, C.int(g)))
				cs := C.CString(fmt.Sprintf("goroutine %d round %d", g, r))
				d := C.strdup(cs)
				C.free(unsafe.Pointer(cs))
				C.free(unsafe.Pointer(d))
			}
		}(g)
	}
	wg.Wait()
	C.leak_three()
	var total uint64
	for _, s := range sums {
		total += s
	}
	// Go-side allocations (the Go heap, not malloc): must simply work.
	m := map[int]string{}
	for i := 0; i < 100000; i++ {
		m[i%1000] = fmt.Sprint(i)
	}
	fmt.Printf("sum=%d\nmap=%d\nok\n", total, len(m))
}
