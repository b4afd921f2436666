//! The data a policy evaluation takes and gives, on the host side: knobs, limits, state, decisions.
//! Pure data (serde for the decision trace); nothing here knows about WebAssembly.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Current knob values by name (`microbatch_size`, `grad_accum_steps`, ...).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Knobs(pub BTreeMap<String, f64>);

impl Knobs {
    pub fn get(&self, knob: &str) -> Option<f64> {
        self.0.get(knob).copied()
    }

    pub fn set(&mut self, knob: &str, value: f64) {
        self.0.insert(knob.to_string(), value);
    }

    /// Every knob at its baseline.
    pub fn baseline(limits: &Limits) -> Knobs {
        Knobs(
            limits
                .0
                .iter()
                .map(|(k, l)| (k.clone(), l.baseline))
                .collect(),
        )
    }
}

/// The passport's limits for one knob.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct KnobLimit {
    pub min: f64,
    pub max: f64,
    /// Largest absolute change in one step.
    pub max_delta: f64,
    /// The known-good value RELOCK returns to.
    pub baseline: f64,
}

/// Limits by knob name.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Limits(pub BTreeMap<String, KnobLimit>);

impl Limits {
    /// The reference knob registry (original spec §8.1: min, max, default as baseline), with a max
    /// delta per step of half the range's upper end. Used by `policy test` when no passport is given.
    pub fn reference() -> Limits {
        let rows: [(&str, f64, f64, f64, f64); 7] = [
            ("dataloader_num_workers", 1.0, 16.0, 8.0, 4.0),
            ("dataloader_prefetch_factor", 1.0, 8.0, 4.0, 2.0),
            ("grad_accum_steps", 1.0, 64.0, 32.0, 4.0),
            ("microbatch_size", 1.0, 256.0, 128.0, 32.0),
            ("comm_bucket_mb", 16.0, 512.0, 256.0, 128.0),
            ("timeout_ms", 1000.0, 60000.0, 30000.0, 5000.0),
            ("concurrency", 1.0, 64.0, 32.0, 8.0),
        ];
        Limits(
            rows.into_iter()
                .map(|(k, min, max, max_delta, baseline)| {
                    (
                        k.to_string(),
                        KnobLimit {
                            min,
                            max,
                            max_delta,
                            baseline,
                        },
                    )
                })
                .collect(),
        )
    }

    pub fn get(&self, knob: &str) -> Option<&KnobLimit> {
        self.0.get(knob)
    }

    /// Only the knobs in `allowed`.
    pub fn restricted_to(&self, allowed: &[String]) -> Limits {
        Limits(
            self.0
                .iter()
                .filter(|(k, _)| allowed.iter().any(|a| a == *k))
                .map(|(k, l)| (k.clone(), *l))
                .collect(),
        )
    }
}

/// A policy's own state between windows: opaque bytes it returned for the previous window.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(transparent)]
pub struct PolicyState(pub Vec<u8>);

/// Which policy made a decision.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyRef {
    pub name: String,
    pub version: String,
    /// `sha256:<hex>` of the component bytes.
    pub digest: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Proposal {
    /// The chord that made the proposal (from the policy's `chord_knobs`).
    pub chord: String,
    pub knob: String,
    pub from: f64,
    pub to: f64,
    pub reason: String,
}

/// A proposal the host refused (outside the passport's limits, or a knob already claimed).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Blocked {
    pub knob: String,
    pub to: f64,
    pub reason: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureKind {
    /// The guest trapped (a panic, an unreachable, a bad memory access).
    Trap,
    /// Fuel ran out: the policy does too much work per window.
    OutOfFuel,
    /// The wall-clock deadline passed.
    Timeout,
    /// The guest asked for more memory than the cap.
    OutOfMemory,
    /// The result broke the contract (unknown chord, undeclared knob, NaN, oversized output).
    Malformed,
    /// The component could not be instantiated.
    Instantiate,
}

impl FailureKind {
    pub fn as_str(self) -> &'static str {
        match self {
            FailureKind::Trap => "trap",
            FailureKind::OutOfFuel => "out_of_fuel",
            FailureKind::Timeout => "timeout",
            FailureKind::OutOfMemory => "out_of_memory",
            FailureKind::Malformed => "malformed",
            FailureKind::Instantiate => "instantiate",
        }
    }
}

/// Why a policy produced no usable decision for a window.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyFailure {
    pub kind: FailureKind,
    pub message: String,
}

pub const NORMAL_HOLD: &str = "NORMAL-HOLD";

/// One policy's decision for one window, after the host's checks. A failed evaluation is a decision
/// too: NORMAL-HOLD, nothing proposed, `failure` says why.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Decision {
    pub policy: PolicyRef,
    pub chord: String,
    pub active_chords: Vec<String>,
    pub confidence: f64,
    pub proposals: Vec<Proposal>,
    pub blocked: Vec<Blocked>,
    pub notes: Vec<String>,
    pub failure: Option<PolicyFailure>,
}

impl Decision {
    pub fn failed(policy: PolicyRef, kind: FailureKind, message: impl Into<String>) -> Decision {
        let failure = PolicyFailure {
            kind,
            message: message.into(),
        };
        Decision {
            policy,
            chord: NORMAL_HOLD.into(),
            active_chords: Vec::new(),
            confidence: 0.0,
            proposals: Vec::new(),
            blocked: Vec::new(),
            notes: vec![format!(
                "policy failed ({}): {}",
                failure.kind.as_str(),
                failure.message
            )],
            failure: Some(failure),
        }
    }

    pub fn is_failure(&self) -> bool {
        self.failure.is_some()
    }
}

/// A decision with the state to hand back next window. On failure the state is the previous one:
/// a failed window does not advance the policy.
#[derive(Debug, Clone, PartialEq)]
pub struct Evaluation {
    pub decision: Decision,
    pub next_state: PolicyState,
    pub cost: EvalCost,
}

/// What an evaluation cost (not part of the decision: a native run has no fuel).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct EvalCost {
    pub fuel: u64,
    pub micros: u64,
}

/// What a guest returned, before the host's checks (also what a native build of a policy returns).
#[derive(Debug, Clone, PartialEq)]
pub struct RawDecision {
    pub chord: String,
    pub active_chords: Vec<String>,
    pub confidence: f64,
    pub proposals: Vec<RawProposal>,
    pub notes: Vec<String>,
    pub next_state: Vec<u8>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct RawProposal {
    pub knob: String,
    pub to: f64,
    pub reason: String,
}
