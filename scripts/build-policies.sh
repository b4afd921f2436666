#!/usr/bin/env bash
# Rebuilds the chord policy components byte for byte: policies/dist/*.wasm + policies/dist/policies.lock
# (embedded in kubectl-modekeeper) and the hostile test components in tests/data/policies/.
#   scripts/build-policies.sh          rebuild and overwrite
#   scripts/build-policies.sh --check  rebuild into policies/target/ and fail if a committed byte differs
# Needs rustc 1.95.0 with the wasm32-unknown-unknown target (rustup target add wasm32-unknown-unknown).
set -euo pipefail
cd "$(dirname "$0")/../policies"
if command -v rustup >/dev/null && ! rustup target list --installed | grep -qx wasm32-unknown-unknown; then
    rustup target add wasm32-unknown-unknown
fi
exec cargo run --quiet --release --locked -p xtask -- build "$@"
