use serde_json::json;

use super::*;
use crate::envelope::{Accepted, Limit};

fn accepted(knob: &str, to: f64) -> Accepted {
    Accepted {
        knob: knob.into(),
        from: 1.0,
        to,
        reason: "r".into(),
        chord: "BURST-ABSORB".into(),
        limited_by: Some(Limit::MaxDelta),
        requested: Some(to),
    }
}

fn target() -> Target {
    Target::new("default", "trainer", WorkloadKind::Deployment).unwrap()
}

fn err(text: &str) -> PlanError {
    parse_plan(text).unwrap_err()
}

fn item_err(text: &str) -> (usize, String) {
    let e = err(text);
    assert_eq!(e.kind, PlanErrorKind::InvalidItem, "{e}");
    (e.index.unwrap(), e.message)
}

#[test]
fn dns1123() {
    for ok in ["a", "default", "kube-system", "a1", &"a".repeat(63)] {
        assert!(is_dns1123_label(ok), "{ok}");
    }
    for bad in [
        "",
        "-a",
        "a-",
        "A",
        "a_b",
        "a.b",
        "ns1; touch x",
        "é",
        &"a".repeat(64),
    ] {
        assert!(!is_dns1123_label(bad), "{bad}");
    }
    assert!(is_dns1123_subdomain("trainer.v2"));
    assert!(!is_dns1123_subdomain("trainer..v2"));
    assert!(!is_dns1123_subdomain("dep1$(id)"));
    assert!(!is_dns1123_subdomain(&format!(
        "{}.{}",
        "a".repeat(63),
        "b".repeat(200)
    )));
}

#[test]
fn builds_pod_template_annotations_with_integer_formatting() {
    let plan = build_plan(
        &target(),
        &[
            accepted("concurrency", 4.0),
            accepted("dataloader_prefetch_factor", 2.5),
        ],
    )
    .unwrap();
    assert_eq!(
        plan.items_json(),
        json!([{"namespace": "default", "name": "trainer", "kind": "Deployment", "patch": {"spec": {"template": {"metadata":
            {"annotations": {"modekeeper/knob.concurrency": "4", "modekeeper/knob.dataloader_prefetch_factor": "2.5"}}}}}}])
    );
    assert!(build_plan(&target(), &[]).unwrap().is_empty());
}

#[test]
fn the_three_input_forms_give_the_same_plan_and_digest() {
    let item = json!({"namespace": "ns1", "name": "dep1",
                      "patch": {"spec": {"template": {"metadata": {"annotations": {"modekeeper/knob.concurrency": "4"}}}}}});
    let (a, fa) = parse_plan(&json!([item]).to_string()).unwrap();
    let (o, fo) = parse_plan(&item.to_string()).unwrap();
    let (e, fe) =
        parse_plan(&json!({"schema_version": "k8s_plan.v1", "items": [item]}).to_string()).unwrap();
    assert_eq!(
        (fa, fo, fe),
        (PlanFormat::Array, PlanFormat::Object, PlanFormat::Envelope)
    );
    assert_eq!(a, o);
    assert_eq!(a, e);
    assert_eq!(a.digest(), e.digest());
    // The document it writes loads back to the same plan, digest checked.
    let (back, _) = parse_plan(&a.to_document()).unwrap();
    assert_eq!(back, a);
}

#[test]
fn digest_is_canonical_and_pinned() {
    let plan = build_plan(&target(), &[accepted("concurrency", 4.0)]).unwrap();
    let canonical = canonical_json(&plan.items_json());
    assert_eq!(
        canonical,
        r#"[{"kind":"Deployment","name":"trainer","namespace":"default","patch":{"spec":{"template":{"metadata":{"annotations":{"modekeeper/knob.concurrency":"4"}}}}}}]"#
    );
    assert_eq!(plan.digest(), sha256_prefixed(canonical.as_bytes()));
    // Key order and whitespace in the input do not matter; values do.
    let reordered = r#"[ {"patch": {"spec": {"template": {"metadata": {"annotations": {"modekeeper/knob.concurrency": "4"}}}}},
                         "kind": "Deployment", "name": "trainer", "namespace": "default"} ]"#;
    assert_eq!(parse_plan(reordered).unwrap().0.digest(), plan.digest());
    assert_ne!(
        build_plan(&target(), &[accepted("concurrency", 5.0)])
            .unwrap()
            .digest(),
        plan.digest()
    );
}

