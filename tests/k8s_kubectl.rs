//! The plugin through the real `kubectl`, and cross-checks: for several verify outcomes, `kubectl
//! get`, `kubectl auth can-i` and `kubectl patch --dry-run=server` against the same emulator must see
//! what our client saw. Skipped, saying so, when kubectl is not installed.

mod k8s_common;

use std::path::Path;

use k8s_common::{BIN, Case, KNOB, closed_port, item, kubectl, kubectl_or_skip, standard};
use kube_sim::ResourceKind;
use serde_json::{Value, json};

fn patch_text(value: &str) -> String {
    json!({"spec": {"template": {"metadata": {"annotations": {KNOB: value}}}}}).to_string()
}

#[test]
fn the_plugin_is_listed_and_runs_through_kubectl() {
    let Some(kc) = kubectl_or_skip("the_plugin_is_listed_and_runs_through_kubectl") else {
        return;
    };
    let sim = standard().start_blocking().unwrap();
    let case = Case::new(&sim, "t0");
    let bin_dir = case.path().join("bin");
    std::fs::create_dir(&bin_dir).unwrap();
    let plugin = bin_dir.join("kubectl-modekeeper");
    std::fs::copy(BIN, &plugin).unwrap();
    let kubectl_dir = kc.parent().unwrap();
    let path = std::env::join_paths([bin_dir.as_path(), kubectl_dir]).unwrap();
    let run = |args: &[&str]| {
        let o = std::process::Command::new(&kc)
            .args(args)
            .env("PATH", &path)
            .env("HOME", case.path())
            .env_remove("KUBECONFIG")
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap();
        (
            o.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&o.stdout).into_owned(),
            String::from_utf8_lossy(&o.stderr).into_owned(),
        )
    };
    let (code, stdout, stderr) = run(&["plugin", "list"]);
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stdout.lines().any(|l| Path::new(l.trim()) == plugin),
        "{stdout}"
    );

    let plan = case.write_plan(&json!([item("ml", "trainer", "8")]));
    let out = case.out();
    let (code, stdout, stderr) = run(&[
        "modekeeper",
        "k8s",
        "verify",
        "--plan",
        plan.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--kubeconfig",
        case.kubeconfig.to_str().unwrap(),
        "--request-timeout",
        "5s",
    ]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(
        stdout.starts_with("verify ok: 1 item on context kube-sim"),
        "{stdout}"
    );
    let report: Value =
        serde_json::from_slice(&std::fs::read(out.join("k8s_verify_latest.json")).unwrap())
            .unwrap();
    assert_eq!(report["ok"], true);
    assert_eq!(report["settings"]["request_timeout_ms"], 5000);

    // kubectl hands plugin exit codes through: an invalid plan is 2.
    let bad = case.path().join("bad.json");
    std::fs::write(&bad, "{").unwrap();
    let (code, _, stderr) = run(&[
        "modekeeper",
        "k8s",
        "verify",
        "--plan",
        bad.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    assert_eq!(code, 2, "{stderr}");
}

#[test]
fn kubectl_agrees_on_an_ok_item() {
    let Some(kc) = kubectl_or_skip("kubectl_agrees_on_an_ok_item") else {
        return;
    };
    let sim = standard().start_blocking().unwrap();
    let case = Case::new(&sim, "t0");
    let run = case.verify(&json!([item("ml", "trainer", "8")]), &[]);
    let it = run.item(0).clone();
    assert_eq!(run.report()["ok"], true);

    let (code, out, err) = kubectl(
        &kc,
        &case,
        &["-n", "ml", "get", "deployment", "trainer", "-o", "json"],
    );
    assert_eq!(code, 0, "{err}");
    let live: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(live["metadata"]["uid"], it["uid"]);
    assert_eq!(live["metadata"]["resourceVersion"], it["resource_version"]);

    for verb in ["get", "patch"] {
        let (code, out, _) = kubectl(
            &kc,
            &case,
            &["auth", "can-i", verb, "deployments/trainer", "-n", "ml"],
        );
        assert_eq!((code, out.trim()), (0, "yes"), "{verb}");
    }
    let (code, out, err) = kubectl(
        &kc,
        &case,
        &[
            "-n",
            "ml",
            "patch",
            "deployment/trainer",
            "--type",
            "merge",
            "--dry-run=server",
            "-o",
            "json",
            "-p",
            &patch_text("8"),
        ],
    );
    assert_eq!(code, 0, "{err}");
    let dry: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        dry["spec"]["template"]["metadata"]["annotations"][KNOB],
        "8"
    );
    assert_eq!(it["diff"][0]["after"], "8");
    assert_eq!(
        sim.template_annotation(ResourceKind::Deployment, "ml", "trainer", KNOB)
            .as_deref(),
        Some("4"),
        "neither dry run stored anything"
    );
}

#[test]
fn kubectl_agrees_on_an_rbac_denial() {
    let Some(kc) = kubectl_or_skip("kubectl_agrees_on_an_rbac_denial") else {
        return;
    };
    let sim = standard().start_blocking().unwrap();
    let case = Case::new(&sim, "ro");
    let run = case.verify(&json!([item("ml", "trainer", "8")]), &[]);
    assert_eq!(run.blocker().0, "rbac_denied");
    let it = run.item(0).clone();

    let (code, out, _) = kubectl(
        &kc,
        &case,
        &["auth", "can-i", "patch", "deployments/trainer", "-n", "ml"],
    );
    assert_eq!((code, out.trim()), (1, "no"));
    assert_eq!(it["can_i_patch"], false);
    let (code, out, _) = kubectl(
        &kc,
        &case,
        &["auth", "can-i", "get", "deployments/trainer", "-n", "ml"],
    );
    assert_eq!((code, out.trim()), (0, "yes"));
    assert_eq!(it["can_i_get"], true);

    let (code, _, err) = kubectl(
        &kc,
        &case,
        &[
            "-n",
            "ml",
            "patch",
            "deployment/trainer",
            "--type",
            "merge",
            "--dry-run=server",
            "-p",
            &patch_text("8"),
        ],
    );
    assert_eq!(code, 1);
    let message = it["dry_run"]["message"].as_str().unwrap();
    assert_eq!(
        err.trim(),
        format!("Error from server (Forbidden): {message}"),
        "kubectl and the report quote the same Forbidden text"
    );
}

#[test]
fn kubectl_agrees_on_missing_objects_and_rejected_patches() {
    let Some(kc) = kubectl_or_skip("kubectl_agrees_on_missing_objects_and_rejected_patches") else {
        return;
    };
    let sim = standard().start_blocking().unwrap();
    sim.reject_patches(
        ResourceKind::Deployment,
        "ml",
        "trainer",
        "frozen by policy",
    );
    let case = Case::new(&sim, "t0");
    let run = case.verify(
        &json!([
            item("ml", "trainer", "8"),
            item("ml", "absent", "8"),
            item("gone", "x", "8")
        ]),
        &[],
    );
    assert_eq!(run.blocker(), ("dry_run_rejected".into(), json!(0)));

    let (code, _, err) = kubectl(&kc, &case, &["get", "namespace", "gone"]);
    assert_eq!(code, 1);
    assert!(err.contains("(NotFound)"), "{err}");
    assert_eq!(run.item(2)["namespace_exists"], false);

    let (code, _, err) = kubectl(&kc, &case, &["-n", "ml", "get", "deployment", "absent"]);
    assert_eq!(code, 1);
    assert!(
        err.contains("deployments.apps \"absent\" not found"),
        "{err}"
    );
    assert_eq!(run.item(1)["workload_exists"], false);
    assert_eq!(run.item(1)["namespace_exists"], true);

    let (code, _, err) = kubectl(
        &kc,
        &case,
        &[
            "-n",
            "ml",
            "patch",
            "deployment/trainer",
            "--type",
            "merge",
            "--dry-run=server",
            "-p",
            &patch_text("8"),
        ],
    );
    assert_eq!(code, 1);
    let message = run.item(0)["dry_run"]["message"].as_str().unwrap();
    assert!(message.contains("frozen by policy"), "{message}");
    // kubectl words the head of an Invalid status itself ("The Deployment ..."); the causes agree.
    let causes = message.split_once(" is invalid: ").unwrap().1;
    assert!(err.contains(causes), "kubectl: {err}\nreport: {message}");
    assert_eq!(run.item(0)["dry_run"]["status"], 422);
}

#[test]
fn kubectl_agrees_the_cluster_is_unreachable() {
    let Some(kc) = kubectl_or_skip("kubectl_agrees_the_cluster_is_unreachable") else {
        return;
    };
    let port = closed_port();
    let case = Case::with_server(&format!("https://127.0.0.1:{port}"), Some("t0"));
    let run = case.verify(&json!([item("ml", "trainer", "8")]), &[]);
    assert_eq!(run.blocker().0, "cluster_unreachable");
    let detail = run.report()["verify_blocker"]["detail"]
        .as_str()
        .unwrap()
        .to_lowercase();
    assert!(detail.contains("connection refused"), "{detail}");

    let (code, _, err) = kubectl(&kc, &case, &["get", "namespace", "ml"]);
    assert_eq!(code, 1);
    assert!(err.to_lowercase().contains("connection refused"), "{err}");
}

#[test]
fn kubectl_agrees_on_a_knobs_configmap_a_pytorchjob_and_a_missing_crd() {
    let Some(kc) =
        kubectl_or_skip("kubectl_agrees_on_a_knobs_configmap_a_pytorchjob_and_a_missing_crd")
    else {
        return;
    };
    let tpl = json!({"metadata": {"annotations": {KNOB: "4"}},
                     "spec": {"containers": [{"name": "trainer", "image": "t:1"}]}});
    let seeded = |absent: bool| {
        standard()
            .object(
                ResourceKind::ConfigMap,
                json!({"metadata": {"name": "trainer-modekeeper-knobs", "namespace": "ml"},
                       "data": {"concurrency": "2"}}),
            )
            .object(
                ResourceKind::PyTorchJob,
                json!({"metadata": {"name": "ddp", "namespace": "ml"},
                       "spec": {"pytorchReplicaSpecs": {"Master": {"template": tpl},
                                                        "Worker": {"template": tpl}}}}),
            )
            .crds_absent(absent)
            .start_blocking()
            .unwrap()
    };
    let cm_patch = json!({"data": {"concurrency": "6"}});
    let role = json!({"template": {"metadata": {"annotations": {KNOB: "8"}}}});
    let ddp_patch = json!({"spec": {"pytorchReplicaSpecs": {"Master": role, "Worker": role}}});
    let plan = json!({"schema_version": "k8s_plan.v2", "items": [
        {"namespace": "ml", "name": "trainer-modekeeper-knobs", "kind": "ConfigMap",
         "patch": cm_patch, "takes_effect": "live", "restart_required": false},
        {"namespace": "ml", "name": "ddp", "kind": "PyTorchJob", "patch": ddp_patch,
         "takes_effect": "rollout"}]});

    let sim = seeded(false);
    let case = Case::new(&sim, "t0");
    let run = case.verify(&plan, &[]);
    assert_eq!(run.report()["ok"], true, "{:#}", run.report());
    for (i, resource, name, patch) in [
        (0, "configmap", "trainer-modekeeper-knobs", &cm_patch),
        (1, "pytorchjob", "ddp", &ddp_patch),
    ] {
        let it = run.item(i).clone();
        let (code, out, err) = kubectl(
            &kc,
            &case,
            &["-n", "ml", "get", resource, name, "-o", "json"],
        );
        assert_eq!(code, 0, "{err}");
        let live: Value = serde_json::from_str(&out).unwrap();
        assert_eq!(live["metadata"]["uid"], it["uid"], "{resource}");
        assert_eq!(
            live["metadata"]["resourceVersion"], it["resource_version"],
            "{resource}"
        );
        for verb in ["get", "patch"] {
            let (code, out, _) = kubectl(
                &kc,
                &case,
                &[
                    "auth",
                    "can-i",
                    verb,
                    &format!("{resource}s/{name}"),
                    "-n",
                    "ml",
                ],
            );
            assert_eq!((code, out.trim()), (0, "yes"), "{verb} {resource}");
            assert_eq!(it[format!("can_i_{verb}")], true);
        }
        let (code, out, err) = kubectl(
            &kc,
            &case,
            &[
                "-n",
                "ml",
                "patch",
                &format!("{resource}/{name}"),
                "--type",
                "merge",
                "--dry-run=server",
                "-o",
                "json",
                "-p",
                &patch.to_string(),
            ],
        );
        assert_eq!(code, 0, "{err}");
        let dry: Value = serde_json::from_str(&out).unwrap();
        // Every leaf our dry run changed has the value kubectl's dry run shows.
        for d in it["diff"].as_array().unwrap() {
            let at = dry.pointer(d["path"].as_str().unwrap()).cloned();
            assert_eq!(at.as_ref(), Some(&d["after"]), "{resource}: {d}");
        }
        assert!(!it["diff"].as_array().unwrap().is_empty(), "{resource}");
    }

    // Without the CRD: kubectl does not know the kind, we block with kind_not_served.
    let sim = seeded(true);
    let case = Case::new(&sim, "t0");
    let run = case.verify(&plan, &[]);
    assert_eq!(run.blocker(), ("kind_not_served".into(), json!(1)));
    let (code, _, err) = kubectl(&kc, &case, &["-n", "ml", "get", "pytorchjob", "ddp"]);
    assert_ne!(code, 0);
    assert!(err.contains("doesn't have a resource type"), "{err}");
}
