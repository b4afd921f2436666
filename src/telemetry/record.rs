//! One telemetry record ([`Sample`]) and how it is built from a JSON object or a CSV row.
//!
//! JSON objects are walked with a hand-rolled serde visitor so that (a) aliases resolve with "first
//! present wins" instead of a duplicate-field error, (b) a field of the wrong type is classified rather
//! than aborting the parse, and (c) no key or unknown value is allocated.

use std::fmt;
use std::sync::Arc;

use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

use super::field::{Field, Num, ValueError, parse_list_text, parse_number_text};
use super::stats::SkipReason;
use super::timestamp::{epoch_number_to_ms, parse_timestamp_ms};

/// Per-worker latencies, inline for up to eight workers: a pointer per record to a list allocated on
/// a parser thread cost a cache miss per record where windows read it (and a cross-thread free).
pub type WorkerLatencies = smallvec::SmallVec<[f64; 8]>;

/// One validated telemetry record: it carries a step time, a loss, or both.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Sample {
    pub ts_ms: Option<i64>,
    pub step: Option<u64>,
    /// `None` in loss-only telemetry (and for a planned slow step once the windower set it aside).
    pub step_time_ms: Option<f64>,
    /// Always finite: a NaN or infinite loss leaves this `None` and sets `loss_non_finite`.
    pub loss: Option<f64>,
    /// The trainer reported a NaN or infinite loss (divergence): the record is kept, the loss flagged.
    #[serde(default)]
    pub loss_non_finite: bool,
    pub data_wait_ms: Option<f64>,
    pub worker_latencies_ms: WorkerLatencies,
    pub gpu_util_pct: Option<f64>,
    pub gpu_mem_util_pct: Option<f64>,
    pub comm_ms: Option<f64>,
    pub node: Option<Arc<str>>,
    pub rank: Option<u32>,
    /// Throughput as the trainer printed it (whole job unless the reader says otherwise). Narrow
    /// types: records in flight are what bounds ingest memory, and these are informational.
    pub tokens_per_s: Option<f32>,
    pub samples_per_s: Option<f32>,
    /// The planned shape of a step: a change of either re-baselines the run instead of raising drift.
    pub global_batch_size: Option<u32>,
    pub seq_len: Option<u32>,
    /// A planned slow step the trainer announced (evaluation, checkpoint, first step after resume).
    pub event: Option<TrainerEvent>,
}

/// A planned event that makes a step slow on purpose; never an incident.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TrainerEvent {
    /// Periodic evaluation / validation.
    Evaluation,
    /// Saving a checkpoint.
    Checkpoint,
    /// The first step after a restart or a resume from a checkpoint.
    Resume,
}

impl TrainerEvent {
    pub fn as_str(self) -> &'static str {
        match self {
            TrainerEvent::Evaluation => "evaluation",
            TrainerEvent::Checkpoint => "checkpoint",
            TrainerEvent::Resume => "resume",
        }
    }

    /// Reads an `event` value, case-insensitively. Other words are no planned event (`None`): a
    /// trainer's own event names must not cost the record.
    pub fn from_name(name: &str) -> Option<TrainerEvent> {
        const NAMES: [(&str, TrainerEvent); 11] = [
            ("evaluation", TrainerEvent::Evaluation),
            ("eval", TrainerEvent::Evaluation),
            ("validation", TrainerEvent::Evaluation),
            ("val", TrainerEvent::Evaluation),
            ("validate", TrainerEvent::Evaluation),
            ("checkpoint", TrainerEvent::Checkpoint),
            ("ckpt", TrainerEvent::Checkpoint),
            ("save", TrainerEvent::Checkpoint),
            ("resume", TrainerEvent::Resume),
            ("restart", TrainerEvent::Resume),
            ("restore", TrainerEvent::Resume),
        ];
        let name = name.trim();
        NAMES
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, e)| *e)
    }
}

