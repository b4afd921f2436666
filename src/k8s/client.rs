//! [`ClusterApi`] over kube-rs: typed k8s-openapi requests for namespaces and access reviews, raw JSON
//! for workloads (so a diff sees every field the server returned, known to k8s-openapi or not).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SelfSubjectAccessReview, SelfSubjectAccessReviewSpec,
    SelfSubjectRulesReview, SelfSubjectRulesReviewSpec,
};
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, GetParams, ListParams, Patch, PatchParams, PostParams};
use kube::core::Request;
use serde_json::Value;

use super::config::{self, ClusterIdentity, ConfigError, ConnectOptions};
use super::{
    AccessCheck, AccessDecision, ClusterApi, ClusterError, FIELD_MANAGER, INSTALL_FIELD_MANAGER,
    KnobMergePatch, NamespaceInfo, PatchMode, ServerVersion, Workload,
};
use crate::plan::Target;

/// The longest quiet read on a watch (kube-rs's default read timeout, just over the watcher's
/// `timeoutSeconds` of 290 s).
pub const WATCH_IDLE_TIMEOUT: Duration = Duration::from_secs(295);

/// A kube-rs client with the identity it was built for and its request timeout.
pub struct KubeCluster {
    client: kube::Client,
    /// The same connection settings with a read timeout for long, quiet watches.
    watch_client: kube::Client,
    identity: ClusterIdentity,
    timeout: Option<Duration>,
    requests: AtomicU64,
}

impl KubeCluster {
    /// Builds the client from kubectl-style options. Must run inside a tokio runtime (the client
    /// spawns its connection worker there).
    pub async fn connect(opts: &ConnectOptions) -> Result<KubeCluster, ConfigError> {
        let (config, identity) = config::load(opts).await?;
        // A watch may be quiet for minutes (the apiserver sends a bookmark about once a minute,
        // and ends it after the watcher's 290 s): the request timeout bounds calls, not its
        // reads, or every idle watch would fail and restart after the request timeout.
        let mut watch_config = config.clone();
        watch_config.read_timeout =
            Some(WATCH_IDLE_TIMEOUT.max(opts.request_timeout.unwrap_or_default()));
        let build = |config| {
            kube::Client::try_from(config).map_err(|e| ConfigError {
                message: format!("cannot build a client for {}: {e}", identity.server),
            })
        };
        let client = build(config)?;
        let watch_client = build(watch_config)?;
        Ok(KubeCluster {
            client,
            watch_client,
            identity,
            timeout: opts.request_timeout,
            requests: AtomicU64::new(0),
        })
    }

    /// The kube-rs client (for kube-runtime's helpers: the event recorder, watchers).
    pub(super) fn client(&self) -> kube::Client {
        self.client.clone()
    }

    /// The client for kube-runtime's watchers: reads may idle up to [`WATCH_IDLE_TIMEOUT`].
    pub(super) fn watch_client(&self) -> kube::Client {
        self.watch_client.clone()
    }

    pub(super) fn request_timeout(&self) -> Option<Duration> {
        self.timeout
    }

    /// How many API calls this client has started.
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    /// Runs one call under the request timeout and classifies its failure.
    pub(super) async fn call<T>(
        &self,
        what: impl Fn() -> String,
        fut: impl Future<Output = Result<T, kube::Error>>,
    ) -> Result<T, ClusterError> {
        self.requests.fetch_add(1, Ordering::Relaxed);
        let result = match self.timeout {
            Some(limit) => match tokio::time::timeout(limit, fut).await {
                Ok(r) => r,
                Err(_) => return Err(ClusterError::timeout(&what(), limit)),
            },
            None => fut.await,
        };
        result.map_err(|e| ClusterError::from_kube(&what(), &e))
    }
}

impl KubeCluster {
    /// Server-side apply of one whole object (`install`'s manifests): `fieldManager=`
    /// [`INSTALL_FIELD_MANAGER`], forced (install owns these objects), optionally as a dry run.
    /// Returns the object as the server stored (or would store) it.
    pub async fn server_side_apply(
        &self,
        collection_path: &str,
        name: &str,
        object: &Value,
        dry_run: bool,
    ) -> Result<Value, ClusterError> {
        let params = PatchParams {
            dry_run,
            field_manager: Some(INSTALL_FIELD_MANAGER.into()),
            force: true,
            ..PatchParams::default()
        };
        let what = || format!("apply {collection_path}/{name}");
        let request = Request::new(collection_path)
            .patch(name, &params, &Patch::Apply(object))
            .map_err(|e| ClusterError::from_kube(&what(), &kube::Error::BuildRequest(e)))?;
        self.call(what, self.client.request::<Value>(request)).await
    }
}

fn collection_path(target: &Target) -> String {
    super::kinds::spec(target.kind()).collection_path(target.namespace())
}

fn describe(verb: &str, target: &Target) -> String {
    format!(
        "{verb} {} {}/{}",
        super::kinds::spec(target.kind()).qualified_resource(),
        target.namespace(),
        target.name()
    )
}

impl ClusterApi for KubeCluster {
    fn identity(&self) -> &ClusterIdentity {
        &self.identity
    }

    async fn server_version(&self) -> Result<ServerVersion, ClusterError> {
        let info = self
            .call(|| "GET /version".into(), self.client.apiserver_version())
            .await?;
        Ok(ServerVersion {
            git_version: info.git_version,
            platform: Some(info.platform).filter(|p| !p.is_empty()),
        })
    }

    async fn get_namespace(&self, name: &str) -> Result<Option<NamespaceInfo>, ClusterError> {
        let api: Api<Namespace> = Api::all(self.client.clone());
        let ns = self
            .call(|| format!("GET namespaces {name}"), api.get_opt(name))
            .await?;
        Ok(ns.map(|ns| NamespaceInfo {
            name: name.to_string(),
            phase: ns.status.and_then(|s| s.phase),
        }))
    }

