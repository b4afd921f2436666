//! The `k8s_verify.v1` report: what `k8s verify` writes and what apply's gate reads back. It ties the
//! verification to a plan (`plan_digest`), a cluster (`cluster.context`, `cluster.server`), a time
//! (`finished_at`) and, per item, the object versions verified (`checks.items[].resource_version`).

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::{Blocker, ItemCheck, ServerCheck, VerifyOutcome};
use crate::k8s::{ClusterIdentity, RbacDenial};

/// Schema of the report.
pub const VERIFY_SCHEMA: &str = "k8s_verify.v1";
/// Report name: `k8s_verify_<ts>.json` and `k8s_verify_latest.json`.
pub const VERIFY_REPORT: &str = "k8s_verify";

/// How the verification ran.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VerifySettings {
    /// Items in flight at once.
    pub concurrency: usize,
    /// Per-request limit; null = none.
    pub request_timeout_ms: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ToolInfo {
    pub name: String,
    pub version: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Checks {
    pub server: ServerCheck,
    pub items: Vec<ItemCheck>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Details {
    /// The missing permission behind an `rbac_denied` blocker, with a suggested rule and hint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rbac: Option<RbacDenial>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Timings {
    pub elapsed_ms: u64,
    /// API calls made.
    pub requests: u64,
}

/// The report document.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VerifyReport {
    pub schema_version: String,
    pub tool: ToolInfo,
    pub started_at: String,
    /// When the checks ended: the verification's timestamp.
    pub finished_at: String,
    pub plan_path: PathBuf,
    pub plan_format: String,
    pub plan_digest: String,
    pub plan_items: usize,
    /// The items' common namespace, name and kind, `mixed`, or null for an empty plan.
    pub namespace: Option<String>,
    pub name: Option<String>,
    pub kind: Option<String>,
    pub cluster: ClusterIdentity,
    pub ok: bool,
    pub verify_blocker: Option<Blocker>,
    pub blockers: Vec<Blocker>,
    pub checks: Checks,
    pub details: Details,
    pub settings: VerifySettings,
    pub timings: Timings,
}

impl VerifyReport {
    /// The report's blocker-level facts from an outcome; the caller fills in the plan and run fields.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        outcome: VerifyOutcome,
        cluster: ClusterIdentity,
        plan: PlanFacts,
        started_at: String,
        finished_at: String,
        settings: VerifySettings,
        timings: Timings,
    ) -> VerifyReport {
        let verify_blocker = outcome.blocker().cloned();
        let rbac = verify_blocker
            .as_ref()
            .and_then(|b| b.index)
            .and_then(|i| outcome.items.get(i))
            .and_then(|item| item.rbac.clone());
        VerifyReport {
            schema_version: VERIFY_SCHEMA.into(),
            tool: ToolInfo {
                name: "kubectl-modekeeper".into(),
                version: env!("CARGO_PKG_VERSION").into(),
            },
            started_at,
            finished_at,
            plan_path: plan.path,
            plan_format: plan.format,
            plan_digest: plan.digest,
            plan_items: outcome.items.len(),
            namespace: plan.namespace,
            name: plan.name,
            kind: plan.kind,
            cluster,
            ok: outcome.ok(),
            verify_blocker,
            blockers: outcome.blockers,
            checks: Checks {
                server: outcome.server,
                items: outcome.items,
            },
            details: Details { rbac },
            settings,
            timings,
        }
    }
}

/// What the report says about the plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlanFacts {
    pub path: PathBuf,
    pub format: String,
    pub digest: String,
    pub namespace: Option<String>,
    pub name: Option<String>,
    pub kind: Option<String>,
}

impl PlanFacts {
    /// What a report says about `plan`, read from `path` in `format` (`envelope`, `list`, …).
    pub fn of(plan: &crate::plan::Plan, path: &std::path::Path, format: &str) -> PlanFacts {
        use crate::plan::Target;
        PlanFacts {
            path: path.to_path_buf(),
            format: format.to_string(),
            digest: plan.digest(),
            namespace: plan.uniform(Target::namespace).map(str::to_string),
            name: plan.uniform(Target::name).map(str::to_string),
            kind: plan.uniform(|t| t.kind().as_str()).map(str::to_string),
        }
    }
}
