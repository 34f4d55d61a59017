//! The CI gate: `heapledger check DUMP...`, and `heapledger run` with gate options.
//!
//! Findings (`findings`) are judged in this order: a suppression rule that matches silences a finding
//! (`suppress`); a finding whose fingerprint is in the baseline is known and does not count (`fingerprint`);
//! a finding of a kind that `--fail-on` does not name is listed but ignored; what remains counts against the
//! limits (`--max-leaked-bytes`, `--max-leaked-blocks`, `--max KIND=N`, all 0 unless given). A process killed
//! by a signal always fails the gate. The outcome is rendered as text, JSON (also a baseline for later runs),
//! SARIF 2.1.0 (`sarif`) or JUnit XML (`junit`).
//!
//! Exit codes (stable, see `docs/gate.md`): the gate's code (`--error-exitcode`, default 23) when it fails;
//! else 2 when a dump, suppression file or baseline could not be used (or no dump was written at all);
//! else 0 for `check`, and the program's own exit code for `run`.

use std::fmt::Write as _;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use clap::ValueEnum;
use serde::Serialize;

use crate::exit;
use crate::findings::{self, Collected, Finding, Kind, KindSet, Process, Stack, Status, Want};
use crate::fingerprint::Baseline;
use crate::render::text::{fold, frame_text, Line};
use crate::suppress::{RuleSet, RuleStat};
use crate::symbolize::Frame;

/// The gate's default exit code when it fails.
pub const DEFAULT_EXIT_CODE: u8 = 23;
/// Value of `"format"` in `check --format json` output.
pub const CHECK_FORMAT: &str = "heapledger-check";
/// Findings of each status shown per process in text output without `--all`.
const TEXT_LIMIT: usize = 20;

/// Gate options, shared by `check` and `run`.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct GateArgs {
    /// What fails the gate, comma-separated: `leak` (definitely + indirectly lost), `definitely-lost`,
    /// `indirectly-lost`, `reachable`, `unclassified`, `bad-free` (the four below), `double-free`,
    /// `invalid-free`, `mismatched-free`, `cross-heap-free`, `default` (leak,bad-free), `all`, `none`.
    /// A process killed by a signal always fails the gate. [default: default]
    #[arg(long, value_name = "KINDS", value_delimiter = ',')]
    pub fail_on: Vec<String>,

    /// Suppression file (LeakSanitizer `leak:PATTERN` lines and/or Valgrind memcheck `{ ... }` blocks);
    /// repeatable.
    #[arg(long = "suppressions", value_name = "FILE")]
    pub suppressions: Vec<PathBuf>,

    /// Do not apply the built-in suppressions (allocations that ld.so makes for itself).
    #[arg(long)]
    pub no_default_suppressions: bool,

    /// Known findings that do not fail the gate: a dump, a `check --format json` output or a heapledger
    /// SARIF log of an earlier run (e.g. of the main branch); repeatable.
    #[arg(long, value_name = "FILE")]
    pub baseline: Vec<PathBuf>,

    /// Fail only when more bytes than this are lost (definitely + indirectly, after suppressions and
    /// baseline).
    #[arg(long, value_name = "BYTES")]
    pub max_leaked_bytes: Option<u64>,

    /// Fail only when more blocks than this are lost.
    #[arg(long, value_name = "BLOCKS")]
    pub max_leaked_blocks: Option<u64>,

    /// Per-kind limit, repeatable: `--max double-free=2` (occurrences), `--max definitely-lost=10` (blocks).
    #[arg(long = "max", value_name = "KIND=N")]
    pub max: Vec<String>,

    /// Exit code when the gate fails [default: 23].
    #[arg(long, value_name = "CODE", value_parser = clap::value_parser!(u8).range(1..))]
    pub error_exitcode: Option<u8>,

    /// Output format of the gate's report.
    #[arg(long, value_enum, default_value_t = OutputFormat::Text)]
    pub format: OutputFormat,

    /// Write the report (in --format) to FILE; a text summary still goes to the terminal.
    #[arg(long, short = 'o', value_name = "FILE")]
    pub output: Option<PathBuf>,

    /// Directory that source paths in SARIF are made relative to [default: the current directory].
    #[arg(long, value_name = "DIR")]
    pub source_root: Option<PathBuf>,

    /// Text output: also show the stacks of suppressed, baseline and ignored findings, and every finding.
    #[arg(long)]
    pub all: bool,
}

impl GateArgs {
    /// Whether any gate option was given (which turns the gate on in `run`).
    pub fn any_given(&self) -> bool {
        !self.fail_on.is_empty()
            || !self.suppressions.is_empty()
            || self.no_default_suppressions
            || !self.baseline.is_empty()
            || self.max_leaked_bytes.is_some()
            || self.max_leaked_blocks.is_some()
            || !self.max.is_empty()
            || self.error_exitcode.is_some()
            || self.format != OutputFormat::Text
            || self.output.is_some()
    }
}

/// Report formats of the gate.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    /// Human-readable.
    #[default]
    Text,
    /// Machine-readable; also usable as a --baseline.
    Json,
    /// SARIF 2.1.0 (code scanning).
    Sarif,
    /// JUnit XML (test reports).
    Junit,
}

/// Options of `heapledger check`.
#[derive(clap::Args, Debug)]
pub struct CheckArgs {
    #[command(flatten)]
    pub gate: GateArgs,

    /// Dump files (or directories of `*.json` dumps), e.g. every dump of one `heapledger run`.
    #[arg(required = true, value_name = "DUMP")]
    pub dumps: Vec<PathBuf>,
}

/// Options of `heapledger suppressions`.
#[derive(clap::Args, Debug)]
pub struct SuppressionsArgs {
    /// Kinds to write rules for (as for `check`).
    #[arg(long, value_name = "KINDS", value_delimiter = ',')]
    pub fail_on: Vec<String>,

    /// Existing suppression files: findings they already silence get no new rule.
    #[arg(long = "suppressions", value_name = "FILE")]
    pub suppressions: Vec<PathBuf>,

    /// Do not apply the built-in suppressions.
    #[arg(long)]
    pub no_default_suppressions: bool,

    /// Dump files (or directories of dumps).
    #[arg(required = true, value_name = "DUMP")]
    pub dumps: Vec<PathBuf>,
}

