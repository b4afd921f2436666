//! `PodLogStream` (the controller's async pod-log stream) against kube-sim: many streams on one
//! multi-thread runtime sharing one `KubeCluster`, the byte budget between a stream's pod tasks
//! and its consumer, and an adversarial run (cut streams, 5xx, slow answers, jittery consumers,
//! streams dropped and reopened from their cursor) in which every line is read exactly once.

mod k8s_common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use k8s_common::Case;
use kube_sim::{Fault, FaultAction, KubeSim, ResourceKind, Rule, WorkloadSeed};
use modekeeper::k8s::{
    ConnectOptions, KubeCluster, LogTarget, PodLogSource, PodLogStream, STREAM_BUFFER_BYTES,
    WorkloadRef,
};
use modekeeper::telemetry::live::{LiveSource, Poll};
use serde_json::Value;

fn opts(case: &Case, namespace: Option<&str>) -> ConnectOptions {
    ConnectOptions::from_flags(
        Some(case.kubeconfig.to_str().unwrap()),
        None,
        namespace,
        Some(5000),
    )
}

fn deployment(ns: Option<&str>, name: &str) -> LogTarget {
    LogTarget {
        namespace: ns.map(str::to_string),
        workload: WorkloadRef::Deployment(name.into()),
        container: None,
        since_seconds: None,
    }
}

fn sim_with(n: usize, ns: &str) -> KubeSim {
    let mut b = KubeSim::builder()
        .namespace(ns)
        .token("t0", "alice", [Rule::admin()]);
    for i in 0..n {
        b = b.workload(WorkloadSeed::deployment(ns, format!("w{i}")));
    }
    b.start_blocking().unwrap()
}

fn runtime(threads: usize) -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .enable_all()
        .build()
        .unwrap()
}

/// The text after the kubelet timestamp, without the newline.
fn text(line: &[u8]) -> String {
    let s = std::str::from_utf8(line).unwrap();
    let s = s.strip_suffix('\n').expect("a line end");
    s.split_once(' ').expect("a timestamp prefix").1.to_string()
}

/// Polls until `n` lines arrived or `limit` passed.
async fn read_n(s: &mut PodLogStream, n: usize, limit: Duration) -> Vec<String> {
    let deadline = Instant::now() + limit;
    let mut got = vec![];
    while got.len() < n && Instant::now() < deadline {
        let mut batch = vec![];
        assert_eq!(
            s.poll(&mut batch, Duration::from_millis(100))
                .await
                .unwrap(),
            Poll::Open
        );
        got.extend(batch.iter().map(|l| text(l)));
    }
    got
}

#[test]
fn streams_share_one_cluster_client_on_a_multi_thread_runtime() {
    let sim = sim_with(3, "ml");
    let case = Case::new(&sim, "t0");
    let rt = runtime(2);
    // The kubeconfig context has no namespace: `-n ml` makes it the identity's, which a target
    // without a namespace follows.
    let cluster = Arc::new(
        rt.block_on(KubeCluster::connect(&opts(&case, Some("ml"))))
            .unwrap(),
    );
    let base = Utc::now() - chrono::Duration::seconds(30);
    let mut newest = BTreeMap::new();
    for w in 0..3 {
        let pod = sim.pod_names(ResourceKind::Deployment, "ml", &format!("w{w}"))[0].clone();
        for i in 0..20 {
            let t = base + chrono::Duration::milliseconds(i * 100 + w);
            sim.append_log_at("ml", &pod, "trainer", t, &format!("w{w} line {i}"));
            newest.insert(w, t);
        }
    }
    let handles: Vec<_> = (0..3)
        .map(|w| {
            let cluster = cluster.clone();
            // Spawned: the stream and its poll future are Send.
            rt.spawn(async move {
                let mut s = PodLogStream::open(&cluster, deployment(None, &format!("w{w}")), None)
                    .await
                    .unwrap();
                assert_eq!(s.last_line_time(), None);
                let got = read_n(&mut s, 20, Duration::from_secs(15)).await;
                (w, got, s.last_line_time(), s.describe(), s.pods())
            })
        })
        .collect();
    for h in handles {
        let (w, got, last, describe, pods) = rt.block_on(h).unwrap();
        let want: Vec<String> = (0..20).map(|i| format!("w{w} line {i}")).collect();
        assert_eq!(got, want);
        // The kubelet stamps with nanoseconds; the newest handed out is the last appended.
        assert_eq!(last, Some(newest[&w]));
        assert_eq!(describe["namespace"], "ml");
        assert_eq!(
            pods,
            sim.pod_names(ResourceKind::Deployment, "ml", &format!("w{w}"))
        );
    }
    // One connection setup for all streams: every request came from the one client (no
    // per-stream kubeconfig load shows on the server; each stream GETs its Deployment once).
    assert_eq!(
        sim.count_requests("GET", "/apis/apps/v1/namespaces/ml/deployments/*"),
        3
    );
}

#[test]
fn a_slow_consumer_holds_at_most_the_byte_budget() {
    let sim = sim_with(1, "ml");
    let case = Case::new(&sim, "t0");
    let pod = sim.pod_names(ResourceKind::Deployment, "ml", "w0")[0].clone();
    // 600 lines of about 1 KiB: 600 KiB, nine times the budget.
    let pad = "x".repeat(1000);
    let lines: Vec<String> = (0..600).map(|i| format!("{i:04} {pad}")).collect();
    sim.append_logs("ml", &pod, "trainer", &lines);
    let mut src =
        PodLogSource::open(&opts(&case, None), deployment(Some("ml"), "w0"), None).unwrap();
    // The synchronous source runs its pod task only inside `poll`: a batch is what waited in
    // the buffer (plus the line that woke the poll), never more than the budget allows.
    let per_line = lines[0].len() + 32;
    let most = STREAM_BUFFER_BYTES / per_line + 2;
    let mut got = vec![];
    let mut biggest = 0;
    let deadline = Instant::now() + Duration::from_secs(30);
    while got.len() < lines.len() && Instant::now() < deadline {
        let mut batch = vec![];
        src.poll(&mut batch, Duration::from_millis(200)).unwrap();
        biggest = biggest.max(batch.len());
        got.extend(batch.iter().map(|l| text(l)));
    }
    assert_eq!(got, lines);
    assert!(
        biggest <= most,
        "a batch of {biggest} lines: more than the {most} the budget allows"
    );
    assert!(biggest > 1, "the buffer holds more than one line");
}

