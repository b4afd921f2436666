//! Building the JSON objects the apiserver would hold for seeded namespaces, workloads and
//! pods, and the instantaneous "controller" that keeps workload status and pods in step.

use std::collections::BTreeMap;

use serde_json::{Map, Value, json};

use crate::seed::{ContainerSeed, PodSeed, WorkloadSeed};

/// Characters `rand.SafeEncodeString` uses for generated names.
const SAFE_ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";

pub fn fnv32a(data: &[u8]) -> u32 {
    let mut h: u32 = 0x811c_9dc5;
    for b in data {
        h ^= u32::from(*b);
        h = h.wrapping_mul(0x0100_0193);
    }
    h
}

/// `rand.SafeEncodeString(fmt.Sprint(hash))`, as used for `pod-template-hash`.
pub fn safe_encode(hash: u32) -> String {
    hash.to_string()
        .bytes()
        .map(|b| SAFE_ALPHABET[usize::from(b) % SAFE_ALPHABET.len()] as char)
        .collect()
}

/// A 5-character generated-name suffix, deterministic in `seed`.
pub fn name_suffix(seed: &str) -> String {
    let mut h = fnv32a(seed.as_bytes());
    (0..5)
        .map(|_| {
            let c = SAFE_ALPHABET[(h % SAFE_ALPHABET.len() as u32) as usize] as char;
            h = (h / SAFE_ALPHABET.len() as u32) ^ fnv32a(&h.to_le_bytes());
            c
        })
        .collect()
}

/// The pod-template-hash of a template (stable for equal templates).
pub fn template_hash(template: &Value) -> String {
    safe_encode(fnv32a(template.to_string().as_bytes()))
}

fn string_map(m: &BTreeMap<String, String>) -> Value {
    Value::Object(m.iter().map(|(k, v)| (k.clone(), json!(v))).collect())
}

fn container_json(c: &ContainerSeed) -> Value {
    json!({
        "name": c.name,
        "image": c.image,
        "imagePullPolicy": "IfNotPresent",
        "resources": {},
        "terminationMessagePath": "/dev/termination-log",
        "terminationMessagePolicy": "File",
    })
}

fn pod_spec(containers: &[ContainerSeed]) -> Value {
    json!({
        "containers": containers.iter().map(container_json).collect::<Vec<_>>(),
        "restartPolicy": "Always",
        "terminationGracePeriodSeconds": 30,
        "dnsPolicy": "ClusterFirst",
        "schedulerName": "default-scheduler",
        "securityContext": {},
    })
}

/// Inserts `key: map` unless the map is empty (the apiserver omits empty maps).
fn put_map(target: &mut Value, key: &str, m: &BTreeMap<String, String>) {
    if !m.is_empty() {
        target[key] = string_map(m);
    }
}

pub fn namespace(name: &str) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {"name": name, "labels": {"kubernetes.io/metadata.name": name}},
        "spec": {"finalizers": ["kubernetes"]},
        "status": {"phase": "Active"},
    })
}

pub fn workload(seed: &WorkloadSeed) -> Value {
    let selector = seed.effective_selector();
    let mut labels = selector.clone();
    labels.extend(seed.labels.clone());
    let mut template_meta = json!({});
    put_map(&mut template_meta, "labels", &selector);
    put_map(
        &mut template_meta,
        "annotations",
        &seed.template_annotations,
    );
    let mut spec = pod_spec(&seed.effective_containers());
    if !seed.volumes.is_empty() {
        spec["volumes"] = Value::Array(seed.volumes.clone());
    }
    let template = json!({"metadata": template_meta, "spec": spec});
    let mut meta = json!({"name": seed.name, "namespace": seed.namespace});
    put_map(&mut meta, "labels", &labels);
    let mut annotations = seed.annotations.clone();
    let spec = if seed.kind == crate::resource::ResourceKind::StatefulSet {
        json!({
            "replicas": seed.replicas,
            "selector": {"matchLabels": string_map(&selector)},
            "serviceName": seed.name,
            "template": template,
            "podManagementPolicy": "OrderedReady",
            "updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"partition": 0}},
            "revisionHistoryLimit": 10,
            "persistentVolumeClaimRetentionPolicy": {"whenDeleted": "Retain", "whenScaled": "Retain"},
        })
    } else {
        annotations.insert("deployment.kubernetes.io/revision".into(), "1".into());
        json!({
            "replicas": seed.replicas,
            "selector": {"matchLabels": string_map(&selector)},
            "template": template,
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": "25%", "maxSurge": "25%"}},
            "revisionHistoryLimit": 10,
            "progressDeadlineSeconds": 600,
        })
    };
    put_map(&mut meta, "annotations", &annotations);
    json!({
        "apiVersion": seed.kind.api_version(),
        "kind": seed.kind.kind(),
        "metadata": meta,
        "spec": spec,
        "status": {},
    })
}

