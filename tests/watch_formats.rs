//! `closed-loop watch` reads trainer text formats like `closed-loop run` does: a Megatron log
//! stopped and resumed between rounds (the pending iteration and the detection survive the
//! checkpoint), and the same log followed while it is being written.

mod closed_loop_support;
mod watch_support;

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use closed_loop_support::*;
use watch_support::*;

fn megatron() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/formats/megatron_lm.log")
}

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
fn a_megatron_log_watched_in_rounds_reads_like_one_run() {
    let tmp = tempfile::tempdir().unwrap();
    let (run_out, watch_out) = (tmp.path().join("run"), tmp.path().join("watch"));
    let log = tmp.path().join("train.log");
    fs::copy(megatron(), &log).unwrap();
    run_ok(&log, &run_out, &[]);
    let (rounds, _) = watch_until_source_ended(
        || watch_cmd(&log, &watch_out, &["--max-iterations", "1", "-o", "json"]),
        20,
        |_| {},
    );
    assert!(rounds > 2, "{rounds}");
    let run = json(&run_out.join("closed_loop_latest.json"));
    let w = json(&watch_out.join("watch_latest.json"));
    assert_eq!(run["ingest"]["records_emitted"], 300);
    assert_eq!(w["observe_ingest"], run["ingest"]);
    assert!(
        fs::read(run_out.join("decision_trace_latest.jsonl")).unwrap()
            == fs::read(watch_out.join("decision_trace_latest.jsonl")).unwrap()
    );
}

#[test]
fn a_megatron_log_being_written_is_followed() {
    let tmp = tempfile::tempdir().unwrap();
    let log = tmp.path().join("train.log");
    let out = tmp.path().join("watch");
    let text = fs::read(megatron()).unwrap();
    let half = text.len() / 2
        + text[text.len() / 2..]
            .iter()
            .position(|c| *c == b'\n')
            .unwrap()
        + 1;
    fs::write(&log, &text[..half]).unwrap();
    let watch = watch_cmd(&log, &out, &["--follow"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let limit = Duration::from_secs(120);
    wait_for("the first windows", limit, || windows_total(&out) >= 2);
    fs::OpenOptions::new()
        .append(true)
        .open(&log)
        .unwrap()
        .write_all(&text[half..])
        .unwrap();
    // 300 steps make six windows; the last is closed only at the end of the source.
    wait_for("the appended windows", limit, || windows_total(&out) >= 5);
    stop_with_sigterm(watch);
    let w = json(&out.join("watch_latest.json"));
    assert!(
        w["observe_ingest"]["records_emitted"].as_u64().unwrap() >= 250,
        "{}",
        w["observe_ingest"]
    );
    assert_eq!(w["observe_ingest"]["skipped_total"], 0);
}
