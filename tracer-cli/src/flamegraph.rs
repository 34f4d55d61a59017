//! `heapledger flamegraph DUMP... > leaks.svg`: an SVG flame graph of leaked bytes by allocation stack.
//!
//! Each live block of an `exit`/`_exit` dump that is definitely or indirectly lost adds its size (estimated
//! from samples when the dump was sampled) to its stack, frames root-first: the outermost frame at the
//! bottom, the function that called the allocator at the top. Process start-up frames (outward of `main`)
//! are left out. With `--allocated` every live block counts, whatever its class and whatever the dump's
//! reason: a dump holds live blocks and totals only, so "all allocations" means all blocks still allocated
//! when the dump was written, not those freed before. With several dumps, each process gets its own root
//! frame (`prog (pid N)`). Rendering is `inferno`'s.

use std::collections::HashMap;
use std::io::{self, Write};
use std::path::PathBuf;

use heapledger_format::{class, reason, Dump};

use crate::analyse::sample_weight;
use crate::exit;
use crate::symbolize::{Frame, Symbolizer};

/// Options of `heapledger flamegraph`.
#[derive(clap::Args, Debug)]
pub struct FlamegraphArgs {
    /// Weigh every live block (any reachability class, any dump), not only leaked ones.
    #[arg(long)]
    pub allocated: bool,

    /// Title of the graph.
    #[arg(long, value_name = "TEXT")]
    pub title: Option<String>,

    /// Write the SVG to FILE instead of standard output.
    #[arg(long, short = 'o', value_name = "FILE")]
    pub output: Option<PathBuf>,

    /// Dump files (or directories of dumps).
    #[arg(required = true, value_name = "DUMP")]
    pub dumps: Vec<PathBuf>,
}

/// Largest total weight handed to inferno (which sums counts as `usize`); bigger totals are scaled down.
const MAX_TOTAL: u128 = 1 << 60;

/// Runs `heapledger flamegraph`.
pub fn flamegraph(args: &FlamegraphArgs) -> u8 {
    let mut code = exit::OK;
    let paths = crate::findings::expand_paths(&args.dumps);
    let mut dumps: Vec<(PathBuf, Dump)> = Vec::new();
    for p in &paths {
        match heapledger_format::load(p) {
            Ok(d) => dumps.push((p.clone(), d)),
            Err(e) => {
                eprintln!("heapledger: {}", crate::findings::one_line(&e.to_string()));
                code = exit::TOOL_ERROR;
            }
        }
    }
    let several = dumps.len() > 1;
    let mut folded: HashMap<String, u128> = HashMap::new();
    let mut symbolizer: Option<Symbolizer> = None;
    let mut judged = 0usize;
    for (_, dump) in &dumps {
        let final_dump = reason::LEAKS_JUDGED.contains(&dump.reason.as_str());
        if !args.allocated && !final_dump {
            continue;
        }
        judged += 1;
        let sym = match &mut symbolizer {
            Some(s) => {
                s.retarget(dump);
                s
            }
            None => symbolizer.insert(Symbolizer::new(dump)),
        };
        let root = several.then(|| {
            let exe = dump.exe.rsplit('/').next().unwrap_or(&dump.exe);
            format!("{exe} (pid {})", dump.pid)
        });
        add_dump(&mut folded, dump, sym, args.allocated, root.as_deref());
    }
    if !args.allocated && judged == 0 && !dumps.is_empty() {
        eprintln!(
            "heapledger: no exit dump among the dumps given: leaks are judged at exit only (use --allocated \
             for the live blocks of snapshots and crash dumps)"
        );
    }
    let what = if args.allocated {
        "live bytes (every block still allocated when the dump was written)"
    } else {
        "leaked bytes (definitely + indirectly lost)"
    };
    let title = args.title.clone().unwrap_or_else(|| {
        format!(
            "heapledger: {}",
            if args.allocated {
                "live heap by allocation stack"
            } else {
                "leaks by allocation stack"
            }
        )
    });
    let mut svg = Vec::new();
    if let Err(e) = render(&folded, &title, what, &mut svg) {
        eprintln!("heapledger: cannot render the flame graph: {e}");
        return exit::TOOL_ERROR;
    }
    let written = match &args.output {
        Some(path) => std::fs::write(path, &svg),
        None => {
            let mut out = io::stdout().lock();
            out.write_all(&svg).and_then(|()| out.flush())
        }
    };
    match written {
        Ok(()) => code,
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => code,
        Err(e) => {
            eprintln!("heapledger: cannot write the flame graph: {e}");
            exit::TOOL_ERROR
        }
    }
}

/// Adds the blocks of one dump to `folded` (stack text -> bytes).
pub fn add_dump(
    folded: &mut HashMap<String, u128>,
    dump: &Dump,
    sym: &mut Symbolizer,
    allocated: bool,
    root: Option<&str>,
) {
    let mut per_stack: HashMap<u64, f64> = HashMap::new();
    for b in &dump.blocks {
        let leaked = matches!(
            u8::try_from(b.class),
            Ok(class::DEFINITELY_LOST | class::INDIRECTLY_LOST)
        );
        if !allocated && !leaked {
            continue;
        }
        let w = if dump.sample_bytes > 0 {
            sample_weight(b.size, dump.sample_bytes) * b.size as f64
        } else {
            b.size as f64
        };
        *per_stack.entry(b.stack).or_default() += w;
    }
    for (stack, bytes) in per_stack {
        let frames = sym.stack_of(stack, dump.stack(stack));
        let line = fold_line(&frames, root);
        *folded.entry(line).or_default() += bytes.round() as u128;
    }
}

