//! Reading `closed-loop watch`'s state file from `--out` (the state itself is
//! [`crate::closed_loop::live::WatchState`]), with the one-line input errors a resume refuses with.

use std::path::Path;

use crate::closed_loop::live::{STATE_FILE, StateError, WatchState};
use crate::error::input_error;
use crate::passport::Passport;

/// A state larger than this is not one a watch wrote (it is a summary: pending lines and windows
/// are bounded by the ingest), like every report.
const MAX_STATE_FILE_BYTES: u64 = crate::fsio::MAX_REPORT_BYTES;

/// [`WatchState::check_knobs`] as the one-line input error a resume refuses with.
pub fn check_against(state: &WatchState, passport: &Passport, path: &Path) -> anyhow::Result<()> {
    state.check_knobs(passport).map_err(|e| {
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
    let message = match WatchState::from_slice(&bytes) {
        Ok(s) => return Ok(Some(s)),
        Err(StateError::NotAState(e)) => format!(
            "{} is not a watch state ({e}); use --fresh to start over",
            path.display()
        ),
        Err(StateError::Schema(v)) => format!(
            "{} has schema {v}, this version reads {}; use --fresh to start over",
            path.display(),
            crate::closed_loop::live::STATE_SCHEMA
        ),
    };
    Err(input_error("bad_state", message))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use serde_json::Value;

    use super::*;
    use crate::closed_loop::ClosedLoop;
    use crate::closed_loop::live::{STATE_SCHEMA, WatchTotals};

    #[cfg(unix)]
    #[test]
    fn a_fifo_or_a_device_as_the_state_is_refused_at_once() {
        let bad_state = |dir: &Path| {
            let e = load(dir).expect_err("refused");
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
        std::thread::spawn(move || tx.send(load(&p).map(|_| ())));
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
            latest_decision: None,
            ended: false,
            pipeline: String::new(),
        };
        let text = serde_json::to_string(&state).unwrap();
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join(STATE_FILE), &text).unwrap();
        assert!(!load(d.path()).unwrap().unwrap().ended);
        // serde_json alone would resume with the last copy (ended: false).
        let twice = text.replacen('{', r#"{"ended":true,"#, 1);
        std::fs::write(d.path().join(STATE_FILE), twice).unwrap();
        let e = load(d.path()).expect_err("a repeated key");
        assert_eq!(crate::error::exit_code(&e), 2);
        assert!(e.to_string().contains("duplicate key ended"), "{e}");
    }
}
