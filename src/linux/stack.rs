//! Call-stack capture: a DWARF (`.eh_frame`) unwinder with a lock-free per-address rule cache.
//!
//! Debian's binaries have no frame pointers, so walking `rbp` gives one or two frames. Evaluating CFI for every
//! frame of every allocation (libgcc's `_Unwind_Backtrace`: ~10 µs a stack) is far too slow, so each return
//! address's rule is reduced once to a compact form — CFA = rsp|rbp + offset, return address at CFA-8, rbp
//! unchanged or saved at CFA+offset — and cached in a direct-mapped table guarded by per-slot sequence counters.
//! A warm frame then costs a hash, two loads and one read of the stack. Cache misses look the address up with
//! glibc's lock-free `_dl_find_object` (no loader lock, safe inside malloc) and evaluate the FDE with gimli.
//! Signal frames (`__restore_rt`) are recognised by their code bytes, as libgcc does, and unwound through the
//! `ucontext` the kernel pushed. Unloading a library (`dlclose`) bumps a generation that invalidates the cache.

use crate::real;
use core::arch::asm;
use core::ffi::c_void;
use core::sync::atomic::{fence, AtomicU32, AtomicU64, AtomicUsize, Ordering};

const KIND_NORMAL: u64 = 1;
const KIND_STOP: u64 = 2;
const KIND_SIGRETURN: u64 = 3;
const STOP: u64 = KIND_STOP;

const CACHE_BITS: u32 = 16;
const CACHE_SLOTS: usize = 1 << CACHE_BITS;

struct Slot {
    seq: AtomicU32,
    key: AtomicU64,
    val: AtomicU64,
}

#[allow(clippy::declare_interior_mutable_const)]
const EMPTY_SLOT: Slot = Slot {
    seq: AtomicU32::new(0),
    key: AtomicU64::new(0),
    val: AtomicU64::new(0),
};
static CACHE: [Slot; CACHE_SLOTS] = [EMPTY_SLOT; CACHE_SLOTS];
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
    // The generation occupies 16 bits of the key; when it wraps, old keys could match again, so empty the cache.
    if gen & 0xffff == 0 {
        for slot in CACHE.iter() {
            let s = slot.seq.load(Ordering::Relaxed);
            if s & 1 == 0
                && slot
                    .seq
                    .compare_exchange(s, s + 1, Ordering::Acquire, Ordering::Relaxed)
                    .is_ok()
            {
                slot.key.store(0, Ordering::Relaxed);
                slot.val.store(0, Ordering::Relaxed);
                slot.seq.store(s + 2, Ordering::Release);
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

#[inline(always)]
fn is_self(pc: u64) -> bool {
    let pc = pc as usize;
    pc >= SELF_LO.load(Ordering::Relaxed) && pc < SELF_HI.load(Ordering::Relaxed)
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

/// Records the calling thread's return addresses, innermost first, skipping the tracer's own frames.
/// Inlined into the hooks (see `record::stack_id`); contains no panic site.
#[inline(always)]
pub fn walk(out: &mut [u64]) -> Walk {
    let mut r = capture();
    let gen = GENERATION.load(Ordering::Acquire);
    let mut lookup = r.pc;
    let mut n = 0;
    let mut truncated = false;
    // A hard bound against cycles in corrupt stacks.
    for _ in 0..512 {
        let rule = rule_for(lookup, r.pc, gen);
        let kind = rule & 0xff;
        if kind == KIND_NORMAL {
            let base = if rule & (1 << 8) != 0 { r.bp } else { r.sp };
            let cfa = base.wrapping_add((rule >> 32) as i32 as i64 as u64);
            if cfa <= r.sp || cfa - r.sp > (1 << 24) || cfa & 7 != 0 {
                break;
            }
            // SAFETY: cfa lies above the current sp within the thread's stack, per the CFI of this frame.
            let ra = unsafe { *((cfa - 8) as *const u64) };
            if (rule >> 9) & 3 == 1 {
                let off = (rule >> 16) as u16 as i16 as i64;
                // SAFETY: the CFI says the caller's rbp was saved at this stack slot.
                r.bp = unsafe { *(cfa.wrapping_add(off as u64) as *const u64) };
            }
            r.sp = cfa;
            r.pc = ra;
            lookup = ra.wrapping_sub(1);
        } else if kind == KIND_SIGRETURN {
            // rt_sigframe: after the handler returns, sp points at the ucontext; gregs start at offset 40.
            let g = r.sp + 40;
            // SAFETY: the kernel laid out the ucontext at this address when it delivered the signal.
            unsafe {
                r.bp = *((g + 10 * 8) as *const u64);
                r.sp = *((g + 15 * 8) as *const u64);
                r.pc = *((g + 16 * 8) as *const u64);
            }
            // The interrupted instruction is not a return address: look it up as is.
            lookup = r.pc;
        } else {
            break;
        }
        if r.pc == 0 {
            break;
        }
        if is_self(r.pc) {
            continue;
        }
        let Some(slot) = out.get_mut(n) else {
            truncated = true;
            break;
        };
        // Symbolizers look up `pc - 1`; an interrupted pc is stored + 1 so that they land on it.
        *slot = if kind == KIND_SIGRETURN {
            r.pc + 1
        } else {
            r.pc
        };
        n += 1;
    }
    Walk { len: n, truncated }
}

#[inline(always)]
fn rule_for(lookup: u64, pc: u64, gen: u64) -> u64 {
    let key = lookup ^ ((gen & 0xffff) << 48);
    let idx = (key.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> (64 - CACHE_BITS)) as usize;
    let slot = &CACHE[idx];
    let s1 = slot.seq.load(Ordering::Acquire);
    if s1 & 1 == 0 {
        let k = slot.key.load(Ordering::Relaxed);
        let v = slot.val.load(Ordering::Relaxed);
        fence(Ordering::Acquire);
        if k == key && slot.seq.load(Ordering::Relaxed) == s1 && v != 0 {
            return v;
        }
    }
    // gimli is not ours to prove panic-free: contain it here, where it is cold.
    let v = std::panic::catch_unwind(|| rule_slow(lookup, pc)).unwrap_or(STOP);
    // Publish unless another thread is writing this slot right now (then simply skip caching).
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
    let (cfa_reg, cfa_off) = match row.cfa() {
        CfaRule::RegisterAndOffset { register, offset } if *register == RSP => (0u64, *offset),
        CfaRule::RegisterAndOffset { register, offset } if *register == RBP => (1u64, *offset),
        _ => return STOP,
    };
    match row.register(RA) {
        RegisterRule::Offset(-8) => {}
        _ => return STOP, // Undefined marks the outermost frame (_start, clone); anything else we do not model.
    }
    let Ok(cfa_off) = i32::try_from(cfa_off) else {
        return STOP;
    };
    let (rbp_kind, rbp_off) = match row.register(RBP) {
        RegisterRule::Offset(o) => match i16::try_from(o) {
            Ok(o) => (1u64, o),
            Err(_) => return STOP,
        },
        RegisterRule::Undefined | RegisterRule::SameValue => (0, 0),
        _ => return STOP,
    };
    KIND_NORMAL
        | (cfa_reg << 8)
        | (rbp_kind << 9)
        | ((rbp_off as u16 as u64) << 16)
        | ((cfa_off as u32 as u64) << 32)
}
