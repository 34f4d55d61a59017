//! Stack interning: one id per distinct call stack, lock-free.
//!
//! Frames live in an append-only arena reserved up front (MAP_NORESERVE: only touched pages cost memory); ids
//! are dense (0, 1, 2, …) so a dump writes `stacks` as an array indexed by id. Lookup is open addressing over a
//! fixed table of `id + 1` values. An insert writes its frames first and publishes them with a CAS, so a reader
//! that finds an id always sees complete frames. Two threads inserting the same new stack at once may both
//! append it; the loser's copy is orphaned (harmless: a duplicate entry nobody references). When the arena or
//! table is full, new stacks are counted as lost and their blocks get the empty stack 0.

use core::sync::atomic::{AtomicPtr, AtomicU32, AtomicU64, AtomicUsize, Ordering};

// Address space is reserved, not memory: but a program under `ulimit -v` counts it, so keep it modest.
const TABLE_BITS: u32 = 21; // 2M slots, 8 MiB
/// Slots of the lookup table (a power of two) and the stack limit; smaller when the address space is limited.
static TABLE_SLOTS_RT: AtomicUsize = AtomicUsize::new(1 << TABLE_BITS);
static MAX_STACKS_RT: AtomicUsize = AtomicUsize::new((1 << TABLE_BITS) * 3 / 4);
/// Arena sizes tried in turn (in u64 words): 128 MiB of address space (16M frames), reserved not committed;
/// less when the address space is limited (`ulimit -v`).
const ARENA_TRIES: [usize; 3] = [1 << 24, 1 << 21, 1 << 18];
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
    let table = crate::sys::map(table_slots * 4, true);
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
    unsafe {
        let rec = arena.add(off as usize - 1);
        let len = *rec as usize;
        Some(core::slice::from_raw_parts(rec.add(1), len))
    }
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
    let slots = TABLE_SLOTS_RT.load(Ordering::Relaxed);
    let mask = slots - 1;
    let mut i = (h as usize) & mask;
    let mut mine: Option<u32> = None;
    for _ in 0..slots {
        // SAFETY: i <= mask, inside the table.
        let slot = unsafe { &*table.add(i) };
        let v = slot.load(Ordering::Acquire);
        if v == 0 {
            let id = match mine {
                Some(id) => id,
                None => match append(frames) {
                    Some(id) => {
                        mine = Some(id);
                        id
                    }
                    None => {
                        LOST.fetch_add(1, Ordering::Relaxed);
                        return 0;
                    }
                },
            };
            match slot.compare_exchange(0, id + 1, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => return id,
                Err(w) => {
                    if get(w - 1) == Some(frames) {
                        return w - 1;
                    }
                }
            }
        } else if get(v - 1) == Some(frames) {
            return v - 1;
        }
        i = (i + 1) & mask;
    }
    LOST.fetch_add(1, Ordering::Relaxed);
    0
}

fn append(frames: &[u64]) -> Option<u32> {
    let words = frames.len() + 1;
    let off = ARENA_USED.fetch_add(words, Ordering::Relaxed);
    if off + words > ARENA_WORDS.load(Ordering::Relaxed) {
        return None;
    }
    let id = NEXT_ID.fetch_add(1, Ordering::AcqRel);
    if id as usize >= MAX_STACKS_RT.load(Ordering::Relaxed) {
        return None;
    }
    let arena = ARENA.load(Ordering::Relaxed);
    // SAFETY: [off, off + words) was reserved for us by the fetch_add and lies in the arena.
    unsafe {
        let rec = arena.add(off);
        *rec = frames.len() as u64;
        core::ptr::copy_nonoverlapping(frames.as_ptr(), rec.add(1), frames.len());
        (*OFFSETS.load(Ordering::Relaxed).add(id as usize))
            .store(off as u64 + 1, Ordering::Release);
    }
    Some(id)
}
