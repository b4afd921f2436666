//! Where each object `install` produces lives in the API: its collection path, for applying it.
//! Pure.

use serde_json::Value;

use super::InstallError;

/// The kinds [`super::manifests`] produces, with what an API request needs:
/// `(apiVersion, kind, plural, namespaced)`.
pub const OBJECT_KINDS: &[(&str, &str, &str, bool)] = &[
    ("v1", "Namespace", "namespaces", false),
    ("v1", "ServiceAccount", "serviceaccounts", true),
    (
        "rbac.authorization.k8s.io/v1",
        "ClusterRole",
        "clusterroles",
        false,
    ),
    (
        "rbac.authorization.k8s.io/v1",
        "ClusterRoleBinding",
        "clusterrolebindings",
        false,
    ),
    ("rbac.authorization.k8s.io/v1", "Role", "roles", true),
    (
        "rbac.authorization.k8s.io/v1",
        "RoleBinding",
        "rolebindings",
        true,
    ),
    ("v1", "ConfigMap", "configmaps", true),
    ("apps/v1", "Deployment", "deployments", true),
    ("v1", "Service", "services", true),
];

/// Where an object of [`super::manifests`] lives in the API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectRef {
    pub api_version: &'static str,
    pub kind: &'static str,
    pub plural: &'static str,
    pub namespace: Option<String>,
    pub name: String,
}

impl ObjectRef {
    /// Reads an object's identity; an object of another kind is an error.
    pub fn of(object: &Value) -> Result<ObjectRef, InstallError> {
        let api_version = object["apiVersion"].as_str().unwrap_or_default();
        let kind = object["kind"].as_str().unwrap_or_default();
        let name = object["metadata"]["name"].as_str().unwrap_or_default();
        let &(api_version, kind, plural, namespaced) = OBJECT_KINDS
            .iter()
            .find(|(a, k, _, _)| *a == api_version && *k == kind)
            .ok_or_else(|| InstallError::UnknownObject(format!("{api_version} {kind}")))?;
        let namespace = object["metadata"]["namespace"].as_str().map(str::to_string);
        if name.is_empty() || namespace.is_some() != namespaced {
            return Err(InstallError::UnknownObject(format!("{kind} {name:?}")));
        }
        Ok(ObjectRef {
            api_version,
            kind,
            plural,
            namespace,
            name: name.to_string(),
        })
    }

    /// The collection's URL path.
    pub fn collection_path(&self) -> String {
        let root = if self.api_version.contains('/') {
            format!("/apis/{}", self.api_version)
        } else {
            format!("/api/{}", self.api_version)
        };
        match &self.namespace {
            Some(ns) => format!("{root}/namespaces/{ns}/{}", self.plural),
            None => format!("{root}/{}", self.plural),
        }
    }

    /// `kind/name` or `kind ns/name`, for messages.
    pub fn describe(&self) -> String {
        match &self.namespace {
            Some(ns) => format!("{} {ns}/{}", self.kind, self.name),
            None => format!("{} {}", self.kind, self.name),
        }
    }
}
