//! Stable fingerprints of findings, and baselines made of them.
//!
//! A fingerprint identifies "the same bug" across runs, builds and branches: it hashes the finding's kind
//! and the symbolized *user* frames of its stack — function names and module file names, never addresses,
//! offsets or line numbers, which change with every edit. Runtime frames (libc, libstdc++, ld.so, process
//! start-up) are skipped because they differ between machines but never identify a bug, except the runtime
//! function the innermost user frame called (`strdup`, `pthread_create`; glibc's `__GI_`/`__` prefixes
//! removed); only when a stack has no user frame at all are its runtime frames used. At most [`KEY_FRAMES`]
//! user frames count, innermost first, so a change far up the call chain (a test runner calling the test
//! differently) keeps the fingerprint. Findings of one process that would still share a fingerprint (two
//! leaks in one function, from different lines) get `:2`, `:3`, ... in source-line order ([`disambiguate`]).
//!
//! For bad frees the stack of the free is hashed, plus the innermost [`ALLOC_FRAMES`] user frames of the
//! allocation. A crash hashes the signal and the crashing thread's stack; a process killed by a signal
//! without a crash dump, the signal and the executable's name.
//!
//! The algorithm is versioned (`heapledger/v1` in SARIF's `partialFingerprints`); changing any of the above
//! changes every fingerprint and needs a new version.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::findings::{self, Finding, Kind, Role, Want};
use crate::render::text::is_runtime;
use crate::symbolize::{Frame, Symbolizer};

/// Frames of the identifying stack that count.
pub const KEY_FRAMES: usize = 5;
/// Frames of a bad free's allocation stack that count.
pub const ALLOC_FRAMES: usize = 2;
/// The name under which SARIF carries the fingerprint (`partialFingerprints`).
pub const SARIF_KEY: &str = "heapledger/v1";

/// The fingerprint of `f`: 32 lowercase hex digits.
pub fn of(f: &Finding) -> String {
    let mut text = format!("heapledger-fingerprint-v1\n{}\n", f.kind.name());
    if f.kind == Kind::Signal {
        // With the crashing thread's stack (crash dumps); without one, see `of_signal`.
        text.push_str(&f.detail);
        text.push('\n');
        let primary = f.primary().map_or(&[][..], |s| &s.frames[..]);
        for id in key_frames(primary, KEY_FRAMES) {
            text.push_str(&id);
            text.push('\n');
        }
    } else if f.detail == "unrecorded" {
        text.push_str("unrecorded");
    } else {
        let primary = f.primary().map_or(&[][..], |s| &s.frames[..]);
        for id in key_frames(primary, KEY_FRAMES) {
            text.push_str(&id);
            text.push('\n');
        }
        if !f.kind.is_leak() {
            text.push_str("--alloc--\n");
            if let Some(alloc) = f.stacks.iter().find(|s| s.role == Role::Alloc) {
                for id in key_frames(&alloc.frames, ALLOC_FRAMES) {
                    text.push_str(&id);
                    text.push('\n');
                }
            }
        }
    }
    hash_hex(text.as_bytes())
}

/// The fingerprint of a process of executable `exe` killed by `signal`.
pub fn of_signal(signal: &str, exe: &str) -> String {
    let name = exe.rsplit('/').next().unwrap_or(exe);
    hash_hex(format!("heapledger-fingerprint-v1\nsignal\n{signal}\n{name}").as_bytes())
}

/// The identities of the innermost `n` user frames, preceded by the runtime function the innermost one called
/// (`strdup`, `pthread_create`, `dlopen`: what tells two leaks of one function apart); the innermost `n`
/// frames when there is no user frame.
pub fn key_frames(frames: &[Frame], n: usize) -> Vec<String> {
    let end = frames
        .iter()
        .position(|f| {
            f.function
                .as_deref()
                .is_some_and(|n| n.starts_with("__libc_start"))
        })
        .unwrap_or(frames.len());
    let frames_in = &frames[..end];
    let Some(first_user) = frames_in.iter().position(|f| !is_runtime(f)) else {
        return frames.iter().take(n).map(frame_id).collect();
    };
    let mut ids = Vec::with_capacity(n + 1);
    if first_user > 0 {
        let called = &frames_in[first_user - 1];
        ids.push(format!(
            "->{}",
            called.function.as_deref().map_or("?", api_name)
        ));
    }
    ids.extend(
        frames_in[first_user..]
            .iter()
            .filter(|f| !is_runtime(f))
            .take(n)
            .map(frame_id),
    );
    ids
}

