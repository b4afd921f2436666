//! `closed-loop watch --source k8s`: a workload's training-container logs, followed through the
//! Kubernetes API as a [`LiveSource`].
//!
//! ```no_run
//! use std::time::Duration;
//! use modekeeper::k8s::{ConnectOptions, LogTarget, PodLogSource, WorkloadRef};
//! use modekeeper::telemetry::live::LiveSource;
//!
//! # fn main() -> anyhow::Result<()> {
//! let opts = ConnectOptions::from_flags(None, None, Some("ml"), None);
//! let target = LogTarget {
//!     namespace: None, // the connection's namespace (-n, else the context's, else "default")
//!     workload: WorkloadRef::Deployment("trainer".into()),
//!     container: None, // --container, else the pod annotation modekeeper/telemetry, else the only one
//!     since_seconds: None, // without a cursor: from each container's start
//! };
//! let saved: Option<serde_json::Value> = None; // the cursor stored after the last window
//! let mut source = PodLogSource::open(&opts, target, saved.as_ref())?;
//! let mut lines = Vec::new();
//! source.poll(&mut lines, Duration::from_secs(1))?;
//! // feed `lines` to the telemetry ingest (format `log`), then store `source.cursor()`;
//! // `source.drain_events()` says about reconnects, restarts, pods added and gone.
//! # Ok(())
//! # }
//! ```
//!
//! **What is followed.** A Deployment or StatefulSet is resolved to its pods by its
//! `spec.selector` (LIST pods with that label selector, again every [`RELIST_EVERY`], so pods of a
//! scale-up or rollout are picked up: `pod_added`, `pod_gone`); a pod name names one pod. Every pod
//! is followed by its own task on the runtime the stream was opened on (`GET …/pods/NAME/log?follow=true&
//! timestamps=true`), and the lines of all replicas are merged in arrival order: the records' own
//! `rank`/`node` fields keep them apart downstream. The tasks feed one channel bounded by bytes
//! ([`STREAM_BUFFER_BYTES`]), so a slow consumer holds the streams back (TCP backpressure) instead
//! of growing memory.
//!
//! **Two faces.** [`PodLogStream`] is async: opened on a shared [`KubeCluster`] (its client with
//! the long watch read timeout), `Send`, for the controller's many sessions on one multi-thread
//! runtime. [`PodLogSource`] is the synchronous [`LiveSource`] of `closed-loop watch`: its own
//! [`Cluster`] (single-thread runtime) and one [`PodLogStream`], whose tasks run while it polls.
//!
//! **The lines handed out keep their newline and the kubelet's timestamp prefix** (`2026-01-01T00:00:00.123456789Z
//! {"step": 1, …}`), exactly what `kubectl logs --timestamps` prints: the telemetry parser accepts it
//! before a JSON object, takes it as the record's time when the record has none, and treats the
//! other lines as ordinary log text.
//!
//! **Resuming.** The prefix is also the cursor: per pod `{uid, container, restart_count, last_ts,
//! lines_at_last_ts}`. A reconnect asks for `sinceTime` = `last_ts` rounded down to the second
//! (the API's resolution), then skips every line older than `last_ts` and the `lines_at_last_ts`
//! lines at `last_ts` already handed out (several lines can carry one timestamp): no line is lost,
//! none is counted twice. A cut stream (connection reset, server closed it while the container
//! runs, 5xx, timeout) is reconnected with backoff (100 ms doubling to 5 s, reset by the next line)
//! and reported as `reconnected`. A restart (the container's `restartCount` rose, or the pod's uid
//! changed) is `pod_restarted`: the rest of the old instance is read from `previous=true` when it is
//! the one just before, then the new container from its start. 401/403 (and a missing workload or
//! pod at open) are errors with a one-line message; everything else is retried.

use std::collections::{BTreeMap, BTreeSet};
use std::pin::pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use chrono::{DateTime, FixedOffset, Utc};
use futures_util::io::{AsyncBufRead, AsyncBufReadExt};
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::api::{Api, ListParams, LogParams};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::sync::{Semaphore, mpsc};
use tokio::task::JoinHandle;

use super::{Cluster, ClusterApi, ClusterError, ClusterErrorKind, ConnectOptions, KubeCluster};

mod follower;
use crate::telemetry::MAX_LINE_BYTES;
use crate::telemetry::live::{LiveSource, Poll, SourceEvent};
use follower::*;

/// The pod annotation naming the container whose log carries the telemetry.
pub const TELEMETRY_CONTAINER_ANNOTATION: &str = "modekeeper/telemetry";
/// How often the workload's pods are listed again.
pub const RELIST_EVERY: Duration = Duration::from_secs(3);
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);
/// Messages in flight between a stream's pod tasks and `poll` (lines are bounded by bytes too).
const CHANNEL_CAPACITY: usize = 64;
/// Bytes of lines in flight between a stream's pod tasks and `poll`: with a slow consumer the
/// tasks wait (TCP backpressure) instead of buffering. A line is charged at most this much, so
/// one line longer than the budget still passes, alone.
pub const STREAM_BUFFER_BYTES: usize = 64 * 1024;
/// At most this many lines per `poll`.
const MAX_BATCH: usize = 4096;

