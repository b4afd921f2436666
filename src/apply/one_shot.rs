//! `closed-loop run --apply`: the one-shot path from a freshly written plan to the cluster — verify
//! it (read-only, the `k8s_verify.v1` report written next to the plan), then [`apply_plan_gated`]
//! with that report — and the fields it adds to the closed-loop report, with one result per
//! proposed change (as many `results` as `proposed`, blocked or not).
//!
//! The kill switch and the passport gate are checked first: when either blocks, the cluster is not
//! contacted at all (no verify), and the apply report records the block.

use std::path::{Path, PathBuf};
use std::time::Instant;

use chrono::{Duration, SecondsFormat, Utc};
use serde::Serialize;
use serde_json::json;

use super::run::{
    ApplyEnv, ApplyOptions, ApplyOutcome, ApplyResult, DEFAULT_MAX_VERIFY_AGE_S, apply_plan_gated,
};
use crate::artifacts::{ExplainLog, OutDir};
use crate::error::input_error;
use crate::k8s::verify::{
    DEFAULT_CONCURRENCY, PlanFacts, Timings, VERIFY_REPORT, VerifyReport, VerifySettings,
};
use crate::k8s::{Cluster, ConnectError, ConnectOptions};
use crate::passport::Passport;
use crate::plan::Plan;

/// What `--apply` needs besides the plan.
#[derive(Debug, Clone)]
pub struct OneShotOptions {
    pub connect: ConnectOptions,
    pub license: Option<PathBuf>,
    pub keyring: Option<PathBuf>,
    /// Advanced chord policies are running: the license must grant `chords.advanced` too.
    pub advanced_chords: bool,
    /// The loop's passport: its `gates.apply` and limits gate the apply.
    pub passport: Passport,
    pub passport_source: String,
}

/// The result of one proposed change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ActionResult {
    /// Index into the report's `proposed`.
    pub index: usize,
    pub knob: String,
    pub applied: bool,
    pub blocked: bool,
    /// `not_requested`, `no_changes`, `net_unchanged` (a later change undid it), `k8s_apply`,
    /// `k8s_apply_failed`, `k8s_apply_unknown`, or the block reason.
    pub reason: String,
}

/// The apply fields of a closed-loop report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ClosedLoopApply {
    pub apply_requested: bool,
    pub kill_switch_active: bool,
    /// The passport's `gates.apply` (null without `--apply`).
    pub passport_allows_apply: Option<bool>,
    pub verify_ok: Option<bool>,
    pub verify_blocker_kind: Option<String>,
    pub k8s_verify_report_path: Option<PathBuf>,
    pub license_ok: Option<bool>,
    /// True when an override (not the built-in production keyring) was trusted.
    pub keyring_override: Option<bool>,
    pub apply_attempted: bool,
    /// Null when no write was attempted.
    pub apply_ok: Option<bool>,
    pub apply_blocked_reason: Option<String>,
    pub apply_decision_summary: String,
    pub k8s_apply_report_path: Option<PathBuf>,
    pub rollback_plan_path: Option<PathBuf>,
    /// One entry per proposed change.
    pub results: Vec<ActionResult>,
}

impl ClosedLoopApply {
    /// A run without `--apply`.
    pub fn not_requested(proposed_knobs: &[&str]) -> ClosedLoopApply {
        ClosedLoopApply {
            apply_requested: false,
            kill_switch_active: false,
            passport_allows_apply: None,
            verify_ok: None,
            verify_blocker_kind: None,
            k8s_verify_report_path: None,
            license_ok: None,
            keyring_override: None,
            apply_attempted: false,
            apply_ok: None,
            apply_blocked_reason: None,
            apply_decision_summary: "apply not requested (plan only)".into(),
            k8s_apply_report_path: None,
            rollback_plan_path: None,
            results: results(proposed_knobs, |_| (false, false, "not_requested".into())),
        }
    }
}

fn results(knobs: &[&str], f: impl Fn(&str) -> (bool, bool, String)) -> Vec<ActionResult> {
    knobs
        .iter()
        .enumerate()
        .map(|(index, k)| {
            let (applied, blocked, reason) = f(k);
            ActionResult {
                index,
                knob: k.to_string(),
                applied,
                blocked,
                reason,
            }
        })
        .collect()
}

