//! `k8s apply` gates through the binary against kube-sim: the kill switch, every bad license, the
//! verify report's plan, cluster and age, a failed verify and `--force`. Each block is exit 2 with
//! its reason in the report, on stderr and in explain.jsonl, and no write reached the emulator.

mod apply_support;
mod k8s_common;

use std::path::{Path, PathBuf};

use apply_support::*;
use ed25519_dalek::SigningKey;
use k8s_common::{Case, KNOB, item, standard};
use kube_sim::{Fault, ResourceKind};
use serde_json::{Value, json};

#[test]
fn kill_switch_blocks_first_and_only_documented_values_are_off() {
    let r = ready();
    let lic = r.dev.good();
    for value in ["1", "true", "on", "", "yes", "0x", "disabled"] {
        let a = r.apply_with_license(&lic, &[], &[("MODEKEEPER_KILL_SWITCH", value)]);
        assert_eq!(a.blocked(), "kill_switch_active", "value {value:?}");
        let rep = a.report();
        assert_eq!(rep["checks"]["kill_switch_active"], true);
        assert_eq!(rep["kill_switch"]["active"], true);
        assert_eq!(rep["license"], Value::Null, "no later gate ran");
        assert_eq!(rep["cluster"], Value::Null, "not even a connection");
        assert_eq!(rep["gates"].as_array().unwrap().len(), 1);
    }
    // The kill switch beats a bad license too (it is checked first).
    let a = r.apply(&[], &[("MODEKEEPER_KILL_SWITCH", "1")]);
    assert_eq!(a.blocked(), "kill_switch_active");
    r.untouched();
    // 0 / off / false are off: the apply goes through.
    let a = r.apply_with_license(&lic, &[], &[("MODEKEEPER_KILL_SWITCH", "off")]);
    assert_eq!(a.code, 0, "{a:#?}");
    // Every switch consulted is recorded: the variable, then the workload's annotation.
    assert_eq!(
        a.report()["kill_switch"]["signal"],
        "env:MODEKEEPER_KILL_SWITCH=off; cluster:ml/deployment/trainer:modekeeper.io/kill-switch"
    );
}

