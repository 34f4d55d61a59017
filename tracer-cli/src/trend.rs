//! `heapledger trend`: how the live heap of each call site changes over a series of snapshots of a running,
//! crashed or killed process: a least-squares growth rate per site, a verdict (growing / plateau / noise), and
//! a ranking. Renderers (`render::trend_text`, `render::trend_json`, `render::trend_svg`) only format the
//! [`Trend`] built here.
//!
//! Snapshots are loaded one at a time and reduced to per-site totals at once, so a long series of big dumps
//! never sits in memory together. A site is identified by its symbolized frames (function, file, line; module
//! and offset when there is no symbol), never by stack ids or addresses, which are per process: snapshots of
//! several processes of the same program (restarts, workers) line up by call site.

use std::collections::HashMap;
use std::io::{BufWriter, Write};
use std::path::PathBuf;
use std::rc::Rc;

use heapledger_format::{Dump, Live};

use crate::analyse::sample_weight;
use crate::render;
use crate::render::text::is_runtime;
use crate::symbolize::{Frame, Symbolizer};

/// `heapledger trend --help`: what the command does and the verdict rule, which is part of its contract.
pub const LONG_ABOUT: &str = "\
Growth of the live heap per call site over a series of snapshots (HEAPLEDGER_INTERVAL / HEAPLEDGER_SIGNAL, \
the dump at exit, a crash dump): live bytes and blocks of each site in each snapshot, the growth rate in \
bytes/s (least squares over time), a verdict, and the sites ranked: growing sites first, then the others, \
each group by rate, biggest first.

Snapshots may be given in any order; they are ordered by process start, pid and snapshot number. Files that \
cannot be read (a truncated copy, a dump still being written) are skipped with a one-line warning. Within one \
process time is CLOCK_MONOTONIC; snapshots of several processes are placed on the wall clock and each process \
gets its own starting level in the fit (a restart does not count as a drop). A call site is the allocation \
stack with the C/C++ runtime's inner frames folded to the function the program called (strdup, \
std::string::_M_create), keyed by function, file and line.

Verdicts, for a site's live bytes y(t) over the snapshots (sites absent from a snapshot count 0 there):
  rate        least-squares slope of y over t, in bytes/s (blocks/s likewise); R2 its coefficient of
              determination; growth = rate x time spanned; last-third rate = the slope over the snapshots in
              the last third of the time span.
  floor       the noise floor: 0 for exact dumps, 3 x HEAPLEDGER_SAMPLE bytes for sampled ones.
  growing     rate > 0, R2 >= 0.8, y rose in at least 80% of the consecutive intervals in which it changed,
              growth > max(floor, 1% of the mean of y), and the last-third rate is at least a third of the
              rate (still growing at the end).
  plateau     not growing, and over the last third y changed by no more than max(floor, 5% of its mean
              there): it rose and stopped, or never moved.
  noise       anything else: ups and downs without a steady trend.

Output: text (a ranked table, the stacks of growing sites), or JSON (--format json; the contract is in \
docs/post-mortem.md); --svg FILE also draws the live bytes of the top sites over time.

Exit codes: 0 success (also when some files were skipped); 2 fewer than two usable snapshots, snapshots that \
span no time, or an output that cannot be written.";

/// Minimum R2 of a growing site.
pub const MIN_R2: f64 = 0.8;
/// Minimum share of the changing intervals in which a growing site rose.
pub const MIN_RISING: f64 = 0.8;
/// A growing site grows by more than this share of its mean.
pub const MIN_GROWTH: f64 = 0.01;
/// A plateau changes by at most this share of its mean over the last third.
pub const FLAT: f64 = 0.05;
/// Noise floor in sampling periods.
pub const FLOOR_SAMPLES: f64 = 3.0;

/// Output format of `trend`.
#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum TrendFormat {
    /// A ranked table for people.
    Text,
    /// A stable object for tools (docs/post-mortem.md).
    Json,
}

/// Command line of `heapledger trend`.
#[derive(clap::Args)]
pub struct TrendArgs {
    /// Output format.
    #[arg(long, value_enum, default_value_t = TrendFormat::Text)]
    pub format: TrendFormat,

    /// Also write an SVG line chart of the top sites' live bytes over time to FILE.
    #[arg(long, value_name = "FILE")]
    pub svg: Option<PathBuf>,

    /// Sites listed in the text table and drawn in the chart.
    #[arg(long, value_name = "N", default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..))]
    pub top: u64,

    /// List every site in the text output, each with its stack.
    #[arg(long)]
    pub all: bool,

    /// Group call sites by their innermost N frames (after folding runtime frames) instead of the whole stack.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub frames: Option<u64>,

    /// Snapshot files of one process (`HEAPLEDGER_OUT=/var/tmp/srv.%p.%n.json`) or of several.
    #[arg(required = true, value_name = "SNAPSHOT")]
    pub dumps: Vec<PathBuf>,
}

/// `heapledger trend`: loads the snapshots, writes the chart if asked, prints the trend; returns the exit code.
pub fn run(args: TrendArgs) -> u8 {
    let mut builder = Builder::new(Options {
        frames: args.frames.map(|n| n as usize),
    });
    for path in &args.dumps {
        match heapledger_format::load(path) {
            Ok(dump) => builder.add(&path.display().to_string(), &dump),
            Err(e) => {
                eprintln!("heapledger: skipping {e}");
                builder.skip(&path.display().to_string(), &e.problem.to_string());
            }
        }
    }
    let trend = match builder.finish() {
        Ok(trend) => trend,
        Err(e) => {
            eprintln!("heapledger: {e}");
            return crate::exit::TOOL_ERROR;
        }
    };
    let top = usize::try_from(args.top).unwrap_or(usize::MAX);
    if let Some(svg) = &args.svg {
        let text = render::trend_svg::render(&trend, top);
        if let Err(e) = std::fs::write(svg, text) {
            eprintln!("heapledger: cannot write {}: {e}", svg.display());
            return crate::exit::TOOL_ERROR;
        }
    }
    let stdout = std::io::stdout();
    let mut out = BufWriter::new(stdout.lock());
    let written = match args.format {
        TrendFormat::Text => render::trend_text::write(
            &mut out,
            &trend,
            render::trend_text::Options {
                top: if args.all { usize::MAX } else { top },
                all: args.all,
            },
        ),
        TrendFormat::Json => render::trend_json::write(&mut out, &trend),
    };
    match written.and_then(|()| out.flush()) {
        Ok(()) => crate::exit::OK,
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => crate::exit::OK,
        Err(e) => {
            eprintln!("heapledger: cannot write the trend: {e}");
            crate::exit::TOOL_ERROR
        }
    }
}