/// What to follow.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WorkloadRef {
    Deployment(String),
    StatefulSet(String),
    /// batch/v1 Job: its pods carry `batch.kubernetes.io/job-name`.
    Job(String),
    /// kubeflow.org/v1 PyTorchJob: its pods carry `training.kubeflow.org/job-name`.
    PyTorchJob(String),
    /// jobset.x-k8s.io JobSet: its pods carry `jobset.sigs.k8s.io/jobset-name`.
    JobSet(String),
    Pod(String),
}

impl WorkloadRef {
    fn kind(&self) -> &'static str {
        match self {
            WorkloadRef::Deployment(_) => "deployment",
            WorkloadRef::StatefulSet(_) => "statefulset",
            WorkloadRef::Job(_) => "job",
            WorkloadRef::PyTorchJob(_) => "pytorchjob",
            WorkloadRef::JobSet(_) => "jobset",
            WorkloadRef::Pod(_) => "pod",
        }
    }

    fn name(&self) -> &str {
        match self {
            WorkloadRef::Deployment(n)
            | WorkloadRef::StatefulSet(n)
            | WorkloadRef::Job(n)
            | WorkloadRef::PyTorchJob(n)
            | WorkloadRef::JobSet(n)
            | WorkloadRef::Pod(n) => n,
        }
    }

    /// The row of the kinds table (none for a single pod).
    fn spec(&self) -> Option<&'static super::kinds::KindSpec> {
        use crate::plan::WorkloadKind as K;
        let k = match self {
            WorkloadRef::Deployment(_) => K::Deployment,
            WorkloadRef::StatefulSet(_) => K::StatefulSet,
            WorkloadRef::Job(_) => K::Job,
            WorkloadRef::PyTorchJob(_) => K::PyTorchJob,
            WorkloadRef::JobSet(_) => K::JobSet,
            WorkloadRef::Pod(_) => return None,
        };
        Some(super::kinds::spec(k))
    }
}

/// A pod's rank in a multi-pod job, from its index labels (the kinds table's `rank_labels`). A
/// PyTorchJob numbers each replica type from 0 with the Master first, so a Worker's rank is its
/// index plus one (what the operator sets as `RANK`).
pub fn pod_rank(target: &WorkloadRef, labels: &BTreeMap<String, String>) -> Option<u64> {
    let spec = target.spec()?;
    let index = spec
        .rank_labels
        .iter()
        .find_map(|l| labels.get(*l)?.parse::<u64>().ok())?;
    if matches!(target, WorkloadRef::PyTorchJob(_))
        && labels
            .get("training.kubeflow.org/replica-type")
            .is_some_and(|t| t.eq_ignore_ascii_case("worker"))
    {
        return Some(index + 1);
    }
    Some(index)
}

/// Adds `"rank": rank` to a telemetry record that has none, keeping the line's timestamp prefix
/// and newline: records of several pods of one job then stay apart when they are merged by step
/// (the ingest's key is step, rank, node). Lines that are not a JSON object, or that carry a
/// rank, are returned as they were.
pub fn with_rank(line: Vec<u8>, rank: u64) -> Vec<u8> {
    let body_start = match line_ts(&line) {
        Some((_, raw)) => raw.len() + 1,
        None => 0,
    };
    let Some(body) = line.get(body_start..) else {
        return line;
    };
    let trimmed = body.strip_suffix(b"\n").unwrap_or(body);
    let trimmed = trimmed.strip_suffix(b"\r").unwrap_or(trimmed);
    if trimmed.first() != Some(&b'{') {
        return line;
    }
    let Ok(Value::Object(mut m)) = serde_json::from_slice::<Value>(trimmed) else {
        return line;
    };
    if m.contains_key("rank") {
        return line;
    }
    m.insert("rank".into(), json!(rank));
    let mut out = line[..body_start].to_vec();
    out.extend_from_slice(Value::Object(m).to_string().as_bytes());
    out.push(b'\n');
    out
}

/// `deployment/trainer`, as kubectl writes it.
impl std::fmt::Display for WorkloadRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.kind(), self.name())
    }
}

/// A workload (or pod), the container to read, and how far back to start without a cursor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogTarget {
    /// `None`: the connection's namespace (`-n`, else the context's, else `default`).
    pub namespace: Option<String>,
    pub workload: WorkloadRef,
    /// `--container`; else the pod annotation `modekeeper/telemetry` when it names a container;
    /// else the pod's only container.
    pub container: Option<String>,
    /// Without a cursor, start this many seconds back (`None`: from each container's start). Pods
    /// that appear later, and restarted containers, are always read from their start.
    pub since_seconds: Option<i64>,
}

