//! The ingest driver: reads bounded lines, dispatches them to the JSON or CSV record parser, counts
//! what it skips, and hands valid records to the [`Orderer`](super::order::Orderer). Push-based, so
//! that file, stdin, follow-mode and pod-log sources all share it.

use std::collections::HashMap;
use std::io::{self, BufRead};
use std::sync::Arc;

use super::MAX_LINE_BYTES;
use super::csv_rows::CsvRows;
use super::formats::assemble::{Assembler, Emit, FormatDetected};
use super::formats::lightning::{LightningRows, Row};
use super::formats::{BARE_SMALL_MS, StepTimeUnit, TextReader, TrainerLine, parse_text_line};
use super::line::{LineKind, classify};
use super::order::Orderer;
use super::record::{RecordBuilder, Sample, parse_json_object};
use super::source::Format;
use super::stats::{IngestStats, SkipReason};

#[derive(Debug, Clone)]
pub struct IngestOptions {
    /// Records held back to repair out-of-order arrival.
    pub reorder_window: usize,
    /// A timestamp more than this far behind its predecessor counts as clock skew.
    pub skew_tolerance_ms: i64,
    /// Live sources: release a record once a record this many steps ahead has arrived (see
    /// `Orderer`); `None` (files) waits for the reorder buffer to fill.
    pub release_lag_steps: Option<u64>,
    /// How a unit-less `step_time` is read.
    pub step_time_unit: StepTimeUnit,
}

impl Default for IngestOptions {
    fn default() -> Self {
        IngestOptions {
            reorder_window: 1024,
            skew_tolerance_ms: 5_000,
            release_lag_steps: None,
            step_time_unit: StepTimeUnit::Auto,
        }
    }
}

/// Distinct node names are few; beyond this many we stop sharing strings (memory stays bounded).
const MAX_INTERNED_NODES: usize = 4096;

pub struct Ingest {
    format: Format,
    opts: IngestOptions,
    parser: LineParser,
    orderer: Orderer,
    stats: IngestStats,
    line: Vec<u8>,
    max_line: usize,
    /// The trainer formats' sequential stage (detection, carried timer lines, clocks).
    asm: Assembler,
    /// What a document format's reader found (documents bypass the assembler).
    document: Option<FormatDetected>,
}

/// What a line was, for the counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LineClass {
    Record,
    Blank,
    Log,
    Skip(SkipReason),
    /// A trainer text line, counted by the assembler stage (it may merge into another line's record).
    Trainer,
}

/// Shares one `Arc<str>` per distinct node name.
#[derive(Default)]
struct NodeInterner(HashMap<Box<str>, Arc<str>>, Option<Arc<str>>);

impl NodeInterner {
    fn intern(&mut self, n: &str) -> Arc<str> {
        // Consecutive records nearly always come from the same node.
        if let Some(last) = &self.1
            && **last == *n
        {
            return last.clone();
        }
        let a = self.intern_slow(n);
        self.1 = Some(a.clone());
        a
    }

    fn intern_slow(&mut self, n: &str) -> Arc<str> {
        if let Some(a) = self.0.get(n) {
            return a.clone();
        }
        let a: Arc<str> = Arc::from(n);
        if self.0.len() < MAX_INTERNED_NODES {
            self.0.insert(n.into(), a.clone());
        }
        a
    }
}

/// [`Ingest::snapshot`]: plain data.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct IngestSnapshot {
    counters: Vec<u64>,
    orderer: Vec<u8>,
    csv_header: Option<Vec<u8>>,
    formats: Vec<u8>,
}

/// What one physical line turned out to be.
// Nearly every line is a record: boxing it would allocate per line to shrink the rare variants.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub enum LineOutcome {
    Blank,
    Log,
    Skip(SkipReason),
    Record(Sample),
    /// A trainer's text line, finished in input order by the ingest (see `formats::assemble`).
    Trainer(TrainerLine),
}

/// Turns lines into [`LineOutcome`]s. Holds only per-format state (the CSV header, interned node
/// names), so JSON lines can be parsed by several of these on different threads.
pub struct LineParser {
    format: Format,
    csv: CsvRows,
    lightning: LightningRows,
    nodes: NodeInterner,
    /// Which trainer text formats to try: none, one (forced), or all (auto).
    text: Option<Option<TextReader>>,
    /// Factor for a unit-less `step_time` (1000 when it is in seconds).
    bare_scale: f64,
    /// Records with a unit-less `step_time`, and how many of those were under [`BARE_SMALL_MS`].
    bare: (u64, u64),
}

