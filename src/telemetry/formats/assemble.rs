//! The sequential stage of the text readers, fed in input order by the ingest driver: decides which
//! format an auto-detected stream speaks (and re-checks it as lines keep coming), carries timer and
//! metrics lines to the step they belong to, differences cumulative clocks, marks the step after an
//! evaluation as planned, and counts implausible step times. Bounded state: one pending line.

use serde::{Deserialize, Serialize};

use super::super::source::Format;
use super::{Role, TextReader, TrainerLine};

/// Who printed a record: our own JSON/CSV record, or a trainer's text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Dialect {
    Ours,
    Text(TextReader),
}

impl Dialect {
    fn index(self) -> usize {
        match self {
            Dialect::Ours => 0,
            Dialect::Text(r) => 1 + r as usize,
        }
    }

    fn from_index(i: usize) -> Dialect {
        if i == 0 {
            Dialect::Ours
        } else {
            Dialect::Text(TextReader::ALL[i - 1])
        }
    }
}

const DIALECTS: usize = 1 + TextReader::ALL.len();

/// Another format may take over an auto-detected stream once it has this many lines and twice as
/// many as the current one.
const SWITCH_MIN_LINES: u64 = 20;

/// Step times outside this range are counted as implausible (0.1 ms .. 1 h).
pub const PLAUSIBLE_STEP_MS: std::ops::RangeInclusive<f64> = 0.1..=3_600_000.0;

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Switch {
    pub from: Dialect,
    pub to: Dialect,
    pub at_line: u64,
}

/// What to count for a line (its bytes are carried along).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Emit {
    /// A finished record, from the line(s) that made it.
    Record(TrainerLine, u64),
    /// A line that is not a record of its own (merged into another, or ignored).
    Log(u64),
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Assembler {
    /// The format was left to detection: lock onto one dialect and ignore the others.
    auto: bool,
    /// The source's format was decided from its name or first bytes (CSV, a document) before ingest.
    sniffed: bool,
    locked: Option<Dialect>,
    /// Lines seen per dialect (records and their companion lines), and where each was first seen.
    lines: [u64; DIALECTS],
    first_line: [u64; DIALECTS],
    switched: Option<Switch>,
    /// Lines of another format ignored after the lock.
    ignored: u64,
    pending: Option<(TrainerLine, u64)>,
    clock: Option<(u64, f64)>,
    /// An evaluation/checkpoint line was seen: the next record carries it.
    event_pending: Option<super::TrainerEvent>,
    implausible: u64,
    /// A pending line dropped when another dialect took the stream: lines and bytes, to count.
    dropped_lines: u64,
    dropped: u64,
    step_time_unit: super::StepTimeUnit,
    /// Records with a unit-less `step_time`, and how many were under 10 (before any conversion).
    bare: (u64, u64),
    /// Records marked as a planned slow step (evaluation, checkpoint, resume).
    planned: u64,
    /// Restarts in the step sequence of records without time.
    restarts: super::restart::Restarts,
}

impl Assembler {
    pub fn new(format: Format, step_time_unit: super::StepTimeUnit) -> Self {
        Assembler {
            auto: format == Format::Auto,
            step_time_unit,
            ..Default::default()
        }
    }

    /// A record's line is held back (not counted yet).
    pub fn holds_a_line(&self) -> bool {
        self.pending.is_some()
    }

    pub fn note_planned(&mut self) {
        self.planned = self.planned.saturating_add(1);
    }

    pub fn planned(&self) -> u64 {
        self.planned
    }

    /// A record on its way to the orderer, in input order: marks the first step after a restart
    /// that only the step sequence shows (see [`super::restart`]).
    pub fn note_restart(&mut self, s: &mut super::super::record::Sample) {
        self.restarts.note(s);
    }

    pub fn note_bare(&mut self, (n, small): (u64, u64)) {
        self.bare.0 = self.bare.0.saturating_add(n);
        self.bare.1 = self.bare.1.saturating_add(small);
    }

    /// What was assumed for a unit-less `step_time`, and a warning when the values look like seconds.
    fn bare_unit(&self) -> Option<(String, Option<String>)> {
        use super::StepTimeUnit;
        let (n, small) = self.bare;
        if n == 0 {
            return None;
        }
        Some(match self.step_time_unit {
            StepTimeUnit::S => (
                format!("s for the unit-less `step_time` ({n} records; --step-time-unit s), converted to ms"),
                None,
            ),
            StepTimeUnit::Ms => (
                format!("ms for the unit-less `step_time` ({n} records; --step-time-unit ms)"),
                None,
            ),
            StepTimeUnit::Auto => (
                format!("ms assumed for the unit-less `step_time` ({n} records; --step-time-unit s if it is seconds)"),
                (small * 2 > n).then(|| {
                    format!(
                        "{small} of {n} unit-less `step_time` values are under 10: they look like seconds read as ms; pass --step-time-unit s (or ms to confirm)"
                    )
                }),
            ),
        })
    }

    pub fn set_detected(&mut self) {
        self.sniffed = true;
    }

    /// Detected (from the content or the name) rather than forced.
    pub fn detected(&self) -> bool {
        self.auto || self.sniffed
    }

