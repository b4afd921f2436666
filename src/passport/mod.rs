//! Passports: the versioned, strictly validated statement of what a training job may have changed —
//! which chords may act, which knobs, within which limits, how far per step and how often — plus the
//! seven built-in templates. Pure: parsing takes text, never opens files, and this module never
//! decides anything about a concrete proposal (that is `envelope`'s job).
//!
//! `passport.v1` is the current schema (`schema.rs`); legacy `passport.v0` documents are validated with
//! their own rules and translated (`v0.rs`). Every failure is one line: `<source>: <field>: <problem>`.

mod catalog;
mod schema;
mod templates;
mod v0;
mod validate;
mod value;

use serde_json::Value;

pub use catalog::{
    Actuation, ChordId, GRAD_ACCUM, KEEP_GLOBAL_BATCH_STABLE, KNOBS, KnobSpec, MICROBATCH,
    is_advanced_knob, knob_spec,
};
pub use schema::{
    EffectSettings, Gates, KnobLimits, KnobMap, MaxDelta, Passport, PinnedPolicy, SCHEMA_V1,
    knob_limits,
};
pub use templates::{TEMPLATE_NAMES, template};
pub use v0::SCHEMA_V0;
pub use validate::{PassportError, is_knob_name};
pub use value::{format_knob_value, serialize_knob_value};

/// Passport files larger than this are not passports (the caller reads files; see `crate::fsio`).
pub const MAX_PASSPORT_BYTES: u64 = 1024 * 1024;

/// A passport read from text, with the schema it was written in.
#[derive(Debug, Clone, PartialEq)]
pub struct LoadedPassport {
    pub passport: Passport,
    /// `passport.v1`, or `passport.v0` when the text was a legacy passport translated on load.
    pub from_schema: &'static str,
}

/// Parses and validates a passport. `source` names the text in error messages (a path or
/// `template:<name>`).
pub fn parse_passport(source: &str, text: &str) -> Result<LoadedPassport, PassportError> {
    let err = |field: String, problem: String| PassportError {
        source: source.to_string(),
        field,
        problem,
    };
    // A repeated key would let a reviewer read one limit while the last copy applies.
    let doc: Value = crate::json_keys::parse_unique(text.as_bytes())
        .map_err(|e| err(String::new(), format!("invalid JSON: {e}")))?;
    let Some(obj) = doc.as_object() else {
        return Err(err(
            String::new(),
            "expected a JSON object at the top level".into(),
        ));
    };
    let (passport, from_schema) = match obj.get("schema_version").and_then(Value::as_str) {
        Some(SCHEMA_V1) => (
            typed_v1(doc.clone()).map_err(|(f, p)| err(f, p))?,
            SCHEMA_V1,
        ),
        Some(SCHEMA_V0) => (v0::upgrade(obj).map_err(|(f, p)| err(f, p))?, SCHEMA_V0),
        Some(other) => {
            return Err(err(
                "schema_version".into(),
                format!("unsupported {other:?} (expected {SCHEMA_V1} or {SCHEMA_V0})"),
            ));
        }
        None => {
            return Err(err(
                "schema_version".into(),
                format!("missing (expected {SCHEMA_V1})"),
            ));
        }
    };
    validate::validate_v1(&passport).map_err(|(f, p)| err(f, p))?;
    Ok(LoadedPassport {
        passport,
        from_schema,
    })
}

