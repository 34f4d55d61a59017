//! Writing a dump: the whole ledger as one JSON file (format: docs/dump-format.md).
//!
//! Files appear atomically: the content goes to `<path>.tmp.<pid>.<n>` (O_EXCL|O_NOFOLLOW, mode 0600) in the same
//! folder, then rename(2) puts it in place; a reader never sees half a dump under the final name, and a symlink
//! planted at the final path is replaced, not followed. Live blocks are copied shard by shard under each shard's
//! lock (the only pause the program sees), then serialised without any lock held.

use crate::counters;
use crate::errors;
use crate::intern;
use crate::json::Out;
use crate::lock::SpinLock;
use crate::modules;
use crate::sys;
use crate::table::{self, family, Block, Totals};
use alloc::vec::Vec;
use core::sync::atomic::{AtomicU32, AtomicU64, Ordering};

/// Why a dump is written (`reason` in the file).
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// exit(), return from main, the last thread's pthread_exit.
    Exit,
    /// _exit()/_Exit() called directly.
    UnderscoreExit,
    /// HEAPLEDGER_SIGNAL.
    Signal,
    /// HEAPLEDGER_INTERVAL.
    Interval,
    /// A fatal signal.
    Crash,
    /// The program ended with a raw `exit_group` system call (Go's runtime): written by the end watcher.
    ExitGroup,
    /// The program was killed by a signal no handler saw (SIGKILL): written by the end watcher.
    Killed,
}

impl Reason {
    fn name(self) -> &'static str {
        match self {
            Reason::Exit => "exit",
            Reason::UnderscoreExit => "_exit",
            Reason::Signal => "signal",
            Reason::Interval => "interval",
            Reason::Crash => "crash",
            Reason::ExitGroup => "exit_group",
            Reason::Killed => "killed",
        }
    }
}

/// One dump at a time; also owns the static output buffer.
static WRITER: SpinLock<Out> = SpinLock::new(Out::new());
/// The end-of-process dump has been (or is being) written: no more snapshots.
pub static FINAL_WRITTEN: core::sync::atomic::AtomicBool =
    core::sync::atomic::AtomicBool::new(false);
/// The temporary file being written, NUL-terminated (length 0: none). Only the holder of `WRITER` sets it; after
/// the program has ended, the end watcher removes a file a killed thread was still writing.
static mut PARTIAL: [u8; PATH_MAX + 1] = [0; PATH_MAX + 1];
static PARTIAL_LEN: core::sync::atomic::AtomicUsize = core::sync::atomic::AtomicUsize::new(0);

/// `%n`: dumps written by this process so far.
pub static SNAPSHOT: AtomicU32 = AtomicU32::new(0);
/// CLOCK_REALTIME at initialisation.
pub static START_NS: AtomicU64 = AtomicU64::new(0);
/// Duration of the longest shard-copy pause while taking a dump, in nanoseconds (reported in the dump).
pub static MAX_PAUSE_NS: AtomicU64 = AtomicU64::new(0);

/// Where a crash happened (written with the crash dump).
#[derive(Clone, Copy)]
pub struct CrashInfo {
    /// Signal number.
    pub signal: i32,
    /// `si_code` (<= 0: sent by a process; > 0: raised by the CPU).
    pub code: i32,
    /// `si_addr`: the faulting address for SIGSEGV/SIGBUS, the instruction for SIGILL/SIGFPE.
    pub addr: u64,
    /// The crashing thread.
    pub tid: u32,
    /// Interned stack of the crashing thread, from the faulting instruction outwards.
    pub stack: u32,
}

static CRASH_SIGNAL: AtomicU32 = AtomicU32::new(0);
static CRASH_CODE: AtomicU32 = AtomicU32::new(0);
static CRASH_ADDR: AtomicU64 = AtomicU64::new(0);
static CRASH_TID: AtomicU32 = AtomicU32::new(0);
static CRASH_STACK: AtomicU32 = AtomicU32::new(0);

