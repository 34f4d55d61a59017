//! Crash dumps: when SIGSEGV, SIGBUS, SIGFPE, SIGILL or SIGABRT is about to end the process (its disposition
//! is the default action), the live table is written with async-signal-safe code (no allocation, no lock waited
//! for, write(2) of preformatted JSON), then the default action happens, so the exit status and core dump are
//! what they would have been without the tracer. When the program has its own handler, that handler runs and
//! no dump is written (the program may recover, as a JVM does on every implicit null check); if it then
//! aborts, SIGABRT leaves the dump.
//!
//! A program that installs its own handler for one of these signals later would replace ours, so `sigaction`
//! and `signal` are interposed: while ours is installed, the program's handler is stored and chained from
//! ours, and the program sees its own handler when it asks. The main thread gets an alternate signal stack so
//! that a stack overflow still leaves a dump (other threads: only if the program gives them one).

use crate::dump::{self, Reason};
use crate::snapshot::signal_name;
use core::sync::atomic::{AtomicBool, Ordering};

const SIGNALS: [i32; 5] = [
    libc::SIGSEGV,
    libc::SIGBUS,
    libc::SIGFPE,
    libc::SIGILL,
    libc::SIGABRT,
];
const ALTSTACK: usize = 256 * 1024;

/// The program's handlers for the crash signals (what it would have had without us).
static mut PREV: [core::mem::MaybeUninit<libc::sigaction>; 5] =
    [const { core::mem::MaybeUninit::zeroed() }; 5];
static INSTALLED: AtomicBool = AtomicBool::new(false);
static IN_CRASH: AtomicBool = AtomicBool::new(false);

fn slot(sig: i32) -> Option<usize> {
    SIGNALS.iter().position(|&s| s == sig)
}

type SigactionFn = unsafe extern "C" fn(i32, *const libc::sigaction, *mut libc::sigaction) -> i32;

fn real_sigaction() -> Option<SigactionFn> {
    static mut REAL: Option<SigactionFn> = None;
    static RESOLVED: AtomicBool = AtomicBool::new(false);
    // SAFETY: resolved once (a benign race resolves the same value twice).
    unsafe {
        if !RESOLVED.load(Ordering::Acquire) {
            let p = libc::dlsym(libc::RTLD_NEXT, c"sigaction".as_ptr());
            *core::ptr::addr_of_mut!(REAL) = if p.is_null() {
                None
            } else {
                Some(core::mem::transmute::<*mut libc::c_void, SigactionFn>(p))
            };
            RESOLVED.store(true, Ordering::Release);
        }
        *core::ptr::addr_of!(REAL)
    }
}

/// Installs the crash handlers (from the constructor).
pub fn install() {
    let Some(sa_fn) = real_sigaction() else {
        return;
    };
    // SAFETY: plain system calls with valid arguments; PREV is written before INSTALLED is published.
    unsafe {
        let stack = crate::heap::map_counted(ALTSTACK, false);
        if !stack.is_null() {
            let ss = libc::stack_t {
                ss_sp: stack.cast(),
                ss_flags: 0,
                ss_size: ALTSTACK,
            };
            let mut old: libc::stack_t = core::mem::zeroed();
            libc::sigaltstack(core::ptr::null(), &mut old);
            if old.ss_flags & libc::SS_DISABLE != 0 {
                libc::sigaltstack(&ss, core::ptr::null_mut());
            }
        }
        let mut sa: libc::sigaction = core::mem::zeroed();
        sa.sa_sigaction = on_crash as *const () as usize;
        sa.sa_flags = libc::SA_SIGINFO | libc::SA_ONSTACK;
        libc::sigemptyset(&mut sa.sa_mask);
        for (i, &sig) in SIGNALS.iter().enumerate() {
            let prev = (*core::ptr::addr_of_mut!(PREV))[i].as_mut_ptr();
            sa_fn(sig, &sa, prev);
        }
    }
    INSTALLED.store(true, Ordering::Release);
}

