//! The loop on hand-made decisions: knobs carried between windows, cooldowns on telemetry time,
//! host-level and envelope refusals with their codes, the net end state, the trace line's shape.

use std::collections::BTreeMap;

use super::*;
use crate::passport::{MaxDelta, template};
use crate::policy::{Blocked, Decision, Proposal, merge};
use crate::signals::WindowRange;

fn features(index: u64, end_ms: Option<i64>) -> WindowFeatures {
    WindowFeatures {
        window: WindowRange {
            index,
            first_step: index * 50 + 1,
            last_step: index * 50 + 50,
            start_ms: end_ms.map(|t| t - 1000),
            end_ms,
            samples: 50,
        },
        warmup: false,
        step_time_p50_ms: 30.0,
        step_time_p95_ms: 33.0,
        step_time_p99_ms: 35.0,
        step_time_max_ms: 36.0,
        step_time_baseline_ms: Some(30.0),
        step_time_ratio: 1.0,
        step_time_cusum: 0.0,
        elevated_windows: 0,
        slow_step_share: 0.0,
        slow_step_share_recent: 0.0,
        burst_score: 1.0,
        straggler_score: 1.0,
        slowest_worker: None,
        worker_count: 4,
        data_wait_share: Some(0.01),
        data_wait_p95_ms: Some(0.5),
        stall_score: 1.2,
        loss_mean: Some(2.0),
        loss_baseline: Some(2.0),
        loss_ratio: Some(1.0),
        loss_cusum: 0.0,
        gpu_util_mean: Some(90.0),
        gpu_util_min: Some(80.0),
        gpu_mem_util_mean: None,
        gpu_mem_util_max: None,
        comm_share: None,
        step_time_available: true,
        loss_non_finite: 0,
        loss_non_finite_step: None,
        planned_steps: 0,
        rebaseline: false,
    }
}

fn pref(name: &str) -> PolicyRef {
    PolicyRef {
        name: name.into(),
        version: "1.0.0".into(),
        digest: format!("sha256:{}", "ab".repeat(32)),
    }
}

fn prop(chord: &str, knob: &str, from: f64, to: f64) -> Proposal {
    Proposal {
        chord: chord.into(),
        knob: knob.into(),
        from,
        to,
        reason: format!("{chord} moves {knob}"),
    }
}

fn decision(policy: &str, chord: &str, proposals: Vec<Proposal>) -> Decision {
    Decision {
        policy: pref(policy),
        chord: chord.into(),
        active_chords: if chord == NORMAL_HOLD {
            vec![]
        } else {
            vec![chord.into()]
        },
        confidence: 0.9,
        proposals,
        blocked: vec![],
        notes: vec![],
        failure: None,
    }
}

fn hold() -> WindowDecision {
    merge(vec![decision("safe-chords", NORMAL_HOLD, vec![])])
}

fn safe_loop() -> ClosedLoop {
    let p = template("safe").unwrap().unwrap();
    let (knobs, _) = starting_knobs(&p, &BTreeMap::new());
    ClosedLoop::new(p, knobs)
}

#[test]
fn accepted_changes_carry_into_the_next_window() {
    let mut l = safe_loop();
    let d = merge(vec![decision(
        "safe-chords",
        "INPUT-STRAGGLER",
        vec![prop("INPUT-STRAGGLER", "dataloader_num_workers", 4.0, 6.0)],
    )]);
    let ev = l.step(&features(5, Some(10_000)), &d);
    // safe: absolute step limit 1, so 4 → 6 is shortened to 5.
    assert_eq!(
        ev.proposals,
        [TraceProposal {
            knob: "dataloader_num_workers".into(),
            from: 4.0,
            to: 5.0,
            reason: "INPUT-STRAGGLER moves dataloader_num_workers".into()
        }]
    );
    assert!(ev.blocked.is_empty());
    assert_eq!(l.knobs()["dataloader_num_workers"], 5.0);
    assert_eq!(
        l.limits().get("dataloader_num_workers").unwrap().max_delta,
        1.0
    );
    let out = l.finish();
    assert_eq!(out.proposed[0].limited_by, Some(Limit::MaxDelta));
    assert_eq!(out.proposed[0].requested, Some(6.0));
    assert_eq!(out.proposed[0].window.index, 5);
    assert_eq!(
        out.changes,
        [KnobChange {
            knob: "dataloader_num_workers".into(),
            from: 4.0,
            to: 5.0,
            chord: "INPUT-STRAGGLER".into()
        }]
    );
    assert_eq!(out.knobs_after["dataloader_num_workers"], 5.0);
    assert_eq!(out.knobs_before["dataloader_num_workers"], 4.0);
}

