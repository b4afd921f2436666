#!/usr/bin/env bash
# End to end against the cluster KUBECONFIG points at: deploy the example trainer, observe its
# telemetry, plan, verify, apply with a development license, roll back, and render the report.
#
#   KUBECONFIG=~/.kube/config scripts/e2e-real-cluster.sh
#
# The same script runs in the test suite against kube-sim (tests/report_e2e_script.rs), where a test
# thread plays the trainer by writing telemetry into the pod's log. Steps whose command this build of
# kubectl-modekeeper does not have yet (found with `--help`) are reported as skipped, not faked.
#
# Environment:
#   KUBECONFIG          required
#   KUBECTL             kubectl binary (default: kubectl)
#   MODEKEEPER          kubectl-modekeeper binary (default: the one on PATH)
#   E2E_NAMESPACE       namespace to use, created when missing (default: modekeeper-e2e)
#   E2E_OUT             artifacts directory (default: ./e2e-out)
#   E2E_MIN_RECORDS     telemetry records to wait for before observing (default: 300)
#   E2E_TIMEOUT_S       how long to wait for the rollout and the records (default: 600)
#   E2E_IMAGE           trainer image (default: the one in examples/trainer/deployment.yaml)
#   MODEKEEPER_LICENSE_PATH  a license to apply with; without it a development license is minted with
#                       `license keygen` + `license mint` and trusted through MODEKEEPER_KEYRING
#   E2E_CLEANUP=1       delete the namespace at the end (never on kube-sim, which cannot delete)
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)

: "${KUBECONFIG:?set KUBECONFIG to the cluster to run against}"
export KUBECONFIG
KUBECTL=${KUBECTL:-kubectl}
MK=${MODEKEEPER:-kubectl-modekeeper}
NS=${E2E_NAMESPACE:-modekeeper-e2e}
OUT=${E2E_OUT:-./e2e-out}
MIN_RECORDS=${E2E_MIN_RECORDS:-300}
TIMEOUT_S=${E2E_TIMEOUT_S:-600}
KNOB=grad_accum_steps
RUN="$OUT/run"
mkdir -p "$RUN"

step() { printf '\n== %s\n' "$*"; }
ok() { printf 'ok: %s\n' "$*"; }
skip() { printf 'skip: %s\n' "$*"; }
die() { printf 'e2e: %s\n' "$*" >&2; exit 1; }
k() { "$KUBECTL" -n "$NS" "$@"; }
# has_cmd "k8s" "apply": whether this build has the (sub)command.
has_cmd() {
  local help
  help=$("$MK" "${@:1:$#-1}" --help 2>/dev/null) || return 1
  # A here-string, not a pipe: under pipefail, `grep -q` leaving at the first match would fail the
  # writer with SIGPIPE now and then, and the command would look absent.
  grep -Eq "^  ${!#}( |$)" <<<"$help"
}
knob_value() {
  k get deployment trainer -o "jsonpath={.spec.template.metadata.annotations.modekeeper/knob\\.$1}"
}
# Every modekeeper/knob.* annotation of the pod template, one `knob=value` per line, sorted.
knobs() {
  k get deployment trainer -o 'jsonpath={.spec.template.metadata.annotations}' | tr ',{}' '\n\n\n' \
    | sed -n 's/^ *"modekeeper\/knob\.\([a-z0-9_]*\)": *"\([^"]*\)" *$/\1=\2/p' | sort
}
# A report's top-level `"ok": true` (reports are JSON indented by two spaces).
report_ok() { grep -Eq '^  "ok": true' "$1"; }

step "preflight"
"$KUBECTL" version --request-timeout=10s >/dev/null || die "cannot reach the cluster in $KUBECONFIG"
"$MK" --version
ok "cluster reachable, plugin runs"

step "deploy the example trainer into namespace $NS"
"$KUBECTL" get namespace "$NS" >/dev/null 2>&1 || "$KUBECTL" create namespace "$NS"
# The trainer's code travels in a ConfigMap (an API without ConfigMaps, like kube-sim's, skips it).
core_resources=$("$KUBECTL" api-resources --api-group= -o name 2>/dev/null || true)
if grep -qx configmaps <<<"$core_resources"; then
  k create configmap modekeeper-trainer --from-file="$here/examples/trainer/train.py" \
    --dry-run=client -o yaml | k apply --server-side -f -
fi
manifest="$here/examples/trainer/deployment.yaml"
if [ -n "${E2E_IMAGE:-}" ]; then
  sed "s#image: .*#image: $E2E_IMAGE#" "$manifest" > "$OUT/deployment.yaml"; manifest="$OUT/deployment.yaml"
fi
k apply --server-side -f "$manifest"
k rollout status deployment/trainer --timeout="${TIMEOUT_S}s"
start=$(knob_value "$KNOB")
[ -n "$start" ] || die "deployment/trainer has no modekeeper/knob.$KNOB annotation"
before=$(knobs)
ok "deployment/trainer rolled out, knobs: $(echo $before)"

