//! What a report shows, read tolerantly from the artifacts other commands wrote: every file is
//! optional except at least one of the per-window streams, unknown fields are ignored, a bad line is
//! counted and skipped, a missing field is "not known". Nothing here touches the file system: the
//! caller hands in readers and strings, so the same code reads a week of telemetry or a test fixture.

use std::io::BufRead;

use serde_json::Value;

/// One analysis window with the values the timeline draws.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct WindowRow {
    pub index: u64,
    pub first_step: u64,
    pub last_step: u64,
    pub start_ms: Option<i64>,
    pub end_ms: Option<i64>,
    pub step_p50: Option<f64>,
    pub step_p95: Option<f64>,
    /// The slowest step of the window (a stall shows here, not in the quantiles).
    pub step_max: Option<f64>,
    pub loss: Option<f64>,
    /// Share of step time spent waiting for input, 0–1.
    pub data_wait_share: Option<f64>,
    pub data_wait_p95: Option<f64>,
    pub gpu_util: Option<f64>,
    pub warmup: bool,
}

/// Where a band came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BandKind {
    /// The primary chord of consecutive decision-trace windows.
    Chord,
    /// An observe episode (or consecutive symptomatic windows).
    Symptom,
}

/// A step range during which a chord was primary or a symptom lasted.
#[derive(Debug, Clone, PartialEq)]
pub struct Band {
    pub kind: BandKind,
    pub label: String,
    pub first_step: u64,
    pub last_step: u64,
    pub start_ms: Option<i64>,
    pub end_ms: Option<i64>,
    pub windows: u64,
    /// Observe's confidence for episodes.
    pub confidence: Option<String>,
}

/// A knob change: proposed, or applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    pub knob: String,
    pub from: String,
    pub to: String,
    pub reason: String,
}

/// A proposal the envelope refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Blocked {
    pub knob: String,
    pub reason: String,
}

/// One decision-trace line with something to say (a proposal, a block, an applied change).
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    pub window: u64,
    pub first_step: u64,
    pub last_step: u64,
    pub start_ms: Option<i64>,
    pub chord: Option<String>,
    pub active_chords: Vec<String>,
    pub proposals: Vec<Change>,
    pub blocked: Vec<Blocked>,
    pub applied: Vec<Change>,
}

impl Decision {
    /// Two decisions say the same thing (for collapsing runs in the table).
    pub fn same_story(&self, o: &Decision) -> bool {
        self.chord == o.chord
            && self.active_chords == o.active_chords
            && self.proposals == o.proposals
            && self.blocked == o.blocked
            && self.applied == o.applied
    }
}

/// State of a gate that ran, did not run, or could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Gate {
    NotRun,
    Ok { detail: String },
    Blocked { reason: String, detail: String },
    Unreadable { error: String },
}

/// Verify and apply results.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub verify: Gate,
    pub apply: Gate,
    /// When the apply finished (epoch ms), to place it on the time axis.
    pub apply_ms: Option<i64>,
    /// Knob changes the apply wrote.
    pub applied: Vec<Change>,
}

impl Default for Outcome {
    fn default() -> Self {
        Outcome {
            verify: Gate::NotRun,
            apply: Gate::NotRun,
            apply_ms: None,
            applied: Vec::new(),
        }
    }
}

/// Counts of what the reader skipped, shown in the report so nothing is silently lost.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReadNotes {
    pub notes: Vec<String>,
}

impl ReadNotes {
    pub fn note(&mut self, s: impl Into<String>) {
        if self.notes.len() < 50 {
            self.notes.push(s.into());
        }
    }
}

/// Everything the report shows.
#[derive(Debug, Clone, Default)]
pub struct ReportModel {
    pub title: String,
    pub source: Option<String>,
    pub verdict: Option<String>,
    pub policy: Option<String>,
    pub passport: Option<String>,
    pub windows: Vec<WindowRow>,
    pub bands: Vec<Band>,
    pub decisions: Vec<Decision>,
    /// Decision-trace windows read (with or without something to say).
    pub decision_windows: u64,
    /// Episodes as observe reported them (when observe_latest.json was there).
    pub episodes: Vec<Band>,
    pub outcome: Outcome,
    pub notes: ReadNotes,
    /// Which artifacts were read, for the footer.
    pub inputs: Vec<String>,
    /// Verdicts of the effect check, one per change, in change order (docs/closed-loop.md).
    pub effects: Vec<EffectMark>,
    /// GPU-hours per change on one GPU (`roi`), from closed_loop_latest.json.
    pub roi: Option<crate::closed_loop::roi::Roi>,
}

