//! The one table of the object kinds ModeKeeper acts on: per kind its API group/version and
//! resource, where its pod template(s) live, whether they can be patched, and how its pods are
//! found. Everything else (plan validation, verify, apply, the knobs ConfigMap routing) reads it
//! from here. Pure data.

use crate::plan::WorkloadKind;

/// Whether a kind's pod templates accept a patch once the object exists.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TemplateMutability {
    /// Patchable; a change rolls the pods (Deployment, StatefulSet) or reaches the pods the
    /// operator starts next (PyTorchJob).
    Mutable,
    /// Rejected by the API server with 422 (`spec.template: field is immutable`: batch/v1 Job).
    Immutable,
    /// Accepted only while `spec.suspend` is true (JobSet's webhook); a running one is immutable.
    WhileSuspended,
    /// Not a workload (the knobs ConfigMap): no pod template at all.
    NoTemplate,
}

/// Where a kind keeps its pod template(s), as JSON pointer segments from the object root.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TemplatePaths {
    /// One template at `spec.template`.
    Single,
    /// One per replica role: `spec.pytorchReplicaSpecs.<Role>.template` (Master, Worker).
    PerReplicaRole,
    /// One per replicated job: `spec.replicatedJobs[i].template.spec.template` (an array, which
    /// a JSON merge patch can only replace whole).
    ReplicatedJobs,
    None,
}

/// One row of the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KindSpec {
    pub kind: WorkloadKind,
    /// API group (`""` for the core group).
    pub group: &'static str,
    pub version: &'static str,
    /// The resource (plural) in the URL.
    pub plural: &'static str,
    /// Served through a CustomResourceDefinition: may be absent from a cluster (`kind_not_served`).
    pub custom: bool,
    pub templates: TemplatePaths,
    pub mutability: TemplateMutability,
    /// Label keys the pods carry with the workload's name (besides the workload's own selector
    /// and ownerReferences), in the order they are tried.
    pub pod_name_labels: &'static [&'static str],
    /// Label whose value is the pod's rank in a multi-pod job.
    pub rank_labels: &'static [&'static str],
}

impl KindSpec {
    /// `group/version` (`v1` for the core group).
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.to_string()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// The collection's URL path in a namespace.
    pub fn collection_path(&self, namespace: &str) -> String {
        let root = if self.group.is_empty() {
            format!("/api/{}", self.version)
        } else {
            format!("/apis/{}/{}", self.group, self.version)
        };
        format!("{root}/namespaces/{namespace}/{}", self.plural)
    }

    /// The object's URL path.
    pub fn object_path(&self, namespace: &str, name: &str) -> String {
        format!("{}/{name}", self.collection_path(namespace))
    }

    /// `plural.group` as RBAC and error messages name it (`jobs.batch`, `configmaps`).
    pub fn qualified_resource(&self) -> String {
        if self.group.is_empty() {
            self.plural.to_string()
        } else {
            format!("{}.{}", self.plural, self.group)
        }
    }

    /// Whether a plan may carry knobs in this kind's pod-template annotations (cold knobs roll
    /// out there); otherwise they travel in the knobs ConfigMap.
    pub fn template_patchable(&self) -> bool {
        self.mutability == TemplateMutability::Mutable
    }
}

/// The table. Order: the kinds of `WorkloadKind::ALL`.
pub const KINDS: [KindSpec; 6] = [
    KindSpec {
        kind: WorkloadKind::Deployment,
        group: "apps",
        version: "v1",
        plural: "deployments",
        custom: false,
        templates: TemplatePaths::Single,
        mutability: TemplateMutability::Mutable,
        pod_name_labels: &[],
        rank_labels: &[],
    },
    KindSpec {
        kind: WorkloadKind::StatefulSet,
        group: "apps",
        version: "v1",
        plural: "statefulsets",
        custom: false,
        templates: TemplatePaths::Single,
        mutability: TemplateMutability::Mutable,
        pod_name_labels: &[],
        rank_labels: &["apps.kubernetes.io/pod-index"],
    },
    KindSpec {
        kind: WorkloadKind::Job,
        group: "batch",
        version: "v1",
        plural: "jobs",
        custom: false,
        templates: TemplatePaths::Single,
        mutability: TemplateMutability::Immutable,
        pod_name_labels: &["batch.kubernetes.io/job-name", "job-name"],
        rank_labels: &["batch.kubernetes.io/job-completion-index"],
    },
    KindSpec {
        kind: WorkloadKind::PyTorchJob,
        group: "kubeflow.org",
        version: "v1",
        plural: "pytorchjobs",
        custom: true,
        templates: TemplatePaths::PerReplicaRole,
        mutability: TemplateMutability::Mutable,
        pod_name_labels: &["training.kubeflow.org/job-name"],
        rank_labels: &["training.kubeflow.org/replica-index"],
    },
    KindSpec {
        kind: WorkloadKind::JobSet,
        group: "jobset.x-k8s.io",
        version: "v1alpha2",
        plural: "jobsets",
        custom: true,
        templates: TemplatePaths::ReplicatedJobs,
        mutability: TemplateMutability::WhileSuspended,
        pod_name_labels: &["jobset.sigs.k8s.io/jobset-name"],
        rank_labels: &["batch.kubernetes.io/job-completion-index"],
    },
    KindSpec {
        kind: WorkloadKind::ConfigMap,
        group: "",
        version: "v1",
        plural: "configmaps",
        custom: false,
        templates: TemplatePaths::None,
        mutability: TemplateMutability::NoTemplate,
        pod_name_labels: &[],
        rank_labels: &[],
    },
];

/// The row of `kind`.
pub fn spec(kind: WorkloadKind) -> &'static KindSpec {
    KINDS
        .iter()
        .find(|s| s.kind == kind)
        .expect("every WorkloadKind has a row")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_has_one_row() {
        for k in WorkloadKind::ALL {
            assert_eq!(KINDS.iter().filter(|s| s.kind == k).count(), 1, "{k:?}");
            assert_eq!(spec(k).kind, k);
        }
        assert_eq!(KINDS.len(), WorkloadKind::ALL.len());
    }

    #[test]
    fn paths_follow_the_api_conventions() {
        let job = spec(WorkloadKind::Job);
        assert_eq!(
            job.object_path("ml", "t"),
            "/apis/batch/v1/namespaces/ml/jobs/t"
        );
        assert_eq!(job.qualified_resource(), "jobs.batch");
        let cm = spec(WorkloadKind::ConfigMap);
        assert_eq!(
            cm.object_path("ml", "k"),
            "/api/v1/namespaces/ml/configmaps/k"
        );
        assert_eq!(cm.api_version(), "v1");
        assert_eq!(
            spec(WorkloadKind::JobSet).api_version(),
            "jobset.x-k8s.io/v1alpha2"
        );
        // Only kinds whose templates accept a patch carry knob annotations.
        let patchable: Vec<_> = KINDS
            .iter()
            .filter(|s| s.template_patchable())
            .map(|s| s.kind)
            .collect();
        assert_eq!(
            patchable,
            [
                WorkloadKind::Deployment,
                WorkloadKind::StatefulSet,
                WorkloadKind::PyTorchJob
            ]
        );
    }
}
