//! `heapledger trend --svg FILE`: a line chart of the live bytes of the top sites over time, with a legend
//! naming each site, its verdict and rate, and markers for crash dumps and process starts.
//!
//! Built by hand rather than with a plotting crate: the chart is a few dozen elements (axes, polylines, text),
//! a plotting crate would bring a font stack or size text without one, and writing the XML ourselves keeps the
//! output small, deterministic (tests compare it) and free of new dependencies.

use std::fmt::Write as _;

use crate::render::trend_text::rate;
use crate::trend::{Trend, Verdict};

const WIDTH: f64 = 980.0;
const LEFT: f64 = 80.0;
const RIGHT: f64 = 30.0;
const TOP: f64 = 64.0;
const PLOT_H: f64 = 360.0;
const LEGEND_ROW: f64 = 20.0;
/// Markers on every snapshot up to this many snapshots; beyond, lines only.
const MAX_MARKERS: usize = 60;
/// Legend names longer than this are cut.
const MAX_NAME: usize = 110;
/// Tableau 10: distinguishable, and readable for most colour-blind people.
const PALETTE: [&str; 10] = [
    "#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948", "#b07aa1", "#ff9da7",
    "#9c755f", "#bab0ac",
];

/// The chart of the first `top` ranked sites, as a complete SVG document.
pub fn render(trend: &Trend, top: usize) -> String {
    let sites = &trend.sites[..trend.sites.len().min(top)];
    let n = trend.snapshots.len();
    let plot_w = WIDTH - LEFT - RIGHT;
    let legend_top = TOP + PLOT_H + 62.0;
    let height = legend_top + LEGEND_ROW * sites.len().max(1) as f64 + 16.0;

    // Axes: time in s / min / h, bytes in the unit of the largest value.
    let (t_div, t_unit) = match trend.duration {
        d if d >= 3.0 * 3600.0 => (3600.0, "h"),
        d if d >= 300.0 => (60.0, "min"),
        _ => (1.0, "s"),
    };
    let t_max = (trend.duration / t_div).max(f64::MIN_POSITIVE);
    let t_step = nice_step(t_max);
    let t_axis = if trend.duration > 0.0 { t_max } else { 1.0 };
    let y_peak = sites
        .iter()
        .flat_map(|s| s.bytes.iter().copied())
        .fold(0.0, f64::max);
    let (y_div, y_unit) = byte_unit(y_peak);
    let y_step = nice_step((y_peak / y_div).max(1.0));
    let y_axis = ((y_peak / y_div) / y_step).ceil().max(1.0) * y_step;
    let x = |t: f64| LEFT + (t / t_div) / t_axis * plot_w;
    let y = |v: f64| TOP + PLOT_H - (v / y_div) / y_axis * PLOT_H;

    let mut s = String::new();
    let _ = writeln!(s, r#"<?xml version="1.0" encoding="UTF-8"?>"#);
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" viewBox="0 0 {WIDTH} {height}" font-family="sans-serif" font-size="12">"#
    );
    let approx = if trend.sample_bytes > 0 {
        " (estimated from samples)"
    } else {
        ""
    };
    let title = format!(
        "Live bytes per call site{approx}: {n} snapshots over {}",
        crate::render::trend_text::seconds(trend.duration)
    );
    let _ = writeln!(s, "<title>heapledger trend: {}</title>", esc(&title));
    let _ = writeln!(s, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(
        s,
        r#"<text x="{LEFT}" y="24" font-size="16" font-weight="bold">{}</text>"#,
        esc(&title)
    );
    let procs: Vec<String> = trend
        .processes
        .iter()
        .map(|p| {
            let cmd = if p.cmdline.is_empty() {
                p.exe.clone()
            } else {
                p.cmdline.join(" ")
            };
            format!("pid {}: {cmd}", p.pid)
        })
        .collect();
    let [growing, plateau, noise] = trend.verdict_counts();
    let subtitle = format!(
        "{}; {growing} growing, {plateau} plateau, {noise} noise; top {} of {} sites",
        cut(&procs.join(", "), 80),
        sites.len(),
        trend.sites.len()
    );
    let _ = writeln!(
        s,
        r##"<text x="{LEFT}" y="44" fill="#555">{}</text>"##,
        esc(&subtitle)
    );

    // Grid and axes.
    let _ = writeln!(s, r##"<g class="y-axis" stroke="#ddd">"##);
    let mut v = 0.0;
    while v <= y_axis + y_step * 1e-9 {
        let py = y(v * y_div);
        let _ = writeln!(
            s,
            r##"<line x1="{LEFT}" y1="{py:.1}" x2="{:.1}" y2="{py:.1}"/><text x="{:.1}" y="{:.1}" text-anchor="end" stroke="none" fill="#333">{}</text>"##,
            LEFT + plot_w,
            LEFT - 6.0,
            py + 4.0,
            esc(&tick_label(v, y_step, y_unit))
        );
        v += y_step;
    }
    let _ = writeln!(s, "</g>");
    let _ = writeln!(s, r##"<g class="x-axis" stroke="#ddd">"##);
    let mut t = 0.0;
    while t <= t_axis + t_step * 1e-9 {
        let px = x(t * t_div);
        let _ = writeln!(
            s,
            r##"<line x1="{px:.1}" y1="{TOP}" x2="{px:.1}" y2="{:.1}"/><text x="{px:.1}" y="{:.1}" text-anchor="middle" stroke="none" fill="#333">{}</text>"##,
            TOP + PLOT_H,
            TOP + PLOT_H + 16.0,
            esc(&tick_label(t, t_step, ""))
        );
        t += t_step;
    }
    let _ = writeln!(s, "</g>");
    let _ = writeln!(
        s,
        r##"<path d="M{LEFT} {TOP}V{:.1}H{:.1}" fill="none" stroke="#333"/>"##,
        TOP + PLOT_H,
        LEFT + plot_w
    );
    let axis_name = match trend.time_axis {
        crate::trend::TimeAxis::Monotonic => "since the first snapshot",
        crate::trend::TimeAxis::Realtime => "wall clock, since the first snapshot",
    };
    let _ = writeln!(
        s,
        r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">time ({t_unit}, {axis_name})</text>"#,
        LEFT + plot_w / 2.0,
        TOP + PLOT_H + 36.0
    );
    let _ = writeln!(
        s,
        r#"<text transform="translate(18 {:.1}) rotate(-90)" text-anchor="middle">live bytes ({y_unit})</text>"#,
        TOP + PLOT_H / 2.0
    );

    // Crash dumps and the start of each process after the first.
    let _ = writeln!(s, r#"<g class="events">"#);
    for (i, snap) in trend.snapshots.iter().enumerate() {
        let px = x(snap.t);
        let new_process = i > 0 && trend.snapshots[i - 1].process != snap.process;
        let (label, colour) = if snap.reason == "crash" {
            let what = if snap.detail.is_empty() {
                "crash".to_owned()
            } else {
                format!("crash ({})", snap.detail)
            };
            (what, "#c00")
        } else if new_process {
            (format!("pid {}", snap.pid), "#888")
        } else {
            continue;
        };
        let _ = writeln!(
            s,
            r#"<line x1="{px:.1}" y1="{TOP}" x2="{px:.1}" y2="{:.1}" stroke="{colour}" stroke-dasharray="4 3"/><text x="{:.1}" y="{:.1}" fill="{colour}" text-anchor="end">{}</text>"#,
            TOP + PLOT_H,
            px - 3.0,
            TOP + 12.0,
            esc(&label)
        );
    }
    let _ = writeln!(s, "</g>");

    // One polyline per site and process, drawn biggest rank last so the top site is on top.
    let _ = writeln!(s, r#"<g class="series" fill="none">"#);
    let segments = process_segments(trend);
    for (rank, site) in sites.iter().enumerate().rev() {
        let colour = PALETTE[rank % PALETTE.len()];
        let width = if site.verdict == Verdict::Growing {
            3.0
        } else {
            1.5
        };
        let _ = writeln!(
            s,
            r#"<g stroke="{colour}" stroke-width="{width}"><title>#{} {} {}: {}</title>"#,
            rank + 1,
            site.verdict.name(),
            esc(&rate(site.fit.rate)),
            esc(&site.name)
        );
        for r in &segments {
            let points: Vec<String> = r
                .clone()
                .map(|i| format!("{:.1},{:.1}", x(trend.snapshots[i].t), y(site.bytes[i])))
                .collect();
            let _ = writeln!(s, r#"<polyline points="{}"/>"#, points.join(" "));
        }
        if n <= MAX_MARKERS {
            for i in 0..n {
                let _ = writeln!(
                    s,
                    r#"<circle cx="{:.1}" cy="{:.1}" r="2.5" fill="{colour}" stroke="none"/>"#,
                    x(trend.snapshots[i].t),
                    y(site.bytes[i])
                );
            }
        }
        let _ = writeln!(s, "</g>");
    }
    let _ = writeln!(s, "</g>");

    // Legend.
    let _ = writeln!(s, r#"<g class="legend">"#);
    if sites.is_empty() {
        let _ = writeln!(
            s,
            r#"<text x="{LEFT}" y="{:.1}">no live blocks in any snapshot</text>"#,
            legend_top + 12.0
        );
    }
    for (rank, site) in sites.iter().enumerate() {
        let colour = PALETTE[rank % PALETTE.len()];
        let row = legend_top + rank as f64 * LEGEND_ROW;
        let label = format!(
            "#{} {}, {}: {}",
            rank + 1,
            site.verdict.name(),
            rate(site.fit.rate),
            cut(&site.name, MAX_NAME)
        );
        let weight = if site.verdict == Verdict::Growing {
            r#" font-weight="bold""#
        } else {
            ""
        };
        let _ = writeln!(
            s,
            r#"<rect x="{LEFT}" y="{:.1}" width="18" height="10" fill="{colour}"/><text x="{:.1}" y="{:.1}"{weight}>{}</text>"#,
            row + 2.0,
            LEFT + 26.0,
            row + 11.0,
            esc(&label)
        );
    }
    let _ = writeln!(s, "</g>");
    let _ = writeln!(s, "</svg>");
    s
}

/// Index ranges of each process's snapshots.
fn process_segments(trend: &Trend) -> Vec<std::ops::Range<usize>> {
    let mut out: Vec<std::ops::Range<usize>> = Vec::new();
    for (i, snap) in trend.snapshots.iter().enumerate() {
        match out.last_mut() {
            Some(r) if trend.snapshots[r.start].process == snap.process => r.end = i + 1,
            _ => out.push(i..i + 1),
        }
    }
    out
}

/// A 1-2-5 step giving five to ten ticks up to `max`.
fn nice_step(max: f64) -> f64 {
    let raw = max / 6.0;
    let mag = 10f64.powf(raw.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .iter()
        .map(|m| m * mag)
        .find(|&s| s >= raw)
        .unwrap_or(10.0 * mag)
}

/// Divisor and name of the binary unit for values up to `max` bytes.
fn byte_unit(max: f64) -> (f64, &'static str) {
    let units = [
        (1.0, "B"),
        (1024.0, "KiB"),
        (1048576.0, "MiB"),
        (1073741824.0, "GiB"),
    ];
    units
        .iter()
        .rev()
        .copied()
        .find(|&(d, _)| max >= d)
        .unwrap_or(units[0])
}

/// A tick value with as many decimals as the step needs.
fn tick_label(v: f64, step: f64, unit: &str) -> String {
    let decimals = if step >= 1.0 {
        0
    } else {
        (-step.log10().floor()) as usize
    };
    let space = if unit.is_empty() { "" } else { " " };
    format!("{v:.decimals$}{space}{unit}")
}

fn cut(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_owned()
    } else {
        let mut c: String = s.chars().take(max - 1).collect();
        c.push('…');
        c
    }
}

/// Escapes text for XML character data and attribute values.
fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            // Characters XML 1.0 forbids even escaped.
            c if (c as u32) < 0x20 && !matches!(c, '\t' | '\n' | '\r') => out.push('?'),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::symbolize::Frame;
    use crate::trend::{fit, Process, Site, Snapshot, TimeAxis, Trend, Verdict};
    use heapledger_format::Live;
    use std::rc::Rc;

    fn frame(function: &str, module: &str, file: Option<&str>, line: Option<u32>) -> Frame {
        Frame {
            address: 0x5555_0000_1222,
            module: Some(Rc::from(module)),
            offset: 0x1222,
            function: Some(Rc::from(function)),
            file: file.map(Rc::from),
            line,
            inlined: false,
        }
    }

    fn site(name: &str, verdict: Verdict, bytes: Vec<f64>, frames: Vec<Frame>, t: &[f64]) -> Site {
        let f = fit(t, &bytes, std::slice::from_ref(&(0..t.len())));
        Site {
            name: name.to_owned(),
            allocator: "malloc".into(),
            frames,
            blocks: bytes.iter().map(|b| (b / 30.0).round()).collect(),
            fit: f,
            blocks_rate: f.rate / 30.0,
            intervals: t.len() - 1,
            grew: if verdict == Verdict::Growing {
                t.len() - 1
            } else {
                1
            },
            shrank: 0,
            mean_bytes: bytes.iter().sum::<f64>() / bytes.len() as f64,
            peak_bytes: bytes.iter().copied().fold(0.0, f64::max),
            floor: 0.0,
            verdict,
            bytes,
        }
    }

    /// A small trend: a strdup leak at 30000 B/s, a plateauing cache, a noisy queue; ends in a crash.
    pub(crate) fn example() -> Trend {
        let t: Vec<f64> = (0..6).map(|i| i as f64 * 0.5).collect();
        let app = "/srv/server";
        let libc = "/usr/lib/x86_64-linux-gnu/libc.so.6";
        let leak: Vec<f64> = t.iter().map(|t| 9000.0 + 30_000.0 * t).collect();
        let sites = vec![
            site(
                "strdup ← make_txid (server.c:42) ← handle_request (server.c:97)",
                Verdict::Growing,
                leak,
                vec![
                    frame("strdup", libc, Some("strdup.c"), Some(42)),
                    frame("make_txid", app, Some("/src/server.c"), Some(42)),
                    frame("handle_request", app, Some("/src/server.c"), Some(97)),
                    frame("main", app, Some("/src/server.c"), Some(120)),
                ],
                &t,
            ),
            site(
                "malloc ← cache_put (server.c:55) ← handle_request (server.c:99)",
                Verdict::Plateau,
                vec![25_600.0; 6],
                vec![frame("cache_put", app, Some("/src/server.c"), Some(55))],
                &t,
            ),
            site(
                "new ← operator<< <Q&A> \"x\" ← 'q'",
                Verdict::Noise,
                vec![1500.0, 300.0, 2800.0, 900.0, 2000.0, 100.0],
                vec![frame("operator<< <Q&A>", app, None, None)],
                &t,
            ),
        ];
        let snapshots = t
            .iter()
            .enumerate()
            .map(|(i, &t)| Snapshot {
                path: format!("srv.4242.{i}.json"),
                process: 0,
                pid: 4242,
                snapshot: i as u64,
                reason: match i {
                    5 => "crash",
                    2 => "signal",
                    _ => "interval",
                }
                .into(),
                detail: match i {
                    5 => "SIGSEGV",
                    2 => "SIGUSR2",
                    _ => "",
                }
                .into(),
                time_ns: 1_764_151_503_000_000_000 + (t * 1e9) as u64,
                monotonic_ns: 5_000_000_000 + (t * 1e9) as u64,
                t,
                live: Live {
                    blocks: 400 + i as u64 * 500,
                    bytes: 36_100 + (t * 30_000.0) as u64,
                },
                sample_bytes: 0,
            })
            .collect();
        let live: Vec<f64> = t.iter().map(|t| 36_100.0 + 30_000.0 * t).collect();
        Trend {
            snapshots,
            processes: vec![Process {
                pid: 4242,
                exe: app.into(),
                cmdline: vec!["./server".into(), "3000".into(), "1000".into()],
                start_time_ns: 1_764_151_502_000_000_000,
                snapshots: 6,
            }],
            skipped: Vec::new(),
            time_axis: TimeAxis::Monotonic,
            duration: 2.5,
            sample_bytes: 0,
            live: fit(&t, &live, std::slice::from_ref(&(0..6))),
            sites,
            warnings: vec!["skipped srv.4242.6.json: truncated <cut> & \"quoted\"".into()],
        }
    }

    #[test]
    fn is_well_formed_svg_with_a_legend() {
        let svg = render(&example(), 10);
        let doc = roxmltree::Document::parse(&svg).expect("well-formed XML");
        let root = doc.root_element();
        assert_eq!(root.tag_name().name(), "svg");
        assert_eq!(
            root.tag_name().namespace(),
            Some("http://www.w3.org/2000/svg")
        );
        let legend = root
            .descendants()
            .find(|n| n.attribute("class") == Some("legend"))
            .expect("legend");
        let texts: Vec<String> = legend
            .descendants()
            .filter(|n| n.has_tag_name("text"))
            .map(|n| n.text().unwrap_or("").to_owned())
            .collect();
        assert_eq!(texts.len(), 3);
        assert_eq!(
            texts[0],
            "#1 growing, +29.3 KiB/s: strdup ← make_txid (server.c:42) ← handle_request (server.c:97)"
        );
        // Special characters survive escaping.
        assert!(
            texts[2].ends_with("new ← operator<< <Q&A> \"x\" ← 'q'"),
            "{texts:?}"
        );
        let polylines = root
            .descendants()
            .filter(|n| n.has_tag_name("polyline"))
            .count();
        assert_eq!(polylines, 3);
        // The crash is marked.
        assert!(root
            .descendants()
            .any(|n| n.has_tag_name("text") && n.text() == Some("crash (SIGSEGV)")));
        // Every point lies inside the plot area.
        for p in root.descendants().filter(|n| n.has_tag_name("polyline")) {
            for xy in p.attribute("points").unwrap().split(' ') {
                let (x, y) = xy.split_once(',').unwrap();
                let (x, y): (f64, f64) = (x.parse().unwrap(), y.parse().unwrap());
                assert!((LEFT..=WIDTH - RIGHT).contains(&x), "{x}");
                assert!((TOP..=TOP + PLOT_H).contains(&y), "{y}");
            }
        }
    }

    #[test]
    fn top_limits_the_sites_drawn_and_several_processes_break_lines() {
        let mut trend = example();
        let svg = render(&trend, 1);
        let doc = roxmltree::Document::parse(&svg).unwrap();
        assert_eq!(
            doc.descendants()
                .filter(|n| n.has_tag_name("polyline"))
                .count(),
            1
        );
        trend.snapshots[3].process = 1;
        trend.snapshots[4].process = 1;
        trend.snapshots[5].process = 1;
        trend.snapshots[3].pid = 4243;
        let svg = render(&trend, 10);
        let doc = roxmltree::Document::parse(&svg).unwrap();
        assert_eq!(
            doc.descendants()
                .filter(|n| n.has_tag_name("polyline"))
                .count(),
            6
        );
        assert!(doc
            .descendants()
            .any(|n| n.has_tag_name("text") && n.text() == Some("pid 4243")));
    }

    #[test]
    fn ticks() {
        assert_eq!(nice_step(2.7), 0.5);
        assert_eq!(nice_step(100.0), 20.0);
        assert_eq!(nice_step(0.3), 0.05);
        assert_eq!(byte_unit(500.0), (1.0, "B"));
        assert_eq!(byte_unit(150_000.0), (1024.0, "KiB"));
        assert_eq!(tick_label(0.30000000000000004, 0.1, ""), "0.3");
        assert_eq!(tick_label(40.0, 20.0, "KiB"), "40 KiB");
        assert_eq!(esc("a<b>&\"'\u{1}"), "a&lt;b&gt;&amp;&quot;&apos;?");
    }
}