/// What to compute.
#[derive(Debug, Clone, Copy, Default)]
pub struct Options {
    /// Key sites by their innermost this many frames (after folding); `None`: the whole folded stack.
    pub frames: Option<usize>,
}

/// The time axis of a trend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeAxis {
    /// One process: its `CLOCK_MONOTONIC` (`monotonic_ns`).
    Monotonic,
    /// Several processes: the wall clock (`time_ns`).
    Realtime,
}

impl TimeAxis {
    /// `monotonic` / `realtime`.
    pub fn name(self) -> &'static str {
        match self {
            TimeAxis::Monotonic => "monotonic",
            TimeAxis::Realtime => "realtime",
        }
    }
}

/// A site's verdict (see [`LONG_ABOUT`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Verdict {
    /// Growing steadily: a leak suspect.
    Growing,
    /// Rose and stopped, or never moved.
    Plateau,
    /// Ups and downs without a trend.
    Noise,
}

impl Verdict {
    /// `growing` / `plateau` / `noise`.
    pub fn name(self) -> &'static str {
        match self {
            Verdict::Growing => "growing",
            Verdict::Plateau => "plateau",
            Verdict::Noise => "noise",
        }
    }
}

/// One snapshot used, in trend order.
#[derive(Debug, Clone)]
pub struct Snapshot {
    /// The file, as named on the command line.
    pub path: String,
    /// Index into [`Trend::processes`].
    pub process: usize,
    /// Process id.
    pub pid: u64,
    /// Snapshot number within the process (`%n`).
    pub snapshot: u64,
    /// Why it was written (`interval`, `signal`, `exit`, `crash`, ...).
    pub reason: String,
    /// Signal name etc.
    pub detail: String,
    /// `CLOCK_REALTIME` when written.
    pub time_ns: u64,
    /// `CLOCK_MONOTONIC` when written.
    pub monotonic_ns: u64,
    /// Seconds since the first snapshot, on the trend's time axis.
    pub t: f64,
    /// Live heap: the dump's exact `live`, or when sampling the estimate from the sampled blocks (the dump's
    /// `live` then sums only the sampled blocks, unscaled).
    pub live: Live,
    /// Sampling period of the dump (0: exact).
    pub sample_bytes: u64,
}

/// One traced process.
#[derive(Debug, Clone)]
pub struct Process {
    /// Process id.
    pub pid: u64,
    /// Executable.
    pub exe: String,
    /// Command line.
    pub cmdline: Vec<String>,
    /// `CLOCK_REALTIME` when the tracer started in it.
    pub start_time_ns: u64,
    /// Snapshots of it used.
    pub snapshots: usize,
}

/// A file that was not used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skipped {
    /// The file, as named on the command line.
    pub path: String,
    /// Why.
    pub problem: String,
}

/// Fitted numbers of one series (a site's live bytes or blocks, or the whole heap's).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Fit {
    /// Least-squares slope per second (one intercept per process).
    pub rate: f64,
    /// Coefficient of determination of that fit (0 when the series never changed).
    pub r2: f64,
    /// `rate` times the time spanned by the snapshots (summed over processes).
    pub growth: f64,
    /// Slope over the snapshots in the last third of each process's time span.
    pub last_third_rate: f64,
    /// `last_third_rate` times the time those snapshots span.
    pub last_third_growth: f64,
}

/// One call site over the snapshots.
#[derive(Debug, Clone)]
pub struct Site {
    /// `strdup ← make_txid (srv.c:7) ← handle_request (srv.c:20)`: the allocating function (the runtime
    /// function the program called, or the allocator family) and the next frames.
    pub name: String,
    /// Allocator family (`malloc`, `new`, ...).
    pub allocator: String,
    /// The frames the site is keyed by, innermost first (runtime frames folded).
    pub frames: Vec<Frame>,
    /// Live bytes in each snapshot, in [`Trend::snapshots`] order (estimated when sampling).
    pub bytes: Vec<f64>,
    /// Live blocks in each snapshot.
    pub blocks: Vec<f64>,
    /// Fit of `bytes`.
    pub fit: Fit,
    /// Slope of `blocks` per second.
    pub blocks_rate: f64,
    /// Consecutive intervals (within a process).
    pub intervals: usize,
    /// Intervals in which the live bytes rose.
    pub grew: usize,
    /// Intervals in which they fell.
    pub shrank: usize,
    /// Mean of `bytes`.
    pub mean_bytes: f64,
    /// Largest of `bytes`.
    pub peak_bytes: f64,
    /// Noise floor used for the verdict, in bytes.
    pub floor: f64,
    /// The verdict.
    pub verdict: Verdict,
}

