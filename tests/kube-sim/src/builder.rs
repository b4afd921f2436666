//! Collecting a cluster description and starting the server, on the caller's tokio runtime or
//! on a runtime of its own.

use std::collections::BTreeMap;
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, RwLock};

use chrono::Utc;
use tokio::net::TcpListener;

use crate::auth::{AuthConfig, Rule};
use crate::faults::{Fault, FaultSet};
use crate::handle::{Guard, KubeSim};
use crate::resource::ResourceKind;
use crate::seed::{AnonymousSeed, PodSeed, Rejection, Seed, TokenSeed, WorkloadSeed};
use crate::state::Shared;
use crate::store::Store;

const DEFAULT_SERVER_VERSION: &str = "v1.32.4+kube-sim";

/// Collects a [`Seed`] and starts the server.
#[derive(Debug, Clone)]
pub struct KubeSimBuilder {
    seed: Seed,
    addr: SocketAddr,
}

impl Default for KubeSimBuilder {
    fn default() -> Self {
        KubeSimBuilder {
            seed: Seed::default(),
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
        }
    }
}

fn pairs<K: Into<String>, V: Into<String>>(
    items: impl IntoIterator<Item = (K, V)>,
) -> BTreeMap<String, String> {
    items
        .into_iter()
        .map(|(k, v)| (k.into(), v.into()))
        .collect()
}

impl KubeSimBuilder {
    /// Starts from a whole seed (replacing what was collected so far).
    pub fn seed(mut self, seed: Seed) -> Self {
        self.seed = seed;
        self
    }

    /// Address to listen on (default `127.0.0.1:0`, an ephemeral port).
    pub fn bind(mut self, addr: SocketAddr) -> Self {
        self.addr = addr;
        self
    }

    pub fn namespace(mut self, name: impl Into<String>) -> Self {
        self.seed.namespaces.push(name.into());
        self
    }

    /// A Deployment (selector `app=<name>`, one replica, container `trainer`) whose
    /// annotations go on both the Deployment and its pod template, as ModeKeeper's plans do.
    pub fn deployment<K: Into<String>, V: Into<String>>(
        self,
        namespace: &str,
        name: &str,
        annotations: impl IntoIterator<Item = (K, V)>,
    ) -> Self {
        let a = pairs(annotations);
        let mut w = WorkloadSeed::deployment(namespace, name);
        w.annotations = a.clone();
        w.template_annotations = a;
        self.workload(w)
    }

    /// Like [`KubeSimBuilder::deployment`], for a StatefulSet.
    pub fn statefulset<K: Into<String>, V: Into<String>>(
        self,
        namespace: &str,
        name: &str,
        annotations: impl IntoIterator<Item = (K, V)>,
    ) -> Self {
        let a = pairs(annotations);
        let mut w = WorkloadSeed::statefulset(namespace, name);
        w.annotations = a.clone();
        w.template_annotations = a;
        self.workload(w)
    }

    pub fn workload(mut self, workload: WorkloadSeed) -> Self {
        self.seed.workloads.push(workload);
        self
    }

    pub fn pod(mut self, pod: PodSeed) -> Self {
        self.seed.pods.push(pod);
        self
    }

    /// A bearer token for `user` with these rules.
    pub fn token(mut self, token: &str, user: &str, rules: impl IntoIterator<Item = Rule>) -> Self {
        self.seed.tokens.push(TokenSeed {
            token: token.into(),
            user: user.into(),
            groups: vec![],
            rules: rules.into_iter().collect(),
        });
        self
    }

    /// Serve requests without a token as `system:anonymous` with these rules.
    pub fn anonymous(mut self, rules: impl IntoIterator<Item = Rule>) -> Self {
        self.seed.anonymous = Some(AnonymousSeed {
            rules: rules.into_iter().collect(),
        });
        self
    }

    pub fn fault(mut self, fault: Fault) -> Self {
        self.seed.faults.push(fault);
        self
    }

    pub fn reject_patches(mut self, kind: ResourceKind, namespace: &str, name: &str) -> Self {
        self.seed
            .validation
            .reject
            .push(Rejection::new(kind, namespace, name));
        self
    }

