//! `report`: one self-contained HTML page from the artifacts in a directory that `observe`,
//! `closed-loop run` or `closed-loop watch` wrote (with `k8s verify` / `k8s apply` reports when they
//! are there), and the same story as a few terminal lines. Reading is tolerant: every artifact is
//! optional except one per-window stream, and what could not be read is listed on the page.

use std::fs::File;
use std::io::{BufReader, Write};
use std::path::{Path, PathBuf};

use clap::Args;
use serde_json::json;

use super::{GlobalArgs, OutputFormat};
use crate::artifacts::write_atomic;
use crate::error::input_error;
use crate::report::model::{self, Gate, ReportModel};
use crate::report::{PageOptions, page, story_lines};

#[derive(Debug, Clone, Args)]
pub struct ReportArgs {
    /// Directory holding the artifacts (observe_windows.jsonl and/or decision_trace_latest.jsonl, plus
    /// any of observe_latest.json, closed_loop_latest.json, k8s_verify_latest.json, k8s_apply_latest.json)
    #[arg(long = "in", value_name = "DIR")]
    pub input: PathBuf,
    /// The HTML file to write
    #[arg(long, value_name = "PATH", default_value = "report.html")]
    pub out: PathBuf,
    /// Page title (default: "ModeKeeper report — <directory name>")
    #[arg(long, value_name = "TEXT")]
    pub title: Option<String>,
    /// Points drawn per series at most; longer series keep each bucket's min and max (drawing only)
    #[arg(long, value_name = "N", default_value_t = 1500,
          value_parser = clap::value_parser!(u64).range(100..=100_000))]
    pub max_points: u64,
    /// Decision-table rows rendered at most (the rest are counted; the trace has them all)
    #[arg(long, value_name = "N", default_value_t = 5000,
          value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub max_rows: u64,
}

const WINDOWS: &str = "observe_windows.jsonl";
const TRACE: &str = "decision_trace_latest.jsonl";
/// JSON reports larger than this are not read (they are summaries; a larger one is not ours).
const MAX_JSON_BYTES: u64 = crate::fsio::MAX_REPORT_BYTES;

/// Reads an optional JSON report: `None` when absent, `Err(message)` when present but unreadable.
fn read_optional(dir: &Path, name: &str) -> Option<Result<String, String>> {
    match crate::fsio::read_capped_text(&dir.join(name), MAX_JSON_BYTES) {
        Ok(s) => Some(Ok(s)),
        Err(e) if e.is_not_found() => None,
        Err(e) => Some(Err(e.to_string())),
    }
}

