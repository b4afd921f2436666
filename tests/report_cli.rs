//! `report` end to end through the built binary: pages from observe output and from a closed-loop
//! directory, hostile artifact strings, a week-sized run, missing and broken inputs; and the text
//! story `observe` prints and writes to summary.md.

mod report_support;

use std::fs;
use std::io::Write;
use std::time::Instant;

use report_support::{bin, closed_loop_fixture, data_points, observe, repo, report};

/// Checks every page must pass: self-contained, no script, no fetch, both colour schemes.
fn assert_self_contained(html: &str) {
    assert!(html.starts_with("<!doctype html>"));
    assert!(html.contains("Content-Security-Policy\" content=\"default-src 'none'"));
    assert!(!html.to_ascii_lowercase().contains("<script"), "no script");
    for attr in ["src=\"http", "href=\"http", "url(http", "@import"] {
        assert!(!html.contains(attr), "page fetches something: {attr}");
    }
    assert!(html.contains("@media (prefers-color-scheme:dark)"));
    assert!(html.contains("<svg id=\"timeline\""));
}

#[test]
fn report_of_observe_output_draws_series_bands_and_episodes() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("observe");
    observe(&repo("tests/data/traces/combo.jsonl.gz"), &out);
    let (stdout, html) = report(&out, &dir.path().join("r/report.html"), &[]);
    assert_self_contained(&html);
    for s in [
        "step_time_p50",
        "step_time_p95",
        "loss",
        "data_wait_share",
        "gpu_util",
    ] {
        assert!(html.contains(&format!("data-series=\"{s}\"")), "series {s}");
    }
    // The combo trace has an input straggler and a burst: observe's episodes become bands.
    let observe_report: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(out.join("observe_latest.json")).unwrap())
            .unwrap();
    let symptoms: Vec<&str> = observe_report["episodes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["confidence"] != "low")
        .map(|e| e["symptom"].as_str().unwrap())
        .collect();
    assert!(symptoms.contains(&"input_straggler"), "{symptoms:?}");
    for s in &symptoms {
        assert!(
            html.contains(&format!("data-kind=\"symptom\" data-label=\"{s}\"")),
            "band {s}"
        );
    }
    assert!(html.contains("<table id=\"episodes\""));
    assert!(html.contains("data-gate=\"verify\"") && html.contains("not run"));
    assert!(data_points(&html).iter().all(|&n| n > 10 && n <= 1500));
    assert!(stdout.contains("timeline  "), "{stdout}");
    assert!(stdout.contains("wrote"), "{stdout}");
}

