//! What happens to each allocation and free: stack capture, the ledger entry, the totals, and error detection.
//!
//! Callers (the hooks) have set the thread's busy flag, so nothing here re-enters a hook's tracing path.

use crate::config;
use crate::counters;
use crate::errors::{self, Detail, Error, FreeFn, Kind, NO_STACK};
use crate::intern;
use crate::stack;
use crate::table::{self, family, Block};
use crate::thread::{self, ThreadState};
use core::sync::atomic::Ordering;

/// Captures and interns the current stack with at most `depth` frames.
///
/// Always inlined into the hook, so that the walk starts in the exported function's own frame: one tracer frame
/// to step over instead of three (measured: own frames were ~30% of the walk on a churn benchmark). Only the
/// whole-walk cache's check is inlined; a walk that misses it runs out of line (the hooks stay small). Nothing in
/// the inlined part can panic; the cold rule evaluation contains its own panics.
#[inline(always)]
pub fn stack_id(depth: u32) -> u32 {
    // SAFETY: the calling thread's own state.
    stack_id_of(unsafe { &mut *thread::current() }, depth)
}

/// [`stack_id`] for a hook that holds the calling thread's state `t` already (one TLS lookup fewer per call).
#[inline(always)]
pub fn stack_id_of(t: &mut ThreadState, depth: u32) -> u32 {
    if depth == 0 {
        return 0;
    }
    let depth = depth.min(config::MAX_DEPTH as u32);
    let s = stack::start();
    let (w, id) = match stack::quick(t, s, depth) {
        Some(hit) => hit,
        None => walk_and_intern(s, depth),
    };
    if w.truncated {
        intern::TRUNCATED.fetch_add(1, Ordering::Relaxed);
    }
    id
}

#[inline(never)]
fn walk_and_intern(s: stack::Start, depth: u32) -> (stack::Walk, u32) {
    // Uninitialised: zeroing 1 KiB per allocation showed up at 9% in perf; the walk writes what it reports.
    let mut buf = core::mem::MaybeUninit::<[u64; config::MAX_DEPTH]>::uninit();
    // SAFETY: the walk writes frames [0, len) before they are read; the rest is never read.
    let frames =
        unsafe { core::slice::from_raw_parts_mut(buf.as_mut_ptr().cast::<u64>(), depth as usize) };
    stack::walk_from(s, frames, Some(intern::intern))
}

/// Draws the next sampling distance: exponential with mean `mean` bytes (Poisson process over bytes).
fn next_sample_distance(t: &mut ThreadState, mean: u64) -> i64 {
    if t.rng == 0 {
        t.rng = (t.tid as u64 | 1).wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ crate::sys::monotonic_ns();
        t.rng |= 1;
    }
    t.rng ^= t.rng << 13;
    t.rng ^= t.rng >> 7;
    t.rng ^= t.rng << 17;
    let u = ((t.rng >> 11) as f64 + 0.5) / (1u64 << 53) as f64;
    (-(u.ln()) * mean as f64) as i64 + 1
}

/// Decides whether the allocation about to be recorded gets a ledger entry (always, unless sampling), and counts
/// the ones that do not.
#[inline(always)]
pub fn wants_entry(t: &mut ThreadState, size: u64) -> bool {
    let mean = config::SAMPLE.load(Ordering::Relaxed);
    if mean == 0 || t.family_override != 0 {
        return true;
    }
    if t.rng == 0 {
        // First allocation of this thread: draw where its first sample falls.
        thread::tid(t);
        t.sample_left = next_sample_distance(t, mean);
    }
    t.sample_left -= size as i64;
    if t.sample_left > 0 {
        counters::allocated(t, size);
        return false;
    }
    thread::tid(t);
    t.sample_left = next_sample_distance(t, mean);
    true
}

/// Sampling mode's fast path (callers have checked that sampling is on), before the real call: whether an
/// allocation of `size` bytes will stay short of the thread's next sample point (the decision `wants_entry` makes
/// after it). The caller counts the block with [`unsampled_made`] once the allocator has made it.
#[inline(always)]
pub fn stays_unsampled(t: &ThreadState, size: u64) -> bool {
    // rng == 0: the thread's first sample point is not drawn yet (wants_entry draws it).
    t.family_override == 0 && t.rng != 0 && t.sample_left > 0 && size < t.sample_left as u64
}

/// Counts an allocation that [`stays_unsampled`] let through, once made (a failed one is not counted, as with
/// `wants_entry`). A signal handler that allocated meanwhile may have moved the sample point: the next allocation
/// is then sampled, as `wants_entry` decides.
#[inline(always)]
pub fn unsampled_made(t: &mut ThreadState, size: u64) {
    t.sample_left -= size as i64;
    counters::allocated(t, size);
}

