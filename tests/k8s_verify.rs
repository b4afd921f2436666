//! `k8s verify` end to end: the built binary against kube-sim (started in-process), one test per
//! outcome, each asserting the blocker, the exit code and what the emulator saw.

mod k8s_common;
mod yaml_support;

use std::time::{Duration, Instant};

use k8s_common::{Case, KNOB, MutatingProxy, closed_port, item, standard};
use kube_sim::{Fault, ResourceKind};
use serde_json::{Value, json};

const DEPLOY: &str = "/apis/apps/v1/namespaces/ml/deployments/trainer";

#[test]
fn ok_plan_reports_versions_permissions_and_a_knob_only_diff() {
    let sim = standard().start_blocking().unwrap();
    let case = Case::new(&sim, "t0");
    let run = case.verify(&json!([item("ml", "trainer", "8")]), &[]);
    let r = run.report();
    assert_eq!(r["schema_version"], "k8s_verify.v1");
    assert_eq!(r["ok"], true, "{r:#}");
    assert_eq!(r["verify_blocker"], Value::Null);
    assert_eq!(r["blockers"], json!([]));
    assert!(r["plan_digest"].as_str().unwrap().starts_with("sha256:"));
    assert_eq!(r["cluster"]["context"], "kube-sim");
    assert_eq!(r["cluster"]["server"], sim.https_url());
    assert_eq!(r["cluster"]["user"], "kube-sim");
    assert_eq!(r["cluster"]["namespace"], "default");
    assert_eq!(r["checks"]["server"]["version"], "v1.32.4+kube-sim");
    assert!(r["finished_at"].as_str().unwrap().ends_with('Z'));

    let live = sim.deployment("ml", "trainer").unwrap();
    let it = run.item(0);
    assert_eq!(it["checked"], true);
    assert_eq!(it["namespace_exists"], true);
    assert_eq!(it["workload_exists"], true);
    assert_eq!(it["uid"], live["metadata"]["uid"]);
    assert_eq!(it["resource_version"], live["metadata"]["resourceVersion"]);
    assert_eq!(it["can_i_get"], true);
    assert_eq!(it["can_i_patch"], true);
    assert_eq!(
        it["dry_run"],
        json!({"attempted": true, "ok": true, "status": 200, "message": null})
    );
    assert_eq!(
        it["diff"],
        json!([{"path": "/spec/template/metadata/annotations/modekeeper~1knob.grad_accum_steps",
                "op": "replace", "before": "4", "after": "8",
                "knob": "grad_accum_steps", "expected": true}])
    );
    assert_eq!(
        it["knobs"],
        json!({"grad_accum_steps": {"current": "4", "planned": "8"}})
    );
    assert_eq!(it["ok"], true);

    // Nothing was stored; the one PATCH was a merge dry run with our field manager and the
    // resourceVersion just read as a precondition.
    assert_eq!(
        sim.template_annotation(ResourceKind::Deployment, "ml", "trainer", KNOB)
            .as_deref(),
        Some("4")
    );
    let patches: Vec<_> = sim
        .requests()
        .into_iter()
        .filter(|q| q.method == "PATCH")
        .collect();
    assert_eq!(patches.len(), 1);
    let p = &patches[0];
    assert_eq!(p.path, DEPLOY);
    assert_eq!(p.query_param("dryRun").as_deref(), Some("All"));
    assert_eq!(p.query_param("fieldManager").as_deref(), Some("modekeeper"));
    assert_eq!(
        p.content_type.as_deref(),
        Some("application/merge-patch+json")
    );
    let body: Value = serde_json::from_str(&p.body).unwrap();
    assert_eq!(
        body["metadata"]["resourceVersion"],
        live["metadata"]["resourceVersion"]
    );
    assert_eq!(
        body["spec"]["template"]["metadata"]["annotations"][KNOB],
        "8"
    );
    // Permissions from one rules review of the namespace (no access review per item), the object
    // from one LIST of the namespace's Deployments (no GET per item).
    assert_eq!(
        sim.count_requests(
            "POST",
            "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews"
        ),
        0
    );
    assert_eq!(
        sim.count_requests(
            "POST",
            "/apis/authorization.k8s.io/v1/selfsubjectrulesreviews"
        ),
        1
    );
    assert_eq!(
        sim.count_requests("GET", "/apis/apps/v1/namespaces/ml/deployments"),
        1
    );
    assert_eq!(sim.count_requests("GET", DEPLOY), 0);

    // Artifacts: timestamped + latest, explain events in order.
    let names: Vec<String> = std::fs::read_dir(case.out())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        names
            .iter()
            .any(|n| n.starts_with("k8s_verify_2") && n.ends_with(".json")),
        "{names:?}"
    );
    assert!(names.contains(&"k8s_verify_latest.json".to_string()));
    let events: Vec<&str> = run
        .explain
        .iter()
        .map(|e| e["event"].as_str().unwrap())
        .collect();
    assert_eq!(
        events,
        [
            "k8s_verify_start",
            "k8s_verify_checked",
            "k8s_verify_report"
        ]
    );
    let rep = &run.events("k8s_verify_report")[0];
    assert_eq!(rep["ok"], true);
    assert_eq!(rep["plan_digest"], r["plan_digest"]);
    assert_eq!(rep["context"], "kube-sim");
    assert!(
        run.stdout
            .starts_with("verify ok: 1 item on context kube-sim"),
        "{}",
        run.stdout
    );
}

