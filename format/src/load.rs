//! Reading and validating dump files.
//!
//! Every failure becomes a one-line [`LoadError`] naming the file, because the CLI prints it as is and a user
//! looking at a crashed program's leftovers needs to know *which* file is bad and *why* in one glance.

use std::fmt;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_json::error::Category;

use crate::{Dump, FORMAT, VERSION};

/// A dump that could not be loaded: the file and the problem.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadError {
    /// The file, as given to [`load`].
    pub path: PathBuf,
    /// What is wrong with it.
    pub problem: Problem,
}

impl fmt::Display for LoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path.display(), self.problem)
    }
}

impl std::error::Error for LoadError {}

/// The ways a dump can be unusable. Each displays as one line.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Problem {
    /// The file does not exist.
    NotFound,
    /// Any other I/O error (permissions, a directory, ...).
    Io(String),
    /// Zero bytes, or only whitespace.
    Empty,
    /// JSON that ends early or breaks off into garbage: the writer died (or the disk filled) mid-file.
    /// The string is serde's message, which ends with the line and column.
    Truncated(String),
    /// Not JSON at all (does not start with `{`).
    NotJson,
    /// Valid JSON, but not an object with a `"format"` key.
    NotADump,
    /// `"format"` is something other than `"heapledger"`.
    WrongFormat(String),
    /// `"version"` is not one this reader understands.
    UnsupportedVersion(String),
    /// Parsed, but `"complete": true` is missing.
    Incomplete,
    /// Right format and version, but a field has the wrong shape or an id points nowhere.
    Invalid(String),
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Problem::NotFound => f.write_str("no such file"),
            Problem::Io(e) => write!(f, "cannot read: {e}"),
            Problem::Empty => f.write_str("empty file (the program died before the dump was written?)"),
            Problem::Truncated(e) => write!(f, "truncated or corrupt (crash while writing?): {e}"),
            Problem::NotJson => f.write_str("not JSON, so not a heapledger dump"),
            Problem::NotADump => f.write_str("JSON, but not a heapledger dump (no \"format\" key)"),
            Problem::WrongFormat(s) => write!(f, "not a heapledger dump (format is {s}, expected \"{FORMAT}\")"),
            Problem::UnsupportedVersion(v) => write!(
                f,
                "unsupported dump version {v} (this heapledger reads version {VERSION}; use a matching heapledger)"
            ),
            Problem::Incomplete => {
                f.write_str("incomplete: no \"complete\": true at the end (crash while writing?)")
            }
            Problem::Invalid(e) => write!(f, "invalid dump: {e}"),
        }
    }
}

/// Reads, parses and validates the dump at `path`.
///
/// On success every stack id in `blocks` and `errors` indexes `stacks`, every `family` indexes `allocators`,
/// every `class` is at most 3, and `base + vaddr + memsz` of every segment fits in a `u64`.
pub fn load(path: impl AsRef<Path>) -> Result<Dump, LoadError> {
    let path = path.as_ref();
    let err = |problem| LoadError {
        path: path.to_path_buf(),
        problem,
    };
    let bytes = std::fs::read(path).map_err(|e| {
        err(match e.kind() {
            std::io::ErrorKind::NotFound => Problem::NotFound,
            _ => Problem::Io(e.to_string()),
        })
    })?;
    parse(&bytes).map_err(err)
}

/// Parses and validates a dump already in memory (see [`load`]).
pub fn parse(bytes: &[u8]) -> Result<Dump, Problem> {
    let first = bytes.iter().copied().find(|b| !b.is_ascii_whitespace());
    match first {
        None => return Err(Problem::Empty),
        Some(b'{') => {}
        // A JSON array, string or number is still "JSON", just not ours; anything else is not JSON at all.
        Some(b'[' | b'"' | b'-' | b'0'..=b'9' | b't' | b'f' | b'n') => {
            return Err(
                match serde_json::from_slice::<serde::de::IgnoredAny>(bytes) {
                    Ok(_) => Problem::NotADump,
                    // A dump cut short still starts with `{`; a file that does not is some other text.
                    Err(_) => Problem::NotJson,
                },
            );
        }
        Some(_) => return Err(Problem::NotJson),
    }
    // Parse straight into the full structure: dumps can be large and one pass is the common case. Only when
    // that fails do we look at the header, so that e.g. a version-2 dump is reported as such instead of as a
    // confusing "missing field" message.
    let dump = match serde_json::from_slice::<Dump>(bytes) {
        Ok(dump) => dump,
        Err(e) if e.classify() == Category::Data => {
            return Err(classify(bytes, Some(e)));
        }
        Err(e) => return Err(Problem::Truncated(e.to_string())),
    };
    if dump.format != FORMAT {
        return Err(Problem::WrongFormat(format!("{:?}", dump.format)));
    }
    if dump.version != VERSION {
        return Err(Problem::UnsupportedVersion(dump.version.to_string()));
    }
    if !dump.complete {
        return Err(Problem::Incomplete);
    }
    dump.validate()?;
    Ok(dump)
}

