//! Harness shared by the integration tests: find the built tracer, compile the C/C++ programs in
//! `tests/programs/`, run them under the preload library, and read back their dumps and `heapledger report`.
//!
//! The tests drive the release build: run them with `cargo build --release && cargo test --release`. They do not
//! build the tracer themselves (cargo holds the build lock while tests run); they stop with a clear message when
//! `libheapledger.so` or `heapledger` is missing.

// Each test file uses a different part of the harness.
#![allow(dead_code)]

use serde_json::Value;
use std::collections::HashMap;
use std::ffi::OsStr;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

/// A traced program that runs longer than this is treated as hung (a deadlock in the tracer).
pub const TIMEOUT: Duration = Duration::from_secs(120);

// ---- locating the build ---------------------------------------------------------------------------------------

/// The directory holding `libheapledger.so` and `heapledger`: the profile directory this test binary was built in
/// (`target/<profile>/deps/<test>` -> `target/<profile>`), else `$CARGO_TARGET_DIR/release`, else
/// `<workspace>/target/release`.
pub fn bin_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let mut candidates = Vec::new();
        if let Ok(exe) = std::env::current_exe() {
            if let Some(profile) = exe.parent().and_then(Path::parent) {
                candidates.push(profile.to_path_buf());
            }
        }
        if let Some(t) = std::env::var_os("CARGO_TARGET_DIR") {
            candidates.push(PathBuf::from(t).join("release"));
        }
        candidates.push(Path::new(env!("CARGO_MANIFEST_DIR")).join("target/release"));
        for dir in &candidates {
            if dir.join("libheapledger.so").is_file() && dir.join("heapledger").is_file() {
                return dir.clone();
            }
        }
        panic!(
            "libheapledger.so and heapledger not found in any of {candidates:?}: build them first, \
             `cargo build --release && cargo test --release`"
        );
    })
}

/// The preload library.
pub fn lib() -> PathBuf {
    bin_dir().join("libheapledger.so")
}

/// The CLI.
pub fn cli() -> PathBuf {
    bin_dir().join("heapledger")
}

/// A source file in `tests/programs/`.
pub fn program_source(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/programs")
        .join(name)
}

// ---- scratch directories --------------------------------------------------------------------------------------

/// A fresh directory under the system temp dir, removed when the test passes and kept (path printed) when it fails.
pub struct Scratch {
    pub path: PathBuf,
}

