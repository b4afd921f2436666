//! `doctor`: is this machine, this cluster and this trainer ready for ModeKeeper? Read-only checks
//! in order — kubeconfig and context, API reachability and version, the namespace and the workload,
//! RBAC for what verify, apply and the log source do, the trainer's wiring (knob annotations, the
//! Downward-API or ConfigMap volume that shows them to the trainer, JSON telemetry in its last log
//! lines), license and keyring, the policy lock — each pass, warn, fail or skip with the fix. Exits
//! 2 when a check fails.

use std::io::Write;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use chrono::Utc;
use clap::Args;
use serde::Serialize;
use serde_json::{Value, json};

use super::{GlobalArgs, OutputFormat};
use crate::error::input_error;
use crate::k8s::{
    AccessCheck, Cluster, ClusterApi, ConnectError, ConnectOptions, LogTarget, PodLogSource,
    RbacDenial, WorkloadRef,
};
use crate::plan::{Target, WorkloadKind};
use crate::telemetry::live::{LiveSource, Poll};
use crate::telemetry::{Format, Ingest, IngestOptions};

pub const DOCTOR_SCHEMA: &str = "doctor.v1";
/// Log lines of the trainer looked at for telemetry.
const LOG_LINES: usize = 200;
/// How long the log check waits for lines.
const LOG_WAIT: Duration = Duration::from_secs(3);

#[derive(Debug, Clone, Args)]
pub struct DoctorArgs {
    /// The training Deployment to check [default: trainer]
    #[arg(long, value_name = "NAME", conflicts_with = "statefulset")]
    pub deployment: Option<String>,
    /// Check this StatefulSet instead of a Deployment
    #[arg(long, value_name = "NAME")]
    pub statefulset: Option<String>,
    /// The license to check (default: $MODEKEEPER_LICENSE_PATH, then ~/.config/modekeeper/license.json)
    #[arg(long, value_name = "PATH")]
    pub license: Option<PathBuf>,
    /// Trust this keyring instead of the built-in production keys (default: $MODEKEEPER_KEYRING)
    #[arg(long, value_name = "PATH")]
    pub keyring: Option<PathBuf>,
    /// Directory of extra policy components and their policies.lock (default: $MODEKEEPER_POLICY_DIR)
    #[arg(long, value_name = "DIR", env = "MODEKEEPER_POLICY_DIR")]
    pub policy_dir: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Pass,
    Warn,
    Fail,
    /// Not checked: an earlier check it depends on failed.
    Skip,
}

