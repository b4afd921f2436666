//! One gated apply, end to end: gates in order, the writes, the `k8s_apply.v1` report, the rollback
//! plan and the explain events. [`apply_plan_gated`] is the entry point for `k8s apply` and for
//! `closed-loop run --apply`.

use std::path::PathBuf;

use chrono::{DateTime, Duration, SecondsFormat, Utc};
use serde::Serialize;
use serde_json::json;

use super::engine::{ItemAudit, ItemStatus, WriteOutcome, write_items};
use super::evidence::{EvidenceProblem, VERIFY_LATEST, read_verify_report};
use super::gate::{
    Blocked, Connection, GateCheck, GateLog, kill_switch_gate, license_gate, passport_gate,
    unchanged_gate, verify_gates,
};
use super::kill_switch::{KILL_SWITCH_ANNOTATION, KillSwitch};
use super::rollback::{planned_changes, rollback_item, rollback_plan};
use super::seal::{EvidenceCheck, check_seal, load_key};
use crate::artifacts::{ExplainLog, OutDir};
use crate::error::input_error;
use crate::k8s::{Cluster, ClusterApi, ClusterError, ClusterIdentity, ConnectError, Workload};
use crate::license::{
    self, ENTITLEMENT_APPLY, ENTITLEMENT_CHORDS_ADVANCED, KeyringInfo, LicenseVerdict,
};
use crate::passport::{Passport, is_advanced_knob};
use crate::plan::{Plan, PlanItem, PlanPassport, Target};

/// Schema of the apply report.
pub const APPLY_SCHEMA: &str = "k8s_apply.v1";
/// Report name: `k8s_apply_<ts>.json` and `k8s_apply_latest.json`.
pub const APPLY_REPORT: &str = "k8s_apply";
/// The rollback plan, next to the report.
pub const ROLLBACK_PLAN: &str = "rollback_plan.json";
/// How old a verify report may be unless told otherwise.
pub const DEFAULT_MAX_VERIFY_AGE_S: i64 = 15 * 60;

/// What the caller asks for.
#[derive(Debug, Clone)]
pub struct ApplyOptions {
    /// The plan file, as given (for the report).
    pub plan_path: PathBuf,
    /// The verify report; None = `<out>/k8s_verify_latest.json`.
    pub verify_report: Option<PathBuf>,
    pub max_verify_age: Duration,
    /// `--force` with the digest from `--confirm-plan-digest`.
    pub force: Option<String>,
    pub license: Option<PathBuf>,
    pub keyring: Option<PathBuf>,
    /// The plan comes from advanced chord policies as well: the license must also grant
    /// `chords.advanced`. (A plan that moves an advanced knob needs it whatever this says.)
    pub advanced_chords: bool,
    /// The passport the plan is applied under (gate 2); `None` for a plan file applied without one.
    pub passport: Option<Passport>,
    /// Where the passport came from (`template:safe`, a path, ...), for the report.
    pub passport_source: Option<String>,
}

/// What the caller read from the process: the kill switch and the clock.
#[derive(Debug, Clone)]
pub struct ApplyEnv {
    pub kill_switch: KillSwitch,
    pub now: DateTime<Utc>,
}

impl ApplyEnv {
    pub fn from_process() -> ApplyEnv {
        ApplyEnv {
            kill_switch: KillSwitch::from_env(),
            now: Utc::now(),
        }
    }
}

/// A workload a plan item targets.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ObjectRef {
    pub namespace: String,
    pub name: String,
    pub kind: String,
}

/// The error that stopped an apply after the gates.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ApplyError {
    /// The item, null for a failure before any item.
    pub index: Option<usize>,
    pub kind: String,
    pub status: Option<u16>,
    pub message: String,
}

/// Gate facts recorded in `checks`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ApplyChecks {
    pub kill_switch_active: bool,
    /// The passport the plan is applied under allows apply (`gates.apply`); false when there is
    /// none or the gate was not reached.
    pub passport_allows_apply: bool,
    pub license_ok: bool,
    pub verify_report_found: bool,
}

/// The passport an apply ran under, as the report records it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PassportRecord {
    pub name: String,
    pub version: String,
    pub sha256: String,
    /// Its `gates.apply`.
    pub gates_apply: bool,
    pub source: Option<String>,
}

