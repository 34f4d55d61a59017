#!/usr/bin/env bash
# Fuzzes the dump reader (fuzz/fuzz_targets/dump_reader.rs) for a bounded time.
#
#   scripts/fuzz.sh [SECONDS]      default 60; FUZZ_JOBS=N runs N workers (default 1); FUZZ_RUNS=N stops after
#                                  N inputs if that comes first (issue #9's long run: FUZZ_RUNS=10000000)
#
# Needs a nightly toolchain (rustup toolchain install nightly) and cargo-fuzz, which this script installs with
# `cargo install cargo-fuzz --locked` when it is missing. The corpus is seeded with the CLI's test dump and, if
# the release build exists, with a real dump of /bin/ls; it is kept in fuzz/corpus/ between runs. A crash
# leaves its input in fuzz/artifacts/dump_reader/ and makes this script exit non-zero.
set -euo pipefail
cd "$(dirname "$0")/.."

seconds="${1:-60}"
case "$seconds" in
  ''|*[!0-9]*) echo "usage: $0 [SECONDS]" >&2; exit 2 ;;
esac

if ! rustup toolchain list 2>/dev/null | grep -q '^nightly'; then
  echo "fuzz.sh: needs a nightly toolchain: rustup toolchain install nightly" >&2
  exit 2
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "fuzz.sh: installing cargo-fuzz" >&2
  cargo install cargo-fuzz --locked
fi

corpus=fuzz/corpus/dump_reader
mkdir -p "$corpus"
cp tracer-cli/tests/data/small.json "$corpus/seed-small.json"
if [ -x target/release/heapledger ] && [ -f target/release/libheapledger.so ]; then
  seed_dir="$(mktemp -d)"
  if target/release/heapledger run --out "$seed_dir/ls.%p.json" -- ls / >/dev/null 2>&1; then
    for f in "$seed_dir"/ls.*.json; do
      [ -f "$f" ] && cp "$f" "$corpus/seed-ls.json"
    done
  fi
  rm -rf "$seed_dir"
fi

# -max_len: real dumps are far bigger, but the reader's logic is exercised by small ones; the seeds are cut.
# -rss_limit_mb: a parse must not need gigabytes for a few kilobytes of input.
root="$(pwd)"
parallel=()
if [ -n "${FUZZ_RUNS:-}" ]; then
  parallel+=(-runs="$FUZZ_RUNS")
fi
if [ "${FUZZ_JOBS:-1}" -gt 1 ]; then
  parallel+=(-jobs="$FUZZ_JOBS" -workers="$FUZZ_JOBS")
fi
exec cargo +nightly fuzz run dump_reader "$root/$corpus" -- \
  -dict="$root/fuzz/dict/dump.dict" \
  -max_total_time="$seconds" \
  -max_len=65536 \
  -rss_limit_mb=2048 \
  -print_final_stats=1 \
  "${parallel[@]}"
