//! The module map both platforms keep: one record per object ever mapped (the dump writer reads them), and how
//! a fresh list of what is mapped now merges into it. What is mapped, and how it is read, is each platform's
//! (`platform::modules`: ELF objects through `dl_iterate_phdr`, PE images through the process's module list).
//! Objects that go stay in the map, marked unloaded, so their leaks still symbolize after they are gone.

use crate::lock::SpinLock;
use alloc::vec::Vec;

/// One mapped (or once mapped) object.
pub struct Module {
    /// File path (UTF-8 on Windows; the executable's resolved through /proc/self/exe on Linux).
    pub path: Vec<u8>,
    /// GNU build-id bytes (empty when the object has none; always on Windows).
    pub build_id: Vec<u8>,
    /// Load bias: `dlpi_addr` on Linux, actual base − preferred ImageBase on Windows.
    pub base: u64,
    /// Segments: vaddr, memsz, flags (1 = execute, 2 = write, 4 = read).
    pub segments: Vec<[u64; 3]>,
    /// Still mapped at the last refresh.
    pub loaded: bool,
    /// The number of interned stacks when a refresh first found it gone (0: still loaded, or unknown). Every
    /// stack with a lower id was interned while it was mapped: the symbolizer tells its addresses from those of
    /// a module mapped later at the same place by this.
    pub stacks_to: u32,
}

static REGISTRY: SpinLock<Vec<Module>> = SpinLock::new(Vec::new());

/// The registry's lock (for fork handling and for dumps).
pub fn registry() -> &'static SpinLock<Vec<Module>> {
    &REGISTRY
}

/// Brings the registry up to date with `now`, every object mapped at this moment: adds the new ones, marks
/// vanished ones unloaded (with the stack count they went at).
pub fn merge(now: Vec<Module>) {
    let mut reg = REGISTRY.lock();
    let stacks = crate::intern::count();
    for m in reg.iter_mut() {
        let loaded = now.iter().any(|n| n.base == m.base && n.path == m.path);
        if m.loaded && !loaded {
            m.stacks_to = stacks;
        }
        m.loaded = loaded;
    }
    for n in now {
        if !reg.iter().any(|m| m.base == n.base && m.path == n.path) {
            reg.push(n);
        }
    }
}