/// Records the crash context for the crash dump (async-signal-safe: plain atomics).
pub fn set_crash(c: CrashInfo) {
    CRASH_CODE.store(c.code as u32, Ordering::Relaxed);
    CRASH_ADDR.store(c.addr, Ordering::Relaxed);
    CRASH_TID.store(c.tid, Ordering::Relaxed);
    CRASH_STACK.store(c.stack, Ordering::Relaxed);
    CRASH_SIGNAL.store(c.signal as u32, Ordering::Release);
}

/// The dump lock (for fork handling).
pub fn lock_for_fork() -> &'static SpinLock<impl Sized> {
    &WRITER
}

const PATH_MAX: usize = 4096;

/// Expands `%p`, `%n` and `%%` in the output pattern.
fn expand(pattern: &[u8], pid: u32, n: u32, out: &mut [u8; PATH_MAX]) -> usize {
    let mut len = 0;
    let mut i = 0;
    let mut push = |b: &[u8], len: &mut usize| {
        let take = b.len().min(PATH_MAX - 64 - *len);
        out[*len..*len + take].copy_from_slice(&b[..take]);
        *len += take;
    };
    while i < pattern.len() {
        let mut d = [0u8; 20];
        match (pattern[i], pattern.get(i + 1)) {
            (b'%', Some(b'p')) => {
                push(crate::json::fmt_u64(pid as u64, &mut d), &mut len);
                i += 2;
            }
            (b'%', Some(b'n')) => {
                push(crate::json::fmt_u64(n as u64, &mut d), &mut len);
                i += 2;
            }
            (b'%', Some(b'%')) => {
                push(b"%", &mut len);
                i += 2;
            }
            (c, _) => {
                push(&[c], &mut len);
                i += 1;
            }
        }
    }
    len
}

/// With `HEAPLEDGER_KEEP=N` and a `%n` pattern, removes the periodic or signal snapshot written N snapshots ago,
/// so a long-running process keeps a bounded number of files. Exit and crash dumps are never removed.
fn rotate(reason: Reason, pid: u32, n: u32) {
    let keep = crate::config::KEEP.load(Ordering::Relaxed);
    let pattern = crate::config::out_pattern();
    if keep == 0 || n < keep || !matches!(reason, Reason::Interval | Reason::Signal) {
        return;
    }
    if !pattern.windows(2).any(|w| w == b"%n") {
        return;
    }
    let mut old = [0u8; PATH_MAX];
    let len = expand(pattern, pid, n - keep, &mut old);
    old[len] = 0;
    sys::remove(&old[..=len]);
}

fn fail(path: &[u8], e: i32) -> bool {
    sys::eprint(&[
        b"heapledger: cannot write dump ",
        path,
        b": ",
        sys::error_name(e),
    ]);
    false
}

/// Writes a dump now. `crash` selects the async-signal-safe path (no allocation, no waiting on locks).
/// Returns false (after one line on stderr) if the file could not be written.
pub fn write(reason: Reason, detail: &str, crash: bool) -> bool {
    write_for((sys::getpid(), sys::getppid()), reason, detail, crash)
}

