use std::collections::BTreeMap;

use super::*;
use crate::passport::{KnobLimits, MaxDelta, Passport, knob_limits, template};

const T0: EvalPoint = EvalPoint {
    at_ms: 1_000_000,
    window: 10,
};

pub(super) fn passport(knobs: Vec<(&str, KnobLimits)>, invariants: &[&str]) -> Passport {
    Passport {
        schema_version: "passport.v1".into(),
        name: "test".into(),
        version: "1.0.0".into(),
        description: String::new(),
        allowed_chords: vec![
            ChordId::NormalHold,
            ChordId::DriftRetune,
            ChordId::BurstAbsorb,
            ChordId::RecoverRelock,
        ],
        advanced_chords: vec![],
        cooldown_s: 0,
        relock_stable_windows: 2,
        knobs: knobs.into_iter().map(|(k, l)| (k.to_string(), l)).collect(),
        invariants: invariants.iter().map(|s| s.to_string()).collect(),
        gates: Default::default(),
        policies: vec![],
        effect: None,
    }
}

fn conc(min: f64, max: f64) -> Passport {
    passport(vec![("concurrency", knob_limits(min, max, min))], &[])
}

fn prop(chord: &str, knob: &str, to: f64) -> Proposal {
    Proposal {
        chord: chord.into(),
        knob: knob.into(),
        to,
        reason: "test".into(),
    }
}

fn cur(pairs: &[(&str, f64)]) -> BTreeMap<String, f64> {
    pairs.iter().map(|(k, v)| (k.to_string(), *v)).collect()
}

fn run(p: &Passport, current: &[(&str, f64)], proposals: &[Proposal]) -> EnvelopeOutcome {
    enforce(p, &cur(current), &EnvelopeState::default(), T0, proposals)
}

fn only_block(o: &EnvelopeOutcome) -> (BlockReason, &str) {
    assert!(o.accepted.is_empty(), "{:?}", o.accepted);
    assert_eq!(o.blocked.len(), 1);
    (o.blocked[0].reason, &o.blocked[0].detail)
}

#[test]
fn accepts_a_move_within_limits_and_records_state() {
    let o = run(
        &conc(1.0, 16.0),
        &[("concurrency", 8.0)],
        &[prop("BURST-ABSORB", "concurrency", 4.0)],
    );
    assert_eq!(o.accepted.len(), 1);
    let a = &o.accepted[0];
    assert_eq!(
        (a.from, a.to, a.limited_by, a.requested),
        (8.0, 4.0, None, None)
    );
    assert_eq!(o.state.last_change, Some(T0));
    assert_eq!(
        o.state.knobs["concurrency"],
        KnobHistory {
            at: T0,
            from: 8.0,
            value: 4.0
        }
    );
    let j = serde_json::to_value(a).unwrap();
    assert_eq!(
        j,
        serde_json::json!({"knob": "concurrency", "from": 8, "to": 4, "reason": "test", "chord": "BURST-ABSORB"})
    );
}

#[test]
fn clamps_to_the_range_and_says_so() {
    let o = run(
        &conc(2.0, 16.0),
        &[("concurrency", 8.0)],
        &[prop("BURST-ABSORB", "concurrency", 40.0)],
    );
    assert_eq!(
        (
            o.accepted[0].to,
            o.accepted[0].limited_by,
            o.accepted[0].requested
        ),
        (16.0, Some(Limit::Max), Some(40.0))
    );
    let o = run(
        &conc(2.0, 16.0),
        &[("concurrency", 8.0)],
        &[prop("BURST-ABSORB", "concurrency", 0.0)],
    );
    assert_eq!(
        (o.accepted[0].to, o.accepted[0].limited_by),
        (2.0, Some(Limit::Min))
    );
}

#[test]
fn blocks_when_no_value_in_range_lies_in_the_requested_direction() {
    let o = run(
        &conc(1.0, 16.0),
        &[("concurrency", 16.0)],
        &[prop("BURST-ABSORB", "concurrency", 20.0)],
    );
    assert_eq!(only_block(&o).0, BlockReason::AboveMax);
    let o = run(
        &conc(2.0, 16.0),
        &[("concurrency", 2.0)],
        &[prop("BURST-ABSORB", "concurrency", 1.0)],
    );
    assert_eq!(only_block(&o).0, BlockReason::BelowMin);
    // Out of range today, and the proposal stays out of range: the envelope never moves further
    // than the proposal asked, so nothing in range is reachable.
    let o = run(
        &conc(1.0, 16.0),
        &[("concurrency", 30.0)],
        &[prop("BURST-ABSORB", "concurrency", 20.0)],
    );
    assert_eq!(only_block(&o).0, BlockReason::AboveMax);
}

