//! Scoring a policy set on a labelled trace (`policy test`): per-regime recall, false alarms and
//! detection delay. Pure: windows and decisions in, a report out.
//!
//! Rules. A labelled incident segment is detected when every chord expected for its regime fires
//! (is among a window's active chords) in some window overlapping the segment. Delay runs from the
//! segment's first step to the end of the first such window. A false alarm is a window lying wholly
//! inside a NORMAL segment, after the warm-up, in which any chord but NORMAL-HOLD fires. Regimes with
//! no chord to expect (loss drift: no knob addresses it; `*-HOLD` tails) are reported, not scored.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::set::WindowDecision;
use crate::signals::WindowFeatures;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Segment {
    pub regime: String,
    pub first_step: u64,
    pub last_step: u64,
}

/// `<trace>.labels.json`: `{segments: [{regime, first_step, last_step}]}` (other keys ignored).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Labels {
    pub segments: Vec<Segment>,
}

impl Labels {
    pub fn parse(text: &str) -> Result<Labels, String> {
        let l: Labels =
            serde_json::from_str(text).map_err(|e| format!("invalid labels file: {e}"))?;
        if let Some(s) = l.segments.iter().find(|s| s.first_step > s.last_step) {
            return Err(format!(
                "segment {} has first_step {} after last_step {}",
                s.regime, s.first_step, s.last_step
            ));
        }
        Ok(l)
    }
}

/// The chords a labelled regime should trigger; `None` when the regime is not scored. Combined
/// regimes (`A+B`) expect the chords of every part.
pub fn expected_chords(regime: &str) -> Option<Vec<&'static str>> {
    let mut out = Vec::new();
    for part in regime.split('+') {
        out.push(match part.trim() {
            "NORMAL" => "NORMAL-HOLD",
            "INPUT-STRAGGLER" | "STRAGGLER" => "INPUT-STRAGGLER",
            "BURST" => "BURST-ABSORB",
            // The seeds' drift detector is a loss drift: a rising loss activates DRIFT-RETUNE too.
            "DRIFT" | "LOSS-DRIFT" => "DRIFT-RETUNE",
            "RECOVER" => "RECOVER-RELOCK",
            "NEAR-HANG" => "TIMEOUT-GUARD",
            "COMM-CONGESTION" => "COMM-CONGESTION",
            _ => return None,
        });
    }
    Some(out)
}

