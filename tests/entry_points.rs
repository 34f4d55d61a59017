//! Every interposed allocation entry point: the function keeps its contract under the tracer (the program checks
//! return values, errno, alignment and contents), and the dump has the exact totals and live blocks, with the
//! right allocator family per block.

mod common;
use common::*;
use std::path::PathBuf;
use std::sync::OnceLock;

// ---- C ----

fn c_prog() -> PathBuf {
    compile("entry_points.c", &[])
}

/// Runs one scenario of entry_points.c and checks exact totals and live blocks.
fn check_c(scenario: &str, totals: Totals, live: &[(u64, &str)]) {
    let scratch = Scratch::new(&format!("entry-{scenario}"));
    let t = traced(&scratch, &c_prog(), &[scenario]);
    t.out.assert_success();
    let d = t.dump();
    assert_eq!(d.totals(), totals, "{scenario}: totals");
    assert_eq!(
        d.block_sizes(),
        merged(&[], live),
        "{scenario}: live blocks"
    );
    assert_eq!(d.error_counts(), [0; 4], "{scenario}: no heap errors");
    d.assert_balanced();
}

#[test]
fn malloc() {
    check_c("malloc", Totals::new(1, 0, 40, 0), &[(40, "malloc")]);
}

#[test]
fn malloc_zero_is_an_allocation_of_zero_bytes() {
    check_c("malloc0", Totals::new(1, 0, 0, 0), &[(0, "malloc")]);
}

#[test]
fn calloc_and_its_overflow() {
    // The overflowing calloc returns NULL with ENOMEM (checked by the program) and counts nothing.
    check_c("calloc", Totals::new(1, 0, 60, 0), &[(60, "malloc")]);
}

#[test]
fn realloc_grow() {
    check_c(
        "realloc_grow",
        Totals::new(2, 1, 1010, 10),
        &[(1000, "malloc")],
    );
}

#[test]
fn realloc_shrink() {
    check_c(
        "realloc_shrink",
        Totals::new(2, 1, 1010, 1000),
        &[(10, "malloc")],
    );
}

#[test]
fn realloc_of_null_is_one_allocation() {
    check_c("realloc_null", Totals::new(1, 0, 50, 0), &[(50, "malloc")]);
}

#[test]
fn realloc_to_zero_is_one_free() {
    check_c("realloc_zero", Totals::new(1, 1, 50, 50), &[]);
}

#[test]
fn failing_realloc_leaves_the_block_live() {
    // realloc(p, huge) fails: p is neither freed nor counted as freed, and is freed normally afterwards.
    check_c("realloc_fail", Totals::new(1, 1, 100, 100), &[]);
}

#[test]
fn free_null_counts_nothing() {
    check_c("free_null", Totals::new(1, 1, 8, 8), &[]);
}

#[test]
fn reallocarray_and_its_overflow() {
    // NULL -> 120 bytes -> 240 bytes; the overflowing call fails with ENOMEM and leaves the block alone.
    check_c(
        "reallocarray",
        Totals::new(2, 1, 360, 120),
        &[(240, "malloc")],
    );
}

#[test]
fn posix_memalign_and_einval() {
    check_c(
        "posix_memalign",
        Totals::new(1, 0, 100, 0),
        &[(100, "aligned")],
    );
}

#[test]
fn aligned_alloc() {
    check_c(
        "aligned_alloc",
        Totals::new(1, 0, 256, 0),
        &[(256, "aligned")],
    );
}

#[test]
fn memalign() {
    check_c("memalign", Totals::new(1, 0, 100, 0), &[(100, "aligned")]);
}

#[test]
fn valloc() {
    check_c("valloc", Totals::new(1, 0, 100, 0), &[(100, "aligned")]);
}

#[test]
fn odd_alignments_behave_as_without_the_tracer() {
    // glibc's memalign (and, before 2.38, aligned_alloc) accept alignments that are not powers of two, rounding
    // them up; a program relying on that must not get NULL under the tracer.
    let prog = c_prog();
    let native = run(clean_command(&prog).arg("odd_alignment"));
    native.assert_success();
    let scratch = Scratch::new("entry-odd-alignment");
    let t = traced(&scratch, &prog, &["odd_alignment"]);
    t.out.assert_success();
    assert_eq!(
        t.out.stdout, native.stdout,
        "results differ under the tracer"
    );
    let ok = native.stdout.lines().filter(|l| l.contains("=ok")).count() as u64;
    let d = t.dump();
    assert_eq!(d.totals(), Totals::new(ok, ok, 100 * ok, 100 * ok));
    d.assert_balanced();
}

fn page_size() -> u64 {
    let out = run(clean_command("getconf").arg("PAGESIZE"));
    out.assert_success();
    out.stdout.trim().parse().expect("page size")
}

#[test]
fn pvalloc_records_whole_pages() {
    let page = page_size();
    check_c("pvalloc", Totals::new(1, 0, page, 0), &[(page, "aligned")]);
}

#[test]
fn malloc_usable_size_is_at_least_the_request() {
    check_c("usable_size", Totals::new(1, 1, 100, 100), &[]);
}