/// Fields collected from one record before validation. The first problem seen is kept.
#[derive(Debug, Default)]
pub struct RecordBuilder<'a> {
    ts_ms: Option<i64>,
    step: Option<u64>,
    step_time_ms: Option<f64>,
    loss: Option<f64>,
    data_wait_ms: Option<f64>,
    workers: Option<WorkerLatencies>,
    gpu_util_pct: Option<f64>,
    gpu_mem_util_pct: Option<f64>,
    comm_ms: Option<f64>,
    node: Option<NodeName<'a>>,
    rank: Option<u32>,
    loss_non_finite: bool,
    tokens_per_s: Option<f32>,
    samples_per_s: Option<f32>,
    global_batch_size: Option<u32>,
    seq_len: Option<u32>,
    event: Option<TrainerEvent>,
    /// The step time came from the unit-less `step_time` name.
    step_time_bare: bool,
    seen: u32,
    problem: Option<SkipReason>,
}

/// A node name borrowed from the input when possible.
#[derive(Debug)]
pub enum NodeName<'a> {
    Borrowed(&'a str),
    Owned(String),
}

impl NodeName<'_> {
    pub fn as_str(&self) -> &str {
        match self {
            NodeName::Borrowed(s) => s,
            NodeName::Owned(s) => s,
        }
    }
}

impl From<ValueError> for SkipReason {
    fn from(e: ValueError) -> Self {
        match e {
            ValueError::WrongType => SkipReason::WrongType,
            ValueError::NonFinite => SkipReason::NonFinite,
            ValueError::OutOfRange => SkipReason::OutOfRange,
        }
    }
}

