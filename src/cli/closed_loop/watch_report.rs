//! What `closed-loop watch` writes for people: `watch_latest.json` (rewritten while it runs, with a
//! timestamped twin at the end), `watch_summary.md`, and at the end the plan of the net change with
//! its review script.

use std::path::PathBuf;

use chrono::{DateTime, Utc};
use serde_json::{Value, json};

use super::common::stamp;
use super::watch::Ctx;
use crate::closed_loop::TRACE_FILE;
use crate::closed_loop::live::{STATE_FILE, Session, write_plan};
use crate::plan::PLAN_FILE;
use crate::telemetry::live::LiveSource;

pub const WATCH_REPORT: &str = "watch";
pub const WATCH_SUMMARY: &str = "watch_summary.md";
pub const WATCH_SCHEMA: &str = "watch.v1";

pub(super) fn stamp_ms(ms: i64) -> String {
    DateTime::<Utc>::from_timestamp_millis(ms).map_or_else(|| ms.to_string(), stamp)
}

pub(super) fn write_latest(
    ctx: &Ctx<'_>,
    session: &Session,
    source: &dyn LiveSource,
    source_events: u64,
    stop_reason: Option<&str>,
) -> anyhow::Result<(Value, PathBuf)> {
    let totals = session.saved_totals();
    let now = Utc::now();
    let st = session.closed_loop().save();
    let out = ctx.out;
    let latest = out.path(&format!("{WATCH_REPORT}_latest.json"));
    let summary_path = out.path(WATCH_SUMMARY);
    let report = json!({
        "schema_version": WATCH_SCHEMA,
        "tool": {"name": "kubectl-modekeeper", "version": env!("CARGO_PKG_VERSION")},
        "started_at": stamp(ctx.started),
        "updated_at": stamp(now),
        "finished_at": stop_reason.map(|_| stamp(now)),
        "duration_s": (now - ctx.started).num_seconds(),
        "running": stop_reason.is_none(),
        "stop_reason": stop_reason,
        "mode": if ctx.args.apply { "apply" } else { "plan_only" },
        "max_iterations": ctx.args.max_iterations,
        "duration_limit_ms": ctx.args.duration,
        "iterations_done": session.iterations(),
        "iterations_total": session.totals().iterations_done,
        "windows_total": st.windows,
        "resumed": session.resumed(),
        "restarts": totals.restarts,
        "regime": session.last_chord(),
        "active_chords": session.last_event().map(|e| e.active_chords.clone()),
        "last_window": session.last_event().map(|e| json!({"index": session.last_index(), "window": e.window})),
        "last_decision": st.proposed.last(),
        "next_change_allowed_at": session.next_change_allowed_ms().map(stamp_ms),
        "proposed_total": st.proposed_total,
        "blocked_total": st.blocked_total,
        "blocked_by_reason": st.blocked_by_reason,
        "policy_failures_total": st.failures_total,
        "effects": st.effects,
        "effects_total": st.effects_total,
        "applied_total": totals.applied_total,
        "apply_attempted_total": totals.apply_attempted_total,
        "apply_ok_total": totals.apply_ok_total,
        "apply_failed_total": totals.apply_failed_total,
        "apply_blocked_total": totals.apply_blocked_total,
        "verify_failed_total": totals.verify_failed_total,
        "last_apply": session.last_apply(),
        "knobs_before": st.knobs_before,
        "knobs_current": st.knobs,
        "knobs_last_applied": session.last_applied(),
        "source": {"describe": ctx.source_describe, "cursor": source.cursor(), "events": source_events},
        "config": ctx.config,
        "observe_ingest": session.ingest_stats(),
        "chords": st.timeline,
        "decision_trace": {"path": out.path(TRACE_FILE), "lines": session.trace_len().1, "bytes": session.trace_len().0},
        "warnings": ctx.warnings,
        "artifact_paths": {
            "watch_latest_path": latest,
            "watch_summary_path": summary_path,
            "state_path": out.path(STATE_FILE),
            "decision_trace_path": out.path(TRACE_FILE),
            "k8s_plan_path": stop_reason.map(|_| out.path(PLAN_FILE)),
            "explain_path": out.path("explain.jsonl"),
        },
    });
    let path = match stop_reason {
        Some(_) => out.write_report(WATCH_REPORT, &report)?.1,
        None => out.write_json(&format!("{WATCH_REPORT}_latest.json"), &report)?,
    };
    out.write_text(WATCH_SUMMARY, &summary(&report))?;
    Ok((report, path))
}

fn summary(r: &Value) -> String {
    let mut s = String::from("# closed-loop watch\n\n");
    let line = |s: &mut String, k: &str, v: &Value| {
        let v = match v {
            Value::Null => "n/a".to_string(),
            Value::String(x) => x.clone(),
            other => other.to_string(),
        };
        s.push_str(&format!("- {k}: {v}\n"));
    };
    for k in [
        "started_at",
        "updated_at",
        "finished_at",
        "running",
        "stop_reason",
        "mode",
        "regime",
        "next_change_allowed_at",
        "iterations_done",
        "iterations_total",
        "windows_total",
        "restarts",
        "proposed_total",
        "blocked_total",
        "applied_total",
        "apply_attempted_total",
        "apply_ok_total",
        "apply_failed_total",
        "apply_blocked_total",
        "verify_failed_total",
    ] {
        line(&mut s, k, &r[k]);
    }
    s.push_str("\n## Knobs\n\n| knob | before | now | last applied |\n|---|---|---|---|\n");
    if let Some(now) = r["knobs_current"].as_object() {
        for (k, v) in now {
            s.push_str(&format!(
                "| {k} | {} | {v} | {} |\n",
                r["knobs_before"][k],
                r["knobs_last_applied"]
                    .get(k)
                    .map_or("n/a".to_string(), Value::to_string)
            ));
        }
    }
    if let Some(d) = r.get("last_decision").filter(|d| !d.is_null()) {
        s.push_str(&format!(
            "\nLast decision: {} {} → {} ({}, window {}): {}\n",
            d["knob"],
            d["from"],
            d["to"],
            d["chord"].as_str().unwrap_or(""),
            d["window"]["index"],
            d["reason"].as_str().unwrap_or("")
        ));
    }
    if let Some(a) = r.get("last_apply").filter(|a| !a.is_null()) {
        let what = if a["rollback"] == true {
            "rollback"
        } else {
            "decision"
        };
        let outcome = a["outcome"].as_str().unwrap_or("");
        let told = match outcome {
            "applied" => "applied".to_string(),
            "no_changes" => "nothing to apply (the cluster had these values)".to_string(),
            // Its change never reached the cluster (or may not have): not judged either.
            other => format!("not applied ({other}); its effect is not judged"),
        };
        s.push_str(&format!(
            "\nLast apply: the {what} at window {}: {told}\n",
            a["decision_window"]
        ));
    }
    s.push_str("\n## Artifacts\n\n");
    if let Some(a) = r["artifact_paths"].as_object() {
        for (k, v) in a {
            line(&mut s, k, v);
        }
    }
    s
}

/// At the end: the plan of the net change since the watch first started (what `closed-loop run`
/// over the same telemetry would write), with its review script.
pub(super) fn final_plan(ctx: &Ctx<'_>, session: &Session) -> anyhow::Result<Value> {
    let w = write_plan(
        ctx.out,
        ctx.inp.plan_spec(),
        &session.net_changes(),
        PLAN_FILE,
        true,
    )?;
    Ok(json!({"path": w.path, "items": w.plan.items().len(), "plan_digest": w.plan.digest()}))
}
