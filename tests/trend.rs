//! Production post-mortem (issue #6), end to end with real programs under the real preload library:
//!
//! - a server that leaks a 30-byte strdup'd transaction id per request at 1000 requests/s, with snapshots on a
//!   timer and on a signal: `heapledger trend` names the strdup call site as the only growing site, at a rate
//!   within 20% of the true one, and does not flag a plateauing cache;
//! - the same server killed with SIGKILL: its last periodic snapshot is usable, and a truncated copy is
//!   skipped with a warning;
//! - a program that segfaults and one that aborts: a crash dump with the right live blocks, and the same
//!   signal and status as without the tracer;
//! - sampling: the estimate of live bytes from 1M allocations of mixed sizes is within 10% of the truth.

mod common;
use common::*;

use serde_json::Value;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

const SERVER: &str = "trend/server.c";
const CRASH: &str = "trend/crash.c";
const SAMPLE_MIX: &str = "trend/sample_mix.c";
const SAMPLE_OOM: &str = "trend/sample_oom.c";
const SIGABRT: i32 = 6;
const SIGKILL: i32 = 9;
const SIGSEGV: i32 = 11;

// ---- helpers --------------------------------------------------------------------------------------------------

/// A process started in the background, its stdout and stderr going to files in the scratch directory.
struct Background {
    child: Child,
    stdout: PathBuf,
    stderr: PathBuf,
}

