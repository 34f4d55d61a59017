//! The interposed entry points: the malloc family, C++ operator new/delete, `dlclose`, `_exit`/`_Exit`, and the
//! `exec` family (for the end watcher).
//!
//! Each hook decides first how to serve the call:
//! - before the real functions are resolved (inside `dlsym`, or a constructor that ran before ours), from the
//!   bootstrap arena;
//! - while this thread is already inside the tracer (libc code that the tracer called, or a signal handler that
//!   interrupted a hook), straight through, with the block marked internal;
//! - otherwise traced: the real call, then the record, with errno preserved and panics contained.

use crate::errors::FreeFn;
use crate::real::{self, Real};
use crate::record::{self, Settle};
use crate::table::family;
use crate::thread::{self, ThreadState};
use core::ffi::{c_int, c_void};

enum Mode {
    Early,
    /// Inside the tracer already; `true` when no shard lock can be held by this thread (see `thread::busy`).
    Internal(bool),
    Traced(&'static mut ThreadState),
}

#[inline(always)]
fn mode() -> Mode {
    if !real::ready() && !real::ensure_init() {
        return Mode::Early;
    }
    // SAFETY: the TLS block is valid for the thread's lifetime and only this thread touches it.
    let t = unsafe { &mut *thread::current() };
    if t.busy == 0 {
        // Updates a signal handler queued during this thread's previous hook come before anything this call does.
        apply_deferred();
    }
    if t.busy != 0 {
        // Inside a hook's own recording code only a signal handler can get here (the program's call: traced,
        // deferred). Inside a call to the real allocator (BUSY_REAL) it is the allocator forwarding to an
        // interposed function (glibc's reallocarray calls realloc): internal. Inside tracer work it is libc.
        Mode::Internal(t.busy != thread::BUSY_HOOK)
    } else {
        Mode::Traced(t)
    }
}

// ---- updates deferred from signal handlers ---------------------------------------------------------------------
//
// A hook entered while this thread is already inside a hook is a signal handler's call (the tracer itself makes
// no allocating libc call there): the program's own allocation, traced with its stack. But the interrupted hook
// may hold the very shard the update needs: waiting would deadlock, skipping would leave the ledger wrong. So
// the update is queued in this thread's TLS and applied by the interrupted hook as it finishes. A global count
// lets every hook check for work with one load of a shared, read-mostly line.

/// Mirror of `struct hl_deferred` in `thread.c`.
#[repr(C)]
struct Deferred {
    n: u32,
    reserved: u32,
    addr: [u64; DEFER_MAX],
    size: [u64; DEFER_MAX],
    stack: [u32; DEFER_MAX],
    family: [u8; DEFER_MAX],
}

// A handler runs a few allocations at most while one hook is interrupted; past this they are counted as lost.
const DEFER_MAX: usize = 128;

extern "C" {
    fn heapledger_deferred() -> *mut Deferred;
}

/// `size` value of a queued free: the handler has already released the block (holding it back changes what
/// glibc does next and made the program's handler re-enter the arena), so the ledger must catch up before this
/// thread can be handed the address again: see [`enter_real`].
const DEFERRED_SETTLE: u64 = u64::MAX;
static DEFERRED_ANYWHERE: core::sync::atomic::AtomicU32 = core::sync::atomic::AtomicU32::new(0);

fn defer(addr: u64, size: u64, stack: u32, family: u8) {
    // SAFETY: this thread's own TLS block; a nested handler on the same thread appends after us.
    let d = unsafe { &mut *heapledger_deferred() };
    let i = d.n as usize;
    if i < d.addr.len() {
        d.addr[i] = addr;
        d.size[i] = size;
        d.stack[i] = stack;
        d.family[i] = family;
        d.n += 1;
        DEFERRED_ANYWHERE.fetch_add(1, core::sync::atomic::Ordering::Relaxed);
    } else {
        crate::table::LOST.fetch_add(1, core::sync::atomic::Ordering::Relaxed);
    }
}

/// Applies this thread's queue at the end of a hook (or the start of the next one); leaves `busy` as it was.
#[inline(always)]
fn apply_deferred() {
    if DEFERRED_ANYWHERE.load(core::sync::atomic::Ordering::Relaxed) != 0 {
        // SAFETY: the calling thread's own state.
        let was = unsafe { (*thread::current()).busy };
        apply_deferred_slow(was);
    }
}

/// Sets `busy = BUSY_REAL` for a call to the real allocator, with this thread's queue empty.
///
/// Why: a handler that frees a block while this hook records has already released it, and the real call we are
/// about to make may return that very address. Were its queued settlement applied after the new block's entry,
/// it would erase it (the program's next free of the block would be rejected). With the queue empty, a handler
/// that runs inside the real call is `BUSY_REAL` and updates the ledger at once, in order.
#[inline(always)]
fn enter_real(t: &mut ThreadState) {
    if DEFERRED_ANYWHERE.load(core::sync::atomic::Ordering::Relaxed) != 0 {
        apply_deferred_slow(thread::BUSY_REAL);
    }
    t.busy = thread::BUSY_REAL;
}

/// Applies the queue in order and leaves `busy == after`.
///
/// `busy` is switched to `after` before the queue is reset, with one compare-and-swap: a handler that arrives
/// while `busy` is still `BUSY_HOOK` queues, the swap fails and we go round again; one that arrives after the
/// switch finds every queued entry applied. When `after` is 0 the switch comes after the reset instead: a handler
/// then is traced and would re-apply entries not yet reset.
#[cold]
fn apply_deferred_slow(after: u32) {
    use core::sync::atomic::Ordering::Relaxed;
    let t = thread::current();
    // SAFETY: this thread's own TLS block.
    let d = unsafe { &mut *heapledger_deferred() };
    // SAFETY: `d.n` is a valid, aligned u32 that only this thread (and its handlers) touches.
    let n = unsafe { core::sync::atomic::AtomicU32::from_ptr(&mut d.n) };
    let mut i = 0;
    loop {
        // SAFETY: the calling thread's own state (re-read: the callees below take it too).
        unsafe { (*t).busy = thread::BUSY_HOOK };
        let seen = n.load(Relaxed);
        while i < seen as usize {
            let (addr, size, stack, family) = (d.addr[i], d.size[i], d.stack[i], d.family[i]);
            if size == DEFERRED_SETTLE {
                record::internal_free(addr);
            } else {
                // SAFETY: this thread's own state.
                record::on_alloc(unsafe { &mut *t }, addr, size, family, stack);
            }
            i += 1;
        }
        if after != 0 {
            // SAFETY: as above.
            unsafe { (*t).busy = after };
        }
        if n.compare_exchange(seen, 0, Relaxed, Relaxed).is_ok() {
            DEFERRED_ANYWHERE.fetch_sub(seen, Relaxed);
            // SAFETY: as above.
            unsafe { (*t).busy = after };
            return;
        }
    }
}

/// An allocation made while this thread is already in the tracer: the tracer's own (`may_wait`: internal,
/// uncounted) or a signal handler's inside a hook (the program's: traced, applied when the hook finishes).
#[inline(always)]
fn internal_alloc(p: *mut c_void, size: usize, may_wait: bool, family: u8) {
    if may_wait {
        record::on_internal_alloc(p as u64, size as u64, true);
    } else {
        let stack = record::stack_id(record::alloc_depth());
        defer(p as u64, size as u64, stack, family);
    }
}

/// A free made while this thread is already in the tracer. Inside a hook it is queued like the allocations, so
/// that a block a handler allocates and frees is applied in that order; the block itself is released now.
fn internal_free(p: *mut c_void, may_wait: bool) {
    if may_wait {
        record::internal_free(p as u64);
    } else {
        defer(p as u64, DEFERRED_SETTLE, 0, 0);
    }
}

#[inline(always)]
fn real_fns() -> &'static Real {
    // SAFETY: only called after mode() returned Internal or Traced, i.e. after initialisation.
    unsafe { real::get() }
}

