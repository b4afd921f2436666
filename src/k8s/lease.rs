//! Leader election over a coordination.k8s.io/v1 Lease, as client-go's `leaderelection` does it,
//! for replicas of the controller (one Lease for the whole fleet, or one per shard:
//! [`shard_lease_name`]).
//!
//! Every write carries the resourceVersion read just before it, so when two replicas race for the
//! same Lease the server accepts one update and answers the other 409 Conflict: there is never a
//! second leader. A Lease counts as expired when its record has not changed for
//! `leaseDurationSeconds` *as this replica observed it* (its own monotonic clock, never the
//! holder's timestamps, so clock skew between nodes cannot hand the Lease over early). A leader
//! that has not renewed within `renew_deadline` (< lease duration, counted from when it sent the
//! renewal) stops calling itself leader before anyone else may take over. What the leader does
//! with its leadership is the caller's; this type only answers "am I the leader now?".

use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, PostParams};

use super::{ClusterError, ClusterErrorKind, KubeCluster};

/// Timing and identity of one contender (client-go's defaults: 15 s / 10 s / 2 s).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseConfig {
    pub namespace: String,
    pub name: String,
    /// This replica (its pod name): `holderIdentity` while it leads.
    pub identity: String,
    /// How long others wait, from the last change they saw, before taking over.
    pub lease_duration: Duration,
    /// How long a leader keeps calling itself leader without a successful renewal.
    pub renew_deadline: Duration,
    /// Pause between rounds (jittered by [`LeaderElector::next_wait`]).
    pub retry_period: Duration,
}

impl LeaseConfig {
    pub fn new(namespace: &str, name: &str, identity: &str) -> LeaseConfig {
        LeaseConfig {
            namespace: namespace.into(),
            name: name.into(),
            identity: identity.into(),
            lease_duration: Duration::from_secs(15),
            renew_deadline: Duration::from_secs(10),
            retry_period: Duration::from_secs(2),
        }
    }
}

/// A [`LeaseConfig`] whose timings could make two leaders.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LeaseConfigError {
    #[error(
        "Lease {lease}: renew deadline {renew_deadline:?} must be shorter than the lease duration {lease_duration:?}"
    )]
    RenewDeadlineTooLong {
        lease: String,
        renew_deadline: Duration,
        lease_duration: Duration,
    },
    #[error(
        "Lease {lease}: retry period {retry_period:?} (+20 % jitter) must be shorter than the renew deadline {renew_deadline:?}"
    )]
    RetryPeriodTooLong {
        lease: String,
        retry_period: Duration,
        renew_deadline: Duration,
    },
}

impl LeaseConfig {
    /// client-go's checks: a leader must stop calling itself leader before a standby may take
    /// over, and must get at least one retry within its renew deadline.
    pub fn validate(&self) -> Result<(), LeaseConfigError> {
        let lease = format!("{}/{}", self.namespace, self.name);
        if self.renew_deadline >= self.lease_duration {
            return Err(LeaseConfigError::RenewDeadlineTooLong {
                lease,
                renew_deadline: self.renew_deadline,
                lease_duration: self.lease_duration,
            });
        }
        if self.retry_period.mul_f64(1.2) >= self.renew_deadline {
            return Err(LeaseConfigError::RetryPeriodTooLong {
                lease,
                retry_period: self.retry_period,
                renew_deadline: self.renew_deadline,
            });
        }
        Ok(())
    }

    /// `leaseDurationSeconds` as written: rounded up, so standbys never wait less than the
    /// leader's renew deadline assumes.
    fn duration_seconds(&self) -> i32 {
        let d = self.lease_duration;
        let secs = d.as_secs() + u64::from(d.subsec_nanos() > 0);
        i32::try_from(secs.max(1)).unwrap_or(i32::MAX)
    }
}

/// The Lease of one shard: `<base>-shard-<shard>`.
pub fn shard_lease_name(base: &str, shard: u32) -> String {
    format!("{base}-shard-{shard}")
}

/// The Lease record this replica saw last, and when it first saw it (its monotonic clock).
struct Observed {
    resource_version: String,
    spec: LeaseSpec,
    at: Instant,
}

/// One contender for a Lease.
pub struct LeaderElector {
    api: Api<Lease>,
    /// The connection's request timeout, bounding every call.
    timeout: Option<Duration>,
    cfg: LeaseConfig,
    observed: Option<Observed>,
    /// When this replica last wrote the Lease as its holder.
    renewed_at: Option<Instant>,
}

