//! The ledger: every live block, sharded by address.
//!
//! 1024 shards, each an open-addressing hash table (linear probing, backward-shift deletion, no tombstones) under
//! its own spin lock. Shards come in 16 windows of 64, and a block's window follows the 64 MiB region it lies in:
//! glibc gives each thread an arena of its own, made of 64 MiB-aligned heaps, and windows are handed out to
//! regions in turn, so the first 16 heaps (threads) never share a shard; other threads touch a thread's shards
//! only for the blocks they free across threads. Hashing every block over all shards (by 64 KiB piece) made each
//! lock and table line bounce between the cores on nearly every call with 8 threads on 2 cores (churn-8t: 2.9x
//! native, against 2.1x single-threaded). Inside its window a block's shard is a hash of its 64 KiB piece, so a
//! heap's blocks spread evenly over 64 tables that grow in small steps (one table per heap failed to double under
//! `ulimit -v` where small ones still could, and blocks were lost). A shard's table starts at 16 slots, so a small
//! heap's ledger stays in L1/L2. Each shard also keeps a ring of recently freed blocks: when a pointer is freed
//! again, the ring tells where it was allocated and where it was first freed. Shard tables grow by x1.5 or x4/3 into
//! fresh memory; when that fails the block is counted as lost instead of aborting the host.

use crate::lock::SpinLock;
use core::alloc::Layout;
use core::sync::atomic::AtomicU64;

const SHARD_BITS: u32 = 10;
/// Shards one 64 MiB region is striped over (a power of two).
const STRIPES: u64 = 64;
/// Number of shards.
pub const SHARDS: usize = 1 << SHARD_BITS;
const INITIAL_CAP: usize = 16;
/// Tables double up to this many slots (192 KiB), then grow by x1.5 and x4/3 in turn: a big table's memory is
/// what a big heap pays per block, a small one's probe length is what a busy one pays per call (churn's 16-block
/// shards at 2/3 load instead of 1/2 cost 25 more instructions per malloc/free pair).
const DENSE_FROM: usize = 8192;
/// Tables of up to this many slots (6 KiB) grow at half full rather than 3/4: a busy small heap's probes and
/// backward shifts get shorter (churn-1t: 15 instructions and 0.6 L1 misses fewer per malloc/free pair,
/// cachegrind) for at most 3 KiB more per shard.
const SPARSE_TO: usize = 256;
/// Recent frees remembered per shard (a heap's frees spread over the 64 shards of its window).
const RING: usize = 64;

/// Allocator family stored with each block (indexes `allocators` in the dump).
pub mod family {
    /// malloc, calloc, realloc, reallocarray.
    pub const MALLOC: u8 = 0;
    /// posix_memalign, aligned_alloc, memalign, valloc, pvalloc (released with free).
    pub const ALIGNED: u8 = 1;
    /// operator new (all variants but arrays).
    pub const NEW: u8 = 2;
    /// operator new[].
    pub const NEW_ARRAY: u8 = 3;
    /// Made by a hook while the tracer itself was running (libc internals we called): settled silently,
    /// never counted, never dumped.
    pub const INTERNAL: u8 = 0xff;
}

/// One live block, packed into 24 bytes (the ledger's memory per live block is what users pay for a big heap):
/// word 0 = address (48 bits) + sequence bits 40..56, word 1 = size (40 bits) + sequence bits 0..24,
/// then the stack id, and the thread id (24 bits) with the family (8 bits).
#[derive(Clone, Copy, Default)]
#[repr(C)]
pub struct Block {
    w0: u64,
    w1: u64,
    stack: u32,
    tid_family: u32,
}

const ADDR_MASK: u64 = (1 << 48) - 1;
const SIZE_MASK: u64 = (1 << 40) - 1;

