//! Process life on Windows: `DllMain` (start-up when the injector's remote `LoadLibraryW` loads us), the
//! DLL-load notification that hooks C runtimes loaded later, periodic snapshots, and the final dump.
//!
//! Start-up runs in `DLL_PROCESS_ATTACH` on the injector's remote thread, before the program's main thread has
//! run a single instruction of its own: settings, hooks (enabled with the other threads suspended), then every
//! block that already exists is recorded as internal. The final dump is written from the `RtlExitUserProcess`
//! hook (what `ExitProcess` and the C runtime's `exit` end in), after the program's atexit handlers and before
//! any thread is terminated or any DLL is detached; `NtTerminateProcess` on this process (`TerminateProcess`)
//! writes it with reason `_exit`; `DLL_PROCESS_DETACH` is a fallback.

use super::{heaps, hooks, modules, stack, sys};
use crate::dump::{self, Reason};
use core::ffi::c_void;
use core::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use windows_sys::core::BOOL;
use windows_sys::Win32::Foundation::{FALSE, HMODULE, TRUE};
use windows_sys::Win32::System::LibraryLoader::{
    GetModuleHandleExW, GET_MODULE_HANDLE_EX_FLAG_FROM_ADDRESS, GET_MODULE_HANDLE_EX_FLAG_PIN,
};
use windows_sys::Win32::System::SystemServices::{
    DLL_PROCESS_ATTACH, DLL_PROCESS_DETACH, DLL_THREAD_DETACH,
};

static OWN: AtomicUsize = AtomicUsize::new(0);
static READY: AtomicBool = AtomicBool::new(false);
static FINAL_DONE: AtomicBool = AtomicBool::new(false);

/// This DLL's module handle.
pub fn own_module() -> HMODULE {
    OWN.load(Ordering::Relaxed) as HMODULE
}

/// The DLL entry point (called by the mingw runtime's DllMainCRTStartup).
///
/// # Safety
/// Called by the loader only.
#[no_mangle]
pub unsafe extern "system" fn DllMain(module: HMODULE, reason: u32, reserved: *mut c_void) -> BOOL {
    match reason {
        DLL_PROCESS_ATTACH => {
            OWN.store(module as usize, Ordering::Relaxed);
            if init() {
                TRUE
            } else {
                FALSE
            }
        }
        DLL_THREAD_DETACH => {
            if READY.load(Ordering::Relaxed) {
                sys::thread_exit();
            }
            TRUE
        }
        DLL_PROCESS_DETACH => {
            // `reserved` is non-null when the process is ending (not a FreeLibrary, which the pin prevents).
            if !reserved.is_null() {
                final_dump(Reason::Exit);
            }
            TRUE
        }
        _ => TRUE,
    }
}

/// Runs `f` with this thread marked busy, so anything Win32 allocates for it is internal.
pub fn as_tracer<R>(f: impl FnOnce() -> R) -> R {
    // SAFETY: the calling thread's own record.
    let t = unsafe { &mut *sys::win_thread() };
    let was = t.base.busy;
    t.base.busy = crate::thread::BUSY_TRACER;
    let r = f();
    t.base.busy = was;
    r
}

fn init() -> bool {
    if !sys::init() {
        sys::eprint(&[b"heapledger: no TLS slot left; not tracing"]);
        return false;
    }
    as_tracer(|| {
        heaps::init();
        crate::config::load();
        // No reachability scan on Windows yet (reach.rs): skip copying the table for it.
        crate::config::REACH.store(0, Ordering::Relaxed);
        crate::heap::init_reserve();
        if !crate::intern::init() {
            sys::eprint(&[b"heapledger: cannot reserve memory for stacks; not tracing"]);
            return false;
        }
        dump::START_NS.store(sys::realtime_ns(), Ordering::Relaxed);
        stack::init();
        // Never unloaded: the hooks point into this DLL.
        let mut h: HMODULE = core::ptr::null_mut();
        // SAFETY: pins the module containing this function.
        unsafe {
            GetModuleHandleExW(
                GET_MODULE_HANDLE_EX_FLAG_FROM_ADDRESS | GET_MODULE_HANDLE_EX_FLAG_PIN,
                init as *const u16,
                &mut h,
            )
        };
        // A panic inside the tracer is contained by the hooks; keep its message off the program's stderr.
        std::panic::set_hook(std::boxed::Box::new(|_| {}));
        if !hooks::install() {
            return false;
        }
        hooks::activate();
        heaps::snapshot_existing();
        register_dll_notification();
        modules::refresh();
        hooks::started();
        READY.store(true, Ordering::Release);
        start_snapshots();
        true
    })
}

