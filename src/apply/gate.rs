//! The gates between a plan and a cluster write, in a fixed order; the first that fails blocks and
//! names its reason. Pure: the caller reads the environment, the license, the verify report, the
//! clock and the live objects, and this module decides.
//!
//! 1. `kill_switch` — `MODEKEEPER_KILL_SWITCH` or the file `MODEKEEPER_KILL_SWITCH_FILE` names
//!    (absolute): `kill_switch_active`. After connecting, `kill_switch_cluster` — the
//!    `modekeeper.io/kill-switch` annotation of every target workload, fail-closed on read errors
//!    (also `kill_switch_active`).
//! 2. `passport` — the passport the plan was made under allows apply (`gates.apply`) and bounds
//!    every value the plan carries: `passport_missing`, `passport_mismatch`,
//!    `passport_apply_disabled`, `passport_out_of_bounds`.
//! 3. `license` — a valid license granting `apply` (and `chords.advanced` for a plan that moves an
//!    advanced knob or comes from advanced policies), from a trusted keyring: `license_missing`,
//!    `license_malformed`, `license_signature_invalid`, `license_unknown_kid`, `license_wrong_key`,
//!    `license_not_yet_valid`, `license_expired`, `license_binding_mismatch`,
//!    `entitlement_missing`, `keyring_malformed`, `keyring_missing` (no keyring named and this build
//!    embeds none).
//! 4. `verify_report` — a `k8s_verify.v1` report exists (`verify_missing`), is readable and not
//!    dated in the future (`verify_report_invalid`), carries a valid evidence seal
//!    (`verify_report_unauthenticated`, [`super::seal`]), is for this very plan
//!    (`verify_plan_mismatch`), this context and server (`verify_other_cluster`), and is recent
//!    enough (`verify_too_old`).
//! 5. `verify_ok` — the report says ok, or `--force` with `--confirm-plan-digest` naming this plan's
//!    digest (`verify_failed`, `force_digest_mismatch`). Force never skips gates 1–4 or 6.
//! 6. `unchanged` — every object still has the resourceVersion verify saw (`verify_stale`;
//!    `verify_report_invalid` when the report's items are not the plan's).
//! 7. `rollback` — the previous values of every planned knob can be written as a rollback plan
//!    (`rollback_unavailable`): apply never makes a change it could not undo.
//!
//! docs/safety.md's gate table lists the same codes (a test checks both against the code).

use chrono::{DateTime, Duration, Utc};
use serde::Serialize;

use super::evidence::{EvidenceProblem, VerifyEvidence};
use super::kill_switch::KillSwitch;
use super::seal::EvidenceCheck;
use crate::license::{CLOCK_SKEW_SECS, LicenseVerdict, normalize_server};
use crate::passport::Passport;
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

/// Gate 2: `passport` is the passport the caller applies under (the loop's own, or the one
/// `k8s apply` resolved); `None` when it has none. A plan that names a passport needs that very
/// passport (by digest); a passport must allow apply and bound every value the plan carries. A plan
/// naming no passport with none given (a hand-written or rollback plan) passes: `k8s apply` of a
/// reviewed file is the operator's decision.
pub fn passport_gate(
    log: &mut GateLog,
    plan: &Plan,
    passport: Option<&Passport>,
) -> Result<(), Blocked> {
    const G: &str = "passport";
    let named = plan.passport();
    let Some(p) = passport else {
        return match named {
            Some(n) => Err(log.block(
                G,
                "passport_missing",
                format!(
                    "the plan was made under passport {} {} ({}); give that passport with --passport",
                    n.name, n.version, n.sha256
                ),
            )),
            None => {
                log.pass(
                    G,
                    Some("the plan names no passport (a hand-written or rollback plan)".into()),
                );
                Ok(())
            }
        };
    };
    let digest = p.digest();
    if let Some(n) = named
        && n.sha256 != digest
    {
        return Err(log.block(
            G,
            "passport_mismatch",
            format!(
                "the plan was made under passport {} {} ({}), the passport given is {} {} ({digest})",
                n.name, n.version, n.sha256, p.name, p.version
            ),
        ));
    }
    if !p.gates.apply {
        return Err(log.block(
            G,
            "passport_apply_disabled",
            format!(
                "passport {} {} has gates.apply false: its plans may be rendered and verified, not applied",
                p.name, p.version
            ),
        ));
    }
    for (i, item) in plan.items().iter().enumerate() {
        let patch = item.patch();
        if let Some(k) = patch.removed_knobs().into_iter().next() {
            return Err(log.block(
                G,
                "passport_out_of_bounds",
                format!("item {i}: removes knob {k}; a plan under a passport only sets values"),
            ));
        }
        for (k, v) in patch.knobs() {
            if let Err(e) = knob_within(p, k, v) {
                return Err(log.block(G, "passport_out_of_bounds", format!("item {i}: {e}")));
            }
        }
    }
    log.pass(
        G,
        Some(format!(
            "passport {} {} ({digest}) allows apply",
            p.name, p.version
        )),
    );
    Ok(())
}

