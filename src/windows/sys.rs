//! Thin wrappers over the Win32 calls the tracer needs, with the API of `src/linux/sys.rs` so that the shared
//! code (table, dump, json, heap, config, errors) compiles unchanged.
//!
//! Rules: nothing here allocates from a program heap on a path a hook can reach (per-thread state lives in the
//! private heap, the environment is read into stack buffers), and `GetLastError()` is the tracer's "errno": the
//! hooks save and restore it around tracer work (see `hooks.rs`). File functions may allocate inside Win32
//! (path conversion); they run only from dumps, with the thread marked busy, so such blocks are internal.

use crate::thread::ThreadState;
use core::ffi::{c_int, c_void};
use core::sync::atomic::{AtomicI64, AtomicU32, AtomicUsize, Ordering};
use windows_sys::Win32::Foundation::{
    CloseHandle, GetLastError, SetLastError, ERROR_ACCESS_DENIED, ERROR_ALREADY_EXISTS,
    ERROR_DISK_FULL, ERROR_FILE_EXISTS, ERROR_FILE_NOT_FOUND, ERROR_HANDLE_DISK_FULL,
    ERROR_INVALID_NAME, ERROR_PATH_NOT_FOUND, ERROR_TOO_MANY_OPEN_FILES, ERROR_WRITE_PROTECT,
    FILETIME, HANDLE, INVALID_HANDLE_VALUE,
};
use windows_sys::Win32::Storage::FileSystem::{
    CreateFileW, DeleteFileW, MoveFileExW, WriteFile, CREATE_NEW, FILE_APPEND_DATA,
    FILE_ATTRIBUTE_NORMAL, FILE_FLAG_OPEN_REPARSE_POINT, FILE_SHARE_READ, FILE_SHARE_WRITE,
    MOVEFILE_REPLACE_EXISTING, OPEN_ALWAYS,
};
use windows_sys::Win32::System::Console::{GetStdHandle, STD_ERROR_HANDLE};
use windows_sys::Win32::System::Diagnostics::Debug::{
    AddVectoredExceptionHandler, EXCEPTION_POINTERS,
};
use windows_sys::Win32::System::Environment::{
    GetCommandLineW, GetCurrentDirectoryW, GetEnvironmentVariableW,
};
use windows_sys::Win32::System::LibraryLoader::GetModuleFileNameW;
use windows_sys::Win32::System::Memory::{
    VirtualAlloc, VirtualFree, MEM_COMMIT, MEM_RELEASE, MEM_RESERVE, PAGE_READWRITE,
};
use windows_sys::Win32::System::Performance::{QueryPerformanceCounter, QueryPerformanceFrequency};
use windows_sys::Win32::System::SystemInformation::GetSystemTimePreciseAsFileTime;
use windows_sys::Win32::System::Threading::{
    GetCurrentProcess, GetCurrentProcessId, GetCurrentThreadId, SwitchToThread, TlsAlloc,
    TlsSetValue, TLS_OUT_OF_INDEXES,
};

/// An open file: a kernel handle, which Windows guarantees fits in 32 bits (sign-extended), so the shared
/// writer (`json.rs`) can keep it in a `c_int`.
pub type Fd = c_int;

/// Platform name written in dumps.
pub const PLATFORM: &str = "windows-x86_64";

/// Path separator.
pub const SEP: u8 = b'\\';

// ---- per-thread state -----------------------------------------------------------------------------------------

/// The Windows per-thread record: the shared [`ThreadState`] first (so `thread::current()` can hand out a
/// pointer to it), then what only the Windows hooks need.
#[repr(C)]
pub struct WinThread {
    /// The shared state (busy flag, tid, sequence range, sampling).
    pub base: ThreadState,
    /// The heap handle the last internal ntdll call used: while a traced C runtime call runs, the thread is
    /// busy, so its nested `RtlAllocateHeap` is internal, and this tells which heap the runtime allocates from.
    pub nested_heap: usize,
    /// The releasing function of the free being judged (see `hooks::current_via`): attached to any error
    /// reported meanwhile. 0: none.
    pub via_fn: u32,
    /// Its heap handle or runtime index.
    pub via_key: usize,
    /// The cross-heap detail of the error being reported (`names::Detail`).
    pub via_detail: u32,
    /// One-entry cache: the last heap handle and its allocator family.
    pub last_heap: usize,
    /// Family of `last_heap`.
    pub last_family: u32,
    /// `counters::release` token to run when the thread exits (0: none).
    pub exit_token: usize,
}