/// Runs tracer work with errno preserved and any panic contained (counted as a lost record).
#[inline(always)]
fn guarded<R: Default>(f: impl FnOnce() -> R) -> R {
    // One lookup of the slot for both the save and the restore.
    let slot = crate::sys::errno_slot();
    // SAFETY: the thread's errno slot.
    let e = unsafe { *slot };
    let r = std::panic::catch_unwind(core::panic::AssertUnwindSafe(f)).unwrap_or_else(|_| {
        crate::table::LOST.fetch_add(1, core::sync::atomic::Ordering::Relaxed);
        R::default()
    });
    // SAFETY: as above.
    unsafe { *slot = e };
    r
}

// ---- sampling mode's fast paths ------------------------------------------------------------------------------
//
// In sampling mode most calls record nothing: an allocation that does not reach the next sample point, a free of a
// block that cannot be sampled. Those are decided before the real call, which runs without the busy flag (a
// small frame for malloc, which counts the block once it is made; a tail call for free, counted first). A hook
// entered during that real call is therefore not marked internal: it is the program's own (a signal handler's);
// glibc's malloc and free call no interposed function themselves.

/// Whether sampling mode is on (the hooks' first test: one load of a read-mostly line).
#[inline(always)]
fn sampling() -> bool {
    crate::config::SAMPLE.load(core::sync::atomic::Ordering::Relaxed) != 0
}

