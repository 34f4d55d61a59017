//! `heapledger run`: launches a program with the preload library and summarises the dumps it wrote.
//!
//! The steps are separate functions (find the library, launch, collect dumps, summarise, decide the exit code).
//! With gate options (`--fail-on`, `--suppressions`, ...) every dump of the run is then judged by
//! `gate::after_run`, which decides the exit code instead of [`exit_code`].

use std::ffi::{OsStr, OsString};
use std::fs::OpenOptions;
use std::io::ErrorKind;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus};

use heapledger_format::LoadError;

use crate::exit;
use crate::summary::{summarise, summary_line, Summary};

/// Name of the preload library looked for next to the `heapledger` executable.
pub const LIBRARY_NAME: &str = "libheapledger.so";

/// Options of `heapledger run`.
#[derive(clap::Args, Debug)]
pub struct RunArgs {
    /// Dump file name pattern: `%p` becomes the pid, `%n` the snapshot number (expanded by the library).
    /// Relative patterns are relative to the program's working directory.
    #[arg(
        long,
        value_name = "PATTERN",
        env = "HEAPLEDGER_OUT",
        default_value = "heapledger.%p.json"
    )]
    pub out: OsString,

    /// Maximum frames recorded per allocation stack (default: the library's).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub depth: Option<u32>,

    /// Sampling: record one allocation per SIZE bytes on average (`512KiB`, `1MiB`, `4096`); leak figures
    /// become estimates (sets HEAPLEDGER_SAMPLE).
    #[arg(long, value_name = "SIZE")]
    pub sample: Option<String>,

    /// Write a snapshot every SECS seconds, fractions allowed (sets HEAPLEDGER_INTERVAL).
    #[arg(long, value_name = "SECS")]
    pub interval: Option<String>,

    /// Write a snapshot when the program receives signal SIG (`USR2`, `SIGUSR1`, a number; sets
    /// HEAPLEDGER_SIGNAL).
    #[arg(long, value_name = "SIG")]
    pub signal: Option<String>,

    /// Gate options: with any of them, every dump of the run is judged as `heapledger check` would, and the
    /// exit code is the gate's when it fails.
    #[command(flatten)]
    pub gate: crate::gate::GateArgs,

    /// The program to run, and its arguments (put `--` before them if they start with `-`).
    #[arg(required = true, trailing_var_arg = true, value_name = "PROG")]
    pub command: Vec<OsString>,
}

/// A dump the program wrote, with its summary or the reason it could not be read.
pub struct WrittenDump {
    /// Absolute path, as the library recorded it in the manifest.
    pub path: PathBuf,
    /// Summary, or why the file could not be loaded.
    pub summary: Result<Summary, LoadError>,
}

/// Runs `heapledger run` and returns the process exit code.
pub fn run(args: RunArgs) -> u8 {
    let gate = match crate::gate::Config::for_run(&args.gate) {
        Ok(g) => g,
        Err(e) => {
            eprintln!("heapledger: {e}");
            return exit::TOOL_ERROR;
        }
    };
    let settings = match settings(&args) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("heapledger: {e}");
            return exit::TOOL_ERROR;
        }
    };
    let lib = match find_library() {
        Ok(lib) => lib,
        Err(message) => {
            eprintln!("heapledger: {message}");
            return exit::LIBRARY_MISSING;
        }
    };
    let manifest = match Manifest::create() {
        Ok(m) => m,
        Err(message) => {
            eprintln!("heapledger: {message}");
            return exit::TOOL_ERROR;
        }
    };

    let program = &args.command[0];
    let mut cmd = Command::new(program);
    cmd.args(&args.command[1..])
        .env(
            "LD_PRELOAD",
            preload_value(&lib, std::env::var_os("LD_PRELOAD").as_deref()),
        )
        .env("HEAPLEDGER_OUT", &args.out)
        .env("HEAPLEDGER_MANIFEST", &manifest.path);
    if let Some(depth) = args.depth {
        cmd.env("HEAPLEDGER_DEPTH", depth.to_string());
    }
    for (var, value) in settings {
        cmd.env(var, value);
    }

    let (status, pid) = match spawn_and_wait(&mut cmd) {
        Ok(done) => done,
        Err(e) => {
            let name = Path::new(program).display();
            return match e.kind() {
                ErrorKind::NotFound => {
                    eprintln!("heapledger: {name}: program not found");
                    exit::NOT_FOUND
                }
                ErrorKind::PermissionDenied => {
                    eprintln!("heapledger: {name}: permission denied (not executable?)");
                    exit::NOT_EXECUTABLE
                }
                _ => {
                    eprintln!("heapledger: {name}: cannot run: {e}");
                    exit::NOT_EXECUTABLE
                }
            };
        }
    };

    let dumps: Vec<WrittenDump> = manifest
        .dump_paths()
        .into_iter()
        .map(|path| WrittenDump {
            summary: heapledger_format::load(&path).map(|d| summarise(&d)),
            path,
        })
        .collect();
    print_dumps(&dumps, program.as_ref());
    let code = exit_code(status, &dumps);
    match gate {
        Some(config) => {
            let paths: Vec<PathBuf> = dumps.into_iter().map(|d| d.path).collect();
            let end = crate::gate::ProgramEnd {
                pid,
                program: Path::new(program).display().to_string(),
                signal: status.signal(),
                code,
            };
            crate::gate::after_run(config, &paths, &end, &args.gate)
        }
        None => code,
    }
}

