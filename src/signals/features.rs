//! From [`WindowStats`] to [`WindowFeatures`]: applies the slowly adapting baselines, the change-point
//! scores and the ratio features. Stateful across windows, but pure: no clock, no I/O.

use serde::{Deserialize, Serialize};

use super::baseline::{RobustBaseline, UpperCusum};
use super::quantile::median_in_place;
use super::window::WindowStats;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct FeatureConfig {
    pub window_steps: u64,
    pub warmup_steps: u64,
}

/// The step and time range a window covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct WindowRange {
    pub index: u64,
    pub first_step: u64,
    pub last_step: u64,
    pub start_ms: Option<i64>,
    pub end_ms: Option<i64>,
    pub samples: u64,
}

/// Everything a chord policy sees about one window. Field meanings and formulas: docs/signals.md.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WindowFeatures {
    pub window: WindowRange,
    /// The window lies (partly) inside the warm-up; baselines ignore it and no symptom is raised.
    pub warmup: bool,
    pub step_time_p50_ms: f64,
    pub step_time_p95_ms: f64,
    pub step_time_p99_ms: f64,
    pub step_time_max_ms: f64,
    /// Baseline median step time before this window (None until the warm-up is over).
    pub step_time_baseline_ms: Option<f64>,
    /// p50 / baseline.
    pub step_time_ratio: f64,
    /// Upper CUSUM of the robust z-score of log p50 against its baseline.
    pub step_time_cusum: f64,
    /// Consecutive windows, up to and including this one, whose p50 is at least
    /// [`ELEVATED_RATIO`]× the baseline: a lasting shift (drift) versus an intermittent one (burst).
    pub elevated_windows: u32,
    /// Share of this window's steps slower than [`SLOW_STEP_RATIO`]× the baseline median.
    pub slow_step_share: f64,
    /// Mean `slow_step_share` over the last [`RECENT_WINDOWS`] windows (including this one).
    pub slow_step_share_recent: f64,
    /// Tail blow-up of compute time (step time minus data wait): (p95/p50) / baseline (p95/p50).
    pub burst_score: f64,
    /// NVIDIA-Resiliency-Extension-style relative slowness: slowest worker (or rank) median over the
    /// median of all workers (ranks). 1.0 = balanced.
    pub straggler_score: f64,
    /// Index of the slowest dataloader worker, when worker latencies are present.
    pub slowest_worker: Option<u32>,
    pub worker_count: u32,
    /// Total data wait / total step time.
    pub data_wait_share: Option<f64>,
    pub data_wait_p95_ms: Option<f64>,
    /// Longest step / baseline median step time.
    pub stall_score: f64,
    pub loss_mean: Option<f64>,
    pub loss_baseline: Option<f64>,
    /// Mean loss / baseline.
    pub loss_ratio: Option<f64>,
    /// Upper CUSUM of the robust z-score of mean loss against its baseline (rising loss only).
    pub loss_cusum: f64,
    pub gpu_util_mean: Option<f64>,
    pub gpu_util_min: Option<f64>,
    pub gpu_mem_util_mean: Option<f64>,
    pub gpu_mem_util_max: Option<f64>,
    /// Total comm time / total step time, when `comm_ms` is reported.
    pub comm_share: Option<f64>,
    /// False when no record of the window carried a step time (loss-only telemetry): every
    /// step-time feature above is then neutral and nothing time-based is judged.
    #[serde(default = "yes", skip_serializing_if = "is_true")]
    pub step_time_available: bool,
    /// Records with a NaN or infinite loss (divergence), and the first such step.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub loss_non_finite: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub loss_non_finite_step: Option<u64>,
    /// Planned slow steps (evaluation, checkpoint, first step after a restart) set aside.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub planned_steps: u64,
    /// The planned step shape (global batch size, sequence length) changed in the previous window
    /// and held in this one: the step-time baselines start over here instead of calling the new step
    /// time a drift.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub rebaseline: bool,
}

fn yes() -> bool {
    true
}

fn is_true(b: &bool) -> bool {
    *b
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// Stateful extractor: feed windows in order.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct FeatureExtractor {
    cfg: FeatureConfig,
    /// log(p50 step time)
    step_level: Option<RobustBaseline>,
    step_cusum: UpperCusum,
    /// log(p95/p50) of compute time
    tail: Option<RobustBaseline>,
    loss: Option<RobustBaseline>,
    loss_cusum: UpperCusum,
    elevated_windows: u32,
    recent_slow: std::collections::VecDeque<f64>,
    /// The previous window saw the step shape change.
    shape_pending: bool,
}

