//! Stack interning: one id per distinct call stack, lock-free.
//!
//! Frames live in an append-only arena reserved up front (MAP_NORESERVE: only touched pages cost memory); ids
//! are dense (0, 1, 2, …) so a dump writes `stacks` as an array indexed by id. Each arena record is a header word
//! (frame count, id) followed by the frames. Lookup is open addressing over two fixed tables in turn, a small one
//! for the first 128k stacks and a big one made when it closes (see `SMALL_BITS`); slots hold a
//! record's arena offset and 7 bits of its hash: a lookup reads the slot and, only when the hash bits match, the
//! record itself, which holds the id. (Slots of `id + 1` cost three dependent cache misses per lookup — slot,
//! offset of the id, record — and two more for every colliding slot: with cc1plus's hundreds of thousands of
//! stacks, interning was 8 % of its wall time for 1 % of its instructions.) An insert writes its record first and
//! publishes it with a CAS, so a reader that finds a slot always sees complete frames. Two threads inserting the
//! same new stack at once may both append it; the loser's copy is orphaned (harmless: a duplicate entry nobody
//! references). When the arena or table is full, new stacks are counted as lost and their blocks get the empty
//! stack 0.

use core::sync::atomic::{AtomicPtr, AtomicU32, AtomicU64, AtomicUsize, Ordering};

/// The first lookup table: 256K slots (1 MiB), taking stacks until it is half full (a limited one, 3/4). Most
/// programs never need more, and their slots then share 1 MiB of cache lines and pages instead of being spread
/// over the big table's 8 MiB: with one table of 2M slots, a lookup's slot load missed cache (and the TLB) nearly
/// every time, and touching a random slot per stack made a program with 20k stacks keep all 8 MiB resident.
const SMALL_BITS: u32 = 18;
/// The second table, mapped when the first closes: 2M slots (8 MiB), to 3/4 full. Stacks interned then are
/// looked up in the small table first (a short probe in a hot table) and found here. Address space is reserved,
/// not memory: but a program under `ulimit -v` counts it, so a limited program has the small table only.
const BIG_BITS: u32 = 21;
/// Stacks the small table takes (half its slots; 3/4 when there is no big table).
static SMALL_LIMIT_RT: AtomicUsize = AtomicUsize::new(1 << (SMALL_BITS - 1));
/// The stack limit: both tables' shares.
static MAX_STACKS_RT: AtomicUsize = AtomicUsize::new(MAX_STACKS);
const MAX_STACKS: usize = (1 << (SMALL_BITS - 1)) + (1 << BIG_BITS) * 3 / 4;
/// Arena sizes tried in turn (in u64 words): 128 MiB of address space (16M frames), reserved not committed;
/// less when the address space is limited (`ulimit -v`).
const ARENA_TRIES: [usize; 3] = [1 << 24, 1 << 21, 1 << 18];
/// A table slot: `(offset + 1) | tag << OFF_BITS` (0: empty), where `offset` is the record's word offset in the
/// arena (< 2^24, the largest arena) and `tag` the hash's top bits.
const OFF_BITS: u32 = 25;
const OFF_MASK: u32 = (1 << OFF_BITS) - 1;
const _: () = assert!(ARENA_TRIES[0] < (1 << OFF_BITS) - 1);

/// A small-table slot that was empty when a thread found the table closed: the end of every probe chain through
/// it, as if empty, but no stack may be inserted there any more. (No record has this offset field: records start
/// below `ARENA_TRIES[0]`.)
const SEALED: u32 = OFF_MASK;

/// The slot tag of hash `h`: its top bits, which do not choose the slot.
#[inline(always)]
fn tag_of(h: u64) -> u32 {
    ((h >> (64 - (32 - OFF_BITS))) as u32) << OFF_BITS
}
static ARENA_WORDS: AtomicUsize = AtomicUsize::new(0);

static SMALL: AtomicPtr<AtomicU32> = AtomicPtr::new(core::ptr::null_mut());
/// Stacks inserted into the small table (a few more than its limit when threads race at the limit).
static SMALL_USED: AtomicUsize = AtomicUsize::new(0);
static BIG: AtomicPtr<AtomicU32> = AtomicPtr::new(core::ptr::null_mut());
/// Stacks inserted into the big table.
static BIG_USED: AtomicUsize = AtomicUsize::new(0);
/// The big table is not to be mapped: the address space is limited (`ulimit -v`), or mapping it failed (later
/// stacks are then lost without another try per stack).
static BIG_REFUSED: core::sync::atomic::AtomicBool = core::sync::atomic::AtomicBool::new(false);
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
    // Under `ulimit -v` every reserved byte is taken from the program's budget: the small table only.
    let limited = crate::sys::address_space_limited();
    let max_stacks = if limited {
        let limit = (1 << SMALL_BITS) * 3 / 4;
        SMALL_LIMIT_RT.store(limit, Ordering::Relaxed);
        BIG_REFUSED.store(true, Ordering::Relaxed);
        limit
    } else {
        MAX_STACKS
    };
    MAX_STACKS_RT.store(max_stacks, Ordering::Relaxed);
    let table = crate::sys::map((1 << SMALL_BITS) * 4, true);
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
    SMALL.store(table.cast(), Ordering::Release);
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
///
/// One id per stack, also when threads intern the same new stack just as the small table closes: a thread that
/// finds it closed seals the empty slot where the stack would go (see [`probe`]), so a thread that still found it
/// open cannot put the stack there afterwards and goes to the big table too, where one of them wins.
pub fn intern(frames: &[u64]) -> u32 {
    let small = SMALL.load(Ordering::Acquire);
    if small.is_null() {
        return 0;
    }
    let h = hash(frames);
    let tag = tag_of(h);
    // The slot value and id of this stack's record, once appended (kept across the two tables).
    let mut mine: Option<(u32, u32)> = None;
    let open = SMALL_USED.load(Ordering::Relaxed) < SMALL_LIMIT_RT.load(Ordering::Relaxed);
    match probe(small, 1 << SMALL_BITS, h, tag, frames, open, &mut mine) {
        Probe::Found(id) => return id,
        Probe::Inserted(id) => {
            SMALL_USED.fetch_add(1, Ordering::Relaxed);
            return id;
        }
        Probe::Absent => {}
        Probe::Lost => {
            LOST.fetch_add(1, Ordering::Relaxed);
            return 0;
        }
    }
    let big = big_table();
    if big.is_null() {
        LOST.fetch_add(1, Ordering::Relaxed);
        return 0;
    }
    match probe(big, 1 << BIG_BITS, h, tag, frames, true, &mut mine) {
        Probe::Found(id) => id,
        Probe::Inserted(id) => {
            if BIG_USED.fetch_add(1, Ordering::Relaxed) + 1 == HUGE_AT {
                to_huge_pages(big);
            }
            id
        }
        Probe::Absent | Probe::Lost => {
            LOST.fetch_add(1, Ordering::Relaxed);
            0
        }
    }
}