/// `root;outer;...;inner` for one stack (frames innermost first, as symbolized).
pub fn fold_line(frames: &[Frame], root: Option<&str>) -> String {
    // Drop process start-up: everything from `__libc_start*` outward (and `_start`).
    let end = frames
        .iter()
        .position(|f| {
            f.function
                .as_deref()
                .is_some_and(|n| n.starts_with("__libc_start") || n == "_start")
        })
        .unwrap_or(frames.len());
    let mut names: Vec<String> = Vec::with_capacity(end + 1);
    if let Some(r) = root {
        names.push(clean(r));
    }
    for f in frames[..end].iter().rev() {
        names.push(clean(&label(f)));
    }
    if names.is_empty() {
        names.push("[no stack recorded]".to_owned());
    }
    names.join(";")
}

fn label(f: &Frame) -> String {
    match (&f.function, &f.module) {
        (Some(func), _) => func.to_string(),
        (None, Some(m)) => format!("{}+{:#x}", m.rsplit('/').next().unwrap_or(m), f.offset),
        (None, None) => format!("{:#x}", f.address),
    }
}

/// A frame name without the characters the folded format uses (`;` separates frames; a line ends at `\n`).
fn clean(s: &str) -> String {
    s.replace(';', ":").replace(['\n', '\r'], " ")
}

/// Renders folded stacks with inferno, or a small SVG saying there is nothing to show.
pub fn render(
    folded: &HashMap<String, u128>,
    title: &str,
    what: &str,
    out: &mut Vec<u8>,
) -> io::Result<()> {
    let total: u128 = folded.values().sum();
    if total == 0 {
        return empty_svg(title, what, out);
    }
    let scale = total.div_ceil(MAX_TOTAL).max(1);
    let mut lines: Vec<String> = folded
        .iter()
        .filter_map(|(stack, bytes)| {
            let w = bytes / scale;
            (w > 0).then(|| format!("{stack} {w}"))
        })
        .collect();
    lines.sort();
    let mut opts = inferno::flamegraph::Options::default();
    opts.title = title.to_owned();
    opts.subtitle = Some(if scale > 1 {
        format!("{what}; weights divided by {scale}")
    } else {
        what.to_owned()
    });
    opts.count_name = if scale > 1 { "units" } else { "bytes" }.to_owned();
    opts.name_type = "Function:".to_owned();
    opts.colors =
        inferno::flamegraph::color::Palette::Basic(inferno::flamegraph::color::BasicPalette::Mem);
    opts.hash = true;
    opts.deterministic = true;
    inferno::flamegraph::from_lines(&mut opts, lines.iter().map(String::as_str), out)
}

fn empty_svg(title: &str, what: &str, out: &mut Vec<u8>) -> io::Result<()> {
    let esc = |s: &str| {
        s.replace('&', "&amp;")
            .replace('<', "&lt;")
            .replace('>', "&gt;")
            .replace('"', "&quot;")
    };
    write!(
        out,
        r#"<?xml version="1.0" encoding="UTF-8" standalone="no"?>
<svg version="1.1" width="1200" height="120" viewBox="0 0 1200 120" xmlns="http://www.w3.org/2000/svg">
<rect x="0" y="0" width="100%" height="100%" fill="rgb(248,248,248)"/>
<text x="600" y="40" text-anchor="middle" font-family="Verdana" font-size="17">{}</text>
<text x="600" y="80" text-anchor="middle" font-family="Verdana" font-size="13">Nothing to show: no {}.</text>
</svg>
"#,
        esc(title),
        esc(what)
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::rc::Rc;

    fn frame(function: Option<&str>) -> Frame {
        Frame {
            address: 0x1234,
            module: Some(Rc::from("/build/app")),
            offset: 0x34,
            function: function.map(Rc::from),
            file: None,
            line: None,
            inlined: false,
        }
    }

    #[test]
    fn folded_lines_are_root_first_without_start_up() {
        let frames = [
            frame(Some("make;it")),
            frame(None),
            frame(Some("main")),
            frame(Some("__libc_start_call_main")),
            frame(Some("_start")),
        ];
        assert_eq!(fold_line(&frames, None), "main;app+0x34;make:it");
        assert_eq!(
            fold_line(&frames, Some("app (pid 1)")),
            "app (pid 1);main;app+0x34;make:it"
        );
        assert_eq!(fold_line(&[], None), "[no stack recorded]");
    }

    #[test]
    fn renders_svg_and_empty_svg() {
        let mut folded = HashMap::new();
        folded.insert("main;leaky_function".to_owned(), 1000u128);
        folded.insert("main;other".to_owned(), u128::from(u64::MAX) * 4);
        let mut svg = Vec::new();
        render(&folded, "t", "leaked bytes", &mut svg).unwrap();
        let text = String::from_utf8(svg).unwrap();
        assert!(
            text.contains("<svg") && text.contains("other"),
            "{}",
            &text[..200]
        );
        let mut svg = Vec::new();
        render(&HashMap::new(), "a <title>", "leaked bytes", &mut svg).unwrap();
        let text = String::from_utf8(svg).unwrap();
        assert!(text.contains("a &lt;title&gt;") && text.contains("Nothing to show"));
    }
}
