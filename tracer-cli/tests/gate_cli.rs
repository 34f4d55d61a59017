//! `heapledger check`, `suppressions` and `run` with gate options, on synthetic dumps whose stacks point into a
//! real compiled program: exit codes, what fails by default, suppressions in both syntaxes, baselines and
//! limits.

mod gate_common;

use gate_common::*;

fn check(scratch: &Scratch, args: &[&str]) -> std::process::Output {
    let mut all = vec!["check"];
    all.extend_from_slice(args);
    heapledger_in(&scratch.0, &all)
}

#[test]
fn clean_dump_passes_and_lost_blocks_fail_with_23() {
    let s = Scratch::new("basic");
    let clean = s.write(
        "clean.json",
        dump(
            10,
            "exit",
            "",
            &[block(64, &["leak_one", "main"], REACHABLE)],
            &[],
        ),
    );
    let o = check(&s, &[&clean]);
    assert_code(&o, 0);
    assert!(
        stdout(&o).contains("heapledger gate: passed"),
        "{}",
        stdout(&o)
    );
    assert!(stdout(&o).contains("no leaks, no heap errors"));

    let leaky = s.write("leaky.json", dump(11, "exit", "", &example_blocks(), &[]));
    let o = check(&s, &[&leaky]);
    assert_code(&o, 23);
    let text = stdout(&o);
    assert!(text.contains("heapledger gate: FAILED (exit 23)"), "{text}");
    assert!(
        text.contains("620 bytes in 5 blocks lost (definitely lost: 600 bytes in 3 blocks, indirectly lost: 20 bytes in 2 blocks)"),
        "{text}"
    );
    // The stacks are symbolized from the program's DWARF.
    assert!(
        text.contains(
            "FAIL definitely-lost: 300 bytes in 1 block definitely lost, allocated with malloc"
        ),
        "{text}"
    );
    assert!(text.contains("at make_node (gate_app.c:"), "{text}");
    // Reachable blocks are not findings by default.
    assert!(!text.contains("reachable"), "{text}");

    // Both together: the leak fails the run.
    let o = check(&s, &[&clean, &leaky, "--error-exitcode", "5"]);
    assert_code(&o, 5);
    assert!(
        stdout(&o).contains("2 process(es) checked"),
        "{}",
        stdout(&o)
    );
}