/// A small xorshift: deterministic jitter without a dependency.
struct Jitter(u64);

impl Jitter {
    fn next(&mut self, below: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % below
    }
}

const STREAMS: usize = 60;
const LINES: usize = 120;

#[test]
fn sixty_streams_under_faults_read_every_line_exactly_once_and_resume_from_cursors() {
    let sim = sim_with(STREAMS, "ml");
    let case = Case::new(&sim, "t0");
    let log = "/api/v1/namespaces/ml/pods/*/log";
    let cut = sim.inject_fault(Fault {
        times: Some(40),
        ..Fault::new(log, FaultAction::DropLogStream { after_lines: 7 })
    });
    let err = sim.inject_fault(Fault {
        times: Some(15),
        ..Fault::new(
            log,
            FaultAction::Status {
                code: 503,
                message: "injected".into(),
                retry_after_seconds: None,
            },
        )
    });
    let slow = sim.inject_fault(Fault {
        times: Some(60),
        ..Fault::new(
            "/api/v1/namespaces/ml/pods/*",
            FaultAction::Delay { ms: 40 },
        )
    });
    let pods: Vec<String> = (0..STREAMS)
        .map(|w| sim.pod_names(ResourceKind::Deployment, "ml", &format!("w{w}"))[0].clone())
        .collect();
    let rt = runtime(4);
    let cluster = Arc::new(
        rt.block_on(KubeCluster::connect(&opts(&case, None)))
            .unwrap(),
    );
    // The feeder: LINES lines per pod, in bursts; every fourth pair shares one timestamp (the
    // cursor counts lines at equal timestamps).
    let handles = {
        let feed = pods.clone();
        let sim = &sim;
        std::thread::scope(|scope| {
            let h = scope.spawn(move || {
                let base = Utc::now();
                for i in 0..LINES {
                    for (w, pod) in feed.iter().enumerate() {
                        let ms = (i - i % 2 * usize::from(i % 4 == 1)) as i64;
                        let t: DateTime<Utc> = base + chrono::Duration::milliseconds(ms);
                        sim.append_log_at("ml", pod, "trainer", t, &format!("w{w} {i}"));
                    }
                    if i % 10 == 9 {
                        std::thread::sleep(Duration::from_millis(20));
                    }
                }
            });
            let results: Vec<_> = (0..STREAMS)
                .map(|w| {
                    let cluster = cluster.clone();
                    rt.spawn(async move {
                        let mut jitter = Jitter(0x9e37_79b9_7f4a_7c15 ^ (w as u64 + 1));
                        let target = deployment(Some("ml"), &format!("w{w}"));
                        let run = async {
                            let mut s = PodLogStream::open(&cluster, target.clone(), None)
                                .await
                                .unwrap();
                            let mut got: Vec<String> = vec![];
                            let mut reopened = 0;
                            while got.len() < LINES {
                                let mut batch = vec![];
                                let wait = Duration::from_millis(jitter.next(4));
                                s.poll(&mut batch, wait).await.unwrap();
                                got.extend(batch.iter().map(|l| text(l)));
                                match jitter.next(40) {
                                    0 => tokio::time::sleep(Duration::from_millis(15)).await,
                                    1 => tokio::task::yield_now().await,
                                    // Drop it and open it again from its cursor (twice at most).
                                    2 if reopened < 2 => {
                                        let cursor: Value = s.cursor();
                                        drop(s);
                                        reopened += 1;
                                        s = PodLogStream::open(
                                            &cluster,
                                            target.clone(),
                                            Some(&cursor),
                                        )
                                        .await
                                        .unwrap();
                                    }
                                    _ => {}
                                }
                            }
                            // Nothing more arrives.
                            let mut extra = vec![];
                            s.poll(&mut extra, Duration::from_millis(300))
                                .await
                                .unwrap();
                            got.extend(extra.iter().map(|l| text(l)));
                            (got, reopened, s.drain_events())
                        };
                        tokio::time::timeout(Duration::from_secs(90), run)
                            .await
                            .unwrap_or_else(|_| panic!("stream w{w} did not finish in time"))
                    })
                })
                .collect();
            h.join().unwrap();
            results
        })
    };
    let mut reopened = 0;
    let mut reconnected = 0;
    for (w, h) in handles.into_iter().enumerate() {
        let (got, r, events) = rt.block_on(h).unwrap();
        let want: Vec<String> = (0..LINES).map(|i| format!("w{w} {i}")).collect();
        assert_eq!(got, want, "stream w{w}");
        reopened += r;
        reconnected += events.iter().filter(|e| e.kind == "reconnected").count();
    }
    assert!(sim.fault_fired(cut) > 0, "no stream was cut");
    assert!(sim.fault_fired(err) > 0, "no log request failed");
    assert!(sim.fault_fired(slow) > 0, "no GET was slowed");
    assert!(reopened > 0, "no stream was reopened from its cursor");
    // The cut streams of streams still open at the end are told as reconnects (those of
    // reopened streams may have gone with their events).
    assert!(reconnected > 0, "no reconnect was reported");
}
