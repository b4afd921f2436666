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
    /// The digests of each list's components, from its first load.
    digests: Mutex<HashMap<String, Vec<String>>>,
    /// Held while a set compiles: sessions starting together wait for the first compile of their
    /// list instead of each compiling one (seconds each, on the same two cores).
    loading: Mutex<()>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic elsewhere while holding it leaves plain data behind.
    m.lock().unwrap_or_else(|e| e.into_inner())
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
            digests: Mutex::new(HashMap::new()),
            loading: Mutex::new(()),
        })
    }

    /// A set for `ids` (base policy first, then advanced ones by policy or chord id), reset to the
    /// given states (a new session: the policies' initial states).
    pub fn take(
        &self,
        ids: &[String],
        states: Option<Vec<PolicyState>>,
    ) -> Result<LentSet, String> {
        let key = self.key_of(ids)?;
        let pop = || lock(&self.idle).get_mut(&key).and_then(Vec::pop);
        let mut set = match pop() {
            Some(s) => s,
            None => {
                let _one_at_a_time = lock(&self.loading);
                // Another session may have given one back meanwhile.
                match pop() {
                    Some(s) => s,
                    None => self.load(ids)?,
                }
            }
        };
        match states {
            Some(s) => set.set_states(s),
            None => set.set_states(self.initial_states(ids)?),
        }
        Ok(LentSet { key, set })
    }

    /// The states a fresh session's policies start with.
    pub fn initial_states(&self, ids: &[String]) -> Result<Vec<PolicyState>, String> {
        let key = self.key_of(ids)?;
        self.known(&key, ids)?;
        Ok(lock(&self.initial).get(&key).cloned().unwrap_or_default())
    }

    /// Loads `ids` once if it never was (its states and digests are then known).
    fn known(&self, key: &str, ids: &[String]) -> Result<(), String> {
        if lock(&self.digests).contains_key(key) {
            return Ok(());
        }
        let _one_at_a_time = lock(&self.loading);
        if lock(&self.digests).contains_key(key) {
            return Ok(());
        }
        let set = self.load(ids)?;
        self.give(LentSet {
            key: key.to_string(),
            set,
        });
        Ok(())
    }

    pub fn give(&self, lent: LentSet) {
        let mut idle = lock(&self.idle);
        let v = idle.entry(lent.key).or_default();
        if v.len() < MAX_IDLE_PER_KEY {
            v.push(lent.set);
        }
    }

    /// The digests of the policies `ids` loads (part of a session's fingerprint).
    pub fn digests(&self, ids: &[String]) -> Result<Vec<String>, String> {
        let key = self.key_of(ids)?;
        self.known(&key, ids)?;
        Ok(lock(&self.digests).get(&key).cloned().unwrap_or_default())
    }

    /// The pool's key of `ids`: the policy ids the set loads, in order, without repeats. A
    /// workload's annotation spells the list, so its spellings (repeats, chord ids) must not each
    /// cost a compiled set kept idle: the key space is the catalog's, not the annotation's.
    fn key_of(&self, ids: &[String]) -> Result<String, String> {
        let (base, advanced) = ids.split_first().ok_or("no policy named")?;
        let mut advanced = self
            .catalog
            .advanced_ids(advanced)
            .map_err(|w| format!("no advanced policy provides the chord {w}"))?;
        advanced.retain(|a| a != base);
        Ok(std::iter::once(base.clone())
            .chain(advanced)
            .collect::<Vec<_>>()
            .join(","))
    }

    fn load(&self, ids: &[String]) -> Result<PolicySet, String> {
        let key = self.key_of(ids)?;
        let (base, advanced) = ids.split_first().ok_or("no policy named")?;
        let advanced = self
            .catalog
            .advanced_ids(advanced)
            .map_err(|w| format!("no advanced policy provides the chord {w}"))?;
        let set = PolicySet::load(&self.host, &self.catalog, base, &advanced)
            .map_err(|e| e.to_string())?;
        lock(&self.initial)
            .entry(key.clone())
            .or_insert_with(|| set.states());
        lock(&self.digests).entry(key).or_insert_with(|| {
            set.policies()
                .map(|p| p.reference().digest.clone())
                .collect()
        });
        Ok(set)
    }
}