#[test]
fn a_value_outside_the_limits_moves_in_only_when_the_step_allows() {
    let mut l = knob_limits(1.0, 16.0, 8.0);
    l.max_delta_per_step = Some(MaxDelta::Absolute(4.0));
    let p = passport(vec![("concurrency", l)], &[]);
    let o = run(
        &p,
        &[("concurrency", 30.0)],
        &[prop("BURST-ABSORB", "concurrency", 8.0)],
    );
    let (r, d) = only_block(&o);
    assert_eq!(r, BlockReason::AboveMax);
    assert!(
        d.contains("outside the limits and one step reaches only 26"),
        "{d}"
    );
    let o = run(
        &p,
        &[("concurrency", 18.0)],
        &[prop("BURST-ABSORB", "concurrency", 8.0)],
    );
    assert_eq!(
        (o.accepted[0].to, o.accepted[0].limited_by),
        (14.0, Some(Limit::MaxDelta))
    );
}

#[test]
fn max_delta_absolute_and_relative() {
    let mut l = knob_limits(1.0, 256.0, 32.0);
    l.max_delta_per_step = Some(MaxDelta::Absolute(1.0));
    let p = passport(vec![("microbatch_size", l.clone())], &[]);
    let o = run(
        &p,
        &[("microbatch_size", 32.0)],
        &[prop("BURST-ABSORB", "microbatch_size", 16.0)],
    );
    let a = &o.accepted[0];
    assert_eq!(
        (a.to, a.limited_by, a.requested),
        (31.0, Some(Limit::MaxDelta), Some(16.0))
    );
    assert_eq!(serde_json::to_value(a).unwrap()["limited_by"], "max_delta");

    l.max_delta_per_step = Some(MaxDelta::Relative(0.25));
    let p = passport(vec![("microbatch_size", l)], &[]);
    let o = run(
        &p,
        &[("microbatch_size", 32.0)],
        &[prop("BURST-ABSORB", "microbatch_size", 16.0)],
    );
    assert_eq!(o.accepted[0].to, 24.0);
    // 25 % of 6 is 1.5: an integral knob moves by whole units, toward the current value.
    let o = run(
        &p,
        &[("microbatch_size", 6.0)],
        &[prop("BURST-ABSORB", "microbatch_size", 12.0)],
    );
    assert_eq!(o.accepted[0].to, 7.0);
    // 25 % of 2 is 0.5: no whole step remains.
    let o = run(
        &p,
        &[("microbatch_size", 2.0)],
        &[prop("BURST-ABSORB", "microbatch_size", 12.0)],
    );
    assert_eq!(only_block(&o).0, BlockReason::MaxDelta);
}

#[test]
fn a_relative_step_from_zero_allows_nothing() {
    let mut l = knob_limits(0.0, 1.0, 0.0);
    l.max_delta_per_step = Some(MaxDelta::Relative(0.5));
    let p = passport(vec![("concurrency", l)], &[]);
    let o = run(
        &p,
        &[("concurrency", 0.0)],
        &[prop("BURST-ABSORB", "concurrency", 0.5)],
    );
    assert_eq!(only_block(&o).0, BlockReason::MaxDelta);
}

#[test]
fn fractional_knobs_are_not_rounded() {
    let mut l = knob_limits(0.0, 1.0, 0.5);
    l.max_delta_per_step = Some(MaxDelta::Absolute(0.125));
    let p = passport(vec![("concurrency", l)], &[]);
    let o = run(
        &p,
        &[("concurrency", 0.5)],
        &[prop("BURST-ABSORB", "concurrency", 0.9)],
    );
    assert_eq!(o.accepted[0].to, 0.625);
}

#[test]
fn chords_must_be_known_and_allowed_and_advanced_ones_permitted() {
    let mut p = passport(
        vec![("timeout_ms", knob_limits(1000.0, 60000.0, 5000.0))],
        &[],
    );
    let c = [("timeout_ms", 5000.0)];
    let o = run(&p, &c, &[prop("WARP", "timeout_ms", 6000.0)]);
    assert_eq!(only_block(&o).0, BlockReason::ChordNotAllowed);
    let o = run(&p, &c, &[prop("TIMEOUT-GUARD", "timeout_ms", 6000.0)]);
    let (r, d) = only_block(&o);
    assert_eq!(r, BlockReason::ChordNotAllowed);
    assert!(d.contains("advanced"), "{d}");
    let o = run(&p, &c, &[prop("INPUT-STRAGGLER", "timeout_ms", 6000.0)]);
    assert_eq!(only_block(&o).0, BlockReason::ChordNotAllowed);
    p.advanced_chords.push(ChordId::TimeoutGuard);
    let o = run(&p, &c, &[prop("TIMEOUT-GUARD", "timeout_ms", 6000.0)]);
    assert_eq!(o.accepted[0].to, 6000.0);
}

