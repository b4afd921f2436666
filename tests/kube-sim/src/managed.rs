//! Field ownership (`metadata.managedFields`) and server-side apply.
//!
//! A simplified structured-merge-diff: the tracked parts of an object (`metadata.labels`,
//! `metadata.annotations`, `spec`) are flattened into leaf paths (maps are walked, lists are
//! atomic leaves). Each (manager, operation) entry owns a set of leaf paths. Updates (merge,
//! strategic and JSON patches) take ownership of the leaves they change; an apply owns exactly
//! the leaves of its configuration, removes leaves it stopped applying (unless someone else
//! owns them) and conflicts when it changes a leaf another manager owns, unless forced.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Map, Value, json};

use crate::status::{ApiError, StatusCause};

pub type FieldPath = Vec<String>;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    Apply,
    Update,
}

impl Operation {
    fn as_str(self) -> &'static str {
        match self {
            Operation::Apply => "Apply",
            Operation::Update => "Update",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct ManagerEntry {
    pub manager: String,
    pub operation: Operation,
    pub api_version: String,
    pub time: String,
    pub fields: BTreeSet<FieldPath>,
}

impl ManagerEntry {
    /// How conflict messages name this manager (`printManager` in the apiserver).
    fn display(&self) -> String {
        match self.operation {
            Operation::Apply => format!("{:?}", self.manager),
            Operation::Update => format!("{:?} using {}", self.manager, self.api_version),
        }
    }
}

/// All ownership entries of one object.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ManagedFields {
    pub entries: Vec<ManagerEntry>,
}

const TRACKED_ROOTS: [&[&str]; 3] = [
    &["metadata", "labels"],
    &["metadata", "annotations"],
    &["spec"],
];

/// Leaf paths and values of the tracked parts of `obj`.
pub fn leaves(obj: &Value) -> BTreeMap<FieldPath, Value> {
    let mut out = BTreeMap::new();
    for root in TRACKED_ROOTS {
        let mut node = obj;
        let mut found = true;
        for seg in root {
            match node.get(*seg) {
                Some(n) => node = n,
                None => {
                    found = false;
                    break;
                }
            }
        }
        if found {
            let path: FieldPath = root.iter().map(|s| s.to_string()).collect();
            collect(node, path, &mut out);
        }
    }
    out
}

fn collect(node: &Value, path: FieldPath, out: &mut BTreeMap<FieldPath, Value>) {
    match node {
        Value::Object(m) if !m.is_empty() => {
            for (k, v) in m {
                let mut p = path.clone();
                p.push(k.clone());
                collect(v, p, out);
            }
        }
        other => {
            out.insert(path, other.clone());
        }
    }
}

/// `.metadata.annotations.modekeeper/knob.x`, as structured-merge-diff prints paths.
pub fn path_string(path: &[String]) -> String {
    path.iter().map(|s| format!(".{s}")).collect()
}

fn set_path(obj: &mut Value, path: &[String], value: Value) {
    let mut node = obj;
    for seg in &path[..path.len() - 1] {
        if !node.get(seg).is_some_and(Value::is_object) {
            node[seg.as_str()] = Value::Object(Map::new());
        }
        node = node.get_mut(seg).expect("just inserted");
    }
    let last = path.last().expect("non-empty path");
    match (node.get(last.as_str()), &value) {
        // An empty map in a configuration only asserts the map exists.
        (Some(Value::Object(_)), Value::Object(v)) if v.is_empty() => {}
        _ => node[last.as_str()] = value,
    }
}

fn remove_path(obj: &mut Value, path: &[String]) {
    let mut node = obj;
    for seg in &path[..path.len() - 1] {
        match node.get_mut(seg) {
            Some(n) => node = n,
            None => return,
        }
    }
    if let Some(m) = node.as_object_mut() {
        m.remove(path.last().expect("non-empty path"));
    }
}

impl ManagedFields {
    fn entry_mut(
        &mut self,
        manager: &str,
        op: Operation,
        api_version: &str,
        time: &str,
    ) -> &mut ManagerEntry {
        let pos = self
            .entries
            .iter()
            .position(|e| e.manager == manager && e.operation == op);
        let i = match pos {
            Some(i) => i,
            None => {
                self.entries.push(ManagerEntry {
                    manager: manager.to_string(),
                    operation: op,
                    api_version: api_version.to_string(),
                    time: time.to_string(),
                    fields: BTreeSet::new(),
                });
                self.entries.len() - 1
            }
        };
        let e = &mut self.entries[i];
        e.time = time.to_string();
        e.api_version = api_version.to_string();
        e
    }

