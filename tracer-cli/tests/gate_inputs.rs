//! Bad inputs to the gate's commands: corrupt, truncated, empty, huge and wrong-version dumps each give one
//! line naming the file and the problem and exit 2 (or the gate's code when another dump fails it), never a
//! panic.

mod gate_common;

use gate_common::*;

/// The commands that read dumps, each with the arguments before the dump.
const COMMANDS: [&[&str]; 6] = [
    &["check"],
    &["check", "--format", "sarif"],
    &["report", "--format", "junit"],
    &["report", "--format", "sarif"],
    &["flamegraph"],
    &["suppressions"],
];

/// Runs every command on `path` and checks the one-line error.
fn assert_one_line_error(s: &Scratch, path: &str, problem: &str) {
    for cmd in COMMANDS {
        let mut args = cmd.to_vec();
        args.push(path);
        let o = heapledger_in(&s.0, &args);
        let err = stderr(&o);
        assert!(!err.contains("panicked"), "{cmd:?} {path}: {err}");
        assert_code(&o, 2);
        let lines: Vec<&str> = err
            .lines()
            .filter(|l| !l.starts_with("heapledger gate:") && !l.contains("finding(s) to suppress"))
            .collect();
        assert_eq!(
            lines.len(),
            1,
            "{cmd:?} {path}: one error line expected:\n{err}"
        );
        assert!(
            lines[0].starts_with(&format!("heapledger: {path}: ")),
            "{cmd:?}: {}",
            lines[0]
        );
        assert!(
            lines[0].contains(problem),
            "{cmd:?}: {} lacks {problem:?}",
            lines[0]
        );
    }
}

#[test]
fn empty_truncated_corrupt_and_wrong_version_dumps() {
    let s = Scratch::new("inputs");
    let good = dump(70, "exit", "", &example_blocks(), &example_errors());
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("empty.json", Vec::new(), "empty file"),
        ("blank.json", b" \n\n\t ".to_vec(), "empty file"),
        (
            "truncated.json",
            good.as_bytes()[..good.len() / 2].to_vec(),
            "truncated or corrupt",
        ),
        (
            "corrupt.json",
            {
                let mut v = good.as_bytes().to_vec();
                let mid = v.len() / 3;
                v[mid..mid + 40].copy_from_slice(&[0xff; 40]);
                v
            },
            "truncated or corrupt",
        ),
        (
            "version.json",
            good.replacen("\"version\": 1", "\"version\": 2", 1)
                .into_bytes(),
            "unsupported dump version 2",
        ),
        (
            "incomplete.json",
            good.replacen("\"complete\": true", "\"complete\": false", 1)
                .into_bytes(),
            "incomplete",
        ),
        (
            "binary.json",
            vec![0x7f, b'E', b'L', b'F', 0, 1, 2],
            "not JSON",
        ),
        (
            "other.json",
            b"{\"format\": \"massif\"}".to_vec(),
            "not a heapledger dump",
        ),
        (
            "toobig.json",
            good.replacen("\"pid\": 70", "\"pid\": 999999999999999999999999", 1)
                .into_bytes(),
            "invalid dump",
        ),
        (
            "badid.json",
            good.replacen(
                "\"blocks\": [[",
                "\"blocks\": [[1, 2, 999, 0, 1, 1, 2], [",
                1,
            )
            .into_bytes(),
            "refers to stack 999",
        ),
        (
            "newline.json",
            good.replacen("\"kind\": \"double_free\"", "\"kind\": \"a\\nb\"", 1)
                .into_bytes(),
            "unknown variant `a\\nb`",
        ),
    ];
    for (name, bytes, problem) in &cases {
        let path = s.write(name, bytes);
        assert_one_line_error(&s, &path, problem);
    }
    let missing = s.path("missing.json");
    assert_one_line_error(&s, missing.to_str().unwrap(), "no such file");
}

#[test]
fn a_bad_dump_next_to_a_failing_one_still_fails_the_gate() {
    let s = Scratch::new("mixed");
    let leaky = s.write("leaky.json", dump(71, "exit", "", &example_blocks(), &[]));
    let clean = s.write("clean.json", dump(72, "exit", "", &[], &[]));
    let empty = s.write("empty.json", "");
    let o = heapledger_in(&s.0, &["check", &leaky, &empty]);
    assert_code(&o, 23);
    assert_eq!(
        stderr(&o),
        format!(
            "heapledger: {empty}: empty file (the program died before the dump was written?)\n"
        )
    );
    // With only clean readable dumps, the result is incomplete: exit 2, said in the report.
    let o = heapledger_in(&s.0, &["check", &clean, &empty]);
    assert_code(&o, 2);
    assert!(stdout(&o).contains("INCOMPLETE (exit 2)"), "{}", stdout(&o));
    // A directory of dumps is read whole.
    let dir = s.path("dumps");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy(&leaky, dir.join("a.json")).unwrap();
    std::fs::copy(&clean, dir.join("b.json")).unwrap();
    std::fs::write(dir.join("notes.txt"), "not a dump").unwrap();
    let o = heapledger_in(&s.0, &["check", dir.to_str().unwrap()]);
    assert_code(&o, 23);
    assert!(
        stdout(&o).contains("2 process(es) checked"),
        "{}",
        stdout(&o)
    );
}

#[test]
fn huge_dumps_and_huge_numbers() {
    let s = Scratch::new("huge");
    // 200 000 lost blocks from two sites.
    let mut blocks = Vec::with_capacity(200_000);
    for i in 0..200_000u64 {
        let stack: &'static [&'static str] = if i % 2 == 0 {
            &["leak_one", "main"]
        } else {
            &["leak_two", "make_node", "main"]
        };
        blocks.push(block(
            16 + i % 7,
            stack,
            if i % 3 == 0 { INDIRECT } else { DEFINITE },
        ));
    }
    let big = s.write("big.json", dump(73, "exit", "", &blocks, &example_errors()));
    let started = std::time::Instant::now();
    let o = heapledger_in(&s.0, &["check", "--format", "json", &big]);
    assert_code(&o, 23);
    assert!(
        started.elapsed().as_secs() < 60,
        "check took {:?}",
        started.elapsed()
    );
    let v = json(&o);
    let total: u64 = v["findings"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["kind"].as_str().unwrap().ends_with("-lost"))
        .map(|f| f["count"].as_u64().unwrap())
        .sum();
    assert_eq!(total, 200_000);
    let o = heapledger_in(&s.0, &["flamegraph", &big]);
    assert_code(&o, 0);

    // Sizes that overflow any sum: counted saturating, never a panic.
    let huge_sizes = s.write(
        "sizes.json",
        dump(
            74,
            "exit",
            "",
            &[
                block(u64::MAX, &["leak_one", "main"], DEFINITE),
                block(u64::MAX - 1, &["leak_one", "main"], DEFINITE),
                block(u64::MAX, &["leak_two", "main"], INDIRECT),
            ],
            &[],
        ),
    );
    for cmd in [
        &["check"][..],
        &["check", "--max-leaked-bytes", "18446744073709551615"],
        &["check", "--format", "sarif"],
        &["check", "--format", "junit"],
        &["flamegraph"],
        &["flamegraph", "--allocated"],
        &["report"],
    ] {
        let mut args = cmd.to_vec();
        args.push(&huge_sizes);
        let o = heapledger_in(&s.0, &args);
        assert!(!stderr(&o).contains("panicked"), "{cmd:?}: {}", stderr(&o));
        assert!(
            matches!(o.status.code(), Some(0 | 23)),
            "{cmd:?}: {:?} {}",
            o.status,
            stderr(&o)
        );
    }
}
