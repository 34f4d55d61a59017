//! `heapledger trend` for people: where the snapshots came from, a ranked table of call sites (verdict, rate,
//! live bytes first → last), then the stack of each growing site.

use std::io::{self, Write};

use crate::render::text::frame_text;
use crate::trend::{Site, Trend, Verdict};

/// Text rendering options.
#[derive(Debug, Clone, Copy)]
pub struct Options {
    /// Sites listed in the table.
    pub top: usize,
    /// Show the stack of every listed site, not only of the growing ones.
    pub all: bool,
}

/// Renders into a string (tests).
#[cfg(test)]
pub fn render(trend: &Trend, options: Options) -> String {
    let mut out = Vec::new();
    write(&mut out, trend, options).expect("writing to a Vec cannot fail");
    String::from_utf8(out).expect("UTF-8")
}

/// Writes the trend to `out`.
pub fn write(out: &mut impl Write, trend: &Trend, options: Options) -> io::Result<()> {
    let n = trend.snapshots.len();
    writeln!(
        out,
        "==== heapledger trend: {n} snapshots over {} ====",
        seconds(trend.duration)
    )?;
    for p in &trend.processes {
        let cmd = if p.cmdline.is_empty() {
            p.exe.clone()
        } else {
            p.cmdline.join(" ")
        };
        writeln!(
            out,
            "process {}: {cmd} ({} snapshot{})",
            p.pid,
            p.snapshots,
            plural(p.snapshots)
        )?;
    }
    let (first, last) = (&trend.snapshots[0], &trend.snapshots[n - 1]);
    writeln!(
        out,
        "from {} to {} ({})",
        utc(first.time_ns),
        utc(last.time_ns),
        match trend.time_axis {
            crate::trend::TimeAxis::Monotonic => "rates over the process's CLOCK_MONOTONIC",
            crate::trend::TimeAxis::Realtime =>
                "several processes: rates over the wall clock, each process its own baseline",
        }
    )?;
    writeln!(out, "snapshots: {}", reasons(trend))?;
    writeln!(
        out,
        "last snapshot: #{} of pid {}, {}, at {}",
        last.snapshot,
        last.pid,
        reason(&last.reason, &last.detail),
        seconds(last.t)
    )?;
    let approx = if trend.sample_bytes > 0 { "~" } else { "" };
    writeln!(
        out,
        "live heap: {approx}{} in {approx}{} blocks → {approx}{} in {approx}{} blocks ({approx}{})",
        bytes(first.live.bytes as f64),
        first.live.blocks,
        bytes(last.live.bytes as f64),
        last.live.blocks,
        rate(trend.live.rate)
    )?;
    let [growing, plateau, noise] = trend.verdict_counts();
    writeln!(
        out,
        "call sites: {} ({growing} growing, {plateau} plateau, {noise} noise); growing first, then by rate",
        trend.sites.len()
    )?;

    let shown = trend.sites.len().min(options.top);
    if shown > 0 {
        writeln!(out)?;
        let rows: Vec<[String; 7]> = trend.sites[..shown]
            .iter()
            .enumerate()
            .map(|(i, s)| {
                [
                    (i + 1).to_string(),
                    s.verdict.name().to_owned(),
                    format!("{approx}{}", rate(s.fit.rate)),
                    format!("{approx}{:+.1}/s", s.blocks_rate),
                    format!(
                        "{approx}{} → {approx}{}",
                        bytes(s.bytes[0]),
                        bytes(s.bytes[n - 1])
                    ),
                    format!("{:.3}", s.fit.r2),
                    s.name.clone(),
                ]
            })
            .collect();
        let head = [
            "#",
            "verdict",
            "bytes/s",
            "blocks/s",
            "live first → last",
            "R²",
            "call site",
        ];
        let mut widths = head.map(|h| h.chars().count());
        for row in &rows {
            for (w, cell) in widths.iter_mut().zip(row) {
                *w = (*w).max(cell.chars().count());
            }
        }
        let line = |cells: [&str; 7]| {
            format!(
                "{:>w0$}  {:<w1$}  {:>w2$}  {:>w3$}  {:>w4$}  {:>w5$}  {}",
                cells[0],
                cells[1],
                cells[2],
                cells[3],
                cells[4],
                cells[5],
                cells[6],
                w0 = widths[0],
                w1 = widths[1],
                w2 = widths[2],
                w3 = widths[3],
                w4 = widths[4],
                w5 = widths[5],
            )
        };
        writeln!(out, "{}", line(head))?;
        for row in &rows {
            writeln!(out, "{}", line(row.each_ref().map(String::as_str)))?;
        }
        if shown < trend.sites.len() {
            writeln!(
                out,
                "... {} more site(s); --all lists them all",
                trend.sites.len() - shown
            )?;
        }
    }

    for (i, s) in trend.sites[..shown].iter().enumerate() {
        if options.all || s.verdict == Verdict::Growing {
            writeln!(out)?;
            write_site(out, i + 1, s, approx)?;
        }
    }

    if trend.sample_bytes > 0 {
        writeln!(
            out,
            "\n(~: estimated from samples, one per {} bytes on average)",
            trend.sample_bytes
        )?;
    }
    writeln!(
        out,
        "\nverdicts: growing = steady rise to the end (R² ≥ 0.8, rising in ≥ 80% of the changes, > 1% of its mean);\n\
         plateau = flat over the last third; noise = neither. The exact rule: heapledger trend --help"
    )?;
    if !trend.warnings.is_empty() {
        writeln!(out)?;
        for w in &trend.warnings {
            writeln!(out, "warning: {w}")?;
        }
    }
    Ok(())
}

