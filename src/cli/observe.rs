//! `observe`: one pass over a telemetry source; writes the observe report, per-window features,
//! a Markdown summary and explain events; prints what happened, when, and how sure we are.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};

use chrono::Utc;
use clap::Args;
use serde::Serialize;
use serde_json::json;

use super::{GlobalArgs, OutputFormat, SourceKind, TelemetryArgs};
use crate::artifacts::{ExplainLog, OutDir};
use crate::error::{InputError, input_error};
use crate::human::{duration_ms, offset_ms, thousands};
use crate::pipeline::{PassSummary, run_pass};
use crate::report::{StepTimeline, timeline_lines, timeline_markdown};
use crate::signals::{
    Episode, EpisodeTracker, FeatureConfig, Symptom, SymptomThresholds, WindowFeatures, symptoms_of,
};
use crate::telemetry::formats::assemble::FormatDetected;
use crate::telemetry::{IngestOptions, IngestStats, SourceSpec, open_source};

#[derive(Debug, Clone, Args)]
pub struct ObserveArgs {
    #[command(flatten)]
    pub telemetry: TelemetryArgs,
    /// Directory for reports and explain.jsonl
    #[arg(long, value_name = "DIR", default_value = "report")]
    pub out: PathBuf,
}

/// Episodes kept in a report; a flapping symptom over a huge input cannot grow it without bound.
const MAX_EPISODES: usize = 1000;

#[derive(Debug, Serialize)]
pub struct ObserveReport {
    pub schema_version: &'static str,
    pub tool: serde_json::Value,
    pub started_at: String,
    pub finished_at: String,
    pub duration_ms: i64,
    pub source: serde_json::Value,
    /// Which reader read the input, with the evidence and the step time's unit.
    pub format_detected: FormatDetected,
    pub config: serde_json::Value,
    pub ingest: IngestStats,
    pub run: serde_json::Value,
    pub baseline: serde_json::Value,
    pub verdict: Verdict,
    pub episodes: Vec<Episode>,
    pub episodes_truncated: u64,
    pub artifacts: serde_json::Value,
}

