//! One workload's session in the controller: its pod logs or Prometheus series in
//! ([`super::telemetry`]), windows decided by the shared
//! policy pool, Events and metrics out, its state checkpointed to its state ConfigMap, and each
//! decision applied (when the settings allow) through the gates of `k8s apply` by
//! [`super::apply_host`] — the same exactly-once protocol as `closed-loop watch --apply`.
//!
//! Order of effects for a window with news (a decision, an incident, a verdict): decided →
//! checkpointed → Events queued. A controller killed in between resumes from the previous
//! checkpoint and decides the same windows again, identically (the session is deterministic and
//! the logs are re-read from the saved cursor), so no decision is lost; an apply is marked pending
//! in the state before the cluster is touched, so none is repeated.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::sync::watch;

use super::apply_host::ControllerApply;
use super::metrics::{ControllerMetrics, WorkloadLabels};
use super::policies::Borrowed;
use super::settings::{ControllerSettings, PASSPORTS_CONFIGMAP, SourceKind, WorkloadSettings};
use super::shards::{Ownership, shard_of, until_true};
use super::store::{
    LastDecision, LastEvent, ProposalSummary, SessionStatus, StateStore, StoreError, StoredSession,
    WorkloadKey, WorkloadSummary,
};
use super::telemetry::{PromStream, Telemetry, cursor_fits};
use super::{EventQueue, PolicyPool};
use crate::closed_loop::Alert;
use crate::closed_loop::effect::ChangeEffect;
use crate::closed_loop::live::{
    Session, SessionError, SessionEvent, SessionSetup, SilenceEvent, SilenceMonitor,
};
use crate::closed_loop::starting_knobs;
use crate::k8s::{
    ConnectOptions, KubeCluster, LogTarget, PodLogStream, Workload, WorkloadEvent, WorkloadRef,
    current_knobs,
};
use crate::passport::{MAX_PASSPORT_BYTES, Passport, TEMPLATE_NAMES, parse_passport, template};
use crate::plan::WorkloadKind;
use crate::policy::PolicyState;
use crate::signals::FeatureConfig;
use crate::telemetry::live::Poll;
use crate::telemetry::{Format, IngestOptions};

/// What every session of one controller shares.
pub struct Shared {
    pub cluster: Arc<KubeCluster>,
    /// The connection settings again, for the (synchronous) gated apply path.
    pub connect: ConnectOptions,
    /// The controller's own namespace: its settings, state ConfigMaps, license Secret.
    pub namespace: String,
    pub settings_configmap: String,
    /// This replica (its pod name).
    pub identity: String,
    pub shards: u32,
    pub ownership: Arc<Ownership>,
    pub settings: watch::Receiver<Arc<ControllerSettings>>,
    pub store: StateStore,
    pub events: EventQueue,
    pub metrics: Arc<ControllerMetrics>,
    pub policies: Arc<PolicyPool>,
    /// Where applies write their plans, verify and apply reports and rollback plans (an emptyDir
    /// in the pod: the audit trail that matters is in Events and the state ConfigMaps).
    pub work_dir: std::path::PathBuf,
    pub timing: Timing,
    pub log: super::Log,
    /// Bounds the Prometheus reads running at once ([`super::telemetry::READS_AT_ONCE`]).
    pub prom_reads: Arc<tokio::sync::Semaphore>,
}

/// The session loop's clocks.
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    /// Longest wait for new log lines before the loop looks around (stop, settings, silence).
    pub poll_wait: Duration,
    /// Rounds of a busy source start at most this often: lines that arrive one by one (10 steps/s)
    /// are read, decided and checkpointed in batches, not one wake-up each.
    pub min_round: Duration,
    /// A checkpoint at least this often while windows are decided (always after news).
    pub checkpoint_every: Duration,
    /// An apply starts only with this much shard leadership left.
    pub apply_margin: Duration,
    /// How often a session lists its workload's pods again (a pod restart is seen by its follow
    /// stream at once; new replicas are picked up this late).
    pub relist_every: Duration,
    /// Wait before trying a failed session again.
    pub retry: Duration,
}

