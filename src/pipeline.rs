//! Drives one pass over a telemetry source: read → ingest → windows → features, calling back once per
//! finished window. Shared by `observe` and `closed-loop run`, so both see identical windows.

use std::io::BufRead;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::error::input_error;
use crate::signals::{
    FeatureConfig, FeatureExtractor, PlannedCounts, WindowFeatures, WindowStats, Windower,
};
use crate::telemetry::formats::assemble::FormatDetected;
use crate::telemetry::{Ingest, IngestOptions, IngestStats, OpenedSource, Sample};

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
    /// The window and warm-up lengths used: the requested ones, shortened for a slow run.
    pub config: FeatureConfig,
    /// Planned slow steps set aside.
    pub planned: PlannedCounts,
    /// Records that carried a step time (0: loss-only telemetry).
    pub timed_records: u64,
    /// Which format was read, and why (`format_detected` in the reports).
    pub format_detected: FormatDetected,
}

/// A slow run's window spans at least this much wall time...
pub const WINDOW_WALL_MS: f64 = 60_000.0;
/// ...its warm-up at least this much (and two windows)...
pub const WARMUP_WALL_MS: f64 = 300_000.0;
/// ...and a window holds at least this many records.
pub const MIN_WINDOW_RECORDS: u64 = 4;
/// Records with a step time read before the window length is chosen.
const PROBE_TIMED: usize = 8;
/// Records held at most while probing (loss-only telemetry never fills the probe).
const PROBE_MAX: usize = 256;

/// Windows and warm-up adapted to the run's pace (docs/signals.md, "Slow runs"): the requested
/// lengths are upper bounds, kept for any run faster than about a second per step; a slow run gets
/// windows of about a minute (at least [`MIN_WINDOW_RECORDS`] records) and a warm-up of about five
/// minutes (at least two windows), so 60 two-minute iterations are judged.
pub fn adapt_config(cfg: FeatureConfig, median_step_ms: Option<f64>, stride: u64) -> FeatureConfig {
    let Some(m) = median_step_ms.filter(|m| *m > 0.0) else {
        return cfg;
    };
    let steps_for = |wall_ms: f64| (wall_ms / m).ceil().min(u64::MAX as f64) as u64;
    let window = steps_for(WINDOW_WALL_MS)
        .max(MIN_WINDOW_RECORDS.saturating_mul(stride.max(1)))
        .min(cfg.window_steps)
        .max(1);
    let warmup = steps_for(WARMUP_WALL_MS)
        .max(2 * window)
        .min(cfg.warmup_steps);
    FeatureConfig {
        window_steps: window,
        warmup_steps: warmup,
    }
}

/// Windows whose length is chosen from the first records ([`adapt_config`]): holds up to
/// [`PROBE_MAX`] records (until [`PROBE_TIMED`] carry a step time), then windows them and everything
/// after. Shared by the file passes and the live loop's session (which checkpoints it), so a watch
/// windows a slow run exactly as `closed-loop run` does.
#[derive(serde::Serialize, serde::Deserialize)]
pub struct AdaptiveWindower {
    requested: FeatureConfig,
    probe: Vec<Sample>,
    timed: usize,
    live: Option<(FeatureConfig, Windower)>,
}

impl AdaptiveWindower {
    pub fn new(requested: FeatureConfig) -> Self {
        AdaptiveWindower {
            requested,
            probe: Vec::new(),
            timed: 0,
            live: None,
        }
    }

    /// The window and warm-up lengths, once chosen.
    pub fn config(&self) -> Option<FeatureConfig> {
        self.live.as_ref().map(|(c, _)| *c)
    }

    pub fn push(&mut self, s: &Sample, out: &mut dyn FnMut(&FeatureConfig, WindowStats)) {
        if let Some((cfg, w)) = &mut self.live {
            if let Some(stats) = w.push(s) {
                out(cfg, stats);
            }
            return;
        }
        self.timed += usize::from(s.step_time_ms.is_some());
        self.probe.push(s.clone());
        if self.timed >= PROBE_TIMED || self.probe.len() >= PROBE_MAX {
            self.start(out);
        }
    }

    fn start(&mut self, out: &mut dyn FnMut(&FeatureConfig, WindowStats)) {
        let mut times: Vec<f64> = self.probe.iter().filter_map(|s| s.step_time_ms).collect();
        times.sort_unstable_by(f64::total_cmp);
        let median = crate::signals::quantile_sorted(&times, 0.5);
        let mut strides: Vec<u64> = self
            .probe
            .windows(2)
            .filter_map(|p| Some(p[1].step?.checked_sub(p[0].step?)?).filter(|d| *d > 0))
            .collect();
        strides.sort_unstable();
        let stride = strides.get(strides.len() / 2).copied().unwrap_or(1);
        let cfg = adapt_config(self.requested, median, stride);
        self.live = Some((cfg, Windower::new(cfg.window_steps).paced(median)));
        for s in std::mem::take(&mut self.probe) {
            self.push(&s, out);
        }
    }

