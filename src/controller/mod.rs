//! The in-cluster controller (`kubectl modekeeper controller`) and what it keeps in the cluster.

pub mod fleet;
pub mod store;
