//! The resource types the emulator serves, with the facts discovery and error messages need.

use serde::{Deserialize, Serialize};

/// A stored resource type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum ResourceKind {
    Namespace,
    Pod,
    Deployment,
    StatefulSet,
    ConfigMap,
    /// core/v1 Secret: `data` values base64 as the apiserver serves them (`stringData` is folded
    /// into `data` when stored).
    Secret,
    /// batch/v1 Job: `spec.template` is immutable after creation.
    Job,
    /// kubeflow.org/v1 PyTorchJob (a custom resource; served only while its CRD is installed).
    PyTorchJob,
    /// jobset.x-k8s.io/v1alpha2 JobSet (a custom resource; its templates change only while
    /// `spec.suspend` is true).
    JobSet,
    /// core/v1 Event, also served as events.k8s.io/v1 (converted at the boundary, as the
    /// apiserver stores both versions as one resource).
    Event,
    /// coordination.k8s.io/v1 Lease (leader election).
    Lease,
    // What `kubectl modekeeper install` applies besides namespaces, ConfigMaps and Deployments:
    // stored and served (get, list, server-side apply), never acted on.
    ServiceAccount,
    Service,
    Role,
    RoleBinding,
    ClusterRole,
    ClusterRoleBinding,
}

impl ResourceKind {
    pub const ALL: [ResourceKind; 17] = [
        ResourceKind::Namespace,
        ResourceKind::Pod,
        ResourceKind::Deployment,
        ResourceKind::StatefulSet,
        ResourceKind::ConfigMap,
        ResourceKind::Secret,
        ResourceKind::Job,
        ResourceKind::PyTorchJob,
        ResourceKind::JobSet,
        ResourceKind::Event,
        ResourceKind::Lease,
        ResourceKind::ServiceAccount,
        ResourceKind::Service,
        ResourceKind::Role,
        ResourceKind::RoleBinding,
        ResourceKind::ClusterRole,
        ResourceKind::ClusterRoleBinding,
    ];

