//! Did the change help? For every change the loop accepted (the accepted proposals of one window,
//! judged together: the trace cannot tell apart knobs moved at the same moment), the KPIs of the
//! windows after it takes effect against the windows before it, with a verdict: `helped`,
//! `neutral`, `hurt` or `inconclusive`.
//!
//! Timing: a change accepted at the end of window `w` takes effect from window `w + 1`; the first
//! [`EffectConfig::settle_windows`] windows after it are skipped (restart, warm-up, caches refilling),
//! then up to [`EffectConfig::horizon_windows`] windows are the evidence "after". "Before" is the last
//! `horizon_windows` windows that ran with the previous knob values (after the previous change's
//! settling), up to and including `w`. A new change ends the evidence of the previous one early.
//! Warm-up windows (docs/signals.md) are never evidence.
//!
//! Statistics, per KPI on per-window values: the Hodges–Lehmann shift of log(after) − log(before)
//! (the median of all pairwise differences) and its distribution-free interval from the
//! Mann–Whitney rank distribution (normal approximation). Deterministic: no randomness, sorting
//! with a total order; the same windows give the same bytes. The verdict rests on the median step
//! time (p50); the p95, data-wait share and loss trend ride along as context.
//!
//! Verdict rule ([`decide`]): fewer than [`EffectConfig::min_windows`] windows on either side →
//! `inconclusive`; the interval entirely above 0 and the estimate at least
//! [`EffectConfig::material_pct`] slower → `hurt`; the mirror image → `helped`; the interval inside
//! ±`material_pct` → `neutral`; anything else → `inconclusive`.

use serde::{Deserialize, Serialize};

use crate::passport::serialize_knob_value;
use crate::signals::WindowFeatures;

/// How the effect of a change is measured.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct EffectConfig {
    /// Windows skipped after the change window before any evidence counts.
    pub settle_windows: u64,
    /// Windows needed on each side before any verdict but `inconclusive`.
    pub min_windows: usize,
    /// Windows of evidence on each side at most; the verdict is given once the after side has them.
    pub horizon_windows: usize,
    /// Two-sided confidence of the intervals.
    pub confidence: f64,
    /// Smallest step-time change, in %, that counts as an effect (inside it: `neutral`).
    pub material_pct: f64,
    /// A `hurt` change proposes its rollback only when the interval's lower bound is at least this.
    pub hurt_step_time_pct: f64,
}

impl EffectConfig {
    /// The passport's `effect` settings (docs/passports.md), or the defaults.
    pub fn of(p: &crate::passport::Passport) -> EffectConfig {
        let s = p.effect.unwrap_or_default();
        EffectConfig {
            settle_windows: s.settle_windows,
            min_windows: s.min_windows as usize,
            horizon_windows: s.horizon_windows as usize,
            confidence: s.confidence,
            material_pct: s.material_pct,
            hurt_step_time_pct: s.hurt_step_time_pct,
        }
    }
}

impl Default for EffectConfig {
    fn default() -> Self {
        EffectConfig {
            settle_windows: 1,
            min_windows: 5,
            horizon_windows: 10,
            confidence: 0.95,
            material_pct: 8.0,
            hurt_step_time_pct: 5.0,
        }
    }
}

/// What one window contributes as evidence.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct WindowKpi {
    pub index: u64,
    pub first_step: u64,
    pub last_step: u64,
    pub samples: u64,
    pub step_p50_ms: f64,
    pub step_p95_ms: f64,
    /// Wall-clock time per step (window duration / steps): the inverse of throughput, bursts and
    /// stalls included. Absent without timestamps.
    pub wall_ms_per_step: Option<f64>,
    pub data_wait_share: Option<f64>,
    pub loss_mean: Option<f64>,
}