/// What fails the gate.
#[derive(Debug, Clone)]
pub struct Policy {
    /// Kinds that count (signals always do).
    pub fail_on: KindSet,
    /// `--max-leaked-bytes`.
    pub max_leaked_bytes: Option<u64>,
    /// `--max-leaked-blocks`.
    pub max_leaked_blocks: Option<u64>,
    /// `--max KIND=N`.
    pub max: Vec<(Kind, u64)>,
    /// Exit code when failing.
    pub error_exitcode: u8,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            fail_on: default_kinds(),
            max_leaked_bytes: None,
            max_leaked_blocks: None,
            max: Vec::new(),
            error_exitcode: DEFAULT_EXIT_CODE,
        }
    }
}

fn default_kinds() -> KindSet {
    KindSet::of(&[
        Kind::DefinitelyLost,
        Kind::IndirectlyLost,
        Kind::DoubleFree,
        Kind::InvalidFree,
        Kind::MismatchedFree,
        Kind::CrossHeapFree,
        Kind::Signal,
    ])
}

/// Parses a `--fail-on` list.
pub fn parse_kinds(words: &[String]) -> Result<KindSet, String> {
    if words.is_empty() {
        return Ok(default_kinds());
    }
    let mut set = KindSet::of(&[Kind::Signal]);
    for w in words {
        let w = w.trim().to_ascii_lowercase().replace('_', "-");
        let add = match w.as_str() {
            "" | "none" | "signal" => KindSet::EMPTY,
            "default" => default_kinds(),
            "all" => KindSet::of(&Kind::ALL),
            "leak" | "leaks" => KindSet::of(&[Kind::DefinitelyLost, Kind::IndirectlyLost]),
            "definite" => KindSet::of(&[Kind::DefinitelyLost]),
            "indirect" => KindSet::of(&[Kind::IndirectlyLost]),
            "still-reachable" => KindSet::of(&[Kind::Reachable]),
            "bad-free" | "bad-frees" | "errors" => KindSet::of(&[
                Kind::DoubleFree,
                Kind::InvalidFree,
                Kind::MismatchedFree,
                Kind::CrossHeapFree,
            ]),
            other => match Kind::parse(other) {
                Some(k) => KindSet::of(&[k]),
                None => {
                    return Err(format!(
                        "--fail-on: unknown kind `{other}` (expected leak, definitely-lost, indirectly-lost, \
                         reachable, unclassified, bad-free, double-free, invalid-free, mismatched-free, \
                         cross-heap-free, default, all or none)"
                    ))
                }
            },
        };
        set = set.union(add);
    }
    Ok(set)
}

impl Policy {
    /// The policy the options describe.
    pub fn from_args(a: &GateArgs) -> Result<Policy, String> {
        let mut max = Vec::new();
        for m in &a.max {
            let (k, n) = m
                .split_once('=')
                .ok_or_else(|| format!("--max {m}: expected KIND=N, like double-free=0"))?;
            let kind = Kind::parse(k.trim())
                .filter(|k| *k != Kind::Signal)
                .ok_or_else(|| format!("--max {m}: unknown kind `{}`", k.trim()))?;
            let n: u64 = n
                .trim()
                .parse()
                .map_err(|_| format!("--max {m}: `{}` is not a number", n.trim()))?;
            max.retain(|(k, _)| *k != kind);
            max.push((kind, n));
        }
        Ok(Policy {
            fail_on: parse_kinds(&a.fail_on)?,
            max_leaked_bytes: a.max_leaked_bytes,
            max_leaked_blocks: a.max_leaked_blocks,
            max,
            error_exitcode: a.error_exitcode.unwrap_or(DEFAULT_EXIT_CODE),
        })
    }

    /// The optional finding kinds that need computing.
    pub fn want(&self) -> Want {
        Want {
            reachable: self.fail_on.contains(Kind::Reachable),
            unclassified: self.fail_on.contains(Kind::Unclassified),
        }
    }

    fn limit(&self, k: Kind) -> Option<u64> {
        self.max.iter().find(|(m, _)| *m == k).map(|(_, n)| *n)
    }

    fn leak_limits_given(&self) -> bool {
        self.max_leaked_bytes.is_some()
            || self.max_leaked_blocks.is_some()
            || self.max.iter().any(|(k, _)| k.is_leak())
    }
}

/// Everything read from the command line and files before any dump is looked at.
#[derive(Debug, Default)]
pub struct Config {
    /// What fails.
    pub policy: Policy,
    /// Suppressions, the user's first.
    pub rules: RuleSet,
    /// Known fingerprints.
    pub baseline: Baseline,
}

impl Config {
    /// The gate of `heapledger run`, checked (and its suppression files and baselines read) before the program
    /// runs, so that a typo never costs a whole test run: None when no gate option was given, the error line
    /// when the options are wrong.
    pub fn for_run(a: &GateArgs) -> Result<Option<Config>, String> {
        if !a.any_given() {
            return Ok(None);
        }
        if a.format != OutputFormat::Text && a.output.is_none() {
            return Err(format!(
                "run --format {:?} needs --output FILE (the terminal gets the text summary)",
                a.format
            ));
        }
        Config::load(a).map(Some)
    }

    /// Reads the options, suppression files and baselines; the error is one line.
    pub fn load(a: &GateArgs) -> Result<Config, String> {
        Ok(Config {
            policy: Policy::from_args(a)?,
            rules: RuleSet::load(&a.suppressions, !a.no_default_suppressions)?,
            baseline: Baseline::load(&a.baseline)?,
        })
    }
}

/// Per-kind totals of findings that count.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Tally {
    /// Number of findings.
    pub findings: u64,
    /// Blocks (leaks) or occurrences.
    pub count: u64,
    /// Bytes (leaks).
    pub bytes: u64,
}

/// The decision.
#[derive(Debug, Clone, Default)]
pub struct Verdict {
    /// Whether the gate failed.
    pub failed: bool,
    /// Why it failed (one line each), or, when it passed, what it tolerated.
    pub reasons: Vec<String>,
    /// Totals of the findings that count, per kind (indexed like [`Kind::ALL`]).
    pub tally: [Tally; 9],
}

/// The result of judging a set of dumps.
#[derive(Debug)]
pub struct Outcome {
    /// Processes, as in [`Collected`].
    pub processes: Vec<Process>,
    /// Findings with their status.
    pub findings: Vec<Finding>,
    /// The rules that were applied.
    pub rules: RuleSet,
    /// How often each rule matched (same order as `rules.rules`).
    pub rule_stats: Vec<RuleStat>,
    /// The policy.
    pub policy: Policy,
    /// The baseline used.
    pub baseline: Baseline,
    /// The decision.
    pub verdict: Verdict,
    /// Dumps that could not be read.
    pub load_errors: Vec<String>,
    /// Other problems that make the result incomplete (e.g. no dump written).
    pub problems: Vec<String>,
    /// The exit code.
    pub exit_code: u8,
}

