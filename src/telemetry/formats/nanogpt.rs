//! nanoGPT, modded-nanogpt and llm.c: the same family of one-line-per-step printers.

use super::text::{as_step, contains, find, key, num_after, num_unit_after, number_at};
use super::{Role, TextReader, TrainerLine};

/// A number followed by `ms` or `s` (nanoGPT prints `time 123.45ms`), in ms.
fn duration_ms(v: f64, unit: &[u8]) -> Option<f64> {
    let u = unit.trim_ascii_start();
    if u.starts_with(b"ms") {
        Some(v)
    } else if u.first() == Some(&b's') && !u.get(1).is_some_and(u8::is_ascii_alphabetic) {
        Some(v * 1000.0)
    } else {
        None
    }
}

/// `iter 100: loss 4.2345, time 123.45ms, mfu 35.12%`; `step 100: train loss 4.1, val loss 4.3`.
pub fn parse_nanogpt(b: &[u8]) -> Option<TrainerLine> {
    if let Some(rest) = b.strip_prefix(b"iter ") {
        let (step, end) = number_at(rest)?;
        if rest.get(end) != Some(&b':') {
            return None;
        }
        let (v, unit) = num_unit_after(rest, key!(b"time"))?;
        let mut t = TrainerLine::new(TextReader::NanoGpt, Role::Iteration);
        t.step = as_step(step);
        t.step_time_ms = Some(duration_ms(v, unit)?);
        t.loss = num_after(rest, key!(b"loss"));
        return Some(t);
    }
    // `init_from='resume'` prints this before its first iteration.
    if b.starts_with(b"Resuming training from") {
        let mut t = TrainerLine::new(TextReader::NanoGpt, Role::Eval);
        t.event = Some(super::TrainerEvent::Resume);
        return Some(t);
    }
    if let Some(rest) = b.strip_prefix(b"step ") {
        let (step, end) = number_at(rest)?;
        if rest.get(end) != Some(&b':') || !contains(rest, key!(b"val loss")) {
            return None;
        }
        let mut t = TrainerLine::new(TextReader::NanoGpt, Role::Eval);
        t.step = as_step(step);
        return Some(t);
    }
    None
}

/// `step:1234/20344 train_loss:3.1234 train_time:2091234ms step_avg:1703.56ms` (and the `val_loss`
/// lines). `train_time` is cumulative: the assembler differences it.
pub fn parse_modded(b: &[u8]) -> Option<TrainerLine> {
    let rest = b.strip_prefix(b"step:")?;
    let (step, end) = number_at(rest)?;
    if rest.get(end) != Some(&b'/') {
        return None;
    }
    let (v, unit) = num_unit_after(rest, key!(b"train_time:"))?;
    let role = if contains(rest, key!(b"val_loss:")) {
        Role::Eval
    } else {
        Role::Iteration
    };
    let mut t = TrainerLine::new(TextReader::ModdedNanoGpt, role);
    t.step = as_step(step);
    t.cumulative_ms = Some(duration_ms(v, unit)?);
    if role == Role::Iteration {
        t.loss = num_after(rest, key!(b"train_loss:"));
    }
    Some(t)
}

/// `step    1/19560 | loss 11.010252 (+nanz)| norm 15.1374 (+nanz)| lr 8.57e-07 | 4688.25 ms |
/// 28.8% bf16 MFU | 111830 tok/s`; `val loss 4.5` marks the next step.
pub fn parse_llmc(b: &[u8]) -> Option<TrainerLine> {
    if b.starts_with(b"val loss") {
        return Some(TrainerLine::new(TextReader::Llmc, Role::Eval));
    }
    let rest = b.strip_prefix(b"step ")?;
    let (step, end) = number_at(rest)?;
    if rest[end..].trim_ascii_start().first() != Some(&b'/')
        || find(rest, key!(b"| loss")).is_none()
    {
        return None;
    }
    let mut t = TrainerLine::new(TextReader::Llmc, Role::Iteration);
    t.step = as_step(step);
    for part in rest.split(|c| *c == b'|') {
        let p = part.trim_ascii();
        if let Some(l) = p.strip_prefix(b"loss") {
            t.loss = number_at(l).map(|(v, _)| v);
        } else if let Some(n) = p.strip_suffix(b" ms") {
            t.step_time_ms = number_at(n).map(|(v, _)| v);
        } else if let Some(n) = p.strip_suffix(b" tok/s") {
            t.tokens_per_s = number_at(n).map(|(v, _)| v);
        }
    }
    t.step_time_ms?;
    Some(t)
}
