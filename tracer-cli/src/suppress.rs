//! Suppression rules: which findings not to fail on, in two syntaxes that may be mixed in one file.
//!
//! * LeakSanitizer's, one rule per line: `KIND:PATTERN`. `leak:` applies to leaks of every class;
//!   heapledger adds `double-free:`, `invalid-free:`, `mismatched-free:` and `cross-heap-free:`. The pattern is
//!   matched against the function name, the source file path and the module path of every frame of every
//!   stack of the finding, LeakSanitizer's way: a substring match unless anchored with `^` (start) or `$`
//!   (end), `*` matching any run of characters. `#` starts a comment line. Kinds of other sanitizers
//!   (`interceptor_via_fun:`, `race:`, ...) are listed as ignored, so one file can serve several tools.
//! * Valgrind memcheck's, in braces: a name, `Memcheck:Leak` (with an optional `match-leak-kinds:` line) or
//!   `Memcheck:Free` (double, invalid, mismatched and cross-heap frees), then frame lines matched from the
//!   innermost frame outward: `fun:GLOB` (function), `obj:GLOB` (module path), `src:GLOB[:LINE]` (source file)
//!   and `...` (any number of frames); `*` and `?` are wildcards and a pattern must match the whole name.
//!   As in Valgrind, the innermost frame is the allocation or free function itself (`malloc`, `_Znwm`,
//!   `free`, `_ZdlPv`, ...), which heapledger's stacks leave out and which is therefore supplied here.
//!   Memcheck matches mangled C++ names and heapledger's frames carry demangled ones: a `fun:` pattern also
//!   matches when it demangles to the frame's name (patterns without wildcards) or names the function without
//!   its parameter list. Suppressions of other Memcheck kinds (`Cond`, `Addr4`, ...) and other tools are
//!   listed as ignored.
//!
//! A finding is silenced by the first rule that matches it: the user's files in the order given, then the
//! built-in list ([`BUILTIN`]). The gate reports how often each rule matched and which never did.

use std::path::Path;

use crate::findings::{Finding, Kind, KindSet, Role, Status};
use crate::render::text::frame_text;
use crate::symbolize::Frame;

/// The built-in rules, applied after the user's unless `--no-default-suppressions` is given. Each must name
/// only memory that a program cannot free itself, so that it can never hide a bug in the program.
pub const BUILTIN: &str = r#"
# heapledger's built-in suppressions (turn off with --no-default-suppressions).
#
# Blocks allocated by the dynamic loader itself: its first frame (the caller of malloc/calloc) is in ld.so.
# These are ld.so's bookkeeping (link maps, search lists of libraries dlopen()ed or re-opened), the DTV of
# every thread (allocated in pthread_create) and dynamic TLS blocks (__tls_get_addr; LeakSanitizer ships the
# same rule). ld.so frees them itself at dlclose and thread exit; a program has no pointer through which it
# could free them, so a leak report about them can never be acted on. They show as lost when ld.so keeps its
# pointer to them in memory that is not scanned (its own early allocations, the stacks that glibc caches
# for exited threads).
{
   heapledger-builtin-ld.so-internal
   Memcheck:Leak
   fun:*
   obj:*/ld-linux*.so*
}
"#;

/// Origin used for built-in rules.
pub const BUILTIN_ORIGIN: &str = "built-in";

/// The syntax a rule was written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Syntax {
    /// `kind:pattern`.
    Lsan,
    /// `{ ... Memcheck:Leak ... }`.
    Valgrind,
}

/// One rule.
#[derive(Debug, Clone)]
pub struct Rule {
    /// `file:line` where it was read, or [`BUILTIN_ORIGIN`].
    pub origin: String,
    /// How it reads: the line (`leak:foo`) or `NAME (Memcheck:Leak)`.
    pub text: String,
    /// Part of the built-in list.
    pub builtin: bool,
    /// Its syntax.
    pub syntax: Syntax,
    /// The kinds it applies to.
    pub kinds: KindSet,
    matcher: Matcher,
}