#[derive(Debug, Serialize)]
pub struct Verdict {
    /// `steady`, `incidents` or `warmup_only` (every window was in the warm-up).
    pub state: &'static str,
    pub incidents: u64,
    pub windows: u64,
    pub windows_after_warmup: u64,
    pub symptomatic_windows: u64,
    pub text: String,
    /// First step whose loss was NaN or infinite (a divergence incident), and how many such records.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub loss_divergence_step: Option<u64>,
    #[serde(skip_serializing_if = "is_zero")]
    pub loss_non_finite_records: u64,
    /// What could not be judged with this telemetry (`step_time`: loss-only records).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub not_judged: Vec<&'static str>,
    /// Planned slow steps (evaluation, checkpoint, restart) set aside rather than judged.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub planned_steps: Option<crate::signals::PlannedCounts>,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// Validates telemetry flags and turns them into a source spec and options.
pub fn telemetry_inputs(
    t: &TelemetryArgs,
) -> anyhow::Result<(SourceSpec, IngestOptions, FeatureConfig)> {
    let path = match (t.source, &t.path, t.example) {
        (SourceKind::File, _, Some(e)) => e.materialize()?,
        (SourceKind::File, Some(p), None) => p.clone(),
        (SourceKind::File, None, None) => {
            return Err(input_error(
                "bad_flag",
                "--source file needs --path PATH (or --path - for stdin, or --example NAME)",
            ));
        }
        (kind, _, _) => {
            return Err(input_error(
                "bad_flag",
                format!(
                    "--source {} streams live telemetry: use `closed-loop watch --source {}`",
                    kind.name(),
                    kind.name()
                ),
            ));
        }
    };
    let spec = SourceSpec {
        path,
        format: t.format,
        record_raw: t.record_raw.clone(),
    };
    let opts = IngestOptions {
        reorder_window: t.reorder_window as usize,
        skew_tolerance_ms: t.clock_skew_tolerance as i64,
        release_lag_steps: None,
        step_time_unit: t.step_time_unit,
    };
    let cfg = FeatureConfig {
        window_steps: t.window_steps,
        warmup_steps: t.warmup_steps,
    };
    Ok((spec, opts, cfg))
}

/// "No usable telemetry record", with why: the counts, the three most frequent skip reasons, and
/// what the commonest cases mean (the same reasons are in explain.jsonl).
pub fn no_records_error(
    path: &Path,
    ingest: &IngestStats,
    format: &FormatDetected,
) -> anyhow::Error {
    let mut reasons: Vec<(u64, &str)> = crate::telemetry::SkipReason::ALL
        .iter()
        .map(|r| (ingest.skipped(*r), r.as_str()))
        .filter(|(n, _)| *n > 0)
        .collect();
    reasons.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(b.1)));
    let top: Vec<String> = reasons
        .iter()
        .take(3)
        .map(|(n, r)| format!("{} {r}", thousands(*n)))
        .collect();
    let top = if top.is_empty() {
        String::new()
    } else {
        format!(" ({})", top.join(", "))
    };
    let why = match reasons.first().map(|(_, r)| *r) {
        _ if ingest.lines_read == 0 || ingest.lines_read == ingest.blank_lines => {
            "the input is empty"
        }
        Some("missing_step_time") => {
            "records need a step time or a loss (`step_time_ms`, `loss` or an alias, docs/telemetry.md)"
        }
        Some("not_json" | "invalid_json") => {
            "lines are neither our JSON records nor a trainer format ModeKeeper reads (docs/telemetry.md lists them; --format NAME forces one)"
        }
        Some(_) => "see docs/telemetry.md for the record fields",
        None if ingest.log_lines > 0 => {
            "only ordinary log lines: the trainer prints no JSON telemetry records (docs/trainer.md)"
        }
        None if ingest.records_parsed > 0 => {
            "every record was dropped as a duplicate, too late or out of order (explain.jsonl)"
        }
        None => "see docs/telemetry.md for the record fields",
    };
    input_error(
        "no_records",
        format!(
            "no usable telemetry record in {} (format {}; {} lines read, {} skipped as bad{top}, {} log lines): {why}",
            path.display(),
            format_line(format),
            thousands(ingest.lines_read),
            thousands(ingest.skipped_total()),
            thousands(ingest.log_lines)
        ),
    )
}

/// Final baseline values, read from the last analysed window.
#[derive(Default)]
struct RunTotals {
    last: Option<WindowFeatures>,
    first_loss: Option<f64>,
    gpu_util_sum: f64,
    gpu_util_n: u64,
    windows_after_warmup: u64,
    symptomatic_windows: u64,
    loss_divergence_step: Option<u64>,
    loss_non_finite: u64,
}

pub fn run(global: &GlobalArgs, args: &ObserveArgs) -> anyhow::Result<()> {
    let started = Utc::now();
    let mut explain = ExplainLog::open(&args.out)?;
    let result = observe(global, args, started, &mut explain);
    if let Err(e) = &result {
        let kind = e
            .chain()
            .find_map(|c| c.downcast_ref::<InputError>())
            .map_or("internal", |i| i.kind);
        explain.event(
            "observe_error",
            json!({"kind": kind, "error": format!("{e:#}")}),
        )?;
    }
    result
}

