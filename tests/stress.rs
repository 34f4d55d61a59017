//! Reliability stress suite (issue #9): everything a real program does, under the preload library.
//!
//! Each case runs a program natively and under the tracer and checks that
//! - the exit status (code or signal) and stdout are the native run's (stderr too, where the program's own is
//!   deterministic; the tracer prints nothing when all goes well),
//! - the traced run ends within max(10 x native wall time, 5 s) — otherwise it is a hang: the process group is
//!   killed and, when gdb is installed, every thread's stack is put in the failure message,
//! - every dump exists, parses, says `complete: true`, leaves no temporary file behind, and balances:
//!   allocations - frees = live blocks, bytes allocated - bytes freed = live bytes, listed blocks agree, nothing
//!   lost (except in the out-of-memory cases, where losses must be counted instead).
//!
//! This is the CI form (a few seconds per case). `scripts/stress.sh` runs the long form: the same binary many
//! times with `HEAPLEDGER_STRESS_LONG=1` (bigger storms: 100k thread lifetimes, 500-child fork storm, ...) and
//! the `#[ignore]`d language cases (Go with cgo, the JVM) that need large toolchains.
//!
//! Settings (environment of `cargo test`):
//! - `HEAPLEDGER_STRESS_ITERATIONS=N`: each case repeats N times in one test (default 1),
//! - `HEAPLEDGER_STRESS_LONG=1`: long-form sizes,
//! - `HEAPLEDGER_STRESS_RESULTS=FILE`: append `case <TAB> native_ms <TAB> traced_ms <TAB> ratio` per run
//!   (scripts/stress.sh builds its summary table from it).
//!
//! Cases already covered elsewhere are not repeated: unwritable/missing output folder, planted symlink, dump
//! mode 0600 (tests/dumps.rs); one vfork, posix_spawn, system() and popen (tests/processes.rs).
//! docs/reliability.md lists every case, what it asserts, and the figures.

mod common;
use common::*;

use std::ffi::OsString;
use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

// ---- settings -------------------------------------------------------------------------------------------------

