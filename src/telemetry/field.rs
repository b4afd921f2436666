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
            b"step_time_ms" | b"step_time" | b"latency_ms" | b"step_ms" | b"iter_time_ms"
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

/// Parses a number written as text: surrounding space and a trailing `%` or `ms` are allowed
/// (`"95%"`, `"12.5ms"`). `NaN`, `inf` and friends are [`ValueError::NonFinite`].
pub fn parse_number_text(s: &str) -> Result<f64, ValueError> {
    let t = s.trim();
    let t = t
        .strip_suffix('%')
        .or_else(|| t.strip_suffix("ms"))
        .unwrap_or(t)
        .trim_end();
    match t.parse::<f64>() {
        Ok(v) if v.is_finite() => Ok(v),
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
        .map(parse_number_text)
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
        assert_eq!(parse_number_text(" 95% "), Ok(95.0));
        assert_eq!(parse_number_text("12.5ms"), Ok(12.5));
        assert_eq!(parse_number_text("NaN"), Err(ValueError::NonFinite));
        assert_eq!(parse_number_text("inf"), Err(ValueError::NonFinite));
        assert_eq!(parse_number_text("fast"), Err(ValueError::WrongType));
        assert_eq!(parse_list_text("[1, 2.5]").unwrap().as_slice(), [1.0, 2.5]);
        assert_eq!(parse_list_text("1;2").unwrap().as_slice(), [1.0, 2.0]);
        assert!(parse_list_text("[]").unwrap().is_empty());
        assert_eq!(parse_list_text("[1,x]"), Err(ValueError::WrongType));
    }
}
