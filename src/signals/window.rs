//! Groups ordered samples into windows of `window_steps` consecutive step numbers (steps 1..=N form
//! window 0) and reduces each window to [`WindowStats`]. Windows are keyed by step numbers, never by
//! gaps between records, so sparse logging (a record every N steps) does not look like a stall.
//!
//! A window is also bounded in time (issue 12: it is judged when it closes). Once the run's pace is
//! known (the median step time of its first records), a window closes early at the record that
//! makes either true: its steps have taken [`WALL_CAP`] times its nominal duration (`window_steps` ×
//! the pace), or it holds [`EARLY_SLOW_STEPS`] separate slow spikes. The next window starts after it
//! with `window_steps` steps of its own. Steps that got six times slower would otherwise stretch a
//! window, and the delay before it is judged, sixfold. The time is the window's own step times
//! (mean × steps covered), not timestamps, so pauses, restarts and planned slow steps (whose step
//! time is set aside) never close a window.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::planned::{PlannedCounts, PlannedSteps};
use super::quantile::{median_in_place, quantile_in_place, quantile_sorted};
use crate::telemetry::Sample;

/// Per-window sample vectors are capped so a huge `--window-steps` cannot exhaust memory; sums and
/// maxima still see every sample.
const MAX_SAMPLES_PER_WINDOW: usize = 65_536;
const MAX_WORKERS: usize = 1024;
const MAX_SOURCES: usize = 1024;

/// Reduced statistics of one window (before baselines are applied).
#[derive(Debug, Clone, PartialEq)]
pub struct WindowStats {
    pub index: u64,
    pub first_step: u64,
    pub last_step: u64,
    pub start_ms: Option<i64>,
    pub end_ms: Option<i64>,
    pub samples: u64,
    /// Samples that carried a step time (0 in loss-only telemetry: time features are unavailable).
    pub step_time_samples: u64,
    /// Planned slow steps (evaluation, checkpoint, resume) set aside: not in the step-time statistics.
    pub planned_steps: u64,
    /// Records whose loss was NaN or infinite, and the first such step.
    pub loss_non_finite: u64,
    pub loss_non_finite_step: Option<u64>,
    /// The step's planned shape (global batch size or sequence length) changed inside this window.
    pub shape_changed: bool,
    pub step_time_p50_ms: f64,
    pub step_time_p95_ms: f64,
    pub step_time_p99_ms: f64,
    pub step_time_max_ms: f64,
    pub step_time_mean_ms: f64,
    /// Step time minus data wait (what the accelerator and the collective spent).
    pub compute_p50_ms: f64,
    pub compute_p95_ms: f64,
    pub data_wait_share: Option<f64>,
    pub data_wait_p95_ms: Option<f64>,
    pub loss_mean: Option<f64>,
    pub loss_samples: u64,
    /// Median latency of each dataloader worker (by position in `worker_latencies_ms`), zeros ignored.
    pub worker_medians_ms: Vec<f64>,
    /// Median step time of each emitting process (rank, else node), when more than one is present.
    pub source_medians_ms: Vec<f64>,
    pub gpu_util_mean: Option<f64>,
    pub gpu_util_min: Option<f64>,
    pub gpu_mem_util_mean: Option<f64>,
    pub gpu_mem_util_max: Option<f64>,
    pub comm_share: Option<f64>,
    /// The window's step times, ascending (capped like every per-window vector).
    pub step_times_sorted: Vec<f64>,
}

/// A window closes once its steps took this many times its nominal duration.
pub const WALL_CAP: f64 = 2.0;
/// ...or once it holds this many separate slow spikes (a step [`EARLY_SLOW_RATIO`] × the previous
/// window's median after one that was not): enough to judge a straggler or a bursty phase now
/// rather than at the window's last step. Windows of the H100 traces' NORMAL segments hold at most
/// 3 slow steps. A run of consecutive slow steps is one spike: whether it is a burst or a drift
/// depends on how long it lasts, which shorter windows would misjudge.
pub const EARLY_SLOW_STEPS: u64 = 5;
pub const EARLY_SLOW_RATIO: f64 = 1.5;