impl LineParser {
    pub fn new(format: Format) -> Self {
        Self::with_unit(format, StepTimeUnit::Auto)
    }

    pub fn with_unit(format: Format, unit: StepTimeUnit) -> Self {
        LineParser {
            bare_scale: if unit == StepTimeUnit::S { 1000.0 } else { 1.0 },
            bare: (0, 0),
            format,
            csv: CsvRows::new(),
            lightning: LightningRows::new(),
            nodes: NodeInterner::default(),
            text: format
                .reads_trainer_text()
                .then(|| TextReader::of_format(format)),
        }
    }

    /// Records with a unit-less `step_time` since the last call, and how many were small.
    pub(crate) fn take_bare(&mut self) -> (u64, u64) {
        std::mem::take(&mut self.bare)
    }

    fn finish(
        nodes: &mut NodeInterner,
        bare: (&mut (u64, u64), f64),
        built: Result<RecordBuilder<'_>, SkipReason>,
        prefix_ts: Option<i64>,
    ) -> LineOutcome {
        let built = built.map(|mut b| {
            if b.step_time_is_bare() {
                bare.0.0 += 1;
                if b.step_time().is_some_and(|x| x < BARE_SMALL_MS) {
                    bare.0.1 += 1;
                }
                b.scale_step_time(bare.1);
            }
            b
        });
        match built.and_then(|b| b.finish(&mut |n| nodes.intern(n))) {
            Ok(mut s) => {
                if s.ts_ms.is_none() {
                    s.ts_ms = prefix_ts;
                }
                LineOutcome::Record(s)
            }
            Err(r) => LineOutcome::Skip(r),
        }
    }

    /// Parses one physical line (with or without its newline). A CSV header yields `Blank`.
    pub fn parse(&mut self, line: &[u8]) -> LineOutcome {
        if line.trim_ascii().is_empty() {
            return LineOutcome::Blank;
        }
        let nodes = &mut self.nodes;
        let bare = (&mut self.bare, self.bare_scale);
        match self.format {
            Format::Csv => match self.csv.row(line.trim_ascii_end()) {
                Ok(None) => LineOutcome::Blank,
                Ok(Some(b)) => Self::finish(nodes, bare, Ok(b), None),
                Err(r) => LineOutcome::Skip(r),
            },
            Format::LightningCsv => match self.lightning.row(line.trim_ascii_end()) {
                Ok(Row::Header) => LineOutcome::Blank,
                Ok(Row::Other) => LineOutcome::Log,
                Ok(Row::Line(t)) => LineOutcome::Trainer(t),
                Err(r) => LineOutcome::Skip(r),
            },
            // Whole documents never come here line by line (see `Ingest::read_all`).
            Format::MegatronGolden | Format::HfTrainerState => LineOutcome::Log,
            _ => {
                let strict = self.format == Format::Jsonl;
                let text = self.text;
                let trainer = |line: &[u8]| match text.and_then(|only| parse_text_line(line, only))
                {
                    Some(t) => LineOutcome::Trainer(t),
                    None => LineOutcome::Log,
                };
                match classify(line) {
                    LineKind::Blank => LineOutcome::Blank,
                    LineKind::Text if strict => LineOutcome::Skip(SkipReason::NotJson),
                    LineKind::Text => trainer(line),
                    // A Python dict (Hugging Face's `{'loss': …}`) is not our JSON.
                    LineKind::Json { payload, .. }
                        if text.is_some() && payload.get(1) == Some(&b'\'') =>
                    {
                        trainer(line)
                    }
                    LineKind::Json {
                        payload,
                        prefix_ts_ms,
                    } => Self::finish(nodes, bare, parse_json_object(payload), prefix_ts_ms),
                    LineKind::Embedded {
                        payload,
                        prefix_ts_ms,
                    } => match parse_json_object(payload) {
                        // `[Rank 0] step=…`: a trainer's line, not a broken record; a bracketed log
                        // line that is no JSON at all is text.
                        Err(e) if text.is_some() => match trainer(line) {
                            LineOutcome::Log
                                if e != SkipReason::InvalidJson
                                    && serde_json::from_slice::<serde::de::IgnoredAny>(payload)
                                        .is_ok() =>
                            {
                                LineOutcome::Skip(e)
                            }
                            other => other,
                        },
                        // Braces or brackets in an ordinary log message are not a broken
                        // record: a payload that is no JSON at all is text (`[[1, 1, 2]` was a
                        // wrong-shape record under `--format log` and a log line under `auto`;
                        // found by the telemetry_line fuzz target).
                        Err(e)
                            if e == SkipReason::InvalidJson
                                || serde_json::from_slice::<serde::de::IgnoredAny>(payload)
                                    .is_err() =>
                        {
                            if strict {
                                LineOutcome::Skip(SkipReason::NotJson)
                            } else {
                                LineOutcome::Log
                            }
                        }
                        built => Self::finish(nodes, bare, built, prefix_ts_ms),
                    },
                }
            }
        }
    }
}

