//! Call-stack capture on Windows: the x64 unwind tables (`.pdata`/`.xdata`, which every x64 PE module has,
//! MSVC- and mingw-built alike; frame pointers are not needed), reduced to a compact rule per return address
//! and cached, as the Linux unwinder does with `.eh_frame`.
//!
//! Why not `RtlCaptureStackBackTrace` (or `RtlVirtualUnwind` per frame): measured under Wine 8, one capture
//! costs about 7 µs whatever the depth, which made an allocation+free pair 110× slower than untraced
//! (126 ns → 14 µs); with the cache a warm frame costs a hash, a few loads and one stack read. Set
//! `HEAPLEDGER_UNWINDER=rtl` to use `RtlCaptureStackBackTrace` instead (for comparison; see docs/windows.md).
//!
//! A rule says: CFA = (RSP or RBP) + offset; the return address is at CFA − 8; RBP is unchanged or was saved
//! at CFA + offset. It is derived from the function's unwind codes the way `RtlVirtualUnwind` applies them
//! (only codes whose prolog offset the return address has passed; from the frame register when `SET_FPREG`
//! applies; through chained unwind info). Frames without unwind info are leaf functions (return address at
//! RSP). A frame register other than RBP, `PUSH_MACHFRAME` (an interrupt or exception frame), or an
//! implausible CFA stops the walk. Stack reads stay inside the thread's stack as the TEB describes it.
//!
//! The tracer's own frames, and the thin `kernel32`/`kernelbase` wrappers the program called (`HeapFree`,
//! `LocalAlloc`, ...), are dropped from the top, so a stack starts at the program's call site.

use core::ffi::c_void;
use core::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};

/// Rules computed the slow way (cache misses).
pub static MISSES: AtomicU64 = AtomicU64::new(0);

/// Address ranges whose frames are dropped from the top of a stack: this DLL, kernel32, kernelbase.
static SKIP: [[AtomicUsize; 2]; 3] = [const { [AtomicUsize::new(0), AtomicUsize::new(0)] }; 3];
static GENERATION: AtomicU64 = AtomicU64::new(1);
static LOOKUP: AtomicUsize = AtomicUsize::new(0);
static USE_RTL: AtomicBool = AtomicBool::new(false);

/// Records the ranges of the modules whose leading frames are skipped, and finds the unwind-table lookup.
/// Start-up.
pub fn init() {
    let own = super::modules::image_range(super::lifecycle::own_module());
    let k32 = super::modules::image_range(super::modules::module_handle("kernel32.dll"));
    let kb = super::modules::image_range(super::modules::module_handle("kernelbase.dll"));
    for (slot, r) in SKIP.iter().zip([own, k32, kb]) {
        if let Some((lo, hi)) = r {
            slot[0].store(lo, Ordering::Relaxed);
            slot[1].store(hi, Ordering::Relaxed);
        }
    }
    if let Some(f) = super::sys::proc_address(c"ntdll.dll", c"RtlLookupFunctionEntry") {
        LOOKUP.store(f, Ordering::Relaxed);
    }
    let rtl = super::sys::getenv(c"HEAPLEDGER_UNWINDER") == Some(b"rtl");
    USE_RTL.store(
        rtl || LOOKUP.load(Ordering::Relaxed) == 0,
        Ordering::Relaxed,
    );
}

#[inline(always)]
fn skipped(pc: usize) -> bool {
    SKIP.iter()
        .any(|r| pc >= r[0].load(Ordering::Relaxed) && pc < r[1].load(Ordering::Relaxed))
}

/// Forgets every cached rule (a DLL was unloaded; its addresses may be reused by the next one).
pub fn invalidate() {
    GENERATION.fetch_add(1, Ordering::AcqRel);
}

/// True if `addr` lies inside a loaded module (a global or static, for invalid-free reports).
pub fn in_module(addr: u64) -> bool {
    super::modules::containing(addr as usize).is_some()
}

/// There is no dynamic loader module to recognise on Windows.
pub fn in_loader(_pc: u64) -> bool {
    false
}

/// Result of a stack walk.
pub struct Walk {
    /// Frames written to the output.
    pub len: usize,
    /// The walk stopped at the depth limit while frames remained.
    pub truncated: bool,
}