fn observe(
    global: &GlobalArgs,
    args: &ObserveArgs,
    started: chrono::DateTime<Utc>,
    explain: &mut ExplainLog,
) -> anyhow::Result<()> {
    let (spec, opts, cfg) = telemetry_inputs(&args.telemetry)?;
    explain.event(
        "observe_start",
        json!({"source": "file", "path": spec.path, "format": spec.format, "window_steps": cfg.window_steps,
               "warmup_steps": cfg.warmup_steps, "out": args.out}),
    )?;
    let src = open_source(&spec)?;
    let (format, compressed) = (src.format, src.compressed);
    // Derived from the input alone (run it again for the same bytes): no per-file fsync.
    let out = OutDir::create(&args.out, started)?
        .without_fsync()
        .keep(global.keep);
    let mut windows_file = out.stream("observe_windows.jsonl")?;
    let thresholds = SymptomThresholds::default();
    let mut tracker = EpisodeTracker::default();
    let mut episodes: Vec<Episode> = Vec::new();
    let mut truncated = 0u64;
    let mut totals = RunTotals::default();
    let mut timeline = StepTimeline::new(crate::report::SPARKLINE_WIDTH);

    let show_progress = std::io::stderr().is_terminal();
    let pass = {
        let mut keep = |eps: Vec<Episode>| {
            for e in eps {
                if episodes.len() < MAX_EPISODES {
                    episodes.push(e);
                } else {
                    truncated += 1;
                }
            }
        };
        let mut on_window = |f: &WindowFeatures| -> anyhow::Result<()> {
            let found = symptoms_of(f, &thresholds);
            // Serialised straight from the structs: a `json!` value here would rebuild every
            // window's features as a map first (a few percent of a large run).
            let line = WindowLine {
                schema_version: WINDOW_SCHEMA,
                features: f,
                symptoms: found
                    .iter()
                    .map(|(symptom, score)| SymptomScore {
                        symptom: *symptom,
                        score: round3(*score),
                    })
                    .collect(),
                window: &f.window,
            };
            let w = windows_file.writer();
            serde_json::to_writer(&mut *w, &line)?;
            w.write_all(b"\n")?;
            keep(tracker.push(f, &found));
            if f.loss_non_finite > 0 {
                totals.loss_non_finite += f.loss_non_finite;
                totals
                    .loss_divergence_step
                    .get_or_insert(f.loss_non_finite_step.unwrap_or(f.window.first_step));
            }
            if totals.first_loss.is_none() {
                totals.first_loss = f.loss_mean;
            }
            if !f.warmup {
                totals.windows_after_warmup += 1;
                if !found.is_empty() {
                    totals.symptomatic_windows += 1;
                }
            }
            if let Some(g) = f.gpu_util_mean {
                totals.gpu_util_sum += g;
                totals.gpu_util_n += 1;
            }
            // A loss-only window has no step time to draw.
            if f.step_time_available {
                timeline.push(f.window.first_step, f.window.last_step, f.step_time_p50_ms);
            }
            totals.last = Some(f.clone());
            Ok(())
        };
        let pass = run_pass(
            src,
            &opts,
            cfg,
            show_progress && global.output == OutputFormat::Text,
            &mut on_window,
        )?;
        keep(tracker.finish());
        pass
    };
    explain.event("observe_source", json!({"path": spec.path, "format": format, "compressed": compressed, "ingest": pass.ingest}))?;

    if pass.ingest.records_emitted == 0 {
        return Err(no_records_error(
            &spec.path,
            &pass.ingest,
            &pass.format_detected,
        ));
    }

    episodes.sort_by_key(|e| (e.first_step, e.symptom));
    let marks = crate::report::episode_marks(&episodes);
    let verdict = verdict(&episodes, &pass, &totals);
    explain.event("observe_summary", json!({"verdict": verdict.state, "incidents": verdict.incidents, "episodes": episodes.len()}))?;

    let windows_path = windows_file.commit()?;
    let finished = Utc::now();
    let mut report = ObserveReport {
        schema_version: "observe.v1",
        tool: json!({"name": "kubectl-modekeeper", "version": env!("CARGO_PKG_VERSION")}),
        started_at: started.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        finished_at: finished.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        duration_ms: (finished - started).num_milliseconds(),
        source: json!({"kind": "file", "path": spec.path, "format": format, "compressed": compressed}),
        format_detected: pass.format_detected.clone(),
        config: json!({"window_steps": pass.config.window_steps, "warmup_steps": pass.config.warmup_steps,
                       "reorder_window": opts.reorder_window, "clock_skew_tolerance_ms": opts.skew_tolerance_ms,
                       "thresholds": thresholds}),
        ingest: pass.ingest.clone(),
        run: json!({"first_step": pass.first_step, "last_step": pass.last_step, "start_ms": pass.start_ms,
                    "end_ms": pass.end_ms, "windows": pass.windows}),
        baseline: baseline_json(&totals),
        verdict,
        episodes,
        episodes_truncated: truncated,
        artifacts: json!({}),
    };
    let summary_md =
        summary_markdown(&report, &pass) + &timeline_markdown(&timeline, &marks, "step time p50");
    let summary_path = out.write_text("summary.md", &summary_md)?;
    let report_name = out.path("observe_latest.json");
    report.artifacts = json!({
        "observe_latest": report_name,
        "observe_windows": windows_path,
        "summary": summary_path,
        "explain": explain.path(),
        "record_raw": spec.record_raw,
    });
    let (stamped, latest) = out.write_report("observe", &report)?;
    explain.event("observe_report", json!({"path": stamped, "latest": latest}))?;
    explain.event("observe_stop", json!({"rc": 0}))?;

    let mut stdout = std::io::stdout().lock();
    match global.output {
        OutputFormat::Json | OutputFormat::Yaml => {
            crate::cli::output::print_structured(&mut stdout, global.output, &report)?;
        }
        OutputFormat::Text => {
            let timeline = timeline_lines(&timeline, &marks, "  ", "step time p50");
            let text = terminal_summary(&report, &pass, &spec.path, &latest, &timeline);
            write!(stdout, "{text}")?
        }
    }
    Ok(())
}

