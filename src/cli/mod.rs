//! The command line: clap definitions only. Each command's work lives in its own file.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::telemetry::Format;

pub mod closed_loop;
pub mod completion;
pub mod controller;
pub mod doctor;
pub mod duration;
pub mod examples;
pub mod exit_codes;
pub mod fleet;
pub mod install;
pub mod k8s;
pub mod k8s_apply;
pub mod k8s_render;
pub mod k8s_verify;
pub mod license;
pub mod observe;
pub mod output;
pub mod passport;
pub mod plan;
pub mod policy;
pub mod report;
pub mod roi;
pub mod support_bundle;
pub mod version;

pub use duration::parse_duration_ms;

/// The name users type: `kubectl modekeeper` when kubectl launched us, else the binary's own name.
pub fn display_name() -> &'static str {
    // kubectl execs plugins with its environment unchanged, so `_` (set by the shell to the command it
    // ran) still names kubectl.
    let via_kubectl = std::env::var_os("_")
        .and_then(|p| {
            PathBuf::from(p)
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
        })
        .is_some_and(|n| n == "kubectl" || n == "kubectl.exe");
    if via_kubectl {
        "kubectl modekeeper"
    } else {
        "kubectl-modekeeper"
    }
}

#[derive(Debug, Parser)]
#[command(
    name = "kubectl-modekeeper",
    version,
    about = "Recognise an ML training job's regime from its telemetry and propose safe, bounded knob changes",
    long_about = None,
    propagate_version = true,
    max_term_width = 100,
    after_help = "Exit codes: 0 ok; 2 invalid input, or a check or gate said no; 1 I/O or cluster failure \
                  (per command: docs/cli-reference.md#exit-codes)"
)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Command,
}

/// kubectl's global flags (honoured by every command that talks to a cluster) and output selection.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Global options")]
pub struct GlobalArgs {
    /// Path(s) to kubeconfig files, `:`-separated like KUBECONFIG
    #[arg(long, global = true, value_name = "PATHS")]
    pub kubeconfig: Option<String>,
    /// The kubeconfig context to use
    #[arg(long, global = true, value_name = "NAME")]
    pub context: Option<String>,
    /// Namespace of the workload [default: the kubeconfig context's, else `default`]
    #[arg(short = 'n', long, global = true, value_name = "NS")]
    pub namespace: Option<String>,
    /// Time to wait for a single API request (e.g. 10s, 500ms; 0 = no limit)
    #[arg(long, global = true, value_name = "DURATION", value_parser = parse_duration_ms)]
    pub request_timeout: Option<u64>,
    /// Output format for results printed to stdout
    #[arg(short = 'o', long, global = true, value_enum, default_value_t = OutputFormat::Text)]
    pub output: OutputFormat,
    /// Timestamped reports (<report>_<UTC timestamp>.json) kept per report in --out; older ones are
    /// deleted (0 keeps all)
    #[arg(long, global = true, value_name = "N", default_value_t = crate::artifacts::DEFAULT_KEEP)]
    pub keep: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    /// A short human summary
    Text,
    /// The full report as JSON
    Json,
    /// The full report as YAML (the same fields as JSON)
    Yaml,
}