impl<'a> RecordBuilder<'a> {
    /// The same fields, owning the node name (for a record parsed from a rewritten copy).
    fn into_owned(self) -> RecordBuilder<'static> {
        RecordBuilder {
            node: self.node.map(|n| NodeName::Owned(n.as_str().to_owned())),
            ts_ms: self.ts_ms,
            step: self.step,
            step_time_ms: self.step_time_ms,
            step_time_bare: self.step_time_bare,
            loss: self.loss,
            data_wait_ms: self.data_wait_ms,
            workers: self.workers,
            gpu_util_pct: self.gpu_util_pct,
            gpu_mem_util_pct: self.gpu_mem_util_pct,
            comm_ms: self.comm_ms,
            rank: self.rank,
            loss_non_finite: self.loss_non_finite,
            tokens_per_s: self.tokens_per_s,
            samples_per_s: self.samples_per_s,
            global_batch_size: self.global_batch_size,
            seq_len: self.seq_len,
            event: self.event,
            seen: self.seen,
            problem: self.problem,
        }
    }

    fn fail(&mut self, reason: SkipReason) {
        self.problem.get_or_insert(reason);
    }

    /// Marks `field` as seen; returns false when an earlier alias already set it.
    fn first(&mut self, field: Field) -> bool {
        let bit = 1u32 << (field as u32);
        let fresh = self.seen & bit == 0;
        self.seen |= bit;
        fresh
    }

    pub(super) fn put_num(&mut self, field: Field, v: Result<Option<Num>, ValueError>) {
        // `step_time` is an alias of `step_time_ms` whose unit the ingest decides (`--step-time-unit`).
        let bare = field == Field::StepTimeBare;
        let field = if bare { Field::StepTimeMs } else { field };
        if !self.first(field) {
            return;
        }
        self.step_time_bare |= bare;
        let v = match v {
            Ok(v) => v,
            // A diverged loss is a signal about the run, not a broken record.
            Err(ValueError::NonFinite) if field == Field::Loss => {
                self.loss_non_finite = true;
                return;
            }
            Err(e) => return self.fail(e.into()),
        };
        let Some(num) = v else { return };
        let x = num.value;
        let pct = matches!(field, Field::GpuUtilPct | Field::GpuMemUtilPct);
        let bad_range = match field {
            Field::Loss => false,
            _ if pct => !(0.0..=100.0).contains(&x),
            _ => x < 0.0,
        };
        if bad_range {
            return self.fail(SkipReason::OutOfRange);
        }
        let slot = match field {
            Field::StepTimeMs => &mut self.step_time_ms,
            Field::Loss => &mut self.loss,
            Field::DataWaitMs => &mut self.data_wait_ms,
            Field::GpuUtilPct => &mut self.gpu_util_pct,
            Field::GpuMemUtilPct => &mut self.gpu_mem_util_pct,
            Field::CommMs => &mut self.comm_ms,
            Field::TokensPerS | Field::SamplesPerS => {
                let v = x as f32;
                if !v.is_finite() {
                    return self.fail(SkipReason::OutOfRange);
                }
                let slot = if field == Field::TokensPerS {
                    &mut self.tokens_per_s
                } else {
                    &mut self.samples_per_s
                };
                return *slot = Some(v);
            }
            Field::Step => {
                return match num.to_u64() {
                    Ok(i) => self.step = Some(i),
                    Err(e) => self.fail(e.into()),
                };
            }
            Field::GlobalBatchSize | Field::SeqLen => {
                let v = num
                    .to_u64()
                    .and_then(|i| u32::try_from(i).map_err(|_| ValueError::OutOfRange));
                let slot = if field == Field::SeqLen {
                    &mut self.seq_len
                } else {
                    &mut self.global_batch_size
                };
                return match v {
                    Ok(i) => *slot = Some(i),
                    Err(e) => self.fail(e.into()),
                };
            }
            Field::Rank => {
                let rank = num
                    .to_u64()
                    .and_then(|i| u32::try_from(i).map_err(|_| ValueError::OutOfRange));
                return match rank {
                    Ok(r) => self.rank = Some(r),
                    Err(e) => self.fail(e.into()),
                };
            }
            Field::Ts | Field::WorkerLatenciesMs | Field::Node | Field::Event => {
                unreachable!("not numeric")
            }
            Field::StepTimeBare => unreachable!("read as StepTimeMs"),
        };
        *slot = Some(x);
    }

    pub(super) fn put_ts(&mut self, v: Result<Option<i64>, SkipReason>) {
        if !self.first(Field::Ts) {
            return;
        }
        match v {
            Ok(v) => self.ts_ms = v,
            Err(r) => self.fail(r),
        }
    }

    pub(super) fn put_workers(&mut self, v: Result<Option<WorkerLatencies>, ValueError>) {
        if !self.first(Field::WorkerLatenciesMs) {
            return;
        }
        match v {
            Ok(Some(list)) if list.iter().any(|x| *x < 0.0) => self.fail(SkipReason::OutOfRange),
            Ok(list) => self.workers = list,
            Err(e) => self.fail(e.into()),
        }
    }

    pub(super) fn put_node(&mut self, v: Result<Option<NodeName<'a>>, ValueError>) {
        if !self.first(Field::Node) {
            return;
        }
        match v {
            Ok(n) => self.node = n.filter(|n| !n.as_str().trim().is_empty()),
            Err(e) => self.fail(e.into()),
        }
    }

    /// The step time was given under the unit-less name `step_time`.
    pub(super) fn step_time_is_bare(&self) -> bool {
        self.step_time_bare && self.step_time_ms.is_some()
    }

    /// The step time (for `step_time` read in seconds: `--step-time-unit s`).
    pub(super) fn step_time(&self) -> Option<f64> {
        self.step_time_ms
    }

    pub(super) fn scale_step_time(&mut self, k: f64) {
        if let Some(x) = self.step_time_ms.as_mut() {
            *x *= k;
        }
    }

    /// Sets the planned event; a value that names none is no event.
    pub(super) fn put_event(&mut self, v: Option<TrainerEvent>) {
        if self.first(Field::Event) {
            self.event = v;
        }
    }

    /// Sets a field from CSV text. Empty cells mean "absent".
    pub fn put_text(&mut self, field: Field, text: &'a str) {
        if text.trim().is_empty() {
            return;
        }
        match field {
            Field::Ts => self.put_ts(
                parse_timestamp_ms(text)
                    .map(Some)
                    .ok_or(SkipReason::BadTimestamp),
            ),
            Field::WorkerLatenciesMs => self.put_workers(parse_list_text(text).map(Some)),
            Field::Node => self.put_node(Ok(Some(NodeName::Borrowed(text.trim())))),
            Field::Event => self.put_event(TrainerEvent::from_name(text)),
            _ => self.put_num(field, parse_number_text(text).map(Some)),
        }
    }

    /// Validates the collected fields. `intern` turns a node name into a shared string.
    pub fn finish(self, intern: &mut impl FnMut(&str) -> Arc<str>) -> Result<Sample, SkipReason> {
        if let Some(p) = self.problem {
            return Err(p);
        }
        // Loss-only telemetry is judged on its loss; a record with neither says nothing.
        if self.step_time_ms.is_none() && self.loss.is_none() && !self.loss_non_finite {
            return Err(SkipReason::MissingStepTime);
        }
        Ok(Sample {
            ts_ms: self.ts_ms,
            step: self.step,
            step_time_ms: self.step_time_ms,
            loss: self.loss,
            data_wait_ms: self.data_wait_ms,
            worker_latencies_ms: self.workers.unwrap_or_default(),
            gpu_util_pct: self.gpu_util_pct,
            gpu_mem_util_pct: self.gpu_mem_util_pct,
            comm_ms: self.comm_ms,
            node: self.node.map(|n| intern(n.as_str().trim())),
            rank: self.rank,
            loss_non_finite: self.loss_non_finite,
            tokens_per_s: self.tokens_per_s,
            samples_per_s: self.samples_per_s,
            global_batch_size: self.global_batch_size,
            seq_len: self.seq_len,
            event: self.event,
        })
    }
}

