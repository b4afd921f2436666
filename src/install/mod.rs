//! The in-cluster controller's manifests, as `kubectl modekeeper install` prints or applies them:
//! Namespace, ServiceAccount, least-privilege RBAC (from the permission table in [`rbac`]),
//! Deployment, metrics Service and the default settings ConfigMap.
//!
//! Pure: options in, JSON objects out, in the order they must be applied (the Namespace first,
//! the Deployment after everything it references). Never reads a cluster or a file; applying is
//! [`crate::k8s`]'s job.

mod object_ref;
pub mod rbac;
mod settings;

use serde_json::{Map, Value, json};

pub use object_ref::{OBJECT_KINDS, ObjectRef};
pub use rbac::{LICENSE_SECRET, Permission, Rule, Scope, User, permissions, rules};
pub use settings::{SETTINGS, Setting};

/// The controller's namespace unless `--namespace` says otherwise.
pub const DEFAULT_NAMESPACE: &str = "modekeeper-system";
/// Name of the ServiceAccount, the RBAC objects, the Deployment and its pods' label.
pub const CONTROLLER_NAME: &str = "modekeeper-controller";
/// The Role in the controller's own namespace (its Leases, state, settings, Secret); distinct from
/// [`CONTROLLER_NAME`] so a watched namespace can also be the controller's own.
pub const SELF_ROLE_NAME: &str = "modekeeper-controller-self";
pub const SETTINGS_CONFIGMAP: &str = "modekeeper-settings";
pub const METRICS_SERVICE: &str = "modekeeper-metrics";
/// The one port of the controller: `/metrics`, `/healthz`, `/readyz`.
pub const HTTP_PORT: u16 = 8080;
/// The image's non-root user (the Dockerfile's `USER`).
pub const RUN_AS_USER: i64 = 65532;
/// Annotation key prefix that says why each RBAC rule exists (`modekeeper.io/rule-01`, …).
pub const RULE_ANNOTATION_PREFIX: &str = "modekeeper.io/rule-";
/// The image unless `--image` says otherwise: this build's version.
pub fn default_image() -> String {
    format!(
        "ghcr.io/modekeeper/modekeeper:v{}",
        env!("CARGO_PKG_VERSION")
    )
}

/// What `install` is asked to produce.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstallOptions {
    /// The controller's own namespace.
    pub namespace: String,
    /// Namespaces whose workloads are watched; empty: all (a ClusterRole).
    pub watch_namespaces: Vec<String>,
    pub image: String,
    pub replicas: u32,
    pub shards: u32,
}

impl Default for InstallOptions {
    fn default() -> Self {
        InstallOptions {
            namespace: DEFAULT_NAMESPACE.into(),
            watch_namespaces: vec![],
            image: default_image(),
            replicas: 2,
            shards: 1,
        }
    }
}

/// Options that cannot produce valid manifests.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InstallError {
    #[error(
        "{what} {name:?} is not a valid namespace name (a DNS-1123 label: a-z, 0-9, '-', at most 63)"
    )]
    InvalidNamespace { what: &'static str, name: String },
    #[error(
        "--image {0:?} is not an image reference (no whitespace, control characters or leading '-')"
    )]
    InvalidImage(String),
    #[error("--replicas must be between 1 and {max}, not {got}")]
    InvalidReplicas { got: u32, max: u32 },
    #[error("--shards must be between 1 and {max}, not {got}")]
    InvalidShards { got: u32, max: u32 },
    #[error("{0}: not an object that install produces")]
    UnknownObject(String),
}

const MAX_REPLICAS: u32 = 100;
const MAX_SHARDS: u32 = 1024;

fn dns1123_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

impl InstallOptions {
    /// Checks every option; the watched namespaces come back sorted and deduplicated.
    pub fn validated(mut self) -> Result<InstallOptions, InstallError> {
        if !dns1123_label(&self.namespace) {
            return Err(InstallError::InvalidNamespace {
                what: "--namespace",
                name: self.namespace,
            });
        }
        for ns in &self.watch_namespaces {
            if !dns1123_label(ns) {
                return Err(InstallError::InvalidNamespace {
                    what: "--watch-namespace",
                    name: ns.clone(),
                });
            }
        }
        self.watch_namespaces.sort();
        self.watch_namespaces.dedup();
        if self.image.is_empty()
            || self.image.starts_with('-')
            || self
                .image
                .chars()
                .any(|c| c.is_whitespace() || c.is_control())
        {
            return Err(InstallError::InvalidImage(self.image));
        }
        if !(1..=MAX_REPLICAS).contains(&self.replicas) {
            return Err(InstallError::InvalidReplicas {
                got: self.replicas,
                max: MAX_REPLICAS,
            });
        }
        if !(1..=MAX_SHARDS).contains(&self.shards) {
            return Err(InstallError::InvalidShards {
                got: self.shards,
                max: MAX_SHARDS,
            });
        }
        Ok(self)
    }
}

