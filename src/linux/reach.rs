//! Leak classification at exit, in-process and without ptrace: a conservative mark phase like LeakSanitizer's
//! and Valgrind's.
//!
//! Roots are the writable segments of every loaded module (but the tracer's own), the TLS blocks of the exiting
//! thread, its stack from the frame that called the final dump upwards plus the registers it held there, and the
//! whole stack mapping (TLS and thread descriptor included) of every other thread that ever allocated. Every
//! aligned word that points into a live block (interior pointers count) marks it reachable, transitively. The
//! rest is lost: Valgrind's clique rule splits it into definitely lost (nothing lost points at it) and indirectly
//! lost (only other lost blocks point at it), independent of scan order.
//!
//! While it runs, every table shard is locked, so no block the scan reads can be freed under it; the module list
//! and memory map are read before that, because the loader may hold its lock while it calls malloc.
//!
//! glibc keeps pointers to chunk headers in its own data (`main_arena.top`, bins), and a chunk header lies in
//! the last 8 usable bytes of the block before it; such a pointer would keep a leaked block reachable. A value
//! equal to `block + malloc_usable_size(block) - 8` is therefore not counted as a pointer into the block when
//! the allocator is glibc's.

use crate::table::{key_addr, KEY_BIG as BIG};
use alloc::vec::Vec;
use core::sync::atomic::{AtomicU64, Ordering};

/// Class numbers written in the dump.
pub const REACHABLE: u8 = 1;
/// No pointer to the block from roots or other blocks.
pub const DEFINITELY_LOST: u8 = 2;
/// Pointed to only from lost blocks.
pub const INDIRECTLY_LOST: u8 = 3;

/// Stack pointer and callee-saved registers of the thread writing the final dump, taken where it entered the
/// tracer (so the scan does not see the tracer's own frames).
pub static ENTRY_SP: AtomicU64 = AtomicU64::new(0);
/// Registers spilled at that point (a root range).
pub static ENTRY_REGS: [AtomicU64; 8] = [const { AtomicU64::new(0) }; 8];

/// Records the calling thread's stack pointer and registers as the scan's starting point.
#[inline(always)]
pub fn capture_entry() {
    let (sp, rbx, rbp, r12, r13, r14, r15): (u64, u64, u64, u64, u64, u64, u64);
    // SAFETY: reads registers only.
    unsafe {
        core::arch::asm!("mov {0}, rsp", "mov {1}, rbx", "mov {2}, rbp", "mov {3}, r12", "mov {4}, r13",
            "mov {5}, r14", "mov {6}, r15",
            out(reg) sp, out(reg) rbx, out(reg) rbp, out(reg) r12, out(reg) r13, out(reg) r14, out(reg) r15,
            options(nomem, nostack, preserves_flags));
    }
    for (slot, v) in ENTRY_REGS.iter().zip([rbx, rbp, r12, r13, r14, r15]) {
        slot.store(v, Ordering::Relaxed);
    }
    ENTRY_SP.store(sp, Ordering::Relaxed);
}

/// A stack address and the tid of each thread that has allocated: roots for the reachability scan at exit. At
/// scan time the mapping that contains the address is that thread's stack (TLS and descriptor at its top).
///
/// Why not `pthread_getattr_np`: it takes the thread's descriptor lock and allocates inside; a program that is
/// itself inside `pthread_getattr_np` when it first allocates (Rust's runtime does this at start-up) would
/// deadlock on its own lock. A stack pointer costs one register read.
const MAX_THREADS: usize = 4096;
static STACKS: [[AtomicU64; 2]; MAX_THREADS] =
    [const { [AtomicU64::new(0), AtomicU64::new(0)] }; MAX_THREADS];
static NEXT_STACK: core::sync::atomic::AtomicUsize = core::sync::atomic::AtomicUsize::new(0);