fn now() -> MicroTime {
    MicroTime(Timestamp::now())
}

fn conflict(e: &ClusterError) -> bool {
    // 409: a stale resourceVersion (Conflict) or a create that lost the race (AlreadyExists).
    e.kind == ClusterErrorKind::Conflict
}

impl LeaderElector {
    pub fn new(cluster: &KubeCluster, cfg: LeaseConfig) -> Result<LeaderElector, LeaseConfigError> {
        cfg.validate()?;
        Ok(LeaderElector {
            api: Api::namespaced(cluster.client(), &cfg.namespace),
            timeout: cluster.request_timeout(),
            cfg,
            observed: None,
            renewed_at: None,
        })
    }

    /// Runs one API call under the request timeout and classifies its failure.
    async fn call<T>(
        &self,
        what: String,
        fut: impl Future<Output = Result<T, kube::Error>>,
    ) -> Result<T, ClusterError> {
        let result = match self.timeout {
            Some(limit) => match tokio::time::timeout(limit, fut).await {
                Ok(r) => r,
                Err(_) => return Err(ClusterError::timeout(&what, limit)),
            },
            None => fut.await,
        };
        result.map_err(|e| ClusterError::from_kube(&what, &e))
    }

    pub fn config(&self) -> &LeaseConfig {
        &self.cfg
    }

    /// Whether this replica leads now: it holds the Lease and renewed it within the renew
    /// deadline.
    pub fn is_leader(&self) -> bool {
        self.renewed_at
            .is_some_and(|t| t.elapsed() < self.cfg.renew_deadline)
    }

    /// How long this replica may still call itself leader without another successful renewal
    /// (zero when it does not lead): a write that relies on leadership is sent only with enough
    /// of it left to finish.
    pub fn leadership_left(&self) -> Duration {
        self.renewed_at
            .map_or(Duration::ZERO, |t| self.cfg.renew_deadline.saturating_sub(t.elapsed()))
    }

    /// The wait before the next round: the retry period plus up to 20 % random jitter, so
    /// replicas started together do not keep colliding.
    pub fn next_wait(&self) -> Duration {
        let mut b = [0u8; 2];
        let jitter = match getrandom::getrandom(&mut b) {
            Ok(()) => f64::from(u16::from_le_bytes(b)) / f64::from(u16::MAX),
            Err(_) => 0.5,
        };
        self.cfg.retry_period.mul_f64(1.0 + 0.2 * jitter)
    }

