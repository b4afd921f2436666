//! The gain of the changes in GPU-hours: per change, the time per step it saved (or cost) × the
//! steps run under it (from the change to the next change or the end of the telemetry) × GPUs.
//! Pure arithmetic on the effect verdicts of [`super::effect`]; no I/O.

use serde::Serialize;

use super::effect::{ChangeEffect, Kpi, Verdict};

/// GPU-hours saved by one change (negative: lost), with the interval of its step-time shift.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ChangeRoi {
    pub change_step: u64,
    pub knobs: Vec<String>,
    pub verdict: Verdict,
    /// Time per step before the change (the verdict's KPI).
    pub ms_per_step_before: Option<f64>,
    pub change_pct: Option<f64>,
    /// Steps run under the change.
    pub steps: u64,
    pub gpu_hours_saved: Option<f64>,
    /// `[low, high]` of the saving, from the interval of the step-time shift.
    pub gpu_hours_interval: Option<[f64; 2]>,
}

/// Every change's saving and the total.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Roi {
    pub gpus: u32,
    pub changes: Vec<ChangeRoi>,
    /// Sum over the changes with an estimate (`inconclusive` for lack of evidence has none).
    pub gpu_hours_saved_total: f64,
    /// Sum of the bounds: conservative (wider than the interval of the sum).
    pub gpu_hours_interval_total: [f64; 2],
    /// Changes without an estimate (too little evidence).
    pub without_estimate: usize,
}

fn round3(x: f64) -> f64 {
    (x * 1e3).round() / 1e3
}

/// The GPU-hours of `effects` (in change order) on a run that ended at `last_step`, on `gpus` GPUs.
pub fn roi(effects: &[ChangeEffect], last_step: u64, gpus: u32) -> Roi {
    let mut changes = Vec::with_capacity(effects.len());
    let (mut total, mut lo_t, mut hi_t, mut without) = (0.0, 0.0, 0.0, 0usize);
    for (i, e) in effects.iter().enumerate() {
        let end = effects
            .get(i + 1)
            .map_or(last_step, |n| n.change_step)
            .max(e.change_step);
        let steps = end - e.change_step;
        let base = match e.kpi {
            Kpi::WallTimePerStep => e.before.wall_ms_per_step,
            Kpi::StepTimeP50 => e.before.step_time_p50_ms,
        };
        // Saved per step = base × −shift; hours = ms × steps × GPUs / 3.6e6.
        let hours =
            |pct: f64| base.map(|b| -b * pct / 100.0 * steps as f64 * f64::from(gpus) / 3.6e6);
        let (saved, interval) = match e.step_time {
            Some(s) => {
                let (a, b) = (hours(s.change_pct), hours(s.high_pct).zip(hours(s.low_pct)));
                (a, b.map(|(l, h)| [l, h]))
            }
            None => (None, None),
        };
        match (saved, interval) {
            (Some(v), Some([l, h])) => {
                total += v;
                lo_t += l;
                hi_t += h;
            }
            _ => without += 1,
        }
        changes.push(ChangeRoi {
            change_step: e.change_step,
            knobs: e.knobs.iter().map(|k| k.knob.clone()).collect(),
            verdict: e.verdict,
            ms_per_step_before: base,
            change_pct: e.step_time.map(|s| s.change_pct),
            steps,
            gpu_hours_saved: saved.map(round3),
            gpu_hours_interval: interval.map(|[l, h]| [round3(l), round3(h)]),
        });
    }
    Roi {
        gpus,
        changes,
        gpu_hours_saved_total: round3(total),
        gpu_hours_interval_total: [round3(lo_t), round3(hi_t)],
        without_estimate: without,
    }
}

#[cfg(test)]
mod tests {
    use super::super::effect::{EffectKnob, Shift, Side};
    use super::*;

    fn effect(step: u64, pct: Option<(f64, f64, f64)>, wall: f64) -> ChangeEffect {
        let side = Side {
            windows: 10,
            first_step: None,
            last_step: None,
            steps: 500,
            step_time_p50_ms: Some(wall * 0.9),
            step_time_p95_ms: None,
            wall_ms_per_step: Some(wall),
            data_wait_share: None,
            loss_slope_per_1k_steps: None,
        };
        ChangeEffect {
            change_window: step / 50,
            change_step: step,
            knobs: vec![EffectKnob {
                knob: "concurrency".into(),
                from: 8.0,
                to: 7.0,
            }],
            verdict: if pct.is_some() {
                Verdict::Helped
            } else {
                Verdict::Inconclusive
            },
            reason: String::new(),
            confidence: 0.95,
            settle_windows: 1,
            before: side,
            after: side,
            kpi: Kpi::WallTimePerStep,
            step_time: pct.map(|(c, l, h)| Shift {
                change_pct: c,
                low_pct: l,
                high_pct: h,
            }),
            step_time_p50: None,
            step_time_p95: None,
            interrupted: false,
            rollback: Vec::new(),
        }
    }

    #[test]
    fn hours_from_shift_steps_and_gpus() {
        // 100 ms/step, −10 % over 36 000 steps on 8 GPUs: 10 ms × 36 000 × 8 / 3.6e6 = 0.8 h.
        let r = roi(&[effect(0, Some((-10.0, -15.0, -5.0)), 100.0)], 36_000, 8);
        let c = &r.changes[0];
        assert_eq!(c.steps, 36_000);
        assert_eq!(c.gpu_hours_saved, Some(0.8));
        assert_eq!(c.gpu_hours_interval, Some([0.4, 1.2]));
        assert_eq!(r.gpu_hours_saved_total, 0.8);
    }

    #[test]
    fn each_change_counts_until_the_next_and_a_slowdown_is_a_loss() {
        let r = roi(
            &[
                effect(1000, Some((-10.0, -12.0, -8.0)), 100.0),
                effect(10_000, None, 90.0),
                effect(19_000, Some((20.0, 10.0, 30.0)), 90.0),
            ],
            37_000,
            1,
        );
        let steps: Vec<u64> = r.changes.iter().map(|c| c.steps).collect();
        assert_eq!(steps, [9000, 9000, 18_000]);
        assert_eq!(r.without_estimate, 1);
        assert_eq!(r.changes[1].gpu_hours_saved, None);
        assert!(r.changes[2].gpu_hours_saved.unwrap() < 0.0);
        // 10 ms × 9000 / 3.6e6 = 0.025; −18 ms × 18 000 / 3.6e6 = −0.09.
        assert_eq!(r.gpu_hours_saved_total, -0.065);
    }
}