/// Remembers where the calling thread's stack is (once per thread, at its first recorded allocation). Slots are
/// reused round-robin past 4096 threads; the oldest threads are the likeliest to be gone.
#[cold]
pub fn register_thread() {
    let sp: u64;
    // SAFETY: reads the stack pointer.
    unsafe {
        core::arch::asm!("mov {0}, rsp", out(reg) sp, options(nomem, nostack, preserves_flags))
    };
    let tid = crate::sys::gettid() as u64;
    let i = NEXT_STACK.fetch_add(1, Ordering::AcqRel) % MAX_THREADS;
    STACKS[i][1].store(tid, Ordering::Relaxed);
    STACKS[i][0].store(sp, Ordering::Release);
}

/// True if thread `tid` of this process still exists. A thread that has exited leaves only stale data on its
/// (cached) stack, and scanning 8 MiB of untouched stack per dead thread costs page faults for nothing.
fn thread_alive(tid: u64) -> bool {
    let mut path = [0u8; 64];
    let prefix = b"/proc/self/task/";
    path[..prefix.len()].copy_from_slice(prefix);
    let mut d = [0u8; 20];
    let digits = crate::json::fmt_u64(tid, &mut d);
    path[prefix.len()..prefix.len() + digits.len()].copy_from_slice(digits);
    // SAFETY: NUL-terminated path (the buffer is zeroed beyond the digits).
    unsafe { libc::access(path.as_ptr().cast(), libc::F_OK) == 0 }
}

/// A stack address of every registered thread, and whether the thread is still alive.
fn stacks() -> impl Iterator<Item = (u64, bool)> {
    let n = NEXT_STACK.load(Ordering::Acquire).min(MAX_THREADS);
    STACKS[..n].iter().filter_map(|s| {
        let sp = s[0].load(Ordering::Acquire);
        let tid = s[1].load(Ordering::Relaxed);
        (sp != 0).then(|| (sp, thread_alive(tid)))
    })
}

/// How much of the top of an exited thread's (cached) stack mapping is scanned: its thread descriptor and
/// static TLS, which still point at the blocks glibc keeps for the next thread to reuse (the DTV).
const DEAD_THREAD_TOP: u64 = 64 * 1024;

/// Memory the scan may read: readable mappings from /proc/self/maps.
struct Maps(Vec<(u64, u64, bool)>, Vec<(u64, u64)>);

impl Maps {
    fn read() -> Maps {
        let mut data: Vec<u8> = Vec::new();
        // SAFETY: plain file reads into our own buffer.
        unsafe {
            let fd = libc::open(
                c"/proc/self/maps".as_ptr(),
                libc::O_RDONLY | libc::O_CLOEXEC,
            );
            if fd >= 0 {
                let mut buf = [0u8; 8192];
                loop {
                    let n = libc::read(fd, buf.as_mut_ptr().cast(), buf.len());
                    if n <= 0 {
                        break;
                    }
                    data.extend_from_slice(&buf[..n as usize]);
                }
                libc::close(fd);
            }
        }
        let mut v = Vec::new();
        // Thread stacks as glibc lays them out: an inaccessible guard mapping directly below a read-write one
        // (malloc's arenas are the other way round: the reserved, inaccessible part lies above).
        let mut thread_stacks = Vec::new();
        let mut guard_end = 0u64;
        for line in data.split(|&c| c == b'\n') {
            let mut it = line.split(|&c| c == b' ');
            let (Some(range), Some(perms)) = (it.next(), it.next()) else {
                continue;
            };
            let mut r = range.split(|&c| c == b'-');
            let (Some(lo), Some(hi)) = (r.next().and_then(hex), r.next().and_then(hex)) else {
                continue;
            };
            if perms.first() == Some(&b'r') {
                let writable = perms.get(1) == Some(&b'w');
                v.push((lo, hi, writable));
                if writable && lo == guard_end {
                    thread_stacks.push((lo, hi));
                }
            }
            guard_end = if perms.starts_with(b"---p") { hi } else { 0 };
        }
        Maps(v, thread_stacks)
    }

    /// The parts of [lo, hi) that are readable.
    fn clip(&self, lo: u64, hi: u64, out: &mut Vec<(u64, u64)>) {
        for &(a, b, _) in &self.0 {
            let (s, e) = (a.max(lo), b.min(hi));
            if s < e {
                out.push((s, e));
            }
        }
    }

