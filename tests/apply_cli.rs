//! `k8s apply` end to end: the built binary against kube-sim (in-process), with a development
//! license signed by a key generated for the test and trusted only through `--keyring`.
//! The happy path (verify, apply, rollback), every gate and every bad license (exit 2, the reason,
//! and no write reached the emulator), and a fault between two items.

mod k8s_common;

use std::path::{Path, PathBuf};
use std::process::Output;

use ed25519_dalek::SigningKey;
use k8s_common::{Case, KNOB, item, standard};
use kube_sim::{Fault, KubeSim, ResourceKind, WorkloadSeed};
use modekeeper::license::{self, Keyring, LicenseClaims};
use serde_json::{Value, json};

const MICRO: &str = "modekeeper/knob.microbatch_size";

/// Writes to the cluster: PATCHes that are not dry runs.
fn writes(sim: &KubeSim) -> usize {
    sim.requests()
        .iter()
        .filter(|r| r.method == "PATCH" && !r.query.contains("dryRun"))
        .count()
}

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

fn claims(entitlements: &[&str]) -> LicenseClaims {
    LicenseClaims {
        license_id: "lic-test-cluster".into(),
        subject: "ModeKeeper test cluster".into(),
        issued_at: now() - 60,
        not_before: now() - 60,
        expires_at: now() + 86_400,
        entitlements: entitlements.iter().map(|s| s.to_string()).collect(),
        bindings: Default::default(),
    }
}

/// A development key of this test, its keyring file and license files made with it.
struct Dev {
    key: SigningKey,
    dir: tempfile::TempDir,
    keyring: PathBuf,
}

impl Dev {
    fn new() -> Dev {
        let key = license::generate_signing_key().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let keyring = dir.path().join("keyring.json");
        std::fs::write(
            &keyring,
            Keyring::from_keys([key.verifying_key()]).to_json(),
        )
        .unwrap();
        Dev { key, dir, keyring }
    }

    fn license(&self, name: &str, c: &LicenseClaims) -> PathBuf {
        self.license_with(&self.key, name, c, true)
    }

    fn license_with(&self, key: &SigningKey, name: &str, c: &LicenseClaims, kid: bool) -> PathBuf {
        let p = self.dir.path().join(name);
        std::fs::write(&p, license::mint(key, c, kid).unwrap()).unwrap();
        p
    }

    fn good(&self) -> PathBuf {
        self.license("good.json", &claims(&["apply"]))
    }
}

/// One `k8s apply` run and what it left behind.
#[derive(Debug)]
struct Applied {
    code: i32,
    stdout: String,
    stderr: String,
    report: Option<Value>,
    explain: Vec<Value>,
    out: PathBuf,
}

impl Applied {
    fn report(&self) -> &Value {
        self.report
            .as_ref()
            .unwrap_or_else(|| panic!("no report: {self:#?}"))
    }

    /// A blocked run: exit 2, the reason in the report and on stderr.
    fn blocked(&self) -> &str {
        assert_eq!(self.code, 2, "{self:#?}");
        let r = self.report();
        assert_eq!(r["ok"], false);
        assert_eq!(r["blocked"], true);
        assert_eq!(r["apply_attempted"], false);
        let reason = r["block_reason"].as_str().unwrap();
        assert!(
            self.stderr.contains(&format!("apply blocked: {reason}")),
            "{}",
            self.stderr
        );
        assert_eq!(self.stderr.lines().count(), 1, "{}", self.stderr);
        let blocked: Vec<&Value> = self.events("k8s_apply_blocked");
        assert_eq!(blocked.len(), 1);
        assert_eq!(blocked[0]["reason"], reason);
        reason
    }

    /// This run's events (explain.jsonl is appended across runs in one directory).
    fn events(&self, name: &str) -> Vec<&Value> {
        let start = self
            .explain
            .iter()
            .rposition(|e| e["event"] == "k8s_apply_start")
            .unwrap_or(0);
        self.explain[start..]
            .iter()
            .filter(|e| e["event"] == name)
            .map(|e| &e["payload"])
            .collect()
    }
}

