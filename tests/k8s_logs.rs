//! `PodLogSource` (`closed-loop watch --source k8s`) against kube-sim: replicas merged, a cut follow
//! stream resumed without loss or duplicates (lines sharing a timestamp included), a container
//! restart, a new pod, resuming from a saved cursor in a new source, refused permissions, and a
//! cross-check with the real `kubectl logs --timestamps`.

mod k8s_common;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use k8s_common::{Case, kubectl, kubectl_or_skip};
use kube_sim::{Fault, KubeSim, PodSeed, ResourceKind, Rule, WorkloadSeed};
use modekeeper::k8s::{ConnectOptions, LogTarget, PodLogSource, WorkloadRef};
use modekeeper::telemetry::live::{LiveSource, Poll, SourceEvent};
use serde_json::{Value, json};

const LOG_PATH: &str = "/api/v1/namespaces/ml/pods/*/log";

fn sim(replicas: u32) -> KubeSim {
    KubeSim::builder()
        .namespace("ml")
        .workload(
            WorkloadSeed::deployment("ml", "trainer")
                .replicas(replicas)
                .log("trainer", "starting trainer"),
        )
        .token("t0", "alice", [Rule::admin()])
        .token(
            "nolog",
            "carol",
            [
                Rule::allow(["get", "list"], "", ["pods"]).in_namespace("ml"),
                Rule::allow(["get"], "apps", ["deployments"]).in_namespace("ml"),
            ],
        )
        .token(
            "nolist",
            "dave",
            [Rule::allow(["get"], "apps", ["deployments"]).in_namespace("ml")],
        )
        .start_blocking()
        .unwrap()
}

fn opts(case: &Case) -> ConnectOptions {
    ConnectOptions::from_flags(
        Some(case.kubeconfig.to_str().unwrap()),
        None,
        None,
        Some(5000),
    )
}

fn deployment(name: &str) -> LogTarget {
    LogTarget {
        namespace: Some("ml".into()),
        workload: WorkloadRef::Deployment(name.into()),
        container: None,
        since_seconds: None,
    }
}

fn pods(sim: &KubeSim) -> Vec<String> {
    sim.pod_names(ResourceKind::Deployment, "ml", "trainer")
}

fn record(pod: &str, step: u32) -> String {
    json!({"step": step, "step_time_ms": 100 + step, "node": pod}).to_string()
}

/// The text between the kubelet timestamp prefix and the newline (every handed-out line has both).
fn text(line: &[u8]) -> String {
    let s = String::from_utf8(line.to_vec()).unwrap();
    let s = s.strip_suffix('\n').expect("a line end");
    let (ts, rest) = s.split_once(' ').expect("a timestamp prefix");
    DateTime::parse_from_rfc3339(ts).expect("an RFC 3339 prefix");
    rest.to_string()
}

