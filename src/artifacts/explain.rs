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
        if std::fs::metadata(&path).is_ok_and(|m| m.len() > ROTATE_BYTES) {
            std::fs::rename(&path, dir.join("explain.jsonl.1")).ok();
        }
        let f = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .with_context(|| format!("cannot open {}", path.display()))?;
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
