//! ModeKeeper as a library: the pure spine (telemetry ingest, window features) and the commands built
//! on it. The `kubectl-modekeeper` binary is a thin wrapper around [`cli`].
//!
//! Pipeline, one direction: `telemetry` (ingest) → `signals` (windows, features, symptoms) →
//! `artifacts` (reports). `pipeline` drives a pass; `cli` holds one module per command.
// The watch report is one `json!` literal with nested objects.
#![recursion_limit = "256"]

pub mod apply;
pub mod artifacts;
pub mod cli;
pub mod closed_loop;
pub mod controller;
pub mod envelope;
pub mod error;
pub mod fsio;
pub mod human;
pub mod install;
pub mod json_keys;
pub mod k8s;
pub mod license;
pub mod passport;
pub mod pipeline;
pub mod plan;
pub mod policy;
pub mod private_file;
pub mod report;
pub mod signals;
pub mod telemetry;
