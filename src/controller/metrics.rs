//! The controller's Prometheus metrics: what it evaluated, decided, applied and blocked, per workload,
//! and how far behind it runs. [`ControllerMetrics`] is shared by every session (`Send + Sync`,
//! lock-free counters) and encoded in the Prometheus text format (0.0.4) for `GET /metrics`.
//!
//! Cardinality stays bounded with a churning fleet: per-workload series carry only `kind`,
//! `namespace`, `name` (plus one small code: chord, incident kind, block reason) and are all removed
//! by [`ControllerMetrics::remove_workload`] when a session stops. Histograms are not per workload
//! (a dozen buckets times a thousand workloads would dwarf everything else): evaluation time and
//! decision latency are fleet-wide distributions.
//!
//! No I/O here; the HTTP server is `super::http`.

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::AtomicU64;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use prometheus_client::encoding::{EncodeLabelSet, prometheus_text};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Metric, Registry, Unit};

/// The `Content-Type` of [`ControllerMetrics::encode`]'s output.
pub const CONTENT_TYPE: &str = prometheus_text::CONTENT_TYPE;

/// Upper bounds (seconds) of the decision-latency buckets: 5 ms .. 30 s around the 2 s p99 target.
const DECISION_LATENCY_BUCKETS: [f64; 12] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0,
];
/// Upper bounds (seconds) of the window-evaluation buckets: a window's policies and envelope take
/// tens of microseconds to a few milliseconds; the top buckets catch a policy near its fuel limit.
const EVALUATION_BUCKETS: [f64; 12] = [
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 1.0,
];

/// The labels of every per-workload series.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WorkloadLabels {
    pub kind: String,
    pub namespace: String,
    pub name: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ChordLabel {
    chord: String,
}

/// Named `incident`, not `kind`: `kind` is the workload's kind.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct IncidentLabel {
    incident: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabel {
    reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabel {
    state: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ShardLabel {
    shard: u32,
}

type PerWorkload<M> = Family<WorkloadLabels, M>;
type PerWorkloadAnd<L, M> = Family<(WorkloadLabels, L), M>;

/// The label values of a workload's variable-keyed series, so that they can be removed.
#[derive(Default)]
struct Tracked {
    chord: Option<String>,
    incidents: BTreeSet<String>,
    reasons: BTreeSet<String>,
}

/// Most distinct incident kinds, or block reasons, one workload gets series for; later ones count
/// under [`OTHER`]. The codes come from our code, but an incident kind may come from a policy, and
/// a policy must not be able to grow the exposition without bound.
const MAX_CODES_PER_WORKLOAD: usize = 32;
const OTHER: &str = "other";

/// `code`, remembered in `seen`, or [`OTHER`] once `seen` is full.
fn bounded_code(seen: &mut BTreeSet<String>, code: &str) -> String {
    if !seen.contains(code) {
        if seen.len() >= MAX_CODES_PER_WORKLOAD {
            seen.insert(OTHER.to_string());
            return OTHER.to_string();
        }
        seen.insert(code.to_string());
    }
    code.to_string()
}

/// Every metric the controller exports. Cheap to update from many sessions at once.
pub struct ControllerMetrics {
    registry: Registry,
    /// Exposed names (with unit and `_total` suffixes), in registration order: what docs must list.
    names: Vec<String>,
    windows: PerWorkload<Counter>,
    evaluation: Histogram,
    active_chord: PerWorkloadAnd<ChordLabel, Gauge>,
    proposals: PerWorkload<Counter>,
    incidents: PerWorkloadAnd<IncidentLabel, Counter>,
    applied: PerWorkload<Counter>,
    blocked: PerWorkloadAnd<ReasonLabel, Counter>,
    apply_failed: PerWorkload<Counter>,
    lines: PerWorkload<Counter>,
    ingest_lag: PerWorkload<Gauge<f64, AtomicU64>>,
    decision_latency: Histogram,
    sessions: Family<StateLabel, Gauge>,
    shard_leader: Family<ShardLabel, Gauge>,
    checkpoint_failed: PerWorkload<Counter>,
    /// Held while a variable-keyed series is created or removed, so that removal misses none.
    tracked: Mutex<HashMap<WorkloadLabels, Tracked>>,
}

impl std::fmt::Debug for ControllerMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ControllerMetrics")
            .field("names", &self.names)
            .finish_non_exhaustive()
    }
}