// Parsed once per process: the size of the largest variant (`closed-loop watch`'s flags) costs nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Read a training job's telemetry, compute window features and report what happened
    Observe(observe::ObserveArgs),
    // The short forms kubectl users type: `plan` is `closed-loop run` without --apply; `render`,
    // `verify` and `apply` are `k8s render|verify|apply`.
    /// Decide per window and write a reviewable plan (`closed-loop run` without --apply)
    Plan(plan::PlanArgs),
    /// Render a plan as a reviewable kubectl script (same as `k8s render`)
    Render(k8s_render::RenderArgs),
    /// Check a plan against the cluster, read-only; exit 2 when blocked (same as `k8s verify`)
    Verify(k8s_verify::VerifyArgs),
    /// Apply a verified plan through the gates (same as `k8s apply`)
    Apply(k8s_apply::ApplyArgs),
    /// Decide per window (policies, passport envelope) and write a decision trace and a reviewable plan
    ClosedLoop(closed_loop::ClosedLoopArgs),
    /// Manage chord policies (WebAssembly components): list, inspect, add, lock, verify, test
    Policy(policy::PolicyArgs),
    /// Passports: what a job may have changed, how far and how often (templates, show, validate)
    Passport(passport::PassportArgs),
    /// Kubernetes plans: render a plan as a reviewable kubectl script, verify it against the cluster
    K8s(k8s::K8sArgs),
    /// Licenses: generate a signing key, mint a license, verify one
    License(license::LicenseArgs),
    /// Render the artifacts of observe / closed-loop run|watch / k8s verify|apply as one HTML page
    Report(report::ReportArgs),
    /// GPU-hours each judged change saved or cost (from a closed-loop run or watch output)
    Roi(roi::RoiArgs),
    /// Print the plugin's version, its embedded policies and the WIT versions it hosts
    Version,
    /// Print a shell completion script
    Completion(completion::CompletionArgs),
    /// Check kubeconfig, API, RBAC, the trainer's wiring, license and policy lock; print the fixes
    Doctor(doctor::DoctorArgs),
    /// Pack a run's artifacts into one .tar.gz for a bug report, secrets redacted
    SupportBundle(support_bundle::SupportBundleArgs),
    /// Print (or --apply) the in-cluster controller's manifests: namespace, RBAC, Deployment, Service
    Install(install::InstallArgs),
    /// Run the in-cluster controller (what the Deployment `install` writes starts)
    Controller(controller::ControllerArgs),
    /// List the workloads opted in to the controller and what each session is doing
    Fleet(fleet::FleetArgs),
}

/// Where telemetry comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SourceKind {
    /// A file (JSONL, CSV, trainer stdout; .gz allowed) or `-` for stdin
    File,
    /// A workload's pod logs through the Kubernetes API (`closed-loop watch` only)
    K8s,
    /// PromQL range queries against a Prometheus server (`closed-loop watch` only)
    Prometheus,
}

impl SourceKind {
    /// The flag value.
    pub fn name(self) -> &'static str {
        match self {
            SourceKind::File => "file",
            SourceKind::K8s => "k8s",
            SourceKind::Prometheus => "prometheus",
        }
    }
}

/// Telemetry source and windowing flags shared by the commands that read telemetry.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Telemetry")]
pub struct TelemetryArgs {
    /// Telemetry source
    #[arg(long, value_enum, default_value_t = SourceKind::File)]
    pub source: SourceKind,
    /// Telemetry file for --source file (`-` reads stdin)
    #[arg(long, short = 'f', visible_alias = "filename", value_name = "PATH")]
    pub path: Option<PathBuf>,
    /// Read a trace embedded in the plugin instead of --path (no checkout needed)
    #[arg(long, value_enum, value_name = "NAME", conflicts_with = "path")]
    pub example: Option<examples::Example>,
    /// Input format; auto detects it from the content (trainer logs, documents, CSV, our JSON)
    #[arg(long, value_enum, default_value_t = Format::Auto)]
    pub format: Format,
    /// Unit of a step time given as `step_time` (no unit in the name): auto reads ms and warns when
    /// the values look like seconds
    #[arg(long, value_enum, default_value_t = crate::telemetry::formats::StepTimeUnit::Auto)]
    pub step_time_unit: crate::telemetry::formats::StepTimeUnit,
    /// Steps per analysis window
    #[arg(long, value_name = "N", default_value_t = crate::signals::DEFAULT_WINDOW_STEPS,
          value_parser = clap::value_parser!(u64).range(2..=1_000_000))]
    pub window_steps: u64,
    /// Steps at the start excluded from baselines (compilation, warm-up, loss free-fall)
    #[arg(long, value_name = "N", default_value_t = crate::signals::DEFAULT_WARMUP_STEPS)]
    pub warmup_steps: u64,
    /// Records held back to repair out-of-order arrival
    #[arg(long, value_name = "N", default_value_t = 1024, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub reorder_window: u64,
    /// A timestamp this far behind its predecessor counts as clock skew
    #[arg(long, default_value = "5s", value_name = "DURATION", value_parser = parse_duration_ms)]
    pub clock_skew_tolerance: u64,
    /// Also write every raw input line to this file, for replay
    #[arg(long, value_name = "PATH")]
    pub record_raw: Option<PathBuf>,
}
