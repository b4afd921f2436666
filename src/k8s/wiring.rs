//! Is a workload wired for hot knobs? Its pod template(s) must mount its knobs ConfigMap as a
//! volume, as a directory (a `subPath` mount is never refreshed by the kubelet), in at least one
//! container. Pure: reads the workload object; whether the ConfigMap exists is the caller's read.
//! For `doctor`-style checks.

use serde::Serialize;
use serde_json::Value;

use super::Workload;
use super::kinds::{self, TemplatePaths};
use super::knobs::knobs_configmap_name;

/// What a hot-knob check found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HotKnobWiring {
    /// The knobs ConfigMap the plan writes to.
    pub configmap: String,
    /// Every pod template has a volume of that ConfigMap mounted as a directory.
    pub mounted: bool,
    /// One sentence per problem (empty when wired).
    pub problems: Vec<String>,
}

/// The pod templates of `w` (every PyTorchJob role, every JobSet replicated job).
fn templates(w: &Workload) -> Vec<(String, &Value)> {
    let o = &w.object;
    match kinds::spec(w.target.kind()).templates {
        TemplatePaths::Single => vec![("spec.template".into(), &o["spec"]["template"])],
        TemplatePaths::PerReplicaRole => o["spec"]["pytorchReplicaSpecs"]
            .as_object()
            .map(|m| {
                m.iter()
                    .map(|(r, v)| (format!("{r} template"), &v["template"]))
                    .collect()
            })
            .unwrap_or_default(),
        TemplatePaths::ReplicatedJobs => o["spec"]["replicatedJobs"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|j| {
                        (
                            format!("replicated job {}", j["name"].as_str().unwrap_or("?")),
                            &j["template"]["spec"]["template"],
                        )
                    })
                    .collect()
            })
            .unwrap_or_default(),
        TemplatePaths::None => vec![],
    }
}

/// Checks `w`'s pod templates for a directory mount of its knobs ConfigMap.
pub fn hot_knob_wiring(w: &Workload) -> HotKnobWiring {
    let configmap = knobs_configmap_name(w);
    let mut problems = vec![];
    for (what, tpl) in templates(w) {
        let spec = &tpl["spec"];
        let volume = spec["volumes"].as_array().and_then(|vs| {
            vs.iter()
                .find(|v| v["configMap"]["name"].as_str() == Some(configmap.as_str()))
        });
        let Some(volume) = volume.and_then(|v| v["name"].as_str()) else {
            problems.push(format!(
                "{what}: no volume of ConfigMap {configmap} (hot knobs cannot reach the pods)"
            ));
            continue;
        };
        let mounts: Vec<&Value> = spec["containers"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|c| c["volumeMounts"].as_array().into_iter().flatten())
            .filter(|m| m["name"].as_str() == Some(volume))
            .collect();
        if mounts.is_empty() {
            problems.push(format!(
                "{what}: volume {volume} (ConfigMap {configmap}) is not mounted in any container"
            ));
        } else if mounts.iter().all(|m| m.get("subPath").is_some()) {
            problems.push(format!(
                "{what}: volume {volume} is mounted with subPath, which the kubelet never refreshes: mount the directory"
            ));
        }
    }
    HotKnobWiring {
        configmap,
        mounted: problems.is_empty(),
        problems,
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::plan::{Target, WorkloadKind};

    fn workload(kind: WorkloadKind, object: Value) -> Workload {
        let mut object = object;
        object["metadata"]["resourceVersion"] = json!("1");
        Workload::from_object(&Target::new("ml", "t", kind).unwrap(), object).unwrap()
    }

    fn pod(volume_cm: &str, mount: Value) -> Value {
        json!({"spec": {
            "volumes": [{"name": "knobs", "configMap": {"name": volume_cm}}],
            "containers": [{"name": "trainer", "volumeMounts": [mount]}]}})
    }

    #[test]
    fn a_directory_mount_of_the_knobs_configmap_is_wired() {
        let ok = pod(
            "t-modekeeper-knobs",
            json!({"name": "knobs", "mountPath": "/etc/modekeeper-knobs"}),
        );
        let w = workload(WorkloadKind::Deployment, json!({"spec": {"template": ok}}));
        let got = hot_knob_wiring(&w);
        assert_eq!(got.configmap, "t-modekeeper-knobs");
        assert!(got.mounted, "{got:?}");

        // The annotation names another ConfigMap than the one mounted.
        let w = workload(
            WorkloadKind::Deployment,
            json!({"metadata": {"annotations": {"modekeeper/knobs-configmap": "live"}},
                   "spec": {"template": ok}}),
        );
        let got = hot_knob_wiring(&w);
        assert!(!got.mounted);
        assert!(
            got.problems[0].contains("no volume of ConfigMap live"),
            "{got:?}"
        );
    }

    #[test]
    fn subpath_mounts_unmounted_volumes_and_each_role_are_checked() {
        let sub = pod(
            "t-modekeeper-knobs",
            json!({"name": "knobs", "mountPath": "/k/c", "subPath": "concurrency"}),
        );
        let w = workload(WorkloadKind::Job, json!({"spec": {"template": sub}}));
        assert!(hot_knob_wiring(&w).problems[0].contains("subPath"));

        let unmounted = pod(
            "t-modekeeper-knobs",
            json!({"name": "other", "mountPath": "/x"}),
        );
        let good = pod(
            "t-modekeeper-knobs",
            json!({"name": "knobs", "mountPath": "/etc/modekeeper-knobs"}),
        );
        let w = workload(
            WorkloadKind::PyTorchJob,
            json!({"spec": {"pytorchReplicaSpecs": {
                "Master": {"template": good}, "Worker": {"template": unmounted}}}}),
        );
        let got = hot_knob_wiring(&w);
        assert_eq!(got.problems.len(), 1, "{got:?}");
        assert!(
            got.problems[0].starts_with("Worker template: volume knobs"),
            "{got:?}"
        );
    }
}
