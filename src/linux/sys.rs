//! Thin wrappers over the system calls the tracer needs (Linux). None of them allocates or takes a libc lock, so
//! they are usable from the hook path and from signal handlers. `src/windows/sys.rs` has the same API.

use core::ffi::c_int;

/// An open file.
pub type Fd = c_int;

/// Platform name written in dumps.
pub const PLATFORM: &str = "linux-x86_64";

/// The calling thread's tracer state (`hl_tls`, initial-exec TLS defined in `thread.c`): the thread pointer plus
/// the object's offset from it, which the loader wrote into the GOT when it loaded the library.
#[inline(always)]
pub fn thread_state() -> *mut crate::thread::ThreadState {
    let p: *mut crate::thread::ThreadState;
    // SAFETY: the initial-exec access sequence for a TLS object of this library: `fs:0` holds the thread
    // pointer (x86-64 TLS ABI), and the GOT entry `hl_tls@GOTTPOFF` the object's offset from it. Reads only.
    unsafe {
        core::arch::asm!(
            "mov {p}, qword ptr [rip + hl_tls@GOTTPOFF]",
            "add {p}, qword ptr fs:[0]",
            p = out(reg) p,
            options(pure, readonly, nostack),
        );
    }
    p
}

static EXIT_KEY: core::sync::atomic::AtomicU32 = core::sync::atomic::AtomicU32::new(u32::MAX);

unsafe extern "C" fn on_thread_exit(v: *mut libc::c_void) {
    crate::counters::release(v as usize);
}

/// Arranges for `crate::counters::release(token)` to run when the calling thread exits. False if it cannot be
/// arranged (then the caller must not rely on it).
pub fn on_thread_exit_release(token: usize) -> bool {
    let Some(key) = exit_key(&EXIT_KEY, on_thread_exit) else {
        return false;
    };
    // SAFETY: a valid key; the value is a small integer, not a pointer.
    unsafe { libc::pthread_setspecific(key, token as *const libc::c_void) == 0 }
}

/// The pthread key kept in `slot` (`u32::MAX`: none yet), created on first use with destructor `dtor`, which
/// runs at the exit of every thread that set a non-null value. None if no key can be created.
pub fn exit_key(
    slot: &core::sync::atomic::AtomicU32,
    dtor: unsafe extern "C" fn(*mut libc::c_void),
) -> Option<libc::pthread_key_t> {
    use core::sync::atomic::Ordering;
    let key = slot.load(Ordering::Acquire);
    if key != u32::MAX {
        return Some(key);
    }
    let mut k: libc::pthread_key_t = 0;
    // SAFETY: creating a key with a plain extern "C" destructor.
    if unsafe { libc::pthread_key_create(&mut k, Some(dtor)) } != 0 {
        return None;
    }
    match slot.compare_exchange(u32::MAX, k, Ordering::AcqRel, Ordering::Acquire) {
        Ok(_) => Some(k),
        Err(other) => {
            // SAFETY: the key we created and nobody else uses.
            unsafe { libc::pthread_key_delete(k) };
            Some(other)
        }
    }
}

/// True when the process runs under a finite address-space limit (`ulimit -v`).
pub fn address_space_limited() -> bool {
    let mut r = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit into a local.
    unsafe { libc::getrlimit(libc::RLIMIT_AS, &mut r) == 0 && r.rlim_cur != libc::RLIM_INFINITY }
}

/// Gives the CPU to another thread.
pub fn yield_now() {
    // SAFETY: no preconditions.
    unsafe { libc::sched_yield() };
}

/// An environment variable, read without allocating.
pub fn getenv(name: &core::ffi::CStr) -> Option<&'static [u8]> {
    // SAFETY: getenv reads the environment without allocating; the value lives as long as the environment entry,
    // which callers copy or parse at once.
    let p = unsafe { libc::getenv(name.as_ptr()) };
    if p.is_null() {
        return None;
    }
    // SAFETY: getenv returns a NUL-terminated string.
    Some(unsafe { core::ffi::CStr::from_ptr(p) }.to_bytes())
}

/// Writes the working directory into `buf` (NUL-terminated); returns its length, 0 on failure.
pub fn getcwd(buf: &mut [u8]) -> usize {
    // SAFETY: getcwd writes at most buf.len() bytes.
    let ok = unsafe { !libc::getcwd(buf.as_mut_ptr().cast(), buf.len()).is_null() };
    if ok {
        buf.iter().position(|&c| c == 0).unwrap_or(0)
    } else {
        0
    }
}

/// True if absolute (`/…`).
pub fn is_absolute(path: &[u8]) -> bool {
    path.first() == Some(&b'/')
}

