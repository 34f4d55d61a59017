//! Turns a validated dump into what a report shows: live blocks grouped into allocation sites, errors with
//! their stacks, and warnings about anything that makes the numbers less than exact. Renderers only format
//! this; they make no decisions.

use std::collections::HashMap;

use heapledger_format::{Dump, ErrorCounts, ErrorKind, Live, Totals, Tracer};

use crate::symbolize::{Frame, Symbolizer};

/// What to compute.
#[derive(Debug, Clone, Copy, Default)]
pub struct Options {
    /// Keep (and symbolize) only the biggest this many leak sites; `None` keeps all.
    pub leak_limit: Option<usize>,
}

/// Everything a renderer needs about one dump.
#[derive(Debug, Clone)]
pub struct Report {
    /// The dump file, as named on the command line.
    pub dump_path: String,
    /// Process id.
    pub pid: u64,
    /// Parent process id.
    pub ppid: u64,
    /// Why the dump was written.
    pub reason: String,
    /// Signal name etc.
    pub detail: String,
    /// Executable path.
    pub exe: String,
    /// Command line.
    pub cmdline: Vec<String>,
    /// Exact counters.
    pub totals: Totals,
    /// Live heap (as counted by the tracer, exact even when sampling).
    pub live: Live,
    /// Exact error counts (the item list may be capped by the tracer).
    pub error_counts: ErrorCounts,
    /// Each recorded error, in the order the tracer recorded them.
    pub errors: Vec<ErrorItem>,
    /// Identical errors grouped, for readers who want one entry per distinct bug; in first-seen order.
    pub error_sites: Vec<ErrorSite>,
    /// Live blocks grouped by allocation site, biggest first; truncated to [`Options::leak_limit`].
    pub leaks: Vec<LeakSite>,
    /// Number of leak sites before truncation.
    pub leak_sites_total: usize,
    /// Bytes in all leak sites before truncation (estimated when sampling).
    pub leak_bytes_total: u64,
    /// The tracer's health counters.
    pub tracer: Tracer,
    /// Sampling period in bytes (0: exact).
    pub sample_bytes: u64,
    /// Things that make the report less than exact or complete.
    pub warnings: Vec<String>,
    /// Where the process crashed (crash dumps only).
    pub crash: Option<CrashSite>,
}

/// A crash: the signal, its code and address, and the crashing thread's symbolized stack.
#[derive(Debug, Clone)]
pub struct CrashSite {
    /// Signal number.
    pub signal: u64,
    /// Signal name, e.g. "SIGSEGV".
    pub name: String,
    /// `si_code`.
    pub code: i64,
    /// `si_addr`.
    pub addr: u64,
    /// Crashing thread.
    pub tid: u64,
    /// From the signal trampoline outwards: the faulting function is the first frame after it.
    pub frames: Vec<Frame>,
}

/// One recorded bad free, symbolized.
#[derive(Debug, Clone)]
pub struct ErrorItem {
    /// What went wrong.
    pub kind: ErrorKind,
    /// Pointer passed to the free function.
    pub addr: u64,
    /// Block size (0 if unknown).
    pub size: u64,
    /// Family the block was allocated with.
    pub allocator: String,
    /// Function that freed it.
    pub freed_with: String,
    /// Invalid-free detail.
    pub detail: String,
    /// Where the bad free happened.
    pub free: Vec<Frame>,
    /// Where the block was allocated, if known.
    pub alloc: Option<Vec<Frame>>,
    /// Where it was first freed (double frees), if known.
    pub first_free: Option<Vec<Frame>>,
}

/// Errors that are the same bug: same kind, same stacks, same functions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ErrorSite {
    /// Index into [`Report::errors`] of the first occurrence.
    pub first: usize,
    /// Number of recorded occurrences.
    pub count: u64,
}