/// The fields and how the run must end.
#[derive(Debug, Clone)]
pub struct OneShot {
    pub fields: ClosedLoopApply,
    /// None when nothing was attempted (an empty plan).
    pub result: Option<ApplyResult>,
}

impl OneShot {
    /// The run's result: exit 2 for a block, 1 for a failure, else Ok.
    pub fn into_result(self) -> anyhow::Result<()> {
        match self.result {
            None | Some(ApplyResult::Applied) => Ok(()),
            Some(ApplyResult::Blocked(b)) => Err(input_error(
                "apply_blocked",
                format!("apply blocked: {}: {}", b.reason, b.detail),
            )),
            Some(ApplyResult::Failed(m)) => Err(anyhow::anyhow!("apply failed: {m}")),
        }
    }
}

/// Verifies `plan` and applies it if every gate allows. `proposed_knobs` are the knobs of the
/// report's `proposed` entries, in order.
pub fn closed_loop_apply(
    plan: &Plan,
    plan_path: &Path,
    proposed_knobs: &[&str],
    opts: &OneShotOptions,
    out: &OutDir,
    explain: &mut ExplainLog,
) -> anyhow::Result<OneShot> {
    let env = ApplyEnv::from_process();
    let mut fields = ClosedLoopApply::not_requested(proposed_knobs);
    fields.apply_requested = true;
    fields.kill_switch_active = env.kill_switch.active;
    fields.passport_allows_apply = Some(opts.passport.gates.apply);
    if plan.is_empty() {
        fields.apply_decision_summary = "apply not attempted: no changes".into();
        fields.results = results(proposed_knobs, |_| (false, false, "no_changes".into()));
        explain.event("closed_loop_apply_skipped", json!({"reason": "no_changes"}))?;
        return Ok(OneShot {
            fields,
            result: None,
        });
    }
    explain.event(
        "k8s_apply_start",
        json!({"plan": plan_path, "out": out.dir(), "force": false, "from": "closed-loop run --apply"}),
    )?;
    let apply_opts = ApplyOptions {
        plan_path: plan_path.to_path_buf(),
        verify_report: None,
        max_verify_age: Duration::seconds(DEFAULT_MAX_VERIFY_AGE_S),
        force: None,
        license: opts.license.clone(),
        keyring: opts.keyring.clone(),
        advanced_chords: opts.advanced_chords,
        passport: Some(opts.passport.clone()),
        passport_source: Some(opts.passport_source.clone()),
    };
    let passport_blocks =
        super::gate::passport_gate(&mut Default::default(), plan, Some(&opts.passport)).is_err();
    let outcome = if env.kill_switch.active || passport_blocks {
        // Absolute: not even a read-only verify.
        let connect = || Cluster::connect(&opts.connect);
        apply_plan_gated(plan, &apply_opts, &env, connect, out, explain)?
    } else {
        let cluster = match Cluster::connect(&opts.connect) {
            Ok(c) => c,
            Err(ConnectError::Config(e)) => return Err(input_error("kubeconfig", e.message)),
            Err(e @ ConnectError::Runtime(_)) => return Err(e.into()),
        };
        let (verify_path, ok, blocker) = verify(&cluster, plan, plan_path, opts, out, explain)?;
        fields.k8s_verify_report_path = Some(verify_path.clone());
        fields.verify_ok = Some(ok);
        fields.verify_blocker_kind = blocker;
        let opts = ApplyOptions {
            verify_report: Some(verify_path),
            ..apply_opts
        };
        apply_plan_gated(plan, &opts, &env, move || Ok(cluster), out, explain)?
    };
    fill(&mut fields, proposed_knobs, plan, &outcome);
    explain.event(
        "closed_loop_apply_result",
        json!({"apply_attempted": fields.apply_attempted, "apply_ok": fields.apply_ok,
               "verify_ok": fields.verify_ok, "apply_blocked_reason": fields.apply_blocked_reason,
               "kill_switch_active": fields.kill_switch_active,
               "k8s_verify_report_path": fields.k8s_verify_report_path,
               "k8s_apply_report_path": fields.k8s_apply_report_path}),
    )?;
    Ok(OneShot {
        fields,
        result: Some(outcome.result),
    })
}