/// The whole analysis.
#[derive(Debug, Clone)]
pub struct Trend {
    /// Snapshots used, oldest first.
    pub snapshots: Vec<Snapshot>,
    /// Processes they came from, oldest first.
    pub processes: Vec<Process>,
    /// Files not used.
    pub skipped: Vec<Skipped>,
    /// Time axis.
    pub time_axis: TimeAxis,
    /// Seconds from the first snapshot to the last.
    pub duration: f64,
    /// Largest sampling period among the snapshots (0: all exact).
    pub sample_bytes: u64,
    /// Fit of the whole live heap (`Snapshot::live`: exact, or estimated when sampling).
    pub live: Fit,
    /// Every site, ranked.
    pub sites: Vec<Site>,
    /// Things that make the figures less than exact or complete.
    pub warnings: Vec<String>,
}

impl Trend {
    /// Number of sites with each verdict: growing, plateau, noise.
    pub fn verdict_counts(&self) -> [usize; 3] {
        let mut c = [0; 3];
        for s in &self.sites {
            c[s.verdict as usize] += 1;
        }
        c
    }
}

// ---- building -------------------------------------------------------------------------------------------------

/// How a site is recognised across snapshots and processes.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct SiteKey {
    allocator: String,
    frames: Vec<FrameKey>,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum FrameKey {
    Symbol {
        function: Rc<str>,
        file: Option<Rc<str>>,
        line: Option<u32>,
        inlined: bool,
    },
    /// No symbol: module basename and offset, stable across address-space layouts.
    Raw { module: Option<String>, offset: u64 },
}

impl FrameKey {
    fn of(f: &Frame) -> FrameKey {
        match &f.function {
            Some(function) => FrameKey::Symbol {
                function: function.clone(),
                file: f.file.clone(),
                line: f.line,
                inlined: f.inlined,
            },
            None => FrameKey::Raw {
                module: f.module.as_deref().map(|m| basename(m).to_owned()),
                offset: f.offset,
            },
        }
    }
}

struct SiteAcc {
    key: SiteKey,
    frames: Vec<Frame>,
    /// (load index of the snapshot, bytes, blocks); one entry per snapshot, in load order.
    points: Vec<(usize, f64, f64)>,
}

struct Loaded {
    snapshot: Snapshot,
    start_time_ns: u64,
    lost_blocks: u64,
}

/// Accumulates snapshots one at a time; [`Builder::finish`] makes the [`Trend`].
pub struct Builder {
    options: Options,
    symbolizer: Option<Symbolizer>,
    loaded: Vec<Loaded>,
    processes: Vec<Process>,
    process_index: HashMap<(u64, u64), usize>,
    sites: Vec<SiteAcc>,
    site_index: HashMap<SiteKey, usize>,
    /// (process, stack addresses, family) -> site: each distinct stack of a process is symbolized once.
    stack_sites: HashMap<(usize, Vec<u64>, u64), usize>,
    /// (process, snapshot number, monotonic_ns) -> load index, to recognise the same snapshot given twice.
    seen: HashMap<(usize, u64, u64), usize>,
    skipped: Vec<Skipped>,
    warnings: Vec<String>,
}

impl Builder {
    /// An empty builder.
    pub fn new(options: Options) -> Builder {
        Builder {
            options,
            symbolizer: None,
            loaded: Vec::new(),
            processes: Vec::new(),
            process_index: HashMap::new(),
            sites: Vec::new(),
            site_index: HashMap::new(),
            stack_sites: HashMap::new(),
            seen: HashMap::new(),
            skipped: Vec::new(),
            warnings: Vec::new(),
        }
    }

    /// Records a file that could not be used.
    pub fn skip(&mut self, path: &str, problem: &str) {
        self.skipped.push(Skipped {
            path: path.to_owned(),
            problem: problem.to_owned(),
        });
    }

    fn warn(&mut self, w: String) {
        if !self.warnings.contains(&w) {
            self.warnings.push(w);
        }
    }

    /// Adds one snapshot (validated by the loader).
    pub fn add(&mut self, path: &str, dump: &Dump) {
        let proc_key = (dump.pid, dump.start_time_ns);
        let process = *self.process_index.entry(proc_key).or_insert_with(|| {
            self.processes.push(Process {
                pid: dump.pid,
                exe: dump.exe.clone(),
                cmdline: dump.cmdline.clone(),
                start_time_ns: dump.start_time_ns,
                snapshots: 0,
            });
            self.processes.len() - 1
        });
        // The same snapshot twice (a copy, a repeated argument) would count twice in the fit.
        let identity = (process, dump.snapshot, dump.monotonic_ns);
        if let Some(&other) = self.seen.get(&identity) {
            let w = format!(
                "{path} is the same snapshot as {} (pid {}, #{}); used once",
                self.loaded[other].snapshot.path, dump.pid, dump.snapshot
            );
            self.skip(path, "duplicate snapshot");
            self.warn(w);
            return;
        }
        self.processes[process].snapshots += 1;
        let index = self.loaded.len();
        self.seen.insert(identity, index);
        self.loaded.push(Loaded {
            snapshot: Snapshot {
                path: path.to_owned(),
                process,
                pid: dump.pid,
                snapshot: dump.snapshot,
                reason: dump.reason.clone(),
                detail: dump.detail.clone(),
                time_ns: dump.time_ns,
                monotonic_ns: dump.monotonic_ns,
                t: 0.0,
                live: dump.live,
                sample_bytes: dump.sample_bytes,
            },
            start_time_ns: dump.start_time_ns,
            lost_blocks: dump.tracer.lost_blocks,
        });

        // Live blocks per (stack, family), scaled when sampling.
        let mut groups: HashMap<(u64, u64), (f64, f64)> = HashMap::new();
        for b in &dump.blocks {
            let w = if dump.sample_bytes > 0 {
                sample_weight(b.size, dump.sample_bytes)
            } else {
                1.0
            };
            let g = groups.entry((b.stack, b.family)).or_default();
            g.0 += w * b.size as f64;
            g.1 += w;
        }
        if dump.sample_bytes > 0 {
            let (bytes, blocks) = groups
                .values()
                .fold((0.0, 0.0), |(b, k), g| (b + g.0, k + g.1));
            self.loaded[index].snapshot.live = Live {
                blocks: blocks.round() as u64,
                bytes: bytes.round() as u64,
            };
        }
        let mut retargeted = false;
        let mut groups: Vec<_> = groups.into_iter().collect();
        // Deterministic site numbering (HashMap order is random), so equal sites rank the same every run.
        groups.sort_by_key(|&((stack, family), _)| (stack, family));
        for ((stack, family), (bytes, blocks)) in groups {
            let addrs = dump.stack(stack).to_vec();
            let cache_key = (process, addrs, family);
            let site = match self.stack_sites.get(&cache_key) {
                Some(&site) => site,
                None => {
                    let symbolizer = match &mut self.symbolizer {
                        Some(s) => {
                            if !retargeted {
                                s.retarget(dump);
                            }
                            s
                        }
                        None => self.symbolizer.insert(Symbolizer::new(dump)),
                    };
                    retargeted = true;
                    let frames = site_frames(&symbolizer.stack(&cache_key.1), self.options.frames);
                    let allocator = dump.allocator(family).to_owned();
                    let key = SiteKey {
                        allocator: allocator.clone(),
                        frames: frames.iter().map(FrameKey::of).collect(),
                    };
                    let site = *self.site_index.entry(key.clone()).or_insert_with(|| {
                        self.sites.push(SiteAcc {
                            key,
                            frames,
                            points: Vec::new(),
                        });
                        self.sites.len() - 1
                    });
                    self.stack_sites.insert(cache_key, site);
                    site
                }
            };
            let points = &mut self.sites[site].points;
            match points.last_mut() {
                // Several stacks of one snapshot folded into the same site.
                Some(p) if p.0 == index => {
                    p.1 += bytes;
                    p.2 += blocks;
                }
                _ => points.push((index, bytes, blocks)),
            }
        }
        if retargeted {
            let ws: Vec<String> = self
                .symbolizer
                .as_ref()
                .map(|s| s.warnings().to_vec())
                .unwrap_or_default();
            for w in ws {
                self.warn(w);
            }
        }
    }

