//! Call-stack capture: a DWARF (`.eh_frame`) unwinder with a lock-free per-address rule cache.
//!
//! Debian's binaries have no frame pointers, so walking `rbp` gives one or two frames. Evaluating CFI for every
//! frame of every allocation (libgcc's `_Unwind_Backtrace`: ~10 µs a stack) is far too slow, so each return
//! address's rule is reduced once to a compact form — CFA = rsp|rbp + offset, return address at CFA-8, rbp
//! unchanged or saved at CFA+offset — and cached in a direct-mapped table guarded by per-slot sequence counters.
//! A warm frame then costs a hash, two loads and one read of the stack. Cache misses look the address up with
//! glibc's lock-free `_dl_find_object` (no loader lock, safe inside malloc) and evaluate the FDE with gimli.
//! Signal frames (`__restore_rt`) are recognised by their code bytes, as libgcc does, and unwound through the
//! `ucontext` the kernel pushed; frames realigned through a pointer (GCC's DRAP: CFA = `*(rbp + k)`) have a rule
//! of their own. Unloading a library (`dlclose`) bumps a generation that invalidates the cache.
//!
//! On top of the rule cache, each thread keeps two memories of its walks. The whole-walk cache ("whole-walk
//! cache" below, checked inline in the hooks): a walk that starts where a cached one started (same pc and sp)
//! and finds every stack word that walk read unchanged is that walk, and gets its stack id without unwinding.
//! The memos ("memory of recent walks"): a walk that reaches a frame of a remembered one re-reads the stack words
//! that walk read instead of unwinding again, and an identical stack reuses the remembered stack id (no
//! interning).

use crate::real;
use core::arch::asm;
use core::ffi::c_void;
use core::sync::atomic::{fence, AtomicU32, AtomicU64, AtomicUsize, Ordering};

const KIND_NORMAL: u64 = 1;
const KIND_STOP: u64 = 2;
const KIND_SIGRETURN: u64 = 3;
/// CFA = `*(rbp + offset)` (a realigned frame); the caller's rbp at `cfa + off` (rbp kind 1) or at the frame's own
/// `rbp + off` (rbp kind 2).
const KIND_DEREF_CFA: u64 = 4;
const STOP: u64 = KIND_STOP;

const CACHE_BITS: u32 = 16;
const CACHE_SLOTS: usize = 1 << CACHE_BITS;

/// A cached rule, 16 bytes (four to a cache line: cc1plus's ~30k return addresses are looked up at random, and the
/// table is read on every frame not answered by the memos). Slots go in aligned pairs, the two ways of a set: an
/// address may live in either (direct-mapped, cc1plus's 15k return addresses collided into 12k extra misses of
/// ~9k instructions each). `tag` holds the looked-up address (47 bits), the low
/// bits of the generation and an 8-bit sequence counter that makes the pair a seqlock: odd while a writer fills
/// the slot, and a reader accepts `val` only if `tag` was the same, even, before and after reading it.
struct Slot {
    tag: AtomicU64,
    val: AtomicU64,
}

/// Bits of a tag: address << TAG_ADDR_SHIFT | generation << 8 | sequence.
const TAG_ADDR_SHIFT: u32 = 17;
const TAG_GEN_BITS: u32 = TAG_ADDR_SHIFT - 8;
const TAG_GEN_MASK: u64 = (1 << TAG_GEN_BITS) - 1;

#[allow(clippy::declare_interior_mutable_const)]
const EMPTY_SLOT: Slot = Slot {
    tag: AtomicU64::new(0),
    val: AtomicU64::new(0),
};
/// Aligned so that a set's two slots share a cache line.
#[repr(C, align(64))]
struct Cache([Slot; CACHE_SLOTS]);
static CACHE: Cache = Cache([EMPTY_SLOT; CACHE_SLOTS]);
static GENERATION: AtomicU64 = AtomicU64::new(1);
static SELF_LO: AtomicUsize = AtomicUsize::new(0);
static SELF_HI: AtomicUsize = AtomicUsize::new(0);
static LOADER_LO: AtomicUsize = AtomicUsize::new(0);
static LOADER_HI: AtomicUsize = AtomicUsize::new(0);
/// Rules computed the slow way (cache misses), for the design notes' measurements.
pub static MISSES: AtomicU64 = AtomicU64::new(0);

/// Forgets every cached rule (a library was unloaded; its addresses may be reused by the next one).
pub fn invalidate() {
    let gen = GENERATION.fetch_add(1, Ordering::AcqRel) + 1;
    // Tags hold the generation's low bits only; when they wrap, old tags could match again, so empty the cache.
    if gen & TAG_GEN_MASK == 0 {
        for slot in CACHE.0.iter() {
            let k = slot.tag.load(Ordering::Relaxed);
            if k & 1 == 0
                && slot
                    .tag
                    .compare_exchange(k, k | 1, Ordering::Acquire, Ordering::Relaxed)
                    .is_ok()
            {
                slot.val.store(0, Ordering::Relaxed);
                slot.tag.store((k + 2) & 0xfe, Ordering::Release);
            }
        }
    }
}

/// Remembers the preload library's own address range so that its frames are never recorded.
pub fn init_self_range() {
    let mut r = real::DlFindObject::zeroed();
    let here = init_self_range as *mut c_void;
    if find_object(here, &mut r) {
        SELF_LO.store(r.map_start as usize, Ordering::Relaxed);
        SELF_HI.store(r.map_end as usize, Ordering::Relaxed);
    }
    // The kernel tells every process where it mapped the dynamic loader.
    // SAFETY: getauxval has no preconditions.
    let ld_base = unsafe { libc::getauxval(libc::AT_BASE) } as usize;
    let mut l = real::DlFindObject::zeroed();
    if ld_base != 0 && find_object(ld_base as *mut c_void, &mut l) {
        LOADER_LO.store(l.map_start as usize, Ordering::Relaxed);
        LOADER_HI.store(l.map_end as usize, Ordering::Relaxed);
    }
}

/// True if `addr` lies inside a loaded module (a global or static, for invalid-free reports).
pub fn in_module(addr: u64) -> bool {
    let mut obj = real::DlFindObject::zeroed();
    find_object(addr as *mut c_void, &mut obj)
}

/// The preload library's own mapping.
pub fn self_range() -> (u64, u64) {
    (
        SELF_LO.load(Ordering::Relaxed) as u64,
        SELF_HI.load(Ordering::Relaxed) as u64,
    )
}

/// True if `pc` lies in the dynamic loader (ld.so).
pub fn in_loader(pc: u64) -> bool {
    let pc = pc as usize;
    pc >= LOADER_LO.load(Ordering::Relaxed) && pc < LOADER_HI.load(Ordering::Relaxed)
}

/// The preload library's own range as `(start, length)`: `pc.wrapping_sub(start) < length` is one compare, and a
/// walk reads the range once rather than at every frame.
#[inline(always)]
fn self_span() -> (u64, u64) {
    let lo = SELF_LO.load(Ordering::Relaxed) as u64;
    (
        lo,
        (SELF_HI.load(Ordering::Relaxed) as u64).wrapping_sub(lo),
    )
}

/// Finds the loaded object that contains `addr`.
pub fn find_object(addr: *mut c_void, out: &mut real::DlFindObject) -> bool {
    if !real::ready() {
        return false;
    }
    // SAFETY: ready() guarantees the table is filled.
    let f = unsafe { real::get() }.find_object;
    match f {
        // SAFETY: _dl_find_object is async-signal-safe and lock-free; `out` is a valid buffer.
        Some(f) => unsafe { f(addr, out) == 0 },
        None => find_object_phdr(addr as usize, out),
    }
}