/// Polls until `n` lines arrived (or 15 s), then 300 ms more to catch extras.
fn collect(src: &mut PodLogSource, n: usize, events: &mut Vec<SourceEvent>) -> Vec<String> {
    let mut out = vec![];
    let deadline = Instant::now() + Duration::from_secs(15);
    while out.len() < n && Instant::now() < deadline {
        let mut batch = vec![];
        assert_eq!(
            src.poll(&mut batch, Duration::from_millis(200)).unwrap(),
            Poll::Open
        );
        out.extend(batch.iter().map(|l| text(l)));
        events.extend(src.drain_events());
    }
    let mut batch = vec![];
    src.poll(&mut batch, Duration::from_millis(300)).unwrap();
    out.extend(batch.iter().map(|l| text(l)));
    events.extend(src.drain_events());
    out
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

fn kinds(events: &[SourceEvent]) -> Vec<&str> {
    events.iter().map(|e| e.kind.as_str()).collect()
}

#[test]
fn two_replicas_every_line_exactly_once_and_a_new_pod_is_picked_up() {
    let sim = sim(2);
    let case = Case::new(&sim, "t0");
    let names = pods(&sim);
    assert_eq!(names.len(), 2);
    let mut src = PodLogSource::open(&opts(&case), deployment("trainer"), None).unwrap();
    assert_eq!(src.pods(), names);
    let mut expected = vec!["starting trainer".to_string(); 2];
    for step in 0..50 {
        for (rank, pod) in names.iter().enumerate() {
            let line = record(&format!("{pod}-r{rank}"), step);
            sim.append_log("ml", pod, "trainer", &line);
            expected.push(line);
        }
        if step % 10 == 0 {
            // Ordinary log lines between the records.
            sim.append_log("ml", &names[0], "trainer", &format!("INFO epoch {step}"));
            expected.push(format!("INFO epoch {step}"));
        }
    }
    let mut events = vec![];
    let got = collect(&mut src, expected.len(), &mut events);
    assert_eq!(sorted(got), sorted(expected));
    assert!(events.is_empty(), "{events:?}");

    // The cursor names both pods, their uid and where each one ends.
    let cursor = src.cursor();
    assert_eq!(cursor["kind"], "k8s");
    for pod in &names {
        let c = &cursor["pods"][pod];
        assert_eq!(c["container"], "trainer");
        assert_eq!(c["restart_count"], 0);
        assert_eq!(c["uid"], sim.pod("ml", pod).unwrap()["metadata"]["uid"]);
        assert!(c["last_ts"].is_string());
    }

    // A scale-up: a new pod with the workload's labels is found by the next LIST.
    sim.add_pod(
        PodSeed::new("ml", "trainer-extra")
            .label("app", "trainer")
            .log("trainer", "extra 1"),
    )
    .unwrap();
    sim.append_log("ml", "trainer-extra", "trainer", "extra 2");
    let mut events = vec![];
    let got = collect(&mut src, 2, &mut events);
    assert_eq!(got, ["extra 1", "extra 2"]);
    assert_eq!(kinds(&events), ["pod_added"]);
    assert_eq!(events[0].detail["pod"], "trainer-extra");
    let d = src.describe();
    assert_eq!(d["kind"], "k8s");
    assert_eq!(
        d["workload"],
        json!({"kind": "deployment", "name": "trainer"})
    );
    assert_eq!(d["pods"].as_array().unwrap().len(), 3);

    // The pod goes away.
    assert!(sim.delete(ResourceKind::Pod, "ml", "trainer-extra"));
    let mut events = vec![];
    let deadline = Instant::now() + Duration::from_secs(10);
    while !kinds(&events).contains(&"pod_gone") && Instant::now() < deadline {
        src.poll(&mut vec![], Duration::from_millis(200)).unwrap();
        events.extend(src.drain_events());
    }
    assert_eq!(kinds(&events), ["pod_gone"], "{events:?}");
    assert!(src.cursor()["pods"].get("trainer-extra").is_none());
}

#[test]
fn a_cut_stream_is_resumed_without_losing_or_repeating_a_line() {
    let sim = sim(1);
    let case = Case::new(&sim, "t0");
    let pod = pods(&sim).remove(0);
    // 4 distinct timestamps, then 8 lines sharing one (the cut falls in their middle), then 4 more.
    let base: DateTime<Utc> = Utc::now();
    let mut expected = vec!["starting trainer".to_string()];
    let mut at = |ms: i64, line: String| {
        sim.append_log_at(
            "ml",
            &pod,
            "trainer",
            base + chrono::Duration::milliseconds(ms),
            &line,
        );
        expected.push(line);
    };
    for i in 0..4 {
        at(i * 10, record(&pod, i as u32));
    }
    for i in 4..12 {
        at(100, record(&pod, i as u32));
    }
    for i in 12..16 {
        at(100 + i * 10, record(&pod, i as u32));
    }
    let fault = sim.inject_fault(Fault::drop_log_stream(LOG_PATH, 9).times(1));
    let mut src = PodLogSource::open(&opts(&case), deployment("trainer"), None).unwrap();
    let mut events = vec![];
    let got = collect(&mut src, expected.len(), &mut events);
    assert_eq!(sim.fault_fired(fault), 1);
    assert_eq!(got, expected, "in order, each once");
    assert_eq!(kinds(&events), ["reconnected"], "{events:?}");
    assert_eq!(events[0].detail["pod"], pod.as_str());
    assert!(events[0].detail["since_time"].is_string());
    let after = events[0].detail["after"].as_str().unwrap();
    assert!(after.starts_with("the log stream broke: "), "{after}");
    // The follow stream after the reconnect carries new lines too.
    sim.append_log("ml", &pod, "trainer", "after the cut");
    let got = collect(&mut src, 1, &mut events);
    assert_eq!(got, ["after the cut"]);
    // Two log requests: the cut one and its resumption (plus nothing while idle).
    assert_eq!(sim.count_requests("GET", LOG_PATH), 2);
}

#[test]
fn server_errors_on_the_log_request_are_retried() {
    let sim = sim(1);
    let case = Case::new(&sim, "t0");
    let pod = pods(&sim).remove(0);
    sim.append_log("ml", &pod, "trainer", &record(&pod, 1));
    let fault = sim.inject_fault(Fault::status(LOG_PATH, 503).times(2));
    let mut src = PodLogSource::open(&opts(&case), deployment("trainer"), None).unwrap();
    let mut events = vec![];
    let got = collect(&mut src, 2, &mut events);
    assert_eq!(sim.fault_fired(fault), 2);
    assert_eq!(got, ["starting trainer".to_string(), record(&pod, 1)]);
    // The first failure is reported at once, the recovery when it happens.
    assert_eq!(kinds(&events), ["retrying", "reconnected"], "{events:?}");
    assert!(events[0].detail["error"].as_str().unwrap().contains("503"));
    assert_eq!(events[1].detail["attempt"], 2);
    let after = events[1].detail["after"].as_str().unwrap();
    assert!(after.contains("503"), "{after}");
}

#[test]
fn a_restarted_container_is_noticed_and_read_from_its_start() {
    let sim = sim(1);
    let case = Case::new(&sim, "t0");
    let pod = pods(&sim).remove(0);
    let mut src = PodLogSource::open(&opts(&case), deployment("trainer"), None).unwrap();
    let mut events = vec![];
    sim.append_log("ml", &pod, "trainer", &record(&pod, 1));
    let got = collect(&mut src, 2, &mut events);
    assert_eq!(got, ["starting trainer".to_string(), record(&pod, 1)]);
    // Lines written right before the crash reach us either on the follow stream or from the
    // previous instance's log, once.
    sim.append_logs("ml", &pod, "trainer", [record(&pod, 2), record(&pod, 3)]);
    assert_eq!(sim.restart_container("ml", &pod, "trainer"), Some(1));
    sim.append_logs("ml", &pod, "trainer", ["restarted", &record(&pod, 1)]);
    let got = collect(&mut src, 4, &mut events);
    assert_eq!(
        got,
        [
            record(&pod, 2),
            record(&pod, 3),
            "restarted".into(),
            record(&pod, 1)
        ]
    );
    assert_eq!(kinds(&events), ["pod_restarted"], "{events:?}");
    assert_eq!(events[0].detail["restart_count"], 1);
    assert_eq!(events[0].detail["reason"], "restart_count");
    // The two lines before the crash came on the follow stream or from `previous=true`,
    // depending on how far the server had sent them: exactly once either way.
    let recovered = events[0].detail["previous_lines_recovered"]
        .as_u64()
        .unwrap();
    assert!(recovered <= 2, "{recovered}");
    let c = &src.cursor()["pods"][&pod];
    assert_eq!(c["restart_count"], 1);
    assert_eq!(c["lines"], 2);
}

#[test]
fn a_new_source_resumes_exactly_after_the_saved_cursor() {
    let sim = sim(2);
    let case = Case::new(&sim, "t0");
    let names = pods(&sim);
    let now = Utc::now();
    let mut expected = vec!["starting trainer".to_string(); 2];
    for pod in &names {
        for i in 0..5 {
            let line = record(pod, i);
            sim.append_log_at("ml", pod, "trainer", now, &line);
            expected.push(line);
        }
    }
    let mut first = PodLogSource::open(&opts(&case), deployment("trainer"), None).unwrap();
    let mut events = vec![];
    let mut got = collect(&mut first, expected.len(), &mut events);
    assert_eq!(sorted(got.clone()), sorted(expected.clone()));
    let saved = first.cursor();
    for pod in &names {
        assert_eq!(saved["pods"][pod]["lines_at_last_ts"], 5, "{saved}");
    }
    drop(first);
    // While stopped: more lines, the first ones at the very timestamp the cursor ends at.
    for pod in &names {
        for i in 5..8 {
            let line = record(pod, i);
            sim.append_log_at("ml", pod, "trainer", now, &line);
            expected.push(line);
        }
        let line = record(pod, 8);
        sim.append_log("ml", pod, "trainer", &line);
        expected.push(line);
    }
    // Through JSON text, as watch's state file keeps it.
    let saved: Value = serde_json::from_str(&saved.to_string()).unwrap();
    let mut second = PodLogSource::open(&opts(&case), deployment("trainer"), Some(&saved)).unwrap();
    let more = collect(&mut second, 8, &mut events);
    assert_eq!(more.len(), 8, "{more:?}");
    got.extend(more);
    assert_eq!(sorted(got), sorted(expected));
    assert!(events.is_empty(), "{events:?}");
    // A cursor of another kind is refused.
    let err = PodLogSource::open(
        &opts(&case),
        deployment("trainer"),
        Some(&json!({"dev": 1, "ino": 2, "offset": 3, "lines": 4})),
    )
    .err()
    .unwrap();
    assert!(err.to_string().contains("cursor"), "{err}");
    let err = PodLogSource::open(
        &opts(&case),
        deployment("trainer"),
        Some(&json!({"kind": "prometheus", "namespace": "ml", "pods": {}})),
    )
    .err()
    .unwrap();
    assert_eq!(
        err.to_string(),
        "the saved cursor is of a \"prometheus\" source, not k8s"
    );
}

#[test]
fn a_restart_while_stopped_recovers_the_old_instance_tail() {
    let sim = sim(1);
    let case = Case::new(&sim, "t0");
    let pod = pods(&sim).remove(0);
    let mut first = PodLogSource::open(&opts(&case), deployment("trainer"), None).unwrap();
    let mut events = vec![];
    collect(&mut first, 1, &mut events);
    let saved = first.cursor();
    drop(first);
    sim.append_log("ml", &pod, "trainer", "old tail");
    sim.restart_container("ml", &pod, "trainer");
    sim.append_log("ml", &pod, "trainer", "new start");
    let mut second = PodLogSource::open(&opts(&case), deployment("trainer"), Some(&saved)).unwrap();
    let got = collect(&mut second, 2, &mut events);
    assert_eq!(got, ["old tail", "new start"]);
    assert_eq!(kinds(&events), ["pod_restarted"]);
    assert_eq!(events[0].detail["previous_lines_recovered"], 1);
}

#[test]
fn refused_permissions_and_missing_targets_are_clear_errors() {
    let sim = sim(1);
    let pod = pods(&sim).remove(0);

    // No get on pods/log: the first poll says so.
    let case = Case::new(&sim, "nolog");
    let mut src = PodLogSource::open(&opts(&case), deployment("trainer"), None).unwrap();
    let mut err = None;
    let deadline = Instant::now() + Duration::from_secs(10);
    while err.is_none() && Instant::now() < deadline {
        err = src.poll(&mut vec![], Duration::from_millis(200)).err();
    }
    let err = err.expect("an error").to_string();
    assert!(
        err.starts_with(&format!(
            "cannot read logs of pod ml/{pod}: forbidden (needs get on pods/log in namespace ml)"
        )),
        "{err}"
    );
    assert!(!err.contains('\n'), "{err}");

    // No list on pods: open fails.
    let case = Case::new(&sim, "nolist");
    let err = PodLogSource::open(&opts(&case), deployment("trainer"), None)
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.starts_with(
            "cannot list the pods of deployment ml/trainer: forbidden (needs list on pods)"
        ),
        "{err}"
    );

    // Missing workload or pod; a container that cannot be chosen.
    let case = Case::new(&sim, "t0");
    let err = PodLogSource::open(&opts(&case), deployment("nope"), None)
        .err()
        .unwrap()
        .to_string();
    assert_eq!(err, "deployment ml/nope not found");
    let target = LogTarget {
        workload: WorkloadRef::Pod("nope".into()),
        ..deployment("x")
    };
    let err = PodLogSource::open(&opts(&case), target, None)
        .err()
        .unwrap()
        .to_string();
    assert_eq!(err, "pod ml/nope not found");
    let target = LogTarget {
        container: Some("sidecar".into()),
        ..deployment("trainer")
    };
    let err = PodLogSource::open(&opts(&case), target, None)
        .err()
        .unwrap()
        .to_string();
    assert_eq!(
        err,
        format!("pod ml/{pod} has no container \"sidecar\" (containers: trainer)")
    );
}

