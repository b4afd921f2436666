//! The report page: one self-contained HTML file (inline CSS, inline SVG, no script, a
//! Content-Security-Policy that forbids every fetch) that reads in light and dark mode. Long runs stay
//! fast to open: the chart is downsampled ([`super::svg`]), and the decision table collapses runs of
//! identical decisions, shows the first rows, folds the rest into pages and caps what it renders.

use std::fmt::Write;

use super::model::{Band, Decision, Gate, ReportModel};
use super::svg::{self, ChartOptions, colour_slot, esc};
use crate::human::{offset_ms, thousands};

/// Page options.
#[derive(Debug, Clone)]
pub struct PageOptions {
    pub chart: ChartOptions,
    /// Table rows shown before the first fold.
    pub first_rows: usize,
    /// Rows per folded page.
    pub page_rows: usize,
    /// Rows rendered at most; the rest are counted and pointed to in the trace.
    pub max_rows: usize,
    /// Shown in the header (`2026-11-23 10:00 UTC`); empty leaves it out (tests compare pages).
    pub generated: String,
}

impl Default for PageOptions {
    fn default() -> Self {
        PageOptions {
            chart: ChartOptions::default(),
            first_rows: 100,
            page_rows: 500,
            max_rows: 5000,
            generated: String::new(),
        }
    }
}

