//! Per-thread state: the re-entrancy flag and the small caches the hot path needs.
//!
//! On Linux the storage lives in initial-exec TLS defined in `thread.c` (see build.rs for why not
//! `thread_local!`). Everything here is plain data: no destructor runs at thread exit.

/// Mirror of `struct hl_thread` in `thread.c`.
#[repr(C)]
pub struct ThreadState {
    /// Non-zero while the thread runs tracer code; a hook entered then passes straight through.
    /// [`BUSY_HOOK`] inside a hook (a shard lock may be held: a nested call must not wait for one);
    /// [`BUSY_TRACER`] in the tracer's own work outside any shard lock (waiting is safe).
    pub busy: u32,
    /// Kernel thread id, 0 until first needed.
    pub tid: u32,
    /// Next sequence number of the range reserved by this thread.
    pub seq_next: u64,
    /// End of the reserved range.
    pub seq_end: u64,
    /// Bytes left until the next sampled allocation (sampling mode).
    pub sample_left: i64,
    /// Counter stripe + 1 (0: not yet assigned).
    pub stripe: u32,
    /// Family + 1 for the next recorded allocation (operator new's failure path), 0 for none.
    pub family_override: u32,
    /// xorshift state for drawing sampling intervals.
    pub rng: u64,
    /// The family override applies only to an allocation of exactly this size (not, say, to the exception
    /// object that the C++ runtime allocates when it throws `bad_alloc`).
    pub override_size: u64,
    /// The unwinder's memory of this thread's recent walks (Linux: mapped on first use; 1 once released).
    pub memos: u64,
    /// Non-zero while a stack walk uses `memos` (a signal handler's walk then leaves them alone).
    pub memo_busy: u32,
    /// Padding (mirrors the C struct).
    pub reserved: u32,
    /// The ledger window of the last 64 MiB region this thread recorded a block in, as `table` maps them
    /// (`(region + 1) << 16 | window`, 0: none yet): a thread's blocks mostly lie in its own arena.
    pub window: u64,
}

/// The calling thread's state. Never null, never allocates.
#[inline(always)]
pub fn current() -> *mut ThreadState {
    crate::sys::thread_state()
}

/// `busy` inside a traced hook call, where this thread may hold a shard lock (a signal handler that allocates
/// while the hook runs must not wait for it).
pub const BUSY_HOOK: u32 = 1;
/// `busy` in the tracer's own work (start-up, dumps outside their locked sections, the snapshot thread), where
/// this thread holds no shard lock: libc allocations made for it are recorded as internal, waiting for a lock.
pub const BUSY_TRACER: u32 = 2;

/// `busy` while a hook calls the real allocator: a nested hook call is the allocator forwarding to an interposed
/// function (glibc's `reallocarray` calls `realloc`), recorded as internal; no shard lock is held.
pub const BUSY_REAL: u32 = 3;

/// Runs `f` with the calling thread's busy level set to `level`, restoring the previous level after.
pub fn with_busy<R>(level: u32, f: impl FnOnce() -> R) -> R {
    // SAFETY: the calling thread's own state.
    let t = unsafe { &mut *current() };
    let was = t.busy;
    t.busy = level;
    let r = f();
    // SAFETY: as above (f may have re-borrowed it).
    unsafe { (*current()).busy = was };
    r
}

/// Sequence numbers are handed out in ranges so that threads do not bounce one counter between cores.
const SEQ_BATCH: u64 = 1024;
static SEQ: core::sync::atomic::AtomicU64 = core::sync::atomic::AtomicU64::new(1);

/// The next allocation sequence number of this thread (ordered per thread, roughly global).
#[inline]
pub fn next_seq(t: &mut ThreadState) -> u64 {
    if t.seq_next >= t.seq_end {
        let start = SEQ.fetch_add(SEQ_BATCH, core::sync::atomic::Ordering::Relaxed);
        t.seq_next = start;
        t.seq_end = start + SEQ_BATCH;
    }
    let s = t.seq_next;
    t.seq_next += 1;
    s
}

/// The kernel thread id, cached.
#[inline]
pub fn tid(t: &mut ThreadState) -> u32 {
    if t.tid == 0 {
        t.tid = crate::sys::gettid();
        crate::reach::register_thread();
    }
    t.tid
}

/// Forget cached per-thread facts that a fork makes wrong (the child's only thread has a new tid).
pub fn after_fork_child(t: &mut ThreadState) {
    t.tid = crate::sys::gettid();
}