impl Outcome {
    /// The rule that suppressed `f`, if any.
    pub fn rule_of(&self, f: &Finding) -> Option<&crate::suppress::Rule> {
        match f.status {
            Status::Suppressed(i) => self.rules.rules.get(i),
            _ => None,
        }
    }
}

/// Applies suppressions, baseline and policy. `ok_code` is the exit code when the gate passes and nothing
/// went wrong.
pub fn judge(collected: Collected, config: Config, problems: Vec<String>, ok_code: u8) -> Outcome {
    let Collected {
        processes,
        mut findings,
        load_errors,
    } = collected;
    let Config {
        policy,
        rules,
        baseline,
    } = config;
    let rule_stats = rules.apply(&mut findings);
    let mut tally = [Tally::default(); 9];
    for f in &mut findings {
        if matches!(f.status, Status::Suppressed(_)) {
            continue;
        }
        // A crash is never "known": it fails the gate even when the baseline crashed the same way.
        if f.kind != Kind::Signal && baseline.contains(&f.fingerprint) {
            f.status = Status::Baseline;
            continue;
        }
        if !policy.fail_on.contains(f.kind) && f.kind != Kind::Signal {
            f.status = Status::Ignored;
            continue;
        }
        f.status = Status::Allowed;
        let t = &mut tally[f.kind as usize];
        t.findings += 1;
        t.count = t.count.saturating_add(f.count);
        t.bytes = t.bytes.saturating_add(f.bytes);
    }

    let mut failed = KindSet::EMPTY;
    let mut reasons = Vec::new();
    // Signals.
    for f in findings
        .iter()
        .filter(|f| f.kind == Kind::Signal && f.status == Status::Allowed)
    {
        failed.insert(Kind::Signal);
        let p = &processes[f.process];
        reasons.push(format!("{} {}", p.describe(), f.headline()));
    }
    // Bad frees.
    for k in Kind::ALL
        .into_iter()
        .filter(|k| !k.is_leak() && *k != Kind::Signal && policy.fail_on.contains(*k))
    {
        let t = tally[k as usize];
        let limit = policy.limit(k).unwrap_or(0);
        let what = format!("{} {}", t.count, k.title());
        if t.count > limit {
            failed.insert(k);
            reasons.push(if limit == 0 {
                format!("{what} (none allowed)")
            } else {
                format!("{what}, more than --max {}={limit}", k.name())
            });
        } else if t.count > 0 {
            reasons.push(format!("{what}, within --max {}={limit}", k.name()));
        }
    }
    // Leaks.
    let leak_kinds: Vec<Kind> = Kind::ALL
        .into_iter()
        .filter(|k| k.is_leak() && policy.fail_on.contains(*k))
        .collect();
    let (blocks, bytes) = leak_kinds.iter().fold((0u64, 0u64), |(c, b), k| {
        let t = tally[*k as usize];
        (c.saturating_add(t.count), b.saturating_add(t.bytes))
    });
    if blocks > 0 {
        let parts: Vec<String> = leak_kinds
            .iter()
            .filter(|k| tally[**k as usize].count > 0)
            .map(|k| {
                let t = tally[*k as usize];
                format!("{}: {}", k.title(), bytes_in_blocks(t.bytes, t.count))
            })
            .collect();
        let what = format!(
            "{} lost ({})",
            bytes_in_blocks(bytes, blocks),
            parts.join(", ")
        );
        if !policy.leak_limits_given() {
            leak_kinds.iter().for_each(|k| failed.insert(*k));
            reasons.push(format!("{what}; no leak allowed"));
        } else {
            let mut over = Vec::new();
            if let Some(m) = policy.max_leaked_bytes.filter(|m| bytes > *m) {
                over.push(format!("--max-leaked-bytes {m}"));
            }
            if let Some(m) = policy.max_leaked_blocks.filter(|m| blocks > *m) {
                over.push(format!("--max-leaked-blocks {m}"));
            }
            if !over.is_empty() {
                leak_kinds.iter().for_each(|k| failed.insert(*k));
            }
            for &k in &leak_kinds {
                if let Some(m) = policy.limit(k).filter(|m| tally[k as usize].count > *m) {
                    failed.insert(k);
                    over.push(format!("--max {}={m} (blocks)", k.name()));
                }
            }
            if over.is_empty() {
                reasons.push(format!("{what}, within the limits given"));
            } else {
                reasons.push(format!("{what}, more than {}", over.join(" and ")));
            }
        }
    }
    for f in &mut findings {
        if f.status == Status::Allowed && failed.contains(f.kind) {
            f.status = Status::Fail;
        }
    }
    let verdict = Verdict {
        failed: failed != KindSet::EMPTY,
        reasons,
        tally,
    };
    let exit_code = if verdict.failed {
        policy.error_exitcode
    } else if !load_errors.is_empty() || !problems.is_empty() {
        exit::TOOL_ERROR
    } else {
        ok_code
    };
    Outcome {
        processes,
        findings,
        rules,
        rule_stats,
        policy,
        baseline,
        verdict,
        load_errors,
        problems,
        exit_code,
    }
}

fn bytes_in_blocks(bytes: u64, blocks: u64) -> String {
    let s = |n: u64| if n == 1 { "" } else { "s" };
    format!("{bytes} byte{} in {blocks} block{}", s(bytes), s(blocks))
}

// ---- commands ------------------------------------------------------------------------------------------------

/// `heapledger check`.
pub fn check(args: &CheckArgs) -> u8 {
    let config = match Config::load(&args.gate) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("heapledger: {e}");
            return exit::TOOL_ERROR;
        }
    };
    let paths = findings::expand_paths(&args.dumps);
    let collected = findings::collect(&paths, config.policy.want());
    for e in &collected.load_errors {
        eprintln!("heapledger: {e}");
    }
    let outcome = judge(collected, config, Vec::new(), exit::OK);
    emit(&outcome, &args.gate, Terminal::Stdout)
}

/// How `run` ended, for [`after_run`].
pub struct ProgramEnd {
    /// The program's pid.
    pub pid: u32,
    /// The program's name as given on the command line.
    pub program: String,
    /// The signal that killed it, if any.
    pub signal: Option<i32>,
    /// The exit code `run` returns when the gate passes (the program's own, or 128+signal).
    pub code: u8,
}

