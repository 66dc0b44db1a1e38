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
  # A debug build: it is a thin driver of cargo, and compiles in a fraction of the release time.
  cargo install cargo-fuzz --locked --debug --root "$repo/.cache/cargo-fuzz" --quiet
fi
export PATH="$fuzz_bin:$PATH"
./fuzz/seed_corpus.sh
cd fuzz
targets=$(cargo +nightly fuzz list)
# The same options `cargo fuzz run` builds with (optimised, with debug assertions): with
# `--release` the build drops -Cdebug-assertions, and every `run` below compiled it all again.
# A smoke run (a minute or less per target) is built at opt-level 1 in 16 codegen units
# (cargo-fuzz's default is one, each crate's code generated on one core): it compiles in much
# less time, and a crash still names file and line. Longer runs keep the full optimisation. The
# runs below pass the same options, or each would build everything again.
build_opts=()
if [ "$secs" -le 60 ]; then
  export CARGO_PROFILE_RELEASE_OPT_LEVEL=1
  build_opts=(--codegen-units 16)
fi
cargo +nightly fuzz build ${build_opts[@]+"${build_opts[@]}"} 2>&1 | tail -2
# The targets run side by side, one per core: a smoke run of each for the same time, in half the
# wall time on 2 cores. Each target's lines are printed once it is done.
jobs=$(nproc 2>/dev/null || echo 1)
logs=$(mktemp -d)
trap 'rm -rf "$logs"' EXIT
run_target() {
  # -rss_limit_mb bounds memory; a crash, leak or timeout fails the run.
  cargo +nightly fuzz run ${build_opts[@]+"${build_opts[@]}"} "$1" "corpus/$1" -- -max_total_time="$secs" -rss_limit_mb=2048 -timeout=10 \
    -print_final_stats=1 >"$logs/$1" 2>&1 || true
}
running=0
for t in $targets; do
  echo "== fuzz $t for ${secs}s"
  run_target "$t" &
  running=$((running + 1))
  if [ "$running" -ge "$jobs" ]; then wait -n || true; running=$((running - 1)); fi
done
wait
for t in $targets; do
  echo "== fuzz $t:"
  grep -E "^(stat::number_of_executed_units|stat::peak_rss_mb)|ERROR|SUMMARY|Done" "$logs/$t" || true
  if [ -d "artifacts/$t" ] && [ -n "$(ls -A "artifacts/$t" 2>/dev/null)" ]; then
    echo "fuzz target $t found a failure: $(ls "artifacts/$t")"
    exit 1
  fi
done
echo "fuzz smoke: all targets ran ${secs}s without a finding"
