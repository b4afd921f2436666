//! Gated apply: the only path by which ModeKeeper changes a cluster. A plan is written only when the
//! kill switch is off, a signed license grants `apply`, a fresh verify report vouches for this very
//! plan on this very cluster (or the operator forced a failed verify by naming the plan's digest),
//! every object is still at the version verify saw, and the change can be rolled back. Each gate
//! has one reason code (see [`gate`]); docs/safety.md describes them and the threat model.
//!
//! The writes are JSON merge patches of `modekeeper/knob.*` annotations with a resourceVersion
//! precondition and field manager `modekeeper`; a conflict is reported, never forced. Every item is
//! audited, and `rollback_plan.json` restores the previous value of every knob that changed.
//!
//! A verify report is evidence only with a valid seal ([`seal`]: an HMAC with a key private to the
//! user), and the rollback plan plus a pending report are on disk before the first PATCH.
//!
//! Pure parts ([`gate`], [`rollback`], [`evidence`], [`kill_switch`]) decide; [`engine`] and
//! [`run`] do the I/O through `crate::k8s::ClusterApi` and `crate::artifacts`; [`one_shot`] is
//! `closed-loop run --apply` (verify, then the gated apply).

pub mod engine;
pub mod evidence;
pub mod gate;
pub mod kill_switch;
pub mod one_shot;
pub mod rollback;
pub mod run;
pub mod seal;

pub use gate::{Blocked, GateCheck};
pub use kill_switch::{KILL_SWITCH_ENV, KillSwitch};
pub use one_shot::{ActionResult, ClosedLoopApply, OneShot, OneShotOptions, closed_loop_apply};
pub use run::{
    APPLY_REPORT, APPLY_SCHEMA, ApplyEnv, ApplyOptions, ApplyOutcome, ApplyReport, ApplyResult,
    DEFAULT_MAX_VERIFY_AGE_S, ROLLBACK_PLAN, apply_plan_gated,
};
