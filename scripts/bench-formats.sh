#!/usr/bin/env bash
# Ingest speed of `observe` per input format (issue 12): our JSONL fast path against the trainer text
# readers, each on a generated file of 1,000,000 lines. Prints MB/s per reader and its ratio to JSONL
# (the text readers must stay within 2x). Needs python3 and /usr/bin/time. Not run in CI.
#   scripts/bench-formats.sh [WORKDIR]     (LINES=1000000 RUNS=3: median wall of RUNS runs)
set -euo pipefail
cd "$(dirname "$0")/.."
work=${1:-$(mktemp -d /tmp/modekeeper-bench-formats.XXXXXX)}
lines=${LINES:-1000000}
mkdir -p "$work"
echo "work dir: $work" >&2

# The release build; MODEKEEPER_BIN=PATH measures another binary (and skips the build).
if [ -n "${MODEKEEPER_BIN:-}" ]; then
  ours=$MODEKEEPER_BIN
else
  [ -n "${NO_BUILD:-}" ] || cargo build --release --locked --quiet --bin kubectl-modekeeper
  ours=${CARGO_TARGET_DIR:-$PWD/target}/release/kubectl-modekeeper
fi

[ -s "$work/jsonl.jsonl" ] || python3 scripts/gen-trace.py "$lines" "$work/jsonl.jsonl"
[ -s "$work/megatron.log" ] || python3 scripts/gen-trainer-logs.py "$lines" "$work"

median_wall() {
  local f=$1 fmt=$2
  : >"$work/times"
  for _ in $(seq "${RUNS:-3}"); do
    /usr/bin/time -f '%e' -o "$work/time" "$ours" observe --source file --path "$f" --format "$fmt" \
      --out "$work/out" >/dev/null 2>"$work/stderr"
    cat "$work/time" >>"$work/times"
  done
  sort -n "$work/times" | awk '{w[NR]=$1} END {print w[int((NR+1)/2)]}'
}

printf '| reader | input | records | median wall (s) | MB/s | vs JSONL |\n|---|---|---|---|---|---|\n'
base=""
for pair in jsonl.jsonl:jsonl megatron.log:megatron nanogpt.log:nanogpt modded.log:modded-nanogpt \
            llmc.log:llmc deepspeed.log:deepspeed hf.log:hf-trainer megatron.log:auto; do
  file=${pair%%:*} fmt=${pair##*:}
  wall=$(median_wall "$work/$file" "$fmt")
  mb=$(awk -v b="$(stat -c %s "$work/$file")" 'BEGIN{printf "%.1f", b/1e6}')
  rate=$(echo "$mb / $wall" | bc -l)
  [ -n "$base" ] || base=$rate
  recs=$(python3 -c "import json;print(json.load(open('$work/out/observe_latest.json'))['ingest']['records_emitted'])")
  printf '| %s | %s, %s MB | %s | %s | %.1f | %.2fx |\n' "$fmt" "$file" "$mb" "$recs" "$wall" "$rate" "$(echo "$rate / $base" | bc -l)"
done
