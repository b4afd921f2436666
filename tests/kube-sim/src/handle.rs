//! The running emulator as tests see it: point clients at it, read and change its state,
//! inject faults, inspect requests.

use std::io;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde_json::{Value, json};

use crate::auth::{AuthConfig, Rule};
use crate::builder::KubeSimBuilder;
use crate::faults::{Fault, FaultId};
use crate::kubeconfig::{self, KubeconfigOptions};
use crate::logs::LogLine;
use crate::objects;
use crate::resource::ResourceKind;
use crate::seed::{AnonymousSeed, PodSeed, Rejection, TokenSeed, WorkloadSeed};
use crate::state::{RequestRecord, Shared, lock};
use crate::store::{self, NODE_NAME, Store};

#[derive(Debug)]
pub(crate) enum Guard {
    Task(tokio::task::JoinHandle<()>),
    Runtime(Option<tokio::runtime::Runtime>),
}

impl Drop for Guard {
    fn drop(&mut self) {
        match self {
            Guard::Task(t) => t.abort(),
            Guard::Runtime(rt) => {
                if let Some(rt) = rt.take() {
                    rt.shutdown_background();
                }
            }
        }
    }
}

/// A running emulator. Every method is synchronous and safe to call from any thread.
#[derive(Debug)]
pub struct KubeSim {
    shared: Arc<Shared>,
    addr: SocketAddr,
    tls: crate::tls::TlsMaterial,
    _guard: Guard,
}

impl KubeSim {
    pub(crate) fn new(
        shared: Arc<Shared>,
        addr: SocketAddr,
        tls: crate::tls::TlsMaterial,
        guard: Guard,
    ) -> Self {
        KubeSim {
            shared,
            addr,
            tls,
            _guard: guard,
        }
    }

    pub fn builder() -> KubeSimBuilder {
        KubeSimBuilder::default()
    }

    /// `http://127.0.0.1:PORT` (plain HTTP; the same port also speaks TLS).
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// `https://127.0.0.1:PORT`; trust [`KubeSim::ca_pem`] to verify it.
    pub fn https_url(&self) -> String {
        format!("https://{}", self.addr)
    }

    /// The CA certificate (PEM) that issued the server certificate.
    pub fn ca_pem(&self) -> &str {
        &self.tls.ca_pem
    }

    /// The CA certificate (DER).
    pub fn ca_der(&self) -> &[u8] {
        &self.tls.ca_der
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops the server (also done on drop).
    pub fn shutdown(self) {
        drop(self);
    }

    // ---- kubeconfig -------------------------------------------------------------------

    /// A kubeconfig (YAML) whose current context uses this server: `https://` with the CA
    /// inline, or `http://` when `opts.plain_http` is set.
    pub fn kubeconfig(&self, opts: &KubeconfigOptions) -> String {
        if opts.plain_http {
            kubeconfig::render(&self.url(), None, opts)
        } else {
            kubeconfig::render(&self.https_url(), Some(self.ca_pem()), opts)
        }
    }

    /// Writes a kubeconfig with one cluster, context and user (bearer `token`). The server is
    /// `https://127.0.0.1:PORT` with the CA inline, because kubectl sends kubeconfig
    /// credentials only over TLS.
    pub fn write_kubeconfig(&self, path: impl AsRef<Path>, token: &str) -> io::Result<()> {
        self.write_kubeconfig_with(
            path,
            &KubeconfigOptions {
                token: Some(token.into()),
                ..KubeconfigOptions::default()
            },
        )
    }

    /// Writes a kubeconfig whose user has no credentials, pointing at `http://` (with an
    /// `https://` server and no credentials kubectl prompts for a username instead of calling).
    pub fn write_kubeconfig_anonymous(&self, path: impl AsRef<Path>) -> io::Result<()> {
        self.write_kubeconfig_with(
            path,
            &KubeconfigOptions {
                plain_http: true,
                ..KubeconfigOptions::default()
            },
        )
    }

    pub fn write_kubeconfig_with(
        &self,
        path: impl AsRef<Path>,
        opts: &KubeconfigOptions,
    ) -> io::Result<()> {
        std::fs::write(path, self.kubeconfig(opts))
    }

    // ---- objects ----------------------------------------------------------------------

    fn store(&self) -> std::sync::MutexGuard<'_, Store> {
        lock(&self.shared.store)
    }

