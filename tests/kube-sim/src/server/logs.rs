//! `GET .../pods/{name}/log`: the kubelet's answer, streamed. Follow mode keeps the response
//! open and sends lines appended later; a `DropLogStream` fault cuts it mid-stream (the client
//! sees an unexpected EOF), and closing or restarting the container ends it.

use std::collections::VecDeque;
use std::sync::Arc;

use axum::body::Body;
use axum::http::{HeaderValue, Response, header};
use chrono::Utc;
use tokio::sync::watch;

use super::Ctx;
use crate::logs::LogOptions;
use crate::resource::ResourceKind;
use crate::state::{Shared, lock};
use crate::status::ApiError;

struct Follow {
    shared: Arc<Shared>,
    key: (String, String, String),
    queue: VecDeque<String>,
    next: usize,
    instance: u64,
    rx: Option<watch::Receiver<u64>>,
    emitted: u64,
    drop_after: Option<u64>,
    bytes_left: Option<usize>,
    timestamps: bool,
    finished: bool,
}

impl Follow {
    /// Waits for new lines; false when the stream should end.
    async fn refill(&mut self) -> bool {
        let Some(rx) = self.rx.as_mut() else {
            return false;
        };
        loop {
            if rx.changed().await.is_err() {
                return false;
            }
            let store = lock(&self.shared.store);
            let (ns, pod, c) = &self.key;
            let Some(log) = store.logs.get(ns, pod, c) else {
                return false;
            };
            if log.instance != self.instance {
                // The container restarted: a follow stream ends with its container.
                return false;
            }
            for line in &log.lines[self.next..] {
                self.queue.push_back(line.render(self.timestamps));
            }
            self.next = log.lines.len();
            if log.closed {
                self.finished = true;
            }
            if !self.queue.is_empty() || self.finished {
                return true;
            }
        }
    }
}

async fn next_chunk(mut f: Follow) -> Option<(Result<bytes::Bytes, std::io::Error>, Follow)> {
    loop {
        if f.bytes_left == Some(0) {
            return None;
        }
        if f.drop_after.is_some_and(|n| f.emitted >= n) {
            // Let hyper flush the lines already produced before the connection is torn down.
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            f.drop_after = None;
            f.rx = None;
            f.queue.clear();
            f.finished = true;
            f.bytes_left = Some(0);
            return Some((
                Err(std::io::Error::other(
                    "log stream dropped by kube-sim fault",
                )),
                f,
            ));
        }
        if let Some(mut line) = f.queue.pop_front() {
            f.emitted += 1;
            if let Some(left) = f.bytes_left.as_mut() {
                if line.len() > *left {
                    let mut cut = *left;
                    while !line.is_char_boundary(cut) {
                        cut -= 1;
                    }
                    line.truncate(cut);
                }
                *left -= line.len();
            }
            return Some((Ok(bytes::Bytes::from(line)), f));
        }
        if f.finished || !f.refill().await {
            return None;
        }
    }
}

pub(crate) fn pod_log(ctx: &Ctx) -> Result<Response<Body>, ApiError> {
    let (ns, name) = (ctx.info.namespace.as_str(), ctx.info.name.as_str());
    let opts = LogOptions::parse(&ctx.query, name)?;
    let mut store = lock(&ctx.shared.store);
    let pod = store
        .get(ResourceKind::Pod, ns, name)
        .map(|s| s.value.clone())
        .ok_or_else(|| ApiError::not_found(ResourceKind::Pod, name))?;
    let names: Vec<String> = crate::objects::container_names_images(&pod["spec"])
        .into_iter()
        .map(|(n, _)| n)
        .collect();
    let container = match &opts.container {
        Some(c) if names.contains(c) => c.clone(),
        Some(c) => {
            return Err(ApiError::bad_request(format!(
                "container {c} is not valid for pod {name}"
            )));
        }
        None => match names.as_slice() {
            [one] => one.clone(),
            [] => {
                return Err(ApiError::bad_request(format!(
                    "a container name must be specified for pod {name}"
                )));
            }
            many => {
                return Err(ApiError::bad_request(format!(
                    "a container name must be specified for pod {name}, choose one of: [{}]",
                    many.join(" ")
                )));
            }
        },
    };
    let status = pod["status"]["containerStatuses"]
        .as_array()
        .and_then(|cs| cs.iter().find(|s| s["name"] == container.as_str()))
        .cloned()
        .unwrap_or_default();
    if let Some(reason) = status["state"]["waiting"]["reason"].as_str()
        && !opts.previous
    {
        return Err(ApiError::bad_request(format!(
            "container {container:?} in pod {name:?} is waiting to start: {reason}"
        )));
    }
    if opts.previous && status["restartCount"].as_u64().unwrap_or(0) == 0 {
        return Err(ApiError::bad_request(format!(
            "previous terminated container {container:?} in pod {name:?} not found"
        )));
    }
    let log = store.logs.entry(ns, name, &container);
    let instance = log.instance;
    let (lines, closed, rx) = if opts.previous {
        (&log.previous, true, None)
    } else {
        (&log.lines, log.closed, Some(log.tx.subscribe()))
    };
    let selected = opts.select(lines, Utc::now());
    let follow_running =
        opts.follow && !opts.previous && !closed && status["state"].get("running").is_some();
    let f = Follow {
        shared: ctx.shared.clone(),
        key: (ns.to_string(), name.to_string(), container.clone()),
        queue: selected.iter().map(|l| l.render(opts.timestamps)).collect(),
        next: lines.len(),
        instance,
        rx: if follow_running { rx } else { None },
        emitted: 0,
        drop_after: ctx.drop_log_after,
        bytes_left: opts.limit_bytes.map(|b| b as usize),
        timestamps: opts.timestamps,
        finished: !follow_running,
    };
    drop(store);
    let stream = futures_util::stream::unfold(f, next_chunk);
    let mut resp = Response::new(Body::from_stream(stream));
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    Ok(resp)
}
