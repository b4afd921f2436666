//! The emulator's HTTP API and test handle, exercised directly (plain HTTP with a bearer
//! token): discovery negotiation, lists, patch edge cases, JSON self-reviews, Status bodies,
//! the request log, faults, the async start, and concurrent load.

mod common;

use std::time::Duration;

use common::{bearer, http, standard};
use kube_sim::{Fault, FaultAction, KubeSim, ResourceKind, Rule, WorkloadSeed};
use serde_json::{Value, json};

const KNOB: &str = "modekeeper/knob.grad_accum_steps";

fn get(sim: &KubeSim, path: &str, accept: &str) -> common::HttpResponse {
    let auth = bearer("t0");
    let mut headers = vec![("Authorization", auth.as_str())];
    if !accept.is_empty() {
        headers.push(("Accept", accept));
    }
    http(sim, "GET", path, &headers, b"")
}

fn patch(sim: &KubeSim, path: &str, content_type: &str, body: &str) -> common::HttpResponse {
    let auth = bearer("t0");
    http(
        sim,
        "PATCH",
        path,
        &[("Authorization", &auth), ("Content-Type", content_type)],
        body.as_bytes(),
    )
}

const TRAINER: &str = "/apis/apps/v1/namespaces/ml/deployments/trainer";

#[test]
fn discovery_is_negotiated_by_accept() {
    let sim = standard().start_blocking().unwrap();
    let legacy = get(&sim, "/apis", "application/json");
    assert_eq!(legacy.status, 200);
    assert_eq!(legacy.json()["kind"], "APIGroupList");
    let names: Vec<String> = legacy.json()["groups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["name"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        names,
        [
            "apps",
            "events.k8s.io",
            "authentication.k8s.io",
            "authorization.k8s.io",
            "batch",
            "coordination.k8s.io",
            "rbac.authorization.k8s.io",
            "kubeflow.org",
            "jobset.x-k8s.io"
        ]
    );
    let jobset = get(&sim, "/apis/jobset.x-k8s.io/v1alpha2", "").json();
    assert_eq!(jobset["groupVersion"], "jobset.x-k8s.io/v1alpha2");
    assert_eq!(jobset["resources"][0]["name"], "jobsets");
    // Without the CRDs their groups are gone from discovery and their paths are 404s.
    let bare = standard().crds_absent(true).start_blocking().unwrap();
    let groups = get(&bare, "/apis", "application/json").json();
    assert!(
        groups["groups"]
            .as_array()
            .unwrap()
            .iter()
            .all(|g| g["name"] != "kubeflow.org" && g["name"] != "jobset.x-k8s.io"),
        "{groups}"
    );
    assert_eq!(get(&bare, "/apis/kubeflow.org/v1", "").status, 404);
    assert_eq!(
        get(
            &bare,
            "/apis/kubeflow.org/v1/namespaces/ml/pytorchjobs/x",
            ""
        )
        .status,
        404
    );
    assert_eq!(get(&bare, "/apis/batch/v1", "").status, 200);
    let aggregated = get(
        &sim,
        "/apis",
        "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,application/json",
    );
    assert_eq!(
        aggregated.header("content-type"),
        Some("application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList")
    );
    assert_eq!(aggregated.json()["kind"], "APIGroupDiscoveryList");
    let v2beta1_only = get(
        &sim,
        "/api",
        "application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList,application/json",
    );
    assert_eq!(v2beta1_only.json()["kind"], "APIVersions");
    assert_eq!(
        v2beta1_only.json()["serverAddressByClientCIDRs"][0]["serverAddress"],
        sim.addr().to_string()
    );
    let apps = get(&sim, "/apis/apps/v1", "").json();
    let deployments = apps["resources"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == "deployments")
        .unwrap()
        .clone();
    assert_eq!(
        deployments["verbs"],
        json!(["get", "list", "patch", "watch"])
    );
    assert_eq!(deployments["shortNames"], json!(["deploy"]));
    // Groups the emulator does not serve are 404s.
    assert_eq!(get(&sim, "/apis/policy/v1", "").status, 404);
    assert_eq!(
        get(
            &sim,
            "/apis/policy/v1/namespaces/ml/poddisruptionbudgets",
            ""
        )
        .status,
        404
    );
    assert_eq!(
        get(&sim, "/apis/batch/v1/namespaces/ml/jobs", "").status,
        200
    );
    assert_eq!(
        get(&sim, "/version", "").json()["gitVersion"],
        "v1.32.4+kube-sim"
    );
    let health = get(&sim, "/healthz", "");
    assert_eq!((health.status, health.text().as_str()), (200, "ok"));
    assert_eq!(
        http(&sim, "GET", "/healthz", &[], b"").status,
        401,
        "anonymous auth is off"
    );
}

