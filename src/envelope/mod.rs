//! The envelope: the host-side check every policy proposal passes before it can become a plan item.
//! It applies the passport (allowed chords, known knobs, propose-only knobs, min/max, step limit,
//! cooldowns, hysteresis, the global-batch invariant) to a decision's proposals, given the current
//! knob values and the explicit envelope state, and says for every proposal what was accepted (and
//! how far) or why it was blocked.
//!
//! Pure and deterministic: no clock (the evaluation time comes in), no I/O, no randomness; the state
//! is plain serde data, so a run can be replayed byte for byte. It never consults a policy and never
//! moves a knob further than the proposal asked: a policy can only narrow what the envelope allows,
//! never widen it. Reason codes are documented in docs/passports.md.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::passport::{
    ChordId, GRAD_ACCUM, KEEP_GLOBAL_BATCH_STABLE, KnobLimits, MICROBATCH, Passport,
    format_knob_value, serialize_knob_value,
};

#[cfg(test)]
mod proptests;
#[cfg(test)]
mod tests;

/// One knob move a policy proposes, relative to the current knob values it was shown.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Proposal {
    /// The chord id that made the proposal (`DRIFT-RETUNE`, …).
    pub chord: String,
    pub knob: String,
    pub to: f64,
    pub reason: String,
}

/// When the decision is evaluated: telemetry time (end of the window) and the window's index.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct EvalPoint {
    pub at_ms: i64,
    pub window: u64,
}

/// What the envelope remembers between decisions. Explicit data: saved with a run, fed back in.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnvelopeState {
    /// The last time any knob change was accepted (the passport's global cooldown runs from here).
    pub last_change: Option<EvalPoint>,
    pub knobs: BTreeMap<String, KnobHistory>,
    /// Knobs rolled back for hurting, held from moving the same way again (absent in a state saved
    /// before holds existed).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub holds: BTreeMap<String, Hold>,
}

/// A knob whose change was judged `hurt`: until `until_ms` (telemetry time) no proposal may move it
/// in the direction of that change again (`up`: the hurt change raised it).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Hold {
    pub until_ms: i64,
    pub up: bool,
}

impl EnvelopeState {
    /// Holds `knob` against moves in the direction `from → to` (the hurt change) for `hold_s` from `at`.
    pub fn hold(&mut self, knob: &str, from: f64, to: f64, at: EvalPoint, hold_s: u64) {
        if hold_s == 0 || from == to {
            return;
        }
        let until_ms = at
            .at_ms
            .saturating_add((hold_s as i64).saturating_mul(1000));
        self.holds.insert(
            knob.to_string(),
            Hold {
                until_ms,
                up: to > from,
            },
        );
    }
}

/// The last accepted change of one knob.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KnobHistory {
    pub at: EvalPoint,
    #[serde(serialize_with = "serialize_knob_value")]
    pub from: f64,
    #[serde(serialize_with = "serialize_knob_value")]
    pub value: f64,
}

/// Which limit shortened an accepted move.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Limit {
    Min,
    Max,
    MaxDelta,
}

/// A proposal that passed, possibly shortened (`limited_by`, with the `requested` value).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Accepted {
    pub knob: String,
    #[serde(serialize_with = "serialize_knob_value")]
    pub from: f64,
    #[serde(serialize_with = "serialize_knob_value")]
    pub to: f64,
    pub reason: String,
    pub chord: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limited_by: Option<Limit>,
    #[serde(skip_serializing_if = "Option::is_none", serialize_with = "ser_opt")]
    pub requested: Option<f64>,
}

/// Why a proposal was blocked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BlockReason {
    /// The proposed value (or the knob's current value) is NaN or infinite.
    NonFinite,
    /// The knob was already proposed earlier in the same decision.
    DuplicateKnob,
    /// The chord is unknown or not allowed by the passport (advanced chords need explicit permission).
    ChordNotAllowed,
    /// The passport does not govern this knob, or its current value is unknown.
    KnobUnknown,
    /// The passport marks the knob propose-only: recorded, never turned into a plan item.
    ProposeOnly,
    /// The passport's global cooldown or the knob's cooldown has not elapsed.
    Cooldown,
    /// The proposal equals the current value.
    NoChange,
    /// The move cannot be made without going below the knob's minimum.
    BelowMin,
    /// The move cannot be made without going above the knob's maximum.
    AboveMax,
    /// The step limit leaves no move (e.g. a relative limit from 0, or less than one unit).
    MaxDelta,
    /// The (possibly shortened) move is smaller than the knob's `min_relative_change`.
    BelowMinRelativeChange,
    /// The accepted moves would change microbatch_size × grad_accum_steps × world_size.
    InvariantGlobalBatch,
    /// The knob was rolled back for hurting and is held from moving that way again (`effect.hold_s`).
    HeldAfterHurt,
}