/// Just the keys that say what a file is; parsing it also checks the whole file is well-formed JSON.
#[derive(Deserialize)]
struct Probe {
    format: Option<serde_json::Value>,
    version: Option<serde_json::Value>,
}

/// Explains why `bytes` did not parse as a [`Dump`], given the error from the attempt.
fn classify(bytes: &[u8], full_error: Option<serde_json::Error>) -> Problem {
    let probe = match serde_json::from_slice::<Probe>(bytes) {
        Ok(probe) => probe,
        Err(e) if e.classify() == Category::Data => return Problem::NotADump,
        Err(e) => return Problem::Truncated(e.to_string()),
    };
    match probe.format {
        None => return Problem::NotADump,
        Some(serde_json::Value::String(s)) if s == FORMAT => {}
        Some(other) => return Problem::WrongFormat(other.to_string()),
    }
    match probe.version {
        Some(v) if v.as_u64() == Some(VERSION) => {}
        Some(v) => return Problem::UnsupportedVersion(v.to_string()),
        None => return Problem::Invalid("missing field `version`".into()),
    }
    match full_error {
        Some(e) => Problem::Invalid(e.to_string()),
        // Only reachable if the probe and the full parse disagree on well-formedness, which they cannot; keep a
        // message anyway rather than a panic.
        None => Problem::NotADump,
    }
}