/// Fallback for glibc < 2.35: walks the loader's list (takes the loader's recursive lock; we hold none).
fn find_object_phdr(addr: usize, out: &mut real::DlFindObject) -> bool {
    struct Q<'a> {
        addr: usize,
        out: &'a mut real::DlFindObject,
        found: bool,
    }
    unsafe extern "C" fn cb(info: *mut libc::dl_phdr_info, _: usize, data: *mut c_void) -> i32 {
        // SAFETY: dl_iterate_phdr passes valid info; data is our Q.
        let (info, q) = unsafe { (&*info, &mut *(data as *mut Q)) };
        let base = info.dlpi_addr as usize;
        let (mut lo, mut hi, mut eh) = (usize::MAX, 0usize, 0usize);
        for i in 0..info.dlpi_phnum as usize {
            // SAFETY: dlpi_phdr has dlpi_phnum entries.
            let ph = unsafe { &*info.dlpi_phdr.add(i) };
            if ph.p_type == libc::PT_LOAD {
                lo = lo.min(base + ph.p_vaddr as usize);
                hi = hi.max(base + (ph.p_vaddr + ph.p_memsz) as usize);
            } else if ph.p_type == libc::PT_GNU_EH_FRAME {
                eh = base + ph.p_vaddr as usize;
            }
        }
        if q.addr >= lo && q.addr < hi {
            q.out.map_start = lo as *mut c_void;
            q.out.map_end = hi as *mut c_void;
            q.out.eh_frame = eh as *mut c_void;
            q.found = true;
            return 1;
        }
        0
    }
    let mut q = Q {
        addr,
        out,
        found: false,
    };
    // SAFETY: the callback only reads the headers it is given.
    unsafe { libc::dl_iterate_phdr(Some(cb), (&mut q as *mut Q).cast()) };
    q.found
}

/// Register state at one frame.
#[derive(Clone, Copy)]
struct Regs {
    pc: u64,
    sp: u64,
    bp: u64,
}

/// Reads this function's own pc, sp and rbp. Frames above it are unwound from there.
#[inline(always)]
fn capture() -> Regs {
    let (pc, sp, bp): (u64, u64, u64);
    // SAFETY: reads three registers; no memory is touched and the stack pointer is not moved.
    unsafe {
        asm!("lea {pc}, [rip]", "mov {sp}, rsp", "mov {bp}, rbp",
             pc = out(reg) pc, sp = out(reg) sp, bp = out(reg) bp,
             options(nomem, nostack, preserves_flags));
    }
    Regs { pc, sp, bp }
}

/// Result of a stack walk.
pub struct Walk {
    /// Frames written to the output.
    pub len: usize,
    /// The walk stopped at the depth limit while frames remained.
    pub truncated: bool,
}

// ---- memory of recent walks ------------------------------------------------------------------------------------
//
// Consecutive allocations share most of their stack: the same `main`, event loop, request handler. Unwinding those
// frames again is a chain of dependent loads (return address → rule → next frame) per frame. Instead each thread
// remembers its last few walks, level by level: the state after each frame (CFA, return address, rbp) and which
// stack words the walk read to get there. When the current walk reaches a state that a remembered walk also
// reached (same CFA, same return address, same rbp where the rest depends on it), the rest of that walk is
// identical provided the stack words it read still hold the same values: those are re-read (independent loads,
// in parallel) instead of unwound, and its frames are copied. If a word differs (the program returned and called
// something else), the walk simply goes on unwinding. The words re-read are return-address and saved-rbp slots
// above the current frame on this thread's own stack, the same words an unwind would read.

/// Remembered walks per thread, one per key: the walk's first KEY_FRAMES frames (a malloc wrapper such as
/// `sqlite3Malloc` or `xmalloc` makes the first frame alone the same for every allocation of a program).
const MEMOS: usize = 16;
/// Output frames that choose a walk's memo.
const KEY_FRAMES: usize = 2;
/// Levels (frames unwound) a remembered walk can hold; deeper walks are not remembered.
const MEMO_LEVELS: usize = 36;
/// A walk that found its remembered one at most this many levels after choosing it is not remembered itself.
const MEMO_RECORD_AFTER: usize = 2;
/// Keys that missed recently: a walk without a memo is remembered only when its key missed before (so that a
/// program with many one-off stacks does not pay for remembering each).
const RECENT_MISSES: usize = 8;
/// Walks a memo completes late (or not at all) before one of them replaces it.
const MEMO_MISSES: u32 = 4;
/// Checks of remembered frames that may fail in one walk before it stops trying (each costs a pass over them).
const MEMO_TRIES: u32 = 2;

/// `meta` bits of a level.
const M_RESTORES_BP: u32 = 1;
const M_USES_BP: u32 = 2;
/// The rest of the walk after this level depends on the value of rbp (some later frame's CFA is rbp-based
/// before any frame restores rbp from the stack).
const M_DEP_BP: u32 = 4;
/// The level's return address is an output frame (not one of the tracer's own).
const M_OUTPUT: u32 = 8;

/// Whether the walk from before a level (`meta`) on depends on rbp, given whether the rest after it does: the
/// level computes its CFA from rbp, or leaves rbp as it is for the rest.
#[inline(always)]
fn dep_before(meta: u32, dep_after: bool) -> bool {
    meta & M_USES_BP != 0 || (meta & M_RESTORES_BP == 0 && dep_after)
}

#[repr(C)]
struct Memo {
    /// Levels held; 0: empty.
    n: u32,
    /// The walk stopped at its depth limit after the last level (a longer walk goes on from there).
    truncated: u8,
    /// How the walk ended may depend on rbp after its last level.
    end_uses_bp: u8,
    _pad0: u16,
    gen: u64,
    /// Every level from this one on is an output frame (their return addresses can be copied as a block).
    all_out_from: u32,
    /// The stack words to re-read, in level order: each level's return-address slot, and its saved-rbp slot
    /// where the rest of the walk depends on rbp; `check_from[i]` is the first check of level `i`.
    check_addr: [u64; 2 * MEMO_LEVELS],
    check_val: [u64; 2 * MEMO_LEVELS],
    check_from: [u8; MEMO_LEVELS + 1],
    /// The last level that restores rbp (-1: none) and the value: rbp after the memo's last level.
    last_restore: i32,
    last_bp: u64,
    /// Stack ids of walks that this memo completed, by what they walked before it (replaced in turn).
    ids: [IdEntry; MEMO_IDS],
    ids_next: u32,
    /// Walks with this key that the memo completed late or not at all, since one it completed early.
    misses: u32,
    cfa: [u64; MEMO_LEVELS],
    ra: [u64; MEMO_LEVELS],
    bp: [u64; MEMO_LEVELS],
    /// `M_*` bits; the offset of the saved-rbp slot from the CFA in the high 16 bits.
    meta: [u32; MEMO_LEVELS],
}

impl Memo {
    /// The checks (indexes into `check_addr`/`check_val`) of the levels after level `j`, to the memo's end.
    #[inline(always)]
    fn checks_after(&self, j: usize) -> (usize, usize) {
        let from = self.check_from.get(j + 1).map_or(0, |&c| c as usize);
        let to = self
            .check_from
            .get(self.n as usize)
            .map_or(0, |&c| c as usize);
        (from, to.min(self.check_addr.len()))
    }
}

/// Stack ids remembered per memo.
const MEMO_IDS: usize = 8;
/// Levels a walk may unwind itself before a memo completes it, for its stack id to be remembered.
const ID_INNER: usize = 6;

/// The stack id of a walk that unwound `nl` levels itself (return addresses `ras`), the last of them level `j` of
/// the memo, which supplied the rest; cut at `depth` frames. Those facts fix every frame of the stack.
#[derive(Clone, Copy)]
#[repr(C)]
struct IdEntry {
    /// `nl | j << 8 | depth << 16` (0: empty; `nl` is never 0 in a used entry).
    tag: u32,
    id: u32,
    ras: [u64; ID_INNER],
}

#[inline(always)]
fn id_tag(nl: usize, j: usize, depth: u32) -> u32 {
    nl as u32 | (j as u32) << 8 | depth << 16
}

// ---- whole-walk cache ---------------------------------------------------------------------------------------
//
// Most allocations of a program come from a handful of places reached the same way each time: a loop calling
// the same function at the same depth. There the whole walk repeats exactly: it starts at the same hook code
// (pc) with the same stack pointer, and it reads the same stack words. A walk is a function of its starting
// registers and of the words it reads (rules depend only on the code), so if those words still hold the values
// a remembered walk read, the result is that walk's: its stack id is returned without unwinding a frame or
// writing one. The words are checked in the order the walk read them and the check stops at the first
// difference, so each word read lies where an unwind from here would read it.

