//! The detours: ntdll's heap functions (what HeapAlloc/HeapFree/HeapReAlloc/HeapSize forward to),
//! RtlDestroyHeap (HeapDestroy), and malloc/calloc/realloc/free/_aligned_* of every C runtime DLL loaded
//! (ucrtbase, msvcrt, msvcr*), including runtimes loaded later.
//!
//! Each hook first decides how to serve the call, as on Linux:
//! - before start-up finished or after the final dump: straight through;
//! - while this thread is inside the tracer, or inside a traced call of a C runtime (its `malloc` calling
//!   `RtlAllocateHeap`): straight through, the block recorded as internal (settled silently, never counted),
//!   and the heap handle noted, which tells the outer hook which heap the runtime allocates from. So a C
//!   runtime's nested calls are attributed to the outer call, not counted twice;
//! - otherwise traced: the original call, then the record, with `GetLastError()` as the original left it.
//!
//! Frees are judged before they are passed on (see [`judge`]): a double or invalid free is reported and not
//! passed on; a block released through another heap or runtime is reported as `cross_heap_free` and, unless
//! both sides use the same heap (then it is only a warning), released through its own heap or runtime instead.
//! The heap stays intact and the program keeps running.

use super::heaps;
use super::names::{self, Detail, Kind};
use super::sys::{self, WinThread};
use crate::errors::{self, Error, FreeFn, NO_STACK};
use crate::record::{self, Settle};
use crate::table::{self, Block};
use core::ffi::c_void;
use core::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use detour::RawDetour;
use windows_sys::Win32::Foundation::{HANDLE, HMODULE};

// ---- state ------------------------------------------------------------------------------------------------

/// Hooks record (set once start-up is complete, cleared after the final dump).
static ACTIVE: AtomicBool = AtomicBool::new(false);
/// Start-up window: the hooks are live but the blocks that existed before are still being recorded, so a free
/// of an unknown pointer is passed on silently.
static STARTING: AtomicBool = AtomicBool::new(true);

/// Makes the hooks record.
pub fn activate() {
    ACTIVE.store(true, Ordering::Release);
}

/// Ends the start-up window.
pub fn started() {
    STARTING.store(false, Ordering::Release);
}

/// Makes every hook pass straight through (after the final dump).
pub fn deactivate() {
    ACTIVE.store(false, Ordering::Release);
}

/// The detours, kept for the life of the process (dropping one would unpatch code that may be gone).
static DETOURS: crate::lock::SpinLock<alloc::vec::Vec<RawDetour>> =
    crate::lock::SpinLock::new(alloc::vec::Vec::new());

type AllocFn = unsafe extern "system" fn(usize, u32, usize) -> *mut c_void;
type FreeHeapFn = unsafe extern "system" fn(usize, u32, *mut c_void) -> u8;
type ReAllocFn = unsafe extern "system" fn(usize, u32, *mut c_void, usize) -> *mut c_void;
type SizeFn = unsafe extern "system" fn(usize, u32, *const c_void) -> usize;
type DestroyFn = unsafe extern "system" fn(usize) -> usize;
type ExitFn = unsafe extern "system" fn(u32);
type TerminateFn = unsafe extern "system" fn(HANDLE, i32) -> i32;
type CreateProcessFn = unsafe extern "system" fn(
    HANDLE,
    *const u16,
    *mut u16,
    *const c_void,
    *const c_void,
    i32,
    u32,
    *const c_void,
    *const u16,
    *const c_void,
    *mut ProcessInformation,
    *mut HANDLE,
) -> i32;

/// PROCESS_INFORMATION.
#[repr(C)]
pub struct ProcessInformation {
    /// Process handle.
    pub process: HANDLE,
    /// Main thread handle.
    pub thread: HANDLE,
    /// Process id.
    pub pid: u32,
    /// Thread id.
    pub tid: u32,
}

static ORIG_ALLOC: AtomicUsize = AtomicUsize::new(0);
static ORIG_FREE: AtomicUsize = AtomicUsize::new(0);
static ORIG_REALLOC: AtomicUsize = AtomicUsize::new(0);
static ORIG_SIZE: AtomicUsize = AtomicUsize::new(0);
static ORIG_DESTROY: AtomicUsize = AtomicUsize::new(0);
static ORIG_EXIT: AtomicUsize = AtomicUsize::new(0);
static ORIG_TERMINATE: AtomicUsize = AtomicUsize::new(0);
static ORIG_CREATE_PROCESS: AtomicUsize = AtomicUsize::new(0);

macro_rules! orig {
    ($slot:ident, $ty:ty) => {{
        // SAFETY: set to the detour's trampoline (or the function itself) before any hook can run.
        #[allow(unused_unsafe)]
        let f = unsafe { core::mem::transmute::<usize, $ty>($slot.load(Ordering::Relaxed)) };
        f
    }};
}

// ---- modes -------------------------------------------------------------------------------------------------

