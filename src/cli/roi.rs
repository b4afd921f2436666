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

#[derive(Debug, Clone, Args)]
pub struct RoiArgs {
    /// Output directory of `closed-loop run` or `closed-loop watch`
    #[arg(long = "in", value_name = "DIR")]
    pub input: PathBuf,
    /// GPUs the job runs on (GPU-hours = time saved per step × steps × GPUs)
    #[arg(long, value_name = "N", default_value_t = 1,
          value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub gpus: u32,
}

/// The report in `dir` and the last step it saw.
fn read_report(dir: &Path) -> anyhow::Result<(PathBuf, Vec<ChangeEffect>, u64)> {
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
    let last = last.and_then(Value::as_u64).unwrap_or(0);
    Ok((path, effects, last))
}

pub fn run(global: &GlobalArgs, args: &RoiArgs) -> anyhow::Result<()> {
    let (path, effects, last_step) = read_report(&args.input)?;
    let r = roi(&effects, last_step, args.gpus);
    let mut out = std::io::stdout().lock();
    if structured(global.output) {
        let mut v = json!({"schema_version": "roi.v1", "source": path, "last_step": last_step});
        if let (Value::Object(m), Value::Object(extra)) = (&mut v, serde_json::to_value(&r)?) {
            m.extend(extra);
        }
        return print_structured(&mut out, global.output, &v);
    }
    writeln!(
        out,
        "GPU-hours saved per change ({} GPU(s), from {}):",
        r.gpus,
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
