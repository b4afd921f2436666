//! Semantic validation of `passport.v1` and the one-line error every failure turns into:
//! `<source>: <field>: <problem>`. Fail-first, in document order, so the same file always reports the
//! same error.

use std::collections::BTreeSet;
use std::fmt;

use super::catalog::ChordId;
use super::schema::{MaxDelta, Passport, SCHEMA_V1};

/// Longest passport, knob and policy name.
const MAX_NAME: usize = 63;
/// `modekeeper/knob.<knob>`: the annotation name part (`knob.<knob>`) is at most 63 characters.
pub const MAX_KNOB_NAME: usize = 58;
/// Cooldowns beyond 30 days are a typo, and would make millisecond arithmetic needlessly large.
const MAX_COOLDOWN_S: u64 = 30 * 24 * 3600;

/// Why a passport was rejected, printed as one line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PassportError {
    /// Where the passport came from: a file path or `template:<name>`.
    pub source: String,
    /// The offending field as a path (`knobs.microbatch_size.max`); empty for whole-document problems.
    pub field: String,
    pub problem: String,
}

impl fmt::Display for PassportError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.field.is_empty() {
            write!(f, "{}: {}", self.source, self.problem)
        } else {
            write!(f, "{}: {}: {}", self.source, self.field, self.problem)
        }
    }
}

impl std::error::Error for PassportError {}

/// A field-level problem before the source is known.
pub(crate) type FieldError = (String, String);

pub(crate) fn field_err(field: impl Into<String>, problem: impl Into<String>) -> FieldError {
    (field.into(), problem.into())
}

/// `[a-z0-9]([-_a-z0-9]*[a-z0-9])?`, at most 63 characters.
pub(crate) fn is_simple_name(s: &str) -> bool {
    let b = s.as_bytes();
    let ok = |c: &u8| c.is_ascii_lowercase() || c.is_ascii_digit();
    !b.is_empty()
        && b.len() <= MAX_NAME
        && ok(&b[0])
        && ok(&b[b.len() - 1])
        && b.iter().all(|c| ok(c) || *c == b'-' || *c == b'_')
}

/// Knob names: snake_case, `[a-z][a-z0-9_]*`, short enough to fit an annotation key.
pub fn is_knob_name(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= MAX_KNOB_NAME
        && b[0].is_ascii_lowercase()
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'_')
}

/// `MAJOR.MINOR.PATCH` with an optional `-pre`/`+build` suffix of `[0-9A-Za-z.-]`.
fn is_semver(s: &str) -> bool {
    let (core, suffix) = match s.find(['-', '+']) {
        Some(i) => (&s[..i], &s[i + 1..]),
        None => (s, ""),
    };
    let parts: Vec<&str> = core.split('.').collect();
    let num = |p: &&str| {
        !p.is_empty()
            && p.bytes().all(|c| c.is_ascii_digit())
            && (p.len() == 1 || !p.starts_with('0'))
    };
    parts.len() == 3
        && parts.iter().all(num)
        && (core.len() == s.len()
            || (!suffix.is_empty()
                && suffix
                    .bytes()
                    .all(|c| c.is_ascii_alphanumeric() || c == b'.' || c == b'-' || c == b'+')))
}

fn is_sha256_hex(s: &str) -> bool {
    s.len() == 64
        && s.bytes()
            .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c))
}