/// p50 at or above this multiple of the baseline counts as an elevated window.
pub const ELEVATED_RATIO: f64 = 1.25;
/// A step slower than this multiple of the baseline median is a slow step.
pub const SLOW_STEP_RATIO: f64 = 1.5;
/// Horizon, in windows, of the "recent" features.
pub const RECENT_WINDOWS: usize = 8;

/// Relative noise floors: a 3 % change of median step time, 2 % of loss are within normal jitter.
const STEP_REL_FLOOR: f64 = 0.03;
const LOSS_REL_FLOOR: f64 = 0.02;
/// Typical p95/p50 of a healthy job, used before a tail baseline exists.
const DEFAULT_TAIL_RATIO: f64 = 1.15;

impl FeatureExtractor {
    pub fn new(cfg: FeatureConfig) -> Self {
        FeatureExtractor {
            cfg,
            step_level: None,
            step_cusum: UpperCusum::default(),
            tail: None,
            loss: None,
            loss_cusum: UpperCusum::default(),
            elevated_windows: 0,
            recent_slow: std::collections::VecDeque::with_capacity(RECENT_WINDOWS),
            shape_pending: false,
        }
    }

    pub fn config(&self) -> FeatureConfig {
        self.cfg
    }

    pub fn next(&mut self, w: &WindowStats) -> WindowFeatures {
        // A planned new step shape (batch size, sequence length) that then held for a whole window:
        // what was normal before says nothing about it. A shape that keeps changing (variable
        // sequence lengths) is the workload itself and is judged as usual.
        let rebaseline = self.shape_pending && !w.shape_changed;
        self.shape_pending = w.shape_changed;
        if rebaseline {
            self.step_level = None;
            self.step_cusum = UpperCusum::default();
            self.tail = None;
            self.elevated_windows = 0;
            self.recent_slow.clear();
        }
        let timed = w.step_time_samples > 0;
        let warmup = w.first_step <= self.cfg.warmup_steps;
        let p50 = w.step_time_p50_ms.max(1e-6);
        let log_p50 = p50.ln();

        let step_baseline_ms = self.step_level.map(|b| b.level().exp());
        let step_z = self.step_level.map_or(0.0, |b| b.z(log_p50));
        let step_time_cusum = if !timed {
            self.step_cusum.value()
        } else if warmup || self.step_level.is_none() {
            0.0
        } else {
            self.step_cusum.update(step_z)
        };
        let reference_ms = step_baseline_ms.unwrap_or(p50);

        let step_time_ratio = if timed { p50 / reference_ms } else { 1.0 };
        let (elevated_windows, slow_step_share, slow_step_share_recent) =
            if warmup || step_baseline_ms.is_none() || !timed {
                (0, 0.0, 0.0)
            } else {
                self.elevated_windows = if step_time_ratio >= ELEVATED_RATIO {
                    self.elevated_windows.saturating_add(1)
                } else {
                    0
                };
                let v = &w.step_times_sorted;
                let fast = v.partition_point(|x| *x <= SLOW_STEP_RATIO * reference_ms);
                let share = if v.is_empty() {
                    0.0
                } else {
                    (v.len() - fast) as f64 / v.len() as f64
                };
                // `while`: a restored checkpoint may hold more than RECENT_WINDOWS.
                while self.recent_slow.len() >= RECENT_WINDOWS {
                    self.recent_slow.pop_front();
                }
                self.recent_slow.push_back(share);
                let recent = self.recent_slow.iter().sum::<f64>() / RECENT_WINDOWS as f64;
                (self.elevated_windows, share, recent)
            };

        let tail = (w.compute_p95_ms.max(1e-6) / w.compute_p50_ms.max(1e-6)).max(1.0);
        let tail_base = self
            .tail
            .map_or(DEFAULT_TAIL_RATIO, |b| b.level().exp())
            .max(1.0);
        let burst_score = if timed { tail / tail_base } else { 1.0 };

        let (worker_score, slowest_worker) = relative_slowness(&w.worker_medians_ms);
        let (source_score, _) = relative_slowness(&w.source_medians_ms);

        let loss_baseline = self.loss.map(|b| b.level());
        let (loss_cusum, loss_ratio) = match (w.loss_mean, self.loss) {
            (Some(l), Some(b)) if !warmup => {
                let ratio = (b.level().abs() > 1e-12).then(|| l / b.level());
                (self.loss_cusum.update(b.z(l)), ratio)
            }
            _ => (self.loss_cusum.value(), None),
        };

        let f = WindowFeatures {
            window: WindowRange {
                index: w.index,
                first_step: w.first_step,
                last_step: w.last_step,
                start_ms: w.start_ms,
                end_ms: w.end_ms,
                samples: w.samples,
            },
            warmup,
            step_time_p50_ms: w.step_time_p50_ms,
            step_time_p95_ms: w.step_time_p95_ms,
            step_time_p99_ms: w.step_time_p99_ms,
            step_time_max_ms: w.step_time_max_ms,
            step_time_baseline_ms: step_baseline_ms,
            step_time_ratio,
            step_time_cusum,
            elevated_windows,
            slow_step_share,
            slow_step_share_recent,
            burst_score,
            straggler_score: worker_score.max(source_score),
            slowest_worker,
            worker_count: w.worker_medians_ms.len() as u32,
            data_wait_share: w.data_wait_share,
            data_wait_p95_ms: w.data_wait_p95_ms,
            stall_score: if timed {
                w.step_time_max_ms / reference_ms
            } else {
                0.0
            },
            loss_mean: w.loss_mean,
            loss_baseline,
            loss_ratio,
            loss_cusum,
            gpu_util_mean: w.gpu_util_mean,
            gpu_util_min: w.gpu_util_min,
            gpu_mem_util_mean: w.gpu_mem_util_mean,
            gpu_mem_util_max: w.gpu_mem_util_max,
            comm_share: w.comm_share,
            step_time_available: timed,
            loss_non_finite: w.loss_non_finite,
            loss_non_finite_step: w.loss_non_finite_step,
            planned_steps: w.planned_steps,
            rebaseline,
        };

        if !warmup && timed {
            match &mut self.step_level {
                Some(b) => b.update(log_p50),
                None => self.step_level = Some(RobustBaseline::new(log_p50, 0.0, STEP_REL_FLOOR)),
            }
            let log_tail = tail.ln();
            match &mut self.tail {
                Some(b) => b.update(log_tail),
                None => {
                    self.tail = Some(RobustBaseline::new(
                        log_tail.min(DEFAULT_TAIL_RATIO.ln()),
                        0.0,
                        0.05,
                    ))
                }
            }
        }
        if !warmup && let Some(l) = w.loss_mean {
            match &mut self.loss {
                Some(b) => b.update(l),
                None => self.loss = Some(RobustBaseline::new(l, LOSS_REL_FLOOR, 1e-9)),
            }
        }
        f
    }
}