impl Default for Timing {
    fn default() -> Self {
        Timing {
            poll_wait: Duration::from_secs(1),
            min_round: Duration::from_millis(500),
            relist_every: Duration::from_secs(15),
            checkpoint_every: Duration::from_secs(30),
            apply_margin: Duration::from_secs(5),
            retry: Duration::from_secs(10),
        }
    }
}

/// How a session ended.
enum End {
    /// Asked to stop (un-labelled, deleted, shard lost, shutdown).
    Stopped,
    /// Its settings changed: start again under the new ones.
    Restart,
}

/// Runs `workload`'s sessions until `stop` turns true: a failed session is told once (an Event,
/// the summary) and tried again after a change or [`Timing::retry`].
pub async fn run_workload(
    sh: Arc<Shared>,
    mut updates: watch::Receiver<Arc<Workload>>,
    mut stop: watch::Receiver<bool>,
) {
    let mut settings_rx = sh.settings.clone();
    let mut told: Option<String> = None;
    loop {
        if *stop.borrow() {
            return;
        }
        let workload = updates.borrow_and_update().clone();
        let settings = settings_rx.borrow_and_update().clone();
        let labels = labels_of(&workload);
        let result = run_session(
            &sh,
            &workload,
            &settings,
            &mut updates,
            &mut settings_rx,
            &mut stop,
        )
        .await;
        match result {
            Ok(End::Stopped) => {
                sh.metrics.remove_workload(&labels);
                return;
            }
            Ok(End::Restart) => told = None,
            Err(message) => {
                // Stopping, no longer leading its shard, or another replica wrote its state since:
                // the state is someone else's now; an error summary or Event would clobber theirs.
                let not_ours = *stop.borrow()
                    || message.ends_with(TAKEN_OVER)
                    || !sh.ownership.leads(shard_of(&workload.uid, sh.shards));
                if not_ours {
                    (sh.log)(
                        super::Level::Info,
                        format!("{}: {message}", describe(&workload)),
                    );
                } else if told.as_deref() != Some(message.as_str()) {
                    (sh.log)(
                        super::Level::Warn,
                        format!("{}: {message}", describe(&workload)),
                    );
                    sh.events
                        .post(&workload, WorkloadEvent::session_error(&message));
                    save_error_summary(&sh, &workload, &message).await;
                    told = Some(message);
                }
                tokio::select! {
                    _ = until_true(&mut stop) => {
                        sh.metrics.remove_workload(&labels);
                        return;
                    }
                    _ = fixing_change(&mut updates, &workload) => {}
                    _ = settings_rx.changed() => {}
                    _ = tokio::time::sleep(sh.timing.retry) => {}
                }
            }
        }
    }
}

/// Resolves once `updates` holds a change of `w` that can fix a failed session: its annotations,
/// its pod template's, or its spec (generation). Status updates (every pod change of a
/// Deployment) are not: each try costs API calls. Never resolves once the sender is gone (the
/// stop that comes with it ends the wait).
async fn fixing_change(updates: &mut watch::Receiver<Arc<Workload>>, w: &Workload) {
    loop {
        if updates.changed().await.is_err() {
            return std::future::pending().await;
        }
        let now = updates.borrow_and_update().clone();
        if now.annotations != w.annotations
            || now.template_annotations != w.template_annotations
            || now.generation != w.generation
        {
            return;
        }
    }
}

fn describe(w: &Workload) -> String {
    format!(
        "{}/{} in namespace {}",
        w.target.kind().resource(),
        w.target.name(),
        w.target.namespace()
    )
}

pub fn labels_of(w: &Workload) -> WorkloadLabels {
    WorkloadLabels {
        kind: w.target.kind().as_str().to_string(),
        namespace: w.target.namespace().to_string(),
        name: w.target.name().to_string(),
    }
}

