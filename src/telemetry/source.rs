//! Opens a telemetry source (a file or `-` for stdin), undoes gzip (detected by magic bytes, not by
//! name), works out the format, and optionally tees the raw lines to a file for replay.

use std::fs::File;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use flate2::read::MultiGzDecoder;

use crate::error::input_error;

/// How lines are interpreted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Format {
    /// Detect: document formats and CSV from the first bytes, text formats from the first lines
    /// that match one (re-checked as the stream goes on).
    Auto,
    /// JSON lines; a line that is not JSON is a bad line.
    Jsonl,
    /// Trainer stdout / `kubectl logs`: our JSON records mixed with ordinary log lines, which are ignored.
    Log,
    /// CSV with a header row.
    Csv,
    /// Megatron-LM / Megatron-DeepSpeed / NeMo stdout (iteration and timer lines).
    Megatron,
    /// Megatron golden values / TensorBoard scalar export (one JSON document).
    MegatronGolden,
    /// nanoGPT (`iter N: loss …, time …ms`).
    Nanogpt,
    /// modded-nanogpt (`step:N/M … train_time:…ms`, cumulative).
    ModdedNanogpt,
    /// llm.c (`step N/M | loss … | … ms | … tok/s`).
    Llmc,
    /// torchtitan (`step: N  loss: …  tps: …`, ANSI colours allowed).
    Torchtitan,
    /// DeepSpeed (`step=N, skipped=…`, `time (ms) | fwd: …`, throughput lines).
    Deepspeed,
    /// Hugging Face Trainer stdout (`{'loss': …}` dicts, tqdm progress).
    HfTrainer,
    /// Hugging Face `trainer_state.json` (one JSON document, `log_history`).
    HfTrainerState,
    /// PyTorch Lightning CSVLogger `metrics.csv`.
    LightningCsv,
}

impl Format {
    /// The name `--format` takes.
    pub fn name(self) -> &'static str {
        match self {
            Format::Auto => "auto",
            Format::Jsonl => "jsonl",
            Format::Log => "log",
            Format::Csv => "csv",
            Format::Megatron => "megatron",
            Format::MegatronGolden => "megatron-golden",
            Format::Nanogpt => "nanogpt",
            Format::ModdedNanogpt => "modded-nanogpt",
            Format::Llmc => "llmc",
            Format::Torchtitan => "torchtitan",
            Format::Deepspeed => "deepspeed",
            Format::HfTrainer => "hf-trainer",
            Format::HfTrainerState => "hf-trainer-state",
            Format::LightningCsv => "lightning-csv",
        }
    }

    /// A whole JSON document rather than lines.
    pub fn is_document(self) -> bool {
        matches!(self, Format::MegatronGolden | Format::HfTrainerState)
    }

    /// Lines can be parsed on several threads (no header or document state).
    pub fn parallel(self) -> bool {
        !matches!(self, Format::Csv | Format::LightningCsv) && !self.is_document()
    }

    /// Text lines are read by the trainer readers (auto-detection or a forced trainer format).
    pub fn reads_trainer_text(self) -> bool {
        self == Format::Auto || super::formats::TextReader::of_format(self).is_some()
    }
}

/// Where telemetry comes from.
#[derive(Debug, Clone)]
pub struct SourceSpec {
    /// A file path, or `-` for stdin.
    pub path: PathBuf,
    pub format: Format,
    /// Copy every raw (decompressed) line here.
    pub record_raw: Option<PathBuf>,
}

/// An open source, ready for line reading.
pub struct OpenedSource {
    pub reader: Box<dyn BufRead + Send>,
    pub format: Format,
    /// `format` was decided from the name or content (not given with `--format`).
    pub detected: bool,
    pub compressed: bool,
    /// Size on disk, when known (for progress).
    pub total_bytes: Option<u64>,
    /// Bytes consumed from the underlying file/stdin so far (compressed bytes for `.gz`).
    pub position: Arc<AtomicU64>,
    /// Flushes the raw recording; call once at the end.
    pub raw_sink: Option<RawSink>,
}

