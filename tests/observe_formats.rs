//! Integration tests: `observe` reads what trainers print, as they print it (issue 12): the real logs
//! in tests/data/real-logs (see SOURCES.md there) and samples of the other formats written from their
//! line shapes, with dirty variants (prefixes, ANSI, CRLF, interleaved text, gzip, stdin).

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use assert_cmd::Command;
use serde_json::Value;

fn bin() -> Command {
    let mut c = Command::cargo_bin("kubectl-modekeeper").unwrap();
    c.env_remove("_");
    c
}

fn data(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(rel)
}

/// Runs observe; the report on success, or the stderr line on failure.
fn observe(path: &Path, extra: &[&str]) -> Result<Value, String> {
    let out = tempfile::tempdir().unwrap();
    let o = bin()
        .args(["observe", "--source", "file", "--path"])
        .arg(path)
        .args(extra)
        .arg("--out")
        .arg(out.path())
        .output()
        .unwrap();
    if !o.status.success() {
        assert_eq!(
            o.status.code(),
            Some(2),
            "{}",
            String::from_utf8_lossy(&o.stderr)
        );
        return Err(String::from_utf8_lossy(&o.stderr).into_owned());
    }
    let r: Value =
        serde_json::from_slice(&fs::read(out.path().join("observe_latest.json")).unwrap()).unwrap();
    Ok(r)
}

fn detected(r: &Value) -> &str {
    r["format_detected"]["name"].as_str().unwrap_or("-")
}

fn records(r: &Value) -> u64 {
    r["ingest"]["records_emitted"].as_u64().unwrap()
}

#[test]
fn megatron_deepspeed_real_logs_are_read_with_their_timer_lines() {
    // (file, records, the line of the first iteration)
    for (name, n, first) in [
        (
            "real-logs/bigscience_meg_ds_3d_gpt2_perf_n16-ds-off.out",
            62,
            853,
        ),
        // A DeepSpeed `step=0, skipped=0` line at 670 (no measurement) does not decide the format.
        (
            "real-logs/bigscience_meg_ds_3d_gpt2_perf_n16-ds-on.out",
            49,
            901,
        ),
    ] {
        let r = observe(&data(name), &[]).unwrap();
        assert_eq!(detected(&r), "megatron", "{name}: {}", r["format_detected"]);
        assert_eq!(r["format_detected"]["first_line"], first, "{name}");
        assert_eq!(
            r["format_detected"]["other_formats"][0]["format"],
            if first == 901 {
                serde_json::json!("deepspeed")
            } else {
                serde_json::Value::Null
            }
        );
        assert_eq!(records(&r), n, "{name}");
        assert_eq!(r["ingest"]["skipped_total"], 0, "{name}: {}", r["ingest"]);
        let ev = r["format_detected"]["evidence"].as_str().unwrap();
        assert!(ev.contains("detected"), "{ev}");
        assert_eq!(r["format_detected"]["implausible_step_times"], 0);
        // ~127 s per iteration: steps of two minutes are read in ms, from the `(ms)` label.
        let p50 = r["baseline"]["step_time_p50_ms"].as_f64();
        assert!(
            p50.is_none_or(|x| (100_000.0..200_000.0).contains(&x)),
            "{p50:?}"
        );
    }
}

#[test]
fn megatron_golden_values_document() {
    let p = data("real-logs/megatron_mixtral_8x7b_alltoall_tp2pp4ep4_release_golden_h100.json");
    let r = observe(&p, &[]).unwrap();
    assert_eq!(detected(&r), "megatron-golden");
    // 4,801 steps sampled; past step 22,685 both series say "nan" (the run ended before end_step).
    assert_eq!(records(&r), 4538);
    assert_eq!(r["ingest"]["skipped_total"], 0);
    // Each fall of the per-process peak memory is a resumed run's first step (~88 s instead of 9 s).
    assert_eq!(r["format_detected"]["planned_events"], 17);
    assert!(
        r["format_detected"]["step_time_unit"]
            .as_str()
            .unwrap()
            .contains("seconds")
    );
    // iteration-time is in seconds: a ~9 s median, not 9 ms.
    let p50 = r["baseline"]["step_time_p50_ms"].as_f64().unwrap();
    assert!((5_000.0..20_000.0).contains(&p50), "{p50}");
    // A healthy run: one lone 27 s iteration (step 20,455) in a window of four sampled steps is a
    // blip, not a burst (the tail of four samples is its slowest one).
    assert_eq!(r["verdict"]["state"], "steady", "{:#}", r["verdict"]);
    assert_eq!(r["verdict"]["incidents"], 0);
    // Forcing another format on it reads nothing and says so.
    let e = observe(&p, &["--format", "nanogpt"]).unwrap_err();
    assert!(
        e.contains("no usable telemetry record") && e.contains("nanogpt (forced)"),
        "{e}"
    );
}

