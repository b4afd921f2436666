//! How many GPUs a workload runs on, from its own spec: per pod template, the GPUs its containers
//! ask for (limits, else requests, of the extended resources below) times the pods that run from
//! it at once. `roi --gpus-from-cluster` turns a step-time change into GPU-hours with it. Pure.

use serde_json::Value;

use super::kinds::{self, TemplatePaths};
use crate::plan::WorkloadKind;

/// The extended resources that are GPUs (device plugins of NVIDIA, AMD and Intel).
pub const GPU_RESOURCES: [&str; 3] = ["nvidia.com/gpu", "amd.com/gpu", "gpu.intel.com/i915"];

/// One pod template's share: `pods` pods at once, each with `per_pod` GPUs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TemplateGpus {
    /// `spec.template`, a PyTorchJob role (`Worker`) or a JobSet replicated job's name.
    pub template: String,
    pub pods: u64,
    pub per_pod: u64,
}

/// The GPUs of a workload: the sum over its templates.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct WorkloadGpus {
    pub templates: Vec<TemplateGpus>,
}

impl WorkloadGpus {
    pub fn total(&self) -> u64 {
        self.templates
            .iter()
            .map(|t| t.pods.saturating_mul(t.per_pod))
            .fold(0, u64::saturating_add)
    }

