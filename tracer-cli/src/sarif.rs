//! SARIF 2.1.0 output (`--format sarif`), for code-scanning services and IDEs.
//!
//! One run; one rule per finding kind; one result per finding, every status included: findings that do not
//! count carry `suppressions` (suppressed by a rule: `external`, accepted) or `baselineState: unchanged`
//! (known from the baseline), so viewers hide them but the log stays complete. Each result has
//! `partialFingerprints["heapledger/v1"]` (see `fingerprint`), its location at the innermost user frame with a
//! source file, and all its stacks as SARIF `stacks`. Source paths under `--source-root` (default: the current
//! directory) are relative to the `SRCROOT` base id; others are absolute `file://` URIs.

use std::io::{self, Write};
use std::path::Path;

use serde_json::{json, Map, Value};

use crate::findings::{Finding, Kind, Status};
use crate::fingerprint::SARIF_KEY;
use crate::gate::{self, Outcome};
use crate::symbolize::Frame;

/// The schema URI written in `$schema` (the OASIS errata 01 schema, vendored in tests/data).
pub const SCHEMA_URI: &str =
    "https://docs.oasis-open.org/sarif/sarif/v2.1.0/errata01/os/schemas/sarif-schema-2.1.0.json";

/// Writes the outcome as one SARIF log.
pub fn write(out: &mut impl Write, o: &Outcome, source_root: &Path) -> io::Result<()> {
    let root = source_root
        .canonicalize()
        .unwrap_or_else(|_| source_root.to_path_buf());
    let rules: Vec<Value> = Kind::ALL.iter().map(|k| rule(*k)).collect();
    let results: Vec<Value> = o.findings.iter().map(|f| result(o, f, &root)).collect();
    let mut notifications: Vec<Value> = Vec::new();
    for p in &o.processes {
        for w in &p.warnings {
            notifications.push(json!({
                "level": "warning",
                "message": { "text": format!("{}: {w}", p.describe()) }
            }));
        }
    }
    for e in o.load_errors.iter().chain(&o.problems) {
        notifications.push(json!({ "level": "error", "message": { "text": e } }));
    }
    for n in &o.rules.ignored {
        notifications
            .push(json!({ "level": "note", "message": { "text": format!("suppression {n}") } }));
    }
    let mut invocation = json!({
        "executionSuccessful": o.load_errors.is_empty() && o.problems.is_empty(),
        "exitCode": o.exit_code,
        "properties": {
            "gatePassed": !o.verdict.failed,
            "reasons": o.verdict.reasons,
            "processes": o.processes.iter().map(|p| json!({
                "pid": p.pid, "ppid": p.ppid, "exe": p.exe, "cmdline": p.cmdline, "reason": p.reason,
                "detail": p.detail, "dump": p.dump,
            })).collect::<Vec<_>>(),
            "suppressions": o.rules.rules.iter().zip(&o.rule_stats).map(|(r, s)| json!({
                "rule": r.text, "origin": r.origin, "builtin": r.builtin, "matchedFindings": s.findings,
                "matchedCount": s.count, "matchedBytes": s.bytes,
            })).collect::<Vec<_>>(),
        }
    });
    if !notifications.is_empty() {
        invocation["toolExecutionNotifications"] = Value::Array(notifications);
    }
    let root_uri = dir_uri(&root);
    let log = json!({
        "$schema": SCHEMA_URI,
        "version": "2.1.0",
        "runs": [{
            "tool": { "driver": {
                "name": "heapledger",
                "semanticVersion": env!("CARGO_PKG_VERSION"),
                "version": env!("CARGO_PKG_VERSION"),
                "rules": rules,
            }},
            "invocations": [invocation],
            "originalUriBaseIds": { "SRCROOT": { "uri": root_uri } },
            "columnKind": "unicodeCodePoints",
            "results": results,
        }]
    });
    serde_json::to_writer_pretty(&mut *out, &log).map_err(io::Error::from)?;
    out.write_all(b"\n")
}

fn rule(k: Kind) -> Value {
    let level = match k {
        Kind::Reachable | Kind::Unclassified => "note",
        _ => "error",
    };
    json!({
        "id": k.name(),
        "name": camel(k.name()),
        "shortDescription": { "text": capitalize(k.title()) },
        "fullDescription": { "text": k.description() },
        "defaultConfiguration": { "level": level },
        "help": { "text": format!("{} Rerun with `heapledger report` for the full stacks; silence known \
            findings with a suppression file or a --baseline.", k.description()) },
        "properties": { "tags": ["memory", if k.is_leak() { "leak" } else { "heap-error" }] }
    })
}

