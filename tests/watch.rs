//! The end watcher (`src/linux/watch.rs`): a final dump for programs that end without running any exit code —
//! a raw `exit_group` (what Go's runtime does), SIGKILL — and none too many when they end normally, exec, fork
//! or vfork. `tests/programs/watch/ending.c` has one mode per way of ending; every mode first leaves five
//! 4321-byte blocks live.
//!
//! The watcher writes after the program has ended, i.e. after the test's `wait` returned: dumps are awaited.

mod common;
use common::*;
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

const ENDING: &str = "watch/ending.c";

/// Dump sizes: size -> number of live blocks.
fn sizes(d: &Dump) -> BTreeMap<u64, usize> {
    let mut m = BTreeMap::new();
    for b in d.blocks() {
        *m.entry(b.size).or_insert(0) += 1;
    }
    m
}

/// The dumps in `dir` once `n` are there and no more appear for `settle` (the watcher writes after the end).
fn await_dumps(dir: &Path, n: usize, settle: Duration) -> Vec<Dump> {
    let deadline = Instant::now() + Duration::from_secs(10);
    let count = || {
        std::fs::read_dir(dir)
            .map(|r| {
                r.flatten()
                    .filter(|e| e.path().extension().is_some_and(|x| x == "json"))
                    .count()
            })
            .unwrap_or(0)
    };
    while count() < n && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    std::thread::sleep(settle);
    read_dumps(dir)
}

/// Runs `ending mode [args]` under the tracer with `HEAPLEDGER_WATCH=watch`, dumps named by pid and number.
fn ending(scratch: &Scratch, watch: &str, mode: &str, args: &[&str]) -> Output {
    let prog = compile(ENDING, &[]);
    let dir = scratch.dump_dir();
    run(traced_command(&prog, &dir)
        .env("HEAPLEDGER_OUT", dir.join("d.%p.%n.json"))
        .env("HEAPLEDGER_WATCH", watch)
        .arg(mode)
        .args(args)
        .current_dir(&scratch.path))
}

#[test]
fn raw_exit_group_gets_a_final_dump() {
    let scratch = Scratch::new("watch-exit-group");
    let out = ending(&scratch, "1", "exit_group", &[]);
    assert_eq!(out.code(), 3, "the program's own exit status: {out:#?}");
    let dumps = await_dumps(&scratch.dump_dir(), 1, Duration::from_millis(200));
    assert_eq!(dumps.len(), 1, "{out:#?}");
    let d = &dumps[0];
    assert_eq!(d.reason(), "exit_group");
    assert_eq!(
        d.json["detail"], "exit_group system call with status 3: no exit handler ran",
        "{}",
        d.json["detail"]
    );
    assert_eq!(d.pid(), d.json["pid"].as_u64().unwrap());
    assert_eq!(sizes(d).get(&4321), Some(&5), "{:?}", sizes(d));
    d.assert_balanced();
}

#[test]
fn sigkill_gets_a_final_dump() {
    let scratch = Scratch::new("watch-sigkill");
    let prog = compile(ENDING, &[]);
    let dir = scratch.dump_dir();
    let mut child = traced_command(&prog, &dir)
        .env("HEAPLEDGER_OUT", dir.join("d.%p.%n.json"))
        .env("HEAPLEDGER_WATCH", "1")
        .arg("sigkill")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .expect("read");
    assert_eq!(line, "ready\n");
    child.kill().expect("SIGKILL");
    let status = child.wait().expect("wait");
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(status.signal(), Some(9));
    let dumps = await_dumps(&dir, 1, Duration::from_millis(200));
    assert_eq!(dumps.len(), 1);
    let d = &dumps[0];
    assert_eq!(d.reason(), "killed");
    assert_eq!(d.json["detail"], "killed by SIGKILL");
    assert_eq!(d.pid(), child.id() as u64);
    assert_eq!(sizes(d).get(&4321), Some(&5), "{:?}", sizes(d));
    d.assert_balanced();
}

/// An ordinary exit writes its dump itself; the watcher, which sees the program end too, must add nothing.
#[test]
fn ordinary_exit_gets_exactly_one_dump() {
    let scratch = Scratch::new("watch-exit");
    let out = ending(&scratch, "1", "exit", &[]);
    out.assert_success();
    let dumps = await_dumps(&scratch.dump_dir(), 1, Duration::from_millis(500));
    assert_eq!(
        dumps.len(),
        1,
        "{:?}",
        dumps.iter().map(|d| &d.path).collect::<Vec<_>>()
    );
    assert_eq!(dumps[0].reason(), "exit");
    assert_eq!(sizes(&dumps[0]).get(&4321), Some(&5));
}

