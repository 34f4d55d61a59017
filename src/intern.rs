//! Stack interning: one id per distinct call stack, lock-free.
//!
//! Frames live in an append-only arena reserved up front (MAP_NORESERVE: only touched pages cost memory); ids
//! are dense (0, 1, 2, …) so a dump writes `stacks` as an array indexed by id. Each arena record is a header word
//! (frame count, id) followed by the frames. Lookup is open addressing over a fixed table whose slots hold a
//! record's arena offset and 7 bits of its hash: a lookup reads the slot and, only when the hash bits match, the
//! record itself, which holds the id. (Slots of `id + 1` cost three dependent cache misses per lookup — slot,
//! offset of the id, record — and two more for every colliding slot: with cc1plus's hundreds of thousands of
//! stacks, interning was 8 % of its wall time for 1 % of its instructions.) An insert writes its record first and
//! publishes it with a CAS, so a reader that finds a slot always sees complete frames. Two threads inserting the
//! same new stack at once may both append it; the loser's copy is orphaned (harmless: a duplicate entry nobody
//! references). When the arena or table is full, new stacks are counted as lost and their blocks get the empty
//! stack 0.

use core::sync::atomic::{AtomicPtr, AtomicU32, AtomicU64, AtomicUsize, Ordering};

// Address space is reserved, not memory: but a program under `ulimit -v` counts it, so keep it modest.
const TABLE_BITS: u32 = 21; // 2M slots, 8 MiB
/// Slots of the lookup table (a power of two) and the stack limit; smaller when the address space is limited.
static TABLE_SLOTS_RT: AtomicUsize = AtomicUsize::new(1 << TABLE_BITS);
static MAX_STACKS_RT: AtomicUsize = AtomicUsize::new((1 << TABLE_BITS) * 3 / 4);
/// Arena sizes tried in turn (in u64 words): 128 MiB of address space (16M frames), reserved not committed;
/// less when the address space is limited (`ulimit -v`).
const ARENA_TRIES: [usize; 3] = [1 << 24, 1 << 21, 1 << 18];
/// A table slot: `(offset + 1) | tag << OFF_BITS` (0: empty), where `offset` is the record's word offset in the
/// arena (< 2^24, the largest arena) and `tag` the hash's top bits.
const OFF_BITS: u32 = 25;
const OFF_MASK: u32 = (1 << OFF_BITS) - 1;
const _: () = assert!(ARENA_TRIES[0] < (1 << OFF_BITS) - 1);

/// The slot tag of hash `h`: its top bits, which do not choose the slot.
#[inline(always)]
fn tag_of(h: u64) -> u32 {
    ((h >> (64 - (32 - OFF_BITS))) as u32) << OFF_BITS
}
static ARENA_WORDS: AtomicUsize = AtomicUsize::new(0);

static TABLE: AtomicPtr<AtomicU32> = AtomicPtr::new(core::ptr::null_mut());
/// `offset + 1` of each id's record in the arena (0: being written).
static OFFSETS: AtomicPtr<AtomicU64> = AtomicPtr::new(core::ptr::null_mut());
static ARENA: AtomicPtr<u64> = AtomicPtr::new(core::ptr::null_mut());
static ARENA_USED: AtomicUsize = AtomicUsize::new(0);
static NEXT_ID: AtomicU32 = AtomicU32::new(0);
/// Stacks that could not be interned.
pub static LOST: AtomicU64 = AtomicU64::new(0);
/// Stacks cut at the depth limit.
pub static TRUNCATED: AtomicU64 = AtomicU64::new(0);

/// Reserves the arena and tables and interns the empty stack as id 0. Returns false when out of memory.
pub fn init() -> bool {
    // Under `ulimit -v` every reserved byte is taken from the program's budget: reserve an eighth.
    let limited = crate::sys::address_space_limited();
    let bits = if limited { TABLE_BITS - 3 } else { TABLE_BITS };
    TABLE_SLOTS_RT.store(1 << bits, Ordering::Relaxed);
    MAX_STACKS_RT.store((1 << bits) * 3 / 4, Ordering::Relaxed);
    let (table_slots, max_stacks) = (1usize << bits, (1usize << bits) * 3 / 4);
    // Aligned for huge pages (see `to_huge_pages`), which a limited table (1 MiB) never uses.
    let table = if limited {
        crate::sys::map(table_slots * 4, true)
    } else {
        crate::sys::map_huge_aligned(table_slots * 4, true)
    };
    let offsets = crate::sys::map(max_stacks * 8, true);
    if table.is_null() || offsets.is_null() {
        return false;
    }
    let tries = if limited {
        &ARENA_TRIES[2..]
    } else {
        &ARENA_TRIES[..]
    };
    let Some((arena, words)) = tries.iter().find_map(|&w| {
        let p = crate::sys::map(w * 8, true);
        (!p.is_null()).then_some((p, w))
    }) else {
        return false;
    };
    ARENA_WORDS.store(words, Ordering::Relaxed);
    TABLE.store(table.cast(), Ordering::Release);
    OFFSETS.store(offsets.cast(), Ordering::Release);
    ARENA.store(arena.cast(), Ordering::Release);
    let empty = intern(&[]);
    debug_assert_eq!(empty, 0);
    true
}

fn hash(frames: &[u64]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325 ^ frames.len() as u64;
    for &f in frames {
        h = (h ^ f).wrapping_mul(0x100_0000_01b3).rotate_left(29);
    }
    h ^ (h >> 31)
}

