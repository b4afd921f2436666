#!/usr/bin/env bash
# CI checks for the policies/ workspace (its own workspace, so the root's fmt/clippy/test skip it):
# formatting, lints (native and wasm32), the policy crates' unit tests, and a byte-for-byte rebuild of
# the committed components (policies/dist/, tests/data/policies/).
set -euo pipefail
cd "$(dirname "$0")/../policies"
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
cargo clippy --workspace --exclude xtask --target wasm32-unknown-unknown --locked -- -D warnings
cargo test --workspace --locked
../scripts/build-policies.sh --check