impl Scratch {
    pub fn new(tag: &str) -> Scratch {
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let path =
            std::env::temp_dir().join(format!("heapledger-test-{tag}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).expect("create scratch dir");
        Scratch { path }
    }

    pub fn join(&self, p: impl AsRef<Path>) -> PathBuf {
        self.path.join(p)
    }

    /// `<scratch>/dumps`, created on demand.
    pub fn dump_dir(&self) -> PathBuf {
        let d = self.path.join("dumps");
        std::fs::create_dir_all(&d).expect("create dump dir");
        d
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("test files kept in {}", self.path.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}

// ---- compiling the test programs ------------------------------------------------------------------------------

/// Where compiled programs are cached: next to the build they test, keyed by source text and flags.
fn program_cache() -> PathBuf {
    let d = bin_dir().join("heapledger-test-programs");
    std::fs::create_dir_all(&d).expect("create program cache");
    d
}

fn fnv1a(data: &[u8], mut h: u64) -> u64 {
    for &b in data {
        h ^= b as u64;
        h = h.wrapping_mul(0x100_0000_01b3);
    }
    h
}

/// Compiles `tests/programs/<source>` with `-g -O0` (C: `cc`; C++: `c++ -std=c++17 -fsized-deallocation`) plus
/// `extra` (after the source, so `-l` flags work) and returns the executable. `-shared -fPIC` in `extra` makes a
/// shared library. Results are cached by content, so each program is built once however many tests use it.
pub fn compile(source: &str, extra: &[&str]) -> PathBuf {
    try_compile(source, extra).unwrap_or_else(|e| panic!("{e}"))
}

/// Like [`compile`], returning the compiler's message instead of panicking (for optional toolchains).
pub fn try_compile(source: &str, extra: &[&str]) -> Result<PathBuf, String> {
    static BUILT: OnceLock<Mutex<HashMap<String, PathBuf>>> = OnceLock::new();
    let key = format!("{source} {}", extra.join(" "));
    // One compile at a time per test binary; cached results are returned at once.
    let mut built = BUILT.get_or_init(Default::default).lock().unwrap();
    if let Some(p) = built.get(&key) {
        return Ok(p.clone());
    }
    let src = program_source(source);
    let text = std::fs::read(&src).unwrap_or_else(|e| panic!("{}: {e}", src.display()));
    let cxx = source.ends_with(".cc") || source.ends_with(".cpp");
    let (compiler, lang_flags): (&str, &[&str]) = if cxx {
        ("c++", &["-std=c++17", "-fsized-deallocation"])
    } else {
        ("cc", &["-std=gnu11"])
    };
    let mut flags: Vec<&str> = vec!["-g", "-O0", "-Wall", "-Wextra"];
    flags.extend_from_slice(lang_flags);
    let mut h = fnv1a(&text, 0xcbf2_9ce4_8422_2325);
    for f in flags.iter().chain(extra) {
        h = fnv1a(f.as_bytes(), h);
        h = fnv1a(b"\0", h);
    }
    let stem = Path::new(source).file_stem().unwrap().to_string_lossy();
    let shared = extra.contains(&"-shared");
    let name = if shared {
        format!("lib{stem}-{h:016x}.so")
    } else {
        format!("{stem}-{h:016x}")
    };
    let out = program_cache().join(name);
    if !out.is_file() {
        // Built under a private name and renamed: parallel test binaries never see a half-written file.
        static N: AtomicU32 = AtomicU32::new(0);
        let tmp = out.with_extension(format!(
            "tmp.{}.{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let output = Command::new(compiler)
            .args(&flags)
            .arg(&src)
            .arg("-o")
            .arg(&tmp)
            .args(extra)
            .output()
            .map_err(|e| format!("cannot run {compiler}: {e}"))?;
        if !output.status.success() {
            let _ = std::fs::remove_file(&tmp);
            return Err(format!(
                "{compiler} {source} {extra:?} failed:\n{}",
                String::from_utf8_lossy(&output.stderr)
            ));
        }
        std::fs::rename(&tmp, &out).expect("rename compiled program");
    }
    built.insert(key, out.clone());
    Ok(out)
}

/// 1-based line of the only line of `tests/programs/<source>` containing `marker` (e.g. `/* ALLOC_LINE */`).
pub fn line_of(source: &str, marker: &str) -> u64 {
    let text = std::fs::read_to_string(program_source(source)).expect("read program source");
    let hits: Vec<u64> = text
        .lines()
        .enumerate()
        .filter(|(_, l)| l.contains(marker))
        .map(|(i, _)| i as u64 + 1)
        .collect();
    assert_eq!(hits.len(), 1, "marker {marker} in {source}: {hits:?}");
    hits[0]
}

// ---- running programs -----------------------------------------------------------------------------------------

/// What a finished process left behind.
#[derive(Debug)]
pub struct Output {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl Output {
    /// Exit code, panicking (with the output) if the process was killed by a signal.
    pub fn code(&self) -> i32 {
        self.status
            .code()
            .unwrap_or_else(|| panic!("killed by a signal: {self:#?}"))
    }

    /// Asserts exit code 0.
    pub fn assert_success(&self) -> &Self {
        assert!(self.status.success(), "program failed: {self:#?}");
        self
    }

    /// The value of each `key=<n>` line on stdout, in order.
    pub fn values(&self, key: &str) -> Vec<u64> {
        let prefix = format!("{key}=");
        self.stdout
            .lines()
            .filter_map(|l| l.strip_prefix(&prefix))
            .map(|v| v.parse().expect("number"))
            .collect()
    }

    /// The only `key=<n>` value on stdout.
    pub fn value(&self, key: &str) -> u64 {
        let v = self.values(key);
        assert_eq!(v.len(), 1, "one {key}= line expected in {:?}", self.stdout);
        v[0]
    }
}

/// Runs `cmd` to completion with its stdout and stderr captured, killing it (and failing the test) after
/// [`TIMEOUT`].
pub fn run(cmd: &mut Command) -> Output {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("cannot spawn {cmd:?}: {e}"));
    let mut out = child.stdout.take().unwrap();
    let mut err = child.stderr.take().unwrap();
    let t_out = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = out.read_to_end(&mut v);
        v
    });
    let t_err = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = err.read_to_end(&mut v);
        v
    });
    let deadline = Instant::now() + TIMEOUT;
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait") {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{cmd:?} still running after {TIMEOUT:?}: killed (tracer deadlock?)");
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    Output {
        status,
        stdout: String::from_utf8_lossy(&t_out.join().unwrap()).into_owned(),
        stderr: String::from_utf8_lossy(&t_err.join().unwrap()).into_owned(),
    }
}

/// A command with none of the tracer's settings inherited from the test's own environment.
pub fn clean_command(prog: impl AsRef<OsStr>) -> Command {
    let mut cmd = Command::new(prog);
    cmd.env_remove("LD_PRELOAD");
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("HEAPLEDGER_") {
            cmd.env_remove(k);
        }
    }
    cmd
}