impl Block {
    /// A block record. Sizes are kept to 40 bits (1 TiB), thread ids to 24 bits, sequence numbers to 40 bits.
    pub fn new(addr: u64, size: u64, stack: u32, tid: u32, seq: u64, family: u8) -> Self {
        Block {
            w0: addr & ADDR_MASK,
            w1: size.min(SIZE_MASK),
            stack,
            tid_family: (tid & 0xff_ffff) | ((family as u32) << 24),
        }
        .with_seq(seq)
    }
    /// Address returned to the program (0: empty slot).
    #[inline(always)]
    pub fn addr(&self) -> u64 {
        self.w0 & ADDR_MASK
    }
    /// Requested size.
    #[inline(always)]
    pub fn size(&self) -> u64 {
        self.w1 & SIZE_MASK
    }
    /// Interned allocation stack.
    #[inline(always)]
    pub fn stack(&self) -> u32 {
        self.stack
    }
    /// Allocating thread.
    #[inline(always)]
    pub fn tid(&self) -> u32 {
        self.tid_family & 0xff_ffff
    }
    /// The allocator family.
    #[inline(always)]
    pub fn family(&self) -> u8 {
        (self.tid_family >> 24) as u8
    }
    /// The sequence number.
    #[inline(always)]
    pub fn seq(&self) -> u64 {
        ((self.w0 >> 48) << 24) | (self.w1 >> 40)
    }
    /// The same block with sequence number `seq` (40 bits kept).
    #[inline(always)]
    pub fn with_seq(self, seq: u64) -> Self {
        Block {
            w0: (self.w0 & ADDR_MASK) | (((seq >> 24) & 0xffff) << 48),
            w1: (self.w1 & SIZE_MASK) | ((seq & 0xff_ffff) << 40),
            ..self
        }
    }
    /// The block's entry in an address-sorted index (the exit scan's): its address above 16 bits of size, where
    /// [`KEY_BIG`] stands for 64 KiB or more (look the size up). Sorting entries sorts by address. 8 bytes per
    /// block: a 24-byte copy per block made 1M live blocks cost 80 bytes each at exit.
    #[inline]
    pub fn key(&self) -> u64 {
        (self.addr() << 16) | self.size().min(KEY_BIG)
    }
}

/// The size field of a [`Block::key`] for blocks of 64 KiB or more.
pub const KEY_BIG: u64 = 0xffff;

/// The address of the block that a [`Block::key`] describes.
#[inline]
pub fn key_addr(key: u64) -> u64 {
    key >> 16
}

/// A recently freed block, as the ring gives it back to explain a double free.
#[derive(Clone, Copy, Default)]
pub struct Freed {
    /// The block as it was when live, but for its sequence number (0: the ring keeps the free stack there).
    pub block: Block,
    /// Where it was freed.
    pub free_stack: u32,
}

/// One shard's state: 56 bytes, so that it and its lock share one cache line (at 80 bytes with the lock on a
/// second line, every call touched two: cachegrind counted ~0.5 more L1 misses per malloc/free pair on churn).
pub struct Shard {
    /// `cap` slots followed by the ring of `RING` recent frees, one allocation (null before the first block):
    /// the ring needs no pointer of its own, and shards that are never used (most of the 1024) cost nothing
    /// (static rings took the address space of a program under `ulimit -v`).
    slots: *mut Block,
    /// Totals of the blocks of this shard, counted under its lock: plain adds, no extra atomics.
    pub totals: Totals,
    cap: u32,
    len: u32,
    /// Length at which growing last failed (0: it has not).
    grow_failed_at: u32,
    ring_next: u8,
}

/// Valgrind-style totals ("total heap usage").
#[derive(Clone, Copy, Default)]
pub struct Totals {
    /// Allocations.
    pub allocations: u64,
    /// Frees (rejected frees excluded).
    pub frees: u64,
    /// Bytes allocated.
    pub bytes_allocated: u64,
    /// Bytes of the blocks freed.
    pub bytes_freed: u64,
}

impl Totals {
    /// Adds `o` to `self`.
    pub fn add(&mut self, o: &Totals) {
        self.allocations += o.allocations;
        self.frees += o.frees;
        self.bytes_allocated += o.bytes_allocated;
        self.bytes_freed += o.bytes_freed;
    }
}

// SAFETY: only touched under the shard's lock.
unsafe impl Send for Shard {}

