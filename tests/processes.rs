//! fork, exec, _exit/_Exit and vfork: each process writes its own dump (or, for a vfork child, none).

mod common;
use common::*;
use std::path::PathBuf;

fn prog() -> PathBuf {
    compile("processes.c", &[])
}

fn sizes(d: &Dump) -> Vec<u64> {
    d.block_sizes().into_iter().map(|(s, _)| s).collect()
}

#[test]
fn fork_writes_one_dump_per_process() {
    let scratch = Scratch::new("fork");
    let t = traced(&scratch, &prog(), &["fork"]);
    t.out.assert_success();
    let parent = t.out.value("parent");
    let child = t.out.value("child");
    assert_ne!(parent, child);
    assert_eq!(t.dumps.len(), 2, "{:?}", t.dumps);

    let p = t.dump_of(parent);
    assert_eq!(p.reason(), "exit");
    assert_eq!(sizes(p), [100, 300]);
    assert_eq!(p.totals(), Totals::new(2, 0, 400, 0));
    p.assert_balanced();

    let c = t.dump_of(child);
    assert_eq!(c.reason(), "exit");
    assert_eq!(u(&c.json["ppid"]), parent);
    // The child inherits the 100-byte block (and its count), frees it, and leaks 200.
    assert_eq!(sizes(c), [200]);
    assert_eq!(c.totals(), Totals::new(2, 1, 300, 100));
    c.assert_balanced();
    assert_eq!(
        c.path.file_name().unwrap().to_str().unwrap(),
        format!("dump.{child}.json")
    );
}

#[test]
fn exec_d_program_writes_its_own_dump() {
    let scratch = Scratch::new("exec");
    let prog = prog();
    let t = traced(&scratch, &prog, &["exec", prog.to_str().unwrap()]);
    t.out.assert_success();
    let pid = t.out.value("before_exec");
    assert_eq!(t.out.value("leak"), pid, "exec keeps the pid");
    // One dump: the image that called exec never exits; the new image does.
    let d = t.dump();
    assert_eq!(d.pid(), pid);
    assert_eq!(d.reason(), "exit");
    assert_eq!(
        d.json["cmdline"],
        serde_json::json!([prog.to_str().unwrap(), "leak"])
    );
    assert_eq!(
        PathBuf::from(d.json["exe"].as_str().unwrap()),
        std::fs::canonicalize(&prog).unwrap()
    );
    // Only the new image's 30 bytes, not the 40 allocated before exec.
    assert_eq!(sizes(d), [30]);
    assert_eq!(d.totals(), Totals::new(1, 0, 30, 0));
}

#[test]
fn exec_of_a_system_binary_is_traced_too() {
    let scratch = Scratch::new("exec-true");
    let t = traced(&scratch, &prog(), &["exec", "/bin/true"]);
    t.out.assert_success();
    let d = t.dump();
    assert_eq!(d.pid(), t.out.value("before_exec"));
    assert_eq!(
        PathBuf::from(d.json["exe"].as_str().unwrap()),
        std::fs::canonicalize("/bin/true").unwrap()
    );
    d.assert_balanced();
}

fn check_underscore_exit(how: &str) {
    let scratch = Scratch::new(how);
    let t = traced(&scratch, &prog(), &[how]);
    t.out.assert_success();
    assert_eq!(t.dumps.len(), 2, "{:?}", t.dumps);
    let c = t.dump_of(t.out.value("child"));
    assert_eq!(c.reason(), "_exit", "{how}");
    assert_eq!(sizes(c), [77]);
    assert_eq!(c.totals(), Totals::new(1, 0, 77, 0));
    let p = t.dump_of(t.out.value("parent"));
    assert_eq!(p.reason(), "exit");
    assert_eq!(sizes(p), [88]);
    assert_eq!(p.totals(), Totals::new(1, 0, 88, 0));
}

#[test]
fn underscore_exit_writes_a_dump() {
    check_underscore_exit("_exit");
}

#[test]
fn underscore_capital_exit_writes_a_dump() {
    check_underscore_exit("_Exit");
}

#[test]
fn vfork_child_writes_nothing_and_leaves_the_parent_alone() {
    let scratch = Scratch::new("vfork");
    let t = traced(&scratch, &prog(), &["vfork"]);
    t.out.assert_success();
    let d = t.dump();
    assert_eq!(d.pid(), t.out.value("parent"));
    assert_eq!(d.reason(), "exit");
    assert_eq!(sizes(d), [55]);
    assert_eq!(d.totals(), Totals::new(1, 0, 55, 0));
    assert_eq!(d.json["snapshot"], 0, "the parent's first and only dump");
}

#[test]
fn system_popen_and_posix_spawn_children_write_their_own_dumps() {
    let scratch = Scratch::new("spawn");
    let t = traced(&scratch, &prog(), &["spawn"]);
    t.out.assert_success();
    let parent = t.out.value("parent");
    // The parent, `sh -c 'exit 3'`, `sh -c 'echo hi'`, `true`.
    assert_eq!(t.dumps.len(), 4, "{:?}", t.dumps);
    let p = t.dump_of(parent);
    assert_eq!(p.reason(), "exit");
    // popen's stream and buffer were freed by pclose: only the program's own block is live.
    assert_eq!(sizes(p), [123]);
    p.assert_balanced();
    let mut cmdlines: Vec<String> = Vec::new();
    for d in t.dumps.iter().filter(|d| d.pid() != parent) {
        assert_eq!(u(&d.json["ppid"]), parent);
        d.assert_balanced();
        assert_eq!(d.error_counts(), [0; 4]);
        cmdlines.push(
            d.json["cmdline"]
                .as_array()
                .unwrap()
                .iter()
                .map(|a| a.as_str().unwrap())
                .collect::<Vec<_>>()
                .join(" "),
        );
    }
    cmdlines.sort();
    assert_eq!(cmdlines, ["sh -c echo hi", "sh -c exit 3", "true"]);
}

#[test]
fn fork_while_threads_allocate_loses_nothing() {
    // Threads start and allocate while the main thread forks. Every process must account for every block
    // (lost_blocks 0), and the parent must still judge a bad free at the end: a tracer that lost track of blocks
    // lets unknown pointers through to the allocator, and glibc aborts on this one. The interleaving varies from
    // run to run, so the program runs several times.
    let prog = compile("fork_threads.c", &["-pthread"]);
    for round in 0..5 {
        let scratch = Scratch::new("fork-threads");
        let t = traced(&scratch, &prog, &[]);
        let lost: Vec<(u64, String, u64)> = t
            .dumps
            .iter()
            .map(|d| {
                (
                    d.pid(),
                    d.reason().to_owned(),
                    u(&d.json["tracer"]["lost_blocks"]),
                )
            })
            .collect();
        assert!(
            lost.iter().all(|(_, _, n)| *n == 0),
            "run {round}: blocks lost (pid, reason, lost_blocks): {lost:?}"
        );
        assert!(t.out.status.success(), "run {round}: {:#?}", t.out);
        assert_eq!(t.out.value("children"), 20);
        assert_eq!(t.dumps.len(), 21);
        for child in t.out.values("child") {
            let c = t.dump_of(child);
            assert_eq!(c.reason(), "_exit");
            c.assert_balanced();
            assert!(c.blocks().iter().any(|b| b.size == 44));
        }
        let parent = t
            .dumps
            .iter()
            .find(|d| d.reason() == "exit")
            .expect("parent dump");
        parent.assert_balanced();
        assert_eq!(parent.error_counts(), [0, 1, 0, 0]);
        assert_eq!(parent.json["errors"][0]["detail"], "stack");
    }
}
