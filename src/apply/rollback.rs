//! What an item's patch changed, and the rollback plan that undoes it: the previous value of every
//! changed knob, or a removal (merge-patch `null`) for a knob that was absent. The rollback plan is
//! an ordinary `k8s_plan.v1` document, so it goes through `k8s verify` and `k8s apply` like any
//! other plan. Pure.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::k8s::Workload;
use crate::plan::{KNOB_ANNOTATION_PREFIX, KnobPatch, Plan, PlanItem, Target};

/// Where a knob annotation lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Scope {
    PodTemplate,
    Object,
    /// A key of a knobs ConfigMap's data.
    Data,
}

/// One knob annotation whose value changed (`None` = absent).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct KnobChange {
    pub scope: Scope,
    pub knob: String,
    pub from: Option<String>,
    pub to: Option<String>,
}

fn annotations(w: &Workload, scope: Scope) -> &BTreeMap<String, String> {
    match scope {
        Scope::PodTemplate => &w.template_annotations,
        Scope::Object => &w.annotations,
        Scope::Data => &w.data,
    }
}

/// Every knob the patch plans, with its planned value (`None` = removal).
fn planned(patch: &KnobPatch) -> Vec<(Scope, &str, Option<&str>)> {
    let mut v: Vec<(Scope, &str, Option<&str>)> = vec![];
    v.extend(
        patch
            .pod_template
            .iter()
            .map(|(k, x)| (Scope::PodTemplate, k.as_str(), Some(x.as_str()))),
    );
    v.extend(
        patch
            .pod_template_removed
            .iter()
            .map(|k| (Scope::PodTemplate, k.as_str(), None)),
    );
    v.extend(
        patch
            .object
            .iter()
            .map(|(k, x)| (Scope::Object, k.as_str(), Some(x.as_str()))),
    );
    v.extend(
        patch
            .object_removed
            .iter()
            .map(|k| (Scope::Object, k.as_str(), None)),
    );
    v.extend(
        patch
            .data
            .iter()
            .map(|(k, x)| (Scope::Data, k.as_str(), Some(x.as_str()))),
    );
    v.extend(
        patch
            .data_removed
            .iter()
            .map(|k| (Scope::Data, k.as_str(), None)),
    );
    v
}

fn value<'a>(w: &'a Workload, scope: Scope, knob: &str) -> Option<&'a str> {
    let key = match scope {
        Scope::Data => knob.to_string(),
        _ => format!("{KNOB_ANNOTATION_PREFIX}{knob}"),
    };
    annotations(w, scope).get(&key).map(String::as_str)
}

/// The changes the patch would make to `before` if the server stores it as sent.
pub fn planned_changes(patch: &KnobPatch, before: &Workload) -> Vec<KnobChange> {
    planned(patch)
        .into_iter()
        .filter_map(|(scope, knob, to)| {
            let from = value(before, scope, knob);
            (from != to).then(|| KnobChange {
                scope,
                knob: knob.to_string(),
                from: from.map(str::to_string),
                to: to.map(str::to_string),
            })
        })
        .collect()
}

/// The changes between `before` and `after` on the knobs the patch plans (what was stored).
pub fn stored_changes(patch: &KnobPatch, before: &Workload, after: &Workload) -> Vec<KnobChange> {
    planned(patch)
        .into_iter()
        .filter_map(|(scope, knob, _)| {
            let from = value(before, scope, knob);
            let to = value(after, scope, knob);
            (from != to).then(|| KnobChange {
                scope,
                knob: knob.to_string(),
                from: from.map(str::to_string),
                to: to.map(str::to_string),
            })
        })
        .collect()
}

