//! The next implementation of each interposed function, and the bootstrap arena that serves allocations made
//! before it is known.
//!
//! Resolution uses `dlsym(RTLD_NEXT, …)`, so a program linked against jemalloc or tcmalloc keeps its own
//! allocator (glibc's `__libc_malloc` would bypass it and hand its blocks to the wrong `free`). `dlsym` itself
//! allocates (its error buffer); while resolution runs, every allocation is served from a static bump arena, and
//! a pointer into the arena is never passed to a real `free`/`realloc`.

use core::ffi::{c_int, c_void};
use core::sync::atomic::{AtomicPtr, AtomicU8, AtomicUsize, Ordering};

type MallocFn = unsafe extern "C" fn(usize) -> *mut c_void;
type FreeFn = unsafe extern "C" fn(*mut c_void);
type CallocFn = unsafe extern "C" fn(usize, usize) -> *mut c_void;
type ReallocFn = unsafe extern "C" fn(*mut c_void, usize) -> *mut c_void;
type ReallocArrayFn = unsafe extern "C" fn(*mut c_void, usize, usize) -> *mut c_void;
type PosixMemalignFn = unsafe extern "C" fn(*mut *mut c_void, usize, usize) -> c_int;
type AlignFn = unsafe extern "C" fn(usize, usize) -> *mut c_void;
type UsableFn = unsafe extern "C" fn(*mut c_void) -> usize;
type DlcloseFn = unsafe extern "C" fn(*mut c_void) -> c_int;
type ExitFn = unsafe extern "C" fn(c_int) -> !;
/// An exec argument or environment vector.
pub type Argv = *const *const core::ffi::c_char;
/// A NUL-terminated path.
pub type Path = *const core::ffi::c_char;
/// `execve`, `execvpe`.
pub type ExecEnvFn = unsafe extern "C" fn(Path, Argv, Argv) -> c_int;
/// `execv`, `execvp`.
pub type ExecFn = unsafe extern "C" fn(Path, Argv) -> c_int;
/// `fexecve`.
pub type FexecFn = unsafe extern "C" fn(c_int, Argv, Argv) -> c_int;
/// `operator new(size)` and its nothrow/aligned cousins, called only when our own allocation failed, so the
/// C++ runtime runs the new-handler loop and throws `std::bad_alloc` through us.
type NewFn = unsafe extern "C-unwind" fn(usize) -> *mut c_void;
type NewAlignFn = unsafe extern "C-unwind" fn(usize, usize) -> *mut c_void;
type NewNothrowFn = unsafe extern "C-unwind" fn(usize, *const c_void) -> *mut c_void;
type NewAlignNothrowFn = unsafe extern "C-unwind" fn(usize, usize, *const c_void) -> *mut c_void;
/// glibc >= 2.35: lock-free lookup of the object containing an address (what libgcc's unwinder uses).
pub type FindObjectFn = unsafe extern "C" fn(*mut c_void, *mut DlFindObject) -> c_int;

/// `struct dl_find_object` from <dlfcn.h> (glibc 2.35).
#[repr(C)]
pub struct DlFindObject {
    /// Reserved flags.
    pub flags: u64,
    /// Start of the object's mapping.
    pub map_start: *mut c_void,
    /// End of the object's mapping.
    pub map_end: *mut c_void,
    /// The `struct link_map`.
    pub link_map: *mut c_void,
    /// The PT_GNU_EH_FRAME segment (`.eh_frame_hdr`), or null.
    pub eh_frame: *mut c_void,
    reserved: [u64; 7],
}

impl DlFindObject {
    /// A zeroed result buffer.
    pub const fn zeroed() -> Self {
        Self {
            flags: 0,
            map_start: core::ptr::null_mut(),
            map_end: core::ptr::null_mut(),
            link_map: core::ptr::null_mut(),
            eh_frame: core::ptr::null_mut(),
            reserved: [0; 7],
        }
    }
}

/// The resolved functions. Filled once by [`ensure_init`], read-only afterwards.
pub struct Real {
    pub malloc: MallocFn,
    pub free: FreeFn,
    pub calloc: CallocFn,
    pub realloc: ReallocFn,
    pub reallocarray: Option<ReallocArrayFn>,
    pub posix_memalign: PosixMemalignFn,
    pub aligned_alloc: Option<AlignFn>,
    pub memalign: Option<AlignFn>,
    pub valloc: Option<MallocFn>,
    pub pvalloc: Option<MallocFn>,
    pub malloc_usable_size: Option<UsableFn>,
    pub dlclose: Option<DlcloseFn>,
    pub exit_: Option<ExitFn>,
    pub exit_upper: Option<ExitFn>,
    pub execve: Option<ExecEnvFn>,
    pub execvpe: Option<ExecEnvFn>,
    pub execv: Option<ExecFn>,
    pub execvp: Option<ExecFn>,
    pub fexecve: Option<FexecFn>,
    pub new: Option<NewFn>,
    pub new_array: Option<NewFn>,
    pub new_nothrow: Option<NewNothrowFn>,
    pub new_array_nothrow: Option<NewNothrowFn>,
    pub new_align: Option<NewAlignFn>,
    pub new_array_align: Option<NewAlignFn>,
    pub new_align_nothrow: Option<NewAlignNothrowFn>,
    pub new_array_align_nothrow: Option<NewAlignNothrowFn>,
    pub find_object: Option<FindObjectFn>,
}

