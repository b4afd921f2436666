//! One live loop: lines in, typed events out, the exactly-once apply protocol, checkpoints.

use std::collections::{BTreeMap, VecDeque};

use serde_json::Value;

use super::state::{ApplyMark, DecisionMark, Pipeline, STATE_SCHEMA, WatchState, WatchTotals};
use super::{ApplyOutcome, net_changes};
use crate::closed_loop::effect::{ChangeEffect, EffectKnob};
use crate::closed_loop::{Alert, ClosedLoop, LoopOutcome, TraceEvent, is_rollback};
use crate::envelope::Accepted;
use crate::passport::Passport;
use crate::pipeline::AdaptiveWindower;
use crate::plan::{canonical_json, sha256_prefixed};
use crate::policy::{Knobs, Limits, PolicySet, PolicyState, WindowDecision};
use crate::signals::{FeatureConfig, FeatureExtractor, WindowFeatures, WindowStats};
use crate::telemetry::{Format, Ingest, IngestOptions, IngestStats, MAX_LINE_BYTES};

/// What decides a window: the chord policies. [`PolicySet`] is the real one; a controller running
/// many sessions may share one set and swap each session's states in and out.
pub trait Policies {
    fn decide(&mut self, f: &WindowFeatures, knobs: &Knobs, limits: &Limits) -> WindowDecision;
    /// The states the policies carry into the next window (saved with a checkpoint).
    fn states(&self) -> Vec<PolicyState>;
    fn set_states(&mut self, states: Vec<PolicyState>);
}

impl Policies for PolicySet {
    fn decide(&mut self, f: &WindowFeatures, knobs: &Knobs, limits: &Limits) -> WindowDecision {
        self.evaluate(f, knobs, limits)
    }
    fn states(&self) -> Vec<PolicyState> {
        PolicySet::states(self)
    }
    fn set_states(&mut self, states: Vec<PolicyState>) {
        PolicySet::set_states(self, states)
    }
}

/// What a session decides under; its `config` is what a resumed state must match.
#[derive(Debug, Clone)]
pub struct SessionSetup {
    pub passport: Passport,
    /// The knobs a new session starts from (a resumed one has its own).
    pub knobs: BTreeMap<String, f64>,
    pub features: FeatureConfig,
    pub format: Format,
    pub ingest: IngestOptions,
    /// Source, format, windows, ingest options, passport, policy digests, target: JSON whose
    /// canonical sha256 is the state's fingerprint.
    pub config: Value,
}

impl SessionSetup {
    pub fn fingerprint(&self) -> String {
        sha256_prefixed(canonical_json(&self.config).as_bytes())
    }

    /// `None` when `state` was written under this setup (its fingerprint matches), else the
    /// top-level `config` keys on which it differs.
    pub fn differs_from(&self, state: &WatchState) -> Option<Vec<String>> {
        if state.fingerprint == self.fingerprint() {
            return None;
        }
        Some(
            self.config
                .as_object()
                .into_iter()
                .flatten()
                .filter(|(k, v)| state.config.get(k.as_str()) != Some(v))
                .map(|(k, _)| k.clone())
                .collect(),
        )
    }
}

/// Why a saved state cannot be resumed.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    /// The state was written under another setup: these `config` keys differ.
    #[error("the state was written with a different {}", .0.join(", "))]
    OtherSetup(Vec<String>),
    /// The state holds a knob value the passport would refuse.
    #[error("{0}")]
    BadKnobs(String),
    /// The ingest/window blob does not decode (message as `{e:#}`).
    #[error("{0}")]
    Pipeline(String),
    /// A carried line does not decode.
    #[error("{0}")]
    CarryLine(String),
    /// The latest decision does not match the loop's record of accepted changes.
    #[error("{0}")]
    BadDecision(String),
    #[error("an apply outcome was recorded with no apply in flight")]
    NoApplyInFlight,
}

