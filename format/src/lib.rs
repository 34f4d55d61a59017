//! The heapledger dump format (see `docs/dump-format.md`, which is the contract).
//!
//! Two audiences use this crate:
//!
//! * the preload library (the writer) builds it with `default-features = false`: it then has no dependencies,
//!   is `no_std`, and exposes only the constants below, so the writer spells every name the same way the
//!   reader expects it;
//! * the CLI and tests use the default `serde` feature, which adds the [`Dump`] types and [`load`], a reader
//!   that validates a dump so later code can index `stacks`/`allocators` with the ids in it without panicking.
#![cfg_attr(not(feature = "std"), no_std)]
#![warn(missing_docs)]

/// Value of the top-level `"format"` key.
pub const FORMAT: &str = "heapledger";

/// Value of the top-level `"version"` key. Bumped by any change a version-1 reader would misread.
pub const VERSION: u64 = 1;

/// Allocator families, in the order of the `"allocators"` array; a block's `family` indexes it.
pub const ALLOCATORS: [&str; 4] = ["malloc", "aligned", "new", "new[]"];

/// Indexes into [`ALLOCATORS`] (a block's `family`).
pub mod family {
    /// `malloc`, `calloc`, `realloc`, `strdup`, ...
    pub const MALLOC: u8 = 0;
    /// `posix_memalign`, `aligned_alloc`, `memalign`, `valloc`, `pvalloc`.
    pub const ALIGNED: u8 = 1;
    /// Scalar `operator new` (all overloads).
    pub const NEW: u8 = 2;
    /// Array `operator new[]` (all overloads).
    pub const NEW_ARRAY: u8 = 3;
}

/// Values of an error's `"kind"`, in the order of the `"error_counts"` object.
pub const ERROR_KINDS: [&str; 4] = [
    "double_free",
    "invalid_free",
    "mismatched_free",
    "cross_heap_free",
];

/// Error kind names (each is also a key of `"error_counts"`).
pub mod error_kind {
    /// A block freed a second time.
    pub const DOUBLE_FREE: &str = "double_free";
    /// A pointer the allocator never returned (see [`super::invalid_free`] for the `detail` values).
    pub const INVALID_FREE: &str = "invalid_free";
    /// Freed with the wrong family (`delete` on `malloc`, `free` on `new[]`, ...).
    pub const MISMATCHED_FREE: &str = "mismatched_free";
    /// Freed through a different heap than the one that allocated it (Windows CRTs).
    pub const CROSS_HEAP_FREE: &str = "cross_heap_free";
}

/// Values of `"detail"` for `invalid_free` errors.
pub mod invalid_free {
    /// The pointer was never returned by an allocator.
    pub const NEVER_ALLOCATED: &str = "never_allocated";
    /// The pointer is inside a live block; `addr` is the pointer passed, `size` the block's.
    pub const INTERIOR: &str = "interior";
    /// The pointer is a stack address.
    pub const STACK: &str = "stack";
    /// The pointer is inside a module's data.
    pub const STATIC: &str = "static";
    /// The pointer is in the tracer's own bootstrap arena.
    pub const BOOTSTRAP: &str = "bootstrap";
    /// All of the above, in documentation order.
    pub const ALL: [&str; 5] = [NEVER_ALLOCATED, INTERIOR, STACK, STATIC, BOOTSTRAP];
}

/// Values of `"reason"`: why a dump was written.
pub mod reason {
    /// `exit()` or return from `main` (including the last thread's `pthread_exit`).
    pub const EXIT: &str = "exit";
    /// `_exit`/`_Exit` called directly.
    pub const UNDERSCORE_EXIT: &str = "_exit";
    /// Snapshot requested with the `HEAPLEDGER_SIGNAL` signal.
    pub const SIGNAL: &str = "signal";
    /// Periodic snapshot (`HEAPLEDGER_INTERVAL`).
    pub const INTERVAL: &str = "interval";
    /// Fatal signal; `detail` names it.
    pub const CRASH: &str = "crash";
    /// API or CLI request.
    pub const REQUEST: &str = "request";
    /// The program ended with a raw `exit_group` system call (no exit handler ran; Go's runtime does this):
    /// written by the end watcher, blocks not classified; `detail` gives the status.
    pub const EXIT_GROUP: &str = "exit_group";
    /// The program was killed by a signal no handler saw (SIGKILL, the OOM killer): written by the end
    /// watcher; `detail` names the signal.
    pub const KILLED: &str = "killed";
    /// All of the above, in documentation order.
    pub const ALL: [&str; 8] = [
        EXIT,
        UNDERSCORE_EXIT,
        SIGNAL,
        INTERVAL,
        CRASH,
        REQUEST,
        EXIT_GROUP,
        KILLED,
    ];
    /// The reasons of a dump written as the process ended (the others are snapshots).
    pub const FINAL: [&str; 5] = [EXIT, UNDERSCORE_EXIT, CRASH, EXIT_GROUP, KILLED];
    /// The reasons whose live blocks are judged as leaks: the program ended on its own.
    pub const LEAKS_JUDGED: [&str; 3] = [EXIT, UNDERSCORE_EXIT, EXIT_GROUP];
}

/// Reachability classes (a block's `class`).
pub mod class {
    /// The heap was not scanned.
    pub const NOT_SCANNED: u8 = 0;
    /// Reachable from a root.
    pub const REACHABLE: u8 = 1;
    /// No pointer to the block was found.
    pub const DEFINITELY_LOST: u8 = 2;
    /// Only reachable from definitely lost blocks.
    pub const INDIRECTLY_LOST: u8 = 3;
    /// Class names, indexed by class number.
    pub const NAMES: [&str; 4] = [
        "not scanned",
        "reachable",
        "definitely lost",
        "indirectly lost",
    ];
}

/// `p_flags` bits of a module segment (`[vaddr, memsz, flags]`).
pub mod segment_flags {
    /// Executable.
    pub const X: u64 = 1;
    /// Writable.
    pub const W: u64 = 2;
    /// Readable.
    pub const R: u64 = 4;
}

#[cfg(feature = "serde")]
mod dump;
#[cfg(feature = "serde")]
mod load;

#[cfg(feature = "serde")]
pub use dump::{
    Block, Dump, ErrorCounts, ErrorKind, ErrorRecord, Live, Module, Segment, Totals, Tracer,
};
#[cfg(feature = "serde")]
pub use load::{load, parse, LoadError, Problem};
