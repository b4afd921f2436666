//! Hostile: malformed results, by window index modulo 4:
//! 0 invalid UTF-8 in the chord id (the host must refuse to lift it), 1 an unknown chord id,
//! 2 NaN confidence and a NaN target, 3 a 1 MiB state (over the host's 64 KiB cap).
use modekeeper_policy_sdk::{ChordPolicy, Decision, Evaluation, Input, Proposal, export_policy};

pub struct Garbage;

impl ChordPolicy for Garbage {
    fn evaluate(input: &Input) -> Evaluation {
        let mut d = Decision::hold(0.9);
        let mut next_state = Vec::new();
        match input.features.window.index % 4 {
            0 => {
                // SAFETY: deliberately not UTF-8; this crate exists to send the host malformed data.
                d.chord = unsafe { String::from_utf8_unchecked(vec![0xff, 0xfe, 0xfd]) };
            }
            1 => d.chord = "DELETE-EVERYTHING".into(),
            2 => {
                d.chord = "BURST-ABSORB".into();
                d.confidence = f64::NAN;
                d.proposals.push(Proposal {
                    knob: "microbatch_size".into(),
                    to: f64::NAN,
                    reason: "nan".into(),
                });
            }
            _ => next_state = vec![7u8; 1 << 20],
        }
        Evaluation {
            decision: d,
            next_state,
        }
    }
}

export_policy!(Garbage);