/// What the session tells its caller, in order, as it goes.
#[derive(Debug)]
pub enum SessionEvent<'a> {
    /// A window opened an alert no knob fixes (a diverged or rising loss).
    Alert(&'a Alert),
    /// A window judged an earlier change (helped, hurt, neutral, inconclusive); a hurt one may
    /// carry the rollback it proposes. Every verdict is told, however long the session runs.
    Verdict(&'a ChangeEffect),
    /// A window was evaluated. The caller appends `line` to the decision trace (the session
    /// counts it as written: a checkpoint must follow the trace on disk).
    Window {
        index: u64,
        event: &'a TraceEvent,
        line: &'a str,
        /// The primary chord differs from the previous window's.
        chord_changed: bool,
    },
}

impl SessionEvent<'_> {
    /// Whether a window event carries proposals or blocked proposals (a decision).
    pub fn is_decision(&self) -> bool {
        matches!(self, SessionEvent::Window { event, .. }
            if !event.proposals.is_empty() || !event.blocked.is_empty())
    }
}

/// One apply the session asks for: the knobs of its latest decision, as changes from what the
/// cluster was last given.
#[derive(Debug, Clone, PartialEq)]
pub struct ApplyRequest {
    pub decision_window: u64,
    pub knobs: BTreeMap<String, f64>,
    pub changes: Vec<Accepted>,
    /// The decision is the loop's rollback of a change that hurt (told as such: `RolledBack`),
    /// also when it is applied after a restart.
    pub rollback: bool,
}

/// What the caller's apply reports back.
#[derive(Debug, Clone, PartialEq)]
pub struct ApplyRecord {
    pub outcome: ApplyOutcome,
    /// A write to the cluster was attempted.
    pub attempted: bool,
    /// Null when nothing was attempted.
    pub apply_ok: Option<bool>,
    pub verify_ok: Option<bool>,
}

/// The caller's side of the apply protocol: the session asks it to checkpoint and to apply, in
/// the order that makes an apply happen at most once (the controller implements it in-cluster).
pub trait ApplyHost {
    type Error;
    /// Persists [`Session::checkpoint`]. Whatever the trace lines went to must be durable first.
    fn checkpoint(&mut self, session: &Session) -> Result<(), Self::Error>;
    /// Applies `req` through the gates. An `Err` leaves the apply pending: on resume it becomes
    /// [`ApplyOutcome::Unknown`], never retried.
    fn apply(&mut self, session: &Session, req: &ApplyRequest) -> Result<ApplyRecord, Self::Error>;
}

/// One live loop. Owns no thread, file, terminal or global: the caller feeds it lines, handles
/// its events, persists its checkpoints and applies for it.
pub struct Session {
    setup_fingerprint: String,
    config: Value,
    pipe: Pipeline,
    lp: ClosedLoop,
    /// Lines pushed but not fed yet.
    carry: VecDeque<Vec<u8>>,
    /// Windows completed but not evaluated yet.
    done: Vec<WindowStats>,
    totals: WatchTotals,
    last_applied: Option<BTreeMap<String, f64>>,
    last_apply: Option<ApplyMark>,
    /// The knob moves of the apply in flight.
    in_flight: Option<Vec<EffectKnob>>,
    ended: bool,
    /// [`Session::finish_source`] was called; [`Session::advance`] closes the source.
    source_finished: bool,
    resumed: bool,
    trace_bytes: u64,
    trace_lines: u64,
    /// Windows evaluated by this session (not counting earlier runs).
    iterations: u64,
    /// Window index of the latest accepted change.
    latest_decision: Option<u64>,
    /// The latest decision is the loop's rollback of a change that hurt.
    latest_rollback: bool,
    last_event: Option<TraceEvent>,
    last_index: u64,
    last_chord: Option<String>,
}

impl Session {
    /// A session from the start of its source.
    pub fn new(setup: &SessionSetup) -> Session {
        Session {
            setup_fingerprint: setup.fingerprint(),
            config: setup.config.clone(),
            pipe: Pipeline {
                ingest: Ingest::new(setup.format, &setup.ingest),
                windower: AdaptiveWindower::new(setup.features),
                extractor: None,
            },
            lp: ClosedLoop::new(setup.passport.clone(), setup.knobs.clone()),
            carry: VecDeque::new(),
            done: Vec::new(),
            totals: WatchTotals::default(),
            last_applied: None,
            last_apply: None,
            in_flight: None,
            ended: false,
            source_finished: false,
            resumed: false,
            trace_bytes: 0,
            trace_lines: 0,
            iterations: 0,
            latest_decision: None,
            latest_rollback: false,
            last_event: None,
            last_index: 0,
            last_chord: None,
        }
    }

