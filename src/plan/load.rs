//! Loading a plan from untrusted JSON. Three forms are accepted: an array of items, the envelope
//! `{"schema_version": "k8s_plan.v1", "items": [...], "plan_digest"?}` and a single item object.
//! Everything not explicitly allowed is rejected, with `plan item at index N: <field>: <problem>`.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde_json::{Map, Value};

use crate::json_keys::key_name;

use super::{
    KNOB_ANNOTATION_PREFIX, KnobPatch, PLAN_SCHEMA, PLAN_SCHEMA_V2, Plan, PlanItem, PlanPassport,
    TakesEffect, Target, WorkloadKind,
};

/// Plan files larger than this are refused before parsing.
pub const MAX_PLAN_BYTES: u64 = 16 * 1024 * 1024;

/// More items than this is not a plan a human can review.
pub const MAX_ITEMS: usize = 1000;

/// The class of a plan error, as recorded in explain events.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PlanErrorKind {
    InvalidJson,
    InvalidShape,
    InvalidItem,
}

impl PlanErrorKind {
    pub fn as_str(self) -> &'static str {
        match self {
            PlanErrorKind::InvalidJson => "invalid_json",
            PlanErrorKind::InvalidShape => "invalid_shape",
            PlanErrorKind::InvalidItem => "invalid_item",
        }
    }
}

/// Why a plan was rejected; `message` is one line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlanError {
    pub kind: PlanErrorKind,
    /// The offending item, for `invalid_item`.
    pub index: Option<usize>,
    pub message: String,
}

impl fmt::Display for PlanError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for PlanError {}

/// Which form the plan text had.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PlanFormat {
    Array,
    Envelope,
    Object,
}

/// A key from the input, printable in a one-line error: as is when plain, else quoted and cut.
fn shape(message: impl Into<String>) -> PlanError {
    PlanError {
        kind: PlanErrorKind::InvalidShape,
        index: None,
        message: message.into(),
    }
}

/// Parses and validates plan text.
pub fn parse_plan(text: &str) -> Result<(Plan, PlanFormat), PlanError> {
    let doc = crate::json_keys::parse_unique(text.as_bytes()).map_err(|e| PlanError {
        kind: PlanErrorKind::InvalidJson,
        index: None,
        message: format!("invalid JSON: {e}"),
    })?;
    let mut passport = None;
    let mut v1_envelope = false;
    let (items, format, digest) = match &doc {
        Value::Array(items) => (items.as_slice(), PlanFormat::Array, None),
        Value::Object(o) if o.contains_key("items") => {
            if let Some(k) = o.keys().find(|k| {
                !["schema_version", "items", "plan_digest", "passport"].contains(&k.as_str())
            }) {
                return Err(shape(format!(
                    "plan envelope: unknown key {} (allowed: schema_version, items, plan_digest, passport)",
                    key_name(k)
                )));
            }
            match o.get("schema_version").and_then(Value::as_str) {
                Some(PLAN_SCHEMA) => v1_envelope = true,
                Some(PLAN_SCHEMA_V2) => {}
                Some(other) => {
                    return Err(shape(format!(
                        "plan envelope: schema_version {} is not {PLAN_SCHEMA_V2} or {PLAN_SCHEMA}",
                        super::quoted(other)
                    )));
                }
                None => {
                    return Err(shape(format!(
                        "plan envelope: schema_version must be {PLAN_SCHEMA_V2:?} or {PLAN_SCHEMA:?}"
                    )));
                }
            }
            let Some(items) = o["items"].as_array() else {
                return Err(shape("plan envelope: items must be an array"));
            };
            let digest = match o.get("plan_digest") {
                None => None,
                Some(Value::String(d)) => Some(d.as_str()),
                Some(_) => return Err(shape("plan envelope: plan_digest must be a string")),
            };
            if let Some(p) = o.get("passport") {
                passport = Some(parse_plan_passport(p).map_err(shape)?);
            }
            (items.as_slice(), PlanFormat::Envelope, digest)
        }
        Value::Object(_) => (std::slice::from_ref(&doc), PlanFormat::Object, None),
        _ => {
            return Err(shape(
                "a plan must be an array of items, a k8s_plan.v1 envelope or a single item object",
            ));
        }
    };
    if items.len() > MAX_ITEMS {
        return Err(shape(format!(
            "the plan has {} items; at most {MAX_ITEMS} are allowed",
            items.len()
        )));
    }
    let item_err = |index: usize, message: String| PlanError {
        kind: PlanErrorKind::InvalidItem,
        index: Some(index),
        message: format!("plan item at index {index}: {message}"),
    };
    let items = items
        .iter()
        .enumerate()
        .map(|(i, v)| parse_item(v).map_err(|m| item_err(i, m)))
        .collect::<Result<Vec<_>, _>>()?;
    let mut plan = Plan::from_items(items).map_err(|(i, m)| item_err(i, m))?;
    if v1_envelope
        && let Some(i) = plan.items.iter().position(|i| {
            i.takes_effect.is_some()
                || !matches!(
                    i.target.kind,
                    WorkloadKind::Deployment | WorkloadKind::StatefulSet
                )
        })
    {
        return Err(item_err(
            i,
            format!(
                "a {PLAN_SCHEMA} plan holds only Deployment/StatefulSet items without takes_effect; this item needs {PLAN_SCHEMA_V2}"
            ),
        ));
    }
    plan.passport = passport;
    if let Some(d) = digest
        && d != plan.digest()
    {
        return Err(shape(format!(
            "plan envelope: plan_digest {d} does not match the items ({})",
            plan.digest()
        )));
    }
    Ok((plan, format))
}

