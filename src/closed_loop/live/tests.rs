//! The session on a synthetic trace with a stateful stand-in policy: a checkpoint at any window
//! resumes into the same decisions, an apply left pending is never repeated, outcomes round-trip.

use std::collections::BTreeMap;

use super::*;
use crate::closed_loop::starting_knobs;
use crate::passport::template;
use crate::policy::{
    Decision, Knobs, Limits, NORMAL_HOLD, PolicyRef, PolicyState, Proposal, WindowDecision, merge,
};
use crate::signals::{FeatureConfig, WindowFeatures};
use crate::telemetry::{Format, IngestOptions};

/// Proposes one more dataloader worker every third window it has seen (its state: that count), so
/// a resume that lost the policy's state would decide differently.
struct Every3rd {
    seen: u64,
}

impl Policies for Every3rd {
    fn decide(&mut self, f: &WindowFeatures, knobs: &Knobs, _: &Limits) -> WindowDecision {
        self.seen += 1;
        let from = knobs.0["dataloader_num_workers"];
        let (chord, proposals) = if self.seen.is_multiple_of(3) {
            let p = Proposal {
                chord: "INPUT-STRAGGLER".into(),
                knob: "dataloader_num_workers".into(),
                from,
                to: from + 1.0,
                reason: format!("window {} slow", f.window.index),
            };
            ("INPUT-STRAGGLER", vec![p])
        } else {
            (NORMAL_HOLD, vec![])
        };
        merge(vec![Decision {
            policy: PolicyRef {
                name: "every-3rd".into(),
                version: "1.0.0".into(),
                digest: format!("sha256:{}", "ab".repeat(32)),
            },
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
        }])
    }
    fn states(&self) -> Vec<PolicyState> {
        vec![PolicyState(self.seen.to_le_bytes().to_vec())]
    }
    fn set_states(&mut self, states: Vec<PolicyState>) {
        if let Some(s) = states.first() {
            self.seen = u64::from_le_bytes(s.0.as_slice().try_into().unwrap());
        }
    }
}

fn setup() -> SessionSetup {
    let passport = template("safe").unwrap().unwrap();
    let (knobs, _) = starting_knobs(&passport, &BTreeMap::new());
    SessionSetup {
        passport,
        knobs,
        features: FeatureConfig {
            window_steps: 10,
            warmup_steps: 0,
        },
        format: Format::Jsonl,
        ingest: IngestOptions {
            release_lag_steps: Some(4),
            ..IngestOptions::default()
        },
        config: serde_json::json!({"source": "test", "window_steps": 10}),
    }
}