/// `heapledger run` with gate options, once the program has ended: judges every dump of the run. `config`
/// was loaded before the program started, so that a bad option never costs a whole test run.
pub fn after_run(config: Config, dumps: &[PathBuf], end: &ProgramEnd, args: &GateArgs) -> u8 {
    let mut collected = findings::collect(dumps, config.policy.want());
    let mut problems = Vec::new();
    if let Some(sig) = end.signal {
        let name = crate::run::signal_name(sig);
        let covered = collected.processes.iter().enumerate().any(|(i, p)| {
            p.pid == u64::from(end.pid)
                && collected
                    .findings
                    .iter()
                    .any(|f| f.process == i && f.kind == Kind::Signal)
        });
        if !covered {
            let index = collected.processes.len();
            collected.processes.push(Process {
                dump: None,
                pid: u64::from(end.pid),
                exe: end.program.clone(),
                cmdline: vec![end.program.clone()],
                reason: "killed".to_owned(),
                detail: name.clone(),
                ..Process::default()
            });
            let mut f = findings::signal_finding(&name, &end.program);
            f.process = index;
            collected.findings.push(f);
        }
    }
    if dumps.is_empty() {
        problems.push(
            "no dump was written, so there is nothing to judge (a statically linked or setuid program ignores \
             LD_PRELOAD)"
                .to_owned(),
        );
    }
    let outcome = judge(collected, config, problems, end.code);
    emit(&outcome, args, Terminal::Stderr)
}

/// `heapledger report --format sarif|junit`: the default gate, rendered; exit 0 unless a dump is unreadable.
pub fn report_as(format: OutputFormat, dumps: &[PathBuf]) -> u8 {
    let config = Config {
        rules: RuleSet::load(&[] as &[PathBuf], true).unwrap_or_default(),
        ..Config::default()
    };
    let collected = findings::collect(&findings::expand_paths(dumps), config.policy.want());
    for e in &collected.load_errors {
        eprintln!("heapledger: {e}");
    }
    let outcome = judge(collected, config, Vec::new(), exit::OK);
    let code = if outcome.load_errors.is_empty() {
        exit::OK
    } else {
        exit::TOOL_ERROR
    };
    let args = GateArgs {
        format,
        ..GateArgs::default()
    };
    match write_to_stdout(|out| write_format(out, &outcome, &args)) {
        Ok(()) => code,
        Err(e) => {
            eprintln!("heapledger: cannot write the report: {e}");
            exit::TOOL_ERROR
        }
    }
}

/// `heapledger suppressions`: rules for what is reported now.
pub fn suppressions(args: &SuppressionsArgs) -> u8 {
    let gate = GateArgs {
        fail_on: args.fail_on.clone(),
        suppressions: args.suppressions.clone(),
        no_default_suppressions: args.no_default_suppressions,
        ..GateArgs::default()
    };
    let config = match Config::load(&gate) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("heapledger: {e}");
            return exit::TOOL_ERROR;
        }
    };
    let collected = findings::collect(&findings::expand_paths(&args.dumps), config.policy.want());
    for e in &collected.load_errors {
        eprintln!("heapledger: {e}");
    }
    let outcome = judge(collected, config, Vec::new(), exit::OK);
    let counted: Vec<Finding> = outcome
        .findings
        .iter()
        .filter(|f| matches!(f.status, Status::Fail | Status::Allowed))
        .cloned()
        .collect();
    let text = crate::suppress::generate(&counted, |i| outcome.processes[i].describe());
    eprintln!(
        "heapledger: {} finding(s) to suppress in {} process(es)",
        counted.len(),
        outcome.processes.len()
    );
    match write_to_stdout(|out| out.write_all(text.as_bytes())) {
        Ok(()) if outcome.load_errors.is_empty() => exit::OK,
        Ok(()) => exit::TOOL_ERROR,
        Err(e) => {
            eprintln!("heapledger: cannot write: {e}");
            exit::TOOL_ERROR
        }
    }
}

/// Where the text report goes.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Terminal {
    Stdout,
    Stderr,
}

/// Writes the outcome: the chosen format to `--output` (or to the terminal), plus a text summary on the
/// terminal. Returns the exit code (a write failure is a tool error unless the gate failed anyway).
fn emit(outcome: &Outcome, args: &GateArgs, terminal: Terminal) -> u8 {
    let mut code = outcome.exit_code;
    let mut fail = |what: String| {
        eprintln!("heapledger: {what}");
        if !outcome.verdict.failed {
            code = exit::TOOL_ERROR;
        }
    };
    if let Some(path) = &args.output {
        let written = std::fs::File::create(path).and_then(|f| {
            let mut w = io::BufWriter::new(f);
            write_format(&mut w, outcome, args)?;
            w.flush()
        });
        if let Err(e) = written {
            fail(format!("cannot write {}: {e}", path.display()));
        }
    }
    let text_on_terminal = args.output.is_some() || args.format == OutputFormat::Text;
    let result = match terminal {
        Terminal::Stdout
            if text_on_terminal && args.format == OutputFormat::Text && args.output.is_some() =>
        {
            // The full text report went to the file; the terminal gets the verdict.
            let mut e = io::stderr().lock();
            write_verdict(&mut e, outcome, false)
        }
        Terminal::Stdout if text_on_terminal => {
            write_to_stdout(|out| write_text(out, outcome, args.all))
        }
        Terminal::Stdout => {
            write_to_stdout(|out| write_format(out, outcome, args)).and_then(|()| {
                let mut e = io::stderr().lock();
                write_verdict(&mut e, outcome, false)
            })
        }
        Terminal::Stderr => {
            let mut e = io::stderr().lock();
            write_text(&mut e, outcome, args.all)
        }
    };
    match result {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => {}
        Err(e) => fail(format!("cannot write the report: {e}")),
    }
    code
}

