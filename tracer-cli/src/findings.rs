//! Findings: what the gate judges. Each loaded dump is turned into a list of findings (a leak site of one
//! reachability class, a group of identical bad frees, a process that died of a signal), each with its
//! symbolized stacks and a stable fingerprint. Suppressions, baselines and the pass/fail decision are applied
//! later (`gate`); this module only says what is there.
//!
//! Which dump counts for a process: the dumps of one process (same pid and start time) are cumulative, so only
//! one is used: its final dump (`exit`, `_exit`, `crash`) if it wrote one, else its latest snapshot. Leaks are
//! judged only in `exit`/`_exit` dumps, where the library classified every block; a snapshot's live blocks
//! are simply in use, and a crash dump is unclassified (the crash itself is the finding).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use heapledger_format::{class, reason, Dump, ErrorKind, Live, Totals};

use crate::analyse;
use crate::fingerprint;
use crate::symbolize::{Frame, Symbolizer};

/// What a finding is. The names (`name()`) are part of the command line (`--fail-on`, `--max`), of the JSON,
/// SARIF and JUnit outputs and of fingerprints: they never change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    /// Blocks live at exit that nothing points to.
    DefinitelyLost,
    /// Blocks live at exit pointed to only by lost blocks.
    IndirectlyLost,
    /// Blocks live at exit that are still reachable (not a leak by default).
    Reachable,
    /// Blocks live at exit that were not classified (the reachability scan was off).
    Unclassified,
    /// A block freed twice.
    DoubleFree,
    /// A free of something that is not a live heap block.
    InvalidFree,
    /// A block freed with the wrong function family (`free` on `new`, ...).
    MismatchedFree,
    /// A block freed through another heap than the one that allocated it (Windows CRTs).
    CrossHeapFree,
    /// A process killed by a signal (a crash dump, or the program `run` started died of one).
    Signal,
}

impl Kind {
    /// Every kind, in report order.
    pub const ALL: [Kind; 9] = [
        Kind::DefinitelyLost,
        Kind::IndirectlyLost,
        Kind::Reachable,
        Kind::Unclassified,
        Kind::DoubleFree,
        Kind::InvalidFree,
        Kind::MismatchedFree,
        Kind::CrossHeapFree,
        Kind::Signal,
    ];

