//! `kubectl modekeeper controller`: the live loop for a fleet, in the cluster.
//!
//! It watches the workloads that opt in (label `modekeeper.io/enabled=true`) of every kind
//! ModeKeeper supports with kube-runtime's watcher, runs one [`Session`](crate::closed_loop::live::Session)
//! per workload of the shards this replica leads ([`shards`]) on a bounded number of slots
//! (`max-sessions`), streams each workload's pod logs, decides windows with a shared pool of policy
//! sets ([`policies`]), keeps each session's state in a ConfigMap ([`store`]) so a restarted or
//! rescheduled controller resumes without repeating a decision, tells what it did as Kubernetes
//! Events ([`event_queue`]) and Prometheus metrics ([`metrics`], served by [`http`]), and applies
//! through exactly the gates of `k8s apply`, behind a cluster-wide kill switch and shard
//! leadership ([`apply_host`]).
//!
//! Settings come from the settings ConfigMap ([`settings`]), read at start and again every
//! [`ControllerOptions::settings_every`]; the kill switch is read again before every apply.

pub mod apply_host;
pub mod event_queue;
pub mod fleet;
pub mod http;
pub mod metrics;
pub mod policies;
pub mod prom_scope;
pub mod settings;
pub mod shards;
pub mod store;
pub mod telemetry;
pub mod worker;

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use futures_util::StreamExt;
use tokio::sync::{mpsc, watch};

pub use event_queue::EventQueue;
pub use policies::PolicyPool;

use crate::k8s::{ClusterApi, ConnectOptions, KubeCluster, Workload, WorkloadChange};
use crate::plan::WorkloadKind;
use settings::{ControllerSettings, ENABLED_SELECTOR};
use shards::{Electors, LeaseTiming, Ownership, shard_of};
use worker::{Shared, Timing, run_workload};

/// How loud a line of the controller's log is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    Info,
    Warn,
    Error,
}

/// Where the controller's log lines go (the command prints them to stderr).
pub type Log = Arc<dyn Fn(Level, String) + Send + Sync>;

/// Every kind the controller watches.
pub const KINDS: [WorkloadKind; 5] = [
    WorkloadKind::Deployment,
    WorkloadKind::StatefulSet,
    WorkloadKind::Job,
    WorkloadKind::PyTorchJob,
    WorkloadKind::JobSet,
];

/// The base name of the shard Leases (`<base>-shard-<i>`).
pub const LEASE_BASE: &str = crate::install::CONTROLLER_NAME;

/// What `controller` is started with.
#[derive(Clone)]
pub struct ControllerOptions {
    pub connect: ConnectOptions,
    /// The controller's own namespace (settings, state, Leases, license Secret).
    pub namespace: String,
    /// This replica's name (its pod name): the Leases' holder identity.
    pub identity: String,
    pub shards: u32,
    pub settings_configmap: String,
    pub listen: SocketAddr,
    /// Watched namespaces; empty: all.
    pub watch_namespaces: Vec<String>,
    pub leases: LeaseTiming,
    pub timing: Timing,
    pub settings_every: Duration,
    pub work_dir: PathBuf,
    pub log: Log,
}

/// One workload followed by a session task.
struct Running {
    stop: watch::Sender<bool>,
    update: watch::Sender<Arc<Workload>>,
    task: tokio::task::JoinHandle<()>,
}

type WorkloadId = (WorkloadKind, String, String);

fn id_of(w: &Workload) -> WorkloadId {
    (
        w.target.kind(),
        w.target.namespace().to_string(),
        w.target.name().to_string(),
    )
}

/// What the watchers report, tagged with the watch they come from.
struct Change {
    kind: WorkloadKind,
    namespace: Option<String>,
    change: Result<WorkloadChange, String>,
}

