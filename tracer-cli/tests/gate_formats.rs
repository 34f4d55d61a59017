//! The gate's machine outputs: SARIF validates against the vendored OASIS 2.1.0 schema, JUnit parses as XML
//! with one suite per process, the flame graph is a well-formed SVG naming the leaking functions.

mod gate_common;

use gate_common::*;
use serde_json::Value;

const SCHEMA: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/data/sarif-schema-2.1.0.json"
);

/// Validates `log` against the SARIF 2.1.0 schema, formats included; panics with every error.
fn assert_valid_sarif(log: &Value) {
    let schema: Value = serde_json::from_str(&std::fs::read_to_string(SCHEMA).unwrap()).unwrap();
    let validator = jsonschema::draft4::options()
        .should_validate_formats(true)
        .build(&schema)
        .expect("the vendored schema compiles");
    let errors: Vec<String> = validator
        .iter_errors(log)
        .map(|e| format!("{} at {}", e, e.instance_path()))
        .collect();
    assert!(
        errors.is_empty(),
        "SARIF invalid:\n{}\n{log:#}",
        errors.join("\n")
    );
}

#[test]
fn the_schema_rejects_a_broken_log() {
    // The validator is not vacuous: a result without a message breaks the schema.
    let bad = serde_json::json!({
        "version": "2.1.0",
        "runs": [{ "tool": { "driver": { "name": "x" } }, "results": [{ "ruleId": "a" }] }]
    });
    let schema: Value = serde_json::from_str(&std::fs::read_to_string(SCHEMA).unwrap()).unwrap();
    let validator = jsonschema::draft4::new(&schema).unwrap();
    assert!(!validator.is_valid(&bad));
}

fn sample_dumps(s: &Scratch) -> (String, String) {
    let a = s.write(
        "a.json",
        dump(60, "exit", "", &example_blocks(), &example_errors()),
    );
    let b = s.write("b.json", dump(61, "exit", "", &[], &[]));
    (a, b)
}

#[test]
fn sarif_validates_and_carries_fingerprints_locations_and_stacks() {
    let s = Scratch::new("sarif");
    let (a, b) = sample_dumps(&s);
    let supp = s.write("x.supp", "leak:leak_two\n");
    let out = s.path("out.sarif");
    let o = heapledger_in(
        &s.0,
        &[
            "check",
            "--format",
            "sarif",
            "--output",
            out.to_str().unwrap(),
            "--suppressions",
            &supp,
            "--source-root",
            env!("CARGO_MANIFEST_DIR"),
            &a,
            &b,
        ],
    );
    assert_code(&o, 23);
    // With --output, the terminal gets the text report.
    assert!(
        stdout(&o).contains("heapledger gate: FAILED"),
        "{}",
        stdout(&o)
    );
    let log: Value = serde_json::from_slice(&std::fs::read(&out).unwrap()).unwrap();
    assert_valid_sarif(&log);
    let run = &log["runs"][0];
    assert_eq!(run["tool"]["driver"]["name"], "heapledger");
    let rules: Vec<&str> = run["tool"]["driver"]["rules"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap())
        .collect();
    assert!(rules.contains(&"definitely-lost") && rules.contains(&"double-free"));
    let results = run["results"].as_array().unwrap();
    assert_eq!(results.len(), 6);
    for r in results {
        let fp = r["partialFingerprints"]["heapledger/v1"].as_str().unwrap();
        assert!(fp.len() >= 32, "{fp}");
        // Rule indexes point at the right rule.
        let idx = r["ruleIndex"].as_u64().unwrap() as usize;
        assert_eq!(rules[idx], r["ruleId"].as_str().unwrap());
    }
    let leak_two = results
        .iter()
        .find(|r| r["message"]["text"].as_str().unwrap().contains("leak_two"))
        .unwrap();
    assert_eq!(leak_two["suppressions"][0]["kind"], "external");
    let make_node = results
        .iter()
        .find(|r| {
            r["message"]["text"]
                .as_str()
                .unwrap()
                .contains("at make_node")
        })
        .unwrap();
    assert_eq!(make_node["level"], "error");
    let loc = &make_node["locations"][0]["physicalLocation"];
    // gate_app.c is under the source root: a relative URI.
    assert_eq!(loc["artifactLocation"]["uri"], "tests/data/gate_app.c");
    assert_eq!(loc["artifactLocation"]["uriBaseId"], "SRCROOT");
    assert!(loc["region"]["startLine"].as_u64().unwrap() > 0);
    let frames = make_node["stacks"][0]["frames"].as_array().unwrap();
    let names: Vec<&str> = frames
        .iter()
        .map(|f| {
            f["location"]["logicalLocations"][0]["fullyQualifiedName"]
                .as_str()
                .unwrap()
        })
        .collect();
    assert_eq!(names, ["make_node", "main"]);
    let df = results
        .iter()
        .find(|r| r["ruleId"] == "double-free")
        .unwrap();
    assert_eq!(df["stacks"].as_array().unwrap().len(), 3);
    assert_eq!(run["invocations"][0]["exitCode"], 23);
}