#[test]
fn every_bad_license_blocks_with_its_reason() {
    let r = ready();
    let d = &r.dev;
    let other = SigningKey::from_bytes(&[42; 32]);
    let mut expired = claims(&["apply"]);
    (expired.not_before, expired.issued_at, expired.expires_at) =
        (now() - 7200, now() - 7200, now() - 3600);
    let mut future = claims(&["apply"]);
    (future.not_before, future.expires_at) = (now() + 3600, now() + 7200);
    let tampered = d.dir.path().join("tampered.json");
    std::fs::write(
        &tampered,
        std::fs::read_to_string(d.good())
            .unwrap()
            .replace("ModeKeeper test cluster", "ModeKeeper test clustex"),
    )
    .unwrap();
    let malformed = d.dir.path().join("malformed.json");
    std::fs::write(&malformed, "{\"schema_version\": \"license.v1\"}").unwrap();
    let mut bound = claims(&["apply"]);
    bound.bindings.insert(
        "cluster_server".into(),
        "https://elsewhere.example:6443".into(),
    );
    let cases: Vec<(PathBuf, &str)> = vec![
        (tampered, "license_signature_invalid"),
        (d.license("expired.json", &expired), "license_expired"),
        (d.license("future.json", &future), "license_not_yet_valid"),
        (
            d.license_with(&other, "wrong.json", &claims(&["apply"]), false),
            "license_wrong_key",
        ),
        (
            d.license_with(&other, "unknown.json", &claims(&["apply"]), true),
            "license_unknown_kid",
        ),
        (malformed, "license_malformed"),
        (
            d.license("noapply.json", &claims(&["chords.advanced"])),
            "entitlement_missing",
        ),
        (d.license("bound.json", &bound), "license_binding_mismatch"),
        (d.dir.path().join("absent.json"), "license_missing"),
    ];
    for (lic, want) in cases {
        let a = r.apply_with_license(&lic, &[], &[]);
        assert_eq!(a.blocked(), want, "{}", lic.display());
        let rep = a.report();
        assert_eq!(rep["license_ok"], false);
        assert_eq!(rep["license"]["reason"], want);
        assert_eq!(rep["keyring"]["override"], true);
        let last = rep["gates"].as_array().unwrap().last().unwrap().clone();
        assert_eq!(
            (last["gate"].as_str(), last["ok"].as_bool()),
            (Some("license"), Some(false))
        );
    }

    // No license anywhere (empty HOME, no env, no flag).
    let a = r.apply(&["--keyring", d.keyring.to_str().unwrap()], &[]);
    assert_eq!(a.blocked(), "license_missing");
    // The built-in keyring does not trust the test key (a build from source has none at all): only
    // an explicit override does.
    let a = r.apply(&["--license", d.good().to_str().unwrap()], &[]);
    let want = match modekeeper::license::BUILTIN_KEYRING {
        None => "keyring_missing",
        Some(_) => "license_unknown_kid",
    };
    assert_eq!(a.blocked(), want);
    assert_eq!(a.report()["keyring"]["source"], "builtin");
    // A malformed keyring, from the flag or the environment.
    let bad_ring = d.dir.path().join("bad_ring.json");
    std::fs::write(&bad_ring, "{\"0123456789abcdef\": \"AAAA\"}").unwrap();
    let good = d.good();
    let a = r.apply(
        &[
            "--license",
            good.to_str().unwrap(),
            "--keyring",
            bad_ring.to_str().unwrap(),
        ],
        &[],
    );
    assert_eq!(a.blocked(), "keyring_malformed");
    let a = r.apply(
        &["--license", good.to_str().unwrap()],
        &[("MODEKEEPER_KEYRING", bad_ring.to_str().unwrap())],
    );
    assert_eq!(a.blocked(), "keyring_malformed");
    assert_eq!(a.report()["keyring"]["source"], "env");
    r.untouched();
    // The license and keyring may come from the environment.
    let a = r.apply(
        &[],
        &[
            ("MODEKEEPER_LICENSE_PATH", good.to_str().unwrap()),
            ("MODEKEEPER_KEYRING", d.keyring.to_str().unwrap()),
        ],
    );
    assert_eq!(a.code, 0, "{a:#?}");
    assert_eq!(a.report()["license_source"], "env");
    assert_eq!(a.report()["keyring"]["source"], "env");
}

#[test]
fn verify_report_gates() {
    let r = ready();
    let lic = r.dev.good();

    // No report where apply looks.
    let elsewhere = r.case.path().join("elsewhere");
    let a = run_apply(&r.case, &elsewhere, &r.plan, &lic_args(&r.dev, &lic), &[]);
    assert_eq!(a.blocked(), "verify_missing");
    assert_eq!(a.report()["checks"]["verify_report_found"], false);
    assert_eq!(a.report()["verify_ok"], Value::Null);

    // A plan that differs from the verified one.
    let other = write_plan(
        r.case.path(),
        "other.json",
        &json!([item("ml", "trainer", "16")]),
    );
    let report = r.out.join("k8s_verify_latest.json");
    let a = run_apply(
        &r.case,
        &r.out,
        &other,
        &[
            lic_args(&r.dev, &lic),
            vec!["--verify-report", report.to_str().unwrap()],
        ]
        .concat(),
        &[],
    );
    assert_eq!(a.blocked(), "verify_plan_mismatch");

    // A verify report older than allowed.
    edit_resealed(&r.case, &report, |v| {
        v["finished_at"] = json!((chrono::Utc::now() - chrono::Duration::minutes(20)).to_rfc3339());
    });
    assert_eq!(
        r.apply_with_license(&lic, &[], &[]).blocked(),
        "verify_too_old"
    );
    assert_eq!(
        r.apply_with_license(&lic, &["--max-verify-age", "30m"], &[])
            .code,
        0,
        "a longer allowance accepts it"
    );
    r.sim.clear_requests();

    // Not a verify report.
    std::fs::write(&report, "{\"schema_version\": \"k8s_render.v1\"}").unwrap();
    assert_eq!(
        r.apply_with_license(&lic, &[], &[]).blocked(),
        "verify_report_invalid"
    );
    assert_eq!(writes(&r.sim), 0);
}

