//! Snapshots while the program runs: every `HEAPLEDGER_INTERVAL` seconds and on `HEAPLEDGER_SIGNAL`.
//!
//! A background thread (all signals blocked, so the program's signals still reach the program's threads)
//! writes them. The signal handler only bumps a counter and wakes the thread with a futex, which is
//! async-signal-safe and, unlike an eventfd or a pipe, owns no file descriptor that a daemonizing program could
//! close (or reuse for its own file) under us. Requests that arrive while a snapshot is being written are
//! coalesced. The program's threads pause only while a shard is being copied (`max_pause_ns` in the dump).

use crate::config;
use crate::dump::{self, Reason};
use core::sync::atomic::{AtomicBool, AtomicU32, Ordering};

/// Snapshot requests (bumped by the signal handler; the futex word).
static REQUESTS: AtomicU32 = AtomicU32::new(0);
static STARTED: AtomicBool = AtomicBool::new(false);

fn futex_wait(word: &AtomicU32, expected: u32, timeout_ns: Option<u64>) {
    let ts = timeout_ns.map(|ns| libc::timespec {
        tv_sec: (ns / 1_000_000_000) as i64,
        tv_nsec: (ns % 1_000_000_000) as i64,
    });
    let tsp = ts
        .as_ref()
        .map_or(core::ptr::null(), |t| t as *const libc::timespec);
    // SAFETY: a private futex wait on our own word; returns on wake, timeout, EINTR or value change.
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAIT | libc::FUTEX_PRIVATE_FLAG,
            expected,
            tsp,
        );
    }
}

fn futex_wake(word: &AtomicU32) {
    // SAFETY: a private futex wake on our own word; async-signal-safe.
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAKE | libc::FUTEX_PRIVATE_FLAG,
            1,
        );
    }
}

/// Starts whatever snapshot machinery the configuration asks for.
pub fn start() {
    let interval = config::INTERVAL_MS.load(Ordering::Relaxed);
    let signal = config::SIGNAL.load(Ordering::Relaxed);
    if interval == 0 && signal == 0 {
        return;
    }
    STARTED.store(true, Ordering::Relaxed);
    // SAFETY: plain system calls; the handler only touches an atomic and a futex.
    unsafe {
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
    let e = crate::sys::errno();
    REQUESTS.fetch_add(1, Ordering::Release);
    futex_wake(&REQUESTS);
    crate::sys::set_errno(e);
}

extern "C" fn run(_: *mut libc::c_void) -> *mut libc::c_void {
    // Everything this thread does is the tracer's: its allocations are internal, never the program's.
    // SAFETY: this thread's own state.
    unsafe { (*crate::thread::current()).busy = crate::thread::BUSY_TRACER };
    let interval = config::INTERVAL_MS.load(Ordering::Relaxed) * 1_000_000;
    let mut next = crate::sys::monotonic_ns() + interval;
    let mut seen = REQUESTS.load(Ordering::Acquire);
    loop {
        let now = crate::sys::monotonic_ns();
        if interval != 0 && now >= next {
            dump::write(Reason::Interval, "", false);
            let now = crate::sys::monotonic_ns();
            next = if next + interval > now {
                next + interval
            } else {
                now + interval
            };
            continue;
        }
        let req = REQUESTS.load(Ordering::Acquire);
        if req != seen {
            seen = req;
            let sig = config::SIGNAL.load(Ordering::Relaxed);
            dump::write(Reason::Signal, signal_name(sig as i32), false);
            continue;
        }
        futex_wait(&REQUESTS, seen, (interval != 0).then(|| next - now));
    }
}

/// Restarts it in a fork child (threads do not survive fork).
pub fn after_fork_child() {
    if STARTED.load(Ordering::Relaxed) {
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
        libc::SIGKILL => "SIGKILL",
        libc::SIGTERM => "SIGTERM",
        libc::SIGINT => "SIGINT",
        libc::SIGQUIT => "SIGQUIT",
        libc::SIGALRM => "SIGALRM",
        libc::SIGPIPE => "SIGPIPE",
        _ => "signal",
    }
}