enum Mode {
    Off,
    Internal(&'static mut WinThread),
    Traced(&'static mut WinThread),
}

#[inline(always)]
fn mode() -> Mode {
    if !ACTIVE.load(Ordering::Acquire) {
        return Mode::Off;
    }
    // SAFETY: the calling thread's own record, valid while the thread lives.
    let t = unsafe { &mut *sys::win_thread() };
    if t.base.busy != 0 {
        Mode::Internal(t)
    } else {
        Mode::Traced(t)
    }
}

/// Runs tracer work with any panic contained (counted as a lost record).
#[inline(always)]
fn guarded<R>(default: R, f: impl FnOnce() -> R) -> R {
    std::panic::catch_unwind(core::panic::AssertUnwindSafe(f)).unwrap_or_else(|_| {
        table::LOST.fetch_add(1, Ordering::Relaxed);
        default
    })
}

/// Forgets `p` if the ledger has it (a release the tracer does not judge).
#[inline]
fn forget(p: *mut c_void) {
    table::shard_of(p as u64).lock().remove(p as u64);
}

#[inline]
fn internal_alloc(p: *mut c_void, size: usize) {
    if !p.is_null() {
        // No hook holds a shard lock while it calls into the system: waiting is safe.
        record::on_internal_alloc(p as u64, size as u64, true);
    }
}

/// Whether a free of `p` should be judged. During start-up, pointers the ledger does not know yet may be
/// blocks that existed before: those pass.
#[inline]
fn judged(p: *mut c_void) -> bool {
    !STARTING.load(Ordering::Relaxed) || table::shard_of(p as u64).lock().get(p as u64).is_some()
}

// ---- releasing functions (`via`) ---------------------------------------------------------------------------

/// The function releasing a block, with its heap or runtime.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Releaser {
    /// HeapFree on a heap.
    HeapFree(usize),
    /// HeapReAlloc on a heap.
    HeapReAlloc(usize),
    /// A runtime's function (`Func` index) of runtime `c`.
    Crt(usize, Func),
}

const VIA_HEAP_FREE: u32 = 1;
const VIA_HEAP_REALLOC: u32 = 2;
const VIA_CRT: u32 = 16;

fn set_via(t: &mut WinThread, r: Releaser) {
    let (f, key) = match r {
        Releaser::HeapFree(h) => (VIA_HEAP_FREE, h),
        Releaser::HeapReAlloc(h) => (VIA_HEAP_REALLOC, h),
        Releaser::Crt(c, f) => (VIA_CRT + f as u32, c),
    };
    t.via_fn = f;
    t.via_key = key;
    t.via_detail = 0;
}

/// The `via` value (name id and detail) of the release being judged on this thread; names are made here, on
/// the error path only.
pub fn current_via() -> u32 {
    // SAFETY: the calling thread's own record.
    let t = unsafe { &*sys::win_thread() };
    let id = match t.via_fn {
        0 => 0,
        VIA_HEAP_FREE => heaps::releaser(b"HeapFree", t.via_key),
        VIA_HEAP_REALLOC => heaps::releaser(b"HeapReAlloc", t.via_key),
        f => {
            let func = FUNCS.get((f - VIA_CRT) as usize).map_or("?", |d| d.name);
            crt_function_name(t.via_key, func)
        }
    };
    let detail = match t.via_detail {
        1 => Detail::SharedHeap,
        2 => Detail::DifferentHeap,
        3 => Detail::AlignedMismatch,
        _ => Detail::None,
    };
    names::via(id, detail)
}

// ---- C runtimes ------------------------------------------------------------------------------------------------

/// The hooked functions of a C runtime.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[repr(u8)]
pub enum Func {
    /// malloc
    Malloc = 0,
    /// calloc
    Calloc,
    /// realloc
    Realloc,
    /// free
    Free,
    /// _malloc_base (UCRT)
    MallocBase,
    /// _calloc_base (UCRT)
    CallocBase,
    /// _realloc_base (UCRT)
    ReallocBase,
    /// _free_base (UCRT)
    FreeBase,
    /// _aligned_malloc
    AlignedMalloc,
    /// _aligned_offset_malloc
    AlignedOffsetMalloc,
    /// _aligned_realloc
    AlignedRealloc,
    /// _aligned_free
    AlignedFree,
}

const N_FUNCS: usize = 12;

struct FuncDesc {
    name: &'static str,
    export: &'static core::ffi::CStr,
}

const FUNCS: [FuncDesc; N_FUNCS] = [
    FuncDesc {
        name: "malloc",
        export: c"malloc",
    },
    FuncDesc {
        name: "calloc",
        export: c"calloc",
    },
    FuncDesc {
        name: "realloc",
        export: c"realloc",
    },
    FuncDesc {
        name: "free",
        export: c"free",
    },
    FuncDesc {
        name: "_malloc_base",
        export: c"_malloc_base",
    },
    FuncDesc {
        name: "_calloc_base",
        export: c"_calloc_base",
    },
    FuncDesc {
        name: "_realloc_base",
        export: c"_realloc_base",
    },
    FuncDesc {
        name: "_free_base",
        export: c"_free_base",
    },
    FuncDesc {
        name: "_aligned_malloc",
        export: c"_aligned_malloc",
    },
    FuncDesc {
        name: "_aligned_offset_malloc",
        export: c"_aligned_offset_malloc",
    },
    FuncDesc {
        name: "_aligned_realloc",
        export: c"_aligned_realloc",
    },
    FuncDesc {
        name: "_aligned_free",
        export: c"_aligned_free",
    },
];

/// At most this many C runtime DLLs are traced (a runtime unloaded and loaded again takes a new slot).
pub const MAX_CRTS: usize = 8;

struct Crt {
    /// Hooks installed and the DLL loaded.
    active: AtomicBool,
    lo: AtomicUsize,
    hi: AtomicUsize,
    /// The runtime's heap (0 until known: `_get_heap_handle`, or the heap its first allocation used).
    heap: AtomicUsize,
    get_heap: AtomicUsize,
    fam_malloc: core::sync::atomic::AtomicU8,
    fam_aligned: core::sync::atomic::AtomicU8,
    /// `msvcrt`, `ucrtbase`, ...: a name id.
    name_id: core::sync::atomic::AtomicU16,
    /// Trampolines of the hooked functions (0: not exported).
    orig: [AtomicUsize; N_FUNCS],
}

static CRTS: [Crt; MAX_CRTS] = [const {
    Crt {
        active: AtomicBool::new(false),
        lo: AtomicUsize::new(0),
        hi: AtomicUsize::new(0),
        heap: AtomicUsize::new(0),
        get_heap: AtomicUsize::new(0),
        fam_malloc: core::sync::atomic::AtomicU8::new(0),
        fam_aligned: core::sync::atomic::AtomicU8::new(0),
        name_id: core::sync::atomic::AtomicU16::new(0),
        orig: [const { AtomicUsize::new(0) }; N_FUNCS],
    }
}; MAX_CRTS];
static N_CRTS: AtomicUsize = AtomicUsize::new(0);

fn crt_function_name(c: usize, func: &str) -> u16 {
    let stem = names::name(CRTS[c].name_id.load(Ordering::Relaxed));
    names::intern_parts(&[stem, b"!", func.as_bytes()])
}

/// The name of the runtime whose heap is `heap` (for labels such as `HeapAlloc(msvcrt heap 0x…)`).
pub fn crt_owning_heap(heap: usize) -> Option<&'static [u8]> {
    if heap == 0 || heap == heaps::process_heap() {
        return None;
    }
    (0..N_CRTS.load(Ordering::Acquire))
        .find(|&c| CRTS[c].heap.load(Ordering::Relaxed) == heap)
        .map(|c| names::name(CRTS[c].name_id.load(Ordering::Relaxed)))
}

/// The heap runtime `c` allocates from (0: unknown).
pub fn crt_heap(c: usize) -> usize {
    if c >= MAX_CRTS {
        return 0;
    }
    let crt = &CRTS[c];
    let h = crt.heap.load(Ordering::Relaxed);
    if h != 0 {
        return h;
    }
    let f = crt.get_heap.load(Ordering::Relaxed);
    if f != 0 && crt.active.load(Ordering::Relaxed) {
        // SAFETY: `_get_heap_handle` takes nothing and returns the runtime's heap handle.
        let h = unsafe { core::mem::transmute::<usize, unsafe extern "C" fn() -> usize>(f)() };
        if h != 0 {
            crt.heap.store(h, Ordering::Relaxed);
        }
        return h;
    }
    0
}

