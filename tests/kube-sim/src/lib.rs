//! `kube-sim`: an emulator of the slice of the Kubernetes API that ModeKeeper touches, for tests
//! and benchmarks on machines without a cluster.
//!
//! It serves discovery (legacy and aggregated), namespaces, pods and their logs, apps/v1
//! Deployments and StatefulSets, ConfigMaps, batch/v1 Jobs, kubeflow.org PyTorchJobs and
//! jobset.x-k8s.io JobSets (get, list, and PATCH as merge, strategic-merge, JSON patch or
//! server-side apply, with `dryRun=All`), what `kubectl modekeeper install` applies (namespaces,
//! ServiceAccounts, Services, RBAC roles and bindings: stored by server-side apply, never acted on), self-reviews for `kubectl auth can-i`, bearer-token
//! authentication with RBAC-style rules, Status errors shaped like the apiserver's, and
//! injectable faults. Its fidelity is checked by driving it with the real `kubectl`.
//!
//! It is not a cluster: there are no controllers beyond an instant "everything converged"
//! status, no watches, no creates or deletes through the API, and no persistence.
//!
//! ```no_run
//! use kube_sim::{KubeSim, Rule};
//! let sim = KubeSim::builder()
//!     .namespace("ml")
//!     .deployment("ml", "trainer", [("modekeeper/knob.grad_accum_steps", "4")])
//!     .token("t0", "alice", [Rule::allow(["get", "list", "patch"], "apps", ["deployments"])])
//!     .start_blocking()
//!     .unwrap();
//! sim.write_kubeconfig("/tmp/kubeconfig", "t0").unwrap();
//! println!("{}", sim.url());
//! ```

pub mod auth;
mod builder;
pub mod faults;
mod handle;
pub mod kubeconfig;
pub mod logs;
pub mod managed;
pub mod mutate;
pub mod objects;
pub mod patch;
pub mod proto;
pub mod request_info;
pub mod resource;
pub mod seed;
pub mod selector;
mod server;
mod state;
pub mod status;
pub mod store;
pub mod tls;
pub mod validate;

pub use auth::Rule;
pub use builder::KubeSimBuilder;
pub use faults::{Fault, FaultAction, FaultId};
pub use handle::KubeSim;
pub use kubeconfig::KubeconfigOptions;
pub use resource::ResourceKind;
pub use seed::{
    ContainerSeed, LogLineSeed, ObjectSeed, PodSeed, Rejection, Seed, TokenSeed, ValidationConfig,
    WorkloadSeed,
};
pub use state::RequestRecord;
pub use status::ApiError;
