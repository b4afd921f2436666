//! Kubernetes: the one narrow interface ([`ClusterApi`]) through which ModeKeeper talks to an API
//! server, its kube-rs implementation, and what is built on it (plan verification, reading a
//! workload's current knobs).
//!
//! The connection follows kubectl's flags and kubeconfig rules ([`ConnectOptions`]); every report
//! records the context, server, user and namespace ([`ClusterIdentity`]). Every call is bounded by the
//! request timeout and fails with a classified [`ClusterError`] (unreachable, timeout, unauthorized,
//! forbidden with the parsed RBAC permission, not found, conflict, invalid, server error).
//!
//! The rest of the product sees [`ClusterApi`] and the sync facade [`Cluster`], which owns a small
//! tokio runtime, since the CLI is synchronous. This is the only module that names kube-rs,
//! k8s-openapi or tokio. Nothing here writes artifacts; the only write it can send to a workload is a
//! JSON merge patch of `modekeeper/knob.*` annotations ([`KnobMergePatch`]), and verification sends
//! it as a server-side dry run only. The one other write is `install --apply`'s server-side apply of
//! the controller's own manifests ([`KubeCluster::server_side_apply`]).

mod client;
mod config;
mod configmaps;
mod diff;
mod error;
pub mod events;
mod facade;
pub mod gpus;
pub mod kinds;
mod knobs;
pub mod lease;
mod logs;
mod rbac;
pub mod verify;
mod watch;
mod wiring;

use std::collections::BTreeMap;
use std::future::Future;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::plan::{KNOB_ANNOTATION_PREFIX, KnobPatch, Target, WorkloadKind};

pub use client::KubeCluster;
pub use config::{
    ClusterIdentity, ConfigError, ConfigSource, ConnectOptions, DEFAULT_REQUEST_TIMEOUT,
    default_namespace,
};
pub use configmaps::ConfigMapData;
pub use diff::{DiffEntry, IGNORED_PATHS, diff_workloads};
pub use error::{ClusterError, ClusterErrorKind, human_duration};
pub use events::{EventRecorder, EventType, MAX_EVENT_WAIT, WorkloadEvent};
pub use facade::{Cluster, ConnectError};
pub use knobs::{
    KnobReadError, configmap_knobs, current_knobs, knobs_configmap_name, read_current_knobs,
};
pub use lease::{LeaderElector, LeaseConfig, LeaseConfigError, shard_lease_name};
pub use logs::{
    LogCursor, LogTarget, PodLogCursor, PodLogSource, PodLogStream, RELIST_EVERY,
    STREAM_BUFFER_BYTES, TELEMETRY_CONTAINER_ANNOTATION, WorkloadRef,
};
pub use rbac::{RbacDenial, SuggestedRule};
pub use watch::WorkloadChange;
pub use wiring::{HotKnobWiring, hot_knob_wiring};
/// The field manager of every write (and dry run) ModeKeeper sends.
pub const FIELD_MANAGER: &str = "modekeeper";
/// The field manager of `install --apply` (server-side apply of the controller's manifests).
pub const INSTALL_FIELD_MANAGER: &str = "modekeeper-install";

/// The API server's version (`GET /version`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServerVersion {
    pub git_version: String,
    pub platform: Option<String>,
}

/// A namespace that exists.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NamespaceInfo {
    pub name: String,
    /// `Active` or `Terminating`.
    pub phase: Option<String>,
}

/// A Deployment or StatefulSet as the server returned it.
#[derive(Debug, Clone, PartialEq)]
pub struct Workload {
    pub target: Target,
    pub uid: String,
    pub resource_version: String,
    pub generation: Option<i64>,
    /// The object's own annotations.
    pub annotations: BTreeMap<String, String>,
    /// The pod template's annotations (what the trainer reads through the Downward API); for a
    /// PyTorchJob, those of its first replica role (by name).
    pub template_annotations: BTreeMap<String, String>,
    /// A ConfigMap's `data` (empty for workloads).
    pub data: BTreeMap<String, String>,
    /// A PyTorchJob's replica roles (`spec.pytorchReplicaSpecs` keys); empty for other kinds.
    pub roles: Vec<String>,
    /// The whole object, for diffs.
    pub object: Value,
}

fn string_map(v: &Value) -> BTreeMap<String, String> {
    v.as_object()
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
                .collect()
        })
        .unwrap_or_default()
}

