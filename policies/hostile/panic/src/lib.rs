//! Hostile: panics (a trap under panic=abort).
use modekeeper_policy_sdk::{ChordPolicy, Evaluation, Input, export_policy};

pub struct Panic;

impl ChordPolicy for Panic {
    fn evaluate(input: &Input) -> Evaluation {
        panic!(
            "hostile policy panics at window {}",
            input.features.window.index
        )
    }
}

export_policy!(Panic);
