#!/usr/bin/env bash
# heapledger overhead benchmark: heapledger vs. native, a forwarding-only shim, heaptrack, valgrind memcheck and
# gcc's LeakSanitizer runtime, on synthetic malloc churn (1/2/8 threads) and three real programs.
#
# Usage: scripts/bench.sh [options]        (docs/benchmarks.md explains the method and the numbers)
#
#   --quick            churn-1t and churn-8t (1.5M iterations), native + heapledger + heaptrack, 3 runs; well
#                      under a minute. Its last line is
#                      "ratios: churn-1t=X.XX churn-8t=Y.YY heaptrack-1t=Z.ZZ heaptrack-8t=W.WW"
#   --runs N           repetitions per workload and tool (default 5; --quick: 3)
#   --valgrind-runs N  repetitions for valgrind, which is 20-60x slower (default 1)
#   --only W[,W..]     workloads: churn-1t churn-2t churn-8t python-dict sqlite cxx-compile (default: all)
#   --tools T[,T..]    tools: native shim heapledger heapledger-sample heaptrack valgrind lsan (default: all;
#                      native always runs, the ratios need it)
#   --md FILE          also write the Markdown report to FILE
#   --no-build         do not run `cargo build --release -p heapledger-preload`; use the .so as it is
#   --no-install       do not apt-get install missing peers (heaptrack, valgrind, sqlite3, liblsan0)
#   --keep             keep every run's output files and logs (their folder is printed)
#   --timeout S        kill a run after S seconds and report it as failed (default 900)
#   -h, --help
#
# Environment: HEAPLEDGER_SO (library to test; default target/release/libheapledger.so), HEAPLEDGER_DEPTH is
# passed through to the heapledger runs, BENCH_CACHE (default target/bench: built helpers, generated inputs).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
SRC="$ROOT/scripts/bench"
CACHE=${BENCH_CACHE:-$ROOT/target/bench}
SO=${HEAPLEDGER_SO:-$ROOT/target/release/libheapledger.so}

ALL_WORKLOADS=(churn-1t churn-2t churn-8t python-dict sqlite cxx-compile)
ALL_TOOLS=(native shim heapledger heapledger-sample heaptrack valgrind lsan)
SAMPLE_BYTES=524288

quick=0
runs=""
vg_runs=1
only=""
tools_opt=""
md=""
build=1
install=1
keep=0
timeout_s=900

usage() { sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'; }

while [ $# -gt 0 ]; do
    case "$1" in
        --quick) quick=1 ;;
        --runs) runs=${2:?--runs needs N}; shift ;;
        --runs=*) runs=${1#*=} ;;
        --valgrind-runs) vg_runs=${2:?--valgrind-runs needs N}; shift ;;
        --valgrind-runs=*) vg_runs=${1#*=} ;;
        --only) only=${2:?--only needs a list}; shift ;;
        --only=*) only=${1#*=} ;;
        --tools) tools_opt=${2:?--tools needs a list}; shift ;;
        --tools=*) tools_opt=${1#*=} ;;
        --md) md=${2:?--md needs a file}; shift ;;
        --md=*) md=${1#*=} ;;
        --no-build) build=0 ;;
        --no-install) install=0 ;;
        --keep) keep=1 ;;
        --timeout) timeout_s=${2:?--timeout needs seconds}; shift ;;
        --timeout=*) timeout_s=${1#*=} ;;
        -h | --help) usage; exit 0 ;;
        *) echo "bench.sh: unknown option: $1 (see --help)" >&2; exit 2 ;;
    esac
    shift
done

for n in "${runs:-1}" "$vg_runs" "$timeout_s"; do
    case "$n" in '' | *[!0-9]*) echo "bench.sh: not a number: $n" >&2; exit 2 ;; esac
done

if [ "$quick" = 1 ]; then
    workloads=(churn-1t churn-8t)
    tools=(native heapledger heaptrack)
    runs=${runs:-3}
    churn_iters=1500000
else
    workloads=("${ALL_WORKLOADS[@]}")
    tools=("${ALL_TOOLS[@]}")
    runs=${runs:-5}
    churn_iters=5000000
