//! The chord timeline of a run: consecutive windows with the same primary chord form one segment
//! (`steps 1,201–1,400 INPUT-STRAGGLER, 4 windows`), plus per-chord window counts. Bounded: after
//! [`MAX_SEGMENTS`] segments only the counts grow.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Segments kept in a report; a flapping chord over a huge input cannot grow it without bound.
pub const MAX_SEGMENTS: usize = 1000;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChordSegment {
    pub chord: String,
    pub first_step: u64,
    pub last_step: u64,
    pub start_ms: Option<i64>,
    pub end_ms: Option<i64>,
    /// Index of the segment's first window.
    pub first_window: u64,
    pub windows: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ChordTimeline {
    /// Segments by primary chord, in order.
    pub segments: Vec<ChordSegment>,
    /// Segments left out after [`MAX_SEGMENTS`].
    pub segments_truncated: u64,
    /// Windows whose primary chord was each chord.
    pub primary_windows: BTreeMap<String, u64>,
    /// Windows in which each chord fired at all (primary or not; NORMAL-HOLD never "fires").
    pub active_windows: BTreeMap<String, u64>,
}

/// One window, as the timeline needs it.
#[derive(Debug, Clone, Copy)]
pub struct WindowMark {
    pub index: u64,
    pub first_step: u64,
    pub last_step: u64,
    pub start_ms: Option<i64>,
    pub end_ms: Option<i64>,
}

impl ChordTimeline {
    pub fn push(&mut self, w: WindowMark, chord: &str, active: &[String]) {
        *self.primary_windows.entry(chord.to_string()).or_default() += 1;
        for c in active {
            *self.active_windows.entry(c.clone()).or_default() += 1;
        }
        if self.segments_truncated == 0
            && let Some(last) = self.segments.last_mut()
            && last.chord == chord
        {
            last.last_step = w.last_step;
            last.end_ms = w.end_ms.or(last.end_ms);
            last.windows += 1;
            return;
        }
        if self.segments.len() >= MAX_SEGMENTS {
            self.segments_truncated += 1;
            return;
        }
        self.segments.push(ChordSegment {
            chord: chord.to_string(),
            first_step: w.first_step,
            last_step: w.last_step,
            start_ms: w.start_ms,
            end_ms: w.end_ms,
            first_window: w.index,
            windows: 1,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mark(i: u64) -> WindowMark {
        WindowMark {
            index: i,
            first_step: i * 50 + 1,
            last_step: i * 50 + 50,
            start_ms: Some(i as i64 * 1000),
            end_ms: Some(i as i64 * 1000 + 999),
        }
    }

    #[test]
    fn consecutive_windows_merge_into_segments() {
        let mut t = ChordTimeline::default();
        let s = |c: &str| vec![c.to_string()];
        t.push(mark(0), "NORMAL-HOLD", &[]);
        t.push(mark(1), "NORMAL-HOLD", &[]);
        t.push(
            mark(2),
            "INPUT-STRAGGLER",
            &["INPUT-STRAGGLER".into(), "BURST-ABSORB".into()],
        );
        t.push(mark(3), "INPUT-STRAGGLER", &s("INPUT-STRAGGLER"));
        t.push(mark(4), "RECOVER-RELOCK", &s("RECOVER-RELOCK"));
        let segs: Vec<(&str, u64, u64, u64)> = t
            .segments
            .iter()
            .map(|g| (g.chord.as_str(), g.first_step, g.last_step, g.windows))
            .collect();
        assert_eq!(
            segs,
            [
                ("NORMAL-HOLD", 1, 100, 2),
                ("INPUT-STRAGGLER", 101, 200, 2),
                ("RECOVER-RELOCK", 201, 250, 1)
            ]
        );
        assert_eq!(t.segments[1].first_window, 2);
        assert_eq!(t.segments[1].end_ms, Some(3999));
        assert_eq!(t.primary_windows["NORMAL-HOLD"], 2);
        assert_eq!(t.active_windows["BURST-ABSORB"], 1);
        assert_eq!(t.active_windows["INPUT-STRAGGLER"], 2);
        assert!(!t.active_windows.contains_key("NORMAL-HOLD"));
    }

    #[test]
    fn segments_are_bounded() {
        let mut t = ChordTimeline::default();
        for i in 0..(MAX_SEGMENTS as u64 + 10) {
            let c = if i % 2 == 0 { "A" } else { "B" };
            t.push(mark(i), c, &[]);
        }
        assert_eq!(t.segments.len(), MAX_SEGMENTS);
        assert_eq!(t.segments_truncated, 10);
        assert_eq!(
            t.primary_windows.values().sum::<u64>(),
            MAX_SEGMENTS as u64 + 10
        );
    }
}
