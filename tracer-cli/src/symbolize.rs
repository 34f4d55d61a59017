//! Turns the return addresses in a dump into functions, files and lines.
//!
//! Each module of the dump is opened at most once, on the first address that falls in it, and each distinct
//! address is looked up at most once. DWARF (with inlined frames) is used when the module or a separate debug
//! file has it; otherwise the nearest preceding ELF symbol, so that stripped distribution libraries still show
//! function names. A module that cannot be used at all (missing, rebuilt since the run, unparsable) yields
//! module+offset frames and one warning, never an error: a report with some raw frames beats no report.

use std::borrow::Cow;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use gimli::{EndianRcSlice, RunTimeEndian};
use heapledger_format::{segment_flags, Dump};
use object::{Object, ObjectSection, ObjectSymbol, SymbolKind};

/// DWARF reader over section data copied out of the file, so the file itself need not stay mapped or borrowed.
type Reader = EndianRcSlice<RunTimeEndian>;

/// One symbolized frame. A return address inside inlined code expands to several frames with the same
/// `address`: the innermost inlined function first (`inlined: true`), the real function last.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// The return address as recorded.
    pub address: u64,
    /// Path of the module containing it, if any.
    pub module: Option<Rc<str>>,
    /// `address - base` of that module (the module's own virtual address), or `address` if no module.
    pub offset: u64,
    /// Demangled function name. (`Rc<str>` here and below: a stack is copied into every leak site and error
    /// that uses it, and big reports have millions of frames.)
    pub function: Option<Rc<str>>,
    /// Source file (full path as recorded in DWARF).
    pub file: Option<Rc<str>>,
    /// Source line.
    pub line: Option<u32>,
    /// `true` when this function was inlined into the next frame.
    pub inlined: bool,
}

/// Symbolizer for the addresses of one dump at a time. [`Symbolizer::retarget`] moves it to the next dump while
/// keeping the modules it has opened, since the dumps of one run (forked children, snapshots) share most of
/// their libraries and opening a library's debug info is the expensive part.
pub struct Symbolizer {
    modules: Vec<ModuleEntry>,
    /// Address ranges of loaded modules, sorted by start; searched before `unloaded_ranges` because a
    /// `dlclose`d module's range may since have been reused by a module that is still there.
    loaded_ranges: Vec<Range>,
    unloaded_ranges: Vec<Range>,
    /// `unloaded_reach[i]`: the highest end among `unloaded_ranges[..=i]`, so that a search for the
    /// unloaded ranges holding an address stops where none further down can.
    unloaded_reach: Vec<u64>,
    /// Frames by (address, module index; `usize::MAX`: none).
    cache: HashMap<(u64, usize), Rc<[Frame]>>,
    warnings: Vec<String>,
    exe: String,
    /// Root of the system's separate debug files (`/usr/lib/debug`); a field so tests can point it elsewhere.
    debug_root: PathBuf,
    /// Every module opened so far, by (path, build-id), across dumps.
    opened: HashMap<(Rc<str>, String), Opened>,
}

/// The outcome of opening a module: its symbols and an optional note (worth showing only for the main
/// executable), or an optional warning saying why it cannot be used (`None`: a module that is never a file,
/// like the vDSO, needs no warning).
type Opened = Result<(Rc<ModuleInfo>, Option<String>), Option<String>>;

#[derive(Clone, Copy)]
struct Range {
    start: u64,
    end: u64,
    module: usize,
}

struct ModuleEntry {
    path: Rc<str>,
    build_id: String,
    base: u64,
    /// For an unloaded module: stacks with a lower id were interned while it was mapped.
    stacks_to: Option<u64>,
    state: ModuleState,
}

enum ModuleState {
    NotOpened,
    /// Unusable; a warning has been issued. Frames get module+offset only.
    Unusable,
    Ready(Rc<ModuleInfo>),
}

struct ModuleInfo {
    dwarf: Option<addr2line::Context<Reader>>,
    /// Function symbols sorted by address, one per address.
    symbols: Vec<Symbol>,
}

struct Symbol {
    addr: u64,
    size: u64,
    global: bool,
    name: String,
}

impl Symbolizer {
    /// Prepares a symbolizer for `dump`'s modules; nothing is opened until an address needs it.
    pub fn new(dump: &Dump) -> Self {
        let mut symbolizer = Symbolizer {
            modules: Vec::new(),
            loaded_ranges: Vec::new(),
            unloaded_ranges: Vec::new(),
            unloaded_reach: Vec::new(),
            cache: HashMap::new(),
            warnings: Vec::new(),
            exe: String::new(),
            debug_root: PathBuf::from("/usr/lib/debug"),
            opened: HashMap::new(),
        };
        symbolizer.retarget(dump);
        symbolizer
    }

