//! The chord-policy host: runs chord policies (WebAssembly components of the `modekeeper:policy`
//! world, wit/) in wasmtime, sandboxed, and gives the pipeline plain decisions.
//!
//! The rest of the code sees [`PolicyHost`] → [`Policy::evaluate`] → [`Decision`] (or a
//! [`PolicySet`] of several policies → [`WindowDecision`]); this module is the only one that names
//! wasmtime. Each evaluation gets a fresh instance with a memory cap, fuel and a wall-clock deadline,
//! and no imports at all (no WASI). Whatever a policy does — trap, loop, allocate, return garbage —
//! becomes a recorded failed decision that proposes nothing; proposals outside the passport's limits
//! are blocked here, before the envelope ever sees them. Metadata is read from the component's
//! custom section before compiling; compiled code is cached on disk by engine and component digest.

mod bindings;
mod cache;
mod check;
mod convert;
mod error;
mod host;
mod metadata;
mod registry;
mod score;
mod set;
mod types;

pub use cache::{default_cache_dir, sha256_hex};
pub use check::{MAX_NOTES, MAX_PROPOSALS, MAX_STATE_BYTES, MAX_TEXT_BYTES, check_decision};
pub use error::PolicyError;
pub use host::{Policy, PolicyHost, SandboxLimits};
pub use metadata::{
    METADATA_SECTION, PolicyMetadata, WIT_V1_0_0, component_surface, read_metadata,
};
pub use registry::{
    DEFAULT_POLICY, LOCK_FILE, Lock, LockEntry, Origin, PolicyCatalog, PolicySource, VerifyResult,
    add_policy, default_policy_dir, lock_dir, verify,
};
pub use score::{Labels, RegimeRecall, Scorer, Segment, SegmentScore, TestReport, expected_chords};
pub use set::{PolicySet, WindowDecision, merge};
pub use types::{
    Blocked, Decision, EvalCost, Evaluation, FailureKind, KnobLimit, Knobs, Limits, NORMAL_HOLD,
    PolicyFailure, PolicyRef, PolicyState, Proposal, RawDecision, RawProposal,
};
