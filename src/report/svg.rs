//! The timeline as inline SVG, built by hand: stacked panels (step time p50/p95, loss, data wait, GPU
//! utilisation) over one step axis, chords or symptoms as translucent bands with a lane of labels,
//! proposals, blocks and applied changes as markers. Every string that came from an artifact goes
//! through [`esc`]; numbers are written by us. Series are downsampled for drawing only
//! ([`super::downsample`]).

use std::fmt::Write;

use super::downsample;
use super::model::{Band, BandKind, Gate, ReportModel, WindowRow};

/// Escapes text for HTML and SVG content and attribute values (double- or single-quoted). Control
/// characters other than tab and newline, which XML forbids, become U+FFFD.
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            '\t' | '\n' => out.push(c),
            c if c.is_control() => out.push('\u{FFFD}'),
            c => out.push(c),
        }
    }
    out
}

/// A stable colour slot for a band label; known chords and symptoms get fixed slots so the same thing
/// has the same colour in every report.
pub fn colour_slot(label: &str) -> usize {
    match label {
        "BURST-ABSORB" | "burst" => 0,
        "INPUT-STRAGGLER" | "input_straggler" => 1,
        "DRIFT-RETUNE" | "step_time_drift" => 2,
        "RECOVER-RELOCK" => 3,
        "loss_drift" => 4,
        "stall" => 5,
        "comm_bound" => 6,
        other => {
            // FNV-1a: stable across runs and platforms.
            let mut h: u32 = 0x811c_9dc5;
            for b in other.bytes() {
                h = (h ^ u32::from(b)).wrapping_mul(0x0100_0193);
            }
            (h % 8) as usize
        }
    }
}

/// Drawing options.
#[derive(Debug, Clone, Copy)]
pub struct ChartOptions {
    /// Points per series at most (min/max-preserving bucketing beyond).
    pub max_points: usize,
}

impl Default for ChartOptions {
    fn default() -> Self {
        ChartOptions { max_points: 1500 }
    }
}

const W: f64 = 1200.0;
const LEFT: f64 = 72.0;
const RIGHT: f64 = 16.0;
const LANE_H: f64 = 18.0;
const PANEL_H: f64 = 120.0;
const PANEL_GAP: f64 = 26.0;
const AXIS_H: f64 = 44.0;
/// Bands and markers closer than this many pixels merge when drawn.
const MERGE_PX: f64 = 1.5;
/// Marker columns across the plot (markers in one column draw as one, with a count).
const MARKER_COLUMNS: f64 = 400.0;

/// Symptoms get a lane row each up to this many.
const MAX_SYMPTOM_ROWS: usize = 6;

/// One row of the lane strip above the panels.
struct Lane<'a> {
    kind: BandKind,
    title: &'static str,
    /// Only bands with this label (None: every band of the kind).
    label: Option<&'a str>,
}

/// Maps steps to x.
#[derive(Debug, Clone, Copy)]
struct XScale {
    lo: f64,
    hi: f64,
}

impl XScale {
    fn x(&self, step: f64) -> f64 {
        let span = (self.hi - self.lo).max(1.0);
        LEFT + (step - self.lo) / span * (W - LEFT - RIGHT)
    }
    fn step_per_px(&self) -> f64 {
        (self.hi - self.lo).max(1.0) / (W - LEFT - RIGHT)
    }
}

/// A y range; values above `hi` are drawn at the top and counted as off scale.
#[derive(Debug, Clone, Copy)]
struct YScale {
    lo: f64,
    hi: f64,
    top: f64,
}

impl YScale {
    fn y(&self, v: f64) -> f64 {
        let span = (self.hi - self.lo).max(f64::MIN_POSITIVE);
        let t = ((v - self.lo) / span).clamp(0.0, 1.0);
        self.top + PANEL_H - t * PANEL_H
    }
}

