#!/usr/bin/env bash
# Runs every check and test of the project: formatting, clippy, and cargo test.
set -euo pipefail
cd "$(dirname "$0")/.."

cargo fmt --check
cargo clippy --all-targets --locked -- -D warnings
cargo test --locked