    /// The session `state` was checkpointed from, its policies' states restored into `policies`.
    /// Refused when `state` was written under another setup ([`SessionSetup::differs_from`]) or
    /// holds knobs the passport would refuse ([`WatchState::check_knobs`]). An apply left pending
    /// becomes [`ApplyOutcome::Unknown`]: never applied twice.
    pub fn resume(
        setup: &SessionSetup,
        state: WatchState,
        policies: &mut dyn Policies,
    ) -> Result<Session, SessionError> {
        if let Some(differs) = setup.differs_from(&state) {
            return Err(SessionError::OtherSetup(differs));
        }
        state
            .check_knobs(&setup.passport)
            .map_err(SessionError::BadKnobs)?;
        let latest = state.latest_decision().map_err(SessionError::BadDecision)?;
        let pipe = Pipeline::decode(&state.pipeline, setup.format, &setup.ingest)
            .map_err(|e| SessionError::Pipeline(format!("{e:#}")))?;
        let carry = super::state::decode_lines(&state.carry_lines)
            .map_err(|e| SessionError::CarryLine(format!("{e:#}")))?;
        policies.set_states(state.policy_states);
        let mut totals = state.totals;
        totals.restarts = totals.restarts.saturating_add(1);
        let mut last_apply = state.last_apply;
        if let Some(a) = &mut last_apply
            && a.outcome == ApplyOutcome::Pending
        {
            a.outcome = ApplyOutcome::Unknown;
        }
        let mut lp = ClosedLoop::resume(setup.passport.clone(), state.loop_state);
        // No apply is in flight in a new process: one left pending is never judged.
        lp.change_not_applied();
        Ok(Session {
            setup_fingerprint: setup.fingerprint(),
            config: setup.config.clone(),
            pipe,
            lp,
            carry: carry.into(),
            done: Vec::new(),
            totals,
            last_applied: state.last_applied,
            latest_decision: latest.map(|d| d.window),
            latest_rollback: latest.is_some_and(|d| d.rollback),
            last_apply,
            in_flight: None,
            ended: state.ended,
            source_finished: false,
            resumed: true,
            trace_bytes: state.trace_bytes,
            trace_lines: state.trace_lines,
            iterations: 0,
            last_event: None,
            last_index: 0,
            last_chord: None,
        })
    }

    /// Queues lines read from the source (fed by [`Session::advance`]).
    pub fn push_lines(&mut self, lines: impl IntoIterator<Item = Vec<u8>>) {
        self.carry.extend(lines);
    }

    /// Lines queued and not fed yet.
    pub fn pending_lines(&self) -> usize {
        self.carry.len()
    }

    /// The source ended: the next [`Session::advance`] feeds the lines still queued, then closes
    /// the reorder buffer and the last window and evaluates them. Until then nothing changes, so a
    /// checkpoint taken in between resumes (the resumed source ends again) without losing them.
    pub fn finish_source(&mut self) {
        self.source_finished = true;
    }

    /// Closes the reorder buffer and the last window, once every queued line was fed.
    fn close_source(&mut self) {
        let (ingest, windower, done) = (
            &mut self.pipe.ingest,
            &mut self.pipe.windower,
            &mut self.done,
        );
        ingest.finish(&mut |s| windower.push(s, &mut |_, w| done.push(w)));
        windower.finish(&mut |_, w| done.push(w));
        self.ended = true;
    }

