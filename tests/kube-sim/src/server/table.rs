//! Server-side printing (`application/json;as=Table;g=meta.k8s.io;v=v1`) with the columns the
//! apiserver's table convertors produce for namespaces, pods, deployments and statefulsets.

use chrono::{DateTime, Utc};
use serde_json::{Value, json};

use crate::resource::ResourceKind;

/// `duration.HumanDuration`.
pub fn human_duration(secs: i64) -> String {
    if secs < -1 {
        return "<invalid>".into();
    }
    if secs < 0 {
        return "0s".into();
    }
    if secs < 120 {
        return format!("{secs}s");
    }
    let minutes = secs / 60;
    if minutes < 10 {
        let s = secs % 60;
        return if s == 0 {
            format!("{minutes}m")
        } else {
            format!("{minutes}m{s}s")
        };
    }
    if minutes < 180 {
        return format!("{minutes}m");
    }
    let hours = secs / 3600;
    if hours < 8 {
        let m = minutes % 60;
        return if m == 0 {
            format!("{hours}h")
        } else {
            format!("{hours}h{m}m")
        };
    }
    if hours < 48 {
        return format!("{hours}h");
    }
    if hours < 24 * 8 {
        let h = hours % 24;
        return if h == 0 {
            format!("{}d", hours / 24)
        } else {
            format!("{}d{h}h", hours / 24)
        };
    }
    if hours < 24 * 365 * 2 {
        return format!("{}d", hours / 24);
    }
    if hours < 24 * 365 * 8 {
        let dy = (hours / 24) % 365;
        return if dy == 0 {
            format!("{}y", hours / 24 / 365)
        } else {
            format!("{}y{dy}d", hours / 24 / 365)
        };
    }
    format!("{}y", hours / 24 / 365)
}

fn age(v: &Value) -> String {
    match v["metadata"]["creationTimestamp"]
        .as_str()
        .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
    {
        Some(t) => human_duration((Utc::now() - t.with_timezone(&Utc)).num_seconds()),
        None => "<unknown>".into(),
    }
}

fn column(name: &str, ty: &str, format: &str, description: &str, priority: u8) -> Value {
    json!({"name": name, "type": ty, "format": format, "description": description, "priority": priority})
}

fn name_column() -> Value {
    column(
        "Name",
        "string",
        "name",
        "Name must be unique within a namespace. Is required when creating resources, although some resources may allow a client to request the generation of an appropriate name automatically. Name is primarily intended for creation idempotence and configuration definition. Cannot be updated. More info: https://kubernetes.io/docs/concepts/overview/working-with-objects/names#names",
        0,
    )
}

fn age_column() -> Value {
    column(
        "Age",
        "string",
        "",
        "CreationTimestamp is a timestamp representing the server time when this object was created. It is not guaranteed to be set in happens-before order across separate operations. Clients may not set this value. It is represented in RFC3339 form and is in UTC.\n\nPopulated by the system. Read-only. Null for lists. More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#metadata",
        0,
    )
}

/// `LAST SEEN`/`FIRST SEEN` of an Event: its series, else the old timestamps, else eventTime.
fn event_seen(v: &Value, last: bool) -> String {
    let series = if last {
        &v["series"]["lastObservedTime"]
    } else {
        &Value::Null
    };
    let old = if last {
        &v["lastTimestamp"]
    } else {
        &v["firstTimestamp"]
    };
    [series, old, &v["eventTime"]]
        .into_iter()
        .filter_map(Value::as_str)
        .find_map(|t| DateTime::parse_from_rfc3339(t).ok())
        .map_or_else(
            || "<unknown>".into(),
            |t| human_duration((Utc::now() - t.with_timezone(&Utc)).num_seconds()),
        )
}