fn result(o: &Outcome, f: &Finding, root: &Path) -> Value {
    let p = &o.processes[f.process];
    let level = match f.status {
        Status::Fail => "error",
        Status::Allowed | Status::Baseline | Status::Suppressed(_) => "warning",
        Status::Ignored => "note",
    };
    let mut message = f.headline();
    if let Some(w) = gate::where_text(f) {
        message.push_str(&format!(", at {w}"));
    }
    message.push_str(&format!(", in {}", p.describe()));
    let mut r = Map::new();
    r.insert("ruleId".into(), json!(f.kind.name()));
    r.insert("ruleIndex".into(), json!(f.kind as usize));
    r.insert("kind".into(), json!("fail"));
    r.insert("level".into(), json!(level));
    r.insert("message".into(), json!({ "text": message }));
    r.insert(
        "locations".into(),
        json!([location(f, p.exe.as_str(), root)]),
    );
    r.insert(
        "partialFingerprints".into(),
        json!({ SARIF_KEY: f.fingerprint }),
    );
    if !f.stacks.is_empty() {
        let stacks: Vec<Value> = f
            .stacks
            .iter()
            .filter(|s| !s.frames.is_empty())
            .map(|s| {
                json!({
                    "message": { "text": s.role.label() },
                    "frames": s.frames.iter().map(|fr| stack_frame(fr, root)).collect::<Vec<_>>(),
                })
            })
            .collect();
        if !stacks.is_empty() {
            r.insert("stacks".into(), Value::Array(stacks));
        }
    }
    if !o.baseline.is_empty() {
        let state = if f.status == Status::Baseline {
            "unchanged"
        } else {
            "new"
        };
        r.insert("baselineState".into(), json!(state));
    }
    if let Some(rule) = o.rule_of(f) {
        r.insert(
            "suppressions".into(),
            json!([{
                "kind": "external",
                "status": "accepted",
                "justification": format!("heapledger suppression {} ({})", rule.text, rule.origin),
            }]),
        );
    }
    r.insert(
        "properties".into(),
        json!({
            "status": f.status.name(),
            "count": f.count,
            "bytes": f.bytes,
            "allocator": f.allocator,
            "freedWith": f.freed_with,
            "detail": f.detail,
            "pid": p.pid,
            "exe": p.exe,
        }),
    );
    Value::Object(r)
}

/// The result's location: the innermost user frame with a source file, else the executable.
fn location(f: &Finding, exe: &str, root: &Path) -> Value {
    match gate::location(f) {
        Some(frame) => frame_location(frame, root),
        None => {
            let mut loc = json!({
                "physicalLocation": { "artifactLocation": artifact(exe, root) }
            });
            if let Some(frame) = f.primary().and_then(|s| s.frames.first()) {
                if let Some(func) = frame.function.as_deref() {
                    loc["logicalLocations"] =
                        json!([{ "fullyQualifiedName": func, "kind": "function" }]);
                }
            }
            loc
        }
    }
}

fn frame_location(frame: &Frame, root: &Path) -> Value {
    let mut loc = Map::new();
    if let Some(file) = frame.file.as_deref() {
        let mut phys = json!({ "artifactLocation": artifact(file, root) });
        if let Some(line) = frame.line.filter(|l| *l > 0) {
            phys["region"] = json!({ "startLine": line });
        }
        loc.insert("physicalLocation".into(), phys);
    } else if let Some(module) = frame.module.as_deref() {
        loc.insert(
            "physicalLocation".into(),
            json!({
                "artifactLocation": artifact(module, root),
                "address": { "relativeAddress": frame.offset.min(i64::MAX as u64), "kind": "instruction" },
            }),
        );
    }
    if let Some(func) = frame.function.as_deref() {
        loc.insert(
            "logicalLocations".into(),
            json!([{ "fullyQualifiedName": func, "kind": "function" }]),
        );
    }
    Value::Object(loc)
}

fn stack_frame(frame: &Frame, root: &Path) -> Value {
    let mut v = json!({ "location": frame_location(frame, root) });
    if let Some(m) = frame.module.as_deref() {
        v["module"] = json!(m);
    }
    v
}

fn artifact(path: &str, root: &Path) -> Value {
    match gate::relative_to(path, root) {
        Some(rel) if !rel.is_empty() => json!({ "uri": encode_path(rel), "uriBaseId": "SRCROOT" }),
        _ if path.starts_with('/') => json!({ "uri": format!("file://{}", encode_path(path)) }),
        _ => json!({ "uri": encode_path(path) }),
    }
}

fn dir_uri(dir: &Path) -> String {
    let s = dir.to_string_lossy();
    let s = s.trim_end_matches('/');
    format!("file://{}/", encode_path(s))
}

/// Percent-encodes what may not appear in a URI path (RFC 3986: unreserved, sub-delims, `:`, `@`, `/` stay).
fn encode_path(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    for b in path.bytes() {
        let keep = b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=:@/".contains(&b);
        if keep {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn camel(name: &str) -> String {
    name.split('-').map(capitalize).collect()
}

fn capitalize(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(first) => first.to_uppercase().chain(c).collect(),
        None => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uris() {
        assert_eq!(encode_path("/a b/c#d%e/ü.c"), "/a%20b/c%23d%25e/%C3%BC.c");
        assert_eq!(dir_uri(Path::new("/work/x/")), "file:///work/x/");
        assert_eq!(dir_uri(Path::new("/")), "file:///");
        assert_eq!(
            artifact("/work/x/src/a.c", Path::new("/work/x")),
            json!({ "uri": "src/a.c", "uriBaseId": "SRCROOT" })
        );
        assert_eq!(
            artifact("/usr/include/stdio.h", Path::new("/work/x")),
            json!({ "uri": "file:///usr/include/stdio.h" })
        );
        assert_eq!(
            artifact("rel.c", Path::new("/work")),
            json!({ "uri": "rel.c" })
        );
    }

    #[test]
    fn names() {
        assert_eq!(camel("definitely-lost"), "DefinitelyLost");
        assert_eq!(capitalize("double free"), "Double free");
    }
}