    /// Switches to another dump: its modules and addresses, fresh warnings; modules already opened (same path
    /// and build-id) are reused.
    pub fn retarget(&mut self, dump: &Dump) {
        let mut loaded_ranges = Vec::new();
        let mut unloaded_ranges = Vec::new();
        let mut modules = Vec::with_capacity(dump.modules.len());
        for (i, m) in dump.modules.iter().enumerate() {
            modules.push(ModuleEntry {
                path: Rc::from(m.path.as_str()),
                build_id: m.build_id.to_ascii_lowercase(),
                base: m.base,
                stacks_to: if m.loaded { None } else { m.stacks_to },
                state: ModuleState::NotOpened,
            });
            // Return addresses are in executable segments; a module without flags (hand-written dumps) is
            // searched by all its segments rather than not at all.
            let any_exec = m.segments.iter().any(|s| s.flags & segment_flags::X != 0);
            for s in m
                .segments
                .iter()
                .filter(|s| !any_exec || s.flags & segment_flags::X != 0)
            {
                // Wrapping: a validated dump cannot overflow here, and an unvalidated one must not panic.
                let start = m.base.wrapping_add(s.vaddr);
                let range = Range {
                    start,
                    end: start.wrapping_add(s.memsz),
                    module: i,
                };
                if m.loaded {
                    &mut loaded_ranges
                } else {
                    &mut unloaded_ranges
                }
                .push(range);
            }
        }
        loaded_ranges.sort_by_key(|r| r.start);
        unloaded_ranges.sort_by_key(|r| r.start);
        self.modules = modules;
        self.loaded_ranges = loaded_ranges;
        self.unloaded_reach = unloaded_ranges
            .iter()
            .scan(0, |reach, r| {
                *reach = r.end.max(*reach);
                Some(*reach)
            })
            .collect();
        self.unloaded_ranges = unloaded_ranges;
        self.cache.clear();
        self.warnings.clear();
        self.exe = dump.exe.clone();
    }

    /// Warnings issued so far (one per unusable module), in the order they arose.
    pub fn warnings(&self) -> &[String] {
        &self.warnings
    }

    /// Symbolizes a whole stack (innermost first), expanding inlined frames.
    pub fn stack(&mut self, pcs: &[u64]) -> Vec<Frame> {
        self.stack_with(None, pcs)
    }

    /// Symbolizes stack `id` of the dump (its addresses `pcs`): an address in a range that two modules occupied
    /// one after the other (a `dlclose`d library, then another mapped at its place) is given to the module that
    /// was mapped when the stack was interned.
    pub fn stack_of(&mut self, id: u64, pcs: &[u64]) -> Vec<Frame> {
        self.stack_with(Some(id), pcs)
    }

    fn stack_with(&mut self, id: Option<u64>, pcs: &[u64]) -> Vec<Frame> {
        let mut out = Vec::with_capacity(pcs.len());
        for &pc in pcs {
            let module = self.module_for(pc, id);
            out.extend(self.frames_in(pc, module).iter().cloned());
        }
        out
    }

    /// Symbolizes one return address in `module`: one frame, or several when it is inside inlined code.
    fn frames_in(&mut self, pc: u64, module: Option<usize>) -> Rc<[Frame]> {
        let key = (pc, module.unwrap_or(usize::MAX));
        if let Some(frames) = self.cache.get(&key) {
            return frames.clone();
        }
        let frames: Rc<[Frame]> = self.lookup(pc, module).into();
        self.cache.insert(key, frames.clone());
        frames
    }

    /// The module of `pc` in stack `id`: among the unloaded modules whose range holds it, the first to go after
    /// the stack was interned (modules that share a range were never mapped at once); otherwise the loaded one,
    /// then any unloaded one (dumps without `stacks_to`).
    fn module_for(&self, pc: u64, id: Option<u64>) -> Option<usize> {
        if let Some(id) = id {
            let upto = self.unloaded_ranges.partition_point(|r| r.start <= pc);
            // From the nearest range down, while one further down may still reach past pc (for most addresses,
            // none: a dump may hold thousands of unloaded libraries).
            let mapped_then = self.unloaded_ranges[..upto]
                .iter()
                .zip(&self.unloaded_reach[..upto])
                .rev()
                .take_while(|&(_, &reach)| reach > pc)
                .map(|(r, _)| r)
                .filter(|r| pc < r.end)
                .filter_map(|r| Some((self.modules[r.module].stacks_to?, r.module)))
                .filter(|&(to, _)| to > id)
                .min();
            if let Some((_, m)) = mapped_then {
                return Some(m);
            }
        }
        self.find_module(pc)
    }

    fn find_module(&self, pc: u64) -> Option<usize> {
        let find = |ranges: &[Range]| {
            let i = ranges.partition_point(|r| r.start <= pc);
            i.checked_sub(1)
                .map(|i| ranges[i])
                .filter(|r| pc < r.end)
                .map(|r| r.module)
        };
        find(&self.loaded_ranges).or_else(|| find(&self.unloaded_ranges))
    }

