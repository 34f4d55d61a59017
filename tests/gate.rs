//! The CI gate end to end: real C/C++ programs run under the real preload library by `heapledger run` with
//! gate options, and `heapledger check` on the dumps they leave. Exit codes, what fails by default, the stacks
//! reported, suppressions in both syntaxes, baselines, and runs of several processes.

mod common;
use common::*;

use serde_json::Value;
use std::path::{Path, PathBuf};

const LEAKS: &str = "gate/leaks.c";
const ERRORS: &str = "gate/errors.cc";

/// The gate's default exit code when it fails.
const GATE: i32 = 23;

/// `heapledger run --out <scratch>/dumps/d.%p.json GATE... -- prog args`, in the scratch directory.
fn gate_run(scratch: &Scratch, gate: &[&str], prog: &Path, args: &[&str]) -> Output {
    let out = scratch.dump_dir().join("d.%p.json");
    run(clean_command(cli())
        .arg("run")
        .arg("--out")
        .arg(&out)
        .args(gate)
        .arg("--")
        .arg(prog)
        .args(args)
        .current_dir(&scratch.path))
}

/// `gate_run` with `--format json --output <file>`: the output and the parsed gate report.
fn gate_run_json(scratch: &Scratch, gate: &[&str], prog: &Path, args: &[&str]) -> (Output, Value) {
    let report = scratch.join("gate.json");
    let _ = std::fs::remove_file(&report);
    let mut all: Vec<&str> = vec!["--format", "json", "--output", report.to_str().unwrap()];
    all.extend_from_slice(gate);
    let out = gate_run(scratch, &all, prog, args);
    let text = std::fs::read_to_string(&report)
        .unwrap_or_else(|e| panic!("no gate report ({e}): {out:#?}"));
    let v = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("gate report not JSON ({e}): {text}"));
    (out, v)
}

/// `heapledger check ARGS...` in the scratch directory.
fn check(scratch: &Scratch, args: &[&str]) -> Output {
    run(clean_command(cli())
        .arg("check")
        .args(args)
        .current_dir(&scratch.path))
}

/// Every dump of the scratch directory.
fn dump_paths(scratch: &Scratch) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(scratch.dump_dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    v.sort();
    v
}

/// Findings of a gate report whose status is `status`, as `(kind, count, bytes)`.
fn findings_with(v: &Value, status: &str) -> Vec<(String, u64, u64)> {
    v["findings"]
        .as_array()
        .expect("findings")
        .iter()
        .filter(|f| f["status"] == status)
        .map(|f| {
            (
                f["kind"].as_str().unwrap().to_owned(),
                u(&f["count"]),
                u(&f["bytes"]),
            )
        })
        .collect()
}

/// The finding of `kind` whose innermost frame of its first stack is `function`.
fn finding<'a>(v: &'a Value, kind: &str, function: &str) -> &'a Value {
    v["findings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["kind"] == kind && f["stacks"][0]["frames"][0]["function"] == function)
        .unwrap_or_else(|| panic!("no {kind} finding in {function}: {v:#}"))
}

fn stack<'a>(f: &'a Value, role: &str) -> &'a Value {
    &f["stacks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["role"] == role)
        .unwrap_or_else(|| panic!("no {role} stack in {f:#}"))["frames"]
}

const STRICT: [&str; 2] = ["--fail-on", "leak,double-free,invalid-free,mismatched-free"];

#[test]
fn clean_program_passes_with_its_own_exit_code() {
    let prog = compile(LEAKS, &[]);
    let scratch = Scratch::new("gate-clean");
    for code in ["0", "7"] {
        let out = gate_run(&scratch, &STRICT, &prog, &["clean", code]);
        assert_eq!(out.code().to_string(), code, "{out:#?}");
        assert!(
            out.stderr.contains("heapledger gate: passed"),
            "{}",
            out.stderr
        );
    }
}