/// Sampling mode's malloc of `size` bytes when it stays unsampled: `Some(p)`, the real malloc's result (counted
/// if made); `None` takes the full path (a sample point reached, a thread inside the tracer, queued handler
/// updates).
#[inline(always)]
fn unsampled_malloc(size: usize) -> Option<*mut c_void> {
    use core::sync::atomic::Ordering::Relaxed;
    if !sampling() || !real::ready() {
        return None;
    }
    // SAFETY: the TLS block is valid for the thread's lifetime and only this thread touches it.
    let t = unsafe { &mut *thread::current() };
    if t.busy != 0
        || DEFERRED_ANYWHERE.load(Relaxed) != 0
        || !record::stays_unsampled(t, size as u64)
    {
        return None;
    }
    // SAFETY: forwarding to the real malloc.
    let p = unsafe { (real_fns().malloc)(size) };
    if !p.is_null() {
        record::unsampled_made(t, size as u64);
    }
    Some(p)
}

/// The real functions, when sampling mode can release `p` without a lookup (no sampled block lives where it
/// points; counted here). `None` takes the full path. The test and count are `record::unsampled_free`'s, written
/// out: calling that function here changed the code of the traced `free_full` (+18 instructions per malloc/free
/// pair in callgrind, measured).
#[inline(always)]
fn unsampled_release(p: *mut c_void) -> Option<&'static Real> {
    use core::sync::atomic::Ordering::Relaxed;
    if !sampling() || p.is_null() || !real::ready() || real::in_arena(p) {
        return None;
    }
    // SAFETY: as in unsampled_malloc.
    let t = unsafe { &mut *thread::current() };
    if t.busy != 0 || DEFERRED_ANYWHERE.load(Relaxed) != 0 || crate::table::maybe_sampled(p as u64)
    {
        return None;
    }
    crate::counters::freed(t);
    Some(real_fns())
}

/// Allocation through `alloc`, recorded with family `fam` and size `size` (no sampling fast path here: see
/// `new_impl`).
#[inline(always)]
fn traced_alloc(
    size: usize,
    align: usize,
    fam: u8,
    alloc: impl FnOnce(&Real) -> *mut c_void,
) -> *mut c_void {
    match mode() {
        Mode::Early => real::arena_alloc(size, align),
        Mode::Internal(may_wait) => {
            let p = alloc(real_fns());
            if !p.is_null() {
                internal_alloc(p, size, may_wait, fam);
            }
            p
        }
        Mode::Traced(t) => {
            enter_real(t);
            let p = alloc(real_fns());
            t.busy = thread::BUSY_HOOK;
            if !p.is_null() && record::wants_entry(t, size as u64) {
                let stack = record::stack_id_of(t, record::alloc_depth());
                guarded(|| record::on_alloc(t, p as u64, size as u64, fam, stack));
            }
            t.busy = 0;
            apply_deferred();
            p
        }
    }
}

/// A release through `how`; returns whether the block should reach the real allocator.
#[inline(always)]
fn traced_free(p: *mut c_void, how: FreeFn) -> bool {
    if p.is_null() || real::in_arena(p) {
        return false;
    }
    match mode() {
        Mode::Early => false,
        // Released now, as without the tracer: holding it back changes what the allocator does next (a handler
        // that frees and mallocs the same size would reach the arena, not its lock-free cache).
        Mode::Internal(may_wait) => {
            internal_free(p, may_wait);
            true
        }
        Mode::Traced(t) => {
            if record::unsampled_free(t, p as u64) {
                return true;
            }
            t.busy = 1;
            let stack = record::stack_id_of(t, record::free_depth());
            let s = guarded(|| record::on_free(t, p as u64, how, stack));
            t.busy = 0;
            apply_deferred();
            !matches!(s, Settle::Rejected)
        }
    }
}

#[inline(always)]
fn release(p: *mut c_void, how: FreeFn) {
    if let Some(r) = unsampled_release(p) {
        // SAFETY: a block the real allocator handed out, released once.
        return unsafe { (r.free)(p) };
    }
    release_full(p, how);
}

/// [`release`] past sampling mode's fast path (`free` has taken it already).
#[inline(always)]
fn release_full(p: *mut c_void, how: FreeFn) {
    if traced_free(p, how) {
        // SAFETY: a block the real allocator handed out, released once.
        unsafe { (real_fns().free)(p) };
    }
}

// ---- C ------------------------------------------------------------------------------------------------------

/// `malloc(3)`.
#[no_mangle]
pub extern "C" fn malloc(size: usize) -> *mut c_void {
    if sampling() {
        malloc_sampled(size)
    } else {
        malloc_full(size)
    }
}

