//! Heap errors: double, invalid and mismatched frees are reported with the right stacks, the program survives
//! them (exit 0), and rejected frees are not counted as frees.

mod common;
use common::*;
use serde_json::Value;
use std::path::PathBuf;
use std::sync::OnceLock;

const SRC: &str = "bad_frees.cc";

fn prog() -> PathBuf {
    compile(SRC, &[])
}

fn cxx_baseline() -> &'static (Totals, Vec<(u64, String)>) {
    static B: OnceLock<(Totals, Vec<(u64, String)>)> = OnceLock::new();
    B.get_or_init(|| baseline(&prog(), &["none"]))
}

/// Runs a scenario; checks it survived, that the dump's totals are the baseline plus `totals`, and that nothing
/// but the baseline is live; passes the dump's own `errors` to `raw` (checked before the CLI gets involved).
/// Returns the stdout and the report.
fn scenario(
    name: &str,
    totals: Totals,
    counts: [u64; 4],
    raw: impl FnOnce(&Output, &[Value]),
) -> (Output, Value) {
    let scratch = Scratch::new(&format!("errors-{name}"));
    let t = traced(&scratch, &prog(), &[name]);
    t.out.assert_success();
    assert!(t.out.stdout.ends_with("survived\n"), "{name}: {:#?}", t.out);
    let d = t.dump();
    let (base_totals, base_blocks) = cxx_baseline();
    assert_eq!(d.totals(), *base_totals + totals, "{name}: totals");
    assert_eq!(&d.block_sizes(), base_blocks, "{name}: live blocks");
    assert_eq!(d.error_counts(), counts, "{name}: error counts");
    d.assert_balanced();
    let errors = d.json["errors"].as_array().expect("errors");
    assert_eq!(
        errors.len() as u64,
        counts.iter().sum::<u64>(),
        "{name}: errors kept"
    );
    raw(&t.out, errors);
    let r = d.report();
    assert_eq!(
        [
            u(&r["errors"]["double_free"]),
            u(&r["errors"]["invalid_free"]),
            u(&r["errors"]["mismatched_free"]),
            u(&r["errors"]["cross_heap_free"]),
        ],
        counts,
        "{name}: report error counts"
    );
    assert_eq!(
        r["errors"]["items"].as_array().map(Vec::len),
        Some(counts.iter().sum::<u64>() as usize),
        "{name}: one item per error"
    );
    let out = t.out;
    (out, r)
}

/// The stack `which` (`free`, `alloc`, `first_free`) of an error item.
fn stack<'a>(item: &'a Value, which: &str) -> &'a Value {
    &item["stacks"][which]
}

#[test]
fn none_has_no_errors() {
    scenario("none", Totals::default(), [0; 4], |_, _| {});
}

#[test]
fn double_free_reports_all_three_stacks() {
    // One malloc, one real free; the second free is rejected and not counted.
    let (out, r) = scenario(
        "double_free",
        Totals::new(1, 1, 64, 64),
        [1, 0, 0, 0],
        |out, e| {
            assert_eq!(e[0]["kind"], "double_free");
            assert_eq!(u(&e[0]["addr"]), out.value("addr"));
            assert!(u(&e[0]["alloc_stack"]) != 0 && u(&e[0]["first_free_stack"]) != 0);
        },
    );
    let item = &r["errors"]["items"][0];
    assert_eq!(item["kind"], "double_free");
    assert_eq!(u(&item["addr"]), out.value("addr"));
    assert_eq!(u(&item["size"]), 64);
    assert_eq!(item["allocator"], "malloc");
    assert_eq!(item["freed_with"], "free");
    assert_frames(
        stack(item, "alloc"),
        &[
            ("alloc_victim", SRC, line_of(SRC, "/* DF_ALLOC_LINE */")),
            ("s_double_free", SRC, line_of(SRC, "/* DF_CALL_ALLOC */")),
        ],
    );
    assert_frames(
        stack(item, "first_free"),
        &[
            ("first_release", SRC, line_of(SRC, "/* DF_FIRST_LINE */")),
            ("s_double_free", SRC, line_of(SRC, "/* DF_CALL_FIRST */")),
        ],
    );
    assert_frames(
        stack(item, "free"),
        &[
            ("second_release", SRC, line_of(SRC, "/* DF_SECOND_LINE */")),
            ("s_double_free", SRC, line_of(SRC, "/* DF_CALL_SECOND */")),
        ],
    );
}

/// Checks an invalid free of a pointer the tracer never handed out.
fn check_invalid(name: &str, detail: &str, function: &str, marker: &str) {
    let (out, r) = scenario(name, Totals::default(), [0, 1, 0, 0], |out, e| {
        assert_eq!(e[0]["kind"], "invalid_free", "{name}");
        assert_eq!(e[0]["detail"], detail, "{name}");
        assert_eq!(u(&e[0]["addr"]), out.value("addr"), "{name}");
        assert_eq!(e[0]["freed_with"], "free", "{name}");
        assert!(
            e[0]["alloc_stack"].is_null() && e[0]["first_free_stack"].is_null(),
            "{name}"
        );
    });
    let item = &r["errors"]["items"][0];
    assert_eq!(item["kind"], "invalid_free", "{name}");
    assert_eq!(item["detail"], detail, "{name}");
    assert_eq!(u(&item["addr"]), out.value("addr"), "{name}");
    assert_eq!(u(&item["size"]), 0, "{name}");
    assert_eq!(item["freed_with"], "free", "{name}");
    // No family: the pointer was never allocated.
    assert!(
        item["allocator"].is_null() || item["allocator"] == "",
        "{name}: allocator {}",
        item["allocator"]
    );
    assert!(stack(item, "alloc").is_null(), "{name}");
    assert!(stack(item, "first_free").is_null(), "{name}");
    assert_frames(
        stack(item, "free"),
        &[(function, SRC, line_of(SRC, marker))],
    );
}