/// (max / median) of per-worker (or per-rank) medians, and the index of the slowest; (1, None) when
/// fewer than two are known.
fn relative_slowness(medians: &[f64]) -> (f64, Option<u32>) {
    if medians.len() < 2 {
        return (1.0, None);
    }
    let (slowest, max) =
        medians
            .iter()
            .enumerate()
            .fold((0usize, f64::NEG_INFINITY), |(bi, bv), (i, v)| {
                if *v > bv { (i, *v) } else { (bi, bv) }
            });
    let mut sorted = medians.to_vec();
    let med = median_in_place(&mut sorted).unwrap_or(max);
    if med <= 0.0 {
        return (1.0, None);
    }
    (max / med, Some(slowest as u32))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::signals::Windower;
    use crate::telemetry::Sample;

    fn window(first_step: u64, step_time_ms: f64) -> WindowStats {
        let mut w = Windower::new(10);
        for step in first_step..first_step + 10 {
            w.push(&Sample {
                ts_ms: None,
                step: Some(step),
                step_time_ms: Some(step_time_ms),
                ..Default::default()
            });
        }
        w.finish().unwrap()
    }

    /// Found with the watch_state fuzz target (reproducers crafted from its seed): a watch state
    /// holding `elevated_windows: u32::MAX` overflowed on the next slow window, and one holding more
    /// than RECENT_WINDOWS recent shares never dropped any (the list grew by one per window).
    #[test]
    fn a_restored_extractor_at_its_limits_neither_overflows_nor_grows() {
        let mut ex = FeatureExtractor::new(FeatureConfig {
            window_steps: 10,
            warmup_steps: 0,
        });
        ex.next(&window(1, 10.0));
        ex.elevated_windows = u32::MAX;
        ex.recent_slow.extend([0.5; 20]);
        let f = ex.next(&window(11, 100.0));
        assert_eq!(f.elevated_windows, u32::MAX);
        assert_eq!(ex.recent_slow.len(), RECENT_WINDOWS);
    }

    #[test]
    fn slowness() {
        assert_eq!(relative_slowness(&[1.0]), (1.0, None));
        let (s, i) = relative_slowness(&[8.0, 8.0, 240.0, 8.0]);
        assert_eq!(i, Some(2));
        assert!((s - 30.0).abs() < 1e-9);
    }
}
