//! Window features: pure, deterministic functions from an ordered stream of samples to one
//! [`WindowFeatures`] per window of `window_steps` steps. No I/O, no clocks, no randomness: the same
//! samples always give the same features, byte for byte. Formulas are documented in docs/signals.md.

mod baseline;
mod features;
mod planned;
mod quantile;
mod symptoms;
mod window;

pub use features::{FeatureConfig, FeatureExtractor, WindowFeatures, WindowRange};
pub use planned::{PlannedCounts, PlannedKind, PlannedSteps};
pub use quantile::quantile_sorted;
pub use symptoms::{Episode, EpisodeTracker, Symptom, SymptomThresholds, symptoms_of};
pub use window::{WindowStats, Windower};

/// Default window length in steps. 50 steps is one to a few seconds on a fast GPU job and a minute or
/// so on a slow one: enough samples for a stable p95 while keeping detection delay to one window.
pub const DEFAULT_WINDOW_STEPS: u64 = 50;
/// Steps excluded from baselines at the start of a run (compilation, cache warm-up, loss free-fall).
pub const DEFAULT_WARMUP_STEPS: u64 = 200;