/// Where one pod's log has been handed out to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PodLogCursor {
    pub uid: String,
    pub container: String,
    pub restart_count: u64,
    /// The kubelet timestamp (RFC 3339, ns) of the last line handed out from this container
    /// instance; `None` before the first.
    pub last_ts: Option<String>,
    /// How many lines with exactly `last_ts` were handed out.
    pub lines_at_last_ts: u64,
    /// Lines handed out from this container instance (for reports; not needed to resume).
    pub lines: u64,
}

/// The whole cursor: `{"kind": "k8s", "namespace", "pods": {name: PodLogCursor}}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogCursor {
    pub kind: String,
    pub namespace: String,
    pub pods: BTreeMap<String, PodLogCursor>,
}

/// A workload's pod logs, followed, for synchronous callers: a [`PodLogStream`] on its own
/// [`Cluster`] (connection and single-thread runtime). See the module documentation.
pub struct PodLogSource {
    // Declared first: its tasks go before the runtime they run on.
    stream: PodLogStream,
    cluster: Cluster<KubeCluster>,
}

/// The saved cursor, checked.
fn parse_cursor(cursor: Option<&Value>) -> anyhow::Result<Option<LogCursor>> {
    let Some(c) = cursor else {
        return Ok(None);
    };
    let c = serde_json::from_value::<LogCursor>(c.clone())
        .context("the saved k8s log cursor is not valid")?;
    if c.kind != "k8s" {
        anyhow::bail!("the saved cursor is of a {:?} source, not k8s", c.kind);
    }
    Ok(Some(c))
}

impl PodLogSource {
    /// Connects as kubectl would with `opts`, resolves the target to its pods (the workload or pod
    /// must exist) and starts following them, each after its entry of `cursor` when that names the
    /// same pod and container instance, from where it was. Fails on a bad kubeconfig, a missing
    /// workload or pod, 401/403, a container that cannot be chosen, or an invalid cursor.
    pub fn open(
        opts: &ConnectOptions,
        target: LogTarget,
        cursor: Option<&Value>,
    ) -> anyhow::Result<PodLogSource> {
        // The cursor is checked before connecting, so a bad one is reported first.
        let saved = parse_cursor(cursor)?;
        let cluster = Cluster::connect(opts)?;
        let stream = cluster.block_on(PodLogStream::start(cluster.api(), target, saved))?;
        Ok(PodLogSource { stream, cluster })
    }

    /// The pods followed now, by name.
    pub fn pods(&self) -> Vec<String> {
        self.stream.pods()
    }
}

impl LiveSource for PodLogSource {
    fn poll(&mut self, out: &mut Vec<Vec<u8>>, wait: Duration) -> anyhow::Result<Poll> {
        let PodLogSource { stream, cluster } = self;
        cluster.block_on(stream.poll(out, wait))
    }

    fn cursor(&self) -> Value {
        self.stream.cursor()
    }

    fn drain_events(&mut self) -> Vec<SourceEvent> {
        self.stream.drain_events()
    }

    fn describe(&self) -> Value {
        self.stream.describe()
    }
}

// ---- the consumer side: pods, cursors, the channel ------------------------------------------

enum Msg {
    Line {
        pod: Arc<str>,
        line: Vec<u8>,
        /// Bytes of the stream's budget this line holds (given back when it is handed out).
        charge: u32,
    },
    /// Lines after this belong to a new container instance.
    Instance {
        pod: Arc<str>,
        uid: String,
        restart_count: u64,
    },
    Event(SourceEvent),
    /// The pod finished (terminal phase) and its log was read to the end.
    Ended {
        pod: Arc<str>,
    },
    /// The pod no longer exists.
    Gone {
        pod: Arc<str>,
    },
    Fatal(String),
}

struct PodState {
    /// The pod's rank from its index label, added to records that carry none.
    rank: Option<u64>,
    cursor: PodLogCursor,
    last: Option<DateTime<FixedOffset>>,
    task: JoinHandle<()>,
    ended: bool,
}

/// A workload's pod logs, followed on the caller's tokio runtime (single- or multi-thread) with
/// the client of a shared [`KubeCluster`]: what the controller runs per workload. Each pod is
/// followed by a task of its own; dropping the stream aborts them. At most
/// [`STREAM_BUFFER_BYTES`] of lines wait between those tasks and [`poll`](PodLogStream::poll).
/// See the module documentation for what is followed and how it resumes.
pub struct PodLogStream {
    pods_api: Api<Pod>,
    namespace: String,
    target: WorkloadRef,
    /// The label selector of a workload target.
    selector: Option<String>,
    container: Option<String>,
    timeout: Option<Duration>,
    identity: Value,
    tx: mpsc::Sender<Msg>,
    rx: mpsc::Receiver<Msg>,
    /// Free bytes of [`STREAM_BUFFER_BYTES`]: a pod task takes a line's charge before sending it,
    /// `poll` gives it back.
    budget: Arc<Semaphore>,
    pods: BTreeMap<String, PodState>,
    events: Vec<SourceEvent>,
    next_relist: Instant,
    /// How often the workload's pods are listed again ([`RELIST_EVERY`] unless set).
    relist_every: Duration,
    /// A pod target whose pod finished or went away.
    finished: bool,
    /// The newest kubelet timestamp handed out.
    newest: Option<DateTime<Utc>>,
}

