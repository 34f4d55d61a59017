//! The module map on Linux: every object loaded into the process, with what an offline symbolizer needs (path,
//! build-id, load bias, PT_LOAD segments), merged into the shared map (`crate::module_map`). Objects unloaded by
//! `dlclose` stay in the map, marked unloaded, so their leaks still symbolize after the library and even the
//! process are gone.

use alloc::vec::Vec;
use core::ffi::c_void;

pub use crate::module_map::{registry, Module};

fn exe_path() -> Vec<u8> {
    let mut buf = [0u8; 4096];
    // SAFETY: readlink writes at most buf.len() bytes.
    let n = unsafe {
        libc::readlink(
            c"/proc/self/exe".as_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        )
    };
    if n <= 0 {
        return Vec::new();
    }
    buf[..n as usize].to_vec()
}

/// Reads the GNU build-id note of an object from memory.
///
/// # Safety
/// `base + vaddr .. + memsz` must be a mapped PT_NOTE segment.
unsafe fn build_id(base: u64, vaddr: u64, memsz: u64) -> Option<Vec<u8>> {
    let mut p = base + vaddr;
    let end = p + memsz;
    while p + 12 <= end {
        // SAFETY: inside the note segment per the caller's contract.
        let (namesz, descsz, ty) = unsafe {
            (
                *(p as *const u32) as u64,
                *((p + 4) as *const u32) as u64,
                *((p + 8) as *const u32),
            )
        };
        let name = p + 12;
        let desc = name + ((namesz + 3) & !3);
        let next = desc + ((descsz + 3) & !3);
        if next > end {
            break;
        }
        // SAFETY: name and desc lie inside the segment (checked against `end`).
        if ty == 3 && namesz == 4 && unsafe { *(name as *const [u8; 4]) } == *b"GNU\0" {
            return Some(
                unsafe { core::slice::from_raw_parts(desc as *const u8, descsz as usize) }.to_vec(),
            );
        }
        p = next;
    }
    None
}

/// Every object mapped right now.
fn collect() -> Vec<Module> {
    unsafe extern "C" fn cb(info: *mut libc::dl_phdr_info, _: usize, data: *mut c_void) -> i32 {
        // SAFETY: valid per dl_iterate_phdr's contract; data is our Vec.
        let (info, out) = unsafe { (&*info, &mut *(data as *mut Vec<Module>)) };
        // SAFETY: dlpi_name is a NUL-terminated string (possibly empty).
        let name = if info.dlpi_name.is_null() {
            &b""[..]
        } else {
            unsafe { core::ffi::CStr::from_ptr(info.dlpi_name) }.to_bytes()
        };
        if name.starts_with(b"linux-vdso") || name.starts_with(b"linux-gate") {
            return 0;
        }
        let mut m = Module {
            path: if name.is_empty() {
                exe_path()
            } else {
                name.to_vec()
            },
            build_id: Vec::new(),
            base: info.dlpi_addr,
            segments: Vec::new(),
            loaded: true,
            stacks_to: 0,
        };
        for i in 0..info.dlpi_phnum as usize {
            // SAFETY: dlpi_phdr has dlpi_phnum entries.
            let ph = unsafe { &*info.dlpi_phdr.add(i) };
            if ph.p_type == libc::PT_LOAD {
                m.segments.push([ph.p_vaddr, ph.p_memsz, ph.p_flags as u64]);
            } else if ph.p_type == libc::PT_NOTE && m.build_id.is_empty() {
                // SAFETY: a PT_NOTE segment of a loaded object is mapped.
                if let Some(id) = unsafe { build_id(info.dlpi_addr, ph.p_vaddr, ph.p_memsz) } {
                    m.build_id = id;
                }
            }
        }
        if !m.segments.is_empty() {
            out.push(m);
        }
        0
    }
    let mut v: Vec<Module> = Vec::new();
    // SAFETY: the callback only reads what it is given and pushes into our Vec (private heap).
    unsafe { libc::dl_iterate_phdr(Some(cb), (&mut v as *mut Vec<Module>).cast()) };
    v
}

/// Brings the registry up to date: adds new objects, marks vanished ones unloaded.
pub fn refresh() {
    crate::module_map::merge(collect());
}