/// The environment for the pass-through settings, in the plainest form the library reads (bytes, seconds,
/// signal numbers). A value the library would ignore is an error here, so a typo is never a silent run
/// without sampling or snapshots.
fn settings(args: &RunArgs) -> Result<Vec<(&'static str, String)>, String> {
    let mut env = Vec::new();
    if let Some(s) = &args.sample {
        let bytes = parse_size(s).ok_or_else(|| {
            format!("--sample {s}: expected a size in bytes, like 4096, 512KiB or 1MiB")
        })?;
        env.push(("HEAPLEDGER_SAMPLE", bytes.to_string()));
    }
    if let Some(s) = &args.interval {
        let t = s.trim();
        let (int, frac) = t.split_once('.').unwrap_or((t, ""));
        let digits = |x: &str| x.bytes().all(|b| b.is_ascii_digit());
        let positive = t.bytes().any(|b| (b'1'..=b'9').contains(&b));
        if !(digits(int) && digits(frac) && !(int.is_empty() && frac.is_empty()) && positive) {
            return Err(format!(
                "--interval {s}: expected a positive number of seconds, like 10 or 0.5"
            ));
        }
        env.push(("HEAPLEDGER_INTERVAL", t.to_owned()));
    }
    if let Some(s) = &args.signal {
        let n = signal_number(s).ok_or_else(|| {
            format!("--signal {s}: expected a signal name like USR2 or SIGUSR1, or a number")
        })?;
        env.push(("HEAPLEDGER_SIGNAL", n.to_string()));
    }
    Ok(env)
}

/// `4096`, `512K`, `512KiB`, `1MiB`, `1G`, ... in bytes (binary multiples).
pub fn parse_size(s: &str) -> Option<u64> {
    let s = s.trim();
    let digits = s.bytes().take_while(u8::is_ascii_digit).count();
    let (num, unit) = s.split_at(digits);
    let n: u64 = num.parse().ok()?;
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        _ => return None,
    };
    n.checked_mul(mult).filter(|&v| v > 0)
}

/// The number of signal `name` (`USR2`, `SIGUSR2`, `12`).
pub fn signal_number(name: &str) -> Option<i32> {
    let name = name.trim();
    if let Ok(n) = name.parse::<i32>() {
        return (1..=64).contains(&n).then_some(n);
    }
    let upper = name.to_ascii_uppercase();
    let bare = upper.strip_prefix("SIG").unwrap_or(&upper);
    (1..=31).find(|&n| signal_name(n).strip_prefix("SIG") == Some(bare))
}

/// The library from `$HEAPLEDGER_LIB`, else `libheapledger.so` next to this executable; made absolute so that
/// processes that change directory before exec'ing still find it.
fn find_library() -> Result<PathBuf, String> {
    let candidate = match std::env::var_os("HEAPLEDGER_LIB").filter(|v| !v.is_empty()) {
        Some(lib) => PathBuf::from(lib),
        None => {
            let dir = std::env::current_exe()
                .ok()
                .and_then(|exe| exe.parent().map(Path::to_path_buf));
            match dir {
                Some(dir) => dir.join(LIBRARY_NAME),
                None => PathBuf::from(LIBRARY_NAME),
            }
        }
    };
    let missing = || {
        format!(
            "cannot find {LIBRARY_NAME} (looked in {}); build it with cargo build --release or set HEAPLEDGER_LIB",
            candidate.display()
        )
    };
    let lib = std::fs::canonicalize(&candidate).map_err(|_| missing())?;
    if !lib.is_file() {
        return Err(missing());
    }
    // ld.so splits LD_PRELOAD at spaces and colons; there is no quoting.
    if lib
        .as_os_str()
        .as_bytes()
        .iter()
        .any(|b| matches!(b, b' ' | b':' | b'\t' | b'\n'))
    {
        return Err(format!(
            "the library path {} contains a space or colon, which LD_PRELOAD cannot express; set HEAPLEDGER_LIB \
             to a copy at a plain path",
            lib.display()
        ));
    }
    Ok(lib)
}