impl BlockReason {
    pub fn as_str(self) -> &'static str {
        match self {
            BlockReason::NonFinite => "non_finite",
            BlockReason::DuplicateKnob => "duplicate_knob",
            BlockReason::ChordNotAllowed => "chord_not_allowed",
            BlockReason::KnobUnknown => "knob_unknown",
            BlockReason::ProposeOnly => "propose_only",
            BlockReason::Cooldown => "cooldown",
            BlockReason::NoChange => "no_change",
            BlockReason::BelowMin => "below_min",
            BlockReason::AboveMax => "above_max",
            BlockReason::MaxDelta => "max_delta",
            BlockReason::BelowMinRelativeChange => "below_min_relative_change",
            BlockReason::InvariantGlobalBatch => "invariant_global_batch",
            BlockReason::HeldAfterHurt => "held_after_hurt",
        }
    }
}

impl fmt::Display for BlockReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A proposal that did not pass, with a reason code and a sentence for humans.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Blocked {
    pub knob: String,
    pub reason: BlockReason,
    pub detail: String,
    pub chord: String,
    /// The proposed value; `null` when it was not finite.
    #[serde(serialize_with = "ser_opt")]
    pub requested: Option<f64>,
}

/// The envelope's verdict on one decision, and the state to use for the next one.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EnvelopeOutcome {
    /// In proposal order.
    pub accepted: Vec<Accepted>,
    /// In proposal order.
    pub blocked: Vec<Blocked>,
    pub state: EnvelopeState,
}

fn ser_opt<S: serde::Serializer>(v: &Option<f64>, s: S) -> Result<S::Ok, S::Error> {
    match v {
        Some(x) if x.is_finite() => serialize_knob_value(x, s),
        _ => s.serialize_none(),
    }
}

fn num(v: f64) -> String {
    format_knob_value(v)
}

enum Verdict {
    Accept { to: f64, limited_by: Option<Limit> },
    Block(BlockReason, String),
}

/// Applies `passport` to a decision's `proposals`. `current` holds the knob values the policy saw;
/// `state` is the previous outcome's state (default for the first decision); `at` is the evaluation
/// time, used for cooldowns.
pub fn enforce(
    passport: &Passport,
    current: &BTreeMap<String, f64>,
    state: &EnvelopeState,
    at: EvalPoint,
    proposals: &[Proposal],
) -> EnvelopeOutcome {
    enforce_with_rollbacks(passport, current, state, at, &[], proposals)
}

/// [`enforce`] with `rollbacks` (the inverse of a change judged `hurt`) ahead of `proposals`. A
/// rollback passes every check but the cooldowns and holds: waiting out the cooldown of the change it
/// undoes would keep the harm in place. Outcomes list rollbacks first.
pub fn enforce_with_rollbacks(
    passport: &Passport,
    current: &BTreeMap<String, f64>,
    state: &EnvelopeState,
    at: EvalPoint,
    rollbacks: &[Proposal],
    proposals: &[Proposal],
) -> EnvelopeOutcome {
    let all: Vec<Proposal> = rollbacks.iter().chain(proposals).cloned().collect();
    let proposals = &all[..];
    let mut seen = BTreeSet::new();
    let mut verdicts: Vec<Verdict> = proposals
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let first = seen.insert(p.knob.as_str());
            check_one(passport, current, state, at, p, first, i < rollbacks.len())
        })
        .collect();
    if passport.has_invariant(KEEP_GLOBAL_BATCH_STABLE) {
        global_batch_invariant(current, proposals, &mut verdicts);
    }

    let mut out = EnvelopeOutcome {
        accepted: vec![],
        blocked: vec![],
        state: state.clone(),
    };
    for (p, v) in proposals.iter().zip(verdicts) {
        match v {
            Verdict::Accept { to, limited_by } => {
                let from = current[&p.knob];
                out.state.knobs.insert(
                    p.knob.clone(),
                    KnobHistory {
                        at,
                        from,
                        value: to,
                    },
                );
                out.state.last_change = Some(at);
                out.accepted.push(Accepted {
                    knob: p.knob.clone(),
                    from,
                    to,
                    reason: p.reason.clone(),
                    chord: p.chord.clone(),
                    limited_by,
                    requested: limited_by.map(|_| p.to),
                });
            }
            Verdict::Block(reason, detail) => out.blocked.push(Blocked {
                knob: p.knob.clone(),
                reason,
                detail,
                chord: p.chord.clone(),
                requested: p.to.is_finite().then_some(p.to),
            }),
        }
    }
    out
}