    /// The mapping containing `addr`.
    fn containing(&self, addr: u64) -> Option<(u64, u64)> {
        self.0
            .iter()
            .find(|m| addr >= m.0 && addr < m.1)
            .map(|m| (m.0, m.1))
    }
}

fn hex(s: &[u8]) -> Option<u64> {
    let mut v = 0u64;
    for &c in s {
        v = v.checked_mul(16)?
            + match c {
                b'0'..=b'9' => c - b'0',
                b'a'..=b'f' => c - b'a' + 10,
                _ => return None,
            } as u64;
    }
    Some(v)
}

/// Root ranges gathered before the table is locked.
pub struct Roots(Vec<(u64, u64)>);

/// Collects the roots (module data, TLS, stacks, saved registers).
pub fn roots() -> Roots {
    let maps = Maps::read();
    let mut ranges: Vec<(u64, u64)> = Vec::new();
    let (self_lo, self_hi) = crate::stack::self_range();
    // Module data and this thread's TLS blocks.
    struct Acc<'a> {
        maps: &'a Maps,
        out: &'a mut Vec<(u64, u64)>,
        self_lo: u64,
        self_hi: u64,
    }
    unsafe extern "C" fn cb(
        info: *mut libc::dl_phdr_info,
        _: usize,
        data: *mut libc::c_void,
    ) -> i32 {
        // SAFETY: valid per dl_iterate_phdr; data is our Acc.
        let (info, acc) = unsafe { (&*info, &mut *(data as *mut Acc)) };
        for i in 0..info.dlpi_phnum as usize {
            // SAFETY: dlpi_phdr has dlpi_phnum entries.
            let ph = unsafe { &*info.dlpi_phdr.add(i) };
            let lo = info.dlpi_addr + ph.p_vaddr;
            let hi = lo + ph.p_memsz;
            if lo >= acc.self_lo && lo < acc.self_hi {
                continue; // the tracer's own data holds only its bookkeeping
            }
            if ph.p_type == libc::PT_LOAD && ph.p_flags & libc::PF_W != 0 {
                acc.maps.clip(lo, hi, acc.out);
            } else if ph.p_type == libc::PT_TLS && !info.dlpi_tls_data.is_null() {
                let t = info.dlpi_tls_data as u64;
                acc.maps.clip(t, t + ph.p_memsz, acc.out);
            }
        }
        0
    }
    let mut acc = Acc {
        maps: &maps,
        out: &mut ranges,
        self_lo,
        self_hi,
    };
    // SAFETY: the callback reads the headers it is given.
    unsafe { libc::dl_iterate_phdr(Some(cb), (&mut acc as *mut Acc).cast()) };

    // This thread: from where it entered the tracer to the top of its stack mapping, plus its registers.
    let sp = ENTRY_SP.load(Ordering::Relaxed);
    let mine = maps.containing(sp);
    if let Some((_, hi)) = mine {
        ranges.push((sp & !7, hi));
    }
    let regs = ENTRY_REGS.as_ptr() as u64;
    ranges.push((regs, regs + 8 * ENTRY_REGS.len() as u64));
    // Other threads: their whole stack mapping (TLS and thread descriptor sit at its top).
    for (sp, alive) in stacks() {
        let Some(m) = maps.containing(sp) else {
            continue;
        };
        if Some(m) == mine {
            continue;
        }
        // A live thread: its whole mapping (we do not know where its stack pointer is now). An exited one: only
        // the top, where the descriptor glibc keeps with the cached stack lives; the rest is stale data.
        let r = if alive {
            m
        } else {
            (m.0.max(m.1.saturating_sub(DEAD_THREAD_TOP)), m.1)
        };
        if !ranges.contains(&r) {
            ranges.push(r);
        }
    }
    // Threads that never allocated (so never registered) and exited ones whose stacks glibc caches: the top of
    // every mapping laid out like a thread stack holds its descriptor and static TLS (the DTV pointer, for one).
    for &(lo, hi) in &maps.1 {
        if Some((lo, hi)) == mine || ranges.iter().any(|r| r.0 <= lo && r.1 >= hi) {
            continue;
        }
        ranges.push((lo.max(hi.saturating_sub(DEAD_THREAD_TOP)), hi));
    }
    Roots(ranges)
}