fn write_to_stdout(
    f: impl FnOnce(&mut io::BufWriter<io::StdoutLock<'_>>) -> io::Result<()>,
) -> io::Result<()> {
    let mut out = io::BufWriter::new(io::stdout().lock());
    f(&mut out)?;
    out.flush()
}

fn write_format(out: &mut impl Write, outcome: &Outcome, args: &GateArgs) -> io::Result<()> {
    match args.format {
        OutputFormat::Text => write_text(out, outcome, args.all),
        OutputFormat::Json => write_json(out, outcome),
        OutputFormat::Sarif => {
            let root = match &args.source_root {
                Some(r) => r.clone(),
                None => std::env::current_dir().unwrap_or_else(|_| PathBuf::from("/")),
            };
            crate::sarif::write(out, outcome, &root)
        }
        OutputFormat::Junit => crate::junit::write(out, outcome),
    }
}

// ---- text ----------------------------------------------------------------------------------------------------

/// The human-readable report: per process its findings (stacks of those that count), then suppressions,
/// baseline and the verdict.
pub fn write_text(out: &mut impl Write, o: &Outcome, all: bool) -> io::Result<()> {
    let mut clean = 0usize;
    for (i, p) in o.processes.iter().enumerate() {
        let mine: Vec<&Finding> = o.findings.iter().filter(|f| f.process == i).collect();
        let counted = mine
            .iter()
            .filter(|f| matches!(f.status, Status::Fail | Status::Allowed))
            .count();
        if counted == 0 && p.warnings.is_empty() && !all {
            clean += 1;
            if !mine.is_empty() {
                writeln!(out, "==== {}: {}", p.describe(), hidden_summary(&mine))?;
            }
            continue;
        }
        let dump = p.dump.as_deref().unwrap_or("no dump");
        let reason = if p.detail.is_empty() {
            p.reason.clone()
        } else {
            format!("{} ({})", p.reason, p.detail)
        };
        writeln!(out, "==== {} — {reason}, {dump}", p.describe())?;
        for status in [Status::Fail, Status::Allowed] {
            let list: Vec<&&Finding> = mine.iter().filter(|f| f.status == status).collect();
            let shown = if all {
                list.len()
            } else {
                list.len().min(TEXT_LIMIT)
            };
            for f in &list[..shown] {
                write_finding(out, o, f, true)?;
            }
            if shown < list.len() {
                writeln!(
                    out,
                    "  ... {} more {} finding(s); use --all to show them",
                    list.len() - shown,
                    status.name()
                )?;
            }
        }
        let hidden: Vec<&Finding> = mine
            .iter()
            .copied()
            .filter(|f| !matches!(f.status, Status::Fail | Status::Allowed))
            .collect();
        if all {
            for f in &hidden {
                write_finding(out, o, f, true)?;
            }
        } else if !hidden.is_empty() {
            writeln!(out, "  ({})", hidden_summary(&hidden))?;
        }
        for w in &p.warnings {
            writeln!(out, "  warning: {w}")?;
        }
        writeln!(out)?;
    }
    if clean > 0 && o.processes.len() > 1 {
        writeln!(
            out,
            "{clean} of {} process(es) with nothing that counts against the gate",
            o.processes.len()
        )?;
    }
    write_rule_stats(out, o)?;
    if !o.baseline.is_empty() {
        let known = o
            .findings
            .iter()
            .filter(|f| f.status == Status::Baseline)
            .count();
        writeln!(
            out,
            "baseline: {} known fingerprint(s); {known} finding(s) of this run are in it",
            o.baseline.len()
        )?;
        for s in &o.baseline.sources {
            writeln!(out, "  {s}")?;
        }
    }
    write_verdict(out, o, true)
}

fn hidden_summary(list: &[&Finding]) -> String {
    let count = |s: fn(&Status) -> bool| list.iter().filter(|f| s(&f.status)).count();
    let parts: Vec<String> = [
        (count(|s| matches!(s, Status::Suppressed(_))), "suppressed"),
        (count(|s| *s == Status::Baseline), "in the baseline"),
        (count(|s| *s == Status::Ignored), "of kinds not gated"),
    ]
    .iter()
    .filter(|(n, _)| *n > 0)
    .map(|(n, what)| format!("{n} {what}"))
    .collect();
    format!(
        "{} finding(s) not counted: {}",
        list.len(),
        parts.join(", ")
    )
}

fn write_finding(out: &mut impl Write, o: &Outcome, f: &Finding, stacks: bool) -> io::Result<()> {
    let tag = match f.status {
        Status::Fail => "FAIL",
        Status::Allowed => "allowed",
        Status::Ignored => "ignored",
        Status::Suppressed(_) => "suppressed",
        Status::Baseline => "baseline",
    };
    write!(out, "  {tag} {}: {}", f.kind.name(), f.headline())?;
    if let Some(r) = o.rule_of(f) {
        write!(out, " — by {} ({})", r.text, r.origin)?;
    }
    writeln!(out, "  [{}]", f.fingerprint)?;
    if stacks {
        let several = f.stacks.len() > 1;
        for s in &f.stacks {
            if several {
                writeln!(out, "    {}:", s.role.label())?;
            }
            write_stack(out, s, if several { "      " } else { "    " })?;
        }
    }
    Ok(())
}

fn write_stack(out: &mut impl Write, s: &Stack, indent: &str) -> io::Result<()> {
    if s.frames.is_empty() {
        return writeln!(out, "{indent}(no stack recorded)");
    }
    for (n, line) in fold(&s.frames).into_iter().enumerate() {
        let lead = if n == 0 { "at" } else { "by" };
        match line {
            Line::Frame(f) => writeln!(out, "{indent}{lead} {}", frame_text(f))?,
            Line::Folded(count, modules) => {
                let s = if count == 1 { "" } else { "s" };
                writeln!(
                    out,
                    "{indent}... {count} frame{s} in {}",
                    modules.join(", ")
                )?
            }
        }
    }
    Ok(())
}

fn write_rule_stats(out: &mut impl Write, o: &Outcome) -> io::Result<()> {
    let user: Vec<usize> = (0..o.rules.rules.len())
        .filter(|&i| !o.rules.rules[i].builtin)
        .collect();
    let builtin_hits: Vec<usize> = (0..o.rules.rules.len())
        .filter(|&i| o.rules.rules[i].builtin && o.rule_stats[i].findings > 0)
        .collect();
    if user.is_empty() && builtin_hits.is_empty() && o.rules.ignored.is_empty() {
        return Ok(());
    }
    writeln!(out, "suppressions:")?;
    for i in user.into_iter().chain(builtin_hits) {
        let r = &o.rules.rules[i];
        let s = o.rule_stats[i];
        let what = if s.findings == 0 {
            "never matched".to_owned()
        } else {
            let mut w = format!("matched {} finding(s)", s.findings);
            if s.bytes > 0 {
                let _ = write!(w, " ({})", bytes_in_blocks(s.bytes, s.count));
            } else {
                let _ = write!(w, " ({} occurrence(s))", s.count);
            }
            w
        };
        writeln!(out, "  {}: {} — {what}", r.origin, r.text)?;
    }
    for n in &o.rules.ignored {
        writeln!(out, "  ignored: {n}")?;
    }
    Ok(())
}

/// The last lines: problems (with `inputs`: also the dumps that could not be read, which the commands have
/// already reported on stderr), then `heapledger gate: passed`/`FAILED (exit N)` with the reasons.
pub fn write_verdict(out: &mut impl Write, o: &Outcome, inputs: bool) -> io::Result<()> {
    for p in &o.problems {
        writeln!(out, "problem: {p}")?;
    }
    if inputs {
        for e in &o.load_errors {
            writeln!(out, "unreadable dump: {e}")?;
        }
    }
    let n = o.processes.len();
    if o.verdict.failed {
        writeln!(
            out,
            "heapledger gate: FAILED (exit {}) — {n} process(es) checked",
            o.policy.error_exitcode
        )?;
    } else if o.exit_code == exit::TOOL_ERROR
        && (!o.load_errors.is_empty() || !o.problems.is_empty())
    {
        writeln!(
            out,
            "heapledger gate: INCOMPLETE (exit {}) — nothing failed in the {n} process(es) checked, but not \
             everything could be checked",
            exit::TOOL_ERROR
        )?;
    } else {
        writeln!(out, "heapledger gate: passed — {n} process(es) checked")?;
    }
    if o.verdict.reasons.is_empty() && !o.verdict.failed && n > 0 {
        writeln!(out, "  no leaks, no heap errors")?;
    }
    for r in &o.verdict.reasons {
        writeln!(out, "  - {r}")?;
    }
    Ok(())
}

// ---- JSON ----------------------------------------------------------------------------------------------------

#[derive(Serialize)]
struct JsonOutcome<'a> {
    format: &'static str,
    version: u32,
    passed: bool,
    exit_code: u8,
    reasons: &'a [String],
    policy: JsonPolicy,
    totals: Vec<JsonTotal>,
    processes: Vec<JsonProcess<'a>>,
    findings: Vec<JsonFinding<'a>>,
    suppressions: Vec<JsonRule<'a>>,
    suppressions_ignored: &'a [String],
    baseline: &'a [String],
    problems: Vec<&'a str>,
}

