//! `heapledger trend --format json`: one object whose keys, in this order, are a contract documented in
//! docs/post-mortem.md. Series (`bytes`, `blocks`) are aligned with `snapshots`.

use std::io::{self, Write};

use serde::Serialize;

use crate::symbolize::Frame;
use crate::trend::{Site, Snapshot, Trend};

/// Value of the `format` key.
pub const FORMAT: &str = "heapledger-trend";
/// Value of the `version` key; bumped by any change an existing reader would misread.
pub const VERSION: u64 = 1;

/// Writes the trend as one compact JSON object and a newline.
pub fn write(out: &mut impl Write, trend: &Trend) -> io::Result<()> {
    serde_json::to_writer(&mut *out, &JsonTrend::from(trend)).map_err(io::Error::from)?;
    out.write_all(b"\n")
}

#[derive(Serialize)]
struct JsonTrend<'a> {
    format: &'static str,
    version: u64,
    time_axis: &'static str,
    duration_s: f64,
    sample_bytes: u64,
    processes: Vec<JsonProcess<'a>>,
    snapshots: Vec<JsonSnapshot<'a>>,
    skipped: Vec<JsonSkipped<'a>>,
    live: JsonLive,
    verdicts: JsonVerdicts,
    sites: Vec<JsonSite<'a>>,
    warnings: &'a [String],
}

#[derive(Serialize)]
struct JsonProcess<'a> {
    pid: u64,
    exe: &'a str,
    cmdline: &'a [String],
    start_time_ns: u64,
    snapshots: usize,
}

#[derive(Serialize)]
struct JsonSnapshot<'a> {
    path: &'a str,
    pid: u64,
    snapshot: u64,
    reason: &'a str,
    detail: &'a str,
    time_ns: u64,
    monotonic_ns: u64,
    t_s: f64,
    live: &'a heapledger_format::Live,
    sample_bytes: u64,
}

#[derive(Serialize)]
struct JsonSkipped<'a> {
    path: &'a str,
    problem: &'a str,
}

#[derive(Serialize)]
struct JsonLive {
    rate_bytes_per_s: f64,
    r2: f64,
    first_bytes: u64,
    last_bytes: u64,
}

#[derive(Serialize)]
struct JsonVerdicts {
    growing: usize,
    plateau: usize,
    noise: usize,
}

#[derive(Serialize)]
struct JsonSite<'a> {
    rank: usize,
    name: &'a str,
    verdict: &'static str,
    allocator: &'a str,
    rate_bytes_per_s: f64,
    rate_blocks_per_s: f64,
    r2: f64,
    growth_bytes: f64,
    last_third_rate_bytes_per_s: f64,
    intervals: usize,
    rose: usize,
    fell: usize,
    first_bytes: u64,
    last_bytes: u64,
    peak_bytes: u64,
    mean_bytes: f64,
    first_blocks: u64,
    last_blocks: u64,
    noise_floor_bytes: u64,
    bytes: Vec<u64>,
    blocks: Vec<u64>,
    frames: Vec<JsonFrame<'a>>,
}

/// The same 7 keys as a frame of `heapledger report --format json`.
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

/// Estimates are rounded to whole bytes and blocks; exact series are integers already.
fn whole(v: f64) -> u64 {
    v.round().max(0.0) as u64
}

impl<'a> From<&'a Trend> for JsonTrend<'a> {
    fn from(t: &'a Trend) -> Self {
        let n = t.snapshots.len();
        let [growing, plateau, noise] = t.verdict_counts();
        JsonTrend {
            format: FORMAT,
            version: VERSION,
            time_axis: t.time_axis.name(),
            duration_s: t.duration,
            sample_bytes: t.sample_bytes,
            processes: t
                .processes
                .iter()
                .map(|p| JsonProcess {
                    pid: p.pid,
                    exe: &p.exe,
                    cmdline: &p.cmdline,
                    start_time_ns: p.start_time_ns,
                    snapshots: p.snapshots,
                })
                .collect(),
            snapshots: t.snapshots.iter().map(JsonSnapshot::from).collect(),
            skipped: t
                .skipped
                .iter()
                .map(|s| JsonSkipped {
                    path: &s.path,
                    problem: &s.problem,
                })
                .collect(),
            live: JsonLive {
                rate_bytes_per_s: t.live.rate,
                r2: t.live.r2,
                first_bytes: t.snapshots[0].live.bytes,
                last_bytes: t.snapshots[n - 1].live.bytes,
            },
            verdicts: JsonVerdicts {
                growing,
                plateau,
                noise,
            },
            sites: t
                .sites
                .iter()
                .enumerate()
                .map(|(i, s)| JsonSite::new(i + 1, s))
                .collect(),
            warnings: &t.warnings,
        }
    }
}