/// The `k8s_apply.v1` report.
#[derive(Debug, Clone, Serialize)]
pub struct ApplyReport {
    pub schema_version: &'static str,
    pub tool: serde_json::Value,
    pub started_at: String,
    pub finished_at: String,
    pub k8s_plan_path: PathBuf,
    pub plan_digest: String,
    pub k8s_plan_items: usize,
    pub objects: Vec<ObjectRef>,
    /// The connection (null when the kill switch blocked before connecting).
    pub cluster: Option<ClusterIdentity>,
    pub kubectl_context: Option<String>,
    pub kill_switch: KillSwitch,
    /// The passport the plan records (null for a plan that names none).
    pub plan_passport: Option<PlanPassport>,
    /// The passport the gate checked (null when none was given or found).
    pub passport: Option<PassportRecord>,
    pub license_ok: bool,
    /// The license check (null when an earlier gate blocked).
    pub license: Option<LicenseVerdict>,
    pub license_path: Option<PathBuf>,
    pub license_source: Option<&'static str>,
    /// Which keyring was trusted; `override: true` when it was not the built-in one.
    pub keyring: Option<KeyringInfo>,
    pub verify_report_path: Option<PathBuf>,
    /// The verify report's `ok`; null when none was read.
    pub verify_ok: Option<bool>,
    pub verify_finished_at: Option<String>,
    /// How the verify report was authenticated (its seal); null when none was read.
    pub evidence_check: Option<EvidenceCheck>,
    pub max_verify_age_s: i64,
    pub force: bool,
    pub confirm_plan_digest: Option<String>,
    pub checks: ApplyChecks,
    /// Every gate evaluated, in order, up to the one that blocked.
    pub gates: Vec<GateCheck>,
    pub blocked: bool,
    pub block_reason: Option<&'static str>,
    pub block_detail: Option<String>,
    pub apply_attempted: bool,
    /// True in the record written (with the rollback plan) before the first PATCH; a report still
    /// pending after the process ended means the writes' outcome is unknown: the rollback plan then
    /// covers every planned change.
    pub pending: bool,
    pub actions: Vec<ItemAudit>,
    /// Indexes of the items whose objects changed.
    pub changed_items: Vec<usize>,
    /// Indexes of items whose state after a failure is unknown (check them by hand).
    pub unknown_items: Vec<usize>,
    pub rollback_plan_path: Option<PathBuf>,
    pub rollback_plan_digest: Option<String>,
    /// The rollback plan document itself (null when nothing changed).
    pub rollback_plan: Option<serde_json::Value>,
    pub error: Option<ApplyError>,
    /// True only when every item was patched.
    pub ok: bool,
}

/// How an apply ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ApplyResult {
    /// Every item was patched (exit 0).
    Applied,
    /// A gate blocked; nothing was written to the cluster (exit 2).
    Blocked(Blocked),
    /// A cluster or I/O failure during the apply (exit 1); the report says what changed.
    Failed(String),
}

/// What [`apply_plan_gated`] leaves behind.
#[derive(Debug, Clone)]
pub struct ApplyOutcome {
    pub report: ApplyReport,
    pub report_path: PathBuf,
    pub latest_path: PathBuf,
    pub result: ApplyResult,
}

impl ApplyOutcome {
    /// The command's result: Ok, an input error (exit 2) for a block, an error (exit 1) for a failure.
    pub fn into_result(self) -> anyhow::Result<()> {
        match self.result {
            ApplyResult::Applied => Ok(()),
            ApplyResult::Blocked(b) => Err(input_error(
                "apply_blocked",
                format!("apply blocked: {}: {}", b.reason, b.detail),
            )),
            ApplyResult::Failed(m) => Err(anyhow::anyhow!("apply failed: {m}")),
        }
    }
}