extern "C" fn on_crash(sig: i32, info: *mut libc::siginfo_t, ctx: *mut libc::c_void) {
    let e = crate::sys::errno();
    let Some(i) = slot(sig) else { return };
    // SAFETY: PREV[i] was filled by install() or by the interposed sigaction.
    let prev = unsafe { (*core::ptr::addr_of!(PREV))[i].assume_init_read() };
    let h = prev.sa_sigaction;
    if h == libc::SIG_IGN {
        crate::sys::set_errno(e);
        return;
    }
    if h != libc::SIG_DFL {
        // The program handles this signal itself (a JVM turns SIGSEGV into NullPointerException thousands of
        // times a second): it is not dying, so no crash dump; its handler runs as if we were not here.
        crate::sys::set_errno(e);
        // SAFETY: chaining to the program's handler with the kernel's arguments, as it expects.
        unsafe {
            if prev.sa_flags & libc::SA_SIGINFO != 0 {
                let f = core::mem::transmute::<
                    libc::sighandler_t,
                    extern "C" fn(i32, *mut libc::siginfo_t, *mut libc::c_void),
                >(h);
                f(sig, info, ctx);
            } else {
                let f = core::mem::transmute::<libc::sighandler_t, extern "C" fn(i32)>(h);
                f(sig);
            }
        }
        return;
    }
    // The default action is about to end the process: write what was live, once, with where it crashed.
    if !IN_CRASH.swap(true, Ordering::AcqRel) && crate::real::ready() {
        // SAFETY: the thread's own state; everything after this is the tracer's.
        unsafe { (*crate::thread::current()).busy = 1 };
        // The walk goes from this handler through the kernel's signal frame into the faulting function.
        let stack = crate::record::stack_id(crate::record::alloc_depth().max(16));
        // SAFETY: the kernel passed a valid siginfo (or null).
        let (code, addr) = if info.is_null() {
            (0, 0)
        } else {
            unsafe { ((*info).si_code, (*info).si_addr() as u64) }
        };
        dump::set_crash(dump::CrashInfo {
            signal: sig,
            code,
            addr,
            tid: crate::sys::gettid(),
            stack,
        });
        dump::write(Reason::Crash, signal_name(sig), true);
    }
    // Restore the default action and let the signal happen again, so the status and core are the real ones.
    // A fault re-executes the faulting instruction when we return; a sent signal (kill, raise, abort) is sent
    // again and stays pending until we return.
    // SAFETY: plain system calls.
    unsafe {
        let mut dfl: libc::sigaction = core::mem::zeroed();
        dfl.sa_sigaction = libc::SIG_DFL;
        if let Some(f) = real_sigaction() {
            f(sig, &dfl, core::ptr::null_mut());
        }
        if info.is_null() || (*info).si_code <= 0 {
            libc::syscall(libc::SYS_tgkill, libc::getpid(), crate::sys::gettid(), sig);
        }
    }
    crate::sys::set_errno(e);
}

/// `sigaction(2)`: keeps the crash handler first while the program installs its own.
///
/// # Safety
/// As for the real sigaction.
#[no_mangle]
pub unsafe extern "C" fn sigaction(
    sig: i32,
    act: *const libc::sigaction,
    old: *mut libc::sigaction,
) -> i32 {
    let Some(f) = real_sigaction() else {
        crate::sys::set_errno(libc::ENOSYS);
        return -1;
    };
    match slot(sig) {
        Some(i) if INSTALLED.load(Ordering::Acquire) => {
            // SAFETY: PREV is only written here and in install(); the caller's pointers are valid or null.
            unsafe {
                let prev = &mut (*core::ptr::addr_of_mut!(PREV))[i];
                if !old.is_null() {
                    *old = prev.assume_init_read();
                }
                if !act.is_null() {
                    prev.write(*act);
                }
            }
            0
        }
        // SAFETY: forwarding.
        _ => unsafe { f(sig, act, old) },
    }
}

/// `signal(2)`, routed through the interposed `sigaction` (glibc's calls its internal one directly).
#[no_mangle]
pub extern "C" fn signal(sig: i32, handler: libc::sighandler_t) -> libc::sighandler_t {
    // SAFETY: a zeroed sigaction is valid; BSD semantics (SA_RESTART), as glibc's signal().
    unsafe {
        let mut sa: libc::sigaction = core::mem::zeroed();
        sa.sa_sigaction = handler;
        sa.sa_flags = libc::SA_RESTART;
        libc::sigemptyset(&mut sa.sa_mask);
        libc::sigaddset(&mut sa.sa_mask, sig);
        let mut old: libc::sigaction = core::mem::zeroed();
        if sigaction(sig, &sa, &mut old) != 0 {
            return libc::SIG_ERR;
        }
        old.sa_sigaction
    }
}
