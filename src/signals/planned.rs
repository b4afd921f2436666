//! Planned slow steps: periodic evaluation or checkpointing, and the first step after a restart. They
//! are slow on purpose, so they are set aside (counted, never judged as a burst or a drift) before the
//! windows see them. Three ways to know one (docs/signals.md):
//! - the trainer said so (`event`: evaluation, checkpoint, resume);
//! - a wall-clock gap before the record far longer than the steps it covers (the job was down);
//! - a slow step on a detected period: isolated slow steps at multiples of one interval (`eval_interval`,
//!   `save_interval`), found from two occurrences when their spacing is a multiple of 5 and they sit on
//!   multiples of it, or from three evenly spaced ones.

use serde::{Deserialize, Serialize};

use crate::telemetry::{Sample, TrainerEvent};

/// Why a step was set aside.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PlannedKind {
    Event(TrainerEvent),
    /// A slow step on the detected evaluation/checkpoint period.
    Periodic,
    /// The first record after a wall-clock gap (restart or resume).
    Resume,
}

/// A step at least this many times the typical step time is a slow outlier.
pub const OUTLIER_RATIO: f64 = 3.0;
/// Periods shorter than this many steps are not evaluation/checkpoint intervals.
pub const MIN_PERIOD: u64 = 10;
/// A gap before a record of at least this long...
pub const RESUME_GAP_MIN_MS: i64 = 60_000;
/// ...and this many times what its steps should have taken is a restart.
pub const RESUME_GAP_RATIO: f64 = 10.0;
/// Ordinary steps seen before outliers are judged.
const MIN_TYPICAL: u32 = 5;

/// What was set aside over a run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlannedCounts {
    pub evaluation: u64,
    pub checkpoint: u64,
    pub resume: u64,
    pub periodic: u64,
    /// The detected period, in steps.
    pub period_steps: Option<u64>,
}

impl PlannedCounts {
    pub fn total(&self) -> u64 {
        self.evaluation + self.checkpoint + self.resume + self.periodic
    }

    /// `12 planned slow steps set aside, not judged (periodic every 100 steps 10, resume 2)`, or
    /// `None`.
    pub fn describe(&self) -> Option<String> {
        if self.total() == 0 {
            return None;
        }
        let mut parts = Vec::new();
        if self.periodic > 0 {
            let every = self
                .period_steps
                .map_or(String::new(), |p| format!(" every {p} steps"));
            parts.push(format!("periodic{every} {}", self.periodic));
        }
        for (name, n) in [
            ("evaluation", self.evaluation),
            ("checkpoint", self.checkpoint),
            ("resume", self.resume),
        ] {
            if n > 0 {
                parts.push(format!("{name} {n}"));
            }
        }
        Some(format!(
            "{} planned slow step{} set aside, not judged ({})",
            self.total(),
            if self.total() == 1 { "" } else { "s" },
            parts.join(", ")
        ))
    }
}

/// Streaming classifier; state is small and serialisable (watch checkpoints it with the windower).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PlannedSteps {
    /// Slowly adapting log of the typical step time.
    level: Option<f64>,
    typical_n: u32,
    last: Option<(u64, i64)>,
    prev_slow: bool,
    /// The last two isolated slow steps.
    outliers: [Option<u64>; 2],
    /// (period, step % period) once detected.
    period: Option<(u64, u64)>,
    pub counts: PlannedCounts,
}

impl PlannedSteps {
    /// Classifies one record (in step order). `Some` means: set its step time aside.
    pub fn classify(&mut self, s: &Sample) -> Option<PlannedKind> {
        let last = self.last;
        if let (Some(step), Some(ts)) = (s.step, s.ts_ms) {
            self.last = Some((step, ts));
        }
        let kind = self.kind(s, last);
        match kind {
            Some(PlannedKind::Event(TrainerEvent::Evaluation)) => self.counts.evaluation += 1,
            Some(PlannedKind::Event(TrainerEvent::Checkpoint)) => self.counts.checkpoint += 1,
            Some(PlannedKind::Event(TrainerEvent::Resume)) | Some(PlannedKind::Resume) => {
                self.counts.resume += 1
            }
            Some(PlannedKind::Periodic) => self.counts.periodic += 1,
            None => {}
        }
        kind
    }