#[derive(Debug, Clone)]
enum Matcher {
    Lsan(Template),
    Valgrind(Vec<FramePat>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum FramePat {
    Ellipsis,
    Fun(String),
    Obj(String),
    Src(String, Option<u32>),
}

/// How often a rule matched.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RuleStat {
    /// Findings it silenced.
    pub findings: u64,
    /// Their blocks (leaks) and occurrences (errors).
    pub count: u64,
    /// Their bytes (leaks).
    pub bytes: u64,
}

/// Rules in the order they are tried, and notes about entries that were skipped.
#[derive(Debug, Clone, Default)]
pub struct RuleSet {
    /// The rules.
    pub rules: Vec<Rule>,
    /// One line per entry not applicable to heapledger (`file:line: why`).
    pub ignored: Vec<String>,
}

impl RuleSet {
    /// The user's files (in order), then the built-in list unless `builtin` is false.
    pub fn load(files: &[impl AsRef<Path>], builtin: bool) -> Result<RuleSet, String> {
        let mut set = RuleSet::default();
        for f in files {
            let f = f.as_ref();
            let text = std::fs::read(f)
                .map_err(|e| format!("suppressions {}: cannot read: {e}", f.display()))?;
            let text = String::from_utf8_lossy(&text);
            set.parse(&text, &f.display().to_string(), false)
                .map_err(|e| format!("suppressions {e}"))?;
        }
        if builtin {
            set.parse(BUILTIN, BUILTIN_ORIGIN, true)
                .expect("the built-in suppressions parse");
        }
        Ok(set)
    }

    /// Parses `text` (named `source` in messages) and appends its rules. Errors name `source:line`.
    pub fn parse(&mut self, text: &str, source: &str, builtin: bool) -> Result<(), String> {
        let lines: Vec<(usize, &str)> = text
            .lines()
            .enumerate()
            .map(|(i, l)| (i + 1, l.trim()))
            .filter(|(_, l)| !l.is_empty() && !l.starts_with('#'))
            .collect();
        let mut i = 0;
        while i < lines.len() {
            let (n, line) = lines[i];
            let at = |n: usize| {
                if builtin {
                    BUILTIN_ORIGIN.to_owned()
                } else {
                    format!("{source}:{n}")
                }
            };
            if line == "{" {
                let end = lines[i + 1..]
                    .iter()
                    .position(|(_, l)| *l == "}" || *l == "{")
                    .map(|p| p + i + 1);
                let end = match end {
                    Some(e) if lines[e].1 == "}" => e,
                    _ => {
                        return Err(format!(
                            "{source}:{n}: Valgrind suppression opened here is not closed with `}}`"
                        ))
                    }
                };
                match parse_valgrind(&lines[i + 1..end], &at(n), source)? {
                    Parsed::Rule(mut r) => {
                        r.builtin = builtin;
                        self.rules.push(r);
                    }
                    Parsed::Ignored(why) => self.ignored.push(format!("{}: {why}", at(n))),
                }
                i = end + 1;
                continue;
            }
            if line == "}" {
                return Err(format!("{source}:{n}: `}}` without a matching `{{`"));
            }
            let Some((kind, pattern)) = line.split_once(':') else {
                return Err(format!(
                    "{source}:{n}: expected `KIND:PATTERN` (like `leak:my_function`) or a Valgrind `{{ ... }}` \
                     block, found `{line}`"
                ));
            };
            let (kind, pattern) = (kind.trim(), pattern.trim());
            let Some(kinds) = lsan_kinds(kind) else {
                self.ignored.push(format!(
                    "{}: `{kind}:` is not a heapledger kind (leak, double-free, invalid-free, mismatched-free, \
                     cross-heap-free); rule ignored",
                    at(n)
                ));
                i += 1;
                continue;
            };
            if pattern.is_empty() {
                return Err(format!("{source}:{n}: `{kind}:` with an empty pattern"));
            }
            self.rules.push(Rule {
                origin: at(n),
                text: format!("{kind}:{pattern}"),
                builtin,
                syntax: Syntax::Lsan,
                kinds,
                matcher: Matcher::Lsan(Template::new(pattern)),
            });
            i += 1;
        }
        Ok(())
    }

    /// The index of the first rule that matches `f`.
    pub fn find(&self, f: &Finding) -> Option<usize> {
        self.rules.iter().position(|r| r.matches(f))
    }

