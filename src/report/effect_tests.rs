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

#[test]
fn gpu_hours_table_from_the_closed_loop_report() {
    use crate::closed_loop::effect::{EffectConfig, EffectKnob, Evidence, WindowKpi, decide};
    let kpi = |i: u64, ms: f64| WindowKpi {
        index: i,
        first_step: i * 50,
        last_step: i * 50 + 49,
        samples: 50,
        step_p50_ms: ms,
        step_p95_ms: ms,
        wall_ms_per_step: Some(ms * (1.0 + (i % 3) as f64 / 1000.0)),
        data_wait_share: None,
        loss_mean: None,
    };
    let e = decide(
        &EffectConfig::default(),
        Evidence {
            change_window: 9,
            change_step: 499,
            knobs: vec![EffectKnob {
                knob: "concurrency".into(),
                from: 8.0,
                to: 7.0,
            }],
            before: (0..10).map(|i| kpi(i, 100.0)).collect(),
            after: (11..21).map(|i| kpi(i, 80.0)).collect(),
            interrupted: false,
        },
    );
    let report = serde_json::json!({"run": {"last_step": 36_499}, "effects": [e]});
    let mut m = ReportModel::default();
    read_closed_loop_report(&mut m, &report.to_string());
    let r = m.roi.as_ref().expect("roi from the report");
    // ~20 ms saved per step × 36 000 steps / 3.6e6 = ~0.2 GPU-hours.
    assert!((r.gpu_hours_saved_total - 0.2).abs() < 0.01, "{r:?}");
    let html = page(&m, &PageOptions::default());
    assert!(html.contains(r#"<table id="roi">"#), "{html}");
    assert!(html.contains(&format!("<th>{:+.3}</th>", r.gpu_hours_saved_total)));
}