static TLS_INDEX: AtomicU32 = AtomicU32::new(TLS_OUT_OF_INDEXES);

/// Used while a thread's record is being created (TlsSetValue may allocate for slots >= 64) and when the tracer
/// has no memory left: permanently busy, so hooks pass straight through. Never written by the hooks.
static mut OVERFLOW: WinThread = WinThread {
    base: ThreadState {
        busy: 1,
        tid: 0,
        seq_next: 0,
        seq_end: 0,
        sample_left: 0,
        stripe: 0,
        family_override: 0,
        rng: 0,
        override_size: 0,
        memos: 0,
        memo_busy: 0,
        reserved: 0,
        window: 0,
    },
    nested_heap: 0,
    via_fn: 0,
    via_key: 0,
    via_detail: 0,
    last_heap: 0,
    last_family: 0,
    exit_token: 0,
};

/// Threads creating their record right now (their ids): a hook re-entered meanwhile gets [`OVERFLOW`].
static CREATING: [AtomicU32; 16] = [const { AtomicU32::new(0) }; 16];

/// Allocates the TLS slot. Called once at start-up, before any hook is enabled.
pub fn init() -> bool {
    // SAFETY: plain Win32 calls.
    unsafe {
        let i = TlsAlloc();
        if i == TLS_OUT_OF_INDEXES {
            return false;
        }
        TLS_INDEX.store(i, Ordering::Release);
        let mut f = 0i64;
        QueryPerformanceFrequency(&mut f);
        QPC_FREQ.store(f.max(1), Ordering::Relaxed);
        // Commit-on-touch for reserved regions (see `map`).
        AddVectoredExceptionHandler(1, Some(commit_on_touch));
    }
    true
}

#[inline(always)]
fn teb() -> *const u8 {
    let teb: *const u8;
    // SAFETY: on x86-64 Windows (and Wine) gs:[0x30] holds the TEB's own address.
    unsafe {
        core::arch::asm!("mov {}, gs:[0x30]", out(reg) teb, options(nostack, readonly, preserves_flags))
    };
    teb
}

/// The value of TLS slot `i`, read straight from the TEB (TlsGetValue would reset GetLastError()).
#[inline(always)]
fn tls_get(i: u32) -> *mut c_void {
    let teb = teb();
    // SAFETY: TEB layout on x86-64: TlsSlots[64] at 0x1480, TlsExpansionSlots pointer at 0x1780.
    unsafe {
        if i < 64 {
            *(teb.add(0x1480 + 8 * i as usize) as *const *mut c_void)
        } else {
            let exp = *(teb.add(0x1780) as *const *const *mut c_void);
            if exp.is_null() {
                core::ptr::null_mut()
            } else {
                *exp.add(i as usize - 64)
            }
        }
    }
}

/// The calling thread's Windows record. Never null, never allocates from a program heap.
#[inline(always)]
pub fn win_thread() -> *mut WinThread {
    let i = TLS_INDEX.load(Ordering::Relaxed);
    let p = tls_get(i) as *mut WinThread;
    if !p.is_null() {
        return p;
    }
    create_thread_state(i)
}

/// The calling thread's tracer state.
#[inline(always)]
pub fn thread_state() -> *mut ThreadState {
    win_thread().cast()
}

