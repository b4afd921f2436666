//! The resource types the emulator serves, with the facts discovery and error messages need.

use serde::{Deserialize, Serialize};

/// A stored resource type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum ResourceKind {
    Namespace,
    Pod,
    Deployment,
    StatefulSet,
}

impl ResourceKind {
    pub const ALL: [ResourceKind; 4] = [
        ResourceKind::Namespace,
        ResourceKind::Pod,
        ResourceKind::Deployment,
        ResourceKind::StatefulSet,
    ];

    /// API group ("" for the core group).
    pub fn group(self) -> &'static str {
        match self {
            ResourceKind::Namespace | ResourceKind::Pod => "",
            ResourceKind::Deployment | ResourceKind::StatefulSet => "apps",
        }
    }

    pub fn version(self) -> &'static str {
        "v1"
    }

    pub fn api_version(self) -> &'static str {
        match self {
            ResourceKind::Namespace | ResourceKind::Pod => "v1",
            ResourceKind::Deployment | ResourceKind::StatefulSet => "apps/v1",
        }
    }

    pub fn kind(self) -> &'static str {
        match self {
            ResourceKind::Namespace => "Namespace",
            ResourceKind::Pod => "Pod",
            ResourceKind::Deployment => "Deployment",
            ResourceKind::StatefulSet => "StatefulSet",
        }
    }

    pub fn plural(self) -> &'static str {
        match self {
            ResourceKind::Namespace => "namespaces",
            ResourceKind::Pod => "pods",
            ResourceKind::Deployment => "deployments",
            ResourceKind::StatefulSet => "statefulsets",
        }
    }

    pub fn singular(self) -> &'static str {
        match self {
            ResourceKind::Namespace => "namespace",
            ResourceKind::Pod => "pod",
            ResourceKind::Deployment => "deployment",
            ResourceKind::StatefulSet => "statefulset",
        }
    }

    pub fn short_names(self) -> &'static [&'static str] {
        match self {
            ResourceKind::Namespace => &["ns"],
            ResourceKind::Pod => &["po"],
            ResourceKind::Deployment => &["deploy"],
            ResourceKind::StatefulSet => &["sts"],
        }
    }

    pub fn namespaced(self) -> bool {
        !matches!(self, ResourceKind::Namespace)
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
