//! Shared by the gate tests of the CLI: running `heapledger`, scratch directories, and synthetic dumps whose
//! stacks point into a real compiled program (`tests/data/gate_app.c`), so that the CLI symbolizes them to
//! real function names, files and lines without the preload library.

#![allow(dead_code)]

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

use object::{Object, ObjectSegment, ObjectSymbol};

pub const BIN: &str = env!("CARGO_BIN_EXE_heapledger");

/// A scratch directory per test, removed on drop unless the test failed.
pub struct Scratch(pub PathBuf);

impl Scratch {
    pub fn new(name: &str) -> Scratch {
        let dir =
            std::env::temp_dir().join(format!("heapledger-gate-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Scratch(dir)
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }

    /// Writes `text` to `name` and returns the path as a string.
    pub fn write(&self, name: &str, text: impl AsRef<[u8]>) -> String {
        let p = self.path(name);
        std::fs::write(&p, text).unwrap();
        p.to_str().unwrap().to_owned()
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("test files kept in {}", self.0.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

/// Runs `heapledger args` with a clean environment in `cwd`.
pub fn heapledger_in(cwd: &Path, args: &[&str]) -> Output {
    let mut cmd = Command::new(BIN);
    cmd.args(args).current_dir(cwd).env_remove("LD_PRELOAD");
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("HEAPLEDGER_") {
            cmd.env_remove(k);
        }
    }
    cmd.output().unwrap()
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Exit code, with the output in the message when it is not `expected`.
pub fn assert_code(o: &Output, expected: i32) {
    assert_eq!(
        o.status.code(),
        Some(expected),
        "stdout:\n{}\nstderr:\n{}",
        stdout(o),
        stderr(o)
    );
}

/// The compiled `gate_app.c`: where each function is, and its load segments.
pub struct App {
    pub path: PathBuf,
    pub build_id: String,
    pub segments: Vec<(u64, u64, u64)>,
    functions: HashMap<String, (u64, u64)>,
}

/// Load bias used for the app in every synthetic dump.
pub const BASE: u64 = 0x5555_5555_0000;

impl App {
    /// A return address inside `function` (its middle), as the tracer would record it.
    pub fn pc(&self, function: &str) -> u64 {
        let (addr, size) = self.functions[function];
        BASE + addr + size.max(2) / 2
    }
}

/// Compiles `gate_app.c` (`cc -g -O0`) into cargo's scratch directory for tests, once per source text: the
/// file is named by a hash of the source and renamed into place, so test binaries running at the same time
/// share it safely.
pub fn app() -> &'static App {
    static APP: OnceLock<App> = OnceLock::new();
    APP.get_or_init(|| {
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR"));
        std::fs::create_dir_all(dir).unwrap();
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/gate_app.c");
        let text = std::fs::read(&src).unwrap();
        let hash = text.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| {
            (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
        });
        let path = dir.join(format!("gate_app-{hash:016x}"));
        if !path.is_file() {
            let tmp = dir.join(format!("gate_app-{hash:016x}.tmp.{}", std::process::id()));
            let st = Command::new("cc")
                .args(["-g", "-O0", "-Wall", "-Wl,--build-id", "-o"])
                .arg(&tmp)
                .arg(&src)
                .status()
                .expect("cc is needed by the gate tests");
            assert!(st.success(), "cc gate_app.c failed");
            std::fs::rename(&tmp, &path).unwrap();
        }
        let data = std::fs::read(&path).unwrap();
        let file = object::File::parse(&*data).unwrap();
        let build_id = file
            .build_id()
            .ok()
            .flatten()
            .map(|b| b.iter().map(|x| format!("{x:02x}")).collect())
            .unwrap_or_default();
        let segments = file
            .segments()
            .map(|s| {
                let flags = match s.flags() {
                    object::SegmentFlags::Elf { p_flags } => u64::from(p_flags),
                    _ => 5,
                };
                (s.address(), s.size(), flags)
            })
            .collect();
        let functions = file
            .symbols()
            .filter(|s| s.kind() == object::SymbolKind::Text && s.size() > 0)
            .filter_map(|s| Some((s.name().ok()?.to_owned(), (s.address(), s.size()))))
            .collect();
        App {
            path,
            build_id,
            segments,
            functions,
        }
    })
}

/// A live block of a synthetic dump.
pub struct B {
    pub size: u64,
    pub stack: &'static [&'static str],
    pub family: u64,
    pub class: u64,
}

/// Shorthand: a malloc'd block of `size` bytes from `stack` with reachability `class`.
pub fn block(size: u64, stack: &'static [&'static str], class: u64) -> B {
    B {
        size,
        stack,
        family: 0,
        class,
    }
}

/// A bad free of a synthetic dump.
pub struct E {
    pub kind: &'static str,
    pub size: u64,
    pub allocator: &'static str,
    pub freed_with: &'static str,
    pub detail: &'static str,
    pub stack: &'static [&'static str],
    pub alloc: Option<&'static [&'static str]>,
    pub first_free: Option<&'static [&'static str]>,
}

pub const DEFINITE: u64 = 2;
pub const INDIRECT: u64 = 3;
pub const REACHABLE: u64 = 1;

