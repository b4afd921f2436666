//! Knob values a run starts from (`--knobs k=v,…` or the passport's baselines) and the limits the
//! policies are shown for them. Pure: strings and a passport in, values out.

use std::collections::BTreeMap;

use crate::passport::{Passport, format_knob_value, is_knob_name};
use crate::policy::{KnobLimit, Limits};

/// Where the starting knob values came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KnobOrigin {
    /// Every governed knob at its passport baseline (no `--knobs`).
    PassportBaseline,
    /// `--knobs` for some knobs, the passport baseline for the rest.
    Flags,
    /// The workload's pod-template annotations (`--knobs-from-cluster`), the passport baseline for
    /// governed knobs it does not carry.
    Cluster,
    /// A replayed run: the previous run's `knobs_before`.
    Replay,
}

/// Parses `--knobs` entries (`k=v`, already split at commas). Knob names must be snake_case and
/// governed by the passport (a typo must not silently leave a knob at its baseline); values must be
/// finite numbers; a knob may appear once.
pub fn parse_knob_flags(
    entries: &[String],
    passport: &Passport,
) -> Result<BTreeMap<String, f64>, String> {
    let mut out = BTreeMap::new();
    for raw in entries {
        let entry = raw.trim();
        if entry.is_empty() {
            continue;
        }
        let Some((k, v)) = entry.split_once('=') else {
            return Err(format!(
                "--knobs: {entry:?} is not KNOB=VALUE (e.g. --knobs microbatch_size=32,concurrency=8)"
            ));
        };
        let (k, v) = (k.trim(), v.trim());
        if !is_knob_name(k) {
            return Err(format!(
                "--knobs: {k:?} is not a knob name (snake_case: [a-z][a-z0-9_]*, at most 58)"
            ));
        }
        let value: f64 = v
            .parse()
            .ok()
            .filter(|x: &f64| x.is_finite())
            .ok_or_else(|| format!("--knobs: {k}={v:?} is not a finite number"))?;
        if passport.knob(k).is_none() {
            let governed: Vec<&str> = passport.knobs.keys().map(String::as_str).collect();
            return Err(format!(
                "--knobs: passport {} does not govern {k} (it governs {})",
                passport.name,
                governed.join(", ")
            ));
        }
        if out.insert(k.to_string(), value).is_some() {
            return Err(format!("--knobs: {k} is given twice"));
        }
    }
    Ok(out)
}

/// The starting values: every knob the passport governs, at `given` where set, else at its baseline.
pub fn starting_knobs(
    passport: &Passport,
    given: &BTreeMap<String, f64>,
) -> (BTreeMap<String, f64>, KnobOrigin) {
    let knobs = passport
        .knobs
        .iter()
        .map(|(k, l)| (k.clone(), given.get(k).copied().unwrap_or(l.baseline)))
        .collect();
    let origin = if given.is_empty() {
        KnobOrigin::PassportBaseline
    } else {
        KnobOrigin::Flags
    };
    (knobs, origin)
}

/// The passport's limits as the policies see them for the current values: `max_delta` is the step
/// limit from the current value (`relative × |current|`, or the whole range when the passport sets no
/// step limit). Propose-only knobs are shown too: the policy may propose, the envelope records it.
pub fn policy_limits(passport: &Passport, current: &BTreeMap<String, f64>) -> Limits {
    Limits(
        passport
            .knobs
            .iter()
            .map(|(k, l)| {
                let from = current.get(k).copied().unwrap_or(l.baseline);
                let max_delta = l
                    .max_delta_per_step
                    .map_or(l.max - l.min, |m| m.allowed_from(from));
                (
                    k.clone(),
                    KnobLimit {
                        min: l.min,
                        max: l.max,
                        max_delta,
                        baseline: l.baseline,
                    },
                )
            })
            .collect(),
    )
}

/// `k=v,k=v` in knob order, for messages and summaries.
pub fn knobs_text(knobs: &BTreeMap<String, f64>) -> String {
    knobs
        .iter()
        .map(|(k, v)| format!("{k}={}", format_knob_value(*v)))
        .collect::<Vec<_>>()
        .join(",")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::passport::template;

    fn safe() -> Passport {
        template("safe").unwrap().unwrap()
    }

    fn entries(s: &[&str]) -> Vec<String> {
        s.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn flags_parse_and_fill_in_baselines() {
        let p = safe();
        let given =
            parse_knob_flags(&entries(&["concurrency=6", " microbatch_size = 16 "]), &p).unwrap();
        let (knobs, origin) = starting_knobs(&p, &given);
        assert_eq!(origin, KnobOrigin::Flags);
        assert_eq!(knobs["concurrency"], 6.0);
        assert_eq!(knobs["microbatch_size"], 16.0);
        assert_eq!(knobs["grad_accum_steps"], 4.0);
        assert_eq!(knobs.len(), p.knobs.len());
        let (base, origin) = starting_knobs(&p, &BTreeMap::new());
        assert_eq!(origin, KnobOrigin::PassportBaseline);
        assert!(base.iter().all(|(k, v)| *v == p.knobs[k].baseline));
    }

    #[test]
    fn bad_flags_are_one_line_errors() {
        let p = safe();
        let cases = [
            ("concurrency", "is not KNOB=VALUE"),
            ("Concurrency=3", "is not a knob name"),
            ("concurrency=fast", "is not a finite number"),
            ("concurrency=NaN", "is not a finite number"),
            ("concurrency=inf", "is not a finite number"),
            ("timeout_ms=9000", "does not govern timeout_ms"),
        ];
        for (flag, want) in cases {
            let e = parse_knob_flags(&entries(&[flag]), &p).unwrap_err();
            assert!(e.contains(want), "{flag}: {e}");
            assert!(!e.contains('\n'));
        }
        let e = parse_knob_flags(&entries(&["concurrency=3", "concurrency=4"]), &p).unwrap_err();
        assert!(e.contains("given twice"), "{e}");
    }

    #[test]
    fn limits_follow_the_step_limit_from_the_current_value() {
        let mut p = safe();
        let mut current: BTreeMap<String, f64> = p
            .knobs
            .iter()
            .map(|(k, l)| (k.clone(), l.baseline))
            .collect();
        let l = policy_limits(&p, &current);
        // safe: absolute step 1.
        assert_eq!(l.get("concurrency").unwrap().max_delta, 1.0);
        assert_eq!(l.get("concurrency").unwrap().baseline, 8.0);
        p.knobs.get_mut("concurrency").unwrap().max_delta_per_step =
            Some(crate::passport::MaxDelta::Relative(0.5));
        current.insert("concurrency".into(), 12.0);
        assert_eq!(
            policy_limits(&p, &current)
                .get("concurrency")
                .unwrap()
                .max_delta,
            6.0
        );
        p.knobs.get_mut("concurrency").unwrap().max_delta_per_step = None;
        assert_eq!(
            policy_limits(&p, &current)
                .get("concurrency")
                .unwrap()
                .max_delta,
            15.0
        );
    }
}
