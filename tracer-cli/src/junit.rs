//! JUnit XML output (`--format junit`), for CI test-report views.
//!
//! One `<testsuite>` per process (dump); one `<testcase>` per finding — a `<failure>` when it fails the gate,
//! `<skipped>` when it is suppressed, in the baseline, of a kind not gated or within the limits — and one
//! passing testcase `no leaks or heap errors` for a process with nothing that counts. The failure text is
//! the finding's stacks as in the text report.

use std::fmt::Write as _;
use std::io::{self, Write};

use crate::findings::{Finding, Status};
use crate::gate::Outcome;
use crate::render::text::{fold, frame_text, Line};

/// Writes the outcome as one `<testsuites>` document.
pub fn write(out: &mut impl Write, o: &Outcome) -> io::Result<()> {
    let total = o.processes.len() + o.findings.len()
        - o.processes
            .iter()
            .enumerate()
            .filter(|(i, _)| o.findings.iter().any(|f| f.process == *i))
            .count();
    let failures = o
        .findings
        .iter()
        .filter(|f| f.status == Status::Fail)
        .count();
    let skipped = o
        .findings
        .iter()
        .filter(|f| f.status != Status::Fail)
        .count();
    writeln!(out, r#"<?xml version="1.0" encoding="UTF-8"?>"#)?;
    writeln!(
        out,
        r#"<testsuites name="heapledger" tests="{total}" failures="{failures}" errors="{}" skipped="{skipped}">"#,
        o.load_errors.len() + o.problems.len()
    )?;
    for (i, p) in o.processes.iter().enumerate() {
        let mine: Vec<&Finding> = o.findings.iter().filter(|f| f.process == i).collect();
        let fails = mine.iter().filter(|f| f.status == Status::Fail).count();
        let skips = mine.len() - fails;
        let tests = mine.len().max(1);
        let classname = format!("heapledger.{}", p.exe_name());
        writeln!(
            out,
            r#"  <testsuite name="{}" tests="{tests}" failures="{fails}" errors="0" skipped="{skips}">"#,
            attr(&p.describe())
        )?;
        writeln!(out, "    <properties>")?;
        let props = [
            ("pid", p.pid.to_string()),
            ("ppid", p.ppid.to_string()),
            ("exe", p.exe.clone()),
            ("dump", p.dump.clone().unwrap_or_default()),
            ("reason", p.reason.clone()),
        ];
        for (k, v) in props {
            writeln!(out, r#"      <property name="{k}" value="{}"/>"#, attr(&v))?;
        }
        writeln!(out, "    </properties>")?;
        if mine.is_empty() {
            writeln!(
                out,
                r#"    <testcase classname="{}" name="no leaks or heap errors"/>"#,
                attr(&classname)
            )?;
        }
        for f in mine {
            let mut name = format!("{}: {}", f.kind.name(), f.headline());
            if let Some(w) = crate::gate::where_text(f) {
                let _ = write!(name, " at {w}");
            }
            let _ = write!(name, " [{}]", f.fingerprint);
            write!(
                out,
                r#"    <testcase classname="{}" name="{}""#,
                attr(&classname),
                attr(&name)
            )?;
            if let Some(loc) = crate::gate::location(f) {
                if let Some(file) = loc.file.as_deref() {
                    write!(out, r#" file="{}""#, attr(file))?;
                }
                if let Some(line) = loc.line {
                    write!(out, r#" line="{line}""#)?;
                }
            }
            writeln!(out, ">")?;
            match f.status {
                Status::Fail => {
                    writeln!(
                        out,
                        r#"      <failure type="{}" message="{}">{}</failure>"#,
                        f.kind.name(),
                        attr(&f.headline()),
                        text(&stacks_text(f))
                    )?;
                }
                other => {
                    let why = match (other, o.rule_of(f)) {
                        (Status::Suppressed(_), Some(r)) => {
                            format!("suppressed by {} ({})", r.text, r.origin)
                        }
                        (Status::Baseline, _) => "in the baseline".to_owned(),
                        (Status::Ignored, _) => "kind not gated (--fail-on)".to_owned(),
                        (Status::Allowed, _) => "within the limits given (--max...)".to_owned(),
                        _ => other.name().to_owned(),
                    };
                    writeln!(out, r#"      <skipped message="{}"/>"#, attr(&why))?;
                }
            }
            writeln!(out, "    </testcase>")?;
        }
        if !p.warnings.is_empty() {
            writeln!(
                out,
                "    <system-err>{}</system-err>",
                text(&p.warnings.join("\n"))
            )?;
        }
        writeln!(out, "  </testsuite>")?;
    }
    if !o.load_errors.is_empty() || !o.problems.is_empty() {
        let n = o.load_errors.len() + o.problems.len();
        writeln!(
            out,
            r#"  <testsuite name="heapledger inputs" tests="{n}" failures="0" errors="{n}" skipped="0">"#
        )?;
        for e in o.load_errors.iter().chain(&o.problems) {
            writeln!(
                out,
                r#"    <testcase classname="heapledger" name="{}"><error message="{}"/></testcase>"#,
                attr(e),
                attr(e)
            )?;
        }
        writeln!(out, "  </testsuite>")?;
    }
    writeln!(out, "</testsuites>")
}

fn stacks_text(f: &Finding) -> String {
    let mut s = String::new();
    for st in &f.stacks {
        let _ = writeln!(s, "{}:", st.role.label());
        if st.frames.is_empty() {
            s.push_str("  (no stack recorded)\n");
        }
        for line in fold(&st.frames) {
            match line {
                Line::Frame(fr) => {
                    let _ = writeln!(s, "  {}", frame_text(fr));
                }
                Line::Folded(n, modules) => {
                    let _ = writeln!(s, "  ... {n} frame(s) in {}", modules.join(", "));
                }
            }
        }
    }
    s
}

/// Escapes text for an attribute value.
fn attr(s: &str) -> String {
    escape(s, true)
}

/// Escapes element text.
fn text(s: &str) -> String {
    escape(s, false)
}

/// XML 1.0 escaping; characters XML cannot carry at all (most controls) become U+FFFD.
fn escape(s: &str, attribute: bool) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' if attribute => out.push_str("&quot;"),
            '\'' if attribute => out.push_str("&apos;"),
            '\n' if attribute => out.push_str("&#10;"),
            '\t' if attribute => out.push_str("&#9;"),
            '\r' => out.push_str("&#13;"),
            '\n' | '\t' => out.push(c),
            c if (c as u32) < 0x20 || c == '\u{fffe}' || c == '\u{ffff}' => out.push('\u{fffd}'),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaping() {
        assert_eq!(attr("a<b>&\"c'\n"), "a&lt;b&gt;&amp;&quot;c&apos;&#10;");
        assert_eq!(text("x<y>\n\u{1}"), "x&lt;y&gt;\n\u{fffd}");
    }
}
