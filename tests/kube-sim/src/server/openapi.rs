//! A minimal OpenAPI v3 (`/openapi/v3`, `/openapi/v3/apis/apps/v1`): the PATCH operations of
//! the workloads with their query parameters. kubectl reads it to learn that the server
//! validates fields itself (`fieldValidation`), so `kubectl apply --server-side` works with its
//! default `--validate=strict`. There are no schemas; `/openapi/v2` is not served.

use serde_json::{Value, json};

const HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000kube";

pub(crate) fn root() -> Value {
    json!({
        "paths": {
            "apis/apps/v1": {"serverRelativeURL": format!("/openapi/v3/apis/apps/v1?hash={HASH}")},
        }
    })
}

fn query(name: &str, description: &str) -> Value {
    json!({"name": name, "in": "query", "description": description, "schema": {"type": "string", "uniqueItems": true}})
}

fn patch_operation(kind: &str, plural: &str) -> Value {
    json!({
        "tags": ["apps_v1"],
        "description": format!("partially update the specified {kind}"),
        "operationId": format!("patchAppsV1Namespaced{kind}"),
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
        "x-kubernetes-group-version-kind": {"group": "apps", "version": "v1", "kind": kind},
        "x-kubernetes-resource": plural,
    })
}

pub(crate) fn apps_v1() -> Value {
    json!({
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes (kube-sim)", "version": "unversioned"},
        "paths": {
            "/apis/apps/v1/namespaces/{namespace}/deployments/{name}": {"patch": patch_operation("Deployment", "deployments")},
            "/apis/apps/v1/namespaces/{namespace}/statefulsets/{name}": {"patch": patch_operation("StatefulSet", "statefulsets")},
        },
        "components": {},
    })
}