#[allow(clippy::declare_interior_mutable_const)]
const EMPTY: SpinLock<Shard> = SpinLock::new(Shard {
    slots: core::ptr::null_mut(),
    cap: 0,
    len: 0,
    totals: Totals {
        allocations: 0,
        frees: 0,
        bytes_allocated: 0,
        bytes_freed: 0,
    },
    grow_failed_at: 0,
    ring_next: 0,
});

#[repr(align(64))]
struct Padded(SpinLock<Shard>);

// A shard and its lock on one cache line (see `Shard`).
const _: () = assert!(core::mem::size_of::<Padded>() == 64);

static TABLE: [Padded; SHARDS] = {
    #[allow(clippy::declare_interior_mutable_const)]
    const P: Padded = Padded(EMPTY);
    [P; SHARDS]
};

/// Sampling mode's filter, first level: per 4 KiB page, how many sampled blocks start there (saturating at 255).
/// A free whose counter is 0 cannot be of a sampled block, and is settled without taking a shard lock. By page
/// rather than by address, so that the counters a program touches are few and stay in cache (per address, the
/// filter load itself missed cache on most frees); neighbouring pages have neighbouring counters for the same
/// reason (hashed, a heap's thousand pages were a thousand cache lines: 1.5 more L1 misses per malloc/free pair on
/// churn).
static SAMPLED: [core::sync::atomic::AtomicU8; 1 << 16] =
    [const { core::sync::atomic::AtomicU8::new(0) }; 1 << 16];

/// Second level, read only where a page's counter is not 0: per KiB, sixteen 4-bit counters (saturating at 15),
/// one per 64 bytes. With the page counters alone, the few hundred blocks sampled from sqlite's 20k inserts sent
/// 43k of its 505k other frees down the locked path (every free on a page that held a live sampled block); by
/// 512 or 128 bytes, still 18-20k; by 64 bytes, none. Finer counters in place of the page's cost churn 0.5 more
/// L1 misses per malloc/free pair (cachegrind): the first level stays, so that a heap's other pages never read
/// this one.
static SAMPLED_FINE: [AtomicU64; 1 << 16] = [const { AtomicU64::new(0) }; 1 << 16];

/// `addr`'s index in a filter level whose entries cover `1 << shift` bytes.
#[inline(always)]
fn sampled_index(addr: u64, shift: u32) -> usize {
    // 64K consecutive entries' worth of memory maps to consecutive entries; higher bits are folded in so that
    // regions a multiple of that apart (glibc's per-thread heaps are 64 MiB-aligned) do not share entries one for
    // one.
    let k = addr >> shift;
    ((k ^ (k >> 16).wrapping_mul(0x9E37_79B9)) & 0xffff) as usize
}

/// The second-level word of `addr` and the shift of its 64 bytes' counter in it.
#[inline(always)]
fn sampled_fine(addr: u64) -> (&'static AtomicU64, u32) {
    (
        &SAMPLED_FINE[sampled_index(addr, 10)],
        ((addr >> 6) & 15) as u32 * 4,
    )
}

/// Notes a sampled block at `addr` (sampling mode).
pub fn sampled_added(addr: u64) {
    use core::sync::atomic::Ordering::Relaxed;
    let _ = SAMPLED[sampled_index(addr, 12)]
        .fetch_update(Relaxed, Relaxed, |v| (v < 255).then_some(v + 1));
    let (w, sh) = sampled_fine(addr);
    let _ = w.fetch_update(Relaxed, Relaxed, |v| {
        ((v >> sh) & 0xf < 15).then(|| v + (1 << sh))
    });
}

/// Notes that the sampled block at `addr` went away (sampling mode). A saturated counter stays as it is (it no
/// longer counts exactly, and only ever errs towards the locked path, which finds out).
pub fn sampled_removed(addr: u64) {
    use core::sync::atomic::Ordering::Relaxed;
    let _ = SAMPLED[sampled_index(addr, 12)]
        .fetch_update(Relaxed, Relaxed, |v| (v != 0 && v < 255).then(|| v - 1));
    let (w, sh) = sampled_fine(addr);
    let _ = w.fetch_update(Relaxed, Relaxed, |v| {
        let c = (v >> sh) & 0xf;
        (c != 0 && c < 15).then(|| v - (1 << sh))
    });
}