    /// The stable name: `definitely-lost`, `double-free`, ...
    pub fn name(self) -> &'static str {
        match self {
            Kind::DefinitelyLost => "definitely-lost",
            Kind::IndirectlyLost => "indirectly-lost",
            Kind::Reachable => "reachable",
            Kind::Unclassified => "unclassified",
            Kind::DoubleFree => "double-free",
            Kind::InvalidFree => "invalid-free",
            Kind::MismatchedFree => "mismatched-free",
            Kind::CrossHeapFree => "cross-heap-free",
            Kind::Signal => "signal",
        }
    }

    /// Words for people: `definitely lost`, `double free`, ...
    pub fn title(self) -> &'static str {
        match self {
            Kind::DefinitelyLost => "definitely lost",
            Kind::IndirectlyLost => "indirectly lost",
            Kind::Reachable => "still reachable",
            Kind::Unclassified => "live at exit, not classified",
            Kind::DoubleFree => "double free",
            Kind::InvalidFree => "invalid free",
            Kind::MismatchedFree => "mismatched free",
            Kind::CrossHeapFree => "cross-heap free",
            Kind::Signal => "killed by a signal",
        }
    }

    /// One sentence on what the kind means (SARIF rule descriptions, docs).
    pub fn description(self) -> &'static str {
        match self {
            Kind::DefinitelyLost => {
                "Heap blocks still allocated at exit to which no pointer was found: a leak."
            }
            Kind::IndirectlyLost => {
                "Heap blocks still allocated at exit that are pointed to only by lost blocks (for example the \
                 buffers of a leaked struct): they leak with it."
            }
            Kind::Reachable => {
                "Heap blocks still allocated at exit that a global, a thread stack or TLS still points to."
            }
            Kind::Unclassified => {
                "Heap blocks still allocated at exit whose reachability was not computed (HEAPLEDGER_REACH=0)."
            }
            Kind::DoubleFree => "A heap block freed a second time.",
            Kind::InvalidFree => {
                "A pointer passed to free or delete that is not the start of a live heap block (never allocated, \
                 inside a block, on the stack or in static data)."
            }
            Kind::MismatchedFree => {
                "A heap block released with the wrong function family: free on memory from new, delete on \
                 memory from malloc or new[], delete[] on memory from new, ..."
            }
            Kind::CrossHeapFree => {
                "A heap block released through a different heap than the one that allocated it."
            }
            Kind::Signal => "A process of the run was killed by a signal (it crashed or was killed).",
        }
    }

    /// Leak kinds count blocks and bytes; the others count occurrences.
    pub fn is_leak(self) -> bool {
        matches!(
            self,
            Kind::DefinitelyLost | Kind::IndirectlyLost | Kind::Reachable | Kind::Unclassified
        )
    }

    /// The kind of a bad free.
    pub fn from_error(kind: ErrorKind) -> Kind {
        match kind {
            ErrorKind::DoubleFree => Kind::DoubleFree,
            ErrorKind::InvalidFree => Kind::InvalidFree,
            ErrorKind::MismatchedFree => Kind::MismatchedFree,
            ErrorKind::CrossHeapFree => Kind::CrossHeapFree,
        }
    }

    /// The leak kind of a reachability class.
    pub fn from_class(c: u64) -> Kind {
        match u8::try_from(c).unwrap_or(class::NOT_SCANNED) {
            class::REACHABLE => Kind::Reachable,
            class::DEFINITELY_LOST => Kind::DefinitelyLost,
            class::INDIRECTLY_LOST => Kind::IndirectlyLost,
            _ => Kind::Unclassified,
        }
    }

    /// Parses a stable name (underscores accepted for hyphens).
    pub fn parse(s: &str) -> Option<Kind> {
        let s = s.replace('_', "-");
        Kind::ALL.into_iter().find(|k| k.name() == s)
    }
}

/// A set of kinds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct KindSet(u16);

impl KindSet {
    /// The empty set.
    pub const EMPTY: KindSet = KindSet(0);

    /// A set of the given kinds.
    pub fn of(kinds: &[Kind]) -> KindSet {
        let mut s = KindSet::EMPTY;
        for &k in kinds {
            s.insert(k);
        }
        s
    }

    /// Adds `k`.
    pub fn insert(&mut self, k: Kind) {
        self.0 |= 1 << k as u16;
    }

    /// Whether `k` is in the set.
    pub fn contains(self, k: Kind) -> bool {
        self.0 & (1 << k as u16) != 0
    }

    /// The kinds in the set, in report order.
    pub fn kinds(self) -> impl Iterator<Item = Kind> {
        Kind::ALL.into_iter().filter(move |&k| self.contains(k))
    }

    /// Union.
    pub fn union(self, other: KindSet) -> KindSet {
        KindSet(self.0 | other.0)
    }
}

/// What a stack of a finding shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Where the block was allocated.
    Alloc,
    /// Where the bad free happened.
    Free,
    /// Where a double-freed block was first freed.
    FirstFree,
    /// The crashing thread's stack (crash dumps).
    Crash,
}

impl Role {
    /// `alloc`, `free`, `first_free` (JSON keys).
    pub fn key(self) -> &'static str {
        match self {
            Role::Alloc => "alloc",
            Role::Free => "free",
            Role::FirstFree => "first_free",
            Role::Crash => "crash",
        }
    }

    /// Label for people.
    pub fn label(self) -> &'static str {
        match self {
            Role::Alloc => "allocated here",
            Role::Free => "freed here",
            Role::FirstFree => "first freed here",
            Role::Crash => "crashed here",
        }
    }
}