/// Path separator.
pub const SEP: u8 = b'/';

/// CLOCK_MONOTONIC in nanoseconds.
pub fn monotonic_ns() -> u64 {
    clock_ns(libc::CLOCK_MONOTONIC)
}

/// CLOCK_REALTIME in nanoseconds since the Unix epoch.
pub fn realtime_ns() -> u64 {
    clock_ns(libc::CLOCK_REALTIME)
}

/// Creates `path` (NUL-terminated) exclusively with mode 0600, never following a symlink; a stale file of the
/// same name is replaced. Returns the errno on failure.
pub fn create_exclusive(path: &[u8]) -> Result<Fd, c_int> {
    let flags = libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW | libc::O_CLOEXEC;
    // SAFETY: path is NUL-terminated.
    let mut fd = unsafe { libc::open(path.as_ptr().cast(), flags, 0o600) };
    if fd < 0 && errno() == libc::EEXIST {
        // SAFETY: as above.
        unsafe {
            libc::unlink(path.as_ptr().cast());
            fd = libc::open(path.as_ptr().cast(), flags, 0o600);
        }
    }
    if fd < 0 {
        Err(errno())
    } else {
        Ok(fd)
    }
}

/// Closes a file.
pub fn close(fd: Fd) {
    // SAFETY: fd is ours.
    unsafe { libc::close(fd) };
}

/// Removes a file (NUL-terminated path).
pub fn remove(path: &[u8]) {
    // SAFETY: NUL-terminated.
    unsafe { libc::unlink(path.as_ptr().cast()) };
}

/// Renames `from` over `to` atomically (both NUL-terminated). A symlink at `to` is replaced, not followed.
pub fn rename(from: &[u8], to: &[u8]) -> Result<(), c_int> {
    // SAFETY: NUL-terminated paths.
    if unsafe { libc::rename(from.as_ptr().cast(), to.as_ptr().cast()) } != 0 {
        Err(errno())
    } else {
        Ok(())
    }
}

/// Appends `line` to the file `path` (NUL-terminated) with one write(2) under O_APPEND, so lines of concurrent
/// processes never interleave.
pub fn append(path: &[u8], line: &[u8]) {
    // SAFETY: NUL-terminated path.
    let fd = unsafe {
        libc::open(
            path.as_ptr().cast(),
            libc::O_WRONLY | libc::O_APPEND | libc::O_CREAT | libc::O_CLOEXEC,
            0o600,
        )
    };
    if fd >= 0 {
        write_all(fd, line);
        close(fd);
    }
}

/// The executable's path into `buf`; returns its length.
pub fn exe_path(buf: &mut [u8]) -> usize {
    // SAFETY: readlink writes at most buf.len() bytes.
    let n = unsafe {
        libc::readlink(
            c"/proc/self/exe".as_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        )
    };
    n.max(0) as usize
}

/// The command line, arguments separated by NUL bytes (no trailing NUL); returns its length.
pub fn cmdline(buf: &mut [u8]) -> usize {
    // SAFETY: plain reads into buf.
    let n = unsafe {
        let fd = libc::open(
            c"/proc/self/cmdline".as_ptr(),
            libc::O_RDONLY | libc::O_CLOEXEC,
        );
        if fd < 0 {
            return 0;
        }
        let mut n = 0;
        while n < buf.len() {
            let r = libc::read(fd, buf[n..].as_mut_ptr().cast(), buf.len() - n);
            if r <= 0 {
                break;
            }
            n += r as usize;
        }
        libc::close(fd);
        n
    };
    if n > 0 && buf[n - 1] == 0 {
        n - 1
    } else {
        n
    }
}