impl Drop for PodLogStream {
    fn drop(&mut self) {
        for p in self.pods.values() {
            p.task.abort();
        }
    }
}

fn event(kind: &str, detail: Value) -> SourceEvent {
    SourceEvent {
        kind: kind.into(),
        detail,
    }
}

/// `ok(..)` for the answers of a bounded call.
async fn bounded<T>(
    limit: Option<Duration>,
    what: impl Fn() -> String,
    fut: impl Future<Output = Result<T, kube::Error>>,
) -> Result<T, ClusterError> {
    let r = match limit {
        Some(l) => match tokio::time::timeout(l, fut).await {
            Ok(r) => r,
            Err(_) => return Err(ClusterError::timeout(&what(), l)),
        },
        None => fut.await,
    };
    r.map_err(|e| ClusterError::from_kube(&what(), &e))
}

fn is_fatal(e: &ClusterError) -> bool {
    matches!(
        e.kind,
        ClusterErrorKind::Unauthorized | ClusterErrorKind::Forbidden
    )
}

/// `cannot read logs of pod ml/x: forbidden (needs get on pods/log): <server message>`.
fn refused(what: &str, needs: &str, e: &ClusterError) -> String {
    match e.kind {
        ClusterErrorKind::Forbidden => {
            format!("{what}: forbidden (needs {needs}): {}", e.message)
        }
        ClusterErrorKind::Unauthorized => {
            format!(
                "{what}: unauthorized (the credentials were refused): {}",
                e.message
            )
        }
        _ => format!("{what}: {e}"),
    }
}

/// A label selector in the query syntax (`a=b,c in (d,e),!f`).
fn selector_string(s: &LabelSelector) -> String {
    let mut parts: Vec<String> = s
        .match_labels
        .iter()
        .flatten()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    for e in s.match_expressions.iter().flatten() {
        let values = e.values.clone().unwrap_or_default().join(",");
        parts.push(match e.operator.as_str() {
            "In" => format!("{} in ({values})", e.key),
            "NotIn" => format!("{} notin ({values})", e.key),
            "Exists" => e.key.clone(),
            _ => format!("!{}", e.key),
        });
    }
    parts.join(",")
}

/// The container to read in `pod`: `wanted`, else the telemetry annotation when it names a
/// container, else the only one.
fn choose_container(ns: &str, pod: &Pod, wanted: Option<&str>) -> Result<String, String> {
    let name = pod.metadata.name.as_deref().unwrap_or_default();
    let names: Vec<&str> = pod
        .spec
        .iter()
        .flat_map(|s| s.containers.iter().map(|c| c.name.as_str()))
        .collect();
    if let Some(w) = wanted {
        if names.contains(&w) {
            return Ok(w.to_string());
        }
        return Err(format!(
            "pod {ns}/{name} has no container {w:?} (containers: {})",
            names.join(", ")
        ));
    }
    if let Some(a) = pod
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(TELEMETRY_CONTAINER_ANNOTATION))
        && names.contains(&a.as_str())
    {
        return Ok(a.clone());
    }
    match names.as_slice() {
        [one] => Ok(one.to_string()),
        [] => Err(format!("pod {ns}/{name} has no containers")),
        many => Err(format!(
            "pod {ns}/{name} has {} containers ({}): choose one with --container, or name it in the \
             pod template annotation {TELEMETRY_CONTAINER_ANNOTATION}",
            many.len(),
            many.join(", ")
        )),
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Instance {
    uid: String,
    restart_count: u64,
}

fn instance_of(pod: &Pod, container: &str) -> Instance {
    Instance {
        uid: pod.metadata.uid.clone().unwrap_or_default(),
        restart_count: container_status(pod, container)
            .map(|s| s.restart_count.max(0) as u64)
            .unwrap_or(0),
    }
}

fn container_status<'a>(
    pod: &'a Pod,
    container: &str,
) -> Option<&'a k8s_openapi::api::core::v1::ContainerStatus> {
    pod.status
        .as_ref()?
        .container_statuses
        .as_ref()?
        .iter()
        .find(|s| s.name == container)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RunState {
    /// Not started (yet): nothing to read.
    Waiting,
    Running,
    Terminated,
}

fn run_state(pod: &Pod, container: &str) -> RunState {
    let Some(state) = container_status(pod, container).and_then(|s| s.state.as_ref()) else {
        return RunState::Waiting;
    };
    if state.running.is_some() {
        RunState::Running
    } else if state.terminated.is_some() {
        RunState::Terminated
    } else {
        RunState::Waiting
    }
}

fn is_terminal(pod: &Pod) -> bool {
    matches!(
        pod.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Succeeded" | "Failed")
    )
}