impl Default for ControllerMetrics {
    fn default() -> Self {
        Self::new()
    }
}

/// Registers metrics and remembers their exposed names.
struct Registrar {
    registry: Registry,
    names: Vec<String>,
}

impl Registrar {
    /// `name` without prefix, unit or `_total`: the encoder adds them.
    fn add(&mut self, name: &str, help: &str, unit: Option<Unit>, metric: impl Metric + Clone) {
        let mut exposed = format!("modekeeper_{name}");
        if let Some(u) = &unit {
            exposed.push('_');
            exposed.push_str(u.as_str());
        }
        if matches!(
            metric.metric_type(),
            prometheus_client::metrics::MetricType::Counter
        ) {
            exposed.push_str("_total");
        }
        self.names.push(exposed);
        match unit {
            Some(u) => self.registry.register_with_unit(name, help, u, metric),
            None => self.registry.register(name, help, metric),
        }
    }
}

impl ControllerMetrics {
    pub fn new() -> Self {
        let windows = PerWorkload::<Counter>::default();
        let evaluation = Histogram::new(EVALUATION_BUCKETS);
        let active_chord = PerWorkloadAnd::<ChordLabel, Gauge>::default();
        let proposals = PerWorkload::<Counter>::default();
        let incidents = PerWorkloadAnd::<IncidentLabel, Counter>::default();
        let applied = PerWorkload::<Counter>::default();
        let blocked = PerWorkloadAnd::<ReasonLabel, Counter>::default();
        let apply_failed = PerWorkload::<Counter>::default();
        let lines = PerWorkload::<Counter>::default();
        let ingest_lag = PerWorkload::<Gauge<f64, AtomicU64>>::default();
        let decision_latency = Histogram::new(DECISION_LATENCY_BUCKETS);
        let sessions = Family::<StateLabel, Gauge>::default();
        let shard_leader = Family::<ShardLabel, Gauge>::default();
        let checkpoint_failed = PerWorkload::<Counter>::default();

        let mut r = Registrar {
            registry: Registry::with_prefix("modekeeper"),
            names: Vec::new(),
        };
        r.add(
            "windows_evaluated",
            "Analysis windows evaluated (policies and envelope run), per workload",
            None,
            windows.clone(),
        );
        r.add(
            "window_evaluation",
            "Time to evaluate one window (policies and envelope), all workloads",
            Some(Unit::Seconds),
            evaluation.clone(),
        );
        r.add(
            "active_chord",
            "1 for the chord a workload's session currently runs under",
            None,
            active_chord.clone(),
        );
        r.add(
            "proposals",
            "Knob-change proposals made, per workload",
            None,
            proposals.clone(),
        );
        r.add(
            "incidents",
            "Incidents detected, per workload and incident kind",
            None,
            incidents.clone(),
        );
        r.add(
            "applies",
            "Decisions applied to the cluster, per workload",
            None,
            applied.clone(),
        );
        r.add(
            "apply_blocked",
            "Applies a gate blocked, per workload and reason code",
            None,
            blocked.clone(),
        );
        r.add(
            "apply_failures",
            "Applies that failed against the API server, per workload",
            None,
            apply_failed.clone(),
        );
        r.add(
            "lines_read",
            "Telemetry lines read, per workload",
            None,
            lines.clone(),
        );
        r.add(
            "ingest_lag",
            "Age of the newest telemetry record when it was ingested, per workload",
            Some(Unit::Seconds),
            ingest_lag.clone(),
        );
        r.add(
            "decision_latency",
            "Time from a window's last step to its decision, all workloads",
            Some(Unit::Seconds),
            decision_latency.clone(),
        );
        r.add(
            "sessions",
            "Workload sessions on this replica, running or waiting for a free slot",
            None,
            sessions.clone(),
        );
        r.add(
            "shard_leader",
            "1 while this replica holds the shard's Lease",
            None,
            shard_leader.clone(),
        );
        r.add(
            "checkpoint_failures",
            "Session checkpoints that could not be written to the cluster, per workload",
            None,
            checkpoint_failed.clone(),
        );
        ControllerMetrics {
            registry: r.registry,
            names: r.names,
            windows,
            evaluation,
            active_chord,
            proposals,
            incidents,
            applied,
            blocked,
            apply_failed,
            lines,
            ingest_lag,
            decision_latency,
            sessions,
            shard_leader,
            checkpoint_failed,
            tracked: Mutex::new(HashMap::new()),
        }
    }