/// Seconds left of a cooldown that started at `since`, or `None` when it has elapsed. A clock that
/// went backwards counts as "not elapsed".
fn cooldown_left(since: EvalPoint, cooldown_s: u64, at: EvalPoint) -> Option<f64> {
    let end = since
        .at_ms
        .saturating_add((cooldown_s as i64).saturating_mul(1000));
    (cooldown_s > 0 && at.at_ms < end).then(|| (end - at.at_ms) as f64 / 1000.0)
}

fn check_one(
    passport: &Passport,
    current: &BTreeMap<String, f64>,
    state: &EnvelopeState,
    at: EvalPoint,
    p: &Proposal,
    first_for_knob: bool,
    rollback: bool,
) -> Verdict {
    use BlockReason::*;
    let block = |r: BlockReason, d: String| Verdict::Block(r, d);
    if !p.to.is_finite() {
        return block(
            NonFinite,
            format!("proposed value {} is not a finite number", p.to),
        );
    }
    if !first_for_knob {
        return block(
            DuplicateKnob,
            format!(
                "{} was already proposed in this decision; only the first proposal counts",
                p.knob
            ),
        );
    }
    match ChordId::parse(&p.chord) {
        None => {
            return block(
                ChordNotAllowed,
                format!("{:?} is not a known chord", p.chord),
            );
        }
        Some(c) if !passport.chord_allowed(c) => {
            let how = if c.is_advanced() {
                "is advanced and not permitted by"
            } else {
                "is not allowed by"
            };
            return block(
                ChordNotAllowed,
                format!("{c} {how} passport {}", passport.name),
            );
        }
        Some(_) => {}
    }
    let Some(limits) = passport.knob(&p.knob) else {
        return block(
            KnobUnknown,
            format!("passport {} does not govern knob {}", passport.name, p.knob),
        );
    };
    let Some(&from) = current.get(&p.knob) else {
        return block(
            KnobUnknown,
            format!("the current value of {} is unknown", p.knob),
        );
    };
    if !from.is_finite() {
        return block(
            NonFinite,
            format!("the current value of {} is not a finite number", p.knob),
        );
    }
    if limits.propose_only {
        return block(
            ProposeOnly,
            format!("passport {} marks {} propose-only", passport.name, p.knob),
        );
    }
    if !rollback
        && let Some(h) = state.holds.get(&p.knob)
        && at.at_ms < h.until_ms
        && p.to != from
        && (p.to > from) == h.up
    {
        return block(
            HeldAfterHurt,
            format!(
                "{} was rolled back for hurting; moving it {} again is held for {} s more",
                p.knob,
                if h.up { "up" } else { "down" },
                num((h.until_ms - at.at_ms) as f64 / 1000.0)
            ),
        );
    }
    if !rollback
        && let Some(since) = state.last_change
        && let Some(left) = cooldown_left(since, passport.cooldown_s, at)
    {
        return block(
            Cooldown,
            format!(
                "passport cooldown {} s since the last change: {} s left",
                passport.cooldown_s,
                num(left)
            ),
        );
    }
    if !rollback
        && let Some(h) = state.knobs.get(&p.knob)
        && let Some(left) = cooldown_left(h.at, limits.cooldown_s, at)
    {
        return block(
            Cooldown,
            format!(
                "{} cooldown {} s since its last change: {} s left",
                p.knob,
                limits.cooldown_s,
                num(left)
            ),
        );
    }
    if p.to == from {
        return block(NoChange, format!("{} is already {}", p.knob, num(from)));
    }
    bound_move(limits, &p.knob, from, p.to)
}