/// Our library first, then whatever the user already preloads (without a second copy of ours, as when
/// `heapledger run` runs under itself: the library must be loaded once).
fn preload_value(lib: &Path, existing: Option<&OsStr>) -> OsString {
    let mut value = lib.as_os_str().to_os_string();
    let existing = existing.map(OsStr::as_bytes).unwrap_or_default();
    for entry in existing.split(|&b| b == b':' || b == b' ') {
        if !entry.is_empty() && entry != lib.as_os_str().as_bytes() {
            value.push(":");
            value.push(OsStr::from_bytes(entry));
        }
    }
    value
}

/// Why `program` (a path, or a name looked up in `PATH` as the spawn did) cannot be traced, if it is certain: an
/// ELF executable without an interpreter is statically linked (the kernel starts it without the dynamic loader,
/// which is what reads `LD_PRELOAD`); a setuid/setgid one run by another user drops `LD_PRELOAD`.
fn untraceable(program: &OsStr) -> Option<&'static str> {
    use std::os::unix::fs::MetadataExt;
    let path = if program.as_bytes().contains(&b'/') {
        PathBuf::from(program)
    } else {
        std::env::split_paths(&std::env::var_os("PATH")?)
            .map(|d| d.join(program))
            .find(|p| p.is_file())?
    };
    let meta = std::fs::metadata(&path).ok()?;
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    if meta.mode() & 0o6000 != 0 && euid != 0 && meta.uid() != euid {
        return Some(
            "a setuid/setgid program: the loader's secure mode ignores LD_PRELOAD, no dump",
        );
    }
    let data = std::fs::read(&path).ok()?;
    let elf = object::read::elf::ElfFile64::<object::Endianness>::parse(&*data).ok()?;
    use object::read::elf::ProgramHeader;
    let has_interp = elf
        .elf_program_headers()
        .iter()
        .any(|ph| ph.p_type(elf.endian()) == object::elf::PT_INTERP);
    (!has_interp).then_some(
        "statically linked (no ELF interpreter): the dynamic loader, which reads LD_PRELOAD, never runs, so \
         nothing could be traced",
    )
}

/// Spawns the program and waits for it.
///
/// While it runs, SIGINT and SIGQUIT are ignored here: the terminal delivers them to the whole foreground
/// process group, so the program still gets them (and decides whether to die), while we survive to report
/// the dump it writes. This is what `system(3)` does. The dispositions are changed only after the spawn, so
/// the program does not inherit "ignored".
fn spawn_and_wait(cmd: &mut Command) -> std::io::Result<(ExitStatus, u32)> {
    // The library's end watcher (a helper process that writes the final dump when the program ends without
    // exit(): Go, SIGKILL) outlives the program by a moment. As a subreaper we inherit it, and wait for it.
    // SAFETY: prctl with integer arguments.
    unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
    let mut child = cmd.spawn()?;
    let _guard = IgnoreInterrupts::new();
    let pid = child.id();
    let status = child.wait()?;
    wait_for_end_watchers(std::time::Duration::from_secs(10));
    Ok((status, pid))
}

