#!/usr/bin/env bash
# Side-by-side benchmark of `observe`: the Python original (modekeeper 0.1.33 from PyPI, in a throwaway
# venv) against ours, on the same generated 1,000,000-line JSONL trace; ours also on 10,000,000 lines
# to show that memory stays flat. Needs python3 with venv/pip and /usr/bin/time. Not run in CI.
#   scripts/bench-observe.sh [WORKDIR]     (RUNS=7 PY_RUNS=3 RUNS10=3: runs per measurement, median wall)
set -euo pipefail
cd "$(dirname "$0")/.."
work=${1:-$(mktemp -d /tmp/modekeeper-bench.XXXXXX)}
mkdir -p "$work"
echo "work dir: $work" >&2

# The shipped build (profile dist); MODEKEEPER_BIN=PATH measures another binary (and skips the build).
if [ -n "${MODEKEEPER_BIN:-}" ]; then
  ours=$MODEKEEPER_BIN
else
  [ -n "${NO_BUILD:-}" ] || cargo build --profile dist --locked --quiet --bin kubectl-modekeeper
  ours=${CARGO_TARGET_DIR:-$PWD/target}/dist/kubectl-modekeeper
fi

if [ ! -x "$work/venv/bin/mk" ]; then
  python3 -m venv "$work/venv"
  "$work/venv/bin/pip" install --quiet modekeeper==0.1.33
fi
for n in 1000000 10000000; do
  [ -s "$work/trace_$n.jsonl" ] || python3 scripts/gen-trace.py "$n" "$work/trace_$n.jsonl"
done

# measure RUNS NAME CMD... -> prints "median_wall_s max_rss_mib" over RUNS runs (this VM's wall times
# vary by ±10 % from run to run; one run is not a measurement).
measure() {
  local runs=$1 name=$2; shift 2
  : >"$work/$name.times"
  for _ in $(seq "$runs"); do
    /usr/bin/time -f '%e %M' -o "$work/$name.time" "$@" >"$work/$name.stdout" 2>"$work/$name.stderr"
    cat "$work/$name.time" >>"$work/$name.times"
  done
  sort -n "$work/$name.times" | awk '{w[NR]=$1; if ($2>r) r=$2} END {printf "%s %.1f\n", w[int((NR+1)/2)], r/1024}'
}

size_mb() { awk -v b="$(stat -c %s "$1")" 'BEGIN{printf "%.1f", b/1e6}'; }

read -r py_wall py_rss < <(measure "${PY_RUNS:-3}" python_1m "$work/venv/bin/mk" observe --source file --path "$work/trace_1000000.jsonl" --duration 1s --out "$work/out_py")
read -r rs_wall rs_rss < <(measure "${RUNS:-7}" ours_1m "$ours" observe --source file --path "$work/trace_1000000.jsonl" --out "$work/out_rs_1m")
read -r rs10_wall rs10_rss < <(measure "${RUNS10:-3}" ours_10m "$ours" observe --source file --path "$work/trace_10000000.jsonl" --out "$work/out_rs_10m")

mb1=$(size_mb "$work/trace_1000000.jsonl"); mb10=$(size_mb "$work/trace_10000000.jsonl")
printf '\n| run | input | median wall (s) | peak RSS (MiB) | throughput (MB/s) |\n|---|---|---|---|---|\n'
printf '| python modekeeper 0.1.33 | 1M lines, %s MB | %s | %s | %.1f |\n' "$mb1" "$py_wall" "$py_rss" "$(echo "$mb1 / $py_wall" | bc -l)"
printf '| kubectl-modekeeper | 1M lines, %s MB | %s | %s | %.1f |\n' "$mb1" "$rs_wall" "$rs_rss" "$(echo "$mb1 / $rs_wall" | bc -l)"
printf '| kubectl-modekeeper | 10M lines, %s MB | %s | %s | %.1f |\n' "$mb10" "$rs10_wall" "$rs10_rss" "$(echo "$mb10 / $rs10_wall" | bc -l)"
printf '\nspeed-up on 1M lines: %.1fx wall; RSS 1M -> 10M: %s -> %s MiB\n' "$(echo "$py_wall / $rs_wall" | bc -l)" "$rs_rss" "$rs10_rss"
