//! Live telemetry sources for `closed-loop watch`: a followed file, a workload's pod logs, Prometheus.
//!
//! A live source hands out complete lines (the same bytes a file of that telemetry would hold, fed to
//! [`Ingest::push_line`](super::Ingest::push_line)), so every source shares one parser, one dedupe and
//! one reorder buffer. Each source keeps a [`cursor`](LiveSource::cursor): plain JSON data saying where
//! the lines returned so far end. `watch` stores it in its state file after every window, and a source
//! opened with that cursor continues exactly after the last line it returned before, so a restart
//! neither loses nor double-counts a line.

mod file;
mod prometheus;
mod reader;

use std::time::Duration;

use serde::Serialize;
use serde_json::Value;

pub use file::FollowFile;
#[cfg(test)]
pub(crate) use prometheus::serve_loopback;
pub use prometheus::{
    DEFAULT_PAGE_STEPS, PROM_MAX_POINTS, PromConfig, PromCursor, PromQueries, PrometheusSource,
    parse_prom_duration, parse_prom_time, redact as redact_url,
};
pub use reader::ReaderSource;

/// What one [`LiveSource::poll`] saw.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Poll {
    /// Some lines were appended (possibly zero, when the wait ran out).
    Open,
    /// The source will never produce another line (the pod finished, the file ended without
    /// `--follow`, the Prometheus range is exhausted with an end time).
    Ended,
}

/// Something worth recording about the source itself (explain.jsonl `watch_source_event`):
/// a reconnect, a pod restart, a rotated or truncated file.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SourceEvent {
    /// Short snake_case code: `reconnected`, `pod_restarted`, `rotated`, `truncated`, …
    pub kind: String,
    pub detail: Value,
}

pub trait LiveSource {
    /// Waits at most `wait` for new complete lines and appends them to `out`, with their line ends
    /// where the source has them (so byte counters match a file read of the same data); a line
    /// longer than [`MAX_LINE_BYTES`](crate::telemetry::MAX_LINE_BYTES) is handed out as a marker of
    /// that many bytes plus one, which the caller counts as too long. Returns early once any line arrived. A transient failure (a dropped connection) is
    /// handled inside — retried with backoff and reported as a [`SourceEvent`]; an `Err` means the
    /// source cannot go on (bad URL, authentication refused, file permission).
    fn poll(&mut self, out: &mut Vec<Vec<u8>>, wait: Duration) -> anyhow::Result<Poll>;

    /// Where the lines handed out so far end; opening the same source with this value continues
    /// right after them.
    fn cursor(&self) -> Value;

    /// Events since the last call, oldest first.
    fn drain_events(&mut self) -> Vec<SourceEvent>;

    /// What the source is, for reports: `{"kind": "file", "path": …}` and the like.
    fn describe(&self) -> Value;
}