/// The runtime whose code contains `pc`.
#[inline]
fn crt_at(pc: u64) -> Option<usize> {
    let pc = pc as usize;
    (0..N_CRTS.load(Ordering::Acquire)).find(|&c| {
        let crt = &CRTS[c];
        crt.active.load(Ordering::Relaxed)
            && pc >= crt.lo.load(Ordering::Relaxed)
            && pc < crt.hi.load(Ordering::Relaxed)
    })
}

/// The runtime whose code made the call recorded in `stack` (its innermost frame).
#[inline]
fn caller_crt(stack: u32) -> Option<usize> {
    if N_CRTS.load(Ordering::Relaxed) == 0 {
        return None;
    }
    let pc = crate::intern::get(stack).and_then(|f| f.first().copied())?;
    crt_at(pc)
}

fn crt_orig(c: usize, f: Func) -> usize {
    let crt = &CRTS[c];
    let o = crt.orig[f as usize].load(Ordering::Relaxed);
    if o != 0 {
        return o;
    }
    // `_free_base` missing: `free` does the same, and so on.
    let alt = match f {
        Func::Free => Func::FreeBase,
        Func::FreeBase => Func::Free,
        Func::Malloc => Func::MallocBase,
        Func::MallocBase => Func::Malloc,
        Func::Realloc => Func::ReallocBase,
        Func::ReallocBase => Func::Realloc,
        Func::Calloc => Func::CallocBase,
        Func::CallocBase => Func::Calloc,
        other => other,
    };
    crt.orig[alt as usize].load(Ordering::Relaxed)
}

/// True for the file names of Microsoft C runtime DLLs.
pub fn is_crt(name: &[u8]) -> bool {
    name == b"ucrtbase.dll"
        || name == b"ucrtbased.dll"
        || (name.starts_with(b"msvcr") && name.ends_with(b".dll"))
}

// ---- judging a release ------------------------------------------------------------------------------------------

/// What to do with a block being released.
enum Action {
    /// Pass the call on as made.
    Pass,
    /// Release through this heap instead (HeapFree / HeapReAlloc on the owner).
    Heap(usize),
    /// Release through runtime `c`'s function instead.
    Crt(usize, Func),
    /// Do not release (the call fails; the block stays live).
    Refuse,
}

/// The full-depth stack of a bad release (the free stack may be shorter).
fn error_stack() -> u32 {
    record::stack_id(
        crate::config::DEPTH
            .load(Ordering::Relaxed)
            .max(crate::config::FREE_DEPTH.load(Ordering::Relaxed)),
    )
}

fn report_cross(t: &mut WinThread, b: &Block, how: FreeFn, detail: Detail) {
    t.via_detail = detail as u32;
    let stack = error_stack();
    errors::report(Error {
        kind: errors::Kind::CrossHeapFree,
        addr: b.addr(),
        size: b.size(),
        family: b.family(),
        freed_with: how,
        detail: errors::Detail::None,
        tid: crate::thread::tid(&mut t.base),
        stack,
        alloc_stack: b.stack(),
        first_free_stack: NO_STACK,
        via: 0,
    });
    t.via_detail = 0;
}

/// Decides how the release of live block `b` through `r` proceeds, reporting a cross-heap free if it is one.
/// `free_stack` is where the release was made (its innermost frame tells whether a runtime's own code made it).
fn judge(t: &mut WinThread, b: &Block, r: Releaser, free_stack: u32) -> Action {
    let (kind, key) = names::family(b.family());
    let realloc = matches!(
        r,
        Releaser::HeapReAlloc(_)
            | Releaser::Crt(_, Func::Realloc | Func::ReallocBase | Func::AlignedRealloc)
    );
    let how = if realloc {
        FreeFn::Realloc
    } else {
        FreeFn::Free
    };
    match kind {
        Kind::None | Kind::HeapDestroyed => Action::Pass,
        Kind::Heap => {
            let a = key;
            match r {
                Releaser::HeapFree(h) | Releaser::HeapReAlloc(h) => {
                    if h == a || a == usize::MAX {
                        Action::Pass
                    } else {
                        report_cross(t, b, how, Detail::DifferentHeap);
                        Action::Heap(a)
                    }
                }
                Releaser::Crt(c, f) => {
                    if caller_crt(free_stack) == Some(c) {
                        return Action::Pass;
                    }
                    let aligned = matches!(f, Func::AlignedFree | Func::AlignedRealloc);
                    if aligned {
                        report_cross(t, b, how, Detail::AlignedMismatch);
                        if realloc {
                            Action::Refuse
                        } else {
                            Action::Heap(a)
                        }
                    } else if crt_heap(c) == a {
                        report_cross(t, b, how, Detail::SharedHeap);
                        Action::Pass
                    } else {
                        report_cross(t, b, how, Detail::DifferentHeap);
                        Action::Heap(a)
                    }
                }
            }
        }
        Kind::CrtMalloc => {
            let x = key;
            match r {
                Releaser::HeapFree(h) | Releaser::HeapReAlloc(h) => {
                    if caller_crt(free_stack) == Some(x) {
                        return Action::Pass;
                    }
                    let hx = crt_heap(x);
                    if hx == h {
                        report_cross(t, b, how, Detail::SharedHeap);
                        Action::Pass
                    } else {
                        report_cross(t, b, how, Detail::DifferentHeap);
                        if realloc {
                            if hx != 0 {
                                Action::Heap(hx)
                            } else {
                                Action::Crt(x, Func::Realloc)
                            }
                        } else {
                            Action::Crt(x, Func::Free)
                        }
                    }
                }
                Releaser::Crt(c, f) => {
                    let aligned = matches!(f, Func::AlignedFree | Func::AlignedRealloc);
                    if aligned {
                        report_cross(t, b, how, Detail::AlignedMismatch);
                        return if realloc {
                            Action::Refuse
                        } else {
                            Action::Crt(x, Func::Free)
                        };
                    }
                    if c == x {
                        return Action::Pass;
                    }
                    let (hx, hc) = (crt_heap(x), crt_heap(c));
                    if hx != 0 && hx == hc {
                        report_cross(t, b, how, Detail::SharedHeap);
                        Action::Pass
                    } else {
                        report_cross(t, b, how, Detail::DifferentHeap);
                        Action::Crt(x, if realloc { Func::Realloc } else { Func::Free })
                    }
                }
            }
        }
        Kind::CrtAligned => {
            let x = key;
            match r {
                Releaser::Crt(c, Func::AlignedFree | Func::AlignedRealloc) => {
                    if c == x {
                        return Action::Pass;
                    }
                    // Runtimes lay out the header before an aligned block differently: never compatible.
                    let shared = crt_heap(x) != 0 && crt_heap(x) == crt_heap(c);
                    report_cross(
                        t,
                        b,
                        how,
                        if shared {
                            Detail::AlignedMismatch
                        } else {
                            Detail::DifferentHeap
                        },
                    );
                    Action::Crt(
                        x,
                        if realloc {
                            Func::AlignedRealloc
                        } else {
                            Func::AlignedFree
                        },
                    )
                }
                _ => {
                    if caller_crt(free_stack) == Some(x) {
                        return Action::Pass;
                    }
                    report_cross(t, b, how, Detail::AlignedMismatch);
                    if realloc {
                        Action::Refuse
                    } else {
                        Action::Crt(x, Func::AlignedFree)
                    }
                }
            }
        }
    }
}

