//! Reports for people: the self-contained HTML page of `kubectl modekeeper report` (an SVG timeline,
//! the verify/apply outcome, the decision table) and the same story as text for terminals and
//! `summary.md` (a sparkline of step time with episodes or chords marked under it).
//!
//! Pure rendering: [`model`] reads artifacts from readers and strings the caller opened, [`html`] and
//! [`svg`] turn the model into markup, [`text`] into lines. Nothing here opens files, talks to a
//! cluster or decides anything; every string from an artifact is untrusted and escaped on output.
//! Downsampling ([`downsample`]) is for drawing only.

pub mod downsample;
pub mod html;
pub mod model;
pub mod svg;
pub mod text;

#[cfg(test)]
mod effect_tests;

pub use html::{PageOptions, page};
pub use model::ReportModel;
pub use text::{
    MarkRuns, StepTimeline, TimelineMark, sparkline, timeline_lines, timeline_markdown,
};

use model::{BandKind, Gate};

/// Terminal width of the sparkline in summaries.
pub const SPARKLINE_WIDTH: usize = 60;

/// The marks for a timeline: chords when the model has a decision trace, else symptoms.
pub fn marks(m: &ReportModel) -> Vec<TimelineMark> {
    let kind = if m.bands.iter().any(|b| b.kind == BandKind::Chord) {
        BandKind::Chord
    } else {
        BandKind::Symptom
    };
    m.bands
        .iter()
        .filter(|b| b.kind == kind)
        .map(|b| TimelineMark {
            first_step: b.first_step,
            last_step: b.last_step,
            letter: text::mark_letter(&b.label),
            label: b.label.replace('_', " "),
        })
        .collect()
}

/// The step-time timeline of a model (p50 per window).
pub fn step_timeline(m: &ReportModel, width: usize) -> StepTimeline {
    let mut t = StepTimeline::new(width);
    for w in &m.windows {
        t.push(w.first_step, w.last_step, w.step_p50.unwrap_or(f64::NAN));
    }
    t
}

fn gate_text(g: &Gate) -> String {
    match g {
        Gate::NotRun => "not run".into(),
        Gate::Ok { detail } => format!("ok ({detail})"),
        Gate::Blocked { reason, detail } if detail.is_empty() => format!("blocked: {reason}"),
        Gate::Blocked { reason, detail } => format!("blocked: {reason} ({detail})"),
        Gate::Unreadable { error } => format!("unreadable: {error}"),
    }
}

/// The story in a few terminal lines (what `report` prints next to writing the page).
pub fn story_lines(m: &ReportModel) -> Vec<String> {
    let mut out = Vec::new();
    if let Some(v) = &m.verdict {
        out.push(format!("  verdict   {v}"));
    }
    let t = step_timeline(m, SPARKLINE_WIDTH);
    out.extend(timeline_lines(&t, &marks(m), "  ", "step time p50"));
    if m.decision_windows > 0 {
        let proposals: usize = m.decisions.iter().map(|d| d.proposals.len()).sum();
        let blocked: usize = m.decisions.iter().map(|d| d.blocked.len()).sum();
        let applied = model::applied_count(m);
        out.push(format!(
            "  decisions {} windows · {proposals} proposed · {blocked} blocked · {applied} applied",
            crate::human::thousands(m.decision_windows)
        ));
    }
    out.push(format!(
        "  outcome   verify {} · apply {}",
        gate_text(&m.outcome.verify),
        gate_text(&m.outcome.apply)
    ));
    out
}

/// Marks for observe's episodes (low-confidence blips left out), lettered like the symptom bands.
pub fn episode_marks(episodes: &[crate::signals::Episode]) -> Vec<TimelineMark> {
    episodes
        .iter()
        .filter(|e| e.confidence != "low")
        .map(|e| {
            let slug = serde_json::to_value(e.symptom)
                .ok()
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_default();
            TimelineMark {
                first_step: e.first_step,
                last_step: e.last_step,
                letter: text::mark_letter(&slug),
                label: e.symptom.describe().to_string(),
            }
        })
        .collect()
}
