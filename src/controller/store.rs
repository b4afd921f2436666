//! The controller's state store: one ConfigMap per workload in the controller's namespace, holding
//! the workload's live session (`state.json`, the [`WatchState`] `closed-loop watch` writes) and a
//! short summary of it (`summary.json`, [`WorkloadSummary`]) that `kubectl modekeeper fleet` shows.
//!
//! A ConfigMap is named after a hash of the workload's uid, so a workload deleted and recreated
//! under the same name starts fresh. Every write carries the resourceVersion the state was read at:
//! when two replicas write the same workload's state, the second gets [`StoreError::Conflict`]
//! instead of undoing the first.
//!
//! What is read back is untrusted (anyone with write access to the namespace can edit it): sizes are
//! capped, keys may not repeat, the summary must have this version's schema and name the workload
//! it is stored for, and a ConfigMap whose uid annotation is another workload's is refused. Whether
//! a state that fails these checks is discarded or stops the session is the caller's decision.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::closed_loop::live::WatchState;
use crate::k8s::{ClusterError, ClusterErrorKind, ConfigMapData, KubeCluster};
use crate::plan::WorkloadKind;

/// Label every state ConfigMap carries (`=true`): what [`StateStore::list`] selects.
pub const STATE_LABEL: &str = "modekeeper.io/state";
pub const MANAGED_BY_LABEL: &str = "app.kubernetes.io/managed-by";
pub const MANAGED_BY: &str = "modekeeper";
/// `<kind>/<namespace>/<name>` of the workload the state belongs to.
pub const WORKLOAD_ANNOTATION: &str = "modekeeper.io/workload";
/// The workload's uid: the state is refused for any other workload.
pub const WORKLOAD_UID_ANNOTATION: &str = "modekeeper.io/workload-uid";
pub const STATE_KEY: &str = "state.json";
pub const SUMMARY_KEY: &str = "summary.json";
pub const SUMMARY_SCHEMA: &str = "modekeeper.controller_summary.v1";
/// The most data one state ConfigMap may hold (keys and values): under the apiserver's 1 MiB
/// (`MaxSecretSize`), with room for metadata, so a write fails here with a clear message rather
/// than as a 422 from the server.
pub const MAX_STATE_BYTES: usize = 900 * 1024;
/// Prefix of a state ConfigMap's name.
pub const STATE_NAME_PREFIX: &str = "modekeeper-state-";

/// The workload a state belongs to.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct WorkloadKey {
    pub kind: WorkloadKind,
    pub namespace: String,
    pub name: String,
    pub uid: String,
}

/// `modekeeper-state-<first 16 hex digits of sha256(uid)>`.
pub fn state_configmap_name(uid: &str) -> String {
    let digest = Sha256::digest(uid.as_bytes());
    let hex = crate::private_file::hex(&digest);
    format!("{STATE_NAME_PREFIX}{}", &hex[..16])
}

impl WorkloadKey {
    /// The name of its state ConfigMap.
    pub fn configmap_name(&self) -> String {
        state_configmap_name(&self.uid)
    }

    /// `<kind>/<namespace>/<name>` (the value of [`WORKLOAD_ANNOTATION`]).
    pub fn workload_ref(&self) -> String {
        format!("{}/{}/{}", self.kind.as_str(), self.namespace, self.name)
    }

    fn summary_workload(&self) -> SummaryWorkload {
        SummaryWorkload {
            kind: self.kind,
            namespace: self.namespace.clone(),
            name: self.name.clone(),
            uid: self.uid.clone(),
        }
    }
}

mod kind_serde {
    use serde::{Deserialize, Deserializer, Serializer};

    use crate::plan::WorkloadKind;

    pub fn serialize<S: Serializer>(kind: &WorkloadKind, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(kind.as_str())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<WorkloadKind, D::Error> {
        let text = String::deserialize(d)?;
        WorkloadKind::parse(&text)
            .filter(|k| k.is_workload())
            .ok_or_else(|| serde::de::Error::custom(format!("unknown workload kind {text:?}")))
    }
}

/// The workload a summary describes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SummaryWorkload {
    #[serde(with = "kind_serde")]
    pub kind: WorkloadKind,
    pub namespace: String,
    pub name: String,
    pub uid: String,
}