    /// Ownership after an update (non-apply write) by `manager` turned `old` into `new`.
    pub fn record_update(
        &mut self,
        manager: &str,
        api_version: &str,
        time: &str,
        old: &Value,
        new: &Value,
    ) {
        let before = leaves(old);
        let after = leaves(new);
        let changed: BTreeSet<FieldPath> = after
            .iter()
            .filter(|(p, v)| before.get(*p) != Some(*v))
            .map(|(p, _)| p.clone())
            .collect();
        for e in &mut self.entries {
            e.fields
                .retain(|p| after.contains_key(p) && !changed.contains(p));
        }
        if !changed.is_empty() {
            self.entry_mut(manager, Operation::Update, api_version, time)
                .fields
                .extend(changed);
        }
        self.entries.retain(|e| !e.fields.is_empty());
    }

    /// Server-side apply of `config` onto `current` by `manager`. Returns the new object.
    pub fn apply(
        &mut self,
        manager: &str,
        api_version: &str,
        time: &str,
        current: &Value,
        config: &Value,
        force: bool,
    ) -> Result<Value, ApiError> {
        let have = leaves(current);
        let want = leaves(config);
        let is_self = |e: &ManagerEntry| e.manager == manager && e.operation == Operation::Apply;

        let mut conflicts: Vec<(String, FieldPath)> = vec![];
        for (path, value) in &want {
            if have.get(path).is_none_or(|v| v == value) {
                continue;
            }
            for e in self.entries.iter().filter(|e| !is_self(e)) {
                if e.fields.contains(path) {
                    conflicts.push((e.display(), path.clone()));
                }
            }
        }
        if !conflicts.is_empty() && !force {
            return Err(conflict_error(conflicts));
        }

        let mut result = current.clone();
        for (path, value) in &want {
            set_path(&mut result, path, value.clone());
        }
        let previously: BTreeSet<FieldPath> = self
            .entries
            .iter()
            .find(|e| is_self(e))
            .map(|e| e.fields.clone())
            .unwrap_or_default();
        for path in previously.iter().filter(|p| !want.contains_key(*p)) {
            let owned_elsewhere = self
                .entries
                .iter()
                .any(|e| !is_self(e) && e.fields.contains(path));
            if !owned_elsewhere {
                remove_path(&mut result, path);
            }
        }
        if force {
            for e in self.entries.iter_mut().filter(|e| !is_self(e)) {
                e.fields.retain(|p| !want.contains_key(p));
            }
        }
        let after = leaves(&result);
        for e in &mut self.entries {
            e.fields.retain(|p| after.contains_key(p));
        }
        self.entry_mut(manager, Operation::Apply, api_version, time)
            .fields = want.into_keys().collect();
        self.entries.retain(|e| !e.fields.is_empty());
        Ok(result)
    }

    /// The `metadata.managedFields` list.
    pub fn to_json(&self) -> Value {
        Value::Array(
            self.entries
                .iter()
                .map(|e| {
                    json!({
                        "manager": e.manager,
                        "operation": e.operation.as_str(),
                        "apiVersion": e.api_version,
                        "time": e.time,
                        "fieldsType": "FieldsV1",
                        "fieldsV1": fields_v1(&e.fields),
                    })
                })
                .collect(),
        )
    }