    /// Orders the snapshots, fits every site and ranks them.
    pub fn finish(mut self) -> Result<Trend, String> {
        if self.loaded.len() < 2 {
            return Err(format!(
                "trend needs at least two snapshots, got {} usable (for one dump use `heapledger report`)",
                self.loaded.len()
            ));
        }
        let mut order: Vec<usize> = (0..self.loaded.len()).collect();
        order.sort_by_key(|&i| {
            let l = &self.loaded[i];
            (
                l.start_time_ns,
                l.snapshot.pid,
                l.snapshot.snapshot,
                l.snapshot.monotonic_ns,
            )
        });
        // Processes in the same order as their snapshots.
        let mut proc_order: Vec<usize> = Vec::new();
        for &i in &order {
            let p = self.loaded[i].snapshot.process;
            if !proc_order.contains(&p) {
                proc_order.push(p);
            }
        }
        let mut proc_rank = vec![0; self.processes.len()];
        for (rank, &p) in proc_order.iter().enumerate() {
            proc_rank[p] = rank;
        }
        let processes: Vec<Process> = proc_order
            .iter()
            .map(|&p| self.processes[p].clone())
            .collect();

        let time_axis = if processes.len() == 1 {
            TimeAxis::Monotonic
        } else {
            TimeAxis::Realtime
        };
        let origin = match time_axis {
            TimeAxis::Monotonic => self.loaded[order[0]].snapshot.monotonic_ns,
            TimeAxis::Realtime => self
                .loaded
                .iter()
                .map(|l| l.snapshot.time_ns)
                .min()
                .unwrap_or(0),
        };
        let mut position = vec![0; self.loaded.len()];
        let mut snapshots = Vec::with_capacity(order.len());
        for (pos, &i) in order.iter().enumerate() {
            position[i] = pos;
            let mut s = self.loaded[i].snapshot.clone();
            let at = match time_axis {
                TimeAxis::Monotonic => s.monotonic_ns,
                TimeAxis::Realtime => s.time_ns,
            };
            s.t = (i128::from(at) - i128::from(origin)) as f64 / 1e9;
            s.process = proc_rank[s.process];
            snapshots.push(s);
        }
        let duration = snapshots.last().map_or(0.0, |s| s.t) - snapshots[0].t;
        let segments = segments(&snapshots);
        if !segments
            .iter()
            .any(|r| snapshots[r.end - 1].t > snapshots[r.start].t)
        {
            return Err(
                "the snapshots span no time (each process has one snapshot, or all were written at the same \
                 moment): a rate needs two snapshots of one process"
                    .to_owned(),
            );
        }
        let t: Vec<f64> = snapshots.iter().map(|s| s.t).collect();
        let sample_bytes = snapshots.iter().map(|s| s.sample_bytes).max().unwrap_or(0);
        let floor = FLOOR_SAMPLES * sample_bytes as f64;

        let mut warnings = std::mem::take(&mut self.warnings);
        if sample_bytes > 0 {
            warnings.insert(
                0,
                format!(
                    "sampling mode (one sample per {sample_bytes} bytes on average): site bytes and blocks are \
                     estimates; noise floor {} bytes",
                    floor as u64
                ),
            );
        }
        if snapshots.iter().any(|s| s.sample_bytes != sample_bytes) {
            warnings.push(
                "the snapshots were taken with different sampling periods; estimates are less comparable"
                    .to_owned(),
            );
        }
        let lost = self.loaded.iter().map(|l| l.lost_blocks).max().unwrap_or(0);
        if lost > 0 {
            warnings.push(format!(
                "the tracer ran out of memory and did not record up to {lost} allocation(s); sites are undercounted"
            ));
        }
        for s in &self.skipped {
            warnings.push(format!("skipped {}: {}", s.path, s.problem));
        }

        let live_bytes: Vec<f64> = snapshots.iter().map(|s| s.live.bytes as f64).collect();
        let live = fit(&t, &live_bytes, &segments);

        let n = snapshots.len();
        let mut sites: Vec<Site> = self
            .sites
            .into_iter()
            .map(|acc| {
                let mut bytes = vec![0.0; n];
                let mut blocks = vec![0.0; n];
                for (i, b, k) in acc.points {
                    bytes[position[i]] = b;
                    blocks[position[i]] = k;
                }
                let name = site_name(&acc.key.allocator, &acc.frames);
                make_site(
                    name,
                    acc.key.allocator,
                    acc.frames,
                    bytes,
                    blocks,
                    &t,
                    &segments,
                    floor,
                )
            })
            .collect();
        sites.sort_by(|a, b| {
            (a.verdict != Verdict::Growing)
                .cmp(&(b.verdict != Verdict::Growing))
                .then(b.fit.rate.total_cmp(&a.fit.rate))
                .then(b.peak_bytes.total_cmp(&a.peak_bytes))
                .then_with(|| a.name.cmp(&b.name))
        });
        Ok(Trend {
            snapshots,
            processes,
            skipped: self.skipped,
            time_axis,
            duration,
            sample_bytes,
            live,
            sites,
            warnings,
        })
    }
}

