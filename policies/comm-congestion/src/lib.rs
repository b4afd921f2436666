//! `comm-congestion` (advanced, off by default): COMM-CONGESTION.
//!
//! Needs `comm_share` (the share of step time spent in collectives, from `comm_ms` telemetry);
//! without it the policy stays silent and says so. It learns the job's healthy comm share over
//! calm windows; when the share is at least [`SHARE_FLOOR`] and [`SHARE_RISE`]× the healthy level
//! while steps are [`STEP_RATIO`]× slower, for [`CONFIRM_WINDOWS`] windows in a row, it proposes
//! doubling `comm_bucket_mb` (fewer, larger all-reduces overlap better with compute), bounded by the
//! passport, once per episode.

use modekeeper_policy_sdk::state::{Reader, Writer};
use modekeeper_policy_sdk::{ChordPolicy, Decision, Evaluation, Input, Proposal, export_policy};

pub const CHORD: &str = "COMM-CONGESTION";
pub const KNOB: &str = "comm_bucket_mb";
pub const SHARE_FLOOR: f64 = 0.35;
pub const SHARE_RISE: f64 = 1.5;
pub const STEP_RATIO: f64 = 1.1;
pub const CONFIRM_WINDOWS: u32 = 2;
pub const CALIBRATION_WINDOWS: u32 = 3;
pub const ALPHA: f64 = 0.2;
/// Bucket sizes are multiples of this (MB).
pub const BUCKET_STEP: f64 = 16.0;
const STATE_VERSION: u8 = 1;

pub struct CommCongestion;

impl ChordPolicy for CommCongestion {
    fn evaluate(input: &Input) -> Evaluation {
        evaluate(input)
    }
}

export_policy!(CommCongestion);

#[derive(Debug, Clone, PartialEq, Default)]
struct State {
    healthy_share: f64,
    calibrated: u32,
    run: u32,
}

impl State {
    fn decode(b: &[u8]) -> State {
        let read = || -> Option<State> {
            let mut r = Reader::new(b, STATE_VERSION)?;
            let s = State {
                healthy_share: r.f64()?,
                calibrated: r.u32()?,
                run: r.u32()?,
            };
            (r.is_done() && s.healthy_share.is_finite()).then_some(s)
        };
        read().unwrap_or_default()
    }

    fn encode(&self) -> Vec<u8> {
        Writer::new(STATE_VERSION)
            .f64(self.healthy_share)
            .u32(self.calibrated)
            .u32(self.run)
            .finish()
    }
}

pub fn evaluate(input: &Input) -> Evaluation {
    let f = &input.features;
    let mut st = State::decode(&input.state);
    let out = |st: &State, d: Decision| Evaluation {
        decision: d,
        next_state: st.encode(),
    };
    let Some(share) = f.comm_share.filter(|s| s.is_finite()) else {
        return out(
            &st,
            Decision::hold(0.5)
                .note("no comm_ms telemetry: COMM-CONGESTION cannot judge and stays silent"),
        );
    };
    if f.warmup || f.step_time_baseline_ms.is_none() {
        return out(&st, Decision::hold(0.5));
    }
    let trusted = st.calibrated >= CALIBRATION_WINDOWS;
    let congested = trusted
        && share >= SHARE_FLOOR
        && share >= st.healthy_share * SHARE_RISE
        && f.step_time_ratio >= STEP_RATIO;
    if !congested {
        st.run = 0;
        st.healthy_share = if st.calibrated == 0 {
            share
        } else {
            (1.0 - ALPHA) * st.healthy_share + ALPHA * share
        };
        st.calibrated = st.calibrated.saturating_add(1);
        return out(&st, Decision::hold(0.9));
    }
    st.run = st.run.saturating_add(1);
    if st.run < CONFIRM_WINDOWS {
        return out(
            &st,
            Decision::hold(0.6).note(format!(
                "comm share {share:.2} is high; waiting one more window to confirm"
            )),
        );
    }
    let mut notes = vec![format!(
        "collectives take {:.0}% of each step (healthy {:.0}%) and steps are {:.2}x slower",
        share * 100.0,
        st.healthy_share * 100.0,
        f.step_time_ratio
    )];
    let mut proposals = Vec::new();
    match input.tunable(KNOB) {
        Some((cur, lim)) if cur > lim.baseline => {
            notes.push(format!("comm_bucket_mb already raised to {cur}; holding"))
        }
        Some((cur, lim)) => {
            let want = ((cur * 2.0) / BUCKET_STEP).round() * BUCKET_STEP;
            let to = lim.bound(cur, want);
            let to = (to / BUCKET_STEP).floor() * BUCKET_STEP;
            if to > cur {
                proposals.push(Proposal {
                    knob: KNOB.into(),
                    to,
                    reason: "communication congestion: larger gradient buckets, fewer all-reduces"
                        .into(),
                });
            } else {
                notes.push("comm_bucket_mb is at its passport limit".into());
            }
        }
        None => notes.push(
            "comm_bucket_mb is not a knob of this job (or has no passport limits); reporting only"
                .into(),
        ),
    }
    let confidence = (0.5 + 0.5 * (1.0 - SHARE_FLOOR / share)).clamp(0.5, 0.99);
    out(
        &st,
        Decision {
            chord: CHORD.into(),
            active_chords: vec![CHORD.into()],
            confidence,
            proposals,
            notes,
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use modekeeper_policy_sdk::{Features, KnobLimit, KnobValue};

    fn run(windows: &[(Option<f64>, f64)]) -> Vec<Decision> {
        let mut state = Vec::new();
        windows
            .iter()
            .enumerate()
            .map(|(i, (share, ratio))| {
                let mut f = Features {
                    comm_share: *share,
                    step_time_ratio: *ratio,
                    step_time_baseline_ms: Some(30.0),
                    ..Default::default()
                };
                f.window.index = i as u64;
                let inp = Input {
                    features: f,
                    knobs: vec![KnobValue {
                        knob: KNOB.into(),
                        value: 128.0,
                    }],
                    limits: vec![KnobLimit {
                        knob: KNOB.into(),
                        min: 16.0,
                        max: 512.0,
                        max_delta: 256.0,
                        baseline: 128.0,
                    }],
                    state: state.clone(),
                };
                let e = evaluate(&inp);
                state = e.next_state;
                e.decision
            })
            .collect()
    }

    #[test]
    fn silent_without_comm_telemetry() {
        let d = run(&[
            (None, 3.0),
            (None, 3.0),
            (None, 3.0),
            (None, 3.0),
            (None, 3.0),
        ]);
        assert!(
            d.iter()
                .all(|d| d.chord == "NORMAL-HOLD" && d.proposals.is_empty())
        );
    }

    #[test]
    fn confirmed_congestion_doubles_buckets() {
        let calm = (Some(0.15), 1.0);
        let hot = (Some(0.5), 1.4);
        let d = run(&[calm, calm, calm, hot, hot, calm]);
        assert_eq!(d[3].chord, "NORMAL-HOLD");
        assert_eq!(d[4].chord, CHORD);
        assert_eq!(d[4].proposals[0].to, 256.0);
        assert_eq!(d[5].chord, "NORMAL-HOLD");
    }
}