/// Bytes read from the underlying source, shared with the progress bar.
struct Counting<R> {
    inner: R,
    pos: Arc<AtomicU64>,
}

impl<R: Read> Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.pos.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }
}

/// Handle to the raw-line recording, shared with the tee reader.
#[derive(Clone)]
pub struct RawSink(Arc<std::sync::Mutex<io::BufWriter<File>>>);

impl RawSink {
    pub fn finish(&self) -> io::Result<()> {
        self.0
            .lock()
            .map_err(|_| io::Error::other("raw sink poisoned"))?
            .flush()
    }
}

struct Tee<R> {
    inner: R,
    sink: RawSink,
}

impl<R: Read> Read for Tee<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        let mut w = self
            .sink
            .0
            .lock()
            .map_err(|_| io::Error::other("raw sink poisoned"))?;
        w.write_all(&buf[..n])?;
        Ok(n)
    }
}

fn extension_format(path: &Path) -> Option<Format> {
    let name = path.file_name()?.to_str()?.to_ascii_lowercase();
    let name = name.strip_suffix(".gz").unwrap_or(&name);
    let ext = Path::new(name).extension()?.to_str()?;
    match ext {
        "csv" => Some(Format::Csv),
        "jsonl" | "ndjson" => Some(Format::Jsonl),
        // Trainer stdout: our JSON records or a trainer's own lines, detected line by line.
        "log" | "txt" | "out" => Some(Format::Auto),
        _ => None,
    }
}

/// Decides the format from the first bytes. Text stays `Auto`: the ingest detects the trainer format
/// (or our JSON records) from the lines themselves, and re-checks it.
fn sniff_format(head: &[u8], by_name: Option<Format>) -> Format {
    if let Some(doc) = super::formats::document::sniff(head) {
        return doc;
    }
    let first = head
        .split(|c| *c == b'\n')
        .map(|l| l.trim_ascii())
        .find(|l| !l.is_empty());
    let Some(first) = first else {
        return by_name.unwrap_or(Format::Auto);
    };
    let header = std::str::from_utf8(first).unwrap_or("");
    if header.contains(',')
        && header.split(',').any(|h| {
            matches!(
                super::field::Field::from_name(h.trim().trim_matches('"')),
                Some(super::field::Field::StepTimeMs | super::field::Field::StepTimeBare)
            )
        })
    {
        return Format::Csv;
    }
    if super::formats::lightning::sniff(header) {
        return Format::LightningCsv;
    }
    if let Some(f) = by_name {
        return f;
    }
    // A first line of our JSON (not a Python dict) makes JSON lines.
    if first.first() == Some(&b'{') && first.get(1) != Some(&b'\'') {
        return Format::Jsonl;
    }
    Format::Auto
}

