//! `safe-chords`: the five safe chords, as one policy with one state machine.
//!
//! Per window: [`evidence`] reads the features into incident evidence (input straggler, burst,
//! step-time drift, stall); [`machine`] turns evidence and the previous state into a phase
//! (normal → incident → recover → relock → normal) with hysteresis, and [`knobs`] computes proposals
//! relative to the current knob values, keeping `microbatch_size × grad_accum_steps` (and so the
//! global batch) unchanged. Plain Rust: it compiles natively for tests and to a component for the
//! host; `export_policy!` is the only component-specific line.
//!
//! What it never does: propose outside the passport's limits, move a knob it already moved for the
//! same incident, or touch `timeout_ms`/`comm_bucket_mb` (those are advanced chords).

pub mod evidence;
pub mod knobs;
pub mod machine;
pub mod state;

use modekeeper_policy_sdk::{ChordPolicy, Evaluation, Input, export_policy};

/// The policy type exported as the component.
pub struct SafeChords;

impl ChordPolicy for SafeChords {
    fn evaluate(input: &Input) -> Evaluation {
        machine::evaluate(input)
    }
}

export_policy!(SafeChords);

pub const NORMAL_HOLD: &str = "NORMAL-HOLD";
pub const DRIFT_RETUNE: &str = "DRIFT-RETUNE";
pub const BURST_ABSORB: &str = "BURST-ABSORB";
pub const INPUT_STRAGGLER: &str = "INPUT-STRAGGLER";
pub const RECOVER_RELOCK: &str = "RECOVER-RELOCK";