/// Sets of the whole-walk cache (a power of two), chosen by the walk's starting pc and sp.
const QUICK_SETS: usize = 64;
/// Ways per set: one pc and sp may reach several stacks (a function calling `free` from three places).
const QUICK_WAYS: usize = 8;
/// Stack words a cached walk may check; longer walks are not cached (the memos still serve them).
const QUICK_CHECKS: usize = 48;
/// `Quick::flags`: the walk was cut at the depth limit.
const Q_TRUNCATED: u8 = 1;
/// `Quick::flags`: the walk depends on rbp at its start.
const Q_BP: u8 = 2;

/// One remembered whole walk.
#[repr(C)]
struct Quick {
    /// Starting pc (0: empty) and sp; rbp where the walk depends on it.
    pc: u64,
    sp: u64,
    bp: u64,
    gen: u64,
    /// The walk's stack id, frame count and depth limit.
    id: u32,
    len: u32,
    depth: u32,
    flags: u8,
    /// Words to check.
    n: u8,
    _pad: u16,
    /// Each word's distance above the starting sp, and the value the walk read there, in rounds of 4 (see
    /// `quick_pad`).
    off: [[u32; 4]; QUICK_CHECKS / 4],
    val: [[u64; 4]; QUICK_CHECKS / 4],
}

#[repr(C)]
struct QuickSet {
    ways: [Quick; QUICK_WAYS],
    /// The way the next cached walk replaces (round robin).
    next: u32,
    /// Walks cached here since the set last answered one: past `QUICK_FUTILE`, only every `QUICK_FUTILE`-th is
    /// cached (a start whose stacks keep changing below it, as in a recursive-descent parser, would otherwise pay
    /// for caching every walk and never hit).
    fills: u32,
}

/// Fills without a hit after which a set caches only one walk in this many.
const QUICK_FUTILE: u32 = 8;

/// Walks that missed the whole-walk cache recently, by a hash of their start and stack id: a walk is cached the
/// second time it misses, so that one-off walks do not displace the ones that recur. Large enough that a walk
/// recurring once per request (sqlite: once per statement, after a few dozen others) is still remembered when it
/// comes back. Each miss is noted in two slots chosen by different hash bits, and a walk that finds itself in
/// either is cached: with one slot, two walks that recur in turn and share it evicted each other for ever, and
/// which walks shared one was a matter of code addresses (sqlite's 20k statements: ~1k uncached walks with one
/// build, ~20k with the next, whose only change was elsewhere in the library).
const DOORKEEPER: usize = 1024;

#[inline(always)]
fn quick_set(pc: u64, sp: u64) -> (usize, u64) {
    // sp's low bits vary most (frames are a few words apart): multiplying carries them into the top bits.
    let h = ((sp >> 3) ^ pc.rotate_left(32)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    (
        (h >> (64 - QUICK_SETS.trailing_zeros())) as usize % QUICK_SETS,
        h | 1,
    )
}

/// The id of a cached walk starting at `r`, with `depth` frames allowed, whose words still hold their values.
#[inline(always)]
fn quick_hit(ms: &mut Memos, r: Regs, gen: u64, depth: u32) -> Option<(Walk, u32)> {
    let (set, _) = quick_set(r.pc, r.sp);
    let set = ms.quick.get_mut(set)?;
    'ways: for q in set.ways.iter() {
        if q.pc != r.pc
            || q.sp != r.sp
            || q.gen != gen
            || q.depth != depth
            || (q.flags & Q_BP != 0 && q.bp != r.bp)
        {
            continue;
        }
        // Four words a round: `n` is a multiple of 4 (see `quick_pad`), which halves the loop's overhead per word.
        for g in 0..(q.n as usize / 4).min(QUICK_CHECKS / 4) {
            let (off, val) = (&q.off[g], &q.val[g]);
            for k in 0..4 {
                let addr = r.sp.wrapping_add(off[k] as u64);
                // SAFETY: the cached walk read this word at this point of the same walk: it started from the same
                // registers and every word it read before this one (checked above) still holds the same value,
                // so the address is the one an unwind from here reads now, above sp on this thread's stack.
                if unsafe { *(addr as *const u64) } != val[k] {
                    continue 'ways;
                }
            }
        }
        let w = Walk {
            len: q.len as usize,
            truncated: q.flags & Q_TRUNCATED != 0,
        };
        let id = q.id;
        if set.fills != 0 {
            set.fills = 0;
        }
        return Some((w, id));
    }
    None
}

/// The checks of a walk being cached, in walk order: the count stays in a register while they are written (kept
/// in the entry, every append re-read and re-wrote it: ~20 instructions an append on cc1plus).
struct Checks<'a> {
    off: &'a mut [u32],
    val: &'a mut [u64],
    n: usize,
    sp: u64,
}

impl Checks<'_> {
    /// Appends a check of the word at `addr` (value `val`); false when it does not fit.
    #[inline(always)]
    fn push(&mut self, addr: u64, val: u64) -> bool {
        // Below sp, the distance wraps past u32::MAX: refused like a word too far above it.
        let off = addr.wrapping_sub(self.sp);
        match (self.off.get_mut(self.n), self.val.get_mut(self.n)) {
            (Some(o), Some(v)) if off <= u64::from(u32::MAX) => {
                *o = off as u32;
                *v = val;
                self.n += 1;
                true
            }
            _ => false,
        }
    }
}

/// Pads `q`'s checks to a multiple of 4 by repeating the last one (checked twice, it still holds), so that
/// `quick_hit` checks four words a round. `QUICK_CHECKS` is a multiple of 4: padding always fits.
fn quick_pad(q: &mut Quick) {
    let n = q.n as usize;
    let Some(last) = n.checked_sub(1) else {
        return;
    };
    let (Some(o), Some(v)) = (q.off.get_mut(last / 4), q.val.get_mut(last / 4)) else {
        return;
    };
    let (off, val) = (o[last % 4], v[last % 4]);
    for k in last % 4 + 1..4 {
        o[k] = off;
        v[k] = val;
    }
    q.n = ((n + 3) & !3) as u8;
}

const _: () = assert!(QUICK_CHECKS.is_multiple_of(4));
// `quick_fill` keeps a bit per own level in a u64.
const _: () = assert!(MEMO_LEVELS < 64);

/// What a finished walk leaves for the whole-walk cache: where it started, the levels it unwound itself, and
/// the memo (and its level) that completed it, if one did.
struct Finished<'a> {
    start: Regs,
    gen: u64,
    depth: u32,
    own: &'a [Level],
    /// The memo and level that supplied the rest of the walk.
    tail: Option<(&'a Memo, usize)>,
    /// The rest of the walk after the last own level depends on rbp.
    end_uses_bp: bool,
    /// A word read after the last level that decided how the walk ended (a zero return address, or the frame
    /// that did not fit).
    end_check: Option<(u64, u64)>,
    w: &'a Walk,
    id: u32,
}