// ---- rules ----------------------------------------------------------------------------------------------------

const KIND_NORMAL: u64 = 1;
const KIND_LEAF: u64 = 2;
const KIND_STOP: u64 = 3;

/// A rule packed in a u64: kind (bits 0..8), CFA from RBP (bit 8), RBP saved (bit 9), RBP slot offset from the
/// CFA (bits 10..32, signed 22 bits), CFA offset (bits 32..64, signed).
#[inline(always)]
fn pack(kind: u64, from_rbp: bool, rbp_saved: bool, rbp_off: i64, cfa_off: i64) -> u64 {
    kind | (from_rbp as u64) << 8
        | (rbp_saved as u64) << 9
        | ((rbp_off as u64) & 0x3f_ffff) << 10
        | (cfa_off as u64) << 32
}

#[repr(C)]
struct RuntimeFunction {
    begin: u32,
    end: u32,
    unwind: u32,
}

type LookupFn = unsafe extern "system" fn(u64, *mut u64, *mut c_void) -> *const RuntimeFunction;

/// Derives the rule for return address `pc` from its function's unwind codes.
#[cold]
fn compute_rule(pc: u64, innermost: bool) -> u64 {
    MISSES.fetch_add(1, Ordering::Relaxed);
    let stop = pack(KIND_STOP, false, false, 0, 0);
    let lookup = LOOKUP.load(Ordering::Relaxed);
    if lookup == 0 {
        return stop;
    }
    let mut base = 0u64;
    // A return address may be one past the function's end (a call to a noreturn function): look up pc - 1.
    let probe = if innermost { pc } else { pc - 1 };
    // SAFETY: RtlLookupFunctionEntry only reads the loader's module list and the image's exception directory.
    let rf = unsafe {
        core::mem::transmute::<usize, LookupFn>(lookup)(probe, &mut base, core::ptr::null_mut())
    };
    if rf.is_null() {
        return pack(KIND_LEAF, false, false, 0, 8);
    }
    // SAFETY: a RUNTIME_FUNCTION and its UNWIND_INFO inside a mapped image.
    unsafe {
        let mut rf = &*rf;
        let offset = pc - (base + rf.begin as u64);
        let mut first = true;
        // Sizes are summed in list order (the reverse of the prolog): `total` up to SET_FPREG, then `after`.
        let mut total: i64 = 0;
        let mut from_rbp = false;
        let mut fp_offset: i64 = 0;
        let mut rbp_slot: Option<i64> = None; // offset from the frame's base (RSP or RBP-derived) + total so far
        for _ in 0..32 {
            let ui = (base + (rf.unwind & !1) as u64) as *const u8;
            let flags = *ui >> 3;
            let prolog_size = *ui.add(1) as u64;
            let count = *ui.add(2) as usize;
            let frame_reg = *ui.add(3) & 0xf;
            let frame_off = (*ui.add(3) >> 4) as i64 * 16;
            let codes = ui.add(4) as *const [u8; 2];
            let mut i = 0;
            while i < count {
                let [code_off, op_info] = *codes.add(i);
                let op = op_info & 0xf;
                let info = op_info >> 4;
                let applies = !first || offset >= prolog_size || offset >= code_off as u64;
                let slot16 = |k: usize| u16::from_le_bytes(*codes.add(i + k)) as i64;
                let (slots, size) = match op {
                    0 => (1, 8),                             // PUSH_NONVOL
                    1 if info == 0 => (2, slot16(1) * 8),    // ALLOC_LARGE
                    1 => (3, slot16(1) | (slot16(2) << 16)), // ALLOC_LARGE, 32-bit
                    2 => (1, info as i64 * 8 + 8),           // ALLOC_SMALL
                    3 => (1, 0),                             // SET_FPREG
                    4 => (2, 0),                             // SAVE_NONVOL
                    5 => (3, 0),                             // SAVE_NONVOL_FAR
                    6 => (2, 0),                             // EPILOG (version 2)
                    8 => (2, 0),                             // SAVE_XMM128
                    9 => (3, 0),                             // SAVE_XMM128_FAR
                    _ => return stop,                        // PUSH_MACHFRAME, unknown
                };
                if applies {
                    match op {
                        0 if info == 5 => rbp_slot = Some(total),
                        3 => {
                            if frame_reg != 5 {
                                return stop;
                            }
                            // Everything listed after this code was done before RBP was set: the CFA is
                            // RBP - frame offset + those sizes. Sizes listed before it do not count.
                            from_rbp = true;
                            fp_offset = frame_off;
                            total = 0;
                            rbp_slot = None;
                        }
                        4 if info == 5 => rbp_slot = Some(total + slot16(1) * 8),
                        5 if info == 5 => rbp_slot = Some(total + (slot16(1) | (slot16(2) << 16))),
                        _ => {}
                    }
                    total += size;
                }
                i += slots;
            }
            if flags & 4 == 0 {
                break;
            }
            // UNW_FLAG_CHAININFO: the parent function's entry follows the (even-padded) codes.
            let chained = ui.add(4 + 2 * ((count + 1) & !1)) as *const RuntimeFunction;
            rf = &*chained;
            first = false;
        }
        // CFA = base register (+ -frame offset) + total + 8 (the return address).
        let cfa_off = if from_rbp {
            total + 8 - fp_offset
        } else {
            total + 8
        };
        if !(8..(1 << 30)).contains(&cfa_off) {
            return stop;
        }
        let (saved, rbp_off) = match rbp_slot {
            // The slot is at base + slot; the CFA at base + total + 8.
            Some(s) => (true, s - total - 8),
            None => (false, 0),
        };
        if !(-(1 << 21)..(1 << 21)).contains(&rbp_off) {
            return stop;
        }
        pack(KIND_NORMAL, from_rbp, saved, rbp_off, cfa_off)
    }
}

