#!/usr/bin/env bash
# The project's test command (README, CI): sets the machine up, then runs every test in the workspace.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
cargo test --workspace --locked "$@"
# The trainer-side Python helpers (integrations/python) against the real transformers and lightning.
scripts/test-python.sh
