//! The verification engine against an in-memory [`ClusterApi`]: concurrency bound, per-namespace
//! reads, stopping once the server is gone, and which failures block.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use serde_json::{Value, json};

use super::*;
use crate::k8s::{
    AccessDecision, ClusterIdentity, ConfigSource, ServerVersion, Workload, knob_annotation,
};
use crate::plan::{KnobPatch, Target, WorkloadKind};

#[derive(Default)]
struct Fake {
    namespaces: BTreeSet<String>,
    workloads: BTreeMap<String, Value>,
    /// Per workload name: the error its read fails with.
    read_errors: BTreeMap<String, ClusterError>,
    patch_error: Option<ClusterError>,
    namespace_error: Option<ClusterError>,
    review_error: Option<ClusterError>,
    in_flight: AtomicUsize,
    max_in_flight: AtomicUsize,
    namespace_reads: AtomicUsize,
    reads: Mutex<Vec<String>>,
}

fn identity() -> ClusterIdentity {
    ClusterIdentity {
        context: Some("test".into()),
        cluster: Some("test".into()),
        server: "https://fake".into(),
        user: Some("carol".into()),
        namespace: "default".into(),
        source: ConfigSource::InCluster,
    }
}

static IDENTITY: std::sync::LazyLock<ClusterIdentity> = std::sync::LazyLock::new(identity);

impl Fake {
    fn with(names: &[(&str, &str)]) -> Fake {
        let mut f = Fake::default();
        for (ns, name) in names {
            f.namespaces.insert(ns.to_string());
            f.workloads.insert(
                format!("{ns}/{name}"),
                json!({"metadata": {"name": name, "namespace": ns, "uid": format!("uid-{name}"),
                                    "resourceVersion": "7"},
                       "spec": {"template": {"metadata": {"annotations": {knob_annotation("k"): "1"}}}}}),
            );
        }
        f
    }
}

impl ClusterApi for Fake {
    fn identity(&self) -> &ClusterIdentity {
        &IDENTITY
    }

    async fn server_version(&self) -> Result<ServerVersion, ClusterError> {
        Ok(ServerVersion {
            git_version: "v1.33.0".into(),
            platform: None,
        })
    }

    async fn get_namespace(&self, name: &str) -> Result<Option<NamespaceInfo>, ClusterError> {
        self.namespace_reads.fetch_add(1, Ordering::SeqCst);
        if let Some(e) = &self.namespace_error {
            return Err(e.clone());
        }
        Ok(self.namespaces.contains(name).then(|| NamespaceInfo {
            name: name.into(),
            phase: Some("Active".into()),
        }))
    }

    async fn get_workload(&self, target: &Target) -> Result<Option<Workload>, ClusterError> {
        let now = self.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        self.max_in_flight.fetch_max(now, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(5)).await;
        self.in_flight.fetch_sub(1, Ordering::SeqCst);
        self.reads.lock().unwrap().push(target.name().to_string());
        if let Some(e) = self.read_errors.get(target.name()) {
            return Err(e.clone());
        }
        let key = format!("{}/{}", target.namespace(), target.name());
        match self.workloads.get(&key) {
            Some(v) => Workload::from_object(target, v.clone()).map(Some),
            None => Ok(None),
        }
    }

    async fn review_access(&self, check: &AccessCheck) -> Result<AccessDecision, ClusterError> {
        if let Some(e) = &self.review_error {
            return Err(e.clone());
        }
        Ok(AccessDecision {
            allowed: check.verb == "get",
            denied: false,
            reason: None,
        })
    }

    async fn patch_workload(
        &self,
        target: &Target,
        patch: &KnobMergePatch,
        mode: PatchMode,
    ) -> Result<Workload, ClusterError> {
        assert_eq!(mode, PatchMode::DryRun);
        assert_eq!(patch.as_json()["metadata"]["resourceVersion"], "7");
        if let Some(e) = &self.patch_error {
            return Err(e.clone());
        }
        let key = format!("{}/{}", target.namespace(), target.name());
        let mut v = self.workloads[&key].clone();
        merge(&mut v, patch.as_json());
        Workload::from_object(target, v)
    }
}