#[test]
fn each_bad_free_kind_fails_with_its_stack() {
    let s = Scratch::new("errors");
    let d = s.write("e.json", dump(12, "exit", "", &[], &example_errors()));
    let o = check(&s, &["--format", "json", &d]);
    assert_code(&o, 23);
    let v = json(&o);
    assert_eq!(
        findings(&v),
        [
            ("double-free".into(), "fail".into(), "release_twice".into()),
            ("invalid-free".into(), "fail".into(), "bad_release".into())
        ]
    );
    let df = &v["findings"][0];
    let roles: Vec<&str> = df["stacks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["role"].as_str().unwrap())
        .collect();
    assert_eq!(roles, ["free", "first_free", "alloc"]);
    assert_eq!(df["stacks"][2]["frames"][0]["function"], "leak_one");
    assert_eq!(df["stacks"][2]["frames"][1]["function"], "main");
    assert!(df["stacks"][0]["frames"][0]["file"]
        .as_str()
        .unwrap()
        .ends_with("gate_app.c"));
    assert!(df["stacks"][0]["frames"][0]["line"].as_u64().unwrap() > 0);
    assert_eq!(
        v["reasons"],
        serde_json::json!([
            "1 double free (none allowed)",
            "1 invalid free (none allowed)"
        ])
    );
    // --fail-on narrows what counts.
    let o = check(
        &s,
        &["--fail-on", "leak,double-free", "--format", "json", &d],
    );
    assert_code(&o, 23);
    assert_eq!(json(&o)["findings"][1]["status"], "ignored");
    let o = check(&s, &["--fail-on", "leak", &d]);
    assert_code(&o, 0);
}

#[test]
fn mismatched_free_fails() {
    let s = Scratch::new("mismatch");
    let d = s.write(
        "m.json",
        dump(
            13,
            "exit",
            "",
            &[],
            &[E {
                kind: "mismatched_free",
                size: 12,
                allocator: "malloc",
                freed_with: "delete",
                detail: "",
                stack: &["bad_release", "main"],
                alloc: Some(&["leak_two", "main"]),
                first_free: None,
            }],
        ),
    );
    let o = check(&s, &[&d]);
    assert_code(&o, 23);
    assert!(
        stdout(&o).contains(
            "mismatched free of a 12-byte block: allocated with malloc, freed with delete"
        ),
        "{}",
        stdout(&o)
    );
}

#[test]
fn crash_dumps_fail_as_signals_and_snapshots_do_not_judge_leaks() {
    let s = Scratch::new("crash");
    let crash = s.write(
        "c.json",
        dump(14, "crash", "SIGSEGV", &example_blocks(), &[]),
    );
    let o = check(&s, &["--fail-on", "none", &crash]);
    assert_code(&o, 23);
    assert!(stdout(&o).contains("killed by SIGSEGV"), "{}", stdout(&o));
    let snap = s.write("s.json", dump(15, "interval", "", &example_blocks(), &[]));
    let o = check(&s, &[&snap]);
    assert_code(&o, 0);
    assert!(stdout(&o).contains("not judged as leaks"), "{}", stdout(&o));
}

#[test]
fn reachable_fails_only_when_asked() {
    let s = Scratch::new("reachable");
    let d = s.write(
        "r.json",
        dump(
            16,
            "exit",
            "",
            &[block(50, &["leak_two", "main"], REACHABLE)],
            &[],
        ),
    );
    assert_code(&check(&s, &[&d]), 0);
    let o = check(&s, &["--fail-on", "reachable", "--format", "json", &d]);
    assert_code(&o, 23);
    assert_eq!(
        findings(&json(&o)),
        [("reachable".into(), "fail".into(), "leak_two".into())]
    );
}

#[test]
fn limits() {
    let s = Scratch::new("limits");
    let d = s.write(
        "l.json",
        dump(17, "exit", "", &example_blocks(), &example_errors()),
    );
    // 620 bytes in 5 lost blocks (3 definitely lost), 1 double free, 1 invalid free.
    let errors_ok = ["--max", "double-free=1", "--max", "invalid-free=1"];
    let with = |extra: &[&str]| {
        let mut args = errors_ok.to_vec();
        args.extend_from_slice(extra);
        args.push(&d);
        check(&s, &args).status.code()
    };
    assert_eq!(with(&["--max-leaked-bytes", "620"]), Some(0));
    assert_eq!(with(&["--max-leaked-bytes", "619"]), Some(23));
    assert_eq!(with(&["--max-leaked-blocks", "5"]), Some(0));
    assert_eq!(with(&["--max-leaked-blocks", "4"]), Some(23));
    assert_eq!(
        with(&["--max-leaked-bytes", "10000", "--max-leaked-blocks", "4"]),
        Some(23)
    );
    assert_eq!(with(&["--max", "definitely-lost=3"]), Some(0));
    assert_eq!(with(&["--max", "definitely-lost=2"]), Some(23));
    // No leak limit at all: any lost block fails.
    assert_eq!(with(&[]), Some(23));
    // Error limits: 0 unless given.
    let o = check(
        &s,
        &["--max-leaked-bytes", "620", "--max", "invalid-free=1", &d],
    );
    assert_code(&o, 23);
    assert!(
        stdout(&o).contains("1 double free (none allowed)"),
        "{}",
        stdout(&o)
    );
    let o = check(&s, &["--max-leaked-blocks", "5", "--fail-on", "leak", &d]);
    assert_code(&o, 0);
    assert!(
        stdout(&o).contains("within the limits given"),
        "{}",
        stdout(&o)
    );
}

const LSAN_SUPP: &str =
    "# LeakSanitizer syntax\nleak:leak_two\ndouble-free:release_twice\nleak:no_such_function\n";

const VALGRIND_SUPP: &str = r#"
{
   node-and-its-buffers
   Memcheck:Leak
   match-leak-kinds: definite,indirect
   fun:calloc
   fun:make_node
   fun:main
}
{
   indirect-buffers
   Memcheck:Leak
   match-leak-kinds: indirect
   fun:malloc
   fun:leak_one
   fun:make_node
}
{
   bad-release
   Memcheck:Free
   fun:free
   fun:bad_release
}
{
   never-used
   Memcheck:Leak
   fun:malloc
   fun:nothing_here
}
{
   other-kind
   Memcheck:Cond
   fun:leak_one
}
"#;

#[test]
fn suppressions_in_both_syntaxes_silence_exactly_what_they_name() {
    let s = Scratch::new("supp");
    let d = s.write(
        "d.json",
        dump(18, "exit", "", &example_blocks(), &example_errors()),
    );
    let lsan = s.write("lsan.supp", LSAN_SUPP);
    let vg = s.write("valgrind.supp", VALGRIND_SUPP);

    // LeakSanitizer syntax: leak_two's leak and the double free go; the rest stays.
    let o = check(&s, &["--suppressions", &lsan, "--format", "json", &d]);
    assert_code(&o, 23);
    let v = json(&o);
    let got = findings(&v);
    assert_eq!(
        got,
        [
            ("definitely-lost".into(), "fail".into(), "make_node".into()),
            (
                "definitely-lost".into(),
                "suppressed".into(),
                "leak_two".into()
            ),
            ("definitely-lost".into(), "fail".into(), "leak_one".into()),
            ("indirectly-lost".into(), "fail".into(), "leak_one".into()),
            (
                "double-free".into(),
                "suppressed".into(),
                "release_twice".into()
            ),
            ("invalid-free".into(), "fail".into(), "bad_release".into()),
        ]
    );
    let rules = v["suppressions"].as_array().unwrap();
    assert_eq!(rules[0]["rule"], "leak:leak_two");
    assert_eq!(rules[0]["origin"], format!("{lsan}:2"));
    assert_eq!(rules[0]["matched_findings"], 1);
    assert_eq!(rules[0]["matched_bytes"], 200);
    assert_eq!(rules[2]["rule"], "leak:no_such_function");
    assert_eq!(rules[2]["matched_findings"], 0);

    // The text report says which rules matched and which never did.
    let o = check(&s, &["--suppressions", &lsan, &d]);
    let text = stdout(&o);
    assert!(
        text.contains(&format!(
            "{lsan}:2: leak:leak_two — matched 1 finding(s) (200 bytes in 1 block)"
        )),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "{lsan}:3: double-free:release_twice — matched 1 finding(s) (1 occurrence(s))"
        )),
        "{text}"
    );
    assert!(
        text.contains(&format!("{lsan}:4: leak:no_such_function — never matched")),
        "{text}"
    );

    // Valgrind syntax: make_node's block and the indirect buffers it holds, and the invalid free.
    let o = check(&s, &["--suppressions", &vg, "--format", "json", &d]);
    let v = json(&o);
    assert_eq!(
        findings(&v),
        [
            (
                "definitely-lost".into(),
                "suppressed".into(),
                "make_node".into()
            ),
            ("definitely-lost".into(), "fail".into(), "leak_two".into()),
            ("definitely-lost".into(), "fail".into(), "leak_one".into()),
            (
                "indirectly-lost".into(),
                "suppressed".into(),
                "leak_one".into()
            ),
            ("double-free".into(), "fail".into(), "release_twice".into()),
            (
                "invalid-free".into(),
                "suppressed".into(),
                "bad_release".into()
            ),
        ]
    );
    let rules = v["suppressions"].as_array().unwrap();
    let by_name = |name: &str| {
        rules
            .iter()
            .find(|r| r["rule"].as_str().unwrap().starts_with(name))
            .unwrap_or_else(|| panic!("{name} in {rules:?}"))
    };
    assert_eq!(by_name("node-and-its-buffers")["matched_findings"], 1);
    assert_eq!(by_name("indirect-buffers")["matched_findings"], 1);
    assert_eq!(by_name("bad-release")["matched_findings"], 1);
    assert_eq!(by_name("never-used")["matched_findings"], 0);
    let ignored = v["suppressions_ignored"].as_array().unwrap();
    assert_eq!(ignored.len(), 1);
    assert!(
        ignored[0].as_str().unwrap().contains("Memcheck:Cond"),
        "{ignored:?}"
    );

    // Both files: everything but leak_one's definite leak is gone.
    let o = check(
        &s,
        &[
            "--suppressions",
            &lsan,
            "--suppressions",
            &vg,
            "--format",
            "json",
            &d,
        ],
    );
    assert_code(&o, 23);
    let fails: Vec<_> = findings(&json(&o))
        .into_iter()
        .filter(|f| f.1 == "fail")
        .collect();
    assert_eq!(
        fails,
        [("definitely-lost".into(), "fail".into(), "leak_one".into())]
    );
    let all = s.write("all.supp", format!("{LSAN_SUPP}leak:leak_one\n"));
    let o = check(&s, &["--suppressions", &all, "--suppressions", &vg, &d]);
    assert_code(&o, 0);
}

