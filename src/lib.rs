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

extern crate alloc;

mod config;
mod counters;
mod crash;
mod dump;
mod errors;
mod heap;
mod hooks;
mod intern;
mod json;
mod lifecycle;
mod lock;
mod modules;
mod reach;
mod real;
mod record;
mod snapshot;
mod stack;
mod sys;
mod table;
mod thread;

#[global_allocator]
static GLOBAL: heap::PrivateHeap = heap::PrivateHeap;
