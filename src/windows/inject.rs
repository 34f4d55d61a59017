//! Loading heapledger.dll into a child process: the classic sequence, used by `hooks.rs` for every process the
//! traced program creates (the CLI's injector in `tracer-cli/src/windows.rs` does the same for the first one).
//!
//! The child was created suspended; the DLL path is written into it, a remote thread runs `LoadLibraryW` on it
//! (which also runs the child's process initialisation, then our `DllMain`), and the creator resumes the child
//! only afterwards, so the child's first instruction of its own already runs traced. A 32-bit child cannot load
//! a 64-bit DLL and is left untraced (said on stderr).

use super::sys;
use core::ffi::c_void;
use windows_sys::Win32::Foundation::{CloseHandle, HANDLE};
use windows_sys::Win32::System::Diagnostics::Debug::WriteProcessMemory;
use windows_sys::Win32::System::LibraryLoader::GetModuleFileNameW;
use windows_sys::Win32::System::Memory::{
    VirtualAllocEx, VirtualFreeEx, MEM_COMMIT, MEM_RELEASE, MEM_RESERVE, PAGE_READWRITE,
};
use windows_sys::Win32::System::Threading::{
    CreateRemoteThread, GetExitCodeThread, IsWow64Process, WaitForSingleObject,
};

/// How long to wait for the child's start-up and our DllMain in it.
const WAIT_MS: u32 = 60_000;

/// Loads this DLL into the suspended child `process`. Failures are reported on stderr; the child then runs
/// untraced.
pub fn into_child(process: HANDLE) {
    // SAFETY: plain Win32 calls on the handle CreateProcess returned; buffers are ours.
    unsafe {
        let mut wow = 0;
        if IsWow64Process(process, &mut wow) != 0 && wow != 0 {
            sys::eprint(&[
                b"heapledger: a 32-bit child process is not traced (the tracer is 64-bit)",
            ]);
            return;
        }
        let mut path = [0u16; 1024];
        let n = GetModuleFileNameW(
            super::lifecycle::own_module(),
            path.as_mut_ptr(),
            (path.len() - 1) as u32,
        ) as usize;
        if n == 0 || n >= path.len() - 1 {
            return;
        }
        path[n] = 0;
        let Some(load_library) = sys::proc_address(c"kernel32.dll", c"LoadLibraryW") else {
            return;
        };
        let bytes = (n + 1) * 2;
        let remote = VirtualAllocEx(
            process,
            core::ptr::null(),
            bytes,
            MEM_COMMIT | MEM_RESERVE,
            PAGE_READWRITE,
        );
        if remote.is_null() {
            sys::eprint(&[b"heapledger: cannot trace a child process (VirtualAllocEx failed)"]);
            return;
        }
        if WriteProcessMemory(
            process,
            remote,
            path.as_ptr().cast(),
            bytes,
            core::ptr::null_mut(),
        ) == 0
        {
            sys::eprint(&[b"heapledger: cannot trace a child process (WriteProcessMemory failed)"]);
            VirtualFreeEx(process, remote, 0, MEM_RELEASE);
            return;
        }
        // kernel32 is mapped at the same address in every process of a boot session (of one bitness).
        let start: unsafe extern "system" fn(*mut c_void) -> u32 =
            core::mem::transmute(load_library);
        let thread = CreateRemoteThread(
            process,
            core::ptr::null(),
            0,
            Some(start),
            remote,
            0,
            core::ptr::null_mut(),
        );
        if thread.is_null() {
            sys::eprint(&[b"heapledger: cannot trace a child process (CreateRemoteThread failed)"]);
            VirtualFreeEx(process, remote, 0, MEM_RELEASE);
            return;
        }
        WaitForSingleObject(thread, WAIT_MS);
        let mut code = 0u32;
        GetExitCodeThread(thread, &mut code);
        CloseHandle(thread);
        VirtualFreeEx(process, remote, 0, MEM_RELEASE);
        if code == 0 {
            sys::eprint(&[
                b"heapledger: heapledger.dll did not load in a child process; it runs untraced",
            ]);
        }
    }
}
