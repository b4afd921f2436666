//! Kubernetes plans: the reviewable list of patches that carry accepted knob changes to workloads as
//! pod-template annotations `modekeeper/knob.<knob>: "<value>"`. Building a plan from the envelope's
//! accepted proposals, loading one from untrusted JSON with strict validation, its canonical form and
//! digest, and the kubectl review script.
//!
//! Pure: text in, values and text out; reading and writing files is the caller's job. A [`Plan`] can
//! only be made through validation, so every plan in memory targets a valid namespace/name of an
//! allowed kind and sets nothing but `modekeeper/knob.*` annotations. This module never talks to a
//! cluster and never runs the script it renders.

mod canonical;
mod load;
mod render;

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Map, Value, json};

use crate::envelope::Accepted;
use crate::passport::{format_knob_value, is_knob_name};

pub use canonical::{canonical_json, sha256_prefixed};
pub use load::{MAX_PLAN_BYTES, PlanError, PlanErrorKind, PlanFormat, parse_plan};
pub use render::{KUBECTL_SCRIPT, render_kubectl_script, shell_quote};

/// Schema of a plan document whose items are all pod-template annotation patches without
/// `takes_effect` (what the first releases wrote; still read and written for such plans).
pub const PLAN_SCHEMA: &str = "k8s_plan.v1";
/// Schema of a plan with knobs ConfigMap items or `takes_effect`/`restart_required` per item.
pub const PLAN_SCHEMA_V2: &str = "k8s_plan.v2";
/// The file closed-loop writes a plan to.
pub const PLAN_FILE: &str = "k8s_plan.json";
/// Annotation key prefix of a knob.
pub const KNOB_ANNOTATION_PREFIX: &str = "modekeeper/knob.";
/// Longest annotation value a plan may carry.
pub const MAX_VALUE_LEN: usize = 1024;

/// The kinds a plan may patch: the workloads (see `crate::k8s::kinds` for where each keeps its
/// pod templates and whether they can be patched) and the workload's knobs ConfigMap.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub enum WorkloadKind {
    #[default]
    Deployment,
    StatefulSet,
    /// batch/v1 Job (immutable pod template).
    Job,
    /// kubeflow.org/v1 PyTorchJob (one template per replica role).
    PyTorchJob,
    /// jobset.x-k8s.io/v1alpha2 JobSet (templates change only while suspended).
    JobSet,
    /// The knobs ConfigMap a workload mounts (`data.<knob>` keys).
    ConfigMap,
}

impl WorkloadKind {
    pub const ALL: [WorkloadKind; 6] = [
        WorkloadKind::Deployment,
        WorkloadKind::StatefulSet,
        WorkloadKind::Job,
        WorkloadKind::PyTorchJob,
        WorkloadKind::JobSet,
        WorkloadKind::ConfigMap,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            WorkloadKind::Deployment => "Deployment",
            WorkloadKind::StatefulSet => "StatefulSet",
            WorkloadKind::Job => "Job",
            WorkloadKind::PyTorchJob => "PyTorchJob",
            WorkloadKind::JobSet => "JobSet",
            WorkloadKind::ConfigMap => "ConfigMap",
        }
    }

    /// kubectl's resource name (`deployment`, `job.batch`, `pytorchjob.kubeflow.org`).
    pub fn resource(self) -> &'static str {
        match self {
            WorkloadKind::Deployment => "deployment",
            WorkloadKind::StatefulSet => "statefulset",
            WorkloadKind::Job => "job.batch",
            WorkloadKind::PyTorchJob => "pytorchjob.kubeflow.org",
            WorkloadKind::JobSet => "jobset.jobset.x-k8s.io",
            WorkloadKind::ConfigMap => "configmap",
        }
    }

    pub fn parse(s: &str) -> Option<WorkloadKind> {
        WorkloadKind::ALL.into_iter().find(|k| k.as_str() == s)
    }

    /// A workload (as opposed to its knobs ConfigMap).
    pub fn is_workload(self) -> bool {
        self != WorkloadKind::ConfigMap
    }
}

