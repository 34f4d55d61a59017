//! heapledger's preload library: a ledger of the heap of an unmodified program.
//!
//! `LD_PRELOAD=libheapledger.so prog` interposes the malloc family and C++ operator new/delete. Every
//! allocation becomes an entry (address, size, family, thread, sequence number, interned call stack) in a sharded
//! table; every free settles one. Double, invalid and mismatched frees are reported with all stacks involved, and
//! double/invalid ones are not passed to the allocator. At exit (and on request) the ledger is written as a
//! JSON dump that the `heapledger` CLI symbolizes and analyses.
//!
//! Data flows one way: `hooks` → `record` → (`stack` → `intern`) + `table` + `counters` + `errors` → `dump`.
//! `docs/design.md` explains the choices.

//!
//! Modules at the top of `src/` are shared by every platform; `src/linux/` holds what only Linux has (symbol
//! interposition, the `.eh_frame` unwinder, ELF module maps, signals); `src/windows/` the same roles on Windows.

// Windows: the shared core carries Linux-only paths (fork, signals, crash dumps) that nothing calls there.
#![cfg_attr(windows, allow(dead_code))]

extern crate alloc;

mod config;
mod counters;
mod dump;
mod errors;
mod heap;
mod intern;
mod json;
mod lock;
mod module_map;
mod record;
mod table;
mod thread;

#[cfg(target_os = "linux")]
#[path = "linux"]
mod platform {
    pub mod crash;
    pub mod hooks;
    pub mod lifecycle;
    pub mod modules;
    pub mod reach;
    pub mod real;
    pub mod snapshot;
    pub mod stack;
    pub mod sys;
    pub mod watch;
}
#[cfg(target_os = "linux")]
use platform::{crash, lifecycle, modules, reach, real, snapshot, stack, sys};

#[cfg(windows)]
#[path = "windows"]
mod platform {
    pub mod heaps;
    pub mod hooks;
    pub mod inject;
    pub mod lifecycle;
    pub mod modules;
    pub mod names;
    pub mod reach;
    pub mod stack;
    pub mod sys;
}
#[cfg(windows)]
use platform::{modules, reach, stack, sys};

#[global_allocator]
static GLOBAL: heap::PrivateHeap = heap::PrivateHeap;