/// Reads the settings ConfigMap: `Ok(None)` when absent, `Err` with one line per problem.
async fn read_settings(
    cluster: &KubeCluster,
    ns: &str,
    name: &str,
) -> Result<Option<ControllerSettings>, String> {
    let cm = cluster
        .get_configmap(ns, name)
        .await
        .map_err(|e| format!("reading the settings ConfigMap {ns}/{name}: {e}"))?;
    match cm {
        None => Ok(None),
        Some(cm) => ControllerSettings::from_data(&cm.data)
            .map(Some)
            .map_err(|e| format!("the settings ConfigMap {ns}/{name}: {}", e.join("; "))),
    }
}

/// Runs the controller until `shutdown` resolves; then stops every session (each checkpoints),
/// releases its Leases and returns.
pub async fn run(
    opts: ControllerOptions,
    shutdown: impl std::future::Future<Output = ()>,
) -> anyhow::Result<()> {
    let log = opts.log.clone();
    let cluster = Arc::new(
        KubeCluster::connect(&opts.connect)
            .await
            .context("cannot connect to the cluster")?,
    );
    let metrics = Arc::new(metrics::ControllerMetrics::new());
    let health = Arc::new(http::Health::default());
    let listener = tokio::net::TcpListener::bind(opts.listen)
        .await
        .with_context(|| format!("cannot listen on {}", opts.listen))?;
    log(
        Level::Info,
        format!(
            "serving /metrics, /healthz, /readyz on {}",
            listener.local_addr()?
        ),
    );
    let (http_stop_tx, mut http_stop_rx) = watch::channel(false);
    let http_task = tokio::spawn(http::serve(
        listener,
        metrics.clone(),
        health.clone(),
        async move {
            let _ = http_stop_rx.wait_for(|s| *s).await;
        },
    ));

    // Settings: the last good ones stay in force when an edit breaks them.
    let first = match read_settings(&cluster, &opts.namespace, &opts.settings_configmap).await {
        Ok(Some(s)) => s,
        Ok(None) => {
            log(
                Level::Warn,
                format!(
                    "no settings ConfigMap {}/{}: running on the defaults (propose only)",
                    opts.namespace, opts.settings_configmap
                ),
            );
            ControllerSettings::defaults()
        }
        Err(e) => {
            log(
                Level::Error,
                format!("{e}: running on the defaults (propose only) until it is fixed"),
            );
            ControllerSettings::defaults()
        }
    };
    let (settings_tx, settings_rx) = watch::channel(Arc::new(first));
    let settings_task = {
        let cluster = cluster.clone();
        let (ns, name, every, log) = (
            opts.namespace.clone(),
            opts.settings_configmap.clone(),
            opts.settings_every,
            log.clone(),
        );
        tokio::spawn(async move {
            let mut told: Option<String> = None;
            loop {
                tokio::time::sleep(every).await;
                match read_settings(&cluster, &ns, &name).await {
                    Ok(read) => {
                        told = None;
                        let s = Arc::new(read.unwrap_or_else(ControllerSettings::defaults));
                        settings_tx.send_if_modified(|cur| {
                            let changed = **cur != *s;
                            if changed {
                                *cur = s.clone();
                            }
                            changed
                        });
                    }
                    Err(e) => {
                        if told.as_deref() != Some(e.as_str()) {
                            log(
                                Level::Error,
                                format!("{e}: the last good settings stay in force"),
                            );
                            told = Some(e);
                        }
                    }
                }
                if settings_tx.is_closed() {
                    return;
                }
            }
        })
    };

    // Leadership, one Lease per shard.
    let ownership = Arc::new(Ownership::new(opts.shards));
    let electors = Electors::new(
        &cluster,
        &opts.namespace,
        LEASE_BASE,
        &opts.identity,
        opts.shards,
        opts.leases,
    )?;
    let (electors_stop_tx, electors_stop_rx) = watch::channel(false);
    let elector_task = {
        let ownership = ownership.clone();
        let log = log.clone();
        tokio::spawn(electors.run(
            ownership,
            electors_stop_rx,
            Arc::new(move |shard, e| log(Level::Warn, format!("shard {shard}: {e}"))),
        ))
    };

    let (events, events_task) = {
        let log = log.clone();
        EventQueue::start(
            cluster.event_recorder(Some(opts.identity.clone())),
            move |w, ev, e| {
                log(
                    Level::Warn,
                    format!(
                        "cannot post the Event {} on {}/{}: {e}",
                        ev.reason,
                        w.target.kind().resource(),
                        w.target.name()
                    ),
                )
            },
        )
    };
    let policies = Arc::new(PolicyPool::new().map_err(|e| anyhow::anyhow!("the policies: {e}"))?);
    let shared = Arc::new(Shared {
        cluster: cluster.clone(),
        connect: opts.connect.clone(),
        namespace: opts.namespace.clone(),
        settings_configmap: opts.settings_configmap.clone(),
        identity: opts.identity.clone(),
        shards: opts.shards,
        ownership: ownership.clone(),
        settings: settings_rx.clone(),
        store: store::StateStore::new(cluster.clone(), &opts.namespace),
        events,
        metrics: metrics.clone(),
        policies,
        work_dir: opts.work_dir.clone(),
        timing: opts.timing,
        log: log.clone(),
        prom_reads: Arc::new(tokio::sync::Semaphore::new(telemetry::READS_AT_ONCE)),
    });

    // The watches: every served kind, in every watched namespace (or all).
    let (tx, mut rx) = mpsc::channel::<Change>(1024);
    let scopes: Vec<Option<String>> = if opts.watch_namespaces.is_empty() {
        vec![None]
    } else {
        opts.watch_namespaces.iter().cloned().map(Some).collect()
    };
    let mut watches = Vec::new();
    for kind in KINDS {
        match cluster.kind_served(kind).await {
            Ok(true) => {}
            Ok(false) => {
                log(
                    Level::Info,
                    format!("{} is not served here (no CRD): not watched", kind.as_str()),
                );
                continue;
            }
            Err(e) => log(
                Level::Warn,
                format!(
                    "cannot tell whether {} is served ({e}); watching it",
                    kind.as_str()
                ),
            ),
        }
        for ns in &scopes {
            let stream = cluster.watch_workloads(kind, ns.as_deref(), ENABLED_SELECTOR);
            let tx = tx.clone();
            let ns = ns.clone();
            watches.push((kind, ns.clone()));
            tokio::spawn(async move {
                let mut stream = std::pin::pin!(stream);
                while let Some(change) = stream.next().await {
                    let msg = Change {
                        kind,
                        namespace: ns.clone(),
                        change: change.map_err(|e| e.to_string()),
                    };
                    if tx.send(msg).await.is_err() {
                        return;
                    }
                }
            });
        }
    }
    drop(tx);

    let mut fleet = Fleet {
        known: HashMap::new(),
        resyncing: HashMap::new(),
        synced: HashSet::new(),
        running: HashMap::new(),
        stopping: HashMap::new(),
    };
    let mut owned_rx = ownership.subscribe();
    let mut settings_watch = settings_rx.clone();
    let mut shutdown = std::pin::pin!(shutdown);
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut told_errors: HashMap<(WorkloadKind, Option<String>), String> = HashMap::new();
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            msg = rx.recv() => {
                let Some(msg) = msg else { break };
                let scope = (msg.kind, msg.namespace.clone());
                match msg.change {
                    Ok(c) => {
                        told_errors.remove(&scope);
                        fleet.change(msg.kind, msg.namespace, c);
                    }
                    Err(e) => {
                        if told_errors.get(&scope) != Some(&e) {
                            log(Level::Warn, format!("watching {}: {e}", msg.kind.as_str()));
                            told_errors.insert(scope, e);
                        }
                    }
                }
            }
            _ = owned_rx.changed() => {
                let led = ownership.led();
                for s in 0..opts.shards.max(1) {
                    metrics.shard_leader(s, led.contains(&s));
                }
                log(Level::Info, format!("leading shards {led:?} of {}", opts.shards.max(1)));
            }
            _ = settings_watch.changed() => {}
            _ = tick.tick() => {}
        }
        if !health.is_ready() && watches.iter().all(|w| fleet.synced.contains(w)) {
            health.set_ready(true);
            log(
                Level::Info,
                format!("{} workloads opted in", fleet.known.len()),
            );
        }
        let max = settings_watch.borrow().max_sessions;
        fleet.reconcile(&shared, &ownership, opts.shards, max);
    }

    // Stop: every session checkpoints, then the Leases go.
    log(Level::Info, "stopping: checkpointing every session".into());
    health.set_ready(false);
    for r in fleet.running.values() {
        let _ = r.stop.send(true);
    }
    let tasks: Vec<_> = fleet
        .running
        .into_values()
        .map(|r| r.task)
        .chain(fleet.stopping.into_values().map(|(_, t)| t))
        .collect();
    let all = futures_util::future::join_all(tasks);
    if tokio::time::timeout(Duration::from_secs(20), all)
        .await
        .is_err()
    {
        log(Level::Warn, "some sessions did not stop within 20 s".into());
    }
    let _ = electors_stop_tx.send(true);
    let _ = tokio::time::timeout(Duration::from_secs(5), elector_task).await;
    settings_task.abort();
    // The Events queued last (the decisions just checkpointed) are posted, not dropped: a resumed
    // session does not tell them again. The queue closes with the last session's `Shared`.
    drop(shared);
    if tokio::time::timeout(Duration::from_secs(5), events_task)
        .await
        .is_err()
    {
        log(Level::Warn, "some Events were not posted within 5 s".into());
    }
    let _ = http_stop_tx.send(true);
    let _ = tokio::time::timeout(Duration::from_secs(2), http_task).await;
    Ok(())
}