/// Where a workload's session is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SessionStatus {
    Running,
    Stopped,
    /// Opted in, waiting for a free session slot or for its pods.
    Waiting,
    Error,
}

impl SessionStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            SessionStatus::Running => "running",
            SessionStatus::Stopped => "stopped",
            SessionStatus::Waiting => "waiting",
            SessionStatus::Error => "error",
        }
    }
}

/// One knob change a decision proposed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProposalSummary {
    pub knob: String,
    pub from: f64,
    pub to: f64,
}

/// The latest decision that proposed a change.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LastDecision {
    /// Window index.
    pub window: u64,
    pub chord: String,
    pub proposals: Vec<ProposalSummary>,
    /// RFC 3339.
    pub at: String,
}

/// The latest Event the controller recorded on the workload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LastEvent {
    pub reason: String,
    pub note: String,
    /// RFC 3339.
    pub at: String,
}

/// What `fleet` shows of a session (`summary.json`, schema [`SUMMARY_SCHEMA`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkloadSummary {
    pub schema_version: String,
    pub workload: SummaryWorkload,
    /// The controller replica (pod name) that wrote it.
    pub replica: String,
    pub shard: u32,
    pub status: SessionStatus,
    pub active_chord: Option<String>,
    pub last_decision: Option<LastDecision>,
    /// The knob values in force.
    pub knobs: BTreeMap<String, f64>,
    /// What became of the last decision: `applied`, `blocked: kill_switch_cluster`, `proposed
    /// (apply off)`, ...
    pub apply_status: String,
    pub last_event: Option<LastEvent>,
    pub windows_evaluated: u64,
    pub incidents: u64,
    /// RFC 3339.
    pub updated_at: String,
    pub error: Option<String>,
}

impl WorkloadSummary {
    /// A summary of a workload with nothing evaluated yet.
    pub fn new(key: &WorkloadKey, replica: &str, shard: u32, updated_at: &str) -> WorkloadSummary {
        WorkloadSummary {
            schema_version: SUMMARY_SCHEMA.into(),
            workload: key.summary_workload(),
            replica: replica.into(),
            shard,
            status: SessionStatus::Waiting,
            active_chord: None,
            last_decision: None,
            knobs: BTreeMap::new(),
            apply_status: String::new(),
            last_event: None,
            windows_evaluated: 0,
            incidents: 0,
            updated_at: updated_at.into(),
            error: None,
        }
    }

    /// The key of the workload it describes.
    pub fn key(&self) -> WorkloadKey {
        WorkloadKey {
            kind: self.workload.kind,
            namespace: self.workload.namespace.clone(),
            name: self.workload.name.clone(),
            uid: self.workload.uid.clone(),
        }
    }
}

/// A session as stored: its state (none before the first window) and its summary.
#[derive(Debug, Clone)]
pub struct StoredSession {
    pub state: Option<WatchState>,
    pub summary: WorkloadSummary,
}

/// Why a state could not be read or written.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum StoreError {
    /// 409: another replica wrote (or created) it since it was read.
    #[error(
        "state ConfigMap {configmap}: another replica wrote it since it was read (409 Conflict)"
    )]
    Conflict { configmap: String },
    #[error("state ConfigMap {configmap}: {bytes} bytes of data, more than the {limit} allowed")]
    TooLarge {
        configmap: String,
        bytes: usize,
        limit: usize,
    },
    /// Its annotations say it belongs to another workload (or to none).
    #[error("state ConfigMap {configmap} belongs to {found}, not to {expected}: refused")]
    Foreign {
        configmap: String,
        expected: String,
        found: String,
    },
    /// It does not hold a valid state or summary.
    #[error("state ConfigMap {configmap}: {reason}")]
    Invalid { configmap: String, reason: String },
    #[error("state ConfigMap {configmap}: {error}")]
    Cluster {
        configmap: String,
        error: ClusterError,
    },
}