impl Status {
    fn as_str(self) -> &'static str {
        match self {
            Status::Pass => "pass",
            Status::Warn => "warn",
            Status::Fail => "fail",
            Status::Skip => "skip",
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Check {
    pub name: &'static str,
    pub status: Status,
    pub detail: String,
    /// What to do about a warn or fail (null when there is nothing to do).
    pub fix: Option<String>,
    /// kubectl commands that fix an RBAC denial.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub commands: Vec<String>,
}

fn check(name: &'static str, status: Status, detail: impl Into<String>) -> Check {
    Check {
        name,
        status,
        detail: detail.into(),
        fix: None,
        commands: Vec::new(),
    }
}

impl Check {
    fn fix(mut self, fix: impl Into<String>) -> Check {
        self.fix = Some(fix.into());
        self
    }
}

fn target_of(args: &DoctorArgs, namespace: &str) -> anyhow::Result<Target> {
    let (name, kind) = match (&args.statefulset, &args.deployment) {
        (Some(s), _) => (s.as_str(), WorkloadKind::StatefulSet),
        (None, Some(d)) => (d.as_str(), WorkloadKind::Deployment),
        (None, None) => ("trainer", WorkloadKind::Deployment),
    };
    Target::new(namespace, name, kind).map_err(|e| input_error("bad_flag", e))
}

/// The checks that need the cluster, appended to `out`. Stops at the first failure the rest depend on.
fn cluster_checks(global: &GlobalArgs, args: &DoctorArgs, out: &mut Vec<Check>) {
    let opts = ConnectOptions::from_flags(
        global.kubeconfig.as_deref(),
        global.context.as_deref(),
        global.namespace.as_deref(),
        global.request_timeout,
    );
    let skip_rest = |out: &mut Vec<Check>, from: usize| {
        for name in &CLUSTER_CHECKS[from..] {
            out.push(check(
                name,
                Status::Skip,
                "not checked: an earlier check failed",
            ));
        }
    };
    let cluster = match Cluster::connect(&opts) {
        Ok(c) => c,
        Err(ConnectError::Config(e)) => {
            out.push(check("kubeconfig", Status::Fail, e.message).fix(
                "point --kubeconfig or KUBECONFIG at a kubeconfig and pick a context (`kubectl config use-context NAME`)",
            ));
            return skip_rest(out, 1);
        }
        Err(e) => {
            out.push(check("kubeconfig", Status::Fail, e.to_string()));
            return skip_rest(out, 1);
        }
    };
    let id = cluster.identity().clone();
    out.push(check(
        "kubeconfig",
        Status::Pass,
        format!(
            "context {}, server {}, user {}, namespace {}",
            id.context.as_deref().unwrap_or("(in-cluster)"),
            id.server,
            id.user.as_deref().unwrap_or("(service account)"),
            id.namespace
        ),
    ));
    match cluster.server_version() {
        Ok(v) => out.push(check(
            "api",
            Status::Pass,
            format!("{} answers: Kubernetes {}", id.server, v.git_version),
        )),
        Err(e) => {
            let fix = match e.kind.as_str() {
                "unauthorized" => {
                    "the credentials were refused: log in again or refresh the kubeconfig's token (`kubectl get --raw /version` shows the same)"
                }
                _ => {
                    "check the server address and the network (`kubectl cluster-info`), or raise --request-timeout"
                }
            };
            out.push(check("api", Status::Fail, e.to_string()).fix(fix));
            return skip_rest(out, 2);
        }
    }
    let target = match target_of(args, &id.namespace) {
        Ok(t) => t,
        Err(e) => {
            out.push(check("workload", Status::Fail, format!("{e:#}")));
            return skip_rest(out, 3);
        }
    };
    let api = cluster.api();
    let user = id.user.clone().unwrap_or_else(|| "<your user>".into());
    // RBAC first: a missing namespace and a forbidden GET look alike otherwise.
    let asks = [
        AccessCheck::on_workload("get", &target),
        AccessCheck::on_workload("patch", &target),
        pod_check("list", "pods", target.namespace()),
        pod_check("get", "pods/log", target.namespace()),
    ];
    let mut denied = Vec::new();
    let mut rbac_error = None;
    for a in &asks {
        match cluster.block_on(api.review_access(a)) {
            Ok(d) if d.allowed => {}
            Ok(_) => denied.push(RbacDenial::new(
                &user,
                &a.verb,
                &a.resource,
                &a.group,
                a.namespace.as_deref(),
                a.name.as_deref(),
            )),
            Err(e) => rbac_error = Some(e.to_string()),
        }
    }
    let rbac = match (rbac_error, denied.first()) {
        (Some(e), _) => check("rbac", Status::Fail, format!("cannot ask the server: {e}"))
            .fix("the server must allow SelfSubjectAccessReview (every authenticated user may by default)"),
        (None, None) => check(
            "rbac",
            Status::Pass,
            format!(
                "may get and patch {}/{} and read its pods' logs in {}",
                target.kind().resource(),
                target.name(),
                target.namespace()
            ),
        ),
        (None, Some(first)) => {
            let what: Vec<String> = denied
                .iter()
                .map(|d| format!("{} {}", d.verb, d.resource))
                .collect();
            let mut c = check(
                "rbac",
                Status::Fail,
                format!("{user} may not {} in {}", what.join(", "), target.namespace()),
            )
            .fix(first.hint.clone());
            c.commands = denied.iter().flat_map(|d| d.kubectl.clone()).collect();
            c
        }
    };
    out.push(rbac);

    match cluster.block_on(api.get_namespace(target.namespace())) {
        Ok(Some(_)) => {}
        Ok(None) => {
            out.push(
                check(
                    "workload",
                    Status::Fail,
                    format!("namespace {:?} not found", target.namespace()),
                )
                .fix("pass -n NAMESPACE, or set the context's namespace (`kubectl config set-context --current --namespace NAME`)"),
            );
            return skip_rest(out, 4);
        }
        Err(e) => {
            out.push(check("workload", Status::Fail, e.to_string()));
            return skip_rest(out, 4);
        }
    }
    let workload = match cluster.block_on(api.get_workload(&target)) {
        Ok(Some(w)) => w,
        Ok(None) => {
            out.push(
                check(
                    "workload",
                    Status::Fail,
                    format!(
                        "{}/{} not found in namespace {}",
                        target.kind().resource(),
                        target.name(),
                        target.namespace()
                    ),
                )
                .fix("name the training workload with --deployment NAME or --statefulset NAME"),
            );
            return skip_rest(out, 4);
        }
        Err(e) => {
            out.push(check("workload", Status::Fail, e.to_string()));
            return skip_rest(out, 4);
        }
    };
    out.push(check(
        "workload",
        Status::Pass,
        format!(
            "{}/{} in {} (resourceVersion {})",
            target.kind().resource(),
            target.name(),
            target.namespace(),
            workload.resource_version
        ),
    ));
    out.push(knob_check(&workload.template_annotations));
    out.push(volume_check(&workload.object["spec"]["template"]["spec"]));
    out.push(telemetry_check(&opts, &target));
}

/// The names of [`cluster_checks`], in order (for the ones skipped).
const CLUSTER_CHECKS: [&str; 7] = [
    "kubeconfig",
    "api",
    "rbac",
    "workload",
    "knob_annotations",
    "knob_volume",
    "telemetry",
];

fn pod_check(verb: &str, resource: &str, namespace: &str) -> AccessCheck {
    AccessCheck {
        verb: verb.into(),
        group: String::new(),
        resource: resource.into(),
        namespace: Some(namespace.into()),
        name: None,
    }
}

fn knob_check(annotations: &std::collections::BTreeMap<String, String>) -> Check {
    let knobs: Vec<String> = annotations
        .iter()
        .filter_map(|(k, v)| Some(format!("{}={v}", k.strip_prefix("modekeeper/knob.")?)))
        .collect();
    if knobs.is_empty() {
        check(
            "knob_annotations",
            Status::Fail,
            "the pod template has no modekeeper/knob.<knob> annotation: a plan has no starting values and the trainer reads none",
        )
        .fix("add the knobs the trainer reads to the pod template, e.g. `modekeeper/knob.grad_accum_steps: \"4\"` (docs/trainer.md)")
    } else {
        check(
            "knob_annotations",
            Status::Pass,
            format!("pod template: {}", knobs.join(", ")),
        )
    }
}

/// A Downward-API volume that exposes the pod's annotations, or a ConfigMap volume (the knobs
/// ConfigMap): how a running trainer sees new knob values.
fn volume_check(pod_spec: &Value) -> Check {
    let volumes = pod_spec["volumes"]
        .as_array()
        .map_or(&[][..], Vec::as_slice);
    let downward = volumes.iter().find(|v| {
        v["downwardAPI"]["items"].as_array().is_some_and(|items| {
            items
                .iter()
                .any(|i| i["fieldRef"]["fieldPath"] == "metadata.annotations")
        })
    });
    let config_map = volumes.iter().find(|v| v["configMap"]["name"].is_string());
    match (downward, config_map) {
        (Some(v), _) => check(
            "knob_volume",
            Status::Pass,
            format!(
                "Downward-API volume {} exposes the annotations",
                v["name"].as_str().unwrap_or("?")
            ),
        ),
        (None, Some(v)) => check(
            "knob_volume",
            Status::Pass,
            format!(
                "ConfigMap volume {} (configMap {})",
                v["name"].as_str().unwrap_or("?"),
                v["configMap"]["name"].as_str().unwrap_or("?")
            ),
        ),
        (None, None) => check(
            "knob_volume",
            Status::Fail,
            "no Downward-API volume with metadata.annotations and no ConfigMap volume: the trainer cannot see a knob change without a restart",
        )
        .fix("mount the annotations: volumes: [{name: podinfo, downwardAPI: {items: [{path: annotations, fieldRef: {fieldPath: metadata.annotations}}]}}] (docs/trainer.md)"),
    }
}

/// The last log lines of the workload's pods hold at least one telemetry record.
fn telemetry_check(opts: &ConnectOptions, target: &Target) -> Check {
    let workload = match target.kind() {
        WorkloadKind::Deployment => WorkloadRef::Deployment(target.name().into()),
        WorkloadKind::StatefulSet => WorkloadRef::StatefulSet(target.name().into()),
        WorkloadKind::Job => WorkloadRef::Job(target.name().into()),
        WorkloadKind::PyTorchJob => WorkloadRef::PyTorchJob(target.name().into()),
        WorkloadKind::JobSet => WorkloadRef::JobSet(target.name().into()),
        // A ConfigMap is never a doctor target (it has no pods); its workload is.
        WorkloadKind::ConfigMap => {
            return check("telemetry", Status::Skip, "a ConfigMap has no pods to read");
        }
    };
    let lt = LogTarget {
        namespace: Some(target.namespace().into()),
        workload,
        container: None,
        since_seconds: Some(600),
    };
    let mut src = match PodLogSource::open(opts, lt, None) {
        Ok(s) => s,
        Err(e) => {
            return check(
                "telemetry",
                Status::Fail,
                format!("cannot read the logs: {e:#}"),
            )
            .fix(
                "the pods must be running and their logs readable (`kubectl logs deployment/NAME`)",
            );
        }
    };
    let mut lines: std::collections::VecDeque<Vec<u8>> = std::collections::VecDeque::new();
    let deadline = Instant::now() + LOG_WAIT;
    while Instant::now() < deadline {
        let mut batch = Vec::new();
        match src.poll(&mut batch, Duration::from_millis(500)) {
            Ok(p) => {
                for l in batch {
                    lines.push_back(l);
                    if lines.len() > LOG_LINES {
                        lines.pop_front();
                    }
                }
                if p == Poll::Ended {
                    break;
                }
            }
            Err(e) => {
                return check(
                    "telemetry",
                    Status::Fail,
                    format!("cannot read the logs: {e:#}"),
                );
            }
        }
    }
    let mut ingest = Ingest::new(Format::Log, &IngestOptions::default());
    for l in &lines {
        ingest.push_line(l, &mut |_| {});
    }
    let stats = ingest.stats();
    if stats.records_parsed > 0 {
        check(
            "telemetry",
            Status::Pass,
            format!(
                "{} telemetry record(s) in the last {} log line(s)",
                stats.records_parsed,
                lines.len()
            ),
        )
    } else {
        check(
            "telemetry",
            Status::Fail,
            format!(
                "no telemetry record in the last {} log line(s) of {}",
                lines.len(),
                src.pods().join(", ")
            ),
        )
        .fix("print one JSON record per step to stdout, e.g. {\"step\": 10, \"step_time_ms\": 412.5, \"loss\": 2.31} (docs/trainer.md, integrations/python)")
    }
}

fn license_check(args: &DoctorArgs, out: &mut Vec<Check>) {
    let now = Utc::now().timestamp();
    let lc = crate::license::check_license_env(
        args.license.as_deref(),
        args.keyring.as_deref(),
        now,
        None,
        &["apply"],
    );
    let v = &lc.verdict;
    out.push(if v.ok {
        check(
            "license",
            Status::Pass,
            format!(
                "{} grants apply (verified with key {})",
                lc.license_path
                    .as_deref()
                    .map_or("the license".into(), |p| p.display().to_string()),
                v.verified_with_kid.as_deref().unwrap_or("?")
            ),
        )
    } else {
        check(
            "license",
            Status::Fail,
            format!("{}: {}", v.reason, v.detail.as_deref().unwrap_or("")),
        )
        .fix("apply needs a license granting `apply` (docs/licensing.md; for a test cluster, the self-signed route in docs/safety.md); plan, render and verify work without one")
    });
    let k = &lc.keyring;
    out.push(if k.is_override {
        check(
            "keyring",
            Status::Warn,
            format!(
                "override {}: licenses are checked against it, not the built-in production keys",
                k.path
                    .as_deref()
                    .map_or("?".into(), |p| p.display().to_string())
            ),
        )
        .fix("fine for a development license; unset MODEKEEPER_KEYRING / drop --keyring for production")
    } else if k.kids.is_empty() {
        check("keyring", Status::Fail, "this build embeds no production keyring")
            .fix("use a released build, or --keyring with the development keyring (docs/safety.md)")
    } else {
        check(
            "keyring",
            Status::Pass,
            format!("built-in, {} key(s)", k.kids.len()),
        )
    });
}

fn policy_check(args: &DoctorArgs) -> Check {
    match crate::policy::verify(args.policy_dir.as_deref()) {
        Ok(results) => {
            let bad: Vec<String> = results
                .iter()
                .filter(|r| r.status != "ok")
                .map(|r| format!("{} {} {}", r.name, r.version, r.status))
                .collect();
            if bad.is_empty() {
                check(
                    "policy_lock",
                    Status::Pass,
                    format!("{} component(s) match their lock", results.len()),
                )
            } else {
                check("policy_lock", Status::Fail, bad.join(", ")).fix(
                    "re-lock the directory after reviewing its components (`kubectl modekeeper policy lock --policy-dir DIR`), or restore the locked files",
                )
            }
        }
        Err(e) => check("policy_lock", Status::Fail, e.to_string())
            .fix("fix or remove the policy directory (`kubectl modekeeper policy verify`)"),
    }
}

pub fn run(global: &GlobalArgs, args: &DoctorArgs) -> anyhow::Result<()> {
    let mut checks = Vec::new();
    cluster_checks(global, args, &mut checks);
    license_check(args, &mut checks);
    checks.push(policy_check(args));
    let failed: Vec<&str> = checks
        .iter()
        .filter(|c| c.status == Status::Fail)
        .map(|c| c.name)
        .collect();
    let mut stdout = std::io::stdout().lock();
    match global.output {
        OutputFormat::Json | OutputFormat::Yaml => {
            let v =
                json!({"schema_version": DOCTOR_SCHEMA, "ok": failed.is_empty(), "checks": checks});
            crate::cli::output::print_structured(&mut stdout, global.output, &v)?;
        }
        OutputFormat::Text => {
            writeln!(stdout, "{:<17} {:<6} DETAIL", "CHECK", "STATUS")?;
            for c in &checks {
                writeln!(
                    stdout,
                    "{:<17} {:<6} {}",
                    c.name,
                    c.status.as_str(),
                    c.detail
                )?;
                if let Some(f) = &c.fix {
                    writeln!(stdout, "{:<24} fix: {f}", "")?;
                }
                for cmd in &c.commands {
                    writeln!(stdout, "{:<24}   {cmd}", "")?;
                }
            }
        }
    }
    stdout.flush()?;
    if failed.is_empty() {
        Ok(())
    } else {
        Err(input_error(
            "doctor_failed",
            format!("{} check(s) failed: {}", failed.len(), failed.join(", ")),
        ))
    }
}
