//! `/version`, health checks and API discovery, both the legacy documents (`APIVersions`,
//! `APIGroupList`, `APIGroup`, `APIResourceList`) and aggregated discovery
//! (`apidiscovery.k8s.io/v2`, served when the client's Accept header asks for it).

use axum::body::Body;
use axum::http::{Response, StatusCode, header};
use serde_json::{Value, json};

use super::{Ctx, json_response, json_response_typed};
use crate::status::ApiError;

/// One advertised resource (or subresource, when `name` contains a slash).
struct ApiResource {
    name: &'static str,
    singular: &'static str,
    kind: &'static str,
    namespaced: bool,
    verbs: &'static [&'static str],
    short_names: &'static [&'static str],
    categories: &'static [&'static str],
}

const fn res(
    name: &'static str,
    singular: &'static str,
    kind: &'static str,
    namespaced: bool,
    verbs: &'static [&'static str],
    short_names: &'static [&'static str],
    categories: &'static [&'static str],
) -> ApiResource {
    ApiResource {
        name,
        singular,
        kind,
        namespaced,
        verbs,
        short_names,
        categories,
    }
}

const CORE: &[ApiResource] = &[
    res(
        "namespaces",
        "namespace",
        "Namespace",
        false,
        &["create", "get", "list", "patch", "watch"],
        &["ns"],
        &[],
    ),
    res(
        "pods",
        "pod",
        "Pod",
        true,
        &["get", "list", "watch"],
        &["po"],
        &["all"],
    ),
    res("pods/log", "", "Pod", true, &["get"], &[], &[]),
    res(
        "configmaps",
        "configmap",
        "ConfigMap",
        true,
        &["create", "get", "list", "patch", "update", "watch"],
        &["cm"],
        &[],
    ),
    res(
        "secrets",
        "secret",
        "Secret",
        true,
        &["create", "get", "list", "patch", "update", "watch"],
        &[],
        &[],
    ),
    res(
        "events",
        "event",
        "Event",
        true,
        &["create", "get", "list", "patch", "update", "watch"],
        &["ev"],
        &[],
    ),
    res(
        "serviceaccounts",
        "serviceaccount",
        "ServiceAccount",
        true,
        &["get", "list", "patch", "watch"],
        &["sa"],
        &[],
    ),
    res(
        "services",
        "service",
        "Service",
        true,
        &["get", "list", "patch", "watch"],
        &["svc"],
        &["all"],
    ),
];

const RBAC: &[ApiResource] = &[
    res(
        "clusterrolebindings",
        "clusterrolebinding",
        "ClusterRoleBinding",
        false,
        &["get", "list", "patch", "watch"],
        &[],
        &[],
    ),
    res(
        "clusterroles",
        "clusterrole",
        "ClusterRole",
        false,
        &["get", "list", "patch", "watch"],
        &[],
        &[],
    ),
    res(
        "rolebindings",
        "rolebinding",
        "RoleBinding",
        true,
        &["get", "list", "patch", "watch"],
        &[],
        &[],
    ),
    res(
        "roles",
        "role",
        "Role",
        true,
        &["get", "list", "patch", "watch"],
        &[],
        &[],
    ),
];

const EVENTS: &[ApiResource] = &[res(
    "events",
    "event",
    "Event",
    true,
    &["create", "get", "list", "patch", "update", "watch"],
    &["ev"],
    &[],
)];

const COORDINATION: &[ApiResource] = &[res(
    "leases",
    "lease",
    "Lease",
    true,
    &["create", "get", "list", "patch", "update", "watch"],
    &[],
    &[],
)];

const BATCH: &[ApiResource] = &[res(
    "jobs",
    "job",
    "Job",
    true,
    &["get", "list", "patch", "watch"],
    &[],
    &["all"],
)];

const KUBEFLOW: &[ApiResource] = &[res(
    "pytorchjobs",
    "pytorchjob",
    "PyTorchJob",
    true,
    &["get", "list", "patch", "watch"],
    &[],
    &[],
)];

const JOBSET: &[ApiResource] = &[res(
    "jobsets",
    "jobset",
    "JobSet",
    true,
    &["get", "list", "patch", "watch"],
    &[],
    &[],
)];

const APPS: &[ApiResource] = &[
    res(
        "deployments",
        "deployment",
        "Deployment",
        true,
        &["get", "list", "patch", "watch"],
        &["deploy"],
        &["all"],
    ),
    res(
        "deployments/status",
        "",
        "Deployment",
        true,
        &["get"],
        &[],
        &[],
    ),
    res(
        "statefulsets",
        "statefulset",
        "StatefulSet",
        true,
        &["get", "list", "patch", "watch"],
        &["sts"],
        &["all"],
    ),
    res(
        "statefulsets/status",
        "",
        "StatefulSet",
        true,
        &["get"],
        &[],
        &[],
    ),
];

