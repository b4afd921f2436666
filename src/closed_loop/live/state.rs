//! A live session's state (`closed-loop watch`'s state file): everything a restarted session needs to continue exactly where the
//! last one stopped — the source cursor and the lines read but not yet fed, the ingest and window
//! state (reorder buffer, partial window, baselines), the loop (knobs, cooldowns, counters), the
//! policies' states, what was applied, and how long the decision trace was. Written atomically;
//! the human-readable parts are JSON, the ingest/window internals a compact binary blob (floats
//! bit-exact, so a resumed run decides byte for byte like an uninterrupted one).

use base64::Engine;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;

use super::ApplyOutcome;
use crate::closed_loop::{LoopState, ROLLBACK_PREFIX};
use crate::passport::{Passport, format_knob_value};
use crate::pipeline::AdaptiveWindower;
use crate::policy::PolicyState;
use crate::signals::FeatureExtractor;
use crate::telemetry::{Format, Ingest, IngestOptions, IngestSnapshot};

pub const STATE_FILE: &str = "watch_state.json";
pub const STATE_SCHEMA: &str = "watch_state.v2";

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

/// Counters of everything the watch did, over all its restarts.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct WatchTotals {
    pub iterations_done: u64,
    pub apply_attempted_total: u64,
    pub apply_ok_total: u64,
    pub apply_failed_total: u64,
    /// Applies the gates refused (kill switch, license, verify, stale objects).
    pub apply_blocked_total: u64,
    pub verify_failed_total: u64,
    /// Knob changes the cluster took.
    pub applied_total: u64,
    pub restarts: u64,
}

/// The decision an apply was (or is being) made for.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ApplyMark {
    /// Window index of the latest accepted change the apply carries.
    pub decision_window: u64,
    pub knobs: BTreeMap<String, f64>,
    pub outcome: ApplyOutcome,
    /// The decision was the loop's rollback of a change that hurt (absent: it was not).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub rollback: bool,
}

/// The latest decision: a window whose changes the loop accepted, and whether they were its
/// rollback of a change that hurt. Kept so that a decision not yet applied when the process
/// stopped is applied after the restart, and told as what it was.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct DecisionMark {
    pub window: u64,
    #[serde(default)]
    pub rollback: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WatchState {
    pub schema_version: String,
    /// sha256 of the configuration a resume must match (source, format, windows, ingest options,
    /// passport, policy digests, target).
    pub fingerprint: String,
    pub config: Value,
    pub updated_at: String,
    pub source_cursor: Value,
    /// Lines polled from the source but not fed yet (a stop between two lines of a batch), base64.
    pub carry_lines: Vec<String>,
    pub trace_bytes: u64,
    pub trace_lines: u64,
    pub totals: WatchTotals,
    #[serde(rename = "loop")]
    pub loop_state: LoopState,
    pub policy_states: Vec<PolicyState>,
    /// The knob values last written to the cluster (`--apply`), `None` before the first apply.
    pub last_applied: Option<BTreeMap<String, f64>>,
    pub last_apply: Option<ApplyMark>,
    /// The latest decision (absent in a state written before it was kept: then the decision of
    /// `last_apply`, not a rollback).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latest_decision: Option<DecisionMark>,
    /// The source ended and the last window was evaluated.
    pub ended: bool,
    /// Ingest, windower and feature extractor (postcard, base64).
    pub pipeline: String,
}

/// The binary layout of the pipeline blob, written first. postcard is not self-describing: a blob
/// of another layout would fail deep inside (or, worse, decode as something else), so a change to
/// any struct in it bumps this and the state says plainly that another version wrote it. A state
/// outlives the binary (a watch upgraded mid-run; the controller's state across a rollout).
/// 0x4d4b_xxxx: a first value no earlier blob started with. 2: restarts in the step sequence;
/// 3: windows sized from the first records; 4: windows capped in wall time (the windower's pace).
pub const PIPELINE_LAYOUT: u32 = 0x4d4b_0004;

/// The streaming part of the pipeline, between windows.
pub struct Pipeline {
    pub ingest: Ingest,
    /// Windows sized from the first records, as the file passes do.
    pub windower: AdaptiveWindower,
    /// Made once the window lengths are chosen.
    pub extractor: Option<FeatureExtractor>,
}

