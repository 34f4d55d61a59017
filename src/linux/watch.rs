//! The end watcher: a helper process that shares the traced program's memory and writes the final dump when the
//! program ends without running any exit code.
//!
//! The final dump normally comes from `exit()` (the library's destructor) or the `_exit` hook. Some endings run
//! neither: Go's runtime ends a cgo program with a raw `exit_group` system call, and SIGKILL (the OOM killer, a
//! supervisor's timeout) stops every thread where it stands. For those, a helper is cloned with `CLONE_VM`
//! (same memory) and `CLONE_FS` (same working directory), but not `CLONE_THREAD`: a process of its own, which
//! `exit_group` does not take with it. Nor `CLONE_FILES`: it closes its copy of the descriptor table at once,
//! so it holds no pipe of the program's open and the program never sees its pidfd, on which it waits. When the program has ended, every one of its threads is gone and the
//! memory (kept alive by the helper's reference) is the helper's alone: it writes the dump through the crash
//! path (no waiting on a lock a killed thread may hold) and exits.
//!
//! While the program runs, the helper does nothing but wait, with raw system calls only: it runs on the
//! creating thread's TLS (no `CLONE_SETTLS`), so not even `errno` may be written. All signals are blocked in it
//! (a copy of the program's handlers must never run in it; Ctrl-C reaches the whole process group); it is
//! created with exit signal 0, so the program's `wait()` never sees it. `exec` replaces the memory the helper
//! watches: the exec hooks kill it first (and start a new one if the exec fails); an exec the hooks do not see
//! (a raw system call) is noticed within a second by comparing address spaces (`kcmp`), and the helper leaves.
//!
//! `HEAPLEDGER_WATCH`: 2 (default) starts it for cgo programs only, 1 for every program (a final dump even after
//! SIGKILL), 0 never. A forked child gets its own helper.

use core::arch::asm;
use core::ffi::{c_int, c_void};
use core::sync::atomic::{AtomicBool, AtomicI32, AtomicPtr, AtomicU32, Ordering};

/// The helper's pid (0: none).
static HELPER: AtomicI32 = AtomicI32::new(0);
/// The pid it watches, and that program's parent when the helper started (the dump's `ppid`).
static WATCHED: AtomicU32 = AtomicU32::new(0);
static WATCHED_PARENT: AtomicU32 = AtomicU32::new(0);
/// The helper's stack, mapped once per process image and reused.
static STACK: AtomicPtr<u8> = AtomicPtr::new(core::ptr::null_mut());
const STACK_SIZE: usize = 256 << 10;
/// Whether this process wants a helper (decided at start-up, inherited by forked children).
static WANTED: AtomicBool = AtomicBool::new(false);
/// The watched program's main thread id, and the word the kernel clears (and wakes) when that thread exits or
/// the program execs: glibc's `struct pthread::tid`, the thread's `set_tid_address` (0: not found).
static MAIN_TID: AtomicI32 = AtomicI32::new(0);
static TID_WORD: AtomicPtr<i32> = AtomicPtr::new(core::ptr::null_mut());
/// Where glibc (2.26 and later, x86-64) keeps `tid` in `struct pthread`; checked against the real tid.
const PTHREAD_TID_OFFSET: usize = 0x2d0;

/// Decides whether this program gets a helper and starts it (from the library's constructor).
pub fn start() {
    let wanted = match crate::config::WATCH.load(Ordering::Relaxed) {
        0 => false,
        1 => true,
        _ => is_cgo(),
    };
    WANTED.store(wanted, Ordering::Relaxed);
    if wanted {
        spawn();
    }
}

/// A cgo program exports the cgo runtime's entry points (`crosscall2` is the callback entry every cgo
/// program links). Go binaries without cgo are static: the library is never loaded into them. The name is
/// looked for in the executable's dynamic string table: `dlsym` of a missing name would leave an error message
/// malloc'd in the program's heap.
fn is_cgo() -> bool {
    unsafe extern "C" fn first(
        info: *mut libc::dl_phdr_info,
        _: usize,
        data: *mut c_void,
    ) -> c_int {
        // SAFETY: dl_iterate_phdr passes valid headers; data is our bool. The first object is the executable.
        unsafe {
            let info = &*info;
            *(data as *mut bool) = dynstr_has(info, b"crosscall2");
        }
        1
    }
    let mut found = false;
    // SAFETY: the callback reads only the headers it is given and the executable's mapped dynamic section.
    unsafe { libc::dl_iterate_phdr(Some(first), (&mut found as *mut bool).cast()) };
    found
}