#[test]
fn containers_are_chosen_by_flag_annotation_or_being_the_only_one() {
    let sim = KubeSim::builder()
        .namespace("ml")
        .pod(
            PodSeed::new("ml", "two")
                .container("trainer", "img")
                .container("sidecar", "img")
                .log("trainer", "from trainer")
                .log("sidecar", "from sidecar"),
        )
        .pod(
            PodSeed::new("ml", "annotated")
                .annotation("modekeeper/telemetry", "sidecar")
                .container("trainer", "img")
                .container("sidecar", "img")
                .log("trainer", "from trainer")
                .log("sidecar", "from sidecar"),
        )
        .token("t0", "alice", [Rule::admin()])
        .start_blocking()
        .unwrap();
    let case = Case::new(&sim, "t0");
    let pod = |name: &str, container: Option<&str>| LogTarget {
        namespace: Some("ml".into()),
        workload: WorkloadRef::Pod(name.into()),
        container: container.map(str::to_string),
        since_seconds: None,
    };
    let err = PodLogSource::open(&opts(&case), pod("two", None), None)
        .err()
        .unwrap()
        .to_string();
    assert_eq!(
        err,
        "pod ml/two has 2 containers (trainer, sidecar): choose one with --container, or name it \
         in the pod template annotation modekeeper/telemetry"
    );
    let mut events = vec![];
    let mut src = PodLogSource::open(&opts(&case), pod("two", Some("sidecar")), None).unwrap();
    assert_eq!(collect(&mut src, 1, &mut events), ["from sidecar"]);
    let mut src = PodLogSource::open(&opts(&case), pod("annotated", None), None).unwrap();
    assert_eq!(collect(&mut src, 1, &mut events), ["from sidecar"]);
    assert_eq!(src.cursor()["pods"]["annotated"]["container"], "sidecar");

    // A finished pod: its log, then Ended.
    sim.set_pod_phase("ml", "annotated", "Succeeded");
    let mut src = PodLogSource::open(&opts(&case), pod("annotated", None), None).unwrap();
    let mut lines = vec![];
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let p = src.poll(&mut lines, Duration::from_millis(200)).unwrap();
        if p == Poll::Ended || Instant::now() > deadline {
            assert_eq!(p, Poll::Ended);
            break;
        }
    }
    assert_eq!(lines.len(), 1);
    assert_eq!(kinds(&src.drain_events()), ["pod_finished"]);
}