#[test]
fn system_programs_and_a_clean_cxx_program_pass_out_of_the_box() {
    let scratch = Scratch::new("gate-system");
    let cxx = compile("gate/clean.cc", &["-pthread"]);
    let mut programs: Vec<(PathBuf, Vec<&str>)> = vec![
        (PathBuf::from("/bin/true"), vec![]),
        (PathBuf::from("/bin/sh"), vec!["-c", "ls / > /dev/null"]),
        (cxx, vec![]),
    ];
    // Debian's python3 (a python3 of pyenv & co. may be built differently, see docs/gate.md).
    if Path::new("/usr/bin/python3").exists() {
        programs.push((PathBuf::from("/usr/bin/python3"), vec!["-c", "pass"]));
    }
    for (prog, args) in programs {
        let (out, v) = gate_run_json(&scratch, &["--fail-on", "default"], &prog, &args);
        assert_eq!(
            out.code(),
            0,
            "{} {args:?} failed the default gate:\n{}",
            prog.display(),
            out.stderr
        );
        assert_eq!(v["passed"], true);
        assert!(findings_with(&v, "fail").is_empty() && findings_with(&v, "allowed").is_empty());
    }
}

#[test]
fn reachable_global_passes_a_lost_block_fails_with_its_stack() {
    let prog = compile(LEAKS, &[]);
    let scratch = Scratch::new("gate-lost");
    let (out, v) = gate_run_json(&scratch, &[], &prog, &["reachable"]);
    assert_eq!(out.code(), 0, "{}", out.stderr);
    assert_eq!(v["passed"], true);
    // Still reachable is not a leak by default, but can be asked for.
    let out = gate_run(&scratch, &["--fail-on", "reachable"], &prog, &["reachable"]);
    assert_eq!(out.code(), GATE, "{}", out.stderr);

    let (out, v) = gate_run_json(&scratch, &[], &prog, &["lost"]);
    assert_eq!(out.code(), GATE, "{}", out.stderr);
    assert_eq!(
        findings_with(&v, "fail"),
        [("definitely-lost".to_owned(), 1, 64)]
    );
    let f = finding(&v, "definitely-lost", "drop_block");
    assert_frames(
        stack(f, "alloc"),
        &[
            ("drop_block", "leaks.c", line_of(LEAKS, "/* LOST_LINE */")),
            ("main", "leaks.c", line_of(LEAKS, "/* MAIN_LOST_LINE */")),
        ],
    );
    // The text summary names the function too.
    assert!(
        out.stderr.contains("at drop_block (leaks.c:"),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr.contains("heapledger gate: FAILED (exit 23)"),
        "{}",
        out.stderr
    );
    // --error-exitcode.
    let out = gate_run(&scratch, &["--error-exitcode", "3"], &prog, &["lost"]);
    assert_eq!(out.code(), 3);
}

/// (bytes, count) of one kind in a gate report's totals.
fn kind_totals(v: &Value, kind: &str) -> (u64, u64) {
    let t = v["totals"]
        .as_array()
        .expect("totals")
        .iter()
        .find(|t| t["kind"] == kind)
        .unwrap_or_else(|| panic!("no {kind} in the totals"));
    (u(&t["bytes"]), u(&t["count"]))
}

/// `definitely lost: X bytes in N blocks` and `indirectly lost: ...` from valgrind, if installed.
fn memcheck_lost(prog: &Path, args: &[&str], cwd: &Path) -> Option<[(u64, u64); 2]> {
    let installed = clean_command("valgrind")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !installed {
        return None;
    }
    let out = run(clean_command("valgrind")
        .args(["--leak-check=full", "--error-exitcode=0"])
        .arg(prog)
        .args(args)
        .current_dir(cwd));
    let num = |s: &str| -> u64 { s.replace(',', "").parse().expect("valgrind number") };
    let get = |key: &str| -> (u64, u64) {
        let line = out
            .stderr
            .lines()
            .find(|l| l.contains(key))
            .unwrap_or_else(|| panic!("no '{key}' in valgrind output:\n{}", out.stderr));
        let rest = line.split(key).nth(1).unwrap().trim();
        let parts: Vec<&str> = rest.split_whitespace().collect();
        // "24 bytes in 1 blocks"
        (num(parts[0]), num(parts[3]))
    };
    Some([get("definitely lost:"), get("indirectly lost:")])
}