/// Whether `name` is a string of the object's dynamic string table.
///
/// # Safety
/// `info` describes a loaded object (from `dl_iterate_phdr`).
unsafe fn dynstr_has(info: &libc::dl_phdr_info, name: &[u8]) -> bool {
    let base = info.dlpi_addr as usize;
    // SAFETY: dlpi_phdr has dlpi_phnum entries.
    let phdrs = unsafe { core::slice::from_raw_parts(info.dlpi_phdr, info.dlpi_phnum as usize) };
    let Some(dynamic) = phdrs.iter().find(|p| p.p_type == libc::PT_DYNAMIC) else {
        return false;
    };
    // Elf64_Dyn: (d_tag, d_un) pairs of 64-bit words, ending with DT_NULL.
    const DT_NULL: u64 = 0;
    const DT_STRTAB: u64 = 5;
    const DT_STRSZ: u64 = 10;
    let (mut strtab, mut strsz) = (0usize, 0usize);
    let mut d = (base + dynamic.p_vaddr as usize) as *const [u64; 2];
    // SAFETY: the dynamic section is mapped and ends with DT_NULL.
    unsafe {
        while (*d)[0] != DT_NULL {
            match (*d)[0] {
                DT_STRTAB => strtab = (*d)[1] as usize,
                DT_STRSZ => strsz = (*d)[1] as usize,
                _ => {}
            }
            d = d.add(1);
        }
    }
    if strtab == 0 || strsz == 0 {
        return false;
    }
    // The loader relocates these entries in place in most objects; a value below the base is still an offset.
    if strtab < base {
        strtab += base;
    }
    // SAFETY: the dynamic string table is mapped for the object's lifetime.
    let table = unsafe { core::slice::from_raw_parts(strtab as *const u8, strsz) };
    table.split(|&b| b == 0).any(|s| s == name)
}

/// In a forked child: the parent's helper watches the parent; the child gets its own.
pub fn after_fork_child() {
    HELPER.store(0, Ordering::Relaxed);
    if WANTED.load(Ordering::Relaxed) {
        spawn();
    }
}

/// Before `exec`: the helper holds the old memory and descriptor table, so it goes first (killed and reaped,
/// it has nothing to clean up).
pub fn before_exec() {
    // A vfork child shares our memory (and this static) but not the watched pid: its exec is not ours.
    if HELPER.load(Ordering::Acquire) == 0
        || crate::sys::getpid() != WATCHED.load(Ordering::Relaxed)
    {
        return;
    }
    let h = HELPER.swap(0, Ordering::AcqRel);
    if h > 0 {
        let e = crate::sys::errno();
        // SAFETY: our own child process; reaping it with __WALL (it has no exit signal).
        unsafe {
            libc::kill(h, libc::SIGKILL);
            libc::waitpid(h, core::ptr::null_mut(), libc::__WALL);
        }
        crate::sys::set_errno(e);
    }
}

/// After an `exec` that failed (the program goes on): a new helper.
pub fn after_failed_exec() {
    if WANTED.load(Ordering::Relaxed)
        && HELPER.load(Ordering::Relaxed) == 0
        && crate::sys::getpid() == WATCHED.load(Ordering::Relaxed)
    {
        let e = crate::sys::errno();
        spawn();
        crate::sys::set_errno(e);
    }
}