#[test]
fn a_verify_report_from_another_cluster_is_refused() {
    let r = ready();
    let lic = r.dev.good();
    // Another emulator: the same context name, another server.
    let sim2 = standard().start_blocking().unwrap();
    let case2 = Case::new(&sim2, "t0");
    let report = r.out.join("k8s_verify_latest.json");
    let out2 = case2.path().join("out");
    // The same local user (HOME, so the same evidence key) as the verify.
    let a = run_apply(
        &case2,
        &out2,
        &r.plan,
        &[
            lic_args(&r.dev, &lic),
            vec!["--verify-report", report.to_str().unwrap()],
        ]
        .concat(),
        &[("HOME", r.case.path().to_str().unwrap())],
    );
    assert_eq!(a.blocked(), "verify_other_cluster");
    assert!(
        a.report()["block_detail"]
            .as_str()
            .unwrap()
            .contains(&sim2.https_url())
    );
    assert_eq!(writes(&sim2), 0);
    assert_eq!(writes(&r.sim), 0);
}

/// bob may read but not patch: his verify of a plan is not ok (rbac_denied). alice applies it
/// against the same cluster and context, as the same local user that verified (bob's HOME: the same
/// evidence key), with a good license.
struct FailedVerify {
    sim: kube_sim::KubeSim,
    dev: Dev,
    lic: PathBuf,
    ro: Case,
    plan: PathBuf,
    out: PathBuf,
    v: Value,
    report: PathBuf,
    admin: Case,
}

fn failed_verify() -> FailedVerify {
    let sim = standard().start_blocking().unwrap();
    let dev = Dev::new();
    let lic = dev.good();
    let ro = Case::new(&sim, "ro");
    let plan = write_plan(ro.path(), "plan.json", &json!([item("ml", "trainer", "8")]));
    let out = ro.path().join("out");
    let v = verify(&ro, &out, &plan, false);
    assert_eq!(v["verify_blocker"]["kind"], "rbac_denied");
    let report = out.join("k8s_verify_latest.json");
    let admin = Case::new(&sim, "t0");
    FailedVerify {
        sim,
        dev,
        lic,
        ro,
        plan,
        out,
        v,
        report,
        admin,
    }
}

impl FailedVerify {
    fn home(&self) -> [(&str, &str); 1] {
        [("HOME", self.ro.path().to_str().unwrap())]
    }

    /// The license and the report.
    fn args(&self) -> Vec<&str> {
        [
            lic_args(&self.dev, &self.lic),
            vec!["--verify-report", self.report.to_str().unwrap()],
        ]
        .concat()
    }
}

