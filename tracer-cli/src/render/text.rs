//! Human-readable report, in the spirit of valgrind's: counts first, then each error with its labelled stacks,
//! then the biggest leak sites. Stacks show the user's own code; runs of frames inside the C/C++ runtime and
//! the loader are folded to one line, keeping the runtime function the user actually called.

use std::fmt::Write as _;
use std::io::{self, Write};

use heapledger_format::ErrorKind;

use crate::analyse::{ErrorItem, LeakSite, Report};
use crate::symbolize::Frame;

/// Leak sites shown without `--all`.
pub const DEFAULT_LEAK_SITES: usize = 20;
/// Distinct errors shown without `--all`.
pub const DEFAULT_ERROR_SITES: usize = 20;

/// Text rendering options.
#[derive(Debug, Clone, Copy, Default)]
pub struct Options {
    /// Show every error and leak site, not only the first/biggest.
    pub all: bool,
}

/// Renders one report into a string (tests; the CLI streams with [`write_report`]).
#[cfg(test)]
pub fn render(r: &Report, options: Options) -> String {
    let mut out = Vec::new();
    write_report(&mut out, r, options).expect("writing to a Vec cannot fail");
    String::from_utf8_lossy(&out).into_owned()
}

/// Writes one report to `out`.
pub fn write_report(out: &mut impl Write, r: &Report, options: Options) -> io::Result<()> {
    writeln!(out, "==== heapledger report: {} ====", r.dump_path)?;
    let cmd = if r.cmdline.is_empty() {
        r.exe.clone()
    } else {
        r.cmdline.join(" ")
    };
    writeln!(out, "program: {cmd}")?;
    writeln!(out, "exe: {}", r.exe)?;
    let reason = if r.detail.is_empty() {
        r.reason.clone()
    } else {
        format!("{} ({})", r.reason, r.detail)
    };
    writeln!(
        out,
        "pid {} (parent {}), dump reason: {reason}",
        r.pid, r.ppid
    )?;
    if let Some(c) = &r.crash {
        let how = if c.code > 0 {
            format!(" at address {:#x}", c.addr)
        } else {
            " (sent by a process)".to_string()
        };
        writeln!(out, "CRASHED: {}{how} in thread {}", c.name, c.tid)?;
        write_stack(out, &c.frames)?;
    }
    writeln!(
        out,
        "total heap usage: {} allocs, {} frees, {} bytes allocated",
        r.totals.allocations, r.totals.frees, r.totals.bytes_allocated
    )?;
    let when = match r.reason.as_str() {
        "exit" | "_exit" | "exit_group" => "exit",
        "crash" => "crash",
        "killed" => "kill",
        _ => "snapshot",
    };
    writeln!(
        out,
        "in use at {when}: {} bytes in {} blocks",
        r.live.bytes, r.live.blocks
    )?;
    let c = &r.error_counts;
    writeln!(
        out,
        "errors: {} double free, {} invalid free, {} mismatched free, {} cross-heap free",
        c.double_free, c.invalid_free, c.mismatched_free, c.cross_heap_free
    )?;

    let shown_errors = if options.all {
        r.error_sites.len()
    } else {
        r.error_sites.len().min(DEFAULT_ERROR_SITES)
    };
    for site in &r.error_sites[..shown_errors] {
        let Some(e) = r.errors.get(site.first) else {
            continue;
        };
        writeln!(out)?;
        write!(out, "{}", error_headline(e))?;
        if site.count > 1 {
            write!(out, " ({} times)", site.count)?;
        }
        writeln!(out)?;
        writeln!(out, "  freed here:")?;
        write_stack(out, &e.free)?;
        if let Some(first) = &e.first_free {
            writeln!(out, "  first freed here:")?;
            write_stack(out, first)?;
        }
        if let Some(alloc) = &e.alloc {
            writeln!(out, "  allocated here:")?;
            write_stack(out, alloc)?;
        }
    }
    if shown_errors < r.error_sites.len() {
        writeln!(
            out,
            "\n... {} more distinct error(s); use --all to show them",
            r.error_sites.len() - shown_errors
        )?;
    }

    writeln!(out)?;
    if r.leak_sites_total == 0 {
        writeln!(out, "no live blocks: all heap memory was freed")?;
    } else {
        // Blocks still live at exit are leaks; at a crash or a snapshot they may simply be in use.
        let title = if when == "exit" {
            "leak sites"
        } else {
            "live allocation sites"
        };
        let shown = if options.all {
            r.leaks.len()
        } else {
            r.leaks.len().min(DEFAULT_LEAK_SITES)
        };
        write!(out, "{title}: {} (biggest first", r.leak_sites_total)?;
        if shown < r.leak_sites_total {
            write!(out, "; showing {shown}, use --all for all")?;
        }
        writeln!(out, ")")?;
        let approx = if r.sample_bytes > 0 { "~" } else { "" };
        for site in &r.leaks[..shown] {
            writeln!(out)?;
            writeln!(out, "{}", leak_headline(site, r.leak_bytes_total, approx))?;
            write_stack(out, &site.frames)?;
        }
        if r.sample_bytes > 0 {
            writeln!(
                out,
                "\n(~: estimated from samples, one per {} bytes on average)",
                r.sample_bytes
            )?;
        }
    }

    if !r.warnings.is_empty() {
        writeln!(out)?;
        for w in &r.warnings {
            writeln!(out, "warning: {w}")?;
        }
    }
    Ok(())
}

