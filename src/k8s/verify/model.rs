//! What verification found: per-item checks, blockers and their deterministic priority. Pure.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::k8s::{ClusterError, ClusterErrorKind, DiffEntry, RbacDenial, planned_knobs};
use crate::plan::{PlanItem, Target};

/// Why a plan cannot be applied as verified. The declaration order is the priority among blockers
/// of the same level and index (see docs/kubernetes.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BlockerKind {
    /// The plan has no items: there is nothing a verify could vouch for.
    EmptyPlan,
    /// Connection refused, DNS, TLS: the API server cannot be reached.
    ClusterUnreachable,
    /// 401, or credentials could not be obtained.
    Unauthorized,
    /// A call got no answer within `--request-timeout`.
    Timeout,
    /// A 5xx answer.
    ServerError,
    /// The cluster does not serve the item's kind (a custom resource whose CRD is not installed).
    KindNotServed,
    NamespaceMissing,
    WorkloadMissing,
    /// A 403 on reading the workload or on the dry-run patch.
    RbacDenied,
    /// 409 on the dry run: the object changed while it was being verified.
    Conflict,
    /// The server refused the patch (400 or 422: validation, admission).
    DryRunRejected,
    /// The dry run changes paths other than the planned knob annotations.
    UnexpectedChange,
    /// Any other failed call (429 after retries, an unexpected answer).
    ApiError,
}

impl BlockerKind {
    pub fn as_str(self) -> &'static str {
        match self {
            BlockerKind::EmptyPlan => "empty_plan",
            BlockerKind::ClusterUnreachable => "cluster_unreachable",
            BlockerKind::Unauthorized => "unauthorized",
            BlockerKind::Timeout => "timeout",
            BlockerKind::ServerError => "server_error",
            BlockerKind::KindNotServed => "kind_not_served",
            BlockerKind::NamespaceMissing => "namespace_missing",
            BlockerKind::WorkloadMissing => "workload_missing",
            BlockerKind::RbacDenied => "rbac_denied",
            BlockerKind::Conflict => "conflict",
            BlockerKind::DryRunRejected => "dry_run_rejected",
            BlockerKind::UnexpectedChange => "unexpected_change",
            BlockerKind::ApiError => "api_error",
        }
    }

    /// The blocker a failed call stands for, when the call was decisive for the item.
    pub fn from_error(step: Step, kind: ClusterErrorKind) -> BlockerKind {
        match kind {
            ClusterErrorKind::Unreachable => BlockerKind::ClusterUnreachable,
            ClusterErrorKind::Unauthorized => BlockerKind::Unauthorized,
            ClusterErrorKind::Timeout => BlockerKind::Timeout,
            ClusterErrorKind::ServerError => BlockerKind::ServerError,
            ClusterErrorKind::Forbidden => BlockerKind::RbacDenied,
            ClusterErrorKind::Conflict => BlockerKind::Conflict,
            ClusterErrorKind::Invalid if step == Step::DryRun => BlockerKind::DryRunRejected,
            // The object went away between the read and the dry run.
            ClusterErrorKind::NotFound if step == Step::DryRun => BlockerKind::WorkloadMissing,
            ClusterErrorKind::NotFound | ClusterErrorKind::Invalid | ClusterErrorKind::Other => {
                BlockerKind::ApiError
            }
        }
    }
}

/// One blocker: `index` (with the item's namespace and name) is null for cluster-level blockers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Blocker {
    pub kind: BlockerKind,
    pub index: Option<usize>,
    pub namespace: Option<String>,
    pub name: Option<String>,
    /// One line: what failed and what the server said.
    pub detail: String,
}

impl Blocker {
    pub fn cluster(kind: BlockerKind, detail: impl Into<String>) -> Blocker {
        Blocker {
            kind,
            index: None,
            namespace: None,
            name: None,
            detail: detail.into(),
        }
    }

