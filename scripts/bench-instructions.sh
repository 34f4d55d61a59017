#!/usr/bin/env bash
# heapledger overhead in instructions: the same comparison as scripts/bench.sh, counted by callgrind instead of
# timed. Instruction counts are deterministic (address-space randomisation off, a fixed environment; churn-8t's
# thread interleaving still moves it by ~0.5 %), so a change to the hot path can be judged on this shared, noisy
# 2-core machine, where wall-time ratios move by ±25 % from run to run (docs/benchmarks.md). They are not wall
# time: cache misses, atomics and lock bouncing between cores are not in them (churn-8t's contention is not).
#
# Usage: scripts/bench-instructions.sh [--no-build]
#
# Workloads (smaller than bench.sh's, callgrind runs ~50x slower): churn-1t and churn-8t with 200k pairs, and
# sqlite with 20k INSERTs (the first 20k of bench.sh's generated SQL; skipped until bench.sh has generated it).
# Tools: native, the forwarding-only shim, heapledger (full), heapledger sampling (HEAPLEDGER_SAMPLE=524288).
# Prints a Markdown table: instructions in millions and the ratio to native. Needs valgrind. ~3 minutes.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
SRC="$ROOT/scripts/bench"
CACHE=${BENCH_CACHE:-$ROOT/target/bench}
SO=${HEAPLEDGER_SO:-$ROOT/target/release/libheapledger.so}
BIN="$CACHE/bin"

build=1
case "${1:-}" in
    --no-build) build=0 ;;
    "") ;;
    -h | --help) sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "bench-instructions.sh: unknown option: $1 (see --help)" >&2; exit 2 ;;
esac
command -v valgrind >/dev/null || { echo "bench-instructions.sh: valgrind is not installed (apt-get install valgrind)" >&2; exit 2; }
if [ "$build" = 1 ]; then
    (cd "$ROOT" && cargo build --release -q -p heapledger-preload) || { echo "bench-instructions.sh: cargo build failed" >&2; exit 1; }
fi
[ -f "$SO" ] || { echo "bench-instructions.sh: no library at $SO" >&2; exit 2; }

mkdir -p "$BIN"
WORK=$(mktemp -d "${TMPDIR:-/tmp}/heapledger-instr.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
# The same builds as bench.sh (no frame pointers in churn: the unwinder has DWARF work to do).
cc -O2 -fomit-frame-pointer -fno-ipa-icf -pthread -o "$WORK/churn" "$SRC/churn.c"
cc -O2 -shared -fPIC -o "$WORK/shim.so" "$SRC/shim.c" -ldl

workloads=(churn-1t churn-8t)
SQL="$CACHE/sqlite-200k.sql"
if command -v sqlite3 >/dev/null && [ -f "$SQL" ]; then
    # 20k INSERTs, then what follows them in the full script (COMMIT, the indexes, the queries).
    { head -n 20003 "$SQL"; awk 'f; /^COMMIT;/ {f = 1; print}' "$SQL"; } >"$WORK/sqlite-20k.sql"
    workloads+=(sqlite)
else
    echo "skip: sqlite: needs sqlite3 and $SQL (run scripts/bench.sh --only sqlite once)" >&2
fi

cmd_of() { # cmd_of WORKLOAD: the program's argv, one per line
    case "$1" in
        churn-1t) printf '%s\n' "$WORK/churn" 1 200000 ;;
        churn-8t) printf '%s\n' "$WORK/churn" 8 200000 ;;
        sqlite) printf '%s\n' "$(command -v sqlite3)" -batch -bail :memory: ".read $WORK/sqlite-20k.sql" ;;
    esac
}

count() { # count WORKLOAD TOOL: instructions of the whole run (every process), in millions
    local -a argv env=()
    mapfile -t argv < <(cmd_of "$1")
    case "$2" in
        native) ;;
        shim) env=(LD_PRELOAD="$WORK/shim.so") ;;
        heapledger) env=(LD_PRELOAD="$SO" HEAPLEDGER_OUT="$WORK/out.%p.json") ;;
        heapledger-sample) env=(LD_PRELOAD="$SO" HEAPLEDGER_OUT="$WORK/out.%p.json" HEAPLEDGER_SAMPLE=524288) ;;
    esac
    local log="$WORK/$1.$2.log"
    # Address-space randomisation off and the same small environment every time: stack and code addresses feed
    # the tracer's cache hashes, and with them the counts moved by ±3 % from run to run (sqlite most).
    "${norand[@]}" env -i PATH=/usr/bin:/bin valgrind --tool=callgrind --callgrind-out-file=/dev/null \
        --trace-children=yes env "${env[@]}" "${argv[@]}" >/dev/null 2>"$log" || { echo "n/a"; return; }
    awk '/Collected :/ {n += $NF} END {if (n) printf "%.1f\n", n / 1e6; else print "n/a"}' "$log"
}
ratio() { awk -v a="$1" -v b="$2" 'BEGIN {if (a == "n/a" || b == "n/a" || b == 0) print "n/a"; else printf "%.2f\n", a / b}'; }

norand=()
if setarch "$(uname -m)" -R true 2>/dev/null; then
    norand=(setarch "$(uname -m)" -R)
else
    echo "bench-instructions.sh: setarch -R unavailable: counts will move with address-space randomisation" >&2
fi

tools=(native shim heapledger heapledger-sample)
echo "## heapledger instruction counts (callgrind), $(date -u '+%Y-%m-%d %H:%M') UTC"
echo
echo "heapledger: $SO, commit $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)."
echo
echo "| workload | native (M) | shim | heapledger | heapledger-sample |"
echo "|---|---|---|---|---|"
for w in "${workloads[@]}"; do
    declare -A m=()
    for t in "${tools[@]}"; do
        echo "bench-instructions: $w under $t" >&2
        m[$t]=$(count "$w" "$t")
    done
    printf '| %s | %s | %sx | %sx (%s M) | %sx (%s M) |\n' "$w" "${m[native]}" \
        "$(ratio "${m[shim]}" "${m[native]}")" \
        "$(ratio "${m[heapledger]}" "${m[native]}")" "${m[heapledger]}" \
        "$(ratio "${m[heapledger-sample]}" "${m[native]}")" "${m[heapledger-sample]}"
    unset m
done
