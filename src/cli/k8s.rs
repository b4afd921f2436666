//! `k8s …`: the Kubernetes commands. This file holds the command group; each verb's work lives in
//! its own file (`k8s_render.rs`, `k8s_verify.rs`, …).

use std::path::Path;

use clap::{Args, Subcommand};

use super::GlobalArgs;
use super::{k8s_apply, k8s_render, k8s_verify};
use crate::error::input_error;
use crate::fsio::ReadError;
use crate::plan::{MAX_PLAN_BYTES, Plan, PlanFormat, parse_plan};

#[derive(Debug, Args)]
pub struct K8sArgs {
    #[command(subcommand)]
    pub command: K8sCommand,
}

#[derive(Debug, Subcommand)]
pub enum K8sCommand {
    /// Render a plan as a reviewable kubectl script (never runs it, never contacts a cluster)
    Render(k8s_render::RenderArgs),
    /// Check a plan against the cluster, read-only: objects, permissions, server-side dry run, diff
    Verify(k8s_verify::VerifyArgs),
    /// Apply a verified plan: gated by the kill switch, a license, a fresh verify report; audited, with a rollback plan
    Apply(k8s_apply::ApplyArgs),
}

pub fn run(global: &GlobalArgs, args: &K8sArgs) -> anyhow::Result<()> {
    match &args.command {
        K8sCommand::Render(a) => k8s_render::run(global, a),
        K8sCommand::Verify(a) => k8s_verify::run(global, a),
        K8sCommand::Apply(a) => k8s_apply::run(global, a),
    }
}

/// Why a plan file could not be used: `kind` is `not_found`, `invalid_json`, `invalid_shape`,
/// `invalid_item` (all exit 2) or `io` (exit 1); `index` names the offending item.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlanLoadFailure {
    pub kind: &'static str,
    pub index: Option<usize>,
    /// One line, starting with the plan's path.
    pub message: String,
}

impl PlanLoadFailure {
    /// The error to return from a command: an input error (exit 2) unless the file system failed.
    pub fn into_error(self) -> anyhow::Error {
        if self.kind == "io" {
            anyhow::anyhow!(self.message)
        } else {
            input_error(self.kind, self.message)
        }
    }
}

/// Reads and validates a plan file (array, `k8s_plan.v1` envelope or single item).
pub fn load_plan_file(path: &Path) -> Result<(Plan, PlanFormat), PlanLoadFailure> {
    let shown = path.display();
    let fail = |kind, index, message: String| PlanLoadFailure {
        kind,
        index,
        message: format!("{shown}: {message}"),
    };
    let text = crate::fsio::read_capped_text(path, MAX_PLAN_BYTES).map_err(|e| match e {
        e if e.is_not_found() => fail("not_found", None, "plan not found".into()),
        ReadError::NotRegular(what) => fail("not_found", None, format!("not a file ({what})")),
        ReadError::TooLarge { .. } => fail(
            "invalid_shape",
            None,
            format!("larger than {} MiB; not a plan", MAX_PLAN_BYTES >> 20),
        ),
        ReadError::NotUtf8 => fail("invalid_json", None, "invalid JSON: not UTF-8".into()),
        e => fail("io", None, format!("cannot read the plan: {e}")),
    })?;
    parse_plan(&text).map_err(|e| fail(e.kind.as_str(), e.index, e.message))
}

/// `-n NS` with a plan: every item must be in NS. A plan names its namespaces itself, so a
/// different -n is a mistake (the wrong plan, or the wrong namespace) that must not pass silently.
pub fn check_plan_namespace(namespace: Option<&str>, plan: &Plan) -> anyhow::Result<()> {
    let Some(ns) = namespace else {
        return Ok(());
    };
    let mut others: Vec<&str> = plan
        .items()
        .iter()
        .map(|i| i.target().namespace())
        .filter(|n| *n != ns)
        .collect();
    if others.is_empty() {
        return Ok(());
    }
    others.sort_unstable();
    others.dedup();
    Err(input_error(
        "namespace_mismatch",
        format!(
            "-n {ns}: the plan targets namespace {}, not {ns}; drop -n (a plan names its namespaces) or make the plan for {ns} (`plan -n {ns}`)",
            others.join(", ")
        ),
    ))
}
