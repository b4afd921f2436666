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
fn reload(s: &Session, p: &Every3rd) -> WatchState {
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