/// A short description of an errno from the file functions above.
pub fn error_name(e: c_int) -> &'static [u8] {
    match e {
        libc::EACCES => b"permission denied",
        libc::ENOENT => b"no such directory",
        libc::ENOSPC => b"no space left on device",
        libc::EROFS => b"read-only file system",
        libc::EDQUOT => b"disk quota exceeded",
        libc::ENOTDIR => b"a path component is not a directory",
        libc::ELOOP => b"symlink in the way",
        libc::EMFILE | libc::ENFILE => b"too many open files",
        libc::EEXIST => b"temporary file exists",
        libc::EISDIR => b"is a directory",
        _ => b"write error",
    }
}

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
fn clock_ns(clock: libc::clockid_t) -> u64 {
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

/// The calling thread's errno slot (valid for the thread's lifetime).
#[inline(always)]
pub fn errno_slot() -> *mut c_int {
    // SAFETY: __errno_location has no preconditions.
    unsafe { libc::__errno_location() }
}

/// The calling thread's errno.
pub fn errno() -> c_int {
    // SAFETY: the thread's errno slot.
    unsafe { *errno_slot() }
}

/// Sets the calling thread's errno (hooks restore the program's errno around tracer work).
pub fn set_errno(e: c_int) {
    // SAFETY: the thread's errno slot.
    unsafe { *errno_slot() = e }
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

/// Size of an x86-64 huge page.
pub const HUGE_PAGE: usize = 2 << 20;

/// Maps `len` bytes at a huge-page-aligned address, so that [`collapse_huge`] can back all of it with huge pages
/// (when `len` is a multiple of [`HUGE_PAGE`]). Reserves `HUGE_PAGE` more for a moment. Null on failure.
pub fn map_huge_aligned(len: usize, noreserve: bool) -> *mut u8 {
    let p = map(len + HUGE_PAGE, noreserve);
    if p.is_null() {
        return p;
    }
    let start = (p as usize + HUGE_PAGE - 1) & !(HUGE_PAGE - 1);
    let head = start - p as usize;
    if head > 0 {
        unmap(p, head);
    }
    unmap((start + len) as *mut u8, HUGE_PAGE - head);
    start as *mut u8
}

/// Backs [p, p + len) with huge pages now (`MADV_COLLAPSE`, Linux 6.1; best effort: older kernels and a
/// fragmented memory refuse, and the range stays as it was). For a table read at random places that is already
/// resident page by page: each lookup then costs a cache miss, not a TLB miss too.
pub fn collapse_huge(p: *mut u8, len: usize) {
    // SAFETY: advice on a mapping of ours; neither call changes its contents.
    unsafe {
        libc::madvise(p.cast(), len, libc::MADV_HUGEPAGE);
        libc::madvise(p.cast(), len, libc::MADV_COLLAPSE);
    }
}

/// Returns memory obtained from [`map`].
pub fn unmap(p: *mut u8, len: usize) {
    // SAFETY: the caller passes a mapping it got from `map` with the same length.
    unsafe { libc::munmap(p.cast(), len) };
}

/// Writes one line to stderr, ignoring failures (fd 2 may be closed).
///
/// Only to the stderr the program started with: a program that closed fd 2 and opened a file of its own there
/// must not find our message in its data, so the file's identity is checked against the one recorded at
/// start-up. SIGPIPE is blocked around the write, so a closed pipe costs the message, not the process.
pub fn eprint(parts: &[&[u8]]) {
    let mut buf = [0u8; 1024];
    let mut n = 0;
    for p in parts {
        let take = p.len().min(buf.len() - 1 - n);
        buf[n..n + take].copy_from_slice(&p[..take]);
        n += take;
    }
    buf[n] = b'\n';
    if STDERR_ID.load(core::sync::atomic::Ordering::Relaxed) != stderr_id() {
        return;
    }
    // SAFETY: signal-mask calls on local sets; sigtimedwait with a zero timeout only consumes a SIGPIPE that
    // our own write raised (one already pending before is left alone).
    unsafe {
        let mut pipe: libc::sigset_t = core::mem::zeroed();
        let mut old: libc::sigset_t = core::mem::zeroed();
        let mut pending: libc::sigset_t = core::mem::zeroed();
        libc::sigemptyset(&mut pipe);
        libc::sigaddset(&mut pipe, libc::SIGPIPE);
        libc::pthread_sigmask(libc::SIG_BLOCK, &pipe, &mut old);
        libc::sigpending(&mut pending);
        let was_pending = libc::sigismember(&pending, libc::SIGPIPE) == 1;
        let ok = write_all(2, &buf[..=n]);
        if !ok && errno() == libc::EPIPE && !was_pending {
            let zero = libc::timespec {
                tv_sec: 0,
                tv_nsec: 0,
            };
            libc::sigtimedwait(&pipe, core::ptr::null_mut(), &zero);
        }
        libc::pthread_sigmask(libc::SIG_SETMASK, &old, core::ptr::null_mut());
    }
}

/// Identity (device and inode, mixed) of what fd 2 is now; 0 when it is closed.
fn stderr_id() -> u64 {
    // SAFETY: fstat into a local buffer.
    unsafe {
        let mut st: libc::stat = core::mem::zeroed();
        if libc::fstat(2, &mut st) != 0 {
            return 0;
        }
        (st.st_dev as u64).rotate_left(32) ^ st.st_ino as u64 ^ 1
    }
}

static STDERR_ID: core::sync::atomic::AtomicU64 = core::sync::atomic::AtomicU64::new(u64::MAX);

/// Records what the program's stderr is, at start-up.
pub fn remember_stderr() {
    STDERR_ID.store(stderr_id(), core::sync::atomic::Ordering::Relaxed);
}
