//! Hostile: never returns.
use modekeeper_policy_sdk::{ChordPolicy, Evaluation, Input, export_policy};

pub struct Spin;

impl ChordPolicy for Spin {
    fn evaluate(input: &Input) -> Evaluation {
        let mut x = input.features.window.index;
        loop {
            x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
        }
    }
}

export_policy!(Spin);
