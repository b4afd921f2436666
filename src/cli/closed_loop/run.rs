//! Drives one `closed-loop run`: resolve inputs, load the policies, one pass over the telemetry with
//! the loop deciding per window (trace lines streamed to a temporary file), then the plan, the review
//! script, the bundle, the report and the summary, each written atomically. Explain events:
//! `closed_loop_start`, `closed_loop_observe_source`, `closed_loop_decisions`,
//! `closed_loop_plan_written`, `closed_loop_report`, (`closed_loop_replay`), `closed_loop_stop`, or
//! `closed_loop_error` then `closed_loop_stop`.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::RunArgs;
use super::common::{load_policies, stamp, with_explain};
use super::inputs::{self, Inputs, hex};
use super::terminal::terminal_summary;
use crate::artifacts::{ExplainLog, OutDir};
use crate::cli::{GlobalArgs, OutputFormat};
use crate::closed_loop::live::{Session, SessionEvent, SessionSetup, WrittenPlan, write_plan};
use crate::closed_loop::{
    BUNDLE_FILE, BUNDLE_SCHEMA, BundleArtifact, BundlePassport, BundlePolicy, ClosedLoopReport,
    EngineInfo, FileCheck, LoopOutcome, PassportInfo, PolicyBundle, REPORT_NAME, REPORT_SCHEMA,
    ReplayCheck, ReportPolicy, RunSpan, SUMMARY_FILE, SourceInfo, TRACE_FILE, TRACE_SCHEMA,
    TargetInfo, TraceInfo, WASMTIME_VERSION, knobs_text, summary_markdown,
};
use crate::pipeline::{PassSummary, run_pass};
use crate::plan::{PLAN_FILE, Plan};
use crate::policy::{self, PolicyCatalog, PolicyHost};
use crate::signals::WindowFeatures;
use crate::telemetry::open_source;

/// `closed-loop run` (and `plan`, its short form).
pub fn run_once(global: &GlobalArgs, args: &RunArgs) -> anyhow::Result<()> {
    let started = Utc::now();
    with_explain(&args.out, "closed_loop", |explain| {
        execute(global, args, started, explain)
    })
}

/// Digests of the decision trace being written (and the replayed run's, to compare).
struct TraceDigest<'a> {
    whole: Sha256,
    lines: u64,
    baseline: Option<&'a [[u8; 32]]>,
    first_difference: Option<u64>,
}

impl TraceDigest<'_> {
    fn write(&mut self, w: &mut dyn Write, line: &str) -> anyhow::Result<()> {
        w.write_all(line.as_bytes())?;
        self.whole.update(line.as_bytes());
        self.lines += 1;
        if let Some(old) = self.baseline
            && self.first_difference.is_none()
        {
            let same = old
                .get(self.lines as usize - 1)
                .is_some_and(|d| *d == <[u8; 32]>::from(Sha256::digest(line.as_bytes())));
            if !same {
                self.first_difference = Some(self.lines);
            }
        }
        Ok(())
    }
}