#[cold]
fn create_thread_state(i: u32) -> *mut WinThread {
    let overflow = core::ptr::addr_of_mut!(OVERFLOW);
    if i == TLS_OUT_OF_INDEXES {
        return overflow;
    }
    // SAFETY: plain Win32 call.
    let tid = unsafe { GetCurrentThreadId() };
    if CREATING.iter().any(|c| c.load(Ordering::Relaxed) == tid) {
        return overflow;
    }
    let slot = loop {
        if let Some(s) = CREATING.iter().find(|c| {
            c.compare_exchange(0, tid, Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
        }) {
            break s;
        }
        yield_now();
    };
    let layout = core::alloc::Layout::new::<WinThread>();
    // SAFETY: non-zero size; zeroed memory is a valid initial WinThread (plain integers).
    let p = unsafe { alloc::alloc::alloc_zeroed(layout) } as *mut WinThread;
    let out = if p.is_null() {
        overflow
    } else {
        let e = errno();
        // SAFETY: our own slot.
        unsafe { TlsSetValue(i, p as *const c_void) };
        set_errno(e);
        p
    };
    slot.store(0, Ordering::Release);
    out
}

/// Releases the calling thread's record (DLL_THREAD_DETACH). A hook running later on this thread creates a
/// new one.
pub fn thread_exit() {
    let i = TLS_INDEX.load(Ordering::Relaxed);
    if i == TLS_OUT_OF_INDEXES {
        return;
    }
    let p = tls_get(i) as *mut WinThread;
    if p.is_null() {
        return;
    }
    let e = errno();
    // SAFETY: our slot; the record came from alloc_zeroed with this layout and nobody else holds it.
    unsafe {
        let token = (*p).exit_token;
        if token != 0 {
            crate::counters::release(token);
        }
        TlsSetValue(i, core::ptr::null());
        alloc::alloc::dealloc(p.cast(), core::alloc::Layout::new::<WinThread>());
    }
    set_errno(e);
}

/// Arranges for `crate::counters::release(token)` to run when the calling thread exits (from DllMain's
/// DLL_THREAD_DETACH). False if it cannot be arranged (the thread has no record of its own).
pub fn on_thread_exit_release(token: usize) -> bool {
    let t = win_thread();
    if t == core::ptr::addr_of_mut!(OVERFLOW) {
        return false;
    }
    // SAFETY: the calling thread's own record.
    unsafe { (*t).exit_token = token };
    true
}

/// Whether the address space is limited (Linux's `ulimit -v`); Windows has no per-process equivalent that the
/// tracer's reservations would eat into, so the full-size stack store is reserved.
pub fn address_space_limited() -> bool {
    false
}

/// Gives the CPU to another thread.
pub fn yield_now() {
    // SAFETY: no preconditions.
    unsafe { SwitchToThread() };
}

// ---- strings ---------------------------------------------------------------------------------------------------

/// Converts NUL-terminated-or-not UTF-16 to UTF-8 into `out`; returns the length (unpaired surrogates become
/// U+FFFD). Never allocates.
pub fn utf16_to_utf8(w: &[u16], out: &mut [u8]) -> usize {
    let mut n = 0;
    for c in core::char::decode_utf16(w.iter().copied().take_while(|&c| c != 0)) {
        let c = c.unwrap_or(char::REPLACEMENT_CHARACTER);
        let mut b = [0u8; 4];
        let s = c.encode_utf8(&mut b).as_bytes();
        if n + s.len() > out.len() {
            break;
        }
        out[n..n + s.len()].copy_from_slice(s);
        n += s.len();
    }
    n
}

/// Converts UTF-8 (stopping at a NUL) to NUL-terminated UTF-16 in `out`; returns false if it does not fit.
pub fn utf8_to_utf16(s: &[u8], out: &mut [u16]) -> bool {
    let s = &s[..s.iter().position(|&c| c == 0).unwrap_or(s.len())];
    let mut n = 0;
    let text = match core::str::from_utf8(s) {
        Ok(t) => t,
        Err(e) => {
            // Keep the valid prefix: a path is never invalid UTF-8 here (it came from UTF-16).
            // SAFETY: valid_up_to marks a valid boundary.
            unsafe { core::str::from_utf8_unchecked(&s[..e.valid_up_to()]) }
        }
    };
    for u in text.encode_utf16() {
        if n + 1 >= out.len() {
            return false;
        }
        out[n] = u;
        n += 1;
    }
    if n >= out.len() {
        return false;
    }
    out[n] = 0;
    true
}

const ENV_BUFS: usize = 8;
const ENV_LEN: usize = 4096;
static mut ENV: [[u8; ENV_LEN]; ENV_BUFS] = [[0; ENV_LEN]; ENV_BUFS];
static ENV_NEXT: AtomicUsize = AtomicUsize::new(0);

/// An environment variable as UTF-8, read without allocating. The value lives in one of 8 rotating static
/// buffers: callers (start-up only) copy or parse it at once.
pub fn getenv(name: &core::ffi::CStr) -> Option<&'static [u8]> {
    let mut wname = [0u16; 128];
    if !utf8_to_utf16(name.to_bytes(), &mut wname) {
        return None;
    }
    let mut w = [0u16; ENV_LEN];
    // SAFETY: both buffers are valid for the lengths given.
    let n =
        unsafe { GetEnvironmentVariableW(wname.as_ptr(), w.as_mut_ptr(), w.len() as u32) } as usize;
    if n == 0 || n >= w.len() {
        return None;
    }
    let k = ENV_NEXT.fetch_add(1, Ordering::Relaxed) % ENV_BUFS;
    // SAFETY: rotating buffers, used at start-up by one thread.
    let buf = unsafe { &mut (*core::ptr::addr_of_mut!(ENV))[k] };
    let len = utf16_to_utf8(&w[..n], buf);
    Some(&buf[..len])
}