/// The index ranges of each process's snapshots (snapshots are ordered by process first).
fn segments(snapshots: &[Snapshot]) -> Vec<std::ops::Range<usize>> {
    let mut out = Vec::new();
    let mut start = 0;
    for i in 1..=snapshots.len() {
        if i == snapshots.len() || snapshots[i].process != snapshots[start].process {
            out.push(start..i);
            start = i;
        }
    }
    out
}

#[allow(clippy::too_many_arguments)]
fn make_site(
    name: String,
    allocator: String,
    frames: Vec<Frame>,
    bytes: Vec<f64>,
    blocks: Vec<f64>,
    t: &[f64],
    segments: &[std::ops::Range<usize>],
    floor: f64,
) -> Site {
    let fit_bytes = fit(t, &bytes, segments);
    let blocks_rate = fit(t, &blocks, segments).rate;
    let (mut intervals, mut grew, mut shrank) = (0, 0, 0);
    for r in segments {
        for w in bytes[r.clone()].windows(2) {
            intervals += 1;
            // Exact series are integers; estimates differ by far more than this when they differ at all.
            if w[1] > w[0] + 0.5 {
                grew += 1;
            } else if w[1] < w[0] - 0.5 {
                shrank += 1;
            }
        }
    }
    let mean_bytes = bytes.iter().sum::<f64>() / bytes.len().max(1) as f64;
    let peak_bytes = bytes.iter().copied().fold(0.0, f64::max);
    let last: Vec<usize> = segments.iter().flat_map(|r| last_third(t, r)).collect();
    let mean_last = last.iter().map(|&i| bytes[i]).sum::<f64>() / last.len().max(1) as f64;
    let verdict = verdict(&fit_bytes, grew, shrank, mean_bytes, mean_last, floor);
    Site {
        name,
        allocator,
        frames,
        bytes,
        blocks,
        fit: fit_bytes,
        blocks_rate,
        intervals,
        grew,
        shrank,
        mean_bytes,
        peak_bytes,
        floor,
        verdict,
    }
}

/// The verdict rule of [`LONG_ABOUT`].
fn verdict(f: &Fit, grew: usize, shrank: usize, mean: f64, mean_last: f64, floor: f64) -> Verdict {
    let changed = grew + shrank;
    let growing = f.rate > 0.0
        && f.r2 >= MIN_R2
        && changed > 0
        && grew as f64 >= MIN_RISING * changed as f64
        && f.growth > floor.max(MIN_GROWTH * mean)
        && f.last_third_rate >= f.rate / 3.0;
    if growing {
        Verdict::Growing
    } else if f.last_third_growth.abs() <= floor.max(FLAT * mean_last) {
        Verdict::Plateau
    } else {
        Verdict::Noise
    }
}

/// Indexes of the snapshots of `r` in the last third of its time span (at least the last two).
fn last_third(t: &[f64], r: &std::ops::Range<usize>) -> std::ops::Range<usize> {
    if r.len() < 2 {
        return r.clone();
    }
    let (t0, t1) = (t[r.start], t[r.end - 1]);
    let cut = t0 + (t1 - t0) * 2.0 / 3.0;
    let first = (r.start..r.end)
        .find(|&i| t[i] >= cut)
        .unwrap_or(r.end - 1)
        .min(r.end - 2);
    first..r.end
}

/// Least squares of `y` over `t` with one intercept per segment (process), over all snapshots and over the
/// last third of each segment.
pub fn fit(t: &[f64], y: &[f64], segments: &[std::ops::Range<usize>]) -> Fit {
    let (rate, r2, span) = pooled(t, y, segments.iter().cloned());
    let (last_third_rate, _, last_span) = pooled(t, y, segments.iter().map(|r| last_third(t, r)));
    Fit {
        rate,
        r2,
        growth: rate * span,
        last_third_rate,
        last_third_growth: last_third_rate * last_span,
    }
}

/// (slope, R2, time spanned) of the pooled within-segment regression.
fn pooled(
    t: &[f64],
    y: &[f64],
    segments: impl Iterator<Item = std::ops::Range<usize>>,
) -> (f64, f64, f64) {
    let (mut sxx, mut sxy, mut syy, mut span) = (0.0, 0.0, 0.0, 0.0);
    for r in segments {
        if r.len() < 2 {
            continue;
        }
        let n = r.len() as f64;
        let tm = t[r.clone()].iter().sum::<f64>() / n;
        let ym = y[r.clone()].iter().sum::<f64>() / n;
        for i in r.clone() {
            let (dt, dy) = (t[i] - tm, y[i] - ym);
            sxx += dt * dt;
            sxy += dt * dy;
            syy += dy * dy;
        }
        span += t[r.end - 1] - t[r.start];
    }
    let slope = if sxx > 0.0 { sxy / sxx } else { 0.0 };
    let r2 = if sxx > 0.0 && syy > 0.0 {
        (sxy * sxy / (sxx * syy)).min(1.0)
    } else {
        0.0
    };
    (slope, r2, span)
}

