//! Puts records back in step order within a bounded window, drops duplicates, and guards the clock.
//!
//! Order is by `step` (what training progress is measured in), then by source (rank, node). A record
//! without a step is placed after the highest step seen so far. Memory is bounded by `capacity`: the
//! reorder buffer and the list of recently emitted keys each hold at most that many records.

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

use super::record::Sample;
use super::stats::IngestStats;

/// Identity of a record for duplicate detection and ordering: the step and the emitting process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
struct RecordKey {
    step: u64,
    rank: u32,
    node: u64,
}

/// FNV-1a of a node name: a stable identity whatever thread or interner produced the string.
pub(crate) fn node_hash(n: &str) -> u64 {
    n.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ b as u64).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// Records are held in a deque sorted by key: in-order arrival (the common case) appends at the back,
/// a late record is inserted by binary search. Emitted keys are kept, also sorted, for duplicate checks,
/// so no hashing is needed at all.
#[derive(Serialize, Deserialize)]
pub struct Orderer {
    capacity: usize,
    /// Live sources: a record is also released once one `release_lag` steps ahead has arrived, so
    /// a window is evaluated seconds after it completes, not a full reorder buffer later.
    release_lag: Option<u64>,
    skew_tolerance_ms: i64,
    pending: VecDeque<(RecordKey, Sample)>,
    emitted_keys: VecDeque<RecordKey>,
    max_step_seen: Option<u64>,
    watermark: Option<u64>,
    last_raw_ts: Option<i64>,
    last_ts: Option<i64>,
}

impl Orderer {
    pub fn new(capacity: usize, skew_tolerance_ms: i64, release_lag: Option<u64>) -> Self {
        Orderer {
            capacity: capacity.max(1),
            release_lag,
            skew_tolerance_ms,
            pending: VecDeque::new(),
            emitted_keys: VecDeque::new(),
            max_step_seen: None,
            watermark: None,
            last_raw_ts: None,
            last_ts: None,
        }
    }

    fn is_duplicate(&self, key: &RecordKey) -> bool {
        // In-order arrival, the common case: newer than everything held or emitted.
        let newest = self
            .pending
            .back()
            .map(|(k, _)| k)
            .or(self.emitted_keys.back());
        if newest.is_none_or(|k| k < key) {
            return false;
        }
        self.emitted_keys.binary_search(key).is_ok()
            || self.pending.binary_search_by(|(k, _)| k.cmp(key)).is_ok()
    }

    pub fn push(&mut self, mut s: Sample, stats: &mut IngestStats, out: &mut dyn FnMut(&Sample)) {
        let real_step = s.step.is_some();
        let step = s.step.unwrap_or_else(|| {
            stats.records_without_step = stats.records_without_step.saturating_add(1);
            // Saturating: a record may carry the largest step there is.
            self.max_step_seen.map_or(1, |m| m.saturating_add(1))
        });
        s.step = Some(step);
        let key = RecordKey {
            step,
            rank: s.rank.unwrap_or(u32::MAX),
            node: s.node.as_deref().map_or(0, node_hash),
        };
        if real_step && self.is_duplicate(&key) {
            stats.duplicates = stats.duplicates.saturating_add(1);
            return;
        }
        if self.watermark.is_some_and(|w| step < w) {
            stats.late_dropped = stats.late_dropped.saturating_add(1);
            return;
        }
        if self.max_step_seen.is_some_and(|m| step < m) {
            stats.reordered = stats.reordered.saturating_add(1);
        }
        self.max_step_seen = Some(self.max_step_seen.map_or(step, |m| m.max(step)));
        if self.pending.back().is_none_or(|(k, _)| *k <= key) {
            self.pending.push_back((key, s));
        } else {
            // Stable among equal keys: after the last one.
            let at = self.pending.partition_point(|(k, _)| *k <= key);
            self.pending.insert(at, (key, s));
        }
        while self.pending.len() > self.capacity {
            self.pop_one(stats, out);
        }
        if let (Some(lag), Some(max)) = (self.release_lag, self.max_step_seen) {
            while self
                .pending
                .front()
                .is_some_and(|(k, _)| k.step.saturating_add(lag) <= max)
            {
                self.pop_one(stats, out);
            }
        }
    }

    /// Emits everything still buffered (end of input).
    /// The highest step pushed so far (released or still held).
    pub fn max_step_seen(&self) -> Option<u64> {
        self.max_step_seen
    }

    pub fn flush(&mut self, stats: &mut IngestStats, out: &mut dyn FnMut(&Sample)) {
        while !self.pending.is_empty() {
            self.pop_one(stats, out);
        }
    }