#[derive(Serialize)]
struct JsonPolicy {
    fail_on: Vec<&'static str>,
    max_leaked_bytes: Option<u64>,
    max_leaked_blocks: Option<u64>,
    max: Vec<(&'static str, u64)>,
    error_exitcode: u8,
}

#[derive(Serialize)]
struct JsonTotal {
    kind: &'static str,
    findings: u64,
    count: u64,
    bytes: u64,
}

#[derive(Serialize)]
struct JsonProcess<'a> {
    dump: Option<&'a str>,
    pid: u64,
    ppid: u64,
    exe: &'a str,
    cmdline: &'a [String],
    reason: &'a str,
    detail: &'a str,
    leaks_judged: bool,
    totals: &'a heapledger_format::Totals,
    live: &'a heapledger_format::Live,
    warnings: &'a [String],
}

#[derive(Serialize)]
struct JsonFinding<'a> {
    kind: &'static str,
    status: &'static str,
    fingerprint: &'a str,
    process: usize,
    pid: u64,
    message: String,
    count: u64,
    bytes: u64,
    allocator: &'a str,
    freed_with: &'a str,
    detail: &'a str,
    addr: Option<u64>,
    suppressed_by: Option<JsonRuleRef<'a>>,
    stacks: Vec<JsonStack<'a>>,
}

#[derive(Serialize)]
struct JsonRuleRef<'a> {
    rule: &'a str,
    origin: &'a str,
}

#[derive(Serialize)]
struct JsonStack<'a> {
    role: &'static str,
    frames: Vec<JsonFrame<'a>>,
}

/// A frame, with the same keys as `heapledger report --format json`.
#[derive(Serialize)]
pub struct JsonFrame<'a> {
    address: u64,
    module: Option<&'a str>,
    offset: u64,
    function: Option<&'a str>,
    file: Option<&'a str>,
    line: Option<u32>,
    inlined: bool,
}

impl<'a> From<&'a Frame> for JsonFrame<'a> {
    fn from(f: &'a Frame) -> Self {
        JsonFrame {
            address: f.address,
            module: f.module.as_deref(),
            offset: f.offset,
            function: f.function.as_deref(),
            file: f.file.as_deref(),
            line: f.line,
            inlined: f.inlined,
        }
    }
}

#[derive(Serialize)]
struct JsonRule<'a> {
    rule: &'a str,
    origin: &'a str,
    builtin: bool,
    syntax: &'static str,
    matched_findings: u64,
    matched_count: u64,
    matched_bytes: u64,
}

/// `check --format json`: one object (the `heapledger-check` format, version 1; see docs/gate.md).
pub fn write_json(out: &mut impl Write, o: &Outcome) -> io::Result<()> {
    let j = JsonOutcome {
        format: CHECK_FORMAT,
        version: 1,
        passed: !o.verdict.failed,
        exit_code: o.exit_code,
        reasons: &o.verdict.reasons,
        policy: JsonPolicy {
            fail_on: o.policy.fail_on.kinds().map(Kind::name).collect(),
            max_leaked_bytes: o.policy.max_leaked_bytes,
            max_leaked_blocks: o.policy.max_leaked_blocks,
            max: o.policy.max.iter().map(|(k, n)| (k.name(), *n)).collect(),
            error_exitcode: o.policy.error_exitcode,
        },
        totals: Kind::ALL
            .iter()
            .map(|k| {
                let t = o.verdict.tally[*k as usize];
                JsonTotal {
                    kind: k.name(),
                    findings: t.findings,
                    count: t.count,
                    bytes: t.bytes,
                }
            })
            .collect(),
        processes: o
            .processes
            .iter()
            .map(|p| JsonProcess {
                dump: p.dump.as_deref(),
                pid: p.pid,
                ppid: p.ppid,
                exe: &p.exe,
                cmdline: &p.cmdline,
                reason: &p.reason,
                detail: &p.detail,
                leaks_judged: p.leaks_judged,
                totals: &p.totals,
                live: &p.live,
                warnings: &p.warnings,
            })
            .collect(),
        findings: o
            .findings
            .iter()
            .map(|f| JsonFinding {
                kind: f.kind.name(),
                status: f.status.name(),
                fingerprint: &f.fingerprint,
                process: f.process,
                pid: o.processes[f.process].pid,
                message: f.headline(),
                count: f.count,
                bytes: f.bytes,
                allocator: &f.allocator,
                freed_with: &f.freed_with,
                detail: &f.detail,
                addr: f.addr,
                suppressed_by: o.rule_of(f).map(|r| JsonRuleRef {
                    rule: &r.text,
                    origin: &r.origin,
                }),
                stacks: f
                    .stacks
                    .iter()
                    .map(|s| JsonStack {
                        role: s.role.key(),
                        frames: s.frames.iter().map(JsonFrame::from).collect(),
                    })
                    .collect(),
            })
            .collect(),
        suppressions: o
            .rules
            .rules
            .iter()
            .zip(&o.rule_stats)
            .map(|(r, s)| JsonRule {
                rule: &r.text,
                origin: &r.origin,
                builtin: r.builtin,
                syntax: match r.syntax {
                    crate::suppress::Syntax::Lsan => "lsan",
                    crate::suppress::Syntax::Valgrind => "valgrind",
                },
                matched_findings: s.findings,
                matched_count: s.count,
                matched_bytes: s.bytes,
            })
            .collect(),
        suppressions_ignored: &o.rules.ignored,
        baseline: &o.baseline.sources,
        problems: o
            .problems
            .iter()
            .chain(&o.load_errors)
            .map(String::as_str)
            .collect(),
    };
    serde_json::to_writer(&mut *out, &j).map_err(io::Error::from)?;
    out.write_all(b"\n")
}

