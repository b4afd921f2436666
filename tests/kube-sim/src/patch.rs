//! Patch types the apiserver accepts, as pure functions on JSON documents.
//!
//! RFC 7386 merge patches and RFC 6902 JSON patches come from the `json-patch` crate.
//! Strategic merge patches are implemented here for the apps/v1 and core/v1 shapes we serve:
//! maps merge recursively, `null` deletes, lists with a known patch merge key (containers by
//! `name`, ports by `containerPort`, ...) merge element-wise, other lists are replaced, and the
//! `$patch`, `$retainKeys`, `$deleteFromPrimitiveList/` and `$setElementOrder/` directives work.
//! Server-side apply lives in `managed.rs`, because it needs field ownership.

use serde_json::{Map, Value};

use crate::status::ApiError;

/// The `Content-Type` of a PATCH request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PatchType {
    Merge,
    Strategic,
    Json,
    Apply,
}

impl PatchType {
    pub fn from_content_type(content_type: &str) -> Option<Self> {
        let media = content_type.split(';').next().unwrap_or("").trim();
        match media.to_ascii_lowercase().as_str() {
            "application/merge-patch+json" => Some(PatchType::Merge),
            "application/strategic-merge-patch+json" => Some(PatchType::Strategic),
            "application/json-patch+json" => Some(PatchType::Json),
            "application/apply-patch+yaml" | "application/apply-patch+json" => {
                Some(PatchType::Apply)
            }
            _ => None,
        }
    }
}

/// Parses a patch body as a JSON object (merge, strategic and apply patches).
pub fn parse_object(body: &[u8]) -> Result<Value, ApiError> {
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("error decoding patch: {e}")))?;
    if !value.is_object() {
        return Err(ApiError::bad_request(format!(
            "error decoding patch: json: cannot unmarshal {} into Go value of type map[string]interface {{}}",
            json_type(&value)
        )));
    }
    Ok(value)
}

fn json_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "bool",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// RFC 7386 JSON merge patch.
pub fn merge_patch(current: &Value, patch: &Value) -> Value {
    let mut doc = current.clone();
    json_patch::merge(&mut doc, patch);
    doc
}

/// RFC 6902 JSON patch. A malformed patch is 400; one that does not apply is 422.
pub fn json_patch(current: &Value, body: &[u8]) -> Result<Value, ApiError> {
    let patch: json_patch::Patch = serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("error decoding patch: {e}")))?;
    let mut doc = current.clone();
    json_patch::patch(&mut doc, &patch).map_err(|e| ApiError::unprocessable(&e.to_string()))?;
    Ok(doc)
}

/// Patch merge keys of the list fields we know (from the Kubernetes types' `patchMergeKey`).
fn merge_key(field: &str) -> Option<&'static str> {
    match field {
        "containers"
        | "initContainers"
        | "ephemeralContainers"
        | "volumes"
        | "env"
        | "volumeMounts"
        | "imagePullSecrets"
        | "resourceClaims"
        | "schedulingGates" => Some("name"),
        "ports" => Some("containerPort"),
        "volumeDevices" => Some("devicePath"),
        "conditions" => Some("type"),
        "ownerReferences" => Some("uid"),
        "hostAliases" => Some("ip"),
        "topologySpreadConstraints" => Some("topologyKey"),
        _ => None,
    }
}

/// Primitive lists whose strategy is "merge" (union) rather than replace.
fn is_primitive_merge_list(field: &str) -> bool {
    field == "finalizers"
}

/// Strategic merge patch of `current` with `patch` (both JSON objects).
pub fn strategic_merge(current: &Value, patch: &Value) -> Result<Value, ApiError> {
    let (Some(orig), Some(p)) = (current.as_object(), patch.as_object()) else {
        return Err(ApiError::bad_request(
            "strategic merge patch must be a JSON object",
        ));
    };
    let mut out = orig.clone();
    match merge_map(&mut out, p).map_err(ApiError::bad_request)? {
        MapOutcome::Keep => Ok(Value::Object(out)),
        MapOutcome::Delete => Ok(Value::Object(Map::new())),
    }
}