/// The leading kubelet timestamp of a line, if any.
fn line_ts(line: &[u8]) -> Option<(DateTime<FixedOffset>, &str)> {
    let head = &line[..line.len().min(64)];
    let end = memchr::memchr2(b' ', b'\n', head).unwrap_or(head.len());
    let raw = std::str::from_utf8(&line[..end]).ok()?;
    Some((DateTime::parse_from_rfc3339(raw).ok()?, raw))
}

impl PodLogStream {
    /// Resolves the target to its pods (the workload or pod must exist) and starts following
    /// them on the current tokio runtime, each after its entry of `cursor` when that names the
    /// same pod and container instance. `target.namespace: None` is the cluster identity's
    /// namespace. Fails on a missing workload or pod, 401/403, a container that cannot be chosen,
    /// or an invalid cursor.
    pub async fn open(
        cluster: &KubeCluster,
        target: LogTarget,
        cursor: Option<&Value>,
    ) -> anyhow::Result<PodLogStream> {
        let saved = parse_cursor(cursor)?;
        PodLogStream::start(cluster, target, saved).await
    }

    async fn start(
        cluster: &KubeCluster,
        target: LogTarget,
        saved: Option<LogCursor>,
    ) -> anyhow::Result<PodLogStream> {
        let identity = cluster.identity();
        let namespace = target
            .namespace
            .clone()
            .unwrap_or_else(|| identity.namespace.clone());
        // A follow stream may be quiet for long: the request timeout bounds the calls (below),
        // the watch client's long read timeout the reads (a half-dead connection is cut then
        // and resumed).
        let client = cluster.watch_client();
        let (tx, rx) = mpsc::channel(CHANNEL_CAPACITY);
        let ns = namespace.as_str();
        let timeout = cluster.request_timeout();
        let name = target.workload.name().to_string();
        let selector = match &target.workload {
            WorkloadRef::Pod(_) => None,
            w @ (WorkloadRef::Job(_) | WorkloadRef::PyTorchJob(_) | WorkloadRef::JobSet(_)) => {
                let spec = w.spec().expect("a workload");
                // The object must exist (and its kind be served); its pods carry its name.
                let path = spec.object_path(ns, &name);
                let what = || format!("GET {} {ns}/{name}", spec.qualified_resource());
                let request = kube::core::Request::new(spec.collection_path(ns))
                    .get(&name, &kube::api::GetParams::default())
                    .context("cannot build the request")?;
                match bounded(timeout, what, client.request::<Value>(request)).await {
                    Ok(_) => {}
                    Err(e) if e.kind == ClusterErrorKind::NotFound => anyhow::bail!(
                        "{} {ns}/{name} not found (GET {path}; is the {} CRD installed?)",
                        w.kind(),
                        spec.qualified_resource()
                    ),
                    Err(e) => anyhow::bail!(refused(
                        &format!("cannot read {} {ns}/{name}", w.kind()),
                        &format!("get on {}", spec.qualified_resource()),
                        &e
                    )),
                }
                Some(format!("{}={name}", spec.pod_name_labels[0]))
            }
            w => {
                let spec_selector = match w {
                    WorkloadRef::Deployment(_) => {
                        let api: Api<Deployment> = Api::namespaced(client.clone(), ns);
                        let what = || format!("GET deployments.apps {ns}/{name}");
                        bounded(timeout, what, api.get_opt(&name))
                            .await
                            .map_err(|e| {
                                anyhow::anyhow!(refused(
                                    &format!("cannot read deployment {ns}/{name}"),
                                    "get on deployments.apps",
                                    &e
                                ))
                            })?
                            .map(|d| d.spec.map(|s| s.selector).unwrap_or_default())
                    }
                    _ => {
                        let api: Api<StatefulSet> = Api::namespaced(client.clone(), ns);
                        let what = || format!("GET statefulsets.apps {ns}/{name}");
                        bounded(timeout, what, api.get_opt(&name))
                            .await
                            .map_err(|e| {
                                anyhow::anyhow!(refused(
                                    &format!("cannot read statefulset {ns}/{name}"),
                                    "get on statefulsets.apps",
                                    &e
                                ))
                            })?
                            .map(|d| d.spec.map(|s| s.selector).unwrap_or_default())
                    }
                };
                let Some(sel) = spec_selector else {
                    anyhow::bail!("{} {ns}/{name} not found", w.kind());
                };
                let s = selector_string(&sel);
                if s.is_empty() {
                    anyhow::bail!("{} {ns}/{name} has an empty selector", w.kind());
                }
                Some(s)
            }
        };
        let mut stream = PodLogStream {
            pods_api: Api::namespaced(client, ns),
            namespace: namespace.clone(),
            target: target.workload.clone(),
            selector,
            container: target.container.clone(),
            timeout,
            identity: json!({"context": identity.context, "server": identity.server}),
            tx,
            rx,
            budget: Arc::new(Semaphore::new(STREAM_BUFFER_BYTES)),
            pods: BTreeMap::new(),
            events: vec![],
            next_relist: Instant::now() + RELIST_EVERY,
            relist_every: RELIST_EVERY,
            finished: false,
            newest: None,
        };
        let listed = stream.list().await.map_err(|e| stream.list_error(&e))?;
        if stream.selector.is_none() && listed.is_empty() {
            anyhow::bail!("pod {ns}/{name} not found");
        }
        let start_at = target
            .since_seconds
            .map(|s| Utc::now() - chrono::Duration::seconds(s.max(0)));
        let mut saved_pods = saved.map(|s| s.pods).unwrap_or_default();
        for pod in listed {
            let pname = pod.metadata.name.clone().unwrap_or_default();
            let resume = saved_pods.remove(&pname);
            stream
                .follow(&pod, resume, start_at, false)
                .map_err(|e| anyhow::anyhow!(e))?;
        }
        for (pod, c) in saved_pods {
            stream.events.push(event(
                "pod_gone",
                json!({"pod": pod, "container": c.container, "lines": c.lines, "while_stopped": true}),
            ));
        }
        Ok(stream)
    }

