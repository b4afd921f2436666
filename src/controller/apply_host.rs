//! The controller's side of the session's apply protocol ([`ApplyHost`]): checkpoints go to the
//! workload's state ConfigMap, and an apply passes, in order,
//!
//! 1. the cluster-wide kill switch (`kill-switch` in the settings ConfigMap, read fresh; a
//!    ConfigMap that cannot be read counts as on),
//! 2. shard leadership: only the leader of the workload's shard writes, and only with
//!    [`Timing::apply_margin`](super::worker::Timing) of it left,
//! 3. then exactly the gates of `k8s apply` through [`closed_loop_apply`] — the process kill
//!    switch and the workload's `modekeeper.io/kill-switch` annotation, the passport, the license
//!    (read fresh from the Secret `modekeeper-license`), a fresh verify of this plan, unchanged
//!    objects — writing its plan, reports and rollback plan under the work directory.
//!
//! Runs on a blocking thread; cluster calls of its own go through the runtime's handle.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use serde_json::json;

use super::metrics::WorkloadLabels;
use super::settings::ControllerSettings;
use super::store::{LastEvent, WorkloadKey};
use super::worker::{Book, Shared, checkpoint, now_text};
use crate::apply::gate::Blocked;
use crate::apply::{ApplyResult, OneShot, OneShotOptions, closed_loop_apply};
use crate::artifacts::{ExplainLog, OutDir};
use crate::closed_loop::live::{
    ApplyHost, ApplyOutcome, ApplyRecord, ApplyRequest, PlanSpec, Session, write_plan,
};
use crate::install::LICENSE_SECRET;
use crate::k8s::{Workload, WorkloadEvent};
use crate::passport::Passport;

/// Why the apply protocol stopped midway (a checkpoint that could not be saved, a session error):
/// the session is resumed from its last checkpoint.
#[derive(Debug)]
pub struct ApplyStopped(pub String);

impl From<crate::closed_loop::live::SessionError> for ApplyStopped {
    fn from(e: crate::closed_loop::live::SessionError) -> Self {
        ApplyStopped(e.to_string())
    }
}

pub(super) struct ControllerApply {
    pub sh: Arc<Shared>,
    pub rt: tokio::runtime::Handle,
    pub workload: Arc<Workload>,
    pub key: WorkloadKey,
    pub labels: WorkloadLabels,
    pub passport: Passport,
    /// Where the passport came from (`template:NAME`, `configmap:NS/NAME key FILE`), for reports.
    pub passport_source: String,
    /// Advanced policies run: the license must grant them too.
    pub advanced: bool,
    pub shard: u32,
    pub book: Book,
}

impl ControllerApply {
    /// This workload's directory for apply artifacts: `<work dir>/<namespace>/<name>-<uid>`.
    fn dir(&self) -> PathBuf {
        let t = &self.workload.target;
        let uid: String = self.workload.uid.chars().take(8).collect();
        self.sh.work_dir.join(t.namespace()).join(format!(
            "{}-{}-{uid}",
            t.kind().as_str().to_ascii_lowercase(),
            t.name()
        ))
    }

    /// The cluster-wide kill switch, fail-safe.
    fn cluster_kill_switch(&self) -> Option<Blocked> {
        let read = self.rt.block_on(
            self.sh
                .cluster
                .get_configmap(&self.sh.namespace, &self.sh.settings_configmap),
        );
        let what = format!("{}/{}", self.sh.namespace, self.sh.settings_configmap);
        match read {
            Ok(cm) => {
                let data = cm.map(|c| c.data).unwrap_or_default();
                let k = ControllerSettings::kill_switch_of(&data);
                k.active.then(|| Blocked {
                    gate: "kill_switch_cluster",
                    reason: "kill_switch_active",
                    detail: format!(
                        "{} ({what})",
                        k.signal
                            .unwrap_or_else(|| "the cluster kill switch is on".into())
                    ),
                })
            }
            Err(e) => Some(Blocked {
                gate: "kill_switch_cluster",
                reason: "kill_switch_active",
                detail: format!(
                    "the settings ConfigMap {what} cannot be read, so the cluster kill switch counts as on: {e}"
                ),
            }),
        }
    }

    /// The license Secret's files, written privately for the license gate; `None` fields when
    /// the Secret or a key is absent (the gate then blocks with `license_missing`).
    fn license_files(&self, dir: &Path) -> anyhow::Result<(Option<PathBuf>, Option<PathBuf>)> {
        let secret = self
            .rt
            .block_on(
                self.sh
                    .cluster
                    .get_secret(&self.sh.namespace, LICENSE_SECRET),
            )
            .with_context(|| {
                format!("reading the Secret {}/{LICENSE_SECRET}", self.sh.namespace)
            })?;
        let Some(data) = secret else {
            return Ok((None, None));
        };
        let keys = dir.join("license");
        crate::private_file::check_private_dir(&keys, true)
            .map_err(|e| anyhow::anyhow!("{}: {e}", keys.display()))?;
        let write = |name: &str| -> anyhow::Result<Option<PathBuf>> {
            let Some(bytes) = data.get(name) else {
                return Ok(None);
            };
            let path = keys.join(name);
            crate::artifacts::write_atomic(&path, |w| w.write_all(bytes))?;
            Ok(Some(path))
        };
        Ok((write("license.json")?, write("keyring.json")?))
    }