    pub fn annotation_values_must_be_strings(mut self, yes: bool) -> Self {
        self.seed.validation.annotation_values_must_be_strings = yes;
        self
    }

    pub fn server_version(mut self, git_version: &str) -> Self {
        self.seed.server_version = Some(git_version.into());
        self
    }

    pub fn seed_field_manager(mut self, manager: &str) -> Self {
        self.seed.seed_field_manager = Some(manager.into());
        self
    }

    /// Replace a workload's pods when its pod template changes.
    pub fn rollout_on_template_change(mut self, yes: bool) -> Self {
        self.seed.rollout_on_template_change = yes;
        self
    }

    /// A ConfigMap, Secret, Job, PyTorchJob or JobSet, stored as given (`metadata.name` and
    /// `metadata.namespace` required; `apiVersion`/`kind` are filled in).
    pub fn object(mut self, kind: ResourceKind, object: serde_json::Value) -> Self {
        self.seed
            .objects
            .push(crate::seed::ObjectSeed { kind, object });
        self
    }

    /// Serve the cluster as if the PyTorchJob and JobSet CRDs were not installed.
    pub fn crds_absent(mut self, yes: bool) -> Self {
        self.seed.crds_absent = yes;
        self
    }

    /// How often watches that allow bookmarks get one (default 60 s).
    pub fn bookmark_interval(mut self, interval: std::time::Duration) -> Self {
        self.seed.bookmark_interval_ms = Some(interval.as_millis() as u64);
        self
    }

    fn shared(&self, local: SocketAddr) -> io::Result<Arc<Shared>> {
        let store = Store::from_seed(&self.seed, Utc::now())
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        let mut faults = FaultSet::default();
        for f in &self.seed.faults {
            faults.add(f.clone());
        }
        Ok(Arc::new(Shared {
            store: Mutex::new(store),
            auth: RwLock::new(AuthConfig {
                tokens: self.seed.tokens.clone(),
                anonymous: self.seed.anonymous.clone(),
            }),
            faults: Mutex::new(faults),
            requests: Mutex::new(vec![]),
            next_request_id: std::sync::atomic::AtomicU64::new(1),
            server_version: self
                .seed
                .server_version
                .clone()
                .unwrap_or_else(|| DEFAULT_SERVER_VERSION.into()),
            server_address: local.to_string(),
            crds_absent: self.seed.crds_absent,
            bookmark_interval: std::time::Duration::from_millis(
                self.seed.bookmark_interval_ms.unwrap_or(60_000),
            ),
        }))
    }

    /// Starts serving on the current tokio runtime. The server stops when the handle drops.
    /// The runtime must keep running while clients talk to it: in a test that blocks its thread
    /// (e.g. on `std::process::Command`), use [`KubeSimBuilder::start_blocking`].
    pub async fn start(self) -> io::Result<KubeSim> {
        let listener = TcpListener::bind(self.addr).await?;
        let addr = listener.local_addr()?;
        let shared = self.shared(addr)?;
        let tls = crate::tls::material().map_err(io::Error::other)?;
        let task = tokio::spawn(crate::server::serve(
            listener,
            shared.clone(),
            Some(tls.acceptor.clone()),
        ));
        Ok(KubeSim::new(shared, addr, tls, Guard::Task(task)))
    }

    /// Starts serving on a runtime of its own (two worker threads), for synchronous tests.
    /// Safe to call from inside another tokio runtime too.
    pub fn start_blocking(self) -> io::Result<KubeSim> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("kube-sim")
            .enable_all()
            .build()?;
        let std_listener = std::net::TcpListener::bind(self.addr)?;
        std_listener.set_nonblocking(true)?;
        let addr = std_listener.local_addr()?;
        let listener = {
            let _context = rt.enter();
            TcpListener::from_std(std_listener)?
        };
        let shared = self.shared(addr)?;
        let tls = crate::tls::material().map_err(io::Error::other)?;
        rt.spawn(crate::server::serve(
            listener,
            shared.clone(),
            Some(tls.acceptor.clone()),
        ));
        Ok(KubeSim::new(shared, addr, tls, Guard::Runtime(Some(rt))))
    }
}