/// `k8s verify` of the plan into `out`; returns the latest report's path, whether it is ok, and
/// its blocker's kind.
fn verify(
    cluster: &Cluster,
    plan: &Plan,
    plan_path: &Path,
    opts: &OneShotOptions,
    out: &OutDir,
    explain: &mut ExplainLog,
) -> anyhow::Result<(PathBuf, bool, Option<String>)> {
    let started = Utc::now();
    let clock = Instant::now();
    let outcome = cluster.verify(plan, DEFAULT_CONCURRENCY);
    let finished = Utc::now();
    let facts = PlanFacts::of(plan, plan_path, "envelope");
    let report = VerifyReport::new(
        outcome,
        cluster.identity().clone(),
        facts,
        started.to_rfc3339_opts(SecondsFormat::Millis, true),
        finished.to_rfc3339_opts(SecondsFormat::Millis, true),
        VerifySettings {
            concurrency: DEFAULT_CONCURRENCY,
            request_timeout_ms: opts.connect.request_timeout.map(|d| d.as_millis() as u64),
        },
        Timings {
            elapsed_ms: clock.elapsed().as_millis() as u64,
            requests: cluster.api().requests(),
        },
    );
    let (sealed, unsealed) = super::seal::seal_with_user_key(&report)?;
    if let Some(why) = &unsealed {
        explain.event("k8s_verify_unsealed", json!({"error": why}))?;
    }
    let (stamped, latest) = out.write_report(VERIFY_REPORT, &sealed)?;
    explain.event(
        "k8s_verify_report",
        json!({"path": stamped, "latest": latest, "ok": report.ok,
               "verify_blocker": report.verify_blocker, "plan_digest": report.plan_digest,
               "context": report.cluster.context, "server": report.cluster.server}),
    )?;
    let blocker = report
        .verify_blocker
        .as_ref()
        .map(|b| b.kind.as_str().to_string());
    Ok((latest, report.ok, blocker))
}

fn fill(f: &mut ClosedLoopApply, knobs: &[&str], plan: &Plan, o: &ApplyOutcome) {
    let r = &o.report;
    f.verify_ok = r.verify_ok.or(f.verify_ok);
    f.kill_switch_active = r.kill_switch.active;
    f.license_ok = r.license.as_ref().map(|l| l.ok);
    f.keyring_override = r.keyring.as_ref().map(|k| k.is_override);
    f.apply_attempted = r.apply_attempted;
    f.apply_ok = r.apply_attempted.then_some(r.ok);
    f.apply_blocked_reason = r.block_reason.map(str::to_string);
    f.k8s_apply_report_path = Some(o.report_path.clone());
    f.rollback_plan_path = r.rollback_plan_path.clone();
    let planned: Vec<&str> = plan
        .items()
        .iter()
        .flat_map(|i| {
            let p = i.patch();
            let mut k: Vec<&str> = p.knobs().into_keys().collect();
            k.extend(p.removed_knobs());
            k
        })
        .collect();
    let unknown = !r.unknown_items.is_empty();
    match &o.result {
        ApplyResult::Blocked(b) => {
            f.apply_decision_summary = format!("apply blocked: {}", b.reason);
            f.results = results(knobs, |_| (false, true, b.reason.to_string()));
        }
        ApplyResult::Applied => {
            f.apply_decision_summary = "apply executed: ok".into();
            f.results = results(knobs, |k| {
                if planned.contains(&k) {
                    (true, false, "k8s_apply".into())
                } else {
                    (false, false, "net_unchanged".into())
                }
            });
        }
        ApplyResult::Failed(_) => {
            f.apply_decision_summary = "apply executed: failed".into();
            let reason = if unknown {
                "k8s_apply_unknown"
            } else {
                "k8s_apply_failed"
            };
            f.results = results(knobs, |_| (false, false, reason.into()));
        }
    }
}