/// Waits (up to `limit`) for the end watchers we inherited to finish writing; other inherited processes
/// (daemons the program left behind) are not waited for.
fn wait_for_end_watchers(limit: std::time::Duration) {
    let start = std::time::Instant::now();
    loop {
        let watchers: Vec<i32> = inherited_children()
            .into_iter()
            .filter(|&p| {
                std::fs::read(format!("/proc/{p}/comm"))
                    .is_ok_and(|c| c.starts_with(b"heapledger-end"))
            })
            .collect();
        // Reap whatever has ended (watchers and the program's orphans alike).
        // SAFETY: waitpid with WNOHANG on our own children.
        while unsafe { libc::waitpid(-1, std::ptr::null_mut(), libc::WNOHANG | libc::__WALL) } > 0 {
        }
        if watchers.is_empty() || start.elapsed() > limit {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
}

/// Our children, from `/proc/self/task/*/children`.
fn inherited_children() -> Vec<i32> {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return Vec::new();
    };
    tasks
        .flatten()
        .filter_map(|t| std::fs::read_to_string(t.path().join("children")).ok())
        .flat_map(|c| {
            c.split_whitespace()
                .filter_map(|p| p.parse().ok())
                .collect::<Vec<i32>>()
        })
        .collect()
}

/// Ignores SIGINT/SIGQUIT for its lifetime.
struct IgnoreInterrupts {
    previous: [(libc::c_int, libc::sighandler_t); 2],
}

impl IgnoreInterrupts {
    fn new() -> Self {
        let mut previous = [
            (libc::SIGINT, libc::SIG_DFL),
            (libc::SIGQUIT, libc::SIG_DFL),
        ];
        for (sig, old) in &mut previous {
            // SAFETY: installing SIG_IGN runs no code in signal context; the old disposition is restored on drop.
            *old = unsafe { libc::signal(*sig, libc::SIG_IGN) };
        }
        IgnoreInterrupts { previous }
    }
}

impl Drop for IgnoreInterrupts {
    fn drop(&mut self) {
        for &(sig, old) in &self.previous {
            if old != libc::SIG_ERR {
                // SAFETY: restores the disposition saved in `new`.
                unsafe { libc::signal(sig, old) };
            }
        }
    }
}

/// The file the library appends one line per dump to: `<absolute dump path>\n`. Using it (rather than
/// globbing for the pattern) finds exactly the dumps of this run, including those of forked children and of
/// patterns with `%n`.
struct Manifest {
    path: PathBuf,
}

impl Manifest {
    fn create() -> Result<Manifest, String> {
        let dir = std::env::temp_dir();
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let mut last_error = None;
        for attempt in 0..100u32 {
            let path = dir.join(format!(
                "heapledger-manifest.{}.{nanos}.{attempt}",
                std::process::id()
            ));
            // create_new: never append to (or follow a link planted as) someone else's file in a shared /tmp.
            match OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&path)
            {
                Ok(_) => return Ok(Manifest { path }),
                Err(e) if e.kind() == ErrorKind::AlreadyExists => continue,
                Err(e) => {
                    last_error = Some(e);
                    break;
                }
            }
        }
        let why = last_error.map_or_else(|| "name collisions".to_owned(), |e| e.to_string());
        Err(format!(
            "cannot create a manifest file in {}: {why}",
            dir.display()
        ))
    }

    /// Dump paths in the order written, each once.
    fn dump_paths(&self) -> Vec<PathBuf> {
        let Ok(bytes) = std::fs::read(&self.path) else {
            return Vec::new();
        };
        let mut paths: Vec<PathBuf> = Vec::new();
        for line in bytes.split(|&b| b == b'\n') {
            if line.is_empty() {
                continue;
            }
            let path = PathBuf::from(OsStr::from_bytes(line));
            if !paths.contains(&path) {
                paths.push(path);
            }
        }
        paths
    }
}