impl Background {
    fn start(cmd: &mut Command, scratch: &Scratch, tag: &str) -> Background {
        let stdout = scratch.join(format!("{tag}.stdout"));
        let stderr = scratch.join(format!("{tag}.stderr"));
        cmd.stdin(Stdio::null())
            .stdout(std::fs::File::create(&stdout).unwrap())
            .stderr(std::fs::File::create(&stderr).unwrap());
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot spawn {cmd:?}: {e}"));
        Background {
            child,
            stdout,
            stderr,
        }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits for the process to end ([`TIMEOUT`] at most, then kills it and fails).
    fn wait(&mut self) -> Output {
        let deadline = Instant::now() + TIMEOUT;
        let status = loop {
            if let Some(s) = self.child.try_wait().expect("wait") {
                break s;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                panic!("still running after {TIMEOUT:?}: killed");
            }
            std::thread::sleep(Duration::from_millis(5));
        };
        self.output(status)
    }

    fn output(&self, status: ExitStatus) -> Output {
        Output {
            status,
            stdout: std::fs::read_to_string(&self.stdout).unwrap(),
            stderr: std::fs::read_to_string(&self.stderr).unwrap(),
        }
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        // A failing test must not leave a server running.
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Complete dump files (`*.json`; temporary files of a dump being written end in `.tmp.<pid>.<n>`) in `dir`,
/// sorted by snapshot number.
fn snapshot_files(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    // srv.<pid>.<n>.json
    v.sort_by_key(|p| {
        let name = p.file_stem().unwrap().to_string_lossy().into_owned();
        name.rsplit('.')
            .next()
            .unwrap()
            .parse::<u64>()
            .unwrap_or(u64::MAX)
    });
    v
}

/// Waits until `dir` holds at least `n` complete dumps.
fn wait_for_snapshots(dir: &Path, n: usize, server: &mut Background) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while snapshot_files(dir).len() < n {
        if let Some(status) = server.child.try_wait().unwrap() {
            panic!(
                "server ended before writing {n} snapshots: {:#?}",
                server.output(status)
            );
        }
        assert!(
            Instant::now() < deadline,
            "fewer than {n} snapshots after 60 s in {}",
            dir.display()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The server under the tracer, with periodic snapshots (and signal ones on SIGUSR2) to `dir/srv.%p.%n.json`.
fn traced_server(dir: &Path, interval: &str, args: &[&str]) -> Command {
    let mut cmd = traced_command(compile(SERVER, &[]), dir);
    cmd.env("HEAPLEDGER_OUT", dir.join("srv.%p.%n.json"))
        .env("HEAPLEDGER_INTERVAL", interval)
        .env("HEAPLEDGER_SIGNAL", "USR2")
        .args(args);
    cmd
}

/// `heapledger trend ARGS...`: its output, not checked.
fn trend(args: &[&std::ffi::OsStr]) -> Output {
    run(clean_command(cli()).arg("trend").args(args))
}

/// `heapledger trend --format json FILES...`, which must succeed; the parsed object and stderr.
fn trend_json(files: &[PathBuf]) -> (Value, String) {
    let mut args: Vec<&std::ffi::OsStr> = vec!["--format".as_ref(), "json".as_ref()];
    args.extend(files.iter().map(|p| p.as_os_str()));
    let out = trend(&args);
    assert_eq!(out.code(), 0, "heapledger trend failed: {out:#?}");
    let v = serde_json::from_str(&out.stdout)
        .unwrap_or_else(|e| panic!("trend output is not JSON ({e}): {}", out.stdout));
    (v, out.stderr)
}

/// The site whose frames include `function`.
fn site_with<'a>(trend: &'a Value, function: &str) -> &'a Value {
    trend["sites"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| {
            s["frames"]
                .as_array()
                .unwrap()
                .iter()
                .any(|f| f["function"] == function)
        })
        .unwrap_or_else(|| panic!("no site with {function}: {}", site_names(trend)))
}

/// `rank verdict rate name` of every site, for messages.
fn site_names(trend: &Value) -> String {
    trend["sites"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            format!(
                "  #{} {} {:.0} B/s R2 {:.3} {}",
                s["rank"],
                s["verdict"],
                s["rate_bytes_per_s"].as_f64().unwrap(),
                s["r2"].as_f64().unwrap(),
                s["name"]
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Asserts the top site is the strdup in make_txid, growing, and the only growing site; returns it.
fn assert_strdup_site_leads(trend: &Value) -> &Value {
    let txid = line_of(SERVER, "/* TXID_LINE */");
    let handle = line_of(SERVER, "/* HANDLE_LINE */");
    let sites = trend["sites"].as_array().unwrap();
    let top = &sites[0];
    assert_eq!(top["verdict"], "growing", "sites:\n{}", site_names(trend));
    assert_eq!(
        trend["verdicts"]["growing"],
        1,
        "only one growing site expected:\n{}",
        site_names(trend)
    );
    let name = top["name"].as_str().unwrap();
    let expected =
        format!("strdup ← make_txid (server.c:{txid}) ← handle_request (server.c:{handle})");
    assert_eq!(name, expected, "sites:\n{}", site_names(trend));
    assert_eq!(top["allocator"], "malloc");
    let frames = top["frames"].as_array().unwrap();
    assert_eq!(frames[0]["function"], "strdup");
    assert_frames(
        &Value::Array(frames[1..].to_vec()),
        &[
            ("make_txid", "server.c", txid),
            ("handle_request", "server.c", handle),
            ("main", "server.c", line_of(SERVER, "/* MAIN_LINE */")),
        ],
    );
    top
}

/// A minimal XML well-formedness check (tags balance, attributes quoted, no bare `&` or `<` in text); the
/// CLI's own unit tests parse the chart with a real XML parser.
fn assert_balanced_xml(text: &str) {
    let mut stack: Vec<String> = Vec::new();
    let mut rest = text;
    while let Some(open) = rest.find('<') {
        let between = &rest[..open];
        for (i, _) in between.match_indices('&') {
            let entity = &between[i..];
            assert!(
                ["&amp;", "&lt;", "&gt;", "&quot;", "&apos;"]
                    .iter()
                    .any(|e| entity.starts_with(e)),
                "bare & in text: {:?}",
                &entity[..entity.len().min(20)]
            );
        }
        let close = rest[open..].find('>').expect("unterminated tag") + open;
        let tag = &rest[open + 1..close];
        assert!(!tag.contains('<'), "< inside a tag: {tag:?}");
        assert_eq!(
            tag.matches('"').count() % 2,
            0,
            "unbalanced quotes: {tag:?}"
        );
        if tag.starts_with('?') || tag.starts_with('!') {
            // XML declaration, comment
        } else if let Some(name) = tag.strip_prefix('/') {
            assert_eq!(
                stack.pop().as_deref(),
                Some(name.trim()),
                "mismatched </{name}>"
            );
        } else if !tag.ends_with('/') {
            stack.push(tag.split_whitespace().next().unwrap().to_owned());
        }
        rest = &rest[close + 1..];
    }
    assert!(stack.is_empty(), "unclosed elements: {stack:?}");
}

// ---- the strdup server ----------------------------------------------------------------------------------------

#[test]
fn strdup_leak_is_the_only_growing_site_at_its_true_rate() {
    let scratch = Scratch::new("trend-server");
    let dir = scratch.dump_dir();
    // 3000 requests at 1000/s; the session table fills during the first 1000 requests (a visible rise, then
    // flat), the cache during the first 100.
    let mut server = Background::start(
        &mut traced_server(&dir, "0.3", &["3000", "1000", "1000"]),
        &scratch,
        "server",
    );
    // The library's handler is in place once a snapshot exists; then ask for two more by signal.
    wait_for_snapshots(&dir, 1, &mut server);
    for _ in 0..2 {
        std::thread::sleep(Duration::from_millis(700));
        let kill = run(Command::new("kill").args(["-USR2", &server.pid().to_string()]));
        assert!(kill.status.success(), "{kill:#?}");
    }
    let out = server.wait();
    out.assert_success();
    let requests = out.value("requests");
    assert_eq!(requests, 3000);
    let seconds = (out.value("end_ns") - out.value("start_ns")) as f64 / 1e9;
    let true_rate = out.value("txid_bytes") as f64 * requests as f64 / seconds;

    let files = snapshot_files(&dir);
    let dumps: Vec<Dump> = files.iter().map(|p| Dump::load(p)).collect();
    let reasons: Vec<&str> = dumps.iter().map(Dump::reason).collect();
    let count = |r: &str| reasons.iter().filter(|&&x| x == r).count();
    assert!(count("interval") >= 6, "{reasons:?}");
    assert_eq!(count("signal"), 2, "{reasons:?}");
    assert_eq!(reasons.last(), Some(&"exit"), "{reasons:?}");
    for d in dumps.iter().filter(|d| d.reason() == "signal") {
        assert_eq!(d.json["detail"], "SIGUSR2");
    }

    // JSON, with the chart.
    let svg = scratch.join("growth.svg");
    let mut args: Vec<&std::ffi::OsStr> = vec![
        "--format".as_ref(),
        "json".as_ref(),
        "--svg".as_ref(),
        svg.as_os_str(),
    ];
    // In reverse order: trend orders them itself.
    args.extend(files.iter().rev().map(|p| p.as_os_str()));
    let t = trend(&args);
    assert_eq!(t.code(), 0, "{t:#?}");
    assert_eq!(t.stderr, "", "no warnings expected");
    let v: Value = serde_json::from_str(&t.stdout).unwrap();
    assert_eq!(v["format"], "heapledger-trend");
    assert_eq!(v["time_axis"], "monotonic");
    assert_eq!(v["snapshots"].as_array().unwrap().len(), files.len());
    let numbers: Vec<u64> = v["snapshots"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| u(&s["snapshot"]))
        .collect();
    assert!(numbers.windows(2).all(|w| w[0] < w[1]), "{numbers:?}");

    let leak = assert_strdup_site_leads(&v);
    let rate = leak["rate_bytes_per_s"].as_f64().unwrap();
    assert!(
        (rate - true_rate).abs() <= 0.2 * true_rate,
        "rate {rate:.0} B/s, true {true_rate:.0} B/s"
    );
    let blocks_rate = leak["rate_blocks_per_s"].as_f64().unwrap();
    let true_blocks = requests as f64 / seconds;
    assert!(
        (blocks_rate - true_blocks).abs() <= 0.2 * true_blocks,
        "{blocks_rate:.1} blocks/s, true {true_blocks:.1}"
    );
    assert_eq!(u(&leak["last_bytes"]), 30 * requests);
    assert!(leak["r2"].as_f64().unwrap() > 0.95);

    // The cache (full after 100 requests) and the session table (rises for a second, then flat) are plateaus;
    // the random-walk queue is not growing.
    for f in ["cache_put", "session_touch"] {
        let s = site_with(&v, f);
        assert_eq!(s["verdict"], "plateau", "{f}:\n{}", site_names(&v));
    }
    assert_eq!(u(&site_with(&v, "cache_put")["last_bytes"]), 100 * 256);
    let sessions = site_with(&v, "session_touch");
    assert!(
        u(&sessions["first_bytes"]) < u(&sessions["last_bytes"]),
        "the session table rose: {sessions}"
    );
    assert_ne!(site_with(&v, "queue_step")["verdict"], "growing");

    // The chart: well-formed, names the top sites in its legend.
    let chart = std::fs::read_to_string(&svg).expect("chart written");
    assert!(chart.starts_with("<?xml"), "{chart}");
    assert!(chart.contains("<svg xmlns=\"http://www.w3.org/2000/svg\""));
    assert_balanced_xml(&chart);
    let legend = &chart[chart.find("class=\"legend\"").expect("legend")..];
    assert!(
        legend.contains("#1 growing, ") && legend.contains(leak["name"].as_str().unwrap()),
        "{legend}"
    );
    assert!(legend.contains("cache_put"), "{legend}");
    assert!(chart.matches("<polyline").count() >= 4);

    // Text: the ranked table and the growing site's stack.
    let mut args: Vec<&std::ffi::OsStr> = vec![];
    args.extend(files.iter().map(|p| p.as_os_str()));
    let text = trend(&args);
    assert_eq!(text.code(), 0, "{text:#?}");
    let row = text
        .stdout
        .lines()
        .find(|l| l.trim_start().starts_with("1  growing"))
        .unwrap_or_else(|| panic!("no growing first row:\n{}", text.stdout));
    assert!(row.ends_with(leak["name"].as_str().unwrap()), "{row}");
    assert!(
        text.stdout.contains(&format!(
            "    by make_txid (server.c:{})",
            line_of(SERVER, "/* TXID_LINE */")
        )),
        "{}",
        text.stdout
    );
    assert!(text.stdout.contains("signal (SIGUSR2)"), "{}", text.stdout);
}

// ---- killed with SIGKILL --------------------------------------------------------------------------------------

#[test]
fn sigkilled_server_leaves_its_last_periodic_snapshot_usable() {
    let scratch = Scratch::new("trend-kill");
    let dir = scratch.dump_dir();
    // Runs until killed.
    let mut server = Background::start(
        &mut traced_server(&dir, "0.2", &["0", "1000"]),
        &scratch,
        "server",
    );
    wait_for_snapshots(&dir, 6, &mut server);
    server.child.kill().unwrap();
    let out = server.wait();
    assert_eq!(out.status.signal(), Some(SIGKILL), "{out:#?}");

    // Nothing could be written at the kill: every complete file is a periodic snapshot, the last one included.
    let files = snapshot_files(&dir);
    assert!(files.len() >= 6, "{files:?}");
    for p in &files {
        let d = Dump::load(p);
        assert_eq!(d.reason(), "interval", "{}", p.display());
        d.assert_balanced();
    }
    let last = files.last().unwrap();
    let r = report(&[last.as_path()]);
    assert_eq!(r["reason"], "interval");
    let leaks = r["leaks"].as_array().unwrap();
    assert!(
        leaks
            .iter()
            .any(|l| functions(&l["frames"]).contains(&Some("make_txid".to_owned()))),
        "the leak is in the last snapshot's report: {r:#}"
    );

    let (v, stderr) = trend_json(&files);
    assert_eq!(stderr, "");
    let leak = assert_strdup_site_leads(&v);
    let rate = leak["rate_bytes_per_s"].as_f64().unwrap();
    assert!(
        (rate - 30_000.0).abs() <= 0.2 * 30_000.0,
        "rate {rate:.0} B/s, nominal 30000 B/s"
    );
    let last_reported = v["snapshots"].as_array().unwrap().last().unwrap();
    assert_eq!(last_reported["path"], last.to_str().unwrap());

    // A partial copy of the last snapshot (as a user might make of a file being written) is skipped with a
    // one-line warning; the rest is analysed as before.
    let text = std::fs::read(last).unwrap();
    let cut = dir.join(format!("srv.{}.99999.json", out_pid(&v)));
    std::fs::write(&cut, &text[..text.len() / 2]).unwrap();
    let mut with_cut = files.clone();
    with_cut.push(cut.clone());
    let (v2, stderr) = trend_json(&with_cut);
    let warning: Vec<&str> = stderr.lines().collect();
    assert_eq!(warning.len(), 1, "{stderr}");
    assert!(
        warning[0].starts_with("heapledger: skipping ")
            && warning[0].contains(cut.to_str().unwrap())
            && warning[0].contains("truncated"),
        "{stderr}"
    );
    assert_eq!(v2["skipped"][0]["path"], cut.to_str().unwrap());
    assert_eq!(v2["snapshots"].as_array().unwrap().len(), files.len());
    assert!(v2["warnings"]
        .as_array()
        .unwrap()
        .iter()
        .any(|w| w.as_str().unwrap().contains("99999")));
    assert_eq!(assert_strdup_site_leads(&v2)["name"], leak["name"]);
}

fn out_pid(trend: &Value) -> u64 {
    u(&trend["processes"][0]["pid"])
}

// ---- crashes --------------------------------------------------------------------------------------------------

/// Runs `crash MODE` natively and traced (core dumps off in both) and checks the traced run dies the same way
/// and leaves a crash dump with the right live blocks. Returns the dump.
fn check_crash(mode: &str, signal: i32, detail: &str) -> (Scratch, Dump) {
    let prog = compile(CRASH, &[]);
    let script = "ulimit -c 0; exec \"$0\" \"$@\"";
    let native = run(clean_command("/bin/sh")
        .args(["-c", script])
        .arg(&prog)
        .arg(mode));
    assert_eq!(native.status.signal(), Some(signal), "{native:#?}");

    let scratch = Scratch::new(&format!("trend-crash-{mode}"));
    let dir = scratch.dump_dir();
    let traced = run(traced_command("/bin/sh", &dir)
        .args(["-c", script])
        .arg(&prog)
        .arg(mode)
        .current_dir(&scratch.path));
    assert_eq!(
        traced.status.signal(),
        native.status.signal(),
        "{traced:#?}"
    );
    assert_eq!(traced.status.core_dumped(), native.status.core_dumped());
    assert_eq!(
        traced.status.into_raw(),
        native.status.into_raw(),
        "wait status"
    );
    assert_eq!(traced.stdout, native.stdout);
    assert_eq!(traced.stdout, "about to crash\n");

    let mut dumps = read_dumps(&dir);
    assert_eq!(
        dumps.len(),
        1,
        "one crash dump: {:?}",
        dumps.iter().map(|d| &d.path).collect::<Vec<_>>()
    );
    let d = dumps.remove(0);
    assert_eq!(d.reason(), "crash");
    assert_eq!(d.json["detail"], detail);
    assert_eq!(d.totals(), Totals::new(4, 1, 630, 200));
    assert_eq!(
        d.block_sizes(),
        [
            (30, "malloc".to_owned()),
            (100, "malloc".to_owned()),
            (300, "malloc".to_owned())
        ]
    );
    d.assert_balanced();

    // The report says it crashed, and of what.
    let text = run(clean_command(cli()).arg("report").arg(&d.path));
    assert_eq!(text.code(), 0, "{text:#?}");
    assert!(
        text.stdout
            .contains(&format!("dump reason: crash ({detail})")),
        "{}",
        text.stdout
    );
    assert!(
        text.stdout
            .contains("in use at crash: 430 bytes in 3 blocks"),
        "{}",
        text.stdout
    );
    let r = d.report();
    assert_eq!(
        (r["reason"].as_str(), r["detail"].as_str()),
        (Some("crash"), Some(detail))
    );
    let strdup = r["leaks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| u(&l["bytes"]) == 30)
        .expect("strdup block");
    assert_eq!(strdup["frames"][0]["function"], "strdup");
    assert!(frame_is(
        &strdup["frames"][1],
        "main",
        "crash.c",
        line_of(CRASH, "/* STRDUP_LINE */")
    ));
    (scratch, d)
}

#[test]
fn segfault_leaves_a_crash_dump_and_the_same_status() {
    let (_scratch, d) = check_crash("segv", SIGSEGV, "SIGSEGV");
    // One dump is not a trend: trend says so and fails.
    let out = trend(&[d.path.as_os_str()]);
    assert_eq!(out.code(), 2, "{out:#?}");
    assert!(out.stderr.contains("at least two snapshots"), "{out:#?}");
}

#[test]
fn abort_leaves_a_crash_dump_and_the_same_status() {
    check_crash("abort", SIGABRT, "SIGABRT");
}

// ---- sampling -------------------------------------------------------------------------------------------------

/// Builds and runs `source` traced with one sample per 64 KiB; its output and its only dump (the scratch folder
/// holding the dump lives as long as the first value).
fn run_sampled_64k(source: &str, tag: &str) -> (Scratch, Output, Dump) {
    let prog = compile(source, &[]);
    let scratch = Scratch::new(tag);
    let dir = scratch.dump_dir();
    let out = run(traced_command(&prog, &dir)
        .env("HEAPLEDGER_SAMPLE", "64KiB")
        .current_dir(&scratch.path));
    out.assert_success();
    let mut dumps = read_dumps(&dir);
    assert_eq!(dumps.len(), 1);
    let d = dumps.remove(0);
    (scratch, out, d)
}

#[test]
fn sampling_estimates_live_bytes_within_ten_percent() {
    // 64 KiB: about 1900 samples of the ~120 MB kept live, a standard error near 2.3%.
    let (_scratch, out, d) = run_sampled_64k(SAMPLE_MIX, "trend-sample");
    let (allocations, bytes_allocated) = (out.value("allocations"), out.value("bytes_allocated"));
    let (live_blocks, live_bytes) = (out.value("live_blocks"), out.value("live_bytes"));
    assert_eq!((allocations, live_blocks), (1_000_000, 125_000));

    // The sampling rate is stated in the dump...
    assert_eq!(u(&d.json["sample_bytes"]), 65_536);
    // ...counts stay exact (the program's heap use is all there is: its output goes through write(2)).
    let t = d.totals();
    assert_eq!(t.allocations, allocations);
    assert_eq!(t.bytes_allocated, bytes_allocated);
    assert_eq!(t.allocations - t.frees, live_blocks);
    // Only sampled blocks are listed.
    let listed = d.blocks().len() as u64;
    assert!(listed > 500 && listed < 10_000, "{listed} sampled blocks");

    // ...and in the report, whose live-site bytes are the scaled estimate.
    let r = d.report();
    assert_eq!(u(&r["sample_bytes"]), 65_536);
    assert!(
        r["warnings"]
            .as_array()
            .unwrap()
            .iter()
            .any(|w| w.as_str().unwrap().contains("one sample per 65536 bytes")),
        "{}",
        r["warnings"]
    );
    let estimate: u64 = r["leaks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| u(&l["bytes"]))
        .sum();
    let error = (estimate as f64 - live_bytes as f64) / live_bytes as f64;
    assert!(
        error.abs() < 0.10,
        "estimated {estimate} live bytes, true {live_bytes} ({:+.1}%)",
        error * 100.0
    );
    let text = run(clean_command(cli()).arg("report").arg(&d.path));
    assert!(
        text.stdout.contains("one sample per 65536 bytes"),
        "{}",
        text.stdout
    );
}

#[test]
fn sampling_counts_no_allocation_for_a_failed_malloc() {
    let (_scratch, out, d) = run_sampled_64k(SAMPLE_OOM, "trend-sample-oom");
    let made = out.value("allocations");
    // The address-space limit was reached: malloc returned NULL once.
    assert_eq!(out.value("failed"), 1);
    assert!(made > 100_000, "{made} blocks before the limit");
    let t = d.totals();
    assert_eq!(t.allocations, made, "{:?}", d.json["tracer"]);
    assert_eq!(t.bytes_allocated, 64 * made);
}
