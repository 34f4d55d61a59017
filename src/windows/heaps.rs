//! Heaps: one allocator family per heap handle, the blocks a destroyed heap still held (its leaks), and the
//! blocks that already existed when the tracer arrived.
//!
//! - `HeapDestroy(h)` releases every block of `h` at once. The ledger settles them there: they leave the table
//!   (the addresses will be reused) and move to a list of retired blocks, with the family
//!   `HeapAlloc(heap 0x…) destroyed`, which every later dump writes among the live blocks: they were never
//!   freed, so they are that heap's leaks. Blocks of a C runtime whose heap is `h` are retired the same way.
//! - The tracer is injected into a process whose loader, C runtime and kernel32 have already allocated. Those
//!   blocks are recorded as internal when the hooks go live (a walk of every heap with `HeapWalk`), so that
//!   freeing them later is neither counted nor reported as an invalid free.

use super::names::{self, Kind};
use crate::lock::SpinLock;
use crate::table::{self, family, Block};
use alloc::vec::Vec;
use core::sync::atomic::{AtomicUsize, Ordering};
use windows_sys::Win32::Foundation::HANDLE;
use windows_sys::Win32::System::Memory::{
    GetProcessHeap, GetProcessHeaps, HeapLock, HeapUnlock, HeapWalk, PROCESS_HEAP_ENTRY,
};
use windows_sys::Win32::System::SystemServices::PROCESS_HEAP_ENTRY_BUSY;

static PROCESS_HEAP: AtomicUsize = AtomicUsize::new(0);

/// Blocks of destroyed heaps that were never freed.
static RETIRED: SpinLock<Vec<Block>> = SpinLock::new(Vec::new());

/// Remembers the process heap. Start-up.
pub fn init() {
    // SAFETY: no preconditions.
    PROCESS_HEAP.store(unsafe { GetProcessHeap() } as usize, Ordering::Relaxed);
}

/// The process heap's handle.
#[inline]
pub fn process_heap() -> usize {
    PROCESS_HEAP.load(Ordering::Relaxed)
}

/// `prefix(process heap)`, `prefix(msvcrt heap 0x…)` or `prefix(heap 0x…)`, then `suffix`.
fn label(prefix: &[u8], heap: usize, suffix: &[u8]) -> u16 {
    let mut hex = [0u8; 18];
    let h = crate::sys::fmt_hex(heap as u64, &mut hex);
    if heap == process_heap() {
        return names::intern_parts(&[prefix, b"(process heap)", suffix]);
    }
    if let Some(crt) = super::hooks::crt_owning_heap(heap) {
        return names::intern_parts(&[prefix, b"(", crt, b" heap ", h, b")", suffix]);
    }
    names::intern_parts(&[prefix, b"(heap ", h, b")", suffix])
}

/// The family of blocks allocated on `heap`.
#[inline]
pub fn family_of(heap: usize) -> u8 {
    names::family_for(Kind::Heap, heap, || label(b"HeapAlloc", heap, b""))
}

/// The name id of `function` called on `heap`: `HeapFree(heap 0x…)`.
pub fn releaser(function: &[u8], heap: usize) -> u16 {
    label(function, heap, b"")
}

/// The heap that owns family `f`'s blocks, if known (0: unknown).
pub fn owner_heap(f: u8) -> usize {
    match names::family(f) {
        (Kind::Heap, h) | (Kind::HeapDestroyed, h) => h,
        (Kind::CrtMalloc, c) | (Kind::CrtAligned, c) => super::hooks::crt_heap(c),
        _ => 0,
    }
}

