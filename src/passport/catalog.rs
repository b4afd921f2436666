//! The chord and knob catalogues passports refer to: chord ids (which are advanced, which knobs each
//! may touch) and the default range, step and value of every built-in knob. Data only.

use std::fmt;

use serde::{Deserialize, Serialize};

/// A chord: a recognised operating regime with the knob moves that answer it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum ChordId {
    #[serde(rename = "NORMAL-HOLD")]
    NormalHold,
    #[serde(rename = "DRIFT-RETUNE")]
    DriftRetune,
    #[serde(rename = "BURST-ABSORB")]
    BurstAbsorb,
    #[serde(rename = "INPUT-STRAGGLER")]
    InputStraggler,
    #[serde(rename = "RECOVER-RELOCK")]
    RecoverRelock,
    #[serde(rename = "COMM-CONGESTION")]
    CommCongestion,
    #[serde(rename = "TIMEOUT-GUARD")]
    TimeoutGuard,
}

impl ChordId {
    /// Every chord, in catalogue order (safe ones first).
    pub const ALL: [ChordId; 7] = [
        ChordId::NormalHold,
        ChordId::DriftRetune,
        ChordId::BurstAbsorb,
        ChordId::InputStraggler,
        ChordId::RecoverRelock,
        ChordId::CommCongestion,
        ChordId::TimeoutGuard,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ChordId::NormalHold => "NORMAL-HOLD",
            ChordId::DriftRetune => "DRIFT-RETUNE",
            ChordId::BurstAbsorb => "BURST-ABSORB",
            ChordId::InputStraggler => "INPUT-STRAGGLER",
            ChordId::RecoverRelock => "RECOVER-RELOCK",
            ChordId::CommCongestion => "COMM-CONGESTION",
            ChordId::TimeoutGuard => "TIMEOUT-GUARD",
        }
    }

    /// Parses a chord id as written in passports, policies and traces.
    pub fn parse(s: &str) -> Option<ChordId> {
        ChordId::ALL.into_iter().find(|c| c.as_str() == s)
    }

    /// Advanced chords act on runtime-safety knobs and must be permitted explicitly by a passport.
    pub fn is_advanced(self) -> bool {
        matches!(self, ChordId::CommCongestion | ChordId::TimeoutGuard)
    }

    /// The knobs the chord may move (chord catalogue v1). RECOVER-RELOCK returns any knob to its
    /// baseline, so it may touch every knob: `None`.
    pub fn knobs_touched(self) -> Option<&'static [&'static str]> {
        Some(match self {
            ChordId::NormalHold => &[],
            ChordId::DriftRetune => &["grad_accum_steps", "microbatch_size"],
            ChordId::BurstAbsorb => &[
                "dataloader_prefetch_factor",
                "concurrency",
                "microbatch_size",
            ],
            ChordId::InputStraggler => &["dataloader_num_workers"],
            ChordId::RecoverRelock => return None,
            ChordId::CommCongestion => &["comm_bucket_mb"],
            ChordId::TimeoutGuard => &["timeout_ms"],
        })
    }

    /// The ids, comma-separated, for error messages.
    pub fn list() -> String {
        ChordId::ALL.map(ChordId::as_str).join(", ")
    }
}

impl fmt::Display for ChordId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Whether the trainer picks a knob up while running (`hot`) or only on restart (`cold`).
/// Informational: every change travels as a pod-template annotation, so both roll the pods.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Actuation {
    Hot,
    #[default]
    Cold,
}

/// A built-in knob: its full range, the granularity of one step and the trainer's default.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct KnobSpec {
    pub name: &'static str,
    pub min: f64,
    pub max: f64,
    pub step: f64,
    pub default: f64,
}

/// The knob catalogue (reference §8.1).
pub const KNOBS: [KnobSpec; 7] = [
    KnobSpec {
        name: "dataloader_num_workers",
        min: 1.0,
        max: 16.0,
        step: 1.0,
        default: 4.0,
    },
    KnobSpec {
        name: "dataloader_prefetch_factor",
        min: 1.0,
        max: 8.0,
        step: 1.0,
        default: 2.0,
    },
    KnobSpec {
        name: "grad_accum_steps",
        min: 1.0,
        max: 64.0,
        step: 1.0,
        default: 4.0,
    },
    KnobSpec {
        name: "microbatch_size",
        min: 1.0,
        max: 256.0,
        step: 1.0,
        default: 32.0,
    },
    KnobSpec {
        name: "comm_bucket_mb",
        min: 16.0,
        max: 512.0,
        step: 16.0,
        default: 128.0,
    },
    KnobSpec {
        name: "timeout_ms",
        min: 1000.0,
        max: 60000.0,
        step: 500.0,
        default: 5000.0,
    },
    KnobSpec {
        name: "concurrency",
        min: 1.0,
        max: 64.0,
        step: 1.0,
        default: 8.0,
    },
];

/// A knob only advanced chords move (`comm_bucket_mb`, `timeout_ms`): changing it takes the
/// license's `chords.advanced` as well as `apply`, whoever wrote the plan. RECOVER-RELOCK, which
/// may return any knob to its baseline, does not make a knob ordinary.
pub fn is_advanced_knob(name: &str) -> bool {
    let mut naming = ChordId::ALL
        .into_iter()
        .filter(|c| c.knobs_touched().is_some_and(|k| k.contains(&name)))
        .peekable();
    naming.peek().is_some() && naming.all(ChordId::is_advanced)
}

/// Looks a knob up in the catalogue.
pub fn knob_spec(name: &str) -> Option<&'static KnobSpec> {
    KNOBS.iter().find(|k| k.name == name)
}

/// The two knobs whose product with the world size is the global batch.
pub const MICROBATCH: &str = "microbatch_size";
pub const GRAD_ACCUM: &str = "grad_accum_steps";

/// The invariant that keeps `microbatch_size × grad_accum_steps × world_size` unchanged.
pub const KEEP_GLOBAL_BATCH_STABLE: &str = "keep_global_batch_stable";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn advanced_knobs_are_the_ones_only_advanced_chords_move() {
        let advanced: Vec<&str> = KNOBS
            .iter()
            .map(|k| k.name)
            .filter(|k| is_advanced_knob(k))
            .collect();
        assert_eq!(advanced, ["comm_bucket_mb", "timeout_ms"]);
        assert!(!is_advanced_knob("not_a_knob"));
    }

    #[test]
    fn chord_ids_round_trip_through_parse_and_serde() {
        for c in ChordId::ALL {
            assert_eq!(ChordId::parse(c.as_str()), Some(c));
            assert_eq!(
                serde_json::to_value(c).unwrap(),
                serde_json::json!(c.as_str())
            );
        }
        assert_eq!(ChordId::parse("RECOVER"), None);
    }

    #[test]
    fn only_comm_and_timeout_are_advanced() {
        let adv: Vec<_> = ChordId::ALL
            .into_iter()
            .filter(|c| c.is_advanced())
            .collect();
        assert_eq!(adv, [ChordId::CommCongestion, ChordId::TimeoutGuard]);
    }

    #[test]
    fn catalogue_defaults_lie_within_their_ranges() {
        for k in KNOBS {
            assert!(k.min <= k.default && k.default <= k.max, "{}", k.name);
        }
        assert_eq!(knob_spec("comm_bucket_mb").unwrap().step, 16.0);
        assert!(knob_spec("nope").is_none());
    }
}
