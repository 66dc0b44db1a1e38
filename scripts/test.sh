#!/usr/bin/env bash
# The whole test suite, on a fresh machine with nothing installed by hand: the README's test
# command, and what .ci/run runs. Needs only the Rust toolchain (and, for the external-verifier
# tests, the system openssl, which they skip with a message when absent).
set -euo pipefail
cd "$(dirname "$0")/.."

cargo test --workspace --locked
