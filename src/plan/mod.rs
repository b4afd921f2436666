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

/// Schema of the plan document.
pub const PLAN_SCHEMA: &str = "k8s_plan.v1";
/// The file closed-loop writes a plan to.
pub const PLAN_FILE: &str = "k8s_plan.json";
/// Annotation key prefix of a knob.
pub const KNOB_ANNOTATION_PREFIX: &str = "modekeeper/knob.";
/// Longest annotation value a plan may carry.
pub const MAX_VALUE_LEN: usize = 1024;

/// The workload kinds a plan may patch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub enum WorkloadKind {
    #[default]
    Deployment,
    StatefulSet,
}

impl WorkloadKind {
    pub const ALL: [WorkloadKind; 2] = [WorkloadKind::Deployment, WorkloadKind::StatefulSet];

    pub fn as_str(self) -> &'static str {
        match self {
            WorkloadKind::Deployment => "Deployment",
            WorkloadKind::StatefulSet => "StatefulSet",
        }
    }

    /// kubectl's resource name (`deployment`, `statefulset`).
    pub fn resource(self) -> &'static str {
        match self {
            WorkloadKind::Deployment => "deployment",
            WorkloadKind::StatefulSet => "statefulset",
        }
    }

    pub fn parse(s: &str) -> Option<WorkloadKind> {
        WorkloadKind::ALL.into_iter().find(|k| k.as_str() == s)
    }
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
        if !self.object.is_empty() || !self.object_removed.is_empty() {
            patch.insert(
                "metadata".into(),
                json!({"annotations": annotations(&self.object, &self.object_removed)}),
            );
        }
        if !self.pod_template.is_empty() || !self.pod_template_removed.is_empty() {
            patch.insert(
                "spec".into(),
                json!({"template": {"metadata": {"annotations": annotations(&self.pod_template, &self.pod_template_removed)}}}),
            );
        }
        Value::Object(patch)
    }

    /// Every knob the patch removes (from the pod template or the object).
    pub fn removed_knobs(&self) -> BTreeSet<&str> {
        self.pod_template_removed
            .iter()
            .chain(&self.object_removed)
            .map(String::as_str)
            .collect()
    }

    /// Every knob the patch sets, with its value (pod-template value first).
    pub fn knobs(&self) -> BTreeMap<&str, &str> {
        let mut m: BTreeMap<&str, &str> = self
            .object
            .iter()
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
            .chain(&self.object_removed);
        for k in names {
            if !is_knob_name(k) {
                return Err(format!(
                    "{}: knob names are snake_case ([a-z][a-z0-9_]*, at most 58)",
                    quoted(&format!("{KNOB_ANNOTATION_PREFIX}{k}"))
                ));
            }
        }
        for (k, v) in self.pod_template.iter().chain(&self.object) {
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
        {
            return Err(format!(
                "{KNOB_ANNOTATION_PREFIX}{k}: one place sets it and another removes it"
            ));
        }
        if self.pod_template.is_empty()
            && self.object.is_empty()
            && self.pod_template_removed.is_empty()
            && self.object_removed.is_empty()
        {
            return Err(format!("sets no {KNOB_ANNOTATION_PREFIX}* annotation"));
        }
        Ok(())
    }
}

/// One patch of one workload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlanItem {
    target: Target,
    patch: KnobPatch,
}

impl PlanItem {
    /// Validates the patch (knob names, value lengths, no conflicting duplicates, not empty).
    pub fn new(target: Target, patch: KnobPatch) -> Result<PlanItem, String> {
        patch.check()?;
        Ok(PlanItem { target, patch })
    }

    pub fn target(&self) -> &Target {
        &self.target
    }

    pub fn patch(&self) -> &KnobPatch {
        &self.patch
    }

    /// The item in its normalized JSON form (`kind` always present).
    pub fn to_json(&self) -> Value {
        json!({
            "namespace": self.target.namespace,
            "name": self.target.name,
            "kind": self.target.kind.as_str(),
            "patch": self.patch.to_json(),
        })
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

    /// The `k8s_plan.json` document: `{schema_version, plan_digest, items}` (and `passport` when the
    /// plan records one), pretty, with a final newline.
    pub fn to_document(&self) -> String {
        let mut doc = json!({"schema_version": PLAN_SCHEMA, "plan_digest": self.digest(), "items": self.items_json()});
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
/// knob name no validated passport could contain.
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

#[cfg(test)]
mod tests;
