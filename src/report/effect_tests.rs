//! The effect verdicts in the HTML report: read from the decision trace and the closed-loop report
//! (the report's entry wins for the same change), drawn as a marker per change and listed.

use super::model::{read_closed_loop_report, read_decision_trace};
use super::{PageOptions, ReportModel, page};

const LINE: &str = r#"{"schema_version":"decision_trace_event.v2","window":{"first_step":501,"last_step":550,"start_ms":1000,"end_ms":2000,"samples":50},"features":{"step_time_p50_ms":30.0},"chord":"NORMAL-HOLD","active_chords":[],"proposals":[],"blocked":[],"policy":{"name":"safe-chords","version":"1.0.0","digest":"sha256:00"},"passport":{"name":"safe","version":"1.0.0"},"effects":[{"change_step":100,"knobs":[{"knob":"concurrency","from":8,"to":7}],"verdict":"hurt","reason":"wall time per step +20.0 % [+15.0, +25.0]"},{"change_step":300,"knobs":[],"verdict":"<script>","reason":"<b>x</b>"}]}
"#;

#[test]
fn verdicts_are_read_merged_and_drawn() {
    let mut m = ReportModel::default();
    read_decision_trace(&mut m, LINE.as_bytes(), true).unwrap();
    assert_eq!(m.effects.len(), 2);
    assert_eq!(m.effects[0].verdict, "hurt");
    assert_eq!(m.effects[0].knobs, "concurrency 8 → 7");
    assert_eq!(
        m.effects[1].verdict, "?",
        "an unknown verdict is not echoed"
    );
    // The closed-loop report has the final word on a change, and the change judged at the end.
    read_closed_loop_report(
        &mut m,
        r#"{"effects":[{"change_step":300,"knobs":[],"verdict":"neutral","reason":"<b>y</b>"},{"change_step":200,"knobs":[],"verdict":"helped","reason":"faster"}]}"#,
    );
    let got: Vec<(u64, &str)> = m
        .effects
        .iter()
        .map(|e| (e.change_step, e.verdict))
        .collect();
    assert_eq!(got, [(100, "hurt"), (200, "helped"), (300, "neutral")]);

    let html = page(&m, &PageOptions::default());
    assert!(
        html.contains(r#"class="marker effect hurt" data-step="100""#),
        "{html}"
    );
    assert!(html.contains(r#"class="marker effect helped" data-step="200""#));
    assert!(html.contains(r#"class="marker effect other" data-step="300""#));
    assert!(html.contains("<h2>Effect of the changes</h2>"));
    assert!(html.contains(r#"<tr data-verdict="hurt">"#));
    assert!(!html.contains("<b>y</b>") && html.contains("&lt;b&gt;y"));
    assert!(!html.contains("<script>"));
}

#[test]
fn no_effects_no_section() {
    let mut m = ReportModel::default();
    read_decision_trace(
        &mut m,
        LINE.replace(r#""effects":[{"#, r#""x":[{"#).as_bytes(),
        true,
    )
    .unwrap();
    assert!(m.effects.is_empty());
    assert!(!page(&m, &PageOptions::default()).contains("Effect of the changes"));
}
