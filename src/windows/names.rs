//! Names of allocators (block families) and releasing functions on Windows.
//!
//! On Linux the dump's `allocators` list is fixed (`malloc`, `aligned`, `new`, `new[]`). On Windows it is built
//! as the program runs: one family per heap handle (`HeapAlloc(process heap)`, `HeapAlloc(heap 0x2a0000)`) and
//! two per C runtime (`msvcrt!malloc`, `ucrtbase!_aligned_malloc`). Families 0..=3 keep their Linux meaning
//! (unused here); Windows families start at [`FIRST`]; 0xff stays `INTERNAL`. A family's name, kind and key
//! (heap handle or runtime index) never change once published, so readers need no lock: an entry is written,
//! then the count is raised with release ordering.
//!
//! Releasing functions (`HeapFree(heap 0x2a0000)`, `ucrtbase!free`) are names too, with 16-bit ids; an error
//! carries one as its `via` (the dump's `freed_with`), plus, for cross-heap frees, whether the two sides share
//! a heap (see [`Detail`]).

use crate::lock::SpinLock;
use core::cell::UnsafeCell;
use core::sync::atomic::{AtomicU16, AtomicU32, AtomicU8, AtomicUsize, Ordering};

/// The first Windows family number.
pub const FIRST: u8 = 4;
/// Families 0..=0xfe (0xff is `family::INTERNAL`).
const MAX_FAMILIES: usize = 0xff;
const MAX_NAMES: usize = 2048;
const NAME_LEN: usize = 62;

/// What a family stands for.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[repr(u8)]
pub enum Kind {
    /// Not a Windows family (0..=3) or not yet written.
    None = 0,
    /// HeapAlloc/HeapReAlloc on the heap `key`.
    Heap = 1,
    /// Blocks still live when the heap `key` was destroyed: that heap's leaks.
    HeapDestroyed = 2,
    /// malloc/calloc/realloc of the C runtime number `key`.
    CrtMalloc = 3,
    /// _aligned_malloc/_aligned_realloc of the C runtime number `key`.
    CrtAligned = 4,
}

struct Family {
    kind: AtomicU8,
    key: AtomicUsize,
    name: AtomicU16,
}

static FAMILIES: [Family; MAX_FAMILIES] = [const {
    Family {
        kind: AtomicU8::new(0),
        key: AtomicUsize::new(0),
        name: AtomicU16::new(0),
    }
}; MAX_FAMILIES];
static N_FAMILIES: AtomicU32 = AtomicU32::new(FIRST as u32);

struct Names([UnsafeCell<(u8, [u8; NAME_LEN])>; MAX_NAMES]);
// SAFETY: an entry is written once, under WRITER, before N_NAMES publishes it; never written again.
unsafe impl Sync for Names {}
static NAMES: Names = Names([const { UnsafeCell::new((0, [0; NAME_LEN])) }; MAX_NAMES]);
/// Id 0 is the empty name ("unknown").
static N_NAMES: AtomicU32 = AtomicU32::new(1);
static WRITER: SpinLock<()> = SpinLock::new(());

/// The name with id `id` (empty for an unknown id).
pub fn name(id: u16) -> &'static [u8] {
    if id as u32 >= N_NAMES.load(Ordering::Acquire) {
        return b"";
    }
    // SAFETY: published entries are immutable.
    let e = unsafe { &*NAMES.0[id as usize].get() };
    &e.1[..e.0 as usize]
}

fn find_name(s: &[u8]) -> Option<u16> {
    (1..N_NAMES.load(Ordering::Acquire) as u16).find(|&i| name(i) == s)
}

