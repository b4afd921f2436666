//! `k8s apply` end to end: the built binary against kube-sim (in-process), with a development
//! license trusted only through `--keyring`. The happy path (verify, apply, rollback), an object
//! changed since verify, a conflict on the write, a fault between two items, and invalid input.
//! The gates and bad licenses are in apply_gates.rs.

mod apply_support;
mod k8s_common;

use std::path::{Path, PathBuf};

use apply_support::*;
use k8s_common::{Case, KNOB, item, standard};
use kube_sim::{Fault, ResourceKind, WorkloadSeed};
use serde_json::{Value, json};

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
        json!({"kill_switch_active": false, "passport_allows_apply": false, "license_ok": true,
               "verify_report_found": true}),
        "a hand-written plan: no passport"
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
            "passport",
            "kill_switch_cluster",
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
