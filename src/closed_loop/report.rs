//! The documents a `closed-loop run` leaves behind besides the trace and the plan: the report
//! (`closed_loop.v1`), the policy bundle (`policy_bundle.v1`: exactly which policy components and
//! which passport decided, enough to replay the run) and the Markdown summary. Data and formatting
//! only; the command fills them in and writes them.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize, Serializer};
use serde_json::Value;

use super::knobs::KnobOrigin;
use super::timeline::ChordTimeline;
use super::{BlockedChange, KnobChange, PolicyFailureRecord, ProposedChange};
use crate::passport::{Passport, format_knob_value, serialize_knob_value};
use crate::telemetry::IngestStats;

pub const REPORT_SCHEMA: &str = "closed_loop.v1";
/// `closed_loop_<UTC timestamp>.json` and `closed_loop_latest.json`.
pub const REPORT_NAME: &str = "closed_loop";
pub const BUNDLE_SCHEMA: &str = "policy_bundle.v1";
pub const BUNDLE_FILE: &str = "policy_bundle_latest.json";
pub const SUMMARY_FILE: &str = "summary.md";
/// The wasmtime the policy host is built with (Cargo.toml pins it exactly; a test keeps this in step).
pub const WASMTIME_VERSION: &str = "48.0.8";

fn ser_knob_map<S: Serializer>(m: &BTreeMap<String, f64>, s: S) -> Result<S::Ok, S::Error> {
    struct V(f64);
    impl Serialize for V {
        fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            serialize_knob_value(&self.0, s)
        }
    }
    s.collect_map(m.iter().map(|(k, v)| (k, V(*v))))
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceInfo {
    /// `file` (a file or `-` for stdin).
    pub kind: String,
    /// As given on the command line.
    pub path: PathBuf,
    /// The file's absolute path (what `--replay` reads); null for stdin.
    pub absolute_path: Option<PathBuf>,
    pub format: String,
    pub compressed: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunConfig {
    pub window_steps: u64,
    pub warmup_steps: u64,
    pub reorder_window: u64,
    pub clock_skew_tolerance_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TargetInfo {
    pub namespace: String,
    pub name: String,
    /// `Deployment` or `StatefulSet`.
    pub kind: String,
    /// Whether namespace or name came from the defaults (`default`, deployment `trainer`).
    pub defaulted: bool,
    /// The knobs ConfigMap (hot knobs), when the workload's `modekeeper/knobs-configmap`
    /// annotation names one other than `<name>-modekeeper-knobs` (read with `--knobs-from-cluster`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub knobs_configmap: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PassportInfo {
    pub name: String,
    pub version: String,
    /// `template:<name>` or the file it was read from.
    pub source: String,
    /// `sha256:<hex>` of the passport's canonical JSON.
    pub sha256: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReportPolicy {
    pub id: String,
    pub version: String,
    /// `sha256:<hex>` of the component bytes.
    pub digest: String,
    pub advanced: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RunSpan {
    pub first_step: Option<u64>,
    pub last_step: Option<u64>,
    pub start_ms: Option<i64>,
    pub end_ms: Option<i64>,
    pub windows: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TraceInfo {
    pub path: PathBuf,
    pub schema_version: &'static str,
    pub lines: u64,
    /// `sha256:<hex>` of the file's bytes.
    pub sha256: String,
}

/// One artifact compared with its counterpart from the replayed run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FileCheck {
    pub identical: bool,
    pub sha256_before: Option<String>,
    pub sha256_after: String,
    /// 1-based line of the first difference (none when identical, or the old file is missing).
    pub first_difference_line: Option<u64>,
}

/// `--replay DIR`: the earlier run this one re-derived, and whether the decisions came out the same.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ReplayCheck {
    pub from: PathBuf,
    pub identical: bool,
    pub decision_trace: FileCheck,
    pub plan: FileCheck,
}

/// `closed_loop_latest.json`.
#[derive(Debug, Clone, Serialize)]
pub struct ClosedLoopReport {
    pub schema_version: &'static str,
    pub tool: Value,
    pub started_at: String,
    pub finished_at: String,
    pub duration_ms: i64,
    /// `plan_only` (the run writes a plan and never touches a cluster), or `apply` with `--apply`.
    pub mode: &'static str,
    pub source: SourceInfo,
    pub config: RunConfig,
    pub ingest: IngestStats,
    pub run: RunSpan,
    pub passport: PassportInfo,
    /// In evaluation order (advanced first, the base policy last).
    pub policies: Vec<ReportPolicy>,
    pub target: TargetInfo,
    pub knobs_source: KnobOrigin,
    /// With `knobs_source: cluster`: which cluster (context, server, user, namespace) they came from.
    pub knobs_cluster: Option<Value>,
    #[serde(serialize_with = "ser_knob_map")]
    pub knobs_before: BTreeMap<String, f64>,
    #[serde(serialize_with = "ser_knob_map")]
    pub knobs_after: BTreeMap<String, f64>,
    /// Knobs whose end value differs from the start: what the plan carries.
    pub changes: Vec<KnobChange>,
    /// Changes the envelope accepted, in order (at most 1000; `proposed_total` counts all).
    pub proposed: Vec<ProposedChange>,
    pub proposed_total: u64,
    pub blocked: Vec<BlockedChange>,
    pub blocked_total: u64,
    pub blocked_by_reason: BTreeMap<String, u64>,
    pub policy_failures: Vec<PolicyFailureRecord>,
    pub policy_failures_total: u64,
    /// What needs a human (a diverged or rising loss); absent when nothing does.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub alerts: Vec<super::Alert>,
    /// The verdict on each change (docs/closed-loop.md, effect check; at most 1000).
    pub effects: Vec<super::effect::ChangeEffect>,
    pub effects_total: u64,
    pub chords: ChordTimeline,
    pub plan_path: PathBuf,
    pub plan_digest: String,
    pub plan_items: usize,
    pub kubectl_script_path: PathBuf,
    pub decision_trace: TraceInfo,
    pub warnings: Vec<String>,
    pub replay: Option<ReplayCheck>,
    /// The apply fields (`apply_requested`, `verify_ok`, `apply_attempted`, `apply_ok`,
    /// `apply_blocked_reason`, `apply_decision_summary`, report paths, one `results` entry per
    /// `proposed` change; `crate::apply::ClosedLoopApply`), flattened into the report. A JSON object
    /// here, so this pure module does not depend on the cluster-facing ones.
    #[serde(flatten)]
    pub apply: serde_json::Map<String, Value>,
    pub artifacts: Value,
}

/// What `--replay` needs from an earlier report (every other field is ignored).
#[derive(Debug, Clone, Deserialize)]
pub struct ReplayInputs {
    pub schema_version: String,
    pub source: SourceInfo,
    pub config: RunConfig,
    pub knobs_before: BTreeMap<String, f64>,
    pub target: TargetInfo,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EngineInfo {
    pub name: String,
    pub version: String,
    pub fuel_per_window: u64,
    pub memory_bytes: u64,
    pub deadline_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BundlePolicy {
    pub id: String,
    pub version: String,
    pub digest: String,
    pub wit_version: String,
    pub advanced: bool,
    /// `embedded`, or the file the component was read from.
    pub origin: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BundlePassport {
    pub name: String,
    pub version: String,
    pub source: String,
    pub sha256: String,
    /// The passport itself, as `passport.v1`, so a replay does not depend on the file still existing.
    pub document: Passport,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BundleArtifact {
    pub path: PathBuf,
    pub sha256: String,
}

/// `policy_bundle_latest.json`: which components and which passport decided. No timestamps and no
/// host names: the same inputs give the same bundle.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PolicyBundle {
    pub schema_version: String,
    pub tool: Value,
    /// The `modekeeper:policy` WIT package version each policy was built against, deduplicated.
    pub wit_versions: Vec<String>,
    pub engine: EngineInfo,
    /// In evaluation order (advanced first, the base policy last).
    pub policies: Vec<BundlePolicy>,
    pub passport: BundlePassport,
    pub decision_trace: BundleArtifact,
    pub plan: BundleArtifact,
}

/// Markdown-safe one-line text (table cells): no pipes, no newlines, no control characters.
fn cell(s: &str) -> String {
    s.chars()
        .map(|c| match c {
            '|' => '/',
            c if c.is_control() => ' ',
            c => c,
        })
        .collect()
}

fn range(a: u64, b: u64) -> String {
    if a == b {
        a.to_string()
    } else {
        format!("{a}–{b}")
    }
}

/// `summary.md`.
pub fn summary_markdown(r: &ClosedLoopReport) -> String {
    let mut s = String::from("# ModeKeeper closed-loop run\n\n");
    s += &format!(
        "- Source: `{}` ({}, {} records)\n",
        cell(&r.source.path.display().to_string()),
        r.source.format,
        r.ingest.records_emitted
    );
    s += &format!(
        "- Windows: {} of {} steps (steps {}; warm-up: first {} steps)\n",
        r.run.windows,
        r.config.window_steps,
        match (r.run.first_step, r.run.last_step) {
            (Some(a), Some(b)) => range(a, b),
            _ => "-".into(),
        },
        r.config.warmup_steps
    );
    s += &format!(
        "- Passport: {} {} ({}, `{}`)\n",
        r.passport.name,
        r.passport.version,
        cell(&r.passport.source),
        r.passport.sha256
    );
    let pols: Vec<String> = r
        .policies
        .iter()
        .map(|p| format!("{} {} `{}`", p.id, p.version, p.digest))
        .collect();
    s += &format!("- Policies: {}\n", pols.join(", "));
    for a in &r.alerts {
        s += &format!(
            "- **{}** (steps {})\n",
            cell(&a.line()),
            range(a.first_step, a.last_step)
        );
    }
    s += &format!(
        "- Target: {}/{} in namespace {}{}\n",
        r.target.kind.to_lowercase(),
        r.target.name,
        r.target.namespace,
        if r.target.defaulted {
            " (defaults; pass --deployment/--statefulset and -n)"
        } else {
            ""
        }
    );
    s += &format!(
        "- Plan: `{}` ({} item{}, `{}`); review script `{}`.\n",
        cell(&r.plan_path.display().to_string()),
        r.plan_items,
        if r.plan_items == 1 { "" } else { "s" },
        r.plan_digest,
        cell(&r.kubectl_script_path.display().to_string())
    );
    if let Some(a) = r
        .apply
        .get("apply_decision_summary")
        .and_then(Value::as_str)
    {
        s += &format!("- Apply: {}\n", cell(a));
    }
    for w in &r.warnings {
        s += &format!("- Warning: {}\n", cell(w));
    }
    s += "\n## Chords\n\n| steps | chord | windows |\n|---|---|---|\n";
    for g in &r.chords.segments {
        s += &format!(
            "| {} | {} | {} |\n",
            range(g.first_step, g.last_step),
            cell(&g.chord),
            g.windows
        );
    }
    if r.chords.segments_truncated > 0 {
        s += &format!(
            "\n{} more segments are in the decision trace.\n",
            r.chords.segments_truncated
        );
    }
    s += "\n## Knobs\n\n| knob | before | after |\n|---|---|---|\n";
    for (k, before) in &r.knobs_before {
        let after = r.knobs_after.get(k).copied().unwrap_or(*before);
        s += &format!(
            "| {k} | {} | {}{} |\n",
            format_knob_value(*before),
            format_knob_value(after),
            if after != *before { " (changed)" } else { "" }
        );
    }
    s += &format!("\n## Accepted changes ({})\n\n", r.proposed_total);
    if r.proposed.is_empty() {
        s += "None.\n";
    } else {
        s += "| steps | knob | from | to | chord | reason |\n|---|---|---|---|---|---|\n";
        for p in &r.proposed {
            let limited = match (p.limited_by, p.requested) {
                (Some(l), Some(q)) => format!(
                    " (shortened by {}: asked {})",
                    serde_json::to_value(l)
                        .ok()
                        .and_then(|v| v.as_str().map(str::to_string))
                        .unwrap_or_default(),
                    format_knob_value(q)
                ),
                _ => String::new(),
            };
            s += &format!(
                "| {} | {} | {} | {}{limited} | {} | {} |\n",
                range(p.window.first_step, p.window.last_step),
                p.knob,
                format_knob_value(p.from),
                format_knob_value(p.to),
                cell(&p.chord),
                cell(&p.reason)
            );
        }
    }
    s += &effects_markdown(&r.effects, r.effects_total, &r.proposed);
    s += &format!("\n## Blocked proposals ({})\n\n", r.blocked_total);
    if r.blocked_by_reason.is_empty() {
        s += "None.\n";
    } else {
        s += "| reason | count |\n|---|---|\n";
        for (reason, n) in &r.blocked_by_reason {
            s += &format!("| {} | {n} |\n", cell(reason));
        }
    }
    if r.policy_failures_total > 0 {
        s += &format!(
            "\n## Policy failures ({})\n\n| steps | policy | kind | message |\n|---|---|---|---|\n",
            r.policy_failures_total
        );
        for f in &r.policy_failures {
            s += &format!(
                "| {} | {} | {} | {} |\n",
                range(f.window.first_step, f.window.last_step),
                cell(&f.policy),
                f.kind.as_str(),
                cell(&f.message)
            );
        }
    }
    if let Some(rp) = &r.replay {
        s += &format!(
            "\n## Replay\n\nRe-derived the run in `{}`: decision trace {}, plan {}.\n",
            cell(&rp.from.display().to_string()),
            if rp.decision_trace.identical {
                "identical"
            } else {
                "DIFFERENT"
            },
            if rp.plan.identical {
                "identical"
            } else {
                "DIFFERENT"
            }
        );
    }
    s
}

/// The "Effect of the changes" section: one row per judged change. `proposed` tells a rollback the
/// loop made itself (gates.auto_rollback) from one left for review.
pub fn effects_markdown(
    effects: &[super::effect::ChangeEffect],
    total: u64,
    proposed: &[ProposedChange],
) -> String {
    let mut s = format!("\n## Effect of the changes ({total})\n\n");
    if effects.is_empty() {
        s += "None.\n";
        return s;
    }
    s += "| change at step | knobs | verdict | change | interval | windows before/after | why |\n|---|---|---|---|---|---|---|\n";
    for e in effects {
        let knobs: Vec<String> = e
            .knobs
            .iter()
            .map(|k| {
                format!(
                    "{} {} → {}",
                    k.knob,
                    format_knob_value(k.from),
                    format_knob_value(k.to)
                )
            })
            .collect();
        let (change, interval) = match e.step_time {
            Some(x) => (
                format!("{:+.1} %", x.change_pct),
                format!("[{:+.1}, {:+.1}] %", x.low_pct, x.high_pct),
            ),
            None => ("–".into(), "–".into()),
        };
        let why = if e.rollback.is_empty() {
            e.reason.clone()
        } else {
            let back: Vec<String> = e
                .rollback
                .iter()
                .map(|k| format!("{} → {}", k.knob, format_knob_value(k.to)))
                .collect();
            let by_loop = format!("rollback: {}", e.reason);
            let auto = e.rollback.iter().all(|k| {
                proposed
                    .iter()
                    .any(|p| p.knob == k.knob && p.to == k.to && p.reason == by_loop)
            });
            let how = if auto {
                "rolled back by the loop (gates.auto_rollback)"
            } else {
                "proposed rollback (not applied)"
            };
            format!("{}; {how}: {}", e.reason, back.join(", "))
        };
        s += &format!(
            "| {} | {} | {} | {change} | {interval} | {}/{} | {} |\n",
            e.change_step,
            cell(&knobs.join(", ")),
            e.verdict.as_str(),
            e.before.windows,
            e.after.windows,
            cell(&why)
        );
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wasmtime_version_matches_the_pinned_dependency() {
        let toml = include_str!("../../Cargo.toml");
        let line = toml
            .lines()
            .find(|l| l.trim_start().starts_with("wasmtime ="))
            .expect("Cargo.toml names wasmtime");
        assert!(
            line.contains(&format!("\"={WASMTIME_VERSION}\"")),
            "Cargo.toml pins {line:?}, the bundle reports {WASMTIME_VERSION}"
        );
    }

    #[test]
    fn cells_cannot_break_a_table() {
        assert_eq!(cell("a|b\nc\u{1b}[31m"), "a/b c [31m");
    }
}