/// `malloc` in sampling mode: an unsampled allocation goes straight to the real malloc.
#[inline(never)]
extern "C" fn malloc_sampled(size: usize) -> *mut c_void {
    match unsampled_malloc(size) {
        Some(p) => p,
        None => malloc_full(size),
    }
}

/// `malloc`, traced. Out of line and entered by tail calls, so that `malloc` itself needs no frame and this
/// one's takes its place: the walk starts here, one frame below the program's caller, as if inlined.
#[inline(never)]
extern "C" fn malloc_full(size: usize) -> *mut c_void {
    // SAFETY: forwarding to the real malloc.
    traced_alloc(size, 16, family::MALLOC, |r| unsafe { (r.malloc)(size) })
}

/// `free(3)`.
#[no_mangle]
pub extern "C" fn free(p: *mut c_void) {
    if sampling() {
        free_sampled(p)
    } else {
        free_full(p)
    }
}

/// `free` in sampling mode: a block that cannot be sampled goes straight to the real free.
#[inline(never)]
extern "C" fn free_sampled(p: *mut c_void) {
    if let Some(r) = unsampled_release(p) {
        // SAFETY: a block the real allocator handed out, released once.
        return unsafe { (r.free)(p) };
    }
    free_full(p)
}

/// `free`, traced (see `malloc_full`).
#[inline(never)]
extern "C" fn free_full(p: *mut c_void) {
    release_full(p, FreeFn::Free);
}

/// `calloc(3)`.
#[no_mangle]
pub extern "C" fn calloc(n: usize, m: usize) -> *mut c_void {
    let Some(total) = n.checked_mul(m) else {
        crate::sys::set_errno(libc::ENOMEM);
        return core::ptr::null_mut();
    };
    match mode() {
        Mode::Traced(t) => {
            enter_real(t);
            // SAFETY: forwarding to the real calloc.
            let p = unsafe { (real_fns().calloc)(n, m) };
            t.busy = thread::BUSY_HOOK;
            if !p.is_null() {
                let size = record::tracer_share_removed(total as u64, m);
                if record::wants_entry(t, size) {
                    let stack = record::stack_id_of(t, record::alloc_depth());
                    guarded(|| record::on_alloc(t, p as u64, size, family::MALLOC, stack));
                }
            }
            t.busy = 0;
            apply_deferred();
            p
        }
        // SAFETY: forwarding to the real calloc (the arena is zeroed memory).
        _ => traced_alloc(total, 16, family::MALLOC, |r| unsafe { (r.calloc)(n, m) }),
    }
}

/// realloc/reallocarray: settle the old block first (another thread may be handed its address the moment the
/// real realloc frees it), then record the new one; on failure put the old block back.
fn realloc_common(
    p: *mut c_void,
    size: usize,
    how: FreeFn,
    call: impl FnOnce(&Real) -> *mut c_void,
) -> *mut c_void {
    if p.is_null() {
        return traced_alloc(size, 16, family::MALLOC, call);
    }
    if real::in_arena(p) {
        let q = malloc(size);
        if !q.is_null() {
            // SAFETY: both blocks are valid for the copied length.
            unsafe {
                core::ptr::copy_nonoverlapping(
                    p as *const u8,
                    q as *mut u8,
                    real::arena_size(p).min(size),
                )
            };
        }
        return q;
    }
    match mode() {
        Mode::Early => core::ptr::null_mut(),
        Mode::Internal(may_wait) => {
            internal_free(p, may_wait);
            let q = call(real_fns());
            if !q.is_null() {
                internal_alloc(q, size, may_wait, family::MALLOC);
            }
            q
        }
        Mode::Traced(t) => {
            t.busy = 1;
            let free_stack = record::stack_id_of(t, record::free_depth());
            let settled = guarded(|| record::on_free(t, p as u64, how, free_stack));
            let q = match settled {
                Settle::Rejected => {
                    crate::sys::set_errno(libc::ENOMEM);
                    core::ptr::null_mut()
                }
                Settle::Live(old) => {
                    enter_real(t);
                    let q = call(real_fns());
                    t.busy = thread::BUSY_HOOK;
                    if !q.is_null() {
                        let stack = record::stack_id_of(t, record::alloc_depth());
                        guarded(|| {
                            record::on_alloc(t, q as u64, size as u64, family::MALLOC, stack)
                        });
                    } else if size != 0 {
                        guarded(|| record::undo_free(old));
                    }
                    q
                }
                Settle::Unknown => {
                    enter_real(t);
                    let q = call(real_fns());
                    t.busy = thread::BUSY_HOOK;
                    if !q.is_null() && record::wants_entry(t, size as u64) {
                        let stack = record::stack_id_of(t, record::alloc_depth());
                        guarded(|| {
                            record::on_alloc(t, q as u64, size as u64, family::MALLOC, stack)
                        });
                    }
                    q
                }
            };
            t.busy = 0;
            apply_deferred();
            q
        }
    }
}

