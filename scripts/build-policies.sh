#!/usr/bin/env bash
# Rebuilds the chord policy components byte for byte: policies/dist/*.wasm + policies/dist/policies.lock
# (embedded in kubectl-modekeeper) and the hostile test components in tests/data/policies/.
#   scripts/build-policies.sh          rebuild and overwrite
#   scripts/build-policies.sh --check  rebuild into policies/target/ and fail if a committed byte differs
#   scripts/build-policies.sh component DIR [--out FILE]
#                                      build one policy crate (yours, anywhere) into a component
# Needs rustc 1.95.0 with the wasm32-unknown-unknown target (rustup target add wasm32-unknown-unknown).
set -euo pipefail
here="$(pwd)"
cd "$(dirname "$0")/../policies"
if command -v rustup >/dev/null && ! grep -qx wasm32-unknown-unknown <<<"$(rustup target list --installed)"; then
    rustup target add wasm32-unknown-unknown
fi
if [ "${1:-}" = component ]; then
    shift
    dir="${1:?usage: build-policies.sh component DIR [--out FILE]}"
    shift
    case "$dir" in /*) ;; *) dir="$here/$dir" ;; esac
    args=()
    while [ $# -gt 0 ]; do
        if [ "$1" = --out ] && [ $# -gt 1 ]; then
            case "$2" in /*) out="$2" ;; *) out="$here/$2" ;; esac
            args+=(--out "$out")
            shift 2
        else
            args+=("$1")
            shift
        fi
    done
    exec cargo run --quiet --release --locked -p xtask -- component "$dir" "${args[@]}"
fi
exec cargo run --quiet --release --locked -p xtask -- build "$@"