fn error_headline(e: &ErrorItem) -> String {
    let freed = &e.freed_with;
    match e.kind {
        ErrorKind::DoubleFree => {
            format!(
                "double free of {} bytes at {:#x} (allocated with {}, freed with {freed})",
                e.size, e.addr, e.allocator
            )
        }
        ErrorKind::InvalidFree => {
            let why = match e.detail.as_str() {
                "never_allocated" => "never allocated".to_owned(),
                "interior" => format!("points inside a live {}-byte block", e.size),
                "stack" => "a stack address".to_owned(),
                "static" => "inside a module's static data".to_owned(),
                "bootstrap" => "inside the tracer's own arena".to_owned(),
                "" => "not a heap block".to_owned(),
                other => other.to_owned(),
            };
            format!("invalid free of {:#x} with {freed}: {why}", e.addr)
        }
        ErrorKind::MismatchedFree => format!(
            "mismatched free of {} bytes at {:#x}: allocated with {}, freed with {freed}",
            e.size, e.addr, e.allocator
        ),
        ErrorKind::CrossHeapFree => format!(
            "cross-heap free of {} bytes at {:#x}: allocated with {}, freed with {freed}",
            e.size, e.addr, e.allocator
        ),
    }
}

/// `N bytes in M blocks allocated with A (P% of live bytes)`; the share is of the bytes in all sites, which is
/// the same as the dump's live bytes except when estimated from samples.
fn leak_headline(site: &LeakSite, live_bytes: u64, approx: &str) -> String {
    let plural = if site.blocks == 1 { "" } else { "s" };
    let mut s = format!(
        "{approx}{} bytes in {approx}{} block{plural} allocated with {}",
        site.bytes, site.blocks, site.allocator
    );
    if live_bytes > 0 {
        let _ = write!(
            s,
            " ({:.1}% of live bytes)",
            site.bytes as f64 * 100.0 / live_bytes as f64
        );
    }
    // Reachability is only known when the tracer scanned the heap (class 0 = not scanned).
    let [_, reachable, definite, indirect] = site.classes;
    if reachable + definite + indirect > 0 {
        let parts: Vec<String> = [
            (definite, "definitely lost"),
            (indirect, "indirectly lost"),
            (reachable, "reachable"),
        ]
        .iter()
        .filter(|(n, _)| *n > 0)
        .map(|(n, what)| format!("{n} {what}"))
        .collect();
        let _ = write!(s, ": {}", parts.join(", "));
    }
    s
}

