//! The gates between a plan and a cluster write, in a fixed order; the first that fails blocks and
//! names its reason. Pure: the caller reads the environment, the license, the verify report, the
//! clock and the live objects, and this module decides.
//!
//! 1. `kill_switch` — `MODEKEEPER_KILL_SWITCH` (absolute): `kill_switch_active`.
//! 2. `license` — a valid license granting `apply` (and `chords.advanced` for a plan that moves an
//!    advanced knob or comes from advanced policies): `license_*`, `entitlement_missing`,
//!    `keyring_malformed`.
//! 3. `verify_report` — a `k8s_verify.v1` report exists (`verify_missing`), is readable
//!    (`verify_report_invalid`), is for this very plan (`verify_plan_mismatch`), this context and
//!    server (`verify_other_cluster`), and is recent enough (`verify_too_old`).
//! 4. `verify_ok` — the report says ok, or `--force` with `--confirm-plan-digest` naming this plan's
//!    digest (`verify_failed`, `force_digest_mismatch`). Force never skips gates 1–3 or 5.
//! 5. `unchanged` — every object still has the resourceVersion verify saw (`verify_stale`).
//! 6. `rollback` — the previous values of every planned knob can be written as a rollback plan
//!    (`rollback_unavailable`): apply never makes a change it could not undo.

use chrono::{DateTime, Duration, Utc};
use serde::Serialize;

use super::evidence::{EvidenceProblem, VerifyEvidence};
use super::kill_switch::KillSwitch;
use crate::license::{CLOCK_SKEW_SECS, LicenseVerdict, normalize_server};
use crate::plan::Plan;

/// One gate's result, as recorded in the report (in order, up to the one that blocked).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GateCheck {
    pub gate: &'static str,
    pub ok: bool,
    pub reason: Option<&'static str>,
    pub detail: Option<String>,
}

/// Why apply did not write anything.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Blocked {
    pub gate: &'static str,
    pub reason: &'static str,
    pub detail: String,
}

/// The gate results so far.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct GateLog {
    pub checks: Vec<GateCheck>,
}

impl GateLog {
    pub fn pass(&mut self, gate: &'static str, detail: Option<String>) {
        self.checks.push(GateCheck {
            gate,
            ok: true,
            reason: None,
            detail,
        });
    }

    /// Records a failing gate and returns what blocked.
    pub fn block(&mut self, gate: &'static str, reason: &'static str, detail: String) -> Blocked {
        self.checks.push(GateCheck {
            gate,
            ok: false,
            reason: Some(reason),
            detail: Some(detail.clone()),
        });
        Blocked {
            gate,
            reason,
            detail,
        }
    }
}

/// Gate 1.
pub fn kill_switch_gate(log: &mut GateLog, ks: &KillSwitch) -> Result<(), Blocked> {
    if ks.active {
        let mut detail = format!(
            "the kill switch is on ({})",
            ks.signal.as_deref().unwrap_or("MODEKEEPER_KILL_SWITCH")
        );
        if let Some(d) = &ks.detail {
            detail.push_str(&format!("; {d}"));
        }
        return Err(log.block("kill_switch", "kill_switch_active", detail));
    }
    log.pass("kill_switch", ks.signal.clone());
    Ok(())
}

/// Gate 2.
pub fn license_gate(log: &mut GateLog, verdict: &LicenseVerdict) -> Result<(), Blocked> {
    if !verdict.ok {
        return Err(log.block(
            "license",
            verdict.reason,
            verdict.detail.clone().unwrap_or_default(),
        ));
    }
    let l = verdict.license.as_ref();
    log.pass(
        "license",
        l.map(|l| format!("{} for {}", l.claims.license_id, l.claims.subject)),
    );
    Ok(())
}

/// The connection apply is about to use.
#[derive(Debug, Clone, Copy)]
pub struct Connection<'a> {
    pub context: Option<&'a str>,
    pub server: &'a str,
}

