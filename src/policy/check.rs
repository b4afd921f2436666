//! The host's checks on a policy's raw result. A policy can only narrow what the passport allows:
//! a result that breaks the contract (unknown chord, undeclared knob, NaN, oversized output) fails
//! the whole decision; a well-formed proposal outside the passport's limits is blocked on its own.

use super::metadata::PolicyMetadata;
use super::types::{
    Blocked, Decision, FailureKind, Knobs, Limits, NORMAL_HOLD, PolicyRef, PolicyState, Proposal,
    RawDecision,
};

pub const MAX_PROPOSALS: usize = 16;
pub const MAX_NOTES: usize = 32;
pub const MAX_TEXT_BYTES: usize = 1024;
pub const MAX_STATE_BYTES: usize = 64 * 1024;

/// Checks `raw` against the policy's metadata and the passport `limits` (already restricted to the
/// knobs the policy declared). Returns the decision and the state for the next window (the previous
/// state when the result is rejected).
pub fn check_decision(
    raw: RawDecision,
    meta: &PolicyMetadata,
    policy: &PolicyRef,
    knobs: &Knobs,
    limits: &Limits,
    prev: &PolicyState,
) -> (Decision, PolicyState) {
    match validate(&raw, meta) {
        Err(msg) => (
            Decision::failed(policy.clone(), FailureKind::Malformed, msg),
            prev.clone(),
        ),
        Ok(()) => {
            let mut proposals: Vec<Proposal> = Vec::new();
            let mut blocked = Vec::new();
            for p in raw.proposals {
                let block = |why: String| Blocked {
                    knob: p.knob.clone(),
                    to: p.to,
                    reason: why,
                };
                let (Some(from), Some(lim)) = (knobs.get(&p.knob), limits.get(&p.knob)) else {
                    blocked.push(block(
                        "no current value or passport limits for this knob".into(),
                    ));
                    continue;
                };
                if proposals.iter().any(|q| q.knob == p.knob) {
                    blocked.push(block(
                        "the policy proposed this knob twice; the first proposal stands".into(),
                    ));
                } else if p.to < lim.min || p.to > lim.max {
                    blocked.push(block(format!(
                        "outside the passport range [{}, {}]",
                        lim.min, lim.max
                    )));
                } else if (p.to - from).abs() > lim.max_delta {
                    blocked.push(block(format!(
                        "a change of {} exceeds the passport's max delta {}",
                        (p.to - from).abs(),
                        lim.max_delta
                    )));
                } else if p.to != from {
                    let chord = meta
                        .chord_for_knob(&raw.chord, &raw.active_chords, &p.knob)
                        .to_string();
                    proposals.push(Proposal {
                        chord,
                        knob: p.knob,
                        from,
                        to: p.to,
                        reason: p.reason,
                    });
                }
            }
            let decision = Decision {
                policy: policy.clone(),
                chord: raw.chord,
                active_chords: raw.active_chords,
                confidence: raw.confidence,
                proposals,
                blocked,
                notes: raw.notes,
                failure: None,
            };
            (decision, PolicyState(raw.next_state))
        }
    }
}

fn validate(raw: &RawDecision, meta: &PolicyMetadata) -> Result<(), String> {
    let known = |c: &str| meta.chords.iter().any(|k| k == c);
    if !known(&raw.chord) {
        return Err(format!(
            "chord {:?} is not one the policy declared ({})",
            short(&raw.chord),
            meta.chords.join(", ")
        ));
    }
    if let Some(c) = raw.active_chords.iter().find(|c| !known(c)) {
        return Err(format!(
            "active chord {:?} is not one the policy declared",
            short(c)
        ));
    }
    if !raw.confidence.is_finite() || !(0.0..=1.0).contains(&raw.confidence) {
        return Err(format!(
            "confidence {} is not a number in [0, 1]",
            raw.confidence
        ));
    }
    if raw.proposals.len() > MAX_PROPOSALS
        || raw.notes.len() > MAX_NOTES
        || raw.active_chords.len() > MAX_NOTES
    {
        return Err(format!(
            "too many proposals ({}) or notes ({})",
            raw.proposals.len(),
            raw.notes.len()
        ));
    }
    if raw.next_state.len() > MAX_STATE_BYTES {
        return Err(format!(
            "state of {} bytes exceeds {MAX_STATE_BYTES}",
            raw.next_state.len()
        ));
    }
    if raw.notes.iter().any(|n| n.len() > MAX_TEXT_BYTES)
        || raw
            .proposals
            .iter()
            .any(|p| p.reason.len() > MAX_TEXT_BYTES)
    {
        return Err(format!("a note or reason exceeds {MAX_TEXT_BYTES} bytes"));
    }
    if raw.chord == NORMAL_HOLD && !raw.proposals.is_empty() {
        return Err("NORMAL-HOLD cannot propose changes".into());
    }
    for p in &raw.proposals {
        if !meta.knobs.contains(&p.knob) {
            return Err(format!(
                "knob {:?} is not one the policy may propose ({})",
                short(&p.knob),
                meta.knobs.join(", ")
            ));
        }
        if !p.to.is_finite() {
            return Err(format!(
                "proposal for {} is not a finite number ({})",
                p.knob, p.to
            ));
        }
    }
    Ok(())
}

fn short(s: &str) -> String {
    s.chars().take(64).collect()
}
