//! The closed loop of `closed-loop run`, as pure logic: per window, the policies' merged decision →
//! the envelope (passport limits, cooldowns, the global-batch invariant) → the knob values the next
//! window starts from, with one decision-trace line per window; at the end, the accepted end state
//! (what the plan carries), the chord timeline and the report's bookkeeping.
//!
//! Deterministic: no clock (cooldowns run on the windows' telemetry time), no I/O, no randomness, so a
//! replay of the same trace with the same policy digests and passport gives the same bytes. The loop
//! assumes every accepted change takes effect from the next window on (that is what a plan applied
//! between windows would do); it never talks to a cluster and never evaluates a policy itself — the
//! caller hands in each window's [`WindowDecision`] (see [`ClosedLoop::evaluate`] for the usual way).

pub mod effect;
mod knobs;
pub mod live;
mod report;
pub mod roi;
mod timeline;
mod trace;

#[cfg(test)]
mod effect_eval;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::envelope::{self, Accepted, EnvelopeState, EvalPoint, Limit};
use crate::passport::{ChordId, Passport, serialize_knob_value};
use crate::policy::{
    FailureKind, Knobs, Limits, NORMAL_HOLD, PolicyRef, PolicySet, WindowDecision,
};
use crate::signals::WindowFeatures;
use effect::{ChangeEffect, EffectConfig, EffectKnob, EffectTracker, WindowKpi};

pub use knobs::{KnobOrigin, knobs_text, parse_knob_flags, policy_limits, starting_knobs};
pub use report::{
    BUNDLE_FILE, BUNDLE_SCHEMA, BundleArtifact, BundlePassport, BundlePolicy, ClosedLoopReport,
    EngineInfo, FileCheck, PassportInfo, PolicyBundle, REPORT_NAME, REPORT_SCHEMA, ReplayCheck,
    ReplayInputs, ReportPolicy, RunConfig, RunSpan, SUMMARY_FILE, SourceInfo, TargetInfo,
    TraceInfo, WASMTIME_VERSION, summary_markdown,
};
pub use timeline::{ChordSegment, ChordTimeline, MAX_SEGMENTS, WindowMark};
pub use trace::{
    PassportRef, TRACE_FILE, TRACE_SCHEMA, TraceBlocked, TraceEvent, TraceProposal, TraceWindow,
    trace_features, trace_window,
};

/// Accepted changes, blocked proposals and policy failures listed in a report, each; the decision
/// trace has all of them.
pub const MAX_LISTED: usize = 1000;

/// Reason code of a COMM-CONGESTION proposal in a window without communication telemetry, when the
/// passport's `gates.require_comm_telemetry` is set.
pub const REQUIRE_COMM_TELEMETRY: &str = "require_comm_telemetry";

/// Where in the run something happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct WindowRef {
    pub index: u64,
    pub first_step: u64,
    pub last_step: u64,
    pub end_ms: Option<i64>,
}

/// A change the envelope accepted, as the report lists it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProposedChange {
    pub knob: String,
    #[serde(serialize_with = "serialize_knob_value")]
    pub from: f64,
    #[serde(serialize_with = "serialize_knob_value")]
    pub to: f64,
    pub reason: String,
    pub chord: String,
    pub window: WindowRef,
    /// Which limit shortened the move, when one did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limited_by: Option<Limit>,
    /// What the policy asked for, when the move was shortened.
    #[serde(
        skip_serializing_if = "Option::is_none",
        serialize_with = "serialize_opt_knob"
    )]
    pub requested: Option<f64>,
}

/// Who refused a proposal: the policy host (the policy's own limits, or another policy owning the
/// knob for the window) or the envelope (the passport).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BlockStage {
    PolicyHost,
    Envelope,
}

/// A proposal that did not pass.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BlockedChange {
    pub knob: String,
    /// Reason code (the envelope's codes, docs/passports.md, plus [`REQUIRE_COMM_TELEMETRY`]).
    pub reason: String,
    pub detail: String,
    pub chord: String,
    #[serde(serialize_with = "serialize_opt_knob")]
    pub requested: Option<f64>,
    pub stage: BlockStage,
    pub window: WindowRef,
}

