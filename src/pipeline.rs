//! Drives one pass over a telemetry source: read → ingest → windows → features, calling back once per
//! finished window. Shared by `observe` and `closed-loop run`, so both see identical windows.

use std::io::BufRead;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::error::input_error;
use crate::signals::{FeatureConfig, FeatureExtractor, WindowFeatures, Windower};
use crate::telemetry::formats::assemble::FormatDetected;
use crate::telemetry::{Ingest, IngestOptions, IngestStats, OpenedSource};

/// Progress bars only for inputs at least this large, and only on a terminal.
const PROGRESS_MIN_BYTES: u64 = 32 * 1024 * 1024;

/// What the pass saw, besides the windows it reported.
#[derive(Debug, Clone)]
pub struct PassSummary {
    pub ingest: IngestStats,
    pub first_step: Option<u64>,
    pub last_step: Option<u64>,
    pub start_ms: Option<i64>,
    pub end_ms: Option<i64>,
    pub windows: u64,
    /// Which format was read, and why (`format_detected` in the reports).
    pub format_detected: FormatDetected,
}

/// Every window's features of the telemetry file at `path` (format detected), with the default
/// ingest options: for benchmarks, scoring and tests, where the windows fit in memory.
pub fn windows_of(
    path: &std::path::Path,
    cfg: FeatureConfig,
) -> anyhow::Result<Vec<WindowFeatures>> {
    let src = crate::telemetry::open_source(&crate::telemetry::SourceSpec {
        path: path.to_path_buf(),
        format: crate::telemetry::Format::Auto,
        record_raw: None,
    })?;
    let mut out = Vec::new();
    run_pass(src, &IngestOptions::default(), cfg, false, &mut |f| {
        out.push(f.clone());
        Ok(())
    })?;
    Ok(out)
}

/// Reads `src` to the end, calling `on_window` for each window's features in order.
pub fn run_pass(
    mut src: OpenedSource,
    ingest_opts: &IngestOptions,
    cfg: FeatureConfig,
    show_progress: bool,
    on_window: &mut dyn FnMut(&WindowFeatures) -> anyhow::Result<()>,
) -> anyhow::Result<PassSummary> {
    let mut ingest = Ingest::new(src.format, ingest_opts);
    if src.detected {
        ingest.format_was_detected();
    }
    let mut windower = Windower::new(cfg.window_steps);
    let mut extractor = FeatureExtractor::new(cfg);
    let mut summary = PassSummary {
        ingest: IngestStats::default(),
        first_step: None,
        last_step: None,
        start_ms: None,
        end_ms: None,
        windows: 0,
        format_detected: ingest.format_detected(),
    };
    let mut failure: Option<anyhow::Error> = None;

    let bar = progress_bar(&src, show_progress);
    let position = src.position.clone();
    {
        let mut emit = |s: &crate::telemetry::Sample| {
            if failure.is_some() {
                return;
            }
            let step = s.step.unwrap_or(0);
            summary.first_step.get_or_insert(step);
            summary.last_step = Some(step);
            if let Some(ts) = s.ts_ms {
                summary.start_ms.get_or_insert(ts);
                summary.end_ms = Some(ts);
            }
            if let Some(w) = windower.push(s) {
                summary.windows += 1;
                let f = extractor.next(&w);
                if let Err(e) = on_window(&f) {
                    failure = Some(e);
                }
            }
        };
        let reader: &mut dyn BufRead = &mut src.reader;
        let mut tick = |_: &IngestStats| {
            if let Some(b) = &bar {
                b.set_position(position.load(std::sync::atomic::Ordering::Relaxed));
            }
        };
        let threads = parse_threads(src.total_bytes);
        let read =
            crate::telemetry::read_all_parallel(&mut ingest, reader, threads, &mut tick, &mut emit);
        if let Err(e) = read {
            let kind = if e.kind() == std::io::ErrorKind::InvalidInput
                || e.kind() == std::io::ErrorKind::UnexpectedEof
            {
                "corrupt_input"
            } else {
                "read_failed"
            };
            return Err(input_error(
                kind,
                format!(
                    "cannot read telemetry after {} lines: {e}",
                    ingest.stats().lines_read
                ),
            ));
        }
        summary.ingest = ingest.finish(&mut emit);
    }
    summary.format_detected = ingest.format_detected();
    if let Some(e) = failure {
        return Err(e);
    }
    if let Some(w) = windower.finish() {
        summary.windows += 1;
        on_window(&extractor.next(&w))?;
    }
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    if let Some(raw) = &src.raw_sink {
        raw.finish()
            .map_err(|e| anyhow::anyhow!("cannot write --record-raw file: {e}"))?;
    }
    Ok(summary)
}

/// Parser threads: one for small or streamed inputs, up to four for large files.
fn parse_threads(total_bytes: Option<u64>) -> usize {
    match total_bytes {
        Some(n) if n >= 8 * 1024 * 1024 => {
            std::thread::available_parallelism().map_or(1, |p| p.get().min(4))
        }
        _ => 1,
    }
}

fn progress_bar(src: &OpenedSource, show: bool) -> Option<ProgressBar> {
    let total = src.total_bytes?;
    if !show || total < PROGRESS_MIN_BYTES {
        return None;
    }
    let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
    if bar.is_hidden() {
        return None;
    }
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} reading {bytes}/{total_bytes} {wide_bar} {bytes_per_sec} eta {eta}",
        )
        .ok()?,
    );
    bar.enable_steady_tick(Duration::from_millis(200));
    Some(bar)
}
