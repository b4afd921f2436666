//! `closed-loop run`: telemetry → window features → chord policies (per window, state carried) →
//! the envelope (passport limits, cooldowns on telemetry time) → the decision trace, the plan of the
//! accepted end state, its kubectl review script, the policy bundle, the report and a summary. Never
//! touches a cluster. The pure loop is `crate::closed_loop`; this module resolves flags
//! (`inputs`), drives the pass and writes the artifacts (`run`), and prints (`terminal`).

mod common;
pub(crate) mod inputs;
mod run;
mod terminal;
mod watch;
mod watch_events;
mod watch_report;
mod watch_source;
mod watch_state;

use std::path::PathBuf;

use clap::{Args, Subcommand};

use super::policy::PolicyDirs;
use super::{SourceKind, TelemetryArgs};
use crate::policy::DEFAULT_POLICY;

/// For the fuzz targets in `fuzz/` (the state file's decoders); not a stable API.
#[doc(hidden)]
pub use crate::closed_loop::live::{Pipeline, WatchState};
pub use run::run_once;

/// `closed-loop run|watch`.
pub fn run(global: &super::GlobalArgs, args: &ClosedLoopArgs) -> anyhow::Result<()> {
    match &args.command {
        ClosedLoopCommand::Run(a) => run_once(global, a),
        ClosedLoopCommand::Watch(a) => watch::run(global, a),
    }
}

#[derive(Debug, Args)]
pub struct ClosedLoopArgs {
    #[command(subcommand)]
    pub command: ClosedLoopCommand,
}

#[derive(Debug, Subcommand)]
pub enum ClosedLoopCommand {
    /// One pass over a trace: decide per window, write the decision trace and a reviewable plan
    Run(RunArgs),
    /// Live: evaluate each window as it completes, keep state in --out, resume after a restart
    Watch(WatchArgs),
}

#[derive(Debug, Clone, Args)]
pub struct WatchArgs {
    #[command(flatten)]
    pub telemetry: TelemetryArgs,
    /// Keep reading a file as it grows (`tail -F`: survives truncation and rotation)
    #[arg(long)]
    pub follow: bool,
    /// --source k8s: stream this pod's logs instead of the workload's (all replicas merged)
    #[arg(long, value_name = "NAME")]
    pub pod: Option<String>,
    /// --source k8s: the training container [default: the pod's `modekeeper/telemetry`
    /// annotation, else its only container]
    #[arg(long, value_name = "NAME")]
    pub container: Option<String>,
    #[command(flatten)]
    pub prom: PromArgs,
    /// Directory for the artifacts, the state file and explain.jsonl; a watch started again with
    /// the same --out continues where the last one stopped
    #[arg(long, value_name = "DIR", default_value = "report/watch")]
    pub out: PathBuf,
    /// Forget the state in --out and start from the beginning of the source
    #[arg(long)]
    pub fresh: bool,
    /// Stop after this many evaluated windows (in this run)
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub max_iterations: Option<u64>,
    /// Stop after this long (e.g. 30m, 12h)
    #[arg(long, value_name = "DURATION", value_parser = crate::cli::duration::parse_duration_ms)]
    pub duration: Option<u64>,
    /// Release a record once one this many steps ahead has arrived (live sources cannot wait for
    /// the whole reorder buffer to fill: a window is evaluated this many steps after it ends)
    #[arg(long, value_name = "STEPS", default_value_t = 16, value_parser = clap::value_parser!(u64).range(1..=100_000))]
    pub release_lag_steps: u64,
    #[command(flatten)]
    pub decision: DecisionArgs,
    /// Apply each new decision through the gates of `k8s apply` (kill switch, license, verify,
    /// unchanged objects), once per decision; the passport's cooldowns hold between applies
    #[arg(long)]
    pub apply: bool,
    #[command(flatten)]
    pub license: LicenseArgs,
    #[command(flatten)]
    pub dirs: PolicyDirs,
}

/// `--source prometheus`: where the server is and what to read (docs/telemetry.md#prometheus-source).
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Prometheus source")]
pub struct PromArgs {
    /// --source prometheus: the server's base URL (overrides the config file's `url`)
    #[arg(long, value_name = "URL")]
    pub prom_url: Option<String>,
    /// --source prometheus: queries, labels, resolution (docs/telemetry.md#prometheus-source)
    #[arg(long, value_name = "FILE")]
    pub prom_config: Option<PathBuf>,
    /// --source prometheus: where to start reading: `now`, `now-6h`, RFC 3339 or epoch
    /// [default: the config's `start`, else now]
    #[arg(long, value_name = "TIME")]
    pub prom_start: Option<String>,
    /// --source prometheus: stop at this time instead of following
    #[arg(long, value_name = "TIME")]
    pub prom_end: Option<String>,
    /// --source prometheus: query resolution (one record per rank per step) [default: the
    /// config's `step`, else 10s]
    #[arg(long, value_name = "DURATION")]
    pub prom_step: Option<String>,
}

impl WatchArgs {
    /// The flags `closed-loop run` shares, for the shared input resolution.
    fn as_run_args(&self) -> RunArgs {
        let mut telemetry = self.telemetry.clone();
        if telemetry.source != SourceKind::File {
            // The shared resolution wants a file; a live source's lines are parsed as logs.
            telemetry.source = SourceKind::File;
            telemetry.path = Some(PathBuf::from("-"));
            telemetry.example = None;
        }
        RunArgs {
            telemetry,
            out: self.out.clone(),
            decision: self.decision.clone(),
            replay: None,
            apply: self.apply,
            license: self.license.clone(),
            dirs: self.dirs.clone(),
        }
    }
}

