//! safe-chords (the embedded component) on every real H100 trace: each incident segment gets its
//! chord, each recovery segment gets RECOVER-RELOCK, NORMAL segments after warm-up get nothing but
//! NORMAL-HOLD; TIMEOUT-GUARD catches the near-hang when enabled.

mod policy_support;

use policy_support::{TRACES, score, set};

fn assert_clean(name: &str, report: &modekeeper::policy::TestReport) {
    for s in &report.segments {
        assert_ne!(
            s.outcome, "missed",
            "{name}: segment {} ({}-{}) missed; chords seen {:?}",
            s.regime, s.first_step, s.last_step, s.chords_seen
        );
    }
    assert_eq!(
        report.false_alarms, 0,
        "{name}: false alarms {:?}",
        report.false_alarm_chords
    );
    assert_eq!(report.failed_windows, 0, "{name}: policy failures");
}

fn outcome<'a>(report: &'a modekeeper::policy::TestReport, regime: &str) -> &'a str {
    report
        .segments
        .iter()
        .find(|s| s.regime == regime)
        .map(|s| s.outcome)
        .unwrap_or("absent")
}

#[test]
fn every_trace_gets_the_right_chords() {
    for name in TRACES {
        let mut set = set(&[]);
        let (_, report) = score(name, &mut set);
        assert_clean(name, &report);
    }
}

#[test]
fn incident_segments_are_detected_by_their_chord() {
    let cases = [
        ("straggler", "INPUT-STRAGGLER"),
        ("burst", "BURST"),
        ("drift", "DRIFT"),
        ("combo", "INPUT-STRAGGLER+BURST"),
        ("straggler", "RECOVER"),
        ("burst", "RECOVER"),
        ("combo", "RECOVER"),
        ("near_hang", "RECOVER"),
    ];
    for (name, regime) in cases {
        let mut set = set(&[]);
        let (_, report) = score(name, &mut set);
        assert_eq!(
            outcome(&report, regime),
            "detected",
            "{name}/{regime}: {:?}",
            report.segments
        );
    }
}

#[test]
fn stable_trace_holds_everywhere() {
    let mut set = set(&["timeout-guard", "comm-congestion"]);
    let (decisions, report) = score("stable", &mut set);
    assert!(report.normal_windows_after_warmup > 70);
    for (f, d) in &decisions {
        assert_eq!(
            d.chord, "NORMAL-HOLD",
            "window {}-{}: {:?}",
            f.window.first_step, f.window.last_step, d.active_chords
        );
        assert!(d.active_chords.is_empty() && d.proposals.is_empty());
    }
}

#[test]
fn near_hang_gets_timeout_guard_when_enabled() {
    let mut without = set(&[]);
    let (_, r) = score("near_hang", &mut without);
    assert_eq!(outcome(&r, "NEAR-HANG"), "not_enabled");

    let mut with = set(&["timeout-guard"]);
    let (decisions, r) = score("near_hang", &mut with);
    assert_eq!(outcome(&r, "NEAR-HANG"), "detected", "{:?}", r.segments);
    assert_clean("near_hang+timeout-guard", &r);
    let fired: Vec<_> = decisions
        .iter()
        .filter(|(_, d)| d.active_chords.iter().any(|c| c == "TIMEOUT-GUARD"))
        .collect();
    assert_eq!(
        fired.len(),
        1,
        "TIMEOUT-GUARD fires once, on the stall window"
    );
    let (f, d) = fired[0];
    assert!(f.window.first_step <= 1208 && 1208 <= f.window.last_step);
    assert_eq!(d.chord, "TIMEOUT-GUARD");
    let p = d
        .proposals
        .iter()
        .find(|p| p.knob == "timeout_ms")
        .expect("a timeout proposal");
    assert!(
        p.to > p.from,
        "TIMEOUT-GUARD only widens the timeout: {p:?}"
    );
}

#[test]
fn advanced_policies_stay_silent_elsewhere() {
    for name in TRACES.into_iter().filter(|n| *n != "near_hang") {
        let mut s = set(&["timeout-guard", "comm-congestion"]);
        let (decisions, report) = score(name, &mut s);
        assert_clean(name, &report);
        let advanced: Vec<_> = decisions
            .iter()
            .filter(|(_, d)| {
                d.active_chords
                    .iter()
                    .any(|c| c == "TIMEOUT-GUARD" || c == "COMM-CONGESTION")
            })
            .map(|(f, d)| (f.window.first_step, d.active_chords.clone()))
            .collect();
        // The drift trace's recompilation hiccup (2 s, far from the 5 s watchdog) is no near-hang.
        assert!(advanced.is_empty(), "{name}: {advanced:?}");
    }
}