impl Ingest {
    pub fn new(format: Format, opts: &IngestOptions) -> Self {
        Ingest {
            format,
            opts: opts.clone(),
            parser: LineParser::with_unit(format, opts.step_time_unit),
            orderer: Orderer::new(
                opts.reorder_window,
                opts.skew_tolerance_ms,
                opts.release_lag_steps,
            ),
            stats: IngestStats::default(),
            line: Vec::with_capacity(4096),
            max_line: MAX_LINE_BYTES,
            asm: Assembler::new(format, opts.step_time_unit),
            document: None,
        }
    }

    /// The format was decided from the source's name or first bytes, not forced.
    pub fn format_was_detected(&mut self) {
        self.asm.set_detected();
    }

    /// Which format was read, and the evidence (`format_detected` in the reports).
    pub fn format_detected(&self) -> FormatDetected {
        match &self.document {
            Some(d) => d.clone(),
            None => self.asm.detection(self.format),
        }
    }

    /// The highest step read so far, including records still in the reorder buffer.
    pub fn last_step_seen(&self) -> Option<u64> {
        self.orderer.max_step_seen()
    }

    pub fn stats(&self) -> &IngestStats {
        &self.stats
    }

    pub fn format(&self) -> Format {
        self.format
    }

    pub fn options(&self) -> &IngestOptions {
        &self.opts
    }

    /// Accounts for one parsed line of `len` bytes and passes a record on to the orderer.
    pub fn apply(&mut self, len: usize, outcome: LineOutcome, out: &mut dyn FnMut(&Sample)) {
        match outcome {
            LineOutcome::Record(s) => {
                self.count(LineClass::Record, 1, len as u64);
                self.push_record(s, out);
            }
            LineOutcome::Trainer(t) => self.push_trainer(t, len as u64, out),
            LineOutcome::Blank => self.count(LineClass::Blank, 1, len as u64),
            LineOutcome::Log => self.count(LineClass::Log, 1, len as u64),
            LineOutcome::Skip(r) => self.count(LineClass::Skip(r), 1, len as u64),
        }
    }

    /// Accounts for `lines` lines of one class, `bytes` in all, at once (records still go through
    /// [`Ingest::push_record`] one by one). Counters saturate rather than wrap.
    pub(crate) fn count(&mut self, class: LineClass, lines: u64, bytes: u64) {
        if class == LineClass::Trainer {
            // Counted line by line once the assembler has placed them.
            return;
        }
        let s = &mut self.stats;
        s.lines_read = s.lines_read.saturating_add(lines);
        s.bytes_read = s.bytes_read.saturating_add(bytes);
        match class {
            LineClass::Record => s.records_parsed = s.records_parsed.saturating_add(lines),
            LineClass::Blank => s.blank_lines = s.blank_lines.saturating_add(lines),
            LineClass::Log => s.log_lines = s.log_lines.saturating_add(lines),
            LineClass::Skip(r) => s.skip_n(r, lines),
            LineClass::Trainer => {}
        }
    }