/// `{name, version, sha256}`, all strings, `sha256` as `sha256:<64 lowercase hex>`.
fn parse_plan_passport(v: &Value) -> Result<PlanPassport, String> {
    let p: PlanPassport = serde_json::from_value(v.clone()).map_err(|e| {
        format!("plan envelope: passport must be {{name, version, sha256}} strings: {e}")
    })?;
    let hex = p.sha256.strip_prefix("sha256:").unwrap_or("");
    if hex.len() != 64 || !hex.bytes().all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f')) {
        return Err(format!(
            "plan envelope: passport.sha256 {} is not sha256:<64 hex digits>",
            super::quoted(&p.sha256)
        ));
    }
    if p.name.is_empty() || p.name.len() > 253 || p.version.len() > 64 {
        return Err("plan envelope: passport.name or passport.version is empty or too long".into());
    }
    Ok(p)
}

fn string_field<'a>(o: &'a Map<String, Value>, key: &str) -> Result<Option<&'a str>, String> {
    match o.get(key) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(format!("{key}: must be a string")),
    }
}

fn parse_item(v: &Value) -> Result<PlanItem, String> {
    let Some(o) = v.as_object() else {
        return Err("must be an object".into());
    };
    const KEYS: [&str; 9] = [
        "namespace",
        "name",
        "kind",
        "apiVersion",
        "patch",
        "reason",
        "takes_effect",
        "restart_required",
        "workload",
    ];
    if let Some(k) = o.keys().find(|k| !KEYS.contains(&k.as_str())) {
        return Err(format!(
            "{}: unknown field (allowed: {})",
            key_name(k),
            KEYS.join(", ")
        ));
    }
    let namespace = string_field(o, "namespace")?.ok_or("namespace: missing")?;
    let name = string_field(o, "name")?.ok_or("name: missing")?;
    let kind = match string_field(o, "kind")? {
        None => WorkloadKind::Deployment,
        Some(k) => WorkloadKind::parse(k).ok_or_else(|| {
            format!(
                "kind: {} is not allowed ({})",
                super::quoted(k),
                WorkloadKind::ALL.map(WorkloadKind::as_str).join(", ")
            )
        })?,
    };
    if let Some(api) = string_field(o, "apiVersion")? {
        let want = crate::k8s::kinds::spec(kind).api_version();
        if api != want {
            return Err(format!("apiVersion: {} is not {want}", super::quoted(api)));
        }
    }
    string_field(o, "reason")?;
    let target = Target::new(namespace, name, kind)?;
    let patch = parse_patch(o.get("patch").ok_or("patch: missing")?)?;
    let mut item = PlanItem::new(target, patch).map_err(|e| format!("patch: {e}"))?;
    if let Some(w) = o.get("workload") {
        let w = w
            .as_object()
            .filter(|w| w.keys().all(|k| k == "kind" || k == "name"))
            .ok_or("workload: must be {kind, name}")?;
        let kind = match w.get("kind").and_then(Value::as_str) {
            Some(k) => WorkloadKind::parse(k)
                .filter(|k| k.is_workload())
                .ok_or_else(|| {
                    format!("workload.kind: {} is not a workload kind", super::quoted(k))
                })?,
            None => return Err("workload.kind: missing or not a string".into()),
        };
        let name = w
            .get("name")
            .and_then(Value::as_str)
            .ok_or("workload.name: missing or not a string")?;
        let owner = Target::new(namespace, name, kind).map_err(|e| format!("workload.{e}"))?;
        item = item.with_workload(&owner)?;
    }
    let takes_effect = match string_field(o, "takes_effect")? {
        None => None,
        Some(t) => Some(TakesEffect::parse(t).ok_or_else(|| {
            format!(
                "takes_effect: {} is not live, next_pod_start or rollout",
                super::quoted(t)
            )
        })?),
    };
    let restart = match o.get("restart_required") {
        None => None,
        Some(Value::Bool(b)) => Some(*b),
        Some(_) => return Err("restart_required: must be a boolean".into()),
    };
    match (takes_effect, restart) {
        (None, None) => Ok(item),
        (Some(t), r) => {
            if r.is_some_and(|r| r != t.restart_required()) {
                return Err(format!(
                    "restart_required: must be {} when takes_effect is {}",
                    t.restart_required(),
                    t.as_str()
                ));
            }
            item.with_takes_effect(t)
        }
        (None, Some(_)) => Err("restart_required: only with takes_effect".into()),
    }
}