    /// The target's pods now (LIST by selector, or GET of the one pod).
    async fn list(&self) -> Result<Vec<Pod>, ClusterError> {
        let ns = &self.namespace;
        match &self.selector {
            Some(sel) => {
                let lp = ListParams::default().labels(sel);
                let what = || format!("LIST pods in {ns} ({sel})");
                let list = bounded(self.timeout, what, self.pods_api.list(&lp)).await?;
                Ok(list.items)
            }
            None => {
                let name = self.target.name();
                let what = || format!("GET pods {ns}/{name}");
                let pod = bounded(self.timeout, what, self.pods_api.get_opt(name)).await?;
                Ok(pod.into_iter().collect())
            }
        }
    }

    /// A failed [`list`](PodLogStream::list) as the one-line error the user sees.
    fn list_error(&self, e: &ClusterError) -> anyhow::Error {
        let (ns, name) = (&self.namespace, self.target.name());
        anyhow::anyhow!(match self.selector {
            Some(_) => refused(
                &format!("cannot list the pods of {} {ns}/{name}", self.target.kind()),
                "list on pods",
                e
            ),
            None => refused(&format!("cannot read pod {ns}/{name}"), "get on pods", e),
        })
    }

    /// Starts a follower task for `pod`, after `resume` when it names the same container.
    fn follow(
        &mut self,
        pod: &Pod,
        resume: Option<PodLogCursor>,
        start_at: Option<DateTime<Utc>>,
        added: bool,
    ) -> Result<(), String> {
        let container = choose_container(&self.namespace, pod, self.container.as_deref())?;
        let name: Arc<str> = pod.metadata.name.clone().unwrap_or_default().into();
        let listed = instance_of(pod, &container);
        let (cursor, mark, start_at) = match resume {
            Some(c) if c.container == container => {
                let mark = match &c.last_ts {
                    Some(ts) => Some(Mark {
                        t: DateTime::parse_from_rfc3339(ts)
                            .map_err(|e| format!("the saved cursor of pod {name}: {ts:?}: {e}"))?,
                        n: c.lines_at_last_ts,
                    }),
                    None => None,
                };
                (c, mark, None)
            }
            _ => (
                PodLogCursor {
                    uid: listed.uid.clone(),
                    container: container.clone(),
                    restart_count: listed.restart_count,
                    last_ts: None,
                    lines_at_last_ts: 0,
                    lines: 0,
                },
                None,
                start_at,
            ),
        };
        if added {
            self.events.push(event(
                "pod_added",
                json!({"pod": &*name, "container": container, "uid": listed.uid}),
            ));
        }
        let follower = Follower {
            api: self.pods_api.clone(),
            tx: self.tx.clone(),
            budget: self.budget.clone(),
            ns: self.namespace.clone(),
            pod: name.clone(),
            container,
            inst: Instance {
                uid: cursor.uid.clone(),
                restart_count: cursor.restart_count,
            },
            pos: Position { mark, start_at },
            timeout: self.timeout,
            failing: false,
        };
        let task = tokio::spawn(follower.run());
        let last = mark.map(|m| m.t);
        let labels: BTreeMap<String, String> = pod.metadata.labels.clone().unwrap_or_default();
        let rank = pod_rank(&self.target, &labels);
        if let Some(old) = self.pods.insert(
            name.to_string(),
            PodState {
                rank,
                cursor,
                last,
                task,
                ended: false,
            },
        ) {
            old.task.abort();
        }
        Ok(())
    }