pub fn key_of(w: &Workload) -> WorkloadKey {
    WorkloadKey {
        kind: w.target.kind(),
        namespace: w.target.namespace().to_string(),
        name: w.target.name().to_string(),
        uid: w.uid.clone(),
    }
}

fn source_name(ws: &WorkloadSettings) -> &'static str {
    match ws.source {
        SourceKind::PodLogs => "pod logs",
        SourceKind::Prometheus => "Prometheus series",
    }
}

/// The Prometheus source of a workload: its series only, from its creation or at most the
/// lookback ago (a new session of a long-running job starts with a baseline, and one of a
/// recreated workload never reads its predecessor's series).
fn prometheus_config(
    settings: &ControllerSettings,
    w: &Workload,
    ws: &WorkloadSettings,
) -> Result<crate::telemetry::live::PromConfig, String> {
    let p = &settings.prometheus;
    if p.url.is_empty() {
        return Err(format!(
            "source prometheus: the settings ConfigMap has no prometheus-url (set it, or the {} annotation to k8s)",
            super::settings::SOURCE_ANNOTATION
        ));
    }
    let now = chrono::Utc::now().timestamp_millis();
    let lookback = i64::try_from(p.lookback.as_millis()).unwrap_or(i64::MAX);
    let created = w.object["metadata"]["creationTimestamp"]
        .as_str()
        .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
        .map_or(now, |t| t.timestamp_millis());
    let start = created.max(now.saturating_sub(lookback));
    let roles: Vec<String> = match w.target.kind() {
        WorkloadKind::JobSet => w.object["spec"]["replicatedJobs"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|j| j["name"].as_str().map(String::from))
            .collect(),
        _ => w.roles.clone(),
    };
    let pods = super::prom_scope::pod_name_pattern(w.target.kind(), w.target.name(), &roles);
    Ok(p.config_for(
        w.target.namespace(),
        w.target.name(),
        &pods,
        &ws.prometheus_selector,
        start,
    ))
}

fn log_target(w: &Workload, container: Option<String>) -> LogTarget {
    let name = w.target.name().to_string();
    let workload = match w.target.kind() {
        WorkloadKind::StatefulSet => WorkloadRef::StatefulSet(name),
        WorkloadKind::Job => WorkloadRef::Job(name),
        WorkloadKind::PyTorchJob => WorkloadRef::PyTorchJob(name),
        WorkloadKind::JobSet => WorkloadRef::JobSet(name),
        _ => WorkloadRef::Deployment(name),
    };
    LogTarget {
        namespace: Some(w.target.namespace().to_string()),
        workload,
        container,
        since_seconds: None,
    }
}

/// The session's setup: what it decides under, and the config its state's fingerprint covers.
fn setup_of(
    w: &Workload,
    source: Value,
    passport: &Passport,
    digests: &[String],
    window_steps: u64,
) -> Result<SessionSetup, String> {
    let found = current_knobs(w).map_err(|e| format!("reading its knobs: {e}"))?;
    let governed: BTreeMap<String, f64> = found
        .into_iter()
        .filter(|(k, _)| passport.knob(k).is_some())
        .collect();
    let (knobs, _) = starting_knobs(passport, &governed);
    let features = FeatureConfig {
        window_steps,
        warmup_steps: crate::signals::DEFAULT_WARMUP_STEPS,
    };
    let ingest = IngestOptions {
        release_lag_steps: Some(RELEASE_LAG_STEPS),
        ..IngestOptions::default()
    };
    let t = &w.target;
    let config = json!({
        "source": source,
        "format": Format::Auto,
        "window_steps": features.window_steps, "warmup_steps": features.warmup_steps,
        "reorder_window": ingest.reorder_window, "clock_skew_tolerance_ms": ingest.skew_tolerance_ms,
        "release_lag_steps": ingest.release_lag_steps,
        "passport": {"name": passport.name, "version": passport.version, "sha256": passport.digest()},
        "policies": digests,
        "target": {"namespace": t.namespace(), "name": t.name(), "kind": t.kind().as_str()},
        "workload_uid": w.uid,
    });
    Ok(SessionSetup {
        passport: passport.clone(),
        knobs,
        features,
        format: Format::Auto,
        ingest,
        config,
    })
}