/// Walks an object that may hold only `allowed` keys.
fn only<'a>(v: &'a Value, path: &str, allowed: &str) -> Result<&'a Map<String, Value>, String> {
    let o = v
        .as_object()
        .ok_or_else(|| format!("{path}: must be an object"))?;
    if let Some(k) = o.keys().find(|k| k.as_str() != allowed) {
        return Err(format!(
            "{path}.{}: not allowed (a plan may only set {KNOB_ANNOTATION_PREFIX}* annotations)",
            key_name(k)
        ));
    }
    Ok(o)
}

fn parse_patch(v: &Value) -> Result<KnobPatch, String> {
    let o = v.as_object().ok_or("patch: must be an object")?;
    let mut patch = KnobPatch::default();
    for (k, v) in o {
        match k.as_str() {
            "metadata" => {
                if let Some(a) = only(v, "patch.metadata", "annotations")?.get("annotations") {
                    (patch.object, patch.object_removed) =
                        annotations(a, "patch.metadata.annotations")?;
                }
            }
            "data" => {
                (patch.data, patch.data_removed) = data_keys(v)?;
            }
            "spec" if v.get("pytorchReplicaSpecs").is_some() => {
                let roles = only(v, "patch.spec", "pytorchReplicaSpecs")?
                    .get("pytorchReplicaSpecs")
                    .unwrap_or(&Value::Null)
                    .as_object()
                    .ok_or("patch.spec.pytorchReplicaSpecs: must be an object")?;
                let mut first: Option<(BTreeMap<String, String>, BTreeSet<String>)> = None;
                for (role, r) in roles {
                    if !super::is_replica_role(role) {
                        return Err(format!(
                            "patch.spec.pytorchReplicaSpecs.{}: not a replica role name",
                            key_name(role)
                        ));
                    }
                    let path = format!("patch.spec.pytorchReplicaSpecs.{role}");
                    let t = &only(r, &path, "template")?
                        .get("template")
                        .unwrap_or(&Value::Null);
                    let path = format!("{path}.template");
                    let m = &only(t, &path, "metadata")?
                        .get("metadata")
                        .unwrap_or(&Value::Null);
                    let path = format!("{path}.metadata");
                    let a = &only(m, &path, "annotations")?
                        .get("annotations")
                        .unwrap_or(&Value::Null);
                    let got = annotations(a, &format!("{path}.annotations"))?;
                    match &first {
                        None => first = Some(got),
                        Some(f) if *f == got => {}
                        Some(_) => {
                            return Err(format!(
                                "{path}.annotations: every replica role must carry the same knobs"
                            ));
                        }
                    }
                    patch.roles.insert(role.clone());
                }
                if let Some((set, removed)) = first {
                    (patch.pod_template, patch.pod_template_removed) = (set, removed);
                }
            }
            "spec" => {
                let Some(t) = only(v, "patch.spec", "template")?.get("template") else {
                    continue;
                };
                let Some(m) = only(t, "patch.spec.template", "metadata")?.get("metadata") else {
                    continue;
                };
                if let Some(a) =
                    only(m, "patch.spec.template.metadata", "annotations")?.get("annotations")
                {
                    (patch.pod_template, patch.pod_template_removed) =
                        annotations(a, "patch.spec.template.metadata.annotations")?;
                }
            }
            other => {
                return Err(format!(
                    "patch.{}: not allowed (a plan may only set {KNOB_ANNOTATION_PREFIX}* annotations)",
                    key_name(other)
                ));
            }
        }
    }
    Ok(patch)
}