/// Writes the working directory into `buf` as UTF-8 (NUL-terminated); returns its length, 0 on failure.
pub fn getcwd(buf: &mut [u8]) -> usize {
    let mut w = [0u16; 4096];
    // SAFETY: the buffer is valid for its length.
    let n = unsafe { GetCurrentDirectoryW(w.len() as u32, w.as_mut_ptr()) } as usize;
    if n == 0 || n >= w.len() || buf.is_empty() {
        return 0;
    }
    let last = buf.len() - 1;
    let len = utf16_to_utf8(&w[..n], &mut buf[..last]);
    buf[len] = 0;
    len
}

/// True if absolute: `C:\…`, `C:/…`, `\\server\…`, or rooted (`\…`, `/…`, relative to the current drive).
pub fn is_absolute(path: &[u8]) -> bool {
    match path {
        [b'\\' | b'/', ..] => true,
        [d, b':', b'\\' | b'/', ..] => d.is_ascii_alphabetic(),
        _ => false,
    }
}

// ---- clocks ------------------------------------------------------------------------------------------------------

static QPC_FREQ: AtomicI64 = AtomicI64::new(1);

/// A monotonic clock in nanoseconds (QueryPerformanceCounter).
pub fn monotonic_ns() -> u64 {
    let mut c = 0i64;
    // SAFETY: valid out-pointer.
    unsafe { QueryPerformanceCounter(&mut c) };
    let f = QPC_FREQ.load(Ordering::Relaxed) as i128;
    ((c as i128 * 1_000_000_000) / f) as u64
}

/// Wall-clock time in nanoseconds since the Unix epoch.
pub fn realtime_ns() -> u64 {
    let mut ft = FILETIME {
        dwLowDateTime: 0,
        dwHighDateTime: 0,
    };
    // SAFETY: valid out-pointer.
    unsafe { GetSystemTimePreciseAsFileTime(&mut ft) };
    let t = ((ft.dwHighDateTime as u64) << 32) | ft.dwLowDateTime as u64;
    // FILETIME counts 100 ns from 1601-01-01.
    t.saturating_sub(116_444_736_000_000_000) * 100
}

// ---- files -------------------------------------------------------------------------------------------------------

fn wide_path(path: &[u8], out: &mut [u16; 4200]) -> bool {
    utf8_to_utf16(path, out)
}

fn to_fd(h: HANDLE) -> Fd {
    h as isize as c_int
}

