#!/usr/bin/env bash
# The ways users get meshca, each exercised from this checkout (called by .ci/run): the API docs
# build without a warning, the four crates package and build as crates.io would take them,
# `cargo install` gives a working `meshca`, and the Python wheel and sdist install into fresh
# venvs and pass the pytest suite (scripts/build-wheels.sh, scripts/test-wheels.sh). The
# kustomize rendering of deploy/ is a test of the suite (crates/meshca-kube/tests/kube.rs).
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)
t() { local start=$SECONDS; "$@"; echo "   ($(( SECONDS - start )) s)"; }

echo "== cargo doc --no-deps, warnings denied"
RUSTDOCFLAGS="-D warnings" t cargo doc --no-deps --workspace --locked --quiet

echo "== cargo check -p meshca --no-default-features: the core without AWS-LC (ring and RustCrypto only)"
t cargo check --locked --quiet -p meshca --no-default-features --all-targets

echo "== cargo publish --dry-run: meshca, meshca-ops, meshca-kube, meshca-cli (dependency order)"
# Cargo verifies each crate against the ones packaged before it through an overlay registry
# (target/package/tmp-registry), and extracts their sources once, to
# $CARGO_HOME/registry/src/-<hash of that path>/, never refreshing them: a machine that ran this
# before in the same directory would verify meshca-ops against the older meshca it extracted
# then. Start with neither.
rm -rf target/package "${CARGO_HOME:-$HOME/.cargo}"/registry/src/-*/meshca-*
# The verifying builds share target/ with the test build: only the crates whose features differ
# in a single package's graph, and the packaged crates themselves, are compiled again. (Giving the
# workspace's dependency profile with --config makes it worse: every dependency is rebuilt.)
t cargo publish --dry-run --locked -p meshca -p meshca-ops -p meshca-kube -p meshca-cli

echo "== cargo install --path crates/meshca-cli"
root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT
# --debug: what is checked here is the install path (the package, --locked, the binary and its
# completions, man page and version) and not the optimiser; the debug build reuses what the test
# step compiled, where a release build costs a full compile of every dependency (the 35-minute
# budget of .ci/run). The release profile is built by the wheel below and by the README's
# `cargo run --release -p meshca-cli -- quickstart`.
CARGO_TARGET_DIR="$repo/target" t cargo install --debug --locked --quiet --path crates/meshca-cli --root "$root"
# Each output is captured whole before it is matched: `cmd | grep -q` would close the pipe early.
expect() { # NEEDLE CMD...: CMD succeeds and its output holds NEEDLE (a grep -E pattern)
  local needle=$1 out; shift
  out=$("$@")
  grep -qE -- "$needle" <<<"$out" || { echo "'$*' printed no line matching $needle" >&2; exit 1; }
}
"$root/bin/meshca" --version
expect '^meshca [0-9.]+ \(commit [0-9a-f]{12}\)$' "$root/bin/meshca" --version
expect '_meshca\(\)' "$root/bin/meshca" completions bash
expect '#compdef meshca' "$root/bin/meshca" completions zsh
expect 'complete -c meshca' "$root/bin/meshca" completions fish
expect '^\.TH meshca 1' "$root/bin/meshca" man

echo "== Python: abi3 wheel and sdist"
t ./scripts/build-wheels.sh
t ./scripts/test-wheels.sh