    /// Marks every finding matched by a rule as suppressed, and counts per rule.
    pub fn apply(&self, findings: &mut [Finding]) -> Vec<RuleStat> {
        let mut stats = vec![RuleStat::default(); self.rules.len()];
        for f in findings {
            if let Some(i) = self.find(f) {
                f.status = Status::Suppressed(i);
                let s = &mut stats[i];
                s.findings += 1;
                s.count = s.count.saturating_add(f.count);
                if f.kind.is_leak() {
                    s.bytes = s.bytes.saturating_add(f.bytes);
                }
            }
        }
        stats
    }
}

enum Parsed {
    Rule(Rule),
    Ignored(String),
}

/// Kinds named by a LeakSanitizer-style prefix.
fn lsan_kinds(kind: &str) -> Option<KindSet> {
    Some(match kind.replace('_', "-").as_str() {
        "leak" => leak_kinds(),
        other => KindSet::of(&[Kind::parse(other).filter(|k| !k.is_leak() && *k != Kind::Signal)?]),
    })
}

fn leak_kinds() -> KindSet {
    KindSet::of(&[
        Kind::DefinitelyLost,
        Kind::IndirectlyLost,
        Kind::Reachable,
        Kind::Unclassified,
    ])
}

fn free_kinds() -> KindSet {
    KindSet::of(&[
        Kind::DoubleFree,
        Kind::InvalidFree,
        Kind::MismatchedFree,
        Kind::CrossHeapFree,
    ])
}

/// Parses the lines between `{` and `}`.
fn parse_valgrind(lines: &[(usize, &str)], origin: &str, source: &str) -> Result<Parsed, String> {
    let Some(&(_, name)) = lines.first() else {
        return Err(format!("{origin}: empty Valgrind suppression"));
    };
    let Some(&(n, kind_line)) = lines.get(1) else {
        return Err(format!(
            "{origin}: Valgrind suppression `{name}` has no `Tool:Kind` line"
        ));
    };
    let Some((tools, kind)) = kind_line.split_once(':') else {
        return Err(format!(
            "{source}:{n}: expected `Memcheck:Leak` or another `Tool:Kind`, found `{kind_line}`"
        ));
    };
    let text = format!("{name} ({kind_line})");
    if !tools.split(',').any(|t| t.trim() == "Memcheck") {
        return Ok(Parsed::Ignored(format!(
            "`{text}` is for another Valgrind tool; ignored"
        )));
    }
    let mut rest = &lines[2..];
    let kinds = match kind.trim() {
        "Leak" => {
            let mut kinds = leak_kinds();
            if let Some(&(n, l)) = rest.first() {
                if let Some(list) = l.strip_prefix("match-leak-kinds:") {
                    kinds = leak_kinds_list(list).map_err(|e| format!("{source}:{n}: {e}"))?;
                    rest = &rest[1..];
                }
            }
            kinds
        }
        "Free" => free_kinds(),
        other => {
            return Ok(Parsed::Ignored(format!(
                "`{text}`: Memcheck:{other} is not a heap error heapledger reports; ignored"
            )))
        }
    };
    let mut frames = Vec::new();
    for &(n, l) in rest {
        let pat = if l == "..." {
            FramePat::Ellipsis
        } else if let Some(p) = l.strip_prefix("fun:") {
            FramePat::Fun(p.trim().to_owned())
        } else if let Some(p) = l.strip_prefix("obj:") {
            FramePat::Obj(p.trim().to_owned())
        } else if let Some(p) = l.strip_prefix("src:") {
            let p = p.trim();
            match p.rsplit_once(':') {
                Some((file, line))
                    if !line.is_empty() && line.bytes().all(|b| b.is_ascii_digit()) =>
                {
                    FramePat::Src(file.to_owned(), line.parse().ok())
                }
                _ => FramePat::Src(p.to_owned(), None),
            }
        } else {
            return Err(format!(
                "{source}:{n}: expected a frame line (`fun:`, `obj:`, `src:` or `...`), found `{l}`"
            ));
        };
        frames.push(pat);
    }
    if frames.is_empty() {
        return Err(format!(
            "{origin}: Valgrind suppression `{name}` has no frame lines"
        ));
    }
    Ok(Parsed::Rule(Rule {
        origin: origin.to_owned(),
        text,
        builtin: false,
        syntax: Syntax::Valgrind,
        kinds,
        matcher: Matcher::Valgrind(frames),
    }))
}

/// `definite,indirect,possible,reachable`, `all` or `none`.
fn leak_kinds_list(list: &str) -> Result<KindSet, String> {
    let mut kinds = KindSet::EMPTY;
    for word in list.split(',').map(str::trim) {
        match word {
            "definite" => kinds.insert(Kind::DefinitelyLost),
            "indirect" => kinds.insert(Kind::IndirectlyLost),
            "reachable" => kinds.insert(Kind::Reachable),
            // heapledger has no "possibly lost": interior pointers make a block reachable.
            "possible" => {}
            "all" => kinds = leak_kinds(),
            "none" => {}
            other => {
                return Err(format!(
                    "unknown leak kind `{other}` in match-leak-kinds (definite, indirect, possible, reachable, \
                     all, none)"
                ))
            }
        }
    }
    Ok(kinds)
}

impl Rule {
    /// Whether the rule silences `f`.
    pub fn matches(&self, f: &Finding) -> bool {
        if !self.kinds.contains(f.kind) {
            return false;
        }
        match &self.matcher {
            Matcher::Lsan(t) => f.stacks.iter().flat_map(|s| &s.frames).any(|fr| {
                fr.function.as_deref().is_some_and(|s| t.matches(s))
                    || fr.file.as_deref().is_some_and(|s| t.matches(s))
                    || fr.module.as_deref().is_some_and(|s| t.matches(s))
            }),
            Matcher::Valgrind(pats) => {
                let Some(stack) = f.primary() else {
                    return false;
                };
                let top = top_frame(f, stack.role);
                let mut frames: Vec<MatchFrame<'_>> = Vec::with_capacity(stack.frames.len() + 1);
                frames.push(top);
                frames.extend(stack.frames.iter().map(MatchFrame::from));
                match_frames(pats, &frames)
            }
        }
    }
}

/// A frame as Valgrind patterns see it: several candidate names for the synthesized allocator frame.
struct MatchFrame<'a> {
    functions: Vec<&'a str>,
    object: Option<&'a str>,
    file: Option<&'a str>,
    line: Option<u32>,
}

