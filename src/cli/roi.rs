//! `roi --in DIR`: the GPU-hours each judged change saved or cost, from the effect verdicts of a
//! `closed-loop run` (closed_loop_latest.json) or `closed-loop watch` (watch_latest.json) output.

use std::io::Write;
use std::path::{Path, PathBuf};

use clap::Args;
use serde_json::{Value, json};

use super::GlobalArgs;
use super::output::{print_structured, structured};
use crate::closed_loop::effect::ChangeEffect;
use crate::closed_loop::roi::roi;
use crate::error::input_error;
use crate::k8s::gpus::{GPU_RESOURCES, workload_gpus};
use crate::k8s::{Cluster, ClusterApi, ConnectOptions};
use crate::plan::{Target, WorkloadKind};

#[derive(Debug, Clone, Args)]
pub struct RoiArgs {
    /// Output directory of `closed-loop run` or `closed-loop watch`
    #[arg(long = "in", value_name = "DIR")]
    pub input: PathBuf,
    /// GPUs the job runs on (GPU-hours = time saved per step × steps × GPUs) [default: 1]
    #[arg(long, value_name = "N", conflicts_with = "gpus_from_cluster",
          value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub gpus: Option<u32>,
    /// Count the GPUs from the run's workload in the cluster: the nvidia.com/gpu (amd.com/gpu,
    /// gpu.intel.com/i915) limits of its containers × the pods that run at once
    #[arg(long)]
    pub gpus_from_cluster: bool,
}

/// What `read_report` found in a run's output.
struct Report {
    path: PathBuf,
    effects: Vec<ChangeEffect>,
    last_step: u64,
    /// The workload the run planned for (`target`, or `config.target` in a watch's report).
    target: Option<Value>,
}

/// The report in `dir`: its verdicts, the last step it saw and its workload.
fn read_report(dir: &Path) -> anyhow::Result<Report> {
    let (path, watch) = [("closed_loop_latest.json", false), ("watch_latest.json", true)]
        .into_iter()
        .map(|(f, w)| (dir.join(f), w))
        .find(|(p, _)| p.is_file())
        .ok_or_else(|| {
            input_error(
                "no_report",
                format!(
                    "{}: neither closed_loop_latest.json nor watch_latest.json; run `closed-loop run --out {0}` first",
                    dir.display()
                ),
            )
        })?;
    let text = std::fs::read_to_string(&path)
        .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?;
    let bad = |why: String| input_error("bad_report", format!("{}: {why}", path.display()));
    let v: Value = serde_json::from_str(&text).map_err(|e| bad(e.to_string()))?;
    let effects: Vec<ChangeEffect> =
        serde_json::from_value(v.get("effects").cloned().ok_or_else(|| {
            bad("no effects (written by a version without the effect check)".into())
        })?)
        .map_err(|e| bad(format!("effects: {e}")))?;
    let last = if watch {
        v.pointer("/last_window/window/last_step")
    } else {
        v.pointer("/run/last_step")
    };
    let last_step = last.and_then(Value::as_u64).unwrap_or(0);
    let target = v
        .get("target")
        .or_else(|| v.pointer("/config/target"))
        .cloned();
    Ok(Report {
        path,
        effects,
        last_step,
        target,
    })
}