fn execute(
    global: &GlobalArgs,
    args: &RunArgs,
    started: DateTime<Utc>,
    explain: &mut ExplainLog,
) -> anyhow::Result<()> {
    let inp = inputs::resolve(global, args)?;
    explain.event(
        "closed_loop_start",
        json!({
            "source": "file", "path": inp.spec.path, "format": inp.spec.format,
            "passport": {"name": inp.passport.name, "version": inp.passport.version, "source": inp.passport_source},
            "policy": inp.base_policy, "enable_advanced": inp.advanced,
            "knobs": knobs_text(&inp.knobs), "knobs_source": inp.knob_origin,
            "target": {"namespace": inp.target.namespace(), "name": inp.target.name(), "kind": inp.target.kind().as_str()},
            "replay": inp.replay.as_ref().map(|r| &r.dir), "knobs_cluster": inp.cluster,
            "out": args.out,
        }),
    )?;
    let (host, mut set, catalog) = load_policies(&args.dirs, &inp.base_policy, &inp.advanced)?;
    let mut warnings = inp.warnings.clone();
    warnings.extend(inputs::check_policies(&inp.passport, &set)?);
    let src = open_source(&inp.spec)?;
    let (format, compressed) = (src.format, src.compressed);

    // Everything the user could get wrong is checked; from here on artifacts are written.
    // A plan-only run can be replayed byte for byte: its artifacts skip the per-file fsync.
    let out = OutDir::create(&args.out, started)?.keep(global.keep);
    let out = if args.apply { out } else { out.without_fsync() };
    let mut trace_file = out.stream(TRACE_FILE)?;
    let mut trace = TraceDigest {
        whole: Sha256::new(),
        lines: 0,
        baseline: inp
            .replay
            .as_ref()
            .and_then(|r| r.trace.as_ref())
            .map(|(_, l)| l.as_slice()),
        first_difference: None,
    };
    // The pass windows the file itself (adapting the window to the trace); the session decides.
    let mut session = Session::new(&SessionSetup {
        passport: inp.passport.clone(),
        knobs: inp.knobs.clone(),
        features: inp.cfg,
        format,
        ingest: inp.opts.clone(),
        config: Value::Null,
    });
    let show_progress = std::io::stderr().is_terminal() && global.output == OutputFormat::Text;
    let pass = {
        let mut on_window = |f: &WindowFeatures| -> anyhow::Result<()> {
            // Alerts and verdicts are in the report at the end.
            session.decide_window(f, &mut set, &mut |ev| match ev {
                SessionEvent::Window { line, .. } => trace.write(trace_file.writer(), line),
                SessionEvent::Alert(_) | SessionEvent::Verdict(_) => Ok(()),
            })
        };
        run_pass(src, &inp.opts, inp.cfg, show_progress, &mut on_window)?
    };
    explain.event(
        "closed_loop_observe_source",
        json!({"source": "file", "path": inp.spec.path, "format": format, "compressed": compressed,
               "ingest": pass.ingest, "windows": pass.windows}),
    )?;
    if pass.ingest.records_emitted == 0 {
        return Err(crate::cli::observe::no_records_error(
            &inp.spec.path,
            &pass.ingest,
            &pass.format_detected,
        ));
    }
    if let Some(old) = trace.baseline
        && trace.first_difference.is_none()
        && old.len() as u64 != trace.lines
    {
        trace.first_difference = Some(trace.lines.min(old.len() as u64) + 1);
    }
    let outcome = session.finish();
    let trace_sha = format!("sha256:{}", hex(&trace.whole.finalize()));
    let trace_lines = trace.lines;
    let trace_first_difference = trace.first_difference;
    let trace_path = trace_file.commit()?;
    explain.event(
        "closed_loop_decisions",
        json!({
            "windows": outcome.windows,
            "chords": outcome.timeline.primary_windows,
            "proposed": outcome.proposed_total,
            "blocked": outcome.blocked_total,
            "blocked_by_reason": outcome.blocked_by_reason,
            "policy_failures": outcome.policy_failures_total,
            "decision_trace": {"path": trace_path, "lines": trace_lines, "sha256": trace_sha},
        }),
    )?;

    let WrittenPlan {
        plan,
        document: plan_doc,
        path: plan_path,
        script,
    } = write_plan(
        &out,
        inp.plan_spec(),
        &outcome.changes_as_accepted(),
        PLAN_FILE,
        true,
    )?;
    let script_path = script.expect("the script was asked for");
    let plan_digest = plan.digest();
    explain.event(
        "closed_loop_plan_written",
        json!({"path": plan_path, "items": plan.items().len(), "plan_digest": plan_digest,
               "kubectl_script": script_path,
               "changes": outcome.changes}),
    )?;
    // `--apply`: verify the plan, then the gated apply (src/apply); without it the run never
    // touches a cluster.
    let proposed_knobs: Vec<&str> = outcome.proposed.iter().map(|p| p.knob.as_str()).collect();
    let one_shot = if args.apply {
        let opts = crate::apply::OneShotOptions {
            connect: crate::k8s::ConnectOptions::from_flags(
                global.kubeconfig.as_deref(),
                global.context.as_deref(),
                global.namespace.as_deref(),
                global.request_timeout,
            ),
            license: args.license.license.clone(),
            keyring: args.license.keyring.clone(),
            advanced_chords: !inp.advanced.is_empty(),
            passport: inp.passport.clone(),
            passport_source: inp.passport_source.clone(),
        };
        Some(crate::apply::closed_loop_apply(
            &plan,
            &plan_path,
            &proposed_knobs,
            &opts,
            &out,
            explain,
        )?)
    } else {
        None
    };

    let passport_sha = inp.passport.digest();
    let policies: Vec<&policy::Policy> = set.policies().collect();
    let bundle = bundle(
        &inp,
        &host,
        &catalog,
        &policies,
        &passport_sha,
        BundleArtifact {
            path: trace_path.clone(),
            sha256: trace_sha.clone(),
        },
        BundleArtifact {
            path: plan_path.clone(),
            sha256: plan_digest.clone(),
        },
    );
    let bundle_path = out.write_json(BUNDLE_FILE, &bundle)?;

    let replay = inp.replay.as_ref().map(|r| ReplayCheck {
        from: r.dir.clone(),
        identical: false,
        decision_trace: FileCheck {
            identical: r.trace.as_ref().is_some_and(|(sha, _)| *sha == trace_sha),
            sha256_before: r.trace.as_ref().map(|(sha, _)| sha.clone()),
            sha256_after: trace_sha.clone(),
            first_difference_line: trace_first_difference,
        },
        plan: plan_check(r.plan.as_deref(), plan_doc.as_bytes()),
    });
    let replay = replay.map(|mut r| {
        r.identical = r.decision_trace.identical && r.plan.identical;
        r
    });

    let finished = Utc::now();
    let mut report = ClosedLoopReport {
        schema_version: REPORT_SCHEMA,
        tool: json!({"name": "kubectl-modekeeper", "version": env!("CARGO_PKG_VERSION")}),
        started_at: stamp(started),
        finished_at: stamp(finished),
        duration_ms: (finished - started).num_milliseconds(),
        mode: if args.apply { "apply" } else { "plan_only" },
        source: SourceInfo {
            kind: "file".into(),
            path: inp.spec.path.clone(),
            absolute_path: absolute(&inp.spec.path),
            format: serde_json::to_value(format)?
                .as_str()
                .unwrap_or("auto")
                .to_string(),
            compressed,
        },
        config: inp.config(),
        ingest: pass.ingest.clone(),
        run: run_span(&pass),
        passport: PassportInfo {
            name: inp.passport.name.clone(),
            version: inp.passport.version.clone(),
            source: inp.passport_source.clone(),
            sha256: passport_sha,
        },
        policies: policies
            .iter()
            .map(|p| ReportPolicy {
                id: p.metadata().id.clone(),
                version: p.metadata().version.clone(),
                digest: p.reference().digest.clone(),
                advanced: p.metadata().advanced,
            })
            .collect(),
        target: TargetInfo {
            namespace: inp.target.namespace().to_string(),
            name: inp.target.name().to_string(),
            kind: inp.target.kind().as_str().to_string(),
            defaulted: inp.target_defaulted,
            knobs_configmap: inp.knobs_configmap.clone(),
        },
        knobs_source: inp.knob_origin,
        knobs_cluster: inp.cluster.as_ref().map(serde_json::to_value).transpose()?,
        knobs_before: outcome.knobs_before.clone(),
        knobs_after: outcome.knobs_after.clone(),
        changes: outcome.changes.clone(),
        proposed: outcome.proposed.clone(),
        proposed_total: outcome.proposed_total,
        blocked: outcome.blocked.clone(),
        blocked_total: outcome.blocked_total,
        blocked_by_reason: outcome.blocked_by_reason.clone(),
        policy_failures: outcome.policy_failures.clone(),
        policy_failures_total: outcome.policy_failures_total,
        alerts: outcome.alerts.clone(),
        effects: outcome.effects.clone(),
        effects_total: outcome.effects_total,
        chords: outcome.timeline.clone(),
        plan_path: plan_path.clone(),
        plan_digest: plan_digest.clone(),
        plan_items: plan.items().len(),
        kubectl_script_path: script_path.clone(),
        decision_trace: TraceInfo {
            path: trace_path.clone(),
            schema_version: TRACE_SCHEMA,
            lines: trace_lines,
            sha256: trace_sha,
        },
        warnings,
        replay,
        apply: match serde_json::to_value(one_shot.as_ref().map_or_else(
            || crate::apply::ClosedLoopApply::not_requested(&proposed_knobs),
            |o| o.fields.clone(),
        ))? {
            Value::Object(m) => m,
            _ => anyhow::bail!("the apply fields must serialize as an object"),
        },
        artifacts: json!({}),
    };
    let summary_path = out.write_text(SUMMARY_FILE, &summary_markdown(&report))?;
    report.artifacts = json!({
        "closed_loop_latest": out.path(&format!("{REPORT_NAME}_latest.json")),
        "decision_trace": trace_path,
        "k8s_plan": plan_path,
        "kubectl_script": script_path,
        "policy_bundle": bundle_path,
        "summary": summary_path,
        "explain": explain.path(),
        "record_raw": inp.spec.record_raw,
    });
    let (stamped, latest) = out.write_report(REPORT_NAME, &report)?;
    explain.event(
        "closed_loop_report",
        json!({"path": stamped, "latest": latest}),
    )?;
    if let Some(r) = &report.replay {
        explain.event("closed_loop_replay", serde_json::to_value(r)?)?;
    }

    print(global, &report, &outcome, &plan, &latest)?;
    if let Some(o) = one_shot {
        o.into_result()?;
    }
    if let Some(r) = &report.replay
        && !r.identical
    {
        let what = match (r.decision_trace.identical, r.plan.identical) {
            (false, false) => "the decision trace and the plan differ",
            (false, true) => "the decision trace differs",
            _ => "the plan differs",
        };
        let at = r
            .decision_trace
            .first_difference_line
            .map(|l| format!(" (first at trace line {l})"))
            .unwrap_or_default();
        anyhow::bail!(
            "replay of {} diverged: {what}{at}; see {}",
            r.from.display(),
            latest.display()
        );
    }
    Ok(())
}

