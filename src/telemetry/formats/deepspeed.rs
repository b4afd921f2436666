//! DeepSpeed: `[Rank 0] step=100, skipped=0, lr=[0.0001], mom=[(0.9, 0.999)]` (the rank prefix is
//! stripped before this sees the line), the `time (ms) | fwd: … | bwd: … | step: …` timer line, and
//! `timer.py`'s throughput line `epoch=0/micro_step=100/global_step=100, RunningAvgSamplesPerSec=…,
//! CurrSamplesPerSec=…`.

use super::megatron::parse_timer;
use super::text::{as_step, key, num_after};
use super::{Role, TextReader, TrainerLine};

pub fn parse(b: &[u8]) -> Option<TrainerLine> {
    if b.starts_with(b"time (ms)") {
        return parse_timer(b).filter(|t| t.reader == TextReader::DeepSpeed);
    }
    if let Some(rest) = b.strip_prefix(b"step=") {
        super::text::find(rest, key!(b"skipped="))?;
        let mut t = TrainerLine::new(TextReader::DeepSpeed, Role::Iteration);
        t.step = Some(num_after(b, key!(b"step=")).and_then(as_step)?);
        return Some(t);
    }
    if b.starts_with(b"epoch=") && super::text::contains(b, key!(b"SamplesPerSec=")) {
        let mut t = TrainerLine::new(TextReader::DeepSpeed, Role::Metrics);
        t.step = Some(num_after(b, key!(b"global_step=")).and_then(as_step)?);
        t.samples_per_s = num_after(b, key!(b"CurrSamplesPerSec="));
        return Some(t);
    }
    None
}
