//! Readers for what trainers print as they print it: Megatron-LM / Megatron-DeepSpeed stdout,
//! nanoGPT, modded-nanogpt, llm.c, torchtitan, DeepSpeed, Hugging Face Trainer (stdout dicts and tqdm),
//! and the whole-document formats (Megatron golden values, `trainer_state.json`, Lightning
//! `metrics.csv`).
//!
//! Text lines are parsed one at a time and statelessly into a [`TrainerLine`] (so the parallel
//! reader can parse chunks on worker threads); everything that needs order — differencing a cumulative
//! timer, carrying a timer line to its iteration, marking the step after an evaluation, deciding which
//! format the stream speaks — happens in [`assemble::Assembler`], which the ingest driver feeds in
//! input order. Records are built through [`RecordBuilder`](super::record::RecordBuilder) only.

pub(crate) mod assemble;
mod deepspeed;
pub(crate) mod document;
mod hf;
pub(crate) mod lightning;
mod megatron;
mod nanogpt;
pub(crate) mod restart;
mod text;
mod torchtitan;

use serde::{Deserialize, Serialize};

use super::field::{Field, Num, ValueError};
use super::record::{RecordBuilder, TrainerEvent};
use super::source::Format;

/// How a step time given under the unit-less name `step_time` is read (`--step-time-unit`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StepTimeUnit {
    /// Milliseconds (the alias's documented meaning), with a warning when most values are under 10.
    #[default]
    Auto,
    /// Milliseconds, no warning.
    Ms,
    /// Seconds: multiplied by 1000.
    S,
}

/// Unit-less `step_time` values below this many ms make the auto rule warn (a step under 10 ms is rare
/// in distributed training; 10 s steps are common).
pub const BARE_SMALL_MS: f64 = 10.0;

/// A text format a line can be in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum TextReader {
    #[default]
    Megatron,
    NanoGpt,
    ModdedNanoGpt,
    Llmc,
    Torchtitan,
    DeepSpeed,
    HfTrainer,
    /// Lightning `metrics.csv` rows (read by [`lightning`], never from a text line).
    Lightning,
}

impl TextReader {
    pub const ALL: [TextReader; 8] = [
        TextReader::Megatron,
        TextReader::NanoGpt,
        TextReader::ModdedNanoGpt,
        TextReader::Llmc,
        TextReader::Torchtitan,
        TextReader::DeepSpeed,
        TextReader::HfTrainer,
        TextReader::Lightning,
    ];

    pub fn format(self) -> Format {
        match self {
            TextReader::Megatron => Format::Megatron,
            TextReader::NanoGpt => Format::Nanogpt,
            TextReader::ModdedNanoGpt => Format::ModdedNanogpt,
            TextReader::Llmc => Format::Llmc,
            TextReader::Torchtitan => Format::Torchtitan,
            TextReader::DeepSpeed => Format::Deepspeed,
            TextReader::HfTrainer => Format::HfTrainer,
            TextReader::Lightning => Format::LightningCsv,
        }
    }

    pub fn of_format(f: Format) -> Option<TextReader> {
        TextReader::ALL.into_iter().find(|r| r.format() == f)
    }

    /// The line shape that identifies the format (the detection evidence).
    pub fn shape(self) -> &'static str {
        match self {
            TextReader::Megatron => {
                "`iteration N/M | … elapsed time per iteration (ms): … | lm loss: …`"
            }
            TextReader::NanoGpt => "`iter N: loss X, time Yms`",
            TextReader::ModdedNanoGpt => "`step:N/M … train_time:Xms step_avg:Yms`",
            TextReader::Llmc => "`step N/M | loss X | … | Y ms | … tok/s`",
            TextReader::Torchtitan => "`step: N  loss: X  … tps: …`",
            TextReader::DeepSpeed => {
                "`step=N, skipped=…` / `time (ms) | fwd: … | bwd: … | step: …`"
            }
            TextReader::HfTrainer => "`{'loss': …}` dicts / tqdm `N/M [… s/it]`",
            TextReader::Lightning => "a CSVLogger header with `step` and `train_loss_step`",
        }
    }

    /// How the format states the step time's unit (reported with the detection).
    pub fn unit_rule(self) -> &'static str {
        match self {
            TextReader::Megatron => "ms, from the line's `(ms)` label",
            TextReader::NanoGpt | TextReader::Llmc => "ms, from the `ms` suffix",
            TextReader::ModdedNanoGpt => "ms: the cumulative `train_time:…ms`, differenced",
            TextReader::Torchtitan => "none printed (loss and tokens/s only)",
            TextReader::DeepSpeed => "ms, from the `time (ms)` timer line (fwd + bwd + step)",
            TextReader::HfTrainer => "s/it or it/s, from tqdm's rate",
            TextReader::Lightning => "none printed (loss per step; time only per epoch)",
        }
    }
}

/// What a line contributes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum Role {
    /// A training step's own line: becomes a record.
    #[default]
    Iteration,
    /// A timer breakdown that belongs to the iteration printed just before it.
    Timer,
    /// An evaluation/validation line: the step it names (or the next one) is a planned slow step.
    Eval,
    /// Metrics for the current step printed on a separate line (an HF dict, a throughput line).
    Metrics,
}