/// A command running `prog` under the tracer, dumps going to `<dump_dir>/dump.%p.json`.
pub fn traced_command(prog: impl AsRef<OsStr>, dump_dir: &Path) -> Command {
    let mut cmd = clean_command(prog);
    cmd.env("LD_PRELOAD", lib())
        .env("HEAPLEDGER_OUT", dump_dir.join("dump.%p.json"));
    cmd
}

/// A traced run: the process's output and the dumps it (and its children) wrote.
#[derive(Debug)]
pub struct Traced {
    pub out: Output,
    pub dumps: Vec<Dump>,
}

impl Traced {
    /// The only dump.
    pub fn dump(&self) -> &Dump {
        assert_eq!(
            self.dumps.len(),
            1,
            "exactly one dump expected: {:?}\n{:#?}",
            self.dumps.iter().map(|d| &d.path).collect::<Vec<_>>(),
            self.out
        );
        &self.dumps[0]
    }

    /// The dump written by process `pid`.
    pub fn dump_of(&self, pid: u64) -> &Dump {
        let of: Vec<&Dump> = self.dumps.iter().filter(|d| d.pid() == pid).collect();
        assert_eq!(of.len(), 1, "one dump of pid {pid} expected");
        of[0]
    }
}

/// Runs `prog args` under the tracer (dumps in `scratch/dumps`, which must hold no earlier dumps).
pub fn traced(scratch: &Scratch, prog: &Path, args: &[&str]) -> Traced {
    let dir = scratch.dump_dir();
    let out = run(traced_command(prog, &dir)
        .args(args)
        .current_dir(&scratch.path));
    Traced {
        out,
        dumps: read_dumps(&dir),
    }
}

/// Every `*.json` dump in `dir`, sorted by path.
pub fn read_dumps(dir: &Path) -> Vec<Dump> {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
        .expect("read dump dir")
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension() == Some(OsStr::new("json")))
        .collect();
    paths.sort();
    paths.into_iter().map(|p| Dump::load(&p)).collect()
}

// ---- dumps ----------------------------------------------------------------------------------------------------

/// `totals` of a dump or report.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Totals {
    pub allocations: u64,
    pub frees: u64,
    pub bytes_allocated: u64,
    pub bytes_freed: u64,
}

impl Totals {
    pub const fn new(allocations: u64, frees: u64, bytes_allocated: u64, bytes_freed: u64) -> Self {
        Totals {
            allocations,
            frees,
            bytes_allocated,
            bytes_freed,
        }
    }

    pub fn from_json(v: &Value) -> Self {
        Totals::new(
            u(&v["allocations"]),
            u(&v["frees"]),
            u(&v["bytes_allocated"]),
            u(&v["bytes_freed"]),
        )
    }
}

impl std::ops::Add for Totals {
    type Output = Totals;
    fn add(self, o: Totals) -> Totals {
        Totals::new(
            self.allocations + o.allocations,
            self.frees + o.frees,
            self.bytes_allocated + o.bytes_allocated,
            self.bytes_freed + o.bytes_freed,
        )
    }
}