    /// Priority: cluster-level first, then by item index, then by kind.
    pub fn priority(&self) -> (bool, usize, BlockerKind) {
        (self.index.is_some(), self.index.unwrap_or(0), self.kind)
    }
}

/// Sorts blockers by [`Blocker::priority`].
pub fn sort_blockers(blockers: &mut [Blocker]) {
    blockers.sort_by_key(Blocker::priority);
}

/// The calls made for one item.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Step {
    Discovery,
    Namespace,
    Workload,
    CanIGet,
    CanIPatch,
    DryRun,
}

/// A failed call of one item.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepError {
    pub step: Step,
    #[serde(flatten)]
    pub error: ClusterError,
}

/// The server-side dry run of the item's exact patch.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct DryRunCheck {
    /// False when the workload could not be read (nothing to patch).
    pub attempted: bool,
    pub ok: bool,
    /// HTTP status of the answer; null when none came (timeout, unreachable) or not attempted.
    pub status: Option<u16>,
    /// The server's message when it refused.
    pub message: Option<String>,
}

/// A knob the item changes: its live value (pod template, else object annotation) and the planned
/// one (null: the patch removes the annotation).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KnobCheck {
    pub current: Option<String>,
    pub planned: Option<String>,
}

/// Everything verification established about one plan item.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ItemCheck {
    pub index: usize,
    pub namespace: String,
    pub name: String,
    pub kind: String,
    /// Plan v2: when the change reaches the trainer (`live`, `next_pod_start`, `rollout`); null for
    /// v1 items.
    pub takes_effect: Option<crate::plan::TakesEffect>,
    pub restart_required: Option<bool>,
    /// Null when unchecked or a built-in kind; false when the cluster does not serve the kind.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind_served: Option<bool>,
    /// False when the item was not checked (the cluster was unreachable or refused the credentials).
    pub checked: bool,
    pub uid: Option<String>,
    /// The version verified; apply refuses to patch an object that changed since (`verify_stale`).
    pub resource_version: Option<String>,
    pub generation: Option<i64>,
    /// Null when unknown (the call failed and the workload's existence does not settle it).
    pub namespace_exists: Option<bool>,
    pub workload_exists: Option<bool>,
    /// SelfSubjectAccessReview answers (null when the review failed).
    pub can_i_get: Option<bool>,
    pub can_i_patch: Option<bool>,
    pub dry_run: DryRunCheck,
    /// What the dry run changes, outside the server's bookkeeping paths.
    pub diff: Vec<DiffEntry>,
    /// PyTorchJob replica roles the plan patches but the live object does not have (the merge
    /// patch would create them).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub missing_roles: Vec<String>,
    pub knobs: BTreeMap<String, KnobCheck>,
    pub errors: Vec<StepError>,
    /// This item's first blocker by kind order; null when the item is fine.
    pub blocker: Option<BlockerKind>,
    /// The missing permission, for `rbac_denied`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rbac: Option<RbacDenial>,
    pub ok: bool,
}

impl ItemCheck {
    /// An item before any call.
    pub fn new(index: usize, item: &PlanItem) -> ItemCheck {
        let t = item.target();
        ItemCheck {
            index,
            namespace: t.namespace().to_string(),
            name: t.name().to_string(),
            kind: t.kind().as_str().to_string(),
            takes_effect: item.takes_effect(),
            restart_required: item.takes_effect().map(|t| t.restart_required()),
            kind_served: None,
            checked: false,
            uid: None,
            resource_version: None,
            generation: None,
            namespace_exists: None,
            workload_exists: None,
            can_i_get: None,
            can_i_patch: None,
            dry_run: DryRunCheck::default(),
            diff: vec![],
            missing_roles: vec![],
            knobs: {
                let mut knobs = BTreeMap::new();
                // Pod template first: it is what the trainer reads.
                for p in planned_knobs(item.patch()) {
                    knobs.entry(p.knob).or_insert(KnobCheck {
                        current: None,
                        planned: p.value,
                    });
                }
                knobs
            },
            errors: vec![],
            blocker: None,
            rbac: None,
            ok: false,
        }
    }

