//! `plan`: the short form of `closed-loop run` without `--apply` — one pass over a trace, the
//! decision trace and a reviewable plan; never touches a cluster (unless --knobs-from-cluster reads).

use std::path::PathBuf;

use clap::Args;

use super::closed_loop::{DecisionArgs, LicenseArgs, RunArgs};
use super::policy::PolicyDirs;
use super::{GlobalArgs, TelemetryArgs};

#[derive(Debug, Clone, Args)]
pub struct PlanArgs {
    #[command(flatten)]
    pub telemetry: TelemetryArgs,
    /// Directory for the plan (k8s_plan.json), the decision trace and explain.jsonl
    #[arg(long, value_name = "DIR", default_value = "report")]
    pub out: PathBuf,
    #[command(flatten)]
    pub decision: DecisionArgs,
    /// Re-derive an earlier run from its report and policy bundle in DIR and check that the decision
    /// trace and the plan come out byte for byte the same (as `closed-loop run --replay`)
    #[arg(long, value_name = "DIR", conflicts_with_all = super::closed_loop::REPLAY_CONFLICTS)]
    pub replay: Option<PathBuf>,
    #[command(flatten)]
    pub dirs: PolicyDirs,
}

impl PlanArgs {
    fn as_run_args(&self) -> RunArgs {
        RunArgs {
            telemetry: self.telemetry.clone(),
            out: self.out.clone(),
            decision: self.decision.clone(),
            replay: self.replay.clone(),
            apply: false,
            license: LicenseArgs {
                license: None,
                keyring: None,
            },
            dirs: self.dirs.clone(),
        }
    }
}

pub fn run(global: &GlobalArgs, args: &PlanArgs) -> anyhow::Result<()> {
    super::closed_loop::run_once(global, &args.as_run_args())
}
