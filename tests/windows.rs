//! The Windows port, tested on Linux under Wine: real programs (tests/programs/windows/*.c, built here with
//! mingw-w64) run under `heapledger.exe run`, which injects `heapledger.dll`; their dumps are read here and by
//! the Linux `heapledger report`.
//!
//! Needs `scripts/build-windows.sh` to have been run (it leaves heapledger.dll and heapledger.exe in
//! target/x86_64-pc-windows-gnu/release/), `wine` and `x86_64-w64-mingw32-gcc`. Without them every test here
//! prints why and passes without checking anything (.ci/run builds them first). The Wine prefix is
//! `$WINEPREFIX`, default `~/.wine-heapledger` (what the build script prepares).

use serde_json::Value;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

/// A traced program that runs longer than this is treated as hung.
const TIMEOUT: Duration = Duration::from_secs(240);

struct Setup {
    exe: PathBuf,
    /// The Linux CLI, when built (`cargo build --release`).
    linux_cli: Option<PathBuf>,
    programs: PathBuf,
}

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target"))
}

fn have(cmd: &str, arg: &str) -> bool {
    Command::new(cmd)
        .arg(arg)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// The built Windows binaries and tools, or None (after saying why) when the Windows tests cannot run here.
fn setup() -> Option<&'static Setup> {
    static SETUP: OnceLock<Option<Setup>> = OnceLock::new();
    let s = SETUP.get_or_init(|| {
        let win = target_dir().join("x86_64-pc-windows-gnu/release");
        let (dll, exe) = (win.join("heapledger.dll"), win.join("heapledger.exe"));
        let why = if !dll.is_file() || !exe.is_file() {
            Some(format!(
                "{} or heapledger.exe missing: run scripts/build-windows.sh",
                dll.display()
            ))
        } else if !have("wine", "--version") {
            Some("wine not installed (scripts/build-windows.sh installs it)".to_owned())
        } else if !have("x86_64-w64-mingw32-gcc", "--version") {
            Some(
                "x86_64-w64-mingw32-gcc not installed (scripts/build-windows.sh installs it)"
                    .to_owned(),
            )
        } else {
            None
        };
        if let Some(why) = why {
            eprintln!("skipping the Windows tests: {why}");
            return None;
        }
        let linux_cli = [target_dir().join("release/heapledger")]
            .into_iter()
            .find(|p| p.is_file());
        let programs = target_dir().join("win-build/test-programs");
        std::fs::create_dir_all(&programs).expect("create the program cache");
        Some(Setup {
            exe,
            linux_cli,
            programs,
        })
    });
    s.as_ref()
}

/// `tests/programs/windows/NAME.c` built with mingw (cached by source text).
fn program(s: &Setup, name: &str) -> PathBuf {
    static LOCK: Mutex<()> = Mutex::new(());
    let _g = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let src =
        Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("tests/programs/windows/{name}.c"));
    let text = std::fs::read(&src).expect("read test program");
    let hash = text.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| {
        (h ^ b as u64).wrapping_mul(0x100_0000_01b3)
    });
    let exe = s.programs.join(format!("{name}-{hash:016x}.exe"));
    if !exe.is_file() {
        let tmp = exe.with_extension("tmp.exe");
        // -fno-builtin: GCC would otherwise delete malloc/free pairs whose memory is never used.
        let out = Command::new("x86_64-w64-mingw32-gcc")
            .args(["-O1", "-g", "-fno-builtin", "-Wall", "-o"])
            .arg(&tmp)
            .arg(&src)
            .output()
            .expect("run x86_64-w64-mingw32-gcc");
        assert!(
            out.status.success(),
            "compiling {name}.c failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        std::fs::rename(&tmp, &exe).expect("rename program");
    }
    exe
}

/// A Linux path as Wine sees it (its Z: drive is /).
fn win_path(p: &Path) -> String {
    format!("Z:{}", p.display()).replace('/', "\\")
}

