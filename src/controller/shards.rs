//! Which replica runs which workloads: the fleet is split into N shards by a hash of each
//! workload's UID, and each shard has a leader elected over its own Lease
//! (`modekeeper-controller-shard-<i>`). Only a shard's leader runs (and applies for) its
//! workloads; the other replicas stand by and take a shard over when its leader stops renewing.
//!
//! Spreading: every replica contends for every shard, but one that already leads `h` shards waits
//! `h` extra retry periods before it tries to take a free one, so replicas started together end
//! up with about equal shares, and a dead replica's shards go to the others once its Leases
//! expire (the rebalance). Nothing else is coordinated: the Lease's resourceVersion makes each
//! shard's leader unique.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use tokio::sync::watch;

use crate::k8s::{KubeCluster, LeaderElector, LeaseConfig, LeaseConfigError, shard_lease_name};

/// The shard of a workload: stable across replicas, versions and restarts.
pub fn shard_of(uid: &str, shards: u32) -> u32 {
    let digest = Sha256::digest(uid.as_bytes());
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    (u64::from_be_bytes(first) % u64::from(shards.max(1))) as u32
}

/// The shards this replica leads, each with the instant its leadership runs out unless renewed.
#[derive(Debug)]
pub struct Ownership {
    until: Mutex<Vec<Option<Instant>>>,
    /// Bumped on every change of the set of shards led.
    changed: watch::Sender<u64>,
}

impl Ownership {
    pub fn new(shards: u32) -> Ownership {
        Ownership {
            until: Mutex::new(vec![None; shards.max(1) as usize]),
            changed: watch::channel(0).0,
        }
    }

    pub fn shards(&self) -> u32 {
        self.lock().len() as u32
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Option<Instant>>> {
        // A panic elsewhere while holding it leaves plain data behind.
        self.until.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records one election round of `shard`: leading until `until`, or not.
    pub fn set(&self, shard: u32, until: Option<Instant>) {
        let changed = {
            let mut v = self.lock();
            let Some(slot) = v.get_mut(shard as usize) else {
                return;
            };
            let before = slot.is_some_and(|t| t > Instant::now());
            *slot = until;
            before != until.is_some_and(|t| t > Instant::now())
        };
        if changed {
            self.changed.send_modify(|n| *n += 1);
        }
    }

    /// How long this replica still leads `shard` (zero when it does not).
    pub fn leadership_left(&self, shard: u32) -> Duration {
        self.lock()
            .get(shard as usize)
            .copied()
            .flatten()
            .map_or(Duration::ZERO, |t| t.saturating_duration_since(Instant::now()))
    }

    pub fn leads(&self, shard: u32) -> bool {
        !self.leadership_left(shard).is_zero()
    }

    /// The shards led now.
    pub fn led(&self) -> Vec<u32> {
        let now = Instant::now();
        self.lock()
            .iter()
            .enumerate()
            .filter(|(_, t)| t.is_some_and(|t| t > now))
            .map(|(i, _)| i as u32)
            .collect()
    }

    /// Wakes when the set of shards led may have changed (also when a leadership just ran out
    /// is noticed by the next round).
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }
}

/// Timing of the shard Leases (client-go's defaults unless tests shorten them).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeaseTiming {
    pub lease_duration: Duration,
    pub renew_deadline: Duration,
    pub retry_period: Duration,
}

impl Default for LeaseTiming {
    fn default() -> Self {
        LeaseTiming {
            lease_duration: Duration::from_secs(15),
            renew_deadline: Duration::from_secs(10),
            retry_period: Duration::from_secs(2),
        }
    }
}

/// Whether `t` keeps a shard's leader unique (client-go's rules; see [`LeaseConfig::validate`]).
pub fn check_timing(t: &LeaseTiming) -> Result<(), String> {
    let mut cfg = LeaseConfig::new("-", "-", "-");
    cfg.lease_duration = t.lease_duration;
    cfg.renew_deadline = t.renew_deadline;
    cfg.retry_period = t.retry_period;
    cfg.validate().map_err(|e| e.to_string())
}

/// One elector per shard, ready to run.
pub struct Electors {
    electors: Vec<LeaderElector>,
    retry: Duration,
}