fn spawn() {
    let mut stack = STACK.load(Ordering::Acquire);
    if stack.is_null() {
        stack = crate::sys::map(STACK_SIZE, true);
        if stack.is_null() {
            return;
        }
        STACK.store(stack, Ordering::Release);
    }
    let pid = crate::sys::getpid();
    READY.store(0, Ordering::Release);
    WATCHED.store(pid, Ordering::Relaxed);
    WATCHED_PARENT.store(crate::sys::getppid(), Ordering::Relaxed);
    let tid = crate::sys::gettid() as i32;
    // SAFETY: pthread_self() is this thread's descriptor, at least PTHREAD_TID_OFFSET + 4 bytes long in every
    // glibc that has the field there; it is only used when it holds this thread's id.
    let word = unsafe {
        (libc::pthread_self() as *mut u8)
            .add(PTHREAD_TID_OFFSET)
            .cast::<i32>()
    };
    // SAFETY: as above.
    let found = unsafe { core::ptr::read_volatile(word) } == tid;
    MAIN_TID.store(tid, Ordering::Relaxed);
    TID_WORD.store(
        if found { word } else { core::ptr::null_mut() },
        Ordering::Release,
    );
    // Signals stay blocked from before the clone: the helper inherits the full mask and never unblocks it.
    // SAFETY: plain signal-mask calls on local sets.
    let h = unsafe {
        let mut all: libc::sigset_t = core::mem::zeroed();
        let mut old: libc::sigset_t = core::mem::zeroed();
        libc::sigfillset(&mut all);
        libc::pthread_sigmask(libc::SIG_BLOCK, &all, &mut old);
        // SAFETY (clone): the child runs `helper` on its own stack (top of the mapping, 16-byte aligned) in our
        // memory; it touches only what `helper` documents.
        let h = libc::clone(
            helper,
            stack.add(STACK_SIZE).cast(),
            libc::CLONE_VM | libc::CLONE_FS | libc::CLONE_UNTRACED,
            pid as usize as *mut c_void,
        );
        libc::pthread_sigmask(libc::SIG_SETMASK, &old, core::ptr::null_mut());
        h
    };
    if h > 0 {
        HELPER.store(h, Ordering::Release);
        // Wait (a second at most) until the helper has its pidfd and has dropped its descriptors: a program that
        // ends at once would otherwise be gone (and reaped) before the helper ran, its status lost.
        let e = crate::sys::errno();
        let deadline = crate::sys::monotonic_ns() + 1_000_000_000;
        while READY.load(Ordering::Acquire) == 0 && crate::sys::monotonic_ns() < deadline {
            let ms = libc::timespec {
                tv_sec: 0,
                tv_nsec: 10_000_000,
            };
            // SAFETY: futex wait on our own word with a timeout.
            unsafe {
                libc::syscall(
                    libc::SYS_futex,
                    READY.as_ptr(),
                    libc::FUTEX_WAIT,
                    0,
                    &ms as *const libc::timespec,
                );
            }
        }
        crate::sys::set_errno(e);
    }
}

/// Set by the helper once it is watching (the parent waits for it in `spawn`).
static READY: AtomicU32 = AtomicU32::new(0);

/// A system call without `errno` (the helper must not write TLS while the program runs).
#[inline(always)]
fn sys6(n: i64, a: [usize; 6]) -> isize {
    let r: isize;
    // SAFETY: a raw system call; the kernel clobbers rcx and r11 only.
    unsafe {
        asm!("syscall", inlateout("rax") n as isize => r,
             in("rdi") a[0], in("rsi") a[1], in("rdx") a[2], in("r10") a[3], in("r8") a[4], in("r9") a[5],
             lateout("rcx") _, lateout("r11") _, options(nostack));
    }
    r
}

/// Sleeps `ns` (< 1 s) nanoseconds, without errno.
fn sleep_ns(ns: i64) {
    let ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: ns,
    };
    sys6(
        libc::SYS_nanosleep,
        [&ts as *const libc::timespec as usize, 0, 0, 0, 0, 0],
    );
}

const SYS_PIDFD_OPEN: i64 = 434;
const SYS_CLOSE_RANGE: i64 = 436;
const KCMP_VM: usize = 1;

