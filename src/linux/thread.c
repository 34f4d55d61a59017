/* Per-thread state of the tracer, in initial-exec TLS: reaching it never allocates and never takes a loader lock
 * (see build.rs). Zero-initialised, no destructor: a thread that exits leaves nothing behind. The layout is mirrored
 * by `ThreadState` in src/thread.rs. */
#include <stdint.h>

struct hl_thread {
    uint32_t busy;          /* non-zero while this thread is inside the tracer */
    uint32_t tid;           /* kernel thread id, 0 until first needed */
    uint64_t seq_next;      /* next sequence number of this thread's reserved range */
    uint64_t seq_end;       /* end of the reserved range */
    int64_t sample_left;    /* bytes until the next sampled allocation */
    uint32_t stripe;        /* counter stripe, 0 until assigned (stored +1) */
    uint32_t family_override; /* +1: the family of the next recorded allocation (operator new's slow path) */
    uint64_t rng;           /* xorshift state for sampling */
    uint64_t override_size; /* the family override applies to an allocation of exactly this size */
    uint64_t memos;         /* the unwinder's memory of recent walks (mmap'd on first use; 1: none any more) */
    uint32_t memo_busy;     /* non-zero while a walk uses it */
    uint32_t reserved;
    uint64_t window;        /* the ledger window of the last region this thread touched: (region + 1) << 16 | window */
};

/* Not static: src/linux/sys.rs reads its address inline (the thread pointer plus its GOT offset), where a call to
 * a function returning it cost ~5 instructions per hook (the call through the GOT, registers saved for it). Hidden,
 * like everything here (-fvisibility=hidden). */
__thread struct hl_thread hl_tls __attribute__((tls_model("initial-exec")));

/* Ledger updates that a signal handler made while this thread's interrupted hook held the shard they need
 * (src/linux/hooks.rs: Deferred). Applied when that hook finishes. */
struct hl_deferred {
    uint32_t n;
    uint32_t reserved;
    uint64_t addr[128];
    uint64_t size[128];
    uint32_t stack[128];
    uint8_t family[128];
};

static __thread struct hl_deferred hl_deferred_tls __attribute__((tls_model("initial-exec")));

struct hl_deferred *heapledger_deferred(void) { return &hl_deferred_tls; }