/// The frames of stack `id`, or None while it is still being written (or for an unknown id).
pub fn get(id: u32) -> Option<&'static [u64]> {
    let offsets = OFFSETS.load(Ordering::Acquire);
    if offsets.is_null()
        || id >= NEXT_ID.load(Ordering::Acquire)
        || id as usize >= MAX_STACKS_RT.load(Ordering::Relaxed)
    {
        return None;
    }
    // SAFETY: id < MAX_STACKS, inside the reserved offsets array.
    let off = unsafe { (*offsets.add(id as usize)).load(Ordering::Acquire) };
    if off == 0 {
        return None;
    }
    let arena = ARENA.load(Ordering::Relaxed);
    // SAFETY: the record at `off - 1` was fully written before its offset was published (release/acquire).
    Some(unsafe { frames_at(arena.add(off as usize - 1)) })
}

/// The frames of the arena record at `rec`.
///
/// # Safety
/// `rec` is a record published by `append` (its header and frames fully written).
#[inline(always)]
unsafe fn frames_at(rec: *const u64) -> &'static [u64] {
    // SAFETY: per the contract, the header's low half is the number of frames that follow it.
    unsafe { core::slice::from_raw_parts(rec.add(1), *rec as u32 as usize) }
}

/// The id of the record at `slot` (non-zero) if it is of `frames`, whose hash gives `tag`: the record is read only
/// when the slot's hash bits match.
#[inline(always)]
fn id_if_same(slot: u32, tag: u32, frames: &[u64]) -> Option<u32> {
    if slot & !OFF_MASK != tag {
        return None;
    }
    let arena = ARENA.load(Ordering::Relaxed);
    // SAFETY: a non-zero slot was published (CAS, release) after `append` wrote its record; the reader loaded it
    // with acquire.
    let rec = unsafe { arena.add((slot & OFF_MASK) as usize - 1) };
    // SAFETY: as above.
    (unsafe { frames_at(rec) } == frames).then(|| (unsafe { *rec } >> 32) as u32)
}

/// Number of ids handed out so far.
pub fn count() -> u32 {
    NEXT_ID
        .load(Ordering::Acquire)
        .min(MAX_STACKS_RT.load(Ordering::Relaxed) as u32)
}

/// The id of `frames`, interning it if new. 0 (the empty stack) when the tracer is out of room.
pub fn intern(frames: &[u64]) -> u32 {
    let table = TABLE.load(Ordering::Acquire);
    if table.is_null() {
        return 0;
    }
    let h = hash(frames);
    let tag = tag_of(h);
    let slots = TABLE_SLOTS_RT.load(Ordering::Relaxed);
    let mask = slots - 1;
    let mut i = (h as usize) & mask;
    // The slot value and id of this stack's record, once appended.
    let mut mine: Option<(u32, u32)> = None;
    for _ in 0..slots {
        // SAFETY: i <= mask, inside the table.
        let slot = unsafe { &*table.add(i) };
        let v = slot.load(Ordering::Acquire);
        if v == 0 {
            let (new, id) = match mine {
                Some(m) => m,
                None => match append(frames) {
                    Some((off, id)) => {
                        let m = (tag | (off + 1), id);
                        mine = Some(m);
                        m
                    }
                    None => {
                        LOST.fetch_add(1, Ordering::Relaxed);
                        return 0;
                    }
                },
            };
            match slot.compare_exchange(0, new, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => return id,
                Err(w) => {
                    if let Some(id) = id_if_same(w, tag, frames) {
                        return id;
                    }
                }
            }
        } else if let Some(id) = id_if_same(v, tag, frames) {
            return id;
        }
        i = (i + 1) & mask;
    }
    LOST.fetch_add(1, Ordering::Relaxed);
    0
}

/// Stacks after which the lookup table moves to huge pages. Lookups land on random slots: with 4 KiB pages each
/// one was a TLB miss as well as a cache miss, and interning was 7 % of cc1plus's wall time (74 % of it on the slot
/// load). Not from the start: a program's first stacks would fault in a 2 MiB page each, 8 MiB for `ls`; by
/// 8192 stacks, spread at random over the table's 2048 small pages, nearly all of them are resident anyway.
const HUGE_AT: u32 = 8192;

/// Collapses the lookup table into huge pages (once, by the thread that interns stack `HUGE_AT`: a few
/// milliseconds of copying).
#[cold]
#[inline(never)]
fn to_huge_pages() {
    let len = TABLE_SLOTS_RT.load(Ordering::Relaxed) * 4;
    if len >= crate::sys::HUGE_PAGE {
        crate::sys::collapse_huge(TABLE.load(Ordering::Relaxed).cast(), len);
    }
}

/// Appends a record of `frames` with a new id; returns its arena offset and the id.
fn append(frames: &[u64]) -> Option<(u32, u32)> {
    let words = frames.len() + 1;
    let off = ARENA_USED.fetch_add(words, Ordering::Relaxed);
    if off + words > ARENA_WORDS.load(Ordering::Relaxed) {
        return None;
    }
    let id = NEXT_ID.fetch_add(1, Ordering::AcqRel);
    if id as usize >= MAX_STACKS_RT.load(Ordering::Relaxed) {
        return None;
    }
    if id == HUGE_AT {
        to_huge_pages();
    }
    let arena = ARENA.load(Ordering::Relaxed);
    // SAFETY: [off, off + words) was reserved for us by the fetch_add and lies in the arena.
    unsafe {
        let rec = arena.add(off);
        *rec = frames.len() as u64 | (id as u64) << 32;
        core::ptr::copy_nonoverlapping(frames.as_ptr(), rec.add(1), frames.len());
        (*OFFSETS.load(Ordering::Relaxed).add(id as usize))
            .store(off as u64 + 1, Ordering::Release);
    }
    // off < ARENA_WORDS <= 2^24 (checked above).
    Some((off as u32, id))
}