/// A runtime function's name without glibc's internal prefixes (`__GI___strdup`, `__strdup` -> `strdup`), which
/// vary between library builds.
fn api_name(name: &str) -> &str {
    let mut s = name;
    while let Some(rest) = s.strip_prefix("__GI_") {
        s = rest;
    }
    let trimmed = s.trim_start_matches('_');
    if trimmed.is_empty() {
        s
    } else {
        trimmed
    }
}

/// Makes the fingerprints of one process's findings distinct: findings that would share one (two leaks in
/// one function, from different lines) get `:2`, `:3`, ... in the order of their source lines, so a new leak
/// next to a known one is not taken for it.
pub fn disambiguate(findings: &mut [Finding]) {
    use std::collections::HashMap;
    let mut groups: HashMap<String, Vec<usize>> = HashMap::new();
    for (i, f) in findings.iter().enumerate() {
        groups.entry(f.fingerprint.clone()).or_default().push(i);
    }
    for (_, mut members) in groups {
        if members.len() < 2 {
            continue;
        }
        let key = |f: &Finding| {
            let lines: Vec<(Option<u32>, Option<String>)> = f
                .stacks
                .iter()
                .flat_map(|s| &s.frames)
                .map(|fr| (fr.line, fr.file.as_deref().map(str::to_owned)))
                .collect();
            (lines, f.bytes, f.count, f.allocator.clone())
        };
        members.sort_by_key(|&i| key(&findings[i]));
        for (n, &i) in members.iter().enumerate().skip(1) {
            findings[i].fingerprint = format!("{}:{}", findings[i].fingerprint, n + 1);
        }
    }
}

/// Frames that are the user's code: not in the C/C++ runtime or the loader, and not process start-up (which
/// is everything outward of `__libc_start*`).
pub fn user_frames(frames: &[Frame]) -> Vec<&Frame> {
    let start_up = frames.iter().position(|f| {
        f.function
            .as_deref()
            .is_some_and(|n| n.starts_with("__libc_start"))
    });
    let frames = &frames[..start_up.unwrap_or(frames.len())];
    frames.iter().filter(|f| !is_runtime(f)).collect()
}

/// `function@module`, `?@module` or `?`; module names without their version suffix (`libfoo.so.1.2` ->
/// `libfoo.so`), so a library upgrade keeps fingerprints.
fn frame_id(f: &Frame) -> String {
    let module = f.module.as_deref().map(module_key).unwrap_or_default();
    match &f.function {
        Some(func) => format!("{func}@{module}"),
        None if !module.is_empty() => format!("?@{module}"),
        None => "?".to_owned(),
    }
}

fn module_key(path: &str) -> String {
    let base = path.rsplit('/').next().unwrap_or(path);
    match base.find(".so") {
        Some(i) => base[..i + 3].to_owned(),
        None => base.to_owned(),
    }
}

/// 128-bit FNV-1a (two 64-bit lanes with different offsets), as hex. Not cryptographic; fixed forever.
fn hash_hex(data: &[u8]) -> String {
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    let mut a: u64 = 0xcbf2_9ce4_8422_2325;
    let mut b: u64 = 0x6c62_272e_07bb_0142;
    for &byte in data {
        a ^= u64::from(byte);
        a = a.wrapping_mul(PRIME);
        b ^= u64::from(byte.rotate_left(3));
        b = b.wrapping_mul(PRIME);
    }
    format!("{a:016x}{b:016x}")
}

/// Fingerprints known from earlier runs.
#[derive(Debug, Default)]
pub struct Baseline {
    set: HashSet<String>,
    /// One line per file read: what it was and how many fingerprints it gave.
    pub sources: Vec<String>,
}

impl Baseline {
    /// Whether the baseline has `fingerprint`.
    pub fn contains(&self, fingerprint: &str) -> bool {
        self.set.contains(fingerprint)
    }

    /// Number of distinct fingerprints.
    pub fn len(&self) -> usize {
        self.set.len()
    }

    /// Whether no baseline file was given.
    pub fn is_empty(&self) -> bool {
        self.sources.is_empty()
    }