    fn lookup(&mut self, pc: u64, module: Option<usize>) -> Vec<Frame> {
        let Some(idx) = module else {
            return vec![Frame {
                address: pc,
                module: None,
                offset: pc,
                function: None,
                file: None,
                line: None,
                inlined: false,
            }];
        };
        self.open(idx);
        let m = &self.modules[idx];
        let offset = pc.wrapping_sub(m.base);
        let bare = Frame {
            address: pc,
            module: Some(m.path.clone()),
            offset,
            function: None,
            file: None,
            line: None,
            inlined: false,
        };
        let ModuleState::Ready(info) = &m.state else {
            return vec![bare];
        };
        // A return address points after the call; the call itself (and its line) is one byte earlier.
        let probe = offset.wrapping_sub(1);
        let mut frames = Vec::new();
        if let Some(ctx) = &info.dwarf {
            if let Ok(mut iter) = ctx.find_frames(probe).skip_all_loads() {
                while let Ok(Some(f)) = iter.next() {
                    let function = f
                        .function
                        .as_ref()
                        .and_then(|n| n.raw_name().ok())
                        .map(|n| Rc::from(demangle(n.as_ref())));
                    let (file, line) = match f.location {
                        Some(loc) => (loc.file.map(Rc::from), loc.line),
                        None => (None, None),
                    };
                    frames.push(Frame {
                        function,
                        file,
                        line,
                        inlined: true,
                        ..bare.clone()
                    });
                }
            }
        }
        match frames.last_mut() {
            Some(last) => {
                last.inlined = false;
                let symbol = info.symbol(probe);
                // DWARF names a C function by its definition, which in glibc is often an internal alias
                // (`__GI___strdup`, `__libc_malloc`); the public alias the user called is in the symbol table.
                // (C names only: a C++ name such as `__gnu_cxx::...` is what the user wrote.)
                let internal = last
                    .function
                    .as_deref()
                    .is_none_or(|f| f.starts_with("__") && !f.contains("::"));
                if internal && symbol.is_some_and(|s| !s.starts_with('_'))
                    || last.function.is_none()
                {
                    last.function = symbol.map(|s| Rc::from(demangle(s)));
                }
            }
            None => frames.push(Frame {
                function: info.symbol(probe).map(|s| Rc::from(demangle(s))),
                ..bare
            }),
        }
        frames
    }

    /// Opens module `idx` if that has not been tried yet.
    fn open(&mut self, idx: usize) {
        if !matches!(self.modules[idx].state, ModuleState::NotOpened) {
            return;
        }
        let m = &self.modules[idx];
        let key = (m.path.clone(), m.build_id.clone());
        let debug_root = &self.debug_root;
        let opened = self.opened.entry(key).or_insert_with(|| {
            load_module(&m.path, &m.build_id, debug_root).map(|(info, note)| (Rc::new(info), note))
        });
        let state = match opened {
            Ok((info, note)) => {
                if let Some(note) = note.as_ref().filter(|_| *m.path == *self.exe) {
                    self.warnings.push(note.clone());
                }
                ModuleState::Ready(info.clone())
            }
            Err(None) => ModuleState::Unusable,
            Err(Some(warning)) => {
                self.warnings.push(warning.clone());
                ModuleState::Unusable
            }
        };
        self.modules[idx].state = state;
    }
}

impl ModuleInfo {
    /// Name of the function symbol containing module address `addr` (nearest preceding symbol; a sized symbol
    /// must also cover `addr`, so a static function stripped from the table is not blamed on its neighbour).
    fn symbol(&self, addr: u64) -> Option<&str> {
        let i = self
            .symbols
            .partition_point(|s| s.addr <= addr)
            .checked_sub(1)?;
        let s = &self.symbols[i];
        (s.size == 0 || addr - s.addr < s.size).then_some(s.name.as_str())
    }
}

