//! `observe`: one pass over a telemetry source; writes the observe report, per-window features,
//! a Markdown summary and explain events; prints what happened, when, and how sure we are.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};

use chrono::Utc;
use clap::Args;
use serde::Serialize;
use serde_json::json;

use super::human::{duration_ms, offset_ms, thousands};
use super::{GlobalArgs, OutputFormat, SourceKind, TelemetryArgs};
use crate::artifacts::{ExplainLog, OutDir};
use crate::error::{InputError, input_error};
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
}

/// Validates telemetry flags and turns them into a source spec and options.
pub fn telemetry_inputs(
    t: &TelemetryArgs,
) -> anyhow::Result<(SourceSpec, IngestOptions, FeatureConfig)> {
    let path = match (t.source, &t.path) {
        (SourceKind::File, Some(p)) => p.clone(),
        (SourceKind::File, None) => {
            return Err(input_error(
                "bad_flag",
                "--source file needs --path PATH (or --path - for stdin)",
            ));
        }
        (kind, _) => {
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

/// Final baseline values, read from the last analysed window.
#[derive(Default)]
struct RunTotals {
    last: Option<WindowFeatures>,
    first_loss: Option<f64>,
    gpu_util_sum: f64,
    gpu_util_n: u64,
    windows_after_warmup: u64,
    symptomatic_windows: u64,
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
    let out = OutDir::create(&args.out, started)?.without_fsync();
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
            timeline.push(f.window.first_step, f.window.last_step, f.step_time_p50_ms);
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
        return Err(input_error(
            "no_records",
            format!(
                "no usable telemetry record in {} (format {}; {} lines read, {} skipped as bad, {} log lines)",
                spec.path.display(),
                format_line(&pass.format_detected),
                thousands(pass.ingest.lines_read),
                thousands(pass.ingest.skipped_total()),
                thousands(pass.ingest.log_lines)
            ),
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
        config: json!({"window_steps": cfg.window_steps, "warmup_steps": cfg.warmup_steps,
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
        OutputFormat::Json => {
            serde_json::to_writer_pretty(&mut stdout, &report)?;
            writeln!(stdout)?;
        }
        OutputFormat::Text => {
            let timeline = timeline_lines(&timeline, &marks, "  ", "step time p50");
            let text = terminal_summary(&report, &pass, &spec.path, &latest, &timeline);
            write!(stdout, "{text}")?
        }
    }
    Ok(())
}

/// One line of `observe_windows.jsonl`.
#[derive(Serialize)]
struct WindowLine<'a> {
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
    let state = if t.windows_after_warmup == 0 {
        "warmup_only"
    } else if incidents > 0 {
        "incidents"
    } else {
        "steady"
    };
    let text = match state {
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
                format!(" ({} marginal blips ignored)", episodes.len())
            }
        ),
        _ => {
            let mut kinds: Vec<&str> = episodes
                .iter()
                .filter(|e| e.confidence != "low")
                .map(|e| e.symptom.describe())
                .collect();
            kinds.dedup();
            format!(
                "{incidents} incident{}: {}",
                if incidents == 1 { "" } else { "s" },
                kinds.join(", ")
            )
        }
    };
    Verdict {
        state,
        incidents,
        windows: pass.windows,
        windows_after_warmup: t.windows_after_warmup,
        symptomatic_windows: t.symptomatic_windows,
        text,
    }
}

/// What the peak of an episode means, in the units users think in.
fn peak_text(e: &Episode, t: &SymptomThresholds) -> String {
    match e.symptom {
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
    for e in r.episodes.iter().filter(|e| e.confidence != "low") {
        s += &format!("    {}\n", episode_line(e, pass.start_ms, &t));
    }
    if r.episodes_truncated > 0 {
        s += &format!(
            "    … and {} more episodes (see the report)\n",
            r.episodes_truncated
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
