//! Per-thread state: the re-entrancy flag and the small caches the hot path needs.
//!
//! On Linux the storage lives in initial-exec TLS defined in `thread.c` (see build.rs for why not
//! `thread_local!`). Everything here is plain data: no destructor runs at thread exit.

/// Mirror of `struct hl_thread` in `thread.c`.
#[repr(C)]
pub struct ThreadState {
    /// Non-zero while the thread runs tracer code; a hook entered then passes straight through.
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
}

#[cfg(target_os = "linux")]
extern "C" {
    fn heapledger_thread_state() -> *mut ThreadState;
}

/// The calling thread's state. Never null, never allocates.
#[inline(always)]
pub fn current() -> *mut ThreadState {
    // SAFETY: the C function only returns the address of an initial-exec TLS object.
    unsafe { heapledger_thread_state() }
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
        register_stack(t.tid);
    }
    t.tid
}

/// Stacks of the threads that have allocated: roots for the reachability scan at exit.
const MAX_THREADS: usize = 4096;
static STACKS: [[core::sync::atomic::AtomicU64; 2]; MAX_THREADS] = [const {
    [
        core::sync::atomic::AtomicU64::new(0),
        core::sync::atomic::AtomicU64::new(0),
    ]
}; MAX_THREADS];
static NEXT_STACK: core::sync::atomic::AtomicUsize = core::sync::atomic::AtomicUsize::new(0);

/// Remembers the calling thread's stack range (once per thread, at its first recorded allocation).
#[cold]
fn register_stack(_tid: u32) {
    // SAFETY: pthread_getattr_np fills `attr` for the calling thread; it may allocate, which this thread's busy
    // flag turns into internal (uncounted) allocations.
    unsafe {
        let mut attr = core::mem::MaybeUninit::<libc::pthread_attr_t>::uninit();
        if libc::pthread_getattr_np(libc::pthread_self(), attr.as_mut_ptr()) != 0 {
            return;
        }
        let mut addr: *mut libc::c_void = core::ptr::null_mut();
        let mut size: usize = 0;
        let ok = libc::pthread_attr_getstack(attr.as_ptr(), &mut addr, &mut size) == 0;
        libc::pthread_attr_destroy(attr.as_mut_ptr());
        if !ok {
            return;
        }
        let lo = addr as u64;
        let hi = lo + size as u64;
        // Reuse the slot of an earlier thread whose stack this one took over (glibc caches stacks).
        let n = NEXT_STACK
            .load(core::sync::atomic::Ordering::Acquire)
            .min(MAX_THREADS);
        for s in &STACKS[..n] {
            if s[0].load(core::sync::atomic::Ordering::Relaxed) == lo {
                s[1].store(hi, core::sync::atomic::Ordering::Relaxed);
                return;
            }
        }
        let i = NEXT_STACK.fetch_add(1, core::sync::atomic::Ordering::AcqRel);
        if let Some(s) = STACKS.get(i) {
            s[1].store(hi, core::sync::atomic::Ordering::Relaxed);
            s[0].store(lo, core::sync::atomic::Ordering::Release);
        }
    }
}

/// The registered thread stacks as (low, high) ranges.
pub fn stacks() -> impl Iterator<Item = (u64, u64)> {
    let n = NEXT_STACK
        .load(core::sync::atomic::Ordering::Acquire)
        .min(MAX_THREADS);
    STACKS[..n].iter().filter_map(|s| {
        let lo = s[0].load(core::sync::atomic::Ordering::Acquire);
        let hi = s[1].load(core::sync::atomic::Ordering::Relaxed);
        (lo != 0 && hi > lo).then_some((lo, hi))
    })
}

/// Forget cached per-thread facts that a fork makes wrong (the child's only thread has a new tid).
pub fn after_fork_child(t: &mut ThreadState) {
    t.tid = crate::sys::gettid();
}