    /// The stored object (as a GET would return it).
    pub fn get(&self, kind: ResourceKind, namespace: &str, name: &str) -> Option<Value> {
        self.store()
            .get(kind, namespace, name)
            .map(|s| s.value.clone())
    }

    pub fn deployment(&self, namespace: &str, name: &str) -> Option<Value> {
        self.get(ResourceKind::Deployment, namespace, name)
    }

    pub fn statefulset(&self, namespace: &str, name: &str) -> Option<Value> {
        self.get(ResourceKind::StatefulSet, namespace, name)
    }

    pub fn pod(&self, namespace: &str, name: &str) -> Option<Value> {
        self.get(ResourceKind::Pod, namespace, name)
    }

    pub fn namespace_exists(&self, name: &str) -> bool {
        self.store().namespace_exists(name)
    }

    /// Objects of a kind (`namespace = None`: all namespaces), sorted by namespace and name.
    pub fn list(&self, kind: ResourceKind, namespace: Option<&str>) -> Vec<Value> {
        self.store()
            .list(kind, namespace)
            .into_iter()
            .map(|s| s.value.clone())
            .collect()
    }

    /// `spec.template.metadata.annotations[key]` of a workload.
    pub fn template_annotation(
        &self,
        kind: ResourceKind,
        namespace: &str,
        name: &str,
        key: &str,
    ) -> Option<String> {
        self.get(kind, namespace, name)?["spec"]["template"]["metadata"]["annotations"][key]
            .as_str()
            .map(str::to_string)
    }

    /// `metadata.annotations[key]` of any object.
    pub fn annotation(
        &self,
        kind: ResourceKind,
        namespace: &str,
        name: &str,
        key: &str,
    ) -> Option<String> {
        self.get(kind, namespace, name)?["metadata"]["annotations"][key]
            .as_str()
            .map(str::to_string)
    }

    /// `metadata.resourceVersion` of an object, as a number.
    pub fn object_resource_version(
        &self,
        kind: ResourceKind,
        namespace: &str,
        name: &str,
    ) -> Option<u64> {
        self.get(kind, namespace, name)?["metadata"]["resourceVersion"]
            .as_str()?
            .parse()
            .ok()
    }

    /// The latest resourceVersion handed out.
    pub fn resource_version(&self) -> u64 {
        self.store().resource_version()
    }

    /// Names of the pods a workload selects, sorted.
    pub fn pod_names(&self, kind: ResourceKind, namespace: &str, name: &str) -> Vec<String> {
        self.store().workload_pods(kind, namespace, name)
    }

    pub fn add_namespace(&self, name: &str) {
        self.store().ensure_namespace(name);
    }

