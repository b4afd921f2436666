//! Workload kinds × actuation, end to end on kube-sim: plans built by the library's hot/cold
//! routing (`build_actuated_plan`, the passport's `actuation`), then `k8s verify`, `k8s apply` and
//! the rollback plan through the built binary. Deployment and StatefulSet (hot knob in the knobs
//! ConfigMap, cold knob on the template), a batch/v1 Job (immutable template: the cold knob lands
//! in the ConfigMap, no 422), a PyTorchJob (Master and Worker templates), a JobSet that is not
//! suspended, a cluster without the CRD (`kind_not_served`), and a ConfigMap changed between
//! verify and apply (stale: blocked, nothing written).

mod apply_support;
mod k8s_common;

use std::path::Path;

use apply_support::*;
use k8s_common::{Case, KNOB, standard};
use kube_sim::{KubeSimBuilder, ResourceKind, WorkloadSeed};
use modekeeper::envelope::Accepted;
use modekeeper::plan::{Plan, Target, WorkloadKind, build_actuated_plan};
use serde_json::{Value, json};

const HOT: &str = "concurrency";

fn change(knob: &str, to: f64) -> Accepted {
    Accepted {
        knob: knob.into(),
        from: 1.0,
        to,
        reason: "test".into(),
        chord: "DRIFT-RETUNE".into(),
        limited_by: None,
        requested: None,
    }
}

/// The plan for `kind/name` in `ml`: concurrency (hot) -> 6, grad_accum_steps (cold) -> 8.
fn plan_for(kind: WorkloadKind, name: &str, roles: &[&str]) -> Plan {
    let roles: Vec<String> = roles.iter().map(|r| r.to_string()).collect();
    build_actuated_plan(
        &Target::new("ml", name, kind).unwrap(),
        &[change(HOT, 6.0), change("grad_accum_steps", 8.0)],
        |k| k == HOT,
        &format!("{name}-modekeeper-knobs"),
        &roles,
    )
    .unwrap()
}

fn knobs_cm(name: &str, data: Value) -> Value {
    json!({"metadata": {"name": format!("{name}-modekeeper-knobs"), "namespace": "ml"}, "data": data})
}

fn pod_template(knob_value: &str) -> Value {
    json!({"metadata": {"annotations": {KNOB: knob_value}},
           "spec": {"containers": [{"name": "trainer", "image": "trainer:1"}], "restartPolicy": "Never"}})
}

fn cluster() -> KubeSimBuilder {
    standard()
        .object(
            ResourceKind::ConfigMap,
            knobs_cm("trainer", json!({HOT: "2"})),
        )
        .object(ResourceKind::ConfigMap, knobs_cm("db", json!({})))
        .object(
            ResourceKind::Job,
            json!({"metadata": {"name": "train", "namespace": "ml"},
                   "spec": {"completions": 2, "parallelism": 2, "completionMode": "Indexed",
                            "template": pod_template("4")}}),
        )
        .object(
            ResourceKind::ConfigMap,
            knobs_cm("train", json!({"grad_accum_steps": "4"})),
        )
        .object(
            ResourceKind::PyTorchJob,
            json!({"metadata": {"name": "ddp", "namespace": "ml"},
                   "spec": {"pytorchReplicaSpecs": {
                       "Master": {"replicas": 1, "template": pod_template("4")},
                       "Worker": {"replicas": 3, "template": pod_template("4")}}}}),
        )
        .object(ResourceKind::ConfigMap, knobs_cm("ddp", json!({})))
        .object(
            ResourceKind::JobSet,
            json!({"metadata": {"name": "js", "namespace": "ml"},
                   "spec": {"suspend": false, "replicatedJobs": [{"name": "workers", "replicas": 2,
                            "template": {"spec": {"template": pod_template("4")}}}]}}),
        )
        .object(ResourceKind::ConfigMap, knobs_cm("js", json!({})))
}

fn cm_data(sim: &kube_sim::KubeSim, name: &str) -> Value {
    sim.get(
        ResourceKind::ConfigMap,
        "ml",
        &format!("{name}-modekeeper-knobs"),
    )
    .unwrap()["data"]
        .clone()
}