    async fn relist(&mut self) -> anyhow::Result<()> {
        let listed = match self.list().await {
            Ok(l) => l,
            // 401/403 stop the source; anything else is retried at the next relist.
            Err(e) if is_fatal(&e) => return Err(self.list_error(&e)),
            Err(_) => return Ok(()),
        };
        let mut seen = BTreeSet::new();
        for pod in &listed {
            let name = pod.metadata.name.clone().unwrap_or_default();
            let uid = pod.metadata.uid.clone().unwrap_or_default();
            seen.insert(name.clone());
            match self.pods.get(&name) {
                None => self
                    .follow(pod, None, None, true)
                    .map_err(|e| anyhow::anyhow!(e))?,
                // A finished pod replaced by a new one of the same name (a StatefulSet's).
                Some(p) if p.ended && p.cursor.uid != uid => {
                    let resume = Some(p.cursor.clone());
                    self.follow(pod, resume, None, false)
                        .map_err(|e| anyhow::anyhow!(e))?
                }
                Some(_) => {}
            }
        }
        let gone: Vec<String> = self
            .pods
            .keys()
            .filter(|n| !seen.contains(*n))
            .cloned()
            .collect();
        for name in gone {
            self.gone(&name);
        }
        Ok(())
    }

    fn gone(&mut self, name: &str) {
        if let Some(p) = self.pods.remove(name) {
            p.task.abort();
            self.events.push(event(
                "pod_gone",
                json!({"pod": name, "container": p.cursor.container, "lines": p.cursor.lines}),
            ));
        }
        if self.selector.is_none() {
            self.finished = true;
        }
    }

    fn handle(&mut self, msg: Msg, out: &mut Vec<Vec<u8>>) -> anyhow::Result<()> {
        match msg {
            Msg::Line { pod, line, charge } => {
                self.budget.add_permits(charge as usize);
                if let Some(p) = self.pods.get_mut(&*pod) {
                    let c = &mut p.cursor;
                    if let Some((t, raw)) = line_ts(&line) {
                        let t_utc = t.with_timezone(&Utc);
                        if self.newest.is_none_or(|n| n < t_utc) {
                            self.newest = Some(t_utc);
                        }
                        if p.last == Some(t) {
                            c.lines_at_last_ts += 1;
                        } else {
                            p.last = Some(t);
                            c.last_ts = Some(raw.to_string());
                            c.lines_at_last_ts = 1;
                        }
                    }
                    c.lines += 1;
                    if let Some(rank) = p.rank {
                        out.push(with_rank(line, rank));
                        return Ok(());
                    }
                }
                out.push(line);
            }
            Msg::Instance {
                pod,
                uid,
                restart_count,
            } => {
                if let Some(p) = self.pods.get_mut(&*pod) {
                    p.cursor = PodLogCursor {
                        uid,
                        container: p.cursor.container.clone(),
                        restart_count,
                        last_ts: None,
                        lines_at_last_ts: 0,
                        lines: 0,
                    };
                    p.last = None;
                }
            }
            Msg::Event(e) => self.events.push(e),
            Msg::Ended { pod } => {
                if let Some(p) = self.pods.get_mut(&*pod) {
                    p.ended = true;
                    self.events.push(event(
                        "pod_finished",
                        json!({"pod": &*pod, "container": p.cursor.container, "lines": p.cursor.lines}),
                    ));
                }
                if self.selector.is_none() {
                    self.finished = true;
                }
            }
            Msg::Gone { pod } => self.gone(&pod),
            Msg::Fatal(m) => anyhow::bail!(m),
        }
        Ok(())
    }

    /// Waits at most `wait` for new lines of any pod and appends them to `out` (at most 4096 per
    /// call), as [`LiveSource::poll`]: early once any line arrived; transient failures are retried
    /// inside and reported by [`drain_events`](PodLogStream::drain_events); an `Err` means the
    /// stream cannot go on (401/403). Cancel-safe at its awaits: a line is taken off the channel
    /// and handed out in the same step.
    pub async fn poll(&mut self, out: &mut Vec<Vec<u8>>, wait: Duration) -> anyhow::Result<Poll> {
        let deadline = Instant::now() + wait;
        let before = out.len();
        loop {
            if !self.finished && Instant::now() >= self.next_relist {
                self.relist().await?;
                self.next_relist = Instant::now() + self.relist_every;
            }
            while out.len() - before < MAX_BATCH {
                match self.rx.try_recv() {
                    Ok(m) => self.handle(m, out)?,
                    Err(_) => break,
                }
            }
            if out.len() > before {
                return Ok(Poll::Open);
            }
            if self.finished {
                return Ok(Poll::Ended);
            }
            let now = Instant::now();
            if now >= deadline {
                return Ok(Poll::Open);
            }
            let until = tokio::time::Instant::from_std(deadline.min(self.next_relist));
            // The source holds a sender itself, so the channel never closes.
            if let Ok(Some(m)) = tokio::time::timeout_at(until, self.rx.recv()).await {
                self.handle(m, out)?;
            }
        }
    }
}

impl PodLogStream {
    /// Lists the workload's pods again every `every` instead of [`RELIST_EVERY`]: a controller
    /// following a thousand workloads trades a slower pickup of new pods for a thousandth of the
    /// LIST requests.
    pub fn set_relist_every(&mut self, every: Duration) {
        self.relist_every = every.max(Duration::from_millis(100));
        self.next_relist = self.next_relist.min(Instant::now() + self.relist_every);
    }

