//! `closed-loop run` on every real H100 trace in tests/data/traces, judged from the artifacts it
//! writes: the decision trace names the right chord for each labelled segment, proposals stay inside
//! the passport (limits, step limit, cooldowns on telemetry time), the plan carries exactly the
//! accepted end state, and the trace has one line per window in the documented schema.

mod closed_loop_support;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use closed_loop_support::*;
use modekeeper::passport::{MaxDelta, Passport, parse_passport, template};
use modekeeper::policy::expected_chords;
use serde_json::Value;

const TRACES: [&str; 7] = [
    "stable",
    "burst",
    "combo",
    "drift",
    "loss_drift",
    "near_hang",
    "straggler",
];

struct Ran {
    lines: Vec<Value>,
    report: Value,
    plan: Value,
    plan_text: String,
    trace_text: String,
    passport: Passport,
    _dir: tempfile::TempDir,
}

/// The passport directory the runs share (written once).
fn passport_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let d = Path::new(env!("CARGO_TARGET_TMPDIR")).join("closed-loop-passports");
        std::fs::create_dir_all(&d).unwrap();
        passport_with_timeout_guard(&d);
        d
    })
}

/// How a trace is run: `guarded` = the safe passport plus TIMEOUT-GUARD permitted and enabled;
/// `safe` = the plain safe template; `safe+tg` = TIMEOUT-GUARD enabled, the safe passport not
/// permitting it.
fn ran(name: &str, how: &str) -> Arc<Ran> {
    static RUNS: OnceLock<Mutex<HashMap<String, Arc<Ran>>>> = OnceLock::new();
    let key = format!("{name}/{how}");
    if let Some(r) = RUNS.get_or_init(Default::default).lock().unwrap().get(&key) {
        return r.clone();
    }
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let guarded = passport_dir().join("safe-timeout.json");
    let guarded = guarded.to_str().unwrap();
    let args: Vec<&str> = match how {
        "guarded" => vec!["--passport", guarded, "--enable-advanced", "TIMEOUT-GUARD"],
        "safe" => vec![],
        "safe+tg" => vec!["--enable-advanced", "TIMEOUT-GUARD"],
        _ => unreachable!(),
    };
    run_ok(&trace(name), &out, &args);
    let passport = if how == "guarded" {
        parse_passport("p", &std::fs::read_to_string(guarded).unwrap())
            .unwrap()
            .passport
    } else {
        template("safe").unwrap().unwrap()
    };
    let r = Arc::new(Ran {
        lines: trace_lines(&out),
        report: json(&out.join("closed_loop_latest.json")),
        plan: json(&out.join("k8s_plan.json")),
        plan_text: std::fs::read_to_string(out.join("k8s_plan.json")).unwrap(),
        trace_text: std::fs::read_to_string(out.join("decision_trace_latest.jsonl")).unwrap(),
        passport,
        _dir: dir,
    });
    RUNS.get().unwrap().lock().unwrap().insert(key, r.clone());
    r
}

fn u(v: &Value) -> u64 {
    v.as_u64().unwrap()
}

fn active(line: &Value) -> Vec<&str> {
    line["active_chords"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap())
        .collect()
}

fn segments(name: &str) -> Vec<(String, u64, u64)> {
    labels(name)["segments"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["regime"].as_str().unwrap().to_string(),
                u(&s["first_step"]),
                u(&s["last_step"]),
            )
        })
        .collect()
}

fn overlapping(lines: &[Value], a: u64, b: u64) -> Vec<&Value> {
    lines
        .iter()
        .filter(|l| u(&l["window"]["last_step"]) >= a && u(&l["window"]["first_step"]) <= b)
        .collect()
}

#[test]
fn every_incident_segment_gets_its_chord_in_the_decision_trace() {
    let mut checked: Vec<String> = Vec::new();
    for name in TRACES {
        let r = ran(name, "guarded");
        for (regime, a, b) in segments(name) {
            let Some(expected) = expected_chords(&regime).filter(|_| regime != "NORMAL") else {
                continue;
            };
            let windows = overlapping(&r.lines, a, b);
            for chord in expected {
                let fired = windows.iter().any(|l| active(l).contains(&chord));
                assert!(
                    fired,
                    "{name}: {regime} (steps {a}-{b}) never shows {chord}; chords seen: {:?}",
                    windows.iter().map(|l| active(l)).collect::<Vec<_>>()
                );
            }
            checked.push(format!("{name}/{regime}"));
        }
    }
    // Every scored regime of the data set took part.
    for want in [
        "straggler/INPUT-STRAGGLER",
        "burst/BURST",
        "drift/DRIFT",
        "combo/INPUT-STRAGGLER+BURST",
        "near_hang/NEAR-HANG",
    ] {
        assert!(
            checked.iter().any(|c| c == want),
            "{want} not checked: {checked:?}"
        );
    }
}