struct Flow {
    sim: kube_sim::KubeSim,
    case: Case,
    dev: Dev,
}

impl Flow {
    fn new(b: KubeSimBuilder) -> Flow {
        let sim = b.start_blocking().unwrap();
        let case = Case::new(&sim, "t0");
        Flow {
            sim,
            case,
            dev: Dev::new(),
        }
    }

    /// verify (must be ok) then apply; returns (verify report, apply report, rollback plan path).
    fn verify_apply(&self, plan: &Plan, tag: &str) -> (Value, Value, std::path::PathBuf) {
        let path = write_plan(
            self.case.path(),
            &format!("{tag}.json"),
            &serde_json::from_str(&plan.to_document()).unwrap(),
        );
        let out = self.case.path().join(format!("out-{tag}"));
        let v = verify(&self.case, &out, &path, true);
        let lic = self.dev.good();
        let a = run_apply(&self.case, &out, &path, &lic_args(&self.dev, &lic), &[]);
        assert_eq!(a.code, 0, "{a:#?}");
        let r = a.report().clone();
        let rb = Path::new(r["rollback_plan_path"].as_str().unwrap()).to_path_buf();
        (v, r, rb)
    }

    fn rollback(&self, rb: &Path, tag: &str) {
        let out = self.case.path().join(format!("out-{tag}-rollback"));
        verify(&self.case, &out, rb, true);
        let lic = self.dev.good();
        let b = run_apply(&self.case, &out, rb, &lic_args(&self.dev, &lic), &[]);
        assert_eq!(b.code, 0, "{b:#?}");
    }
}

fn takes_effect(report: &Value, list: &str) -> Vec<(String, String)> {
    let items = if list == "verify" {
        &report["checks"]["items"]
    } else {
        &report["actions"]
    };
    items
        .as_array()
        .unwrap()
        .iter()
        .map(|i| {
            (
                i["kind"].as_str().unwrap().to_string(),
                i["takes_effect"].as_str().unwrap_or("-").to_string(),
            )
        })
        .collect()
}

#[test]
fn deployment_and_statefulset_hot_to_the_configmap_cold_to_the_template_and_back() {
    let f = Flow::new(cluster());
    for (kind, name, rk) in [
        (
            WorkloadKind::Deployment,
            "trainer",
            ResourceKind::Deployment,
        ),
        (WorkloadKind::StatefulSet, "db", ResourceKind::StatefulSet),
    ] {
        let before_cm = cm_data(&f.sim, name);
        let before_tpl = f.sim.template_annotation(rk, "ml", name, KNOB);
        let plan = plan_for(kind, name, &[]);
        let (v, a, rb) = f.verify_apply(&plan, name);
        let want = vec![
            ("ConfigMap".to_string(), "live".to_string()),
            (kind.as_str().to_string(), "rollout".to_string()),
        ];
        assert_eq!(takes_effect(&v, "verify"), want);
        assert_eq!(takes_effect(&a, "apply"), want);
        assert_eq!(v["checks"]["items"][0]["restart_required"], false);
        assert_eq!(v["checks"]["items"][1]["restart_required"], true);
        assert_eq!(cm_data(&f.sim, name)[HOT], "6");
        assert_eq!(
            f.sim.template_annotation(rk, "ml", name, KNOB).as_deref(),
            Some("8")
        );
        // The hot knob is not on the template.
        assert_eq!(
            f.sim
                .template_annotation(rk, "ml", name, "modekeeper/knob.concurrency"),
            None
        );
        let rbv: Value = serde_json::from_slice(&std::fs::read(&rb).unwrap()).unwrap();
        assert_eq!(rbv["schema_version"], "k8s_plan.v2");
        f.rollback(&rb, name);
        assert_eq!(cm_data(&f.sim, name), before_cm, "{name}");
        assert_eq!(f.sim.template_annotation(rk, "ml", name, KNOB), before_tpl);
    }
}

