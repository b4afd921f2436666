//! The live loop as a library: a [`Session`] is fed a source's lines, evaluates each window as it
//! completes and yields typed [`SessionEvent`]s; it checkpoints to a [`WatchState`] (the
//! `watch_state.v2` file of `closed-loop watch`) and resumes from one deciding byte for byte like an
//! uninterrupted session; its applies follow a protocol that never repeats one
//! ([`Session::next_apply`], checkpoint, apply, [`Session::record_apply`] with a typed
//! [`ApplyOutcome`], checkpoint — or [`Session::apply_decided`] with an [`ApplyHost`]).
//!
//! A session owns no thread, file, terminal, clock or global, so one process can hold many (the
//! in-cluster controller: one per workload). The caller reads the source, writes the decision trace
//! and the state where it keeps them, applies through `src/apply` (cluster I/O stays in
//! `src/k8s`), and prints or posts Events from the session's events. `closed-loop watch` is one such
//! caller; `closed-loop run` another, which windows its file itself and hands the session each
//! window's features ([`Session::decide_window`]). Both write plans with [`write_plan`].

mod outcome;
mod plan_writer;
mod session;
mod silence;
mod state;
#[cfg(test)]
mod tests;

pub use outcome::ApplyOutcome;
pub use plan_writer::{PlanSpec, WrittenPlan, build_plan, net_changes, write_plan};
pub use session::{
    ApplyHost, ApplyRecord, ApplyRequest, Policies, Session, SessionError, SessionEvent,
    SessionSetup,
};
pub use silence::{Silence, SilenceEvent, SilenceMonitor};
pub use state::{
    ApplyMark, DecisionMark, Pipeline, STATE_FILE, STATE_SCHEMA, StateError, WatchState,
    WatchTotals, check_knobs,
};
