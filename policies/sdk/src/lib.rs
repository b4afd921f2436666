//! The author SDK for ModeKeeper chord policies.
//!
//! A chord policy is a pure function: one window's [`Features`], the job's current knob values and
//! the passport's limits, plus the state the policy returned for the previous window, go in; a
//! [`Decision`] and the next state come out. Write it in plain Rust against the types here, implement
//! [`ChordPolicy`], and call [`export_policy!`]: on `wasm32` the macro generates the component-model
//! glue for the `modekeeper:policy@1.0.0` world (wit/v1.0.0/); natively it does nothing, so the same
//! logic can be unit-tested and compared against the built component.
//!
//! What a policy must never do: read a clock, draw random numbers, or keep state anywhere but in the
//! bytes it returns. The host gives it no way to, and replays depend on it.

#![cfg_attr(not(target_arch = "wasm32"), forbid(unsafe_code))]

pub mod state;

#[cfg(target_arch = "wasm32")]
#[doc(hidden)]
pub mod wit;

/// The WIT package version this SDK targets.
pub const WIT_VERSION: &str = "1.0.0";

/// The step and time range a window covers.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct WindowRange {
    pub index: u64,
    pub first_step: u64,
    pub last_step: u64,
    pub start_ms: Option<i64>,
    pub end_ms: Option<i64>,
    pub samples: u64,
}

/// One window's features, mirroring the WIT `window-features` record (see its doc comments).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Features {
    pub window: WindowRange,
    pub warmup: bool,
    pub step_time_p50_ms: f64,
    pub step_time_p95_ms: f64,
    pub step_time_p99_ms: f64,
    pub step_time_max_ms: f64,
    pub step_time_baseline_ms: Option<f64>,
    pub step_time_ratio: f64,
    pub step_time_cusum: f64,
    pub elevated_windows: Option<u32>,
    pub slow_step_share: Option<f64>,
    pub slow_step_share_recent: Option<f64>,
    pub burst_score: f64,
    pub straggler_score: f64,
    pub slowest_worker: Option<u32>,
    pub worker_count: u32,
    pub data_wait_share: Option<f64>,
    pub data_wait_p95_ms: Option<f64>,
    pub stall_score: f64,
    pub loss_mean: Option<f64>,
    pub loss_baseline: Option<f64>,
    pub loss_ratio: Option<f64>,
    pub loss_cusum: f64,
    pub gpu_util_mean: Option<f64>,
    pub gpu_util_min: Option<f64>,
    pub gpu_mem_util_mean: Option<f64>,
    pub gpu_mem_util_max: Option<f64>,
    pub comm_share: Option<f64>,
    /// Features newer than WIT 1.0.0, by snake_case name.
    pub extra: Vec<(String, f64)>,
}

impl Features {
    /// A feature added after WIT 1.0.0, by name.
    pub fn extra(&self, name: &str) -> Option<f64> {
        self.extra.iter().find(|(n, _)| n == name).map(|(_, v)| *v)
    }

    /// Mean wall-clock interval between consecutive records in this window, when timestamps exist.
    pub fn mean_step_interval_ms(&self) -> Option<f64> {
        let w = &self.window;
        match (w.start_ms, w.end_ms) {
            (Some(a), Some(b)) if w.samples > 1 && b >= a => {
                Some((b - a) as f64 / (w.samples - 1) as f64)
            }
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct KnobValue {
    pub knob: String,
    pub value: f64,
}

/// The passport's limits for one knob.
#[derive(Debug, Clone, PartialEq)]
pub struct KnobLimit {
    pub knob: String,
    pub min: f64,
    pub max: f64,
    /// Largest absolute change in one step.
    pub max_delta: f64,
    /// The known-good value RELOCK returns to.
    pub baseline: f64,
}

impl KnobLimit {
    /// `to` clamped to `[min, max]` and to at most `max_delta` away from `from`.
    pub fn bound(&self, from: f64, to: f64) -> f64 {
        let d = self.max_delta.max(0.0);
        to.clamp(from - d, from + d).clamp(self.min, self.max)
    }
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct Input {
    pub features: Features,
    pub knobs: Vec<KnobValue>,
    pub limits: Vec<KnobLimit>,
    /// The policy's own state from the previous window (empty on the first).
    pub state: Vec<u8>,
}

impl Input {
    pub fn knob(&self, name: &str) -> Option<f64> {
        self.knobs.iter().find(|k| k.knob == name).map(|k| k.value)
    }

    pub fn limit(&self, name: &str) -> Option<&KnobLimit> {
        self.limits.iter().find(|l| l.knob == name)
    }

    /// Current value and limits of a knob the policy may touch; `None` if either is missing.
    pub fn tunable(&self, name: &str) -> Option<(f64, &KnobLimit)> {
        Some((self.knob(name)?, self.limit(name)?))
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Proposal {
    pub knob: String,
    pub to: f64,
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    pub chord: String,
    pub active_chords: Vec<String>,
    pub confidence: f64,
    pub proposals: Vec<Proposal>,
    pub notes: Vec<String>,
}

impl Decision {
    /// NORMAL-HOLD: nothing to change.
    pub fn hold(confidence: f64) -> Self {
        Decision {
            chord: "NORMAL-HOLD".into(),
            active_chords: Vec::new(),
            confidence,
            proposals: Vec::new(),
            notes: Vec::new(),
        }
    }

    pub fn note(mut self, text: impl Into<String>) -> Self {
        self.notes.push(text.into());
        self
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Evaluation {
    pub decision: Decision,
    pub next_state: Vec<u8>,
}

/// Implement this for a unit struct and pass it to [`export_policy!`].
pub trait ChordPolicy {
    fn evaluate(input: &Input) -> Evaluation;
}

/// Exports `$ty: ChordPolicy` as the component's `evaluate` function (on wasm32; a no-op natively).
#[macro_export]
macro_rules! export_policy {
    ($ty:ty) => {
        #[cfg(target_arch = "wasm32")]
        const _: () = {
            struct ModekeeperPolicyExport;
            impl $crate::wit::Guest for ModekeeperPolicyExport {
                fn evaluate(input: $crate::wit::WindowInput) -> $crate::wit::Evaluation {
                    $crate::wit::run::<$ty>(input)
                }
            }
    $crate::wit::export!(ModekeeperPolicyExport with_types_in $crate::wit);
        };
    };
}