#[test]
fn a_hot_change_does_not_touch_the_pod_template() {
    let f = Flow::new(cluster());
    let before = f.sim.deployment("ml", "trainer").unwrap();
    let plan = build_actuated_plan(
        &Target::new("ml", "trainer", WorkloadKind::Deployment).unwrap(),
        &[change(HOT, 6.0)],
        |k| k == HOT,
        "trainer-modekeeper-knobs",
        &[],
    )
    .unwrap();
    let (_, a, _) = f.verify_apply(&plan, "hot");
    assert_eq!(a["actions"].as_array().unwrap().len(), 1);
    assert_eq!(a["actions"][0]["takes_effect"], "live");
    assert_eq!(a["actions"][0]["restart_required"], false);
    assert_eq!(cm_data(&f.sim, "trainer")[HOT], "6");
    let after = f.sim.deployment("ml", "trainer").unwrap();
    // No rollout: the Deployment is the same object at the same version.
    assert_eq!(after, before);
    let deployment_patches = f
        .sim
        .requests()
        .into_iter()
        .filter(|r| r.method == "PATCH" && r.path.contains("/deployments/"))
        .count();
    assert_eq!(deployment_patches, 0);
}

#[test]
fn a_job_gets_its_cold_knob_through_the_configmap_never_a_422() {
    let f = Flow::new(cluster());
    let job_before = f.sim.get(ResourceKind::Job, "ml", "train").unwrap();
    let plan = plan_for(WorkloadKind::Job, "train", &[]);
    assert_eq!(
        plan.items().len(),
        1,
        "one ConfigMap item, no template patch"
    );
    let (v, a, rb) = f.verify_apply(&plan, "job");
    assert_eq!(
        takes_effect(&v, "verify"),
        [("ConfigMap".to_string(), "next_pod_start".to_string())]
    );
    assert_eq!(a["actions"][0]["restart_required"], true);
    assert_eq!(
        cm_data(&f.sim, "train"),
        json!({HOT: "6", "grad_accum_steps": "8"})
    );
    assert_eq!(
        f.sim.get(ResourceKind::Job, "ml", "train").unwrap(),
        job_before
    );
    assert!(
        f.sim.requests().iter().all(|r| r.status != 422),
        "no request was refused"
    );
    f.rollback(&rb, "job");
    assert_eq!(cm_data(&f.sim, "train"), json!({"grad_accum_steps": "4"}));

    // The emulator refuses a template change like the API server (so a plan that tried would
    // have met a 422), and the plan loader refuses such a plan before anything is sent.
    let o = f
        .case
        .command()
        .args(["k8s", "verify", "--plan"])
        .arg(write_plan(
            f.case.path(),
            "job-template.json",
            &json!([{"namespace": "ml", "name": "train", "kind": "Job",
                     "patch": {"spec": {"template": {"metadata": {"annotations": {KNOB: "8"}}}}}}]),
        ))
        .arg("--out")
        .arg(f.case.path().join("out-bad"))
        .arg("--kubeconfig")
        .arg(&f.case.kubeconfig)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(
        stderr.contains("a Job's pod template cannot be patched"),
        "{stderr}"
    );
}

#[test]
fn a_pytorchjob_gets_its_cold_knob_on_master_and_worker_templates() {
    let f = Flow::new(cluster());
    let plan = plan_for(WorkloadKind::PyTorchJob, "ddp", &["Master", "Worker"]);
    let (v, _, rb) = f.verify_apply(&plan, "ddp");
    assert_eq!(
        takes_effect(&v, "verify"),
        [
            ("ConfigMap".to_string(), "live".to_string()),
            ("PyTorchJob".to_string(), "rollout".to_string())
        ]
    );
    let tpl = |role: &str| {
        f.sim.get(ResourceKind::PyTorchJob, "ml", "ddp").unwrap()["spec"]["pytorchReplicaSpecs"]
            [role]["template"]["metadata"]["annotations"][KNOB]
            .clone()
    };
    assert_eq!((tpl("Master"), tpl("Worker")), (json!("8"), json!("8")));
    assert_eq!(cm_data(&f.sim, "ddp")[HOT], "6");
    f.rollback(&rb, "ddp");
    assert_eq!((tpl("Master"), tpl("Worker")), (json!("4"), json!("4")));
    assert_eq!(cm_data(&f.sim, "ddp"), json!({}));
}

