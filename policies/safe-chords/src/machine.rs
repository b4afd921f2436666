//! The state machine: normal → incident → recover → relock → normal.
//!
//! Hysteresis, so the chord never flaps: an incident kind stays active until it has been quiet for
//! [`HOLD_WINDOWS`] windows; RECOVER then holds the knobs for [`STABLE_WINDOWS`] stable windows
//! before RELOCK proposes the passport baseline; any new evidence on the way sends it back to the
//! incident. RELOCK waits up to [`RELOCK_PATIENCE`] windows for the knobs to arrive.

use modekeeper_policy_sdk::{Decision, Evaluation, Input, Proposal};

use crate::evidence::{self, Evidence, Kind};
use crate::knobs;
use crate::state::{NEVER, Phase, State};
use crate::{BURST_ABSORB, DRIFT_RETUNE, INPUT_STRAGGLER, NORMAL_HOLD, RECOVER_RELOCK};

pub const HOLD_WINDOWS: u64 = 3;
pub const STABLE_WINDOWS: u32 = 3;
pub const RELOCK_PATIENCE: u32 = 5;

fn chord_of(k: Kind) -> &'static str {
    match k {
        // No safe chord fixes a stall: RECOVER holds the knobs while the job comes back.
        Kind::Stall => RECOVER_RELOCK,
        Kind::Drift => DRIFT_RETUNE,
        Kind::Straggler => INPUT_STRAGGLER,
        Kind::Burst => BURST_ABSORB,
    }
}

fn kind_name(k: Kind) -> &'static str {
    match k {
        Kind::Stall => "stall",
        Kind::Drift => "step-time drift",
        Kind::Straggler => "input straggler",
        Kind::Burst => "burst",
    }
}

/// 0.5 at the threshold, approaching 1 as the score grows.
fn confidence(score: f64) -> f64 {
    (0.5 + 0.5 * (1.0 - 1.0 / score.max(1.0))).clamp(0.5, 0.99)
}

fn decision(
    chord: &str,
    confidence: f64,
    proposals: Vec<Proposal>,
    notes: Vec<String>,
) -> Decision {
    let active = if chord == NORMAL_HOLD {
        Vec::new()
    } else {
        vec![chord.to_string()]
    };
    Decision {
        chord: chord.into(),
        active_chords: active,
        confidence,
        proposals,
        notes,
    }
}

/// A rising loss is a drift no safe knob addresses: DRIFT-RETUNE is activated (it is the drift
/// chord) with no proposal, and the decision says a human is needed. Other chords are kept.
fn loss_drift(mut d: Decision, f: &modekeeper_policy_sdk::Features, score: f64) -> Decision {
    if d.chord == NORMAL_HOLD {
        d.chord = DRIFT_RETUNE.into();
        d.confidence = confidence(score);
    }
    if !d.active_chords.iter().any(|c| c == DRIFT_RETUNE) {
        d.active_chords.push(DRIFT_RETUNE.into());
    }
    d.notes.push(format!(
        "needs a human: the loss is rising ({:.2}x its baseline, change score {:.0}) and no knob of the passport addresses it (often the learning rate or the data); DRIFT-RETUNE proposes nothing",
        f.loss_ratio.unwrap_or(0.0),
        score * evidence::LOSS_CUSUM
    ));
    d
}

pub fn evaluate(input: &Input) -> Evaluation {
    let f = &input.features;
    let mut st = State::decode(&input.state);
    if f.warmup || f.step_time_baseline_ms.is_none() {
        // Loss-only telemetry never gets a step-time baseline; its loss is still judged.
        let rising = !f.warmup
            && f.loss_cusum >= evidence::LOSS_CUSUM
            && f.loss_ratio.is_some_and(|r| r >= evidence::LOSS_RATIO);
        let d = if rising {
            loss_drift(Decision::hold(0.5), f, f.loss_cusum / evidence::LOSS_CUSUM)
        } else {
            Decision::hold(0.5).note("warm-up: baselines are not ready yet; holding")
        };
        return Evaluation {
            decision: d,
            next_state: st.encode(),
        };
    }
    let ev = evidence::read(f, input.knob("timeout_ms"), &mut st);
    let idx = f.window.index;
    for k in Kind::ALL {
        if ev.score(k).is_some() {
            st.last_seen[k as usize] = idx;
        }
    }
    let active: Vec<Kind> = Kind::ALL
        .into_iter()
        .filter(|k| {
            let seen = st.last_seen[*k as usize];
            seen != NEVER && idx >= seen && idx - seen < HOLD_WINDOWS
        })
        .collect();

    let mut d = if !active.is_empty() {
        if st.phase != Phase::Incident {
            st.phase = Phase::Incident;
            st.incident_mask = 0;
        }
        st.counter = 0;
        for k in &active {
            st.incident_mask |= k.bit();
        }
        incident(input, &ev, &active, &st)
    } else {
        settle(input, &mut st)
    };
    if let Some(s) = ev.loss_drift {
        d = loss_drift(d, f, s);
    }
    Evaluation {
        decision: d,
        next_state: st.encode(),
    }
}