    fn tracked(&self) -> MutexGuard<'_, HashMap<WorkloadLabels, Tracked>> {
        // Nothing panics while holding it; a poisoned map is still consistent.
        self.tracked.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The exposed name of every registered metric (`modekeeper_…`, with unit and `_total`).
    pub fn metric_names(&self) -> &[String] {
        &self.names
    }

    pub fn window_evaluated(&self, w: &WorkloadLabels, eval: Duration) {
        self.windows.get_or_create(w).inc();
        self.evaluation.observe(eval.as_secs_f64());
    }

    /// The workload now runs under `chord`: its series is 1, the previous chord's series goes.
    pub fn set_active_chord(&self, w: &WorkloadLabels, chord: &str) {
        let mut tracked = self.tracked();
        let t = tracked.entry(w.clone()).or_default();
        if let Some(prev) = t.chord.take()
            && prev != chord
        {
            self.active_chord.remove(&(
                w.clone(),
                ChordLabel {
                    chord: prev.clone(),
                },
            ));
        }
        self.active_chord
            .get_or_create(&(
                w.clone(),
                ChordLabel {
                    chord: chord.to_string(),
                },
            ))
            .set(1);
        t.chord = Some(chord.to_string());
    }

    pub fn proposals(&self, w: &WorkloadLabels, n: u64) {
        self.proposals.get_or_create(w).inc_by(n);
    }

    pub fn incident(&self, w: &WorkloadLabels, kind: &str) {
        let mut tracked = self.tracked();
        let t = tracked.entry(w.clone()).or_default();
        let incident = bounded_code(&mut t.incidents, kind);
        self.incidents
            .get_or_create(&(w.clone(), IncidentLabel { incident }))
            .inc();
    }

    pub fn applied(&self, w: &WorkloadLabels) {
        self.applied.get_or_create(w).inc();
    }

    /// `reason` is a block reason code (`kill_switch`, `license_missing`, ...).
    pub fn apply_blocked(&self, w: &WorkloadLabels, reason: &str) {
        let mut tracked = self.tracked();
        let t = tracked.entry(w.clone()).or_default();
        let reason = bounded_code(&mut t.reasons, reason);
        self.blocked
            .get_or_create(&(w.clone(), ReasonLabel { reason }))
            .inc();
    }

    pub fn apply_failed(&self, w: &WorkloadLabels) {
        self.apply_failed.get_or_create(w).inc();
    }

    pub fn lines_read(&self, w: &WorkloadLabels, n: u64) {
        self.lines.get_or_create(w).inc_by(n);
    }

    pub fn ingest_lag(&self, w: &WorkloadLabels, lag: Duration) {
        self.ingest_lag.get_or_create(w).set(lag.as_secs_f64());
    }

    pub fn decision_latency(&self, latency: Duration) {
        self.decision_latency.observe(latency.as_secs_f64());
    }

    pub fn sessions(&self, running: usize, waiting: usize) {
        let clamp = |n: usize| i64::try_from(n).unwrap_or(i64::MAX);
        self.sessions
            .get_or_create(&StateLabel { state: "running" })
            .set(clamp(running));
        self.sessions
            .get_or_create(&StateLabel { state: "waiting" })
            .set(clamp(waiting));
    }

    pub fn shard_leader(&self, shard: u32, leader: bool) {
        self.shard_leader
            .get_or_create(&ShardLabel { shard })
            .set(i64::from(leader));
    }

    pub fn checkpoint_failed(&self, w: &WorkloadLabels) {
        self.checkpoint_failed.get_or_create(w).inc();
    }

