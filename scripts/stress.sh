#!/usr/bin/env bash
# heapledger reliability stress, long form (issue #9; docs/reliability.md describes every case).
#
# Runs the stress test binary (tests/stress.rs) many times with long-form sizes (HEAPLEDGER_STRESS_LONG=1:
# 100k thread lifetimes, a 500-child fork storm, 5000 SIGUSR2 snapshot requests, ...) and the cases CI skips
# because their toolchains are large installs (a Go binary with cgo, the JVM), then prints a summary table: per
# case the runs, the failures and the traced/native wall-time ratio. Exits non-zero on any failure.
#
# Usage: scripts/stress.sh [options]
#
#   --iterations N   runs of the whole suite (default 20)
#   --short          CI sizes instead of long-form sizes (still runs Go and the JVM when installed)
#   --only PATTERN   only tests whose name contains PATTERN (cargo test filter; repeatable)
#   --threads N      test threads (default 1: ratios are measured without the suite competing with itself)
#   --no-build       do not run cargo build (use the current target/release)
#   --no-install     do not apt-get install golang-go / default-jre-headless when missing (their cases are
#                    then reported as skipped)
#   --stop-early     stop after the first iteration with a failure (default: run every iteration)
#   -h, --help
#
# Output: the summary table on stdout; every run's full log in target/stress/<timestamp>/run-<i>.log (kept), the
# raw timings in target/stress/<timestamp>/results.tsv. The fuzzing of the dump reader (10M inputs) is not here:
# see scripts/fuzz.sh.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
iterations=20
long=1
threads=1
build=1
install=1
stop_early=0
only=()

usage() { sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'; }

while [ $# -gt 0 ]; do
    case "$1" in
        --iterations) iterations=${2:?--iterations needs a number}; shift ;;
        --short) long=0 ;;
        --only) only+=("${2:?--only needs a pattern}"); shift ;;
        --threads) threads=${2:?--threads needs a number}; shift ;;
        --no-build) build=0 ;;
        --no-install) install=0 ;;
        --stop-early) stop_early=1 ;;
        -h|--help) usage; exit 0 ;;
        *) echo "stress.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
    esac
    shift
done
case "$iterations" in ''|*[!0-9]*|0) echo "stress.sh: --iterations must be a positive number" >&2; exit 2 ;; esac

cd "$ROOT"
stamp=$(date +%Y%m%d-%H%M%S)
out="$ROOT/target/stress/$stamp"
mkdir -p "$out"
results="$out/results.tsv"
: > "$results"

# Tests that check a documented known limit (docs/design.md, "Known limits"; #[ignore]d in CI): run here, their
# results listed apart and not counted as failures. Remove a name once the limit is lifted (and its #[ignore]).
known_limits=()
is_known_limit() { local k; for k in "${known_limits[@]}"; do [ "$k" = "$1" ] && return 0; done; return 1; }

# ---- toolchains for the long-form-only cases --------------------------------------------------------------------
skip=()
have_go() { command -v go >/dev/null 2>&1 || [ -x /usr/lib/go/bin/go ] || [ -x /usr/local/go/bin/go ]; }
have_java() { [ -x /usr/bin/java ]; }
apt_install() {
    [ "$install" = 1 ] || return 1
    command -v apt-get >/dev/null 2>&1 || return 1
    echo "stress.sh: installing $* (apt-get)..." >&2
    local sudo=""
    [ "$(id -u)" = 0 ] || sudo="sudo -n"
    $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "$@" >"$out/apt-$1.log" 2>&1 \
        || { $sudo apt-get update >>"$out/apt-$1.log" 2>&1 \
             && $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "$@" >>"$out/apt-$1.log" 2>&1; }
}
if ! have_go; then apt_install golang-go || true; fi
if ! have_java; then apt_install default-jre-headless || true; fi
if ! have_go; then
    echo "SKIP lang_go_with_cgo: the Go toolchain is not installed (apt-get install golang-go; log in $out)"
    skip+=(--skip lang_go_with_cgo)
fi
if ! have_java; then
    echo "SKIP lang_jvm_version: no JRE (apt-get install default-jre-headless; log in $out)"
    skip+=(--skip lang_jvm_version)
fi

# ---- build once -------------------------------------------------------------------------------------------------
if [ "$build" = 1 ]; then
    cargo build --release >"$out/build.log" 2>&1 || { cat "$out/build.log"; echo "stress.sh: build failed" >&2; exit 2; }
    cargo test --release --test stress --no-run >>"$out/build.log" 2>&1 \
        || { cat "$out/build.log"; echo "stress.sh: building the stress tests failed" >&2; exit 2; }
fi

