//! `install`: prints the in-cluster controller's manifests (a YAML stream; `-o json` a List), or with
//! `--apply` sends them to the cluster by server-side apply (`--dry-run`: the server checks them and
//! stores nothing). The manifests come from [`crate::install`].

use std::io::Write;

use clap::Args;
use serde_json::{Value, json};

use super::{GlobalArgs, OutputFormat};
use crate::error::input_error;
use crate::install::{self, InstallOptions, ObjectRef};
use crate::k8s::{Cluster, ClusterApi, ConnectError, ConnectOptions};

#[derive(Debug, Args)]
#[command(
    after_help = "The controller's namespace is -n/--namespace [default: modekeeper-system]. \
                  See docs/controller.md."
)]
pub struct InstallArgs {
    /// Watch only these namespaces (comma-separated; a Role in each) instead of all (a ClusterRole)
    #[arg(long, value_name = "NS,...", value_delimiter = ',')]
    pub watch_namespace: Vec<String>,
    /// Controller image [default: ghcr.io/modekeeper/modekeeper:v<this version>]
    #[arg(long, value_name = "REF")]
    pub image: Option<String>,
    /// Controller replicas (one leader per shard applies; the others stand by)
    #[arg(long, value_name = "N", default_value_t = 2)]
    pub replicas: u32,
    /// Shards: workloads are split among replicas by UID hash, one Lease per shard
    #[arg(long, value_name = "N", default_value_t = 1)]
    pub shards: u32,
    /// Apply the manifests to the cluster (server-side apply) instead of printing them
    #[arg(long)]
    pub apply: bool,
    /// With --apply: the server validates every object and stores nothing (dryRun=All)
    #[arg(long, requires = "apply")]
    pub dry_run: bool,
}

pub fn run(global: &GlobalArgs, args: &InstallArgs) -> anyhow::Result<()> {
    let opts = InstallOptions {
        namespace: global
            .namespace
            .clone()
            .unwrap_or_else(|| install::DEFAULT_NAMESPACE.into()),
        watch_namespaces: args.watch_namespace.clone(),
        image: args.image.clone().unwrap_or_else(install::default_image),
        replicas: args.replicas,
        shards: args.shards,
    };
    let objects =
        install::manifests(&opts).map_err(|e| input_error("invalid_flags", e.to_string()))?;
    if args.apply {
        return apply(global, &objects, args.dry_run);
    }
    let mut out = std::io::stdout().lock();
    print_manifests(&mut out, global.output, &objects)
}

/// A YAML stream (text and yaml), or a `v1` List (json).
pub fn print_manifests(
    w: &mut dyn Write,
    format: OutputFormat,
    objects: &[Value],
) -> anyhow::Result<()> {
    if format == OutputFormat::Json {
        let list = json!({"apiVersion": "v1", "kind": "List", "items": objects});
        serde_json::to_writer_pretty(&mut *w, &list)?;
        writeln!(w)?;
        return Ok(());
    }
    writeln!(
        w,
        "# ModeKeeper controller manifests, printed by kubectl-modekeeper {} install.\n\
         # Apply with: kubectl apply --server-side -f <this file>. Each RBAC rule's reason is in the\n\
         # annotation modekeeper.io/rule-<nn> of its Role or ClusterRole (docs/controller.md#rbac).",
        env!("CARGO_PKG_VERSION")
    )?;
    for o in objects {
        writeln!(w, "---")?;
        w.write_all(super::output::to_yaml(o).as_bytes())?;
    }
    Ok(())
}

fn apply(global: &GlobalArgs, objects: &[Value], dry_run: bool) -> anyhow::Result<()> {
    // The manifests name their namespaces; the kubeconfig's default namespace plays no part.
    let opts = ConnectOptions::from_flags(
        global.kubeconfig.as_deref(),
        global.context.as_deref(),
        None,
        global.request_timeout,
    );
    let cluster = match Cluster::connect(&opts) {
        Ok(c) => c,
        Err(ConnectError::Config(e)) => return Err(input_error("kubeconfig", e.message)),
        Err(e @ ConnectError::Runtime(_)) => return Err(e.into()),
    };
    let suffix = if dry_run { " (server dry run)" } else { "" };
    let mut applied = vec![];
    let mut out = std::io::stdout().lock();
    for object in objects {
        let at = ObjectRef::of(object)?;
        // A dry run creates no namespace, so the server would answer 404 for everything in one
        // this run would create: say so rather than fail (kubectl apply --dry-run=server fails).
        if dry_run && let Some(ns) = &at.namespace {
            let exists = cluster
                .block_on(cluster.api().get_namespace(ns))
                .map_err(|e| anyhow::anyhow!("install: namespace {ns}: {e}"))?
                .is_some();
            if !exists {
                if global.output == OutputFormat::Text {
                    writeln!(
                        out,
                        "{} not checked (server dry run: namespace {ns} does not exist yet)",
                        at.describe()
                    )?;
                }
                continue;
            }
        }
        // The first failure stops the rest: later objects depend on earlier ones (the namespace,
        // the ServiceAccount the bindings name).
        let stored = cluster
            .server_side_apply(&at.collection_path(), &at.name, object, dry_run)
            .map_err(|e| anyhow::anyhow!("install: {}: {e}", at.describe()))?;
        if global.output == OutputFormat::Text {
            writeln!(out, "{} applied{suffix}", at.describe())?;
        }
        applied.push(stored);
    }
    if global.output != OutputFormat::Text {
        print_manifests(&mut out, global.output, &applied)?;
    }
    Ok(())
}