/// As `closed-loop watch`'s default: a window is decided this many steps after it ends.
const RELEASE_LAG_STEPS: u64 = 16;

/// What one window told, owned (the session's events borrow it).
enum News {
    Alert(Alert),
    Verdict(Box<ChangeEffect>),
    Window {
        index: u64,
        chord: String,
        chord_changed: bool,
        proposals: Vec<(String, f64, f64)>,
    },
}

/// What a session's checkpoint holds besides the session: its policies' states, its summary, the
/// state ConfigMap's resourceVersion and the source cursor.
pub(super) struct Book {
    pub states: Vec<PolicyState>,
    pub summary: WorkloadSummary,
    pub rv: Option<String>,
    pub cursor: Value,
}

/// The live parts of one session.
struct Live {
    session: Session,
    book: Book,
}

pub(super) fn now_text() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// How a checkpoint refused for a conflict ends: the state is another replica's now.
const TAKEN_OVER: &str = "another replica runs it now";

/// Saves the session to its state ConfigMap.
pub(super) async fn checkpoint(
    store: &StateStore,
    key: &WorkloadKey,
    session: &Session,
    book: &mut Book,
) -> Result<(), String> {
    book.summary.updated_at = now_text();
    book.summary.windows_evaluated = session.totals().iterations_done;
    let stored = StoredSession {
        state: Some(session.checkpoint(book.cursor.clone(), book.states.clone(), now_text())),
        summary: book.summary.clone(),
    };
    match store.save(key, &stored, book.rv.as_deref()).await {
        Ok(rv) => {
            book.rv = Some(rv);
            Ok(())
        }
        Err(e @ StoreError::Conflict { .. }) => Err(format!("{e}: {TAKEN_OVER}")),
        Err(e) => Err(format!("saving its state: {e}")),
    }
}

fn new_summary(sh: &Shared, w: &Workload, knobs: &BTreeMap<String, f64>) -> WorkloadSummary {
    let mut s = WorkloadSummary::new(
        &key_of(w),
        &sh.identity,
        shard_of(&w.uid, sh.shards),
        &now_text(),
    );
    s.knobs = knobs.clone();
    s
}

async fn save_error_summary(sh: &Shared, w: &Workload, message: &str) {
    let key = key_of(w);
    let (state, rv, mut summary) = match sh.store.load(&key).await {
        Ok(Some((s, rv))) => (s.state, Some(rv), s.summary),
        Ok(None) => (None, None, new_summary(sh, w, &BTreeMap::new())),
        // A state that cannot be read is left as it is.
        Err(_) => return,
    };
    summary.status = SessionStatus::Error;
    summary.error = Some(message.to_string());
    summary.updated_at = now_text();
    let _ = sh
        .store
        .save(&key, &StoredSession { state, summary }, rv.as_deref())
        .await;
}

/// A built-in template, else the key `<name>.json` of the operator's passports ConfigMap.
async fn passport_named(sh: &Shared, name: &str) -> Result<(Passport, String), String> {
    if let Some(t) = template(name) {
        return t
            .map(|p| (p, format!("template:{name}")))
            .map_err(|e| e.to_string());
    }
    let cm = sh
        .cluster
        .get_configmap(&sh.namespace, PASSPORTS_CONFIGMAP)
        .await
        .map_err(|e| format!("reading the passports ConfigMap: {e}"))?;
    let key = format!("{name}.json");
    let what = format!("{}/{PASSPORTS_CONFIGMAP} key {key}", sh.namespace);
    let text = cm.and_then(|c| c.data.get(&key).cloned()).ok_or_else(|| {
        format!(
            "passport {name:?} is neither built in ({}) nor in {what}",
            TEMPLATE_NAMES.join(", ")
        )
    })?;
    if text.len() > MAX_PASSPORT_BYTES as usize {
        return Err(format!("{what}: longer than {MAX_PASSPORT_BYTES} bytes"));
    }
    parse_passport(&what, &text)
        .map(|l| (l.passport, format!("configmap:{what}")))
        .map_err(|e| e.to_string())
}