/// When a planned change reaches the trainer (plan v2, per item).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum TakesEffect {
    /// The running pods read it from the mounted knobs ConfigMap (after the kubelet's refresh).
    Live,
    /// Written to the knobs ConfigMap; read when a pod next starts (the template is immutable).
    NextPodStart,
    /// A pod-template change: the workload's controller replaces the pods.
    Rollout,
}

impl TakesEffect {
    pub fn as_str(self) -> &'static str {
        match self {
            TakesEffect::Live => "live",
            TakesEffect::NextPodStart => "next_pod_start",
            TakesEffect::Rollout => "rollout",
        }
    }

    pub fn parse(s: &str) -> Option<TakesEffect> {
        [
            TakesEffect::Live,
            TakesEffect::NextPodStart,
            TakesEffect::Rollout,
        ]
        .into_iter()
        .find(|t| t.as_str() == s)
    }

    /// Whether the change needs the pods to restart before the trainer sees it.
    pub fn restart_required(self) -> bool {
        self != TakesEffect::Live
    }
}

/// The annotation on a workload naming its knobs ConfigMap.
pub const KNOBS_CONFIGMAP_ANNOTATION: &str = "modekeeper/knobs-configmap";

/// The knobs ConfigMap of a workload without the annotation: `<workload>-modekeeper-knobs`.
pub fn default_knobs_configmap(workload: &str) -> String {
    format!("{workload}-modekeeper-knobs")
}

/// DNS-1123 label: `[a-z0-9]([-a-z0-9]*[a-z0-9])?`, at most 63 characters (namespaces).
pub fn is_dns1123_label(s: &str) -> bool {
    let b = s.as_bytes();
    let alnum = |c: &u8| c.is_ascii_lowercase() || c.is_ascii_digit();
    !b.is_empty()
        && b.len() <= 63
        && alnum(&b[0])
        && alnum(&b[b.len() - 1])
        && b.iter().all(|c| alnum(c) || *c == b'-')
}

/// DNS-1123 subdomain: dot-separated labels, at most 253 characters (object names).
pub fn is_dns1123_subdomain(s: &str) -> bool {
    !s.is_empty() && s.len() <= 253 && s.split('.').all(is_dns1123_label)
}

/// A PyTorchJob replica role as the operator names them (`Master`, `Worker`).
pub fn is_replica_role(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b[0].is_ascii_uppercase()
        && b.iter().all(u8::is_ascii_alphanumeric)
}

/// A string for an error line: Debug-quoted (so control characters are escaped), at most 64 characters.
pub(crate) fn quoted(s: &str) -> String {
    match s.char_indices().nth(64) {
        Some((i, _)) => format!("{:?}…", &s[..i]),
        None => format!("{s:?}"),
    }
}

/// The workload a plan item patches.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Target {
    namespace: String,
    name: String,
    kind: WorkloadKind,
}

impl Target {
    /// Validates the namespace (DNS-1123 label) and name (DNS-1123 subdomain).
    pub fn new(namespace: &str, name: &str, kind: WorkloadKind) -> Result<Target, String> {
        if !is_dns1123_label(namespace) {
            return Err(format!(
                "namespace: {} is not a DNS-1123 label (lowercase letters, digits, '-', at most 63)",
                quoted(namespace)
            ));
        }
        if !is_dns1123_subdomain(name) {
            return Err(format!(
                "name: {} is not a DNS-1123 subdomain (lowercase letters, digits, '-', '.', at most 253)",
                quoted(name)
            ));
        }
        Ok(Target {
            namespace: namespace.to_string(),
            name: name.to_string(),
            kind,
        })
    }

    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn kind(&self) -> WorkloadKind {
        self.kind
    }
}