filters=()
if [ ${#only[@]} -gt 0 ]; then filters=("${only[@]}"); fi

# ---- iterations -------------------------------------------------------------------------------------------------
declare -A runs=() fails=() klruns=() klfails=()
failed_runs=0
start_all=$(date +%s)
for i in $(seq 1 "$iterations"); do
    log="$out/run-$i.log"
    t0=$(date +%s)
    set +e
    HEAPLEDGER_STRESS_LONG=$long HEAPLEDGER_STRESS_RESULTS="$results" \
        cargo test --release --test stress -- --include-ignored --test-threads="$threads" \
        ${skip[@]+"${skip[@]}"} ${filters[@]+"${filters[@]}"} >"$log" 2>&1
    rc=$?
    set -e
    n_ok=0 n_fail=0 n_kl=0
    while read -r name verdict; do
        if is_known_limit "$name"; then
            klruns[$name]=$(( ${klruns[$name]:-0} + 1 ))
            if [ "$verdict" = FAILED ]; then
                klfails[$name]=$(( ${klfails[$name]:-0} + 1 ))
                n_kl=$((n_kl + 1))
            fi
            klfails[$name]=${klfails[$name]:-0}
            continue
        fi
        runs[$name]=$(( ${runs[$name]:-0} + 1 ))
        if [ "$verdict" = FAILED ]; then
            fails[$name]=$(( ${fails[$name]:-0} + 1 ))
            n_fail=$((n_fail + 1))
        else
            fails[$name]=${fails[$name]:-0}
            n_ok=$((n_ok + 1))
        fi
    done < <(sed -n 's/^test \([a-z0-9_]*\) \.\.\. \(ok\|FAILED\)$/\1 \2/p' "$log")
    if [ "$rc" != 0 ] && [ "$n_fail" = 0 ] && [ "$n_kl" = 0 ]; then
        # The binary itself failed (build error, crash of the harness): count it against the whole run.
        runs[__harness__]=$(( ${runs[__harness__]:-0} + 1 ))
        fails[__harness__]=$(( ${fails[__harness__]:-0} + 1 ))
        n_fail=1
    fi
    [ "$n_fail" = 0 ] || failed_runs=$((failed_runs + 1))
    printf 'iteration %d/%d: %d passed, %d failed, %d known-limit failures (%ds) %s\n' "$i" "$iterations" \
        "$n_ok" "$n_fail" "$n_kl" "$(( $(date +%s) - t0 ))" "$([ "$n_fail" = 0 ] || echo "log: $log")"
    if [ "$n_fail" != 0 ] && [ "$stop_early" = 1 ]; then break; fi
done
elapsed=$(( $(date +%s) - start_all ))

# ---- summary ----------------------------------------------------------------------------------------------------
echo
echo "== tests ($([ "$long" = 1 ] && echo long || echo short) form, $iterations iterations, ${elapsed}s) =="
printf '%-56s %6s %8s\n' test runs failures
total_runs=0 total_fails=0
for name in $(printf '%s\n' "${!runs[@]}" | sort); do
    printf '%-56s %6d %8d\n' "$name" "${runs[$name]}" "${fails[$name]}"
    total_runs=$((total_runs + runs[$name]))
    total_fails=$((total_fails + fails[$name]))
done
printf '%-56s %6d %8d\n' TOTAL "$total_runs" "$total_fails"
if [ ${#klruns[@]} -gt 0 ]; then
    echo
    echo "== known limits (docs/design.md; not counted above) =="
    for name in $(printf '%s\n' "${!klruns[@]}" | sort); do
        printf '%-56s %6d %8d %s\n' "$name" "${klruns[$name]}" "${klfails[$name]}" \
            "$([ "${klfails[$name]}" = 0 ] && echo "(passes now: lift the limit)" || echo "(still limited)")"
    done
fi

echo
echo "== cases: traced / native wall time (cases under 50 ms natively are start-up dominated: marked ~) =="
# results.tsv: case \t native_ms \t traced_ms \t ratio ; the "#<iteration>" suffix of a case name is dropped.
summarise() {
    awk -F'\t' '
        { c = $1; sub(/ #[0-9]+$/, "", c); n[c]++; nat[c] += $2; tr[c] += $3;
          if (!(c in worst) || $4 > worst[c]) worst[c] = $4 }
        END {
            for (c in n) {
                r = tr[c] / (nat[c] > 0 ? nat[c] : 1e-6)
                small = (nat[c] / n[c] < 50) ? "~" : " "
                printf "%-46s %5d %11.1f %11.1f %6.2f%s %7.2f\n", c, n[c], nat[c] / n[c], tr[c] / n[c], r, small, worst[c]
            }
        }' "$results" | sort
}
printf '%-46s %5s %11s %11s %7s %7s\n' case runs "native ms" "traced ms" ratio worst
summarise
summarise | awk '$(NF-1) !~ /~$/ && $(NF-1) + 0 > best { best = $(NF-1) + 0; name = $1 }
    END { if (name != "") printf "\nslowest case (native >= 50 ms): %s at %.2fx native (mean of its runs)\n", name, best }'

echo
echo "runs with a failure: $failed_runs of $iterations; failed test runs: $total_fails of $total_runs"
echo "logs: $out"
[ "$total_fails" = 0 ]
