//! A leak made by a dlopen'ed library that is dlclose'd before exit is still symbolized.

mod common;
use common::*;

#[test]
fn leak_in_unloaded_library_is_symbolized() {
    let plugin = compile("plugin.c", &["-fPIC", "-shared"]);
    let prog = compile("dl_cycle.c", &[]);
    let scratch = Scratch::new("dlopen");
    let t = traced(
        &scratch,
        &prog,
        &["plugin_leak", "1", plugin.to_str().unwrap()],
    );
    t.out.assert_success();
    let d = t.dump();
    d.assert_balanced();

    let plugin_path = std::fs::canonicalize(&plugin).unwrap();
    let modules = modules(d);
    let entry: Vec<&(String, bool)> = modules
        .iter()
        .filter(|(p, _)| std::path::Path::new(p) == plugin_path)
        .collect();
    assert_eq!(entry.len(), 1, "plugin listed once: {modules:?}");
    assert!(!entry[0].1, "plugin marked unloaded: {modules:?}");
    assert!(modules
        .iter()
        .filter(|(p, _)| !p.contains("libplugin"))
        .all(|(_, loaded)| *loaded));

    let r = d.report();
    let leaks = r["leaks"].as_array().unwrap();
    let ours: Vec<_> = leaks
        .iter()
        .filter(|l| {
            frame_is(
                &l["frames"][0],
                "plugin_leak",
                "plugin.c",
                line_of("plugin.c", "/* PLUGIN_ALLOC_LINE */"),
            )
        })
        .collect();
    assert_eq!(
        ours.len(),
        1,
        "the plugin's leak, symbolized:\n{}",
        leaks
            .iter()
            .map(|l| describe_frames(&l["frames"]))
            .collect::<Vec<_>>()
            .join("\n--\n")
    );
    let leak = ours[0];
    assert_eq!((u(&leak["blocks"]), u(&leak["bytes"])), (1, 48));
    assert_eq!(
        std::path::Path::new(leak["frames"][0]["module"].as_str().unwrap()),
        plugin_path
    );
    assert_frames(
        &leak["frames"],
        &[
            (
                "plugin_leak",
                "plugin.c",
                line_of("plugin.c", "/* PLUGIN_ALLOC_LINE */"),
            ),
            (
                "main",
                "dl_cycle.c",
                line_of("dl_cycle.c", "/* CYCLE_CALL_LINE */"),
            ),
        ],
    );
}

/// Stacks through a library stay right when libraries come and go hundreds of times: every `dlclose` retires
/// the cached unwind rules (their tags carry a generation counter), and after 1100 cycles the counter's bits in
/// the tags have wrapped twice. The two plugin builds put a different rule at the same return address, so a rule
/// kept across the wrap would unwind the other build's frame into garbage.
#[test]
fn stacks_stay_right_across_many_dlclose_cycles() {
    let small = compile(
        "plugin_frame.c",
        &[
            "-fPIC",
            "-shared",
            "-O2",
            "-fomit-frame-pointer",
            "-DFRAME=200",
        ],
    );
    let large = compile(
        "plugin_frame.c",
        &[
            "-fPIC",
            "-shared",
            "-O2",
            "-fomit-frame-pointer",
            "-DFRAME=1000",
        ],
    );
    let prog = compile("dl_cycle.c", &[]);
    let scratch = Scratch::new("dl_cycle");
    const CYCLES: usize = 1100;
    let t = traced(
        &scratch,
        &prog,
        &[
            "plugin_frame_leak",
            &CYCLES.to_string(),
            small.to_str().unwrap(),
            large.to_str().unwrap(),
        ],
    );
    t.out.assert_success();
    let d = t.dump();
    d.assert_balanced();

    let leaks: Vec<_> = d.blocks().into_iter().filter(|b| b.size == 4321).collect();
    assert_eq!(leaks.len(), CYCLES, "one leak per cycle");
    let frames = |id: u64| d.frames(id);
    // Everything past the plugin's frame is main and the C runtime's start, the same for every cycle.
    let first = frames(leaks[0].stack);
    assert!(first.len() >= 3, "plugin, main and the runtime: {first:x?}");
    for (i, b) in leaks.iter().enumerate() {
        let f = frames(b.stack);
        assert_eq!(
            f.get(1..),
            first.get(1..),
            "leak {i} of {CYCLES}: callers differ from the first leak's ({f:x?} vs {first:x?})"
        );
    }
    let r = d.report();
    let leak = r["leaks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| u(&l["bytes"]).is_multiple_of(4321))
        .expect("a 4321-byte leak in the report");
    assert!(
        frame_is(
            &leak["frames"][1],
            "main",
            "dl_cycle.c",
            line_of("dl_cycle.c", "/* CYCLE_CALL_LINE */")
        ),
        "the plugin's caller is main: {}",
        describe_frames(&leak["frames"])
    );
}