/// RFC 7386 JSON merge patch.
fn merge(target: &mut Value, patch: &Value) {
    let Value::Object(p) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = json!({});
    }
    let t = target.as_object_mut().unwrap();
    for (k, v) in p {
        if v.is_null() {
            t.remove(k);
        } else {
            merge(t.entry(k.clone()).or_insert(Value::Null), v);
        }
    }
}

fn plan(names: &[(&str, &str)]) -> Plan {
    let items = names
        .iter()
        .map(|(ns, name)| {
            let patch = KnobPatch {
                pod_template: BTreeMap::from([("k".to_string(), "2".to_string())]),
                ..KnobPatch::default()
            };
            PlanItem::new(
                Target::new(ns, name, WorkloadKind::Deployment).unwrap(),
                patch,
            )
            .unwrap()
        })
        .collect();
    Plan::from_items(items).unwrap()
}

fn run(fake: &Fake, plan: &Plan, concurrency: usize) -> VerifyOutcome {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(verify_plan(fake, plan, concurrency))
}

#[test]
fn in_flight_items_never_exceed_the_bound_and_namespaces_are_read_once() {
    let names: Vec<(String, String)> = (0..40)
        .map(|i| (format!("ns{}", i % 2), format!("w{i}")))
        .collect();
    let refs: Vec<(&str, &str)> = names
        .iter()
        .map(|(a, b)| (a.as_str(), b.as_str()))
        .collect();
    let fake = Fake::with(&refs);
    let out = run(&fake, &plan(&refs), 4);
    assert!(out.ok(), "{:?}", out.blockers);
    assert_eq!(fake.max_in_flight.load(Ordering::SeqCst), 4);
    assert_eq!(fake.namespace_reads.load(Ordering::SeqCst), 2);
    assert_eq!(out.items.len(), 40);
    assert!(
        out.items
            .iter()
            .enumerate()
            .all(|(i, it)| it.index == i && it.ok)
    );
    assert_eq!(out.items[3].knobs["k"].current.as_deref(), Some("1"));
    // A patch that only touches the knob gives one expected diff entry.
    assert_eq!(out.items[0].diff.len(), 1);
    assert!(out.items[0].diff[0].expected);
}

#[test]
fn once_the_server_is_unreachable_no_new_item_starts() {
    let names = [("ml", "a"), ("ml", "b"), ("ml", "c"), ("ml", "d")];
    let mut fake = Fake::with(&names);
    fake.read_errors.insert(
        "b".into(),
        ClusterError::new(ClusterErrorKind::Unreachable, "connection refused"),
    );
    let out = run(&fake, &plan(&names), 1);
    assert_eq!(*fake.reads.lock().unwrap(), ["a", "b"]);
    let b = out.blocker().unwrap();
    assert_eq!(
        (b.kind, b.index),
        (BlockerKind::ClusterUnreachable, Some(1))
    );
    assert!(out.items[0].ok);
    assert!(!out.items[2].checked && !out.items[3].checked);
    assert_eq!(out.blockers.len(), 1, "unchecked items add no blockers");
}

#[test]
fn a_forbidden_dry_run_without_a_parsable_message_still_gets_a_rule() {
    let names = [("ml", "a")];
    let mut fake = Fake::with(&names);
    fake.patch_error = Some(ClusterError::from_status(403, "forbidden"));
    let out = run(&fake, &plan(&names), 16);
    let it = &out.items[0];
    assert_eq!(it.blocker, Some(BlockerKind::RbacDenied));
    assert_eq!(it.can_i_patch, Some(false));
    let r = it.rbac.as_ref().unwrap();
    assert_eq!((r.user.as_str(), r.verb.as_str()), ("carol", "patch"));
    assert_eq!(r.suggested_rule.resources, ["deployments"]);
    assert_eq!(r.name.as_deref(), Some("a"));
}

