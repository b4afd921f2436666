//! Where `closed-loop watch` reads from: a file (followed or read once; stdin and gzip read once), a
//! workload's pod logs through the Kubernetes API. Each source's identity is part of the state
//! file's fingerprint, so a watch never resumes one source's cursor on another.

use serde_json::{Value, json};

use super::WatchArgs;
use super::inputs::Inputs;
use crate::cli::{GlobalArgs, SourceKind};
use crate::error::input_error;
use crate::k8s::{ConnectOptions, LogTarget, PodLogSource, WorkloadRef};
use crate::telemetry::live::{
    FollowFile, LiveSource, PromConfig, PrometheusSource, ReaderSource, parse_prom_duration,
    parse_prom_time,
};
use crate::telemetry::{Format, open_source};

/// `https://user:secret@host/` → `https://host/`: state files and reports never hold a password.
fn without_credentials(url: &str) -> String {
    match url.split_once("://") {
        Some((scheme, rest)) => {
            let host_end = rest.find('/').unwrap_or(rest.len());
            let rest = match rest[..host_end].rfind('@') {
                Some(at) => &rest[at + 1..],
                None => rest,
            };
            format!("{scheme}://{rest}")
        }
        None => url.to_string(),
    }
}

/// The Prometheus source: the config file (if any) under the flags.
fn prom_config(args: &WatchArgs) -> anyhow::Result<PromConfig> {
    let now = chrono::Utc::now().timestamp_millis();
    let bad = |e: anyhow::Error| input_error("bad_flag", format!("{e:#}"));
    let mut cfg = match &args.prom.prom_config {
        Some(p) => PromConfig::load(p).map_err(bad)?,
        None => {
            let Some(url) = &args.prom.prom_url else {
                return Err(input_error(
                    "bad_flag",
                    "--source prometheus needs --prom-url URL (or --prom-config FILE with a url)",
                ));
            };
            PromConfig::new(url, now)
        }
    };
    if let Some(u) = &args.prom.prom_url {
        cfg.url = u.clone();
    }
    if let Some(t) = &args.prom.prom_start {
        cfg.start_ms = parse_prom_time(t, now).map_err(bad)?;
    }
    if let Some(t) = &args.prom.prom_end {
        cfg.end_ms = Some(parse_prom_time(t, now).map_err(bad)?);
    }
    if let Some(s) = &args.prom.prom_step {
        cfg.step = parse_prom_duration(s).map_err(bad)?;
    }
    Ok(cfg)
}

/// The pods to stream: `--pod`, else the workload the plan targets (`--statefulset`, `--job`,
/// `--pytorchjob`, `--jobset`, else `--deployment`, default `trainer`).
fn log_target(args: &WatchArgs, global: &GlobalArgs) -> LogTarget {
    use crate::plan::WorkloadKind as K;
    let (kind, name) = args.decision.workload();
    let name = name
        .unwrap_or(super::inputs::DEFAULT_DEPLOYMENT)
        .to_string();
    let workload = match (&args.pod, kind) {
        (Some(p), _) => WorkloadRef::Pod(p.clone()),
        (None, K::StatefulSet) => WorkloadRef::StatefulSet(name),
        (None, K::Job) => WorkloadRef::Job(name),
        (None, K::PyTorchJob) => WorkloadRef::PyTorchJob(name),
        (None, K::JobSet) => WorkloadRef::JobSet(name),
        (None, _) => WorkloadRef::Deployment(name),
    };
    LogTarget {
        namespace: global.namespace.clone(),
        workload,
        container: args.container.clone(),
        since_seconds: None,
    }
}

/// What the source is, before it is opened: the part of the fingerprint that names the input.
pub(super) fn source_identity(
    args: &WatchArgs,
    global: &GlobalArgs,
    inp: &Inputs,
) -> anyhow::Result<(Value, Format)> {
    match args.telemetry.source {
        SourceKind::Prometheus => {
            let cfg = prom_config(args)?;
            Ok((
                json!({"kind": "prometheus", "url": without_credentials(&cfg.url), "step_ms": cfg.step.as_millis() as u64,
                       "queries": serde_json::to_value(&cfg.queries)?,
                       "node_labels": cfg.node_labels, "rank_label": cfg.rank_label}),
                Format::Jsonl,
            ))
        }
        SourceKind::K8s => {
            let t = log_target(args, global);
            Ok((
                json!({"kind": "k8s", "namespace": t.namespace, "workload": t.workload.to_string(),
                       "container": t.container}),
                Format::Auto,
            ))
        }
        SourceKind::File => {
            let path = &inp.spec.path;
            if path.as_os_str() == "-" {
                if args.follow {
                    return Err(input_error("bad_flag", "--follow needs a file, not stdin"));
                }
                return Ok((json!({"kind": "stdin"}), sniff_format(inp)?));
            }
            let abs = std::fs::canonicalize(path).map_err(|e| {
                input_error("not_found", format!("cannot open {}: {e}", path.display()))
            })?;
            Ok((json!({"kind": "file", "path": abs}), sniff_format(inp)?))
        }
    }
}

fn sniff_format(inp: &Inputs) -> anyhow::Result<Format> {
    if inp.spec.path.as_os_str() == "-" {
        return Ok(inp.spec.format);
    }
    Ok(open_source(&inp.spec)?.format)
}

pub(super) fn open_live(
    args: &WatchArgs,
    global: &GlobalArgs,
    inp: &Inputs,
    cursor: Option<&Value>,
) -> anyhow::Result<Box<dyn LiveSource>> {
    match args.telemetry.source {
        SourceKind::Prometheus => {
            let cfg = prom_config(args)?;
            Ok(Box::new(PrometheusSource::open(cfg, cursor).map_err(
                |e| input_error("prometheus", format!("{e:#}")),
            )?))
        }
        SourceKind::K8s => {
            let connect = ConnectOptions::from_flags(
                global.kubeconfig.as_deref(),
                global.context.as_deref(),
                global.namespace.as_deref(),
                global.request_timeout,
            );
            Ok(Box::new(PodLogSource::open(
                &connect,
                log_target(args, global),
                cursor,
            )?))
        }
        SourceKind::File => {
            let path = &inp.spec.path;
            if path.as_os_str() == "-" {
                let src = open_source(&inp.spec)?;
                return Ok(Box::new(ReaderSource::open(
                    src.reader,
                    json!({"kind": "stdin"}),
                    cursor,
                )?));
            }
            let compressed = open_source(&inp.spec)?.compressed;
            if compressed {
                if args.follow {
                    return Err(input_error(
                        "bad_flag",
                        format!(
                            "cannot --follow {}: it is compressed; follow the uncompressed log",
                            path.display()
                        ),
                    ));
                }
                let src = open_source(&inp.spec)?;
                let label = json!({"kind": "file", "path": path, "compressed": true});
                return Ok(Box::new(ReaderSource::open(src.reader, label, cursor)?));
            }
            Ok(Box::new(
                FollowFile::open(path, args.follow, cursor)
                    .map_err(|e| input_error("bad_state", format!("{e:#}")))?,
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::without_credentials;

    #[test]
    fn credentials_never_reach_the_fingerprint() {
        assert_eq!(
            without_credentials("https://u:p@prom.example:9090/x?y=@"),
            "https://prom.example:9090/x?y=@"
        );
        assert_eq!(
            without_credentials("http://127.0.0.1:9090"),
            "http://127.0.0.1:9090"
        );
    }
}