/// False when no sampled block can live at `addr` (sampling mode).
#[inline(always)]
pub fn maybe_sampled(addr: u64) -> bool {
    use core::sync::atomic::Ordering::Relaxed;
    SAMPLED[sampled_index(addr, 12)].load(Relaxed) != 0 && maybe_sampled_fine(addr)
}

/// The second level's answer, out of line: most frees never need it.
#[inline(never)]
fn maybe_sampled_fine(addr: u64) -> bool {
    let (w, sh) = sampled_fine(addr);
    (w.load(core::sync::atomic::Ordering::Relaxed) >> sh) & 0xf != 0
}

/// Blocks that could not be recorded (tracer out of memory).
pub static LOST: AtomicU64 = AtomicU64::new(0);

/// Windows of `STRIPES` shards.
const WINDOWS: u64 = SHARDS as u64 / STRIPES;
/// 64 MiB regions that have a window, each `(region + 1) << 16 | window` (0: free): insert-only open addressing.
/// Windows are handed out in turn, so the first `WINDOWS` heaps (threads' arenas) never share one, where hashing
/// regions to windows made two of 9 heaps share one more often than not.
const REGIONS: usize = 4096;
static REGION_WINDOW: [AtomicU64; REGIONS] = [const { AtomicU64::new(0) }; REGIONS];
static NEXT_WINDOW: AtomicU64 = AtomicU64::new(0);

/// The window of the 64 MiB region `region`, handing it the next one at its first block.
#[inline(always)]
fn window_of(region: u64) -> u64 {
    use core::sync::atomic::Ordering::{AcqRel, Acquire, Relaxed};
    let mut i = (region.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 52) as usize % REGIONS;
    for _ in 0..REGIONS {
        let e = REGION_WINDOW[i].load(Acquire);
        if e >> 16 == region + 1 {
            return e & 0xffff;
        }
        if e == 0 {
            let w = NEXT_WINDOW.fetch_add(1, Relaxed) % WINDOWS;
            match REGION_WINDOW[i].compare_exchange(0, ((region + 1) << 16) | w, AcqRel, Acquire) {
                Ok(_) => return w,
                Err(e) if e >> 16 == region + 1 => return e & 0xffff,
                Err(_) => {}
            }
        }
        i = (i + 1) % REGIONS;
    }
    // 4096 regions (256 GiB of heap) have windows: the rest share them by hash.
    region % WINDOWS
}

/// The shard of `addr` in `window` (its 64 MiB region's): chosen by a hash of the 64 KiB piece the block lies in
/// (see the module doc).
#[inline(always)]
fn shard_in(window: u64, addr: u64) -> &'static SpinLock<Shard> {
    &TABLE[index_in(window, addr)].0
}

#[inline(always)]
fn index_in(window: u64, addr: u64) -> usize {
    let stripe =
        (addr >> 16).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> (64 - STRIPES.trailing_zeros());
    // Masked: a window is < WINDOWS, and the mask lets the compiler drop the bounds check.
    (window * STRIPES + stripe) as usize & (SHARDS - 1)
}

/// The index (as in [`shard`]) of the shard that holds `addr`: for whole-table walks that hold every lock.
pub fn shard_index(addr: u64) -> usize {
    index_in(window_of(addr >> 26), addr)
}