async fn run_session(
    sh: &Arc<Shared>,
    w: &Arc<Workload>,
    settings: &ControllerSettings,
    updates: &mut watch::Receiver<Arc<Workload>>,
    settings_rx: &mut watch::Receiver<Arc<ControllerSettings>>,
    stop: &mut watch::Receiver<bool>,
) -> Result<End, String> {
    let ws = WorkloadSettings::resolve(settings, &w.annotations)?;
    let prometheus = (ws.source == SourceKind::Prometheus)
        .then(|| prometheus_config(settings, w, &ws))
        .transpose()?;
    let (passport, passport_source) = passport_named(sh, &ws.passport).await?;
    // Loading a list the first time compiles its components: not on a runtime thread's time.
    let digests = tokio::task::block_in_place(|| sh.policies.digests(&ws.policies))?;
    let source = match &prometheus {
        Some(c) => json!({"kind": "prometheus", "url": crate::telemetry::live::redact_url(&c.url),
                          "step_ms": c.step.as_millis() as u64, "queries": c.queries}),
        None => json!({"kind": "k8s", "namespace": w.target.namespace(),
                       "workload": log_target(w, None).workload.to_string(), "container": ws.container}),
    };
    let setup = setup_of(w, source, &passport, &digests, ws.window_steps)?;
    let key = key_of(w);
    let labels = labels_of(w);
    let loaded = sh.store.load(&key).await.map_err(|e| {
        format!(
            "its state ConfigMap cannot be used: {e}; delete it (kubectl -n {} delete configmap -l modekeeper.io/state=true …) to start over",
            sh.namespace
        )
    })?;
    let (rv, stored) = match loaded {
        Some((s, rv)) => (Some(rv), Some(s)),
        None => (None, None),
    };
    let mut started = match &prometheus {
        Some(c) => format!(
            "started at {} of its Prometheus series",
            chrono::DateTime::from_timestamp_millis(c.start_ms).map_or_else(
                || c.start_ms.to_string(),
                |t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
            )
        ),
        None => "started from the beginning of its logs".to_string(),
    };
    let mut cursor = None;
    let (session, states, summary) = match stored {
        Some(StoredSession {
            state: Some(state),
            summary,
        }) => {
            // A cursor of the other kind of source (the source setting changed) is no position.
            cursor =
                Some(state.source_cursor.clone()).filter(|c| cursor_fits(c, prometheus.is_some()));
            let mut lent = tokio::task::block_in_place(|| sh.policies.take(&ws.policies, None))?;
            let resumed = Session::resume(&setup, state, &mut lent.set);
            let states = lent.set.states();
            sh.policies.give(lent);
            match resumed {
                Ok(s) => {
                    started = format!(
                        "resumed after window {} (restart {})",
                        s.closed_loop().windows(),
                        s.saved_totals().restarts
                    );
                    (s, states, summary)
                }
                Err(SessionError::OtherSetup(keys)) => {
                    // The settings changed: a new loop, from where the source was read to (when
                    // the position is one of this source's; else from where a new one starts).
                    started = match cursor {
                        Some(_) => "started anew at the saved source position".to_string(),
                        None => started,
                    };
                    started = format!("{started}: its {} changed", keys.join(", "));
                    let s = Session::new(&setup);
                    let states = sh.policies.initial_states(&ws.policies)?;
                    (s, states, new_summary(sh, w, &setup.knobs))
                }
                Err(e) => {
                    return Err(format!(
                        "its saved state is refused: {e}; delete its state ConfigMap to start over"
                    ));
                }
            }
        }
        _ => (
            Session::new(&setup),
            sh.policies.initial_states(&ws.policies)?,
            new_summary(sh, w, &setup.knobs),
        ),
    };
    // A grid source hands out a grid point's records at once: its step is no silence.
    let grid_step = prometheus.as_ref().map_or(Duration::ZERO, |c| c.step);
    let mut stream = match prometheus {
        // Its queries may hang for their timeout each: a stop does not wait for them.
        Some(cfg) => Telemetry::Prometheus(tokio::select! {
            biased;
            _ = until_true(stop) => return Ok(End::Stopped),
            s = PromStream::open(cfg, cursor, sh.prom_reads.clone()) => {
                s.map_err(|e| format!("cannot read its Prometheus series: {e:#}"))?
            }
        }),
        None => {
            let mut s = PodLogStream::open(
                &sh.cluster,
                log_target(w, ws.container.clone()),
                cursor.as_ref(),
            )
            .await
            .map_err(|e| format!("cannot follow its pod logs: {e:#}"))?;
            s.set_relist_every(sh.timing.relist_every);
            Telemetry::Pods(s)
        }
    };
    let mut live = Live {
        session,
        book: Book {
            states,
            summary,
            rv,
            cursor: stream.cursor(),
        },
    };
    live.book.summary.status = SessionStatus::Running;
    live.book.summary.replica = sh.identity.clone();
    live.book.summary.error = None;
    checkpoint(&sh.store, &key, &live.session, &mut live.book).await?;
    (sh.log)(
        super::Level::Info,
        format!("{}: session {started}", describe(w)),
    );
    post(
        sh,
        w,
        &mut live.book.summary,
        WorkloadEvent::session_started(&started),
    );

    let shard = shard_of(&w.uid, sh.shards);
    let mut workload = w.clone();
    let mut batch: Vec<Vec<u8>> = Vec::new();
    let mut last_save = Instant::now();
    let mut silence = SilenceMonitor::with_min_gap(grid_step);
    let clock = Instant::now();
    let mut source_done = false;
    let mut next_round = tokio::time::Instant::now();
    loop {
        let mut restart = false;
        let paced = tokio::time::Instant::now() < next_round;
        tokio::select! {
            biased;
            _ = until_true(stop) => {
                // Lines a cancelled poll already handed out go into the state with the cursor
                // that is past them.
                live.session.push_lines(batch.drain(..));
                live.book.summary.status = SessionStatus::Stopped;
                live.book.cursor = stream.cursor();
                checkpoint(&sh.store, &key, &live.session, &mut live.book).await?;
                return Ok(End::Stopped);
            }
            r = updates.changed() => {
                if r.is_err() {
                    return Ok(End::Stopped);
                }
                let now = updates.borrow_and_update().clone();
                let s = settings_rx.borrow().clone();
                restart = WorkloadSettings::resolve(&s, &now.annotations).ok().as_ref() != Some(&ws);
                workload = now;
            }
            r = settings_rx.changed() => {
                if r.is_err() {
                    return Ok(End::Stopped);
                }
                let s = settings_rx.borrow_and_update().clone();
                restart = WorkloadSettings::resolve(&s, &workload.annotations).ok().as_ref() != Some(&ws)
                    || (ws.source == SourceKind::Prometheus && s.prometheus != settings.prometheus);
            }
            _ = tokio::time::sleep_until(next_round), if paced => continue,
            poll = stream.poll(&mut batch, sh.timing.poll_wait), if !source_done && !paced => {
                source_done = poll.map_err(|e| format!("reading its {}: {e:#}", source_name(&ws)))? == Poll::Ended;
                if !batch.is_empty() {
                    next_round = tokio::time::Instant::now() + sh.timing.min_round;
                }
            }
            _ = tokio::time::sleep(sh.timing.poll_wait), if source_done => {}
        }
        for ev in stream.drain_events() {
            (sh.log)(
                super::Level::Info,
                format!("{}: source: {} {}", describe(w), ev.kind, ev.detail),
            );
            // A selector that matches nothing is the owner's to fix: told where they look.
            if let Some(m) = ev.detail["message"]
                .as_str()
                .filter(|_| ev.kind == "no_step_time_series")
            {
                post(
                    sh,
                    &workload,
                    &mut live.book.summary,
                    WorkloadEvent::no_telemetry(m),
                );
            }
        }
        let lines = batch.len() as u64;
        live.session.push_lines(batch.drain(..));
        if lines > 0 {
            sh.metrics.lines_read(&labels, lines);
        }
        if source_done && live.session.pending_lines() == 0 && !live.session.ended() {
            live.session.finish_source();
        }
        // Applying, a change is judged only once the cluster took it; else as if it had.
        let apply_on = settings_rx.borrow().apply;
        live.session.set_applies(apply_on);
        let news = decide(sh, &ws, &mut live, &labels);
        let ingest_lag = stream
            .last_line_time()
            .map(|t| (chrono::Utc::now() - t).to_std().unwrap_or_default());
        // The age of the newest record as it is ingested: with no new line it is not measured
        // (else a paused trainer or a finished Job reads as a controller falling behind).
        if let Some(lag) = ingest_lag.filter(|_| lines > 0) {
            sh.metrics.ingest_lag(&labels, lag);
        }
        let has_news = news.iter().any(|n| !matches!(n, News::Window { proposals, chord_changed, .. } if proposals.is_empty() && !chord_changed));
        let mut events = Vec::new();
        for n in news {
            match n {
                News::Alert(a) => {
                    sh.metrics.incident(&labels, &a.kind);
                    live.book.summary.incidents += 1;
                    events.push(WorkloadEvent::incident(&a));
                }
                News::Verdict(e) => events.push(WorkloadEvent::effect(&e)),
                News::Window {
                    index,
                    chord,
                    proposals,
                    ..
                } => {
                    if let Some(lag) = ingest_lag {
                        sh.metrics.decision_latency(lag);
                    }
                    sh.metrics.set_active_chord(&labels, &chord);
                    live.book.summary.active_chord = Some(chord.clone());
                    if !proposals.is_empty() {
                        sh.metrics.proposals(&labels, proposals.len() as u64);
                        live.book.summary.last_decision = Some(LastDecision {
                            window: index,
                            chord: chord.clone(),
                            proposals: proposals
                                .iter()
                                .map(|(k, f, t)| ProposalSummary {
                                    knob: k.clone(),
                                    from: *f,
                                    to: *t,
                                })
                                .collect(),
                            at: now_text(),
                        });
                        live.book.summary.knobs = live.session.closed_loop().knobs().clone();
                        if !settings_rx.borrow().apply {
                            live.book.summary.apply_status = "proposed (apply off)".into();
                        }
                        events.push(WorkloadEvent::proposed(
                            index,
                            &chord,
                            proposals.iter().map(|(k, f, t)| (k.as_str(), *f, *t)),
                        ));
                    }
                }
            }
        }
        if !source_done
            && let Some(ev) = silence.observe(
                clock.elapsed(),
                live.session.ingest_stats().records_parsed,
                live.session.last_step_seen(),
                live.session.last_event(),
            )
        {
            events.push(match &ev {
                SilenceEvent::Started(s) => WorkloadEvent::trainer_silent(s),
                SilenceEvent::Ended {
                    silent_ms,
                    after_step,
                } => WorkloadEvent::trainer_resumed(*silent_ms, *after_step),
            });
        }
        // Checkpointed before it is told: a restart decides these windows again, never loses them.
        if has_news || !events.is_empty() || last_save.elapsed() >= sh.timing.checkpoint_every {
            // Past every line pushed (the session carries those not fed yet).
            live.book.cursor = stream.cursor();
            if let Err(e) = checkpoint(&sh.store, &key, &live.session, &mut live.book).await {
                sh.metrics.checkpoint_failed(&labels);
                return Err(e);
            }
            last_save = Instant::now();
        }
        for ev in events {
            post(sh, &workload, &mut live.book.summary, ev);
        }
        if apply_on
            && live.session.apply_due()
            && sh.ownership.leadership_left(shard) >= sh.timing.apply_margin
        {
            live.book.cursor = stream.cursor();
            live = apply(
                sh,
                &workload,
                &ws,
                (&passport, &passport_source),
                live,
                shard,
            )
            .await?;
            last_save = Instant::now();
        }
        if restart {
            live.book.summary.status = SessionStatus::Stopped;
            live.book.cursor = stream.cursor();
            checkpoint(&sh.store, &key, &live.session, &mut live.book).await?;
            return Ok(End::Restart);
        }
    }
}

