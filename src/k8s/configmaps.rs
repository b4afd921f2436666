//! ConfigMaps and Secrets as plain data, and the opted-in workloads of a kind: what the controller
//! keeps its state in (one ConfigMap per workload), reads its settings and license from, and what
//! `fleet` lists.
//!
//! Every call is bounded by the connection's request timeout and fails with a classified
//! [`ClusterError`]; "absent" is `Ok(None)`. Writes carry the resourceVersion they were read at, so
//! two replicas writing the same ConfigMap cannot both win: the second gets a 409
//! ([`ClusterErrorKind::Conflict`]). What is read here is only decoded, never trusted: the callers
//! validate the contents.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, ListParams, PostParams};
use kube::core::Request;
use serde_json::Value;

use super::{ClusterError, ClusterErrorKind, KubeCluster, Workload, kinds};
use crate::plan::{Target, WorkloadKind};

/// A ConfigMap's identity, version, metadata maps and string data (`binaryData` is not used by
/// ModeKeeper and not carried).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ConfigMapData {
    pub namespace: String,
    pub name: String,
    /// The version it was read at; `None` for one not stored yet.
    pub resource_version: Option<String>,
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
    pub data: BTreeMap<String, String>,
}

/// The most items one LIST page asks for (kubectl's default chunk size).
const LIST_PAGE: u32 = 500;

impl ConfigMapData {
    fn from_object(cm: ConfigMap) -> ConfigMapData {
        let meta = cm.metadata;
        ConfigMapData {
            namespace: meta.namespace.unwrap_or_default(),
            name: meta.name.unwrap_or_default(),
            resource_version: meta.resource_version,
            labels: meta.labels.unwrap_or_default(),
            annotations: meta.annotations.unwrap_or_default(),
            data: cm.data.unwrap_or_default(),
        }
    }

    fn to_object(&self) -> ConfigMap {
        let map = |m: &BTreeMap<String, String>| (!m.is_empty()).then(|| m.clone());
        ConfigMap {
            metadata: ObjectMeta {
                name: Some(self.name.clone()),
                namespace: Some(self.namespace.clone()),
                resource_version: self.resource_version.clone(),
                labels: map(&self.labels),
                annotations: map(&self.annotations),
                ..ObjectMeta::default()
            },
            data: Some(self.data.clone()),
            ..ConfigMap::default()
        }
    }
}

/// The URL of a kind's collection in one namespace or (`None`) all of them.
fn collection(kind: WorkloadKind, ns: Option<&str>) -> String {
    let spec = kinds::spec(kind);
    match ns {
        Some(ns) => spec.collection_path(ns),
        None if spec.group.is_empty() => format!("/api/{}/{}", spec.version, spec.plural),
        None => format!("/apis/{}/{}/{}", spec.group, spec.version, spec.plural),
    }
}

fn scope(ns: Option<&str>) -> String {
    match ns {
        Some(ns) => format!("in namespace {ns}"),
        None => "in all namespaces".to_string(),
    }
}

impl KubeCluster {
    fn configmaps(&self, ns: &str) -> Api<ConfigMap> {
        Api::namespaced(self.client(), ns)
    }

    /// `GET` of a ConfigMap; `Ok(None)` when it does not exist.
    pub async fn get_configmap(
        &self,
        ns: &str,
        name: &str,
    ) -> Result<Option<ConfigMapData>, ClusterError> {
        let api = self.configmaps(ns);
        let got = self
            .call(|| format!("GET configmap {ns}/{name}"), api.get_opt(name))
            .await?;
        Ok(got.map(ConfigMapData::from_object))
    }

    /// `POST` of a new ConfigMap (its `resource_version` is ignored). One that exists already
    /// (another replica created it first) is a [`ClusterErrorKind::Conflict`].
    pub async fn create_configmap(
        &self,
        cm: &ConfigMapData,
    ) -> Result<ConfigMapData, ClusterError> {
        let api = self.configmaps(&cm.namespace);
        let mut object = cm.to_object();
        object.metadata.resource_version = None;
        let created = self
            .call(
                || format!("POST configmap {}/{}", cm.namespace, cm.name),
                api.create(&PostParams::default(), &object),
            )
            .await?;
        Ok(ConfigMapData::from_object(created))
    }

    /// `PUT` of a ConfigMap with `cm.resource_version` as precondition: the server refuses it
    /// (a [`ClusterErrorKind::Conflict`]) if anyone wrote it since. A `cm` without a
    /// resourceVersion is refused here, as an unconditional replace could undo another
    /// replica's write.
    pub async fn replace_configmap(
        &self,
        cm: &ConfigMapData,
    ) -> Result<ConfigMapData, ClusterError> {
        let what = || format!("PUT configmap {}/{}", cm.namespace, cm.name);
        if cm.resource_version.as_deref().unwrap_or("").is_empty() {
            return Err(ClusterError::new(
                ClusterErrorKind::Invalid,
                format!("{}: no resourceVersion to replace it at", what()),
            ));
        }
        let api = self.configmaps(&cm.namespace);
        let replaced = self
            .call(
                what,
                api.replace(&cm.name, &PostParams::default(), &cm.to_object()),
            )
            .await?;
        Ok(ConfigMapData::from_object(replaced))
    }

