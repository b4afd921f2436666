//! The cluster state: objects with their field ownership, container logs, and the counters
//! behind resourceVersion, uid and pod IPs. All mutation of stored objects goes through here
//! so resourceVersion always bumps exactly once per stored change.

use std::collections::{BTreeMap, VecDeque};

use chrono::{DateTime, Duration, SecondsFormat, Utc};
use serde_json::{Value, json};

use crate::logs::{LogLine, LogStore};
use crate::managed::ManagedFields;
use crate::objects;
use crate::resource::ResourceKind;
use crate::seed::{LogLineSeed, Seed, ValidationConfig};

pub const NODE_NAME: &str = "kube-sim-node-1";
const DEFAULT_SEED_MANAGER: &str = "kube-sim-seed";

/// One stored object and who owns its fields.
#[derive(Debug, Clone)]
pub struct Stored {
    pub value: Value,
    pub managed: ManagedFields,
}

pub type ObjectKey = (ResourceKind, String, String);

/// How many change events are kept for watches that resume from a resourceVersion.
pub const EVENT_HISTORY: usize = 4096;

/// One stored change, as watches report it.
#[derive(Debug, Clone)]
pub struct Event {
    pub rv: u64,
    pub kind: ResourceKind,
    pub namespace: String,
    /// `ADDED`, `MODIFIED` or `DELETED`.
    pub event_type: &'static str,
    pub object: Value,
    /// The object before the change (for MODIFIED), so selector watches can tell an object
    /// that starts or stops matching.
    pub previous: Option<Value>,
}

#[derive(Debug)]
pub struct Store {
    rv: u64,
    uid_seq: u64,
    ip_seq: u32,
    objects: BTreeMap<ObjectKey, Stored>,
    events: VecDeque<Event>,
    /// Bumped (to the latest resourceVersion) on every stored change; watches wait on it.
    pub changes: tokio::sync::watch::Sender<u64>,
    pub logs: LogStore,
    pub validation: ValidationConfig,
    pub seed_manager: String,
    /// Replace a Deployment's pods when its pod template changes (a rollout).
    pub rollout_on_template_change: bool,
}

