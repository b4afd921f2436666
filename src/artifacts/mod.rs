//! Artifacts under `--out DIR`: reports written atomically (temp file + rename, never a half-written
//! file), `<report>_<UTC timestamp>.json` plus `<report>_latest.json`, and the `explain.jsonl` event log.

mod explain;
mod writer;

pub use explain::ExplainLog;
pub use writer::{OutDir, write_atomic, write_atomic_with};