/// The effect verdict on one change, as the page shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct EffectMark {
    pub change_step: u64,
    /// `helped`, `neutral`, `hurt`, `inconclusive`, or `?` for anything else.
    pub verdict: &'static str,
    pub knobs: String,
    pub reason: String,
}

/// One entry of an `effects` list; `None` without a change step.
fn effect_mark(v: &Value) -> Option<EffectMark> {
    let verdict = match v.get("verdict").and_then(Value::as_str) {
        Some("helped") => "helped",
        Some("neutral") => "neutral",
        Some("hurt") => "hurt",
        Some("inconclusive") => "inconclusive",
        _ => "?",
    };
    let knobs: Vec<String> = v
        .get("knobs")
        .and_then(Value::as_array)
        .map(|ks| {
            ks.iter()
                .take(10)
                .map(|k| {
                    format!(
                        "{} {} → {}",
                        text_of(k.get("knob")),
                        text_of(k.get("from")),
                        text_of(k.get("to"))
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    Some(EffectMark {
        change_step: u64_of(v.get("change_step"))?,
        verdict,
        knobs: clip(&knobs.join(", ")),
        reason: text_of(v.get("reason")),
    })
}

/// Adds the verdicts of an `effects` list, replacing those already read for the same change.
fn add_effects(m: &mut ReportModel, v: Option<&Value>) {
    for e in v
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(effect_mark)
    {
        match m
            .effects
            .iter_mut()
            .find(|x| x.change_step == e.change_step)
        {
            Some(x) => *x = e,
            None => m.effects.push(e),
        }
    }
    m.effects.sort_by_key(|e| e.change_step);
}

/// Longest string kept from an artifact (a hostile file cannot blow up the page).
const MAX_TEXT: usize = 200;

fn clip(s: &str) -> String {
    if s.len() <= MAX_TEXT {
        return s.to_string();
    }
    let mut end = MAX_TEXT;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

/// A scalar as text: strings as they are (clipped), numbers and booleans printed, else `?`.
fn text_of(v: Option<&Value>) -> String {
    match v {
        Some(Value::String(s)) => clip(s),
        Some(Value::Number(n)) => n.to_string(),
        Some(Value::Bool(b)) => b.to_string(),
        Some(Value::Null) | None => "?".into(),
        Some(other) => clip(&other.to_string()),
    }
}

fn f64_of(v: Option<&Value>) -> Option<f64> {
    v.and_then(Value::as_f64).filter(|x| x.is_finite())
}

fn u64_of(v: Option<&Value>) -> Option<u64> {
    v.and_then(|x| {
        x.as_u64()
            .or_else(|| x.as_f64().filter(|f| *f >= 0.0).map(|f| f as u64))
    })
}

fn i64_of(v: Option<&Value>) -> Option<i64> {
    v.and_then(|x| {
        x.as_i64()
            .or_else(|| x.as_f64().filter(|f| f.is_finite()).map(|f| f as i64))
    })
}

/// A name from a string or an object's `id`/`name` (`{"id": "BURST-ABSORB"}`).
fn name_of(v: Option<&Value>) -> Option<String> {
    match v? {
        Value::String(s) if !s.is_empty() => Some(clip(s)),
        Value::Object(o) => o
            .get("id")
            .or_else(|| o.get("name"))
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .map(clip),
        _ => None,
    }
}

/// `name@version` from `{name, version}`.
fn named_version(v: Option<&Value>) -> Option<String> {
    let name = name_of(v)?;
    match v.and_then(|o| o.get("version")).and_then(Value::as_str) {
        Some(ver) => Some(format!("{name}@{}", clip(ver))),
        None => Some(name),
    }
}

/// The window range and features of one per-window line (observe or decision trace). `position` is
/// the line's place among the windows read, used when the line has no `window.index` (the decision
/// trace's window carries none).
fn window_row(line: &Value, position: u64) -> Option<WindowRow> {
    let w = line.get("window")?;
    let f = line.get("features");
    let feat = |k: &str| f64_of(f.and_then(|f| f.get(k)));
    let first_step = u64_of(w.get("first_step"))?;
    let last_step = u64_of(w.get("last_step")).unwrap_or(first_step);
    Some(WindowRow {
        index: u64_of(w.get("index")).unwrap_or(position),
        first_step,
        last_step: last_step.max(first_step),
        start_ms: i64_of(w.get("start_ms")),
        end_ms: i64_of(w.get("end_ms")),
        step_p50: feat("step_time_p50_ms"),
        step_p95: feat("step_time_p95_ms"),
        step_max: feat("step_time_max_ms"),
        loss: feat("loss_mean"),
        data_wait_share: feat("data_wait_share"),
        data_wait_p95: feat("data_wait_p95_ms"),
        gpu_util: feat("gpu_util_mean"),
        warmup: f
            .and_then(|f| f.get("warmup"))
            .and_then(Value::as_bool)
            .unwrap_or(false),
    })
}

/// Reads JSON lines one at a time, counting what it had to skip.
fn for_each_line(
    r: impl BufRead,
    what: &str,
    notes: &mut ReadNotes,
    mut f: impl FnMut(&Value) -> bool,
) -> std::io::Result<()> {
    let (mut bad, mut unusable) = (0u64, 0u64);
    for line in r.lines() {
        let line = match line {
            Ok(l) => l,
            Err(e) if e.kind() == std::io::ErrorKind::InvalidData => {
                bad += 1;
                continue;
            }
            Err(e) => return Err(e),
        };
        if line.trim().is_empty() {
            continue;
        }
        match serde_json::from_str::<Value>(&line) {
            Ok(v) => {
                if !f(&v) {
                    unusable += 1;
                }
            }
            Err(_) => bad += 1,
        }
    }
    if bad > 0 {
        notes.note(format!(
            "{what}: {bad} line(s) were not JSON and were skipped"
        ));
    }
    if unusable > 0 {
        notes.note(format!(
            "{what}: {unusable} line(s) had no usable window and were skipped"
        ));
    }
    Ok(())
}

/// Merges windows that carry the same label into bands (consecutive windows, in step order).
#[derive(Default)]
struct BandBuilder {
    open: Vec<Band>,
    done: Vec<Band>,
}

impl BandBuilder {
    /// `labels` are the labels active in the window `w`; a band stays open while its label is present.
    fn push(&mut self, kind: BandKind, w: &WindowRow, labels: &[String]) {
        let mut still = Vec::with_capacity(self.open.len());
        for b in self.open.drain(..) {
            if labels.contains(&b.label) {
                still.push(b);
            } else {
                self.done.push(b);
            }
        }
        for l in labels {
            match still.iter_mut().find(|b| &b.label == l) {
                Some(b) => {
                    b.last_step = b.last_step.max(w.last_step);
                    b.end_ms = w.end_ms.or(b.end_ms);
                    b.windows += 1;
                }
                None => still.push(Band {
                    kind,
                    label: l.clone(),
                    first_step: w.first_step,
                    last_step: w.last_step,
                    start_ms: w.start_ms,
                    end_ms: w.end_ms,
                    windows: 1,
                    confidence: None,
                }),
            }
        }
        self.open = still;
    }

    fn finish(mut self) -> Vec<Band> {
        self.done.append(&mut self.open);
        self.done.sort_by_key(|b| (b.first_step, b.last_step));
        self.done
    }
}

/// The chord that means "nothing to do": not drawn as a band.
pub const HOLD_CHORD: &str = "NORMAL-HOLD";

fn changes(v: Option<&Value>) -> Vec<Change> {
    v.and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|p| {
                    Some(Change {
                        knob: name_of(p.get("knob"))?,
                        from: text_of(p.get("from")),
                        to: text_of(p.get("to").or_else(|| p.get("target"))),
                        reason: p
                            .get("reason")
                            .map(|r| text_of(Some(r)))
                            .unwrap_or_default(),
                    })
                })
                .collect()
        })
        .unwrap_or_default()
}

fn blocked(v: Option<&Value>) -> Vec<Blocked> {
    v.and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|p| {
                    Some(Blocked {
                        knob: name_of(p.get("knob"))?,
                        reason: text_of(p.get("reason")),
                    })
                })
                .collect()
        })
        .unwrap_or_default()
}