/// The knob annotations one item sets: on the pod template (what the trainer reads) and, for plans
/// loaded from the first implementation, also on the workload object itself. Keys are knob names.
/// A patch may also remove knob annotations (JSON merge patch `null`): that is how a rollback plan
/// restores a knob that was absent before an apply.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct KnobPatch {
    pub pod_template: BTreeMap<String, String>,
    pub object: BTreeMap<String, String>,
    /// Knobs whose pod-template annotation the patch removes.
    pub pod_template_removed: BTreeSet<String>,
    /// Knobs whose object annotation the patch removes.
    pub object_removed: BTreeSet<String>,
    /// Knob keys of a knobs ConfigMap's `data` the patch sets (ConfigMap items only).
    pub data: BTreeMap<String, String>,
    /// Knob keys of a knobs ConfigMap's `data` the patch removes.
    pub data_removed: BTreeSet<String>,
    /// PyTorchJob replica roles (`Master`, `Worker`) whose templates carry `pod_template`; empty
    /// for kinds with a single `spec.template`.
    pub roles: BTreeSet<String>,
}

impl KnobPatch {
    /// The JSON merge patch (a removed knob is `null`).
    pub fn to_json(&self) -> Value {
        let annotations = |m: &BTreeMap<String, String>, removed: &BTreeSet<String>| {
            let mut out: Map<String, Value> = m
                .iter()
                .map(|(k, v)| {
                    (
                        format!("{KNOB_ANNOTATION_PREFIX}{k}"),
                        Value::String(v.clone()),
                    )
                })
                .collect();
            out.extend(
                removed
                    .iter()
                    .map(|k| (format!("{KNOB_ANNOTATION_PREFIX}{k}"), Value::Null)),
            );
            out
        };
        let mut patch = Map::new();
        if !self.data.is_empty() || !self.data_removed.is_empty() {
            let mut data: Map<String, Value> = self
                .data
                .iter()
                .map(|(k, v)| (k.clone(), Value::String(v.clone())))
                .collect();
            data.extend(self.data_removed.iter().map(|k| (k.clone(), Value::Null)));
            patch.insert("data".into(), Value::Object(data));
        }
        if !self.object.is_empty() || !self.object_removed.is_empty() {
            patch.insert(
                "metadata".into(),
                json!({"annotations": annotations(&self.object, &self.object_removed)}),
            );
        }
        if !self.pod_template.is_empty() || !self.pod_template_removed.is_empty() {
            let template = json!({"metadata": {"annotations": annotations(&self.pod_template, &self.pod_template_removed)}});
            let spec = if self.roles.is_empty() {
                json!({ "template": template })
            } else {
                let roles: Map<String, Value> = self
                    .roles
                    .iter()
                    .map(|r| (r.clone(), json!({ "template": template.clone() })))
                    .collect();
                json!({ "pytorchReplicaSpecs": roles })
            };
            patch.insert("spec".into(), spec);
        }
        Value::Object(patch)
    }

    /// Every knob the patch removes (from the pod template, the object or ConfigMap data).
    pub fn removed_knobs(&self) -> BTreeSet<&str> {
        self.pod_template_removed
            .iter()
            .chain(&self.object_removed)
            .chain(&self.data_removed)
            .map(String::as_str)
            .collect()
    }

