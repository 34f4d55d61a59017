//! The one-line summary of a dump that `heapledger run` prints (on Linux and on Windows alike).

use heapledger_format::{ErrorCounts, ErrorKind as BadFree};

/// The numbers `run` prints per dump (and that gate options test).
#[derive(Debug, Clone)]
pub struct Summary {
    /// Process id (a forked child writes its own dump).
    pub pid: u64,
    /// Why the dump was written.
    pub reason: String,
    /// Reason detail (signal name, exit status).
    pub detail: String,
    /// Live blocks.
    pub live_blocks: u64,
    /// Live bytes.
    pub live_bytes: u64,
    /// Exact error counts.
    pub errors: ErrorCounts,
}

/// The summary of a loaded dump.
pub fn summarise(d: &heapledger_format::Dump) -> Summary {
    Summary {
        pid: d.pid,
        reason: d.reason.clone(),
        detail: d.detail.clone(),
        live_blocks: d.live.blocks,
        live_bytes: d.live.bytes,
        errors: d.error_counts,
    }
}

/// One line per dump: `pid N, reason: X live blocks (Y bytes), errors`.
pub fn summary_line(s: &Summary) -> String {
    let reason = if s.detail.is_empty() {
        s.reason.clone()
    } else {
        format!("{} ({})", s.reason, s.detail)
    };
    let errors: Vec<String> = BadFree::ALL
        .iter()
        .filter(|&&k| s.errors.get(k) > 0)
        .map(|&k| format!("{} {}", s.errors.get(k), k.name()))
        .collect();
    let errors = if errors.is_empty() {
        "no errors".to_owned()
    } else {
        format!("errors: {}", errors.join(", "))
    };
    format!(
        "pid {}, {reason}: {} live blocks ({} bytes), {errors}",
        s.pid, s.live_blocks, s.live_bytes
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_lines() {
        let mut s = Summary {
            pid: 7,
            reason: "exit".into(),
            detail: String::new(),
            live_blocks: 2,
            live_bytes: 96,
            errors: ErrorCounts::default(),
        };
        assert_eq!(
            summary_line(&s),
            "pid 7, exit: 2 live blocks (96 bytes), no errors"
        );
        s.reason = "crash".into();
        s.detail = "SIGSEGV".into();
        s.errors.double_free = 1;
        s.errors.mismatched_free = 3;
        assert_eq!(
            summary_line(&s),
            "pid 7, crash (SIGSEGV): 2 live blocks (96 bytes), errors: 1 double_free, 3 mismatched_free"
        );
    }
}
