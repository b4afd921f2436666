//! Objects clients write themselves: core/v1 Events (also served as events.k8s.io/v1),
//! coordination.k8s.io/v1 Leases, and the create (POST) and update (PUT) of ConfigMaps and Secrets. Create (POST), get, list, watch, update (PUT) and PATCH, with
//! the apiserver's optimistic concurrency: a write carrying a stale `metadata.resourceVersion`
//! is a 409 Conflict, so two contenders for a Lease can never both win.
//!
//! Events are stored once, in core/v1 form; events.k8s.io/v1 requests are converted at the
//! boundary with the field renames of `k8s.io/kubernetes/pkg/apis/events/v1` (`note` ↔
//! `message`, `regarding` ↔ `involvedObject`, `reportingController` ↔ `reportingComponent`,
//! `deprecated*` ↔ the old fields), as the apiserver does.

use axum::body::Body;
use axum::http::{Response, StatusCode, header};
use serde_json::{Map, Value, json};

use super::{Ctx, json_response, list};
use crate::managed::ManagedFields;
use crate::patch::{self, PatchType};
use crate::resource::ResourceKind;
use crate::state::lock;
use crate::status::{ApiError, FieldError};

/// Which API version a request speaks for a stored kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum View {
    /// The stored form (every kind but events.k8s.io Events).
    Stored,
    /// events.k8s.io/v1 Events over stored core/v1 ones.
    EventsV1,
}

/// core/v1 name ↔ events.k8s.io/v1 name.
const EVENT_RENAMES: [(&str, &str); 7] = [
    ("message", "note"),
    ("involvedObject", "regarding"),
    ("reportingComponent", "reportingController"),
    ("source", "deprecatedSource"),
    ("firstTimestamp", "deprecatedFirstTimestamp"),
    ("lastTimestamp", "deprecatedLastTimestamp"),
    ("count", "deprecatedCount"),
];

fn rename(value: Value, to_v1: bool, api_version: &str) -> Value {
    let Value::Object(mut m) = value else {
        return value;
    };
    let mut out = Map::new();
    for (core, v1) in EVENT_RENAMES {
        let (from, to) = if to_v1 { (core, v1) } else { (v1, core) };
        if let Some(v) = m.remove(from) {
            out.insert(to.to_string(), v);
        }
    }
    for (k, v) in m {
        out.entry(k).or_insert(v);
    }
    if out.contains_key("apiVersion") {
        out.insert("apiVersion".into(), json!(api_version));
    }
    Value::Object(out)
}

/// An Event in core/v1 field names, whichever version it came in (a core one is unchanged).
pub(crate) fn core_event(value: Value) -> Value {
    rename(value, false, "v1")
}

impl View {
    pub fn api_version(self, kind: ResourceKind) -> &'static str {
        match self {
            View::Stored => kind.api_version(),
            View::EventsV1 => "events.k8s.io/v1",
        }
    }

    /// Stored form → what the client reads.
    pub fn outgoing(self, value: Value) -> Value {
        match self {
            View::Stored => value,
            View::EventsV1 => rename(value, true, "events.k8s.io/v1"),
        }
    }

    /// What the client sent → stored form.
    fn incoming(self, value: Value) -> Value {
        match self {
            View::Stored => value,
            View::EventsV1 => rename(value, false, "v1"),
        }
    }
}

pub(crate) fn records(
    ctx: &Ctx,
    kind: ResourceKind,
    view: View,
) -> Result<Response<Body>, ApiError> {
    let info = &ctx.info;
    if !info.subresource.is_empty() {
        return Err(ApiError::path_not_found());
    }
    let ns = (!info.namespace.is_empty()).then_some(info.namespace.as_str());
    match info.verb.as_str() {
        "list" | "watch" => list::list_view(ctx, kind, ns, view),
        "get" => {
            let value = lock(&ctx.shared.store)
                .get(kind, &info.namespace, &info.name)
                .map(|s| s.value.clone())
                .ok_or_else(|| ApiError::not_found(kind, &info.name))?;
            list::one(ctx, kind, view.outgoing(value))
        }
        "create" if info.name.is_empty() && ns.is_some() => create(ctx, kind, view),
        "update" if !info.name.is_empty() => update(ctx, kind, view),
        "patch" if !info.name.is_empty() => patch(ctx, kind, view),
        verb => Err(ApiError::method_not_supported(kind.plural(), verb)),
    }
}

