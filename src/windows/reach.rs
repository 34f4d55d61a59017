//! Leak classification on Windows: not implemented yet. Every block is written with class 0 ("not scanned"),
//! which the CLI reports as a leak without a reachability verdict.
//!
//! What a port of `src/linux/reach.rs` would need: the writable sections of every module (from the PE section
//! headers `modules.rs` already reads), each thread's stack (`NT_TIB.StackLimit..StackBase`, recorded by
//! [`register_thread`] at a thread's first allocation) and the exiting thread's registers.

use alloc::vec::Vec;

/// Root ranges (none on Windows yet).
pub struct Roots;

/// Nothing to record yet.
pub fn register_thread() {}

/// No roots are gathered.
pub fn roots() -> Roots {
    Roots
}

/// Always None: blocks keep class 0.
pub fn classify(_keys: &[u64], _big: impl Fn(u64) -> u64, _roots: &Roots) -> Option<Vec<u8>> {
    None
}
