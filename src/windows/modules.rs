//! The module map on Windows: every PE image loaded into the process, in the form the shared dump writer and
//! the CLI's symbolizer use on Linux.
//!
//! `base` is the load *bias* (actual base − the image's preferred `ImageBase`) and each segment's `vaddr` is a
//! preferred virtual address (`ImageBase + RVA`): PE symbols and mingw's DWARF are expressed in preferred
//! addresses, just as ELF's are in link-time addresses, so the symbolizer's `pc - base` is the address to look
//! up with no PE special case. The preferred `ImageBase` is read from the file (the loader may rewrite it in the
//! mapped header when it relocates the image). Segments are the section headers: `[vaddr, VirtualSize, flags]`
//! with flags 1 = execute, 2 = write, 4 = read. There is no build-id: `object` reads none from PE files, and
//! the symbolizer compares it with the dump's.

use alloc::vec::Vec;
use core::ffi::c_void;
use windows_sys::Win32::Foundation::{CloseHandle, HMODULE, INVALID_HANDLE_VALUE};
use windows_sys::Win32::Storage::FileSystem::{
    CreateFileW, ReadFile, FILE_ATTRIBUTE_NORMAL, FILE_SHARE_DELETE, FILE_SHARE_READ,
    FILE_SHARE_WRITE, OPEN_EXISTING,
};
use windows_sys::Win32::System::LibraryLoader::{
    GetModuleFileNameW, GetModuleHandleExW, GetModuleHandleW,
    GET_MODULE_HANDLE_EX_FLAG_FROM_ADDRESS, GET_MODULE_HANDLE_EX_FLAG_UNCHANGED_REFCOUNT,
};
use windows_sys::Win32::System::ProcessStatus::K32EnumProcessModules;
use windows_sys::Win32::System::Threading::GetCurrentProcess;

pub use crate::module_map::{registry, Module};

/// The handle of an already loaded module by name.
pub fn module_handle(name: &str) -> HMODULE {
    let mut w = [0u16; 64];
    for (i, u) in name.encode_utf16().take(63).enumerate() {
        w[i] = u;
    }
    // SAFETY: NUL-terminated wide name; no allocation.
    unsafe { GetModuleHandleW(w.as_ptr()) }
}

/// The module containing `addr`, if any.
pub fn containing(addr: usize) -> Option<HMODULE> {
    let mut h: HMODULE = core::ptr::null_mut();
    // SAFETY: flags ask for a lookup by address without touching the reference count.
    let ok = unsafe {
        GetModuleHandleExW(
            GET_MODULE_HANDLE_EX_FLAG_FROM_ADDRESS | GET_MODULE_HANDLE_EX_FLAG_UNCHANGED_REFCOUNT,
            addr as *const u16,
            &mut h,
        )
    };
    (ok != 0 && !h.is_null()).then_some(h)
}

/// The PE headers of a mapped image: (e_lfanew offset → NT headers pointer).
///
/// # Safety
/// `base` must be the base of a mapped PE image.
unsafe fn nt_headers(base: usize) -> Option<*const u8> {
    // SAFETY: per the caller, the DOS header is mapped.
    unsafe {
        if *(base as *const u16) != 0x5a4d {
            return None;
        }
        let lfanew = *((base + 0x3c) as *const u32) as usize;
        let nt = (base + lfanew) as *const u8;
        if *(nt as *const u32) != 0x4550 {
            return None;
        }
        Some(nt)
    }
}

/// `[base, base + SizeOfImage)` of a mapped image.
pub fn image_range(h: HMODULE) -> Option<(usize, usize)> {
    if h.is_null() {
        return None;
    }
    let base = h as usize;
    // SAFETY: a module handle is the base of its mapped image.
    unsafe {
        let nt = nt_headers(base)?;
        // OptionalHeader starts at 24; SizeOfImage is at +56 in both PE32 and PE32+.
        let size = *(nt.add(24 + 56) as *const u32) as usize;
        Some((base, base + size))
    }
}

/// The image's file name in lowercase ASCII (`msvcrt.dll`), for recognising C runtimes.
pub fn base_name(h: HMODULE, out: &mut [u8; 64]) -> usize {
    let mut w = [0u16; 1024];
    // SAFETY: valid buffer.
    let n = unsafe { GetModuleFileNameW(h, w.as_mut_ptr(), w.len() as u32) } as usize;
    let w = &w[..n.min(w.len())];
    let start = w
        .iter()
        .rposition(|&c| c == b'\\' as u16 || c == b'/' as u16)
        .map_or(0, |i| i + 1);
    let mut len = 0;
    for &c in &w[start..] {
        if len == out.len() {
            break;
        }
        out[len] = if c < 128 {
            (c as u8).to_ascii_lowercase()
        } else {
            b'?'
        };
        len += 1;
    }
    len
}