impl WindowKpi {
    /// The window's KPIs; `None` for a warm-up window or one without a usable step time.
    pub fn of(f: &WindowFeatures) -> Option<WindowKpi> {
        let ok = |x: f64| x.is_finite() && x > 0.0;
        if f.warmup || !ok(f.step_time_p50_ms) || f.window.samples == 0 {
            return None;
        }
        Some(WindowKpi {
            index: f.window.index,
            first_step: f.window.first_step,
            last_step: f.window.last_step,
            samples: f.window.samples,
            step_p50_ms: f.step_time_p50_ms,
            step_p95_ms: if ok(f.step_time_p95_ms) {
                f.step_time_p95_ms
            } else {
                f.step_time_p50_ms
            },
            wall_ms_per_step: match (f.window.start_ms, f.window.end_ms) {
                // The first step's timestamp marks its end: the window spans samples − 1 steps.
                (Some(a), Some(b)) if b > a && f.window.samples > 1 => {
                    Some((b - a) as f64 / (f.window.samples - 1) as f64)
                }
                _ => None,
            },
            data_wait_share: f.data_wait_share.filter(|x| x.is_finite()),
            loss_mean: f.loss_mean.filter(|x| x.is_finite()),
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    Helped,
    Neutral,
    Hurt,
    Inconclusive,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Helped => "helped",
            Verdict::Neutral => "neutral",
            Verdict::Hurt => "hurt",
            Verdict::Inconclusive => "inconclusive",
        }
    }
}

/// The KPI a verdict rests on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kpi {
    WallTimePerStep,
    StepTimeP50,
}

impl std::fmt::Display for Kpi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Kpi::WallTimePerStep => "wall time per step",
            Kpi::StepTimeP50 => "median step time",
        })
    }
}

/// A relative change after / before, in %, with its interval.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Shift {
    /// Hodges–Lehmann estimate, in % (positive: larger after the change).
    pub change_pct: f64,
    pub low_pct: f64,
    pub high_pct: f64,
}

/// One side of the comparison.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Side {
    pub windows: usize,
    pub first_step: Option<u64>,
    pub last_step: Option<u64>,
    /// Steps in the side's windows.
    pub steps: u64,
    pub step_time_p50_ms: Option<f64>,
    pub step_time_p95_ms: Option<f64>,
    pub wall_ms_per_step: Option<f64>,
    pub data_wait_share: Option<f64>,
    /// Theil–Sen slope of the windows' mean loss, per 1000 steps (negative: still learning).
    pub loss_slope_per_1k_steps: Option<f64>,
}

/// A knob moved by the change.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EffectKnob {
    pub knob: String,
    #[serde(serialize_with = "serialize_knob_value")]
    pub from: f64,
    #[serde(serialize_with = "serialize_knob_value")]
    pub to: f64,
}

/// The verdict on one change.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChangeEffect {
    /// The window whose decision made the change (it takes effect from the next one).
    pub change_window: u64,
    pub change_step: u64,
    pub knobs: Vec<EffectKnob>,
    pub verdict: Verdict,
    /// Why, in one sentence.
    pub reason: String,
    pub confidence: f64,
    pub settle_windows: u64,
    pub before: Side,
    pub after: Side,
    /// The KPI the verdict rests on.
    pub kpi: Kpi,
    /// That KPI after vs before (absent without evidence).
    pub step_time: Option<Shift>,
    pub step_time_p50: Option<Shift>,
    pub step_time_p95: Option<Shift>,
    /// The next change came before the horizon: the evidence after was cut short.
    pub interrupted: bool,
    /// For `hurt`: the inverse moves (each knob back to its value before the change), proposed for a
    /// person to review, or — with the passport's `gates.auto_rollback` — the loop's proposal for the
    /// window that judged it. Empty otherwise.
    #[serde(default)]
    pub rollback: Vec<EffectKnob>,
}

/// A change waiting for its evidence.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Pending {
    change_window: u64,
    change_step: u64,
    knobs: Vec<EffectKnob>,
    before: Vec<WindowKpi>,
    after: Vec<WindowKpi>,
}

/// A change decided whose apply has not been confirmed yet (a loop that applies its decisions).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ChangeMark {
    pub change_window: u64,
    pub change_step: u64,
}

/// Follows the changes of a loop window by window; plain data (checkpointed by `closed-loop watch`).
///
/// A loop that only plans judges every change it accepts as if applied at once
/// ([`EffectTracker::note_changes`]). A loop that applies its decisions judges a change only once
/// the cluster took it: the decision is noted ([`EffectTracker::note_decided`]), its apply asked
/// ([`EffectTracker::apply_requested`]), and only a confirmed apply ([`EffectTracker::applied`])
/// starts its evidence; until then the windows still run under the values before it. A blocked or
/// failed apply, or a decision superseded before any apply, gets no verdict.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct EffectTracker {
    /// Windows under the current knob values (after settling), the latest `horizon_windows`.
    current: Vec<WindowKpi>,
    /// Windows still to skip after the last change.
    settle_left: u64,
    pending: Option<Pending>,
    /// The latest decision not yet asked to be applied (absent in a loop that only plans).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    decided: Option<ChangeMark>,
    /// The decision whose apply is in flight.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    applying: Option<ChangeMark>,
    /// The evidence of changes an applied one cut short between windows, judged with the next
    /// window (evidence, not verdicts, is what a state keeps: a verdict is always computed here).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    cut_short: Vec<Pending>,
}

