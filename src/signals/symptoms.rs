//! Host-side symptoms: which anomalies a window shows, with thresholds on [`WindowFeatures`], and
//! grouping of consecutive symptomatic windows into [`Episode`]s for summaries. This is descriptive
//! (what `observe` reports); deciding what to change is the chord policies' job.

use serde::{Deserialize, Serialize};

use super::features::WindowFeatures;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Symptom {
    /// The loss became NaN or infinite: training diverged. Raised at once, warm-up or not.
    LossDivergence,
    /// One step took many times the baseline: the job nearly hung.
    Stall,
    /// A dataloader worker (or a rank) is much slower than its peers, or steps wait on input.
    InputStraggler,
    /// Compute-time tail blew up while the median held: interference (a noisy neighbour).
    Burst,
    /// The median step time moved up and stayed there.
    StepTimeDrift,
    /// Loss rises against its own recent baseline.
    LossDrift,
    /// Collective communication takes a large share of each step.
    CommBound,
}

impl Symptom {
    pub fn describe(self) -> &'static str {
        match self {
            Symptom::LossDivergence => "loss divergence (NaN/Inf loss)",
            Symptom::Stall => "near-hang (a step stalled)",
            Symptom::InputStraggler => "input straggler",
            Symptom::Burst => "burst (compute-time tail blow-up)",
            Symptom::StepTimeDrift => "step-time drift",
            Symptom::LossDrift => "loss drift",
            Symptom::CommBound => "communication-bound",
        }
    }
}

/// Thresholds, documented with their rationale in docs/signals.md.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct SymptomThresholds {
    pub stall_score: f64,
    pub stall_min_ms: f64,
    pub straggler_score: f64,
    pub data_wait_share: f64,
    pub burst_score: f64,
    pub burst_max_step_ratio: f64,
    pub burst_slow_share: f64,
    pub burst_slow_share_recent: f64,
    pub step_cusum: f64,
    pub step_ratio: f64,
    pub loss_cusum: f64,
    pub loss_ratio: f64,
    pub comm_share: f64,
}

impl Default for SymptomThresholds {
    fn default() -> Self {
        SymptomThresholds {
            stall_score: 20.0,
            stall_min_ms: 5_000.0,
            straggler_score: 2.0,
            data_wait_share: 0.2,
            burst_score: 1.5,
            burst_max_step_ratio: 1.3,
            burst_slow_share: 0.5,
            burst_slow_share_recent: 0.15,
            step_cusum: 5.0,
            step_ratio: 1.25,
            loss_cusum: 5.0,
            loss_ratio: 1.1,
            comm_share: 0.35,
        }
    }
}

/// The symptoms a window shows, each with its score relative to its threshold (≥ 1.0 when present).
pub fn symptoms_of(f: &WindowFeatures, t: &SymptomThresholds) -> Vec<(Symptom, f64)> {
    let mut out = Vec::new();
    if f.loss_non_finite > 0 {
        // Always an incident: twice the threshold whatever the count.
        out.push((
            Symptom::LossDivergence,
            2.0 + f.loss_non_finite as f64 - 1.0,
        ));
    }
    if f.warmup {
        return out;
    }
    // Loss-only telemetry, or no step-time baseline yet: only the loss is judged.
    let timed = f.step_time_baseline_ms.is_some() && f.step_time_available;
    let loss_drift = (f.loss_cusum >= t.loss_cusum
        && f.loss_ratio.is_some_and(|r| r >= t.loss_ratio))
    .then(|| (Symptom::LossDrift, f.loss_cusum / t.loss_cusum));
    if !timed {
        out.extend(loss_drift);
        return out;
    }
    if f.stall_score >= t.stall_score && f.step_time_max_ms >= t.stall_min_ms {
        out.push((Symptom::Stall, f.stall_score / t.stall_score));
    }
    let wait = f.data_wait_share.unwrap_or(0.0);
    if f.straggler_score >= t.straggler_score || wait >= t.data_wait_share {
        out.push((
            Symptom::InputStraggler,
            (f.straggler_score / t.straggler_score).max(wait / t.data_wait_share),
        ));
    }
    // A burst is intermittent: a tail blow-up under a steady median, or a whole slow window amid
    // recent slow steps, but never a shift that has lasted two windows (that is drift).
    // In a short window (a sparse log: one record every N steps) the tail is its slowest step: one
    // slow step is a blip, not a burst (Megatron golden values: a lone 27 s iteration among 9 s).
    let slow_steps = (f.slow_step_share * f.window.samples as f64).round();
    let tail_blowup = f.burst_score >= t.burst_score
        && f.step_time_ratio < t.burst_max_step_ratio
        && slow_steps >= 2.0;
    let slow_window = f.slow_step_share >= t.burst_slow_share
        && f.slow_step_share_recent >= t.burst_slow_share_recent;
    if f.elevated_windows < 2 && (tail_blowup || slow_window) {
        let score = (f.burst_score / t.burst_score)
            .max(f.slow_step_share_recent / t.burst_slow_share_recent);
        out.push((Symptom::Burst, score));
    }
    if f.step_time_cusum >= t.step_cusum
        && f.step_time_ratio >= t.step_ratio
        && f.elevated_windows >= 2
    {
        out.push((Symptom::StepTimeDrift, f.step_time_cusum / t.step_cusum));
    }
    out.extend(loss_drift);
    if f.comm_share.is_some_and(|c| c >= t.comm_share) {
        out.push((
            Symptom::CommBound,
            f.comm_share.unwrap_or(0.0) / t.comm_share,
        ));
    }
    out
}

