//! Stack interning at scale (`src/intern.rs`): more distinct stacks than its first lookup table takes, each
//! with the right frames and one id, and the same id when the same path runs again, also when threads intern the
//! same new stacks at once.

mod common;
use common::*;
use std::collections::{BTreeMap, HashMap};

/// 3^11 = 177147 distinct chains: past the small table's 131072, so the rest land in the big one.
const LEVELS: u32 = 11;

/// Where a, b, c and main start, from the program's "fn NAME 0xADDR" lines: a return address lies in the
/// function that starts closest below it.
fn function_starts(stdout: &str) -> BTreeMap<u64, String> {
    stdout
        .lines()
        .filter_map(|l| {
            let mut w = l.strip_prefix("fn ")?.split(' ');
            let name = w.next()?.to_owned();
            let addr = u64::from_str_radix(w.next()?.trim_start_matches("0x"), 16).ok()?;
            Some((addr, name))
        })
        .collect()
}

/// The functions path `i` calls, innermost first: the allocating one (the last digit) first, the first one last.
fn path_functions(i: u64) -> Vec<&'static str> {
    let mut x = i;
    let mut want = Vec::new();
    for _ in 0..LEVELS {
        want.push(["a", "b", "c"][(x % 3) as usize]);
        x /= 3;
    }
    want.reverse();
    want
}

#[test]
fn stacks_past_the_first_lookup_table_stay_distinct_and_right() {
    let prog = compile("many_stacks.c", &["-O2", "-fomit-frame-pointer"]);
    let scratch = Scratch::new("intern-many");
    let t = traced(&scratch, &prog, &[&LEVELS.to_string()]);
    t.out.assert_success();
    let d = t.dump();
    assert_eq!(u(&d.json["tracer"]["lost_stacks"]), 0);
    assert_eq!(u(&d.json["tracer"]["truncated_stacks"]), 0);

    let starts = function_starts(&t.out.stdout);
    assert_eq!(starts.len(), 4, "{}", t.out.stdout);
    let function = |ra: u64| starts.range(..ra).next_back().map(|(_, n)| n.as_str());

    let frames = |id: u64| d.frames(id);
    // The program's blocks by size (16: first pass, 24: second), each in allocation order.
    let mut passes: [Vec<(u64, u64)>; 2] = [Vec::new(), Vec::new()];
    for b in d.json["blocks"].as_array().expect("blocks") {
        let (size, stack, seq) = (u(&b[1]), u(&b[2]), u(&b[5]));
        match size {
            16 => passes[0].push((seq, stack)),
            24 => passes[1].push((seq, stack)),
            _ => {}
        }
    }
    let paths = 3u64.pow(LEVELS);
    for p in &mut passes {
        p.sort();
        assert_eq!(p.len() as u64, paths);
    }

    let mut ids: HashMap<u64, u64> = HashMap::new();
    for (i, (&(_, id), &(_, again))) in passes[0].iter().zip(&passes[1]).enumerate() {
        // The same path run again has the same id.
        assert_eq!(id, again, "path {i}: ids {id} and {again}");
        // One id per path.
        if let Some(other) = ids.insert(id, i as u64) {
            panic!("paths {other} and {i} share stack {id}");
        }
        // Innermost first: the allocating function (the last digit), ..., the first one, then main.
        let f = frames(id);
        assert!(f.len() > LEVELS as usize, "path {i}: {f:x?}");
        let mut want = path_functions(i as u64);
        want.push("main");
        let got: Vec<&str> = f[..=LEVELS as usize]
            .iter()
            .map(|&ra| function(ra).unwrap_or("?"))
            .collect();
        assert_eq!(got, want, "path {i}: {f:x?}");
    }
    assert_eq!(ids.len() as u64, paths);
}

/// Four threads run the same 3^11 paths at the same time, two in path order and two in reverse, so each new
/// stack is interned by two threads at nearly the same moment while the other two add different ones, also while
/// the first lookup table closes (a thread that still saw it open and one that saw it closed could put the same
/// stack in both tables, under two ids). Every path gets one id, the same in every thread, and its own.
#[test]
fn threads_interning_the_same_new_stacks_get_one_id_each() {
    const THREADS: u64 = 4;
    let prog = compile(
        "many_stacks.c",
        &["-O2", "-fomit-frame-pointer", "-pthread"],
    );
    let scratch = Scratch::new("intern-threads");
    let t = traced(
        &scratch,
        &prog,
        &[&LEVELS.to_string(), &THREADS.to_string()],
    );
    t.out.assert_success();
    let d = t.dump();
    assert_eq!(u(&d.json["tracer"]["lost_stacks"]), 0);
    let starts = function_starts(&t.out.stdout);
    assert_eq!(starts.len(), 4, "{}", t.out.stdout);
    let function = |ra: u64| starts.range(..ra).next_back().map(|(_, n)| n.as_str());

    // Each thread's blocks (size 32 + 8t) in allocation order: path i is the i-th (odd threads: from the end).
    let mut by_thread: Vec<Vec<(u64, u64)>> = vec![Vec::new(); THREADS as usize];
    for b in d.json["blocks"].as_array().expect("blocks") {
        let (size, stack, seq) = (u(&b[1]), u(&b[2]), u(&b[5]));
        if size >= 32 && (size - 32) % 8 == 0 && (size - 32) / 8 < THREADS {
            by_thread[((size - 32) / 8) as usize].push((seq, stack));
        }
    }
    let paths = 3u64.pow(LEVELS);
    for (k, p) in by_thread.iter_mut().enumerate() {
        p.sort();
        assert_eq!(p.len() as u64, paths);
        if k % 2 == 1 {
            p.reverse();
        }
    }
    let mut owner: HashMap<u64, usize> = HashMap::new();
    for i in 0..paths as usize {
        let id = by_thread[0][i].1;
        for (k, p) in by_thread.iter().enumerate().skip(1) {
            assert_eq!(
                p[i].1, id,
                "path {i}: thread 0 has stack {id}, thread {k} {}",
                p[i].1
            );
        }
        if let Some(other) = owner.insert(id, i) {
            panic!("paths {other} and {i} share stack {id}");
        }
        let want = path_functions(i as u64);
        let f = d.frames(id);
        let got: Vec<&str> = f[..LEVELS as usize]
            .iter()
            .map(|&ra| function(ra).unwrap_or("?"))
            .collect();
        assert_eq!(got, want, "path {i}: {f:x?}");
    }
}