/// One symbolized stack of a finding, innermost frame first.
#[derive(Debug, Clone)]
pub struct Stack {
    /// What it shows.
    pub role: Role,
    /// Frames, innermost first (inlined functions expanded).
    pub frames: Vec<Frame>,
}

/// What the gate decided about one finding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// Counts against the gate, and the gate failed on its kind.
    Fail,
    /// Counts against the gate, but within the limits given (`--max...`).
    Allowed,
    /// Its kind is not gated (`--fail-on` does not name it).
    Ignored,
    /// Silenced by the suppression rule with this index.
    Suppressed(usize),
    /// Present in the baseline.
    Baseline,
}

impl Status {
    /// `fail`, `allowed`, `ignored`, `suppressed`, `baseline` (JSON values).
    pub fn name(self) -> &'static str {
        match self {
            Status::Fail => "fail",
            Status::Allowed => "allowed",
            Status::Ignored => "ignored",
            Status::Suppressed(_) => "suppressed",
            Status::Baseline => "baseline",
        }
    }
}

/// One thing the gate judges.
#[derive(Debug, Clone)]
pub struct Finding {
    /// What it is.
    pub kind: Kind,
    /// Index into [`Collected::processes`].
    pub process: usize,
    /// Blocks (leaks; estimated when the dump was sampled) or occurrences (errors, signals).
    pub count: u64,
    /// Bytes of those blocks (leaks) or the size of the block concerned (errors; 0 if unknown).
    pub bytes: u64,
    /// Allocator family of the block (`malloc`, `new`, ...), when known.
    pub allocator: String,
    /// The function that freed it (errors).
    pub freed_with: String,
    /// Invalid-free detail (`never_allocated`, `interior`, ...) or the signal name.
    pub detail: String,
    /// The pointer passed to the free function (errors).
    pub addr: Option<u64>,
    /// The stacks, the one that identifies the finding first.
    pub stacks: Vec<Stack>,
    /// Stable identity across runs and builds (see `fingerprint`).
    pub fingerprint: String,
    /// Filled in by the gate.
    pub status: Status,
}

impl Finding {
    /// The stack that identifies the finding (allocation for leaks, the bad free for errors), if any.
    pub fn primary(&self) -> Option<&Stack> {
        self.stacks.first()
    }

    /// One line: `1000 bytes in 1 block definitely lost, allocated with malloc`.
    pub fn headline(&self) -> String {
        let plural = |n: u64, what: &str| {
            if n == 1 {
                format!("{n} {what}")
            } else {
                format!("{n} {what}s")
            }
        };
        match self.kind {
            k if k.is_leak() => format!(
                "{} in {} {}, allocated with {}",
                plural(self.bytes, "byte"),
                plural(self.count, "block"),
                k.title(),
                self.allocator
            ),
            Kind::Signal => {
                if self.detail.is_empty() {
                    "killed by a signal".to_owned()
                } else {
                    format!("killed by {}", self.detail)
                }
            }
            Kind::InvalidFree => {
                let why = match self.detail.as_str() {
                    "never_allocated" => "never allocated".to_owned(),
                    "interior" => format!("points inside a live {}-byte block", self.bytes),
                    "stack" => "a stack address".to_owned(),
                    "static" => "inside a module's static data".to_owned(),
                    "bootstrap" => "inside the tracer's own arena".to_owned(),
                    "unrecorded" => {
                        "not recorded (the tracer keeps the first 1000 errors)".to_owned()
                    }
                    "" => "not a heap block".to_owned(),
                    other => other.to_owned(),
                };
                let times = if self.count > 1 {
                    format!(" ({} times)", self.count)
                } else {
                    String::new()
                };
                let with = if self.freed_with.is_empty() {
                    String::new()
                } else {
                    format!(" with {}", self.freed_with)
                };
                format!("invalid free{with}: {why}{times}")
            }
            k => {
                let times = if self.count > 1 {
                    format!(" ({} times)", self.count)
                } else {
                    String::new()
                };
                if self.detail == "unrecorded" {
                    return format!(
                        "{}{times}: not recorded (the tracer keeps the first 1000 errors)",
                        k.title()
                    );
                }
                let size = if self.bytes > 0 {
                    format!(" of a {}-byte block", self.bytes)
                } else {
                    String::new()
                };
                format!(
                    "{}{size}: allocated with {}, freed with {}{times}",
                    k.title(),
                    self.allocator,
                    self.freed_with
                )
            }
        }
    }
}

