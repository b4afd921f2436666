//! The run's story as text: a sparkline of step time with the episodes (or chords) marked under it,
//! for terminal summaries and `summary.md`. `observe` uses it; `closed-loop` can call the same
//! [`StepTimeline`] / [`timeline_lines`] / [`timeline_markdown`] for its own summary.
//!
//! The accumulator is bounded: it keeps at most twice the requested number of columns, merging
//! neighbours as windows stream in, so a week of telemetry costs the same few hundred bytes.

use crate::human::thousands;

/// Block characters from lowest to highest.
pub const SPARK_LEVELS: [char; 8] = ['▁', '▂', '▃', '▄', '▅', '▆', '▇', '█'];

/// One character per value, scaled between the finite minimum and maximum; a non-finite value is a
/// space. A flat series draws at the lowest level.
pub fn sparkline(values: &[f64]) -> String {
    let finite = values.iter().copied().filter(|v| v.is_finite());
    let (lo, hi) = finite.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
        (lo.min(v), hi.max(v))
    });
    values
        .iter()
        .map(|&v| {
            if !v.is_finite() {
                ' '
            } else if hi - lo <= f64::EPSILON * hi.abs().max(1.0) {
                SPARK_LEVELS[0]
            } else {
                let top = (SPARK_LEVELS.len() - 1) as f64;
                let level = ((v - lo) / (hi - lo) * top).round() as usize;
                SPARK_LEVELS[level.min(SPARK_LEVELS.len() - 1)]
            }
        })
        .collect()
}

#[derive(Debug, Clone, Copy, PartialEq)]
struct Column {
    first_step: u64,
    last_step: u64,
    /// Highest value among the merged windows (spikes stay visible), NaN when none had one.
    peak: f64,
    windows: u64,
}

impl Column {
    fn merge(self, o: Column) -> Column {
        Column {
            first_step: self.first_step.min(o.first_step),
            last_step: self.last_step.max(o.last_step),
            peak: max_nan(self.peak, o.peak),
            windows: self.windows + o.windows,
        }
    }
}

fn max_nan(a: f64, b: f64) -> f64 {
    if a.is_nan() {
        b
    } else if b.is_nan() {
        a
    } else {
        a.max(b)
    }
}

/// Per-window step time (or any per-window value), kept in bounded memory for a sparkline.
#[derive(Debug, Clone)]
pub struct StepTimeline {
    width: usize,
    cols: Vec<Column>,
    /// Windows per stored column; doubles each time the store fills up.
    per_col: u64,
    min: f64,
    max: f64,
}

impl StepTimeline {
    /// A timeline drawn `width` characters wide (at least 8).
    pub fn new(width: usize) -> Self {
        StepTimeline {
            width: width.max(8),
            cols: Vec::new(),
            per_col: 1,
            min: f64::INFINITY,
            max: f64::NEG_INFINITY,
        }
    }

    /// Adds one window, in step order. A non-finite value leaves a gap.
    pub fn push(&mut self, first_step: u64, last_step: u64, value: f64) {
        let value = if value.is_finite() { value } else { f64::NAN };
        if value.is_finite() {
            self.min = self.min.min(value);
            self.max = self.max.max(value);
        }
        let col = Column {
            first_step,
            last_step,
            peak: value,
            windows: 1,
        };
        match self.cols.last_mut() {
            Some(last) if last.windows < self.per_col => *last = last.merge(col),
            _ => self.cols.push(col),
        }
        if self.cols.len() >= 2 * self.width {
            self.cols = self
                .cols
                .chunks(2)
                .map(|c| c.iter().copied().reduce(Column::merge).unwrap_or(c[0]))
                .collect();
            self.per_col *= 2;
        }
    }

    pub fn is_empty(&self) -> bool {
        self.cols.is_empty()
    }

    /// Windows pushed so far.
    pub fn windows(&self) -> u64 {
        self.cols.iter().map(|c| c.windows).sum()
    }

    /// The smallest and largest value pushed (not downsampled).
    pub fn range(&self) -> Option<(f64, f64)> {
        (self.min <= self.max).then_some((self.min, self.max))
    }

    /// The columns as drawn: at most `width`, each covering consecutive windows.
    fn drawn(&self) -> Vec<Column> {
        if self.cols.len() <= self.width {
            return self.cols.clone();
        }
        // A stored column goes to the drawn column where its first window falls, so drawn columns
        // cover about equal numbers of windows (the store's last column may be part full).
        let total = self.windows().max(1);
        let mut out: Vec<Column> = Vec::with_capacity(self.width);
        let mut before = 0u64;
        for c in &self.cols {
            let j = (u128::from(before) * self.width as u128 / u128::from(total)) as usize;
            before += c.windows;
            match out.get_mut(j) {
                Some(d) => *d = d.merge(*c),
                None => out.push(*c),
            }
        }
        out
    }

    /// The sparkline, one character per drawn column.
    pub fn sparkline(&self) -> String {
        let peaks: Vec<f64> = self.drawn().iter().map(|c| c.peak).collect();
        sparkline(&peaks)
    }

