//! The one plan-and-script writer of the loop: `closed-loop run`'s plan, `closed-loop watch`'s
//! per-decision plans and its net-change plan at the end (and the controller's) are built and
//! written here, so they cannot drift apart.

use std::collections::BTreeMap;
use std::path::PathBuf;

use crate::artifacts::{OutDir, make_executable};
use crate::closed_loop::net_change;
use crate::envelope::Accepted;
use crate::passport::Passport;
use crate::plan::{
    KUBECTL_SCRIPT, Plan, PlanPassport, Target, build_passport_plan, render_kubectl_script,
};

/// What a plan targets and is bounded by.
#[derive(Debug, Clone, Copy)]
pub struct PlanSpec<'a> {
    pub target: &'a Target,
    pub passport: &'a Passport,
    /// The knobs ConfigMap, when not `<workload>-modekeeper-knobs`.
    pub knobs_configmap: Option<&'a str>,
}

/// A plan written to disk.
#[derive(Debug, Clone)]
pub struct WrittenPlan {
    pub plan: Plan,
    /// The document's bytes, as written.
    pub document: String,
    pub path: PathBuf,
    /// The kubectl review script, when asked for.
    pub script: Option<PathBuf>,
}

/// `after`'s values that differ from `before` as envelope verdicts (what a plan carries), each with
/// its chord and `reason`.
pub fn net_changes(
    before: &BTreeMap<String, f64>,
    after: &BTreeMap<String, f64>,
    chord_of: impl Fn(&str) -> String,
    reason: &str,
) -> Vec<Accepted> {
    net_change(before, after)
        .map(|(k, from, to)| Accepted {
            knob: k.clone(),
            from,
            to,
            reason: reason.to_string(),
            chord: chord_of(k),
            limited_by: None,
            requested: None,
        })
        .collect()
}

/// The plan of `changes` under `spec` (with the passport it was decided under).
pub fn build_plan(spec: PlanSpec<'_>, changes: &[Accepted]) -> anyhow::Result<Plan> {
    Ok(
        build_passport_plan(spec.target, changes, spec.passport, spec.knobs_configmap)
            .map_err(|e| anyhow::anyhow!("cannot build the plan: {e}"))?
            .with_passport(PlanPassport::of(spec.passport)),
    )
}

/// Builds the plan of `changes` and writes it to `out` as `name`; with `script`, also its kubectl
/// review script (`k8s_plan.kubectl.sh`, executable).
pub fn write_plan(
    out: &OutDir,
    spec: PlanSpec<'_>,
    changes: &[Accepted],
    name: &str,
    script: bool,
) -> anyhow::Result<WrittenPlan> {
    let plan = build_plan(spec, changes)?;
    let document = plan.to_document();
    let path = out.write_text(name, &document)?;
    let script = if script {
        let p = out.write_text(KUBECTL_SCRIPT, &render_kubectl_script(&plan))?;
        make_executable(&p)?;
        Some(p)
    } else {
        None
    };
    Ok(WrittenPlan {
        plan,
        document,
        path,
        script,
    })
}
