//! `k8s render --plan P --out D`: validates a plan and writes the kubectl review script
//! (`k8s_plan.kubectl.sh`, mode 0755) and the `k8s_render.v1` report. An invalid plan leaves only an
//! explain event behind (exit 2). Never runs the script and never contacts a cluster.

use std::io::Write;
use std::path::PathBuf;

use chrono::{SecondsFormat, Utc};
use clap::Args;
use serde::Serialize;
use serde_json::json;

use super::k8s::{check_plan_namespace, load_plan_file};
use super::{GlobalArgs, OutputFormat};
use crate::artifacts::{ExplainLog, OutDir, make_executable};
use crate::plan::{KUBECTL_SCRIPT, Plan, PlanFormat, Target, render_kubectl_script};

#[derive(Debug, Clone, Args)]
pub struct RenderArgs {
    /// The plan: a JSON array of items, a k8s_plan.v1 envelope, or one item
    #[arg(long, short = 'f', visible_alias = "filename", value_name = "PATH")]
    pub plan: PathBuf,
    /// Directory for the script, the report and explain.jsonl
    #[arg(long, value_name = "DIR", default_value = "report")]
    pub out: PathBuf,
}

#[derive(Debug, Serialize)]
pub struct RenderReport {
    pub schema_version: &'static str,
    pub tool: serde_json::Value,
    pub started_at: String,
    pub finished_at: String,
    pub plan_path: PathBuf,
    pub plan_format: PlanFormat,
    pub plan_digest: String,
    /// Number of plan items.
    pub items: usize,
    /// The items' common namespace, `mixed`, or null for an empty plan.
    pub namespace: Option<String>,
    pub name: Option<String>,
    pub kind: Option<String>,
    pub targets: Vec<RenderedTarget>,
    pub artifacts: serde_json::Value,
}

#[derive(Debug, Serialize)]
pub struct RenderedTarget {
    pub index: usize,
    pub kind: &'static str,
    pub namespace: String,
    pub name: String,
    /// The knobs the item sets (names only; values are in the plan and the script).
    pub knobs: Vec<String>,
}

pub fn run(global: &GlobalArgs, args: &RenderArgs) -> anyhow::Result<()> {
    let started = Utc::now();
    let mut explain = ExplainLog::open(&args.out)?;
    explain.event(
        "k8s_render_start",
        json!({"plan": args.plan, "out": args.out}),
    )?;
    let (plan, format) = match load_plan_file(&args.plan) {
        Ok(p) => p,
        Err(f) => {
            explain.event(
                "k8s_render_error",
                json!({"kind": f.kind, "plan": args.plan, "error": f.message, "index": f.index}),
            )?;
            return Err(f.into_error());
        }
    };
    if let Err(e) = check_plan_namespace(global.namespace.as_deref(), &plan) {
        explain.event(
            "k8s_render_error",
            json!({"kind": "namespace_mismatch", "plan": args.plan, "error": e.to_string()}),
        )?;
        return Err(e);
    }

    let out = OutDir::create(&args.out, started)?.keep(global.keep);
    let script = out.write_text(KUBECTL_SCRIPT, &render_kubectl_script(&plan))?;
    make_executable(&script)?;
    let digest = plan.digest();
    explain.event(
        "k8s_kubectl_plan_written",
        json!({"path": script, "items": plan.items().len(), "plan_digest": digest}),
    )?;

    let finished = Utc::now();
    let report = RenderReport {
        schema_version: "k8s_render.v1",
        tool: json!({"name": "kubectl-modekeeper", "version": env!("CARGO_PKG_VERSION")}),
        started_at: started.to_rfc3339_opts(SecondsFormat::Millis, true),
        finished_at: finished.to_rfc3339_opts(SecondsFormat::Millis, true),
        plan_path: args.plan.clone(),
        plan_format: format,
        plan_digest: digest.clone(),
        items: plan.items().len(),
        namespace: plan.uniform(Target::namespace).map(str::to_string),
        name: plan.uniform(Target::name).map(str::to_string),
        kind: plan.uniform(|t| t.kind().as_str()).map(str::to_string),
        targets: targets(&plan),
        artifacts: json!({"script": script, "report_latest": out.path("k8s_render_latest.json"),
                          "explain": explain.path()}),
    };
    let (stamped, latest) = out.write_report("k8s_render", &report)?;
    explain.event(
        "k8s_render_report",
        json!({"path": stamped, "latest": latest}),
    )?;

    let mut stdout = std::io::stdout().lock();
    match global.output {
        OutputFormat::Json | OutputFormat::Yaml => {
            crate::cli::output::print_structured(&mut stdout, global.output, &report)?;
        }
        OutputFormat::Text => {
            // Names are validated (DNS-1123, snake_case knobs); annotation values are not printed,
            // so nothing from the plan can write control sequences to the terminal.
            writeln!(
                stdout,
                "rendered {} ({} item{})",
                args.plan.display(),
                report.items,
                if report.items == 1 { "" } else { "s" }
            )?;
            for t in &report.targets {
                writeln!(
                    stdout,
                    "  {}/{} -n {}: {}",
                    t.kind.to_lowercase(),
                    t.name,
                    t.namespace,
                    t.knobs.join(", ")
                )?;
            }
            writeln!(stdout, "  digest  {digest}")?;
            writeln!(
                stdout,
                "  script  {} (review it; ModeKeeper never runs it)",
                script.display()
            )?;
            writeln!(stdout, "  report  {}", latest.display())?;
        }
    }
    Ok(())
}

fn targets(plan: &Plan) -> Vec<RenderedTarget> {
    plan.items()
        .iter()
        .enumerate()
        .map(|(index, item)| {
            let t = item.target();
            RenderedTarget {
                index,
                kind: t.kind().as_str(),
                namespace: t.namespace().to_string(),
                name: t.name().to_string(),
                knobs: item
                    .patch()
                    .knobs()
                    .into_keys()
                    .map(str::to_string)
                    .collect(),
            }
        })
        .collect()
}