/// Repetitions of each case within one test run.
fn iterations() -> usize {
    std::env::var("HEAPLEDGER_STRESS_ITERATIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1usize)
        .max(1)
}

/// True in the long form (scripts/stress.sh).
fn long_form() -> bool {
    std::env::var("HEAPLEDGER_STRESS_LONG").is_ok_and(|v| v == "1")
}

/// `ci` in the CI form, `long` in the long form.
fn pick<T>(ci: T, long: T) -> T {
    if long_form() {
        long
    } else {
        ci
    }
}

/// A traced run may take this many times the native run's wall time...
const SLOWDOWN: u32 = 10;
/// ...but never less than this (tiny programs on a busy 2-core machine are noisy).
const FLOOR: Duration = Duration::from_secs(5);
/// Native runs that take longer than this are a broken test, not a tracer problem.
const NATIVE_TIMEOUT: Duration = Duration::from_secs(120);

fn limit_for(native: Duration) -> Duration {
    (native * SLOWDOWN).max(FLOOR)
}

// ---- a few libc calls (std links libc; the test crate has no libc dependency) --------------------------------

extern "C" {
    fn kill(pid: i32, sig: i32) -> i32;
    fn setrlimit(resource: i32, rlim: *const [u64; 2]) -> i32;
    fn getuid() -> u32;
}
const SIGKILL: i32 = 9;
const SIGUSR2: i32 = 12;
const RLIMIT_AS: i32 = 9;

/// Sets an address-space limit (`ulimit -v`) in the child before exec.
fn limit_address_space(cmd: &mut Command, bytes: u64) {
    // SAFETY: setrlimit is async-signal-safe; the closure touches nothing else.
    unsafe {
        cmd.pre_exec(move || {
            let lim = [bytes, bytes];
            if setrlimit(RLIMIT_AS, &lim) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

// ---- running with a deadline ----------------------------------------------------------------------------------

/// A finished run and its wall time.
#[derive(Debug)]
struct Timed {
    status: ExitStatus,
    stdout: String,
    stderr: String,
    wall: Duration,
}

/// A spawned process whose output is being collected.
struct Running {
    child: Child,
    started: Instant,
    out_rx: mpsc::Receiver<(u8, Vec<u8>)>,
    what: String,
}

/// Spawns `cmd` in its own process group (so a hung run can be killed with all its descendants), with stdout
/// and stderr captured unless `stderr` supplies another destination, and stdin closed unless `stdin_piped`.
fn spawn(cmd: &mut Command, stdin_piped: bool, stderr: Option<Stdio>) -> Running {
    let capture_err = stderr.is_none();
    cmd.process_group(0)
        .stdin(if stdin_piped {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(stderr.unwrap_or_else(Stdio::piped));
    let what = format!("{cmd:?}");
    let started = Instant::now();
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("cannot spawn {what}: {e}"));
    let (tx, out_rx) = mpsc::channel();
    let mut pipes: Vec<(u8, Box<dyn Read + Send>)> =
        vec![(1, Box::new(child.stdout.take().unwrap()))];
    if capture_err {
        pipes.push((2, Box::new(child.stderr.take().unwrap())));
    } else {
        tx.send((2, Vec::new())).unwrap();
    }
    for (fd, mut pipe) in pipes {
        let tx = tx.clone();
        std::thread::spawn(move || {
            let mut v = Vec::new();
            let _ = pipe.read_to_end(&mut v);
            let _ = tx.send((fd, v));
        });
    }
    Running {
        child,
        started,
        out_rx,
        what,
    }
}

impl Running {
    fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// Waits until the process ends or `limit` (from its start) passes. On timeout: collects every thread's
    /// stack (gdb), kills the process group, and returns the description as the error.
    fn finish(mut self, limit: Duration) -> Result<Timed, String> {
        drop(self.child.stdin.take());
        let deadline = self.started + limit;
        let status = loop {
            if let Some(s) = self.child.try_wait().expect("wait") {
                break s;
            }
            if Instant::now() > deadline {
                let pid = self.pid();
                let stacks = backtraces(pid);
                // SAFETY: signals our own child's process group.
                unsafe { kill(-pid, SIGKILL) };
                let _ = self.child.wait();
                return Err(format!(
                    "{} still running after {limit:?}: killed. Threads:\n{stacks}",
                    self.what
                ));
            }
            std::thread::sleep(Duration::from_millis(2));
        };
        let wall = self.started.elapsed();
        let (mut stdout, mut stderr) = (Vec::new(), Vec::new());
        // A daemonized descendant may keep the pipes open a little longer than its parent lives.
        for _ in 0..2 {
            match self.out_rx.recv_timeout(Duration::from_secs(20)) {
                Ok((1, v)) => stdout = v,
                Ok((_, v)) => stderr = v,
                Err(_) => {
                    return Err(format!(
                        "{}: exited ({status:?}) but a descendant still holds its output open",
                        self.what
                    ))
                }
            }
        }
        Ok(Timed {
            status,
            stdout: String::from_utf8_lossy(&stdout).into_owned(),
            stderr: String::from_utf8_lossy(&stderr).into_owned(),
            wall,
        })
    }
}

fn run_deadline(cmd: &mut Command, limit: Duration) -> Result<Timed, String> {
    spawn(cmd, false, None).finish(limit)
}

/// Every thread's stack of a hung process, when gdb is available (for the failure message).
fn backtraces(pid: i32) -> String {
    let gdb = ["/usr/bin/gdb", "/usr/local/bin/gdb"]
        .into_iter()
        .find(|p| Path::new(p).exists());
    let Some(gdb) = gdb else {
        return "(install gdb to get the hung threads' stacks here)".into();
    };
    let out = Command::new("timeout")
        .arg("60")
        .arg(gdb)
        .args([
            "-p",
            &pid.to_string(),
            "-batch",
            "-ex",
            "thread apply all bt 30",
        ])
        .stdin(Stdio::null())
        .output();
    match out {
        Ok(o) => String::from_utf8_lossy(&o.stdout)
            .lines()
            .filter(|l| l.starts_with("Thread ") || l.starts_with('#'))
            .map(|l| format!("  {l}\n"))
            .collect(),
        Err(e) => format!("(gdb failed: {e})"),
    }
}

// ---- results --------------------------------------------------------------------------------------------------

/// Prints the case's ratio and appends it to `$HEAPLEDGER_STRESS_RESULTS`.
fn record(case: &str, native: Duration, traced: Duration) {
    let ratio = traced.as_secs_f64() / native.as_secs_f64().max(1e-6);
    println!(
        "stress {case}: native {:.1} ms, traced {:.1} ms, ratio {ratio:.2}",
        native.as_secs_f64() * 1e3,
        traced.as_secs_f64() * 1e3
    );
    if let Some(path) = std::env::var_os("HEAPLEDGER_STRESS_RESULTS") {
        let line = format!(
            "{case}\t{:.3}\t{:.3}\t{ratio:.3}\n",
            native.as_secs_f64() * 1e3,
            traced.as_secs_f64() * 1e3
        );
        if let Ok(mut f) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
        {
            let _ = f.write_all(line.as_bytes());
        }
    }
}

// ---- the native/traced comparison -----------------------------------------------------------------------------

/// One program run natively and traced.
struct Case {
    name: String,
    prog: PathBuf,
    args: Vec<OsString>,
    env: Vec<(OsString, OsString)>,
    rlimit_as: Option<u64>,
    compare_stderr: bool,
    /// The final dump comes from the end watcher, which writes after the program has ended: wait for it.
    final_from_watcher: bool,
}

impl Case {
    fn new(name: impl Into<String>, prog: impl AsRef<Path>) -> Case {
        Case {
            name: name.into(),
            prog: prog.as_ref().to_path_buf(),
            args: Vec::new(),
            env: Vec::new(),
            rlimit_as: None,
            compare_stderr: true,
            final_from_watcher: false,
        }
    }

    fn args<I, S>(mut self, args: I) -> Case
    where
        I: IntoIterator<Item = S>,
        S: Into<OsString>,
    {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    /// An environment variable for both runs.
    fn env(mut self, k: impl Into<OsString>, v: impl Into<OsString>) -> Case {
        self.env.push((k.into(), v.into()));
        self
    }

    fn address_space(mut self, bytes: u64) -> Case {
        self.rlimit_as = Some(bytes);
        self
    }

    /// The program's own stderr is not deterministic: do not compare it.
    fn stderr_varies(mut self) -> Case {
        self.compare_stderr = false;
        self
    }

    fn final_from_watcher(mut self) -> Case {
        self.final_from_watcher = true;
        self
    }

    fn command(&self, traced_into: Option<&Path>, cwd: &Path) -> Command {
        let mut cmd = match traced_into {
            Some(dir) => traced_command(&self.prog, dir),
            None => clean_command(&self.prog),
        };
        cmd.args(&self.args).current_dir(cwd);
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        if let Some(b) = self.rlimit_as {
            limit_address_space(&mut cmd, b);
        }
        cmd
    }
}

/// Waits (5 s at most) until the end watcher has written: a final dump is there and no temporary file is.
fn await_watcher(dir: &Path) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        let names: Vec<String> = std::fs::read_dir(dir)
            .map(|r| {
                r.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        let writing = names.iter().any(|n| n.contains(".tmp."));
        let finished = names.iter().filter(|n| n.ends_with(".json")).any(|n| {
            std::fs::read_to_string(dir.join(n))
                .is_ok_and(|t| !t.contains("\"reason\":\"interval\""))
        });
        if finished && !writing {
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// What a compared case left behind.
struct Outcome {
    native: Timed,
    traced: Timed,
    dumps: Vec<Dump>,
}

/// Runs `case` natively, then traced (environment entries given after the harness's own override it, e.g. a
/// `%n` in HEAPLEDGER_OUT), with the checks every case shares: same end, same stdout (and stderr unless it
/// varies), no hang, no leftover temporary file, every dump complete.
fn compare(case: &Case, scratch: &Scratch) -> Outcome {
    let native = run_deadline(&mut case.command(None, &scratch.path), NATIVE_TIMEOUT)
        .unwrap_or_else(|e| panic!("{}: the native run failed: {e}", case.name));
    let dir = scratch.dump_dir();
    let limit = limit_for(native.wall);
    let traced =
        run_deadline(&mut case.command(Some(&dir), &scratch.path), limit).unwrap_or_else(|e| {
            panic!(
                "{}: HANG or >{SLOWDOWN}x slowdown (native run took {:?}): {e}",
                case.name, native.wall
            )
        });
    record(&case.name, native.wall, traced.wall);
    assert_same_end(&case.name, &native, &traced);
    if case.compare_stderr {
        assert_eq!(
            traced.stderr, native.stderr,
            "{}: stderr differs under the tracer",
            case.name
        );
    }
    if case.final_from_watcher {
        await_watcher(&dir);
    }
    assert_no_leftovers(&dir);
    Outcome {
        native,
        traced,
        dumps: read_dumps(&dir),
    }
}

/// Exit status and stdout of the traced run equal the native run's.
fn assert_same_end(name: &str, native: &Timed, traced: &Timed) {
    assert!(
        traced.status.code() == native.status.code()
            && traced.status.signal() == native.status.signal(),
        "{name}: exit status {:?} under the tracer, {:?} natively\ntraced stderr:\n{}",
        traced.status,
        native.status,
        traced.stderr
    );
    if traced.stdout != native.stdout {
        let first = native
            .stdout
            .lines()
            .zip(traced.stdout.lines())
            .position(|(a, b)| a != b);
        panic!(
            "{name}: stdout differs under the tracer (first differing line: {first:?})\n--- native\n{}\n--- traced\n{}\n--- traced stderr\n{}",
            native.stdout, traced.stdout, traced.stderr
        );
    }
}

/// No `*.tmp.*` file (a dump cut short) is left in `dir`.
fn assert_no_leftovers(dir: &Path) {
    let leftovers: Vec<String> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.contains(".tmp."))
                .collect()
        })
        .unwrap_or_default();
    assert!(
        leftovers.is_empty(),
        "temporary dump files left behind in {}: {leftovers:?}",
        dir.display()
    );
}

/// Every dump balances and nothing was lost; `tag` names the case in messages.
fn assert_all_balanced(tag: &str, dumps: &[Dump]) {
    assert!(!dumps.is_empty(), "{tag}: no dump written");
    for d in dumps {
        let r = std::panic::catch_unwind(|| d.assert_balanced());
        if r.is_err() {
            let t = d.totals();
            panic!(
                "{tag}: dump {} (pid {}, reason {}) does not balance: totals {t:?}, live {:?}, tracer {}",
                d.path.display(),
                d.pid(),
                d.reason(),
                d.live(),
                d.json["tracer"]
            );
        }
    }
}

/// The dumps written by processes whose cmdline starts with `prog` (children may exec other programs).
fn dumps_of<'a>(dumps: &'a [Dump], prog: &Path) -> Vec<&'a Dump> {
    let prog = prog.to_string_lossy();
    dumps
        .iter()
        .filter(|d| d.json["cmdline"][0].as_str() == Some(&*prog))
        .collect()
}

fn dump_summary(dumps: &[Dump]) -> String {
    dumps
        .iter()
        .map(|d| {
            format!(
                "  pid {} {} {:?} live {:?} tracer {}\n",
                d.pid(),
                d.reason(),
                d.totals(),
                d.live(),
                d.json["tracer"]
            )
        })
        .collect()
}

// ================================================================================================================
// threads
// ================================================================================================================

/// 32 threads hammering malloc/calloc/aligned_alloc/realloc/free, most blocks freed by another thread than the
/// one that allocated them. The totals must be exact: the program's own count plus what glibc allocates for the
/// same 32 threads (measured by a baseline run that creates them without allocating).
#[test]
fn threads_32_hammer_cross_thread_frees() {
    let prog = compile("stress/hammer.c", &["-pthread"]);
    let ops = pick("10000", "60000");
    for i in 0..iterations() {
        // Every allocation recorded, then sampling mode (totals counted without the table, sampled blocks only
        // in it; per-thread counter stripes released at thread exit).
        for sample in [None, Some("4096")] {
            let env: Vec<(&str, &str)> = sample
                .map(|s| ("HEAPLEDGER_SAMPLE", s))
                .into_iter()
                .collect();
            let tag = if sample.is_some() { "-sampled" } else { "" };
            let base_scratch = Scratch::new("hammer-base");
            let base = traced_with(&base_scratch, &prog, &["baseline"], &env);
            assert_eq!(base.len(), 1);
            let base = &base[0];
            assert_consistent(&format!("hammer baseline{tag}"), base);

            let scratch = Scratch::new("hammer");
            let mut case = Case::new(format!("threads/hammer-32{tag} #{i}"), &prog).args([ops]);
            for (k, v) in &env {
                case = case.env(k, v);
            }
            let o = compare(&case, &scratch);
            assert_eq!(o.dumps.len(), 1);
            let d = &o.dumps[0];
            assert_consistent(&format!("hammer{tag}"), d);
            assert_eq!(d.error_counts(), [0; 4], "no heap errors");
            let allocs = o.traced.stdout_value("allocations");
            let bytes = o.traced.stdout_value("bytes");
            let mut diff = d.totals() - base.totals();
            if sample.is_some() {
                // Sampling mode: bytes_freed counts sampled blocks only (docs/dump-format.md); the other three
                // totals stay exact.
                diff.bytes_freed = bytes;
            }
            assert_eq!(
                diff,
                Totals::new(allocs, allocs, bytes, bytes),
                "hammer{tag}: exact totals: the program's own count on top of the baseline"
            );
            if sample.is_none() {
                assert_eq!(
                    d.live(),
                    base.live(),
                    "nothing of the program's is live at exit"
                );
                assert_eq!(u(&d.json["tracer"]["lost_stacks"]), 0);
            }
        }
    }
}

/// Runs `prog args` under the tracer with extra environment; its dumps (the run must succeed).
fn traced_with(scratch: &Scratch, prog: &Path, args: &[&str], env: &[(&str, &str)]) -> Vec<Dump> {
    let dir = scratch.dump_dir();
    let mut cmd = traced_command(prog, &dir);
    cmd.args(args).current_dir(&scratch.path);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = run(&mut cmd);
    out.assert_success();
    assert_no_leftovers(&dir);
    read_dumps(&dir)
}

/// A dump's figures agree with themselves: balanced when every allocation is recorded; in sampling mode (where
/// only sampled blocks are listed and totals are exact) the listed blocks agree with `live`, and the totals
/// leave room for them.
fn assert_consistent(tag: &str, d: &Dump) {
    if u(&d.json["sample_bytes"]) == 0 {
        assert_all_balanced(tag, std::slice::from_ref(d));
        return;
    }
    let t = d.totals();
    let (blocks, bytes) = d.live();
    let listed = d.blocks();
    assert_eq!(
        listed.len() as u64,
        blocks,
        "{tag}: listed blocks vs live.blocks"
    );
    assert_eq!(
        listed.iter().map(|b| b.size).sum::<u64>(),
        bytes,
        "{tag}: listed bytes vs live.bytes"
    );
    assert!(
        t.allocations >= t.frees,
        "{tag}: more frees than allocations: {t:?}"
    );
    assert!(
        t.bytes_allocated >= t.bytes_freed,
        "{tag}: more bytes freed than allocated: {t:?}"
    );
    assert_eq!(u(&d.json["tracer"]["lost_blocks"]), 0, "{tag}: lost blocks");
}

impl Timed {
    /// The only `key=<n>` value on stdout.
    fn stdout_value(&self, key: &str) -> u64 {
        let prefix = format!("{key}=");
        let v: Vec<u64> = self
            .stdout
            .lines()
            .filter_map(|l| l.strip_prefix(&prefix))
            .map(|v| v.parse().expect("number"))
            .collect();
        assert_eq!(v.len(), 1, "one {key}= line expected in {:?}", self.stdout);
        v[0]
    }
}

/// Threads created and joined in a loop (CI 10k, long form 100k lifetimes; one detached thread per 16 batches).
/// Per-thread state must not leak: the tracer's own memory after many lifetimes must be what it is after few.
#[test]
fn threads_created_and_joined_in_a_loop() {
    let prog = compile("stress/lifetimes.c", &["-pthread"]);
    let total = pick(10_000u64, 100_000);
    for i in 0..iterations() {
        for sample in [None, Some("4096")] {
            let env: Vec<(&str, &str)> = sample
                .map(|s| ("HEAPLEDGER_SAMPLE", s))
                .into_iter()
                .collect();
            let tag = if sample.is_some() { "-sampled" } else { "" };
            let small_scratch = Scratch::new("lifetimes-small");
            let small = traced_with(&small_scratch, &prog, &["200", "8"], &env);
            assert_eq!(small.len(), 1);
            let small = &small[0];
            assert_consistent(&format!("lifetimes 200{tag}"), small);

            let scratch = Scratch::new("lifetimes");
            let mut case = Case::new(format!("threads/lifetimes-{total}{tag} #{i}"), &prog)
                .args([total.to_string(), "8".to_string()]);
            for (k, v) in &env {
                case = case.env(k, v);
            }
            let o = compare(&case, &scratch);
            assert_eq!(o.dumps.len(), 1);
            let d = &o.dumps[0];
            assert_consistent(&format!("lifetimes{tag}"), d);
            assert_eq!(o.traced.stdout_value("threads"), total);
            assert_eq!(d.error_counts(), [0; 4]);
            // Each thread's blocks were freed: what is live at exit is what 200 threads leave.
            // (Blocks only in sampling mode, where bytes_freed counts sampled blocks only.)
            let sampled = sample.is_some();
            let net = |d: &Dump| {
                let t = d.totals();
                let bytes = if sampled {
                    0
                } else {
                    t.bytes_allocated - t.bytes_freed
                };
                (t.allocations - t.frees, bytes)
            };
            assert_eq!(
                net(d),
                net(small),
                "lifetimes{tag}: blocks of exited threads left live"
            );
            let mem_small = u(&small.json["tracer"]["memory_bytes"]);
            let mem_big = u(&d.json["tracer"]["memory_bytes"]);
            assert!(
                mem_big <= mem_small + (1 << 20),
                "lifetimes{tag}: tracer memory grew with thread lifetimes: {mem_small} bytes after 200 threads, \
                 {mem_big} after {total}"
            );
        }
    }
}

/// The process ends (exit, _exit, return from main, the last pthread_exit, exit() from a worker) while other
/// threads are still allocating: the final dump is written under their feet and must still balance — with the
/// reachability scan (all shards locked at once) and without it (shard by shard).
#[test]
fn threads_process_ends_while_others_allocate() {
    let prog = compile("stress/exit_race.c", &["-pthread"]);
    let modes = ["exit", "_exit", "return", "pthread_exit", "worker_exit"];
    // (scan, snapshot every ms): the reachability scan locks every shard at once; without it shards are copied
    // one by one; with 1 ms snapshots the snapshot thread is writing when the process ends.
    let variants = [("1", None), ("0", None), ("1", Some("0.001"))];
    let rounds = pick(1, 5) * iterations();
    for i in 0..rounds {
        for mode in modes {
            for (reach, interval) in variants {
                let scratch = Scratch::new("exit-race");
                let snap = if interval.is_some() { "-snapshots" } else { "" };
                let mut case = Case::new(
                    format!("threads/exit-race-{mode}-reach{reach}{snap} #{i}"),
                    &prog,
                )
                .args([mode, "8"])
                .env("HEAPLEDGER_REACH", reach);
                if let Some(secs) = interval {
                    case = case
                        .env("HEAPLEDGER_INTERVAL", secs)
                        .env("HEAPLEDGER_OUT", scratch.dump_dir().join("d.%p.%n.json"));
                }
                let o = compare(&case, &scratch);
                let tag = format!("exit race {mode} reach={reach}{snap}");
                assert_all_balanced(&tag, &o.dumps);
                let finals: Vec<&Dump> = o
                    .dumps
                    .iter()
                    .filter(|d| d.reason() != "interval")
                    .collect();
                assert_eq!(
                    finals.len(),
                    1,
                    "{tag}: one final dump\n{}",
                    dump_summary(&o.dumps)
                );
                if interval.is_none() {
                    assert_eq!(o.dumps.len(), 1, "{tag}: one dump");
                }
                let want = if mode == "_exit" { "_exit" } else { "exit" };
                assert_eq!(finals[0].reason(), want, "{tag}");
                assert!(
                    finals[0].live().0 > 0,
                    "{tag}: the workers' blocks are live"
                );
            }
        }
    }
}

/// pthread_cancel of threads in an allocation-heavy loop (deferred cancellation at pthread_testcancel and
/// write(2); the first one makes glibc dlopen libgcc_s for the forced unwind). Cleanup handlers free the
/// workers' blocks: none of their sizes (700..763 bytes) may be live at exit.
#[test]
fn threads_cancelled_inside_allocation_loop() {
    let prog = compile("stress/cancel.c", &["-pthread"]);
    let rounds = pick("40", "300");
    for i in 0..iterations() {
        let scratch = Scratch::new("cancel");
        let o = compare(
            &Case::new(format!("threads/cancel #{i}"), &prog).args([rounds, "4"]),
            &scratch,
        );
        assert_all_balanced("cancel", &o.dumps);
        let d = &o.dumps[0];
        assert_eq!(d.error_counts(), [0; 4]);
        let stray: Vec<u64> = d
            .blocks()
            .iter()
            .map(|b| b.size)
            .filter(|s| (700..764).contains(s))
            .collect();
        assert!(
            stray.is_empty(),
            "workers' blocks live after cancellation: {stray:?}"
        );
    }
}

// ================================================================================================================
// fork, exec, daemons
// ================================================================================================================

/// A fork storm from a program whose other threads allocate all the time. Every child (and the grandchildren
/// some of them fork) writes its own dump, which holds its own 100000+i block and no other child's.
#[test]
fn fork_storm_from_a_multithreaded_program() {
    let prog = compile("stress/fork_storm.c", &["-pthread"]);
    let children = pick(100u64, 500);
    for i in 0..iterations() {
        let scratch = Scratch::new("fork-storm");
        let o = compare(
            &Case::new(format!("fork/storm-{children} #{i}"), &prog)
                .args([children.to_string(), "4".to_string()]),
            &scratch,
        );
        let grand = o.traced.stdout_value("grandchildren");
        assert_eq!(
            o.dumps.len() as u64,
            1 + children + grand,
            "one dump per process"
        );
        assert_all_balanced("fork storm", &o.dumps);
        let pids: std::collections::BTreeSet<u64> = o.dumps.iter().map(Dump::pid).collect();
        assert_eq!(pids.len(), o.dumps.len(), "one dump per pid");
        let parent = o
            .dumps
            .iter()
            .filter(|d| d.reason() == "exit")
            .find(|d| {
                !d.blocks()
                    .iter()
                    .any(|b| (100_000..100_000 + children).contains(&b.size))
            })
            .expect("the parent's dump");
        let mut seen_children = std::collections::BTreeSet::new();
        for d in &o.dumps {
            if d.pid() == parent.pid() {
                continue;
            }
            let own: Vec<u64> = d
                .blocks()
                .iter()
                .map(|b| b.size)
                .filter(|s| (100_000..100_000 + children).contains(s))
                .collect();
            let grand_own: Vec<u64> = d
                .blocks()
                .iter()
                .map(|b| b.size)
                .filter(|s| (200_000..200_000 + children).contains(s))
                .collect();
            assert_eq!(
                own.len(),
                1,
                "pid {}: exactly its own child block: {own:?}",
                d.pid()
            );
            assert!(grand_own.len() <= 1, "pid {}: {grand_own:?}", d.pid());
            if grand_own.is_empty() {
                // A child: its parent is the storm's main process.
                assert_eq!(u(&d.json["ppid"]), parent.pid(), "child's ppid");
                assert!(
                    seen_children.insert(own[0]),
                    "two dumps claim child block {}",
                    own[0]
                );
                let idx = own[0] - 100_000;
                let want = if idx.is_multiple_of(2) {
                    "exit"
                } else {
                    "_exit"
                };
                assert_eq!(d.reason(), want, "child {idx}");
            } else {
                assert_eq!(d.reason(), "_exit", "grandchild");
                assert_eq!(
                    grand_own[0] - 200_000,
                    own[0] - 100_000,
                    "grandchild of the right child"
                );
            }
            assert_eq!(d.error_counts(), [0; 4], "pid {}", d.pid());
        }
        assert_eq!(seen_children.len() as u64, children, "every child's dump");
    }
}

/// vfork+exec, a vfork child that _exits without exec, posix_spawn, posix_spawnp of a shell and system(), in a
/// loop while two threads allocate. Every exec'd child is traced and writes a balanced dump; vfork children
/// that never exec write none (they share the parent's memory).
#[test]
fn fork_vfork_posix_spawn_system_storm() {
    let prog = compile("stress/spawn_storm.c", &["-pthread"]);
    let rounds = pick(10u64, 50);
    for i in 0..iterations() {
        let scratch = Scratch::new("spawn-storm");
        let o = compare(
            &Case::new(format!("fork/spawn-storm-{rounds} #{i}"), &prog)
                .args([rounds.to_string(), "2".to_string()]),
            &scratch,
        );
        assert_all_balanced("spawn storm", &o.dumps);
        let mut by_cmd: std::collections::BTreeMap<String, u64> = Default::default();
        for d in &o.dumps {
            let cmd = d.json["cmdline"]
                .as_array()
                .unwrap()
                .iter()
                .map(|a| a.as_str().unwrap_or("?"))
                .collect::<Vec<_>>()
                .join(" ");
            *by_cmd.entry(cmd).or_default() += 1;
            assert_eq!(d.error_counts(), [0; 4], "{}", d.path.display());
        }
        let own = dumps_of(&o.dumps, &prog);
        assert_eq!(
            own.len(),
            1,
            "only the parent's dump from the program itself: {by_cmd:?}"
        );
        assert_eq!(by_cmd.get("true"), Some(&(2 * rounds)), "{by_cmd:?}");
        assert_eq!(by_cmd.get("sh -c exit 3"), Some(&rounds), "{by_cmd:?}");
        assert_eq!(by_cmd.get("sh -c exit 5"), Some(&rounds), "{by_cmd:?}");
        assert_eq!(o.dumps.len() as u64, 4 * rounds + 1);
    }
}

/// The classic daemon: fork, setsid, fork, chdir("/"), umask(0), close every descriptor, reopen 0/1/2 on
/// /dev/null, work with a thread. With periodic snapshots on (the snapshot thread restarts in each child and
/// owns no descriptor) and a relative HEAPLEDGER_OUT (made absolute at start-up): every process's dumps land
/// where the user pointed, all balanced, and the daemon's result equals the native daemon's.
#[test]
fn fork_daemonize_double_fork_close_all_fds() {
    let prog = compile("stress/daemon.c", &["-pthread"]);
    for i in 0..iterations() {
        let scratch = Scratch::new("daemon");
        let native_result = scratch.join("native-result.txt");
        let traced_result = scratch.join("traced-result.txt");

        let start = Instant::now();
        let native = run_deadline(
            clean_command(&prog)
                .arg(&native_result)
                .current_dir(&scratch.path),
            NATIVE_TIMEOUT,
        )
        .expect("native run");
        let native_pid = wait_for_daemon(&native_result, NATIVE_TIMEOUT);
        let native_wall = start.elapsed();

        let dir = scratch.dump_dir();
        let limit = limit_for(native_wall);
        let start = Instant::now();
        let mut cmd = traced_command(&prog, &dir);
        cmd.arg(&traced_result)
            .current_dir(&scratch.path)
            .env("HEAPLEDGER_OUT", "dumps/d.%p.%n.json")
            .env("HEAPLEDGER_INTERVAL", "0.02");
        let traced = run_deadline(&mut cmd, limit).unwrap_or_else(|e| panic!("daemon: {e}"));
        let traced_pid = wait_for_daemon(&traced_result, limit.saturating_sub(start.elapsed()));
        record(&format!("fork/daemon #{i}"), native_wall, start.elapsed());
        assert_same_end("daemon", &native, &traced);
        let strip_pid = |s: String| {
            s.lines()
                .filter(|l| !l.starts_with("pid="))
                .collect::<Vec<_>>()
                .join("\n")
        };
        assert_eq!(
            strip_pid(std::fs::read_to_string(&traced_result).unwrap()),
            strip_pid(std::fs::read_to_string(&native_result).unwrap()),
            "the daemon's own result"
        );
        let _ = native_pid;
        let stray: Vec<String> = std::fs::read_dir("/")
            .unwrap()
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with("d.") && n.ends_with(".json"))
            .collect();
        assert!(
            stray.is_empty(),
            "dumps written relative to / after chdir: {stray:?}"
        );
        assert_no_leftovers(&dir);
        let dumps = read_dumps(&dir);
        assert_all_balanced("daemon", &dumps);
        let finals: Vec<&Dump> = dumps.iter().filter(|d| d.reason() != "interval").collect();
        assert_eq!(
            finals.len(),
            3,
            "original, intermediate and daemon:\n{}",
            dump_summary(&dumps)
        );
        let daemon: Vec<&Dump> = finals
            .iter()
            .copied()
            .filter(|d| d.pid() == traced_pid)
            .collect();
        assert_eq!(daemon.len(), 1, "the daemon's final dump");
        assert_eq!(daemon[0].reason(), "exit");
        assert!(
            dumps
                .iter()
                .any(|d| d.pid() == traced_pid && d.reason() == "interval"),
            "the daemon wrote periodic snapshots after closing every descriptor"
        );
    }
}

/// Waits for the daemon's result file; returns the daemon's pid once that process has ended.
fn wait_for_daemon(result: &Path, limit: Duration) -> u64 {
    let deadline = Instant::now() + limit.max(Duration::from_secs(5));
    loop {
        if let Ok(text) = std::fs::read_to_string(result) {
            let pid: u64 = text
                .lines()
                .find_map(|l| l.strip_prefix("pid="))
                .and_then(|v| v.parse().ok())
                .expect("pid in the result");
            // Gone, or a zombie nobody reaps (a container's init may not).
            while Instant::now() < deadline {
                match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
                    Err(_) => return pid,
                    Ok(s)
                        if s.rsplit(')')
                            .next()
                            .is_some_and(|r| r.trim_start().starts_with('Z')) =>
                    {
                        return pid
                    }
                    Ok(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
            panic!("daemon {pid} did not end within {limit:?}");
        }
        if Instant::now() > deadline {
            panic!(
                "daemon result {} not written within {limit:?}: hang",
                result.display()
            );
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// exec of a setuid program from a traced process. Run as root with a privilege drop first, the exec is a real
/// privilege change: the loader runs it in secure-execution mode, drops LD_PRELOAD, and it runs untraced (no
/// dump, same output). Without the drop (root executing a setuid-root binary is no privilege change) it is
/// traced like any other program. The parent is unaffected either way.
#[test]
fn fork_exec_of_a_setuid_program() {
    let setuid = [
        "/usr/bin/passwd",
        "/usr/bin/chsh",
        "/usr/bin/chfn",
        "/usr/bin/gpasswd",
        "/usr/bin/newgrp",
    ]
    .into_iter()
    .map(Path::new)
    .find(|p| std::fs::metadata(p).is_ok_and(|m| m.permissions().mode() & 0o4000 != 0));
    let Some(setuid) = setuid else {
        println!("SKIP fork_exec_of_a_setuid_program: no setuid-root program found");
        return;
    };
    let prog = compile("stress/setuid_exec.c", &[]);
    // SAFETY: getuid has no preconditions.
    let root = unsafe { getuid() } == 0;
    for i in 0..iterations() {
        let variants: &[(&str, bool)] = if root {
            &[("drop", false), ("", true)]
        } else {
            &[("", false)]
        };
        for &(arg, traced_child) in variants {
            let scratch = Scratch::new("setuid");
            let mut case = Case::new(
                format!(
                    "fork/exec-setuid{} #{i}",
                    if arg.is_empty() { "" } else { "-drop" }
                ),
                &prog,
            )
            .args([setuid.as_os_str()]);
            if !arg.is_empty() {
                case = case.args([arg]);
            }
            let o = compare(&case, &scratch);
            assert!(
                o.traced.stdout.contains("child_status=0"),
                "{}",
                o.traced.stdout
            );
            let own = dumps_of(&o.dumps, &prog);
            assert_eq!(own.len(), 1, "the parent's dump");
            let p = own[0];
            p.assert_balanced();
            assert_eq!(p.error_counts(), [0; 4]);
            assert_eq!(
                p.blocks()
                    .iter()
                    .filter(|b| b.size == 1111 || b.size == 2222)
                    .count(),
                0,
                "the parent's own blocks were freed"
            );
            let others = o.dumps.len() - 1;
            if traced_child {
                assert_eq!(
                    others, 1,
                    "no privilege change: the setuid program is traced"
                );
                assert_all_balanced("setuid child", &o.dumps);
            } else {
                assert_eq!(
                    others,
                    0,
                    "secure-execution mode: the setuid program must run untraced\n{}",
                    dump_summary(&o.dumps)
                );
            }
        }
    }
}

// ================================================================================================================
// signals
// ================================================================================================================

/// A signal handler that frees and allocates (a 32-byte global buffer, replaced; a 48-byte scratch block) while
/// the main thread is inside malloc/realloc/free, 25 000 times a second. The native program is safe in
/// practice (the handler's sizes are served lock-free from glibc's thread cache). Under the tracer the handler
/// often runs inside a hook: no valid free may be rejected (the program would crash), the ledger must still
/// balance and lose nothing, and the handler's leaks must be in the dump — all of them, except those made while
/// the thread was inside the real allocator (recorded as internal: a known limit, docs/design.md).
#[test]
fn signals_handler_allocates_while_main_is_in_malloc() {
    let prog = compile("stress/signal_alloc.c", &[]);
    // The interleavings differ from run to run: several runs per iteration.
    let runs = pick(6, 30) * iterations();
    for i in 0..runs {
        for mode in ["replace", "leak"] {
            let scratch = Scratch::new("signal-alloc");
            let o = compare(
                &Case::new(format!("signals/handler-allocates-{mode} #{i}"), &prog)
                    .args([mode])
                    .stderr_varies(),
                &scratch,
            );
            assert_eq!(o.dumps.len(), 1);
            let d = &o.dumps[0];
            let leaks = o
                .traced
                .stderr
                .lines()
                .find_map(|l| l.split_whitespace().find_map(|w| w.strip_prefix("leaks=")))
                .and_then(|v| v.parse::<usize>().ok())
                .unwrap_or_else(|| panic!("no leaks= line: {:?}", o.traced.stderr));
            assert_eq!(
                d.error_counts(),
                [0; 4],
                "{mode} run {i}: heap errors reported in a correct program: {}",
                d.json["errors"]
            );
            let t = d.totals();
            assert!(
                t.allocations - t.frees == d.live().0
                    && t.bytes_allocated - t.bytes_freed == d.live().1
                    && u(&d.json["tracer"]["lost_blocks"]) == 0,
                "{mode} run {i}: the ledger does not balance when a signal handler allocates inside a hook: \
                 allocations - frees = {}, live blocks = {}; bytes allocated - freed = {}, live bytes = {}; \
                 lost_blocks = {}",
                t.allocations - t.frees,
                d.live().0,
                t.bytes_allocated - t.bytes_freed,
                d.live().1,
                d.json["tracer"]["lost_blocks"]
            );
            if mode == "leak" {
                let sizes = d.block_sizes();
                let n24 = sizes.iter().filter(|(s, _)| *s == 24).count();
                let n32 = sizes.iter().filter(|(s, _)| *s == 32).count();
                // Known limit (docs/design.md): a handler's allocation made while the thread is inside the real
                // allocator is recorded as internal, so some of these leaks may be missing; never more.
                assert!(
                    n24 <= leaks,
                    "leak run {i}: the dump shows {n24} 24-byte blocks, the handler leaked only {leaks}"
                );
                if n24 < leaks {
                    println!(
                        "leak run {i}: {} of {leaks} handler leaks recorded as internal (known limit)",
                        leaks - n24
                    );
                }
                // The same known limit: the buffer may have been allocated inside the real allocator.
                assert!(
                    n32 <= 1,
                    "leak run {i}: {n32} blocks of 32 bytes, the handler keeps one"
                );
            }
        }
    }
}

/// SIGUSR2 snapshot requests, 1000 in one second, while three threads allocate. Every snapshot written must be
/// complete and balanced (requests that arrive during a snapshot are coalesced), numbered without gaps, and the
/// program must end normally afterwards. The native run gets no signal (SIGUSR2 would kill it); what is
/// compared is the output, the exit status and the time from "stop" (stdin closed) to exit.
#[test]
fn signals_sigusr2_snapshot_storm() {
    let prog = compile("stress/snapshot_target.c", &["-pthread"]);
    let requests = pick(1000, 5000);
    for i in 0..iterations() {
        let scratch = Scratch::new("sigusr2");
        let native = spawn(clean_command(&prog).arg("3"), true, None);
        std::thread::sleep(Duration::from_millis(100));
        let stop = Instant::now();
        let native = native.finish(NATIVE_TIMEOUT).expect("native run");
        let native_stop = stop.elapsed();

        let dir = scratch.dump_dir();
        let mut cmd = traced_command(&prog, &dir);
        cmd.arg("3")
            .env("HEAPLEDGER_SIGNAL", "USR2")
            .env("HEAPLEDGER_OUT", dir.join("d.%p.%n.json"));
        let mut running = spawn(&mut cmd, true, None);
        let pid = running.pid();
        wait_for_handler(pid, SIGUSR2);
        let t0 = Instant::now();
        for k in 0..requests {
            // SAFETY: signals our own child.
            let rc = unsafe { kill(pid, SIGUSR2) };
            assert_eq!(rc, 0, "kill #{k}: the traced program is gone");
            // 1000 per second: spread over the second, not sent at once.
            let due = t0 + Duration::from_micros(1_000_000 * (k as u64 + 1) / 1000);
            if let Some(wait) = due.checked_duration_since(Instant::now()) {
                std::thread::sleep(wait);
            }
        }
        let sending = t0.elapsed();
        let stop = Instant::now();
        drop(running.child.stdin.take());
        let limit = limit_for(native_stop) + (stop - running.started);
        let traced = running
            .finish(limit)
            .unwrap_or_else(|e| panic!("SIGUSR2 storm: {e}"));
        record(
            &format!("signals/sigusr2-{requests} #{i}"),
            native_stop,
            stop.elapsed(),
        );
        println!("sent {requests} SIGUSR2 in {sending:?}");
        assert_same_end("sigusr2 storm", &native, &traced);
        assert_eq!(traced.stderr, "", "the tracer printed something");
        assert_no_leftovers(&dir);
        let dumps = read_dumps(&dir);
        assert_all_balanced("sigusr2 storm", &dumps);
        let mut numbers: Vec<u64> = dumps.iter().map(|d| u(&d.json["snapshot"])).collect();
        numbers.sort_unstable();
        assert_eq!(
            numbers,
            (0..dumps.len() as u64).collect::<Vec<_>>(),
            "snapshot numbers without gaps"
        );
        let signals = dumps.iter().filter(|d| d.reason() == "signal").count();
        assert!(
            signals >= 2,
            "only {signals} snapshots for {requests} requests"
        );
        assert_eq!(dumps.iter().filter(|d| d.reason() == "exit").count(), 1);
        println!("{signals} snapshots written for {requests} requests");
    }
}

/// Waits until `pid` has a handler installed for `sig` (the tracer installs it in its constructor).
fn wait_for_handler(pid: i32, sig: i32) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let caught = std::fs::read_to_string(format!("/proc/{pid}/status"))
            .ok()
            .and_then(|s| {
                s.lines()
                    .find_map(|l| l.strip_prefix("SigCgt:"))
                    .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
            })
            .unwrap_or(0);
        if caught & (1 << (sig - 1)) != 0 {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "pid {pid} never installed a handler for signal {sig}"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// SIGALRM every 50 µs without SA_RESTART: blocking calls fail with EINTR (the program retries) and the handler
/// runs inside the tracer's hooks constantly; periodic snapshots (every 5 ms) are written meanwhile, and the
/// exit dump while the timer still fires. free() must keep errno even when interrupted.
#[test]
fn signals_timer_interrupts_every_call() {
    let prog = compile("stress/alarm_eintr.c", &["-pthread"]);
    let rounds = pick("5000", "50000");
    for i in 0..iterations() {
        let scratch = Scratch::new("alarm");
        let o = compare(
            &Case::new(format!("signals/timer-eintr #{i}"), &prog)
                .args([rounds])
                .env("HEAPLEDGER_INTERVAL", "0.005")
                .env("HEAPLEDGER_OUT", scratch.dump_dir().join("d.%p.%n.json")),
            &scratch,
        );
        assert!(o.traced.stdout.contains("errno_kept=1"));
        assert_all_balanced("timer", &o.dumps);
        assert_eq!(o.dumps.iter().filter(|d| d.reason() == "exit").count(), 1);
    }
}

// ================================================================================================================
// memory
// ================================================================================================================

/// Balance check for runs where the tracer itself ran out of memory: blocks still balance (the frees of
/// unrecorded blocks are counted), the bytes of the unrecorded blocks are the only difference, and the loss is
/// reported rather than silent.
fn assert_balanced_with_losses(tag: &str, d: &Dump, block_size: u64) -> u64 {
    let t = d.totals();
    let (blocks, bytes) = d.live();
    let lost = u(&d.json["tracer"]["lost_blocks"]);
    assert_eq!(t.allocations - t.frees, blocks, "{tag}: blocks balance");
    let missing = (t.bytes_allocated - t.bytes_freed) - bytes;
    assert_eq!(
        missing % block_size,
        0,
        "{tag}: bytes missing from the live set ({missing}) are not whole lost blocks of {block_size} bytes"
    );
    assert!(
        missing / block_size <= lost,
        "{tag}: {} blocks' bytes unaccounted, only {lost} reported lost",
        missing / block_size
    );
    assert_eq!(d.blocks().len() as u64, blocks, "{tag}: listed blocks");
    lost
}

/// The tracer's own memory runs out (`ulimit -v`): the program allocates until malloc returns NULL, so the
/// tracer's table and stack store cannot grow either. The program must see what it sees natively (NULL with
/// ENOMEM, memory usable again after freeing), keep running, and exit normally; the final dump is written (even
/// with memory still exhausted at exit), and the tracer's losses are counted in it, never silent.
#[test]
fn memory_tracer_runs_out_under_ulimit() {
    let prog = compile("stress/oom.c", &[]);
    let mut losses = 0;
    for i in 0..iterations() {
        for (mode, limit_mib) in [
            ("fill", 64u64),
            ("fill", 160),
            ("fill-exit", 96),
            ("stacks", 96),
        ] {
            let scratch = Scratch::new("oom");
            let tag = format!("memory/ulimit-{mode}-{limit_mib}MiB #{i}");
            let o = compare(
                &Case::new(&tag, &prog)
                    .args([mode])
                    .address_space(limit_mib << 20)
                    .stderr_varies(),
                &scratch,
            );
            let ours: Vec<&str> = o
                .traced
                .stderr
                .lines()
                .filter(|l| l.starts_with("heapledger"))
                .collect();
            assert!(
                ours.len() <= 1,
                "{tag}: at most one line from the tracer: {ours:?}"
            );
            if o.dumps.is_empty() {
                assert!(
                    ours.len() == 1 && ours[0].starts_with("heapledger: cannot write dump"),
                    "{tag}: no dump and no clear message: {:?}",
                    o.traced.stderr
                );
                continue;
            }
            assert_eq!(o.dumps.len(), 1, "{tag}");
            let d = &o.dumps[0];
            losses += assert_balanced_with_losses(&tag, d, 64);
            losses += u(&d.json["tracer"]["heap_failures"]);
            println!("{tag}: tracer {}", d.json["tracer"]);
        }
    }
    assert!(
        losses > 0,
        "the limits never made the tracer run out of memory: the case tested nothing"
    );
}

/// Under `ulimit -v`, the tracer must not take the address space the program needs: a program that allocates
/// 96 MiB under a 160 MiB limit (plenty natively) must still succeed traced.
#[test]
fn memory_program_keeps_its_address_space_under_ulimit() {
    let prog = compile("stress/oom.c", &[]);
    for i in 0..iterations() {
        let scratch = Scratch::new("oom-budget");
        let o = compare(
            &Case::new(format!("memory/ulimit-budget #{i}"), &prog)
                .args(["budget", "96"])
                .address_space(160 << 20),
            &scratch,
        );
        assert_all_balanced("budget", &o.dumps);
    }
}

/// Huge and impossible allocations (> 4 GiB, SIZE_MAX, calloc and reallocarray overflows, bad alignments,
/// operator new's exceptions): pointer, errno, return codes and exceptions exactly as without the tracer, with
/// and without an address-space limit (where malloc returns NULL much sooner and the tracer passes it through).
/// A granted 5 GiB block is recorded with its exact size.
#[test]
fn memory_huge_allocations_behave_natively() {
    let prog = compile("stress/huge.cc", &["-Wno-alloc-size-larger-than"]);
    for i in 0..iterations() {
        for limited in [false, true] {
            let scratch = Scratch::new("huge");
            let mut case = Case::new(
                format!("memory/huge{} #{i}", if limited { "-limited" } else { "" }),
                &prog,
            );
            if limited {
                case = case.address_space(3 << 30);
            }
            let o = compare(&case, &scratch);
            assert_all_balanced("huge", &o.dumps);
            let d = &o.dumps[0];
            assert_eq!(
                d.error_counts(),
                [0; 4],
                "no heap error reported: {}",
                d.json["errors"]
            );
            let granted = o
                .native
                .stdout
                .lines()
                .any(|l| l.starts_with("malloc(5GiB+123)") && l.contains("ptr"));
            let big: Vec<u64> = d
                .blocks()
                .iter()
                .map(|b| b.size)
                .filter(|&s| s > 1 << 32)
                .collect();
            if granted {
                assert_eq!(big, [5 * (1u64 << 30) + 123], "the 5 GiB block, exact size");
            } else {
                assert!(big.is_empty());
            }
        }
    }
}

/// A 16 GiB block reserved with malloc and barely touched (overcommit grants it; only touched pages cost
/// memory), live at exit: the exit-time reachability scan must not turn an instant exit into seconds of
/// reading untouched memory (the 10x / 5 s limit applies as everywhere).
#[test]
fn memory_sparse_huge_block_at_exit() {
    let prog = compile("stress/sparse.c", &[]);
    for i in 0..iterations() {
        let scratch = Scratch::new("sparse");
        let native = run_deadline(clean_command(&prog).arg("16"), NATIVE_TIMEOUT).unwrap();
        if !native.stdout.contains("granted=1") {
            println!("SKIP memory_sparse_huge_block_at_exit: the system refuses a 16 GiB malloc");
            return;
        }
        let o = compare(
            &Case::new(format!("memory/sparse-16GiB #{i}"), &prog).args(["16"]),
            &scratch,
        );
        assert_all_balanced("sparse", &o.dumps);
        assert!(o.dumps[0].blocks().iter().any(|b| b.size == 16 << 30));
    }
}

// ================================================================================================================
// the loader
// ================================================================================================================

/// A library whose constructor allocates (and starts an allocating thread) before the tracer's constructor
/// runs: linked as a dependency, preloaded after the tracer and preloaded before it. Its leak is in the dump,
/// the block it hands to main() is freed without any error, and everything balances.
#[test]
fn loader_constructor_allocates_before_ours() {
    let lib = compile("stress/early_lib.c", &["-fPIC", "-shared", "-pthread"]);
    let lib_dir = lib.parent().unwrap().to_str().unwrap().to_owned();
    let linked = compile(
        "stress/early_main.c",
        &[
            "-DLINKED",
            lib.to_str().unwrap(),
            &format!("-Wl,-rpath,{lib_dir}"),
        ],
    );
    let plain = compile("stress/early_main.c", &["-ldl"]);
    let ours = lib_path_str();
    let mut ran_before = 0;
    for i in 0..iterations() {
        for variant in ["linked", "preload-after", "preload-before"] {
            let scratch = Scratch::new("early");
            let dir = scratch.dump_dir();
            let (prog, native_preload, traced_preload) = match variant {
                "linked" => (&linked, None, ours.clone()),
                "preload-after" => (
                    &plain,
                    Some(lib.display().to_string()),
                    format!("{ours}:{}", lib.display()),
                ),
                _ => (
                    &plain,
                    Some(lib.display().to_string()),
                    format!("{}:{ours}", lib.display()),
                ),
            };
            let mut native = clean_command(prog);
            if let Some(p) = &native_preload {
                native.env("LD_PRELOAD", p);
            }
            let native = run_deadline(&mut native, NATIVE_TIMEOUT).expect("native");
            let mut traced = traced_command(prog, &dir);
            traced.env("LD_PRELOAD", &traced_preload);
            let traced = run_deadline(&mut traced, limit_for(native.wall))
                .unwrap_or_else(|e| panic!("early constructor ({variant}): {e}"));
            record(
                &format!("loader/early-ctor-{variant} #{i}"),
                native.wall,
                traced.wall,
            );
            assert_same_end(variant, &native, &traced);
            if traced.stderr.contains("early_before_tracer=1") {
                ran_before += 1;
            }
            let dumps = read_dumps(&dir);
            assert_eq!(dumps.len(), 1, "{variant}");
            assert_all_balanced(variant, &dumps);
            let d = &dumps[0];
            assert_eq!(d.error_counts(), [0; 4], "{variant}: {}", d.json["errors"]);
            let sizes: Vec<u64> = d.blocks().iter().map(|b| b.size).collect();
            assert!(
                sizes.contains(&4242),
                "{variant}: the constructor's leak: {sizes:?}"
            );
            assert!(
                !sizes.contains(&3131),
                "{variant}: the block main freed is still live"
            );
        }
    }
    assert!(
        ran_before > 0,
        "no variant ran the allocating constructor before the tracer's"
    );
}

fn lib_path_str() -> String {
    lib().to_str().expect("library path").to_owned()
}

/// dlopen and dlclose of 1000 distinct libraries (copies of one plugin under 1000 names), each with a
/// constructor that leaks, dynamic TLS, and a block handed back and freed after dlclose, while a thread
/// allocates. The dump keeps every leak and every unloaded module; the CLI reads it.
#[test]
fn loader_dlopen_dlclose_1000_libraries() {
    let plugin = compile("stress/dl_plugin.c", &["-fPIC", "-shared"]);
    let prog = compile("stress/dl_storm.c", &["-pthread", "-ldl"]);
    let n = 1000;
    let cycles = pick("1", "3");
    for i in 0..iterations() {
        let scratch = Scratch::new("dl-storm");
        let plugins = scratch.join("plugins");
        std::fs::create_dir_all(&plugins).unwrap();
        for k in 0..n {
            std::fs::copy(&plugin, plugins.join(format!("libp{k}.so"))).unwrap();
        }
        let o = compare(
            &Case::new(format!("loader/dlopen-{n}x{cycles} #{i}"), &prog).args([
                plugins.as_os_str(),
                std::ffi::OsStr::new(&n.to_string()),
                std::ffi::OsStr::new(cycles),
            ]),
            &scratch,
        );
        assert_all_balanced("dlopen storm", &o.dumps);
        let d = &o.dumps[0];
        assert_eq!(d.error_counts(), [0; 4]);
        let total: u64 = n * cycles.parse::<u64>().unwrap();
        let leaks = d.blocks().iter().filter(|b| b.size == 5000).count() as u64;
        assert_eq!(leaks, total, "every constructor's leak");
        assert!(
            !d.blocks().iter().any(|b| (6000..6010).contains(&b.size)),
            "blocks returned by plugins and freed after dlclose are not live"
        );
        let unloaded = modules(d)
            .iter()
            .filter(|(p, loaded)| p.contains("/plugins/libp") && !loaded)
            .count();
        assert_eq!(
            unloaded as u64, n,
            "every plugin in the module map, marked unloaded"
        );
        let r = d.report();
        let reported: u64 = r["leaks"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|l| l["frames"][0]["function"] == "plugin_init")
            .map(|l| u(&l["blocks"]))
            .sum();
        assert_eq!(
            reported, total,
            "the report attributes every leak to plugin_init"
        );
    }
}

/// A library is dlclose'd and another one is then loaded at the same address (the loader reuses the range):
/// the first library's leak must still be attributed to the first library's function, not to whatever code
/// now sits at that address (the dump's `stacks_to` says which stacks predate the first library's unloading).
#[test]
fn loader_leak_of_unloaded_library_keeps_its_attribution() {
    let alpha = compile("stress/dl_alpha.c", &["-fPIC", "-shared"]);
    let beta = compile("stress/dl_beta.c", &["-fPIC", "-shared"]);
    let prog = compile("stress/dl_reuse.c", &["-ldl"]);
    let scratch = Scratch::new("dl-reuse");
    let o = compare(
        &Case::new("loader/dlclose-address-reuse", &prog)
            .args([alpha.as_os_str(), beta.as_os_str()]),
        &scratch,
    );
    assert_all_balanced("dl reuse", &o.dumps);
    let d = &o.dumps[0];
    let bases: Vec<u64> = d.json["modules"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| {
            m["path"]
                .as_str()
                .is_some_and(|p| p.contains("libdl_alpha") || p.contains("libdl_beta"))
        })
        .map(|m| u(&m["base"]))
        .collect();
    // Each library's executable range holds both leaks' allocating return addresses (the padding in both): only
    // when each library was mapped can tell their code apart.
    let innermost = |bytes: u64| {
        let b = d
            .blocks()
            .into_iter()
            .find(|b| b.size == bytes)
            .expect("leak");
        d.frames(b.stack)[0]
    };
    let pcs = [innermost(4321), innermost(1234)];
    for m in d.json["modules"].as_array().unwrap().iter().filter(|m| {
        m["path"]
            .as_str()
            .is_some_and(|p| p.contains("libdl_alpha") || p.contains("libdl_beta"))
    }) {
        let base = u(&m["base"]);
        let covers = |pc: u64| {
            m["segments"].as_array().unwrap().iter().any(|s| {
                let (vaddr, memsz, flags) = (u(&s[0]), u(&s[1]), u(&s[2]));
                flags & 1 != 0 && pc >= base + vaddr && pc < base + vaddr + memsz
            })
        };
        assert!(
            pcs.iter().all(|&pc| covers(pc)),
            "{m} does not cover {pcs:x?}"
        );
    }
    let r = d.report();
    // Each library's leak in its own function and module: alpha's from before it was unloaded, beta's from the
    // same addresses afterwards.
    for (bytes, function, module) in [
        (4321, "alpha_leak", "libdl_alpha"),
        (1234, "beta_something_else", "libdl_beta"),
    ] {
        let leak = r["leaks"]
            .as_array()
            .unwrap()
            .iter()
            .find(|l| u(&l["bytes"]) == bytes)
            .unwrap_or_else(|| panic!("the {bytes}-byte leak: {}", r["leaks"]));
        let frames = &leak["frames"];
        let names = functions(frames);
        assert!(
            names.iter().take(2).any(|f| f.as_deref() == Some(function))
                && frames[0]["module"]
                    .as_str()
                    .is_some_and(|m| m.contains(module)),
            "leak of {module} attributed elsewhere (module bases {bases:?}):\n{}",
            describe_frames(frames)
        );
    }
}

/// A statically linked program cannot be interposed: it runs exactly as natively (same output, same exit
/// code), no dump appears, and `heapledger run` says why instead of staying silent.
#[test]
fn loader_static_binary_runs_untraced_and_the_cli_says_so() {
    let prog = match try_compile("stress/static_prog.c", &["-static"]) {
        Ok(p) => p,
        Err(e) => {
            println!("SKIP loader_static_binary: cannot link statically here: {e}");
            return;
        }
    };
    for i in 0..iterations() {
        let scratch = Scratch::new("static");
        let o = compare(
            &Case::new(format!("loader/static #{i}"), &prog).args(["3"]),
            &scratch,
        );
        assert_eq!(o.traced.status.code(), Some(3));
        assert!(o.dumps.is_empty(), "a static program cannot write a dump");

        let dir = scratch.join("cli");
        std::fs::create_dir_all(&dir).unwrap();
        let cli_out = run_deadline(
            clean_command(cli())
                .arg("run")
                .arg("--out")
                .arg(dir.join("x.%p.json"))
                .arg("--")
                .arg(&prog)
                .arg("3"),
            limit_for(o.native.wall),
        )
        .expect("heapledger run");
        assert_eq!(
            cli_out.status.code(),
            Some(3),
            "heapledger run returns the program's code"
        );
        assert_eq!(
            cli_out.stdout, o.native.stdout,
            "the program's output passes through"
        );
        assert!(
            cli_out
                .stderr
                .contains("statically linked (no ELF interpreter)"),
            "heapledger run must say the program is statically linked: {:?}",
            cli_out.stderr
        );
    }
}

/// fd 2 closed, or reused by the program for its own data file: the tracer must never write into the
/// program's file (even when it has something to say, here: the dump cannot be written), and with 0/1/2 all
/// closed it must still write its dump.
#[test]
fn loader_program_closes_or_reuses_fd_2() {
    let prog = compile("stress/stderr_games.c", &[]);
    for i in 0..iterations() {
        // All of 0, 1, 2 closed; the dump is written normally.
        let scratch = Scratch::new("fd2-closed");
        let native_file = scratch.join("native.txt");
        let traced_file = scratch.join("traced.txt");
        let native = run_deadline(
            clean_command(&prog).args(["closed"]).arg(&native_file),
            NATIVE_TIMEOUT,
        )
        .unwrap();
        let dir = scratch.dump_dir();
        let traced = run_deadline(
            traced_command(&prog, &dir)
                .args(["closed"])
                .arg(&traced_file),
            limit_for(native.wall),
        )
        .unwrap_or_else(|e| panic!("fd 0/1/2 closed: {e}"));
        record(
            &format!("loader/fds-0-1-2-closed #{i}"),
            native.wall,
            traced.wall,
        );
        assert_same_end("fds closed", &native, &traced);
        assert_eq!(
            std::fs::read(&traced_file).unwrap(),
            std::fs::read(&native_file).unwrap()
        );
        assert_all_balanced("fds closed", &read_dumps(&dir));

        // fd 2 reused for the program's data file, and the dump cannot be written (missing folder): the
        // tracer's complaint must not end up in the program's data.
        for out in ["ok", "missing"] {
            let scratch = Scratch::new("fd2-reuse");
            let native_file = scratch.join("native.txt");
            let traced_file = scratch.join("traced.txt");
            let native = run_deadline(
                clean_command(&prog).args(["reuse"]).arg(&native_file),
                NATIVE_TIMEOUT,
            )
            .unwrap();
            let dir = scratch.dump_dir();
            let mut cmd = traced_command(&prog, &dir);
            cmd.args(["reuse"]).arg(&traced_file);
            if out == "missing" {
                cmd.env("HEAPLEDGER_OUT", scratch.join("no/such/dir/d.%p.json"));
            }
            let traced = run_deadline(&mut cmd, limit_for(native.wall))
                .unwrap_or_else(|e| panic!("fd 2 reused: {e}"));
            record(
                &format!("loader/fd2-reused-dump-{out} #{i}"),
                native.wall,
                traced.wall,
            );
            assert_same_end("fd 2 reused", &native, &traced);
            assert_eq!(
                std::fs::read_to_string(&traced_file).unwrap(),
                std::fs::read_to_string(&native_file).unwrap(),
                "fd 2 reused for the program's file (dump {out}): the tracer wrote into the program's data"
            );
            if out == "ok" {
                assert_all_balanced("fd 2 reused", &read_dumps(&dir));
            }
        }
    }
}

/// stderr is a pipe whose reader has gone away. A program that never writes to stderr lives natively; under
/// the tracer it must too, even when the tracer has a line to print (the dump cannot be written): no SIGPIPE
/// death, no lost stdout.
#[test]
fn loader_stderr_is_a_broken_pipe() {
    let prog = compile("stress/stderr_games.c", &[]);
    for i in 0..iterations() {
        for out in ["ok", "missing"] {
            let scratch = Scratch::new("epipe");
            let (reader, writer) = std::io::pipe().expect("pipe");
            drop(reader);
            let native = spawn(
                clean_command(&prog).arg("quiet"),
                false,
                Some(writer.try_clone().unwrap().into()),
            )
            .finish(NATIVE_TIMEOUT)
            .unwrap();
            let dir = scratch.dump_dir();
            let mut cmd = traced_command(&prog, &dir);
            cmd.arg("quiet");
            if out == "missing" {
                cmd.env("HEAPLEDGER_OUT", scratch.join("no/such/dir/d.%p.json"));
            }
            let traced = spawn(&mut cmd, false, Some(writer.into()))
                .finish(limit_for(native.wall))
                .unwrap_or_else(|e| panic!("broken stderr pipe: {e}"));
            record(
                &format!("loader/stderr-broken-pipe-dump-{out} #{i}"),
                native.wall,
                traced.wall,
            );
            assert_eq!(native.status.code(), Some(0), "native: {native:?}");
            assert_same_end(
                &format!("stderr broken pipe (dump {out})"),
                &native,
                &traced,
            );
            if out == "ok" {
                assert_all_balanced("broken pipe", &read_dumps(&dir));
            }
        }
    }
}

// ================================================================================================================
// languages
// ================================================================================================================

/// A Rust binary (built here with rustc): Vec, String, Box, HashMap, BTreeMap, Rc, threads with channels and a
/// caught panic. Same output, balanced dump, no heap error.
#[test]
fn lang_rust_binary() {
    let prog = match compile_rust("stress/rust_prog.rs") {
        Ok(p) => p,
        Err(e) => {
            println!("SKIP lang_rust_binary: {e}");
            return;
        }
    };
    for i in 0..iterations() {
        let scratch = Scratch::new("rust");
        let o = compare(
            &Case::new(format!("lang/rust #{i}"), &prog).args([pick("200000", "2000000")]),
            &scratch,
        );
        assert_all_balanced("rust", &o.dumps);
        assert_eq!(o.dumps.len(), 1);
        assert_eq!(
            o.dumps[0].error_counts(),
            [0; 4],
            "{}",
            o.dumps[0].json["errors"]
        );
        assert!(
            o.dumps[0].totals().allocations > 10_000,
            "Rust's allocations went through the hooks"
        );
    }
}

/// Compiles a Rust program with rustc (cached next to the C programs, keyed by source text).
fn compile_rust(source: &str) -> Result<PathBuf, String> {
    let src = program_source(source);
    let text = std::fs::read(&src).map_err(|e| format!("{}: {e}", src.display()))?;
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in text.iter().chain(b"-O -g1".iter()) {
        h ^= b as u64;
        h = h.wrapping_mul(0x100_0000_01b3);
    }
    let dir = bin_dir().join("heapledger-test-programs");
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let stem = Path::new(source)
        .file_stem()
        .unwrap()
        .to_string_lossy()
        .into_owned();
    let out = dir.join(format!("{stem}-{h:016x}"));
    if out.is_file() {
        return Ok(out);
    }
    let tmp = out.with_extension(format!("tmp.{}", std::process::id()));
    let rustc = std::env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    let o = Command::new(&rustc)
        .args(["-O", "-C", "debuginfo=1", "--edition", "2021"])
        .arg(&src)
        .arg("-o")
        .arg(&tmp)
        .output()
        .map_err(|e| format!("cannot run {rustc:?}: {e}"))?;
    if !o.status.success() {
        return Err(format!(
            "rustc failed:\n{}",
            String::from_utf8_lossy(&o.stderr)
        ));
    }
    std::fs::rename(&tmp, &out).map_err(|e| e.to_string())?;
    Ok(out)
}

/// Debian's python3 with its C extensions (json, zlib, bz2, lzma, hashlib, sqlite3, re, decimal, csv, struct)
/// and threads, every object allocated with malloc (PYTHONMALLOC=malloc).
#[test]
fn lang_python_with_c_extensions() {
    let python = Path::new("/usr/bin/python3");
    if !python.exists() {
        println!("SKIP lang_python: /usr/bin/python3 not installed");
        return;
    }
    let script = program_source("stress/py_work.py");
    for i in 0..iterations() {
        let scratch = Scratch::new("python");
        let o = compare(
            &Case::new(format!("lang/python #{i}"), python)
                .args([script.as_os_str()])
                .env("PYTHONMALLOC", "malloc")
                .env("PYTHONDONTWRITEBYTECODE", "1"),
            &scratch,
        );
        assert_all_balanced("python", &o.dumps);
        assert_eq!(o.dumps.len(), 1);
        assert_eq!(
            o.dumps[0].error_counts(),
            [0; 4],
            "{}",
            o.dumps[0].json["errors"]
        );
    }
}

/// Long form only (needs golang-go): a Go binary with cgo, C allocations from 16 goroutines, three C blocks
/// leaked.
#[test]
#[ignore = "long form (scripts/stress.sh): needs the Go toolchain"]
fn lang_go_with_cgo() {
    let go = ["/usr/bin/go", "/usr/lib/go/bin/go", "/usr/local/go/bin/go"]
        .into_iter()
        .map(PathBuf::from)
        .find(|p| p.exists());
    let Some(go) = go else {
        panic!("the Go toolchain is not installed (scripts/stress.sh installs golang-go)");
    };
    let src = program_source("stress/go_cgo");
    let build = Scratch::new("go-build");
    let exe = build.join("gocgo");
    let out = Command::new(&go)
        .args(["build", "-o"])
        .arg(&exe)
        .arg(".")
        .current_dir(&src)
        .env("CGO_ENABLED", "1")
        .env("GOCACHE", build.join("cache"))
        .env("GOPATH", build.join("gopath"))
        .env("GOFLAGS", "-mod=mod")
        .env("HOME", &build.path)
        .output()
        .expect("go build");
    assert!(
        out.status.success(),
        "go build failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for i in 0..iterations() {
        let scratch = Scratch::new("go");
        // Periodic snapshots too: they show the tracer working inside the Go process even if the end of the
        // process is not seen.
        let o = compare(
            &Case::new(format!("lang/go-cgo #{i}"), &exe)
                .final_from_watcher()
                .env("HEAPLEDGER_INTERVAL", "0.01")
                .env("HEAPLEDGER_OUT", scratch.dump_dir().join("d.%p.%n.json")),
            &scratch,
        );
        assert_all_balanced("go", &o.dumps);
        for d in &o.dumps {
            assert_eq!(d.error_counts(), [0; 4], "{}", d.json["errors"]);
        }
        let finals: Vec<&Dump> = o
            .dumps
            .iter()
            .filter(|d| d.reason() != "interval")
            .collect();
        assert_eq!(
            finals.len(),
            1,
            "no final dump from the Go program ({} periodic snapshots): the Go runtime ends the process with \
             the exit_group system call, bypassing exit(), _exit() and the library's destructor",
            o.dumps.len()
        );
        let d = finals[0];
        // The Go runtime ends with a raw exit_group: the end watcher writes this dump.
        assert_eq!(d.reason(), "exit_group", "{}", d.json["detail"]);
        assert_eq!(
            d.blocks().iter().filter(|b| b.size == 7777).count(),
            3,
            "the three C leaks"
        );
    }
}

/// Long form only (needs a JRE): `java -version` under the tracer: same output (on stderr), same status,
/// balanced dumps. The JVM handles SIGSEGV itself (implicit null checks) and starts many threads.
#[test]
#[ignore = "long form (scripts/stress.sh): needs a JRE"]
fn lang_jvm_version() {
    let java = ["/usr/bin/java"]
        .into_iter()
        .map(PathBuf::from)
        .find(|p| p.exists());
    let Some(java) = java else {
        panic!("no JRE installed (scripts/stress.sh installs default-jre-headless)");
    };
    for i in 0..iterations() {
        let scratch = Scratch::new("jvm");
        let o = compare(
            &Case::new(format!("lang/jvm-version #{i}"), &java).args(["-version"]),
            &scratch,
        );
        assert!(o.native.stderr.contains("version"), "{}", o.native.stderr);
        assert_all_balanced("jvm", &o.dumps);
    }
}

// ================================================================================================================
// dumps
// ================================================================================================================

/// A tmpfs mounted for the test, unmounted (and its mount point removed) when dropped.
struct Tmpfs {
    path: PathBuf,
}

impl Tmpfs {
    /// Mounts a tmpfs with `options` at `path`; None (with the reason printed) when mounting is not permitted.
    fn mount(path: &Path, options: &str) -> Option<Tmpfs> {
        std::fs::create_dir_all(path).unwrap();
        let o = Command::new("mount")
            .args(["-t", "tmpfs", "-o", options, "tmpfs"])
            .arg(path)
            .output();
        match o {
            Ok(o) if o.status.success() => Some(Tmpfs {
                path: path.to_path_buf(),
            }),
            Ok(o) => {
                println!(
                    "SKIP: cannot mount a tmpfs ({}); run as root with CAP_SYS_ADMIN to test this case",
                    String::from_utf8_lossy(&o.stderr).trim()
                );
                None
            }
            Err(e) => {
                println!("SKIP: cannot run mount: {e}");
                None
            }
        }
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.path).status();
    }
}

/// The disk fills up while dumps are written (a 64 KiB tmpfs; snapshots every 20 ms of a growing heap): every
/// file under a final name is complete, no temporary file is left, each failure is one clear line on stderr,
/// and the program is unaffected. Then: a complete dump already at the final path survives a rewrite that
/// fails for lack of space (the new dump goes to a temporary name first).
#[test]
fn dumps_disk_full() {
    let prog = compile("stress/leaky.c", &[]);
    for i in 0..iterations() {
        let scratch = Scratch::new("disk-full");
        let Some(fs) = Tmpfs::mount(&scratch.join("small"), "size=64k") else {
            return;
        };
        let native =
            run_deadline(clean_command(&prog).args(["3000", "100"]), NATIVE_TIMEOUT).unwrap();
        let mut cmd = clean_command(&prog);
        cmd.args(["3000", "100"])
            .env("LD_PRELOAD", lib())
            .env("HEAPLEDGER_INTERVAL", "0.02")
            .env("HEAPLEDGER_OUT", fs.path.join("d.%n.json"));
        let full = run_deadline(&mut cmd, limit_for(native.wall))
            .unwrap_or_else(|e| panic!("disk full: {e}"));
        record(&format!("dumps/disk-full #{i}"), native.wall, full.wall);
        assert_same_end("disk full", &native, &full);
        let lines: Vec<&str> = full.stderr.lines().collect();
        assert!(
            !lines.is_empty(),
            "the disk filled up, but nothing was said"
        );
        for l in &lines {
            assert!(
                l.starts_with("heapledger: cannot write dump ")
                    && l.ends_with("no space left on device"),
                "unexpected stderr line: {l:?}"
            );
        }
        assert_no_leftovers(&fs.path);
        let dumps = read_dumps(&fs.path); // each one parsed and `complete: true`
        assert!(!dumps.is_empty(), "the first snapshots fit");
        assert_all_balanced("disk full", &dumps);
        println!(
            "disk full: {} dumps written, {} refused",
            dumps.len(),
            lines.len()
        );

        // A complete dump is already where the exit dump goes; the new one does not fit.
        for e in std::fs::read_dir(&fs.path).unwrap() {
            std::fs::remove_file(e.unwrap().path()).unwrap();
        }
        let quick = traced(
            &Scratch::new("disk-full-pre"),
            &compile("exit_code.c", &[]),
            &[],
        );
        quick.out.assert_success();
        let old_text = quick.dump().text.clone();
        let final_path = fs.path.join("final.json");
        std::fs::write(&final_path, &old_text).unwrap();
        let mut cmd = clean_command(&prog);
        cmd.args(["3000"])
            .env("LD_PRELOAD", lib())
            .env("HEAPLEDGER_OUT", &final_path);
        let traced =
            run_deadline(&mut cmd, FLOOR).unwrap_or_else(|e| panic!("disk full, rewrite: {e}"));
        assert_eq!(traced.status.code(), Some(0));
        assert_eq!(traced.stdout, "leaked=3000\nok\n");
        assert_eq!(
            traced
                .stderr
                .lines()
                .filter(|l| l.starts_with("heapledger: cannot write dump"))
                .count(),
            1,
            "{:?}",
            traced.stderr
        );
        assert_no_leftovers(&fs.path);
        assert_eq!(
            std::fs::read_to_string(&final_path).unwrap(),
            old_text,
            "the complete dump already in place was damaged by the failed rewrite"
        );
    }
}

/// The output folder is on a read-only file system (root ignores permission bits, so this is the way to make
/// a folder unwritable for it): one clear line on stderr, the program unaffected.
#[test]
fn dumps_read_only_file_system() {
    let prog = compile("exit_code.c", &[]);
    let scratch = Scratch::new("read-only");
    let Some(fs) = Tmpfs::mount(&scratch.join("ro"), "size=64k,ro") else {
        return;
    };
    let native = run_deadline(clean_command(&prog).arg("5"), NATIVE_TIMEOUT).unwrap();
    let traced = run_deadline(
        clean_command(&prog)
            .arg("5")
            .env("LD_PRELOAD", lib())
            .env("HEAPLEDGER_OUT", fs.path.join("d.%p.json")),
        limit_for(native.wall),
    )
    .unwrap();
    record("dumps/read-only-fs", native.wall, traced.wall);
    assert_same_end("read-only fs", &native, &traced);
    let ours: Vec<&str> = traced
        .stderr
        .lines()
        .filter(|l| l.starts_with("heapledger"))
        .collect();
    assert_eq!(ours.len(), 1, "{:?}", traced.stderr);
    assert!(
        ours[0].contains("cannot write dump") && ours[0].contains("read-only"),
        "{:?}",
        ours[0]
    );
    let rest: String = traced
        .stderr
        .lines()
        .filter(|l| !l.starts_with("heapledger"))
        .map(|l| format!("{l}\n"))
        .collect();
    assert_eq!(rest, native.stderr, "the program's own stderr");
}
