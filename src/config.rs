//! Settings read once from the environment when the tracer initialises.
//!
//! | variable | meaning | default |
//! |---|---|---|
//! | `HEAPLEDGER_OUT` | dump path pattern: `%p` pid, `%n` snapshot number, `%%` a percent sign | `heapledger.%p.json` |
//! | `HEAPLEDGER_DEPTH` | frames recorded per allocation stack (0: no stacks) | 32 |
//! | `HEAPLEDGER_FREE_DEPTH` | frames recorded per free (shown for double frees) | 16 |
//! | `HEAPLEDGER_MANIFEST` | a file to which the path of each dump written is appended | none |
//! | `HEAPLEDGER_SAMPLE` | Poisson sampling: one recorded allocation per N bytes on average (0: all) | 0 |
//! | `HEAPLEDGER_INTERVAL` | seconds between periodic snapshots (0: none) | 0 |
//! | `HEAPLEDGER_SIGNAL` | signal that requests a snapshot (`USR1`, `USR2`, or a number) | none |
//! | `HEAPLEDGER_VERBOSE` | 1: print one line per heap error as it happens | 0 |
//! | `HEAPLEDGER_KEEP` | with `%n` in the pattern: keep only the last N periodic/signal snapshots | 0 (all) |
//! | `HEAPLEDGER_CRASH` | 0: no crash dump on SIGSEGV/SIGBUS/SIGFPE/SIGILL/SIGABRT | 1 |
//! | `HEAPLEDGER_REACH` | 0: skip the reachability scan at exit (leak classes stay 0, "not scanned") | 1 |
//! | `HEAPLEDGER_WATCH` | final dump when the program ends without `exit()` (raw `exit_group`, SIGKILL): 1 always, 0 never, 2 cgo programs only | 2 |
//!
//! Relative output paths are made absolute against the working directory at start-up, so a program that
//! `chdir`s (daemons do) still writes where the user looked.

use core::sync::atomic::{AtomicU32, AtomicU64, Ordering};

/// Maximum stack depth recorded, whatever the setting.
pub const MAX_DEPTH: usize = 128;
const PATH_MAX: usize = 4096;

/// The output pattern, NUL-terminated, absolute.
pub static mut OUT: [u8; PATH_MAX] = [0; PATH_MAX];
/// The manifest path, NUL-terminated, or empty.
pub static mut MANIFEST: [u8; PATH_MAX] = [0; PATH_MAX];
/// Allocation stack depth.
pub static DEPTH: AtomicU32 = AtomicU32::new(32);
/// Free stack depth.
pub static FREE_DEPTH: AtomicU32 = AtomicU32::new(16);
/// Sampling interval in bytes (0 = record everything).
pub static SAMPLE: AtomicU64 = AtomicU64::new(0);
/// Snapshot period in milliseconds (0 = none).
pub static INTERVAL_MS: AtomicU64 = AtomicU64::new(0);
/// Snapshot signal number (0 = none).
pub static SIGNAL: AtomicU32 = AtomicU32::new(0);
/// Periodic/signal snapshots to keep (0: all).
pub static KEEP: AtomicU32 = AtomicU32::new(0);
/// Write a crash dump on fatal signals.
pub static CRASH: AtomicU32 = AtomicU32::new(1);
/// `HEAPLEDGER_WATCH`: 0 never, 1 always, 2 cgo programs (see `platform::watch`).
pub static WATCH: AtomicU32 = AtomicU32::new(2);
/// Classify live blocks by reachability in the final dump.
pub static REACH: AtomicU32 = AtomicU32::new(1);
/// Print errors as they happen.
pub static VERBOSE: AtomicU32 = AtomicU32::new(0);

fn env(name: &core::ffi::CStr) -> Option<&'static [u8]> {
    crate::sys::getenv(name)
}

fn parse_u64(s: &[u8]) -> Option<u64> {
    if s.is_empty() {
        return None;
    }
    let mut v: u64 = 0;
    for &c in s {
        if !c.is_ascii_digit() {
            return None;
        }
        v = v.checked_mul(10)?.checked_add((c - b'0') as u64)?;
    }
    Some(v)
}

/// Parses a size such as `524288`, `512KiB`, `512k`, `1MiB`, `1m`.
pub fn parse_size(s: &[u8]) -> Option<u64> {
    let digits = s.iter().take_while(|c| c.is_ascii_digit()).count();
    let n = parse_u64(&s[..digits])?;
    let mult = match &s[digits..] {
        b"" | b"B" | b"b" => 1,
        b"k" | b"K" | b"KiB" | b"kiB" | b"KB" | b"kb" => 1024,
        b"m" | b"M" | b"MiB" | b"MB" | b"mb" => 1 << 20,
        b"g" | b"G" | b"GiB" | b"GB" | b"gb" => 1 << 30,
        _ => return None,
    };
    n.checked_mul(mult)
}

