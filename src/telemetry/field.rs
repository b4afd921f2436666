//! The telemetry record's field names and their aliases, and tolerant value parsers shared by the JSON
//! and CSV readers. A field name maps to at most one [`Field`]; unknown names are ignored.

use super::record::WorkerLatencies;

/// A recognised telemetry field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Field {
    Ts,
    Step,
    StepTimeMs,
    Loss,
    DataWaitMs,
    WorkerLatenciesMs,
    GpuUtilPct,
    GpuMemUtilPct,
    CommMs,
    Node,
    Rank,
    TokensPerS,
    SamplesPerS,
    GlobalBatchSize,
    SeqLen,
    Event,
    /// `step_time`: a step time whose name gives no unit (docs/telemetry.md, "Units").
    StepTimeBare,
}

impl Field {
    /// Maps a field name (canonical or alias) to its field. Documented in docs/telemetry.md.
    pub fn from_name(name: &str) -> Option<Field> {
        Self::from_name_bytes(name.as_bytes())
    }

    /// [`Field::from_name`] on the raw bytes of a JSON key.
    pub fn from_name_bytes(name: &[u8]) -> Option<Field> {
        Some(match name {
            b"ts" | b"timestamp" | b"time" | b"t" | b"@timestamp" => Field::Ts,
            b"step" | b"iteration" | b"iter" | b"global_step" => Field::Step,
            // No unit in the name: read as ms unless `--step-time-unit s` (see StepTimeBare).
            b"step_time" => Field::StepTimeBare,
            b"step_time_ms" | b"latency_ms" | b"step_ms" | b"iter_time_ms"
            | b"iteration_time_ms" => Field::StepTimeMs,
            b"loss" | b"train_loss" => Field::Loss,
            b"data_wait_ms" | b"dataloader_wait_ms" | b"data_time_ms" | b"input_wait_ms" => {
                Field::DataWaitMs
            }
            b"worker_latencies_ms" | b"worker_latency_ms" | b"workers_ms" => {
                Field::WorkerLatenciesMs
            }
            b"gpu_util_pct" | b"gpu_util" | b"gpu_usage_pct" | b"gpu_usage" => Field::GpuUtilPct,
            b"gpu_mem_util_pct" | b"gpu_mem_util" | b"gpu_mem_pct" => Field::GpuMemUtilPct,
            b"comm_ms" | b"allreduce_ms" | b"nccl_ms" | b"comm_time_ms" => Field::CommMs,
            b"node" | b"node_name" | b"hostname" | b"host" => Field::Node,
            b"rank" | b"global_rank" | b"worker_rank" => Field::Rank,
            b"tokens_per_s" | b"tokens_per_sec" | b"tokens_per_second" | b"tok_per_s" => {
                Field::TokensPerS
            }
            b"samples_per_s"
            | b"samples_per_sec"
            | b"samples_per_second"
            | b"train_samples_per_second" => Field::SamplesPerS,
            b"global_batch_size" | b"global_batch" | b"gbs" => Field::GlobalBatchSize,
            b"seq_len" | b"seq_length" | b"sequence_length" => Field::SeqLen,
            b"event" | b"trainer_event" => Field::Event,
            _ => return None,
        })
    }
}

/// Why a value could not be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ValueError {
    /// The value has the wrong JSON type or is not a number.
    WrongType,
    /// NaN or an infinity.
    NonFinite,
    /// A number outside the field's range (a negative step time, a percentage of 250).
    OutOfRange,
}

/// A number as read: its value, and the exact integer when it was written as an integer that fits a
/// u64. Steps are integers: above 2^53 their f64 would collapse neighbouring steps into one.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Num {
    pub value: f64,
    pub int: Option<u64>,
}

impl Num {
    pub fn float(value: f64) -> Num {
        Num { value, int: None }
    }

    pub fn int(i: u64) -> Num {
        Num {
            value: i as f64,
            int: Some(i),
        }
    }

