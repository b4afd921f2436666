//! A minimal OpenAPI v3 (`/openapi/v3`, `/openapi/v3/apis/apps/v1`, `/openapi/v3/api/v1`,
//! `/openapi/v3/apis/rbac.authorization.k8s.io/v1`): the PATCH operations of the workloads,
//! ConfigMaps and what `install` applies, with their query parameters. kubectl reads it to learn that the server
//! validates fields itself (`fieldValidation`), so `kubectl apply --server-side` works with its
//! default `--validate=strict`. There are no schemas; `/openapi/v2` is not served.

use serde_json::{Value, json};

const HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000kube";

pub(crate) fn root() -> Value {
    json!({
        "paths": {
            "apis/apps/v1": {"serverRelativeURL": format!("/openapi/v3/apis/apps/v1?hash={HASH}")},
            "api/v1": {"serverRelativeURL": format!("/openapi/v3/api/v1?hash={HASH}")},
            "apis/coordination.k8s.io/v1": {"serverRelativeURL": format!("/openapi/v3/apis/coordination.k8s.io/v1?hash={HASH}")},
            "apis/events.k8s.io/v1": {"serverRelativeURL": format!("/openapi/v3/apis/events.k8s.io/v1?hash={HASH}")},
            "apis/rbac.authorization.k8s.io/v1": {"serverRelativeURL": format!("/openapi/v3/apis/rbac.authorization.k8s.io/v1?hash={HASH}")},
        }
    })
}

fn query(name: &str, description: &str) -> Value {
    json!({"name": name, "in": "query", "description": description, "schema": {"type": "string", "uniqueItems": true}})
}

/// `group` "" is the core group (`api/v1`).
fn patch_operation(group: &str, kind: &str, plural: &str) -> Value {
    let cluster_scoped = matches!(kind, "Namespace" | "ClusterRole" | "ClusterRoleBinding");
    let scope = if cluster_scoped { "" } else { "Namespaced" };
    let (tag, op) = match group {
        "" => ("core_v1".to_string(), format!("patchCoreV1{scope}{kind}")),
        "apps" => ("apps_v1".to_string(), format!("patchAppsV1{scope}{kind}")),
        "coordination.k8s.io" => (
            "coordination_v1".to_string(),
            format!("patchCoordinationV1{scope}{kind}"),
        ),
        "events.k8s.io" => (
            "events_v1".to_string(),
            format!("patchEventsV1{scope}{kind}"),
        ),
        _ => (
            "rbacAuthorization_v1".to_string(),
            format!("patchRbacAuthorizationV1{scope}{kind}"),
        ),
    };
    json!({
        "tags": [tag],
        "description": format!("partially update the specified {kind}"),
        "operationId": op,
        "parameters": [
            query("dryRun", "When present, indicates that modifications should not be persisted."),
            query("fieldManager", "fieldManager is a name associated with the actor or entity that is making these changes."),
            query("fieldValidation", "fieldValidation instructs the server on how to handle objects in the request containing unknown or duplicate fields."),
            {"name": "force", "in": "query", "description": "Force is going to \"force\" Apply requests.", "schema": {"type": "boolean", "uniqueItems": true}},
        ],
        "requestBody": {"content": {
            "application/apply-patch+yaml": {"schema": {"type": "object"}},
            "application/json-patch+json": {"schema": {"type": "object"}},
            "application/merge-patch+json": {"schema": {"type": "object"}},
            "application/strategic-merge-patch+json": {"schema": {"type": "object"}},
        }, "required": true},
        "responses": {"200": {"description": "OK"}, "201": {"description": "Created"}, "401": {"description": "Unauthorized"}},
        "x-kubernetes-action": "patch",
        "x-kubernetes-group-version-kind": {"group": group, "version": "v1", "kind": kind},
        "x-kubernetes-resource": plural,
    })
}

pub(crate) fn apps_v1() -> Value {
    json!({
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes (kube-sim)", "version": "unversioned"},
        "paths": {
            "/apis/apps/v1/namespaces/{namespace}/deployments/{name}": {"patch": patch_operation("apps", "Deployment", "deployments")},
            "/apis/apps/v1/namespaces/{namespace}/statefulsets/{name}": {"patch": patch_operation("apps", "StatefulSet", "statefulsets")},
        },
        "components": {},
    })
}

pub(crate) fn core_v1() -> Value {
    json!({
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes (kube-sim)", "version": "unversioned"},
        "paths": {
            "/api/v1/namespaces/{namespace}/configmaps/{name}": {"patch": patch_operation("", "ConfigMap", "configmaps")},
            "/api/v1/namespaces/{namespace}/events/{name}": {"patch": patch_operation("", "Event", "events")},
            "/api/v1/namespaces/{name}": {"patch": patch_operation("", "Namespace", "namespaces")},
            "/api/v1/namespaces/{namespace}/serviceaccounts/{name}": {"patch": patch_operation("", "ServiceAccount", "serviceaccounts")},
            "/api/v1/namespaces/{namespace}/services/{name}": {"patch": patch_operation("", "Service", "services")},
        },
        "components": {},
    })
}

pub(crate) fn rbac_v1() -> Value {
    let path = |scope: &str, plural: &str| {
        format!("/apis/rbac.authorization.k8s.io/v1/{scope}{plural}/{{name}}")
    };
    json!({
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes (kube-sim)", "version": "unversioned"},
        "paths": {
            path("", "clusterroles"): {"patch": patch_operation("rbac.authorization.k8s.io", "ClusterRole", "clusterroles")},
            path("", "clusterrolebindings"): {"patch": patch_operation("rbac.authorization.k8s.io", "ClusterRoleBinding", "clusterrolebindings")},
            path("namespaces/{namespace}/", "roles"): {"patch": patch_operation("rbac.authorization.k8s.io", "Role", "roles")},
            path("namespaces/{namespace}/", "rolebindings"): {"patch": patch_operation("rbac.authorization.k8s.io", "RoleBinding", "rolebindings")},
        },
        "components": {},
    })
}

pub(crate) fn group_v1(group: &str) -> Option<Value> {
    let (path, kind, plural) = match group {
        "coordination.k8s.io" => (
            "/apis/coordination.k8s.io/v1/namespaces/{namespace}/leases/{name}",
            "Lease",
            "leases",
        ),
        "events.k8s.io" => (
            "/apis/events.k8s.io/v1/namespaces/{namespace}/events/{name}",
            "Event",
            "events",
        ),
        _ => return None,
    };
    Some(json!({
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes (kube-sim)", "version": "unversioned"},
        "paths": {path: {"patch": patch_operation(group, kind, plural)}},
        "components": {},
    }))
}