/// Checks everything serde cannot: names, ranges, chord lists, uniqueness.
pub(crate) fn validate_v1(p: &Passport) -> Result<(), FieldError> {
    if p.schema_version != SCHEMA_V1 {
        return Err(field_err(
            "schema_version",
            format!("expected {SCHEMA_V1}, got {:?}", p.schema_version),
        ));
    }
    if !is_simple_name(&p.name) {
        return Err(field_err(
            "name",
            format!(
                "{:?} is not a valid name (lowercase letters, digits, '-' or '_', at most 63)",
                p.name
            ),
        ));
    }
    if !is_semver(&p.version) {
        return Err(field_err(
            "version",
            format!("{:?} is not a semantic version (e.g. 1.0.0)", p.version),
        ));
    }
    if p.description.contains(['\n', '\r']) {
        return Err(field_err("description", "must be a single line"));
    }
    if p.allowed_chords.is_empty() {
        return Err(field_err("allowed_chords", "must list at least one chord"));
    }
    check_chords("allowed_chords", &p.allowed_chords, false)?;
    check_chords("advanced_chords", &p.advanced_chords, true)?;
    if p.cooldown_s > MAX_COOLDOWN_S {
        return Err(field_err(
            "cooldown_s",
            format!("{} s is more than 30 days", p.cooldown_s),
        ));
    }
    if p.relock_stable_windows == 0 {
        return Err(field_err("relock_stable_windows", "must be at least 1"));
    }
    for (name, k) in &p.knobs {
        let at = |f: &str| format!("knobs.{name}.{f}");
        if !is_knob_name(name) {
            return Err(field_err(
                format!("knobs.{name}"),
                "knob names are snake_case ([a-z][a-z0-9_]*, at most 58 characters)",
            ));
        }
        if k.min > k.max {
            return Err(field_err(
                format!("knobs.{name}"),
                format!("min {} is greater than max {}", k.min, k.max),
            ));
        }
        if !(k.min <= k.baseline && k.baseline <= k.max) {
            return Err(field_err(
                at("baseline"),
                format!("{} lies outside [{}, {}]", k.baseline, k.min, k.max),
            ));
        }
        match k.max_delta_per_step {
            Some(MaxDelta::Absolute(a)) if !(a > 0.0 && a.is_finite()) => {
                return Err(field_err(
                    at("max_delta_per_step.absolute"),
                    format!("must be greater than 0, got {a}"),
                ));
            }
            Some(MaxDelta::Relative(r)) if !(r > 0.0 && r <= 10.0) => {
                return Err(field_err(
                    at("max_delta_per_step.relative"),
                    format!("must lie in (0, 10], got {r}"),
                ));
            }
            _ => {}
        }
        if k.cooldown_s > MAX_COOLDOWN_S {
            return Err(field_err(
                at("cooldown_s"),
                format!("{} s is more than 30 days", k.cooldown_s),
            ));
        }
        if !(0.0..=10.0).contains(&k.min_relative_change) {
            return Err(field_err(
                at("min_relative_change"),
                format!("must lie in [0, 10], got {}", k.min_relative_change),
            ));
        }
    }
    let mut seen = BTreeSet::new();
    for (i, inv) in p.invariants.iter().enumerate() {
        if !is_simple_name(inv) {
            return Err(field_err(
                format!("invariants[{i}]"),
                format!("{inv:?} is not a valid invariant id"),
            ));
        }
        if !seen.insert(inv) {
            return Err(field_err(
                format!("invariants[{i}]"),
                format!("{inv} is listed twice"),
            ));
        }
    }
    let mut seen = BTreeSet::new();
    for (i, pol) in p.policies.iter().enumerate() {
        let valid_id = !pol.id.is_empty()
            && pol.id.len() <= 128
            && pol.id.bytes().all(|c| {
                c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.' | b':' | b'/')
            });
        if !valid_id {
            return Err(field_err(
                format!("policies[{i}].id"),
                format!("{:?} is not a valid policy id", pol.id),
            ));
        }
        if !is_sha256_hex(&pol.sha256) {
            return Err(field_err(
                format!("policies[{i}].sha256"),
                "must be 64 lowercase hex digits",
            ));
        }
        if !seen.insert(&pol.id) {
            return Err(field_err(
                format!("policies[{i}].id"),
                format!("{} is pinned twice", pol.id),
            ));
        }
    }
    if let Some(e) = &p.effect {
        check_effect(e)?;
    }
    Ok(())
}