fn now_text(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// Whether the plan sets or removes a knob only advanced chords move.
fn touches_advanced_knob(plan: &Plan) -> bool {
    plan.items().iter().any(|item| {
        let p = item.patch();
        p.knobs()
            .into_keys()
            .chain(p.removed_knobs())
            .any(is_advanced_knob)
    })
}

fn object_ref(t: &Target) -> ObjectRef {
    ObjectRef {
        namespace: t.namespace().to_string(),
        name: t.name().to_string(),
        kind: t.kind().as_str().to_string(),
    }
}

/// Runs the gates and, when they all pass, the writes; writes the report (and the rollback plan when
/// anything changed) to `out`. `connect` is called only after the kill switch passed. An unusable
/// kubeconfig is an input error returned as `Err` (no report, like every invalid input).
pub fn apply_plan_gated<A: ClusterApi>(
    plan: &Plan,
    opts: &ApplyOptions,
    env: &ApplyEnv,
    connect: impl FnOnce() -> Result<Cluster<A>, ConnectError>,
    out: &OutDir,
    explain: &mut ExplainLog,
) -> anyhow::Result<ApplyOutcome> {
    let digest = plan.digest();
    let mut report = ApplyReport {
        schema_version: APPLY_SCHEMA,
        tool: json!({"name": "kubectl-modekeeper", "version": env!("CARGO_PKG_VERSION")}),
        started_at: now_text(env.now),
        finished_at: String::new(),
        k8s_plan_path: opts.plan_path.clone(),
        plan_digest: digest.clone(),
        k8s_plan_items: plan.items().len(),
        objects: plan
            .items()
            .iter()
            .map(|i| object_ref(i.target()))
            .collect(),
        cluster: None,
        kubectl_context: None,
        kill_switch: env.kill_switch.clone(),
        plan_passport: plan.passport().cloned(),
        passport: opts.passport.as_ref().map(|p| PassportRecord {
            name: p.name.clone(),
            version: p.version.clone(),
            sha256: p.digest(),
            gates_apply: p.gates.apply,
            source: opts.passport_source.clone(),
        }),
        license_ok: false,
        license: None,
        license_path: None,
        license_source: None,
        keyring: None,
        verify_report_path: None,
        verify_ok: None,
        verify_finished_at: None,
        evidence_check: None,
        max_verify_age_s: opts.max_verify_age.num_seconds(),
        force: opts.force.is_some(),
        confirm_plan_digest: opts.force.clone(),
        checks: ApplyChecks {
            kill_switch_active: env.kill_switch.active,
            ..ApplyChecks::default()
        },
        gates: vec![],
        blocked: false,
        block_reason: None,
        block_detail: None,
        apply_attempted: false,
        pending: false,
        actions: vec![],
        changed_items: vec![],
        unknown_items: vec![],
        rollback_plan_path: None,
        rollback_plan_digest: None,
        rollback_plan: None,
        error: None,
        ok: false,
    };
    let mut log = GateLog::default();
    let result = run_gates_and_write(
        plan,
        opts,
        env,
        connect,
        out,
        explain,
        &mut report,
        &mut log,
    );
    report.gates = log.checks;
    let result = match result {
        Ok(r) => r,
        Err(Stop::Input(e)) => return Err(e),
        Err(Stop::Io(e)) => return Err(e),
    };
    if let ApplyResult::Blocked(b) = &result {
        report.blocked = true;
        report.block_reason = Some(b.reason);
        report.block_detail = Some(b.detail.clone());
        explain.event(
            "k8s_apply_blocked",
            json!({"reason": b.reason, "gate": b.gate, "detail": b.detail}),
        )?;
    }
    report.ok = result == ApplyResult::Applied;
    report.finished_at = now_text(Utc::now().max(env.now));
    let (report_path, latest_path) = out.write_report(APPLY_REPORT, &report)?;
    explain.event(
        "k8s_apply_report",
        json!({"path": report_path, "latest": latest_path, "ok": report.ok,
               "block_reason": report.block_reason, "changed_items": report.changed_items,
               "rollback_plan": report.rollback_plan_path}),
    )?;
    Ok(ApplyOutcome {
        report,
        report_path,
        latest_path,
        result,
    })
}

enum Stop {
    /// Invalid input (kubeconfig): no report.
    Input(anyhow::Error),
    /// Writing an artifact failed.
    Io(anyhow::Error),
}

impl From<anyhow::Error> for Stop {
    fn from(e: anyhow::Error) -> Stop {
        Stop::Io(e)
    }
}

fn cluster_error(report: &mut ApplyReport, index: Option<usize>, e: &ClusterError) -> String {
    report.error = Some(ApplyError {
        index,
        kind: e.kind.as_str().to_string(),
        status: e.status,
        message: e.message.clone(),
    });
    e.to_string()
}

#[allow(clippy::too_many_arguments)]
fn run_gates_and_write<A: ClusterApi>(
    plan: &Plan,
    opts: &ApplyOptions,
    env: &ApplyEnv,
    connect: impl FnOnce() -> Result<Cluster<A>, ConnectError>,
    out: &OutDir,
    explain: &mut ExplainLog,
    report: &mut ApplyReport,
    log: &mut GateLog,
) -> Result<ApplyResult, Stop> {
    // 1. The kill switch, before anything else (not even a connection).
    if let Err(b) = kill_switch_gate(log, &env.kill_switch) {
        return Ok(ApplyResult::Blocked(b));
    }
    // 2. The passport: decided on the plan alone, so a plan-only passport never reaches the cluster.
    if let Err(b) = passport_gate(log, plan, opts.passport.as_ref()) {
        return Ok(ApplyResult::Blocked(b));
    }
    report.checks.passport_allows_apply = opts.passport.as_ref().is_some_and(|p| p.gates.apply);

    let cluster = match connect() {
        Ok(c) => c,
        Err(ConnectError::Config(e)) => {
            explain.event(
                "k8s_apply_error",
                json!({"kind": "kubeconfig", "plan": opts.plan_path, "error": e.message}),
            )?;
            return Err(Stop::Input(input_error("kubeconfig", e.message)));
        }
        Err(e @ ConnectError::Runtime(_)) => return Err(Stop::Io(e.into())),
    };
    let identity = cluster.identity().clone();
    report.kubectl_context = identity.context.clone();
    report.cluster = Some(identity.clone());

    // 1b. The cluster-side switch on every target, read now (fail closed).
    let cluster_switch = cluster_kill_switch(&cluster, plan);
    report.kill_switch = report.kill_switch.clone().or(cluster_switch.clone());
    report.checks.kill_switch_active = report.kill_switch.active;
    if cluster_switch.active {
        let b = log.block(
            "kill_switch_cluster",
            "kill_switch_active",
            format!(
                "the kill switch is on ({}){}",
                cluster_switch
                    .signal
                    .as_deref()
                    .unwrap_or(KILL_SWITCH_ANNOTATION),
                cluster_switch
                    .detail
                    .as_deref()
                    .map(|d| format!("; {d}"))
                    .unwrap_or_default()
            ),
        );
        return Ok(ApplyResult::Blocked(b));
    }
    log.pass("kill_switch_cluster", cluster_switch.signal.clone());

    // 3. The license, bound (if it says so) to this cluster's server.
    let lic = license::check_license_env(
        opts.license.as_deref(),
        opts.keyring.as_deref(),
        env.now.timestamp(),
        Some(&license::ClusterIdentity {
            server: Some(identity.server.clone()),
            uid: None,
        }),
        if opts.advanced_chords || touches_advanced_knob(plan) {
            &[ENTITLEMENT_APPLY, ENTITLEMENT_CHORDS_ADVANCED]
        } else {
            &[ENTITLEMENT_APPLY]
        },
    );
    report.license_ok = lic.verdict.ok;
    report.checks.license_ok = lic.verdict.ok;
    report.license_path = lic.license_path.clone();
    report.license_source = lic.license_source;
    report.keyring = Some(lic.keyring.clone());
    report.license = Some(lic.verdict.clone());
    if let Err(b) = license_gate(log, &lic.verdict) {
        return Ok(ApplyResult::Blocked(b));
    }

    // 4-5. The verify report: this plan, this cluster, recent, ok (or forced).
    let verify_path = opts
        .verify_report
        .clone()
        .unwrap_or_else(|| out.path(VERIFY_LATEST));
    let evidence = read_verify_report(&verify_path);
    report.checks.verify_report_found = !matches!(evidence, Err(EvidenceProblem::Missing(_)));
    if report.checks.verify_report_found {
        report.verify_report_path = Some(verify_path.clone());
    }
    let seal = evidence
        .as_ref()
        .ok()
        .map(|ev| check_seal(&ev.document, &load_key()));
    report.evidence_check = seal.clone();
    // Only an authenticated report's claims go into the audit.
    if let Ok(ev) = &evidence
        && seal.as_ref().is_some_and(|s| s.ok)
    {
        report.verify_ok = Some(ev.ok);
        report.verify_finished_at = Some(now_text(ev.finished_at));
    }
    let conn = Connection {
        context: identity.context.as_deref(),
        server: &identity.server,
    };
    if let Err(b) = verify_gates(
        log,
        &evidence,
        seal.as_ref(),
        plan,
        conn,
        env.now,
        opts.max_verify_age,
        opts.force.as_deref(),
    ) {
        return Ok(ApplyResult::Blocked(b));
    }
    let evidence = evidence.expect("the verify gates passed");

    // 6. Every object as verify saw it.
    let mut live: Vec<Option<Workload>> = Vec::with_capacity(plan.items().len());
    for (i, item) in plan.items().iter().enumerate() {
        match cluster.block_on(cluster.api().get_workload(item.target())) {
            Ok(w) => live.push(w),
            Err(e) => {
                let m = cluster_error(report, Some(i), &e);
                explain.event(
                    "k8s_apply_error",
                    json!({"kind": e.kind.as_str(), "index": i, "step": "read", "error": e.message}),
                )?;
                return Ok(ApplyResult::Failed(format!("reading item {i}: {m}")));
            }
        }
    }
    let versions: Vec<Option<String>> = live
        .iter()
        .map(|w| w.as_ref().map(|w| w.resource_version.clone()))
        .collect();
    if let Err(b) = unchanged_gate(log, &evidence, plan, &versions) {
        return Ok(ApplyResult::Blocked(b));
    }
    let live: Vec<Workload> = live
        .into_iter()
        .map(|w| w.expect("unchanged gate"))
        .collect();

    // 7. A rollback must be expressible before anything is changed.
    for (i, item) in plan.items().iter().enumerate() {
        if let Err(e) = rollback_item(item, &planned_changes(item.patch(), &live[i])) {
            let b = log.block(
                "rollback",
                "rollback_unavailable",
                format!("item {i}: its current state cannot be restored by a plan: {e}"),
            );
            return Ok(ApplyResult::Blocked(b));
        }
    }
    log.pass("rollback", None);

    // Before the first PATCH: the rollback plan of every planned change and this report marked
    // pending, both on disk, so a failure after a write (a full disk) still leaves the way back.
    let planned_rollback: Vec<Option<PlanItem>> = plan
        .items()
        .iter()
        .zip(&live)
        .map(|(item, w)| {
            rollback_item(item, &planned_changes(item.patch(), w))
                .ok()
                .flatten()
        })
        .collect();
    report.apply_attempted = true;
    report.pending = true;
    set_rollback(
        report,
        out,
        planned_rollback.iter().flatten().cloned().collect(),
    )?;
    report.finished_at = now_text(Utc::now().max(env.now));
    out.write_report(APPLY_REPORT, report)?;
    sync_dir(out)?;

    // The writes.
    explain.event(
        "k8s_apply_writing",
        json!({"items": plan.items().len(), "plan_digest": plan.digest()}),
    )?;
    let outcome = write_items(&cluster, plan, &live, |a| {
        if a.ok {
            explain.event(
                "k8s_apply_applied",
                json!({"index": a.index, "namespace": a.namespace, "name": a.name, "kind": a.kind,
                       "status": a.status, "changes": a.changes,
                       "resource_version_before": a.resource_version_before,
                       "resource_version_after": a.resource_version_after}),
            )
        } else {
            explain.event(
                "k8s_apply_error",
                json!({"index": a.index, "namespace": a.namespace, "name": a.name, "step": "patch",
                       "kind": a.error_kind, "status": a.http_status, "error": a.stderr,
                       "changed": a.changed, "changes": a.changes}),
            )
        }
    })?;
    report.pending = false;
    finish_writes(report, out, outcome, &planned_rollback)
}

/// Writes `rollback_plan.json` and records it in the report; with no items, removes the one this
/// apply wrote before its writes (nothing changed after all) and leaves any other alone.
fn set_rollback(report: &mut ApplyReport, out: &OutDir, items: Vec<PlanItem>) -> Result<(), Stop> {
    if items.is_empty() {
        let Some(ours) = report.rollback_plan_path.take() else {
            return Ok(());
        };
        match std::fs::remove_file(ours) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                return Err(Stop::Io(anyhow::anyhow!(
                    "cannot remove {ROLLBACK_PLAN}: {e}"
                )));
            }
        }
        report.rollback_plan_digest = None;
        report.rollback_plan = None;
        return Ok(());
    }
    let plan = rollback_plan(items)
        .map_err(|e| Stop::Io(anyhow::anyhow!("the rollback plan is invalid: {e}")))?;
    let path = out.write_text(ROLLBACK_PLAN, &plan.to_document())?;
    report.rollback_plan_digest = Some(plan.digest());
    report.rollback_plan = serde_json::from_str(&plan.to_document()).ok();
    report.rollback_plan_path = Some(path);
    Ok(())
}

