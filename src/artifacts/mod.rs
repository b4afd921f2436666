//! Artifacts under `--out DIR`: reports written atomically (temp file + rename, never a half-written
//! file), `<report>_<UTC timestamp>.json` plus `<report>_latest.json`, and the `explain.jsonl` event log.

mod explain;
pub mod redact;
pub mod tarball;
mod writer;

pub use explain::ExplainLog;
pub use writer::{
    DEFAULT_KEEP, OutDir, make_executable, prune_stamped, write_atomic, write_atomic_with,
};