/// Caches a finished walk if it missed before (see `DOORKEEPER`) and its set is not caching in vain (see
/// `QuickSet::fills`).
#[cold]
#[inline(never)]
fn quick_fill(quick: &mut [QuickSet; QUICK_SETS], seen: &mut [u32; DOORKEEPER], f: &Finished) {
    // At least one word per level: a walk too long for an entry is not worth the work below (cc1plus: most of
    // its walks, 32 frames deep).
    let tail_words = f.tail.map_or(0, |(m, j)| {
        let (from, to) = m.checks_after(j);
        to.saturating_sub(from)
    });
    if f.own.len() + tail_words + f.end_check.is_some() as usize > QUICK_CHECKS {
        return;
    }
    let (set, tag) = quick_set(f.start.pc, f.start.sp);
    let Some(set) = quick.get_mut(set) else {
        return;
    };
    if set.fills >= QUICK_FUTILE && set.fills % QUICK_FUTILE != 0 {
        set.fills = set.fills.wrapping_add(1);
        return;
    }
    // Keyed by the start and the stack it reached: the walk itself must recur, not just its start. (By start
    // alone, cc1plus — whose recursive-descent stacks differ below the same start nearly every time — filled an
    // entry on 39 % of its 1.55M missed walks, at ~1,200 instructions each, for entries that seldom answered.)
    let tag = (tag ^ u64::from(f.id).wrapping_mul(0x9E37_79B9_7F4A_7C15)) | 1;
    let (a, b) = (
        (tag >> 32) as usize % DOORKEEPER,
        (tag >> 42) as usize % DOORKEEPER,
    );
    let (Some(&da), Some(&db)) = (seen.get(a), seen.get(b)) else {
        return;
    };
    let t = tag as u32;
    if da != t && db != t {
        seen[a] = t;
        seen[b] = t;
        return;
    }
    if da == t {
        seen[a] = 0;
    }
    if db == t {
        seen[b] = 0;
    }
    let way = set.next as usize % QUICK_WAYS;
    set.next = (way as u32 + 1) % QUICK_WAYS as u32;
    let q = &mut set.ways[way];
    q.pc = 0;
    q.n = 0;
    let sp = f.start.sp;
    // Backwards over the own levels: after level i, does the rest depend on rbp?
    let mut dep = match f.tail {
        Some((m, j)) => m.meta.get(j).is_some_and(|&x| x & M_DEP_BP != 0),
        None => f.end_uses_bp,
    };
    // Bit i: the rest after own level i depends on rbp (own levels are at most MEMO_LEVELS < 64).
    let mut dep_after = 0u64;
    for (i, l) in f.own.iter().enumerate().rev() {
        dep_after |= (dep as u64) << (i & 63);
        dep = dep_before(l.meta, dep);
    }
    let mut c = Checks {
        off: q.off.as_flattened_mut(),
        val: q.val.as_flattened_mut(),
        n: 0,
        sp,
    };
    for (i, l) in f.own.iter().enumerate() {
        if !c.push(l.cfa.wrapping_sub(8), l.ra) {
            return;
        }
        if l.meta & M_RESTORES_BP != 0 && dep_after >> (i & 63) & 1 != 0 {
            let off = (l.meta >> 16) as u16 as i16 as i64;
            if !c.push(l.cfa.wrapping_add(off as u64), l.bp) {
                return;
            }
        }
    }
    if let Some((m, j)) = f.tail {
        let (from, to) = m.checks_after(j);
        for k in from..to {
            if !c.push(m.check_addr[k], m.check_val[k]) {
                return;
            }
        }
    }
    if let Some((addr, val)) = f.end_check {
        if !c.push(addr, val) {
            return;
        }
    }
    q.n = c.n as u8;
    quick_pad(q);
    q.sp = sp;
    q.bp = f.start.bp;
    q.gen = f.gen;
    q.id = f.id;
    q.len = f.w.len as u32;
    q.depth = f.depth;
    q.flags = if f.w.truncated { Q_TRUNCATED } else { 0 } | if dep { Q_BP } else { 0 };
    q.pc = f.start.pc;
    set.fills = set.fills.wrapping_add(1).max(1);
}

/// A thread's memos: mapped at its first walk (a mapping of its own, so that initial-exec TLS, which glibc carves
/// out of every thread's stack, stays small) and handed to a later thread when this one exits.
#[repr(C)]
struct Memos {
    /// Next block on the free list (see `FREE_MEMOS`).
    next_free: u64,
    /// Where the replacement clock stands.
    next: u32,
    /// A bit per memo that completed a walk since the clock last passed it (a used memo gets a second chance).
    used: u32,
    /// Each memo's key, in one cache line: the walk looks its own up here.
    keys: [u64; MEMOS],
    /// Keys of recent walks that had no memo (ring).
    recent: [u64; RECENT_MISSES],
    recent_next: u32,
    _pad: u32,
    m: [Memo; MEMOS],
    quick: [QuickSet; QUICK_SETS],
    seen: [u32; DOORKEEPER],
}

/// `ThreadState::memos` once they are gone (released at thread exit, or no memory): walk without them.
const MEMOS_NONE: u64 = 1;
static MEMO_KEY: AtomicU32 = AtomicU32::new(u32::MAX);

/// This thread's memos, mapping them at the first call. `None`: the thread walks without (out of memory, or
/// past its exit-time release).
#[inline(always)]
fn memos_of(t: &mut crate::thread::ThreadState) -> Option<&'static mut Memos> {
    if t.memos > MEMOS_NONE {
        // SAFETY: mapped by `map_memos` for this thread and only touched by it (under `memo_busy`).
        return Some(unsafe { &mut *(t.memos as *mut Memos) });
    }
    if t.memos == MEMOS_NONE {
        return None;
    }
    map_memos(t)
}

#[cold]
#[inline(never)]
fn map_memos(t: &mut crate::thread::ThreadState) -> Option<&'static mut Memos> {
    t.memos = MEMOS_NONE;
    // The block must go back when the thread does: a pthread key's destructor returns it (no key, no memos).
    let key = crate::sys::exit_key(&MEMO_KEY, release_memos)?;
    let p = match pop_free_memos() {
        Some(p) => p,
        None => crate::sys::map(core::mem::size_of::<Memos>(), false).cast::<Memos>(),
    };
    if p.is_null() {
        return None;
    }
    // SAFETY: a valid key; the value is only a marker (the destructor runs only for non-null values).
    if unsafe { libc::pthread_setspecific(key, p.cast()) } != 0 {
        push_free_memos(p);
        return None;
    }
    t.memos = p as u64;
    // SAFETY: a block of ours (fresh and zeroed, or reset by pop_free_memos), owned by this thread from now on.
    Some(unsafe { &mut *p })
}

/// Blocks of exited threads, for the next threads: a Treiber stack whose head carries a 16-bit tag against ABA
/// (user addresses fit in 48 bits). Blocks are never unmapped — thread churn would otherwise pay an mmap, page
/// faults and a munmap (with its TLB shootdown on every core) per thread — so reading a popped block's link is
/// always safe, and a stale read only fails the compare-and-swap.
static FREE_MEMOS: AtomicU64 = AtomicU64::new(0);
const PTR_MASK: u64 = (1 << 48) - 1;

fn push_free_memos(p: *mut Memos) {
    let mut head = FREE_MEMOS.load(Ordering::Acquire);
    loop {
        // SAFETY: the block is ours until the swap publishes it.
        unsafe { (*p).next_free = head & PTR_MASK };
        let new = ((head >> 48).wrapping_add(1) << 48) | (p as u64 & PTR_MASK);
        match FREE_MEMOS.compare_exchange_weak(head, new, Ordering::AcqRel, Ordering::Acquire) {
            Ok(_) => return,
            Err(h) => head = h,
        }
    }
}

fn pop_free_memos() -> Option<*mut Memos> {
    let mut head = FREE_MEMOS.load(Ordering::Acquire);
    loop {
        let p = (head & PTR_MASK) as *mut Memos;
        if p.is_null() {
            return None;
        }
        // SAFETY: blocks stay mapped forever; if another thread took this one meanwhile, the tag makes the swap
        // below fail and the value read here is discarded.
        let next = unsafe { core::ptr::read_volatile(&(*p).next_free) };
        let new = ((head >> 48).wrapping_add(1) << 48) | (next & PTR_MASK);
        match FREE_MEMOS.compare_exchange_weak(head, new, Ordering::AcqRel, Ordering::Acquire) {
            Ok(_) => {
                // The block is ours now: forget the previous thread's walks (its stack is gone). Dropping the
                // pages does it and gives their memory back (they read as zeroes, a fresh block, and are touched
                // again only as this thread uses them); resetting each field instead touched every page.
                // SAFETY: a whole private anonymous mapping of our own (see `map_memos`), used by no one else.
                if unsafe {
                    libc::madvise(p.cast(), core::mem::size_of::<Memos>(), libc::MADV_DONTNEED)
                } != 0
                {
                    // SAFETY: as above.
                    forget_walks(unsafe { &mut *p });
                }
                return Some(p);
            }
            Err(h) => head = h,
        }
    }
}

/// Resets a recycled block field by field (when its pages could not be dropped).
#[cold]
fn forget_walks(m: &mut Memos) {
    m.next = 0;
    m.used = 0;
    m.keys = [0; MEMOS];
    m.recent = [0; RECENT_MISSES];
    m.recent_next = 0;
    for memo in m.m.iter_mut() {
        memo.n = 0;
    }
    m.seen = [0; DOORKEEPER];
    for set in m.quick.iter_mut() {
        set.fills = 0;
        for q in set.ways.iter_mut() {
            q.pc = 0;
        }
    }
}

