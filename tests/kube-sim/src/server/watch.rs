//! `?watch=true` on list endpoints: newline-delimited `{"type", "object"}` events.
//!
//! Without `resourceVersion` (or with `0`) a watch starts with an ADDED event per matching
//! object; with one it replays the stored changes after it (or answers an ERROR event with a
//! 410 Expired Status when history no longer reaches back that far). It then streams changes
//! until `timeoutSeconds` (default 30 minutes) or the client goes away. Objects that stop
//! matching a selector are simply no longer reported (the apiserver would send DELETED).

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{HeaderValue, Response, header};
use serde_json::{Value, json};

use super::{Ctx, negotiate, table};
use crate::resource::ResourceKind;
use crate::selector::{FieldSelector, LabelSelector};
use crate::state::{Shared, lock};
use crate::status::ApiError;
use crate::store::Event;

struct Filter {
    kind: ResourceKind,
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
        let object = if self.table {
            table::table(self.kind, std::slice::from_ref(object), None)
        } else {
            object.clone()
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
    ended: bool,
}

impl WatchState {
    fn take(&mut self, events: Vec<Event>) {
        for e in events {
            self.last_rv = self.last_rv.max(e.rv);
            if self.filter.matches(e.kind, &e.namespace, &e.object) {
                self.queue
                    .push_back(self.filter.line(e.event_type, &e.object));
            }
        }
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
            _ = tokio::time::sleep_until(w.deadline) => return None,
        }
    }
}

pub(crate) fn watch(
    ctx: &Ctx,
    kind: ResourceKind,
    ns: Option<&str>,
) -> Result<Response<Body>, ApiError> {
    let accept = negotiate(ctx)?;
    let filter = Filter {
        kind,
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
        ended: false,
        filter,
    };
    match since {
        None => {
            for s in store.list(kind, ns) {
                let obj_ns = s.value["metadata"]["namespace"]
                    .as_str()
                    .unwrap_or_default();
                if state.filter.matches(kind, obj_ns, &s.value) {
                    state.queue.push_back(state.filter.line("ADDED", &s.value));
                }
            }
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