/// trainer_state.json and Lightning's metrics.csv carry no step time: their records are loss-only,
/// read whole and judged on the loss, and the verdict says the step time could not be judged.
#[test]
fn loss_only_documents_are_detected_and_read() {
    for (name, fmt, n) in [
        (
            "real-logs/hf_whisper_ja_trainer_state.json",
            "hf-trainer-state",
            200,
        ),
        (
            "real-logs/lightning_slm_training_v0_metrics.csv",
            "lightning-csv",
            2814,
        ),
    ] {
        let r = observe(&data(name), &[]).unwrap();
        assert_eq!(detected(&r), fmt, "{name}: {}", r["format_detected"]);
        assert_eq!(records(&r), n, "{name}: {}", r["ingest"]);
        assert_eq!(r["ingest"]["skipped_total"], 0, "{name}: {}", r["ingest"]);
        assert_eq!(
            r["verdict"]["not_judged"],
            serde_json::json!(["step_time"]),
            "{name}: {}",
            r["verdict"]
        );
    }
}

#[test]
fn text_trainer_samples_are_detected_and_read() {
    // (file, format, records, planned slow steps marked from evaluation/checkpoint lines)
    for (name, fmt, n, planned) in [
        ("formats/nanogpt.log", "nanogpt", 300, 3),
        // Step 11 (the timer restarts after warm-up) has no step time and is kept loss-only; step 1
        // is timed from the step 0 validation line's clock.
        ("formats/modded_nanogpt.txt", "modded-nanogpt", 300, 3),
        ("formats/llmc.log", "llmc", 300, 3),
        ("formats/deepspeed.log", "deepspeed", 300, 0),
        ("formats/hf_trainer.log", "hf-trainer", 30, 2),
        ("formats/megatron_lm.log", "megatron", 300, 2),
    ] {
        let r = observe(&data(name), &[]).unwrap();
        assert_eq!(detected(&r), fmt, "{name}: {}", r["format_detected"]);
        assert_eq!(records(&r), n, "{name}: {}", r["ingest"]);
        assert_eq!(r["format_detected"]["planned_events"], planned, "{name}");
        // The same file with the format forced reads the same.
        let f = observe(&data(name), &["--format", fmt]).unwrap();
        assert_eq!(records(&f), n, "{name} forced");
        assert_eq!(f["format_detected"]["forced"], true);
        assert_eq!(
            f["format_detected"]["planned_events"],
            r["format_detected"]["planned_events"]
        );
    }
}

#[test]
fn torchtitan_prints_no_step_time_and_is_read_loss_only() {
    let r = observe(&data("formats/torchtitan.log"), &[]).unwrap();
    assert_eq!(detected(&r), "torchtitan", "{}", r["format_detected"]);
    assert_eq!(records(&r), 300, "{}", r["ingest"]);
    assert_eq!(r["verdict"]["not_judged"], serde_json::json!(["step_time"]));
}

#[test]
fn gzip_and_stdin_are_detected_too() {
    let dir = tempfile::tempdir().unwrap();
    let src = fs::read(data("formats/megatron_lm.log")).unwrap();
    let gz = dir.path().join("run.gz");
    let mut enc =
        flate2::write::GzEncoder::new(fs::File::create(&gz).unwrap(), flate2::Compression::fast());
    enc.write_all(&src).unwrap();
    enc.finish().unwrap();
    let r = observe(&gz, &[]).unwrap();
    assert_eq!((detected(&r), records(&r)), ("megatron", 300));

    let out = tempfile::tempdir().unwrap();
    bin()
        .args(["observe", "--source", "file", "--path", "-", "--out"])
        .arg(out.path())
        .write_stdin(fs::read(data("formats/nanogpt.log")).unwrap())
        .assert()
        .success()
        .stdout(predicates::str::contains(
            "format    nanogpt (detected from line",
        ));
}