fn run_apply(
    case: &Case,
    out: &Path,
    plan: &Path,
    args: &[&str],
    envs: &[(&str, &str)],
) -> Applied {
    let mut c = case.command();
    c.env_remove("MODEKEEPER_KILL_SWITCH")
        .env_remove("MODEKEEPER_KEYRING")
        .env_remove("MODEKEEPER_LICENSE_PATH");
    for (k, v) in envs {
        c.env(k, v);
    }
    let o: Output = c
        .args(["k8s", "apply", "--plan"])
        .arg(plan)
        .arg("--out")
        .arg(out)
        .arg("--kubeconfig")
        .arg(&case.kubeconfig)
        .args(args)
        .output()
        .unwrap();
    Applied {
        code: o.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        report: std::fs::read(out.join("k8s_apply_latest.json"))
            .ok()
            .map(|b| serde_json::from_slice(&b).unwrap()),
        explain: std::fs::read_to_string(out.join("explain.jsonl"))
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect(),
        out: out.to_path_buf(),
    }
}

/// `k8s verify` of `plan` into `out` (must be ok unless `expect_ok` is false).
fn verify(case: &Case, out: &Path, plan: &Path, expect_ok: bool) -> Value {
    let o = case
        .command()
        .args(["k8s", "verify", "--plan"])
        .arg(plan)
        .arg("--out")
        .arg(out)
        .arg("--kubeconfig")
        .arg(&case.kubeconfig)
        .output()
        .unwrap();
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let r: Value =
        serde_json::from_slice(&std::fs::read(out.join("k8s_verify_latest.json")).unwrap())
            .unwrap();
    assert_eq!(r["ok"], expect_ok, "{r:#}");
    r
}

fn write_plan(dir: &Path, name: &str, plan: &Value) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, serde_json::to_vec_pretty(plan).unwrap()).unwrap();
    p
}

fn lic_args<'a>(dev: &'a Dev, lic: &'a Path) -> Vec<&'a str> {
    vec![
        "--license",
        lic.to_str().unwrap(),
        "--keyring",
        dev.keyring.to_str().unwrap(),
    ]
}

/// The plan of the seed's DoD: the drift chord's grad_accum_steps 4 -> 8, plus a knob the workload
/// did not have (so the rollback must remove it).
fn drift_plan() -> Value {
    json!({"schema_version": "k8s_plan.v1", "items": [
        {"namespace": "ml", "name": "trainer", "kind": "Deployment",
         "patch": {"spec": {"template": {"metadata": {"annotations": {KNOB: "8", MICRO: "16"}}}}}}]})
}

