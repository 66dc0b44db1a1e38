#!/usr/bin/env bash
# Runs every fuzz target for FUZZ_SECONDS (default 20) from the testdata seed corpus. Needs a
# nightly toolchain; installs cargo-fuzz into .cache/ inside the repository if missing.
# For a long local run: FUZZ_SECONDS=600 ./scripts/fuzz-smoke.sh
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)
secs="${FUZZ_SECONDS:-20}"
fuzz_bin="$repo/.cache/cargo-fuzz/bin"
if [ ! -x "$fuzz_bin/cargo-fuzz" ]; then
  echo "== installing cargo-fuzz into .cache/cargo-fuzz"
  cargo install cargo-fuzz --locked --root "$repo/.cache/cargo-fuzz" --quiet
fi
export PATH="$fuzz_bin:$PATH"
./fuzz/seed_corpus.sh
cd fuzz
targets=$(cargo +nightly fuzz list)
cargo +nightly fuzz build --release 2>&1 | tail -2
for t in $targets; do
  echo "== fuzz $t for ${secs}s"
  # -rss_limit_mb bounds memory; a crash, leak or timeout fails the run.
  cargo +nightly fuzz run "$t" "corpus/$t" -- -max_total_time="$secs" -rss_limit_mb=2048 -timeout=10 \
    -print_final_stats=1 2>&1 | grep -E "^(stat::number_of_executed_units|stat::peak_rss_mb)|ERROR|SUMMARY|Done" || true
  if [ -d "artifacts/$t" ] && [ -n "$(ls -A "artifacts/$t" 2>/dev/null)" ]; then
    echo "fuzz target $t found a failure: $(ls "artifacts/$t")"
    exit 1
  fi
done
echo "fuzz smoke: all targets ran ${secs}s without a finding"