#[test]
fn sarif_with_a_baseline_marks_new_and_unchanged_results() {
    let s = Scratch::new("sarif-baseline");
    let old = s.write(
        "old.json",
        dump(
            62,
            "exit",
            "",
            &[block(100, &["leak_one", "main"], DEFINITE)],
            &[],
        ),
    );
    let (a, _) = sample_dumps(&s);
    let o = heapledger_in(
        &s.0,
        &["check", "--format", "sarif", "--baseline", &old, &a],
    );
    assert_code(&o, 23);
    let log: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_valid_sarif(&log);
    let states: Vec<(&str, &str)> = log["runs"][0]["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["message"]["text"].as_str().unwrap(),
                r["baselineState"].as_str().unwrap(),
            )
        })
        .collect();
    let unchanged: Vec<&&str> = states
        .iter()
        .filter(|(_, s)| *s == "unchanged")
        .map(|(m, _)| m)
        .collect();
    assert_eq!(unchanged.len(), 1, "{states:?}");
    assert!(unchanged[0].contains("100 bytes") && unchanged[0].contains("leak_one"));
    // Without --output, the verdict goes to stderr so a CI log still shows it.
    assert!(
        stderr(&o).contains("heapledger gate: FAILED"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn sarif_of_a_clean_run_and_of_report() {
    let s = Scratch::new("sarif-clean");
    let (a, b) = sample_dumps(&s);
    let o = heapledger_in(&s.0, &["check", "--format", "sarif", &b]);
    assert_code(&o, 0);
    let log: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_valid_sarif(&log);
    assert_eq!(log["runs"][0]["results"].as_array().unwrap().len(), 0);
    // `report --format sarif`: the default gate's findings, exit 0.
    let o = heapledger_in(&s.0, &["report", "--format", "sarif", &a]);
    assert_code(&o, 0);
    let log: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_valid_sarif(&log);
    assert_eq!(log["runs"][0]["results"].as_array().unwrap().len(), 6);
}

#[test]
fn junit_parses_with_one_suite_per_process() {
    let s = Scratch::new("junit");
    let (a, b) = sample_dumps(&s);
    let supp = s.write("x.supp", "double-free:release_twice\n");
    let o = heapledger_in(&s.0, &["report", "--format", "junit", &a, &b]);
    assert_code(&o, 0);
    let xml = stdout(&o);
    let doc = roxmltree::Document::parse(&xml).unwrap_or_else(|e| panic!("{e}:\n{xml}"));
    let root = doc.root_element();
    assert_eq!(root.tag_name().name(), "testsuites");
    let suites: Vec<_> = root
        .children()
        .filter(|n| n.has_tag_name("testsuite"))
        .collect();
    assert_eq!(suites.len(), 2);
    assert!(suites[0].attribute("name").unwrap().contains("pid 60"));
    assert_eq!(suites[0].attribute("failures"), Some("6"));
    let cases: Vec<_> = suites[0]
        .children()
        .filter(|n| n.has_tag_name("testcase"))
        .collect();
    assert_eq!(cases.len(), 6);
    let failure = cases[0]
        .children()
        .find(|n| n.has_tag_name("failure"))
        .unwrap();
    assert_eq!(failure.attribute("type"), Some("definitely-lost"));
    assert!(
        failure.text().unwrap().contains("make_node (gate_app.c:"),
        "{xml}"
    );
    assert!(cases[0].attribute("name").unwrap().contains("at make_node"));
    assert!(cases[0].attribute("file").unwrap().ends_with("gate_app.c"));
    // The clean process has one passing testcase.
    let clean: Vec<_> = suites[1]
        .children()
        .filter(|n| n.has_tag_name("testcase"))
        .collect();
    assert_eq!(clean.len(), 1);
    assert_eq!(clean[0].attribute("name"), Some("no leaks or heap errors"));
    assert_eq!(clean[0].children().filter(|n| n.is_element()).count(), 0);
    assert_eq!(root.attribute("tests"), Some("7"));

    // `check --format junit` with a suppression: that case is skipped, not failed.
    let o = heapledger_in(
        &s.0,
        &["check", "--format", "junit", "--suppressions", &supp, &a],
    );
    assert_code(&o, 23);
    let xml = stdout(&o);
    let doc = roxmltree::Document::parse(&xml).unwrap();
    let skipped: Vec<_> = doc
        .descendants()
        .filter(|n| n.has_tag_name("skipped"))
        .collect();
    assert_eq!(skipped.len(), 1);
    assert!(skipped[0]
        .attribute("message")
        .unwrap()
        .contains("double-free:release_twice"));
    assert_eq!(doc.root_element().attribute("failures"), Some("5"));
}

/// Parses an SVG (inferno's carries a DOCTYPE, which XML allows).
fn parse_svg(svg: &str) -> roxmltree::Document<'_> {
    let opts = roxmltree::ParsingOptions {
        allow_dtd: true,
        ..roxmltree::ParsingOptions::default()
    };
    let doc = roxmltree::Document::parse_with_options(svg, opts)
        .unwrap_or_else(|e| panic!("not well-formed XML ({e}):\n{svg}"));
    assert_eq!(doc.root_element().tag_name().name(), "svg");
    doc
}

#[test]
fn flamegraph_is_an_svg_naming_the_leaking_functions() {
    let s = Scratch::new("flame");
    let (a, b) = sample_dumps(&s);
    let o = heapledger_in(&s.0, &["flamegraph", &a]);
    assert_code(&o, 0);
    let svg = stdout(&o);
    let doc = parse_svg(&svg);
    assert_eq!(doc.root_element().tag_name().name(), "svg");
    let titles: Vec<String> = doc
        .descendants()
        .filter(|n| n.has_tag_name("title"))
        .filter_map(|n| n.text().map(str::to_owned))
        .collect();
    let joined = titles.join("\n");
    // Leaked bytes: make_node 300 + the 2 x 10 it holds, leak_two 200, leak_one 100; the reachable block is
    // left out.
    assert!(joined.contains("make_node (320 bytes"), "{joined}");
    assert!(joined.contains("leak_two (200 bytes"), "{joined}");
    assert!(joined.contains("main (620 bytes"), "{joined}");
    assert!(!joined.contains("__libc_start"), "{joined}");
    // --allocated counts the reachable block too; several dumps get a root frame each.
    let out = s.path("all.svg");
    let o = heapledger_in(
        &s.0,
        &[
            "flamegraph",
            "--allocated",
            "-o",
            out.to_str().unwrap(),
            &a,
            &b,
        ],
    );
    assert_code(&o, 0);
    let svg = std::fs::read_to_string(&out).unwrap();
    let doc = parse_svg(&svg);
    let titles: Vec<String> = doc
        .descendants()
        .filter(|n| n.has_tag_name("title"))
        .filter_map(|n| n.text().map(str::to_owned))
        .collect();
    let joined = titles.join("\n");
    assert!(joined.contains("leak_two (250 bytes"), "{joined}");
    assert!(joined.contains(" (pid 60) (670 bytes"), "{joined}");
    // Nothing leaked: still a valid SVG, saying so.
    let o = heapledger_in(&s.0, &["flamegraph", &b]);
    assert_code(&o, 0);
    let svg = stdout(&o);
    parse_svg(&svg);
    assert!(svg.contains("Nothing to show"));
}

#[test]
fn json_output_is_a_stable_contract() {
    let s = Scratch::new("json");
    let (a, _) = sample_dumps(&s);
    let o = heapledger_in(&s.0, &["check", "--format", "json", &a]);
    assert_code(&o, 23);
    let v = json(&o);
    assert_eq!(v["format"], "heapledger-check");
    assert_eq!(v["version"], 1);
    assert_eq!(v["passed"], false);
    assert_eq!(v["exit_code"], 23);
    assert_eq!(v["processes"][0]["pid"], 60);
    assert_eq!(v["processes"][0]["leaks_judged"], true);
    let f = &v["findings"][0];
    for key in [
        "kind",
        "status",
        "fingerprint",
        "process",
        "pid",
        "message",
        "count",
        "bytes",
        "allocator",
        "freed_with",
        "detail",
        "addr",
        "suppressed_by",
        "stacks",
    ] {
        assert!(f.get(key).is_some(), "{key} missing in {f}");
    }
    let totals = v["totals"].as_array().unwrap();
    let dl = totals
        .iter()
        .find(|t| t["kind"] == "definitely-lost")
        .unwrap();
    assert_eq!(
        (dl["count"].as_u64(), dl["bytes"].as_u64()),
        (Some(3), Some(600))
    );
    assert!(v["policy"]["fail_on"]
        .as_array()
        .unwrap()
        .contains(&Value::from("double-free")));
}
