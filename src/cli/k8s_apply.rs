//! `k8s apply --plan P --out D`: the gated write. Kill switches (environment, file, the workloads'
//! annotation), the passport the plan was made under (`--passport`, default the built-in template
//! the plan names), license (`apply`), a sealed verify report for this plan and cluster
//! (`--verify-report`, default `D/k8s_verify_latest.json`, at most `--max-verify-age` old), verify ok
//! (or `--force --confirm-plan-digest sha256:…`), objects unchanged since verify; then, with the
//! rollback plan already on disk, one merge patch per item. Writes `k8s_apply.v1` and
//! `rollback_plan.json`. Exit 0 applied, 2 blocked or invalid input (an invalid plan, passport or
//! kubeconfig leaves only explain events), 1 a cluster or I/O failure during the apply.

use std::io::Write;
use std::path::PathBuf;

use chrono::Duration;
use clap::Args;
use serde_json::json;

use super::closed_loop::inputs::load_passport;
use super::k8s::{check_plan_namespace, load_plan_file};
use super::{GlobalArgs, OutputFormat, parse_duration_ms};
use crate::apply::{
    ApplyEnv, ApplyOptions, ApplyOutcome, ApplyResult, DEFAULT_MAX_VERIFY_AGE_S, apply_plan_gated,
};
use crate::artifacts::{ExplainLog, OutDir};
use crate::k8s::{Cluster, ConnectOptions};
use crate::passport::{Passport, template};

#[derive(Debug, Clone, Args)]
pub struct ApplyArgs {
    /// The plan: a JSON array of items, a k8s_plan.v1 envelope, or one item
    #[arg(long, short = 'f', visible_alias = "filename", value_name = "PATH")]
    pub plan: PathBuf,
    /// Directory for the report, the rollback plan and explain.jsonl
    #[arg(long, value_name = "DIR", default_value = "report")]
    pub out: PathBuf,
    /// The k8s verify report to trust (default: OUT/k8s_verify_latest.json)
    #[arg(long, value_name = "PATH")]
    pub verify_report: Option<PathBuf>,
    /// How old the verify report may be
    #[arg(long, value_name = "DURATION", default_value = "15m", value_parser = parse_duration_ms)]
    pub max_verify_age: u64,
    /// Apply even though verify was not ok (never skips the kill switch, the license, a missing,
    /// foreign or old verify report, or a changed object); needs --confirm-plan-digest
    #[arg(long, requires = "confirm_plan_digest")]
    pub force: bool,
    /// The plan's digest (sha256:…), confirming which plan --force applies
    #[arg(long, value_name = "DIGEST", requires = "force")]
    pub confirm_plan_digest: Option<String>,
    /// The license file (default: $MODEKEEPER_LICENSE_PATH, then ~/.config/modekeeper/license.json)
    #[arg(long, value_name = "PATH")]
    pub license: Option<PathBuf>,
    /// Trust this keyring instead of the built-in production keys (recorded in the report);
    /// also MODEKEEPER_KEYRING
    #[arg(long, value_name = "PATH")]
    pub keyring: Option<PathBuf>,
    /// The passport (template name or file) the plan was made under; it must be the one the plan
    /// records (by digest), allow apply (gates.apply) and bound every planned value. Default: the
    /// built-in template the plan names, if any
    #[arg(long, value_name = "NAME|PATH")]
    pub passport: Option<String>,
}

/// `--passport`, else the built-in template of the name the plan records when its digest matches;
/// else none (the gate then blocks a plan that names a passport).
fn resolve_passport(
    args: &ApplyArgs,
    plan: &crate::plan::Plan,
) -> anyhow::Result<(Option<Passport>, Option<String>)> {
    if let Some(what) = &args.passport {
        let (p, source) = load_passport(what)?;
        return Ok((Some(p), Some(source)));
    }
    let Some(named) = plan.passport() else {
        return Ok((None, None));
    };
    match template(&named.name) {
        Some(Ok(p)) if p.digest() == named.sha256 => Ok((
            Some(p),
            Some(format!("template:{} (named by the plan)", named.name)),
        )),
        _ => Ok((None, None)),
    }
}

