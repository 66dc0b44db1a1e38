#!/usr/bin/env bash
# The whole test suite, on a fresh machine with nothing installed by hand: the README's test
# command, and what .ci/run runs. Needs the Rust toolchain and python3 (>= 3.9) with venv; the
# Python side builds the bindings from source into .venv/ inside the repository. Tests that use
# the system openssl skip with a message when it is absent.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)

echo "== Rust: cargo test --workspace"
cargo test --workspace --locked

echo "== Python: build bindings/python into .venv and run pytest (incl. mypy stubtest)"
export PIP_CACHE_DIR="$repo/.cache/pip" PIP_DISABLE_PIP_VERSION_CHECK=1
[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/pip install --quiet --force-reinstall --no-deps ./bindings/python
.venv/bin/pip install --quiet "pytest>=7" "cryptography>=43" "mypy>=1.10"
(cd bindings/python && "$repo/.venv/bin/python" -m pytest -q)
