//! ConfigMap/Secret I/O and the controller's state store against kube-sim (included by
//! `k8s_client.rs`, so it shares that test binary).

use std::collections::BTreeMap;
use std::sync::Arc;

use kube_sim::{KubeSim, ResourceKind, Rule, WorkloadSeed};
use modekeeper::closed_loop::live::{Session, SessionSetup, WatchState};
use modekeeper::controller::store::{
    self, SessionStatus, StateStore, StoreError, StoredSession, WorkloadKey, WorkloadSummary,
};
use modekeeper::k8s::{Cluster, ClusterErrorKind, ConfigMapData, ConnectOptions, KubeCluster};
use modekeeper::plan::WorkloadKind;
use serde_json::json;

use super::k8s_common::Case;

const NS: &str = "modekeeper-system";

fn sim() -> KubeSim {
    KubeSim::builder()
        .namespace("ml")
        .namespace("team-b")
        .namespace(NS)
        .workload(WorkloadSeed::deployment("ml", "trainer").label("modekeeper.io/enabled", "true"))
        .workload(WorkloadSeed::deployment("ml", "other"))
        .workload(WorkloadSeed::statefulset("team-b", "db").label("modekeeper.io/enabled", "true"))
        .object(
            ResourceKind::Secret,
            json!({"metadata": {"name": "modekeeper-license", "namespace": NS},
                   "type": "Opaque",
                   "data": {"license.json": "eyJhIjoxfQ=="},
                   "stringData": {"keyring.json": "[]"}}),
        )
        .object(
            ResourceKind::Secret,
            json!({"metadata": {"name": "other-secret", "namespace": NS},
                   "data": {"k": "dg=="}}),
        )
        .token("t0", "alice", [Rule::admin()])
        .token(
            "controller",
            "system:serviceaccount:modekeeper-system:modekeeper-controller",
            [
                Rule::allow(["get"], "", ["secrets"])
                    .named(["modekeeper-license"])
                    .in_namespace(NS),
                Rule::allow(["get", "list", "create", "update"], "", ["configmaps"])
                    .in_namespace(NS),
            ],
        )
        .start_blocking()
        .unwrap()
}

/// The sync facade (its runtime) and a shared client built on that runtime.
fn connect(sim: &KubeSim, token: &str) -> (Case, Cluster, Arc<KubeCluster>) {
    let case = Case::new(sim, token);
    let opts = ConnectOptions::from_flags(
        Some(case.kubeconfig.to_str().unwrap()),
        None,
        None,
        Some(5000),
    );
    let c = Cluster::connect(&opts).unwrap();
    let kc = Arc::new(c.block_on(KubeCluster::connect(&opts)).unwrap());
    (case, c, kc)
}

fn cm(name: &str, labels: &[(&str, &str)], data: &[(&str, &str)]) -> ConfigMapData {
    let map = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    };
    ConfigMapData {
        namespace: NS.into(),
        name: name.into(),
        labels: map(labels),
        data: map(data),
        ..ConfigMapData::default()
    }
}

#[test]
fn configmaps_are_created_replaced_at_their_version_and_listed() {
    let sim = sim();
    let (_case, c, kc) = connect(&sim, "t0");
    assert_eq!(c.block_on(kc.get_configmap(NS, "a")).unwrap(), None);
    let a = c
        .block_on(kc.create_configmap(&cm("a", &[("x", "1")], &[("k", "v")])))
        .unwrap();
    let rv = a.resource_version.clone().unwrap();
    assert_eq!(a.data["k"], "v");
    assert_eq!(
        c.block_on(kc.get_configmap(NS, "a")).unwrap(),
        Some(a.clone())
    );
    // A second create of the same name: 409 AlreadyExists.
    let again = c
        .block_on(kc.create_configmap(&cm("a", &[], &[])))
        .unwrap_err();
    assert_eq!(again.kind, ClusterErrorKind::Conflict, "{again}");

    let mut next = a.clone();
    next.data.insert("k".into(), "w".into());
    let b = c.block_on(kc.replace_configmap(&next)).unwrap();
    assert_ne!(b.resource_version.as_deref(), Some(rv.as_str()));
    assert_eq!(
        sim.get(ResourceKind::ConfigMap, NS, "a").unwrap()["data"]["k"],
        "w"
    );
    // The version read before that write is stale now.
    next.data.insert("k".into(), "lost".into());
    let stale = c.block_on(kc.replace_configmap(&next)).unwrap_err();
    assert_eq!(stale.kind, ClusterErrorKind::Conflict, "{stale}");
    assert_eq!(
        sim.get(ResourceKind::ConfigMap, NS, "a").unwrap()["data"]["k"],
        "w"
    );
    // No version: refused before anything is sent.
    let before = sim.count_requests("PUT", "/api/v1/namespaces/*/configmaps/*");
    next.resource_version = None;
    assert_eq!(
        c.block_on(kc.replace_configmap(&next)).unwrap_err().kind,
        ClusterErrorKind::Invalid
    );
    assert_eq!(
        sim.count_requests("PUT", "/api/v1/namespaces/*/configmaps/*"),
        before
    );

    c.block_on(kc.create_configmap(&cm("b", &[("x", "2")], &[])))
        .unwrap();
    let listed = c.block_on(kc.list_configmaps(NS, "x")).unwrap();
    let names: Vec<_> = listed.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, ["a", "b"]);
    let one = c.block_on(kc.list_configmaps(NS, "x=2")).unwrap();
    assert_eq!(one.len(), 1);
    assert_eq!(one[0].name, "b");
}