fn to_handle(fd: Fd) -> HANDLE {
    fd as isize as HANDLE
}

/// Creates `path` (UTF-8, NUL-terminated) exclusively (CREATE_NEW, no sharing, never through a reparse point);
/// a stale file of the same name is deleted and the creation retried. Returns the Win32 error on failure.
pub fn create_exclusive(path: &[u8]) -> Result<Fd, c_int> {
    let mut w = [0u16; 4200];
    if !wide_path(path, &mut w) {
        return Err(ERROR_INVALID_NAME as c_int);
    }
    let open = || {
        // SAFETY: NUL-terminated wide path.
        unsafe {
            CreateFileW(
                w.as_ptr(),
                windows_sys::Win32::Foundation::GENERIC_WRITE,
                0,
                core::ptr::null(),
                CREATE_NEW,
                FILE_ATTRIBUTE_NORMAL | FILE_FLAG_OPEN_REPARSE_POINT,
                core::ptr::null_mut(),
            )
        }
    };
    let mut h = open();
    if h == INVALID_HANDLE_VALUE {
        let e = errno() as u32;
        if e == ERROR_FILE_EXISTS || e == ERROR_ALREADY_EXISTS {
            // SAFETY: NUL-terminated wide path.
            unsafe { DeleteFileW(w.as_ptr()) };
            h = open();
        }
    }
    if h == INVALID_HANDLE_VALUE {
        Err(errno())
    } else {
        Ok(to_fd(h))
    }
}

/// Closes a file.
pub fn close(fd: Fd) {
    // SAFETY: a handle we opened.
    unsafe { CloseHandle(to_handle(fd)) };
}

/// Removes a file (UTF-8, NUL-terminated path).
pub fn remove(path: &[u8]) {
    let mut w = [0u16; 4200];
    if wide_path(path, &mut w) {
        // SAFETY: NUL-terminated wide path.
        unsafe { DeleteFileW(w.as_ptr()) };
    }
}

/// Renames `from` over `to` (MoveFileExW with MOVEFILE_REPLACE_EXISTING: atomic on one volume).
pub fn rename(from: &[u8], to: &[u8]) -> Result<(), c_int> {
    let mut a = [0u16; 4200];
    let mut b = [0u16; 4200];
    if !wide_path(from, &mut a) || !wide_path(to, &mut b) {
        return Err(ERROR_INVALID_NAME as c_int);
    }
    // SAFETY: NUL-terminated wide paths.
    if unsafe { MoveFileExW(a.as_ptr(), b.as_ptr(), MOVEFILE_REPLACE_EXISTING) } == 0 {
        Err(errno())
    } else {
        Ok(())
    }
}

/// Appends `line` to `path` with one WriteFile on a handle opened for FILE_APPEND_DATA only, so lines of
/// concurrent processes never interleave.
pub fn append(path: &[u8], line: &[u8]) {
    let mut w = [0u16; 4200];
    if !wide_path(path, &mut w) {
        return;
    }
    // SAFETY: NUL-terminated wide path.
    let h = unsafe {
        CreateFileW(
            w.as_ptr(),
            FILE_APPEND_DATA,
            FILE_SHARE_READ | FILE_SHARE_WRITE,
            core::ptr::null(),
            OPEN_ALWAYS,
            FILE_ATTRIBUTE_NORMAL,
            core::ptr::null_mut(),
        )
    };
    if h != INVALID_HANDLE_VALUE {
        write_all(to_fd(h), line);
        // SAFETY: opened above.
        unsafe { CloseHandle(h) };
    }
}

/// The executable's path (UTF-8) into `buf`; returns its length.
pub fn exe_path(buf: &mut [u8]) -> usize {
    let mut w = [0u16; 4096];
    // SAFETY: valid buffer.
    let n = unsafe { GetModuleFileNameW(core::ptr::null_mut(), w.as_mut_ptr(), w.len() as u32) }
        as usize;
    utf16_to_utf8(&w[..n.min(w.len())], buf)
}