/// The preferred ImageBase recorded in the file at `path` (NUL-terminated UTF-16), if readable.
fn preferred_base(path: &[u16]) -> Option<u64> {
    // SAFETY: NUL-terminated path; reads into a stack buffer.
    unsafe {
        let h = CreateFileW(
            path.as_ptr(),
            windows_sys::Win32::Foundation::GENERIC_READ,
            FILE_SHARE_READ | FILE_SHARE_WRITE | FILE_SHARE_DELETE,
            core::ptr::null(),
            OPEN_EXISTING,
            FILE_ATTRIBUTE_NORMAL,
            core::ptr::null_mut(),
        );
        if h == INVALID_HANDLE_VALUE {
            return None;
        }
        let mut buf = [0u8; 4096];
        let mut got = 0u32;
        let ok = ReadFile(
            h,
            buf.as_mut_ptr(),
            buf.len() as u32,
            &mut got,
            core::ptr::null_mut(),
        ) != 0;
        CloseHandle(h);
        let got = got as usize;
        if !ok || got < 0x40 || buf[0] != b'M' || buf[1] != b'Z' {
            return None;
        }
        let lfanew = u32::from_le_bytes(buf[0x3c..0x40].try_into().ok()?) as usize;
        let opt = lfanew + 24;
        if opt + 32 > got || &buf[lfanew..lfanew + 4] != b"PE\0\0" {
            return None;
        }
        let magic = u16::from_le_bytes([buf[opt], buf[opt + 1]]);
        match magic {
            0x20b => Some(u64::from_le_bytes(buf[opt + 24..opt + 32].try_into().ok()?)),
            0x10b => Some(u32::from_le_bytes(buf[opt + 28..opt + 32].try_into().ok()?) as u64),
            _ => None,
        }
    }
}

/// Reads one mapped image into a [`Module`].
fn describe(h: HMODULE) -> Option<Module> {
    let base = h as usize;
    let mut w = [0u16; 1024];
    // SAFETY: valid buffer.
    let n = unsafe { GetModuleFileNameW(h, w.as_mut_ptr(), (w.len() - 1) as u32) } as usize;
    if n == 0 {
        return None;
    }
    w[n.min(w.len() - 1)] = 0;
    let mut path = [0u8; 4096];
    let plen = crate::sys::utf16_to_utf8(&w[..n], &mut path);
    // SAFETY: a module handle is the base of its mapped image.
    let (mapped_base, sections) = unsafe {
        let nt = nt_headers(base)?;
        let nsec = *(nt.add(6) as *const u16) as usize;
        let opt_size = *(nt.add(20) as *const u16) as usize;
        let magic = *(nt.add(24) as *const u16);
        let image_base = if magic == 0x20b {
            *(nt.add(24 + 24) as *const u64)
        } else {
            *(nt.add(24 + 28) as *const u32) as u64
        };
        (image_base, (nt.add(24 + opt_size), nsec))
    };
    let preferred = preferred_base(&w).unwrap_or(mapped_base);
    let mut segments = Vec::new();
    let (table, nsec) = sections;
    for i in 0..nsec {
        // SAFETY: IMAGE_SECTION_HEADER array of nsec 40-byte entries follows the optional header.
        let (vsize, rva, chars) = unsafe {
            let s = table.add(40 * i);
            (
                *(s.add(8) as *const u32) as u64,
                *(s.add(12) as *const u32) as u64,
                *(s.add(36) as *const u32),
            )
        };
        if vsize == 0 {
            continue;
        }
        let mut flags = 0;
        if chars & 0x2000_0000 != 0 {
            flags |= 1;
        }
        if chars & 0x8000_0000 != 0 {
            flags |= 2;
        }
        if chars & 0x4000_0000 != 0 {
            flags |= 4;
        }
        segments.push([preferred + rva, vsize, flags]);
    }
    Some(Module {
        path: path[..plen].to_vec(),
        build_id: Vec::new(),
        base: (base as u64).wrapping_sub(preferred),
        segments,
        loaded: true,
        stacks_to: 0,
    })
}

/// Every module loaded now (their handles).
pub fn handles(out: &mut Vec<HMODULE>) {
    let mut buf: [HMODULE; 1024] = [core::ptr::null_mut(); 1024];
    let mut needed = 0u32;
    // SAFETY: the buffer holds 1024 handles.
    let ok = unsafe {
        K32EnumProcessModules(
            GetCurrentProcess(),
            buf.as_mut_ptr(),
            core::mem::size_of_val(&buf) as u32,
            &mut needed,
        )
    };
    if ok == 0 {
        return;
    }
    let n = (needed as usize / core::mem::size_of::<HMODULE>()).min(buf.len());
    out.extend_from_slice(&buf[..n]);
}

/// Brings the registry up to date: adds new images, marks vanished ones unloaded.
pub fn refresh() {
    let mut hs = Vec::new();
    handles(&mut hs);
    crate::module_map::merge(hs.iter().filter_map(|&h| describe(h)).collect());
}

/// The address of a module's export by name, if present.
pub fn export(h: HMODULE, name: &core::ffi::CStr) -> Option<*const c_void> {
    use windows_sys::Win32::System::LibraryLoader::GetProcAddress;
    // SAFETY: NUL-terminated name; GetProcAddress by name does not allocate.
    unsafe { GetProcAddress(h, name.as_ptr().cast()).map(|f| f as *const c_void) }
}
