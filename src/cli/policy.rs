//! `policy list|inspect|add|lock|verify|test`: manage and score chord policies. The work lives in
//! `crate::policy`; this file parses flags and prints.

use std::io::Write;
use std::path::{Path, PathBuf};

use clap::{Args, Subcommand};
use serde_json::json;

use super::{GlobalArgs, OutputFormat};
use crate::error::input_error;
use crate::human::thousands;
use crate::pipeline::run_pass_with_records;
use crate::policy::{
    self, DEFAULT_POLICY, Knobs, Labels, Limits, PolicyCatalog, PolicyError, PolicyHost, PolicySet,
    SandboxLimits, Scorer, TestReport,
};
use crate::signals::{FeatureConfig, WindowFeatures};
use crate::telemetry::{Format, IngestOptions, SourceSpec, open_source};

#[derive(Debug, Args)]
pub struct PolicyArgs {
    #[command(subcommand)]
    pub command: PolicyCommand,
    #[command(flatten)]
    pub dirs: PolicyDirs,
}

#[derive(Debug, Clone, Args)]
pub struct PolicyDirs {
    /// Directory of added policies and their lock [default: $XDG_DATA_HOME/modekeeper/policies]
    #[arg(long, global = true, value_name = "DIR", env = "MODEKEEPER_POLICY_DIR")]
    pub policy_dir: Option<PathBuf>,
    /// Cache of compiled policies [default: $XDG_CACHE_HOME/modekeeper]
    #[arg(long, global = true, value_name = "DIR", env = "MODEKEEPER_CACHE_DIR")]
    pub cache_dir: Option<PathBuf>,
    /// Compile policies every time instead of using the on-disk cache
    #[arg(long, global = true)]
    pub no_cache: bool,
}

#[derive(Debug, Subcommand)]
pub enum PolicyCommand {
    /// List embedded and added policies with their digests
    List,
    /// Print a policy's metadata (from its custom section) and its WIT world
    Inspect(InspectArgs),
    /// Copy a component into the policy directory and record its digest in the lock
    Add(AddArgs),
    /// Rewrite the policy directory's lock from the components in it
    Lock,
    /// Re-hash embedded and added components against their locks
    Verify,
    /// Score a policy on a labelled trace: per-regime recall, false alarms, detection delay
    Test(TestArgs),
}

#[derive(Debug, Args)]
pub struct InspectArgs {
    /// Policy id (`safe-chords`, `id@version`) or a path to a component (.wasm)
    pub policy: String,
}

#[derive(Debug, Args)]
pub struct AddArgs {
    /// The component file (.wasm) to add
    pub component: PathBuf,
}

#[derive(Debug, Args)]
pub struct TestArgs {
    /// Telemetry trace (JSONL, CSV or trainer stdout; .gz allowed)
    #[arg(long, short = 'f', visible_alias = "filename", value_name = "PATH")]
    pub trace: PathBuf,
    /// Ground truth: {segments:[{regime, first_step, last_step}]} [default: <trace>.labels.json]
    #[arg(long, value_name = "PATH")]
    pub labels: Option<PathBuf>,
    /// Base policy: an id, `id@version`, or a component path
    #[arg(long, value_name = "ID", default_value = DEFAULT_POLICY)]
    pub policy: String,
    /// Advanced policies to run as well (off by default), comma-separated
    #[arg(long, value_name = "ID,..", value_delimiter = ',')]
    pub enable_advanced: Vec<String>,
    /// Steps per analysis window
    #[arg(long, default_value_t = crate::signals::DEFAULT_WINDOW_STEPS, value_parser = clap::value_parser!(u64).range(2..=1_000_000))]
    pub window_steps: u64,
    /// Steps at the start excluded from baselines
    #[arg(long, default_value_t = crate::signals::DEFAULT_WARMUP_STEPS)]
    pub warmup_steps: u64,
    /// Also write every window's merged decision to this JSONL file
    #[arg(long, value_name = "PATH")]
    pub decisions: Option<PathBuf>,
}

