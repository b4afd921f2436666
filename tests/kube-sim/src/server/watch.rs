//! `?watch=true` on list endpoints: newline-delimited `{"type", "object"}` events.
//!
//! Without `resourceVersion` (or with `0`) a watch starts with an ADDED event per matching
//! object; with one it replays the stored changes after it (or answers an ERROR event with a
//! 410 Expired Status when history no longer reaches back that far). It then streams changes
//! until `timeoutSeconds` (default 30 minutes) or the client goes away. As in the apiserver's
//! watch cache, an object that starts matching a selector is ADDED and one that stops matching
//! is DELETED. With `allowWatchBookmarks=true` a BOOKMARK (kind, apiVersion and the latest
//! resourceVersion only) is sent every bookmark interval and just before the timeout; with
//! `sendInitialEvents=true` the initial ADDED events end with a bookmark annotated
//! `k8s.io/initial-events-end` (the streaming list of kube-runtime's watcher).

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{HeaderValue, Response, header};
use serde_json::{Value, json};

use super::records::View;
use super::{Ctx, negotiate, table};
use crate::resource::ResourceKind;
use crate::selector::{FieldSelector, LabelSelector};
use crate::state::{Shared, lock};
use crate::status::{ApiError, FieldError};
use crate::store::Event;
use crate::store::Store;

struct Filter {
    kind: ResourceKind,
    view: View,
    namespace: Option<String>,
    labels: LabelSelector,
    fields: FieldSelector,
    table: bool,
}

impl Filter {
    fn matches(&self, kind: ResourceKind, ns: &str, object: &Value) -> bool {
        kind == self.kind
            && self.namespace.as_deref().is_none_or(|want| want == ns)
            && self.labels.matches(&object["metadata"]["labels"])
            && self.fields.matches(object)
    }

    fn line(&self, event_type: &str, object: &Value) -> String {
        let object = self.view.outgoing(object.clone());
        let object = if self.table {
            table::table(self.kind, std::slice::from_ref(&object), None)
        } else {
            object
        };
        format!("{}\n", json!({"type": event_type, "object": object}))
    }
}

struct WatchState {
    shared: Arc<Shared>,
    filter: Filter,
    queue: VecDeque<String>,
    last_rv: u64,
    rx: tokio::sync::watch::Receiver<u64>,
    deadline: tokio::time::Instant,
    /// Next BOOKMARK, when the client allows them.
    next_bookmark: Option<tokio::time::Instant>,
    bookmark_interval: Duration,
    ended: bool,
}

impl WatchState {
    /// Every stored object the filter matches, as ADDED (a watch without a resourceVersion, or
    /// the initial events of a streaming list).
    fn add_current(&mut self, store: &Store, kind: ResourceKind, ns: Option<&str>) {
        for s in store.list(kind, ns) {
            let obj_ns = s.value["metadata"]["namespace"]
                .as_str()
                .unwrap_or_default();
            if self.filter.matches(kind, obj_ns, &s.value) {
                self.queue.push_back(self.filter.line("ADDED", &s.value));
            }
        }
    }

    fn take(&mut self, events: Vec<Event>) {
        for e in events {
            self.last_rv = self.last_rv.max(e.rv);
            let now = self.filter.matches(e.kind, &e.namespace, &e.object);
            let before = e
                .previous
                .as_ref()
                .is_some_and(|p| self.filter.matches(e.kind, &e.namespace, p));
            let line = match (e.event_type, before, now) {
                ("MODIFIED", false, true) => self.filter.line("ADDED", &e.object),
                // As the watch cache: the object as it last matched, at the change's version.
                ("MODIFIED", true, false) => {
                    let mut last = e.previous.clone().unwrap_or_default();
                    last["metadata"]["resourceVersion"] = json!(e.rv.to_string());
                    self.filter.line("DELETED", &last)
                }
                (t, _, true) => self.filter.line(t, &e.object),
                _ => continue,
            };
            self.queue.push_back(line);
        }
    }

    fn bookmark(&self, initial_events_end: bool) -> String {
        let mut metadata = json!({"resourceVersion": self.last_rv.to_string()});
        if initial_events_end {
            metadata["annotations"] = json!({"k8s.io/initial-events-end": "true"});
        }
        let object = json!({
            "kind": self.filter.kind.kind(),
            "apiVersion": self.filter.view.api_version(self.filter.kind),
            "metadata": metadata,
        });
        format!("{}\n", json!({"type": "BOOKMARK", "object": object}))
    }
}