/// Parses one JSON object into a builder. `Err` is the reason the line is unusable as a whole.
pub fn parse_json_object(payload: &[u8]) -> Result<RecordBuilder<'_>, SkipReason> {
    // Nearly every line is a flat object of plain values; the general parser below is the authority
    // and the fast path only takes lines it reads the same way.
    match super::record_fast::parse_flat_object(payload) {
        Some(rec) => Ok(rec),
        None => parse_json_object_general(payload),
    }
}

/// The general parser: any JSON, every error classified. Bare `NaN`/`Infinity` tokens (Python's
/// `json.dumps` writes them) are read as those words in strings, so a diverged loss is flagged like
/// `"loss": "nan"` rather than costing the record; elsewhere they are still `non_finite`.
pub(super) fn parse_json_object_general(payload: &[u8]) -> Result<RecordBuilder<'_>, SkipReason> {
    match parse_json_strict(payload) {
        Err(SkipReason::NonFinite) => match quote_bare_non_finite(payload) {
            Some(quoted) => parse_json_strict(&quoted).map(RecordBuilder::into_owned),
            None => Err(SkipReason::NonFinite),
        },
        other => other,
    }
}

/// `payload` with each bare `NaN`, `Infinity` and `-Infinity` outside strings put in quotes, or
/// `None` when there is none.
fn quote_bare_non_finite(payload: &[u8]) -> Option<Vec<u8>> {
    const TOKENS: [&[u8]; 3] = [b"-Infinity", b"Infinity", b"NaN"];
    let mut out = Vec::with_capacity(payload.len() + 8);
    let (mut i, mut in_str, mut found) = (0, false, false);
    while i < payload.len() {
        let c = payload[i];
        if in_str {
            out.push(c);
            if c == b'\\' {
                if let Some(n) = payload.get(i + 1) {
                    out.push(*n);
                }
                i += 2;
                continue;
            }
            in_str = c != b'"';
            i += 1;
            continue;
        }
        if c == b'"' {
            in_str = true;
        } else if let Some(t) = TOKENS.iter().find(|t| payload[i..].starts_with(t)) {
            let after = payload.get(i + t.len()).copied();
            let before = out.iter().rev().find(|b| !b.is_ascii_whitespace()).copied();
            if matches!(before, Some(b':' | b',' | b'['))
                && matches!(
                    after,
                    None | Some(b',' | b'}' | b']' | b' ' | b'\t' | b'\r' | b'\n')
                )
            {
                out.push(b'"');
                out.extend_from_slice(t);
                out.push(b'"');
                i += t.len();
                found = true;
                continue;
            }
        }
        out.push(c);
        i += 1;
    }
    found.then_some(out)
}