    fn blocked_record(
        &mut self,
        req: &ApplyRequest,
        b: Blocked,
        changes: &[(String, f64, f64)],
    ) -> ApplyRecord {
        self.tell(req, changes, Some(&ApplyResult::Blocked(b.clone())));
        ApplyRecord {
            outcome: ApplyOutcome::Blocked {
                reason: b.reason.to_string(),
            },
            attempted: false,
            apply_ok: None,
            verify_ok: None,
        }
    }

    /// The apply's Event (`RolledBack` for the loop's rollback, also one decided before a
    /// restart: the session keeps that in its state), metrics and summary line.
    fn tell(
        &mut self,
        req: &ApplyRequest,
        changes: &[(String, f64, f64)],
        result: Option<&ApplyResult>,
    ) {
        let (decision, rollback) = (req.decision_window, req.rollback);
        let moves = changes.iter().map(|(k, f, t)| (k.as_str(), *f, *t));
        let m = &self.sh.metrics;
        match result {
            Some(ApplyResult::Applied) => m.applied(&self.labels),
            Some(ApplyResult::Blocked(b)) => m.apply_blocked(&self.labels, b.reason),
            Some(ApplyResult::Failed(_)) => m.apply_failed(&self.labels),
            None => {}
        }
        if let Some(ev) = WorkloadEvent::of_apply(decision, moves, result, rollback) {
            self.book.summary.last_event = Some(LastEvent {
                reason: ev.reason.clone(),
                note: ev.note.clone(),
                at: now_text(),
            });
            self.sh.events.post(&self.workload, ev);
        }
    }

    fn status_of(result: Option<&ApplyResult>) -> String {
        match result {
            None => "no changes".into(),
            Some(ApplyResult::Applied) => "applied".into(),
            Some(ApplyResult::Blocked(b)) => format!("blocked: {}", b.reason),
            Some(ApplyResult::Failed(m)) => format!("failed: {m}"),
        }
    }

    fn gated_apply(&mut self, req: &ApplyRequest) -> anyhow::Result<OneShot> {
        let dir = self.dir();
        let out = OutDir::create(&dir, chrono::Utc::now())?;
        let mut explain = ExplainLog::open(&dir)?;
        let (license, keyring) = self.license_files(&dir)?;
        let decision = req.decision_window;
        let spec = PlanSpec {
            target: &self.workload.target,
            passport: &self.passport,
            knobs_configmap: None,
        };
        let written = write_plan(
            &out,
            spec,
            &req.changes,
            &format!("k8s_plan_w{decision}.json"),
            false,
        )?;
        let proposed: Vec<&str> = req.changes.iter().map(|c| c.knob.as_str()).collect();
        let opts = OneShotOptions {
            connect: self.sh.connect.clone(),
            license,
            keyring,
            advanced_chords: self.advanced,
            passport: self.passport.clone(),
            passport_source: self.passport_source.clone(),
        };
        let one = closed_loop_apply(
            &written.plan,
            &written.path,
            &proposed,
            &opts,
            &out,
            &mut explain,
        )?;
        explain.event(
            "controller_apply",
            json!({"decision_window": decision, "plan": written.path,
                   "outcome": ApplyOutcome::of_result(one.result.as_ref()), "fields": one.fields,
                   "replica": self.sh.identity}),
        )?;
        Ok(one)
    }
}

impl ApplyHost for ControllerApply {
    type Error = ApplyStopped;

    fn checkpoint(&mut self, session: &Session) -> Result<(), ApplyStopped> {
        let store = &self.sh.store;
        self.rt
            .block_on(checkpoint(store, &self.key, session, &mut self.book))
            .map_err(ApplyStopped)
    }

    fn apply(
        &mut self,
        _session: &Session,
        req: &ApplyRequest,
    ) -> Result<ApplyRecord, ApplyStopped> {
        let changes: Vec<(String, f64, f64)> = req
            .changes
            .iter()
            .map(|c| (c.knob.clone(), c.from, c.to))
            .collect();
        if let Some(b) = self.cluster_kill_switch() {
            self.book.summary.apply_status = format!("blocked: {} (cluster kill switch)", b.reason);
            return Ok(self.blocked_record(req, b, &changes));
        }
        let left = self.sh.ownership.leadership_left(self.shard);
        if left < self.sh.timing.apply_margin {
            let b = Blocked {
                gate: "leadership",
                reason: "not_leader",
                detail: format!(
                    "this replica ({}) no longer leads shard {} with {:?} to spare (left: {left:?})",
                    self.sh.identity, self.shard, self.sh.timing.apply_margin
                ),
            };
            self.book.summary.apply_status = format!("blocked: {}", b.reason);
            return Ok(self.blocked_record(req, b, &changes));
        }
        // An error before the gated apply ran (the Secret, the work directory) wrote nothing.
        let (result, attempted, apply_ok, verify_ok) = match self.gated_apply(req) {
            Ok(one) => (
                one.result,
                one.fields.apply_attempted,
                one.fields.apply_ok,
                one.fields.verify_ok,
            ),
            Err(e) => (
                Some(ApplyResult::Failed(format!("{e:#}"))),
                false,
                None,
                None,
            ),
        };
        self.book.summary.apply_status = Self::status_of(result.as_ref());
        if matches!(result, Some(ApplyResult::Applied)) {
            self.book.summary.knobs = req.knobs.clone();
        }
        self.tell(req, &changes, result.as_ref());
        Ok(ApplyRecord {
            outcome: ApplyOutcome::of_result(result.as_ref()),
            attempted,
            apply_ok,
            verify_ok,
        })
    }
}