enum MapOutcome {
    Keep,
    Delete,
}

fn merge_map(
    original: &mut Map<String, Value>,
    patch: &Map<String, Value>,
) -> Result<MapOutcome, String> {
    match patch.get("$patch").map(|v| v.as_str()) {
        None => {}
        Some(Some("replace")) => {
            *original = strip_directives_map(patch);
            return Ok(MapOutcome::Keep);
        }
        Some(Some("delete")) => return Ok(MapOutcome::Delete),
        Some(Some("merge")) => {}
        Some(other) => return Err(format!("Unknown patch type: {other:?}")),
    }
    for (key, value) in patch {
        if key == "$patch" || key == "$retainKeys" || key.starts_with("$setElementOrder/") {
            continue;
        }
        if let Some(field) = key.strip_prefix("$deleteFromPrimitiveList/") {
            let remove = value.as_array().cloned().unwrap_or_default();
            if let Some(Value::Array(list)) = original.get_mut(field) {
                list.retain(|v| !remove.contains(v));
            }
            continue;
        }
        if key.starts_with('$') {
            return Err(format!(
                "unknown directive {key:?} in strategic merge patch"
            ));
        }
        match value {
            Value::Null => {
                original.remove(key);
            }
            Value::Object(pm) => {
                let mut target = match original.remove(key) {
                    Some(Value::Object(m)) => m,
                    _ => Map::new(),
                };
                if let MapOutcome::Keep = merge_map(&mut target, pm)? {
                    original.insert(key.clone(), Value::Object(target));
                }
            }
            Value::Array(pl) => {
                let merged = match (original.get(key), merge_key(key)) {
                    (Some(Value::Array(ol)), Some(mk)) => merge_list(ol, pl, mk)?,
                    (Some(Value::Array(ol)), None) if is_primitive_merge_list(key) => {
                        let mut out = ol.clone();
                        for v in pl {
                            if !out.contains(v) {
                                out.push(v.clone());
                            }
                        }
                        out
                    }
                    _ => pl
                        .iter()
                        .filter(|v| !is_directive_element(v))
                        .map(strip_directives)
                        .collect(),
                };
                original.insert(key.clone(), Value::Array(merged));
            }
            scalar => {
                original.insert(key.clone(), scalar.clone());
            }
        }
    }
    if let Some(Value::Array(keep)) = patch.get("$retainKeys") {
        let keep: Vec<&str> = keep.iter().filter_map(Value::as_str).collect();
        original.retain(|k, _| keep.contains(&k.as_str()));
    }
    Ok(MapOutcome::Keep)
}

fn is_directive_element(v: &Value) -> bool {
    v.as_object()
        .is_some_and(|m| m.len() == 1 && m.contains_key("$patch"))
}

fn merge_list(original: &[Value], patch: &[Value], key: &str) -> Result<Vec<Value>, String> {
    if patch
        .iter()
        .any(|v| is_directive_element(v) && v["$patch"] == "replace")
    {
        return Ok(patch
            .iter()
            .filter(|v| !is_directive_element(v))
            .map(strip_directives)
            .collect());
    }
    let mut out: Vec<Value> = original.to_vec();
    for element in patch {
        let Some(pm) = element.as_object() else {
            out.push(element.clone());
            continue;
        };
        if is_directive_element(element) {
            continue;
        }
        let Some(id) = pm.get(key) else {
            return Err(format!(
                "map: {element} does not contain declared merge key: {key}"
            ));
        };
        let pos = out.iter().position(|o| o.get(key) == Some(id));
        if pm.get("$patch").and_then(Value::as_str) == Some("delete") {
            out.retain(|o| o.get(key) != Some(id));
            continue;
        }
        match pos {
            Some(i) => {
                let mut target = out[i].as_object().cloned().unwrap_or_default();
                match merge_map(&mut target, pm)? {
                    MapOutcome::Keep => out[i] = Value::Object(target),
                    MapOutcome::Delete => {
                        out.remove(i);
                    }
                }
            }
            None => out.push(strip_directives(element)),
        }
    }
    Ok(out)
}