/// Home slot of `addr` inside a shard table. Blocks are grouped by 256 bytes of address (8 positions of 32 bytes,
/// glibc's smallest chunk): a group's blocks get neighbouring slots of one window, so blocks the allocator carves
/// one after another share cache lines of the table (with 1M live blocks a plain multiplicative hash missed cache
/// on nearly every call); the groups' windows are scattered by a multiplicative hash, so that a dense heap does not
/// lay out one long run of occupied slots. (Keeping whole 64 KiB regions contiguous did: linear probing then
/// walked ~70 slots per call in cc1plus, and 1M small blocks cost 15x native.)
///
/// Tables hold 8·G slots, G a power of two or three times one (big tables grow by x1.5 and x4/3 in turn): the
/// group's window is the hash's top bits scaled to G, a multiply instead of a mask. With doubling, a big shard sat
/// between 3/8 and 3/4 full, 32 to 64 bytes of table per block; now between 1/2 and 3/4, 32 to 48 (1M live blocks
/// cost 42-58 bytes each in steady state before, 42 now; the exit scan's index adds 9).
#[inline(always)]
fn home(addr: u64, cap: usize) -> usize {
    let pos = addr >> 5;
    let scrambled = (pos >> 3).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    // The hash's top 32 bits scaled to the number of windows (cap / 8 < 2^32 for any table that fits in memory):
    // the product fits 64 bits.
    let group = (((scrambled >> 32) * (cap as u64 >> 3)) >> 32) as usize;
    group * 8 + (pos & 7) as usize
}

/// The slot after `i` in a table of `cap`, wrapping.
#[inline(always)]
fn next(i: usize, cap: usize) -> usize {
    if i + 1 == cap {
        0
    } else {
        i + 1
    }
}

/// The shard lock for `addr`.
#[inline(always)]
pub fn shard_of(addr: u64) -> &'static SpinLock<Shard> {
    shard_in(window_of(addr >> 26), addr)
}

/// The shard lock for `addr`, given the calling thread's last region and window in `hint` (`(region + 1) << 16 |
/// window`, as in `REGION_WINDOW`; 0: none), which it updates. A thread's blocks mostly lie in its own arena's
/// region, so the region map is read only when the thread moves to another (the map is insert-only: a window,
/// once handed out, stays).
#[inline(always)]
pub fn shard_of_hinted(addr: u64, hint: &mut u64) -> &'static SpinLock<Shard> {
    let region = addr >> 26;
    let window = if *hint >> 16 == region + 1 {
        *hint & 0xffff
    } else {
        let w = window_of(region);
        *hint = ((region + 1) << 16) | w;
        w
    };
    shard_in(window, addr)
}

/// Every shard lock, for fork handling and whole-table walks.
pub fn shard(i: usize) -> &'static SpinLock<Shard> {
    &TABLE[i].0
}

/// The memory of a table of `cap` slots and its ring (the ring starts at `cap` blocks in).
fn table_layout(cap: usize) -> Option<Layout> {
    let slots = Layout::array::<Block>(cap).ok()?;
    let ring = Layout::array::<Block>(RING).ok()?;
    Some(slots.extend(ring).ok()?.0)
}

impl Shard {
    /// Slots in the table.
    #[inline(always)]
    fn cap(&self) -> usize {
        self.cap as usize
    }

    /// The ring of recent frees, each entry a [`Block`] whose sequence bits hold the free stack (a freed block's
    /// sequence number is never shown): 24 bytes an entry instead of 32.
    #[inline(always)]
    fn ring_ptr(&self) -> *mut Block {
        // A table allocation holds `cap` slots and then the ring (dangling while `slots` is null).
        self.slots.wrapping_add(self.cap())
    }

    fn grow(&mut self) -> bool {
        let cap = self.cap();
        let new_cap = if cap == 0 {
            INITIAL_CAP
        } else if cap < DENSE_FROM {
            cap * 2
        } else if cap.is_power_of_two() {
            cap / 2 * 3
        } else {
            cap / 3 * 4
        };
        // Counts are u32 (the shard and its lock fit one cache line): 4G blocks in one shard is 96 GiB of table.
        if new_cap > u32::MAX as usize {
            return false;
        }
        // From the private heap: small tables share pages, large ones are mmap'd by it.
        let Some(layout) = table_layout(new_cap) else {
            return false;
        };
        // SAFETY: non-zero size; zeroed memory is a table of empty slots and a ring of empty entries.
        let p = unsafe { alloc::alloc::alloc_zeroed(layout) } as *mut Block;
        if p.is_null() {
            return false;
        }
        let (old, old_ring) = (self.slots, self.ring_ptr());
        self.slots = p;
        self.cap = new_cap as u32;
        if old.is_null() {
            return true;
        }
        for i in 0..cap {
            // SAFETY: i < cap, inside the old table.
            let b = unsafe { *old.add(i) };
            if b.addr() != 0 {
                self.place(b);
            }
        }
        // SAFETY: both rings have RING entries; the new allocation is not the old one.
        unsafe { core::ptr::copy_nonoverlapping(old_ring, self.ring_ptr(), RING) };
        // SAFETY: allocated above with this layout when the capacity was cap (table_layout succeeded then).
        unsafe { alloc::alloc::dealloc(old.cast(), table_layout(cap).unwrap_unchecked()) };
        true
    }