#[test]
fn lists_strip_item_types_page_and_filter() {
    let sim = standard()
        .workload(WorkloadSeed::deployment("ml", "eval").replicas(3))
        .workload(WorkloadSeed::deployment("prod", "serve"))
        .start_blocking()
        .unwrap();
    let list = get(
        &sim,
        "/apis/apps/v1/namespaces/ml/deployments",
        "application/json",
    )
    .json();
    assert_eq!(list["kind"], "DeploymentList");
    assert_eq!(list["apiVersion"], "apps/v1");
    assert_eq!(
        list["metadata"]["resourceVersion"],
        sim.resource_version().to_string()
    );
    let items = list["items"].as_array().unwrap();
    assert_eq!(
        items
            .iter()
            .map(|i| i["metadata"]["name"].as_str().unwrap())
            .collect::<Vec<_>>(),
        ["eval", "trainer"]
    );
    assert!(
        items
            .iter()
            .all(|i| i.get("kind").is_none() && i.get("apiVersion").is_none())
    );
    let all = get(&sim, "/apis/apps/v1/deployments", "").json();
    assert_eq!(all["items"].as_array().unwrap().len(), 3);

    let page1 = get(&sim, "/api/v1/pods?limit=2", "").json();
    assert_eq!(page1["items"].as_array().unwrap().len(), 2);
    assert_eq!(page1["metadata"]["remainingItemCount"], 3);
    let token = page1["metadata"]["continue"].as_str().unwrap().to_string();
    let page2 = get(&sim, &format!("/api/v1/pods?limit=2&continue={token}"), "").json();
    let page3 = get(
        &sim,
        &format!(
            "/api/v1/pods?limit=2&continue={}",
            page2["metadata"]["continue"].as_str().unwrap()
        ),
        "",
    )
    .json();
    assert_eq!(page3["items"].as_array().unwrap().len(), 1);
    assert!(page3["metadata"].get("continue").is_none());
    assert_eq!(get(&sim, "/api/v1/pods?continue=bogus", "").status, 400);

    let eval = get(
        &sim,
        "/api/v1/namespaces/ml/pods?labelSelector=app%3Deval",
        "",
    )
    .json();
    assert_eq!(eval["items"].as_array().unwrap().len(), 3);
    let not_eval = get(
        &sim,
        "/api/v1/namespaces/ml/pods?labelSelector=app%21%3Deval",
        "",
    )
    .json();
    assert_eq!(not_eval["items"].as_array().unwrap().len(), 1);
    let pod = sim.pod_names(ResourceKind::Deployment, "ml", "trainer")[0].clone();
    let by_name = get(
        &sim,
        &format!("/api/v1/pods?fieldSelector=metadata.name%3D{pod}"),
        "",
    )
    .json();
    assert_eq!(by_name["items"][0]["metadata"]["name"], pod.as_str());
    assert_eq!(
        get(&sim, "/api/v1/pods?labelSelector=a%20in%20b", "").status,
        400
    );

    let table = get(
        &sim,
        "/api/v1/namespaces?includeObject=Object",
        "application/json;as=Table;v=v1;g=meta.k8s.io,application/json",
    )
    .json();
    assert_eq!(table["kind"], "Table");
    assert_eq!(table["rows"][0]["object"]["kind"], "Namespace");
    assert_eq!(table["columnDefinitions"][1]["name"], "Status");
    assert_eq!(
        get(&sim, "/api/v1/pods", "application/vnd.kubernetes.protobuf").status,
        406
    );

    // A change between pages: the next page would be an offset into another list (an object
    // skipped, and a watch from the last page's version would never bring it back); the
    // apiserver serves one snapshot or, once it cannot, 410 Expired. So does the sim.
    let page1 = get(&sim, "/api/v1/pods?limit=2", "").json();
    let first = &page1["items"][0]["metadata"];
    assert!(sim.delete(
        ResourceKind::Pod,
        first["namespace"].as_str().unwrap(),
        first["name"].as_str().unwrap()
    ));
    let token = page1["metadata"]["continue"].as_str().unwrap();
    let stale = get(&sim, &format!("/api/v1/pods?limit=2&continue={token}"), "");
    assert_eq!(
        stale.status,
        410,
        "{}",
        String::from_utf8_lossy(&stale.body)
    );
    assert_eq!(stale.json()["reason"], "Expired");
}

#[test]
fn status_bodies_match_the_apiserver() {
    let sim = standard().start_blocking().unwrap();
    let nf = get(&sim, "/apis/apps/v1/namespaces/ml/deployments/nope", "");
    assert_eq!(nf.status, 404);
    assert_eq!(
        nf.json(),
        json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
               "message": "deployments.apps \"nope\" not found", "reason": "NotFound",
               "details": {"name": "nope", "group": "apps", "kind": "deployments"}, "code": 404})
    );
    let unauth = http(
        &sim,
        "GET",
        "/api/v1/namespaces",
        &[("Authorization", "Bearer nope")],
        b"",
    );
    assert_eq!(
        unauth.json(),
        json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
               "message": "Unauthorized", "reason": "Unauthorized", "code": 401})
    );
    let ro = bearer("ro");
    let forbidden = http(
        &sim,
        "PATCH",
        TRAINER,
        &[
            ("Authorization", &ro),
            ("Content-Type", "application/merge-patch+json"),
        ],
        b"{}",
    );
    assert_eq!(
        forbidden.json()["details"],
        json!({"name": "trainer", "group": "apps", "kind": "deployments"})
    );
    assert_eq!(forbidden.json()["reason"], "Forbidden");

    sim.inject_fault(
        Fault::new(
            "/api/v1/namespaces",
            FaultAction::Status {
                code: 429,
                message: "slow down".into(),
                retry_after_seconds: Some(2),
            },
        )
        .times(1),
    );
    let throttled = get(&sim, "/api/v1/namespaces", "");
    assert_eq!(throttled.status, 429);
    assert_eq!(throttled.header("retry-after"), Some("2"));
    assert_eq!(throttled.json()["reason"], "TooManyRequests");
    assert_eq!(throttled.json()["details"]["retryAfterSeconds"], 2);
    assert_eq!(
        get(&sim, "/api/v1/namespaces", "").status,
        200,
        "times(1) fired once"
    );
    sim.inject_fault(Fault::status("**", 500).nth(1));
    let internal = get(&sim, "/version", "").json();
    assert_eq!(
        internal["message"],
        "Internal error occurred: injected fault"
    );
    assert_eq!(
        internal["details"]["causes"],
        json!([{"message": "injected fault"}])
    );
}

