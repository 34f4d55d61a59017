//! The dump file itself: permissions, atomic writing, default name, unwritable destinations, planted symlinks.

mod common;
use common::*;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

fn prog() -> std::path::PathBuf {
    compile("exit_code.c", &[])
}

/// Names of the entries of `dir`, sorted.
fn entries(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

#[test]
fn dumps_are_private_and_complete_whatever_the_umask() {
    let scratch = Scratch::new("dump-mode");
    let dir = scratch.dump_dir();
    // umask 0 would make a naive open(0666) world-writable; the fork scenario writes two dumps.
    let fork_prog = compile("processes.c", &[]);
    let mut cmd = traced_command("/bin/sh", &dir);
    cmd.arg("-c")
        .arg("umask 000; exec \"$0\" fork")
        .arg(&fork_prog);
    run(&mut cmd).assert_success();
    let names = entries(&dir);
    assert_eq!(names.len(), 2, "{names:?}");
    for name in &names {
        assert!(
            name.starts_with("dump.") && name.ends_with(".json") && !name.contains(".tmp."),
            "leftover or unexpected file: {names:?}"
        );
        let path = dir.join(name);
        let meta = std::fs::symlink_metadata(&path).unwrap();
        assert!(meta.file_type().is_file());
        assert_eq!(meta.permissions().mode() & 0o7777, 0o600, "{name}");
        assert_eq!(meta.uid(), own_uid(), "{name}: owner");
        // Complete: parses, and `complete: true` is the last key.
        let d = Dump::load(&path);
        assert!(
            d.text
                .trim_end()
                .trim_end_matches('}')
                .trim_end()
                .ends_with("\"complete\":true")
                || d.text
                    .trim_end()
                    .trim_end_matches('}')
                    .trim_end()
                    .ends_with("\"complete\": true"),
            "{name}: `complete` is not the last key"
        );
    }
}

/// The test's own uid (the owner of a file it just created).
fn own_uid() -> u32 {
    let scratch = Scratch::new("uid");
    let p = scratch.join("probe");
    std::fs::write(&p, "").unwrap();
    std::fs::metadata(&p).unwrap().uid()
}

#[test]
fn default_name_is_heapledger_pid_json_in_the_working_directory() {
    let scratch = Scratch::new("dump-default");
    let cwd = scratch.join("cwd");
    std::fs::create_dir(&cwd).unwrap();
    let mut cmd = clean_command(prog());
    cmd.env("LD_PRELOAD", lib()).current_dir(&cwd);
    let out = run(&mut cmd);
    assert_eq!(out.code(), 0);
    let names = entries(&cwd);
    assert_eq!(names.len(), 1, "{names:?}");
    let d = Dump::load(&cwd.join(&names[0]));
    assert_eq!(names[0], format!("heapledger.{}.json", d.pid()));
    assert_eq!(d.block_sizes(), [(10, "malloc".to_owned())]);
}

#[test]
fn relative_out_is_relative_to_the_starting_directory() {
    // The program does not chdir, so this is simply the working directory; the pattern's %p is expanded.
    let scratch = Scratch::new("dump-relative");
    let mut cmd = clean_command(prog());
    cmd.env("LD_PRELOAD", lib())
        .env("HEAPLEDGER_OUT", "sub/x.%p.%%.json")
        .current_dir(&scratch.path);
    std::fs::create_dir(scratch.join("sub")).unwrap();
    run(&mut cmd).assert_success();
    let names = entries(&scratch.join("sub"));
    assert_eq!(names.len(), 1, "{names:?}");
    let d = Dump::load(&scratch.join("sub").join(&names[0]));
    assert_eq!(names[0], format!("x.{}.%.json", d.pid()));
}

/// Runs exit_code.c with code 5, natively and with the dump going to `out`; the program's output and exit code
/// must be the same, plus exactly one line about the dump on stderr.
fn check_unwritable(tag: &str, out: &Path) {
    let native = run(clean_command(prog()).arg("5"));
    assert_eq!(native.code(), 5);
    let mut cmd = clean_command(prog());
    cmd.arg("5")
        .env("LD_PRELOAD", lib())
        .env("HEAPLEDGER_OUT", out);
    let traced = run(&mut cmd);
    assert_eq!(traced.code(), 5, "{tag}: exit code");
    assert_eq!(traced.stdout, native.stdout, "{tag}: stdout");
    let ours: Vec<&str> = traced
        .stderr
        .lines()
        .filter(|l| l.starts_with("heapledger"))
        .collect();
    assert_eq!(
        ours.len(),
        1,
        "{tag}: one line from the tracer: {:?}",
        traced.stderr
    );
    assert!(
        ours[0].starts_with("heapledger: cannot write dump"),
        "{tag}: {:?}",
        ours[0]
    );
    assert!(
        ours[0].contains(out.to_str().unwrap()),
        "{tag}: names the path: {:?}",
        ours[0]
    );
    let rest: Vec<&str> = traced
        .stderr
        .lines()
        .filter(|l| !l.starts_with("heapledger"))
        .collect();
    assert_eq!(
        rest.join("\n") + "\n",
        native.stderr,
        "{tag}: program's own stderr"
    );
}

#[test]
fn missing_directory_is_one_line_on_stderr() {
    let scratch = Scratch::new("dump-missing");
    check_unwritable("missing dir", &scratch.join("no/such/dir/x.json"));
}

#[test]
fn file_in_the_way_is_one_line_on_stderr() {
    let scratch = Scratch::new("dump-notdir");
    std::fs::write(scratch.join("plain"), "not a directory").unwrap();
    check_unwritable("not a dir", &scratch.join("plain/x.json"));
    assert_eq!(
        std::fs::read_to_string(scratch.join("plain")).unwrap(),
        "not a directory"
    );
}

#[test]
fn planted_symlink_is_replaced_not_followed() {
    let scratch = Scratch::new("dump-symlink");
    let victim = scratch.join("victim.txt");
    std::fs::write(&victim, "precious").unwrap();
    std::fs::set_permissions(&victim, std::fs::Permissions::from_mode(0o644)).unwrap();
    let out = scratch.join("out.json");
    std::os::unix::fs::symlink(&victim, &out).unwrap();

    let mut cmd = clean_command(prog());
    cmd.env("LD_PRELOAD", lib()).env("HEAPLEDGER_OUT", &out);
    let o = run(&mut cmd);
    assert_eq!(o.code(), 0);
    assert!(!o.stderr.contains("heapledger"), "{o:#?}");

    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious");
    assert_eq!(
        std::fs::metadata(&victim).unwrap().permissions().mode() & 0o777,
        0o644
    );
    let meta = std::fs::symlink_metadata(&out).unwrap();
    assert!(
        meta.file_type().is_file(),
        "the symlink was replaced by the dump"
    );
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    let d = Dump::load(&out);
    assert_eq!(d.block_sizes(), [(10, "malloc".to_owned())]);
    assert_eq!(entries(&scratch.path), ["out.json", "victim.txt"]);
}

#[test]
fn manifest_lists_every_dump() {
    let scratch = Scratch::new("dump-manifest");
    let dir = scratch.dump_dir();
    let manifest = scratch.join("manifest.txt");
    let mut cmd = traced_command(compile("processes.c", &[]), &dir);
    cmd.arg("fork").env("HEAPLEDGER_MANIFEST", &manifest);
    run(&mut cmd).assert_success();
    let mut listed: Vec<String> = std::fs::read_to_string(&manifest)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect();
    listed.sort();
    let mut on_disk: Vec<String> = read_dumps(&dir)
        .iter()
        .map(|d| d.path.to_string_lossy().into_owned())
        .collect();
    on_disk.sort();
    assert_eq!(listed, on_disk);
    assert_eq!(listed.len(), 2);
}

/// A dump writes the frames of the stacks its blocks and errors name; every other interned stack (freed blocks'
/// allocations, free stacks no error needs) is written as `[]`, keeping each id at its index.
#[test]
fn stacks_no_block_or_error_names_are_written_empty() {
    let scratch = Scratch::new("dump-stacks");
    let t = traced(&scratch, &compile("dump_stacks.c", &["-O0"]), &[]);
    let d = t.dump();
    let stacks = d.json["stacks"].as_array().expect("stacks");
    let mut named: Vec<u64> = d.blocks().iter().map(|b| b.stack).collect();
    let errors = d.json["errors"].as_array().expect("errors");
    assert_eq!(errors.len(), 1, "{errors:?}");
    for k in ["stack", "alloc_stack", "first_free_stack"] {
        named.push(u(&errors[0][k]));
    }
    named.sort();
    named.dedup();
    // Three live blocks from one site, and the double free's three distinct stacks.
    assert_eq!(d.blocks().len(), 3);
    assert_eq!(named.len(), 4, "{named:?}");
    for id in 0..stacks.len() as u64 {
        let frames = stacks[id as usize].as_array().expect("a stack is an array");
        assert_eq!(
            !frames.is_empty(),
            named.contains(&id),
            "stack {id}: {frames:?} (named: {named:?})"
        );
    }
    // The fifty `dropped` blocks interned at least their allocation stack and a free stack: both written empty.
    assert!(stacks.len() as u64 >= 1 + 4 + 2, "{} stacks", stacks.len());

    // The report still resolves what it shows.
    let r = d.report();
    let leaks = r["leaks"].as_array().expect("leaks");
    assert_eq!(leaks.len(), 1, "{leaks:?}");
    assert_eq!(functions(&leaks[0]["frames"])[0].as_deref(), Some("kept"));
    let item = &r["errors"]["items"][0];
    assert_eq!(
        functions(&item["stacks"]["alloc"])[0].as_deref(),
        Some("twice")
    );
    assert_eq!(
        functions(&item["stacks"]["free"])[0].as_deref(),
        Some("release")
    );
    assert_eq!(
        functions(&item["stacks"]["first_free"])[0].as_deref(),
        Some("release")
    );
}