/// The pod-template annotations of an object of `kind` (see [`kinds::TemplatePaths`]).
fn template_annotations(kind: WorkloadKind, object: &Value) -> BTreeMap<String, String> {
    match kinds::spec(kind).templates {
        kinds::TemplatePaths::Single => {
            string_map(&object["spec"]["template"]["metadata"]["annotations"])
        }
        kinds::TemplatePaths::PerReplicaRole => object["spec"]["pytorchReplicaSpecs"]
            .as_object()
            .and_then(|m| m.values().next())
            .map(|r| string_map(&r["template"]["metadata"]["annotations"]))
            .unwrap_or_default(),
        kinds::TemplatePaths::ReplicatedJobs => string_map(
            &object["spec"]["replicatedJobs"][0]["template"]["spec"]["template"]["metadata"]["annotations"],
        ),
        kinds::TemplatePaths::None => BTreeMap::new(),
    }
}

impl Workload {
    /// Reads the fields the product uses from an object's JSON.
    pub fn from_object(target: &Target, object: Value) -> Result<Workload, ClusterError> {
        let meta = &object["metadata"];
        let uid = meta["uid"].as_str().unwrap_or_default().to_string();
        let resource_version = meta["resourceVersion"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        if resource_version.is_empty() {
            return Err(ClusterError::new(
                ClusterErrorKind::Other,
                format!(
                    "{}/{} in namespace {}: the server returned an object without metadata.resourceVersion",
                    target.kind().resource(),
                    target.name(),
                    target.namespace()
                ),
            ));
        }
        Ok(Workload {
            target: target.clone(),
            uid,
            resource_version,
            generation: meta["generation"].as_i64(),
            annotations: string_map(&meta["annotations"]),
            template_annotations: template_annotations(target.kind(), &object),
            data: string_map(&object["data"]),
            roles: object["spec"]["pytorchReplicaSpecs"]
                .as_object()
                .map(|m| m.keys().cloned().collect())
                .unwrap_or_default(),
            object,
        })
    }
}

/// A SelfSubjectAccessReview question: may the current user `verb` this resource?
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessCheck {
    pub verb: String,
    pub group: String,
    pub resource: String,
    pub namespace: Option<String>,
    pub name: Option<String>,
}

impl AccessCheck {
    /// `verb` on the plan target's workload object.
    pub fn on_workload(verb: &str, target: &Target) -> AccessCheck {
        let spec = kinds::spec(target.kind());
        AccessCheck {
            verb: verb.to_string(),
            group: spec.group.into(),
            resource: spec.plural.into(),
            namespace: Some(target.namespace().to_string()),
            name: Some(target.name().to_string()),
        }
    }
}

/// One rule of a SelfSubjectRulesReview (`status.resourceRules[]`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResourceRule {
    pub verbs: Vec<String>,
    pub api_groups: Vec<String>,
    pub resources: Vec<String>,
    pub resource_names: Vec<String>,
}

/// What a SelfSubjectRulesReview says the current user may do in one namespace.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct RulesReview {
    pub rules: Vec<ResourceRule>,
    /// The server could not list every rule (an authorizer that cannot enumerate, such as a
    /// webhook): an action no listed rule allows may still be allowed.
    pub incomplete: bool,
}

impl RulesReview {
    /// Whether `check` is allowed: `Some(true)` when a rule allows it, `Some(false)` when no rule
    /// does and the list is complete, `None` when only an access review can tell.
    pub fn decide(&self, check: &AccessCheck) -> Option<bool> {
        let has = |list: &[String], want: &str| list.iter().any(|x| x == "*" || x == want);
        let allowed = self.rules.iter().any(|r| {
            has(&r.verbs, &check.verb)
                && has(&r.api_groups, &check.group)
                && has(&r.resources, &check.resource)
                && (r.resource_names.is_empty()
                    || check
                        .name
                        .as_deref()
                        .is_some_and(|n| r.resource_names.iter().any(|x| x == n)))
        });
        if allowed {
            Some(true)
        } else if self.incomplete {
            None
        } else {
            Some(false)
        }
    }
}

/// The server's answer to an [`AccessCheck`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessDecision {
    pub allowed: bool,
    /// An authorizer explicitly denied (as opposed to no rule allowing).
    pub denied: bool,
    pub reason: Option<String>,
}

/// Whether a patch is stored or only evaluated (`dryRun=All`: admission and validation run, nothing
/// is persisted).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PatchMode {
    DryRun,
    Write,
}

/// The only body ModeKeeper ever sends in a write: a JSON merge patch that sets
/// `modekeeper/knob.*` annotations, optionally with a `metadata.resourceVersion` precondition (the
/// server answers 409 if the object changed since that version).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KnobMergePatch(Value);

impl KnobMergePatch {
    pub fn new(patch: &KnobPatch, resource_version: Option<&str>) -> KnobMergePatch {
        let mut body = patch.to_json();
        if let Some(rv) = resource_version {
            body["metadata"]["resourceVersion"] = Value::String(rv.to_string());
        }
        KnobMergePatch(body)
    }

    pub fn as_json(&self) -> &Value {
        &self.0
    }
}