/// A process whose dump was used (or which died without one).
#[derive(Debug, Clone, Default)]
pub struct Process {
    /// The dump file used, as named on the command line or in the manifest; `None` for a program that died
    /// without writing one.
    pub dump: Option<String>,
    /// Process id.
    pub pid: u64,
    /// Parent process id.
    pub ppid: u64,
    /// Executable path.
    pub exe: String,
    /// Command line.
    pub cmdline: Vec<String>,
    /// Why the dump was written (`exit`, `_exit`, `crash`, `interval`, ...), or `killed` without a dump.
    pub reason: String,
    /// Signal name etc.
    pub detail: String,
    /// Exact allocation counters.
    pub totals: Totals,
    /// Live heap when the dump was written.
    pub live: Live,
    /// Whether leaks were judged (a final `exit`/`_exit` dump).
    pub leaks_judged: bool,
    /// Things that make this process's findings less than exact.
    pub warnings: Vec<String>,
}

impl Process {
    /// `./prog args (pid 123)`.
    pub fn describe(&self) -> String {
        let cmd = if self.cmdline.is_empty() {
            self.exe.clone()
        } else {
            self.cmdline.join(" ")
        };
        format!("{cmd} (pid {})", self.pid)
    }

    /// The executable's file name.
    pub fn exe_name(&self) -> &str {
        let name = self.exe.rsplit('/').next().unwrap_or(&self.exe);
        if name.is_empty() {
            "unknown"
        } else {
            name
        }
    }
}

/// Everything found in a set of dumps.
#[derive(Debug, Default)]
pub struct Collected {
    /// One entry per process, in the order their dumps were given.
    pub processes: Vec<Process>,
    /// Findings, grouped by process, biggest first within a process.
    pub findings: Vec<Finding>,
    /// Dumps that could not be read (one line each: file and problem).
    pub load_errors: Vec<String>,
}

/// Which optional kinds to compute (reachable and unclassified blocks are numerous and rarely wanted).
#[derive(Debug, Clone, Copy, Default)]
pub struct Want {
    /// Turn still-reachable blocks into findings.
    pub reachable: bool,
    /// Turn unclassified blocks at exit into findings.
    pub unclassified: bool,
}

/// The dumps named on a command line: files as given, directories replaced by the `*.json` files directly in
/// them (sorted), so `check dumps/` works.
pub fn expand_paths(paths: &[PathBuf]) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for p in paths {
        if p.is_dir() {
            let mut inner: Vec<PathBuf> = std::fs::read_dir(p)
                .map(|rd| {
                    rd.filter_map(Result::ok)
                        .map(|e| e.path())
                        .filter(|f| f.extension().is_some_and(|x| x == "json") && f.is_file())
                        .collect()
                })
                .unwrap_or_default();
            inner.sort();
            if inner.is_empty() {
                // Kept so the loader reports it ("cannot read: Is a directory").
                out.push(p.clone());
            }
            out.extend(inner);
        } else {
            out.push(p.clone());
        }
    }
    out
}

/// `s` with line breaks and other control characters escaped (`\n`), so that an error quoting text from a
/// damaged file stays on one line.
pub fn one_line(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() => out.push_str(&c.escape_unicode().to_string()),
            c => out.push(c),
        }
    }
    out
}