/// A policy that produced no usable decision for a window (it proposed nothing).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PolicyFailureRecord {
    pub policy: String,
    pub kind: FailureKind,
    pub message: String,
    pub window: WindowRef,
}

/// A knob's net change over the run.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct KnobChange {
    pub knob: String,
    #[serde(serialize_with = "serialize_knob_value")]
    pub from: f64,
    #[serde(serialize_with = "serialize_knob_value")]
    pub to: f64,
    /// The chord of the last accepted change of this knob.
    pub chord: String,
}

fn serialize_opt_knob<S: serde::Serializer>(v: &Option<f64>, s: S) -> Result<S::Ok, S::Error> {
    match v {
        Some(x) if x.is_finite() => serialize_knob_value(x, s),
        _ => s.serialize_none(),
    }
}

/// How the loop's own rollback proposals begin (a change that hurt, undone).
pub const ROLLBACK_PREFIX: &str = "rollback: ";

/// Whether a decision's proposals are the loop's rollback of a change that hurt.
pub fn is_rollback(proposals: &[TraceProposal]) -> bool {
    proposals
        .iter()
        .any(|p| p.reason.starts_with(ROLLBACK_PREFIX))
}

/// Something no knob of the passport addresses, for a human to act on (docs/closed-loop.md).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Alert {
    /// `loss_divergence` (a NaN/Inf loss) or `loss_rising` (the loss-drift symptom).
    pub kind: String,
    pub first_step: u64,
    pub last_step: u64,
    pub windows: u64,
    pub text: String,
}

impl Alert {
    /// The one line the terminal, `summary.md` and `watch` print.
    pub fn line(&self) -> String {
        format!("NEEDS A HUMAN: {}", self.text)
    }
}

/// Host-side judgement of what no chord can fix: a divergence or a rising loss. Descriptive, like
/// `observe`'s symptoms; it never changes a decision.
fn alerts_of(f: &WindowFeatures) -> Vec<(&'static str, String)> {
    let mut out = Vec::new();
    if f.loss_non_finite > 0 {
        let at = f.loss_non_finite_step.unwrap_or(f.window.first_step);
        out.push((
            "loss_divergence",
            format!(
                "LOSS DIVERGED at step {at} (NaN/Inf loss): stop the run or roll back to a checkpoint; no knob of the passport addresses it"
            ),
        ));
    }
    let t = crate::signals::SymptomThresholds::default();
    if crate::signals::symptoms_of(f, &t)
        .iter()
        .any(|(s, _)| *s == crate::signals::Symptom::LossDrift)
    {
        out.push((
            "loss_rising",
            format!(
                "loss rising since step {} ({:.2}x its baseline): no knob of the passport addresses it (often the learning rate or the data)",
                f.window.first_step,
                f.loss_ratio.unwrap_or(0.0)
            ),
        ));
    }
    out
}

/// Everything a finished loop hands to the report and the plan.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LoopOutcome {
    pub windows: u64,
    pub knobs_before: BTreeMap<String, f64>,
    /// After every accepted change, in order.
    pub knobs_after: BTreeMap<String, f64>,
    /// Knobs whose value at the end differs from the start: what the plan carries.
    pub changes: Vec<KnobChange>,
    pub proposed: Vec<ProposedChange>,
    pub proposed_total: u64,
    pub blocked: Vec<BlockedChange>,
    pub blocked_total: u64,
    pub blocked_by_reason: BTreeMap<String, u64>,
    pub policy_failures: Vec<PolicyFailureRecord>,
    pub policy_failures_total: u64,
    pub timeline: ChordTimeline,
    /// The envelope's state at the end (cooldowns), for a run that continues from here.
    pub envelope_state: EnvelopeState,
    /// What needs a human (a diverged or rising loss), one entry per episode.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub alerts: Vec<Alert>,
    /// The verdict on every change (docs/closed-loop.md, effect check), the last one judged on
    /// whatever evidence the end of the telemetry left.
    pub effects: Vec<ChangeEffect>,
    pub effects_total: u64,
}