/// What the loop decides under and what its plan targets: shared by `run` and `watch`.
#[derive(Debug, Clone, Args)]
pub struct DecisionArgs {
    /// Passport: a template name (see `passport templates`) or a passport file
    #[arg(long, value_name = "NAME|FILE", default_value = "safe")]
    pub passport: String,
    /// Current knob values, comma-separated K=V [default: the passport's baselines]
    #[arg(long, value_name = "K=V,..", value_delimiter = ',')]
    pub knobs: Vec<String>,
    /// Base policy: an id, `id@version`, `id@sha256:…`, or a component path
    #[arg(long, value_name = "ID", default_value = DEFAULT_POLICY)]
    pub policy: String,
    /// Advanced chords or policies to run as well (e.g. TIMEOUT-GUARD), comma-separated; the
    /// passport must also permit a chord for its proposals to pass
    #[arg(long, value_name = "ID,..", value_delimiter = ',')]
    pub enable_advanced: Vec<String>,
    /// The Deployment the plan patches [default: trainer]
    #[arg(long, value_name = "NAME", conflicts_with_all = ["statefulset", "job", "pytorchjob", "jobset"])]
    pub deployment: Option<String>,
    /// Patch this StatefulSet instead of a Deployment
    #[arg(long, value_name = "NAME", conflicts_with_all = ["job", "pytorchjob", "jobset"])]
    pub statefulset: Option<String>,
    /// Target this batch/v1 Job (its template is immutable: every knob goes to its knobs ConfigMap)
    #[arg(long, value_name = "NAME", conflicts_with_all = ["pytorchjob", "jobset"])]
    pub job: Option<String>,
    /// Target this kubeflow.org PyTorchJob (cold knobs on its Master and Worker templates)
    #[arg(long, value_name = "NAME", conflicts_with = "jobset")]
    pub pytorchjob: Option<String>,
    /// Target this jobset.x-k8s.io JobSet (every knob goes to its knobs ConfigMap)
    #[arg(long, value_name = "NAME")]
    pub jobset: Option<String>,
    /// Start from the knob values in the workload's pod-template annotations and its knobs
    /// ConfigMap (read-only GETs of the target workload, default Deployment trainer; namespace from
    /// -n or the kubeconfig context)
    #[arg(long, conflicts_with = "knobs")]
    pub knobs_from_cluster: bool,
}

impl DecisionArgs {
    /// The workload flag given (kind and name), or a Deployment without a name.
    pub fn workload(&self) -> (crate::plan::WorkloadKind, Option<&str>) {
        use crate::plan::WorkloadKind as K;
        [
            (K::StatefulSet, &self.statefulset),
            (K::Job, &self.job),
            (K::PyTorchJob, &self.pytorchjob),
            (K::JobSet, &self.jobset),
            (K::Deployment, &self.deployment),
        ]
        .into_iter()
        .find_map(|(k, n)| n.as_deref().map(|n| (k, Some(n))))
        .unwrap_or((K::Deployment, None))
    }
}

/// What a replay takes from the earlier run's report, so it may not be given again (`closed-loop run
/// --replay`, `plan --replay`).
pub const REPLAY_CONFLICTS: [&str; 17] = [
    "path",
    "example",
    "format",
    "window_steps",
    "warmup_steps",
    "reorder_window",
    "clock_skew_tolerance",
    "passport",
    "knobs",
    "policy",
    "enable_advanced",
    "deployment",
    "statefulset",
    "job",
    "pytorchjob",
    "jobset",
    "knobs_from_cluster",
];

#[derive(Debug, Clone, Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub telemetry: TelemetryArgs,
    /// Directory for the artifacts and explain.jsonl
    #[arg(long, value_name = "DIR", default_value = "report")]
    pub out: PathBuf,
    #[command(flatten)]
    pub decision: DecisionArgs,
    /// Re-derive an earlier run from its report and policy bundle in DIR (same trace, passport,
    /// starting knobs, target and policy digests) and check that the decision trace and the plan
    /// come out byte for byte the same
    #[arg(long, value_name = "DIR", conflicts_with_all = REPLAY_CONFLICTS, conflicts_with = "apply")]
    pub replay: Option<PathBuf>,
    /// After writing the plan, verify it against the cluster and apply it if every gate allows:
    /// kill switch off, a license granting `apply`, verify ok, objects unchanged (docs/safety.md).
    /// Exit 2 when blocked, 1 when the apply failed; the report has one `results` entry per proposal
    #[arg(long)]
    pub apply: bool,
    #[command(flatten)]
    pub license: LicenseArgs,
    #[command(flatten)]
    pub dirs: PolicyDirs,
}

/// The license and keyring `--apply` checks: shared by `run` and `watch`.
#[derive(Debug, Clone, Args)]
pub struct LicenseArgs {
    /// The license for --apply (default: $MODEKEEPER_LICENSE_PATH, then ~/.config/modekeeper/license.json)
    #[arg(long, value_name = "PATH", requires = "apply")]
    pub license: Option<PathBuf>,
    /// Trust this keyring for --apply instead of the built-in production keys (recorded); also
    /// MODEKEEPER_KEYRING
    #[arg(long, value_name = "PATH", requires = "apply")]
    pub keyring: Option<PathBuf>,
}
