//! Hugging Face Trainer stdout: the dicts `Trainer.log` prints (Python literals, not JSON:
//! `{'loss': 1.375, 'grad_norm': 10.55, 'learning_rate': 5e-05, 'epoch': 0.1}`) and tqdm's progress
//! bar (`  5%|▌    | 50/1000 [00:30<09:30,  1.67it/s]`, or `18.80s/it` for slow steps). The bar gives
//! the step and its rate (tqdm's smoothed average, in the unit it prints); a dict's loss belongs to the
//! step shown just before it.

use memchr::memmem::Finder;

use super::text::{as_step, find, key, number_at};
use super::{Role, TextReader, TrainerLine};

pub fn parse(b: &[u8]) -> Option<TrainerLine> {
    if b.starts_with(b"{'") {
        return parse_dict(b);
    }
    parse_tqdm(b)
}

/// The number after a dict key; newer versions may quote values.
fn value(b: &[u8], key: &Finder<'_>) -> Option<f64> {
    let at = find(b, key)? + key.needle().len();
    let rest = b[at..].trim_ascii_start();
    let rest = rest.strip_prefix(b"'").unwrap_or(rest);
    number_at(rest).map(|(v, _)| v)
}

fn parse_dict(b: &[u8]) -> Option<TrainerLine> {
    if find(b, key!(b"'eval_loss':")).is_some() || find(b, key!(b"'eval_runtime':")).is_some() {
        return Some(TrainerLine::new(TextReader::HfTrainer, Role::Eval));
    }
    let loss = value(b, key!(b"'loss':"))?;
    let mut t = TrainerLine::new(TextReader::HfTrainer, Role::Metrics);
    t.loss = Some(loss);
    t.step = value(b, key!(b"'step':")).and_then(as_step);
    Some(t)
}

fn parse_tqdm(b: &[u8]) -> Option<TrainerLine> {
    find(b, key!(b"%|"))?;
    let (rate_at, per_it) = match (find(b, key!(b"s/it")), find(b, key!(b"it/s"))) {
        (Some(i), _) => (i, true),
        (None, Some(i)) => (i, false),
        (None, None) => return None,
    };
    let start = b[..rate_at]
        .iter()
        .rposition(|c| !(c.is_ascii_digit() || *c == b'.'))
        .map_or(0, |i| i + 1);
    let (rate, _) = number_at(&b[start..rate_at])?;
    // `n/total [`: the step is the count before the slash.
    let lb = find(b, key!(b" ["))?;
    let head = &b[..lb];
    let slash = memchr::memrchr(b'/', head)?;
    let nstart = head[..slash]
        .iter()
        .rposition(|c| !c.is_ascii_digit())
        .map_or(0, |i| i + 1);
    let (n, _) = number_at(&head[nstart..slash])?;
    let mut t = TrainerLine::new(TextReader::HfTrainer, Role::Iteration);
    t.step = as_step(n);
    t.step_time_ms = if per_it {
        Some(rate * 1000.0)
    } else if rate > 0.0 {
        Some(1000.0 / rate)
    } else {
        None
    };
    Some(t)
}