#[test]
fn unknown_knobs_and_unknown_current_values_are_blocked() {
    let p = conc(1.0, 16.0);
    let o = run(
        &p,
        &[("concurrency", 8.0), ("timeout_ms", 5.0)],
        &[prop("BURST-ABSORB", "timeout_ms", 6.0)],
    );
    assert_eq!(only_block(&o).0, BlockReason::KnobUnknown);
    let o = run(&p, &[], &[prop("BURST-ABSORB", "concurrency", 6.0)]);
    let (r, d) = only_block(&o);
    assert_eq!(r, BlockReason::KnobUnknown);
    assert!(d.contains("current value"), "{d}");
}

#[test]
fn propose_only_knobs_are_recorded_not_accepted() {
    let mut l = knob_limits(1.0, 16.0, 8.0);
    l.propose_only = true;
    let p = passport(vec![("concurrency", l)], &[]);
    let o = run(
        &p,
        &[("concurrency", 8.0)],
        &[prop("BURST-ABSORB", "concurrency", 4.0)],
    );
    assert_eq!(only_block(&o).0, BlockReason::ProposeOnly);
    assert_eq!(
        o.state,
        EnvelopeState::default(),
        "a blocked proposal leaves the state alone"
    );
}

#[test]
fn cooldowns_global_and_per_knob() {
    let mut l = knob_limits(1.0, 16.0, 8.0);
    l.cooldown_s = 60;
    let mut p = passport(
        vec![
            ("concurrency", l),
            ("dataloader_prefetch_factor", knob_limits(1.0, 8.0, 2.0)),
        ],
        &[],
    );
    p.cooldown_s = 30;
    let c = cur(&[("concurrency", 8.0), ("dataloader_prefetch_factor", 2.0)]);
    let first = enforce(
        &p,
        &c,
        &EnvelopeState::default(),
        T0,
        &[prop("BURST-ABSORB", "concurrency", 6.0)],
    );
    assert_eq!(first.accepted.len(), 1);
    let c = cur(&[("concurrency", 6.0), ("dataloader_prefetch_factor", 2.0)]);
    let at = |s: i64| EvalPoint {
        at_ms: T0.at_ms + s * 1000,
        window: 11,
    };

    let o = enforce(
        &p,
        &c,
        &first.state,
        at(10),
        &[prop("BURST-ABSORB", "dataloader_prefetch_factor", 3.0)],
    );
    let (r, d) = only_block(&o);
    assert_eq!(r, BlockReason::Cooldown);
    assert!(
        d.contains("passport cooldown 30 s") && d.contains("20 s left"),
        "{d}"
    );
    let o = enforce(
        &p,
        &c,
        &first.state,
        at(30),
        &[prop("BURST-ABSORB", "dataloader_prefetch_factor", 3.0)],
    );
    assert_eq!(o.accepted.len(), 1, "the global cooldown has elapsed");

    let o = enforce(
        &p,
        &c,
        &first.state,
        at(45),
        &[prop("BURST-ABSORB", "concurrency", 4.0)],
    );
    let (r, d) = only_block(&o);
    assert_eq!(r, BlockReason::Cooldown);
    assert!(
        d.contains("concurrency cooldown 60 s") && d.contains("15 s left"),
        "{d}"
    );
    let o = enforce(
        &p,
        &c,
        &first.state,
        at(60),
        &[prop("BURST-ABSORB", "concurrency", 4.0)],
    );
    assert_eq!(o.accepted.len(), 1);

    let back = EvalPoint {
        at_ms: T0.at_ms - 1,
        window: 9,
    };
    let o = enforce(
        &p,
        &c,
        &first.state,
        back,
        &[prop("BURST-ABSORB", "concurrency", 4.0)],
    );
    assert_eq!(
        only_block(&o).0,
        BlockReason::Cooldown,
        "a clock that went backwards keeps the cooldown"
    );
}

