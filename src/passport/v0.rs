//! Legacy `passport.v0` documents (the first implementation's format): validated with its rules and
//! translated to `passport.v1`, so old passports and the built-in templates keep one source of truth.
//! The translation is documented field by field in docs/passports.md; it never invents permissions
//! v0 did not grant.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use super::catalog::{Actuation, ChordId, knob_spec};
use super::schema::{Gates, KnobLimits, MaxDelta, Passport, SCHEMA_V1};
use super::validate::{FieldError, field_err};

pub const SCHEMA_V0: &str = "passport.v0";

/// The chord ids v0 knew (RECOVER and RELOCK became the one chord RECOVER-RELOCK).
const V0_CHORDS: [&str; 6] = [
    "BURST-ABSORB",
    "DRIFT-RETUNE",
    "INPUT-STRAGGLER",
    "NORMAL-HOLD",
    "RECOVER",
    "RELOCK",
];

/// Version given to a translated v0 passport.
const UPGRADED_VERSION: &str = "1.0.0";

/// Which chord a v0 `cooldowns` key belongs to.
fn cooldown_chord(key: &str) -> Option<ChordId> {
    Some(match key {
        "normal_hold_s" => ChordId::NormalHold,
        "drift_retune_s" => ChordId::DriftRetune,
        "burst_absorb_s" => ChordId::BurstAbsorb,
        "input_straggler_s" => ChordId::InputStraggler,
        "recover_s" | "recovery_s" | "relock_s" => ChordId::RecoverRelock,
        "comm_adjust_s" | "comm_congestion_s" => ChordId::CommCongestion,
        "timeout_guard_s" => ChordId::TimeoutGuard,
        _ => return None,
    })
}

fn strings(v: &Value, field: &str) -> Result<Vec<String>, FieldError> {
    let arr = v
        .as_array()
        .ok_or_else(|| field_err(field, "must be an array of strings"))?;
    arr.iter()
        .enumerate()
        .map(|(i, x)| match x.as_str() {
            Some(s) if !s.trim().is_empty() => Ok(s.to_string()),
            _ => Err(field_err(
                format!("{field}[{i}]"),
                "must be a non-empty string",
            )),
        })
        .collect()
}

fn int(v: &Value, field: &str, min: i64) -> Result<i64, FieldError> {
    match v.as_i64() {
        Some(n) if n >= min => Ok(n),
        Some(n) => Err(field_err(field, format!("must be at least {min}, got {n}"))),
        None => Err(field_err(field, "must be an integer")),
    }
}

fn object<'a>(v: &'a Value, field: &str) -> Result<&'a Map<String, Value>, FieldError> {
    v.as_object()
        .ok_or_else(|| field_err(field, "must be an object"))
}