/// Recomputes a workload's `status` as if its controller had converged instantly.
/// `now` stamps condition times; `ready` is the number of running pods.
pub fn refresh_workload_status(obj: &mut Value, ready: u64, now: &str) {
    let replicas = obj["spec"]["replicas"].as_u64().unwrap_or(1);
    let generation = obj["metadata"]["generation"].as_i64().unwrap_or(1);
    let name = obj["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let hash = template_hash(&obj["spec"]["template"]);
    let mut status = Map::new();
    status.insert("observedGeneration".into(), json!(generation));
    let mut put = |k: &str, v: u64| {
        if v > 0 {
            status.insert(k.into(), json!(v));
        }
    };
    put("replicas", replicas);
    put("updatedReplicas", replicas);
    put("readyReplicas", ready.min(replicas));
    put("availableReplicas", ready.min(replicas));
    if obj["kind"] == "StatefulSet" {
        put("currentReplicas", replicas);
        status.insert("currentRevision".into(), json!(format!("{name}-{hash}")));
        status.insert("updateRevision".into(), json!(format!("{name}-{hash}")));
        status.insert("collisionCount".into(), json!(0));
    } else {
        let available = ready >= replicas;
        let old_conditions = obj["status"]["conditions"].clone();
        let since = |t: &str| {
            old_conditions
                .as_array()
                .and_then(|cs| cs.iter().find(|c| c["type"] == t))
                .and_then(|c| c["lastTransitionTime"].as_str())
                .unwrap_or(now)
                .to_string()
        };
        status.insert(
            "conditions".into(),
            json!([
                {"type": "Available", "status": if available {"True"} else {"False"},
                 "lastUpdateTime": since("Available"), "lastTransitionTime": since("Available"),
                 "reason": if available {"MinimumReplicasAvailable"} else {"MinimumReplicasUnavailable"},
                 "message": if available {"Deployment has minimum availability."} else {"Deployment does not have minimum availability."}},
                {"type": "Progressing", "status": "True",
                 "lastUpdateTime": now, "lastTransitionTime": since("Progressing"),
                 "reason": "NewReplicaSetAvailable",
                 "message": format!("ReplicaSet \"{name}-{hash}\" has successfully progressed.")},
            ]),
        );
    }
    obj["status"] = Value::Object(status);
}

/// Name, labels and owner of the pod for replica `index` of a workload object.
pub fn workload_pod_identity(workload: &Value, index: u32) -> (String, Map<String, Value>, Value) {
    let name = workload["metadata"]["name"].as_str().unwrap_or_default();
    let uid = workload["metadata"]["uid"].clone();
    let hash = template_hash(&workload["spec"]["template"]);
    let mut labels = workload["spec"]["template"]["metadata"]["labels"]
        .as_object()
        .cloned()
        .unwrap_or_default();
    if workload["kind"] == "StatefulSet" {
        let pod = format!("{name}-{index}");
        labels.insert(
            "apps.kubernetes.io/pod-index".into(),
            json!(index.to_string()),
        );
        labels.insert(
            "controller-revision-hash".into(),
            json!(format!("{name}-{hash}")),
        );
        labels.insert("statefulset.kubernetes.io/pod-name".into(), json!(pod));
        let owner = json!({"apiVersion": "apps/v1", "kind": "StatefulSet", "name": name, "uid": uid,
                           "controller": true, "blockOwnerDeletion": true});
        (pod, labels, owner)
    } else {
        let rs = format!("{name}-{hash}");
        let pod = format!("{rs}-{}", name_suffix(&format!("{rs}/{index}")));
        labels.insert("pod-template-hash".into(), json!(hash));
        let rs_uid = format!(
            "{:08x}-0000-4000-8000-{:012x}",
            fnv32a(rs.as_bytes()),
            index
        );
        let owner = json!({"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": rs, "uid": rs_uid,
                           "controller": true, "blockOwnerDeletion": true});
        (pod, labels, owner)
    }
}

/// A running pod of a workload, built from its pod template.
pub fn workload_pod(workload: &Value, index: u32, node: &str, ip: &str, now: &str) -> Value {
    let (name, labels, owner) = workload_pod_identity(workload, index);
    let ns = workload["metadata"]["namespace"].clone();
    let template = &workload["spec"]["template"];
    let mut meta =
        json!({"name": name, "namespace": ns, "labels": labels, "ownerReferences": [owner]});
    if workload["kind"] == "Deployment" {
        meta["generateName"] = json!(format!("{}-", owner["name"].as_str().unwrap_or_default()));
    } else {
        meta["generateName"] = json!(format!(
            "{}-",
            workload["metadata"]["name"].as_str().unwrap_or_default()
        ));
    }
    if let Some(a) = template["metadata"].get("annotations") {
        meta["annotations"] = a.clone();
    }
    let mut spec = template["spec"].clone();
    spec["nodeName"] = json!(node);
    spec["serviceAccountName"] = json!("default");
    let containers: Vec<(String, String)> = container_names_images(&spec);
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": meta,
        "spec": spec,
        "status": pod_status("Running", &containers, ip, now),
    })
}