/// One printed line of a stack.
#[derive(Debug, PartialEq, Eq)]
pub enum Line<'a> {
    /// A frame shown in full.
    Frame(&'a Frame),
    /// Consecutive runtime frames folded into one line: how many, and their modules (basenames, in order).
    Folded(usize, Vec<&'a str>),
}

/// Folds runs of runtime frames (see [`is_runtime`]). Each run of two or more is replaced by one line, except
/// that a run with user code further out keeps its outermost frame: that is the library function the user
/// called (`strdup`, `std::string::_M_create`, `qsort`), which explains the allocation. A stack with no user
/// frame at all is shown unfolded, since folding would leave nothing.
pub fn fold(frames: &[Frame]) -> Vec<Line<'_>> {
    let mut runtime: Vec<bool> = frames.iter().map(is_runtime).collect();
    // Everything outward of libc's start-up is process start-up too (`_start` in a stripped executable has
    // no name to recognise it by).
    let start_up = frames.iter().position(|f| {
        f.function
            .as_deref()
            .is_some_and(|n| n.starts_with("__libc_start"))
    });
    if let Some(first) = start_up {
        runtime[first..].iter_mut().for_each(|r| *r = true);
    }
    if runtime.iter().all(|&r| r) {
        return frames.iter().map(Line::Frame).collect();
    }
    let mut lines = Vec::new();
    let mut i = 0;
    while i < frames.len() {
        if !runtime[i] {
            lines.push(Line::Frame(&frames[i]));
            i += 1;
            continue;
        }
        let end = (i..frames.len())
            .find(|&j| !runtime[j])
            .unwrap_or(frames.len());
        let user_beyond = end < frames.len();
        let keep_last = user_beyond && end - i >= 2;
        let folded = if keep_last {
            &frames[i..end - 1]
        } else {
            &frames[i..end]
        };
        // Folding a single frame would not save a line, so it is shown.
        if folded.len() >= 2 {
            let mut modules: Vec<&str> = Vec::new();
            for f in folded {
                let m = module_name(f);
                if !modules.contains(&m) {
                    modules.push(m);
                }
            }
            lines.push(Line::Folded(folded.len(), modules));
        } else {
            lines.extend(folded.iter().map(Line::Frame));
        }
        if keep_last {
            lines.push(Line::Frame(&frames[end - 1]));
        }
        i = end;
    }
    lines
}

/// Is this frame in the C/C++ runtime, the dynamic loader or the tracer, rather than in the user's code?
pub fn is_runtime(f: &Frame) -> bool {
    if let Some(func) = f.function.as_deref() {
        // Process start-up lives in the executable (`_start`) or libc, and is never what a user looks for.
        if func == "_start" || func.starts_with("__libc_start") {
            return true;
        }
    }
    let Some(module) = &f.module else {
        return false;
    };
    let name = basename(module);
    const RUNTIME: [&str; 11] = [
        "libc.so",
        "libc-",
        "libstdc++",
        "libgcc_s",
        "ld-linux",
        "ld64.so",
        "ld.so",
        "libheapledger",
        "libpthread",
        "libdl",
        "linux-vdso",
    ];
    RUNTIME.iter().any(|p| name.starts_with(p))
}

