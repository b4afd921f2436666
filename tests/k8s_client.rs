//! The `ClusterApi` implementation (kube-rs) through the sync facade, against kube-sim: each call,
//! its error classes, and `read_current_knobs`.

mod k8s_common;

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_common::{Case, KNOB, closed_port, standard};
use kube_sim::{Fault, ResourceKind};
use modekeeper::k8s::{
    AccessCheck, Cluster, ClusterApi, ClusterErrorKind, ConnectOptions, KnobMergePatch,
    KnobReadError, PatchMode,
};
use modekeeper::plan::{KnobPatch, Target, WorkloadKind};

fn connect(case: &Case, timeout_ms: Option<u64>) -> Cluster {
    let opts = ConnectOptions::from_flags(
        Some(case.kubeconfig.to_str().unwrap()),
        None,
        None,
        timeout_ms,
    );
    Cluster::connect(&opts).expect("connect")
}

fn trainer() -> Target {
    Target::new("ml", "trainer", WorkloadKind::Deployment).unwrap()
}

fn knob_patch(value: &str) -> KnobPatch {
    KnobPatch {
        pod_template: BTreeMap::from([("grad_accum_steps".to_string(), value.to_string())]),
        ..KnobPatch::default()
    }
}

#[test]
fn calls_return_what_the_server_holds() {
    let sim = standard().start_blocking().unwrap();
    let case = Case::new(&sim, "t0");
    let c = connect(&case, None);
    assert_eq!(c.identity().context.as_deref(), Some("kube-sim"));
    assert_eq!(c.server_version().unwrap().git_version, "v1.32.4+kube-sim");

    let api = c.api();
    let ns = c.block_on(api.get_namespace("ml")).unwrap().unwrap();
    assert_eq!(ns.phase.as_deref(), Some("Active"));
    assert_eq!(c.block_on(api.get_namespace("nope")).unwrap(), None);

    let w = c.block_on(api.get_workload(&trainer())).unwrap().unwrap();
    let stored = sim.deployment("ml", "trainer").unwrap();
    assert_eq!(w.uid, stored["metadata"]["uid"].as_str().unwrap());
    assert_eq!(
        w.resource_version,
        stored["metadata"]["resourceVersion"].as_str().unwrap()
    );
    assert_eq!(w.template_annotations[KNOB], "4");
    let missing = Target::new("ml", "nope", WorkloadKind::StatefulSet).unwrap();
    assert_eq!(c.block_on(api.get_workload(&missing)).unwrap(), None);

    let can = c
        .block_on(api.review_access(&AccessCheck::on_workload("patch", &trainer())))
        .unwrap();
    assert!(can.allowed);

    // A dry run answers the would-be object and stores nothing; a write stores it.
    let body = KnobMergePatch::new(&knob_patch("8"), Some(&w.resource_version));
    let dry = c
        .block_on(api.patch_workload(&trainer(), &body, PatchMode::DryRun))
        .unwrap();
    assert_eq!(dry.template_annotations[KNOB], "8");
    assert_eq!(
        sim.template_annotation(ResourceKind::Deployment, "ml", "trainer", KNOB)
            .as_deref(),
        Some("4")
    );
    let written = c
        .block_on(api.patch_workload(&trainer(), &body, PatchMode::Write))
        .unwrap();
    assert_ne!(written.resource_version, w.resource_version);
    assert_eq!(
        sim.template_annotation(ResourceKind::Deployment, "ml", "trainer", KNOB)
            .as_deref(),
        Some("8")
    );
    // The same precondition is now stale: 409.
    let e = c
        .block_on(api.patch_workload(&trainer(), &body, PatchMode::DryRun))
        .unwrap_err();
    assert_eq!((e.kind, e.status), (ClusterErrorKind::Conflict, Some(409)));
    let managers: Vec<String> =
        sim.deployment("ml", "trainer").unwrap()["metadata"]["managedFields"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["manager"].as_str().unwrap().to_string())
            .collect();
    assert!(managers.contains(&"modekeeper".to_string()), "{managers:?}");
}

