#!/usr/bin/env bash
# The controller's scale bench (issue 14; not part of CI).
#
#   scripts/bench-controller.sh N[,N2,...] SECONDS
#
# For each N: starts `kube-sim-bench` (kube-sim with N Deployments labelled
# modekeeper.io/enabled=true, one running pod each, and a feeder appending a real trace's lines at
# RATE lines/s per workload stamped with the current time), runs the client against a kubeconfig
# for it, lets it settle for WARMUP seconds, then samples the client's CPU (/proc/PID/stat utime +
# stime) and RSS every second for SECONDS, and kube-sim's CPU over the same time. Prints one line
# per N: workloads, client CPU % of a core per workload, client RSS MiB per workload (the peak),
# decision latency p50/p99 (from the modekeeper_decision_latency_seconds histogram scraped from
# /metrics at the end), and kube-sim's own CPU % of a core.
#
# The client (BENCH_CLIENT):
#   controller  `kubectl-modekeeper controller --shards=1 --settings=modekeeper-settings
#               --listen 127.0.0.1:PORT` (default)
#   watch       one `kubectl-modekeeper closed-loop watch --source k8s` process per workload (to
#               check the harness before the controller exists; use a few workloads); CPU and RSS
#               are summed over the processes, no latency
#   streams     `examples/log_streams.rs`: one PodLogStream per workload in one process (kube-sim's
#               capacity, memory per stream, ingest lag p50/p99 instead of decision latency)
#
# Environment: RATE (10), WARMUP (10 s), TRACE (/work/shared/traces/gpu-h100/combo.jsonl, else
# tests/data/traces/...), PROFILE (release; `debug` skips the long release build of the client),
# PORT (18080), KEEP=1 keeps the work directory, NO_BUILD=1 uses the binaries as they are.
set -euo pipefail
cd "$(dirname "$0")/.."

usage() { echo "usage: scripts/bench-controller.sh N[,N2,...] SECONDS" >&2; exit 2; }
[ $# -eq 2 ] || usage
IFS=, read -r -a COUNTS <<<"$1"
SECONDS_RUN="$2"
[[ "$SECONDS_RUN" =~ ^[0-9]+$ ]] || usage
for n in "${COUNTS[@]}"; do [[ "$n" =~ ^[0-9]+$ ]] && [ "$n" -gt 0 ] || usage; done

RATE="${RATE:-10}"
WARMUP="${WARMUP:-10}"
PROFILE="${PROFILE:-release}"
PORT="${PORT:-18080}"
CLIENT="${BENCH_CLIENT:-controller}"
TRACE="${TRACE:-/work/shared/traces/gpu-h100/combo.jsonl}"
if [ ! -f "$TRACE" ]; then
  TRACE="$(ls tests/data/traces/*.jsonl 2>/dev/null | head -1 || true)"
fi
[ -f "$TRACE" ] || { echo "bench-controller: no trace (set TRACE=file.jsonl)" >&2; exit 2; }
CTRL_NS=modekeeper-system
CLK_TCK=$(getconf CLK_TCK)

SIM_BIN=target/release/kube-sim-bench
profile_flag=(); [ "$PROFILE" = release ] && profile_flag=(--release)
case "$CLIENT" in
  controller|watch) BIN="target/$PROFILE/kubectl-modekeeper"; build=(--bin kubectl-modekeeper) ;;
  streams) BIN="target/$PROFILE/examples/log_streams"; build=(--example log_streams) ;;
  *) echo "bench-controller: BENCH_CLIENT must be controller, watch or streams" >&2; exit 2 ;;
esac
if [ "${NO_BUILD:-0}" != 1 ]; then
  echo "bench-controller: building (client $CLIENT, profile $PROFILE)" >&2
  cargo build --release -q -p kube-sim --bin kube-sim-bench
  cargo build "${profile_flag[@]}" -q "${build[@]}"
fi

# utime + stime of the processes, in clock ticks.
ticks() {
  local t=0 p v
  for p in "$@"; do
    v=$(sed 's/.*) //' "/proc/$p/stat" 2>/dev/null | awk '{print $12 + $13}') || v=0
    t=$((t + ${v:-0}))
  done
  echo "$t"
}
# Resident set of the processes, in KiB.
rss_kib() {
  local t=0 p v
  for p in "$@"; do
    v=$(awk '/^VmRSS:/ {print $2}' "/proc/$p/status" 2>/dev/null) || v=0
    t=$((t + ${v:-0}))
  done
  echo "$t"
}
# p-quantile of a Prometheus histogram (summed over label sets), as histogram_quantile does it:
# linear inside the bucket; the +Inf bucket answers with the highest finite bound.
quantile() {
  local q="$1" name="$2" file="$3"
  grep -E "^${name}_bucket\{" "$file" 2>/dev/null | awk -v q="$q" '
    {
      match($0, /le="[^"]*"/); le = substr($0, RSTART + 4, RLENGTH - 5)
      n[le] += $NF
    }
    END {
      k = 0
      for (le in n) { b[++k] = (le == "+Inf") ? 1e300 : le + 0; c[b[k]] = n[le] }
      if (k == 0) { print "-"; exit }
      # sort the bounds
      for (i = 1; i <= k; i++) for (j = i + 1; j <= k; j++) if (b[j] < b[i]) { t = b[i]; b[i] = b[j]; b[j] = t }
      total = c[b[k]]
      if (total == 0) { print "-"; exit }
      want = q * total; prev = 0; prevc = 0
      for (i = 1; i <= k; i++) {
        if (c[b[i]] >= want) {
          if (b[i] == 1e300) { printf "%.4f\n", prev; exit }
          frac = (c[b[i]] - prevc) > 0 ? (want - prevc) / (c[b[i]] - prevc) : 1
          printf "%.4f\n", prev + (b[i] - prev) * frac; exit
        }
        prev = b[i]; prevc = c[b[i]]
      }
      print "-"
    }'
}

