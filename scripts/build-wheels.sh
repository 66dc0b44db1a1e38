#!/usr/bin/env bash
# Builds the Python package into dist/: an abi3 wheel for manylinux2014 x86_64 (any CPython >= 3.9,
# glibc >= 2.17; cross-linked with zig, so no container is needed) and an sdist. Needs the Rust
# toolchain and python3; maturin, ziglang and auditwheel are installed into .cache/wheel-venv.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)
export PIP_CACHE_DIR="$repo/.cache/pip" PIP_DISABLE_PIP_VERSION_CHECK=1
venv="$repo/.cache/wheel-venv"
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
"$venv/bin/pip" install --quiet "maturin>=1.7,<2" "ziglang" "auditwheel>=6"
# maturin finds zig as `python3 -m ziglang`: the venv first on PATH.
export PATH="$venv/bin:$PATH"
rm -rf dist && mkdir -p dist
"$venv/bin/maturin" build --release --zig --compatibility manylinux2014 --manifest-path bindings/python/Cargo.toml \
  --out dist --quiet
"$venv/bin/maturin" sdist --manifest-path bindings/python/Cargo.toml --out dist
wheel=$(ls dist/*.whl)
case "$wheel" in
  *-cp39-abi3-manylinux_2_17_x86_64*|*-cp39-abi3-manylinux2014_x86_64*) ;;
  *) echo "unexpected wheel tag: $wheel" >&2; exit 1 ;;
esac
# auditwheel confirms the tag from what the shared object actually links against.
"$venv/bin/auditwheel" show "$wheel" | tee dist/auditwheel.txt
grep -q 'manylinux_2_17_x86_64' dist/auditwheel.txt
ls -l dist