#[test]
fn secrets_are_decoded_and_only_the_named_one_is_readable() {
    let sim = sim();
    let (_case, c, kc) = connect(&sim, "controller");
    let data = c
        .block_on(kc.get_secret(NS, "modekeeper-license"))
        .unwrap()
        .unwrap();
    assert_eq!(data["license.json"], b"{\"a\":1}");
    // stringData was folded into data when stored, as the apiserver does.
    assert_eq!(data["keyring.json"], b"[]");
    // RBAC by resourceNames: another Secret in the same namespace is forbidden.
    let denied = c.block_on(kc.get_secret(NS, "other-secret")).unwrap_err();
    assert_eq!(denied.kind, ClusterErrorKind::Forbidden, "{denied}");
    // Absent is Ok(None) for a user who may read it.
    let (_case, c, kc) = connect(&sim, "t0");
    assert_eq!(c.block_on(kc.get_secret(NS, "nope")).unwrap(), None);
}

#[test]
fn labelled_workloads_are_listed_across_namespaces_and_absent_crds_are_empty() {
    let sim = sim();
    let (_case, c, kc) = connect(&sim, "t0");
    let sel = "modekeeper.io/enabled=true";
    let deps = c
        .block_on(kc.list_labelled(WorkloadKind::Deployment, None, sel))
        .unwrap();
    let names: Vec<_> = deps.iter().map(|w| w.target.name()).collect();
    assert_eq!(names, ["trainer"]);
    assert!(!deps[0].uid.is_empty());
    let sts = c
        .block_on(kc.list_labelled(WorkloadKind::StatefulSet, None, sel))
        .unwrap();
    assert_eq!(sts[0].target.namespace(), "team-b");
    let in_ml = c
        .block_on(kc.list_labelled(WorkloadKind::StatefulSet, Some("ml"), sel))
        .unwrap();
    assert!(in_ml.is_empty());
    // The CRDs are installed in this sim, with no objects.
    let jobs = c
        .block_on(kc.list_labelled(WorkloadKind::PyTorchJob, None, sel))
        .unwrap();
    assert!(jobs.is_empty());

    let bare = KubeSim::builder()
        .crds_absent(true)
        .token("t0", "alice", [Rule::admin()])
        .start_blocking()
        .unwrap();
    let (_case, c, kc) = connect(&bare, "t0");
    for kind in [WorkloadKind::PyTorchJob, WorkloadKind::JobSet] {
        assert_eq!(
            c.block_on(kc.list_labelled(kind, None, sel)).unwrap(),
            vec![]
        );
    }
}

fn key(uid: &str) -> WorkloadKey {
    WorkloadKey {
        kind: WorkloadKind::Deployment,
        namespace: "ml".into(),
        name: "trainer".into(),
        uid: uid.into(),
    }
}

/// A fresh session's state, as `closed-loop watch` would checkpoint it.
fn watch_state() -> WatchState {
    let passport = modekeeper::passport::template("safe").unwrap().unwrap();
    let (knobs, _) = modekeeper::closed_loop::starting_knobs(&passport, &BTreeMap::new());
    let setup = SessionSetup {
        passport,
        knobs,
        features: modekeeper::signals::FeatureConfig {
            window_steps: 10,
            warmup_steps: 0,
        },
        format: modekeeper::telemetry::Format::Jsonl,
        ingest: modekeeper::telemetry::IngestOptions::default(),
        config: json!({"source": "test"}),
    };
    Session::new(&setup).checkpoint(json!({"offset": 0}), vec![], "2026-12-03T00:00:00Z".into())
}

fn session(k: &WorkloadKey, replica: &str) -> StoredSession {
    let mut summary = WorkloadSummary::new(k, replica, 0, "2026-12-03T00:00:00Z");
    summary.status = SessionStatus::Running;
    StoredSession {
        state: Some(watch_state()),
        summary,
    }
}