struct Index<'a, F> {
    keys: &'a [u64],
    /// Size of the block at an address, for blocks of `BIG` bytes or more.
    big: F,
    lo: u64,
    hi: u64,
    glibc: bool,
}

impl<F: Fn(u64) -> u64> Index<'_, F> {
    /// The block that `v` points into, if any.
    #[inline]
    fn find(&self, v: u64) -> Option<usize> {
        if v < self.lo || v >= self.hi {
            return None;
        }
        // v < hi < 2^48, so the shift keeps it whole; the entry of the last block starting at or below v is the
        // last one at or below this.
        let top = (v << 16) | BIG;
        let i = self.keys.partition_point(|&k| k <= top);
        if i == 0 {
            return None;
        }
        let (addr, size) = self.block(i - 1);
        if v >= addr + size.max(1) {
            return None;
        }
        if v != addr && self.glibc && v == addr + usable(addr) - 8 {
            return None; // glibc's pointer to the next chunk's header, not the program's
        }
        Some(i - 1)
    }

    /// Address and size of block `i`.
    #[inline]
    fn block(&self, i: usize) -> (u64, u64) {
        let k = self.keys[i];
        let addr = key_addr(k);
        match k & BIG {
            BIG => (addr, (self.big)(addr)),
            size => (addr, size),
        }
    }
}

fn usable(p: u64) -> u64 {
    // SAFETY: p is a live block of the real allocator (the table is locked).
    match unsafe { crate::real::get() }.malloc_usable_size {
        // SAFETY: as above.
        Some(f) => unsafe { f(p as *mut libc::c_void) as u64 },
        None => 0,
    }
}

fn scan_words<F: Fn(u64) -> u64>(idx: &Index<F>, lo: u64, hi: u64, hit: &mut impl FnMut(usize)) {
    let mut p = (lo + 7) & !7;
    while p + 8 <= hi {
        // SAFETY: [lo, hi) is readable: a clipped mapping or a live block.
        let v = unsafe { core::ptr::read_volatile(p as *const u64) };
        if let Some(i) = idx.find(v) {
            hit(i);
        }
        p += 8;
    }
}

const PAGE: u64 = 4096;
/// Ranges bigger than this are scanned page by page, skipping pages that were never touched.
const SPARSE_SCAN: u64 = 1 << 20;

/// Calls `hit` for every aligned word in [lo, hi) that points into a live block. Large ranges (a 16 GiB block
/// the program reserved and touched a little) are read only where pages are resident: reading an untouched page
/// would fault in zeroes, page after page, for nothing. (A page swapped out is skipped too: its pointers are
/// missed, which can only make a block look lost, never hide a leak.)
fn scan<F: Fn(u64) -> u64>(idx: &Index<F>, lo: u64, hi: u64, mut hit: impl FnMut(usize)) {
    if hi <= lo || hi - lo <= SPARSE_SCAN {
        scan_words(idx, lo, hi, &mut hit);
        return;
    }
    let first = lo & !(PAGE - 1);
    let mut vec = [0u8; 4096];
    let mut base = first;
    while base < hi {
        let pages = ((hi - base).div_ceil(PAGE)).min(vec.len() as u64);
        // SAFETY: mincore only reports residency of [base, base + pages * PAGE), which lies in a mapping.
        let ok = unsafe {
            libc::mincore(
                base as *mut libc::c_void,
                (pages * PAGE) as usize,
                vec.as_mut_ptr(),
            )
        } == 0;
        for k in 0..pages {
            if ok && vec[k as usize] & 1 == 0 {
                continue;
            }
            let pl = (base + k * PAGE).max(lo);
            let ph = (base + (k + 1) * PAGE).min(hi);
            scan_words(idx, pl, ph, &mut hit);
        }
        base += pages * PAGE;
    }
}