fn strings(v: Option<&Value>) -> Vec<String> {
    v.and_then(Value::as_array)
        .map(|a| a.iter().filter_map(|x| name_of(Some(x))).collect())
        .unwrap_or_default()
}

/// Reads `observe_windows.jsonl`: the series and, from each window's `symptoms`, symptom bands.
pub fn read_observe_windows(
    m: &mut ReportModel,
    r: impl BufRead,
    symptom_bands: &mut Vec<Band>,
) -> std::io::Result<()> {
    let mut bands = BandBuilder::default();
    let mut notes = std::mem::take(&mut m.notes);
    for_each_line(r, "observe_windows.jsonl", &mut notes, |v| {
        let Some(w) = window_row(v, m.windows.len() as u64) else {
            return false;
        };
        let labels: Vec<String> = v
            .get("symptoms")
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(|s| name_of(s.get("symptom"))).collect())
            .unwrap_or_default();
        bands.push(BandKind::Symptom, &w, &labels);
        m.windows.push(w);
        true
    })?;
    m.notes = notes;
    *symptom_bands = bands.finish();
    Ok(())
}

/// Reads `decision_trace_latest.jsonl` (schema `decision_trace_event.v1`): chord bands, decisions,
/// and the series too when `use_series` (no observe windows were given).
pub fn read_decision_trace(
    m: &mut ReportModel,
    r: impl BufRead,
    use_series: bool,
) -> std::io::Result<()> {
    let mut bands = BandBuilder::default();
    let mut notes = std::mem::take(&mut m.notes);
    let mut other_schema = 0u64;
    for_each_line(r, "decision_trace_latest.jsonl", &mut notes, |v| {
        if let Some(s) = v.get("schema_version").and_then(Value::as_str)
            && !s.starts_with("decision_trace_event.")
        {
            other_schema += 1;
        }
        let Some(w) = window_row(v, m.decision_windows) else {
            return false;
        };
        m.decision_windows += 1;
        let chord = name_of(v.get("chord"));
        let labels: Vec<String> = chord.iter().filter(|c| *c != HOLD_CHORD).cloned().collect();
        bands.push(BandKind::Chord, &w, &labels);
        if m.policy.is_none() {
            m.policy = named_version(v.get("policy"));
        }
        if m.passport.is_none() {
            m.passport = named_version(v.get("passport"));
        }
        add_effects(m, v.get("effects"));
        let d = Decision {
            window: w.index,
            first_step: w.first_step,
            last_step: w.last_step,
            start_ms: w.start_ms,
            chord,
            active_chords: strings(v.get("active_chords")),
            proposals: changes(v.get("proposals")),
            blocked: blocked(v.get("blocked")),
            applied: changes(v.get("applied")),
        };
        if !(d.proposals.is_empty() && d.blocked.is_empty() && d.applied.is_empty()) {
            m.decisions.push(d);
        }
        if use_series {
            m.windows.push(w);
        }
        true
    })?;
    if other_schema > 0 {
        notes.note(format!(
            "decision_trace_latest.jsonl: {other_schema} line(s) carry another schema_version than decision_trace_event.v1; read as far as they match"
        ));
    }
    m.notes = notes;
    m.bands.extend(bands.finish());
    Ok(())
}

