//! Totals counted the way Valgrind counts "total heap usage".
//!
//! Recorded blocks are counted in their table shard, under the lock the hot path holds anyway (see
//! `table::Shard::totals`). Events that touch no shard — unsampled allocations and frees in sampling mode — are
//! counted here, in striped counters: each thread adds to one of 64 cache-line-sized stripes, assigned
//! round-robin, so threads do not bounce one counter between cores. A dump sums both.

use crate::thread::ThreadState;
use core::sync::atomic::{AtomicU32, AtomicU64, Ordering};

const STRIPES: usize = 64;

#[repr(align(64))]
struct Stripe {
    allocations: AtomicU64,
    frees: AtomicU64,
    bytes_allocated: AtomicU64,
    bytes_freed: AtomicU64,
}

#[allow(clippy::declare_interior_mutable_const)]
const ZERO: Stripe = Stripe {
    allocations: AtomicU64::new(0),
    frees: AtomicU64::new(0),
    bytes_allocated: AtomicU64::new(0),
    bytes_freed: AtomicU64::new(0),
};
static STRIPE: [Stripe; STRIPES] = [ZERO; STRIPES];
static NEXT_STRIPE: AtomicU32 = AtomicU32::new(0);

#[inline(always)]
fn stripe(t: &mut ThreadState) -> &'static Stripe {
    if t.stripe == 0 {
        t.stripe = NEXT_STRIPE.fetch_add(1, Ordering::Relaxed) % STRIPES as u32 + 1;
    }
    &STRIPE[(t.stripe - 1) as usize]
}

// Each stripe is written by few threads (usually one), so a plain load+store would almost do; fetch_add keeps
// the count exact when two threads share a stripe and costs no cross-core traffic when they do not.

/// Counts one allocation of `size` bytes.
#[inline(always)]
pub fn allocated(t: &mut ThreadState, size: u64) {
    let s = stripe(t);
    s.allocations.fetch_add(1, Ordering::Relaxed);
    s.bytes_allocated.fetch_add(size, Ordering::Relaxed);
}

/// Counts one free of a block of `size` bytes.
#[inline(always)]
pub fn freed(t: &mut ThreadState, size: u64) {
    let s = stripe(t);
    s.frees.fetch_add(1, Ordering::Relaxed);
    s.bytes_freed.fetch_add(size, Ordering::Relaxed);
}

pub use crate::table::Totals;

/// The totals counted in the stripes (events that touched no shard). Shard totals are read with the blocks.
pub fn striped() -> Totals {
    let mut t = Totals::default();
    for s in &STRIPE {
        t.allocations += s.allocations.load(Ordering::Relaxed);
        t.frees += s.frees.load(Ordering::Relaxed);
        t.bytes_allocated += s.bytes_allocated.load(Ordering::Relaxed);
        t.bytes_freed += s.bytes_freed.load(Ordering::Relaxed);
    }
    t
}