/// Depth of allocation stacks.
#[inline(always)]
pub fn alloc_depth() -> u32 {
    config::DEPTH.load(Ordering::Relaxed)
}

/// Depth of free stacks (0 in sampling mode, where no double-free ring is kept).
#[inline(always)]
pub fn free_depth() -> u32 {
    if config::SAMPLE.load(Ordering::Relaxed) != 0 {
        0
    } else {
        config::FREE_DEPTH.load(Ordering::Relaxed)
    }
}

/// Records a new block returned to the program, allocated at `stack`.
pub fn on_alloc(t: &mut ThreadState, p: u64, size: u64, fam: u8, stack: u32) {
    // The C++ runtime rounds aligned requests up to the alignment, so "the requested size" is a small range.
    // The override is for the block the C++ runtime's operator new allocates after ours failed: through an
    // aligned function (the aligned new, whatever size it rounded to) or through malloc at the requested size
    // (not the exception object that a failing new allocates with malloc before it throws).
    let fam = if t.family_override != 0
        && (fam == family::ALIGNED || (size >= t.override_size && size - t.override_size < 65536))
    {
        (t.family_override - 1) as u8
    } else {
        fam
    };
    let tid = thread::tid(t);
    let seq = thread::next_seq(t);
    let b = Block::new(p, size, stack, tid, seq, fam);
    if config::SAMPLE.load(Ordering::Relaxed) != 0 {
        table::sampled_added(p);
    }
    let mut shard = table::shard_of_hinted(p, &mut t.window).lock();
    shard.totals.allocations += 1;
    shard.totals.bytes_allocated += size;
    if !shard.insert(b) {
        drop(shard);
        table::LOST.fetch_add(1, Ordering::Relaxed);
    }
}

