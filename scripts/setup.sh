#!/usr/bin/env bash
# Installs what the project needs on a fresh machine with rustup: the components CI checks with, and the
# wasm target used to rebuild the chord policy components. Idempotent.
set -euo pipefail
rustup component add rustfmt clippy >/dev/null 2>&1 || rustup component add rustfmt clippy
rustup target add wasm32-unknown-unknown >/dev/null 2>&1 || rustup target add wasm32-unknown-unknown
command -v kubectl >/dev/null 2>&1 || echo "note: kubectl not found; the kubectl cross-check tests will be skipped" >&2