#[test]
fn a_running_jobset_gets_its_knobs_through_the_configmap() {
    let f = Flow::new(cluster());
    let before = f.sim.get(ResourceKind::JobSet, "ml", "js").unwrap();
    let plan = plan_for(WorkloadKind::JobSet, "js", &[]);
    let (v, _, rb) = f.verify_apply(&plan, "js");
    assert_eq!(
        takes_effect(&v, "verify"),
        [("ConfigMap".to_string(), "next_pod_start".to_string())]
    );
    assert_eq!(f.sim.get(ResourceKind::JobSet, "ml", "js").unwrap(), before);
    assert_eq!(
        cm_data(&f.sim, "js"),
        json!({HOT: "6", "grad_accum_steps": "8"})
    );
    f.rollback(&rb, "js");
    assert_eq!(cm_data(&f.sim, "js"), json!({}));
}

#[test]
fn a_cluster_without_the_crd_is_kind_not_served() {
    let sim = cluster().crds_absent(true).start_blocking();
    // The seed still holds the objects; the API does not serve them.
    let sim = sim.unwrap();
    let case = Case::new(&sim, "t0");
    let plan = plan_for(WorkloadKind::PyTorchJob, "ddp", &["Master", "Worker"]);
    let r = case.verify(&serde_json::from_str(&plan.to_document()).unwrap(), &[]);
    let (kind, index) = r.blocker();
    assert_eq!((kind.as_str(), index), ("kind_not_served", json!(1)));
    let detail = r.report()["verify_blocker"]["detail"].as_str().unwrap();
    assert!(
        detail.contains("pytorchjobs.kubeflow.org") && detail.contains("CRD"),
        "{detail}"
    );
    assert_eq!(r.item(1)["kind_served"], false);
    // The ConfigMap item is still checked and fine.
    assert_eq!(r.item(0)["ok"], true);
    // One discovery request for the kind, no GET of the object.
    assert!(
        sim.requests()
            .iter()
            .all(|q| !q.path.contains("/pytorchjobs/"))
    );
}

#[test]
fn a_configmap_changed_between_verify_and_apply_is_stale_and_nothing_is_written() {
    let f = Flow::new(cluster());
    let plan = plan_for(WorkloadKind::Job, "train", &[]);
    let path = write_plan(
        f.case.path(),
        "plan.json",
        &serde_json::from_str(&plan.to_document()).unwrap(),
    );
    let out = f.case.path().join("out");
    verify(&f.case, &out, &path, true);
    f.sim
        .modify(
            ResourceKind::ConfigMap,
            "ml",
            "train-modekeeper-knobs",
            "kubectl-edit",
            |o| o["data"]["grad_accum_steps"] = json!("5"),
        )
        .unwrap();
    let lic = f.dev.good();
    let a = run_apply(&f.case, &out, &path, &lic_args(&f.dev, &lic), &[]);
    assert_eq!(a.blocked(), "verify_stale");
    assert_eq!(writes(&f.sim), 0);
    assert_eq!(cm_data(&f.sim, "train"), json!({"grad_accum_steps": "5"}));
}

#[test]
fn the_emulator_refuses_job_and_running_jobset_template_changes_like_the_api_server() {
    let sim = cluster()
        .workload(WorkloadSeed::deployment("ml", "unused"))
        .start_blocking()
        .unwrap();
    let client = reqwest_like_patch(&sim);
    for (path, body) in [
        (
            "/apis/batch/v1/namespaces/ml/jobs/train",
            json!({"spec": {"template": {"metadata": {"annotations": {KNOB: "8"}}}}}),
        ),
        (
            "/apis/jobset.x-k8s.io/v1alpha2/namespaces/ml/jobsets/js",
            json!({"spec": {"replicatedJobs": [{"name": "workers", "replicas": 2,
                   "template": {"spec": {"template": pod_template("8")}}}]}}),
        ),
    ] {
        let (status, answer) = client(path, &body);
        assert_eq!(status, 422, "{answer}");
        assert!(
            answer["message"]
                .as_str()
                .unwrap()
                .contains("field is immutable"),
            "{answer}"
        );
    }
    // A PyTorchJob's templates are patchable; a ConfigMap's data too.
    let (status, _) = client(
        "/apis/kubeflow.org/v1/namespaces/ml/pytorchjobs/ddp",
        &json!({"spec": {"pytorchReplicaSpecs": {"Worker": {"template": {"metadata": {"annotations": {KNOB: "8"}}}}}}}),
    );
    assert_eq!(status, 200);
}

