//! A workload's current knob values: its pod template's `modekeeper/knob.<knob>: "<number>"`
//! annotations (the pod template is what the trainer reads; the object's own annotations are ignored).
//! A value that is not a finite number, or a key that is not a knob name, is an error: the control
//! loop must not start from a guess.

use std::collections::BTreeMap;

use super::{ClusterApi, ClusterError, Workload};
use crate::passport::is_knob_name;
use crate::plan::{
    KNOB_ANNOTATION_PREFIX, KNOBS_CONFIGMAP_ANNOTATION, Target, WorkloadKind,
    default_knobs_configmap,
};

/// Why the current knobs could not be read.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum KnobReadError {
    #[error("{0}")]
    Cluster(#[from] ClusterError),
    #[error("{kind}/{name} not found in namespace {namespace}")]
    WorkloadMissing {
        kind: &'static str,
        namespace: String,
        name: String,
    },
    #[error("pod template annotation {annotation}: {problem}")]
    InvalidAnnotation { annotation: String, problem: String },
}

/// The knob values in a workload's pod-template annotations.
pub fn current_knobs(workload: &Workload) -> Result<BTreeMap<String, f64>, KnobReadError> {
    let mut out = BTreeMap::new();
    for (key, value) in &workload.template_annotations {
        let Some(knob) = key.strip_prefix(KNOB_ANNOTATION_PREFIX) else {
            continue;
        };
        let invalid = |problem: String| KnobReadError::InvalidAnnotation {
            annotation: key.clone(),
            problem,
        };
        if !is_knob_name(knob) {
            return Err(invalid(
                "not a knob name (snake_case, [a-z][a-z0-9_]*)".into(),
            ));
        }
        let parsed = knob_number(value).map_err(invalid)?;
        out.insert(knob.to_string(), parsed);
    }
    Ok(out)
}

/// A knob value as the trainer reads it: a finite number, surrounding whitespace allowed.
fn knob_number(value: &str) -> Result<f64, String> {
    match value.trim().parse::<f64>() {
        Ok(v) if v.is_finite() => Ok(v),
        Ok(_) => Err(format!("{value:?} is not a finite number")),
        Err(_) => Err(format!("{value:?} is not a number")),
    }
}

/// The knob values in a knobs ConfigMap's data (keys are knob names; other keys are ignored, as
/// the trainer ignores them).
pub fn configmap_knobs(cm: &Workload) -> Result<BTreeMap<String, f64>, KnobReadError> {
    let mut out = BTreeMap::new();
    for (key, value) in &cm.data {
        if !is_knob_name(key) {
            continue;
        }
        let invalid = |problem: String| KnobReadError::InvalidAnnotation {
            annotation: format!(
                "configmap {}/{} data[{key}]",
                cm.target.namespace(),
                cm.target.name()
            ),
            problem,
        };
        let parsed = knob_number(value).map_err(invalid)?;
        out.insert(key.clone(), parsed);
    }
    Ok(out)
}

/// The name of a workload's knobs ConfigMap: its `modekeeper/knobs-configmap` annotation when that
/// is a valid name, else `<workload>-modekeeper-knobs`.
pub fn knobs_configmap_name(workload: &Workload) -> String {
    workload
        .annotations
        .get(KNOBS_CONFIGMAP_ANNOTATION)
        .filter(|n| crate::plan::is_dns1123_subdomain(n))
        .cloned()
        .unwrap_or_else(|| default_knobs_configmap(workload.target.name()))
}

/// Reads `target` and its knobs ConfigMap and returns the current knob values (an empty map when
/// it carries none): the pod template's annotations, overridden by the ConfigMap's keys (what the
/// running trainer reads last). A missing ConfigMap is not an error: the workload is not wired
/// for hot knobs yet.
pub async fn read_current_knobs<A: ClusterApi>(
    api: &A,
    target: &Target,
) -> Result<BTreeMap<String, f64>, KnobReadError> {
    read_knobs_and_configmap(api, target).await.map(|(k, _)| k)
}

/// [`read_current_knobs`], with the name of the workload's knobs ConfigMap (where a plan puts its
/// hot knobs).
pub async fn read_knobs_and_configmap<A: ClusterApi>(
    api: &A,
    target: &Target,
) -> Result<(BTreeMap<String, f64>, String), KnobReadError> {
    let Some(w) = api.get_workload(target).await? else {
        return Err(KnobReadError::WorkloadMissing {
            kind: target.kind().as_str(),
            namespace: target.namespace().to_string(),
            name: target.name().to_string(),
        });
    };
    let mut knobs = current_knobs(&w)?;
    let cm_name = knobs_configmap_name(&w);
    let cm = Target::new(target.namespace(), &cm_name, WorkloadKind::ConfigMap).map_err(|e| {
        KnobReadError::InvalidAnnotation {
            annotation: KNOBS_CONFIGMAP_ANNOTATION.into(),
            problem: e,
        }
    })?;
    if let Some(cm) = api.get_workload(&cm).await? {
        knobs.extend(configmap_knobs(&cm)?);
    }
    Ok((knobs, cm_name))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn workload(annotations: serde_json::Value) -> Workload {
        let t = Target::new("ml", "trainer", WorkloadKind::Deployment).unwrap();
        Workload::from_object(
            &t,
            json!({"metadata": {"uid": "u", "resourceVersion": "3",
                                "annotations": {"modekeeper/knob.ignored": "1"}},
                   "spec": {"template": {"metadata": {"annotations": annotations}}}}),
        )
        .unwrap()
    }

    #[test]
    fn numbers_from_the_pod_template() {
        let w = workload(json!({
            "modekeeper/knob.grad_accum_steps": "4",
            "modekeeper/knob.lr_scale": " 0.25 ",
            "modekeeper/telemetry": "stdout-jsonl",
            "other": "x"
        }));
        let k = current_knobs(&w).unwrap();
        assert_eq!(
            k,
            BTreeMap::from([("grad_accum_steps".into(), 4.0), ("lr_scale".into(), 0.25)])
        );
    }

    #[test]
    fn bad_values_and_names_are_errors() {
        for (ann, why) in [
            (json!({"modekeeper/knob.a": "fast"}), "is not a number"),
            (json!({"modekeeper/knob.a": "NaN"}), "finite"),
            (json!({"modekeeper/knob.Bad": "1"}), "not a knob name"),
        ] {
            let e = current_knobs(&workload(ann)).unwrap_err().to_string();
            assert!(e.contains(why), "{e}");
        }
        assert!(current_knobs(&workload(json!(null))).unwrap().is_empty());
    }
}