    /// One round: create the Lease if there is none, renew it if this replica holds it, take it
    /// over if it is free or expired. Returns whether this replica leads after the round. A 409
    /// (another replica won the race) is a lost round, not an error.
    pub async fn try_acquire_or_renew(&mut self) -> Result<bool, ClusterError> {
        let what = || {
            format!(
                "Lease {}/{} for {}",
                self.cfg.namespace, self.cfg.name, self.cfg.identity
            )
        };
        let current = self
            .call(format!("GET {}", what()), self.api.get_opt(&self.cfg.name))
            .await?;
        let Some(current) = current else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(self.cfg.name.clone()),
                    namespace: Some(self.cfg.namespace.clone()),
                    ..ObjectMeta::default()
                },
                spec: Some(self.record(None)),
            };
            let sent = Instant::now();
            let created = self
                .call(
                    format!("POST {}", what()),
                    self.api.create(&PostParams::default(), &lease),
                )
                .await;
            return self.written(created, sent);
        };
        let spec = current.spec.clone().unwrap_or_default();
        let rv = current
            .metadata
            .resource_version
            .clone()
            .unwrap_or_default();
        // A changed record restarts the expiry clock.
        if self
            .observed
            .as_ref()
            .is_none_or(|o| o.resource_version != rv || o.spec != spec)
        {
            self.observed = Some(Observed {
                resource_version: rv.clone(),
                spec: spec.clone(),
                at: Instant::now(),
            });
        }
        let holder = spec.holder_identity.as_deref().unwrap_or("");
        let mine = holder == self.cfg.identity;
        let duration = spec
            .lease_duration_seconds
            .map_or(self.cfg.lease_duration, |s| {
                Duration::from_secs(u64::try_from(s).unwrap_or(0))
            });
        let expired = self
            .observed
            .as_ref()
            .is_some_and(|o| o.at.elapsed() >= duration);
        if !mine && !holder.is_empty() && !expired {
            self.renewed_at = None;
            return Ok(false);
        }
        let mut lease = current.clone();
        lease.spec = Some(self.record(Some(&spec)));
        // `replace` sends metadata.resourceVersion: the server refuses it if anyone wrote since.
        let sent = Instant::now();
        let replaced = self
            .call(
                format!("PUT {}", what()),
                self.api
                    .replace(&self.cfg.name, &PostParams::default(), &lease),
            )
            .await;
        self.written(replaced, sent)
    }

    /// Gives the Lease up (on shutdown) so a standby takes over at its next round instead of
    /// after the lease duration. Does nothing unless this replica holds it.
    pub async fn release(&mut self) -> Result<(), ClusterError> {
        if self.renewed_at.take().is_none() {
            return Ok(());
        }
        let what = format!("Lease {}/{}", self.cfg.namespace, self.cfg.name);
        let Some(mut lease) = self
            .call(format!("GET {what}"), self.api.get_opt(&self.cfg.name))
            .await?
        else {
            return Ok(());
        };
        let mut spec = lease.spec.clone().unwrap_or_default();
        if spec.holder_identity.as_deref() != Some(self.cfg.identity.as_str()) {
            return Ok(());
        }
        spec.holder_identity = None;
        spec.lease_duration_seconds = Some(1);
        spec.renew_time = Some(now());
        lease.spec = Some(spec);
        let replaced = self
            .call(
                format!("PUT {what}"),
                self.api
                    .replace(&self.cfg.name, &PostParams::default(), &lease),
            )
            .await;
        match replaced {
            Ok(_) => Ok(()),
            Err(e) => {
                // Someone took it meanwhile: it is released all the same.
                if conflict(&e) { Ok(()) } else { Err(e) }
            }
        }
    }

    /// The record this replica writes: a renewal keeps acquireTime and transitions, a takeover
    /// stamps a new acquireTime and counts a transition.
    fn record(&self, previous: Option<&LeaseSpec>) -> LeaseSpec {
        let duration_s = self.cfg.duration_seconds();
        let now = now();
        match previous {
            Some(p) if p.holder_identity.as_deref() == Some(self.cfg.identity.as_str()) => {
                LeaseSpec {
                    renew_time: Some(now),
                    lease_duration_seconds: Some(duration_s),
                    ..p.clone()
                }
            }
            previous => LeaseSpec {
                holder_identity: Some(self.cfg.identity.clone()),
                lease_duration_seconds: Some(duration_s),
                acquire_time: Some(now.clone()),
                renew_time: Some(now),
                lease_transitions: Some(match previous {
                    // A first holder is no transition; a released or expired Lease changes hands.
                    Some(p) => p.lease_transitions.unwrap_or(0) + 1,
                    None => 0,
                }),
                ..LeaseSpec::default()
            },
        }
    }

    /// Counts from when the write was sent: the server stored it after that, and standbys count
    /// the lease duration from when they saw it, so a late answer cannot stretch leadership.
    /// The outcome of a create or replace sent at `sent`: leading, or (a 409: someone wrote
    /// first) not leading this round.
    fn written(
        &mut self,
        r: Result<Lease, ClusterError>,
        sent: Instant,
    ) -> Result<bool, ClusterError> {
        match r {
            Ok(stored) => {
                self.took(&stored, sent);
                Ok(true)
            }
            Err(e) if conflict(&e) => {
                self.renewed_at = None;
                Ok(false)
            }
            Err(e) => Err(e),
        }
    }

    fn took(&mut self, stored: &Lease, sent: Instant) {
        self.renewed_at = Some(sent);
        self.observed = Some(Observed {
            resource_version: stored.metadata.resource_version.clone().unwrap_or_default(),
            spec: stored.spec.clone().unwrap_or_default(),
            at: sent,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lease_seconds_round_up() {
        let mut cfg = LeaseConfig::new("ml", "l", "a");
        assert_eq!(cfg.duration_seconds(), 15);
        cfg.lease_duration = Duration::from_millis(1900);
        assert_eq!(cfg.duration_seconds(), 2);
        cfg.lease_duration = Duration::from_millis(200);
        assert_eq!(cfg.duration_seconds(), 1);
    }

    #[test]
    fn client_go_defaults_are_valid() {
        assert_eq!(LeaseConfig::new("ml", "l", "a").validate(), Ok(()));
    }

    #[test]
    fn shard_leases_have_their_own_names() {
        assert_eq!(shard_lease_name("modekeeper", 3), "modekeeper-shard-3");
    }
}
