//! The in-cluster controller (`kubectl modekeeper controller`, issue 14): one session per opted-in
//! workload, leader election and sharding, state in the cluster. Its observable side lives here too:
//! [`metrics`] (what it did, for Prometheus) and [`http`] (the port that serves them and the probes).

pub mod http;
pub mod metrics;