#[test]
fn patch_edge_cases() {
    let sim = standard().start_blocking().unwrap();
    let bad_type = patch(&sim, TRAINER, "application/json", "{}");
    assert_eq!(
        (bad_type.status, bad_type.json()["reason"].as_str()),
        (415, Some("UnsupportedMediaType"))
    );
    let bad_json = patch(&sim, TRAINER, "application/merge-patch+json", "{nope");
    assert_eq!(bad_json.status, 400);
    let forced = patch(
        &sim,
        &format!("{TRAINER}?force=true"),
        "application/merge-patch+json",
        "{}",
    );
    assert_eq!(forced.status, 422);
    assert_eq!(
        forced.json()["message"],
        "PatchOptions.meta.k8s.io \"\" is invalid: force: Forbidden: may not be specified for non-apply patch"
    );
    let apply = |path: &str, body: Value| {
        patch(
            &sim,
            path,
            "application/apply-patch+yaml",
            &body.to_string(),
        )
    };
    let config = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "trainer"},
                        "spec": {"template": {"metadata": {"annotations": {KNOB: "4"}}}}});
    assert_eq!(
        apply(TRAINER, config.clone()).status,
        422,
        "fieldManager is required"
    );
    let shared = apply(&format!("{TRAINER}?fieldManager=mk"), config);
    assert_eq!(
        shared.status, 200,
        "same value: shared ownership, no conflict"
    );
    let wrong_kind = apply(
        &format!("{TRAINER}?fieldManager=mk"),
        json!({"apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": {"name": "trainer"}}),
    );
    assert_eq!(wrong_kind.status, 400);
    let new = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "fresh"},
        "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "fresh"}},
                 "template": {"metadata": {"labels": {"app": "fresh"}}, "spec": {"containers": [{"name": "c", "image": "i"}]}}}});
    let created = apply(
        "/apis/apps/v1/namespaces/ml/deployments/fresh?fieldManager=mk",
        new.clone(),
    );
    assert_eq!(created.status, 201);
    assert_eq!(
        sim.pod_names(ResourceKind::Deployment, "ml", "fresh").len(),
        2
    );
    assert_eq!(
        apply(
            "/apis/apps/v1/namespaces/ml/deployments/fresh?fieldManager=mk",
            new
        )
        .status,
        200
    );
    let json_fail = patch(
        &sim,
        TRAINER,
        "application/json-patch+json",
        r#"[{"op":"test","path":"/spec/replicas","value":9}]"#,
    );
    assert_eq!(json_fail.status, 422);
    assert_eq!(
        json_fail.json()["message"],
        "the server rejected our request due to an error in our request"
    );
    let status_get = get(&sim, &format!("{TRAINER}/status"), "");
    assert_eq!(status_get.json()["status"]["observedGeneration"], 1);
    assert_eq!(get(&sim, &format!("{TRAINER}/scale"), "").status, 404);
}

#[test]
fn json_self_subject_access_reviews() {
    let sim = standard().start_blocking().unwrap();
    let review = |token: &str, attrs: Value| {
        let body = json!({"apiVersion": "authorization.k8s.io/v1", "kind": "SelfSubjectAccessReview", "spec": attrs}).to_string();
        let auth = bearer(token);
        http(
            &sim,
            "POST",
            "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews",
            &[
                ("Authorization", &auth),
                ("Content-Type", "application/json"),
            ],
            body.as_bytes(),
        )
    };
    let patch_ml = json!({"resourceAttributes": {"namespace": "ml", "verb": "patch", "group": "apps", "resource": "deployments", "name": "trainer"}});
    let yes = review("t0", patch_ml.clone());
    assert_eq!(yes.status, 201);
    assert_eq!(yes.json()["status"]["allowed"], true);
    assert_eq!(yes.json()["spec"], patch_ml);
    assert_eq!(
        review("ro", patch_ml.clone()).json()["status"],
        json!({"allowed": false})
    );
    assert_eq!(
        review(
            "ro",
            json!({"nonResourceAttributes": {"path": "/api", "verb": "get"}})
        )
        .json()["status"]["allowed"],
        true
    );
    assert_eq!(review("ro", json!({})).status, 422);
    assert_eq!(review("nope", patch_ml).status, 401);
    let rules = {
        let auth = bearer("ro");
        http(
            &sim,
            "POST",
            "/apis/authorization.k8s.io/v1/selfsubjectrulesreviews",
            &[("Authorization", &auth)],
            br#"{"spec":{"namespace":"ml"}}"#,
        )
        .json()
    };
    assert!(
        rules["status"]["resourceRules"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["verbs"] == json!(["get", "list"]))
    );
}

/// Impersonation over raw HTTP: the request runs as the impersonated user (the request log says
/// so), a caller without `impersonate` gets the apiserver's 403, and a group without a user is
/// refused.
#[test]
fn impersonated_requests_run_with_the_impersonated_user_s_rules() {
    let sim = standard().start_blocking().unwrap();
    let deployments = "/apis/apps/v1/namespaces/ml/deployments/trainer";
    let as_user = |token: &str, headers: &[(&str, &str)]| {
        let auth = bearer(token);
        let mut all = vec![("Authorization", auth.as_str())];
        all.extend_from_slice(headers);
        http(&sim, "GET", deployments, &all, b"")
    };
    // bob may read deployments in ml: an admin impersonating him may too, and is logged as him.
    assert_eq!(as_user("t0", &[("Impersonate-User", "bob")]).status, 200);
    assert_eq!(sim.requests().last().unwrap().user.as_deref(), Some("bob"));
    // Nobody by that name holds a token: no rules.
    let nobody = as_user("t0", &[("Impersonate-User", "nobody")]);
    assert_eq!(nobody.status, 403);
    assert_eq!(
        nobody.json()["message"],
        "deployments.apps \"trainer\" is forbidden: User \"nobody\" cannot get resource \"deployments\" in API group \"apps\" in the namespace \"ml\""
    );
    // bob may not impersonate.
    let refused = as_user("ro", &[("Impersonate-User", "alice")]);
    assert_eq!(refused.status, 403);
    assert_eq!(
        refused.json()["message"],
        "users \"alice\" is forbidden: User \"bob\" cannot impersonate resource \"users\" in API group \"\" at the cluster scope"
    );
    assert_eq!(sim.requests().last().unwrap().user.as_deref(), Some("bob"));
    assert_eq!(
        as_user("t0", &[("Impersonate-Group", "admins")]).status,
        500
    );
}