fn wine(args: &[&std::ffi::OsStr], env: &[(&str, &str)]) -> (i32, String, String) {
    let mut cmd = Command::new("wine");
    cmd.args(args)
        .env("WINEDEBUG", "-all")
        .env("WINEARCH", "win64")
        .env_remove("DISPLAY")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if std::env::var_os("WINEPREFIX").is_none() {
        let home = std::env::var_os("HOME").expect("HOME");
        cmd.env("WINEPREFIX", Path::new(&home).join(".wine-heapledger"));
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("run wine");
    let (mut out, mut err) = (child.stdout.take().unwrap(), child.stderr.take().unwrap());
    let t_out = std::thread::spawn(move || {
        let mut s = String::new();
        std::io::Read::read_to_string(&mut out, &mut s).ok();
        s
    });
    let t_err = std::thread::spawn(move || {
        let mut s = String::new();
        std::io::Read::read_to_string(&mut err, &mut s).ok();
        s
    });
    let start = Instant::now();
    let status = loop {
        if let Some(st) = child.try_wait().expect("wait") {
            break st;
        }
        if start.elapsed() > TIMEOUT {
            let _ = child.kill();
            panic!("wine {args:?} did not finish in {TIMEOUT:?} (a deadlock in the tracer?)");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    (
        status.code().unwrap_or(-1),
        t_out.join().unwrap(),
        t_err.join().unwrap(),
    )
}

/// What one traced run left behind.
struct Run {
    code: i32,
    stdout: String,
    stderr: String,
    /// Dumps by pid.
    dumps: Vec<(PathBuf, Value)>,
    dir: PathBuf,
}

impl Run {
    /// The only dump (of the one process).
    fn dump(&self) -> &Value {
        assert_eq!(
            self.dumps.len(),
            1,
            "expected one dump; stderr:\n{}",
            self.stderr
        );
        &self.dumps[0].1
    }
}

impl Drop for Run {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "test files kept in {}\nstdout:\n{}\nstderr:\n{}",
                self.dir.display(),
                self.stdout,
                self.stderr
            );
        } else {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

fn scratch(tag: &str) -> PathBuf {
    static N: AtomicU32 = AtomicU32::new(0);
    let d = std::env::temp_dir().join(format!(
        "heapledger-win-{tag}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).expect("scratch dir");
    d
}

/// `heapledger.exe run --out <scratch>\d.%p.json -- PROGRAM ARGS` under Wine.
fn traced(s: &Setup, name: &str, args: &[&str], env: &[(&str, &str)]) -> Run {
    let prog = program(s, name);
    let dir = scratch(name);
    let pattern = format!("{}\\d.%p.json", win_path(&dir));
    let mut argv: Vec<std::ffi::OsString> = vec![
        s.exe.clone().into_os_string(),
        "run".into(),
        "--out".into(),
        pattern.into(),
        "--".into(),
        win_path(&prog).into(),
    ];
    argv.extend(args.iter().map(|a| a.into()));
    let refs: Vec<&std::ffi::OsStr> = argv.iter().map(|a| a.as_os_str()).collect();
    let (code, stdout, stderr) = wine(&refs, env);
    let mut dumps = Vec::new();
    for e in std::fs::read_dir(&dir).expect("read scratch").flatten() {
        let p = e.path();
        if p.extension().is_some_and(|x| x == "json") {
            let text = std::fs::read_to_string(&p).expect("read dump");
            let v: Value =
                serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
            dumps.push((p, v));
        }
    }
    dumps.sort_by_key(|(_, v)| v["pid"].as_u64());
    Run {
        code,
        stdout,
        stderr,
        dumps,
        dir,
    }
}

/// The program run plainly under Wine.
fn plain(s: &Setup, name: &str, args: &[&str]) -> (i32, String) {
    let prog = program(s, name);
    let mut argv: Vec<std::ffi::OsString> = vec![prog.into_os_string()];
    argv.extend(args.iter().map(|a| a.into()));
    let refs: Vec<&std::ffi::OsStr> = argv.iter().map(|a| a.as_os_str()).collect();
    let (code, out, _) = wine(&refs, &[]);
    (code, out)
}

fn family(d: &Value, b: &Value) -> String {
    d["allocators"][b[3].as_u64().unwrap() as usize]
        .as_str()
        .unwrap()
        .to_owned()
}

/// Live blocks of `size` bytes: their allocator names.
fn blocks_of(d: &Value, size: u64) -> Vec<String> {
    d["blocks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|b| b[1].as_u64() == Some(size))
        .map(|b| family(d, b))
        .collect()
}

fn errors(d: &Value) -> Vec<&Value> {
    d["errors"].as_array().unwrap().iter().collect()
}

fn total(d: &Value, k: &str) -> i64 {
    d["totals"][k].as_i64().unwrap()
}

/// The module (path) whose executable sections contain `pc`.
fn module_of(d: &Value, pc: u64) -> Option<String> {
    d["modules"].as_array().unwrap().iter().find_map(|m| {
        let base = m["base"].as_u64().unwrap();
        m["segments"]
            .as_array()
            .unwrap()
            .iter()
            .any(|s| {
                let (va, len, fl) = (
                    s[0].as_u64().unwrap(),
                    s[1].as_u64().unwrap(),
                    s[2].as_u64().unwrap(),
                );
                fl & 1 != 0 && pc >= base.wrapping_add(va) && pc < base.wrapping_add(va) + len
            })
            .then(|| m["path"].as_str().unwrap().to_owned())
    })
}

/// Stack `id` of `d`, asserted non-empty, with its innermost frame in the test program itself.
fn program_stack(d: &Value, id: &Value, what: &str) -> Vec<u64> {
    let id = id.as_u64().unwrap_or_else(|| panic!("{what}: no stack"));
    let frames: Vec<u64> = d["stacks"][id as usize]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f.as_u64().unwrap())
        .collect();
    assert!(!frames.is_empty(), "{what}: empty stack");
    let m = module_of(d, frames[0]).unwrap_or_default();
    assert!(
        m.ends_with(".exe"),
        "{what}: innermost frame {:#x} is in {m:?}, not in the program",
        frames[0]
    );
    frames
}

fn no_losses(d: &Value) {
    for k in ["lost_blocks", "lost_stacks", "lost_errors"] {
        assert_eq!(d["tracer"][k], 0, "tracer.{k}");
    }
}

/// `heapledger report --format json DUMP` with the Linux CLI (None, said on stderr, when it is not built).
fn linux_report(s: &Setup, dump: &Path) -> Option<Value> {
    let Some(cli) = &s.linux_cli else {
        eprintln!("note: target/release/heapledger not built; the Linux CLI check is skipped");
        return None;
    };
    let out = Command::new(cli)
        .args(["report", "--format", "json"])
        .arg(dump)
        .output()
        .expect("run heapledger");
    assert!(
        out.status.success(),
        "the Linux CLI cannot report a Windows dump: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Some(serde_json::from_slice(&out.stdout).expect("report JSON"))
}

// ---- tests ------------------------------------------------------------------------------------------------------

/// Exact counts: the difference between 10 rounds and 0 rounds of HeapAlloc/HeapReAlloc/HeapFree on the process
/// heap and on a private heap (the C runtime's own start-up allocations cancel out), and every leaked block,
/// with its heap.
#[test]
fn heap_counts_are_exact() {
    let Some(s) = setup() else { return };
    let zero = traced(s, "heaps", &["counts", "00"], &[]);
    let ten = traced(s, "heaps", &["counts", "10"], &[]);
    for r in [&zero, &ten] {
        assert_eq!(r.code, 0, "stdout: {}", r.stdout);
        assert!(r.stdout.contains("alive"));
        no_losses(r.dump());
        assert!(errors(r.dump()).is_empty());
    }
    let (a, b) = (zero.dump(), ten.dump());
    // Per round: HeapAlloc + HeapReAlloc (one allocation and one free) + HeapFree, on each heap.
    assert_eq!(
        total(b, "allocations") - total(a, "allocations"),
        10 * 4 + 10 + 20
    );
    assert_eq!(total(b, "frees") - total(a, "frees"), 10 * 4);
    assert_eq!(
        total(b, "bytes_allocated") - total(a, "bytes_allocated"),
        10 * 10_000 + 10 * 5000 + 20 * 6000
    );
    assert_eq!(
        total(b, "bytes_freed") - total(a, "bytes_freed"),
        10 * 10_000
    );
    assert_eq!(blocks_of(b, 5000), vec!["HeapAlloc(process heap)"; 10]);
    let private = blocks_of(b, 6000);
    assert_eq!(private.len(), 20);
    assert!(
        private
            .iter()
            .all(|f| f.starts_with("HeapAlloc(heap 0x") && *f == private[0]),
        "{private:?}"
    );
    for size in [1000, 2000, 3000, 4000] {
        assert!(
            blocks_of(b, size).is_empty(),
            "a {size}-byte block is still live"
        );
    }
    let live = b["live"]["blocks"].as_u64().unwrap() - a["live"]["blocks"].as_u64().unwrap();
    assert_eq!(live, 30);
}

/// A double HeapFree: reported with the allocation stack, the first free's stack and the second free's, not
/// passed on (the call fails as the heap would fail it, and is not counted), and the program carries on.
#[test]
fn double_heapfree_is_reported_and_survived() {
    let Some(s) = setup() else { return };
    let r = traced(s, "heaps", &["double"], &[("HEAPLEDGER_VERBOSE", "1")]);
    assert_eq!(r.code, 0, "stdout: {}", r.stdout);
    assert!(
        r.stdout.contains("second HeapFree returned 0") && r.stdout.contains("alive"),
        "{}",
        r.stdout
    );
    assert!(
        r.stderr.contains("heapledger: double_free of"),
        "the error is said as it happens:\n{}",
        r.stderr
    );
    let d = r.dump();
    assert_eq!(d["error_counts"]["double_free"], 1);
    let e = errors(d);
    assert_eq!(e.len(), 1);
    let e = e[0];
    assert_eq!(e["kind"], "double_free");
    assert_eq!(e["size"], 1111);
    assert_eq!(e["allocator"], "HeapAlloc(process heap)");
    assert_eq!(e["freed_with"], "HeapFree(process heap)");
    let second = program_stack(d, &e["stack"], "second free");
    let first = program_stack(d, &e["first_free_stack"], "first free");
    let alloc = program_stack(d, &e["alloc_stack"], "allocation");
    assert!(
        second[0] != first[0] && first[0] != alloc[0],
        "three different call sites"
    );
    assert!(blocks_of(d, 1111).is_empty());
    no_losses(d);
}

/// HeapFree of a pointer inside a live block and of a stack address: invalid frees, not passed on.
#[test]
fn invalid_heapfree() {
    let Some(s) = setup() else { return };
    let r = traced(s, "heaps", &["invalid"], &[]);
    assert_eq!(r.code, 0, "stdout: {}", r.stdout);
    assert!(
        r.stdout.contains("interior HeapFree returned 0")
            && r.stdout.contains("stack HeapFree returned 0")
    );
    let d = r.dump();
    assert_eq!(d["error_counts"]["invalid_free"], 2);
    let e = errors(d);
    assert_eq!(
        (e[0]["detail"].as_str(), e[0]["size"].as_u64()),
        (Some("interior"), Some(1212))
    );
    assert_eq!(e[0]["allocator"], "HeapAlloc(process heap)");
    assert_eq!(e[1]["detail"], "stack");
    assert_eq!(e[1]["freed_with"], "HeapFree(process heap)");
    program_stack(d, &e[0]["stack"], "interior free");
    assert!(
        blocks_of(d, 1212).is_empty(),
        "the block itself was freed afterwards"
    );
}

/// A block of a private heap passed to HeapFree(GetProcessHeap()): reported as a cross-heap free and released
/// through its own heap instead (HeapFree returns TRUE; the private heap is then destroyed cleanly).
#[test]
fn heapfree_on_the_wrong_heap() {
    let Some(s) = setup() else { return };
    let r = traced(s, "heaps", &["wrongheap"], &[]);
    assert_eq!(r.code, 0, "stdout: {}", r.stdout);
    assert!(
        r.stdout.contains("HeapFree on the wrong heap returned 1"),
        "{}",
        r.stdout
    );
    let d = r.dump();
    assert_eq!(d["error_counts"]["cross_heap_free"], 1);
    let e = errors(d)[0];
    assert_eq!(e["kind"], "cross_heap_free");
    assert_eq!(e["size"], 2222);
    assert!(
        e["allocator"]
            .as_str()
            .unwrap()
            .starts_with("HeapAlloc(heap 0x"),
        "{e}"
    );
    assert_eq!(e["freed_with"], "HeapFree(process heap)");
    assert_eq!(e["detail"], "different_heap");
    program_stack(d, &e["stack"], "free");
    program_stack(d, &e["alloc_stack"], "allocation");
    assert!(
        blocks_of(d, 2222).is_empty(),
        "released through its own heap"
    );
    assert!(blocks_of(d, 64).is_empty());
}

/// C runtimes: msvcrt malloc freed by ucrtbase free and the reverse, and a runtime loaded after start-up
/// (msvcr120) whose block is freed by msvcrt. Under Wine each runtime has its own heap: all are errors
/// ("different_heap"), each block released through its own runtime. The Linux CLI reads the dump.
#[test]
fn cross_runtime_frees() {
    let Some(s) = setup() else { return };
    let r = traced(s, "crt", &["cross"], &[]);
    assert_eq!(r.code, 0, "stdout: {}", r.stdout);
    assert!(r.stdout.contains("alive"));
    let d = r.dump();
    let got: Vec<(String, String, String, u64)> = errors(d)
        .iter()
        .map(|e| {
            assert_eq!(e["kind"], "cross_heap_free");
            program_stack(d, &e["stack"], "free");
            program_stack(d, &e["alloc_stack"], "allocation");
            (
                e["allocator"].as_str().unwrap().to_owned(),
                e["freed_with"].as_str().unwrap().to_owned(),
                e["detail"].as_str().unwrap().to_owned(),
                e["size"].as_u64().unwrap(),
            )
        })
        .collect();
    let want = [
        ("msvcrt!malloc", "ucrtbase!free", 1001),
        ("ucrtbase!malloc", "msvcrt!free", 1002),
        ("msvcr120!malloc", "msvcrt!free", 1003),
    ];
    assert_eq!(got.len(), want.len(), "{got:?}");
    for ((a, f, det, size), (wa, wf, ws)) in got.iter().zip(want) {
        assert_eq!((a.as_str(), f.as_str(), *size), (wa, wf, ws));
        assert_eq!(
            det, "different_heap",
            "Wine's runtimes each have their own heap"
        );
    }
    for size in [1001, 1002, 1003, 1004] {
        assert!(blocks_of(d, size).is_empty(), "{size}: released");
    }
    no_losses(d);
    if let Some(rep) = linux_report(s, &r.dumps[0].0) {
        assert_eq!(rep["errors"]["cross_heap_free"], 3, "{rep}");
        assert_eq!(rep["errors"]["double_free"], 0);
    }
}

/// `_aligned_malloc` freed with `free`, and `malloc` freed with `_aligned_free`: errors ("aligned_mismatch"),
/// each released through the matching function; a correct pair is not reported.
#[test]
fn aligned_blocks_and_free() {
    let Some(s) = setup() else { return };
    let r = traced(s, "crt", &["aligned"], &[]);
    assert_eq!(r.code, 0, "stdout: {}", r.stdout);
    assert!(r.stdout.contains("alive"));
    let d = r.dump();
    let got: Vec<(String, String, String)> = errors(d)
        .iter()
        .map(|e| {
            (
                e["allocator"].as_str().unwrap().to_owned(),
                e["freed_with"].as_str().unwrap().to_owned(),
                e["detail"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        got,
        [
            (
                "msvcrt!_aligned_malloc".into(),
                "msvcrt!free".into(),
                "aligned_mismatch".into()
            ),
            (
                "msvcrt!malloc".into(),
                "msvcrt!_aligned_free".into(),
                "aligned_mismatch".into()
            ),
        ]
    );
    for size in [2001, 2002, 2003] {
        assert!(blocks_of(d, size).is_empty(), "{size}: released");
    }
}

/// A HeapAlloc block freed with `free`: an error when the runtime's heap is another (the process heap under
/// Wine), a warning ("shared_heap", passed on) when the block is on the runtime's own heap.
#[test]
fn heapalloc_block_freed_with_free() {
    let Some(s) = setup() else { return };
    let r = traced(s, "crt", &["heapfree"], &[]);
    assert_eq!(r.code, 0, "stdout: {}", r.stdout);
    let d = r.dump();
    let e = errors(d);
    assert_eq!(e.len(), 2);
    assert_eq!(e[0]["allocator"], "HeapAlloc(process heap)");
    assert_eq!(e[0]["freed_with"], "msvcrt!free");
    assert_eq!(e[0]["detail"], "different_heap");
    assert!(
        e[1]["allocator"]
            .as_str()
            .unwrap()
            .starts_with("HeapAlloc(msvcrt heap 0x"),
        "{}",
        e[1]
    );
    assert_eq!(e[1]["detail"], "shared_heap");
    assert!(blocks_of(d, 3001).is_empty() && blocks_of(d, 3002).is_empty());
}

/// HeapDestroy with 3 live blocks: they are that heap's leaks in the dump; a heap created afterwards (at the
/// same address, as Wine does) has its own blocks.
#[test]
fn heap_destroy_settles_its_blocks() {
    let Some(s) = setup() else { return };
    let r = traced(s, "heaps", &["destroy"], &[]);
    assert_eq!(r.code, 0, "stdout: {}", r.stdout);
    let d = r.dump();
    assert!(errors(d).is_empty(), "{:?}", d["errors"]);
    let leaked = blocks_of(d, 7000);
    assert_eq!(leaked.len(), 3);
    assert!(
        leaked
            .iter()
            .all(|f| f.starts_with("HeapAlloc(heap 0x") && f.ends_with(") destroyed")),
        "{leaked:?}"
    );
    assert!(blocks_of(d, 7001).is_empty() && blocks_of(d, 7002).is_empty());
    let again = blocks_of(d, 7003);
    assert_eq!(again.len(), 1);
    assert!(!again[0].ends_with("destroyed"));
    no_losses(d);
}

/// GetLastError() is what the program set across HeapAlloc/HeapReAlloc/HeapSize/HeapFree (process heap and a
/// HEAP_NO_SERIALIZE heap), malloc/realloc/calloc/free, HeapDestroy; HeapWalk on a program heap sees exactly
/// the program's blocks. The program checks all that itself, untraced and traced.
#[test]
fn last_error_and_heapwalk_unchanged() {
    let Some(s) = setup() else { return };
    let (code, out) = plain(s, "heaps", &["lasterror"]);
    assert_eq!(code, 0, "untraced: {out}");
    let r = traced(s, "heaps", &["lasterror"], &[]);
    assert_eq!(r.code, 0, "traced: {}", r.stdout);
    assert!(!r.stdout.contains("FAIL"), "{}", r.stdout);
    assert!(errors(r.dump()).is_empty());
}

/// Four threads allocating and freeing through HeapAlloc and malloc at once: every thread's leaks, with its
/// thread id, and the totals consistent with the live blocks.
#[test]
fn four_threads() {
    let Some(s) = setup() else { return };
    let r = traced(s, "heaps", &["threads"], &[]);
    assert_eq!(r.code, 0, "stdout: {}", r.stdout);
    let d = r.dump();
    no_losses(d);
    assert!(errors(d).is_empty(), "{:?}", d["errors"]);
    let mut tids = HashMap::new();
    for k in 0..4u64 {
        for (size, fam) in [
            (8000 + k, "HeapAlloc(process heap)"),
            (9000 + k, "msvcrt!malloc"),
        ] {
            let b: Vec<&Value> = d["blocks"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|b| b[1] == size)
                .collect();
            assert_eq!(b.len(), 1, "{size}");
            assert_eq!(family(d, b[0]), fam);
            tids.entry(k)
                .or_insert_with(Vec::new)
                .push(b[0][4].as_u64().unwrap());
        }
    }
    let mut distinct: Vec<u64> = tids
        .values()
        .map(|v| {
            assert_eq!(v[0], v[1], "both leaks of a thread carry its id");
            v[0]
        })
        .collect();
    distinct.sort();
    distinct.dedup();
    assert_eq!(distinct.len(), 4);
    assert!(total(d, "allocations") >= 8008);
    assert_eq!(
        total(d, "allocations") - total(d, "frees"),
        d["live"]["blocks"].as_i64().unwrap(),
        "every allocation is either freed or live"
    );
}

/// `heapledger.exe run` returns the program's exit code.
#[test]
fn exit_code_passes_through() {
    let Some(s) = setup() else { return };
    let r = traced(s, "heaps", &["exit7"], &[]);
    assert_eq!(r.code, 7, "stderr: {}", r.stderr);
    assert_eq!(r.dump()["reason"], "exit");
}

/// A process the program starts is traced too (the DLL injects itself into it) and writes its own dump, which
/// `run` lists.
#[test]
fn child_processes_are_traced() {
    let Some(s) = setup() else { return };
    let r = traced(s, "heaps", &["child"], &[]);
    assert_eq!(r.code, 0, "stdout: {}", r.stdout);
    assert_eq!(
        r.dumps.len(),
        2,
        "parent and child dumps; stderr:\n{}",
        r.stderr
    );
    let (parent, child) = (&r.dumps[0].1, &r.dumps[1].1);
    let (parent, child) = if blocks_of(child, 4321).len() == 1 {
        (parent, child)
    } else {
        (child, parent)
    };
    assert_eq!(blocks_of(child, 4321), vec!["HeapAlloc(process heap)"]);
    assert_eq!(child["ppid"], parent["pid"]);
    assert!(r.stderr.contains("2 dump(s) written"), "{}", r.stderr);
}

/// `heapledger.exe report` (the Windows CLI, under Wine) symbolizes the dump: mingw's DWARF in the PE files,
/// through the same addr2line/object path as on Linux, inlined frames included.
#[test]
fn windows_cli_symbolizes_pe_dwarf() {
    let Some(s) = setup() else { return };
    let r = traced(s, "heaps", &["double"], &[]);
    let dump = win_path(&r.dumps[0].0);
    let (code, out, err) = wine(
        &[
            s.exe.as_os_str(),
            "report".as_ref(),
            "--format".as_ref(),
            "json".as_ref(),
            dump.as_ref(),
        ],
        &[],
    );
    assert_eq!(code, 0, "{err}");
    let rep: Value = serde_json::from_str(&out).expect("report JSON");
    let item = &rep["errors"]["items"][0];
    assert_eq!(item["kind"], "double_free");
    let frames = item["stacks"]["free"].as_array().unwrap();
    let names: Vec<&str> = frames
        .iter()
        .filter_map(|f| f["function"].as_str())
        .collect();
    assert_eq!(names.first(), Some(&"double_free"), "{frames:?}");
    assert!(names.contains(&"main"), "{names:?}");
    assert!(
        frames[0]["file"]
            .as_str()
            .unwrap_or("")
            .ends_with("heaps.c"),
        "{:?}",
        frames[0]
    );
    assert!(frames[0]["line"].as_u64().is_some());
}

/// The cached unwinder gives the same stacks as RtlCaptureStackBackTrace (HEAPLEDGER_UNWINDER=rtl).
#[test]
fn unwinder_matches_rtlcapturestackbacktrace() {
    let Some(s) = setup() else { return };
    let ours = traced(s, "heaps", &["double"], &[]);
    let rtl = traced(s, "heaps", &["double"], &[("HEAPLEDGER_UNWINDER", "rtl")]);
    let stacks = |d: &Value| -> Vec<Value> {
        let e = errors(d)[0];
        ["stack", "alloc_stack", "first_free_stack"]
            .iter()
            .map(|k| d["stacks"][e[k].as_u64().unwrap() as usize].clone())
            .collect()
    };
    let (a, b) = (stacks(ours.dump()), stacks(rtl.dump()));
    assert_eq!(a, b);
    assert!(a.iter().all(|s| s.as_array().unwrap().len() >= 3), "{a:?}");
}