pub fn run(global: &GlobalArgs, args: &PolicyArgs) -> anyhow::Result<()> {
    let dir = args
        .dirs
        .policy_dir
        .clone()
        .or_else(policy::default_policy_dir);
    let mut out = std::io::stdout().lock();
    match &args.command {
        PolicyCommand::List => list(global, dir.as_deref(), &mut out),
        PolicyCommand::Inspect(a) => inspect(global, dir.as_deref(), a, &mut out),
        PolicyCommand::Add(a) => {
            let dir = dir.ok_or_else(|| {
                input_error("bad_flag", "no policy directory: pass --policy-dir DIR")
            })?;
            let e = policy::add_policy(&dir, &a.component).map_err(user_error)?;
            emit(
                global,
                &mut out,
                &json!({"schema_version": "policy_add.v1", "added": e, "policy_dir": dir}),
                || {
                    format!(
                        "added {} {} (WIT {}) sha256:{}\n  to {}\n",
                        e.name,
                        e.version,
                        e.wit_version,
                        e.sha256,
                        dir.join(&e.file).display()
                    )
                },
            )
        }
        PolicyCommand::Lock => {
            let dir = dir.ok_or_else(|| {
                input_error("bad_flag", "no policy directory: pass --policy-dir DIR")
            })?;
            if !dir.is_dir() {
                return Err(input_error(
                    "not_found",
                    format!("policy directory {} does not exist", dir.display()),
                ));
            }
            let lock = policy::lock_dir(&dir).map_err(user_error)?;
            emit(
                global,
                &mut out,
                &json!({"schema_version": "policy_lock_result.v1", "lock": lock, "path": dir.join(policy::LOCK_FILE)}),
                || {
                    let mut s = format!(
                        "wrote {} ({} policies)\n",
                        dir.join(policy::LOCK_FILE).display(),
                        lock.policies.len()
                    );
                    for e in &lock.policies {
                        s += &format!("  {:<18} {:<8} sha256:{}\n", e.name, e.version, e.sha256);
                    }
                    s
                },
            )
        }
        PolicyCommand::Verify => {
            let results = policy::verify(dir.as_deref()).map_err(user_error)?;
            let bad: Vec<_> = results.iter().filter(|r| r.status != "ok").collect();
            emit(
                global,
                &mut out,
                &json!({"schema_version": "policy_verify.v1", "ok": bad.is_empty(), "policies": results}),
                || {
                    let mut s = String::new();
                    for r in &results {
                        s += &format!(
                            "{:<12} {:<18} {:<8} {}\n",
                            r.status, r.name, r.version, r.location
                        );
                    }
                    s
                },
            )?;
            if bad.is_empty() {
                Ok(())
            } else {
                Err(input_error(
                    "lock_mismatch",
                    format!("{} policy component(s) do not match their lock", bad.len()),
                ))
            }
        }
        PolicyCommand::Test(a) => test(global, &args.dirs, dir.as_deref(), a, &mut out),
    }
}

/// Loading problems are the user's to fix (exit 2), except I/O: a name or a pin they can fix is
/// invalid input.
pub(crate) fn user_error(e: PolicyError) -> anyhow::Error {
    match e {
        PolicyError::Io(_) => anyhow::Error::new(e),
        PolicyError::UnknownPolicy(_) => input_error("unknown_policy", e.to_string()),
        PolicyError::Advanced(_) => input_error("advanced_not_enabled", e.to_string()),
        PolicyError::Lock(_) => input_error("lock_mismatch", e.to_string()),
        _ => input_error("bad_policy", e.to_string()),
    }
}

fn emit(
    global: &GlobalArgs,
    out: &mut dyn Write,
    value: &serde_json::Value,
    text: impl FnOnce() -> String,
) -> anyhow::Result<()> {
    match global.output {
        OutputFormat::Json | OutputFormat::Yaml => {
            crate::cli::output::print_structured(out, global.output, value)?
        }
        OutputFormat::Text => write!(out, "{}", text())?,
    }
    Ok(())
}

fn list(global: &GlobalArgs, dir: Option<&Path>, out: &mut dyn Write) -> anyhow::Result<()> {
    let cat = PolicyCatalog::load(dir).map_err(user_error)?;
    let rows: Vec<serde_json::Value> = cat
        .sources
        .iter()
        .map(|s| {
            json!({"id": s.meta.id, "version": s.meta.version, "wit_version": s.meta.wit_version, "advanced": s.meta.advanced,
                   "chords": s.meta.chords, "sha256": s.sha256, "source": s.origin.describe()})
        })
        .collect();
    emit(
        global,
        out,
        &json!({"schema_version": "policy_list.v1", "policies": rows}),
        || {
            let mut s = format!(
                "{:<18} {:<8} {:<5} {:<9} {:<18} SOURCE\n",
                "ID", "VERSION", "WIT", "ADVANCED", "SHA256"
            );
            for p in &cat.sources {
                s += &format!(
                    "{:<18} {:<8} {:<5} {:<9} {:<18} {}\n",
                    p.meta.id,
                    p.meta.version,
                    p.meta.wit_version,
                    if p.meta.advanced { "yes" } else { "no" },
                    format!("{}…", &p.sha256[..16]),
                    p.origin.describe()
                );
            }
            s
        },
    )
}