/// The GPUs of the report's workload, read from the cluster, and where the figure comes from.
fn gpus_from_cluster(global: &GlobalArgs, report: &Report) -> anyhow::Result<(u32, String)> {
    let bad = |why: String| input_error("no_gpus", format!("{}: {why}", report.path.display()));
    let t = report
        .target
        .as_ref()
        .ok_or_else(|| bad("names no workload; pass --gpus N".into()))?;
    let field = |k: &str| t.get(k).and_then(Value::as_str).unwrap_or_default();
    let kind = WorkloadKind::parse(field("kind"))
        .filter(|k| k.is_workload())
        .ok_or_else(|| bad(format!("target kind {:?} is not a workload", field("kind"))))?;
    // The report's namespace is the one the run planned for; `-n` is not a second opinion.
    let target = Target::new(field("namespace"), field("name"), kind).map_err(&bad)?;
    let connect = ConnectOptions::from_flags(
        global.kubeconfig.as_deref(),
        global.context.as_deref(),
        Some(target.namespace()),
        global.request_timeout,
    );
    let cluster = Cluster::connect(&connect)?;
    let workload = cluster
        .block_on(cluster.api().get_workload(&target))?
        .ok_or_else(|| {
            anyhow::anyhow!(
                "{}/{} not found in namespace {}",
                kind.resource(),
                target.name(),
                target.namespace()
            )
        })?;
    let gpus = workload_gpus(kind, &workload.object);
    let total = gpus.total();
    if total == 0 {
        return Err(bad(format!(
            "{}/{} asks for no GPUs ({}); pass --gpus N",
            kind.resource(),
            target.name(),
            GPU_RESOURCES.join(", ")
        )));
    }
    let total = u32::try_from(total)
        .ok()
        .filter(|n| *n <= 1_000_000)
        .ok_or_else(|| bad(format!("{total} GPUs is not plausible; pass --gpus N")))?;
    Ok((
        total,
        format!(
            "{}/{} in {} ({})",
            kind.resource(),
            target.name(),
            target.namespace(),
            gpus.describe()
        ),
    ))
}

pub fn run(global: &GlobalArgs, args: &RoiArgs) -> anyhow::Result<()> {
    let report = read_report(&args.input)?;
    let (gpus, gpus_source) = match (args.gpus, args.gpus_from_cluster) {
        (Some(n), _) => (n, "--gpus".to_string()),
        (None, true) => gpus_from_cluster(global, &report)?,
        (None, false) => (
            1,
            "default (pass --gpus N or --gpus-from-cluster)".to_string(),
        ),
    };
    let Report {
        path,
        effects,
        last_step,
        ..
    } = report;
    let r = roi(&effects, last_step, gpus);
    let mut out = std::io::stdout().lock();
    if structured(global.output) {
        let mut v = json!({"schema_version": "roi.v1", "source": path, "last_step": last_step,
                           "gpus_source": gpus_source});
        if let (Value::Object(m), Value::Object(extra)) = (&mut v, serde_json::to_value(&r)?) {
            m.extend(extra);
        }
        return print_structured(&mut out, global.output, &v);
    }
    writeln!(
        out,
        "GPU-hours saved per change ({} GPU(s): {}; from {}):",
        r.gpus,
        gpus_source,
        path.display()
    )?;
    writeln!(
        out,
        "  {:>10}  {:<40}  {:<12}  {:>8}  {:>9}  {:>10}  interval",
        "step", "knobs", "verdict", "change", "steps", "GPU-h"
    )?;
    for c in &r.changes {
        let opt =
            |x: Option<f64>, suffix: &str| x.map_or("–".into(), |v| format!("{v:+.1}{suffix}"));
        writeln!(
            out,
            "  {:>10}  {:<40}  {:<12}  {:>8}  {:>9}  {:>10}  {}",
            c.change_step,
            c.knobs.join(","),
            c.verdict.as_str(),
            opt(c.change_pct, " %"),
            c.steps,
            c.gpu_hours_saved.map_or("–".into(), |v| format!("{v:+.3}")),
            c.gpu_hours_interval
                .map_or("–".into(), |[l, h]| format!("[{l:+.3}, {h:+.3}]"))
        )?;
    }
    writeln!(
        out,
        "  total: {:+.3} GPU-h [{:+.3}, {:+.3}] (sum of the bounds); {} change(s) without an estimate",
        r.gpu_hours_saved_total,
        r.gpu_hours_interval_total[0],
        r.gpu_hours_interval_total[1],
        r.without_estimate
    )?;
    Ok(())
}