#[test]
fn closed_loop_directory_shows_chords_decisions_markers_and_outcome() {
    let dir = tempfile::tempdir().unwrap();
    let (stdout, html) = report(&closed_loop_fixture(), &dir.path().join("report.html"), &[]);
    assert_self_contained(&html);
    // Series come from the trace's features when observe's windows are absent.
    assert!(html.contains("data-series=\"step_time_p50\""));
    for chord in ["INPUT-STRAGGLER", "BURST-ABSORB", "RECOVER-RELOCK"] {
        assert!(
            html.contains(&format!("data-kind=\"chord\" data-label=\"{chord}\"")),
            "{chord}"
        );
    }
    assert!(
        !html.contains("data-label=\"NORMAL-HOLD\""),
        "holding is not a band"
    );
    for m in ["marker proposal", "marker blocked", "marker applied"] {
        assert!(html.contains(&format!("class=\"{m}\"")), "{m}");
    }
    // Windows 21-23 say the same thing: one row ×3.
    assert!(
        html.contains("21–23 <span class=\"muted\">×3</span>"),
        "collapsed run"
    );
    assert!(html.contains("<code>dataloader_num_workers</code> 4 → 5"));
    assert!(html.contains("<code>concurrency</code>: propose_only"));
    assert!(html.contains("safe-chords@1.0.0") && html.contains("io@1.0.0"));
    assert!(html.contains(r#"data-gate="verify"><h3>Verify</h3><div class="v ok""#));
    assert!(html.contains("blocked: kill_switch_active"));
    // The blocked apply sits on the timeline where it happened (its time falls inside the telemetry).
    assert!(html.contains("k8s apply blocked: kill_switch_active kill switch active</title>"));
    assert!(
        html.contains("2 chords acted"),
        "verdict from closed_loop_latest.json"
    );
    assert!(
        stdout.contains(
            "outcome   verify ok (1 plan item verified) · apply blocked: kill_switch_active"
        ),
        "{stdout}"
    );
    assert!(
        stdout.contains("decisions 48 windows · 5 proposed · 4 blocked · 1 applied"),
        "{stdout}"
    );
}

#[test]
fn hostile_artifact_strings_are_escaped() {
    let dir = tempfile::tempdir().unwrap();
    let evil = r#"<script>alert(1)</script>"><img src=x onerror=alert(2)></svg></title>"#;
    let e = serde_json::to_string(evil).unwrap();
    let mut f = fs::File::create(dir.path().join("decision_trace_latest.jsonl")).unwrap();
    for i in 0..5u64 {
        writeln!(
            f,
            r#"{{"window":{{"index":{i},"first_step":{},"last_step":{}}},"features":{{"step_time_p50_ms":10}},"chord":{e},"active_chords":[{e}],"proposals":[{{"knob":{e},"from":{e},"to":"1\u0000\u001b[31m","reason":{e}}}],"blocked":[{{"knob":{e},"reason":{e}}}],"policy":{{"name":{e},"version":{e}}},"passport":{{"name":{e}}}}}"#,
            i * 10,
            i * 10 + 9
        )
        .unwrap();
    }
    fs::write(
        dir.path().join("k8s_verify_latest.json"),
        format!(r#"{{"ok":false,"verify_blocker":{{"kind":{e},"detail":{e}}}}}"#),
    )
    .unwrap();
    fs::write(
        dir.path().join("observe_latest.json"),
        format!(r#"{{"source":{{"path":{e}}},"verdict":{{"text":{e}}}}}"#),
    )
    .unwrap();
    let (_, html) = report(dir.path(), &dir.path().join("r.html"), &["--title", evil]);
    assert_self_contained(&html);
    assert!(
        !html.contains("<img"),
        "markup from artifacts must not reach the page"
    );
    assert!(
        !html.contains("</title>\""),
        "attributes are not broken out of"
    );
    assert!(html.matches("</svg>").count() == 1, "one svg, closed once");
    assert!(!html.contains('\u{0}') && !html.contains('\u{1b}'));
    assert!(html.contains("&lt;script&gt;alert(1)&lt;/script&gt;&quot;&gt;&lt;img"));
}

/// A week of 1 s steps at 10 steps per window: 60,480 windows, a proposal every 20th window.
#[test]
fn a_week_of_windows_renders_small_and_fast() {
    let dir = tempfile::tempdir().unwrap();
    let n = 60_480u64;
    let mut w = std::io::BufWriter::new(
        fs::File::create(dir.path().join("observe_windows.jsonl")).unwrap(),
    );
    let mut t = std::io::BufWriter::new(
        fs::File::create(dir.path().join("decision_trace_latest.jsonl")).unwrap(),
    );
    for i in 0..n {
        let p50 = if i == 40_000 {
            25_000.0
        } else {
            1000.0 + (i % 97) as f64
        };
        let win = format!(
            r#"{{"index":{i},"first_step":{},"last_step":{},"start_ms":{},"end_ms":{},"samples":10}}"#,
            i * 10,
            i * 10 + 9,
            1_767_225_600_000 + i * 10_000,
            1_767_225_600_000 + i * 10_000 + 9_000
        );
        writeln!(w, r#"{{"window":{win},"features":{{"step_time_p50_ms":{p50},"step_time_p95_ms":{},"loss_mean":2.0,"gpu_util_mean":90}},"symptoms":[]}}"#, p50 * 1.2).unwrap();
        let (proposals, chord) = if i % 20 == 0 {
            (
                format!(
                    r#"[{{"knob":"concurrency","from":{},"to":{},"reason":"burst"}}]"#,
                    i % 7,
                    i % 7 + 1
                ),
                "BURST-ABSORB",
            )
        } else {
            ("[]".to_string(), "NORMAL-HOLD")
        };
        writeln!(t, r#"{{"window":{win},"chord":"{chord}","active_chords":[],"proposals":{proposals},"blocked":[]}}"#).unwrap();
    }
    drop((w, t));
    let started = Instant::now();
    let (_, html) = report(dir.path(), &dir.path().join("week.html"), &[]);
    let took = started.elapsed();
    assert_self_contained(&html);
    assert!(html.len() < 4 * 1024 * 1024, "page is {} bytes", html.len());
    let pts = data_points(&html);
    assert!(!pts.is_empty() && pts.iter().all(|&p| p <= 1500), "{pts:?}");
    // The near-hang window survives downsampling and is called out, not flattening the axis.
    assert!(
        html.contains("off scale: peak 30k"),
        "p95 of the stalled window"
    );
    assert_eq!(
        html.matches("<path class=\"clip\"").count(),
        1,
        "one tick on the top edge where the stalled window runs off the scale"
    );
    // 3,024 decisions, each its own row; the first 100 show, the rest fold into pages.
    assert!(html.contains("<table id=\"decisions\" data-rows=\"3024\">"));
    assert!(html.contains("<summary>rows 101–600 of 3,024</summary>"));
    assert!(took.as_secs() < 60, "report took {took:?}");
    // Drawing downsamples; the table does not: every proposal is listed.
    assert_eq!(html.matches("<code>concurrency</code>").count(), 3024);
    let capped = report(
        dir.path(),
        &dir.path().join("capped.html"),
        &["--max-rows", "1000"],
    )
    .1;
    assert!(capped.contains("2,024 more rows not rendered"), "row cap");
}

#[test]
fn missing_inputs_fail_with_one_line_and_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    for (input, needle) in [
        (
            dir.path().to_path_buf(),
            "holds neither observe_windows.jsonl nor decision_trace_latest.jsonl",
        ),
        (dir.path().join("nope"), "no such directory"),
    ] {
        let o = bin()
            .args(["report", "--in"])
            .arg(&input)
            .arg("--out")
            .arg(dir.path().join("x.html"))
            .output()
            .unwrap();
        assert_eq!(o.status.code(), Some(2));
        let err = String::from_utf8(o.stderr).unwrap();
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(err.contains(needle), "{err}");
        assert!(!dir.path().join("x.html").exists());
    }
    fs::write(
        dir.path().join("observe_windows.jsonl"),
        "garbage\n{\"no\":\"window\"}\n",
    )
    .unwrap();
    let o = bin()
        .args(["report", "--in"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("no usable window"));
}

#[test]
fn bad_lines_and_unreadable_reports_are_noted_not_fatal() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("o");
    observe(&repo("tests/data/traces/straggler.jsonl.gz"), &out);
    let mut f = fs::OpenOptions::new()
        .append(true)
        .open(out.join("observe_windows.jsonl"))
        .unwrap();
    writeln!(f, "{{truncated").unwrap();
    fs::write(out.join("k8s_verify_latest.json"), "{ not json").unwrap();
    fs::write(
        out.join("k8s_apply_latest.json"),
        r#"{"ok": true, "actions": [{"ok": true}]}"#,
    )
    .unwrap();
    let (stdout, html) = report(&out, &dir.path().join("r.html"), &["-o", "json"]);
    let v: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    let notes: Vec<&str> = v["notes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n.as_str().unwrap())
        .collect();
    assert!(
        notes.iter().any(|n| n.contains("1 line(s) were not JSON")),
        "{notes:?}"
    );
    assert!(
        notes
            .iter()
            .any(|n| n.starts_with("k8s_verify_latest.json: not valid JSON")),
        "{notes:?}"
    );
    assert!(html.contains("<section class=\"notes\">"));
    assert!(html.contains(
        r#"data-gate="verify"><h3>Verify</h3><div class="v bad" data-state="bad">unreadable"#
    ));
    assert!(html.contains("1 of 1 plan item(s) applied"));
    // An apply without a time goes to the end of the timeline, and says so.
    assert!(html.contains("class=\"marker apply-run\""));
    assert!(html.contains("k8s apply: 1 of 1 plan item(s) applied (time unknown)"));
}

#[test]
fn observe_prints_a_sparkline_and_summary_md_tells_the_same_story() {
    let dir = tempfile::tempdir().unwrap();
    let stdout = observe(&repo("tests/data/traces/combo.jsonl.gz"), dir.path());
    let line = stdout
        .lines()
        .find(|l| l.starts_with("  timeline  "))
        .expect(&stdout);
    let spark: String = line["  timeline  ".len()..]
        .chars()
        .take_while(|c| !c.is_whitespace())
        .collect();
    assert!(spark.chars().all(|c| "▁▂▃▄▅▆▇█".contains(c)), "{spark}");
    assert!(spark.chars().count() >= 8, "{spark}");
    assert!(
        spark.contains('█'),
        "the slowest column reaches the top: {spark}"
    );
    let marks = stdout
        .lines()
        .skip_while(|l| !l.starts_with("  timeline  "))
        .nth(1)
        .unwrap();
    assert!(
        marks.contains('s') && marks.contains("input straggler"),
        "{marks}"
    );
    let md = fs::read_to_string(dir.path().join("summary.md")).unwrap();
    assert!(md.contains("## Timeline\n\n```text\n"), "{md}");
    assert!(md.contains(&spark), "summary.md shows the same sparkline");
}