/// The session's policies, borrowed from the pool only when a window is decided: most rounds
/// only feed lines, and cost no set.
pub struct Borrowed<'a> {
    pool: &'a PolicyPool,
    ids: &'a [String],
    states: &'a mut Vec<PolicyState>,
    lent: Option<LentSet>,
}

impl<'a> Borrowed<'a> {
    /// `states` are the session's; they are swapped into a set only when a window is decided.
    pub fn new(pool: &'a PolicyPool, ids: &'a [String], states: &'a mut Vec<PolicyState>) -> Self {
        Borrowed {
            pool,
            ids,
            states,
            lent: None,
        }
    }

    fn set(&mut self) -> &mut crate::policy::PolicySet {
        let lent = self.lent.get_or_insert_with(|| {
            // A set may have to be loaded (compiled) when every idle one is lent out.
            tokio::task::block_in_place(|| {
                self.pool
                    .take(self.ids, Some(std::mem::take(self.states)))
                    // The same list loaded when the session started; the components are built in.
                    .expect("a policy list that loaded once loads again")
            })
        });
        &mut lent.set
    }

    /// Gives the set back, keeping the states it carries now.
    pub fn done(mut self) {
        if let Some(lent) = self.lent.take() {
            *self.states = lent.set.states();
            self.pool.give(lent);
        }
    }
}

impl crate::closed_loop::live::Policies for Borrowed<'_> {
    fn decide(
        &mut self,
        f: &crate::signals::WindowFeatures,
        knobs: &crate::policy::Knobs,
        limits: &crate::policy::Limits,
    ) -> crate::policy::WindowDecision {
        self.set().evaluate(f, knobs, limits)
    }
    fn states(&self) -> Vec<PolicyState> {
        match &self.lent {
            Some(l) => l.set.states(),
            None => self.states.clone(),
        }
    }
    fn set_states(&mut self, states: Vec<PolicyState>) {
        match &mut self.lent {
            Some(l) => l.set.set_states(states),
            None => *self.states = states,
        }
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

    /// A workload's annotation picks the list: spellings of one set (repeats, a chord id for its
    /// policy) must not each compile and keep a set of their own, or editing one annotation grows
    /// the controller's memory without bound.
    #[test]
    fn spellings_of_one_policy_list_share_one_pooled_set() {
        let pool = PolicyPool::new().unwrap();
        let mut ids = vec!["safe-chords".to_string()];
        for n in 0..6 {
            ids.push(
                if n % 2 == 0 {
                    "timeout-guard"
                } else {
                    "TIMEOUT-GUARD"
                }
                .to_string(),
            );
            let lent = pool.take(&ids, None).unwrap();
            pool.give(lent);
        }
        let idle: usize = pool.idle.lock().unwrap().values().map(Vec::len).sum();
        assert_eq!(idle, 1, "one set for six spellings of one list");
        assert_eq!(pool.initial.lock().unwrap().len(), 1);
    }

    /// A hundred sessions starting at once compile their list once, not a hundred times (in a
    /// debug build a compile takes seconds: a controller with many workloads decided nothing
    /// for minutes).
    #[test]
    fn sessions_starting_together_compile_their_list_once() {
        let pool = std::sync::Arc::new(PolicyPool::new().unwrap());
        let ids = vec!["safe-chords".to_string()];
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let (pool, ids) = (pool.clone(), ids.clone());
                std::thread::spawn(move || {
                    pool.digests(&ids).unwrap();
                    pool.initial_states(&ids).unwrap();
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let idle: usize = pool.idle.lock().unwrap().values().map(Vec::len).sum();
        assert_eq!(idle, 1, "one compile for eight sessions starting together");
    }
}
