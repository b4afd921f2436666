//! `closed-loop watch` as a command: a watch stopped and restarted any number of times decides byte
//! for byte like one uninterrupted `closed-loop run` over the same telemetry; following a file that
//! is being appended (with a SIGKILL and a restart in the middle) loses and repeats nothing and keeps
//! memory flat; a foreign or damaged state file is refused, never silently ignored.
//!
//! The soak length is `MODEKEEPER_SOAK_HOURS` hours of telemetry at 10 steps/s (default 2 in the
//! test suite; `scripts/soak-watch.sh` runs 24 with a release build and prints the peak RSS figures).

mod closed_loop_support;
mod watch_support;

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use closed_loop_support::*;
use serde_json::Value;
use watch_support::*;

fn watch_cmd(path: &Path, out: &Path, extra: &[&str]) -> Command {
    let mut c = std_bin();
    c.args(["closed-loop", "watch", "--path"])
        .arg(path)
        .arg("--out")
        .arg(out)
        .args(extra);
    c
}

#[test]
fn a_watch_stopped_every_few_windows_decides_like_one_run() {
    let tmp = tempfile::tempdir().unwrap();
    let (run_out, watch_out) = (tmp.path().join("run"), tmp.path().join("watch"));
    // The combo trace has drift, bursts and stragglers: proposals, cooldowns and policy state.
    let t = trace("combo");
    run_ok(&t, &run_out, &[]);
    let (rounds, _) = watch_until_source_ended(
        || watch_cmd(&t, &watch_out, &["--max-iterations", "9", "-o", "json"]),
        50,
        |r| {
            assert_eq!(r["stop_reason"], "max_iterations");
            assert_eq!(r["iterations_done"], 9);
        },
    );
    assert!(rounds > 3, "the trace spans several rounds");
    let trace_run = fs::read(run_out.join("decision_trace_latest.jsonl")).unwrap();
    let trace_watch = fs::read(watch_out.join("decision_trace_latest.jsonl")).unwrap();
    assert!(trace_run == trace_watch, "decision traces differ");
    assert_eq!(
        fs::read(run_out.join("k8s_plan.json")).unwrap(),
        fs::read(watch_out.join("k8s_plan.json")).unwrap()
    );
    let run = json(&run_out.join("closed_loop_latest.json"));
    let w = json(&watch_out.join("watch_latest.json"));
    assert_eq!(w["proposed_total"], run["proposed_total"]);
    assert!(run["proposed_total"].as_u64().unwrap() > 0);
    // The effect verdicts survive the restarts: the watch judges what the run judged in-stream
    // (the run also judges the last change at the end of the telemetry; a watch waits for more).
    let (we, re) = (
        w["effects"].as_array().unwrap(),
        run["effects"].as_array().unwrap(),
    );
    assert!(
        !we.is_empty() && we.len() + 1 >= re.len(),
        "{} vs {}",
        we.len(),
        re.len()
    );
    assert_eq!(we[..], re[..we.len()]);
    assert_eq!(w["observe_ingest"], run["ingest"]);
    assert_eq!(w["restarts"], rounds - 1);
    // A finished watch started again does nothing and changes nothing.
    let o = watch_cmd(&t, &watch_out, &["-o", "json"]).output().unwrap();
    let r: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(r["iterations_done"], 0);
    assert!(trace_run == fs::read(watch_out.join("decision_trace_latest.jsonl")).unwrap());
}

/// A watch over the drift trace stopped after three iterations: its trace and its `--out`.
fn three_iterations_of_drift(dir: &Path) -> (PathBuf, PathBuf) {
    let out = dir.join("watch");
    let t = trace("drift");
    let o = watch_cmd(&t, &out, &["--max-iterations", "3"])
        .output()
        .unwrap();
    assert!(o.status.success());
    (t, out)
}