#[derive(Default, serde::Serialize, serde::Deserialize)]
struct Acc {
    index: u64,
    /// The window's cell of the step grid (`(step - origin) / window_steps`).
    grid: u64,
    /// Slow spikes (see [`EARLY_SLOW_STEPS`]), counted while paced.
    slow: u64,
    first_step: u64,
    last_step: u64,
    start_ms: Option<i64>,
    end_ms: Option<i64>,
    n: u64,
    time_n: u64,
    planned: u64,
    loss_non_finite: u64,
    loss_non_finite_step: Option<u64>,
    shape_changed: bool,
    step_times: Vec<f64>,
    compute: Vec<f64>,
    step_time_sum: f64,
    step_time_max: f64,
    data_wait: Vec<f64>,
    data_wait_sum: f64,
    step_time_sum_with_wait: f64,
    loss_sum: f64,
    loss_n: u64,
    workers: Vec<Vec<f64>>,
    sources: BTreeMap<(u32, Option<Arc<str>>), Vec<f64>>,
    gpu_util_sum: f64,
    gpu_util_n: u64,
    gpu_util_min: f64,
    gpu_mem_sum: f64,
    gpu_mem_n: u64,
    gpu_mem_max: f64,
    comm_sum: f64,
    comm_step_sum: f64,
    comm_n: u64,
}

fn mean(sum: f64, n: u64) -> Option<f64> {
    (n > 0).then(|| sum / n as f64)
}

impl Acc {
    fn add(&mut self, s: &Sample, step: u64) {
        if self.n == 0 {
            self.first_step = step;
            self.gpu_util_min = f64::INFINITY;
            self.gpu_mem_max = f64::NEG_INFINITY;
        }
        self.n += 1;
        self.last_step = self.last_step.max(step);
        self.first_step = self.first_step.min(step);
        if let Some(ts) = s.ts_ms {
            self.start_ms = Some(self.start_ms.map_or(ts, |x| x.min(ts)));
            self.end_ms = Some(self.end_ms.map_or(ts, |x| x.max(ts)));
        }
        if s.loss_non_finite {
            self.loss_non_finite += 1;
            self.loss_non_finite_step.get_or_insert(step);
        }
        if let Some(l) = s.loss {
            self.loss_sum += l;
            self.loss_n += 1;
        }
        let Some(st) = s.step_time_ms else {
            return;
        };
        self.time_n += 1;
        let keep = self.step_times.len() < MAX_SAMPLES_PER_WINDOW;
        if keep {
            self.step_times.push(st);
            self.compute
                .push((st - s.data_wait_ms.unwrap_or(0.0)).max(0.0));
        }
        self.step_time_sum += st;
        self.step_time_max = self.step_time_max.max(st);
        if let Some(dw) = s.data_wait_ms {
            if keep {
                self.data_wait.push(dw);
            }
            self.data_wait_sum += dw;
            self.step_time_sum_with_wait += st;
        }
        if keep {
            for (i, w) in s.worker_latencies_ms.iter().take(MAX_WORKERS).enumerate() {
                if *w <= 0.0 {
                    continue;
                }
                if self.workers.len() <= i {
                    self.workers.resize_with(i + 1, Vec::new);
                }
                self.workers[i].push(*w);
            }
            if s.rank.is_some() || s.node.is_some() {
                let key = (s.rank.unwrap_or(u32::MAX), s.node.clone());
                if self.sources.len() < MAX_SOURCES || self.sources.contains_key(&key) {
                    self.sources.entry(key).or_default().push(st);
                }
            }
        }
        if let Some(g) = s.gpu_util_pct {
            self.gpu_util_sum += g;
            self.gpu_util_n += 1;
            self.gpu_util_min = self.gpu_util_min.min(g);
        }
        if let Some(g) = s.gpu_mem_util_pct {
            self.gpu_mem_sum += g;
            self.gpu_mem_n += 1;
            self.gpu_mem_max = self.gpu_mem_max.max(g);
        }
        if let Some(c) = s.comm_ms {
            self.comm_sum += c;
            self.comm_step_sum += st;
            self.comm_n += 1;
        }
    }

