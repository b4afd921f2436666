//! Differential test: safe-chords compiled natively (plain Rust, this test's dev-dependency) and the
//! embedded component (policies/dist/safe-chords.wasm run in wasmtime) give identical decision and
//! state sequences on every real trace, through the same host checks.

mod policy_support;

use modekeeper::policy::{Knobs, Limits, PolicyState, RawDecision, RawProposal, check_decision};
use modekeeper::signals::WindowFeatures;
use modekeeper_policy_sdk as sdk;
use modekeeper_safe_chords::machine;
use policy_support::{TRACES, policy, windows};

/// The SDK's view of a window, field for field (what the WIT glue does inside the component).
fn sdk_input(f: &WindowFeatures, knobs: &Knobs, limits: &Limits, state: &[u8]) -> sdk::Input {
    let w = &f.window;
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
            .map(|(k, v)| sdk::KnobValue {
                knob: k.clone(),
                value: *v,
            })
            .collect(),
        limits: limits
            .0
            .iter()
            .map(|(k, l)| sdk::KnobLimit {
                knob: k.clone(),
                min: l.min,
                max: l.max,
                max_delta: l.max_delta,
                baseline: l.baseline,
            })
            .collect(),
        state: state.to_vec(),
    }
}

fn raw(e: sdk::Evaluation) -> RawDecision {
    RawDecision {
        chord: e.decision.chord,
        active_chords: e.decision.active_chords,
        confidence: e.decision.confidence,
        proposals: e
            .decision
            .proposals
            .into_iter()
            .map(|p| RawProposal {
                knob: p.knob,
                to: p.to,
                reason: p.reason,
            })
            .collect(),
        notes: e.decision.notes,
        next_state: e.next_state,
    }
}

/// Knob values that exercise the proposal paths too: on odd windows every knob sits off its
/// baseline (as if an earlier proposal had been applied), so RELOCK and "already adjusted" run.
fn knobs_for(i: u64, limits: &Limits) -> Knobs {
    let mut k = Knobs::baseline(limits);
    if i % 2 == 1 {
        k.set("microbatch_size", 16.0);
        k.set("grad_accum_steps", 8.0);
        k.set("dataloader_num_workers", 6.0);
        k.set("dataloader_prefetch_factor", 3.0);
        k.set("concurrency", 6.0);
    }
    k
}

#[test]
fn native_and_component_decide_identically_on_every_trace() {
    let policy = policy("safe-chords");
    let meta = policy.metadata().clone();
    let limits = Limits::reference();
    let allowed = limits.restricted_to(&meta.knobs);
    let mut compared = 0usize;
    let mut non_hold = 0usize;
    for name in TRACES {
        let (mut wasm_state, mut native_state) = (PolicyState::default(), PolicyState::default());
        for f in windows(name) {
            let knobs = knobs_for(f.window.index, &limits);
            let from_wasm = policy.evaluate(&f, &knobs, &limits, &wasm_state);
            let native = machine::evaluate(&sdk_input(&f, &knobs, &allowed, &native_state.0));
            let (from_native, next_native) = check_decision(
                raw(native),
                &meta,
                policy.reference(),
                &knobs,
                &allowed,
                &native_state,
            );
            assert!(
                from_wasm.decision.failure.is_none(),
                "{name} window {}: {:?}",
                f.window.index,
                from_wasm.decision.failure
            );
            assert_eq!(
                from_wasm.decision, from_native,
                "{name} window {}",
                f.window.index
            );
            assert_eq!(
                from_wasm.next_state, next_native,
                "{name} window {}: state",
                f.window.index
            );
            assert_eq!(
                from_wasm.decision.confidence.to_bits(),
                from_native.confidence.to_bits()
            );
            non_hold += usize::from(from_native.chord != "NORMAL-HOLD");
            wasm_state = from_wasm.next_state;
            native_state = next_native;
            compared += 1;
        }
    }
    assert!(compared > 300, "compared {compared} windows");
    assert!(
        non_hold > 50,
        "the traces must exercise more than NORMAL-HOLD ({non_hold})"
    );
}