/// The family of a block the program got from `heap` through ntdll, made by code at `stack`: a runtime's own
/// direct heap calls (an unhooked entry point such as `_expand`) belong to that runtime's malloc family.
#[inline]
fn heap_alloc_family(t: &mut WinThread, heap: usize, stack: u32) -> u8 {
    if let Some(c) = caller_crt(stack) {
        let hc = crt_heap(c);
        if hc == 0 || hc == heap {
            return CRTS[c].fam_malloc.load(Ordering::Relaxed);
        }
    }
    if t.last_heap == heap && t.last_family != 0 {
        return t.last_family as u8;
    }
    let f = heaps::family_of(heap);
    t.last_heap = heap;
    t.last_family = f as u32;
    f
}

/// Releases `p` through action `a` (Heap or Crt), as a free. Called with the thread busy.
unsafe fn release_via(a: &Action, flags: u32, p: *mut c_void) {
    match *a {
        Action::Heap(h) => {
            // SAFETY: the block belongs to heap `h`.
            unsafe { orig!(ORIG_FREE, FreeHeapFn)(h, flags, p) };
        }
        Action::Crt(x, f) => {
            let o = crt_orig(x, f);
            if o != 0 {
                // SAFETY: runtime x's free/_aligned_free for one of its blocks.
                unsafe { core::mem::transmute::<usize, unsafe extern "C" fn(*mut c_void)>(o)(p) };
            }
        }
        _ => {}
    }
}

// ---- ntdll hooks ----------------------------------------------------------------------------------------------

unsafe extern "system" fn hook_alloc(heap: usize, flags: u32, size: usize) -> *mut c_void {
    let orig = orig!(ORIG_ALLOC, AllocFn);
    match mode() {
        // SAFETY (all arms): forwarding the caller's arguments.
        Mode::Off => unsafe { orig(heap, flags, size) },
        Mode::Internal(t) => {
            t.nested_heap = heap;
            let p = unsafe { orig(heap, flags, size) };
            let e = sys::errno();
            internal_alloc(p, size);
            sys::set_errno(e);
            p
        }
        Mode::Traced(t) => {
            t.base.busy = crate::thread::BUSY_HOOK;
            // SAFETY: forwarding the caller's arguments to the original (detoured) function.
            let p = unsafe { orig(heap, flags, size) };
            if !p.is_null() {
                let e = sys::errno();
                if record::wants_entry(&mut t.base, size as u64) {
                    let stack = record::stack_id(record::alloc_depth());
                    let fam = heap_alloc_family(t, heap, stack);
                    guarded((), || {
                        record::on_alloc(&mut t.base, p as u64, size as u64, fam, stack)
                    });
                }
                sys::set_errno(e);
            }
            t.base.busy = 0;
            p
        }
    }
}

unsafe extern "system" fn hook_free(heap: usize, flags: u32, p: *mut c_void) -> u32 {
    let orig = orig!(ORIG_FREE, FreeHeapFn);
    if p.is_null() {
        // SAFETY: forwarding.
        return unsafe { orig(heap, flags, p) } as u32;
    }
    match mode() {
        // SAFETY (all arms): forwarding the caller's arguments, or the block to its owner.
        Mode::Off => (unsafe { orig(heap, flags, p) } != 0) as u32,
        Mode::Internal(t) => {
            t.nested_heap = heap;
            forget(p);
            (unsafe { orig(heap, flags, p) } != 0) as u32
        }
        Mode::Traced(t) => {
            t.base.busy = crate::thread::BUSY_HOOK;
            let e = sys::errno();
            if !judged(p) {
                sys::set_errno(e);
                // SAFETY: forwarding the caller's arguments to the original (detoured) function.
                let r = unsafe { orig(heap, flags, p) };
                t.base.busy = 0;
                return (r != 0) as u32;
            }
            set_via(t, Releaser::HeapFree(heap));
            let stack = record::stack_id(record::free_depth());
            let settled = guarded(Settle::Unknown, || {
                record::on_free(&mut t.base, p as u64, FreeFn::Free, stack)
            });
            let r = match settled {
                Settle::Rejected => {
                    // What the heap itself says when it notices: FALSE, ERROR_INVALID_PARAMETER.
                    sys::set_errno(87);
                    0
                }
                Settle::Unknown => {
                    sys::set_errno(e);
                    // SAFETY: forwarding the caller's arguments to the original (detoured) function.
                    (unsafe { orig(heap, flags, p) } != 0) as u32
                }
                Settle::Live(b) => {
                    let a = judge(t, &b, Releaser::HeapFree(heap), stack);
                    sys::set_errno(e);
                    match a {
                        // SAFETY: forwarding the caller's arguments to the original (detoured) function.
                        Action::Pass => (unsafe { orig(heap, flags, p) } != 0) as u32,
                        _ => {
                            // SAFETY: releasing the block through its own heap or runtime.
                            unsafe { release_via(&a, flags, p) };
                            sys::set_errno(e);
                            1
                        }
                    }
                }
            };
            t.via_fn = 0;
            t.base.busy = 0;
            r
        }
    }
}