impl LoopOutcome {
    /// The net changes as envelope verdicts, for [`crate::plan::build_plan`].
    pub fn changes_as_accepted(&self) -> Vec<Accepted> {
        self.changes
            .iter()
            .map(|c| Accepted {
                knob: c.knob.clone(),
                from: c.from,
                to: c.to,
                reason: "net change over the run".into(),
                chord: c.chord.clone(),
                limited_by: None,
                requested: None,
            })
            .collect()
    }
}

/// The knobs of `after` whose value differs from `before` (knobs `before` lacks are not changes):
/// `(knob, from, to)`, in knob order. What every plan of a loop carries.
pub fn net_change<'a>(
    before: &'a BTreeMap<String, f64>,
    after: &'a BTreeMap<String, f64>,
) -> impl Iterator<Item = (&'a String, f64, f64)> + 'a {
    after.iter().filter_map(|(k, to)| {
        let from = *before.get(k)?;
        (from != *to).then_some((k, from, *to))
    })
}

/// A [`ClosedLoop`] without its passport: plain data, JSON in `closed-loop watch`'s state file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LoopState {
    pub knobs_before: BTreeMap<String, f64>,
    pub knobs: BTreeMap<String, f64>,
    pub envelope: EnvelopeState,
    pub last_at_ms: Option<i64>,
    pub last_chord_of_knob: BTreeMap<String, String>,
    pub windows: u64,
    pub timeline: ChordTimeline,
    pub proposed: Vec<ProposedChange>,
    pub proposed_total: u64,
    pub blocked: Vec<BlockedChange>,
    pub blocked_total: u64,
    pub blocked_by_reason: BTreeMap<String, u64>,
    pub failures: Vec<PolicyFailureRecord>,
    pub failures_total: u64,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub alerts: Vec<Alert>,
    /// The effect check's evidence so far (absent in a state saved before it existed).
    #[serde(default)]
    pub effect: EffectTracker,
    #[serde(default)]
    pub effects: Vec<ChangeEffect>,
    #[serde(default)]
    pub effects_total: u64,
}

/// The loop's state between windows.
#[derive(Debug, Clone)]
pub struct ClosedLoop {
    passport: Passport,
    passport_ref: PassportRef,
    effect_cfg: EffectConfig,
    st: LoopState,
    /// The caller applies the decisions: a change is judged only once its apply is confirmed
    /// ([`ClosedLoop::set_applies`]).
    applies: bool,
}

impl ClosedLoop {
    /// A loop under `passport`, starting from `knobs` (see [`starting_knobs`]).
    pub fn new(passport: Passport, knobs: BTreeMap<String, f64>) -> ClosedLoop {
        let passport_ref = PassportRef {
            name: passport.name.clone(),
            version: passport.version.clone(),
        };
        let effect_cfg = EffectConfig::of(&passport);
        ClosedLoop {
            passport,
            passport_ref,
            effect_cfg,
            st: LoopState {
                knobs_before: knobs.clone(),
                knobs,
                envelope: EnvelopeState::default(),
                last_at_ms: None,
                last_chord_of_knob: BTreeMap::new(),
                windows: 0,
                timeline: ChordTimeline::default(),
                proposed: Vec::new(),
                proposed_total: 0,
                blocked: Vec::new(),
                blocked_total: 0,
                blocked_by_reason: BTreeMap::new(),
                failures: Vec::new(),
                failures_total: 0,
                alerts: Vec::new(),
                effect: EffectTracker::default(),
                effects: Vec::new(),
                effects_total: 0,
            },
            applies: false,
        }
    }

    /// Whether the caller applies the loop's decisions to a cluster. A loop that only plans
    /// judges every accepted change as if applied at the end of its window; one that applies
    /// judges a change only once the caller confirms its apply ([`ClosedLoop::change_applied`]):
    /// a decision whose apply was blocked or failed changed nothing, so it gets no verdict.
    pub fn set_applies(&mut self, applies: bool) {
        self.applies = applies;
    }

