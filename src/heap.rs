//! The tracer's private heap: Rust's global allocator inside the preload library.
//!
//! Everything the tracer allocates for itself (module lists, unwinder scratch, symbol-free bookkeeping) comes from
//! anonymous mmap here, never from the program's allocator: the program's figures never include the tracer, a
//! program linked with jemalloc keeps its heap to itself, and no hook can be re-entered by our own bookkeeping.
//! Small requests use power-of-two size classes with free lists; large ones are mmap'd one by one. Failure
//! returns null; callers use fallible APIs (`try_reserve`) on paths that must degrade instead of aborting.

use crate::lock::SpinLock;
use crate::sys;
use core::alloc::{GlobalAlloc, Layout};
use core::sync::atomic::{AtomicUsize, Ordering};

const MIN_CLASS: usize = 4; // 16 bytes
const MAX_CLASS: usize = 16; // 64 KiB
const CHUNK: usize = 1 << 20;

struct Free {
    next: *mut Free,
}

struct Classes {
    free: [*mut Free; MAX_CLASS + 1],
    bump: *mut u8,
    bump_end: *mut u8,
}

// SAFETY: the raw pointers are only touched under the lock.
unsafe impl Send for Classes {}

static CLASSES: SpinLock<Classes> = SpinLock::new(Classes {
    free: [core::ptr::null_mut(); MAX_CLASS + 1],
    bump: core::ptr::null_mut(),
    bump_end: core::ptr::null_mut(),
});

/// Bytes the tracer has mapped for itself (reported in every dump).
pub static MAPPED: AtomicUsize = AtomicUsize::new(0);
/// Times the kernel refused the tracer memory (reported in every dump; the tracer degrades, never aborts).
pub static FAILURES: AtomicUsize = AtomicUsize::new(0);

/// A reserve mapped at start-up, handed out as a chunk when mmap fails, so that the small bookkeeping
/// allocations that Rust cannot make fallible (a module path, a list entry) still succeed under memory pressure.
static RESERVE: core::sync::atomic::AtomicPtr<u8> =
    core::sync::atomic::AtomicPtr::new(core::ptr::null_mut());

/// Maps the reserve (from initialisation, while memory is still there).
pub fn init_reserve() {
    let p = map_counted(CHUNK, false);
    RESERVE.store(p, Ordering::Release);
}

/// The lock, so that fork handling can hold it across `fork()`.
pub fn lock_for_fork() -> &'static SpinLock<impl Sized> {
    &CLASSES
}

fn class_of(layout: &Layout) -> usize {
    let need = layout.size().max(layout.align()).max(1 << MIN_CLASS);
    (usize::BITS - (need - 1).leading_zeros()) as usize
}

fn page_round(n: usize) -> usize {
    (n + 4095) & !4095
}

/// Maps memory for the tracer and counts it.
pub fn map_counted(len: usize, noreserve: bool) -> *mut u8 {
    let p = sys::map(len, noreserve);
    if !p.is_null() {
        MAPPED.fetch_add(len, Ordering::Relaxed);
    }
    p
}

/// Unmaps memory obtained from [`map_counted`].
pub fn unmap_counted(p: *mut u8, len: usize) {
    sys::unmap(p, len);
    MAPPED.fetch_sub(len, Ordering::Relaxed);
}

/// The global allocator type of the preload library.
pub struct PrivateHeap;

// SAFETY: blocks come from distinct mmap'd regions or free lists under a lock; alignment is guaranteed because
// every class size is a power of two >= the alignment and chunks are page-aligned.
unsafe impl GlobalAlloc for PrivateHeap {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let class = class_of(&layout);
        if class > MAX_CLASS || layout.align() > 4096 {
            if layout.align() > 4096 {
                return core::ptr::null_mut();
            }
            let p = map_counted(page_round(layout.size()), false);
            if p.is_null() {
                FAILURES.fetch_add(1, Ordering::Relaxed);
            }
            return p;
        }
        let size = 1usize << class;
        let mut c = CLASSES.lock();
        let head = c.free[class];
        if !head.is_null() {
            // SAFETY: free-list entries are blocks we handed out and got back, at least 16 bytes.
            c.free[class] = unsafe { (*head).next };
            return head.cast();
        }
        // Align the bump pointer to the class size (class sizes are powers of two, chunks page-aligned).
        let mut p = ((c.bump as usize + size - 1) & !(size - 1)) as *mut u8;
        if c.bump.is_null() || p as usize + size > c.bump_end as usize {
            drop(c);
            let mut chunk = map_counted(CHUNK, false);
            if chunk.is_null() {
                FAILURES.fetch_add(1, Ordering::Relaxed);
                chunk = RESERVE.swap(core::ptr::null_mut(), Ordering::AcqRel);
                if chunk.is_null() {
                    return core::ptr::null_mut();
                }
            }
            c = CLASSES.lock();
            // The tail of the old chunk is abandoned: cheaper than splitting it into classes, and rare.
            c.bump = chunk;
            // SAFETY: within the fresh mapping.
            c.bump_end = unsafe { chunk.add(CHUNK) };
            p = chunk;
        }
        // SAFETY: p + size <= bump_end by the check above.
        c.bump = unsafe { p.add(size) };
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        let class = class_of(&layout);
        if class > MAX_CLASS {
            unmap_counted(ptr, page_round(layout.size()));
            return;
        }
        let mut c = CLASSES.lock();
        let f = ptr.cast::<Free>();
        // SAFETY: the block is ours, at least 16 bytes and suitably aligned for a pointer.
        unsafe { (*f).next = c.free[class] };
        c.free[class] = f;
    }
}