    /// A line as wide as the sparkline with each mark's letter under the columns it overlaps
    /// (`·` where none does; where several do, the shortest mark wins, so an episode inside a longer
    /// one still shows).
    pub fn marks_line(&self, marks: &[TimelineMark]) -> String {
        self.drawn()
            .iter()
            .map(|c| {
                marks
                    .iter()
                    .filter(|m| m.first_step <= c.last_step && m.last_step >= c.first_step)
                    .min_by_key(|m| m.last_step - m.first_step)
                    .map_or('·', |m| m.letter)
            })
            .collect()
    }
}

/// Something that happened over a step range, shown under the sparkline by its letter.
#[derive(Debug, Clone, PartialEq)]
pub struct TimelineMark {
    pub first_step: u64,
    pub last_step: u64,
    pub letter: char,
    pub label: String,
}

impl TimelineMark {
    /// `s input straggler 1,200–1,900`.
    pub fn legend(&self) -> String {
        format!(
            "{} {} {}–{}",
            self.letter,
            self.label,
            thousands(self.first_step),
            thousands(self.last_step)
        )
    }
}

/// Builds marks from a stream of windows, one label (or none) per window: consecutive windows with
/// the same label become one mark. For `closed-loop`: push each window's primary chord (`None` for
/// NORMAL-HOLD) while running, then hand [`MarkRuns::finish`] to [`timeline_lines`] /
/// [`timeline_markdown`] with the [`StepTimeline`] of the same windows. Keeps at most `cap` marks.
#[derive(Debug, Clone)]
pub struct MarkRuns {
    marks: Vec<TimelineMark>,
    open: Option<TimelineMark>,
    cap: usize,
    dropped: u64,
}

impl MarkRuns {
    pub fn new(cap: usize) -> Self {
        MarkRuns {
            marks: Vec::new(),
            open: None,
            cap,
            dropped: 0,
        }
    }

    pub fn push(&mut self, first_step: u64, last_step: u64, label: Option<&str>) {
        if let (Some(open), Some(l)) = (&mut self.open, label)
            && open.label == l
        {
            open.last_step = open.last_step.max(last_step);
            return;
        }
        self.close();
        self.open = label.map(|l| TimelineMark {
            first_step,
            last_step,
            letter: mark_letter(l),
            label: l.to_string(),
        });
    }

    fn close(&mut self) {
        if let Some(m) = self.open.take() {
            if self.marks.len() < self.cap {
                self.marks.push(m);
            } else {
                self.dropped += 1;
            }
        }
    }

    /// The marks, and how many were dropped past the cap.
    pub fn finish(mut self) -> (Vec<TimelineMark>, u64) {
        self.close();
        (self.marks, self.dropped)
    }
}

/// Marks merged for a legend: at most `max` entries, then `… N more`.
fn legend(marks: &[TimelineMark], max: usize) -> String {
    let mut parts: Vec<String> = marks.iter().take(max).map(TimelineMark::legend).collect();
    if marks.len() > max {
        parts.push(format!("… {} more", marks.len() - max));
    }
    parts.join(" · ")
}

/// The terminal lines: the sparkline with what it shows, then (when there are marks) the marks line
/// with a legend. `indent` goes before each line; `what` names the value (`step time p50`).
pub fn timeline_lines(
    t: &StepTimeline,
    marks: &[TimelineMark],
    indent: &str,
    what: &str,
) -> Vec<String> {
    if t.is_empty() {
        return Vec::new();
    }
    let range = t.range().map_or("no values".to_string(), |(lo, hi)| {
        format!("{lo:.1}–{hi:.1} ms")
    });
    let mut lines = vec![format!(
        "{indent}timeline  {}  {what} per window, {range}",
        t.sparkline()
    )];
    if !marks.is_empty() {
        lines.push(format!(
            "{indent}          {}  {}",
            t.marks_line(marks),
            legend(marks, 4)
        ));
    }
    lines
}

/// The same story for Markdown: a fenced block (the characters line up in monospace) and a list of
/// every mark.
pub fn timeline_markdown(t: &StepTimeline, marks: &[TimelineMark], what: &str) -> String {
    if t.is_empty() {
        return String::new();
    }
    let mut s = String::from("## Timeline\n\n```text\n");
    for l in timeline_lines(t, &[], "", what) {
        s += l.trim_start_matches("timeline  ");
        s.push('\n');
    }
    if !marks.is_empty() {
        s += &t.marks_line(marks);
        s.push('\n');
    }
    s += "```\n\n";
    for m in marks {
        s += &format!(
            "- `{}` {}\n",
            m.letter,
            m.legend()[m.letter.len_utf8() + 1..].trim()
        );
    }
    if !marks.is_empty() {
        s.push('\n');
    }
    s
}

