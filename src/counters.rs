//! Totals counted the way Valgrind counts "total heap usage".
//!
//! Recorded blocks are counted in their table shard, under the lock the hot path holds anyway (see
//! `table::Shard::totals`). Events that touch no shard — unsampled allocations and frees in sampling mode — are
//! counted here, in striped counters: each thread adds to one of 64 cache-line-sized stripes, so threads do not
//! bounce one counter between cores. A dump sums both.
//!
//! A thread claims a stripe of its own when one is free and then adds with plain loads and stores (no
//! lock-prefixed instruction: sampling mode's overhead is mostly these counters); a pthread key destructor gives
//! the stripe back when the thread exits, its counts staying in it. Threads that find no free stripe share the
//! last one with atomic adds. (The destructor is not the re-entrancy flag's: that one has none.)

use crate::thread::ThreadState;
use core::sync::atomic::{AtomicU32, AtomicU64, Ordering};

const STRIPES: usize = 64;
/// The stripe shared, with atomic adds, by threads that could not claim one of their own.
const SHARED: usize = STRIPES - 1;
/// `ThreadState::stripe` flag: the stripe is this thread's alone.
const OWNED: u32 = 1 << 31;

#[repr(align(64))]
struct Stripe {
    allocations: AtomicU64,
    frees: AtomicU64,
    bytes_allocated: AtomicU64,
}

#[allow(clippy::declare_interior_mutable_const)]
const ZERO: Stripe = Stripe {
    allocations: AtomicU64::new(0),
    frees: AtomicU64::new(0),
    bytes_allocated: AtomicU64::new(0),
};
static STRIPE: [Stripe; STRIPES] = [ZERO; STRIPES];
static OWNER: [AtomicU32; STRIPES] = [const { AtomicU32::new(0) }; STRIPES];

#[cold]
fn claim(t: &mut ThreadState) {
    t.stripe = SHARED as u32 + 1;
    for (i, o) in OWNER[..SHARED].iter().enumerate() {
        if o.compare_exchange(0, 1, Ordering::AcqRel, Ordering::Relaxed)
            .is_ok()
        {
            #[cfg(target_os = "linux")]
            let arranged = crate::sys::on_thread_exit_release(i + 1);
            #[cfg(not(target_os = "linux"))]
            let arranged = false;
            if arranged {
                t.stripe = (i as u32 + 1) | OWNED;
            } else {
                o.store(0, Ordering::Release);
            }
            return;
        }
    }
}

/// Gives stripe `token` (index + 1) back when its thread exits.
pub fn release(token: usize) {
    if let Some(o) = token.checked_sub(1).and_then(|i| OWNER.get(i)) {
        o.store(0, Ordering::Release);
    }
}

#[inline(always)]
fn add(c: &AtomicU64, v: u64, owned: bool) {
    if owned {
        add_owned(c, v);
    } else {
        c.fetch_add(v, Ordering::Relaxed);
    }
}

/// Adds to a counter only this thread writes. One `add` to memory without the lock prefix: other threads read a
/// whole value (aligned 8-byte stores are atomic), and a signal handler of this thread that counts too cannot
/// fall between a load and its store (sampling mode's fast paths count with no busy flag set, see hooks.rs).
#[inline(always)]
fn add_owned(c: &AtomicU64, v: u64) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: `c` is a valid, aligned u64 (an AtomicU64); the instruction reads and writes only it.
    unsafe {
        core::arch::asm!("add qword ptr [{c}], {v}", c = in(reg) c.as_ptr(), v = in(reg) v,
                         options(nostack));
    }
    #[cfg(not(target_arch = "x86_64"))]
    c.fetch_add(v, Ordering::Relaxed);
}

#[inline(always)]
fn stripe(t: &mut ThreadState) -> (&'static Stripe, bool) {
    if t.stripe == 0 {
        claim(t);
    }
    let owned = t.stripe & OWNED != 0;
    (&STRIPE[((t.stripe & !OWNED) - 1) as usize % STRIPES], owned)
}

/// Counts one allocation of `size` bytes.
#[inline(always)]
pub fn allocated(t: &mut ThreadState, size: u64) {
    let (s, owned) = stripe(t);
    add(&s.allocations, 1, owned);
    add(&s.bytes_allocated, size, owned);
}

/// Counts one free. Its size is not known here: frees counted in the stripes are of blocks the table does not
/// hold (unsampled ones), and their bytes are not counted (docs/dump-format.md).
#[inline(always)]
pub fn freed(t: &mut ThreadState) {
    let (s, owned) = stripe(t);
    add(&s.frees, 1, owned);
}

pub use crate::table::Totals;

/// The totals counted in the stripes (events that touched no shard). Shard totals are read with the blocks.
pub fn striped() -> Totals {
    let mut t = Totals::default();
    for s in &STRIPE {
        t.allocations += s.allocations.load(Ordering::Relaxed);
        t.frees += s.frees.load(Ordering::Relaxed);
        t.bytes_allocated += s.bytes_allocated.load(Ordering::Relaxed);
    }
    t
}
