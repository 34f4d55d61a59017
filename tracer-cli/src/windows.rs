//! `heapledger run` on Windows: starts the program suspended, injects `heapledger.dll` into it, resumes it,
//! and summarises the dumps it wrote (compiled only for Windows; on Windows it is the `run` module, see
//! main.rs).
//!
//! There is no `LD_PRELOAD` on Windows. The injector creates the process with `CREATE_SUSPENDED`, writes the
//! DLL's path into it, runs `LoadLibraryW` in it on a remote thread, waits for that thread (the DLL's
//! `DllMain` has then installed every hook: initialisation is complete), and only then resumes the program's
//! main thread. The settings reach the DLL through the environment the program inherits (`HEAPLEDGER_OUT`,
//! `HEAPLEDGER_MANIFEST`, ...), as on Linux. Processes the program starts are injected by the DLL itself
//! (its `CreateProcessInternalW` hook) and write their own dumps, listed in the same manifest.
//!
//! The options are those of the Linux `run` (run.rs) except `--signal`, which has no Windows equivalent.

use std::ffi::{c_void, OsStr, OsString};
use std::io::ErrorKind;
use std::os::windows::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use heapledger_format::LoadError;

use crate::exit;
use crate::summary::{summarise, summary_line, Summary};

/// Name of the DLL looked for next to `heapledger.exe`.
pub const LIBRARY_NAME: &str = "heapledger.dll";

/// Options of `heapledger run` (as in run.rs).
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

    /// Not available on Windows (there are no signals); accepted so scripts fail with a clear message.
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

/// Runs `heapledger run` and returns the process exit code.
pub fn run(args: RunArgs) -> u8 {
    let gate = match crate::gate::Config::for_run(&args.gate) {
        Ok(g) => g,
        Err(e) => {
            eprintln!("heapledger: {e}");
            return exit::TOOL_ERROR;
        }
    };
    if args.signal.is_some() {
        eprintln!("heapledger: --signal is not available on Windows; use --interval for snapshots");
        return exit::TOOL_ERROR;
    }
    let mut env: Vec<(OsString, OsString)> = vec![("HEAPLEDGER_OUT".into(), args.out.clone())];
    if let Some(depth) = args.depth {
        env.push(("HEAPLEDGER_DEPTH".into(), depth.to_string().into()));
    }
    if let Some(s) = &args.sample {
        match parse_size(s) {
            Some(bytes) => env.push(("HEAPLEDGER_SAMPLE".into(), bytes.to_string().into())),
            None => {
                eprintln!(
                    "heapledger: --sample {s}: expected a size in bytes, like 4096, 512KiB or 1MiB"
                );
                return exit::TOOL_ERROR;
            }
        }
    }
    if let Some(s) = &args.interval {
        let t = s.trim();
        let ok = t.parse::<f64>().is_ok_and(|v| v > 0.0)
            && t.bytes().all(|b| b.is_ascii_digit() || b == b'.');
        if !ok {
            eprintln!(
                "heapledger: --interval {s}: expected a positive number of seconds, like 10 or 0.5"
            );
            return exit::TOOL_ERROR;
        }
        env.push(("HEAPLEDGER_INTERVAL".into(), t.into()));
    }
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
    env.push((
        "HEAPLEDGER_MANIFEST".into(),
        manifest.path.clone().into_os_string(),
    ));

    let program = &args.command[0];
    let (code, pid) = match run_injected(&lib, program, &args.command[1..], &env) {
        Ok(done) => done,
        Err(e) if e.to_string().starts_with("heapledger.dll") => {
            eprintln!("heapledger: {e}");
            return exit::LIBRARY_MISSING;
        }
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

    let dumps: Vec<(PathBuf, Result<Summary, LoadError>)> = manifest
        .dump_paths()
        .into_iter()
        .map(|path| {
            let s = heapledger_format::load(&path).map(|d| summarise(&d));
            (path, s)
        })
        .collect();
    print_dumps(&dumps);
    let code = exit_code(code);
    match gate {
        Some(config) => {
            let paths: Vec<PathBuf> = dumps.into_iter().map(|d| d.0).collect();
            let end = crate::gate::ProgramEnd {
                pid,
                program: Path::new(program).display().to_string(),
                signal: None,
                code,
            };
            crate::gate::after_run(config, &paths, &end, &args.gate)
        }
        None => code,
    }
}

/// Windows exit codes are 32-bit; `run` exits with the program's own code when it fits in 0..=255, else says
/// what it was (an NTSTATUS such as 0xC0000005 for a crash) and exits with 255.
fn exit_code(code: u32) -> u8 {
    if code <= 255 {
        return code as u8;
    }
    let what = match code {
        0xC000_0005 => " (access violation)",
        0xC000_0374 => " (heap corruption)",
        0xC000_0409 => " (stack buffer overrun / fail fast)",
        0xC000_00FD => " (stack overflow)",
        0x4000_0015 | 3 => " (abort)",
        _ => "",
    };
    eprintln!("heapledger: program exited with code {code:#x}{what}");
    255
}

/// `SIGSEGV` etc. do not exist on Windows; gate.rs names a signal with this (never called there on Windows).
pub fn signal_name(sig: i32) -> String {
    format!("signal {sig}")
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

/// The DLL from `%HEAPLEDGER_LIB%`, else `heapledger.dll` next to this executable, made absolute.
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
            "cannot find {LIBRARY_NAME} (looked in {}); build it with scripts/build-windows.sh or set HEAPLEDGER_LIB",
            candidate.display()
        )
    };
    let lib = std::path::absolute(&candidate).map_err(|_| missing())?;
    if !lib.is_file() {
        return Err(missing());
    }
    Ok(lib)
}

