//! Groups ordered samples into windows of `window_steps` consecutive step numbers (steps 1..=N form
//! window 0) and reduces each window to [`WindowStats`]. Windows are keyed by step numbers, never by
//! gaps between records, so sparse logging (a record every N steps) does not look like a stall.

use std::collections::BTreeMap;
use std::sync::Arc;

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

#[derive(Default, serde::Serialize, serde::Deserialize)]
struct Acc {
    index: u64,
    first_step: u64,
    last_step: u64,
    start_ms: Option<i64>,
    end_ms: Option<i64>,
    n: u64,
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
        let st = s.step_time_ms;
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
        if let Some(l) = s.loss {
            self.loss_sum += l;
            self.loss_n += 1;
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
    fn recycle(mut self, index: u64) -> Acc {
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
            step_time_p50_ms: q(&self.step_times, 0.5),
            step_time_p95_ms: q(&self.step_times, 0.95),
            step_time_p99_ms: q(&self.step_times, 0.99),
            step_time_max_ms: self.step_time_max,
            step_time_mean_ms: self.step_time_sum / self.n as f64,
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
        }
    }

    pub fn window_steps(&self) -> u64 {
        self.window_steps
    }

    /// Adds a sample; returns the previous window when this sample starts a new one.
    pub fn push(&mut self, s: &Sample) -> Option<WindowStats> {
        let step = s.step.unwrap_or(0);
        let index = step.saturating_sub(1) / self.window_steps;
        let mut done = None;
        if self.acc.as_ref().is_some_and(|a| a.index != index) {
            let mut acc = self.acc.take();
            done = acc.as_mut().map(Acc::finish);
            self.spare = acc;
        }
        self.acc
            .get_or_insert_with(|| match self.spare.take() {
                Some(old) => old.recycle(index),
                None => Acc {
                    index,
                    ..Acc::default()
                },
            })
            .add(s, step);
        done
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
            step_time_ms: 20.0 + (step * 7 % 13) as f64,
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
}