pub fn standalone_pod(seed: &PodSeed, node: &str, ip: &str, now: &str) -> Value {
    let containers = if seed.containers.is_empty() {
        vec![ContainerSeed::default()]
    } else {
        seed.containers.clone()
    };
    let mut meta = json!({"name": seed.name, "namespace": seed.namespace});
    put_map(&mut meta, "labels", &seed.labels);
    put_map(&mut meta, "annotations", &seed.annotations);
    let mut spec = pod_spec(&containers);
    spec["nodeName"] = json!(seed.node_name.as_deref().unwrap_or(node));
    spec["serviceAccountName"] = json!("default");
    let names = container_names_images(&spec);
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": meta,
        "spec": spec,
        "status": pod_status(&seed.phase, &names, ip, now),
    })
}

pub fn container_names_images(pod_spec: &Value) -> Vec<(String, String)> {
    pod_spec["containers"]
        .as_array()
        .map(|cs| {
            cs.iter()
                .map(|c| {
                    (
                        c["name"].as_str().unwrap_or_default().to_string(),
                        c["image"].as_str().unwrap_or_default().to_string(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

fn pod_status(phase: &str, containers: &[(String, String)], ip: &str, now: &str) -> Value {
    let running = phase == "Running";
    let cond = |t: &str, ok: bool| json!({"type": t, "status": if ok {"True"} else {"False"}, "lastProbeTime": null, "lastTransitionTime": now});
    let statuses: Vec<Value> = containers
        .iter()
        .map(|(name, image)| {
            let state = match phase {
                "Running" => json!({"running": {"startedAt": now}}),
                "Pending" => json!({"waiting": {"reason": "ContainerCreating"}}),
                "Succeeded" => json!({"terminated": {"exitCode": 0, "reason": "Completed", "startedAt": now, "finishedAt": now}}),
                _ => json!({"terminated": {"exitCode": 1, "reason": "Error", "startedAt": now, "finishedAt": now}}),
            };
            json!({
                "name": name,
                "image": image,
                "imageID": format!("{image}@sha256:{:064x}", u128::from(fnv32a(image.as_bytes()))),
                "containerID": format!("containerd://{:016x}{:016x}", u64::from(fnv32a(name.as_bytes())), u64::from(fnv32a(ip.as_bytes()))),
                "ready": running,
                "started": running,
                "restartCount": 0,
                "state": state,
                "lastState": {},
            })
        })
        .collect();
    let mut status = json!({
        "phase": phase,
        "conditions": [
            cond("PodReadyToStartContainers", phase != "Pending"),
            cond("Initialized", true),
            cond("Ready", running),
            cond("ContainersReady", running),
            cond("PodScheduled", true),
        ],
        "hostIP": "172.18.0.2",
        "hostIPs": [{"ip": "172.18.0.2"}],
        "startTime": now,
        "containerStatuses": statuses,
        "qosClass": "BestEffort",
    });
    if phase != "Pending" {
        status["podIP"] = json!(ip);
        status["podIPs"] = json!([{"ip": ip}]);
    }
    status
}

/// A Secret as the apiserver stores it: `stringData` entries are base64-encoded into `data`
/// (overriding keys of the same name), `stringData` is dropped, and an empty `type` defaults to
/// `Opaque`.
pub fn fold_string_data(secret: &mut Value) {
    use base64::Engine;
    let Some(obj) = secret.as_object_mut() else {
        return;
    };
    if let Some(Value::Object(plain)) = obj.remove("stringData") {
        let data = obj.entry("data").or_insert_with(|| json!({}));
        if !data.is_object() {
            *data = json!({});
        }
        for (k, v) in plain {
            let text = v.as_str().unwrap_or_default();
            data[k.as_str()] = json!(base64::engine::general_purpose::STANDARD.encode(text));
        }
    }
    if obj
        .get("type")
        .and_then(Value::as_str)
        .unwrap_or("")
        .is_empty()
    {
        obj.insert("type".into(), json!("Opaque"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_names_look_like_kubernetes() {
        let d = {
            let mut d =
                workload(&WorkloadSeed::deployment("ml", "trainer").template_annotation("k", "v"));
            d["metadata"]["uid"] = json!("u");
            d
        };
        let (pod, labels, owner) = workload_pod_identity(&d, 0);
        let hash = labels["pod-template-hash"].as_str().unwrap();
        assert!(hash.bytes().all(|b| SAFE_ALPHABET.contains(&b)));
        assert_eq!(pod.len(), "trainer-".len() + hash.len() + 6);
        assert!(pod.starts_with(&format!("trainer-{hash}-")));
        assert_eq!(owner["kind"], "ReplicaSet");
        assert_eq!(labels["app"], "trainer");
        let (other, _, _) = workload_pod_identity(&d, 1);
        assert_ne!(pod, other);
        let s = workload(&WorkloadSeed::statefulset("ml", "db"));
        assert_eq!(workload_pod_identity(&s, 2).0, "db-2");
    }

    #[test]
    fn deployment_shape() {
        let d = workload(
            &WorkloadSeed::deployment("ml", "trainer")
                .annotation("a", "1")
                .template_annotation("k", "v")
                .replicas(2),
        );
        assert_eq!(
            d["metadata"]["annotations"],
            json!({"a": "1", "deployment.kubernetes.io/revision": "1"})
        );
        assert_eq!(
            d["spec"]["template"]["metadata"],
            json!({"labels": {"app": "trainer"}, "annotations": {"k": "v"}})
        );
        assert_eq!(
            d["spec"]["selector"],
            json!({"matchLabels": {"app": "trainer"}})
        );
        assert_eq!(
            d["spec"]["template"]["spec"]["containers"][0]["name"],
            "trainer"
        );
        let mut d = d;
        d["metadata"]["generation"] = json!(3);
        refresh_workload_status(&mut d, 2, "2024-01-01T00:00:00Z");
        assert_eq!(d["status"]["observedGeneration"], 3);
        assert_eq!(d["status"]["readyReplicas"], 2);
        assert_eq!(d["status"]["conditions"][0]["status"], "True");
    }
}