    /// A stopped session's series go (its counters restart from zero if it comes back, which
    /// `rate()` reads as a counter reset).
    pub fn remove_workload(&self, w: &WorkloadLabels) {
        let mut tracked = self.tracked();
        if let Some(t) = tracked.remove(w) {
            if let Some(chord) = t.chord {
                self.active_chord.remove(&(w.clone(), ChordLabel { chord }));
            }
            for incident in t.incidents {
                self.incidents
                    .remove(&(w.clone(), IncidentLabel { incident }));
            }
            for reason in t.reasons {
                self.blocked.remove(&(w.clone(), ReasonLabel { reason }));
            }
        }
        drop(tracked);
        self.windows.remove(w);
        self.proposals.remove(w);
        self.applied.remove(w);
        self.apply_failed.remove(w);
        self.lines.remove(w);
        self.ingest_lag.remove(w);
        self.checkpoint_failed.remove(w);
    }

    /// The Prometheus text exposition (0.0.4) of every series; serve it as [`CONTENT_TYPE`].
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail, and every label value here is a String or a number.
        let encoded = prometheus_text::encode(&mut out, &self.registry);
        debug_assert!(encoded.is_ok());
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn w(name: &str) -> WorkloadLabels {
        WorkloadLabels {
            kind: "Deployment".into(),
            namespace: "ml".into(),
            name: name.into(),
        }
    }