/// The renames into `out` reach the disk before anything is sent.
fn sync_dir(out: &OutDir) -> Result<(), Stop> {
    std::fs::File::open(out.dir())
        .and_then(|d| d.sync_all())
        .map_err(|e| Stop::Io(anyhow::anyhow!("cannot sync {}: {e}", out.dir().display())))
}

/// The `modekeeper.io/kill-switch` annotations of the plan's workloads: the first that is on (or
/// unreadable), else off with every workload read.
fn cluster_kill_switch<A: ClusterApi>(cluster: &Cluster<A>, plan: &Plan) -> KillSwitch {
    let mut off = KillSwitch::OFF;
    // A knobs ConfigMap item is stopped by its own annotation and by its workload's.
    let targets = plan
        .items()
        .iter()
        .flat_map(|i| std::iter::once(i.target()).chain(i.workload()));
    let mut seen = std::collections::BTreeSet::new();
    for t in targets {
        if !seen.insert(t) {
            continue;
        }
        let what = format!("{}/{}/{}", t.namespace(), t.kind().resource(), t.name());
        let read = cluster.block_on(cluster.api().get_workload(t));
        let ks = KillSwitch::from_annotation(
            &what,
            read.as_ref()
                .map(|w| {
                    w.as_ref()
                        .and_then(|w| w.annotations.get(KILL_SWITCH_ANNOTATION))
                        .map(String::as_str)
                })
                .map_err(|e| e.to_string()),
        );
        if ks.active {
            return ks;
        }
        off = off.or(ks);
    }
    off
}