unsafe extern "system" fn hook_realloc(
    heap: usize,
    flags: u32,
    p: *mut c_void,
    size: usize,
) -> *mut c_void {
    let orig = orig!(ORIG_REALLOC, ReAllocFn);
    match mode() {
        // SAFETY (all arms): forwarding the caller's arguments, or the block to its owner.
        Mode::Off => unsafe { orig(heap, flags, p, size) },
        Mode::Internal(t) => {
            t.nested_heap = heap;
            if !p.is_null() {
                forget(p);
            }
            // SAFETY: forwarding the caller's arguments to the original (detoured) function.
            let q = unsafe { orig(heap, flags, p, size) };
            let e = sys::errno();
            internal_alloc(q, size);
            sys::set_errno(e);
            q
        }
        Mode::Traced(t) => {
            t.base.busy = crate::thread::BUSY_HOOK;
            let e = sys::errno();
            if p.is_null() || !judged(p) {
                sys::set_errno(e);
                // SAFETY: forwarding the caller's arguments to the original (detoured) function.
                let q = unsafe { orig(heap, flags, p, size) };
                if !q.is_null() {
                    let e2 = sys::errno();
                    if record::wants_entry(&mut t.base, size as u64) {
                        let stack = record::stack_id(record::alloc_depth());
                        let fam = heap_alloc_family(t, heap, stack);
                        guarded((), || {
                            record::on_alloc(&mut t.base, q as u64, size as u64, fam, stack)
                        });
                    }
                    sys::set_errno(e2);
                }
                t.base.busy = 0;
                return q;
            }
            set_via(t, Releaser::HeapReAlloc(heap));
            let free_stack = record::stack_id(record::free_depth());
            let settled = guarded(Settle::Unknown, || {
                record::on_free(&mut t.base, p as u64, FreeFn::Realloc, free_stack)
            });
            let (q, fam, old) = match settled {
                Settle::Rejected => {
                    t.via_fn = 0;
                    t.base.busy = 0;
                    sys::set_errno(87);
                    return core::ptr::null_mut();
                }
                Settle::Unknown => {
                    sys::set_errno(e);
                    // SAFETY: forwarding the caller's arguments to the original (detoured) function.
                    (unsafe { orig(heap, flags, p, size) }, None, None)
                }
                Settle::Live(b) => {
                    let a = judge(t, &b, Releaser::HeapReAlloc(heap), free_stack);
                    sys::set_errno(e);
                    match a {
                        // SAFETY: forwarding the caller's arguments to the original (detoured) function.
                        Action::Pass => (unsafe { orig(heap, flags, p, size) }, None, Some(b)),
                        // The block stays with its owner (a heap, or a runtime's heap): so does its family.
                        Action::Heap(h) => (
                            // SAFETY: forwarding the caller's arguments to the original (detoured) function.
                            unsafe { orig(h, flags, p, size) },
                            Some(b.family()),
                            Some(b),
                        ),
                        Action::Crt(x, f) => {
                            let o = crt_orig(x, f);
                            let q = if o == 0 {
                                core::ptr::null_mut()
                            } else {
                                // SAFETY: runtime x's realloc for one of its blocks.
                                unsafe {
                                    core::mem::transmute::<
                                        usize,
                                        unsafe extern "C" fn(*mut c_void, usize) -> *mut c_void,
                                    >(o)(p, size)
                                }
                            };
                            (q, Some(b.family()), Some(b))
                        }
                        Action::Refuse => (core::ptr::null_mut(), None, Some(b)),
                    }
                }
            };
            let e2 = sys::errno();
            if !q.is_null() {
                let stack = record::stack_id(record::alloc_depth());
                let fam = fam.unwrap_or_else(|| heap_alloc_family(t, heap, stack));
                guarded((), || {
                    record::on_alloc(&mut t.base, q as u64, size as u64, fam, stack)
                });
            } else if let Some(b) = old {
                guarded((), || record::undo_free(b));
            }
            sys::set_errno(e2);
            t.via_fn = 0;
            t.base.busy = 0;
            q
        }
    }
}

unsafe extern "system" fn hook_size(heap: usize, flags: u32, p: *const c_void) -> usize {
    let orig = orig!(ORIG_SIZE, SizeFn);
    if let Mode::Traced(_) = mode() {
        if !p.is_null() {
            // A live block of another heap: ask its own heap (HeapSize on the wrong heap is undefined).
            let owner = table::shard_of(p as u64)
                .lock()
                .get(p as u64)
                .map(|b| names::family(b.family()));
            if let Some((Kind::Heap, a)) = owner {
                if a != heap && a != usize::MAX {
                    // SAFETY: the block belongs to heap `a`.
                    return unsafe { orig(a, flags, p) };
                }
            }
        }
    }
    // SAFETY: forwarding.
    unsafe { orig(heap, flags, p) }
}

unsafe extern "system" fn hook_destroy(heap: usize) -> usize {
    let orig = orig!(ORIG_DESTROY, DestroyFn);
    match mode() {
        Mode::Traced(t) => {
            t.base.busy = crate::thread::BUSY_HOOK;
            let e = sys::errno();
            let blocks = guarded(alloc::vec::Vec::new(), || heaps::take_blocks_of(heap));
            sys::set_errno(e);
            // SAFETY: forwarding.
            let r = unsafe { orig(heap) };
            let e2 = sys::errno();
            if r == 0 {
                guarded((), || heaps::retire(heap, blocks));
            } else {
                guarded((), || heaps::put_back(blocks));
            }
            sys::set_errno(e2);
            t.base.busy = 0;
            r
        }
        // SAFETY: forwarding.
        _ => unsafe { orig(heap) },
    }
}

unsafe extern "system" fn hook_exit(status: u32) {
    super::lifecycle::final_dump(crate::dump::Reason::Exit);
    // SAFETY: forwarding; does not return.
    unsafe { orig!(ORIG_EXIT, ExitFn)(status) }
}

unsafe extern "system" fn hook_terminate(process: HANDLE, status: i32) -> i32 {
    // NtTerminateProcess(NULL, ..) ends the other threads only; -1 (or a handle to this process) ends it.
    let own = process as isize == -1
        || (!process.is_null()
            // SAFETY: plain query on a handle the caller passed.
            && unsafe { windows_sys::Win32::System::Threading::GetProcessId(process) } == sys::getpid());
    if own {
        super::lifecycle::final_dump(crate::dump::Reason::UnderscoreExit);
    }
    // SAFETY: forwarding.
    unsafe { orig!(ORIG_TERMINATE, TerminateFn)(process, status) }
}

#[allow(clippy::too_many_arguments)]
unsafe extern "system" fn hook_create_process(
    token: HANDLE,
    app: *const u16,
    cmd: *mut u16,
    pattr: *const c_void,
    tattr: *const c_void,
    inherit: i32,
    flags: u32,
    env: *const c_void,
    cwd: *const u16,
    si: *const c_void,
    pi: *mut ProcessInformation,
    new_token: *mut HANDLE,
) -> i32 {
    const CREATE_SUSPENDED: u32 = 4;
    let orig = orig!(ORIG_CREATE_PROCESS, CreateProcessFn);
    let Mode::Traced(t) = mode() else {
        // SAFETY: forwarding.
        return unsafe {
            orig(
                token, app, cmd, pattr, tattr, inherit, flags, env, cwd, si, pi, new_token,
            )
        };
    };
    t.base.busy = crate::thread::BUSY_HOOK;
    // SAFETY: forwarding, with the child held at its start until the tracer is in it.
    let r = unsafe {
        orig(
            token,
            app,
            cmd,
            pattr,
            tattr,
            inherit,
            flags | CREATE_SUSPENDED,
            env,
            cwd,
            si,
            pi,
            new_token,
        )
    };
    let e = sys::errno();
    if r != 0 && !pi.is_null() {
        // SAFETY: the call succeeded, so `pi` was filled.
        let info = unsafe { &*pi };
        guarded((), || super::inject::into_child(info.process));
        if flags & CREATE_SUSPENDED == 0 {
            // SAFETY: the child's main thread, suspended above.
            unsafe { windows_sys::Win32::System::Threading::ResumeThread(info.thread) };
        }
    }
    sys::set_errno(e);
    t.base.busy = 0;
    r
}