/// `realloc(3)`.
#[no_mangle]
pub extern "C" fn realloc(p: *mut c_void, size: usize) -> *mut c_void {
    // SAFETY: forwarding to the real realloc.
    realloc_common(p, size, FreeFn::Realloc, |r| unsafe {
        (r.realloc)(p, size)
    })
}

/// `reallocarray(3)`.
#[no_mangle]
pub extern "C" fn reallocarray(p: *mut c_void, n: usize, m: usize) -> *mut c_void {
    let Some(total) = n.checked_mul(m) else {
        crate::sys::set_errno(libc::ENOMEM);
        return core::ptr::null_mut();
    };
    realloc_common(p, total, FreeFn::ReallocArray, |r| match r.reallocarray {
        // SAFETY: forwarding to the real function.
        Some(f) => unsafe { f(p, n, m) },
        // SAFETY: as above; the product was checked.
        None => unsafe { (r.realloc)(p, total) },
    })
}

fn valid_align(a: usize) -> bool {
    a.is_power_of_two()
}

/// `posix_memalign(3)`.
///
/// # Safety
/// `out` must be a valid pointer, as for the real function.
#[no_mangle]
pub unsafe extern "C" fn posix_memalign(out: *mut *mut c_void, align: usize, size: usize) -> c_int {
    if !valid_align(align) || !align.is_multiple_of(core::mem::size_of::<usize>()) {
        return libc::EINVAL;
    }
    let mut rc = 0;
    let p = traced_alloc(size, align, family::ALIGNED, |r| {
        let mut q = core::ptr::null_mut();
        // SAFETY: forwarding to the real function with a valid out-pointer.
        rc = unsafe { (r.posix_memalign)(&mut q, align, size) };
        q
    });
    if p.is_null() {
        return if rc != 0 { rc } else { libc::ENOMEM };
    }
    // SAFETY: the caller's out-pointer.
    unsafe { *out = p };
    0
}

fn aligned_via(
    r: &Real,
    f: Option<unsafe extern "C" fn(usize, usize) -> *mut c_void>,
    a: usize,
    n: usize,
) -> *mut c_void {
    match f {
        // SAFETY: forwarding to the real function.
        Some(f) => unsafe { f(a, n) },
        None => {
            let mut q = core::ptr::null_mut();
            // SAFETY: forwarding with a valid out-pointer.
            let rc = unsafe { (r.posix_memalign)(&mut q, a.max(core::mem::size_of::<usize>()), n) };
            if rc != 0 {
                crate::sys::set_errno(rc);
            }
            q
        }
    }
}

// aligned_alloc and memalign accept any alignment in glibc (rounded up to a power of two, 0 meaning the
// default): the real function decides, as it would without the tracer.

/// `aligned_alloc(3)`.
#[no_mangle]
pub extern "C" fn aligned_alloc(align: usize, size: usize) -> *mut c_void {
    traced_alloc(size, align, family::ALIGNED, |r| {
        aligned_via(r, r.aligned_alloc, align, size)
    })
}

/// `memalign(3)`.
#[no_mangle]
pub extern "C" fn memalign(align: usize, size: usize) -> *mut c_void {
    traced_alloc(size, align, family::ALIGNED, |r| {
        aligned_via(r, r.memalign, align, size)
    })
}

fn page() -> usize {
    // SAFETY: sysconf has no preconditions.
    unsafe { libc::sysconf(libc::_SC_PAGESIZE) as usize }
}

/// `valloc(3)`.
#[no_mangle]
pub extern "C" fn valloc(size: usize) -> *mut c_void {
    let pg = page();
    traced_alloc(size, pg, family::ALIGNED, |r| match r.valloc {
        // SAFETY: forwarding.
        Some(f) => unsafe { f(size) },
        None => aligned_via(r, None, pg, size),
    })
}

/// `pvalloc(3)`: the size is rounded up to whole pages, and recorded rounded (as Valgrind does).
#[no_mangle]
pub extern "C" fn pvalloc(size: usize) -> *mut c_void {
    let pg = page();
    let Some(rounded) = size.checked_add(pg - 1).map(|s| (s & !(pg - 1)).max(pg)) else {
        crate::sys::set_errno(libc::ENOMEM);
        return core::ptr::null_mut();
    };
    traced_alloc(rounded, pg, family::ALIGNED, |r| match r.pvalloc {
        // SAFETY: forwarding.
        Some(f) => unsafe { f(size) },
        None => aligned_via(r, None, pg, rounded),
    })
}