unsafe extern "C" fn release_memos(p: *mut c_void) {
    // SAFETY: the exiting thread's own state; `memo_busy` keeps a signal handler's walk off the mapping while it
    // goes, and later walks on this thread (other keys' destructors) find MEMOS_NONE.
    unsafe {
        let t = &mut *crate::thread::current();
        t.memo_busy = 1;
        core::sync::atomic::compiler_fence(Ordering::SeqCst);
        if t.memos == p as u64 {
            t.memos = MEMOS_NONE;
        }
        push_free_memos(p.cast());
        core::sync::atomic::compiler_fence(Ordering::SeqCst);
        t.memo_busy = 0;
    }
}

/// The memo of a walk with key `key`, or `MEMOS`.
#[inline(always)]
fn memo_of(memos: &Memos, key: u64) -> usize {
    memos.keys.iter().position(|&k| k == key).unwrap_or(MEMOS)
}

/// The key of a walk whose first frames are `frames` (KEY_FRAMES of them). Keys may collide: a memo is only ever
/// used after its frames were checked, so a collision costs time, not correctness.
#[inline(always)]
fn memo_key(frames: &[u64]) -> u64 {
    frames.iter().fold(0u64, |h, &f| {
        (h ^ f).wrapping_mul(0x9E37_79B9_7F4A_7C15).rotate_left(23)
    }) | 1
}

/// The memo a walk with key `key` and no memo may take, if it is to be remembered: only a key that missed
/// before is admitted, and it replaces the first memo the clock finds unused since its last pass.
#[cold]
fn admit(ms: &mut Memos, key: u64) -> Option<usize> {
    if !ms.recent.contains(&key) {
        let i = ms.recent_next as usize % RECENT_MISSES;
        ms.recent[i] = key;
        ms.recent_next = (i as u32 + 1) % RECENT_MISSES as u32;
        return None;
    }
    for _ in 0..=MEMOS {
        let k = ms.next as usize % MEMOS;
        ms.next = (k as u32 + 1) % MEMOS as u32;
        if ms.used & (1 << k) == 0 {
            return Some(k);
        }
        ms.used &= !(1 << k);
    }
    Some(ms.next as usize % MEMOS)
}

/// One level of the current walk, kept to be remembered.
#[derive(Clone, Copy)]
struct Level {
    cfa: u64,
    ra: u64,
    bp: u64,
    meta: u32,
}

/// Checks that the stack words remembered walk `m` read after level `j` still hold what they held, where the
/// rest of the walk depends on them, and returns the rbp value after its last level (verified
/// when the memo was cut short, the only case where it is used). `None` when a word differs.
#[inline(always)]
fn memo_still_valid(m: &Memo, j: usize, bp: u64) -> Option<u64> {
    let (from, to) = m.checks_after(j);
    let mut same = true;
    for c in from..to {
        // SAFETY: these slots lie above the current frame on this thread's stack: the remembered walk read them
        // from the same frames (same CFA and return address chain), and the current walk has reached level j.
        same &= unsafe { *(m.check_addr[c] as *const u64) } == m.check_val[c];
    }
    same.then_some(if m.last_restore > j as i32 {
        m.last_bp
    } else {
        bp
    })
}

/// Remembers the walk in `levels` in `m`.
#[cold]
#[inline(never)]
fn remember(m: &mut Memo, levels: &[Level], truncated: bool, end_uses_bp: bool, gen: u64) {
    m.n = 0;
    // Backwards: the rest of the walk after level i depends on rbp if level i + 1 computes its CFA from rbp, or
    // keeps rbp as it is and the rest after it depends on it. After the last level, it depends on it if the
    // walk ended on a CFA check or was cut short (a longer walk would go on with it).
    let mut dep = end_uses_bp || truncated;
    let mut all_out_from = levels.len();
    for i in (0..levels.len()).rev() {
        let l = levels[i];
        m.cfa[i] = l.cfa;
        m.ra[i] = l.ra;
        m.bp[i] = l.bp;
        m.meta[i] = (l.meta & !M_DEP_BP) | if dep { M_DEP_BP } else { 0 };
        dep = dep_before(l.meta, dep);
        if l.meta & M_OUTPUT != 0 && all_out_from == i + 1 {
            all_out_from = i;
        }
    }
    m.all_out_from = all_out_from as u32;
    // A saved rbp matters only if the rest of the walk depends on it (often it is just a callee-saved register
    // holding the caller's data, different on every call): only those slots are checked.
    let mut c = 0;
    m.last_restore = -1;
    for (i, l) in levels.iter().enumerate() {
        m.check_from[i] = c as u8;
        m.check_addr[c] = l.cfa - 8;
        m.check_val[c] = l.ra;
        c += 1;
        let meta = m.meta[i];
        if meta & M_RESTORES_BP != 0 {
            m.last_restore = i as i32;
            m.last_bp = l.bp;
            if meta & M_DEP_BP != 0 {
                let off = (meta >> 16) as u16 as i16 as i64;
                m.check_addr[c] = l.cfa.wrapping_add(off as u64);
                m.check_val[c] = l.bp;
                c += 1;
            }
        }
    }
    m.check_from[levels.len()] = c as u8;
    m.gen = gen;
    for e in m.ids.iter_mut() {
        e.tag = 0;
    }
    m.misses = 0;
    m.truncated = truncated as u8;
    m.end_uses_bp = end_uses_bp as u8;
    m.n = levels.len() as u32;
}

/// Records the calling thread's return addresses, innermost first, skipping the tracer's own frames.
/// Contains no panic site.
#[inline(always)]
pub fn walk(out: &mut [u64]) -> Walk {
    walk_with(out, None::<fn(&[u64]) -> u32>).0
}

/// Like [`walk`], and returns the id `intern` gives the frames (see [`walk_from`]).
#[inline(always)]
pub fn walk_with(out: &mut [u64], intern: Option<impl FnOnce(&[u64]) -> u32>) -> (Walk, u32) {
    walk_from(start(), out, intern)
}

/// Where a walk starts: the registers of the frame that took them. That frame must still be live (not returned
/// from) when the walk runs, so that its saved registers and return address are still on the stack.
#[derive(Clone, Copy)]
pub struct Start(Regs);

/// The calling frame's registers, for [`quick`] and [`walk_from`]. Inlined into the hooks, so that a walk
/// starts in the exported function's own frame.
#[inline(always)]
pub fn start() -> Start {
    Start(capture())
}

/// The stack id and walk of a stack identical to one in the thread's whole-walk cache (`t`: the calling thread's
/// state), if it is there: the part of a walk small enough to inline into every hook. `None`: walk with
/// [`walk_from`].
#[inline(always)]
pub fn quick(t: &mut crate::thread::ThreadState, s: Start, depth: u32) -> Option<(Walk, u32)> {
    let gen = GENERATION.load(Ordering::Acquire);
    if t.memo_busy != 0 || t.memos <= MEMOS_NONE {
        return None;
    }
    // A signal handler's walk must not rewrite the entry being checked (see walk_from).
    t.memo_busy = 1;
    core::sync::atomic::compiler_fence(Ordering::SeqCst);
    // SAFETY: mapped by `map_memos` for this thread and only touched by it (under `memo_busy`).
    let ms = unsafe { &mut *(t.memos as *mut Memos) };
    let hit = quick_hit(ms, s.0, gen, depth);
    core::sync::atomic::compiler_fence(Ordering::SeqCst);
    t.memo_busy = 0;
    hit
}