// ---- C runtime hooks ------------------------------------------------------------------------------------------

#[inline(always)]
fn crt_fn<T: Copy>(c: usize, f: Func) -> T {
    let o = crt_orig(c, f);
    // SAFETY: T is the function pointer type of `f`; the hook is installed only where the export exists.
    unsafe { core::mem::transmute_copy::<usize, T>(&o) }
}

/// Records a runtime allocation made by the traced call that just returned `p`.
#[inline(always)]
fn crt_record(t: &mut WinThread, c: usize, p: *mut c_void, size: usize, aligned: bool) {
    if p.is_null() {
        return;
    }
    let e = sys::errno();
    let crt = &CRTS[c];
    if crt.heap.load(Ordering::Relaxed) == 0 && t.nested_heap != 0 {
        crt.heap.store(t.nested_heap, Ordering::Relaxed);
    }
    if record::wants_entry(&mut t.base, size as u64) {
        let stack = record::stack_id(record::alloc_depth());
        let fam = if aligned {
            crt.fam_aligned.load(Ordering::Relaxed)
        } else {
            crt.fam_malloc.load(Ordering::Relaxed)
        };
        guarded((), || {
            record::on_alloc(&mut t.base, p as u64, size as u64, fam, stack)
        });
    }
    sys::set_errno(e);
}

fn crt_malloc_impl(c: usize, f: Func, size: usize, align: usize, offset: usize) -> *mut c_void {
    let aligned = matches!(f, Func::AlignedMalloc | Func::AlignedOffsetMalloc);
    let call = || -> *mut c_void {
        // SAFETY: forwarding to the runtime's own function with the caller's arguments.
        unsafe {
            match f {
                Func::AlignedMalloc => {
                    crt_fn::<unsafe extern "C" fn(usize, usize) -> *mut c_void>(c, f)(size, align)
                }
                Func::AlignedOffsetMalloc => crt_fn::<
                    unsafe extern "C" fn(usize, usize, usize) -> *mut c_void,
                >(c, f)(size, align, offset),
                _ => crt_fn::<unsafe extern "C" fn(usize) -> *mut c_void>(c, f)(size),
            }
        }
    };
    match mode() {
        Mode::Off | Mode::Internal(_) => call(),
        Mode::Traced(t) => {
            t.base.busy = crate::thread::BUSY_HOOK;
            t.nested_heap = 0;
            let p = call();
            crt_record(t, c, p, size, aligned);
            t.base.busy = 0;
            p
        }
    }
}

fn crt_calloc_impl(c: usize, f: Func, n: usize, m: usize) -> *mut c_void {
    let call = || {
        // SAFETY: forwarding.
        unsafe { crt_fn::<unsafe extern "C" fn(usize, usize) -> *mut c_void>(c, f)(n, m) }
    };
    match mode() {
        Mode::Off | Mode::Internal(_) => call(),
        Mode::Traced(t) => {
            t.base.busy = crate::thread::BUSY_HOOK;
            t.nested_heap = 0;
            let p = call();
            crt_record(t, c, p, n.wrapping_mul(m), false);
            t.base.busy = 0;
            p
        }
    }
}

fn crt_free_impl(c: usize, f: Func, p: *mut c_void) {
    let call = |p: *mut c_void| {
        // SAFETY: forwarding.
        unsafe { crt_fn::<unsafe extern "C" fn(*mut c_void)>(c, f)(p) }
    };
    if p.is_null() {
        return call(p);
    }
    match mode() {
        Mode::Off | Mode::Internal(_) => call(p),
        Mode::Traced(t) => {
            t.base.busy = crate::thread::BUSY_HOOK;
            let e = sys::errno();
            if !judged(p) {
                call(p);
                t.base.busy = 0;
                return;
            }
            set_via(t, Releaser::Crt(c, f));
            let stack = record::stack_id(record::free_depth());
            let settled = guarded(Settle::Unknown, || {
                record::on_free(&mut t.base, p as u64, FreeFn::Free, stack)
            });
            match settled {
                Settle::Rejected => {}
                Settle::Unknown => {
                    sys::set_errno(e);
                    call(p);
                }
                Settle::Live(b) => {
                    let a = judge(t, &b, Releaser::Crt(c, f), stack);
                    sys::set_errno(e);
                    match a {
                        Action::Pass => call(p),
                        // SAFETY: the block goes to its own heap or runtime.
                        _ => unsafe { release_via(&a, 0, p) },
                    }
                }
            }
            sys::set_errno(e);
            t.via_fn = 0;
            t.base.busy = 0;
        }
    }
}

fn crt_realloc_impl(c: usize, f: Func, p: *mut c_void, size: usize, align: usize) -> *mut c_void {
    let aligned = f == Func::AlignedRealloc;
    let call = |x: usize, f: Func, p: *mut c_void| -> *mut c_void {
        // SAFETY: forwarding to a runtime's realloc/_aligned_realloc.
        unsafe {
            if f == Func::AlignedRealloc {
                crt_fn::<unsafe extern "C" fn(*mut c_void, usize, usize) -> *mut c_void>(x, f)(
                    p, size, align,
                )
            } else {
                crt_fn::<unsafe extern "C" fn(*mut c_void, usize) -> *mut c_void>(x, f)(p, size)
            }
        }
    };
    match mode() {
        Mode::Off | Mode::Internal(_) => call(c, f, p),
        Mode::Traced(t) => {
            t.base.busy = crate::thread::BUSY_HOOK;
            let e = sys::errno();
            if p.is_null() || !judged(p) {
                t.nested_heap = 0;
                let q = call(c, f, p);
                crt_record(t, c, q, size, aligned);
                t.base.busy = 0;
                return q;
            }
            set_via(t, Releaser::Crt(c, f));
            let free_stack = record::stack_id(record::free_depth());
            let settled = guarded(Settle::Unknown, || {
                record::on_free(&mut t.base, p as u64, FreeFn::Realloc, free_stack)
            });
            let own_fam = if aligned {
                CRTS[c].fam_aligned.load(Ordering::Relaxed)
            } else {
                CRTS[c].fam_malloc.load(Ordering::Relaxed)
            };
            let (q, fam, old) = match settled {
                Settle::Rejected => {
                    t.via_fn = 0;
                    t.base.busy = 0;
                    sys::set_errno(e);
                    return core::ptr::null_mut();
                }
                Settle::Unknown => {
                    sys::set_errno(e);
                    (call(c, f, p), own_fam, None)
                }
                Settle::Live(b) => {
                    let a = judge(t, &b, Releaser::Crt(c, f), free_stack);
                    sys::set_errno(e);
                    match a {
                        Action::Pass => (call(c, f, p), own_fam, Some(b)),
                        Action::Crt(x, g) => (call(x, g, p), b.family(), Some(b)),
                        Action::Heap(h) => {
                            if size == 0 {
                                // SAFETY: the block belongs to heap h; realloc(p, 0) frees.
                                unsafe { orig!(ORIG_FREE, FreeHeapFn)(h, 0, p) };
                                (core::ptr::null_mut(), b.family(), None)
                            } else {
                                // SAFETY: as above.
                                let q = unsafe { orig!(ORIG_REALLOC, ReAllocFn)(h, 0, p, size) };
                                (q, b.family(), Some(b))
                            }
                        }
                        Action::Refuse => (core::ptr::null_mut(), b.family(), Some(b)),
                    }
                }
            };
            let e2 = sys::errno();
            if !q.is_null() {
                if record::wants_entry(&mut t.base, size as u64) {
                    let stack = record::stack_id(record::alloc_depth());
                    guarded((), || {
                        record::on_alloc(&mut t.base, q as u64, size as u64, fam, stack)
                    });
                }
            } else if let Some(b) = old {
                // realloc(p, 0) frees p and returns NULL; any other NULL leaves p live.
                if size != 0 {
                    guarded((), || record::undo_free(b));
                }
            }
            sys::set_errno(e2);
            t.via_fn = 0;
            t.base.busy = 0;
            q
        }
    }
}