#[test]
fn a_failed_verify_blocks_unless_forced_with_the_plans_digest() {
    let f = failed_verify();
    let FailedVerify {
        sim,
        dev,
        plan,
        out,
        v,
        report,
        admin,
        ..
    } = &f;
    let (home, base) = (f.home(), f.args());
    let digest = v["plan_digest"].as_str().unwrap().to_string();
    let a = run_apply(admin, out, plan, &base, &home);
    assert_eq!(a.blocked(), "verify_failed");
    assert!(
        a.report()["block_detail"]
            .as_str()
            .unwrap()
            .contains("rbac_denied")
    );
    assert_eq!(a.report()["verify_ok"], false);

    // --force alone is a usage error: exit 2, no report.
    let out_usage = admin.path().join("usage");
    let a = run_apply(
        admin,
        &out_usage,
        plan,
        &[base.clone(), vec!["--force"]].concat(),
        &home,
    );
    assert_eq!(a.code, 2);
    assert!(a.report.is_none() && a.explain.is_empty(), "{a:#?}");
    // --force naming another digest.
    let a = run_apply(
        admin,
        out,
        plan,
        &[
            base.clone(),
            vec!["--force", "--confirm-plan-digest", "sha256:0000"],
        ]
        .concat(),
        &home,
    );
    assert_eq!(a.blocked(), "force_digest_mismatch");
    assert_eq!(writes(sim), 0);
    // --force never skips the license (the test keyring is trusted; no license is given).
    let a = run_apply(
        admin,
        out,
        plan,
        &[
            "--keyring",
            dev.keyring.to_str().unwrap(),
            "--verify-report",
            report.to_str().unwrap(),
            "--force",
            "--confirm-plan-digest",
            &digest,
        ],
        &home,
    );
    assert_eq!(a.blocked(), "license_missing");
    assert_eq!(writes(sim), 0);

    // With the plan's digest confirmed, a failed verify is overridden.
    let a = run_apply(
        admin,
        out,
        plan,
        &[base, vec!["--force", "--confirm-plan-digest", &digest]].concat(),
        &home,
    );
    assert_eq!(a.code, 0, "{a:#?}");
    let rep = a.report();
    assert_eq!(
        (
            rep["force"].as_bool(),
            rep["verify_ok"].as_bool(),
            rep["ok"].as_bool()
        ),
        (Some(true), Some(false), Some(true))
    );
    let forced = rep["gates"]
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["gate"] == "verify_ok")
        .unwrap();
    assert!(forced["detail"].as_str().unwrap().contains("forced"));
    assert_eq!(
        sim.template_annotation(ResourceKind::Deployment, "ml", "trainer", KNOB)
            .as_deref(),
        Some("8")
    );
}

/// A plan that moves a knob only advanced chords move (here `timeout_ms`) needs `chords.advanced` as
/// well as `apply`, whoever wrote the plan: a loop run without `--apply` cannot launder an advanced
/// decision through `k8s apply`.
#[test]
fn a_plan_moving_an_advanced_knob_needs_the_advanced_entitlement() {
    let r = ready_with(&json!([{"namespace": "ml", "name": "trainer",
        "patch": {"spec": {"template": {"metadata": {"annotations":
            {"modekeeper/knob.timeout_ms": "6000"}}}}}}]));

    let apply_only = r.dev.license("apply-only.json", &claims(&["apply"]));
    let a = r.apply_with_license(&apply_only, &[], &[]);
    assert_eq!(a.blocked(), "entitlement_missing");
    assert!(a.stderr.contains("chords.advanced"), "{}", a.stderr);
    assert_eq!(writes(&r.sim), 0);

    let both = r
        .dev
        .license("both.json", &claims(&["apply", "chords.advanced"]));
    let a = r.apply_with_license(&both, &[], &[]);
    assert_eq!(a.code, 0, "{a:#?}");
    assert_eq!(a.report()["ok"], true);
    assert_eq!(
        r.sim
            .template_annotation(
                ResourceKind::Deployment,
                "ml",
                "trainer",
                "modekeeper/knob.timeout_ms"
            )
            .as_deref(),
        Some("6000")
    );
}