/// Walks from `s`, writing the return addresses to `out`, and returns the id `intern` gives the frames. A stack
/// identical to a remembered one (same frames, same depth limit) gets the id remembered with it, and `intern`
/// is not called. Out of line: the hooks inline only [`start`] and [`quick`]. Contains no panic site.
#[inline(never)]
pub fn walk_from(
    s: Start,
    out: &mut [u64],
    intern: Option<impl FnOnce(&[u64]) -> u32>,
) -> (Walk, u32) {
    let mut r = s.0;
    let gen = GENERATION.load(Ordering::Acquire);
    // SAFETY: this thread's own state; `memo_busy` keeps a signal handler's walk (nested on this thread) away from
    // the memos while we use them.
    let t = unsafe { &mut *crate::thread::current() };
    let nested = t.memo_busy != 0;
    t.memo_busy = 1;
    core::sync::atomic::compiler_fence(Ordering::SeqCst);
    let memos = if nested { None } else { memos_of(t) };
    let start = r;
    let depth = out.len() as u32;
    // Whether the whole-walk cache may keep this walk (it read no word that its checks would not cover), and
    // the word after its last level that decided how it ended.
    let mut quick_ok = true;
    let mut end_check = None;
    let mut levels = core::mem::MaybeUninit::<[Level; MEMO_LEVELS]>::uninit();
    let levels = levels.as_mut_ptr().cast::<Level>();
    // Levels recorded; MEMO_LEVELS + 1 once the walk cannot be remembered (too deep, a signal frame).
    let mut nl = 0usize;
    // The memo of this walk's first frame (MEMOS: not chosen yet), whether it may still be used, and how far
    // its levels have been passed.
    let mut mi = MEMOS;
    // The walk's key, and the levels it had walked when it chose its memo.
    let mut key = 0;
    let mut chosen_at = 0;
    let mut tries = 0;
    let mut cur = 0usize;
    // Levels unwound before the memo took over (usize::MAX: it did not).
    let mut spliced_at = usize::MAX;
    // The memo level that completed this walk (usize::MAX: none did, or the walk went on past its end).
    let mut completed_at = usize::MAX;
    let mut lookup = r.pc;
    let mut n = 0;
    let mut truncated = false;
    // Whether the way this walk ended may depend on rbp (a CFA check failed, or it was cut short).
    let mut end_uses_bp = true;
    // The tracer's own frames (the hook's, and those a signal handler interrupted) are walked but not output.
    let own = self_span();
    // A hard bound against cycles in corrupt stacks.
    let mut steps = 0;
    'walk: while steps < 512 {
        steps += 1;
        let rule = rule_for(lookup, r.pc, gen);
        let kind = rule & 0xff;
        let mut meta = 0;
        if kind == KIND_NORMAL {
            let uses_bp = rule & (1 << 8) != 0;
            let base = if uses_bp { r.bp } else { r.sp };
            let cfa = base.wrapping_add((rule >> 32) as i32 as i64 as u64);
            // Above sp (cfa - sp - 1 wraps when cfa <= sp), at most 16 MiB above, 8-aligned. An rsp-based rule's
            // offset was checked for that when it was made, and sp is always 8-aligned here (see the signal frame
            // below): only an rbp-based CFA needs the check.
            if uses_bp && (cfa.wrapping_sub(r.sp).wrapping_sub(1) >= (1 << 24) || cfa & 7 != 0) {
                break;
            }
            // SAFETY: cfa lies above the current sp within the thread's stack, per the CFI of this frame.
            let ra = unsafe { *((cfa - 8) as *const u64) };
            if uses_bp {
                meta |= M_USES_BP;
            }
            if (rule >> 9) & 3 == 1 {
                let off = (rule >> 16) as u16 as i16 as i64;
                // SAFETY: the CFI says the caller's rbp was saved at this stack slot.
                r.bp = unsafe { *(cfa.wrapping_add(off as u64) as *const u64) };
                meta |= M_RESTORES_BP | (((off as i16 as u16) as u32) << 16);
            }
            r.sp = cfa;
            r.pc = ra;
            lookup = ra.wrapping_sub(1);
        } else if kind == KIND_DEREF_CFA {
            quick_ok = false;
            let at = r.bp.wrapping_add((rule >> 32) as i32 as i64 as u64);
            if at < r.sp || at - r.sp > (1 << 24) || at & 7 != 0 {
                break;
            }
            // SAFETY: the slot lies in this frame, above sp on the thread's stack (checked), per the CFI.
            let cfa = unsafe { *(at as *const u64) };
            if cfa <= r.sp || cfa - r.sp > (1 << 24) || cfa & 7 != 0 {
                break;
            }
            // SAFETY: as for a normal frame.
            let ra = unsafe { *((cfa - 8) as *const u64) };
            let off = (rule >> 16) as u16 as i16 as i64 as u64;
            match (rule >> 9) & 3 {
                // SAFETY: the CFI says the caller's rbp was saved at this stack slot.
                1 => r.bp = unsafe { *(cfa.wrapping_add(off) as *const u64) },
                // SAFETY: as above, relative to this frame's rbp (inside the frame, below its CFA).
                2 => r.bp = unsafe { *(r.bp.wrapping_add(off) as *const u64) },
                _ => {}
            }
            r.sp = cfa;
            r.pc = ra;
            lookup = ra.wrapping_sub(1);
            // The pointer slot is a word the memo check does not re-read: never remembered.
            nl = MEMO_LEVELS + 1;
        } else if kind == KIND_SIGRETURN {
            // rt_sigframe: after the handler returns, sp points at the ucontext; gregs start at offset 40.
            let g = r.sp + 40;
            // SAFETY: the kernel laid out the ucontext at this address when it delivered the signal.
            unsafe {
                r.bp = *((g + 10 * 8) as *const u64);
                r.sp = *((g + 15 * 8) as *const u64);
                r.pc = *((g + 16 * 8) as *const u64);
            }
            // Every other step leaves sp 8-aligned, which rsp-based rules rely on (see above).
            if r.sp & 7 != 0 {
                break;
            }
            // The interrupted instruction is not a return address: look it up as is.
            lookup = r.pc;
            // Memos never span a signal frame: the ucontext is not a word the check re-reads.
            nl = MEMO_LEVELS + 1;
            quick_ok = false;
            tries = 0;
        } else {
            // The rule of a pc does not depend on rbp: neither does this end.
            end_uses_bp = false;
            break;
        }
        // A zero return address ends the stack; one above 2^47 is not user-space code on x86-64 (and the rule
        // cache keeps 47 bits of an address).
        if r.pc.wrapping_sub(1) >= (1 << 47) - 1 {
            end_uses_bp = false;
            end_check = Some((r.sp.wrapping_sub(8), r.pc));
            break;
        }
        if r.pc.wrapping_sub(own.0) >= own.1 {
            let Some(slot) = out.get_mut(n) else {
                truncated = true;
                end_check = Some((r.sp.wrapping_sub(8), r.pc));
                break;
            };
            // Symbolizers look up `pc - 1`; an interrupted pc is stored + 1 so that they land on it.
            *slot = if kind == KIND_SIGRETURN {
                r.pc + 1
            } else {
                r.pc
            };
            n += 1;
            meta |= M_OUTPUT;
            if n == KEY_FRAMES {
                key = memo_key(&out[..KEY_FRAMES]);
                chosen_at = nl + 1;
                if let Some(ms) = memos.as_deref() {
                    mi = memo_of(ms, key);
                    if nl <= MEMO_LEVELS && mi < MEMOS && ms.m[mi].n != 0 && ms.m[mi].gen == gen {
                        tries = MEMO_TRIES;
                    }
                }
            }
        }
        if nl < MEMO_LEVELS {
            // SAFETY: nl < MEMO_LEVELS, inside the buffer.
            unsafe {
                *levels.add(nl) = Level {
                    cfa: r.sp,
                    ra: r.pc,
                    bp: r.bp,
                    meta,
                }
            };
            nl += 1;
        } else {
            nl = MEMO_LEVELS + 1;
        }
        if tries == 0 {
            continue;
        }
        let Some(m) = memos.as_deref().and_then(|ms| ms.m.get(mi)) else {
            continue;
        };
        let mn = m.n as usize;
        // Levels are in increasing CFA order (each frame's CFA is above the one before it).
        while cur < mn && m.cfa[cur] < r.sp {
            cur += 1;
        }
        let j = cur;
        if j >= mn
            || m.cfa[j] != r.sp
            || m.ra[j] != r.pc
            || (m.meta[j] & M_DEP_BP != 0 && m.bp[j] != r.bp)
        {
            continue;
        }
        let Some(bp) = memo_still_valid(m, j, r.bp) else {
            tries -= 1;
            continue;
        };
        // The rest of the walk is the remembered one's: copy its frames (and its levels, if this walk is to be
        // remembered in its place).
        spliced_at = nl;
        completed_at = j;
        let keep = nl <= MEMO_LEVELS && (nl > chosen_at + MEMO_RECORD_AFTER || m.truncated != 0);
        let from = j + 1;
        let mut last = mn; // levels [from, last) taken over
        if from >= m.all_out_from as usize {
            let room = out.len() - n;
            if mn - from > room {
                last = from + room;
                truncated = true;
            }
            out[n..n + (last - from)].copy_from_slice(&m.ra[from..last]);
            n += last - from;
        } else {
            for i in from..mn {
                if m.meta[i] & M_OUTPUT != 0 {
                    let Some(slot) = out.get_mut(n) else {
                        last = i;
                        truncated = true;
                        break;
                    };
                    *slot = m.ra[i];
                    n += 1;
                }
            }
        }
        if keep {
            for i in from..last {
                if nl < MEMO_LEVELS {
                    // SAFETY: as above.
                    unsafe {
                        *levels.add(nl) = Level {
                            cfa: m.cfa[i],
                            ra: m.ra[i],
                            bp: m.bp[i],
                            meta: m.meta[i],
                        }
                    };
                    nl += 1;
                } else {
                    nl = MEMO_LEVELS + 1;
                }
            }
        }
        if truncated || m.truncated == 0 {
            end_uses_bp = truncated || m.end_uses_bp != 0;
            break 'walk;
        }
        completed_at = usize::MAX;
        // The remembered walk was cut at its depth limit and this one has room: go on unwinding from its end, and
        // remember this longer walk in its place.
        spliced_at = usize::MAX;
        r.sp = m.cfa[mn - 1];
        r.pc = m.ra[mn - 1];
        r.bp = bp;
        lookup = r.pc.wrapping_sub(1);
        tries = 0;
    }
    let w = Walk { len: n, truncated };
    let Some(ms) = memos else {
        let id = intern.map_or(0, |f| f(&out[..n]));
        if !nested {
            core::sync::atomic::compiler_fence(Ordering::SeqCst);
            t.memo_busy = 0;
        }
        return (w, id);
    };
    let has_id = intern.is_some();
    let mut id = 0;
    if let Some(f) = intern {
        // A walk completed by memo `mi` after unwinding at most ID_INNER levels itself: its id may be known.
        let inner = spliced_at.min(MEMO_LEVELS + 1);
        match ms.m.get_mut(mi) {
            Some(m) if completed_at != usize::MAX && inner <= ID_INNER => {
                // SAFETY: levels [0, inner) were written above (inner <= nl).
                let ras = |i: usize| unsafe { (*levels.add(i)).ra };
                let tag = id_tag(inner, completed_at, depth);
                let key = |e: &IdEntry| e.tag == tag && (0..inner).all(|i| e.ras[i] == ras(i));
                id = match m.ids.iter().find(|e| key(e)) {
                    Some(e) => e.id,
                    None => {
                        let id = f(&out[..n]);
                        let k = m.ids_next as usize % MEMO_IDS;
                        m.ids_next = (k as u32 + 1) % MEMO_IDS as u32;
                        let mut e = IdEntry {
                            tag,
                            id,
                            ras: [0; ID_INNER],
                        };
                        for (i, r) in e.ras.iter_mut().enumerate().take(inner) {
                            *r = ras(i);
                        }
                        m.ids[k] = e;
                        id
                    }
                };
            }
            _ => id = f(&out[..n]),
        }
    }
    if has_id && quick_ok && id != 0 {
        let tail = if completed_at != usize::MAX {
            ms.m.get(mi).map(|m| (m, completed_at))
        } else {
            None
        };
        let own_n = if tail.is_some() { spliced_at } else { nl };
        if own_n <= MEMO_LEVELS {
            // SAFETY: levels [0, own_n) were written above (own_n <= nl).
            let own = unsafe { core::slice::from_raw_parts(levels, own_n) };
            let f = Finished {
                start,
                gen,
                depth,
                own,
                tail,
                end_uses_bp,
                end_check,
                w: &w,
                id,
            };
            quick_fill(&mut ms.quick, &mut ms.seen, &f);
        }
    }
    if completed_at != usize::MAX && mi < MEMOS {
        ms.used |= 1 << mi;
        if spliced_at <= chosen_at + MEMO_RECORD_AFTER {
            ms.m[mi].misses = 0;
        }
    }
    let slot = if key == 0
        || nl > MEMO_LEVELS
        || (spliced_at != usize::MAX && spliced_at <= chosen_at + MEMO_RECORD_AFTER)
    {
        None
    } else if mi < MEMOS {
        // A memo whose key comes with changing stacks is replaced only every few misses: remembering costs
        // more than one walk, and stacks that alternate would otherwise replace it every time.
        let m = &mut ms.m[mi];
        m.misses += 1;
        (m.misses >= MEMO_MISSES).then_some(mi)
    } else {
        admit(ms, key)
    };
    if let Some(mi) = slot {
        // SAFETY: levels [0, nl) were written above.
        let recorded = unsafe { core::slice::from_raw_parts(levels, nl) };
        if let (Some(k), Some(m)) = (ms.keys.get_mut(mi), ms.m.get_mut(mi)) {
            *k = key;
            remember(m, recorded, truncated, end_uses_bp, gen);
            // The same walk again will be completed by this memo as soon as it chooses it.
            if has_id && chosen_at <= ID_INNER {
                let mut e = IdEntry {
                    tag: id_tag(chosen_at, chosen_at - 1, depth),
                    id,
                    ras: [0; ID_INNER],
                };
                for (r, l) in e.ras.iter_mut().zip(recorded.iter()).take(chosen_at) {
                    *r = l.ra;
                }
                m.ids[0] = e;
                m.ids_next = 1;
            }
        }
    }
    core::sync::atomic::compiler_fence(Ordering::SeqCst);
    t.memo_busy = 0;
    (w, id)
}