/// Gates 3 and 4. `force` is the digest given with `--confirm-plan-digest` when `--force` is set.
pub fn verify_gates(
    log: &mut GateLog,
    evidence: &Result<VerifyEvidence, EvidenceProblem>,
    plan: &Plan,
    conn: Connection<'_>,
    now: DateTime<Utc>,
    max_age: Duration,
    force: Option<&str>,
) -> Result<(), Blocked> {
    const G: &str = "verify_report";
    let ev = match evidence {
        Ok(e) => e,
        Err(EvidenceProblem::Missing(p)) => {
            return Err(log.block(
                G,
                "verify_missing",
                format!(
                    "no verify report at {}; run `k8s verify --plan <plan> --out <dir>` first",
                    p.display()
                ),
            ));
        }
        Err(EvidenceProblem::Invalid(p, e)) => {
            return Err(log.block(G, "verify_report_invalid", format!("{}: {e}", p.display())));
        }
    };
    let digest = plan.digest();
    if ev.plan_digest != digest {
        return Err(log.block(
            G,
            "verify_plan_mismatch",
            format!(
                "the verify report is for plan {}, this plan is {digest}",
                ev.plan_digest
            ),
        ));
    }
    if ev.context.as_deref() != conn.context
        || normalize_server(&ev.server) != normalize_server(conn.server)
    {
        return Err(log.block(
            G,
            "verify_other_cluster",
            format!(
                "verified against context {} at {}, applying to context {} at {}",
                ev.context.as_deref().unwrap_or("(none)"),
                ev.server,
                conn.context.unwrap_or("(none)"),
                conn.server
            ),
        ));
    }
    let age = now - ev.finished_at;
    if age < -Duration::seconds(CLOCK_SKEW_SECS) {
        return Err(log.block(
            G,
            "verify_report_invalid",
            format!(
                "the verify report finished at {}, in the future",
                ev.finished_at.to_rfc3339()
            ),
        ));
    }
    if age > max_age {
        return Err(log.block(
            G,
            "verify_too_old",
            format!(
                "verified {} s ago, more than the allowed {} s; verify again",
                age.num_seconds(),
                max_age.num_seconds()
            ),
        ));
    }
    log.pass(
        G,
        Some(format!(
            "{} ({} s old)",
            ev.path.display(),
            age.num_seconds().max(0)
        )),
    );

    const O: &str = "verify_ok";
    match force {
        Some(confirmed) if confirmed != digest => Err(log.block(
            O,
            "force_digest_mismatch",
            format!("--force needs --confirm-plan-digest {digest} (got {confirmed})"),
        )),
        Some(_) if !ev.ok => {
            log.pass(
                O,
                Some(format!(
                    "verify was not ok ({}), forced with the confirmed plan digest",
                    ev.blocker
                        .as_ref()
                        .map(|b| b.0.as_str())
                        .unwrap_or("no blocker")
                )),
            );
            Ok(())
        }
        None if !ev.ok => {
            let (kind, detail) = ev
                .blocker
                .clone()
                .unwrap_or_else(|| ("unknown".into(), String::new()));
            Err(log.block(
                O,
                "verify_failed",
                format!("verify was not ok: {kind}: {detail}"),
            ))
        }
        _ => {
            log.pass(O, None);
            Ok(())
        }
    }
}