    /// Where the lines handed out so far end: `{"kind": "k8s", "namespace", "pods": {..}}`
    /// ([`LogCursor`]); opening with it continues right after them.
    pub fn cursor(&self) -> Value {
        json!(LogCursor {
            kind: "k8s".into(),
            namespace: self.namespace.clone(),
            pods: self
                .pods
                .iter()
                .map(|(name, p)| (name.clone(), p.cursor.clone()))
                .collect(),
        })
    }

    /// Events since the last call, oldest first (reconnects, restarts, pods added and gone).
    pub fn drain_events(&mut self) -> Vec<SourceEvent> {
        std::mem::take(&mut self.events)
    }

    /// What is followed, for reports.
    pub fn describe(&self) -> Value {
        json!({
            "kind": "k8s",
            "namespace": self.namespace,
            "workload": {"kind": self.target.kind(), "name": self.target.name()},
            "container": self.container,
            "context": self.identity["context"],
            "server": self.identity["server"],
            "pods": self.pods.keys().collect::<Vec<_>>(),
        })
    }

    /// The pods followed now, by name.
    pub fn pods(&self) -> Vec<String> {
        self.pods.keys().cloned().collect()
    }

    /// The kubelet timestamp of the newest line handed out (ingest lag = now - this).
    pub fn last_line_time(&self) -> Option<DateTime<Utc>> {
        self.newest
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranks_come_from_index_labels() {
        let labels = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        let job = WorkloadRef::Job("t".into());
        let idx = "batch.kubernetes.io/job-completion-index";
        assert_eq!(pod_rank(&job, &labels(&[(idx, "3")])), Some(3));
        assert_eq!(pod_rank(&job, &labels(&[(idx, "x")])), None);
        assert_eq!(pod_rank(&job, &labels(&[])), None);
        let ddp = WorkloadRef::PyTorchJob("d".into());
        let (t, i) = (
            "training.kubeflow.org/replica-type",
            "training.kubeflow.org/replica-index",
        );
        assert_eq!(pod_rank(&ddp, &labels(&[(t, "master"), (i, "0")])), Some(0));
        assert_eq!(pod_rank(&ddp, &labels(&[(t, "worker"), (i, "0")])), Some(1));
        assert_eq!(
            pod_rank(&WorkloadRef::Pod("p".into()), &labels(&[(idx, "1")])),
            None
        );
        assert_eq!(
            pod_rank(
                &WorkloadRef::StatefulSet("s".into()),
                &labels(&[("apps.kubernetes.io/pod-index", "2")])
            ),
            Some(2)
        );
    }

    #[test]
    fn a_rank_is_added_only_to_records_without_one() {
        let ts = "2026-01-01T00:00:00.123456789Z ";
        let l = |s: &str| format!("{ts}{s}\n").into_bytes();
        let out = String::from_utf8(with_rank(l(r#"{"step":1,"loss":2.5}"#), 4)).unwrap();
        assert_eq!(
            out,
            format!("{ts}{}\n", r#"{"loss":2.5,"rank":4,"step":1}"#)
        );
        for keep in [
            r#"{"step":1,"rank":0}"#,
            "plain text",
            r#"{"step": 1"#,
            "[1]",
        ] {
            assert_eq!(with_rank(l(keep), 4), l(keep), "{keep}");
        }
        // Without a timestamp prefix too.
        assert_eq!(
            with_rank(b"{\"step\":2}\n".to_vec(), 1),
            b"{\"rank\":1,\"step\":2}\n".to_vec()
        );
    }

    #[test]
    fn selector_syntax() {
        let sel: LabelSelector = serde_json::from_value(json!({
            "matchLabels": {"app": "trainer", "tier": "gpu"},
            "matchExpressions": [
                {"key": "zone", "operator": "In", "values": ["a", "b"]},
                {"key": "spot", "operator": "DoesNotExist"}
            ]
        }))
        .unwrap();
        assert_eq!(
            selector_string(&sel),
            "app=trainer,tier=gpu,zone in (a,b),!spot"
        );
    }

    #[test]
    fn line_timestamps() {
        let (t, raw) = line_ts(b"2026-01-01T00:00:01.500000000Z {\"step\":1}").unwrap();
        assert_eq!(raw, "2026-01-01T00:00:01.500000000Z");
        assert_eq!(t.timestamp_millis(), 1_767_225_601_500);
        assert!(line_ts(b"{\"step\":1}").is_none());
        // An empty log line still has its timestamp.
        assert_eq!(
            line_ts(b"2026-01-01T00:00:01Z\n").unwrap().1,
            "2026-01-01T00:00:01Z"
        );
        let m = too_long_marker(b"2026-01-01T00:00:01.500000000Z xxxxxxxx");
        assert_eq!(m.len(), MAX_LINE_BYTES + 1);
        assert_eq!(line_ts(&m).unwrap().1, "2026-01-01T00:00:01.500000000Z");
    }
}