// ---- DLLs loaded later -----------------------------------------------------------------------------------------

#[repr(C)]
struct UnicodeString {
    length: u16,
    maximum_length: u16,
    buffer: *const u16,
}

#[repr(C)]
struct DllNotificationData {
    flags: u32,
    full_name: *const UnicodeString,
    base_name: *const UnicodeString,
    base: *mut c_void,
    size: u32,
}

unsafe extern "system" fn on_dll(reason: u32, data: *const DllNotificationData, _ctx: *mut c_void) {
    const LOADED: u32 = 1;
    const UNLOADED: u32 = 2;
    if data.is_null() {
        return;
    }
    let e = sys::errno();
    as_tracer(|| {
        // SAFETY: the loader passes valid notification data for the duration of the call.
        let d = unsafe { &*data };
        match reason {
            LOADED => {
                let mut name = [0u8; 64];
                let mut n = 0;
                if !d.base_name.is_null() {
                    // SAFETY: a counted UTF-16 string.
                    let s = unsafe { &*d.base_name };
                    let w = unsafe { core::slice::from_raw_parts(s.buffer, s.length as usize / 2) };
                    for &c in w.iter().take(64) {
                        name[n] = if c < 128 {
                            (c as u8).to_ascii_lowercase()
                        } else {
                            b'?'
                        };
                        n += 1;
                    }
                }
                hooks::hook_new_module(d.base as HMODULE, &name[..n]);
            }
            UNLOADED => {
                hooks::crt_unloaded(d.base as usize);
                stack::invalidate();
            }
            _ => {}
        }
    });
    sys::set_errno(e);
}

fn register_dll_notification() {
    type Register = unsafe extern "system" fn(
        u32,
        unsafe extern "system" fn(u32, *const DllNotificationData, *mut c_void),
        *mut c_void,
        *mut *mut c_void,
    ) -> i32;
    let Some(f) = sys::proc_address(c"ntdll.dll", c"LdrRegisterDllNotification") else {
        sys::eprint(&[
            b"heapledger: no LdrRegisterDllNotification: C runtimes loaded later are not traced",
        ]);
        return;
    };
    let mut cookie = core::ptr::null_mut();
    // SAFETY: the documented signature; the callback lives as long as the (pinned) DLL.
    unsafe {
        core::mem::transmute::<usize, Register>(f)(0, on_dll, core::ptr::null_mut(), &mut cookie)
    };
}

// ---- snapshots and the final dump ------------------------------------------------------------------------------

unsafe extern "system" fn snapshot_thread(_: *mut c_void) -> u32 {
    // SAFETY: this thread's own record; it stays busy: everything it allocates is the tracer's.
    unsafe { (*sys::win_thread()).base.busy = crate::thread::BUSY_TRACER };
    loop {
        let ms = crate::config::INTERVAL_MS
            .load(Ordering::Relaxed)
            .clamp(1, u32::MAX as u64 - 1) as u32;
        // SAFETY: plain sleep.
        unsafe { windows_sys::Win32::System::Threading::Sleep(ms) };
        if FINAL_DONE.load(Ordering::Acquire) {
            return 0;
        }
        let _ = std::panic::catch_unwind(|| dump::write(Reason::Interval, "", false));
    }
}

fn start_snapshots() {
    if crate::config::INTERVAL_MS.load(Ordering::Relaxed) == 0 {
        return;
    }
    // SAFETY: a plain thread; it starts running once the loader lock is released.
    unsafe {
        let h = windows_sys::Win32::System::Threading::CreateThread(
            core::ptr::null(),
            0,
            Some(snapshot_thread),
            core::ptr::null(),
            0,
            core::ptr::null_mut(),
        );
        if !h.is_null() {
            windows_sys::Win32::Foundation::CloseHandle(h);
        }
    }
}

/// Writes the end-of-process dump once, then lets every hook pass straight through.
pub fn final_dump(reason: Reason) {
    if !READY.load(Ordering::Acquire) || FINAL_DONE.swap(true, Ordering::AcqRel) {
        return;
    }
    let e = sys::errno();
    as_tracer(|| {
        let _ = std::panic::catch_unwind(|| dump::write(reason, "", false));
    });
    hooks::deactivate();
    sys::set_errno(e);
}
