//! A leak made by a dlopen'ed library that is dlclose'd before exit is still symbolized.

mod common;
use common::*;

#[test]
fn leak_in_unloaded_library_is_symbolized() {
    let plugin = compile("plugin.c", &["-fPIC", "-shared"]);
    let prog = compile("dlopen_main.c", &[]);
    let scratch = Scratch::new("dlopen");
    let t = traced(&scratch, &prog, &[plugin.to_str().unwrap()]);
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
                "dlopen_main.c",
                line_of("dlopen_main.c", "/* DLOPEN_CALL_LINE */"),
            ),
        ],
    );
}