#[test]
fn our_json_mixed_with_trainer_text_stays_ours() {
    let dir = tempfile::tempdir().unwrap();
    let mut text = String::from("iter 0: loss 2.0, time 10.00ms, mfu 1%\n");
    for s in 1..=120u64 {
        text += &format!("{{\"step\":{s},\"step_time_ms\":30.0,\"loss\":2.0}}\n");
        text += &format!("iter {s}: loss 2.0, time 999.00ms, mfu 1%\n");
    }
    let p = dir.path().join("mixed.log");
    fs::write(&p, text).unwrap();
    let r = observe(&p, &["--warmup-steps", "0"]).unwrap();
    assert_eq!(detected(&r), "log", "{}", r["format_detected"]);
    assert!(r["format_detected"]["switched"].is_object());
    assert_eq!(r["format_detected"]["ignored_lines"], 120);
    assert_eq!(r["baseline"]["step_time_p50_ms"].as_f64(), Some(30.0));
}

#[test]
fn implausible_step_times_are_flagged_in_the_summary() {
    let dir = tempfile::tempdir().unwrap();
    let mut text = String::new();
    for s in 1..=60u64 {
        text += &format!("{{\"step\":{s},\"step_time_ms\":0.05}}\n");
    }
    let p = dir.path().join("tiny.jsonl");
    fs::write(&p, text).unwrap();
    let r = observe(&p, &[]).unwrap();
    assert_eq!(r["format_detected"]["implausible_step_times"], 60);
    let out = tempfile::tempdir().unwrap();
    bin()
        .args(["observe", "--source", "file", "--path"])
        .arg(&p)
        .arg("--out")
        .arg(out.path())
        .assert()
        .success()
        .stdout(predicates::str::contains("60 implausible step times"));
}

/// Issue 12: an unsuffixed `step_time` in seconds was silently read as milliseconds. It is still read
/// as ms (the documented alias), but never silently: the summary warns when the values look like
/// seconds, and `--step-time-unit s` reads them as seconds.
#[test]
fn unit_less_step_time_in_seconds_is_never_read_silently() {
    let dir = tempfile::tempdir().unwrap();
    let mut text = String::new();
    for s in 1..=400u64 {
        text += &format!(
            "{{\"step\":{s},\"step_time\":{}}}\n",
            0.25 + (s % 3) as f64 * 0.01
        );
    }
    let p = dir.path().join("secs.jsonl");
    fs::write(&p, text).unwrap();
    let r = observe(&p, &[]).unwrap();
    let f = &r["format_detected"];
    assert!(
        f["step_time_unit"].as_str().unwrap().contains("ms assumed"),
        "{f}"
    );
    assert!(
        f["unit_warning"].as_str().unwrap().contains("400 of 400"),
        "{f}"
    );
    let out = tempfile::tempdir().unwrap();
    bin()
        .args(["observe", "--source", "file", "--path"])
        .arg(&p)
        .arg("--out")
        .arg(out.path())
        .assert()
        .success()
        .stdout(predicates::str::contains(
            "WARNING 400 of 400 unit-less `step_time` values",
        ));

    let r = observe(&p, &["--step-time-unit", "s"]).unwrap();
    assert!(r["format_detected"]["unit_warning"].is_null());
    let p50 = r["baseline"]["step_time_p50_ms"].as_f64().unwrap();
    assert!((250.0..=270.0).contains(&p50), "{p50}");
    // The same values under `step_time_ms` say their unit: no warning, no conversion.
    let ms = dir.path().join("ms.jsonl");
    fs::write(
        &ms,
        fs::read_to_string(&p)
            .unwrap()
            .replace("step_time", "step_time_ms"),
    )
    .unwrap();
    let r = observe(&ms, &["--step-time-unit", "s"]).unwrap();
    assert!(r["format_detected"]["unit_warning"].is_null());
    assert!(r["baseline"]["step_time_p50_ms"].as_f64().unwrap() < 1.0);
}