/// The id of `s` (truncated to 62 bytes), added if new; 0 when the table is full.
pub fn intern(s: &[u8]) -> u16 {
    let s = &s[..s.len().min(NAME_LEN)];
    if let Some(i) = find_name(s) {
        return i;
    }
    let _w = WRITER.lock();
    if let Some(i) = find_name(s) {
        return i;
    }
    let n = N_NAMES.load(Ordering::Relaxed) as usize;
    if n >= MAX_NAMES {
        return 0;
    }
    // SAFETY: entry n is not published yet and we hold the writer lock.
    unsafe {
        let e = &mut *NAMES.0[n].get();
        e.1[..s.len()].copy_from_slice(s);
        e.0 = s.len() as u8;
    }
    N_NAMES.store(n as u32 + 1, Ordering::Release);
    n as u16
}

/// A name assembled from parts (no allocation).
pub fn intern_parts(parts: &[&[u8]]) -> u16 {
    let mut buf = [0u8; NAME_LEN];
    let mut n = 0;
    for p in parts {
        let take = p.len().min(NAME_LEN - n);
        buf[n..n + take].copy_from_slice(&p[..take]);
        n += take;
    }
    intern(&buf[..n])
}

/// Number of families (the length of the dump's `allocators` list).
pub fn family_count() -> u32 {
    N_FAMILIES.load(Ordering::Acquire)
}

/// The name of family `f`: Linux's four names for 0..=3, the registered name above.
pub fn family_name(f: u8) -> Option<&'static [u8]> {
    if (f as usize) < FIRST as usize {
        return heapledger_format::ALLOCATORS
            .get(f as usize)
            .map(|s| s.as_bytes());
    }
    if f as u32 >= family_count() {
        return None;
    }
    Some(name(FAMILIES[f as usize].name.load(Ordering::Relaxed)))
}

/// The name of family `f` as text ("" when unknown: an invalid free's pointer was never a block).
pub fn family_str(f: u8) -> &'static str {
    family_name(f)
        .and_then(|n| core::str::from_utf8(n).ok())
        .unwrap_or("")
}

/// Kind and key of family `f`.
#[inline]
pub fn family(f: u8) -> (Kind, usize) {
    if f < FIRST || f as u32 >= family_count() {
        return (Kind::None, 0);
    }
    let e = &FAMILIES[f as usize];
    let kind = match e.kind.load(Ordering::Relaxed) {
        1 => Kind::Heap,
        2 => Kind::HeapDestroyed,
        3 => Kind::CrtMalloc,
        4 => Kind::CrtAligned,
        _ => Kind::None,
    };
    (kind, e.key.load(Ordering::Relaxed))
}

fn find_family(kind: Kind, key: usize) -> Option<u8> {
    let n = family_count();
    (FIRST as u32..n)
        .find(|&i| {
            let e = &FAMILIES[i as usize];
            e.kind.load(Ordering::Relaxed) == kind as u8 && e.key.load(Ordering::Relaxed) == key
        })
        .map(|i| i as u8)
}

/// The family for (`kind`, `key`), registered with the name from `name` if new. When all 251 are taken, the
/// last one is shared by every later heap ("HeapAlloc(other heaps)") and those heaps are not told apart.
pub fn family_for(kind: Kind, key: usize, name: impl FnOnce() -> u16) -> u8 {
    if let Some(f) = find_family(kind, key) {
        return f;
    }
    let id = name();
    let _w = WRITER.lock();
    if let Some(f) = find_family(kind, key) {
        return f;
    }
    let n = N_FAMILIES.load(Ordering::Relaxed) as usize;
    if n >= MAX_FAMILIES - 1 {
        return overflow_family();
    }
    let e = &FAMILIES[n];
    e.kind.store(kind as u8, Ordering::Relaxed);
    e.key.store(key, Ordering::Relaxed);
    e.name.store(id, Ordering::Relaxed);
    N_FAMILIES.store(n as u32 + 1, Ordering::Release);
    n as u8
}