fn inspect(
    global: &GlobalArgs,
    dir: Option<&Path>,
    a: &InspectArgs,
    out: &mut dyn Write,
) -> anyhow::Result<()> {
    let cat = PolicyCatalog::load(dir).map_err(user_error)?;
    let src = cat.find(&a.policy).map_err(user_error)?;
    let (imports, exports) = policy::component_surface(&src.bytes).map_err(user_error)?;
    let m = &src.meta;
    let wit = m
        .wit_text()
        .unwrap_or("(this host does not ship the text of that WIT version)");
    let value = json!({"schema_version": "policy_inspect.v1", "metadata": m, "sha256": src.sha256, "source": src.origin.describe(), "bytes": src.bytes.len(),
                       "imports": imports, "exports": exports, "wit": wit});
    emit(global, out, &value, || {
        let list = |v: &[String]| {
            if v.is_empty() {
                "(none)".to_string()
            } else {
                v.join(", ")
            }
        };
        let mut s = format!("{} {}  ({})\n", m.id, m.version, src.origin.describe());
        s += &format!("  sha256       {}\n", src.sha256);
        s += &format!(
            "  size         {} bytes\n",
            thousands(src.bytes.len() as u64)
        );
        s += &format!("  world        {} (WIT {})\n", m.world, m.wit_version);
        s += &format!(
            "  advanced     {}\n",
            if m.advanced {
                "yes (runs only with --enable-advanced)"
            } else {
                "no"
            }
        );
        s += &format!("  chords       {}\n", list(&m.chords));
        s += &format!("  knobs        {}\n", list(&m.knobs));
        s += &format!("  signals      {}\n", list(&m.signals));
        s += &format!("  imports      {}\n", list(&imports));
        s += &format!("  exports      {}\n", list(&exports));
        s += &format!("  description  {}\n\n", m.description);
        s += &format!("WIT {}:\n{wit}", m.wit_version);
        s
    })
}

fn host_for(dirs: &PolicyDirs) -> anyhow::Result<PolicyHost> {
    let cache = if dirs.no_cache {
        None
    } else {
        dirs.cache_dir.clone().or_else(policy::default_cache_dir)
    };
    Ok(PolicyHost::new(SandboxLimits::default(), cache.as_deref())?)
}

/// A labels file lists a trace's regime segments; a larger one is not one.
const MAX_LABELS_BYTES: u64 = 16 * 1024 * 1024;

fn test(
    global: &GlobalArgs,
    dirs: &PolicyDirs,
    dir: Option<&Path>,
    a: &TestArgs,
    out: &mut dyn Write,
) -> anyhow::Result<()> {
    let labels_path = a.labels.clone().unwrap_or_else(|| labels_beside(&a.trace));
    let labels_text =
        crate::fsio::read_capped_text(&labels_path, MAX_LABELS_BYTES).map_err(|e| {
            let hint = match &a.labels {
                Some(_) => String::new(),
                None => "; pass the ground truth with --labels FILE ({segments: [{regime, first_step, last_step}]}, docs/policy-authoring.md)".into(),
            };
            input_error(
                "not_found",
                format!("cannot read labels {}: {e}{hint}", labels_path.display()),
            )
        })?;
    let labels = Labels::parse(&labels_text)
        .map_err(|e| input_error("bad_labels", format!("{}: {e}", labels_path.display())))?;
    let cat = PolicyCatalog::load(dir).map_err(user_error)?;
    let host = host_for(dirs)?;
    let mut set =
        PolicySet::load(&host, &cat, &a.policy, &a.enable_advanced).map_err(user_error)?;
    for w in host.cache_warnings() {
        eprintln!("warning: {w}");
    }
    let available: Vec<String> = set
        .policies()
        .flat_map(|p| p.metadata().chords.clone())
        .collect();
    let refs: Vec<_> = set.policies().map(|p| p.reference().clone()).collect();

    let limits = Limits::reference();
    let knobs = Knobs::baseline(&limits);
    // Shared by the window and record callbacks (onsets are timed by their own records).
    let scorer = std::cell::RefCell::new(Scorer::new(labels, available));
    let mut decisions_file = match &a.decisions {
        Some(p) => Some(std::io::BufWriter::new(
            std::fs::File::create(p)
                .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", p.display()))?,
        )),
        None => None,
    };
    let mut micros: Vec<u64> = Vec::new();
    let spec = SourceSpec {
        path: a.trace.clone(),
        format: Format::Auto,
        record_raw: None,
    };
    let src = open_source(&spec)?;
    let cfg = FeatureConfig {
        window_steps: a.window_steps,
        warmup_steps: a.warmup_steps,
    };
    let mut on_window = |f: &WindowFeatures| -> anyhow::Result<()> {
        let before = set.cost().micros;
        let d = set.evaluate(f, &knobs, &limits);
        micros.push(set.cost().micros - before);
        if let Some(w) = decisions_file.as_mut() {
            serde_json::to_writer(&mut *w, &json!({"window": f.window, "decision": d}))?;
            w.write_all(b"\n")?;
        }
        scorer.borrow_mut().push(f, &d);
        Ok(())
    };
    let mut on_record = |s: &crate::telemetry::Sample| {
        scorer
            .borrow_mut()
            .note_record(s.step.unwrap_or(0), s.ts_ms)
    };
    let pass = run_pass_with_records(
        src,
        &IngestOptions::default(),
        cfg,
        false,
        &mut on_window,
        &mut on_record,
    )?;
    if let Some(mut w) = decisions_file {
        w.flush()?;
    }
    if pass.ingest.records_emitted == 0 {
        return Err(super::observe::no_records_error(
            &a.trace,
            &pass.ingest,
            &pass.format_detected,
        ));
    }
    let report = scorer.into_inner().finish();
    micros.sort_unstable();
    let median_us = micros.get(micros.len() / 2).copied().unwrap_or(0);
    let value = json!({
        "schema_version": "policy_test.v1",
        "trace": a.trace, "labels": labels_path,
        "policies": refs,
        "config": {"window_steps": a.window_steps, "warmup_steps": a.warmup_steps, "knobs": "reference registry baseline"},
        "steps": {"first": pass.first_step, "last": pass.last_step},
        "median_eval_us_per_window": median_us,
        "report": report,
    });
    emit(global, out, &value, || {
        test_table(&a.trace, &refs, &report, median_us)
    })
}