fn parse_json_strict(payload: &[u8]) -> Result<RecordBuilder<'_>, SkipReason> {
    let mut de = serde_json::Deserializer::from_slice(payload);
    let rec = match (&mut de).deserialize_map(RecordVisitor) {
        Ok(r) => r,
        Err(e) => return Err(classify_json_error(&e, payload)),
    };
    match de.end() {
        Ok(()) => Ok(rec),
        Err(e) => Err(classify_json_error(&e, payload)),
    }
}

fn classify_json_error(e: &serde_json::Error, payload: &[u8]) -> SkipReason {
    use serde_json::error::Category;
    match e.classify() {
        Category::Data => SkipReason::WrongShape,
        Category::Syntax | Category::Eof | Category::Io => {
            // serde_json refuses bare NaN/Infinity tokens; name them for what they are.
            let has = |needle: &[u8]| payload.windows(needle.len()).any(|w| w == needle);
            if has(b"NaN") || has(b"Infinity") {
                SkipReason::NonFinite
            } else {
                SkipReason::InvalidJson
            }
        }
    }
}

struct RecordVisitor;

impl<'de> Visitor<'de> for RecordVisitor {
    type Value = RecordBuilder<'de>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a telemetry object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut b = RecordBuilder::default();
        while let Some(key) = map.next_key_seed(KeySeed)? {
            let Some(field) = key else {
                map.next_value::<IgnoredAny>()?;
                continue;
            };
            match field {
                Field::Ts => b.put_ts(map.next_value_seed(TsSeed)?),
                Field::WorkerLatenciesMs => b.put_workers(map.next_value_seed(ListSeed)?),
                Field::Node => b.put_node(map.next_value_seed(NodeSeed)?),
                Field::Event => b.put_event(map.next_value_seed(EventSeed)?),
                _ => {
                    let v = map.next_value_seed(NumSeed)?;
                    b.put_num(field, v)
                }
            }
        }
        Ok(b)
    }
}

struct KeySeed;

impl<'de> DeserializeSeed<'de> for KeySeed {
    type Value = Option<Field>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for KeySeed {
    type Value = Option<Field>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a field name")
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        Ok(Field::from_name(v))
    }
}

/// Drains a JSON array or object that sits where a scalar was expected.
fn drain_seq<'de, A: SeqAccess<'de>>(mut seq: A) -> Result<(), A::Error> {
    while seq.next_element::<IgnoredAny>()?.is_some() {}
    Ok(())
}

fn drain_map<'de, A: MapAccess<'de>>(mut map: A) -> Result<(), A::Error> {
    while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
    Ok(())
}

/// Generates the "anything else is the wrong type" arms shared by the value visitors.
macro_rules! wrong_type_otherwise {
    ($err:expr) => {
        fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
            Ok(Err($err))
        }
        fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
            drain_seq(seq)?;
            Ok(Err($err))
        }
        fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
            drain_map(map)?;
            Ok(Err($err))
        }
        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(Ok(None))
        }
    };
}

struct NumSeed;

impl<'de> DeserializeSeed<'de> for NumSeed {
    type Value = Result<Option<Num>, ValueError>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for NumSeed {
    type Value = Result<Option<Num>, ValueError>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a number")
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
        Ok(if v.is_finite() {
            Ok(Some(Num::float(v)))
        } else {
            Err(ValueError::NonFinite)
        })
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
        Ok(Ok(Some(match u64::try_from(v) {
            Ok(i) => Num::int(i),
            Err(_) => Num::float(v as f64),
        })))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
        Ok(Ok(Some(Num::int(v))))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        Ok(if v.trim().is_empty() {
            Ok(None)
        } else {
            parse_number_text(v).map(Some)
        })
    }
    wrong_type_otherwise!(ValueError::WrongType);
}

