//! A program linked against jemalloc: the tracer forwards to jemalloc (the program checks jemalloc's own
//! statistics and size classes) and counts exactly.

mod common;
use common::*;

#[test]
fn jemalloc_program_is_served_by_jemalloc_and_counted_exactly() {
    let prog = match try_compile("jemalloc_user.c", &["-ljemalloc"]) {
        Ok(p) => p,
        Err(e) if std::env::var_os("HEAPLEDGER_REQUIRE_JEMALLOC").is_none() => {
            eprintln!(
                "SKIPPED jemalloc test: cannot build against jemalloc (apt-get install libjemalloc-dev):\n{e}"
            );
            return;
        }
        Err(e) => panic!("{e}"),
    };
    // Natively first: the program's own checks hold without the tracer.
    run(&mut clean_command(&prog)).assert_success();

    // jemalloc links libstdc++, whose start-up allocation is the baseline.
    let (base_totals, base_blocks) = baseline(&prog, &["baseline"]);
    let scratch = Scratch::new("jemalloc");
    let t = traced(&scratch, &prog, &[]);
    t.out.assert_success();
    let d = t.dump();
    d.assert_balanced();
    assert_eq!(d.error_counts(), [0; 4]);
    // 20 x 1000 (15 freed), calloc(10, 10), malloc(100) realloc'ed to 5000.
    assert_eq!(
        d.totals(),
        base_totals
            + Totals::new(
                20 + 1 + 1 + 1,
                15 + 1,
                20_000 + 100 + 100 + 5000,
                15_000 + 100
            )
    );
    let mut expected = vec![(1000, "malloc"); 5];
    expected.extend([(100, "malloc"), (5000, "malloc")]);
    assert_eq!(d.block_sizes(), merged(&base_blocks, &expected));
}