/// The schema of one `observe_windows.jsonl` line (schemas/observe_window.v1.schema.json).
pub const WINDOW_SCHEMA: &str = "observe_window.v1";

/// One line of `observe_windows.jsonl`.
#[derive(Serialize)]
struct WindowLine<'a> {
    schema_version: &'static str,
    features: &'a WindowFeatures,
    symptoms: Vec<SymptomScore>,
    window: &'a crate::signals::WindowRange,
}

#[derive(Serialize)]
struct SymptomScore {
    symptom: crate::signals::Symptom,
    score: f64,
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

fn baseline_json(t: &RunTotals) -> serde_json::Value {
    let last = t.last.as_ref();
    json!({
        "step_time_p50_ms": last.and_then(|f| f.step_time_baseline_ms).map(round3),
        "loss_first_window": t.first_loss.map(round3),
        "loss_last_window": last.and_then(|f| f.loss_mean).map(round3),
        "gpu_util_mean": (t.gpu_util_n > 0).then(|| round3(t.gpu_util_sum / t.gpu_util_n as f64)),
    })
}

fn verdict(episodes: &[Episode], pass: &PassSummary, t: &RunTotals) -> Verdict {
    let incidents = episodes.iter().filter(|e| e.confidence != "low").count() as u64;
    let state = if incidents > 0 {
        "incidents"
    } else if t.windows_after_warmup == 0 {
        "warmup_only"
    } else {
        "steady"
    };
    let mut text = match state {
        "warmup_only" => format!(
            "not enough data: all {} windows fall inside the warm-up (--warmup-steps); nothing to judge yet",
            pass.windows
        ),
        "steady" => format!(
            "steady: no incident in {} windows after warm-up{}",
            thousands(t.windows_after_warmup),
            if episodes.is_empty() {
                String::new()
            } else {
                match episodes.len() {
                    1 => " (1 marginal blip ignored)".to_string(),
                    n => format!(" ({n} marginal blips ignored)"),
                }
            }
        ),
        _ => {
            let kinds = incident_kinds(episodes);
            format!(
                "{incidents} incident{}: {}",
                if incidents == 1 { "" } else { "s" },
                kinds.join(", ")
            )
        }
    };
    if let Some(step) = t.loss_divergence_step {
        text = format!(
            "LOSS DIVERGED at step {} ({} record{} with a NaN/Inf loss): stop or roll back the run; {text}",
            thousands(step),
            t.loss_non_finite,
            if t.loss_non_finite == 1 { "" } else { "s" }
        );
    }
    let mut not_judged = Vec::new();
    if pass.timed_records == 0 {
        not_judged.push("step_time");
        text += "; loss only: no step time, so drift, bursts, stragglers and stalls could not be judged";
    }
    let planned = (pass.planned.total() > 0).then_some(pass.planned);
    if let Some(p) = pass.planned.describe() {
        text += &format!("; {p}");
    }
    Verdict {
        state,
        incidents,
        windows: pass.windows,
        windows_after_warmup: t.windows_after_warmup,
        symptomatic_windows: t.symptomatic_windows,
        text,
        loss_divergence_step: t.loss_divergence_step,
        loss_non_finite_records: t.loss_non_finite,
        not_judged,
        planned_steps: planned,
    }
}

/// Each incident kind once, in the order it first happened (episodes are sorted by step, so the same
/// symptom recurs non-adjacently).
fn incident_kinds(episodes: &[Episode]) -> Vec<&'static str> {
    let mut kinds: Vec<&'static str> = Vec::new();
    for e in episodes.iter().filter(|e| e.confidence != "low") {
        let k = e.symptom.describe();
        if !kinds.contains(&k) {
            kinds.push(k);
        }
    }
    kinds
}