// ---- the injector ----------------------------------------------------------------------------------------------

type Handle = *mut c_void;

#[repr(C)]
struct StartupInfoW {
    cb: u32,
    reserved: *mut u16,
    desktop: *mut u16,
    title: *mut u16,
    x: u32,
    y: u32,
    x_size: u32,
    y_size: u32,
    x_count_chars: u32,
    y_count_chars: u32,
    fill_attribute: u32,
    flags: u32,
    show_window: u16,
    reserved2_len: u16,
    reserved2: *mut u8,
    std_input: Handle,
    std_output: Handle,
    std_error: Handle,
}

#[repr(C)]
struct ProcessInformation {
    process: Handle,
    thread: Handle,
    pid: u32,
    tid: u32,
}

#[link(name = "kernel32")]
extern "system" {
    fn CreateProcessW(
        app: *const u16,
        cmd: *mut u16,
        pattr: *const c_void,
        tattr: *const c_void,
        inherit: i32,
        flags: u32,
        env: *const c_void,
        cwd: *const u16,
        si: *const StartupInfoW,
        pi: *mut ProcessInformation,
    ) -> i32;
    fn VirtualAllocEx(
        process: Handle,
        addr: *const c_void,
        size: usize,
        kind: u32,
        protect: u32,
    ) -> *mut c_void;
    fn VirtualFreeEx(process: Handle, addr: *mut c_void, size: usize, kind: u32) -> i32;
    fn WriteProcessMemory(
        process: Handle,
        addr: *mut c_void,
        buf: *const c_void,
        size: usize,
        written: *mut usize,
    ) -> i32;
    fn GetModuleHandleW(name: *const u16) -> Handle;
    fn GetProcAddress(module: Handle, name: *const u8) -> *const c_void;
    fn CreateRemoteThread(
        process: Handle,
        attr: *const c_void,
        stack: usize,
        start: *const c_void,
        param: *mut c_void,
        flags: u32,
        tid: *mut u32,
    ) -> Handle;
    fn WaitForSingleObject(h: Handle, ms: u32) -> u32;
    fn GetExitCodeThread(h: Handle, code: *mut u32) -> i32;
    fn GetExitCodeProcess(h: Handle, code: *mut u32) -> i32;
    fn ResumeThread(h: Handle) -> u32;
    fn TerminateProcess(h: Handle, code: u32) -> i32;
    fn CloseHandle(h: Handle) -> i32;
    fn GetLastError() -> u32;
    fn SetConsoleCtrlHandler(handler: *const c_void, add: i32) -> i32;
}