#[test]
fn diagnostic_failures_do_not_block_when_the_decisive_calls_succeed() {
    let names = [("ml", "a")];
    let mut fake = Fake::with(&names);
    fake.namespace_error = Some(ClusterError::from_status(
        403,
        "namespaces \"ml\" is forbidden: User \"carol\" cannot get resource \"namespaces\" in API group \"\" in the namespace \"ml\"",
    ));
    fake.review_error = Some(ClusterError::from_status(500, "boom"));
    let out = run(&fake, &plan(&names), 16);
    assert!(out.ok(), "{:?}", out.blockers);
    let it = &out.items[0];
    assert_eq!(it.namespace_exists, Some(true), "the workload proves it");
    assert_eq!(it.can_i_get, None);
    let steps: Vec<Step> = it.errors.iter().map(|e| e.step).collect();
    assert_eq!(steps, [Step::Namespace, Step::CanIGet, Step::CanIPatch]);
}

#[test]
fn a_failed_namespace_read_decides_when_the_workload_is_missing() {
    let fake = Fake {
        namespace_error: Some(ClusterError::from_status(503, "unavailable")),
        ..Fake::default()
    };
    let out = run(&fake, &plan(&[("ml", "a")]), 16);
    let b = out.blocker().unwrap();
    // Whether "ml" exists is unknown; the 503 outranks the missing workload.
    assert_eq!(b.kind, BlockerKind::ServerError);
    assert_eq!(out.items[0].namespace_exists, None);
    assert_eq!(out.items[0].workload_exists, Some(false));

    // Not allowed to read namespaces: the workload is missing, and the detail says the namespace's
    // existence is unknown (a 403 there is no reason to block on permissions we do not need).
    let fake = Fake {
        namespace_error: Some(ClusterError::from_status(403, "forbidden")),
        ..Fake::default()
    };
    let out = run(&fake, &plan(&[("ml", "a")]), 16);
    let b = out.blocker().unwrap();
    assert_eq!(b.kind, BlockerKind::WorkloadMissing);
    assert!(
        b.detail.contains("whether the namespace exists is unknown"),
        "{}",
        b.detail
    );
}

#[test]
fn a_rules_review_decides_or_leaves_it_to_an_access_review() {
    use crate::k8s::{ResourceRule, RulesReview};
    let rule = |verbs: &[&str], groups: &[&str], resources: &[&str], names: &[&str]| ResourceRule {
        verbs: verbs.iter().map(|s| s.to_string()).collect(),
        api_groups: groups.iter().map(|s| s.to_string()).collect(),
        resources: resources.iter().map(|s| s.to_string()).collect(),
        resource_names: names.iter().map(|s| s.to_string()).collect(),
    };
    let t = Target::new("ml", "trainer", WorkloadKind::Deployment).unwrap();
    let (get, patch) = (
        AccessCheck::on_workload("get", &t),
        AccessCheck::on_workload("patch", &t),
    );
    let mut r = RulesReview {
        rules: vec![
            rule(&["get", "list"], &["apps"], &["deployments"], &[]),
            rule(&["patch"], &["apps"], &["deployments"], &["other"]),
        ],
        incomplete: false,
    };
    assert_eq!(r.decide(&get), Some(true));
    assert_eq!(r.decide(&patch), Some(false), "resourceNames restrict");
    r.incomplete = true;
    assert_eq!(r.decide(&patch), None, "an incomplete list cannot deny");
    r.rules.push(rule(&["*"], &["*"], &["*"], &[]));
    assert_eq!(r.decide(&patch), Some(true));
    let cm = Target::new("ml", "t-modekeeper-knobs", WorkloadKind::ConfigMap).unwrap();
    let c = AccessCheck::on_workload("patch", &cm);
    assert_eq!((c.group.as_str(), c.resource.as_str()), ("", "configmaps"));
}
