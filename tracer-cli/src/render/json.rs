//! Machine-readable report. The key names and nesting here are a contract that tests and other tools rely on;
//! the structs below are declared in output order so the JSON reads in the same order as the text report.

use std::io::{self, Write};

use serde::Serialize;

use crate::analyse::{ErrorItem, LeakSite, Report};
use crate::symbolize::Frame;

/// Writes one report as a compact JSON object (no trailing newline, so the caller can put reports in an
/// array). Compact because reports of big programs run to hundreds of megabytes; `jq .` pretty-prints.
pub fn write_report(out: &mut impl Write, report: &Report) -> io::Result<()> {
    serde_json::to_writer(out, &JsonReport::from(report)).map_err(io::Error::from)
}

#[derive(Serialize)]
struct JsonReport<'a> {
    dumps: [&'a str; 1],
    pid: u64,
    reason: &'a str,
    detail: &'a str,
    totals: &'a heapledger_format::Totals,
    live: &'a heapledger_format::Live,
    errors: JsonErrors<'a>,
    leaks: Vec<JsonLeak<'a>>,
    tracer: &'a heapledger_format::Tracer,
    sample_bytes: u64,
    warnings: &'a [String],
    /// Present only in crash dumps.
    #[serde(skip_serializing_if = "Option::is_none")]
    crash: Option<JsonCrash<'a>>,
}

#[derive(Serialize)]
struct JsonCrash<'a> {
    signal: u64,
    name: &'a str,
    code: i64,
    addr: u64,
    tid: u64,
    frames: Vec<JsonFrame<'a>>,
}

#[derive(Serialize)]
struct JsonErrors<'a> {
    double_free: u64,
    invalid_free: u64,
    mismatched_free: u64,
    cross_heap_free: u64,
    items: Vec<JsonError<'a>>,
}

#[derive(Serialize)]
struct JsonError<'a> {
    kind: &'static str,
    addr: u64,
    size: u64,
    allocator: &'a str,
    freed_with: &'a str,
    detail: &'a str,
    stacks: JsonErrorStacks<'a>,
}

#[derive(Serialize)]
struct JsonErrorStacks<'a> {
    free: Vec<JsonFrame<'a>>,
    alloc: Option<Vec<JsonFrame<'a>>>,
    first_free: Option<Vec<JsonFrame<'a>>>,
}

#[derive(Serialize)]
struct JsonLeak<'a> {
    blocks: u64,
    bytes: u64,
    allocator: &'a str,
    frames: Vec<JsonFrame<'a>>,
}

#[derive(Serialize)]
struct JsonFrame<'a> {
    address: u64,
    module: Option<&'a str>,
    offset: u64,
    function: Option<&'a str>,
    file: Option<&'a str>,
    line: Option<u32>,
    inlined: bool,
}

impl<'a> From<&'a Report> for JsonReport<'a> {
    fn from(r: &'a Report) -> Self {
        let c = &r.error_counts;
        JsonReport {
            dumps: [&r.dump_path],
            pid: r.pid,
            reason: &r.reason,
            detail: &r.detail,
            totals: &r.totals,
            live: &r.live,
            errors: JsonErrors {
                double_free: c.double_free,
                invalid_free: c.invalid_free,
                mismatched_free: c.mismatched_free,
                cross_heap_free: c.cross_heap_free,
                items: r.errors.iter().map(JsonError::from).collect(),
            },
            leaks: r.leaks.iter().map(JsonLeak::from).collect(),
            tracer: &r.tracer,
            sample_bytes: r.sample_bytes,
            warnings: &r.warnings,
            crash: r.crash.as_ref().map(|c| JsonCrash {
                signal: c.signal,
                name: &c.name,
                code: c.code,
                addr: c.addr,
                tid: c.tid,
                frames: frames(&c.frames),
            }),
        }
    }
}

impl<'a> From<&'a ErrorItem> for JsonError<'a> {
    fn from(e: &'a ErrorItem) -> Self {
        JsonError {
            kind: e.kind.name(),
            addr: e.addr,
            size: e.size,
            allocator: &e.allocator,
            freed_with: &e.freed_with,
            detail: &e.detail,
            stacks: JsonErrorStacks {
                free: frames(&e.free),
                alloc: e.alloc.as_deref().map(frames),
                first_free: e.first_free.as_deref().map(frames),
            },
        }
    }
}

