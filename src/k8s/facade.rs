//! The synchronous face of the k8s module for the (synchronous) CLI: a [`ClusterApi`] together with
//! the single-threaded tokio runtime its calls run on. Concurrency inside one verification comes from
//! polling many requests at once on that thread, not from threads.

use std::collections::BTreeMap;
use std::future::Future;

use super::verify::{VerifyOutcome, verify_plan};
use super::{
    ClusterApi, ClusterError, ClusterIdentity, ConfigError, ConnectOptions, KnobReadError,
    KubeCluster, ServerVersion, knobs,
};
use crate::plan::{Plan, Target};

/// A cluster connection usable from synchronous code.
pub struct Cluster<A = KubeCluster> {
    // Declared first so the client is dropped while its runtime still exists.
    api: A,
    rt: tokio::runtime::Runtime,
}

/// Why a connection could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// Flags or kubeconfig: an input error.
    #[error("{0}")]
    Config(#[from] ConfigError),
    #[error("cannot start the I/O runtime: {0}")]
    Runtime(#[from] std::io::Error),
}

fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
}

impl Cluster<KubeCluster> {
    /// Connects the way kubectl would with these flags. Makes no request yet.
    pub fn connect(opts: &ConnectOptions) -> Result<Cluster<KubeCluster>, ConnectError> {
        let rt = runtime()?;
        let api = rt.block_on(KubeCluster::connect(opts))?;
        Ok(Cluster { api, rt })
    }
}

impl Cluster<KubeCluster> {
    /// Server-side apply of one whole object (see [`KubeCluster::server_side_apply`]).
    pub fn server_side_apply(
        &self,
        collection_path: &str,
        name: &str,
        object: &serde_json::Value,
        dry_run: bool,
    ) -> Result<serde_json::Value, ClusterError> {
        self.rt.block_on(
            self.api
                .server_side_apply(collection_path, name, object, dry_run),
        )
    }
}

impl<A: ClusterApi> Cluster<A> {
    /// Wraps any implementation (tests use in-memory ones).
    pub fn with_api(api: A) -> std::io::Result<Cluster<A>> {
        Ok(Cluster {
            api,
            rt: runtime()?,
        })
    }

    pub fn api(&self) -> &A {
        &self.api
    }

    pub fn identity(&self) -> &ClusterIdentity {
        self.api.identity()
    }

    /// Runs any call of the interface to completion.
    pub fn block_on<F: Future>(&self, f: F) -> F::Output {
        self.rt.block_on(f)
    }

    pub fn server_version(&self) -> Result<ServerVersion, ClusterError> {
        self.rt.block_on(self.api.server_version())
    }

    /// Verifies a plan with at most `concurrency` items in flight.
    pub fn verify(&self, plan: &Plan, concurrency: usize) -> VerifyOutcome {
        self.rt.block_on(verify_plan(&self.api, plan, concurrency))
    }

    /// The target's current knob values and the name of its knobs ConfigMap.
    pub fn read_knobs_and_configmap(
        &self,
        target: &Target,
    ) -> Result<(BTreeMap<String, f64>, String), KnobReadError> {
        self.rt
            .block_on(knobs::read_knobs_and_configmap(&self.api, target))
    }

    /// The target's current knob values: its pod-template annotations and its knobs ConfigMap.
    pub fn read_current_knobs(
        &self,
        target: &Target,
    ) -> Result<BTreeMap<String, f64>, KnobReadError> {
        self.rt
            .block_on(knobs::read_current_knobs(&self.api, target))
    }
}
