//! Host data ↔ the WIT types generated from wit/v1.0.0 (see `bindings`).

use super::bindings as wit;
use super::types::{Knobs, Limits, PolicyState, RawDecision, RawProposal};
use crate::signals::WindowFeatures;

pub(crate) fn window_input(
    f: &WindowFeatures,
    knobs: &Knobs,
    limits: &Limits,
    state: &PolicyState,
) -> wit::WindowInput {
    let w = &f.window;
    wit::WindowInput {
        features: wit::WindowFeatures {
            window: wit::WindowRange {
                index: w.index,
                first_step: w.first_step,
                last_step: w.last_step,
                start_ms: w.start_ms,
                end_ms: w.end_ms,
                samples: w.samples,
            },
            warmup: f.warmup,
            step_time_p50_ms: f.step_time_p50_ms,
            step_time_p95_ms: f.step_time_p95_ms,
            step_time_p99_ms: f.step_time_p99_ms,
            step_time_max_ms: f.step_time_max_ms,
            step_time_baseline_ms: f.step_time_baseline_ms,
            step_time_ratio: f.step_time_ratio,
            step_time_cusum: f.step_time_cusum,
            elevated_windows: Some(f.elevated_windows),
            slow_step_share: Some(f.slow_step_share),
            slow_step_share_recent: Some(f.slow_step_share_recent),
            burst_score: f.burst_score,
            straggler_score: f.straggler_score,
            slowest_worker: f.slowest_worker,
            worker_count: f.worker_count,
            data_wait_share: f.data_wait_share,
            data_wait_p95_ms: f.data_wait_p95_ms,
            stall_score: f.stall_score,
            loss_mean: f.loss_mean,
            loss_baseline: f.loss_baseline,
            loss_ratio: f.loss_ratio,
            loss_cusum: f.loss_cusum,
            gpu_util_mean: f.gpu_util_mean,
            gpu_util_min: f.gpu_util_min,
            gpu_mem_util_mean: f.gpu_mem_util_mean,
            gpu_mem_util_max: f.gpu_mem_util_max,
            comm_share: f.comm_share,
            extra: Vec::new(),
        },
        knobs: knobs
            .0
            .iter()
            .map(|(k, v)| wit::KnobValue {
                knob: k.clone(),
                value: *v,
            })
            .collect(),
        limits: limits
            .0
            .iter()
            .map(|(k, l)| wit::KnobLimit {
                knob: k.clone(),
                min: l.min,
                max: l.max,
                max_delta: l.max_delta,
                baseline: l.baseline,
            })
            .collect(),
        state: state.0.clone(),
    }
}

pub(crate) fn raw_decision(e: wit::Evaluation) -> RawDecision {
    let d = e.decision;
    RawDecision {
        chord: d.chord,
        active_chords: d.active_chords,
        confidence: d.confidence,
        proposals: d
            .proposals
            .into_iter()
            .map(|p| RawProposal {
                knob: p.knob,
                to: p.to,
                reason: p.reason,
            })
            .collect(),
        notes: d.notes,
        next_state: e.next_state,
    }
}
