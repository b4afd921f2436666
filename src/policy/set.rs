//! Several policies evaluated together on each window, each with its own state: the base policy
//! (safe-chords unless another is chosen) and the advanced ones explicitly enabled. Their decisions
//! merge into one [`WindowDecision`]: the first non-NORMAL-HOLD chord in evaluation order is the
//! primary one, and the first policy to propose a knob owns it for the window.

use serde::Serialize;

use super::error::PolicyError;
use super::host::{Policy, PolicyHost};
use super::registry::PolicyCatalog;
use super::types::{
    Blocked, Decision, EvalCost, Knobs, Limits, NORMAL_HOLD, PolicyState, Proposal,
};
use crate::signals::WindowFeatures;

/// What all policies decided for one window.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct WindowDecision {
    pub chord: String,
    pub active_chords: Vec<String>,
    pub proposals: Vec<Proposal>,
    pub blocked: Vec<Blocked>,
    /// Per policy, in evaluation order.
    pub decisions: Vec<Decision>,
}

impl WindowDecision {
    /// Whether any policy failed on this window.
    pub fn any_failure(&self) -> bool {
        self.decisions.iter().any(Decision::is_failure)
    }
}

/// Policies in evaluation order (advanced ones first, then the base policy), with their states.
pub struct PolicySet {
    members: Vec<(Policy, PolicyState)>,
    cost: EvalCost,
}

impl PolicySet {
    /// Loads `base` (a policy id, `id@version` or a component path) and the advanced policies
    /// named in `enable_advanced`, in evaluation order: advanced first, then the base. An advanced
    /// policy runs only when named there; whether the passport permits it is the envelope's call.
    pub fn load(
        host: &PolicyHost,
        catalog: &PolicyCatalog,
        base: &str,
        enable_advanced: &[String],
    ) -> Result<PolicySet, PolicyError> {
        let base_src = catalog.find(base)?;
        if base_src.meta.advanced && !enable_advanced.contains(&base_src.meta.id) {
            return Err(PolicyError::Advanced(format!(
                "{} is an advanced policy: enable it explicitly with --enable-advanced {}",
                base_src.meta.id, base_src.meta.id
            )));
        }
        let mut policies = Vec::new();
        for id in enable_advanced {
            let src = catalog.find(id)?;
            if !src.meta.advanced {
                return Err(PolicyError::Advanced(format!(
                    "{id} is not an advanced policy; --enable-advanced takes advanced ones only"
                )));
            }
            if src.meta.id == base_src.meta.id
                || policies
                    .iter()
                    .any(|p: &Policy| p.metadata().id == src.meta.id)
            {
                continue;
            }
            policies.push(host.load(&src.bytes)?);
        }
        policies.push(host.load(&base_src.bytes)?);
        Ok(PolicySet::new(policies))
    }

    pub fn new(policies: Vec<Policy>) -> PolicySet {
        PolicySet {
            members: policies
                .into_iter()
                .map(|p| (p, PolicyState::default()))
                .collect(),
            cost: EvalCost::default(),
        }
    }

    pub fn policies(&self) -> impl Iterator<Item = &Policy> {
        self.members.iter().map(|(p, _)| p)
    }

    /// The states the policies will see with the next window (for checkpoints and replays).
    pub fn states(&self) -> Vec<PolicyState> {
        self.members.iter().map(|(_, s)| s.clone()).collect()
    }

    /// Restores states saved with [`PolicySet::states`] (same policies, same order), to resume or
    /// replay a run. Extra or missing entries leave the other policies' states alone.
    pub fn set_states(&mut self, states: Vec<PolicyState>) {
        for ((_, s), saved) in self.members.iter_mut().zip(states) {
            *s = saved;
        }
    }

    /// Total evaluation cost so far.
    pub fn cost(&self) -> EvalCost {
        self.cost
    }

    pub fn evaluate(
        &mut self,
        features: &WindowFeatures,
        knobs: &Knobs,
        limits: &Limits,
    ) -> WindowDecision {
        let mut decisions = Vec::with_capacity(self.members.len());
        for (policy, state) in &mut self.members {
            let e = policy.evaluate(features, knobs, limits, state);
            *state = e.next_state;
            self.cost.fuel += e.cost.fuel;
            self.cost.micros += e.cost.micros;
            decisions.push(e.decision);
        }
        merge(decisions)
    }
}

/// Merges per-policy decisions (in priority order) into one.
pub fn merge(decisions: Vec<Decision>) -> WindowDecision {
    let chord = decisions
        .iter()
        .map(|d| d.chord.as_str())
        .find(|c| *c != NORMAL_HOLD)
        .unwrap_or(NORMAL_HOLD)
        .to_string();
    let mut active_chords: Vec<String> = Vec::new();
    let mut proposals: Vec<Proposal> = Vec::new();
    let mut blocked: Vec<Blocked> = Vec::new();
    for d in &decisions {
        for c in &d.active_chords {
            if !active_chords.contains(c) {
                active_chords.push(c.clone());
            }
        }
        blocked.extend(d.blocked.iter().cloned());
        for p in &d.proposals {
            if let Some(owner) = proposals.iter().find(|q| q.knob == p.knob) {
                blocked.push(Blocked {
                    knob: p.knob.clone(),
                    to: p.to,
                    reason: format!(
                        "{} proposed {} -> {} first",
                        d.policy.name, owner.from, owner.to
                    ),
                });
            } else {
                proposals.push(p.clone());
            }
        }
    }
    WindowDecision {
        chord,
        active_chords,
        proposals,
        blocked,
        decisions,
    }
}