fn write_site(out: &mut impl Write, rank: usize, s: &Site, approx: &str) -> io::Result<()> {
    let n = s.bytes.len();
    writeln!(
        out,
        "#{rank} {}: {approx}{}, {approx}{:+.1} blocks/s; {approx}{} in {approx}{:.0} blocks → {approx}{} in {approx}{:.0} \
         blocks (R² {:.3}, rose in {} of {} intervals, fell in {})",
        s.verdict.name(),
        rate(s.fit.rate),
        s.blocks_rate,
        bytes(s.bytes[0]),
        s.blocks[0],
        bytes(s.bytes[n - 1]),
        s.blocks[n - 1],
        s.fit.r2,
        s.grew,
        s.intervals,
        s.shrank,
    )?;
    writeln!(out, "  allocated with {}", s.allocator)?;
    if s.frames.is_empty() {
        writeln!(out, "    (no stack recorded)")?;
    }
    for (i, f) in s.frames.iter().enumerate() {
        let lead = if i == 0 { "at" } else { "by" };
        writeln!(out, "    {lead} {}", frame_text(f))?;
    }
    Ok(())
}

/// `9 interval, 2 signal (SIGUSR2), 1 exit`, in order of first appearance.
fn reasons(trend: &Trend) -> String {
    let mut counts: Vec<(String, usize)> = Vec::new();
    for s in &trend.snapshots {
        let r = reason(&s.reason, &s.detail);
        match counts.iter_mut().find(|(name, _)| *name == r) {
            Some(c) => c.1 += 1,
            None => counts.push((r, 1)),
        }
    }
    counts
        .iter()
        .map(|(r, c)| format!("{c} {r}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn reason(reason: &str, detail: &str) -> String {
    if detail.is_empty() {
        reason.to_owned()
    } else {
        format!("{reason} ({detail})")
    }
}

fn plural(n: usize) -> &'static str {
    if n == 1 {
        ""
    } else {
        "s"
    }
}

/// `29.3 KiB` (binary units, one decimal from KiB on).
pub fn bytes(b: f64) -> String {
    const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
    if b.abs() < 1024.0 {
        return format!("{b:.0} B");
    }
    let mut v = b / 1024.0;
    let mut unit = 0;
    while v.abs() >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    format!("{v:.1} {}", UNITS[unit])
}

/// `+29.3 KiB/s`.
pub fn rate(r: f64) -> String {
    let sign = if r >= 0.5 {
        "+"
    } else if r <= -0.5 {
        "-"
    } else {
        ""
    };
    format!("{sign}{}/s", bytes(r.abs()))
}

/// `2.70 s`, `3 min 05 s`, `4 h 02 min`.
pub fn seconds(s: f64) -> String {
    if s < 60.0 {
        format!("{s:.2} s")
    } else if s < 3600.0 {
        format!("{} min {:02} s", (s / 60.0) as u64, (s % 60.0) as u64)
    } else {
        format!(
            "{} h {:02} min",
            (s / 3600.0) as u64,
            ((s % 3600.0) / 60.0) as u64
        )
    }
}

/// `2025-11-26 10:05:03 UTC` from nanoseconds since the epoch.
pub fn utc(ns: u64) -> String {
    let secs = ns / 1_000_000_000;
    let (days, rem) = ((secs / 86_400) as i64, secs % 86_400);
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02} UTC",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units() {
        assert_eq!(bytes(0.0), "0 B");
        assert_eq!(bytes(1023.0), "1023 B");
        assert_eq!(bytes(30_000.0), "29.3 KiB");
        assert_eq!(bytes(3.5 * 1024.0 * 1024.0 * 1024.0), "3.5 GiB");
        assert_eq!(rate(30_000.0), "+29.3 KiB/s");
        assert_eq!(rate(-2048.0), "-2.0 KiB/s");
        assert_eq!(rate(0.1), "0 B/s");
        assert_eq!(seconds(2.7), "2.70 s");
        assert_eq!(seconds(185.0), "3 min 05 s");
        assert_eq!(seconds(4.0 * 3600.0 + 120.0), "4 h 02 min");
        assert_eq!(utc(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(utc(1_764_151_503_000_000_000), "2025-11-26 10:05:03 UTC");
        assert_eq!(utc(951_782_400_000_000_000), "2000-02-29 00:00:00 UTC");
    }

    #[test]
    fn renders_a_ranked_table_and_growing_stacks() {
        let trend = crate::render::trend_svg::tests::example();
        let text = render(
            &trend,
            Options {
                top: 10,
                all: false,
            },
        );
        assert!(
            text.starts_with("==== heapledger trend: 6 snapshots over 2.50 s ====\n"),
            "{text}"
        );
        assert!(
            text.contains("process 4242: ./server 3000 1000 (6 snapshots)"),
            "{text}"
        );
        assert!(
            text.contains("snapshots: 4 interval, 1 signal (SIGUSR2), 1 crash (SIGSEGV)"),
            "{text}"
        );
        assert!(
            text.contains("last snapshot: #5 of pid 4242, crash (SIGSEGV), at 2.50 s"),
            "{text}"
        );
        let table: Vec<&str> = text
            .lines()
            .skip_while(|l| !l.contains("verdict"))
            .take(4)
            .collect();
        assert!(
            table[1].contains("growing") && table[1].contains("+29.3 KiB/s"),
            "{table:?}"
        );
        assert!(
            table[1].ends_with("strdup ← make_txid (server.c:42) ← handle_request (server.c:97)")
        );
        assert!(table[2].contains("plateau"), "{table:?}");
        assert!(text.contains("#1 growing: +29.3 KiB/s"), "{text}");
        assert!(
            text.contains("    by make_txid (server.c:42) [server]"),
            "{text}"
        );
        // Plateau stacks only with --all.
        assert!(!text.contains("#2 plateau"), "{text}");
        let all = render(
            &trend,
            Options {
                top: usize::MAX,
                all: true,
            },
        );
        assert!(all.contains("#2 plateau"), "{all}");
        let one = render(&trend, Options { top: 1, all: false });
        assert!(one.contains("... 2 more site(s)"), "{one}");
    }
}