/// Parses a signal name (`USR2`, `SIGUSR2`) or number.
#[cfg(unix)]
pub fn parse_signal(s: &[u8]) -> Option<u32> {
    if let Some(n) = parse_u64(s) {
        return (n > 0 && n < 65).then_some(n as u32);
    }
    let s = s.strip_prefix(b"SIG").unwrap_or(s);
    Some(match s {
        b"USR1" => libc::SIGUSR1,
        b"USR2" => libc::SIGUSR2,
        b"HUP" => libc::SIGHUP,
        b"PROF" => libc::SIGPROF,
        b"WINCH" => libc::SIGWINCH,
        b"URG" => libc::SIGURG,
        _ => return None,
    } as u32)
}

fn copy_path(dst: &mut [u8; PATH_MAX], src: &[u8], absolute: bool) {
    let mut n = 0;
    if absolute && !crate::sys::is_absolute(src) {
        n = crate::sys::getcwd(&mut dst[..]);
        if n > 0 && dst[n - 1] != crate::sys::SEP && n < PATH_MAX - 1 {
            dst[n] = crate::sys::SEP;
            n += 1;
        }
    }
    let take = src.len().min(PATH_MAX - 1 - n);
    dst[n..n + take].copy_from_slice(&src[..take]);
    dst[n + take] = 0;
}

/// Reads the environment. Called once, by the thread that resolves the real functions.
pub fn load() {
    // SAFETY: called once during initialisation, before any reader (readers run after READY is published).
    unsafe {
        copy_path(
            &mut *core::ptr::addr_of_mut!(OUT),
            env(c"HEAPLEDGER_OUT").unwrap_or(b"heapledger.%p.json"),
            true,
        );
        if let Some(m) = env(c"HEAPLEDGER_MANIFEST") {
            copy_path(&mut *core::ptr::addr_of_mut!(MANIFEST), m, true);
        }
    }
    if let Some(d) = env(c"HEAPLEDGER_DEPTH").and_then(parse_u64) {
        DEPTH.store(d.min(MAX_DEPTH as u64) as u32, Ordering::Relaxed);
    }
    let depth = DEPTH.load(Ordering::Relaxed);
    FREE_DEPTH.store(depth.min(16), Ordering::Relaxed);
    if let Some(d) = env(c"HEAPLEDGER_FREE_DEPTH").and_then(parse_u64) {
        FREE_DEPTH.store(d.min(MAX_DEPTH as u64) as u32, Ordering::Relaxed);
    }
    if let Some(s) = env(c"HEAPLEDGER_SAMPLE").and_then(parse_size) {
        SAMPLE.store(s, Ordering::Relaxed);
    }
    if let Some(s) = env(c"HEAPLEDGER_INTERVAL") {
        // Seconds, fractions allowed ("0.2") so tests can run in a moment.
        let (int, frac) = match s.iter().position(|&c| c == b'.') {
            Some(i) => (&s[..i], &s[i + 1..]),
            None => (s, &b""[..]),
        };
        let secs = if int.is_empty() {
            Some(0)
        } else {
            parse_u64(int)
        };
        let mut ms = secs.unwrap_or(0).saturating_mul(1000);
        let mut scale = 100;
        for &c in frac.iter().take(3) {
            if c.is_ascii_digit() {
                ms += (c - b'0') as u64 * scale;
                scale /= 10;
            }
        }
        INTERVAL_MS.store(ms, Ordering::Relaxed);
    }
    #[cfg(unix)]
    if let Some(s) = env(c"HEAPLEDGER_SIGNAL").and_then(parse_signal) {
        SIGNAL.store(s, Ordering::Relaxed);
    }
    if let Some(v) = env(c"HEAPLEDGER_KEEP").and_then(parse_u64) {
        KEEP.store(v.min(u32::MAX as u64) as u32, Ordering::Relaxed);
    }
    if let Some(v) = env(c"HEAPLEDGER_CRASH").and_then(parse_u64) {
        CRASH.store(v as u32, Ordering::Relaxed);
    }
    if let Some(v) = env(c"HEAPLEDGER_WATCH").and_then(parse_u64) {
        WATCH.store(v.min(2) as u32, Ordering::Relaxed);
    }
    if let Some(v) = env(c"HEAPLEDGER_REACH").and_then(parse_u64) {
        REACH.store(v as u32, Ordering::Relaxed);
    }
    if let Some(v) = env(c"HEAPLEDGER_VERBOSE").and_then(parse_u64) {
        VERBOSE.store(v as u32, Ordering::Relaxed);
    }
}

/// The output pattern as bytes (without the NUL).
pub fn out_pattern() -> &'static [u8] {
    // SAFETY: written once during init, read-only afterwards.
    let out = unsafe { &*core::ptr::addr_of!(OUT) };
    &out[..out.iter().position(|&c| c == 0).unwrap_or(0)]
}

/// The manifest path (without the NUL), empty when unset.
pub fn manifest() -> &'static [u8] {
    // SAFETY: written once during init, read-only afterwards.
    let m = unsafe { &*core::ptr::addr_of!(MANIFEST) };
    &m[..m.iter().position(|&c| c == 0).unwrap_or(0)]
}