fn finish_writes(
    report: &mut ApplyReport,
    out: &OutDir,
    outcome: WriteOutcome,
    planned_rollback: &[Option<PlanItem>],
) -> Result<ApplyResult, Stop> {
    report.changed_items = outcome
        .actions
        .iter()
        .filter(|a| a.changed == Some(true))
        .map(|a| a.index)
        .collect();
    report.unknown_items = outcome.unknown.clone();
    report.actions = outcome.actions;
    // Exactly what changed; an item whose state is unknown keeps its planned rollback.
    let mut rollback = outcome.rollback;
    rollback.extend(
        outcome
            .unknown
            .iter()
            .filter_map(|&i| planned_rollback.get(i).cloned().flatten()),
    );
    set_rollback(report, out, rollback)?;
    if let Some((i, e)) = &outcome.failure {
        let m = cluster_error(report, Some(*i), e);
        return Ok(ApplyResult::Failed(format!(
            "item {i} ({}/{}): {m}; changed before it: {:?}",
            report.actions[*i].namespace, report.actions[*i].name, report.changed_items
        )));
    }
    if let Some((i, e)) = &outcome.rollback_problem {
        report.error = Some(ApplyError {
            index: Some(*i),
            kind: "rollback_unavailable".into(),
            status: None,
            message: e.clone(),
        });
        return Ok(ApplyResult::Failed(format!(
            "item {i}: the server stored a state whose rollback cannot be written: {e}; stopped"
        )));
    }
    debug_assert!(
        report
            .actions
            .iter()
            .all(|a| a.status != ItemStatus::NotAttempted)
    );
    Ok(ApplyResult::Applied)
}