/// The opted-in workloads the watches report, and the sessions run for them.
struct Fleet {
    known: HashMap<WorkloadId, Arc<Workload>>,
    /// Per watch, the workloads seen since its (re)list began.
    resyncing: HashMap<(WorkloadKind, Option<String>), HashSet<WorkloadId>>,
    /// Watches that finished a list at least once.
    synced: HashSet<(WorkloadKind, Option<String>)>,
    /// By workload uid.
    running: HashMap<String, Running>,
    /// Sessions told to stop, until they did, with the workload each followed.
    stopping: HashMap<String, (WorkloadId, tokio::task::JoinHandle<()>)>,
}

impl Fleet {
    fn change(&mut self, kind: WorkloadKind, ns: Option<String>, c: WorkloadChange) {
        let scope = (kind, ns);
        match c {
            WorkloadChange::ResyncStarted => {
                self.resyncing.insert(scope, HashSet::new());
            }
            WorkloadChange::Applied(w) => {
                let id = id_of(&w);
                if let Some(seen) = self.resyncing.get_mut(&scope) {
                    seen.insert(id.clone());
                }
                self.known.insert(id, Arc::new(w));
            }
            WorkloadChange::Deleted(t) => {
                self.known
                    .remove(&(t.kind(), t.namespace().to_string(), t.name().to_string()));
            }
            WorkloadChange::ResyncDone => {
                let seen = self.resyncing.remove(&scope).unwrap_or_default();
                let (kind, ns) = &scope;
                self.known.retain(|id, _| {
                    id.0 != *kind || ns.as_ref().is_some_and(|n| *n != id.1) || seen.contains(id)
                });
                self.synced.insert(scope);
            }
        }
    }

