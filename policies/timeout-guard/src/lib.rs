//! `timeout-guard` (advanced, off by default): TIMEOUT-GUARD for near-hangs.
//!
//! It calibrates the job's healthy step interval (an exponentially weighted p99 of step times, or
//! the wall-clock interval between records when that is longer) over stall-free windows. A window
//! whose longest step is [`STALL_FACTOR`]× that interval and reached at least half the job's
//! `timeout_ms` is a near-hang: the job came close to being killed by its own watchdog for a stall it
//! then recovered from. TIMEOUT-GUARD proposes `timeout_ms` = twice that stall (rounded up to
//! 500 ms), never lower than today's value: it widens the guard, it never kills or restarts anything.
//! At most [`MAX_CHANGES_PER_HOUR`] proposals per hour of telemetry time.

use modekeeper_policy_sdk::state::{Reader, Writer};
use modekeeper_policy_sdk::{
    ChordPolicy, Decision, Evaluation, Features, Input, Proposal, export_policy,
};

pub const CHORD: &str = "TIMEOUT-GUARD";
pub const KNOB: &str = "timeout_ms";
/// A stall is this many healthy step intervals.
pub const STALL_FACTOR: f64 = 20.0;
/// ...that reached this share of the current `timeout_ms`.
pub const TIMEOUT_SHARE: f64 = 0.5;
/// Stall-free windows needed before the interval is trusted.
pub const CALIBRATION_WINDOWS: u32 = 3;
/// Weight of a new window in the healthy interval.
pub const ALPHA: f64 = 0.2;
/// Headroom of the proposed timeout over the observed stall.
pub const HEADROOM: f64 = 2.0;
pub const ROUND_MS: f64 = 500.0;
pub const MAX_CHANGES_PER_HOUR: usize = 2;
const HOUR_MS: i64 = 3_600_000;
const STATE_VERSION: u8 = 1;

pub struct TimeoutGuard;

impl ChordPolicy for TimeoutGuard {
    fn evaluate(input: &Input) -> Evaluation {
        evaluate(input)
    }
}

export_policy!(TimeoutGuard);

#[derive(Debug, Clone, PartialEq, Default)]
struct State {
    /// Healthy step interval (ms), EWMA.
    interval_ms: f64,
    calibrated: u32,
    /// Telemetry times (ms) of the last proposals, newest last.
    changes: Vec<i64>,
}

impl State {
    fn decode(b: &[u8]) -> State {
        let read = || -> Option<State> {
            let mut r = Reader::new(b, STATE_VERSION)?;
            let interval_ms = r.f64()?;
            let calibrated = r.u32()?;
            let n = r.u8()? as usize;
            let mut changes = Vec::with_capacity(n.min(MAX_CHANGES_PER_HOUR));
            for _ in 0..n {
                changes.push(r.i64()?);
            }
            (r.is_done() && interval_ms.is_finite()).then_some(State {
                interval_ms,
                calibrated,
                changes,
            })
        };
        read().unwrap_or_default()
    }

    fn encode(&self) -> Vec<u8> {
        let mut w = Writer::new(STATE_VERSION)
            .f64(self.interval_ms)
            .u32(self.calibrated)
            .u8(self.changes.len() as u8);
        for c in &self.changes {
            w = w.i64(*c);
        }
        w.finish()
    }
}

/// The healthy interval sample of a window: p99 step time, or the wall-clock record interval when
/// it is longer (a job that logs every step but spends time between them).
fn interval_sample(f: &Features) -> f64 {
    let wall = f.mean_step_interval_ms().unwrap_or(0.0);
    f.step_time_p99_ms.max(wall)
}

