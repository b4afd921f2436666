//! Kubernetes Events from `closed-loop watch --apply` on its target workload: one per effect
//! verdict, per apply, per block and per rollback (see `WorkloadEvent`'s constructors for the
//! words). An Event is a notice: a failure to post one is a warning on stderr and a
//! `watch_event_failed` explain line, counted, and the loop goes on. The connection is made at
//! the first event and kept.

use serde_json::json;

use crate::apply::ApplyResult;
use crate::artifacts::ExplainLog;
use crate::closed_loop::effect::ChangeEffect;
use crate::closed_loop::live::SilenceEvent;
use crate::k8s::{Cluster, ClusterApi, ConnectOptions, EventRecorder, Workload, WorkloadEvent};
use crate::plan::Target;

pub(super) struct WatchEvents {
    connect: ConnectOptions,
    target: Target,
    conn: Option<(Cluster, EventRecorder)>,
    /// The target as last read (its uid is what `kubectl describe` matches).
    workload: Option<Workload>,
    /// Failures before a recorder existed (connect, reading the workload).
    failed_early: u64,
}

impl WatchEvents {
    pub(super) fn new(connect: &ConnectOptions, target: &Target) -> WatchEvents {
        WatchEvents {
            connect: connect.clone(),
            target: target.clone(),
            conn: None,
            workload: None,
            failed_early: 0,
        }
    }

    /// One Event per verdict.
    pub(super) fn effects(
        &mut self,
        effects: &[ChangeEffect],
        explain: &mut ExplainLog,
    ) -> anyhow::Result<()> {
        for e in effects {
            self.post(&WorkloadEvent::effect(e), explain)?;
        }
        Ok(())
    }

    /// The Event of one apply's result (none when there was nothing to apply): `RolledBack` when
    /// the decision was the loop's rollback (the session knows, across restarts too).
    pub(super) fn apply(
        &mut self,
        decision_window: u64,
        rollback: bool,
        changes: &[(String, f64, f64)],
        result: Option<&ApplyResult>,
        explain: &mut ExplainLog,
    ) -> anyhow::Result<()> {
        let moves = changes.iter().map(|(k, f, t)| (k.as_str(), *f, *t));
        match WorkloadEvent::of_apply(decision_window, moves, result, rollback) {
            Some(event) => self.post(&event, explain),
            None => Ok(()),
        }
    }

    /// Posted and failed counts, for the final explain line.
    pub(super) fn counts(&self) -> (u64, u64) {
        match &self.conn {
            Some((_, rec)) => (rec.posted(), rec.failed() + self.failed_early),
            None => (0, self.failed_early),
        }
    }

    /// A possible hang told, or its end.
    pub(super) fn silence(
        &mut self,
        ev: &SilenceEvent,
        explain: &mut ExplainLog,
    ) -> anyhow::Result<()> {
        let event = match ev {
            SilenceEvent::Started(s) => WorkloadEvent::trainer_silent(s),
            SilenceEvent::Ended {
                silent_ms,
                after_step,
            } => WorkloadEvent::trainer_resumed(*silent_ms, *after_step),
        };
        self.post(&event, explain)
    }

    fn post(&mut self, event: &WorkloadEvent, explain: &mut ExplainLog) -> anyhow::Result<()> {
        match self.try_post(event) {
            Ok(()) => explain.event("watch_k8s_event", json!(event)),
            Err(e) => {
                eprintln!(
                    "warning: cannot post the Kubernetes Event {} on {}/{}: {e}",
                    event.reason,
                    self.target.kind().resource(),
                    self.target.name()
                );
                explain.event("watch_event_failed", json!({"event": event, "error": e}))
            }
        }
    }

    fn try_post(&mut self, event: &WorkloadEvent) -> Result<(), String> {
        if self.conn.is_none() {
            let cluster = Cluster::connect(&self.connect).map_err(|e| {
                self.failed_early += 1;
                e.to_string()
            })?;
            let recorder = cluster.api().event_recorder(None);
            self.conn = Some((cluster, recorder));
        }
        let (cluster, recorder) = self.conn.as_ref().expect("connected above");
        if self.workload.is_none() {
            match cluster.block_on(cluster.api().get_workload(&self.target)) {
                Ok(Some(w)) => self.workload = Some(w),
                Ok(None) => {
                    self.failed_early += 1;
                    return Err(format!(
                        "{}/{} not found in namespace {}",
                        self.target.kind().resource(),
                        self.target.name(),
                        self.target.namespace()
                    ));
                }
                Err(e) => {
                    self.failed_early += 1;
                    return Err(e.to_string());
                }
            }
        }
        let workload = self.workload.as_ref().expect("read above");
        cluster
            .block_on(recorder.publish(workload, event))
            .map_err(|e| e.to_string())
    }
}