/// A run of windows showing the same symptom (up to [`EPISODE_GAP_WINDOWS`] quiet windows do not end it).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Episode {
    pub symptom: Symptom,
    pub first_step: u64,
    pub last_step: u64,
    pub start_ms: Option<i64>,
    pub end_ms: Option<i64>,
    pub windows: u64,
    /// Highest score / threshold seen.
    pub peak: f64,
    /// "high" (≥ 2× threshold, or a lasting episode), "medium" or "low" (a single marginal window).
    pub confidence: &'static str,
}

impl Episode {
    fn confidence_of(peak: f64, windows: u64) -> &'static str {
        if peak >= 2.0 || windows >= 3 {
            "high"
        } else if windows >= 2 || peak >= 1.3 {
            "medium"
        } else {
            "low"
        }
    }
}

/// Quiet windows tolerated inside one episode (intermittent incidents are one episode, not many).
pub const EPISODE_GAP_WINDOWS: u64 = 2;

/// Builds episodes from the per-window symptoms, streaming, with memory bounded by the number of
/// symptom kinds (finished episodes are returned to the caller).
#[derive(Default)]
pub struct EpisodeTracker {
    open: Vec<(Episode, u64)>,
}

impl EpisodeTracker {
    /// Feeds one window; returns the episodes that ended before it.
    pub fn push(&mut self, f: &WindowFeatures, found: &[(Symptom, f64)]) -> Vec<Episode> {
        let idx = f.window.index;
        let mut ended = Vec::new();
        for (sym, score) in found {
            match self.open.iter_mut().find(|(e, _)| e.symptom == *sym) {
                Some((e, last)) => {
                    e.last_step = f.window.last_step;
                    e.end_ms = f.window.end_ms.or(e.end_ms);
                    e.windows += 1;
                    e.peak = e.peak.max(*score);
                    *last = idx;
                }
                None => self.open.push((
                    Episode {
                        symptom: *sym,
                        first_step: f.window.first_step,
                        last_step: f.window.last_step,
                        start_ms: f.window.start_ms,
                        end_ms: f.window.end_ms,
                        windows: 1,
                        peak: *score,
                        confidence: "low",
                    },
                    idx,
                )),
            }
        }
        let mut i = 0;
        while i < self.open.len() {
            if idx > self.open[i].1 + EPISODE_GAP_WINDOWS {
                ended.push(Self::close(self.open.remove(i).0));
            } else {
                i += 1;
            }
        }
        ended
    }

    fn close(mut e: Episode) -> Episode {
        e.confidence = Episode::confidence_of(e.peak, e.windows);
        e
    }

    pub fn finish(&mut self) -> Vec<Episode> {
        self.open.drain(..).map(|(e, _)| Self::close(e)).collect()
    }
}