/// The cached rule for return address `lookup` (below 2^47) in generation `gen`, computed on a miss.
#[inline(always)]
fn rule_for(lookup: u64, pc: u64, gen: u64) -> u64 {
    // The set depends on the generation bits the tag holds, and on no others: a tag can only match in its set.
    let gen = gen & TAG_GEN_MASK;
    let idx =
        ((lookup ^ (gen << 48)).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> (64 - CACHE_BITS)) as usize;
    // The tag this address has in this generation, sequence bits aside: the walk never looks up an address
    // above 2^47 (it ends there), so the shift loses nothing.
    let want = lookup << TAG_ADDR_SHIFT | gen << 8;
    match cached(&CACHE.0[idx], want) {
        Ok(v) => v,
        Err(k) => rule_second_way(lookup, pc, gen, want, idx, k),
    }
}

/// The rule for `lookup` when the first way of its set (index `idx`, holding tag `k1`) did not have it: out of
/// line, so that the walk's loop carries only the first probe (inlined, the second cost ~6 instructions per frame
/// on cc1plus in registers and code around it).
#[inline(never)]
fn rule_second_way(lookup: u64, pc: u64, gen: u64, want: u64, idx: usize, k1: u64) -> u64 {
    let (first, second) = (&CACHE.0[idx], &CACHE.0[idx ^ 1]);
    match cached(second, want) {
        Ok(v) => v,
        Err(k2) => rule_missed(lookup, pc, gen, want, [(first, k1), (second, k2)]),
    }
}

/// The rule `slot` holds for `want` (a tag with a clear sequence), or the tag it holds instead.
#[inline(always)]
fn cached(slot: &Slot, want: u64) -> Result<u64, u64> {
    let k = slot.tag.load(Ordering::Acquire);
    // Same address and generation, and an even sequence (no writer inside): `want`'s bit 0 is clear.
    if (k ^ want) & !0xfe == 0 {
        let v = slot.val.load(Ordering::Relaxed);
        fence(Ordering::Acquire);
        if slot.tag.load(Ordering::Relaxed) == k && v != 0 {
            return Ok(v);
        }
    }
    Err(k)
}