    /// `Worker: 4 pods × 8` for the summary line.
    pub fn describe(&self) -> String {
        self.templates
            .iter()
            .map(|t| format!("{}: {} pod(s) × {}", t.template, t.pods, t.per_pod))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// The GPUs `object` (a workload of `kind`, as the API server returns it) runs on.
pub fn workload_gpus(kind: WorkloadKind, object: &Value) -> WorkloadGpus {
    let spec = &object["spec"];
    let templates = match kinds::spec(kind).templates {
        TemplatePaths::Single => {
            // A Deployment/StatefulSet runs `replicas` pods; a Job `parallelism` at once.
            let pods = match kind {
                WorkloadKind::Job => count(&spec["parallelism"]),
                _ => count(&spec["replicas"]),
            };
            vec![template_gpus("spec.template", pods, &spec["template"])]
        }
        TemplatePaths::PerReplicaRole => spec["pytorchReplicaSpecs"]
            .as_object()
            .map(|roles| {
                roles
                    .iter()
                    .map(|(role, r)| template_gpus(role, count(&r["replicas"]), &r["template"]))
                    .collect()
            })
            .unwrap_or_default(),
        TemplatePaths::ReplicatedJobs => spec["replicatedJobs"]
            .as_array()
            .map(|jobs| {
                jobs.iter()
                    .enumerate()
                    .map(|(i, rj)| {
                        let job = &rj["template"]["spec"];
                        let name = rj["name"]
                            .as_str()
                            .map_or_else(|| format!("replicatedJobs[{i}]"), str::to_string);
                        let pods =
                            count(&rj["replicas"]).saturating_mul(count(&job["parallelism"]));
                        template_gpus(&name, pods, &job["template"])
                    })
                    .collect()
            })
            .unwrap_or_default(),
        TemplatePaths::None => vec![],
    };
    WorkloadGpus { templates }
}

fn template_gpus(name: &str, pods: u64, template: &Value) -> TemplateGpus {
    let per_pod = template["spec"]["containers"]
        .as_array()
        .map(|cs| cs.iter().map(container_gpus).fold(0, u64::saturating_add))
        .unwrap_or(0);
    TemplateGpus {
        template: name.to_string(),
        pods,
        per_pod,
    }
}

/// A container's GPUs: its limits (what the device plugin allocates), else its requests (which
/// must equal the limits for extended resources).
fn container_gpus(c: &Value) -> u64 {
    let res = &c["resources"];
    GPU_RESOURCES
        .iter()
        .map(|r| {
            quantity(&res["limits"][r])
                .or_else(|| quantity(&res["requests"][r]))
                .unwrap_or(0)
        })
        .fold(0, u64::saturating_add)
}

/// A whole-number quantity (`8`, `"8"`); extended resources take no fractions or suffixes.
fn quantity(v: &Value) -> Option<u64> {
    match v {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// A replica or parallelism count; absent means the API default, 1.
fn count(v: &Value) -> u64 {
    if v.is_null() {
        1
    } else {
        v.as_u64().unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(containers: Value) -> Value {
        json!({"spec": {"containers": containers}})
    }

    #[test]
    fn a_deployment_counts_replicas_times_the_gpus_of_its_containers() {
        let d = json!({"spec": {"replicas": 3, "template": pod(json!([
            {"name": "trainer", "resources": {"limits": {"nvidia.com/gpu": "8", "cpu": "16"}}},
            {"name": "sidecar", "resources": {"requests": {"cpu": "1"}}},
        ]))}});
        let g = workload_gpus(WorkloadKind::Deployment, &d);
        assert_eq!(g.total(), 24);
        assert_eq!(g.describe(), "spec.template: 3 pod(s) × 8");
    }

    #[test]
    fn defaults_requests_and_other_vendors() {
        // No replicas: the default 1; requests when no limits; AMD's resource name; an integer.
        let s = json!({"spec": {"template": pod(json!([
            {"resources": {"requests": {"amd.com/gpu": 4}}},
        ]))}});
        assert_eq!(workload_gpus(WorkloadKind::StatefulSet, &s).total(), 4);
        // A Job runs `parallelism` pods at once (not `completions`).
        let j = json!({"spec": {"parallelism": 2, "completions": 10, "template": pod(json!([
            {"resources": {"limits": {"nvidia.com/gpu": 1}}},
        ]))}});
        assert_eq!(workload_gpus(WorkloadKind::Job, &j).total(), 2);
    }

    #[test]
    fn a_pytorchjob_adds_its_roles() {
        let p = json!({"spec": {"pytorchReplicaSpecs": {
            "Master": {"replicas": 1, "template": pod(json!([{"resources": {"limits": {"nvidia.com/gpu": 8}}}]))},
            "Worker": {"replicas": 3, "template": pod(json!([{"resources": {"limits": {"nvidia.com/gpu": 8}}}]))},
        }}});
        let g = workload_gpus(WorkloadKind::PyTorchJob, &p);
        assert_eq!(g.total(), 32);
        assert_eq!(g.describe(), "Master: 1 pod(s) × 8, Worker: 3 pod(s) × 8");
    }

    #[test]
    fn a_jobset_multiplies_replicas_and_parallelism() {
        let js = json!({"spec": {"replicatedJobs": [
            {"name": "workers", "replicas": 2, "template": {"spec": {"parallelism": 4,
                "template": pod(json!([{"resources": {"limits": {"nvidia.com/gpu": "8"}}}]))}}},
            {"name": "driver", "template": {"spec": {
                "template": pod(json!([{"resources": {"limits": {"cpu": "2"}}}]))}}},
        ]}});
        let g = workload_gpus(WorkloadKind::JobSet, &js);
        assert_eq!(g.total(), 64);
        assert_eq!(g.templates[1].per_pod, 0);
    }

    #[test]
    fn hostile_values_count_nothing_and_never_overflow() {
        let d = json!({"spec": {"replicas": -1, "template": pod(json!([
            {"resources": {"limits": {"nvidia.com/gpu": "1.5"}}},
            {"resources": {"limits": {"nvidia.com/gpu": u64::MAX}}},
            {"resources": {"limits": {"nvidia.com/gpu": u64::MAX}}},
            {"resources": "nonsense"},
        ]))}});
        let g = workload_gpus(WorkloadKind::Deployment, &d);
        assert_eq!(g.templates[0].pods, 0);
        assert_eq!(g.templates[0].per_pod, u64::MAX);
        assert_eq!(g.total(), 0);
        assert_eq!(workload_gpus(WorkloadKind::ConfigMap, &d).total(), 0);
        assert_eq!(
            workload_gpus(WorkloadKind::PyTorchJob, &json!({})).total(),
            0
        );
    }
}