#[test]
fn invalid_free_of_a_stack_array() {
    check_invalid(
        "invalid_stack",
        "stack",
        "free_stack_array",
        "/* STACK_FREE_LINE */",
    );
}

#[test]
fn invalid_free_of_a_global() {
    check_invalid(
        "invalid_static",
        "static",
        "free_global",
        "/* STATIC_FREE_LINE */",
    );
}

#[test]
fn invalid_free_of_an_interior_pointer() {
    // The block is freed properly afterwards: one allocation, one free.
    let (out, r) = scenario(
        "interior",
        Totals::new(1, 1, 100, 100),
        [0, 1, 0, 0],
        |out, e| {
            assert_eq!(e[0]["detail"], "interior");
            assert_eq!(u(&e[0]["addr"]), out.value("addr"));
        },
    );
    let item = &r["errors"]["items"][0];
    assert_eq!(item["kind"], "invalid_free");
    assert_eq!(item["detail"], "interior");
    assert_eq!(u(&item["addr"]), out.value("addr"));
    assert_eq!(out.value("addr"), out.value("block") + 10);
    assert_eq!(u(&item["size"]), 100);
    assert_eq!(item["allocator"], "malloc");
    assert_eq!(item["freed_with"], "free");
    assert!(stack(item, "first_free").is_null());
    assert_frames(
        stack(item, "alloc"),
        &[(
            "alloc_for_interior",
            SRC,
            line_of(SRC, "/* INTERIOR_ALLOC_LINE */"),
        )],
    );
    assert_frames(
        stack(item, "free"),
        &[(
            "free_interior",
            SRC,
            line_of(SRC, "/* INTERIOR_FREE_LINE */"),
        )],
    );
}

#[test]
fn mismatched_frees() {
    // Mismatched releases still release: 4 allocations (1 + 12 + 20 + 1 bytes), 4 frees.
    let (out, r) = scenario(
        "mismatched",
        Totals::new(4, 4, 34, 34),
        [0, 0, 4, 0],
        |_, e| {
            assert!(e.iter().all(|e| e["kind"] == "mismatched_free"));
        },
    );
    let addrs = out.values("addr");
    let items = r["errors"]["items"].as_array().unwrap();
    let expected = [
        (
            "new_then_free",
            1,
            "new",
            "free",
            "/* NEW_FREE_ALLOC_LINE */",
            "/* NEW_FREE_LINE */",
        ),
        (
            "malloc_then_delete",
            12,
            "malloc",
            "delete",
            "/* MALLOC_DELETE_ALLOC_LINE */",
            "/* MALLOC_DELETE_LINE */",
        ),
        (
            "new_array_then_delete",
            20,
            "new[]",
            "delete",
            "/* NEWARR_DELETE_ALLOC_LINE */",
            "/* NEWARR_DELETE_LINE */",
        ),
        (
            "new_then_delete_array",
            1,
            "new",
            "delete[]",
            "/* NEW_DELETEARR_ALLOC_LINE */",
            "/* NEW_DELETEARR_LINE */",
        ),
    ];
    assert_eq!(addrs.len(), 4);
    for (i, (function, size, allocator, freed_with, alloc_marker, free_marker)) in
        expected.into_iter().enumerate()
    {
        let item = &items[i];
        assert_eq!(item["kind"], "mismatched_free", "{function}");
        assert_eq!(u(&item["addr"]), addrs[i], "{function}");
        assert_eq!(u(&item["size"]), size, "{function}");
        assert_eq!(item["allocator"], allocator, "{function}");
        assert_eq!(item["freed_with"], freed_with, "{function}");
        assert!(stack(item, "first_free").is_null(), "{function}");
        assert_frames(
            stack(item, "alloc"),
            &[(function, SRC, line_of(SRC, alloc_marker))],
        );
        assert_frames(
            stack(item, "free"),
            &[(function, SRC, line_of(SRC, free_marker))],
        );
    }
}

#[test]
fn free_of_a_pointer_realloc_moved() {
    // p = malloc(10); q = realloc(p, 100000) moves the block; free(p) is a double free whose first free is the
    // realloc; then q is freed properly. 2 allocations (10 + 100000) and 2 frees; the bad one is not counted.
    let (out, r) = scenario(
        "free_after_realloc",
        Totals::new(3, 3, 10 + 10 + 100_000, 10 + 10 + 100_000),
        [1, 0, 0, 0],
        |out, e| {
            assert_eq!(e[0]["kind"], "double_free");
            assert_eq!(u(&e[0]["addr"]), out.value("addr"));
        },
    );
    assert_ne!(out.value("addr"), out.value("moved"), "realloc must move");
    let item = &r["errors"]["items"][0];
    assert_eq!(u(&item["size"]), 10);
    assert_eq!(item["allocator"], "malloc");
    assert_eq!(item["freed_with"], "free");
    assert_frames(
        stack(item, "alloc"),
        &[("realloc_moves", SRC, line_of(SRC, "/* RA_ALLOC_LINE */"))],
    );
    assert_frames(
        stack(item, "first_free"),
        &[("realloc_moves", SRC, line_of(SRC, "/* RA_REALLOC_LINE */"))],
    );
    assert_frames(
        stack(item, "free"),
        &[(
            "realloc_moves",
            SRC,
            line_of(SRC, "/* RA_STALE_FREE_LINE */"),
        )],
    );
}