#[test]
fn leaked_struct_is_one_definitely_and_three_indirectly_lost_as_memcheck_says() {
    let prog = compile(LEAKS, &[]);
    let scratch = Scratch::new("gate-struct");
    let (out, v) = gate_run_json(&scratch, &[], &prog, &["struct"]);
    assert_eq!(out.code(), GATE, "{}", out.stderr);
    let totals = |kind: &str| kind_totals(&v, kind);
    let ours = [totals("definitely-lost"), totals("indirectly-lost")];
    assert_eq!(ours, [(24, 1), (196, 3)]);
    let f = finding(&v, "definitely-lost", "leak_record");
    assert_frames(
        stack(f, "alloc"),
        &[(
            "leak_record",
            "leaks.c",
            line_of(LEAKS, "/* STRUCT_LINE */"),
        )],
    );
    match memcheck_lost(&prog, &["struct"], &scratch.path) {
        Some(theirs) => assert_eq!(ours, theirs, "heapledger vs memcheck"),
        None => eprintln!("SKIPPED the memcheck comparison: valgrind is not installed"),
    }
}

/// The exit scan's index and work stack at their edges: interior pointers into blocks past 64 KiB (whose sizes the
/// index does not hold inline), and more reached blocks than its work stack holds at once.
#[test]
fn big_blocks_and_wide_graphs_are_classified_as_memcheck_says() {
    let prog = compile(LEAKS, &[]);
    let scratch = Scratch::new("gate-wide");
    let (out, v) = gate_run_json(&scratch, &["--fail-on", "leak,reachable"], &prog, &["wide"]);
    assert_eq!(out.code(), GATE, "{}", out.stderr);
    let totals = |kind: &str| kind_totals(&v, kind);
    // Definitely: the 300000-byte block and the 70000-pointer array; indirectly: what each of them holds.
    let ours = [totals("definitely-lost"), totals("indirectly-lost")];
    assert_eq!(ours, [(300_000 + 560_000, 2), (50 + 70_000 * 40, 70_001)]);
    // Reachable: the big block and its child, the array and its 100000 blocks.
    assert_eq!(
        totals("reachable"),
        (200_000 + 100 + 800_000 + 100_000 * 24, 100_003)
    );
    match memcheck_lost(&prog, &["wide"], &scratch.path) {
        Some(theirs) => assert_eq!(ours, theirs, "heapledger vs memcheck"),
        None => eprintln!("SKIPPED the memcheck comparison: valgrind is not installed"),
    }
}

#[test]
fn each_error_kind_fails_with_the_right_stack() {
    let prog = compile(ERRORS, &[]);
    let scratch = Scratch::new("gate-errors");
    let cases = [
        (
            "double",
            "double-free",
            "release_twice",
            "/* DOUBLE_LINE */",
        ),
        (
            "invalid",
            "invalid-free",
            "release_inside",
            "/* INVALID_LINE */",
        ),
        (
            "mismatched",
            "mismatched-free",
            "delete_malloced",
            "/* MISMATCH_LINE */",
        ),
    ];
    for (arg, kind, function, marker) in cases {
        let (out, v) = gate_run_json(&scratch, &STRICT, &prog, &[arg]);
        assert_eq!(out.code(), GATE, "{arg}: {}", out.stderr);
        assert_eq!(
            findings_with(&v, "fail"),
            [(kind.to_owned(), 1, 40)],
            "{arg}"
        );
        let f = finding(&v, kind, function);
        assert_frames(
            stack(f, "free"),
            &[
                (function, "errors.cc", line_of(ERRORS, marker)),
                (
                    "main",
                    "errors.cc",
                    line_of(ERRORS, &format!("{function}(p);")),
                ),
            ],
        );
        assert_frames(
            stack(f, "alloc"),
            &[("main", "errors.cc", line_of(ERRORS, "/* ERR_ALLOC_LINE */"))],
        );
        if kind == "double-free" {
            assert_eq!(stack(f, "first_free")[0]["function"], "release_twice");
        }
        // Not gated when --fail-on leaves the kind out: the program's own code.
        let out = gate_run(&scratch, &["--fail-on", "leak"], &prog, &[arg]);
        assert_eq!(out.code(), 0, "{arg}: {}", out.stderr);
    }
}

