//! What a request is about, derived from its method, path and query exactly like the
//! apiserver's `RequestInfoFactory`: the attributes authorization decides on.

/// Attributes of one request.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct RequestInfo {
    pub is_resource_request: bool,
    /// Lower-case Kubernetes verb: get, list, watch, create, update, patch, delete, deletecollection.
    pub verb: String,
    pub path: String,
    pub api_group: String,
    pub api_version: String,
    pub namespace: String,
    pub resource: String,
    pub subresource: String,
    pub name: String,
}

impl RequestInfo {
    /// `resource` or `resource/subresource`, as RBAC rules name it.
    pub fn resource_with_sub(&self) -> String {
        if self.subresource.is_empty() {
            self.resource.clone()
        } else {
            format!("{}/{}", self.resource, self.subresource)
        }
    }
}

/// Namespace subresources (`/namespaces/{name}/status` is the namespace's own subresource).
const NAMESPACE_SUBRESOURCES: [&str; 2] = ["status", "finalize"];

pub fn request_info(method: &str, path: &str, query: &str) -> RequestInfo {
    let non_resource = |verb: &str| RequestInfo {
        is_resource_request: false,
        verb: verb.to_string(),
        path: path.to_string(),
        ..RequestInfo::default()
    };
    let method_verb = method.to_ascii_lowercase();
    let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
    let (group, version, rest) = match parts.as_slice() {
        ["api", version, rest @ ..] => ("", *version, rest),
        ["apis", group, version, rest @ ..] => (*group, *version, rest),
        _ => return non_resource(&method_verb),
    };
    if rest.is_empty() {
        return non_resource(&method_verb);
    }
    let mut info = RequestInfo {
        is_resource_request: true,
        path: path.to_string(),
        api_group: group.to_string(),
        api_version: version.to_string(),
        verb: match method {
            "POST" => "create",
            "GET" | "HEAD" => "get",
            "PUT" => "update",
            "PATCH" => "patch",
            "DELETE" => "delete",
            _ => "",
        }
        .to_string(),
        ..RequestInfo::default()
    };
    let mut current: &[&str] = rest;
    if current[0] == "namespaces" && current.len() > 1 {
        info.namespace = current[1].to_string();
        if current.len() > 2 && !NAMESPACE_SUBRESOURCES.contains(&current[2]) {
            current = &current[2..];
        }
    }
    match current.len() {
        0 => {}
        1 => info.resource = current[0].to_string(),
        2 => {
            info.resource = current[0].to_string();
            info.name = current[1].to_string();
        }
        _ => {
            info.resource = current[0].to_string();
            info.name = current[1].to_string();
            info.subresource = current[2].to_string();
        }
    }
    let watch = query_flag(query, "watch");
    if info.name.is_empty() && info.verb == "get" {
        info.verb = if watch { "watch" } else { "list" }.to_string();
    } else if watch && info.verb == "get" {
        info.verb = "watch".to_string();
    }
    if info.name.is_empty() && info.verb == "delete" {
        info.verb = "deletecollection".to_string();
    }
    info
}

fn query_flag(query: &str, key: &str) -> bool {
    query.split('&').any(|kv| {
        let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
        k == key && (v == "1" || v.eq_ignore_ascii_case("true"))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deployment_patch() {
        let i = request_info(
            "PATCH",
            "/apis/apps/v1/namespaces/ml/deployments/trainer",
            "",
        );
        assert!(i.is_resource_request);
        assert_eq!(
            (
                i.verb.as_str(),
                i.api_group.as_str(),
                i.resource.as_str(),
                i.namespace.as_str(),
                i.name.as_str()
            ),
            ("patch", "apps", "deployments", "ml", "trainer")
        );
    }

    #[test]
    fn namespace_get_is_in_its_own_namespace() {
        let i = request_info("GET", "/api/v1/namespaces/ml", "");
        assert_eq!(
            (
                i.verb.as_str(),
                i.resource.as_str(),
                i.namespace.as_str(),
                i.name.as_str()
            ),
            ("get", "namespaces", "ml", "ml")
        );
        let l = request_info("GET", "/api/v1/namespaces", "limit=500");
        assert_eq!((l.verb.as_str(), l.namespace.as_str()), ("list", ""));
    }

    #[test]
    fn pod_log_subresource_and_watch() {
        let i = request_info("GET", "/api/v1/namespaces/ml/pods/p-1/log", "follow=true");
        assert_eq!(i.resource_with_sub(), "pods/log");
        assert_eq!(i.verb, "get");
        let w = request_info("GET", "/api/v1/namespaces/ml/pods", "watch=true");
        assert_eq!(w.verb, "watch");
    }

    #[test]
    fn discovery_is_non_resource() {
        for p in [
            "/api",
            "/apis",
            "/api/v1",
            "/apis/apps/v1",
            "/version",
            "/openapi/v3",
        ] {
            assert!(!request_info("GET", p, "").is_resource_request, "{p}");
        }
    }
}