pub fn run(global: &GlobalArgs, args: &ApplyArgs) -> anyhow::Result<()> {
    let env = ApplyEnv::from_process();
    let mut explain = ExplainLog::open(&args.out)?;
    explain.event(
        "k8s_apply_start",
        json!({"plan": args.plan, "out": args.out, "force": args.force}),
    )?;
    let (plan, _) = match load_plan_file(&args.plan) {
        Ok(p) => p,
        Err(f) => {
            explain.event(
                "k8s_apply_error",
                json!({"kind": f.kind, "plan": args.plan, "error": f.message, "index": f.index}),
            )?;
            return Err(f.into_error());
        }
    };
    if let Err(e) = check_plan_namespace(global.namespace.as_deref(), &plan) {
        explain.event(
            "k8s_apply_error",
            json!({"kind": "namespace_mismatch", "plan": args.plan, "error": e.to_string()}),
        )?;
        return Err(e);
    }
    let (passport, passport_source) = match resolve_passport(args, &plan) {
        Ok(p) => p,
        Err(e) => {
            explain.event(
                "k8s_apply_error",
                json!({"kind": "bad_passport", "plan": args.plan, "error": format!("{e:#}")}),
            )?;
            return Err(e);
        }
    };
    let opts = ApplyOptions {
        plan_path: args.plan.clone(),
        verify_report: args.verify_report.clone(),
        max_verify_age: Duration::milliseconds(
            i64::try_from(args.max_verify_age).unwrap_or(DEFAULT_MAX_VERIFY_AGE_S * 1000),
        ),
        force: args
            .force
            .then(|| args.confirm_plan_digest.clone().unwrap_or_default()),
        license: args.license.clone(),
        keyring: args.keyring.clone(),
        advanced_chords: false,
        passport,
        passport_source,
    };
    let connect = || {
        Cluster::connect(&ConnectOptions::from_flags(
            global.kubeconfig.as_deref(),
            global.context.as_deref(),
            global.namespace.as_deref(),
            global.request_timeout,
        ))
    };
    let out = OutDir::create(&args.out, env.now)?.keep(global.keep);
    let outcome = apply_plan_gated(&plan, &opts, &env, connect, &out, &mut explain)?;
    print_summary(global, &outcome)?;
    outcome.into_result()
}

fn print_summary(global: &GlobalArgs, o: &ApplyOutcome) -> anyhow::Result<()> {
    let mut stdout = std::io::stdout().lock();
    let r = &o.report;
    match global.output {
        OutputFormat::Json | OutputFormat::Yaml => {
            crate::cli::output::print_structured(&mut stdout, global.output, r)?;
        }
        OutputFormat::Text => {
            match &o.result {
                ApplyResult::Applied => writeln!(
                    stdout,
                    "applied {} ({} item{}, {} changed)",
                    r.k8s_plan_path.display(),
                    r.k8s_plan_items,
                    if r.k8s_plan_items == 1 { "" } else { "s" },
                    r.changed_items.len()
                )?,
                ApplyResult::Blocked(b) => {
                    writeln!(stdout, "apply blocked: {} (gate {})", b.reason, b.gate)?
                }
                ApplyResult::Failed(_) => {
                    writeln!(stdout, "apply FAILED; items changed: {:?}", r.changed_items)?
                }
            }
            for a in r.actions.iter().filter(|a| a.patch_attempted) {
                writeln!(
                    stdout,
                    "  {}/{} -n {}: {:?}",
                    a.kind.to_lowercase(),
                    a.name,
                    a.namespace,
                    a.status
                )?;
            }
            if let Some(p) = &r.rollback_plan_path {
                writeln!(stdout, "  rollback  {}", p.display())?;
            }
            if r.keyring.as_ref().is_some_and(|k| k.is_override) {
                writeln!(
                    stdout,
                    "  keyring   OVERRIDE (not the built-in production keys)"
                )?;
            }
            writeln!(stdout, "  report    {}", o.latest_path.display())?;
        }
    }
    Ok(())
}