/// `malloc_usable_size(3)`.
#[no_mangle]
pub extern "C" fn malloc_usable_size(p: *mut c_void) -> usize {
    if p.is_null() {
        return 0;
    }
    if real::in_arena(p) {
        return real::arena_size(p);
    }
    if !real::ready() && !real::ensure_init() {
        return 0;
    }
    match real_fns().malloc_usable_size {
        // SAFETY: forwarding.
        Some(f) => unsafe { f(p) },
        None => crate::table::shard_of(p as u64)
            .lock()
            .get(p as u64)
            .map_or(0, |b| b.size() as usize),
    }
}

// ---- C++ ----------------------------------------------------------------------------------------------------
//
// operator new is served by the real malloc/posix_memalign like Valgrind's replacement does; only when that
// fails is the C++ runtime's own operator new called (with the family override set), so that the new-handler
// loop runs and `std::bad_alloc` is thrown through this frame ("C-unwind").

/// Restores the previous override when the runtime's operator new returns or throws.
struct OverrideGuard(*mut ThreadState, u32, u64);
impl Drop for OverrideGuard {
    fn drop(&mut self) {
        // SAFETY: the calling thread's own state.
        unsafe {
            (*self.0).family_override = self.1;
            (*self.0).override_size = self.2;
        }
    }
}

fn with_override<R>(fam: u8, size: usize, f: impl FnOnce() -> R) -> R {
    let t = thread::current();
    // SAFETY: the calling thread's own state.
    let _g = unsafe {
        let g = OverrideGuard(t, (*t).family_override, (*t).override_size);
        (*t).family_override = fam as u32 + 1;
        (*t).override_size = size as u64;
        g
    };
    f()
}

fn new_impl(
    size: usize,
    fam: u8,
    slow: Option<unsafe extern "C-unwind" fn(usize) -> *mut c_void>,
) -> *mut c_void {
    // Sampling mode's fast path, as in `malloc` (the real call is malloc's). Only where the real function is
    // malloc or free: another (glibc's reallocarray, say) may forward to an interposed one, which must then see
    // BUSY_REAL and be recorded as internal, not counted a second time. A failed malloc goes on to the runtime's
    // operator new below (its new-handler, then bad_alloc), traced.
    let p = match unsampled_malloc(size) {
        Some(p) if !p.is_null() => return p,
        // SAFETY: forwarding.
        _ => traced_alloc(size, 16, fam, |r| unsafe { (r.malloc)(size) }),
    };
    if !p.is_null() || !real::ready() {
        return p;
    }
    match slow {
        // SAFETY: the runtime's operator new; it may throw, which unwinds through us by design.
        Some(f) => with_override(fam, size, || unsafe { f(size) }),
        None => p,
    }
}

fn new_aligned_impl(
    size: usize,
    align: usize,
    fam: u8,
    slow: Option<unsafe extern "C-unwind" fn(usize, usize) -> *mut c_void>,
) -> *mut c_void {
    let a = align.max(core::mem::size_of::<usize>());
    let p = traced_alloc(size, a, fam, |r| {
        let mut q = core::ptr::null_mut();
        // SAFETY: forwarding with a valid out-pointer.
        unsafe { (r.posix_memalign)(&mut q, a, size) };
        q
    });
    if !p.is_null() || !real::ready() {
        return p;
    }
    match slow {
        // SAFETY: the runtime's operator new; it may throw.
        Some(f) => with_override(fam, size, || unsafe { f(size, align) }),
        None => p,
    }
}

/// `operator new(size_t)`.
#[no_mangle]
pub extern "C-unwind" fn _Znwm(size: usize) -> *mut c_void {
    new_impl(
        size,
        family::NEW,
        real::ready().then(|| real_fns().new).flatten(),
    )
}

/// `operator new[](size_t)`.
#[no_mangle]
pub extern "C-unwind" fn _Znam(size: usize) -> *mut c_void {
    new_impl(
        size,
        family::NEW_ARRAY,
        real::ready().then(|| real_fns().new_array).flatten(),
    )
}

/// `operator new(size_t, const std::nothrow_t&)`.
#[no_mangle]
pub extern "C-unwind" fn _ZnwmRKSt9nothrow_t(size: usize, nt: *const c_void) -> *mut c_void {
    let p = new_impl(size, family::NEW, None);
    match (p.is_null() && real::ready())
        .then(|| real_fns().new_nothrow)
        .flatten()
    {
        // SAFETY: the runtime's nothrow operator new.
        Some(f) => with_override(family::NEW, size, || unsafe { f(size, nt) }),
        None => p,
    }
}