#[test]
fn cooldowns_run_on_telemetry_time() {
    let mut l = safe_loop();
    let widen = |from: f64| {
        merge(vec![decision(
            "safe-chords",
            "INPUT-STRAGGLER",
            vec![prop(
                "INPUT-STRAGGLER",
                "dataloader_num_workers",
                from,
                from + 1.0,
            )],
        )])
    };
    l.step(&features(0, Some(0)), &widen(4.0));
    // safe: 90 s global cooldown, 180 s per knob.
    let ev = l.step(&features(1, Some(60_000)), &widen(5.0));
    assert_eq!(ev.blocked[0].reason, "cooldown");
    assert_eq!(l.knobs()["dataloader_num_workers"], 5.0);
    let ev = l.step(&features(2, Some(170_000)), &widen(5.0));
    assert_eq!(ev.blocked[0].reason, "cooldown", "the knob's own 180 s");
    // A window without a timestamp does not move time forward.
    let ev = l.step(&features(3, None), &widen(5.0));
    assert_eq!(ev.blocked[0].reason, "cooldown");
    let ev = l.step(&features(4, Some(180_000)), &widen(5.0));
    assert!(ev.blocked.is_empty(), "{:?}", ev.blocked);
    assert_eq!(l.knobs()["dataloader_num_workers"], 6.0);
    let out = l.finish();
    assert_eq!(out.blocked_by_reason["cooldown"], 3);
    assert_eq!(out.proposed_total, 2);
}

#[test]
fn without_timestamps_a_cooldown_never_elapses() {
    let mut l = safe_loop();
    let d = |knob: &str, from: f64| {
        merge(vec![decision(
            "safe-chords",
            "BURST-ABSORB",
            vec![prop("BURST-ABSORB", knob, from, from + 1.0)],
        )])
    };
    assert!(
        l.step(&features(0, None), &d("dataloader_prefetch_factor", 2.0))
            .blocked
            .is_empty()
    );
    for i in 1..50 {
        let ev = l.step(&features(i, None), &d("concurrency", 8.0));
        assert_eq!(ev.blocked[0].reason, "cooldown");
    }
}

#[test]
fn a_change_undone_later_leaves_no_net_change() {
    let p = template("safe").unwrap().unwrap();
    let mut p0 = p.clone();
    p0.cooldown_s = 0;
    for l in p0.knobs.values_mut() {
        l.cooldown_s = 0;
    }
    let (knobs, _) = starting_knobs(&p0, &BTreeMap::new());
    let mut l = ClosedLoop::new(p0, knobs);
    let one = |chord: &str, from: f64, to: f64| {
        merge(vec![decision(
            "safe-chords",
            chord,
            vec![prop(chord, "concurrency", from, to)],
        )])
    };
    l.step(&features(0, Some(0)), &one("BURST-ABSORB", 8.0, 7.0));
    l.step(&features(1, Some(1000)), &one("RECOVER-RELOCK", 7.0, 8.0));
    let out = l.finish();
    assert!(out.changes.is_empty());
    assert_eq!(out.proposed_total, 2);
    assert_eq!(out.knobs_after, out.knobs_before);
    assert!(out.changes_as_accepted().is_empty());
}

#[test]
fn refusals_carry_reason_codes_from_host_and_envelope() {
    let mut l = safe_loop();
    let mut first = decision(
        "timeout-guard",
        "TIMEOUT-GUARD",
        vec![prop("TIMEOUT-GUARD", "concurrency", 8.0, 9.0)],
    );
    first.blocked.push(Blocked {
        knob: "dataloader_num_workers".into(),
        to: 40.0,
        reason: "outside the passport range [1, 16]".into(),
    });
    let second = decision(
        "safe-chords",
        "BURST-ABSORB",
        vec![
            prop("BURST-ABSORB", "concurrency", 8.0, 7.0),
            prop("BURST-ABSORB", "dataloader_prefetch_factor", 2.0, 3.0),
        ],
    );
    let ev = l.step(&features(3, Some(5_000)), &merge(vec![first, second]));
    let codes: Vec<(&str, &str)> = ev
        .blocked
        .iter()
        .map(|b| (b.knob.as_str(), b.reason.as_str()))
        .collect();
    assert_eq!(
        codes,
        [
            ("dataloader_num_workers", "above_max"),
            ("concurrency", "duplicate_knob"),
            // safe does not permit the advanced TIMEOUT-GUARD.
            ("concurrency", "chord_not_allowed"),
        ]
    );
    assert_eq!(ev.chord, "TIMEOUT-GUARD");
    assert_eq!(ev.policy.name, "timeout-guard");
    assert_eq!(ev.active_chords, ["TIMEOUT-GUARD", "BURST-ABSORB"]);
    assert_eq!(ev.proposals.len(), 1);
    assert_eq!(ev.proposals[0].knob, "dataloader_prefetch_factor");
    let out = l.finish();
    let stages: Vec<BlockStage> = out.blocked.iter().map(|b| b.stage).collect();
    assert_eq!(
        stages,
        [
            BlockStage::PolicyHost,
            BlockStage::PolicyHost,
            BlockStage::Envelope
        ]
    );
}