impl StoreError {
    /// The ConfigMap it is about (`<namespace>/<name>`).
    pub fn configmap(&self) -> &str {
        match self {
            StoreError::Conflict { configmap }
            | StoreError::TooLarge { configmap, .. }
            | StoreError::Foreign { configmap, .. }
            | StoreError::Invalid { configmap, .. }
            | StoreError::Cluster { configmap, .. } => configmap,
        }
    }
}

/// Keys and values of a ConfigMap's data, as the apiserver counts them.
fn data_size(data: &BTreeMap<String, String>) -> usize {
    data.iter().map(|(k, v)| k.len() + v.len()).sum()
}

fn check_size(configmap: &str, data: &BTreeMap<String, String>) -> Result<(), StoreError> {
    let bytes = data_size(data);
    if bytes > MAX_STATE_BYTES {
        return Err(StoreError::TooLarge {
            configmap: configmap.into(),
            bytes,
            limit: MAX_STATE_BYTES,
        });
    }
    Ok(())
}

fn invalid(configmap: &str, reason: impl Into<String>) -> StoreError {
    StoreError::Invalid {
        configmap: configmap.into(),
        reason: reason.into(),
    }
}

/// Parses and checks a `summary.json`: unique keys, known fields only, this schema, and a
/// workload whose uid hashes to the ConfigMap's name.
pub fn parse_summary(configmap: &str, text: &str) -> Result<WorkloadSummary, StoreError> {
    let summary: WorkloadSummary = crate::json_keys::from_slice_unique(text.as_bytes())
        .map_err(|e| invalid(configmap, format!("{SUMMARY_KEY} is not a summary: {e}")))?;
    if summary.schema_version != SUMMARY_SCHEMA {
        return Err(invalid(
            configmap,
            format!(
                "{SUMMARY_KEY} has schema {:?}, this version reads {SUMMARY_SCHEMA}",
                summary.schema_version
            ),
        ));
    }
    Ok(summary)
}

/// Checks a stored ConfigMap against what it must be for `expected_uid` (when known) and returns
/// its summary: size, uid annotation, name, workload annotation, summary.
fn check_stored(
    cm: &ConfigMapData,
    expected: Option<&WorkloadKey>,
) -> Result<WorkloadSummary, StoreError> {
    let id = format!("{}/{}", cm.namespace, cm.name);
    check_size(&id, &cm.data)?;
    let uid = cm
        .annotations
        .get(WORKLOAD_UID_ANNOTATION)
        .map(String::as_str)
        .unwrap_or("");
    let workload = cm
        .annotations
        .get(WORKLOAD_ANNOTATION)
        .map(String::as_str)
        .unwrap_or("");
    let found = || {
        if uid.is_empty() {
            format!("no workload ({WORKLOAD_UID_ANNOTATION} missing)")
        } else {
            format!("{workload} (uid {uid})")
        }
    };
    if let Some(key) = expected
        && (uid != key.uid || workload != key.workload_ref())
    {
        return Err(StoreError::Foreign {
            configmap: id,
            expected: format!("{} (uid {})", key.workload_ref(), key.uid),
            found: found(),
        });
    }
    // The name is derived from the uid: a copy renamed onto another workload's slot is refused.
    if uid.is_empty() || state_configmap_name(uid) != cm.name {
        return Err(StoreError::Foreign {
            configmap: id.clone(),
            expected: format!("the workload whose uid names {}", cm.name),
            found: found(),
        });
    }
    let text = cm
        .data
        .get(SUMMARY_KEY)
        .ok_or_else(|| invalid(&id, format!("no {SUMMARY_KEY}")))?;
    let summary = parse_summary(&id, text)?;
    let key = summary.key();
    if key.uid != uid || key.workload_ref() != workload {
        return Err(StoreError::Foreign {
            configmap: id,
            expected: format!("{workload} (uid {uid}) as its annotations say"),
            found: format!(
                "{} (uid {}) in its {SUMMARY_KEY}",
                key.workload_ref(),
                key.uid
            ),
        });
    }
    Ok(summary)
}

