//! Whole-document formats, which are not line-oriented: Megatron's golden values / TensorBoard scalar
//! export (`{"lm loss": {"start_step", "end_step", "step_interval", "values": {"1": …}},
//! "iteration-time": {…}}`) and the Hugging Face Trainer's `trainer_state.json` (`log_history`).
//! Read whole, up to [`MAX_DOCUMENT_BYTES`] (a larger one is refused with a clear error). In golden
//! values, a fall of `mem-max-allocated-bytes` marks a resumed run's first step (`event: resume`).

use std::collections::BTreeMap;
use std::io::{self, BufRead, Read};

use serde_json::Value;

use super::super::source::Format;
use super::{Role, TextReader, TrainerLine};

/// Golden-value files of long runs are a few MB; this bound keeps memory bounded.
pub const MAX_DOCUMENT_BYTES: u64 = 64 << 20;

/// Reads the document; the records in step order, and the bytes read.
pub fn read(reader: &mut dyn BufRead, format: Format) -> io::Result<(Vec<TrainerLine>, u64)> {
    let mut buf = Vec::new();
    reader.take(MAX_DOCUMENT_BYTES + 1).read_to_end(&mut buf)?;
    if buf.len() as u64 > MAX_DOCUMENT_BYTES {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "a {} document larger than {} MiB is not read (convert it to JSON lines)",
                format.name(),
                MAX_DOCUMENT_BYTES >> 20
            ),
        ));
    }
    let doc: Value = serde_json::from_slice(&buf).map_err(|e| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("not a {} JSON document: {e}", format.name()),
        )
    })?;
    let records = match format {
        Format::MegatronGolden => golden(&doc),
        Format::HfTrainerState => trainer_state(&doc),
        _ => Ok(Vec::new()),
    }
    .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    Ok((records, buf.len() as u64))
}

/// Does this head of a JSON document look like one of the document formats?
pub fn sniff(head: &[u8]) -> Option<Format> {
    let t = head.trim_ascii_start();
    if t.first() != Some(&b'{') {
        return None;
    }
    let has = |k: &[u8]| super::text::find_bytes(head, k).is_some();
    if has(b"\"log_history\"") || (has(b"\"global_step\"") && has(b"\"best_metric\"")) {
        return Some(Format::HfTrainerState);
    }
    if has(b"\"step_interval\"") && has(b"\"values\"") && has(b"\"start_step\"") {
        return Some(Format::MegatronGolden);
    }
    None
}

fn number(v: &Value) -> Option<f64> {
    match v {
        Value::Number(n) => n.as_f64(),
        // Golden values write a missing or diverged value as the string "nan".
        Value::String(s) => s.trim().parse::<f64>().ok(),
        _ => None,
    }
}

fn golden(doc: &Value) -> Result<Vec<TrainerLine>, String> {
    let obj = doc
        .as_object()
        .ok_or("golden values: the document is not an object")?;
    let mut by_step: BTreeMap<u64, TrainerLine> = BTreeMap::new();
    let mut seen = false;
    for (key, scale, is_loss) in [
        ("lm loss", 1.0, true),
        // Megatron records iteration-time in seconds (its timers' `elapsed()` unit).
        ("iteration-time", 1000.0, false),
    ] {
        let Some(values) = obj
            .get(key)
            .and_then(|m| m.get("values"))
            .and_then(Value::as_object)
        else {
            continue;
        };
        seen = true;
        for (step, v) in values {
            let Ok(step) = step.parse::<u64>() else {
                continue;
            };
            let t = by_step.entry(step).or_insert_with(|| TrainerLine {
                reader: TextReader::Megatron,
                role: Role::Iteration,
                step: Some(step),
                ..Default::default()
            });
            let x = number(v);
            if is_loss {
                t.loss = x;
            } else {
                t.step_time_ms = x.filter(|s| s.is_finite()).map(|s| s * scale);
            }
        }
    }
    // `mem-max-allocated-bytes` is a peak over the process's life: it never falls within one
    // process, so a fall marks the first step of a new one (the run was resumed from a checkpoint).
    if let Some(values) = obj
        .get("mem-max-allocated-bytes")
        .and_then(|m| m.get("values"))
        .and_then(Value::as_object)
    {
        let mut peaks: Vec<(u64, f64)> = values
            .iter()
            .filter_map(|(k, v)| Some((k.parse::<u64>().ok()?, number(v)?)))
            .filter(|(_, v)| v.is_finite())
            .collect();
        peaks.sort_by_key(|(k, _)| *k);
        for w in peaks.windows(2) {
            if w[1].1 < w[0].1
                && let Some(t) = by_step.get_mut(&w[1].0)
            {
                t.event = Some(super::TrainerEvent::Resume);
            }
        }
    }
    if !seen {
        return Err(
            "golden values: neither \"lm loss\" nor \"iteration-time\" has \"values\"".into(),
        );
    }
    // "nan" in both series marks steps past the end of the recorded run (`end_step` is the
    // planned one): nothing was measured there. A NaN loss next to a time is a diverged loss.
    Ok(by_step
        .into_values()
        .filter(|t| t.step_time_ms.is_some() || t.loss.is_some_and(f64::is_finite))
        .collect())
}

fn trainer_state(doc: &Value) -> Result<Vec<TrainerLine>, String> {
    let history = doc
        .get("log_history")
        .and_then(Value::as_array)
        .ok_or("trainer_state.json: no \"log_history\" list")?;
    let mut out = Vec::new();
    let mut eval_pending = None;
    for e in history {
        let step = e.get("step").and_then(Value::as_u64);
        if e.get("eval_loss").is_some() || e.get("eval_runtime").is_some() {
            eval_pending = Some(super::TrainerEvent::Evaluation);
            continue;
        }
        let Some(loss) = e.get("loss").and_then(number) else {
            continue;
        };
        out.push(TrainerLine {
            reader: TextReader::HfTrainer,
            role: Role::Iteration,
            step,
            loss: Some(loss),
            event: eval_pending.take(),
            ..Default::default()
        });
    }
    Ok(out)
}