fn labels() -> Value {
    json!({
        "app.kubernetes.io/name": "modekeeper",
        "app.kubernetes.io/component": "controller",
        "app.kubernetes.io/version": env!("CARGO_PKG_VERSION"),
        "app.kubernetes.io/managed-by": "kubectl-modekeeper",
    })
}

/// The labels that select the controller's pods (stable across versions: a Deployment's selector is
/// immutable).
fn selector_labels() -> Value {
    json!({
        "app.kubernetes.io/name": "modekeeper",
        "app.kubernetes.io/component": "controller",
    })
}

fn metadata(name: &str, namespace: Option<&str>) -> Value {
    let mut m = json!({"name": name, "labels": labels()});
    if let Some(ns) = namespace {
        m["namespace"] = json!(ns);
    }
    m
}

/// A Role or ClusterRole of `rules`, each rule's reasons in an annotation.
fn role(kind: &str, name: &str, namespace: Option<&str>, rules: &[Rule]) -> Value {
    let mut meta = metadata(name, namespace);
    let mut why = Map::new();
    for (i, r) in rules.iter().enumerate() {
        why.insert(
            format!("{RULE_ANNOTATION_PREFIX}{:02}", i + 1),
            json!(r.why.join("; ")),
        );
    }
    meta["annotations"] = Value::Object(why);
    let rules: Vec<Value> = rules
        .iter()
        .map(|r| {
            let mut v = json!({
                "apiGroups": [r.group],
                "resources": [r.resource],
                "verbs": r.verbs,
            });
            if !r.names.is_empty() {
                v["resourceNames"] = json!(r.names);
            }
            v
        })
        .collect();
    json!({
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": kind,
        "metadata": meta,
        "rules": rules,
    })
}

fn binding(kind: &str, name: &str, namespace: Option<&str>, role_kind: &str, sa_ns: &str) -> Value {
    json!({
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": kind,
        "metadata": metadata(name, namespace),
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": role_kind, "name": name},
        "subjects": [{"kind": "ServiceAccount", "name": CONTROLLER_NAME, "namespace": sa_ns}],
    })
}

/// The plugin's Role (docs/rbac.yaml): what a person running `kubectl modekeeper` in one namespace
/// needs, from the same table as the controller's (its `get` on namespaces reaches the Role's own
/// Namespace object).
pub fn plugin_role() -> Value {
    let mut rules = rbac::rules(Scope::Watched, true);
    rules.extend(rbac::rules(Scope::Cluster, true));
    let mut role = role("Role", "modekeeper", None, &rules);
    role["metadata"] = json!({
        "name": "modekeeper",
        "labels": {"app.kubernetes.io/name": "modekeeper"},
        "annotations": role["metadata"]["annotations"].clone(),
    });
    role
}

/// The RBAC objects: cluster-wide (a ClusterRole) or per watched namespace (a Role in each), plus
/// the Role in the controller's own namespace.
fn rbac_objects(o: &InstallOptions) -> Vec<Value> {
    let ns = o.namespace.as_str();
    let mut out = vec![];
    let watched = rbac::rules(Scope::Watched, false);
    let cluster = rbac::rules(Scope::Cluster, false);
    if o.watch_namespaces.is_empty() {
        let mut all = watched;
        all.extend(cluster);
        out.push(role("ClusterRole", CONTROLLER_NAME, None, &all));
        out.push(binding(
            "ClusterRoleBinding",
            CONTROLLER_NAME,
            None,
            "ClusterRole",
            ns,
        ));
    } else {
        // A Role may grant `get` on its own Namespace object: the API server authorizes a request
        // for namespace X as one in namespace X.
        let mut here = watched;
        here.extend(cluster);
        for w in &o.watch_namespaces {
            out.push(role("Role", CONTROLLER_NAME, Some(w), &here));
            out.push(binding("RoleBinding", CONTROLLER_NAME, Some(w), "Role", ns));
        }
    }
    out.push(role(
        "Role",
        SELF_ROLE_NAME,
        Some(ns),
        &rbac::rules(Scope::Own, false),
    ));
    out.push(binding("RoleBinding", SELF_ROLE_NAME, Some(ns), "Role", ns));
    out
}

