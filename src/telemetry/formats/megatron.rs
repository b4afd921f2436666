//! Megatron-LM / Megatron-DeepSpeed / NeMo (Megatron core) stdout: the iteration line, the
//! `time (ms) | …` timer line (one line, or the `(min, max) time across ranks` block), and the
//! evaluation/checkpoint lines that mark a planned slow step.

use super::text::{as_step, find, find_bytes, key, num_after, number_at};
use super::{Role, TextReader, TrainerLine};

/// ` iteration 12/ 1000 | consumed samples: … | elapsed time per iteration (ms): 123.4 | … | lm loss: …`
pub fn parse(b: &[u8]) -> Option<TrainerLine> {
    if b.starts_with(b"time (ms)") {
        return parse_timer(b).filter(|t| t.reader == TextReader::Megatron);
    }
    if b.ends_with(b")")
        && let Some(t) = parse_timer(b)
    {
        return Some(t);
    }
    if b.starts_with(b"validation loss at iteration")
        || b.starts_with(b"saving checkpoint at iteration")
    {
        let mut t = TrainerLine::new(TextReader::Megatron, Role::Eval);
        t.step = num_after(b, key!(b"iteration")).and_then(as_step);
        if b.starts_with(b"saving") {
            t.event = Some(super::TrainerEvent::Checkpoint);
        }
        return Some(t);
    }
    // A resumed run: the first iteration after it carries the start-up (`at iteration N` is the
    // checkpoint's step, printed before any iteration of this run).
    if b.starts_with(b"successfully loaded checkpoint from") {
        let mut t = TrainerLine::new(TextReader::Megatron, Role::Eval);
        t.event = Some(super::TrainerEvent::Resume);
        return Some(t);
    }
    if let Some(t) = parse_nemo(b) {
        return Some(t);
    }
    let et = find(b, key!(b"elapsed time per iteration"))?;
    let at = find(&b[..et], key!(b"iteration"))?;
    let (step, end) = number_at(&b[at + 9..])?;
    if b[at + 9 + end..].trim_ascii_start().first() != Some(&b'/') {
        return None;
    }
    let mut t = TrainerLine::new(TextReader::Megatron, Role::Iteration);
    t.step = as_step(step);
    let label = b[et + 26..].trim_ascii_start();
    let (scale, rest) = if let Some(r) = label.strip_prefix(b"(ms)") {
        (1.0, r)
    } else if let Some(r) = label.strip_prefix(b"(s)") {
        (1000.0, r)
    } else {
        return None;
    };
    t.step_time_ms = number_at(rest).map(|(v, _)| v * scale);
    t.loss = num_after(b, key!(b"lm loss")).or_else(|| num_after(b, key!(b"lm-loss")));
    t.global_batch = num_after(b, key!(b"global batch size")).and_then(as_step);
    t.samples_per_s = num_after(b, key!(b"samples per second"));
    t.tokens_per_s = num_after(b, key!(b"tokens per second"));
    Some(t)
}

/// NeMo (Lightning progress bar over Megatron core): `Epoch 0: : 10%|█ | 100/1000 [01:23<12:34,
/// reduced_train_loss=3.21, global_step=99.0, consumed_samples=…, train_step_timing in s=0.812]`. The
/// step time is `train_step_timing in s` (seconds, said by its name), the step `global_step`.
fn parse_nemo(b: &[u8]) -> Option<TrainerLine> {
    let timing = num_after(b, key!(b"train_step_timing in s="))?;
    let mut t = TrainerLine::new(TextReader::Megatron, Role::Iteration);
    t.step = num_after(b, key!(b"global_step=")).and_then(as_step);
    t.step_time_ms = Some(timing * 1000.0);
    t.loss =
        num_after(b, key!(b"reduced_train_loss=")).or_else(|| num_after(b, key!(b"train_loss=")));
    Some(t)
}

fn is_comm(name: &[u8]) -> bool {
    const COMM: [&[u8]; 10] = [
        b"all-reduce",
        b"allreduce",
        b"all_reduce",
        b"all-gather",
        b"allgather",
        b"all_gather",
        b"reduce-scatter",
        b"reduce_scatter",
        b"all-to-all",
        b"alltoall",
    ];
    COMM.iter().any(|k| find_bytes(name, k).is_some())
}

fn is_data(name: &[u8]) -> bool {
    const DATA: [&[u8]; 6] = [
        b"data loader",
        b"data-loader",
        b"dataloader",
        b"data_loader",
        b"batch-generator",
        b"batch_generator",
    ];
    DATA.iter().any(|k| find_bytes(name, k).is_some())
}

/// A timer line. Megatron: collectives (`…all-reduce…`, `…all-gather…`, `…reduce-scatter…`,
/// `…all-to-all…`) add up to `comm_ms`, `data loader` / `batch-generator` to `data_wait_ms`.
/// DeepSpeed (`fwd`, `bwd`, `step` keys): their sum is the step time, `bwd_allreduce` the comm time.
/// The values are per-iteration averages over the log interval, in ms (the line says so).
pub fn parse_timer(b: &[u8]) -> Option<TrainerLine> {
    if let Some(rest) = b.strip_prefix(b"time (ms)") {
        let mut comm = None::<f64>;
        let mut data = None::<f64>;
        let mut ds = [None::<f64>; 3];
        let mut ds_comm = None;
        for part in rest.split(|c| *c == b'|') {
            let Some(colon) = memchr::memrchr(b':', part) else {
                continue;
            };
            let name = part[..colon].trim_ascii();
            let Some((v, _)) = number_at(&part[colon + 1..]) else {
                continue;
            };
            match name {
                b"fwd" => ds[0] = Some(v),
                b"bwd" => ds[1] = Some(v),
                b"step" => ds[2] = Some(v),
                b"bwd_allreduce" => ds_comm = Some(v),
                _ if is_comm(name) => *comm.get_or_insert(0.0) += v,
                _ if is_data(name) => *data.get_or_insert(0.0) += v,
                _ => {}
            }
        }
        if ds.iter().any(Option::is_some) {
            let mut t = TrainerLine::new(TextReader::DeepSpeed, Role::Timer);
            t.step_time_ms = Some(ds.iter().flatten().sum());
            t.comm_ms = ds_comm;
            return Some(t);
        }
        if comm.is_none() && data.is_none() {
            return None;
        }
        let mut t = TrainerLine::new(TextReader::Megatron, Role::Timer);
        t.comm_ms = comm;
        t.data_wait_ms = data;
        return Some(t);
    }
    // The block form: `    all-grads-sync ........: (1.23, 4.56)`; the max across ranks counts.
    let dots = find(b, key!(b"..."))?;
    let name = b[..dots].trim_ascii();
    let open = find(b, key!(b": ("))?;
    let inner = &b[open + 3..];
    let comma = memchr::memchr(b',', inner)?;
    let (max, _) = number_at(inner[comma + 1..].trim_ascii_start())?;
    let mut t = TrainerLine::new(TextReader::Megatron, Role::Timer);
    if is_comm(name) || name == b"grads-all-reduce" || name == b"all-grads-sync" {
        t.comm_ms = Some(max);
    } else if is_data(name) {
        t.data_wait_ms = Some(max);
    } else {
        return None;
    }
    Some(t)
}