/// Source location to show for a finding: the innermost user frame with a file (else any frame with one).
pub fn location(f: &Finding) -> Option<&Frame> {
    let frames = &f.primary()?.frames;
    crate::fingerprint::user_frames(frames)
        .into_iter()
        .find(|fr| fr.file.is_some())
        .or_else(|| frames.iter().find(|fr| fr.file.is_some()))
}

/// `function (file:line)` of [`location`], or of the innermost frame.
pub fn where_text(f: &Finding) -> Option<String> {
    let frame = location(f).or_else(|| {
        let frames = &f.primary()?.frames;
        crate::fingerprint::user_frames(frames)
            .into_iter()
            .next()
            .or(frames.first())
    })?;
    Some(frame_text(frame))
}

/// Path helper for SARIF/JUnit: `path` relative to `root` when inside it.
pub fn relative_to<'a>(path: &'a str, root: &Path) -> Option<&'a str> {
    let root = root.to_str()?.trim_end_matches('/');
    if root.is_empty() {
        return path.strip_prefix('/');
    }
    path.strip_prefix(root)?.strip_prefix('/')
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::findings::Role;
    use std::rc::Rc;

    fn frame(function: &str) -> Frame {
        Frame {
            address: 0x1000,
            module: Some(Rc::from("/build/app")),
            offset: 0x10,
            function: Some(Rc::from(function)),
            file: Some(Rc::from("/src/app.c")),
            line: Some(7),
            inlined: false,
        }
    }

    fn finding(kind: Kind, count: u64, bytes: u64, func: &str) -> Finding {
        let mut f = Finding {
            kind,
            process: 0,
            count,
            bytes,
            allocator: "malloc".into(),
            freed_with: "free".into(),
            detail: String::new(),
            addr: None,
            stacks: vec![Stack {
                role: if kind.is_leak() {
                    Role::Alloc
                } else {
                    Role::Free
                },
                frames: vec![frame(func)],
            }],
            fingerprint: String::new(),
            status: Status::Fail,
        };
        f.fingerprint = crate::fingerprint::of(&f);
        f
    }

    fn collected(findings: Vec<Finding>) -> Collected {
        Collected {
            processes: vec![Process {
                dump: Some("d.json".into()),
                pid: 7,
                exe: "/build/app".into(),
                reason: "exit".into(),
                leaks_judged: true,
                ..Process::default()
            }],
            findings,
            load_errors: Vec::new(),
        }
    }

    fn args(list: &[&str]) -> GateArgs {
        use clap::Parser;
        #[derive(Parser)]
        struct P {
            #[command(flatten)]
            g: GateArgs,
        }
        P::try_parse_from(std::iter::once("x").chain(list.iter().copied()))
            .unwrap()
            .g
    }

    fn config(list: &[&str]) -> Config {
        let mut c = Config::load(&args(list)).unwrap();
        c.rules = RuleSet::default();
        c
    }

    #[test]
    fn fail_on_lists() {
        assert_eq!(parse_kinds(&[]).unwrap(), default_kinds());
        let s = parse_kinds(&["leak".into(), "double_free".into()]).unwrap();
        assert!(s.contains(Kind::DefinitelyLost) && s.contains(Kind::IndirectlyLost));
        assert!(s.contains(Kind::DoubleFree) && s.contains(Kind::Signal));
        assert!(!s.contains(Kind::InvalidFree) && !s.contains(Kind::Reachable));
        assert_eq!(
            parse_kinds(&["none".into()]).unwrap(),
            KindSet::of(&[Kind::Signal])
        );
        assert_eq!(
            parse_kinds(&["all".into()]).unwrap(),
            KindSet::of(&Kind::ALL)
        );
        let e = parse_kinds(&["leek".into()]).unwrap_err();
        assert!(e.contains("unknown kind `leek`"), "{e}");
    }

    #[test]
    fn max_options() {
        let p = Policy::from_args(&args(&[
            "--max",
            "double-free=2",
            "--max",
            "definitely-lost=5",
        ]))
        .unwrap();
        assert_eq!(p.max, [(Kind::DoubleFree, 2), (Kind::DefinitelyLost, 5)]);
        for bad in ["x", "signal=1", "double-free=x", "nope=1"] {
            assert!(Policy::from_args(&args(&["--max", bad])).is_err(), "{bad}");
        }
        assert!(!args(&[]).any_given());
        assert!(args(&["--max-leaked-bytes", "0"]).any_given());
        assert_eq!(
            Policy::from_args(&args(&["--error-exitcode", "7"]))
                .unwrap()
                .error_exitcode,
            7
        );
    }

    #[test]
    fn clean_passes_with_the_ok_code() {
        let o = judge(collected(vec![]), config(&[]), vec![], 5);
        assert!(!o.verdict.failed);
        assert_eq!(o.exit_code, 5);
    }

    #[test]
    fn any_lost_block_fails_by_default() {
        let o = judge(
            collected(vec![
                finding(Kind::DefinitelyLost, 1, 100, "a"),
                finding(Kind::IndirectlyLost, 2, 50, "b"),
            ]),
            config(&[]),
            vec![],
            0,
        );
        assert!(o.verdict.failed);
        assert_eq!(o.exit_code, DEFAULT_EXIT_CODE);
        assert!(o.findings.iter().all(|f| f.status == Status::Fail));
        assert_eq!(
            o.verdict.reasons,
            ["150 bytes in 3 blocks lost (definitely lost: 100 bytes in 1 block, indirectly lost: 50 bytes in \
              2 blocks); no leak allowed"]
        );
    }

    #[test]
    fn leak_limits() {
        let leaks = || {
            collected(vec![
                finding(Kind::DefinitelyLost, 1, 100, "a"),
                finding(Kind::IndirectlyLost, 2, 50, "b"),
            ])
        };
        let o = judge(leaks(), config(&["--max-leaked-bytes", "150"]), vec![], 0);
        assert!(!o.verdict.failed, "{:?}", o.verdict);
        assert!(o.findings.iter().all(|f| f.status == Status::Allowed));
        let o = judge(leaks(), config(&["--max-leaked-bytes", "149"]), vec![], 0);
        assert!(o.verdict.failed);
        let o = judge(leaks(), config(&["--max-leaked-blocks", "2"]), vec![], 0);
        assert!(o.verdict.failed);
        assert!(
            o.verdict.reasons[0].contains("--max-leaked-blocks 2"),
            "{:?}",
            o.verdict.reasons
        );
        // A per-kind limit alone: only that kind is judged by it, the others are unlimited.
        let o = judge(leaks(), config(&["--max", "indirectly-lost=1"]), vec![], 0);
        assert!(o.verdict.failed);
        assert_eq!(o.findings[0].status, Status::Allowed);
        assert_eq!(o.findings[1].status, Status::Fail);
    }

    #[test]
    fn error_limits_and_kinds_not_gated() {
        let errs = || {
            collected(vec![
                finding(Kind::DoubleFree, 2, 8, "a"),
                finding(Kind::InvalidFree, 1, 0, "b"),
            ])
        };
        let o = judge(
            errs(),
            config(&["--max", "double-free=2", "--max", "invalid-free=1"]),
            vec![],
            0,
        );
        assert!(!o.verdict.failed, "{:?}", o.verdict);
        let o = judge(errs(), config(&["--max", "double-free=1"]), vec![], 0);
        assert!(o.verdict.failed);
        let o = judge(errs(), config(&["--fail-on", "leak"]), vec![], 3);
        assert!(!o.verdict.failed);
        assert_eq!(o.exit_code, 3);
        assert!(o.findings.iter().all(|f| f.status == Status::Ignored));
    }

    #[test]
    fn signals_always_fail() {
        let mut c = collected(vec![]);
        let mut f = findings::signal_finding("SIGSEGV", "/build/app");
        f.process = 0;
        c.findings.push(f);
        let o = judge(
            c,
            config(&["--fail-on", "none", "--error-exitcode", "9"]),
            vec![],
            0,
        );
        assert!(o.verdict.failed);
        assert_eq!(o.exit_code, 9);
        assert_eq!(o.verdict.reasons, ["/build/app (pid 7) killed by SIGSEGV"]);
    }

    #[test]
    fn suppressed_and_baseline_findings_do_not_count() {
        let fs = vec![
            finding(Kind::DefinitelyLost, 1, 100, "old"),
            finding(Kind::DefinitelyLost, 1, 100, "silenced"),
        ];
        let dir = std::env::temp_dir().join(format!("hl-gate-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let base = dir.join("base.json");
        std::fs::write(
            &base,
            format!(
                r#"{{"format":"heapledger-check","version":1,"findings":[{{"fingerprint":"{}"}}]}}"#,
                fs[0].fingerprint
            ),
        )
        .unwrap();
        let supp = dir.join("s.supp");
        std::fs::write(&supp, "leak:silenced\nleak:never\n").unwrap();
        let mut c = Config::load(&args(&[
            "--baseline",
            base.to_str().unwrap(),
            "--suppressions",
            supp.to_str().unwrap(),
        ]))
        .unwrap();
        c.rules.rules.retain(|r| !r.builtin);
        let o = judge(collected(fs.clone()), c, vec![], 0);
        assert!(!o.verdict.failed, "{:?}", o.verdict);
        assert_eq!(o.findings[0].status, Status::Baseline);
        assert_eq!(o.findings[1].status, Status::Suppressed(0));
        assert_eq!(o.rule_stats[0].findings, 1);
        assert_eq!(o.rule_stats[1].findings, 0);
        let mut text = Vec::new();
        write_text(&mut text, &o, false).unwrap();
        let text = String::from_utf8(text).unwrap();
        assert!(text.contains("leak:never — never matched"), "{text}");
        assert!(
            text.contains("leak:silenced — matched 1 finding(s) (100 bytes in 1 block)"),
            "{text}"
        );
        assert!(text.contains("heapledger gate: passed"), "{text}");
        let mut json = Vec::new();
        write_json(&mut json, &o).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&json).unwrap();
        assert_eq!(v["format"], CHECK_FORMAT);
        assert_eq!(v["passed"], true);
        assert_eq!(v["findings"][1]["status"], "suppressed");
        assert_eq!(v["findings"][1]["suppressed_by"]["rule"], "leak:silenced");
        assert_eq!(v["suppressions"][1]["matched_findings"], 0);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn load_errors_make_an_incomplete_result() {
        let mut c = collected(vec![]);
        c.load_errors.push("x.json: empty file".into());
        let o = judge(c, config(&[]), vec![], 0);
        assert_eq!(o.exit_code, exit::TOOL_ERROR);
        let mut text = Vec::new();
        write_verdict(&mut text, &o, true).unwrap();
        let text = String::from_utf8(text).unwrap();
        assert!(text.contains("INCOMPLETE (exit 2)"), "{text}");
        // A failure still wins.
        let mut c = collected(vec![finding(Kind::DoubleFree, 1, 8, "a")]);
        c.load_errors.push("x.json: empty file".into());
        assert_eq!(
            judge(c, config(&[]), vec![], 0).exit_code,
            DEFAULT_EXIT_CODE
        );
    }

    #[test]
    fn relative_paths() {
        assert_eq!(relative_to("/w/src/a.c", Path::new("/w")), Some("src/a.c"));
        assert_eq!(relative_to("/w/src/a.c", Path::new("/w/")), Some("src/a.c"));
        assert_eq!(relative_to("/wx/a.c", Path::new("/w")), None);
        assert_eq!(relative_to("/a.c", Path::new("/")), Some("a.c"));
    }
}