/// What a probe of one table found.
enum Probe {
    Found(u32),
    Inserted(u32),
    /// Not there, and the table takes no more stacks.
    Absent,
    /// No room for the stack's record, or the table is full.
    Lost,
}

/// Looks `frames` (hash `h`, tag `tag`) up in `table` of `slots` slots, and inserts it at the first empty slot
/// when `open`. `mine` is the record appended for it, if any (appended at most once per intern).
///
/// A stack's probe chain is the same for every thread, and slots only go from empty to full, so the first empty
/// slot of the chain is where the stack is inserted, by whichever thread gets there first. A thread that finds the
/// table closed claims that slot with [`SEALED`] instead (a CAS, as an insert): if an insert beat it, it finds
/// the stack there; if it won, no thread can insert the stack into this table any more (a probe stops at a sealed
/// slot). Without the seal, a thread that had read "open" just before the table closed could insert the stack
/// here while another, which had read "closed", put it in the big table under a second id.
#[inline(always)]
fn probe(
    table: *mut AtomicU32,
    slots: usize,
    h: u64,
    tag: u32,
    frames: &[u64],
    open: bool,
    mine: &mut Option<(u32, u32)>,
) -> Probe {
    let mask = slots - 1;
    let mut i = (h as usize) & mask;
    for _ in 0..slots {
        // SAFETY: i <= mask, inside the table.
        let slot = unsafe { &*table.add(i) };
        let v = slot.load(Ordering::Acquire);
        if v == SEALED {
            return Probe::Absent;
        }
        if v == 0 {
            if !open {
                match slot.compare_exchange(0, SEALED, Ordering::AcqRel, Ordering::Acquire) {
                    Ok(_) => return Probe::Absent,
                    Err(SEALED) => return Probe::Absent,
                    Err(w) => {
                        if let Some(id) = id_if_same(w, tag, frames) {
                            return Probe::Found(id);
                        }
                        i = (i + 1) & mask;
                        continue;
                    }
                }
            }
            let (new, id) = match *mine {
                Some(m) => m,
                None => match append(frames) {
                    Some((off, id)) => {
                        let m = (tag | (off + 1), id);
                        *mine = Some(m);
                        m
                    }
                    None => return Probe::Lost,
                },
            };
            match slot.compare_exchange(0, new, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => return Probe::Inserted(id),
                Err(SEALED) => return Probe::Absent,
                Err(w) => {
                    if let Some(id) = id_if_same(w, tag, frames) {
                        return Probe::Found(id);
                    }
                }
            }
        } else if let Some(id) = id_if_same(v, tag, frames) {
            return Probe::Found(id);
        }
        i = (i + 1) & mask;
    }
    Probe::Lost
}

/// The big table, mapped by the first thread that needs it (null: not allowed, or no memory).
#[cold]
#[inline(never)]
fn big_table() -> *mut AtomicU32 {
    let b = BIG.load(Ordering::Acquire);
    if !b.is_null() || BIG_REFUSED.load(Ordering::Relaxed) {
        return b;
    }
    let len = (1usize << BIG_BITS) * 4;
    // Aligned for huge pages (see `to_huge_pages`).
    let p = crate::sys::map_huge_aligned(len, true);
    if p.is_null() {
        BIG_REFUSED.store(true, Ordering::Relaxed);
        return p.cast();
    }
    match BIG.compare_exchange(
        core::ptr::null_mut(),
        p.cast(),
        Ordering::AcqRel,
        Ordering::Acquire,
    ) {
        Ok(_) => p.cast(),
        Err(other) => {
            crate::sys::unmap(p, len);
            other
        }
    }
}

/// Stacks after which the big table moves to huge pages. Its lookups land on random slots of 8 MiB: with 4 KiB
/// pages each one was a TLB miss as well as a cache miss (when it was the only table, interning was 6-7.6 % of
/// cc1plus's wall time, 74 % of it on the slot load; 5.1-5.4 % with huge pages). Not from the start: every random
/// slot would fault in a 2 MiB page; by 8192 stacks, spread at random over the table's 2048 small pages, nearly
/// all of them are resident anyway.
const HUGE_AT: usize = 8192;

/// Collapses the big table into huge pages (once, by the thread that puts the `HUGE_AT`th stack there: a few
/// milliseconds of copying).
#[cold]
#[inline(never)]
fn to_huge_pages(big: *mut AtomicU32) {
    crate::sys::collapse_huge(big.cast(), (1usize << BIG_BITS) * 4);
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