    fn place(&mut self, b: Block) {
        let cap = self.cap();
        let mut i = home(b.addr(), cap);
        loop {
            // SAFETY: i < cap.
            let s = unsafe { &mut *self.slots.add(i) };
            if s.addr() == 0 || s.addr() == b.addr() {
                *s = b;
                return;
            }
            i = next(i, cap);
        }
    }

    /// Records a live block. False when the table could not grow (the block is then lost). Inlined: every
    /// traced allocation calls it (the call and the block passed through memory were ~10 instructions of ~45).
    #[inline(always)]
    pub fn insert(&mut self, b: Block) -> bool {
        let (len, cap) = (self.len as usize, self.cap());
        if (len + 1) * 4 > cap * 3 || (cap <= SPARSE_TO && (len + 1) * 2 > cap) {
            // Growth that failed is retried only after the shard has shrunk: under memory pressure every insert
            // would otherwise pay for a failing mmap. Meanwhile the table fills up to 15/16 (longer probes) before
            // blocks are counted as lost.
            let failed_at = self.grow_failed_at as usize;
            let may_try = failed_at == 0 || len < failed_at * 7 / 8;
            if !(may_try && self.grow()) {
                if may_try {
                    self.grow_failed_at = len.max(1) as u32;
                }
                if cap == 0 || (len + 1) * 16 > cap * 15 {
                    // The address is live again, unrecorded: a ring entry for it would make its next (valid) free
                    // look like a double free, rejected and never counted.
                    self.forget_freed(b.addr());
                    return false;
                }
            } else {
                self.grow_failed_at = 0;
            }
        }
        let cap = self.cap();
        let mut i = home(b.addr(), cap);
        loop {
            // SAFETY: i < cap.
            let s = unsafe { &mut *self.slots.add(i) };
            if s.addr() == 0 {
                *s = b;
                self.len += 1;
                return true;
            }
            if s.addr() == b.addr() {
                // The allocator handed out an address we think is live: it was freed behind our back
                // (a path we do not see). The new block replaces it.
                *s = b;
                return true;
            }
            i = next(i, cap);
        }
    }

    /// Removes and returns the block at `addr`. Inlined, as `insert`.
    #[inline(always)]
    pub fn remove(&mut self, addr: u64) -> Option<Block> {
        if self.cap == 0 {
            return None;
        }
        let cap = self.cap();
        let mut i = home(addr, cap);
        loop {
            // SAFETY: i < cap.
            let s = unsafe { *self.slots.add(i) };
            if s.addr() == 0 {
                return None;
            }
            if s.addr() == addr {
                break;
            }
            i = next(i, cap);
        }
        // SAFETY: i < cap.
        let found = unsafe { *self.slots.add(i) };
        // Backward-shift deletion keeps probe chains intact without tombstones.
        let mut hole = i;
        let mut j = i;
        loop {
            j = next(j, cap);
            // SAFETY: j < cap.
            let s = unsafe { *self.slots.add(j) };
            if s.addr() == 0 {
                break;
            }
            let home = home(s.addr(), cap);
            // Move s into the hole if its home is not cyclically within (hole, j].
            let between = if hole <= j {
                home > hole && home <= j
            } else {
                home > hole || home <= j
            };
            if !between {
                // SAFETY: hole and j are in range.
                unsafe { *self.slots.add(hole) = s };
                hole = j;
            }
        }
        // SAFETY: hole is in range.
        unsafe { *self.slots.add(hole) = Block::default() };
        self.len -= 1;
        Some(found)
    }