impl EffectTracker {
    /// Feeds window `index` (its KPIs, `None` for a warm-up window) and the knob moves accepted at its
    /// end; returns the verdicts decided with this window.
    pub fn observe(
        &mut self,
        cfg: &EffectConfig,
        index: u64,
        last_step: u64,
        kpi: Option<WindowKpi>,
        changes: &[EffectKnob],
    ) -> Vec<ChangeEffect> {
        let mut out = self.observe_window(cfg, kpi);
        out.extend(self.note_changes(cfg, index, last_step, changes));
        out
    }

    /// The first half of [`EffectTracker::observe`]: window's evidence, before the window's decision
    /// (so a verdict can shape it: the loop's rollback).
    pub fn observe_window(
        &mut self,
        cfg: &EffectConfig,
        kpi: Option<WindowKpi>,
    ) -> Vec<ChangeEffect> {
        let mut out = Vec::new();
        if self.settle_left > 0 {
            self.settle_left -= 1;
        } else if let Some(k) = kpi {
            self.current.push(k);
            if self.current.len() > cfg.horizon_windows.max(1) {
                self.current.remove(0);
            }
            if let Some(p) = &mut self.pending {
                p.after.push(k);
                if p.after.len() >= cfg.horizon_windows.max(1) {
                    let p = self.pending.take().expect("pending");
                    out.push(decide(cfg, p.into_parts(false)));
                }
            }
        }
        out
    }

    /// The second half of [`EffectTracker::observe`]: the moves accepted at the end of window
    /// `index`; returns the verdict on the change they interrupt, if any.
    pub fn note_changes(
        &mut self,
        cfg: &EffectConfig,
        index: u64,
        last_step: u64,
        changes: &[EffectKnob],
    ) -> Vec<ChangeEffect> {
        let mut out = Vec::new();
        if !changes.is_empty() {
            if let Some(p) = self.pending.take() {
                out.push(decide(cfg, p.into_parts(true)));
            }
            self.pending = Some(Pending {
                change_window: index,
                change_step: last_step,
                knobs: changes.to_vec(),
                before: std::mem::take(&mut self.current),
                after: Vec::new(),
            });
            self.settle_left = cfg.settle_windows;
        }
        out
    }

    /// The end of the telemetry: the change still waiting is judged on what there is.
    pub fn finish(&mut self, cfg: &EffectConfig) -> Option<ChangeEffect> {
        self.pending
            .take()
            .map(|p| decide(cfg, p.into_parts(false)))
    }

    /// A loop that applies: the moves accepted at the end of window `index` are a decision, not
    /// yet a change of the cluster (a newer decision replaces it: only the latest is applied).
    pub fn note_decided(&mut self, index: u64, last_step: u64, moved: bool) {
        if moved {
            self.decided = Some(ChangeMark {
                change_window: index,
                change_step: last_step,
            });
        }
    }

    /// The apply of the decision at `window` was asked for.
    pub fn apply_requested(&mut self, window: u64) {
        self.applying = self.decided.take_if(|d| d.change_window == window);
    }

    /// The apply asked for was not made after all (the cluster was not touched): its decision
    /// waits again, unless a newer one came meanwhile.
    pub fn apply_withdrawn(&mut self) {
        if let Some(a) = self.applying.take() {
            self.decided.get_or_insert(a);
        }
    }

    /// The apply in flight did not change the cluster, or may not have (blocked, failed, no
    /// changes, unknown): its decision is never judged.
    pub fn not_applied(&mut self) {
        self.applying = None;
    }