    async fn get_workload(&self, target: &Target) -> Result<Option<Workload>, ClusterError> {
        let request = Request::new(collection_path(target))
            .get(target.name(), &GetParams::default())
            .map_err(|e| {
                ClusterError::from_kube(&describe("GET", target), &kube::Error::BuildRequest(e))
            })?;
        match self
            .call(
                || describe("GET", target),
                self.client.request::<Value>(request),
            )
            .await
        {
            Ok(object) => Workload::from_object(target, object).map(Some),
            Err(e) if e.kind == super::ClusterErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    async fn kind_served(&self, kind: crate::plan::WorkloadKind) -> Result<bool, ClusterError> {
        let spec = super::kinds::spec(kind);
        if !spec.custom {
            return Ok(true);
        }
        let gv = spec.api_version();
        match self
            .call(
                || format!("GET /apis/{gv} (discovery)"),
                self.client.list_api_group_resources(&gv),
            )
            .await
        {
            Ok(list) => Ok(list.resources.iter().any(|r| r.name == spec.plural)),
            Err(e) if e.kind == super::ClusterErrorKind::NotFound => Ok(false),
            Err(e) => Err(e),
        }
    }

    async fn list_objects(
        &self,
        namespace: &str,
        kind: crate::plan::WorkloadKind,
    ) -> Result<Vec<Workload>, ClusterError> {
        let spec = super::kinds::spec(kind);
        let what = || {
            format!(
                "LIST {} in namespace {namespace}",
                spec.qualified_resource()
            )
        };
        let request = Request::new(spec.collection_path(namespace))
            .list(&ListParams::default())
            .map_err(|e| ClusterError::from_kube(&what(), &kube::Error::BuildRequest(e)))?;
        let list = self
            .call(what, self.client.request::<Value>(request))
            .await?;
        let mut out = vec![];
        for mut item in list["items"].as_array().cloned().unwrap_or_default() {
            // A List's items come without apiVersion and kind; a GET has them (and the diff
            // against the dry run's answer must not see them appear).
            item["apiVersion"] = Value::String(spec.api_version());
            item["kind"] = Value::String(kind.as_str().into());
            let name = item["metadata"]["name"].as_str().unwrap_or_default();
            let Ok(target) = Target::new(namespace, name, kind) else {
                continue;
            };
            out.push(Workload::from_object(&target, item)?);
        }
        Ok(out)
    }

    async fn review_rules(&self, namespace: &str) -> Result<super::RulesReview, ClusterError> {
        let review = SelfSubjectRulesReview {
            spec: SelfSubjectRulesReviewSpec {
                namespace: Some(namespace.to_string()),
            },
            ..SelfSubjectRulesReview::default()
        };
        let api: Api<SelfSubjectRulesReview> = Api::all(self.client.clone());
        let what = || format!("POST selfsubjectrulesreviews (namespace {namespace})");
        let answer = self
            .call(what, api.create(&PostParams::default(), &review))
            .await?;
        let status = answer.status.unwrap_or_default();
        Ok(super::RulesReview {
            rules: status
                .resource_rules
                .into_iter()
                .map(|r| super::ResourceRule {
                    verbs: r.verbs,
                    api_groups: r.api_groups.unwrap_or_default(),
                    resources: r.resources.unwrap_or_default(),
                    resource_names: r.resource_names.unwrap_or_default(),
                })
                .collect(),
            incomplete: status.incomplete,
        })
    }

    async fn review_access(&self, check: &AccessCheck) -> Result<AccessDecision, ClusterError> {
        let review = SelfSubjectAccessReview {
            spec: SelfSubjectAccessReviewSpec {
                resource_attributes: Some(ResourceAttributes {
                    verb: Some(check.verb.clone()),
                    group: Some(check.group.clone()),
                    resource: Some(check.resource.clone()),
                    namespace: check.namespace.clone(),
                    name: check.name.clone(),
                    ..ResourceAttributes::default()
                }),
                ..SelfSubjectAccessReviewSpec::default()
            },
            ..SelfSubjectAccessReview::default()
        };
        let api: Api<SelfSubjectAccessReview> = Api::all(self.client.clone());
        let what = || {
            format!(
                "POST selfsubjectaccessreviews ({} {} in {})",
                check.verb,
                check.resource,
                check.namespace.as_deref().unwrap_or("the cluster")
            )
        };
        let answer = self
            .call(what, api.create(&PostParams::default(), &review))
            .await?;
        let status = answer.status.unwrap_or_default();
        Ok(AccessDecision {
            allowed: status.allowed,
            denied: status.denied.unwrap_or(false),
            reason: status.reason.filter(|r| !r.is_empty()),
        })
    }

    async fn patch_workload(
        &self,
        target: &Target,
        patch: &KnobMergePatch,
        mode: PatchMode,
    ) -> Result<Workload, ClusterError> {
        let params = PatchParams {
            dry_run: mode == PatchMode::DryRun,
            field_manager: Some(FIELD_MANAGER.into()),
            ..PatchParams::default()
        };
        let verb = match mode {
            PatchMode::DryRun => "PATCH (dry run)",
            PatchMode::Write => "PATCH",
        };
        let request = Request::new(collection_path(target))
            .patch(target.name(), &params, &Patch::Merge(patch.as_json()))
            .map_err(|e| {
                ClusterError::from_kube(&describe(verb, target), &kube::Error::BuildRequest(e))
            })?;
        let object = self
            .call(
                || describe(verb, target),
                self.client.request::<Value>(request),
            )
            .await?;
        Workload::from_object(target, object)
    }
}