/// RFC 3339 with whole seconds, as in `creationTimestamp`.
pub fn timestamp(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

pub fn now() -> String {
    timestamp(Utc::now())
}

fn key(kind: ResourceKind, ns: &str, name: &str) -> ObjectKey {
    let ns = if kind.namespaced() { ns } else { "" };
    (kind, ns.to_string(), name.to_string())
}

impl Store {
    pub fn new() -> Self {
        Store {
            rv: 1000,
            uid_seq: 0,
            ip_seq: 0,
            objects: BTreeMap::new(),
            events: VecDeque::new(),
            changes: tokio::sync::watch::channel(1000).0,
            logs: LogStore::default(),
            validation: ValidationConfig::default(),
            seed_manager: DEFAULT_SEED_MANAGER.into(),
            rollout_on_template_change: false,
        }
    }

    /// Builds the state a seed describes. Log lines without timestamps are stamped one
    /// millisecond apart, ending at `start`.
    pub fn from_seed(seed: &Seed, start: DateTime<Utc>) -> Result<Self, String> {
        let mut s = Store::new();
        s.validation = seed.validation.clone();
        if let Some(m) = &seed.seed_field_manager {
            s.seed_manager = m.clone();
        }
        s.rollout_on_template_change = seed.rollout_on_template_change;
        let mut namespaces = vec!["default".to_string()];
        namespaces.extend(seed.namespaces.iter().cloned());
        namespaces.extend(seed.workloads.iter().map(|w| w.namespace.clone()));
        namespaces.extend(seed.pods.iter().map(|p| p.namespace.clone()));
        for ns in namespaces {
            s.ensure_namespace(&ns);
        }
        for w in &seed.workloads {
            if !w.kind.is_workload() {
                return Err(format!(
                    "workload {}/{}: kind must be Deployment or StatefulSet",
                    w.namespace, w.name
                ));
            }
            if s.get(w.kind, &w.namespace, &w.name).is_some() {
                return Err(format!("duplicate {} {}/{}", w.kind, w.namespace, w.name));
            }
            let obj = objects::workload(w);
            s.create(w.kind, obj);
            let pods = s.spawn_pods(w.kind, &w.namespace, &w.name);
            for pod in pods {
                for (container, lines) in &w.logs {
                    s.seed_logs(&w.namespace, &pod, container, lines, start)?;
                }
            }
        }
        for o in &seed.objects {
            s.add_object(o.kind, o.object.clone())?;
        }
        for p in &seed.pods {
            if s.get(ResourceKind::Pod, &p.namespace, &p.name).is_some() {
                return Err(format!("duplicate pod {}/{}", p.namespace, p.name));
            }
            let ip = s.next_ip();
            let obj = objects::standalone_pod(p, NODE_NAME, &ip, &now());
            s.create(ResourceKind::Pod, obj);
            for (container, lines) in &p.logs {
                s.seed_logs(&p.namespace, &p.name, container, lines, start)?;
            }
        }
        Ok(s)
    }

    /// Stores an object of a kind without pods (a ConfigMap, Secret, Job, PyTorchJob or JobSet)
    /// as given: `apiVersion`/`kind` filled in, `metadata.namespace` default `default` (created
    /// if missing), a Secret's `stringData` folded into `data`. Returns the stored object.
    pub fn add_object(&mut self, kind: ResourceKind, mut obj: Value) -> Result<Value, String> {
        if !kind.is_plain_object() {
            return Err(format!(
                "object of kind {kind}: only ConfigMap, Secret, Job, PyTorchJob and JobSet are seeded as objects",
            ));
        }
        let ns = obj["metadata"]["namespace"]
            .as_str()
            .unwrap_or("default")
            .to_string();
        let name = obj["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        if name.is_empty() {
            return Err(format!("{kind} without metadata.name"));
        }
        if self.get(kind, &ns, &name).is_some() {
            return Err(format!("duplicate {kind} {ns}/{name}"));
        }
        self.ensure_namespace(&ns);
        obj["apiVersion"] = json!(kind.api_version());
        obj["kind"] = json!(kind.kind());
        obj["metadata"]["namespace"] = json!(ns);
        if kind == ResourceKind::Secret {
            objects::fold_string_data(&mut obj);
        }
        Ok(self.create(kind, obj))
    }

    /// Appends seeded log lines (see [`LogLineSeed`]) to a container, stamped relative to `start`.
    pub fn seed_logs(
        &mut self,
        ns: &str,
        pod: &str,
        container: &str,
        lines: &[LogLineSeed],
        start: DateTime<Utc>,
    ) -> Result<(), String> {
        let n = lines.len() as i64;
        let log = self.logs.entry(ns, pod, container);
        for (i, line) in lines.iter().enumerate() {
            let (ts, text) = match line {
                LogLineSeed::Text(t) => {
                    (start - Duration::milliseconds(n - 1 - i as i64), t.clone())
                }
                LogLineSeed::At { ts, text } => (
                    DateTime::parse_from_rfc3339(ts)
                        .map_err(|e| format!("log line timestamp {ts:?}: {e}"))?
                        .with_timezone(&Utc),
                    text.clone(),
                ),
                LogLineSeed::Ago { age_seconds, text } => {
                    (start - Duration::seconds(*age_seconds as i64), text.clone())
                }
            };
            log.append(LogLine { ts, text });
        }
        log.lines.sort_by_key(|l| l.ts);
        Ok(())
    }

    pub fn resource_version(&self) -> u64 {
        self.rv
    }

    fn next_rv(&mut self) -> String {
        self.rv += 1;
        self.rv.to_string()
    }

    fn next_uid(&mut self, kind: ResourceKind, ns: &str, name: &str) -> String {
        self.uid_seq += 1;
        let h = objects::fnv32a(format!("{kind}/{ns}/{name}").as_bytes());
        format!(
            "{h:08x}-{:04x}-4{:03x}-8{:03x}-{:012x}",
            (h >> 16) as u16,
            (self.uid_seq >> 12) & 0xfff,
            self.uid_seq & 0xfff,
            self.uid_seq
        )
    }

    pub fn next_ip(&mut self) -> String {
        self.ip_seq += 1;
        format!("10.244.{}.{}", self.ip_seq / 250, self.ip_seq % 250 + 2)
    }

    pub fn get(&self, kind: ResourceKind, ns: &str, name: &str) -> Option<&Stored> {
        self.objects.get(&key(kind, ns, name))
    }

    pub fn get_mut(&mut self, kind: ResourceKind, ns: &str, name: &str) -> Option<&mut Stored> {
        self.objects.get_mut(&key(kind, ns, name))
    }

    /// Objects of a kind, sorted by namespace then name; `ns = None` means all namespaces.
    pub fn list(&self, kind: ResourceKind, ns: Option<&str>) -> Vec<&Stored> {
        self.objects
            .iter()
            .filter(|((k, n, _), _)| *k == kind && ns.is_none_or(|want| want == n))
            .map(|(_, v)| v)
            .collect()
    }

    pub fn namespace_exists(&self, ns: &str) -> bool {
        self.get(ResourceKind::Namespace, "", ns).is_some()
    }

    pub fn ensure_namespace(&mut self, ns: &str) {
        if !self.namespace_exists(ns) {
            self.create(ResourceKind::Namespace, objects::namespace(ns));
        }
    }

    /// Stores a new object, filling uid, resourceVersion, creationTimestamp, generation and
    /// managedFields. Returns the stored value.
    pub fn create(&mut self, kind: ResourceKind, value: Value) -> Value {
        self.create_managed(kind, value, None)
    }

    /// Like [`Store::create`] with given field ownership (`None`: the seed manager owns all).
    pub fn create_managed(
        &mut self,
        kind: ResourceKind,
        mut value: Value,
        managed: Option<ManagedFields>,
    ) -> Value {
        let ns = value["metadata"]["namespace"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let name = value["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let now = now();
        value["metadata"]["uid"] = json!(self.next_uid(kind, &ns, &name));
        value["metadata"]["creationTimestamp"] = json!(now);
        if kind.is_workload() {
            value["metadata"]["generation"] = json!(1);
            objects::refresh_workload_status(&mut value, 0, &now);
        } else if kind.is_plain_object()
            && !matches!(kind, ResourceKind::ConfigMap | ResourceKind::Secret)
            && !kind.is_install_object()
        {
            value["metadata"]["generation"] = json!(1);
        }
        let managed = managed.unwrap_or_else(|| {
            let mut m = ManagedFields::default();
            m.record_update(
                &self.seed_manager,
                kind.api_version(),
                &now,
                &json!({}),
                &value,
            );
            m
        });
        self.commit(kind, &ns, &name, value, managed)
    }

    /// Stores `value` as the new state of an object (bumping resourceVersion) and returns it.
    pub fn commit(
        &mut self,
        kind: ResourceKind,
        ns: &str,
        name: &str,
        mut value: Value,
        managed: ManagedFields,
    ) -> Value {
        value["metadata"]["resourceVersion"] = json!(self.next_rv());
        if managed.entries.is_empty() {
            if let Some(m) = value["metadata"].as_object_mut() {
                m.remove("managedFields");
            }
        } else {
            value["metadata"]["managedFields"] = managed.to_json();
        }
        let previous = self.objects.insert(
            key(kind, ns, name),
            Stored {
                value: value.clone(),
                managed,
            },
        );
        let event_type = if previous.is_some() {
            "MODIFIED"
        } else {
            "ADDED"
        };
        self.record(
            kind,
            ns,
            event_type,
            value.clone(),
            previous.map(|p| p.value),
        );
        value
    }

    fn record(
        &mut self,
        kind: ResourceKind,
        ns: &str,
        event_type: &'static str,
        object: Value,
        previous: Option<Value>,
    ) {
        if self.events.len() == EVENT_HISTORY {
            self.events.pop_front();
        }
        self.events.push_back(Event {
            rv: self.rv,
            kind,
            namespace: if kind.namespaced() {
                ns.to_string()
            } else {
                String::new()
            },
            event_type,
            object,
            previous,
        });
        self.changes.send_replace(self.rv);
    }

    /// Events after `rv`; `None` if history no longer reaches back that far.
    pub fn events_since(&self, rv: u64) -> Option<Vec<Event>> {
        if let Some(first) = self.events.front()
            && self.events.len() == EVENT_HISTORY
            && first.rv > rv + 1
        {
            return None;
        }
        Some(self.events.iter().filter(|e| e.rv > rv).cloned().collect())
    }

    /// The oldest resourceVersion a watch can still resume from.
    pub fn oldest_resumable(&self) -> u64 {
        match self.events.front() {
            Some(first) if self.events.len() == EVENT_HISTORY => first.rv - 1,
            _ => 0,
        }
    }

    /// Restarts a container: restartCount + 1, `lastState` terminated, its log lines become the
    /// previous instance's. Returns the new restartCount.
    pub fn restart_container(
        &mut self,
        namespace: &str,
        pod: &str,
        container: &str,
    ) -> Option<u64> {
        let stored = self.get(ResourceKind::Pod, namespace, pod)?.clone();
        let mut value = stored.value.clone();
        let now = now();
        let cs = value["status"]["containerStatuses"]
            .as_array_mut()?
            .iter_mut()
            .find(|c| c["name"] == container)?;
        let count = cs["restartCount"].as_u64().unwrap_or(0) + 1;
        cs["restartCount"] = json!(count);
        let started = cs["state"]["running"]["startedAt"].clone();
        cs["lastState"] = json!({"terminated": {"exitCode": 1, "reason": "Error", "startedAt": started, "finishedAt": now}});
        cs["state"] = json!({"running": {"startedAt": now}});
        self.commit(ResourceKind::Pod, namespace, pod, value, stored.managed);
        self.logs.entry(namespace, pod, container).restart();
        Some(count)
    }

    /// Removes an object (and a pod's logs).
    pub fn delete(&mut self, kind: ResourceKind, ns: &str, name: &str) -> Option<Stored> {
        if kind == ResourceKind::Pod {
            self.logs.remove_pod(ns, name);
        }
        let removed = self.objects.remove(&key(kind, ns, name))?;
        let rv = self.next_rv();
        let mut last = removed.value.clone();
        last["metadata"]["resourceVersion"] = json!(rv);
        self.record(kind, ns, "DELETED", last, None);
        Some(removed)
    }

    /// Pods whose labels match the workload's selector, sorted by name.
    pub fn workload_pods(&self, kind: ResourceKind, ns: &str, name: &str) -> Vec<String> {
        let Some(w) = self.get(kind, ns, name) else {
            return vec![];
        };
        let want = w.value["spec"]["selector"]["matchLabels"].clone();
        let Some(want) = want.as_object() else {
            return vec![];
        };
        self.list(ResourceKind::Pod, Some(ns))
            .into_iter()
            .filter(|p| {
                want.iter()
                    .all(|(k, v)| p.value["metadata"]["labels"].get(k) == Some(v))
            })
            .filter_map(|p| p.value["metadata"]["name"].as_str().map(str::to_string))
            .collect()
    }

    /// Creates the running pods of a workload (one per replica) and refreshes its status.
    pub fn spawn_pods(&mut self, kind: ResourceKind, ns: &str, name: &str) -> Vec<String> {
        let Some(w) = self.get(kind, ns, name).map(|s| s.value.clone()) else {
            return vec![];
        };
        let replicas = w["spec"]["replicas"].as_u64().unwrap_or(1) as u32;
        let mut names = vec![];
        for i in 0..replicas {
            let ip = self.next_ip();
            let pod = objects::workload_pod(&w, i, NODE_NAME, &ip, &now());
            let pod_name = pod["metadata"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            if self.get(ResourceKind::Pod, ns, &pod_name).is_none() {
                self.create(ResourceKind::Pod, pod);
            }
            names.push(pod_name);
        }
        self.refresh_status(kind, ns, name);
        names
    }

    /// Brings a workload's pod count to `spec.replicas`: surplus pods (the last by name, or by
    /// ordinal for StatefulSets) go, missing ones are created from the current template.
    pub fn scale_pods(&mut self, kind: ResourceKind, ns: &str, name: &str) -> Vec<String> {
        let Some(w) = self.get(kind, ns, name).map(|s| s.value.clone()) else {
            return vec![];
        };
        let want = w["spec"]["replicas"].as_u64().unwrap_or(1) as usize;
        let mut have = self.workload_pods(kind, ns, name);
        if kind == ResourceKind::StatefulSet {
            have.sort_by_key(|p| p.rsplit('-').next().and_then(|i| i.parse::<u64>().ok()));
        }
        for surplus in have.split_off(want.min(have.len())) {
            self.delete(ResourceKind::Pod, ns, &surplus);
        }
        let mut index = 0;
        while have.len() < want {
            let ip = self.next_ip();
            let pod = objects::workload_pod(&w, index, NODE_NAME, &ip, &now());
            let pod_name = pod["metadata"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            if self.get(ResourceKind::Pod, ns, &pod_name).is_none() {
                self.create(ResourceKind::Pod, pod);
                have.push(pod_name);
            }
            index += 1;
        }
        self.refresh_status(kind, ns, name);
        have
    }

    /// Replaces a workload's pods with new ones from its current template (a finished rollout).
    pub fn rollout(&mut self, kind: ResourceKind, ns: &str, name: &str) -> Vec<String> {
        for pod in self.workload_pods(kind, ns, name) {
            self.delete(ResourceKind::Pod, ns, &pod);
        }
        self.spawn_pods(kind, ns, name)
    }

    /// Recomputes a workload's status from its pods without bumping its resourceVersion
    /// unless the status changed.
    pub fn refresh_status(&mut self, kind: ResourceKind, ns: &str, name: &str) {
        let ready = self
            .workload_pods(kind, ns, name)
            .iter()
            .filter(|p| {
                self.get(ResourceKind::Pod, ns, p)
                    .is_some_and(|s| s.value["status"]["phase"] == "Running")
            })
            .count() as u64;
        let Some(stored) = self.get(kind, ns, name).cloned() else {
            return;
        };
        let mut value = stored.value.clone();
        objects::refresh_workload_status(&mut value, ready, &now());
        let strip = |v: &Value| {
            let mut v = v["status"].clone();
            if let Some(cs) = v["conditions"].as_array_mut() {
                for c in cs {
                    if let Some(m) = c.as_object_mut() {
                        m.remove("lastUpdateTime");
                    }
                }
            }
            v
        };
        if strip(&value) != strip(&stored.value) {
            self.commit(kind, ns, name, value, stored.managed);
        }
    }
}

impl Default for Store {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::seed::{PodSeed, WorkloadSeed};

    fn seed() -> Seed {
        Seed {
            namespaces: vec!["ml".into()],
            workloads: vec![
                WorkloadSeed::deployment("ml", "trainer")
                    .replicas(2)
                    .log("trainer", "hello"),
            ],
            pods: vec![PodSeed::new("other", "solo")],
            ..Seed::default()
        }
    }

    #[test]
    fn seeding_creates_namespaces_objects_and_pods() {
        let s = Store::from_seed(&seed(), Utc::now()).unwrap();
        for ns in ["default", "ml", "other"] {
            assert!(s.namespace_exists(ns), "{ns}");
        }
        let pods = s.workload_pods(ResourceKind::Deployment, "ml", "trainer");
        assert_eq!(pods.len(), 2);
        assert_eq!(
            s.logs.get("ml", &pods[0], "trainer").unwrap().lines[0].text,
            "hello"
        );
        let d = &s
            .get(ResourceKind::Deployment, "ml", "trainer")
            .unwrap()
            .value;
        assert_eq!(d["status"]["readyReplicas"], 2);
        assert_eq!(d["metadata"]["generation"], 1);
        assert_eq!(
            d["metadata"]["managedFields"][0]["manager"],
            "kube-sim-seed"
        );
        let rvs: Vec<u64> = s
            .list(ResourceKind::Pod, None)
            .iter()
            .map(|p| {
                p.value["metadata"]["resourceVersion"]
                    .as_str()
                    .unwrap()
                    .parse()
                    .unwrap()
            })
            .collect();
        assert!(
            rvs.iter()
                .all(|rv| *rv > 1000 && *rv <= s.resource_version())
        );
    }

    #[test]
    fn uids_are_unique() {
        let s = Store::from_seed(&seed(), Utc::now()).unwrap();
        let mut uids: Vec<String> = ResourceKind::ALL
            .iter()
            .flat_map(|k| s.list(*k, None))
            .map(|o| o.value["metadata"]["uid"].as_str().unwrap().to_string())
            .collect();
        let n = uids.len();
        uids.sort();
        uids.dedup();
        assert_eq!(uids.len(), n);
    }

    #[test]
    fn duplicates_are_rejected() {
        let mut bad = seed();
        bad.workloads
            .push(WorkloadSeed::deployment("ml", "trainer"));
        assert!(
            Store::from_seed(&bad, Utc::now())
                .unwrap_err()
                .contains("duplicate")
        );
    }

    #[test]
    fn rollout_replaces_pods() {
        let mut s = Store::from_seed(&seed(), Utc::now()).unwrap();
        let before = s.workload_pods(ResourceKind::Deployment, "ml", "trainer");
        let stored = s
            .get(ResourceKind::Deployment, "ml", "trainer")
            .unwrap()
            .clone();
        let mut v = stored.value.clone();
        v["spec"]["template"]["metadata"]["annotations"] = json!({"k": "2"});
        s.commit(ResourceKind::Deployment, "ml", "trainer", v, stored.managed);
        let after = s.rollout(ResourceKind::Deployment, "ml", "trainer");
        assert_eq!(after.len(), 2);
        assert!(after.iter().all(|p| !before.contains(p)));
        assert_eq!(
            s.workload_pods(ResourceKind::Deployment, "ml", "trainer"),
            {
                let mut a = after.clone();
                a.sort();
                a
            }
        );
        let pod = &s.get(ResourceKind::Pod, "ml", &after[0]).unwrap().value;
        assert_eq!(pod["metadata"]["annotations"]["k"], "2");
    }
}
