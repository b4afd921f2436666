#!/usr/bin/env bash
# Soak of `closed-loop watch` (docs/watch.md): HOURS (default 24) of telemetry at 10 steps/s streamed
# through a release build, from a file being appended and from kube-sim pod logs, each with a kill -9
# and a restart mid-stream; checks the decisions against `closed-loop run` and prints peak RSS.
# Not part of CI (the test suite runs the same tests with 2 h and 1 h).
set -euo pipefail
cd "$(dirname "$0")/.."
HOURS="${1:-24}"
export MODEKEEPER_SOAK_HOURS="$HOURS" MODEKEEPER_SOAK_HOURS_K8S="$HOURS"
start=$(date +%s)
cargo test --release --locked --test closed_loop_watch --test closed_loop_watch_k8s -- --nocapture \
  following_an_appended_file pod_logs_through 2>&1 | grep -E "soak|^test |test result|panicked|assert"
echo "soak-watch: ${HOURS} h of telemetry, $(( $(date +%s) - start )) s wall (build included)"