/// Validates a v0 document with v0's rules and translates it to v1. The result still has to pass the
/// v1 validation (the caller runs it), e.g. for names v1 no longer accepts.
pub(crate) fn upgrade(doc: &Map<String, Value>) -> Result<Passport, FieldError> {
    let name = match doc.get("name").and_then(Value::as_str) {
        Some(n) if !n.trim().is_empty() => n.to_string(),
        _ => return Err(field_err("name", "must be a non-empty string")),
    };
    let description = doc
        .get("description")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();

    let chords = strings(
        doc.get("allowed_chords").unwrap_or(&Value::Null),
        "allowed_chords",
    )?;
    if chords.is_empty() {
        return Err(field_err("allowed_chords", "must list at least one chord"));
    }
    let unknown: Vec<&str> = chords
        .iter()
        .map(String::as_str)
        .filter(|c| !V0_CHORDS.contains(c))
        .collect();
    if !unknown.is_empty() {
        let advanced: Vec<&str> = unknown
            .iter()
            .copied()
            .filter(|c| ChordId::parse(c).is_some_and(ChordId::is_advanced))
            .collect();
        let hint = if advanced.is_empty() {
            String::new()
        } else {
            format!(
                "; {} is advanced: write a passport.v1 and permit it in advanced_chords",
                advanced.join(", ")
            )
        };
        return Err(field_err(
            "allowed_chords",
            format!(
                "unknown chord(s) {} (passport.v0 allows {}){hint}",
                unknown.join(", "),
                V0_CHORDS.join(", ")
            ),
        ));
    }
    let mut allowed: Vec<ChordId> = chords
        .iter()
        .map(|c| match c.as_str() {
            "RECOVER" | "RELOCK" => ChordId::RecoverRelock,
            other => ChordId::parse(other).expect("checked against V0_CHORDS"),
        })
        .collect();
    allowed.sort();
    allowed.dedup();

    let act = object(
        doc.get("allowed_actuators").unwrap_or(&Value::Null),
        "allowed_actuators",
    )?;
    let hot = strings(
        act.get("hot").unwrap_or(&Value::Null),
        "allowed_actuators.hot",
    )?;
    let cold = strings(
        act.get("cold").unwrap_or(&Value::Null),
        "allowed_actuators.cold",
    )?;

    let limits = object(doc.get("limits").unwrap_or(&Value::Null), "limits")?;
    let mut missing: Vec<&str> = [
        "cooldown_s",
        "max_delta_per_step",
        "relock_stable_intervals",
    ]
    .into_iter()
    .filter(|k| !limits.contains_key(*k))
    .collect();
    missing.sort_unstable();
    if !missing.is_empty() {
        return Err(field_err(
            "limits",
            format!("missing {}", missing.join(", ")),
        ));
    }
    let cooldown_s = int(&limits["cooldown_s"], "limits.cooldown_s", 0)?;
    let max_delta = int(
        &limits["max_delta_per_step"],
        "limits.max_delta_per_step",
        0,
    )?;
    let relock = int(
        &limits["relock_stable_intervals"],
        "limits.relock_stable_intervals",
        1,
    )?;
    let mut ranges: BTreeMap<String, (i64, i64)> = BTreeMap::new();
    if let Some(kl) = limits.get("knob_limits") {
        for (knob, v) in object(kl, "limits.knob_limits")? {
            let at = format!("limits.knob_limits.{knob}");
            if knob.trim().is_empty() {
                return Err(field_err(
                    "limits.knob_limits",
                    "knob names must be non-empty",
                ));
            }
            let o = object(v, &at)?;
            let min = int(
                o.get("min").unwrap_or(&Value::Null),
                &format!("{at}.min"),
                i64::MIN,
            )?;
            let max = int(
                o.get("max").unwrap_or(&Value::Null),
                &format!("{at}.max"),
                i64::MIN,
            )?;
            if min > max {
                return Err(field_err(
                    at,
                    format!("min {min} is greater than max {max}"),
                ));
            }
            ranges.insert(knob.clone(), (min, max));
        }
    }

    let invariants = match doc.get("invariants") {
        None => vec![],
        Some(v) => strings(v, "invariants")?,
    };
    let empty = Map::new();
    let cooldowns = match doc.get("cooldowns") {
        None => &empty,
        Some(v) => object(v, "cooldowns")?,
    };
    let gates = match doc.get("gates") {
        None => &empty,
        Some(v) => object(v, "gates")?,
    };

    // Per-chord cooldowns become per-knob ones: a knob waits the longest cooldown of any chord that
    // may move it (RECOVER-RELOCK may move every knob).
    let mut chord_cooldowns: Vec<(ChordId, u64)> = vec![];
    for (key, v) in cooldowns {
        let chord = cooldown_chord(key).ok_or_else(|| {
            field_err(format!("cooldowns.{key}"), "no chord matches this cooldown")
        })?;
        chord_cooldowns.push((chord, int(v, &format!("cooldowns.{key}"), 0)? as u64));
    }
    let knob_cooldown = |knob: &str| {
        chord_cooldowns
            .iter()
            .filter(|(c, _)| c.knobs_touched().is_none_or(|ks| ks.contains(&knob)))
            .map(|(_, s)| *s)
            .max()
            .unwrap_or(0)
    };
    let propose_only_all = gates
        .get("propose_only")
        .and_then(Value::as_bool)
        .unwrap_or(false);

    let mut knobs = BTreeMap::new();
    let names = hot.iter().chain(&cold).chain(ranges.keys());
    for knob in names {
        if knobs.contains_key(knob) {
            continue;
        }
        let spec = knob_spec(knob);
        let (min, max) = match (ranges.get(knob), spec) {
            (Some(&(lo, hi)), _) => (lo as f64, hi as f64),
            (None, Some(s)) => (s.min, s.max),
            (None, None) => {
                return Err(field_err(
                    "allowed_actuators",
                    format!("{knob} has no limits.knob_limits entry and is not a catalogue knob"),
                ));
            }
        };
        let step = spec.map_or(1.0, |s| s.step);
        let baseline = spec.map_or(min, |s| s.default.clamp(min, max));
        let in_actuators = hot.contains(knob) || cold.contains(knob);
        knobs.insert(
            knob.clone(),
            KnobLimits {
                min,
                max,
                baseline,
                max_delta_per_step: (max_delta > 0)
                    .then_some(MaxDelta::Absolute(max_delta as f64 * step)),
                cooldown_s: knob_cooldown(knob),
                min_relative_change: 0.0,
                propose_only: propose_only_all || !in_actuators,
                actuation: if hot.contains(knob) {
                    Actuation::Hot
                } else {
                    Actuation::Cold
                },
            },
        );
    }

    Ok(Passport {
        schema_version: SCHEMA_V1.to_string(),
        name,
        version: UPGRADED_VERSION.to_string(),
        description,
        allowed_chords: allowed,
        advanced_chords: vec![],
        cooldown_s: cooldown_s as u64,
        relock_stable_windows: u32::try_from(relock).unwrap_or(u32::MAX),
        knobs,
        invariants,
        gates: Gates {
            apply: gates.get("apply").and_then(Value::as_bool).unwrap_or(false),
            require_comm_telemetry: gates
                .get("require_comm_telemetry")
                .and_then(Value::as_bool)
                .unwrap_or(false),
            auto_rollback: false,
        },
        policies: vec![],
        effect: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn doc(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    fn minimal() -> Value {
        json!({"schema_version": "passport.v0", "name": "t", "allowed_chords": ["NORMAL-HOLD", "RECOVER", "RELOCK"],
               "allowed_actuators": {"hot": ["concurrency"], "cold": ["comm_bucket_mb"]},
               "limits": {"cooldown_s": 30, "max_delta_per_step": 2, "relock_stable_intervals": 2,
                          "knob_limits": {"concurrency": {"min": 2, "max": 10}}},
               "cooldowns": {"burst_absorb_s": 45, "recover_s": 20}})
    }

    #[test]
    fn translates_chords_limits_steps_and_cooldowns() {
        let p = upgrade(&doc(minimal())).unwrap();
        assert_eq!(
            p.allowed_chords,
            [ChordId::NormalHold, ChordId::RecoverRelock]
        );
        let c = &p.knobs["concurrency"];
        assert_eq!((c.min, c.max, c.baseline), (2.0, 10.0, 8.0));
        assert_eq!(c.actuation, Actuation::Hot);
        assert_eq!(c.max_delta_per_step, Some(MaxDelta::Absolute(2.0)));
        assert_eq!(c.cooldown_s, 45, "BURST-ABSORB touches concurrency");
        let b = &p.knobs["comm_bucket_mb"];
        assert_eq!(
            (b.min, b.max, b.baseline),
            (16.0, 512.0, 128.0),
            "catalogue range without knob_limits"
        );
        assert_eq!(
            b.max_delta_per_step,
            Some(MaxDelta::Absolute(32.0)),
            "two catalogue steps of 16"
        );
        assert_eq!(
            b.cooldown_s, 20,
            "only RECOVER-RELOCK touches comm_bucket_mb"
        );
        assert_eq!((p.cooldown_s, p.relock_stable_windows), (30, 2));
        assert!(!p.gates.apply);
    }

    #[test]
    fn zero_max_delta_means_no_step_limit_and_propose_only_gate_applies_to_all() {
        let mut v = minimal();
        v["limits"]["max_delta_per_step"] = json!(0);
        v["gates"] = json!({"propose_only": true, "apply": false});
        let p = upgrade(&doc(v)).unwrap();
        assert!(
            p.knobs
                .values()
                .all(|k| k.max_delta_per_step.is_none() && k.propose_only)
        );
    }

    #[test]
    fn limits_without_actuator_become_propose_only() {
        let mut v = minimal();
        v["limits"]["knob_limits"]["microbatch_size"] = json!({"min": 8, "max": 64});
        let p = upgrade(&doc(v)).unwrap();
        assert!(p.knobs["microbatch_size"].propose_only);
        assert!(!p.knobs["concurrency"].propose_only);
    }

    #[test]
    fn v0_rule_violations_name_the_field() {
        type Mutation = fn(&mut Value);
        let cases: Vec<(Mutation, &str, &str)> = vec![
            (|v| v["name"] = json!(""), "name", "non-empty"),
            (
                |v| v["allowed_chords"] = json!([]),
                "allowed_chords",
                "at least one",
            ),
            (
                |v| v["allowed_chords"] = json!(["TIMEOUT-GUARD"]),
                "allowed_chords",
                "unknown chord(s) TIMEOUT-GUARD",
            ),
            (
                |v| v["allowed_chords"] = json!([""]),
                "allowed_chords[0]",
                "non-empty",
            ),
            (
                |v| v["allowed_actuators"] = json!([]),
                "allowed_actuators",
                "object",
            ),
            (
                |v| v["allowed_actuators"]["hot"] = json!("x"),
                "allowed_actuators.hot",
                "array",
            ),
            (
                |v| v["limits"] = json!({"cooldown_s": 1}),
                "limits",
                "missing max_delta_per_step, relock_stable_intervals",
            ),
            (
                |v| v["limits"]["cooldown_s"] = json!(-1),
                "limits.cooldown_s",
                "at least 0",
            ),
            (
                |v| v["limits"]["relock_stable_intervals"] = json!(0),
                "limits.relock_stable_intervals",
                "at least 1",
            ),
            (
                |v| v["limits"]["max_delta_per_step"] = json!(1.5),
                "limits.max_delta_per_step",
                "integer",
            ),
            (
                |v| v["limits"]["knob_limits"]["concurrency"]["min"] = json!(11),
                "limits.knob_limits.concurrency",
                "min 11",
            ),
            (
                |v| v["limits"]["knob_limits"]["concurrency"] = json!({"min": 1}),
                "limits.knob_limits.concurrency.max",
                "integer",
            ),
            (|v| v["cooldowns"] = json!([]), "cooldowns", "object"),
            (
                |v| v["cooldowns"] = json!({"warp_s": 3}),
                "cooldowns.warp_s",
                "no chord",
            ),
            (
                |v| v["invariants"] = json!([1]),
                "invariants[0]",
                "non-empty string",
            ),
            (
                |v| v["allowed_actuators"]["cold"] = json!(["custom_knob"]),
                "allowed_actuators",
                "custom_knob",
            ),
        ];
        for (mutate, field, problem) in cases {
            let mut v = minimal();
            mutate(&mut v);
            let (f, p) = upgrade(&doc(v)).unwrap_err();
            assert_eq!(f, field);
            assert!(p.contains(problem), "{f}: {p} (wanted {problem})");
        }
    }
}
