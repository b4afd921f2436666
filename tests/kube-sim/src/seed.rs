//! The declarative description of a simulated cluster: what the builder collects and what the
//! binary reads from `--seed seed.json`. The format is documented in the crate README.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::auth::Rule;
use crate::faults::Fault;
use crate::resource::ResourceKind;

/// Everything a simulated cluster starts with.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Seed {
    /// `gitVersion` reported by `/version` (default `v1.32.4+kube-sim`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_version: Option<String>,
    /// Namespaces besides `default` (which always exists). Namespaces named by workloads and
    /// pods are created too.
    #[serde(default)]
    pub namespaces: Vec<String>,
    #[serde(default)]
    pub workloads: Vec<WorkloadSeed>,
    /// Stand-alone pods (not owned by a workload).
    #[serde(default)]
    pub pods: Vec<PodSeed>,
    /// Bearer tokens accepted by the server.
    #[serde(default)]
    pub tokens: Vec<TokenSeed>,
    /// When present, requests without a token are served as `system:anonymous` with these rules;
    /// when absent they get 401.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub anonymous: Option<AnonymousSeed>,
    #[serde(default)]
    pub faults: Vec<Fault>,
    #[serde(default)]
    pub validation: ValidationConfig,
    /// Field manager that owns the seeded objects' fields (default `kube-sim-seed`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed_field_manager: Option<String>,
    /// When a Deployment's or StatefulSet's pod template changes, replace its pods with new ones
    /// built from the new template (default false: pods stay as they are).
    #[serde(default)]
    pub rollout_on_template_change: bool,
    /// ConfigMaps, Secrets, Jobs, PyTorchJobs and JobSets, stored as given (no pods are run for them).
    #[serde(default)]
    pub objects: Vec<ObjectSeed>,
    /// The PyTorchJob and JobSet CRDs are not installed (default false): their API groups are
    /// absent from discovery and every request to them is a 404, as on a cluster without the CRD.
    #[serde(default)]
    pub crds_absent: bool,
    /// How often a watch that allows bookmarks gets a BOOKMARK event (default 60 s, about what
    /// the apiserver does); one is also sent just before the watch's timeout ends it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bookmark_interval_ms: Option<u64>,
}

/// A stored object of a kind without pods of its own (`kind` one of ConfigMap, Secret, Job, PyTorchJob,
/// JobSet); `object` needs `metadata.name` and `metadata.namespace`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ObjectSeed {
    pub kind: ResourceKind,
    pub object: serde_json::Value,
}

/// A Deployment or StatefulSet, with the pods it runs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WorkloadSeed {
    #[serde(default = "default_workload_kind")]
    pub kind: ResourceKind,
    pub namespace: String,
    pub name: String,
    #[serde(default = "one")]
    pub replicas: u32,
    /// Selector and pod-template labels; default `{"app": <name>}`.
    #[serde(default)]
    pub selector: BTreeMap<String, String>,
    /// Extra labels on the workload object itself.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Annotations on the workload object (`metadata.annotations`).
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
    /// Annotations on the pod template (`spec.template.metadata.annotations`), copied to its pods.
    #[serde(default)]
    pub template_annotations: BTreeMap<String, String>,
    /// Default: one container `trainer` running `ghcr.io/modekeeper/trainer:latest`.
    #[serde(default)]
    pub containers: Vec<ContainerSeed>,
    /// Log lines every pod of the workload starts with, per container name.
    #[serde(default)]
    pub logs: BTreeMap<String, Vec<LogLineSeed>>,
    /// Pod-template volumes (`spec.template.spec.volumes`), as JSON.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub volumes: Vec<serde_json::Value>,
}

fn default_workload_kind() -> ResourceKind {
    ResourceKind::Deployment
}

fn one() -> u32 {
    1
}

impl WorkloadSeed {
    pub fn deployment(namespace: impl Into<String>, name: impl Into<String>) -> Self {
        Self::new(ResourceKind::Deployment, namespace.into(), name.into())
    }

    pub fn statefulset(namespace: impl Into<String>, name: impl Into<String>) -> Self {
        Self::new(ResourceKind::StatefulSet, namespace.into(), name.into())
    }

    fn new(kind: ResourceKind, namespace: String, name: String) -> Self {
        WorkloadSeed {
            kind,
            namespace,
            name,
            replicas: 1,
            selector: BTreeMap::new(),
            labels: BTreeMap::new(),
            annotations: BTreeMap::new(),
            template_annotations: BTreeMap::new(),
            containers: vec![],
            logs: BTreeMap::new(),
            volumes: vec![],
        }
    }

    /// A pod-template volume (a Downward-API or ConfigMap volume, as JSON).
    pub fn volume(mut self, volume: serde_json::Value) -> Self {
        self.volumes.push(volume);
        self
    }

    pub fn replicas(mut self, n: u32) -> Self {
        self.replicas = n;
        self
    }

    pub fn selector_label(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.selector.insert(key.into(), value.into());
        self
    }

    pub fn label(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.labels.insert(key.into(), value.into());
        self
    }