#[derive(Serialize, Deserialize)]
struct PipelineBlob {
    ingest: IngestSnapshot,
    windower: Vec<u8>,
    extractor: Vec<u8>,
}

impl Pipeline {
    pub fn encode(&self) -> String {
        let blob = PipelineBlob {
            ingest: self.ingest.snapshot(),
            windower: postcard::to_allocvec(&self.windower).expect("the windower serialises"),
            extractor: postcard::to_allocvec(&self.extractor).expect("the extractor serialises"),
        };
        let mut bytes = postcard::to_allocvec(&PIPELINE_LAYOUT).expect("a u32 serialises");
        bytes.extend(postcard::to_allocvec(&blob).expect("the pipeline serialises"));
        B64.encode(bytes)
    }

    pub fn decode(text: &str, format: Format, opts: &IngestOptions) -> anyhow::Result<Pipeline> {
        let bytes = B64
            .decode(text)
            .map_err(|e| anyhow::anyhow!("pipeline: {e}"))?;
        let layout = postcard::take_from_bytes::<u32>(&bytes).ok();
        let Some((PIPELINE_LAYOUT, rest)) = layout else {
            anyhow::bail!(
                "the pipeline state has another layout ({}; this version reads {PIPELINE_LAYOUT:#x}): \
                 another version of modekeeper wrote it",
                layout.map_or("none".into(), |(v, _)| format!("{v:#x}"))
            );
        };
        let blob: PipelineBlob =
            postcard::from_bytes(rest).map_err(|e| anyhow::anyhow!("pipeline: {e}"))?;
        Ok(Pipeline {
            ingest: Ingest::restore(format, opts, &blob.ingest)?,
            windower: postcard::from_bytes(&blob.windower)
                .map_err(|e| anyhow::anyhow!("windower: {e}"))?,
            extractor: postcard::from_bytes(&blob.extractor)
                .map_err(|e| anyhow::anyhow!("extractor: {e}"))?,
        })
    }
}

pub fn encode_lines<'a>(lines: impl Iterator<Item = &'a Vec<u8>>) -> Vec<String> {
    lines.map(|l| B64.encode(l)).collect()
}

pub fn decode_lines(lines: &[String]) -> anyhow::Result<Vec<Vec<u8>>> {
    lines
        .iter()
        .map(|l| {
            B64.decode(l)
                .map_err(|e| anyhow::anyhow!("carried line: {e}"))
        })
        .collect()
}

/// Why a saved state cannot be resumed under `passport`: a knob it does not govern, a value that
/// is not finite, or a current/applied value outside `[min, max]` (a value equal to the starting
/// one is kept: a run may start outside the range, from `--knobs` or the cluster). The file is
/// trusted for nothing the envelope would refuse.
pub fn check_knobs(
    passport: &Passport,
    loop_state: &LoopState,
    last_applied: Option<&BTreeMap<String, f64>>,
    last_apply: Option<&ApplyMark>,
) -> Result<(), String> {
    let start = &loop_state.knobs_before;
    let mut maps: Vec<(&str, &BTreeMap<String, f64>)> = vec![
        ("loop.knobs_before", start),
        ("loop.knobs", &loop_state.knobs),
    ];
    maps.extend(last_applied.map(|m| ("last_applied", m)));
    maps.extend(last_apply.map(|a| ("last_apply.knobs", &a.knobs)));
    for (field, m) in maps {
        for (k, &v) in m {
            let Some(l) = passport.knob(k) else {
                return Err(format!(
                    "{field}.{k}: passport {} does not govern this knob",
                    passport.name
                ));
            };
            if !v.is_finite() {
                return Err(format!("{field}.{k}: not a finite number"));
            }
            let in_range = v >= l.min && v <= l.max;
            if field != "loop.knobs_before" && !in_range && start.get(k) != Some(&v) {
                return Err(format!(
                    "{field}.{k} = {} is outside passport {}'s range [{}, {}]",
                    format_knob_value(v),
                    passport.name,
                    format_knob_value(l.min),
                    format_knob_value(l.max)
                ));
            }
        }
    }
    Ok(())
}

/// Why bytes are not a state this version resumes.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("not a watch state ({0})")]
    NotAState(String),
    #[error("schema {0}, this version reads {STATE_SCHEMA}")]
    Schema(String),
}

