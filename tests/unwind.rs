//! The tracer's DWARF unwinder (`src/linux/stack.rs`, `walk`) against libgcc's `_Unwind_Backtrace`.
//!
//! `_Unwind_Backtrace` is the reference because it is the unwinder C++ exceptions themselves rely on: it
//! interprets the complete `.eh_frame` CFI (expressions, every register) and glibc's signal-frame description,
//! so any frame it walks is one the program's own exception handling would walk. The tracer reduces each rule
//! to a compact form and recognises signal frames by their code; these tests check that the reduction loses
//! nothing on real programs.
//!
//! Each program (`tests/programs/unwind/`, helper in `ref.h`) calls `ref_backtrace(id)` and then allocates a
//! marked block from the same function, and prints the reference frames starting at that function's own frame
//! plus the marked block's address. The dump's stack for the block must then be:
//! - `inner`: frames of the allocator's callers that the reference cannot see (`__cxa_allocate_exception`);
//! - one frame in the same function as the reference's first frame (a different call site in it: the call
//!   of malloc, not of `ref_backtrace`);
//! - then exactly the reference's remaining frames, address for address, to the end of the stack.
//!
//! Two conventions differ and are normalised: an interrupted pc (the frame below a signal frame, which
//! `_Unwind_GetIPInfo` reports with `ip_before_insn`) is stored + 1 in dumps so symbolizers' `pc - 1` lands on
//! it (docs/dump-format.md), and libgcc ends every walk with a frame whose ip is 0 (the context after the
//! outermost frame, `_start` or `clone3`, whose CFI marks the return address undefined), which the tracer does
//! not record. Everything else, the outermost frames included, must be identical.

mod common;
use common::*;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// Deep enough for the 100-level recursion plus main and libc's start-up frames: nothing may be cut.
const DEPTH: u64 = 128;

/// The flag sets every program is built with.
const BUILDS: &[&[&str]] = &[
    &["-O2", "-fomit-frame-pointer"],
    &["-O2", "-fno-omit-frame-pointer"],
    &["-O0"],
];

const RECURSE: &str = "unwind/recurse.c";
const SIGNALS: &str = "unwind/signals.c";
const EXCEPTIONS: &str = "unwind/exceptions.cc";

fn build(source: &str, flags: &[&str]) -> PathBuf {
    // `compile` caches by the source's own text; ref.h is part of every program, so its text goes into the key
    // as a flag, or an edit to it would run stale binaries.
    let header = std::fs::read(program_source("unwind/ref.h")).expect("read ref.h");
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in header {
        h = (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3);
    }
    let salt = format!("-DREF_H_FNV={h:016x}");
    let mut extra = vec![salt.as_str()];
    extra.extend_from_slice(flags);
    extra.push("-pthread");
    compile(source, &extra)
}

/// What one marked block must look like.
struct Expect {
    id: u64,
    /// Functions of the dump's frames below the reference's first frame.
    inner: &'static [&'static str],
    /// The function that took the reference and (directly or through `inner`) allocated.
    caller: &'static str,
    /// `None`: no signal frame on the stack. `Some(names)`: the reference has exactly one interrupted frame, in
    /// one of `names` (any function when empty).
    interrupted: Option<&'static [&'static str]>,
}

const fn plain(id: u64, caller: &'static str) -> Expect {
    Expect {
        id,
        inner: &[],
        caller,
        interrupted: None,
    }
}

/// The reference stacks and marked blocks a program printed.
#[derive(Default)]
struct Printed {
    /// id -> frames, normalised to the dump's conventions (see the module doc).
    refs: BTreeMap<u64, Vec<u64>>,
    /// id -> index of the interrupted frame in `refs[id]`, if any.
    interrupted: BTreeMap<u64, Vec<usize>>,
    /// id -> an address inside the marked block.
    blocks: BTreeMap<u64, u64>,
}

fn parse_printed(stdout: &str) -> Printed {
    let mut p = Printed::default();
    for line in stdout.lines() {
        let mut words = line.split_whitespace();
        match words.next() {
            Some("ref") => {
                let id: u64 = words.next().and_then(|w| w.parse().ok()).expect(line);
                let mut frames = Vec::new();
                let mut interrupted = Vec::new();
                for w in words {
                    assert!(
                        w != "caller-not-found" && w != "overflow",
                        "reference backtrace {id} failed ({w}): {line}"
                    );
                    let (hex, before_insn) = match w.strip_suffix('*') {
                        Some(h) => (h, true),
                        None => (w, false),
                    };
                    let ip = u64::from_str_radix(hex, 16).expect(line);
                    if before_insn {
                        interrupted.push(frames.len());
                        frames.push(ip + 1);
                    } else {
                        frames.push(ip);
                    }
                }
                assert_eq!(
                    frames.pop(),
                    Some(0),
                    "libgcc ends each walk with ip 0: {line}"
                );
                assert!(!frames.contains(&0), "ip 0 inside a reference: {line}");
                assert!(p.refs.insert(id, frames).is_none(), "two refs {id}");
                p.interrupted.insert(id, interrupted);
            }
            Some("block") => {
                let id: u64 = words.next().and_then(|w| w.parse().ok()).expect(line);
                let addr = words
                    .next()
                    .and_then(|w| u64::from_str_radix(w, 16).ok())
                    .expect(line);
                assert!(p.blocks.insert(id, addr).is_none(), "two blocks {id}");
            }
            _ => {}
        }
    }
    p
}