/// [`write`] for process `pid` whose parent is `ppid` (the end watcher writes for the program it watched).
fn write_for((pid, ppid): (u32, u32), reason: Reason, detail: &str, crash: bool) -> bool {
    let guard = if crash {
        WRITER.try_lock()
    } else {
        Some(WRITER.lock())
    };
    let Some(mut out) = guard else { return false };
    // The process is ending: a snapshot started now would be cut short by the exit, leaving a temporary file.
    if FINAL_WRITTEN.load(Ordering::Acquire) && matches!(reason, Reason::Interval | Reason::Signal)
    {
        return false;
    }
    if !matches!(reason, Reason::Interval | Reason::Signal) {
        FINAL_WRITTEN.store(true, Ordering::Release);
    }
    if !crash {
        modules::refresh();
    }
    let n = SNAPSHOT.fetch_add(1, Ordering::Relaxed);
    let mut path = [0u8; PATH_MAX];
    let plen = expand(crate::config::out_pattern(), pid, n, &mut path);
    let mut tmp = path;
    let mut tlen = plen;
    for part in [
        &b".tmp."[..],
        crate::json::fmt_u64(pid as u64, &mut [0u8; 20]),
        b".",
        crate::json::fmt_u64(n as u64, &mut [0u8; 20]),
    ] {
        tmp[tlen..tlen + part.len()].copy_from_slice(part);
        tlen += part.len();
    }
    tmp[tlen] = 0;
    path[plen] = 0;
    let fd = match sys::create_exclusive(&tmp[..=tlen]) {
        Ok(fd) => fd,
        Err(e) => return fail(&path[..plen], e),
    };
    // SAFETY: only the holder of WRITER (us) writes PARTIAL; the end watcher reads it when no thread is left.
    unsafe { (&mut *core::ptr::addr_of_mut!(PARTIAL))[..=tlen].copy_from_slice(&tmp[..=tlen]) };
    PARTIAL_LEN.store(tlen + 1, Ordering::Release);
    out.start(fd);
    body(&mut out, reason, detail, (pid, ppid), n, crash);
    out.flush();
    let ok = out.ok();
    let e = sys::errno();
    sys::close(fd);
    let renamed = if ok {
        sys::rename(&tmp[..=tlen], &path[..=plen])
    } else {
        Err(e)
    };
    if let Err(e) = renamed {
        sys::remove(&tmp[..=tlen]);
        PARTIAL_LEN.store(0, Ordering::Release);
        return fail(&path[..plen], e);
    }
    PARTIAL_LEN.store(0, Ordering::Release);
    rotate(reason, pid, n);
    let m = crate::config::manifest();
    if !m.is_empty() {
        let mut mp = [0u8; PATH_MAX + 1];
        mp[..m.len()].copy_from_slice(m);
        let mut line = [0u8; PATH_MAX + 1];
        line[..plen].copy_from_slice(&path[..plen]);
        line[plen] = b'\n';
        sys::append(&mp[..=m.len()], &line[..=plen]);
    }
    true
}

/// Writes the final dump of a program that has ended (from the end watcher, `platform::watch`): every thread is
/// gone, so a lock one of them held is released by force, and the crash path reads the ledger as it stands.
pub fn write_after_end(pid: u32, ppid: u32, reason: Reason, detail: &str) -> bool {
    // SAFETY: no thread of the program is left to hold these locks; the watcher is the only one running.
    unsafe {
        WRITER.force_unlock();
        modules::registry().force_unlock();
    }
    // A snapshot cut short by the end (Go's exit_group while the snapshot thread wrote) leaves its temporary file.
    let partial = PARTIAL_LEN.swap(0, Ordering::AcqRel);
    if partial > 0 {
        // SAFETY: as above; the writer that set it is gone.
        sys::remove(unsafe { &(&*core::ptr::addr_of!(PARTIAL))[..partial] });
    }
    write_for((pid, ppid), reason, detail, true)
}

/// Writes the live blocks with their reachability classes (the final dump): every shard is locked at once, the
/// blocks are indexed by address and classified, then written from the table, and only then are the locks
/// released (a copy of the blocks to write after unlocking was the exit's memory peak: 24 bytes per block on top
/// of the table). Returns the totals read under the same locks, and the number and bytes of the blocks written;
/// None, before anything is written, when the tracer cannot get memory for the scan.
fn write_classified(
    out: &mut Out,
    first: &mut bool,
    refs: &mut Refs,
) -> Option<(Totals, u64, u64)> {
    let roots = crate::reach::roots();
    // Shard locks are held from here on: a signal handler that allocates must not wait for them.
    crate::thread::with_busy(crate::thread::BUSY_HOOK, || {
        locked_write_classified(&roots, out, first, refs)
    })
}