    /// The apply of the decision at `window` is being made ([`ClosedLoop::set_applies`]).
    pub fn apply_requested(&mut self, window: u64) {
        self.st.effect.apply_requested(window);
    }

    /// The apply asked for was not made after all (the cluster was not touched).
    pub fn apply_withdrawn(&mut self) {
        self.st.effect.apply_withdrawn();
    }

    /// The apply of the decision at `window` changed the cluster by `knobs` (its net moves):
    /// from now on that change is judged.
    pub fn change_applied(&mut self, window: u64, knobs: &[EffectKnob]) {
        self.st.effect.applied(&self.effect_cfg, window, knobs);
    }

    /// The apply in flight did not change the cluster, or may not have: never judged.
    pub fn change_not_applied(&mut self) {
        self.st.effect.not_applied();
    }

    /// Everything but the passport, for a checkpoint (`closed-loop watch`'s state file).
    pub fn save(&self) -> LoopState {
        self.st.clone()
    }

    /// The loop's state, borrowed (what [`ClosedLoop::save`] copies): a session reads its start
    /// knobs on every apply without copying its lists.
    pub fn state(&self) -> &LoopState {
        &self.st
    }

    /// The loop as it was when `state` was saved, under the same passport.
    pub fn resume(passport: Passport, state: LoopState) -> ClosedLoop {
        let mut lp = ClosedLoop::new(passport, BTreeMap::new());
        lp.st = state;
        lp
    }

    /// Windows evaluated so far.
    pub fn windows(&self) -> u64 {
        self.st.windows
    }

    /// Cooldowns and last changes per knob.
    pub fn envelope(&self) -> &EnvelopeState {
        &self.st.envelope
    }

    pub fn passport(&self) -> &Passport {
        &self.passport
    }

    /// The knob values the next window's policies see.
    pub fn knobs(&self) -> &BTreeMap<String, f64> {
        &self.st.knobs
    }

    /// The passport's limits for the current values, as the policies see them.
    pub fn limits(&self) -> Limits {
        policy_limits(&self.passport, &self.st.knobs)
    }

    /// Evaluates `set` on one window with the current knobs and limits, then [`ClosedLoop::step`]s.
    pub fn evaluate(&mut self, f: &WindowFeatures, set: &mut PolicySet) -> TraceEvent {
        let d = set.evaluate(f, &Knobs(self.st.knobs.clone()), &self.limits());
        self.step(f, &d)
    }