const CREATE_SUSPENDED: u32 = 0x4;
const CREATE_UNICODE_ENVIRONMENT: u32 = 0x400;
const MEM_COMMIT_RESERVE: u32 = 0x3000;
const MEM_RELEASE: u32 = 0x8000;
const PAGE_READWRITE: u32 = 0x04;
const INFINITE: u32 = u32::MAX;

fn wide(s: &OsStr) -> Vec<u16> {
    s.encode_wide().chain(Some(0)).collect()
}

/// Quotes one argument the way CommandLineToArgvW (and the C runtimes) split it back.
pub fn quote(arg: &OsStr) -> Vec<u16> {
    let w: Vec<u16> = arg.encode_wide().collect();
    let plain = !w.is_empty()
        && !w
            .iter()
            .any(|&c| c == b' ' as u16 || c == b'\t' as u16 || c == b'"' as u16);
    if plain {
        return w;
    }
    let mut out = vec![b'"' as u16];
    let mut backslashes = 0;
    for c in w {
        if c == b'\\' as u16 {
            backslashes += 1;
        } else if c == b'"' as u16 {
            out.extend(std::iter::repeat_n(b'\\' as u16, backslashes * 2 + 1));
            out.push(c);
            backslashes = 0;
        } else {
            out.extend(std::iter::repeat_n(b'\\' as u16, backslashes));
            out.push(c);
            backslashes = 0;
        }
    }
    out.extend(std::iter::repeat_n(b'\\' as u16, backslashes * 2));
    out.push(b'"' as u16);
    out
}

/// An environment block: ours with `env` set on top, sorted as Windows wants it (case-insensitively).
fn environment_block(env: &[(OsString, OsString)]) -> Vec<u16> {
    let mut vars: Vec<(OsString, OsString)> = std::env::vars_os()
        .filter(|(k, _)| {
            !env.iter().any(|(e, _)| {
                e.to_string_lossy()
                    .eq_ignore_ascii_case(&k.to_string_lossy())
            })
        })
        .collect();
    vars.extend(env.iter().cloned());
    vars.sort_by_key(|(k, _)| k.to_string_lossy().to_uppercase());
    let mut block = Vec::new();
    for (k, v) in vars {
        block.extend(k.encode_wide());
        block.push(b'=' as u16);
        block.extend(v.encode_wide());
        block.push(0);
    }
    block.push(0);
    block
}

fn os_error(what: &str) -> std::io::Error {
    // SAFETY: no preconditions.
    let code = unsafe { GetLastError() };
    let e = std::io::Error::from_raw_os_error(code as i32);
    std::io::Error::new(e.kind(), format!("{what}: {e}"))
}