/// Reads `observe_latest.json`: source, verdict and episodes.
pub fn read_observe_report(m: &mut ReportModel, text: &str) {
    let v: Value = match serde_json::from_str(text) {
        Ok(v) => v,
        Err(e) => {
            m.notes.note(format!(
                "observe_latest.json is not valid JSON ({e}); ignored"
            ));
            return;
        }
    };
    m.source = v
        .get("source")
        .and_then(|s| s.get("path"))
        .and_then(Value::as_str)
        .map(clip);
    m.verdict = v
        .get("verdict")
        .and_then(|s| s.get("text"))
        .and_then(Value::as_str)
        .map(clip);
    if let Some(eps) = v.get("episodes").and_then(Value::as_array) {
        for e in eps {
            let (Some(label), Some(first)) =
                (name_of(e.get("symptom")), u64_of(e.get("first_step")))
            else {
                continue;
            };
            m.episodes.push(Band {
                kind: BandKind::Symptom,
                label,
                first_step: first,
                last_step: u64_of(e.get("last_step")).unwrap_or(first).max(first),
                start_ms: i64_of(e.get("start_ms")),
                end_ms: i64_of(e.get("end_ms")),
                windows: u64_of(e.get("windows")).unwrap_or(1),
                confidence: e.get("confidence").and_then(Value::as_str).map(clip),
            });
        }
    }
}