fn body_object(ctx: &Ctx, kind: ResourceKind) -> Result<Value, ApiError> {
    // kubectl's typed clients (`create configmap`, `create secret`) post protobuf.
    if crate::proto::is_protobuf(&ctx.body) {
        return match kind {
            ResourceKind::ConfigMap | ResourceKind::Secret => {
                crate::proto::decode_data_object(kind.kind(), &ctx.body)
            }
            _ => Err(ApiError::bad_request(format!(
                "protobuf bodies are not decoded for {}",
                kind.plural()
            ))),
        };
    }
    let v: Value = serde_json::from_slice(&ctx.body)
        .map_err(|e| ApiError::bad_request(format!("the body is not a JSON object: {e}")))?;
    if !v.is_object() {
        return Err(ApiError::bad_request("the body is not a JSON object"));
    }
    Ok(v)
}

const SERVER_FIELDS: [&str; 5] = [
    "uid",
    "creationTimestamp",
    "generation",
    "managedFields",
    "deletionTimestamp",
];

fn create(ctx: &Ctx, kind: ResourceKind, view: View) -> Result<Response<Body>, ApiError> {
    let ns = ctx.info.namespace.as_str();
    let mut obj = body_object(ctx, kind)?;
    check_type(ctx, kind, view, &obj)?;
    if obj["metadata"]["name"].as_str().unwrap_or("").is_empty()
        && let Some(prefix) = obj["metadata"]["generateName"].as_str()
    {
        let n = lock(&ctx.shared.store).resource_version();
        obj["metadata"]["name"] = json!(format!(
            "{prefix}{}",
            crate::objects::name_suffix(&n.to_string())
        ));
    }
    let name = obj["metadata"]["name"].as_str().unwrap_or("").to_string();
    if name.is_empty() {
        return Err(ApiError::invalid(
            kind.group(),
            kind.kind(),
            "",
            &[FieldError::required(
                "metadata.name",
                "name or generateName is required",
            )],
        ));
    }
    if let Some(m) = obj["metadata"].as_object_mut() {
        for k in SERVER_FIELDS.iter().chain(&["resourceVersion"]) {
            m.remove(*k);
        }
    }
    check_namespace(ns, &obj)?;
    obj["metadata"]["namespace"] = json!(ns);
    validate(kind, view, &name, &obj)?;
    let mut stored_form = view.incoming(obj);
    stored_form["apiVersion"] = json!(kind.api_version());
    stored_form["kind"] = json!(kind.kind());
    if kind == ResourceKind::Secret {
        crate::objects::fold_string_data(&mut stored_form);
    }
    let mut store = lock(&ctx.shared.store);
    if kind.is_plain_object() {
        crate::validate::validate_workload(kind, ns, &name, None, &stored_form, &store.validation)?;
    }
    if !store.namespace_exists(ns) {
        return Err(ApiError::not_found(ResourceKind::Namespace, ns));
    }
    if store.get(kind, ns, &name).is_some() {
        return Err(ApiError::already_exists(kind, &name));
    }
    let created = if ctx.params("dryRun").is_empty() {
        store.create_managed(kind, stored_form, Some(ManagedFields::default()))
    } else {
        stored_form
    };
    Ok(json_response(StatusCode::CREATED, &view.outgoing(created)))
}

fn update(ctx: &Ctx, kind: ResourceKind, view: View) -> Result<Response<Body>, ApiError> {
    let obj = body_object(ctx, kind)?;
    check_type(ctx, kind, view, &obj)?;
    store_change(ctx, kind, view, obj)
}