    /// Every knob the patch sets, with its value (pod-template value first).
    pub fn knobs(&self) -> BTreeMap<&str, &str> {
        let mut m: BTreeMap<&str, &str> = self
            .object
            .iter()
            .chain(&self.data)
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        m.extend(
            self.pod_template
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str())),
        );
        m
    }

    fn check(&self) -> Result<(), String> {
        let names = self
            .pod_template
            .keys()
            .chain(self.object.keys())
            .chain(&self.pod_template_removed)
            .chain(&self.object_removed)
            .chain(self.data.keys())
            .chain(&self.data_removed);
        for k in names {
            if !is_knob_name(k) {
                return Err(format!(
                    "{}: knob names are snake_case ([a-z][a-z0-9_]*, at most 58)",
                    quoted(&format!("{KNOB_ANNOTATION_PREFIX}{k}"))
                ));
            }
        }
        for (k, v) in self
            .pod_template
            .iter()
            .chain(&self.object)
            .chain(&self.data)
        {
            if v.len() > MAX_VALUE_LEN {
                return Err(format!(
                    "{KNOB_ANNOTATION_PREFIX}{k}: value longer than {MAX_VALUE_LEN} bytes"
                ));
            }
        }
        for (k, v) in &self.object {
            if let Some(t) = self.pod_template.get(k).filter(|t| *t != v) {
                return Err(format!(
                    "{KNOB_ANNOTATION_PREFIX}{k}: object sets {} but the pod template sets {}",
                    quoted(v),
                    quoted(t)
                ));
            }
        }
        let sets_and_removes = |set: &BTreeMap<String, String>, removed: &BTreeSet<String>| {
            removed.iter().find(|k| set.contains_key(*k)).cloned()
        };
        if let Some(k) = sets_and_removes(&self.pod_template, &self.object_removed)
            .or_else(|| sets_and_removes(&self.object, &self.pod_template_removed))
            .or_else(|| sets_and_removes(&self.pod_template, &self.pod_template_removed))
            .or_else(|| sets_and_removes(&self.object, &self.object_removed))
            .or_else(|| sets_and_removes(&self.data, &self.data_removed))
        {
            return Err(format!(
                "{KNOB_ANNOTATION_PREFIX}{k}: one place sets it and another removes it"
            ));
        }
        if self.pod_template.is_empty()
            && self.object.is_empty()
            && self.pod_template_removed.is_empty()
            && self.object_removed.is_empty()
            && self.data.is_empty()
            && self.data_removed.is_empty()
        {
            return Err(format!(
                "sets no {KNOB_ANNOTATION_PREFIX}* annotation and no knobs ConfigMap key"
            ));
        }
        for r in &self.roles {
            if !is_replica_role(r) {
                return Err(format!(
                    "replica role {}: not a role name ([A-Z][A-Za-z0-9]*, at most 63)",
                    quoted(r)
                ));
            }
        }
        Ok(())
    }

    fn has_annotations(&self) -> bool {
        !(self.pod_template.is_empty()
            && self.pod_template_removed.is_empty()
            && self.object.is_empty()
            && self.object_removed.is_empty())
    }

    fn has_data(&self) -> bool {
        !(self.data.is_empty() && self.data_removed.is_empty())
    }

    /// What `kind` allows (the kinds table says where its templates live and whether they can be
    /// patched): knob annotations on a patchable template, knob keys on a ConfigMap, nothing else.
    fn check_kind(&self, kind: WorkloadKind) -> Result<(), String> {
        let spec = crate::k8s::kinds::spec(kind);
        if kind == WorkloadKind::ConfigMap {
            if self.has_annotations() || !self.roles.is_empty() {
                return Err("a ConfigMap item may only set knob keys of data".into());
            }
            return Ok(());
        }
        if self.has_data() {
            return Err(format!(
                "data: only a ConfigMap item sets knob keys ({} is a workload)",
                kind.as_str()
            ));
        }
        if !spec.template_patchable() {
            return Err(format!(
                "a {}'s pod template cannot be patched ({}): its knobs travel in its knobs ConfigMap",
                kind.as_str(),
                match spec.mutability {
                    crate::k8s::kinds::TemplateMutability::WhileSuspended => {
                        "only while suspended, and its replicatedJobs array only whole"
                    }
                    _ => "spec.template is immutable",
                }
            ));
        }
        match spec.templates {
            crate::k8s::kinds::TemplatePaths::PerReplicaRole => {
                if self.roles.is_empty() {
                    return Err(format!(
                        "a {} patch names its replica roles (spec.pytorchReplicaSpecs.<Role>.template)",
                        kind.as_str()
                    ));
                }
                if !self.object.is_empty() || !self.object_removed.is_empty() {
                    return Err("patch.metadata: not allowed for this kind".into());
                }
            }
            _ if !self.roles.is_empty() => {
                return Err(format!(
                    "spec.pytorchReplicaSpecs: not allowed for a {}",
                    kind.as_str()
                ));
            }
            _ => {}
        }
        Ok(())
    }
}