/// What the peak of an episode means, in the units users think in.
fn peak_text(e: &Episode, t: &SymptomThresholds) -> String {
    match e.symptom {
        Symptom::LossDivergence => "the loss became NaN or infinite: training diverged".into(),
        Symptom::Stall => format!(
            "longest step {:.0}× the baseline step",
            e.peak * t.stall_score
        ),
        Symptom::InputStraggler => format!(
            "slowest worker/rank up to {:.1}× its peers' median, or data wait high",
            e.peak * t.straggler_score
        ),
        Symptom::Burst => format!(
            "intermittent slow steps, peak {:.1}× the burst threshold",
            e.peak
        ),
        Symptom::StepTimeDrift => format!(
            "median step time shifted up (change score {:.0})",
            e.peak * t.step_cusum
        ),
        Symptom::LossDrift => format!(
            "loss rising against its baseline (change score {:.0})",
            e.peak * t.loss_cusum
        ),
        Symptom::CommBound => format!(
            "communication up to {:.0}% of each step",
            e.peak * t.comm_share * 100.0
        ),
    }
}

fn episode_line(e: &Episode, run_start: Option<i64>, t: &SymptomThresholds) -> String {
    let when = match (run_start, e.start_ms, e.end_ms) {
        (Some(s0), Some(a), Some(b)) => format!(" ({} → {})", offset_ms(a - s0), offset_ms(b - s0)),
        _ => String::new(),
    };
    format!(
        "steps {}–{}{when}  {}  [{} confidence, {} window{}] — {}",
        thousands(e.first_step),
        thousands(e.last_step),
        e.symptom.describe(),
        e.confidence,
        e.windows,
        if e.windows == 1 { "" } else { "s" },
        peak_text(e, t)
    )
}

/// The format read, how it was decided, the step time's unit, and implausible step times.
fn format_line(f: &FormatDetected) -> String {
    let mut parts = vec![match f.name {
        Some(n) if f.forced => format!("{} (forced)", n.name()),
        Some(n) => match f.first_line {
            Some(l) => format!("{} (detected from line {l})", n.name()),
            None => format!("{} (detected)", n.name()),
        },
        None => "none detected".to_string(),
    }];
    if let Some(u) = &f.step_time_unit {
        parts.push(format!("step time {u}"));
    }
    if let Some(w) = &f.unit_warning {
        parts.push(format!("WARNING {w}"));
    }
    if let Some(s) = &f.switched {
        parts.push(format!(
            "re-checked: {} → {} at line {}",
            s.from.name(),
            s.to.name(),
            s.at_line
        ));
    }
    if f.planned_events > 0 {
        parts.push(format!(
            "{} planned slow steps marked (evaluation/checkpoint/resume)",
            thousands(f.planned_events)
        ));
    }
    if f.ignored_lines > 0 {
        parts.push(format!(
            "{} lines of other formats ignored",
            thousands(f.ignored_lines)
        ));
    }
    if f.implausible_step_times > 0 {
        parts.push(format!(
            "{} implausible step times (under 0.1 ms or over 1 h): check the unit",
            thousands(f.implausible_step_times)
        ));
    }
    parts.join(" · ")
}

