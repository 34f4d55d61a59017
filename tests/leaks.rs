//! Exact totals, live blocks and leak sites of a program with a known allocation pattern.

mod common;
use common::*;

const SRC: &str = "leak_sites.c";

#[test]
fn totals_and_live_blocks_are_exact() {
    let prog = compile(SRC, &[]);
    let scratch = Scratch::new("leaks-totals");
    let t = traced(&scratch, &prog, &[]);
    t.out.assert_success();
    let d = t.dump();
    assert_eq!(d.reason(), "exit");
    // 3 x 100 freed, 5 x 30 and 1 x 1000 leaked.
    assert_eq!(d.totals(), Totals::new(9, 3, 1450, 300));
    assert_eq!(d.live(), (6, 1150));
    let mut sizes = vec![(30, "malloc".to_owned()); 5];
    sizes.push((1000, "malloc".to_owned()));
    assert_eq!(d.block_sizes(), sizes);
    assert_eq!(d.error_counts(), [0; 4]);
    d.assert_balanced();
    // The five blocks from make_tx share one interned stack; the 1000-byte block has another.
    let blocks = d.blocks();
    let small: Vec<u64> = blocks
        .iter()
        .filter(|b| b.size == 30)
        .map(|b| b.stack)
        .collect();
    assert!(small.iter().all(|&s| s == small[0] && s != 0), "{small:?}");
    let big = blocks.iter().find(|b| b.size == 1000).unwrap();
    assert!(big.stack != 0 && big.stack != small[0]);
}

#[test]
fn report_names_the_leak_sites_biggest_first() {
    let prog = compile(SRC, &[]);
    let scratch = Scratch::new("leaks-report");
    let t = traced(&scratch, &prog, &[]);
    t.out.assert_success();
    let r = t.dump().report();
    assert_eq!(
        Totals::from_json(&r["totals"]),
        Totals::new(9, 3, 1450, 300)
    );
    assert_eq!((u(&r["live"]["blocks"]), u(&r["live"]["bytes"])), (6, 1150));
    let leaks = r["leaks"].as_array().expect("leaks");
    assert_eq!(leaks.len(), 2, "two leak sites: {r:#}");

    // Biggest first: main's 1000 bytes, then make_tx's 5 x 30.
    assert_eq!((u(&leaks[0]["blocks"]), u(&leaks[0]["bytes"])), (1, 1000));
    assert_eq!(leaks[0]["allocator"], "malloc");
    assert_frames(
        &leaks[0]["frames"],
        &[("main", SRC, line_of(SRC, "/* BIG_LINE */"))],
    );

    assert_eq!((u(&leaks[1]["blocks"]), u(&leaks[1]["bytes"])), (5, 150));
    assert_eq!(leaks[1]["allocator"], "malloc");
    assert_frames(
        &leaks[1]["frames"],
        &[
            ("make_tx", SRC, line_of(SRC, "/* ALLOC_LINE */")),
            ("leaker", SRC, line_of(SRC, "/* CALL_LINE */")),
            ("main", SRC, line_of(SRC, "/* MAIN_LINE */")),
        ],
    );
    // Every frame of the program is in the program's module; none is the tracer's.
    let exe = std::fs::canonicalize(&prog).unwrap();
    for leak in leaks {
        for f in leak["frames"].as_array().unwrap() {
            let module = f["module"].as_str().unwrap_or("");
            assert!(
                !module.ends_with("libheapledger.so"),
                "tracer frame in a leak stack:\n{}",
                describe_frames(&leak["frames"])
            );
            if f["file"].as_str().is_some_and(|file| file.ends_with(SRC)) {
                assert_eq!(std::path::Path::new(module), exe);
            }
        }
    }
    assert_eq!(r["errors"]["items"].as_array().map(Vec::len), Some(0));
}