/// The ConfigMap that stores `s` for `key` (without a resourceVersion), size-checked.
pub fn to_configmap(
    namespace: &str,
    key: &WorkloadKey,
    s: &StoredSession,
) -> Result<ConfigMapData, StoreError> {
    let name = key.configmap_name();
    let id = format!("{namespace}/{name}");
    if s.summary.key() != *key {
        return Err(invalid(
            &id,
            format!(
                "refusing to write a summary of {} (uid {}) as the state of {} (uid {})",
                s.summary.workload.kind.as_str(),
                s.summary.workload.uid,
                key.workload_ref(),
                key.uid
            ),
        ));
    }
    let json = |what: &str, r: serde_json::Result<String>| {
        r.map_err(|e| invalid(&id, format!("cannot encode {what}: {e}")))
    };
    let mut data = BTreeMap::new();
    data.insert(
        SUMMARY_KEY.to_string(),
        json(SUMMARY_KEY, serde_json::to_string(&s.summary))?,
    );
    if let Some(state) = &s.state {
        data.insert(
            STATE_KEY.to_string(),
            json(STATE_KEY, serde_json::to_string(state))?,
        );
    }
    check_size(&id, &data)?;
    Ok(ConfigMapData {
        namespace: namespace.into(),
        name,
        resource_version: None,
        labels: [
            (STATE_LABEL.to_string(), "true".to_string()),
            (MANAGED_BY_LABEL.to_string(), MANAGED_BY.to_string()),
        ]
        .into(),
        annotations: [
            (WORKLOAD_ANNOTATION.to_string(), key.workload_ref()),
            (WORKLOAD_UID_ANNOTATION.to_string(), key.uid.clone()),
        ]
        .into(),
        data,
    })
}

/// Reads a stored ConfigMap back as `key`'s session (see the module doc for the checks).
pub fn from_configmap(cm: &ConfigMapData, key: &WorkloadKey) -> Result<StoredSession, StoreError> {
    let summary = check_stored(cm, Some(key))?;
    let id = format!("{}/{}", cm.namespace, cm.name);
    let state = match cm.data.get(STATE_KEY) {
        None => None,
        Some(text) => Some(
            WatchState::from_slice(text.as_bytes())
                .map_err(|e| invalid(&id, format!("{STATE_KEY}: {e}")))?,
        ),
    };
    Ok(StoredSession { state, summary })
}

/// The summary of any state ConfigMap (what `fleet` lists), with every check [`from_configmap`]
/// makes but the one against an expected workload.
pub fn summary_from_configmap(cm: &ConfigMapData) -> Result<WorkloadSummary, StoreError> {
    check_stored(cm, None)
}

/// One state ConfigMap as [`StateStore::list_entries`] found it.
#[derive(Debug, Clone, PartialEq)]
pub struct ListedState {
    /// `<namespace>/<name>`.
    pub configmap: String,
    pub summary: Result<WorkloadSummary, StoreError>,
}

/// The state ConfigMaps in one namespace.
pub struct StateStore {
    cluster: Arc<KubeCluster>,
    namespace: String,
}

impl StateStore {
    pub fn new(cluster: Arc<KubeCluster>, namespace: &str) -> StateStore {
        StateStore {
            cluster,
            namespace: namespace.into(),
        }
    }

    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    fn cluster_error(&self, name: &str, error: ClusterError) -> StoreError {
        let configmap = format!("{}/{name}", self.namespace);
        if error.kind == ClusterErrorKind::Conflict {
            StoreError::Conflict { configmap }
        } else {
            StoreError::Cluster { configmap, error }
        }
    }

    /// `key`'s session and the resourceVersion it was read at; `Ok(None)` when none is stored.
    pub async fn load(
        &self,
        key: &WorkloadKey,
    ) -> Result<Option<(StoredSession, String)>, StoreError> {
        let name = key.configmap_name();
        let Some(cm) = self
            .cluster
            .get_configmap(&self.namespace, &name)
            .await
            .map_err(|e| self.cluster_error(&name, e))?
        else {
            return Ok(None);
        };
        let session = from_configmap(&cm, key)?;
        Ok(Some((session, cm.resource_version.unwrap_or_default())))
    }