/// `operator new[](size_t, const std::nothrow_t&)`.
#[no_mangle]
pub extern "C-unwind" fn _ZnamRKSt9nothrow_t(size: usize, nt: *const c_void) -> *mut c_void {
    let p = new_impl(size, family::NEW_ARRAY, None);
    match (p.is_null() && real::ready())
        .then(|| real_fns().new_array_nothrow)
        .flatten()
    {
        // SAFETY: the runtime's nothrow operator new[].
        Some(f) => with_override(family::NEW_ARRAY, size, || unsafe { f(size, nt) }),
        None => p,
    }
}

/// `operator new(size_t, std::align_val_t)`.
#[no_mangle]
pub extern "C-unwind" fn _ZnwmSt11align_val_t(size: usize, align: usize) -> *mut c_void {
    new_aligned_impl(
        size,
        align,
        family::NEW,
        real::ready().then(|| real_fns().new_align).flatten(),
    )
}

/// `operator new[](size_t, std::align_val_t)`.
#[no_mangle]
pub extern "C-unwind" fn _ZnamSt11align_val_t(size: usize, align: usize) -> *mut c_void {
    new_aligned_impl(
        size,
        align,
        family::NEW_ARRAY,
        real::ready().then(|| real_fns().new_array_align).flatten(),
    )
}

/// `operator new(size_t, std::align_val_t, const std::nothrow_t&)`.
#[no_mangle]
pub extern "C-unwind" fn _ZnwmSt11align_val_tRKSt9nothrow_t(
    size: usize,
    align: usize,
    nt: *const c_void,
) -> *mut c_void {
    let p = new_aligned_impl(size, align, family::NEW, None);
    match (p.is_null() && real::ready())
        .then(|| real_fns().new_align_nothrow)
        .flatten()
    {
        // SAFETY: the runtime's function.
        Some(f) => with_override(family::NEW, size, || unsafe { f(size, align, nt) }),
        None => p,
    }
}

/// `operator new[](size_t, std::align_val_t, const std::nothrow_t&)`.
#[no_mangle]
pub extern "C-unwind" fn _ZnamSt11align_val_tRKSt9nothrow_t(
    size: usize,
    align: usize,
    nt: *const c_void,
) -> *mut c_void {
    let p = new_aligned_impl(size, align, family::NEW_ARRAY, None);
    match (p.is_null() && real::ready())
        .then(|| real_fns().new_array_align_nothrow)
        .flatten()
    {
        // SAFETY: the runtime's function.
        Some(f) => with_override(family::NEW_ARRAY, size, || unsafe { f(size, align, nt) }),
        None => p,
    }
}

macro_rules! delete_fn {
    ($(#[$doc:meta] $name:ident ( $($arg:ident : $ty:ty),* ) => $how:expr;)*) => {$(
        #[$doc]
        #[no_mangle]
        pub extern "C" fn $name(p: *mut c_void $(, $arg: $ty)*) {
            $(let _ = $arg;)*
            release(p, $how);
        }
    )*};
}

delete_fn! {
    /// `operator delete(void*)`.
    _ZdlPv() => FreeFn::Delete;
    /// `operator delete[](void*)`.
    _ZdaPv() => FreeFn::DeleteArray;
    /// `operator delete(void*, size_t)`.
    _ZdlPvm(size: usize) => FreeFn::Delete;
    /// `operator delete[](void*, size_t)`.
    _ZdaPvm(size: usize) => FreeFn::DeleteArray;
    /// `operator delete(void*, const std::nothrow_t&)`.
    _ZdlPvRKSt9nothrow_t(nt: *const c_void) => FreeFn::Delete;
    /// `operator delete[](void*, const std::nothrow_t&)`.
    _ZdaPvRKSt9nothrow_t(nt: *const c_void) => FreeFn::DeleteArray;
    /// `operator delete(void*, std::align_val_t)`.
    _ZdlPvSt11align_val_t(align: usize) => FreeFn::Delete;
    /// `operator delete[](void*, std::align_val_t)`.
    _ZdaPvSt11align_val_t(align: usize) => FreeFn::DeleteArray;
    /// `operator delete(void*, size_t, std::align_val_t)`.
    _ZdlPvmSt11align_val_t(size: usize, align: usize) => FreeFn::Delete;
    /// `operator delete[](void*, size_t, std::align_val_t)`.
    _ZdaPvmSt11align_val_t(size: usize, align: usize) => FreeFn::DeleteArray;
    /// `operator delete(void*, std::align_val_t, const std::nothrow_t&)`.
    _ZdlPvSt11align_val_tRKSt9nothrow_t(align: usize, nt: *const c_void) => FreeFn::Delete;
    /// `operator delete[](void*, std::align_val_t, const std::nothrow_t&)`.
    _ZdaPvSt11align_val_tRKSt9nothrow_t(align: usize, nt: *const c_void) => FreeFn::DeleteArray;
}