impl Drop for Manifest {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

fn print_dumps(dumps: &[WrittenDump], program: &OsStr) {
    if dumps.is_empty() {
        let why = match untraceable(program) {
            Some(why) => format!("{}: {why}", Path::new(program).display()),
            None => {
                "see any messages above; a statically linked or setuid program ignores LD_PRELOAD"
                    .into()
            }
        };
        eprintln!("heapledger: 0 dump(s) written ({why})");
        return;
    }
    eprintln!("heapledger: {} dump(s) written:", dumps.len());
    for d in dumps {
        match &d.summary {
            Ok(s) => eprintln!("  {}: {}", d.path.display(), summary_line(s)),
            Err(e) => eprintln!("  {e}"),
        }
    }
    let paths: Vec<String> = dumps.iter().map(|d| d.path.display().to_string()).collect();
    eprintln!("heapledger: details: heapledger report {}", paths.join(" "));
}

/// The program's own exit code, or 128+signal when it was killed (printing which signal). With gate options,
/// `gate::after_run` returns this only when the gate passes.
fn exit_code(status: ExitStatus, _dumps: &[WrittenDump]) -> u8 {
    if let Some(code) = status.code() {
        // Exit codes are 0..=255 on Unix; the truncation mirrors what a shell would see.
        return code as u8;
    }
    match status.signal() {
        Some(sig) => {
            let core = if status.core_dumped() {
                " (core dumped)"
            } else {
                ""
            };
            eprintln!(
                "heapledger: program killed by signal {}{core}",
                signal_name(sig)
            );
            128u8.wrapping_add(sig as u8)
        }
        None => exit::TOOL_ERROR,
    }
}

/// `SIGSEGV` etc. for the common signals, `signal N` otherwise.
pub fn signal_name(sig: i32) -> String {
    const NAMES: [(libc::c_int, &str); 25] = [
        (libc::SIGHUP, "SIGHUP"),
        (libc::SIGINT, "SIGINT"),
        (libc::SIGQUIT, "SIGQUIT"),
        (libc::SIGILL, "SIGILL"),
        (libc::SIGTRAP, "SIGTRAP"),
        (libc::SIGABRT, "SIGABRT"),
        (libc::SIGBUS, "SIGBUS"),
        (libc::SIGFPE, "SIGFPE"),
        (libc::SIGKILL, "SIGKILL"),
        (libc::SIGUSR1, "SIGUSR1"),
        (libc::SIGSEGV, "SIGSEGV"),
        (libc::SIGUSR2, "SIGUSR2"),
        (libc::SIGPIPE, "SIGPIPE"),
        (libc::SIGALRM, "SIGALRM"),
        (libc::SIGTERM, "SIGTERM"),
        (libc::SIGCHLD, "SIGCHLD"),
        (libc::SIGCONT, "SIGCONT"),
        (libc::SIGSTOP, "SIGSTOP"),
        (libc::SIGTSTP, "SIGTSTP"),
        (libc::SIGTTIN, "SIGTTIN"),
        (libc::SIGTTOU, "SIGTTOU"),
        (libc::SIGXCPU, "SIGXCPU"),
        (libc::SIGXFSZ, "SIGXFSZ"),
        (libc::SIGPROF, "SIGPROF"),
        (libc::SIGSYS, "SIGSYS"),
    ];
    NAMES
        .iter()
        .find(|(n, _)| *n == sig)
        .map_or_else(|| format!("signal {sig}"), |(_, name)| (*name).to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn preload_prepends() {
        let lib = Path::new("/opt/hl/libheapledger.so");
        assert_eq!(preload_value(lib, None), "/opt/hl/libheapledger.so");
        assert_eq!(
            preload_value(lib, Some(OsStr::new(""))),
            "/opt/hl/libheapledger.so"
        );
        assert_eq!(
            preload_value(lib, Some(OsStr::new("/a.so:/b.so"))),
            "/opt/hl/libheapledger.so:/a.so:/b.so"
        );
        assert_eq!(
            preload_value(lib, Some(OsStr::new("/a.so /opt/hl/libheapledger.so"))),
            "/opt/hl/libheapledger.so:/a.so"
        );
    }

    #[test]
    fn sizes_and_signals_of_the_pass_through_settings() {
        assert_eq!(parse_size("4096"), Some(4096));
        assert_eq!(parse_size("512KiB"), Some(512 << 10));
        assert_eq!(parse_size(" 1MiB "), Some(1 << 20));
        assert_eq!(parse_size("2g"), Some(2 << 30));
        for bad in ["", "0", "KiB", "1.5M", "-1", "1TiB", "99999999999999999999"] {
            assert_eq!(parse_size(bad), None, "{bad}");
        }
        assert_eq!(signal_number("USR2"), Some(libc::SIGUSR2));
        assert_eq!(signal_number("sigusr1"), Some(libc::SIGUSR1));
        assert_eq!(signal_number("12"), Some(12));
        assert_eq!(signal_number("NOPE"), None);
        assert_eq!(signal_number("0"), None);
    }

    #[test]
    fn signal_names() {
        assert_eq!(signal_name(libc::SIGSEGV), "SIGSEGV");
        assert_eq!(signal_name(libc::SIGABRT), "SIGABRT");
        assert_eq!(signal_name(60), "signal 60");
    }

    #[test]
    fn manifest_lists_each_dump_once() {
        let m = Manifest::create().unwrap();
        std::fs::write(&m.path, "/tmp/a.json\n/tmp/b.json\n/tmp/a.json\n\n").unwrap();
        assert_eq!(
            m.dump_paths(),
            [PathBuf::from("/tmp/a.json"), PathBuf::from("/tmp/b.json")]
        );
        let path = m.path.clone();
        drop(m);
        assert!(!path.exists());
    }
}