/// Live blocks allocated from one stack with one allocator.
#[derive(Debug, Clone)]
pub struct LeakSite {
    /// Stack id in the dump.
    pub stack: u64,
    /// Allocator family name.
    pub allocator: String,
    /// Number of blocks (estimated when sampling).
    pub blocks: u64,
    /// Bytes (estimated when sampling).
    pub bytes: u64,
    /// Blocks per reachability class (see `heapledger_format::class`), unscaled sample counts.
    pub classes: [u64; 4],
    /// The allocation stack, innermost first.
    pub frames: Vec<Frame>,
}

/// Analyses `dump` (already validated by the loader) using `symbolizer` for its stacks.
pub fn analyse(
    dump: &Dump,
    dump_path: &str,
    symbolizer: &mut Symbolizer,
    options: Options,
) -> Report {
    let mut leaks = group_leaks(dump);
    let leak_sites_total = leaks.len();
    let leak_bytes_total = leaks
        .iter()
        .map(|s| s.bytes)
        .fold(0u64, u64::saturating_add);
    if let Some(limit) = options.leak_limit {
        leaks.truncate(limit);
    }
    for site in &mut leaks {
        site.frames = symbolizer.stack_of(site.stack, dump.stack(site.stack));
    }

    let errors: Vec<ErrorItem> = dump
        .errors
        .iter()
        .map(|e| ErrorItem {
            kind: e.kind,
            addr: e.addr,
            size: e.size,
            allocator: e.allocator.clone(),
            freed_with: e.freed_with.clone(),
            detail: e.detail.clone(),
            free: symbolizer.stack_of(e.stack, dump.stack(e.stack)),
            alloc: e.alloc_stack.map(|s| symbolizer.stack_of(s, dump.stack(s))),
            first_free: e
                .first_free_stack
                .map(|s| symbolizer.stack_of(s, dump.stack(s))),
        })
        .collect();

    let crash = dump.crash.map(|c| CrashSite {
        signal: c.signal,
        name: if dump.detail.is_empty() {
            format!("signal {}", c.signal)
        } else {
            dump.detail.clone()
        },
        code: c.code,
        addr: c.addr,
        tid: c.tid,
        frames: symbolizer.stack_of(c.stack, dump.stack(c.stack)),
    });
    let mut warnings = tracer_warnings(dump);
    warnings.extend(symbolizer.warnings().iter().cloned());

    Report {
        dump_path: dump_path.to_owned(),
        pid: dump.pid,
        ppid: dump.ppid,
        reason: dump.reason.clone(),
        detail: dump.detail.clone(),
        exe: dump.exe.clone(),
        cmdline: dump.cmdline.clone(),
        totals: dump.totals,
        live: dump.live,
        error_counts: dump.error_counts,
        error_sites: group_errors(dump),
        errors,
        leaks,
        leak_sites_total,
        leak_bytes_total,
        tracer: dump.tracer.clone(),
        sample_bytes: dump.sample_bytes,
        warnings,
        crash,
    }
}

/// Groups live blocks by (stack, allocator), biggest bytes first, then most blocks, then stack id so the order
/// is reproducible. Frames are left empty for the caller to fill.
///
/// The allocator is part of the key only so a site has one allocator to show: a real call site calls one
/// allocator, but the empty stack 0 (stacks the tracer could not record) collects blocks of every family.
pub fn group_leaks(dump: &Dump) -> Vec<LeakSite> {
    #[derive(Default)]
    struct Acc {
        blocks: f64,
        bytes: f64,
        exact_blocks: u64,
        exact_bytes: u64,
        classes: [u64; 4],
    }
    let sampling = dump.sample_bytes > 0;
    let mut groups: HashMap<(u64, u64), Acc> = HashMap::new();
    for b in &dump.blocks {
        let acc = groups.entry((b.stack, b.family)).or_default();
        acc.exact_blocks += 1;
        acc.exact_bytes = acc.exact_bytes.saturating_add(b.size);
        if sampling {
            let w = sample_weight(b.size, dump.sample_bytes);
            acc.blocks += w;
            acc.bytes += w * b.size as f64;
        }
        if let Some(c) = usize::try_from(b.class)
            .ok()
            .and_then(|c| acc.classes.get_mut(c))
        {
            *c += 1;
        }
    }
    let mut sites: Vec<LeakSite> = groups
        .into_iter()
        .map(|((stack, family), acc)| {
            let (blocks, bytes) = if sampling {
                (acc.blocks.round() as u64, acc.bytes.round() as u64)
            } else {
                (acc.exact_blocks, acc.exact_bytes)
            };
            LeakSite {
                stack,
                allocator: dump.allocator(family).to_owned(),
                blocks,
                bytes,
                classes: acc.classes,
                frames: Vec::new(),
            }
        })
        .collect();
    sites.sort_by(|a, b| {
        b.bytes
            .cmp(&a.bytes)
            .then(b.blocks.cmp(&a.blocks))
            .then(a.stack.cmp(&b.stack))
            .then(a.allocator.cmp(&b.allocator))
    });
    sites
}