fn labels_beside(trace: &Path) -> PathBuf {
    let name = trace
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let stem = name
        .trim_end_matches(".gz")
        .trim_end_matches(".jsonl")
        .trim_end_matches(".csv")
        .trim_end_matches(".log")
        .trim_end_matches(".stdout");
    trace.with_file_name(format!("{stem}.labels.json"))
}

fn test_table(trace: &Path, refs: &[policy::PolicyRef], r: &TestReport, median_us: u64) -> String {
    let names: Vec<String> = refs
        .iter()
        .map(|p| format!("{} {} ({}…)", p.name, p.version, &p.digest[..15]))
        .collect();
    let mut s = format!(
        "policy test  {}  ·  {} windows  ·  {}\n\n",
        trace.display(),
        r.windows,
        names.join(" + ")
    );
    s += &format!(
        "{:<24} {:<12} {:<30} {:<11} {:<18} CHORDS SEEN (windows)\n",
        "SEGMENT", "STEPS", "EXPECTED", "OUTCOME", "DELAY"
    );
    for g in &r.segments {
        let delay = match (g.delay_steps, g.delay_s) {
            (Some(d), Some(t)) => format!("{d} steps, {t:.1} s"),
            (Some(d), None) => format!("{d} steps"),
            _ => "-".into(),
        };
        let seen: Vec<String> = g
            .chords_seen
            .iter()
            .map(|(c, n)| format!("{c} {n}"))
            .collect();
        s += &format!(
            "{:<24} {:<12} {:<30} {:<11} {:<18} {}\n",
            g.regime,
            format!("{}-{}", g.first_step, g.last_step),
            g.expected.join("+"),
            g.outcome,
            delay,
            if seen.is_empty() {
                "-".to_string()
            } else {
                seen.join(", ")
            }
        );
    }
    s += "\n";
    for rc in &r.recall {
        match rc.recall {
            Some(x) => {
                s += &format!(
                    "recall       {:<24} {}/{} ({:.0}%), mean delay {}\n",
                    rc.regime,
                    rc.detected,
                    rc.segments,
                    x * 100.0,
                    rc.mean_delay_steps.map_or("-".into(), |d| format!(
                        "{d:.0} steps / {:.1} s",
                        rc.mean_delay_s.unwrap_or(0.0)
                    ))
                )
            }
            None => s += &format!("recall       {:<24} not scored\n", rc.regime),
        }
    }
    let chords: Vec<String> = r
        .false_alarm_chords
        .iter()
        .map(|(c, n)| format!("{c} {n}"))
        .collect();
    s += &format!(
        "false alarms {} in {} NORMAL windows after warm-up ({:.1} per 1000 windows){}\n",
        r.false_alarms,
        r.normal_windows_after_warmup,
        r.false_alarms_per_1000,
        if chords.is_empty() {
            String::new()
        } else {
            format!(": {}", chords.join(", "))
        }
    );
    s += &format!(
        "failures     {} window(s) with a failed policy evaluation\n",
        r.failed_windows
    );
    s += &format!(
        "cost         median {median_us} µs per window (all policies, instantiation included)\n"
    );
    s
}