fn ingest_line(i: &IngestStats) -> String {
    let mut parts = vec![format!("{} records", thousands(i.records_emitted))];
    if i.skipped_total() > 0 {
        parts.push(format!(
            "{} bad lines skipped",
            thousands(i.skipped_total())
        ));
    }
    for (n, what) in [
        (i.duplicates, "duplicates dropped"),
        (i.reordered, "reordered"),
        (i.late_dropped, "too late, dropped"),
        (i.clock_skew, "clock-skewed"),
        (i.log_lines, "log lines ignored"),
    ] {
        if n > 0 {
            parts.push(format!("{} {what}", thousands(n)));
        }
    }
    parts.join(" · ")
}

/// Episodes the terminal summary lists: a long input can have hundreds.
const MAX_TERMINAL_EPISODES: usize = 10;

/// The episodes worth a terminal line (not the low-confidence blips), the strongest
/// [`MAX_TERMINAL_EPISODES`] of them in step order, and how many were left out.
fn terminal_episodes(episodes: &[Episode]) -> (Vec<&Episode>, u64) {
    let mut worth: Vec<&Episode> = episodes.iter().filter(|e| e.confidence != "low").collect();
    let left_out = worth.len().saturating_sub(MAX_TERMINAL_EPISODES) as u64;
    if left_out > 0 {
        worth.sort_by(|a, b| {
            (b.confidence == "high", b.windows)
                .cmp(&(a.confidence == "high", a.windows))
                .then(b.peak.total_cmp(&a.peak))
        });
        worth.truncate(MAX_TERMINAL_EPISODES);
        worth.sort_by_key(|e| (e.first_step, e.symptom));
    }
    (worth, left_out)
}

fn terminal_summary(
    r: &ObserveReport,
    pass: &PassSummary,
    path: &Path,
    latest: &Path,
    timeline: &[String],
) -> String {
    let t = SymptomThresholds::default();
    let mut s = String::new();
    let span = match (pass.start_ms, pass.end_ms) {
        (Some(a), Some(b)) => format!(" over {}", duration_ms(b - a)),
        _ => String::new(),
    };
    s += &format!("observed {}\n", path.display());
    s += &format!("  format    {}\n", format_line(&r.format_detected));
    s += &format!("  input     {}\n", ingest_line(&r.ingest));
    s += &format!(
        "  steps     {} → {}{span} · {} windows of {} steps\n",
        thousands(pass.first_step.unwrap_or(0)),
        thousands(pass.last_step.unwrap_or(0)),
        thousands(pass.windows),
        r.config["window_steps"]
    );
    let b = &r.baseline;
    let mut base = vec![];
    if let Some(x) = b["step_time_p50_ms"].as_f64() {
        base.push(format!("step time p50 {x:.1} ms"));
    }
    if let (Some(a), Some(z)) = (
        b["loss_first_window"].as_f64(),
        b["loss_last_window"].as_f64(),
    ) {
        base.push(format!("loss {a:.3} → {z:.3}"));
    }
    if let Some(g) = b["gpu_util_mean"].as_f64() {
        base.push(format!("GPU util {g:.0}%"));
    }
    if !base.is_empty() {
        s += &format!("  baseline  {}\n", base.join(" · "));
    }
    for l in timeline {
        s += &format!("{l}\n");
    }
    s += &format!("  verdict   {}\n", r.verdict.text);
    let (shown, more) = terminal_episodes(&r.episodes);
    for e in shown {
        s += &format!("    {}\n", episode_line(e, pass.start_ms, &t));
    }
    let more = more + r.episodes_truncated;
    if more > 0 {
        s += &format!(
            "    … and {} more episode{} (all of them in summary.md and the report)\n",
            thousands(more),
            if more == 1 { "" } else { "s" }
        );
    }
    s += &format!("  report    {}\n", latest.display());
    s
}

