//! A trainer that stops reporting steps while its source stays open may be hanging: a stalled
//! collective, a dead data loader, a deadlocked rank. The stall rule (docs/signals.md) only sees
//! the stalled step when it finally reports — 25 s later on the H100 near-hang trace, never for a
//! real hang. A live caller asks here, with its own clock, whether the silence since the last
//! record already exceeds what a stall is: 20× the usual time between records, at least 5 s (the
//! stall rule's own thresholds). Pure: the caller passes the time and the counters.

use std::time::Duration;

use crate::closed_loop::TraceEvent;
use crate::signals::SymptomThresholds;

/// A silence longer than a stall, while the source is open.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Silence {
    /// The last step reported before the silence (the highest step read; the last window's end
    /// when no record carried a step).
    pub after_step: u64,
    pub silent_ms: u64,
    /// What a stall is here: 20× `typical_ms`, at least 5 s.
    pub threshold_ms: u64,
    /// The usual time between records in the last window (wall time of their timestamps, else
    /// step time × steps per record).
    pub typical_ms: f64,
}

impl Silence {
    /// The one line `watch` prints.
    pub fn line(&self) -> String {
        format!(
            "POSSIBLE HANG: no step reported for {:.0} s after step {} (records came every ~{} ms; a stall is {:.0} s here); the job may be hanging",
            self.silent_ms as f64 / 1000.0,
            self.after_step,
            fmt_ms(self.typical_ms),
            self.threshold_ms as f64 / 1000.0
        )
    }
}

fn fmt_ms(ms: f64) -> String {
    if ms >= 100.0 {
        format!("{ms:.0}")
    } else {
        format!("{ms:.1}")
    }
}

/// What changed since the last call.
#[derive(Debug, Clone, PartialEq)]
pub enum SilenceEvent {
    /// The silence just crossed the threshold (told once per silence).
    Started(Silence),
    /// Records came again after a silence that had been told.
    Ended { silent_ms: u64, after_step: u64 },
}

/// Tracks the time since records last advanced. `now` is any monotonic clock of the caller's.
#[derive(Debug, Default)]
pub struct SilenceMonitor {
    records: u64,
    since: Option<Duration>,
    told: Option<Silence>,
    /// The source hands out records at most this often (ms; 0: as they come).
    min_gap_ms: f64,
}

impl SilenceMonitor {
    /// For a source that hands out records at most once per `gap` (a Prometheus grid step: every
    /// series' records of a grid point at once): the usual time between records is never taken as
    /// shorter, so the gap between two grid points is no silence however many ranks a window holds.
    pub fn with_min_gap(gap: Duration) -> SilenceMonitor {
        SilenceMonitor {
            min_gap_ms: gap.as_secs_f64() * 1000.0,
            ..SilenceMonitor::default()
        }
    }