    /// Evaluates the completed windows and feeds queued lines until the queue is empty or `stop`
    /// (asked with the windows evaluated by this session, after each batch of windows) says so.
    /// Returns whether `stop` stopped it. Events go to `on`, in order. An `Err` from `on` leaves
    /// the session mid-window (that window is decided and its line counted as written, the rest of
    /// the batch dropped): do not checkpoint it; resume from the last checkpoint instead.
    pub fn advance<E>(
        &mut self,
        policies: &mut dyn Policies,
        stop: &mut dyn FnMut(u64) -> bool,
        on: &mut dyn FnMut(SessionEvent<'_>) -> Result<(), E>,
    ) -> Result<bool, E> {
        loop {
            for w in std::mem::take(&mut self.done) {
                self.evaluate(&w, policies, on)?;
            }
            if stop(self.iterations) {
                return Ok(true);
            }
            let Some(line) = self.carry.pop_front() else {
                if self.source_finished && !self.ended {
                    self.close_source();
                    continue;
                }
                return Ok(false);
            };
            self.feed(&line);
        }
    }

    fn feed(&mut self, line: &[u8]) {
        if line.len() > MAX_LINE_BYTES {
            self.pipe.ingest.push_too_long(line.len() as u64);
            return;
        }
        let (windower, done) = (&mut self.pipe.windower, &mut self.done);
        self.pipe
            .ingest
            .push_line(line, &mut |s| windower.push(s, &mut |_, w| done.push(w)));
    }

    fn evaluate<E>(
        &mut self,
        w: &WindowStats,
        policies: &mut dyn Policies,
        on: &mut dyn FnMut(SessionEvent<'_>) -> Result<(), E>,
    ) -> Result<(), E> {
        // A window exists only once its lengths were chosen.
        let cfg = self
            .pipe
            .windower
            .config()
            .expect("windows come after the lengths are chosen");
        let f = self
            .pipe
            .extractor
            .get_or_insert_with(|| FeatureExtractor::new(cfg))
            .next(w);
        self.decide_window(&f, policies, on)
    }

    /// Decides one window whose features the caller computed (`closed-loop run` windows its file
    /// itself, adapting the window to the trace); [`Session::advance`] does this for the lines it
    /// is fed. Events go to `on`, in order.
    pub fn decide_window<E>(
        &mut self,
        f: &WindowFeatures,
        policies: &mut dyn Policies,
        on: &mut dyn FnMut(SessionEvent<'_>) -> Result<(), E>,
    ) -> Result<(), E> {
        let index = f.window.index;
        let alerts_before = self.lp.alerts().len();
        let d = policies.decide(f, &Knobs(self.lp.knobs().clone()), &self.lp.limits());
        let ev = self.lp.step(f, &d);
        for a in &self.lp.alerts()[alerts_before..] {
            on(SessionEvent::Alert(a))?;
        }
        // From the window's own event: the loop's list stops at MAX_LISTED, a long session does not.
        for e in &ev.effects {
            on(SessionEvent::Verdict(e))?;
        }
        let line = ev.to_line();
        self.trace_bytes += line.len() as u64;
        self.trace_lines += 1;
        self.iterations += 1;
        let chord_changed = self.last_chord.as_deref() != Some(ev.chord.as_str());
        if !ev.proposals.is_empty() {
            self.latest_decision = Some(index);
            self.latest_rollback = is_rollback(&ev.proposals);
        }
        on(SessionEvent::Window {
            index,
            event: &ev,
            line: &line,
            chord_changed,
        })?;
        self.last_index = index;
        self.last_chord = Some(ev.chord.clone());
        self.last_event = Some(ev);
        Ok(())
    }

    /// The apply the latest decision needs, if it has not had one: marks it pending (checkpoint
    /// before touching the cluster), then [`Session::record_apply`] its outcome.
    /// `None` while an apply is in flight: its outcome must be recorded against its own decision
    /// before a later one is marked (a controller may keep feeding lines during an apply).
    pub fn next_apply(&mut self) -> Option<ApplyRequest> {
        if self.in_flight.is_some() {
            return None;
        }
        let decision = self.latest_decision?;
        if self
            .last_apply
            .as_ref()
            .is_some_and(|a| a.decision_window >= decision)
        {
            return None;
        }
        let base = self
            .last_applied
            .clone()
            .unwrap_or_else(|| self.lp.state().knobs_before.clone());
        let chord = self
            .last_event
            .as_ref()
            .map(|e| e.chord.clone())
            .unwrap_or_default();
        let changes = net_changes(
            &base,
            self.lp.knobs(),
            |_| chord.clone(),
            &format!("watch decision at window {decision}"),
        );
        let knobs = self.lp.knobs().clone();
        self.last_apply = Some(ApplyMark {
            decision_window: decision,
            knobs: knobs.clone(),
            outcome: ApplyOutcome::Pending,
            rollback: self.latest_rollback,
        });
        self.lp.apply_requested(decision);
        self.in_flight = Some(
            changes
                .iter()
                .map(|c| EffectKnob {
                    knob: c.knob.clone(),
                    from: c.from,
                    to: c.to,
                })
                .collect(),
        );
        Some(ApplyRequest {
            decision_window: decision,
            knobs,
            changes,
            rollback: self.latest_rollback,
        })
    }

    /// Whether [`Session::next_apply`] would ask for an apply now (it does not mark anything):
    /// the latest decision has had none and no apply is in flight.
    pub fn apply_due(&self) -> bool {
        self.in_flight.is_none()
            && self.latest_decision.is_some_and(|d| {
                self.last_apply
                    .as_ref()
                    .is_none_or(|a| a.decision_window < d)
            })
    }

    /// The outcome of the apply [`Session::next_apply`] asked for. With
    /// [`Session::set_applies`], only an applied decision's change is judged afterwards.
    pub fn record_apply(&mut self, rec: ApplyRecord) -> Result<(), SessionError> {
        let moves = self.in_flight.take().ok_or(SessionError::NoApplyInFlight)?;
        let changes = moves.len() as u64;
        match (&rec.outcome, &self.last_apply) {
            (ApplyOutcome::Applied, Some(a)) => self.lp.change_applied(a.decision_window, &moves),
            _ => self.lp.change_not_applied(),
        }
        let t = &mut self.totals;
        match &rec.outcome {
            ApplyOutcome::Applied => {
                t.applied_total = t.applied_total.saturating_add(changes);
                self.last_applied = self.last_apply.as_ref().map(|a| a.knobs.clone());
            }
            ApplyOutcome::Blocked { .. } => {
                t.apply_blocked_total = t.apply_blocked_total.saturating_add(1)
            }
            ApplyOutcome::Failed { .. } => {
                t.apply_failed_total = t.apply_failed_total.saturating_add(1)
            }
            ApplyOutcome::Pending | ApplyOutcome::NoChanges | ApplyOutcome::Unknown => {}
        }
        if rec.attempted {
            t.apply_attempted_total = t.apply_attempted_total.saturating_add(1);
            if rec.apply_ok == Some(true) {
                t.apply_ok_total = t.apply_ok_total.saturating_add(1);
            }
        }
        if rec.verify_ok == Some(false) {
            t.verify_failed_total = t.verify_failed_total.saturating_add(1);
        }
        if let Some(a) = &mut self.last_apply {
            a.outcome = rec.outcome;
        }
        Ok(())
    }

    /// The whole protocol for the latest decision, if it needs an apply: mark pending, checkpoint,
    /// apply, record, checkpoint. Returns what was applied and how.
    pub fn apply_decided<H: ApplyHost>(
        &mut self,
        host: &mut H,
    ) -> Result<Option<(ApplyRequest, ApplyRecord)>, H::Error>
    where
        H::Error: From<SessionError>,
    {
        let before = self.last_apply.clone();
        let Some(req) = self.next_apply() else {
            return Ok(None);
        };
        if let Err(e) = host.checkpoint(self) {
            // The cluster was not touched: the decision stays to apply, as if never asked.
            self.last_apply = before;
            self.in_flight = None;
            self.lp.apply_withdrawn();
            return Err(e);
        }
        let rec = match host.apply(self, &req) {
            Ok(rec) => rec,
            Err(e) => {
                // What a resume would make of the pending mark: maybe applied, never retried.
                self.abandon_apply();
                return Err(e);
            }
        };
        self.record_apply(rec.clone())?;
        host.checkpoint(self)?;
        Ok(Some((req, rec)))
    }

    /// The apply in flight will report no outcome (it failed midway): it becomes
    /// [`ApplyOutcome::Unknown`], as a resume would make it, and is never retried; the next
    /// decision carries its knobs again.
    pub fn abandon_apply(&mut self) {
        if self.in_flight.take().is_some() {
            self.lp.change_not_applied();
            if let Some(a) = &mut self.last_apply {
                a.outcome = ApplyOutcome::Unknown;
            }
        }
    }

    /// Whether the caller applies this session's decisions to a cluster (`--apply`, the
    /// controller's apply setting); call it after [`Session::new`] or [`Session::resume`] and
    /// whenever it changes. Then a change is judged only once its apply is recorded as applied
    /// ([`ClosedLoop::set_applies`]); a session that only plans judges every change it accepts.
    pub fn set_applies(&mut self, applies: bool) {
        self.lp.set_applies(applies);
    }

    /// The state to persist, with the source's cursor, the policies' states and the time.
    pub fn checkpoint(
        &self,
        source_cursor: Value,
        policy_states: Vec<PolicyState>,
        updated_at: String,
    ) -> WatchState {
        WatchState {
            schema_version: STATE_SCHEMA.into(),
            fingerprint: self.setup_fingerprint.clone(),
            config: self.config.clone(),
            updated_at,
            source_cursor,
            carry_lines: super::state::encode_lines(self.carry.iter()),
            trace_bytes: self.trace_bytes,
            trace_lines: self.trace_lines,
            totals: self.totals(),
            loop_state: self.lp.save(),
            policy_states,
            last_applied: self.last_applied.clone(),
            last_apply: self.last_apply.clone(),
            latest_decision: self.latest_decision.map(|window| DecisionMark {
                window,
                rollback: self.latest_rollback,
            }),
            ended: self.ended,
            pipeline: self.pipe.encode(),
        }
    }

    /// The loop's end state and bookkeeping (what `closed-loop run`'s report and plan carry); the
    /// last change is judged on whatever evidence the telemetry left.
    pub fn finish(self) -> LoopOutcome {
        self.lp.finish()
    }

    /// The net change since the session first started, as a plan carries it.
    pub fn net_changes(&self) -> Vec<Accepted> {
        let st = self.lp.state();
        net_changes(
            &st.knobs_before,
            &st.knobs,
            |k| st.last_chord_of_knob.get(k).cloned().unwrap_or_default(),
            "net change over the watch",
        )
    }

    /// When the passport's global cooldown lets the next change through, in telemetry time.
    pub fn next_change_allowed_ms(&self) -> Option<i64> {
        let last = self.lp.envelope().last_change?;
        Some(last.at_ms + self.lp.passport().cooldown_s as i64 * 1000)
    }

    /// The loop (knobs, cooldowns, counters).
    pub fn closed_loop(&self) -> &ClosedLoop {
        &self.lp
    }
    /// Totals over every run of the session, this one's windows included.
    pub fn totals(&self) -> WatchTotals {
        let mut t = self.totals.clone();
        t.iterations_done = t.iterations_done.saturating_add(self.iterations);
        t
    }
    /// Totals over earlier runs (restarts counted), apply counters included.
    pub fn saved_totals(&self) -> &WatchTotals {
        &self.totals
    }
    pub fn iterations(&self) -> u64 {
        self.iterations
    }
    pub fn resumed(&self) -> bool {
        self.resumed
    }
    /// The source ended and its last window was evaluated.
    pub fn ended(&self) -> bool {
        self.ended
    }
    /// Bytes and lines of the decision trace the session has produced (a resumed session's
    /// trace is cut back to these before it continues).
    pub fn trace_len(&self) -> (u64, u64) {
        (self.trace_bytes, self.trace_lines)
    }
    pub fn last_event(&self) -> Option<&TraceEvent> {
        self.last_event.as_ref()
    }
    /// Index of the window last evaluated by this session.
    pub fn last_index(&self) -> u64 {
        self.last_index
    }
    pub fn last_chord(&self) -> Option<&str> {
        self.last_chord.as_deref()
    }
    pub fn last_applied(&self) -> Option<&BTreeMap<String, f64>> {
        self.last_applied.as_ref()
    }
    pub fn last_apply(&self) -> Option<&ApplyMark> {
        self.last_apply.as_ref()
    }
    pub fn ingest_stats(&self) -> &IngestStats {
        self.pipe.ingest.stats()
    }

    /// The highest step read so far (windows close later: this is the trainer's latest report).
    pub fn last_step_seen(&self) -> Option<u64> {
        self.pipe.ingest.last_step_seen()
    }
}