static mut REAL: Option<Real> = None;

const UNINIT: u8 = 0;
const RESOLVING: u8 = 1;
const READY: u8 = 2;
static STATE: AtomicU8 = AtomicU8::new(UNINIT);

/// True once the real functions are known.
#[inline(always)]
pub fn ready() -> bool {
    STATE.load(Ordering::Acquire) == READY
}

/// The resolved functions.
///
/// # Safety
/// Only after [`ready`] returned true (or [`ensure_init`] returned true).
#[inline(always)]
pub unsafe fn get() -> &'static Real {
    // SAFETY: written once before STATE became READY (release), read after an acquire load of READY.
    unsafe { (*core::ptr::addr_of!(REAL)).as_ref().unwrap_unchecked() }
}

unsafe fn sym(name: &[u8]) -> *mut c_void {
    // SAFETY: name is NUL-terminated by every caller.
    unsafe { libc::dlsym(libc::RTLD_NEXT, name.as_ptr().cast()) }
}

macro_rules! opt {
    ($name:literal, $ty:ty) => {{
        let p = sym(concat!($name, "\0").as_bytes());
        if p.is_null() {
            None
        } else {
            // SAFETY: the symbol has the C signature of the function named.
            Some(core::mem::transmute::<*mut c_void, $ty>(p))
        }
    }};
}

/// Resolves the real functions on first use. Returns false while another thread (or this one, inside `dlsym`)
/// is resolving: the caller then serves the request from the bootstrap arena.
#[cold]
pub fn ensure_init() -> bool {
    match STATE.compare_exchange(UNINIT, RESOLVING, Ordering::AcqRel, Ordering::Acquire) {
        Ok(_) => {}
        Err(READY) => return true,
        Err(_) => return false,
    }
    // SAFETY: only the thread that won the CAS writes REAL, before publishing READY.
    unsafe {
        let mut malloc: Option<MallocFn> = opt!("malloc", MallocFn);
        let mut free: Option<FreeFn> = opt!("free", FreeFn);
        let mut calloc: Option<CallocFn> = opt!("calloc", CallocFn);
        let mut realloc: Option<ReallocFn> = opt!("realloc", ReallocFn);
        let mut posix_memalign: Option<PosixMemalignFn> = opt!("posix_memalign", PosixMemalignFn);
        // A program that defines malloc in its executable and preloads us after it would leave RTLD_NEXT empty:
        // glibc's own entry points still work there.
        if malloc.is_none() || free.is_none() || calloc.is_none() || realloc.is_none() {
            malloc = Some(libc_malloc);
            free = Some(libc_free);
            calloc = Some(libc_calloc);
            realloc = Some(libc_realloc);
        }
        if posix_memalign.is_none() {
            posix_memalign = Some(libc_posix_memalign);
        }
        let real = Real {
            malloc: malloc.unwrap_unchecked(),
            free: free.unwrap_unchecked(),
            calloc: calloc.unwrap_unchecked(),
            realloc: realloc.unwrap_unchecked(),
            reallocarray: opt!("reallocarray", ReallocArrayFn),
            posix_memalign: posix_memalign.unwrap_unchecked(),
            aligned_alloc: opt!("aligned_alloc", AlignFn),
            memalign: opt!("memalign", AlignFn),
            valloc: opt!("valloc", MallocFn),
            pvalloc: opt!("pvalloc", MallocFn),
            malloc_usable_size: opt!("malloc_usable_size", UsableFn),
            dlclose: opt!("dlclose", DlcloseFn),
            exit_: opt!("_exit", ExitFn),
            exit_upper: opt!("_Exit", ExitFn),
            execve: opt!("execve", ExecEnvFn),
            execvpe: opt!("execvpe", ExecEnvFn),
            execv: opt!("execv", ExecFn),
            execvp: opt!("execvp", ExecFn),
            fexecve: opt!("fexecve", FexecFn),
            new: opt!("_Znwm", NewFn),
            new_array: opt!("_Znam", NewFn),
            new_nothrow: opt!("_ZnwmRKSt9nothrow_t", NewNothrowFn),
            new_array_nothrow: opt!("_ZnamRKSt9nothrow_t", NewNothrowFn),
            new_align: opt!("_ZnwmSt11align_val_t", NewAlignFn),
            new_array_align: opt!("_ZnamSt11align_val_t", NewAlignFn),
            new_align_nothrow: opt!("_ZnwmSt11align_val_tRKSt9nothrow_t", NewAlignNothrowFn),
            new_array_align_nothrow: opt!("_ZnamSt11align_val_tRKSt9nothrow_t", NewAlignNothrowFn),
            find_object: {
                let p = libc::dlsym(libc::RTLD_DEFAULT, c"_dl_find_object".as_ptr());
                if p.is_null() {
                    None
                } else {
                    Some(core::mem::transmute::<*mut c_void, FindObjectFn>(p))
                }
            },
        };
        *core::ptr::addr_of_mut!(REAL) = Some(real);
    }
    crate::config::load();
    STATE.store(READY, Ordering::Release);
    crate::lifecycle::on_ready();
    true
}

