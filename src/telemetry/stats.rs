//! Ingest counters: every line read ends up in exactly one bucket, so nothing is lost silently.

use serde::Serialize;
use std::collections::BTreeMap;

/// Why a line or record was skipped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum SkipReason {
    /// Not JSON at all in a JSONL file (in a log file such lines are `log_lines`, not skips).
    NotJson,
    /// Looked like JSON but does not parse.
    InvalidJson,
    /// Valid JSON that is not an object (an array, a number).
    WrongShape,
    /// A known field holds the wrong type (`"step_time_ms": [1]`, `"loss": {}`).
    WrongType,
    /// NaN or an infinity, as a bare token or a string.
    NonFinite,
    /// A negative duration or a percentage outside 0..=100.
    OutOfRange,
    /// `ts` present but not a timestamp.
    BadTimestamp,
    /// No step time under any alias.
    MissingStepTime,
    /// A line longer than the reader's limit.
    LineTooLong,
    /// A CSV row whose cell count differs from the header's.
    CsvRowShape,
}

impl SkipReason {
    pub const ALL: [SkipReason; 10] = [
        SkipReason::NotJson,
        SkipReason::InvalidJson,
        SkipReason::WrongShape,
        SkipReason::WrongType,
        SkipReason::NonFinite,
        SkipReason::OutOfRange,
        SkipReason::BadTimestamp,
        SkipReason::MissingStepTime,
        SkipReason::LineTooLong,
        SkipReason::CsvRowShape,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            SkipReason::NotJson => "not_json",
            SkipReason::InvalidJson => "invalid_json",
            SkipReason::WrongShape => "wrong_shape",
            SkipReason::WrongType => "wrong_type",
            SkipReason::NonFinite => "non_finite",
            SkipReason::OutOfRange => "out_of_range",
            SkipReason::BadTimestamp => "bad_timestamp",
            SkipReason::MissingStepTime => "missing_step_time",
            SkipReason::LineTooLong => "line_too_long",
            SkipReason::CsvRowShape => "csv_row_shape",
        }
    }
}

/// Counters of one ingest run. Serialised into every report that read telemetry.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct IngestStats {
    /// Physical lines read (including blank ones and a CSV header).
    pub lines_read: u64,
    /// Bytes read after decompression.
    pub bytes_read: u64,
    /// Blank lines (not counted as skipped).
    pub blank_lines: u64,
    /// Ordinary log lines in trainer stdout (not telemetry, not an error).
    pub log_lines: u64,
    /// Records that passed validation (before duplicate removal).
    pub records_parsed: u64,
    /// Records handed to analysis.
    pub records_emitted: u64,
    skipped: [u64; SkipReason::ALL.len()],
    /// Records whose (step, rank/node) was already seen.
    pub duplicates: u64,
    /// Records that arrived after a higher step and were put back in order.
    pub reordered: u64,
    /// Records that arrived later than the reorder window allows; dropped.
    pub late_dropped: u64,
    /// Timestamps that jumped backwards beyond the tolerance (ordering used `step`).
    pub clock_skew: u64,
    /// Records without a usable timestamp (their step order still counts).
    pub records_without_ts: u64,
    /// Records without a step number (ordered by arrival).
    pub records_without_step: u64,
}

impl IngestStats {
    pub fn skip(&mut self, reason: SkipReason) {
        self.skip_n(reason, 1);
    }

    /// Counters saturate: a resumed checkpoint may carry any value, and a wrapped counter would lie.
    pub fn skip_n(&mut self, reason: SkipReason, n: u64) {
        let c = &mut self.skipped[reason as usize];
        *c = c.saturating_add(n);
    }

    pub fn skipped(&self, reason: SkipReason) -> u64 {
        self.skipped[reason as usize]
    }

    pub fn skipped_total(&self) -> u64 {
        self.skipped.iter().fold(0u64, |a, b| a.saturating_add(*b))
    }

    /// Every counter in a fixed order (checkpoints).
    pub(crate) fn counters(&self) -> Vec<u64> {
        let mut v = vec![
            self.lines_read,
            self.bytes_read,
            self.blank_lines,
            self.log_lines,
            self.records_parsed,
            self.records_emitted,
            self.duplicates,
            self.reordered,
            self.late_dropped,
            self.clock_skew,
            self.records_without_ts,
            self.records_without_step,
        ];
        v.extend_from_slice(&self.skipped);
        v
    }

    /// The inverse of [`IngestStats::counters`]; `None` when the length does not match.
    pub(crate) fn from_counters(v: &[u64]) -> Option<IngestStats> {
        let (head, skipped) = v.split_at_checked(12)?;
        Some(IngestStats {
            lines_read: head[0],
            bytes_read: head[1],
            blank_lines: head[2],
            log_lines: head[3],
            records_parsed: head[4],
            records_emitted: head[5],
            skipped: skipped.try_into().ok()?,
            duplicates: head[6],
            reordered: head[7],
            late_dropped: head[8],
            clock_skew: head[9],
            records_without_ts: head[10],
            records_without_step: head[11],
        })
    }

    /// Adds another run's counters (used when several sources are merged).
    pub fn merge(&mut self, o: &IngestStats) {
        self.lines_read = self.lines_read.saturating_add(o.lines_read);
        self.bytes_read = self.bytes_read.saturating_add(o.bytes_read);
        self.blank_lines = self.blank_lines.saturating_add(o.blank_lines);
        self.log_lines = self.log_lines.saturating_add(o.log_lines);
        self.records_parsed = self.records_parsed.saturating_add(o.records_parsed);
        self.records_emitted = self.records_emitted.saturating_add(o.records_emitted);
        for (a, b) in self.skipped.iter_mut().zip(o.skipped) {
            *a = a.saturating_add(b);
        }
        self.duplicates = self.duplicates.saturating_add(o.duplicates);
        self.reordered = self.reordered.saturating_add(o.reordered);
        self.late_dropped = self.late_dropped.saturating_add(o.late_dropped);
        self.clock_skew = self.clock_skew.saturating_add(o.clock_skew);
        self.records_without_ts = self.records_without_ts.saturating_add(o.records_without_ts);
        self.records_without_step = self
            .records_without_step
            .saturating_add(o.records_without_step);
    }
}

impl Serialize for IngestStats {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let skipped: BTreeMap<&str, u64> = SkipReason::ALL
            .iter()
            .filter(|r| self.skipped(**r) > 0)
            .map(|r| (r.as_str(), self.skipped(*r)))
            .collect();
        serde_json::json!({
            "lines_read": self.lines_read,
            "bytes_read": self.bytes_read,
            "blank_lines": self.blank_lines,
            "log_lines": self.log_lines,
            "records_parsed": self.records_parsed,
            "records_emitted": self.records_emitted,
            "skipped_total": self.skipped_total(),
            "skipped_by_reason": skipped,
            "duplicates": self.duplicates,
            "reordered": self.reordered,
            "late_dropped": self.late_dropped,
            "clock_skew": self.clock_skew,
            "records_without_ts": self.records_without_ts,
            "records_without_step": self.records_without_step,
        })
        .serialize(s)
    }
}