    /// An empty accumulator for window `index` that keeps this one's buffers (a window is only ~50
    /// samples: growing fresh vectors for every window was a third of the windower's time).
    fn recycle(mut self, index: u64, grid: u64) -> Acc {
        let keep = |v: &mut Vec<f64>| {
            let mut v = std::mem::take(v);
            v.clear();
            v
        };
        let (step_times, compute, data_wait) = (
            keep(&mut self.step_times),
            keep(&mut self.compute),
            keep(&mut self.data_wait),
        );
        let mut workers = std::mem::take(&mut self.workers);
        workers.iter_mut().for_each(Vec::clear);
        Acc {
            index,
            grid,
            step_times,
            compute,
            data_wait,
            workers,
            ..Acc::default()
        }
    }

    /// The window's statistics. Leaves the buffers reordered; the accumulator is recycled after.
    fn finish(&mut self) -> WindowStats {
        // Only the step times are needed sorted (slow-step shares); the rest by selection.
        self.step_times.sort_unstable_by(f64::total_cmp);
        let q = |v: &[f64], p| quantile_sorted(v, p).unwrap_or(0.0);
        let compute_p50_ms = quantile_in_place(&mut self.compute, 0.5).unwrap_or(0.0);
        let compute_p95_ms = quantile_in_place(&mut self.compute, 0.95).unwrap_or(0.0);
        let data_wait_p95_ms = quantile_in_place(&mut self.data_wait, 0.95);
        let worker_medians_ms = self
            .workers
            .iter_mut()
            .filter_map(|w| median_in_place(w))
            .collect();
        let source_medians_ms = if self.sources.len() > 1 {
            self.sources
                .values_mut()
                .filter_map(|v| median_in_place(v))
                .collect()
        } else {
            Vec::new()
        };
        let share = |num: f64, den: f64, n: u64| (n > 0 && den > 0.0).then(|| num / den);
        WindowStats {
            index: self.index,
            first_step: self.first_step,
            last_step: self.last_step,
            start_ms: self.start_ms,
            end_ms: self.end_ms,
            samples: self.n,
            step_time_samples: self.time_n,
            planned_steps: self.planned,
            loss_non_finite: self.loss_non_finite,
            loss_non_finite_step: self.loss_non_finite_step,
            shape_changed: self.shape_changed,
            step_time_p50_ms: q(&self.step_times, 0.5),
            step_time_p95_ms: q(&self.step_times, 0.95),
            step_time_p99_ms: q(&self.step_times, 0.99),
            step_time_max_ms: self.step_time_max,
            step_time_mean_ms: mean(self.step_time_sum, self.time_n).unwrap_or(0.0),
            compute_p50_ms,
            compute_p95_ms,
            data_wait_share: share(
                self.data_wait_sum,
                self.step_time_sum_with_wait,
                self.data_wait.len() as u64,
            ),
            data_wait_p95_ms,
            loss_mean: mean(self.loss_sum, self.loss_n),
            loss_samples: self.loss_n,
            worker_medians_ms,
            source_medians_ms,
            gpu_util_mean: mean(self.gpu_util_sum, self.gpu_util_n),
            gpu_util_min: (self.gpu_util_n > 0).then_some(self.gpu_util_min),
            gpu_mem_util_mean: mean(self.gpu_mem_sum, self.gpu_mem_n),
            gpu_mem_util_max: (self.gpu_mem_n > 0).then_some(self.gpu_mem_max),
            comm_share: share(self.comm_sum, self.comm_step_sum, self.comm_n),
            step_times_sorted: self.step_times.clone(),
        }
    }
}