pub fn evaluate(input: &Input) -> Evaluation {
    let f = &input.features;
    let mut st = State::decode(&input.state);
    let hold = |st: &State, note: Option<String>| Evaluation {
        decision: Decision {
            notes: note.into_iter().collect(),
            ..Decision::hold(0.9)
        },
        next_state: st.encode(),
    };
    if f.warmup {
        return hold(&st, None);
    }
    let timeout = input.knob(KNOB);
    let trusted = st.calibrated >= CALIBRATION_WINDOWS;
    let stall_floor = st.interval_ms * STALL_FACTOR;
    let near_timeout = timeout.is_none_or(|t| f.step_time_max_ms >= t * TIMEOUT_SHARE);
    if !(trusted && f.step_time_max_ms >= stall_floor && near_timeout) {
        let sample = interval_sample(f);
        if sample.is_finite() && sample > 0.0 && (!trusted || f.step_time_max_ms < stall_floor) {
            st.interval_ms = if st.calibrated == 0 {
                sample
            } else {
                (1.0 - ALPHA) * st.interval_ms + ALPHA * sample
            };
            st.calibrated = st.calibrated.saturating_add(1);
        }
        return hold(&st, None);
    }

    let stall = f.step_time_max_ms;
    let mut notes = vec![format!(
        "near-hang: a step took {:.1} s, {:.0}x the healthy step interval ({:.1} ms)",
        stall / 1000.0,
        stall / st.interval_ms.max(1e-9),
        st.interval_ms
    )];
    let mut proposals = Vec::new();
    let now = f.window.end_ms.unwrap_or(0);
    st.changes.retain(|t| now - *t < HOUR_MS);
    match (timeout, input.limit(KNOB)) {
        (Some(cur), Some(lim)) => {
            let want = ((stall * HEADROOM) / ROUND_MS).ceil() * ROUND_MS;
            let to = lim.bound(cur, want.max(cur)).round();
            if to <= cur {
                notes.push(format!("timeout_ms {cur} already covers it (or is at its passport limit); nothing to change"));
            } else if st.changes.len() >= MAX_CHANGES_PER_HOUR {
                notes.push(format!("budget: already {MAX_CHANGES_PER_HOUR} timeout changes in the last hour; not proposing another"));
            } else {
                st.changes.push(now);
                proposals.push(Proposal {
                    knob: KNOB.into(),
                    to,
                    reason: format!("near-hang of {:.1} s: give recoverable stalls room before the watchdog fires", stall / 1000.0),
                });
            }
        }
        _ => notes.push(
            "timeout_ms is not a knob of this job (or has no passport limits); reporting only"
                .into(),
        ),
    }
    let confidence = (0.5 + 0.5 * (1.0 - stall_floor / stall)).clamp(0.5, 0.99);
    let decision = Decision {
        chord: CHORD.into(),
        active_chords: vec![CHORD.into()],
        confidence,
        proposals,
        notes,
    };
    Evaluation {
        decision,
        next_state: st.encode(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use modekeeper_policy_sdk::{KnobLimit, KnobValue};

    fn window(i: u64, max: f64) -> Input {
        let mut f = Features {
            step_time_p99_ms: 30.0,
            step_time_max_ms: max,
            ..Default::default()
        };
        f.window.index = i;
        f.window.end_ms = Some(i as i64 * 1500);
        Input {
            features: f,
            knobs: vec![KnobValue {
                knob: KNOB.into(),
                value: 5000.0,
            }],
            limits: vec![KnobLimit {
                knob: KNOB.into(),
                min: 1000.0,
                max: 60000.0,
                max_delta: 60000.0,
                baseline: 5000.0,
            }],
            state: Vec::new(),
        }
    }

    fn run(maxes: &[f64]) -> Vec<Decision> {
        let mut state = Vec::new();
        maxes
            .iter()
            .enumerate()
            .map(|(i, m)| {
                let mut inp = window(i as u64, *m);
                inp.state = state.clone();
                let e = evaluate(&inp);
                state = e.next_state;
                e.decision
            })
            .collect()
    }

    #[test]
    fn stall_after_calibration_raises_timeout_never_lowers() {
        let d = run(&[32.0, 31.0, 33.0, 30.0, 25_000.0, 31.0]);
        assert!(d[..4].iter().all(|d| d.chord == "NORMAL-HOLD"));
        assert_eq!(d[4].chord, CHORD);
        assert_eq!(d[4].proposals[0].to, 50_000.0);
        assert_eq!(d[5].chord, "NORMAL-HOLD");
    }

    #[test]
    fn no_stall_before_calibration_or_far_from_timeout() {
        assert!(
            run(&[25_000.0, 30.0])
                .iter()
                .all(|d| d.chord == "NORMAL-HOLD")
        );
        // 2 s spike: 60x the interval but far from the 5 s watchdog.
        assert!(
            run(&[30.0, 30.0, 30.0, 30.0, 2_000.0])
                .iter()
                .all(|d| d.chord == "NORMAL-HOLD")
        );
    }

    #[test]
    fn budget_limits_changes_per_hour() {
        let d = run(&[30.0, 30.0, 30.0, 30.0, 9_000.0, 9_000.0, 9_000.0]);
        let with_change = d.iter().filter(|d| !d.proposals.is_empty()).count();
        assert_eq!(with_change, MAX_CHANGES_PER_HOUR);
        assert!(d[6].notes.iter().any(|n| n.starts_with("budget")));
    }
}