impl WatchState {
    /// Parses a state: repeated keys refused (a state hand-checked by its first copy must not resume
    /// by its last), the schema must be this version's.
    pub fn from_slice(bytes: &[u8]) -> Result<WatchState, StateError> {
        let state: WatchState = crate::json_keys::from_slice_unique(bytes)
            .map_err(|e| StateError::NotAState(e.to_string()))?;
        if state.schema_version != STATE_SCHEMA {
            return Err(StateError::Schema(state.schema_version));
        }
        Ok(state)
    }

    /// The latest decision, checked against the loop's own record of accepted changes: a window
    /// no earlier than the last apply's, in which the loop accepted changes (rollbacks exactly
    /// when they were), as far as the loop's list (its first [`MAX_LISTED`](crate::closed_loop::MAX_LISTED)
    /// changes) can tell.
    /// A state without one (an older version's) has the decision of its last apply.
    pub fn latest_decision(&self) -> Result<Option<DecisionMark>, String> {
        let Some(d) = self.latest_decision else {
            return Ok(self.last_apply.as_ref().map(|a| DecisionMark {
                window: a.decision_window,
                rollback: a.rollback,
            }));
        };
        if let Some(a) = &self.last_apply {
            if d.window < a.decision_window {
                return Err(format!(
                    "latest_decision.window {} is before last_apply.decision_window {}",
                    d.window, a.decision_window
                ));
            }
            if d.window == a.decision_window && d.rollback != a.rollback {
                return Err(format!(
                    "latest_decision.rollback and last_apply.rollback differ for window {}",
                    d.window
                ));
            }
        }
        let st = &self.loop_state;
        if st.proposed.len() as u64 >= st.proposed_total {
            let reasons: Vec<&str> = st
                .proposed
                .iter()
                .filter(|p| p.window.index == d.window)
                .map(|p| p.reason.as_str())
                .collect();
            if reasons.is_empty() {
                return Err(format!(
                    "latest_decision.window {}: the loop accepted no change in that window",
                    d.window
                ));
            }
            if reasons.iter().any(|r| r.starts_with(ROLLBACK_PREFIX)) != d.rollback {
                return Err(format!(
                    "latest_decision.rollback {} does not match the changes of window {}",
                    d.rollback, d.window
                ));
            }
        } else if st
            .proposed
            .last()
            .is_some_and(|p| d.window < p.window.index)
        {
            return Err(format!(
                "latest_decision.window {} is before changes the loop accepted later",
                d.window
            ));
        }
        Ok(Some(d))
    }

    /// [`check_knobs`] on this state.
    pub fn check_knobs(&self, passport: &Passport) -> Result<(), String> {
        check_knobs(
            passport,
            &self.loop_state,
            self.last_applied.as_ref(),
            self.last_apply.as_ref(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::closed_loop::ClosedLoop;

    #[test]
    fn a_resumed_state_holds_only_within_the_passport() {
        let p = crate::passport::template("safe").unwrap().unwrap();
        let knobs: BTreeMap<String, f64> = [("concurrency".to_string(), 4.0)].into();
        let fresh = ClosedLoop::new(p.clone(), knobs.clone()).save();
        let check = |st: &LoopState, applied: Option<&BTreeMap<String, f64>>| {
            check_knobs(&p, st, applied, None)
        };
        assert_eq!(check(&fresh, Some(&knobs)), Ok(()));
        let mut st = fresh.clone();
        st.knobs.insert("concurrency".into(), 100_000.0);
        assert!(check(&st, None).unwrap_err().contains("outside"));
        st.knobs.insert("concurrency".into(), f64::NAN);
        assert!(check(&st, None).unwrap_err().contains("finite"));
        // A start outside the range (from --knobs or the cluster) is kept until the loop moves it.
        let mut st = fresh.clone();
        st.knobs_before.insert("concurrency".into(), 64.0);
        st.knobs.insert("concurrency".into(), 64.0);
        assert_eq!(check(&st, None), Ok(()));
        let wide: BTreeMap<String, f64> = [("concurrency".to_string(), 65.0)].into();
        assert!(
            check(&st, Some(&wide))
                .unwrap_err()
                .contains("last_applied")
        );
        let mut st = fresh;
        st.knobs.insert("not_governed".into(), 1.0);
        assert!(check(&st, None).unwrap_err().contains("does not govern"));
    }
}