    /// Closes the last window; the lengths used and the planned steps set aside.
    pub fn finish(
        &mut self,
        out: &mut dyn FnMut(&FeatureConfig, WindowStats),
    ) -> (FeatureConfig, PlannedCounts) {
        if self.live.is_none() {
            self.start(out);
        }
        let (cfg, w) = self.live.as_mut().expect("started");
        if let Some(stats) = w.finish() {
            out(cfg, stats);
        }
        (*cfg, w.planned())
    }
}

/// Windows and their features, the extractor made once the lengths are chosen.
struct Stage {
    windows: AdaptiveWindower,
    extractor: Option<FeatureExtractor>,
}

impl Stage {
    fn features(
        extractor: &mut Option<FeatureExtractor>,
        on: &mut dyn FnMut(&WindowFeatures),
    ) -> impl FnMut(&FeatureConfig, WindowStats) {
        move |cfg, stats| {
            let x = extractor.get_or_insert_with(|| FeatureExtractor::new(*cfg));
            on(&x.next(&stats));
        }
    }

    fn push(&mut self, s: &Sample, on: &mut dyn FnMut(&WindowFeatures)) {
        self.windows
            .push(s, &mut Stage::features(&mut self.extractor, on));
    }

    fn finish(&mut self, on: &mut dyn FnMut(&WindowFeatures)) -> (FeatureConfig, PlannedCounts) {
        self.windows
            .finish(&mut Stage::features(&mut self.extractor, on))
    }
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
    src: OpenedSource,
    ingest_opts: &IngestOptions,
    cfg: FeatureConfig,
    show_progress: bool,
    on_window: &mut dyn FnMut(&WindowFeatures) -> anyhow::Result<()>,
) -> anyhow::Result<PassSummary> {
    run_pass_with_records(src, ingest_opts, cfg, show_progress, on_window, &mut |_| {})
}

/// [`run_pass`], also showing `on_record` each record in the order the windows see them.
pub fn run_pass_with_records(
    mut src: OpenedSource,
    ingest_opts: &IngestOptions,
    cfg: FeatureConfig,
    show_progress: bool,
    on_window: &mut dyn FnMut(&WindowFeatures) -> anyhow::Result<()>,
    on_record: &mut dyn FnMut(&crate::telemetry::Sample),
) -> anyhow::Result<PassSummary> {
    let mut ingest = Ingest::new(src.format, ingest_opts);
    if src.detected {
        ingest.format_was_detected();
    }
    let mut stage = Stage {
        windows: AdaptiveWindower::new(cfg),
        extractor: None,
    };
    let mut summary = PassSummary {
        ingest: IngestStats::default(),
        first_step: None,
        last_step: None,
        start_ms: None,
        end_ms: None,
        windows: 0,
        config: cfg,
        planned: PlannedCounts::default(),
        timed_records: 0,
        format_detected: ingest.format_detected(),
    };
    let mut failure: Option<anyhow::Error> = None;

    let bar = progress_bar(&src, show_progress);
    let position = src.position.clone();
    let mut windows = 0u64;
    let mut timed_records = 0u64;
    let mut on = |f: &WindowFeatures| {
        windows += 1;
        if failure.is_none()
            && let Err(e) = on_window(f)
        {
            failure = Some(e);
        }
    };
    {
        let mut emit = |s: &crate::telemetry::Sample| {
            timed_records += u64::from(s.step_time_ms.is_some());
            let step = s.step.unwrap_or(0);
            summary.first_step.get_or_insert(step);
            summary.last_step = Some(step);
            if let Some(ts) = s.ts_ms {
                summary.start_ms.get_or_insert(ts);
                summary.end_ms = Some(ts);
            }
            on_record(s);
            stage.push(s, &mut on);
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
    let (config, planned) = stage.finish(&mut on);
    if let Some(e) = failure {
        return Err(e);
    }
    summary.windows = windows;
    summary.config = config;
    summary.planned = planned;
    summary.timed_records = timed_records;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_slow_runs_get_shorter_windows() {
        let req = FeatureConfig {
            window_steps: 50,
            warmup_steps: 200,
        };
        let got = |m, g| {
            let c = adapt_config(req, m, g);
            (c.window_steps, c.warmup_steps)
        };
        // A 28 ms H100 step, a 1 s step logged every 10th, loss only: untouched.
        assert_eq!(got(Some(28.0), 1), (50, 200));
        assert_eq!(got(Some(1000.0), 10), (50, 200));
        assert_eq!(got(None, 1), (50, 200));
        // Two-minute iterations: windows of 4 records, two windows of warm-up.
        assert_eq!(got(Some(127_000.0), 1), (4, 8));
        // Five-second steps: a minute per window, five minutes of warm-up.
        assert_eq!(got(Some(5000.0), 1), (12, 60));
        // Logged every 5th step: still four records per window.
        assert_eq!(got(Some(127_000.0), 5), (20, 40));
    }
}
