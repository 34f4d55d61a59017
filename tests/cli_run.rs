//! `heapledger run`: runs the program under the tracer, returns its exit code, lists the dumps it wrote.

mod common;
use common::*;

#[test]
fn run_returns_the_program_exit_code_and_lists_the_dump() {
    let scratch = Scratch::new("cli-run");
    let dir = scratch.dump_dir();
    let pattern = dir.join("x.%p.json");
    let out = run(clean_command(cli())
        .arg("run")
        .arg("--out")
        .arg(&pattern)
        .arg("--")
        .arg(compile("exit_code.c", &[]))
        .arg("7"));
    assert_eq!(out.code(), 7, "{out:#?}");
    // The program's own output passes through untouched.
    assert_eq!(out.stdout, "hello from exit_code\n");
    assert!(out.stderr.starts_with("a line on stderr\n"), "{out:#?}");
    let dumps = read_dumps(&dir);
    assert_eq!(dumps.len(), 1);
    let d = &dumps[0];
    assert_eq!(
        d.path.file_name().unwrap().to_str().unwrap(),
        format!("x.{}.json", d.pid())
    );
    assert!(
        out.stderr.contains(d.path.to_str().unwrap()),
        "dump path on stderr: {}",
        out.stderr
    );
    assert_eq!(d.block_sizes(), [(10, "malloc".to_owned())]);
}

#[test]
fn run_lists_the_dumps_of_forked_children() {
    let scratch = Scratch::new("cli-run-fork");
    let dir = scratch.dump_dir();
    let out = run(clean_command(cli())
        .arg("run")
        .arg("--out")
        .arg(dir.join("x.%p.json"))
        .arg("--")
        .arg(compile("processes.c", &[]))
        .arg("fork"));
    assert_eq!(out.code(), 0, "{out:#?}");
    let dumps = read_dumps(&dir);
    assert_eq!(dumps.len(), 2);
    for d in &dumps {
        assert!(
            out.stderr.contains(d.path.to_str().unwrap()),
            "{} not listed: {}",
            d.path.display(),
            out.stderr
        );
    }
}

#[test]
fn run_exit_code_zero() {
    let scratch = Scratch::new("cli-run-0");
    let dir = scratch.dump_dir();
    let out = run(clean_command(cli())
        .arg("run")
        .arg("--out")
        .arg(dir.join("x.%p.json"))
        .arg("--")
        .arg(compile("exit_code.c", &[])));
    assert_eq!(out.code(), 0, "{out:#?}");
    assert_eq!(read_dumps(&dir).len(), 1);
}