#[test]
fn each_recovery_segment_gets_recover_relock() {
    let mut n = 0;
    for name in TRACES {
        let r = ran(name, "guarded");
        for (regime, a, b) in segments(name).into_iter().filter(|s| s.0 == "RECOVER") {
            let windows = overlapping(&r.lines, a, b);
            assert!(
                windows.iter().any(|l| l["chord"] == "RECOVER-RELOCK"),
                "{name}: {regime} {a}-{b} has no RECOVER-RELOCK window"
            );
            n += 1;
        }
    }
    assert_eq!(
        n, 4,
        "straggler, burst, combo and near_hang each end in a recovery"
    );
}

#[test]
fn normal_segments_hold_after_warmup_and_the_stable_trace_holds_everywhere() {
    for name in TRACES {
        let r = ran(name, "guarded");
        for (_, a, b) in segments(name).into_iter().filter(|s| s.0 == "NORMAL") {
            let inside = r.lines.iter().filter(|l| {
                u(&l["window"]["first_step"]) >= a
                    && u(&l["window"]["last_step"]) <= b
                    && l["features"]["warmup"] == false
            });
            let mut count = 0;
            for l in inside {
                count += 1;
                assert_eq!(l["chord"], "NORMAL-HOLD", "{name}: {}", l["window"]);
                assert!(active(l).is_empty(), "{name}: {}", l["window"]);
                assert_eq!(l["proposals"], serde_json::json!([]), "{name}");
            }
            assert!(
                count > 10,
                "{name}: only {count} NORMAL windows after warm-up"
            );
        }
    }
    for how in ["guarded", "safe"] {
        let r = ran("stable", how);
        assert!(r.lines.len() > 70);
        for l in &r.lines {
            assert_eq!(l["chord"], "NORMAL-HOLD");
            assert_eq!(l["blocked"], serde_json::json!([]));
        }
        assert_eq!(r.report["proposed_total"], 0);
        assert_eq!(r.plan["items"], serde_json::json!([]));
    }
}

fn step_limit(p: &Passport, knob: &str, from: f64) -> f64 {
    match p.knob(knob).unwrap().max_delta_per_step {
        Some(MaxDelta::Absolute(a)) => a,
        Some(MaxDelta::Relative(r)) => r * from.abs(),
        None => f64::INFINITY,
    }
}

/// Replays the trace's accepted proposals from the passport baselines, checking each against the
/// passport; returns the knob values at the end.
fn check_against_passport(name: &str, r: &Ran) -> BTreeMap<String, f64> {
    let p = &r.passport;
    let mut knobs: BTreeMap<String, f64> = p
        .knobs
        .iter()
        .map(|(k, l)| (k.clone(), l.baseline))
        .collect();
    let mut last_any: Option<i64> = None;
    let mut last_knob: BTreeMap<String, i64> = BTreeMap::new();
    for l in &r.lines {
        let props = l["proposals"].as_array().unwrap();
        let at = l["window"]["end_ms"].as_i64().unwrap();
        if !props.is_empty()
            && let Some(t) = last_any
        {
            assert!(
                at - t >= p.cooldown_s as i64 * 1000,
                "{name}: changes at {t} and {at} ms are closer than the passport's {} s",
                p.cooldown_s
            );
        }
        for pr in props {
            let knob = pr["knob"].as_str().unwrap();
            let (from, to) = (pr["from"].as_f64().unwrap(), pr["to"].as_f64().unwrap());
            let lim = p
                .knob(knob)
                .unwrap_or_else(|| panic!("{name}: ungoverned {knob}"));
            assert!(!lim.propose_only);
            assert_eq!(
                from, knobs[knob],
                "{name}: {knob} moves from its current value"
            );
            assert!(
                lim.min <= to && to <= lim.max,
                "{name}: {knob} {to} outside limits"
            );
            assert!(to != from);
            assert!(
                (to - from).abs() <= step_limit(p, knob, from),
                "{name}: {knob} {from} → {to} exceeds the step limit"
            );
            if let Some(t) = last_knob.get(knob) {
                assert!(
                    at - t >= lim.cooldown_s as i64 * 1000,
                    "{name}: {knob} cooldown"
                );
            }
            last_knob.insert(knob.to_string(), at);
            knobs.insert(knob.to_string(), to);
        }
        if !props.is_empty() {
            last_any = Some(at);
            if p.has_invariant("keep_global_batch_stable") {
                let base = |k: &str| p.knobs[k].baseline;
                assert_eq!(
                    knobs["microbatch_size"] * knobs["grad_accum_steps"],
                    base("microbatch_size") * base("grad_accum_steps"),
                    "{name}: global batch changed"
                );
            }
        }
    }
    knobs
}

