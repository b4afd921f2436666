//! `closed-loop watch`'s state file: everything a restarted watch needs to continue exactly where the
//! last one stopped — the source cursor and the lines read but not yet fed, the ingest and window
//! state (reorder buffer, partial window, baselines), the loop (knobs, cooldowns, counters), the
//! policies' states, what was applied, and how long the decision trace was. Written atomically;
//! the human-readable parts are JSON, the ingest/window internals a compact binary blob (floats
//! bit-exact, so a resumed run decides byte for byte like an uninterrupted one).

use std::collections::BTreeMap;
use std::path::Path;

use base64::Engine;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::closed_loop::LoopState;
use crate::error::input_error;
use crate::passport::{Passport, format_knob_value};
use crate::policy::PolicyState;
use crate::signals::{FeatureExtractor, Windower};
use crate::telemetry::{Format, Ingest, IngestOptions, IngestSnapshot};

pub const STATE_FILE: &str = "watch_state.json";
pub const STATE_SCHEMA: &str = "watch_state.v2";

/// A state larger than this is not one a watch wrote (it is a summary: pending lines and windows
/// are bounded by the ingest), like every report.
pub const MAX_STATE_FILE_BYTES: u64 = crate::fsio::MAX_REPORT_BYTES;

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
    /// "pending" (written before the cluster is touched), "applied", "blocked:<reason>", "failed".
    pub outcome: String,
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
    /// The source ended and the last window was evaluated.
    pub ended: bool,
    /// Ingest, windower and feature extractor (postcard, base64).
    pub pipeline: String,
}

/// The streaming part of the pipeline, between windows.
pub struct Pipeline {
    pub ingest: Ingest,
    pub windower: Windower,
    pub extractor: FeatureExtractor,
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
        B64.encode(postcard::to_allocvec(&blob).expect("the pipeline serialises"))
    }

    pub fn decode(text: &str, format: Format, opts: &IngestOptions) -> anyhow::Result<Pipeline> {
        let bytes = B64
            .decode(text)
            .map_err(|e| anyhow::anyhow!("pipeline: {e}"))?;
        let blob: PipelineBlob =
            postcard::from_bytes(&bytes).map_err(|e| anyhow::anyhow!("pipeline: {e}"))?;
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

impl WatchState {
    /// [`check_knobs`] on this state, as the one-line input error a resume refuses with.
    pub fn check_against(&self, passport: &Passport, path: &Path) -> anyhow::Result<()> {
        check_knobs(
            passport,
            &self.loop_state,
            self.last_applied.as_ref(),
            self.last_apply.as_ref(),
        )
        .map_err(|e| {
            input_error(
                "bad_state",
                format!(
                    "{}: {e}; the state does not hold under passport {} (use --fresh to start over)",
                    path.display(),
                    passport.name
                ),
            )
        })
    }

    /// The state in `dir`, if any. A file that cannot be read as a state is invalid input: the
    /// user decides (`--fresh` starts over) rather than the watch silently forgetting its cooldowns.
    pub fn load(dir: &Path) -> anyhow::Result<Option<WatchState>> {
        let path = dir.join(STATE_FILE);
        let bytes = match crate::fsio::read_capped(&path, MAX_STATE_FILE_BYTES) {
            Ok(b) => b,
            Err(e) if e.is_not_found() => return Ok(None),
            Err(e @ crate::fsio::ReadError::Open(_) | e @ crate::fsio::ReadError::Read(_)) => {
                return Err(anyhow::anyhow!("cannot read {}: {e}", path.display()));
            }
            // A FIFO, a device or an oversized file is not a state this tool wrote: bad input.
            Err(e) => {
                return Err(input_error(
                    "bad_state",
                    format!(
                        "cannot read {}: {e}; use --fresh to start over",
                        path.display()
                    ),
                ));
            }
        };
        // Duplicate keys refused: a state hand-checked by its first copy must not resume by its last.
        let state: WatchState = crate::json_keys::from_slice_unique(&bytes).map_err(|e| {
            input_error(
                "bad_state",
                format!(
                    "{} is not a watch state ({e}); use --fresh to start over",
                    path.display()
                ),
            )
        })?;
        if state.schema_version != STATE_SCHEMA {
            return Err(input_error(
                "bad_state",
                format!(
                    "{} has schema {}, this version reads {STATE_SCHEMA}; use --fresh to start over",
                    path.display(),
                    state.schema_version
                ),
            ));
        }
        Ok(Some(state))
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

    #[cfg(unix)]
    #[test]
    fn a_fifo_or_a_device_as_the_state_is_refused_at_once() {
        let bad_state = |dir: &Path| {
            let e = WatchState::load(dir).expect_err("refused");
            assert_eq!(crate::error::exit_code(&e), 2, "{e:#}");
            e.to_string()
        };
        let d = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink("/dev/zero", d.path().join(STATE_FILE)).unwrap();
        assert!(bad_state(d.path()).contains("a character device"));

        let (dir, fifo) = crate::fsio::tests::fifo();
        std::fs::rename(&fifo, dir.path().join(STATE_FILE)).unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let p = dir.path().to_path_buf();
        std::thread::spawn(move || tx.send(WatchState::load(&p).map(|_| ())));
        let r = rx
            .recv_timeout(std::time::Duration::from_secs(10))
            .expect("a FIFO must not block the read");
        let e = r.expect_err("refused");
        assert_eq!(crate::error::exit_code(&e), 2);
        assert!(e.to_string().contains("a FIFO"), "{e}");
    }

    #[test]
    fn a_state_with_a_repeated_key_is_refused() {
        let p = crate::passport::template("safe").unwrap().unwrap();
        let knobs: BTreeMap<String, f64> = [("concurrency".to_string(), 4.0)].into();
        let state = WatchState {
            schema_version: STATE_SCHEMA.into(),
            fingerprint: "f".into(),
            config: Value::Null,
            updated_at: "2026-01-01T00:00:00Z".into(),
            source_cursor: Value::Null,
            carry_lines: vec![],
            trace_bytes: 0,
            trace_lines: 0,
            totals: WatchTotals::default(),
            loop_state: ClosedLoop::new(p, knobs).save(),
            policy_states: vec![],
            last_applied: None,
            last_apply: None,
            ended: false,
            pipeline: String::new(),
        };
        let text = serde_json::to_string(&state).unwrap();
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join(STATE_FILE), &text).unwrap();
        assert!(!WatchState::load(d.path()).unwrap().unwrap().ended);
        // serde_json alone would resume with the last copy (ended: false).
        let twice = text.replacen('{', r#"{"ended":true,"#, 1);
        std::fs::write(d.path().join(STATE_FILE), twice).unwrap();
        let e = WatchState::load(d.path()).expect_err("a repeated key");
        assert_eq!(crate::error::exit_code(&e), 2);
        assert!(e.to_string().contains("duplicate key ended"), "{e}");
    }
}