/// Reads `closed_loop_latest.json` for what the trace may lack (policy, passport, verdict).
pub fn read_closed_loop_report(m: &mut ReportModel, text: &str) {
    match serde_json::from_str::<Value>(text) {
        Ok(v) => {
            if m.policy.is_none() {
                m.policy = named_version(v.get("policy"));
            }
            if m.passport.is_none() {
                m.passport = named_version(v.get("passport"));
            }
            // The report also has the last change, judged at the end of the telemetry.
            add_effects(m, v.get("effects"));
            let effects = v
                .get("effects")
                .cloned()
                .map(serde_json::from_value::<Vec<crate::closed_loop::effect::ChangeEffect>>);
            if let Some(Ok(effects)) = effects
                && !effects.is_empty()
            {
                let last = u64_of(v.pointer("/run/last_step")).unwrap_or(0);
                m.roi = Some(crate::closed_loop::roi::roi(&effects, last, 1));
            }
            let verdict = v
                .get("verdict")
                .and_then(|x| x.get("text").or(Some(x)))
                .and_then(Value::as_str)
                .or_else(|| v.get("summary").and_then(Value::as_str));
            if let Some(t) = verdict {
                m.verdict = Some(clip(t));
            }
            if m.source.is_none() {
                m.source = v
                    .get("source")
                    .and_then(|s| s.get("path"))
                    .and_then(Value::as_str)
                    .map(clip);
            }
        }
        Err(e) => m.notes.note(format!(
            "closed_loop_latest.json is not valid JSON ({e}); ignored"
        )),
    }
}

/// A blocker as text: a string, or `{kind, detail, namespace, name}`.
fn blocker_text(v: &Value) -> (String, String) {
    match v {
        Value::String(s) => (clip(s), String::new()),
        Value::Object(o) => {
            let reason = name_of(o.get("kind"))
                .or_else(|| name_of(o.get("reason")))
                .or_else(|| name_of(o.get("code")))
                .unwrap_or_else(|| "blocked".into());
            let mut detail = Vec::new();
            for k in ["detail", "message"] {
                if let Some(s) = o.get(k).and_then(Value::as_str) {
                    detail.push(clip(s));
                }
            }
            if let (Some(ns), Some(n)) = (
                o.get("namespace").and_then(Value::as_str),
                o.get("name").and_then(Value::as_str),
            ) {
                detail.push(format!("{}/{}", clip(ns), clip(n)));
            }
            (reason, detail.join(" · "))
        }
        other => (clip(&other.to_string()), String::new()),
    }
}

/// Reads `k8s_verify_latest.json`: `ok`, and `verify_blocker` when not ok.
pub fn read_verify(text: &str) -> Gate {
    let v: Value = match serde_json::from_str(text) {
        Ok(v) => v,
        Err(e) => {
            return Gate::Unreadable {
                error: format!("not valid JSON ({e})"),
            };
        }
    };
    let items = u64_of(v.get("plan_items").or_else(|| v.get("k8s_plan_items"))).or_else(|| {
        v.get("items")
            .and_then(Value::as_array)
            .map(|a| a.len() as u64)
    });
    match v.get("ok").and_then(Value::as_bool) {
        Some(true) => Gate::Ok {
            detail: items.map_or("plan verified".into(), |n| {
                format!("{n} plan item{} verified", if n == 1 { "" } else { "s" })
            }),
        },
        Some(false) => {
            let (reason, detail) = v
                .get("verify_blocker")
                .filter(|b| !b.is_null())
                .map_or(("not ok".into(), String::new()), blocker_text);
            Gate::Blocked { reason, detail }
        }
        None => Gate::Unreadable {
            error: "no boolean `ok`".into(),
        },
    }
}

fn rfc3339_ms(v: Option<&Value>) -> Option<i64> {
    let s = v?.as_str()?;
    chrono::DateTime::parse_from_rfc3339(s)
        .ok()
        .map(|t| t.timestamp_millis())
}

/// What `k8s_apply_latest.json` says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApplyRead {
    pub gate: Gate,
    /// When the apply finished (epoch ms).
    pub when: Option<i64>,
    /// Knob changes written to the cluster (`actions[].changes` of the items that were patched).
    pub applied: Vec<Change>,
    /// The keyring the license was checked against when it was not the built-in production one.
    pub keyring_override: Option<String>,
}

/// A knob the cluster did not set before an apply (`from: null` in the apply report).
pub const UNSET: &str = "unset";

fn bool_at(v: &Value, path: &[&str]) -> Option<bool> {
    path.iter().try_fold(v, |v, k| v.get(*k))?.as_bool()
}