#[test]
fn proposals_respect_the_passport() {
    let mut accepted = 0;
    for name in TRACES {
        for how in ["guarded", "safe"] {
            let r = ran(name, how);
            let end = check_against_passport(name, &r);
            let after: BTreeMap<String, f64> = r.report["knobs_after"]
                .as_object()
                .unwrap()
                .iter()
                .map(|(k, v)| (k.clone(), v.as_f64().unwrap()))
                .collect();
            assert_eq!(
                after, end,
                "{name}/{how}: knobs_after is the trace's end state"
            );
            accepted += r.report["proposed_total"].as_u64().unwrap();
            // Every blocked proposal in the trace carries a documented reason code.
            for l in &r.lines {
                for b in l["blocked"].as_array().unwrap() {
                    let code = b["reason"].as_str().unwrap();
                    assert!(
                        [
                            "non_finite",
                            "duplicate_knob",
                            "chord_not_allowed",
                            "knob_unknown",
                            "propose_only",
                            "cooldown",
                            "no_change",
                            "below_min",
                            "above_max",
                            "max_delta",
                            "below_min_relative_change",
                            "invariant_global_batch",
                            "held_after_hurt",
                            "require_comm_telemetry",
                        ]
                        .contains(&code),
                        "{name}: reason {code}"
                    );
                }
            }
        }
    }
    assert!(
        accepted >= 6,
        "the incidents must lead to accepted changes ({accepted})"
    );
}

#[test]
fn advanced_chords_need_enabling_and_a_passport_that_permits_them() {
    let off = ran("near_hang", "safe");
    assert!(
        off.lines
            .iter()
            .all(|l| !active(l).contains(&"TIMEOUT-GUARD"))
    );
    let on = ran("near_hang", "guarded");
    let fired: Vec<&Value> = on
        .lines
        .iter()
        .filter(|l| active(l).contains(&"TIMEOUT-GUARD"))
        .collect();
    assert_eq!(
        fired.len(),
        1,
        "TIMEOUT-GUARD fires on the stall window only"
    );
    let w = &fired[0]["window"];
    assert!(u(&w["first_step"]) <= 1208 && 1208 <= u(&w["last_step"]));
    assert_eq!(fired[0]["chord"], "TIMEOUT-GUARD");
    assert_eq!(fired[0]["policy"]["name"], "timeout-guard");
    let p = &fired[0]["proposals"][0];
    assert_eq!(p["knob"], "timeout_ms");
    assert!(p["to"].as_f64().unwrap() > 5000.0);

    // Enabled but not permitted by the passport: the chord is recognised, its proposal blocked.
    let denied = ran("near_hang", "safe+tg");
    let line = denied
        .lines
        .iter()
        .find(|l| l["chord"] == "TIMEOUT-GUARD")
        .expect("the chord still fires");
    assert_eq!(line["proposals"], serde_json::json!([]));
    assert!(
        denied.report["warnings"][0]
            .as_str()
            .unwrap()
            .contains("does not permit TIMEOUT-GUARD")
    );
    assert_eq!(denied.plan["items"], serde_json::json!([]));
}