    /// `records`: records parsed so far (any count that grows with each record); `last_step`: the
    /// highest step read; `last`: the last evaluated window, whose pace sets the threshold (no
    /// window yet, no judgement).
    pub fn observe(
        &mut self,
        now: Duration,
        records: u64,
        last_step: Option<u64>,
        last: Option<&TraceEvent>,
    ) -> Option<SilenceEvent> {
        // A grid source repeats a hung trainer's last gauges at every grid point (its metrics
        // endpoint still answers scrapes): there progress is a higher step, not another record.
        let records = match last_step {
            Some(step) if self.min_gap_ms > 0.0 => step,
            _ => records,
        };
        if records != self.records || self.since.is_none() {
            let ended = match (self.told.take(), self.since) {
                (Some(s), Some(since)) => Some(SilenceEvent::Ended {
                    silent_ms: ms(now.saturating_sub(since)),
                    after_step: s.after_step,
                }),
                _ => None,
            };
            self.records = records;
            self.since = Some(now);
            return ended;
        }
        if self.told.is_some() {
            return None;
        }
        let (mut typical_ms, mut threshold_ms) = threshold(last?)?;
        if typical_ms < self.min_gap_ms {
            typical_ms = self.min_gap_ms;
            threshold_ms = stall_threshold_ms(typical_ms);
        }
        let silent_ms = ms(now.saturating_sub(self.since?));
        if silent_ms < threshold_ms {
            return None;
        }
        let s = Silence {
            after_step: last_step.unwrap_or(last?.window.last_step),
            silent_ms,
            threshold_ms,
            typical_ms,
        };
        self.told = Some(s.clone());
        Some(SilenceEvent::Started(s))
    }
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// The usual time between records of `w`, and the silence that counts as a stall.
pub fn threshold(w: &TraceEvent) -> Option<(f64, u64)> {
    let win = &w.window;
    let gaps = win.samples.checked_sub(1).filter(|g| *g > 0)? as f64;
    let typical = match (win.start_ms, win.end_ms) {
        (Some(a), Some(b)) if b > a => (b - a) as f64 / gaps,
        _ => {
            let p50 = w.features.get("step_time_p50_ms")?.as_f64()?;
            let steps_per_record =
                (win.last_step.saturating_sub(win.first_step) as f64 / gaps).max(1.0);
            p50 * steps_per_record
        }
    };
    if !typical.is_finite() || typical <= 0.0 {
        return None;
    }
    Some((typical, stall_threshold_ms(typical)))
}

/// What a stall is after records every `typical_ms`.
fn stall_threshold_ms(typical_ms: f64) -> u64 {
    let t = SymptomThresholds::default();
    let threshold = (typical_ms * t.stall_score).max(t.stall_min_ms);
    threshold.min(u64::MAX as f64) as u64
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::closed_loop::{PassportRef, TraceWindow};
    use std::collections::BTreeMap;

    fn window(start_ms: Option<i64>, end_ms: Option<i64>, samples: u64, p50: f64) -> TraceEvent {
        let mut features = BTreeMap::new();
        features.insert("step_time_p50_ms".to_string(), serde_json::json!(p50));
        TraceEvent {
            schema_version: "decision_trace_event.v2",
            window: TraceWindow {
                first_step: 1,
                last_step: samples,
                start_ms,
                end_ms,
                samples,
            },
            features,
            chord: "NORMAL-HOLD".into(),
            active_chords: vec![],
            proposals: vec![],
            blocked: vec![],
            policy: crate::policy::PolicyRef {
                name: "p".into(),
                version: "1".into(),
                digest: "sha256:0".into(),
            },
            passport: PassportRef {
                name: "p".into(),
                version: "1".into(),
            },
            effects: vec![],
        }
    }

    const S: fn(u64) -> Duration = Duration::from_millis;

    #[test]
    fn the_threshold_is_twenty_record_gaps_and_at_least_five_seconds() {
        // 30 ms between records: 0.6 s is below the floor.
        let fast = window(Some(0), Some(49 * 30), 50, 30.0);
        assert_eq!(threshold(&fast), Some((30.0, 5_000)));
        // A slow run: 2 minutes per iteration → 40 minutes.
        let slow = window(Some(0), Some(9 * 120_000), 10, 120_000.0);
        assert_eq!(threshold(&slow), Some((120_000.0, 2_400_000)));
        // No timestamps: step time × steps per record (logged every 10 steps of 100 ms).
        let mut sparse = window(None, None, 11, 100.0);
        sparse.window.last_step = 101;
        assert_eq!(threshold(&sparse), Some((1_000.0, 20_000)));
        // One record, or nothing to go by: no judgement.
        assert_eq!(threshold(&window(None, None, 1, 30.0)), None);
        let mut none = window(None, None, 5, 30.0);
        none.features.clear();
        assert_eq!(threshold(&none), None);
    }

    #[test]
    fn a_silence_is_told_once_when_it_crosses_the_threshold_and_its_end_once() {
        let w = window(Some(0), Some(49 * 30), 50, 30.0);
        let mut m = SilenceMonitor::default();
        // No window yet: records flow, then stop — nothing to judge by.
        assert_eq!(m.observe(S(0), 10, None, None), None);
        assert_eq!(m.observe(S(60_000), 10, None, None), None);
        // Records again, then a window; the silence starts at the last new record.
        assert_eq!(m.observe(S(61_000), 50, None, Some(&w)), None);
        assert_eq!(m.observe(S(65_999), 50, None, Some(&w)), None);
        // The highest step read (57: its window is not closed yet) is what the silence follows.
        let Some(SilenceEvent::Started(s)) = m.observe(S(66_000), 50, Some(57), Some(&w)) else {
            panic!("a 5 s silence after 30 ms steps is told");
        };
        assert_eq!(
            (s.after_step, s.silent_ms, s.threshold_ms),
            (57, 5_000, 5_000)
        );
        assert!(
            s.line().contains("no step reported for 5 s after step 57"),
            "{}",
            s.line()
        );
        // Told once, however long it lasts.
        assert_eq!(m.observe(S(90_000), 50, None, Some(&w)), None);
        // The next record ends it, with its whole length.
        assert_eq!(
            m.observe(S(96_000), 51, None, Some(&w)),
            Some(SilenceEvent::Ended {
                silent_ms: 35_000,
                after_step: 57
            })
        );
        assert_eq!(m.observe(S(97_000), 52, None, Some(&w)), None);
    }

    /// 32 ranks read from Prometheus on a 10 s grid: a window of 50 steps (at 1 step/s, five grid
    /// points) holds 160 records over 40 s, one every 0.25 s on paper, so a stall is about 5 s;
    /// but the source hands them out ten seconds apart, a grid point at a time. Without
    /// the grid's gap every wait for the next grid point was a "POSSIBLE HANG" and its end, two
    /// Events every 10 s.
    #[test]
    fn the_gap_between_grid_points_is_no_silence() {
        let w = window(Some(0), Some(40_000), 160, 900.0);
        assert_eq!(threshold(&w), Some((40_000.0 / 159.0, 5_031)));
        let run = |mut m: SilenceMonitor| {
            let mut told = Vec::new();
            for i in 0..30u64 {
                // The records of grid point i arrive at i × 10 s; the loop looks every second.
                for s in 0..10 {
                    let ev = m.observe(S(i * 10_000 + s * 1_000), 32 * (i + 1), None, Some(&w));
                    told.extend(ev);
                }
            }
            told
        };
        // What a pod-log monitor makes of it: a hang told after every grid point (30), and its
        // end at the next (29).
        assert_eq!(run(SilenceMonitor::default()).len(), 30 + 29);
        assert_eq!(run(SilenceMonitor::with_min_gap(S(10_000))), vec![]);
        // A real hang is still told, after 20 grid steps.
        let mut m = SilenceMonitor::with_min_gap(S(10_000));
        assert_eq!(m.observe(S(0), 160, Some(50), Some(&w)), None);
        assert_eq!(m.observe(S(199_999), 160, Some(50), Some(&w)), None);
        let Some(SilenceEvent::Started(s)) = m.observe(S(200_000), 160, Some(50), Some(&w)) else {
            panic!("200 s without a grid point's records is a hang");
        };
        assert_eq!((s.threshold_ms, s.typical_ms), (200_000, 10_000.0));
    }

    /// A trainer hung in a collective keeps its metrics endpoint up: Prometheus scrapes the same
    /// step and step time, and every grid point brings records again (duplicates of the last
    /// step). From a grid source that is still a silence, told after 20 grid steps.
    #[test]
    fn a_grid_source_repeating_the_last_step_is_a_silence() {
        let w = window(Some(0), Some(490_000), 50, 10_000.0);
        let run = |mut m: SilenceMonitor| {
            let mut told = Vec::new();
            for i in 0..40u64 {
                // Step 57 forever, one more (duplicate) record per 10 s grid point.
                told.extend(m.observe(S(i * 10_000), 50 + i, Some(57), Some(&w)));
            }
            told
        };
        // Counting records, the hang never shows.
        assert_eq!(run(SilenceMonitor::default()), vec![]);
        let told = run(SilenceMonitor::with_min_gap(S(10_000)));
        let [SilenceEvent::Started(s)] = told.as_slice() else {
            panic!("{told:?}");
        };
        assert_eq!((s.after_step, s.silent_ms), (57, 200_000));
    }

    #[test]
    fn steady_records_are_never_a_silence() {
        let w = window(Some(0), Some(49 * 30), 50, 30.0);
        let mut m = SilenceMonitor::default();
        for i in 0..10_000u64 {
            // A record every 4.9 s (buffered output) stays under the 5 s floor.
            assert_eq!(m.observe(S(i * 4_900), i, None, Some(&w)), None);
        }
    }
}