    /// Adds a workload (and its namespace and pods); returns the pod names.
    pub fn add_workload(&self, seed: WorkloadSeed) -> io::Result<Vec<String>> {
        let mut s = self.store();
        if s.get(seed.kind, &seed.namespace, &seed.name).is_some() {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!("{} {}/{} exists", seed.kind, seed.namespace, seed.name),
            ));
        }
        s.ensure_namespace(&seed.namespace);
        s.create(seed.kind, objects::workload(&seed));
        let pods = s.spawn_pods(seed.kind, &seed.namespace, &seed.name);
        for pod in &pods {
            for (container, lines) in &seed.logs {
                s.seed_logs(&seed.namespace, pod, container, lines, Utc::now())
                    .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
            }
        }
        Ok(pods)
    }

    /// Adds a ConfigMap, Secret, Job, PyTorchJob or JobSet as `.object(..)` seeds it; returns it
    /// as stored. An existing name is an error.
    pub fn add_object(&self, kind: ResourceKind, object: Value) -> io::Result<Value> {
        self.store()
            .add_object(kind, object)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))
    }

    /// Adds a stand-alone pod (and its namespace).
    pub fn add_pod(&self, seed: PodSeed) -> io::Result<()> {
        let mut s = self.store();
        if s.get(ResourceKind::Pod, &seed.namespace, &seed.name)
            .is_some()
        {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!("pod {}/{} exists", seed.namespace, seed.name),
            ));
        }
        s.ensure_namespace(&seed.namespace);
        let ip = s.next_ip();
        s.create(
            ResourceKind::Pod,
            objects::standalone_pod(&seed, NODE_NAME, &ip, &store::now()),
        );
        for (container, lines) in &seed.logs {
            s.seed_logs(&seed.namespace, &seed.name, container, lines, Utc::now())
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        }
        Ok(())
    }

    /// Deletes an object; deleting a namespace deletes everything in it.
    pub fn delete(&self, kind: ResourceKind, namespace: &str, name: &str) -> bool {
        let mut s = self.store();
        if kind == ResourceKind::Namespace {
            for k in ResourceKind::ALL.into_iter().filter(|k| k.namespaced()) {
                let names: Vec<String> = s
                    .list(k, Some(name))
                    .iter()
                    .filter_map(|o| o.value["metadata"]["name"].as_str().map(str::to_string))
                    .collect();
                for n in names {
                    s.delete(k, name, &n);
                }
            }
        }
        s.delete(kind, namespace, name).is_some()
    }

    /// Changes an object out of band, as another client would (bumps resourceVersion, and
    /// `manager` takes ownership of the changed fields). Returns the new object.
    pub fn modify(
        &self,
        kind: ResourceKind,
        namespace: &str,
        name: &str,
        manager: &str,
        f: impl FnOnce(&mut Value),
    ) -> Option<Value> {
        let mut s = self.store();
        let stored = s.get(kind, namespace, name)?.clone();
        let mut value = stored.value.clone();
        f(&mut value);
        let mut managed = stored.managed.clone();
        managed.record_update(
            manager,
            kind.api_version(),
            &store::now(),
            &stored.value,
            &value,
        );
        if kind.is_workload() && value["spec"] != stored.value["spec"] {
            let g = stored.value["metadata"]["generation"].as_i64().unwrap_or(1);
            value["metadata"]["generation"] = json!(g + 1);
        }
        Some(s.commit(kind, namespace, name, value, managed))
    }

    // ---- pods and logs ----------------------------------------------------------------

    /// Appends a log line stamped now; followers receive it.
    pub fn append_log(&self, namespace: &str, pod: &str, container: &str, line: &str) {
        self.append_log_at(namespace, pod, container, Utc::now(), line);
    }

    pub fn append_log_at(
        &self,
        namespace: &str,
        pod: &str,
        container: &str,
        ts: DateTime<Utc>,
        line: &str,
    ) {
        self.store()
            .logs
            .entry(namespace, pod, container)
            .append(LogLine {
                ts,
                text: line.to_string(),
            });
    }

    pub fn append_logs<S: AsRef<str>>(
        &self,
        namespace: &str,
        pod: &str,
        container: &str,
        lines: impl IntoIterator<Item = S>,
    ) {
        let mut s = self.store();
        let log = s.logs.entry(namespace, pod, container);
        for line in lines {
            log.append(LogLine {
                ts: Utc::now(),
                text: line.as_ref().to_string(),
            });
        }
    }

    /// The lines a container has logged so far (current instance).
    pub fn log_lines(&self, namespace: &str, pod: &str, container: &str) -> Vec<String> {
        self.store()
            .logs
            .get(namespace, pod, container)
            .map(|l| l.lines.iter().map(|l| l.text.clone()).collect())
            .unwrap_or_default()
    }

    /// The container exited: follow streams end after the lines already logged.
    pub fn close_log(&self, namespace: &str, pod: &str, container: &str) {
        self.store().logs.entry(namespace, pod, container).close();
    }

    /// Restarts a container: restartCount + 1, its lines become `previous=true` logs, follow
    /// streams end. Returns the new restartCount (None if the pod or container is unknown).
    pub fn restart_container(&self, namespace: &str, pod: &str, container: &str) -> Option<u64> {
        self.store().restart_container(namespace, pod, container)
    }

    /// Sets `status.phase` (and container states to match) of a pod.
    pub fn set_pod_phase(&self, namespace: &str, pod: &str, phase: &str) -> bool {
        let mut s = self.store();
        let Some(stored) = s.get(ResourceKind::Pod, namespace, pod).cloned() else {
            return false;
        };
        let mut value = stored.value.clone();
        value["status"]["phase"] = json!(phase);
        let now = store::now();
        let running = phase == "Running";
        if let Some(cs) = value["status"]["containerStatuses"].as_array_mut() {
            for c in cs {
                c["ready"] = json!(running);
                c["started"] = json!(running);
                c["state"] = match phase {
                    "Running" => json!({"running": {"startedAt": now}}),
                    "Pending" => json!({"waiting": {"reason": "ContainerCreating"}}),
                    "Succeeded" => {
                        json!({"terminated": {"exitCode": 0, "reason": "Completed", "finishedAt": now}})
                    }
                    _ => {
                        json!({"terminated": {"exitCode": 1, "reason": "Error", "finishedAt": now}})
                    }
                };
            }
        }
        s.commit(ResourceKind::Pod, namespace, pod, value, stored.managed);
        let owners: Vec<(ResourceKind, String)> =
            [ResourceKind::Deployment, ResourceKind::StatefulSet]
                .into_iter()
                .flat_map(|k| {
                    s.list(k, Some(namespace)).into_iter().filter_map(move |w| {
                        w.value["metadata"]["name"]
                            .as_str()
                            .map(|n| (k, n.to_string()))
                    })
                })
                .collect();
        for (k, n) in owners {
            s.refresh_status(k, namespace, &n);
        }
        true
    }

    // ---- authentication and authorization ---------------------------------------------

    fn auth(&self) -> std::sync::RwLockWriteGuard<'_, AuthConfig> {
        self.shared.auth.write().unwrap_or_else(|e| e.into_inner())
    }

    /// Adds (or replaces) a token.
    pub fn add_token(&self, token: &str, user: &str, rules: impl IntoIterator<Item = Rule>) {
        let mut a = self.auth();
        a.tokens.retain(|t| t.token != token);
        a.tokens.push(TokenSeed {
            token: token.into(),
            user: user.into(),
            groups: vec![],
            rules: rules.into_iter().collect(),
        });
    }

    /// Replaces a token's rules; false if the token is unknown.
    pub fn set_rules(&self, token: &str, rules: impl IntoIterator<Item = Rule>) -> bool {
        match self.auth().token_mut(token) {
            Some(t) => {
                t.rules = rules.into_iter().collect();
                true
            }
            None => false,
        }
    }

    pub fn remove_token(&self, token: &str) -> bool {
        let mut a = self.auth();
        let before = a.tokens.len();
        a.tokens.retain(|t| t.token != token);
        before != a.tokens.len()
    }

    /// `Some(rules)`: serve tokenless requests as `system:anonymous`; `None`: answer them 401.
    pub fn set_anonymous(&self, rules: Option<Vec<Rule>>) {
        self.auth().anonymous = rules.map(|rules| AnonymousSeed { rules });
    }

    // ---- faults and validation ---------------------------------------------------------

    pub fn inject_fault(&self, fault: Fault) -> FaultId {
        lock(&self.shared.faults).add(fault)
    }

    pub fn remove_fault(&self, id: FaultId) -> bool {
        lock(&self.shared.faults).remove(id)
    }

    pub fn clear_faults(&self) {
        lock(&self.shared.faults).clear();
    }

    /// How many requests a fault has affected.
    pub fn fault_fired(&self, id: FaultId) -> u64 {
        lock(&self.shared.faults).fired(id).unwrap_or(0)
    }

    /// Every PATCH of this object fails with 422 Invalid (`field: Invalid value: ...: message`).
    pub fn reject_patches(&self, kind: ResourceKind, namespace: &str, name: &str, message: &str) {
        let mut r = Rejection::new(kind, namespace, name);
        r.message = message.into();
        self.store().validation.reject.push(r);
    }

    pub fn allow_patches(&self, kind: ResourceKind, namespace: &str, name: &str) {
        self.store()
            .validation
            .reject
            .retain(|r| !(r.kind == kind && r.namespace == namespace && r.name == name));
    }

    pub fn set_annotation_values_must_be_strings(&self, yes: bool) {
        self.store().validation.annotation_values_must_be_strings = yes;
    }

    // ---- request log -------------------------------------------------------------------

    pub fn requests(&self) -> Vec<RequestRecord> {
        lock(&self.shared.requests).clone()
    }

    pub fn clear_requests(&self) {
        lock(&self.shared.requests).clear();
    }

    /// Requests with this method (`*` for any) whose path matches the glob (see [`Fault`]).
    pub fn count_requests(&self, method: &str, path_glob: &str) -> usize {
        lock(&self.shared.requests)
            .iter()
            .filter(|r| {
                (method == "*" || r.method.eq_ignore_ascii_case(method))
                    && crate::faults::glob_match(path_glob, &r.path)
            })
            .count()
    }
}
