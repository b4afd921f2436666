//! Kubernetes Events on a workload: what ModeKeeper did and why, where people look
//! (`kubectl get events`, `kubectl describe`). Posting goes through kube-runtime's
//! [`Recorder`](kube::runtime::events::Recorder) (events.k8s.io/v1), which turns a repeat of
//! the same event (same type, reason, action and workload, within six minutes) into a series
//! update of the first one instead of a new object, as every Kubernetes controller does.
//!
//! An Event is a notice, never a gate: a failure to post is returned to the caller to log and
//! counted here ([`EventRecorder::failed`]); nothing in the loop waits on it or stops for it.
//! [`WorkloadEvent`] is plain data; its constructors say what each occasion of the loop reads
//! like (an effect verdict, an apply, a block, a rollback), so the watch and the controller say
//! the same things.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use k8s_openapi::api::core::v1::ObjectReference;
use kube::runtime::events::{Event, EventType as KubeEventType, Recorder, Reporter};

use super::{ClusterError, KubeCluster, Workload, kinds};
use crate::closed_loop::effect::{ChangeEffect, Verdict};
use crate::closed_loop::live::Silence;
use crate::passport::format_knob_value;

/// `reportingController` of every Event ModeKeeper posts.
pub const REPORTING_CONTROLLER: &str = "modekeeper";

/// The apiserver refuses a longer note (events.k8s.io/v1 validation).
pub const MAX_NOTE_BYTES: usize = 1024;
/// The longest wait for one Event when the connection has no request timeout (`0`: no limit):
/// an Event is a notice, and a hanging Events endpoint must not stall the loop that posts it
/// (its next apply, its rollbacks).
pub const MAX_EVENT_WAIT: Duration = super::config::DEFAULT_REQUEST_TIMEOUT;

/// The apiserver refuses a longer reason or action.
const MAX_WORD_BYTES: usize = 128;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
pub enum EventType {
    Normal,
    Warning,
}

impl EventType {
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::Normal => "Normal",
            EventType::Warning => "Warning",
        }
    }
}

/// One Event about a workload: `reason` is a short UpperCamelCase word (`KnobsApplied`),
/// `action` what ModeKeeper did or tried (`Apply`), `note` the human sentence.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct WorkloadEvent {
    #[serde(rename = "type")]
    pub event_type: EventType,
    pub reason: String,
    pub action: String,
    pub note: String,
}

fn clip(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_string();
    }
    let mut end = max - '…'.len_utf8();
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

impl WorkloadEvent {
    /// Builds an event whose fields fit the apiserver's limits (a long note is cut with `…`).
    pub fn new(event_type: EventType, reason: &str, action: &str, note: &str) -> WorkloadEvent {
        WorkloadEvent {
            event_type,
            reason: clip(reason, MAX_WORD_BYTES),
            action: clip(action, MAX_WORD_BYTES),
            note: clip(note, MAX_NOTE_BYTES),
        }
    }
}

/// What ModeKeeper tells about its loop, one constructor per occasion (the words the docs list in
/// docs/closed-loop.md "Kubernetes Events"). Warnings are what someone should look at: a change
/// that hurt, an apply a gate refused or that failed, a rollback.
impl WorkloadEvent {
    /// The effect verdict on one applied change: `EffectHelped`, `EffectNeutral`, `EffectHurt`
    /// (Warning) or `EffectInconclusive`.
    pub fn effect(effect: &ChangeEffect) -> WorkloadEvent {
        let (reason, event_type) = match effect.verdict {
            Verdict::Helped => ("EffectHelped", EventType::Normal),
            Verdict::Neutral => ("EffectNeutral", EventType::Normal),
            Verdict::Hurt => ("EffectHurt", EventType::Warning),
            Verdict::Inconclusive => ("EffectInconclusive", EventType::Normal),
        };
        let mut note = format!(
            "change at window {} ({}): {}: {}",
            effect.change_window,
            moves(effect.knobs.iter().map(|k| (k.knob.as_str(), k.from, k.to))),
            effect.verdict.as_str(),
            effect.reason
        );
        if !effect.rollback.is_empty() {
            note.push_str(&format!(
                "; rollback: {}",
                moves(
                    effect
                        .rollback
                        .iter()
                        .map(|k| (k.knob.as_str(), k.from, k.to))
                )
            ));
        }
        WorkloadEvent::new(event_type, reason, "JudgeEffect", &note)
    }

    /// An incident no knob fixes (a diverged or rising loss): `NeedsHuman`, Warning.
    pub fn incident(alert: &crate::closed_loop::Alert) -> WorkloadEvent {
        WorkloadEvent::new(EventType::Warning, "NeedsHuman", "Detect", &alert.line())
    }

