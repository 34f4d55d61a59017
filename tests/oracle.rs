//! Valgrind as the oracle: for single-threaded programs without heap errors, our totals and live figures equal
//! Valgrind's "total heap usage" and "in use at exit" exactly (with libc/libstdc++ freeres off, as under us).

mod common;
use common::*;
use std::path::Path;

/// Valgrind's figures: (totals, live blocks, live bytes).
fn valgrind(prog: &Path, args: &[&str], cwd: &Path) -> Option<(Totals, u64, u64)> {
    let installed = clean_command("valgrind")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !installed {
        return None;
    }
    let out = run(clean_command("valgrind")
        .args([
            "--run-libc-freeres=no",
            "--run-cxx-freeres=no",
            "--error-exitcode=99",
        ])
        .arg(prog)
        .args(args)
        .current_dir(cwd));
    assert_eq!(out.code(), 0, "under valgrind: {out:#?}");
    let num = |s: &str| -> u64 { s.replace(',', "").parse().expect("valgrind number") };
    let after = |key: &str| -> Vec<String> {
        let line = out
            .stderr
            .lines()
            .find_map(|l| l.split_once(key).map(|(_, rest)| rest.to_owned()))
            .unwrap_or_else(|| panic!("no '{key}' in valgrind output:\n{}", out.stderr));
        line.split_whitespace().map(str::to_owned).collect()
    };
    // "in use at exit: 1,956 bytes in 11 blocks"
    let in_use = after("in use at exit:");
    // "total heap usage: 17 allocs, 6 frees, 3,244 bytes allocated"
    let total = after("total heap usage:");
    assert_eq!(in_use[1], "bytes");
    assert_eq!(total[1], "allocs,");
    let allocs = num(&total[0]);
    let frees = num(&total[2]);
    let bytes = num(&total[4]);
    let live_bytes = num(&in_use[0]);
    let live_blocks = num(&in_use[3]);
    Some((
        Totals::new(allocs, frees, bytes, bytes - live_bytes),
        live_blocks,
        live_bytes,
    ))
}

fn compare(tag: &str, prog: &Path, args: &[&str], scratch: &Scratch) {
    let Some((totals, blocks, bytes)) = valgrind(prog, args, &scratch.path) else {
        eprintln!("SKIPPED {tag}: valgrind is not installed");
        return;
    };
    let t = traced(scratch, prog, args);
    t.out.assert_success();
    let d = t.dump();
    d.assert_balanced();
    // Valgrind does not report bytes freed; it is bytes allocated minus bytes in use.
    assert_eq!(d.totals(), totals, "{tag}: totals vs valgrind");
    assert_eq!(
        d.live(),
        (blocks, bytes),
        "{tag}: in use at exit vs valgrind"
    );
}

#[test]
fn leak_sites_matches_valgrind() {
    let scratch = Scratch::new("oracle-leaks");
    compare("leak_sites", &compile("leak_sites.c", &[]), &[], &scratch);
}

#[test]
fn c_entry_points_match_valgrind() {
    let scratch = Scratch::new("oracle-entry");
    compare(
        "entry_points",
        &compile("entry_points.c", &[]),
        &["oracle"],
        &scratch,
    );
}

#[test]
fn cxx_operators_match_valgrind() {
    let scratch = Scratch::new("oracle-cxx");
    compare(
        "entry_points_cxx",
        &compile("entry_points_cxx.cc", &[]),
        &["oracle"],
        &scratch,
    );
}

#[test]
fn libc_allocations_match_valgrind() {
    let scratch = Scratch::new("oracle-libc");
    let input = scratch.join("input.txt");
    std::fs::write(&input, "one line\n").unwrap();
    let dir = scratch.join("two");
    std::fs::create_dir(&dir).unwrap();
    std::fs::write(dir.join("a"), "").unwrap();
    std::fs::write(dir.join("b"), "").unwrap();
    compare(
        "libc_alloc",
        &compile("libc_alloc.c", &[]),
        &[input.to_str().unwrap(), dir.to_str().unwrap()],
        &scratch,
    );
}

#[test]
fn dlopen_matches_valgrind() {
    let scratch = Scratch::new("oracle-dlopen");
    let plugin = compile("plugin.c", &["-fPIC", "-shared"]);
    compare(
        "dl_cycle",
        &compile("dl_cycle.c", &[]),
        &["plugin_leak", "1", plugin.to_str().unwrap()],
        &scratch,
    );
}