    /// Counts a line of `d`; false when an auto-detected stream is locked onto another dialect. Only
    /// a `strong` line (one with a measurement) locks: DeepSpeed's bare `step=0, skipped=0` line in a
    /// Megatron-DeepSpeed log must not decide the format.
    fn admit(&mut self, d: Dialect, line_no: u64, strong: bool) -> bool {
        let i = d.index();
        self.lines[i] += 1;
        if self.first_line[i] == 0 {
            self.first_line[i] = line_no;
        }
        if !self.auto {
            return true;
        }
        match self.locked {
            None if strong => {
                self.locked = Some(d);
                self.drop_pending_unless(d);
                true
            }
            None => true,
            Some(l) if l == d => true,
            Some(l) => {
                // Our JSON records are unambiguous: a stream that has them is ours.
                let li = l.index();
                let takes_over = d == Dialect::Ours
                    || (strong
                        && self.lines[i] >= SWITCH_MIN_LINES
                        && self.lines[i] >= 2 * self.lines[li]);
                if takes_over {
                    self.switched = Some(Switch {
                        from: l,
                        to: d,
                        at_line: line_no,
                    });
                    self.locked = Some(d);
                    self.drop_pending_unless(d);
                }
                takes_over
            }
        }
    }

    /// What was pending from another dialect is not a record of this stream (its line still counts).
    fn drop_pending_unless(&mut self, d: Dialect) {
        if let Some((p, n)) = self.pending
            && Dialect::Text(p.reader) != d
        {
            self.pending = None;
            self.dropped = self.dropped.saturating_add(n);
            self.dropped_lines += 1;
        }
    }

    /// Lines dropped from the pending slot since the last call, and their bytes.
    pub fn take_dropped(&mut self) -> (u64, u64) {
        (
            std::mem::take(&mut self.dropped_lines),
            std::mem::take(&mut self.dropped),
        )
    }

    /// Notes one of our own records (JSON or CSV); false: not to be used.
    pub fn note_ours(&mut self, line_no: u64) -> bool {
        self.admit(Dialect::Ours, line_no, true)
    }

    /// Notes a record's step time for the plausibility count.
    pub fn note_step_time(&mut self, ms: f64) {
        if ms.is_finite() && !PLAUSIBLE_STEP_MS.contains(&ms) {
            self.implausible += 1;
        }
    }

    fn holds(r: TextReader) -> bool {
        // Formats that print a step's measurements over several lines.
        matches!(
            r,
            TextReader::Megatron | TextReader::DeepSpeed | TextReader::HfTrainer
        )
    }

    /// Feeds one parsed trainer line (`len` bytes, line number `line_no`).
    pub fn push(&mut self, mut tl: TrainerLine, len: u64, line_no: u64) -> [Option<Emit>; 2] {
        let log = [Some(Emit::Log(len)), None];
        match tl.role {
            Role::Timer => {
                // Belongs to the iteration just printed; alone it says nothing.
                let Some((p, _)) = self.pending.as_mut() else {
                    return log;
                };
                if p.reader != tl.reader {
                    return log;
                }
                add(&mut p.comm_ms, tl.comm_ms);
                add(&mut p.data_wait_ms, tl.data_wait_ms);
                if p.step_time_ms.is_none() {
                    p.step_time_ms = tl.step_time_ms;
                }
                return log;
            }
            Role::Eval => {
                // In an auto-detected stream, only the locked format's evaluation lines count.
                let ok = !self.auto
                    || match self.locked {
                        Some(Dialect::Ours) => false,
                        Some(Dialect::Text(r)) => r == tl.reader,
                        None => true,
                    };
                if ok {
                    if let (Some(s), Some(c)) = (tl.step, tl.cumulative_ms) {
                        self.clock = Some((s, c));
                    }
                    // A checkpoint after an evaluation (or the reverse) is still one slow step.
                    if self.event_pending.is_none() {
                        self.event_pending = tl.event;
                    }
                }
                return log;
            }
            Role::Iteration | Role::Metrics => {}
        }
        let strong = tl.step_time_ms.is_some()
            || tl.loss.is_some()
            || tl.cumulative_ms.is_some()
            || tl.tokens_per_s.is_some()
            || tl.samples_per_s.is_some();
        if !self.admit(Dialect::Text(tl.reader), line_no, strong) {
            self.ignored += 1;
            return log;
        }
        if let Some(c) = tl.cumulative_ms {
            tl.step_time_ms = self.difference(tl.step, c);
        }
        if let Some((p, _)) = self.pending.as_mut() {
            let same = p.reader == tl.reader
                && (p.step == tl.step || (tl.step.is_none() && tl.role == Role::Metrics));
            if same {
                p.merge(&tl);
                return log;
            }
        }
        if let Some(e) = self.event_pending.take() {
            tl.event = Some(e);
        }
        let flushed = self.pending.take().map(|(p, n)| Emit::Record(p, n));
        if Self::holds(tl.reader) {
            self.pending = Some((tl, len));
            [flushed, None]
        } else {
            [flushed, Some(Emit::Record(tl, len))]
        }
    }