/// Gate 5: `live[i]` is item i's resourceVersion now (None = the object is gone).
pub fn unchanged_gate(
    log: &mut GateLog,
    evidence: &VerifyEvidence,
    plan: &Plan,
    live: &[Option<String>],
) -> Result<(), Blocked> {
    const G: &str = "unchanged";
    for (i, item) in plan.items().iter().enumerate() {
        let t = item.target();
        let what = format!(
            "{}/{} in namespace {}",
            t.kind().resource(),
            t.name(),
            t.namespace()
        );
        let Some(seen) = evidence.items.iter().find(|e| e.index == i) else {
            return Err(log.block(
                G,
                "verify_report_invalid",
                format!("the verify report has no check for item {i} ({what})"),
            ));
        };
        if seen.namespace != t.namespace()
            || seen.name != t.name()
            || seen.kind != t.kind().as_str()
        {
            return Err(log.block(
                G,
                "verify_report_invalid",
                format!(
                    "the verify report's item {i} is {}/{} in {}, the plan's is {what}",
                    seen.kind, seen.name, seen.namespace
                ),
            ));
        }
        let Some(verified) = &seen.resource_version else {
            return Err(log.block(
                G,
                "verify_stale",
                format!("verify could not read {what}, so nothing vouches for its current state"),
            ));
        };
        match live.get(i).cloned().flatten() {
            None => {
                return Err(log.block(G, "verify_stale", format!("{what} no longer exists")));
            }
            Some(now) if now != *verified => {
                return Err(log.block(
                    G,
                    "verify_stale",
                    format!(
                        "{what} changed since verify (resourceVersion {verified} then, {now} now); verify again"
                    ),
                ));
            }
            Some(_) => {}
        }
    }
    log.pass(G, None);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::apply::evidence::EvidenceItem;
    use crate::plan::parse_plan;
    use std::ffi::OsStr;

    fn plan() -> Plan {
        parse_plan(r#"[{"namespace": "ml", "name": "trainer", "patch": {"spec": {"template": {"metadata": {"annotations": {"modekeeper/knob.grad_accum_steps": "8"}}}}}}]"#)
            .unwrap()
            .0
    }

    fn now() -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000, 0).unwrap()
    }

    fn evidence(p: &Plan) -> VerifyEvidence {
        VerifyEvidence {
            path: "v.json".into(),
            plan_digest: p.digest(),
            context: Some("prod".into()),
            server: "https://k8s:6443".into(),
            finished_at: now() - Duration::minutes(1),
            ok: true,
            blocker: None,
            items: vec![EvidenceItem {
                index: 0,
                namespace: "ml".into(),
                name: "trainer".into(),
                kind: "Deployment".into(),
                resource_version: Some("7".into()),
            }],
        }
    }

    const CONN: Connection<'static> = Connection {
        context: Some("prod"),
        server: "https://K8S:6443/",
    };

    fn run(
        ev: Result<VerifyEvidence, EvidenceProblem>,
        force: Option<&str>,
    ) -> Result<(), Blocked> {
        let mut log = GateLog::default();
        verify_gates(
            &mut log,
            &ev,
            &plan(),
            CONN,
            now(),
            Duration::minutes(15),
            force,
        )
    }

    fn reason(r: Result<(), Blocked>) -> &'static str {
        r.err().map(|b| b.reason).unwrap_or("ok")
    }

    #[test]
    fn verify_gate_reasons() {
        let p = plan();
        assert_eq!(reason(run(Ok(evidence(&p)), None)), "ok");
        assert_eq!(
            reason(run(Err(EvidenceProblem::Missing("x".into())), None)),
            "verify_missing"
        );
        assert_eq!(
            reason(run(
                Err(EvidenceProblem::Invalid("x".into(), "bad".into())),
                None
            )),
            "verify_report_invalid"
        );
        let mut e = evidence(&p);
        e.plan_digest = "sha256:00".into();
        assert_eq!(reason(run(Ok(e), None)), "verify_plan_mismatch");
        let mut e = evidence(&p);
        e.context = Some("staging".into());
        assert_eq!(reason(run(Ok(e), None)), "verify_other_cluster");
        let mut e = evidence(&p);
        e.server = "https://other:6443".into();
        assert_eq!(reason(run(Ok(e), None)), "verify_other_cluster");
        let mut e = evidence(&p);
        e.finished_at = now() - Duration::minutes(16);
        assert_eq!(reason(run(Ok(e), None)), "verify_too_old");
        let mut e = evidence(&p);
        e.finished_at = now() + Duration::minutes(10);
        assert_eq!(reason(run(Ok(e), None)), "verify_report_invalid");
        let mut e = evidence(&p);
        e.ok = false;
        e.blocker = Some(("rbac_denied".into(), "no".into()));
        let b = run(Ok(e.clone()), None).unwrap_err();
        assert_eq!((b.reason, b.gate), ("verify_failed", "verify_ok"));
        assert!(b.detail.contains("rbac_denied"));
        // Force needs the exact digest; with it a failed verify passes, nothing else does.
        assert_eq!(
            reason(run(Ok(e.clone()), Some("sha256:00"))),
            "force_digest_mismatch"
        );
        assert_eq!(reason(run(Ok(e.clone()), Some(&p.digest()))), "ok");
        assert_eq!(
            reason(run(Ok(evidence(&p)), Some("sha256:00"))),
            "force_digest_mismatch"
        );
        let mut old = e;
        old.finished_at = now() - Duration::hours(1);
        assert_eq!(reason(run(Ok(old), Some(&p.digest()))), "verify_too_old");
    }

    #[test]
    fn the_first_failing_gate_is_recorded_and_later_ones_are_not_run() {
        let mut log = GateLog::default();
        let ks = KillSwitch::from_value(Some(OsStr::new("1")));
        let b = kill_switch_gate(&mut log, &ks).unwrap_err();
        assert_eq!(b.reason, "kill_switch_active");
        assert_eq!(log.checks.len(), 1);
        assert!(!log.checks[0].ok);

        let mut log = GateLog::default();
        kill_switch_gate(&mut log, &KillSwitch::from_value(None)).unwrap();
        let v = LicenseVerdict::early(
            crate::license::LicenseReason::LicenseExpired,
            "expired".into(),
            0,
            &["apply"],
        );
        assert_eq!(
            license_gate(&mut log, &v).unwrap_err().reason,
            "license_expired"
        );
        assert_eq!(
            log.checks.iter().map(|c| c.ok).collect::<Vec<_>>(),
            [true, false]
        );
    }

    #[test]
    fn stale_objects_block() {
        let p = plan();
        let e = evidence(&p);
        let check = |live: &[Option<String>], e: &VerifyEvidence| {
            reason(unchanged_gate(&mut GateLog::default(), e, &p, live))
        };
        assert_eq!(check(&[Some("7".into())], &e), "ok");
        assert_eq!(check(&[Some("8".into())], &e), "verify_stale");
        assert_eq!(check(&[None], &e), "verify_stale");
        let mut unread = e.clone();
        unread.items[0].resource_version = None;
        assert_eq!(check(&[Some("7".into())], &unread), "verify_stale");
        let mut other = e.clone();
        other.items[0].name = "db".into();
        assert_eq!(check(&[Some("7".into())], &other), "verify_report_invalid");
        let mut none = e;
        none.items.clear();
        assert_eq!(check(&[Some("7".into())], &none), "verify_report_invalid");
    }
}