#[test]
fn envelope_digest_must_match() {
    let plan = build_plan(&target(), &[accepted("concurrency", 4.0)]).unwrap();
    let mut doc: serde_json::Value = serde_json::from_str(&plan.to_document()).unwrap();
    doc["items"][0]["patch"]["spec"]["template"]["metadata"]["annotations"]["modekeeper/knob.concurrency"] =
        "64".into();
    let e = err(&doc.to_string());
    assert_eq!(e.kind, PlanErrorKind::InvalidShape);
    assert!(e.message.contains("does not match"), "{e}");
}

#[test]
fn reference_plans_are_judged_strictly() {
    // The reference's closed-loop output: object and pod-template annotations, apiVersion, reason.
    let legacy = r#"[{"apiVersion":"apps/v1","kind":"Deployment","namespace":"default","name":"trainer","reason":"coalesced",
        "patch":{"metadata":{"annotations":{"modekeeper/knob.concurrency":"4"}},
                 "spec":{"template":{"metadata":{"annotations":{"modekeeper/knob.concurrency":"4"}}}}}}]"#;
    let (plan, _) = parse_plan(legacy).unwrap();
    assert_eq!(
        plan.items()[0]
            .patch()
            .knobs()
            .into_iter()
            .collect::<Vec<_>>(),
        [("concurrency", "4")]
    );

    // original-samples/_inputs: plan_baditem, plan_envelope, plan_inject, plan_quote.
    assert_eq!(
        item_err(r#"[{"namespace":"ns1","patch":"nope"}]"#),
        (0, "plan item at index 0: name: missing".into())
    );
    let env = r#"{"schema_version":"k8s_plan.v1","items":[{"namespace":"ns1","name":"dep1","patch":{"spec":{"replicas":1}}}]}"#;
    assert_eq!(
        item_err(env),
        (0, "plan item at index 0: patch.spec.replicas: not allowed (a plan may only set modekeeper/knob.* annotations)".into())
    );
    let inject =
        r#"[{"namespace":"ns1; touch /tmp/x","name":"dep1$(id)","patch":{"spec":{"replicas":1}}}]"#;
    let (i, m) = item_err(inject);
    assert_eq!(i, 0);
    assert!(
        m.starts_with(
            r#"plan item at index 0: namespace: "ns1; touch /tmp/x" is not a DNS-1123 label"#
        ),
        "{m}"
    );
    let quote = r#"[{"namespace":"ns1","name":"dep1","patch":{"metadata":{"annotations":{"modekeeper/note":"O'Reilly"}}}}]"#;
    assert!(
        item_err(quote)
            .1
            .contains(r#"key modekeeper/note is not a modekeeper/knob.* annotation"#)
    );
}

#[test]
fn item_validation_errors() {
    let ok = json!({"namespace": "ns", "name": "dep", "patch": {"spec": {"template": {"metadata": {"annotations": {"modekeeper/knob.concurrency": "4"}}}}}});
    type Mutation = fn(&mut serde_json::Value);
    let cases: Vec<(Mutation, &str)> = vec![
        (|v| *v = json!(3), "must be an object"),
        (|v| v["namespace"] = json!(7), "namespace: must be a string"),
        (
            |v| v["name"] = json!("Dep"),
            "name: \"Dep\" is not a DNS-1123 subdomain",
        ),
        (|v| v["name"] = json!("a\nb"), "name: \"a\\nb\" is not"),
        (
            |v| v["kind"] = json!("DaemonSet"),
            "kind: \"DaemonSet\" is not allowed",
        ),
        (
            |v| v["apiVersion"] = json!("v1"),
            "apiVersion: \"v1\" is not apps/v1",
        ),
        (|v| v["extra"] = json!(1), "extra: unknown field"),
        (|v| v["bad\nkey"] = json!(1), "\"bad\\nkey\": unknown field"),
        (
            |v| {
                v.as_object_mut()
                    .unwrap()
                    .remove("patch")
                    .map(drop)
                    .unwrap_or(())
            },
            "patch: missing",
        ),
        (
            |v| v["patch"] = json!({}),
            "patch: sets no modekeeper/knob.* annotation",
        ),
        (
            |v| v["patch"] = json!({"metadata": {"labels": {}}}),
            "patch.metadata.labels: not allowed",
        ),
        (
            |v| v["patch"] = json!({"spec": {"template": {"spec": {}}}}),
            "patch.spec.template.spec: not allowed",
        ),
        (
            |v| v["patch"] = json!({"spec": {"template": {"metadata": {"annotations": {"modekeeper/knob.x": 4}}}}}),
            "value must be a string",
        ),
        (
            |v| v["patch"] = json!({"spec": {"template": {"metadata": {"annotations": {"modekeeper/knob.x": true}}}}}),
            "value must be a string",
        ),
        (
            |v| v["patch"] = json!({"spec": {"template": {"metadata": {"annotations": {"modekeeper/knob.Bad": null}}}}}),
            "knob names are snake_case",
        ),
        (
            |v| {
                v["patch"] = json!({"metadata": {"annotations": {"modekeeper/knob.x": "1"}},
                                    "spec": {"template": {"metadata": {"annotations": {"modekeeper/knob.x": null}}}}})
            },
            "one place sets it and another removes it",
        ),
        (
            |v| v["patch"] = json!({"spec": {"template": {"metadata": {"annotations": {"modekeeper/knob.Bad": "1"}}}}}),
            "knob names are snake_case",
        ),
        (
            |v| v["patch"] = json!({"spec": {"template": {"metadata": {"annotations": {"modekeeper/knob.": "1"}}}}}),
            "knob names are snake_case",
        ),
        (
            |v| v["patch"] = json!({"spec": {"template": {"metadata": {"annotations": {"modekeeper/knob.x": "a".repeat(1025)}}}}}),
            "longer than 1024",
        ),
        (
            |v| {
                v["patch"] = json!({"metadata": {"annotations": {"modekeeper/knob.x": "1"}},
                                    "spec": {"template": {"metadata": {"annotations": {"modekeeper/knob.x": "2"}}}}})
            },
            "object sets \"1\" but the pod template sets \"2\"",
        ),
    ];
    for (mutate, want) in cases {
        let mut v = ok.clone();
        mutate(&mut v);
        let (i, m) = item_err(&json!([ok, v]).to_string());
        assert_eq!(i, 1);
        assert!(
            m.starts_with("plan item at index 1: ") && m.contains(want),
            "{m} (wanted {want})"
        );
        assert!(!m.contains('\n'), "{m}");
    }
    let (i, m) = item_err(&json!([ok, ok]).to_string());
    assert_eq!(i, 1);
    assert!(m.contains("already patched by item 0"), "{m}");
    let mut sts = ok.clone();
    sts["kind"] = json!("StatefulSet");
    assert_eq!(
        parse_plan(&json!([ok, sts]).to_string())
            .unwrap()
            .0
            .items()
            .len(),
        2,
        "same name, other kind"
    );
}

#[test]
fn shape_errors() {
    assert_eq!(err("{").kind, PlanErrorKind::InvalidJson);
    assert_eq!(err("3").kind, PlanErrorKind::InvalidShape);
    assert_eq!(
        err(r#"{"items": []}"#).message,
        "plan envelope: schema_version must be \"k8s_plan.v2\" or \"k8s_plan.v1\""
    );
    assert!(
        err(r#"{"schema_version": "k8s_plan.v3", "items": []}"#)
            .message
            .contains("is not k8s_plan.v2 or k8s_plan.v1")
    );
    assert!(
        err(r#"{"schema_version": "k8s_plan.v1", "items": {}}"#)
            .message
            .contains("items must be an array")
    );
    assert!(
        err(r#"{"schema_version": "k8s_plan.v1", "items": [], "x": 1}"#)
            .message
            .contains("unknown key x")
    );
    // Duplicate keys, at any depth: serde_json alone would keep the last value silently.
    for dup in [
        r#"{"schema_version": "k8s_plan.v1", "schema_version": "k8s_plan.v1", "items": []}"#,
        r#"[{"namespace": "ml", "name": "a", "name": "b", "patch": {"metadata": {"annotations": {"modekeeper/knob.x": "1"}}}}]"#,
        r#"[{"namespace": "ml", "name": "t", "patch": {"metadata": {"annotations":
            {"modekeeper/knob.concurrency": "4", "modekeeper/knob.concurrency": "100000"}}}}]"#,
    ] {
        let e = err(dup);
        assert_eq!(e.kind, PlanErrorKind::InvalidJson, "{e}");
        assert!(e.message.contains("duplicate key "), "{e}");
    }
    let many = format!("[{}]", vec!["{}"; super::load::MAX_ITEMS + 1].join(","));
    assert!(err(&many).message.contains("at most 1000"));
    assert!(parse_plan("[]").unwrap().0.is_empty());
}

#[test]
fn uniform_or_mixed() {
    let t = |ns: &str, n: &str| json!({"namespace": ns, "name": n, "patch": {"spec": {"template": {"metadata": {"annotations": {"modekeeper/knob.a": "1"}}}}}});
    let (p, _) = parse_plan(&json!([t("a", "x"), t("a", "y")]).to_string()).unwrap();
    assert_eq!(p.uniform(Target::namespace), Some("a"));
    assert_eq!(p.uniform(Target::name), Some("mixed"));
    assert_eq!(Plan::default().uniform(Target::name), None);
}

#[test]
fn script_quotes_everything_and_an_empty_plan_runs_no_kubectl() {
    let plan = build_plan(
        &Target::new("ns", "dep", WorkloadKind::StatefulSet).unwrap(),
        &[accepted("concurrency", 4.0)],
    )
    .unwrap();
    let s = render_kubectl_script(&plan);
    assert!(s.starts_with("#!/usr/bin/env bash\n"));
    assert!(s.contains(&format!("# plan_digest: {}\n", plan.digest())));
    assert!(s.ends_with(
        "kubectl -n 'ns' patch 'statefulset/dep' --type merge -p '{\"spec\":{\"template\":{\"metadata\":{\"annotations\":{\"modekeeper/knob.concurrency\":\"4\"}}}}}'\n"
    ));
    let empty = render_kubectl_script(&Plan::default());
    assert!(!empty.contains("kubectl"), "{empty}");
    assert!(empty.contains("set -Eeuo pipefail"));
}

#[test]
fn shell_quote_cases() {
    assert_eq!(shell_quote(""), "''");
    assert_eq!(shell_quote("O'Reilly"), r"'O'\''Reilly'");
    assert_eq!(shell_quote("$(id) `x` ; \\ \n"), "'$(id) `x` ; \\ \n'");
}

#[test]
fn a_null_knob_is_a_removal_that_round_trips() {
    let text = r#"[{"namespace": "ml", "name": "trainer", "patch": {"spec": {"template": {"metadata":
        {"annotations": {"modekeeper/knob.grad_accum_steps": "4", "modekeeper/knob.microbatch_size": null}}}}}}]"#;
    let (plan, _) = parse_plan(text).unwrap();
    let patch = plan.items()[0].patch();
    assert_eq!(
        patch.knobs().into_iter().collect::<Vec<_>>(),
        [("grad_accum_steps", "4")]
    );
    assert_eq!(
        patch.removed_knobs().into_iter().collect::<Vec<_>>(),
        ["microbatch_size"]
    );
    let json = patch.to_json();
    assert_eq!(
        json["spec"]["template"]["metadata"]["annotations"]["modekeeper/knob.microbatch_size"],
        serde_json::Value::Null
    );
    // The document form keeps the removal, so a rollback plan reloads to the same plan and digest.
    let (again, _) = parse_plan(&plan.to_document()).unwrap();
    assert_eq!(again, plan);
    assert_eq!(again.digest(), plan.digest());
    assert!(render_kubectl_script(&plan).contains("\"modekeeper/knob.microbatch_size\":null"));
    // A patch that only removes is a patch.
    let only = r#"{"namespace": "ml", "name": "t", "patch": {"metadata": {"annotations": {"modekeeper/knob.x": null}}}}"#;
    assert!(parse_plan(only).is_ok());
}