/// A merge-PATCH sender over plain HTTP (the emulator serves both), as admin.
fn reqwest_like_patch(sim: &kube_sim::KubeSim) -> impl Fn(&str, &Value) -> (u16, Value) + '_ {
    move |path, body| {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(sim.addr()).unwrap();
        let b = body.to_string();
        write!(
            s,
            "PATCH {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer t0\r\nContent-Type: application/merge-patch+json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{b}",
            b.len()
        )
        .unwrap();
        let mut text = String::new();
        s.read_to_string(&mut text).unwrap();
        let status: u16 = text[9..12].parse().unwrap();
        let json_start = text.find("\r\n\r\n").unwrap() + 4;
        let raw = &text[json_start..];
        // Chunked or not: the JSON object is between the first '{' and the last '}'.
        let v = match (raw.find('{'), raw.rfind('}')) {
            (Some(a), Some(z)) => serde_json::from_str(&raw[a..=z]).unwrap_or(Value::Null),
            _ => Value::Null,
        };
        (status, v)
    }
}

#[test]
fn a_pytorchjob_role_the_job_lacks_is_blocked_at_verify() {
    let f = Flow::new(cluster().object(
        ResourceKind::PyTorchJob,
        json!({"metadata": {"name": "solo", "namespace": "ml"},
               "spec": {"pytorchReplicaSpecs": {"Worker": {"replicas": 2, "template": pod_template("4")}}}}),
    ));
    let plan = build_actuated_plan(
        &Target::new("ml", "solo", WorkloadKind::PyTorchJob).unwrap(),
        &[change("grad_accum_steps", 8.0)],
        |_| false,
        "solo-modekeeper-knobs",
        &["Master".into(), "Worker".into()],
    )
    .unwrap();
    let r = f
        .case
        .verify(&serde_json::from_str(&plan.to_document()).unwrap(), &[]);
    let (kind, _) = r.blocker();
    assert_eq!(kind, "unexpected_change");
    assert_eq!(r.item(0)["missing_roles"], json!(["Master"]));
    assert!(
        r.report()["verify_blocker"]["detail"]
            .as_str()
            .unwrap()
            .contains("replica role(s) Master")
    );
}

#[test]
fn the_kill_switch_on_a_job_stops_a_plan_that_only_writes_its_configmap() {
    let f = Flow::new(cluster());
    let plan = plan_for(WorkloadKind::Job, "train", &[]);
    assert_eq!(plan.items()[0].workload().unwrap().name(), "train");
    let path = write_plan(
        f.case.path(),
        "plan.json",
        &serde_json::from_str(&plan.to_document()).unwrap(),
    );
    let out = f.case.path().join("out");
    verify(&f.case, &out, &path, true);
    f.sim
        .modify(ResourceKind::Job, "ml", "train", "kubectl-annotate", |o| {
            o["metadata"]["annotations"]["modekeeper.io/kill-switch"] = json!("on")
        })
        .unwrap();
    let lic = f.dev.good();
    let a = run_apply(&f.case, &out, &path, &lic_args(&f.dev, &lic), &[]);
    assert_eq!(a.blocked(), "kill_switch_active");
    assert!(
        a.report()["block_detail"]
            .as_str()
            .unwrap()
            .contains("job.batch/train"),
        "{:#}",
        a.report()
    );
    assert_eq!(writes(&f.sim), 0);
}
