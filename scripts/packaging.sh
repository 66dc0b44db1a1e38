#!/usr/bin/env bash
# The ways users get meshca, each exercised from this checkout (called by .ci/run): the API docs
# build without a warning, the four crates package as crates.io would take them (resolved
# against each other, --locked),
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
# Each crate is packaged as crates.io would take it and resolved against the ones packaged before
# it (an overlay registry, target/package/tmp-registry), with --locked. Not compiled again from
# the tarballs (--no-verify): each verifying build compiled its crate's whole graph once more
# with a single package's features, AWS-LC's C sources included (six minutes of the 35-minute
# budget on 2 cores), and nothing in the packages reaches outside its crate's directory when
# built (the README doctest include is cfg(doctest) only); the test step builds the same sources.
rm -rf target/package "${CARGO_HOME:-$HOME/.cargo}"/registry/src/-*/meshca-*
t cargo publish --dry-run --no-verify --locked -p meshca -p meshca-ops -p meshca-kube -p meshca-cli
# What each package holds: every file its build reads is in it.
for p in meshca meshca-ops meshca-kube meshca-cli; do
  list=$(cargo package --list --locked --allow-dirty -p "$p")
  grep -qx 'src/lib.rs\|src/main.rs' <<<"$list" || { echo "$p: the package has no src/lib.rs or src/main.rs" >&2; exit 1; }
  grep -qx 'README.md' <<<"$list" || { echo "$p: the package has no README.md" >&2; exit 1; }
done

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
# On CI (CI set) the wheel is built at opt-level 1: what is checked is how it is packaged and
# installed (the abi3 tag, manylinux2014 by auditwheel, a venv without Rust, the pytest suite),
# not the optimiser, and the release profile's opt-level 3 compiles every dependency (AWS-LC's C
# with it) in about half again the time. A release build runs the script without it.
if [ -n "${CI:-}" ]; then
  CARGO_PROFILE_RELEASE_OPT_LEVEL=1 t ./scripts/build-wheels.sh
else
  t ./scripts/build-wheels.sh
fi
t ./scripts/test-wheels.sh