const CSS: &str = r#"
:root{color-scheme:light dark;--bg:#ffffff;--fg:#1b1f24;--muted:#5c6670;--line:#d5dae0;--card:#f5f7f9;
--p50:#1f5fbf;--p95:#7aa7e6;--max:#9aa3ad;--loss:#8a3ffc;--wait:#b5651d;--gpu:#198038;--ok:#198038;--bad:#c62828;--na:#6b7280;
--c0:#f28e2b;--c1:#9467bd;--c2:#4e79a7;--c3:#59a14f;--c4:#e15759;--c5:#b07aa1;--c6:#76b7b2;--c7:#edc948;--band:.16}
@media (prefers-color-scheme:dark){:root{--bg:#0f1216;--fg:#e6e9ed;--muted:#9aa4ae;--line:#2e353d;--card:#181d23;
--p50:#6ea8fe;--p95:#36527a;--max:#5c6670;--loss:#be95ff;--wait:#f0a35e;--gpu:#42be65;--ok:#42be65;--bad:#ff6b6b;--na:#9aa4ae;--band:.24}}
*{box-sizing:border-box}
body{margin:0;padding:24px 32px;background:var(--bg);color:var(--fg);font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif}
h1{font-size:22px;margin:0 0 4px}h2{font-size:17px;margin:28px 0 8px}
.sub,.muted{color:var(--muted)}code{font-family:ui-monospace,Menlo,Consolas,monospace;font-size:12.5px}
.cards{display:grid;grid-template-columns:repeat(auto-fit,minmax(230px,1fr));gap:12px;margin-top:16px}
.card{background:var(--card);border:1px solid var(--line);border-radius:8px;padding:10px 14px}
.card h3{margin:0 0 4px;font-size:12px;text-transform:uppercase;letter-spacing:.04em;color:var(--muted)}
.card .v{font-size:15px;font-weight:600}.ok{color:var(--ok)}.bad{color:var(--bad)}.na{color:var(--na)}
svg.timeline{display:block;max-width:1400px;font-size:11px;font-family:inherit}
svg text{fill:var(--muted)}svg .panel-title{fill:var(--fg);font-weight:600;font-size:12px}
svg .frame{fill:none;stroke:var(--line)}svg .grid,svg .tick{stroke:var(--line);stroke-width:.6}
svg .series{fill:none;stroke-width:1.4;stroke-linejoin:round;vector-effect:non-scaling-stroke}
.s-p50{stroke:var(--p50)}.s-p95{stroke:var(--p95)}svg .series.s-max{stroke:var(--max);stroke-width:1;stroke-dasharray:2 3}.s-loss{stroke:var(--loss)}.s-wait{stroke:var(--wait)}.s-gpu{stroke:var(--gpu)}
svg .key.s-p50{fill:var(--p50)}svg .key.s-p95{fill:var(--p95)}svg .key.s-max{fill:var(--max)}
svg .band{opacity:var(--band)}svg .lane-band{opacity:.85}svg .lane-text{fill:#111;font-size:10.5px;pointer-events:none}
.c0{fill:var(--c0);background:var(--c0)}.c1{fill:var(--c1);background:var(--c1)}.c2{fill:var(--c2);background:var(--c2)}
.c3{fill:var(--c3);background:var(--c3)}.c4{fill:var(--c4);background:var(--c4)}.c5{fill:var(--c5);background:var(--c5)}
.c6{fill:var(--c6);background:var(--c6)}.c7{fill:var(--c7);background:var(--c7)}
svg .marker.proposal path{fill:var(--p50)}svg .marker.blocked path{stroke:var(--bad);stroke-width:2;fill:none}
svg .marker.applied path,svg .marker.apply-run path{fill:var(--ok)}
svg .marker.effect.helped circle{fill:var(--ok)}svg .marker.effect.hurt circle{fill:var(--bad)}svg .marker.effect.other circle{fill:none;stroke:var(--na);stroke-width:1.5}
svg .applied-line{stroke:var(--ok);stroke-dasharray:3 3;stroke-width:1}
svg .offscale,svg .clip{fill:var(--bad)}svg .nodata{font-style:italic}
.legend{display:flex;flex-wrap:wrap;gap:6px 16px;margin:6px 0 0 72px;color:var(--muted)}
.sw{display:inline-block;width:12px;height:12px;border-radius:2px;vertical-align:-2px;margin-right:5px}
table{border-collapse:collapse;width:100%;max-width:1400px}
th,td{text-align:left;padding:5px 8px;border-bottom:1px solid var(--line);vertical-align:top}
th{font-size:12px;color:var(--muted);font-weight:600}td.num{font-variant-numeric:tabular-nums;white-space:nowrap}
details{margin:8px 0}summary{cursor:pointer;color:var(--muted)}
.notes li{color:var(--muted)}footer{margin-top:32px;color:var(--muted);font-size:12px}
"#;

fn gate_card(title: &str, g: &Gate) -> String {
    let (class, state, detail) = match g {
        Gate::NotRun => (
            "na",
            "not run".to_string(),
            "no report in this directory".to_string(),
        ),
        Gate::Ok { detail } => ("ok", "ok".to_string(), detail.clone()),
        Gate::Blocked { reason, detail } => ("bad", format!("blocked: {reason}"), detail.clone()),
        Gate::Unreadable { error } => ("bad", "unreadable".to_string(), error.clone()),
    };
    format!(
        r#"<div class="card" data-gate="{}"><h3>{}</h3><div class="v {class}" data-state="{class}">{}</div><div class="muted">{}</div></div>"#,
        esc(&title.to_ascii_lowercase()),
        esc(title),
        esc(&state),
        esc(&detail)
    )
}

fn when(ms: Option<i64>, t0: Option<i64>) -> String {
    match (ms, t0) {
        (Some(a), Some(b)) => offset_ms(a - b),
        _ => "–".into(),
    }
}

/// Decisions collapsed: consecutive windows that say the same thing become one row.
struct Row<'a> {
    first: &'a Decision,
    last: &'a Decision,
    windows: u64,
}

fn collapse(ds: &[Decision]) -> Vec<Row<'_>> {
    let mut rows: Vec<Row<'_>> = Vec::new();
    for d in ds {
        if let Some(r) = rows.last_mut()
            && r.first.same_story(d)
            && d.window == r.last.window + 1
        {
            r.last = d;
            r.windows += 1;
            continue;
        }
        rows.push(Row {
            first: d,
            last: d,
            windows: 1,
        });
    }
    rows
}

fn decision_row(r: &Row<'_>, t0: Option<i64>) -> String {
    let d = r.first;
    let windows = if r.windows == 1 {
        format!("{}", d.window)
    } else {
        format!(
            "{}–{} <span class=\"muted\">×{}</span>",
            d.window, r.last.window, r.windows
        )
    };
    let chord = match (&d.chord, d.active_chords.len()) {
        (Some(c), n) if n > 1 => format!(
            "{} <span class=\"muted\">(also {})</span>",
            esc(c),
            esc(&d
                .active_chords
                .iter()
                .filter(|a| *a != c)
                .cloned()
                .collect::<Vec<_>>()
                .join(", "))
        ),
        (Some(c), _) => esc(c),
        (None, _) => "–".into(),
    };
    let changes = |v: &[super::model::Change], verb: &str| {
        v.iter()
            .map(|c| {
                format!(
                    "{verb}<code>{}</code> {} → {}{}",
                    esc(&c.knob),
                    esc(&c.from),
                    esc(&c.to),
                    if c.reason.is_empty() {
                        String::new()
                    } else {
                        format!(" <span class=\"muted\">— {}</span>", esc(&c.reason))
                    }
                )
            })
            .collect::<Vec<_>>()
            .join("<br>")
    };
    let mut what = changes(&d.proposals, "");
    let applied = changes(&d.applied, "<b class=\"ok\">applied</b> ");
    if !applied.is_empty() {
        if !what.is_empty() {
            what += "<br>";
        }
        what += &applied;
    }
    let blocked = d
        .blocked
        .iter()
        .map(|b| format!("<code>{}</code>: {}", esc(&b.knob), esc(&b.reason)))
        .collect::<Vec<_>>()
        .join("<br>");
    format!(
        "<tr><td class=\"num\">{windows}</td><td class=\"num\">{}–{}</td><td class=\"num\">{}</td><td>{chord}</td><td>{}</td><td>{}</td></tr>\n",
        thousands(d.first_step),
        thousands(r.last.last_step),
        when(d.start_ms, t0),
        if what.is_empty() { "–".into() } else { what },
        if blocked.is_empty() {
            "–".into()
        } else {
            blocked
        },
    )
}

const DECISION_HEAD: &str = "<tr><th>window</th><th>steps</th><th>time</th><th>chord</th><th>proposals (knob from → to — reason)</th><th>blocked (knob: reason)</th></tr>\n";

/// A table whose first rows show and whose rest fold into pages, rendering at most `max_rows`.
/// `rows` are the rendered rows (at most `opt.max_rows`), `total` how many there are in all.
fn paged_table(
    id: &str,
    head: &str,
    rows: Vec<String>,
    total: usize,
    opt: &PageOptions,
    rest_hint: &str,
) -> String {
    let mut s = String::new();
    let _ = write!(s, "<table id=\"{id}\" data-rows=\"{total}\">{head}");
    let mut shown = 0usize;
    let mut open_page: Option<usize> = None;
    for (i, row) in rows.into_iter().enumerate().take(opt.max_rows) {
        if i == opt.first_rows
            || (i > opt.first_rows && (i - opt.first_rows).is_multiple_of(opt.page_rows))
        {
            s += if open_page.is_some() {
                "</table></details>\n"
            } else {
                "</table>\n"
            };
            let end = (i + opt.page_rows).min(total).min(opt.max_rows);
            let _ = write!(
                s,
                "<details class=\"page\"><summary>rows {}–{} of {}</summary><table>{head}",
                thousands(i as u64 + 1),
                thousands(end as u64),
                thousands(total as u64)
            );
            open_page = Some(i);
        }
        s += &row;
        shown += 1;
    }
    s += if open_page.is_some() {
        "</table></details>\n"
    } else {
        "</table>\n"
    };
    if shown < total {
        let _ = writeln!(
            s,
            "<p class=\"muted\">{} more rows not rendered; {rest_hint}</p>",
            thousands((total - shown) as u64)
        );
    }
    s
}

fn episode_row(e: &Band, t0: Option<i64>) -> String {
    format!(
        "<tr><td><span class=\"sw c{}\"></span>{}</td><td class=\"num\">{}–{}</td><td class=\"num\">{} → {}</td><td>{}</td><td class=\"num\">{}</td></tr>\n",
        colour_slot(&e.label),
        esc(&e.label),
        thousands(e.first_step),
        thousands(e.last_step),
        when(e.start_ms, t0),
        when(e.end_ms, t0),
        esc(e.confidence.as_deref().unwrap_or("–")),
        e.windows
    )
}

/// Renders the whole page.
pub fn page(m: &ReportModel, opt: &PageOptions) -> String {
    let mut s = String::with_capacity(64 * 1024);
    let t0 = m.windows.iter().find_map(|w| w.start_ms);
    let title = if m.title.is_empty() {
        "ModeKeeper report"
    } else {
        m.title.as_str()
    };
    s += "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\n";
    s += "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; style-src 'unsafe-inline'; img-src data:\">\n";
    s += "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\"><meta name=\"color-scheme\" content=\"light dark\">\n";
    let _ = writeln!(
        s,
        "<title>{}</title>\n<style>{CSS}</style></head>\n<body>",
        esc(title)
    );
    let _ = write!(s, "<header><h1>{}</h1><p class=\"sub\">", esc(title));
    let mut sub = Vec::new();
    if let Some(src) = &m.source {
        sub.push(format!("source <code>{}</code>", esc(src)));
    }
    if let (Some(a), Some(b)) = (m.windows.first(), m.windows.last()) {
        sub.push(format!(
            "steps {}–{} in {} windows",
            thousands(a.first_step),
            thousands(b.last_step),
            thousands(m.windows.len() as u64)
        ));
        if let (Some(s0), Some(e)) = (t0, m.windows.iter().rev().find_map(|w| w.end_ms)) {
            let start = chrono::DateTime::from_timestamp_millis(s0)
                .map(|t| t.format("%Y-%m-%d %H:%M:%S UTC").to_string())
                .unwrap_or_default();
            sub.push(format!("{start}, {}", crate::human::duration_ms(e - s0)));
        }
    }
    if !opt.generated.is_empty() {
        sub.push(format!("generated {}", esc(&opt.generated)));
    }
    s += &sub.join(" · ");
    s += "</p></header>\n<section class=\"cards\">\n";
    let verdict = m.verdict.clone().unwrap_or_else(|| "–".into());
    let _ = writeln!(
        s,
        "<div class=\"card\" data-card=\"verdict\"><h3>Verdict</h3><div class=\"v\">{}</div></div>",
        esc(&verdict)
    );
    if m.decision_windows > 0 {
        let proposals: usize = m.decisions.iter().map(|d| d.proposals.len()).sum();
        let blocked: usize = m.decisions.iter().map(|d| d.blocked.len()).sum();
        let applied = super::model::applied_count(m);
        let _ = writeln!(
            s,
            "<div class=\"card\" data-card=\"decisions\"><h3>Decisions</h3><div class=\"v\">{} proposed · {} blocked · {} applied</div><div class=\"muted\">{} windows · policy {} · passport {}</div></div>",
            thousands(proposals as u64),
            thousands(blocked as u64),
            thousands(applied as u64),
            thousands(m.decision_windows),
            esc(m.policy.as_deref().unwrap_or("–")),
            esc(m.passport.as_deref().unwrap_or("–"))
        );
    }
    s += &gate_card("Verify", &m.outcome.verify);
    s += &gate_card("Apply", &m.outcome.apply);
    s += "</section>\n<section><h2>Timeline</h2>\n";
    s += &svg::timeline(m, opt.chart);
    s += "\n<div class=\"legend\">";
    let mut seen: Vec<(&str, &str)> = Vec::new();
    for b in &m.bands {
        let kind = match b.kind {
            super::model::BandKind::Chord => "chord",
            super::model::BandKind::Symptom => "symptom",
        };
        if !seen.contains(&(b.label.as_str(), kind)) {
            seen.push((b.label.as_str(), kind));
        }
    }
    for (label, kind) in seen.iter().take(40) {
        let _ = write!(
            s,
            "<span data-legend=\"{kind}\"><span class=\"sw c{}\"></span>{}</span>",
            colour_slot(label),
            esc(label)
        );
    }
    if !svg::markers(m).is_empty() {
        s += "<span>▲ proposal</span><span class=\"bad\">✕ blocked</span><span class=\"ok\">◆ applied</span>";
        if !m.effects.is_empty() {
            s += "<span class=\"ok\">● helped</span><span class=\"bad\">● hurt</span><span>○ neutral or inconclusive</span>";
        }
    }
    s += "</div>\n</section>\n";

    if m.decision_windows > 0 {
        let rows = collapse(&m.decisions);
        let _ = writeln!(
            s,
            "<section><h2>Decisions</h2><p class=\"muted\">Windows with a proposal, a block or an applied change ({} of {} windows; consecutive identical decisions share a row).</p>",
            thousands(m.decisions.len() as u64),
            thousands(m.decision_windows)
        );
        if rows.is_empty() {
            s += "<p>No window proposed or blocked a change.</p>\n";
        } else {
            let rendered: Vec<String> = rows
                .iter()
                .take(opt.max_rows)
                .map(|r| decision_row(r, t0))
                .collect();
            s += &paged_table(
                "decisions",
                DECISION_HEAD,
                rendered,
                rows.len(),
                opt,
                "the full list is in decision_trace_latest.jsonl.",
            );
        }
        s += "</section>\n";
    }
    if !m.effects.is_empty() {
        s += "<section><h2>Effect of the changes</h2><p class=\"muted\">Did each change help? (docs/closed-loop.md, the effect check; in a replay of a recorded trace: what the job did after the decision).</p>\n";
        let rows: Vec<String> = m
            .effects
            .iter()
            .take(opt.max_rows)
            .map(|e| {
                format!(
                    "<tr data-verdict=\"{}\"><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>\n",
                    e.verdict,
                    thousands(e.change_step),
                    esc(&e.knobs),
                    e.verdict,
                    esc(&e.reason)
                )
            })
            .collect();
        s += &paged_table(
            "effects",
            "<tr><th>change at step</th><th>knobs</th><th>verdict</th><th>why</th></tr>\n",
            rows,
            m.effects.len(),
            opt,
            "see closed_loop_latest.json.",
        );
        if let Some(r) = &m.roi {
            let hours = |x: Option<f64>| x.map_or("–".to_string(), |v| format!("{v:+.3}"));
            s += "<h3>GPU-hours per GPU</h3><table id=\"roi\"><tr><th>change at step</th><th>verdict</th><th>steps under it</th><th>GPU-hours saved</th><th>interval</th></tr>\n";
            for c in r.changes.iter().take(opt.max_rows) {
                let _ = writeln!(
                    s,
                    "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                    thousands(c.change_step),
                    c.verdict.as_str(),
                    thousands(c.steps),
                    hours(c.gpu_hours_saved),
                    c.gpu_hours_interval
                        .map_or("–".into(), |[l, h]| format!("[{l:+.3}, {h:+.3}]"))
                );
            }
            let [l, h] = r.gpu_hours_interval_total;
            let _ = writeln!(
                s,
                "<tr data-total=\"1\"><th>total</th><td></td><td></td><th>{:+.3}</th><td>[{l:+.3}, {h:+.3}]</td></tr></table><p class=\"muted\">Multiply by the job's GPUs (<code>kubectl modekeeper roi --in DIR --gpus N</code>).</p>",
                r.gpu_hours_saved_total
            );
        }
        s += "</section>\n";
    }
    if !m.episodes.is_empty() {
        s += "<section><h2>Episodes</h2>\n";
        let rows: Vec<String> = m
            .episodes
            .iter()
            .take(opt.max_rows)
            .map(|e| episode_row(e, t0))
            .collect();
        s += &paged_table(
            "episodes",
            "<tr><th>symptom</th><th>steps</th><th>time</th><th>confidence</th><th>windows</th></tr>\n",
            rows,
            m.episodes.len(),
            opt,
            "see observe_latest.json.",
        );
        s += "</section>\n";
    }
    if !m.notes.notes.is_empty() {
        s += "<section class=\"notes\"><h2>Notes</h2><ul>";
        for n in &m.notes.notes {
            let _ = write!(s, "<li>{}</li>", esc(n));
        }
        s += "</ul></section>\n";
    }
    s += "<footer>Read from: ";
    s += &m
        .inputs
        .iter()
        .map(|i| format!("<code>{}</code>", esc(i)))
        .collect::<Vec<_>>()
        .join(", ");
    s += ". Series are downsampled for drawing only (min/max per bucket); tables and decisions use every window.</footer>\n</body></html>\n";
    s
}