const AUTHORIZATION: &[ApiResource] = &[
    res(
        "selfsubjectaccessreviews",
        "selfsubjectaccessreview",
        "SelfSubjectAccessReview",
        false,
        &["create"],
        &[],
        &[],
    ),
    res(
        "selfsubjectrulesreviews",
        "selfsubjectrulesreview",
        "SelfSubjectRulesReview",
        false,
        &["create"],
        &[],
        &[],
    ),
];

const AUTHENTICATION: &[ApiResource] = &[res(
    "selfsubjectreviews",
    "selfsubjectreview",
    "SelfSubjectReview",
    false,
    &["create"],
    &[],
    &[],
)];

/// Named groups with their one served version, in the order `/apis` lists them; the last two
/// are custom resources, absent when the CRDs are.
const GROUPS: &[(&str, &str, &[ApiResource])] = &[
    ("apps", "v1", APPS),
    ("events.k8s.io", "v1", EVENTS),
    ("authentication.k8s.io", "v1", AUTHENTICATION),
    ("authorization.k8s.io", "v1", AUTHORIZATION),
    ("batch", "v1", BATCH),
    ("coordination.k8s.io", "v1", COORDINATION),
    ("rbac.authorization.k8s.io", "v1", RBAC),
    ("kubeflow.org", "v1", KUBEFLOW),
    ("jobset.x-k8s.io", "v1alpha2", JOBSET),
];

/// The groups this server serves.
fn groups(
    ctx: &Ctx,
) -> impl Iterator<Item = &'static (&'static str, &'static str, &'static [ApiResource])> {
    let absent = ctx.shared.crds_absent;
    GROUPS
        .iter()
        .filter(move |(g, _, _)| !(absent && matches!(*g, "kubeflow.org" | "jobset.x-k8s.io")))
}

const AGGREGATED_TYPE: &str =
    "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList";

fn wants_aggregated(ctx: &Ctx) -> bool {
    let accept = ctx.header(header::ACCEPT).unwrap_or("");
    for media in accept.split(',') {
        let m = media.replace(' ', "");
        if m.starts_with("application/json") && m.contains("g=apidiscovery.k8s.io") {
            if m.contains(";v=v2;") || m.ends_with(";v=v2") {
                return m.contains("as=APIGroupDiscoveryList");
            }
            continue;
        }
        if m.starts_with("application/json") || m.starts_with("*/*") {
            return false;
        }
    }
    false
}

fn group_version(group: &str, version: &str) -> String {
    if group.is_empty() {
        version.into()
    } else {
        format!("{group}/{version}")
    }
}

fn resource_list(group: &str, version: &str, resources: &[ApiResource]) -> Value {
    let items: Vec<Value> = resources
        .iter()
        .map(|r| {
            let mut v = json!({
                "name": r.name,
                "singularName": r.singular,
                "namespaced": r.namespaced,
                "kind": r.kind,
                "verbs": r.verbs,
            });
            if !r.short_names.is_empty() {
                v["shortNames"] = json!(r.short_names);
            }
            if !r.categories.is_empty() {
                v["categories"] = json!(r.categories);
            }
            v
        })
        .collect();
    json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": group_version(group, version), "resources": items})
}

fn api_group(name: &str, version: &str) -> Value {
    let gv = json!({"groupVersion": group_version(name, version), "version": version});
    json!({"name": name, "versions": [gv.clone()], "preferredVersion": gv})
}

fn aggregated_group(group: &str, version: &str, resources: &[ApiResource]) -> Value {
    let kind_of = |kind: &str| json!({"group": group, "version": version, "kind": kind});
    let top: Vec<Value> = resources
        .iter()
        .filter(|r| !r.name.contains('/'))
        .map(|r| {
            let subs: Vec<Value> = resources
                .iter()
                .filter_map(|s| {
                    let (parent, sub) = s.name.split_once('/')?;
                    (parent == r.name).then(|| json!({"subresource": sub, "responseKind": kind_of(s.kind), "verbs": s.verbs}))
                })
                .collect();
            let mut v = json!({
                "resource": r.name,
                "responseKind": kind_of(r.kind),
                "scope": if r.namespaced {"Namespaced"} else {"Cluster"},
                "singularResource": r.singular,
                "verbs": r.verbs,
            });
            if !r.short_names.is_empty() {
                v["shortNames"] = json!(r.short_names);
            }
            if !r.categories.is_empty() {
                v["categories"] = json!(r.categories);
            }
            if !subs.is_empty() {
                v["subresources"] = json!(subs);
            }
            v
        })
        .collect();
    let mut metadata = json!({"creationTimestamp": null});
    if !group.is_empty() {
        metadata["name"] = json!(group);
    }
    json!({"metadata": metadata, "versions": [{"version": version, "resources": top, "freshness": "Current"}]})
}

