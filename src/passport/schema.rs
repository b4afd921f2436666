//! The `passport.v1` document: serde types only, strict (`deny_unknown_fields` everywhere). Semantic
//! checks live in `validate.rs`; a value of [`Passport`] handed out by this module's parent has passed
//! them.

use std::collections::BTreeMap;

use serde::ser::SerializeMap;
use serde::{Deserialize, Serialize, Serializer};

use super::catalog::{Actuation, ChordId};
use super::value::serialize_knob_value;

pub const SCHEMA_V1: &str = "passport.v1";

/// What a job may have changed, how far and how often. See docs/passports.md.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Passport {
    /// Always `passport.v1`.
    pub schema_version: String,
    pub name: String,
    /// Semantic version of this passport (`1.0.0`).
    pub version: String,
    #[serde(default)]
    pub description: String,
    /// Safe chords whose proposals may pass the envelope.
    pub allowed_chords: Vec<ChordId>,
    /// Advanced chords this passport permits (an explicit opt-in; empty by default).
    #[serde(default)]
    pub advanced_chords: Vec<ChordId>,
    /// Minimum seconds between two accepted changes, whatever the knob.
    pub cooldown_s: u64,
    /// Stable windows RECOVER-RELOCK must see before it returns knobs to their baselines.
    pub relock_stable_windows: u32,
    /// The knobs this passport governs; a knob not listed here is never changed.
    pub knobs: BTreeMap<String, KnobLimits>,
    /// Invariants; `keep_global_batch_stable` is enforced by the envelope, others are recorded.
    #[serde(default)]
    pub invariants: Vec<String>,
    #[serde(default)]
    pub gates: Gates,
    /// External policy components pinned by digest.
    #[serde(default)]
    pub policies: Vec<PinnedPolicy>,
    /// How the effect of a change is judged (docs/closed-loop.md); absent: the defaults.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub effect: Option<EffectSettings>,
}

/// The effect check's thresholds (docs/passports.md, `effect`). Every field is optional.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EffectSettings {
    /// Windows skipped after a change before its evidence counts.
    pub settle_windows: u64,
    /// Windows needed on each side before any verdict but `inconclusive`.
    pub min_windows: u32,
    /// Windows of evidence on each side at most.
    pub horizon_windows: u32,
    /// Two-sided confidence of the intervals.
    pub confidence: f64,
    /// Smallest change of the time per step, in %, called an effect.
    pub material_pct: f64,
    /// A `hurt` change proposes its rollback only when the interval's lower bound is at least this
    /// slowdown, in %.
    pub hurt_step_time_pct: f64,
    /// Seconds a knob rolled back for hurting is held from moving the same way again.
    pub hold_s: u64,
}

impl Default for EffectSettings {
    fn default() -> Self {
        EffectSettings {
            settle_windows: 1,
            min_windows: 5,
            horizon_windows: 10,
            confidence: 0.95,
            material_pct: 8.0,
            hurt_step_time_pct: 5.0,
            hold_s: 1800,
        }
    }
}

/// Limits of one knob.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KnobLimits {
    #[serde(serialize_with = "serialize_knob_value")]
    pub min: f64,
    #[serde(serialize_with = "serialize_knob_value")]
    pub max: f64,
    /// The known-good value RECOVER-RELOCK returns to.
    #[serde(serialize_with = "serialize_knob_value")]
    pub baseline: f64,
    /// Largest change in one accepted step; `null` = no step limit beyond min/max.
    #[serde(default)]
    pub max_delta_per_step: Option<MaxDelta>,
    /// Minimum seconds between two accepted changes of this knob.
    #[serde(default)]
    pub cooldown_s: u64,
    /// Smallest accepted change, relative to the current value (hysteresis): 0.1 = 10 %.
    #[serde(default, serialize_with = "serialize_knob_value")]
    pub min_relative_change: f64,
    /// Proposals are recorded but never turned into plan items.
    #[serde(default)]
    pub propose_only: bool,
    #[serde(default)]
    pub actuation: Actuation,
}

/// The largest change per accepted step: in knob units, or as a fraction of the current value.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum MaxDelta {
    Absolute(f64),
    Relative(f64),
}

impl MaxDelta {
    /// The largest allowed |to − from| when moving away from `from`.
    pub fn allowed_from(self, from: f64) -> f64 {
        match self {
            MaxDelta::Absolute(a) => a,
            MaxDelta::Relative(r) => r * from.abs(),
        }
    }
}

impl Serialize for MaxDelta {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        struct V(f64);
        impl Serialize for V {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                serialize_knob_value(&self.0, s)
            }
        }
        let mut m = s.serialize_map(Some(1))?;
        match *self {
            MaxDelta::Absolute(a) => m.serialize_entry("absolute", &V(a))?,
            MaxDelta::Relative(r) => m.serialize_entry("relative", &V(r))?,
        }
        m.end()
    }
}

/// Apply gates a passport adds on top of the product-wide ones (license, fresh verify-ok, kill switch
/// off), which no passport can switch off.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Gates {
    /// Whether plans made under this passport may be applied at all (false = plan and verify only).
    #[serde(default)]
    pub apply: bool,
    /// COMM-CONGESTION proposals need communication telemetry (`comm_ms`) in the window.
    #[serde(default)]
    pub require_comm_telemetry: bool,
    /// The rollback of a change judged `hurt` becomes the loop's proposal (applied, with `--apply`,
    /// through the same gates as any change); false: it is only proposed for review. Omitted when
    /// false so existing passports print (and hash) as before.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub auto_rollback: bool,
}

/// An external policy component pinned by the sha256 of its bytes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PinnedPolicy {
    pub id: String,
    /// 64 lowercase hex digits.
    pub sha256: String,
}

impl Passport {
    /// Whether proposals of `chord` may pass: a safe chord listed in `allowed_chords` or an advanced
    /// one listed in `advanced_chords`.
    pub fn chord_allowed(&self, chord: ChordId) -> bool {
        if chord.is_advanced() {
            self.advanced_chords.contains(&chord)
        } else {
            self.allowed_chords.contains(&chord)
        }
    }

    pub fn knob(&self, name: &str) -> Option<&KnobLimits> {
        self.knobs.get(name)
    }

    pub fn has_invariant(&self, id: &str) -> bool {
        self.invariants.iter().any(|i| i == id)
    }

    /// The pinned digest of an external policy, if the passport pins it.
    pub fn pinned_digest(&self, policy_id: &str) -> Option<&str> {
        self.policies
            .iter()
            .find(|p| p.id == policy_id)
            .map(|p| p.sha256.as_str())
    }

    /// `sha256:<hex>` of the passport's canonical JSON: what plans, watch states and reports record.
    pub fn digest(&self) -> String {
        let v = serde_json::to_value(self).expect("a passport always serializes");
        crate::plan::sha256_prefixed(crate::plan::canonical_json(&v).as_bytes())
    }

    /// The passport as pretty JSON (what `passport show` prints).
    pub fn to_json_pretty(&self) -> String {
        serde_json::to_string_pretty(self).expect("a passport always serializes")
    }
}

/// `KnobLimits` without the optional parts, for tests and translations.
pub fn knob_limits(min: f64, max: f64, baseline: f64) -> KnobLimits {
    KnobLimits {
        min,
        max,
        baseline,
        max_delta_per_step: None,
        cooldown_s: 0,
        min_relative_change: 0.0,
        propose_only: false,
        actuation: Actuation::Cold,
    }
}

/// Ordered map alias used by callers that build passports in code.
pub type KnobMap = BTreeMap<String, KnobLimits>;