/// One frame, symbolized for comparison and display.
struct Sym {
    /// The real (outermost, not inlined) function at this address.
    function: Option<String>,
    text: String,
}

/// Symbolizes `stacks` with the CLI's own symbolizer: a copy of `dump` whose only blocks point at them, one
/// block each with a distinct size so each leak site of the report is identified by its bytes.
fn symbolize(scratch: &Scratch, dump: &Dump, stacks: &[&[u64]]) -> Vec<Vec<Sym>> {
    const BIG: u64 = 1 << 30;
    let mut j = dump.json.clone();
    let mut all = vec![json!([])];
    all.extend(stacks.iter().map(|s| json!(s)));
    j["stacks"] = Value::Array(all);
    j["blocks"] = stacks
        .iter()
        .enumerate()
        .map(|(i, _)| json!([0x1000 + 16 * i as u64, BIG - i as u64, i + 1, 0, 1, i, 2]))
        .collect();
    j["errors"] = json!([]);
    if let Some(o) = j.as_object_mut() {
        o.remove("crash");
    }
    let path = scratch.join("symbolize.json");
    std::fs::write(&path, serde_json::to_string(&j).unwrap()).expect("write symbolize.json");
    let r = report(&[&path]);
    let leaks = r["leaks"].as_array().expect("leaks");
    stacks
        .iter()
        .enumerate()
        .map(|(i, stack)| {
            let leak = leaks
                .iter()
                .find(|l| l["bytes"] == BIG - i as u64)
                .unwrap_or_else(|| panic!("stack {i} not in the symbolized report"));
            let syms = group_frames(&leak["frames"]);
            assert_eq!(syms.len(), stack.len(), "one symbolized frame per address");
            syms
        })
        .collect()
}

/// Groups the report's frames (an address inside inlined code expands to several) back into one per address.
fn group_frames(frames: &Value) -> Vec<Sym> {
    let mut out = Vec::new();
    let mut inlined: Vec<String> = Vec::new();
    for f in frames.as_array().expect("frames") {
        let name = f["function"].as_str().map(str::to_owned);
        if f["inlined"] == true {
            inlined.push(name.unwrap_or_else(|| "?".into()));
            continue;
        }
        let module = f["module"]
            .as_str()
            .and_then(|m| Path::new(m).file_name())
            .map(|m| m.to_string_lossy().into_owned())
            .unwrap_or_else(|| "?".into());
        let mut text = format!(
            "{:#x} {} ({module}+{:#x})",
            f["address"].as_u64().unwrap_or(0),
            name.as_deref().unwrap_or("?"),
            f["offset"].as_u64().unwrap_or(0)
        );
        if !inlined.is_empty() {
            let _ = write!(text, " [inlined: {}]", inlined.join(" < "));
            inlined.clear();
        }
        out.push(Sym {
            function: name,
            text,
        });
    }
    out
}

/// Both stacks side by side, the dump's frame `inner + i` next to the reference's frame `i`.
fn side_by_side(
    dump: &[Sym],
    dump_raw: &[u64],
    refs: &[Sym],
    ref_raw: &[u64],
    inner: usize,
) -> String {
    let mut s = String::from("  #  dump | reference\n");
    let rows = dump.len().max(refs.len() + inner);
    for row in 0..rows {
        let d = dump.get(row).map_or("-", |f| f.text.as_str());
        let r = row
            .checked_sub(inner)
            .and_then(|i| refs.get(i))
            .map_or("-", |f| f.text.as_str());
        let same = row > inner
            && dump_raw.get(row).is_some()
            && dump_raw.get(row) == row.checked_sub(inner).and_then(|i| ref_raw.get(i));
        let mark = if row <= inner || same { " " } else { "!" };
        let _ = writeln!(s, "{mark}{row:3} {d:60} | {r}");
    }
    s
}