fn hot_knob(k: &str) -> bool {
    k == "concurrency"
}

#[test]
fn hot_knobs_go_to_the_configmap_cold_ones_to_a_mutable_template() {
    let changes = [
        accepted("concurrency", 6.0),
        accepted("grad_accum_steps", 8.0),
    ];
    let plan = build_actuated_plan(
        &target(),
        &changes,
        hot_knob,
        "trainer-modekeeper-knobs",
        &[],
    )
    .unwrap();
    assert_eq!(
        plan.items_json(),
        json!([
            {"namespace": "default", "name": "trainer-modekeeper-knobs", "kind": "ConfigMap",
             "patch": {"data": {"concurrency": "6"}}, "takes_effect": "live", "restart_required": false,
             "workload": {"kind": "Deployment", "name": "trainer"}},
            {"namespace": "default", "name": "trainer", "kind": "Deployment",
             "patch": {"spec": {"template": {"metadata": {"annotations": {"modekeeper/knob.grad_accum_steps": "8"}}}}},
             "takes_effect": "rollout", "restart_required": true},
        ])
    );
    assert!(
        plan.to_document()
            .contains("\"schema_version\": \"k8s_plan.v2\"")
    );
    // A hot-only change never touches the pod template.
    let hot_only = build_actuated_plan(&target(), &changes[..1], hot_knob, "cm", &[]).unwrap();
    assert_eq!(hot_only.items().len(), 1);
    assert_eq!(hot_only.items()[0].target().kind(), WorkloadKind::ConfigMap);
    assert!(hot_only.items()[0].patch().pod_template.is_empty());
}

