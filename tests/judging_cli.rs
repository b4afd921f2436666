//! Judging real runs (issue 12), through the built binary: a NaN loss is a divergence incident,
//! loss-only telemetry is judged on its loss, planned slow steps are set aside, slow runs get a
//! verdict, and a planned batch-size change re-baselines instead of raising drift.

mod closed_loop_support;

use std::fs;
use std::path::{Path, PathBuf};

use closed_loop_support::{bin, json, observe_ok as observe, run_ok, trace_lines};
use serde_json::Value;

const T0: u64 = 1_767_225_600_000;

fn write(dir: &Path, name: &str, lines: &[String]) -> PathBuf {
    let p = dir.join(name);
    fs::write(&p, lines.join("\n") + "\n").unwrap();
    p
}

fn symptoms(r: &Value) -> Vec<String> {
    r["episodes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["confidence"] != "low")
        .map(|e| e["symptom"].as_str().unwrap().to_string())
        .collect()
}

/// A steady record every step: 100 ms steps, slowly falling loss.
fn steady(step: u64) -> String {
    format!(
        r#"{{"ts": {}, "step": {step}, "step_time_ms": {}, "loss": {:.4}}}"#,
        T0 + step * 100,
        100.0 + (step % 7) as f64,
        3.0 - step as f64 * 1e-4
    )
}

#[test]
fn a_nan_loss_is_a_divergence_incident_and_the_record_is_kept() {
    let tmp = tempfile::tempdir().unwrap();
    let mut lines: Vec<String> = (1..=600).map(steady).collect();
    // As trainers print it: `nan`.
    lines[449] = format!(
        r#"{{"ts": {}, "step": 450, "step_time_ms": 101, "loss": "nan"}}"#,
        T0 + 45_000
    );
    // Python's json.dumps writes a bare token.
    lines[450] = format!(
        r#"{{"ts": {}, "step": 451, "step_time_ms": 101, "loss": NaN}}"#,
        T0 + 45_100
    );
    let p = write(tmp.path(), "nan.jsonl", &lines);
    let (r, text) = observe(&p, &tmp.path().join("out"));
    assert_eq!(r["ingest"]["records_emitted"], 600);
    let skipped = &r["ingest"]["skipped_by_reason"]["non_finite"];
    assert_eq!(skipped.as_u64().unwrap_or(0), 0, "{skipped}");
    assert_eq!(r["verdict"]["state"], "incidents");
    assert_eq!(r["verdict"]["loss_divergence_step"], 450);
    assert_eq!(r["verdict"]["loss_non_finite_records"], 2);
    assert_eq!(symptoms(&r), ["loss_divergence"]);
    assert!(text.contains("LOSS DIVERGED at step 450"), "{text}");
    let md = fs::read_to_string(tmp.path().join("out/summary.md")).unwrap();
    assert!(md.contains("LOSS DIVERGED at step 450"), "{md}");
}

#[test]
fn a_divergence_inside_the_warm_up_is_still_reported() {
    let tmp = tempfile::tempdir().unwrap();
    let mut lines: Vec<String> = (1..=120).map(steady).collect();
    lines[30] = r#"{"step": 31, "step_time_ms": 100, "loss": "NaN"}"#.into();
    let p = write(tmp.path(), "early.jsonl", &lines);
    let (r, _) = observe(&p, &tmp.path().join("out"));
    assert_eq!(r["verdict"]["state"], "incidents");
    assert_eq!(r["verdict"]["loss_divergence_step"], 31);
}

#[test]
fn loss_only_telemetry_is_judged_on_its_loss_and_says_what_it_could_not_judge() {
    let tmp = tempfile::tempdir().unwrap();
    let lines: Vec<String> = (1..=1500)
        .map(|s| format!(r#"{{"step": {s}, "loss": {:.4}}}"#, 3.0 - s as f64 * 1e-4))
        .collect();
    let p = write(tmp.path(), "loss.jsonl", &lines);
    let (r, text) = observe(&p, &tmp.path().join("out"));
    assert_eq!(r["ingest"]["records_emitted"], 1500);
    assert_eq!(r["verdict"]["state"], "steady");
    assert_eq!(r["verdict"]["not_judged"], serde_json::json!(["step_time"]));
    assert!(text.contains("loss only"), "{text}");
    assert!(
        !text.contains("step time p50"),
        "no step-time timeline to draw: {text}"
    );

    // A loss that climbs is still caught without any step time.
    let rising: Vec<String> = (1..=1500)
        .map(|s| {
            let loss = if s < 900 {
                3.0
            } else {
                3.0 + (s - 900) as f64 * 0.01
            };
            format!(r#"{{"step": {s}, "loss": {loss:.4}}}"#)
        })
        .collect();
    let p = write(tmp.path(), "rising.jsonl", &rising);
    let (r, _) = observe(&p, &tmp.path().join("out2"));
    assert_eq!(symptoms(&r), ["loss_drift"], "{:#}", r["episodes"]);
}

/// Logged every 10 steps (as Megatron does), evaluation every 100 steps makes that step 7x slower.
fn with_periodic_eval(step: u64) -> String {
    let st = if step.is_multiple_of(100) {
        700.0
    } else {
        100.0
    };
    format!(
        r#"{{"ts": {}, "step": {step}, "step_time_ms": {st}, "loss": {:.4}, "worker_latencies_ms": [8, 8, 8, 8]}}"#,
        T0 + step * 100,
        3.0 - step as f64 * 1e-4
    )
}

#[test]
fn periodic_evaluation_steps_are_set_aside_never_a_burst() {
    let tmp = tempfile::tempdir().unwrap();
    let lines: Vec<String> = (1..=400).map(|i| with_periodic_eval(i * 10)).collect();
    let p = write(tmp.path(), "eval.jsonl", &lines);
    let (r, text) = observe(&p, &tmp.path().join("out"));
    assert_eq!(r["verdict"]["state"], "steady", "{:#}", r["episodes"]);
    assert!(symptoms(&r).is_empty());
    let planned = &r["verdict"]["planned_steps"];
    assert_eq!(planned["period_steps"], 100);
    assert!(planned["periodic"].as_u64().unwrap() >= 35, "{planned}");
    assert!(text.contains("planned slow steps set aside"), "{text}");

    // And the closed loop proposes nothing for them.
    let out = tmp.path().join("cl");
    run_ok(&p, &out, &[]);
    for l in trace_lines(&out) {
        assert_eq!(l["chord"], "NORMAL-HOLD", "{l}");
        assert_eq!(l["proposals"], serde_json::json!([]), "{l}");
    }
}

#[test]
fn announced_evaluation_and_checkpoint_steps_are_set_aside() {
    let tmp = tempfile::tempdir().unwrap();
    let lines: Vec<String> = (1..=400)
        .map(|i| {
            let step = i * 10;
            let line = with_periodic_eval(step + 3);
            // Irregular slow steps the trainer announces.
            if matches!(i, 37 | 91 | 150 | 262) {
                format!(
                    r#"{{"ts": {}, "step": {}, "step_time_ms": 900, "event": "{}"}}"#,
                    T0 + (step + 3) * 100,
                    step + 3,
                    if i % 2 == 0 { "checkpoint" } else { "eval" }
                )
            } else {
                line
            }
        })
        .collect();
    let p = write(tmp.path(), "events.jsonl", &lines);
    let (r, _) = observe(&p, &tmp.path().join("out"));
    assert_eq!(r["verdict"]["state"], "steady", "{:#}", r["episodes"]);
    assert_eq!(r["verdict"]["planned_steps"]["evaluation"], 2);
    assert_eq!(r["verdict"]["planned_steps"]["checkpoint"], 2);
}

/// 62 iterations of about two minutes each (the shape of the BigScience Megatron-DeepSpeed log).
#[test]
fn a_slow_run_gets_a_verdict() {
    let tmp = tempfile::tempdir().unwrap();
    let lines: Vec<String> = (1..=62)
        .map(|s| {
            let st = if s == 1 {
                144_915.6
            } else {
                127_000.0 + (s % 5) as f64 * 300.0
            };
            format!(
                r#"{{"ts": {}, "step": {s}, "step_time_ms": {st}, "loss": {:.3}}}"#,
                T0 + s * 127_000,
                12.4 - s as f64 * 0.05
            )
        })
        .collect();
    let p = write(tmp.path(), "slow.jsonl", &lines);
    let (r, text) = observe(&p, &tmp.path().join("out"));
    assert_eq!(r["verdict"]["state"], "steady", "{text}");
    assert_eq!(r["config"]["window_steps"], 4);
    assert_eq!(r["config"]["warmup_steps"], 8);
    assert!(r["verdict"]["windows_after_warmup"].as_u64().unwrap() >= 10);
}

fn batch_ramp(step: u64, with_batch: bool) -> String {
    let (gbs, st) = if step < 1500 {
        (256, 100.0)
    } else {
        (512, 200.0)
    };
    let batch = if with_batch {
        format!(r#", "global_batch_size": {gbs}"#)
    } else {
        String::new()
    };
    format!(
        r#"{{"ts": {}, "step": {step}, "step_time_ms": {}{batch}, "loss": {:.4}}}"#,
        T0 + step * 150,
        st + (step % 7) as f64,
        3.0 - step as f64 * 1e-4
    )
}

#[test]
fn a_planned_batch_size_change_rebaselines_instead_of_raising_drift() {
    let tmp = tempfile::tempdir().unwrap();
    // Without the batch size in the log, doubling the step time is a drift...
    let lines: Vec<String> = (1..=3000).map(|s| batch_ramp(s, false)).collect();
    let p = write(tmp.path(), "unknown.jsonl", &lines);
    let (r, _) = observe(&p, &tmp.path().join("out1"));
    assert!(
        symptoms(&r).contains(&"step_time_drift".to_string()),
        "{:#}",
        r["episodes"]
    );
    // ...with it, the new step shape is a new baseline.
    let lines: Vec<String> = (1..=3000).map(|s| batch_ramp(s, true)).collect();
    let p = write(tmp.path(), "planned.jsonl", &lines);
    let (r, _) = observe(&p, &tmp.path().join("out2"));
    assert_eq!(r["verdict"]["state"], "steady", "{:#}", r["episodes"]);
    let out = tmp.path().join("cl");
    run_ok(&p, &out, &[]);
    assert!(
        trace_lines(&out)
            .iter()
            .all(|l| l["chord"] == "NORMAL-HOLD"),
        "a planned change drove a chord"
    );
}

fn gz_trace(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/traces")
        .join(format!("{name}.jsonl.gz"))
}

/// The closed loop cannot fix a rising or diverged loss: it says so in the terminal, the report and
/// summary.md, and proposes nothing for it.
#[test]
fn closed_loop_run_flags_a_rising_loss_for_a_human() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let o = run_ok(&gz_trace("loss_drift"), &out, &[]);
    let text = String::from_utf8(o.stdout).unwrap();
    assert!(
        text.contains("ALERT     NEEDS A HUMAN: loss rising since step"),
        "{text}"
    );
    let r = json(&out.join("closed_loop_latest.json"));
    let alerts = r["alerts"].as_array().unwrap();
    assert_eq!(alerts.len(), 1, "{alerts:?}");
    assert_eq!(alerts[0]["kind"], "loss_rising");
    // Labelled LOSS-DRIFT from step 1373: found within the window that holds it.
    let first = alerts[0]["first_step"].as_u64().unwrap();
    assert!((1301..=1400).contains(&first), "{first}");
    assert_eq!(r["proposed_total"], 0);
    // The decision trace activates DRIFT-RETUNE (the drift chord) and proposes nothing with it.
    let lines = trace_lines(&out);
    let retune: Vec<&Value> = lines
        .iter()
        .filter(|l| l["chord"] == "DRIFT-RETUNE")
        .collect();
    assert!(retune.len() >= 40, "{} DRIFT-RETUNE windows", retune.len());
    assert!(
        retune
            .iter()
            .all(|l| l["proposals"] == serde_json::json!([]))
    );
    let first = retune[0]["window"]["first_step"].as_u64().unwrap();
    assert!((1301..=1400).contains(&first), "{first}");
    let md = fs::read_to_string(out.join("summary.md")).unwrap();
    assert!(md.contains("NEEDS A HUMAN: loss rising"), "{md}");

    // A healthy run raises none.
    let out = tmp.path().join("stable");
    run_ok(&gz_trace("stable"), &out, &[]);
    let r = json(&out.join("closed_loop_latest.json"));
    assert!(r.get("alerts").is_none(), "{}", r["alerts"]);
}

#[test]
fn closed_loop_run_flags_a_diverged_loss_at_once() {
    let tmp = tempfile::tempdir().unwrap();
    let mut lines: Vec<String> = (1..=600).map(steady).collect();
    lines[449] = format!(
        r#"{{"ts": {}, "step": 450, "step_time_ms": 101, "loss": "nan"}}"#,
        T0 + 45_000
    );
    let p = write(tmp.path(), "nan.jsonl", &lines);
    let out = tmp.path().join("out");
    let o = run_ok(&p, &out, &[]);
    let text = String::from_utf8(o.stdout).unwrap();
    assert!(
        text.contains("NEEDS A HUMAN: LOSS DIVERGED at step 450"),
        "{text}"
    );
    let r = json(&out.join("closed_loop_latest.json"));
    assert_eq!(r["alerts"][0]["kind"], "loss_divergence");
    assert_eq!(r["alerts"][0]["first_step"], 401);
}

#[test]
fn closed_loop_watch_says_a_rising_loss_needs_a_human_the_moment_it_shows() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("watch");
    let o = bin()
        .args(["closed-loop", "watch", "--path"])
        .arg(gz_trace("loss_drift"))
        .arg("--out")
        .arg(&out)
        .args(["-o", "json"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{stderr}");
    assert_eq!(
        stderr.matches("ALERT NEEDS A HUMAN: loss rising").count(),
        1,
        "{stderr}"
    );
    let explain = fs::read_to_string(out.join("explain.jsonl")).unwrap();
    assert!(explain.contains(r#""watch_alert""#), "{explain}");
}

/// The real BigScience Megatron-DeepSpeed run (tests/data/real/README.md): 62 iterations of about
/// two minutes. Before windows adapted to step duration it was "not enough data".
#[test]
fn the_real_two_minute_iteration_run_is_judged_steady() {
    let tmp = tempfile::tempdir().unwrap();
    let p =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/real/bigscience_n16_ds_off.jsonl");
    let (r, text) = observe(&p, &tmp.path().join("out"));
    assert_eq!(r["ingest"]["records_emitted"], 62);
    assert_eq!(r["verdict"]["state"], "steady", "{text}");
    assert_eq!(r["config"]["window_steps"], 4);
    assert_eq!(r["verdict"]["windows_after_warmup"], 14);
}

/// Loss-only telemetry in the closed loop: a rising loss activates DRIFT-RETUNE (no proposal) and
/// raises the alert, though no window ever has a step-time baseline.
#[test]
fn closed_loop_judges_a_loss_only_run_on_its_loss() {
    let tmp = tempfile::tempdir().unwrap();
    let rising: Vec<String> = (1..=1500)
        .map(|s| {
            let loss = if s < 900 {
                3.0
            } else {
                3.0 + (s - 900) as f64 * 0.01
            };
            format!(r#"{{"step": {s}, "loss": {loss:.4}}}"#)
        })
        .collect();
    let p = write(tmp.path(), "rising.jsonl", &rising);
    let out = tmp.path().join("out");
    run_ok(&p, &out, &[]);
    let lines = trace_lines(&out);
    let chords: Vec<&str> = lines.iter().map(|l| l["chord"].as_str().unwrap()).collect();
    let first = chords.iter().position(|c| *c == "DRIFT-RETUNE").unwrap();
    assert!(
        chords[..first].iter().all(|c| *c == "NORMAL-HOLD"),
        "{chords:?}"
    );
    let step = lines[first]["window"]["first_step"].as_u64().unwrap();
    assert!((901..=1000).contains(&step), "{step}");
    assert!(
        lines
            .iter()
            .all(|l| l["proposals"] == serde_json::json!([]))
    );
    let r = json(&out.join("closed_loop_latest.json"));
    assert_eq!(r["alerts"][0]["kind"], "loss_rising");
}

/// A Megatron iteration line as the BigScience logs print it: no time on the line.
fn megatron_iteration(step: u64, ms: f64) -> String {
    format!(
        " iteration {step:8}/    1000 | consumed samples: {:12} | elapsed time per iteration (ms): {ms:.1} | learning rate: 1.875E-05 | global batch size:  1024 | lm loss: {:.6E} | loss scale: 4096.0 |",
        step * 1024,
        3.0 - step as f64 * 1e-4
    )
}

fn megatron_steady(step: u64) -> String {
    megatron_iteration(step, 800.0 + (step % 7) as f64 * 3.0)
}

/// A restart in a log without time: the step counter goes back to the last checkpoint. The steps the
/// restarted run repeats are duplicates; the first step past where the old run got is a planned
/// resume, as a wall-clock gap would make it.
#[test]
fn a_restart_without_timestamps_is_found_in_the_step_sequence() {
    let tmp = tempfile::tempdir().unwrap();
    let mut lines: Vec<String> = (1..=300).map(megatron_steady).collect();
    lines.push("using world size: 16, data-parallel-size: 1".into());
    lines.push(megatron_iteration(251, 9_000.0));
    lines.extend((252..=600).map(megatron_steady));
    let p = write(tmp.path(), "restart.log", &lines);
    let (r, text) = observe(&p, &tmp.path().join("out"));
    assert_eq!(r["format_detected"]["name"], "megatron");
    assert_eq!(r["ingest"]["records_emitted"], 600);
    assert_eq!(r["verdict"]["state"], "steady", "{:#}", r["episodes"]);
    assert_eq!(r["verdict"]["planned_steps"]["resume"], 1, "{text}");
}

/// A run that resumes where the old one stopped does not go back: the trainer's own line says it.
#[test]
fn a_resumed_run_s_first_step_is_planned_where_the_trainer_says_so() {
    let tmp = tempfile::tempdir().unwrap();
    let nanogpt = |step: u64, ms: f64| {
        format!(
            "iter {step}: loss {:.4}, time {ms:.2}ms, mfu 35.12%",
            3.0 - step as f64 * 1e-4
        )
    };
    for (name, banner, line) in [
        (
            "megatron.log",
            " successfully loaded checkpoint from /ckpt/gpt2 at iteration 300",
            &(|s, ms| megatron_iteration(s, ms)) as &dyn Fn(u64, f64) -> String,
        ),
        (
            "nanogpt.log",
            "Resuming training from out",
            &nanogpt as &dyn Fn(u64, f64) -> String,
        ),
    ] {
        let steady = |s: u64| line(s, 800.0 + (s % 7) as f64 * 3.0);
        let mut lines: Vec<String> = (1..=300).map(steady).collect();
        lines.push(banner.into());
        lines.push(line(301, 9_000.0));
        lines.extend((302..=600).map(steady));
        let p = write(tmp.path(), name, &lines);
        let (r, text) = observe(&p, &tmp.path().join(name).with_extension("out"));
        assert_eq!(r["ingest"]["records_emitted"], 600, "{name}");
        assert_eq!(
            r["verdict"]["state"], "steady",
            "{name}: {:#}",
            r["episodes"]
        );
        assert_eq!(r["verdict"]["planned_steps"]["resume"], 1, "{name}: {text}");
    }
}

/// nanoGPT evaluates at the top of an iteration and prints `step N: … val loss …` before that
/// iteration's own line, whose time includes the evaluation: the first evaluation is set aside too,
/// not only those after a period was found.
#[test]
fn the_first_evaluation_a_trainer_prints_is_set_aside() {
    let tmp = tempfile::tempdir().unwrap();
    let mut lines = Vec::new();
    for step in 1..=1000u64 {
        let eval = step % 250 == 0;
        if eval {
            lines.push(format!("step {step}: train loss 2.9, val loss 3.1"));
        }
        let ms = if eval {
            7_000.0
        } else {
            1000.0 + (step % 7) as f64 * 3.0
        };
        lines.push(format!("iter {step}: loss 2.9, time {ms:.2}ms, mfu 35.12%"));
    }
    let p = write(tmp.path(), "eval.log", &lines);
    let (r, text) = observe(&p, &tmp.path().join("out"));
    assert_eq!(r["format_detected"]["name"], "nanogpt");
    assert_eq!(r["verdict"]["state"], "steady", "{:#}", r["episodes"]);
    assert_eq!(r["verdict"]["planned_steps"]["evaluation"], 4, "{text}");
}

/// `closed-loop watch` sizes its windows from the first records as `closed-loop run` does: over the
/// real run of two-minute iterations both use 4-step windows and write the same decision trace
/// (before, the watch kept 50-step windows and judged one window of 62 iterations).
#[test]
fn a_watch_windows_a_slow_run_like_closed_loop_run() {
    let tmp = tempfile::tempdir().unwrap();
    let p =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/real/bigscience_n16_ds_off.jsonl");
    let run_out = tmp.path().join("run");
    run_ok(&p, &run_out, &[]);
    let watch_out = tmp.path().join("watch");
    let o = bin()
        .args(["closed-loop", "watch", "--path"])
        .arg(&p)
        .arg("--out")
        .arg(&watch_out)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let run_trace = trace_lines(&run_out);
    let watch_trace = trace_lines(&watch_out);
    assert_eq!(run_trace.len(), 16, "62 iterations in 4-step windows");
    assert_eq!(run_trace, watch_trace);
    assert_eq!(
        run_trace[1]["window"]["last_step"].as_u64().unwrap()
            - run_trace[1]["window"]["first_step"].as_u64().unwrap(),
        3
    );
}
