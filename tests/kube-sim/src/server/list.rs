//! LIST requests: selectors, `limit`/`continue` paging, `List` documents with the item
//! `kind`/`apiVersion` stripped (as the apiserver sends them), or a Table.

use axum::body::Body;
use axum::http::{Response, StatusCode};
use serde_json::{Value, json};

use super::records::View;
use super::{Ctx, json_response, negotiate, table};
use crate::resource::ResourceKind;
use crate::selector::{FieldSelector, LabelSelector};
use crate::state::lock;
use crate::status::ApiError;

const CONTINUE_PREFIX: &str = "kube-sim-continue:";

/// Lists `kind` in `ns` (`None`: all namespaces) and answers with a List or a Table.
pub(crate) fn list(
    ctx: &Ctx,
    kind: ResourceKind,
    ns: Option<&str>,
) -> Result<Response<Body>, ApiError> {
    list_view(ctx, kind, ns, View::Stored)
}

/// Like [`list`], with the items shown in `view`'s API version.
pub(crate) fn list_view(
    ctx: &Ctx,
    kind: ResourceKind,
    ns: Option<&str>,
    view: View,
) -> Result<Response<Body>, ApiError> {
    if ctx.info.verb == "watch" {
        return super::watch::watch(ctx, kind, ns, view);
    }
    let accept = negotiate(ctx)?;
    let labels = LabelSelector::parse(ctx.param("labelSelector").unwrap_or(""))?;
    let fields = FieldSelector::parse(ctx.param("fieldSelector").unwrap_or(""))?;
    let limit = match ctx.param("limit") {
        Some(l) => l
            .parse::<usize>()
            .map_err(|_| ApiError::bad_request(format!("invalid limit {l:?}")))?,
        None => 0,
    };
    // The token carries the list's resourceVersion and the next offset: `<rv>:<offset>`.
    let start = match ctx.param("continue").filter(|c| !c.is_empty()) {
        Some(token) => Some(
            token
                .strip_prefix(CONTINUE_PREFIX)
                .and_then(|t| t.split_once(':'))
                .and_then(|(rv, n)| Some((rv.parse::<u64>().ok()?, n.parse::<usize>().ok()?)))
                .ok_or_else(|| ApiError::bad_request("continue key is not valid: incorrect encoded start resourceVersion (version meta.k8s.io/v1)"))?,
        ),
        None => None,
    };
    let (items, rv) = {
        let store = lock(&ctx.shared.store);
        // The apiserver's pages are one snapshot at the first page's resourceVersion (a watch
        // from it replays what changed meanwhile). The sim keeps no snapshots: after a change it
        // answers as the apiserver does once that version is compacted, 410 Expired, rather than
        // an offset into a different list that skips or repeats objects.
        if let Some((token_rv, _)) = start
            && token_rv != store.resource_version()
        {
            return Err(ApiError::for_code(
                410,
                "The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter.",
            ));
        }
        // Labels first, on the stored object (no view changes labels): a selective LIST clones
        // only what it returns, not every object of the kind under the store's lock (the
        // controller bench's 1,000 streams relist their pods every few seconds).
        let items: Vec<Value> = store
            .list(kind, ns)
            .into_iter()
            .filter(|s| labels.matches(&s.value["metadata"]["labels"]))
            .map(|s| view.outgoing(s.value.clone()))
            .filter(|v| fields.matches(v))
            .collect();
        (items, store.resource_version())
    };
    let start = start.map_or(0, |(_, offset)| offset);
    let total = items.len();
    let end = if limit > 0 {
        (start + limit).min(total)
    } else {
        total
    };
    let page: Vec<Value> = items
        .into_iter()
        .skip(start)
        .take(end.saturating_sub(start))
        .collect();
    let mut metadata = json!({"resourceVersion": rv.to_string()});
    if end < total {
        metadata["continue"] = json!(format!("{CONTINUE_PREFIX}{rv}:{end}"));
        metadata["remainingItemCount"] = json!(total - end);
    }
    if accept.table {
        let mut t = table::table(kind, &page, ctx.param("includeObject"));
        t["metadata"] = metadata;
        return Ok(json_response(StatusCode::OK, &t));
    }
    let items: Vec<Value> = page
        .into_iter()
        .map(|mut v| {
            if let Some(m) = v.as_object_mut() {
                m.remove("kind");
                m.remove("apiVersion");
            }
            v
        })
        .collect();
    let body = json!({
        "kind": format!("{}List", kind.kind()),
        "apiVersion": view.api_version(kind),
        "metadata": metadata,
        "items": items,
    });
    Ok(json_response(StatusCode::OK, &body))
}

/// Answers a GET of one object, as JSON or as a one-row Table.
pub(crate) fn one(ctx: &Ctx, kind: ResourceKind, value: Value) -> Result<Response<Body>, ApiError> {
    if negotiate(ctx)?.table {
        let mut t = table::table(
            kind,
            std::slice::from_ref(&value),
            ctx.param("includeObject"),
        );
        t["metadata"] = json!({"resourceVersion": value["metadata"]["resourceVersion"]});
        return Ok(json_response(StatusCode::OK, &t));
    }
    Ok(json_response(StatusCode::OK, &value))
}