fn locked_write_classified(
    roots: &crate::reach::Roots,
    out: &mut Out,
    first: &mut bool,
    refs: &mut Refs,
) -> Option<(Totals, u64, u64)> {
    let mut guards = Vec::new();
    guards.try_reserve_exact(table::SHARDS).ok()?;
    for i in 0..table::SHARDS {
        guards.push(table::shard(i).lock());
    }
    let n = guards.iter().map(|g| g.len()).sum();
    let mut keys: Vec<u64> = Vec::new();
    keys.try_reserve_exact(n).ok()?;
    let mut totals = Totals::default();
    for g in &guards {
        keys.extend(
            g.blocks()
                .filter(|b| b.family() != family::INTERNAL)
                .map(Block::key),
        );
        totals.add(&g.totals);
    }
    keys.sort_unstable();
    let get = |addr: u64| guards[table::shard_index(addr)].get(addr);
    let class = crate::reach::classify(&keys, |a| get(a).map_or(0, |b| b.size()), roots)?;
    let (mut count, mut bytes) = (0u64, 0u64);
    // Lookups in address order hop between shards and miss cache: each block's slot is fetched 16 blocks ahead.
    const AHEAD: usize = 16;
    for (i, (&k, &c)) in keys.iter().zip(&class).enumerate() {
        if let Some(&next) = keys.get(i + AHEAD) {
            let a = table::key_addr(next);
            guards[table::shard_index(a)].prefetch(a);
        }
        if let Some(b) = get(table::key_addr(k)) {
            write_block(out, &b, c, first, refs);
            count += 1;
            bytes += b.size();
        }
    }
    drop(guards);
    Some((totals, count, bytes))
}

/// The stack ids a dump names (its blocks and errors): only their frames are written, every other stack as `[]`,
/// which keeps each id at its index. An exit dump named 15.6k of cc1plus's 115k interned stacks; writing all
/// of them made a 23 MiB file of 2.7M numbers, 3 % of the traced run's instructions.
struct Refs {
    /// A bit per id below `limit`; ids interned since the dump started (at or past `limit`) are always written.
    bits: Vec<u64>,
    limit: u32,
    /// Write every stack: a crash dump (no allocation there, and the crash record names one more), or no memory
    /// for the bits.
    all: bool,
}

impl Refs {
    fn new(all: bool) -> Refs {
        let limit = intern::count();
        let mut bits = Vec::new();
        let all = all || bits.try_reserve_exact(limit as usize / 64 + 1).is_err();
        if !all {
            bits.resize(limit as usize / 64 + 1, 0);
        }
        Refs { bits, limit, all }
    }

    fn mark(&mut self, id: u32) {
        if let Some(w) = self.bits.get_mut(id as usize / 64) {
            *w |= 1 << (id % 64);
        }
    }

    fn named(&self, id: u32) -> bool {
        self.all
            || id >= self.limit
            || self
                .bits
                .get(id as usize / 64)
                .is_some_and(|w| w & (1 << (id % 64)) != 0)
    }
}

/// Writes the live blocks shard by shard: each shard is copied into a buffer under its lock (the only pause
/// the program sees) and written after the lock is released. The buffer is sized before the lock is taken,
/// so no allocation happens while a shard is held. Returns the totals read together with the blocks, and the
/// number and bytes of the blocks written.
fn stream_blocks(
    out: &mut Out,
    crash: bool,
    first: &mut bool,
    refs: &mut Refs,
) -> (Totals, u64, u64) {
    let mut totals = Totals::default();
    let (mut count, mut bytes) = (0u64, 0u64);
    let mut put = |out: &mut Out, b: &Block, first: &mut bool| {
        count += 1;
        bytes += b.size();
        write_block(out, b, 0, first, refs);
    };
    let mut buf: Vec<Block> = Vec::new();
    for i in 0..table::SHARDS {
        let shard = table::shard(i);
        if crash {
            // SAFETY (crash path): no allocation and no waiting; a torn read misreports a block or two.
            let s = unsafe { &*shard.get_unlocked() };
            for b in s.blocks().filter(|b| b.family() != family::INTERNAL) {
                put(out, b, first);
            }
            totals.add(&s.totals);
            continue;
        }
        loop {
            let start = sys::monotonic_ns();
            let s = shard.lock();
            // SAFETY: the thread's own state: while the shard is held, a nested allocation must not wait for it.
            let was = unsafe {
                core::mem::replace(
                    &mut (*crate::thread::current()).busy,
                    crate::thread::BUSY_HOOK,
                )
            };
            if buf.capacity() >= s.len() {
                buf.clear();
                buf.extend(
                    s.blocks()
                        .filter(|b| b.family() != family::INTERNAL)
                        .copied(),
                );
                totals.add(&s.totals);
                drop(s);
                // SAFETY: as above.
                unsafe { (*crate::thread::current()).busy = was };
                MAX_PAUSE_NS.fetch_max(sys::monotonic_ns() - start, Ordering::Relaxed);
                for b in &buf {
                    put(out, b, first);
                }
                break;
            }
            let need = s.len() + s.len() / 4 + 16;
            drop(s);
            // SAFETY: as above.
            unsafe { (*crate::thread::current()).busy = was };
            if buf.try_reserve_exact(need - buf.len()).is_err() {
                // Out of memory: write this shard straight from the table, holding its lock longer.
                let s = shard.lock();
                for b in s.blocks().filter(|b| b.family() != family::INTERNAL) {
                    put(out, b, first);
                }
                totals.add(&s.totals);
                break;
            }
        }
    }
    (totals, count, bytes)
}