/// Opens a module and its debug info. `Ok` carries an optional note that is worth showing only for the main
/// executable (no debug info); `Err(Some(w))` a warning for a module that cannot be used, `Err(None)` a module
/// that is never a file (the vDSO) and needs no warning.
fn load_module(
    path: &str,
    build_id: &str,
    debug_root: &Path,
) -> Result<(ModuleInfo, Option<String>), Option<String>> {
    if path.is_empty() || path.starts_with("linux-vdso") || path.starts_with("linux-gate") {
        return Err(None);
    }
    let as_raw = "frames shown as module+offset";
    let data = match std::fs::read(path) {
        Ok(data) => data,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(Some(format!("module {path} not found; {as_raw}")));
        }
        Err(e) => return Err(Some(format!("module {path}: {e}; {as_raw}"))),
    };
    let obj = object::File::parse(&*data).map_err(|e| {
        Some(format!(
            "module {path}: not a readable object file ({e}); {as_raw}"
        ))
    })?;
    let file_build_id = obj.build_id().ok().flatten().map(hex);
    if !build_id.is_empty() && file_build_id.as_deref() != Some(build_id) {
        let found = file_build_id.as_deref().unwrap_or("none");
        return Err(Some(format!(
            "module {path} has build-id {found} but the dump recorded {build_id} (rebuilt or upgraded since the \
             run?); {as_raw}"
        )));
    }

    let mut symbols = Vec::new();
    collect_symbols(&obj, &mut symbols);
    let mut note = None;
    let dwarf = if has_dwarf(&obj) {
        load_dwarf(&obj, Path::new(path), debug_root)
    } else if let Some((debug_path, debug_data)) =
        find_debug_file(&obj, Path::new(path), file_build_id.as_deref(), debug_root)
    {
        match object::File::parse(&*debug_data) {
            Ok(debug_obj) => {
                collect_symbols(&debug_obj, &mut symbols);
                load_dwarf(&debug_obj, &debug_path, debug_root)
            }
            Err(_) => None,
        }
    } else {
        note = Some(format!(
            "no debug info for {path}: no file:line (build with -g)"
        ));
        None
    };
    sort_symbols(&mut symbols);
    Ok((ModuleInfo { dwarf, symbols }, note))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn has_dwarf(obj: &object::File) -> bool {
    obj.section_by_name(".debug_info")
        .is_some_and(|s| s.size() > 0)
}

/// Finds a separate debug file the way gdb does: by build-id under the debug root, then by `.gnu_debuglink`
/// next to the module, in its `.debug/` subdirectory, and under the debug root mirroring its directory.
fn find_debug_file(
    obj: &object::File,
    path: &Path,
    build_id: Option<&str>,
    debug_root: &Path,
) -> Option<(PathBuf, Vec<u8>)> {
    let mut candidates = Vec::new();
    if let Some(id) = build_id.filter(|id| id.len() > 2) {
        candidates.push(
            debug_root
                .join(".build-id")
                .join(&id[..2])
                .join(format!("{}.debug", &id[2..])),
        );
    }
    if let Ok(Some((name, _crc))) = obj.gnu_debuglink() {
        let name = Path::new(std::str::from_utf8(name).ok()?);
        let dir = path.parent().unwrap_or(Path::new("/"));
        candidates.push(dir.join(name));
        candidates.push(dir.join(".debug").join(name));
        candidates.push(
            debug_root
                .join(dir.strip_prefix("/").unwrap_or(dir))
                .join(name),
        );
    }
    candidates.into_iter().find_map(|candidate| {
        // A debuglink names a file, not a version; the build-id check keeps a stale debug file from lying.
        if candidate == path {
            return None;
        }
        let data = std::fs::read(&candidate).ok()?;
        let debug_obj = object::File::parse(&*data).ok()?;
        let debug_id = debug_obj.build_id().ok().flatten().map(hex);
        if build_id.is_some() && debug_id.is_some() && debug_id.as_deref() != build_id {
            return None;
        }
        if !has_dwarf(&debug_obj) {
            return None;
        }
        drop(debug_obj);
        Some((candidate, data))
    })
}

fn load_sections(obj: &object::File) -> gimli::Dwarf<Reader> {
    let endian = if obj.is_little_endian() {
        RunTimeEndian::Little
    } else {
        RunTimeEndian::Big
    };
    let load = |id: gimli::SectionId| -> Result<Reader, std::convert::Infallible> {
        let data = obj
            .section_by_name(id.name())
            .and_then(|s| s.uncompressed_data().ok())
            .unwrap_or(Cow::Borrowed(&[]));
        Ok(EndianRcSlice::new(Rc::from(&*data), endian))
    };
    match gimli::Dwarf::load(load) {
        Ok(dwarf) => dwarf,
        Err(never) => match never {},
    }
}

/// Builds the addr2line context for `obj`, attaching the `.gnu_debugaltlink` supplementary file (dwz) when
/// there is one; without it, units that refer into the supplementary file would fail to resolve.
fn load_dwarf(
    obj: &object::File,
    path: &Path,
    debug_root: &Path,
) -> Option<addr2line::Context<Reader>> {
    let mut dwarf = load_sections(obj);
    if let Ok(Some((alt_name, alt_id))) = obj.gnu_debugaltlink() {
        let alt_name = Path::new(std::str::from_utf8(alt_name).ok()?);
        let alt_id = hex(alt_id);
        let mut candidates = vec![path.parent().unwrap_or(Path::new("/")).join(alt_name)];
        if alt_id.len() > 2 {
            candidates.push(
                debug_root
                    .join(".build-id")
                    .join(&alt_id[..2])
                    .join(format!("{}.debug", &alt_id[2..])),
            );
        }
        for candidate in candidates {
            let Ok(data) = std::fs::read(&candidate) else {
                continue;
            };
            let Ok(sup) = object::File::parse(&*data) else {
                continue;
            };
            dwarf.set_sup(load_sections(&sup));
            break;
        }
    }
    addr2line::Context::from_dwarf(dwarf).ok()
}