struct TsSeed;

impl<'de> DeserializeSeed<'de> for TsSeed {
    type Value = Result<Option<i64>, SkipReason>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for TsSeed {
    type Value = Result<Option<i64>, SkipReason>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a timestamp")
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
        Ok(epoch_number_to_ms(v)
            .map(Some)
            .ok_or(SkipReason::BadTimestamp))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
        self.visit_f64(v as f64)
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
        self.visit_f64(v as f64)
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        Ok(parse_timestamp_ms(v)
            .map(Some)
            .ok_or(SkipReason::BadTimestamp))
    }
    wrong_type_otherwise!(SkipReason::BadTimestamp);
}

struct ListSeed;

impl<'de> DeserializeSeed<'de> for ListSeed {
    type Value = Result<Option<WorkerLatencies>, ValueError>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for ListSeed {
    type Value = Result<Option<WorkerLatencies>, ValueError>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a list of numbers")
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut out = WorkerLatencies::new();
        let mut problem = None;
        while let Some(v) = seq.next_element_seed(NumSeed)? {
            match v {
                Ok(Some(x)) => out.push(x.value),
                Ok(None) => problem = problem.or(Some(ValueError::WrongType)),
                Err(e) => problem = problem.or(Some(e)),
            }
        }
        Ok(match problem {
            Some(e) => Err(e),
            None => Ok(Some(out)),
        })
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        Ok(parse_list_text(v).map(Some))
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Self::Value, E> {
        Ok(Err(ValueError::WrongType))
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Self::Value, E> {
        Ok(Err(ValueError::WrongType))
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<Self::Value, E> {
        Ok(Err(ValueError::WrongType))
    }
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
        Ok(Err(ValueError::WrongType))
    }
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
        drain_map(map)?;
        Ok(Err(ValueError::WrongType))
    }
    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(Ok(None))
    }
}

struct NodeSeed;

impl<'de> DeserializeSeed<'de> for NodeSeed {
    type Value = Result<Option<NodeName<'de>>, ValueError>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for NodeSeed {
    type Value = Result<Option<NodeName<'de>>, ValueError>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a node name")
    }
    fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
        Ok(Ok(Some(NodeName::Borrowed(v))))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        Ok(Ok(Some(NodeName::Owned(v.to_owned()))))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
        Ok(Ok(Some(NodeName::Owned(v.to_string()))))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
        Ok(Ok(Some(NodeName::Owned(v.to_string()))))
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Self::Value, E> {
        Ok(Err(ValueError::WrongType))
    }
    wrong_type_otherwise!(ValueError::WrongType);
}

struct EventSeed;

impl<'de> DeserializeSeed<'de> for EventSeed {
    type Value = Option<TrainerEvent>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(self)
    }
}

