//! One line of `decision_trace_latest.jsonl` (schema `decision_trace_event.v2`): what one window
//! looked like, which chord the policies recognised, what passed the envelope and what did not, and
//! who decided. Exactly the fields of DESIGN.md, in a fixed order, so the same run gives the same
//! bytes.

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::Value;

use crate::passport::serialize_knob_value;
use crate::policy::PolicyRef;
use crate::signals::WindowFeatures;

pub const TRACE_SCHEMA: &str = "decision_trace_event.v2";
/// File name of the decision trace under `--out`.
pub const TRACE_FILE: &str = "decision_trace_latest.jsonl";

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TraceWindow {
    pub first_step: u64,
    pub last_step: u64,
    pub start_ms: Option<i64>,
    pub end_ms: Option<i64>,
    pub samples: u64,
}

/// A change that passed the envelope (`to` is the accepted, possibly shortened, value).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TraceProposal {
    pub knob: String,
    #[serde(serialize_with = "serialize_knob_value")]
    pub from: f64,
    #[serde(serialize_with = "serialize_knob_value")]
    pub to: f64,
    pub reason: String,
}

/// A proposal that did not pass: `reason` is a reason code (docs/closed-loop.md).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TraceBlocked {
    pub knob: String,
    pub reason: String,
}

/// The passport a decision was checked against.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct PassportRef {
    pub name: String,
    pub version: String,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TraceEvent {
    pub schema_version: &'static str,
    pub window: TraceWindow,
    /// The window's features (docs/signals.md) without the window range, keys sorted.
    pub features: BTreeMap<String, Value>,
    /// The primary chord.
    pub chord: String,
    /// Every chord that fired, in policy order.
    pub active_chords: Vec<String>,
    pub proposals: Vec<TraceProposal>,
    pub blocked: Vec<TraceBlocked>,
    /// The policy whose decision is primary (the base policy when every policy held).
    pub policy: PolicyRef,
    pub passport: PassportRef,
    /// Verdicts on earlier changes whose evidence this window completed (docs/closed-loop.md,
    /// effect check); new in v2.
    pub effects: Vec<super::effect::ChangeEffect>,
}

impl TraceEvent {
    /// The line as written: compact JSON and a newline.
    pub fn to_line(&self) -> String {
        let mut s = serde_json::to_string(self).expect("a trace event always serializes");
        s.push('\n');
        s
    }
}

/// The window range of a feature set, in trace form.
pub fn trace_window(f: &WindowFeatures) -> TraceWindow {
    let w = &f.window;
    TraceWindow {
        first_step: w.first_step,
        last_step: w.last_step,
        start_ms: w.start_ms,
        end_ms: w.end_ms,
        samples: w.samples,
    }
}

/// The features without their window, with sorted keys whatever serde_json's map order is.
pub fn trace_features(f: &WindowFeatures) -> BTreeMap<String, Value> {
    match serde_json::to_value(f) {
        Ok(Value::Object(m)) => m.into_iter().filter(|(k, _)| k != "window").collect(),
        _ => BTreeMap::new(),
    }
}