// ---- call sites -----------------------------------------------------------------------------------------------

/// The frames a site is keyed by: process start-up (`__libc_start_main` and outward) and thread start-up
/// (runtime frames outward of the last user frame) dropped, each inner run of runtime frames folded to its
/// outermost frame (the function the program called: `strdup`, `qsort`); then the innermost `limit`. A stack
/// with no frame of the program's own is kept whole.
pub fn site_frames(frames: &[Frame], limit: Option<usize>) -> Vec<Frame> {
    let end = frames
        .iter()
        .position(|f| {
            f.function
                .as_deref()
                .is_some_and(|n| n.starts_with("__libc_start"))
        })
        .filter(|&i| i > 0)
        .unwrap_or(frames.len());
    let frames = &frames[..end];
    let runtime: Vec<bool> = frames.iter().map(is_runtime).collect();
    let mut out: Vec<Frame> = if runtime.iter().all(|&r| r) {
        frames.to_vec()
    } else {
        let last_user = runtime.iter().rposition(|&r| !r).unwrap_or(0);
        frames[..=last_user]
            .iter()
            .enumerate()
            .filter(|&(i, _)| !runtime[i] || !runtime[i + 1])
            .map(|(_, f)| f.clone())
            .collect()
    };
    if let Some(limit) = limit {
        out.truncate(limit);
    }
    out
}

/// `strdup ← make_txid (server.c:42) ← handle_request (server.c:97)`: the allocating function and the next
/// two frames. When the innermost frame is the program's own (it called `malloc`/`new` directly) the allocator
/// family comes first.
pub fn site_name(allocator: &str, frames: &[Frame]) -> String {
    let mut parts: Vec<String> = Vec::new();
    match frames.first() {
        None => return format!("{allocator} ← (no stack recorded)"),
        Some(f) if !is_runtime(f) => parts.push(allocator.to_owned()),
        Some(_) => {}
    }
    let budget = 3usize.saturating_sub(parts.len()).max(2);
    for f in frames.iter().take(budget) {
        parts.push(short_frame(f));
    }
    parts.join(" ← ")
}

/// `make_txid (server.c:42)` for the program's frames, `strdup` for the runtime's, `server+0x1222` without a
/// symbol.
pub fn short_frame(f: &Frame) -> String {
    match (&f.function, &f.file, f.line) {
        (Some(func), _, _) if is_runtime(f) => func.to_string(),
        (Some(func), Some(file), Some(line)) => format!("{func} ({}:{line})", basename(file)),
        (Some(func), _, _) => func.to_string(),
        (None, _, _) => match &f.module {
            Some(m) => format!("{}+{:#x}", basename(m), f.offset),
            None => format!("{:#x}", f.address),
        },
    }
}

