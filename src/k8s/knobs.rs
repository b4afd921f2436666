//! A workload's current knob values: its pod template's `modekeeper/knob.<knob>: "<number>"`
//! annotations (the pod template is what the trainer reads; the object's own annotations are ignored).
//! A value that is not a finite number, or a key that is not a knob name, is an error: the control
//! loop must not start from a guess.

use std::collections::BTreeMap;

use super::{ClusterApi, ClusterError, Workload};
use crate::passport::is_knob_name;
use crate::plan::{KNOB_ANNOTATION_PREFIX, Target};

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
        let parsed: f64 = value
            .trim()
            .parse()
            .map_err(|_| invalid(format!("{value:?} is not a number")))?;
        if !parsed.is_finite() {
            return Err(invalid(format!("{value:?} is not a finite number")));
        }
        out.insert(knob.to_string(), parsed);
    }
    Ok(out)
}

/// Reads `target` and returns its current knob values (an empty map when it carries none).
pub async fn read_current_knobs<A: ClusterApi>(
    api: &A,
    target: &Target,
) -> Result<BTreeMap<String, f64>, KnobReadError> {
    match api.get_workload(target).await? {
        Some(w) => current_knobs(&w),
        None => Err(KnobReadError::WorkloadMissing {
            kind: target.kind().as_str(),
            namespace: target.namespace().to_string(),
            name: target.name().to_string(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::plan::WorkloadKind;

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
