#!/usr/bin/env bash
# Runs every test of the project. This is the README's test command, and
# .ci/run calls it as is.
set -euo pipefail
cd "$(dirname "$0")/.."

echo "==> Rust tests (unit, integration, doc)"
cargo test --locked