/// One block's line. Kept out of line with its writes inlined: the exit dump calls it a million times from two
/// places, and when the compiler chose otherwise `Out::raw` became a call per comma (+60 ms for 1M blocks).
#[inline(never)]
fn write_block(out: &mut Out, b: &Block, class: u8, first: &mut bool, refs: &mut Refs) {
    refs.mark(b.stack());
    out.raw(if *first { b"\n[" } else { b",\n[" });
    *first = false;
    out.num(b.addr());
    out.raw(b",");
    out.num(b.size());
    out.raw(b",");
    out.num(b.stack() as u64);
    out.raw(b",");
    out.num(b.family() as u64);
    out.raw(b",");
    out.num(b.tid() as u64);
    out.raw(b",");
    out.num(b.seq());
    out.raw(b",");
    out.num(class as u64);
    out.raw(b"]");
}

fn body(out: &mut Out, reason: Reason, detail: &str, (pid, ppid): (u32, u32), n: u32, crash: bool) {
    out.raw(b"{");
    out.key("format");
    out.str(heapledger_format::FORMAT.as_bytes());
    out.raw(b",");
    out.key("version");
    out.num(heapledger_format::VERSION);
    out.raw(b",");
    out.key("reason");
    out.str(reason.name().as_bytes());
    out.raw(b",");
    out.key("detail");
    out.str(detail.as_bytes());
    out.raw(b",");
    out.key("platform");
    out.str(sys::PLATFORM.as_bytes());
    out.raw(b",");
    out.key("pid");
    out.num(pid as u64);
    out.raw(b",");
    out.key("ppid");
    out.num(ppid as u64);
    out.raw(b",\n");
    let mut exe = [0u8; 4096];
    let elen = sys::exe_path(&mut exe);
    out.key("exe");
    out.str(&exe[..elen]);
    out.raw(b",");
    out.key("cmdline");
    out.raw(b"[");
    let mut cmd = [0u8; 8192];
    let clen = sys::cmdline(&mut cmd);
    let args = &cmd[..clen];
    if !args.is_empty() {
        for (i, arg) in args.split(|&c| c == 0).enumerate() {
            if i > 0 {
                out.raw(b",");
            }
            out.str(arg);
        }
    }
    out.raw(b"],\n");
    out.key("snapshot");
    out.num(n as u64);
    out.raw(b",");
    out.key("time_ns");
    out.num(sys::realtime_ns());
    out.raw(b",");
    out.key("start_time_ns");
    out.num(START_NS.load(Ordering::Relaxed));
    out.raw(b",");
    out.key("monotonic_ns");
    out.num(sys::monotonic_ns());
    out.raw(b",");
    out.key("depth");
    out.num(crate::config::DEPTH.load(Ordering::Relaxed) as u64);
    out.raw(b",");
    out.key("sample_bytes");
    out.num(crate::config::SAMPLE.load(Ordering::Relaxed));
    out.raw(b",\n");

    // Blocks first, then errors, then stacks: every stack id they name is below the count read afterwards.
    let final_dump = matches!(reason, Reason::Exit | Reason::UnderscoreExit);
    let mut refs = Refs::new(crash || reason == Reason::Crash);
    out.key("blocks");
    out.raw(b"[");
    let mut first = true;
    let classified = if !crash && final_dump && crate::config::REACH.load(Ordering::Relaxed) != 0 {
        write_classified(out, &mut first, &mut refs)
    } else {
        None
    };
    let (mut totals, live_blocks, live_bytes) = match classified {
        Some(written) => written,
        None => stream_blocks(out, crash, &mut first, &mut refs),
    };
    // Windows: blocks still live when their heap was destroyed stay in every dump, as that heap's leaks.
    #[cfg(windows)]
    let (live_blocks, live_bytes) = {
        let (mut n, mut bytes) = (live_blocks, live_bytes);
        if !crash {
            crate::platform::heaps::for_each_retired(|b| {
                write_block(out, b, 0, &mut first, &mut refs);
                n += 1;
                bytes += b.size();
            });
        }
        (n, bytes)
    };
    out.raw(b"],\n");
    totals.add(&counters::striped());

    out.key("errors");
    out.raw(b"[");
    let write_errors = |out: &mut Out, kept: &[errors::Error], refs: &mut Refs| {
        for (i, e) in kept.iter().enumerate() {
            out.raw(if i == 0 { b"\n{" } else { b",\n{" });
            out.key("kind");
            out.str(errors::KIND_NAMES[e.kind as usize].as_bytes());
            out.raw(b",");
            out.key("addr");
            out.num(e.addr);
            out.raw(b",");
            out.key("size");
            out.num(e.size);
            out.raw(b",");
            out.key("allocator");
            #[cfg(not(windows))]
            // "" when the pointer was never a block (an invalid free).
            let name = heapledger_format::ALLOCATORS
                .get(e.family as usize)
                .copied()
                .unwrap_or("");
            // Windows: dynamic allocator names (`HeapAlloc(heap 0x…)`, `msvcrt!malloc`).
            #[cfg(windows)]
            let name = crate::platform::names::family_str(e.family);
            out.str(name.as_bytes());
            out.raw(b",");
            out.key("freed_with");
            #[cfg(not(windows))]
            out.str(errors::FREE_NAMES[e.freed_with as usize].as_bytes());
            // Windows: the releaser with its heap or runtime (`HeapFree(heap 0x…)`, `ucrtbase!free`).
            #[cfg(windows)]
            out.str(
                crate::platform::names::via_name(e.via)
                    .unwrap_or(errors::FREE_NAMES[e.freed_with as usize].as_bytes()),
            );
            out.raw(b",");
            out.key("tid");
            out.num(e.tid as u64);
            out.raw(b",");
            out.key("detail");
            #[cfg(not(windows))]
            out.str(errors::DETAIL_NAMES[e.detail as usize].as_bytes());
            // Windows: cross-heap frees say whether the two sides share a heap (names::Detail).
            #[cfg(windows)]
            out.str(match crate::platform::names::via_detail(e.via) {
                b"" => errors::DETAIL_NAMES[e.detail as usize].as_bytes(),
                d => d,
            });
            for (k, v) in [
                ("stack", e.stack),
                ("alloc_stack", e.alloc_stack),
                ("first_free_stack", e.first_free_stack),
            ] {
                out.raw(b",");
                out.key(k);
                if v == errors::NO_STACK {
                    out.raw(b"null");
                } else {
                    refs.mark(v);
                    out.num(v as u64);
                }
            }
            out.raw(b"}");
        }
    };
    if crash {
        errors::with_kept_unlocked(|k| write_errors(out, k, &mut refs));
    } else {
        errors::with_kept(|k| write_errors(out, k, &mut refs));
    }
    out.raw(b"],\n");

    let nstacks = intern::count();
    out.key("stacks");
    out.raw(b"[");
    for id in 0..nstacks {
        out.raw(if id == 0 { b"\n[" } else { b",\n[" });
        if let Some(frames) = intern::get(id).filter(|_| refs.named(id)) {
            for (i, f) in frames.iter().enumerate() {
                if i > 0 {
                    out.byte(b',');
                }
                out.num(*f);
            }
        }
        out.byte(b']');
    }
    out.raw(b"],\n");

    let err_counts = errors::counts();
    out.object(
        "totals",
        &[
            ("allocations", totals.allocations),
            ("frees", totals.frees),
            ("bytes_allocated", totals.bytes_allocated),
            ("bytes_freed", totals.bytes_freed),
        ],
    );
    out.object("live", &[("blocks", live_blocks), ("bytes", live_bytes)]);
    let kinds: [(&str, u64); 4] = core::array::from_fn(|i| (errors::KIND_NAMES[i], err_counts[i]));
    out.object("error_counts", &kinds);
    out.object(
        "tracer",
        &[
            ("lost_blocks", table::LOST.load(Ordering::Relaxed)),
            ("lost_stacks", intern::LOST.load(Ordering::Relaxed)),
            ("lost_errors", errors::LOST.load(Ordering::Relaxed)),
            (
                "truncated_stacks",
                intern::TRUNCATED.load(Ordering::Relaxed),
            ),
            (
                "memory_bytes",
                crate::heap::MAPPED.load(Ordering::Relaxed) as u64,
            ),
            (
                "unwind_cache_misses",
                crate::stack::MISSES.load(Ordering::Relaxed),
            ),
            (
                "heap_failures",
                crate::heap::FAILURES.load(Ordering::Relaxed) as u64,
            ),
            ("max_pause_ns", MAX_PAUSE_NS.load(Ordering::Relaxed)),
        ],
    );
    let sig = CRASH_SIGNAL.load(Ordering::Acquire);
    if reason == Reason::Crash && sig != 0 {
        out.key("crash");
        out.raw(b"{");
        out.key("signal");
        out.num(sig as u64);
        out.raw(b",");
        out.key("code");
        // si_code is signed: SI_USER is 0, SI_TKILL -6.
        let code = CRASH_CODE.load(Ordering::Relaxed) as i32;
        if code < 0 {
            out.raw(b"-");
        }
        out.num(code.unsigned_abs() as u64);
        out.raw(b",");
        out.key("addr");
        out.num(CRASH_ADDR.load(Ordering::Relaxed));
        out.raw(b",");
        out.key("tid");
        out.num(CRASH_TID.load(Ordering::Relaxed) as u64);
        out.raw(b",");
        out.key("stack");
        out.num(
            CRASH_STACK
                .load(Ordering::Relaxed)
                .min(nstacks.saturating_sub(1)) as u64,
        );
        out.raw(b"},\n");
    }
    out.key("allocators");
    #[cfg(not(windows))]
    out.raw(b"[\"malloc\",\"aligned\",\"new\",\"new[]\"],\n");
    // Windows: Linux's four names, then one per heap and two per C runtime (`platform::names`).
    #[cfg(windows)]
    {
        out.raw(b"[");
        for f in 0..crate::platform::names::family_count() {
            if f > 0 {
                out.raw(b",");
            }
            out.str(crate::platform::names::family_name(f as u8).unwrap_or(b""));
        }
        out.raw(b"],\n");
    }
    write_modules(out, crash);
    out.key("complete");
    out.raw(b"true}\n");
}

