//! Memory libc allocates on the program's behalf is traced: each leaked block's stack starts inside libc and
//! goes through the program function that called libc.

mod common;
use common::*;
use serde_json::Value;

const SRC: &str = "libc_alloc.c";

/// Runs libc_alloc.c with its input file and a directory holding exactly `a` and `b`.
fn run_it(scratch: &Scratch) -> (Traced, std::path::PathBuf) {
    let input = scratch.join("input.txt");
    std::fs::write(&input, "first line\nsecond line\n").unwrap();
    let dir = scratch.join("two");
    std::fs::create_dir(&dir).unwrap();
    std::fs::write(dir.join("a"), "").unwrap();
    std::fs::write(dir.join("b"), "").unwrap();
    let prog = compile(SRC, &[]);
    let t = traced(
        scratch,
        &prog,
        &[input.to_str().unwrap(), dir.to_str().unwrap()],
    );
    (t, dir)
}

/// The leak sites whose stack contains `function` (from libc_alloc.c, at the marker's line).
fn sites_through<'a>(leaks: &'a [Value], function: &str, marker: &str) -> Vec<&'a Value> {
    let line = line_of(SRC, marker);
    leaks
        .iter()
        .filter(|l| {
            l["frames"]
                .as_array()
                .unwrap()
                .iter()
                .any(|f| frame_is(f, function, SRC, line))
        })
        .collect()
}

#[test]
fn allocations_made_by_libc_are_leaks_of_their_caller() {
    let scratch = Scratch::new("libc-alloc");
    let (t, dir) = run_it(&scratch);
    t.out.assert_success();
    let d = t.dump();
    d.assert_balanced();
    assert_eq!(d.error_counts(), [0; 4]);
    // strdup, getline, asprintf, realpath, open_memstream: one block each; scandir: 4 entries + the array.
    assert_eq!(d.live().0, 10, "{:?}", d.block_sizes());

    let r = d.report();
    let leaks = r["leaks"].as_array().expect("leaks").clone();
    let real_dir = std::fs::canonicalize(&dir).unwrap();
    let cases: [(&str, &str, u64, u64); 6] = [
        // (caller, marker, blocks, bytes); 0 bytes: not fixed by the C library's contract
        (
            "use_strdup",
            "/* STRDUP_LINE */",
            1,
            "heapledger".len() as u64 + 1,
        ),
        ("use_getline", "/* GETLINE_LINE */", 1, 0),
        (
            "use_asprintf",
            "/* ASPRINTF_LINE */",
            1,
            "42-answer".len() as u64 + 1,
        ),
        ("use_scandir", "/* SCANDIR_LINE */", 5, 0),
        (
            "use_realpath",
            "/* REALPATH_LINE */",
            1,
            real_dir.as_os_str().len() as u64 + 1,
        ),
        ("use_open_memstream", "/* MEMSTREAM_LINE */", 1, 0),
    ];
    for (caller, marker, blocks, bytes) in cases {
        let sites = sites_through(&leaks, caller, marker);
        assert!(
            !sites.is_empty(),
            "no leak through {caller}; leaks:\n{}",
            leaks
                .iter()
                .map(|l| describe_frames(&l["frames"]))
                .collect::<Vec<_>>()
                .join("\n--\n")
        );
        for s in &sites {
            // Allocated inside libc, on the caller's behalf.
            let module = s["frames"][0]["module"].as_str().unwrap_or("");
            assert!(
                module.contains("libc.so"),
                "{caller}: innermost frame not in libc:\n{}",
                describe_frames(&s["frames"])
            );
            assert_eq!(s["allocator"], "malloc", "{caller}");
        }
        let n: u64 = sites.iter().map(|s| u(&s["blocks"])).sum();
        assert_eq!(n, blocks, "{caller}: blocks");
        if bytes != 0 {
            let b: u64 = sites.iter().map(|s| u(&s["bytes"])).sum();
            assert_eq!(b, bytes, "{caller}: bytes");
        }
    }
    // Nothing else leaked.
    let total: u64 = leaks.iter().map(|l| u(&l["blocks"])).sum();
    assert_eq!(total, 10);
}
