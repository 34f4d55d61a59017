//! Unmodified system binaries run under the tracer with output identical to a native run, and leave a
//! consistent dump.

mod common;
use common::*;
use std::path::Path;
use std::process::Command;

/// Runs `prog args` natively and traced (same environment otherwise), compares stdout and exit status, and checks
/// the single dump the process wrote.
fn same_output(tag: &str, prog: &str, args: &[&str], setup: impl Fn(&mut Command)) {
    let scratch = Scratch::new(tag);
    let mut native = clean_command(prog);
    native.args(args).current_dir(&scratch.path);
    setup(&mut native);
    let native = run(&mut native);
    native.assert_success();
    assert!(!native.stdout.is_empty(), "{tag}: no output to compare");

    let dir = scratch.dump_dir();
    let mut traced = traced_command(prog, &dir);
    traced.args(args).current_dir(&scratch.path);
    setup(&mut traced);
    let traced = run(&mut traced);
    assert_eq!(
        traced.status.code(),
        native.status.code(),
        "{tag}: exit status"
    );
    assert!(
        traced.stdout == native.stdout,
        "{tag}: stdout differs under the tracer ({} vs {} bytes)",
        traced.stdout.len(),
        native.stdout.len()
    );
    assert_eq!(traced.stderr, native.stderr, "{tag}: stderr");

    let dumps = read_dumps(&dir);
    assert_eq!(dumps.len(), 1, "{tag}: one dump");
    let d = &dumps[0];
    assert_eq!(d.reason(), "exit");
    d.assert_balanced();
    assert_eq!(
        d.error_counts(),
        [0; 4],
        "{tag}: heap errors in a system binary"
    );
    assert!(d.totals().allocations > 0, "{tag}: nothing traced");
    assert_eq!(
        Path::new(d.json["exe"].as_str().unwrap()),
        std::fs::canonicalize(which(prog)).unwrap()
    );
}

fn which(prog: &str) -> std::path::PathBuf {
    if prog.contains('/') {
        return prog.into();
    }
    std::env::var_os("PATH")
        .map(|p| {
            std::env::split_paths(&p)
                .map(|d| d.join(prog))
                .find(|p| p.is_file())
                .unwrap_or_else(|| panic!("{prog} not in PATH"))
        })
        .expect("PATH")
}

fn c_locale(cmd: &mut Command) {
    cmd.env("LC_ALL", "C").env("TZ", "UTC");
}

#[test]
fn ls_recursive() {
    same_output("ls", "ls", &["-lR", "/usr/share/doc"], c_locale);
}

#[test]
fn sort_a_generated_file() {
    let scratch = Scratch::new("sort-input");
    let input = scratch.join("input.txt");
    let mut text = String::new();
    let mut x: u64 = 12345;
    for i in 0..50_000 {
        x = x
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        text.push_str(&format!(
            "{} line {i} {}\n",
            x >> 40,
            "x".repeat((x % 17) as usize)
        ));
    }
    std::fs::write(&input, text).unwrap();
    same_output("sort", "sort", &[input.to_str().unwrap()], c_locale);
}

#[test]
fn python3() {
    let python = if Path::new("/usr/bin/python3").is_file() {
        "/usr/bin/python3"
    } else {
        "python3"
    };
    let script = "import json, re, collections\n\
                  d = {str(i): i * i for i in range(5000)}\n\
                  c = collections.Counter(len(k) for k in d)\n\
                  words = re.findall(r'[a-z]+', 'the quick brown fox jumps over the lazy dog ' * 100)\n\
                  print(json.dumps(sorted(d.items())[:5]), dict(c), len(words), sum(d.values()))\n";
    same_output("python3", python, &["-c", script], |cmd| {
        c_locale(cmd);
        cmd.env("PYTHONHASHSEED", "0")
            .env("PYTHONDONTWRITEBYTECODE", "1");
    });
}