    fn pop_one(&mut self, stats: &mut IngestStats, out: &mut dyn FnMut(&Sample)) {
        // Handed out in place and dropped after: a record is a few hundred bytes, moved otherwise.
        let Some((key, s)) = self.pending.front_mut() else {
            return;
        };
        let key = *key;
        self.watermark = Some(key.step);
        if self.emitted_keys.back().is_none_or(|k| *k < key) {
            self.emitted_keys.push_back(key);
        }
        if self.emitted_keys.len() > self.capacity {
            self.emitted_keys.pop_front();
        }
        if let Some(ts) = s.ts_ms {
            if self
                .last_raw_ts
                .is_some_and(|prev| ts < prev.saturating_sub(self.skew_tolerance_ms))
            {
                stats.clock_skew = stats.clock_skew.saturating_add(1);
            }
            self.last_raw_ts = Some(ts);
            // Time never runs backwards downstream: a skewed stamp is clamped to the last good one.
            let clamped = self.last_ts.map_or(ts, |prev| ts.max(prev));
            self.last_ts = Some(clamped);
            s.ts_ms = Some(clamped);
        } else {
            stats.records_without_ts = stats.records_without_ts.saturating_add(1);
        }
        stats.records_emitted = stats.records_emitted.saturating_add(1);
        out(s);
        self.pending.pop_front();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(step: Option<u64>, ts: i64) -> Sample {
        Sample {
            ts_ms: Some(ts),
            step,
            step_time_ms: Some(10.0),
            ..Default::default()
        }
    }

    fn run(cap: usize, input: Vec<Sample>) -> (Vec<(u64, i64)>, IngestStats) {
        let mut o = Orderer::new(cap, 5_000, None);
        let mut st = IngestStats::default();
        let mut got = vec![];
        for s in input {
            o.push(s, &mut st, &mut |s| {
                got.push((s.step.unwrap(), s.ts_ms.unwrap()))
            });
        }
        o.flush(&mut st, &mut |s| {
            got.push((s.step.unwrap(), s.ts_ms.unwrap()))
        });
        (got, st)
    }

    #[test]
    fn reorders_within_window_and_drops_duplicates() {
        let input = [3, 1, 2, 2, 5, 4]
            .map(|s| sample(Some(s), s as i64 * 1000))
            .to_vec();
        let (got, st) = run(4, input);
        assert_eq!(
            got.iter().map(|g| g.0).collect::<Vec<_>>(),
            vec![1, 2, 3, 4, 5]
        );
        assert_eq!(st.duplicates, 1);
        assert_eq!(st.reordered, 3);
        assert_eq!(st.late_dropped, 0);
    }

    #[test]
    fn release_lag_emits_once_far_enough_ahead() {
        let mut o = Orderer::new(1024, 5_000, Some(2));
        let mut st = IngestStats::default();
        let mut got = vec![];
        for s in [1, 3, 2, 4, 5] {
            o.push(sample(Some(s), s as i64), &mut st, &mut |s| {
                got.push(s.step.unwrap())
            });
        }
        // 5 arrived: everything up to step 3 is out, in order, although the buffer is far from full.
        assert_eq!(got, vec![1, 2, 3]);
        // A record behind what was released is late.
        o.push(sample(Some(2), 2), &mut st, &mut |s| {
            got.push(s.step.unwrap())
        });
        o.push(sample(Some(1), 9), &mut st, &mut |s| {
            got.push(s.step.unwrap())
        });
        assert_eq!(st.duplicates + st.late_dropped, 2);
        assert_eq!(got, vec![1, 2, 3]);
    }

    #[test]
    fn too_late_is_dropped_and_counted() {
        let input = [5, 6, 7, 1]
            .map(|s| sample(Some(s), s as i64 * 1000))
            .to_vec();
        let (got, st) = run(1, input);
        assert_eq!(got.iter().map(|g| g.0).collect::<Vec<_>>(), vec![5, 6, 7]);
        assert_eq!(st.late_dropped, 1);
    }

    #[test]
    fn clock_skew_is_counted_and_clamped() {
        let input = vec![
            sample(Some(1), 100_000),
            sample(Some(2), 101_000),
            sample(Some(3), 10_000), // an hour-scale jump back
            sample(Some(4), 103_000),
        ];
        let (got, st) = run(8, input);
        assert_eq!(st.clock_skew, 1);
        assert_eq!(
            got.iter().map(|g| g.1).collect::<Vec<_>>(),
            vec![100_000, 101_000, 101_000, 103_000]
        );
    }

    /// `"step": 18446744073709551615` then a record without a step overflowed `max + 1` (a panic in
    /// debug builds, step 0 in release). Seeded into fuzz/seeds/telemetry_stream.
    #[test]
    fn a_record_without_step_after_the_largest_step() {
        let input = vec![sample(Some(u64::MAX), 1), sample(None, 2)];
        let (got, st) = run(8, input);
        assert_eq!(got, vec![(u64::MAX, 1), (u64::MAX, 2)]);
        assert_eq!(st.records_without_step, 1);
    }

    /// A reorder buffer restored from a corrupt watch checkpoint (last timestamp near i64::MIN)
    /// overflowed the clock-skew test.
    #[test]
    fn a_restored_extreme_last_timestamp_does_not_overflow() {
        let mut o = Orderer::new(1, 5_000, None);
        o.last_raw_ts = Some(i64::MIN);
        let mut st = IngestStats::default();
        o.push(sample(Some(1), 0), &mut st, &mut |_| {});
        o.flush(&mut st, &mut |_| {});
        assert_eq!(st.records_emitted, 1);
        assert_eq!(st.clock_skew, 0);
    }

    #[test]
    fn records_without_step_follow_arrival() {
        let input = vec![sample(None, 1), sample(None, 2), sample(None, 3)];
        let (got, st) = run(8, input);
        assert_eq!(got.iter().map(|g| g.0).collect::<Vec<_>>(), vec![1, 2, 3]);
        assert_eq!(st.records_without_step, 3);
    }
}