    /// Passes a record already counted by [`Ingest::count`] on to the orderer.
    pub(crate) fn push_record(&mut self, mut s: Sample, out: &mut dyn FnMut(&Sample)) {
        if self.format != Format::Jsonl {
            self.asm.note_ours(self.stats.lines_read);
            self.count_dropped();
        }
        if let Some(ms) = s.step_time_ms {
            self.asm.note_step_time(ms);
        }
        if s.event.is_some() {
            self.asm.note_planned();
        }
        self.asm.note_restart(&mut s);
        self.orderer.push(s, &mut self.stats, out);
    }

    /// Feeds one trainer text line (`len` bytes) through the assembler; counts what comes out.
    pub(crate) fn push_trainer(&mut self, t: TrainerLine, len: u64, out: &mut dyn FnMut(&Sample)) {
        // A held-back record's line is counted when it is emitted: it still comes before this one.
        let line_no = self
            .stats
            .lines_read
            .saturating_add(1 + u64::from(self.asm.holds_a_line()));
        for e in self.asm.push(t, len, line_no).into_iter().flatten() {
            self.emit(e, out);
        }
        self.count_dropped();
    }

    /// Notes records with a unit-less `step_time` (for the unit report).
    pub(crate) fn note_bare(&mut self, counts: (u64, u64)) {
        if counts.0 > 0 {
            self.asm.note_bare(counts);
        }
    }

    /// Counts the line of a pending record that another format's lock dropped.
    fn count_dropped(&mut self) {
        let (lines, bytes) = self.asm.take_dropped();
        if lines > 0 {
            self.count(LineClass::Log, lines, bytes);
        }
    }

    fn emit(&mut self, e: Emit, out: &mut dyn FnMut(&Sample)) {
        match e {
            Emit::Log(n) => self.count(LineClass::Log, 1, n),
            Emit::Record(t, n) => match t.builder().finish(&mut |n| Arc::from(n)) {
                Ok(mut s) => {
                    self.count(LineClass::Record, 1, n);
                    if let Some(ms) = s.step_time_ms {
                        self.asm.note_step_time(ms);
                    }
                    if s.event.is_some() {
                        self.asm.note_planned();
                    }
                    self.asm.note_restart(&mut s);
                    self.orderer.push(s, &mut self.stats, out);
                }
                Err(r) => self.count(LineClass::Skip(r), 1, n),
            },
        }
    }

    /// Reads a whole-document format (golden values, `trainer_state.json`): each record counts as a
    /// line read, the document's bytes with the first.
    fn read_document(
        &mut self,
        reader: &mut dyn BufRead,
        out: &mut dyn FnMut(&Sample),
    ) -> io::Result<()> {
        let (records, bytes) = super::formats::document::read(reader, self.format)?;
        let mut bytes = bytes;
        let mut implausible = 0;
        let n = records.len() as u64;
        for t in records {
            if let Some(ms) = t.step_time_ms.filter(|x| x.is_finite())
                && !super::formats::assemble::PLAUSIBLE_STEP_MS.contains(&ms)
            {
                implausible += 1;
            }
            self.emit(Emit::Record(t, std::mem::take(&mut bytes)), out);
        }
        let reader = match self.format {
            Format::MegatronGolden => {
                "Megatron golden values (`{\"lm loss\": {\"start_step\", \"step_interval\", \"values\"}, \"iteration-time\": …}`)"
            }
            _ => "Hugging Face `trainer_state.json` (`log_history`)",
        };
        self.document = Some(FormatDetected {
            name: Some(self.format),
            forced: !self.asm.detected(),
            evidence: format!("a JSON document with the keys of {reader}; {n} records"),
            step_time_unit: Some(
                match self.format {
                    Format::MegatronGolden => {
                        "s: Megatron records `iteration-time` in seconds (converted to ms)"
                    }
                    _ => "none recorded (loss only)",
                }
                .to_string(),
            ),
            unit_warning: None,
            planned_events: self.asm.planned(),
            lines_matched: n,
            first_line: Some(1),
            other_formats: Vec::new(),
            ignored_lines: 0,
            switched: None,
            implausible_step_times: implausible,
        });
        Ok(())
    }

