//! The `heapledger` binary as a user runs it: exit codes, one-line errors, and the `run` protocol with the
//! library (environment in, manifest out). `run` is driven with a real but empty shared library and a shell
//! script as the program, which plays the library's part of writing a dump and naming it in the manifest; the
//! real library is exercised by the workspace's own tests.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const BIN: &str = env!("CARGO_BIN_EXE_heapledger");
const SMALL: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/small.json");

/// A scratch directory per test, removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Scratch {
        let dir =
            std::env::temp_dir().join(format!("heapledger-cli-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Scratch(dir)
    }

    /// An empty shared library: preloading it changes nothing, so the program behaves as without a tracer.
    fn empty_library(&self, name: &str) -> PathBuf {
        let src = self.0.join(format!("{name}.c"));
        std::fs::write(&src, "int heapledger_test_placeholder;\n").unwrap();
        let lib = self.0.join(format!("{name}.so"));
        let status = Command::new("cc")
            .args(["-shared", "-fPIC", "-o"])
            .arg(&lib)
            .arg(&src)
            .status()
            .expect("cc is needed by this test");
        assert!(status.success());
        lib
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn heapledger(args: &[&str], env: &[(&str, &Path)]) -> Output {
    let mut cmd = Command::new(BIN);
    cmd.args(args)
        .env_remove("HEAPLEDGER_OUT")
        .env_remove("LD_PRELOAD");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
fn report_text_and_json() {
    let o = heapledger(&["report", SMALL], &[]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let text = stdout(&o);
    assert!(
        text.contains("total heap usage: 7 allocs, 3 frees, 1136 bytes allocated"),
        "{text}"
    );
    assert!(text.contains("leak sites: 3"), "{text}");

    let o = heapledger(&["report", "--format", "json", SMALL], &[]);
    assert_eq!(o.status.code(), Some(0));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["pid"], 4242);
    assert_eq!(v["leaks"].as_array().unwrap().len(), 3);

    let o = heapledger(&["report", "--format", "json", SMALL, SMALL], &[]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v.as_array().unwrap().len(), 2);
}

#[test]
fn report_bad_inputs_are_one_line_and_exit_2() {
    let scratch = Scratch::new("bad");
    let cut = scratch.0.join("cut.json");
    let text = std::fs::read_to_string(SMALL).unwrap();
    std::fs::write(&cut, &text[..text.len() / 2]).unwrap();
    let empty = scratch.0.join("empty.json");
    std::fs::write(&empty, "").unwrap();
    let missing = scratch.0.join("missing.json");

    for (file, problem) in [
        (&cut, "truncated or corrupt (crash while writing?)"),
        (&empty, "empty file"),
        (&missing, "no such file"),
    ] {
        let o = heapledger(&["report", file.to_str().unwrap()], &[]);
        assert_eq!(o.status.code(), Some(2), "{file:?}");
        let err = stderr(&o);
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(
            err.starts_with(&format!("heapledger: {}: {problem}", file.display())),
            "{err}"
        );
        assert!(o.stdout.is_empty());
    }

    // A bad dump does not hide a good one, but still fails the command.
    let o = heapledger(
        &[
            "report",
            "--format",
            "json",
            missing.to_str().unwrap(),
            SMALL,
        ],
        &[],
    );
    assert_eq!(o.status.code(), Some(2));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v.as_array().unwrap().len(), 1);
}

#[test]
fn usage_errors_exit_2() {
    assert_eq!(heapledger(&["report"], &[]).status.code(), Some(2));
    assert_eq!(
        heapledger(&["report", "--format", "xml", SMALL], &[])
            .status
            .code(),
        Some(2)
    );
    assert_eq!(heapledger(&["run"], &[]).status.code(), Some(2));
    let help = heapledger(&["--help"], &[]);
    assert_eq!(help.status.code(), Some(0));
    assert!(
        stdout(&help).contains("125"),
        "exit codes are documented in --help"
    );
}

#[test]
fn run_without_library_exits_125() {
    let o = heapledger(
        &["run", "--", "true"],
        &[("HEAPLEDGER_LIB", Path::new("/nonexistent/libheapledger.so"))],
    );
    assert_eq!(o.status.code(), Some(125));
    assert_eq!(
        stderr(&o),
        "heapledger: cannot find libheapledger.so (looked in /nonexistent/libheapledger.so); build it with cargo \
         build --release or set HEAPLEDGER_LIB\n"
    );
}

#[test]
fn run_passes_the_environment_and_reads_the_manifest() {
    let scratch = Scratch::new("run");
    let lib = scratch.empty_library("libfake");
    let other = scratch.empty_library("libother");
    let dir = scratch.0.to_str().unwrap();
    // The script plays the library: it records what it was given, writes a dump, names it in the manifest
    // (twice, to check duplicates are dropped), plus a broken one, and exits with its own code.
    let script = format!(
        "printf '%s\\n' \"$LD_PRELOAD\" \"$HEAPLEDGER_OUT\" \"$HEAPLEDGER_DEPTH\" > {dir}/env.txt; \
         cp {SMALL} {dir}/dump.json; echo {dir}/dump.json >> \"$HEAPLEDGER_MANIFEST\"; \
         echo {dir}/dump.json >> \"$HEAPLEDGER_MANIFEST\"; : > {dir}/broken.json; \
         echo {dir}/broken.json >> \"$HEAPLEDGER_MANIFEST\"; exit 3"
    );
    let o = heapledger(
        &[
            "run",
            "--out",
            "x.%p.%n.json",
            "--depth",
            "7",
            "--",
            "sh",
            "-c",
            &script,
        ],
        &[("HEAPLEDGER_LIB", &lib), ("LD_PRELOAD", &other)],
    );
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    let env = std::fs::read_to_string(scratch.0.join("env.txt")).unwrap();
    let lines: Vec<&str> = env.lines().collect();
    assert_eq!(
        lines,
        [
            format!("{}:{}", lib.display(), other.display()).as_str(),
            "x.%p.%n.json",
            "7"
        ]
    );
    let err = stderr(&o);
    assert!(err.contains("heapledger: 2 dump(s) written:\n"), "{err}");
    assert!(
        err.contains(&format!(
            "  {dir}/dump.json: pid 4242, exit: 4 live blocks (1040 bytes), errors: 1 double_free, 1 invalid_free\n"
        )),
        "{err}"
    );
    assert!(
        err.contains(&format!("  {dir}/broken.json: empty file")),
        "{err}"
    );
}

#[test]
fn run_reports_signal_death_and_spawn_failures() {
    let scratch = Scratch::new("signal");
    let lib = scratch.empty_library("libfake");
    let env = [("HEAPLEDGER_LIB", lib.as_path())];

    let o = heapledger(
        &["run", "--", "sh", "-c", "ulimit -c 0; kill -SEGV $$"],
        &env,
    );
    assert_eq!(o.status.code(), Some(128 + 11));
    assert!(
        stderr(&o).contains("heapledger: program killed by signal SIGSEGV\n"),
        "{}",
        stderr(&o)
    );
    assert!(stderr(&o).contains("0 dump(s) written"));

    let o = heapledger(&["run", "--", "/nonexistent/program"], &env);
    assert_eq!(o.status.code(), Some(127));
    assert_eq!(
        stderr(&o),
        "heapledger: /nonexistent/program: program not found\n"
    );

    let not_exec = scratch.0.join("not-executable");
    std::fs::write(&not_exec, "#!/bin/sh\n").unwrap();
    let o = heapledger(&["run", "--", not_exec.to_str().unwrap()], &env);
    assert_eq!(o.status.code(), Some(126), "{}", stderr(&o));
    assert_eq!(stderr(&o).lines().count(), 1);

    // Without `--`, the program's own options are still the program's.
    let o = heapledger(&["run", "sh", "-c", "exit 5"], &env);
    assert_eq!(o.status.code(), Some(5), "{}", stderr(&o));
}