fn settings_configmap(ns: &str) -> Value {
    let data: Map<String, Value> = SETTINGS
        .iter()
        .map(|s| (s.key.to_string(), json!(s.default)))
        .collect();
    json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": metadata(SETTINGS_CONFIGMAP, Some(ns)),
        "data": data,
    })
}

fn deployment(o: &InstallOptions) -> Value {
    let mut args = vec![
        "controller".to_string(),
        format!("--shards={}", o.shards),
        format!("--settings={SETTINGS_CONFIGMAP}"),
        format!("--listen=0.0.0.0:{HTTP_PORT}"),
    ];
    if !o.watch_namespaces.is_empty() {
        args.push(format!(
            "--watch-namespace={}",
            o.watch_namespaces.join(",")
        ));
    }
    let field_env = |name: &str, path: &str| json!({"name": name, "valueFrom": {"fieldRef": {"fieldPath": path}}});
    let probe = |path: &str, period: i64| {
        json!({
            "httpGet": {"path": path, "port": "http"},
            "periodSeconds": period,
            "failureThreshold": 3,
        })
    };
    json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": metadata(CONTROLLER_NAME, Some(&o.namespace)),
        "spec": {
            "replicas": o.replicas,
            "selector": {"matchLabels": selector_labels()},
            "template": {
                "metadata": {"labels": labels()},
                "spec": {
                    "serviceAccountName": CONTROLLER_NAME,
                    "securityContext": {
                        "runAsNonRoot": true,
                        "runAsUser": RUN_AS_USER,
                        "runAsGroup": RUN_AS_USER,
                        "seccompProfile": {"type": "RuntimeDefault"},
                    },
                    "containers": [{
                        "name": "controller",
                        "image": o.image,
                        "imagePullPolicy": "IfNotPresent",
                        "args": args,
                        "env": [
                            // The Lease holder identity and the namespace of its Leases and state.
                            field_env("POD_NAME", "metadata.name"),
                            field_env("POD_NAMESPACE", "metadata.namespace"),
                            // The compiled-policy cache and other per-user state go under HOME,
                            // the only writable directory.
                            {"name": "HOME", "value": "/tmp"},
                        ],
                        "ports": [{"name": "http", "containerPort": HTTP_PORT, "protocol": "TCP"}],
                        "livenessProbe": probe("/healthz", 10),
                        "readinessProbe": probe("/readyz", 5),
                        "resources": {
                            "requests": {"cpu": "100m", "memory": "128Mi"},
                            "limits": {"memory": "1Gi"},
                        },
                        "securityContext": {
                            "allowPrivilegeEscalation": false,
                            "readOnlyRootFilesystem": true,
                            "runAsNonRoot": true,
                            "capabilities": {"drop": ["ALL"]},
                            "seccompProfile": {"type": "RuntimeDefault"},
                        },
                        "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}],
                    }],
                    "volumes": [{"name": "tmp", "emptyDir": {"sizeLimit": "256Mi"}}],
                },
            },
        },
    })
}

fn metrics_service(ns: &str) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": metadata(METRICS_SERVICE, Some(ns)),
        "spec": {
            "type": "ClusterIP",
            "selector": selector_labels(),
            "ports": [{"name": "http-metrics", "port": HTTP_PORT, "targetPort": "http", "protocol": "TCP"}],
        },
    })
}