/// How many blocks of `size` bytes one sampled block stands for (docs/dump-format.md, "Sampling").
pub fn sample_weight(size: u64, sample_bytes: u64) -> f64 {
    if size == 0 || sample_bytes == 0 {
        // The formula diverges at 0; a zero-size block that was sampled at all stands for itself.
        return 1.0;
    }
    // 1 - exp(-x) computed as -expm1(-x): exact for small x, where 1 - exp(-x) would cancel to 0.
    1.0 / -(-(size as f64) / sample_bytes as f64).exp_m1()
}

/// Groups identical errors (same kind, stacks, allocator, free function and detail), in first-seen order.
pub fn group_errors(dump: &Dump) -> Vec<ErrorSite> {
    let mut index: HashMap<_, usize> = HashMap::new();
    let mut sites: Vec<ErrorSite> = Vec::new();
    for (i, e) in dump.errors.iter().enumerate() {
        let key = (
            e.kind,
            e.stack,
            e.alloc_stack,
            e.first_free_stack,
            &e.allocator,
            &e.freed_with,
            &e.detail,
        );
        match index.get(&key) {
            Some(&site) => sites[site].count += 1,
            None => {
                index.insert(key, sites.len());
                sites.push(ErrorSite { first: i, count: 1 });
            }
        }
    }
    sites
}

/// Warnings about the tracer's own losses and about estimates: a report must never look more exact than it is.
fn tracer_warnings(dump: &Dump) -> Vec<String> {
    let t = &dump.tracer;
    let mut w = Vec::new();
    if dump.sample_bytes > 0 {
        w.push(format!(
            "sampling mode (one sample per {} bytes on average): leak site blocks and bytes are estimates",
            dump.sample_bytes
        ));
    }
    if t.lost_blocks > 0 {
        w.push(format!(
            "the tracer ran out of memory and did not record {} allocation(s); live blocks are undercounted",
            t.lost_blocks
        ));
    }
    if t.lost_stacks > 0 {
        w.push(format!(
            "{} stack(s) could not be recorded; their blocks are shown with an empty stack",
            t.lost_stacks
        ));
    }
    if t.lost_errors > 0 {
        w.push(format!(
            "{} error(s) counted but not kept (too many errors); only the first are shown",
            t.lost_errors
        ));
    }
    if t.truncated_stacks > 0 {
        w.push(format!(
            "{} stack(s) were cut at {} frames; use --depth to record more",
            t.truncated_stacks, dump.depth
        ));
    }
    let kept = dump.errors.len() as u64;
    let counted = dump.error_counts.total();
    if kept < counted && t.lost_errors == 0 {
        w.push(format!("{counted} error(s) counted but only {kept} kept"));
    }
    w
}

#[cfg(test)]
mod tests {
    use super::*;
    use heapledger_format::Block;

    /// A dump with no modules; blocks and stacks filled in by each test.
    pub(crate) fn empty_dump() -> Dump {
        let text = include_str!("../tests/data/small.json");
        let mut d = heapledger_format::parse(text.as_bytes()).expect("test dump parses");
        d.modules.clear();
        d.blocks.clear();
        d.errors.clear();
        d.stacks = vec![vec![], vec![0x10], vec![0x20], vec![0x30]];
        d
    }

