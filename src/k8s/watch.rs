//! Watching the workloads that opt in (by a label selector), of one kind, in one namespace or all,
//! with kube-runtime's watcher: list, then watch from the list's resourceVersion with bookmarks,
//! relisting after 410 Gone, backing off on errors. What the controller follows; it sees
//! [`WorkloadChange`]s of [`Workload`]s, never kube-rs types.

use futures_util::{Stream, StreamExt};
use kube::api::{Api, ApiResource, DynamicObject};
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};

use super::{ClusterError, ClusterErrorKind, KubeCluster, Workload, kinds};
use crate::plan::{Target, WorkloadKind};

/// One step of a workload watch.
#[derive(Debug, Clone, PartialEq)]
pub enum WorkloadChange {
    /// A (re)list begins: the workloads that follow, up to [`WorkloadChange::ResyncDone`], are
    /// all there are; any other one known before is gone.
    ResyncStarted,
    /// A workload that matches, as it is now (during a resync or after).
    Applied(Workload),
    /// A workload that was deleted or no longer matches the selector.
    Deleted(Target),
    ResyncDone,
}

fn api_resource(kind: WorkloadKind) -> ApiResource {
    let spec = kinds::spec(kind);
    ApiResource {
        group: spec.group.to_string(),
        version: spec.version.to_string(),
        api_version: spec.api_version(),
        kind: kind.as_str().to_string(),
        plural: spec.plural.to_string(),
    }
}

fn target_of(kind: WorkloadKind, obj: &DynamicObject) -> Result<Target, ClusterError> {
    let ns = obj.metadata.namespace.as_deref().unwrap_or_default();
    let name = obj.metadata.name.as_deref().unwrap_or_default();
    Target::new(ns, name, kind).map_err(|e| {
        ClusterError::new(
            ClusterErrorKind::Other,
            format!(
                "the server sent a {} without a valid name: {e}",
                kind.as_str()
            ),
        )
    })
}

fn workload_of(kind: WorkloadKind, obj: DynamicObject) -> Result<Workload, ClusterError> {
    let target = target_of(kind, &obj)?;
    let mut value = serde_json::to_value(&obj).map_err(|e| {
        ClusterError::new(
            ClusterErrorKind::Other,
            format!("re-encoding a {}: {e}", kind.as_str()),
        )
    })?;
    // Watch and list items may come without their type; a GET has it.
    value["apiVersion"] = serde_json::Value::String(kinds::spec(kind).api_version());
    value["kind"] = serde_json::Value::String(kind.as_str().into());
    Workload::from_object(&target, value)
}

impl KubeCluster {
    /// Follows the workloads of `kind` matching `label_selector` (e.g.
    /// `modekeeper.io/enabled=true`) in `namespace` (`None`: all namespaces). The stream never
    /// ends by itself; errors are items (the watcher retries with a backoff after each).
    pub fn watch_workloads(
        &self,
        kind: WorkloadKind,
        namespace: Option<&str>,
        label_selector: &str,
    ) -> impl Stream<Item = Result<WorkloadChange, ClusterError>> + Send + use<> {
        let ar = api_resource(kind);
        let api: Api<DynamicObject> = match namespace {
            Some(ns) => Api::namespaced_with(self.watch_client(), ns, &ar),
            None => Api::all_with(self.watch_client(), &ar),
        };
        let what = format!(
            "WATCH {} ({label_selector})",
            kinds::spec(kind).qualified_resource()
        );
        let cfg = watcher::Config::default().labels(label_selector);
        watcher::watcher(api, cfg)
            .default_backoff()
            .map(move |ev| match ev {
                Ok(Event::Init) => Ok(WorkloadChange::ResyncStarted),
                Ok(Event::InitDone) => Ok(WorkloadChange::ResyncDone),
                Ok(Event::InitApply(o) | Event::Apply(o)) => {
                    workload_of(kind, o).map(WorkloadChange::Applied)
                }
                Ok(Event::Delete(o)) => target_of(kind, &o).map(WorkloadChange::Deleted),
                Err(e) => Err(ClusterError::new(
                    ClusterErrorKind::Other,
                    format!("{what}: {e}"),
                )),
            })
    }
}