/// Settles the blocks of `heap`, which is about to be destroyed: removes them from the table and returns them
/// (to retire on success, or to put back if the destruction fails).
pub fn take_blocks_of(heap: usize) -> Vec<Block> {
    let mut owned = [false; 256];
    let n = names::family_count();
    let mut any = false;
    for f in names::FIRST as u32..n {
        if owner_heap(f as u8) == heap && names::family(f as u8).0 != Kind::HeapDestroyed {
            owned[f as usize] = true;
            any = true;
        }
    }
    let mut out = Vec::new();
    if !any {
        return out;
    }
    let mut addrs: Vec<u64> = Vec::new();
    for i in 0..table::SHARDS {
        addrs.clear();
        let mut s = table::shard(i).lock();
        let want = s.blocks().filter(|b| owned[b.family() as usize]).count();
        if want == 0 {
            continue;
        }
        // Sized before collecting; if the tracer has no memory left, the blocks simply stay live.
        drop(s);
        if addrs.try_reserve(want + 16).is_err() || out.try_reserve(want + 16).is_err() {
            continue;
        }
        s = table::shard(i).lock();
        for b in s.blocks().filter(|b| owned[b.family() as usize]) {
            if addrs.len() < addrs.capacity() {
                addrs.push(b.addr());
            }
        }
        for &a in &addrs {
            if let Some(b) = s.remove(a) {
                if out.len() < out.capacity() {
                    out.push(b);
                } else {
                    let _ = s.insert(b);
                }
            }
        }
    }
    out
}

/// Puts blocks back after a failed HeapDestroy.
pub fn put_back(blocks: Vec<Block>) {
    for b in blocks {
        if !table::shard_of(b.addr()).lock().insert(b) {
            table::LOST.fetch_add(1, core::sync::atomic::Ordering::Relaxed);
        }
    }
}

/// Keeps the blocks of a destroyed heap as that heap's leaks.
pub fn retire(heap: usize, blocks: Vec<Block>) {
    if blocks.is_empty() {
        return;
    }
    let fam = names::family_for(Kind::HeapDestroyed, heap, || {
        label(b"HeapAlloc", heap, b" destroyed")
    });
    let mut r = RETIRED.lock();
    if r.try_reserve(blocks.len()).is_err() {
        table::LOST.fetch_add(blocks.len() as u64, Ordering::Relaxed);
        return;
    }
    for b in blocks {
        // Blocks of a C runtime keep their runtime's family; HeapAlloc blocks get the "destroyed" one.
        let f = if names::family(b.family()).0 == Kind::Heap {
            fam
        } else {
            b.family()
        };
        r.push(Block::new(
            b.addr(),
            b.size(),
            b.stack(),
            b.tid(),
            b.seq(),
            f,
        ));
    }
}

/// Calls `f` with every retired block (for dumps).
pub fn for_each_retired(mut f: impl FnMut(&Block)) {
    let r = RETIRED.lock();
    for b in r.iter() {
        f(b);
    }
}

/// Records every block that exists in any heap right now as internal (see the module comment). Returns the
/// number recorded. Blocks already in the ledger are left alone.
pub fn snapshot_existing() -> usize {
    let mut heaps: [HANDLE; 256] = [core::ptr::null_mut(); 256];
    // SAFETY: the buffer holds 256 handles.
    let n = unsafe { GetProcessHeaps(heaps.len() as u32, heaps.as_mut_ptr()) } as usize;
    let mut count = 0;
    for &h in &heaps[..n.min(heaps.len())] {
        // SAFETY: a heap of this process; HeapLock keeps its blocks still while we walk.
        unsafe {
            if HeapLock(h) == 0 {
                continue;
            }
            let mut e: PROCESS_HEAP_ENTRY = core::mem::zeroed();
            while HeapWalk(h, &mut e) != 0 {
                if e.wFlags as u32 & PROCESS_HEAP_ENTRY_BUSY != 0 && !e.lpData.is_null() {
                    let p = e.lpData as u64;
                    let mut s = table::shard_of(p).lock();
                    if s.get(p).is_none() {
                        if s.insert(Block::new(p, e.cbData as u64, 0, 0, 0, family::INTERNAL)) {
                            count += 1;
                        } else {
                            table::LOST.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
            }
            HeapUnlock(h);
        }
    }
    count
}