    /// The integer this number stands for: exact when written as one; a float only when it is whole
    /// and small enough (below 2^53) that it names one integer. Negative values are the caller's.
    pub fn to_u64(self) -> Result<u64, ValueError> {
        const EXACT: f64 = (1u64 << 53) as f64;
        match self.int {
            Some(i) => Ok(i),
            None if self.value.fract() != 0.0 => Err(ValueError::WrongType),
            // 2^53 itself is what 2^53 + 1 rounds to: it no longer names one integer.
            None if self.value >= EXACT => Err(ValueError::OutOfRange),
            None => Ok(self.value as u64),
        }
    }
}

/// Parses a number written as text: surrounding space and a trailing `%` or `ms` are allowed
/// (`"95%"`, `"12.5ms"`). `NaN`, `inf` and friends are [`ValueError::NonFinite`].
pub fn parse_number_text(s: &str) -> Result<Num, ValueError> {
    let t = s.trim();
    let t = t
        .strip_suffix('%')
        .or_else(|| t.strip_suffix("ms"))
        .unwrap_or(t)
        .trim_end();
    if let Ok(i) = t.parse::<u64>() {
        return Ok(Num::int(i));
    }
    match t.parse::<f64>() {
        Ok(v) if v.is_finite() => Ok(Num::float(v)),
        Ok(_) => Err(ValueError::NonFinite),
        Err(_) => Err(ValueError::WrongType),
    }
}

/// Parses a worker latency list written as text (CSV): `[1.5, 2]`, `1.5;2` or `1.5 2`.
pub fn parse_list_text(s: &str) -> Result<WorkerLatencies, ValueError> {
    let t = s.trim();
    let t = t
        .strip_prefix('[')
        .and_then(|x| x.strip_suffix(']'))
        .unwrap_or(t);
    t.split([',', ';', ' '])
        .filter(|p| !p.trim().is_empty())
        .map(|p| parse_number_text(p).map(|n| n.value))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aliases_map_to_fields() {
        assert_eq!(Field::from_name("timestamp"), Some(Field::Ts));
        assert_eq!(Field::from_name("latency_ms"), Some(Field::StepTimeMs));
        assert_eq!(Field::from_name("gpu_usage"), Some(Field::GpuUtilPct));
        assert_eq!(Field::from_name("throughput"), None);
    }

    #[test]
    fn number_text() {
        assert_eq!(parse_number_text(" 95% "), Ok(Num::int(95)));
        assert_eq!(parse_number_text("12.5ms"), Ok(Num::float(12.5)));
        assert_eq!(
            parse_number_text("18446744073709551615"),
            Ok(Num::int(u64::MAX))
        );
        assert_eq!(
            parse_number_text("18446744073709551616").map(|n| n.int),
            Ok(None)
        );
        assert_eq!(parse_number_text("NaN"), Err(ValueError::NonFinite));
        assert_eq!(parse_number_text("inf"), Err(ValueError::NonFinite));
        assert_eq!(parse_number_text("fast"), Err(ValueError::WrongType));
        assert_eq!(parse_list_text("[1, 2.5]").unwrap().as_slice(), [1.0, 2.5]);
        assert_eq!(parse_list_text("1;2").unwrap().as_slice(), [1.0, 2.0]);
        assert!(parse_list_text("[]").unwrap().is_empty());
        assert_eq!(parse_list_text("[1,x]"), Err(ValueError::WrongType));
    }

    #[test]
    fn integers_are_exact_and_floats_name_one_integer_or_none() {
        assert_eq!(Num::int(u64::MAX).to_u64(), Ok(u64::MAX));
        assert_eq!(Num::float(1e3).to_u64(), Ok(1000));
        assert_eq!(Num::float(9007199254740991.0).to_u64(), Ok((1 << 53) - 1));
        assert_eq!(
            Num::float(9007199254740992.0).to_u64(),
            Err(ValueError::OutOfRange)
        );
        assert_eq!(
            Num::float(9007199254740994.0).to_u64(),
            Err(ValueError::OutOfRange)
        );
        assert_eq!(
            Num::float(1.8446744073709552e19).to_u64(),
            Err(ValueError::OutOfRange)
        );
        assert_eq!(Num::float(1.5).to_u64(), Err(ValueError::WrongType));
    }
}