#[test]
fn an_immutable_template_sends_cold_knobs_to_the_configmap_for_the_next_pod_start() {
    for kind in [WorkloadKind::Job, WorkloadKind::JobSet] {
        let t = Target::new("ml", "train", kind).unwrap();
        let plan = build_actuated_plan(
            &t,
            &[
                accepted("concurrency", 6.0),
                accepted("grad_accum_steps", 8.0),
            ],
            hot_knob,
            "train-modekeeper-knobs",
            &[],
        )
        .unwrap();
        assert_eq!(plan.items().len(), 1, "{kind:?}");
        let item = &plan.items()[0];
        assert_eq!(item.target().kind(), WorkloadKind::ConfigMap);
        assert_eq!(item.takes_effect(), Some(TakesEffect::NextPodStart));
        assert_eq!(
            item.patch().to_json(),
            json!({"data": {"concurrency": "6", "grad_accum_steps": "8"}})
        );
    }
}

#[test]
fn a_pytorchjob_patches_every_replica_role_template() {
    let t = Target::new("ml", "ddp", WorkloadKind::PyTorchJob).unwrap();
    let plan = build_actuated_plan(
        &t,
        &[accepted("grad_accum_steps", 8.0)],
        hot_knob,
        "ddp-modekeeper-knobs",
        &["Master".into(), "Worker".into()],
    )
    .unwrap();
    let ann = json!({"metadata": {"annotations": {"modekeeper/knob.grad_accum_steps": "8"}}});
    assert_eq!(
        plan.items()[0].patch().to_json(),
        json!({"spec": {"pytorchReplicaSpecs": {"Master": {"template": ann}, "Worker": {"template": ann}}}})
    );
    // It loads back to the same plan.
    let (back, _) = parse_plan(&plan.to_document()).unwrap();
    assert_eq!(back, plan);
    // Roles that disagree are refused.
    let bad = json!([{"namespace": "ml", "name": "ddp", "kind": "PyTorchJob", "patch": {"spec": {"pytorchReplicaSpecs": {
        "Master": {"template": ann},
        "Worker": {"template": {"metadata": {"annotations": {"modekeeper/knob.grad_accum_steps": "4"}}}}}}}}]);
    assert!(
        item_err(&bad.to_string())
            .1
            .contains("every replica role must carry the same knobs")
    );
}