fn basename(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One process covering snapshots `0..n`.
    fn segs(n: usize) -> Vec<std::ops::Range<usize>> {
        std::iter::once(0..n).collect()
    }

    /// Verdict of a series sampled at t = 0, 1, 2, ... in one process.
    fn judge(y: &[f64]) -> (Verdict, Fit) {
        let t: Vec<f64> = (0..y.len()).map(|i| i as f64).collect();
        let s = make_site(
            String::new(),
            "malloc".into(),
            Vec::new(),
            y.to_vec(),
            y.to_vec(),
            &t,
            &segs(y.len()),
            0.0,
        );
        (s.verdict, s.fit)
    }

    #[test]
    fn steady_leak_is_growing_at_its_rate() {
        let y: Vec<f64> = (0..10).map(|i| 9000.0 + 30_000.0 * i as f64).collect();
        let (v, f) = judge(&y);
        assert_eq!(v, Verdict::Growing);
        assert!((f.rate - 30_000.0).abs() < 1e-6, "{f:?}");
        assert!((f.r2 - 1.0).abs() < 1e-9);
        assert!((f.growth - 270_000.0).abs() < 1e-6);
    }

    #[test]
    fn slow_leak_with_quiet_intervals_is_growing() {
        // One 30-byte block every third snapshot: most intervals do not change, none shrinks.
        let y: Vec<f64> = (0..30).map(|i| 30.0 * (i / 3) as f64).collect();
        assert_eq!(judge(&y).0, Verdict::Growing);
    }

    #[test]
    fn rise_then_flat_is_plateau() {
        let y: Vec<f64> = (0..12)
            .map(|i| 2560.0 * (i.min(4) as f64) + if i % 2 == 0 { 0.0 } else { 128.0 })
            .collect();
        assert_eq!(judge(&y).0, Verdict::Plateau);
        // Even a long rise: it is the end that counts.
        let y: Vec<f64> = (0..12).map(|i| 1000.0 * (i.min(8) as f64)).collect();
        let (v, f) = judge(&y);
        assert!(f.r2 > 0.8, "{f:?}");
        assert_eq!(v, Verdict::Plateau);
    }

    #[test]
    fn constant_and_empty_sites_are_plateau() {
        assert_eq!(judge(&[25_600.0; 8]).0, Verdict::Plateau);
        assert_eq!(judge(&[0.0; 8]).0, Verdict::Plateau);
        let (_, f) = judge(&[25_600.0; 8]);
        assert_eq!((f.rate, f.r2), (0.0, 0.0));
    }

    #[test]
    fn random_walk_is_noise() {
        let y = [
            1500.0, 300.0, 2800.0, 900.0, 2000.0, 100.0, 3000.0, 1200.0, 400.0, 2600.0,
        ];
        assert_eq!(judge(&y).0, Verdict::Noise);
    }

    #[test]
    fn shrinking_and_sawtooth_are_not_growing() {
        let y: Vec<f64> = (0..10).map(|i| 100_000.0 - 5000.0 * i as f64).collect();
        assert_eq!(judge(&y).0, Verdict::Noise);
        // Grows then is freed in one go, repeatedly (a batch buffer).
        let y: Vec<f64> = (0..12).map(|i| 1000.0 * (i % 4) as f64).collect();
        assert_ne!(judge(&y).0, Verdict::Growing);
    }

    #[test]
    fn tiny_growth_of_a_big_site_is_not_growing() {
        let y: Vec<f64> = (0..10).map(|i| 1e9 + i as f64).collect();
        assert_ne!(judge(&y).0, Verdict::Growing);
    }

    #[test]
    fn restarts_get_their_own_intercepts() {
        // Two processes leaking 100 B/s each, the second starting from 0 again.
        let t: Vec<f64> = vec![0.0, 1.0, 2.0, 3.0, 10.0, 11.0, 12.0, 13.0];
        let y: Vec<f64> = vec![0.0, 100.0, 200.0, 300.0, 0.0, 100.0, 200.0, 300.0];
        let segs = vec![0..4, 4..8];
        let f = fit(&t, &y, &segs);
        assert!((f.rate - 100.0).abs() < 1e-9, "{f:?}");
        assert!((f.r2 - 1.0).abs() < 1e-9);
        assert!((f.growth - 600.0).abs() < 1e-9);
        let s = make_site(
            String::new(),
            "malloc".into(),
            Vec::new(),
            y.clone(),
            y,
            &t,
            &segs,
            0.0,
        );
        assert_eq!((s.intervals, s.grew, s.shrank), (6, 6, 0));
        assert_eq!(s.verdict, Verdict::Growing);
    }

    #[test]
    fn sampling_floor_hides_small_changes() {
        let t: Vec<f64> = (0..10).map(|i| i as f64).collect();
        let y: Vec<f64> = (0..10).map(|i| 1000.0 * i as f64).collect();
        let s = make_site(
            String::new(),
            "malloc".into(),
            Vec::new(),
            y.clone(),
            y,
            &t,
            &segs(10),
            3.0 * 524_288.0,
        );
        assert_ne!(s.verdict, Verdict::Growing);
    }

    #[test]
    fn last_third_keeps_at_least_two_points() {
        let t = [0.0, 1.0, 2.0, 10.0];
        assert_eq!(last_third(&t, &(0..4)), 2..4);
        let t = [0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0];
        assert_eq!(last_third(&t, &(0..7)), 4..7);
        assert_eq!(last_third(&t, &(3..4)), 3..4);
    }

    fn frame(function: Option<&str>, module: &str, file: Option<&str>, line: Option<u32>) -> Frame {
        Frame {
            address: 0x5000,
            module: Some(Rc::from(module)),
            offset: 0x1222,
            function: function.map(Rc::from),
            file: file.map(Rc::from),
            line,
            inlined: false,
        }
    }

    const LIBC: &str = "/usr/lib/x86_64-linux-gnu/libc.so.6";
    const APP: &str = "/srv/server";

    #[test]
    fn site_frames_fold_runtime_and_drop_start_up() {
        let frames = vec![
            frame(Some("__strdup_internal"), LIBC, None, None),
            frame(Some("strdup"), LIBC, Some("strdup.c"), Some(42)),
            frame(Some("make_txid"), APP, Some("/src/server.c"), Some(42)),
            frame(Some("cmp"), APP, Some("/src/server.c"), Some(10)),
            frame(Some("msort"), LIBC, None, None),
            frame(Some("qsort"), LIBC, None, None),
            frame(Some("main"), APP, Some("/src/server.c"), Some(120)),
            frame(Some("__libc_start_call_main"), LIBC, None, None),
            frame(Some("__libc_start_main_impl"), LIBC, None, None),
            frame(None, APP, None, None),
        ];
        let names: Vec<String> = site_frames(&frames, None).iter().map(short_frame).collect();
        assert_eq!(
            names,
            [
                "strdup",
                "make_txid (server.c:42)",
                "cmp (server.c:10)",
                "qsort",
                "main (server.c:120)"
            ]
        );
        assert_eq!(site_frames(&frames, Some(2)).len(), 2);
        assert_eq!(
            site_name("malloc", &site_frames(&frames, None)),
            "strdup ← make_txid (server.c:42) ← cmp (server.c:10)"
        );
        // Thread start-up outward of the program's frames goes too.
        let thread = vec![
            frame(Some("worker"), APP, Some("/src/w.c"), Some(3)),
            frame(Some("start_thread"), LIBC, None, None),
            frame(Some("clone3"), LIBC, None, None),
        ];
        assert_eq!(site_frames(&thread, None).len(), 1);
        assert_eq!(
            site_name("new", &site_frames(&thread, None)),
            "new ← worker (w.c:3)"
        );
        // Only runtime frames: all kept.
        let rt = vec![
            frame(
                Some("_dl_new_object"),
                "/lib64/ld-linux-x86-64.so.2",
                None,
                None,
            ),
            frame(
                Some("_dl_map_object"),
                "/lib64/ld-linux-x86-64.so.2",
                None,
                None,
            ),
        ];
        assert_eq!(site_frames(&rt, None).len(), 2);
        assert_eq!(site_name("malloc", &[]), "malloc ← (no stack recorded)");
        assert_eq!(short_frame(&frame(None, APP, None, None)), "server+0x1222");
    }

    /// A dump from the unit-test example, with `blocks` (size, stack, family) and the given identity.
    fn dump(pid: u64, n: u64, mono_s: f64, blocks: &[(u64, u64, u64)]) -> Dump {
        let text = include_str!("../tests/data/small.json");
        let mut d = heapledger_format::parse(text.as_bytes()).expect("test dump parses");
        d.modules.clear();
        d.errors.clear();
        d.error_counts = Default::default();
        d.stacks = vec![vec![], vec![0x10, 0x11], vec![0x20], vec![0x30]];
        d.pid = pid;
        d.snapshot = n;
        d.reason = "interval".into();
        d.monotonic_ns = (mono_s * 1e9) as u64;
        d.time_ns = 1_700_000_000_000_000_000 + d.monotonic_ns;
        d.blocks = blocks
            .iter()
            .map(|&(size, stack, family)| heapledger_format::Block {
                addr: 0x1000,
                size,
                stack,
                family,
                tid: pid,
                seq: 0,
                class: 0,
            })
            .collect();
        d.live = Live {
            blocks: blocks.len() as u64,
            bytes: blocks.iter().map(|b| b.0).sum(),
        };
        d
    }

    #[test]
    fn builder_orders_aligns_and_ranks() {
        let mut b = Builder::new(Options::default());
        // Given out of order; stack 1 leaks 30 bytes per second, stack 2 is constant, stack 3 appears late.
        for n in [3u64, 0, 2, 1, 4] {
            let mut blocks = vec![(30, 1, 0); n as usize + 1];
            blocks.push((500, 2, 0));
            if n >= 3 {
                blocks.push((7, 3, 2));
            }
            b.add(
                &format!("s.{n}.json"),
                &dump(42, n, 10.0 + n as f64, &blocks),
            );
        }
        b.skip("s.5.json", "truncated");
        let t = b.finish().unwrap();
        assert_eq!(t.time_axis, TimeAxis::Monotonic);
        assert_eq!(
            t.snapshots.iter().map(|s| s.snapshot).collect::<Vec<_>>(),
            [0, 1, 2, 3, 4]
        );
        assert_eq!(t.snapshots[0].t, 0.0);
        assert!((t.duration - 4.0).abs() < 1e-9);
        assert_eq!(t.sites.len(), 3);
        let leak = &t.sites[0];
        assert_eq!(leak.verdict, Verdict::Growing);
        assert!((leak.fit.rate - 30.0).abs() < 1e-9);
        assert!((leak.blocks_rate - 1.0).abs() < 1e-9);
        assert_eq!(leak.bytes, [30.0, 60.0, 90.0, 120.0, 150.0]);
        let late = t.sites.iter().find(|s| s.allocator == "new").unwrap();
        assert_eq!(late.bytes, [0.0, 0.0, 0.0, 7.0, 7.0]);
        let flat = t.sites.iter().find(|s| s.peak_bytes == 500.0).unwrap();
        assert_eq!(flat.verdict, Verdict::Plateau);
        assert!(t.warnings.iter().any(|w| w.contains("s.5.json")));
        assert_eq!(t.skipped.len(), 1);
        // 30 B/s from the leak, 2.1 B/s from the late 7 bytes' least-squares slope.
        assert!((t.live.rate - 32.1).abs() < 1e-9, "{}", t.live.rate);
    }

    #[test]
    fn builder_rejects_too_few_and_duplicates() {
        let mut b = Builder::new(Options::default());
        b.add("a.json", &dump(1, 0, 1.0, &[(1, 1, 0)]));
        b.add("copy.json", &dump(1, 0, 1.0, &[(1, 1, 0)]));
        let e = b.finish().unwrap_err();
        assert!(e.contains("at least two snapshots"), "{e}");

        let mut b = Builder::new(Options::default());
        b.add("a.json", &dump(1, 0, 1.0, &[(1, 1, 0)]));
        b.add("b.json", &dump(2, 0, 1.0, &[(1, 1, 0)]));
        let e = b.finish().unwrap_err();
        assert!(e.contains("span no time"), "{e}");
    }

    #[test]
    fn builder_lines_up_processes_on_the_wall_clock() {
        let mut b = Builder::new(Options::default());
        for (pid, start) in [(7u64, 0.0), (9, 100.0)] {
            for n in 0..4u64 {
                let mut d = dump(pid, n, 5.0 + n as f64, &vec![(10, 1, 0); n as usize]);
                d.start_time_ns = 1_000_000_000_000 + (start * 1e9) as u64;
                d.time_ns = d.start_time_ns + n * 1_000_000_000;
                b.add(&format!("{pid}.{n}.json"), &d);
            }
        }
        let t = b.finish().unwrap();
        assert_eq!(t.time_axis, TimeAxis::Realtime);
        assert_eq!(t.processes.len(), 2);
        assert_eq!(
            t.snapshots.iter().map(|s| s.t).collect::<Vec<_>>(),
            [0.0, 1.0, 2.0, 3.0, 100.0, 101.0, 102.0, 103.0]
        );
        assert_eq!(t.sites.len(), 1);
        assert!((t.sites[0].fit.rate - 10.0).abs() < 1e-9);
        assert_eq!(t.sites[0].verdict, Verdict::Growing);
    }

    #[test]
    fn sampled_blocks_are_scaled() {
        let mut b = Builder::new(Options::default());
        for n in 0..3u64 {
            let mut d = dump(1, n, n as f64, &vec![(1000, 1, 0); n as usize + 1]);
            d.sample_bytes = 1000;
            b.add(&format!("{n}.json"), &d);
        }
        let t = b.finish().unwrap();
        let w = sample_weight(1000, 1000);
        assert!((t.sites[0].blocks[0] - w).abs() < 1e-9);
        assert!((t.sites[0].bytes[2] - 3000.0 * w).abs() < 1e-6);
        assert_eq!(t.snapshots[2].live.bytes, (3000.0 * w).round() as u64);
        assert_eq!(t.sample_bytes, 1000);
        assert!(
            t.warnings[0].starts_with("sampling mode"),
            "{:?}",
            t.warnings
        );
    }
}
