//! `closed-loop run --knobs-from-cluster` against the kube-sim emulator: the starting knobs come from
//! the workload's pod-template annotations with nothing but reads, the namespace follows -n or the
//! context, and a missing workload or an unreachable server fail the way the exit codes promise.

mod closed_loop_support;

use std::net::TcpListener;

use closed_loop_support::*;
use kube_sim::{KubeSim, Rule, WorkloadSeed};

fn sim() -> KubeSim {
    KubeSim::builder()
        .namespace("ml")
        .workload(
            WorkloadSeed::deployment("ml", "trainer")
                .template_annotation("modekeeper/knob.dataloader_num_workers", "2")
                .template_annotation("modekeeper/knob.concurrency", "6")
                .template_annotation("modekeeper/knob.lr_scale", "0.5")
                // The object's own annotations are not what the trainer reads.
                .annotation("modekeeper/knob.microbatch_size", "64"),
        )
        .token("t0", "alice", [Rule::admin()])
        .start_blocking()
        .unwrap()
}

#[test]
fn starting_knobs_come_from_the_pod_template() {
    let sim = sim();
    let tmp = tempfile::tempdir().unwrap();
    let kc = tmp.path().join("kubeconfig");
    sim.write_kubeconfig(&kc, "t0").unwrap();
    let out = tmp.path().join("out");
    run_ok(
        &trace("straggler"),
        &out,
        &[
            "--knobs-from-cluster",
            "--deployment",
            "trainer",
            "-n",
            "ml",
            "--kubeconfig",
            kc.to_str().unwrap(),
        ],
    );
    let r = json(&out.join("closed_loop_latest.json"));
    assert_eq!(r["knobs_source"], "cluster");
    assert_eq!(r["knobs_before"]["dataloader_num_workers"], 2);
    assert_eq!(r["knobs_before"]["concurrency"], 6);
    assert_eq!(
        r["knobs_before"]["microbatch_size"], 32,
        "baseline: no template annotation"
    );
    assert!(r["knobs_before"].get("lr_scale").is_none());
    assert_eq!(r["knobs_cluster"]["namespace"], "ml");
    assert_eq!(r["target"]["namespace"], "ml");
    assert_eq!(r["target"]["defaulted"], false);
    let warnings = r["warnings"].to_string();
    assert!(warnings.contains("lr_scale"), "{warnings}");
    assert!(warnings.contains("microbatch_size"), "{warnings}");
    let widen = r["proposed"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["knob"] == "dataloader_num_workers")
        .expect("the straggler widens the input pipeline");
    assert_eq!(widen["from"], 2);
    // Only reads reached the server.
    let methods: Vec<String> = sim.requests().iter().map(|q| q.method.clone()).collect();
    assert!(!methods.is_empty());
    assert!(methods.iter().all(|m| m == "GET"), "{methods:?}");
    let plan = json(&out.join("k8s_plan.json"));
    assert_eq!(plan["items"][0]["namespace"], "ml");
}

#[test]
fn a_missing_workload_is_invalid_input_and_an_unreachable_server_is_not() {
    let sim = sim();
    let tmp = tempfile::tempdir().unwrap();
    let kc = tmp.path().join("kubeconfig");
    sim.write_kubeconfig(&kc, "t0").unwrap();
    let out = tmp.path().join("out");
    let o = run(
        &trace("stable"),
        &out,
        &[
            "--knobs-from-cluster",
            "--statefulset",
            "nope",
            "-n",
            "ml",
            "--kubeconfig",
            kc.to_str().unwrap(),
        ],
    );
    assert_eq!(
        o.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(String::from_utf8_lossy(&o.stderr).contains("not found"));
    assert_eq!(listing(&out), ["explain.jsonl"]);

    let o = run(
        &trace("stable"),
        &out,
        &[
            "--knobs-from-cluster",
            "-n",
            "ml",
            "--kubeconfig",
            kc.to_str().unwrap(),
        ],
    );
    // No --deployment: the help's default, Deployment `trainer`, is read (it once said "needs the
    // workload" although the help promised the default).
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let r = json(&out.join("closed_loop_latest.json"));
    assert_eq!(r["knobs_source"], "cluster");
    assert_eq!(r["target"]["name"], "trainer");
    assert_eq!(r["knobs_before"]["concurrency"], 6);

    let port = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let dead = tmp.path().join("dead");
    std::fs::write(
        &dead,
        kube_sim::kubeconfig::render(
            &format!("http://127.0.0.1:{port}"),
            None,
            &kube_sim::KubeconfigOptions::default(),
        ),
    )
    .unwrap();
    let out = tmp.path().join("out-dead");
    let o = run(
        &trace("stable"),
        &out,
        &[
            "--knobs-from-cluster",
            "--deployment",
            "trainer",
            "--kubeconfig",
            dead.to_str().unwrap(),
            "--request-timeout",
            "2s",
        ],
    );
    assert_eq!(
        o.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert_eq!(listing(&out), ["explain.jsonl"]);
}

#[test]
fn the_knobs_configmap_overrides_the_template_and_names_the_plans_configmap() {
    // The workload names its knobs ConfigMap; the ConfigMap holds the hot knob's live value.
    let sim = KubeSim::builder()
        .namespace("ml")
        .workload(
            WorkloadSeed::deployment("ml", "trainer")
                .annotation("modekeeper/knobs-configmap", "trainer-live-knobs")
                .template_annotation("modekeeper/knob.dataloader_num_workers", "2")
                .template_annotation("modekeeper/knob.concurrency", "6"),
        )
        .object(
            kube_sim::ResourceKind::ConfigMap,
            serde_json::json!({"metadata": {"name": "trainer-live-knobs", "namespace": "ml"},
                               "data": {"concurrency": "3", "not-a-knob": "x"}}),
        )
        .token("t0", "alice", [Rule::admin()])
        .start_blocking()
        .unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let kc = tmp.path().join("kubeconfig");
    sim.write_kubeconfig(&kc, "t0").unwrap();
    let out = tmp.path().join("out");
    run_ok(
        &trace("straggler"),
        &out,
        &[
            "--knobs-from-cluster",
            "--deployment",
            "trainer",
            "-n",
            "ml",
            "--kubeconfig",
            kc.to_str().unwrap(),
            "--passport",
            "perf",
        ],
    );
    let r = json(&out.join("closed_loop_latest.json"));
    assert_eq!(r["knobs_before"]["concurrency"], 3, "the ConfigMap wins");
    assert_eq!(r["knobs_before"]["dataloader_num_workers"], 2);
    assert_eq!(r["target"]["knobs_configmap"], "trainer-live-knobs");
    let plan = json(&out.join("k8s_plan.json"));
    for it in plan["items"].as_array().unwrap() {
        if it["kind"] == "ConfigMap" {
            assert_eq!(it["name"], "trainer-live-knobs");
        }
    }
    let methods: Vec<String> = sim.requests().iter().map(|q| q.method.clone()).collect();
    assert!(methods.iter().all(|m| m == "GET"), "{methods:?}");
    assert!(
        sim.requests()
            .iter()
            .any(|q| q.path == "/api/v1/namespaces/ml/configmaps/trainer-live-knobs"),
        "the ConfigMap was read"
    );
}