/// The plan item that restores the `from` side of `changes` made by `item`; `Ok(None)` when
/// nothing changed. It patches the same object (the same PyTorchJob roles) and says the same
/// `takes_effect`. An error means the previous state is not expressible as a plan item (for
/// example the object and its pod template held different values of one knob).
pub fn rollback_item(item: &PlanItem, changes: &[KnobChange]) -> Result<Option<PlanItem>, String> {
    if changes.is_empty() {
        return Ok(None);
    }
    let target: &Target = item.target();
    let mut patch = KnobPatch {
        roles: item.patch().roles.clone(),
        ..KnobPatch::default()
    };
    for c in changes {
        match (c.scope, &c.from) {
            (Scope::PodTemplate, Some(v)) => {
                patch.pod_template.insert(c.knob.clone(), v.clone());
            }
            (Scope::PodTemplate, None) => {
                patch.pod_template_removed.insert(c.knob.clone());
            }
            (Scope::Object, Some(v)) => {
                patch.object.insert(c.knob.clone(), v.clone());
            }
            (Scope::Object, None) => {
                patch.object_removed.insert(c.knob.clone());
            }
            (Scope::Data, Some(v)) => {
                patch.data.insert(c.knob.clone(), v.clone());
            }
            (Scope::Data, None) => {
                patch.data_removed.insert(c.knob.clone());
            }
        }
    }
    let mut back = PlanItem::new(target.clone(), patch)?;
    if let Some(t) = item.takes_effect() {
        back = back.with_takes_effect(t)?;
    }
    if let Some(w) = item.workload() {
        back = back.with_workload(w)?;
    }
    Ok(Some(back))
}

/// The rollback plan of several items (in apply order).
pub fn rollback_plan(items: Vec<PlanItem>) -> Result<Plan, String> {
    Plan::from_items(items).map_err(|(_, e)| e)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::WorkloadKind;
    use serde_json::json;

    fn workload(template: serde_json::Value, object: serde_json::Value) -> Workload {
        let t = Target::new("ml", "trainer", WorkloadKind::Deployment).unwrap();
        Workload::from_object(
            &t,
            json!({"metadata": {"resourceVersion": "1", "annotations": object},
                   "spec": {"template": {"metadata": {"annotations": template}}}}),
        )
        .unwrap()
    }

    fn patch(set: &[(&str, &str)], removed: &[&str]) -> KnobPatch {
        KnobPatch {
            pod_template: set
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            pod_template_removed: removed.iter().map(|k| k.to_string()).collect(),
            ..KnobPatch::default()
        }
    }

    #[test]
    fn rollback_restores_values_and_removes_what_was_absent() {
        let before = workload(
            json!({"modekeeper/knob.a": "4", "modekeeper/knob.c": "1"}),
            json!({}),
        );
        let p = patch(&[("a", "8"), ("b", "2"), ("c", "1")], &[]);
        let changes = planned_changes(&p, &before);
        assert_eq!(
            changes
                .iter()
                .map(|c| (c.knob.as_str(), c.from.as_deref(), c.to.as_deref()))
                .collect::<Vec<_>>(),
            [("a", Some("4"), Some("8")), ("b", None, Some("2"))]
        );
        let item = rollback_item(
            &PlanItem::new(before.target.clone(), p.clone()).unwrap(),
            &changes,
        )
        .unwrap()
        .unwrap();
        assert_eq!(
            item.patch().to_json(),
            json!({"spec": {"template": {"metadata": {"annotations":
                {"modekeeper/knob.a": "4", "modekeeper/knob.b": null}}}}})
        );
        // Applying the rollback to the after-state gives back the before-state's knobs.
        let after = workload(
            json!({"modekeeper/knob.a": "8", "modekeeper/knob.b": "2", "modekeeper/knob.c": "1"}),
            json!({}),
        );
        assert_eq!(stored_changes(&p, &before, &after), changes);
        let back = planned_changes(item.patch(), &after);
        assert_eq!(back.len(), 2);
        assert!(
            back.iter()
                .all(|c| c.to.as_deref() == value(&before, c.scope, &c.knob))
        );
    }

    #[test]
    fn nothing_changed_means_no_rollback_item() {
        let before = workload(json!({"modekeeper/knob.a": "8"}), json!({}));
        let p = patch(&[("a", "8")], &[]);
        assert!(planned_changes(&p, &before).is_empty());
        assert_eq!(
            rollback_item(
                &PlanItem::new(before.target.clone(), p.clone()).unwrap(),
                &[]
            ),
            Ok(None)
        );
    }

    #[test]
    fn an_inconsistent_previous_state_is_not_expressible() {
        let before = workload(
            json!({"modekeeper/knob.a": "4"}),
            json!({"modekeeper/knob.a": "5"}),
        );
        let p = KnobPatch {
            pod_template: [("a".to_string(), "8".to_string())].into(),
            object: [("a".to_string(), "8".to_string())].into(),
            ..KnobPatch::default()
        };
        let e = rollback_item(
            &PlanItem::new(before.target.clone(), p.clone()).unwrap(),
            &planned_changes(&p, &before),
        )
        .unwrap_err();
        assert!(e.contains("object sets"), "{e}");
    }
}