    fn error(&self, step: Step) -> Option<&ClusterError> {
        self.errors
            .iter()
            .find(|e| e.step == step)
            .map(|e| &e.error)
    }

    /// Decides the item's blockers (first by kind order) and sets `blocker`, `rbac` and `ok`.
    /// Decisive calls: the workload read, the dry run, and the namespace read when the workload was
    /// not found (it tells a missing namespace from a missing workload). Access reviews are diagnostics.
    pub fn conclude(&mut self, target: &Target, user: Option<&str>) -> Option<Blocker> {
        let mut found: Vec<(BlockerKind, String)> = vec![];
        let mut decisive = vec![Step::Discovery, Step::Workload, Step::DryRun];
        if self.workload_exists != Some(true) {
            decisive.push(Step::Namespace);
        }
        for e in &self.errors {
            // Not being allowed to read the namespace only leaves its existence unknown.
            let forbidden_namespace =
                e.step == Step::Namespace && e.error.kind == ClusterErrorKind::Forbidden;
            if decisive.contains(&e.step) && !forbidden_namespace {
                let kind = BlockerKind::from_error(e.step, e.error.kind);
                let what = match e.step {
                    Step::DryRun => "dry run",
                    Step::Workload => "read",
                    Step::Discovery => "discovery",
                    _ => "namespace",
                };
                found.push((kind, format!("{what}: {}", e.error)));
            }
        }
        if self.kind_served == Some(false) {
            let spec = crate::k8s::kinds::spec(target.kind());
            found.push((
                BlockerKind::KindNotServed,
                format!(
                    "the cluster does not serve {} ({}): is the CRD installed?",
                    spec.qualified_resource(),
                    spec.api_version()
                ),
            ));
        }
        if self.namespace_exists == Some(false) {
            found.push((
                BlockerKind::NamespaceMissing,
                format!("namespace {:?} not found", self.namespace),
            ));
        }
        if self.workload_exists == Some(false) {
            let unknown_ns = match (self.namespace_exists, self.error(Step::Namespace)) {
                (None, Some(e)) => format!(" (whether the namespace exists is unknown: {e})"),
                _ => String::new(),
            };
            found.push((
                BlockerKind::WorkloadMissing,
                format!(
                    "{} {:?} not found in namespace {:?}{unknown_ns}",
                    target.kind().resource(),
                    self.name,
                    self.namespace
                ),
            ));
        }
        let unexpected: Vec<&str> = self
            .diff
            .iter()
            .filter(|d| !d.expected)
            .map(|d| d.path.as_str())
            .collect();
        if !unexpected.is_empty() {
            let shown: Vec<&str> = unexpected.iter().take(5).copied().collect();
            let more = if unexpected.len() > 5 {
                format!(" and {} more", unexpected.len() - 5)
            } else {
                String::new()
            };
            found.push((
                BlockerKind::UnexpectedChange,
                format!(
                    "the dry run changes {} path{} besides the planned knob values: {}{more}",
                    unexpected.len(),
                    if unexpected.len() == 1 { "" } else { "s" },
                    shown.join(", ")
                ),
            ));
        }
        if !self.missing_roles.is_empty() {
            found.push((
                BlockerKind::UnexpectedChange,
                format!(
                    "the plan patches replica role(s) {} the PyTorchJob does not have (it would create them)",
                    self.missing_roles.join(", ")
                ),
            ));
        }
        found.sort_by_key(|(k, _)| *k);
        let first = found.into_iter().next();
        self.blocker = first.as_ref().map(|(k, _)| *k);
        self.ok = self.checked && first.is_none();
        if self.blocker == Some(BlockerKind::RbacDenied) {
            self.rbac = self.rbac_denial(target, user);
        }
        first.map(|(kind, detail)| Blocker {
            kind,
            index: Some(self.index),
            namespace: Some(self.namespace.clone()),
            name: Some(self.name.clone()),
            detail,
        })
    }

