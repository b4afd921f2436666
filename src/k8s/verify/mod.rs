//! Plan verification against a live cluster, read-only: for every item, does the namespace exist,
//! does the workload exist (its uid and resourceVersion), may we get and patch it (access reviews),
//! does the server accept the exact patch as a dry run, and does that dry run change nothing but the
//! planned knob annotations?
//!
//! The cluster is probed first (`GET /version`): an unreachable server, a timeout or refused
//! credentials is one cluster-level blocker, never a "missing namespace". Items are then checked
//! concurrently (bounded), every item is checked (no fail-fast), and each gets at most one blocker;
//! the report's blocker is the first by [`Blocker::priority`]. An empty plan is not ok.
//!
//! The dry run carries the resourceVersion just read as a precondition, so it is the request apply
//! will send and a concurrent writer shows up as a conflict, not as a spurious diff.

mod model;
mod report;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};

use futures_util::StreamExt;
use serde::{Deserialize, Serialize};

pub use model::{
    Blocker, BlockerKind, DryRunCheck, ItemCheck, KnobCheck, Step, StepError, sort_blockers,
};
pub use report::{
    Checks, Details, PlanFacts, Timings, ToolInfo, VERIFY_REPORT, VERIFY_SCHEMA, VerifyReport,
    VerifySettings,
};

use super::{
    AccessCheck, ClusterApi, ClusterError, ClusterErrorKind, KnobMergePatch, NamespaceInfo,
    PatchMode, RulesReview, Workload, diff_workloads,
};
use crate::plan::{Plan, PlanItem, WorkloadKind};

/// Items checked at once unless told otherwise.
pub const DEFAULT_CONCURRENCY: usize = 16;

/// The `GET /version` probe.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServerCheck {
    pub ok: bool,
    pub version: Option<String>,
    pub error: Option<ClusterError>,
}

/// Everything a verification found.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VerifyOutcome {
    pub server: ServerCheck,
    pub items: Vec<ItemCheck>,
    /// Every blocker, sorted by priority; the first is the report's `verify_blocker`.
    pub blockers: Vec<Blocker>,
}

impl VerifyOutcome {
    pub fn ok(&self) -> bool {
        self.blockers.is_empty()
    }

    pub fn blocker(&self) -> Option<&Blocker> {
        self.blockers.first()
    }
}

fn cluster_blocker(e: &ClusterError) -> Option<Blocker> {
    let kind = match e.kind {
        ClusterErrorKind::Unreachable => BlockerKind::ClusterUnreachable,
        ClusterErrorKind::Unauthorized => BlockerKind::Unauthorized,
        ClusterErrorKind::Timeout => BlockerKind::Timeout,
        _ => return None,
    };
    Some(Blocker::cluster(kind, e.to_string()))
}

/// Verifies `plan` with at most `concurrency` items in flight.
pub async fn verify_plan<A: ClusterApi>(api: &A, plan: &Plan, concurrency: usize) -> VerifyOutcome {
    let concurrency = concurrency.max(1);
    let mut blockers = vec![];
    if plan.is_empty() {
        blockers.push(Blocker::cluster(
            BlockerKind::EmptyPlan,
            "the plan has no items: there is nothing to verify or apply",
        ));
    }
    let server = match api.server_version().await {
        Ok(v) => ServerCheck {
            ok: true,
            version: Some(v.git_version),
            error: None,
        },
        Err(e) => ServerCheck {
            ok: false,
            version: None,
            error: Some(e),
        },
    };
    let items = match server.error.as_ref().and_then(cluster_blocker) {
        Some(b) => {
            blockers.push(b);
            plan.items()
                .iter()
                .enumerate()
                .map(|(i, item)| ItemCheck::new(i, item))
                .collect()
        }
        None => {
            let checked = check_items(api, plan, concurrency).await;
            let mut items = Vec::with_capacity(checked.len());
            for (item, blocker) in checked {
                blockers.extend(blocker);
                items.push(item);
            }
            items
        }
    };
    sort_blockers(&mut blockers);
    VerifyOutcome {
        server,
        items,
        blockers,
    }
}