impl<'a> From<&'a LeakSite> for JsonLeak<'a> {
    fn from(s: &'a LeakSite) -> Self {
        JsonLeak {
            blocks: s.blocks,
            bytes: s.bytes,
            allocator: &s.allocator,
            frames: frames(&s.frames),
        }
    }
}

fn frames(frames: &[Frame]) -> Vec<JsonFrame<'_>> {
    frames
        .iter()
        .map(|f| JsonFrame {
            address: f.address,
            module: f.module.as_deref(),
            offset: f.offset,
            function: f.function.as_deref(),
            file: f.file.as_deref(),
            line: f.line,
            inlined: f.inlined,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    /// What `heapledger report --format json` prints for `reports`.
    fn render(reports: &[Report], as_array: bool) -> String {
        let mut out = Vec::new();
        if as_array {
            out.push(b'[');
        }
        for (i, r) in reports.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            write_report(&mut out, r).unwrap();
        }
        if as_array {
            out.push(b']');
        }
        String::from_utf8(out).unwrap()
    }

    fn example_report() -> Report {
        let text = include_str!("../../tests/data/small.json");
        let dump = heapledger_format::parse(text.as_bytes()).unwrap();
        let mut sym = crate::symbolize::Symbolizer::new(&dump);
        crate::analyse::analyse(&dump, "small.json", &mut sym, Default::default())
    }

    #[test]
    fn contract_keys() {
        let text = render(&[example_report()], false);
        let v: Value = serde_json::from_str(&text).unwrap();
        // serde_json's Value sorts keys, so the order is checked on the text.
        assert_in_order(
            &text,
            &[
                "\"dumps\":",
                "\"pid\":",
                "\"reason\":",
                "\"detail\":",
                "\"totals\":",
                "\"live\":",
                "\"errors\":",
                "\"leaks\":",
                "\"tracer\":",
                "\"sample_bytes\":",
                "warnings",
            ],
        );
        assert_eq!(v["dumps"], serde_json::json!(["small.json"]));
        assert_eq!(v["totals"]["bytes_allocated"], 1136);
        assert_eq!(v["live"]["blocks"], 4);
        assert_eq!(v["errors"]["double_free"], 1);
        assert_eq!(v["errors"]["cross_heap_free"], 0);
        let item = &v["errors"]["items"][0];
        assert_eq!(item["kind"], "double_free");
        assert!(item["stacks"]["free"].is_array());
        assert!(item["stacks"]["first_free"].is_array());
        assert!(v["errors"]["items"][1]["stacks"]["first_free"].is_null());
        let leak = &v["leaks"][0];
        assert_eq!(
            (leak["blocks"].as_u64(), leak["bytes"].as_u64()),
            (Some(1), Some(1000))
        );
        assert_eq!(leak["allocator"], "malloc");
        let frame = leak["frames"][0].as_object().unwrap();
        assert_eq!(frame.len(), 7);
        let frame_keys = [
            "address", "module", "offset", "function", "file", "line", "inlined",
        ];
        let quoted: Vec<String> = frame_keys.iter().map(|k| format!("\"{k}\":")).collect();
        let leaks_at = text.find("\"leaks\":").unwrap();
        assert_in_order(
            &text[leaks_at..],
            &quoted.iter().map(String::as_str).collect::<Vec<_>>(),
        );
        assert_eq!(frame["module"], "/nonexistent/heapledger-example/app");
        assert_eq!(frame["offset"], 4400);
        assert!(frame["function"].is_null() && frame["line"].is_null());
        assert_eq!(v["tracer"]["memory_bytes"], 1048576);
        assert!(v["warnings"]
            .as_array()
            .unwrap()
            .iter()
            .any(|w| w.as_str().unwrap().contains("not found")));
    }

    /// Asserts the `needles` first occur in `text` in this order.
    fn assert_in_order(text: &str, needles: &[&str]) {
        let positions: Vec<usize> = needles
            .iter()
            .map(|n| text.find(n).unwrap_or_else(|| panic!("{n} missing")))
            .collect();
        assert!(
            positions.windows(2).all(|w| w[0] < w[1]),
            "{needles:?} out of order in {text}"
        );
    }

    #[test]
    fn several_reports_make_an_array() {
        let v: Value =
            serde_json::from_str(&render(&[example_report(), example_report()], true)).unwrap();
        assert_eq!(v.as_array().map(Vec::len), Some(2));
    }
}
