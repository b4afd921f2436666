//! What a patch would change: the leaf-by-leaf difference between the live object and the server's
//! dry-run answer, each changed path marked as a planned knob change or not. Anything the server
//! would change besides the planned `modekeeper/knob.*` annotations (a mutating webhook rewriting the
//! pod template, a defaulting change, a foreign writer) is unexpected. Pure.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::planned_knobs;
use crate::plan::KnobPatch;

/// Paths (JSON pointers, and everything under them) the server changes on every write and that no
/// patch controls: bookkeeping and status.
pub const IGNORED_PATHS: [&str; 4] = [
    "/metadata/resourceVersion",
    "/metadata/generation",
    "/metadata/managedFields",
    "/status",
];

/// Most diff entries kept per item; an object this different is a blocker either way.
const MAX_ENTRIES: usize = 200;

/// One changed leaf.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DiffEntry {
    /// JSON pointer (RFC 6901: `/` in a key is `~1`).
    pub path: String,
    /// `add`, `remove` or `replace`; `unchanged` for a planned knob the server did not set.
    pub op: String,
    pub before: Option<Value>,
    pub after: Option<Value>,
    /// The knob this path carries, if it is a planned knob annotation.
    pub knob: Option<String>,
    /// True when the path is a planned knob annotation and its new value is the planned one.
    pub expected: bool,
}

fn escape(key: &str) -> String {
    key.replace('~', "~0").replace('/', "~1")
}

fn ignored(path: &str) -> bool {
    IGNORED_PATHS
        .iter()
        .any(|p| path == *p || path.strip_prefix(p).is_some_and(|r| r.starts_with('/')))
}

/// An object, or absent (`Some(None)`); None for anything else.
#[allow(clippy::option_option)]
fn as_obj(v: Option<&Value>) -> Option<Option<&serde_json::Map<String, Value>>> {
    match v {
        None => Some(None),
        Some(Value::Object(m)) => Some(Some(m)),
        _ => None,
    }
}

/// An array, or absent (`Some(None)`); None for anything else.
#[allow(clippy::option_option)]
fn as_arr(v: Option<&Value>) -> Option<Option<&Vec<Value>>> {
    match v {
        None => Some(None),
        Some(Value::Array(x)) => Some(Some(x)),
        _ => None,
    }
}

fn walk(path: &str, a: Option<&Value>, b: Option<&Value>, out: &mut Vec<DiffEntry>) {
    if a == b || ignored(path) {
        return;
    }
    // Descend while both sides are containers of one type (or absent) and one has members; an
    // empty container appearing or vanishing is a leaf change.
    if let (Some(ma), Some(mb)) = (as_obj(a), as_obj(b))
        && (ma.is_some_and(|m| !m.is_empty()) || mb.is_some_and(|m| !m.is_empty()))
    {
        let mut keys: Vec<&String> = ma.iter().flat_map(|m| m.keys()).collect();
        keys.extend(mb.iter().flat_map(|m| m.keys()));
        keys.sort_unstable();
        keys.dedup();
        for k in keys {
            walk(
                &format!("{path}/{}", escape(k)),
                ma.and_then(|m| m.get(k)),
                mb.and_then(|m| m.get(k)),
                out,
            );
        }
        return;
    }
    if let (Some(xa), Some(xb)) = (as_arr(a), as_arr(b))
        && (xa.is_some_and(|x| !x.is_empty()) || xb.is_some_and(|x| !x.is_empty()))
    {
        let n = xa.map_or(0, Vec::len).max(xb.map_or(0, Vec::len));
        for i in 0..n {
            walk(
                &format!("{path}/{i}"),
                xa.and_then(|x| x.get(i)),
                xb.and_then(|x| x.get(i)),
                out,
            );
        }
        return;
    }
    let op = match (a, b) {
        (None, _) => "add",
        (_, None) => "remove",
        _ => "replace",
    };
    out.push(DiffEntry {
        path: path.to_string(),
        op: op.into(),
        before: a.cloned(),
        after: b.cloned(),
        knob: None,
        expected: false,
    });
}