/// Starts `program` with `args` suspended, with `env` added to this process's environment, loads `lib` into it,
/// resumes it and waits for it. Returns its exit code and pid. An error whose message starts with
/// `heapledger.dll` means the DLL could not be loaded or did not initialise (the program was then terminated).
pub fn run_injected(
    lib: &Path,
    program: &OsStr,
    args: &[OsString],
    env: &[(OsString, OsString)],
) -> std::io::Result<(u32, u32)> {
    let mut cmdline = quote(program);
    for a in args {
        cmdline.push(b' ' as u16);
        cmdline.extend(quote(a));
    }
    cmdline.push(0);
    let env_block = environment_block(env);
    let dll = wide(lib.as_os_str());
    // SAFETY: plain Win32 calls with buffers that outlive them; handles are closed on every path.
    unsafe {
        let mut si: StartupInfoW = std::mem::zeroed();
        si.cb = std::mem::size_of::<StartupInfoW>() as u32;
        let mut pi: ProcessInformation = std::mem::zeroed();
        if CreateProcessW(
            std::ptr::null(),
            cmdline.as_mut_ptr(),
            std::ptr::null(),
            std::ptr::null(),
            1,
            CREATE_SUSPENDED | CREATE_UNICODE_ENVIRONMENT,
            env_block.as_ptr().cast(),
            std::ptr::null(),
            &si,
            &mut pi,
        ) == 0
        {
            return Err(os_error("CreateProcessW"));
        }
        let fail = |pi: &ProcessInformation, e: std::io::Error| {
            TerminateProcess(pi.process, 125);
            CloseHandle(pi.thread);
            CloseHandle(pi.process);
            Err(e)
        };
        let bytes = dll.len() * 2;
        let remote = VirtualAllocEx(
            pi.process,
            std::ptr::null(),
            bytes,
            MEM_COMMIT_RESERVE,
            PAGE_READWRITE,
        );
        if remote.is_null() {
            return fail(
                &pi,
                os_error("heapledger.dll: VirtualAllocEx in the program"),
            );
        }
        if WriteProcessMemory(
            pi.process,
            remote,
            dll.as_ptr().cast(),
            bytes,
            std::ptr::null_mut(),
        ) == 0
        {
            return fail(
                &pi,
                os_error("heapledger.dll: WriteProcessMemory in the program"),
            );
        }
        // kernel32 is mapped at the same address in every 64-bit process of a boot session.
        let kernel32 = GetModuleHandleW(wide(OsStr::new("kernel32.dll")).as_ptr());
        let load_library = GetProcAddress(kernel32, c"LoadLibraryW".as_ptr().cast());
        let thread = CreateRemoteThread(
            pi.process,
            std::ptr::null(),
            0,
            load_library,
            remote,
            0,
            std::ptr::null_mut(),
        );
        if thread.is_null() {
            return fail(
                &pi,
                os_error("heapledger.dll: CreateRemoteThread in the program (a 32-bit program?)"),
            );
        }
        // The remote LoadLibraryW returns once DllMain has installed every hook.
        WaitForSingleObject(thread, INFINITE);
        let mut module = 0u32;
        GetExitCodeThread(thread, &mut module);
        CloseHandle(thread);
        VirtualFreeEx(pi.process, remote, 0, MEM_RELEASE);
        if module == 0 {
            return fail(
                &pi,
                std::io::Error::other(format!(
                    "heapledger.dll ({}) did not load or initialise in the program (see its messages above)",
                    lib.display()
                )),
            );
        }
        // Ctrl+C goes to the whole console: the program decides whether to stop; we stay to read its dumps.
        SetConsoleCtrlHandler(std::ptr::null(), 1);
        ResumeThread(pi.thread);
        WaitForSingleObject(pi.process, INFINITE);
        SetConsoleCtrlHandler(std::ptr::null(), 0);
        let mut code = 0u32;
        GetExitCodeProcess(pi.process, &mut code);
        CloseHandle(pi.thread);
        CloseHandle(pi.process);
        Ok((code, pi.pid))
    }
}

// ---- dumps -------------------------------------------------------------------------------------------------------

/// The file the DLL appends one line per dump to (see run.rs).
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
            match std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
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

    fn dump_paths(&self) -> Vec<PathBuf> {
        let Ok(text) = std::fs::read_to_string(&self.path) else {
            return Vec::new();
        };
        let mut paths: Vec<PathBuf> = Vec::new();
        for line in text.lines().map(str::trim_end).filter(|l| !l.is_empty()) {
            let path = PathBuf::from(line);
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

fn print_dumps(dumps: &[(PathBuf, Result<Summary, LoadError>)]) {
    if dumps.is_empty() {
        eprintln!("heapledger: 0 dump(s) written (see any messages above)");
        return;
    }
    eprintln!("heapledger: {} dump(s) written:", dumps.len());
    for (path, summary) in dumps {
        match summary {
            Ok(s) => eprintln!("  {}: {}", path.display(), summary_line(s)),
            Err(e) => eprintln!("  {e}"),
        }
    }
    let paths: Vec<String> = dumps.iter().map(|d| d.0.display().to_string()).collect();
    eprintln!("heapledger: details: heapledger report {}", paths.join(" "));
}