/// serde with the path of the offending field; serde's "missing field `x`" and "unknown field `x`"
/// messages are turned into a path ending in `x`.
fn typed_v1(doc: Value) -> Result<Passport, validate::FieldError> {
    serde_path_to_error::deserialize::<_, Passport>(doc).map_err(|e| {
        let path = e.path().to_string();
        let path = if path == "." { String::new() } else { path };
        let msg = e.inner().to_string();
        let join = |name: &str| {
            if path.is_empty() {
                name.to_string()
            } else {
                format!("{path}.{name}")
            }
        };
        for (prefix, what) in [
            ("missing field `", "missing (required)"),
            ("unknown field `", "unknown field"),
        ] {
            if let Some(rest) = msg.strip_prefix(prefix)
                && let Some((name, tail)) = rest.split_once('`')
            {
                let tail = tail.trim_start_matches(',').trim();
                let problem = if tail.is_empty() {
                    what.to_string()
                } else {
                    format!("{what}, {tail}")
                };
                // serde_path_to_error already ends the path with an unknown key.
                let field = if path == name || path.ends_with(&format!(".{name}")) {
                    path.clone()
                } else {
                    join(name)
                };
                return (field, problem);
            }
        }
        (path, msg)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn safe_json() -> Value {
        serde_json::to_value(template("safe").unwrap().unwrap()).unwrap()
    }

    fn error_of(v: &Value) -> String {
        parse_passport("p.json", &v.to_string())
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn effect_settings_are_optional_partial_and_checked() {
        let p = parse_passport("p.json", &safe_json().to_string()).unwrap();
        assert_eq!(
            p.passport.effect, None,
            "absent: the defaults, and not written back"
        );
        assert!(!p.passport.to_json_pretty().contains("effect"));
        let mut v = safe_json();
        v["effect"] = serde_json::json!({"hurt_step_time_pct": 10, "min_windows": 6});
        let p = parse_passport("p.json", &v.to_string()).unwrap().passport;
        let e = p.effect.unwrap();
        assert_eq!((e.hurt_step_time_pct, e.min_windows), (10.0, 6));
        assert_eq!(e.horizon_windows, EffectSettings::default().horizon_windows);
        v["effect"] = serde_json::json!({"hurt_pct": 10});
        assert!(error_of(&v).contains("hurt_pct"), "{}", error_of(&v));
        v["effect"] = serde_json::json!({"min_windows": 20, "horizon_windows": 10});
        assert!(
            error_of(&v).contains("effect.horizon_windows"),
            "{}",
            error_of(&v)
        );
        v["effect"] = serde_json::json!({"confidence": 1.5});
        assert!(
            error_of(&v).contains("effect.confidence"),
            "{}",
            error_of(&v)
        );
    }

    #[test]
    fn auto_rollback_and_hold_are_optional_and_checked() {
        let p = parse_passport("p.json", &safe_json().to_string()).unwrap();
        assert!(!p.passport.gates.auto_rollback, "built-in: review only");
        assert!(!p.passport.to_json_pretty().contains("auto_rollback"));
        assert_eq!(EffectSettings::default().hold_s, 1800);
        let mut v = safe_json();
        v["gates"]["auto_rollback"] = serde_json::json!(true);
        v["effect"] = serde_json::json!({"hold_s": 600});
        let p = parse_passport("p.json", &v.to_string()).unwrap().passport;
        assert!(p.gates.auto_rollback);
        assert_eq!(p.effect.unwrap().hold_s, 600);
        v["gates"]["auto_rollback"] = serde_json::json!("yes");
        assert!(error_of(&v).contains("auto_rollback"), "{}", error_of(&v));
        v["gates"]["auto_rollback"] = serde_json::json!(false);
        v["effect"] = serde_json::json!({"hold_s": 10_000_000});
        assert!(error_of(&v).contains("effect.hold_s"), "{}", error_of(&v));
        v["effect"] = serde_json::json!({"hold_s": -1});
        assert!(error_of(&v).contains("hold_s"), "{}", error_of(&v));
    }

    #[test]
    fn document_level_errors() {
        assert!(
            parse_passport("p.json", "{not-json")
                .unwrap_err()
                .to_string()
                .starts_with("p.json: invalid JSON: ")
        );
        assert_eq!(
            parse_passport("p.json", "[]").unwrap_err().to_string(),
            "p.json: expected a JSON object at the top level"
        );
        assert_eq!(
            parse_passport("p.json", "{}").unwrap_err().to_string(),
            "p.json: schema_version: missing (expected passport.v1)"
        );
        assert!(
            error_of(&serde_json::json!({"schema_version": "passport.v9"}))
                .contains("unsupported \"passport.v9\"")
        );
    }

    #[test]
    fn a_repeated_key_is_refused_at_any_depth() {
        let text = safe_json().to_string();
        assert!(parse_passport("p.json", &text).is_ok());
        // serde_json alone keeps the last copy: a reviewer reading the first would see 100000.
        let limits = safe_json()["knobs"]["concurrency"].to_string();
        let twice = text.replacen(&limits, &limits.replacen('{', r#"{"max":100000,"#, 1), 1);
        assert_ne!(twice, text);
        let e = parse_passport("p.json", &twice).unwrap_err().to_string();
        assert!(
            e.starts_with("p.json: invalid JSON: duplicate key max at line 1"),
            "{e}"
        );
    }

    #[test]
    fn serde_errors_carry_the_field_path() {
        let mut v = safe_json();
        v.as_object_mut().unwrap().remove("cooldown_s");
        assert_eq!(error_of(&v), "p.json: cooldown_s: missing (required)");

        let mut v = safe_json();
        v["surprise"] = 1.into();
        assert!(
            error_of(&v).starts_with("p.json: surprise: unknown field, expected one of"),
            "{}",
            error_of(&v)
        );

        let mut v = safe_json();
        v["knobs"]["concurrency"]["maximum"] = 3.into();
        assert!(
            error_of(&v).starts_with("p.json: knobs.concurrency.maximum: unknown field"),
            "{}",
            error_of(&v)
        );

        let mut v = safe_json();
        v["knobs"]["concurrency"]
            .as_object_mut()
            .unwrap()
            .remove("baseline");
        assert_eq!(
            error_of(&v),
            "p.json: knobs.concurrency.baseline: missing (required)"
        );

        let mut v = safe_json();
        v["allowed_chords"][1] = "WARP-DRIVE".into();
        assert!(
            error_of(&v).starts_with("p.json: allowed_chords[1]: unknown variant `WARP-DRIVE`"),
            "{}",
            error_of(&v)
        );

        let mut v = safe_json();
        v["cooldown_s"] = (-5).into();
        assert!(
            error_of(&v).starts_with("p.json: cooldown_s: invalid value: integer `-5`"),
            "{}",
            error_of(&v)
        );

        let mut v = safe_json();
        v["knobs"]["concurrency"]["max_delta_per_step"] = serde_json::json!({"percent": 3});
        assert!(
            error_of(&v).contains("knobs.concurrency.max_delta_per_step"),
            "{}",
            error_of(&v)
        );
    }

    #[test]
    fn semantic_errors() {
        type Mutation = fn(&mut Value);
        let cases: Vec<(Mutation, &str)> = vec![
            (
                |v| v["name"] = "Safe Profile".into(),
                "p.json: name: \"Safe Profile\" is not a valid name",
            ),
            (
                |v| v["version"] = "1.0".into(),
                "p.json: version: \"1.0\" is not a semantic version",
            ),
            (
                |v| v["allowed_chords"] = serde_json::json!([]),
                "p.json: allowed_chords: must list at least one chord",
            ),
            (
                |v| v["allowed_chords"] = serde_json::json!(["NORMAL-HOLD", "TIMEOUT-GUARD"]),
                "p.json: allowed_chords[1]: TIMEOUT-GUARD is an advanced chord; permit it explicitly in advanced_chords",
            ),
            (
                |v| v["advanced_chords"] = serde_json::json!(["DRIFT-RETUNE"]),
                "p.json: advanced_chords[0]: DRIFT-RETUNE is a safe chord",
            ),
            (
                |v| v["allowed_chords"] = serde_json::json!(["NORMAL-HOLD", "NORMAL-HOLD"]),
                "p.json: allowed_chords[1]: NORMAL-HOLD is listed twice",
            ),
            (
                |v| v["relock_stable_windows"] = 0.into(),
                "p.json: relock_stable_windows: must be at least 1",
            ),
            (
                |v| v["knobs"]["concurrency"]["min"] = 20.into(),
                "p.json: knobs.concurrency: min 20 is greater than max 16",
            ),
            (
                |v| v["knobs"]["concurrency"]["baseline"] = 17.into(),
                "p.json: knobs.concurrency.baseline: 17 lies outside [1, 16]",
            ),
            (
                |v| {
                    v["knobs"]["concurrency"]["max_delta_per_step"] =
                        serde_json::json!({"absolute": 0})
                },
                "p.json: knobs.concurrency.max_delta_per_step.absolute: must be greater than 0",
            ),
            (
                |v| {
                    v["knobs"]["concurrency"]["max_delta_per_step"] =
                        serde_json::json!({"relative": 11})
                },
                "p.json: knobs.concurrency.max_delta_per_step.relative: must lie in (0, 10]",
            ),
            (
                |v| v["knobs"]["concurrency"]["min_relative_change"] = (-0.5).into(),
                "p.json: knobs.concurrency.min_relative_change",
            ),
            (
                |v| v["knobs"]["Bad-Knob"] = v["knobs"]["concurrency"].clone(),
                "p.json: knobs.Bad-Knob: knob names are snake_case",
            ),
            (
                |v| v["invariants"] = serde_json::json!(["a", "a"]),
                "p.json: invariants[1]: a is listed twice",
            ),
            (
                |v| v["policies"] = serde_json::json!([{"id": "acme/drift", "sha256": "XYZ"}]),
                "p.json: policies[0].sha256: must be 64 lowercase hex digits",
            ),
            (
                |v| v["description"] = "two\nlines".into(),
                "p.json: description: must be a single line",
            ),
        ];
        for (mutate, want) in cases {
            let mut v = safe_json();
            mutate(&mut v);
            let got = error_of(&v);
            assert!(got.starts_with(want), "got {got:?}, want prefix {want:?}");
            assert!(!got.contains('\n'));
        }
    }

    #[test]
    fn pinned_policies_and_advanced_chords_are_accepted() {
        let mut v = safe_json();
        v["advanced_chords"] = serde_json::json!(["TIMEOUT-GUARD"]);
        v["policies"] =
            serde_json::json!([{"id": "acme/timeout-guard", "sha256": "ab".repeat(32)}]);
        let p = parse_passport("p.json", &v.to_string()).unwrap().passport;
        assert!(p.chord_allowed(ChordId::TimeoutGuard));
        assert!(!p.chord_allowed(ChordId::CommCongestion));
        assert_eq!(
            p.pinned_digest("acme/timeout-guard"),
            Some("ab".repeat(32).as_str())
        );
        assert_eq!(p.pinned_digest("other"), None);
    }
}