fi
[ "$runs" -ge 1 ] || { echo "bench.sh: --runs must be >= 1" >&2; exit 2; }

in_list() { # in_list WORD WORD... -> is $1 among the rest
    local w=$1; shift
    local x
    for x in "$@"; do [ "$x" = "$w" ] && return 0; done
    return 1
}

if [ -n "$only" ]; then
    IFS=, read -r -a req <<<"$only"
    for w in "${req[@]}"; do
        in_list "$w" "${ALL_WORKLOADS[@]}" || { echo "bench.sh: unknown workload: $w (one of: ${ALL_WORKLOADS[*]})" >&2; exit 2; }
    done
    workloads=("${req[@]}")
fi
if [ -n "$tools_opt" ]; then
    IFS=, read -r -a req <<<"$tools_opt"
    for t in "${req[@]}"; do
        in_list "$t" "${ALL_TOOLS[@]}" || { echo "bench.sh: unknown tool: $t (one of: ${ALL_TOOLS[*]})" >&2; exit 2; }
    done
    tools=(native)
    for t in "${req[@]}"; do in_list "$t" "${tools[@]}" || tools+=("$t"); done
fi

WORK=$(mktemp -d "${TMPDIR:-/tmp}/heapledger-bench.XXXXXX")
cleanup() { if [ "$keep" = 1 ]; then echo "bench: outputs and logs kept in $WORK" >&2; else rm -rf "$WORK"; fi; }
trap cleanup EXIT
mkdir -p "$CACHE/bin" "$CACHE/tmp" "$WORK/logs"

START=$SECONDS
log() { printf 'bench: [%3ds] %s\n' "$((SECONDS - START))" "$*" >&2; }
NOTES=()
declare -A TOOL_OK=() TOOL_LABEL=() WL_OK=()
skip() { # skip NAME REASON: one clear line on stdout, kept for the report
    printf 'skip: %s: %s\n' "$1" "$2"
    NOTES+=("skip: $1: $2")
}

# --- peers: install what is missing -------------------------------------------------------------------------
apt_updated=0
apt_install() { # apt_install PKG...: true if installed
    [ "$install" = 1 ] || return 1
    [ "$(id -u)" = 0 ] || return 1
    command -v apt-get >/dev/null || return 1
    if [ "$apt_updated" = 0 ]; then
        log "apt-get update"
        apt-get update -qq >>"$WORK/logs/apt.log" 2>&1 || true
        apt_updated=1
    fi
    log "apt-get install $*"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >>"$WORK/logs/apt.log" 2>&1
}

command -v cc >/dev/null || apt_install gcc || { echo "bench.sh: no C compiler (cc)" >&2; exit 1; }

wants_tool() { in_list "$1" "${tools[@]}"; }
wants_wl() { in_list "$1" "${workloads[@]}"; }