/// A knobs ConfigMap's `data` keys set (string values) and removed (`null`): every key a knob name.
fn data_keys(v: &Value) -> Result<(BTreeMap<String, String>, BTreeSet<String>), String> {
    let o = v.as_object().ok_or("patch.data: must be an object")?;
    let mut out = BTreeMap::new();
    let mut removed = BTreeSet::new();
    for (key, value) in o {
        if !crate::passport::is_knob_name(key) {
            return Err(format!(
                "patch.data: key {} is not a knob name (snake_case, [a-z][a-z0-9_]*)",
                key_name(key)
            ));
        }
        match value {
            Value::String(s) => {
                out.insert(key.clone(), s.clone());
            }
            Value::Null => {
                removed.insert(key.clone());
            }
            _ => {
                return Err(format!(
                    "patch.data: {}: value must be a string (or null to remove it)",
                    key_name(key)
                ));
            }
        }
    }
    Ok((out, removed))
}

/// The annotations set (string values) and removed (`null`, as in a rollback plan).
fn annotations(
    v: &Value,
    path: &str,
) -> Result<(BTreeMap<String, String>, BTreeSet<String>), String> {
    let o = v
        .as_object()
        .ok_or_else(|| format!("{path}: must be an object"))?;
    let mut out = BTreeMap::new();
    let mut removed = BTreeSet::new();
    for (key, value) in o {
        let Some(knob) = key.strip_prefix(KNOB_ANNOTATION_PREFIX) else {
            return Err(format!(
                "{path}: key {} is not a {KNOB_ANNOTATION_PREFIX}* annotation",
                key_name(key)
            ));
        };
        match value {
            Value::String(s) => {
                out.insert(knob.to_string(), s.clone());
            }
            Value::Null => {
                removed.insert(knob.to_string());
            }
            _ => {
                return Err(format!(
                    "{path}: {}: value must be a string (or null to remove it)",
                    key_name(key)
                ));
            }
        }
    }
    Ok((out, removed))
}
