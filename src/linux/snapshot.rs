//! Snapshots while the program runs: every `HEAPLEDGER_INTERVAL` seconds and on `HEAPLEDGER_SIGNAL`.
//!
//! A background thread (all signals blocked, so the program's signals still reach the program's threads)
//! writes them. The signal handler only writes to an eventfd, which is async-signal-safe; the thread wakes up,
//! takes the snapshot with the ordinary dump code and goes back to waiting. The program's threads pause only
//! while a shard is being copied (`max_pause_ns` in the dump).

use crate::config;
use crate::dump::{self, Reason};
use core::sync::atomic::{AtomicI32, Ordering};

static EVENT_FD: AtomicI32 = AtomicI32::new(-1);

/// Starts whatever snapshot machinery the configuration asks for.
pub fn start() {
    let interval = config::INTERVAL_MS.load(Ordering::Relaxed);
    let signal = config::SIGNAL.load(Ordering::Relaxed);
    if interval == 0 && signal == 0 {
        return;
    }
    // SAFETY: plain system calls; the handler only writes to the eventfd.
    unsafe {
        let fd = libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK);
        if fd < 0 {
            return;
        }
        EVENT_FD.store(fd, Ordering::Relaxed);
        if signal != 0 {
            let mut sa: libc::sigaction = core::mem::zeroed();
            sa.sa_sigaction = on_signal as *const () as usize;
            sa.sa_flags = libc::SA_RESTART;
            libc::sigemptyset(&mut sa.sa_mask);
            libc::sigaction(signal as i32, &sa, core::ptr::null_mut());
        }
        spawn();
    }
}

/// Creates the snapshot thread with every signal blocked.
unsafe fn spawn() {
    // SAFETY: standard pthread calls with valid arguments.
    unsafe {
        let mut all: libc::sigset_t = core::mem::zeroed();
        let mut old: libc::sigset_t = core::mem::zeroed();
        libc::sigfillset(&mut all);
        libc::pthread_sigmask(libc::SIG_SETMASK, &all, &mut old);
        let mut th: libc::pthread_t = 0;
        let mut attr: libc::pthread_attr_t = core::mem::zeroed();
        libc::pthread_attr_init(&mut attr);
        libc::pthread_attr_setdetachstate(&mut attr, libc::PTHREAD_CREATE_DETACHED);
        if libc::pthread_create(&mut th, &attr, run, core::ptr::null_mut()) == 0 {
            libc::pthread_setname_np(th, c"heapledger".as_ptr());
        }
        libc::pthread_attr_destroy(&mut attr);
        libc::pthread_sigmask(libc::SIG_SETMASK, &old, core::ptr::null_mut());
    }
}

extern "C" fn on_signal(_sig: i32) {
    let fd = EVENT_FD.load(Ordering::Relaxed);
    if fd >= 0 {
        let e = crate::sys::errno();
        let one: u64 = 1;
        // SAFETY: write(2) is async-signal-safe; 8 bytes from a valid local.
        unsafe { libc::write(fd, (&one as *const u64).cast(), 8) };
        crate::sys::set_errno(e);
    }
}

extern "C" fn run(_: *mut libc::c_void) -> *mut libc::c_void {
    // Everything this thread does is the tracer's: its allocations are internal, never the program's.
    // SAFETY: this thread's own state.
    unsafe { (*crate::thread::current()).busy = 1 };
    let fd = EVENT_FD.load(Ordering::Relaxed);
    let interval = config::INTERVAL_MS.load(Ordering::Relaxed);
    let mut next = crate::sys::monotonic_ns() + interval * 1_000_000;
    loop {
        let now = crate::sys::monotonic_ns();
        let timeout = if interval == 0 {
            -1
        } else {
            (next.saturating_sub(now) / 1_000_000) as i32
        };
        let mut pfd = libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd.
        let r = unsafe { libc::poll(&mut pfd, 1, timeout) };
        if r > 0 {
            let mut v: u64 = 0;
            // SAFETY: reading the 8-byte counter into a local.
            unsafe { libc::read(fd, (&mut v as *mut u64).cast(), 8) };
            let sig = config::SIGNAL.load(Ordering::Relaxed);
            dump::write(Reason::Signal, signal_name(sig as i32), false);
        } else if r == 0 {
            dump::write(Reason::Interval, "", false);
            next += interval * 1_000_000;
            let now = crate::sys::monotonic_ns();
            if next < now {
                next = now + interval * 1_000_000;
            }
        }
    }
}

/// Restarts it in a fork child (threads do not survive fork).
pub fn after_fork_child() {
    if EVENT_FD.load(Ordering::Relaxed) >= 0 {
        // SAFETY: glibc has reset its locks before running fork child handlers; the thread is ours.
        unsafe { spawn() };
    }
}

/// Short name of a signal number (for `detail`).
pub fn signal_name(sig: i32) -> &'static str {
    match sig {
        libc::SIGSEGV => "SIGSEGV",
        libc::SIGBUS => "SIGBUS",
        libc::SIGFPE => "SIGFPE",
        libc::SIGILL => "SIGILL",
        libc::SIGABRT => "SIGABRT",
        libc::SIGUSR1 => "SIGUSR1",
        libc::SIGUSR2 => "SIGUSR2",
        libc::SIGHUP => "SIGHUP",
        libc::SIGPROF => "SIGPROF",
        libc::SIGWINCH => "SIGWINCH",
        libc::SIGURG => "SIGURG",
        _ => "signal",
    }
}