step "collect telemetry (at least $MIN_RECORDS records)"
deadline=$((SECONDS + TIMEOUT_S))
while :; do
  k logs deployment/trainer -c trainer > "$OUT/telemetry.log" 2>/dev/null || true
  n=$(grep -c '"step_time_ms"' "$OUT/telemetry.log" || true)
  [ "$n" -ge "$MIN_RECORDS" ] && break
  [ "$SECONDS" -lt "$deadline" ] || die "only $n telemetry records after ${TIMEOUT_S}s (see $OUT/telemetry.log)"
  sleep 2
done
ok "$n records in $OUT/telemetry.log"

step "observe"
"$MK" observe --path "$OUT/telemetry.log" --out "$RUN"

step "plan"
plan=""
# Every built-in passport is plan-only (gates.apply false): this run may apply, so it uses the safe
# template with apply allowed; `k8s apply` below names the same file.
passport="$OUT/passport.json"
passport_args=()
apply_args=()
if has_cmd passport show; then
  "$MK" passport show safe | sed 's/"apply": false/"apply": true/' > "$passport"
  grep -q '"apply": true' "$passport" || die "could not make an applying passport from safe"
  passport_args=(--passport "$passport")
fi
if has_cmd closed-loop; then
  if "$MK" -n "$NS" closed-loop run --path "$OUT/telemetry.log" --out "$RUN" \
      --deployment trainer --knobs-from-cluster "${passport_args[@]}"; then
    [ -s "$RUN/k8s_plan.json" ] && grep -q '"patch"' "$RUN/k8s_plan.json" && plan="$RUN/k8s_plan.json"
    # The plan records the passport it was made under; applying it needs that passport.
    if [ -n "$plan" ]; then apply_args=("${passport_args[@]}"); fi
  fi
  [ -n "$plan" ] || echo "closed-loop proposed no change; using the fixed plan below"
else
  skip "closed-loop run is not in this build; using the fixed plan below"
fi
if [ -z "$plan" ]; then
  # Double the knob: a change the rollback below must undo.
  plan="$OUT/plan.json"
  printf '[{"namespace":"%s","name":"trainer","kind":"Deployment","patch":{"spec":{"template":{"metadata":{"annotations":{"modekeeper/knob.%s":"%s"}}}}}}]\n' \
    "$NS" "$KNOB" "$((start * 2))" > "$plan"
fi
"$MK" k8s render --plan "$plan" --out "$RUN"
ok "plan $plan rendered to $RUN/k8s_plan.kubectl.sh"

step "verify"
verified=0
if has_cmd k8s verify; then
  "$MK" -n "$NS" k8s verify --plan "$plan" --out "$RUN"
  report_ok "$RUN/k8s_verify_latest.json" || die "verify is not ok (see $RUN/k8s_verify_latest.json)"
  verified=1
  ok "verify ok"
else
  skip "k8s verify is not in this build"
fi

step "apply with a development license"
applied=0
if has_cmd k8s apply && [ "$verified" = 1 ]; then
  if [ -z "${MODEKEEPER_LICENSE_PATH:-}" ]; then
    has_cmd license mint || die "no MODEKEEPER_LICENSE_PATH and no license command to mint one"
    "$MK" license keygen --out "$OUT/keys"
    key=$(find "$OUT/keys" -type f ! -name keyring.json -print -quit)
    "$MK" license mint --key "$key" --subject modekeeper-e2e --entitlements apply --expires now+1d \
      --out "$OUT/license.json"
    export MODEKEEPER_KEYRING="$OUT/keys/keyring.json" MODEKEEPER_LICENSE_PATH="$OUT/license.json"
  fi
  "$MK" -n "$NS" k8s apply --plan "$plan" --out "$RUN" "${apply_args[@]}"
  k rollout status deployment/trainer --timeout="${TIMEOUT_S}s"
  after=$(knobs)
  [ "$after" != "$before" ] || die "apply reported success but the knobs did not change"
  applied=1
  ok "applied: knobs now $(echo $after)"
else
  skip "k8s apply is not in this build (or verify did not run)"
fi

step "roll back"
# The apply wrote the inverse plan; it goes through the same gates (verify, then apply).
if [ "$applied" = 1 ]; then
  rollback="$RUN/rollback_plan.json"
  [ -s "$rollback" ] || die "apply changed the cluster but wrote no $rollback"
  mkdir -p "$OUT/rollback"
  "$MK" -n "$NS" k8s verify --plan "$rollback" --out "$OUT/rollback"
  report_ok "$OUT/rollback/k8s_verify_latest.json" || die "verify of the rollback plan is not ok (see $OUT/rollback)"
  "$MK" -n "$NS" k8s apply --plan "$rollback" --out "$OUT/rollback"
  k rollout status deployment/trainer --timeout="${TIMEOUT_S}s"
else
  skip "nothing was applied"
fi
now=$(knobs)
[ "$now" = "$before" ] || die "knobs are $(echo $now), expected $(echo $before)"
ok "knobs are what the trainer started with: $(echo $now)"

step "report"
"$MK" report --in "$RUN" --out "$OUT/report.html"

if [ "${E2E_CLEANUP:-0}" = 1 ]; then
  step "clean up"
  "$KUBECTL" delete namespace "$NS" --wait=false
fi
printf '\ne2e done: artifacts in %s, report %s\n' "$RUN" "$OUT/report.html"
