//! Fidelity: the real `kubectl` (v1.32 on these machines) driven against the emulator through
//! a kubeconfig, asserting exit codes and output. Skipped, with a message, only when kubectl
//! is not installed.

mod common;

use std::process::Stdio;
use std::time::{Duration, Instant};

use common::{Kubectl, Lines, kubectl_or_skip, standard};
use kube_sim::{Fault, KubeSim, ResourceKind, Rule};
use serde_json::Value;

const KNOB: &str = "modekeeper/knob.grad_accum_steps";

fn knob_patch(value: &str) -> String {
    format!(r#"{{"spec":{{"template":{{"metadata":{{"annotations":{{"{KNOB}":"{value}"}}}}}}}}}}"#)
}

macro_rules! setup {
    ($name:expr, $builder:expr, $token:expr) => {{
        let Some(bin) = kubectl_or_skip($name) else {
            return;
        };
        let sim = $builder.start_blocking().expect("start kube-sim");
        let k = Kubectl::new(bin, &sim, $token);
        (sim, k)
    }};
}

#[test]
fn get_namespaces_prints_a_table_and_names() {
    let (_sim, k) = setup!("get_namespaces", standard(), Some("t0"));
    let out = k.run(&["get", "ns"]).ok().stdout;
    let lines: Vec<Vec<&str>> = out
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(lines[0], ["NAME", "STATUS", "AGE"], "{out}");
    assert_eq!(&lines[1][..2], ["default", "Active"]);
    assert_eq!(&lines[2][..2], ["ml", "Active"]);
    assert_eq!(lines.len(), 3);
    assert_eq!(
        k.run(&["get", "ns", "-o", "name"]).ok().stdout,
        "namespace/default\nnamespace/ml\n"
    );
    assert_eq!(
        k.run(&["get", "namespace/ml", "-o", "name"]).ok().stdout,
        "namespace/ml\n"
    );
}

#[test]
fn get_deployment_json_matches_the_store() {
    let (sim, k) = setup!("get_deployment_json", standard(), Some("t0"));
    let out = k
        .run(&["-n", "ml", "get", "deployment", "trainer", "-o", "json"])
        .ok()
        .stdout;
    let got: Value = serde_json::from_str(&out).unwrap();
    let stored = sim.deployment("ml", "trainer").unwrap();
    assert_eq!(got["kind"], "Deployment");
    assert_eq!(got["apiVersion"], "apps/v1");
    assert_eq!(got["metadata"]["uid"], stored["metadata"]["uid"]);
    assert_eq!(
        got["metadata"]["resourceVersion"],
        stored["metadata"]["resourceVersion"]
    );
    assert_eq!(
        got["spec"]["template"]["metadata"]["annotations"][KNOB],
        "4"
    );
    assert_eq!(got["metadata"]["annotations"][KNOB], "4");
    assert_eq!(got["status"]["readyReplicas"], 1);
    assert!(
        got["metadata"].get("managedFields").is_none(),
        "kubectl hides managedFields by default"
    );

    let table = k.run(&["-n", "ml", "get", "deploy"]).ok().stdout;
    let rows: Vec<Vec<&str>> = table
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(rows[0], ["NAME", "READY", "UP-TO-DATE", "AVAILABLE", "AGE"]);
    assert_eq!(&rows[1][..4], ["trainer", "1/1", "1", "1"]);
    let wide = k
        .run(&["-n", "ml", "get", "deploy", "-o", "wide"])
        .ok()
        .stdout;
    assert!(
        wide.contains("ghcr.io/modekeeper/trainer:latest") && wide.contains("app=trainer"),
        "{wide}"
    );
    let pods = k
        .run(&["-n", "ml", "get", "pods", "-l", "app=trainer", "-o", "name"])
        .ok()
        .stdout;
    assert_eq!(
        pods,
        format!(
            "pod/{}\n",
            sim.pod_names(ResourceKind::Deployment, "ml", "trainer")[0]
        )
    );
}

#[test]
fn server_dry_run_patch_leaves_the_object_unchanged() {
    let (sim, k) = setup!("dry_run", standard(), Some("t0"));
    let before = sim.deployment("ml", "trainer").unwrap();
    let run = k
        .run(&[
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
            &knob_patch("8"),
        ])
        .ok();
    let answered: Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(
        answered["spec"]["template"]["metadata"]["annotations"][KNOB],
        "8"
    );
    assert_eq!(
        answered["metadata"]["resourceVersion"],
        before["metadata"]["resourceVersion"]
    );
    assert_eq!(sim.deployment("ml", "trainer").unwrap(), before);
    let named = k
        .run(&[
            "-n",
            "ml",
            "patch",
            "deployment/trainer",
            "--type",
            "merge",
            "--dry-run=server",
            "-o",
            "name",
            "-p",
            &knob_patch("8"),
        ])
        .ok();
    assert_eq!(named.stdout, "deployment.apps/trainer\n");
    assert_eq!(sim.deployment("ml", "trainer").unwrap(), before);
    let patches: Vec<_> = sim
        .requests()
        .into_iter()
        .filter(|r| r.method == "PATCH")
        .collect();
    assert_eq!(patches.len(), 2);
    assert!(
        patches
            .iter()
            .all(|r| r.query_param("dryRun").as_deref() == Some("All"))
    );
    assert_eq!(
        patches[0].content_type.as_deref(),
        Some("application/merge-patch+json")
    );
}

#[test]
fn merge_strategic_and_json_patches_change_the_knob() {
    let (sim, k) = setup!("patches", standard(), Some("t0"));
    let rv0 = sim
        .object_resource_version(ResourceKind::Deployment, "ml", "trainer")
        .unwrap();

    let out = k
        .run(&[
            "-n",
            "ml",
            "patch",
            "deployment/trainer",
            "--type",
            "merge",
            "-p",
            &knob_patch("8"),
        ])
        .ok();
    assert_eq!(out.stdout, "deployment.apps/trainer patched\n");
    assert_eq!(
        sim.template_annotation(ResourceKind::Deployment, "ml", "trainer", KNOB)
            .as_deref(),
        Some("8")
    );
    let rv1 = sim
        .object_resource_version(ResourceKind::Deployment, "ml", "trainer")
        .unwrap();
    assert!(rv1 > rv0);
    assert_eq!(
        sim.deployment("ml", "trainer").unwrap()["metadata"]["generation"],
        2
    );

    let same = k
        .run(&[
            "-n",
            "ml",
            "patch",
            "deployment/trainer",
            "--type",
            "merge",
            "-p",
            &knob_patch("8"),
        ])
        .ok();
    assert_eq!(same.stdout, "deployment.apps/trainer patched (no change)\n");
    assert_eq!(
        sim.object_resource_version(ResourceKind::Deployment, "ml", "trainer"),
        Some(rv1)
    );

    // Strategic is kubectl's default patch type.
    k.run(&[
        "-n",
        "ml",
        "patch",
        "deployment/trainer",
        "-p",
        &knob_patch("16"),
    ])
    .ok();
    assert_eq!(
        sim.template_annotation(ResourceKind::Deployment, "ml", "trainer", KNOB)
            .as_deref(),
        Some("16")
    );
    let json_patch = r#"[{"op":"replace","path":"/spec/template/metadata/annotations/modekeeper~1knob.grad_accum_steps","value":"32"}]"#;
    k.run(&[
        "-n",
        "ml",
        "patch",
        "deployment/trainer",
        "--type",
        "json",
        "-p",
        json_patch,
    ])
    .ok();
    let d = sim.deployment("ml", "trainer").unwrap();
    assert_eq!(d["spec"]["template"]["metadata"]["annotations"][KNOB], "32");
    assert_eq!(
        d["metadata"]["annotations"][KNOB], "4",
        "only the template was patched"
    );
    assert_eq!(d["metadata"]["generation"], 4);
    assert_eq!(d["status"]["observedGeneration"], 4);
    assert_eq!(
        d["spec"]["template"]["spec"]["containers"][0]["name"],
        "trainer"
    );

    let types: Vec<String> = sim
        .requests()
        .into_iter()
        .filter(|r| r.method == "PATCH")
        .map(|r| r.content_type.unwrap_or_default())
        .collect();
    assert_eq!(
        types,
        [
            "application/merge-patch+json",
            "application/merge-patch+json",
            "application/strategic-merge-patch+json",
            "application/json-patch+json"
        ]
    );
    let managers: Vec<&str> = d["metadata"]["managedFields"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["manager"].as_str().unwrap())
        .collect();
    assert!(managers.contains(&"kubectl-patch"), "{managers:?}");
}

#[test]
fn statefulsets_patch_too() {
    let (sim, k) = setup!(
        "statefulsets",
        standard().statefulset("ml", "db", [(KNOB, "1")]),
        Some("t0")
    );
    k.run(&[
        "-n",
        "ml",
        "patch",
        "statefulset/db",
        "--type",
        "merge",
        "-p",
        &knob_patch("2"),
    ])
    .ok();
    assert_eq!(
        sim.template_annotation(ResourceKind::StatefulSet, "ml", "db", KNOB)
            .as_deref(),
        Some("2")
    );
    let out = k
        .run(&[
            "-n",
            "ml",
            "get",
            "sts",
            "db",
            "-o",
            "jsonpath={.spec.template.metadata.annotations}",
        ])
        .ok()
        .stdout;
    assert_eq!(out, format!(r#"{{"{KNOB}":"2"}}"#));
    assert_eq!(
        k.run(&["-n", "ml", "get", "pods", "-l", "app=db", "-o", "name"])
            .ok()
            .stdout,
        "pod/db-0\n"
    );
}

/// `--as` (impersonation): an admin asks with bob's rules; bob may not impersonate anyone, and
/// `auth whoami --as` names the impersonated user and a ServiceAccount's groups.
#[test]
fn auth_can_i_as_another_user_answers_with_its_rules() {
    let (_sim, k) = setup!("can_i_as", standard(), Some("t0"));
    let can_i = |args: &[&str]| {
        let r = k.run(&[&["auth", "can-i"][..], args].concat());
        (r.code, r.stdout)
    };
    assert_eq!(
        can_i(&["patch", "deployments", "-n", "ml"]),
        (0, "yes\n".into())
    );
    assert_eq!(
        can_i(&["patch", "deployments", "-n", "ml", "--as", "bob"]),
        (1, "no\n".into())
    );
    assert_eq!(
        can_i(&["get", "deployments", "-n", "ml", "--as", "bob"]),
        (0, "yes\n".into())
    );
    // A user with no token has no rules.
    assert_eq!(
        can_i(&["get", "deployments", "-n", "ml", "--as", "nobody"]),
        (1, "no\n".into())
    );
    // bob's token may not impersonate: the review itself is refused.
    let r = k.run(&[
        "auth", "can-i", "get", "pods", "-n", "ml", "--token", "ro", "--as", "alice",
    ]);
    assert_ne!(r.code, 0);
    assert!(
        r.stderr.contains(
            "users \"alice\" is forbidden: User \"bob\" cannot impersonate resource \"users\" in API group \"\" at the cluster scope"
        ),
        "{}",
        r.stderr
    );
    let sa = "system:serviceaccount:ops:ctl";
    let whoami = k.run(&["auth", "whoami", "--as", sa, "-o", "json"]).ok();
    let v: Value = serde_json::from_str(&whoami.stdout).unwrap();
    assert_eq!(v["status"]["userInfo"]["username"], sa);
    assert_eq!(
        v["status"]["userInfo"]["groups"],
        serde_json::json!([
            "system:serviceaccounts",
            "system:serviceaccounts:ops",
            "system:authenticated"
        ])
    );
}

#[test]
fn auth_can_i_answers_from_the_rules() {
    let (sim, k) = setup!("can_i", standard(), Some("t0"));
    let yes = k.run(&["auth", "can-i", "patch", "deployments", "-n", "ml"]);
    assert_eq!((yes.code, yes.stdout.as_str()), (0, "yes\n"));
    let bob = k.run(&[
        "auth",
        "can-i",
        "patch",
        "deployments",
        "-n",
        "ml",
        "--token",
        "ro",
    ]);
    assert_eq!((bob.code, bob.stdout.as_str()), (1, "no\n"));
    let bob_get = k.run(&[
        "auth",
        "can-i",
        "get",
        "deployments",
        "-n",
        "ml",
        "--token",
        "ro",
    ]);
    assert_eq!((bob_get.code, bob_get.stdout.as_str()), (0, "yes\n"));

    assert!(sim.set_rules(
        "ro",
        [Rule::allow(["patch"], "apps", ["deployments"]).in_namespace("ml")]
    ));
    assert_eq!(
        k.run(&[
            "auth",
            "can-i",
            "patch",
            "deployments",
            "-n",
            "ml",
            "--token",
            "ro"
        ])
        .stdout,
        "yes\n"
    );
    assert_eq!(
        k.run(&[
            "auth",
            "can-i",
            "patch",
            "deployments",
            "-n",
            "prod",
            "--token",
            "ro"
        ])
        .stdout,
        "no\n"
    );
    assert_eq!(
        k.run(&[
            "auth",
            "can-i",
            "patch",
            "deployments.apps/trainer",
            "-n",
            "ml",
            "--token",
            "ro"
        ])
        .stdout,
        "yes\n"
    );

    let whoami = k
        .run(&["auth", "whoami", "--token", "ro", "-o", "json"])
        .ok();
    let v: Value = serde_json::from_str(&whoami.stdout).unwrap();
    assert_eq!(v["status"]["userInfo"]["username"], "bob");
    let reviews = sim.count_requests(
        "POST",
        "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews",
    );
    assert_eq!(reviews, 6);
}

#[test]
fn logs_of_a_deployment_and_a_pod_with_timestamps() {
    let (sim, k) = setup!("logs", standard(), Some("t0"));
    let out = k.run(&["-n", "ml", "logs", "deployment/trainer"]).ok();
    assert_eq!(out.stdout, "step=1 loss=2.0\nstep=2 loss=1.9\n");
    let pod = sim.pod_names(ResourceKind::Deployment, "ml", "trainer")[0].clone();
    let stamped = k
        .run(&["-n", "ml", "logs", &pod, "--timestamps"])
        .ok()
        .stdout;
    let lines: Vec<&str> = stamped.lines().collect();
    assert_eq!(lines.len(), 2, "{stamped}");
    for (line, text) in lines.iter().zip(["step=1 loss=2.0", "step=2 loss=1.9"]) {
        let (ts, rest) = line.split_once(' ').unwrap();
        assert_eq!(rest, text);
        assert_eq!(ts.len(), "2024-01-01T00:00:00.000000000Z".len(), "{ts}");
        chrono::DateTime::parse_from_rfc3339(ts).unwrap();
    }
    sim.append_log("ml", &pod, "trainer", "step=3 loss=1.8");
    let tail = k
        .run(&[
            "-n",
            "ml",
            "logs",
            &pod,
            "--tail=1",
            "--since=1h",
            "-c",
            "trainer",
        ])
        .ok();
    assert_eq!(tail.stdout, "step=3 loss=1.8\n");
    let log_req = sim
        .requests()
        .into_iter()
        .rfind(|r| r.path.ends_with("/log"))
        .unwrap();
    assert_eq!(log_req.query_param("tailLines").as_deref(), Some("1"));
    assert_eq!(log_req.query_param("sinceSeconds").as_deref(), Some("3600"));
    let bad = k.run(&["-n", "ml", "logs", &pod, "-c", "nope"]).failed();
    assert!(
        bad.stderr
            .contains(&format!("container nope is not valid for pod {pod}")),
        "{}",
        bad.stderr
    );
}

#[test]
fn restarts_show_in_get_pods_and_previous_logs() {
    let (sim, k) = setup!("restarts", standard(), Some("t0"));
    let pod = sim.pod_names(ResourceKind::Deployment, "ml", "trainer")[0].clone();
    let none = k.run(&["-n", "ml", "logs", &pod, "--previous"]).failed();
    assert!(
        none.stderr.contains(&format!(
            "previous terminated container \"trainer\" in pod \"{pod}\" not found"
        )),
        "{}",
        none.stderr
    );
    assert_eq!(sim.restart_container("ml", &pod, "trainer"), Some(1));
    sim.append_log("ml", &pod, "trainer", "after restart");
    let table = k.run(&["-n", "ml", "get", "pods"]).ok().stdout;
    let row: Vec<&str> = table.lines().nth(1).unwrap().split_whitespace().collect();
    assert_eq!(&row[..4], [pod.as_str(), "1/1", "Running", "1"], "{table}");
    assert_eq!(
        k.run(&["-n", "ml", "logs", &pod, "--previous"]).ok().stdout,
        "step=1 loss=2.0\nstep=2 loss=1.9\n"
    );
    assert_eq!(
        k.run(&["-n", "ml", "logs", &pod]).ok().stdout,
        "after restart\n"
    );
    let restarts = k
        .run(&[
            "-n",
            "ml",
            "get",
            "pod",
            &pod,
            "-o",
            "jsonpath={.status.containerStatuses[0].restartCount}",
        ])
        .ok();
    assert_eq!(restarts.stdout, "1");
}

#[test]
fn follow_streams_appended_lines_until_the_container_exits() {
    let (sim, k) = setup!("follow", standard(), Some("t0"));
    let pod = sim.pod_names(ResourceKind::Deployment, "ml", "trainer")[0].clone();
    let mut child = k
        .command(&["-n", "ml", "logs", "-f", "deployment/trainer"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let lines = Lines::new(child.stdout.take().unwrap());
    let wait = Duration::from_secs(20);
    assert_eq!(lines.next(wait).as_deref(), Some("step=1 loss=2.0"));
    assert_eq!(lines.next(wait).as_deref(), Some("step=2 loss=1.9"));
    for i in 3..6 {
        sim.append_log("ml", &pod, "trainer", &format!("step={i}"));
        assert_eq!(lines.next(wait), Some(format!("step={i}")));
    }
    sim.close_log("ml", &pod, "trainer");
    assert_eq!(
        lines.next(wait),
        None,
        "stream ends when the container exits"
    );
    let status = child.wait().unwrap();
    assert!(status.success(), "{status:?}");
    let req = sim
        .requests()
        .into_iter()
        .rfind(|r| r.path.ends_with("/log"))
        .unwrap();
    assert_eq!(req.query_param("follow").as_deref(), Some("true"));
}

#[test]
fn a_dropped_log_stream_ends_kubectl_logs_early() {
    let builder = standard().fault(Fault::drop_log_stream(
        "/api/v1/namespaces/ml/pods/*/log",
        3,
    ));
    let (sim, k) = setup!("dropped_stream", builder, Some("t0"));
    let pod = sim.pod_names(ResourceKind::Deployment, "ml", "trainer")[0].clone();
    let mut child = k
        .command(&["-n", "ml", "logs", "-f", &format!("pod/{pod}")])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let lines = Lines::new(child.stdout.take().unwrap());
    let wait = Duration::from_secs(20);
    assert_eq!(lines.next(wait).as_deref(), Some("step=1 loss=2.0"));
    assert_eq!(lines.next(wait).as_deref(), Some("step=2 loss=1.9"));
    sim.append_log("ml", &pod, "trainer", "step=3");
    sim.append_log("ml", &pod, "trainer", "step=4 never arrives");
    assert_eq!(lines.next(wait).as_deref(), Some("step=3"));
    assert_eq!(lines.next(wait), None, "the stream was cut after 3 lines");
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() || stderr.contains("EOF"),
        "status {:?}, stderr {stderr}",
        out.status
    );
}

#[test]
fn forbidden_patch_carries_the_apiserver_message() {
    let (sim, k) = setup!("forbidden", standard(), Some("ro"));
    let before = sim.deployment("ml", "trainer").unwrap();
    let run = k
        .run(&[
            "-n",
            "ml",
            "patch",
            "deployment/trainer",
            "--type",
            "merge",
            "-p",
            &knob_patch("8"),
        ])
        .failed();
    assert_eq!(run.code, 1);
    assert_eq!(
        run.stderr,
        "Error from server (Forbidden): deployments.apps \"trainer\" is forbidden: User \"bob\" cannot patch resource \"deployments\" in API group \"apps\" in the namespace \"ml\"\n"
    );
    assert_eq!(sim.deployment("ml", "trainer").unwrap(), before);
    let dry = k
        .run(&[
            "-n",
            "ml",
            "patch",
            "deployment/trainer",
            "--type",
            "merge",
            "--dry-run=server",
            "-p",
            &knob_patch("8"),
        ])
        .failed();
    assert!(
        dry.stderr.contains("(Forbidden)") && dry.stderr.contains("cannot patch"),
        "{}",
        dry.stderr
    );
    let logs = {
        sim.set_rules(
            "ro",
            [
                Rule::allow(["get", "list"], "", ["pods"]),
                Rule::allow(["get"], "apps", ["deployments"]),
            ],
        );
        k.run(&["-n", "ml", "logs", "deployment/trainer"]).failed()
    };
    assert!(
        logs.stderr
            .contains("cannot get resource \"pods/log\" in API group \"\" in the namespace \"ml\""),
        "{}",
        logs.stderr
    );
    let ns = k.run(&["get", "ns"]).failed();
    assert_eq!(
        ns.stderr,
        "Error from server (Forbidden): namespaces is forbidden: User \"bob\" cannot list resource \"namespaces\" in API group \"\" at the cluster scope\n"
    );
}

#[test]
fn missing_deployment_and_namespace_are_not_found() {
    let (_sim, k) = setup!("not_found", standard(), Some("t0"));
    let dep = k.run(&["-n", "ml", "get", "deployment", "nope"]).failed();
    assert_eq!(
        dep.stderr,
        "Error from server (NotFound): deployments.apps \"nope\" not found\n"
    );
    let ns = k.run(&["get", "namespace/nope", "-o", "name"]).failed();
    assert_eq!(
        ns.stderr,
        "Error from server (NotFound): namespaces \"nope\" not found\n"
    );
    let patch = k
        .run(&[
            "-n",
            "ml",
            "patch",
            "deployment/nope",
            "--type",
            "merge",
            "-p",
            "{}",
        ])
        .failed();
    assert_eq!(
        patch.stderr,
        "Error from server (NotFound): deployments.apps \"nope\" not found\n"
    );
    // kubectl looks the namespace up after a NotFound and reports that instead.
    let other_ns = k
        .run(&["-n", "ghost", "get", "deployment", "trainer"])
        .failed();
    assert_eq!(
        other_ns.stderr,
        "Error from server (NotFound): namespaces \"ghost\" not found\n"
    );
}

#[test]
fn a_bad_token_is_unauthorized() {
    let (sim, k) = setup!("unauthorized", standard(), Some("wrong"));
    let run = k.run(&["get", "ns"]).failed();
    assert_eq!(run.code, 1);
    assert!(run.stderr.ends_with("error: You must be logged in to the server (the server has asked for the client to provide credentials)\n"), "{}", run.stderr);
    let patch = k
        .run(&[
            "-n",
            "ml",
            "patch",
            "deployment/trainer",
            "--type",
            "merge",
            "-p",
            "{}",
        ])
        .failed();
    assert!(
        patch.stderr.contains("You must be logged in to the server"),
        "{}",
        patch.stderr
    );
    assert!(
        sim.requests()
            .iter()
            .all(|r| r.status == 401 && r.user.is_none())
    );
}

#[test]
fn anonymous_access_is_off_unless_enabled() {
    let (sim, k) = setup!("anonymous", standard(), None);
    // With https and no credentials kubectl prompts for a username before calling (stdin is closed).
    let prompt = k.run(&["get", "ns"]).failed();
    assert!(
        prompt.stdout.contains("Please enter Username") && prompt.stderr == "error: EOF\n",
        "{prompt:?}"
    );
    assert!(
        sim.requests().iter().all(|r| r.status == 401),
        "{:?}",
        sim.requests()
    );

    sim.write_kubeconfig_anonymous(&k.kubeconfig).unwrap();
    let denied = k.run(&["get", "ns"]).failed();
    assert!(
        denied
            .stderr
            .contains("error: You must be logged in to the server"),
        "{denied:?}"
    );
    assert!(sim.requests().iter().all(|r| r.status == 401));

    let discovery = Rule {
        verbs: vec!["get".into()],
        non_resource_urls: vec![
            "/api".into(),
            "/api/*".into(),
            "/apis".into(),
            "/apis/*".into(),
        ],
        ..Rule::default()
    };
    sim.set_anonymous(Some(vec![
        Rule::allow(["get", "list"], "", ["namespaces"]),
        discovery,
    ]));
    assert_eq!(
        k.run(&["get", "ns", "-o", "name"]).ok().stdout,
        "namespace/default\nnamespace/ml\n"
    );
    let dep = k.run(&["-n", "ml", "get", "deploy", "trainer"]).failed();
    assert_eq!(
        dep.stderr,
        "Error from server (Forbidden): deployments.apps \"trainer\" is forbidden: User \"system:anonymous\" cannot get resource \"deployments\" in API group \"apps\" in the namespace \"ml\"\n"
    );
    sim.set_anonymous(Some(vec![Rule::allow(["get", "list"], "", ["namespaces"])]));
    std::fs::remove_dir_all(k.path().join("cache")).unwrap();
    let no_discovery = k.run(&["get", "ns"]).failed();
    // kubectl's aggregated-discovery client cannot decode the 403 Status and prints "unknown".
    assert!(
        no_discovery
            .stderr
            .ends_with("Error from server (Forbidden): unknown\n"),
        "{no_discovery:?}"
    );
    let api = sim
        .requests()
        .into_iter()
        .rfind(|r| r.path == "/api")
        .unwrap();
    assert_eq!(api.status, 403);
    let body = common::http(&sim, "GET", "/api", &[], b"").json();
    assert_eq!(
        body["message"],
        "forbidden: User \"system:anonymous\" cannot get path \"/api\""
    );
}

#[test]
fn kubectl_sends_no_token_to_a_plain_http_server() {
    let (sim, k) = setup!("plain_http", standard(), Some("t0"));
    k.write_config(&sim, Some("t0"), true);
    let run = k.run(&["get", "ns"]).failed();
    assert!(
        run.stderr.contains("You must be logged in"),
        "{}",
        run.stderr
    );
    assert!(sim.requests().iter().all(|r| r.user.is_none()));
    k.write_config(&sim, Some("t0"), false);
    k.run(&["get", "ns"]).ok();
    assert!(sim.requests().last().unwrap().user.as_deref() == Some("alice"));
}

#[test]
fn stale_resource_version_is_a_conflict() {
    let (sim, k) = setup!("conflict", standard(), Some("t0"));
    let rv = sim
        .object_resource_version(ResourceKind::Deployment, "ml", "trainer")
        .unwrap();
    sim.modify(
        ResourceKind::Deployment,
        "ml",
        "trainer",
        "someone-else",
        |d| {
            d["metadata"]["labels"]["touched"] = "yes".into();
        },
    );
    let body = format!(r#"{{"metadata":{{"resourceVersion":"{rv}"}},"spec":{{"replicas":2}}}}"#);
    let run = k
        .run(&[
            "-n",
            "ml",
            "patch",
            "deployment/trainer",
            "--type",
            "merge",
            "-p",
            &body,
        ])
        .failed();
    assert_eq!(
        run.stderr,
        "Error from server (Conflict): Operation cannot be fulfilled on deployments.apps \"trainer\": the object has been modified; please apply your changes to the latest version and try again\n"
    );
    assert_eq!(
        sim.deployment("ml", "trainer").unwrap()["spec"]["replicas"],
        1
    );
    let fresh = sim
        .object_resource_version(ResourceKind::Deployment, "ml", "trainer")
        .unwrap();
    let body = format!(r#"{{"metadata":{{"resourceVersion":"{fresh}"}},"spec":{{"replicas":2}}}}"#);
    k.run(&[
        "-n",
        "ml",
        "patch",
        "deployment/trainer",
        "--type",
        "merge",
        "-p",
        &body,
    ])
    .ok();
    assert_eq!(
        sim.pod_names(ResourceKind::Deployment, "ml", "trainer")
            .len(),
        2
    );
}

#[test]
fn invalid_patches_are_422() {
    let (sim, k) = setup!("invalid", standard(), Some("t0"));
    let number =
        format!(r#"{{"spec":{{"template":{{"metadata":{{"annotations":{{"{KNOB}":8}}}}}}}}}}"#);
    let run = k
        .run(&[
            "-n",
            "ml",
            "patch",
            "deployment/trainer",
            "--type",
            "merge",
            "-p",
            &number,
        ])
        .failed();
    assert_eq!(
        run.stderr,
        format!(
            "The Deployment \"trainer\" is invalid: spec.template.metadata.annotations[{KNOB}]: Invalid value: 8: annotation values must be strings\n"
        )
    );
    let replicas = k
        .run(&[
            "-n",
            "ml",
            "patch",
            "deployment/trainer",
            "--type",
            "merge",
            "-p",
            r#"{"spec":{"replicas":-1}}"#,
        ])
        .failed();
    assert_eq!(
        replicas.stderr,
        "The Deployment \"trainer\" is invalid: spec.replicas: Invalid value: -1: must be greater than or equal to 0\n"
    );

    sim.reject_patches(ResourceKind::Deployment, "ml", "trainer", "frozen by test");
    let hooked = k
        .run(&[
            "-n",
            "ml",
            "patch",
            "deployment/trainer",
            "--type",
            "merge",
            "--dry-run=server",
            "-p",
            &knob_patch("8"),
        ])
        .failed();
    assert!(
        hooked.stderr.starts_with(
            "The Deployment \"trainer\" is invalid: metadata.annotations: Invalid value:"
        ),
        "{}",
        hooked.stderr
    );
    assert!(
        hooked.stderr.ends_with(": frozen by test\n"),
        "{}",
        hooked.stderr
    );
    sim.allow_patches(ResourceKind::Deployment, "ml", "trainer");
    k.run(&[
        "-n",
        "ml",
        "patch",
        "deployment/trainer",
        "--type",
        "merge",
        "-p",
        &knob_patch("8"),
    ])
    .ok();
    assert!(
        sim.requests()
            .iter()
            .filter(|r| r.method == "PATCH")
            .map(|r| r.status)
            .eq([422, 422, 422, 200])
    );
}

#[test]
fn injected_500_and_nth_request_faults() {
    let (sim, k) = setup!("faults", standard(), Some("t0"));
    let id = sim.inject_fault(
        Fault::status("/apis/apps/v1/namespaces/*/deployments/*", 500)
            .method("PATCH")
            .message("etcd is down"),
    );
    let run = k
        .run(&[
            "-n",
            "ml",
            "patch",
            "deployment/trainer",
            "--type",
            "merge",
            "-p",
            &knob_patch("8"),
        ])
        .failed();
    assert_eq!(
        run.stderr,
        "Error from server (InternalError): Internal error occurred: etcd is down\n"
    );
    assert_eq!(sim.fault_fired(id), 1);
    assert_eq!(
        sim.template_annotation(ResourceKind::Deployment, "ml", "trainer", KNOB)
            .as_deref(),
        Some("4")
    );
    sim.clear_faults();

    sim.inject_fault(
        Fault::status("/apis/apps/v1/namespaces/ml/deployments/trainer", 503)
            .method("GET")
            .nth(2)
            .message("try later"),
    );
    let get = ["-n", "ml", "get", "deploy", "trainer", "-o", "name"];
    assert_eq!(k.run(&get).ok().stdout, "deployment.apps/trainer\n");
    let second = k.run(&get).failed();
    assert!(
        second.stderr.contains("(ServiceUnavailable)") && second.stderr.contains("try later"),
        "{}",
        second.stderr
    );
    k.run(&get).ok();
}

#[test]
fn hangs_time_out_and_latency_delays() {
    let (sim, k) = setup!("hang", standard(), Some("t0"));
    k.run(&["get", "ns"]).ok();
    sim.inject_fault(Fault::hang("/apis/apps/v1/namespaces/ml/deployments/trainer").times(1));
    let started = Instant::now();
    let run = k
        .run(&[
            "--request-timeout=1s",
            "-n",
            "ml",
            "get",
            "deploy",
            "trainer",
        ])
        .failed();
    assert!(started.elapsed() < Duration::from_secs(15));
    assert!(
        run.stderr.to_lowercase().contains("timeout") || run.stderr.contains("deadline"),
        "{}",
        run.stderr
    );
    assert_eq!(
        sim.requests().last().unwrap().status,
        0,
        "a hung request is never answered"
    );

    sim.inject_fault(Fault::delay(
        "/api/v1/namespaces",
        Duration::from_millis(700),
    ));
    let started = Instant::now();
    k.run(&["get", "ns", "-o", "name"]).ok();
    assert!(started.elapsed() >= Duration::from_millis(700));
}

#[test]
fn server_side_apply_reports_conflicts_and_forces() {
    let Some(bin) = kubectl_or_skip("apply") else {
        return;
    };
    let sim = standard().start_blocking().unwrap();
    let k = Kubectl::new(bin, &sim, Some("t0"));
    let manifest = k.path().join("trainer.json");
    std::fs::write(
        &manifest,
        format!(r#"{{"apiVersion":"apps/v1","kind":"Deployment","metadata":{{"name":"trainer","namespace":"ml"}},"spec":{{"template":{{"metadata":{{"annotations":{{"{KNOB}":"64"}}}}}}}}}}"#),
    )
    .unwrap();
    let file = manifest.to_str().unwrap();
    let run = k
        .run(&[
            "apply",
            "--server-side",
            "--field-manager",
            "modekeeper",
            "-f",
            file,
        ])
        .failed();
    assert!(
        run.stderr.starts_with(&format!("error: Apply failed with 1 conflict: conflict with \"kube-sim-seed\" using apps/v1: .spec.template.metadata.annotations.{KNOB}\n")),
        "{}",
        run.stderr
    );
    let forced = k
        .run(&[
            "apply",
            "--server-side",
            "--field-manager",
            "modekeeper",
            "--force-conflicts",
            "-f",
            file,
        ])
        .ok();
    assert_eq!(
        forced.stdout,
        "deployment.apps/trainer serverside-applied\n"
    );
    assert_eq!(
        sim.template_annotation(ResourceKind::Deployment, "ml", "trainer", KNOB)
            .as_deref(),
        Some("64")
    );
    let owners = k
        .run(&[
            "-n",
            "ml",
            "get",
            "deploy",
            "trainer",
            "--show-managed-fields",
            "-o",
            "jsonpath={.metadata.managedFields[*].manager}",
        ])
        .ok();
    assert_eq!(owners.stdout, "kube-sim-seed modekeeper");
    let apply = sim
        .requests()
        .into_iter()
        .rfind(|r| r.method == "PATCH")
        .unwrap();
    assert_eq!(
        apply.content_type.as_deref(),
        Some("application/apply-patch+yaml")
    );
    assert_eq!(apply.query_param("force").as_deref(), Some("true"));
}

#[test]
fn version_reports_the_configured_server_version() {
    let (_sim, k) = setup!(
        "version",
        standard().server_version("v1.31.2+kube-sim"),
        Some("t0")
    );
    let out = k.run(&["version", "-o", "json"]).ok().stdout;
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["serverVersion"]["gitVersion"], "v1.31.2+kube-sim");
    assert_eq!(v["serverVersion"]["minor"], "31");
    assert!(
        v["clientVersion"]["gitVersion"]
            .as_str()
            .unwrap()
            .starts_with("v1.")
    );
}

#[test]
fn pending_pods_have_no_logs_yet() {
    let builder = KubeSim::builder()
        .pod(kube_sim::PodSeed::new("ml", "waiting").phase("Pending"))
        .token("t0", "alice", common::admin());
    let (sim, k) = setup!("pending", builder, Some("t0"));
    let run = k.run(&["-n", "ml", "logs", "waiting"]).failed();
    assert!(
        run.stderr.contains(
            "container \"trainer\" in pod \"waiting\" is waiting to start: ContainerCreating"
        ),
        "{}",
        run.stderr
    );
    let table = k.run(&["-n", "ml", "get", "pods"]).ok().stdout;
    assert!(
        table.lines().nth(1).unwrap().split_whitespace().eq([
            "waiting",
            "0/1",
            "ContainerCreating",
            "0",
            "0s"
        ]) || table.contains("ContainerCreating"),
        "{table}"
    );
    assert!(sim.set_pod_phase("ml", "waiting", "Running"));
    assert_eq!(k.run(&["-n", "ml", "logs", "waiting"]).ok().stdout, "");
}

#[test]
fn rollout_status_and_get_watch_follow_changes() {
    let (sim, k) = setup!("watch", standard(), Some("t0"));
    let out = k
        .run(&[
            "-n",
            "ml",
            "rollout",
            "status",
            "deployment/trainer",
            "--timeout=20s",
        ])
        .ok();
    assert_eq!(
        out.stdout,
        "deployment \"trainer\" successfully rolled out\n"
    );

    let mut child = k
        .command(&[
            "-n",
            "ml",
            "get",
            "deploy",
            "trainer",
            "-w",
            "-o",
            "jsonpath={.metadata.generation}{\"\\n\"}",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let lines = Lines::new(child.stdout.take().unwrap());
    let wait = Duration::from_secs(20);
    assert_eq!(lines.next(wait).as_deref(), Some("1"));
    k.run(&[
        "-n",
        "ml",
        "patch",
        "deployment/trainer",
        "--type",
        "merge",
        "-p",
        &knob_patch("8"),
    ])
    .ok();
    assert_eq!(
        lines.next(wait).as_deref(),
        Some("2"),
        "the watch reported the patch"
    );
    child.kill().unwrap();
    child.wait().unwrap();
    let watch = sim
        .requests()
        .into_iter()
        .find(|r| r.query_param("watch").as_deref() == Some("true"))
        .unwrap();
    assert_eq!(
        watch.query_param("fieldSelector").as_deref(),
        Some("metadata.name=trainer")
    );
}

fn with_jobs(b: kube_sim::KubeSimBuilder) -> kube_sim::KubeSimBuilder {
    let tpl = serde_json::json!({"metadata": {"annotations": {KNOB: "4"}},
        "spec": {"containers": [{"name": "trainer", "image": "trainer:1"}], "restartPolicy": "Never"}});
    b.object(
        ResourceKind::ConfigMap,
        serde_json::json!({"metadata": {"name": "trainer-modekeeper-knobs", "namespace": "ml"},
                           "data": {"concurrency": "2"}}),
    )
    .object(
        ResourceKind::Job,
        serde_json::json!({"metadata": {"name": "train", "namespace": "ml"},
                           "spec": {"template": tpl.clone()}}),
    )
    .object(
        ResourceKind::PyTorchJob,
        serde_json::json!({"metadata": {"name": "ddp", "namespace": "ml"},
                           "spec": {"pytorchReplicaSpecs": {"Master": {"replicas": 1, "template": tpl.clone()},
                                                            "Worker": {"replicas": 2, "template": tpl}}}}),
    )
}

#[test]
fn configmaps_jobs_and_custom_resources_through_kubectl() {
    let (sim, k) = setup!("configmaps_jobs", with_jobs(standard()), Some("t0"));
    // ConfigMap: get, a server-side dry run that stores nothing, then a merge patch.
    let cm: Value = serde_json::from_str(
        &k.run(&[
            "-n",
            "ml",
            "get",
            "configmap",
            "trainer-modekeeper-knobs",
            "-o",
            "json",
        ])
        .ok()
        .stdout,
    )
    .unwrap();
    assert_eq!(
        (cm["kind"].as_str(), cm["data"]["concurrency"].as_str()),
        (Some("ConfigMap"), Some("2"))
    );
    let patch = r#"{"data":{"concurrency":"6"}}"#;
    k.run(&[
        "-n",
        "ml",
        "patch",
        "cm/trainer-modekeeper-knobs",
        "--type",
        "merge",
        "--dry-run=server",
        "-p",
        patch,
    ])
    .ok();
    let stored = |sim: &KubeSim| {
        sim.get(ResourceKind::ConfigMap, "ml", "trainer-modekeeper-knobs")
            .unwrap()["data"]["concurrency"]
            .clone()
    };
    assert_eq!(stored(&sim), "2");
    let out = k
        .run(&[
            "-n",
            "ml",
            "patch",
            "configmap/trainer-modekeeper-knobs",
            "--type",
            "merge",
            "-p",
            patch,
        ])
        .ok()
        .stdout;
    assert_eq!(out, "configmap/trainer-modekeeper-knobs patched\n");
    assert_eq!(stored(&sim), "6");
    let table = k.run(&["-n", "ml", "get", "cm"]).ok().stdout;
    assert!(
        table.starts_with("NAME") && table.contains("trainer-modekeeper-knobs"),
        "{table}"
    );

    // A Job's template is immutable: kubectl shows the API server's 422.
    let job_patch = knob_patch("8");
    let refused = k
        .run(&[
            "-n",
            "ml",
            "patch",
            "job/train",
            "--type",
            "merge",
            "-p",
            &job_patch,
        ])
        .failed();
    assert!(
        refused
            .stderr
            .starts_with("The Job \"train\" is invalid: spec.template: Invalid value:")
            && refused.stderr.ends_with(": field is immutable\n"),
        "{}",
        refused.stderr
    );
    assert_eq!(
        k.run(&["-n", "ml", "get", "jobs", "-o", "name"])
            .ok()
            .stdout,
        "job.batch/train\n"
    );

    // A PyTorchJob is found through discovery; its replica templates are patchable.
    assert_eq!(
        k.run(&["-n", "ml", "get", "pytorchjobs", "-o", "name"])
            .ok()
            .stdout,
        "pytorchjob.kubeflow.org/ddp\n"
    );
    let role_patch = format!(
        r#"{{"spec":{{"pytorchReplicaSpecs":{{"Worker":{{"template":{{"metadata":{{"annotations":{{"{KNOB}":"8"}}}}}}}}}}}}}}"#
    );
    k.run(&[
        "-n",
        "ml",
        "patch",
        "pytorchjob/ddp",
        "--type",
        "merge",
        "-p",
        &role_patch,
    ])
    .ok();
    let ddp = sim.get(ResourceKind::PyTorchJob, "ml", "ddp").unwrap();
    assert_eq!(
        ddp["spec"]["pytorchReplicaSpecs"]["Worker"]["template"]["metadata"]["annotations"][KNOB],
        "8"
    );
    assert_eq!(
        ddp["spec"]["pytorchReplicaSpecs"]["Master"]["template"]["metadata"]["annotations"][KNOB],
        "4"
    );
}

#[test]
fn without_the_crd_kubectl_does_not_know_the_kind() {
    let (_sim, k) = setup!(
        "no_crd",
        with_jobs(standard()).crds_absent(true),
        Some("t0")
    );
    let run = k.run(&["-n", "ml", "get", "pytorchjobs"]).failed();
    assert!(
        run.stderr
            .contains("the server doesn't have a resource type \"pytorchjobs\""),
        "{}",
        run.stderr
    );
    // Built-in kinds are still served.
    k.run(&["-n", "ml", "get", "jobs"]).ok();
}

#[test]
fn leases_and_events_through_kubectl() {
    let (sim, k) = setup!("leases_and_events", standard(), Some("t0"));
    let lease = k.path().join("lease.json");
    std::fs::write(
        &lease,
        r#"{"apiVersion":"coordination.k8s.io/v1","kind":"Lease","metadata":{"name":"modekeeper-leader","namespace":"ml"},"spec":{"holderIdentity":"pod-a","leaseDurationSeconds":15}}"#,
    )
    .unwrap();
    let created = k.run(&["create", "-f", lease.to_str().unwrap()]).ok();
    assert_eq!(
        created.stdout,
        "lease.coordination.k8s.io/modekeeper-leader created\n"
    );
    let out = k.run(&["get", "lease", "-n", "ml"]).ok().stdout;
    let lines: Vec<Vec<&str>> = out
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(lines[0], ["NAME", "HOLDER", "AGE"], "{out}");
    assert_eq!(&lines[1][..2], ["modekeeper-leader", "pod-a"]);
    // kubectl replace is a PUT with the object's resourceVersion.
    let json = k
        .run(&[
            "get",
            "lease",
            "modekeeper-leader",
            "-n",
            "ml",
            "-o",
            "json",
        ])
        .ok()
        .stdout;
    let replaced = json.replace("pod-a", "pod-b");
    std::fs::write(&lease, &replaced).unwrap();
    k.run(&["replace", "-f", lease.to_str().unwrap()]).ok();
    assert_eq!(
        sim.get(kube_sim::ResourceKind::Lease, "ml", "modekeeper-leader")
            .unwrap()["spec"]["holderIdentity"],
        "pod-b"
    );
    // The same stale object again: the server's 409, as kubectl shows it.
    let stale = k.run(&["replace", "-f", lease.to_str().unwrap()]).failed();
    assert!(
        stale.stderr.contains("the object has been modified"),
        "{stale:?}"
    );

    let event = k.path().join("event.json");
    // `kubectl describe` finds a workload's events by its uid.
    let uid = sim.deployment("ml", "trainer").unwrap()["metadata"]["uid"].clone();
    std::fs::write(
        &event,
        serde_json::json!({"apiVersion":"events.k8s.io/v1","kind":"Event","metadata":{"name":"trainer.1","namespace":"ml"},"eventTime":"2026-01-01T00:00:00.000000Z","reportingController":"modekeeper","reportingInstance":"h","action":"Apply","reason":"KnobsApplied","type":"Warning","note":"grad_accum_steps 4 -> 8","regarding":{"apiVersion":"apps/v1","kind":"Deployment","namespace":"ml","name":"trainer","uid":uid}}).to_string(),
    )
    .unwrap();
    k.run(&["create", "-f", event.to_str().unwrap()]).ok();
    let out = k.run(&["get", "events", "-n", "ml"]).ok().stdout;
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines[0].split_whitespace().collect::<Vec<_>>(),
        ["LAST", "SEEN", "TYPE", "REASON", "OBJECT", "MESSAGE"],
        "{out}"
    );
    assert!(
        lines[1].contains("Warning")
            && lines[1].contains("KnobsApplied")
            && lines[1].contains("deployment/trainer")
            && lines[1].ends_with("grad_accum_steps 4 -> 8"),
        "{out}"
    );
    let described = k
        .run(&["describe", "deployment", "trainer", "-n", "ml"])
        .ok()
        .stdout;
    let events_part = described.split("Events:").nth(1).unwrap_or_default();
    assert!(
        events_part.contains("Warning")
            && events_part.contains("KnobsApplied")
            && events_part.contains("grad_accum_steps 4 -> 8"),
        "{described}"
    );
}

#[test]
fn configmaps_and_secrets_created_replaced_and_read_through_kubectl() {
    let (sim, k) = setup!(
        "configmaps_and_secrets",
        standard().namespace("modekeeper-system").token(
            "license-reader",
            "system:serviceaccount:modekeeper-system:modekeeper-controller",
            [Rule::allow(["get"], "", ["secrets"])
                .named(["modekeeper-license"])
                .in_namespace("modekeeper-system")]
        ),
        Some("t0")
    );
    let ns = ["-n", "modekeeper-system"];
    let created = k
        .run(
            &[
                &["create", "configmap", "state", "--from-literal=a=1"][..],
                &ns[..],
            ]
            .concat(),
        )
        .ok();
    assert_eq!(created.stdout, "configmap/state created\n");
    // The same name again: AlreadyExists, as kubectl prints it.
    let again = k
        .run(
            &[
                &["create", "configmap", "state", "--from-literal=a=2"][..],
                &ns[..],
            ]
            .concat(),
        )
        .failed();
    assert!(
        again
            .stderr
            .contains(r#"configmaps "state" already exists"#),
        "{again:?}"
    );
    let json = k
        .run(&[&["get", "configmap", "state", "-o", "json"][..], &ns[..]].concat())
        .ok()
        .stdout;
    let file = k.path().join("cm.json");
    std::fs::write(&file, json.replace(r#""a": "1""#, r#""a": "2""#)).unwrap();
    let replaced = k.run(&["replace", "-f", file.to_str().unwrap()]).ok();
    assert_eq!(replaced.stdout, "configmap/state replaced\n");
    assert_eq!(
        sim.get(ResourceKind::ConfigMap, "modekeeper-system", "state")
            .unwrap()["data"]["a"],
        "2"
    );
    // Replaying the object read before that write: its resourceVersion is stale now.
    let stale = k.run(&["replace", "-f", file.to_str().unwrap()]).failed();
    assert!(
        stale.stderr.contains("the object has been modified"),
        "{stale:?}"
    );
    let out = k
        .run(&[&["get", "configmaps"][..], &ns[..]].concat())
        .ok()
        .stdout;
    let header: Vec<&str> = out.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(header, ["NAME", "DATA", "AGE"], "{out}");

    let secret = k
        .run(
            &[
                &[
                    "create",
                    "secret",
                    "generic",
                    "modekeeper-license",
                    "--from-literal=license.json={\"a\":1}",
                ][..],
                &ns[..],
            ]
            .concat(),
        )
        .ok();
    assert_eq!(secret.stdout, "secret/modekeeper-license created\n");
    let got: Value = serde_json::from_str(
        &k.run(
            &[
                &["get", "secret", "modekeeper-license", "-o", "json"][..],
                &ns[..],
            ]
            .concat(),
        )
        .ok()
        .stdout,
    )
    .unwrap();
    assert_eq!(got["data"]["license.json"], "eyJhIjoxfQ==");
    assert_eq!(got["type"], "Opaque");
    let out = k
        .run(&[&["get", "secrets"][..], &ns[..]].concat())
        .ok()
        .stdout;
    let lines: Vec<Vec<&str>> = out
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(lines[0], ["NAME", "TYPE", "DATA", "AGE"], "{out}");
    assert_eq!(
        &lines[1][..3],
        ["modekeeper-license", "Opaque", "1"],
        "{out}"
    );
    k.run(
        &[
            &["create", "secret", "generic", "other", "--from-literal=k=v"][..],
            &ns[..],
        ]
        .concat(),
    )
    .ok();

    // RBAC by resourceNames: the named Secret only, and no list.
    k.write_config(&sim, Some("license-reader"), false);
    k.run(&[&["get", "secret", "modekeeper-license"][..], &ns[..]].concat())
        .ok();
    let denied = k
        .run(&[&["get", "secret", "other"][..], &ns[..]].concat())
        .failed();
    assert!(
        denied.stderr.contains(r#"secrets "other" is forbidden"#),
        "{denied:?}"
    );
    let list = k.run(&[&["get", "secrets"][..], &ns[..]].concat()).failed();
    assert!(list.stderr.contains("cannot list resource"), "{list:?}");
}