    /// The sample lines (no comments) that mention `needle`.
    fn samples<'a>(text: &'a str, needle: &str) -> Vec<&'a str> {
        text.lines()
            .filter(|l| !l.starts_with('#') && l.contains(needle))
            .collect()
    }

    fn exercise_all(m: &ControllerMetrics, w: &WorkloadLabels) {
        m.window_evaluated(w, Duration::from_micros(300));
        m.set_active_chord(w, "steady");
        m.proposals(w, 2);
        m.incident(w, "straggler");
        m.applied(w);
        m.apply_blocked(w, "kill_switch");
        m.apply_failed(w);
        m.lines_read(w, 120);
        m.ingest_lag(w, Duration::from_millis(1500));
        m.decision_latency(Duration::from_millis(40));
        m.sessions(1, 0);
        m.shard_leader(0, true);
        m.checkpoint_failed(w);
    }

    #[test]
    fn every_registered_metric_is_encoded_under_its_listed_name() {
        let m = ControllerMetrics::new();
        exercise_all(&m, &w("trainer"));
        let text = m.encode();
        let mut typed: Vec<&str> = text
            .lines()
            .filter_map(|l| l.strip_prefix("# TYPE "))
            .filter_map(|l| l.split(' ').next())
            .collect();
        typed.sort_unstable();
        let mut listed: Vec<&str> = m.metric_names().iter().map(String::as_str).collect();
        listed.sort_unstable();
        assert_eq!(typed, listed, "{text}");
        for name in &listed {
            assert!(name.starts_with("modekeeper_"), "{name}");
            assert!(!name.contains("_total_total"), "{name}");
        }
        assert!(text.contains(
            r#"modekeeper_windows_evaluated_total{kind="Deployment",namespace="ml",name="trainer"} 1"#
        ));
        assert!(text.contains(
            r#"modekeeper_apply_blocked_total{kind="Deployment",namespace="ml",name="trainer",reason="kill_switch"} 1"#
        ));
        assert!(text.contains(
            r#"modekeeper_incidents_total{kind="Deployment",namespace="ml",name="trainer",incident="straggler"} 1"#
        ));
        assert!(text.contains(
            r#"modekeeper_ingest_lag_seconds{kind="Deployment",namespace="ml",name="trainer"} 1.5"#
        ));
        assert!(text.contains(r#"modekeeper_decision_latency_seconds_bucket{le="0.05"} 1"#));
        assert!(text.contains(r#"modekeeper_decision_latency_seconds_bucket{le="0.025"} 0"#));
        assert!(text.contains(r#"modekeeper_sessions{state="running"} 1"#));
        assert!(text.contains(r#"modekeeper_shard_leader{shard="0"} 1"#));
        assert!(text.contains(
            r#"modekeeper_lines_read_total{kind="Deployment",namespace="ml",name="trainer"} 120"#
        ));
    }

    #[test]
    fn a_stopped_workloads_series_all_go_and_others_stay() {
        let m = ControllerMetrics::new();
        let (a, b) = (w("a"), w("b"));
        exercise_all(&m, &a);
        exercise_all(&m, &b);
        m.set_active_chord(&a, "burst");
        m.incident(&a, "loss_spike");
        m.apply_blocked(&a, "license_missing");
        m.remove_workload(&a);
        let text = m.encode();
        assert!(
            samples(&text, r#"name="a""#).is_empty(),
            "series of the stopped workload remain:\n{text}"
        );
        // b keeps one series in each of the 10 per-workload families.
        assert_eq!(samples(&text, r#"name="b""#).len(), 10, "{text}");
        // Fleet-wide series are not the workload's to remove.
        assert!(text.contains("modekeeper_decision_latency_seconds_count 2"));
        assert!(text.contains("modekeeper_window_evaluation_seconds_count 2"));
        // Removing twice, or a workload never seen, is harmless.
        m.remove_workload(&a);
        m.remove_workload(&w("never"));
        assert_eq!(m.encode(), text);
    }

    #[test]
    fn a_chord_switch_leaves_one_active_chord_series() {
        let m = ControllerMetrics::new();
        let a = w("a");
        m.set_active_chord(&a, "steady");
        m.set_active_chord(&a, "steady");
        m.set_active_chord(&a, "burst");
        let text = m.encode();
        let chords = samples(&text, "modekeeper_active_chord{");
        assert_eq!(
            chords,
            [
                r#"modekeeper_active_chord{kind="Deployment",namespace="ml",name="a",chord="burst"} 1"#
            ],
            "{text}"
        );
        m.set_active_chord(&a, "steady");
        let text = m.encode();
        assert_eq!(
            samples(&text, "modekeeper_active_chord{").len(),
            1,
            "{text}"
        );
        assert!(text.contains(r#"chord="steady"} 1"#));
    }

    #[test]
    fn distinct_codes_per_workload_are_bounded_and_still_removed() {
        let m = ControllerMetrics::new();
        let a = w("a");
        for i in 0..100 {
            m.incident(&a, &format!("kind-{i}"));
            m.apply_blocked(&a, &format!("reason-{i}"));
        }
        m.incident(&a, "kind-0");
        let text = m.encode();
        let incidents = samples(&text, "modekeeper_incidents_total{");
        let reasons = samples(&text, "modekeeper_apply_blocked_total{");
        assert_eq!(incidents.len(), MAX_CODES_PER_WORKLOAD + 1, "{text}");
        assert_eq!(reasons.len(), MAX_CODES_PER_WORKLOAD + 1, "{text}");
        assert!(text.contains(r#"incident="other"} 68"#), "{text}");
        assert!(text.contains(r#"incident="kind-0"} 2"#), "{text}");
        assert!(text.contains(r#"reason="other"} 68"#), "{text}");
        m.remove_workload(&a);
        assert!(samples(&m.encode(), r#"name="a""#).is_empty());
    }

    #[test]
    fn label_values_from_the_cluster_are_escaped() {
        let m = ControllerMetrics::new();
        let evil = WorkloadLabels {
            kind: "Deployment".into(),
            namespace: "ml".into(),
            name: "x\"} 1\nmodekeeper_fake 2\\".into(),
        };
        m.applied(&evil);
        let text = m.encode();
        assert!(
            !text.lines().any(|l| l.starts_with("modekeeper_fake")),
            "{text}"
        );
        assert!(
            text.contains(r#"name="x\"} 1\nmodekeeper_fake 2\\"} 1"#),
            "{text}"
        );
    }

    #[test]
    fn sessions_and_leadership_are_set_not_added() {
        let m = ControllerMetrics::new();
        m.sessions(5, 3);
        m.sessions(2, 0);
        m.shard_leader(1, true);
        m.shard_leader(1, false);
        let text = m.encode();
        assert!(
            text.contains(r#"modekeeper_sessions{state="running"} 2"#),
            "{text}"
        );
        assert!(
            text.contains(r#"modekeeper_sessions{state="waiting"} 0"#),
            "{text}"
        );
        assert!(
            text.contains(r#"modekeeper_shard_leader{shard="1"} 0"#),
            "{text}"
        );
    }

    #[test]
    fn is_send_and_sync() {
        fn check<T: Send + Sync>() {}
        check::<ControllerMetrics>();
    }
}