#[test]
fn no_change_non_finite_duplicates_and_hysteresis() {
    let mut l = knob_limits(1.0, 64.0, 8.0);
    l.min_relative_change = 0.2;
    let p = passport(vec![("concurrency", l)], &[]);
    let c = [("concurrency", 10.0)];
    assert_eq!(
        only_block(&run(&p, &c, &[prop("BURST-ABSORB", "concurrency", 10.0)])).0,
        BlockReason::NoChange
    );
    assert_eq!(
        only_block(&run(
            &p,
            &c,
            &[prop("BURST-ABSORB", "concurrency", f64::NAN)]
        ))
        .0,
        BlockReason::NonFinite
    );
    assert_eq!(
        only_block(&run(
            &p,
            &c,
            &[prop("BURST-ABSORB", "concurrency", f64::INFINITY)]
        ))
        .0,
        BlockReason::NonFinite
    );
    assert_eq!(
        only_block(&run(
            &p,
            &[("concurrency", f64::NAN)],
            &[prop("BURST-ABSORB", "concurrency", 3.0)]
        ))
        .0,
        BlockReason::NonFinite
    );
    let o = run(&p, &c, &[prop("BURST-ABSORB", "concurrency", 11.0)]);
    let (r, d) = only_block(&o);
    assert_eq!(r, BlockReason::BelowMinRelativeChange);
    assert!(d.contains("10.0 %") && d.contains("20.0 %"), "{d}");
    assert_eq!(
        run(&p, &c, &[prop("BURST-ABSORB", "concurrency", 12.0)])
            .accepted
            .len(),
        1
    );

    let o = run(
        &p,
        &c,
        &[
            prop("BURST-ABSORB", "concurrency", 20.0),
            prop("DRIFT-RETUNE", "concurrency", 30.0),
        ],
    );
    assert_eq!(o.accepted[0].to, 20.0);
    assert_eq!(o.blocked[0].reason, BlockReason::DuplicateKnob);
    assert_eq!(
        serde_json::to_value(&o.blocked[0]).unwrap()["reason"],
        "duplicate_knob"
    );
}

fn batch_passport(delta: Option<MaxDelta>, invariant: bool) -> Passport {
    let mut mb = knob_limits(1.0, 256.0, 32.0);
    let mut ga = knob_limits(1.0, 64.0, 4.0);
    mb.max_delta_per_step = delta;
    ga.max_delta_per_step = delta;
    let inv: &[&str] = if invariant {
        &["keep_global_batch_stable"]
    } else {
        &[]
    };
    passport(vec![("microbatch_size", mb), ("grad_accum_steps", ga)], inv)
}

#[test]
fn the_global_batch_invariant() {
    let c = [("microbatch_size", 32.0), ("grad_accum_steps", 4.0)];
    let pair = [
        prop("DRIFT-RETUNE", "microbatch_size", 16.0),
        prop("DRIFT-RETUNE", "grad_accum_steps", 8.0),
    ];
    let o = run(&batch_passport(None, true), &c, &pair);
    assert_eq!(
        o.accepted.iter().map(|a| a.to).collect::<Vec<_>>(),
        [16.0, 8.0],
        "a compensating pair keeps 128"
    );

    let o = run(&batch_passport(None, true), &c, &pair[1..]);
    let (r, d) = only_block(&o);
    assert_eq!(r, BlockReason::InvariantGlobalBatch);
    assert!(d.contains("32 × 4 = 128 to 32 × 8 = 256"), "{d}");
    assert_eq!(
        run(&batch_passport(None, false), &c, &pair[1..])
            .accepted
            .len(),
        1,
        "only enforced when listed"
    );

    // The reference's DRIFT-RETUNE under a max-delta-1 passport: both moves are shortened, the product
    // changes, both are blocked.
    let o = run(
        &batch_passport(Some(MaxDelta::Absolute(1.0)), true),
        &c,
        &pair,
    );
    assert!(o.accepted.is_empty());
    assert!(
        o.blocked
            .iter()
            .all(|b| b.reason == BlockReason::InvariantGlobalBatch)
    );
    assert_eq!(o.state, EnvelopeState::default());

    let o = run(&batch_passport(None, true), &c[..1], &pair[..1]);
    assert!(only_block(&o).1.contains("unknown"));
}

#[test]
fn the_safe_template_blocks_the_reference_drift_retune() {
    let safe = template("safe").unwrap().unwrap();
    let c = [
        ("microbatch_size", 32.0),
        ("grad_accum_steps", 4.0),
        ("concurrency", 8.0),
    ];
    let o = run(
        &safe,
        &c,
        &[
            prop("DRIFT-RETUNE", "grad_accum_steps", 8.0),
            prop("BURST-ABSORB", "concurrency", 4.0),
        ],
    );
    assert_eq!(o.blocked[0].reason, BlockReason::InvariantGlobalBatch);
    assert_eq!(
        (o.accepted[0].knob.as_str(), o.accepted[0].to),
        ("concurrency", 7.0)
    );
}