#[test]
fn the_store_saves_loads_and_refuses_a_stale_write() {
    let sim = sim();
    let (_case, c, kc) = connect(&sim, "controller");
    let st = StateStore::new(kc.clone(), NS);
    let k = key("uid-1");
    assert!(c.block_on(st.load(&k)).unwrap().is_none());
    let rv1 = c.block_on(st.save(&k, &session(&k, "r0"), None)).unwrap();
    let (loaded, rv) = c.block_on(st.load(&k)).unwrap().unwrap();
    assert_eq!(rv, rv1);
    assert_eq!(loaded.summary.replica, "r0");
    let state = loaded.state.unwrap();
    assert_eq!(
        serde_json::to_value(&state).unwrap(),
        serde_json::to_value(watch_state()).unwrap()
    );
    let stored = sim
        .get(ResourceKind::ConfigMap, NS, &k.configmap_name())
        .unwrap();
    assert_eq!(stored["metadata"]["labels"][store::STATE_LABEL], "true");
    assert_eq!(
        stored["metadata"]["annotations"][store::WORKLOAD_UID_ANNOTATION],
        "uid-1"
    );

    // Two replicas, both at rv1: the first write wins, the second is a Conflict.
    let rv2 = c
        .block_on(st.save(&k, &session(&k, "r1"), Some(&rv1)))
        .unwrap();
    let lost = c
        .block_on(st.save(&k, &session(&k, "r2"), Some(&rv1)))
        .unwrap_err();
    assert!(matches!(lost, StoreError::Conflict { .. }), "{lost}");
    // A second create (the other replica found none and raced): Conflict too.
    let raced = c
        .block_on(st.save(&k, &session(&k, "r2"), None))
        .unwrap_err();
    assert!(matches!(raced, StoreError::Conflict { .. }), "{raced}");
    let (now, rv) = c.block_on(st.load(&k)).unwrap().unwrap();
    assert_eq!((now.summary.replica.as_str(), rv), ("r1", rv2));

    // A recreated workload (new uid) starts fresh.
    assert!(c.block_on(st.load(&key("uid-2"))).unwrap().is_none());
    let listed = c.block_on(st.list()).unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].workload.uid, "uid-1");
}

#[test]
fn tampered_foreign_and_oversized_state_is_refused() {
    let sim = sim();
    let (_case, c, kc) = connect(&sim, "t0");
    let st = StateStore::new(kc.clone(), NS);
    let k = key("uid-1");
    let rv = c.block_on(st.save(&k, &session(&k, "r0"), None)).unwrap();
    let name = k.configmap_name();
    let edit = |f: &dyn Fn(&mut ConfigMapData)| {
        let mut cm = c.block_on(kc.get_configmap(NS, &name)).unwrap().unwrap();
        f(&mut cm);
        c.block_on(kc.replace_configmap(&cm)).unwrap();
    };
    let _ = rv;

    // Someone points it at another workload.
    edit(&|cm| {
        cm.annotations
            .insert(store::WORKLOAD_UID_ANNOTATION.into(), "uid-9".into());
    });
    let err = c.block_on(st.load(&k)).unwrap_err();
    assert!(matches!(err, StoreError::Foreign { .. }), "{err}");
    assert!(err.to_string().contains(&name), "{err}");
    edit(&|cm| {
        cm.annotations
            .insert(store::WORKLOAD_UID_ANNOTATION.into(), "uid-1".into());
    });
    c.block_on(st.load(&k)).unwrap().unwrap();

    // A state that does not parse: an error naming the ConfigMap.
    edit(&|cm| {
        cm.data
            .insert(store::STATE_KEY.into(), "{\"schema_version\":".into());
    });
    let err = c.block_on(st.load(&k)).unwrap_err();
    assert!(matches!(err, StoreError::Invalid { .. }), "{err}");
    assert!(err.to_string().contains(&format!("{NS}/{name}")), "{err}");
    assert!(err.to_string().contains("state.json"), "{err}");

    // Padded past the cap (still under the server's 1 MiB).
    edit(&|cm| {
        cm.data
            .insert(store::STATE_KEY.into(), "x".repeat(950 * 1024));
    });
    let err = c.block_on(st.load(&k)).unwrap_err();
    assert!(matches!(err, StoreError::TooLarge { .. }), "{err}");

    // Listing keeps going past refused entries and says which.
    let other = key("uid-3");
    c.block_on(st.save(&other, &session(&other, "r0"), None))
        .unwrap();
    let entries = c.block_on(st.list_entries()).unwrap();
    assert_eq!(entries.len(), 2);
    assert_eq!(entries.iter().filter(|e| e.summary.is_err()).count(), 1);
    let ok = c.block_on(st.list()).unwrap();
    assert_eq!(ok.len(), 1);
    assert_eq!(ok[0].workload.uid, "uid-3");

    // The write side refuses it too, before sending anything.
    let mut big = session(&k, "r0");
    big.summary.error = Some("e".repeat(store::MAX_STATE_BYTES));
    let err = c.block_on(st.save(&k, &big, None)).unwrap_err();
    assert!(matches!(err, StoreError::TooLarge { .. }), "{err}");
}

#[test]
fn the_apiserver_size_limit_is_emulated() {
    let sim = sim();
    let (_case, c, kc) = connect(&sim, "t0");
    let huge = "z".repeat(1024 * 1024 + 1);
    let err = c
        .block_on(kc.create_configmap(&cm("huge", &[], &[("k", &huge)])))
        .unwrap_err();
    assert_eq!(err.kind, ClusterErrorKind::Invalid, "{err}");
}