// ---- the cache -------------------------------------------------------------------------------------------------

const CACHE_BITS: u32 = 16;
const CACHE_SLOTS: usize = 1 << CACHE_BITS;

struct Slot {
    seq: AtomicU32,
    key: AtomicU64,
    val: AtomicU64,
}

static CACHE: [Slot; CACHE_SLOTS] = [const {
    Slot {
        seq: AtomicU32::new(0),
        key: AtomicU64::new(0),
        val: AtomicU64::new(0),
    }
}; CACHE_SLOTS];

#[inline(always)]
fn rule_for(pc: u64, innermost: bool, gen: u64) -> u64 {
    let key = pc ^ gen.rotate_right(17) ^ (innermost as u64) << 63;
    let slot = &CACHE[((pc.wrapping_mul(0x9E37_79B9_7F4A_7C15)) >> (64 - CACHE_BITS)) as usize];
    let s1 = slot.seq.load(Ordering::Acquire);
    if s1 & 1 == 0 {
        let k = slot.key.load(Ordering::Relaxed);
        let v = slot.val.load(Ordering::Relaxed);
        core::sync::atomic::fence(Ordering::Acquire);
        if slot.seq.load(Ordering::Relaxed) == s1 && k == key && v != 0 {
            return v;
        }
    }
    let v = compute_rule(pc, innermost);
    // Writers skip a slot another writer holds; readers retry nothing (a miss just recomputes).
    if slot
        .seq
        .compare_exchange(s1 & !1, (s1 & !1) + 1, Ordering::Acquire, Ordering::Relaxed)
        .is_ok()
    {
        slot.key.store(key, Ordering::Relaxed);
        slot.val.store(v, Ordering::Relaxed);
        slot.seq.store((s1 & !1) + 2, Ordering::Release);
    }
    v
}

// ---- the walk ----------------------------------------------------------------------------------------------------

const EXTRA: usize = 24;

/// Where a walk starts (Windows walks from wherever it is called: the tracer's frames are skipped by address).
#[derive(Clone, Copy)]
pub struct Start;

/// See the Linux unwinder; here there is nothing to take.
#[inline(always)]
pub fn start() -> Start {
    Start
}

/// Windows keeps no whole-walk cache: always `None`.
#[inline(always)]
pub fn quick(_: &mut crate::thread::ThreadState, _: Start, _: u32) -> Option<(Walk, u32)> {
    None
}

/// [`walk_with`] (the start is where it is called).
pub fn walk_from(
    _: Start,
    out: &mut [u64],
    intern: Option<impl FnOnce(&[u64]) -> u32>,
) -> (Walk, u32) {
    walk_with(out, intern)
}