/// Records a block the tracer's own work caused libc to allocate (settled silently, never counted).
/// `may_wait`: the thread holds no shard lock (busy level [`thread::BUSY_TRACER`]), so it may wait for one.
pub fn on_internal_alloc(p: u64, size: u64, may_wait: bool) {
    let b = Block::new(p, size, 0, 0, 0, family::INTERNAL);
    let shard = table::shard_of(p);
    let guard = if may_wait {
        Some(shard.lock())
    } else {
        shard.try_lock()
    };
    match guard {
        Some(mut s) => {
            if !s.insert(b) {
                table::LOST.fetch_add(1, Ordering::Relaxed);
            }
        }
        // A signal handler allocating while this thread held the shard: the block goes unrecorded, and the
        // lost count makes later frees of unknown pointers pass through instead of being rejected.
        None => {
            table::LOST.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Settles a free made while the tracer was already running on this thread (libc code we called, or a signal
/// handler that interrupted a hook). A traced block freed this way is counted as freed, silently (no stack, no
/// error checks). Waits for the shard: callers hold none.
pub fn internal_free(p: u64) {
    let mut s = table::shard_of(p).lock();
    if let Some(b) = s.remove(p) {
        if b.family() != family::INTERNAL {
            s.totals.frees += 1;
            s.totals.bytes_freed += b.size();
            if config::SAMPLE.load(Ordering::Relaxed) != 0 {
                table::sampled_removed(p);
            }
        }
    }
}

/// Whether `fam` may be released by `how`.
fn compatible(fam: u8, how: FreeFn) -> bool {
    match fam {
        family::MALLOC | family::ALIGNED => {
            matches!(how, FreeFn::Free | FreeFn::Realloc | FreeFn::ReallocArray)
        }
        family::NEW => how == FreeFn::Delete,
        family::NEW_ARRAY => how == FreeFn::DeleteArray,
        _ => true,
    }
}

/// Outcome of looking a freed pointer up.
#[derive(Default)]
pub enum Settle {
    /// A live block: removed from the ledger, counted; the caller passes it to the real allocator.
    Live(Block),
    /// Not ours to judge (sampling mode, or blocks were lost): pass it through untouched.
    #[default]
    Unknown,
    /// A double or invalid free, reported: the caller must NOT pass it on.
    Rejected,
}

/// Sampling mode's fast path: a free that cannot be of a sampled block is counted and passed through without
/// any further tracer work (no lock, no errno save, no panic guard). Returns true when it handled the free.
#[inline(always)]
pub fn unsampled_free(t: &mut ThreadState, p: u64) -> bool {
    if config::SAMPLE.load(Ordering::Relaxed) == 0 || table::maybe_sampled(p) {
        return false;
    }
    counters::freed(t);
    true
}

/// Settles a free of `p` (non-null) through `how`, called at `free_stack`.
pub fn on_free(t: &mut ThreadState, p: u64, how: FreeFn, free_stack: u32) -> Settle {
    let sampling = config::SAMPLE.load(Ordering::Relaxed) != 0;
    if sampling && !table::maybe_sampled(p) {
        // Not a sampled block (nothing sampled lives at this hash): no lock, no lookup.
        counters::freed(t);
        return Settle::Unknown;
    }
    let removed = {
        let mut shard = table::shard_of_hinted(p, &mut t.window).lock();
        let r = shard.remove(p);
        if let Some(b) = r {
            if sampling && b.family() != family::INTERNAL {
                table::sampled_removed(p);
            }
            if b.family() != family::INTERNAL {
                shard.totals.frees += 1;
                shard.totals.bytes_freed += b.size();
                if !sampling {
                    shard.remember_freed(b, free_stack);
                }
            }
        }
        r
    };
    match removed {
        Some(b) if b.family() == family::INTERNAL => Settle::Live(b),
        Some(b) => {
            if !compatible(b.family(), how) {
                errors::report(Error {
                    kind: Kind::MismatchedFree,
                    addr: p,
                    size: b.size(),
                    family: b.family(),
                    freed_with: how,
                    detail: Detail::None,
                    tid: thread::tid(t),
                    stack: free_stack,
                    alloc_stack: b.stack(),
                    first_free_stack: NO_STACK,
                    #[cfg(windows)]
                    via: 0,
                });
            }
            Settle::Live(b)
        }
        None => {
            if sampling {
                counters::freed(t);
                return Settle::Unknown;
            }
            classify_bad_free(t, p, how)
        }
    }
}

#[cold]
fn classify_bad_free(t: &mut ThreadState, p: u64, how: FreeFn) -> Settle {
    let freed = table::shard_of(p).lock().find_freed(p);
    // The bad call itself deserves the full depth, not the shorter free-stack depth.
    let stack = stack_id(
        config::DEPTH
            .load(Ordering::Relaxed)
            .max(config::FREE_DEPTH.load(Ordering::Relaxed)),
    );
    let tid = thread::tid(t);
    let mut e = Error {
        kind: Kind::InvalidFree,
        addr: p,
        size: 0,
        family: 0xff,
        freed_with: how,
        detail: Detail::NeverAllocated,
        tid,
        stack,
        alloc_stack: NO_STACK,
        first_free_stack: NO_STACK,
        #[cfg(windows)]
        via: 0,
    };
    if let Some(f) = freed {
        e.kind = Kind::DoubleFree;
        e.detail = Detail::None;
        e.size = f.block.size();
        e.family = f.block.family();
        e.alloc_stack = f.block.stack();
        e.first_free_stack = f.free_stack;
    } else if table::LOST.load(Ordering::Relaxed) != 0 {
        // Some blocks went unrecorded: this is most likely one of them. Let the allocator have it, as it would
        // without the tracer (looking for a block that contains it first scanned the whole ledger on every such
        // free: quadratic once a shard could not grow).
        counters::freed(t);
        return Settle::Unknown;
    } else if let Some(b) = table::find_containing(p) {
        e.detail = Detail::Interior;
        e.size = b.size();
        e.family = b.family();
        e.alloc_stack = b.stack();
    } else {
        let here = &e as *const Error as u64;
        if p.abs_diff(here) < (8 << 20) {
            e.detail = Detail::Stack;
        } else if stack::in_module(p) {
            e.detail = Detail::Static;
        }
    }
    errors::report(e);
    Settle::Rejected
}

/// Puts back a block whose release failed (realloc returned NULL for a non-zero size: the old block lives on).
pub fn undo_free(b: Block) {
    if config::SAMPLE.load(Ordering::Relaxed) != 0 {
        table::sampled_added(b.addr());
    }
    let mut shard = table::shard_of(b.addr()).lock();
    shard.totals.frees -= 1;
    shard.totals.bytes_freed -= b.size();
    if !shard.insert(b) {
        table::LOST.fetch_add(1, Ordering::Relaxed);
    }
}

/// The size to record for a `calloc` of `size` bytes in `elem`-byte elements made at `stack`.
///
/// The preload library has a TLS segment (Rust's std needs one), so every thread's dynamic thread vector — which
/// the loader `calloc`s in `pthread_create`, one 16-byte entry per TLS module — is 16 bytes larger than without
/// the tracer. That entry is the tracer's footprint, not the program's: it is left out, so the program's
/// figures equal an untraced run's (and Valgrind's).
#[inline(always)]
pub fn tracer_share_removed(size: u64, elem: usize) -> u64 {
    if elem != 16 || size < 32 {
        return size;
    }
    // One frame is enough (the caller); walked here rather than taken from the recorded stack so that the
    // figure is the same whether or not this allocation is sampled or stacks are recorded at all.
    let mut caller = [0u64; 1];
    let w = stack::walk(&mut caller);
    if w.len == 1 && stack::in_loader(caller[0]) {
        size - 16
    } else {
        size
    }
}