/// Every object, in apply order.
pub fn manifests(o: &InstallOptions) -> Result<Vec<Value>, InstallError> {
    let o = o.clone().validated()?;
    let ns = o.namespace.as_str();
    let mut out = vec![
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns, "labels": labels()}}),
        json!({
            "apiVersion": "v1",
            "kind": "ServiceAccount",
            "metadata": metadata(CONTROLLER_NAME, Some(ns)),
        }),
    ];
    out.extend(rbac_objects(&o));
    out.push(settings_configmap(ns));
    out.push(deployment(&o));
    out.push(metrics_service(ns));
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kinds(objs: &[Value]) -> Vec<String> {
        objs.iter()
            .map(|o| {
                format!(
                    "{} {}/{}",
                    o["kind"].as_str().unwrap(),
                    o["metadata"]["namespace"].as_str().unwrap_or("-"),
                    o["metadata"]["name"].as_str().unwrap()
                )
            })
            .collect()
    }

    #[test]
    fn cluster_wide_by_default() {
        let objs = manifests(&InstallOptions::default()).unwrap();
        assert_eq!(
            kinds(&objs),
            [
                "Namespace -/modekeeper-system",
                "ServiceAccount modekeeper-system/modekeeper-controller",
                "ClusterRole -/modekeeper-controller",
                "ClusterRoleBinding -/modekeeper-controller",
                "Role modekeeper-system/modekeeper-controller-self",
                "RoleBinding modekeeper-system/modekeeper-controller-self",
                "ConfigMap modekeeper-system/modekeeper-settings",
                "Deployment modekeeper-system/modekeeper-controller",
                "Service modekeeper-system/modekeeper-metrics",
            ]
        );
        for o in &objs {
            ObjectRef::of(o).unwrap();
        }
    }

    #[test]
    fn watched_namespaces_get_a_role_each_and_only_their_namespace_objects() {
        let o = InstallOptions {
            namespace: "ops".into(),
            watch_namespaces: vec!["ml-b".into(), "ml-a".into(), "ml-b".into()],
            ..InstallOptions::default()
        };
        let objs = manifests(&o).unwrap();
        let k = kinds(&objs);
        assert!(!k.iter().any(|k| k.starts_with("Cluster")), "{k:?}");
        for want in [
            "Role ml-a/modekeeper-controller",
            "RoleBinding ml-a/modekeeper-controller",
            "Role ml-b/modekeeper-controller",
            "Role ops/modekeeper-controller-self",
        ] {
            assert!(k.contains(&want.to_string()), "{want} in {k:?}");
        }
        let role = &objs[2];
        assert_eq!(role["metadata"]["namespace"], "ml-a");
        assert_eq!(
            role["rules"].as_array().unwrap().last().unwrap(),
            &json!({"apiGroups": [""], "resources": ["namespaces"], "verbs": ["get"]})
        );
        let rb = objs
            .iter()
            .find(|o| o["kind"] == "RoleBinding" && o["metadata"]["namespace"] == "ml-a")
            .unwrap();
        assert_eq!(
            rb["subjects"],
            json!([{"kind": "ServiceAccount", "name": "modekeeper-controller", "namespace": "ops"}])
        );
        let dep = objs.iter().find(|o| o["kind"] == "Deployment").unwrap();
        assert!(
            dep["spec"]["template"]["spec"]["containers"][0]["args"]
                .as_array()
                .unwrap()
                .contains(&json!("--watch-namespace=ml-a,ml-b"))
        );
    }

    #[test]
    fn every_rule_says_why() {
        let objs = manifests(&InstallOptions::default()).unwrap();
        for o in objs
            .iter()
            .filter(|o| o["kind"] == "Role" || o["kind"] == "ClusterRole")
        {
            let rules = o["rules"].as_array().unwrap();
            let notes = o["metadata"]["annotations"].as_object().unwrap();
            assert_eq!(notes.len(), rules.len(), "{}", o["metadata"]["name"]);
            for i in 1..=rules.len() {
                let why = notes[&format!("{RULE_ANNOTATION_PREFIX}{i:02}")]
                    .as_str()
                    .unwrap();
                assert!(why.len() > 20, "{why}");
            }
        }
    }

    #[test]
    fn bad_options_are_refused() {
        let bad = |o: InstallOptions| manifests(&o).unwrap_err();
        let d = InstallOptions::default;
        assert!(matches!(
            bad(InstallOptions {
                namespace: "Ops".into(),
                ..d()
            }),
            InstallError::InvalidNamespace { .. }
        ));
        assert!(matches!(
            bad(InstallOptions {
                watch_namespaces: vec!["".into()],
                ..d()
            }),
            InstallError::InvalidNamespace { .. }
        ));
        assert!(matches!(
            bad(InstallOptions {
                image: "a b".into(),
                ..d()
            }),
            InstallError::InvalidImage(_)
        ));
        assert!(matches!(
            bad(InstallOptions { replicas: 0, ..d() }),
            InstallError::InvalidReplicas { .. }
        ));
        assert!(matches!(
            bad(InstallOptions { shards: 0, ..d() }),
            InstallError::InvalidShards { .. }
        ));
    }

    #[test]
    fn paths_of_cluster_and_namespaced_objects() {
        let objs = manifests(&InstallOptions::default()).unwrap();
        let paths: Vec<String> = objs
            .iter()
            .map(|o| ObjectRef::of(o).unwrap().collection_path())
            .collect();
        assert_eq!(paths[0], "/api/v1/namespaces");
        assert_eq!(paths[2], "/apis/rbac.authorization.k8s.io/v1/clusterroles");
        assert_eq!(
            paths[7],
            "/apis/apps/v1/namespaces/modekeeper-system/deployments"
        );
        assert!(
            ObjectRef::of(
                &json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "x"}})
            )
            .is_err()
        );
    }
}