/// Reads `k8s_apply_latest.json` (`k8s_apply.v1`, or the older shape): `ok`, the block reason and
/// detail, the changes applied per item, when it finished.
pub fn read_apply(text: &str) -> ApplyRead {
    let v: Value = match serde_json::from_str(text) {
        Ok(v) => v,
        Err(e) => {
            return ApplyRead {
                gate: Gate::Unreadable {
                    error: format!("not valid JSON ({e})"),
                },
                when: None,
                applied: Vec::new(),
                keyring_override: None,
            };
        }
    };
    let when = rfc3339_ms(v.get("finished_at")).or_else(|| rfc3339_ms(v.get("started_at")));
    let actions: &[Value] = v
        .get("actions")
        .or_else(|| v.get("items"))
        .and_then(Value::as_array)
        .map_or(&[], Vec::as_slice);
    let item_ok = |x: &Value| x.get("ok").and_then(Value::as_bool);
    let patched = actions.iter().filter(|x| item_ok(x) == Some(true)).count();
    let failed = actions.iter().filter(|x| item_ok(x) == Some(false)).count();
    let mut applied = Vec::new();
    for a in actions.iter().filter(|x| item_ok(x) == Some(true)) {
        let target = match (
            a.get("namespace").and_then(Value::as_str),
            a.get("name").and_then(Value::as_str),
        ) {
            (Some(ns), Some(n)) => format!("{}/{}", clip(ns), clip(n)),
            _ => "k8s apply".into(),
        };
        // Plan v2: what the change costs (only the three known values are shown).
        let target = match a.get("takes_effect").and_then(Value::as_str) {
            Some(t @ ("live" | "next_pod_start" | "rollout")) => {
                format!("{target} · takes effect: {}", t.replace('_', " "))
            }
            _ => target,
        };
        for mut c in changes(a.get("changes")) {
            for side in [&mut c.from, &mut c.to] {
                if side == "?" {
                    *side = UNSET.into();
                }
            }
            c.reason = target.clone();
            applied.push(c);
        }
    }
    // A development license trusted through `--keyring`/MODEKEEPER_KEYRING: the page must say so.
    let keyring_override = v
        .get("keyring")
        .filter(|k| bool_at(k, &["override"]) == Some(true))
        .map(|k| match k.get("path").and_then(Value::as_str) {
            Some(p) => clip(p),
            None => text_of(k.get("source")),
        });
    let gate = match v.get("ok").and_then(Value::as_bool) {
        Some(true) => {
            let mut detail = if actions.is_empty() {
                "plan applied".to_string()
            } else {
                format!("{patched} of {} plan item(s) applied", actions.len())
            };
            if !applied.is_empty() {
                let list: Vec<String> = applied
                    .iter()
                    .take(5)
                    .map(|c| format!("{} {} → {}", c.knob, c.from, c.to))
                    .collect();
                detail += &format!(": {}", list.join(", "));
                if applied.len() > 5 {
                    detail += &format!(" and {} more", applied.len() - 5);
                }
            }
            if let Some(p) = v.get("rollback_plan_path").and_then(Value::as_str) {
                detail += &format!(" · rollback plan {}", clip(p));
            }
            if let Some(k) = &keyring_override {
                detail += &format!(" · {}", keyring_note(k));
            }
            Gate::Ok { detail }
        }
        Some(false) => {
            let reason = [
                "block_reason",
                "blocked_reason",
                "reason",
                "apply_blocked_reason",
            ]
            .iter()
            .find_map(|k| v.get(*k).filter(|x| !x.is_null()))
            .map(|b| blocker_text(b).0)
            .or_else(|| {
                v.get("error")
                    .filter(|e| !e.is_null())
                    .map(|e| format!("failed: {}", blocker_text(e).0))
            });
            let mut detail = Vec::new();
            if let Some(d) = v.get("block_detail").and_then(Value::as_str) {
                detail.push(clip(d));
            }
            let kill = [
                &["kill_switch_active"][..],
                &["kill_switch", "active"],
                &["checks", "kill_switch_active"],
            ]
            .iter()
            .any(|p| bool_at(&v, p) == Some(true));
            if kill {
                detail.push("kill switch active".to_string());
            }
            if v.get("license_ok").and_then(Value::as_bool) == Some(false) {
                detail.push("license not ok".to_string());
            }
            if v.get("verify_ok").and_then(Value::as_bool) == Some(false) {
                detail.push("verify not ok".to_string());
            }
            if patched > 0 || failed > 0 {
                detail.push(format!("{patched} applied, {failed} failed"));
            }
            if let Some(k) = &keyring_override {
                detail.push(keyring_note(k));
            }
            Gate::Blocked {
                reason: reason.unwrap_or_else(|| "not ok".into()),
                detail: detail.join(" · "),
            }
        }
        None => Gate::Unreadable {
            error: "no boolean `ok`".into(),
        },
    };
    ApplyRead {
        gate,
        when,
        applied,
        keyring_override,
    }
}

fn keyring_note(keyring: &str) -> String {
    format!(
        "license trusted through a keyring override ({keyring}), not the built-in production keys: a development license"
    )
}

