//! `controller`: the in-cluster controller ([`crate::controller`]) as the Deployment `install`
//! writes starts it. Flags, environment, signals and the log lines on stderr live here.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Context;
use clap::Args;

use super::GlobalArgs;
use super::duration::parse_duration_ms;
use crate::controller::shards::LeaseTiming;
use crate::controller::worker::Timing;
use crate::controller::{ControllerOptions, Level, Log};
use crate::error::input_error;
use crate::k8s::ConnectOptions;

#[derive(Debug, Args)]
#[command(
    after_help = "Runs until SIGTERM or SIGINT, then checkpoints every session and hands its \
                        shards over. The controller's namespace is POD_NAMESPACE, else -n, else \
                        the kubeconfig context's; its identity POD_NAME, else the host name. \
                        See docs/controller.md."
)]
pub struct ControllerArgs {
    /// Shards: workloads are split among replicas by UID hash, one Lease per shard
    #[arg(long, value_name = "N", default_value_t = 1,
          value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub shards: u32,
    /// The settings ConfigMap in the controller's namespace
    #[arg(long, value_name = "NAME", default_value = crate::install::SETTINGS_CONFIGMAP)]
    pub settings: String,
    /// Address of /metrics, /healthz and /readyz
    #[arg(long, value_name = "ADDR:PORT", default_value = "0.0.0.0:8080")]
    pub listen: SocketAddr,
    /// Watch only these namespaces (comma-separated) instead of all
    #[arg(long, value_name = "NS,...", value_delimiter = ',')]
    pub watch_namespace: Vec<String>,
    /// Where applies write their plans and reports [default: $TMPDIR/modekeeper-controller]
    #[arg(long, value_name = "DIR")]
    pub work_dir: Option<PathBuf>,
    /// How long standbys wait, from the last renewal they saw, before taking a shard over
    #[arg(long, value_name = "DURATION", default_value = "15s", value_parser = parse_duration_ms)]
    pub lease_duration: u64,
    /// How long a leader keeps leading without a successful renewal (< --lease-duration)
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = parse_duration_ms)]
    pub renew_deadline: u64,
    /// Pause between election rounds
    #[arg(long, value_name = "DURATION", default_value = "2s", value_parser = parse_duration_ms)]
    pub retry_period: u64,
    /// How often the settings ConfigMap is read again (the kill switch: before every apply)
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = parse_duration_ms)]
    pub settings_every: u64,
    /// A session's state is saved at least this often (always after a decision)
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = parse_duration_ms)]
    pub checkpoint_every: u64,
}

fn ms(v: u64) -> Duration {
    Duration::from_millis(v)
}

fn stamp() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

pub fn run(global: &GlobalArgs, args: &ControllerArgs) -> anyhow::Result<()> {
    let leases = LeaseTiming {
        lease_duration: ms(args.lease_duration),
        renew_deadline: ms(args.renew_deadline),
        retry_period: ms(args.retry_period),
    };
    let connect = ConnectOptions::from_flags(
        global.kubeconfig.as_deref(),
        global.context.as_deref(),
        None,
        global.request_timeout,
    );
    let namespace = match std::env::var("POD_NAMESPACE")
        .ok()
        .filter(|s| !s.is_empty())
    {
        Some(ns) => ns,
        None => {
            let with_ns = ConnectOptions {
                namespace: global.namespace.clone(),
                ..connect.clone()
            };
            crate::k8s::default_namespace(&with_ns)
                .map_err(|e| input_error("kubeconfig", e.message))?
        }
    };
    let identity = std::env::var("POD_NAME")
        .ok()
        .filter(|s| !s.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok().filter(|s| !s.is_empty()))
        .unwrap_or_else(|| format!("modekeeper-{}", std::process::id()));
    let log: Log = Arc::new(|level, line| {
        let l = match level {
            Level::Info => "info",
            Level::Warn => "warning",
            Level::Error => "error",
        };
        eprintln!("{} {l}: {line}", stamp());
    });
    let default = Timing::default();
    let timing = Timing {
        checkpoint_every: ms(args.checkpoint_every),
        // A leader renews well before its deadline; half of it is what a healthy one has left.
        apply_margin: default.apply_margin.min(leases.renew_deadline / 2),
        ..default
    };
    let opts = ControllerOptions {
        connect,
        namespace,
        identity,
        shards: args.shards,
        settings_configmap: args.settings.clone(),
        listen: args.listen,
        watch_namespaces: args.watch_namespace.clone(),
        leases,
        timing,
        settings_every: ms(args.settings_every).max(Duration::from_millis(100)),
        work_dir: args
            .work_dir
            .clone()
            .unwrap_or_else(|| std::env::temp_dir().join("modekeeper-controller")),
        log: log.clone(),
    };
    crate::controller::shards::check_timing(&opts.leases)
        .map_err(|e| input_error("bad_flag", e))?;
    let flag = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, flag.clone()).context("cannot install signal handlers")?;
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the runtime")?;
    log(
        Level::Info,
        format!(
            "controller {} as {} in namespace {}, {} shard(s)",
            env!("CARGO_PKG_VERSION"),
            opts.identity,
            opts.namespace,
            opts.shards
        ),
    );
    let shutdown = async move {
        while !flag.load(Ordering::Relaxed) {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    let ran = rt.block_on(crate::controller::run(opts, shutdown));
    // A Prometheus query still on the wire (up to its timeout) holds a blocking thread that
    // dropping the runtime would wait for: every session has checkpointed, so it is left behind.
    rt.shutdown_timeout(Duration::from_secs(1));
    ran?;
    log(Level::Info, "stopped".into());
    Ok(())
}