    fn kind(&mut self, s: &Sample, last: Option<(u64, i64)>) -> Option<PlannedKind> {
        if let Some(e) = s.event {
            return Some(PlannedKind::Event(e));
        }
        let st = s.step_time_ms?;
        let typical = self
            .level
            .filter(|_| self.typical_n >= MIN_TYPICAL)
            .map(f64::exp);
        if let (Some(t), Some((p_step, p_ts)), Some(step), Some(ts)) =
            (typical, last, s.step, s.ts_ms)
        {
            let expected = (step.saturating_sub(p_step) as f64 * t).max(st);
            let gap = ts - p_ts;
            if gap >= RESUME_GAP_MIN_MS && gap as f64 >= RESUME_GAP_RATIO * expected {
                return Some(PlannedKind::Resume);
            }
        }
        let slow = typical.is_some_and(|t| st >= OUTLIER_RATIO * t);
        let was_slow = std::mem::replace(&mut self.prev_slow, slow);
        self.learn(st, slow);
        let (Some(step), true) = (s.step, slow) else {
            return None;
        };
        if let Some((p, r)) = self.period
            && step % p == r
        {
            return Some(PlannedKind::Periodic);
        }
        if was_slow {
            // Part of a run of slow steps: a burst or a drift, not a planned step.
            self.outliers = [None, None];
            return None;
        }
        let [o1, o2] = self.outliers;
        self.outliers = [o2, Some(step)];
        let o2 = o2?;
        let p = step - o2;
        // Intervals people configure are round; two occurrences on one are enough.
        let aligned = p.is_multiple_of(5) && step % p <= 1 && o2 >= p;
        let even = o1.is_some_and(|o1| o2 - o1 == p);
        if p >= MIN_PERIOD && (aligned || even) {
            self.period = Some((p, step % p));
            self.counts.period_steps = Some(p);
            return Some(PlannedKind::Periodic);
        }
        None
    }

    fn learn(&mut self, st: f64, slow: bool) {
        let x = st.max(1e-6).ln();
        let alpha = if self.typical_n < MIN_TYPICAL {
            0.5
        } else if slow {
            0.01
        } else {
            0.1
        };
        self.level = Some(self.level.map_or(x, |l| l + alpha * (x - l)));
        self.typical_n = self.typical_n.saturating_add(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(step: u64, st: f64) -> Sample {
        Sample {
            step: Some(step),
            ts_ms: Some(step as i64 * 100),
            step_time_ms: Some(st),
            ..Default::default()
        }
    }

    /// Evaluation every 100 steps, 7x slower: recognised from the second occurrence on.
    #[test]
    fn periodic_evaluation_is_found_from_its_second_occurrence() {
        let mut p = PlannedSteps::default();
        let mut set_aside = vec![];
        for step in 1..=1000u64 {
            let st = if step.is_multiple_of(100) {
                700.0
            } else {
                100.0
            };
            if p.classify(&rec(step, st)).is_some() {
                set_aside.push(step);
            }
        }
        assert_eq!(set_aside, (200..=1000).step_by(100).collect::<Vec<_>>());
        assert_eq!(p.counts.period_steps, Some(100));
    }

    #[test]
    fn bursts_and_drifts_are_not_planned() {
        let mut p = PlannedSteps::default();
        for step in 1..=3000u64 {
            // Runs of slow steps (a burst) from 1000 to 1500, then a lasting 4x drift.
            let st = match step {
                1000..=1500 if step % 3 != 0 => 400.0,
                2000.. => 400.0,
                _ => 100.0,
            };
            assert_eq!(p.classify(&rec(step, st)), None, "step {step}");
        }
    }

    #[test]
    fn events_and_restarts_are_planned() {
        let mut p = PlannedSteps::default();
        for step in 1..=20 {
            assert_eq!(p.classify(&rec(step, 100.0)), None);
        }
        let mut eval = rec(21, 900.0);
        eval.event = Some(TrainerEvent::Evaluation);
        assert_eq!(
            p.classify(&eval),
            Some(PlannedKind::Event(TrainerEvent::Evaluation))
        );
        // Ten minutes of silence, then the job is back.
        let mut back = rec(22, 5000.0);
        back.ts_ms = Some(21 * 100 + 600_000);
        assert_eq!(p.classify(&back), Some(PlannedKind::Resume));
        assert_eq!(p.classify(&rec(23, 100.0)).map(|_| ()), None);
        assert_eq!((p.counts.evaluation, p.counts.resume), (1, 1));
    }
}
