/* Helper for running gcc's LeakSanitizer runtime (liblsan.so.0) as a plain LD_PRELOAD library.
 *
 * A program built with -fsanitize=leak gets liblsan_preinit.o, whose .preinit_array calls __lsan_init before
 * any constructor. A preloaded liblsan has no such hook: it initialises lazily from its interceptors, and some
 * programs (sqlite3 here) call an intercepted function before that and crash. Preloading this object after
 * liblsan calls __lsan_init from the first constructor that runs.
 *
 *   cc -O2 -shared -fPIC -o lsan_init.so lsan_init.c /usr/lib/x86_64-linux-gnu/liblsan.so.0
 *   LD_PRELOAD="/usr/lib/x86_64-linux-gnu/liblsan.so.0 ./lsan_init.so" prog
 */
void __lsan_init(void);

__attribute__((constructor(101))) static void heapledger_bench_lsan_init(void) { __lsan_init(); }
