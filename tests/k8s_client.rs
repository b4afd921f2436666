//! The `ClusterApi` implementation (kube-rs) through the sync facade, against kube-sim: each call,
//! its error classes, and `read_current_knobs`.

mod k8s_common;

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_common::{Case, KNOB, closed_port, standard};
use kube_sim::{Fault, ResourceKind};
use modekeeper::k8s::{
    AccessCheck, Cluster, ClusterApi, ClusterErrorKind, ConnectOptions, KnobMergePatch,
    KnobReadError, PatchMode,
};
use modekeeper::plan::{KnobPatch, Target, WorkloadKind};
use serde_json::json;

fn connect(case: &Case, timeout_ms: Option<u64>) -> Cluster {
    let opts = ConnectOptions::from_flags(
        Some(case.kubeconfig.to_str().unwrap()),
        None,
        None,
        timeout_ms,
    );
    Cluster::connect(&opts).expect("connect")
}

fn trainer() -> Target {
    Target::new("ml", "trainer", WorkloadKind::Deployment).unwrap()
}

fn knob_patch(value: &str) -> KnobPatch {
    KnobPatch {
        pod_template: BTreeMap::from([("grad_accum_steps".to_string(), value.to_string())]),
        ..KnobPatch::default()
    }
}

#[test]
fn calls_return_what_the_server_holds() {
    let sim = standard().start_blocking().unwrap();
    let case = Case::new(&sim, "t0");
    let c = connect(&case, None);
    assert_eq!(c.identity().context.as_deref(), Some("kube-sim"));
    assert_eq!(c.server_version().unwrap().git_version, "v1.32.4+kube-sim");

    let api = c.api();
    let ns = c.block_on(api.get_namespace("ml")).unwrap().unwrap();
    assert_eq!(ns.phase.as_deref(), Some("Active"));
    assert_eq!(c.block_on(api.get_namespace("nope")).unwrap(), None);

    let w = c.block_on(api.get_workload(&trainer())).unwrap().unwrap();
    let stored = sim.deployment("ml", "trainer").unwrap();
    assert_eq!(w.uid, stored["metadata"]["uid"].as_str().unwrap());
    assert_eq!(
        w.resource_version,
        stored["metadata"]["resourceVersion"].as_str().unwrap()
    );
    assert_eq!(w.template_annotations[KNOB], "4");
    let missing = Target::new("ml", "nope", WorkloadKind::StatefulSet).unwrap();
    assert_eq!(c.block_on(api.get_workload(&missing)).unwrap(), None);

    let can = c
        .block_on(api.review_access(&AccessCheck::on_workload("patch", &trainer())))
        .unwrap();
    assert!(can.allowed);

    // A dry run answers the would-be object and stores nothing; a write stores it.
    let body = KnobMergePatch::new(&knob_patch("8"), Some(&w.resource_version));
    let dry = c
        .block_on(api.patch_workload(&trainer(), &body, PatchMode::DryRun))
        .unwrap();
    assert_eq!(dry.template_annotations[KNOB], "8");
    assert_eq!(
        sim.template_annotation(ResourceKind::Deployment, "ml", "trainer", KNOB)
            .as_deref(),
        Some("4")
    );
    let written = c
        .block_on(api.patch_workload(&trainer(), &body, PatchMode::Write))
        .unwrap();
    assert_ne!(written.resource_version, w.resource_version);
    assert_eq!(
        sim.template_annotation(ResourceKind::Deployment, "ml", "trainer", KNOB)
            .as_deref(),
        Some("8")
    );
    // The same precondition is now stale: 409.
    let e = c
        .block_on(api.patch_workload(&trainer(), &body, PatchMode::DryRun))
        .unwrap_err();
    assert_eq!((e.kind, e.status), (ClusterErrorKind::Conflict, Some(409)));
    let managers: Vec<String> =
        sim.deployment("ml", "trainer").unwrap()["metadata"]["managedFields"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["manager"].as_str().unwrap().to_string())
            .collect();
    assert!(managers.contains(&"modekeeper".to_string()), "{managers:?}");
}