/// The command line split the way the C runtime splits it (CommandLineToArgvW's rules), arguments separated by
/// NUL bytes (no trailing NUL); returns its length. Parsed here: CommandLineToArgvW allocates.
pub fn cmdline(buf: &mut [u8]) -> usize {
    // SAFETY: GetCommandLineW returns the process's NUL-terminated command line.
    let p = unsafe { GetCommandLineW() };
    if p.is_null() {
        return 0;
    }
    let mut len = 0;
    // SAFETY: NUL-terminated.
    while unsafe { *p.add(len) } != 0 {
        len += 1;
    }
    // SAFETY: len units before the NUL.
    let w = unsafe { core::slice::from_raw_parts(p, len) };
    split_command_line(w, buf)
}

/// Splits a Windows command line (see [`cmdline`]).
pub fn split_command_line(w: &[u16], buf: &mut [u8]) -> usize {
    let mut n = 0usize;
    let mut push = |c: u16, n: &mut usize| {
        let mut tmp = [0u8; 4];
        let s = char::from_u32(c as u32)
            .unwrap_or(char::REPLACEMENT_CHARACTER)
            .encode_utf8(&mut tmp);
        if *n + s.len() <= buf.len() {
            buf[*n..*n + s.len()].copy_from_slice(s.as_bytes());
            *n += s.len();
        }
    };
    let q = b'"' as u16;
    let bs = b'\\' as u16;
    let ws = |c: u16| c == b' ' as u16 || c == b'\t' as u16;
    let mut i = 0;
    // argv[0]: up to the next blank, quotes toggle and are dropped, no backslash rules.
    let mut quoted = false;
    while i < w.len() && (quoted || !ws(w[i])) {
        if w[i] == q {
            quoted = !quoted;
        } else {
            push(w[i], &mut n);
        }
        i += 1;
    }
    loop {
        while i < w.len() && ws(w[i]) {
            i += 1;
        }
        if i >= w.len() {
            break;
        }
        push(0, &mut n);
        let mut quoted = false;
        while i < w.len() && (quoted || !ws(w[i])) {
            if w[i] == bs {
                let mut k = 0;
                while i < w.len() && w[i] == bs {
                    k += 1;
                    i += 1;
                }
                if i < w.len() && w[i] == q {
                    for _ in 0..k / 2 {
                        push(bs, &mut n);
                    }
                    if k % 2 == 1 {
                        push(q, &mut n);
                        i += 1;
                    }
                } else {
                    for _ in 0..k {
                        push(bs, &mut n);
                    }
                }
            } else if w[i] == q {
                if quoted && i + 1 < w.len() && w[i + 1] == q {
                    push(q, &mut n);
                    i += 2;
                } else {
                    quoted = !quoted;
                    i += 1;
                }
            } else {
                push(w[i], &mut n);
                i += 1;
            }
        }
    }
    n
}

/// A short description of a Win32 error from the file functions above.
pub fn error_name(e: c_int) -> &'static [u8] {
    match e as u32 {
        ERROR_ACCESS_DENIED => b"access denied",
        ERROR_PATH_NOT_FOUND | ERROR_FILE_NOT_FOUND => b"no such directory",
        ERROR_DISK_FULL | ERROR_HANDLE_DISK_FULL => b"no space left on device",
        ERROR_WRITE_PROTECT => b"write-protected medium",
        ERROR_TOO_MANY_OPEN_FILES => b"too many open files",
        ERROR_FILE_EXISTS | ERROR_ALREADY_EXISTS => b"temporary file exists",
        ERROR_INVALID_NAME => b"invalid file name",
        _ => b"write error",
    }
}

// ---- ids ------------------------------------------------------------------------------------------------------

/// Thread id of the caller.
pub fn gettid() -> u32 {
    // SAFETY: no preconditions.
    unsafe { GetCurrentThreadId() }
}

/// Process id.
pub fn getpid() -> u32 {
    // SAFETY: no preconditions.
    unsafe { GetCurrentProcessId() }
}

