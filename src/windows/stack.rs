//! Call-stack capture on Windows: `RtlCaptureStackBackTrace`, which unwinds with the x64 unwind tables
//! (`.pdata`/`.xdata`) that every x64 PE module has, MSVC- and mingw-built alike (frame pointers are not
//! needed). The tracer's own frames, and the thin `kernel32`/`kernelbase` wrappers the program called
//! (`HeapFree`, `LocalAlloc`, ...), are dropped from the top, so a stack starts at the program's call site.
//!
//! Measured under Wine 8 (see docs/windows.md): a 10-frame stack costs about the same as the allocation itself
//! several times over; there is no cache like the Linux unwinder's yet.

use core::ffi::c_void;
use core::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use windows_sys::Win32::System::Diagnostics::Debug::RtlCaptureStackBackTrace;

/// Not used on Windows (no rule cache); kept for the dump's `unwind_cache_misses`.
pub static MISSES: AtomicU64 = AtomicU64::new(0);

/// Address ranges whose frames are dropped from the top of a stack: this DLL, kernel32, kernelbase.
static SKIP: [[AtomicUsize; 2]; 3] = [const { [AtomicUsize::new(0), AtomicUsize::new(0)] }; 3];

/// Records the ranges of the modules whose leading frames are skipped. Start-up.
pub fn init() {
    let own = super::modules::image_range(super::lifecycle::own_module());
    let k32 = super::modules::image_range(super::modules::module_handle("kernel32.dll"));
    let kb = super::modules::image_range(super::modules::module_handle("kernelbase.dll"));
    for (slot, r) in SKIP.iter().zip([own, k32, kb]) {
        if let Some((lo, hi)) = r {
            slot[0].store(lo, Ordering::Relaxed);
            slot[1].store(hi, Ordering::Relaxed);
        }
    }
}

/// The tracer's own range.
pub fn self_range() -> (u64, u64) {
    (
        SKIP[0][0].load(Ordering::Relaxed) as u64,
        SKIP[0][1].load(Ordering::Relaxed) as u64,
    )
}

#[inline(always)]
fn skipped(pc: usize) -> bool {
    SKIP.iter()
        .any(|r| pc >= r[0].load(Ordering::Relaxed) && pc < r[1].load(Ordering::Relaxed))
}

/// Nothing is cached.
pub fn invalidate() {}

/// True if `addr` lies inside a loaded module (a global or static, for invalid-free reports).
pub fn in_module(addr: u64) -> bool {
    super::modules::containing(addr as usize).is_some()
}

/// There is no dynamic loader module to recognise on Windows.
pub fn in_loader(_pc: u64) -> bool {
    false
}

/// Result of a stack walk.
pub struct Walk {
    /// Frames written to the output.
    pub len: usize,
    /// The walk stopped at the depth limit while frames remained.
    pub truncated: bool,
}

const EXTRA: usize = 24;

/// Records the calling thread's return addresses, innermost first, without the tracer's frames (nor the
/// kernel32/kernelbase wrappers right above them).
#[inline(never)]
pub fn walk(out: &mut [u64]) -> Walk {
    let mut buf = [core::ptr::null_mut::<c_void>(); crate::config::MAX_DEPTH + EXTRA];
    let want = (out.len() + EXTRA).min(buf.len());
    // SAFETY: the buffer holds `want` entries.
    let n = unsafe {
        RtlCaptureStackBackTrace(0, want as u32, buf.as_mut_ptr(), core::ptr::null_mut())
    } as usize;
    let mut first = 0;
    while first < n && skipped(buf[first] as usize) {
        first += 1;
    }
    let avail = n - first;
    let len = avail.min(out.len());
    for i in 0..len {
        out[i] = buf[first + i] as u64;
    }
    Walk {
        len,
        truncated: avail > out.len() || (n == want && first + len == n && len == out.len()),
    }
}