    /// The ConfigMaps in `ns` matching `label_selector` (`""`: all), every page of the list.
    pub async fn list_configmaps(
        &self,
        ns: &str,
        label_selector: &str,
    ) -> Result<Vec<ConfigMapData>, ClusterError> {
        let api = self.configmaps(ns);
        let mut params = ListParams::default().limit(LIST_PAGE);
        if !label_selector.is_empty() {
            params = params.labels(label_selector);
        }
        let mut out = vec![];
        loop {
            let page = self
                .call(
                    || format!("LIST configmaps in namespace {ns} ({label_selector})"),
                    api.list(&params),
                )
                .await?;
            out.extend(page.items.into_iter().map(ConfigMapData::from_object));
            match page.metadata.continue_.filter(|c| !c.is_empty()) {
                Some(token) => params = params.continue_token(&token),
                None => return Ok(out),
            }
        }
    }

    /// A Secret's `data`, base64-decoded; `Ok(None)` when the Secret does not exist.
    pub async fn get_secret(
        &self,
        ns: &str,
        name: &str,
    ) -> Result<Option<BTreeMap<String, Vec<u8>>>, ClusterError> {
        let api: Api<Secret> = Api::namespaced(self.client(), ns);
        let got = self
            .call(|| format!("GET secret {ns}/{name}"), api.get_opt(name))
            .await?;
        Ok(got.map(|s| {
            s.data
                .unwrap_or_default()
                .into_iter()
                .map(|(k, v)| (k, v.0))
                .collect()
        }))
    }

    /// The objects of `kind` in `ns` (`None`: all namespaces) matching `selector`, every page.
    /// A custom kind whose CRD is not installed has none: `Ok(vec![])`.
    pub async fn list_labelled(
        &self,
        kind: WorkloadKind,
        ns: Option<&str>,
        selector: &str,
    ) -> Result<Vec<Workload>, ClusterError> {
        let spec = kinds::spec(kind);
        let what = || {
            format!(
                "LIST {} {} ({selector})",
                spec.qualified_resource(),
                scope(ns)
            )
        };
        let mut params = ListParams::default().limit(LIST_PAGE);
        if !selector.is_empty() {
            params = params.labels(selector);
        }
        let mut out = vec![];
        loop {
            let request = Request::new(collection(kind, ns))
                .list(&params)
                .map_err(|e| ClusterError::from_kube(&what(), &kube::Error::BuildRequest(e)))?;
            let page = match self
                .call(what, self.client().request::<Value>(request))
                .await
            {
                Ok(page) => page,
                // A LIST never 404s for a served resource (an absent namespace lists empty): the
                // resource itself is missing, a CRD not installed.
                Err(e) if e.kind == ClusterErrorKind::NotFound && spec.custom => return Ok(vec![]),
                Err(e) => return Err(e),
            };
            for mut item in page["items"].as_array().cloned().unwrap_or_default() {
                // List items come without apiVersion and kind; a GET has them.
                item["apiVersion"] = Value::String(spec.api_version());
                item["kind"] = Value::String(kind.as_str().into());
                let meta = &item["metadata"];
                let namespace = meta["namespace"].as_str().unwrap_or_default();
                let name = meta["name"].as_str().unwrap_or_default();
                let Ok(target) = Target::new(namespace, name, kind) else {
                    continue;
                };
                out.push(Workload::from_object(&target, item)?);
            }
            match page["metadata"]["continue"]
                .as_str()
                .filter(|c| !c.is_empty())
            {
                Some(token) => params = params.continue_token(token),
                None => return Ok(out),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_wide_collections() {
        assert_eq!(
            collection(WorkloadKind::Deployment, None),
            "/apis/apps/v1/deployments"
        );
        assert_eq!(
            collection(WorkloadKind::Deployment, Some("ml")),
            "/apis/apps/v1/namespaces/ml/deployments"
        );
        assert_eq!(
            collection(WorkloadKind::ConfigMap, None),
            "/api/v1/configmaps"
        );
    }

    #[test]
    fn configmap_round_trips_through_the_typed_object() {
        let cm = ConfigMapData {
            namespace: "ns".into(),
            name: "n".into(),
            resource_version: Some("7".into()),
            labels: [("a".to_string(), "b".to_string())].into(),
            annotations: BTreeMap::new(),
            data: [("k".to_string(), "v".to_string())].into(),
        };
        assert_eq!(ConfigMapData::from_object(cm.to_object()), cm);
        // Empty maps are left out, not sent as `{}`.
        assert!(cm.to_object().metadata.annotations.is_none());
    }
}
