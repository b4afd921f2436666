//! From one window's features (and a little history kept in the state) to incident evidence.
//! Thresholds are calibrated on real H100 traces (docs/policy-authoring.md explains how) and read
//! only features the host computes from telemetry, never the trace's labels.

use modekeeper_policy_sdk::Features;

use crate::state::State;

/// Slowest worker at least this many times its peers' median: one dataloader worker lags.
pub const STRAGGLER_SCORE: f64 = 2.0;
/// Or steps wait on input for at least this share of their time.
pub const DATA_WAIT_SHARE: f64 = 0.2;
/// Compute-time p95/p50 at least this many times its baseline, with a steady median: a burst.
pub const BURST_SCORE: f64 = 1.5;
/// ...where "steady" means p50 below this multiple of the baseline.
pub const BURST_MAX_RATIO: f64 = 1.3;
/// A window whose p50 is at least this multiple of the baseline is elevated.
pub const ELEVATED_RATIO: f64 = 1.25;
/// Half of a window's steps this slow makes it a slow window (a burst if it does not last).
pub const SLOW_WINDOW_SHARE: f64 = 0.5;
/// Consecutive elevated windows that make a drift (one is a burst candidate, not a drift).
pub const DRIFT_WINDOWS: u32 = 2;
/// Step-time CUSUM needed for a drift.
pub const DRIFT_CUSUM: f64 = 5.0;
/// Burst evidence needed within the last [`BURST_HORIZON`] windows before BURST-ABSORB fires...
pub const BURST_CONFIRM: u32 = 2;
pub const BURST_HORIZON: u32 = 4;
/// ...or a lone slow window confirmed (its median came back), or, in one window with a tail burst,
/// at least this many slow steps (1.5x the baseline)
/// making up at least [`BURST_SLOW_SHARE`] of it: a run of slow steps, not a one-off blip. The
/// count, not a second window, confirms it, so the delay does not grow with the window's length
/// (NORMAL windows of the H100 traces show at most 3 slow steps in 50).
pub const BURST_SLOW_STEPS: f64 = 5.0;
pub const BURST_SLOW_SHARE: f64 = 0.1;
/// A window's p95 is its maximum below 20 steps: one outlier would make a tail, so a shorter
/// window (one the host closed early) needs the second window.
pub const BURST_MIN_SAMPLES: u64 = 20;
/// Longest step at least this many baseline medians...
pub const STALL_SCORE: f64 = 20.0;
/// ...and at least this share of the job's `timeout_ms` (or [`STALL_MIN_MS`] without it): a stall
/// that came near the watchdog, not a recompilation hiccup.
pub const STALL_TIMEOUT_SHARE: f64 = 0.5;
pub const STALL_MIN_MS: f64 = 2500.0;
/// Rising loss: CUSUM and ratio against its baseline.
pub const LOSS_CUSUM: f64 = 5.0;
pub const LOSS_RATIO: f64 = 1.1;

/// Incident kinds, as bits of a mask.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Stall = 0,
    Drift = 1,
    Straggler = 2,
    Burst = 3,
}

impl Kind {
    /// In priority order: the first present is the primary chord.
    pub const ALL: [Kind; 4] = [Kind::Stall, Kind::Drift, Kind::Straggler, Kind::Burst];

    pub fn bit(self) -> u8 {
        1 << (self as u8)
    }
}

/// What one window shows. Scores are relative to their thresholds (≥ 1.0 when present).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Evidence {
    pub straggler: Option<f64>,
    pub burst: Option<f64>,
    pub drift: Option<f64>,
    pub stall: Option<f64>,
    pub loss_drift: Option<f64>,
}

impl Evidence {
    pub fn score(&self, k: Kind) -> Option<f64> {
        match k {
            Kind::Stall => self.stall,
            Kind::Drift => self.drift,
            Kind::Straggler => self.straggler,
            Kind::Burst => self.burst,
        }
    }

    pub fn mask(&self) -> u8 {
        Kind::ALL
            .iter()
            .filter(|k| self.score(**k).is_some())
            .fold(0, |m, k| m | k.bit())
    }
}

