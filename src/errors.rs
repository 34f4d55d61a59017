//! Heap errors found while the program runs: kept with every stack involved, counted exactly.

use crate::lock::SpinLock;
use core::sync::atomic::{AtomicU64, Ordering};

/// At most this many errors are kept in full; the counts stay exact beyond it.
pub const MAX_KEPT: usize = 1000;
/// "No stack known" in the stack fields.
pub const NO_STACK: u32 = u32::MAX;

/// Error kinds, indexing [`KIND_NAMES`].
#[derive(Clone, Copy, PartialEq, Eq)]
#[allow(clippy::enum_variant_names)] // the names are the dump's kinds: double_free, invalid_free, ...
#[repr(u8)]
pub enum Kind {
    /// A block freed twice.
    DoubleFree = 0,
    /// A pointer that is not a live block start.
    InvalidFree = 1,
    /// new/free, malloc/delete, new[]/delete, new/delete[].
    MismatchedFree = 2,
    /// A block released through another heap or runtime (Windows).
    #[cfg_attr(not(windows), allow(dead_code))]
    CrossHeapFree = 3,
}

/// Names used in the dump (`kind`).
pub const KIND_NAMES: [&str; 4] = [
    "double_free",
    "invalid_free",
    "mismatched_free",
    "cross_heap_free",
];

/// How the program released the block (`freed_with`).
#[derive(Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum FreeFn {
    /// free()
    Free = 0,
    /// realloc()
    Realloc = 1,
    /// reallocarray()
    ReallocArray = 2,
    /// operator delete (any variant but arrays)
    Delete = 3,
    /// operator delete[]
    DeleteArray = 4,
}

/// Names used in the dump (`freed_with`).
pub const FREE_NAMES: [&str; 5] = ["free", "realloc", "reallocarray", "delete", "delete[]"];

/// Why a free was invalid (`detail`).
#[derive(Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Detail {
    /// Not applicable.
    None = 0,
    /// Never returned by an allocator we saw.
    NeverAllocated = 1,
    /// Inside a live block, not at its start.
    Interior = 2,
    /// A stack address.
    Stack = 3,
    /// Inside a loaded module (a global or static).
    Static = 4,
}

/// Names used in the dump (`detail`).
pub const DETAIL_NAMES: [&str; 5] = ["", "never_allocated", "interior", "stack", "static"];

/// One error with its stacks.
#[derive(Clone, Copy)]
pub struct Error {
    /// Kind.
    pub kind: Kind,
    /// Pointer passed to the free function.
    pub addr: u64,
    /// Size of the block concerned (0 if unknown).
    pub size: u64,
    /// Family of the block (0xff: unknown).
    pub family: u8,
    /// The releasing function.
    pub freed_with: FreeFn,
    /// Detail for invalid frees.
    pub detail: Detail,
    /// Thread that made the bad call.
    pub tid: u32,
    /// Stack of the bad call.
    pub stack: u32,
    /// Allocation stack, or NO_STACK.
    pub alloc_stack: u32,
    /// First free's stack (double free), or NO_STACK.
    pub first_free_stack: u32,
    /// Windows: the releasing function and cross-heap detail (`platform::names`), set by [`report`].
    #[cfg(windows)]
    pub via: u32,
}

struct Store {
    items: [Error; MAX_KEPT],
    len: usize,
}

static STORE: SpinLock<Store> = SpinLock::new(Store {
    items: [Error {
        kind: Kind::DoubleFree,
        addr: 0,
        size: 0,
        family: 0,
        freed_with: FreeFn::Free,
        detail: Detail::None,
        tid: 0,
        stack: 0,
        alloc_stack: 0,
        first_free_stack: 0,
        #[cfg(windows)]
        via: 0,
    }; MAX_KEPT],
    len: 0,
});

static COUNTS: [AtomicU64; 4] = [
    AtomicU64::new(0),
    AtomicU64::new(0),
    AtomicU64::new(0),
    AtomicU64::new(0),
];
/// Errors counted but not kept.
pub static LOST: AtomicU64 = AtomicU64::new(0);

/// Records an error.
pub fn report(e: Error) {
    #[cfg(windows)]
    let e = Error {
        via: crate::platform::names::current_via(),
        ..e
    };
    COUNTS[e.kind as usize].fetch_add(1, Ordering::Relaxed);
    {
        let mut s = STORE.lock();
        if s.len < MAX_KEPT {
            let n = s.len;
            s.items[n] = e;
            s.len += 1;
        } else {
            LOST.fetch_add(1, Ordering::Relaxed);
        }
    }
    #[cfg(windows)]
    if crate::config::VERBOSE.load(Ordering::Relaxed) != 0 {
        crate::platform::names::print_error(&e);
        return;
    }
    if crate::config::VERBOSE.load(Ordering::Relaxed) != 0 {
        let mut a = [0u8; 20];
        let mut b = [0u8; 20];
        crate::sys::eprint(&[
            b"heapledger: ",
            KIND_NAMES[e.kind as usize].as_bytes(),
            b" of pointer ",
            crate::json::fmt_u64(e.addr, &mut a),
            b" (",
            crate::json::fmt_u64(e.size, &mut b),
            b" bytes) via ",
            FREE_NAMES[e.freed_with as usize].as_bytes(),
        ]);
    }
}

/// Exact counts per kind.
pub fn counts() -> [u64; 4] {
    [0, 1, 2, 3].map(|i| COUNTS[i].load(Ordering::Relaxed))
}

/// Calls `f` with the kept errors (under the store's lock; `f` must not allocate through the hooks).
pub fn with_kept<R>(f: impl FnOnce(&[Error]) -> R) -> R {
    let s = STORE.lock();
    f(&s.items[..s.len])
}

/// Like [`with_kept`] without the lock, for the crash handler (a torn view is acceptable there, waiting is not).
pub fn with_kept_unlocked<R>(f: impl FnOnce(&[Error]) -> R) -> R {
    // SAFETY: crash path only; entries are plain data and `len` only grows.
    let s = unsafe { &*STORE.get_unlocked() };
    f(&s.items[..s.len.min(MAX_KEPT)])
}

/// The store's lock, for fork handling.
pub fn lock_for_fork() -> &'static SpinLock<impl Sized> {
    &STORE
}