extern "C" fn h_malloc<const C: usize>(size: usize) -> *mut c_void {
    crt_malloc_impl(C, Func::Malloc, size, 0, 0)
}
extern "C" fn h_malloc_base<const C: usize>(size: usize) -> *mut c_void {
    crt_malloc_impl(C, Func::MallocBase, size, 0, 0)
}
extern "C" fn h_calloc<const C: usize>(n: usize, m: usize) -> *mut c_void {
    crt_calloc_impl(C, Func::Calloc, n, m)
}
extern "C" fn h_calloc_base<const C: usize>(n: usize, m: usize) -> *mut c_void {
    crt_calloc_impl(C, Func::CallocBase, n, m)
}
extern "C" fn h_realloc<const C: usize>(p: *mut c_void, size: usize) -> *mut c_void {
    crt_realloc_impl(C, Func::Realloc, p, size, 0)
}
extern "C" fn h_realloc_base<const C: usize>(p: *mut c_void, size: usize) -> *mut c_void {
    crt_realloc_impl(C, Func::ReallocBase, p, size, 0)
}
extern "C" fn h_free<const C: usize>(p: *mut c_void) {
    crt_free_impl(C, Func::Free, p)
}
extern "C" fn h_free_base<const C: usize>(p: *mut c_void) {
    crt_free_impl(C, Func::FreeBase, p)
}
extern "C" fn h_aligned_malloc<const C: usize>(size: usize, align: usize) -> *mut c_void {
    crt_malloc_impl(C, Func::AlignedMalloc, size, align, 0)
}
extern "C" fn h_aligned_offset_malloc<const C: usize>(
    size: usize,
    align: usize,
    offset: usize,
) -> *mut c_void {
    crt_malloc_impl(C, Func::AlignedOffsetMalloc, size, align, offset)
}
extern "C" fn h_aligned_realloc<const C: usize>(
    p: *mut c_void,
    size: usize,
    align: usize,
) -> *mut c_void {
    crt_realloc_impl(C, Func::AlignedRealloc, p, size, align)
}
extern "C" fn h_aligned_free<const C: usize>(p: *mut c_void) {
    crt_free_impl(C, Func::AlignedFree, p)
}

macro_rules! crt_hooks {
    ($c:literal) => {
        [
            h_malloc::<$c> as *const () as usize,
            h_calloc::<$c> as *const () as usize,
            h_realloc::<$c> as *const () as usize,
            h_free::<$c> as *const () as usize,
            h_malloc_base::<$c> as *const () as usize,
            h_calloc_base::<$c> as *const () as usize,
            h_realloc_base::<$c> as *const () as usize,
            h_free_base::<$c> as *const () as usize,
            h_aligned_malloc::<$c> as *const () as usize,
            h_aligned_offset_malloc::<$c> as *const () as usize,
            h_aligned_realloc::<$c> as *const () as usize,
            h_aligned_free::<$c> as *const () as usize,
        ]
    };
}

fn crt_hook_table(c: usize) -> [usize; N_FUNCS] {
    match c {
        0 => crt_hooks!(0),
        1 => crt_hooks!(1),
        2 => crt_hooks!(2),
        3 => crt_hooks!(3),
        4 => crt_hooks!(4),
        5 => crt_hooks!(5),
        6 => crt_hooks!(6),
        _ => crt_hooks!(7),
    }
}

// ---- installation ------------------------------------------------------------------------------------------

/// Creates a detour of `target` to `hook`; returns its trampoline.
fn detour(target: usize, hook: usize, out: &mut alloc::vec::Vec<RawDetour>) -> Option<usize> {
    // SAFETY: `hook` has the signature and calling convention of `target` (by construction of the callers).
    match unsafe { RawDetour::new(target as *const (), hook as *const ()) } {
        Ok(d) => {
            let t = d.trampoline() as usize;
            out.push(d);
            Some(t)
        }
        Err(e) => {
            let mut msg = [0u8; 64];
            let mut w = Cursor {
                buf: &mut msg,
                len: 0,
            };
            let _ = core::fmt::write(&mut w, format_args!("{e:?}"));
            let len = w.len;
            sys::eprint(&[b"heapledger: cannot hook a function: ", &msg[..len]]);
            None
        }
    }
}

struct Cursor<'a> {
    buf: &'a mut [u8],
    len: usize,
}

impl core::fmt::Write for Cursor<'_> {
    fn write_str(&mut self, s: &str) -> core::fmt::Result {
        let end = (self.len + s.len()).min(self.buf.len());
        let n = end - self.len;
        self.buf[self.len..end].copy_from_slice(&s.as_bytes()[..n]);
        self.len = end;
        Ok(())
    }
}

/// Enables detours `from..` of the kept list, other threads suspended when `suspend` (falls back to not
/// suspending if that fails).
fn enable(list: &[RawDetour], suspend: bool) -> bool {
    let mut tx = detour::Transaction::new();
    for d in list {
        tx.enable(d);
    }
    let threads = if suspend {
        detour::Threads::All
    } else {
        detour::Threads::None
    };
    // SAFETY: at start-up the program's threads are suspended (injection) or the hooks' prologs are being
    // patched with the other threads suspended; a new runtime's code cannot run before its load completes.
    if unsafe { tx.commit(threads) }.is_ok() {
        return true;
    }
    if !suspend {
        return false;
    }
    let mut tx = detour::Transaction::new();
    for d in list {
        tx.enable(d);
    }
    // SAFETY: as above (the fallback when threads cannot be suspended).
    unsafe { tx.commit(detour::Threads::None) }.is_ok()
}