impl<'a> From<&'a Frame> for MatchFrame<'a> {
    fn from(f: &'a Frame) -> Self {
        MatchFrame {
            // Valgrind names unknown functions `???`.
            functions: vec![f.function.as_deref().unwrap_or("???")],
            object: f.module.as_deref(),
            file: f.file.as_deref(),
            line: f.line,
        }
    }
}

/// Where Valgrind's own allocator lives; `obj:*vgpreload_memcheck*` lines match the synthesized frame.
const VALGRIND_PRELOAD: &str = "/usr/libexec/valgrind/vgpreload_memcheck-amd64-linux.so";

/// The allocation or free function Valgrind shows as the innermost frame.
fn top_frame(f: &Finding, role: Role) -> MatchFrame<'static> {
    let functions: &[&str] = if role == Role::Alloc {
        match f.allocator.as_str() {
            "malloc" => &["malloc", "calloc", "realloc", "reallocarray"],
            "aligned" => &[
                "posix_memalign",
                "aligned_alloc",
                "memalign",
                "valloc",
                "pvalloc",
            ],
            "new" => &[
                "_Znwm",
                "_ZnwmRKSt9nothrow_t",
                "_ZnwmSt11align_val_t",
                "_ZnwmSt11align_val_tRKSt9nothrow_t",
                "operator new(unsigned long)",
                "operator new(unsigned long, std::nothrow_t const&)",
                "operator new(unsigned long, std::align_val_t)",
                "operator new(unsigned long, std::align_val_t, std::nothrow_t const&)",
            ],
            "new[]" => &[
                "_Znam",
                "_ZnamRKSt9nothrow_t",
                "_ZnamSt11align_val_t",
                "_ZnamSt11align_val_tRKSt9nothrow_t",
                "operator new[](unsigned long)",
                "operator new[](unsigned long, std::nothrow_t const&)",
                "operator new[](unsigned long, std::align_val_t)",
                "operator new[](unsigned long, std::align_val_t, std::nothrow_t const&)",
            ],
            _ => &["???"],
        }
    } else {
        match f.freed_with.as_str() {
            "free" => &["free"],
            "realloc" => &["realloc"],
            "reallocarray" => &["reallocarray"],
            "delete" => &[
                "_ZdlPv",
                "_ZdlPvm",
                "_ZdlPvSt11align_val_t",
                "_ZdlPvmSt11align_val_t",
                "_ZdlPvRKSt9nothrow_t",
                "operator delete(void*)",
                "operator delete(void*, unsigned long)",
                "operator delete(void*, std::align_val_t)",
                "operator delete(void*, unsigned long, std::align_val_t)",
            ],
            "delete[]" => &[
                "_ZdaPv",
                "_ZdaPvm",
                "_ZdaPvSt11align_val_t",
                "_ZdaPvmSt11align_val_t",
                "_ZdaPvRKSt9nothrow_t",
                "operator delete[](void*)",
                "operator delete[](void*, unsigned long)",
                "operator delete[](void*, std::align_val_t)",
                "operator delete[](void*, unsigned long, std::align_val_t)",
            ],
            _ => &["???"],
        }
    };
    MatchFrame {
        functions: functions.to_vec(),
        object: Some(VALGRIND_PRELOAD),
        file: None,
        line: None,
    }
}

