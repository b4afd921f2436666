//! The seven built-in passports. Their data is the first implementation's `passport.v0` templates,
//! kept verbatim in `templates/*.v0.json` and translated to `passport.v1` by the same code that
//! upgrades users' v0 files, so the numbers have exactly one source.

use super::{Passport, PassportError, parse_passport};

/// Template names, sorted (what `passport templates` lists).
pub const TEMPLATE_NAMES: [&str; 7] = ["comm", "cost", "io", "perf", "pilot", "recovery", "safe"];

fn template_source(name: &str) -> Option<&'static str> {
    Some(match name {
        "comm" => include_str!("templates/comm.v0.json"),
        "cost" => include_str!("templates/cost.v0.json"),
        "io" => include_str!("templates/io.v0.json"),
        "perf" => include_str!("templates/perf.v0.json"),
        "pilot" => include_str!("templates/pilot.v0.json"),
        "recovery" => include_str!("templates/recovery.v0.json"),
        "safe" => include_str!("templates/safe.v0.json"),
        _ => return None,
    })
}

/// A built-in passport by name; `None` for an unknown name.
pub fn template(name: &str) -> Option<Result<Passport, PassportError>> {
    template_source(name)
        .map(|text| parse_passport(&format!("template:{name}"), text).map(|l| l.passport))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::passport::{Actuation, ChordId, MaxDelta};

    fn t(name: &str) -> Passport {
        template(name).unwrap().unwrap()
    }

    #[test]
    fn every_template_is_a_valid_v1_passport_that_round_trips() {
        for name in TEMPLATE_NAMES {
            let p = t(name);
            assert_eq!(p.name, name);
            assert_eq!(p.schema_version, "passport.v1");
            let shown = p.to_json_pretty();
            let again = parse_passport("shown", &shown).unwrap();
            assert_eq!(
                again.passport, p,
                "{name}: show output must validate and mean the same"
            );
            assert_eq!(again.from_schema, "passport.v1");
            assert_eq!(p.invariants[0], "keep_global_batch_stable");
            assert!(!p.gates.apply, "{name}: no template allows apply");
            assert!(
                p.advanced_chords.is_empty(),
                "{name}: v0 could not permit advanced chords"
            );
        }
        assert!(template("nope").is_none());
    }

    /// The table of reference §12.3, cell by cell.
    #[test]
    fn template_data_matches_the_reference_table() {
        use ChordId::*;
        let all6 = vec![
            NormalHold,
            DriftRetune,
            BurstAbsorb,
            InputStraggler,
            RecoverRelock,
        ];
        /// name, chords, hot, cold, cooldown_s, max delta (steps), relock, knob limits
        type Row<'a> = (
            &'a str,
            Vec<ChordId>,
            &'a [&'a str],
            &'a [&'a str],
            u64,
            f64,
            u32,
            &'a [(&'a str, f64, f64)],
        );
        let rows: [Row; 7] = [
            (
                "pilot",
                vec![NormalHold, RecoverRelock],
                &[],
                &["grad_accum_steps", "microbatch_size"],
                120,
                1.0,
                3,
                &[
                    ("grad_accum_steps", 2.0, 8.0),
                    ("microbatch_size", 16.0, 64.0),
                ],
            ),
            (
                "safe",
                all6.clone(),
                &["concurrency"],
                &[
                    "grad_accum_steps",
                    "microbatch_size",
                    "dataloader_prefetch_factor",
                    "dataloader_num_workers",
                ],
                90,
                1.0,
                3,
                &[
                    ("grad_accum_steps", 1.0, 12.0),
                    ("microbatch_size", 8.0, 96.0),
                    ("concurrency", 1.0, 16.0),
                ],
            ),
            (
                "perf",
                all6.clone(),
                &["concurrency", "dataloader_prefetch_factor"],
                &[
                    "grad_accum_steps",
                    "microbatch_size",
                    "dataloader_num_workers",
                ],
                45,
                2.0,
                2,
                &[
                    ("grad_accum_steps", 1.0, 16.0),
                    ("microbatch_size", 8.0, 128.0),
                    ("concurrency", 1.0, 32.0),
                ],
            ),
            (
                "cost",
                vec![NormalHold, DriftRetune, BurstAbsorb, RecoverRelock],
                &["concurrency"],
                &["grad_accum_steps", "microbatch_size"],
                75,
                1.0,
                3,
                &[
                    ("grad_accum_steps", 2.0, 20.0),
                    ("microbatch_size", 8.0, 128.0),
                    ("concurrency", 1.0, 20.0),
                ],
            ),
            (
                "io",
                vec![NormalHold, BurstAbsorb, InputStraggler, RecoverRelock],
                &["dataloader_prefetch_factor"],
                &["dataloader_num_workers", "concurrency", "microbatch_size"],
                60,
                1.0,
                2,
                &[
                    ("dataloader_num_workers", 2.0, 16.0),
                    ("dataloader_prefetch_factor", 1.0, 8.0),
                    ("concurrency", 1.0, 16.0),
                ],
            ),
            (
                "comm",
                vec![NormalHold, DriftRetune, BurstAbsorb, RecoverRelock],
                &["concurrency"],
                &["grad_accum_steps", "microbatch_size", "comm_bucket_mb"],
                90,
                1.0,
                3,
                &[
                    ("comm_bucket_mb", 32.0, 256.0),
                    ("grad_accum_steps", 1.0, 16.0),
                    ("microbatch_size", 8.0, 128.0),
                ],
            ),
            (
                "recovery",
                vec![NormalHold, InputStraggler, RecoverRelock],
                &["concurrency"],
                &[
                    "grad_accum_steps",
                    "microbatch_size",
                    "dataloader_prefetch_factor",
                ],
                120,
                1.0,
                4,
                &[
                    ("grad_accum_steps", 2.0, 12.0),
                    ("microbatch_size", 8.0, 96.0),
                    ("concurrency", 1.0, 12.0),
                ],
            ),
        ];
        for (name, chords, hot, cold, cooldown, delta, relock, limits) in rows {
            let p = t(name);
            assert_eq!(p.allowed_chords, chords, "{name}");
            assert_eq!(p.cooldown_s, cooldown, "{name}");
            assert_eq!(p.relock_stable_windows, relock, "{name}");
            let mut knobs: Vec<&str> = hot.iter().chain(cold).copied().collect();
            knobs.sort_unstable();
            assert_eq!(
                p.knobs.keys().map(String::as_str).collect::<Vec<_>>(),
                knobs,
                "{name}"
            );
            for k in hot {
                assert_eq!(p.knobs[*k].actuation, Actuation::Hot, "{name}.{k}");
            }
            for k in cold {
                assert_eq!(p.knobs[*k].actuation, Actuation::Cold, "{name}.{k}");
            }
            for (k, lo, hi) in limits {
                assert_eq!((p.knobs[*k].min, p.knobs[*k].max), (*lo, *hi), "{name}.{k}");
            }
            for (k, l) in &p.knobs {
                let step = if k == "comm_bucket_mb" { 16.0 } else { 1.0 };
                assert_eq!(
                    l.max_delta_per_step,
                    Some(MaxDelta::Absolute(delta * step)),
                    "{name}.{k}"
                );
                assert!(!l.propose_only, "{name}.{k}");
                assert!(l.min <= l.baseline && l.baseline <= l.max, "{name}.{k}");
            }
        }
    }

    #[test]
    fn chord_cooldowns_become_the_longest_cooldown_of_the_chords_touching_a_knob() {
        let safe = t("safe");
        // recover_s 180 applies to every knob (RELOCK may return any knob to its baseline).
        assert!(safe.knobs.values().all(|k| k.cooldown_s == 180));
        let perf = t("perf");
        assert_eq!(
            perf.knobs["grad_accum_steps"].cooldown_s, 90,
            "max(drift 60, recover 90)"
        );
        let pilot = t("pilot");
        assert_eq!(pilot.knobs["microbatch_size"].cooldown_s, 240, "relock_s");
        let comm = t("comm");
        assert_eq!(comm.knobs["comm_bucket_mb"].cooldown_s, 180);
        assert!(comm.gates.require_comm_telemetry);
    }
}
