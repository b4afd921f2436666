//! What became of one apply, typed. The state file (`watch_state.v2`) and the reports keep the text
//! forms the first releases wrote (`pending`, `applied`, `blocked:<reason>`, …); only this module
//! reads or writes them.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

const UNKNOWN: &str = "unknown (the watch stopped during the apply)";

/// The outcome of the apply of one decision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ApplyOutcome {
    /// Checkpointed before the cluster is touched; never left so by a session that finished the apply.
    Pending,
    /// Every item was written.
    Applied,
    /// The plan was empty (the decision's knobs equal what the cluster was last given).
    NoChanges,
    /// A gate refused (kill switch, license, verify, stale objects); nothing was written.
    Blocked { reason: String },
    /// A cluster or I/O failure during the apply.
    Failed { message: String },
    /// Found pending on resume: the process stopped during the apply, the cluster may or may not
    /// have taken it. Never retried: the next decision carries the knobs again.
    Unknown,
}

impl ApplyOutcome {
    /// The reason of a blocked apply.
    pub fn blocked_reason(&self) -> Option<&str> {
        match self {
            ApplyOutcome::Blocked { reason } => Some(reason),
            _ => None,
        }
    }

    /// The outcome of a gated apply's result (`None`: nothing to apply).
    pub fn of_result(result: Option<&crate::apply::ApplyResult>) -> ApplyOutcome {
        use crate::apply::ApplyResult;
        match result {
            None => ApplyOutcome::NoChanges,
            Some(ApplyResult::Applied) => ApplyOutcome::Applied,
            Some(ApplyResult::Blocked(b)) => ApplyOutcome::Blocked {
                reason: b.reason.to_string(),
            },
            Some(ApplyResult::Failed(m)) => ApplyOutcome::Failed { message: m.clone() },
        }
    }

    fn parse(s: &str) -> Option<ApplyOutcome> {
        Some(match s {
            "pending" => ApplyOutcome::Pending,
            "applied" => ApplyOutcome::Applied,
            "no_changes" => ApplyOutcome::NoChanges,
            UNKNOWN => ApplyOutcome::Unknown,
            _ => {
                if let Some(r) = s.strip_prefix("blocked:") {
                    ApplyOutcome::Blocked { reason: r.into() }
                } else if let Some(m) = s.strip_prefix("failed: ") {
                    ApplyOutcome::Failed { message: m.into() }
                } else {
                    return None;
                }
            }
        })
    }
}

impl fmt::Display for ApplyOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ApplyOutcome::Pending => f.write_str("pending"),
            ApplyOutcome::Applied => f.write_str("applied"),
            ApplyOutcome::NoChanges => f.write_str("no_changes"),
            ApplyOutcome::Blocked { reason } => write!(f, "blocked:{reason}"),
            ApplyOutcome::Failed { message } => write!(f, "failed: {message}"),
            ApplyOutcome::Unknown => f.write_str(UNKNOWN),
        }
    }
}

impl Serialize for ApplyOutcome {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for ApplyOutcome {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<ApplyOutcome, D::Error> {
        let s = String::deserialize(d)?;
        ApplyOutcome::parse(&s)
            .ok_or_else(|| serde::de::Error::custom(format!("unknown apply outcome {s:?}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_outcome_round_trips_through_its_text() {
        for o in [
            ApplyOutcome::Pending,
            ApplyOutcome::Applied,
            ApplyOutcome::NoChanges,
            ApplyOutcome::Blocked {
                reason: "kill_switch".into(),
            },
            ApplyOutcome::Failed {
                message: "cluster: connection refused".into(),
            },
            ApplyOutcome::Unknown,
        ] {
            let text = serde_json::to_string(&o).unwrap();
            assert_eq!(text, format!("\"{o}\""));
            assert_eq!(serde_json::from_str::<ApplyOutcome>(&text).unwrap(), o);
        }
        // The texts the first releases wrote.
        assert_eq!(
            serde_json::to_string(&ApplyOutcome::Blocked {
                reason: "license".into()
            })
            .unwrap(),
            r#""blocked:license""#
        );
        assert!(serde_json::from_str::<ApplyOutcome>(r#""maybe""#).is_err());
    }
}