#[test]
fn errors_are_classified() {
    let sim = standard().start_blocking().unwrap();
    let ro = connect(&Case::new(&sim, "ro"), None);
    let body = KnobMergePatch::new(&knob_patch("8"), None);
    let e = ro
        .block_on(
            ro.api()
                .patch_workload(&trainer(), &body, PatchMode::DryRun),
        )
        .unwrap_err();
    assert_eq!((e.kind, e.status), (ClusterErrorKind::Forbidden, Some(403)));
    let r = e.rbac.expect("parsed denial");
    assert_eq!((r.user.as_str(), r.verb.as_str()), ("bob", "patch"));
    let cannot = ro
        .block_on(
            ro.api()
                .review_access(&AccessCheck::on_workload("patch", &trainer())),
        )
        .unwrap();
    assert!(!cannot.allowed);

    let bad = connect(&Case::new(&sim, "nope"), None);
    let e = bad.server_version().unwrap_err();
    assert_eq!(
        (e.kind, e.status),
        (ClusterErrorKind::Unauthorized, Some(401))
    );

    let dead = connect(
        &Case::with_server(&format!("https://127.0.0.1:{}", closed_port()), None),
        None,
    );
    assert_eq!(
        dead.server_version().unwrap_err().kind,
        ClusterErrorKind::Unreachable
    );

    // TLS against a server whose certificate the kubeconfig's (absent) CA does not vouch for.
    let untrusted = connect(&Case::with_server(&sim.https_url(), Some("t0")), None);
    let e = untrusted.server_version().unwrap_err();
    assert_eq!(e.kind, ClusterErrorKind::Unreachable, "{e}");

    sim.inject_fault(Fault::status("/api/v1/namespaces/ml", 503));
    let admin = connect(&Case::new(&sim, "t0"), Some(300));
    let e = admin.block_on(admin.api().get_namespace("ml")).unwrap_err();
    assert_eq!(e.kind, ClusterErrorKind::ServerError);
    sim.clear_faults();
    sim.inject_fault(Fault::hang("/version"));
    let started = std::time::Instant::now();
    let e = admin.server_version().unwrap_err();
    assert_eq!(e.kind, ClusterErrorKind::Timeout);
    assert!(
        e.message.ends_with("no answer within 300ms"),
        "{}",
        e.message
    );
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[test]
fn current_knobs_come_from_the_pod_template() {
    let sim = standard()
        .workload(
            kube_sim::WorkloadSeed::deployment("ml", "odd")
                .template_annotation("modekeeper/knob.lr_scale", "fast"),
        )
        .start_blocking()
        .unwrap();
    let c = connect(&Case::new(&sim, "t0"), None);
    assert_eq!(
        c.read_current_knobs(&trainer()).unwrap(),
        BTreeMap::from([("grad_accum_steps".to_string(), 4.0)])
    );
    let db = Target::new("ml", "db", WorkloadKind::StatefulSet).unwrap();
    assert_eq!(
        c.read_current_knobs(&db).unwrap(),
        BTreeMap::from([("grad_accum_steps".to_string(), 2.0)])
    );
    let gone = Target::new("ml", "gone", WorkloadKind::Deployment).unwrap();
    assert!(matches!(
        c.read_current_knobs(&gone),
        Err(KnobReadError::WorkloadMissing { .. })
    ));
    let odd = Target::new("ml", "odd", WorkloadKind::Deployment).unwrap();
    let e = c.read_current_knobs(&odd).unwrap_err().to_string();
    assert!(e.contains("\"fast\" is not a number"), "{e}");
    // A cluster problem is a cluster error, not "no knobs".
    sim.inject_fault(Fault::status("/apis/apps/v1/**", 500));
    assert!(matches!(
        c.read_current_knobs(&trainer()),
        Err(KnobReadError::Cluster(e)) if e.kind == ClusterErrorKind::ServerError
    ));
}

mod events {
    use super::*;
    use modekeeper::k8s::{EventType, WorkloadEvent};

    #[test]
    fn an_event_names_the_workload_and_a_repeat_becomes_a_series() {
        let sim = standard().start_blocking().unwrap();
        let case = Case::new(&sim, "t0");
        let c = connect(&case, Some(5000));
        let w = c
            .block_on(c.api().get_workload(&trainer()))
            .unwrap()
            .unwrap();
        let rec = c.api().event_recorder(Some("test-host".into()));
        let ev = WorkloadEvent::new(
            EventType::Warning,
            "ApplyBlocked",
            "Apply",
            "blocked: kill_switch_active",
        );
        c.block_on(rec.publish(&w, &ev)).unwrap();
        let events = sim.list(ResourceKind::Event, Some("ml"));
        assert_eq!(events.len(), 1);
        let e = &events[0];
        assert_eq!(e["type"], "Warning");
        assert_eq!(e["reason"], "ApplyBlocked");
        assert_eq!(e["action"], "Apply");
        assert_eq!(e["message"], "blocked: kill_switch_active");
        assert_eq!(e["reportingComponent"], "modekeeper");
        assert_eq!(e["reportingInstance"], "test-host");
        assert_eq!(e["involvedObject"]["kind"], "Deployment");
        assert_eq!(e["involvedObject"]["apiVersion"], "apps/v1");
        assert_eq!(e["involvedObject"]["name"], "trainer");
        assert_eq!(e["involvedObject"]["uid"], json!(w.uid));
        assert!(e["involvedObject"].get("resourceVersion").is_none());
        // The same event again: one object, a series of 2 (kube-runtime's recorder).
        c.block_on(rec.publish(&w, &ev)).unwrap();
        let events = sim.list(ResourceKind::Event, Some("ml"));
        assert_eq!(events.len(), 1);
        assert_eq!(events[0]["series"]["count"], 2);
        // Another reason is another event.
        let applied = WorkloadEvent::new(EventType::Normal, "KnobsApplied", "Apply", "4 -> 8");
        c.block_on(rec.publish(&w, &applied)).unwrap();
        assert_eq!(sim.list(ResourceKind::Event, Some("ml")).len(), 2);
        assert_eq!((rec.posted(), rec.failed()), (3, 0));
    }

    /// With no request timeout (`--request-timeout 0`), a hanging Events endpoint still gives
    /// the loop back: the post fails as a timeout after `MAX_EVENT_WAIT` instead of never.
    #[test]
    fn a_hanging_event_post_is_bounded_without_a_request_timeout() {
        let sim = standard().start_blocking().unwrap();
        let case = Case::new(&sim, "t0");
        let c = connect(&case, Some(0));
        let w = c
            .block_on(c.api().get_workload(&trainer()))
            .unwrap()
            .unwrap();
        sim.inject_fault(Fault::hang("/apis/events.k8s.io/**"));
        let rec = c.api().event_recorder(None);
        let ev = WorkloadEvent::new(EventType::Normal, "KnobsApplied", "Apply", "x");
        let t = std::time::Instant::now();
        let limit = modekeeper::k8s::MAX_EVENT_WAIT + Duration::from_secs(5);
        let got = c
            .block_on(async { tokio::time::timeout(limit, rec.publish(&w, &ev)).await })
            .expect("the post never returned");
        assert_eq!(got.unwrap_err().kind, ClusterErrorKind::Timeout);
        assert!(t.elapsed() >= modekeeper::k8s::MAX_EVENT_WAIT);
        assert_eq!((rec.posted(), rec.failed()), (0, 1));
    }

    #[test]
    fn a_refused_event_is_an_error_and_counted() {
        let sim = standard().start_blocking().unwrap();
        let case = Case::new(&sim, "ro");
        let c = connect(&case, Some(5000));
        let w = c
            .block_on(c.api().get_workload(&trainer()))
            .unwrap()
            .unwrap();
        let rec = c.api().event_recorder(None);
        let ev = WorkloadEvent::new(EventType::Normal, "KnobsApplied", "Apply", "x");
        let err = c.block_on(rec.publish(&w, &ev)).unwrap_err();
        assert_eq!(err.kind, ClusterErrorKind::Forbidden, "{err}");
        assert_eq!((rec.posted(), rec.failed()), (0, 1));
        assert!(sim.list(ResourceKind::Event, None).is_empty());
    }
}

/// kube-runtime's watcher (what the controller will use) against kube-sim: a label-selected list
/// and watch, objects entering and leaving the selector, bookmarks, relist on 410 Gone, and the
/// streaming-list mode.
mod watcher {
    use super::*;
    use futures_util::StreamExt;
    use k8s_openapi::api::apps::v1::Deployment;
    use kube::runtime::watcher::{self, Event};
    use kube_sim::{KubeSim, WorkloadSeed};

    const OPT_IN: &str = "modekeeper.io/enabled";

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    }

    async fn client(case: &Case) -> kube::Client {
        let kc = kube::config::Kubeconfig::read_from(&case.kubeconfig).unwrap();
        let cfg = kube::Config::from_custom_kubeconfig(kc, &Default::default())
            .await
            .unwrap();
        kube::Client::try_from(cfg).unwrap()
    }

    /// Name of an event's object, or the event's kind for Init/InitDone/errors.
    fn describe(ev: &Result<Event<Deployment>, watcher::Error>) -> String {
        let name = |d: &Deployment| d.metadata.name.clone().unwrap_or_default();
        match ev {
            Ok(Event::Init) => "Init".into(),
            Ok(Event::InitApply(d)) => format!("InitApply {}", name(d)),
            Ok(Event::InitDone) => "InitDone".into(),
            Ok(Event::Apply(d)) => format!("Apply {}", name(d)),
            Ok(Event::Delete(d)) => format!("Delete {}", name(d)),
            Err(e) => format!("Err {e}"),
        }
    }

    fn sim() -> KubeSim {
        KubeSim::builder()
            .namespace("ml")
            .namespace("other")
            .workload(WorkloadSeed::deployment("ml", "trainer").label(OPT_IN, "true"))
            .workload(WorkloadSeed::deployment("other", "eval"))
            .token("t0", "alice", [kube_sim::Rule::admin()])
            .bookmark_interval(Duration::from_millis(200))
            .start_blocking()
            .unwrap()
    }

    fn set_opt_in(sim: &KubeSim, ns: &str, name: &str, on: bool) {
        sim.modify(ResourceKind::Deployment, ns, name, "test", |d| {
            let labels = d["metadata"]["labels"].as_object_mut().unwrap();
            if on {
                labels.insert(OPT_IN.into(), "true".into());
            } else {
                labels.remove(OPT_IN);
            }
        });
    }

    #[test]
    fn a_labelled_watch_across_namespaces_sees_workloads_opt_in_and_out() {
        let sim = sim();
        let case = Case::new(&sim, "t0");
        let rt = runtime();
        let seen = rt.block_on(async {
            let api: kube::Api<Deployment> = kube::Api::all(client(&case).await);
            let cfg = watcher::Config::default().labels(&format!("{OPT_IN}=true"));
            let mut stream = watcher::watcher(api, cfg).boxed();
            let mut seen = vec![];
            for _ in 0..3 {
                seen.push(describe(&stream.next().await.unwrap()));
            }
            set_opt_in(&sim, "other", "eval", true);
            seen.push(describe(&stream.next().await.unwrap()));
            set_opt_in(&sim, "ml", "trainer", false);
            seen.push(describe(&stream.next().await.unwrap()));
            seen
        });
        assert_eq!(
            seen,
            [
                "Init",
                "InitApply trainer",
                "InitDone",
                "Apply eval",
                "Delete trainer"
            ]
        );
        let watch = sim
            .requests()
            .into_iter()
            .find(|r| r.query_param("watch").as_deref() == Some("true"))
            .expect("a watch request");
        assert_eq!(watch.path, "/apis/apps/v1/deployments");
        assert_eq!(
            watch.query_param("allowWatchBookmarks").as_deref(),
            Some("true")
        );
        assert_eq!(
            watch.query_param("labelSelector").as_deref(),
            Some("modekeeper.io/enabled=true")
        );
    }

    /// The watch ends (timeoutSeconds) while 4097 unrelated changes compact the history. Without
    /// bookmarks the watcher resumes from its last seen resourceVersion, gets 410 Gone and relists;
    /// with them it resumes from the final bookmark and carries on.
    #[test]
    fn bookmarks_spare_a_relist_that_410_gone_forces_without_them() {
        for bookmarks in [false, true] {
            let sim = sim();
            let case = Case::new(&sim, "t0");
            let rt = runtime();
            let inits = rt.block_on(async {
                let api: kube::Api<Deployment> = kube::Api::all(client(&case).await);
                let mut cfg = watcher::Config::default()
                    .labels(&format!("{OPT_IN}=true"))
                    .timeout(1);
                if !bookmarks {
                    cfg = cfg.disable_bookmarks();
                }
                // Polled all along (a watcher sends its watch request only when polled).
                let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
                tokio::spawn(async move {
                    let mut stream = watcher::watcher(api, cfg).boxed();
                    while let Some(ev) = stream.next().await {
                        if tx.send(describe(&ev)).is_err() {
                            break;
                        }
                    }
                });
                for want in ["Init", "InitApply trainer", "InitDone"] {
                    assert_eq!(rx.recv().await.unwrap(), want);
                }
                // Let the watch start, then churn other objects past the history kept (in
                // chunks, so the server's watch keeps up as a healthy one does).
                tokio::time::sleep(Duration::from_millis(100)).await;
                for i in 0..kube_sim::store::EVENT_HISTORY + 1 {
                    sim.modify(ResourceKind::Namespace, "", "other", "churn", |n| {
                        n["metadata"]["labels"]["i"] = json!(i.to_string())
                    });
                    if i % 256 == 0 {
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                }
                // After the watch's timeout, a change that must arrive either way.
                tokio::time::sleep(Duration::from_millis(1500)).await;
                set_opt_in(&sim, "other", "eval", true);
                let mut seen = vec![];
                loop {
                    let ev = tokio::time::timeout(Duration::from_secs(10), rx.recv())
                        .await
                        .expect("the watcher carries on")
                        .unwrap();
                    seen.push(ev);
                    let has = |want: &str| seen.iter().any(|s| s == want);
                    let relisting = has("Init") && !has("InitDone");
                    if (has("Apply eval") || has("InitApply eval")) && !relisting {
                        break;
                    }
                }
                seen
            });
            let relisted = inits.iter().any(|s| s == "Init");
            assert_eq!(relisted, !bookmarks, "bookmarks={bookmarks}: {inits:?}");
            if !bookmarks {
                assert!(
                    inits[0].starts_with("Err"),
                    "the 410 comes first: {inits:?}"
                );
                assert!(inits.iter().any(|s| s.ends_with(" eval")), "{inits:?}");
            } else {
                assert_eq!(inits, ["Apply eval"]);
            }
        }
    }

    /// The library's view of the same watch (what the controller will consume).
    #[test]
    fn watch_workloads_yields_workloads_and_their_opt_out() {
        use modekeeper::k8s::WorkloadChange;
        let sim = sim();
        let case = Case::new(&sim, "t0");
        let c = connect(&case, Some(5000));
        let mut stream = Box::pin(c.api().watch_workloads(
            WorkloadKind::Deployment,
            None,
            &format!("{OPT_IN}=true"),
        ));
        let mut next = || c.block_on(stream.next()).unwrap().unwrap();
        assert_eq!(next(), WorkloadChange::ResyncStarted);
        let WorkloadChange::Applied(w) = next() else {
            panic!("expected the labelled workload")
        };
        assert_eq!((w.target.namespace(), w.target.name()), ("ml", "trainer"));
        let stored = sim.deployment("ml", "trainer").unwrap();
        assert_eq!(w.uid, stored["metadata"]["uid"].as_str().unwrap());
        assert_eq!(w.object["kind"], "Deployment");
        assert_eq!(next(), WorkloadChange::ResyncDone);
        set_opt_in(&sim, "ml", "trainer", false);
        assert_eq!(next(), WorkloadChange::Deleted(trainer()));
    }

    /// A watch with nothing to say for longer than the request timeout (the apiserver's
    /// bookmarks come about once a minute) stays open: the request timeout bounds calls, not a
    /// watch's quiet reads (it used to end every idle watch in an error and a restart).
    #[test]
    fn a_quiet_watch_outlives_the_request_timeout() {
        use modekeeper::k8s::WorkloadChange;
        let sim = KubeSim::builder()
            .namespace("ml")
            .workload(WorkloadSeed::deployment("ml", "trainer").label(OPT_IN, "true"))
            .token("t0", "alice", [kube_sim::Rule::admin()])
            .start_blocking()
            .unwrap();
        let case = Case::new(&sim, "t0");
        let c = connect(&case, Some(300));
        let mut stream = Box::pin(c.api().watch_workloads(
            WorkloadKind::Deployment,
            None,
            &format!("{OPT_IN}=true"),
        ));
        for _ in 0..3 {
            c.block_on(stream.next()).unwrap().unwrap();
        }
        let quiet = c.block_on(async {
            tokio::time::timeout(Duration::from_millis(1500), stream.next()).await
        });
        assert!(quiet.is_err(), "the quiet watch yielded {quiet:?}");
        set_opt_in(&sim, "ml", "trainer", false);
        assert_eq!(
            c.block_on(stream.next()).unwrap().unwrap(),
            WorkloadChange::Deleted(trainer())
        );
    }

    #[test]
    fn a_streaming_list_ends_its_initial_events_with_a_bookmark() {
        let sim = sim();
        let case = Case::new(&sim, "t0");
        let rt = runtime();
        let seen = rt.block_on(async {
            let api: kube::Api<Deployment> = kube::Api::all(client(&case).await);
            let cfg = watcher::Config::default()
                .labels(&format!("{OPT_IN}=true"))
                .streaming_lists();
            let mut stream = watcher::watcher(api, cfg).boxed();
            let mut seen = vec![];
            for _ in 0..3 {
                seen.push(describe(&stream.next().await.unwrap()));
            }
            set_opt_in(&sim, "other", "eval", true);
            seen.push(describe(&stream.next().await.unwrap()));
            seen
        });
        assert_eq!(
            seen,
            ["Init", "InitApply trainer", "InitDone", "Apply eval"]
        );
        assert!(
            sim.requests()
                .iter()
                .all(|r| !(r.query_param("watch").is_none() && r.path.ends_with("/deployments"))),
            "no LIST request in streaming mode"
        );
    }
}

/// Leader election over a Lease against kube-sim, each contender with its own connection on its
/// own thread (real concurrency at the server).
mod lease {
    use super::*;
    use modekeeper::k8s::{LeaderElector, LeaseConfig};
    use std::sync::{Arc, Barrier};
    use std::time::Instant;

    fn contender(case: &Case, lease: &str, id: &str, duration_ms: u64) -> (Cluster, LeaderElector) {
        let c = connect(case, Some(5000));
        let mut cfg = LeaseConfig::new("ml", lease, id);
        cfg.lease_duration = Duration::from_millis(duration_ms);
        cfg.renew_deadline = Duration::from_millis(duration_ms * 2 / 3);
        cfg.retry_period = Duration::from_millis(50);
        let e = LeaderElector::new(c.api(), cfg).unwrap();
        (c, e)
    }

    fn jitter(round: u64, who: u64) -> Duration {
        // Deterministic spread of 0..4 ms so the requests interleave differently each round.
        Duration::from_micros((round * 7919 + who * 104_729) % 4000)
    }

    /// Many rounds of three contenders racing for a new Lease, then the losers racing for it
    /// once the winner releases it: every round has exactly one leader, whom the Lease names.
    #[test]
    fn racing_contenders_never_make_two_leaders() {
        let sim = standard().start_blocking().unwrap();
        let case = Case::new(&sim, "t0");
        for round in 0..20u64 {
            let name = format!("race-{round}");
            let barrier = Arc::new(Barrier::new(3));
            let results: Vec<(String, bool, bool)> = std::thread::scope(|s| {
                let handles: Vec<_> = (0..3u64)
                    .map(|who| {
                        let (case, name, barrier) = (&case, &name, barrier.clone());
                        s.spawn(move || {
                            let id = format!("replica-{who}");
                            let (c, mut e) = contender(case, name, &id, 30_000);
                            barrier.wait();
                            std::thread::sleep(jitter(round, who));
                            let first = c.block_on(e.try_acquire_or_renew()).unwrap();
                            barrier.wait();
                            if first {
                                c.block_on(e.release()).unwrap();
                                assert!(!e.is_leader());
                            }
                            barrier.wait();
                            std::thread::sleep(jitter(round + 1, who));
                            let second = !first && c.block_on(e.try_acquire_or_renew()).unwrap();
                            assert_eq!(e.is_leader(), second);
                            (id, first, second)
                        })
                    })
                    .collect();
                handles.into_iter().map(|h| h.join().unwrap()).collect()
            });
            let firsts: Vec<&str> = results
                .iter()
                .filter(|r| r.1)
                .map(|r| r.0.as_str())
                .collect();
            let seconds: Vec<&str> = results
                .iter()
                .filter(|r| r.2)
                .map(|r| r.0.as_str())
                .collect();
            assert_eq!(firsts.len(), 1, "round {round}: {results:?}");
            assert_eq!(seconds.len(), 1, "round {round}: {results:?}");
            let stored = sim.get(ResourceKind::Lease, "ml", &name).unwrap();
            assert_eq!(
                stored["spec"]["holderIdentity"], seconds[0],
                "round {round}"
            );
            assert_eq!(stored["spec"]["leaseTransitions"], 1, "round {round}");
        }
        // The races were decided by the server's 409s.
        assert!(
            sim.requests().iter().any(|r| r.status == 409),
            "no conflict in 20 rounds"
        );
    }

    /// A lease duration that is not a whole number of seconds: the Lease must not tell the
    /// standbys a shorter duration than the leader's renew deadline assumes (it used to write
    /// 1900 ms as `leaseDurationSeconds: 1`, so b took over after 1 s while a, renew deadline
    /// 1.5 s, still led).
    #[test]
    fn a_fractional_lease_duration_never_makes_two_leaders() {
        let sim = standard().start_blocking().unwrap();
        let case = Case::new(&sim, "t0");
        let (ca, mut a) = contender(&case, "frac", "a", 1900);
        let (cb, mut b) = contender(&case, "frac", "b", 1900);
        assert!(ca.block_on(a.try_acquire_or_renew()).unwrap());
        assert!(!cb.block_on(b.try_acquire_or_renew()).unwrap());
        std::thread::sleep(Duration::from_millis(1100));
        let b_leads = cb.block_on(b.try_acquire_or_renew()).unwrap();
        assert!(
            !(b_leads && a.is_leader()),
            "two leaders: {:?}",
            sim.get(ResourceKind::Lease, "ml", "frac").unwrap()["spec"]
        );
        assert_eq!(
            sim.get(ResourceKind::Lease, "ml", "frac").unwrap()["spec"]["leaseDurationSeconds"],
            2,
            "rounded up"
        );
    }

    /// The answer to a renewal comes back late (the write was stored at once): the leader's renew
    /// deadline must count from when it sent the renewal, not from the late answer, since the
    /// standbys count the lease duration from when they saw the stored record.
    #[test]
    fn a_late_answer_to_a_renewal_does_not_extend_leadership() {
        let sim = standard().start_blocking().unwrap();
        let case = Case::new(&sim, "t0");
        let (ca, mut a) = contender(&case, "late", "a", 1000);
        let (cb, mut b) = contender(&case, "late", "b", 1000);
        a = {
            let mut cfg = a.config().clone();
            cfg.renew_deadline = Duration::from_millis(900);
            LeaderElector::new(ca.api(), cfg).unwrap()
        };
        assert!(ca.block_on(a.try_acquire_or_renew()).unwrap());
        sim.inject_fault(
            Fault::delay_after("/apis/coordination.k8s.io/**", Duration::from_millis(500))
                .method("PUT")
                .times(1),
        );
        let t0 = Instant::now();
        std::thread::scope(|s| {
            let renewal = s.spawn(|| ca.block_on(a.try_acquire_or_renew()).unwrap());
            std::thread::sleep(Duration::from_millis(150));
            // b sees a's renewed record (stored, its answer still on the way).
            assert!(!cb.block_on(b.try_acquire_or_renew()).unwrap());
            assert!(renewal.join().unwrap(), "a renewed");
        });
        // b takes over once the record it saw is a lease duration old (about t0 + 1.15 s): a's
        // renew deadline (0.9 s) counted from its send (t0) has run out by then; counted from
        // the late answer (t0 + 0.5 s) it would still run.
        let took = loop {
            if cb.block_on(b.try_acquire_or_renew()).unwrap() {
                break t0.elapsed();
            }
            assert!(t0.elapsed() < Duration::from_secs(5), "no takeover");
            std::thread::sleep(Duration::from_millis(20));
        };
        assert!(
            took >= Duration::from_millis(1100),
            "took over early: {took:?}"
        );
        assert!(!a.is_leader(), "two leaders");
    }

    /// A renew deadline that is not shorter than the lease duration would let a leader keep
    /// acting after a standby took over: refused up front.
    #[test]
    fn a_renew_deadline_not_below_the_lease_duration_is_refused() {
        let sim = standard().start_blocking().unwrap();
        let case = Case::new(&sim, "t0");
        let c = connect(&case, Some(5000));
        let mut cfg = LeaseConfig::new("ml", "bad", "a");
        cfg.renew_deadline = cfg.lease_duration;
        let err = LeaderElector::new(c.api(), cfg).err().expect("refused");
        assert!(err.to_string().contains("renew deadline"), "{err}");
        let mut cfg = LeaseConfig::new("ml", "bad", "a");
        cfg.retry_period = cfg.renew_deadline;
        assert!(LeaderElector::new(c.api(), cfg).is_err());
    }

    /// The leader stops renewing: the standby, which keeps trying, leads once the record has not
    /// changed for the lease duration — not before — and the old leader stops calling itself
    /// leader after its renew deadline.
    #[test]
    fn a_standby_takes_over_within_the_lease_duration() {
        let sim = standard().start_blocking().unwrap();
        let case = Case::new(&sim, "t0");
        let (ca, mut a) = contender(&case, "leader", "a", 1000);
        let (cb, mut b) = contender(&case, "leader", "b", 1000);
        assert!(ca.block_on(a.try_acquire_or_renew()).unwrap());
        // While a renews, b never leads.
        let t = Instant::now();
        while t.elapsed() < Duration::from_millis(1500) {
            assert!(ca.block_on(a.try_acquire_or_renew()).unwrap());
            assert!(!cb.block_on(b.try_acquire_or_renew()).unwrap());
            std::thread::sleep(Duration::from_millis(50));
        }
        // a stops (killed: no release).
        let stopped = Instant::now();
        let took = loop {
            if cb.block_on(b.try_acquire_or_renew()).unwrap() {
                break stopped.elapsed();
            }
            assert!(stopped.elapsed() < Duration::from_secs(5), "no takeover");
            std::thread::sleep(b.next_wait());
        };
        assert!(
            took >= Duration::from_millis(900),
            "took over early: {took:?}"
        );
        // Within the lease duration of the last record b saw, plus its retry (and CI slack).
        assert!(
            took <= Duration::from_millis(1500),
            "took over late: {took:?}"
        );
        assert!(!a.is_leader(), "past its renew deadline");
        assert!(b.is_leader());
        let stored = sim.get(ResourceKind::Lease, "ml", "leader").unwrap();
        assert_eq!(stored["spec"]["holderIdentity"], "b");
        assert_eq!(stored["spec"]["leaseTransitions"], 1);
        // a comes back: it sees b's fresh record and stays a standby.
        assert!(!ca.block_on(a.try_acquire_or_renew()).unwrap());
        // b shuts down cleanly: a takes over at its next round, not after the lease duration.
        cb.block_on(b.release()).unwrap();
        assert!(ca.block_on(a.try_acquire_or_renew()).unwrap());
        assert_eq!(
            sim.get(ResourceKind::Lease, "ml", "leader").unwrap()["spec"]["leaseTransitions"],
            2
        );
    }
}

#[path = "k8s_state/mod.rs"]
mod state;