    fn reconcile(&mut self, sh: &Arc<Shared>, ownership: &Ownership, shards: u32, max: usize) {
        self.stopping.retain(|_, (_, t)| !t.is_finished());
        self.running.retain(|_, r| !r.task.is_finished());
        let mut desired: Vec<&Arc<Workload>> = self
            .known
            .values()
            .filter(|w| !w.uid.is_empty() && ownership.leads(shard_of(&w.uid, shards)))
            .collect();
        desired.sort_by_key(|w| id_of(w));
        let waiting = desired.len().saturating_sub(max);
        desired.truncate(max);
        let want: HashMap<&str, &Arc<Workload>> =
            desired.iter().map(|w| (w.uid.as_str(), *w)).collect();
        let gone: Vec<String> = self
            .running
            .keys()
            .filter(|uid| !want.contains_key(uid.as_str()))
            .cloned()
            .collect();
        for uid in gone {
            if let Some(r) = self.running.remove(&uid) {
                let _ = r.stop.send(true);
                let id = id_of(&r.update.borrow());
                self.stopping.insert(uid, (id, r.task));
            }
        }
        for (uid, w) in want {
            if let Some(r) = self.running.get(uid) {
                if r.update.borrow().resource_version != w.resource_version {
                    let _ = r.update.send((*w).clone());
                }
                continue;
            }
            if self.stopping.contains_key(uid) {
                continue; // started again once the old one checkpointed
            }
            // A workload recreated under its name (a new uid) waits for its old session: the
            // metric series are by name, and the old one's stop removes them.
            let id = id_of(w);
            if self.stopping.values().any(|(old, _)| *old == id) {
                continue;
            }
            let (stop, stop_rx) = watch::channel(false);
            let (update, update_rx) = watch::channel((*w).clone());
            let task = tokio::spawn(run_workload(sh.clone(), update_rx, stop_rx));
            self.running
                .insert(uid.to_string(), Running { stop, update, task });
        }
        sh.metrics.sessions(self.running.len(), waiting);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::Target;

    fn workload(ns: &str, name: &str, uid: &str) -> Workload {
        let t = Target::new(ns, name, WorkloadKind::Deployment).unwrap();
        Workload::from_object(
            &t,
            serde_json::json!({"metadata": {"namespace": ns, "name": name, "uid": uid,
                                            "resourceVersion": "1"}}),
        )
        .unwrap()
    }

    fn fleet() -> Fleet {
        Fleet {
            known: HashMap::new(),
            resyncing: HashMap::new(),
            synced: HashSet::new(),
            running: HashMap::new(),
            stopping: HashMap::new(),
        }
    }

    #[test]
    fn a_relist_forgets_what_it_no_longer_lists_in_its_own_scope_only() {
        let mut f = fleet();
        let dep = WorkloadKind::Deployment;
        let ml = Some("ml".to_string());
        f.change(dep, ml.clone(), WorkloadChange::ResyncStarted);
        f.change(
            dep,
            ml.clone(),
            WorkloadChange::Applied(workload("ml", "a", "u1")),
        );
        f.change(
            dep,
            ml.clone(),
            WorkloadChange::Applied(workload("ml", "b", "u2")),
        );
        f.change(dep, ml.clone(), WorkloadChange::ResyncDone);
        let other = Some("other".to_string());
        f.change(dep, other.clone(), WorkloadChange::ResyncStarted);
        f.change(
            dep,
            other.clone(),
            WorkloadChange::Applied(workload("other", "c", "u3")),
        );
        f.change(dep, other.clone(), WorkloadChange::ResyncDone);
        assert_eq!(f.known.len(), 3);
        assert!(f.synced.contains(&(dep, ml.clone())));
        // The watch of `ml` relists after a 410 and `b` is gone; `other` is not its business.
        f.change(dep, ml.clone(), WorkloadChange::ResyncStarted);
        f.change(
            dep,
            ml.clone(),
            WorkloadChange::Applied(workload("ml", "a", "u1")),
        );
        f.change(dep, ml.clone(), WorkloadChange::ResyncDone);
        let mut names: Vec<&str> = f.known.keys().map(|k| k.2.as_str()).collect();
        names.sort();
        assert_eq!(names, ["a", "c"]);
        let t = Target::new("ml", "a", dep).unwrap();
        f.change(dep, ml, WorkloadChange::Deleted(t));
        assert_eq!(f.known.len(), 1);
        // An all-namespaces watch's relist covers every namespace of its kind.
        f.change(dep, None, WorkloadChange::ResyncStarted);
        f.change(dep, None, WorkloadChange::ResyncDone);
        assert!(f.known.is_empty());
    }
}
