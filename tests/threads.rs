//! Eight threads allocating and freeing each other's blocks: exact totals, every block accounted for.

mod common;
use common::*;
use std::collections::{BTreeMap, BTreeSet};

const THREADS: u64 = 8;
const PER_THREAD: u64 = 500;
const LEAKS: u64 = 3;

#[test]
fn cross_thread_frees_balance_exactly() {
    let prog = compile("threads.c", &["-pthread"]);

    // glibc allocates per-thread structures (the DTV) itself; the baseline run creates the same threads
    // without the program's own allocations, and the difference must be exactly the program's pattern.
    let base_scratch = Scratch::new("threads-baseline");
    let base = traced(&base_scratch, &prog, &["baseline"]);
    base.out.assert_success();
    let base = base.dump();
    base.assert_balanced();

    let scratch = Scratch::new("threads");
    let t = traced(&scratch, &prog, &[]);
    t.out.assert_success();
    let d = t.dump();
    d.assert_balanced();
    assert_eq!(d.error_counts(), [0; 4]);
    let tracer = &d.json["tracer"];
    assert_eq!(u(&tracer["lost_blocks"]), 0);
    assert_eq!(u(&tracer["lost_stacks"]), 0);

    // Thread i allocates PER_THREAD blocks of 16+i bytes (all freed by thread i-1) and leaks LEAKS of 1000+i.
    let small_bytes: u64 = (0..THREADS).map(|i| PER_THREAD * (16 + i)).sum();
    let leak_bytes: u64 = (0..THREADS).map(|i| LEAKS * (1000 + i)).sum();
    let expected = Totals::new(
        THREADS * (PER_THREAD + LEAKS),
        THREADS * PER_THREAD,
        small_bytes + leak_bytes,
        small_bytes,
    );
    assert_eq!(d.totals() - base.totals(), expected);
    assert_eq!(d.live().0 - base.live().0, THREADS * LEAKS);
    assert_eq!(d.live().1 - base.live().1, leak_bytes);

    // The program's live blocks: LEAKS per thread, each set allocated by one thread, eight distinct threads.
    let mut by_size: BTreeMap<u64, BTreeSet<u64>> = BTreeMap::new();
    let mut count: BTreeMap<u64, u64> = BTreeMap::new();
    for b in d.blocks() {
        if (1000..1000 + THREADS).contains(&b.size) {
            by_size.entry(b.size).or_default().insert(b.tid);
            *count.entry(b.size).or_default() += 1;
        }
        assert!(
            !(16..16 + THREADS).contains(&b.size),
            "a cross-freed block is still live: {b:?}"
        );
    }
    assert_eq!(count.len() as u64, THREADS, "{count:?}");
    assert!(count.values().all(|&n| n == LEAKS), "{count:?}");
    let tids: BTreeSet<u64> = by_size
        .values()
        .map(|t| {
            assert_eq!(t.len(), 1, "one thread per size: {t:?}");
            *t.iter().next().unwrap()
        })
        .collect();
    assert_eq!(tids.len() as u64, THREADS);
    assert!(
        !tids.contains(&d.pid()),
        "allocated by the workers, not main"
    );
}

/// Threads that follow one another reuse the stack glibc cached and the walk memory the tracer kept for the thread
/// before (its pages dropped and handed on): every thread's stacks are still its own.
#[test]
fn stacks_stay_right_across_thread_churn() {
    let prog = compile("thread_churn.c", &["-pthread"]);
    let scratch = Scratch::new("thread_churn");
    let t = traced(&scratch, &prog, &[]);
    t.out.assert_success();
    let d = t.dump();
    d.assert_balanced();
    let r = d.report();
    let leaks = r["leaks"].as_array().unwrap();
    for (size, function, marker) in [
        (100, "path_a", "/* PATH_A_LINE */"),
        (101, "path_b", "/* PATH_B_LINE */"),
        (102, "path_c", "/* PATH_C_LINE */"),
    ] {
        let ours: Vec<_> = leaks
            .iter()
            .filter(|l| u(&l["bytes"]) == 20 * size && u(&l["blocks"]) == 20)
            .collect();
        assert_eq!(
            ours.len(),
            1,
            "one leak site of 20 blocks of {size} bytes:\n{}",
            leaks
                .iter()
                .map(|l| format!(
                    "{} x {} B\n{}",
                    l["blocks"],
                    l["bytes"],
                    describe_frames(&l["frames"])
                ))
                .collect::<Vec<_>>()
                .join("\n--\n")
        );
        assert_frames(
            &ours[0]["frames"],
            &[
                (
                    function,
                    "thread_churn.c",
                    line_of("thread_churn.c", marker),
                ),
                (
                    "worker",
                    "thread_churn.c",
                    line_of("thread_churn.c", "/* WORKER_LEAK_LINE */"),
                ),
            ],
        );
    }
}