#[test]
fn errors_are_classified() {
    let sim = standard().start_blocking().unwrap();
    let ro = connect(&Case::new(&sim, "ro"), None);
    let body = KnobMergePatch::new(&knob_patch("8"), None);
    let e = ro
        .block_on(
            ro.api()
                .patch_workload(&trainer(), &body, PatchMode::DryRun),
        )
        .unwrap_err();
    assert_eq!((e.kind, e.status), (ClusterErrorKind::Forbidden, Some(403)));
    let r = e.rbac.expect("parsed denial");
    assert_eq!((r.user.as_str(), r.verb.as_str()), ("bob", "patch"));
    let cannot = ro
        .block_on(
            ro.api()
                .review_access(&AccessCheck::on_workload("patch", &trainer())),
        )
        .unwrap();
    assert!(!cannot.allowed);

    let bad = connect(&Case::new(&sim, "nope"), None);
    let e = bad.server_version().unwrap_err();
    assert_eq!(
        (e.kind, e.status),
        (ClusterErrorKind::Unauthorized, Some(401))
    );

    let dead = connect(
        &Case::with_server(&format!("https://127.0.0.1:{}", closed_port()), None),
        None,
    );
    assert_eq!(
        dead.server_version().unwrap_err().kind,
        ClusterErrorKind::Unreachable
    );

    // TLS against a server whose certificate the kubeconfig's (absent) CA does not vouch for.
    let untrusted = connect(&Case::with_server(&sim.https_url(), Some("t0")), None);
    let e = untrusted.server_version().unwrap_err();
    assert_eq!(e.kind, ClusterErrorKind::Unreachable, "{e}");

    sim.inject_fault(Fault::status("/api/v1/namespaces/ml", 503));
    let admin = connect(&Case::new(&sim, "t0"), Some(300));
    let e = admin.block_on(admin.api().get_namespace("ml")).unwrap_err();
    assert_eq!(e.kind, ClusterErrorKind::ServerError);
    sim.clear_faults();
    sim.inject_fault(Fault::hang("/version"));
    let started = std::time::Instant::now();
    let e = admin.server_version().unwrap_err();
    assert_eq!(e.kind, ClusterErrorKind::Timeout);
    assert!(
        e.message.ends_with("no answer within 300ms"),
        "{}",
        e.message
    );
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[test]
fn current_knobs_come_from_the_pod_template() {
    let sim = standard()
        .workload(
            kube_sim::WorkloadSeed::deployment("ml", "odd")
                .template_annotation("modekeeper/knob.lr_scale", "fast"),
        )
        .start_blocking()
        .unwrap();
    let c = connect(&Case::new(&sim, "t0"), None);
    assert_eq!(
        c.read_current_knobs(&trainer()).unwrap(),
        BTreeMap::from([("grad_accum_steps".to_string(), 4.0)])
    );
    let db = Target::new("ml", "db", WorkloadKind::StatefulSet).unwrap();
    assert_eq!(
        c.read_current_knobs(&db).unwrap(),
        BTreeMap::from([("grad_accum_steps".to_string(), 2.0)])
    );
    let gone = Target::new("ml", "gone", WorkloadKind::Deployment).unwrap();
    assert!(matches!(
        c.read_current_knobs(&gone),
        Err(KnobReadError::WorkloadMissing { .. })
    ));
    let odd = Target::new("ml", "odd", WorkloadKind::Deployment).unwrap();
    let e = c.read_current_knobs(&odd).unwrap_err().to_string();
    assert!(e.contains("\"fast\" is not a number"), "{e}");
    // A cluster problem is a cluster error, not "no knobs".
    sim.inject_fault(Fault::status("/apis/apps/v1/**", 500));
    assert!(matches!(
        c.read_current_knobs(&trainer()),
        Err(KnobReadError::Cluster(e)) if e.kind == ClusterErrorKind::ServerError
    ));
}