pub fn open_source(spec: &SourceSpec) -> anyhow::Result<OpenedSource> {
    let position = Arc::new(AtomicU64::new(0));
    let (raw, total_bytes): (Box<dyn Read + Send>, Option<u64>) = if spec.path.as_os_str() == "-" {
        (Box::new(io::stdin()), None)
    } else {
        let p = &spec.path;
        let meta = std::fs::metadata(p).map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => input_error(
                "not_found",
                format!("telemetry file not found: {}", p.display()),
            ),
            _ => input_error(
                "unreadable",
                format!("cannot read telemetry file {}: {e}", p.display()),
            ),
        })?;
        if meta.is_dir() {
            return Err(input_error(
                "unreadable",
                format!("telemetry path is a directory: {}", p.display()),
            ));
        }
        let f = File::open(p).map_err(|e| {
            input_error(
                "unreadable",
                format!("cannot read telemetry file {}: {e}", p.display()),
            )
        })?;
        (Box::new(f), Some(meta.len()))
    };
    let counted = Counting {
        inner: raw,
        pos: position.clone(),
    };
    let mut buffered = BufReader::with_capacity(256 * 1024, counted);
    let head = buffered.fill_buf().map_err(|e| {
        input_error(
            "unreadable",
            format!("cannot read telemetry from {}: {e}", spec.path.display()),
        )
    })?;
    let compressed = head.starts_with(&[0x1f, 0x8b]);
    let mut reader: Box<dyn BufRead + Send> = if compressed {
        Box::new(BufReader::with_capacity(
            256 * 1024,
            MultiGzDecoder::new(buffered),
        ))
    } else {
        Box::new(buffered)
    };
    let head = reader.fill_buf().map_err(|e| {
        input_error(
            "unreadable",
            format!("cannot decompress {}: {e}", spec.path.display()),
        )
    })?;
    if head.is_empty() {
        return Err(input_error(
            "empty",
            format!("telemetry source is empty: {}", spec.path.display()),
        ));
    }
    let probe = &head[..head.len().min(64 * 1024)];
    if probe[..probe.len().min(4096)].contains(&0) {
        return Err(input_error(
            "unknown_format",
            format!(
                "unknown telemetry format in {}: binary data (expected JSONL, CSV or trainer log text, optionally gzip)",
                spec.path.display()
            ),
        ));
    }
    let format = match spec.format {
        Format::Auto => sniff_format(probe, extension_format(&spec.path)),
        f => f,
    };
    let raw_sink = match &spec.record_raw {
        None => None,
        Some(path) => {
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir).map_err(|e| {
                    input_error(
                        "bad_flag",
                        format!("--record-raw: cannot create {}: {e}", dir.display()),
                    )
                })?;
            }
            let f = File::create(path).map_err(|e| {
                input_error(
                    "bad_flag",
                    format!("--record-raw: cannot create {}: {e}", path.display()),
                )
            })?;
            let sink = RawSink(Arc::new(std::sync::Mutex::new(
                io::BufWriter::with_capacity(256 * 1024, f),
            )));
            reader = Box::new(BufReader::with_capacity(
                256 * 1024,
                Tee {
                    inner: reader,
                    sink: sink.clone(),
                },
            ));
            Some(sink)
        }
    };
    Ok(OpenedSource {
        reader,
        format,
        detected: spec.format == Format::Auto,
        compressed,
        total_bytes,
        position,
        raw_sink,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_from_names_and_content() {
        assert_eq!(extension_format(Path::new("a/b.CSV.gz")), Some(Format::Csv));
        assert_eq!(
            extension_format(Path::new("x.stdout.log.gz")),
            Some(Format::Auto)
        );
        assert_eq!(extension_format(Path::new("x.parquet")), None);
        assert_eq!(
            sniff_format(b"\nts,step,step_time_ms\n1,2,3\n", None),
            Format::Csv
        );
        assert_eq!(
            sniff_format(b"[trainer] start\n{\"a\":1}\n", None),
            Format::Auto
        );
        assert_eq!(sniff_format(b"{\"a\":1}\n", None), Format::Jsonl);
        assert_eq!(sniff_format(b"{'loss': 1.0}\n", None), Format::Auto);
        assert_eq!(
            sniff_format(b"epoch,step,train_loss_step,val_loss\n", Some(Format::Csv)),
            Format::LightningCsv
        );
        assert_eq!(
            sniff_format(
                b"{\n  \"best_metric\": 1,\n  \"log_history\": [",
                Some(Format::Jsonl)
            ),
            Format::HfTrainerState
        );
        assert_eq!(
            sniff_format(
                b"{\"lm loss\": {\"start_step\": 1, \"step_interval\": 5, \"values\": {",
                None
            ),
            Format::MegatronGolden
        );
    }

    /// Every format name round-trips through `--format`.
    #[test]
    fn format_names_round_trip() {
        use clap::ValueEnum;
        for f in Format::value_variants() {
            assert_eq!(Format::from_str(f.name(), false), Ok(*f));
            assert_eq!(serde_json::to_value(f).unwrap(), f.name());
        }
    }
}
