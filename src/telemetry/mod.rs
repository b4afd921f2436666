//! Telemetry ingest: turns a byte stream (JSONL, CSV, or trainer stdout with JSON objects mixed into
//! ordinary log lines, optionally gzip-compressed) into an ordered stream of [`Sample`]s.
//!
//! One pass, bounded memory: a line longer than [`MAX_LINE_BYTES`] is skipped, the reorder buffer and the
//! duplicate filter have fixed capacities. A bad line is counted by reason in [`IngestStats`] and skipped;
//! nothing here is ever fatal except an unreadable source. This module does no analysis.

mod csv_rows;
mod field;
pub mod formats;
#[doc(hidden)]
pub mod fuzzing;
mod ingest;
mod line;
pub mod live;
mod order;
mod parallel;
mod record;
mod record_fast;
mod source;
mod stats;
mod timestamp;

pub use ingest::{Ingest, IngestOptions, IngestSnapshot, LineOutcome, LineParser};
pub use parallel::read_all_parallel;
pub use record::{Sample, TrainerEvent, WorkerLatencies};
pub use source::{Format, OpenedSource, SourceSpec, open_source};
pub use stats::{IngestStats, SkipReason};
pub use timestamp::parse_timestamp_ms;

/// A fixed pseudo-random sequence (xorshift64) for the parsers' agreement tests.
#[cfg(test)]
pub(crate) fn xorshift(mut x: u64) -> impl FnMut() -> u64 {
    move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    }
}

/// Lines longer than this are skipped (`line_too_long`) so that a corrupted file can never make the
/// reader buffer grow without limit.
pub const MAX_LINE_BYTES: usize = 1 << 20;