/// Parent process id (from NtQueryInformationProcess), 0 when unknown.
pub fn getppid() -> u32 {
    #[repr(C)]
    struct Basic {
        exit_status: isize,
        peb: usize,
        affinity: usize,
        priority: isize,
        pid: usize,
        parent: usize,
    }
    type Query = unsafe extern "system" fn(HANDLE, u32, *mut c_void, u32, *mut u32) -> i32;
    let Some(f) = proc_address(c"ntdll.dll", c"NtQueryInformationProcess") else {
        return 0;
    };
    // SAFETY: the documented signature; ProcessBasicInformation (0) fills `Basic`.
    unsafe {
        let f: Query = core::mem::transmute(f);
        let mut b: Basic = core::mem::zeroed();
        let mut len = 0u32;
        if f(
            GetCurrentProcess(),
            0,
            (&mut b as *mut Basic).cast(),
            core::mem::size_of::<Basic>() as u32,
            &mut len,
        ) != 0
        {
            return 0;
        }
        b.parent as u32
    }
}

/// The address of an export of an already loaded module.
pub fn proc_address(module: &core::ffi::CStr, name: &core::ffi::CStr) -> Option<usize> {
    use windows_sys::Win32::System::LibraryLoader::{GetModuleHandleW, GetProcAddress};
    let mut w = [0u16; 64];
    if !utf8_to_utf16(module.to_bytes(), &mut w) {
        return None;
    }
    // SAFETY: NUL-terminated names; the wide and ordinal-free forms do not allocate.
    unsafe {
        let m = GetModuleHandleW(w.as_ptr());
        if m.is_null() {
            return None;
        }
        GetProcAddress(m, name.as_ptr().cast()).map(|f| f as usize)
    }
}

// ---- I/O -----------------------------------------------------------------------------------------------------

/// Writes all of `buf` to `fd`. Returns false on any error.
pub fn write_all(fd: c_int, mut buf: &[u8]) -> bool {
    let h = to_handle(fd);
    while !buf.is_empty() {
        let chunk = buf.len().min(1 << 30) as u32;
        let mut written = 0u32;
        // SAFETY: `buf` is readable for `chunk` bytes.
        if unsafe { WriteFile(h, buf.as_ptr(), chunk, &mut written, core::ptr::null_mut()) } == 0
            || written == 0
        {
            return false;
        }
        buf = &buf[written as usize..];
    }
    true
}

/// The calling thread's last Win32 error (the tracer's errno).
pub fn errno() -> c_int {
    // SAFETY: no preconditions.
    unsafe { GetLastError() as c_int }
}

/// Sets the calling thread's last Win32 error (hooks restore the program's value around tracer work).
pub fn set_errno(e: c_int) {
    // SAFETY: no preconditions.
    unsafe { SetLastError(e as u32) }
}

/// Writes one line to stderr, ignoring failures.
pub fn eprint(parts: &[&[u8]]) {
    let mut buf = [0u8; 1024];
    let mut n = 0;
    for p in parts {
        let take = p.len().min(buf.len() - 1 - n);
        buf[n..n + take].copy_from_slice(&p[..take]);
        n += take;
    }
    buf[n] = b'\n';
    let e = errno();
    // SAFETY: plain call.
    let h = unsafe { GetStdHandle(STD_ERROR_HANDLE) };
    if !h.is_null() && h != INVALID_HANDLE_VALUE {
        let _ = write_all(to_fd(h), &buf[..=n]);
    }
    set_errno(e);
}

/// Formats `v` as `0x…` lowercase hex into `buf`, returning the text.
pub fn fmt_hex(v: u64, buf: &mut [u8; 18]) -> &[u8] {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut i = buf.len();
    let mut v = v;
    loop {
        i -= 1;
        buf[i] = HEX[(v & 15) as usize];
        v >>= 4;
        if v == 0 {
            break;
        }
    }
    i -= 1;
    buf[i] = b'x';
    i -= 1;
    buf[i] = b'0';
    &buf[i..]
}

// ---- memory ------------------------------------------------------------------------------------------------------