fn write_modules(out: &mut Out, crash: bool) {
    out.key("modules");
    out.raw(b"[");
    let reg = modules::registry();
    let guard = if crash {
        reg.try_lock()
    } else {
        Some(reg.lock())
    };
    if let Some(list) = guard {
        for (i, m) in list.iter().enumerate() {
            out.raw(if i == 0 { b"\n{" } else { b",\n{" });
            out.key("path");
            out.str(&m.path);
            out.raw(b",");
            out.key("build_id");
            // "" for none: PE images and objects linked without --build-id have none.
            out.hex(&m.build_id);
            out.raw(b",");
            out.key("base");
            out.num(m.base);
            out.raw(b",");
            out.key("segments");
            out.raw(b"[");
            for (j, s) in m.segments.iter().enumerate() {
                if j > 0 {
                    out.raw(b",");
                }
                out.raw(b"[");
                out.num(s[0]);
                out.raw(b",");
                out.num(s[1]);
                out.raw(b",");
                out.num(s[2]);
                out.raw(b"]");
            }
            out.raw(b"],");
            out.key("loaded");
            out.raw(if m.loaded { b"true" } else { b"false" });
            if !m.loaded && m.stacks_to != 0 {
                out.raw(b",");
                out.key("stacks_to");
                out.num(m.stacks_to as u64);
            }
            out.raw(b"}");
        }
    }
    out.raw(b"],\n");
}