/// Shortens the move `from → to` to the knob's range and step limit. The result always lies in
/// `[min, max]`, between `from` (exclusive) and `to` (inclusive), and stays integral when both ends
/// are integers; when no such value exists the proposal is blocked.
fn bound_move(k: &KnobLimits, knob: &str, from: f64, to: f64) -> Verdict {
    use BlockReason::*;
    let up = to > from;
    let between = |t: f64| {
        if up {
            t > from && t <= to
        } else {
            t < from && t >= to
        }
    };
    let range_block = |t: f64, why: &str| {
        if t > k.max || (up && to > k.max) {
            Verdict::Block(AboveMax, format!("{knob}: {why}; max is {}", num(k.max)))
        } else {
            Verdict::Block(BelowMin, format!("{knob}: {why}; min is {}", num(k.min)))
        }
    };

    let mut t = to.clamp(k.min, k.max);
    let mut limited_by = if t != to {
        Some(if to > k.max { Limit::Max } else { Limit::Min })
    } else {
        None
    };
    if !between(t) {
        let why = format!(
            "no value between the current {} and the proposed {} lies within the limits",
            num(from),
            num(to)
        );
        return range_block(to, &why);
    }
    if let Some(md) = k.max_delta_per_step {
        let step = md.allowed_from(from);
        if (t - from).abs() > step {
            t = if up { from + step } else { from - step };
            limited_by = Some(Limit::MaxDelta);
        }
    }
    if from.fract() == 0.0 && to.fract() == 0.0 {
        t = if up { t.floor() } else { t.ceil() };
    }
    if !between(t) {
        return match limited_by {
            Some(Limit::MaxDelta) => Verdict::Block(
                MaxDelta,
                format!(
                    "{knob}: the step limit allows no move from {} toward {}",
                    num(from),
                    num(to)
                ),
            ),
            _ => range_block(
                t,
                &format!(
                    "no whole value between {} and {} lies within the limits",
                    num(from),
                    num(to)
                ),
            ),
        };
    }
    if t < k.min || t > k.max {
        return range_block(
            t,
            &format!(
                "the current value {} is outside the limits and one step reaches only {}",
                num(from),
                num(t)
            ),
        );
    }
    let change = (t - from).abs();
    if k.min_relative_change > 0.0 && from != 0.0 && change / from.abs() < k.min_relative_change {
        return Verdict::Block(
            BelowMinRelativeChange,
            format!(
                "{knob}: {} → {} changes it by {:.1} %, less than the {:.1} % minimum",
                num(from),
                num(t),
                change / from.abs() * 100.0,
                k.min_relative_change * 100.0
            ),
        );
    }
    Verdict::Accept { to: t, limited_by }
}

/// microbatch_size × grad_accum_steps × world_size must not change; world_size is not a knob, so the
/// product of the two knobs must stay as it is. When it would change, every accepted move of either
/// knob is blocked.
fn global_batch_invariant(
    current: &BTreeMap<String, f64>,
    proposals: &[Proposal],
    verdicts: &mut [Verdict],
) {
    let accepted_value = |knob: &str, verdicts: &[Verdict]| {
        proposals.iter().zip(verdicts).find_map(|(p, v)| match v {
            Verdict::Accept { to, .. } if p.knob == knob => Some(*to),
            _ => None,
        })
    };
    let new_mb = accepted_value(MICROBATCH, verdicts);
    let new_ga = accepted_value(GRAD_ACCUM, verdicts);
    if new_mb.is_none() && new_ga.is_none() {
        return;
    }
    let detail = match (current.get(MICROBATCH), current.get(GRAD_ACCUM)) {
        (Some(&mb), Some(&ga)) => {
            let (before, after) = (mb * ga, new_mb.unwrap_or(mb) * new_ga.unwrap_or(ga));
            if (after - before).abs() <= 1e-9 * before.abs().max(1.0) {
                return;
            }
            format!(
                "{MICROBATCH} × {GRAD_ACCUM} would go from {} × {} = {} to {} × {} = {}; the global batch must stay unchanged",
                num(mb),
                num(ga),
                num(before),
                num(new_mb.unwrap_or(mb)),
                num(new_ga.unwrap_or(ga)),
                num(after)
            )
        }
        _ => format!(
            "the global batch cannot be checked: the current {MICROBATCH} or {GRAD_ACCUM} is unknown"
        ),
    };
    for (p, v) in proposals.iter().zip(verdicts.iter_mut()) {
        if matches!(v, Verdict::Accept { .. }) && (p.knob == MICROBATCH || p.knob == GRAD_ACCUM) {
            *v = Verdict::Block(BlockReason::InvariantGlobalBatch, detail.clone());
        }
    }
}