/// Loads every dump in `paths`, keeps one per process and turns it into findings.
pub fn collect(paths: &[PathBuf], want: Want) -> Collected {
    /// What is kept of the best dump seen so far for a process.
    struct Best {
        rank: (u8, u64),
        process: Process,
        findings: Vec<Finding>,
        order: usize,
    }
    let mut best: HashMap<(u64, u64), Best> = HashMap::new();
    let mut load_errors = Vec::new();
    let mut symbolizer: Option<Symbolizer> = None;
    for (order, path) in paths.iter().enumerate() {
        let dump = match heapledger_format::load(path) {
            Ok(d) => d,
            Err(e) => {
                load_errors.push(one_line(&e.to_string()));
                continue;
            }
        };
        let key = (dump.pid, dump.start_time_ns);
        let rank = dump_rank(&dump);
        if best.get(&key).is_some_and(|b| b.rank >= rank) {
            continue;
        }
        let symbolizer = match &mut symbolizer {
            Some(s) => {
                s.retarget(&dump);
                s
            }
            None => symbolizer.insert(Symbolizer::new(&dump)),
        };
        let (process, findings) = from_dump(&dump, path, symbolizer, want);
        let order = best.get(&key).map_or(order, |b| b.order);
        best.insert(
            key,
            Best {
                rank,
                process,
                findings,
                order,
            },
        );
    }
    let mut chosen: Vec<Best> = best.into_values().collect();
    chosen.sort_by_key(|b| b.order);
    let mut out = Collected {
        load_errors,
        ..Collected::default()
    };
    for b in chosen {
        let index = out.processes.len();
        out.processes.push(b.process);
        out.findings.extend(b.findings.into_iter().map(|mut f| {
            f.process = index;
            f
        }));
    }
    out
}

/// Final dumps outrank snapshots; among equals, the later snapshot wins.
fn dump_rank(d: &Dump) -> (u8, u64) {
    let is_final = reason::FINAL.contains(&d.reason.as_str());
    (u8::from(is_final), d.snapshot)
}

/// The findings of one dump (with `process` set to 0).
pub fn from_dump(
    dump: &Dump,
    path: &Path,
    symbolizer: &mut Symbolizer,
    want: Want,
) -> (Process, Vec<Finding>) {
    let leaks_judged = reason::LEAKS_JUDGED.contains(&dump.reason.as_str());
    let mut process = Process {
        dump: Some(path.display().to_string()),
        pid: dump.pid,
        ppid: dump.ppid,
        exe: dump.exe.clone(),
        cmdline: dump.cmdline.clone(),
        reason: dump.reason.clone(),
        detail: dump.detail.clone(),
        totals: dump.totals,
        live: dump.live,
        leaks_judged,
        warnings: Vec::new(),
    };
    let mut findings = Vec::new();
    if dump.reason == reason::CRASH {
        let mut f = signal_finding(&dump.detail, &dump.exe);
        if let Some(c) = &dump.crash {
            f.stacks.push(Stack {
                role: Role::Crash,
                frames: symbolizer.stack_of(c.stack, dump.stack(c.stack)),
            });
            f.fingerprint = fingerprint::of(&f);
        }
        findings.push(f);
    }
    if leaks_judged {
        findings.extend(leak_findings(dump, symbolizer, want, &mut process));
    } else if dump.reason == reason::KILLED && dump.live.blocks > 0 {
        process.warnings.push(format!(
            "the program was {}: its {} live blocks are not judged as leaks",
            dump.detail, dump.live.blocks
        ));
    } else if dump.reason != reason::CRASH && dump.live.blocks > 0 {
        process.warnings.push(format!(
            "this is a {} snapshot, not a final dump: its {} live blocks are not judged as leaks",
            dump.reason, dump.live.blocks
        ));
    }
    findings.extend(error_findings(dump, symbolizer));
    fingerprint::disambiguate(&mut findings);
    process.warnings.extend(tracer_warnings(dump));
    process
        .warnings
        .extend(symbolizer.warnings().iter().cloned());
    (process, findings)
}

/// The finding for a process of executable `exe` killed by `signal` (e.g. `SIGSEGV`; empty when unknown).
pub fn signal_finding(signal: &str, exe: &str) -> Finding {
    Finding {
        kind: Kind::Signal,
        process: 0,
        count: 1,
        bytes: 0,
        allocator: String::new(),
        freed_with: String::new(),
        detail: signal.to_owned(),
        addr: None,
        stacks: Vec::new(),
        fingerprint: fingerprint::of_signal(signal, exe),
        status: Status::Fail,
    }
}