#[test]
fn comm_congestion_needs_comm_telemetry_when_the_passport_says_so() {
    let mut p = template("comm").unwrap().unwrap();
    p.advanced_chords.push(ChordId::CommCongestion);
    p.cooldown_s = 0;
    p.knobs.get_mut("comm_bucket_mb").unwrap().cooldown_s = 0;
    p.knobs
        .get_mut("comm_bucket_mb")
        .unwrap()
        .max_delta_per_step = Some(MaxDelta::Absolute(64.0));
    assert!(p.gates.require_comm_telemetry);
    let (knobs, _) = starting_knobs(&p, &BTreeMap::new());
    let mut l = ClosedLoop::new(p, knobs);
    let d = merge(vec![decision(
        "comm-congestion",
        "COMM-CONGESTION",
        vec![prop("COMM-CONGESTION", "comm_bucket_mb", 128.0, 192.0)],
    )]);
    let ev = l.step(&features(0, Some(0)), &d);
    assert_eq!(ev.blocked[0].reason, REQUIRE_COMM_TELEMETRY);
    let mut f = features(1, Some(1000));
    f.comm_share = Some(0.4);
    let ev = l.step(&f, &d);
    assert!(ev.blocked.is_empty(), "{:?}", ev.blocked);
    assert_eq!(l.knobs()["comm_bucket_mb"], 192.0);
}

#[test]
fn policy_failures_are_recorded_and_propose_nothing() {
    let mut l = safe_loop();
    let failed = Decision::failed(pref("spin"), FailureKind::OutOfFuel, "used all fuel");
    let d = merge(vec![failed, decision("safe-chords", NORMAL_HOLD, vec![])]);
    let ev = l.step(&features(0, Some(0)), &d);
    assert_eq!(ev.chord, NORMAL_HOLD);
    assert_eq!(ev.policy.name, "safe-chords");
    let out = l.finish();
    assert_eq!(out.policy_failures_total, 1);
    assert_eq!(out.policy_failures[0].kind, FailureKind::OutOfFuel);
    assert_eq!(out.policy_failures[0].policy, "spin");
    assert_eq!(out.policy_failures[0].message, "used all fuel");
}

#[test]
fn trace_line_has_exactly_the_contract_fields() {
    let mut l = safe_loop();
    let line = l.step(&features(7, Some(42_000)), &hold()).to_line();
    assert!(line.ends_with('\n') && !line[..line.len() - 1].contains('\n'));
    let v: serde_json::Value = serde_json::from_str(&line).unwrap();
    let keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
    let mut want = [
        "schema_version",
        "window",
        "features",
        "chord",
        "active_chords",
        "proposals",
        "blocked",
        "policy",
        "passport",
        "effects",
    ];
    let mut got = keys.clone();
    got.sort_unstable();
    want.sort_unstable();
    assert_eq!(got, want);
    assert_eq!(v["schema_version"], TRACE_SCHEMA);
    let wkeys: Vec<&str> = v["window"]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    let mut wkeys = wkeys;
    wkeys.sort_unstable();
    assert_eq!(
        wkeys,
        ["end_ms", "first_step", "last_step", "samples", "start_ms"]
    );
    assert!(v["features"].get("window").is_none());
    assert_eq!(v["features"]["step_time_p50_ms"], 30.0);
    assert_eq!(
        v["policy"].as_object().unwrap().len(),
        3,
        "policy {{name, version, digest}}"
    );
    assert_eq!(
        v["passport"],
        serde_json::json!({"name": "safe", "version": "1.0.0"})
    );
    // Same input, same bytes.
    let mut again = safe_loop();
    assert_eq!(
        again.step(&features(7, Some(42_000)), &hold()).to_line(),
        line
    );
}

#[test]
fn a_hold_survives_a_checkpoint_and_an_old_state_loads_without_one() {
    let mut l = safe_loop();
    let mut st = l.save();
    st.envelope.hold(
        "dataloader_num_workers",
        4.0,
        5.0,
        crate::envelope::EvalPoint {
            at_ms: 0,
            window: 0,
        },
        600,
    );
    let json = serde_json::to_value(&st).unwrap();
    assert!(json["envelope"]["holds"]["dataloader_num_workers"].is_object());
    let back: LoopState = serde_json::from_value(json.clone()).unwrap();
    l = ClosedLoop::resume(template("safe").unwrap().unwrap(), back);
    let move_to = |to: f64| {
        merge(vec![decision(
            "safe-chords",
            "INPUT-STRAGGLER",
            vec![prop("INPUT-STRAGGLER", "dataloader_num_workers", 4.0, to)],
        )])
    };
    let ev = l.step(&features(1, Some(300_000)), &move_to(5.0));
    assert_eq!(ev.blocked[0].reason, "held_after_hurt");
    let ev = l.step(&features(2, Some(400_000)), &move_to(3.0));
    assert!(ev.blocked.is_empty(), "{:?}", ev.blocked);

    let mut old = json;
    old["envelope"].as_object_mut().unwrap().remove("holds");
    let st: LoopState = serde_json::from_value(old).unwrap();
    assert!(st.envelope.holds.is_empty());
}