/// The effect thresholds: in ranges where a verdict still means something.
fn check_effect(e: &super::EffectSettings) -> Result<(), FieldError> {
    let range = |field: &str, v: f64, lo: f64, hi: f64| {
        if v.is_finite() && v >= lo && v <= hi {
            Ok(())
        } else {
            Err(field_err(
                format!("effect.{field}"),
                format!("{v} is outside {lo}..={hi}"),
            ))
        }
    };
    range("settle_windows", e.settle_windows as f64, 0.0, 1000.0)?;
    range("min_windows", f64::from(e.min_windows), 3.0, 1000.0)?;
    range("horizon_windows", f64::from(e.horizon_windows), 3.0, 1000.0)?;
    if e.horizon_windows < e.min_windows {
        return Err(field_err(
            "effect.horizon_windows",
            format!(
                "{} is fewer than min_windows ({}): no verdict could ever be given",
                e.horizon_windows, e.min_windows
            ),
        ));
    }
    range("confidence", e.confidence, 0.5, 0.999)?;
    range("material_pct", e.material_pct, 0.0, 100.0)?;
    range("hurt_step_time_pct", e.hurt_step_time_pct, 0.0, 1000.0)?;
    // Up to a week: a hold is a pause on one direction, not a permanent ban.
    range("hold_s", e.hold_s as f64, 0.0, 604_800.0)
}

fn check_chords(field: &str, chords: &[ChordId], advanced: bool) -> Result<(), FieldError> {
    let mut seen = BTreeSet::new();
    for (i, c) in chords.iter().enumerate() {
        if c.is_advanced() != advanced {
            let problem = if advanced {
                format!("{c} is a safe chord; list it in allowed_chords")
            } else {
                format!("{c} is an advanced chord; permit it explicitly in advanced_chords")
            };
            return Err(field_err(format!("{field}[{i}]"), problem));
        }
        if !seen.insert(*c) {
            return Err(field_err(
                format!("{field}[{i}]"),
                format!("{c} is listed twice"),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert!(is_simple_name("safe"));
        assert!(is_simple_name("observe_max"));
        assert!(is_simple_name("a-1"));
        assert!(!is_simple_name(""));
        assert!(!is_simple_name("Safe"));
        assert!(!is_simple_name("-x"));
        assert!(!is_simple_name("x-"));
        assert!(!is_simple_name(&"a".repeat(64)));
        assert!(is_knob_name("microbatch_size"));
        assert!(!is_knob_name("1x"));
        assert!(!is_knob_name("micro-batch"));
        assert!(!is_knob_name(&"a".repeat(59)));
    }

    #[test]
    fn semver() {
        for ok in ["1.0.0", "0.1.0", "10.20.30", "1.0.0-rc.1", "1.0.0+build.5"] {
            assert!(is_semver(ok), "{ok}");
        }
        for bad in [
            "1.0",
            "1.0.0.0",
            "01.0.0",
            "v1.0.0",
            "1.0.0-",
            "1..0",
            "1.0.0-a b",
        ] {
            assert!(!is_semver(bad), "{bad}");
        }
    }

    #[test]
    fn sha256_hex() {
        assert!(is_sha256_hex(&"ab".repeat(32)));
        assert!(!is_sha256_hex(&"AB".repeat(32)));
        assert!(!is_sha256_hex(&"ab".repeat(31)));
    }

    #[test]
    fn error_line_format() {
        let e = PassportError {
            source: "p.json".into(),
            field: "knobs.x.min".into(),
            problem: "bad".into(),
        };
        assert_eq!(e.to_string(), "p.json: knobs.x.min: bad");
        let e = PassportError {
            source: "p.json".into(),
            field: String::new(),
            problem: "invalid JSON".into(),
        };
        assert_eq!(e.to_string(), "p.json: invalid JSON");
    }
}