#[test]
fn the_request_log_records_what_clients_sent() {
    let sim = standard().start_blocking().unwrap();
    let body = format!(r#"{{"metadata":{{"annotations":{{"{KNOB}":"8"}}}}}}"#);
    assert_eq!(
        patch(
            &sim,
            &format!("{TRAINER}?dryRun=All&fieldManager=mk"),
            "application/merge-patch+json",
            &body
        )
        .status,
        200
    );
    get(&sim, "/api/v1/namespaces", "application/json");
    let log = sim.requests();
    assert_eq!(log.len(), 2);
    let p = &log[0];
    assert_eq!(
        (p.method.as_str(), p.path.as_str(), p.query.as_str()),
        ("PATCH", TRAINER, "dryRun=All&fieldManager=mk")
    );
    assert_eq!(
        p.content_type.as_deref(),
        Some("application/merge-patch+json")
    );
    assert_eq!(
        (p.user.as_deref(), p.status, p.body.as_str()),
        (Some("alice"), 200, body.as_str())
    );
    assert_eq!(p.query_param("fieldManager").as_deref(), Some("mk"));
    assert_eq!(log[1].accept.as_deref(), Some("application/json"));
    assert!(log[0].id < log[1].id);
    assert_eq!(sim.count_requests("GET", "/api/**"), 1);
    assert_eq!(sim.count_requests("*", "**"), 2);
    sim.clear_requests();
    assert!(sim.requests().is_empty());
    assert_eq!(
        sim.annotation(ResourceKind::Deployment, "ml", "trainer", KNOB)
            .as_deref(),
        Some("4"),
        "dry run"
    );
}

#[test]
fn log_options_and_a_cut_stream_over_http() {
    let sim = standard().start_blocking().unwrap();
    let pod = sim.pod_names(ResourceKind::Deployment, "ml", "trainer")[0].clone();
    let path = format!("/api/v1/namespaces/ml/pods/{pod}/log");
    let limited = get(&sim, &format!("{path}?limitBytes=6"), "");
    assert_eq!(limited.text(), "step=1");
    assert_eq!(limited.header("content-type"), Some("text/plain"));
    assert_eq!(get(&sim, &format!("{path}?sinceSeconds=0"), "").status, 422);
    sim.close_log("ml", &pod, "trainer");
    assert_eq!(
        get(&sim, &format!("{path}?follow=true"), "").text(),
        "step=1 loss=2.0\nstep=2 loss=1.9\n",
        "a closed container's follow ends"
    );

    let id = sim.inject_fault(Fault::drop_log_stream("**", 1));
    let mut s = std::net::TcpStream::connect(sim.addr()).unwrap();
    use std::io::{Read, Write};
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer t0\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut raw = vec![];
    let _ = s.read_to_end(&mut raw);
    let text = String::from_utf8_lossy(&raw);
    assert!(
        text.contains("step=1 loss=2.0") && !text.contains("step=2"),
        "{text}"
    );
    assert!(
        !text.ends_with("0\r\n\r\n"),
        "no terminating chunk: the stream was cut"
    );
    assert_eq!(sim.fault_fired(id), 1);
}

#[test]
fn rollouts_and_out_of_band_changes() {
    let sim = standard()
        .rollout_on_template_change(true)
        .start_blocking()
        .unwrap();
    let before = sim.pod_names(ResourceKind::Deployment, "ml", "trainer");
    let body =
        format!(r#"{{"spec":{{"template":{{"metadata":{{"annotations":{{"{KNOB}":"8"}}}}}}}}}}"#);
    assert_eq!(
        patch(
            &sim,
            TRAINER,
            "application/strategic-merge-patch+json",
            &body
        )
        .status,
        200
    );
    let after = sim.pod_names(ResourceKind::Deployment, "ml", "trainer");
    assert_eq!(after.len(), 1);
    assert_ne!(before, after);
    assert_eq!(
        sim.pod("ml", &after[0]).unwrap()["metadata"]["annotations"][KNOB],
        "8"
    );
    assert!(sim.pod("ml", &before[0]).is_none());

    let rv = sim.resource_version();
    let changed = sim
        .modify(ResourceKind::Deployment, "ml", "trainer", "other", |d| {
            d["spec"]["replicas"] = json!(3)
        })
        .unwrap();
    assert_eq!(changed["metadata"]["generation"], 3);
    assert!(sim.resource_version() > rv);
    assert!(sim.delete(ResourceKind::Namespace, "", "ml"));
    assert_eq!(get(&sim, TRAINER, "").status, 404);
    assert!(!sim.namespace_exists("ml"));
}

#[test]
fn seeds_round_trip_through_json() {
    let text = r#"{
        "namespaces": ["ml"],
        "workloads": [{"namespace": "ml", "name": "trainer", "templateAnnotations": {"k": "v"},
                       "logs": {"trainer": ["plain", {"ageSeconds": 30, "text": "old"}, {"ts": "2024-01-01T00:00:00Z", "text": "older"}]}}],
        "tokens": [{"token": "t0", "user": "alice", "rules": [{"verbs": ["get"], "apiGroups": ["apps"], "resources": ["deployments"], "namespaces": ["ml"]}]}],
        "faults": [{"method": "PATCH", "path": "/apis/**", "nth": 2, "action": {"type": "status", "code": 503}}],
        "validation": {"reject": [{"namespace": "ml", "name": "trainer"}]}
    }"#;
    let seed: kube_sim::Seed = serde_json::from_str(text).unwrap();
    assert_eq!(seed.workloads[0].kind, ResourceKind::Deployment);
    assert_eq!(
        seed.tokens[0].rules[0],
        Rule::allow(["get"], "apps", ["deployments"]).in_namespace("ml")
    );
    let again: kube_sim::Seed =
        serde_json::from_str(&serde_json::to_string(&seed).unwrap()).unwrap();
    assert_eq!(again, seed);
    let sim = KubeSim::builder().seed(seed).start_blocking().unwrap();
    let pod = sim.pod_names(ResourceKind::Deployment, "ml", "trainer")[0].clone();
    assert_eq!(
        sim.log_lines("ml", &pod, "trainer"),
        ["older", "old", "plain"],
        "sorted by time"
    );
    assert!(serde_json::from_str::<kube_sim::Seed>(r#"{"namespace": ["typo"]}"#).is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn async_start_serves_on_the_callers_runtime() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let sim = standard().start().await.unwrap();
    let mut s = tokio::net::TcpStream::connect(sim.addr()).await.unwrap();
    s.write_all(b"GET /api/v1/namespaces/ml HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer t0\r\nConnection: close\r\n\r\n").await.unwrap();
    let mut raw = String::new();
    s.read_to_string(&mut raw).await.unwrap();
    assert!(raw.starts_with("HTTP/1.1 200 OK"), "{raw}");
    assert!(raw.contains(r#""kind":"Namespace""#));
    let addr = sim.addr();
    drop(sim);
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "dropping the handle stops the server"
    );
}

#[test]
fn concurrent_patches_of_many_objects() {
    let mut builder = KubeSim::builder().token("t0", "alice", [Rule::admin()]);
    for i in 0..200 {
        builder = builder.workload(
            WorkloadSeed::deployment("bench", format!("job-{i:03}")).template_annotation(KNOB, "1"),
        );
    }
    let sim = builder.start_blocking().unwrap();
    let started = std::time::Instant::now();
    std::thread::scope(|scope| {
        for t in 0..8 {
            let sim = &sim;
            scope.spawn(move || {
                for i in (t..200).step_by(8) {
                    let path = format!("/apis/apps/v1/namespaces/bench/deployments/job-{i:03}");
                    let body = format!(r#"{{"spec":{{"template":{{"metadata":{{"annotations":{{"{KNOB}":"{i}"}}}}}}}}}}"#);
                    let dry = patch(sim, &format!("{path}?dryRun=All"), "application/merge-patch+json", &body);
                    assert_eq!(dry.status, 200);
                    assert_eq!(patch(sim, &path, "application/merge-patch+json", &body).status, 200);
                }
            });
        }
    });
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "{:?}",
        started.elapsed()
    );
    let mut rvs: Vec<u64> = (0..200)
        .map(|i| {
            let name = format!("job-{i:03}");
            assert_eq!(
                sim.template_annotation(ResourceKind::Deployment, "bench", &name, KNOB),
                Some(i.to_string())
            );
            sim.object_resource_version(ResourceKind::Deployment, "bench", &name)
                .unwrap()
        })
        .collect();
    rvs.sort();
    rvs.dedup();
    assert_eq!(
        rvs.len(),
        200,
        "every stored change got its own resourceVersion"
    );
    assert_eq!(
        sim.count_requests("PATCH", "/apis/apps/v1/namespaces/bench/deployments/*"),
        400
    );
}

#[test]
fn the_readme_seed_example_is_valid() {
    let readme = include_str!("../README.md");
    let section = &readme[readme.find("## Seed format").expect("seed section")..];
    let start = section.find("```json\n").expect("json block") + "```json\n".len();
    let end = start + section[start..].find("```").unwrap();
    let seed: kube_sim::Seed =
        serde_json::from_str(&section[start..end]).expect("README seed parses");
    assert_eq!(seed.faults.len(), 5);
    assert_eq!(seed.workloads[1].kind, ResourceKind::StatefulSet);
    let sim = KubeSim::builder()
        .seed(seed)
        .start_blocking()
        .expect("README seed starts");
    assert_eq!(
        sim.pod_names(ResourceKind::StatefulSet, "ml", "db"),
        ["db-0"]
    );
    assert!(sim.namespace_exists("prod"));
    let pod = sim.pod_names(ResourceKind::Deployment, "ml", "trainer")[0].clone();
    assert_eq!(sim.log_lines("ml", &pod, "trainer").len(), 3);
}

fn events(resp: &common::HttpResponse) -> Vec<(String, Value)> {
    resp.text()
        .lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l).unwrap();
            (v["type"].as_str().unwrap().to_string(), v["object"].clone())
        })
        .collect()
}

#[test]
fn watches_start_with_the_current_state_and_stream_changes() {
    let sim = standard()
        .workload(WorkloadSeed::deployment("ml", "eval"))
        .start_blocking()
        .unwrap();
    let started = std::time::Instant::now();
    let initial = get(
        &sim,
        "/apis/apps/v1/namespaces/ml/deployments?watch=true&timeoutSeconds=1",
        "",
    );
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "ends at timeoutSeconds"
    );
    let initial = events(&initial);
    assert_eq!(
        initial
            .iter()
            .map(|(t, o)| (t.as_str(), o["metadata"]["name"].as_str().unwrap()))
            .collect::<Vec<_>>(),
        [("ADDED", "eval"), ("ADDED", "trainer")]
    );
    assert_eq!(
        initial[0].1["kind"], "Deployment",
        "watch objects carry their type"
    );

    let rv = sim.resource_version();
    let body = format!(r#"{{"metadata":{{"annotations":{{"{KNOB}":"8"}}}}}}"#);
    std::thread::scope(|s| {
        let watcher = s.spawn(|| get(&sim, &format!("/apis/apps/v1/namespaces/ml/deployments?watch=true&resourceVersion={rv}&fieldSelector=metadata.name%3Dtrainer&timeoutSeconds=2"), ""));
        std::thread::sleep(Duration::from_millis(300));
        assert_eq!(
            patch(&sim, TRAINER, "application/merge-patch+json", &body).status,
            200
        );
        sim.modify(ResourceKind::Deployment, "ml", "eval", "other", |d| {
            d["metadata"]["labels"]["x"] = json!("y")
        });
        let seen = events(&watcher.join().unwrap());
        assert_eq!(seen.len(), 1, "{seen:?}");
        assert_eq!(seen[0].0, "MODIFIED");
        assert_eq!(seen[0].1["metadata"]["annotations"][KNOB], "8");
    });
    let replay = events(&get(
        &sim,
        &format!("/apis/apps/v1/deployments?watch=true&resourceVersion={rv}&timeoutSeconds=0"),
        "",
    ));
    assert_eq!(
        replay.len(),
        2,
        "changes after {rv} are replayed: {replay:?}"
    );

    let pod = sim.pod_names(ResourceKind::Deployment, "ml", "eval")[0].clone();
    let rv = sim.resource_version();
    sim.delete(ResourceKind::Pod, "ml", &pod);
    let deleted = events(&get(
        &sim,
        &format!("/api/v1/namespaces/ml/pods?watch=1&resourceVersion={rv}&timeoutSeconds=0"),
        "",
    ));
    assert_eq!(deleted.len(), 1);
    assert_eq!(
        (
            deleted[0].0.as_str(),
            deleted[0].1["metadata"]["name"].as_str()
        ),
        ("DELETED", Some(pod.as_str()))
    );
}

#[test]
fn watching_from_a_compacted_resource_version_is_410() {
    let sim = standard().start_blocking().unwrap();
    let rv = sim.resource_version();
    for i in 0..kube_sim::store::EVENT_HISTORY + 1 {
        sim.modify(ResourceKind::Namespace, "", "ml", "loop", |n| {
            n["metadata"]["labels"]["i"] = json!(i.to_string())
        });
    }
    let gone = events(&get(
        &sim,
        &format!("/api/v1/namespaces?watch=true&resourceVersion={rv}"),
        "",
    ));
    assert_eq!(gone.len(), 1);
    assert_eq!(gone[0].0, "ERROR");
    assert_eq!(
        (gone[0].1["code"].as_u64(), gone[0].1["reason"].as_str()),
        (Some(410), Some("Expired"))
    );
    assert!(
        gone[0].1["message"]
            .as_str()
            .unwrap()
            .starts_with(&format!("too old resource version: {rv} ("))
    );
}

#[tokio::test]
async fn start_blocking_works_inside_a_runtime_and_objects_can_be_added_later() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let sim = standard().start_blocking().unwrap();
    let pods = sim
        .add_workload(
            WorkloadSeed::deployment("late", "job")
                .replicas(2)
                .log("trainer", "hello"),
        )
        .unwrap();
    assert_eq!(pods.len(), 2);
    assert!(
        sim.add_workload(WorkloadSeed::deployment("late", "job"))
            .is_err(),
        "duplicates are refused"
    );
    sim.add_pod(kube_sim::PodSeed::new("late", "solo").log("trainer", "solo line"))
        .unwrap();
    assert!(sim.add_pod(kube_sim::PodSeed::new("late", "solo")).is_err());
    let mut s = tokio::net::TcpStream::connect(sim.addr()).await.unwrap();
    let req = format!(
        "GET /api/v1/namespaces/late/pods/{}/log HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer t0\r\nConnection: close\r\n\r\n",
        pods[1]
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut raw = String::new();
    s.read_to_string(&mut raw).await.unwrap();
    assert!(
        raw.starts_with("HTTP/1.1 200") && raw.contains("hello\n"),
        "{raw}"
    );
    assert_eq!(sim.log_lines("late", "solo", "trainer"), ["solo line"]);
    drop(sim); // dropping the handle inside a runtime must not panic
}

#[test]
fn a_restart_ends_follow_streams() {
    let sim = standard().start_blocking().unwrap();
    let pod = sim.pod_names(ResourceKind::Deployment, "ml", "trainer")[0].clone();
    std::thread::scope(|s| {
        let follower = s.spawn(|| {
            get(
                &sim,
                &format!("/api/v1/namespaces/ml/pods/{pod}/log?follow=true"),
                "",
            )
        });
        // Wait until the server has answered the follow request (its headers are out).
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while !sim
            .requests()
            .iter()
            .any(|r| r.path.ends_with("/log") && r.status == 200)
        {
            assert!(
                std::time::Instant::now() < deadline,
                "the follow request never arrived"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        sim.append_log("ml", &pod, "trainer", "before restart");
        std::thread::sleep(Duration::from_millis(100));
        assert_eq!(sim.restart_container("ml", &pod, "trainer"), Some(1));
        sim.append_logs("ml", &pod, "trainer", ["new 1", "new 2", "new 3", "new 4"]);
        let text = follower.join().unwrap().text();
        assert_eq!(text, "step=1 loss=2.0\nstep=2 loss=1.9\nbefore restart\n");
    });
    let previous = get(
        &sim,
        &format!("/api/v1/namespaces/ml/pods/{pod}/log?previous=true"),
        "",
    )
    .text();
    assert_eq!(
        previous,
        "step=1 loss=2.0\nstep=2 loss=1.9\nbefore restart\n"
    );
}

fn send(
    sim: &KubeSim,
    method: &str,
    path: &str,
    content_type: &str,
    body: &Value,
) -> common::HttpResponse {
    let auth = bearer("t0");
    http(
        sim,
        method,
        path,
        &[("Authorization", &auth), ("Content-Type", content_type)],
        body.to_string().as_bytes(),
    )
}

const LEASES: &str = "/apis/coordination.k8s.io/v1/namespaces/ml/leases";

#[test]
fn leases_are_created_updated_and_guarded_by_resource_version() {
    let sim = standard().start_blocking().unwrap();
    let lease = json!({
        "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
        "metadata": {"name": "modekeeper"},
        "spec": {"holderIdentity": "a", "leaseDurationSeconds": 15, "leaseTransitions": 0},
    });
    let created = send(&sim, "POST", LEASES, "application/json", &lease);
    assert_eq!(created.status, 201, "{}", created.text());
    let rv = created.json()["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(created.json()["metadata"]["uid"].is_string());
    // A second create of the same name is AlreadyExists.
    let again = send(&sim, "POST", LEASES, "application/json", &lease);
    assert_eq!(
        (again.status, again.json()["reason"].as_str()),
        (409, Some("AlreadyExists"))
    );

    // Two contenders update from the same resourceVersion: exactly one wins.
    let path = format!("{LEASES}/modekeeper");
    let mut b = created.json();
    b["spec"]["holderIdentity"] = json!("b");
    let mut c = created.json();
    c["spec"]["holderIdentity"] = json!("c");
    let first = send(&sim, "PUT", &path, "application/json", &b);
    assert_eq!(first.status, 200, "{}", first.text());
    assert_ne!(first.json()["metadata"]["resourceVersion"], json!(rv));
    let second = send(&sim, "PUT", &path, "application/json", &c);
    assert_eq!(
        (second.status, second.json()["reason"].as_str()),
        (409, Some("Conflict"))
    );
    assert!(second.json()["message"].as_str().unwrap().starts_with(
        "Operation cannot be fulfilled on leases.coordination.k8s.io \"modekeeper\": the object has been modified"
    ));
    assert_eq!(get(&sim, &path, "").json()["spec"]["holderIdentity"], "b");
    // A merge patch carrying a stale resourceVersion is a conflict too; without one it applies.
    let stale = json!({"metadata": {"resourceVersion": rv}, "spec": {"holderIdentity": "d"}});
    assert_eq!(
        send(&sim, "PATCH", &path, "application/merge-patch+json", &stale).status,
        409
    );
    let fresh = json!({"spec": {"holderIdentity": "d"}});
    let patched = send(&sim, "PATCH", &path, "application/merge-patch+json", &fresh);
    assert_eq!(patched.json()["spec"]["holderIdentity"], "d");
    assert_eq!(
        patched.json()["metadata"]["uid"],
        created.json()["metadata"]["uid"]
    );
    assert!(patched.json()["metadata"].get("generation").is_none());
    // Validation and missing objects.
    let bad = json!({"metadata": {"name": "x"}, "spec": {"leaseDurationSeconds": 0}});
    let invalid = send(&sim, "POST", LEASES, "application/json", &bad);
    assert_eq!(invalid.status, 422);
    assert_eq!(
        invalid.json()["message"],
        "Lease.coordination.k8s.io \"x\" is invalid: spec.leaseDurationSeconds: Invalid value: 0: must be greater than 0"
    );
    assert_eq!(
        send(
            &sim,
            "PUT",
            &format!("{LEASES}/nope"),
            "application/json",
            &json!({"metadata": {"name": "nope"}})
        )
        .status,
        404
    );
    let elsewhere = send(
        &sim,
        "POST",
        "/apis/coordination.k8s.io/v1/namespaces/nope/leases",
        "application/json",
        &lease,
    );
    assert_eq!(elsewhere.status, 404);
    let list = get(&sim, "/apis/coordination.k8s.io/v1/leases", "").json();
    assert_eq!(list["kind"], "LeaseList");
    assert_eq!(list["items"].as_array().unwrap().len(), 1);
}

#[test]
fn leases_follow_rbac() {
    let sim = standard().start_blocking().unwrap();
    let lease = json!({"metadata": {"name": "l"}, "spec": {"holderIdentity": "a"}});
    let auth = bearer("ro");
    let denied = http(
        &sim,
        "POST",
        LEASES,
        &[
            ("Authorization", &auth),
            ("Content-Type", "application/json"),
        ],
        lease.to_string().as_bytes(),
    );
    assert_eq!(denied.status, 403);
    assert!(denied.json()["message"].as_str().unwrap().contains("cannot create resource \"leases\" in API group \"coordination.k8s.io\" in the namespace \"ml\""), "{}", denied.text());
}

#[test]
fn events_are_one_resource_in_two_api_versions() {
    let sim = standard().start_blocking().unwrap();
    let v1 = json!({
        "apiVersion": "events.k8s.io/v1", "kind": "Event",
        "metadata": {"name": "trainer.1", "namespace": "ml"},
        "eventTime": "2026-01-01T00:00:00.000000Z",
        "reportingController": "modekeeper", "reportingInstance": "host-1",
        "action": "Apply", "reason": "KnobsApplied", "type": "Normal",
        "note": "grad_accum_steps 4 -> 8",
        "regarding": {"apiVersion": "apps/v1", "kind": "Deployment", "namespace": "ml", "name": "trainer"},
    });
    let created = send(
        &sim,
        "POST",
        "/apis/events.k8s.io/v1/namespaces/ml/events",
        "application/json",
        &v1,
    );
    assert_eq!(created.status, 201, "{}", created.text());
    assert_eq!(created.json()["apiVersion"], "events.k8s.io/v1");
    assert_eq!(created.json()["note"], "grad_accum_steps 4 -> 8");
    // The same object through core/v1.
    let core = get(&sim, "/api/v1/namespaces/ml/events/trainer.1", "").json();
    assert_eq!(core["apiVersion"], "v1");
    assert_eq!(core["message"], "grad_accum_steps 4 -> 8");
    assert_eq!(core["involvedObject"]["name"], "trainer");
    assert_eq!(core["reportingComponent"], "modekeeper");
    // A series update (what kube-rs' Recorder sends for a repeat) is a merge patch.
    let series = json!({"series": {"count": 2, "lastObservedTime": "2026-01-01T00:01:00.000000Z"}});
    let patched = send(
        &sim,
        "PATCH",
        "/apis/events.k8s.io/v1/namespaces/ml/events/trainer.1",
        "application/merge-patch+json",
        &series,
    );
    assert_eq!(patched.status, 200, "{}", patched.text());
    assert_eq!(patched.json()["series"]["count"], 2);
    assert_eq!(patched.json()["note"], "grad_accum_steps 4 -> 8");
    // The Table kubectl prints.
    let table = get(
        &sim,
        "/api/v1/namespaces/ml/events",
        "application/json;as=Table;v=v1;g=meta.k8s.io",
    )
    .json();
    let cells = &table["rows"][0]["cells"];
    assert_eq!(cells[1], "Normal");
    assert_eq!(cells[2], "KnobsApplied");
    assert_eq!(cells[3], "deployment/trainer");
    assert_eq!(cells[6], "grad_accum_steps 4 -> 8");
    assert_eq!(cells[8], 2);
    // events.k8s.io/v1 requires what the new API requires.
    let mut bare = v1.clone();
    bare["metadata"]["name"] = json!("trainer.2");
    bare.as_object_mut().unwrap().remove("action");
    bare["type"] = json!("Bad");
    let invalid = send(
        &sim,
        "POST",
        "/apis/events.k8s.io/v1/namespaces/ml/events",
        "application/json",
        &bare,
    );
    assert_eq!(invalid.status, 422);
    assert_eq!(
        invalid.json()["message"],
        "Event \"trainer.2\" is invalid: [type: Invalid value: \"Bad\": has invalid value, valid values: [Normal Warning], action: Required value]"
    );
    let list = get(&sim, "/apis/events.k8s.io/v1/events", "").json();
    assert_eq!(list["apiVersion"], "events.k8s.io/v1");
    assert_eq!(list["items"][0]["regarding"]["name"], "trainer");
    // Watches speak the version they were asked in.
    let watched = events(&get(
        &sim,
        "/apis/events.k8s.io/v1/namespaces/ml/events?watch=true&timeoutSeconds=0",
        "",
    ));
    assert_eq!(watched.len(), 1);
    assert_eq!(watched[0].1["note"], "grad_accum_steps 4 -> 8");
    assert_eq!(watched[0].1["apiVersion"], "events.k8s.io/v1");
    // generateName: the server picks the name.
    let mut generated = v1.clone();
    generated["metadata"] = json!({"generateName": "trainer."});
    let made = send(
        &sim,
        "POST",
        "/apis/events.k8s.io/v1/namespaces/ml/events",
        "application/json",
        &generated,
    );
    assert_eq!(made.status, 201, "{}", made.text());
    let name = made.json()["metadata"]["name"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        name.starts_with("trainer.") && name.len() > "trainer.".len(),
        "{name}"
    );
}

#[test]
fn selector_watches_see_objects_enter_and_leave_and_get_bookmarks() {
    let sim = standard()
        .bookmark_interval(Duration::from_millis(200))
        .start_blocking()
        .unwrap();
    let rv = sim.resource_version();
    std::thread::scope(|s| {
        let watcher = s.spawn(|| {
            get(&sim, &format!("/apis/apps/v1/deployments?watch=true&resourceVersion={rv}&labelSelector=modekeeper.io%2Fenabled%3Dtrue&allowWatchBookmarks=true&timeoutSeconds=1"), "")
        });
        std::thread::sleep(Duration::from_millis(300));
        sim.modify(ResourceKind::Deployment, "ml", "trainer", "test", |d| {
            d["metadata"]["labels"]["modekeeper.io/enabled"] = json!("true")
        });
        sim.modify(ResourceKind::Deployment, "ml", "trainer", "test", |d| {
            d["metadata"]["labels"]["x"] = json!("y")
        });
        sim.modify(ResourceKind::Deployment, "ml", "trainer", "test", |d| {
            d["metadata"]["labels"]
                .as_object_mut()
                .unwrap()
                .remove("modekeeper.io/enabled");
        });
        let seen = events(&watcher.join().unwrap());
        let changes: Vec<&str> = seen
            .iter()
            .filter(|(t, _)| t != "BOOKMARK")
            .map(|(t, _)| t.as_str())
            .collect();
        assert_eq!(changes, ["ADDED", "MODIFIED", "DELETED"], "{seen:?}");
        // DELETED carries the object as it last matched, at the new resourceVersion.
        let deleted = &seen.iter().find(|(t, _)| t == "DELETED").unwrap().1;
        assert_eq!(
            deleted["metadata"]["labels"]["modekeeper.io/enabled"],
            "true"
        );
        assert_eq!(
            deleted["metadata"]["resourceVersion"],
            sim.deployment("ml", "trainer").unwrap()["metadata"]["resourceVersion"]
        );
        let bookmarks: Vec<&Value> = seen
            .iter()
            .filter(|(t, _)| t == "BOOKMARK")
            .map(|(_, o)| o)
            .collect();
        assert!(
            bookmarks.len() >= 2,
            "periodic and final bookmarks: {seen:?}"
        );
        let last = bookmarks.last().unwrap();
        assert_eq!(last["kind"], "Deployment");
        assert_eq!(
            last["metadata"]["resourceVersion"],
            json!(sim.resource_version().to_string())
        );
        assert_eq!(
            seen.last().unwrap().0,
            "BOOKMARK",
            "the last event before the timeout"
        );
    });
    // Without allowWatchBookmarks: none.
    let plain = events(&get(
        &sim,
        &format!("/apis/apps/v1/deployments?watch=true&resourceVersion={rv}&timeoutSeconds=0"),
        "",
    ));
    assert!(plain.iter().all(|(t, _)| t != "BOOKMARK"), "{plain:?}");
    // A streaming list: ADDED per object, then the initial-events-end bookmark.
    let streamed = events(&get(
        &sim,
        "/api/v1/namespaces/ml/pods?watch=true&sendInitialEvents=true&allowWatchBookmarks=true&resourceVersionMatch=NotOlderThan&timeoutSeconds=0",
        "",
    ));
    assert_eq!(streamed[0].0, "ADDED", "{streamed:?}");
    assert_eq!(streamed[1].0, "BOOKMARK", "{streamed:?}");
    assert_eq!(
        streamed[1].1["metadata"]["annotations"]["k8s.io/initial-events-end"],
        "true"
    );
}