    /// A window's decision proposed knob changes: `KnobsProposed` (applied or not is told by the
    /// apply's own Event).
    pub fn proposed<'a>(
        window: u64,
        chord: &str,
        changes: impl IntoIterator<Item = (&'a str, f64, f64)>,
    ) -> WorkloadEvent {
        WorkloadEvent::new(
            EventType::Normal,
            "KnobsProposed",
            "Decide",
            &format!("{chord} at window {window}: {}", moves(changes)),
        )
    }

    /// The controller cannot run a session for the workload (bad annotation or settings, a
    /// refused state, a source that cannot be opened): `SessionError`, Warning.
    pub fn session_error(message: &str) -> WorkloadEvent {
        WorkloadEvent::new(EventType::Warning, "SessionError", "Watch", message)
    }

    /// The source has nothing to decide from (a Prometheus selector that matches no step-time
    /// series): `NoTelemetry`, Warning, with the source's own message.
    pub fn no_telemetry(message: &str) -> WorkloadEvent {
        WorkloadEvent::new(EventType::Warning, "NoTelemetry", "Watch", message)
    }

    /// A session started or resumed: `SessionStarted`, Normal.
    pub fn session_started(note: &str) -> WorkloadEvent {
        WorkloadEvent::new(EventType::Normal, "SessionStarted", "Watch", note)
    }

    /// The trainer stopped reporting steps for longer than a stall while its logs stay open:
    /// `TrainerSilent`, Warning (a possible hang, told while it happens).
    pub fn trainer_silent(silence: &Silence) -> WorkloadEvent {
        WorkloadEvent::new(
            EventType::Warning,
            "TrainerSilent",
            "Watch",
            &silence.line(),
        )
    }

    /// Steps are reported again after a told silence: `TrainerResumed`, Normal.
    pub fn trainer_resumed(silent_ms: u64, after_step: u64) -> WorkloadEvent {
        WorkloadEvent::new(
            EventType::Normal,
            "TrainerResumed",
            "Watch",
            &format!(
                "steps reported again after {:.0} s of silence (after step {after_step})",
                silent_ms as f64 / 1000.0
            ),
        )
    }

    /// A decision's knobs were patched: `KnobsApplied`, or `RolledBack` (Warning) when the
    /// decision was the loop's rollback of a change that hurt.
    pub fn applied<'a>(
        decision_window: u64,
        changes: impl IntoIterator<Item = (&'a str, f64, f64)>,
        rollback: bool,
    ) -> WorkloadEvent {
        let what = moves(changes);
        if rollback {
            WorkloadEvent::new(
                EventType::Warning,
                "RolledBack",
                "Rollback",
                &format!(
                    "rolled back a change that hurt (decision at window {decision_window}): {what}"
                ),
            )
        } else {
            WorkloadEvent::new(
                EventType::Normal,
                "KnobsApplied",
                "Apply",
                &format!("decision at window {decision_window}: {what}"),
            )
        }
    }

    /// A gate refused the apply (nothing was written): `ApplyBlocked`, Warning, with the gate and
    /// its reason code (`kill_switch_active`, `license_invalid`, ...).
    pub fn blocked(
        decision_window: u64,
        gate: &str,
        reason: &str,
        detail: &str,
        rollback: bool,
    ) -> WorkloadEvent {
        let what = if rollback { "rollback" } else { "apply" };
        WorkloadEvent::new(
            EventType::Warning,
            "ApplyBlocked",
            if rollback { "Rollback" } else { "Apply" },
            &format!(
                "{what} of the decision at window {decision_window} blocked by the {gate} gate: {reason}: {detail}"
            ),
        )
    }

    /// The apply failed on the way (cluster or I/O): `ApplyFailed`, Warning.
    pub fn apply_failed(decision_window: u64, message: &str, rollback: bool) -> WorkloadEvent {
        let what = if rollback { "rollback" } else { "apply" };
        WorkloadEvent::new(
            EventType::Warning,
            "ApplyFailed",
            if rollback { "Rollback" } else { "Apply" },
            &format!("{what} of the decision at window {decision_window} failed: {message}"),
        )
    }
}

impl WorkloadEvent {
    /// The Event of one gated apply's result (none when there was nothing to apply):
    /// `KnobsApplied` (or `RolledBack` for the loop's rollback), `ApplyBlocked`, `ApplyFailed`.
    pub fn of_apply<'a>(
        decision_window: u64,
        changes: impl IntoIterator<Item = (&'a str, f64, f64)>,
        result: Option<&crate::apply::ApplyResult>,
        rollback: bool,
    ) -> Option<WorkloadEvent> {
        use crate::apply::ApplyResult;
        Some(match result? {
            ApplyResult::Applied => WorkloadEvent::applied(decision_window, changes, rollback),
            ApplyResult::Blocked(b) => {
                WorkloadEvent::blocked(decision_window, b.gate, b.reason, &b.detail, rollback)
            }
            ApplyResult::Failed(m) => WorkloadEvent::apply_failed(decision_window, m, rollback),
        })
    }
}