#[test]
fn verify_apply_then_rollback_restores_the_old_values() {
    let sim = standard().start_blocking().unwrap();
    let case = Case::new(&sim, "t0");
    let dev = Dev::new();
    let lic = dev.good();
    let plan = write_plan(case.path(), "plan.json", &drift_plan());
    let out = case.path().join("out");

    let v = verify(&case, &out, &plan, true);
    let rv_verified = v["checks"]["items"][0]["resource_version"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(writes(&sim), 0);

    let a = run_apply(&case, &out, &plan, &lic_args(&dev, &lic), &[]);
    assert_eq!(a.code, 0, "{a:#?}");
    let r = a.report();
    assert_eq!(r["schema_version"], "k8s_apply.v1");
    assert_eq!(r["ok"], true);
    assert_eq!(r["blocked"], false);
    assert_eq!(r["license_ok"], true);
    assert_eq!(r["verify_ok"], true);
    assert_eq!(r["force"], false);
    assert_eq!(r["plan_digest"], v["plan_digest"]);
    assert_eq!(r["kubectl_context"], "kube-sim");
    assert_eq!(
        r["checks"],
        json!({"kill_switch_active": false, "license_ok": true, "verify_report_found": true})
    );
    assert_eq!(
        r["keyring"]["override"], true,
        "the test keyring is recorded as an override"
    );
    assert_eq!(r["keyring"]["source"], "flag");
    assert_eq!(r["license"]["license"]["license_id"], "lic-test-cluster");
    assert_eq!(
        r["verify_report_path"],
        out.join("k8s_verify_latest.json").to_str().unwrap()
    );
    let gates: Vec<&str> = r["gates"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["gate"].as_str().unwrap())
        .collect();
    assert_eq!(
        gates,
        [
            "kill_switch",
            "license",
            "verify_report",
            "verify_ok",
            "unchanged",
            "rollback"
        ]
    );
    assert!(
        r["gates"]
            .as_array()
            .unwrap()
            .iter()
            .all(|g| g["ok"] == true)
    );
    assert_eq!(r["changed_items"], json!([0]));

    let act = &r["actions"][0];
    assert_eq!(act["status"], "applied");
    assert_eq!(
        (
            act["patch_attempted"].as_bool(),
            act["ok"].as_bool(),
            act["rc"].as_i64()
        ),
        (Some(true), Some(true), Some(0))
    );
    assert_eq!(act["http_status"], 200);
    assert_eq!(act["resource_version_before"], rv_verified.as_str());
    assert_eq!(act["request"]["method"], "PATCH");
    assert_eq!(
        act["request"]["path"],
        "/apis/apps/v1/namespaces/ml/deployments/trainer"
    );
    assert_eq!(act["request"]["query"]["fieldManager"], "modekeeper");
    assert_eq!(
        act["request"]["body"]["metadata"]["resourceVersion"],
        rv_verified.as_str()
    );
    assert!(act["stdout"].as_str().unwrap().len() <= 4096);
    assert_eq!(
        act["changes"],
        json!([{"scope": "pod_template", "knob": "grad_accum_steps", "from": "4", "to": "8"},
               {"scope": "pod_template", "knob": "microbatch_size", "from": null, "to": "16"}])
    );

    // The cluster: the pod template carries the planned values; one real PATCH, ours, with the
    // resourceVersion precondition.
    assert_eq!(
        sim.template_annotation(ResourceKind::Deployment, "ml", "trainer", KNOB)
            .as_deref(),
        Some("8")
    );
    assert_eq!(
        sim.template_annotation(ResourceKind::Deployment, "ml", "trainer", MICRO)
            .as_deref(),
        Some("16")
    );
    let real: Vec<_> = sim
        .requests()
        .into_iter()
        .filter(|q| q.method == "PATCH" && !q.query.contains("dryRun"))
        .collect();
    assert_eq!(real.len(), 1);
    assert!(
        real[0].query.contains("fieldManager=modekeeper"),
        "{}",
        real[0].query
    );
    assert!(!real[0].query.contains("force"), "{}", real[0].query);
    assert_eq!(
        real[0].content_type.as_deref(),
        Some("application/merge-patch+json")
    );
    assert!(
        real[0]
            .body
            .contains(&format!("\"resourceVersion\":\"{rv_verified}\"")),
        "{}",
        real[0].body
    );

    // Events, in order.
    let names: Vec<&str> = a
        .explain
        .iter()
        .map(|e| e["event"].as_str().unwrap())
        .collect();
    let at = |n: &str| {
        names
            .iter()
            .rposition(|x| *x == n)
            .unwrap_or_else(|| panic!("{n} in {names:?}"))
    };
    assert!(
        at("k8s_apply_start") < at("k8s_apply_applied")
            && at("k8s_apply_applied") < at("k8s_apply_report")
    );
    assert_eq!(a.events("k8s_apply_applied")[0]["status"], "applied");
    assert!(a.events("k8s_apply_blocked").is_empty());
    assert!(a.stdout.starts_with("applied "), "{}", a.stdout);

    // The rollback plan: a k8s_plan.v1 document restoring 4 and removing the knob that was absent.
    let rb_path = PathBuf::from(r["rollback_plan_path"].as_str().unwrap());
    assert_eq!(rb_path, out.join("rollback_plan.json"));
    let rb: Value = serde_json::from_slice(&std::fs::read(&rb_path).unwrap()).unwrap();
    assert_eq!(rb["schema_version"], "k8s_plan.v1");
    assert_eq!(rb["plan_digest"], r["rollback_plan_digest"]);
    assert_eq!(
        rb["items"],
        json!([{"namespace": "ml", "name": "trainer", "kind": "Deployment",
                "patch": {"spec": {"template": {"metadata": {"annotations": {KNOB: "4", MICRO: null}}}}}}])
    );

    // Rolling back is an apply like any other: verify it, apply it.
    let out_rb = case.path().join("out-rollback");
    verify(&case, &out_rb, &rb_path, true);
    let b = run_apply(&case, &out_rb, &rb_path, &lic_args(&dev, &lic), &[]);
    assert_eq!(b.code, 0, "{b:#?}");
    assert_eq!(
        sim.template_annotation(ResourceKind::Deployment, "ml", "trainer", KNOB)
            .as_deref(),
        Some("4")
    );
    assert_eq!(
        sim.template_annotation(ResourceKind::Deployment, "ml", "trainer", MICRO),
        None
    );
    assert_eq!(writes(&sim), 2);
    // The rollback of the rollback sets the applied values again.
    let rr: Value =
        serde_json::from_slice(&std::fs::read(out_rb.join("rollback_plan.json")).unwrap()).unwrap();
    assert_eq!(
        rr["items"][0]["patch"]["spec"]["template"]["metadata"]["annotations"],
        json!({KNOB: "8", MICRO: "16"})
    );
}

/// A verified plan and everything needed to apply it, for the gate tests.
struct Ready {
    sim: KubeSim,
    case: Case,
    dev: Dev,
    plan: PathBuf,
    out: PathBuf,
}

fn ready() -> Ready {
    let sim = standard().start_blocking().unwrap();
    let case = Case::new(&sim, "t0");
    let dev = Dev::new();
    let plan = write_plan(
        case.path(),
        "plan.json",
        &json!([item("ml", "trainer", "8")]),
    );
    let out = case.path().join("out");
    verify(&case, &out, &plan, true);
    Ready {
        sim,
        case,
        dev,
        plan,
        out,
    }
}

impl Ready {
    fn apply(&self, args: &[&str], envs: &[(&str, &str)]) -> Applied {
        run_apply(&self.case, &self.out, &self.plan, args, envs)
    }

    fn apply_with_license(&self, lic: &Path, extra: &[&str], envs: &[(&str, &str)]) -> Applied {
        let mut a = lic_args(&self.dev, lic);
        a.extend_from_slice(extra);
        self.apply(&a, envs)
    }

    /// Nothing was written, the knob is untouched.
    fn untouched(&self) {
        assert_eq!(writes(&self.sim), 0, "a write reached the cluster");
        assert_eq!(
            self.sim
                .template_annotation(ResourceKind::Deployment, "ml", "trainer", KNOB)
                .as_deref(),
            Some("4")
        );
    }
}

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
    assert_eq!(
        a.report()["kill_switch"]["signal"],
        "env:MODEKEEPER_KILL_SWITCH=off"
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
    // The built-in keyring does not trust the test key: only an explicit override does.
    let a = r.apply(&["--license", d.good().to_str().unwrap()], &[]);
    assert_eq!(a.blocked(), "license_unknown_kid");
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
    let mut v: Value = serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
    v["finished_at"] = json!((chrono::Utc::now() - chrono::Duration::minutes(20)).to_rfc3339());
    std::fs::write(&report, v.to_string()).unwrap();
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
    let a = run_apply(
        &case2,
        &out2,
        &r.plan,
        &[
            lic_args(&r.dev, &lic),
            vec!["--verify-report", report.to_str().unwrap()],
        ]
        .concat(),
        &[],
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

#[test]
fn a_failed_verify_blocks_unless_forced_with_the_plans_digest() {
    let sim = standard().start_blocking().unwrap();
    let dev = Dev::new();
    let lic = dev.good();
    // bob may read but not patch: verify is not ok (rbac_denied).
    let ro = Case::new(&sim, "ro");
    let plan = write_plan(ro.path(), "plan.json", &json!([item("ml", "trainer", "8")]));
    let out = ro.path().join("out");
    let v = verify(&ro, &out, &plan, false);
    assert_eq!(v["verify_blocker"]["kind"], "rbac_denied");
    let digest = v["plan_digest"].as_str().unwrap().to_string();

    // Apply as alice against the same cluster and context, with bob's failed report.
    let admin = Case::new(&sim, "t0");
    let report = out.join("k8s_verify_latest.json");
    let base = [
        lic_args(&dev, &lic),
        vec!["--verify-report", report.to_str().unwrap()],
    ]
    .concat();
    let a = run_apply(&admin, &out, &plan, &base, &[]);
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
        &admin,
        &out_usage,
        &plan,
        &[base.clone(), vec!["--force"]].concat(),
        &[],
    );
    assert_eq!(a.code, 2);
    assert!(a.report.is_none() && a.explain.is_empty(), "{a:#?}");
    // --force naming another digest.
    let a = run_apply(
        &admin,
        &out,
        &plan,
        &[
            base.clone(),
            vec!["--force", "--confirm-plan-digest", "sha256:0000"],
        ]
        .concat(),
        &[],
    );
    assert_eq!(a.blocked(), "force_digest_mismatch");
    assert_eq!(writes(&sim), 0);
    // --force never skips the license.
    let a = run_apply(
        &admin,
        &out,
        &plan,
        &[
            "--verify-report",
            report.to_str().unwrap(),
            "--force",
            "--confirm-plan-digest",
            &digest,
        ],
        &[],
    );
    assert_eq!(a.blocked(), "license_missing");
    assert_eq!(writes(&sim), 0);

    // With the plan's digest confirmed, a failed verify is overridden.
    let a = run_apply(
        &admin,
        &out,
        &plan,
        &[base, vec!["--force", "--confirm-plan-digest", &digest]].concat(),
        &[],
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
    assert!(
        rep["gates"][3]["detail"]
            .as_str()
            .unwrap()
            .contains("forced")
    );
    assert_eq!(
        sim.template_annotation(ResourceKind::Deployment, "ml", "trainer", KNOB)
            .as_deref(),
        Some("8")
    );
}

#[test]
fn an_object_changed_since_verify_is_stale() {
    let r = ready();
    let lic = r.dev.good();
    // Another client scales the Deployment after verify.
    r.sim
        .modify(
            ResourceKind::Deployment,
            "ml",
            "trainer",
            "kubectl-scale",
            |o| o["spec"]["replicas"] = json!(2),
        )
        .unwrap();
    let a = r.apply_with_license(&lic, &[], &[]);
    assert_eq!(a.blocked(), "verify_stale");
    assert!(
        a.report()["block_detail"]
            .as_str()
            .unwrap()
            .contains("changed since verify")
    );
    r.untouched();
    // Verify again, and it goes through.
    verify(&r.case, &r.out, &r.plan, true);
    assert_eq!(r.apply_with_license(&lic, &[], &[]).code, 0);
}

#[test]
fn a_conflict_on_the_write_is_reported_never_forced() {
    let r = ready();
    let lic = r.dev.good();
    let fault = r.sim.inject_fault(
        Fault::status("/apis/apps/v1/namespaces/ml/deployments/trainer", 409)
            .method("PATCH")
            .message("the object has been modified"),
    );
    let a = r.apply_with_license(&lic, &[], &[]);
    assert_eq!(a.code, 1, "{a:#?}");
    let rep = a.report();
    assert_eq!(rep["ok"], false);
    assert_eq!(rep["blocked"], false);
    assert_eq!(rep["error"]["kind"], "conflict");
    let act = &rep["actions"][0];
    assert_eq!(
        (
            act["status"].as_str(),
            act["error_kind"].as_str(),
            act["http_status"].as_u64()
        ),
        (Some("failed"), Some("conflict"), Some(409))
    );
    assert_eq!(act["changed"], false);
    assert_eq!(rep["changed_items"], json!([]));
    assert_eq!(rep["rollback_plan_path"], Value::Null);
    assert_eq!(
        r.sim.fault_fired(fault),
        1,
        "one attempt: no retry, no forced apply"
    );
    assert_eq!(a.events("k8s_apply_error")[0]["kind"], "conflict");
    assert!(!out_has(&a.out, "rollback_plan.json"));
}

fn out_has(out: &Path, name: &str) -> bool {
    out.join(name).exists()
}

#[test]
fn a_fault_between_two_items_leaves_an_exact_report_and_a_rollback_of_what_changed() {
    let sim = standard()
        .workload(WorkloadSeed::deployment("ml", "eval").template_annotation(KNOB, "2"))
        .workload(WorkloadSeed::deployment("ml", "serve").template_annotation(KNOB, "1"))
        .start_blocking()
        .unwrap();
    let case = Case::new(&sim, "t0");
    let dev = Dev::new();
    let lic = dev.good();
    let plan = write_plan(
        case.path(),
        "plan.json",
        &json!([
            item("ml", "trainer", "8"),
            item("ml", "eval", "6"),
            item("ml", "serve", "3")
        ]),
    );
    let out = case.path().join("out");
    verify(&case, &out, &plan, true);
    // The second item's real PATCH fails (the dry runs are over).
    sim.inject_fault(
        Fault::status("/apis/apps/v1/namespaces/ml/deployments/eval", 500)
            .method("PATCH")
            .message("etcd leader changed"),
    );

    let a = run_apply(&case, &out, &plan, &lic_args(&dev, &lic), &[]);
    assert_eq!(a.code, 1, "{a:#?}");
    assert!(a.stderr.contains("apply failed"), "{}", a.stderr);
    let r = a.report();
    assert_eq!(r["ok"], false);
    assert_eq!(r["apply_attempted"], true);
    assert_eq!(r["changed_items"], json!([0]));
    assert_eq!(r["unknown_items"], json!([]));
    let statuses: Vec<&str> = r["actions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["status"].as_str().unwrap())
        .collect();
    assert_eq!(statuses, ["applied", "failed", "not_attempted"]);
    assert_eq!(r["actions"][1]["http_status"], 500);
    assert_eq!(r["actions"][1]["error_kind"], "server_error");
    assert_eq!(r["actions"][1]["changed"], false);
    assert!(
        r["actions"][1]["stderr"]
            .as_str()
            .unwrap()
            .contains("etcd leader changed")
    );
    assert_eq!(r["actions"][2]["patch_attempted"], false);
    assert_eq!(r["error"]["index"], 1);
    assert_eq!(a.events("k8s_apply_applied").len(), 1);
    assert_eq!(a.events("k8s_apply_error")[0]["index"], 1);

    let tmpl = |name: &str| sim.template_annotation(ResourceKind::Deployment, "ml", name, KNOB);
    assert_eq!(
        (
            tmpl("trainer").as_deref(),
            tmpl("eval").as_deref(),
            tmpl("serve").as_deref()
        ),
        (Some("8"), Some("2"), Some("1"))
    );

    // The rollback plan covers exactly the item that changed.
    let rb_path = out.join("rollback_plan.json");
    let rb: Value = serde_json::from_slice(&std::fs::read(&rb_path).unwrap()).unwrap();
    assert_eq!(
        rb["items"],
        json!([{"namespace": "ml", "name": "trainer", "kind": "Deployment",
        "patch": {"spec": {"template": {"metadata": {"annotations": {KNOB: "4"}}}}}}])
    );
    sim.clear_faults();
    let out_rb = case.path().join("out-rollback");
    verify(&case, &out_rb, &rb_path, true);
    assert_eq!(
        run_apply(&case, &out_rb, &rb_path, &lic_args(&dev, &lic), &[]).code,
        0
    );
    assert_eq!(
        (
            tmpl("trainer").as_deref(),
            tmpl("eval").as_deref(),
            tmpl("serve").as_deref()
        ),
        (Some("4"), Some("2"), Some("1"))
    );
}

#[test]
fn invalid_input_leaves_only_explain_events() {
    let r = ready();
    let lic = r.dev.good();
    let out = r.case.path().join("bad");
    let bad = write_plan(
        r.case.path(),
        "bad.json",
        &json!([{"namespace": "ml", "name": "trainer", "patch": {"spec": {"replicas": 3}}}]),
    );
    let a = run_apply(&r.case, &out, &bad, &lic_args(&r.dev, &lic), &[]);
    assert_eq!(a.code, 2);
    assert!(a.report.is_none());
    let files: Vec<String> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(files, ["explain.jsonl"]);
    assert_eq!(a.events("k8s_apply_error")[0]["kind"], "invalid_item");

    // An unusable kubeconfig: also input, also no report.
    let mut c = r.case.command();
    let o = c
        .env_remove("MODEKEEPER_KILL_SWITCH")
        .args(["k8s", "apply", "--plan"])
        .arg(&r.plan)
        .arg("--out")
        .arg(&out)
        .args(["--kubeconfig", "/nonexistent/kubeconfig"])
        .args(lic_args(&r.dev, &lic))
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(!out.join("k8s_apply_latest.json").exists());
    r.untouched();
}