    /// Who owns a leaf path, e.g. `["metadata","annotations","k"]`.
    pub fn owners(&self, path: &[String]) -> Vec<String> {
        self.entries
            .iter()
            .filter(|e| e.fields.iter().any(|p| p.as_slice() == path))
            .map(|e| e.manager.clone())
            .collect()
    }
}

fn fields_v1(fields: &BTreeSet<FieldPath>) -> Value {
    let mut root = Map::new();
    for path in fields {
        let mut node = &mut root;
        for seg in path {
            node = node
                .entry(format!("f:{seg}"))
                .or_insert_with(|| Value::Object(Map::new()))
                .as_object_mut()
                .expect("fieldsV1 nodes are objects");
        }
    }
    Value::Object(root)
}

/// `NewConflictError` with the apiserver's message layout.
fn conflict_error(conflicts: Vec<(String, FieldPath)>) -> ApiError {
    let causes = conflicts
        .iter()
        .map(|(who, path)| StatusCause {
            reason: "FieldManagerConflict".into(),
            message: format!("conflict with {who}"),
            field: path_string(path),
        })
        .collect();
    let message = if let [(who, path)] = conflicts.as_slice() {
        format!(
            "Apply failed with 1 conflict: conflict with {who}: {}",
            path_string(path)
        )
    } else {
        let mut by_manager: BTreeMap<&str, Vec<String>> = BTreeMap::new();
        for (who, path) in &conflicts {
            by_manager.entry(who).or_default().push(path_string(path));
        }
        let mut lines = vec![];
        for (who, paths) in by_manager {
            lines.push(format!("conflicts with {who}:"));
            lines.extend(paths.into_iter().map(|p| format!("- {p}")));
        }
        format!(
            "Apply failed with {} conflicts: {}",
            conflicts.len(),
            lines.join("\n")
        )
    };
    ApiError::apply_conflict(causes, message)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> FieldPath {
        s.split('|').map(str::to_string).collect()
    }

    fn seeded() -> (ManagedFields, Value) {
        let obj = json!({"metadata": {"name": "t", "annotations": {"k": "1", "other": "o"}},
                         "spec": {"replicas": 1, "template": {"metadata": {"annotations": {"k": "1"}}}}});
        let mut mf = ManagedFields::default();
        mf.record_update("seed", "apps/v1", "t0", &json!({}), &obj);
        (mf, obj)
    }

    #[test]
    fn update_takes_ownership_of_changed_leaves() {
        let (mut mf, obj) = seeded();
        assert_eq!(mf.owners(&p("metadata|annotations|k")), ["seed"]);
        let mut new = obj.clone();
        new["metadata"]["annotations"]["k"] = json!("2");
        mf.record_update("kubectl-patch", "apps/v1", "t1", &obj, &new);
        assert_eq!(mf.owners(&p("metadata|annotations|k")), ["kubectl-patch"]);
        assert_eq!(mf.owners(&p("metadata|annotations|other")), ["seed"]);
        let mf_json = mf.to_json();
        assert_eq!(
            mf_json[1]["fieldsV1"],
            json!({"f:metadata": {"f:annotations": {"f:k": {}}}})
        );
        assert_eq!(mf_json[1]["operation"], "Update");
    }

    #[test]
    fn apply_conflicts_unless_forced() {
        let (mut mf, obj) = seeded();
        let config = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "t", "annotations": {"k": "2"}}});
        let err = mf
            .apply("mk", "apps/v1", "t1", &obj, &config, false)
            .unwrap_err();
        assert_eq!(err.code, 409);
        assert_eq!(
            err.message,
            "Apply failed with 1 conflict: conflict with \"seed\" using apps/v1: .metadata.annotations.k"
        );
        assert_eq!(
            err.to_status()["details"]["causes"][0]["reason"],
            "FieldManagerConflict"
        );
        let before = mf.clone();
        let forced = mf
            .apply("mk", "apps/v1", "t1", &obj, &config, true)
            .unwrap();
        assert_ne!(before, mf);
        assert_eq!(
            forced["metadata"]["annotations"],
            json!({"k": "2", "other": "o"})
        );
        assert_eq!(mf.owners(&p("metadata|annotations|k")), ["mk"]);
    }

    #[test]
    fn apply_same_value_shares_and_new_field_is_free() {
        let (mut mf, obj) = seeded();
        let config = json!({"metadata": {"annotations": {"k": "1", "new": "n"}}});
        let out = mf
            .apply("mk", "apps/v1", "t1", &obj, &config, false)
            .unwrap();
        assert_eq!(out["metadata"]["annotations"]["new"], "n");
        assert_eq!(mf.owners(&p("metadata|annotations|k")), ["seed", "mk"]);
        // Dropping "new" from the next apply removes it; "k" is still owned by seed and stays.
        let out2 = mf
            .apply(
                "mk",
                "apps/v1",
                "t2",
                &out,
                &json!({"metadata": {"annotations": {}}}),
                false,
            )
            .unwrap();
        assert_eq!(
            out2["metadata"]["annotations"],
            json!({"k": "1", "other": "o"})
        );
    }

    #[test]
    fn multiple_conflicts_are_grouped_by_manager() {
        let (mut mf, obj) = seeded();
        let config =
            json!({"metadata": {"annotations": {"k": "2", "other": "x"}}, "spec": {"replicas": 3}});
        let err = mf
            .apply("mk", "apps/v1", "t1", &obj, &config, false)
            .unwrap_err();
        assert_eq!(
            err.message,
            "Apply failed with 3 conflicts: conflicts with \"seed\" using apps/v1:\n- .metadata.annotations.k\n- .metadata.annotations.other\n- .spec.replicas"
        );
    }
}