/// Whether `pats` match a prefix of `frames` (innermost first), `...` matching any number of frames.
fn match_frames(pats: &[FramePat], frames: &[MatchFrame<'_>]) -> bool {
    let Some((first, rest)) = pats.split_first() else {
        return true;
    };
    if *first == FramePat::Ellipsis {
        return (0..=frames.len()).any(|skip| match_frames(rest, &frames[skip..]));
    }
    match frames.split_first() {
        Some((f, more)) => match_frame(first, f) && match_frames(rest, more),
        None => false,
    }
}

fn match_frame(p: &FramePat, f: &MatchFrame<'_>) -> bool {
    match p {
        FramePat::Ellipsis => true,
        FramePat::Fun(pat) => f.functions.iter().any(|name| fun_matches(pat, name)),
        FramePat::Obj(pat) => f.object.is_some_and(|o| glob(pat, o)),
        FramePat::Src(pat, line) => {
            let file_ok = f.file.is_some_and(|file| {
                glob(pat, file) || glob(pat, file.rsplit('/').next().unwrap_or(file))
            });
            file_ok && line.is_none_or(|l| f.line == Some(l))
        }
    }
}

/// Valgrind `fun:` matching against a demangled name (see the module documentation).
fn fun_matches(pat: &str, name: &str) -> bool {
    if glob(pat, name) {
        return true;
    }
    if pat.starts_with("_Z") && !pat.contains(['*', '?']) {
        if let Ok(sym) = cpp_demangle::Symbol::new(pat) {
            if sym.to_string() == name {
                return true;
            }
        }
    }
    let bare = without_parameters(name);
    bare.len() != name.len() && glob(pat, bare)
}

/// `ns::f<int>(int) const` -> `ns::f<int>`.
fn without_parameters(name: &str) -> &str {
    let mut s = name.trim_end();
    loop {
        let before = s;
        for q in [" const", " volatile", " &&", " &", " noexcept"] {
            s = s.strip_suffix(q).unwrap_or(s);
        }
        if s.len() == before.len() {
            break;
        }
    }
    if !s.ends_with(')') {
        return name;
    }
    let mut depth = 0usize;
    for (i, c) in s.char_indices().rev() {
        match c {
            ')' => depth += 1,
            '(' => {
                depth -= 1;
                if depth == 0 {
                    return if i == 0 { name } else { &s[..i] };
                }
            }
            _ => {}
        }
    }
    name
}

/// Shell-style glob over the whole string: `*` any run of characters, `?` one character.
pub fn glob(pat: &str, s: &str) -> bool {
    glob_chars(
        &pat.chars().collect::<Vec<_>>(),
        &s.chars().collect::<Vec<_>>(),
        true,
    )
}

/// Iterative wildcard matching with one backtrack point (linear in practice, never exponential).
fn glob_chars(p: &[char], s: &[char], question: bool) -> bool {
    let (mut pi, mut si) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while si < s.len() {
        if pi < p.len() && p[pi] == '*' {
            star = Some((pi, si));
            pi += 1;
        } else if pi < p.len() && (p[pi] == s[si] || (question && p[pi] == '?')) {
            pi += 1;
            si += 1;
        } else if let Some((sp, ss)) = star {
            pi = sp + 1;
            si = ss + 1;
            star = Some((sp, ss + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

/// A LeakSanitizer pattern: substring match, `^`/`$` anchors, `*` wildcards.
#[derive(Debug, Clone)]
pub struct Template {
    chars: Vec<char>,
}

impl Template {
    /// Compiles `pattern`.
    pub fn new(pattern: &str) -> Template {
        let mut p = pattern;
        let start = p.starts_with('^');
        if start {
            p = &p[1..];
        }
        let end = p.ends_with('$') && !p.is_empty();
        if end {
            p = &p[..p.len() - 1];
        }
        let mut chars = Vec::new();
        if !start {
            chars.push('*');
        }
        chars.extend(p.chars());
        if !end {
            chars.push('*');
        }
        Template { chars }
    }

    /// Whether the pattern matches `s` (never an empty string, as in LeakSanitizer).
    pub fn matches(&self, s: &str) -> bool {
        !s.is_empty() && glob_chars(&self.chars, &s.chars().collect::<Vec<_>>(), false)
    }
}

/// Rules in the LeakSanitizer syntax for the findings given (those not already suppressed), one per distinct
/// rule, each preceded by comments saying which findings it covers. Leaks and bad frees are named by the
/// innermost user function of their stack, anchored (`leak:^make_buffer$`).
pub fn generate(findings: &[Finding], describe_process: impl Fn(usize) -> String) -> String {
    let mut rules: Vec<(String, Vec<String>)> = Vec::new();
    let mut unsuppressible = Vec::new();
    for f in findings {
        if matches!(f.status, Status::Suppressed(_)) {
            continue;
        }
        let what = format!(
            "{}: {} in {}",
            f.kind.name(),
            f.headline(),
            describe_process(f.process)
        );
        let prefix = match f.kind {
            k if k.is_leak() => "leak",
            Kind::Signal => {
                unsuppressible.push(format!("# not suppressible: {what}"));
                continue;
            }
            k => k.name(),
        };
        let Some(target) = f.primary().and_then(|s| rule_target(&s.frames)) else {
            unsuppressible.push(format!("# no stack to name (not suppressible): {what}"));
            continue;
        };
        let rule = format!("{prefix}:{target}");
        let mut comment = vec![format!("# {what}")];
        if let Some(s) = f.primary() {
            comment.extend(
                crate::fingerprint::user_frames(&s.frames)
                    .into_iter()
                    .take(3)
                    .map(|fr| format!("#   {}", frame_text(fr))),
            );
        }
        match rules.iter_mut().find(|(r, _)| *r == rule) {
            Some((_, c)) => c.extend(comment),
            None => rules.push((rule, comment)),
        }
    }
    let mut out = String::from(
        "# Generated by `heapledger suppressions`: one rule per finding reported now. Review before use: a \
         rule\n# silences every finding whose stack has a frame with that function.\n",
    );
    for (rule, comment) in rules {
        out.push('\n');
        for c in comment {
            out.push_str(&c);
            out.push('\n');
        }
        out.push_str(&rule);
        out.push('\n');
    }
    if !unsuppressible.is_empty() {
        out.push('\n');
        for u in unsuppressible {
            out.push_str(&u);
            out.push('\n');
        }
    }
    out
}

/// `^function$` of the innermost user frame with a name (else of the innermost named frame), or the module
/// file name when no frame has a name.
fn rule_target(frames: &[Frame]) -> Option<String> {
    let user = crate::fingerprint::user_frames(frames);
    let named = user
        .iter()
        .copied()
        .chain(frames.iter())
        .find_map(|f| f.function.as_deref());
    if let Some(name) = named {
        return Some(format!("^{name}$"));
    }
    user.first()
        .copied()
        .or(frames.first())
        .and_then(|f| f.module.as_deref())
        .map(|m| m.rsplit('/').next().unwrap_or(m).to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::findings::Stack;
    use std::rc::Rc;

    fn frame(function: Option<&str>, module: &str, file: Option<&str>, line: u32) -> Frame {
        Frame {
            address: 0x1000,
            module: Some(Rc::from(module)),
            offset: 0x10,
            function: function.map(Rc::from),
            file: file.map(Rc::from),
            line: Some(line),
            inlined: false,
        }
    }

    const APP: &str = "/build/app";
    const LIBC: &str = "/usr/lib/x86_64-linux-gnu/libc.so.6";
    const LD: &str = "/lib64/ld-linux-x86-64.so.2";

    fn finding(kind: Kind, allocator: &str, frames: Vec<Frame>) -> Finding {
        let role = if kind.is_leak() {
            Role::Alloc
        } else {
            Role::Free
        };
        Finding {
            kind,
            process: 0,
            count: 2,
            bytes: 64,
            allocator: allocator.into(),
            freed_with: "free".into(),
            detail: String::new(),
            addr: None,
            stacks: vec![Stack { role, frames }],
            fingerprint: String::new(),
            status: Status::Fail,
        }
    }

    fn leak_in(funcs: &[&str]) -> Finding {
        finding(
            Kind::DefinitelyLost,
            "malloc",
            funcs
                .iter()
                .enumerate()
                .map(|(i, f)| frame(Some(f), APP, Some("/src/app.c"), i as u32 + 10))
                .collect(),
        )
    }

    fn rules(text: &str) -> RuleSet {
        let mut s = RuleSet::default();
        s.parse(text, "test.supp", false).unwrap();
        s
    }

    #[test]
    fn lsan_templates() {
        let t = Template::new("make");
        assert!(t.matches("make_tx") && t.matches("remake") && !t.matches("mak"));
        assert!(Template::new("^make").matches("make_tx"));
        assert!(!Template::new("^make").matches("remake"));
        assert!(Template::new("tx$").matches("make_tx"));
        assert!(!Template::new("tx$").matches("make_txt"));
        assert!(Template::new("^make_tx$").matches("make_tx"));
        assert!(!Template::new("^make_tx$").matches("make_tx2"));
        assert!(Template::new("ma*tx").matches("xx_make_tx_yy"));
        assert!(Template::new("^m*x$").matches("make_tx"));
        // `?` is literal in LeakSanitizer patterns.
        assert!(!Template::new("mak?").matches("make"));
        assert!(!Template::new("*").matches(""));
    }

    #[test]
    fn globs() {
        assert!(glob("*", ""));
        assert!(glob("a*b?d", "aXXXbcd"));
        assert!(!glob("a*b?d", "aXXXbd"));
        assert!(glob("*/ld-linux*.so*", LD));
        assert!(glob("*a*a*a*a*a*b", &"a".repeat(30).replace("aaa", "aab")));
        assert!(!glob("*a*a*a*a*a*c", &"a".repeat(10_000)));
    }

    #[test]
    fn lsan_rules_match_any_frame_function_file_or_module() {
        let s = rules("# comment\n\nleak:helper\ndouble-free:other.c\ninvalid_free:libfoo\n");
        assert_eq!(s.rules.len(), 3);
        assert_eq!(s.find(&leak_in(&["make", "helper", "main"])), Some(0));
        assert_eq!(s.find(&leak_in(&["make", "main"])), None);
        let mut df = finding(
            Kind::DoubleFree,
            "malloc",
            vec![frame(Some("f"), APP, Some("/src/other.c"), 3)],
        );
        assert_eq!(s.find(&df), Some(1));
        // The leak rule does not silence a double free in `helper`.
        df.stacks[0].frames[0].file = None;
        df.stacks[0].frames[0].function = Some(Rc::from("helper"));
        assert_eq!(s.find(&df), None);
        let inv = finding(
            Kind::InvalidFree,
            "malloc",
            vec![frame(Some("f"), "/usr/lib/libfoo.so.1", None, 3)],
        );
        assert_eq!(s.find(&inv), Some(2));
    }

    #[test]
    fn lsan_rules_see_every_stack_of_an_error() {
        let s = rules("mismatched-free:alloc_site\n");
        let mut f = finding(
            Kind::MismatchedFree,
            "new",
            vec![frame(Some("free_site"), APP, None, 1)],
        );
        assert_eq!(s.find(&f), None);
        f.stacks.push(Stack {
            role: Role::Alloc,
            frames: vec![frame(Some("alloc_site"), APP, None, 2)],
        });
        assert_eq!(s.find(&f), Some(0));
    }

    #[test]
    fn other_sanitizer_kinds_are_ignored_with_a_note() {
        let s = rules("interceptor_via_fun:foo\nrace:bar\nleak:baz\n");
        assert_eq!(s.rules.len(), 1);
        assert_eq!(s.ignored.len(), 2);
        assert!(s.ignored[0].starts_with("test.supp:1:"), "{:?}", s.ignored);
    }

    #[test]
    fn syntax_errors_name_the_line() {
        let mut s = RuleSet::default();
        let e = s.parse("leak:a\nnonsense\n", "x.supp", false).unwrap_err();
        assert!(e.starts_with("x.supp:2:"), "{e}");
        let e = s.parse("leak:\n", "x.supp", false).unwrap_err();
        assert!(e.contains("empty pattern"), "{e}");
        let e = s
            .parse("{\n name\n Memcheck:Leak\n fun:a\n", "x.supp", false)
            .unwrap_err();
        assert!(e.contains("not closed"), "{e}");
        let e = s
            .parse("{\n name\n Memcheck:Leak\n bogus:a\n}\n", "x.supp", false)
            .unwrap_err();
        assert!(e.starts_with("x.supp:4:"), "{e}");
        let e = s
            .parse("{\n name\n Memcheck:Leak\n}\n", "x.supp", false)
            .unwrap_err();
        assert!(e.contains("no frame lines"), "{e}");
        let e = s.parse("}\n", "x.supp", false).unwrap_err();
        assert!(e.contains("without a matching"), "{e}");
    }

    const VG: &str = r#"
# A Valgrind file.
{
   leak-in-make
   Memcheck:Leak
   match-leak-kinds: definite
   fun:malloc
   fun:make
   ...
   fun:main
}
{
   cond-in-foo
   Memcheck:Cond
   fun:foo
}
{
   race
   Helgrind:Race
   fun:bar
}
{
   bad-free
   Memcheck:Free
   fun:free
   fun:release*
}
"#;

    #[test]
    fn valgrind_rules() {
        let s = rules(VG);
        assert_eq!(s.rules.len(), 2);
        assert_eq!(s.ignored.len(), 2, "{:?}", s.ignored);
        assert_eq!(s.rules[0].text, "leak-in-make (Memcheck:Leak)");
        assert_eq!(s.rules[0].origin, "test.supp:3");
        assert_eq!(s.find(&leak_in(&["make", "a", "b", "main"])), Some(0));
        assert_eq!(s.find(&leak_in(&["make", "main"])), Some(0));
        // The frames must start at the innermost one.
        assert_eq!(s.find(&leak_in(&["helper", "make", "main"])), None);
        // match-leak-kinds: definite only.
        let mut indirect = leak_in(&["make", "main"]);
        indirect.kind = Kind::IndirectlyLost;
        assert_eq!(s.find(&indirect), None);
        // `fun:malloc` is the allocation function: a block from `new` does not match.
        let mut from_new = leak_in(&["make", "main"]);
        from_new.allocator = "new".into();
        assert_eq!(s.find(&from_new), None);
        // Memcheck:Free covers every bad free, matched on the free's stack.
        let df = finding(
            Kind::DoubleFree,
            "malloc",
            vec![frame(Some("release_twice"), APP, None, 1)],
        );
        assert_eq!(s.find(&df), Some(1));
        let mut mismatched = df.clone();
        mismatched.kind = Kind::MismatchedFree;
        mismatched.freed_with = "delete".into();
        assert_eq!(s.find(&mismatched), None, "fun:free is not operator delete");
    }

    #[test]
    fn valgrind_mangled_names_obj_and_src() {
        let s = rules(
            "{\n a\n Memcheck:Leak\n fun:_Znwm\n fun:_Z4makei\n}\n{\n b\n Memcheck:Leak\n obj:*vgpreload_memcheck*\n \
             obj:/build/*\n src:app.c:11\n}\n",
        );
        let mut f = finding(
            Kind::DefinitelyLost,
            "new",
            vec![frame(Some("make(int)"), APP, Some("/src/app.c"), 10)],
        );
        assert_eq!(s.find(&f), Some(0));
        f.stacks[0].frames[0].function = Some(Rc::from("make(long)"));
        assert_eq!(s.find(&f), None);
        f.stacks[0]
            .frames
            .push(frame(Some("main"), APP, Some("/src/app.c"), 11));
        assert_eq!(s.find(&f), Some(1));
        f.stacks[0].frames[1].line = Some(12);
        assert_eq!(s.find(&f), None);
    }

    #[test]
    fn fun_without_parameters() {
        assert!(fun_matches("make", "make(int)"));
        assert!(fun_matches(
            "ns::Foo::bar",
            "ns::Foo::bar(char const*) const"
        ));
        assert!(fun_matches("ns::*::bar", "ns::Foo::bar(char const*) const"));
        assert!(fun_matches(
            "f<int>",
            "f<int>(std::vector<int, std::allocator<int> >)"
        ));
        assert!(!fun_matches("mak", "make(int)"));
        assert_eq!(without_parameters("operator()(int)"), "operator()");
        assert_eq!(without_parameters("(x)"), "(x)");
        assert_eq!(without_parameters("plain"), "plain");
    }

    #[test]
    fn builtin_rule_covers_ld_so_allocations_only() {
        let s = RuleSet::load(&[] as &[&str], true).unwrap();
        assert_eq!(s.rules.len(), 1);
        assert!(s.rules[0].builtin);
        assert_eq!(s.rules[0].origin, BUILTIN_ORIGIN);
        let dtv = finding(
            Kind::DefinitelyLost,
            "malloc",
            vec![
                frame(Some("calloc"), LD, Some("rtld-malloc.h"), 44),
                frame(Some("allocate_dtv"), LD, Some("dl-tls.c"), 401),
                frame(Some("pthread_create"), LIBC, None, 1),
                frame(Some("main"), APP, None, 2),
            ],
        );
        assert_eq!(s.find(&dtv), Some(0));
        // A leak in a constructor that ld.so called is the program's: its innermost frame is not in ld.so.
        let ctor = finding(
            Kind::DefinitelyLost,
            "malloc",
            vec![
                frame(Some("init_table"), APP, None, 1),
                frame(Some("call_init"), LD, None, 2),
                frame(Some("_dl_init"), LD, None, 3),
            ],
        );
        assert_eq!(s.find(&ctor), None);
        let none = RuleSet::load(&[] as &[&str], false).unwrap();
        assert!(none.rules.is_empty());
    }

    #[test]
    fn apply_counts_per_rule_first_match_wins() {
        let s = rules("leak:make\nleak:main\n");
        let mut fs = vec![
            leak_in(&["make", "main"]),
            leak_in(&["other", "main"]),
            leak_in(&["other"]),
        ];
        let stats = s.apply(&mut fs);
        assert_eq!(fs[0].status, Status::Suppressed(0));
        assert_eq!(fs[1].status, Status::Suppressed(1));
        assert_eq!(fs[2].status, Status::Fail);
        assert_eq!(
            stats[0],
            RuleStat {
                findings: 1,
                count: 2,
                bytes: 64
            }
        );
    }

    #[test]
    fn generated_rules_round_trip() {
        let fs = vec![
            leak_in(&["make", "main"]),
            leak_in(&["make", "other"]),
            finding(
                Kind::DoubleFree,
                "malloc",
                vec![frame(Some("release"), APP, None, 1)],
            ),
        ];
        let text = generate(&fs, |_| "prog (pid 1)".into());
        let lines: Vec<&str> = text.lines().filter(|l| !l.starts_with('#')).collect();
        assert_eq!(
            lines,
            ["", "leak:^make$", "", "double-free:^release$"],
            "{text}"
        );
        let s = rules(&text);
        for f in &fs {
            assert!(s.find(f).is_some(), "{text}");
        }
        assert_eq!(s.find(&leak_in(&["make2", "main"])), None);
    }
}