fn columns(kind: ResourceKind) -> Vec<Value> {
    match kind {
        ResourceKind::Event => vec![
            column(
                "Last Seen",
                "string",
                "",
                "Time when this Event was last seen",
                0,
            ),
            column(
                "Type",
                "string",
                "",
                "Type of this event (Normal, Warning), new types could be added in the future.",
                0,
            ),
            column(
                "Reason",
                "string",
                "",
                "This should be a short, machine understandable string that gives the reason for the transition into the object's current status.",
                0,
            ),
            column(
                "Object",
                "string",
                "",
                "The object that this event is about.",
                0,
            ),
            column(
                "Subobject",
                "string",
                "",
                "The subobject that this event is about.",
                1,
            ),
            column(
                "Source",
                "string",
                "",
                "The component reporting this event.",
                1,
            ),
            column(
                "Message",
                "string",
                "",
                "A human-readable description of the status of this operation.",
                0,
            ),
            column(
                "First Seen",
                "string",
                "",
                "The time at which the event was first recorded.",
                1,
            ),
            column(
                "Count",
                "string",
                "",
                "The number of times this event has occurred.",
                1,
            ),
            column("Name", "string", "name", "Name of the event", 1),
        ],
        ResourceKind::Lease => vec![
            name_column(),
            column(
                "Holder",
                "string",
                "",
                "HolderIdentity contains the identity of the holder of a current lease.",
                0,
            ),
            age_column(),
        ],
        ResourceKind::ConfigMap => vec![
            name_column(),
            column(
                "Data",
                "string",
                "",
                "The number of keys in the ConfigMap.",
                0,
            ),
            age_column(),
        ],
        ResourceKind::Secret => vec![
            name_column(),
            column("Type", "string", "", "The type of the secret", 0),
            column("Data", "string", "", "The number of items in the secret", 0),
            age_column(),
        ],
        // A CRD without printer columns, and (simplified) a Job and what `install` writes: name
        // and age.
        ResourceKind::Job | ResourceKind::PyTorchJob | ResourceKind::JobSet => {
            vec![name_column(), age_column()]
        }
        ResourceKind::ServiceAccount
        | ResourceKind::Service
        | ResourceKind::Role
        | ResourceKind::RoleBinding
        | ResourceKind::ClusterRole
        | ResourceKind::ClusterRoleBinding => vec![name_column(), age_column()],
        ResourceKind::Namespace => vec![
            name_column(),
            column("Status", "string", "", "The status of the namespace", 0),
            age_column(),
        ],
        ResourceKind::Pod => vec![
            name_column(),
            column(
                "Ready",
                "string",
                "",
                "The aggregate readiness state of this pod for accepting traffic.",
                0,
            ),
            column(
                "Status",
                "string",
                "",
                "The aggregate status of the containers in this pod.",
                0,
            ),
            column(
                "Restarts",
                "string",
                "",
                "The number of times the containers in this pod have been restarted and when the last container in this pod has restarted.",
                0,
            ),
            age_column(),
            column(
                "IP",
                "string",
                "",
                "IP address allocated to the pod. Routable at least within the cluster. Empty if not yet allocated.",
                1,
            ),
            column(
                "Node",
                "string",
                "",
                "NodeName is a request to schedule this pod onto a specific node.",
                1,
            ),
            column(
                "Nominated Node",
                "string",
                "",
                "nominatedNodeName is set only when this pod preempts other pods on the node, but it cannot be scheduled right away as preemption victims receive their graceful termination periods.",
                1,
            ),
            column(
                "Readiness Gates",
                "string",
                "",
                "If specified, all readiness gates will be evaluated for pod readiness.",
                1,
            ),
        ],
        ResourceKind::Deployment => vec![
            name_column(),
            column(
                "Ready",
                "string",
                "",
                "Number of the pod with ready state",
                0,
            ),
            column(
                "Up-to-date",
                "integer",
                "",
                "Total number of non-terminated pods targeted by this deployment that have the desired template spec.",
                0,
            ),
            column(
                "Available",
                "integer",
                "",
                "Total number of available pods (ready for at least minReadySeconds) targeted by this deployment.",
                0,
            ),
            age_column(),
            column(
                "Containers",
                "string",
                "",
                "Names of each container in the template.",
                1,
            ),
            column(
                "Images",
                "string",
                "",
                "Images referenced by each container in the template.",
                1,
            ),
            column(
                "Selector",
                "string",
                "",
                "Label selector for pods. Existing ReplicaSets whose pods are selected by this will be the ones affected by this deployment.",
                1,
            ),
        ],
        ResourceKind::StatefulSet => vec![
            name_column(),
            column(
                "Ready",
                "string",
                "",
                "Number of the pod with ready state",
                0,
            ),
            age_column(),
            column(
                "Containers",
                "string",
                "",
                "Names of each container in the template.",
                1,
            ),
            column(
                "Images",
                "string",
                "",
                "Images referenced by each container in the template.",
                1,
            ),
        ],
    }
}

