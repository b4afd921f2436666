//! The writes: each plan item's JSON merge patch sent for real (`fieldManager=modekeeper`), with the
//! resourceVersion verify saw as a precondition, in plan order, stopping at the first failure. A 409
//! (the object changed, or another field manager's conflict) is reported as `conflict` and never
//! retried or forced. Every item leaves an audit entry: the request, the status, a truncated
//! response, and exactly which knob annotations changed.

use serde::Serialize;
use serde_json::{Value, json};

use super::rollback::{KnobChange, rollback_item, stored_changes};
use crate::k8s::{
    Cluster, ClusterApi, ClusterError, FIELD_MANAGER, KnobMergePatch, PatchMode, Workload,
};
use crate::plan::{Plan, PlanItem, Target};

/// Responses and error texts kept per item in the report.
pub const MAX_AUDIT_BYTES: usize = 4096;

/// What happened to one item.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ItemStatus {
    /// The patch was stored and changed at least one knob.
    Applied,
    /// The patch was stored and changed nothing (the knobs already had the planned values).
    Unchanged,
    /// The patch failed.
    Failed,
    /// Not sent: an earlier item failed.
    NotAttempted,
}

/// The audit entry of one item (`actions[]` in the report).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ItemAudit {
    pub index: usize,
    pub namespace: String,
    pub name: String,
    pub kind: String,
    /// Plan v2: when the change reaches the trainer (`live`, `next_pod_start`, `rollout`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub takes_effect: Option<crate::plan::TakesEffect>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub restart_required: Option<bool>,
    pub patch_attempted: bool,
    pub ok: bool,
    pub status: ItemStatus,
    /// 0 when the patch was stored, 1 when it failed, null when not attempted.
    pub rc: Option<i32>,
    /// The request as sent: method, path, query, content type, body.
    pub request: Option<Value>,
    /// The HTTP status (200 on success; the error's status; null when no answer came).
    pub http_status: Option<u16>,
    /// The error class (`conflict`, `forbidden`, `timeout`, ...), null on success.
    pub error_kind: Option<String>,
    /// The response: the stored object's JSON, cut to [`MAX_AUDIT_BYTES`].
    pub stdout: Option<String>,
    /// The error message, cut to [`MAX_AUDIT_BYTES`].
    pub stderr: Option<String>,
    pub truncated: bool,
    pub resource_version_before: Option<String>,
    pub resource_version_after: Option<String>,
    /// Whether the object changed: true/false, or null when a failed call left it unknown.
    pub changed: Option<bool>,
    pub changes: Vec<KnobChange>,
}