impl Electors {
    /// Electors for `shards` Leases named `<base>-shard-<i>` in `namespace`, as `identity`.
    pub fn new(
        cluster: &KubeCluster,
        namespace: &str,
        base: &str,
        identity: &str,
        shards: u32,
        timing: LeaseTiming,
    ) -> Result<Electors, LeaseConfigError> {
        let electors = (0..shards.max(1))
            .map(|i| {
                let mut cfg = LeaseConfig::new(namespace, &shard_lease_name(base, i), identity);
                cfg.lease_duration = timing.lease_duration;
                cfg.renew_deadline = timing.renew_deadline;
                cfg.retry_period = timing.retry_period;
                LeaderElector::new(cluster, cfg)
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Electors {
            electors,
            retry: timing.retry_period,
        })
    }

    /// Runs every shard's election until `stop` says so, publishing each round to `owned`; then
    /// releases the Leases held, so standbys take over at once. `on_error` hears failed rounds.
    pub async fn run(
        self,
        owned: Arc<Ownership>,
        stop: watch::Receiver<bool>,
        on_error: Arc<dyn Fn(u32, String) + Send + Sync>,
    ) {
        let retry = self.retry;
        let mut tasks = tokio::task::JoinSet::new();
        for (i, mut elector) in self.electors.into_iter().enumerate() {
            let shard = i as u32;
            let owned = owned.clone();
            let mut stop = stop.clone();
            let on_error = on_error.clone();
            tasks.spawn(async move {
                loop {
                    if *stop.borrow() {
                        break;
                    }
                    if !elector.is_leader() {
                        // Leave free shards to replicas that lead fewer.
                        let held = owned.led().len() as u32;
                        if held > 0 && sleep_or_stop(retry * held, &mut stop).await {
                            break;
                        }
                    }
                    // The elector counts leadership from when it sent the renewal.
                    match elector.try_acquire_or_renew().await {
                        Ok(true) => {
                            let left = elector.leadership_left();
                            owned.set(shard, Some(Instant::now() + left));
                        }
                        Ok(false) => owned.set(shard, None),
                        Err(e) => {
                            on_error(shard, e.to_string());
                            let left = elector.leadership_left();
                            owned.set(shard, (!left.is_zero()).then(|| Instant::now() + left));
                        }
                    }
                    if sleep_or_stop(elector.next_wait(), &mut stop).await {
                        break;
                    }
                }
                owned.set(shard, None);
                if let Err(e) = elector.release().await {
                    on_error(shard, format!("releasing the Lease: {e}"));
                }
            });
        }
        while tasks.join_next().await.is_some() {}
    }
}

/// Sleeps `d` unless `stop` turns true first; returns whether it did.
async fn sleep_or_stop(d: Duration, stop: &mut watch::Receiver<bool>) -> bool {
    tokio::select! {
        _ = tokio::time::sleep(d) => {}
        _ = until_true(stop) => {}
    }
    *stop.borrow()
}

/// Resolves once `rx` holds true, or its sender is gone (which stops too). Holds no lock across
/// its caller's awaits (the watch's own guard would make the caller's future not `Send`).
pub async fn until_true(rx: &mut watch::Receiver<bool>) {
    let _ = rx.wait_for(|s| *s).await.map(|_| ());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_workloads_shard_is_stable_and_the_shards_share_the_fleet() {
        assert_eq!(shard_of("uid-1", 1), 0);
        assert_eq!(shard_of("uid-1", 0), 0, "no shards counts as one");
        let a = shard_of("5b8f3c1e-0000-4000-8000-000000000001", 4);
        assert_eq!(a, shard_of("5b8f3c1e-0000-4000-8000-000000000001", 4));
        let mut counts = [0u32; 4];
        for i in 0..4000 {
            counts[shard_of(&format!("uid-{i}"), 4) as usize] += 1;
        }
        for c in counts {
            assert!((850..1150).contains(&c), "{counts:?}");
        }
    }

    #[test]
    fn ownership_tells_the_led_shards_and_runs_out_by_itself() {
        let o = Ownership::new(3);
        let mut rx = o.subscribe();
        assert!(o.led().is_empty());
        o.set(1, Some(Instant::now() + Duration::from_secs(60)));
        assert_eq!(o.led(), vec![1]);
        assert!(o.leads(1) && !o.leads(0));
        assert!(o.leadership_left(1) > Duration::from_secs(59));
        assert!(rx.has_changed().unwrap());
        rx.mark_unchanged();
        // A renewal changes nothing anyone waits for.
        o.set(1, Some(Instant::now() + Duration::from_secs(61)));
        assert!(!rx.has_changed().unwrap());
        o.set(2, Some(Instant::now() + Duration::from_millis(30)));
        std::thread::sleep(Duration::from_millis(60));
        assert_eq!(o.led(), vec![1], "a leadership not renewed runs out");
        assert!(!o.leads(2));
        o.set(1, None);
        assert!(o.led().is_empty());
        o.set(7, Some(Instant::now()));
    }
}