/// One patch of one workload or of its knobs ConfigMap.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlanItem {
    target: Target,
    patch: KnobPatch,
    /// Plan v2: when the change reaches the trainer; `None` for v1 items.
    takes_effect: Option<TakesEffect>,
    /// Plan v2, ConfigMap items: the workload whose knobs ConfigMap it is (same namespace), so
    /// apply honours that workload's kill-switch annotation too.
    workload: Option<Target>,
}

impl PlanItem {
    /// Validates the patch (knob names, value lengths, no conflicting duplicates, not empty, only
    /// what the target's kind allows).
    pub fn new(target: Target, patch: KnobPatch) -> Result<PlanItem, String> {
        patch.check()?;
        patch.check_kind(target.kind)?;
        Ok(PlanItem {
            target,
            patch,
            takes_effect: None,
            workload: None,
        })
    }

    /// A ConfigMap item naming the workload it belongs to (a workload kind, same namespace).
    pub fn with_workload(mut self, w: &Target) -> Result<PlanItem, String> {
        if self.target.kind != WorkloadKind::ConfigMap {
            return Err("workload: only a ConfigMap item names its workload".into());
        }
        if !w.kind.is_workload() || w.namespace != self.target.namespace {
            return Err(
                "workload: must be a workload kind in the ConfigMap's namespace".to_string(),
            );
        }
        self.workload = Some(w.clone());
        Ok(self)
    }

    /// The workload a ConfigMap item belongs to, when it says.
    pub fn workload(&self) -> Option<&Target> {
        self.workload.as_ref()
    }

    /// The item with its v2 `takes_effect`: `rollout` for a pod-template patch, `live` or
    /// `next_pod_start` for a knobs ConfigMap.
    pub fn with_takes_effect(mut self, t: TakesEffect) -> Result<PlanItem, String> {
        let ok = match self.target.kind {
            WorkloadKind::ConfigMap => t != TakesEffect::Rollout,
            _ => t == TakesEffect::Rollout,
        };
        if !ok {
            return Err(format!(
                "takes_effect: {:?} does not fit a {} item (a ConfigMap is live or next_pod_start, a pod template rollout)",
                t.as_str(),
                self.target.kind.as_str()
            ));
        }
        self.takes_effect = Some(t);
        Ok(self)
    }

    pub fn target(&self) -> &Target {
        &self.target
    }

    pub fn patch(&self) -> &KnobPatch {
        &self.patch
    }

    pub fn takes_effect(&self) -> Option<TakesEffect> {
        self.takes_effect
    }

    /// The item in its normalized JSON form (`kind` always present; `takes_effect` and
    /// `restart_required` for v2 items).
    pub fn to_json(&self) -> Value {
        let mut v = json!({
            "namespace": self.target.namespace,
            "name": self.target.name,
            "kind": self.target.kind.as_str(),
            "patch": self.patch.to_json(),
        });
        if let Some(t) = self.takes_effect {
            v["takes_effect"] = json!(t.as_str());
            v["restart_required"] = json!(t.restart_required());
        }
        if let Some(w) = &self.workload {
            v["workload"] = json!({"kind": w.kind.as_str(), "name": w.name});
        }
        v
    }
}

/// The passport a plan was made under, as the plan document records it (`passport` in the
/// envelope). A record, not a signature: it is not part of the plan digest, and `k8s apply` checks
/// it against the passport itself (docs/safety.md, gate 2).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlanPassport {
    pub name: String,
    pub version: String,
    /// `sha256:<hex>` of the passport's canonical JSON ([`crate::passport::Passport::digest`]).
    pub sha256: String,
}

