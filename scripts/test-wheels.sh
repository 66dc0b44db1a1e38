#!/usr/bin/env bash
# Installs what scripts/build-wheels.sh made, as users install it, and runs the pytest suite
# against each: the wheel into a fresh venv with no Rust toolchain reachable (PATH holds only
# the system directories), the sdist into another fresh venv (built from source by pip, which
# needs the Rust toolchain, as any sdist of a compiled package does).
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)
export PIP_CACHE_DIR="$repo/.cache/pip" PIP_DISABLE_PIP_VERSION_CHECK=1
py=$(command -v python3)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
deps=("pytest>=7" "cryptography>=43" "mypy>=1.10" "jwcrypto>=1.5")
# The PKI-signer test runs against the OpenBao that scripts/test.sh installed (or
# $MESHCA_TEST_BAO); without one it skips, or fails where MESHCA_REQUIRE_BAO is set (.ci/run).
bao=${MESHCA_TEST_BAO:-$repo/.venv/bin/bao}
[ -x "$bao" ] || bao=""

run_suite() { # VENV: the installed package (not the source tree) under the repository's tests
  (cd "$work" && "$1/bin/python" -c 'import meshca, sys; assert "site-packages" in meshca.__file__, meshca.__file__' &&
     "$1/bin/python" -m pytest -q -p no:cacheprovider "$repo/bindings/python/tests")
}

echo "== wheel: $(ls dist/*.whl) into a venv without Rust"
"$py" -m venv "$work/wheel"
env -i HOME="$HOME" PATH=/usr/bin:/bin PIP_CACHE_DIR="$PIP_CACHE_DIR" PIP_DISABLE_PIP_VERSION_CHECK=1 \
  "$work/wheel/bin/pip" install --quiet --only-binary=:all: dist/*.whl "${deps[@]}"
env -i HOME="$HOME" PATH=/usr/bin:/bin sh -c '! command -v cargo && ! command -v rustc' >/dev/null
env -i HOME="$HOME" PATH=/usr/bin:/bin work="$work" repo="$repo" MESHCA_TEST_BAO="$bao" \
  MESHCA_REQUIRE_BAO="${MESHCA_REQUIRE_BAO:-}" bash -c "$(declare -f run_suite); run_suite '$work/wheel'"

echo "== sdist: $(ls dist/*.tar.gz) built from source into another venv"
"$py" -m venv "$work/sdist"
# The sdist's own sources are compiled, in the dev profile (what is checked is that the sdist
# holds everything a build needs; the release wheel above is the optimised artifact); the
# crates.io dependencies are taken from the repository's target directory, where the test step
# compiled them, instead of being compiled again in pip's temporary build directory.
CARGO_TARGET_DIR="$repo/target" MATURIN_PEP517_ARGS="--profile dev" \
  "$work/sdist/bin/pip" install --quiet dist/*.tar.gz "${deps[@]}"
MESHCA_TEST_BAO="$bao" run_suite "$work/sdist"