fn patch(ctx: &Ctx, kind: ResourceKind, view: View) -> Result<Response<Body>, ApiError> {
    let content_type = ctx.header(header::CONTENT_TYPE).unwrap_or("");
    let patch_type = PatchType::from_content_type(content_type)
        .filter(|t| *t != PatchType::Apply)
        .ok_or_else(|| ApiError::unsupported_media_type(content_type))?;
    let current = lock(&ctx.shared.store)
        .get(kind, &ctx.info.namespace, &ctx.info.name)
        .map(|s| view.outgoing(s.value.clone()))
        .ok_or_else(|| ApiError::not_found(kind, &ctx.info.name))?;
    let patched = match patch_type {
        PatchType::Merge => patch::merge_patch(&current, &patch::parse_object(&ctx.body)?),
        PatchType::Strategic => patch::strategic_merge(&current, &patch::parse_object(&ctx.body)?)?,
        PatchType::Json | PatchType::Apply => patch::json_patch(&current, &ctx.body)?,
    };
    store_change(ctx, kind, view, patched)
}

/// The shared tail of PUT and PATCH: identity, resourceVersion precondition, validation, store.
fn store_change(
    ctx: &Ctx,
    kind: ResourceKind,
    view: View,
    mut obj: Value,
) -> Result<Response<Body>, ApiError> {
    let (ns, name) = (ctx.info.namespace.as_str(), ctx.info.name.as_str());
    if obj["metadata"]["name"].as_str() != Some(name) {
        return Err(ApiError::bad_request(format!(
            "the name of the object ({}) does not match the name on the URL ({name})",
            obj["metadata"]["name"].as_str().unwrap_or_default()
        )));
    }
    check_namespace(ns, &obj)?;
    obj["metadata"]["namespace"] = json!(ns);
    validate(kind, view, name, &obj)?;
    if kind == ResourceKind::Secret {
        crate::objects::fold_string_data(&mut obj);
    }
    let mut store = lock(&ctx.shared.store);
    let current = store
        .get(kind, ns, name)
        .cloned()
        .ok_or_else(|| ApiError::not_found(kind, name))?;
    if kind.is_plain_object() {
        crate::validate::validate_workload(
            kind,
            ns,
            name,
            Some(&current.value),
            &obj,
            &store.validation,
        )?;
    }
    let current_rv = current.value["metadata"]["resourceVersion"].clone();
    match &obj["metadata"]["resourceVersion"] {
        Value::Null => {}
        Value::String(rv) if rv.is_empty() || Value::String(rv.clone()) == current_rv => {}
        Value::String(_) => return Err(ApiError::conflict(kind, name)),
        other => {
            return Err(ApiError::bad_request(format!(
                "metadata.resourceVersion must be a string, got {other}"
            )));
        }
    }
    let mut stored_form = view.incoming(obj);
    stored_form["apiVersion"] = json!(kind.api_version());
    stored_form["kind"] = json!(kind.kind());
    for k in SERVER_FIELDS {
        match current.value["metadata"].get(k) {
            Some(v) => stored_form["metadata"][k] = v.clone(),
            None => {
                if let Some(m) = stored_form["metadata"].as_object_mut() {
                    m.remove(k);
                }
            }
        }
    }
    stored_form["metadata"]["resourceVersion"] = current_rv;
    if stored_form == current.value {
        return Ok(json_response(StatusCode::OK, &view.outgoing(current.value)));
    }
    let stored = if ctx.params("dryRun").is_empty() {
        store.commit(kind, ns, name, stored_form, current.managed)
    } else {
        stored_form
    };
    Ok(json_response(StatusCode::OK, &view.outgoing(stored)))
}

