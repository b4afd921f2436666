//! Property tests: whatever the passport, state and proposals, accepted values respect the passport.

use std::collections::BTreeMap;

use proptest::prelude::*;

use super::tests::passport;
use super::*;
use crate::passport::{KnobLimits, MaxDelta, knob_limits};

const KNOBS: [&str; 3] = ["microbatch_size", "grad_accum_steps", "concurrency"];

fn arb_limits() -> impl Strategy<Value = KnobLimits> {
    (
        -50i32..50,
        0i32..100,
        prop_oneof![
            Just(None),
            (1u32..20).prop_map(|a| Some(MaxDelta::Absolute(a as f64 / 2.0))),
            (1u32..30).prop_map(|r| Some(MaxDelta::Relative(r as f64 / 10.0)))
        ],
        0u64..100,
        prop_oneof![Just(0.0), (1u32..50).prop_map(|x| x as f64 / 100.0)],
        prop::bool::weighted(0.1),
    )
        .prop_map(|(lo, width, md, cooldown_s, min_rel, propose_only)| {
            let (min, max) = (lo as f64, (lo + width) as f64);
            let mut l = knob_limits(min, max, min);
            l.max_delta_per_step = md;
            l.cooldown_s = cooldown_s;
            l.min_relative_change = min_rel;
            l.propose_only = propose_only;
            l
        })
}

fn arb_value() -> impl Strategy<Value = f64> {
    prop_oneof![
        8 => (-200i32..200).prop_map(f64::from),
        3 => (-2000i32..2000).prop_map(|x| x as f64 / 8.0),
        1 => Just(f64::NAN),
        1 => Just(f64::INFINITY),
    ]
}

fn arb_proposal() -> impl Strategy<Value = Proposal> {
    let chords = [
        "DRIFT-RETUNE",
        "BURST-ABSORB",
        "TIMEOUT-GUARD",
        "INPUT-STRAGGLER",
        "BOGUS",
    ];
    (0usize..5, 0usize..4, arb_value()).prop_map(move |(c, k, to)| Proposal {
        chord: chords[c].into(),
        knob: KNOBS.get(k).copied().unwrap_or("timeout_ms").into(),
        to,
        reason: "p".into(),
    })
}

fn arb_state() -> impl Strategy<Value = EnvelopeState> {
    (
        prop::option::of(0i64..200_000),
        prop::collection::vec((0usize..3, 0i64..200_000), 0..3),
    )
        .prop_map(|(g, ks)| EnvelopeState {
            holds: BTreeMap::new(),
            last_change: g.map(|at_ms| EvalPoint { at_ms, window: 0 }),
            knobs: ks
                .into_iter()
                .map(|(k, at_ms)| {
                    (
                        KNOBS[k].to_string(),
                        KnobHistory {
                            at: EvalPoint { at_ms, window: 0 },
                            from: 1.0,
                            value: 2.0,
                        },
                    )
                })
                .collect(),
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn accepted_values_always_lie_within_the_passport(
        limits in prop::collection::vec(arb_limits(), 3),
        current in prop::collection::vec(prop::option::of(arb_value()), 3),
        proposals in prop::collection::vec(arb_proposal(), 0..6),
        state in arb_state(),
        global_cooldown in 0u64..60,
        invariant in any::<bool>(),
        at_ms in 0i64..300_000,
    ) {
        let mut p = passport(KNOBS.iter().copied().zip(limits).collect(), if invariant { &["keep_global_batch_stable"] } else { &[] });
        p.cooldown_s = global_cooldown;
        let current: BTreeMap<String, f64> =
            KNOBS.iter().zip(&current).filter_map(|(k, v)| v.map(|v| (k.to_string(), v))).collect();
        let at = EvalPoint { at_ms, window: 1 };
        let o = enforce(&p, &current, &state, at, &proposals);

        prop_assert_eq!(o.accepted.len() + o.blocked.len(), proposals.len());
        let mut knobs_seen = std::collections::BTreeSet::new();
        for a in &o.accepted {
            let l = &p.knobs[&a.knob];
            let requested = proposals.iter().find(|x| x.knob == a.knob).unwrap().to;
            prop_assert!(knobs_seen.insert(a.knob.clone()), "a knob is accepted at most once");
            prop_assert!(a.to.is_finite() && l.min <= a.to && a.to <= l.max, "{:?} outside [{}, {}]", a, l.min, l.max);
            prop_assert_eq!(a.from, current[&a.knob]);
            prop_assert!(a.to != a.from);
            let (lo, hi) = if requested > a.from { (a.from, requested) } else { (requested, a.from) };
            prop_assert!(lo <= a.to && a.to <= hi, "never further than requested: {:?} requested {}", a, requested);
            if let Some(md) = l.max_delta_per_step {
                prop_assert!((a.to - a.from).abs() <= md.allowed_from(a.from) + 1e-9, "{:?} exceeds {:?}", a, md);
            }
            if l.min_relative_change > 0.0 && a.from != 0.0 {
                prop_assert!((a.to - a.from).abs() / a.from.abs() >= l.min_relative_change);
            }
            prop_assert!(!l.propose_only);
            let chord = ChordId::parse(&a.chord).unwrap();
            prop_assert!(p.chord_allowed(chord));
            if let Some(g) = state.last_change {
                prop_assert!(global_cooldown == 0 || at_ms >= g.at_ms + global_cooldown as i64 * 1000);
            }
            if let Some(h) = state.knobs.get(&a.knob) {
                prop_assert!(l.cooldown_s == 0 || at_ms >= h.at.at_ms + l.cooldown_s as i64 * 1000);
            }
            prop_assert_eq!(o.state.knobs[&a.knob].value, a.to);
        }
        if invariant {
            let after = |k: &str| o.accepted.iter().find(|a| a.knob == k).map(|a| a.to);
            let (mb, ga) = (after("microbatch_size"), after("grad_accum_steps"));
            if mb.is_some() || ga.is_some() {
                let before = current["microbatch_size"] * current["grad_accum_steps"];
                let now = mb.unwrap_or(current["microbatch_size"]) * ga.unwrap_or(current["grad_accum_steps"]);
                prop_assert!((now - before).abs() <= 1e-9 * before.abs().max(1.0));
            }
        }
        if o.accepted.is_empty() {
            prop_assert_eq!(&o.state, &state);
        }
        let again = enforce(&p, &current, &state, at, &proposals);
        prop_assert_eq!(again, o);
    }
}