/// Issue 11 item 9: `ok: true` edited into a failed verify report let apply write (and the audit
/// said `verify_ok: true, force: false`). A report is evidence only with a valid seal.
#[test]
fn an_edited_unsealed_or_foreign_verify_report_is_not_evidence() {
    let f = failed_verify();
    let FailedVerify {
        sim,
        ro,
        plan,
        out,
        v,
        report,
        admin,
        ..
    } = &f;
    assert_eq!(v["evidence_seal"]["alg"], "hmac-sha256");
    let (home, args) = (f.home(), f.args());

    let mut forged = v.clone();
    forged["ok"] = json!(true);
    forged["verify_blocker"] = Value::Null;
    std::fs::write(report, forged.to_string()).unwrap();
    let a = run_apply(admin, out, plan, &args, &home);
    assert_eq!(a.blocked(), "verify_report_unauthenticated");
    let check = &a.report()["evidence_check"];
    assert_eq!(check["method"], "hmac-sha256");
    assert_eq!(check["ok"], false);
    assert!(
        check["detail"].as_str().unwrap().contains("changed after"),
        "{check}"
    );
    assert_eq!(
        a.report()["verify_ok"],
        Value::Null,
        "an unauthenticated claim is not audited as verify_ok"
    );

    // Without its seal.
    forged.as_object_mut().unwrap().remove("evidence_seal");
    std::fs::write(report, forged.to_string()).unwrap();
    let a = run_apply(admin, out, plan, &args, &home);
    assert_eq!(a.blocked(), "verify_report_unauthenticated");

    // The genuine report, checked by another local user: without a key of its own, then with one
    // (any verify creates it): not evidence either way.
    std::fs::write(report, v.to_string()).unwrap();
    let a = run_apply(admin, out, plan, &args, &[]);
    assert_eq!(a.blocked(), "verify_report_unauthenticated");
    assert!(
        a.report()["block_detail"]
            .as_str()
            .unwrap()
            .contains("no evidence key")
    );
    verify(admin, &admin.path().join("own"), plan, true);
    let a = run_apply(admin, out, plan, &args, &[]);
    assert_eq!(a.blocked(), "verify_report_unauthenticated");
    assert!(
        a.report()["block_detail"]
            .as_str()
            .unwrap()
            .contains("another key")
    );
    // A key file others can read is refused.
    let key = evidence_key(ro);
    let mut perm = std::fs::metadata(&key).unwrap().permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut perm, 0o644);
    std::fs::set_permissions(&key, perm).unwrap();
    let a = run_apply(admin, out, plan, &args, &home);
    assert_eq!(a.blocked(), "verify_report_unauthenticated");
    assert!(
        a.report()["block_detail"]
            .as_str()
            .unwrap()
            .contains("0600")
    );
    assert_eq!(writes(sim), 0);
}

/// Issue 11 item 10: a file switch (`MODEKEEPER_KILL_SWITCH_FILE`) and a cluster-side switch (the
/// workload's `modekeeper.io/kill-switch` annotation), both read by every apply, both fail-closed.
#[test]
fn the_file_and_cluster_kill_switches_block_and_fail_closed() {
    let r = ready();
    let lic = r.dev.good();
    let switch = r.case.path().join("stop-modekeeper");
    let sw = switch.to_str().unwrap();
    let env = [("MODEKEEPER_KILL_SWITCH_FILE", sw)];
    std::fs::write(&switch, "").unwrap();
    let a = r.apply_with_license(&lic, &[], &env);
    assert_eq!(a.blocked(), "kill_switch_active");
    assert_eq!(a.report()["cluster"], Value::Null, "not even a connection");
    assert_eq!(a.report()["kill_switch"]["signal"], format!("file:{sw}"));
    std::fs::remove_file(&switch).unwrap();

    let set = |value: &str| {
        r.sim
            .modify(ResourceKind::Deployment, "ml", "trainer", "ops", |o| {
                o["metadata"]["annotations"]["modekeeper.io/kill-switch"] = json!(value);
            });
    };
    for value in ["on", "please"] {
        set(value);
        let a = r.apply_with_license(&lic, &[], &env);
        assert_eq!(a.blocked(), "kill_switch_active", "{value}");
        let gates = a.report()["gates"].as_array().unwrap();
        assert_eq!(gates.last().unwrap()["gate"], "kill_switch_cluster");
        assert!(
            a.report()["kill_switch"]["signal"]
                .as_str()
                .unwrap()
                .contains("ml/deployment/trainer:modekeeper.io/kill-switch="),
            "{:#}",
            a.report()
        );
        assert_eq!(
            a.report()["license"],
            Value::Null,
            "checked before the license"
        );
    }
    r.untouched();

    // Off again (a new resourceVersion: verify again); a switch that cannot be read counts as on.
    set("off");
    verify(&r.case, &r.out, &r.plan, true);
    let fault = r.sim.inject_fault(
        Fault::status("/apis/apps/v1/namespaces/ml/deployments/trainer", 503)
            .method("GET")
            .times(1),
    );
    let a = r.apply_with_license(&lic, &[], &env);
    assert_eq!(a.blocked(), "kill_switch_active");
    assert!(
        a.report()["block_detail"]
            .as_str()
            .unwrap()
            .contains("cannot read the cluster-side switch"),
        "{:#}",
        a.report()
    );
    assert_eq!(r.sim.fault_fired(fault), 1);
    r.untouched();

    let a = r.apply_with_license(&lic, &[], &env);
    assert_eq!(a.code, 0, "{a:#?}");
    assert_eq!(a.report()["evidence_check"]["ok"], true);
}