/// `a 4 -> 8, b 2 -> 1`.
fn moves<'a>(changes: impl IntoIterator<Item = (&'a str, f64, f64)>) -> String {
    let parts: Vec<String> = changes
        .into_iter()
        .map(|(k, from, to)| {
            format!(
                "{k} {} -> {}",
                format_knob_value(from),
                format_knob_value(to)
            )
        })
        .collect();
    if parts.is_empty() {
        "no knob".into()
    } else {
        parts.join(", ")
    }
}

/// The object reference an Event is `regarding`: what `kubectl describe` matches (kind,
/// namespace, name and uid). No resourceVersion: the same event about a workload stays one
/// series across its changes.
pub fn regarding(workload: &Workload) -> ObjectReference {
    let target = &workload.target;
    ObjectReference {
        api_version: Some(kinds::spec(target.kind()).api_version()),
        kind: Some(target.kind().as_str().to_string()),
        namespace: Some(target.namespace().to_string()),
        name: Some(target.name().to_string()),
        uid: Some(workload.uid.clone()).filter(|u| !u.is_empty()),
        ..ObjectReference::default()
    }
}

/// Posts [`WorkloadEvent`]s with kube-runtime's recorder; counts what was posted and what failed.
pub struct EventRecorder {
    recorder: Recorder,
    timeout: Duration,
    posted: AtomicU64,
    failed: AtomicU64,
}

impl EventRecorder {
    /// Posts one event (a create, or a series patch for a repeat), bounded by the request
    /// timeout. The error is for the caller to log; it is counted here.
    pub async fn publish(
        &self,
        workload: &Workload,
        event: &WorkloadEvent,
    ) -> Result<(), ClusterError> {
        let ev = Event {
            type_: match event.event_type {
                EventType::Normal => KubeEventType::Normal,
                EventType::Warning => KubeEventType::Warning,
            },
            reason: event.reason.clone(),
            note: Some(event.note.clone()),
            action: event.action.clone(),
            secondary: None,
        };
        let reference = regarding(workload);
        let what = format!(
            "POST events.events.k8s.io in namespace {} ({} about {}/{})",
            workload.target.namespace(),
            event.reason,
            workload.target.kind().as_str(),
            workload.target.name()
        );
        let fut = self.recorder.publish(&ev, &reference);
        let result = match tokio::time::timeout(self.timeout, fut).await {
            Ok(r) => r.map_err(|e| ClusterError::from_kube(&what, &e)),
            Err(_) => Err(ClusterError::timeout(&what, self.timeout)),
        };
        match &result {
            Ok(()) => self.posted.fetch_add(1, Ordering::Relaxed),
            Err(_) => self.failed.fetch_add(1, Ordering::Relaxed),
        };
        result
    }

    /// Events posted (creates and series updates).
    pub fn posted(&self) -> u64 {
        self.posted.load(Ordering::Relaxed)
    }

    /// Events the server refused or never answered.
    pub fn failed(&self) -> u64 {
        self.failed.load(Ordering::Relaxed)
    }
}

impl KubeCluster {
    /// A recorder posting as `reportingController: modekeeper`, `reportingInstance: instance`
    /// (default: the host name, as kube-runtime does; in a pod that is the pod's name).
    pub fn event_recorder(&self, instance: Option<String>) -> EventRecorder {
        let mut reporter = Reporter::from(REPORTING_CONTROLLER);
        if instance.is_some() {
            reporter.instance = instance;
        }
        EventRecorder {
            recorder: Recorder::new(self.client(), reporter),
            timeout: self.request_timeout().unwrap_or(MAX_EVENT_WAIT),
            posted: AtomicU64::new(0),
            failed: AtomicU64::new(0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_are_cut_to_the_apiservers_limits() {
        let long = "é".repeat(700);
        let ev = WorkloadEvent::new(EventType::Warning, &"R".repeat(200), "Apply", &long);
        assert!(ev.note.len() <= MAX_NOTE_BYTES, "{}", ev.note.len());
        assert!(ev.note.ends_with('…'));
        assert_eq!(ev.reason.len(), MAX_WORD_BYTES);
        let short = WorkloadEvent::new(EventType::Normal, "KnobsApplied", "Apply", "ok");
        assert_eq!(short.note, "ok");
    }
}