/// One knob a patch sets (`value`) or removes (`None`): an annotation on a pod template or the
/// object, or a key of a knobs ConfigMap's data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedKnob {
    pub knob: String,
    /// Its JSON pointer in the object.
    pub at: String,
    pub value: Option<String>,
}

impl PlannedKnob {
    /// Its JSON pointer in the object.
    pub fn pointer(&self) -> String {
        self.at.clone()
    }
}

fn escape_pointer(key: &str) -> String {
    key.replace('~', "~0").replace('/', "~1")
}

/// Every knob `patch` sets or removes, read from its JSON merge patch (the body that is sent):
/// `modekeeper/knob.*` keys of any `annotations` object, and the keys of a top-level `data`.
pub fn planned_knobs(patch: &KnobPatch) -> Vec<PlannedKnob> {
    fn walk(v: &Value, at: &str, out: &mut Vec<PlannedKnob>) {
        let Some(m) = v.as_object() else { return };
        for (key, value) in m {
            let here = format!("{at}/{}", escape_pointer(key));
            let knob = if at == "/data" {
                Some(key.as_str())
            } else if at.ends_with("/annotations") {
                key.strip_prefix(KNOB_ANNOTATION_PREFIX)
            } else {
                None
            };
            match knob {
                Some(k) => out.push(PlannedKnob {
                    knob: k.to_string(),
                    at: here,
                    value: value.as_str().map(str::to_string),
                }),
                None => walk(value, &here, out),
            }
        }
    }
    let mut out = vec![];
    walk(&patch.to_json(), "", &mut out);
    // Pod templates first: they are what the trainer reads.
    out.sort_by_key(|p| !p.at.starts_with("/spec") && !p.at.starts_with("/data"));
    out
}

/// The pod-template annotation key of a knob.
pub fn knob_annotation(knob: &str) -> String {
    format!("{KNOB_ANNOTATION_PREFIX}{knob}")
}

/// Everything ModeKeeper asks of a Kubernetes API server. Implementations bound each call by their
/// request timeout and classify every failure; "absent" is `Ok(None)`, never an error.
pub trait ClusterApi: Send + Sync {
    /// Context, server, user and default namespace of the connection.
    fn identity(&self) -> &ClusterIdentity;

    /// `GET /version`: the cheapest call that proves the server answers and accepts the credentials.
    fn server_version(&self) -> impl Future<Output = Result<ServerVersion, ClusterError>> + Send;

    /// `GET /api/v1/namespaces/{name}`; `Ok(None)` when it does not exist.
    fn get_namespace(
        &self,
        name: &str,
    ) -> impl Future<Output = Result<Option<NamespaceInfo>, ClusterError>> + Send;

    /// `GET` of the target's Deployment or StatefulSet; `Ok(None)` when it does not exist.
    fn get_workload(
        &self,
        target: &Target,
    ) -> impl Future<Output = Result<Option<Workload>, ClusterError>> + Send;

    /// Whether the server serves `kind` (discovery of its group/version lists its resource): a
    /// custom resource whose CRD is not installed is not. Built-in kinds are always served.
    fn kind_served(
        &self,
        kind: WorkloadKind,
    ) -> impl Future<Output = Result<bool, ClusterError>> + Send {
        let _ = kind;
        async { Ok(true) }
    }

    /// One LIST of `kind` in `namespace` (what verify reads instead of one GET per item). The
    /// default says the implementation cannot list, and callers fall back to GETs.
    fn list_objects(
        &self,
        namespace: &str,
        kind: WorkloadKind,
    ) -> impl Future<Output = Result<Vec<Workload>, ClusterError>> + Send {
        let _ = (namespace, kind);
        async {
            Err(ClusterError::new(
                ClusterErrorKind::Other,
                "this client does not list objects",
            ))
        }
    }

    /// A SelfSubjectRulesReview in `namespace` (what `kubectl auth can-i --list` asks). The
    /// default says the implementation cannot, and callers fall back to access reviews.
    fn review_rules(
        &self,
        namespace: &str,
    ) -> impl Future<Output = Result<RulesReview, ClusterError>> + Send {
        let _ = namespace;
        async {
            Err(ClusterError::new(
                ClusterErrorKind::Other,
                "this client does not review rules",
            ))
        }
    }

    /// A SelfSubjectAccessReview (what `kubectl auth can-i` asks).
    fn review_access(
        &self,
        check: &AccessCheck,
    ) -> impl Future<Output = Result<AccessDecision, ClusterError>> + Send;

    /// `PATCH` (`application/merge-patch+json`, `fieldManager=modekeeper`) of the target; with
    /// [`PatchMode::DryRun`] (`dryRun=All`) the server returns the object as it would store it.
    fn patch_workload(
        &self,
        target: &Target,
        patch: &KnobMergePatch,
        mode: PatchMode,
    ) -> impl Future<Output = Result<Workload, ClusterError>> + Send;
}