if wants_tool heaptrack && ! command -v heaptrack >/dev/null; then apt_install heaptrack || true; fi
if wants_tool valgrind && ! command -v valgrind >/dev/null; then apt_install valgrind || true; fi
if wants_wl sqlite && ! command -v sqlite3 >/dev/null; then apt_install sqlite3 || true; fi
if wants_wl cxx-compile && ! command -v g++ >/dev/null; then apt_install g++ || true; fi
find_lsan() {
    local p
    p=$(ldconfig -p 2>/dev/null | awk '/liblsan\.so\.0 / && !p {p = $NF} END {print p}')
    [ -n "$p" ] || p=$(cc -print-file-name=liblsan.so.0 2>/dev/null)
    case "$p" in /*) [ -e "$p" ] && echo "$p" ;; esac
}
LSAN=""
if wants_tool lsan; then
    LSAN=$(find_lsan || true)
    if [ -z "$LSAN" ]; then apt_install liblsan0 || true; LSAN=$(find_lsan || true); fi
fi

# --- build the helpers and the workloads (cached in $CACHE/bin, rebuilt when a source changes) --------------
BIN="$CACHE/bin"
stale() { [ ! -e "$1" ] || [ "$2" -nt "$1" ]; }
build_c() { # build_c OUT SRC FLAGS...
    local out=$1 src=$2; shift 2
    if stale "$out" "$src" || stale "$out" "${BASH_SOURCE[0]}"; then
        cc "$@" -o "$out.tmp" "$src" && mv "$out.tmp" "$out"
    fi
}
build_c "$BIN/measure" "$SRC/measure.c" -O2
# churn: no frame pointers, so a tracer's unwinder has DWARF work to do; no identical-code folding of the sites
build_c "$BIN/churn" "$SRC/churn.c" -O2 -fomit-frame-pointer -fno-ipa-icf -pthread
build_c "$BIN/shim.so" "$SRC/shim.c" -O2 -shared -fPIC -ldl
MEASURE="$BIN/measure"

# --- workloads -----------------------------------------------------------------------------------------------
PY=""
if [ -x /usr/bin/python3 ]; then
    PY=/usr/bin/python3 # the real binary, not a pyenv shim script (a tracer would trace the shim's bash too)
elif command -v python3 >/dev/null; then
    PY=$(python3 -c 'import os, sys; print(os.path.realpath(sys.executable))')
fi
SQL="$CACHE/sqlite-200k.sql"
if wants_wl sqlite && stale "$SQL" "${BASH_SOURCE[0]}"; then
    # 200k single-row INSERTs in one transaction, two indexes, two queries. Deterministic (LCG, exact in
    # double precision, so mawk and gawk agree).
    awk -v n=200000 'BEGIN {
        q = sprintf("%c", 39); s = 12345
        a = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789abcdefghijklmnopqrstuvwxyz"
        print "PRAGMA journal_mode=OFF;"
        print "CREATE TABLE t(id INTEGER PRIMARY KEY, name TEXT NOT NULL, grp INTEGER, payload TEXT);"
        print "BEGIN;"
        for (i = 1; i <= n; i++) {
            s = (s * 69069 + 1) % 4294967296
            printf "INSERT INTO t(name,grp,payload) VALUES(%sname-%d-%d%s,%d,%s%s%s);\n", q, i, s, q, s % 1000, q, substr(a, 1, 10 + s % 70), q
        }
        print "COMMIT;"
        print "CREATE INDEX t_name ON t(name);"
        print "CREATE INDEX t_grp ON t(grp, name);"
        print "SELECT grp, count(*), max(name) FROM t GROUP BY grp ORDER BY 2 DESC LIMIT 3;"
        print "SELECT count(*) FROM t WHERE name > " q "name-5" q ";"
    }' >"$SQL.tmp" && mv "$SQL.tmp" "$SQL"
fi
CC1=""
if command -v g++ >/dev/null; then
    CC1=$(g++ -print-prog-name=cc1plus 2>/dev/null || true)
    case "$CC1" in /*) ;; *) CC1="" ;; esac
fi
MULTIARCH=$(cc -print-multiarch 2>/dev/null || true)

# Sets CMD (argv) and ENVV (extra environment) for a workload; false if it cannot run here.
workload_cmd() {
    ENVV=()
    case "$1" in
        churn-1t) CMD=("$BIN/churn" 1 "$churn_iters") ;;
        churn-2t) CMD=("$BIN/churn" 2 "$churn_iters") ;;
        churn-8t) CMD=("$BIN/churn" 8 "$churn_iters") ;;
        python-dict)
            [ -n "$PY" ] || return 1
            ENVV=(PYTHONHASHSEED=0 PYTHONDONTWRITEBYTECODE=1)
            CMD=("$PY" "$SRC/pydict.py" 500000 2) ;;
        sqlite)
            command -v sqlite3 >/dev/null || return 1
            CMD=("$(command -v sqlite3)" -batch -bail :memory: ".read $SQL") ;;
        cxx-compile)
            # the compiler proper, as `g++ -O2 -c` runs it (g++ -### shows the same), so every tool traces
            # the one process that does the work
            [ -n "$CC1" ] || return 1
            CMD=("$CC1" -quiet)
            [ -z "$MULTIARCH" ] || CMD+=(-imultiarch "$MULTIARCH")
            CMD+=(-D_GNU_SOURCE "$SRC/compile_me.cpp" -quiet -O2 -o "$CACHE/tmp/compile_me.s") ;;
        *) return 1 ;;
    esac
}

for w in "${workloads[@]}"; do
    if workload_cmd "$w"; then
        WL_OK[$w]=1
    else
        case "$w" in
            python-dict) skip "$w" "no python3" ;;
            sqlite) skip "$w" "no sqlite3 (apt-get install sqlite3 failed or not allowed)" ;;
            cxx-compile) skip "$w" "no g++/cc1plus" ;;
        esac
    fi
done

# --- tools ---------------------------------------------------------------------------------------------------
# Sets FULL (argv) for tool $1 on the workload in CMD/ENVV, with its output going to folder $2.
tool_cmd() {
    local tool=$1 out=$2
    case "$tool" in
        native) FULL=(env "${ENVV[@]}" "${CMD[@]}") ;;
        shim) FULL=(env "${ENVV[@]}" LD_PRELOAD="$BIN/shim.so" "${CMD[@]}") ;;
        heapledger) FULL=(env "${ENVV[@]}" HEAPLEDGER_OUT="$out/heapledger.%p.json" LD_PRELOAD="$SO" "${CMD[@]}") ;;
        heapledger-sample)
            FULL=(env "${ENVV[@]}" HEAPLEDGER_OUT="$out/heapledger.%p.json" HEAPLEDGER_SAMPLE="$SAMPLE_BYTES"
                LD_PRELOAD="$SO" "${CMD[@]}") ;;
        heaptrack) FULL=(env "${ENVV[@]}" heaptrack -o "$out/heaptrack" "${CMD[@]}") ;;
        valgrind)
            FULL=(env "${ENVV[@]}" valgrind --tool=memcheck --leak-check=full -q --log-file="$out/valgrind.%p.log"
                "${CMD[@]}") ;;
        lsan)
            # exitcode=0: a leak report is output, not a failed run; log_path: the report counts as output
            FULL=(env "${ENVV[@]}" LSAN_OPTIONS="exitcode=0:log_path=$out/lsan" LD_PRELOAD="$LSAN $BIN/lsan_init.so"
                "${CMD[@]}") ;;
    esac
}

probe() { # probe TOOL: run a tiny churn under the tool; true if it exits 0. Output folder: $WORK/probe-TOOL
    local d="$WORK/probe-$1"
    mkdir -p "$d"
    ENVV=()
    CMD=("$BIN/churn" 2 20000)
    tool_cmd "$1" "$d"
    "$MEASURE" "$d.res" 120 "${FULL[@]}" </dev/null >"$d.log" 2>&1
}

for t in "${tools[@]}"; do
    case "$t" in
        native) TOOL_LABEL[$t]="native" ;;
        shim) TOOL_LABEL[$t]="shim (forwarding only)" ;;
        heapledger) TOOL_LABEL[$t]="heapledger" ;;
        heapledger-sample) TOOL_LABEL[$t]="heapledger sample=$SAMPLE_BYTES" ;;
        heaptrack) TOOL_LABEL[$t]="heaptrack $(heaptrack --version 2>/dev/null | awk '{print $NF}' || true)" ;;
        valgrind) TOOL_LABEL[$t]="valgrind memcheck ($vg_runs run$([ "$vg_runs" = 1 ] || echo s))" ;;
        lsan) TOOL_LABEL[$t]="gcc liblsan (preloaded)" ;;
    esac
done

heapledger_built=""
prepare_heapledger() { # prepare_heapledger TOOL: build (once) and check the library
    if [ -n "$heapledger_built" ]; then
        [ "$heapledger_built" = 0 ] && return 0
        skip "$1" "no usable library (see the heapledger line above)"
        return 1
    fi
    heapledger_built=1
    if [ "$build" = 1 ]; then
        if ! command -v cargo >/dev/null; then
            skip "$1" "cargo not found (use --no-build with HEAPLEDGER_SO=path)"
            return 1
        fi
        log "cargo build --release -p heapledger-preload"
        if ! (cd "$ROOT" && cargo build --release -p heapledger-preload) >"$WORK/logs/cargo.log" 2>&1; then
            skip "$1" "cargo build --release -p heapledger-preload failed: $(grep -m1 -E '^error' "$WORK/logs/cargo.log" || tail -n1 "$WORK/logs/cargo.log")"
            return 1
        fi
    fi
    if [ ! -e "$SO" ]; then
        skip "$1" "$SO does not exist$([ "$build" = 1 ] || echo ' (--no-build)')"
        return 1
    fi
    heapledger_built=0
}

for t in "${tools[@]}"; do
    case "$t" in
        native) TOOL_OK[$t]=1; continue ;;
        shim) ;;
        heapledger | heapledger-sample)
            prepare_heapledger "$t" || continue ;;
        heaptrack)
            command -v heaptrack >/dev/null || { skip heaptrack "not installed and apt-get install heaptrack failed or not allowed"; continue; } ;;
        valgrind)
            command -v valgrind >/dev/null || { skip valgrind "not installed and apt-get install valgrind failed or not allowed"; continue; } ;;
        lsan)
            [ -n "$LSAN" ] || { skip lsan "liblsan.so.0 not found and apt-get install liblsan0 failed or not allowed"; continue; }
            build_c "$BIN/lsan_init.so" "$SRC/lsan_init.c" -O2 -shared -fPIC "$LSAN" ;;
    esac
    if probe "$t"; then
        TOOL_OK[$t]=1
        if [ "$t" = heapledger-sample ]; then
            if ! grep -Eqs "\"sample_bytes\"[[:space:]]*:[[:space:]]*$SAMPLE_BYTES" "$WORK/probe-$t"/*; then
                TOOL_LABEL[$t]="heapledger sample=$SAMPLE_BYTES (ignored by this build: full tracing)"
                NOTES+=("note: heapledger-sample: the library wrote no \"sample_bytes\": $SAMPLE_BYTES in its dump; HEAPLEDGER_SAMPLE is not supported yet, so this column measures full tracing")
            fi
        fi
        if [ "$t" = heapledger ] && [ -z "$(ls -A "$WORK/probe-$t" 2>/dev/null)" ]; then
            NOTES+=("note: heapledger: the probe run wrote no file into HEAPLEDGER_OUT's folder")
            log "warning: heapledger wrote no dump in the probe run"
        fi
    else
        reason=$(cat "$WORK/probe-$t.res" 2>/dev/null || echo "?")
        skip "$t" "probe run (churn 2 threads, 20000 iterations) failed: ${reason##* }; $(grep -v '^churn:' "$WORK/probe-$t.log" | tail -n2 | tr '\n' ' ')"
    fi
    # LSan: note how it was loaded
    if [ "$t" = lsan ] && [ -n "${TOOL_OK[lsan]:-}" ]; then
        NOTES+=("note: lsan: $LSAN preloaded together with scripts/bench/lsan_init.c, which calls __lsan_init from a constructor (plain LD_PRELOAD of liblsan crashes sqlite3 with SIGSEGV); LSAN_OPTIONS=exitcode=0, default fast_unwind_on_malloc=1 (frame-pointer stacks)")
    fi
done

active_tools=()
for t in "${tools[@]}"; do [ -n "${TOOL_OK[$t]:-}" ] && active_tools+=("$t"); done
active_wls=()
for w in "${workloads[@]}"; do [ -n "${WL_OK[$w]:-}" ] && active_wls+=("$w"); done

# --- the runs: for each repetition, each workload, every tool in turn (rotated per repetition) ---------------
RES="$WORK/results.tsv"
: >"$RES"
ntools=${#active_tools[@]}
total=0
for ((r = 1; r <= runs; r++)); do
    for w in "${active_wls[@]}"; do
        for t in "${active_tools[@]}"; do
            [ "$t" = valgrind ] && [ "$r" -gt "$vg_runs" ] && continue
            total=$((total + 1))
        done
    done
done
log "$runs run(s) x ${#active_wls[@]} workload(s) x $ntools tool(s)$(in_list valgrind "${active_tools[@]}" && echo " (valgrind: $vg_runs)"): $total runs; churn iterations: $churn_iters"
# one untimed native run per workload first: page cache, .pyc files, CPU frequency
for w in "${active_wls[@]}"; do
    workload_cmd "$w"
    "$MEASURE" "$WORK/res" "$timeout_s" env "${ENVV[@]}" "${CMD[@]}" </dev/null >"$WORK/logs/$w.warmup.log" 2>&1 ||
        log "warm-up run of $w failed: see $WORK/logs/$w.warmup.log"
done
declare -A FAILED=()
n=0
for ((r = 1; r <= runs; r++)); do
    for w in "${active_wls[@]}"; do
        for ((i = 0; i < ntools; i++)); do
            t=${active_tools[$(((i + r - 1) % ntools))]}
            [ "$t" = valgrind ] && [ "$r" -gt "$vg_runs" ] && continue
            n=$((n + 1))
            if [ -n "${FAILED[$w/$t]:-}" ]; then
                log "[$n/$total] $w $t run $r: not repeated (run ${FAILED[$w/$t]} failed)"
                continue
            fi
            out="$WORK/out/$w/$t/$r"
            logf="$WORK/logs/$w.$t.$r.log"
            mkdir -p "$out"
            workload_cmd "$w"
            tool_cmd "$t" "$out"
            rm -f "$WORK/res"
            "$MEASURE" "$WORK/res" "$timeout_s" "${FULL[@]}" </dev/null >"$logf" 2>&1 || true
            [ -s "$WORK/res" ] || echo "0 0 0 measure-error" >"$WORK/res"
            read -r wall rss cpu status <"$WORK/res"
            bytes=$(find "$out" -type f -printf '%s\n' | awk '{s += $1} END {print s + 0}')
            printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$w" "$t" "$r" "$wall" "$rss" "$cpu" "$bytes" "$status" >>"$RES"
            if [ "$status" = exit:0 ]; then
                log "[$n/$total] $w $t run $r: ${wall}s, ${rss} KiB, output $bytes B"
            else
                FAILED[$w/$t]=$r
                log "[$n/$total] $w $t run $r: FAILED ($status) after ${wall}s; last lines of $logf:"
                tail -n 5 "$logf" | sed 's/^/bench:     /' >&2
            fi
            [ "$keep" = 1 ] || rm -rf "$out"
        done
    done
done

# --- report --------------------------------------------------------------------------------------------------
median() { sort -g | awk '{a[NR] = $1} END {if (NR == 0) exit; if (NR % 2) print a[(NR + 1) / 2]; else print (a[NR / 2] + a[NR / 2 + 1]) / 2}'; }
field() { # field WORKLOAD TOOL COLUMN: that column of the successful runs
    awk -F'\t' -v w="$1" -v t="$2" -v c="$3" '$1 == w && $2 == t && $8 == "exit:0" {print $c}' "$RES"
}
count() { awk -F'\t' -v w="$1" -v t="$2" -v ok="$3" '$1 == w && $2 == t && (ok == "" || $8 == "exit:0") {n++} END {print n + 0}' "$RES"; }
human() { awk -v b="$1" 'BEGIN {if (b == "") print "-"; else if (b < 1024) printf "%d B\n", b; else if (b < 1048576) printf "%.0f KiB\n", b / 1024; else printf "%.1f MiB\n", b / 1048576}'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN {if (a == "" || b == "" || b == 0) print "n/a"; else printf "%.2f\n", a / b}'; }
declare -A MED=()
for w in "${active_wls[@]}"; do
    for t in "${active_tools[@]}"; do MED[$w/$t]=$(field "$w" "$t" 4 | median); done
done

report() {
    echo "## heapledger benchmark, $(date -u '+%Y-%m-%d %H:%M UTC')"
    echo
    # shellcheck source=/dev/null
    echo "Machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2 / 1048576}' /proc/meminfo), $(. /etc/os-release 2>/dev/null && echo "$PRETTY_NAME"), kernel $(uname -r);" \
        "load average at the end: $(cut -d' ' -f1-3 /proc/loadavg)."
    if in_list heapledger "${active_tools[@]}" || in_list heapledger-sample "${active_tools[@]}"; then
        local rev dirty=""
        rev=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)
        [ -z "$(git -C "$ROOT" status --porcelain -- src build.rs Cargo.toml 2>/dev/null)" ] || dirty=" + uncommitted changes in src/"
        echo "heapledger: $SO, built from commit $rev$dirty."
    fi
    echo "Runs: $runs per tool and workload$(in_list valgrind "${active_tools[@]}" && echo ", valgrind $vg_runs"), alternating tools within each repetition; medians of successful runs; churn iterations: $churn_iters$([ "$quick" = 1 ] && echo ' (--quick)')."
    echo
    echo "| workload | tool | ok/runs | median s | x native | CPU s | CPU x native | peak RSS KiB | output |"
    echo "|---|---|---|---|---|---|---|---|---|"
    local w t m nat natcpu okn alln cpu rss bytes
    for w in "${active_wls[@]}"; do
        nat=${MED[$w/native]}
        natcpu=$(field "$w" native 6 | median)
        for t in "${active_tools[@]}"; do
            m=${MED[$w/$t]}
            okn=$(count "$w" "$t" ok)
            alln=$(count "$w" "$t" "")
            [ "$alln" -gt 0 ] || continue
            if [ -z "$m" ]; then
                echo "| $w | ${TOOL_LABEL[$t]} | $okn/$alln | FAILED | | | | | $(awk -F'\t' -v w="$w" -v t="$t" '$1 == w && $2 == t {print $8; exit}' "$RES") |"
                continue
            fi
            cpu=$(field "$w" "$t" 6 | median)
            rss=$(field "$w" "$t" 5 | median)
            bytes=$(field "$w" "$t" 7 | median)
            printf '| %s | %s | %s/%s | %.3f | %s | %.2f | %s | %.0f | %s |\n' "$w" "${TOOL_LABEL[$t]}" "$okn" "$alln" "$m" \
                "$(ratio "$m" "$nat")" "$cpu" "$(ratio "$cpu" "$natcpu")" "$rss" "$(human "$bytes")"
        done
    done
    echo
    echo "Ratio to native (median wall time):"
    echo
    local hdr="| workload | native s" sep="|---|---"
    for t in "${active_tools[@]}"; do
        [ "$t" = native ] && continue
        hdr+=" | $t"
        sep+="|---"
    done
    echo "$hdr |"
    echo "$sep|"
    for w in "${active_wls[@]}"; do
        local line
        line="| $w | $(awk -v m="${MED[$w/native]}" 'BEGIN {if (m == "") print "n/a"; else printf "%.3f", m}')"
        for t in "${active_tools[@]}"; do
            [ "$t" = native ] && continue
            if [ "$(count "$w" "$t" "")" = 0 ]; then
                line+=" | -"
            elif [ -z "${MED[$w/$t]}" ]; then
                line+=" | failed"
            else
                line+=" | $(ratio "${MED[$w/$t]}" "${MED[$w/native]}")"
            fi
        done
        echo "$line |"
    done
    local fails
    fails=$(awk -F'\t' '$8 != "exit:0" {printf "- fail: %s on %s, run %s: %s after %.1f s\n", $2, $1, $3, $8, $4}' "$RES")
    if [ -n "$fails" ] || [ ${#NOTES[@]} -gt 0 ]; then
        echo
        [ -z "$fails" ] || echo "$fails"
        local note
        for note in "${NOTES[@]}"; do echo "- $note"; done
    fi
}

report_text=$(report)
echo
echo "$report_text"
if [ -n "$md" ]; then
    mkdir -p "$(dirname "$md")"
    printf '%s\n' "$report_text" >"$md"
    log "report written to $md"
fi

if [ "$quick" = 1 ]; then
    q() { # q WORKLOAD TOOL: ratio or n/a
        if in_list "$2" "${active_tools[@]}" && in_list "$1" "${active_wls[@]}"; then ratio "${MED[$1/$2]}" "${MED[$1/native]}"; else echo n/a; fi
    }
    line="ratios: churn-1t=$(q churn-1t heapledger) churn-8t=$(q churn-8t heapledger)"
    if in_list heaptrack "${active_tools[@]}"; then
        line+=" heaptrack-1t=$(q churn-1t heaptrack) heaptrack-8t=$(q churn-8t heaptrack)"
    fi
    echo
    echo "$line"
fi
