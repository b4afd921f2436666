//! The component-model glue (wasm32 only): bindings generated from wit/v1.0.0 and conversions
//! between them and the SDK's plain types. Policy authors never touch this module.

use crate as sdk;

wit_bindgen::generate!({
    path: "../../wit/v1.0.0",
    world: "chord-policy",
    pub_export_macro: true,
    export_macro_name: "export",
    default_bindings_module: "modekeeper_policy_sdk::wit",
});

/// Converts the WIT input, runs `P`, converts the result back.
pub fn run<P: sdk::ChordPolicy>(input: WindowInput) -> Evaluation {
    let out = P::evaluate(&from_wit(input));
    to_wit(out)
}

fn from_wit(i: WindowInput) -> sdk::Input {
    let f = i.features;
    let w = f.window;
    sdk::Input {
        features: sdk::Features {
            window: sdk::WindowRange {
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
            elevated_windows: f.elevated_windows,
            slow_step_share: f.slow_step_share,
            slow_step_share_recent: f.slow_step_share_recent,
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
            extra: f.extra.into_iter().map(|n| (n.name, n.value)).collect(),
        },
        knobs: i
            .knobs
            .into_iter()
            .map(|k| sdk::KnobValue {
                knob: k.knob,
                value: k.value,
            })
            .collect(),
        limits: i
            .limits
            .into_iter()
            .map(|l| sdk::KnobLimit {
                knob: l.knob,
                min: l.min,
                max: l.max,
                max_delta: l.max_delta,
                baseline: l.baseline,
            })
            .collect(),
        state: i.state,
    }
}

fn to_wit(e: sdk::Evaluation) -> Evaluation {
    let sdk::Decision {
        chord,
        active_chords,
        confidence,
        proposals,
        notes,
    } = e.decision;
    Evaluation {
        decision: Decision {
            chord,
            active_chords,
            confidence,
            proposals: proposals
                .into_iter()
                .map(|p| Proposal {
                    knob: p.knob,
                    to: p.to,
                    reason: p.reason,
                })
                .collect(),
            notes,
        },
        next_state: e.next_state,
    }
}