    /// Reads each file as a dump, a `heapledger check --format json` output or a heapledger SARIF log.
    pub fn load(paths: &[PathBuf]) -> Result<Baseline, String> {
        let mut b = Baseline::default();
        for path in paths {
            let (what, found) = read_one(path)?;
            b.sources.push(format!(
                "{}: {what}, {} fingerprint(s)",
                path.display(),
                found.len()
            ));
            b.set.extend(found);
        }
        Ok(b)
    }
}

fn read_one(path: &Path) -> Result<(&'static str, Vec<String>), String> {
    use heapledger_format::Problem;
    let name = path.display();
    let bytes = std::fs::read(path).map_err(|e| format!("baseline {name}: cannot read: {e}"))?;
    match heapledger_format::parse(&bytes) {
        Ok(dump) => {
            let mut sym = Symbolizer::new(&dump);
            let want = Want {
                reachable: true,
                unclassified: true,
            };
            let (_, found) = findings::from_dump(&dump, path, &mut sym, want);
            return Ok(("dump", found.into_iter().map(|f| f.fingerprint).collect()));
        }
        Err(Problem::WrongFormat(_) | Problem::NotADump) => {}
        Err(p) => {
            return Err(format!(
                "baseline {name}: {}",
                findings::one_line(&p.to_string())
            ))
        }
    }
    let v: Value =
        serde_json::from_slice(&bytes).map_err(|e| format!("baseline {name}: not JSON: {e}"))?;
    if v["format"] == crate::gate::CHECK_FORMAT {
        if v["version"] != 1 {
            return Err(format!(
                "baseline {name}: unsupported heapledger-check version {}",
                v["version"]
            ));
        }
        let findings = v["findings"]
            .as_array()
            .ok_or_else(|| format!("baseline {name}: no \"findings\" array"))?;
        let fps = findings
            .iter()
            .filter_map(|f| f["fingerprint"].as_str().map(str::to_owned))
            .collect();
        return Ok(("heapledger check output", fps));
    }
    if v["version"] == "2.1.0" && v["runs"].is_array() {
        let mut fps = Vec::new();
        for run in v["runs"].as_array().into_iter().flatten() {
            for r in run["results"].as_array().into_iter().flatten() {
                if let Some(fp) = r["partialFingerprints"][SARIF_KEY].as_str() {
                    fps.push(fp.to_owned());
                }
            }
        }
        return Ok(("SARIF log", fps));
    }
    Err(format!(
        "baseline {name}: neither a heapledger dump, nor `heapledger check --format json` output, nor a \
         heapledger SARIF log"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::findings::{Stack, Status};
    use std::rc::Rc;

    fn frame(function: Option<&str>, module: &str, line: u32) -> Frame {
        Frame {
            address: 0x1000 + u64::from(line),
            module: Some(Rc::from(module)),
            offset: u64::from(line),
            function: function.map(Rc::from),
            file: Some(Rc::from("/src/app.c")),
            line: Some(line),
            inlined: false,
        }
    }

    fn leak(frames: Vec<Frame>) -> Finding {
        Finding {
            kind: Kind::DefinitelyLost,
            process: 0,
            count: 1,
            bytes: 10,
            allocator: "malloc".into(),
            freed_with: String::new(),
            detail: String::new(),
            addr: None,
            stacks: vec![Stack {
                role: Role::Alloc,
                frames,
            }],
            fingerprint: String::new(),
            status: Status::Fail,
        }
    }

    const LIBC: &str = "/usr/lib/x86_64-linux-gnu/libc.so.6";

    fn stack(line: u32, address_shift: u64) -> Vec<Frame> {
        let mut v = vec![
            frame(Some("strdup"), LIBC, 1),
            frame(Some("make"), "/build/app", line),
            frame(Some("main"), "/build/app", line + 10),
            frame(Some("__libc_start_call_main"), LIBC, 2),
            frame(None, "/build/app", 3),
        ];
        for f in &mut v {
            f.address += address_shift;
        }
        v
    }

    #[test]
    fn ignores_addresses_lines_and_runtime_frames() {
        let a = of(&leak(stack(10, 0)));
        assert_eq!(a.len(), 32);
        assert!(a.bytes().all(|b| b.is_ascii_hexdigit()));
        // Another build: other addresses and lines; another libc version: other runtime frames.
        let mut other = stack(42, 0x5000);
        other[0].function = Some(Rc::from("__GI___strdup"));
        other[0].module = Some(Rc::from("/lib64/libc.so.7"));
        other.insert(0, frame(Some("malloc"), LIBC, 9));
        assert_eq!(of(&leak(other)), a);
        // But the runtime function the program called counts.
        let mut called = stack(10, 0);
        called[0].function = Some(Rc::from("strndup"));
        assert_ne!(of(&leak(called)), a);
        // The pinned value: the algorithm must never change silently (it is what baselines store).
        assert_eq!(a, "e73c19068d2de027e4fb0b99e8204672");
    }

    #[test]
    fn depends_on_kind_functions_and_module() {
        let base = leak(stack(10, 0));
        let a = of(&base);
        let mut other_kind = base.clone();
        other_kind.kind = Kind::IndirectlyLost;
        assert_ne!(of(&other_kind), a);
        let mut renamed = stack(10, 0);
        renamed[1].function = Some(Rc::from("make2"));
        assert_ne!(of(&leak(renamed)), a);
        let mut moved = stack(10, 0);
        moved[1].module = Some(Rc::from("/build/libapp.so.1"));
        moved[2].module = Some(Rc::from("/build/libapp.so.1"));
        let moved_fp = of(&leak(moved.clone()));
        assert_ne!(moved_fp, a);
        // A library's version suffix does not count.
        for f in &mut moved[1..3] {
            f.module = Some(Rc::from("/build/libapp.so.2.0"));
        }
        assert_eq!(of(&leak(moved)), moved_fp);
    }

    #[test]
    fn runtime_only_stacks_use_runtime_frames() {
        let only_runtime = vec![
            frame(Some("_dl_new_object"), "/lib64/ld-linux-x86-64.so.2", 1),
            frame(Some("dlopen"), LIBC, 2),
        ];
        let mut other = only_runtime.clone();
        other[0].function = Some(Rc::from("_dl_map_object"));
        assert_ne!(of(&leak(only_runtime)), of(&leak(other)));
        // No frames at all is still a fingerprint.
        assert_eq!(of(&leak(vec![])).len(), 32);
    }

    #[test]
    fn only_the_innermost_user_frames_count() {
        let mut deep: Vec<Frame> = (0..10)
            .map(|i| frame(Some(&format!("f{i}")), "/build/app", i))
            .collect();
        let a = of(&leak(deep.clone()));
        deep[KEY_FRAMES].function = Some(Rc::from("other_caller"));
        assert_eq!(of(&leak(deep.clone())), a);
        deep[KEY_FRAMES - 1].function = Some(Rc::from("other_caller"));
        assert_ne!(of(&leak(deep)), a);
    }

    #[test]
    fn colliding_fingerprints_get_ordinals_by_line() {
        let mut fs = vec![leak(stack(20, 0)), leak(stack(10, 0)), leak(stack(30, 0))];
        for f in &mut fs {
            f.fingerprint = of(f);
        }
        let base = fs[0].fingerprint.clone();
        disambiguate(&mut fs);
        assert_eq!(fs[1].fingerprint, base);
        assert_eq!(fs[0].fingerprint, format!("{base}:2"));
        assert_eq!(fs[2].fingerprint, format!("{base}:3"));
    }

    #[test]
    fn user_frames_skip_start_up() {
        let s = stack(1, 0);
        let names: Vec<&str> = user_frames(&s)
            .iter()
            .map(|f| f.function.as_deref().unwrap())
            .collect();
        assert_eq!(names, ["make", "main"]);
    }

    #[test]
    fn baseline_rejects_other_json() {
        let dir = std::env::temp_dir().join(format!("hl-fp-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("other.json");
        std::fs::write(&p, "{\"a\": 1}").unwrap();
        let e = Baseline::load(std::slice::from_ref(&p)).unwrap_err();
        assert!(e.contains("neither a heapledger dump"), "{e}");
        std::fs::write(
            &p,
            r#"{"format":"heapledger-check","version":1,"findings":[{"fingerprint":"abc"}]}"#,
        )
        .unwrap();
        let b = Baseline::load(std::slice::from_ref(&p)).unwrap();
        assert!(b.contains("abc") && b.len() == 1);
        std::fs::write(
            &p,
            r#"{"version":"2.1.0","runs":[{"results":[{"partialFingerprints":{"heapledger/v1":"def"}}]}]}"#,
        )
        .unwrap();
        assert!(Baseline::load(std::slice::from_ref(&p))
            .unwrap()
            .contains("def"));
        std::fs::write(&p, "{\"format\": \"heapledger\", \"version\": 1").unwrap();
        let e = Baseline::load(&[p]).unwrap_err();
        assert!(e.contains("truncated"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