    /// The apply of the decision at `window` changed the cluster by `knobs`: its evidence starts
    /// now (the windows since the decision ran under the values before it). A change it cuts short
    /// is judged with the next window ([`EffectTracker::take_judged`]).
    pub fn applied(&mut self, cfg: &EffectConfig, window: u64, knobs: &[EffectKnob]) {
        let Some(m) = self.applying.take() else {
            return;
        };
        if m.change_window != window || knobs.is_empty() {
            return;
        }
        if let Some(p) = self.pending.take() {
            self.cut_short.push(p);
        }
        self.pending = Some(Pending {
            change_window: m.change_window,
            change_step: m.change_step,
            knobs: knobs.to_vec(),
            before: std::mem::take(&mut self.current),
            after: Vec::new(),
        });
        self.settle_left = cfg.settle_windows;
    }

    /// The verdicts on the changes applied ones cut short since the last window.
    pub fn take_judged(&mut self, cfg: &EffectConfig) -> Vec<ChangeEffect> {
        std::mem::take(&mut self.cut_short)
            .into_iter()
            .map(|p| decide(cfg, p.into_parts(true)))
            .collect()
    }
}

/// The evidence of one change.
#[derive(Debug, Clone, PartialEq)]
pub struct Evidence {
    pub change_window: u64,
    pub change_step: u64,
    pub knobs: Vec<EffectKnob>,
    pub before: Vec<WindowKpi>,
    pub after: Vec<WindowKpi>,
    pub interrupted: bool,
}

impl Pending {
    fn into_parts(self, interrupted: bool) -> Evidence {
        Evidence {
            change_window: self.change_window,
            change_step: self.change_step,
            knobs: self.knobs,
            before: self.before,
            after: self.after,
            interrupted,
        }
    }
}

/// The verdict on one change from its evidence (see the module's rule).
pub fn decide(cfg: &EffectConfig, e: Evidence) -> ChangeEffect {
    let before = side(&e.before);
    let after = side(&e.after);
    let p50 = |w: &[WindowKpi]| w.iter().map(|k| k.step_p50_ms).collect::<Vec<_>>();
    let p95 = |w: &[WindowKpi]| w.iter().map(|k| k.step_p95_ms).collect::<Vec<_>>();
    let wall = |w: &[WindowKpi]| {
        w.iter()
            .filter_map(|k| k.wall_ms_per_step)
            .collect::<Vec<_>>()
    };
    let enough =
        e.before.len() >= cfg.min_windows.max(2) && e.after.len() >= cfg.min_windows.max(2);
    // Wall time per step is what a job pays for (bursts and stalls included); the median step
    // time stands in when a window lacks timestamps.
    let with_wall = e
        .before
        .iter()
        .chain(&e.after)
        .all(|k| k.wall_ms_per_step.is_some());
    let kpi = if with_wall {
        Kpi::WallTimePerStep
    } else {
        Kpi::StepTimeP50
    };
    let primary = |w: &[WindowKpi]| if with_wall { wall(w) } else { p50(w) };
    let step_time = enough
        .then(|| log_shift(&primary(&e.before), &primary(&e.after), cfg.confidence))
        .flatten();
    let step_time_p50 = enough
        .then(|| log_shift(&p50(&e.before), &p50(&e.after), cfg.confidence))
        .flatten();
    let step_time_p95 = enough
        .then(|| log_shift(&p95(&e.before), &p95(&e.after), cfg.confidence))
        .flatten();
    let m = cfg.material_pct;
    let (verdict, reason) = match step_time {
        None => (
            Verdict::Inconclusive,
            format!(
                "too little evidence: {} window(s) before and {} after, {} needed on each side",
                e.before.len(),
                e.after.len(),
                cfg.min_windows.max(2)
            ),
        ),
        Some(s) if s.low_pct > 0.0 && s.change_pct >= m => (
            Verdict::Hurt,
            format!(
                "{kpi} {:+.1} % [{:+.1}, {:+.1}]",
                s.change_pct, s.low_pct, s.high_pct
            ),
        ),
        Some(s) if s.high_pct < 0.0 && s.change_pct <= -m => (
            Verdict::Helped,
            format!(
                "{kpi} {:+.1} % [{:+.1}, {:+.1}]",
                s.change_pct, s.low_pct, s.high_pct
            ),
        ),
        Some(s) if s.low_pct >= -m && s.high_pct <= m => (
            Verdict::Neutral,
            format!(
                "{kpi} {:+.1} % [{:+.1}, {:+.1}], within ±{m} %",
                s.change_pct, s.low_pct, s.high_pct
            ),
        ),
        Some(s) => (
            Verdict::Inconclusive,
            format!(
                "{kpi} {:+.1} % [{:+.1}, {:+.1}]: the interval is too wide to tell",
                s.change_pct, s.low_pct, s.high_pct
            ),
        ),
    };
    let beyond = step_time.is_some_and(|s| s.low_pct >= cfg.hurt_step_time_pct);
    let rollback = if verdict == Verdict::Hurt && beyond {
        e.knobs
            .iter()
            .map(|k| EffectKnob {
                knob: k.knob.clone(),
                from: k.to,
                to: k.from,
            })
            .collect()
    } else {
        Vec::new()
    };
    ChangeEffect {
        rollback,
        change_window: e.change_window,
        change_step: e.change_step,
        knobs: e.knobs,
        verdict,
        reason,
        confidence: cfg.confidence,
        settle_windows: cfg.settle_windows,
        before,
        after,
        kpi,
        step_time,
        step_time_p50,
        step_time_p95,
        interrupted: e.interrupted,
    }
}