/// The helper: waits for the program to end, then writes the final dump if nothing else did.
extern "C" fn helper(arg: *mut c_void) -> c_int {
    let pid = arg as usize;
    // Not CLONE_FILES: the helper got a copy of the program's descriptor table, and drops every entry at once,
    // so that it keeps no pipe open and the program never sees a descriptor of the helper's (its pidfd).
    if sys6(SYS_CLOSE_RANGE, [0, u32::MAX as usize, 0, 0, 0, 0]) < 0 {
        for fd in 0..4096 {
            sys6(libc::SYS_close, [fd, 0, 0, 0, 0, 0]);
        }
    }
    let name = b"heapledger-end\0";
    sys6(
        libc::SYS_prctl,
        [
            libc::PR_SET_NAME as usize,
            name.as_ptr() as usize,
            0,
            0,
            0,
            0,
        ],
    );
    let me = sys6(libc::SYS_getpid, [0; 6]) as usize;
    let pidfd = sys6(SYS_PIDFD_OPEN, [pid, 0, 0, 0, 0, 0]);
    READY.store(1, Ordering::Release);
    sys6(
        libc::SYS_futex,
        [
            READY.as_ptr() as usize,
            libc::FUTEX_WAKE as usize,
            1,
            0,
            0,
            0,
        ],
    );
    // Waits up to `ms` for the end; true once the program has ended.
    let ended = |ms: usize| -> bool {
        if pidfd >= 0 {
            let mut p = libc::pollfd {
                fd: pidfd as c_int,
                events: libc::POLLIN,
                revents: 0,
            };
            sys6(
                libc::SYS_poll,
                [&mut p as *mut libc::pollfd as usize, 1, ms, 0, 0, 0],
            ) == 1
        } else {
            // Without pidfds (Linux < 5.3): the helper is re-parented when the program ends.
            sleep_ns(100_000_000);
            sys6(libc::SYS_getppid, [0; 6]) as usize != pid
        }
    };
    // While the main thread lives, sleep on its tid word: the kernel clears it and wakes us as the thread exits
    // (its exit status is then readable in /proc even if the program's parent reaps it at once) or as the
    // program execs. Then, or without the word, wait for the whole program on the pidfd.
    let word = TID_WORD.load(Ordering::Acquire);
    let mut early = None;
    if !word.is_null() {
        let tid = MAIN_TID.load(Ordering::Relaxed);
        let second = libc::timespec {
            tv_sec: 1,
            tv_nsec: 0,
        };
        // SAFETY: the main thread's descriptor lives in this memory for as long as the program does.
        let alive = || unsafe { core::ptr::read_volatile(word) } == tid;
        while alive() {
            let ts = &second as *const libc::timespec as usize;
            sys6(
                libc::SYS_futex,
                [
                    word as usize,
                    libc::FUTEX_WAIT as usize,
                    tid as usize,
                    ts,
                    0,
                    0,
                ],
            );
            if alive() && moved_on(me, pid) {
                return 0;
            }
        }
        early = proc_stat(pid, STAT_EXIT_CODE).map(|v| v as i32);
        // Exiting (the thread has dropped its address space) or exec'ing (a new one appears within moments)?
        for _ in 0..200 {
            if moved_on(me, pid) {
                return 0;
            }
            if proc_stat(pid, STAT_VSIZE).is_none_or(|v| v == 0) {
                break;
            }
            sleep_ns(1_000_000);
        }
    }
    loop {
        if ended(1000) {
            break;
        }
        if moved_on(me, pid) {
            return 0;
        }
    }
    // The program has ended: its threads are gone and this memory is ours alone (TLS, errno, libc included).
    if crate::dump::FINAL_WRITTEN.load(Ordering::Acquire) {
        return 0;
    }
    let status = proc_stat(pid, STAT_EXIT_CODE)
        .map(|v| v as i32)
        .or_else(|| exit_code_of_reaped(pidfd))
        .or(early);
    if pidfd >= 0 {
        sys6(libc::SYS_close, [pidfd as usize, 0, 0, 0, 0, 0]);
    }
    let mut detail = [0u8; 160];
    let (reason, len) = describe(status, &mut detail);
    let ppid = WATCHED_PARENT.load(Ordering::Relaxed);
    crate::dump::write_after_end(
        pid as u32,
        ppid,
        reason,
        core::str::from_utf8(&detail[..len]).unwrap_or(""),
    );
    0
}

/// Whether the program has exec'd (an exec the hooks did not see): a live address space that is not ours. A
/// program whose main thread has exited shows none (the leader's) and is taken as still ours. The order matters:
/// an exiting leader drops its address space between the two reads, so "not ours" must be seen first and "there
/// is one" after.
fn moved_on(me: usize, pid: usize) -> bool {
    sys6(libc::SYS_kcmp, [me, pid, KCMP_VM, 0, 0, 0]) > 0
        && proc_stat(pid, STAT_VSIZE).is_some_and(|v| v > 0)
}