#[test]
fn kubectl_logs_sees_the_same_lines() {
    let Some(kc) = kubectl_or_skip("kubectl_logs_sees_the_same_lines") else {
        return;
    };
    let sim = sim(1);
    let case = Case::new(&sim, "t0");
    let pod = pods(&sim).remove(0);
    let at = Utc::now();
    sim.append_log_at("ml", &pod, "trainer", at, &record(&pod, 1));
    sim.append_log_at("ml", &pod, "trainer", at, &record(&pod, 2));
    sim.append_log("ml", &pod, "trainer", "INFO plain text {not json}");
    let mut src = PodLogSource::open(&opts(&case), deployment("trainer"), None).unwrap();
    let mut ours = vec![];
    let deadline = Instant::now() + Duration::from_secs(10);
    while ours.len() < 4 && Instant::now() < deadline {
        src.poll(&mut ours, Duration::from_millis(200)).unwrap();
    }
    assert_eq!(ours.len(), 4);
    // Byte for byte what kubectl prints, newlines included.
    let ours = String::from_utf8(ours.concat()).unwrap();
    let (code, stdout, stderr) = kubectl(
        &kc,
        &case,
        &["-n", "ml", "logs", "--timestamps", &pod, "-c", "trainer"],
    );
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(ours, stdout);
    // And through the workload, as kubectl resolves deploy/NAME.
    let (code, stdout, _) = kubectl(
        &kc,
        &case,
        &["-n", "ml", "logs", "--timestamps", "deploy/trainer"],
    );
    assert_eq!(code, 0);
    assert_eq!(ours, stdout);
    let theirs: Vec<&str> = stdout.lines().collect();
    let cursor = src.cursor();
    let c = &cursor["pods"][&pod];
    assert_eq!(c["lines"], 4);
    assert_eq!(
        c["last_ts"].as_str(),
        theirs[3].split_once(' ').map(|(ts, _)| ts)
    );
}