    /// Applies one window's merged decision: host-level refusals are recorded, the proposals go
    /// through the envelope, accepted values become the current knobs. Returns the trace line.
    pub fn step(&mut self, f: &WindowFeatures, d: &WindowDecision) -> TraceEvent {
        let w = &f.window;
        let wref = WindowRef {
            index: w.index,
            first_step: w.first_step,
            last_step: w.last_step,
            end_ms: w.end_ms,
        };
        self.st.windows = self.st.windows.saturating_add(1);
        self.note_alerts(f);
        if let Some(t) = w.end_ms {
            self.st.last_at_ms = Some(self.st.last_at_ms.map_or(t, |p| p.max(t)));
        }
        // Without telemetry time a cooldown can never be seen to elapse: the first change of a knob
        // then starts a cooldown that lasts the whole run (safe, and still deterministic).
        let at = EvalPoint {
            at_ms: self.st.last_at_ms.unwrap_or(0),
            window: w.index,
        };

        let mut blocked: Vec<BlockedChange> = Vec::new();
        self.host_refusals(d, wref, &mut blocked);
        for dec in &d.decisions {
            if let Some(fail) = &dec.failure {
                self.st.failures_total = self.st.failures_total.saturating_add(1);
                if self.st.failures.len() < MAX_LISTED {
                    self.st.failures.push(PolicyFailureRecord {
                        policy: dec.policy.name.clone(),
                        kind: fail.kind,
                        message: fail.message.clone(),
                        window: wref,
                    });
                }
            }
        }

        // The passport's comm-telemetry gate, which the envelope does not know about (it sees no
        // features): COMM-CONGESTION may act only on windows that carry comm_ms.
        let mut proposals: Vec<envelope::Proposal> = Vec::new();
        for p in &d.proposals {
            if self.passport.gates.require_comm_telemetry
                && p.chord == ChordId::CommCongestion.as_str()
                && f.comm_share.is_none()
            {
                blocked.push(BlockedChange {
                    knob: p.knob.clone(),
                    reason: REQUIRE_COMM_TELEMETRY.into(),
                    detail: format!(
                        "passport {} requires communication telemetry (comm_ms) for COMM-CONGESTION; this window has none",
                        self.passport.name
                    ),
                    chord: p.chord.clone(),
                    requested: Some(p.to),
                    stage: BlockStage::Envelope,
                    window: wref,
                });
                continue;
            }
            proposals.push(envelope::Proposal {
                chord: p.chord.clone(),
                knob: p.knob.clone(),
                to: p.to,
                reason: p.reason.clone(),
            });
        }

        // The verdicts this window completes come before its decision: a `hurt` change holds its
        // knobs (effect.hold_s), and with gates.auto_rollback its inverse is this window's proposal.
        let kpi = WindowKpi::of(f);
        // Verdicts reached since the last window (an applied change cut one short): held, never
        // rolled back (the knob has moved on), told with this window.
        let carried = self.st.effect.take_judged(&self.effect_cfg);
        self.hold_hurt(&carried, at);
        let mut effects = self.st.effect.observe_window(&self.effect_cfg, kpi);
        self.hold_hurt(&effects, at);
        let rollbacks = self.auto_rollbacks(&effects);

        let outcome = envelope::enforce_with_rollbacks(
            &self.passport,
            &self.st.knobs,
            &self.st.envelope,
            at,
            &rollbacks,
            &proposals,
        );
        self.st.envelope = outcome.state;
        for b in outcome.blocked {
            blocked.push(BlockedChange {
                knob: b.knob,
                reason: b.reason.as_str().to_string(),
                detail: b.detail,
                chord: b.chord,
                requested: b.requested,
                stage: BlockStage::Envelope,
                window: wref,
            });
        }
        let mut trace_props = Vec::with_capacity(outcome.accepted.len());
        for a in outcome.accepted {
            self.st.knobs.insert(a.knob.clone(), a.to);
            self.st
                .last_chord_of_knob
                .insert(a.knob.clone(), a.chord.clone());
            trace_props.push(TraceProposal {
                knob: a.knob.clone(),
                from: a.from,
                to: a.to,
                reason: a.reason.clone(),
            });
            self.st.proposed_total = self.st.proposed_total.saturating_add(1);
            if self.st.proposed.len() < MAX_LISTED {
                self.st.proposed.push(ProposedChange {
                    knob: a.knob,
                    from: a.from,
                    to: a.to,
                    reason: a.reason,
                    chord: a.chord,
                    window: wref,
                    limited_by: a.limited_by,
                    requested: a.requested,
                });
            }
        }

        let moved: Vec<EffectKnob> = trace_props
            .iter()
            .map(|p| EffectKnob {
                knob: p.knob.clone(),
                from: p.from,
                to: p.to,
            })
            .collect();
        let interrupted = if self.applies {
            // Not a change of the cluster until its apply is confirmed.
            self.st
                .effect
                .note_decided(w.index, w.last_step, !moved.is_empty());
            Vec::new()
        } else {
            self.st
                .effect
                .note_changes(&self.effect_cfg, w.index, w.last_step, &moved)
        };
        // A hurt change cut short by a newer one: the knob has moved on, so no rollback, but the
        // hurt direction is still held.
        self.hold_hurt(&interrupted, at);
        effects.extend(interrupted);
        let effects = if carried.is_empty() {
            effects
        } else {
            carried.into_iter().chain(effects).collect()
        };
        self.record_effects(&effects);

        let trace_blocked = blocked
            .iter()
            .map(|b| TraceBlocked {
                knob: b.knob.clone(),
                reason: b.reason.clone(),
            })
            .collect();
        for b in blocked {
            self.st.blocked_total = self.st.blocked_total.saturating_add(1);
            let by_reason = self
                .st
                .blocked_by_reason
                .entry(b.reason.clone())
                .or_default();
            *by_reason = by_reason.saturating_add(1);
            if self.st.blocked.len() < MAX_LISTED {
                self.st.blocked.push(b);
            }
        }

        self.st.timeline.push(
            WindowMark {
                index: w.index,
                first_step: w.first_step,
                last_step: w.last_step,
                start_ms: w.start_ms,
                end_ms: w.end_ms,
            },
            &d.chord,
            &d.active_chords,
        );

        TraceEvent {
            schema_version: TRACE_SCHEMA,
            window: trace_window(f),
            features: trace_features(f),
            chord: d.chord.clone(),
            active_chords: d.active_chords.clone(),
            proposals: trace_props,
            blocked: trace_blocked,
            policy: primary_policy(d),
            passport: self.passport_ref.clone(),
            effects,
        }
    }

