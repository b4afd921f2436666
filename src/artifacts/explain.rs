use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use anyhow::Context;
use chrono::{SecondsFormat, Utc};
use serde_json::{Value, json};

/// Rotate `explain.jsonl` beyond this size, so a long-lived `--out` directory cannot grow forever.
const ROTATE_BYTES: u64 = 64 * 1024 * 1024;

/// Appends `{ts, event, payload}` lines to `explain.jsonl`. The file is an audit log: it is appended
/// across runs (rotated to `explain.jsonl.1` when large) and flushed after every event.
pub struct ExplainLog {
    w: BufWriter<File>,
    path: PathBuf,
}

impl ExplainLog {
    pub fn open(dir: &Path) -> anyhow::Result<Self> {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("cannot create output directory {}", dir.display()))?;
        let path = dir.join("explain.jsonl");
        // Never through a symlink: one planted in the output directory would redirect the audit
        // log's appends to any file the user can write.
        if std::fs::symlink_metadata(&path).is_ok_and(|m| m.len() > ROTATE_BYTES && m.is_file()) {
            std::fs::rename(&path, dir.join("explain.jsonl.1")).ok();
        }
        let f = crate::fsio::no_follow(OpenOptions::new().create(true).append(true))
            .open(&path)
            .with_context(|| format!("cannot open {} (a symlink is refused)", path.display()))?;
        if !f.metadata().is_ok_and(|m| m.is_file()) {
            anyhow::bail!("cannot open {}: not a regular file", path.display());
        }
        Ok(ExplainLog {
            w: BufWriter::new(f),
            path,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Records one event. Failing to write the audit log is an error, never silently ignored.
    pub fn event(&mut self, event: &str, payload: Value) -> anyhow::Result<()> {
        let line = json!({
            "ts": Utc::now().to_rfc3339_opts(SecondsFormat::Micros, true),
            "event": event,
            "payload": payload,
        });
        serde_json::to_writer(&mut self.w, &line)?;
        self.w.write_all(b"\n")?;
        self.w
            .flush()
            .with_context(|| format!("cannot write {}", self.path.display()))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(unix)]
    #[test]
    fn a_planted_symlink_is_refused_and_its_target_untouched() {
        let d = tempfile::tempdir().unwrap();
        let victim = d.path().join("victim");
        std::fs::write(&victim, "precious\n").unwrap();
        let out = d.path().join("out");
        std::fs::create_dir(&out).unwrap();
        std::os::unix::fs::symlink(&victim, out.join("explain.jsonl")).unwrap();
        let e = ExplainLog::open(&out)
            .err()
            .expect("a symlinked explain.jsonl must not open");
        assert!(format!("{e:#}").contains("explain.jsonl"), "{e:#}");
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious\n");
    }

    #[cfg(unix)]
    #[test]
    fn a_planted_fifo_does_not_block() {
        let d = tempfile::tempdir().unwrap();
        let c = std::ffi::CString::new(
            d.path()
                .join("explain.jsonl")
                .as_os_str()
                .as_encoded_bytes(),
        )
        .unwrap();
        // SAFETY: a valid NUL-terminated path; mkfifo only creates a file.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        let dir = d.path().to_path_buf();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || tx.send(ExplainLog::open(&dir).is_err()));
        let refused = rx
            .recv_timeout(std::time::Duration::from_secs(10))
            .expect("opening must not block on a FIFO");
        assert!(refused);
    }

    #[test]
    fn appends_across_opens() {
        let d = tempfile::tempdir().unwrap();
        for i in 0..2 {
            ExplainLog::open(d.path())
                .unwrap()
                .event("e", json!({"i": i}))
                .unwrap();
        }
        let text = std::fs::read_to_string(d.path().join("explain.jsonl")).unwrap();
        assert_eq!(text.lines().count(), 2);
    }
}
