//! apps/v1 Deployments and StatefulSets: get, list, `status` get, and PATCH in all four
//! patch types (see `mutate.rs` for the pipeline).

use axum::body::Body;
use axum::http::{Response, StatusCode, header};

use super::{Ctx, json_response, list};
use crate::mutate::{self, PatchRequest};
use crate::patch::PatchType;
use crate::resource::ResourceKind;
use crate::state::lock;
use crate::status::ApiError;

pub(crate) fn workloads(ctx: &Ctx) -> Result<Response<Body>, ApiError> {
    let info = &ctx.info;
    let kind = ResourceKind::from_plural(&info.api_group, &info.resource)
        .ok_or_else(ApiError::path_not_found)?;
    let ns = (!info.namespace.is_empty()).then_some(info.namespace.as_str());
    match (info.verb.as_str(), info.subresource.as_str()) {
        ("list" | "watch", "") => list::list(ctx, kind, ns),
        ("get", "" | "status") => {
            let value = lock(&ctx.shared.store)
                .get(kind, &info.namespace, &info.name)
                .map(|s| s.value.clone())
                .ok_or_else(|| ApiError::not_found(kind, &info.name))?;
            list::one(ctx, kind, value)
        }
        ("patch", "") => patch(ctx, kind),
        (verb, "" | "status") => Err(ApiError::method_not_supported(kind.plural(), verb)),
        _ => Err(ApiError::path_not_found()),
    }
}

/// PATCH of any stored kind (namespaces take the same path for server-side apply).
pub(crate) fn patch(ctx: &Ctx, kind: ResourceKind) -> Result<Response<Body>, ApiError> {
    let content_type = ctx.header(header::CONTENT_TYPE).unwrap_or("");
    let patch_type = PatchType::from_content_type(content_type)
        .ok_or_else(|| ApiError::unsupported_media_type(content_type))?;
    let force = match ctx.param("force") {
        None => None,
        Some(v) => Some(
            v.parse::<bool>()
                .map_err(|_| ApiError::bad_request(format!("invalid value {v:?} for force")))?,
        ),
    };
    let req = PatchRequest {
        kind,
        namespace: &ctx.info.namespace,
        name: &ctx.info.name,
        patch_type,
        body: &ctx.body,
        dry_run: ctx.params("dryRun"),
        field_manager: ctx.param("fieldManager").map(str::to_string),
        force,
        user_agent: ctx.header(header::USER_AGENT),
    };
    let outcome = {
        let mut store = lock(&ctx.shared.store);
        mutate::patch(&mut store, &req)?
    };
    let status = if outcome.created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok(json_response(status, &outcome.object))
}