extern "C" {
    #[link_name = "__libc_malloc"]
    fn libc_malloc(n: usize) -> *mut c_void;
    #[link_name = "__libc_free"]
    fn libc_free(p: *mut c_void);
    #[link_name = "__libc_calloc"]
    fn libc_calloc(n: usize, m: usize) -> *mut c_void;
    #[link_name = "__libc_realloc"]
    fn libc_realloc(p: *mut c_void, n: usize) -> *mut c_void;
}

/// Address of glibc's malloc, to tell whether the program's allocator is glibc's.
pub fn libc_malloc_addr() -> usize {
    libc_malloc as *const () as usize
}

unsafe extern "C" fn libc_posix_memalign(
    out: *mut *mut c_void,
    align: usize,
    size: usize,
) -> c_int {
    extern "C" {
        #[link_name = "__libc_memalign"]
        fn libc_memalign(align: usize, n: usize) -> *mut c_void;
    }
    // SAFETY: forwarded to glibc with the caller's arguments.
    let p = unsafe { libc_memalign(align, size) };
    if p.is_null() {
        return libc::ENOMEM;
    }
    // SAFETY: the caller passed a valid out-pointer.
    unsafe { *out = p };
    0
}

// ---- bootstrap arena ----------------------------------------------------------------------------------------

const ARENA_SIZE: usize = 256 * 1024;
#[repr(C, align(64))]
struct Arena([u8; ARENA_SIZE]);
static mut ARENA: Arena = Arena([0; ARENA_SIZE]);
static ARENA_USED: AtomicUsize = AtomicUsize::new(0);
/// Set once the arena ran out: reported, because the program then saw a NULL from malloc.
pub static ARENA_EXHAUSTED: AtomicPtr<c_void> = AtomicPtr::new(core::ptr::null_mut());

fn arena_base() -> usize {
    core::ptr::addr_of!(ARENA) as usize
}

/// True if `p` was handed out by the bootstrap arena.
#[inline(always)]
pub fn in_arena(p: *mut c_void) -> bool {
    // One compare: below the arena wraps to a huge distance.
    (p as usize).wrapping_sub(arena_base()) < ARENA_SIZE
}

/// Size of an arena block (stored in the 16 bytes before it).
pub fn arena_size(p: *mut c_void) -> usize {
    // SAFETY: every arena block is preceded by its 16-byte header.
    unsafe { *(p as *const usize).sub(2) }
}

/// A zeroed block from the arena, aligned to `align` (>= 16), or null when the arena is exhausted.
pub fn arena_alloc(size: usize, align: usize) -> *mut c_void {
    let align = align
        .max(16)
        .checked_next_power_of_two()
        .unwrap_or(16)
        .min(4096);
    let mut used = ARENA_USED.load(Ordering::Relaxed);
    loop {
        let start = (arena_base() + used + 16 + align - 1) & !(align - 1);
        let end = start + size.max(1);
        if end > arena_base() + ARENA_SIZE {
            ARENA_EXHAUSTED.store(start as *mut c_void, Ordering::Relaxed);
            return core::ptr::null_mut();
        }
        match ARENA_USED.compare_exchange_weak(
            used,
            end - arena_base(),
            Ordering::AcqRel,
            Ordering::Relaxed,
        ) {
            Ok(_) => {
                // SAFETY: [start-16, end) lies inside the arena and was reserved by the CAS for us alone;
                // the arena is static zeroed memory that is never reused, so the block is already zero.
                unsafe { *((start - 16) as *mut usize) = size };
                return start as *mut c_void;
            }
            Err(u) => used = u,
        }
    }
}