impl PlanPassport {
    pub fn of(p: &crate::passport::Passport) -> PlanPassport {
        PlanPassport {
            name: p.name.clone(),
            version: p.version.clone(),
            sha256: p.digest(),
        }
    }
}

/// A validated plan: items with distinct targets, in order.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Plan {
    items: Vec<PlanItem>,
    passport: Option<PlanPassport>,
}

impl Plan {
    /// Rejects two items for the same workload (`index` is the later one).
    pub fn from_items(items: Vec<PlanItem>) -> Result<Plan, (usize, String)> {
        for (i, item) in items.iter().enumerate() {
            if let Some(j) = items[..i].iter().position(|x| x.target == item.target) {
                let t = &item.target;
                return Err((
                    i,
                    format!(
                        "{}/{} in namespace {} is already patched by item {j}",
                        t.kind.resource(),
                        t.name,
                        t.namespace
                    ),
                ));
            }
        }
        Ok(Plan {
            items,
            passport: None,
        })
    }

    /// The plan as made under `passport` (recorded in its document).
    pub fn with_passport(mut self, passport: PlanPassport) -> Plan {
        self.passport = Some(passport);
        self
    }

    /// The passport the plan says it was made under.
    pub fn passport(&self) -> Option<&PlanPassport> {
        self.passport.as_ref()
    }

    pub fn items(&self) -> &[PlanItem] {
        &self.items
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// The normalized items as a JSON array.
    pub fn items_json(&self) -> Value {
        Value::Array(self.items.iter().map(PlanItem::to_json).collect())
    }

    /// `sha256:<hex>` of the canonical JSON of the normalized items array. The same plan gives the
    /// same digest whichever accepted form (array, envelope, single object, key order) it came in.
    pub fn digest(&self) -> String {
        sha256_prefixed(canonical_json(&self.items_json()).as_bytes())
    }

    /// Whether the plan needs `k8s_plan.v2` (a ConfigMap item or a `takes_effect`).
    pub fn is_v2(&self) -> bool {
        self.items.iter().any(|i| {
            i.takes_effect.is_some()
                || i.workload.is_some()
                || !matches!(
                    i.target.kind,
                    WorkloadKind::Deployment | WorkloadKind::StatefulSet
                )
        })
    }

    /// The schema the plan's document carries.
    pub fn schema(&self) -> &'static str {
        if self.is_v2() {
            PLAN_SCHEMA_V2
        } else {
            PLAN_SCHEMA
        }
    }

    /// The `k8s_plan.json` document: `{schema_version, plan_digest, items}` (and `passport` when the
    /// plan records one), pretty, with a final newline. `k8s_plan.v1` when every item is a v1 item,
    /// else `k8s_plan.v2`.
    pub fn to_document(&self) -> String {
        let mut doc = json!({"schema_version": self.schema(), "plan_digest": self.digest(), "items": self.items_json()});
        if let Some(p) = &self.passport {
            doc["passport"] = json!(p);
        }
        let mut s = serde_json::to_string_pretty(&doc).expect("plans serialize");
        s.push('\n');
        s
    }

    /// A field's common value across items: `Some(value)` if all agree, `Some("mixed")` if not,
    /// `None` for an empty plan.
    pub fn uniform(&self, field: impl Fn(&Target) -> &str) -> Option<&str> {
        let first = field(&self.items.first()?.target);
        Some(if self.items.iter().all(|i| field(&i.target) == first) {
            first
        } else {
            "mixed"
        })
    }
}