/// A complete, valid dump of process `pid` with these blocks and errors, in the library's format.
pub fn dump(pid: u64, reason: &str, detail: &str, blocks: &[B], errors: &[E]) -> String {
    let app = app();
    let mut stacks: Vec<Vec<u64>> = vec![vec![]];
    let mut id = |s: &[&str]| -> usize {
        let pcs: Vec<u64> = s.iter().map(|f| app.pc(f)).collect();
        match stacks.iter().position(|x| *x == pcs) {
            Some(i) => i,
            None => {
                stacks.push(pcs);
                stacks.len() - 1
            }
        }
    };
    let mut block_rows = Vec::new();
    let (mut live_blocks, mut live_bytes) = (0u64, 0u64);
    for (i, b) in blocks.iter().enumerate() {
        let s = id(b.stack);
        live_blocks += 1;
        live_bytes += b.size;
        block_rows.push(format!(
            "[{}, {}, {s}, {}, {pid}, {}, {}]",
            0x7f00_0000_0000u64 + (i as u64) * 0x1000,
            b.size,
            b.family,
            i + 1,
            b.class
        ));
    }
    let mut counts: HashMap<&str, u64> = HashMap::new();
    let mut error_rows = Vec::new();
    for (i, e) in errors.iter().enumerate() {
        *counts.entry(e.kind).or_default() += 1;
        let s = id(e.stack);
        let a = e.alloc.map_or("null".to_owned(), |a| id(a).to_string());
        let f = e
            .first_free
            .map_or("null".to_owned(), |f| id(f).to_string());
        error_rows.push(format!(
            r#"{{ "kind": "{}", "addr": {}, "size": {}, "allocator": "{}", "freed_with": "{}", "tid": {pid}, "detail": "{}", "stack": {s}, "alloc_stack": {a}, "first_free_stack": {f} }}"#,
            e.kind,
            0x7e00_0000_0000u64 + i as u64 * 16,
            e.size,
            e.allocator,
            e.freed_with,
            e.detail
        ));
    }
    let c = |k: &str| counts.get(k).copied().unwrap_or(0);
    let segs: Vec<String> = app
        .segments
        .iter()
        .map(|(a, s, f)| format!("[{a}, {s}, {f}]"))
        .collect();
    let stack_rows: Vec<String> = stacks
        .iter()
        .map(|s| {
            format!(
                "[{}]",
                s.iter().map(u64::to_string).collect::<Vec<_>>().join(", ")
            )
        })
        .collect();
    format!(
        r#"{{
  "format": "heapledger", "version": 1, "reason": "{reason}", "detail": "{detail}", "platform": "linux-x86_64",
  "pid": {pid}, "ppid": 1, "exe": "{exe}", "cmdline": ["gate_app", "{pid}"], "snapshot": 0,
  "time_ns": 2, "start_time_ns": {pid}, "monotonic_ns": 3, "depth": 32, "sample_bytes": 0,
  "totals": {{ "allocations": {live_blocks}, "frees": 0, "bytes_allocated": {live_bytes}, "bytes_freed": 0 }},
  "live": {{ "blocks": {live_blocks}, "bytes": {live_bytes} }},
  "error_counts": {{ "double_free": {}, "invalid_free": {}, "mismatched_free": {}, "cross_heap_free": {} }},
  "tracer": {{ "lost_blocks": 0, "lost_stacks": 0, "lost_errors": 0, "truncated_stacks": 0, "memory_bytes": 4096 }},
  "allocators": ["malloc", "aligned", "new", "new[]"],
  "modules": [ {{ "path": "{exe}", "build_id": "{bid}", "base": {BASE}, "segments": [{segs}], "loaded": true }} ],
  "stacks": [{stacks}],
  "blocks": [{blocks}],
  "errors": [{errors}],
  "complete": true
}}
"#,
        c("double_free"),
        c("invalid_free"),
        c("mismatched_free"),
        c("cross_heap_free"),
        exe = app.path.display(),
        bid = app.build_id,
        segs = segs.join(", "),
        stacks = stack_rows.join(", "),
        blocks = block_rows.join(", "),
        errors = error_rows.join(",\n    "),
    )
}

/// The leaks of the standard example: leak_one definitely lost (100 bytes), leak_two definitely lost (200),
/// make_node definitely lost (300) holding two indirectly lost blocks from leak_one (2 x 10), and a reachable
/// block from leak_two.
pub fn example_blocks() -> Vec<B> {
    vec![
        block(100, &["leak_one", "main"], DEFINITE),
        block(200, &["leak_two", "main"], DEFINITE),
        block(300, &["make_node", "main"], DEFINITE),
        block(10, &["leak_one", "make_node", "main"], INDIRECT),
        block(10, &["leak_one", "make_node", "main"], INDIRECT),
        block(50, &["leak_two", "main"], REACHABLE),
    ]
}

/// A double free in release_twice (first free also there) of a block from leak_one, and an invalid free in
/// bad_release.
pub fn example_errors() -> Vec<E> {
    vec![
        E {
            kind: "double_free",
            size: 101,
            allocator: "malloc",
            freed_with: "free",
            detail: "",
            stack: &["release_twice", "main"],
            alloc: Some(&["leak_one", "main"]),
            first_free: Some(&["release_twice", "main"]),
        },
        E {
            kind: "invalid_free",
            size: 201,
            allocator: "malloc",
            freed_with: "free",
            detail: "interior",
            stack: &["bad_release", "main"],
            alloc: Some(&["leak_two", "main"]),
            first_free: None,
        },
    ]
}

/// Parses `check --format json` output.
pub fn json(o: &Output) -> serde_json::Value {
    serde_json::from_slice(&o.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}):\n{}\nstderr:\n{}", stdout(o), stderr(o)))
}

/// `(kind, status, innermost function)` of each finding of a `check --format json` output.
pub fn findings(v: &serde_json::Value) -> Vec<(String, String, String)> {
    v["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            (
                f["kind"].as_str().unwrap().to_owned(),
                f["status"].as_str().unwrap().to_owned(),
                f["stacks"][0]["frames"][0]["function"]
                    .as_str()
                    .unwrap_or("")
                    .to_owned(),
            )
        })
        .collect()
}