#[test]
fn bad_suppression_files_are_tool_errors() {
    let s = Scratch::new("badsupp");
    let d = s.write("d.json", dump(19, "exit", "", &[], &[]));
    let bad = s.write("bad.supp", "leak:ok\nthis is not a rule\n");
    let o = check(&s, &["--suppressions", &bad, &d]);
    assert_code(&o, 2);
    assert_eq!(stderr(&o).lines().count(), 1, "{}", stderr(&o));
    assert!(stderr(&o).contains(&format!("{bad}:2:")), "{}", stderr(&o));
    let o = check(&s, &["--suppressions", "/nonexistent/x.supp", &d]);
    assert_code(&o, 2);
    assert!(
        stderr(&o).contains("/nonexistent/x.supp: cannot read"),
        "{}",
        stderr(&o)
    );
    let o = check(&s, &["--fail-on", "leaks,bogus", &d]);
    assert_code(&o, 2);
    assert!(
        stderr(&o).contains("unknown kind `bogus`"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn baseline_hides_old_findings_and_shows_a_new_one() {
    let s = Scratch::new("baseline");
    // main: leak_one's leak and the double free.
    let main_dump = s.write(
        "main.json",
        dump(
            20,
            "exit",
            "",
            &[block(100, &["leak_one", "main"], DEFINITE)],
            &example_errors()[..1],
        ),
    );
    // The branch: the same two (other addresses, sizes, pid) plus a new leak in leak_two.
    let branch = s.write(
        "branch.json",
        dump(
            21,
            "exit",
            "",
            &[
                block(55, &["leak_two", "main"], DEFINITE),
                block(170, &["leak_one", "main"], DEFINITE),
            ],
            &example_errors()[..1],
        ),
    );
    let o = check(&s, &["--format", "json", &main_dump]);
    assert_code(&o, 23);
    let baseline_json = s.write("main-check.json", &o.stdout);

    for baseline in [&main_dump, &baseline_json] {
        let o = check(&s, &["--baseline", baseline, "--format", "json", &branch]);
        assert_code(&o, 23);
        assert_eq!(
            findings(&json(&o)),
            [
                (
                    "definitely-lost".into(),
                    "baseline".into(),
                    "leak_one".into()
                ),
                ("definitely-lost".into(), "fail".into(), "leak_two".into()),
                (
                    "double-free".into(),
                    "baseline".into(),
                    "release_twice".into()
                ),
            ],
            "baseline {baseline}"
        );
        let o = check(&s, &["--baseline", baseline, &branch]);
        assert!(
            stdout(&o).contains("55 bytes in 1 block lost"),
            "{}",
            stdout(&o)
        );
        assert!(
            stdout(&o).contains("2 finding(s) of this run are in it"),
            "{}",
            stdout(&o)
        );
    }
    // A SARIF log from main works too.
    let o = check(&s, &["--format", "sarif", &main_dump]);
    let sarif = s.write("main.sarif", &o.stdout);
    let o = check(
        &s,
        &["--baseline", &sarif, "--max", "definitely-lost=1", &branch],
    );
    assert_code(&o, 0);
    // The branch against itself passes.
    let o = check(&s, &["--baseline", &branch, &branch]);
    assert_code(&o, 0);
    // A bad baseline is a tool error.
    let bad = s.write("bad.json", "{\"hello\": 1}");
    let o = check(&s, &["--baseline", &bad, &branch]);
    assert_code(&o, 2);
    assert!(
        stderr(&o).contains("neither a heapledger dump"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn fingerprints_are_stable_across_pids_sizes_and_addresses() {
    let s = Scratch::new("fingerprints");
    let a = s.write(
        "a.json",
        dump(30, "exit", "", &example_blocks(), &example_errors()),
    );
    let mut other = example_blocks();
    other.reverse();
    for b in &mut other {
        b.size += 3;
    }
    let b = s.write("b.json", dump(31, "exit", "", &other, &example_errors()));
    let fps = |p: &str| {
        let mut v: Vec<String> = json(&check(&s, &["--format", "json", p]))["findings"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f["fingerprint"].as_str().unwrap().to_owned())
            .collect();
        v.sort();
        v
    };
    let fa = fps(&a);
    assert_eq!(fa, fps(&b));
    let mut unique = fa.clone();
    unique.dedup();
    assert_eq!(
        unique.len(),
        fa.len(),
        "distinct findings, distinct fingerprints: {fa:?}"
    );
}

#[test]
fn suppressions_command_writes_rules_that_silence_the_findings() {
    let s = Scratch::new("gen");
    let d = s.write(
        "d.json",
        dump(40, "exit", "", &example_blocks(), &example_errors()),
    );
    let o = heapledger_in(&s.0, &["suppressions", &d]);
    assert_code(&o, 0);
    let rules = stdout(&o);
    for r in [
        "leak:^leak_one$",
        "leak:^leak_two$",
        "leak:^make_node$",
        "double-free:^release_twice$",
        "invalid-free:^bad_release$",
    ] {
        assert!(rules.lines().any(|l| l == r), "{r} in\n{rules}");
    }
    let supp = s.write("new.supp", &rules);
    assert_code(&check(&s, &["--suppressions", &supp, &d]), 0);
    // With them applied, nothing is left to write.
    let o = heapledger_in(&s.0, &["suppressions", "--suppressions", &supp, &d]);
    assert!(
        !stdout(&o)
            .lines()
            .any(|l| l.contains(':') && !l.starts_with('#')),
        "{}",
        stdout(&o)
    );
}

#[test]
fn run_with_gate_options() {
    let s = Scratch::new("run");
    // An empty library stands in for the tracer; the script writes the dumps and the manifest as it would.
    let src = s.write("empty.c", "int heapledger_gate_placeholder;\n");
    let lib = s.path("libempty.so");
    let st = std::process::Command::new("cc")
        .args(["-shared", "-fPIC", "-o"])
        .arg(&lib)
        .arg(&src)
        .status()
        .unwrap();
    assert!(st.success());
    let leaky = s.write("leaky.json", dump(50, "exit", "", &example_blocks(), &[]));
    let clean = s.write("clean.json", dump(51, "exit", "", &[], &[]));
    let script = |dumps: &[&str], code: i32| {
        let mut sh = String::new();
        for d in dumps {
            sh.push_str(&format!("echo {d} >> \"$HEAPLEDGER_MANIFEST\"; "));
        }
        sh.push_str(&format!("exit {code}"));
        sh
    };
    let run = |gate: &[&str], sh: &str| {
        let mut cmd = std::process::Command::new(BIN);
        cmd.arg("run")
            .args(gate)
            .args(["--", "sh", "-c", sh])
            .current_dir(&s.0)
            .env("HEAPLEDGER_LIB", &lib)
            .env_remove("LD_PRELOAD")
            .env_remove("HEAPLEDGER_OUT");
        cmd.output().unwrap()
    };
    // Clean: the program's own code.
    let o = run(&["--fail-on", "leak"], &script(&[&clean], 3));
    assert_code(&o, 3);
    assert!(
        stderr(&o).contains("heapledger gate: passed"),
        "{}",
        stderr(&o)
    );
    // A leak in any process of the run: the gate's code, whatever the program's.
    let o = run(
        &["--fail-on", "leak,double-free"],
        &script(&[&clean, &leaky], 0),
    );
    assert_code(&o, 23);
    assert!(
        stderr(&o).contains("FAIL definitely-lost"),
        "{}",
        stderr(&o)
    );
    let o = run(&["--error-exitcode", "99"], &script(&[&leaky], 1));
    assert_code(&o, 99);
    // Without gate options, `run` is unchanged.
    assert_code(&run(&[], &script(&[&leaky], 4)), 4);
    // A program killed by a signal fails the gate even with no dump.
    let o = run(&["--fail-on", "leak"], "kill -KILL $$");
    assert_code(&o, 23);
    assert!(stderr(&o).contains("killed by SIGKILL"), "{}", stderr(&o));
    // No dump at all: nothing to judge is a tool error, not a pass.
    let o = run(&["--fail-on", "leak"], "exit 0");
    assert_code(&o, 2);
    assert!(stderr(&o).contains("no dump was written"), "{}", stderr(&o));
    // A SARIF file next to the text summary.
    let sarif = s.path("run.sarif");
    let o = run(
        &["--format", "sarif", "--output", sarif.to_str().unwrap()],
        &script(&[&leaky], 0),
    );
    assert_code(&o, 23);
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&sarif).unwrap()).unwrap();
    assert_eq!(v["version"], "2.1.0");
    // Options are checked before the program runs.
    let marker = s.path("ran");
    let touch = format!("touch {}", marker.display());
    for bad in [
        &["--fail-on", "nonsense"][..],
        &["--suppressions", "/nonexistent.supp"],
        &["--format", "sarif"],
        &["--sample", "lots"],
        &["--interval", "-1"],
        &["--signal", "NOPE"],
    ] {
        let o = run(bad, &touch);
        assert_code(&o, 2);
        assert!(!marker.exists(), "{bad:?} ran the program");
    }
}

#[test]
fn run_passes_sampling_interval_and_signal_settings() {
    let s = Scratch::new("runenv");
    let src = s.write("empty.c", "int heapledger_gate_placeholder;\n");
    let lib = s.path("libempty.so");
    let st = std::process::Command::new("cc")
        .args(["-shared", "-fPIC", "-o"])
        .arg(&lib)
        .arg(&src)
        .status()
        .unwrap();
    assert!(st.success());
    let out = s.path("env.txt");
    let o = std::process::Command::new(BIN)
        .args([
            "run", "--sample", "512KiB", "--interval", "0.5", "--signal", "USR2", "--depth", "9", "--", "sh",
            "-c",
        ])
        .arg(format!(
            "echo \"$HEAPLEDGER_SAMPLE $HEAPLEDGER_INTERVAL $HEAPLEDGER_SIGNAL $HEAPLEDGER_DEPTH\" > {}",
            out.display()
        ))
        .env("HEAPLEDGER_LIB", &lib)
        .env_remove("LD_PRELOAD")
        .output()
        .unwrap();
    assert_code(&o, 0);
    assert_eq!(
        std::fs::read_to_string(&out).unwrap().trim(),
        format!("524288 0.5 {} 9", libc_sigusr2())
    );
}

fn libc_sigusr2() -> i32 {
    12
}