    /// Holds the knobs of every change in `effects` that proposes a rollback (effect.hold_s).
    fn hold_hurt(&mut self, effects: &[ChangeEffect], at: EvalPoint) {
        let hold_s = self.passport.effect.unwrap_or_default().hold_s;
        for r in effects.iter().flat_map(|e| &e.rollback) {
            // The hurt change went r.to → r.from.
            self.st.envelope.hold(&r.knob, r.to, r.from, at, hold_s);
        }
    }

    /// The rollback moves the loop makes itself (gates.auto_rollback): only for knobs still at the
    /// value the hurt change set.
    fn auto_rollbacks(&self, effects: &[ChangeEffect]) -> Vec<envelope::Proposal> {
        let mut out = Vec::new();
        if !self.passport.gates.auto_rollback {
            return out;
        }
        for e in effects {
            for r in &e.rollback {
                if self.st.knobs.get(&r.knob) == Some(&r.from) {
                    out.push(envelope::Proposal {
                        chord: self
                            .st
                            .last_chord_of_knob
                            .get(&r.knob)
                            .cloned()
                            .unwrap_or_default(),
                        knob: r.knob.clone(),
                        to: r.to,
                        reason: format!("{ROLLBACK_PREFIX}{}", e.reason),
                    });
                }
            }
        }
        out
    }

    fn record_effects(&mut self, effects: &[ChangeEffect]) {
        for e in effects {
            self.st.effects_total = self.st.effects_total.saturating_add(1);
            if self.st.effects.len() < MAX_LISTED {
                self.st.effects.push(e.clone());
            }
        }
    }

    /// The verdicts on changes so far (the first [`MAX_LISTED`]).
    pub fn effects(&self) -> &[ChangeEffect] {
        &self.st.effects
    }

    /// How changes are judged.
    pub fn effect_config(&self) -> &EffectConfig {
        &self.effect_cfg
    }

    /// What the policy host refused before the envelope: proposals outside the limits the policy was
    /// shown, and proposals for a knob another policy (earlier in evaluation order) already claimed.
    fn host_refusals(&self, d: &WindowDecision, wref: WindowRef, out: &mut Vec<BlockedChange>) {
        let limits = self.limits();
        let mut claimed: BTreeSet<&str> = BTreeSet::new();
        for dec in &d.decisions {
            for b in &dec.blocked {
                out.push(BlockedChange {
                    knob: b.knob.clone(),
                    reason: host_block_code(b.to, self.st.knobs.get(&b.knob), limits.get(&b.knob))
                        .into(),
                    detail: format!("{}: {}", dec.policy.name, b.reason),
                    chord: dec.chord.clone(),
                    requested: b.to.is_finite().then_some(b.to),
                    stage: BlockStage::PolicyHost,
                    window: wref,
                });
            }
            let mut mine: Vec<&str> = Vec::new();
            for p in &dec.proposals {
                if claimed.contains(p.knob.as_str()) {
                    out.push(BlockedChange {
                        knob: p.knob.clone(),
                        reason: envelope::BlockReason::DuplicateKnob.as_str().into(),
                        detail: format!(
                            "{} proposed {} → {}, but an earlier policy already proposed this knob for the window",
                            dec.policy.name, p.from, p.to
                        ),
                        chord: p.chord.clone(),
                        requested: Some(p.to),
                        stage: BlockStage::PolicyHost,
                        window: wref,
                    });
                } else {
                    mine.push(&p.knob);
                }
            }
            claimed.extend(mine);
        }
    }