fn print(
    global: &GlobalArgs,
    report: &ClosedLoopReport,
    outcome: &LoopOutcome,
    plan: &Plan,
    latest: &Path,
) -> anyhow::Result<()> {
    // One write, not one per line (stdout is line-buffered).
    let mut stdout = std::io::BufWriter::with_capacity(64 * 1024, std::io::stdout().lock());
    match global.output {
        OutputFormat::Json | OutputFormat::Yaml => {
            crate::cli::output::print_structured(&mut stdout, global.output, report)?;
        }
        OutputFormat::Text => write!(
            stdout,
            "{}",
            terminal_summary(report, outcome, plan, latest)
        )?,
    }
    stdout.flush()?;
    Ok(())
}

fn bundle(
    inp: &Inputs,
    host: &PolicyHost,
    catalog: &PolicyCatalog,
    policies: &[&policy::Policy],
    passport_sha: &str,
    trace: BundleArtifact,
    plan: BundleArtifact,
) -> PolicyBundle {
    let mut wit_versions: Vec<String> = Vec::new();
    for p in policies {
        if !wit_versions.contains(&p.metadata().wit_version) {
            wit_versions.push(p.metadata().wit_version.clone());
        }
    }
    let limits = host.limits();
    PolicyBundle {
        schema_version: BUNDLE_SCHEMA.into(),
        tool: json!({"name": "kubectl-modekeeper", "version": env!("CARGO_PKG_VERSION")}),
        wit_versions,
        engine: EngineInfo {
            name: "wasmtime".into(),
            version: WASMTIME_VERSION.into(),
            fuel_per_window: limits.fuel,
            memory_bytes: limits.memory_bytes as u64,
            deadline_ms: limits.deadline.as_millis() as u64,
        },
        policies: policies
            .iter()
            .map(|p| BundlePolicy {
                id: p.metadata().id.clone(),
                version: p.metadata().version.clone(),
                digest: p.reference().digest.clone(),
                wit_version: p.metadata().wit_version.clone(),
                advanced: p.metadata().advanced,
                origin: catalog
                    .sources
                    .iter()
                    .find(|s| p.reference().digest.ends_with(&s.sha256))
                    .map_or_else(|| "file".into(), |s| s.origin.describe()),
            })
            .collect(),
        passport: BundlePassport {
            name: inp.passport.name.clone(),
            version: inp.passport.version.clone(),
            source: inp.passport_source.clone(),
            sha256: passport_sha.to_string(),
            document: inp.passport.clone(),
        },
        decision_trace: trace,
        plan,
    }
}

fn plan_check(old: Option<&[u8]>, new: &[u8]) -> FileCheck {
    let sha = |b: &[u8]| format!("sha256:{}", hex(&Sha256::digest(b)));
    let first_difference_line = old.filter(|o| *o != new).map(|o| {
        let (a, b) = (
            String::from_utf8_lossy(o).into_owned(),
            String::from_utf8_lossy(new).into_owned(),
        );
        let mut la = a.lines();
        let mut lb = b.lines();
        let mut n = 1u64;
        loop {
            match (la.next(), lb.next()) {
                (Some(x), Some(y)) if x == y => n += 1,
                _ => break n,
            }
        }
    });
    FileCheck {
        identical: old == Some(new),
        sha256_before: old.map(sha),
        sha256_after: sha(new),
        first_difference_line,
    }
}

fn run_span(p: &PassSummary) -> RunSpan {
    RunSpan {
        first_step: p.first_step,
        last_step: p.last_step,
        start_ms: p.start_ms,
        end_ms: p.end_ms,
        windows: p.windows,
    }
}

fn absolute(p: &Path) -> Option<PathBuf> {
    if p.as_os_str() == "-" {
        return None;
    }
    std::fs::canonicalize(p).ok()
}