/// Cuts `s` to at most `max` bytes on a character boundary.
pub fn truncate(s: &str, max: usize) -> (String, bool) {
    if s.len() <= max {
        return (s.to_string(), false);
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    (s[..end].to_string(), true)
}

/// The API path of a target.
pub fn api_path(t: &Target) -> String {
    crate::k8s::kinds::spec(t.kind()).object_path(t.namespace(), t.name())
}

impl ItemAudit {
    fn new(index: usize, item: &PlanItem) -> ItemAudit {
        let t = item.target();
        ItemAudit {
            index,
            namespace: t.namespace().to_string(),
            name: t.name().to_string(),
            kind: t.kind().as_str().to_string(),
            takes_effect: item.takes_effect(),
            restart_required: item.takes_effect().map(|t| t.restart_required()),
            patch_attempted: false,
            ok: false,
            status: ItemStatus::NotAttempted,
            rc: None,
            request: None,
            http_status: None,
            error_kind: None,
            stdout: None,
            stderr: None,
            truncated: false,
            resource_version_before: None,
            resource_version_after: None,
            changed: Some(false),
            changes: vec![],
        }
    }

    fn fail(&mut self, e: &ClusterError) {
        self.ok = false;
        self.status = ItemStatus::Failed;
        self.rc = Some(1);
        self.http_status = e.status;
        self.error_kind = Some(e.kind.as_str().to_string());
        let (text, cut) = truncate(&e.to_string(), MAX_AUDIT_BYTES);
        self.stderr = Some(text);
        self.truncated |= cut;
    }
}

/// The result of the write phase.
#[derive(Debug, Clone, PartialEq)]
pub struct WriteOutcome {
    pub actions: Vec<ItemAudit>,
    /// Rollback items of every item that changed, in plan order.
    pub rollback: Vec<PlanItem>,
    /// The item that failed and why.
    pub failure: Option<(usize, ClusterError)>,
    /// Items whose state after a failure could not be read back.
    pub unknown: Vec<usize>,
    /// An item whose stored change has no expressible rollback (the writes stopped there).
    pub rollback_problem: Option<(usize, String)>,
}

/// Patches every item of `plan` in order (`live[i]` is item i as read just before, at the version
/// verify saw). `on_item` is called after each attempted item (for explain events).
pub fn write_items<A: ClusterApi>(
    cluster: &Cluster<A>,
    plan: &Plan,
    live: &[Workload],
    mut on_item: impl FnMut(&ItemAudit) -> anyhow::Result<()>,
) -> anyhow::Result<WriteOutcome> {
    let mut out = WriteOutcome {
        actions: plan
            .items()
            .iter()
            .enumerate()
            .map(|(i, item)| ItemAudit::new(i, item))
            .collect(),
        rollback: vec![],
        failure: None,
        unknown: vec![],
        rollback_problem: None,
    };
    for (i, item) in plan.items().iter().enumerate() {
        let before = &live[i];
        let target = item.target();
        let body = KnobMergePatch::new(item.patch(), Some(&before.resource_version));
        let audit = &mut out.actions[i];
        audit.patch_attempted = true;
        audit.resource_version_before = Some(before.resource_version.clone());
        audit.request = Some(json!({
            "method": "PATCH",
            "path": api_path(target),
            "query": {"fieldManager": FIELD_MANAGER},
            "content_type": "application/merge-patch+json",
            "body": body.as_json(),
        }));
        match cluster.block_on(
            cluster
                .api()
                .patch_workload(target, &body, PatchMode::Write),
        ) {
            Ok(after) => {
                audit.ok = true;
                audit.rc = Some(0);
                audit.http_status = Some(200);
                let (text, cut) = truncate(&after.object.to_string(), MAX_AUDIT_BYTES);
                audit.stdout = Some(text);
                audit.truncated = cut;
                audit.resource_version_after = Some(after.resource_version.clone());
                audit.changes = stored_changes(item.patch(), before, &after);
                audit.changed = Some(!audit.changes.is_empty());
                audit.status = if audit.changes.is_empty() {
                    ItemStatus::Unchanged
                } else {
                    ItemStatus::Applied
                };
            }
            Err(e) => {
                audit.fail(&e);
                // A failed call may still have been stored (a timeout after the write, a 5xx from a
                // proxy): read the object back so the report says exactly what changed.
                match cluster.block_on(cluster.api().get_workload(target)) {
                    Ok(Some(now)) => {
                        audit.resource_version_after = Some(now.resource_version.clone());
                        audit.changes = stored_changes(item.patch(), before, &now);
                        audit.changed = Some(!audit.changes.is_empty());
                    }
                    Ok(None) => {
                        audit.changed = Some(false);
                    }
                    Err(read) => {
                        audit.changed = None;
                        let (text, cut) = truncate(
                            &format!(
                                "{}; reading it back also failed: {read}",
                                audit.stderr.clone().unwrap_or_default()
                            ),
                            MAX_AUDIT_BYTES,
                        );
                        audit.stderr = Some(text);
                        audit.truncated |= cut;
                        out.unknown.push(i);
                    }
                }
                out.failure = Some((i, e));
            }
        }
        // Checked before any write for the planned values; the server may still have stored
        // something else (a mutating webhook), so it is checked again on what it stored.
        match rollback_item(item, &audit.changes) {
            Ok(Some(r)) => out.rollback.push(r),
            Ok(None) => {}
            Err(e) => out.rollback_problem = Some((i, e)),
        }
        on_item(&out.actions[i])?;
        if out.failure.is_some() || out.rollback_problem.is_some() {
            break;
        }
    }
    Ok(out)
}