/// A multi-pod job: `pods` as (pod name, extra labels), each logging steps 1..=3 without a rank.
fn job_sim(kind: ResourceKind, object: Value, pods: &[(&str, &[(&str, &str)])]) -> KubeSim {
    let mut b = KubeSim::builder()
        .namespace("ml")
        .object(kind, object)
        .token("t0", "alice", [Rule::admin()]);
    for (name, labels) in pods {
        let mut p = PodSeed::new("ml", *name).container("trainer", "trainer:1");
        for (k, v) in *labels {
            p = p.label(*k, *v);
        }
        for step in 1..=3 {
            p = p.log(
                "trainer",
                json!({"step": step, "step_time_ms": 100, "node": "n0"}).to_string(),
            );
        }
        b = b.pod(p.log("trainer", "an ordinary log line"));
    }
    b.start_blocking().unwrap()
}

fn ranks_by_step(lines: &[String]) -> Vec<(u64, u64)> {
    let mut v: Vec<(u64, u64)> = lines
        .iter()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .map(|r| (r["step"].as_u64().unwrap(), r["rank"].as_u64().unwrap()))
        .collect();
    v.sort();
    v
}

#[test]
fn a_jobs_pods_are_found_by_label_and_each_record_gets_its_pods_rank() {
    let job = "batch.kubernetes.io/job-name";
    let index = "batch.kubernetes.io/job-completion-index";
    let sim = job_sim(
        ResourceKind::Job,
        json!({"metadata": {"name": "train", "namespace": "ml"},
               "spec": {"template": {"spec": {"containers": [{"name": "trainer", "image": "t"}]}}}}),
        &[
            ("train-0-abcde", &[(job, "train"), (index, "0")]),
            ("train-1-fghij", &[(job, "train"), (index, "1")]),
            // Another job's pod is not followed.
            ("other-0-klmno", &[(job, "other"), (index, "0")]),
        ],
    );
    let case = Case::new(&sim, "t0");
    let target = LogTarget {
        namespace: Some("ml".into()),
        workload: WorkloadRef::Job("train".into()),
        container: None,
        since_seconds: None,
    };
    let mut src = PodLogSource::open(&opts(&case), target, None).unwrap();
    let mut events = vec![];
    let lines = collect(&mut src, 8, &mut events);
    // Both ranks of every step: without the rank, the ingest would drop one as a duplicate.
    assert_eq!(
        ranks_by_step(&lines),
        [(1, 0), (1, 1), (2, 0), (2, 1), (3, 0), (3, 1)]
    );
    assert_eq!(
        lines
            .iter()
            .filter(|l| *l == "an ordinary log line")
            .count(),
        2,
        "other lines pass unchanged"
    );
    assert_eq!(
        sorted(src.pods()),
        ["train-0-abcde", "train-1-fghij"],
        "found by the job-name label"
    );
}