#[test]
fn the_plan_carries_exactly_the_accepted_end_state() {
    let mut nonempty = Vec::new();
    for name in TRACES {
        for how in ["guarded", "safe"] {
            let r = ran(name, how);
            let before = &r.report["knobs_before"];
            let after = &r.report["knobs_after"];
            let mut want: BTreeMap<String, String> = BTreeMap::new();
            for (k, v) in after.as_object().unwrap() {
                if before[k] != *v {
                    want.insert(format!("modekeeper/knob.{k}"), v.to_string());
                }
            }
            let items = r.plan["items"].as_array().unwrap();
            assert_eq!(r.plan["plan_digest"], r.report["plan_digest"]);
            if want.is_empty() {
                assert!(items.is_empty(), "{name}/{how}: {items:?}");
                continue;
            }
            assert_eq!(r.plan["schema_version"], "k8s_plan.v2");
            nonempty.push(format!("{name}/{how}"));
            // Hot knobs in the knobs ConfigMap (live), cold ones on the pod template (rollout):
            // together exactly the accepted end state.
            let mut got: BTreeMap<String, String> = BTreeMap::new();
            for it in items {
                assert_eq!(it["namespace"], "default");
                match it["kind"].as_str() {
                    Some("ConfigMap") => {
                        assert_eq!(it["name"], "trainer-modekeeper-knobs");
                        assert_eq!(it["takes_effect"], "live", "{name}/{how}");
                        for (k, v) in it["patch"]["data"].as_object().unwrap() {
                            got.insert(
                                format!("modekeeper/knob.{k}"),
                                v.as_str().unwrap().to_string(),
                            );
                        }
                    }
                    Some("Deployment") => {
                        assert_eq!(it["name"], "trainer");
                        assert_eq!(it["takes_effect"], "rollout", "{name}/{how}");
                        assert!(it["patch"].get("metadata").is_none(), "pod template only");
                        for (k, v) in it["patch"]["spec"]["template"]["metadata"]["annotations"]
                            .as_object()
                            .unwrap()
                        {
                            got.insert(k.clone(), v.as_str().unwrap().to_string());
                        }
                    }
                    other => panic!("{name}/{how}: item kind {other:?}"),
                }
            }
            assert_eq!(got, want, "{name}/{how}");
            let changes = r.report["changes"].as_array().unwrap();
            assert_eq!(changes.len(), want.len());
        }
    }
    for must in ["straggler/safe", "burst/safe", "near_hang/guarded"] {
        assert!(nonempty.iter().any(|n| n == must), "{must}: {nonempty:?}");
    }
    // TIMEOUT-GUARD asks for twice the stall, rounded up to 500 ms; the guarded passport allows it.
    let nh = ran("near_hang", "guarded");
    let stall = nh
        .lines
        .iter()
        .find(|l| l["chord"] == "TIMEOUT-GUARD")
        .unwrap()["features"]["step_time_max_ms"]
        .as_f64()
        .unwrap();
    assert!(stall > 20_000.0, "the 25 s stall: {stall}");
    let want = ((2.0 * stall) / 500.0).ceil() * 500.0;
    assert_eq!(
        nh.plan["items"][0]["patch"]["spec"]["template"]["metadata"]["annotations"]["modekeeper/knob.timeout_ms"],
        format!("{want}"),
    );
}

#[test]
fn one_trace_line_per_window_in_the_documented_schema() {
    fn keys(v: &Value) -> Vec<&str> {
        let mut k: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
        k.sort_unstable();
        k
    }
    for name in TRACES {
        let r = ran(name, "guarded");
        assert_eq!(
            r.lines.len() as u64,
            u(&r.report["run"]["windows"]),
            "{name}"
        );
        assert_eq!(
            r.lines.len() as u64,
            u(&r.report["decision_trace"]["lines"])
        );
        let mut prev_last = 0;
        for l in &r.lines {
            assert_eq!(
                keys(l),
                [
                    "active_chords",
                    "blocked",
                    "chord",
                    "effects",
                    "features",
                    "passport",
                    "policy",
                    "proposals",
                    "schema_version",
                    "window"
                ]
            );
            assert_eq!(l["schema_version"], "decision_trace_event.v2");
            assert_eq!(
                keys(&l["window"]),
                ["end_ms", "first_step", "last_step", "samples", "start_ms"]
            );
            assert!(
                u(&l["window"]["first_step"]) > prev_last,
                "{name}: windows in order"
            );
            prev_last = u(&l["window"]["last_step"]);
            for p in l["proposals"].as_array().unwrap() {
                assert_eq!(keys(p), ["from", "knob", "reason", "to"]);
            }
            for b in l["blocked"].as_array().unwrap() {
                assert_eq!(keys(b), ["knob", "reason"]);
            }
            assert_eq!(keys(&l["policy"]), ["digest", "name", "version"]);
            assert_eq!(
                l["passport"],
                serde_json::json!({"name": "safe-timeout", "version": "1.0.0"})
            );
            assert!(l["features"]["step_time_p50_ms"].is_number());
            assert!(l["features"].get("window").is_none());
        }
    }
}