/// Live blocks grouped by (stack, allocator, class), for the classes wanted; biggest first.
fn leak_findings(
    dump: &Dump,
    symbolizer: &mut Symbolizer,
    want: Want,
    process: &mut Process,
) -> Vec<Finding> {
    #[derive(Default)]
    struct Acc {
        blocks: u64,
        bytes: u64,
        est_blocks: f64,
        est_bytes: f64,
    }
    let sampling = dump.sample_bytes > 0;
    let mut groups: HashMap<(u64, u64, Kind), Acc> = HashMap::new();
    let mut unclassified = 0u64;
    for b in &dump.blocks {
        let kind = Kind::from_class(b.class);
        let keep = match kind {
            Kind::DefinitelyLost | Kind::IndirectlyLost => true,
            Kind::Reachable => want.reachable,
            _ => {
                unclassified += 1;
                want.unclassified
            }
        };
        if !keep {
            continue;
        }
        let acc = groups.entry((b.stack, b.family, kind)).or_default();
        acc.blocks += 1;
        acc.bytes = acc.bytes.saturating_add(b.size);
        if sampling {
            let w = analyse::sample_weight(b.size, dump.sample_bytes);
            acc.est_blocks += w;
            acc.est_bytes += w * b.size as f64;
        }
    }
    if unclassified > 0 && !want.unclassified {
        process.warnings.push(format!(
            "{unclassified} block(s) live at exit were not classified (reachability scan off: \
             HEAPLEDGER_REACH=0?); leaks cannot be judged: add --fail-on unclassified to gate on them"
        ));
    }
    let mut sites: Vec<((u64, u64, Kind), Acc)> = groups.into_iter().collect();
    let size = |a: &Acc| {
        if sampling {
            (a.est_blocks.round() as u64, a.est_bytes.round() as u64)
        } else {
            (a.blocks, a.bytes)
        }
    };
    sites.sort_by(|(ka, a), (kb, b)| {
        let (ab, ay) = size(a);
        let (bb, by) = size(b);
        ka.2.cmp(&kb.2)
            .then(by.cmp(&ay))
            .then(bb.cmp(&ab))
            .then(ka.0.cmp(&kb.0))
            .then(ka.1.cmp(&kb.1))
    });
    sites
        .into_iter()
        .map(|((stack, family, kind), acc)| {
            let (count, bytes) = size(&acc);
            let mut f = Finding {
                kind,
                process: 0,
                count,
                bytes,
                allocator: dump.allocator(family).to_owned(),
                freed_with: String::new(),
                detail: String::new(),
                addr: None,
                stacks: vec![Stack {
                    role: Role::Alloc,
                    frames: symbolizer.stack_of(stack, dump.stack(stack)),
                }],
                fingerprint: String::new(),
                status: Status::Fail,
            };
            f.fingerprint = fingerprint::of(&f);
            f
        })
        .collect()
}