    /// The denied permission: parsed from the 403 (dry run first), else the request itself.
    fn rbac_denial(&self, target: &Target, user: Option<&str>) -> Option<RbacDenial> {
        let forbidden = |step| {
            self.error(step)
                .filter(|e| e.kind == ClusterErrorKind::Forbidden)
        };
        let (step, e) = [Step::DryRun, Step::Workload]
            .into_iter()
            .find_map(|s| forbidden(s).map(|e| (s, e)))?;
        if let Some(r) = &e.rbac {
            return Some(r.as_ref().clone());
        }
        let verb = if step == Step::DryRun { "patch" } else { "get" };
        Some(RbacDenial::new(
            user.unwrap_or("<your user>"),
            verb,
            crate::k8s::kinds::spec(target.kind()).plural,
            crate::k8s::kinds::spec(target.kind()).group,
            Some(target.namespace()),
            Some(target.name()),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kind_order_is_the_documented_priority() {
        let order = [
            BlockerKind::EmptyPlan,
            BlockerKind::ClusterUnreachable,
            BlockerKind::Unauthorized,
            BlockerKind::Timeout,
            BlockerKind::ServerError,
            BlockerKind::KindNotServed,
            BlockerKind::NamespaceMissing,
            BlockerKind::WorkloadMissing,
            BlockerKind::RbacDenied,
            BlockerKind::Conflict,
            BlockerKind::DryRunRejected,
            BlockerKind::UnexpectedChange,
            BlockerKind::ApiError,
        ];
        assert!(order.windows(2).all(|w| w[0] < w[1]));
        let docs = include_str!("../../../docs/kubernetes.md");
        let mut at = 0;
        for k in order {
            let needle = format!("`{}`", k.as_str());
            let pos = docs[at..].find(&needle).unwrap_or_else(|| {
                panic!("docs/kubernetes.md lists {needle} after the previous kind")
            });
            at += pos + needle.len();
            assert_eq!(
                serde_json::to_value(k).unwrap(),
                serde_json::Value::String(k.as_str().into())
            );
        }
    }

    #[test]
    fn blockers_sort_cluster_first_then_index_then_kind() {
        let item = |kind, index| Blocker {
            kind,
            index: Some(index),
            namespace: Some("ml".into()),
            name: Some("t".into()),
            detail: String::new(),
        };
        let mut b = vec![
            item(BlockerKind::NamespaceMissing, 2),
            item(BlockerKind::UnexpectedChange, 0),
            Blocker::cluster(BlockerKind::EmptyPlan, ""),
            item(BlockerKind::Timeout, 2),
        ];
        sort_blockers(&mut b);
        let got: Vec<(Option<usize>, BlockerKind)> = b.iter().map(|b| (b.index, b.kind)).collect();
        assert_eq!(
            got,
            [
                (None, BlockerKind::EmptyPlan),
                (Some(0), BlockerKind::UnexpectedChange),
                (Some(2), BlockerKind::Timeout),
                (Some(2), BlockerKind::NamespaceMissing),
            ]
        );
    }

    #[test]
    fn errors_map_to_blockers_by_step() {
        use ClusterErrorKind as E;
        assert_eq!(
            BlockerKind::from_error(Step::DryRun, E::Invalid),
            BlockerKind::DryRunRejected
        );
        assert_eq!(
            BlockerKind::from_error(Step::Workload, E::Invalid),
            BlockerKind::ApiError
        );
        assert_eq!(
            BlockerKind::from_error(Step::DryRun, E::NotFound),
            BlockerKind::WorkloadMissing
        );
        assert_eq!(
            BlockerKind::from_error(Step::Namespace, E::Unreachable),
            BlockerKind::ClusterUnreachable
        );
    }
}