#[test]
fn a_state_from_another_configuration_or_damaged_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let (t, out) = three_iterations_of_drift(tmp.path());
    let o = watch_cmd(&t, &out, &["--window-steps", "40"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(
        err.contains("window_steps") && err.contains("--fresh"),
        "{err}"
    );
    // --fresh starts over.
    let o = watch_cmd(&t, &out, &["--window-steps", "40", "--fresh", "-o", "json"])
        .output()
        .unwrap();
    assert!(o.status.success());
    let r: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(r["restarts"], 0);
    fs::write(out.join("watch_state.json"), b"{\"schema_version\": 7").unwrap();
    let o = watch_cmd(&t, &out, &["--window-steps", "40"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("not a watch state"));
}

fn spawn_follow(path: &Path, out: &Path) -> Child {
    watch_cmd(path, out, &["--follow"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

#[test]
fn following_an_appended_file_through_a_kill_loses_and_repeats_nothing_with_flat_memory() {
    let tmp = tempfile::tempdir().unwrap();
    let data: PathBuf = tmp.path().join("train.log");
    let out = tmp.path().join("watch");
    let steps = soak_steps();
    let window = 50;
    fs::write(&data, b"").unwrap();
    let mut watch = spawn_follow(&data, &out);
    let writer = {
        let data = data.clone();
        std::thread::spawn(move || {
            let mut f = fs::OpenOptions::new().append(true).open(&data).unwrap();
            let mut buf = String::new();
            for step in 1..=soak_steps() {
                buf.push_str(&soak_line(step, soak_steps()));
                // Six minutes of training per append, as a trainer's buffered stdout would.
                if step % 3_600 == 0 {
                    f.write_all(buf.as_bytes()).unwrap();
                    buf.clear();
                    std::thread::sleep(Duration::from_millis(5));
                }
            }
            f.write_all(buf.as_bytes()).unwrap();
        })
    };
    let limit = Duration::from_secs(600);
    // Peak memory after an hour of data, then kill -9 mid-stream; the restarted watch carries on
    // from its last checkpoint and runs to the end.
    let hour = 36_000 / window;
    wait_for("an hour of data", limit, || windows_total(&out) >= hour);
    let rss_1h = peak_rss_kib(watch.id());
    watch.kill().unwrap();
    watch.wait().unwrap();
    let watch = spawn_follow(&data, &out);
    wait_for("the restarted watch", limit, || restarts(&out) == 1);
    writer.join().unwrap();
    // Every window but the last is closed by its successor's first record.
    let expected = steps / window;
    wait_for("the end of the data", limit, || {
        windows_total(&out) >= expected - 1
    });
    let rss_end = peak_rss_kib(watch.id());
    stop_with_sigterm(watch);
    let w = json(&out.join("watch_latest.json"));
    assert_eq!(w["stop_reason"], "signal");
    assert_eq!(w["restarts"], 1);
    // Read what is left without --follow: the source ends, the last window is closed.
    let o = watch_cmd(&data, &out, &["-o", "json"]).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));

    let run_out = tmp.path().join("run");
    run_ok(&data, &run_out, &[]);
    let trace_run = fs::read(run_out.join("decision_trace_latest.jsonl")).unwrap();
    let trace_watch = fs::read(out.join("decision_trace_latest.jsonl")).unwrap();
    assert_eq!(
        trace_run.iter().filter(|b| **b == b'\n').count() as u64,
        expected
    );
    assert!(
        trace_run == trace_watch,
        "decisions differ from the offline run"
    );
    let run = json(&run_out.join("closed_loop_latest.json"));
    let w = json(&out.join("watch_latest.json"));
    assert_eq!(w["observe_ingest"]["records_emitted"], steps);
    assert_eq!(w["observe_ingest"]["duplicates"], 0);
    assert_eq!(w["observe_ingest"], run["ingest"]);
    assert_eq!(w["proposed_total"], run["proposed_total"]);
    assert!(
        run["proposed_total"].as_u64().unwrap() > 0,
        "the input stall is acted on"
    );
    if let (Some(a), Some(b)) = (rss_1h, rss_end) {
        eprintln!(
            "soak: {} h of telemetry at 10 steps/s; peak RSS {a} KiB over the first hour of data, \
             {b} KiB over hours 1-{} (after a kill -9 and a resume)",
            soak_hours(),
            soak_hours()
        );
        assert!(
            b <= a + a / 4 + 4096,
            "memory grows: {a} KiB at 1 h, {b} KiB at the end"
        );
    }
}

/// Review of the loop-as-library change: a carried line that is not base64 was an internal error
/// (exit 1), and a state claiming a longer decision trace than the file holds padded the trace with
/// NUL bytes (or grew a sparse file of any size). Both are a damaged state: exit 2, one line, the
/// trace untouched.
#[test]
fn a_state_with_a_damaged_carried_line_or_a_trace_longer_than_on_disk_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let (t, out) = three_iterations_of_drift(tmp.path());
    let state_path = out.join("watch_state.json");
    let trace_path = out.join("decision_trace_latest.jsonl");
    let good = json(&state_path);
    let trace_before = fs::read(&trace_path).unwrap();
    assert_eq!(good["trace_bytes"], trace_before.len() as u64);
    let damaged = [
        (
            "carry_lines",
            serde_json::json!(["*not base64*"]),
            "carried line",
        ),
        (
            "trace_bytes",
            (trace_before.len() as u64 + 1_000_000_000).into(),
            "holds",
        ),
    ];
    for (field, value, says) in damaged {
        let mut state = good.clone();
        state[field] = value;
        fs::write(&state_path, serde_json::to_vec(&state).unwrap()).unwrap();
        let o = watch_cmd(&t, &out, &["--max-iterations", "3"])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{field}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "{err}");
        assert!(err.contains(says) && err.contains("--fresh"), "{err}");
        assert_eq!(fs::read(&trace_path).unwrap(), trace_before, "{field}");
    }
}

/// Issue 11: a state file's counters near u64::MAX wrapped (`iterations_done` went from u64::MAX to
/// 19; a debug build panicked). Every counter carried across restarts saturates instead.
#[test]
fn counters_resumed_at_their_maximum_saturate_instead_of_wrapping() {
    let tmp = tempfile::tempdir().unwrap();
    let (t, out) = three_iterations_of_drift(tmp.path());
    let state_path = out.join("watch_state.json");
    let mut state = json(&state_path);
    for counter in ["iterations_done", "restarts", "applied_total"] {
        state["totals"][counter] = u64::MAX.into();
    }
    state["loop"]["windows"] = u64::MAX.into();
    state["loop"]["proposed_total"] = u64::MAX.into();
    fs::write(&state_path, serde_json::to_vec(&state).unwrap()).unwrap();
    let o = watch_cmd(&t, &out, &["--max-iterations", "3", "-o", "json"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let r: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(r["iterations_total"], u64::MAX);
    assert_eq!(r["restarts"], u64::MAX);
    assert_eq!(json(&state_path)["totals"]["iterations_done"], u64::MAX);
}

/// A followed trainer that stops reporting steps is told as a possible hang while the silence lasts
/// (20× the usual time between records, at least 5 s), once, and again when steps come back — in
/// stderr, the plain lines and explain.jsonl; a finished file (no --follow) is never a hang.
#[test]
fn a_followed_trainer_that_goes_silent_is_told_as_a_possible_hang_while_it_lasts() {
    use std::io::Read;
    use std::sync::{Arc, Mutex};
    let tmp = tempfile::tempdir().unwrap();
    let data: PathBuf = tmp.path().join("train.log");
    let out = tmp.path().join("watch");
    let steps = 400;
    let text: String = (1..=steps).map(|s| soak_line(s, 100_000)).collect();
    fs::write(&data, &text).unwrap();
    let started = std::time::Instant::now();
    let mut watch = watch_cmd(&data, &out, &["--follow", "--window-steps", "50"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let grab = |mut r: Box<dyn Read + Send>| {
        let buf = Arc::new(Mutex::new(String::new()));
        let b = buf.clone();
        std::thread::spawn(move || {
            let mut chunk = [0u8; 4096];
            while let Ok(n) = r.read(&mut chunk) {
                if n == 0 {
                    break;
                }
                b.lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&chunk[..n]));
            }
        });
        buf
    };
    let err = grab(Box::new(watch.stderr.take().unwrap()));
    let stdout = grab(Box::new(watch.stdout.take().unwrap()));
    let limit = Duration::from_secs(120);
    wait_for("the possible-hang alert", limit, || {
        err.lock().unwrap().contains("POSSIBLE HANG")
    });
    // Not before the 5 s floor (100 ms between records: 20× is 2 s): the whole file was there at
    // the start, so the silence began after it was read.
    assert!(started.elapsed() >= Duration::from_secs(5));
    let told = err.lock().unwrap().clone();
    assert!(
        told.contains("no step reported for 5 s after step 400") && told.contains("every ~100 ms"),
        "{told}"
    );
    // Steps again: the end of the silence is told too.
    let more: String = (steps + 1..=steps + 60)
        .map(|s| soak_line(s, 100_000))
        .collect();
    fs::OpenOptions::new()
        .append(true)
        .open(&data)
        .unwrap()
        .write_all(more.as_bytes())
        .unwrap();
    wait_for("the end of the silence", limit, || {
        err.lock().unwrap().contains("steps reported again")
    });
    stop_with_sigterm(watch);
    let err = err.lock().unwrap().clone();
    assert_eq!(err.matches("POSSIBLE HANG").count(), 1, "{err}");
    assert!(
        stdout
            .lock()
            .unwrap()
            .contains("silence=started after_step=400")
    );
    let events = explain_events(&out);
    let at = |e: &str| {
        events
            .iter()
            .position(|x| x == e)
            .unwrap_or_else(|| panic!("{e}: {events:?}"))
    };
    assert!(at("watch_silence") < at("watch_silence_end"));

    // The same file read to its end without --follow: the source ends, nothing is a hang.
    let o = watch_cmd(&data, &tmp.path().join("once"), &[])
        .output()
        .unwrap();
    assert!(o.status.success());
    assert!(!String::from_utf8_lossy(&o.stderr).contains("POSSIBLE HANG"));
}