#[test]
fn snapshot_of_the_first_trace_lines_and_a_plan() {
    // Component digests change whenever a policy is rebuilt; other tests pin them to the report.
    let redact = |s: &str| -> String {
        let mut out = String::new();
        let mut rest = s;
        while let Some(i) = rest.find("\"digest\":\"sha256:") {
            let start = i + "\"digest\":\"".len();
            out.push_str(&rest[..start]);
            out.push_str("sha256:[component digest]");
            rest = &rest[start + "sha256:".len() + 64..];
        }
        out.push_str(rest);
        out
    };
    let burst = ran("burst", "safe");
    let head: Vec<&str> = burst.trace_text.lines().take(2).collect();
    insta::assert_snapshot!("burst_decision_trace_head", redact(&head.join("\n")));
    // The first line with an accepted proposal, to pin the proposal shape too.
    let first_change = burst
        .trace_text
        .lines()
        .find(|l| !l.contains("\"proposals\":[]"))
        .expect("burst leads to a change");
    insta::assert_snapshot!("burst_decision_trace_first_change", redact(first_change));
    insta::assert_snapshot!(
        "near_hang_guarded_plan",
        ran("near_hang", "guarded").plan_text
    );
}

/// Every change (the accepted proposals of one window) gets exactly one verdict, in the report and,
/// when the telemetry completed its evidence, on the trace line of the window that did; each names
/// the window of its change and rests on evidence after the settling window.
#[test]
fn every_change_gets_one_effect_verdict() {
    for name in TRACES {
        let r = ran(name, "guarded");
        let changed: Vec<u64> = r
            .lines
            .iter()
            .filter(|l| !l["proposals"].as_array().unwrap().is_empty())
            .map(|l| u(&l["window"]["last_step"]))
            .collect();
        let effects = r.report["effects"].as_array().unwrap();
        assert_eq!(
            u(&r.report["effects_total"]),
            changed.len() as u64,
            "{name}"
        );
        let judged: Vec<u64> = effects.iter().map(|e| u(&e["change_step"])).collect();
        assert_eq!(judged, changed, "{name}");
        let in_trace: Vec<&serde_json::Value> = r
            .lines
            .iter()
            .flat_map(|l| l["effects"].as_array().unwrap())
            .collect();
        assert!(
            in_trace.len() + 1 >= effects.len(),
            "{name}: at most the last one is judged at the end"
        );
        for (t, e) in in_trace.iter().zip(effects) {
            assert_eq!(*t, e, "{name}");
        }
        for e in effects {
            let v = e["verdict"].as_str().unwrap();
            assert!(
                ["helped", "neutral", "hurt", "inconclusive"].contains(&v),
                "{v}"
            );
            if let Some(first) = e["after"]["first_step"].as_u64() {
                assert!(
                    first > u(&e["change_step"]) + 1,
                    "{name}: the settling window is skipped"
                );
            }
            if v != "inconclusive" {
                assert!(u(&e["after"]["windows"]) >= 5 && u(&e["before"]["windows"]) >= 5);
            }
        }
    }
}

/// In a replay the verdict measures what the recorded job did after the decision: on the straggler
/// trace the first change comes as the incident begins, the incident goes on, and the change is
/// judged `hurt`. Its inverse is proposed (the effect's `rollback`) but, under the built-in passport,
/// never applied: the knob keeps its new value in the run's end state.
#[test]
fn a_hurt_change_proposes_its_rollback_without_applying_it() {
    let r = ran("straggler", "safe");
    let e = &r.report["effects"][0];
    assert_eq!(e["verdict"], "hurt", "{e}");
    let knobs = e["knobs"].as_array().unwrap();
    let back = e["rollback"].as_array().unwrap();
    assert_eq!(knobs.len(), back.len());
    for (k, b) in knobs.iter().zip(back) {
        assert_eq!(b["knob"], k["knob"]);
        assert_eq!((&b["from"], &b["to"]), (&k["to"], &k["from"]));
    }
    let knob = knobs[0]["knob"].as_str().unwrap();
    let after = &r.report["knobs_after"][knob];
    assert_ne!(after, &knobs[0]["from"], "the rollback was not applied");
}

