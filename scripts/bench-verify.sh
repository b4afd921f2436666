#!/usr/bin/env bash
# Side-by-side benchmark of `k8s verify` on a plan of ITEMS (default 200) Deployments spread over 4
# namespaces, against the kube-sim binary (https, token auth):
#   1. ours: kubectl-modekeeper k8s verify (one process, concurrent API calls: a LIST per namespace
#      and kind, a SelfSubjectRulesReview per namespace, a dry run per item, then the diff);
#   2. the original's approach: serial kubectl subprocesses per item -- get namespace, get deployment,
#      patch --dry-run=server (what `mk k8s verify` runs, cli.py:5556-5598), with a warm discovery cache;
#   3. with ORIGINAL=1, also the original itself (modekeeper 0.1.33 from PyPI, in a throwaway venv).
# Prints wall times and the speed-up. Needs kubectl on PATH. Not run in CI.
#   scripts/bench-verify.sh [WORKDIR]        env: ITEMS=200 PROFILE=release NO_BUILD=1 ORIGINAL=1
set -euo pipefail
cd "$(dirname "$0")/.."
items=${ITEMS:-200}
profile=${PROFILE:-release}
work=${1:-$(mktemp -d /tmp/modekeeper-bench-verify.XXXXXX)}
mkdir -p "$work"
echo "work dir: $work" >&2
command -v kubectl >/dev/null || { echo "bench-verify: kubectl not found on PATH" >&2; exit 2; }

target=${CARGO_TARGET_DIR:-$PWD/target}
flag=--release; [ "$profile" = release ] || flag=
if [ -z "${NO_BUILD:-}" ]; then
  cargo build $flag --quiet --bin kubectl-modekeeper -p modekeeper
  cargo build $flag --quiet --bin kube-sim -p kube-sim
fi
dir=$profile; [ "$profile" = release ] || dir=debug
ours=$target/$dir/kubectl-modekeeper
sim=$target/$dir/kube-sim

# Seed and plan: w0..w(N-1), namespace ns(i % 4), knob 4 -> 8.
{
  printf '{"namespaces":["ns0","ns1","ns2","ns3"],"workloads":['
  for ((i = 0; i < items; i++)); do
    [ "$i" -eq 0 ] || printf ','
    printf '{"namespace":"ns%d","name":"w%d","templateAnnotations":{"modekeeper/knob.grad_accum_steps":"4"}}' $((i % 4)) "$i"
  done
  printf '],"tokens":[{"token":"bench","user":"bench","rules":[{"verbs":["*"],"apiGroups":["*"],"resources":["*"]}]}]}\n'
} >"$work/seed.json"
patch='{"spec":{"template":{"metadata":{"annotations":{"modekeeper/knob.grad_accum_steps":"8"}}}}}'
{
  printf '['
  for ((i = 0; i < items; i++)); do
    [ "$i" -eq 0 ] || printf ','
    printf '{"namespace":"ns%d","name":"w%d","patch":%s}' $((i % 4)) "$i" "$patch"
  done
  printf ']\n'
} >"$work/plan.json"

rm -f "$work/url.txt"
"$sim" --seed "$work/seed.json" --kubeconfig-out "$work/kubeconfig" >"$work/url.txt" 2>"$work/sim.err" &
sim_pid=$!
trap 'kill "$sim_pid" 2>/dev/null || true' EXIT
for _ in $(seq 1 100); do [ -s "$work/url.txt" ] && break; sleep 0.1; done
url=$(head -1 "$work/url.txt")
echo "kube-sim at $url (pid $sim_pid), $items items" >&2
export KUBECONFIG=$work/kubeconfig

now() { date +%s.%N; }
requests() { curl -s "$url/kube-sim/v1/requests" | grep -o '"id":' | wc -l; }
clear_requests() { curl -s -X DELETE "$url/kube-sim/v1/requests" >/dev/null; }

# Warm kubectl's discovery cache once, so the serial loop pays per-call process and TLS costs only.
kubectl --cache-dir "$work/kube-cache" get ns >/dev/null

clear_requests
t0=$(now)
"$ours" k8s verify --plan "$work/plan.json" --out "$work/out" --kubeconfig "$work/kubeconfig" >"$work/ours.stdout"
t1=$(now)
ours_s=$(echo "$t1 - $t0" | bc -l)
ours_req=$(requests)
grep -q '"ok": true' "$work/out/k8s_verify_latest.json" || { echo "bench-verify: our verify is not ok" >&2; head -3 "$work/ours.stdout" >&2; exit 1; }

clear_requests
failed=0
t0=$(now)
for ((i = 0; i < items; i++)); do
  ns=ns$((i % 4)) name=w$i
  k=(kubectl --cache-dir "$work/kube-cache" --request-timeout=20s)
  "${k[@]}" get "namespace/$ns" -o name >/dev/null || failed=$((failed + 1))
  "${k[@]}" -n "$ns" get "deployment/$name" -o name >/dev/null || failed=$((failed + 1))
  "${k[@]}" -n "$ns" patch "deployment/$name" --type merge --dry-run=server -o name -p "$patch" >/dev/null || failed=$((failed + 1))
done
t1=$(now)
serial_s=$(echo "$t1 - $t0" | bc -l)
serial_req=$(requests)
[ "$failed" -eq 0 ] || { echo "bench-verify: $failed kubectl calls failed" >&2; exit 1; }

orig_row=
if [ -n "${ORIGINAL:-}" ]; then
  if [ ! -x "$work/venv/bin/mk" ]; then
    python3 -m venv "$work/venv"
    "$work/venv/bin/pip" install --quiet modekeeper==0.1.33
  fi
  clear_requests
  t0=$(now)
  "$work/venv/bin/mk" k8s verify --plan "$work/plan.json" --out "$work/out_py" >"$work/py.stdout" 2>&1 || true
  t1=$(now)
  orig_s=$(echo "$t1 - $t0" | bc -l)
  orig_row=$(printf '| original `mk k8s verify` (0.1.33) | %d | %.2f | %.1fx |' "$(requests)" "$orig_s" "$(echo "$orig_s / $ours_s" | bc -l)")
fi

printf '\n%d items, %d namespaces, kube-sim over https (%s build)\n\n' "$items" 4 "$profile"
printf '| run | API requests | wall (s) | ours is faster by |\n|---|---|---|---|\n'
printf '| kubectl-modekeeper k8s verify | %d (%.3f per item) | %.2f | - |\n' "$ours_req" "$(echo "$ours_req / $items" | bc -l)" "$ours_s"
printf '| serial kubectl (get ns, get deploy, patch --dry-run=server) | %d | %.2f | %.1fx |\n' \
  "$serial_req" "$serial_s" "$(echo "$serial_s / $ours_s" | bc -l)"
[ -z "$orig_row" ] || echo "$orig_row"
printf '\nours also checks can-i get/patch per item (one SelfSubjectRulesReview per namespace), reads the\nobjects with one LIST per namespace and kind, and diffs every dry run against the live object.\n'