/// Reserved-but-uncommitted regions (`map(.., noreserve = true)`): [start, end) pairs. Touching them commits
/// 64 KiB at a time from a vectored exception handler, the Windows equivalent of MAP_NORESERVE (committing the
/// intern arena's 1 GiB up front would charge it against the system commit limit).
const MAX_RESERVED: usize = 16;
static RESERVED: [[AtomicUsize; 2]; MAX_RESERVED] =
    [const { [AtomicUsize::new(0), AtomicUsize::new(0)] }; MAX_RESERVED];

unsafe extern "system" fn commit_on_touch(info: *mut EXCEPTION_POINTERS) -> i32 {
    const CONTINUE_SEARCH: i32 = 0;
    const CONTINUE_EXECUTION: i32 = -1;
    // SAFETY: the system passes a valid record.
    let rec = unsafe { &*(*info).ExceptionRecord };
    if rec.ExceptionCode != windows_sys::Win32::Foundation::EXCEPTION_ACCESS_VIOLATION
        || rec.NumberParameters < 2
    {
        return CONTINUE_SEARCH;
    }
    let addr = rec.ExceptionInformation[1];
    for r in &RESERVED {
        let (start, end) = (r[0].load(Ordering::Acquire), r[1].load(Ordering::Acquire));
        if start != 0 && addr >= start && addr < end {
            let page = addr & !0xffff;
            let len = (end - page).min(0x10000);
            // SAFETY: inside a region we reserved.
            let ok = unsafe {
                !VirtualAlloc(page as *const c_void, len, MEM_COMMIT, PAGE_READWRITE).is_null()
            };
            return if ok {
                CONTINUE_EXECUTION
            } else {
                CONTINUE_SEARCH
            };
        }
    }
    CONTINUE_SEARCH
}

/// Private memory from VirtualAlloc; null on failure. Never touches a program heap. `noreserve`: address space
/// only, committed on first touch.
pub fn map(len: usize, noreserve: bool) -> *mut u8 {
    if noreserve {
        // SAFETY: a fresh reservation.
        let p =
            unsafe { VirtualAlloc(core::ptr::null(), len, MEM_RESERVE, PAGE_READWRITE) } as usize;
        if p != 0 {
            for r in &RESERVED {
                if r[0]
                    .compare_exchange(0, usize::MAX, Ordering::AcqRel, Ordering::Relaxed)
                    .is_ok()
                {
                    r[1].store(p + len, Ordering::Release);
                    r[0].store(p, Ordering::Release);
                    return p as *mut u8;
                }
            }
            // No room to track it: commit it all after all.
            // SAFETY: the reservation made above.
            unsafe {
                if VirtualAlloc(p as *const c_void, len, MEM_COMMIT, PAGE_READWRITE).is_null() {
                    VirtualFree(p as *mut c_void, 0, MEM_RELEASE);
                    return core::ptr::null_mut();
                }
            }
        }
        return p as *mut u8;
    }
    // SAFETY: a fresh allocation.
    unsafe {
        VirtualAlloc(
            core::ptr::null(),
            len,
            MEM_RESERVE | MEM_COMMIT,
            PAGE_READWRITE,
        ) as *mut u8
    }
}

/// Size of an x86-64 huge page.
pub const HUGE_PAGE: usize = 2 << 20;

/// As [`map`]: huge pages need a privilege on Windows that a traced program rarely has.
pub fn map_huge_aligned(len: usize, noreserve: bool) -> *mut u8 {
    map(len, noreserve)
}

/// Nothing on Windows (see [`map_huge_aligned`]).
pub fn collapse_huge(_p: *mut u8, _len: usize) {}

/// Returns memory obtained from [`map`].
pub fn unmap(p: *mut u8, _len: usize) {
    for r in &RESERVED {
        if r[0].load(Ordering::Acquire) == p as usize {
            r[0].store(0, Ordering::Release);
        }
    }
    // SAFETY: the caller passes a region it got from `map`.
    unsafe { VirtualFree(p.cast(), 0, MEM_RELEASE) };
}