#[test]
fn a_pytorchjobs_worker_ranks_follow_the_master() {
    let name = "training.kubeflow.org/job-name";
    let rtype = "training.kubeflow.org/replica-type";
    let index = "training.kubeflow.org/replica-index";
    let sim = job_sim(
        ResourceKind::PyTorchJob,
        json!({"metadata": {"name": "ddp", "namespace": "ml"}, "spec": {"pytorchReplicaSpecs": {}}}),
        &[
            (
                "ddp-master-0",
                &[(name, "ddp"), (rtype, "master"), (index, "0")],
            ),
            (
                "ddp-worker-0",
                &[(name, "ddp"), (rtype, "worker"), (index, "0")],
            ),
            (
                "ddp-worker-1",
                &[(name, "ddp"), (rtype, "worker"), (index, "1")],
            ),
        ],
    );
    let case = Case::new(&sim, "t0");
    let target = LogTarget {
        namespace: Some("ml".into()),
        workload: WorkloadRef::PyTorchJob("ddp".into()),
        container: None,
        since_seconds: None,
    };
    let mut src = PodLogSource::open(&opts(&case), target, None).unwrap();
    let mut events = vec![];
    let lines = collect(&mut src, 12, &mut events);
    let ranks: BTreeSet<u64> = ranks_by_step(&lines).into_iter().map(|(_, r)| r).collect();
    assert_eq!(ranks, BTreeSet::from([0, 1, 2]));
    // A missing job is a clear error naming the CRD.
    let missing = LogTarget {
        namespace: Some("ml".into()),
        workload: WorkloadRef::PyTorchJob("nope".into()),
        container: None,
        since_seconds: None,
    };
    let e = PodLogSource::open(&opts(&case), missing, None)
        .err()
        .unwrap()
        .to_string();
    assert!(
        e.contains("pytorchjob ml/nope not found") && e.contains("pytorchjobs.kubeflow.org"),
        "{e}"
    );
}