/// The window's evidence; updates the history fields of `st` (elevated run, burst history).
pub fn read(f: &Features, timeout_ms: Option<f64>, st: &mut State) -> Evidence {
    let mut e = Evidence::default();
    let ratio = f.step_time_ratio;
    let elevated = ratio >= ELEVATED_RATIO;

    // A slow window seen last time is burst evidence only once the median came back down.
    let confirmed_slow = st.pending_slow && !elevated;
    st.elevated_run = if elevated {
        st.elevated_run.saturating_add(1)
    } else {
        0
    };
    let slow_share = f.slow_step_share.unwrap_or(0.0);
    st.pending_slow = elevated && st.elevated_run == 1 && slow_share >= SLOW_WINDOW_SHARE;

    let wait = f.data_wait_share.unwrap_or(0.0);
    let straggler = (f.straggler_score / STRAGGLER_SCORE).max(wait / DATA_WAIT_SHARE);
    if straggler >= 1.0 {
        e.straggler = Some(straggler);
    }

    let tail = f.burst_score / BURST_SCORE;
    let tail_burst = tail >= 1.0 && ratio < BURST_MAX_RATIO;
    let burst_now = tail_burst || confirmed_slow;
    st.burst_history = (st.burst_history << 1) | u8::from(burst_now);
    let recent = (st.burst_history & ((1u8 << BURST_HORIZON) - 1)).count_ones();
    let slow_steps = slow_share * f.window.samples as f64;
    // A lone slow window (half its steps slow) whose median came back is a run of slow steps that
    // ended: a burst by itself.
    let sustained = confirmed_slow
        || tail_burst
            && f.window.samples >= BURST_MIN_SAMPLES
            && slow_share >= BURST_SLOW_SHARE
            && slow_steps >= BURST_SLOW_STEPS - 1e-9;
    if burst_now && (recent >= BURST_CONFIRM || sustained) && st.elevated_run < DRIFT_WINDOWS {
        e.burst = Some(if tail_burst { tail } else { 1.0 });
    }

    if st.elevated_run >= DRIFT_WINDOWS && f.step_time_cusum >= DRIFT_CUSUM {
        e.drift = Some((ratio / ELEVATED_RATIO).max(1.0));
    }

    let floor = timeout_ms.map_or(STALL_MIN_MS, |t| t * STALL_TIMEOUT_SHARE);
    if f.stall_score >= STALL_SCORE && f.step_time_max_ms >= floor {
        e.stall = Some(f.stall_score / STALL_SCORE);
    }

    if f.loss_cusum >= LOSS_CUSUM && f.loss_ratio.is_some_and(|r| r >= LOSS_RATIO) {
        e.loss_drift = Some(f.loss_cusum / LOSS_CUSUM);
    }
    e
}

#[cfg(test)]
mod tests {
    use super::*;
    use modekeeper_policy_sdk::WindowRange;

    /// A 50-step window with a tail burst (steady median) and `slow` slow steps.
    fn burst_window(slow: u64) -> Features {
        Features {
            window: WindowRange {
                samples: 50,
                ..Default::default()
            },
            step_time_ratio: 1.05,
            burst_score: 1.75,
            straggler_score: 1.0,
            slow_step_share: Some(slow as f64 / 50.0),
            ..Default::default()
        }
    }

    #[test]
    fn a_run_of_slow_steps_is_a_burst_in_its_first_window() {
        let mut st = State::default();
        assert!(read(&burst_window(8), None, &mut st).burst.is_some());
    }

    #[test]
    fn a_blip_needs_a_second_window() {
        let mut st = State::default();
        assert_eq!(read(&burst_window(3), None, &mut st).burst, None);
        // The second tail-burst window within the horizon confirms it.
        assert!(read(&burst_window(3), None, &mut st).burst.is_some());
    }

    #[test]
    fn five_slow_steps_in_a_long_window_are_a_blip() {
        let mut st = State::default();
        let mut f = burst_window(5);
        f.window.samples = 500;
        f.slow_step_share = Some(5.0 / 500.0);
        assert_eq!(read(&f, None, &mut st).burst, None);
    }

    #[test]
    fn a_short_window_needs_a_second_window() {
        let mut st = State::default();
        let mut f = burst_window(5);
        f.window.samples = 12;
        f.slow_step_share = Some(5.0 / 12.0);
        assert_eq!(read(&f, None, &mut st).burst, None);
    }

    #[test]
    fn a_lone_slow_window_is_a_burst_once_the_median_is_back() {
        let mut st = State::default();
        let mut slow = burst_window(30);
        slow.step_time_ratio = 2.0;
        slow.burst_score = 1.0;
        assert_eq!(read(&slow, None, &mut st).burst, None);
        let mut back = burst_window(0);
        back.burst_score = 1.0;
        assert!(read(&back, None, &mut st).burst.is_some());
        // Two slow windows in a row are no burst: that is a drift's start.
        let mut st = State::default();
        assert_eq!(read(&slow, None, &mut st).burst, None);
        assert_eq!(read(&slow, None, &mut st).burst, None);
        assert_eq!(read(&back, None, &mut st).burst, None);
    }

    #[test]
    fn an_elevated_median_is_no_tail_burst() {
        let mut st = State::default();
        let mut f = burst_window(30);
        f.step_time_ratio = 1.4;
        assert_eq!(read(&f, None, &mut st).burst, None);
    }
}