/// Only a string names an event; any other value is no event (never a reason to drop the record).
impl<'de> Visitor<'de> for EventSeed {
    type Value = Option<TrainerEvent>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an event name")
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        Ok(TrainerEvent::from_name(v))
    }
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
        drain_seq(seq)?;
        Ok(None)
    }
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
        drain_map(map)?;
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<Sample, SkipReason> {
        parse_json_object(s.as_bytes())?.finish(&mut |n| Arc::from(n))
    }

    #[test]
    fn full_record_with_aliases() {
        let s = parse(
            r#"{"timestamp":"2026-01-01T00:00:00Z","step":"7","latency_ms":30.5,"loss":null,
               "data_wait_ms":1,"worker_latencies_ms":[1,2],"gpu_util":"95%","node_name":"n1",
               "rank":3,"comm_ms":4,"extra":{"a":[1,{"b":2}]}}"#,
        )
        .unwrap();
        assert_eq!(s.ts_ms, Some(1_767_225_600_000));
        assert_eq!(s.step, Some(7));
        assert_eq!(s.step_time_ms, Some(30.5));
        assert_eq!(s.loss, None);
        assert_eq!(s.worker_latencies_ms.as_slice(), [1.0, 2.0]);
        assert_eq!(s.gpu_util_pct, Some(95.0));
        assert_eq!(s.node.as_deref(), Some("n1"));
        assert_eq!(s.rank, Some(3));
        assert_eq!(s.comm_ms, Some(4.0));
    }

    #[test]
    fn first_alias_wins() {
        let s = parse(r#"{"step_time_ms":10,"latency_ms":99,"ts":1,"timestamp":"x"}"#).unwrap();
        assert_eq!(s.step_time_ms, Some(10.0));
        assert_eq!(s.ts_ms, Some(1000));
    }

    #[test]
    fn bad_records_are_classified() {
        use SkipReason::*;
        let cases = [
            (r#"{"ts":1,"step":1}"#, MissingStepTime),
            (r#"{"step_time_ms":[1]}"#, WrongType),
            (r#"{"step_time_ms":1,"loss":{}}"#, WrongType),
            (r#"{"step_time_ms":"fast"}"#, WrongType),
            (r#"{"step_time_ms":"NaN"}"#, NonFinite),
            (r#"{"step_time_ms":NaN}"#, NonFinite),
            (r#"{"step_time_ms":Infinity,"loss":1}"#, NonFinite),
            (r#"{"step_time_ms":-1}"#, OutOfRange),
            (r#"{"step_time_ms":1,"gpu_util_pct":250}"#, OutOfRange),
            (r#"{"step_time_ms":1,"step":1.5}"#, WrongType),
            (r#"{"step_time_ms":1,"ts":"garbage"}"#, BadTimestamp),
            (
                r#"{"step_time_ms":1,"worker_latencies_ms":[1,"x"]}"#,
                WrongType,
            ),
            (r#"{"step_time_ms":1"#, InvalidJson),
            (r#"[1,2]"#, WrongShape),
            (r#"{"step_time_ms":1} trailing"#, InvalidJson),
        ];
        for (line, want) in cases {
            assert_eq!(parse(line).unwrap_err(), want, "{line}");
        }
    }

    #[test]
    fn throughput_batch_shape_and_planned_events() {
        let s = parse(
            r#"{"step_time_ms":5,"tokens_per_sec":"1200.5","train_samples_per_second":3,
               "global_batch_size":512,"seq_length":"2048","event":"Eval"}"#,
        )
        .unwrap();
        assert_eq!(s.tokens_per_s, Some(1200.5));
        assert_eq!(s.samples_per_s, Some(3.0));
        assert_eq!(s.global_batch_size, Some(512));
        assert_eq!(s.seq_len, Some(2048));
        assert_eq!(s.event, Some(TrainerEvent::Evaluation));
        for (v, want) in [
            (r#""checkpoint""#, Some(TrainerEvent::Checkpoint)),
            (r#""save""#, Some(TrainerEvent::Checkpoint)),
            (r#"" RESUME ""#, Some(TrainerEvent::Resume)),
            (r#""train""#, None),
            ("7", None),
            ("true", None),
            ("[1]", None),
            ("null", None),
        ] {
            let s = parse(&format!(r#"{{"step_time_ms":5,"event":{v}}}"#)).unwrap();
            assert_eq!(s.event, want, "{v}");
        }
        let line = r#"{"step_time_ms":5,"global_batch_size":1.5}"#;
        assert_eq!(parse(line).unwrap_err(), SkipReason::WrongType);
    }

    #[test]
    fn loss_only_records_are_kept_and_empty_ones_are_not() {
        let s = parse(r#"{"step":4,"loss":2.5}"#).unwrap();
        assert_eq!((s.step_time_ms, s.loss), (None, Some(2.5)));
        let s = parse(r#"{"step":4,"loss":"nan"}"#).unwrap();
        assert!(s.loss_non_finite && s.step_time_ms.is_none());
        let line = r#"{"step":4,"loss":null,"gpu_util_pct":50}"#;
        assert_eq!(parse(line).unwrap_err(), SkipReason::MissingStepTime);
    }

    /// A NaN or infinite loss keeps the record: it is the divergence signal.
    #[test]
    fn non_finite_loss_is_flagged_not_skipped() {
        for v in [r#""nan""#, r#""NaN""#, r#""inf""#, r#""-Infinity""#] {
            let s = parse(&format!(r#"{{"step_time_ms":5,"step":3,"loss":{v}}}"#)).unwrap();
            assert_eq!(
                (s.loss, s.loss_non_finite, s.step),
                (None, true, Some(3)),
                "{v}"
            );
        }
        // Bare tokens, as Python's json.dumps writes them; a string that holds one is left alone.
        for line in [
            r#"{"step_time_ms":5,"step":3,"loss":NaN}"#,
            r#"{"step_time_ms":5,"step":3,"loss": -Infinity ,"node":"NaN, x"}"#,
            r#"{"loss":Infinity,"step":3,"step_time_ms":5}"#,
        ] {
            let s = parse(line).unwrap();
            assert_eq!(
                (s.loss, s.loss_non_finite, s.step),
                (None, true, Some(3)),
                "{line}"
            );
        }
        // An unknown field's NaN (a grad norm) no longer costs the record either.
        let s = parse(r#"{"step_time_ms":5,"grad_norm":NaN,"loss":1}"#).unwrap();
        assert_eq!((s.loss, s.loss_non_finite), (Some(1.0), false));
        let s = parse(r#"{"step_time_ms":5,"loss":NaN,"node":"a\"NaN"}"#).unwrap();
        assert_eq!(s.node.as_deref(), Some("a\"NaN"));
        assert_eq!(
            parse(r#"{"step_time_ms":5,"loss":NaNx}"#).unwrap_err(),
            SkipReason::NonFinite
        );
        let s = parse(r#"{"step_time_ms":5,"loss":2.5}"#).unwrap();
        assert_eq!((s.loss, s.loss_non_finite), (Some(2.5), false));
        // Another field's NaN still costs the record.
        let line = r#"{"step_time_ms":5,"data_wait_ms":"nan"}"#;
        assert_eq!(parse(line).unwrap_err(), SkipReason::NonFinite);
    }

    /// Steps are integers: above 2^53 an f64 merged neighbouring steps (998 of 1000 distinct steps
    /// were dropped as duplicates), and 2^64 and more saturated silently.
    #[test]
    fn steps_are_exact_integers_and_what_does_not_fit_is_rejected() {
        let big = (1u64 << 53) + 1;
        for (text, want) in [
            (big.to_string(), big),
            (format!("\"{big}\""), big),
            (u64::MAX.to_string(), u64::MAX),
            ("1e3".to_string(), 1000),
            ("\" 42 \"".to_string(), 42),
        ] {
            // Through the general parser and through the fast path (`parse` takes either).
            let line = format!(r#"{{"step_time_ms":1,"step":{text}}}"#);
            assert_eq!(parse(&line).unwrap().step, Some(want), "{line}");
            let line = format!(r#"{{"step_time_ms":1,"step":{text},"extra":{{}}}}"#);
            assert_eq!(parse(&line).unwrap().step, Some(want), "{line}");
        }
        for text in [
            "18446744073709551616",
            "\"18446744073709551616\"",
            "1e20",
            "9007199254740993.0",
            "-1",
        ] {
            let line = format!(r#"{{"step_time_ms":1,"step":{text}}}"#);
            assert_eq!(parse(&line).unwrap_err(), SkipReason::OutOfRange, "{line}");
        }
        let line = r#"{"step_time_ms":1,"rank":4294967296}"#;
        assert_eq!(parse(line).unwrap_err(), SkipReason::OutOfRange);
    }
}
