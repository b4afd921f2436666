//! Where `closed-loop watch` reads from: a file (followed or read once; stdin and gzip read once), a
//! workload's pod logs through the Kubernetes API. Each source's identity is part of the state
//! file's fingerprint, so a watch never resumes one source's cursor on another.

use serde_json::{Value, json};

use super::WatchArgs;
use super::inputs::Inputs;
use crate::cli::{GlobalArgs, SourceKind};
use crate::error::input_error;
use crate::k8s::{ConnectOptions, LogTarget, PodLogSource, WorkloadRef};
use crate::telemetry::live::{FollowFile, LiveSource, ReaderSource};
use crate::telemetry::{Format, open_source};

/// The pods to stream: `--pod`, else the workload the plan targets (`--statefulset`, else
/// `--deployment`, default `trainer`).
fn log_target(args: &WatchArgs, global: &GlobalArgs) -> LogTarget {
    let workload = match (&args.pod, &args.statefulset, &args.deployment) {
        (Some(p), _, _) => WorkloadRef::Pod(p.clone()),
        (None, Some(s), _) => WorkloadRef::StatefulSet(s.clone()),
        (None, None, d) => WorkloadRef::Deployment(
            d.clone()
                .unwrap_or_else(|| super::inputs::DEFAULT_DEPLOYMENT.to_string()),
        ),
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
        SourceKind::K8s => {
            let t = log_target(args, global);
            Ok((
                json!({"kind": "k8s", "namespace": t.namespace, "workload": t.workload.to_string(),
                       "container": t.container}),
                Format::Log,
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
        return Ok(match inp.spec.format {
            Format::Auto => Format::Log,
            f => f,
        });
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