impl std::ops::Sub for Totals {
    type Output = Totals;
    fn sub(self, o: Totals) -> Totals {
        Totals::new(
            self.allocations - o.allocations,
            self.frees - o.frees,
            self.bytes_allocated - o.bytes_allocated,
            self.bytes_freed - o.bytes_freed,
        )
    }
}

/// A JSON number as u64 (panics on anything else).
pub fn u(v: &Value) -> u64 {
    v.as_u64()
        .unwrap_or_else(|| panic!("expected an unsigned number, got {v}"))
}

/// One live block of a dump.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Block {
    pub addr: u64,
    pub size: u64,
    pub stack: u64,
    pub allocator: String,
    pub tid: u64,
}

/// A dump file, parsed.
#[derive(Debug)]
pub struct Dump {
    pub path: PathBuf,
    pub text: String,
    pub json: Value,
}

impl Dump {
    pub fn load(path: &Path) -> Dump {
        let text = std::fs::read_to_string(path)
            .unwrap_or_else(|e| panic!("read dump {}: {e}", path.display()));
        let json: Value = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("dump {} is not JSON: {e}", path.display()));
        assert_eq!(json["format"], "heapledger", "{}", path.display());
        assert_eq!(json["complete"], true, "{} is incomplete", path.display());
        Dump {
            path: path.to_path_buf(),
            text,
            json,
        }
    }

    pub fn pid(&self) -> u64 {
        u(&self.json["pid"])
    }

    pub fn reason(&self) -> &str {
        self.json["reason"].as_str().expect("reason")
    }

    pub fn totals(&self) -> Totals {
        Totals::from_json(&self.json["totals"])
    }

    /// `(blocks, bytes)` of `live`.
    pub fn live(&self) -> (u64, u64) {
        (
            u(&self.json["live"]["blocks"]),
            u(&self.json["live"]["bytes"]),
        )
    }

    /// `error_counts` as `[double_free, invalid_free, mismatched_free, cross_heap_free]`.
    pub fn error_counts(&self) -> [u64; 4] {
        let c = &self.json["error_counts"];
        [
            u(&c["double_free"]),
            u(&c["invalid_free"]),
            u(&c["mismatched_free"]),
            u(&c["cross_heap_free"]),
        ]
    }

    /// The frames of stack `id` (innermost first).
    pub fn frames(&self, id: u64) -> Vec<u64> {
        self.json["stacks"][id as usize]
            .as_array()
            .expect("frames")
            .iter()
            .map(u)
            .collect()
    }

    pub fn blocks(&self) -> Vec<Block> {
        let names: Vec<&str> = self.json["allocators"]
            .as_array()
            .expect("allocators")
            .iter()
            .map(|v| v.as_str().expect("allocator name"))
            .collect();
        self.json["blocks"]
            .as_array()
            .expect("blocks")
            .iter()
            .map(|b| {
                let fam = u(&b[3]) as usize;
                Block {
                    addr: u(&b[0]),
                    size: u(&b[1]),
                    stack: u(&b[2]),
                    allocator: names
                        .get(fam)
                        .unwrap_or_else(|| panic!("family {fam} not in {names:?}"))
                        .to_string(),
                    tid: u(&b[4]),
                }
            })
            .collect()
    }

    /// Live blocks as sorted `(size, allocator)` pairs.
    pub fn block_sizes(&self) -> Vec<(u64, String)> {
        let mut v: Vec<(u64, String)> = self
            .blocks()
            .into_iter()
            .map(|b| (b.size, b.allocator))
            .collect();
        v.sort();
        v
    }

    /// Asserts the ledger is consistent: totals balance against `live`, `live` against `blocks`, nothing lost.
    pub fn assert_balanced(&self) {
        let t = self.totals();
        let (blocks, bytes) = self.live();
        let listed = self.blocks();
        assert_eq!(
            t.allocations - t.frees,
            blocks,
            "allocations - frees != live blocks in {}: {t:?}",
            self.path.display()
        );
        assert_eq!(
            t.bytes_allocated - t.bytes_freed,
            bytes,
            "bytes allocated - freed != live bytes in {}",
            self.path.display()
        );
        assert_eq!(listed.len() as u64, blocks, "blocks listed vs live.blocks");
        assert_eq!(
            listed.iter().map(|b| b.size).sum::<u64>(),
            bytes,
            "sizes of blocks listed vs live.bytes"
        );
        assert_eq!(u(&self.json["tracer"]["lost_blocks"]), 0, "lost blocks");
    }

    /// Runs `heapledger report --format json` on this dump.
    pub fn report(&self) -> Value {
        report(&[&self.path])
    }
}

