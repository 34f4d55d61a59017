#!/usr/bin/env bash
# heapledger's memory per live block and exit-dump time: #8's "1M live blocks" targets, measured the same way
# every time (docs/benchmarks.md quotes it).
#
# Usage: scripts/bench-memory.sh [--blocks N] [--runs R] [--no-build]
#
# Runs scripts/bench/hold.c (N live blocks of 16..64 bytes, default 1M, reachable from one array until exit)
# natively and under heapledger with and without the exit-time leak classification (HEAPLEDGER_REACH=0), and
# once more asking for a snapshot of the N blocks by signal before exit; alternating, R times each (default 5);
# prints medians:
#   peak RSS over native, in MB and in bytes per live block (the target is <= 64 plus interned stacks);
#   exit time: from main's return to the end of the process (the exit dump, classification included; < 0.5 s);
#   the dump's size and the tracer's own mapped memory as the dump reports it ("memory_bytes");
#   for the snapshot: the longest pause a program thread could see ("max_pause_ns": one shard's copy; < 50 ms)
#   and the time from the signal to the finished file.
# Environment: HEAPLEDGER_SO (default target/release/libheapledger.so), BENCH_CACHE (default target/bench).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
SRC="$ROOT/scripts/bench"
CACHE=${BENCH_CACHE:-$ROOT/target/bench}
SO=${HEAPLEDGER_SO:-$ROOT/target/release/libheapledger.so}
blocks=1000000
runs=5
build=1
while [ $# -gt 0 ]; do
    case "$1" in
        --blocks) blocks=${2:?--blocks needs N}; shift ;;
        --runs) runs=${2:?--runs needs R}; shift ;;
        --no-build) build=0 ;;
        -h | --help) sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) echo "bench-memory.sh: unknown option: $1 (see --help)" >&2; exit 2 ;;
    esac
    shift
done
for n in "$blocks" "$runs"; do
    case "$n" in '' | *[!0-9]* | 0) echo "bench-memory.sh: not a positive number: $n" >&2; exit 2 ;; esac
done

if [ "$build" = 1 ]; then
    (cd "$ROOT" && cargo build --release -q -p heapledger-preload)
fi
[ -f "$SO" ] || { echo "bench-memory.sh: no library at $SO (build it, or set HEAPLEDGER_SO)" >&2; exit 1; }
mkdir -p "$CACHE/bin"
cc -O2 -o "$CACHE/bin/measure" "$SRC/measure.c"
cc -O2 -o "$CACHE/bin/hold" "$SRC/hold.c"
WORK=$(mktemp -d "${TMPDIR:-/tmp}/heapledger-bench-memory.XXXXXX")
trap 'rm -rf "$WORK"' EXIT

# run MODE: one run; appends "MODE rss_kib exit_ms dump_bytes tracer_bytes" to $WORK/res (and, for the
# snapshot mode, "pause_us snapshot_ms" to $WORK/snap).
run() {
    local mode=$1 pre=() args=("$blocks")
    case "$mode" in
        heapledger) pre=(env LD_PRELOAD="$SO" HEAPLEDGER_OUT="$WORK/dump.%n.json") ;;
        heapledger-noreach) pre=(env LD_PRELOAD="$SO" HEAPLEDGER_OUT="$WORK/dump.%n.json" HEAPLEDGER_REACH=0) ;;
        heapledger-snapshot)
            pre=(env LD_PRELOAD="$SO" HEAPLEDGER_OUT="$WORK/dump.%n.json" HEAPLEDGER_SIGNAL=USR2)
            args+=("$WORK/dump.0.json") ;;
    esac
    rm -f "$WORK"/dump.*.json
    "$CACHE/bin/measure" "$WORK/m" 0 "${pre[@]}" "$CACHE/bin/hold" "${args[@]}" >"$WORK/t0" 2>"$WORK/err" ||
        { echo "bench-memory.sh: $mode run failed: $(cat "$WORK/m") $(cat "$WORK/err")" >&2; exit 1; }
    local t1 rss exit_ms size=0 mem=0 final
    t1=$(date +%s%N)
    rss=$(awk '{print $2}' "$WORK/m")
    exit_ms=$(((t1 - $(cat "$WORK/t0")) / 1000000))
    if [ "$mode" != native ]; then
        final=$WORK/dump.0.json
        [ "$mode" = heapledger-snapshot ] && final=$WORK/dump.1.json
        [ -s "$final" ] || { echo "bench-memory.sh: $mode wrote no final dump" >&2; exit 1; }
        size=$(stat -c %s "$final")
        mem=$(grep -o '"memory_bytes":[0-9]*' "$final" | cut -d: -f2)
    fi
    if [ "$mode" = heapledger-snapshot ]; then
        local pause
        pause=$(grep -o '"max_pause_ns":[0-9]*' "$WORK/dump.0.json" | cut -d: -f2)
        echo "$((pause / 1000)) $(sed -n 's/^snapshot_ms=//p' "$WORK/err")" >>"$WORK/snap"
    fi
    echo "$mode $rss $exit_ms $size $mem" >>"$WORK/res"
}

modes=(native heapledger heapledger-noreach heapledger-snapshot)
for ((r = 1; r <= runs; r++)); do
    for m in "${modes[@]}"; do run "$m"; done
done

median() { sort -n | awk '{v[NR] = $1} END {if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2}'; }
col() { awk -v m="$1" -v c="$2" '$1 == m {print $c}' "$WORK/res" | median; }
native_rss=$(col native 2)
printf '%s live blocks, %s runs each, medians (peak RSS over native: every run, min-max)\n' "$blocks" "$runs"
printf '%-20s %10s %14s %14s %9s %10s %12s\n' mode peak_MB over_native_MB bytes/block exit_ms dump_MB tracer_MB
for m in "${modes[@]}"; do
    rss=$(col "$m" 2)
    over=$(awk -v a="$rss" -v b="$native_rss" 'BEGIN {printf "%.1f", (a - b) * 1024 / 1e6}')
    per=$(awk -v m="$m" -v b="$native_rss" -v n="$blocks" '$1 == m {printf "%.1f\n", ($2 - b) * 1024 / n}' "$WORK/res" |
        sort -n | awk '{v[NR] = $1} END {printf "%s-%s", v[1], v[NR]}')
    [ "$m" = native ] && { over=-; per=-; }
    printf '%-20s %10.1f %14s %14s %9s %10.1f %12.1f\n' "$m" "$(awk -v a="$rss" 'BEGIN {print a * 1024 / 1e6}')" \
        "$over" "$per" "$(col "$m" 3)" "$(awk -v a="$(col "$m" 4)" 'BEGIN {print a / 1e6}')" \
        "$(awk -v a="$(col "$m" 5)" 'BEGIN {print a / 1e6}')"
done
printf 'snapshot of %s blocks by signal: longest pause of a program thread %s ms (target < 50), file finished %s ms after the signal\n' \
    "$blocks" "$(awk '{print $1 / 1000}' "$WORK/snap" | median)" "$(awk '{print $2}' "$WORK/snap" | median)"
