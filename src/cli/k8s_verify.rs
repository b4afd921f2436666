//! `k8s verify --plan P --out D`: checks a plan against the cluster, read-only, and writes the
//! `k8s_verify.v1` report (`k8s_verify_<ts>.json`, `k8s_verify_latest.json`) whether or not it is ok.
//! Exit 0 when verify is ok, 2 when it found a blocker (the report is written) and for an invalid plan,
//! a plan for another namespace than -n, or an unusable kubeconfig/flags (nothing but explain events
//! is written), 1 when the report cannot be written.

use std::io::Write;
use std::path::PathBuf;
use std::time::Instant;

use chrono::{SecondsFormat, Utc};
use clap::Args;
use clap::builder::TypedValueParser;
use serde_json::json;

use super::k8s::{check_plan_namespace, load_plan_file};
use super::{GlobalArgs, OutputFormat};
use crate::artifacts::{ExplainLog, OutDir};
use crate::error::input_error;
use crate::k8s::verify::{
    DEFAULT_CONCURRENCY, ItemCheck, PlanFacts, Timings, VERIFY_REPORT, VerifyReport, VerifySettings,
};
use crate::k8s::{Cluster, ConnectError, ConnectOptions};

#[derive(Debug, Clone, Args)]
pub struct VerifyArgs {
    /// The plan: a JSON array of items, a k8s_plan.v1 envelope, or one item
    #[arg(long, short = 'f', visible_alias = "filename", value_name = "PATH")]
    pub plan: PathBuf,
    /// Directory for the report and explain.jsonl
    #[arg(long, value_name = "DIR", default_value = "report")]
    pub out: PathBuf,
    /// Plan items checked at once
    #[arg(long, value_name = "N", default_value_t = DEFAULT_CONCURRENCY,
          value_parser = clap::value_parser!(u16).range(1..=64).map(usize::from))]
    pub concurrency: usize,
}

pub fn run(global: &GlobalArgs, args: &VerifyArgs) -> anyhow::Result<()> {
    let started = Utc::now();
    let clock = Instant::now();
    let mut explain = ExplainLog::open(&args.out)?;
    explain.event(
        "k8s_verify_start",
        json!({"plan": args.plan, "out": args.out}),
    )?;
    let (plan, format) = match load_plan_file(&args.plan) {
        Ok(p) => p,
        Err(f) => {
            explain.event(
                "k8s_verify_error",
                json!({"kind": f.kind, "plan": args.plan, "error": f.message, "index": f.index}),
            )?;
            return Err(f.into_error());
        }
    };
    if let Err(e) = check_plan_namespace(global.namespace.as_deref(), &plan) {
        explain.event(
            "k8s_verify_error",
            json!({"kind": "namespace_mismatch", "plan": args.plan, "error": e.to_string()}),
        )?;
        return Err(e);
    }
    let opts = ConnectOptions::from_flags(
        global.kubeconfig.as_deref(),
        global.context.as_deref(),
        global.namespace.as_deref(),
        global.request_timeout,
    );
    let cluster = match Cluster::connect(&opts) {
        Ok(c) => c,
        Err(ConnectError::Config(e)) => {
            explain.event(
                "k8s_verify_error",
                json!({"kind": "kubeconfig", "plan": args.plan, "error": e.message}),
            )?;
            return Err(input_error("kubeconfig", e.message));
        }
        Err(e @ ConnectError::Runtime(_)) => return Err(e.into()),
    };

    let outcome = cluster.verify(&plan, args.concurrency);
    let finished = Utc::now();
    for item in &outcome.items {
        explain.event(
            "k8s_verify_checked",
            json!({"index": item.index, "namespace": item.namespace, "name": item.name,
                   "kind": item.kind, "checked": item.checked, "ok": item.ok,
                   "blocker": item.blocker, "resource_version": item.resource_version}),
        )?;
    }
    let format = serde_json::to_value(format)?;
    let facts = PlanFacts::of(&plan, &args.plan, format.as_str().unwrap_or_default());
    let report = VerifyReport::new(
        outcome,
        cluster.identity().clone(),
        facts,
        started.to_rfc3339_opts(SecondsFormat::Millis, true),
        finished.to_rfc3339_opts(SecondsFormat::Millis, true),
        VerifySettings {
            concurrency: args.concurrency,
            request_timeout_ms: opts.request_timeout.map(|d| d.as_millis() as u64),
        },
        Timings {
            elapsed_ms: clock.elapsed().as_millis() as u64,
            requests: cluster.api().requests(),
        },
    );
    let out = OutDir::create(&args.out, started)?.keep(global.keep);
    let (sealed, unsealed) = crate::apply::seal::seal_with_user_key(&report)?;
    if let Some(why) = &unsealed {
        eprintln!("warning: the verify report is not sealed ({why}); k8s apply will not accept it");
        explain.event("k8s_verify_unsealed", json!({"error": why}))?;
    }
    let (stamped, latest) = out.write_report(VERIFY_REPORT, &sealed)?;
    explain.event(
        "k8s_verify_report",
        json!({"path": stamped, "latest": latest, "ok": report.ok,
               "verify_blocker": report.verify_blocker, "plan_digest": report.plan_digest,
               "context": report.cluster.context, "server": report.cluster.server,
               "user": report.cluster.user}),
    )?;

    let mut stdout = std::io::stdout().lock();
    match global.output {
        OutputFormat::Json | OutputFormat::Yaml => {
            crate::cli::output::print_structured(&mut stdout, global.output, &sealed)?;
        }
        OutputFormat::Text => print_text(&mut stdout, &report, &latest)?,
    }
    // A check that finds a blocker fails the command, like `kubectl auth can-i` (the report is
    // written above either way).
    if let Some(b) = &report.verify_blocker {
        return Err(input_error(
            "verify_blocked",
            format!(
                "verify blocked ({}): {} (report {})",
                b.kind.as_str(),
                b.detail,
                latest.display()
            ),
        ));
    }
    Ok(())
}