run_one() {
  local n="$1" work sim url pids=() i
  work=$(mktemp -d /tmp/bench-controller.XXXXXX)
  "$SIM_BIN" --workloads "$n" --trace "$TRACE" --rate "$RATE" \
    --kubeconfig-out "$work/kubeconfig" >"$work/url" 2>"$work/sim.log" &
  sim=$!
  # shellcheck disable=SC2064
  # The client goes first (and gets a moment to checkpoint), then the server it talks to.
  trap "[ -n \"\${pids[*]:-}\" ] && kill \${pids[*]} 2>/dev/null; sleep 2; kill $sim 2>/dev/null; true" RETURN
  for _ in $(seq 600); do [ -s "$work/url" ] && break; sleep 0.1; done
  [ -s "$work/url" ] || { echo "bench-controller: kube-sim-bench did not start: $(cat "$work/sim.log")" >&2; return 1; }
  url=$(head -1 "$work/url")
  case "$CLIENT" in
    controller)
      KUBECONFIG="$work/kubeconfig" POD_NAME=modekeeper-controller-0 POD_NAMESPACE="$CTRL_NS" \
        "$BIN" controller --shards=1 --settings=modekeeper-settings --listen "127.0.0.1:$PORT" \
        >"$work/client.out" 2>"$work/client.err" &
      pids=($!) ;;
    watch)
      for ((i = 0; i < n; i++)); do
        "$BIN" closed-loop watch --source k8s --deployment "$(printf 't%04d' "$i")" -n bench \
          --kubeconfig "$work/kubeconfig" --out "$work/watch-$i" \
          >/dev/null 2>"$work/watch-$i.err" &
        pids+=($!)
      done ;;
    streams)
      "$BIN" "$work/kubeconfig" "$n" "$((SECONDS_RUN + WARMUP))" "$RATE" \
        >"$work/client.out" 2>"$work/client.err" &
      pids=($!) ;;
  esac
  sleep "$WARMUP"
  local c0 s0 t0 rss=0 peak=0 t1 c1 s1 elapsed
  c0=$(ticks "${pids[@]}"); s0=$(ticks "$sim"); t0=$(date +%s.%N)
  for ((i = 0; i < SECONDS_RUN; i++)); do
    sleep 1
    rss=$(rss_kib "${pids[@]}")
    [ "$rss" -gt "$peak" ] && peak=$rss
  done
  c1=$(ticks "${pids[@]}"); s1=$(ticks "$sim"); t1=$(date +%s.%N)
  elapsed=$(awk -v a="$t0" -v b="$t1" 'BEGIN {print b - a}')
  local alive=0 p
  for p in "${pids[@]}"; do kill -0 "$p" 2>/dev/null && alive=$((alive + 1)); done
  local p50="-" p99="-" extra=""
  case "$CLIENT" in
    controller)
      curl -s "http://127.0.0.1:$PORT/metrics" >"$work/metrics" || true
      p50=$(quantile 0.5 modekeeper_decision_latency_seconds "$work/metrics")
      p99=$(quantile 0.99 modekeeper_decision_latency_seconds "$work/metrics") ;;
    streams)
      wait "${pids[0]}" || true
      extra=" $(tail -1 "$work/client.out")" ;;
  esac
  awk -v n="$n" -v dc="$((c1 - c0))" -v ds="$((s1 - s0))" -v hz="$CLK_TCK" -v el="$elapsed" \
      -v peak="$peak" -v p50="$p50" -v p99="$p99" -v alive="$alive" -v np="${#pids[@]}" -v extra="$extra" \
    'BEGIN {
      printf "workloads=%d cpu_pct_per_workload=%.3f rss_mib_per_workload=%.3f p50_s=%s p99_s=%s sim_cpu_pct=%.1f client_alive=%d/%d%s\n",
        n, 100 * dc / hz / el / n, peak / 1024 / n, p50, p99, 100 * ds / hz / el, alive, np, extra
    }'
  tail -1 "$work/sim.log" >&2 || true
  if [ "${KEEP:-0}" = 1 ]; then echo "bench-controller: kept $work" >&2; else rm -rf "$work"; fi
}

for n in "${COUNTS[@]}"; do run_one "$n"; done