    /// Feeds one physical line (with or without its newline).
    pub fn push_line(&mut self, line: &[u8], out: &mut dyn FnMut(&Sample)) {
        if line.len() > self.max_line {
            return self.push_too_long(line.len() as u64);
        }
        let outcome = self.parser.parse(line);
        let bare = self.parser.take_bare();
        self.note_bare(bare);
        if matches!(outcome, LineOutcome::Blank)
            && matches!(self.format, Format::Csv | Format::LightningCsv)
            && !line.trim_ascii().is_empty()
        {
            // The CSV header: a line read, neither blank nor a record.
            self.stats.lines_read = self.stats.lines_read.saturating_add(1);
            self.stats.bytes_read = self.stats.bytes_read.saturating_add(line.len() as u64);
            return;
        }
        self.apply(line.len(), outcome, out);
    }

    /// Counts a line that exceeded [`MAX_LINE_BYTES`] (its bytes were discarded unread).
    pub fn push_too_long(&mut self, len: u64) {
        self.count(LineClass::Skip(SkipReason::LineTooLong), 1, len);
    }

    /// The longest line read whole; longer ones are skipped (`line_too_long`).
    pub(crate) fn max_line(&self) -> usize {
        self.max_line
    }

    /// Tests shrink the line limit so that over-long lines are cheap to make.
    #[cfg(test)]
    pub(crate) fn set_max_line(&mut self, max_line: usize) {
        self.max_line = max_line;
    }

    /// Reads `reader` to the end. `tick` is called every 64k lines or so (for progress).
    pub fn read_all(
        &mut self,
        reader: &mut dyn BufRead,
        tick: &mut dyn FnMut(&IngestStats),
        out: &mut dyn FnMut(&Sample),
    ) -> io::Result<()> {
        if self.format.is_document() {
            return self.read_document(reader, out);
        }
        let mut line = std::mem::take(&mut self.line);
        let mut next_tick = self.stats.lines_read.saturating_add(65_536);
        loop {
            match read_bounded_line(reader, &mut line, self.max_line)? {
                LineRead::Eof => break,
                LineRead::Line => self.push_line(&line, out),
                LineRead::TooLong(n) => self.push_too_long(n),
                LineRead::Newlines(n) => self.count(LineClass::Blank, n, n),
            }
            if self.stats.lines_read >= next_tick {
                next_tick = self.stats.lines_read.saturating_add(65_536);
                tick(&self.stats);
            }
        }
        self.line = line;
        Ok(())
    }

    /// The ingest's state (counters, reorder buffer, CSV header) for a checkpoint.
    pub fn snapshot(&self) -> IngestSnapshot {
        IngestSnapshot {
            counters: self.stats.counters(),
            orderer: postcard::to_allocvec(&self.orderer).expect("the orderer serialises"),
            csv_header: match self.format {
                Format::LightningCsv => self.parser.lightning.header_line(),
                _ => self.parser.csv.header_line(),
            }
            .map(<[u8]>::to_vec),
            formats: postcard::to_allocvec(&self.asm).expect("the assembler serialises"),
        }
    }

    /// An ingest continuing from `snap` (taken with the same format and options).
    pub fn restore(
        format: Format,
        opts: &IngestOptions,
        snap: &IngestSnapshot,
    ) -> anyhow::Result<Ingest> {
        let mut ing = Ingest::new(format, opts);
        ing.stats = IngestStats::from_counters(&snap.counters).ok_or_else(|| {
            anyhow::anyhow!("checkpoint: ingest counters do not match this version")
        })?;
        ing.orderer = postcard::from_bytes(&snap.orderer)
            .map_err(|e| anyhow::anyhow!("checkpoint: reorder buffer: {e}"))?;
        if let Some(h) = &snap.csv_header {
            ing.parser.parse(h);
        }
        ing.asm = postcard::from_bytes(&snap.formats)
            .map_err(|e| anyhow::anyhow!("checkpoint: trainer formats: {e}"))?;
        Ok(ing)
    }

    /// Flushes the reorder buffer and returns the final counters.
    pub fn finish(&mut self, out: &mut dyn FnMut(&Sample)) -> IngestStats {
        if let Some(e) = self.asm.flush() {
            self.emit(e, out);
        }
        self.orderer.flush(&mut self.stats, out);
        self.stats.clone()
    }
}

enum LineRead {
    Eof,
    Line,
    TooLong(u64),
    /// A run of empty lines (bare `\n`), counted without being copied.
    Newlines(u64),
}