/// Issue 11 item 3: a failed write after the PATCH left no rollback plan. The rollback plan and a
/// pending report are written before the first PATCH: when that is impossible nothing is sent.
#[test]
fn no_patch_is_sent_unless_the_rollback_plan_is_on_disk_first() {
    let r = ready();
    let lic = r.dev.good();
    // An injected write failure: rollback_plan.json cannot be created (a directory is in the way).
    let blocker = r.out.join("rollback_plan.json");
    std::fs::create_dir(&blocker).unwrap();
    let a = r.apply_with_license(&lic, &[], &[]);
    assert_eq!(a.code, 1, "{a:#?}");
    assert!(a.stderr.contains("rollback_plan.json"), "{}", a.stderr);
    r.untouched();

    // With the way clear, the pending report and the rollback plan precede the write, and the
    // final report replaces the pending one.
    std::fs::remove_dir(&blocker).unwrap();
    let a = r.apply_with_license(&lic, &[], &[]);
    assert_eq!(a.code, 0, "{a:#?}");
    let rep = a.report();
    assert_eq!(rep["pending"], false);
    assert_eq!(rep["ok"], true);
    let rb: Value =
        serde_json::from_slice(&std::fs::read(r.out.join("rollback_plan.json")).unwrap()).unwrap();
    assert_eq!(
        rb["items"][0]["patch"]["spec"]["template"]["metadata"]["annotations"][KNOB],
        "4"
    );
    assert_eq!(rep["rollback_plan_digest"], rb["plan_digest"]);
}