fn aggregated_list(items: Vec<Value>) -> Response<Body> {
    let body = json!({"kind": "APIGroupDiscoveryList", "apiVersion": "apidiscovery.k8s.io/v2", "metadata": {}, "items": items});
    json_response_typed(StatusCode::OK, &body, AGGREGATED_TYPE)
}

fn text(body: &'static str) -> Response<Body> {
    let mut r = Response::new(Body::from(body));
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

pub(crate) fn version_info(git_version: &str) -> Value {
    let (major, minor) = git_version
        .trim_start_matches('v')
        .split(['.', '+', '-'])
        .take(2)
        .fold((String::new(), String::new()), |(a, b), part| {
            if a.is_empty() {
                (part.to_string(), b)
            } else {
                (a, part.to_string())
            }
        });
    json!({
        "major": major,
        "minor": minor,
        "gitVersion": git_version,
        "gitCommit": "0000000000000000000000000000000000000000",
        "gitTreeState": "clean",
        "buildDate": "2025-01-01T00:00:00Z",
        "goVersion": "go1.23.8",
        "compiler": "gc",
        "platform": "linux/amd64",
    })
}

pub(crate) fn non_resource(ctx: &Ctx) -> Result<Response<Body>, ApiError> {
    if ctx.info.verb != "get" {
        return Err(ApiError::path_not_found());
    }
    let path = ctx.info.path.trim_end_matches('/');
    let ok = |v: Value| Ok(json_response(StatusCode::OK, &v));
    match path {
        "/version" => ok(version_info(&ctx.shared.server_version)),
        "/healthz" | "/livez" | "/readyz" => Ok(text("ok")),
        "/api" if wants_aggregated(ctx) => {
            Ok(aggregated_list(vec![aggregated_group("", "v1", CORE)]))
        }
        "/api" => ok(json!({
            "kind": "APIVersions",
            "versions": ["v1"],
            "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": ctx.shared.server_address}],
        })),
        "/apis" if wants_aggregated(ctx) => Ok(aggregated_list(
            groups(ctx)
                .map(|(g, v, r)| aggregated_group(g, v, r))
                .collect(),
        )),
        "/apis" => ok(json!({
            "kind": "APIGroupList",
            "apiVersion": "v1",
            "groups": groups(ctx).map(|(g, v, _)| api_group(g, v)).collect::<Vec<_>>(),
        })),
        "/api/v1" => ok(resource_list("", "v1", CORE)),
        "/openapi/v3" => ok(super::openapi::root()),
        "/openapi/v3/apis/apps/v1" => ok(super::openapi::apps_v1()),
        "/openapi/v3/api/v1" => ok(super::openapi::core_v1()),
        "/openapi/v3/apis/coordination.k8s.io/v1" => {
            ok(super::openapi::group_v1("coordination.k8s.io").expect("known group"))
        }
        "/openapi/v3/apis/events.k8s.io/v1" => {
            ok(super::openapi::group_v1("events.k8s.io").expect("known group"))
        }
        "/openapi/v3/apis/rbac.authorization.k8s.io/v1" => ok(super::openapi::rbac_v1()),
        _ => {
            let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
            match parts.as_slice() {
                ["apis", group] => match groups(ctx).find(|(g, _, _)| g == group) {
                    Some((g, version, _)) => {
                        let mut v = api_group(g, version);
                        v["kind"] = json!("APIGroup");
                        v["apiVersion"] = json!("v1");
                        ok(v)
                    }
                    None => Err(ApiError::path_not_found()),
                },
                ["apis", group, version] => {
                    match groups(ctx).find(|(g, v, _)| g == group && v == version) {
                        Some((g, v, r)) => ok(resource_list(g, v, r)),
                        None => Err(ApiError::path_not_found()),
                    }
                }
                _ => Err(ApiError::path_not_found()),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_numbers() {
        let v = version_info("v1.32.4+kube-sim");
        assert_eq!(
            (v["major"].as_str(), v["minor"].as_str()),
            (Some("1"), Some("32"))
        );
    }

    #[test]
    fn aggregated_shapes() {
        let core = aggregated_group("", "v1", CORE);
        assert!(core["metadata"].get("name").is_none());
        let pods = &core["versions"][0]["resources"][1];
        assert_eq!(pods["resource"], "pods");
        assert_eq!(pods["subresources"][0]["subresource"], "log");
        let apps = aggregated_group("apps", "v1", APPS);
        assert_eq!(apps["metadata"]["name"], "apps");
        assert_eq!(
            apps["versions"][0]["resources"][0]["shortNames"],
            json!(["deploy"])
        );
        assert_eq!(
            apps["versions"][0]["resources"].as_array().unwrap().len(),
            2
        );
    }
}