/// The passport's `effect` settings decide: the same straggler change, judged `hurt` by the
/// defaults, proposes no rollback when the passport's `hurt_step_time_pct` is beyond its interval,
/// and gets no verdict at all when the passport asks for more evidence than the trace has.
#[test]
fn passport_effect_settings_set_the_thresholds() {
    let tmp = tempfile::tempdir().unwrap();
    let safe = serde_json::to_value(template("safe").unwrap().unwrap()).unwrap();
    let with = |name: &str, effect: Value| {
        let mut p = safe.clone();
        p["effect"] = effect;
        let path = tmp.path().join(format!("{name}.json"));
        std::fs::write(&path, p.to_string()).unwrap();
        let out = tmp.path().join(name);
        run_ok(
            &trace("straggler"),
            &out,
            &["--passport", path.to_str().unwrap()],
        );
        json(&out.join("closed_loop_latest.json"))["effects"][0].clone()
    };
    let e = with("tolerant", serde_json::json!({"hurt_step_time_pct": 500}));
    assert_eq!(e["verdict"], "hurt");
    assert_eq!(e["rollback"], serde_json::json!([]), "{e}");
    let e = with(
        "patient",
        serde_json::json!({"min_windows": 500, "horizon_windows": 500}),
    );
    assert_eq!(e["verdict"], "inconclusive", "{e}");
}

/// With `gates.auto_rollback: true` the straggler trace's `hurt` change is rolled back by the loop
/// itself: the inverse is the proposal of the window that judged it ("rollback: <verdict reason>"),
/// even inside the knob's cooldown; afterwards the knob is held from moving the hurt way again. Under
/// the built-in passport (auto_rollback false) no rollback is ever proposed as a change.
#[test]
fn auto_rollback_turns_a_hurt_verdict_into_the_windows_proposal_and_holds_the_knob() {
    let builtin = ran("straggler", "safe");
    assert!(
        builtin.report["proposed"]
            .as_array()
            .unwrap()
            .iter()
            .all(|p| !p["reason"].as_str().unwrap().starts_with("rollback:")),
        "built-in passports only propose the rollback for review"
    );

    let tmp = tempfile::tempdir().unwrap();
    let mut p = serde_json::to_value(template("safe").unwrap().unwrap()).unwrap();
    p["gates"]["auto_rollback"] = Value::Bool(true);
    let path = tmp.path().join("auto.json");
    std::fs::write(&path, p.to_string()).unwrap();
    let out = tmp.path().join("out");
    run_ok(
        &trace("straggler"),
        &out,
        &["--passport", path.to_str().unwrap()],
    );
    let report = json(&out.join("closed_loop_latest.json"));
    let e = &report["effects"][0];
    assert_eq!(e["verdict"], "hurt", "{e}");
    let back = e["rollback"].as_array().unwrap();
    assert!(!back.is_empty());
    let proposed = report["proposed"].as_array().unwrap();
    for b in back {
        let rb = proposed
            .iter()
            .find(|p| {
                p["reason"].as_str().unwrap().starts_with("rollback:") && p["knob"] == b["knob"]
            })
            .unwrap_or_else(|| panic!("no rollback of {b} in {proposed:?}"));
        assert_eq!((&rb["from"], &rb["to"]), (&b["from"], &b["to"]));
        assert_eq!(
            rb["reason"].as_str().unwrap(),
            format!("rollback: {}", e["reason"].as_str().unwrap())
        );
    }
    // Same telemetry, so the same first verdict; the run differs from the built-in one only after it.
    assert_eq!(builtin.report["effects"][0]["reason"], e["reason"]);
    let summary = std::fs::read_to_string(out.join("summary.md")).unwrap();
    assert!(
        summary.contains("rolled back by the loop (gates.auto_rollback)")
            && !summary.contains("not applied"),
        "{summary}"
    );
    // The hold: the policy keeps asking for more workers (the incident goes on); each ask after the
    // rollback is blocked as held_after_hurt, and nothing moves the knob up again.
    let knob = &back[0]["knob"];
    let rolled_at = proposed
        .iter()
        .find(|p| p["reason"].as_str().unwrap().starts_with("rollback:"))
        .unwrap()["window"]["index"]
        .as_u64()
        .unwrap();
    let held: Vec<&Value> = report["blocked"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|b| b["reason"] == "held_after_hurt")
        .collect();
    assert!(!held.is_empty(), "{}", report["blocked_by_reason"]);
    for b in &held {
        assert_eq!(&b["knob"], knob);
        assert!(b["requested"].as_f64().unwrap() > back[0]["to"].as_f64().unwrap());
        assert!(b["window"]["index"].as_u64().unwrap() > rolled_at);
    }
    assert!(
        proposed
            .iter()
            .filter(|p| &p["knob"] == knob && p["window"]["index"].as_u64().unwrap() > rolled_at)
            .all(|p| p["to"].as_f64() < p["from"].as_f64()),
        "{proposed:?}"
    );
}