async fn next_event(
    mut w: WatchState,
) -> Option<(Result<bytes::Bytes, std::io::Error>, WatchState)> {
    loop {
        if let Some(line) = w.queue.pop_front() {
            return Some((Ok(bytes::Bytes::from(line)), w));
        }
        if w.ended {
            return None;
        }
        tokio::select! {
            changed = w.rx.changed() => {
                if changed.is_err() {
                    return None;
                }
                let events = lock(&w.shared.store).events_since(w.last_rv);
                match events {
                    Some(events) => w.take(events),
                    None => return None,
                }
            }
            _ = tokio::time::sleep_until(w.deadline) => {
                if w.next_bookmark.take().is_some() {
                    let line = w.bookmark(false);
                    w.queue.push_back(line);
                    w.ended = true;
                } else {
                    return None;
                }
            }
            _ = sleep_until_opt(w.next_bookmark) => {
                let line = w.bookmark(false);
                w.queue.push_back(line);
                w.next_bookmark = Some(tokio::time::Instant::now() + w.bookmark_interval);
            }
        }
    }
}

async fn sleep_until_opt(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

fn bool_param(ctx: &Ctx, key: &str) -> Result<bool, ApiError> {
    match ctx.param(key) {
        None | Some("") => Ok(false),
        Some(v) => v
            .parse::<bool>()
            .map_err(|_| ApiError::bad_request(format!("invalid value {v:?} for {key}"))),
    }
}

pub(crate) fn watch(
    ctx: &Ctx,
    kind: ResourceKind,
    ns: Option<&str>,
    view: View,
) -> Result<Response<Body>, ApiError> {
    let accept = negotiate(ctx)?;
    let bookmarks = bool_param(ctx, "allowWatchBookmarks")?;
    let initial_events = bool_param(ctx, "sendInitialEvents")?;
    let filter = Filter {
        kind,
        view,
        namespace: ns.map(str::to_string),
        labels: LabelSelector::parse(ctx.param("labelSelector").unwrap_or(""))?,
        fields: FieldSelector::parse(ctx.param("fieldSelector").unwrap_or(""))?,
        table: accept.table,
    };
    let timeout = match ctx.param("timeoutSeconds") {
        Some(t) => t
            .parse::<u64>()
            .map_err(|_| ApiError::bad_request(format!("invalid timeoutSeconds {t:?}")))?,
        None => 1800,
    };
    let since = match ctx
        .param("resourceVersion")
        .filter(|rv| !rv.is_empty() && *rv != "0")
    {
        Some(rv) => Some(
            rv.parse::<u64>()
                .map_err(|_| ApiError::bad_request(format!("invalid resourceVersion {rv:?}")))?,
        ),
        None => None,
    };
    let store = lock(&ctx.shared.store);
    let mut state = WatchState {
        shared: ctx.shared.clone(),
        queue: VecDeque::new(),
        last_rv: store.resource_version(),
        rx: store.changes.subscribe(),
        deadline: tokio::time::Instant::now() + Duration::from_secs(timeout),
        next_bookmark: bookmarks
            .then(|| tokio::time::Instant::now() + ctx.shared.bookmark_interval),
        bookmark_interval: ctx.shared.bookmark_interval,
        ended: false,
        filter,
    };
    match since {
        _ if initial_events => {
            if !bookmarks {
                return Err(ApiError::invalid(
                    "meta.k8s.io",
                    "ListOptions",
                    "",
                    &[FieldError::forbidden(
                        "allowWatchBookmarks",
                        "allowWatchBookmarks required when sendInitialEvents is true",
                    )],
                ));
            }
            state.add_current(&store, kind, ns);
            state.last_rv = state.last_rv.max(store.resource_version());
            let end = state.bookmark(true);
            state.queue.push_back(end);
        }
        None => {
            state.add_current(&store, kind, ns);
        }
        Some(rv) => match store.events_since(rv) {
            Some(events) => state.take(events),
            None => {
                let gone = ApiError::for_code(
                    410,
                    &format!(
                        "too old resource version: {rv} ({})",
                        store.oldest_resumable() + 1
                    ),
                );
                state.queue.push_back(format!(
                    "{}\n",
                    json!({"type": "ERROR", "object": gone.to_status()})
                ));
                state.ended = true;
            }
        },
    }
    state.last_rv = state.last_rv.max(store.resource_version());
    drop(store);
    let mut resp = Response::new(Body::from_stream(futures_util::stream::unfold(
        state, next_event,
    )));
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    Ok(resp)
}