/// Streams samples into windows. Samples must arrive in step order (the ingest orderer guarantees it).
#[derive(serde::Serialize, serde::Deserialize)]
pub struct Windower {
    /// At least 1; a checkpoint saying 0 is refused (it would divide by zero).
    #[serde(deserialize_with = "at_least_one")]
    window_steps: u64,
    acc: Option<Acc>,
    /// The previous window's accumulator, for its buffers.
    #[serde(skip)]
    spare: Option<Acc>,
    planned: PlannedSteps,
    /// The last (global batch size, sequence length) seen.
    shape: (Option<u32>, Option<u32>),
    /// The run's usual step time (ms), once known: windows are then capped in wall time.
    pace_ms: Option<f64>,
    /// The step grid: cells of `window_steps` steps from `origin`, the first numbered `base`. A
    /// window closed by the wall cap restarts the grid after its last step, so the steps after it
    /// get a whole window, not the few left in its cell.
    origin: u64,
    base: u64,
    /// The previous window's median step time (the pace before the first window): what a slow
    /// step is measured against.
    reference_ms: Option<f64>,
    /// The last timed step was slow (a slow step after it continues the same spike).
    last_slow: bool,
}

fn at_least_one<'de, D: serde::Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    match <u64 as serde::Deserialize>::deserialize(d)? {
        0 => Err(serde::de::Error::custom("window_steps is 0")),
        n => Ok(n),
    }
}

impl Windower {
    pub fn new(window_steps: u64) -> Self {
        Windower {
            window_steps: window_steps.max(1),
            acc: None,
            spare: None,
            planned: PlannedSteps::default(),
            shape: (None, None),
            pace_ms: None,
            origin: 1,
            base: 0,
            reference_ms: None,
            last_slow: false,
        }
    }

    /// Caps windows at [`WALL_CAP`] × `window_steps` × `pace_ms` of step time (no cap without a
    /// positive, finite pace).
    pub fn paced(mut self, pace_ms: Option<f64>) -> Self {
        self.pace_ms = pace_ms.filter(|p| p.is_finite() && *p > 0.0);
        self.reference_ms = self.pace_ms;
        self
    }

    /// Whether the open window closes now: it holds [`EARLY_SLOW_STEPS`] slow spikes, or its steps
    /// have taken the capped wall time (the mean step time of its timed records times the steps it
    /// covers: sparse logging counts the steps between records).
    fn closes_early(&self) -> bool {
        let (Some(pace), Some(a)) = (self.pace_ms, &self.acc) else {
            return false;
        };
        if a.slow >= EARLY_SLOW_STEPS {
            return true;
        }
        if a.time_n == 0 {
            return false;
        }
        // Saturating: the accumulator may come from a checkpoint (untrusted bytes).
        let covered = a.last_step.saturating_sub(a.first_step).saturating_add(1) as f64;
        let spent = a.step_time_sum / a.time_n as f64 * covered;
        spent >= WALL_CAP * self.window_steps as f64 * pace
    }

    pub fn window_steps(&self) -> u64 {
        self.window_steps
    }

    /// What was set aside as planned slow steps so far.
    pub fn planned(&self) -> PlannedCounts {
        self.planned.counts
    }

    /// Adds a sample; returns the previous window when this sample starts a new one. A planned slow
    /// step keeps its loss but not its step time.
    pub fn push(&mut self, s: &Sample) -> Option<WindowStats> {
        if self.planned.classify(s).is_some() {
            let mut aside = s.clone();
            aside.step_time_ms = None;
            return self.add(&aside, true);
        }
        self.add(s, false)
    }