/// Checks every item, `concurrency` at a time, in plan order. Once a call finds the server
/// unreachable or the credentials refused, items not yet started are left unchecked: they would
/// only repeat the same failure.
async fn check_items<A: ClusterApi>(
    api: &A,
    plan: &Plan,
    concurrency: usize,
) -> Vec<(ItemCheck, Option<Blocker>)> {
    let names: BTreeSet<&str> = plan
        .items()
        .iter()
        .map(|i| i.target().namespace())
        .collect();
    let namespaces: BTreeMap<&str, Result<Option<NamespaceInfo>, ClusterError>> =
        futures_util::stream::iter(names)
            .map(|ns| async move { (ns, api.get_namespace(ns).await) })
            .buffer_unordered(concurrency)
            .collect()
            .await;
    // One discovery request per custom kind in the plan, not per item.
    let custom: BTreeSet<WorkloadKind> = plan
        .items()
        .iter()
        .map(|i| i.target().kind())
        .filter(|k| super::kinds::spec(*k).custom)
        .collect();
    let served: BTreeMap<WorkloadKind, Result<bool, ClusterError>> =
        futures_util::stream::iter(custom)
            .map(|k| async move { (k, api.kind_served(k).await) })
            .buffer_unordered(concurrency)
            .collect()
            .await;
    // Reads and permissions per namespace, not per item: one SelfSubjectRulesReview per namespace
    // and one LIST per namespace and kind. When either fails (no `list` permission, an old server),
    // the items fall back to a GET each and access reviews.
    let rules: BTreeMap<&str, Result<RulesReview, ClusterError>> =
        futures_util::stream::iter(namespaces.keys().copied())
            .map(|ns| async move { (ns, api.review_rules(ns).await) })
            .buffer_unordered(concurrency)
            .collect()
            .await;
    let kinds: BTreeSet<(&str, WorkloadKind)> = plan
        .items()
        .iter()
        .map(|i| (i.target().namespace(), i.target().kind()))
        .filter(|(_, k)| served.get(k).is_none_or(|s| matches!(s, Ok(true))))
        .collect();
    let listed: BTreeMap<(&str, WorkloadKind), Result<Vec<Workload>, ClusterError>> =
        futures_util::stream::iter(kinds)
            .map(|(ns, k)| async move { ((ns, k), api.list_objects(ns, k).await) })
            .buffer_unordered(concurrency)
            .collect()
            .await;
    let stop = AtomicBool::new(false);
    let (namespaces, served, stop) = (&namespaces, &served, &stop);
    let (rules, listed) = (&rules, &listed);
    futures_util::stream::iter(plan.items().iter().enumerate())
        .map(|(index, item)| async move {
            let mut check = ItemCheck::new(index, item);
            if stop.load(Ordering::Relaxed) {
                return (check, None);
            }
            let namespace = &namespaces[item.target().namespace()];
            let t = item.target();
            let shared = Shared {
                namespace,
                served: served.get(&t.kind()),
                rules: rules.get(t.namespace()).and_then(|r| r.as_ref().ok()),
                listed: listed
                    .get(&(t.namespace(), t.kind()))
                    .and_then(|l| l.as_ref().ok()),
            };
            let blocker = check_item(api, item, shared, &mut check).await;
            let gone = check.errors.iter().any(|e| {
                matches!(
                    e.error.kind,
                    ClusterErrorKind::Unreachable | ClusterErrorKind::Unauthorized
                )
            });
            if gone {
                stop.store(true, Ordering::Relaxed);
            }
            (check, blocker)
        })
        .buffered(concurrency)
        .collect()
        .await
}

/// What was read once for many items.
struct Shared<'a> {
    namespace: &'a Result<Option<NamespaceInfo>, ClusterError>,
    served: Option<&'a Result<bool, ClusterError>>,
    rules: Option<&'a RulesReview>,
    listed: Option<&'a Vec<Workload>>,
}