fn summary_markdown(r: &ObserveReport, pass: &PassSummary) -> String {
    let t = SymptomThresholds::default();
    let mut s = String::from("# ModeKeeper observe summary\n\n");
    s += &format!(
        "- Source: `{}` ({})\n",
        r.source["path"].as_str().unwrap_or("-"),
        r.source["format"].as_str().unwrap_or("?")
    );
    s += &format!("- Format: {}\n", format_line(&r.format_detected));
    s += &format!("- Input: {}\n", ingest_line(&r.ingest));
    s += &format!(
        "- Steps: {} → {} in {} windows of {} steps (warm-up: first {} steps)\n",
        pass.first_step.unwrap_or(0),
        pass.last_step.unwrap_or(0),
        pass.windows,
        r.config["window_steps"],
        r.config["warmup_steps"]
    );
    s += &format!("- Verdict: **{}**\n\n", r.verdict.text);
    if !r.episodes.is_empty() {
        s += "## Episodes\n\n| steps | time | symptom | confidence | windows | detail |\n|---|---|---|---|---|---|\n";
        for e in &r.episodes {
            let when = match (pass.start_ms, e.start_ms, e.end_ms) {
                (Some(s0), Some(a), Some(b)) => {
                    format!("{} → {}", offset_ms(a - s0), offset_ms(b - s0))
                }
                _ => "-".into(),
            };
            s += &format!(
                "| {}–{} | {when} | {} | {} | {} | {} |\n",
                e.first_step,
                e.last_step,
                e.symptom.describe(),
                e.confidence,
                e.windows,
                peak_text(e, &t)
            );
        }
        s += "\n";
    }
    let skipped: Vec<String> = crate::telemetry::SkipReason::ALL
        .iter()
        .filter(|x| r.ingest.skipped(**x) > 0)
        .map(|x| format!("{} {}", r.ingest.skipped(*x), x.as_str()))
        .collect();
    if !skipped.is_empty() {
        s += &format!("Skipped lines by reason: {}.\n", skipped.join(", "));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ep(symptom: Symptom, first_step: u64, windows: u64, confidence: &'static str) -> Episode {
        Episode {
            symptom,
            first_step,
            last_step: first_step + 99,
            start_ms: None,
            end_ms: None,
            windows,
            peak: 1.5,
            confidence,
        }
    }

    #[test]
    fn the_verdict_names_each_incident_kind_once() {
        let eps = [
            ep(Symptom::Burst, 0, 2, "high"),
            ep(Symptom::InputStraggler, 100, 2, "high"),
            ep(Symptom::Burst, 200, 2, "medium"),
            ep(Symptom::Stall, 300, 1, "low"),
        ];
        assert_eq!(
            incident_kinds(&eps),
            [
                Symptom::Burst.describe(),
                Symptom::InputStraggler.describe()
            ]
        );
    }

    #[test]
    fn the_terminal_lists_a_bounded_number_of_the_strongest_episodes_in_order() {
        let mut eps: Vec<Episode> = (0..300)
            .map(|i| ep(Symptom::Burst, i * 100, 1, "medium"))
            .collect();
        eps[250] = ep(Symptom::Stall, 25_000, 4, "high");
        eps[7] = ep(Symptom::InputStraggler, 700, 3, "high");
        eps.push(ep(Symptom::Burst, 99_999, 1, "low"));
        let (shown, more) = terminal_episodes(&eps);
        assert_eq!(shown.len(), MAX_TERMINAL_EPISODES);
        assert_eq!(more, 300 - MAX_TERMINAL_EPISODES as u64);
        assert!(shown.windows(2).all(|w| w[0].first_step <= w[1].first_step));
        assert!(shown.iter().any(|e| e.symptom == Symptom::Stall));
        assert!(shown.iter().any(|e| e.symptom == Symptom::InputStraggler));
        let few = &eps[..3];
        let (shown, more) = terminal_episodes(few);
        assert_eq!((shown.len(), more), (3, 0));
    }
}
