//! The trainer-side Python helpers' output (integrations/python) read by `observe`: the committed
//! sample printed by the plain-loop helper (`integrations/python/tests/golden_run.py`; the Python
//! tests check that it still prints exactly this file, and read live runs of all three helpers).

mod closed_loop_support;

use std::fs;
use std::path::Path;

use serde_json::Value;

const SAMPLE: &str = "tests/data/python-telemetry/plain_loop.log";

fn observe(path: &Path, out: &Path) -> Value {
    closed_loop_support::observe_ok(path, out).0
}

#[test]
fn plain_loop_sample_is_read_whole() {
    let sample = Path::new(env!("CARGO_MANIFEST_DIR")).join(SAMPLE);
    let text = fs::read_to_string(&sample).unwrap();
    let records = text.lines().filter(|l| l.starts_with('{')).count() as u64;
    assert_eq!(records, 300);
    let tmp = tempfile::tempdir().unwrap();
    let report = observe(&sample, tmp.path());
    let ingest = &report["ingest"];
    assert_eq!(ingest["records_emitted"], records, "{ingest}");
    assert_eq!(ingest["skipped_total"], 0, "{ingest}");
    assert_eq!(ingest["log_lines"], 4, "{ingest}");
    assert_eq!(ingest["duplicates"], 0, "{ingest}");
    assert_eq!(ingest["reordered"], 0, "{ingest}");
}

#[test]
fn non_finite_loss_is_printed_as_a_string_the_reader_classifies() {
    // The helpers print a NaN loss as the JSON string "NaN" (strict JSON). Today's reader counts the
    // record as `non_finite`; the other records are untouched.
    let tmp = tempfile::tempdir().unwrap();
    let sample = fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(SAMPLE)).unwrap();
    let mut lines: Vec<String> = sample.lines().map(str::to_owned).collect();
    let i = lines
        .iter()
        .position(|l| l.contains(r#""step":150,"#))
        .unwrap();
    let v: Value = serde_json::from_str(&lines[i]).unwrap();
    let mut v = v.as_object().unwrap().clone();
    v.insert("loss".into(), Value::from("NaN"));
    lines[i] = serde_json::to_string(&v).unwrap();
    let path = tmp.path().join("nan.log");
    fs::write(&path, lines.join("\n") + "\n").unwrap();
    let report = observe(&path, &tmp.path().join("out"));
    let ingest = &report["ingest"];
    let emitted = ingest["records_emitted"].as_u64().unwrap();
    let non_finite = ingest["skipped_by_reason"]["non_finite"]
        .as_u64()
        .unwrap_or(0);
    // Either kept (a loss divergence is a signal) or counted as non-finite; never another reason.
    assert_eq!(emitted + non_finite, 300, "{ingest}");
    assert_eq!(ingest["skipped_total"], non_finite, "{ingest}");
}