/// The plan that carries `accepted` changes to `target`: one item, knobs as pod-template annotations
/// (values formatted like `8`, `0.25`), or an empty plan when nothing was accepted. Fails only for a
/// knob name no validated passport could contain. This is the v1 form (every knob rolls out);
/// [`build_actuated_plan`] routes hot knobs to the knobs ConfigMap.
pub fn build_plan(target: &Target, accepted: &[Accepted]) -> Result<Plan, String> {
    if accepted.is_empty() {
        return Ok(Plan::default());
    }
    let pod_template = accepted
        .iter()
        .map(|a| (a.knob.clone(), format_knob_value(a.to)))
        .collect();
    let patch = KnobPatch {
        pod_template,
        ..KnobPatch::default()
    };
    Ok(Plan {
        items: vec![PlanItem::new(target.clone(), patch)?],
        passport: None,
    })
}

/// The PyTorchJob replica roles a plan patches when it is not told otherwise.
pub const DEFAULT_REPLICA_ROLES: [&str; 2] = ["Master", "Worker"];

/// [`build_actuated_plan`] under `passport` (its knobs' `actuation`), with the knobs ConfigMap
/// `configmap` (else `<workload>-modekeeper-knobs`). What `closed-loop run` and `watch` write.
pub fn build_passport_plan(
    target: &Target,
    accepted: &[Accepted],
    passport: &crate::passport::Passport,
    configmap: Option<&str>,
) -> Result<Plan, String> {
    let default = default_knobs_configmap(target.name());
    // The operator's two roles; verify blocks a role the live PyTorchJob does not have.
    let roles: Vec<String> = match target.kind() {
        WorkloadKind::PyTorchJob => DEFAULT_REPLICA_ROLES.map(String::from).to_vec(),
        _ => vec![],
    };
    build_actuated_plan(
        target,
        accepted,
        |k| {
            passport
                .knob(k)
                .is_some_and(|l| l.actuation == crate::passport::Actuation::Hot)
        },
        configmap.unwrap_or(&default),
        &roles,
    )
}

/// Where a workload's knobs go, from the kinds table and the passport's actuation:
/// hot knobs always to the knobs ConfigMap (`live`); cold knobs to the pod template where it can be
/// patched (`rollout`), else to the ConfigMap (`next_pod_start`). `roles` are a PyTorchJob's replica
/// roles (its templates); `configmap` the knobs ConfigMap's name. At most two items: the
/// ConfigMap first (a hot change lands before a rollout restarts the pods), then the workload.
/// A ConfigMap item holding both hot and cold knobs says `next_pod_start` (the slower of the two).
pub fn build_actuated_plan(
    target: &Target,
    accepted: &[Accepted],
    hot: impl Fn(&str) -> bool,
    configmap: &str,
    roles: &[String],
) -> Result<Plan, String> {
    let spec = crate::k8s::kinds::spec(target.kind);
    if !target.kind.is_workload() {
        return Err("the target of a plan is a workload, not a ConfigMap".into());
    }
    let mut data = BTreeMap::new();
    let mut template = BTreeMap::new();
    let mut cold_in_data = false;
    for a in accepted {
        let value = format_knob_value(a.to);
        if hot(&a.knob) {
            data.insert(a.knob.clone(), value);
        } else if spec.template_patchable() {
            template.insert(a.knob.clone(), value);
        } else {
            cold_in_data = true;
            data.insert(a.knob.clone(), value);
        }
    }
    let mut items = vec![];
    if !data.is_empty() {
        let cm = Target::new(target.namespace(), configmap, WorkloadKind::ConfigMap)?;
        let patch = KnobPatch {
            data,
            ..KnobPatch::default()
        };
        let effect = if cold_in_data {
            TakesEffect::NextPodStart
        } else {
            TakesEffect::Live
        };
        items.push(
            PlanItem::new(cm, patch)?
                .with_takes_effect(effect)?
                .with_workload(target)?,
        );
    }
    if !template.is_empty() {
        let patch = KnobPatch {
            pod_template: template,
            roles: roles.iter().cloned().collect(),
            ..KnobPatch::default()
        };
        items.push(PlanItem::new(target.clone(), patch)?.with_takes_effect(TakesEffect::Rollout)?);
    }
    Plan::from_items(items).map_err(|(_, e)| e)
}

#[cfg(test)]
mod tests;