fn collect_symbols(obj: &object::File, out: &mut Vec<Symbol>) {
    for sym in obj.symbols().chain(obj.dynamic_symbols()) {
        if sym.kind() != SymbolKind::Text || !sym.is_definition() || sym.address() == 0 {
            continue;
        }
        let Ok(name) = sym.name() else { continue };
        if name.is_empty() {
            continue;
        }
        out.push(Symbol {
            addr: sym.address(),
            size: sym.size(),
            global: sym.is_global(),
            name: name.to_owned(),
        });
    }
}

/// Sorts by address and keeps one symbol per address, preferring the public alias (`strdup` over `__strdup`,
/// `malloc` over `__libc_malloc`), which is the name a user recognises: global before local, then fewest
/// leading underscores, then shortest.
fn sort_symbols(symbols: &mut Vec<Symbol>) {
    let rank = |s: &Symbol| {
        (
            !s.global,
            s.name.len() - s.name.trim_start_matches('_').len(),
            s.name.len(),
        )
    };
    symbols.sort_by(|a, b| {
        a.addr
            .cmp(&b.addr)
            .then_with(|| rank(a).cmp(&rank(b)))
            .then_with(|| a.name.cmp(&b.name))
    });
    symbols.dedup_by_key(|s| s.addr);
}