fn side(w: &[WindowKpi]) -> Side {
    let col = |f: fn(&WindowKpi) -> Option<f64>| -> Vec<f64> { w.iter().filter_map(f).collect() };
    let loss: Vec<(f64, f64)> = w
        .iter()
        .filter_map(|k| k.loss_mean.map(|l| (k.last_step as f64, l)))
        .collect();
    Side {
        windows: w.len(),
        first_step: w.first().map(|k| k.first_step),
        last_step: w.last().map(|k| k.last_step),
        steps: w.iter().map(|k| k.samples).sum(),
        step_time_p50_ms: median(&col(|k| Some(k.step_p50_ms))).map(round4),
        step_time_p95_ms: median(&col(|k| Some(k.step_p95_ms))).map(round4),
        wall_ms_per_step: median(&col(|k| k.wall_ms_per_step)).map(round4),
        data_wait_share: median(&col(|k| k.data_wait_share)).map(round4),
        loss_slope_per_1k_steps: theil_sen(&loss).map(|s| round4(s * 1000.0)),
    }
}

fn round4(x: f64) -> f64 {
    (x * 1e4).round() / 1e4
}

/// The median of finite values (`None` when there are none).
pub fn median(xs: &[f64]) -> Option<f64> {
    let mut v: Vec<f64> = xs.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    Some(if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    })
}

/// Theil–Sen slope: the median of the pairwise slopes.
fn theil_sen(pts: &[(f64, f64)]) -> Option<f64> {
    let mut slopes = Vec::new();
    for (i, a) in pts.iter().enumerate() {
        for b in &pts[i + 1..] {
            if b.0 != a.0 {
                slopes.push((b.1 - a.1) / (b.0 - a.0));
            }
        }
    }
    median(&slopes)
}

/// The Hodges–Lehmann shift of log(after) − log(before), as a % change with its Mann–Whitney
/// interval; `None` without two positive values on each side.
pub fn log_shift(before: &[f64], after: &[f64], confidence: f64) -> Option<Shift> {
    let lg = |xs: &[f64]| -> Vec<f64> {
        xs.iter()
            .filter(|x| x.is_finite() && **x > 0.0)
            .map(|x| x.ln())
            .collect()
    };
    let (b, a) = (lg(before), lg(after));
    let (n, m) = (b.len(), a.len());
    if n < 2 || m < 2 {
        return None;
    }
    let mut d: Vec<f64> = Vec::with_capacity(n * m);
    for y in &a {
        for x in &b {
            d.push(y - x);
        }
    }
    d.sort_by(f64::total_cmp);
    let nm = (n * m) as f64;
    let est = median(&d)?;
    let z = normal_quantile(0.5 + confidence.clamp(0.5, 0.9999) / 2.0);
    // Neighbouring windows are not independent (a slow hour is slow throughout): the interval is
    // widened by the lag-1 autocorrelation seen within each side, as for an AR(1) series.
    let r = (lag1(&b) + lag1(&a)) / 2.0;
    let inflate = ((1.0 + r) / (1.0 - r)).sqrt();
    let sd = (nm * (n + m + 1) as f64 / 12.0).sqrt() * inflate;
    // The interval runs from the (k+1)-th to the (nm−k)-th smallest difference.
    let k = (nm / 2.0 - z * sd).floor().max(0.0) as usize;
    let k = k.min((n * m - 1) / 2);
    let pct = |x: f64| round4((x.exp() - 1.0) * 100.0);
    Some(Shift {
        change_pct: pct(est),
        low_pct: pct(d[k]),
        high_pct: pct(d[n * m - 1 - k]),
    })
}

