//! Thin wrappers over the system calls the tracer needs. None of them allocates or takes a libc lock, so they
//! are usable from the hook path and from signal handlers.

use core::ffi::c_int;

/// Kernel thread id of the caller.
pub fn gettid() -> u32 {
    // SAFETY: a raw syscall without arguments.
    unsafe { libc::syscall(libc::SYS_gettid) as u32 }
}

/// Process id straight from the kernel (glibc no longer caches it, but vfork children must see their own).
pub fn getpid() -> u32 {
    // SAFETY: a raw syscall without arguments.
    unsafe { libc::syscall(libc::SYS_getpid) as u32 }
}

/// Parent process id.
pub fn getppid() -> u32 {
    // SAFETY: a raw syscall without arguments.
    unsafe { libc::syscall(libc::SYS_getppid) as u32 }
}

/// A clock reading in nanoseconds.
pub fn clock_ns(clock: libc::clockid_t) -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid out-pointer.
    unsafe { libc::clock_gettime(clock, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Writes all of `buf` to `fd`, retrying on EINTR and short writes. Returns false on any other error.
pub fn write_all(fd: c_int, mut buf: &[u8]) -> bool {
    while !buf.is_empty() {
        // SAFETY: `buf` is a valid readable slice.
        let n = unsafe { libc::write(fd, buf.as_ptr().cast(), buf.len()) };
        if n < 0 {
            if errno() == libc::EINTR {
                continue;
            }
            return false;
        }
        if n == 0 {
            return false;
        }
        buf = &buf[n as usize..];
    }
    true
}

/// The calling thread's errno.
pub fn errno() -> c_int {
    // SAFETY: __errno_location returns the thread's errno slot.
    unsafe { *libc::__errno_location() }
}

/// Sets the calling thread's errno (hooks restore the program's errno around tracer work).
pub fn set_errno(e: c_int) {
    // SAFETY: __errno_location returns the thread's errno slot.
    unsafe { *libc::__errno_location() = e }
}

/// Anonymous private memory straight from the kernel; null on failure. Never touches the program's heap.
pub fn map(len: usize, noreserve: bool) -> *mut u8 {
    let flags =
        libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | if noreserve { libc::MAP_NORESERVE } else { 0 };
    // SAFETY: anonymous mapping, no file, kernel picks the address.
    let p = unsafe {
        libc::mmap(
            core::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            flags,
            -1,
            0,
        )
    };
    if p == libc::MAP_FAILED {
        core::ptr::null_mut()
    } else {
        p.cast()
    }
}

/// Returns memory obtained from [`map`].
pub fn unmap(p: *mut u8, len: usize) {
    // SAFETY: the caller passes a mapping it got from `map` with the same length.
    unsafe { libc::munmap(p.cast(), len) };
}

/// Writes one line to stderr, ignoring failures (fd 2 may be closed).
pub fn eprint(parts: &[&[u8]]) {
    let mut buf = [0u8; 1024];
    let mut n = 0;
    for p in parts {
        let take = p.len().min(buf.len() - 1 - n);
        buf[n..n + take].copy_from_slice(&p[..take]);
        n += take;
    }
    buf[n] = b'\n';
    let _ = write_all(2, &buf[..=n]);
}

/// Formats `v` in decimal into `buf`, returning the digits.
pub fn fmt_u64(mut v: u64, buf: &mut [u8; 20]) -> &[u8] {
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    &buf[i..]
}