fn int(v: &Value) -> i64 {
    v.as_i64().unwrap_or(0)
}

fn containers_and_images(template_spec: &Value) -> (String, String) {
    let pairs = crate::objects::container_names_images(template_spec);
    (
        pairs
            .iter()
            .map(|p| p.0.as_str())
            .collect::<Vec<_>>()
            .join(","),
        pairs
            .iter()
            .map(|p| p.1.as_str())
            .collect::<Vec<_>>()
            .join(","),
    )
}

fn cells(kind: ResourceKind, v: &Value) -> Vec<Value> {
    let name = v["metadata"]["name"].clone();
    match kind {
        ResourceKind::Event => {
            // Rows of events.k8s.io lists come in that version's field names.
            let v = &super::records::core_event(v.clone());
            let o = &v["involvedObject"];
            let object = format!(
                "{}/{}",
                o["kind"].as_str().unwrap_or_default().to_ascii_lowercase(),
                o["name"].as_str().unwrap_or_default()
            );
            let source = match v["reportingComponent"].as_str().filter(|c| !c.is_empty()) {
                Some(c) => match v["reportingInstance"].as_str().filter(|i| !i.is_empty()) {
                    Some(i) => format!("{c}, {i}"),
                    None => c.to_string(),
                },
                None => v["source"]["component"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
            };
            let count = v["series"]["count"]
                .as_i64()
                .or_else(|| v["count"].as_i64())
                .unwrap_or(1);
            vec![
                json!(event_seen(v, true)),
                v["type"].clone(),
                v["reason"].clone(),
                json!(object),
                json!(o["fieldPath"].as_str().unwrap_or_default()),
                json!(source),
                json!(v["message"].as_str().unwrap_or_default().trim()),
                json!(event_seen(v, false)),
                json!(count),
                name,
            ]
        }
        ResourceKind::Lease => vec![
            name,
            json!(v["spec"]["holderIdentity"].as_str().unwrap_or("<none>")),
            json!(age(v)),
        ],
        ResourceKind::ConfigMap => vec![
            name,
            json!(v["data"].as_object().map_or(0, |m| m.len())),
            json!(age(v)),
        ],
        ResourceKind::Secret => vec![
            name,
            json!(v["type"].as_str().unwrap_or("Opaque")),
            json!(v["data"].as_object().map_or(0, |m| m.len())),
            json!(age(v)),
        ],
        ResourceKind::Job | ResourceKind::PyTorchJob | ResourceKind::JobSet => {
            vec![name, json!(age(v))]
        }
        ResourceKind::ServiceAccount
        | ResourceKind::Service
        | ResourceKind::Role
        | ResourceKind::RoleBinding
        | ResourceKind::ClusterRole
        | ResourceKind::ClusterRoleBinding => vec![name, json!(age(v))],
        ResourceKind::Namespace => vec![name, v["status"]["phase"].clone(), json!(age(v))],
        ResourceKind::Pod => {
            let statuses = v["status"]["containerStatuses"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            let total = v["spec"]["containers"].as_array().map_or(0, Vec::len);
            let ready = statuses.iter().filter(|s| s["ready"] == true).count();
            let restarts: i64 = statuses.iter().map(|s| int(&s["restartCount"])).sum();
            let reason = statuses
                .iter()
                .find_map(|s| {
                    s["state"]["waiting"]["reason"]
                        .as_str()
                        .or(s["state"]["terminated"]["reason"].as_str())
                })
                .unwrap_or_else(|| v["status"]["phase"].as_str().unwrap_or("Unknown"));
            let last_restart = statuses
                .iter()
                .filter_map(|s| s["lastState"]["terminated"]["finishedAt"].as_str())
                .filter_map(|t| DateTime::parse_from_rfc3339(t).ok())
                .max();
            let restarts_cell = match last_restart {
                Some(t) if restarts > 0 => format!(
                    "{restarts} ({} ago)",
                    human_duration((Utc::now() - t.with_timezone(&Utc)).num_seconds())
                ),
                _ => restarts.to_string(),
            };
            vec![
                name,
                json!(format!("{ready}/{total}")),
                json!(reason),
                json!(restarts_cell),
                json!(age(v)),
                json!(v["status"]["podIP"].as_str().unwrap_or("<none>")),
                json!(v["spec"]["nodeName"].as_str().unwrap_or("<none>")),
                json!("<none>"),
                json!("<none>"),
            ]
        }
        ResourceKind::Deployment => {
            let (containers, images) = containers_and_images(&v["spec"]["template"]["spec"]);
            let selector = v["spec"]["selector"]["matchLabels"]
                .as_object()
                .map(|m| {
                    m.iter()
                        .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
                        .collect::<Vec<_>>()
                        .join(",")
                })
                .unwrap_or_default();
            vec![
                name,
                json!(format!(
                    "{}/{}",
                    int(&v["status"]["readyReplicas"]),
                    int(&v["spec"]["replicas"])
                )),
                json!(int(&v["status"]["updatedReplicas"])),
                json!(int(&v["status"]["availableReplicas"])),
                json!(age(v)),
                json!(containers),
                json!(images),
                json!(selector),
            ]
        }
        ResourceKind::StatefulSet => {
            let (containers, images) = containers_and_images(&v["spec"]["template"]["spec"]);
            vec![
                name,
                json!(format!(
                    "{}/{}",
                    int(&v["status"]["readyReplicas"]),
                    int(&v["spec"]["replicas"])
                )),
                json!(age(v)),
                json!(containers),
                json!(images),
            ]
        }
    }
}

/// A Table of `items`; `include_object` is the `includeObject` parameter
/// (`None`, `Metadata` (default) or `Object`).
pub fn table(kind: ResourceKind, items: &[Value], include_object: Option<&str>) -> Value {
    let rows: Vec<Value> = items
        .iter()
        .map(|v| {
            let mut row = json!({"cells": cells(kind, v)});
            match include_object.unwrap_or("Metadata") {
                "None" => {}
                "Object" => row["object"] = v.clone(),
                _ => {
                    row["object"] = json!({
                        "kind": "PartialObjectMetadata",
                        "apiVersion": "meta.k8s.io/v1",
                        "metadata": v["metadata"],
                    })
                }
            }
            row
        })
        .collect();
    json!({
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": {},
        "columnDefinitions": columns(kind),
        "rows": rows,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn human_durations() {
        let cases = [
            (0, "0s"),
            (119, "119s"),
            (120, "2m"),
            (125, "2m5s"),
            (600, "10m"),
            (3 * 3600, "3h"),
            (3 * 3600 + 60, "3h1m"),
            (9 * 3600, "9h"),
            (50 * 3600, "2d2h"),
            (10 * 86400, "10d"),
            (800 * 86400, "2y70d"),
            (-5, "<invalid>"),
        ];
        for (s, want) in cases {
            assert_eq!(human_duration(s), want, "{s}");
        }
    }

    #[test]
    fn deployment_row() {
        let mut d = crate::objects::workload(
            &crate::seed::WorkloadSeed::deployment("ml", "trainer").replicas(2),
        );
        crate::objects::refresh_workload_status(&mut d, 1, "2024-01-01T00:00:00Z");
        let t = table(ResourceKind::Deployment, &[d], None);
        let cells = &t["rows"][0]["cells"];
        assert_eq!(cells[0], "trainer");
        assert_eq!(cells[1], "1/2");
        assert_eq!(cells[2], 2);
        assert_eq!(cells[7], "app=trainer");
        assert_eq!(t["rows"][0]["object"]["kind"], "PartialObjectMetadata");
        assert_eq!(
            t["columnDefinitions"].as_array().unwrap().len(),
            cells.as_array().unwrap().len()
        );
    }
}