    /// Writes `key`'s session: creates its ConfigMap when `rv` is `None`, replaces it at `rv`
    /// otherwise. Returns the new resourceVersion; [`StoreError::Conflict`] when another replica
    /// wrote (or created) it first.
    pub async fn save(
        &self,
        key: &WorkloadKey,
        s: &StoredSession,
        rv: Option<&str>,
    ) -> Result<String, StoreError> {
        let mut cm = to_configmap(&self.namespace, key, s)?;
        let stored = match rv {
            None => self.cluster.create_configmap(&cm).await,
            Some(rv) => {
                cm.resource_version = Some(rv.to_string());
                self.cluster.replace_configmap(&cm).await
            }
        }
        .map_err(|e| self.cluster_error(&cm.name, e))?;
        Ok(stored.resource_version.unwrap_or_default())
    }

    /// Every state ConfigMap (label [`STATE_LABEL`]`=true`) with its summary or why it was
    /// refused.
    pub async fn list_entries(&self) -> Result<Vec<ListedState>, StoreError> {
        let selector = format!("{STATE_LABEL}=true");
        let cms = self
            .cluster
            .list_configmaps(&self.namespace, &selector)
            .await
            .map_err(|e| StoreError::Cluster {
                configmap: format!("{}/*", self.namespace),
                error: e,
            })?;
        Ok(cms
            .iter()
            .map(|cm| ListedState {
                configmap: format!("{}/{}", cm.namespace, cm.name),
                summary: summary_from_configmap(cm),
            })
            .collect())
    }