/// Queues an Event and keeps it as the summary's last.
fn post(sh: &Shared, w: &Arc<Workload>, summary: &mut WorkloadSummary, ev: WorkloadEvent) {
    summary.last_event = Some(LastEvent {
        reason: ev.reason.clone(),
        note: ev.note.clone(),
        at: now_text(),
    });
    sh.events.post(w, ev);
}

/// Feeds the queued lines and decides the windows they complete.
fn decide(
    sh: &Shared,
    ws: &WorkloadSettings,
    live: &mut Live,
    labels: &WorkloadLabels,
) -> Vec<News> {
    if live.session.pending_lines() == 0 && live.session.ended() {
        return Vec::new();
    }
    let mut policies = Borrowed::new(&sh.policies, &ws.policies, &mut live.book.states);
    let mut news = Vec::new();
    let started = Instant::now();
    let r: Result<bool, std::convert::Infallible> =
        live.session
            .advance(&mut policies, &mut |_| false, &mut |ev| {
                news.push(match ev {
                    SessionEvent::Alert(a) => News::Alert(a.clone()),
                    SessionEvent::Verdict(e) => News::Verdict(Box::new(e.clone())),
                    SessionEvent::Window {
                        index,
                        event,
                        chord_changed,
                        ..
                    } => News::Window {
                        index,
                        chord: event.chord.clone(),
                        chord_changed,
                        proposals: event
                            .proposals
                            .iter()
                            .map(|p| (p.knob.clone(), p.from, p.to))
                            .collect(),
                    },
                });
                Ok(())
            });
    let Ok(_) = r;
    policies.done();
    let windows = news
        .iter()
        .filter(|n| matches!(n, News::Window { .. }))
        .count() as u32;
    if windows > 0 {
        let each = started.elapsed() / windows;
        for _ in 0..windows {
            sh.metrics.window_evaluated(labels, each);
        }
    }
    news
}

/// The apply protocol on a blocking thread (the gated apply path is synchronous): mark pending,
/// checkpoint, apply, record, checkpoint.
async fn apply(
    sh: &Arc<Shared>,
    w: &Arc<Workload>,
    ws: &WorkloadSettings,
    passport: (&Passport, &str),
    live: Live,
    shard: u32,
) -> Result<Live, String> {
    let (passport, passport_source) = passport;
    let Live { mut session, book } = live;
    let mut host = ControllerApply {
        sh: sh.clone(),
        rt: tokio::runtime::Handle::current(),
        workload: w.clone(),
        key: key_of(w),
        labels: labels_of(w),
        passport: passport.clone(),
        passport_source: passport_source.to_string(),
        advanced: ws.policies.len() > 1,
        shard,
        book,
    };
    let (session, host, result) = tokio::task::spawn_blocking(move || {
        let r = session.apply_decided(&mut host);
        (session, host, r)
    })
    .await
    .map_err(|e| format!("the apply stopped: {e}"))?;
    result.map_err(|e| e.0)?;
    Ok(Live {
        session,
        book: host.book,
    })
}