/// A letter for a symptom or chord name: the first ASCII letter of its first word, lower case for
/// symptoms (`input_straggler` → `s` is special-cased to read well), upper case for chords.
pub fn mark_letter(name: &str) -> char {
    let lower = name.to_ascii_lowercase();
    let special = match lower.as_str() {
        "stall" => Some('h'),
        "input_straggler" => Some('s'),
        "step_time_drift" => Some('d'),
        "loss_drift" => Some('l'),
        "comm_bound" => Some('c'),
        "burst" => Some('b'),
        _ => None,
    };
    if let Some(c) = special {
        return c;
    }
    let c = name.chars().find(char::is_ascii_alphabetic).unwrap_or('*');
    if name.chars().any(|c| c.is_ascii_uppercase()) {
        c.to_ascii_uppercase()
    } else {
        c.to_ascii_lowercase()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sparkline_scales_and_gaps() {
        assert_eq!(
            sparkline(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0]),
            "▁▂▃▄▅▆▇█"
        );
        assert_eq!(sparkline(&[5.0, 5.0, 5.0]), "▁▁▁");
        assert_eq!(sparkline(&[0.0, f64::NAN, 10.0]), "▁ █");
        assert_eq!(sparkline(&[]), "");
    }

    #[test]
    fn timeline_is_bounded_and_keeps_the_spike() {
        let mut t = StepTimeline::new(40);
        for w in 0..100_000u64 {
            let v = if w == 61_234 {
                9_000.0
            } else {
                100.0 + (w % 3) as f64
            };
            t.push(w * 10, w * 10 + 9, v);
        }
        assert!(t.cols.len() < 80, "store stays bounded: {}", t.cols.len());
        assert_eq!(t.windows(), 100_000);
        let s = t.sparkline();
        assert_eq!(s.chars().count(), 40, "{s}");
        assert_eq!(s.chars().filter(|&c| c == '█').count(), 1, "{s}");
        let col = s.chars().position(|c| c == '█').unwrap();
        assert!(col.abs_diff(61_234 * 40 / 100_000) <= 1, "{s}");
        assert_eq!(t.range(), Some((100.0, 9_000.0)));
    }

    #[test]
    fn one_window_too_many_still_draws_full_width() {
        let mut t = StepTimeline::new(60);
        for w in 0..61u64 {
            t.push(w, w, w as f64);
        }
        assert_eq!(t.sparkline().chars().count(), 60);
    }

    #[test]
    fn marks_line_up_with_columns() {
        let mut t = StepTimeline::new(10);
        for w in 0..10u64 {
            t.push(
                w * 100,
                w * 100 + 99,
                if (3..5).contains(&w) { 200.0 } else { 100.0 },
            );
        }
        let marks = [TimelineMark {
            first_step: 300,
            last_step: 499,
            letter: 's',
            label: "input straggler".into(),
        }];
        assert_eq!(t.sparkline(), "▁▁▁██▁▁▁▁▁");
        let nested = [
            TimelineMark {
                first_step: 100,
                last_step: 799,
                letter: 's',
                label: "s".into(),
            },
            TimelineMark {
                first_step: 300,
                last_step: 499,
                letter: 'b',
                label: "b".into(),
            },
        ];
        assert_eq!(t.marks_line(&nested), "·ssbbsss··");
        assert_eq!(t.marks_line(&marks), "···ss·····");
        let lines = timeline_lines(&t, &marks, "  ", "step time p50");
        assert_eq!(lines.len(), 2);
        assert!(
            lines[0]
                .starts_with("  timeline  ▁▁▁██▁▁▁▁▁  step time p50 per window, 100.0–200.0 ms")
        );
        assert!(
            lines[1].ends_with("···ss·····  s input straggler 300–499"),
            "{}",
            lines[1]
        );
        let md = timeline_markdown(&t, &marks, "step time p50");
        assert!(md.contains("```text\n▁▁▁██▁▁▁▁▁  step time p50"), "{md}");
        assert!(md.contains("···ss·····\n```"), "{md}");
        assert!(md.contains("- `s` input straggler 300–499"), "{md}");
    }

    #[test]
    fn runs_of_labels_become_marks() {
        let mut r = MarkRuns::new(2);
        for (w, l) in [
            (0, None),
            (1, Some("BURST-ABSORB")),
            (2, Some("BURST-ABSORB")),
            (3, None),
            (4, Some("INPUT-STRAGGLER")),
            (5, Some("DRIFT-RETUNE")),
        ] {
            r.push(w * 10, w * 10 + 9, l);
        }
        let (marks, dropped) = r.finish();
        assert_eq!(dropped, 1);
        assert_eq!(marks[0].legend(), "B BURST-ABSORB 10–29");
        assert_eq!(marks[1].legend(), "I INPUT-STRAGGLER 40–49");
    }

    #[test]
    fn letters() {
        assert_eq!(mark_letter("input_straggler"), 's');
        assert_eq!(mark_letter("BURST-ABSORB"), 'B');
        assert_eq!(mark_letter("DRIFT-RETUNE"), 'D');
        assert_eq!(mark_letter("--"), '*');
    }
}
