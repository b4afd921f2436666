//! The chord policies of many sessions: loaded policy sets are pooled by their list of ids and
//! lent to one session at a time, which swaps its own policy states in for the windows it decides
//! ([`Policies`]' `set_states`/`states`). So a thousand sessions cost a few instantiated
//! components (about one per window decided at the same moment), not a thousand.
//!
//! Only the policies built into the binary are loaded: a workload's annotation names ids, never a
//! file on the controller's disk.

use std::collections::HashMap;
use std::sync::Mutex;

use crate::policy::{PolicyCatalog, PolicyHost, PolicySet, PolicyState, SandboxLimits};

/// Most idle sets kept per list of ids; more are dropped when given back.
const MAX_IDLE_PER_KEY: usize = 4;

pub struct PolicyPool {
    host: PolicyHost,
    catalog: PolicyCatalog,
    idle: Mutex<HashMap<String, Vec<PolicySet>>>,
    /// The states each list's policies start with, from its first load.
    initial: Mutex<HashMap<String, Vec<PolicyState>>>,
}

/// A set lent out; give it back with [`PolicyPool::give`].
pub struct LentSet {
    key: String,
    pub set: PolicySet,
}

impl PolicyPool {
    /// The embedded policies on a host with the default sandbox limits, compiled without a disk
    /// cache (the controller's file system is an emptyDir: nothing to gain across restarts).
    pub fn new() -> Result<PolicyPool, String> {
        let host = PolicyHost::new(SandboxLimits::default(), None).map_err(|e| e.to_string())?;
        Ok(PolicyPool {
            host,
            catalog: PolicyCatalog::embedded(),
            idle: Mutex::new(HashMap::new()),
            initial: Mutex::new(HashMap::new()),
        })
    }

    /// A set for `ids` (base policy first, then advanced ones by policy or chord id), reset to the
    /// given states (a new session: the policies' initial states).
    pub fn take(&self, ids: &[String], states: Option<Vec<PolicyState>>) -> Result<LentSet, String> {
        let key = ids.join(",");
        let idle = self
            .idle
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get_mut(&key)
            .and_then(Vec::pop);
        let mut set = match idle {
            Some(s) => s,
            None => self.load(ids)?,
        };
        match states {
            Some(s) => set.set_states(s),
            None => set.set_states(self.initial_states(ids)?),
        }
        Ok(LentSet { key, set })
    }

    /// The states a fresh session's policies start with.
    pub fn initial_states(&self, ids: &[String]) -> Result<Vec<PolicyState>, String> {
        let key = ids.join(",");
        if let Some(s) = self.initial.lock().unwrap_or_else(|e| e.into_inner()).get(&key) {
            return Ok(s.clone());
        }
        let set = self.load(ids)?;
        let states = set.states();
        self.give(LentSet { key, set });
        Ok(states)
    }

    pub fn give(&self, lent: LentSet) {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        let v = idle.entry(lent.key).or_default();
        if v.len() < MAX_IDLE_PER_KEY {
            v.push(lent.set);
        }
    }

    /// The digests of the policies `ids` loads (part of a session's fingerprint).
    pub fn digests(&self, ids: &[String]) -> Result<Vec<String>, String> {
        let lent = self.take(ids, None)?;
        let d = lent
            .set
            .policies()
            .map(|p| p.reference().digest.clone())
            .collect();
        self.give(lent);
        Ok(d)
    }

    fn load(&self, ids: &[String]) -> Result<PolicySet, String> {
        let (base, advanced) = ids.split_first().ok_or("no policy named")?;
        let advanced = self
            .catalog
            .advanced_ids(advanced)
            .map_err(|w| format!("no advanced policy provides the chord {w}"))?;
        let set = PolicySet::load(&self.host, &self.catalog, base, &advanced)
            .map_err(|e| e.to_string())?;
        self.initial
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(ids.join(","))
            .or_insert_with(|| set.states());
        Ok(set)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sets_are_reused_per_list_and_reset_to_the_sessions_states() {
        let pool = PolicyPool::new().unwrap();
        let ids = vec!["safe-chords".to_string()];
        let fresh = pool.initial_states(&ids).unwrap();
        let a = pool.take(&ids, None).unwrap();
        assert_eq!(a.set.states(), fresh);
        pool.give(a);
        let b = pool.take(&ids, Some(fresh.clone())).unwrap();
        assert_eq!(b.set.states(), fresh);
        assert_eq!(pool.digests(&ids).unwrap().len(), 1);
        pool.give(b);
        let e = pool
            .take(&["no-such-policy".to_string()], None)
            .err()
            .unwrap();
        assert!(e.contains("no-such-policy"), "{e}");
    }
}