impl Dump {
    /// Checks every id in the dump against the table it indexes, and that address arithmetic cannot overflow.
    /// [`load`] calls this; call it yourself on a `Dump` built in memory.
    pub fn validate(&self) -> Result<(), Problem> {
        let n_stacks = self.stacks.len() as u64;
        let n_alloc = self.allocators.len() as u64;
        let stack_err = |what: String, id: u64| {
            Problem::Invalid(format!(
                "{what} refers to stack {id}, but the dump has only {n_stacks} stacks"
            ))
        };
        for (i, b) in self.blocks.iter().enumerate() {
            if b.stack >= n_stacks {
                return Err(stack_err(
                    format!("block {i} (addr {:#x})", b.addr),
                    b.stack,
                ));
            }
            if b.family >= n_alloc {
                return Err(Problem::Invalid(format!(
                    "block {i} (addr {:#x}) has allocator family {}, but the dump lists only {n_alloc} allocators",
                    b.addr, b.family
                )));
            }
            if b.class > u64::from(crate::class::INDIRECTLY_LOST) {
                return Err(Problem::Invalid(format!(
                    "block {i} (addr {:#x}) has reachability class {} (expected 0..3)",
                    b.addr, b.class
                )));
            }
        }
        if let Some(c) = &self.crash {
            if c.stack >= n_stacks {
                return Err(stack_err("the crash record".to_string(), c.stack));
            }
        }
        for (i, e) in self.errors.iter().enumerate() {
            let ids = [
                ("stack", Some(e.stack)),
                ("alloc_stack", e.alloc_stack),
                ("first_free_stack", e.first_free_stack),
            ];
            for (key, id) in ids {
                if let Some(id) = id.filter(|&id| id >= n_stacks) {
                    return Err(stack_err(
                        format!("error {i} ({}) {key}", e.kind.name()),
                        id,
                    ));
                }
            }
        }
        for (i, m) in self.modules.iter().enumerate() {
            for s in &m.segments {
                let end = m
                    .base
                    .checked_add(s.vaddr)
                    .and_then(|a| a.checked_add(s.memsz));
                if end.is_none() {
                    return Err(Problem::Invalid(format!(
                        "module {i} ({}) has a segment beyond the end of the address space",
                        m.path
                    )));
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A small valid dump; tests break it in one place each.
    const GOOD: &str = r#"{
  "format": "heapledger", "version": 1, "reason": "exit", "detail": "", "platform": "linux-x86_64",
  "pid": 1234, "ppid": 1200, "exe": "/usr/bin/true", "cmdline": ["true"], "snapshot": 0,
  "time_ns": 2, "start_time_ns": 1, "monotonic_ns": 3, "depth": 32, "sample_bytes": 0,
  "totals": { "allocations": 3, "frees": 1, "bytes_allocated": 112, "bytes_freed": 16 },
  "live": { "blocks": 2, "bytes": 96 },
  "error_counts": { "double_free": 1, "invalid_free": 0, "mismatched_free": 0, "cross_heap_free": 0 },
  "tracer": { "lost_blocks": 0, "lost_stacks": 0, "lost_errors": 0, "truncated_stacks": 0, "memory_bytes": 4096 },
  "allocators": ["malloc", "aligned", "new", "new[]"],
  "modules": [ { "path": "/usr/bin/true", "build_id": "abcd", "base": 4194304,
                 "segments": [[0, 4096, 5], [8192, 4096, 6]], "loaded": true } ],
  "stacks": [[], [4194404, 4194504]],
  "blocks": [[1000, 32, 1, 0, 1234, 1, 0], [2000, 64, 0, 2, 1234, 2, 2]],
  "errors": [ { "kind": "double_free", "addr": 3000, "size": 16, "allocator": "malloc", "freed_with": "free",
                "tid": 1234, "detail": "", "stack": 1, "alloc_stack": 1, "first_free_stack": null } ],
  "complete": true
}"#;

    fn problem(text: &str) -> Problem {
        parse(text.as_bytes()).expect_err("should fail")
    }

    #[test]
    fn good_dump_loads() {
        let d = parse(GOOD.as_bytes()).unwrap();
        assert_eq!(d.pid, 1234);
        assert_eq!(d.blocks[1].size, 64);
        assert_eq!(d.blocks[1].family, 2);
        assert_eq!(d.blocks[1].class, 2);
        assert_eq!(d.modules[0].segments[0].flags, 5);
        assert_eq!(d.errors[0].kind, crate::ErrorKind::DoubleFree);
        assert_eq!(d.errors[0].first_free_stack, None);
        assert_eq!(d.stack(1), &[4194404, 4194504]);
    }

    #[test]
    fn unknown_keys_are_ignored_and_tracer_extras_kept() {
        let text = GOOD.replace(
            "\"memory_bytes\": 4096",
            "\"memory_bytes\": 4096, \"new_counter\": 7",
        );
        let text = text.replace("\"platform\"", "\"future\": [1, 2], \"platform\"");
        let d = parse(text.as_bytes()).unwrap();
        assert_eq!(
            d.tracer.other.get("new_counter").and_then(|v| v.as_u64()),
            Some(7)
        );
    }

    #[test]
    fn missing_file() {
        let e = load("/nonexistent/heapledger.1.json").unwrap_err();
        assert_eq!(e.problem, Problem::NotFound);
        assert_eq!(
            e.to_string(),
            "/nonexistent/heapledger.1.json: no such file"
        );
    }

    #[test]
    fn directory_is_an_io_error() {
        let e = load("/").unwrap_err();
        assert!(matches!(e.problem, Problem::Io(_)), "{e}");
    }

    #[test]
    fn empty_file() {
        assert_eq!(problem(""), Problem::Empty);
        assert_eq!(problem(" \n\t"), Problem::Empty);
    }

    #[test]
    fn truncated_file_names_line_and_column() {
        let cut = &GOOD[..GOOD.len() / 2];
        let p = problem(cut);
        assert!(matches!(p, Problem::Truncated(_)), "{p:?}");
        let msg = p.to_string();
        assert!(
            msg.starts_with("truncated or corrupt (crash while writing?)"),
            "{msg}"
        );
        assert!(msg.contains("line") && msg.contains("column"), "{msg}");
        // Cut at every byte: never a panic, never success.
        for i in 0..GOOD.len() - 1 {
            assert!(
                parse(&GOOD.as_bytes()[..i]).is_err(),
                "prefix of {i} bytes parsed"
            );
        }
    }

    #[test]
    fn garbage_after_valid_start_is_corrupt() {
        let text = format!("{}\0\0\0\0", &GOOD[..200]);
        assert!(matches!(problem(&text), Problem::Truncated(_)));
    }

    #[test]
    fn not_json() {
        assert_eq!(problem("hello world"), Problem::NotJson);
        assert_eq!(problem("\u{7f}ELF"), Problem::NotJson);
    }

    #[test]
    fn json_but_not_a_dump() {
        assert_eq!(problem("[1, 2, 3]"), Problem::NotADump);
        assert_eq!(problem("{\"a\": 1}"), Problem::NotADump);
        assert_eq!(problem("42"), Problem::NotADump);
    }

    #[test]
    fn wrong_format() {
        let p = problem(&GOOD.replace("\"heapledger\"", "\"heaptrack\""));
        assert_eq!(p, Problem::WrongFormat("\"heaptrack\"".into()));
        // Also when the rest does not fit our schema.
        assert_eq!(
            problem("{\"format\": \"massif\"}"),
            Problem::WrongFormat("\"massif\"".into())
        );
    }

    #[test]
    fn unsupported_version() {
        let p = problem(&GOOD.replace("\"version\": 1", "\"version\": 2"));
        assert_eq!(p, Problem::UnsupportedVersion("2".into()));
        // A future version with a different shape is still reported as a version problem.
        let p = problem("{\"format\": \"heapledger\", \"version\": 3, \"blocks\": {}}");
        assert_eq!(p, Problem::UnsupportedVersion("3".into()));
        assert!(p.to_string().contains("version 3"));
    }

    #[test]
    fn incomplete() {
        let text = GOOD.replace(",\n  \"complete\": true", "");
        assert_eq!(problem(&text), Problem::Incomplete);
        assert_eq!(
            problem(&GOOD.replace("\"complete\": true", "\"complete\": false")),
            Problem::Incomplete
        );
    }

    #[test]
    fn wrong_shape_is_invalid() {
        let p = problem(&GOOD.replace("[2000, 64, 0, 2, 1234, 2, 2]", "[2000, 64, 0, 2, 1234, 2]"));
        assert!(matches!(p, Problem::Invalid(_)), "{p:?}");
        let p = problem(&GOOD.replace(
            "[2000, 64, 0, 2, 1234, 2, 2]",
            "[2000, 64, 0, 2, 1234, 2, 2, 9]",
        ));
        assert!(matches!(p, Problem::Invalid(_)), "{p:?}");
        let p = problem(&GOOD.replace("\"pid\": 1234", "\"pid\": -1"));
        assert!(matches!(p, Problem::Invalid(_)), "{p:?}");
        let p = problem(&GOOD.replace("\"kind\": \"double_free\"", "\"kind\": \"use_after_free\""));
        assert!(p.to_string().contains("use_after_free"), "{p}");
    }

    #[test]
    fn out_of_range_ids() {
        let p = problem(&GOOD.replace("[1000, 32, 1, 0", "[1000, 32, 2, 0"));
        assert_eq!(
            p.to_string(),
            "invalid dump: block 0 (addr 0x3e8) refers to stack 2, but the dump has only 2 stacks"
        );
        let p = problem(&GOOD.replace("[1000, 32, 1, 0", "[1000, 32, 1, 4"));
        assert!(p.to_string().contains("allocator family 4"), "{p}");
        let p = problem(&GOOD.replace("1234, 1, 0]", "1234, 1, 4]"));
        assert!(p.to_string().contains("reachability class 4"), "{p}");
        let p = problem(&GOOD.replace("\"alloc_stack\": 1", "\"alloc_stack\": 99"));
        assert!(
            p.to_string()
                .contains("error 0 (double_free) alloc_stack refers to stack 99"),
            "{p}"
        );
        let p = problem(&GOOD.replace("\"first_free_stack\": null", "\"first_free_stack\": 5"));
        assert!(
            p.to_string().contains("first_free_stack refers to stack 5"),
            "{p}"
        );
        let p = problem(&GOOD.replace("\"stack\": 1,", "\"stack\": 18446744073709551615,"));
        assert!(
            p.to_string()
                .contains("refers to stack 18446744073709551615"),
            "{p}"
        );
    }

    #[test]
    fn segment_overflow() {
        let p = problem(&GOOD.replace("[8192, 4096, 6]", "[18446744073709551000, 4096, 6]"));
        assert!(
            p.to_string()
                .contains("beyond the end of the address space"),
            "{p}"
        );
    }

    #[test]
    fn deep_nesting_does_not_overflow_the_stack() {
        let text = format!(
            "{{\"format\": {}{}",
            "[".repeat(100_000),
            "]".repeat(100_000)
        );
        assert!(parse(text.as_bytes()).is_err());
    }

    #[test]
    fn load_error_display_is_one_line() {
        let dir =
            std::env::temp_dir().join(format!("heapledger-format-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let cases: [(&str, &str); 3] = [
            ("empty.json", ""),
            ("cut.json", &GOOD[..300]),
            ("multi.json", "{\"format\":\"x\n\"}"),
        ];
        for (name, text) in cases {
            let path = dir.join(name);
            std::fs::write(&path, text).unwrap();
            let e = load(&path).unwrap_err().to_string();
            assert!(!e.contains('\n'), "{e:?}");
            assert!(e.starts_with(&path.display().to_string()), "{e}");
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