#[derive(Debug, Clone)]
struct WindowObs {
    first_step: u64,
    last_step: u64,
    end_ms: Option<i64>,
    warmup: bool,
    active: Vec<String>,
    failed: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SegmentScore {
    pub regime: String,
    pub first_step: u64,
    pub last_step: u64,
    pub expected: Vec<String>,
    /// `detected`, `missed`, `unscored`, or `not_enabled` (the expected chord's policy is not running).
    pub outcome: &'static str,
    pub delay_steps: Option<u64>,
    pub delay_s: Option<f64>,
    /// Windows overlapping the segment in which each chord fired.
    pub chords_seen: BTreeMap<String, u64>,
    pub windows: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RegimeRecall {
    pub regime: String,
    pub segments: u64,
    pub detected: u64,
    pub recall: Option<f64>,
    pub mean_delay_steps: Option<f64>,
    pub mean_delay_s: Option<f64>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TestReport {
    pub windows: u64,
    pub normal_windows_after_warmup: u64,
    pub false_alarms: u64,
    pub false_alarms_per_1000: f64,
    /// Chords that fired in false-alarm windows, with counts.
    pub false_alarm_chords: BTreeMap<String, u64>,
    pub failed_windows: u64,
    pub segments: Vec<SegmentScore>,
    pub recall: Vec<RegimeRecall>,
}

/// Collects windows and decisions, then scores them against the labels.
pub struct Scorer {
    labels: Labels,
    available: Vec<String>,
    windows: Vec<WindowObs>,
    /// Segment onset steps, sorted, with the timestamp of the first record at or after each.
    onsets: Vec<(u64, Option<i64>)>,
    /// Onsets before this index have their record.
    next_onset: usize,
}

impl Scorer {
    /// `available`: every chord the running policies can emit (from their metadata).
    pub fn new(labels: Labels, available: Vec<String>) -> Scorer {
        let mut onsets: Vec<(u64, Option<i64>)> = labels
            .segments
            .iter()
            .map(|s| (s.first_step, None))
            .collect();
        onsets.sort_unstable();
        onsets.dedup();
        Scorer {
            labels,
            available,
            windows: Vec::new(),
            onsets,
            next_onset: 0,
        }
    }

    /// Notes one record (in step order, as the windows see them): an incident's onset is timed by
    /// the record that starts it, not interpolated inside its window.
    pub fn note_record(&mut self, step: u64, ts_ms: Option<i64>) {
        let Some(ts) = ts_ms else {
            return;
        };
        while let Some(o) = self.onsets.get_mut(self.next_onset)
            && o.0 <= step
        {
            o.1 = Some(ts);
            self.next_onset += 1;
        }
    }

    pub fn push(&mut self, f: &WindowFeatures, d: &WindowDecision) {
        self.windows.push(WindowObs {
            first_step: f.window.first_step,
            last_step: f.window.last_step,
            end_ms: f.window.end_ms,
            warmup: f.warmup,
            active: d.active_chords.clone(),
            failed: d.any_failure(),
        });
    }

    pub fn finish(self) -> TestReport {
        let mut segments = Vec::new();
        for s in &self.labels.segments {
            segments.push(self.score_segment(s));
        }
        let (mut normal, mut alarms) = (0u64, 0u64);
        let mut alarm_chords: BTreeMap<String, u64> = BTreeMap::new();
        for w in &self.windows {
            let in_normal = self.labels.segments.iter().any(|s| {
                s.regime == "NORMAL" && s.first_step <= w.first_step && w.last_step <= s.last_step
            });
            if !in_normal || w.warmup {
                continue;
            }
            normal += 1;
            let fired: Vec<&String> = w.active.iter().filter(|c| *c != "NORMAL-HOLD").collect();
            if !fired.is_empty() {
                alarms += 1;
                for c in fired {
                    *alarm_chords.entry(c.clone()).or_default() += 1;
                }
            }
        }
        let mut by_regime: BTreeMap<String, Vec<&SegmentScore>> = BTreeMap::new();
        for s in segments.iter().filter(|s| s.regime != "NORMAL") {
            by_regime.entry(s.regime.clone()).or_default().push(s);
        }
        let recall = by_regime
            .into_iter()
            .map(|(regime, segs)| {
                let scored: Vec<&&SegmentScore> = segs
                    .iter()
                    .filter(|s| s.outcome == "detected" || s.outcome == "missed")
                    .collect();
                let detected: Vec<&&&SegmentScore> =
                    scored.iter().filter(|s| s.outcome == "detected").collect();
                let mean =
                    |v: Vec<f64>| (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64);
                RegimeRecall {
                    regime,
                    segments: scored.len() as u64,
                    detected: detected.len() as u64,
                    recall: (!scored.is_empty())
                        .then(|| detected.len() as f64 / scored.len() as f64),
                    mean_delay_steps: mean(
                        detected
                            .iter()
                            .filter_map(|s| s.delay_steps.map(|d| d as f64))
                            .collect(),
                    ),
                    mean_delay_s: mean(detected.iter().filter_map(|s| s.delay_s).collect()),
                }
            })
            .collect();
        TestReport {
            windows: self.windows.len() as u64,
            normal_windows_after_warmup: normal,
            false_alarms: alarms,
            false_alarms_per_1000: if normal == 0 {
                0.0
            } else {
                alarms as f64 * 1000.0 / normal as f64
            },
            false_alarm_chords: alarm_chords,
            failed_windows: self.windows.iter().filter(|w| w.failed).count() as u64,
            segments,
            recall,
        }
    }

    fn score_segment(&self, s: &Segment) -> SegmentScore {
        let overlapping: Vec<&WindowObs> = self
            .windows
            .iter()
            .filter(|w| w.last_step >= s.first_step && w.first_step <= s.last_step)
            .collect();
        let mut chords_seen: BTreeMap<String, u64> = BTreeMap::new();
        for w in &overlapping {
            for c in &w.active {
                *chords_seen.entry(c.clone()).or_default() += 1;
            }
        }
        let expected = expected_chords(&s.regime);
        let mut score = SegmentScore {
            regime: s.regime.clone(),
            first_step: s.first_step,
            last_step: s.last_step,
            expected: expected.iter().flatten().map(|c| c.to_string()).collect(),
            outcome: "unscored",
            delay_steps: None,
            delay_s: None,
            chords_seen,
            windows: overlapping.len() as u64,
        };
        let Some(expected) = expected.filter(|_| s.regime != "NORMAL") else {
            return score;
        };
        if expected
            .iter()
            .any(|c| !self.available.iter().any(|a| a == c))
        {
            score.outcome = "not_enabled";
            return score;
        }
        // The window that completes detection: the latest of each chord's first firing.
        let mut completing: Option<&WindowObs> = None;
        for c in &expected {
            match overlapping.iter().find(|w| w.active.iter().any(|a| a == c)) {
                Some(w) if completing.is_none_or(|x| w.last_step > x.last_step) => {
                    completing = Some(w)
                }
                Some(_) => {}
                None => {
                    score.outcome = "missed";
                    return score;
                }
            }
        }
        let w = completing.expect("at least one expected chord");
        score.outcome = "detected";
        score.delay_steps = Some(w.last_step.saturating_sub(s.first_step));
        score.delay_s = self
            .onset_time(s.first_step)
            .zip(w.end_ms)
            .map(|(t0, t1)| ((t1 - t0).max(0) as f64) / 1000.0);
        score
    }

    /// The timestamp of the first record at or after an onset step.
    fn onset_time(&self, step: u64) -> Option<i64> {
        let i = self.onsets.binary_search_by(|o| o.0.cmp(&step)).ok()?;
        self.onsets[i].1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expected_chords_of_regimes() {
        assert_eq!(
            expected_chords("INPUT-STRAGGLER+BURST"),
            Some(vec!["INPUT-STRAGGLER", "BURST-ABSORB"])
        );
        assert_eq!(expected_chords("RECOVER"), Some(vec!["RECOVER-RELOCK"]));
        assert_eq!(expected_chords("LOSS-DRIFT"), Some(vec!["DRIFT-RETUNE"]));
        assert_eq!(expected_chords("LOSS-DRIFT-HOLD"), None);
        assert_eq!(expected_chords("DRIFT-HOLD"), None);
    }

    /// The onset is timed by its record: after a pause before the onset step, interpolating inside
    /// the window (the window spans 0–10 s, step 6 of 1–10 at 5.6 s) overstated the delay as 4.4 s.
    #[test]
    fn delays_run_from_the_onset_record_s_own_timestamp() {
        let labels = Labels::parse(
            r#"{"segments":[{"regime":"NORMAL","first_step":1,"last_step":5},
                            {"regime":"BURST","first_step":6,"last_step":10}]}"#,
        )
        .unwrap();
        let mut sc = Scorer::new(labels, vec!["NORMAL-HOLD".into(), "BURST-ABSORB".into()]);
        for step in 1..=10u64 {
            let ts = if step <= 5 {
                step as i64 * 100 - 100
            } else {
                9_000 + (step as i64 - 6) * 250
            };
            sc.note_record(step, Some(ts));
        }
        sc.windows.push(WindowObs {
            first_step: 1,
            last_step: 10,
            end_ms: Some(10_000),
            warmup: false,
            active: vec!["BURST-ABSORB".into()],
            failed: false,
        });
        let r = sc.finish();
        let burst = r.segments.iter().find(|s| s.regime == "BURST").unwrap();
        assert_eq!(burst.outcome, "detected");
        assert_eq!(burst.delay_steps, Some(4));
        assert_eq!(burst.delay_s, Some(1.0));
    }

    #[test]
    fn labels_reject_inverted_segments() {
        assert!(
            Labels::parse(r#"{"segments":[{"regime":"NORMAL","first_step":5,"last_step":1}]}"#)
                .is_err()
        );
        assert!(
            Labels::parse(
                r#"{"scenario":"x","segments":[{"regime":"NORMAL","first_step":1,"last_step":5}]}"#
            )
            .is_ok()
        );
    }
}