/// The item's object: from the namespace's LIST when there is one, else a GET.
async fn read<A: ClusterApi>(
    api: &A,
    target: &crate::plan::Target,
    listed: Option<&Vec<Workload>>,
) -> Result<Option<Workload>, ClusterError> {
    match listed {
        Some(list) => Ok(list
            .iter()
            .find(|w| w.target.name() == target.name())
            .cloned()),
        None => api.get_workload(target).await,
    }
}

/// May we? From the namespace's rules review when it decides, else an access review.
async fn may<A: ClusterApi>(
    api: &A,
    check: &AccessCheck,
    rules: Option<&RulesReview>,
) -> Result<bool, ClusterError> {
    match rules.and_then(|r| r.decide(check)) {
        Some(yes) => Ok(yes),
        None => api.review_access(check).await.map(|d| d.allowed),
    }
}

async fn check_item<A: ClusterApi>(
    api: &A,
    item: &PlanItem,
    shared: Shared<'_>,
    check: &mut ItemCheck,
) -> Option<Blocker> {
    let Shared {
        namespace,
        served,
        rules,
        listed,
    } = shared;
    let target = item.target();
    check.checked = true;
    let fail = |step: Step, error: ClusterError, errors: &mut Vec<StepError>| {
        errors.push(StepError { step, error });
    };
    match served {
        None => {}
        Some(Ok(yes)) => {
            check.kind_served = Some(*yes);
            if !yes {
                // Nothing of this kind can be read or patched: say so, not "not found".
                return check.conclude(target, api.identity().user.as_deref());
            }
        }
        Some(Err(e)) => {
            fail(Step::Discovery, e.clone(), &mut check.errors);
            return check.conclude(target, api.identity().user.as_deref());
        }
    }
    match namespace {
        Ok(ns) => check.namespace_exists = Some(ns.is_some()),
        Err(e) => fail(Step::Namespace, e.clone(), &mut check.errors),
    }
    let get = AccessCheck::on_workload("get", target);
    let patch = AccessCheck::on_workload("patch", target);
    let (workload, can_get, can_patch) = futures_util::future::join3(
        read(api, target, listed),
        may(api, &get, rules),
        may(api, &patch, rules),
    )
    .await;
    match can_get {
        Ok(d) => check.can_i_get = Some(d),
        Err(e) => fail(Step::CanIGet, e, &mut check.errors),
    }
    match can_patch {
        Ok(d) => check.can_i_patch = Some(d),
        Err(e) => fail(Step::CanIPatch, e, &mut check.errors),
    }
    let live = match workload {
        Ok(Some(w)) => {
            check.workload_exists = Some(true);
            // The workload lives there, whatever the namespace read said.
            check.namespace_exists = Some(true);
            check.uid = Some(w.uid.clone());
            check.resource_version = Some(w.resource_version.clone());
            check.generation = w.generation;
            check.missing_roles = item
                .patch()
                .roles
                .iter()
                .filter(|r| !w.roles.contains(r))
                .cloned()
                .collect();
            for (knob, k) in check.knobs.iter_mut() {
                let key = super::knob_annotation(knob);
                k.current = w
                    .template_annotations
                    .get(&key)
                    .or_else(|| w.annotations.get(&key))
                    .or_else(|| w.data.get(knob))
                    .cloned();
            }
            Some(w)
        }
        Ok(None) => {
            check.workload_exists = Some(false);
            None
        }
        Err(e) => {
            fail(Step::Workload, e, &mut check.errors);
            None
        }
    };
    if let Some(live) = live {
        let body = KnobMergePatch::new(item.patch(), Some(&live.resource_version));
        check.dry_run.attempted = true;
        match api.patch_workload(target, &body, PatchMode::DryRun).await {
            Ok(result) => {
                check.dry_run.ok = true;
                check.dry_run.status = Some(200);
                check.diff = diff_workloads(&live.object, &result.object, item.patch());
            }
            Err(e) => {
                check.dry_run.status = e.status;
                check.dry_run.message = Some(e.message.clone());
                fail(Step::DryRun, e, &mut check.errors);
            }
        }
    }
    check.conclude(target, api.identity().user.as_deref())
}
