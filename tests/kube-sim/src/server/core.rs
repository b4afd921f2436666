//! Core v1: namespaces (get, list) and pods (get, list, `log`).

use axum::body::Body;
use axum::http::Response;

use super::{Ctx, list, logs};
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