    pub fn annotation(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.annotations.insert(key.into(), value.into());
        self
    }

    pub fn template_annotation(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.template_annotations.insert(key.into(), value.into());
        self
    }

    pub fn container(mut self, name: impl Into<String>, image: impl Into<String>) -> Self {
        self.containers.push(ContainerSeed {
            name: name.into(),
            image: image.into(),
        });
        self
    }

    /// A log line every pod of this workload starts with.
    pub fn log(mut self, container: impl Into<String>, line: impl Into<String>) -> Self {
        self.logs
            .entry(container.into())
            .or_default()
            .push(LogLineSeed::Text(line.into()));
        self
    }

    pub(crate) fn effective_selector(&self) -> BTreeMap<String, String> {
        if self.selector.is_empty() {
            BTreeMap::from([("app".to_string(), self.name.clone())])
        } else {
            self.selector.clone()
        }
    }

    pub(crate) fn effective_containers(&self) -> Vec<ContainerSeed> {
        if self.containers.is_empty() {
            vec![ContainerSeed::default()]
        } else {
            self.containers.clone()
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ContainerSeed {
    pub name: String,
    #[serde(default = "default_image")]
    pub image: String,
}

fn default_image() -> String {
    "ghcr.io/modekeeper/trainer:latest".into()
}

impl Default for ContainerSeed {
    fn default() -> Self {
        ContainerSeed {
            name: "trainer".into(),
            image: default_image(),
        }
    }
}

/// A stand-alone pod.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PodSeed {
    pub namespace: String,
    pub name: String,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
    #[serde(default)]
    pub containers: Vec<ContainerSeed>,
    /// `status.phase` (default `Running`).
    #[serde(default = "running")]
    pub phase: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_name: Option<String>,
    #[serde(default)]
    pub logs: BTreeMap<String, Vec<LogLineSeed>>,
}

fn running() -> String {
    "Running".into()
}

impl PodSeed {
    pub fn new(namespace: impl Into<String>, name: impl Into<String>) -> Self {
        PodSeed {
            namespace: namespace.into(),
            name: name.into(),
            labels: BTreeMap::new(),
            annotations: BTreeMap::new(),
            containers: vec![],
            phase: running(),
            node_name: None,
            logs: BTreeMap::new(),
        }
    }

    pub fn label(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.labels.insert(key.into(), value.into());
        self
    }

    pub fn annotation(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.annotations.insert(key.into(), value.into());
        self
    }

    pub fn container(mut self, name: impl Into<String>, image: impl Into<String>) -> Self {
        self.containers.push(ContainerSeed {
            name: name.into(),
            image: image.into(),
        });
        self
    }

    pub fn phase(mut self, phase: impl Into<String>) -> Self {
        self.phase = phase.into();
        self
    }

    pub fn log(mut self, container: impl Into<String>, line: impl Into<String>) -> Self {
        self.logs
            .entry(container.into())
            .or_default()
            .push(LogLineSeed::Text(line.into()));
        self
    }
}

/// A seeded log line: plain text (stamped when the server starts, in order), or text with an
/// explicit RFC 3339 timestamp, or text written a number of seconds before the server started.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum LogLineSeed {
    Text(String),
    At {
        ts: String,
        text: String,
    },
    Ago {
        #[serde(rename = "ageSeconds")]
        age_seconds: u64,
        text: String,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TokenSeed {
    pub token: String,
    pub user: String,
    #[serde(default)]
    pub groups: Vec<String>,
    #[serde(default)]
    pub rules: Vec<Rule>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AnonymousSeed {
    #[serde(default)]
    pub rules: Vec<Rule>,
}

/// Admission-style validation applied to every PATCH result (422 Invalid when it fails).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ValidationConfig {
    /// Annotation values must be JSON strings (default true).
    #[serde(default = "yes")]
    pub annotation_values_must_be_strings: bool,
    /// Objects whose patches are always rejected.
    #[serde(default)]
    pub reject: Vec<Rejection>,
}

fn yes() -> bool {
    true
}

impl Default for ValidationConfig {
    fn default() -> Self {
        ValidationConfig {
            annotation_values_must_be_strings: true,
            reject: vec![],
        }
    }
}

/// "Reject every patch of this object with 422 Invalid".
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Rejection {
    #[serde(default = "default_workload_kind")]
    pub kind: ResourceKind,
    pub namespace: String,
    pub name: String,
    /// Field path reported in the cause (default `metadata.annotations`).
    #[serde(default = "default_reject_field")]
    pub field: String,
    /// Detail reported after the field (default `rejected by kube-sim test hook`).
    #[serde(default = "default_reject_message")]
    pub message: String,
}

fn default_reject_field() -> String {
    "metadata.annotations".into()
}

fn default_reject_message() -> String {
    "rejected by kube-sim test hook".into()
}

impl Rejection {
    pub fn new(kind: ResourceKind, namespace: impl Into<String>, name: impl Into<String>) -> Self {
        Rejection {
            kind,
            namespace: namespace.into(),
            name: name.into(),
            field: default_reject_field(),
            message: default_reject_message(),
        }
    }
}
