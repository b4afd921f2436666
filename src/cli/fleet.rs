//! `fleet`: the workloads that opted in to the controller and what each session is doing, read from
//! the cluster (the workloads of every supported kind, the state ConfigMaps in the controller's
//! namespace) and joined by [`crate::controller::fleet`]. A kind the user may not list, or the
//! state when it cannot be read, is one warning line on stderr, not a failure of the whole listing.

use clap::Args;

use super::{GlobalArgs, OutputFormat, output};
use crate::controller::fleet::{self, ENABLED_LABEL, FLEET_SCHEMA, FleetReport, FleetWorkload};
use crate::controller::store::{STATE_LABEL, WorkloadSummary, summary_from_configmap};
use crate::error::input_error;
use crate::k8s::{
    Cluster, ClusterError, ClusterErrorKind, ConnectError, ConnectOptions, KubeCluster,
    default_namespace,
};
use crate::plan::WorkloadKind;

#[derive(Debug, Args)]
#[command(
    after_help = "Lists the workloads labelled modekeeper.io/enabled=true in the namespace \
                        (-n, else the kubeconfig context's) or, with -A, in all namespaces, with \
                        the controller's session of each. See docs/controller.md#fleet."
)]
pub struct FleetArgs {
    /// List the workloads of every namespace (-n is then ignored, as with kubectl get)
    #[arg(short = 'A', long)]
    pub all_namespaces: bool,
    /// The controller's namespace, where its state ConfigMaps are
    #[arg(long, value_name = "NS", default_value = crate::install::DEFAULT_NAMESPACE)]
    pub controller_namespace: String,
    /// Also list sessions whose workload is gone or no longer opted in (as stopped)
    #[arg(long)]
    pub all: bool,
}

/// A failed read that leaves the rest of the listing meaningful: a permission missing (403) or a
/// resource the server does not have (404).
fn partial(e: &ClusterError) -> bool {
    matches!(
        e.kind,
        ClusterErrorKind::Forbidden | ClusterErrorKind::NotFound
    )
}

fn scope(ns: Option<&str>) -> String {
    ns.map_or("in all namespaces".into(), |ns| {
        format!("in namespace {ns}")
    })
}

/// The opted-in workloads of every kind, and warnings for kinds that could not be listed.
async fn workloads(
    kc: &KubeCluster,
    ns: Option<&str>,
    warnings: &mut Vec<String>,
) -> anyhow::Result<Vec<FleetWorkload>> {
    let selector = format!("{ENABLED_LABEL}=true");
    let mut out = vec![];
    for kind in WorkloadKind::ALL.into_iter().filter(|k| k.is_workload()) {
        match kc.list_labelled(kind, ns, &selector).await {
            Ok(list) => out.extend(list.into_iter().map(|w| {
                FleetWorkload {
                    kind,
                    namespace: w.target.namespace().to_string(),
                    name: w.target.name().to_string(),
                    created_at: w.object["metadata"]["creationTimestamp"]
                        .as_str()
                        .map(str::to_string),
                    uid: w.uid,
                }
            })),
            Err(e) if partial(&e) => warnings.push(format!(
                "cannot list {} {} ({}), skipped: {}",
                crate::k8s::kinds::spec(kind).qualified_resource(),
                scope(ns),
                e.kind,
                e.message
            )),
            Err(e) => return Err(anyhow::anyhow!("fleet: {e}")),
        }
    }
    Ok(out)
}

/// The session summaries in the controller's namespace (`None` when they cannot be read), with a
/// warning per refused state ConfigMap.
async fn summaries(
    kc: &KubeCluster,
    controller_ns: &str,
    warnings: &mut Vec<String>,
) -> anyhow::Result<Option<Vec<WorkloadSummary>>> {
    let cms = match kc
        .list_configmaps(controller_ns, &format!("{STATE_LABEL}=true"))
        .await
    {
        Ok(cms) => cms,
        Err(e) if partial(&e) => {
            warnings.push(format!(
                "cannot read the controller's state in namespace {controller_ns} ({}), sessions not shown: {}",
                e.kind, e.message
            ));
            return Ok(None);
        }
        Err(e) => return Err(anyhow::anyhow!("fleet: {e}")),
    };
    let mut out = vec![];
    for cm in &cms {
        match summary_from_configmap(cm) {
            Ok(s) => out.push(s),
            Err(e) => warnings.push(format!("{e}; not shown")),
        }
    }
    Ok(Some(out))
}

pub fn run(global: &GlobalArgs, args: &FleetArgs) -> anyhow::Result<()> {
    let opts = ConnectOptions::from_flags(
        global.kubeconfig.as_deref(),
        global.context.as_deref(),
        global.namespace.as_deref(),
        global.request_timeout,
    );
    let namespace = if args.all_namespaces {
        None
    } else {
        Some(default_namespace(&opts).map_err(|e| input_error("kubeconfig", e.message))?)
    };
    let cluster = match Cluster::connect(&opts) {
        Ok(c) => c,
        Err(ConnectError::Config(e)) => return Err(input_error("kubeconfig", e.message)),
        Err(e @ ConnectError::Runtime(_)) => return Err(e.into()),
    };
    let kc = cluster.api();
    let mut warnings = vec![];
    let (workloads, summaries) = cluster.block_on(async {
        let w = workloads(kc, namespace.as_deref(), &mut warnings).await?;
        let s = summaries(kc, &args.controller_namespace, &mut warnings).await?;
        anyhow::Ok((w, s))
    })?;
    for w in &warnings {
        eprintln!("warning: {w}");
    }
    let items = fleet::join(
        &workloads,
        summaries.as_deref(),
        namespace.as_deref(),
        args.all,
    );
    let mut out = std::io::stdout().lock();
    if global.output == OutputFormat::Text {
        use std::io::Write;
        if items.is_empty() {
            // kubectl get's wording, on stderr like kubectl.
            eprintln!(
                "No opted-in workloads found {}.",
                scope(namespace.as_deref())
            );
            return Ok(());
        }
        out.write_all(fleet::table(&items, chrono::Utc::now()).as_bytes())?;
        return Ok(());
    }
    let report = FleetReport {
        schema_version: FLEET_SCHEMA.into(),
        controller_namespace: args.controller_namespace.clone(),
        namespace,
        items,
        warnings,
    };
    output::print_structured(&mut out, global.output, &report)
}