/// `(path, loaded)` of each module in a dump.
pub fn modules(dump: &Dump) -> Vec<(String, bool)> {
    dump.json["modules"]
        .as_array()
        .expect("modules")
        .iter()
        .map(|m| {
            (
                m["path"].as_str().expect("module path").to_owned(),
                m["loaded"].as_bool().expect("loaded"),
            )
        })
        .collect()
}

// ---- the CLI --------------------------------------------------------------------------------------------------

/// `heapledger report --format json DUMPS...`, which must succeed; its parsed output.
pub fn report(dumps: &[&Path]) -> Value {
    let out = run(clean_command(cli())
        .args(["report", "--format", "json"])
        .args(dumps));
    assert!(
        out.status.success(),
        "heapledger report {dumps:?} failed: {out:#?}"
    );
    serde_json::from_str(&out.stdout)
        .unwrap_or_else(|e| panic!("report is not JSON ({e}): {}", out.stdout))
}

/// The `function` of each frame (None when unknown).
pub fn functions(frames: &Value) -> Vec<Option<String>> {
    frames
        .as_array()
        .expect("frames array")
        .iter()
        .map(|f| f["function"].as_str().map(str::to_owned))
        .collect()
}

/// Whether a frame is `function` at `file`:`line` (file compared by its last path component).
pub fn frame_is(frame: &Value, function: &str, file: &str, line: u64) -> bool {
    frame["function"] == function
        && frame["file"]
            .as_str()
            .is_some_and(|f| Path::new(f).file_name() == Some(OsStr::new(file)))
        && frame["line"] == line
}

/// Panics with a readable listing unless `frames[i]` is `function` at `file:line` for each expected triple.
pub fn assert_frames(frames: &Value, expected: &[(&str, &str, u64)]) {
    let ok = expected
        .iter()
        .enumerate()
        .all(|(i, (f, file, line))| frame_is(&frames[i], f, file, *line));
    assert!(
        ok,
        "expected innermost frames {expected:?}, got:\n{}",
        describe_frames(frames)
    );
}

/// One line per frame: `function file:line (module)`.
pub fn describe_frames(frames: &Value) -> String {
    frames
        .as_array()
        .map(|a| {
            a.iter()
                .map(|f| {
                    format!(
                        "  {} {}:{} ({})",
                        f["function"].as_str().unwrap_or("?"),
                        f["file"].as_str().unwrap_or("?"),
                        f["line"],
                        f["module"].as_str().unwrap_or("?"),
                    )
                })
                .collect::<Vec<_>>()
                .join("\n")
        })
        .unwrap_or_else(|| format!("  (not an array: {frames})"))
}

// ---- C++ runtime baseline -------------------------------------------------------------------------------------

/// Runs `prog none`-style baselines: what the libraries allocate with no user code running (for C++, libstdc++'s
/// emergency exception pool). Asserts that every block of the baseline was allocated outside `prog` itself.
pub fn baseline(prog: &Path, args: &[&str]) -> (Totals, Vec<(u64, String)>) {
    let scratch = Scratch::new("baseline");
    let t = traced(&scratch, prog, args);
    t.out.assert_success();
    let d = t.dump();
    d.assert_balanced();
    let report = d.report();
    let prog_path = std::fs::canonicalize(prog).unwrap();
    for leak in report["leaks"].as_array().expect("leaks") {
        let module = leak["frames"][0]["module"].as_str().unwrap_or("");
        assert!(
            Path::new(module) != prog_path,
            "baseline block allocated by the program itself:\n{}",
            describe_frames(&leak["frames"])
        );
    }
    (d.totals(), d.block_sizes())
}

/// `a` and `b` merged, sorted.
pub fn merged(a: &[(u64, String)], b: &[(u64, &str)]) -> Vec<(u64, String)> {
    let mut v: Vec<(u64, String)> = a.to_vec();
    v.extend(b.iter().map(|(s, n)| (*s, n.to_string())));
    v.sort();
    v
}
