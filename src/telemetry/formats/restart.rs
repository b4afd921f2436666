//! Restarts seen in the step sequence of records that carry no time. A trainer that restarts from a
//! checkpoint prints steps it already printed: one source's step counter goes back. With timestamps the
//! wall-clock gap says so (`signals::planned`); without, this does. The records the restarted run
//! repeats are duplicates (the orderer drops them), so the first step after the restart that the
//! windows see is marked as a planned resume, as the gap rule marks it: the step that went back (when
//! it is new) and the first step past where the old run had got.
//!
//! One source is one (rank, node): the orderer exists for merged streams that arrive out of order,
//! but one process prints its own steps in order, so its counter only goes back when it restarted.

use serde::{Deserialize, Serialize};

use super::super::order::node_hash;
use super::super::record::{Sample, TrainerEvent};

/// Sources followed; more (thousands of ranks without time) are not followed.
const MAX_SOURCES: usize = 256;

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
struct Source {
    rank: Option<u32>,
    node: u64,
    last: u64,
    max: u64,
    /// After a restart: the first step above this is the first new one.
    resume_above: Option<u64>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Restarts {
    sources: Vec<Source>,
    /// Restarts detected.
    pub count: u64,
}

impl Restarts {
    /// Notes a record in input order; marks it `resume` when it is the first step after a restart.
    pub fn note(&mut self, s: &mut Sample) {
        let Some(step) = s.step else {
            return;
        };
        if s.ts_ms.is_some() {
            return;
        }
        let node = s.node.as_deref().map_or(0, node_hash);
        let src = match self
            .sources
            .iter_mut()
            .position(|x| x.rank == s.rank && x.node == node)
        {
            Some(i) => &mut self.sources[i],
            None if self.sources.len() < MAX_SOURCES => {
                self.sources.push(Source {
                    rank: s.rank,
                    node,
                    last: step,
                    max: step,
                    resume_above: None,
                });
                return;
            }
            None => return,
        };
        let first_after = if step < src.last {
            self.count += 1;
            src.resume_above = Some(src.max);
            true
        } else if src.resume_above.is_some_and(|m| step > m) {
            src.resume_above = None;
            true
        } else {
            false
        };
        src.last = step;
        src.max = src.max.max(step);
        if first_after && s.event.is_none() {
            s.event = Some(TrainerEvent::Resume);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(step: u64, rank: Option<u32>) -> Sample {
        Sample {
            step: Some(step),
            rank,
            step_time_ms: Some(100.0),
            ..Default::default()
        }
    }

    fn marked(r: &mut Restarts, steps: &[(u64, Option<u32>)]) -> Vec<u64> {
        let mut out = vec![];
        for &(step, rank) in steps {
            let mut s = rec(step, rank);
            r.note(&mut s);
            if s.event == Some(TrainerEvent::Resume) {
                out.push(step);
            }
        }
        out
    }

    #[test]
    fn a_step_counter_that_goes_back_is_a_restart() {
        let mut r = Restarts::default();
        // 1..=300, a restart from the checkpoint at 200, on to 400.
        let steps: Vec<_> = (1..=300).chain(201..=400).map(|s| (s, None)).collect();
        assert_eq!(marked(&mut r, &steps), vec![201, 301]);
        assert_eq!(r.count, 1);
    }

    #[test]
    fn ranks_interleaved_in_order_are_no_restart() {
        let mut r = Restarts::default();
        let steps: Vec<_> = (1..=100)
            .flat_map(|s| [(s, Some(1)), (s, Some(0)), (s, Some(2))])
            .collect();
        assert!(marked(&mut r, &steps).is_empty());
        assert_eq!(r.count, 0);
    }

    #[test]
    fn timestamped_records_are_left_to_the_gap_rule() {
        let mut r = Restarts::default();
        for step in (1..=50).chain(20..=60) {
            let mut s = rec(step, None);
            s.ts_ms = Some(step as i64);
            r.note(&mut s);
            assert_eq!(s.event, None);
        }
        assert_eq!(r.count, 0);
    }
}