/// Without `HEAPLEDGER_WATCH`, only cgo programs get a watcher: a C program's raw exit_group leaves no dump
/// (and still ends with its own status).
#[test]
fn c_programs_are_not_watched_by_default() {
    let scratch = Scratch::new("watch-default");
    let prog = compile(ENDING, &[]);
    let dir = scratch.dump_dir();
    let out = run(traced_command(&prog, &dir)
        .env("HEAPLEDGER_OUT", dir.join("d.%p.%n.json"))
        .arg("exit_group"));
    assert_eq!(out.code(), 3);
    std::thread::sleep(Duration::from_millis(300));
    assert!(read_dumps(&dir).is_empty());
}

/// exec replaces the memory the watcher shares: the exec'd program writes its own dump, and the old watcher —
/// stopped by the exec hook, or noticing a raw execve itself — writes none.
#[test]
fn exec_leaves_only_the_new_programs_dump() {
    let prog = compile(ENDING, &[]);
    for mode in ["exec", "raw_exec"] {
        let scratch = Scratch::new(&format!("watch-{mode}"));
        let out = ending(&scratch, "1", mode, &[prog.to_str().unwrap()]);
        out.assert_success();
        assert_eq!(out.stdout, "leak2 done\n");
        // The raw exec is noticed within a second: wait past that before counting.
        let dumps = await_dumps(&scratch.dump_dir(), 1, Duration::from_millis(1500));
        assert_eq!(
            dumps.len(),
            1,
            "{mode}: {:?}",
            dumps.iter().map(|d| &d.path).collect::<Vec<_>>()
        );
        let d = &dumps[0];
        assert_eq!(d.reason(), "exit", "{mode}");
        let s = sizes(d);
        assert_eq!(
            (s.get(&999), s.get(&4321)),
            (Some(&2), None),
            "{mode}: the exec'd program's blocks only: {s:?}"
        );
    }
}

/// A forked child gets a watcher of its own: its raw exit_group leaves its dump (with the blocks it inherited
/// and its own), and the parent's ordinary exit its own.
#[test]
fn forked_child_is_watched_too() {
    let scratch = Scratch::new("watch-fork");
    let out = ending(&scratch, "1", "fork", &[]);
    out.assert_success();
    assert_eq!(out.stdout, "child status 0\n");
    let dumps = await_dumps(&scratch.dump_dir(), 2, Duration::from_millis(300));
    assert_eq!(
        dumps.len(),
        2,
        "{:?}",
        dumps.iter().map(|d| &d.path).collect::<Vec<_>>()
    );
    let child = dumps
        .iter()
        .find(|d| d.reason() == "exit_group")
        .expect("the child's dump");
    let parent = dumps
        .iter()
        .find(|d| d.reason() == "exit")
        .expect("the parent's dump");
    assert_ne!(child.pid(), parent.pid());
    assert_eq!(u(&child.json["ppid"]), parent.pid());
    assert_eq!(sizes(child).get(&777), Some(&2));
    assert_eq!(sizes(child).get(&4321), Some(&5));
    assert_eq!(sizes(parent).get(&777), None);
}

/// A vfork child shares the parent's memory: its exec must not stop the parent's watcher, which then sees the
/// parent's raw exit_group.
#[test]
fn vfork_child_exec_keeps_the_parents_watcher() {
    let prog = compile(ENDING, &[]);
    let scratch = Scratch::new("watch-vfork");
    let out = ending(&scratch, "1", "vfork", &[prog.to_str().unwrap()]);
    assert_eq!(out.code(), 4, "{out:#?}");
    let dumps = await_dumps(&scratch.dump_dir(), 2, Duration::from_millis(300));
    assert_eq!(
        dumps.len(),
        2,
        "{:?}",
        dumps.iter().map(|d| &d.path).collect::<Vec<_>>()
    );
    let parent = dumps
        .iter()
        .find(|d| d.reason() == "exit_group")
        .expect("the parent's dump");
    assert!(parent.json["detail"].as_str().unwrap().contains("status 4"));
    assert_eq!(sizes(parent).get(&4321), Some(&5));
    let exec = dumps
        .iter()
        .find(|d| d.reason() == "exit")
        .expect("the exec'd program's dump");
    assert_eq!(sizes(exec).get(&999), Some(&2));
}

/// `heapledger run` inherits the watcher (as a subreaper) and waits for it: the dump is in its summary.
#[test]
fn heapledger_run_waits_for_the_watcher() {
    let prog = compile(ENDING, &[]);
    let scratch = Scratch::new("watch-run");
    let out = run(clean_command(cli())
        .args(["run", "--"])
        .arg(&prog)
        .arg("exit_group")
        .env("HEAPLEDGER_WATCH", "1")
        .current_dir(&scratch.path));
    assert_eq!(out.code(), 3, "{out:#?}");
    assert!(
        out.stderr.contains("1 dump(s) written")
            && out.stderr.contains("exit_group (exit_group system call"),
        "{}",
        out.stderr
    );
}