#[test]
fn v2_items_round_trip_and_v1_plans_still_load() {
    let changes = [
        accepted("concurrency", 6.0),
        accepted("grad_accum_steps", 8.0),
    ];
    let plan = build_actuated_plan(
        &target(),
        &changes,
        hot_knob,
        "trainer-modekeeper-knobs",
        &[],
    )
    .unwrap();
    let (back, format) = parse_plan(&plan.to_document()).unwrap();
    assert_eq!(format, PlanFormat::Envelope);
    assert_eq!(back, plan);
    assert_eq!(back.digest(), plan.digest());
    // A v1 plan keeps its v1 digest and schema.
    let v1 = build_plan(&target(), &changes).unwrap();
    assert!(!v1.is_v2());
    assert!(v1.to_document().contains("\"k8s_plan.v1\""));
    let (v1_back, _) = parse_plan(&v1.to_document()).unwrap();
    assert_eq!(v1_back.digest(), v1.digest());
    // A v1 envelope cannot smuggle v2 items.
    let doc = plan.to_document().replace("k8s_plan.v2", "k8s_plan.v1");
    let doc: serde_json::Value = serde_json::from_str(&doc).unwrap();
    let mut doc = doc;
    doc.as_object_mut().unwrap().remove("plan_digest");
    assert!(item_err(&doc.to_string()).1.contains("needs k8s_plan.v2"));
}