fn open_stream(dir: &Path, name: &str) -> anyhow::Result<Option<BufReader<File>>> {
    let p = dir.join(name);
    match File::open(&p) {
        Ok(f) => Ok(Some(BufReader::with_capacity(256 * 1024, f))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(anyhow::Error::new(e).context(format!("cannot open {}", p.display()))),
    }
}

/// Reads every artifact of `dir` into a model.
pub fn load(dir: &Path) -> anyhow::Result<ReportModel> {
    if !dir.is_dir() {
        return Err(input_error(
            "not_found",
            format!("--in {}: no such directory", dir.display()),
        ));
    }
    let windows = open_stream(dir, WINDOWS)?;
    let trace = open_stream(dir, TRACE)?;
    if windows.is_none() && trace.is_none() {
        return Err(input_error(
            "no_artifacts",
            format!(
                "{} holds neither observe_windows.jsonl nor decision_trace_latest.jsonl: run `observe --out {0}` or `closed-loop run --out {0}` first",
                dir.display()
            ),
        ));
    }
    let mut m = ReportModel::default();
    let mut symptom_bands = Vec::new();
    let has_windows = windows.is_some();
    if let Some(r) = windows {
        model::read_observe_windows(&mut m, r, &mut symptom_bands).map_err(|e| {
            anyhow::Error::new(e).context(format!("cannot read {}", dir.join(WINDOWS).display()))
        })?;
        m.inputs.push(WINDOWS.into());
    }
    if let Some(r) = trace {
        model::read_decision_trace(&mut m, r, !has_windows).map_err(|e| {
            anyhow::Error::new(e).context(format!("cannot read {}", dir.join(TRACE).display()))
        })?;
        m.inputs.push(TRACE.into());
    }
    let optional = |name: &str, m: &mut ReportModel| -> Option<String> {
        match read_optional(dir, name)? {
            Ok(text) => {
                m.inputs.push(name.into());
                Some(text)
            }
            Err(e) => {
                m.notes.note(format!("{name}: {e}; ignored"));
                None
            }
        }
    };
    if let Some(t) = optional("observe_latest.json", &mut m) {
        model::read_observe_report(&mut m, &t);
    }
    if let Some(t) = optional("closed_loop_latest.json", &mut m) {
        model::read_closed_loop_report(&mut m, &t);
    }
    if let Some(t) = optional("k8s_verify_latest.json", &mut m) {
        m.outcome.verify = model::read_verify(&t);
    }
    if let Some(t) = optional("k8s_apply_latest.json", &mut m) {
        let a = model::read_apply(&t);
        m.outcome.apply = a.gate;
        m.outcome.apply_ms = a.when;
        m.outcome.applied = a.applied;
    }
    for (name, g) in [
        ("k8s_verify_latest.json", &m.outcome.verify),
        ("k8s_apply_latest.json", &m.outcome.apply),
    ] {
        if let Gate::Unreadable { error } = g {
            let note = format!("{name}: {error}");
            m.notes.note(note);
        }
    }
    model::finish(&mut m, symptom_bands);
    if m.windows.is_empty() {
        return Err(input_error(
            "no_windows",
            format!(
                "no usable window in {}: neither observe_windows.jsonl nor decision_trace_latest.jsonl has a line with a `window`",
                dir.display()
            ),
        ));
    }
    Ok(m)
}

pub fn run(global: &GlobalArgs, args: &ReportArgs) -> anyhow::Result<()> {
    let mut m = load(&args.input)?;
    m.title = args.title.clone().unwrap_or_else(|| {
        let name = std::fs::canonicalize(&args.input)
            .ok()
            .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
            .unwrap_or_else(|| args.input.display().to_string());
        format!("ModeKeeper report — {name}")
    });
    let opt = PageOptions {
        chart: crate::report::svg::ChartOptions {
            max_points: args.max_points as usize,
        },
        max_rows: args.max_rows as usize,
        generated: chrono::Utc::now().format("%Y-%m-%d %H:%M UTC").to_string(),
        ..PageOptions::default()
    };
    let html = page(&m, &opt);
    if let Some(parent) = args.out.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(|e| {
            anyhow::Error::new(e).context(format!("cannot create {}", parent.display()))
        })?;
    }
    write_atomic(&args.out, |w| w.write_all(html.as_bytes()))?;
    // A page is for reading and sharing, not a secret: not the temporary file's 0600.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&args.out, std::fs::Permissions::from_mode(0o644))?;
    }

    let mut stdout = std::io::stdout().lock();
    match global.output {
        OutputFormat::Json | OutputFormat::Yaml => {
            let v = json!({
                "schema_version": "report.v1",
                "report": args.out,
                "bytes": html.len(),
                "windows": m.windows.len(),
                "decision_windows": m.decision_windows,
                "decisions": m.decisions.len(),
                "bands": m.bands.len(),
                "inputs": m.inputs,
                "notes": m.notes.notes,
            });
            crate::cli::output::print_structured(&mut stdout, global.output, &v)?;
        }
        OutputFormat::Text => {
            writeln!(stdout, "report {}", args.input.display())?;
            for l in story_lines(&m) {
                writeln!(stdout, "{l}")?;
            }
            for n in &m.notes.notes {
                writeln!(stdout, "  note      {n}")?;
            }
            writeln!(
                stdout,
                "  wrote     {} ({} KiB)",
                args.out.display(),
                html.len().div_ceil(1024)
            )?;
        }
    }
    Ok(())
}