/// A planned value the passport allows: a governed, applicable knob, a finite number in
/// `[min, max]`.
pub fn knob_within(p: &Passport, knob: &str, value: &str) -> Result<(), String> {
    let Some(l) = p.knob(knob) else {
        return Err(format!("passport {} does not govern knob {knob}", p.name));
    };
    if l.propose_only {
        return Err(format!(
            "knob {knob} is propose-only in passport {}",
            p.name
        ));
    }
    let shown: String = value.chars().take(32).collect();
    match value.trim().parse::<f64>() {
        Ok(x) if x.is_finite() && x >= l.min && x <= l.max => Ok(()),
        Ok(_) => Err(format!(
            "{knob}={shown:?} is outside passport {}'s range [{}, {}]",
            p.name,
            crate::passport::format_knob_value(l.min),
            crate::passport::format_knob_value(l.max)
        )),
        Err(_) => Err(format!("{knob}={shown:?} is not a finite number")),
    }
}

/// Gate 3.
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

/// Gates 4 and 5. `force` is the digest given with `--confirm-plan-digest` when `--force` is set;
/// `seal` is the result of checking the report's seal (None when there was no report to check).
#[allow(clippy::too_many_arguments)]
pub fn verify_gates(
    log: &mut GateLog,
    evidence: &Result<VerifyEvidence, EvidenceProblem>,
    seal: Option<&EvidenceCheck>,
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
    if let Some(s) = seal.filter(|s| !s.ok) {
        return Err(log.block(
            G,
            "verify_report_unauthenticated",
            format!("{}: {}", ev.path.display(), s.detail),
        ));
    }
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

/// Gate 6: `live[i]` is item i's resourceVersion now (None = the object is gone).
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
            document: serde_json::Value::Null,
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
            None,
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

    fn passport(apply: bool) -> Passport {
        let mut p = crate::passport::template("safe").unwrap().unwrap();
        p.gates.apply = apply;
        p
    }

    fn plan_with(knob: &str, value: &str) -> Plan {
        let doc = serde_json::json!([{"namespace": "ml", "name": "trainer", "patch": {"spec": {"template": {"metadata": {"annotations": {format!("modekeeper/knob.{knob}"): value}}}}}}]);
        parse_plan(&doc.to_string()).unwrap().0
    }

    #[test]
    fn the_passport_gate_needs_apply_allowed_the_named_passport_and_bounded_values() {
        let check = |plan: &Plan, p: Option<&Passport>| {
            reason(passport_gate(&mut GateLog::default(), plan, p))
        };
        let yes = passport(true);
        let no = passport(false);
        let ok = plan_with("concurrency", "8");
        assert_eq!(check(&ok, Some(&yes)), "ok");
        assert_eq!(check(&ok, Some(&no)), "passport_apply_disabled");
        // A hand-written plan naming no passport, none given: the operator's decision.
        assert_eq!(check(&ok, None), "ok");
        for bad in ["100000", "1e308", "0", "NaN", "inf", "x", "-1"] {
            assert_eq!(
                check(&plan_with("concurrency", bad), Some(&yes)),
                "passport_out_of_bounds",
                "{bad}"
            );
        }
        assert_eq!(
            check(&plan_with("not_governed", "1"), Some(&yes)),
            "passport_out_of_bounds"
        );
        // A plan naming its passport needs that very passport.
        let named = ok
            .clone()
            .with_passport(crate::plan::PlanPassport::of(&yes));
        assert_eq!(check(&named, Some(&yes)), "ok");
        assert_eq!(check(&named, None), "passport_missing");
        let mut other = yes.clone();
        other.version = "1.0.1".into();
        assert_eq!(check(&named, Some(&other)), "passport_mismatch");
        let named_no = ok.with_passport(crate::plan::PlanPassport::of(&no));
        assert_eq!(check(&named_no, Some(&no)), "passport_apply_disabled");
    }

    #[test]
    fn an_unauthenticated_report_blocks_before_anything_else_is_believed() {
        let p = plan();
        let bad = EvidenceCheck {
            method: "hmac-sha256",
            key_path: None,
            key_id: None,
            ok: false,
            detail: "the seal does not match".into(),
        };
        let b = verify_gates(
            &mut GateLog::default(),
            &Ok(evidence(&p)),
            Some(&bad),
            &p,
            CONN,
            now(),
            Duration::minutes(15),
            None,
        )
        .unwrap_err();
        assert_eq!(b.reason, "verify_report_unauthenticated");
        let good = EvidenceCheck { ok: true, ..bad };
        let r = verify_gates(
            &mut GateLog::default(),
            &Ok(evidence(&p)),
            Some(&good),
            &p,
            CONN,
            now(),
            Duration::minutes(15),
            None,
        );
        assert_eq!(reason(r), "ok");
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

    /// Every reason code a gate can block with (read from the code: `log.block(..)` in this module
    /// and in `run.rs`, and every license verdict) is named in this module's doc and in
    /// docs/safety.md's gate table.
    #[test]
    fn every_reason_code_is_documented_here_and_in_safety_md() {
        fn literals(s: &str) -> impl Iterator<Item = &str> {
            s.split('"')
                .skip(1)
                .step_by(2)
                .filter(|t| !t.is_empty() && t.bytes().all(|c| c.is_ascii_lowercase() || c == b'_'))
        }
        let mut codes: Vec<&str> = Vec::new();
        for src in [include_str!("gate.rs"), include_str!("run.rs")] {
            let code = src.split("#[cfg(test)]").next().unwrap();
            for call in code.split(".block(").skip(1) {
                // The second argument is the reason (the license gate passes its verdict's).
                let reason = call.split(',').nth(1).unwrap_or_default().trim();
                codes.extend(literals(reason));
            }
        }
        let verdicts = include_str!("../license/verify.rs");
        let verdicts = &verdicts[verdicts.find("pub fn as_str").unwrap()..];
        let verdicts = &verdicts[..verdicts.find("\n    }\n").unwrap()];
        codes.extend(literals(verdicts).filter(|c| *c != "ok"));
        codes.sort_unstable();
        codes.dedup();
        for must in [
            "verify_stale",
            "keyring_missing",
            "verify_report_unauthenticated",
            "license_expired",
        ] {
            assert!(codes.contains(&must), "{must} not found in {codes:?}");
        }
        let doc: String = include_str!("gate.rs")
            .lines()
            .take_while(|l| l.starts_with("//!"))
            .collect();
        let safety = include_str!("../../docs/safety.md");
        let table: String = safety[safety.find("## The gates").unwrap()..]
            .lines()
            .skip(1)
            .take_while(|l| !l.starts_with("##"))
            .filter(|l| l.starts_with("| "))
            .collect();
        for c in codes {
            let quoted = format!("`{c}`");
            assert!(doc.contains(&quoted), "{c} is not in gate.rs's module doc");
            assert!(
                table.contains(&quoted) || table.contains(&format!("gate {quoted}")),
                "{c} is not in docs/safety.md's gate table"
            );
        }
    }
}