    /// Starts loading the home slot of `addr` into cache: a walk that looks many blocks up in turn (the exit
    /// dump, in address order) overlaps their cache misses instead of taking them one after another.
    #[inline]
    pub fn prefetch(&self, addr: u64) {
        if self.cap == 0 {
            return;
        }
        let i = home(addr, self.cap());
        #[cfg(target_arch = "x86_64")]
        // SAFETY: i < cap, inside the table; a prefetch has no architectural effect.
        unsafe {
            use core::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
            _mm_prefetch::<_MM_HINT_T0>(self.slots.add(i) as *const i8);
        }
    }

    /// Looks a live block up without removing it.
    pub fn get(&self, addr: u64) -> Option<Block> {
        if self.cap == 0 {
            return None;
        }
        let cap = self.cap();
        let mut i = home(addr, cap);
        loop {
            // SAFETY: i < cap.
            let s = unsafe { *self.slots.add(i) };
            if s.addr() == 0 {
                return None;
            }
            if s.addr() == addr {
                return Some(s);
            }
            i = next(i, cap);
        }
    }

    /// Remembers a freed block for double-free reports (`block` was just removed, so the shard has a table).
    #[inline]
    pub fn remember_freed(&mut self, block: Block, free_stack: u32) {
        let i = self.ring_next as usize % RING;
        // SAFETY: a removed block means a table, and with it a ring of RING entries; i < RING. A raw write: this is
        // every free's path.
        unsafe { *self.ring_ptr().add(i) = block.with_seq(free_stack as u64) };
        self.ring_next = ((i + 1) % RING) as u8;
    }

    /// The ring's entries (empty before the shard's first block).
    fn ring(&self) -> &[Block] {
        if self.slots.is_null() {
            return &[];
        }
        // SAFETY: a table allocation ends with RING ring entries.
        unsafe { core::slice::from_raw_parts(self.ring_ptr(), RING) }
    }

    /// The ring's entries, writable (empty before the shard's first block).
    fn ring_mut(&mut self) -> &mut [Block] {
        if self.slots.is_null() {
            return &mut [];
        }
        // SAFETY: as for `ring`; the shard (and so the ring) is borrowed mutably.
        unsafe { core::slice::from_raw_parts_mut(self.ring_ptr(), RING) }
    }

    /// Drops `addr` from the ring (a block lost at that address: see `insert`). Cold: the tracer is out of memory.
    #[cold]
    fn forget_freed(&mut self, addr: u64) {
        for f in self.ring_mut() {
            if f.addr() == addr {
                *f = Block::default();
            }
        }
    }

    /// The most recent free of `addr` still in the ring.
    pub fn find_freed(&self, addr: u64) -> Option<Freed> {
        let next = self.ring_next as usize;
        (1..=RING)
            .filter_map(|k| self.ring().get((next + RING - k) % RING).copied())
            .find(|f| f.addr() == addr && addr != 0)
            .map(|f| Freed {
                block: f.with_seq(0),
                free_stack: f.seq() as u32,
            })
    }

    /// Live blocks in this shard.
    pub fn len(&self) -> usize {
        self.len as usize
    }

    /// The occupied slots (live blocks, including internal ones).
    pub fn blocks(&self) -> impl Iterator<Item = &Block> + '_ {
        // SAFETY: slots has cap entries (or is null with cap 0).
        let all: &[Block] = if self.cap == 0 {
            &[]
        } else {
            unsafe { core::slice::from_raw_parts(self.slots, self.cap()) }
        };
        all.iter().filter(|b| b.addr() != 0)
    }
}

/// The live block containing `addr` (an interior pointer), found by scanning every shard. Error path only.
pub fn find_containing(addr: u64) -> Option<Block> {
    for i in 0..SHARDS {
        let s = shard(i).lock();
        let found = s
            .blocks()
            .find(|b| {
                b.family() != family::INTERNAL && addr > b.addr() && addr < b.addr() + b.size()
            })
            .copied();
        if found.is_some() {
            return found;
        }
    }
    None
}
