//! `heapledger`: run a program under the heap tracer, and turn its dumps into reports.
//!
//! Data flows load (heapledger-format) -> symbolize -> analyse -> render. This file only parses the command
//! line, wires those steps together and maps outcomes to exit codes. The CLI never links the preload library;
//! it only names it in the child's `LD_PRELOAD`.

mod analyse;
mod findings;
mod fingerprint;
mod flamegraph;
mod gate;
mod junit;
mod render;
#[cfg(unix)]
mod run;
// Windows: `run` injects heapledger.dll (run.rs is Unix-only).
#[cfg(windows)]
#[path = "windows.rs"]
mod run;
mod sarif;
mod summary;
mod suppress;
mod symbolize;
mod trend;

use std::io::{BufWriter, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

/// Exit codes (see the long help).
pub mod exit {
    /// Success.
    pub const OK: u8 = 0;
    /// Bad input (unreadable or invalid dump, bad usage) or another tool error.
    pub const TOOL_ERROR: u8 = 2;
    /// The preload library could not be found.
    pub const LIBRARY_MISSING: u8 = 125;
    /// The program exists but could not be executed.
    pub const NOT_EXECUTABLE: u8 = 126;
    /// The program was not found.
    pub const NOT_FOUND: u8 = 127;
}

const LONG_ABOUT: &str = "\
Trace the heap allocations of a C/C++ program: leaks, double/invalid/mismatched frees.

`heapledger run -- PROG ARGS...` runs PROG with libheapledger.so preloaded; the library writes a JSON dump \
when the program exits (or crashes). `heapledger report DUMP...` symbolizes dumps and prints them. \
`heapledger check DUMP...` (or `run` with --fail-on or another gate option) is the CI gate: it fails on \
leaks and bad frees, with suppressions, baselines and limits (see docs/gate.md).

Exit codes:
  0        success (`check`: the gate passed)
  N        `run`: the program's own exit code (128+signal if a signal killed it) when the gate passes or is off
  23       the gate failed (leak, bad free, process killed by a signal); set with --error-exitcode
  2        bad input (unreadable or invalid dump, suppression file or baseline, no dump written, bad usage) \
or another tool error
  125      `run`: libheapledger.so not found
  126      `run`: the program could not be executed
  127      `run`: the program was not found";

#[derive(Parser)]
#[command(name = "heapledger", version, about = "Heap-allocation tracer for C/C++ programs", long_about = LONG_ABOUT)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run a program under the tracer and summarise the dumps it writes.
    Run(run::RunArgs),
    /// Symbolize dumps and print a report of leaks and bad frees.
    Report(ReportArgs),
    /// CI gate: fail (exit 23) on leaks and bad frees in dumps, after suppressions, baseline and limits.
    Check(gate::CheckArgs),
    /// SVG flame graph of leaked bytes by allocation stack (--allocated: all live blocks).
    Flamegraph(flamegraph::FlamegraphArgs),
    /// Suppression rules (LeakSanitizer syntax) for every finding reported now.
    Suppressions(gate::SuppressionsArgs),
    /// Growth of each call site's live heap over a series of snapshots: rate, verdict, chart.
    #[command(long_about = trend::LONG_ABOUT)]
    Trend(trend::TrendArgs),
}

#[derive(clap::Args)]
struct ReportArgs {
    /// Output format. JSON prints one object per dump, in an array when more than one dump is given. SARIF
    /// and JUnit show the findings of the default gate (as `check` without options would).
    #[arg(long, value_enum, default_value_t = Format::Text)]
    format: Format,

    /// Show every leak site and error (text output shows the biggest 20 otherwise).
    #[arg(long)]
    all: bool,

    /// Dump files written by the library.
    #[arg(required = true, value_name = "DUMP")]
    dumps: Vec<PathBuf>,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Format {
    Text,
    Json,
    Sarif,
    Junit,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    ExitCode::from(match cli.command {
        Cmd::Run(args) => run::run(args),
        Cmd::Report(args) => report(&args),
        Cmd::Check(args) => gate::check(&args),
        Cmd::Flamegraph(args) => flamegraph::flamegraph(&args),
        Cmd::Suppressions(args) => gate::suppressions(&args),
        Cmd::Trend(args) => trend::run(args),
    })
}

/// `heapledger report`: every readable dump is reported even if another one is bad; any bad one makes the exit
/// code 2. Each report is written as soon as it is ready: symbolizing a big dump takes a while, and a big
/// report need never be held in memory whole.
fn report(args: &ReportArgs) -> u8 {
    match args.format {
        Format::Sarif => return gate::report_as(gate::OutputFormat::Sarif, &args.dumps),
        Format::Junit => return gate::report_as(gate::OutputFormat::Junit, &args.dumps),
        Format::Text | Format::Json => {}
    }
    let stdout = std::io::stdout();
    let mut out = BufWriter::new(stdout.lock());
    match write_reports(args, &mut out).and_then(|code| out.flush().map(|()| code)) {
        Ok(code) => code,
        // `heapledger report ... | head`: the reader has all it wanted; not an error.
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => exit::OK,
        Err(e) => {
            eprintln!("heapledger: cannot write the report: {e}");
            exit::TOOL_ERROR
        }
    }
}

fn write_reports(args: &ReportArgs, out: &mut impl Write) -> std::io::Result<u8> {
    let mut code = exit::OK;
    let options = analyse::Options {
        // JSON is for tools, which get every site; text is for people, who get the biggest.
        leak_limit: match args.format {
            Format::Text if !args.all => Some(render::text::DEFAULT_LEAK_SITES),
            _ => None,
        },
    };
    // The JSON shape depends on the command line, not on how many dumps load, so consumers can rely on it.
    let json_array = args.format == Format::Json && args.dumps.len() > 1;
    if json_array {
        out.write_all(b"[")?;
    }
    let mut written = 0;
    let mut symbolizer: Option<symbolize::Symbolizer> = None;
    for path in &args.dumps {
        let dump = match heapledger_format::load(path) {
            Ok(dump) => dump,
            Err(e) => {
                eprintln!("heapledger: {e}");
                code = exit::TOOL_ERROR;
                continue;
            }
        };
        // One symbolizer for all dumps: modules opened for one are reused for the next.
        let symbolizer = match &mut symbolizer {
            Some(s) => {
                s.retarget(&dump);
                s
            }
            None => symbolizer.insert(symbolize::Symbolizer::new(&dump)),
        };
        let report = analyse::analyse(&dump, &path.display().to_string(), symbolizer, options);
        drop(dump);
        match args.format {
            Format::Text => {
                if written > 0 {
                    out.write_all(b"\n")?;
                }
                render::text::write_report(out, &report, render::text::Options { all: args.all })?;
            }
            // SARIF and JUnit are written by `gate::report_as`, never here.
            Format::Json | Format::Sarif | Format::Junit => {
                if written > 0 {
                    out.write_all(b",")?;
                }
                render::json::write_report(out, &report)?;
                if !json_array {
                    out.write_all(b"\n")?;
                }
            }
        }
        out.flush()?;
        written += 1;
    }
    if json_array {
        out.write_all(b"]\n")?;
    }
    Ok(code)
}