/// Like [`walk`], and returns the id `intern` gives the frames (the Linux unwinder can skip `intern` for a stack
/// it remembers; this one always calls it).
#[inline(always)]
pub fn walk_with(out: &mut [u64], intern: Option<impl FnOnce(&[u64]) -> u32>) -> (Walk, u32) {
    let w = walk(out);
    let id = intern.map_or(0, |f| f(&out[..w.len]));
    (w, id)
}

/// Records the calling thread's return addresses, innermost first, without the tracer's frames (nor the
/// kernel32/kernelbase wrappers right above them).
#[inline(never)]
pub fn walk(out: &mut [u64]) -> Walk {
    let mut buf = [0u64; crate::config::MAX_DEPTH + EXTRA];
    let want = (out.len() + EXTRA).min(buf.len());
    let n = if USE_RTL.load(Ordering::Relaxed) {
        let p = buf.as_mut_ptr().cast::<*mut c_void>();
        // SAFETY: the buffer holds `want` pointer-sized entries.
        unsafe {
            windows_sys::Win32::System::Diagnostics::Debug::RtlCaptureStackBackTrace(
                0,
                want as u32,
                p,
                core::ptr::null_mut(),
            ) as usize
        }
    } else {
        unwind(&mut buf[..want])
    };
    let mut first = 0;
    while first < n && skipped(buf[first] as usize) {
        first += 1;
    }
    // Past the thread's first frame (RtlUserThreadStart) an unwinder may return 0 and then junk: stop there.
    let end = (first..n).find(|&i| buf[i] < 0x10000).unwrap_or(n);
    let avail = end - first;
    let len = avail.min(out.len());
    out[..len].copy_from_slice(&buf[first..first + len]);
    Walk {
        len,
        truncated: avail > out.len() || (end == want && len == out.len()),
    }
}

/// Unwinds from the caller's frame with the cached rules; returns the number of return addresses written.
#[inline(never)]
fn unwind(out: &mut [u64]) -> usize {
    let (mut pc, mut sp, mut bp): (u64, u64, u64);
    let (stack_hi, stack_lo): (u64, u64);
    // SAFETY: reads registers and the TEB's stack bounds (NT_TIB.StackBase at gs:8, StackLimit at gs:16).
    unsafe {
        core::arch::asm!(
            "lea {pc}, [rip]",
            "mov {sp}, rsp",
            "mov {bp}, rbp",
            "mov {hi}, gs:[0x8]",
            "mov {lo}, gs:[0x10]",
            pc = out(reg) pc, sp = out(reg) sp, bp = out(reg) bp, hi = out(reg) stack_hi, lo = out(reg) stack_lo,
            options(nostack, readonly, preserves_flags)
        );
    }
    let gen = GENERATION.load(Ordering::Acquire);
    let mut n = 0;
    let mut innermost = true;
    // The first frame is this function's own (skipped later, like every tracer frame).
    for _ in 0..512 {
        let rule = rule_for(pc, innermost, gen);
        innermost = false;
        let kind = rule & 0xff;
        let cfa = match kind {
            KIND_NORMAL => {
                let base = if rule & (1 << 8) != 0 { bp } else { sp };
                base.wrapping_add((rule >> 32) as i32 as i64 as u64)
            }
            KIND_LEAF => sp.wrapping_add(8),
            _ => break,
        };
        if cfa <= sp || cfa > stack_hi || cfa < stack_lo + 8 || cfa & 7 != 0 {
            break;
        }
        // SAFETY: cfa - 8 lies in this thread's committed stack (checked against the TEB's bounds).
        let ra = unsafe { *((cfa - 8) as *const u64) };
        if kind == KIND_NORMAL && rule & (1 << 9) != 0 {
            let off = (((rule >> 10) & 0x3f_ffff) << 42) as i64 >> 42;
            let slot = cfa.wrapping_add(off as u64);
            if slot < stack_lo || slot + 8 > stack_hi {
                break;
            }
            // SAFETY: as above.
            bp = unsafe { *(slot as *const u64) };
        }
        sp = cfa;
        pc = ra;
        if pc < 0x10000 {
            break;
        }
        if n == out.len() {
            return n;
        }
        out[n] = pc;
        n += 1;
    }
    n
}