/// Demangles a C++ (`_Z...`) or Rust (`_R...`, or legacy `_ZN...17h<hash>E`) symbol; other names are returned
/// unchanged. C++ names keep their parameter list (`Widget::make(int)`), as gdb and valgrind show them; Rust
/// names drop the hash.
pub fn demangle(name: &str) -> Cow<'_, str> {
    if let Ok(d) = rustc_demangle::try_demangle(name) {
        return Cow::Owned(format!("{d:#}"));
    }
    if name.starts_with("_Z") {
        if let Ok(sym) = cpp_demangle::Symbol::new(name) {
            if let Ok(d) = sym.demangle(&cpp_demangle::DemangleOptions::default()) {
                return Cow::Owned(d);
            }
        }
    }
    Cow::Borrowed(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn demangles_cpp_with_parameters() {
        assert_eq!(demangle("_ZN6Widget4makeEi"), "Widget::make(int)");
        assert_eq!(demangle("_Znwm"), "operator new(unsigned long)");
        assert_eq!(
            demangle("_ZNSt7__cxx1112basic_stringIcSt11char_traitsIcESaIcEE9_M_createERmm"),
            "std::__cxx11::basic_string<char, std::char_traits<char>, std::allocator<char> >::_M_create(unsigned \
             long&, unsigned long)"
        );
    }

    #[test]
    fn demangles_rust_without_hash() {
        assert_eq!(
            demangle("_ZN4core3ptr13drop_in_place17h0123456789abcdefE"),
            "core::ptr::drop_in_place"
        );
        assert_eq!(demangle("_RNvCs1234_7mycrate3foo"), "mycrate::foo");
    }

    #[test]
    fn leaves_c_names_and_garbage_alone() {
        assert_eq!(demangle("main"), "main");
        assert_eq!(demangle("strdup"), "strdup");
        assert_eq!(demangle("_Zgarbage"), "_Zgarbage");
        assert_eq!(demangle(""), "");
    }

    #[test]
    fn symbol_ranking_prefers_public_names() {
        let mut syms = vec![
            Symbol {
                addr: 10,
                size: 4,
                global: true,
                name: "__strdup".into(),
            },
            Symbol {
                addr: 10,
                size: 4,
                global: true,
                name: "strdup".into(),
            },
            Symbol {
                addr: 10,
                size: 4,
                global: false,
                name: "s".into(),
            },
            Symbol {
                addr: 5,
                size: 0,
                global: true,
                name: "_start".into(),
            },
        ];
        sort_symbols(&mut syms);
        let names: Vec<_> = syms.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["_start", "strdup"]);
        let info = ModuleInfo {
            dwarf: None,
            symbols: syms,
        };
        assert_eq!(info.symbol(4), None);
        assert_eq!(info.symbol(7), Some("_start"));
        assert_eq!(info.symbol(13), Some("strdup"));
        assert_eq!(info.symbol(14), None, "past the end of a sized symbol");
    }

    /// Real binaries compiled at test time, symbolized through a dump built in memory.
    mod compiled {
        use super::super::*;
        use heapledger_format::{Dump, Module, Segment};
        use object::ObjectSegment;
        use std::process::Command;

        const C_SOURCE: &str = "#include <stdlib.h>
__attribute__((noinline)) void *leaky(int n) {
    return malloc(n);
}
int main(void) { return leaky(16) == 0; }
";

        const CXX_SOURCE: &str = "#include <cstdlib>
struct Widget { static void *make(int n); };
__attribute__((noinline)) void *Widget::make(int n) {
    return std::malloc(n);
}
int main() { return Widget::make(16) == nullptr; }
";

        /// A scratch directory per test, removed on drop.
        struct Scratch(PathBuf);

        impl Scratch {
            fn new(name: &str) -> Scratch {
                let dir = std::env::temp_dir()
                    .join(format!("heapledger-sym-{}-{name}", std::process::id()));
                let _ = std::fs::remove_dir_all(&dir);
                std::fs::create_dir_all(&dir).unwrap();
                Scratch(dir)
            }
        }

        impl Drop for Scratch {
            fn drop(&mut self) {
                let _ = std::fs::remove_dir_all(&self.0);
            }
        }

        fn sh(program: &str, args: &[&str]) {
            let status = Command::new(program)
                .args(args)
                .status()
                .unwrap_or_else(|e| panic!("cannot run {program} (needed by this test): {e}"));
            assert!(status.success(), "{program} {args:?} failed");
        }

        /// Compiles `source` (C, or C++ when `cxx`) into `dir/name` with extra `flags`.
        fn compile(dir: &Path, name: &str, source: &str, cxx: bool, flags: &[&str]) -> PathBuf {
            let src = dir.join(if cxx {
                format!("{name}.cc")
            } else {
                format!("{name}.c")
            });
            std::fs::write(&src, source).unwrap();
            let out = dir.join(name);
            let mut args = vec![
                "-O0",
                "-Wl,--build-id",
                "-o",
                out.to_str().unwrap(),
                src.to_str().unwrap(),
            ];
            args.extend_from_slice(flags);
            sh(if cxx { "c++" } else { "cc" }, &args);
            out
        }

        /// The address of function symbol `name` in `binary`, from its own symbol table.
        fn symbol_address(binary: &Path, name: &str) -> u64 {
            let data = std::fs::read(binary).unwrap();
            let obj = object::File::parse(&*data).unwrap();
            obj.symbols()
                .find(|s| s.name() == Ok(name))
                .map(|s| s.address())
                .unwrap_or_else(|| panic!("{name} not in {}", binary.display()))
        }

        /// A dump with `binary` loaded at `base` and one block allocated from `pcs`.
        fn dump_for(binary: &Path, base: u64, pcs: Vec<u64>) -> Dump {
            let data = std::fs::read(binary).unwrap();
            let obj = object::File::parse(&*data).unwrap();
            let segments = obj
                .segments()
                .map(|s| {
                    let flags = match s.flags() {
                        object::SegmentFlags::Elf { p_flags } => u64::from(p_flags),
                        _ => 0,
                    };
                    Segment {
                        vaddr: s.address(),
                        memsz: s.size(),
                        flags,
                    }
                })
                .collect();
            let build_id = obj.build_id().unwrap().map(hex).unwrap_or_default();
            let text = include_str!("../tests/data/small.json");
            let mut dump = heapledger_format::parse(text.as_bytes()).unwrap();
            let path = binary.to_str().unwrap().to_owned();
            dump.exe = path.clone();
            dump.modules = vec![Module {
                path,
                build_id,
                base,
                segments,
                loaded: true,
                stacks_to: None,
            }];
            dump.stacks = vec![vec![], pcs];
            dump.blocks.truncate(1);
            dump.blocks[0].stack = 1;
            dump.errors.clear();
            dump.validate().unwrap();
            dump
        }

        fn assert_line(frame: &Frame, function: &str, file_suffix: &str, line: u32) {
            assert_eq!(frame.function.as_deref(), Some(function), "{frame:?}");
            assert!(
                frame
                    .file
                    .as_deref()
                    .is_some_and(|f| f.ends_with(file_suffix)),
                "{frame:?}"
            );
            assert_eq!(frame.line, Some(line), "{frame:?}");
            assert!(!frame.inlined);
        }

        #[test]
        fn dwarf_non_pie_at_base_zero() {
            let scratch = Scratch::new("nopie");
            let bin = compile(
                &scratch.0,
                "t",
                C_SOURCE,
                false,
                &["-g", "-no-pie", "-fno-pie"],
            );
            // A return address one past the function's first byte: the probe (pc - 1) is the function's entry,
            // whose line is the line the function starts on.
            let pc = symbol_address(&bin, "leaky") + 1;
            let main_pc = symbol_address(&bin, "main") + 1;
            let dump = dump_for(&bin, 0, vec![pc, main_pc]);
            let mut sym = Symbolizer::new(&dump);
            let frames = sym.stack(dump.stack(1));
            assert_eq!(frames.len(), 2, "{frames:?}");
            assert_line(&frames[0], "leaky", "t.c", 2);
            assert_line(&frames[1], "main", "t.c", 5);
            assert_eq!(frames[0].address, pc);
            assert_eq!(frames[0].offset, pc);
            assert_eq!(frames[0].module.as_deref(), Some(bin.to_str().unwrap()));
            assert!(sym.warnings().is_empty(), "{:?}", sym.warnings());
        }

        #[test]
        fn dwarf_pie_with_load_bias() {
            let scratch = Scratch::new("pie");
            let bin = compile(&scratch.0, "t", C_SOURCE, false, &["-g", "-pie", "-fpie"]);
            let base = 0x5555_5555_4000;
            let offset = symbol_address(&bin, "leaky") + 1;
            let dump = dump_for(&bin, base, vec![base + offset]);
            let mut sym = Symbolizer::new(&dump);
            let frames = sym.stack(dump.stack(1));
            assert_line(&frames[0], "leaky", "t.c", 2);
            assert_eq!(
                (frames[0].address, frames[0].offset),
                (base + offset, offset)
            );
            // Outside every segment: no module, no name, the address kept as is.
            let outside = sym.stack(&[0x10]);
            assert_eq!(
                (outside[0].module.clone(), outside[0].function.clone()),
                (None, None)
            );
        }

        /// With optimisation, a helper inlined into its caller shows up as its own frame, marked inlined, at the
        /// same address as the caller's frame.
        #[test]
        #[cfg(target_arch = "x86_64")]
        fn inlined_frames() {
            let source = "#include <string.h>
static inline __attribute__((always_inline)) char *dup_it(const char *s) {
    return strdup(s);
}
__attribute__((noinline)) char *outer(const char *s) {
    char *p = dup_it(s);
    if (p) p[0] = 'x';
    return p;
}
int main(int argc, char **argv) { return outer(argv[0]) == 0; }
";
            let scratch = Scratch::new("inline");
            let bin = compile(
                &scratch.0,
                "i",
                source,
                false,
                &["-g", "-O2", "-no-pie", "-fno-pie"],
            );
            // The return address of the first `call rel32` (opcode 0xe8) in `outer`: the strdup call.
            let data = std::fs::read(&bin).unwrap();
            let obj = object::File::parse(&*data).unwrap();
            let outer = obj.symbols().find(|s| s.name() == Ok("outer")).unwrap();
            let section = obj
                .section_by_index(outer.section_index().unwrap())
                .unwrap();
            let code = section.data().unwrap();
            let start = (outer.address() - section.address()) as usize;
            let call = code[start..start + outer.size() as usize]
                .iter()
                .position(|&b| b == 0xe8)
                .unwrap();
            let pc = outer.address() + call as u64 + 5;
            let dump = dump_for(&bin, 0, vec![pc]);
            let frames = Symbolizer::new(&dump).stack(dump.stack(1));
            assert_eq!(frames.len(), 2, "{frames:?}");
            assert_eq!(
                (
                    frames[0].function.as_deref(),
                    frames[0].line,
                    frames[0].inlined
                ),
                (Some("dup_it"), Some(3), true)
            );
            assert_line(&frames[1], "outer", "i.c", 6);
            assert_eq!(frames[0].address, frames[1].address);
        }

        #[test]
        fn cpp_names_are_demangled_with_parameters() {
            let scratch = Scratch::new("cxx");
            let bin = compile(
                &scratch.0,
                "w",
                CXX_SOURCE,
                true,
                &["-g", "-no-pie", "-fno-pie"],
            );
            let pc = symbol_address(&bin, "_ZN6Widget4makeEi") + 1;
            let dump = dump_for(&bin, 0, vec![pc]);
            let frames = Symbolizer::new(&dump).stack(dump.stack(1));
            assert_line(&frames[0], "Widget::make(int)", "w.cc", 3);
        }

        #[test]
        fn symbol_table_without_dwarf() {
            let scratch = Scratch::new("nodebug");
            let bin = compile(
                &scratch.0,
                "t",
                C_SOURCE,
                false,
                &["-g0", "-no-pie", "-fno-pie"],
            );
            let pc = symbol_address(&bin, "leaky") + 3;
            let dump = dump_for(&bin, 0, vec![pc]);
            let mut sym = Symbolizer::new(&dump);
            let frames = sym.stack(dump.stack(1));
            assert_eq!(frames[0].function.as_deref(), Some("leaky"));
            assert_eq!((frames[0].file.as_deref(), frames[0].line), (None, None));
            // The main executable without debug info deserves a hint.
            assert!(
                sym.warnings().iter().any(|w| w.contains("no debug info")),
                "{:?}",
                sym.warnings()
            );
        }

        #[test]
        fn separate_debug_file_by_debuglink_and_by_build_id() {
            let scratch = Scratch::new("split");
            let bin = compile(
                &scratch.0,
                "t",
                C_SOURCE,
                false,
                &["-g", "-no-pie", "-fno-pie"],
            );
            let pc = symbol_address(&bin, "leaky") + 1;
            let (b, dbg) = (bin.to_str().unwrap(), format!("{}.debug", bin.display()));
            sh("objcopy", &["--only-keep-debug", b, &dbg]);
            sh(
                "objcopy",
                &["--strip-all", &format!("--add-gnu-debuglink={dbg}"), b],
            );
            let dump = dump_for(&bin, 0, vec![pc]);

            let frames = Symbolizer::new(&dump).stack(dump.stack(1));
            assert_line(&frames[0], "leaky", "t.c", 2);

            // Move the debug file under a private debug root, by build-id; the debuglink now finds nothing.
            let id = &dump.modules[0].build_id;
            let root = scratch.0.join("debug-root");
            let by_id = root.join(".build-id").join(&id[..2]);
            std::fs::create_dir_all(&by_id).unwrap();
            std::fs::rename(&dbg, by_id.join(format!("{}.debug", &id[2..]))).unwrap();
            let mut sym = Symbolizer::new(&dump);
            sym.debug_root = root;
            assert_line(&sym.stack(dump.stack(1))[0], "leaky", "t.c", 2);
        }

        #[test]
        fn retarget_reuses_opened_modules_and_renews_warnings() {
            let scratch = Scratch::new("retarget");
            let bin = compile(
                &scratch.0,
                "t",
                C_SOURCE,
                false,
                &["-g0", "-no-pie", "-fno-pie"],
            );
            let pc = symbol_address(&bin, "leaky") + 1;
            let dump = dump_for(&bin, 0, vec![pc]);
            let mut sym = Symbolizer::new(&dump);
            assert_eq!(
                sym.stack(dump.stack(1))[0].function.as_deref(),
                Some("leaky")
            );
            assert_eq!(sym.warnings().len(), 1);
            // Gone from disk, but already opened: the second dump of the same run still symbolizes.
            std::fs::remove_file(&bin).unwrap();
            let second = dump_for_missing(&dump, 0x1000);
            sym.retarget(&second);
            assert!(sym.warnings().is_empty());
            let frames = sym.stack(&[0x1000 + pc]);
            assert_eq!(frames[0].function.as_deref(), Some("leaky"));
            assert_eq!(frames[0].offset, pc);
            assert_eq!(
                sym.warnings().len(),
                1,
                "the no-debug-info note is per dump"
            );
        }

        /// `dump` with its module moved to `base`.
        fn dump_for_missing(dump: &Dump, base: u64) -> Dump {
            let mut d = dump.clone();
            d.modules[0].base = base;
            d
        }

        /// glibc-style aliases: DWARF knows the definition's internal name, users know the public alias.
        #[test]
        fn public_alias_wins_over_internal_dwarf_name() {
            let source = "#include <string.h>
char *__internal_dup(const char *s) { return strdup(s); }
extern char *mydup(const char *s) __attribute__((alias(\"__internal_dup\")));
int main(int argc, char **argv) { return mydup(argv[0]) == 0; }
";
            let scratch = Scratch::new("alias");
            let bin = compile(
                &scratch.0,
                "a",
                source,
                false,
                &["-g", "-no-pie", "-fno-pie"],
            );
            let pc = symbol_address(&bin, "mydup") + 1;
            let dump = dump_for(&bin, 0, vec![pc]);
            let frames = Symbolizer::new(&dump).stack(dump.stack(1));
            assert_line(&frames[0], "mydup", "a.c", 2);
        }

        #[test]
        fn build_id_mismatch_and_missing_module_warn() {
            let scratch = Scratch::new("mismatch");
            let bin = compile(
                &scratch.0,
                "t",
                C_SOURCE,
                false,
                &["-g", "-no-pie", "-fno-pie"],
            );
            let pc = symbol_address(&bin, "leaky") + 1;
            let mut dump = dump_for(&bin, 0, vec![pc]);
            dump.modules[0].build_id = "00ff00ff".into();
            let mut sym = Symbolizer::new(&dump);
            let frames = sym.stack(dump.stack(1));
            assert_eq!(frames[0].function, None);
            assert_eq!(frames[0].offset, pc);
            assert!(
                sym.warnings()[0].contains("build-id"),
                "{:?}",
                sym.warnings()
            );

            dump.modules[0].path = scratch.0.join("gone").display().to_string();
            let mut sym = Symbolizer::new(&dump);
            sym.stack(dump.stack(1));
            sym.stack(dump.stack(1));
            assert_eq!(
                sym.warnings().len(),
                1,
                "one warning per module, not per frame"
            );
            assert!(sym.warnings()[0].ends_with("not found; frames shown as module+offset"));
        }
    }
}