#[test]
fn state_round_trips_and_replay_is_deterministic() {
    let p = conc(1.0, 16.0);
    let c = cur(&[("concurrency", 8.0)]);
    let o = enforce(
        &p,
        &c,
        &EnvelopeState::default(),
        T0,
        &[prop("BURST-ABSORB", "concurrency", 4.0)],
    );
    let text = serde_json::to_string(&o.state).unwrap();
    let back: EnvelopeState = serde_json::from_str(&text).unwrap();
    assert_eq!(back, o.state);
    let again = enforce(
        &p,
        &c,
        &EnvelopeState::default(),
        T0,
        &[prop("BURST-ABSORB", "concurrency", 4.0)],
    );
    assert_eq!(
        serde_json::to_string(&again).unwrap(),
        serde_json::to_string(&o).unwrap()
    );
}

#[test]
fn a_hold_blocks_the_hurt_direction_until_it_ends_and_lets_the_other_through() {
    let p = conc(1.0, 16.0);
    let c = cur(&[("concurrency", 8.0)]);
    let mut st = EnvelopeState::default();
    // The hurt change raised concurrency 8 → 12; it was rolled back to 8 at T0.
    st.hold("concurrency", 8.0, 12.0, T0, 600);
    let at = |s: i64| EvalPoint {
        at_ms: T0.at_ms + s * 1000,
        window: 11,
    };
    let up = enforce(
        &p,
        &c,
        &st,
        at(10),
        &[prop("DRIFT-RETUNE", "concurrency", 10.0)],
    );
    let (r, d) = only_block(&up);
    assert_eq!(r, BlockReason::HeldAfterHurt);
    assert_eq!(r.as_str(), "held_after_hurt");
    assert!(d.contains("590 s"), "{d}");
    let down = enforce(
        &p,
        &c,
        &st,
        at(10),
        &[prop("BURST-ABSORB", "concurrency", 6.0)],
    );
    assert_eq!(down.accepted.len(), 1, "{:?}", down.blocked);
    assert_eq!(down.state.holds, st.holds, "the hold outlives other moves");
    let later = enforce(
        &p,
        &c,
        &st,
        at(600),
        &[prop("DRIFT-RETUNE", "concurrency", 10.0)],
    );
    assert_eq!(later.accepted.len(), 1, "{:?}", later.blocked);
    // No hold for a zero hold_s.
    let mut none = EnvelopeState::default();
    none.hold("concurrency", 8.0, 12.0, T0, 0);
    assert!(none.holds.is_empty());
}

#[test]
fn a_rollback_is_not_blocked_by_cooldowns_but_by_everything_else() {
    let mut l = knob_limits(1.0, 16.0, 8.0);
    l.cooldown_s = 3600;
    let mut p = passport(vec![("concurrency", l)], &[]);
    p.cooldown_s = 3600;
    let mut st = EnvelopeState {
        last_change: Some(T0),
        ..Default::default()
    };
    st.knobs.insert(
        "concurrency".into(),
        KnobHistory {
            at: T0,
            from: 8.0,
            value: 12.0,
        },
    );
    st.hold("concurrency", 8.0, 12.0, T0, 600);
    let c = cur(&[("concurrency", 12.0)]);
    let plain = enforce(&p, &c, &st, T0, &[prop("DRIFT-RETUNE", "concurrency", 8.0)]);
    assert_eq!(only_block(&plain).0, BlockReason::Cooldown);
    let rb = enforce_with_rollbacks(
        &p,
        &c,
        &st,
        T0,
        &[prop("DRIFT-RETUNE", "concurrency", 8.0)],
        &[prop("BURST-ABSORB", "concurrency", 10.0)],
    );
    assert_eq!(rb.accepted.len(), 1);
    assert_eq!((rb.accepted[0].from, rb.accepted[0].to), (12.0, 8.0));
    assert_eq!(rb.blocked[0].reason, BlockReason::DuplicateKnob);
    // Still inside the passport's limits.
    let out = enforce_with_rollbacks(
        &p,
        &c,
        &st,
        T0,
        &[prop("DRIFT-RETUNE", "concurrency", 20.0)],
        &[],
    );
    assert_eq!(out.accepted[0].to, 16.0);
    assert_eq!(out.accepted[0].limited_by, Some(Limit::Max));
}

#[test]
fn a_state_without_holds_still_loads() {
    let st: EnvelopeState = serde_json::from_str(r#"{"last_change":null,"knobs":{}}"#).unwrap();
    assert!(st.holds.is_empty());
    assert!(!serde_json::to_string(&st).unwrap().contains("holds"));
}