/// Prepares the hooks of runtime DLL `h` (named `name`, e.g. `msvcrt.dll`) into `out`. Returns false if no
/// slot is left or nothing could be hooked.
fn prepare_crt(h: HMODULE, name: &[u8], out: &mut alloc::vec::Vec<RawDetour>) -> bool {
    let Some((lo, hi)) = super::modules::image_range(h) else {
        return false;
    };
    // Already traced (the same DLL seen twice)?
    if (0..N_CRTS.load(Ordering::Acquire))
        .any(|c| CRTS[c].active.load(Ordering::Relaxed) && CRTS[c].lo.load(Ordering::Relaxed) == lo)
    {
        return false;
    }
    let c = N_CRTS.load(Ordering::Acquire);
    if c >= MAX_CRTS {
        sys::eprint(&[
            b"heapledger: too many C runtimes loaded; not tracing ",
            name,
        ]);
        return false;
    }
    let crt = &CRTS[c];
    let stem = name.strip_suffix(b".dll").unwrap_or(name);
    let stem = &stem[..stem.len().min(32)];
    crt.name_id.store(names::intern(stem), Ordering::Relaxed);
    crt.lo.store(lo, Ordering::Relaxed);
    crt.hi.store(hi, Ordering::Relaxed);
    if let Some(f) = super::modules::export(h, c"_get_heap_handle") {
        crt.get_heap.store(f as usize, Ordering::Relaxed);
    }
    let hooks = crt_hook_table(c);
    let mut seen: [usize; N_FUNCS] = [0; N_FUNCS];
    let mut any = false;
    for (i, desc) in FUNCS.iter().enumerate() {
        let Some(target) = super::modules::export(h, desc.export) else {
            continue;
        };
        let target = target as usize;
        // Two exports of one function (`free` and `_free_base`): hooked once, both names share the trampoline.
        if let Some(j) = seen.iter().position(|&s| s == target) {
            crt.orig[i].store(crt.orig[j].load(Ordering::Relaxed), Ordering::Relaxed);
            continue;
        }
        seen[i] = target;
        if let Some(tramp) = detour(target, hooks[i], out) {
            crt.orig[i].store(tramp, Ordering::Relaxed);
            any = true;
        }
    }
    let fam_m = names::family_for(Kind::CrtMalloc, c, || {
        names::intern_parts(&[stem, b"!malloc"])
    });
    let fam_a = names::family_for(Kind::CrtAligned, c, || {
        names::intern_parts(&[stem, b"!_aligned_malloc"])
    });
    crt.fam_malloc.store(fam_m, Ordering::Relaxed);
    crt.fam_aligned.store(fam_a, Ordering::Relaxed);
    N_CRTS.store(c + 1, Ordering::Release);
    any
}

/// Marks the runtime loaded at `base` as gone (its code is unmapped; its hooks can no longer run).
pub fn crt_unloaded(base: usize) {
    for c in 0..N_CRTS.load(Ordering::Acquire) {
        if CRTS[c].lo.load(Ordering::Relaxed) == base {
            CRTS[c].active.store(false, Ordering::Release);
        }
    }
}

/// Hooks a runtime DLL that has just been mapped (from the DLL-load notification, before its entry point runs).
pub fn hook_new_module(h: HMODULE, name: &[u8]) {
    if !is_crt(name) {
        return;
    }
    let mut list = alloc::vec::Vec::new();
    let before = N_CRTS.load(Ordering::Acquire);
    if !prepare_crt(h, name, &mut list) {
        return;
    }
    // The DLL's code cannot be running yet: no need to suspend threads (which could deadlock here).
    let ok = enable(&list, false);
    if ok {
        for c in before..N_CRTS.load(Ordering::Acquire) {
            CRTS[c].active.store(true, Ordering::Release);
        }
    }
    DETOURS.lock().extend(list);
}

/// Installs every hook: ntdll's heap functions, process exit and creation, and every C runtime loaded now.
/// Returns false if the heap hooks could not be installed.
pub fn install() -> bool {
    let mut list = alloc::vec::Vec::new();
    let nt = |name: &core::ffi::CStr| sys::proc_address(c"ntdll.dll", name);
    let required: [(&core::ffi::CStr, usize, &AtomicUsize); 4] = [
        (
            c"RtlAllocateHeap",
            hook_alloc as *const () as usize,
            &ORIG_ALLOC,
        ),
        (c"RtlFreeHeap", hook_free as *const () as usize, &ORIG_FREE),
        (
            c"RtlReAllocateHeap",
            hook_realloc as *const () as usize,
            &ORIG_REALLOC,
        ),
        (c"RtlSizeHeap", hook_size as *const () as usize, &ORIG_SIZE),
    ];
    for (name, hook, slot) in required {
        let Some(target) = nt(name) else {
            sys::eprint(&[b"heapledger: ntdll has no ", name.to_bytes()]);
            return false;
        };
        match detour(target, hook, &mut list) {
            Some(t) => slot.store(t, Ordering::Relaxed),
            None => return false,
        }
    }
    let optional: [(Option<usize>, usize, &AtomicUsize); 4] = [
        (
            nt(c"RtlDestroyHeap"),
            hook_destroy as *const () as usize,
            &ORIG_DESTROY,
        ),
        (
            nt(c"RtlExitUserProcess"),
            hook_exit as *const () as usize,
            &ORIG_EXIT,
        ),
        (
            nt(c"NtTerminateProcess"),
            hook_terminate as *const () as usize,
            &ORIG_TERMINATE,
        ),
        (
            sys::proc_address(c"kernelbase.dll", c"CreateProcessInternalW"),
            hook_create_process as *const () as usize,
            &ORIG_CREATE_PROCESS,
        ),
    ];
    for (target, hook, slot) in optional {
        if let Some(target) = target {
            if let Some(t) = detour(target, hook, &mut list) {
                slot.store(t, Ordering::Relaxed);
            }
        }
    }
    let mut hs = alloc::vec::Vec::new();
    super::modules::handles(&mut hs);
    let before = N_CRTS.load(Ordering::Acquire);
    for h in hs {
        let mut name = [0u8; 64];
        let n = super::modules::base_name(h, &mut name);
        if is_crt(&name[..n]) {
            prepare_crt(h, &name[..n], &mut list);
        }
    }
    if !enable(&list, true) {
        sys::eprint(&[b"heapledger: cannot enable the hooks"]);
        return false;
    }
    for c in before..N_CRTS.load(Ordering::Acquire) {
        CRTS[c].active.store(true, Ordering::Release);
    }
    DETOURS.lock().extend(list);
    true
}