#[test]
fn statefulsets_and_json_output() {
    let sim = standard().start_blocking().unwrap();
    let case = Case::new(&sim, "t0");
    let mut sts = item("ml", "db", "3");
    sts["kind"] = json!("StatefulSet");
    let run = case.verify(&json!([sts]), &["-o", "json"]);
    let r = run.report();
    assert_eq!(r["ok"], true, "{r:#}");
    assert_eq!(run.item(0)["kind"], "StatefulSet");
    assert_eq!(
        run.item(0)["knobs"]["grad_accum_steps"],
        json!({"current": "2", "planned": "3"})
    );
    let printed: Value = serde_json::from_str(&run.stdout).expect("-o json prints the report");
    assert_eq!(&printed, r);
    assert_eq!(
        sim.count_requests("PATCH", "/apis/apps/v1/namespaces/ml/statefulsets/db"),
        1
    );
}

#[test]
fn namespace_missing_is_reported_as_such() {
    let sim = standard().start_blocking().unwrap();
    let case = Case::new(&sim, "t0");
    let run = case.verify(&json!([item("gone", "trainer", "8")]), &[]);
    assert_eq!(run.blocker(), ("namespace_missing".into(), json!(0)));
    let it = run.item(0);
    assert_eq!(it["namespace_exists"], false);
    assert_eq!(it["workload_exists"], false);
    assert_eq!(it["dry_run"]["attempted"], false);
    assert_eq!(
        run.report()["verify_blocker"]["detail"],
        "namespace \"gone\" not found"
    );
    assert_eq!(run.report()["ok"], false);
}