fn pointer<'a>(v: &'a Value, path: &str) -> Option<&'a Value> {
    v.pointer(path)
}

/// The planned knob annotations as (JSON pointer, knob, value); `None` = removed (rollback plans).
/// Read from the merge patch body, so it is exactly what the server is asked to do.
fn planned(patch: &KnobPatch) -> Vec<(String, String, Option<String>)> {
    planned_knobs(patch)
        .into_iter()
        .map(|p| (p.pointer(), p.knob, p.value))
        .collect()
}

/// The changes from `live` to `result` outside [`IGNORED_PATHS`], in path order, plus an
/// `unchanged` entry for each planned knob the result does not carry with its planned value.
pub fn diff_workloads(live: &Value, result: &Value, patch: &KnobPatch) -> Vec<DiffEntry> {
    let mut out = vec![];
    walk("", Some(live), Some(result), &mut out);
    let planned = planned(patch);
    for e in &mut out {
        if let Some((_, knob, value)) = planned.iter().find(|(p, _, _)| *p == e.path) {
            e.knob = Some(knob.clone());
            e.expected = e.after.as_ref().and_then(Value::as_str) == value.as_deref();
        }
    }
    for (path, knob, value) in &planned {
        let after = pointer(result, path);
        if after.and_then(Value::as_str) != value.as_deref() && !out.iter().any(|e| e.path == *path)
        {
            out.push(DiffEntry {
                path: path.clone(),
                op: "unchanged".into(),
                before: pointer(live, path).cloned(),
                after: after.cloned(),
                knob: Some(knob.clone()),
                expected: false,
            });
        }
    }
    out.sort_by(|a, b| a.path.cmp(&b.path));
    if out.len() > MAX_ENTRIES {
        // Keep every unexpected entry ahead of the expected ones when cutting.
        out.sort_by_key(|e| e.expected);
        out.truncate(MAX_ENTRIES);
        out.sort_by(|a, b| a.path.cmp(&b.path));
    }
    out
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use serde_json::json;

    use super::*;

    fn patch(knobs: &[(&str, &str)]) -> KnobPatch {
        KnobPatch {
            pod_template: knobs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            object: BTreeMap::new(),
            ..KnobPatch::default()
        }
    }

    fn deployment(template_annotations: Value, replicas: u64) -> Value {
        json!({
            "metadata": {"name": "t", "resourceVersion": "5", "generation": 1,
                         "managedFields": [{"manager": "a"}]},
            "spec": {"replicas": replicas, "template": {"metadata": {"annotations": template_annotations},
                     "spec": {"containers": [{"name": "trainer", "image": "x"}]}}},
            "status": {"observedGeneration": 1}
        })
    }

    #[test]
    fn only_the_knob_changes() {
        let live = deployment(json!({"modekeeper/knob.grad_accum_steps": "4"}), 1);
        let mut result = deployment(json!({"modekeeper/knob.grad_accum_steps": "8"}), 1);
        result["metadata"]["generation"] = json!(2);
        result["metadata"]["managedFields"] = json!([{"manager": "a"}, {"manager": "modekeeper"}]);
        result["status"]["observedGeneration"] = json!(2);
        let d = diff_workloads(&live, &result, &patch(&[("grad_accum_steps", "8")]));
        assert_eq!(d.len(), 1, "{d:?}");
        assert_eq!(
            d[0].path,
            "/spec/template/metadata/annotations/modekeeper~1knob.grad_accum_steps"
        );
        assert_eq!(d[0].op, "replace");
        assert_eq!(d[0].before, Some(json!("4")));
        assert_eq!(d[0].after, Some(json!("8")));
        assert_eq!(d[0].knob.as_deref(), Some("grad_accum_steps"));
        assert!(d[0].expected);
    }

    #[test]
    fn annotations_that_did_not_exist_are_added_leaf_by_leaf() {
        let mut live = deployment(json!({}), 1);
        live["spec"]["template"]["metadata"]
            .as_object_mut()
            .unwrap()
            .remove("annotations");
        let result = deployment(json!({"modekeeper/knob.microbatch_size": "16"}), 1);
        let d = diff_workloads(&live, &result, &patch(&[("microbatch_size", "16")]));
        assert_eq!(d.len(), 1, "{d:?}");
        assert_eq!(d[0].op, "add");
        assert!(d[0].expected);
    }

    #[test]
    fn anything_else_is_unexpected() {
        let live = deployment(json!({}), 1);
        let mut result = deployment(json!({"modekeeper/knob.microbatch_size": "16"}), 3);
        result["spec"]["template"]["spec"]["containers"]
            .as_array_mut()
            .unwrap()
            .push(json!({"name": "sidecar", "image": "y"}));
        let d = diff_workloads(&live, &result, &patch(&[("microbatch_size", "16")]));
        let unexpected: Vec<&str> = d
            .iter()
            .filter(|e| !e.expected)
            .map(|e| e.path.as_str())
            .collect();
        assert_eq!(
            unexpected,
            [
                "/spec/replicas",
                "/spec/template/spec/containers/1/image",
                "/spec/template/spec/containers/1/name"
            ]
        );
    }

    #[test]
    fn a_knob_the_server_rewrote_or_dropped_is_unexpected() {
        let live = deployment(json!({"modekeeper/knob.a": "1"}), 1);
        // The server kept the old value of `a` (a webhook reverted it) and set `b` to another value.
        let result = deployment(
            json!({"modekeeper/knob.a": "1", "modekeeper/knob.b": "3"}),
            1,
        );
        let d = diff_workloads(&live, &result, &patch(&[("a", "2"), ("b", "2")]));
        assert_eq!(d.len(), 2, "{d:?}");
        assert_eq!(d[0].knob.as_deref(), Some("a"));
        assert_eq!(d[0].op, "unchanged");
        assert!(!d[0].expected);
        assert_eq!(d[1].knob.as_deref(), Some("b"));
        assert_eq!(d[1].op, "add");
        assert!(!d[1].expected);
    }

    #[test]
    fn a_planned_removal_is_expected_only_when_the_knob_is_gone() {
        let live = deployment(json!({"modekeeper/knob.a": "1"}), 1);
        let removal = KnobPatch {
            pod_template_removed: ["a".to_string()].into(),
            ..KnobPatch::default()
        };
        let d = diff_workloads(&live, &deployment(json!({}), 1), &removal);
        assert_eq!(d.len(), 1, "{d:?}");
        assert_eq!((d[0].op.as_str(), d[0].expected), ("remove", true));
        let d = diff_workloads(&live, &live, &removal);
        assert_eq!((d[0].op.as_str(), d[0].expected), ("unchanged", false));
    }

    #[test]
    fn pointer_escaping_and_ignored_prefixes() {
        assert_eq!(escape("a/b~c"), "a~1b~0c");
        assert!(ignored("/status"));
        assert!(ignored("/status/conditions/0/lastUpdateTime"));
        assert!(!ignored("/statusx"));
        assert!(ignored("/metadata/managedFields/1/manager"));
        assert!(!ignored("/metadata/annotations"));
    }

    #[test]
    fn a_scalar_replaced_by_an_object_is_one_entry() {
        let d = diff_workloads(
            &json!({"spec": {"x": 1}}),
            &json!({"spec": {"x": {"y": 2}}}),
            &KnobPatch::default(),
        );
        assert_eq!(d.len(), 1);
        assert_eq!(
            (d[0].path.as_str(), d[0].op.as_str()),
            ("/spec/x", "replace")
        );
    }
}
