//! Hostile: tries to allocate 1 GiB and touch it.
use modekeeper_policy_sdk::{ChordPolicy, Decision, Evaluation, Input, export_policy};

pub struct Alloc;

impl ChordPolicy for Alloc {
    fn evaluate(input: &Input) -> Evaluation {
        let mut big = vec![0u8; 1 << 30];
        let i = input.features.window.index as usize % big.len();
        big[i] = 1;
        let n = std::hint::black_box(&big)
            .iter()
            .filter(|b| **b != 0)
            .count();
        Evaluation {
            decision: Decision::hold(n as f64),
            next_state: Vec::new(),
        }
    }
}

export_policy!(Alloc);