/// Knob changes applied, counted once: the decision trace's own (`closed-loop run --apply`), else
/// what a separate `k8s apply` of the plan wrote.
pub fn applied_count(m: &ReportModel) -> usize {
    let in_trace: usize = m.decisions.iter().map(|d| d.applied.len()).sum();
    if in_trace > 0 {
        in_trace
    } else {
        m.outcome.applied.len()
    }
}

/// A proposal reads `4 → 5` when the plan assumed the registry default 4, while the apply found the
/// knob unset on the workload: say which, so the two do not contradict each other.
fn note_assumed_values(m: &mut ReportModel) {
    let mut notes = Vec::new();
    for a in m.outcome.applied.iter().filter(|a| a.from == UNSET) {
        let assumed = m
            .decisions
            .iter()
            .flat_map(|d| d.proposals.iter())
            .find(|p| p.knob == a.knob && p.from != "?" && p.from != UNSET);
        if let Some(p) = assumed {
            notes.push(format!(
                "{}: the plan's {} → {} assumed {} (the plan's starting knobs), but {} did not set it before the apply; it is now {} (plan with --knobs-from-cluster to start from the cluster's values)",
                a.knob, p.from, p.to, p.from, a.reason, a.to
            ));
        }
    }
    for n in notes {
        m.notes.note(n);
    }
}

/// Read errors and windows in order: sorts windows by step (a trace written by several writers may
/// interleave) and prefers observe's episodes over bands rebuilt from per-window symptoms.
pub fn finish(m: &mut ReportModel, symptom_bands: Vec<Band>) {
    m.windows.sort_by_key(|w| (w.first_step, w.index));
    m.decisions.sort_by_key(|d| (d.first_step, d.window));
    if m.episodes.is_empty() {
        m.bands.extend(symptom_bands);
    } else {
        m.bands.extend(
            m.episodes
                .iter()
                .filter(|e| e.confidence.as_deref() != Some("low"))
                .cloned(),
        );
    }
    m.bands.sort_by_key(|b| (b.first_step, b.last_step));
    note_assumed_values(m);
}

#[cfg(test)]
mod tests {
    use super::*;

    const TRACE: &str = r#"{"schema_version":"decision_trace_event.v1","window":{"index":0,"first_step":0,"last_step":99,"start_ms":1000,"end_ms":2000,"samples":100},"features":{"step_time_p50_ms":100.0,"step_time_p95_ms":120.0},"chord":"NORMAL-HOLD","active_chords":[],"proposals":[],"blocked":[],"policy":{"name":"safe-chords","version":"1.0.0","digest":"sha256:00"},"passport":{"name":"safe","version":"1.0.0"}}
{"schema_version":"decision_trace_event.v1","window":{"first_step":100,"last_step":199},"features":{"step_time_p50_ms":150.0},"chord":{"id":"BURST-ABSORB"},"active_chords":["BURST-ABSORB"],"proposals":[{"knob":"dataloader_prefetch_factor","from":2,"to":3,"reason":"latency_burst"}],"blocked":[{"knob":"concurrency","reason":"cooldown"}]}
not json
{"no":"window"}
{"window":{"index":2,"first_step":200,"last_step":299},"chord":"BURST-ABSORB","proposals":[],"blocked":[]}
"#;

    #[test]
    fn decision_trace_gives_bands_decisions_and_series() {
        let mut m = ReportModel::default();
        read_decision_trace(&mut m, TRACE.as_bytes(), true).unwrap();
        finish(&mut m, Vec::new());
        assert_eq!(m.windows.len(), 3);
        assert_eq!(m.decision_windows, 3);
        assert_eq!(m.policy.as_deref(), Some("safe-chords@1.0.0"));
        assert_eq!(m.passport.as_deref(), Some("safe@1.0.0"));
        assert_eq!(m.bands.len(), 1);
        assert_eq!((m.bands[0].first_step, m.bands[0].last_step), (100, 299));
        assert_eq!(m.bands[0].label, "BURST-ABSORB");
        assert_eq!(m.decisions.len(), 1);
        let d = &m.decisions[0];
        assert_eq!(
            d.window, 1,
            "a window without an index is numbered by its place"
        );
        assert_eq!(d.proposals[0].from, "2");
        assert_eq!(d.proposals[0].to, "3");
        assert_eq!(d.blocked[0].reason, "cooldown");
        assert_eq!(m.notes.notes.len(), 2, "{:?}", m.notes);
    }