/// Blocks the work stack holds at once (256 KiB). A block reached while it is full is flagged `PENDING` and
/// picked up by a sweep once the stack drains: a work stack sized for every block cost 4 bytes per block at exit
/// (an array of 1M pointers pushes them all at once).
const WORK_CAP: usize = 1 << 16;
/// Class flag: reached, not yet scanned.
const PENDING: u8 = 0x80;
const UNREACHED: u8 = 0;

/// The mark phase's state: one class byte per block and a bounded work stack.
struct Marker<'a, F> {
    idx: Index<'a, F>,
    class: Vec<u8>,
    work: Vec<u32>,
    /// Some block carries `PENDING`.
    pending: bool,
}

impl<F: Fn(u64) -> u64> Marker<'_, F> {
    /// Gives every unreached block that [lo, hi) points at the class `to`, except `leader`.
    fn reach_from(&mut self, lo: u64, hi: u64, to: u8, leader: usize) {
        let Marker {
            idx,
            class,
            work,
            pending,
        } = self;
        scan(idx, lo, hi, |j| {
            if j != leader && class[j] == UNREACHED {
                class[j] = to;
                if work.len() < work.capacity() {
                    work.push(j as u32);
                } else {
                    class[j] |= PENDING;
                    *pending = true;
                }
            }
        });
    }

    /// Scans every block on the work stack, and every pending one, until nothing new is reached.
    fn drain(&mut self, to: u8, leader: usize) {
        loop {
            while let Some(i) = self.work.pop() {
                let (addr, size) = self.idx.block(i as usize);
                self.reach_from(addr, addr + size, to, leader);
            }
            if !self.pending {
                return;
            }
            self.pending = false;
            for (j, c) in self.class.iter_mut().enumerate() {
                if *c & PENDING != 0 {
                    if self.work.len() == self.work.capacity() {
                        self.pending = true;
                        break;
                    }
                    *c &= !PENDING;
                    self.work.push(j as u32);
                }
            }
        }
    }
}

/// Classifies the blocks of `keys` (sorted [`Block::key`](crate::table::Block::key)s; the table must be locked by
/// the caller, and `big` gives the size of a block of 64 KiB or more from its address). Returns one class per
/// block, or None when the tracer has no memory for the scan.
pub fn classify(keys: &[u64], big: impl Fn(u64) -> u64, roots: &Roots) -> Option<Vec<u8>> {
    let mut class: Vec<u8> = Vec::new();
    class.try_reserve_exact(keys.len()).ok()?;
    class.resize(keys.len(), UNREACHED);
    if keys.is_empty() {
        return Some(class);
    }
    // SAFETY: initialised before any dump is written.
    let real = unsafe { crate::real::get() };
    let glibc = real.malloc as usize == crate::real::libc_malloc_addr();
    let mut idx = Index {
        keys,
        big,
        lo: key_addr(keys[0]),
        hi: 0,
        glibc,
    };
    let (a, size) = idx.block(keys.len() - 1);
    idx.hi = a + size.max(1);
    let mut work: Vec<u32> = Vec::new();
    work.try_reserve_exact(keys.len().min(WORK_CAP)).ok()?;
    let mut m = Marker {
        idx,
        class,
        work,
        pending: false,
    };
    let none = usize::MAX;
    for &(lo, hi) in &roots.0 {
        m.reach_from(lo, hi, REACHABLE, none);
        m.drain(REACHABLE, none);
    }
    // Cliques: from each still-unreached block, whatever it reaches among unreached blocks is indirectly lost.
    for leader in 0..keys.len() {
        if m.class[leader] != UNREACHED {
            continue;
        }
        let (addr, size) = m.idx.block(leader);
        m.reach_from(addr, addr + size, INDIRECTLY_LOST, leader);
        m.drain(INDIRECTLY_LOST, leader);
    }
    for c in m.class.iter_mut() {
        if *c == UNREACHED {
            *c = DEFINITELY_LOST;
        }
    }
    Some(m.class)
}