impl<'a> From<&'a Snapshot> for JsonSnapshot<'a> {
    fn from(s: &'a Snapshot) -> Self {
        JsonSnapshot {
            path: &s.path,
            pid: s.pid,
            snapshot: s.snapshot,
            reason: &s.reason,
            detail: &s.detail,
            time_ns: s.time_ns,
            monotonic_ns: s.monotonic_ns,
            t_s: s.t,
            live: &s.live,
            sample_bytes: s.sample_bytes,
        }
    }
}

impl<'a> JsonSite<'a> {
    fn new(rank: usize, s: &'a Site) -> Self {
        let n = s.bytes.len();
        JsonSite {
            rank,
            name: &s.name,
            verdict: s.verdict.name(),
            allocator: &s.allocator,
            rate_bytes_per_s: s.fit.rate,
            rate_blocks_per_s: s.blocks_rate,
            r2: s.fit.r2,
            growth_bytes: s.fit.growth,
            last_third_rate_bytes_per_s: s.fit.last_third_rate,
            intervals: s.intervals,
            rose: s.grew,
            fell: s.shrank,
            first_bytes: whole(s.bytes[0]),
            last_bytes: whole(s.bytes[n - 1]),
            peak_bytes: whole(s.peak_bytes),
            mean_bytes: s.mean_bytes,
            first_blocks: whole(s.blocks[0]),
            last_blocks: whole(s.blocks[n - 1]),
            noise_floor_bytes: whole(s.floor),
            bytes: s.bytes.iter().copied().map(whole).collect(),
            blocks: s.blocks.iter().copied().map(whole).collect(),
            frames: s.frames.iter().map(frame).collect(),
        }
    }
}

fn frame(f: &Frame) -> JsonFrame<'_> {
    JsonFrame {
        address: f.address,
        module: f.module.as_deref(),
        offset: f.offset,
        function: f.function.as_deref(),
        file: f.file.as_deref(),
        line: f.line,
        inlined: f.inlined,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    #[test]
    fn contract_keys_and_values() {
        let trend = crate::render::trend_svg::tests::example();
        let mut out = Vec::new();
        write(&mut out, &trend).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(text.ends_with("}\n") && text.lines().count() == 1);
        let v: Value = serde_json::from_str(&text).unwrap();
        let keys = [
            "format",
            "version",
            "time_axis",
            "duration_s",
            "sample_bytes",
            "processes",
            "snapshots",
            "skipped",
            "live",
            "verdicts",
            "sites",
            "warnings",
        ];
        // Top-level keys in this order (each searched after the previous one; `live` also occurs earlier).
        let mut at = 0;
        for k in keys {
            let found = text[at..].find(&format!("\"{k}\":"));
            assert!(found.is_some(), "{k} missing or out of order in {text}");
            at += found.unwrap();
        }
        assert_eq!(v.as_object().unwrap().len(), keys.len());
        assert_eq!(v["format"], FORMAT);
        assert_eq!(v["version"], 1);
        assert_eq!(v["time_axis"], "monotonic");
        assert_eq!(v["snapshots"].as_array().unwrap().len(), 6);
        assert_eq!(v["snapshots"][5]["reason"], "crash");
        assert_eq!(v["snapshots"][5]["detail"], "SIGSEGV");
        assert_eq!(v["verdicts"]["growing"], 1);
        let site = &v["sites"][0];
        assert_eq!(site["rank"], 1);
        assert_eq!(site["verdict"], "growing");
        assert_eq!(
            site["name"],
            "strdup ← make_txid (server.c:42) ← handle_request (server.c:97)"
        );
        assert!((site["rate_bytes_per_s"].as_f64().unwrap() - 30_000.0).abs() < 1.0);
        assert_eq!(site["bytes"].as_array().unwrap().len(), 6);
        assert_eq!(site["frames"][1]["function"], "make_txid");
        assert_eq!(site["frames"][1]["line"], 42);
        assert_eq!(site["frames"][0].as_object().unwrap().len(), 7);
    }
}