fn strip_directives_map(m: &Map<String, Value>) -> Map<String, Value> {
    m.iter()
        .filter(|(k, _)| !k.starts_with('$'))
        .map(|(k, v)| (k.clone(), strip_directives(v)))
        .collect()
}

fn strip_directives(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(strip_directives_map(m)),
        Value::Array(a) => Value::Array(a.iter().map(strip_directives).collect()),
        other => other.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn deployment() -> Value {
        json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "trainer", "annotations": {"a": "1", "keep": "x"}},
            "spec": {"replicas": 1, "template": {
                "metadata": {"annotations": {"modekeeper/knob.grad_accum_steps": "4", "other": "o"}},
                "spec": {"containers": [
                    {"name": "trainer", "image": "img:1", "env": [{"name": "A", "value": "1"}], "ports": [{"containerPort": 80}]},
                    {"name": "sidecar", "image": "side:1"}
                ]}
            }}
        })
    }

    #[test]
    fn content_types() {
        assert_eq!(
            PatchType::from_content_type("application/merge-patch+json"),
            Some(PatchType::Merge)
        );
        assert_eq!(
            PatchType::from_content_type("application/strategic-merge-patch+json; charset=utf-8"),
            Some(PatchType::Strategic)
        );
        assert_eq!(
            PatchType::from_content_type("application/json-patch+json"),
            Some(PatchType::Json)
        );
        assert_eq!(
            PatchType::from_content_type("application/apply-patch+yaml"),
            Some(PatchType::Apply)
        );
        assert_eq!(PatchType::from_content_type("application/json"), None);
    }

    #[test]
    fn merge_patch_sets_and_deletes_annotations() {
        let patched = merge_patch(
            &deployment(),
            &json!({"metadata": {"annotations": {"a": null, "b": "2"}},
                    "spec": {"template": {"metadata": {"annotations": {"modekeeper/knob.grad_accum_steps": "8"}}}}}),
        );
        assert_eq!(
            patched["metadata"]["annotations"],
            json!({"b": "2", "keep": "x"})
        );
        assert_eq!(
            patched["spec"]["template"]["metadata"]["annotations"]["modekeeper/knob.grad_accum_steps"],
            "8"
        );
        assert_eq!(
            patched["spec"]["template"]["metadata"]["annotations"]["other"],
            "o"
        );
        // Lists are replaced wholesale by a merge patch.
        let replaced = merge_patch(
            &deployment(),
            &json!({"spec": {"template": {"spec": {"containers": [{"name": "x"}]}}}}),
        );
        assert_eq!(
            replaced["spec"]["template"]["spec"]["containers"],
            json!([{"name": "x"}])
        );
    }

    #[test]
    fn strategic_merges_maps_and_keyed_lists() {
        let patched = strategic_merge(
            &deployment(),
            &json!({"spec": {"template": {
                "metadata": {"annotations": {"modekeeper/knob.grad_accum_steps": "8", "other": null}},
                "spec": {"containers": [{"name": "trainer", "image": "img:2", "env": [{"name": "B", "value": "2"}]}]}
            }}}),
        )
        .unwrap();
        let tpl = &patched["spec"]["template"];
        assert_eq!(
            tpl["metadata"]["annotations"],
            json!({"modekeeper/knob.grad_accum_steps": "8"})
        );
        let containers = tpl["spec"]["containers"].as_array().unwrap();
        assert_eq!(containers.len(), 2, "sidecar kept");
        assert_eq!(containers[0]["image"], "img:2");
        assert_eq!(
            containers[0]["env"],
            json!([{"name": "A", "value": "1"}, {"name": "B", "value": "2"}])
        );
        assert_eq!(containers[0]["ports"], json!([{"containerPort": 80}]));
        assert_eq!(containers[1]["name"], "sidecar");
    }

    #[test]
    fn strategic_directives() {
        let d = deployment();
        let deleted = strategic_merge(
            &d,
            &json!({"spec": {"template": {"spec": {"containers": [{"name": "sidecar", "$patch": "delete"}]}}}}),
        )
        .unwrap();
        assert_eq!(
            deleted["spec"]["template"]["spec"]["containers"]
                .as_array()
                .unwrap()
                .len(),
            1
        );

        let replaced = strategic_merge(
            &d,
            &json!({"metadata": {"annotations": {"$patch": "replace", "only": "1"}}}),
        )
        .unwrap();
        assert_eq!(replaced["metadata"]["annotations"], json!({"only": "1"}));

        let list_replaced = strategic_merge(
            &d,
            &json!({"spec": {"template": {"spec": {"containers": [{"name": "n", "image": "i"}, {"$patch": "replace"}]}}}}),
        )
        .unwrap();
        assert_eq!(
            list_replaced["spec"]["template"]["spec"]["containers"],
            json!([{"name": "n", "image": "i"}])
        );

        let map_deleted = strategic_merge(
            &d,
            &json!({"metadata": {"annotations": {"$patch": "delete"}}}),
        )
        .unwrap();
        assert!(map_deleted["metadata"].get("annotations").is_none());

        let retained = strategic_merge(
            &d,
            &json!({"metadata": {"annotations": {"$retainKeys": ["keep", "new"], "new": "n"}}}),
        )
        .unwrap();
        assert_eq!(
            retained["metadata"]["annotations"],
            json!({"keep": "x", "new": "n"})
        );

        let fin = strategic_merge(
            &json!({"metadata": {"finalizers": ["a", "b"]}}),
            &json!({"metadata": {"finalizers": ["c"], "$deleteFromPrimitiveList/finalizers": ["a"]}}),
        )
        .unwrap();
        assert_eq!(fin["metadata"]["finalizers"], json!(["b", "c"]));
    }

    #[test]
    fn strategic_rejects_keyless_elements_and_unknown_directives() {
        let d = deployment();
        assert!(
            strategic_merge(
                &d,
                &json!({"spec": {"template": {"spec": {"containers": [{"image": "x"}]}}}})
            )
            .is_err()
        );
        assert!(strategic_merge(&d, &json!({"metadata": {"$bogus": 1}})).is_err());
        assert_eq!(
            strategic_merge(&d, &json!({"metadata": {"$patch": "explode"}}))
                .unwrap_err()
                .code,
            400
        );
    }

    #[test]
    fn json_patch_applies_and_reports() {
        let d = deployment();
        let body = br#"[{"op":"replace","path":"/spec/template/metadata/annotations/modekeeper~1knob.grad_accum_steps","value":"16"},
                        {"op":"add","path":"/metadata/annotations/new","value":"v"}]"#;
        let patched = json_patch(&d, body).unwrap();
        assert_eq!(
            patched["spec"]["template"]["metadata"]["annotations"]["modekeeper/knob.grad_accum_steps"],
            "16"
        );
        assert_eq!(patched["metadata"]["annotations"]["new"], "v");

        let failing =
            json_patch(&d, br#"[{"op":"test","path":"/spec/replicas","value":3}]"#).unwrap_err();
        assert_eq!((failing.code, failing.reason.as_str()), (422, "Invalid"));
        let missing =
            json_patch(&d, br#"[{"op":"remove","path":"/metadata/labels/nope"}]"#).unwrap_err();
        assert_eq!(missing.code, 422);
        assert_eq!(json_patch(&d, b"{not json").unwrap_err().code, 400);
        assert_eq!(
            json_patch(&d, br#"[{"op":"frobnicate","path":"/a"}]"#)
                .unwrap_err()
                .code,
            400
        );
    }

    #[test]
    fn parse_object_rejects_non_objects() {
        assert_eq!(parse_object(b"[1]").unwrap_err().code, 400);
        assert_eq!(parse_object(b"nope").unwrap_err().code, 400);
        assert!(parse_object(br#"{"a":1}"#).is_ok());
    }
}