    fn add(&mut self, s: &Sample, planned: bool) -> Option<WindowStats> {
        let shape = (
            s.global_batch_size.or(self.shape.0),
            s.seq_len.or(self.shape.1),
        );
        let changed = shape != self.shape && self.shape != (None, None);
        self.shape = shape;
        let step = s.step.unwrap_or(0);
        let grid = step.saturating_sub(self.origin) / self.window_steps;
        let mut done = None;
        if self.acc.as_ref().is_some_and(|a| a.grid != grid) {
            done = self.close();
        }
        let index = grid.saturating_add(self.base);
        self.acc
            .get_or_insert_with(|| match self.spare.take() {
                Some(old) => old.recycle(index, grid),
                None => Acc {
                    index,
                    grid,
                    ..Acc::default()
                },
            })
            .add(s, step);
        if let Some(acc) = &mut self.acc {
            acc.planned += u64::from(planned);
            acc.shape_changed |= changed;
            if let (Some(t), Some(r)) = (s.step_time_ms, self.reference_ms) {
                let slow = t >= EARLY_SLOW_RATIO * r;
                acc.slow += u64::from(slow && !self.last_slow);
                self.last_slow = slow;
            }
        }
        // A window that just opened holds one record and cannot be over the cap: at most one
        // window is returned per sample.
        if done.is_none() && self.closes_early() {
            done = self.close();
            if let Some(d) = &done {
                self.origin = d.last_step.saturating_add(1);
                self.base = d.index.saturating_add(1);
            }
        }
        done
    }

    fn close(&mut self) -> Option<WindowStats> {
        let mut acc = self.acc.take()?;
        let stats = acc.finish();
        if self.pace_ms.is_some() && stats.step_time_samples > 0 {
            self.reference_ms = Some(stats.step_time_p50_ms).filter(|r| *r > 0.0);
        }
        self.spare = Some(acc);
        Some(stats)
    }