/// Nice tick values covering [lo, hi], about `n` of them.
fn ticks(lo: f64, hi: f64, n: usize) -> Vec<f64> {
    if hi.partial_cmp(&lo) != Some(std::cmp::Ordering::Greater)
        || !lo.is_finite()
        || !hi.is_finite()
    {
        return vec![lo];
    }
    let raw = (hi - lo) / n.max(1) as f64;
    let mag = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 2.5, 5.0, 10.0]
        .iter()
        .map(|m| m * mag)
        .find(|s| *s >= raw)
        .unwrap_or(10.0 * mag);
    let mut v = (lo / step).ceil() * step;
    let mut out = Vec::new();
    while v <= hi + step * 1e-9 && out.len() < 50 {
        out.push(if v.abs() < step * 1e-9 { 0.0 } else { v });
        v += step;
    }
    out
}

/// A number for an axis label: `12k`, `1.5M`, `0.25`, `340`.
pub fn short_num(v: f64) -> String {
    let a = v.abs();
    let trim = |s: String| {
        if s.contains('.') {
            s.trim_end_matches('0').trim_end_matches('.').to_string()
        } else {
            s
        }
    };
    if a >= 1e6 {
        format!("{}M", trim(format!("{:.2}", v / 1e6)))
    } else if a >= 1e4 {
        format!("{}k", trim(format!("{:.1}", v / 1e3)))
    } else if a >= 100.0 || a == 0.0 {
        format!("{v:.0}")
    } else if a >= 1.0 {
        trim(format!("{v:.1}"))
    } else {
        trim(format!("{v:.3}"))
    }
}

/// One series of a panel.
struct Series<'a> {
    id: &'static str,
    label: &'static str,
    class: &'static str,
    value: &'a dyn Fn(&WindowRow) -> Option<f64>,
    /// Whether the axis is fitted to this series; one that is not (the per-window maximum) is drawn
    /// clipped at the top, so one stalled step does not flatten the medians.
    scales: bool,
}

struct Panel<'a> {
    id: &'static str,
    title: &'static str,
    unit: &'static str,
    /// Axis starts at zero (durations, shares) rather than at the data's minimum (loss).
    from_zero: bool,
    /// Fixed upper bound (percentages).
    fixed_hi: Option<f64>,
    series: Vec<Series<'a>>,
}

/// The upper end of an axis: the maximum, unless a few outliers sit far above the bulk, in which case
/// the 99th percentile with headroom (the outliers are drawn at the top and called out).
fn robust_hi(values: &mut [f64]) -> (f64, bool) {
    values.sort_by(f64::total_cmp);
    let max = *values.last().unwrap_or(&1.0);
    if values.len() < 20 {
        return (max, false);
    }
    let p99 = values[(values.len() - 1) * 99 / 100];
    if p99 > 0.0 && max > 5.0 * p99 {
        (p99 * 1.5, true)
    } else {
        (max, false)
    }
}

fn path_d(points: &[(f64, f64)], xs: &XScale, ys: &YScale) -> String {
    let mut d = String::with_capacity(points.len() * 14);
    for (i, (x, y)) in points.iter().enumerate() {
        let _ = write!(
            d,
            "{}{:.1},{:.1}",
            if i == 0 { "M" } else { "L" },
            xs.x(*x),
            ys.y(*y)
        );
    }
    if points.len() == 1 {
        // A lone point still shows: a short horizontal tick.
        let (x, y) = points[0];
        let _ = write!(d, "h2 M{:.1},{:.1}h-2", xs.x(x), ys.y(y));
    }
    d
}

/// Merges bands with the same label that are closer than `gap` steps (drawing only).
fn merge_for_drawing(bands: &[&Band], gap: f64) -> Vec<(Band, u64)> {
    let mut out: Vec<(Band, u64)> = Vec::new();
    for b in bands {
        if let Some((last, n)) = out
            .iter_mut()
            .rev()
            .find(|(l, _)| l.label == b.label && l.kind == b.kind)
            && (b.first_step as f64) - (last.last_step as f64) <= gap
        {
            last.last_step = last.last_step.max(b.last_step);
            last.end_ms = b.end_ms.or(last.end_ms);
            last.windows += b.windows;
            *n += 1;
            continue;
        }
        out.push(((*b).clone(), 1));
    }
    out
}