#[cold]
fn overflow_family() -> u8 {
    // Called with WRITER held: write the last slot directly.
    let n = MAX_FAMILIES - 1;
    if N_FAMILIES.load(Ordering::Relaxed) as usize <= n {
        let e = &FAMILIES[n];
        e.kind.store(Kind::Heap as u8, Ordering::Relaxed);
        e.key.store(usize::MAX, Ordering::Relaxed);
        // The name table has its own lock-free publication; WRITER is held, so intern would deadlock.
        let count = N_NAMES.load(Ordering::Relaxed) as usize;
        let text = b"HeapAlloc(other heaps)";
        let id = if count < MAX_NAMES {
            // SAFETY: entry `count` is unpublished and WRITER is held.
            unsafe {
                let s = &mut *NAMES.0[count].get();
                s.1[..text.len()].copy_from_slice(text);
                s.0 = text.len() as u8;
            }
            N_NAMES.store(count as u32 + 1, Ordering::Release);
            count as u16
        } else {
            0
        };
        e.name.store(id, Ordering::Relaxed);
        N_FAMILIES.store(n as u32 + 1, Ordering::Release);
    }
    n as u8
}

// ---- the releasing function of an error ----------------------------------------------------------------------

/// What a cross-heap free was, carried in the top bits of a `via` value.
#[derive(Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub enum Detail {
    /// Not a cross-heap free.
    None = 0,
    /// The allocator and the releaser use the same heap: passed on unchanged (a warning).
    SharedHeap = 1,
    /// They use different heaps: the block was released through its own heap or runtime instead (an error:
    /// on Windows this corrupts a heap).
    DifferentHeap = 2,
    /// An `_aligned_malloc` block freed with `free`/`HeapFree`, or a plain block with `_aligned_free`: the
    /// pointer is not what the releaser expects; released through the matching function instead (an error).
    AlignedMismatch = 3,
}

/// Names of [`Detail`] (the dump's `detail` for `cross_heap_free`).
const DETAIL_NAMES: [&str; 4] = ["", "shared_heap", "different_heap", "aligned_mismatch"];

/// A `via` value: name id and detail.
pub fn via(name: u16, detail: Detail) -> u32 {
    name as u32 | (detail as u32) << 16
}

/// The releasing function's name of a `via` value, if any.
pub fn via_name(v: u32) -> Option<&'static [u8]> {
    let id = (v & 0xffff) as u16;
    (id != 0).then(|| name(id))
}

/// The cross-heap detail of a `via` value (empty for none).
pub fn via_detail(v: u32) -> &'static [u8] {
    DETAIL_NAMES[((v >> 16) & 3) as usize].as_bytes()
}

/// The `via` of the free being judged on this thread (errors.rs attaches it to each error it keeps).
pub fn current_via() -> u32 {
    super::hooks::current_via()
}

/// One line on stderr for an error as it happens (`HEAPLEDGER_VERBOSE=1`), with the allocator and releaser.
pub fn print_error(e: &crate::errors::Error) {
    let mut a = [0u8; 18];
    let mut b = [0u8; 20];
    let alloc = family_name(e.family).unwrap_or(b"an unknown allocator");
    let via =
        via_name(e.via).unwrap_or(crate::errors::FREE_NAMES[e.freed_with as usize].as_bytes());
    let detail = via_detail(e.via);
    let outcome: &[u8] = match e.kind {
        crate::errors::Kind::CrossHeapFree if detail == b"shared_heap" => {
            b"; same heap, passed on (warning)"
        }
        crate::errors::Kind::CrossHeapFree => b"; released through its own heap or runtime instead",
        _ => b"; not passed on",
    };
    crate::sys::eprint(&[
        b"heapledger: ",
        crate::errors::KIND_NAMES[e.kind as usize].as_bytes(),
        b" of ",
        crate::sys::fmt_hex(e.addr, &mut a),
        b" (",
        crate::json::fmt_u64(e.size, &mut b),
        b" bytes) from ",
        alloc,
        b" via ",
        via,
        if detail.is_empty() { b"" } else { b": " },
        detail,
        outcome,
    ]);
}