    /// API group ("" for the core group).
    pub fn group(self) -> &'static str {
        match self {
            ResourceKind::Namespace
            | ResourceKind::Pod
            | ResourceKind::ConfigMap
            | ResourceKind::Secret
            | ResourceKind::ServiceAccount
            | ResourceKind::Service
            | ResourceKind::Event => "",
            ResourceKind::Lease => "coordination.k8s.io",
            ResourceKind::Deployment | ResourceKind::StatefulSet => "apps",
            ResourceKind::Job => "batch",
            ResourceKind::PyTorchJob => "kubeflow.org",
            ResourceKind::JobSet => "jobset.x-k8s.io",
            ResourceKind::Role
            | ResourceKind::RoleBinding
            | ResourceKind::ClusterRole
            | ResourceKind::ClusterRoleBinding => "rbac.authorization.k8s.io",
        }
    }

    pub fn version(self) -> &'static str {
        match self {
            ResourceKind::JobSet => "v1alpha2",
            _ => "v1",
        }
    }

    pub fn api_version(self) -> &'static str {
        match self {
            ResourceKind::Namespace
            | ResourceKind::Pod
            | ResourceKind::ConfigMap
            | ResourceKind::Secret
            | ResourceKind::ServiceAccount
            | ResourceKind::Service
            | ResourceKind::Event => "v1",
            ResourceKind::Lease => "coordination.k8s.io/v1",
            ResourceKind::Deployment | ResourceKind::StatefulSet => "apps/v1",
            ResourceKind::Job => "batch/v1",
            ResourceKind::PyTorchJob => "kubeflow.org/v1",
            ResourceKind::JobSet => "jobset.x-k8s.io/v1alpha2",
            ResourceKind::Role
            | ResourceKind::RoleBinding
            | ResourceKind::ClusterRole
            | ResourceKind::ClusterRoleBinding => "rbac.authorization.k8s.io/v1",
        }
    }

    /// Served through a CustomResourceDefinition (absent when the seed says the CRDs are not
    /// installed).
    pub fn is_custom(self) -> bool {
        matches!(self, ResourceKind::PyTorchJob | ResourceKind::JobSet)
    }

    /// Objects that are only stored and patched: no pods are spawned for them.
    pub fn is_plain_object(self) -> bool {
        matches!(
            self,
            ResourceKind::ConfigMap
                | ResourceKind::Secret
                | ResourceKind::Job
                | ResourceKind::PyTorchJob
                | ResourceKind::JobSet
        ) || self.is_install_object()
    }

    /// The kinds only `install` writes: no spec the emulator acts on, no status.
    pub fn is_install_object(self) -> bool {
        matches!(
            self,
            ResourceKind::ServiceAccount
                | ResourceKind::Service
                | ResourceKind::Role
                | ResourceKind::RoleBinding
                | ResourceKind::ClusterRole
                | ResourceKind::ClusterRoleBinding
        )
    }

    pub fn kind(self) -> &'static str {
        match self {
            ResourceKind::Namespace => "Namespace",
            ResourceKind::Pod => "Pod",
            ResourceKind::Deployment => "Deployment",
            ResourceKind::StatefulSet => "StatefulSet",
            ResourceKind::ConfigMap => "ConfigMap",
            ResourceKind::Secret => "Secret",
            ResourceKind::Job => "Job",
            ResourceKind::PyTorchJob => "PyTorchJob",
            ResourceKind::JobSet => "JobSet",
            ResourceKind::Event => "Event",
            ResourceKind::Lease => "Lease",
            ResourceKind::ServiceAccount => "ServiceAccount",
            ResourceKind::Service => "Service",
            ResourceKind::Role => "Role",
            ResourceKind::RoleBinding => "RoleBinding",
            ResourceKind::ClusterRole => "ClusterRole",
            ResourceKind::ClusterRoleBinding => "ClusterRoleBinding",
        }
    }

    pub fn plural(self) -> &'static str {
        match self {
            ResourceKind::Namespace => "namespaces",
            ResourceKind::Pod => "pods",
            ResourceKind::Deployment => "deployments",
            ResourceKind::StatefulSet => "statefulsets",
            ResourceKind::ConfigMap => "configmaps",
            ResourceKind::Secret => "secrets",
            ResourceKind::Job => "jobs",
            ResourceKind::PyTorchJob => "pytorchjobs",
            ResourceKind::JobSet => "jobsets",
            ResourceKind::Event => "events",
            ResourceKind::Lease => "leases",
            ResourceKind::ServiceAccount => "serviceaccounts",
            ResourceKind::Service => "services",
            ResourceKind::Role => "roles",
            ResourceKind::RoleBinding => "rolebindings",
            ResourceKind::ClusterRole => "clusterroles",
            ResourceKind::ClusterRoleBinding => "clusterrolebindings",
        }
    }

    pub fn singular(self) -> &'static str {
        match self {
            ResourceKind::Namespace => "namespace",
            ResourceKind::Pod => "pod",
            ResourceKind::Deployment => "deployment",
            ResourceKind::StatefulSet => "statefulset",
            ResourceKind::ConfigMap => "configmap",
            ResourceKind::Secret => "secret",
            ResourceKind::Job => "job",
            ResourceKind::PyTorchJob => "pytorchjob",
            ResourceKind::JobSet => "jobset",
            ResourceKind::Event => "event",
            ResourceKind::Lease => "lease",
            ResourceKind::ServiceAccount => "serviceaccount",
            ResourceKind::Service => "service",
            ResourceKind::Role => "role",
            ResourceKind::RoleBinding => "rolebinding",
            ResourceKind::ClusterRole => "clusterrole",
            ResourceKind::ClusterRoleBinding => "clusterrolebinding",
        }
    }

    pub fn short_names(self) -> &'static [&'static str] {
        match self {
            ResourceKind::Namespace => &["ns"],
            ResourceKind::Pod => &["po"],
            ResourceKind::Deployment => &["deploy"],
            ResourceKind::StatefulSet => &["sts"],
            ResourceKind::ConfigMap => &["cm"],
            ResourceKind::Event => &["ev"],
            ResourceKind::ServiceAccount => &["sa"],
            ResourceKind::Service => &["svc"],
            _ => &[],
        }
    }

    pub fn namespaced(self) -> bool {
        !matches!(
            self,
            ResourceKind::Namespace | ResourceKind::ClusterRole | ResourceKind::ClusterRoleBinding
        )
    }

    /// Objects clients create and update themselves (Events, Leases): no template, no
    /// generation, created with POST and replaced with PUT.
    pub fn is_client_record(self) -> bool {
        matches!(self, ResourceKind::Event | ResourceKind::Lease)
    }

    /// Workloads that carry a pod template and accept patches.
    pub fn is_workload(self) -> bool {
        matches!(self, ResourceKind::Deployment | ResourceKind::StatefulSet)
    }

    /// The resource named by a URL segment in a given group.
    pub fn from_plural(group: &str, plural: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|k| k.group() == group && k.plural() == plural)
    }

    /// Accepts `Deployment`, `deployment`, `deployments`, `deploy`, ... (used by seeds and hooks).
    pub fn parse(text: &str) -> Option<Self> {
        let t = text.to_ascii_lowercase();
        Self::ALL.into_iter().find(|k| {
            k.kind().eq_ignore_ascii_case(&t)
                || k.plural() == t
                || k.singular() == t
                || k.short_names().contains(&t.as_str())
        })
    }
}

impl std::fmt::Display for ResourceKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.kind())
    }
}