/// Offsets from the first window's start, for tooltips and the axis.
fn offset_text(ms: Option<i64>, t0: Option<i64>) -> String {
    match (ms, t0) {
        (Some(a), Some(b)) => crate::human::offset_ms(a - b),
        _ => String::new(),
    }
}

/// A marker on the lane row: what happened at a step, drawn as a small shape with a tooltip.
#[derive(Debug, Clone)]
pub struct Marker {
    pub step: u64,
    pub kind: MarkerKind,
    pub text: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MarkerKind {
    Proposal,
    Blocked,
    Applied,
    ApplyRun,
    /// The effect check's verdict on the change made at this step.
    Effect(&'static str),
}

impl MarkerKind {
    fn class(self) -> &'static str {
        match self {
            MarkerKind::Proposal => "proposal",
            MarkerKind::Blocked => "blocked",
            MarkerKind::Applied => "applied",
            MarkerKind::ApplyRun => "apply-run",
            MarkerKind::Effect("helped") => "effect helped",
            MarkerKind::Effect("hurt") => "effect hurt",
            MarkerKind::Effect(_) => "effect other",
        }
    }
}

/// Markers from the model: one per decision and kind, plus the apply run when its time falls
/// inside the telemetry.
pub fn markers(m: &ReportModel) -> Vec<Marker> {
    let mut out = Vec::new();
    for d in &m.decisions {
        let list = |v: &[super::model::Change]| {
            v.iter()
                .map(|c| format!("{} {} → {} ({})", c.knob, c.from, c.to, c.reason))
                .collect::<Vec<_>>()
                .join("; ")
        };
        if !d.proposals.is_empty() {
            out.push(Marker {
                step: d.last_step,
                kind: MarkerKind::Proposal,
                text: format!("window {}: proposed {}", d.window, list(&d.proposals)),
            });
        }
        if !d.blocked.is_empty() {
            let b: Vec<String> = d
                .blocked
                .iter()
                .map(|b| format!("{}: {}", b.knob, b.reason))
                .collect();
            out.push(Marker {
                step: d.last_step,
                kind: MarkerKind::Blocked,
                text: format!("window {}: blocked {}", d.window, b.join("; ")),
            });
        }
        if !d.applied.is_empty() {
            out.push(Marker {
                step: d.last_step,
                kind: MarkerKind::Applied,
                text: format!("window {}: applied {}", d.window, list(&d.applied)),
            });
        }
    }
    for e in &m.effects {
        out.push(Marker {
            step: e.change_step,
            kind: MarkerKind::Effect(e.verdict),
            text: format!(
                "change at step {} ({}): {} — {}",
                e.change_step, e.knobs, e.verdict, e.reason
            ),
        });
    }
    // The apply run: at the window it happened in, else at the edge of the telemetry it fell beyond.
    let (kind, what) = match &m.outcome.apply {
        Gate::Ok { detail } => (MarkerKind::ApplyRun, format!("k8s apply: {detail}")),
        Gate::Blocked { reason, detail } => (
            MarkerKind::Blocked,
            format!("k8s apply blocked: {reason} {detail}")
                .trim_end()
                .to_string(),
        ),
        Gate::NotRun | Gate::Unreadable { .. } => return out,
    };
    let (Some(first), Some(last)) = (m.windows.first(), m.windows.last()) else {
        return out;
    };
    let (step, note) = match m.outcome.apply_ms {
        Some(t) if first.start_ms.is_some_and(|a| t < a) => {
            (first.first_step, " (before the telemetry starts)")
        }
        // The window it fell in, or the next one when it fell in a gap between windows.
        Some(t) => match m.windows.iter().find(|w| w.end_ms.is_some_and(|b| t <= b)) {
            Some(w) => (w.last_step, ""),
            None => (last.last_step, " (after the telemetry ends)"),
        },
        None => (last.last_step, " (time unknown)"),
    };
    out.push(Marker {
        step,
        kind,
        text: format!("{what}{note}"),
    });
    out
}

/// Renders the timeline SVG.
pub fn timeline(m: &ReportModel, opt: ChartOptions) -> String {
    let mut s = String::new();
    let ws = &m.windows;
    let lo = ws.iter().map(|w| w.first_step).min().unwrap_or(0) as f64;
    let hi = ws.iter().map(|w| w.last_step).max().unwrap_or(1) as f64;
    let xs = XScale {
        lo,
        hi: hi.max(lo + 1.0),
    };
    let t0 = ws.iter().find_map(|w| w.start_ms);
    let mid: Vec<f64> = ws
        .iter()
        .map(|w| (w.first_step as f64 + w.last_step as f64) / 2.0)
        .collect();

    let p50 = |w: &WindowRow| w.step_p50;
    let p95 = |w: &WindowRow| w.step_p95;
    let max = |w: &WindowRow| w.step_max;
    let loss = |w: &WindowRow| w.loss;
    let dws = |w: &WindowRow| w.data_wait_share.map(|x| x * 100.0);
    let dwp = |w: &WindowRow| w.data_wait_p95;
    let gpu = |w: &WindowRow| w.gpu_util;
    // Data wait draws as a share when telemetry has one, else as the p95 wait in ms.
    let has_share = ws.iter().any(|w| w.data_wait_share.is_some());
    let panels = [
        Panel {
            id: "step_time",
            title: "Step time",
            unit: "ms",
            from_zero: true,
            fixed_hi: None,
            series: vec![
                Series {
                    id: "step_time_max",
                    label: "max",
                    class: "s-max",
                    value: &max,
                    scales: false,
                },
                Series {
                    id: "step_time_p95",
                    label: "p95",
                    class: "s-p95",
                    value: &p95,
                    scales: true,
                },
                Series {
                    id: "step_time_p50",
                    label: "p50",
                    class: "s-p50",
                    value: &p50,
                    scales: true,
                },
            ],
        },
        Panel {
            id: "loss",
            title: "Loss",
            unit: "",
            from_zero: false,
            fixed_hi: None,
            series: vec![Series {
                id: "loss",
                label: "mean",
                class: "s-loss",
                value: &loss,
                scales: true,
            }],
        },
        if has_share {
            Panel {
                id: "data_wait",
                title: "Data wait",
                unit: "% of step",
                from_zero: true,
                fixed_hi: None,
                series: vec![Series {
                    id: "data_wait_share",
                    label: "share",
                    class: "s-wait",
                    value: &dws,
                    scales: true,
                }],
            }
        } else {
            Panel {
                id: "data_wait",
                title: "Data wait",
                unit: "ms p95",
                from_zero: true,
                fixed_hi: None,
                series: vec![Series {
                    id: "data_wait_p95",
                    label: "p95",
                    class: "s-wait",
                    value: &dwp,
                    scales: true,
                }],
            }
        },
        Panel {
            id: "gpu_util",
            title: "GPU utilisation",
            unit: "%",
            from_zero: true,
            fixed_hi: Some(100.0),
            series: vec![Series {
                id: "gpu_util",
                label: "mean",
                class: "s-gpu",
                value: &gpu,
                scales: true,
            }],
        },
    ];

    let has_chords = m.bands.iter().any(|b| b.kind == BandKind::Chord);
    let has_symptoms = m.bands.iter().any(|b| b.kind == BandKind::Symptom);
    // Lane rows: one for chords (one primary chord per window, so they never overlap), and one per
    // symptom (symptoms overlap) up to MAX_SYMPTOM_ROWS, beyond which they share one row.
    let mut lanes: Vec<Lane> = Vec::new();
    if has_chords {
        lanes.push(Lane {
            kind: BandKind::Chord,
            title: "chords",
            label: None,
        });
    }
    if has_symptoms {
        let mut labels: Vec<&str> = Vec::new();
        for b in m.bands.iter().filter(|b| b.kind == BandKind::Symptom) {
            if !labels.contains(&b.label.as_str()) {
                labels.push(&b.label);
            }
        }
        if labels.len() <= MAX_SYMPTOM_ROWS {
            for (i, l) in labels.into_iter().enumerate() {
                lanes.push(Lane {
                    kind: BandKind::Symptom,
                    title: if i == 0 { "symptoms" } else { "" },
                    label: Some(l),
                });
            }
        } else {
            lanes.push(Lane {
                kind: BandKind::Symptom,
                title: "symptoms",
                label: None,
            });
        }
    }
    let mark_list = markers(m);
    let marker_row = !mark_list.is_empty();
    let lanes_h = LANE_H * (lanes.len() + usize::from(marker_row)) as f64;
    let plot_top = 8.0 + lanes_h + if lanes_h > 0.0 { 8.0 } else { 0.0 };
    let plot_bottom = plot_top + panels.len() as f64 * (PANEL_H + PANEL_GAP) - PANEL_GAP;
    let h = plot_bottom + AXIS_H;
    let _ = write!(
        s,
        r#"<svg id="timeline" class="timeline" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {W} {h:.0}" width="100%" role="img" aria-label="Timeline of step time, loss, data wait and GPU utilisation" data-windows="{}">"#,
        ws.len()
    );

    // Full-height bands: chords when the decision trace is there, else symptoms.
    let shaded_kind = if has_chords {
        BandKind::Chord
    } else {
        BandKind::Symptom
    };
    let gap = xs.step_per_px() * MERGE_PX;
    let shaded: Vec<&Band> = m.bands.iter().filter(|b| b.kind == shaded_kind).collect();
    s += r#"<g class="bands">"#;
    for (b, n) in merge_for_drawing(&shaded, gap) {
        let x0 = xs.x(b.first_step as f64);
        let x1 = xs.x(b.last_step as f64).max(x0 + 1.0);
        let _ = write!(
            s,
            r#"<rect class="band c{}" data-kind="{}" data-label="{}" x="{x0:.1}" y="{plot_top:.1}" width="{:.1}" height="{:.1}"><title>{}</title></rect>"#,
            colour_slot(&b.label),
            if b.kind == BandKind::Chord {
                "chord"
            } else {
                "symptom"
            },
            esc(&b.label),
            x1 - x0,
            plot_bottom - plot_top,
            esc(&band_title(&b, n, t0))
        );
    }
    s += "</g>";

    // Lanes: the bands of each row, labelled inside when wide enough.
    for (i, lane) in lanes.iter().enumerate() {
        let y = 8.0 + i as f64 * LANE_H;
        let _ = write!(
            s,
            r#"<g class="lane" data-lane="{}"><text class="lane-label" x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"#,
            esc(lane.label.unwrap_or(lane.title)),
            LEFT - 6.0,
            y + 12.0,
            lane.title
        );
        let of_kind: Vec<&Band> = m
            .bands
            .iter()
            .filter(|b| b.kind == lane.kind && lane.label.is_none_or(|l| l == b.label))
            .collect();
        for (b, n) in merge_for_drawing(&of_kind, gap) {
            let x0 = xs.x(b.first_step as f64);
            let x1 = xs.x(b.last_step as f64).max(x0 + 2.0);
            let _ = write!(
                s,
                r#"<rect class="lane-band c{}" data-label="{}" x="{x0:.1}" y="{:.1}" width="{:.1}" height="{:.1}" rx="2"><title>{}</title></rect>"#,
                colour_slot(&b.label),
                esc(&b.label),
                y + 2.0,
                x1 - x0,
                LANE_H - 4.0,
                esc(&band_title(&b, n, t0))
            );
            let label = b.label.as_str();
            if x1 - x0 > 7.0 * label.chars().count() as f64 + 6.0 {
                let _ = write!(
                    s,
                    r#"<text class="lane-text" x="{:.1}" y="{:.1}">{}</text>"#,
                    x0 + 3.0,
                    y + 12.5,
                    esc(label)
                );
            }
        }
        s += "</g>";
    }
    if marker_row {
        let y = 8.0 + lanes.len() as f64 * LANE_H;
        let _ = write!(
            s,
            r#"<g class="lane" data-lane="changes"><text class="lane-label" x="{:.1}" y="{:.1}" text-anchor="end">changes</text>"#,
            LEFT - 6.0,
            y + 12.0
        );
        s += &markers_svg(&mark_list, &xs, y, plot_top, plot_bottom);
        s += "</g>";
    }

    for (i, p) in panels.iter().enumerate() {
        let top = plot_top + i as f64 * (PANEL_H + PANEL_GAP);
        s += &panel_svg(p, ws, &mid, &xs, top, opt);
    }

    // X axis: steps, with the time offset under each tick when the telemetry has timestamps.
    let _ = write!(s, r#"<g class="axis x-axis">"#);
    for t in ticks(xs.lo, xs.hi, 8) {
        let x = xs.x(t);
        let _ = write!(
            s,
            r#"<line class="tick" x1="{x:.1}" x2="{x:.1}" y1="{plot_bottom:.1}" y2="{:.1}"/><text x="{x:.1}" y="{:.1}" text-anchor="middle">{}</text>"#,
            plot_bottom + 4.0,
            plot_bottom + 16.0,
            short_num(t)
        );
        let at = ws
            .iter()
            .find(|w| w.last_step as f64 >= t)
            .and_then(|w| w.start_ms);
        let off = offset_text(at, t0);
        if !off.is_empty() {
            let _ = write!(
                s,
                r#"<text class="time" x="{x:.1}" y="{:.1}" text-anchor="middle">{off}</text>"#,
                plot_bottom + 30.0
            );
        }
    }
    let _ = write!(
        s,
        r#"<text class="axis-title" x="{:.1}" y="{:.1}" text-anchor="end">step</text></g>"#,
        LEFT - 6.0,
        plot_bottom + 16.0
    );
    s += "</svg>";
    s
}

fn band_title(b: &Band, merged: u64, t0: Option<i64>) -> String {
    let mut t = format!(
        "{} · steps {}–{} · {} window{}",
        b.label,
        b.first_step,
        b.last_step,
        b.windows,
        if b.windows == 1 { "" } else { "s" }
    );
    let (a, z) = (offset_text(b.start_ms, t0), offset_text(b.end_ms, t0));
    if !a.is_empty() && !z.is_empty() {
        let _ = write!(t, " · {a} → {z}");
    }
    if let Some(c) = &b.confidence {
        let _ = write!(t, " · {c} confidence");
    }
    if merged > 1 {
        let _ = write!(t, " · {merged} episodes drawn as one");
    }
    t
}

fn markers_svg(list: &[Marker], xs: &XScale, y: f64, plot_top: f64, plot_bottom: f64) -> String {
    let mut s = String::new();
    // One marker per kind and column; the tooltip lists up to 5 and counts the rest.
    let col_w = (W - LEFT - RIGHT) / MARKER_COLUMNS;
    let mut groups: Vec<(MarkerKind, i64, Vec<&Marker>)> = Vec::new();
    for m in list {
        let col = ((xs.x(m.step as f64) - LEFT) / col_w).floor() as i64;
        match groups
            .iter_mut()
            .find(|(k, c, _)| *k == m.kind && *c == col)
        {
            Some(g) => g.2.push(m),
            None => groups.push((m.kind, col, vec![m])),
        }
    }
    for (kind, _, ms) in groups {
        let x = xs.x(ms[0].step as f64);
        let cy = y + LANE_H / 2.0;
        let mut title: Vec<String> = ms.iter().take(5).map(|m| m.text.clone()).collect();
        if ms.len() > 5 {
            title.push(format!("… and {} more", ms.len() - 5));
        }
        let shape = match kind {
            MarkerKind::Proposal => format!(r#"<path d="M{:.1},{:.1}l5,9h-10z"/>"#, x, cy - 5.0),
            // Beside a proposal of the same window rather than on top of it.
            MarkerKind::Blocked => format!(
                r#"<path d="M{:.1},{:.1}l8,8m0,-8l-8,8"/>"#,
                x + 4.0,
                cy - 4.0
            ),
            // Below the proposal it judges.
            MarkerKind::Effect(_) => {
                format!(r#"<circle cx="{:.1}" cy="{:.1}" r="4"/>"#, x, cy + 7.0)
            }
            MarkerKind::Applied | MarkerKind::ApplyRun => format!(
                r#"<path d="M{x:.1},{:.1}l5,5l-5,5l-5,-5z"/><line class="applied-line" x1="{x:.1}" x2="{x:.1}" y1="{plot_top:.1}" y2="{plot_bottom:.1}"/>"#,
                cy - 5.0
            ),
        };
        let _ = write!(
            s,
            r#"<g class="marker {}" data-step="{}" data-count="{}"><title>{}</title>{shape}</g>"#,
            kind.class(),
            ms[0].step,
            ms.len(),
            esc(&title.join("\n"))
        );
    }
    s
}

/// Red ticks on the top edge where values ran off the scale (one per marker column), with the peak.
fn clipped_marks(
    p: &Panel<'_>,
    values: &[Vec<Option<f64>>],
    mid: &[f64],
    xs: &XScale,
    hi: f64,
    top: f64,
) -> String {
    let col_w = (W - LEFT - RIGHT) / MARKER_COLUMNS;
    let mut cols: Vec<(i64, f64, f64, usize)> = Vec::new(); // column, x, peak, count
    for vals in values {
        for (x, v) in mid.iter().zip(vals) {
            let Some(v) = v.filter(|v| *v > hi) else {
                continue;
            };
            let px = xs.x(*x);
            let c = ((px - LEFT) / col_w).floor() as i64;
            match cols.iter_mut().find(|e| e.0 == c) {
                Some(e) => {
                    e.2 = e.2.max(v);
                    e.3 += 1;
                }
                None => cols.push((c, px, v, 1)),
            }
        }
    }
    let mut s = String::new();
    for (_, x, peak, n) in cols {
        let _ = write!(
            s,
            r#"<path class="clip" d="M{:.1},{:.1}l3.5,5h-7z"><title>{} off scale: {} {}{}</title></path>"#,
            x,
            top + 1.0,
            p.title,
            short_num(peak),
            p.unit,
            if n > 1 {
                format!(" ({n} values)")
            } else {
                String::new()
            }
        );
    }
    s
}

fn panel_svg(
    p: &Panel<'_>,
    ws: &[WindowRow],
    mid: &[f64],
    xs: &XScale,
    top: f64,
    opt: ChartOptions,
) -> String {
    let mut s = String::new();
    let values: Vec<Vec<Option<f64>>> = p
        .series
        .iter()
        .map(|sr| {
            ws.iter()
                .map(|w| (sr.value)(w).filter(|v| v.is_finite()))
                .collect()
        })
        .collect();
    let mut all: Vec<f64> = p
        .series
        .iter()
        .zip(&values)
        .filter(|(sr, _)| sr.scales)
        .flat_map(|(_, v)| v.iter().flatten().copied())
        .collect();
    let _ = write!(s, r#"<g class="panel" data-panel="{}">"#, p.id);
    let unit = if p.unit.is_empty() {
        String::new()
    } else {
        format!(" ({})", p.unit)
    };
    let _ = write!(
        s,
        r#"<text class="panel-title" x="{LEFT:.1}" y="{:.1}">{}{unit}</text>"#,
        top - 6.0,
        p.title
    );
    let _ = write!(
        s,
        r#"<rect class="frame" x="{LEFT:.1}" y="{top:.1}" width="{:.1}" height="{PANEL_H:.1}"/>"#,
        W - LEFT - RIGHT
    );
    if all.is_empty() {
        let _ = write!(
            s,
            r#"<text class="nodata" x="{:.1}" y="{:.1}" text-anchor="middle">not in this telemetry</text></g>"#,
            (LEFT + W - RIGHT) / 2.0,
            top + PANEL_H / 2.0 + 4.0
        );
        return s;
    }
    let min = all.iter().copied().fold(f64::INFINITY, f64::min);
    let (mut hi, _) = robust_hi(&mut all);
    if let Some(f) = p.fixed_hi {
        hi = hi.max(f);
    }
    let mut lo = if p.from_zero { min.min(0.0) } else { min };
    if hi - lo < 1e-9 {
        let pad = hi.abs().max(1.0) * 0.05;
        lo -= pad;
        hi += pad;
    } else if !p.from_zero {
        let pad = (hi - lo) * 0.05;
        lo -= pad;
        hi += pad;
    } else if p.series.iter().any(|sr| !sr.scales) {
        // Room above the medians for the per-window maximum, which only clips when it spikes.
        hi *= 1.6;
    } else {
        hi *= 1.05;
    }
    let ys = YScale { lo, hi, top };
    for t in ticks(lo, hi, 3) {
        let y = ys.y(t);
        let _ = write!(
            s,
            r#"<line class="grid" x1="{LEFT:.1}" x2="{:.1}" y1="{y:.1}" y2="{y:.1}"/><text class="ylabel" x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"#,
            W - RIGHT,
            LEFT - 6.0,
            y + 4.0,
            short_num(t)
        );
    }
    for (sr, vals) in p.series.iter().zip(&values) {
        let runs = downsample::series(mid, vals, opt.max_points);
        let n: usize = runs.iter().map(Vec::len).sum();
        if n == 0 {
            continue;
        }
        let d: String = runs
            .iter()
            .map(|r| path_d(r, xs, &ys))
            .collect::<Vec<_>>()
            .join(" ");
        let _ = write!(
            s,
            r#"<path class="series {}" data-series="{}" data-points="{n}" d="{d}"><title>{} {}</title></path>"#,
            sr.class, sr.id, p.title, sr.label
        );
    }
    let max = values
        .iter()
        .flatten()
        .flatten()
        .copied()
        .fold(f64::MIN, f64::max);
    if max > hi {
        s += &clipped_marks(p, &values, mid, xs, hi, top);
        let _ = write!(
            s,
            r#"<text class="offscale" x="{:.1}" y="{:.1}" text-anchor="end">▲ off scale: peak {} {}</text>"#,
            W - RIGHT - 4.0,
            top + 12.0,
            short_num(max),
            p.unit
        );
    }
    if p.series.len() > 1 {
        let mut x = W - RIGHT - 4.0;
        let y = top - 6.0;
        let mut parts = String::new();
        for sr in p.series.iter().rev() {
            let _ = write!(
                parts,
                r#"<text class="key {}" x="{x:.1}" y="{y:.1}" text-anchor="end">— {}</text>"#,
                sr.class, sr.label
            );
            x -= 48.0;
        }
        s += &parts;
    }
    s += "</g>";
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_markup_and_controls() {
        assert_eq!(
            esc(r#"<script>alert("x")</script> & 'y'"#),
            "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp; &#39;y&#39;"
        );
        assert_eq!(esc("a\u{0}b\u{1b}c\td"), "a\u{FFFD}b\u{FFFD}c\td");
    }

    #[test]
    fn tick_values_are_round() {
        assert_eq!(ticks(0.0, 100.0, 4), vec![0.0, 25.0, 50.0, 75.0, 100.0]);
        assert_eq!(ticks(0.0, 1234.0, 3), vec![0.0, 500.0, 1000.0]);
        assert_eq!(short_num(12_000.0), "12k");
        assert_eq!(short_num(1_500_000.0), "1.5M");
        assert_eq!(short_num(0.25), "0.25");
        assert_eq!(short_num(2.5), "2.5");
    }

    #[test]
    fn outliers_do_not_flatten_the_axis() {
        let mut v: Vec<f64> = (0..1000).map(|i| 100.0 + (i % 10) as f64).collect();
        v.push(25_000.0);
        let (hi, clipped) = robust_hi(&mut v);
        assert!(clipped && hi < 200.0, "{hi}");
        let mut flat: Vec<f64> = (0..1000).map(|i| 100.0 + (i % 10) as f64).collect();
        assert_eq!(robust_hi(&mut flat), (109.0, false));
    }
}