/// Issue 11 item 6, `k8s apply` of a plan file: a plan records the passport it was made under, and
/// applying it needs that passport (by digest) to allow apply and to bound every value.
#[test]
fn a_plan_made_under_a_passport_is_applied_only_as_that_passport_allows() {
    let sim = standard().start_blocking().unwrap();
    let case = Case::new(&sim, "t0");
    let dev = Dev::new();
    let lic = dev.good();
    let dir = case.path();
    let allowing = passport_file(dir, "safe-apply", true);
    let plan_only = passport_file(dir, "safe-plan-only", false);
    let items = json!([item("ml", "trainer", "8")]);
    let run = |plan: &Value, name: &str, passport: Option<&Path>| {
        let plan = write_plan(dir, name, plan);
        let out = dir.join(format!("out-{name}"));
        verify(&case, &out, &plan, true);
        let mut args = lic_args(&dev, &lic);
        if let Some(p) = passport {
            args.extend(["--passport", p.to_str().unwrap()]);
        }
        run_apply(&case, &out, &plan, &args, &[])
    };

    // Under a plan-only passport (every built-in template is one): never applied.
    let a = run(&plan_under(&items, &plan_only), "p1.json", Some(&plan_only));
    assert_eq!(a.blocked(), "passport_apply_disabled");
    assert_eq!(a.report()["passport"]["gates_apply"], false);
    assert_eq!(
        a.report()["cluster"],
        Value::Null,
        "decided before connecting"
    );
    // The plan names a passport but none is given (and it is no built-in template).
    let a = run(&plan_under(&items, &allowing), "p2.json", None);
    assert_eq!(a.blocked(), "passport_missing");
    // Another passport than the plan's (here, one that allows apply in place of a plan-only one).
    let a = run(&plan_under(&items, &plan_only), "p3.json", Some(&allowing));
    assert_eq!(a.blocked(), "passport_mismatch");
    // A value outside the passport's range (concurrency 1..16).
    let wide = json!([{"namespace": "ml", "name": "trainer", "patch": {"spec": {"template":
        {"metadata": {"annotations": {"modekeeper/knob.concurrency": "100000"}}}}}}]);
    let a = run(&plan_under(&wide, &allowing), "p4.json", Some(&allowing));
    assert_eq!(a.blocked(), "passport_out_of_bounds");
    assert_eq!(writes(&sim), 0);
    // The plan's passport, allowing apply, values in range: applied.
    let a = run(&plan_under(&items, &allowing), "p5.json", Some(&allowing));
    assert_eq!(a.code, 0, "{a:#?}");
    assert_eq!(a.report()["checks"]["passport_allows_apply"], true);
    assert_eq!(a.report()["plan_passport"]["name"], "safe-apply");
    assert_eq!(writes(&sim), 1);
}

/// Issue 11 item 3, the order on disk: while the PATCH is in flight (delayed by the emulator), the
/// rollback plan and a `pending` report are already there; the final report replaces it.
#[test]
fn while_the_patch_is_in_flight_the_rollback_plan_and_a_pending_report_are_on_disk() {
    let r = ready();
    let lic = r.dev.good();
    r.sim.inject_fault(
        Fault::delay(
            "/apis/apps/v1/namespaces/ml/deployments/trainer",
            std::time::Duration::from_secs(3),
        )
        .method("PATCH"),
    );
    let latest = r.out.join("k8s_apply_latest.json");
    std::thread::scope(|scope| {
        let apply = scope.spawn(|| r.apply_with_license(&lic, &[], &[]));
        let t = std::time::Instant::now();
        let pending = loop {
            let rep: Option<Value> = std::fs::read(&latest)
                .ok()
                .and_then(|b| serde_json::from_slice(&b).ok());
            if let Some(rep) = rep {
                break rep;
            }
            assert!(t.elapsed().as_secs() < 20, "no report while patching");
            std::thread::sleep(std::time::Duration::from_millis(20));
        };
        assert_eq!(pending["pending"], true, "{pending:#}");
        assert_eq!(pending["apply_attempted"], true);
        let rb: Value =
            serde_json::from_slice(&std::fs::read(r.out.join("rollback_plan.json")).unwrap())
                .unwrap();
        assert_eq!(
            rb["items"][0]["patch"]["spec"]["template"]["metadata"]["annotations"][KNOB],
            "4"
        );
        assert_eq!(pending["rollback_plan_digest"], rb["plan_digest"]);
        assert_eq!(
            r.sim
                .template_annotation(ResourceKind::Deployment, "ml", "trainer", KNOB)
                .as_deref(),
            Some("4"),
            "the PATCH has not been applied yet"
        );
        let a = apply.join().unwrap();
        assert_eq!(a.code, 0, "{a:#?}");
        assert_eq!(a.report()["pending"], false);
        assert_eq!(a.report()["ok"], true);
    });
}
