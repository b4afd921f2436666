//! Core v1: namespaces (get, list, create, patch) and pods (get, list, `log`).

use axum::body::Body;
use axum::http::{Response, StatusCode};

use super::{Ctx, json_response, list, logs};
use crate::resource::ResourceKind;
use crate::state::lock;
use crate::status::ApiError;

pub(crate) fn namespaces(ctx: &Ctx) -> Result<Response<Body>, ApiError> {
    let info = &ctx.info;
    if !info.subresource.is_empty() {
        return Err(ApiError::path_not_found());
    }
    match info.verb.as_str() {
        "list" | "watch" => list::list(ctx, ResourceKind::Namespace, None),
        "get" => {
            let value = lock(&ctx.shared.store)
                .get(ResourceKind::Namespace, "", &info.name)
                .map(|s| s.value.clone())
                .ok_or_else(|| ApiError::not_found(ResourceKind::Namespace, &info.name))?;
            list::one(ctx, ResourceKind::Namespace, value)
        }
        // `kubectl create namespace NAME`: only the name is taken from the body.
        "create" => {
            let name = if crate::proto::is_protobuf(&ctx.body) {
                crate::proto::decode_object_name(&ctx.body)?
            } else {
                let body: serde_json::Value = serde_json::from_slice(&ctx.body)
                    .map_err(|e| ApiError::bad_request(format!("decoding the namespace: {e}")))?;
                body["metadata"]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string()
            };
            let name = Some(name.as_str())
                .filter(|n| {
                    !n.is_empty()
                        && n.len() <= 63
                        && n.bytes()
                            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                        && !n.starts_with('-')
                        && !n.ends_with('-')
                })
                .ok_or_else(|| {
                    ApiError::bad_request("metadata.name: a DNS-1123 label is required")
                })?;
            let mut store = lock(&ctx.shared.store);
            if store.namespace_exists(name) {
                return Err(ApiError::already_exists(ResourceKind::Namespace, name));
            }
            let object = crate::objects::namespace(name);
            let stored = if ctx.params("dryRun").is_empty() {
                store.create(ResourceKind::Namespace, object)
            } else {
                object
            };
            Ok(json_response(StatusCode::CREATED, &stored))
        }
        // `kubectl modekeeper install --apply`: server-side apply creates or updates a namespace.
        "patch" => super::apps::patch(ctx, ResourceKind::Namespace),
        verb => Err(ApiError::method_not_supported("namespaces", verb)),
    }
}

pub(crate) async fn pods(ctx: &Ctx) -> Result<Response<Body>, ApiError> {
    let info = &ctx.info;
    let ns = (!info.namespace.is_empty()).then_some(info.namespace.as_str());
    match (info.verb.as_str(), info.subresource.as_str()) {
        ("list" | "watch", "") => list::list(ctx, ResourceKind::Pod, ns),
        ("get", "") => {
            let value = lock(&ctx.shared.store)
                .get(ResourceKind::Pod, &info.namespace, &info.name)
                .map(|s| s.value.clone())
                .ok_or_else(|| ApiError::not_found(ResourceKind::Pod, &info.name))?;
            list::one(ctx, ResourceKind::Pod, value)
        }
        ("get", "log") => logs::pod_log(ctx),
        (_, "") => Err(ApiError::method_not_supported("pods", &info.verb)),
        _ => Err(ApiError::path_not_found()),
    }
}