/// The lag-1 autocorrelation of a series, clamped to [0, 0.8] (short series: a rough guard, not an
/// estimate to publish).
fn lag1(x: &[f64]) -> f64 {
    if x.len() < 3 {
        return 0.0;
    }
    let mean = x.iter().sum::<f64>() / x.len() as f64;
    let var: f64 = x.iter().map(|v| (v - mean).powi(2)).sum();
    if var <= 0.0 {
        return 0.0;
    }
    let cov: f64 = x.windows(2).map(|w| (w[0] - mean) * (w[1] - mean)).sum();
    (cov / var).clamp(0.0, 0.8)
}

/// The standard normal quantile (Acklam's rational approximation, relative error < 1.2e-9).
fn normal_quantile(p: f64) -> f64 {
    const A: [f64; 6] = [
        -3.969683028665376e1,
        2.209460984245205e2,
        -2.759285104469687e2,
        1.383_577_518_672_69e2,
        -3.066479806614716e1,
        2.506628277459239,
    ];
    const B: [f64; 5] = [
        -5.447609879822406e1,
        1.615858368580409e2,
        -1.556989798598866e2,
        6.680131188771972e1,
        -1.328068155288572e1,
    ];
    const C: [f64; 6] = [
        -7.784894002430293e-3,
        -3.223964580411365e-1,
        -2.400758277161838,
        -2.549732539343734,
        4.374664141464968,
        2.938163982698783,
    ];
    const D: [f64; 4] = [
        7.784695709041462e-3,
        3.224671290700398e-1,
        2.445134137142996,
        3.754408661907416,
    ];
    let p = p.clamp(1e-12, 1.0 - 1e-12);
    let tail = |q: f64| {
        (((((C[0] * q + C[1]) * q + C[2]) * q + C[3]) * q + C[4]) * q + C[5])
            / ((((D[0] * q + D[1]) * q + D[2]) * q + D[3]) * q + 1.0)
    };
    if p < 0.02425 {
        tail((-2.0 * p.ln()).sqrt())
    } else if p > 1.0 - 0.02425 {
        -tail((-2.0 * (1.0 - p).ln()).sqrt())
    } else {
        let q = p - 0.5;
        let r = q * q;
        (((((A[0] * r + A[1]) * r + A[2]) * r + A[3]) * r + A[4]) * r + A[5]) * q
            / (((((B[0] * r + B[1]) * r + B[2]) * r + B[3]) * r + B[4]) * r + 1.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kpi(index: u64, p50: f64) -> WindowKpi {
        WindowKpi {
            index,
            first_step: index * 50,
            last_step: index * 50 + 49,
            samples: 50,
            step_p50_ms: p50,
            step_p95_ms: p50 * 1.2,
            wall_ms_per_step: Some(p50),
            data_wait_share: Some(0.1),
            loss_mean: Some(2.0 - index as f64 * 0.001),
        }
    }

    fn knob() -> Vec<EffectKnob> {
        vec![EffectKnob {
            knob: "concurrency".into(),
            from: 4.0,
            to: 5.0,
        }]
    }

    /// A tiny deterministic jitter (±2 %) so the samples are not ties.
    fn jitter(i: u64) -> f64 {
        1.0 + (((i * 7919) % 41) as f64 - 20.0) / 1000.0
    }

    /// Feeds `before` windows at `b` ms, the change, then `after` windows at `a` ms.
    fn run(b: f64, a: f64, n_before: u64, n_after: u64) -> Vec<ChangeEffect> {
        let cfg = EffectConfig::default();
        let mut t = EffectTracker::default();
        let mut out = Vec::new();
        let change_at = n_before - 1;
        for i in 0..n_before + 1 + n_after {
            let ms = if i <= change_at { b } else { a } * jitter(i);
            let ch = if i == change_at { knob() } else { vec![] };
            out.extend(t.observe(&cfg, i, i * 50 + 49, Some(kpi(i, ms)), &ch));
        }
        out.extend(t.finish(&cfg));
        out
    }

    #[test]
    fn normal_quantiles() {
        assert!((normal_quantile(0.975) - 1.959964).abs() < 1e-5);
        assert!((normal_quantile(0.5)).abs() < 1e-9);
        let q = normal_quantile(0.005);
        assert!((q + 2.575829).abs() < 1e-5, "{q}");
    }

    #[test]
    fn faster_after_is_helped_slower_is_hurt_same_is_neutral() {
        let e = run(100.0, 80.0, 10, 10);
        assert_eq!(e.len(), 1);
        assert_eq!(e[0].verdict, Verdict::Helped, "{e:?}");
        let s = e[0].step_time.unwrap();
        assert!((s.change_pct + 20.0).abs() < 2.0 && s.low_pct < s.change_pct && s.high_pct < 0.0);
        assert_eq!(e[0].after.windows, 10);
        assert_eq!(e[0].before.windows, 10);
        assert!(!e[0].interrupted);

        let hurt = &run(100.0, 115.0, 10, 10)[0];
        assert_eq!(hurt.verdict, Verdict::Hurt);
        assert_eq!(
            hurt.rollback,
            [EffectKnob {
                knob: "concurrency".into(),
                from: 5.0,
                to: 4.0
            }],
            "a hurt change proposes its inverse"
        );
        assert!(
            e[0].rollback.is_empty(),
            "only a hurt change is rolled back"
        );
        // Hurt, but not beyond the passport's threshold: no rollback.
        let strict = EffectConfig {
            hurt_step_time_pct: 50.0,
            ..EffectConfig::default()
        };
        let mut t = EffectTracker::default();
        let mut out = Vec::new();
        for i in 0..21u64 {
            let ms = if i <= 9 { 100.0 } else { 115.0 } * jitter(i);
            let ch = if i == 9 { knob() } else { vec![] };
            out.extend(t.observe(&strict, i, i * 50 + 49, Some(kpi(i, ms)), &ch));
        }
        assert_eq!(out[0].verdict, Verdict::Hurt);
        assert!(out[0].rollback.is_empty());
        // Real but below the material change: not worth a verdict either way.
        assert_ne!(run(100.0, 105.0, 10, 10)[0].verdict, Verdict::Hurt);
        assert_eq!(run(100.0, 100.0, 10, 10)[0].verdict, Verdict::Neutral);
    }

    #[test]
    fn the_settling_window_is_not_evidence() {
        // The window right after the change is slow (restart); it must not count.
        let cfg = EffectConfig::default();
        let mut t = EffectTracker::default();
        let mut out = Vec::new();
        for i in 0..21u64 {
            let ms = if i == 10 { 1000.0 } else { 100.0 * jitter(i) };
            let ch = if i == 9 { knob() } else { vec![] };
            out.extend(t.observe(&cfg, i, i * 50 + 49, Some(kpi(i, ms)), &ch));
        }
        assert_eq!(out.len(), 1, "decided at the horizon, without finish");
        assert_eq!(out[0].after.first_step, Some(11 * 50));
        assert_eq!(out[0].verdict, Verdict::Neutral);
    }

    #[test]
    fn too_little_evidence_gives_no_verdict() {
        for (nb, na) in [(3, 10), (10, 3), (1, 1)] {
            let e = run(100.0, 50.0, nb, na);
            assert_eq!(e[0].verdict, Verdict::Inconclusive, "{nb}/{na}");
            assert!(
                e[0].reason.starts_with("too little evidence"),
                "{}",
                e[0].reason
            );
            assert!(e[0].step_time.is_none());
        }
    }

    #[test]
    fn a_new_change_cuts_the_evidence_short() {
        let cfg = EffectConfig::default();
        let mut t = EffectTracker::default();
        let mut out = Vec::new();
        for i in 0..30u64 {
            let ch = if i == 9 || i == 16 { knob() } else { vec![] };
            out.extend(t.observe(&cfg, i, i * 50 + 49, Some(kpi(i, 100.0 * jitter(i))), &ch));
        }
        assert_eq!(out.len(), 2);
        assert!(out[0].interrupted);
        assert_eq!(out[0].after.windows, 6, "windows 11..=16");
        assert_eq!(out[0].verdict, Verdict::Neutral);
        assert_eq!(out[1].change_window, 16);
        assert_eq!(
            out[1].before.windows, 6,
            "the windows under the first change's values"
        );
    }

    #[test]
    fn noisy_small_samples_are_inconclusive_not_neutral() {
        let cfg = EffectConfig::default();
        let wild = [100.0, 160.0, 70.0, 140.0, 90.0];
        let e = decide(
            &cfg,
            Evidence {
                change_window: 4,
                change_step: 249,
                knobs: knob(),
                before: wild
                    .iter()
                    .enumerate()
                    .map(|(i, x)| kpi(i as u64, *x))
                    .collect(),
                after: wild
                    .iter()
                    .enumerate()
                    .map(|(i, x)| kpi(i as u64 + 6, x * 1.05))
                    .collect(),
                interrupted: false,
            },
        );
        assert_eq!(e.verdict, Verdict::Inconclusive, "{e:?}");
    }

    #[test]
    fn deterministic_bytes() {
        let a = serde_json::to_string(&run(100.0, 85.0, 12, 10)).unwrap();
        let b = serde_json::to_string(&run(100.0, 85.0, 12, 10)).unwrap();
        assert_eq!(a, b);
        assert!(a.contains("\"verdict\":\"helped\""), "{a}");
    }

    /// A loop that applies: a decision is judged from its apply on, and only when it was applied.
    #[test]
    fn a_decision_is_judged_from_its_apply_and_only_if_applied() {
        let cfg = EffectConfig::default();
        // Windows 0..=9 at 100 ms, the decision at the end of window 9; windows 10..=12 still run
        // under the old values (the apply comes after window 12); from window 13 on, 80 ms.
        let ms = |i: u64| if i <= 12 { 100.0 } else { 80.0 } * jitter(i);
        let run = |applied: bool| {
            let mut t = EffectTracker::default();
            let mut out = Vec::new();
            for i in 0..40u64 {
                out.extend(t.observe_window(&cfg, Some(kpi(i, ms(i)))));
                out.extend(t.take_judged(&cfg));
                t.note_decided(i, i * 50 + 49, i == 9);
                if i == 12 {
                    t.apply_requested(9);
                    if applied {
                        t.applied(&cfg, 9, &knob());
                    } else {
                        t.not_applied();
                    }
                }
            }
            out.extend(t.finish(&cfg));
            out
        };
        let e = run(true);
        assert_eq!(e.len(), 1, "{e:?}");
        assert_eq!(e[0].change_window, 9);
        assert_eq!(e[0].verdict, Verdict::Helped, "{e:?}");
        assert_eq!(
            e[0].before.last_step,
            Some(12 * 50 + 49),
            "before the apply"
        );
        assert_eq!(
            e[0].after.first_step,
            Some(14 * 50),
            "settled after the apply"
        );
        assert!(
            run(false).is_empty(),
            "a change never applied is never judged"
        );

        // A decision superseded before any apply is never judged; the one applied is, and it cuts
        // the change before it short (told with the next window).
        let mut t = EffectTracker::default();
        let mut out = Vec::new();
        for i in 0..15u64 {
            out.extend(t.observe_window(&cfg, Some(kpi(i, 100.0 * jitter(i)))));
            out.extend(t.take_judged(&cfg));
            t.note_decided(i, i * 50 + 49, [2, 9, 10].contains(&i));
            if i == 2 || i == 10 {
                t.apply_requested(i);
                t.applied(&cfg, i, &knob());
            }
        }
        assert_eq!(out.len(), 1, "{out:?}");
        assert_eq!(out[0].change_window, 2);
        assert!(out[0].interrupted);
        assert_eq!(t.pending.as_ref().map(|p| p.change_window), Some(10));
        // An apply asked for a decision other than the latest, or withdrawn, judges nothing.
        t.note_decided(20, 1049, true);
        t.apply_requested(19);
        t.applied(&cfg, 19, &knob());
        assert_eq!(t.pending.as_ref().map(|p| p.change_window), Some(10));
        t.apply_requested(20);
        t.apply_withdrawn();
        assert_eq!(t.decided.map(|d| d.change_window), Some(20));
    }

    #[test]
    fn side_kpis() {
        let w: Vec<WindowKpi> = (0..5).map(|i| kpi(i, 100.0 + i as f64)).collect();
        let s = side(&w);
        assert_eq!(s.step_time_p50_ms, Some(102.0));
        assert_eq!(s.steps, 250);
        assert_eq!(s.data_wait_share, Some(0.1));
        assert_eq!(s.loss_slope_per_1k_steps, Some(-0.02));
    }
}