    #[test]
    fn gates() {
        assert_eq!(
            read_verify(r#"{"ok":true,"k8s_plan_items":1}"#),
            Gate::Ok {
                detail: "1 plan item verified".into()
            }
        );
        assert_eq!(
            read_verify(
                r#"{"ok":false,"verify_blocker":{"kind":"namespace_missing","namespace":"ml","name":"t"}}"#
            ),
            Gate::Blocked {
                reason: "namespace_missing".into(),
                detail: "ml/t".into()
            }
        );
        assert!(matches!(read_verify("{"), Gate::Unreadable { .. }));
        let a = read_apply(
            r#"{"ok":false,"block_reason":"kill_switch_active","block_detail":"MODEKEEPER_KILL_SWITCH=1","kill_switch":{"active":true},"finished_at":"2026-01-01T00:00:00Z"}"#,
        );
        assert_eq!(
            a.gate,
            Gate::Blocked {
                reason: "kill_switch_active".into(),
                detail: "MODEKEEPER_KILL_SWITCH=1 · kill switch active".into()
            }
        );
        assert_eq!(a.when, Some(1_767_225_600_000));
        let a = read_apply(
            r#"{"ok":true,"rollback_plan_path":"out/rollback_plan.json","actions":[{"ok":true,"namespace":"ml","name":"trainer","changes":[{"scope":"pod_template","knob":"grad_accum_steps","from":"4","to":"8"},{"knob":"microbatch_size","from":null,"to":"16"}]},{"ok":true,"changes":[]}]}"#,
        );
        assert_eq!(
            a.gate,
            Gate::Ok {
                detail: "2 of 2 plan item(s) applied: grad_accum_steps 4 → 8, microbatch_size unset → 16 · rollback plan out/rollback_plan.json".into()
            }
        );
        assert_eq!(a.applied.len(), 2);
        assert_eq!(a.applied[0].reason, "ml/trainer");
        // Plan v2: the report says what each change costs.
        let a = read_apply(
            r#"{"ok":true,"actions":[{"ok":true,"namespace":"ml","name":"t-modekeeper-knobs","takes_effect":"live","changes":[{"scope":"data","knob":"concurrency","from":"2","to":"6"}]},{"ok":true,"namespace":"ml","name":"t","takes_effect":"<b>","changes":[{"knob":"x","from":"1","to":"2"}]}]}"#,
        );
        assert_eq!(
            a.applied[0].reason,
            "ml/t-modekeeper-knobs · takes effect: live"
        );
        assert_eq!(a.applied[1].reason, "ml/t", "unknown values are not shown");
        assert_eq!(a.keyring_override, None);
        let a = read_apply(
            r#"{"ok":true,"keyring":{"source":"flag","path":"/tmp/dev/keyring.json","override":true,"kids":["k1"]},"actions":[]}"#,
        );
        assert_eq!(a.keyring_override.as_deref(), Some("/tmp/dev/keyring.json"));
        let Gate::Ok { detail } = a.gate else {
            panic!()
        };
        assert!(
            detail.contains("keyring override (/tmp/dev/keyring.json)"),
            "{detail}"
        );
        let a = read_apply(
            r#"{"ok":false,"block_reason":"verify_failed","keyring":{"source":"builtin","path":null,"override":false,"kids":[]}}"#,
        );
        assert_eq!(a.keyring_override, None);
    }

    /// The proposal's `from` (the plan's assumption) and the apply's (the cluster's) differ: a note
    /// says why, and the applied count of a separate `k8s apply` shows on the decisions card.
    #[test]
    fn an_apply_of_an_unset_knob_explains_the_assumed_value() {
        let mut m = ReportModel::default();
        read_decision_trace(&mut m, TRACE.as_bytes(), true).unwrap();
        assert_eq!(applied_count(&m), 0);
        let a = read_apply(
            r#"{"ok":true,"actions":[{"ok":true,"namespace":"ml","name":"trainer","changes":[{"knob":"dataloader_prefetch_factor","from":null,"to":"3"}]}]}"#,
        );
        m.outcome.applied = a.applied;
        finish(&mut m, Vec::new());
        assert_eq!(applied_count(&m), 1);
        let note = m
            .notes
            .notes
            .iter()
            .find(|n| n.starts_with("dataloader_prefetch_factor:"))
            .unwrap_or_else(|| panic!("{:?}", m.notes));
        assert!(note.contains("2 → 3 assumed 2"), "{note}");
        assert!(note.contains("ml/trainer did not set it"), "{note}");
    }

    #[test]
    fn long_strings_are_clipped() {
        let long = "x".repeat(10_000);
        let g = read_verify(&format!(r#"{{"ok":false,"verify_blocker":"{long}"}}"#));
        let Gate::Blocked { reason, .. } = g else {
            panic!()
        };
        assert!(reason.len() < 300);
    }
}