/// Computes the rule of a missed address and caches it in one of its set's `ways` (with the tags they held):
/// an empty or stale one, else either.
#[cold]
#[inline(never)]
fn rule_missed(lookup: u64, pc: u64, gen: u64, want: u64, ways: [(&Slot, u64); 2]) -> u64 {
    // gimli is not ours to prove panic-free: contain it here, where it is cold.
    let v = std::panic::catch_unwind(|| rule_slow(lookup, pc)).unwrap_or(STOP);
    let stale = |k: u64| (k >> 8) & TAG_GEN_MASK != gen;
    let [a, b] = ways;
    let (slot, k) = if stale(a.1) {
        a
    } else if stale(b.1) {
        b
    } else if MISSES.load(Ordering::Relaxed) & 1 == 0 {
        a
    } else {
        b
    };
    // Publish unless another thread is writing this slot right now (then simply skip caching).
    if k & 1 == 0
        && slot
            .tag
            .compare_exchange(k, k | 1, Ordering::Acquire, Ordering::Relaxed)
            .is_ok()
    {
        slot.val.store(v, Ordering::Relaxed);
        slot.tag.store(want | ((k + 2) & 0xfe), Ordering::Release);
    }
    v
}

/// `mov $15, %rax; syscall`: glibc's `__restore_rt`, the return address of every signal handler.
const SIGRETURN_CODE: [u8; 9] = [0x48, 0xc7, 0xc0, 0x0f, 0x00, 0x00, 0x00, 0x0f, 0x05];

#[cold]
#[inline(never)]
fn rule_slow(lookup: u64, pc: u64) -> u64 {
    MISSES.fetch_add(1, Ordering::Relaxed);
    let mut obj = real::DlFindObject::zeroed();
    if !find_object(lookup as *mut c_void, &mut obj) {
        return STOP;
    }
    let rule = eval_fde(lookup, &obj);
    if rule != STOP {
        return rule;
    }
    let end = obj.map_end as u64;
    if pc >= obj.map_start as u64 && pc + SIGRETURN_CODE.len() as u64 <= end {
        // SAFETY: the bytes lie inside the mapped object that contains pc.
        let code = unsafe { core::slice::from_raw_parts(pc as *const u8, SIGRETURN_CODE.len()) };
        if code == SIGRETURN_CODE {
            return KIND_SIGRETURN;
        }
    }
    STOP
}

/// Decodes a DWARF expression of the form `DW_OP_breg6 k` (`rbp + k`; `false`) or `DW_OP_breg6 k; DW_OP_deref`
/// (`*(rbp + k)`; `true`).
fn rbp_plus(bytes: &[u8]) -> Option<(i64, bool)> {
    const DW_OP_BREG6: u8 = 0x76;
    const DW_OP_DEREF: u8 = 0x06;
    let (&op, mut rest) = bytes.split_first()?;
    if op != DW_OP_BREG6 {
        return None;
    }
    // SLEB128.
    let (mut k, mut shift) = (0i64, 0u32);
    loop {
        let (&b, r) = rest.split_first()?;
        rest = r;
        if shift >= 63 {
            return None;
        }
        k |= i64::from(b & 0x7f) << shift;
        shift += 7;
        if b & 0x80 == 0 {
            if shift < 64 && b & 0x40 != 0 {
                k |= -1i64 << shift;
            }
            break;
        }
    }
    match rest {
        [] => Some((k, false)),
        [DW_OP_DEREF] => Some((k, true)),
        _ => None,
    }
}

/// gimli's unwind state kept in line on the stack: no heap allocation on a cache miss, so the unwinder cannot
/// fail (or abort) when the tracer is out of memory. x86-64 CFI names at most 17 registers plus the return address.
struct StoreOnStack;

impl<T: gimli::ReaderOffset> gimli::UnwindContextStorage<T> for StoreOnStack {
    type Rules = [(gimli::Register, gimli::RegisterRule<T>); 32];
    type Stack = [gimli::UnwindTableRow<T, Self>; 2];
}

fn eval_fde(lookup: u64, obj: &real::DlFindObject) -> u64 {
    use gimli::{
        BaseAddresses, CfaRule, EhFrame, EhFrameHdr, LittleEndian, Pointer, RegisterRule,
        UnwindContext, UnwindSection,
    };
    const RSP: gimli::Register = gimli::X86_64::RSP;
    const RBP: gimli::Register = gimli::X86_64::RBP;
    const RA: gimli::Register = gimli::X86_64::RA;

    let hdr_addr = obj.eh_frame as u64;
    let end = obj.map_end as u64;
    if hdr_addr == 0 || hdr_addr >= end {
        return STOP;
    }
    // SAFETY: .eh_frame_hdr and .eh_frame lie in the object's mapping, which stays mapped while we read
    // (an object being unloaded concurrently with its own code running would be the program's bug).
    let hdr_data =
        unsafe { core::slice::from_raw_parts(hdr_addr as *const u8, (end - hdr_addr) as usize) };
    let bases = BaseAddresses::default().set_eh_frame_hdr(hdr_addr);
    let Ok(parsed) = EhFrameHdr::new(hdr_data, LittleEndian).parse(&bases, 8) else {
        return STOP;
    };
    let eh_addr = match parsed.eh_frame_ptr() {
        Pointer::Direct(a) => a,
        Pointer::Indirect(_) => return STOP,
    };
    if eh_addr >= end {
        return STOP;
    }
    // SAFETY: as above.
    let eh_data =
        unsafe { core::slice::from_raw_parts(eh_addr as *const u8, (end - eh_addr) as usize) };
    let eh_frame = EhFrame::new(eh_data, LittleEndian);
    let bases = bases.set_eh_frame(eh_addr).set_text(obj.map_start as u64);
    let Some(table) = parsed.table() else {
        return STOP;
    };
    let mut ctx = UnwindContext::<usize, StoreOnStack>::new_in();
    let Ok(row) = table.unwind_info_for_address(
        &eh_frame,
        &bases,
        &mut ctx,
        lookup,
        EhFrame::cie_from_offset,
    ) else {
        return STOP;
    };
    // GCC's stack realignment through a pointer (DRAP, for over-aligned locals) gives the CFA as an expression,
    // `*(rbp + k)`, and the caller's rbp as saved at `rbp + k2`: the two expression forms modelled here.
    let (kind, cfa_reg, cfa_off) = match row.cfa() {
        CfaRule::RegisterAndOffset { register, offset } if *register == RSP => {
            (KIND_NORMAL, 0u64, *offset)
        }
        CfaRule::RegisterAndOffset { register, offset } if *register == RBP => {
            (KIND_NORMAL, 1u64, *offset)
        }
        CfaRule::Expression(e) => match e.get(&eh_frame).ok().and_then(|e| rbp_plus(e.0.slice())) {
            Some((k, true)) => (KIND_DEREF_CFA, 0, k),
            _ => return STOP,
        },
        _ => return STOP,
    };
    match row.register(RA) {
        RegisterRule::Offset(-8) => {}
        _ => return STOP, // Undefined marks the outermost frame (_start, clone); anything else we do not model.
    }
    let Ok(cfa_off) = i32::try_from(cfa_off) else {
        return STOP;
    };
    // The walk applies an rsp-based rule unchecked: its CFA must lie above sp, less than 16 MiB above, 8-aligned.
    if kind == KIND_NORMAL
        && cfa_reg == 0
        && (cfa_off <= 0 || cfa_off >= 1 << 24 || cfa_off % 8 != 0)
    {
        return STOP;
    }
    let (rbp_kind, rbp_off) = match row.register(RBP) {
        RegisterRule::Offset(o) => match i16::try_from(o) {
            Ok(o) => (1u64, o),
            Err(_) => return STOP,
        },
        RegisterRule::Undefined | RegisterRule::SameValue => (0, 0),
        RegisterRule::Expression(e) => {
            match e.get(&eh_frame).ok().and_then(|e| rbp_plus(e.0.slice())) {
                Some((k, false)) => match i16::try_from(k) {
                    Ok(o) => (2u64, o),
                    Err(_) => return STOP,
                },
                _ => return STOP,
            }
        }
        _ => return STOP,
    };
    kind | (cfa_reg << 8)
        | (rbp_kind << 9)
        | ((rbp_off as u16 as u64) << 16)
        | ((cfa_off as u32 as u64) << 32)
}