fn incident(input: &Input, ev: &Evidence, active: &[Kind], st: &State) -> Decision {
    let f = &input.features;
    let mut chords: Vec<String> = Vec::new();
    let mut proposals: Vec<Proposal> = Vec::new();
    let mut notes = Vec::new();
    let mut best = 0.0f64;
    for k in active {
        let c = chord_of(*k);
        if !chords.iter().any(|x| x == c) {
            chords.push(c.to_string());
        }
        let Some(score) = ev.score(*k) else {
            let quiet = f.window.index - st.last_seen[*k as usize];
            notes.push(format!(
                "{}: quiet for {quiet} window(s); holding until it stays quiet",
                kind_name(*k)
            ));
            continue;
        };
        best = best.max(score);
        let outcome = match k {
            Kind::Stall => Err(format!(
                "stall: the longest step took {:.0} ms ({:.0}x the baseline median); holding the knobs while the job recovers",
                f.step_time_max_ms, f.stall_score
            )),
            Kind::Drift => knobs::drift_retune(input, f.step_time_ratio),
            Kind::Straggler => knobs::input_straggler(input, f.slowest_worker),
            Kind::Burst => knobs::burst_absorb(input),
        };
        match outcome {
            Ok(ps) => {
                for p in ps {
                    if !proposals.iter().any(|q| q.knob == p.knob) {
                        proposals.push(p);
                    }
                }
            }
            Err(note) => notes.push(note),
        }
    }
    let primary = chords
        .first()
        .cloned()
        .unwrap_or_else(|| NORMAL_HOLD.to_string());
    let conf = if best > 0.0 { confidence(best) } else { 0.5 };
    Decision {
        chord: primary,
        active_chords: chords,
        confidence: conf,
        proposals,
        notes,
    }
}

/// No incident evidence is active: walk the recover/relock phases.
fn settle(input: &Input, st: &mut State) -> Decision {
    match st.phase {
        Phase::Normal => decision(NORMAL_HOLD, 0.9, Vec::new(), Vec::new()),
        Phase::Incident => {
            st.phase = Phase::Recover;
            st.counter = 1;
            recover_note(st)
        }
        Phase::Recover => {
            st.counter += 1;
            if st.counter < STABLE_WINDOWS {
                return recover_note(st);
            }
            let mut notes = Vec::new();
            let (props, at_baseline) = knobs::relock(input, &mut notes);
            if at_baseline {
                st.phase = Phase::Normal;
                notes.push(format!("relock: {STABLE_WINDOWS} stable windows and every knob is at its passport baseline; back to NORMAL-HOLD"));
            } else {
                st.phase = Phase::Relock;
                st.counter = 0;
                notes.push(format!("relock: {STABLE_WINDOWS} stable windows; returning the knobs to the passport baseline"));
            }
            decision(RECOVER_RELOCK, 0.9, props, notes)
        }
        Phase::Relock => {
            st.counter += 1;
            let mut notes = Vec::new();
            let (props, at_baseline) = knobs::relock(input, &mut notes);
            if at_baseline {
                st.phase = Phase::Normal;
                notes.push("relocked: every knob is back at its passport baseline".into());
                decision(RECOVER_RELOCK, 0.9, Vec::new(), notes)
            } else if st.counter >= RELOCK_PATIENCE {
                st.phase = Phase::Normal;
                notes.push(format!("relock not reached after {RELOCK_PATIENCE} windows; leaving the knobs as they are"));
                decision(RECOVER_RELOCK, 0.5, Vec::new(), notes)
            } else {
                decision(RECOVER_RELOCK, 0.9, props, notes)
            }
        }
    }
}

fn recover_note(st: &State) -> Decision {
    let kinds: Vec<&str> = Kind::ALL
        .into_iter()
        .filter(|k| st.incident_mask & k.bit() != 0)
        .map(kind_name)
        .collect();
    let note = format!(
        "recover: the incident ({}) is over; holding the knobs, stable window {}/{STABLE_WINDOWS} before relock",
        kinds.join(", "),
        st.counter
    );
    decision(RECOVER_RELOCK, 0.8, Vec::new(), vec![note])
}