    /// Closes the last, possibly partial, window.
    pub fn finish(&mut self) -> Option<WindowStats> {
        self.acc.take().as_mut().map(Acc::finish)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    fn sample(step: u64) -> Sample {
        // Windows differ in shape: workers, sources, optional fields come and go.
        let w = step / 10;
        Sample {
            ts_ms: (!w.is_multiple_of(3)).then_some(step as i64 * 100),
            step: Some(step),
            step_time_ms: Some(20.0 + (step * 7 % 13) as f64),
            loss: w.is_multiple_of(2).then_some(1.0 / step as f64),
            data_wait_ms: (w % 4 != 1).then_some((step % 5) as f64),
            worker_latencies_ms: (0..(w % 5)).map(|i| (i + step % 3) as f64).collect(),
            gpu_util_pct: (w % 3 == 1).then_some(90.0),
            gpu_mem_util_pct: (w % 3 == 2).then_some(40.0),
            comm_ms: (w % 2 == 1).then_some(2.5),
            node: (w % 4 < 2).then(|| Arc::from(format!("n{}", step % (1 + w % 3)))),
            rank: (w % 4 == 3).then_some((step % 2) as u32),
            ..Default::default()
        }
    }

    /// Found by the watch_state fuzz target (reproducer crafted from its seed): a state file whose
    /// windower says `window_steps: 0` decoded, and the next sample divided by zero.
    #[test]
    fn a_checkpoint_with_zero_window_steps_is_refused() {
        let mut bytes = postcard::to_allocvec(&Windower::new(5)).unwrap();
        assert_eq!(bytes[0], 5);
        assert!(postcard::from_bytes::<Windower>(&bytes).is_ok());
        bytes[0] = 0;
        assert!(postcard::from_bytes::<Windower>(&bytes).is_err());
    }

    #[test]
    fn a_recycled_window_reduces_like_a_fresh_one() {
        let mut long = Windower::new(10);
        let mut got = Vec::new();
        for step in 1..=400 {
            got.extend(long.push(&sample(step)));
        }
        got.extend(long.finish());
        let want: Vec<WindowStats> = (0..40)
            .map(|w| {
                let mut fresh = Windower::new(10);
                for step in w * 10 + 1..=w * 10 + 10 {
                    assert!(fresh.push(&sample(step)).is_none());
                }
                fresh.finish().unwrap()
            })
            .collect();
        assert_eq!(got, want);
    }

    fn timed(step: u64, ms: f64) -> Sample {
        Sample {
            step: Some(step),
            ts_ms: Some(step as i64 * 10),
            step_time_ms: Some(ms),
            ..Default::default()
        }
    }

    fn ranges(w: &mut Windower, samples: impl IntoIterator<Item = Sample>) -> Vec<(u64, u64, u64)> {
        let mut out: Vec<WindowStats> = samples.into_iter().filter_map(|s| w.push(&s)).collect();
        out.extend(w.finish());
        out.iter()
            .map(|s| (s.index, s.first_step, s.last_step))
            .collect()
    }

    /// Steps five times slower than the pace fill a window's wall time (2 × 10 steps × 10 ms) in
    /// four steps: the window closes there, not after ten (issue 12: a drift stretched windows
    /// sixfold, and the delay before they were judged with them).
    #[test]
    fn slow_steps_close_a_window_at_twice_its_wall_time() {
        let mut w = Windower::new(10).paced(Some(10.0));
        let samples = (1..=30).map(|s| timed(s, if (11..=20).contains(&s) { 50.0 } else { 10.0 }));
        assert_eq!(
            ranges(&mut w, samples),
            [
                (0, 1, 10),
                (1, 11, 14),
                (2, 15, 18),
                (3, 19, 28),
                (4, 29, 30)
            ]
        );
        // Without a pace, windows are the step grid alone.
        let mut w = Windower::new(10);
        let samples = (1..=30).map(|s| timed(s, if (11..=20).contains(&s) { 50.0 } else { 10.0 }));
        assert_eq!(
            ranges(&mut w, samples),
            [(0, 1, 10), (1, 11, 20), (2, 21, 30)]
        );
    }

    /// A window's time is its steps' own times: sparse logging (a record every 5th step at the
    /// usual pace) and records without a step time never split it.
    #[test]
    fn sparse_and_untimed_records_keep_the_step_grid() {
        let mut w = Windower::new(10).paced(Some(10.0));
        let sparse = (1..=6).map(|i| timed(i * 5, 11.0));
        assert_eq!(
            ranges(&mut w, sparse),
            [(0, 5, 10), (1, 15, 20), (2, 25, 30)]
        );
        let mut w = Windower::new(10).paced(Some(10.0));
        let untimed = (1..=20).map(|s| Sample {
            step: Some(s),
            ts_ms: Some(s as i64 * 100_000),
            loss: Some(1.0),
            ..Default::default()
        });
        assert_eq!(ranges(&mut w, untimed), [(0, 1, 10), (1, 11, 20)]);
    }

    /// Every fourth step three times the pace (a straggling worker): the window closes at its fifth
    /// spike. Ten consecutive slow steps are one spike and leave the grid alone.
    #[test]
    fn five_slow_spikes_close_a_window() {
        let mut w = Windower::new(50).paced(Some(10.0));
        let spiky = (1..=100).map(|s| timed(s, if s % 4 == 0 { 30.0 } else { 10.0 }));
        let got = ranges(&mut w, spiky);
        assert_eq!(got[..3], [(0, 1, 20), (1, 21, 40), (2, 41, 60)]);
        let mut w = Windower::new(50).paced(Some(10.0));
        let run = (1..=100).map(|s| timed(s, if (11..=20).contains(&s) { 15.0 } else { 10.0 }));
        assert_eq!(ranges(&mut w, run), [(0, 1, 50), (1, 51, 100)]);
        // Slow is measured against the previous window's median: a run that settled at a slower
        // pace gets whole windows again.
        let mut w = Windower::new(10).paced(Some(10.0));
        let slower = (1..=40).map(|s| timed(s, if s % 2 == 0 { 10.0 } else { 16.0 }));
        let got = ranges(&mut w, slower);
        assert_eq!(got[0], (0, 1, 9), "five spikes against the pace");
        assert!(
            got[1..].iter().all(|(_, a, b)| b - a + 1 == 10 || *b == 40),
            "{got:?}"
        );
    }

    #[test]
    fn a_pace_that_is_not_a_positive_number_caps_nothing() {
        for pace in [
            Some(0.0),
            Some(-1.0),
            Some(f64::NAN),
            Some(f64::INFINITY),
            None,
        ] {
            let mut w = Windower::new(10).paced(pace);
            let samples = (1..=20).map(|s| timed(s, 1e6));
            assert_eq!(
                ranges(&mut w, samples),
                [(0, 1, 10), (1, 11, 20)],
                "{pace:?}"
            );
        }
    }
}