    fn block(size: u64, stack: u64, family: u64) -> Block {
        Block {
            addr: 0x1000,
            size,
            stack,
            family,
            tid: 1,
            seq: 0,
            class: 0,
        }
    }

    #[test]
    fn groups_by_stack_and_sorts_by_bytes_then_blocks() {
        let mut d = empty_dump();
        d.blocks = vec![
            block(10, 1, 0),
            block(10, 1, 0),
            block(5, 2, 0),
            block(15, 2, 0), // stack 2: 20 bytes in 2 blocks, same bytes as stack 3 but more blocks
            block(20, 3, 2),
            block(100, 0, 0),
            block(1, 0, 2), // stack 0 collects several families: separate sites
        ];
        let sites = group_leaks(&d);
        let got: Vec<_> = sites
            .iter()
            .map(|s| (s.stack, s.allocator.as_str(), s.blocks, s.bytes))
            .collect();
        assert_eq!(
            got,
            [
                (0, "malloc", 1, 100),
                (1, "malloc", 2, 20),
                (2, "malloc", 2, 20),
                (3, "new", 1, 20),
                (0, "new", 1, 1)
            ]
        );
    }

    #[test]
    fn sampling_scales_blocks_and_bytes() {
        let mut d = empty_dump();
        d.sample_bytes = 1000;
        // A 1000-byte sample stands for 1/(1-e^-1) = 1.582 blocks; a huge one for ~1.
        d.blocks = vec![block(1000, 1, 0), block(1000, 1, 0), block(1_000_000, 2, 0)];
        let sites = group_leaks(&d);
        assert_eq!((sites[0].blocks, sites[0].bytes), (1, 1_000_000));
        assert_eq!((sites[1].blocks, sites[1].bytes), (3, 3164));
        assert!((sample_weight(1, 1_000_000) - 1_000_000.5).abs() < 1.0);
        assert_eq!(sample_weight(0, 1000), 1.0);
    }

    #[test]
    fn counts_reachability_classes() {
        let mut d = empty_dump();
        d.blocks = vec![
            block(1, 1, 0),
            Block {
                class: 2,
                ..block(1, 1, 0)
            },
            Block {
                class: 3,
                ..block(1, 1, 0)
            },
        ];
        assert_eq!(group_leaks(&d)[0].classes, [1, 0, 1, 1]);
    }

    #[test]
    fn groups_identical_errors() {
        let text = include_str!("../tests/data/small.json");
        let mut d = heapledger_format::parse(text.as_bytes()).unwrap();
        let e = d.errors[0].clone();
        d.errors = vec![
            e.clone(),
            e.clone(),
            heapledger_format::ErrorRecord {
                stack: 0,
                ..e.clone()
            },
            e,
        ];
        let sites = group_errors(&d);
        assert_eq!(
            sites,
            [
                ErrorSite { first: 0, count: 3 },
                ErrorSite { first: 2, count: 1 }
            ]
        );
    }

    #[test]
    fn analyse_limits_and_warns() {
        let mut d = empty_dump();
        d.blocks = vec![block(1, 1, 0), block(2, 2, 0), block(3, 3, 0)];
        d.tracer.truncated_stacks = 4;
        let mut sym = Symbolizer::new(&d);
        let r = analyse(
            &d,
            "x.json",
            &mut sym,
            Options {
                leak_limit: Some(2),
            },
        );
        assert_eq!(r.leak_sites_total, 3);
        assert_eq!(r.leaks.iter().map(|s| s.bytes).collect::<Vec<_>>(), [3, 2]);
        // No module covers the addresses: raw frames, address as offset.
        assert_eq!(r.leaks[0].frames[0].address, 0x30);
        assert_eq!(r.leaks[0].frames[0].module, None);
        assert!(
            r.warnings.iter().any(|w| w.contains("cut at")),
            "{:?}",
            r.warnings
        );
    }
}
