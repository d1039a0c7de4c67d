#!/usr/bin/env bash
# Runs every check and test of the project: formatting, clippy, and cargo test, including the
# end-to-end tests against a real etcd and kube-apiserver that scripts/control-plane.sh provides.
set -euo pipefail
cd "$(dirname "$0")/.."

eval "$(bash scripts/control-plane.sh)"
cargo fmt --check
cargo clippy --all-targets --locked -- -D warnings
cargo test --locked
# The benchmark harness in smoke mode: every request must succeed; no speed is asserted.
python3 scripts/bench.py --smoke