// ---- process and loader events ------------------------------------------------------------------------------

/// `dlclose(3)`: remember the module map before the library goes; after, drop cached unwind rules and note the
/// stack count it went at.
///
/// # Safety
/// As for the real dlclose.
#[no_mangle]
pub unsafe extern "C" fn dlclose(handle: *mut c_void) -> c_int {
    if !real::ready() && !real::ensure_init() {
        return -1;
    }
    let Some(f) = real_fns().dlclose else {
        return -1;
    };
    // SAFETY: the calling thread's state.
    let outer = unsafe { (*thread::current()).busy } == 0;
    if outer {
        thread::with_busy(thread::BUSY_TRACER, || guarded(crate::modules::refresh));
    }
    // SAFETY: forwarding.
    let rc = unsafe { f(handle) };
    crate::stack::invalidate();
    if outer && rc == 0 {
        // Again once it is gone: the stack count it was unloaded at is what tells its stacks from those of a
        // library mapped at its place later (modules::Module::stacks_to).
        thread::with_busy(thread::BUSY_TRACER, || guarded(crate::modules::refresh));
    }
    rc
}

// `exec` replaces the memory the end watcher (platform::watch) shares: it is stopped first, and restarted if
// the exec fails. (execl, execle and execlp are variadic, which Rust cannot define; the watcher notices those
// execs itself within a second.)

/// Runs an exec with the end watcher stopped; `None`: the real function is missing (ENOSYS, as libc would).
fn exec_with(call: impl FnOnce(&Real) -> Option<c_int>) -> c_int {
    if !real::ready() && !real::ensure_init() {
        crate::sys::set_errno(libc::ENOSYS);
        return -1;
    }
    crate::platform::watch::before_exec();
    let rc = call(real_fns()).unwrap_or_else(|| {
        crate::sys::set_errno(libc::ENOSYS);
        -1
    });
    crate::platform::watch::after_failed_exec();
    rc
}

/// `execve(2)`.
///
/// # Safety
/// As for the real function.
#[no_mangle]
pub unsafe extern "C" fn execve(path: real::Path, argv: real::Argv, envp: real::Argv) -> c_int {
    // SAFETY: forwarding.
    exec_with(|r| r.execve.map(|f| unsafe { f(path, argv, envp) }))
}

/// `execvpe(3)`.
///
/// # Safety
/// As for the real function.
#[no_mangle]
pub unsafe extern "C" fn execvpe(file: real::Path, argv: real::Argv, envp: real::Argv) -> c_int {
    // SAFETY: forwarding.
    exec_with(|r| r.execvpe.map(|f| unsafe { f(file, argv, envp) }))
}

/// `execv(3)`.
///
/// # Safety
/// As for the real function.
#[no_mangle]
pub unsafe extern "C" fn execv(path: real::Path, argv: real::Argv) -> c_int {
    // SAFETY: forwarding.
    exec_with(|r| r.execv.map(|f| unsafe { f(path, argv) }))
}

/// `execvp(3)`.
///
/// # Safety
/// As for the real function.
#[no_mangle]
pub unsafe extern "C" fn execvp(file: real::Path, argv: real::Argv) -> c_int {
    // SAFETY: forwarding.
    exec_with(|r| r.execvp.map(|f| unsafe { f(file, argv) }))
}

/// `fexecve(3)`.
///
/// # Safety
/// As for the real function.
#[no_mangle]
pub unsafe extern "C" fn fexecve(fd: c_int, argv: real::Argv, envp: real::Argv) -> c_int {
    // SAFETY: forwarding.
    exec_with(|r| r.fexecve.map(|f| unsafe { f(fd, argv, envp) }))
}

fn exit_now(code: c_int, f: Option<unsafe extern "C" fn(c_int) -> !>) -> ! {
    crate::lifecycle::before_underscore_exit();
    match f {
        // SAFETY: the real _exit/_Exit.
        Some(f) => unsafe { f(code) },
        // SAFETY: exit_group never returns.
        None => unsafe {
            libc::syscall(libc::SYS_exit_group, code);
            core::hint::unreachable_unchecked()
        },
    }
}

/// `_exit(2)`: the program skips exit handlers, so the dump is written here.
#[no_mangle]
pub extern "C" fn _exit(code: c_int) -> ! {
    let f = (real::ready() || real::ensure_init())
        .then(|| real_fns().exit_)
        .flatten();
    exit_now(code, f)
}

/// `_Exit(2)`.
#[no_mangle]
pub extern "C" fn _Exit(code: c_int) -> ! {
    let f = (real::ready() || real::ensure_init())
        .then(|| real_fns().exit_upper)
        .flatten();
    exit_now(code, f)
}
