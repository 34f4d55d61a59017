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
