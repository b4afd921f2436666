//! Self-reviews: `SelfSubjectAccessReview` (what `kubectl auth can-i` asks),
//! `SelfSubjectRulesReview` (`can-i --list`) and `SelfSubjectReview` (`kubectl auth whoami`).

use axum::body::Body;
use axum::http::{Response, StatusCode};
use serde_json::{Value, json};

use super::{Ctx, json_response};
use crate::auth::{self, Rule};
use crate::request_info::RequestInfo;
use crate::status::ApiError;

pub(crate) fn reviews(ctx: &Ctx) -> Result<Response<Body>, ApiError> {
    let info = &ctx.info;
    let known = matches!(
        (info.api_group.as_str(), info.resource.as_str()),
        (
            "authorization.k8s.io",
            "selfsubjectaccessreviews" | "selfsubjectrulesreviews"
        ) | ("authentication.k8s.io", "selfsubjectreviews")
    );
    if !known || !info.name.is_empty() || !info.namespace.is_empty() {
        return Err(ApiError::path_not_found());
    }
    if info.verb != "create" {
        return Err(ApiError::method_not_supported(&info.resource, &info.verb));
    }
    let content_type = ctx
        .header(axum::http::header::CONTENT_TYPE)
        .unwrap_or("application/json");
    let mut review: Value = if content_type.starts_with("application/vnd.kubernetes.protobuf") {
        crate::proto::decode_review(&ctx.body)?
    } else {
        serde_json::from_slice(&ctx.body)
            .map_err(|e| ApiError::bad_request(format!("error decoding request body: {e}")))?
    };
    if !review.is_object() {
        return Err(ApiError::bad_request("request body must be a JSON object"));
    }
    let status = match info.resource.as_str() {
        "selfsubjectaccessreviews" => access_review(ctx, &review)?,
        "selfsubjectrulesreviews" => rules_review(ctx, &review),
        _ => json!({"userInfo": {"username": ctx.user.name, "groups": ctx.user.groups}}),
    };
    review["status"] = status;
    review["metadata"] = json!({"creationTimestamp": null});
    Ok(json_response(StatusCode::CREATED, &review))
}

fn access_review(ctx: &Ctx, review: &Value) -> Result<Value, ApiError> {
    let spec = &review["spec"];
    let s = |v: &Value| v.as_str().unwrap_or_default().to_string();
    let asked = if let Some(ra) = spec.get("resourceAttributes").filter(|v| v.is_object()) {
        RequestInfo {
            is_resource_request: true,
            verb: s(&ra["verb"]),
            api_group: s(&ra["group"]),
            api_version: s(&ra["version"]),
            namespace: s(&ra["namespace"]),
            resource: s(&ra["resource"]),
            subresource: s(&ra["subresource"]),
            name: s(&ra["name"]),
            path: String::new(),
        }
    } else if let Some(nra) = spec.get("nonResourceAttributes").filter(|v| v.is_object()) {
        RequestInfo {
            is_resource_request: false,
            verb: s(&nra["verb"]),
            path: s(&nra["path"]),
            ..RequestInfo::default()
        }
    } else {
        return Err(ApiError::invalid(
            "authorization.k8s.io",
            "SelfSubjectAccessReview",
            "",
            &[crate::status::FieldError::required(
                "spec.resourceAttributes",
                "exactly one of nonResourceAttributes or resourceAttributes must be specified",
            )],
        ));
    };
    let allowed = auth::allowed(&ctx.user, &ctx.rules, &asked);
    Ok(if allowed {
        json!({"allowed": true, "reason": format!("kube-sim: allowed by a rule of user {:?}", ctx.user.name)})
    } else {
        json!({"allowed": false})
    })
}

fn rules_review(ctx: &Ctx, review: &Value) -> Value {
    let ns = review["spec"]["namespace"].as_str().unwrap_or_default();
    let applies = |r: &&Rule| r.namespaces.is_empty() || r.namespaces.iter().any(|n| n == ns);
    let mut resource_rules: Vec<Value> = vec![];
    let mut non_resource_rules: Vec<Value> = vec![];
    if ctx.user.authenticated {
        resource_rules.push(json!({"verbs": ["create"], "apiGroups": ["authorization.k8s.io"], "resources": ["selfsubjectaccessreviews", "selfsubjectrulesreviews"]}));
        resource_rules.push(json!({"verbs": ["create"], "apiGroups": ["authentication.k8s.io"], "resources": ["selfsubjectreviews"]}));
        non_resource_rules.push(json!({"verbs": ["get"], "nonResourceURLs": ["/api", "/api/*", "/apis", "/apis/*", "/openapi", "/openapi/*"]}));
    }
    non_resource_rules.push(json!({"verbs": ["get"], "nonResourceURLs": ["/healthz", "/livez", "/readyz", "/version", "/version/"]}));
    for r in ctx.rules.iter().filter(applies) {
        if !r.resources.is_empty() {
            let mut v =
                json!({"verbs": r.verbs, "apiGroups": r.api_groups, "resources": r.resources});
            if !r.resource_names.is_empty() {
                v["resourceNames"] = json!(r.resource_names);
            }
            resource_rules.push(v);
        }
        if !r.non_resource_urls.is_empty() {
            non_resource_rules
                .push(json!({"verbs": r.verbs, "nonResourceURLs": r.non_resource_urls}));
        }
    }
    json!({"resourceRules": resource_rules, "nonResourceRules": non_resource_rules, "incomplete": false})
}