/// Runs `prog args` under the tracer with [`DEPTH`]-frame stacks and checks every expected block; returns
/// what differed (empty when nothing did). Failures of the run itself panic.
fn check(label: &str, prog: &Path, args: &[&str], expects: &[Expect]) -> String {
    let scratch = Scratch::new(&format!("unwind-{label}"));
    let dir = scratch.dump_dir();
    let out = run(traced_command(prog, &dir)
        .env("HEAPLEDGER_DEPTH", DEPTH.to_string())
        .args(args)
        .current_dir(&scratch.path));
    out.assert_success();
    let dumps = read_dumps(&dir);
    assert_eq!(dumps.len(), 1, "{label}: one dump expected: {out:#?}");
    let dump = &dumps[0];
    assert_eq!(u(&dump.json["depth"]), DEPTH, "{label}: HEAPLEDGER_DEPTH");
    assert_eq!(
        u(&dump.json["tracer"]["truncated_stacks"]),
        0,
        "{label}: a stack was cut at {DEPTH} frames"
    );
    let printed = parse_printed(&out.stdout);
    let stacks: Vec<Vec<u64>> = dump.json["stacks"]
        .as_array()
        .expect("stacks")
        .iter()
        .map(|s| s.as_array().expect("stack").iter().map(u).collect())
        .collect();
    let blocks = dump.blocks();

    // Collect both stacks of every expected block first, so one report symbolizes them all.
    let mut pairs: Vec<(&Expect, &[u64], &[u64])> = Vec::new();
    for e in expects {
        let reference = printed
            .refs
            .get(&e.id)
            .unwrap_or_else(|| panic!("{label}: no reference {} in {out:#?}", e.id));
        let addr = *printed
            .blocks
            .get(&e.id)
            .unwrap_or_else(|| panic!("{label}: block {} not printed: {out:#?}", e.id));
        let block = blocks
            .iter()
            .find(|b| b.addr <= addr && addr < b.addr + b.size.max(1))
            .unwrap_or_else(|| panic!("{label}: block {} ({addr:#x}) not in the dump", e.id));
        pairs.push((e, &stacks[block.stack as usize], reference));
    }
    let flat: Vec<&[u64]> = pairs.iter().flat_map(|&(_, d, r)| [d, r]).collect();
    let syms = symbolize(&scratch, dump, &flat);

    let mut failures = String::new();
    for (k, &(e, d, r)) in pairs.iter().enumerate() {
        let (ds, rs) = (&syms[2 * k], &syms[2 * k + 1]);
        let inner = e.inner.len();
        let mut why = Vec::new();
        let dump_fn = |i: usize| ds.get(i).and_then(|s| s.function.as_deref());
        let inner_fns: Vec<Option<&str>> = (0..inner).map(dump_fn).collect();
        if inner_fns != e.inner.iter().map(|&f| Some(f)).collect::<Vec<_>>() {
            why.push(format!(
                "dump frames 0..{inner} are {inner_fns:?}, expected {:?}",
                e.inner
            ));
        }
        let ref_caller = rs.first().and_then(|s| s.function.as_deref());
        if dump_fn(inner) != Some(e.caller) || ref_caller != Some(e.caller) {
            why.push(format!(
                "allocating function: dump frame {inner} is {:?}, reference frame 0 is {ref_caller:?}, \
                 expected {:?} in both",
                dump_fn(inner),
                e.caller
            ));
        }
        if d.get(inner + 1..) != r.get(1..) {
            why.push(format!(
                "outer frames differ: dump has {} after frame {inner}, reference {} after frame 0",
                d.len().saturating_sub(inner + 1),
                r.len().saturating_sub(1)
            ));
        }
        let interrupted = &printed.interrupted[&e.id];
        match e.interrupted {
            None if !interrupted.is_empty() => why.push(format!(
                "unexpected signal frame below frames {interrupted:?}"
            )),
            Some(names) => {
                let fns: Vec<Option<&str>> = interrupted
                    .iter()
                    .map(|&i| rs[i].function.as_deref())
                    .collect();
                let ok = fns.len() == 1
                    && (names.is_empty() || fns[0].is_some_and(|f| names.contains(&f)));
                if !ok {
                    why.push(format!(
                        "interrupted frames in {fns:?}, expected one in {names:?}"
                    ));
                }
            }
            None => {}
        }
        if !why.is_empty() {
            let _ = writeln!(
                failures,
                "block {} ({label}, {args:?}):\n  {}\n{}",
                e.id,
                why.join("\n  "),
                side_by_side(ds, d, rs, r, inner)
            );
        }
    }
    if !failures.is_empty() {
        // Keep the run's files for a look at the dump.
        eprintln!("{label}: files in {}", scratch.path.display());
        std::mem::forget(scratch);
    }
    failures
}

fn label(source: &str, flags: &[&str]) -> String {
    let stem = Path::new(source).file_stem().unwrap().to_string_lossy();
    format!("{stem}{}", flags.concat())
}