#[test]
fn workload_missing_with_every_item_checked_and_blockers_by_index() {
    let sim = standard().start_blocking().unwrap();
    let case = Case::new(&sim, "t0");
    let plan = json!([
        item("ml", "trainer", "8"),
        item("ml", "absent", "8"),
        item("gone", "x", "8"),
    ]);
    let run = case.verify(&plan, &[]);
    // Not fail-fast: all three items were checked; the first blocker by index wins.
    assert_eq!(run.blocker(), ("workload_missing".into(), json!(1)));
    let r = run.report();
    let kinds: Vec<(&str, &Value)> = r["blockers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| (b["kind"].as_str().unwrap(), &b["index"]))
        .collect();
    assert_eq!(
        kinds,
        [
            ("workload_missing", &json!(1)),
            ("namespace_missing", &json!(2))
        ]
    );
    assert_eq!(run.item(0)["ok"], true);
    assert_eq!(run.item(1)["namespace_exists"], true);
    assert_eq!(run.item(1)["workload_exists"], false);
    assert_eq!(
        r["verify_blocker"]["detail"],
        "deployment \"absent\" not found in namespace \"ml\""
    );
    assert_eq!(run.events("k8s_verify_checked").len(), 3);
    assert_eq!(r["namespace"], "mixed");
}

#[test]
fn rbac_denial_has_can_i_false_a_403_and_a_hint() {
    let sim = standard().start_blocking().unwrap();
    let case = Case::new(&sim, "ro");
    let run = case.verify(&json!([item("ml", "trainer", "8")]), &[]);
    assert_eq!(run.blocker(), ("rbac_denied".into(), json!(0)));
    let it = run.item(0);
    assert_eq!(it["can_i_get"], true);
    assert_eq!(it["can_i_patch"], false);
    assert_eq!(it["workload_exists"], true);
    assert_eq!(it["dry_run"]["status"], 403);
    assert_eq!(
        it["dry_run"]["message"],
        "deployments.apps \"trainer\" is forbidden: User \"bob\" cannot patch resource \"deployments\" in API group \"apps\" in the namespace \"ml\""
    );
    let rbac = &run.report()["details"]["rbac"];
    assert_eq!(rbac["user"], "bob");
    assert_eq!(rbac["verb"], "patch");
    assert_eq!(rbac["resource"], "deployments");
    assert_eq!(rbac["api_group"], "apps");
    assert_eq!(rbac["namespace"], "ml");
    assert_eq!(rbac["name"], "trainer");
    assert_eq!(
        rbac["suggested_rule"],
        json!({"apiGroups": ["apps"], "resources": ["deployments"], "verbs": ["patch"],
               "resourceNames": ["trainer"]})
    );
    assert!(
        rbac["hint"]
            .as_str()
            .unwrap()
            .contains("bind it to user \"bob\" with a RoleBinding")
    );
    assert!(
        run.stdout
            .contains("hint    Grant a Role in namespace \"ml\""),
        "{}",
        run.stdout
    );
    assert!(run.stdout.contains(
        "kubectl create rolebinding modekeeper-patch -n ml --role=modekeeper-patch --user=bob"
    ));

    // Granting what the hint says makes the same plan verify.
    sim.set_rules(
        "ro",
        [
            kube_sim::Rule::allow(["get", "list"], "*", ["*"]).in_namespace("ml"),
            kube_sim::Rule::allow(["patch"], "apps", ["deployments"])
                .in_namespace("ml")
                .named(["trainer"]),
        ],
    );
    let run = case.verify(&json!([item("ml", "trainer", "8")]), &[]);
    assert_eq!(run.report()["ok"], true, "{:#}", run.report());
}

#[test]
fn dry_run_rejection_is_dry_run_rejected() {
    let sim = standard()
        .reject_patches(ResourceKind::Deployment, "ml", "trainer")
        .start_blocking()
        .unwrap();
    let case = Case::new(&sim, "t0");
    let run = case.verify(&json!([item("ml", "trainer", "8")]), &[]);
    assert_eq!(run.blocker(), ("dry_run_rejected".into(), json!(0)));
    let it = run.item(0);
    assert_eq!(it["dry_run"]["status"], 422);
    assert!(
        it["dry_run"]["message"]
            .as_str()
            .unwrap()
            .contains("is invalid"),
        "{it:#}"
    );
    assert_eq!(it["errors"][0]["step"], "dry_run");
    assert_eq!(it["errors"][0]["kind"], "invalid");
}

#[test]
fn conflict_when_the_object_changes_during_verify() {
    let sim = standard().start_blocking().unwrap();
    // Hold the dry run long enough for another writer to change the object after our read.
    sim.inject_fault(Fault::delay(DEPLOY, Duration::from_millis(1500)).method("PATCH"));
    let case = Case::new(&sim, "t0");
    let plan = case.write_plan(&json!([item("ml", "trainer", "8")]));
    let child = case
        .command()
        .args(["k8s", "verify", "--plan"])
        .arg(&plan)
        .arg("--out")
        .arg(case.out())
        .arg("--kubeconfig")
        .arg(&case.kubeconfig)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while !sim.requests().iter().any(|r| r.method == "PATCH") {
        assert!(Instant::now() < deadline, "the dry run never arrived");
        std::thread::sleep(Duration::from_millis(10));
    }
    sim.modify(
        ResourceKind::Deployment,
        "ml",
        "trainer",
        "someone-else",
        |d| {
            d["spec"]["replicas"] = json!(3);
        },
    )
    .unwrap();
    let out = child.wait_with_output().unwrap();
    let run = k8s_common::Run::new(out, &case.out());
    assert_eq!(run.blocker(), ("conflict".into(), json!(0)));
    assert_eq!(run.item(0)["dry_run"]["status"], 409);
    assert!(
        run.item(0)["dry_run"]["message"]
            .as_str()
            .unwrap()
            .contains("the object has been modified")
    );
}

#[test]
fn a_hanging_dry_run_is_an_item_timeout() {
    let sim = standard().start_blocking().unwrap();
    sim.inject_fault(Fault::hang(DEPLOY).method("PATCH"));
    let case = Case::new(&sim, "t0");
    let started = Instant::now();
    let run = case.verify(
        &json!([item("ml", "trainer", "8"), item("ml", "db", "3")]),
        &["--request-timeout", "400ms"],
    );
    assert!(started.elapsed() < Duration::from_secs(15));
    assert_eq!(run.blocker(), ("timeout".into(), json!(0)));
    let it = run.item(0);
    assert_eq!(it["dry_run"]["status"], Value::Null);
    assert!(
        it["dry_run"]["message"]
            .as_str()
            .unwrap()
            .ends_with("no answer within 400ms"),
        "{it:#}"
    );
    // The other item is not held up by the hanging one.
    assert_eq!(run.report()["checks"]["items"].as_array().unwrap().len(), 2);
    assert_eq!(run.report()["settings"]["request_timeout_ms"], 400);
}

#[test]
fn a_hanging_server_is_a_cluster_level_timeout() {
    let sim = standard().start_blocking().unwrap();
    sim.inject_fault(Fault::hang("/version"));
    let case = Case::new(&sim, "t0");
    let run = case.verify(
        &json!([item("ml", "trainer", "8")]),
        &["--request-timeout=300ms"],
    );
    assert_eq!(run.blocker(), ("timeout".into(), Value::Null));
    assert_eq!(run.item(0)["checked"], false);
    assert_eq!(run.item(0)["namespace_exists"], Value::Null);
    assert_eq!(sim.count_requests("PATCH", "**"), 0);
}

#[test]
fn a_server_error_is_server_error() {
    let sim = standard().start_blocking().unwrap();
    // The LIST fails too: the item falls back to its own GET, which is what fails decisively.
    sim.inject_fault(
        Fault::status("/apis/apps/v1/namespaces/ml/deployments", 500)
            .method("GET")
            .message("etcd leader changed"),
    );
    sim.inject_fault(
        Fault::status(DEPLOY, 500)
            .method("GET")
            .message("etcd leader changed"),
    );
    let case = Case::new(&sim, "t0");
    let run = case.verify(&json!([item("ml", "trainer", "8")]), &[]);
    assert_eq!(run.blocker(), ("server_error".into(), json!(0)));
    let it = run.item(0);
    assert_eq!(it["workload_exists"], Value::Null);
    assert_eq!(it["errors"][0]["step"], "workload");
    assert_eq!(it["errors"][0]["status"], 500);
    assert!(
        run.report()["verify_blocker"]["detail"]
            .as_str()
            .unwrap()
            .contains("etcd leader changed")
    );
}

#[test]
fn an_unreachable_server_is_cluster_unreachable_not_namespace_missing() {
    let port = closed_port();
    let case = Case::with_server(&format!("https://127.0.0.1:{port}"), Some("t0"));
    let run = case.verify(
        &json!([item("ml", "trainer", "8"), item("ml", "other", "8")]),
        &[],
    );
    assert_eq!(run.blocker(), ("cluster_unreachable".into(), Value::Null));
    let r = run.report();
    assert_eq!(r["ok"], false);
    assert_eq!(r["blockers"].as_array().unwrap().len(), 1);
    assert_eq!(r["cluster"]["server"], format!("https://127.0.0.1:{port}"));
    assert_eq!(r["checks"]["server"]["ok"], false);
    assert_eq!(r["checks"]["server"]["error"]["kind"], "unreachable");
    for i in 0..2 {
        assert_eq!(run.item(i)["checked"], false);
        assert_eq!(run.item(i)["namespace_exists"], Value::Null);
    }
    assert!(
        run.stdout
            .starts_with("verify BLOCKED (cluster_unreachable)"),
        "{}",
        run.stdout
    );
}

#[test]
fn bad_credentials_are_unauthorized() {
    let sim = standard().start_blocking().unwrap();
    let case = Case::new(&sim, "wrong-token");
    let run = case.verify(&json!([item("ml", "trainer", "8")]), &[]);
    assert_eq!(run.blocker(), ("unauthorized".into(), Value::Null));
    assert_eq!(run.report()["checks"]["server"]["error"]["status"], 401);
    assert_eq!(run.item(0)["checked"], false);
}

#[test]
fn an_empty_plan_is_not_ok() {
    let sim = standard().start_blocking().unwrap();
    let case = Case::new(&sim, "t0");
    let run = case.verify(&json!([]), &[]);
    assert_eq!(run.blocker(), ("empty_plan".into(), Value::Null));
    let r = run.report();
    assert_eq!(r["ok"], false);
    assert_eq!(r["plan_items"], 0);
    // The cluster was still probed, so the report says which server it would have been.
    assert_eq!(r["checks"]["server"]["ok"], true);
    assert_eq!(sim.count_requests("PATCH", "**"), 0);

    // Empty and unreachable: the empty plan comes first.
    let case = Case::with_server(&format!("https://127.0.0.1:{}", closed_port()), None);
    let run = case.verify(&json!({"schema_version": "k8s_plan.v1", "items": []}), &[]);
    let kinds: Vec<&str> = run.report()["blockers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["empty_plan", "cluster_unreachable"]);
}

fn inject_sidecar(d: &mut Value) {
    d["spec"]["template"]["spec"]["containers"]
        .as_array_mut()
        .unwrap()
        .push(json!({"name": "istio-proxy", "image": "proxyv2"}));
    d["spec"]["replicas"] = json!(2);
}

#[test]
fn a_dry_run_that_changes_more_than_the_knobs_is_unexpected_change() {
    let sim = standard().start_blocking().unwrap();
    let proxy = MutatingProxy::start(sim.addr(), inject_sidecar);
    let case = Case::with_server(&proxy.url(), Some("t0"));
    let run = case.verify(&json!([item("ml", "trainer", "8")]), &[]);
    assert_eq!(run.blocker(), ("unexpected_change".into(), json!(0)));
    assert_eq!(proxy.mutated.load(std::sync::atomic::Ordering::Relaxed), 1);
    let it = run.item(0);
    assert_eq!(it["dry_run"]["ok"], true);
    let unexpected: Vec<&str> = it["diff"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|d| d["expected"] == false)
        .map(|d| d["path"].as_str().unwrap())
        .collect();
    assert_eq!(
        unexpected,
        [
            "/spec/replicas",
            "/spec/template/spec/containers/1/image",
            "/spec/template/spec/containers/1/name"
        ]
    );
    assert!(
        run.report()["verify_blocker"]["detail"]
            .as_str()
            .unwrap()
            .starts_with(
                "the dry run changes 3 paths besides the planned knob values: /spec/replicas"
            )
    );
    // The knob itself is still an expected change.
    assert!(
        it["diff"]
            .as_array()
            .unwrap()
            .iter()
            .any(|d| d["knob"] == "grad_accum_steps" && d["expected"] == true)
    );
}

#[test]
fn an_invalid_plan_exits_2_with_only_explain() {
    let sim = standard().start_blocking().unwrap();
    let case = Case::new(&sim, "t0");
    let run = case.verify(
        &json!([{"namespace": "ml", "name": "trainer", "patch": {"spec": {"replicas": 3}}}]),
        &[],
    );
    assert_eq!(run.code, 2, "{run:#?}");
    assert!(run.report.is_none());
    let files: Vec<String> = std::fs::read_dir(case.out())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(files, ["explain.jsonl"]);
    let err = &run.events("k8s_verify_error")[0];
    assert_eq!(err["kind"], "invalid_item");
    assert_eq!(err["index"], 0);
    assert_eq!(run.stderr.lines().count(), 1, "{}", run.stderr);
    assert_eq!(
        sim.requests().len(),
        0,
        "an invalid plan never reaches the cluster"
    );
}

#[test]
fn kubeconfig_problems_exit_2_without_a_report() {
    let sim = standard().start_blocking().unwrap();
    let case = Case::new(&sim, "t0");
    let run = case.verify(&json!([item("ml", "trainer", "8")]), &["--context", "prod"]);
    assert_eq!(run.code, 2, "{run:#?}");
    assert!(run.report.is_none());
    assert!(
        run.stderr
            .contains("context \"prod\" not found (contexts: kube-sim)"),
        "{}",
        run.stderr
    );
    let err = &run.events("k8s_verify_error")[0];
    assert_eq!(err["kind"], "kubeconfig");
}

#[test]
fn kubeconfig_lists_merge_and_context_selects() {
    let sim = standard().start_blocking().unwrap();
    let case = Case::new(&sim, "t0");
    // A first file whose current context points at a dead server, named `dead`.
    let dead = case.path().join("dead.yaml");
    let opts = kube_sim::KubeconfigOptions {
        token: Some("t0".into()),
        name: Some("dead".into()),
        ..Default::default()
    };
    std::fs::write(
        &dead,
        kube_sim::kubeconfig::render(&format!("https://127.0.0.1:{}", closed_port()), None, &opts),
    )
    .unwrap();
    let list = format!("{}:{}", dead.display(), case.kubeconfig.display());
    let plan = case.write_plan(&json!([item("ml", "trainer", "8")]));
    let verify = |args: &[&str], env_list: Option<&str>| {
        let mut c = case.command();
        c.args(["k8s", "verify", "--plan"])
            .arg(&plan)
            .arg("--out")
            .arg(case.out())
            .args(args);
        if let Some(l) = env_list {
            c.env("KUBECONFIG", l);
        }
        k8s_common::Run::new(c.output().unwrap(), &case.out())
    };
    // First file wins current-context: the dead cluster.
    let run = verify(&["--kubeconfig", &list], None);
    assert_eq!(run.blocker(), ("cluster_unreachable".into(), Value::Null));
    assert_eq!(run.report()["cluster"]["context"], "dead");
    // --context picks the second file's context.
    let run = verify(
        &["--kubeconfig", &list, "--context", "kube-sim", "-n", "ml"],
        None,
    );
    assert_eq!(run.report()["ok"], true, "{:#}", run.report());
    assert_eq!(run.report()["cluster"]["namespace"], "ml");
    assert_eq!(
        run.report()["cluster"]["source"]["paths"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
    // The same through KUBECONFIG, where a missing file is skipped as kubectl skips it.
    let env_list = format!("{}:{list}", case.path().join("missing.yaml").display());
    let run = verify(&["--context", "kube-sim"], Some(&env_list));
    assert_eq!(run.report()["ok"], true);
    // Through --kubeconfig a missing file is an error.
    let run = verify(&["--kubeconfig", &env_list], None);
    assert_eq!(run.code, 2);
    assert!(
        run.stderr.contains("missing.yaml: no such file"),
        "{}",
        run.stderr
    );
}

#[test]
fn many_items_are_checked_concurrently() {
    let mut b = standard();
    for i in 0..48 {
        b = b.workload(
            kube_sim::WorkloadSeed::deployment("ml", format!("w{i}"))
                .template_annotation(KNOB, "1"),
        );
    }
    let sim = b.start_blocking().unwrap();
    // Every workload read takes 250 ms: serially 48 items would take 12 s, 16 at a time 0.75 s.
    sim.inject_fault(
        Fault::delay(
            "/apis/apps/v1/namespaces/ml/deployments/*",
            Duration::from_millis(250),
        )
        .method("GET"),
    );
    let case = Case::new(&sim, "t0");
    let plan: Vec<Value> = (0..48).map(|i| item("ml", &format!("w{i}"), "2")).collect();
    let run = case.verify(&Value::Array(plan), &["--concurrency", "16"]);
    let r = run.report();
    assert_eq!(r["ok"], true, "{:#}", r["blockers"]);
    let elapsed = r["timings"]["elapsed_ms"].as_u64().unwrap();
    assert!(elapsed < 6000, "48 items took {elapsed} ms");
    assert_eq!(sim.count_requests("PATCH", "**"), 48);
    // In plan order, whatever order the answers came in.
    for i in 0..48 {
        assert_eq!(run.item(i)["name"], format!("w{i}"));
    }
}

/// The plugin's Role in docs/rbac.yaml (the first Role, `modekeeper`), rule by rule.
fn documented_rules() -> Vec<kube_sim::Rule> {
    let docs = yaml_rust2::YamlLoader::load_from_str(include_str!("../docs/rbac.yaml")).unwrap();
    let role = docs
        .iter()
        .map(yaml_support::yaml_to_json)
        .find(|d| d["kind"] == "Role" && d["metadata"]["name"] == "modekeeper")
        .expect("the plugin's Role");
    let strings = |v: &serde_json::Value| -> Vec<String> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|s| s.as_str().unwrap().to_string())
            .collect()
    };
    role["rules"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            let g = strings(&r["apiGroups"]);
            assert_eq!(g.len(), 1, "one group per rule");
            kube_sim::Rule::allow(strings(&r["verbs"]), &g[0], strings(&r["resources"]))
                .in_namespace("ml")
        })
        .collect()
}

#[test]
fn the_documented_role_is_enough_for_verify() {
    let rules = documented_rules();
    assert_eq!(rules.len(), 10, "{rules:?}");
    let sim = standard()
        .object(
            kube_sim::ResourceKind::ConfigMap,
            json!({"metadata": {"name": "trainer-modekeeper-knobs", "namespace": "ml"}}),
        )
        .token("role", "platform-engineer@example.com", rules)
        .start_blocking()
        .unwrap();
    let case = Case::new(&sim, "role");
    let mut sts = item("ml", "db", "3");
    sts["kind"] = json!("StatefulSet");
    // The knobs ConfigMap (hot knobs) is covered too.
    let cm = json!({"namespace": "ml", "name": "trainer-modekeeper-knobs", "kind": "ConfigMap",
                    "patch": {"data": {"concurrency": "6"}}, "takes_effect": "live"});
    let run = case.verify(&json!([item("ml", "trainer", "8"), sts, cm]), &[]);
    let r = run.report();
    assert_eq!(r["ok"], true, "{r:#}");
    for i in 0..3 {
        let it = run.item(i);
        assert_eq!(it["errors"], json!([]), "{it:#}");
        assert_eq!(
            (&it["can_i_get"], &it["can_i_patch"]),
            (&json!(true), &json!(true))
        );
    }
    // And it grants nothing outside its namespace: reading the workload there is refused.
    let run = case.verify(&json!([item("default", "trainer", "8")]), &[]);
    assert_eq!(run.blocker().0, "rbac_denied");
    let rbac = &run.report()["details"]["rbac"];
    assert_eq!(
        (&rbac["verb"], &rbac["namespace"]),
        (&json!("get"), &json!("default"))
    );
}

/// `closed-loop watch --apply` posts Events: the documented Role allows it (a repeat too, which
/// is a patch of the first event's series).
#[test]
fn the_documented_role_lets_the_watch_post_events() {
    use modekeeper::k8s::{Cluster, ClusterApi, ConnectOptions, EventType, WorkloadEvent};
    use modekeeper::plan::{Target, WorkloadKind};
    let sim = standard()
        .token("role", "platform-engineer@example.com", documented_rules())
        .start_blocking()
        .unwrap();
    let case = Case::new(&sim, "role");
    let opts = ConnectOptions::from_flags(
        Some(case.kubeconfig.to_str().unwrap()),
        None,
        None,
        Some(5000),
    );
    let c = Cluster::connect(&opts).unwrap();
    let target = Target::new("ml", "trainer", WorkloadKind::Deployment).unwrap();
    let w = c.block_on(c.api().get_workload(&target)).unwrap().unwrap();
    let rec = c.api().event_recorder(None);
    let ev = WorkloadEvent::new(
        EventType::Normal,
        "KnobsApplied",
        "Apply",
        "grad_accum_steps 4 -> 8",
    );
    c.block_on(rec.publish(&w, &ev)).unwrap();
    c.block_on(rec.publish(&w, &ev)).unwrap();
    assert_eq!(
        sim.list(ResourceKind::Event, Some("ml"))[0]["series"]["count"],
        2
    );
}