    /// The step time from a cumulative clock; `None` at the first reading, for a repeated step, and
    /// when the clock went back (the timer restarts after warm-up).
    fn difference(&mut self, step: Option<u64>, cum: f64) -> Option<f64> {
        let step = step?;
        let prev = self.clock.replace((step, cum));
        let (ps, pc) = prev?;
        (step > ps && cum >= pc).then(|| (cum - pc) / (step - ps) as f64)
    }

    /// The record still held back (end of input).
    pub fn flush(&mut self) -> Option<Emit> {
        self.pending.take().map(|(p, n)| Emit::Record(p, n))
    }

    /// What was detected, for the reports. `format` is the one the source was opened with.
    pub fn detection(&self, format: Format) -> FormatDetected {
        let total: u64 = self.lines.iter().sum();
        let ours_name = match format {
            Format::Jsonl => Format::Jsonl,
            Format::Csv => Format::Csv,
            _ => Format::Log,
        };
        let name_of = |d: Dialect| match d {
            Dialect::Ours => ours_name,
            Dialect::Text(r) => r.format(),
        };
        let chosen = match (self.locked, TextReader::of_format(format)) {
            (Some(d), _) => Some(d),
            (None, Some(r)) => Some(Dialect::Text(r)),
            (None, None) if format != Format::Auto => Some(Dialect::Ours),
            (None, None) => None,
        };
        let others: Vec<OtherFormat> = (0..DIALECTS)
            .filter(|i| self.lines[*i] > 0 && Some(Dialect::from_index(*i)) != chosen)
            .map(|i| OtherFormat {
                format: name_of(Dialect::from_index(i)),
                lines: self.lines[i],
            })
            .collect();
        let Some(d) = chosen else {
            return FormatDetected {
                name: None,
                forced: false,
                evidence: "no line of any known format".into(),
                step_time_unit: None,
                unit_warning: None,
                planned_events: self.planned,
                lines_matched: 0,
                first_line: None,
                other_formats: others,
                ignored_lines: self.ignored,
                switched: None,
                implausible_step_times: self.implausible,
            };
        };
        let i = d.index();
        let first = (self.first_line[i] > 0).then_some(self.first_line[i]);
        let bare = self.bare_unit();
        let (shape, unit) = match d {
            Dialect::Ours => (
                "our telemetry record (`step_time_ms`, …)".to_string(),
                match &bare {
                    Some((u, _)) => u.clone(),
                    None => {
                        "ms (`step_time_ms`; see docs/telemetry.md for the aliases)".to_string()
                    }
                },
            ),
            Dialect::Text(r) => (r.shape().to_string(), r.unit_rule().to_string()),
        };
        let how = if self.detected() {
            "detected"
        } else {
            "forced"
        };
        let mut evidence = match first {
            Some(l) => format!(
                "{how}: {} of {total} matching lines have the shape {shape}, the first at line {l}",
                self.lines[i]
            ),
            None => format!("{how}: no line had the shape {shape}"),
        };
        if let Some(s) = self.switched {
            evidence += &format!(
                "; re-checked: {} took over from {} at line {}",
                name_of(s.to).name(),
                name_of(s.from).name(),
                s.at_line
            );
        }
        FormatDetected {
            name: Some(name_of(d)),
            forced: !self.detected(),
            evidence,
            step_time_unit: Some(unit),
            unit_warning: bare.and_then(|(_, w)| w),
            planned_events: self.planned,
            lines_matched: self.lines[i],
            first_line: first,
            other_formats: others,
            ignored_lines: self.ignored,
            switched: self.switched.map(|s| Switched {
                from: name_of(s.from),
                to: name_of(s.to),
                at_line: s.at_line,
            }),
            implausible_step_times: self.implausible,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct OtherFormat {
    pub format: Format,
    pub lines: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Switched {
    pub from: Format,
    pub to: Format,
    pub at_line: u64,
}

fn add(slot: &mut Option<f64>, v: Option<f64>) {
    if let Some(v) = v {
        *slot = Some(slot.unwrap_or(0.0) + v);
    }
}

/// `format_detected` in the observe report: which reader read the input, and why.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FormatDetected {
    /// The format name as `--format` takes it; `None` when nothing matched.
    pub name: Option<Format>,
    /// `--format NAME` was given (nothing was detected).
    pub forced: bool,
    pub evidence: String,
    /// Where the step time's unit came from.
    pub step_time_unit: Option<String>,
    /// Set when the step times look like they are in another unit than the one assumed.
    pub unit_warning: Option<String>,
    /// Records marked as planned slow steps (evaluation, checkpoint, resume) from what was printed.
    pub planned_events: u64,
    pub lines_matched: u64,
    pub first_line: Option<u64>,
    /// Lines of other formats seen (ignored after the lock in an auto-detected stream).
    pub other_formats: Vec<OtherFormat>,
    pub ignored_lines: u64,
    /// Set when the re-check switched formats mid-stream.
    pub switched: Option<Switched>,
    /// Records whose step time is under 0.1 ms or over an hour.
    pub implausible_step_times: u64,
}
