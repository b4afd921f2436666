//! Hostile: on even windows proposes far outside the passport limits (the host must block the
//! proposal); on odd windows proposes a knob it never declared (the host must fail the decision).
use modekeeper_policy_sdk::{ChordPolicy, Decision, Evaluation, Input, Proposal, export_policy};

pub struct Overreach;

impl ChordPolicy for Overreach {
    fn evaluate(input: &Input) -> Evaluation {
        let mut d = Decision::hold(0.9);
        d.chord = "BURST-ABSORB".into();
        d.active_chords = vec!["BURST-ABSORB".into()];
        let p = if input.features.window.index.is_multiple_of(2) {
            Proposal {
                knob: "microbatch_size".into(),
                to: 100_000.0,
                reason: "more is better".into(),
            }
        } else {
            Proposal {
                knob: "timeout_ms".into(),
                to: 1.0,
                reason: "not mine to touch".into(),
            }
        };
        d.proposals.push(p);
        Evaluation {
            decision: d,
            next_state: Vec::new(),
        }
    }
}

export_policy!(Overreach);