#[test]
fn proposals_keep_the_global_batch() {
    for name in TRACES {
        let mut s = set(&[]);
        let (decisions, _) = score(name, &mut s);
        for (_, d) in &decisions {
            let mb = d.proposals.iter().find(|p| p.knob == "microbatch_size");
            let ga = d.proposals.iter().find(|p| p.knob == "grad_accum_steps");
            match (mb, ga) {
                (None, None) => {}
                (Some(mb), Some(ga)) => {
                    assert_eq!(mb.from * ga.from, mb.to * ga.to, "{name}: {mb:?} {ga:?}")
                }
                _ => panic!(
                    "{name}: microbatch_size and grad_accum_steps must move together: {:?}",
                    d.proposals
                ),
            }
        }
    }
}

#[test]
fn proposals_name_their_chord() {
    let mut s = set(&[]);
    let (decisions, _) = score("combo", &mut s);
    let both: Vec<_> = decisions
        .iter()
        .filter(|(_, d)| d.active_chords.len() == 2 && d.proposals.len() >= 2)
        .collect();
    assert!(
        !both.is_empty(),
        "the combo trace has windows where INPUT-STRAGGLER and BURST-ABSORB both propose"
    );
    for (_, d) in both {
        for p in &d.proposals {
            let want = match p.knob.as_str() {
                "dataloader_num_workers" => "INPUT-STRAGGLER",
                "dataloader_prefetch_factor" | "concurrency" => "BURST-ABSORB",
                other => panic!("unexpected knob {other}"),
            };
            assert_eq!(p.chord, want, "{p:?}");
        }
    }
}

#[test]
fn a_run_replays_byte_for_byte_from_saved_states() {
    let limits = modekeeper::policy::Limits::reference();
    let knobs = modekeeper::policy::Knobs::baseline(&limits);
    let windows = policy_support::windows("combo");
    let mut full = set(&["timeout-guard"]);
    let mut decisions = Vec::new();
    let mut saved = Vec::new();
    for f in &windows {
        saved.push(full.states());
        decisions.push(full.evaluate(f, &knobs, &limits));
    }
    // Resume halfway from the saved states: the rest is identical, serialized byte for byte.
    let half = windows.len() / 2;
    let mut resumed = set(&["timeout-guard"]);
    resumed.set_states(saved[half].clone());
    for (f, want) in windows[half..].iter().zip(&decisions[half..]) {
        let got = resumed.evaluate(f, &knobs, &limits);
        assert_eq!(
            serde_json::to_vec(&got).unwrap(),
            serde_json::to_vec(want).unwrap()
        );
    }
    assert!(decisions.iter().any(|d| d.chord != "NORMAL-HOLD"));
}

/// Detection delay (onset to the chord firing, as `policy test` reports it) may not get worse than
/// measured on 2026-12-03, and meets issue 12's target: a median of at most 3 s over the six
/// incidents and none over 10 s. Before windows were bounded in wall time and closed at their fifth
/// slow spike (docs/signals.md), the delays were 1.6, 7.0, 10.9, 16.4, 0.8 and 1.2 s (median 4.3 s);
/// lower a bound here when a change improves it, never raise one.
#[test]
fn incident_delays_do_not_regress() {
    let bounds = [
        // Timed from the onset record's own timestamp.
        ("straggler", "INPUT-STRAGGLER", 1.1, &[][..]),
        ("burst", "BURST", 4.8, &[]),
        ("combo", "INPUT-STRAGGLER+BURST", 6.4, &[]),
        // The drift trace's loss rises with its step time: DRIFT-RETUNE fires on the first window
        // the wall cap closes after the slowdown (the step-time drift follows one window later).
        ("drift", "DRIFT", 9.1, &[]),
        ("loss_drift", "LOSS-DRIFT", 0.8, &[]),
        // The stalled step's record closes its window (it took twice the window's wall time).
        ("near_hang", "NEAR-HANG", 0.05, &["timeout-guard"]),
    ];
    let mut delays = Vec::new();
    for (name, regime, max_s, advanced) in bounds {
        let mut set = set(advanced);
        let (_, report) = score(name, &mut set);
        let seg = report
            .segments
            .iter()
            .find(|s| s.regime == regime)
            .expect("labelled segment");
        let delay = seg.delay_s.expect("detected, so it has a delay");
        assert!(
            delay <= max_s + 0.05,
            "{name}/{regime}: detected after {delay:.2} s, the bound is {max_s} s"
        );
        delays.push(delay);
    }
    delays.sort_by(f64::total_cmp);
    let median = (delays[2] + delays[3]) / 2.0;
    assert!(median <= 3.0, "median delay {median:.2} s: {delays:?}");
    assert!(
        delays[5] <= 10.0,
        "worst delay {:.2} s: {delays:?}",
        delays[5]
    );
}
