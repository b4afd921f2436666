#!/usr/bin/env bash
# Wall time of `closed-loop run` on a 1,000-line trace (steps 701-1,700 of the real straggler trace:
# steady windows, then the straggler incident) with a warm compile cache. Target: under 50 ms.
# Uses hyperfine when installed (apt-get install hyperfine), else a timed loop. Not run in CI.
#   scripts/bench-closed-loop.sh [WORKDIR]      (NO_BUILD=1 to skip the release build)
# BENCH_OUT=DIR puts --out elsewhere, e.g. on tmpfs (/dev/shm/...) to leave the disk's fsync and
# rename latency out of the measurement; by default it is WORKDIR/out.
set -euo pipefail
cd "$(dirname "$0")/.."
work=${1:-$(mktemp -d /tmp/modekeeper-bench-cl.XXXXXX)}
mkdir -p "$work"
echo "work dir: $work" >&2

[ -n "${NO_BUILD:-}" ] || cargo build --release --quiet --bin kubectl-modekeeper
bin=${CARGO_TARGET_DIR:-$PWD/target}/release/kubectl-modekeeper

trace=$work/trace_1000.jsonl
gzip -dc tests/data/traces/straggler.jsonl.gz | sed -n '701,1700p' >"$trace"
lines=$(wc -l <"$trace")
[ "$lines" -eq 1000 ] || { echo "expected 1000 lines, got $lines" >&2; exit 1; }

export MODEKEEPER_CACHE_DIR=$work/cache MODEKEEPER_POLICY_DIR=$work/no-policies
out=${BENCH_OUT:-$work/out}
cmd=("$bin" closed-loop run --source file --path "$trace" --out "$out" -o json)
# Warm the compile cache (the first run compiles the embedded components).
"${cmd[@]}" >/dev/null
grep -q '"schema_version": "closed_loop.v1"' "$out/closed_loop_latest.json"

if command -v hyperfine >/dev/null; then
  hyperfine --warmup 5 --runs 50 --export-markdown "$work/bench.md" --output=null "${cmd[*]}" >&2
  cat "$work/bench.md"
else
  runs=50
  start=$(date +%s%N)
  for _ in $(seq "$runs"); do "${cmd[@]}" >/dev/null; done
  end=$(date +%s%N)
  awk -v ns=$((end - start)) -v n="$runs" 'BEGIN { printf "closed-loop run, 1,000 lines, warm cache: %.1f ms mean over %d runs\n", ns / n / 1e6, n }'
fi