fn check_type(ctx: &Ctx, kind: ResourceKind, view: View, obj: &Value) -> Result<(), ApiError> {
    let want = view.api_version(kind);
    for (field, got, expected) in [
        ("apiVersion", &obj["apiVersion"], want),
        ("kind", &obj["kind"], kind.kind()),
    ] {
        if let Some(got) = got.as_str()
            && got != expected
        {
            return Err(ApiError::bad_request(format!(
                "the {field} of the provided object ({got}) does not match the one of {} ({expected})",
                ctx.info.path
            )));
        }
    }
    Ok(())
}

fn check_namespace(ns: &str, obj: &Value) -> Result<(), ApiError> {
    match obj["metadata"]["namespace"].as_str() {
        Some(got) if !got.is_empty() && got != ns => Err(ApiError::bad_request(format!(
            "the namespace of the provided object does not match the namespace sent on the request ({got} != {ns})"
        ))),
        _ => Ok(()),
    }
}

/// The checks of `ValidateEventCreate`/`ValidateLease` that clients trip over.
fn validate(kind: ResourceKind, view: View, name: &str, obj: &Value) -> Result<(), ApiError> {
    let mut errs = vec![];
    match kind {
        ResourceKind::Event => {
            let fields = |core: &'static str, v1: &'static str| match view {
                View::Stored => core,
                View::EventsV1 => v1,
            };
            match obj["type"].as_str() {
                None | Some("Normal" | "Warning") if view == View::Stored => {}
                Some("Normal" | "Warning") => {}
                _ => errs.push(FieldError::invalid(
                    "type",
                    &obj["type"],
                    "has invalid value, valid values: [Normal Warning]",
                )),
            }
            let note = fields("message", "note");
            if obj[note].as_str().is_some_and(|n| n.len() > 1024) {
                errs.push(FieldError::too_long(note, 1024));
            }
            if view == View::EventsV1 {
                for f in [
                    "eventTime",
                    "reportingController",
                    "reportingInstance",
                    "action",
                    "reason",
                ] {
                    if obj[f].as_str().unwrap_or("").is_empty() {
                        errs.push(FieldError::required(f, ""));
                    }
                }
            }
            let regarding = fields("involvedObject", "regarding");
            if let Some(rns) = obj[regarding]["namespace"].as_str()
                && !rns.is_empty()
                && Some(rns) != obj["metadata"]["namespace"].as_str()
                && obj["metadata"]["namespace"].as_str().is_some()
            {
                errs.push(FieldError::invalid(
                    format!("{regarding}.namespace"),
                    &obj[regarding]["namespace"],
                    "does not match event.namespace",
                ));
            }
        }
        ResourceKind::Lease => {
            let d = &obj["spec"]["leaseDurationSeconds"];
            if !d.is_null() && d.as_i64().is_none_or(|d| d <= 0) {
                errs.push(FieldError::invalid(
                    "spec.leaseDurationSeconds",
                    d,
                    "must be greater than 0",
                ));
            }
            let t = &obj["spec"]["leaseTransitions"];
            if !t.is_null() && t.as_i64().is_none_or(|t| t < 0) {
                errs.push(FieldError::invalid(
                    "spec.leaseTransitions",
                    t,
                    "must be greater than or equal to 0",
                ));
            }
        }
        _ => {}
    }
    ApiError::check(kind.group(), kind.kind(), name, &errs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_conversion_round_trips() {
        let core = json!({
            "apiVersion": "v1", "kind": "Event",
            "metadata": {"name": "e", "namespace": "ml"},
            "message": "m", "involvedObject": {"kind": "Deployment", "name": "trainer"},
            "reportingComponent": "modekeeper", "count": 2, "reason": "R", "action": "A",
        });
        let v1 = View::EventsV1.outgoing(core.clone());
        assert_eq!(v1["apiVersion"], "events.k8s.io/v1");
        assert_eq!(v1["note"], "m");
        assert_eq!(v1["regarding"]["name"], "trainer");
        assert_eq!(v1["reportingController"], "modekeeper");
        assert_eq!(v1["deprecatedCount"], 2);
        assert!(v1.get("message").is_none());
        assert_eq!(View::EventsV1.incoming(v1), core);
    }
}
