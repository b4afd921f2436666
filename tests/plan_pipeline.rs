//! Envelope → plan → `k8s_plan.json` → `k8s render`: the library's plan document renders through the
//! binary with the same digest, and only the envelope's accepted values reach the script.

use std::collections::BTreeMap;

use assert_cmd::Command;
use modekeeper::envelope::{BlockReason, EnvelopeState, EvalPoint, Proposal, enforce};
use modekeeper::passport::template;
use modekeeper::plan::{PLAN_FILE, Target, WorkloadKind, build_plan, parse_plan};
use serde_json::Value;

#[test]
fn accepted_proposals_become_a_plan_that_renders_with_the_same_digest() {
    let passport = template("perf").unwrap().unwrap();
    let current: BTreeMap<String, f64> = [
        ("concurrency", 8.0),
        ("dataloader_prefetch_factor", 2.0),
        ("microbatch_size", 32.0),
        ("grad_accum_steps", 4.0),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    let proposals = [
        Proposal {
            chord: "BURST-ABSORB".into(),
            knob: "concurrency".into(),
            to: 4.0,
            reason: "latency_burst".into(),
        },
        Proposal {
            chord: "BURST-ABSORB".into(),
            knob: "dataloader_prefetch_factor".into(),
            to: 3.0,
            reason: "latency_burst".into(),
        },
        Proposal {
            chord: "DRIFT-RETUNE".into(),
            knob: "grad_accum_steps".into(),
            to: 8.0,
            reason: "drift".into(),
        },
        Proposal {
            chord: "TIMEOUT-GUARD".into(),
            knob: "timeout_ms".into(),
            to: 15000.0,
            reason: "straggler".into(),
        },
    ];
    let at = EvalPoint {
        at_ms: 1_700_000_000_000,
        window: 42,
    };
    let outcome = enforce(
        &passport,
        &current,
        &EnvelopeState::default(),
        at,
        &proposals,
    );
    let accepted: Vec<(&str, f64)> = outcome
        .accepted
        .iter()
        .map(|a| (a.knob.as_str(), a.to))
        .collect();
    // perf: max delta 2 per step, so 8 → 6; prefetch 2 → 3 is within a step.
    assert_eq!(
        accepted,
        [("concurrency", 6.0), ("dataloader_prefetch_factor", 3.0)]
    );
    let blocked: Vec<BlockReason> = outcome.blocked.iter().map(|b| b.reason).collect();
    assert_eq!(
        blocked,
        [
            BlockReason::InvariantGlobalBatch,
            BlockReason::ChordNotAllowed
        ]
    );

    let target = Target::new("ml", "trainer", WorkloadKind::Deployment).unwrap();
    let plan = build_plan(&target, &outcome.accepted).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(tmp.path().join(PLAN_FILE), plan.to_document()).unwrap();
    assert_eq!(parse_plan(&plan.to_document()).unwrap().0, plan);

    let out = Command::cargo_bin("kubectl-modekeeper")
        .unwrap()
        .current_dir(tmp.path())
        .args([
            "-o", "json", "k8s", "render", "--plan", PLAN_FILE, "--out", "out",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["plan_digest"], plan.digest());
    assert_eq!(report["plan_format"], "envelope");
    let script = std::fs::read_to_string(tmp.path().join("out/k8s_plan.kubectl.sh")).unwrap();
    assert!(script.ends_with(
        "kubectl -n 'ml' patch 'deployment/trainer' --type merge -p '{\"spec\":{\"template\":{\"metadata\":{\"annotations\":\
         {\"modekeeper/knob.concurrency\":\"6\",\"modekeeper/knob.dataloader_prefetch_factor\":\"3\"}}}}}'\n"
    ));
}