#[test]
fn only_knob_keys_and_knob_annotations_per_kind() {
    let cm = |patch: serde_json::Value| {
        json!([{"namespace": "ml", "name": "t-modekeeper-knobs", "kind": "ConfigMap", "patch": patch,
                "takes_effect": "live"}])
        .to_string()
    };
    assert!(parse_plan(&cm(json!({"data": {"concurrency": "4", "lr_scale": null}}))).is_ok());
    for (patch, want) in [
        (json!({"data": {"Not-A-Knob": "4"}}), "is not a knob name"),
        (
            json!({"data": {"concurrency": 4}}),
            "value must be a string",
        ),
        (
            json!({"binaryData": {"x": "AA=="}}),
            "patch.binaryData: not allowed",
        ),
        (json!({"immutable": true}), "patch.immutable: not allowed"),
        (
            json!({"metadata": {"annotations": {"modekeeper/knob.concurrency": "4"}}}),
            "a ConfigMap item may only set knob keys of data",
        ),
    ] {
        let m = item_err(&cm(patch)).1;
        assert!(m.contains(want), "{m} (wanted {want})");
    }
    let tpl = json!({"spec": {"template": {"metadata": {"annotations": {"modekeeper/knob.concurrency": "4"}}}}});
    for (kind, want) in [
        ("Job", "a Job's pod template cannot be patched"),
        ("JobSet", "a JobSet's pod template cannot be patched"),
    ] {
        let text =
            json!([{"namespace": "ml", "name": "t", "kind": kind, "patch": tpl}]).to_string();
        let m = item_err(&text).1;
        assert!(m.contains(want), "{m}");
    }
    let dep_data =
        json!([{"namespace": "ml", "name": "t", "patch": {"data": {"concurrency": "4"}}}]);
    assert!(
        item_err(&dep_data.to_string())
            .1
            .contains("only a ConfigMap item sets knob keys")
    );
    for (te, rr, want) in [
        (
            json!("rollout"),
            json!(true),
            "does not fit a ConfigMap item",
        ),
        (
            json!("soon"),
            json!(true),
            "is not live, next_pod_start or rollout",
        ),
        (
            json!("live"),
            json!(true),
            "must be false when takes_effect is live",
        ),
        (json!("live"), json!("no"), "must be a boolean"),
    ] {
        let text = json!([{"namespace": "ml", "name": "t", "kind": "ConfigMap",
                           "patch": {"data": {"concurrency": "4"}}, "takes_effect": te, "restart_required": rr}])
        .to_string();
        let m = item_err(&text).1;
        assert!(m.contains(want), "{m} (wanted {want})");
    }
}

#[test]
fn the_script_says_when_each_item_takes_effect() {
    let changes = [
        accepted("concurrency", 6.0),
        accepted("grad_accum_steps", 8.0),
    ];
    let plan = build_actuated_plan(
        &target(),
        &changes,
        hot_knob,
        "trainer-modekeeper-knobs",
        &[],
    )
    .unwrap();
    let s = render_kubectl_script(&plan);
    assert!(s.contains("# takes effect: live (running pods re-read the mounted ConfigMap; no restart)\nkubectl -n 'default' patch 'configmap/trainer-modekeeper-knobs' --type merge -p '{\"data\":{\"concurrency\":\"6\"}}'"), "{s}");
    assert!(s.contains("# takes effect: rollout"), "{s}");
}