fn basename(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

fn module_name(f: &Frame) -> &str {
    f.module.as_deref().map_or("unknown module", basename)
}

fn write_stack(out: &mut impl Write, frames: &[Frame]) -> io::Result<()> {
    if frames.is_empty() {
        return writeln!(out, "    (no stack recorded)");
    }
    for (n, line) in fold(frames).into_iter().enumerate() {
        let lead = if n == 0 { "at" } else { "by" };
        match line {
            Line::Frame(f) => writeln!(out, "    {lead} {}", frame_text(f))?,
            Line::Folded(count, modules) => {
                let s = if count == 1 { "" } else { "s" };
                writeln!(out, "    ... {count} frame{s} in {}", modules.join(", "))?
            }
        }
    }
    Ok(())
}

/// `function (file:line) [module]`, with `0x...` for an unknown function and module+offset for unknown lines.
pub fn frame_text(f: &Frame) -> String {
    let mut s = match &f.function {
        Some(func) => func.to_string(),
        None => format!("{:#x}", f.address),
    };
    match (&f.file, f.line) {
        (Some(file), Some(line)) => {
            let _ = write!(s, " ({}:{line})", basename(file));
        }
        (Some(file), None) => {
            let _ = write!(s, " ({})", basename(file));
        }
        _ => {}
    }
    match &f.module {
        Some(m) if f.function.is_some() => {
            let _ = write!(s, " [{}]", basename(m));
        }
        Some(m) => {
            let _ = write!(s, " [{}+{:#x}]", basename(m), f.offset);
        }
        None => {}
    }
    if f.inlined {
        s.push_str(" (inlined)");
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::rc::Rc;

    fn frame(function: &str, module: &str) -> Frame {
        Frame {
            address: 0x1000,
            module: Some(Rc::from(module)),
            offset: 0x10,
            function: Some(function.into()),
            file: None,
            line: None,
            inlined: false,
        }
    }

    fn render_lines(frames: &[Frame]) -> Vec<String> {
        fold(frames)
            .into_iter()
            .map(|l| match l {
                Line::Frame(f) => f.function.as_deref().unwrap().to_owned(),
                Line::Folded(n, m) => format!("...{n} in {}", m.join(",")),
            })
            .collect()
    }

    const LIBC: &str = "/usr/lib/x86_64-linux-gnu/libc.so.6";
    const STDCXX: &str = "/usr/lib/x86_64-linux-gnu/libstdc++.so.6";
    const APP: &str = "/home/u/app";

    #[test]
    fn single_runtime_frame_is_shown() {
        let frames = [
            frame("strdup", LIBC),
            frame("main", APP),
            frame("__libc_start_call_main", LIBC),
        ];
        assert_eq!(
            render_lines(&frames),
            ["strdup", "main", "__libc_start_call_main"]
        );
    }

    #[test]
    fn inner_run_keeps_the_function_the_user_called() {
        let frames = [
            frame("std::string::_M_create", STDCXX),
            frame("std::string::_M_construct", STDCXX),
            frame("std::string::basic_string(char const*)", STDCXX),
            frame("make()", APP),
            frame("main", APP),
            frame("__libc_start_call_main", LIBC),
            frame("__libc_start_main_impl", LIBC),
            frame("_start", APP),
        ];
        assert_eq!(
            render_lines(&frames),
            [
                "...2 in libstdc++.so.6",
                "std::string::basic_string(char const*)",
                "make()",
                "main",
                "...3 in libc.so.6,app"
            ]
        );
    }

    #[test]
    fn middle_run_between_user_frames() {
        let frames = [
            frame("cmp", APP),
            frame("msort_with_tmp", LIBC),
            frame("msort_with_tmp", LIBC),
            frame("qsort", LIBC),
            frame("main", APP),
        ];
        assert_eq!(
            render_lines(&frames),
            ["cmp", "...2 in libc.so.6", "qsort", "main"]
        );
    }

    #[test]
    fn anonymous_frames_outward_of_libc_start_are_start_up() {
        let mut start = frame("", "/usr/bin/ls");
        start.function = None;
        let frames = [
            frame("main", APP),
            frame("__libc_start_call_main", LIBC),
            frame("__libc_start_main_impl", LIBC),
            start,
        ];
        assert_eq!(render_lines(&frames), ["main", "...3 in libc.so.6,ls"]);
    }

    #[test]
    fn all_runtime_stack_is_not_folded() {
        let frames = [
            frame("_dl_init", "/lib64/ld-linux-x86-64.so.2"),
            frame("_start", APP),
        ];
        assert_eq!(render_lines(&frames), ["_dl_init", "_start"]);
    }

    #[test]
    fn unknown_module_frames_count_as_user_code() {
        let mut f = frame("x", LIBC);
        f.module = None;
        f.function = None;
        assert!(!is_runtime(&f));
        assert_eq!(frame_text(&f), "0x1000");
    }

    #[test]
    fn frame_text_forms() {
        let mut f = frame("Widget::make(int)", APP);
        f.file = Some("/src/widget.cc".into());
        f.line = Some(12);
        assert_eq!(frame_text(&f), "Widget::make(int) (widget.cc:12) [app]");
        f.inlined = true;
        assert_eq!(
            frame_text(&f),
            "Widget::make(int) (widget.cc:12) [app] (inlined)"
        );
        let mut g = frame("", LIBC);
        g.function = None;
        assert_eq!(frame_text(&g), "0x1000 [libc.so.6+0x10]");
    }

    #[test]
    fn renders_example_dump() {
        let text = include_str!("../../tests/data/small.json");
        let dump = heapledger_format::parse(text.as_bytes()).unwrap();
        let mut sym = crate::symbolize::Symbolizer::new(&dump);
        let report = crate::analyse::analyse(&dump, "small.json", &mut sym, Default::default());
        let out = render(&report, Options::default());
        assert!(
            out.contains("total heap usage: 7 allocs, 3 frees, 1136 bytes allocated"),
            "{out}"
        );
        assert!(
            out.contains("in use at exit: 1040 bytes in 4 blocks"),
            "{out}"
        );
        assert!(
            out.contains("double free of 32 bytes at 0x7f54503aa8d0"),
            "{out}"
        );
        assert!(out.contains("  first freed here:\n"), "{out}");
        assert!(out.contains(
            "invalid free of 0x7f54503aa518 with delete: points inside a live 16-byte block"
        ));
        assert!(
            out.contains("1000 bytes in 1 block allocated with malloc (96.2% of live bytes)"),
            "{out}"
        );
        assert!(
            out.contains("32 bytes in 2 blocks allocated with new"),
            "{out}"
        );
        assert!(out.contains("    at 0x557e149bf130 [app+0x1130]"), "{out}");
        assert!(
            out.contains("warning: module /nonexistent/heapledger-example/app not found"),
            "{out}"
        );
    }
}