/// One parsed trainer line. Plain data (`Copy`), so that parser threads can hand it over cheaply.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct TrainerLine {
    pub reader: TextReader,
    pub role: Role,
    pub step: Option<u64>,
    pub step_time_ms: Option<f64>,
    /// A cumulative training clock (modded-nanogpt `train_time`), differenced in order.
    pub cumulative_ms: Option<f64>,
    /// As printed; `nan` stays NaN (divergence is a signal, not a bad line).
    pub loss: Option<f64>,
    pub data_wait_ms: Option<f64>,
    pub comm_ms: Option<f64>,
    pub tokens_per_s: Option<f64>,
    pub samples_per_s: Option<f64>,
    pub global_batch: Option<u64>,
    pub ts_ms: Option<i64>,
    pub rank: Option<u32>,
    /// On an evaluation/checkpoint line: which. On a record, set by the assembler: that planned
    /// event ran within this step (a planned slow step).
    pub event: Option<TrainerEvent>,
}

impl TrainerLine {
    fn new(reader: TextReader, role: Role) -> Self {
        TrainerLine {
            reader,
            role,
            event: (role == Role::Eval).then_some(TrainerEvent::Evaluation),
            ..Default::default()
        }
    }

    /// Fills what `other` has and `self` lacks.
    pub fn merge(&mut self, other: &TrainerLine) {
        macro_rules! fill {
            ($($f:ident),*) => { $( if self.$f.is_none() { self.$f = other.$f; } )* };
        }
        fill!(
            step,
            step_time_ms,
            loss,
            data_wait_ms,
            comm_ms,
            tokens_per_s,
            samples_per_s,
            global_batch,
            ts_ms,
            rank
        );
        if self.event.is_none() {
            self.event = other.event;
        }
    }

    /// The record builder for this line, through the same validation as JSON and CSV records.
    pub fn builder(&self) -> RecordBuilder<'static> {
        let mut b = RecordBuilder::default();
        let num = |v: Option<f64>| -> Result<Option<Num>, ValueError> {
            match v {
                Some(x) if !x.is_finite() => Err(ValueError::NonFinite),
                Some(x) => Ok(Some(Num::float(x))),
                None => Ok(None),
            }
        };
        b.put_num(Field::Step, Ok(self.step.map(Num::int)));
        b.put_num(Field::StepTimeMs, num(self.step_time_ms));
        b.put_num(Field::Loss, num(self.loss));
        b.put_num(Field::DataWaitMs, num(self.data_wait_ms));
        b.put_num(Field::CommMs, num(self.comm_ms));
        b.put_num(Field::Rank, Ok(self.rank.map(|r| Num::int(u64::from(r)))));
        b.put_ts(Ok(self.ts_ms));
        b.put_num(Field::TokensPerS, num(self.tokens_per_s));
        b.put_num(Field::SamplesPerS, num(self.samples_per_s));
        b.put_num(Field::GlobalBatchSize, Ok(self.global_batch.map(Num::int)));
        b.put_event(self.event);
        b
    }
}

/// Parses one text line, trying only `only` when a format was forced. `None`: not a trainer line.
pub fn parse_text_line(line: &[u8], only: Option<TextReader>) -> Option<TrainerLine> {
    let mut line = line.trim_ascii_end();
    // tqdm redraws with `\r`: a captured progress bar is one physical line; its last state counts.
    if let Some(i) = memchr::memrchr(b'\r', line) {
        line = &line[i + 1..];
    }
    let clean = text::strip_ansi(line);
    let (prefix, rest) = text::strip_prefixes(&clean);
    if rest.is_empty() || !may_be_a_trainer_line(rest) {
        return None;
    }
    parse_stripped(rest, prefix, only)
}

/// What every reader needs of a line: a `:`, `|`, `=` or `/` somewhere (the key-value and progress
/// shapes all have one), or one of the few starts that need none (evaluation, checkpoint and resume
/// notices). Checked first so that a line that is no telemetry at all costs two byte scans, not a try
/// of every reader (100 MB of `x` lines took 4.3 s of CPU). Test: `the_pre_filter_changes_no_line`.
fn may_be_a_trainer_line(b: &[u8]) -> bool {
    const STARTS: [&[u8]; 5] = [
        b"Resuming",
        b"val loss",
        b"validation loss",
        b"saving checkpoint",
        b"successfully loaded",
    ];
    memchr::memchr3(b':', b'|', b'=', b).is_some()
        || memchr::memchr(b'/', b).is_some()
        || STARTS.iter().any(|s| b.starts_with(s))
}

/// [`parse_text_line`] after the prefixes were stripped, without the pre-filter.
fn parse_stripped(
    rest: &[u8],
    prefix: text::Prefix,
    only: Option<TextReader>,
) -> Option<TrainerLine> {
    let allow = |r: TextReader| only.is_none_or(|o| o == r);
    let mut got = None;
    for r in TextReader::ALL {
        if !allow(r) {
            continue;
        }
        got = match r {
            TextReader::Megatron => megatron::parse(rest),
            TextReader::NanoGpt => nanogpt::parse_nanogpt(rest),
            TextReader::ModdedNanoGpt => nanogpt::parse_modded(rest),
            TextReader::Llmc => nanogpt::parse_llmc(rest),
            TextReader::Torchtitan => torchtitan::parse(rest),
            TextReader::DeepSpeed => deepspeed::parse(rest),
            TextReader::HfTrainer => hf::parse(rest),
            TextReader::Lightning => None,
        };
        if got.is_some() {
            break;
        }
    }
    let mut t = got?;
    if t.ts_ms.is_none() {
        t.ts_ms = prefix.ts_ms;
    }
    if t.rank.is_none() {
        t.rank = prefix.rank;
    }
    Some(t)
}

#[cfg(test)]
mod tests;