/// Bad frees, identical ones grouped; plus one finding per kind for errors counted but not kept.
fn error_findings(dump: &Dump, symbolizer: &mut Symbolizer) -> Vec<Finding> {
    let mut out = Vec::new();
    let mut kept = [0u64; 4];
    for site in analyse::group_errors(dump) {
        let Some(e) = dump.errors.get(site.first) else {
            continue;
        };
        kept[e.kind as usize] += site.count;
        let mut stacks = vec![Stack {
            role: Role::Free,
            frames: symbolizer.stack_of(e.stack, dump.stack(e.stack)),
        }];
        if let Some(s) = e.first_free_stack {
            stacks.push(Stack {
                role: Role::FirstFree,
                frames: symbolizer.stack_of(s, dump.stack(s)),
            });
        }
        if let Some(s) = e.alloc_stack {
            stacks.push(Stack {
                role: Role::Alloc,
                frames: symbolizer.stack_of(s, dump.stack(s)),
            });
        }
        let mut f = Finding {
            kind: Kind::from_error(e.kind),
            process: 0,
            count: site.count,
            bytes: e.size,
            allocator: e.allocator.clone(),
            freed_with: e.freed_with.clone(),
            detail: e.detail.clone(),
            addr: Some(e.addr),
            stacks,
            fingerprint: String::new(),
            status: Status::Fail,
        };
        f.fingerprint = fingerprint::of(&f);
        out.push(f);
    }
    for kind in ErrorKind::ALL {
        let missing = dump
            .error_counts
            .get(kind)
            .saturating_sub(kept[kind as usize]);
        if missing > 0 {
            let mut f = Finding {
                kind: Kind::from_error(kind),
                process: 0,
                count: missing,
                bytes: 0,
                allocator: String::new(),
                freed_with: String::new(),
                detail: "unrecorded".to_owned(),
                addr: None,
                stacks: Vec::new(),
                fingerprint: String::new(),
                status: Status::Fail,
            };
            f.fingerprint = fingerprint::of(&f);
            out.push(f);
        }
    }
    out
}