/// 400 steps, 30 s apart (so cooldowns pass between some decisions and hold others).
fn lines() -> Vec<Vec<u8>> {
    (1..=400u64)
        .map(|i| {
            let t = 1_700_000_000_000i64 + i as i64 * 30_000;
            let st = if i % 7 == 0 {
                140.0
            } else {
                100.0 + (i % 5) as f64
            };
            format!(r#"{{"ts": {t}, "step": {i}, "step_time_ms": {st}, "loss": 2.0}}"#).into_bytes()
        })
        .collect()
}

/// Feeds `lines` one at a time, collecting the trace lines the session hands out.
fn feed(s: &mut Session, p: &mut Every3rd, lines: &[Vec<u8>], trace: &mut Vec<String>) {
    for l in lines {
        s.push_lines([l.clone()]);
        advance(s, p, trace);
    }
}

fn advance(s: &mut Session, p: &mut Every3rd, trace: &mut Vec<String>) {
    let never: Result<bool, ()> = s.advance(p, &mut |_| false, &mut |ev| {
        if let SessionEvent::Window { line, .. } = ev {
            trace.push(line.to_string());
        }
        Ok(())
    });
    assert_eq!(never, Ok(false));
}

fn finish(s: &mut Session, p: &mut Every3rd, trace: &mut Vec<String>) {
    s.finish_source();
    advance(s, p, trace);
}

/// Through the state file's bytes, as a restarted process reads it.
fn reload(s: &Session, p: &dyn Policies) -> WatchState {
    let st = s.checkpoint(serde_json::json!({"offset": 1}), p.states(), "t".into());
    let bytes = serde_json::to_vec(&st).unwrap();
    WatchState::from_slice(&bytes).unwrap()
}

#[test]
fn a_resume_after_a_checkpoint_at_any_window_decides_like_one_session() {
    let setup = setup();
    let all = lines();
    let mut p = Every3rd { seen: 0 };
    let mut s = Session::new(&setup);
    let mut whole = Vec::new();
    feed(&mut s, &mut p, &all, &mut whole);
    finish(&mut s, &mut p, &mut whole);
    let end = s.checkpoint(serde_json::Value::Null, p.states(), "t".into());
    assert_eq!(whole.len(), 40);
    assert!(
        end.loop_state.proposed_total >= 2,
        "the trace must decide: {}",
        end.loop_state.proposed_total
    );

    // Stop after the first window evaluated past each window boundary, with lines still queued.
    for stop_at in 1..whole.len() as u64 {
        let mut p = Every3rd { seen: 0 };
        let mut s = Session::new(&setup);
        let mut trace = Vec::new();
        s.push_lines(all.iter().cloned());
        let stopped: Result<bool, ()> = s.advance(&mut p, &mut |n| n >= stop_at, &mut |ev| {
            if let SessionEvent::Window { line, .. } = ev {
                trace.push(line.to_string());
            }
            Ok(())
        });
        assert_eq!(stopped, Ok(true));
        assert_eq!(trace.len() as u64, stop_at);
        assert!(s.pending_lines() > 0 || stop_at == 40);
        let state = reload(&s, &p);
        assert_eq!(setup.differs_from(&state), None);
        assert_eq!(state.trace_lines, stop_at);

        let mut p = Every3rd { seen: 99 };
        let mut s = Session::resume(&setup, state, &mut p).unwrap();
        assert_eq!(p.seen, stop_at, "the policy's state comes back");
        advance(&mut s, &mut p, &mut trace);
        finish(&mut s, &mut p, &mut trace);
        assert_eq!(trace, whole, "stopped at window {stop_at}");
        let resumed = s.checkpoint(serde_json::Value::Null, p.states(), "t".into());
        assert_eq!(resumed.loop_state, end.loop_state);
        assert_eq!(resumed.pipeline, end.pipeline);
        assert_eq!(resumed.trace_lines, end.trace_lines);
        assert_eq!(resumed.trace_bytes, end.trace_bytes);
        assert_eq!(resumed.totals.restarts, 1);
    }
}

#[test]
fn a_state_from_another_setup_says_what_differs() {
    let a = setup();
    let mut b = setup();
    b.config["window_steps"] = 20.into();
    let state = Session::new(&a).checkpoint(serde_json::Value::Null, vec![], "t".into());
    assert_eq!(a.differs_from(&state), None);
    assert_eq!(
        b.differs_from(&state),
        Some(vec!["window_steps".to_string()])
    );
    let mut p = Every3rd { seen: 0 };
    let e = Session::resume(&b, state.clone(), &mut p).err().unwrap();
    assert!(
        matches!(e, SessionError::OtherSetup(ref k) if k == &["window_steps"]),
        "{e}"
    );
    // A knob the passport would refuse is not resumed either.
    let mut bad = state;
    bad.loop_state
        .knobs
        .insert("dataloader_num_workers".into(), 1e9);
    let e = Session::resume(&a, bad, &mut p).err().unwrap();
    assert!(
        matches!(e, SessionError::BadKnobs(ref m) if m.contains("outside")),
        "{e}"
    );
}

/// Feeds until the session has a decision to apply (a fresh session: its first one).
fn until_decision(s: &mut Session, p: &mut Every3rd, lines: &mut std::slice::Iter<'_, Vec<u8>>) {
    until_later_decision(s, p, lines);
}

#[test]
fn a_pending_apply_found_after_a_crash_is_not_repeated() {
    let setup = setup();
    let all = lines();
    let mut it = all.iter();
    let mut p = Every3rd { seen: 0 };
    let mut s = Session::new(&setup);
    until_decision(&mut s, &mut p, &mut it);
    let req = s.next_apply().expect("a decision to apply");
    assert_eq!(req.changes.len(), 1);
    assert_eq!(req.changes[0].knob, "dataloader_num_workers");
    assert_eq!(
        s.next_apply(),
        None,
        "asked once per decision, even before the outcome"
    );
    // The checkpoint before the cluster is touched; then the process dies.
    let state = reload(&s, &p);
    assert_eq!(
        state.last_apply.as_ref().unwrap().outcome,
        ApplyOutcome::Pending
    );
    drop(s);

    let mut s = Session::resume(&setup, state, &mut p).unwrap();
    let mark = s.last_apply().unwrap();
    assert_eq!(mark.outcome, ApplyOutcome::Unknown);
    assert_eq!(mark.decision_window, req.decision_window);
    assert_eq!(
        s.next_apply(),
        None,
        "the same decision is never applied again"
    );
    assert!(matches!(
        s.record_apply(ApplyRecord {
            outcome: ApplyOutcome::Applied,
            attempted: true,
            apply_ok: Some(true),
            verify_ok: Some(true),
        }),
        Err(SessionError::NoApplyInFlight)
    ));
    // A later decision is applied, from the values the cluster was last known to have.
    until_decision(&mut s, &mut p, &mut it);
    let next = s.next_apply().expect("the next decision");
    assert!(next.decision_window > req.decision_window);
}

#[test]
fn typed_outcomes_round_trip_through_the_state_file() {
    let setup = setup();
    let all = lines();
    let outcomes = [
        ApplyOutcome::Applied,
        ApplyOutcome::NoChanges,
        ApplyOutcome::Blocked {
            reason: "kill_switch".into(),
        },
        ApplyOutcome::Failed {
            message: "connection refused".into(),
        },
    ];
    for o in outcomes {
        let mut it = all.iter();
        let mut p = Every3rd { seen: 0 };
        let mut s = Session::new(&setup);
        until_decision(&mut s, &mut p, &mut it);
        let req = s.next_apply().unwrap();
        s.record_apply(ApplyRecord {
            outcome: o.clone(),
            attempted: true,
            apply_ok: Some(o == ApplyOutcome::Applied),
            verify_ok: Some(true),
        })
        .unwrap();
        let text =
            serde_json::to_string(&s.checkpoint(serde_json::Value::Null, p.states(), "t".into()))
                .unwrap();
        // The text form of watch_state.v2.
        assert!(text.contains(&format!(r#""outcome":"{o}""#)), "{text}");
        let back = WatchState::from_slice(text.as_bytes()).unwrap();
        assert_eq!(back.last_apply.as_ref().unwrap().outcome, o);
        let s = Session::resume(&setup, back, &mut p).unwrap();
        assert_eq!(s.last_apply().unwrap().outcome, o);
        let t = s.saved_totals();
        assert_eq!(t.apply_attempted_total, 1);
        assert_eq!(t.applied_total, u64::from(o == ApplyOutcome::Applied));
        assert_eq!(
            t.apply_blocked_total,
            u64::from(o.blocked_reason().is_some())
        );
        assert_eq!(
            s.last_applied(),
            (o == ApplyOutcome::Applied).then_some(&req.knobs)
        );
    }
}

/// Records the protocol's order and the outcome it was checkpointed with.
struct Host {
    log: Vec<String>,
}

impl ApplyHost for Host {
    type Error = SessionError;
    fn checkpoint(&mut self, s: &Session) -> Result<(), SessionError> {
        let o = s.last_apply().map(|a| a.outcome.to_string());
        self.log
            .push(format!("checkpoint {}", o.unwrap_or_default()));
        Ok(())
    }
    fn apply(&mut self, _: &Session, req: &ApplyRequest) -> Result<ApplyRecord, SessionError> {
        self.log.push(format!("apply w{}", req.decision_window));
        Ok(ApplyRecord {
            outcome: ApplyOutcome::Applied,
            attempted: true,
            apply_ok: Some(true),
            verify_ok: Some(true),
        })
    }
}

#[test]
fn apply_decided_checkpoints_pending_before_the_cluster_and_the_outcome_after() {
    let setup = setup();
    let all = lines();
    let mut it = all.iter();
    let mut p = Every3rd { seen: 0 };
    let mut s = Session::new(&setup);
    let mut host = Host { log: vec![] };
    assert_eq!(s.apply_decided(&mut host).unwrap(), None);
    until_decision(&mut s, &mut p, &mut it);
    let (req, rec) = s.apply_decided(&mut host).unwrap().expect("applied");
    assert_eq!(rec.outcome, ApplyOutcome::Applied);
    assert_eq!(
        host.log,
        [
            "checkpoint pending".to_string(),
            format!("apply w{}", req.decision_window),
            "checkpoint applied".to_string()
        ]
    );
    assert_eq!(s.apply_decided(&mut host).unwrap(), None, "once");
    assert_eq!(s.saved_totals().applied_total, 1);
    assert_eq!(s.last_applied(), Some(&req.knobs));
}

#[test]
fn every_verdict_on_a_change_is_told_once_as_it_is_judged() {
    let setup = setup();
    let mut p = Every3rd { seen: 0 };
    let mut s = Session::new(&setup);
    let mut told = Vec::new();
    s.push_lines(lines());
    s.finish_source();
    let r: Result<bool, ()> = s.advance(&mut p, &mut |_| false, &mut |ev| {
        if let SessionEvent::Verdict(e) = ev {
            told.push(serde_json::to_value(e).unwrap());
        }
        Ok(())
    });
    assert_eq!(r, Ok(false));
    let judged = s.closed_loop().save().effects;
    assert!(!judged.is_empty(), "the trace must judge a change");
    assert_eq!(
        told,
        serde_json::to_value(&judged)
            .unwrap()
            .as_array()
            .unwrap()
            .clone()
    );
}

/// The source files under `dir` (relative to the crate root), with their text.
fn sources(dir: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut stack = vec![std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(dir)];
    while let Some(d) = stack.pop() {
        if d.is_file() {
            out.push((
                d.display().to_string(),
                std::fs::read_to_string(&d).unwrap(),
            ));
            continue;
        }
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() || p.extension().is_some_and(|x| x == "rs") {
                stack.push(p);
            }
        }
    }
    assert!(!out.is_empty(), "{dir}");
    out
}

#[test]
fn the_loop_library_has_no_cli_and_no_command_imports_another() {
    // The library: no flags or CLI types; the live loop also never prints or exits (this test
    // file excepted).
    for (path, text) in sources("src/closed_loop") {
        if path.ends_with("live/tests.rs") {
            continue;
        }
        for banned in ["crate::cli", "clap::"] {
            assert!(!text.contains(banned), "{path} uses {banned}");
        }
        if !path.contains("/live/") {
            continue;
        }
        for banned in ["println!", "eprintln!", "eprint!", "process::exit"] {
            assert!(!text.contains(banned), "{path} uses {banned}");
        }
    }
    for (path, text) in sources("src/report") {
        assert!(!text.contains("crate::cli"), "{path} imports cli");
    }
    // closed-loop run's files and watch's files do not import each other.
    let watch = ["watch", "watch_report", "watch_source", "watch_state"];
    let run = ["run", "terminal"];
    for (path, text) in sources("src/cli/closed_loop") {
        let name = std::path::Path::new(&path)
            .file_stem()
            .unwrap()
            .to_string_lossy()
            .into_owned();
        let others: &[&str] = if watch.contains(&name.as_str()) {
            &run
        } else if run.contains(&name.as_str()) {
            &watch
        } else {
            &[]
        };
        for o in others {
            assert!(
                !text.contains(&format!("super::{o}::"))
                    && !text.contains(&format!("super::{o}::{{")),
                "{path} imports {o}"
            );
        }
    }
}

#[test]
fn a_session_can_move_between_threads_of_a_pool() {
    fn send<T: Send + 'static>() {}
    send::<Session>();
    send::<WatchState>();
}

/// Feeds until a window after the last one evaluated decides.
fn until_later_decision(
    s: &mut Session,
    p: &mut Every3rd,
    lines: &mut std::slice::Iter<'_, Vec<u8>>,
) {
    let after = s.last_event().map(|_| s.last_index());
    let mut trace = Vec::new();
    for l in lines.by_ref() {
        s.push_lines([l.clone()]);
        advance(s, p, &mut trace);
        if s.last_event()
            .is_some_and(|e| !e.proposals.is_empty() && Some(s.last_index()) != after)
        {
            return;
        }
    }
    panic!("no later decision in the trace");
}

#[test]
fn an_outcome_is_recorded_against_its_own_decision_while_lines_keep_coming() {
    let setup = setup();
    let all = lines();
    let mut it = all.iter();
    let mut p = Every3rd { seen: 0 };
    let mut s = Session::new(&setup);
    until_decision(&mut s, &mut p, &mut it);
    let first = s.next_apply().expect("a decision to apply");
    // A controller keeps feeding the session while the apply runs; a newer decision arrives.
    until_later_decision(&mut s, &mut p, &mut it);
    assert_eq!(
        s.next_apply(),
        None,
        "no second apply is marked while the first is in flight"
    );
    s.record_apply(ApplyRecord {
        outcome: ApplyOutcome::Applied,
        attempted: true,
        apply_ok: Some(true),
        verify_ok: Some(true),
    })
    .unwrap();
    let mark = s.last_apply().unwrap();
    assert_eq!(mark.decision_window, first.decision_window);
    assert_eq!(mark.outcome, ApplyOutcome::Applied);
    assert_eq!(s.last_applied(), Some(&first.knobs));
    // Then the newer decision, as changes from what the first apply gave the cluster.
    let second = s.next_apply().expect("the newer decision");
    assert!(second.decision_window > first.decision_window);
    assert!(
        second
            .changes
            .iter()
            .all(|c| first.knobs.get(&c.knob) == Some(&c.from)),
        "{second:?}"
    );
}

/// Fails the step named `fail` ("checkpoint" or "apply") once.
struct Flaky {
    fail: &'static str,
    applies: u32,
}

impl ApplyHost for Flaky {
    type Error = String;
    fn checkpoint(&mut self, _: &Session) -> Result<(), String> {
        if self.fail == "checkpoint" {
            self.fail = "";
            return Err("disk full".into());
        }
        Ok(())
    }
    fn apply(&mut self, _: &Session, _: &ApplyRequest) -> Result<ApplyRecord, String> {
        self.applies += 1;
        if self.fail == "apply" {
            self.fail = "";
            return Err("connection reset".into());
        }
        Ok(ApplyRecord {
            outcome: ApplyOutcome::Applied,
            attempted: true,
            apply_ok: Some(true),
            verify_ok: Some(true),
        })
    }
}

impl From<SessionError> for String {
    fn from(e: SessionError) -> String {
        e.to_string()
    }
}

#[test]
fn a_session_that_goes_on_after_a_failed_apply_step_neither_repeats_nor_loses_an_apply() {
    let setup = setup();
    let all = lines();

    // The pending checkpoint failed: the cluster was not touched, the decision is still to apply.
    let mut it = all.iter();
    let mut p = Every3rd { seen: 0 };
    let mut s = Session::new(&setup);
    until_decision(&mut s, &mut p, &mut it);
    let mut host = Flaky {
        fail: "checkpoint",
        applies: 0,
    };
    assert_eq!(s.apply_decided(&mut host), Err("disk full".to_string()));
    assert_eq!(host.applies, 0);
    assert_eq!(s.last_apply(), None);
    let (req, _) = s.apply_decided(&mut host).unwrap().expect("applied now");
    assert_eq!(host.applies, 1);
    assert_eq!(s.last_apply().unwrap().decision_window, req.decision_window);

    // The apply itself failed midway: maybe applied, so never retried; the next decision goes.
    let mut it = all.iter();
    let mut p = Every3rd { seen: 0 };
    let mut s = Session::new(&setup);
    until_decision(&mut s, &mut p, &mut it);
    let mut host = Flaky {
        fail: "apply",
        applies: 0,
    };
    assert_eq!(
        s.apply_decided(&mut host),
        Err("connection reset".to_string())
    );
    assert_eq!(s.last_apply().unwrap().outcome, ApplyOutcome::Unknown);
    assert_eq!(s.apply_decided(&mut host), Ok(None), "not retried");
    assert_eq!(host.applies, 1);
    until_later_decision(&mut s, &mut p, &mut it);
    let (next, rec) = s
        .apply_decided(&mut host)
        .unwrap()
        .expect("the next decision");
    assert_eq!(rec.outcome, ApplyOutcome::Applied);
    assert_eq!(host.applies, 2);
    assert_eq!(s.last_applied(), Some(&next.knobs));
}

#[test]
fn verdicts_are_told_after_the_loops_own_list_is_full() {
    let setup = setup();
    let all = lines();
    let mut p = Every3rd { seen: 0 };
    let mut s = Session::new(&setup);
    let mut trace = Vec::new();
    feed(&mut s, &mut p, &all[..100], &mut trace);
    // A long-running session: the loop keeps only the first MAX_LISTED verdicts.
    let mut state = reload(&s, &p);
    let judged = state.loop_state.effects.clone();
    assert!(
        !judged.is_empty(),
        "the first 100 steps must judge a change"
    );
    while state.loop_state.effects.len() < crate::closed_loop::MAX_LISTED {
        state.loop_state.effects.push(judged[0].clone());
    }
    let mut s = Session::resume(&setup, state, &mut p).unwrap();
    let mut told = 0;
    s.push_lines(all[100..].iter().cloned());
    s.finish_source();
    let r: Result<bool, ()> = s.advance(&mut p, &mut |_| false, &mut |ev| {
        if let SessionEvent::Verdict(_) = ev {
            told += 1;
        }
        Ok(())
    });
    assert_eq!(r, Ok(false));
    assert!(told > 0, "the verdicts after the cap are told too");
}

#[test]
fn a_checkpoint_between_the_end_of_the_source_and_the_next_advance_loses_no_window() {
    let setup = setup();
    let all = lines();
    let mut p = Every3rd { seen: 0 };
    let mut s = Session::new(&setup);
    let mut trace = Vec::new();
    feed(&mut s, &mut p, &all, &mut trace);
    s.finish_source();
    // A controller checkpoints as soon as its source says it ended, then dies.
    let state = reload(&s, &p);
    drop(s);
    let mut s = Session::resume(&setup, state, &mut p).unwrap();
    // The resumed source ends again at once.
    finish(&mut s, &mut p, &mut trace);
    assert!(s.ended());
    assert_eq!(trace.len(), 40, "the last window is evaluated");
}

/// A pipeline blob of another layout (an older binary's: no layout first; or a later one's) is
/// refused with a sentence that says another version wrote it, never decoded as something else.
#[test]
fn a_pipeline_of_another_layout_says_another_version_wrote_it() {
    use base64::Engine;
    let a = setup();
    let mut p = Every3rd { seen: 0 };
    let mut s = Session::new(&a);
    let mut trace = vec![];
    feed(&mut s, &mut p, &lines()[..200], &mut trace);
    let state = reload(&s, &p);
    assert!(Session::resume(&a, state.clone(), &mut p).is_ok());
    let b64 = base64::engine::general_purpose::STANDARD;
    let bytes = b64.decode(&state.pipeline).unwrap();
    let (layout, body) = postcard::take_from_bytes::<u32>(&bytes).unwrap();
    assert_eq!(layout, super::state::PIPELINE_LAYOUT);
    let later = [postcard::to_allocvec(&(layout + 1)).unwrap(), body.to_vec()].concat();
    for (what, blob) in [("older", body.to_vec()), ("later", later)] {
        let mut st = state.clone();
        st.pipeline = b64.encode(blob);
        let e = Session::resume(&a, st, &mut p).err().unwrap();
        assert!(
            matches!(e, SessionError::Pipeline(ref m) if m.contains("another version of modekeeper wrote it")),
            "{what}: {e}"
        );
    }
}

/// The outcome of the `k`-th apply (from 0): blocked, applied, failed, in turn.
fn outcome_of(k: usize) -> ApplyOutcome {
    match k % 3 {
        0 => ApplyOutcome::Blocked {
            reason: "kill_switch_active".into(),
        },
        1 => ApplyOutcome::Applied,
        _ => ApplyOutcome::Failed {
            message: "connection refused".into(),
        },
    }
}

#[test]
fn applying_a_change_is_judged_only_when_its_apply_succeeded() {
    let setup = setup();
    let mut p = Every3rd { seen: 0 };
    let mut s = Session::new(&setup);
    s.set_applies(true);
    let (mut told, mut traced) = (Vec::new(), Vec::new());
    let mut applies: Vec<(u64, ApplyOutcome)> = Vec::new();
    for l in lines() {
        s.push_lines([l]);
        let r: Result<bool, ()> = s.advance(&mut p, &mut |_| false, &mut |ev| {
            match ev {
                SessionEvent::Verdict(e) => told.push(e.change_window),
                SessionEvent::Window { event, .. } => {
                    traced.extend(event.effects.iter().map(|e| e.change_window))
                }
                SessionEvent::Alert(_) => {}
            }
            Ok(())
        });
        assert_eq!(r, Ok(false));
        // As `watch --apply` does after every round: the latest decision, once.
        if let Some(req) = s.next_apply() {
            let outcome = outcome_of(applies.len());
            applies.push((req.decision_window, outcome.clone()));
            s.record_apply(ApplyRecord {
                attempted: outcome != ApplyOutcome::NoChanges,
                apply_ok: Some(outcome == ApplyOutcome::Applied),
                verify_ok: Some(true),
                outcome,
            })
            .unwrap();
        }
    }
    let applied: Vec<u64> = applies
        .iter()
        .filter(|(_, o)| *o == ApplyOutcome::Applied)
        .map(|(w, _)| *w)
        .collect();
    assert!(applies.len() >= 6, "{applies:?}");
    assert_eq!(told, traced, "told as the decision trace has it");
    // Every applied change but the last (still gathering evidence) is judged once; nothing else.
    assert_eq!(told, applied[..applied.len() - 1], "{applies:?}");
    let judged: Vec<u64> = s
        .closed_loop()
        .effects()
        .iter()
        .map(|e| e.change_window)
        .collect();
    assert_eq!(judged, told);
    // The last applied one is judged at the end of the telemetry; never a blocked or failed one.
    let end: Vec<u64> = s.finish().effects.iter().map(|e| e.change_window).collect();
    assert_eq!(end, applied);

    // A session that only plans judges every change it accepts, as if applied at once.
    let mut p = Every3rd { seen: 0 };
    let mut s = Session::new(&setup);
    let mut planned = Vec::new();
    s.push_lines(lines());
    let r: Result<bool, ()> = s.advance(&mut p, &mut |_| false, &mut |ev| {
        if let SessionEvent::Verdict(e) = ev {
            planned.push(e.change_window);
        }
        Ok(())
    });
    assert_eq!(r, Ok(false));
    assert!(planned.len() > told.len(), "{planned:?}");
}

/// Proposes one more dataloader worker in the `at`-th window it sees, nothing else.
struct OnceAt {
    at: u64,
    seen: u64,
}

impl Policies for OnceAt {
    fn decide(&mut self, f: &WindowFeatures, knobs: &Knobs, l: &Limits) -> WindowDecision {
        // Every3rd proposes when its count reaches a multiple of three.
        let mut inner = Every3rd {
            seen: if self.seen + 1 == self.at { 2 } else { 0 },
        };
        self.seen += 1;
        inner.decide(f, knobs, l)
    }
    fn states(&self) -> Vec<PolicyState> {
        vec![PolicyState(self.seen.to_le_bytes().to_vec())]
    }
    fn set_states(&mut self, states: Vec<PolicyState>) {
        if let Some(s) = states.first() {
            self.seen = u64::from_le_bytes(s.0.as_slice().try_into().unwrap());
        }
    }
}

/// Step `i`, which ended at `t` ms and took `step_ms` (wall time per step follows it).
fn line(i: u64, t: i64, step_ms: f64) -> Vec<u8> {
    let st = step_ms + (i % 5) as f64;
    format!(r#"{{"ts": {t}, "step": {i}, "step_time_ms": {st}, "loss": 2.0}}"#).into_bytes()
}

/// Under `gates.auto_rollback`: a change applied, the trainer 30 % slower from then on, the change
/// judged hurt and its rollback decided. Returns the session with the rollback not applied yet
/// and the first apply.
fn until_a_rollback_is_decided(setup: &SessionSetup, p: &mut OnceAt) -> (Session, ApplyRequest) {
    let mut s = Session::new(setup);
    s.set_applies(true);
    let mut slow_from = None;
    let mut first = None;
    let mut t = 1_700_000_000_000i64;
    for i in 1..=600u64 {
        let ms = if slow_from.is_some_and(|f| i >= f) {
            39_000.0
        } else {
            30_000.0
        };
        t += ms as i64 + (i % 5) as i64 * 300;
        s.push_lines([line(i, t, ms)]);
        let mut hurt = false;
        let r: Result<bool, ()> = s.advance(p, &mut |_| false, &mut |ev| {
            if let SessionEvent::Verdict(e) = ev {
                hurt |= e.verdict == crate::closed_loop::effect::Verdict::Hurt;
            }
            Ok(())
        });
        assert_eq!(r, Ok(false));
        if first.is_none() && s.apply_due() {
            let req = s.next_apply().unwrap();
            assert!(!req.rollback);
            s.record_apply(ApplyRecord {
                outcome: ApplyOutcome::Applied,
                attempted: true,
                apply_ok: Some(true),
                verify_ok: Some(true),
            })
            .unwrap();
            slow_from = Some(i + 1);
            first = Some(req);
        } else if first.is_some() && s.apply_due() {
            assert!(hurt, "the rollback comes with the hurt verdict");
            return (s, first.unwrap());
        }
    }
    panic!("no rollback decided");
}

fn rollback_setup() -> SessionSetup {
    let mut setup = setup();
    setup.passport.gates.auto_rollback = true;
    setup
}

#[test]
fn a_rollback_decided_before_a_restart_is_applied_after_it_as_a_rollback() {
    let setup = rollback_setup();
    let mut p = OnceAt { at: 12, seen: 0 };
    let (s, first) = until_a_rollback_is_decided(&setup, &mut p);
    // Checkpointed after the decision, before its apply (the controller tells a decision's
    // Events before it applies); then the process stops.
    let state = reload(&s, &p);
    assert_eq!(
        state.latest_decision.map(|d| d.rollback),
        Some(true),
        "{:?}",
        state.latest_decision
    );
    drop(s);
    let mut s = Session::resume(&setup, state, &mut p).unwrap();
    s.set_applies(true);
    assert!(s.apply_due(), "the decision is still to apply");
    let req = s.next_apply().unwrap();
    assert!(req.rollback, "told as the rollback it is");
    assert!(req.decision_window > first.decision_window);
    // Back where the hurt change started.
    assert_eq!(req.changes.len(), first.changes.len());
    for (back, there) in req.changes.iter().zip(&first.changes) {
        assert_eq!(
            (&back.knob, back.from, back.to),
            (&there.knob, there.to, there.from)
        );
    }
    // The pending mark says so too, across another restart (never applied twice).
    let state = reload(&s, &p);
    let mark = state.last_apply.as_ref().unwrap();
    assert_eq!(
        (mark.outcome.clone(), mark.rollback),
        (ApplyOutcome::Pending, true)
    );
    let s = Session::resume(&setup, state, &mut p).unwrap();
    assert_eq!(s.last_apply().unwrap().outcome, ApplyOutcome::Unknown);
    assert!(s.last_apply().unwrap().rollback);
    assert!(!s.apply_due());
}

/// The latest decision is read back from a file anyone may have edited: it must be one the loop
/// made (its window had accepted changes, rollbacks exactly when they were), no earlier than the
/// last apply. A state of an older version (no such field) resumes as before.
#[test]
fn a_saved_latest_decision_is_checked_and_an_older_state_still_resumes() {
    let setup = rollback_setup();
    let mut p = OnceAt { at: 12, seen: 0 };
    let (s, first) = until_a_rollback_is_decided(&setup, &mut p);
    let state = serde_json::to_value(reload(&s, &p)).unwrap();
    let rollback_window = state["latest_decision"]["window"].as_u64().unwrap();
    let resume = |v: &serde_json::Value| {
        let bytes = serde_json::to_vec(v).unwrap();
        let st = WatchState::from_slice(&bytes).unwrap();
        Session::resume(&setup, st, &mut OnceAt { at: 12, seen: 0 })
    };
    assert!(resume(&state).unwrap().apply_due());

    // Written before the field existed: the decision of the last apply, not a rollback.
    let mut old = state.clone();
    old.as_object_mut().unwrap().remove("latest_decision");
    let s = resume(&old).unwrap();
    assert!(!s.apply_due());
    assert!(!s.last_apply().unwrap().rollback);

    let bad = |edit: &dyn Fn(&mut serde_json::Value), says: &str| {
        let mut v = state.clone();
        edit(&mut v);
        let e = resume(&v).err().expect(says);
        assert!(
            matches!(e, SessionError::BadDecision(ref m) if m.contains(says)),
            "{says}: {e}"
        );
    };
    bad(
        &|v| v["latest_decision"]["rollback"] = false.into(),
        "does not match the changes of window",
    );
    bad(
        &|v| v["latest_decision"]["window"] = (rollback_window + 1).into(),
        "accepted no change in that window",
    );
    bad(
        &|v| v["latest_decision"]["window"] = (first.decision_window - 1).into(),
        "is before last_apply.decision_window",
    );
    bad(
        &|v| {
            v["latest_decision"]["window"] = first.decision_window.into();
            v["latest_decision"]["rollback"] = true.into();
        },
        "differ",
    );
    // Once the loop's list of changes is full, a decision before its last listed one.
    bad(
        &|v| {
            v["loop"]["proposed_total"] = 5000.into();
            v["latest_decision"]["window"] = (first.decision_window + 1).into();
        },
        "before changes the loop accepted later",
    );
}

/// Applying, with blocked, applied and failed outcomes in turn, and the session restarted from
/// its checkpoint after line `restart_at` (`.1`: between the round's decisions and its apply, as
/// the controller checkpoints; else after the apply): the trace lines, and the lines after which
/// an apply was made.
fn applying_trace(restart_at: Option<(usize, bool)>) -> (Vec<String>, Vec<usize>) {
    let setup = setup();
    let mut p = Every3rd { seen: 0 };
    let mut s = Session::new(&setup);
    s.set_applies(true);
    let mut trace = Vec::new();
    let mut applies = Vec::new();
    for (i, l) in lines().into_iter().enumerate() {
        s.push_lines([l]);
        advance(&mut s, &mut p, &mut trace);
        if restart_at == Some((i, true)) {
            (s, p) = restarted(&setup, &s, &p);
        }
        if s.next_apply().is_some() {
            let outcome = outcome_of(applies.len());
            applies.push(i);
            s.record_apply(ApplyRecord {
                attempted: true,
                apply_ok: Some(outcome == ApplyOutcome::Applied),
                verify_ok: Some(true),
                outcome,
            })
            .unwrap();
        }
        if restart_at == Some((i, false)) {
            (s, p) = restarted(&setup, &s, &p);
        }
    }
    finish(&mut s, &mut p, &mut trace);
    (trace, applies)
}

/// A new process's applying session and policy, from `s`'s checkpoint.
fn restarted(setup: &SessionSetup, s: &Session, p: &Every3rd) -> (Session, Every3rd) {
    let state = reload(s, p);
    let mut p = Every3rd { seen: 0 };
    let mut s = Session::resume(setup, state, &mut p).unwrap();
    s.set_applies(true);
    (s, p)
}

#[test]
fn applying_a_resume_after_any_round_judges_like_one_session() {
    let (whole, applies) = applying_trace(None);
    let judged = whole
        .iter()
        .filter(|l| !l.contains(r#""effects":[]"#))
        .count();
    assert!(judged >= 3, "the trace must judge changes");
    // Between each decision and its apply (the decision waits for its apply across the
    // restart), right after the apply (a change cut short waits for the next window), and a line
    // before.
    for at in applies
        .iter()
        .flat_map(|&i| [(i, true), (i, false), (i - 1, false)])
    {
        let (trace, again) = applying_trace(Some(at));
        assert_eq!(trace, whole, "restarted at {at:?}");
        assert_eq!(again, applies, "restarted at {at:?}");
    }
}