    /// The summaries of every valid state ConfigMap; refused ones are left out
    /// ([`StateStore::list_entries`] tells them).
    pub async fn list(&self) -> Result<Vec<WorkloadSummary>, StoreError> {
        Ok(self
            .list_entries()
            .await?
            .into_iter()
            .filter_map(|e| e.summary.ok())
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> WorkloadKey {
        WorkloadKey {
            kind: WorkloadKind::Deployment,
            namespace: "ml".into(),
            name: "trainer".into(),
            uid: "0b5c6a2e-1111-4222-8333-444455556666".into(),
        }
    }

    fn session() -> StoredSession {
        let mut summary = WorkloadSummary::new(&key(), "controller-0", 0, "2026-12-03T00:00:00Z");
        summary.status = SessionStatus::Running;
        summary.knobs.insert("concurrency".into(), 4.0);
        summary.last_decision = Some(LastDecision {
            window: 3,
            chord: "BURST-ABSORB".into(),
            proposals: vec![ProposalSummary {
                knob: "concurrency".into(),
                from: 4.0,
                to: 5.0,
            }],
            at: "2026-12-03T00:00:00Z".into(),
        });
        StoredSession {
            state: None,
            summary,
        }
    }

    #[test]
    fn names_hash_the_uid() {
        let name = key().configmap_name();
        assert_eq!(name.len(), STATE_NAME_PREFIX.len() + 16);
        assert!(name.starts_with(STATE_NAME_PREFIX));
        // sha256("0b5c6a2e-1111-4222-8333-444455556666"), first 16 hex digits.
        let digest = crate::private_file::hex(&Sha256::digest(key().uid.as_bytes()));
        assert_eq!(&name[STATE_NAME_PREFIX.len()..], &digest[..16]);
        let mut other = key();
        other.uid = "another".into();
        assert_ne!(other.configmap_name(), name);
    }

    #[test]
    fn a_session_round_trips() {
        let cm = to_configmap("modekeeper-system", &key(), &session()).unwrap();
        assert_eq!(cm.labels[STATE_LABEL], "true");
        assert_eq!(cm.labels[MANAGED_BY_LABEL], "modekeeper");
        assert_eq!(cm.annotations[WORKLOAD_ANNOTATION], "Deployment/ml/trainer");
        assert_eq!(cm.annotations[WORKLOAD_UID_ANNOTATION], key().uid);
        assert!(!cm.data.contains_key(STATE_KEY));
        let back = from_configmap(&cm, &key()).unwrap();
        assert_eq!(back.summary, session().summary);
        assert!(back.state.is_none());
    }

    #[test]
    fn another_workloads_state_is_refused() {
        let cm = to_configmap("modekeeper-system", &key(), &session()).unwrap();
        let mut other = key();
        other.uid = "recreated".into();
        assert!(matches!(
            from_configmap(&cm, &other),
            Err(StoreError::Foreign { .. })
        ));
        // Right uid, annotations edited to claim another workload.
        let mut tampered = cm.clone();
        tampered
            .annotations
            .insert(WORKLOAD_ANNOTATION.into(), "Deployment/ml/other".into());
        assert!(matches!(
            from_configmap(&tampered, &key()),
            Err(StoreError::Foreign { .. })
        ));
        // A summary of another workload under this workload's annotations.
        let mut swapped = cm.clone();
        let mut s = session().summary;
        s.workload.name = "other".into();
        swapped
            .data
            .insert(SUMMARY_KEY.into(), serde_json::to_string(&s).unwrap());
        let err = from_configmap(&swapped, &key()).unwrap_err();
        assert!(matches!(err, StoreError::Foreign { .. }), "{err}");
        assert!(err.to_string().contains("Deployment/ml/other"), "{err}");
        // Copied onto another name (its uid annotation no longer hashes to it).
        let mut renamed = cm;
        renamed.name = "modekeeper-state-0000000000000000".into();
        assert!(matches!(
            check_stored(&renamed, None),
            Err(StoreError::Foreign { .. })
        ));
    }

    #[test]
    fn bad_summaries_and_states_name_the_configmap() {
        let cm = to_configmap("modekeeper-system", &key(), &session()).unwrap();
        let id = format!("modekeeper-system/{}", key().configmap_name());
        let with = |k: &str, v: &str| {
            let mut c = cm.clone();
            c.data.insert(k.into(), v.into());
            from_configmap(&c, &key()).unwrap_err()
        };
        let text = cm.data[SUMMARY_KEY].clone();
        for (k, v, want) in [
            (STATE_KEY, "{", "state.json"),
            (
                STATE_KEY,
                "{\"schema_version\":\"watch_state.v1\"}",
                "state.json",
            ),
            (SUMMARY_KEY, "[]", "summary.json is not a summary"),
            (
                SUMMARY_KEY,
                &text.replacen('{', "{\"extra\":1,", 1),
                "unknown field",
            ),
            (
                SUMMARY_KEY,
                &text.replacen('{', "{\"shard\":9,", 1),
                "duplicate",
            ),
            (
                SUMMARY_KEY,
                &text.replace(SUMMARY_SCHEMA, "modekeeper.controller_summary.v9"),
                "schema",
            ),
            (
                SUMMARY_KEY,
                &text.replace("\"Deployment\"", "\"ConfigMap\""),
                "unknown workload kind",
            ),
        ] {
            let err = with(k, v);
            assert!(matches!(err, StoreError::Invalid { .. }), "{err}");
            assert_eq!(err.configmap(), id);
            let msg = err.to_string();
            assert!(msg.contains(&id) && msg.contains(want), "{msg}");
        }
        let mut none = cm;
        none.data.remove(SUMMARY_KEY);
        assert!(
            from_configmap(&none, &key())
                .unwrap_err()
                .to_string()
                .contains("no summary.json")
        );
    }

    #[test]
    fn oversized_data_is_refused_both_ways() {
        let mut s = session();
        s.summary.error = Some("x".repeat(MAX_STATE_BYTES));
        let err = to_configmap("ns", &key(), &s).unwrap_err();
        assert!(matches!(err, StoreError::TooLarge { .. }), "{err}");
        let mut cm = to_configmap("ns", &key(), &session()).unwrap();
        cm.data
            .insert("padding".into(), "y".repeat(MAX_STATE_BYTES));
        assert!(matches!(
            from_configmap(&cm, &key()),
            Err(StoreError::TooLarge { .. })
        ));
    }

    #[test]
    fn a_summary_is_written_only_under_its_own_key() {
        let mut other = key();
        other.name = "other".into();
        let err = to_configmap("ns", &other, &session()).unwrap_err();
        assert!(matches!(err, StoreError::Invalid { .. }), "{err}");
    }
}