/// [`check`] once per flag set of [`BUILDS`], failing with the differences of every build.
fn check_all_builds(source: &str, args: &[&str], expects: &[Expect]) {
    let failures: String = BUILDS
        .iter()
        .map(|flags| check(&label(source, flags), &build(source, flags), args, expects))
        .collect();
    assert!(
        failures.is_empty(),
        "the tracer's stacks differ from _Unwind_Backtrace's ('!' marks differing frames):\n{failures}"
    );
}

#[test]
fn deep_recursion_matches_with_and_without_frame_pointers() {
    check_all_builds(RECURSE, &["recurse", "100"], &[plain(1, "leaf")]);
}

#[test]
fn deep_recursion_on_four_threads_at_once() {
    // Thread stacks end in clone3, whose CFI marks the return address undefined: both walks stop there.
    let expects: Vec<Expect> = (10..14).map(|id| plain(id, "leaf")).collect();
    check_all_builds(RECURSE, &["threads", "60"], &expects);
}

/// The unwinder remembers its last walks and, when a new walk reaches a frame of one of them, checks the stack
/// words that walk read instead of unwinding again (and reuses the stack id of an identical stack). Sixty chains
/// of varying depth and entry function, several of them repeated exactly, must each still equal the reference.
#[test]
fn repeated_walks_through_remembered_frames() {
    let expects: Vec<Expect> = (100..160).map(|id| plain(id, "leaf")).collect();
    check_all_builds(RECURSE, &["repeat"], &expects);
}

/// A walk that starts where a remembered whole walk started (same hook code, same stack pointer) is answered
/// from it only while every stack word it read holds the same value: the same chains run again and again below
/// two callers with the same frame shape must keep their callers apart, and repeated ones must stay exact.
#[test]
fn walks_that_start_alike_are_told_apart_by_their_callers() {
    let expects: Vec<Expect> = (200..248).map(|id| plain(id, "leaf")).collect();
    check_all_builds(RECURSE, &["again"], &expects);
}

#[test]
fn frame_whose_cfa_is_a_dwarf_expression() {
    // Only GCC's optimised build of `drap` realigns the stack through a pointer (CFA = *(rbp - 40)); the other
    // builds run the same chain with ordinary rules.
    check_all_builds(RECURSE, &["drap", "20"], &[plain(30, "leaf")]);
}

#[test]
fn through_a_signal_frame_raised_inside_libc() {
    // raise() blocks signals around tgkill; the signal arrives when libc unblocks it, so the interrupted pc is
    // in libc, just after a syscall instruction.
    let expects = [Expect {
        interrupted: Some(&[]),
        ..plain(1, "on_usr1")
    }];
    check_all_builds(SIGNALS, &["raise"], &expects);
}

#[test]
fn through_a_signal_frame_at_a_faulting_store() {
    let expects = [
        Expect {
            interrupted: Some(&["poke_framed"]),
            ..plain(2, "on_segv")
        },
        Expect {
            interrupted: Some(&["poke_leaf"]),
            ..plain(3, "on_segv")
        },
    ];
    check_all_builds(SIGNALS, &["fault"], &expects);
}

#[test]
fn through_a_signal_frame_at_timer_interrupts() {
    // Where the ticks land varies from run to run; 50 of them per build land on a dozen or more distinct pcs of
    // the recursion (entry before the push, after it, the body, after `leave`, on `ret`) and of its callers.
    const TICKS: u64 = 50;
    let expects: Vec<Expect> = (100..100 + TICKS)
        .map(|id| Expect {
            interrupted: Some(&[]),
            ..plain(id, "on_prof")
        })
        .collect();
    check_all_builds(SIGNALS, &["prof", &TICKS.to_string()], &expects);
}

#[test]
fn cxx_exception_allocation_while_throwing() {
    // The reference is taken in the thrower right before `throw`; the dump's frame 0 is inside
    // __cxa_allocate_exception, called from the thrower.
    let expects = [Expect {
        inner: &["__cxa_allocate_exception"],
        ..plain(1, "thrower()")
    }];
    check_all_builds(EXCEPTIONS, &["throw"], &expects);
}

#[test]
fn cxx_destructor_allocating_during_phase_two_unwinding() {
    // The destructor runs from the landing pad of `unwound`, whose frame _Unwind_RaiseException has installed:
    // the unwinder's own frames are gone, the landing pad's return address (in `unwound` or its .cold part) is
    // the frame above the destructor. Block 3 is the same one frame out, after _Unwind_Resume.
    let expects = [plain(2, "Guard::~Guard()"), plain(3, "Guard::~Guard()")];
    check_all_builds(EXCEPTIONS, &["dtor"], &expects);
}