fn yes_no(v: Option<bool>) -> &'static str {
    match v {
        Some(true) => "yes",
        Some(false) => "no",
        None => "?",
    }
}

fn item_line(item: &ItemCheck) -> String {
    let head = format!(
        "{}/{} -n {}",
        item.kind.to_lowercase(),
        item.name,
        item.namespace
    );
    if !item.checked {
        return format!("{head}: not checked");
    }
    let changes: Vec<String> = item
        .knobs
        .iter()
        .map(|(k, v)| {
            format!(
                "{k} {} -> {}",
                v.current.as_deref().unwrap_or("unset"),
                v.planned.as_deref().unwrap_or("unset")
            )
        })
        .collect();
    let state = match item.blocker {
        None => "ok".to_string(),
        Some(b) => b.as_str().to_string(),
    };
    format!(
        "{head}: {state}; rv {}, can-i get {}, patch {}, dry run {}; {}",
        item.resource_version.as_deref().unwrap_or("-"),
        yes_no(item.can_i_get),
        yes_no(item.can_i_patch),
        match (item.dry_run.attempted, item.dry_run.ok) {
            (false, _) => "not attempted",
            (true, true) => "ok",
            (true, false) => "refused",
        },
        changes.join(", ")
    )
}

fn print_text(
    w: &mut impl Write,
    report: &VerifyReport,
    latest: &std::path::Path,
) -> std::io::Result<()> {
    let c = &report.cluster;
    let server = match &report.checks.server.version {
        Some(v) => format!("{}, {v}", c.server),
        None => c.server.clone(),
    };
    let context = c.context.as_deref().unwrap_or("in-cluster");
    match &report.verify_blocker {
        None => writeln!(
            w,
            "verify ok: {} item{} on context {context} ({server})",
            report.plan_items,
            if report.plan_items == 1 { "" } else { "s" }
        )?,
        Some(b) => {
            let at = match (b.index, &b.namespace, &b.name) {
                (Some(i), Some(ns), Some(n)) => format!(" item {i} ({n} -n {ns}):"),
                _ => String::new(),
            };
            writeln!(
                w,
                "verify BLOCKED ({}) on context {context} ({server}):{at} {}",
                b.kind.as_str(),
                b.detail
            )?;
        }
    }
    for item in report.checks.items.iter().take(50) {
        writeln!(w, "  {}", item_line(item))?;
    }
    if report.checks.items.len() > 50 {
        writeln!(
            w,
            "  ... {} more in the report",
            report.checks.items.len() - 50
        )?;
    }
    if let Some(r) = &report.details.rbac {
        writeln!(w, "  hint    {}", r.hint)?;
        for cmd in &r.kubectl {
            writeln!(w, "          {cmd}")?;
        }
    }
    if report.blockers.len() > 1 {
        writeln!(
            w,
            "  blockers {} (all in the report)",
            report.blockers.len()
        )?;
    }
    writeln!(w, "  digest  {}", report.plan_digest)?;
    writeln!(w, "  report  {}", latest.display())
}