/// The wait status of a program its parent has already reaped (gone from /proc): Linux 6.15's
/// `PIDFD_GET_INFO` keeps it with the pidfd.
fn exit_code_of_reaped(pidfd: isize) -> Option<i32> {
    /// `struct pidfd_info`, version 0 (64 bytes).
    #[repr(C)]
    struct PidfdInfo {
        mask: u64,
        cgroupid: u64,
        ids: [u32; 11],
        exit_code: i32,
    }
    const PIDFD_INFO_EXIT: u64 = 1 << 3;
    /// `_IOWR(0xFF, 11, struct pidfd_info)`.
    const PIDFD_GET_INFO: usize = 0xC040_FF0B;
    if pidfd < 0 {
        return None;
    }
    let mut info = PidfdInfo {
        mask: PIDFD_INFO_EXIT,
        cgroupid: 0,
        ids: [0; 11],
        exit_code: 0,
    };
    let rc = sys6(
        libc::SYS_ioctl,
        [
            pidfd as usize,
            PIDFD_GET_INFO,
            &mut info as *mut PidfdInfo as usize,
            0,
            0,
            0,
        ],
    );
    (rc == 0 && info.mask & PIDFD_INFO_EXIT != 0).then_some(info.exit_code)
}

/// Fields of `/proc/<pid>/stat` (numbered as in proc(5)).
const STAT_VSIZE: usize = 23;
const STAT_EXIT_CODE: usize = 52;

/// Field `field` of `/proc/<pid>/stat`, read with raw system calls (the program may still be running).
fn proc_stat(pid: usize, field: usize) -> Option<u64> {
    let mut path = [0u8; 40];
    let mut n = 0;
    for part in [
        &b"/proc/"[..],
        crate::json::fmt_u64(pid as u64, &mut [0u8; 20]),
        b"/stat\0",
    ] {
        path[n..n + part.len()].copy_from_slice(part);
        n += part.len();
    }
    let fd = sys6(
        libc::SYS_open,
        [
            path.as_ptr() as usize,
            libc::O_RDONLY as usize | libc::O_CLOEXEC as usize,
            0,
            0,
            0,
            0,
        ],
    );
    if fd < 0 {
        return None;
    }
    let mut buf = [0u8; 1024];
    let len = sys6(
        libc::SYS_read,
        [fd as usize, buf.as_mut_ptr() as usize, buf.len(), 0, 0, 0],
    );
    sys6(libc::SYS_close, [fd as usize, 0, 0, 0, 0, 0]);
    let text = buf.get(..usize::try_from(len).ok()?)?;
    // The command name (field 2) may hold spaces and parentheses: count fields after the last ')'.
    let close = text.iter().rposition(|&b| b == b')')?;
    let value = text[close + 1..]
        .split(|&b| b == b' ')
        .filter(|f| !f.is_empty())
        .nth(field - 3)?;
    value
        .iter()
        .take_while(|b| b.is_ascii_digit())
        .try_fold(0u64, |acc, &b| {
            acc.checked_mul(10)?.checked_add(u64::from(b - b'0'))
        })
}

/// The dump's reason and detail for an end with wait status `status`.
fn describe(status: Option<i32>, out: &mut [u8]) -> (crate::dump::Reason, usize) {
    use crate::dump::Reason;
    let mut n = 0;
    let mut put = |s: &[u8]| {
        let k = s.len().min(out.len() - n);
        out[n..n + k].copy_from_slice(&s[..k]);
        n += k;
    };
    let reason = match status {
        Some(s) if s & 0x7f == 0 => {
            put(b"exit_group system call with status ");
            put(crate::json::fmt_u64(
                ((s >> 8) & 0xff) as u64,
                &mut [0u8; 20],
            ));
            put(b": no exit handler ran");
            Reason::ExitGroup
        }
        Some(s) => {
            put(b"killed by ");
            put(crate::platform::snapshot::signal_name(s & 0x7f).as_bytes());
            Reason::Killed
        }
        None => {
            put(b"ended without exit() (status not readable)");
            Reason::Killed
        }
    };
    (reason, n)
}