#[test]
fn all_c_scenarios_in_one_process() {
    let page = page_size();
    check_c(
        "all",
        Totals::new(19, 7, 3344 + page, 1388),
        &[
            (0, "malloc"),
            (10, "malloc"),
            (40, "malloc"),
            (50, "malloc"),
            (60, "malloc"),
            (100, "aligned"),
            (100, "aligned"),
            (100, "aligned"),
            (240, "malloc"),
            (256, "aligned"),
            (1000, "malloc"),
            (page, "aligned"),
        ],
    );
}

// ---- C++ ----

fn cxx_prog() -> PathBuf {
    compile("entry_points_cxx.cc", &[])
}

/// What libstdc++ allocates by itself (its emergency exception pool), from the `none` scenario.
fn cxx_baseline() -> &'static (Totals, Vec<(u64, String)>) {
    static B: OnceLock<(Totals, Vec<(u64, String)>)> = OnceLock::new();
    B.get_or_init(|| baseline(&cxx_prog(), &["none"]))
}

/// Size of the heap block libstdc++ allocates per thrown std::bad_alloc, from the `throw` scenario (one
/// allocation and one free of that size on top of the baseline).
fn exception_size() -> u64 {
    static E: OnceLock<u64> = OnceLock::new();
    *E.get_or_init(|| {
        let scratch = Scratch::new("entry-cxx-throw");
        let t = traced(&scratch, &cxx_prog(), &["throw"]);
        t.out.assert_success();
        let delta = t.dump().totals() - cxx_baseline().0;
        assert_eq!((delta.allocations, delta.frees), (1, 1), "{delta:?}");
        assert_eq!(delta.bytes_allocated, delta.bytes_freed);
        assert!(delta.bytes_allocated > 8, "{delta:?}");
        delta.bytes_allocated
    })
}

fn check_cxx(scenario: &str, totals: Totals, live: &[(u64, &str)]) {
    let (base_totals, base_blocks) = cxx_baseline();
    let scratch = Scratch::new(&format!("entry-cxx-{scenario}"));
    let t = traced(&scratch, &cxx_prog(), &[scenario]);
    t.out.assert_success();
    let d = t.dump();
    assert_eq!(d.totals(), *base_totals + totals, "{scenario}: totals");
    assert_eq!(
        d.block_sizes(),
        merged(base_blocks, live),
        "{scenario}: live blocks"
    );
    assert_eq!(d.error_counts(), [0; 4], "{scenario}: no heap errors");
    d.assert_balanced();
}

#[test]
fn cxx_baseline_is_the_runtime_only() {
    let (totals, blocks) = cxx_baseline();
    // libstdc++ allocates and keeps its pool; nothing is freed before main.
    assert_eq!(totals.frees, 0);
    assert_eq!(totals.allocations, blocks.len() as u64);
    assert!(blocks.iter().all(|(_, fam)| fam == "malloc"), "{blocks:?}");
}

#[test]
fn the_program_uses_the_sized_and_aligned_operators() {
    // Otherwise the scenarios below would not exercise those entry points.
    let out = run(clean_command("nm").arg("-u").arg(cxx_prog()));
    out.assert_success();
    for sym in [
        "_Znwm",
        "_Znam",
        "_ZnwmRKSt9nothrow_t",
        "_ZnamRKSt9nothrow_t",
        "_ZdlPvm",
        "_ZdaPv",
        "_ZnwmSt11align_val_t",
        "_ZnamSt11align_val_t",
        "_ZnwmSt11align_val_tRKSt9nothrow_t",
        "_ZdlPvmSt11align_val_t",
        "_ZdlPvSt11align_val_t",
    ] {
        assert!(
            out.stdout.lines().any(|l| l
                .split_whitespace()
                .last()
                .and_then(|s| s.split('@').next())
                == Some(sym)),
            "{sym} not imported:\n{}",
            out.stdout
        );
    }
}

#[test]
fn operator_new_and_delete() {
    check_cxx("new", Totals::new(2, 1, 48, 24), &[(24, "new")]);
}

#[test]
fn operator_new_array_and_delete_array() {
    check_cxx("new_array", Totals::new(2, 1, 140, 40), &[(100, "new[]")]);
}

#[test]
fn nothrow_new_returns_null_on_failure() {
    // Two successes (24 bytes new, 50 bytes new[]); the two failing calls return NULL. libstdc++ implements the
    // nothrow operators by catching the throwing ones, so each failure allocates and frees one exception object.
    let e = exception_size();
    check_cxx(
        "nothrow",
        Totals::new(2 + 2, 2, 74 + 2 * e, 2 * e),
        &[(24, "new"), (50, "new[]")],
    );
}

#[test]
fn sized_delete() {
    // new Obj (24) + new Obj[3] (72) + operator new(40), all released through the sized operators.
    check_cxx("sized_delete", Totals::new(3, 3, 136, 136), &[]);
}

#[test]
fn align_val_t_new_and_delete() {
    // new Wide (64, freed), new Wide[2] (128, kept), operator new(32, 128) kept, nothrow aligned 16 freed.
    check_cxx(
        "aligned_new",
        Totals::new(4, 2, 240, 80),
        &[(32, "new"), (128, "new[]")],
    );
}

#[test]
fn operator_new_throws_bad_alloc_through_the_tracer() {
    // Two huge requests throw std::bad_alloc, caught by the program (checked there); then a normal new.
    let e = exception_size();
    check_cxx(
        "bad_alloc",
        Totals::new(1 + 2, 2, 24 + 2 * e, 2 * e),
        &[(24, "new")],
    );
}