/// The length of the run of `\n` bytes `b` starts with, eight bytes at a time: blank-only input
/// (a gzip of gigabytes of newlines) must go at memory speed, not at one parse per line.
pub(crate) fn newline_run(b: &[u8]) -> usize {
    const NL: u64 = u64::from_ne_bytes([b'\n'; 8]);
    let mut i = 0;
    while let Some(w) = b.get(i..i + 8) {
        let w = u64::from_ne_bytes(w.try_into().unwrap_or([0; 8]));
        if w != NL {
            break;
        }
        i += 8;
    }
    i + b[i..].iter().take_while(|c| **c == b'\n').count()
}

/// Reads one line into `buf` (cleared first) without ever holding more than `max_line` bytes.
fn read_bounded_line(
    r: &mut dyn BufRead,
    buf: &mut Vec<u8>,
    max_line: usize,
) -> io::Result<LineRead> {
    buf.clear();
    let mut dropped: u64 = 0;
    loop {
        let avail = match r.fill_buf() {
            Ok(a) => a,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if avail.is_empty() {
            return Ok(match (buf.is_empty(), dropped) {
                (true, 0) => LineRead::Eof,
                (_, 0) => LineRead::Line,
                (_, n) => LineRead::TooLong(n + buf.len() as u64),
            });
        }
        if buf.is_empty() && dropped == 0 && avail[0] == b'\n' {
            let n = newline_run(avail);
            r.consume(n);
            return Ok(LineRead::Newlines(n as u64));
        }
        let (chunk, done) = match memchr::memchr(b'\n', avail) {
            Some(i) => (&avail[..=i], true),
            None => (avail, false),
        };
        let n = chunk.len();
        if dropped > 0 || buf.len() + n > max_line {
            dropped += (buf.len() + n) as u64;
            buf.clear();
        } else {
            buf.extend_from_slice(chunk);
        }
        r.consume(n);
        if done {
            return Ok(if dropped > 0 {
                LineRead::TooLong(dropped)
            } else {
                LineRead::Line
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ingest(format: Format, text: &[u8]) -> (Vec<Sample>, IngestStats) {
        let mut ing = Ingest::new(format, &IngestOptions::default());
        let mut got = vec![];
        let mut r = io::BufReader::with_capacity(16, text);
        ing.read_all(&mut r, &mut |_| {}, &mut |s| got.push(s.clone()))
            .unwrap();
        let st = ing.finish(&mut |s| got.push(s.clone()));
        (got, st)
    }

    /// The fuzz target's differential: `--format log` and `auto` agree on a line, and `jsonl`
    /// differs only by calling text `not_json`.
    #[test]
    fn bracketed_text_is_a_log_line_in_every_lenient_format() {
        let outcome = |f: Format, line: &[u8]| LineParser::new(f).parse(line);
        for line in [&b"[[1, 1, 2]"[..], b"[trainer] done {", b"[x] {oops}"] {
            for f in [Format::Log, Format::Auto] {
                assert!(
                    matches!(outcome(f, line), LineOutcome::Log),
                    "{f:?} {:?}: {:?}",
                    String::from_utf8_lossy(line),
                    outcome(f, line)
                );
            }
            assert!(matches!(
                outcome(Format::Jsonl, line),
                LineOutcome::Skip(SkipReason::NotJson) | LineOutcome::Log
            ));
        }
        // JSON of the wrong shape stays a bad record everywhere.
        for f in [Format::Log, Format::Auto, Format::Jsonl] {
            assert!(
                matches!(
                    outcome(f, b"[1, 2]"),
                    LineOutcome::Skip(SkipReason::WrongShape)
                ),
                "{f:?}: {:?}",
                outcome(f, b"[1, 2]")
            );
        }
    }

    #[test]
    fn mixed_stdout_with_kubectl_timestamps() {
        let text = b"[trainer] scenario=combo workers=4\n\
            2026-01-01T00:00:00.000000001Z {\"step\":1,\"step_time_ms\":30}\n\
            2026-01-01T00:00:00.100Z INFO step done {\"step\":2,\"step_time_ms\":31}\n\
            2026-01-01T00:00:00.200Z WARN weird {braces} here\n\
            {\"step\":3,\"step_time_ms\":32,\"ts\":1767225601}\n\n";
        let (got, st) = ingest(Format::Log, text);
        assert_eq!(got.len(), 3);
        assert_eq!(got[0].ts_ms, Some(1_767_225_600_000));
        assert_eq!(got[1].ts_ms, Some(1_767_225_600_100));
        assert_eq!(got[2].ts_ms, Some(1_767_225_601_000));
        assert_eq!(st.log_lines, 2);
        assert_eq!(st.blank_lines, 1);
        assert_eq!(st.skipped_total(), 0);
        assert_eq!(st.lines_read, 6);
    }

    #[test]
    fn too_long_line_is_skipped_not_buffered() {
        let mut text = b"{\"step\":1,\"step_time_ms\":30}\n{\"x\":\"".to_vec();
        text.extend(std::iter::repeat_n(b'a', MAX_LINE_BYTES + 10));
        text.extend_from_slice(b"\"}\n{\"step\":2,\"step_time_ms\":30}");
        let (got, st) = ingest(Format::Jsonl, &text);
        assert_eq!(got.len(), 2);
        assert_eq!(st.skipped(SkipReason::LineTooLong), 1);
        assert_eq!(st.lines_read, 3);
    }

    #[test]
    fn csv_rows_and_counts() {
        let text = b"ts,step,step_time_ms\n1767225600,1,30\n1767225601,2,oops\n1767225602,3\n\n1767225603,4,33\n";
        let (got, st) = ingest(Format::Csv, text);
        assert_eq!(
            got.iter().map(|s| s.step.unwrap()).collect::<Vec<_>>(),
            vec![1, 4]
        );
        assert_eq!(st.skipped(SkipReason::WrongType), 1);
        assert_eq!(st.skipped(SkipReason::CsvRowShape), 1);
    }

    /// Issue 11: 1000 distinct steps above 2^53 were read as ~2 (f64), the rest dropped as duplicates.
    #[test]
    fn distinct_steps_above_two_to_the_53_stay_distinct() {
        let base = 1u64 << 60;
        let mut text = String::new();
        for i in 0..1000 {
            text.push_str(&format!("{{\"step\":{},\"step_time_ms\":10}}\n", base + i));
        }
        text.push_str("{\"step\":18446744073709551616,\"step_time_ms\":10}\n");
        let (got, st) = ingest(Format::Jsonl, text.as_bytes());
        assert_eq!(got.len(), 1000);
        assert_eq!(st.duplicates, 0);
        assert_eq!(st.skipped(SkipReason::OutOfRange), 1);
        assert_eq!(got[999].step, Some(base + 999));
        let csv = format!("step,step_time_ms\n{},1\n{},1\n", base, base + 1);
        let (got, _) = ingest(Format::Csv, csv.as_bytes());
        assert_eq!(got.len(), 2);
    }

    /// Counters restored from a checkpoint can hold anything; they saturate instead of wrapping.
    #[test]
    fn counters_saturate_instead_of_wrapping() {
        let mut ing = Ingest::new(Format::Jsonl, &IngestOptions::default());
        let mut snap = ing.snapshot();
        snap.counters.iter_mut().for_each(|c| *c = u64::MAX);
        ing = Ingest::restore(Format::Jsonl, &IngestOptions::default(), &snap).unwrap();
        let mut r = io::BufReader::new(&b"{\"step\":1,\"step_time_ms\":1}\n\n\nx\n"[..]);
        ing.read_all(&mut r, &mut |_| {}, &mut |_| {}).unwrap();
        let st = ing.finish(&mut |_| {});
        assert_eq!(st.lines_read, u64::MAX);
        assert_eq!(st.records_parsed, u64::MAX);
        assert_eq!(st.records_emitted, u64::MAX);
        assert_eq!(st.skipped_total(), u64::MAX);
    }

    /// Blank runs are counted in bulk and agree with a line-by-line count.
    #[test]
    fn newline_runs_count_as_blank_lines() {
        let mut text = vec![b'\n'; 100_003];
        text.extend_from_slice(b"{\"step\":1,\"step_time_ms\":1}\n \n\r\n\n");
        let (got, st) = ingest(Format::Log, &text);
        assert_eq!(got.len(), 1);
        assert_eq!(st.blank_lines, 100_006);
        assert_eq!(st.lines_read, 100_007);
        assert_eq!(st.bytes_read, text.len() as u64);
    }
}