#[test]
fn a_program_killed_by_a_signal_fails_the_gate() {
    let prog = compile(LEAKS, &[]);
    let scratch = Scratch::new("gate-crash");
    let (out, v) = gate_run_json(&scratch, &["--fail-on", "none"], &prog, &["crash"]);
    assert_eq!(out.code(), GATE, "{}", out.stderr);
    assert!(out.stderr.contains("killed by SIGSEGV"), "{}", out.stderr);
    assert_eq!(findings_with(&v, "fail"), [("signal".to_owned(), 1, 0)]);
    // The crash dump's stack of the crashing thread comes with the finding.
    let signal = v["findings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["kind"] == "signal")
        .unwrap();
    assert!(
        functions(stack(signal, "crash")).contains(&Some("main".to_owned())),
        "{}",
        describe_frames(stack(signal, "crash"))
    );
    // Without gate options, run keeps its 128+signal.
    let out = gate_run(&scratch, &[], &prog, &["crash"]);
    assert_eq!(out.code(), 128 + 11);
}

const LSAN_SUPP: &str = "# heapledger.supp\nleak:leak_alpha\n";

const VALGRIND_SUPP: &str =
    "{\n   beta\n   Memcheck:Leak\n   match-leak-kinds: definite\n   fun:malloc\n   \
                             fun:leak_beta\n   fun:main\n}\n";

#[test]
fn suppressions_in_both_syntaxes_silence_exactly_what_they_name() {
    let prog = compile(LEAKS, &[]);
    let scratch = Scratch::new("gate-supp");
    let lsan = scratch.join("lsan.supp");
    std::fs::write(&lsan, LSAN_SUPP).unwrap();
    let vg = scratch.join("valgrind.supp");
    std::fs::write(&vg, VALGRIND_SUPP).unwrap();
    let (lsan_s, vg_s) = (lsan.to_str().unwrap(), vg.to_str().unwrap());

    let (out, v) = gate_run_json(&scratch, &["--suppressions", lsan_s], &prog, &["two"]);
    assert_eq!(out.code(), GATE, "{}", out.stderr);
    assert_eq!(
        findings_with(&v, "fail"),
        [("definitely-lost".to_owned(), 1, 222)]
    );
    assert_eq!(
        findings_with(&v, "suppressed"),
        [("definitely-lost".to_owned(), 1, 111)]
    );
    assert!(
        out.stderr.contains(&format!(
            "{lsan_s}:2: leak:leak_alpha — matched 1 finding(s) (111 bytes in 1 block)"
        )),
        "{}",
        out.stderr
    );

    let (out, v) = gate_run_json(&scratch, &["--suppressions", vg_s], &prog, &["two"]);
    assert_eq!(out.code(), GATE, "{}", out.stderr);
    assert_eq!(
        findings_with(&v, "fail"),
        [("definitely-lost".to_owned(), 1, 111)]
    );
    assert_eq!(
        findings_with(&v, "suppressed"),
        [("definitely-lost".to_owned(), 1, 222)]
    );

    let out = gate_run(
        &scratch,
        &["--suppressions", lsan_s, "--suppressions", vg_s],
        &prog,
        &["two"],
    );
    assert_eq!(out.code(), 0, "{}", out.stderr);
    // A rule that matches nothing is reported as such.
    let out = gate_run(
        &scratch,
        &["--suppressions", lsan_s, "--suppressions", vg_s],
        &prog,
        &["one"],
    );
    assert_eq!(out.code(), 0, "{}", out.stderr);
    assert!(
        out.stderr.contains("beta (Memcheck:Leak) — never matched"),
        "{}",
        out.stderr
    );

    // `heapledger suppressions` writes rules that silence what is reported.
    let dumps = dump_paths(&scratch);
    let last = dumps
        .iter()
        .find(|d| {
            let r = check(&scratch, &[d.to_str().unwrap()]);
            r.code() == GATE && r.stdout.contains("leak_beta")
        })
        .expect("a dump of `two`");
    let gen = run(clean_command(cli()).arg("suppressions").arg(last));
    assert_eq!(gen.code(), 0, "{}", gen.stderr);
    assert!(
        gen.stdout.lines().any(|l| l == "leak:^leak_beta$"),
        "{}",
        gen.stdout
    );
    let generated = scratch.join("generated.supp");
    std::fs::write(&generated, &gen.stdout).unwrap();
    let out = check(
        &scratch,
        &[
            "--suppressions",
            generated.to_str().unwrap(),
            last.to_str().unwrap(),
        ],
    );
    assert_eq!(out.code(), 0, "{}", out.stdout);
}

#[test]
fn baseline_hides_old_findings_and_shows_a_new_one() {
    let prog = compile(LEAKS, &[]);
    let main_run = Scratch::new("gate-baseline-main");
    let (out, baseline) = gate_run_json(&main_run, &[], &prog, &["one"]);
    assert_eq!(out.code(), GATE);
    assert_eq!(findings_with(&baseline, "fail").len(), 1);
    let baseline_file = main_run.join("main.json");
    std::fs::write(&baseline_file, serde_json::to_string(&baseline).unwrap()).unwrap();
    let main_dump = dump_paths(&main_run).remove(0);

    let branch = Scratch::new("gate-baseline-branch");
    for base in [&baseline_file, &main_dump] {
        let (out, v) = gate_run_json(
            &branch,
            &["--baseline", base.to_str().unwrap()],
            &prog,
            &["two"],
        );
        assert_eq!(out.code(), GATE, "{}", out.stderr);
        assert_eq!(
            findings_with(&v, "fail"),
            [("definitely-lost".to_owned(), 1, 222)]
        );
        assert_eq!(
            findings_with(&v, "baseline"),
            [("definitely-lost".to_owned(), 1, 111)]
        );
        let f = finding(&v, "definitely-lost", "leak_beta");
        assert_eq!(f["status"], "fail");
        assert_frames(
            stack(f, "alloc"),
            &[("leak_beta", "leaks.c", line_of(LEAKS, "/* BETA_LINE */"))],
        );
    }
    // Nothing new: passes.
    let out = gate_run(
        &branch,
        &["--baseline", baseline_file.to_str().unwrap()],
        &prog,
        &["one"],
    );
    assert_eq!(out.code(), 0, "{}", out.stderr);
}

#[test]
fn a_make_style_parent_running_two_leaking_children_is_reported_with_both() {
    let leaks = compile(LEAKS, &[]);
    let spawner = compile("gate/spawner.c", &[]);
    let scratch = Scratch::new("gate-parent");
    let (out, v) = gate_run_json(
        &scratch,
        &[],
        &spawner,
        &[leaks.to_str().unwrap(), "lost", "struct"],
    );
    assert_eq!(out.code(), GATE, "{}", out.stderr);
    let processes = v["processes"].as_array().unwrap();
    assert_eq!(processes.len(), 3, "{v:#}");
    let parent = u(&processes
        .iter()
        .find(|p| p["cmdline"].as_array().is_some_and(|c| c.len() == 4))
        .unwrap_or_else(|| panic!("no parent: {v:#}"))["pid"]);
    let child_pid = |arg: &str| {
        let p = processes
            .iter()
            .find(|p| {
                p["cmdline"]
                    .as_array()
                    .is_some_and(|c| c.len() == 2 && c[1] == arg)
            })
            .unwrap_or_else(|| panic!("no child {arg}: {v:#}"));
        assert_eq!(u(&p["ppid"]), parent);
        u(&p["pid"])
    };
    let (lost, strukt) = (child_pid("lost"), child_pid("struct"));
    let fails: Vec<(u64, String)> = v["findings"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["status"] == "fail")
        .map(|f| (u(&f["pid"]), f["kind"].as_str().unwrap().to_owned()))
        .collect();
    assert!(
        fails.contains(&(lost, "definitely-lost".to_owned())),
        "{fails:?}"
    );
    assert!(
        fails.contains(&(strukt, "definitely-lost".to_owned())),
        "{fails:?}"
    );
    assert!(
        fails.contains(&(strukt, "indirectly-lost".to_owned())),
        "{fails:?}"
    );
    assert!(
        fails.iter().all(|(pid, _)| *pid == lost || *pid == strukt),
        "{fails:?}"
    );
    // `check` on the same dumps agrees.
    let paths: Vec<String> = dump_paths(&scratch)
        .iter()
        .map(|p| p.display().to_string())
        .collect();
    let mut args: Vec<&str> = paths.iter().map(String::as_str).collect();
    args.insert(0, "--fail-on=leak");
    let out = check(&scratch, &args);
    assert_eq!(out.code(), GATE, "{}", out.stdout);
    assert!(
        out.stdout.contains("3 process(es) checked"),
        "{}",
        out.stdout
    );
}

#[test]
fn make_runs_two_leaking_children() {
    let installed = clean_command("make")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !installed {
        eprintln!("SKIPPED: make is not installed");
        return;
    }
    let leaks = compile(LEAKS, &[]);
    let scratch = Scratch::new("gate-make");
    let makefile = scratch.join("Makefile");
    std::fs::write(
        &makefile,
        format!(
            "check: a b\na:\n\t{0} lost\nb:\n\t{0} two\n.PHONY: check a b\n",
            leaks.display()
        ),
    )
    .unwrap();
    let make = PathBuf::from("make");
    let (out, v) = gate_run_json(
        &scratch,
        &STRICT,
        &make,
        &["-s", "-f", makefile.to_str().unwrap()],
    );
    assert_eq!(out.code(), GATE, "{}", out.stderr);
    let fail_functions: Vec<&str> = v["findings"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["status"] == "fail")
        .map(|f| {
            f["stacks"][0]["frames"][0]["function"]
                .as_str()
                .unwrap_or("?")
        })
        .collect();
    for f in ["drop_block", "leak_alpha", "leak_beta"] {
        assert!(
            fail_functions.contains(&f),
            "{f} missing from {fail_functions:?}\n{}",
            out.stderr
        );
    }
    assert_eq!(
        fail_functions.len(),
        3,
        "only the children leak: {fail_functions:?}\n{}",
        out.stderr
    );
}

#[test]
fn sarif_junit_and_flamegraph_of_a_real_run() {
    let prog = compile(LEAKS, &[]);
    let scratch = Scratch::new("gate-formats");
    let sarif = scratch.join("leaks.sarif");
    let out = gate_run(
        &scratch,
        &["--format", "sarif", "--output", sarif.to_str().unwrap()],
        &prog,
        &["two"],
    );
    assert_eq!(out.code(), GATE, "{}", out.stderr);
    let log: Value = serde_json::from_str(&std::fs::read_to_string(&sarif).unwrap()).unwrap();
    let results = log["runs"][0]["results"].as_array().unwrap();
    assert_eq!(results.len(), 2);
    let beta = results
        .iter()
        .find(|r| r["message"]["text"].as_str().unwrap().contains("leak_beta"))
        .unwrap();
    assert_eq!(
        u(&beta["locations"][0]["physicalLocation"]["region"]["startLine"]),
        line_of(LEAKS, "/* BETA_LINE */")
    );
    let dumps = dump_paths(&scratch);
    let dump = dumps[0].to_str().unwrap();
    let junit = run(clean_command(cli()).args(["report", "--format", "junit", dump]));
    assert_eq!(junit.code(), 0, "{}", junit.stderr);
    assert_eq!(
        junit.stdout.matches("<failure ").count(),
        2,
        "{}",
        junit.stdout
    );
    assert!(junit.stdout.starts_with("<?xml"));
    let svg = run(clean_command(cli()).args(["flamegraph", dump]));
    assert_eq!(svg.code(), 0, "{}", svg.stderr);
    assert!(svg.stdout.contains("<svg") && svg.stdout.trim_end().ends_with("</svg>"));
    assert!(
        svg.stdout.contains("leak_beta (222 bytes"),
        "flame graph lacks leak_beta"
    );
    assert!(
        svg.stdout.contains("leak_alpha (111 bytes"),
        "flame graph lacks leak_alpha"
    );
}