/// The tracer's losses, which make a clean verdict less than certain.
fn tracer_warnings(dump: &Dump) -> Vec<String> {
    let t = &dump.tracer;
    let mut w = Vec::new();
    if dump.sample_bytes > 0 {
        w.push(format!(
            "sampled dump (one sample per {} bytes on average): leak figures are estimates and small leaks may \
             be missed",
            dump.sample_bytes
        ));
    }
    if t.lost_blocks > 0 {
        w.push(format!(
            "the tracer ran out of memory and did not record {} allocation(s): leaks may be missed",
            t.lost_blocks
        ));
    }
    if t.lost_stacks > 0 {
        w.push(format!(
            "{} stack(s) could not be recorded; their findings have an empty stack",
            t.lost_stacks
        ));
    }
    w
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_stay_on_one_line() {
        assert_eq!(one_line("a\nb\r\tc\u{1}"), "a\\nb\\r\\tc\\u{1}");
        assert_eq!(one_line("plain"), "plain");
    }

    #[test]
    fn kind_names_round_trip() {
        for k in Kind::ALL {
            assert_eq!(Kind::parse(k.name()), Some(k));
        }
        assert_eq!(Kind::parse("double_free"), Some(Kind::DoubleFree));
        assert_eq!(Kind::parse("leak"), None);
    }

    #[test]
    fn kind_sets() {
        let s = KindSet::of(&[Kind::DoubleFree, Kind::Signal]);
        assert!(s.contains(Kind::DoubleFree) && s.contains(Kind::Signal));
        assert!(!s.contains(Kind::DefinitelyLost));
        assert_eq!(
            s.union(KindSet::of(&[Kind::DefinitelyLost]))
                .kinds()
                .collect::<Vec<_>>(),
            [Kind::DefinitelyLost, Kind::DoubleFree, Kind::Signal]
        );
    }

    #[test]
    fn classes_map_to_kinds() {
        assert_eq!(Kind::from_class(0), Kind::Unclassified);
        assert_eq!(Kind::from_class(1), Kind::Reachable);
        assert_eq!(Kind::from_class(2), Kind::DefinitelyLost);
        assert_eq!(Kind::from_class(3), Kind::IndirectlyLost);
        assert_eq!(Kind::from_class(u64::MAX), Kind::Unclassified);
    }

    fn small() -> Dump {
        heapledger_format::parse(include_bytes!("../tests/data/small.json")).unwrap()
    }

    #[test]
    fn findings_of_the_example_dump() {
        let mut d = small();
        // small.json has no classes; give it some.
        d.blocks[0].class = 2;
        d.blocks[1].class = 3;
        d.blocks[2].class = 3;
        d.blocks[3].class = 1;
        let mut sym = Symbolizer::new(&d);
        let (p, f) = from_dump(&d, Path::new("small.json"), &mut sym, Want::default());
        assert_eq!(p.pid, 4242);
        assert!(p.leaks_judged);
        let summary: Vec<(Kind, u64, u64)> = f.iter().map(|f| (f.kind, f.count, f.bytes)).collect();
        assert_eq!(
            summary,
            [
                (Kind::DefinitelyLost, 1, 1000),
                (Kind::IndirectlyLost, 2, 32),
                (Kind::DoubleFree, 1, 32),
                (Kind::InvalidFree, 1, 16),
            ]
        );
        assert_eq!(f[2].stacks.len(), 3);
        assert_eq!(f[2].stacks[0].role, Role::Free);
        assert_eq!(f[2].stacks[1].role, Role::FirstFree);
        assert_eq!(f[3].stacks.len(), 2);
        assert!(f.iter().all(|f| f.fingerprint.len() == 32));

        let (_, with_reachable) = from_dump(
            &d,
            Path::new("small.json"),
            &mut sym,
            Want {
                reachable: true,
                unclassified: false,
            },
        );
        assert!(with_reachable.iter().any(|f| f.kind == Kind::Reachable));
    }

    #[test]
    fn snapshots_and_crashes_are_not_judged_for_leaks() {
        let mut d = small();
        d.blocks[0].class = 2;
        d.reason = "interval".into();
        let mut sym = Symbolizer::new(&d);
        let (p, f) = from_dump(&d, Path::new("s.json"), &mut sym, Want::default());
        assert!(!p.leaks_judged);
        assert!(f.iter().all(|f| !f.kind.is_leak()));
        assert!(
            p.warnings.iter().any(|w| w.contains("snapshot")),
            "{:?}",
            p.warnings
        );
        d.reason = "crash".into();
        d.detail = "SIGSEGV".into();
        let (_, f) = from_dump(&d, Path::new("c.json"), &mut sym, Want::default());
        assert_eq!(f[0].kind, Kind::Signal);
        assert_eq!(f[0].headline(), "killed by SIGSEGV");
    }

    #[test]
    fn unrecorded_errors_become_findings() {
        let mut d = small();
        d.error_counts.double_free = 5;
        let mut sym = Symbolizer::new(&d);
        let (_, f) = from_dump(&d, Path::new("x.json"), &mut sym, Want::default());
        let extra: Vec<&Finding> = f.iter().filter(|f| f.detail == "unrecorded").collect();
        assert_eq!(extra.len(), 1);
        assert_eq!((extra[0].kind, extra[0].count), (Kind::DoubleFree, 4));
    }

    #[test]
    fn unclassified_blocks_warn_unless_wanted() {
        let d = small();
        let mut sym = Symbolizer::new(&d);
        let (p, f) = from_dump(&d, Path::new("x.json"), &mut sym, Want::default());
        assert!(f.iter().all(|f| !f.kind.is_leak()));
        assert!(p.warnings.iter().any(|w| w.contains("not classified")));
        let (_, f) = from_dump(
            &d,
            Path::new("x.json"),
            &mut sym,
            Want {
                reachable: false,
                unclassified: true,
            },
        );
        assert_eq!(f.iter().filter(|f| f.kind == Kind::Unclassified).count(), 3);
    }

    #[test]
    fn headlines() {
        let mut f = signal_finding("", "/bin/x");
        assert_eq!(f.headline(), "killed by a signal");
        f.kind = Kind::DefinitelyLost;
        f.count = 1;
        f.bytes = 1000;
        f.allocator = "malloc".into();
        assert_eq!(
            f.headline(),
            "1000 bytes in 1 block definitely lost, allocated with malloc"
        );
        f.kind = Kind::MismatchedFree;
        f.bytes = 12;
        f.allocator = "malloc".into();
        f.freed_with = "delete".into();
        f.count = 2;
        assert_eq!(
            f.headline(),
            "mismatched free of a 12-byte block: allocated with malloc, freed with delete (2 times)"
        );
    }
}
