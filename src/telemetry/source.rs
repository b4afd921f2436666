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
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// Decide from the file name, then from the first bytes.
    Auto,
    /// JSON lines; a line that is not JSON is a bad line.
    Jsonl,
    /// Trainer stdout / `kubectl logs`: JSON objects mixed with ordinary log lines, which are ignored.
    Log,
    /// CSV with a header row.
    Csv,
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
        "jsonl" | "ndjson" | "json" => Some(Format::Jsonl),
        "log" | "txt" | "out" => Some(Format::Log),
        _ => None,
    }
}

/// Decides the format from the first bytes of a source whose name did not say.
fn sniff_format(head: &[u8]) -> Option<Format> {
    let first = head
        .split(|c| *c == b'\n')
        .map(|l| l.trim_ascii())
        .find(|l| !l.is_empty())?;
    if first.first() == Some(&b'{') {
        return Some(Format::Jsonl);
    }
    let header = std::str::from_utf8(first).ok()?;
    if header.contains(',')
        && header.split(',').any(|h| {
            super::field::Field::from_name(h.trim().trim_matches('"'))
                == Some(super::field::Field::StepTimeMs)
        })
    {
        return Some(Format::Csv);
    }
    // Log text: JSON objects may appear further down, between ordinary lines.
    Some(Format::Log)
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
    let probe = &head[..head.len().min(4096)];
    if probe.contains(&0) {
        return Err(input_error(
            "unknown_format",
            format!(
                "unknown telemetry format in {}: binary data (expected JSONL, CSV or trainer log text, optionally gzip)",
                spec.path.display()
            ),
        ));
    }
    let format = match spec.format {
        Format::Auto => extension_format(&spec.path)
            .or_else(|| sniff_format(probe))
            .unwrap_or(Format::Log),
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
            Some(Format::Log)
        );
        assert_eq!(extension_format(Path::new("x.parquet")), None);
        assert_eq!(
            sniff_format(b"\nts,step,step_time_ms\n1,2,3\n"),
            Some(Format::Csv)
        );
        assert_eq!(
            sniff_format(b"[trainer] start\n{\"a\":1}\n"),
            Some(Format::Log)
        );
        assert_eq!(sniff_format(b"{\"a\":1}\n"), Some(Format::Jsonl));
    }
}
