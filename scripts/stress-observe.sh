#!/usr/bin/env bash
# Concurrency stress of the parallel ingest (issue 11): ROUNDS rounds of three `observe` runs at once on
# one large generated trace (more parser threads than a 2-core machine has), each under a timeout; every
# run must finish (exit 0) and write observe_windows.jsonl byte for byte like a lone run. Not run in CI
# (tests/observe_cli.rs runs a few rounds of the same thing with the debug build).
#   scripts/stress-observe.sh [WORKDIR]   (ROUNDS=60 LINES=150000 TIMEOUT=60 MODEKEEPER_BIN=PATH)
set -euo pipefail
cd "$(dirname "$0")/.."
work=${1:-$(mktemp -d /tmp/modekeeper-stress.XXXXXX)}
mkdir -p "$work"
rounds=${ROUNDS:-60} lines=${LINES:-150000} limit=${TIMEOUT:-60}
if [ -n "${MODEKEEPER_BIN:-}" ]; then
  bin=$MODEKEEPER_BIN
else
  cargo build --release --locked --quiet --bin kubectl-modekeeper
  bin=${CARGO_TARGET_DIR:-$PWD/target}/release/kubectl-modekeeper
fi
trace=$work/trace_$lines.jsonl
[ -s "$trace" ] || python3 scripts/gen-trace.py "$lines" "$trace"
timeout "$limit" "$bin" observe --path "$trace" --out "$work/lone" >/dev/null
want=$(sha256sum <"$work/lone/observe_windows.jsonl")
hangs=0 differ=0 failed=0
for r in $(seq "$rounds"); do
  pids=()
  for i in 1 2 3; do
    rm -rf "$work/r$i"
    timeout "$limit" "$bin" observe --path "$trace" --out "$work/r$i" >/dev/null 2>"$work/r$i.err" &
    pids+=($!)
  done
  for i in 1 2 3; do
    rc=0; wait "${pids[$((i - 1))]}" || rc=$?
    if [ "$rc" = 124 ]; then hangs=$((hangs + 1)); echo "round $r run $i: timed out (hang)" >&2
    elif [ "$rc" != 0 ]; then failed=$((failed + 1)); echo "round $r run $i: exit $rc" >&2
    elif [ "$(sha256sum <"$work/r$i/observe_windows.jsonl")" != "$want" ]; then
      differ=$((differ + 1)); echo "round $r run $i: windows differ" >&2
    fi
  done
done
echo "rounds=$rounds runs=$((3 * rounds)) input=$(stat -c %s "$trace") bytes hangs=$hangs failed=$failed differ=$differ"
[ "$hangs$failed$differ" = 000 ]