    /// Extends the open alert of a kind (up to two quiet windows apart) or opens a new one.
    fn note_alerts(&mut self, f: &WindowFeatures) {
        for (kind, text) in alerts_of(f) {
            let w = &f.window;
            // Quiet windows in between (up to two) do not end an alert.
            let reach = 3 * (w.last_step + 1 - w.first_step);
            let open = self
                .st
                .alerts
                .iter()
                .rposition(|a| a.kind == kind)
                .filter(|i| w.first_step <= self.st.alerts[*i].last_step.saturating_add(reach));
            match open {
                Some(i) => {
                    let a = &mut self.st.alerts[i];
                    a.last_step = w.last_step;
                    a.windows += 1;
                }
                None if self.st.alerts.len() < MAX_LISTED => self.st.alerts.push(Alert {
                    kind: kind.into(),
                    first_step: w.first_step,
                    last_step: w.last_step,
                    windows: 1,
                    text,
                }),
                None => {}
            }
        }
    }

    /// Alerts so far (`watch` prints new ones as they open).
    pub fn alerts(&self) -> &[Alert] {
        &self.st.alerts
    }

    pub fn finish(mut self) -> LoopOutcome {
        let carried = self.st.effect.take_judged(&self.effect_cfg);
        self.record_effects(&carried);
        if let Some(last) = self.st.effect.finish(&self.effect_cfg) {
            self.record_effects(&[last]);
        }
        let changes = net_change(&self.st.knobs_before, &self.st.knobs)
            .map(|(k, from, to)| KnobChange {
                knob: k.clone(),
                from,
                to,
                chord: self
                    .st
                    .last_chord_of_knob
                    .get(k)
                    .cloned()
                    .unwrap_or_default(),
            })
            .collect();
        LoopOutcome {
            windows: self.st.windows,
            knobs_before: self.st.knobs_before,
            knobs_after: self.st.knobs,
            changes,
            proposed: self.st.proposed,
            proposed_total: self.st.proposed_total,
            blocked: self.st.blocked,
            blocked_total: self.st.blocked_total,
            blocked_by_reason: self.st.blocked_by_reason,
            alerts: self.st.alerts,
            policy_failures: self.st.failures,
            policy_failures_total: self.st.failures_total,
            timeline: self.st.timeline,
            envelope_state: self.st.envelope,
            effects: self.st.effects,
            effects_total: self.st.effects_total,
        }
    }
}

/// The reason code of a proposal the policy host refused, from the data (not the message text):
/// the same codes the envelope uses for the same conditions.
fn host_block_code(
    to: f64,
    current: Option<&f64>,
    limit: Option<&crate::policy::KnobLimit>,
) -> &'static str {
    use envelope::BlockReason::*;
    let code = match (current, limit) {
        _ if !to.is_finite() => NonFinite,
        (None, _) | (_, None) => KnobUnknown,
        (Some(_), Some(l)) if to > l.max => AboveMax,
        (Some(_), Some(l)) if to < l.min => BelowMin,
        (Some(from), Some(l)) if (to - from).abs() > l.max_delta => MaxDelta,
        // The host refuses in-range proposals only when the policy proposed the knob twice.
        _ => DuplicateKnob,
    };
    code.as_str()
}

/// The policy whose decision is primary: the first (in evaluation order) whose chord is not
/// NORMAL-HOLD, else the base policy (evaluated last).
fn primary_policy(d: &WindowDecision) -> PolicyRef {
    d.decisions
        .iter()
        .find(|x| x.chord != NORMAL_HOLD)
        .or_else(|| d.decisions.last())
        .map(|x| x.policy.clone())
        .unwrap_or_else(|| PolicyRef {
            name: String::new(),
            version: String::new(),
            digest: String::new(),
        })
}
