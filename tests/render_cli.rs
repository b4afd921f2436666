//! `k8s render`, driven through the binary: artifacts, report, explain events, and the invalid plans
//! that must leave nothing but explain.jsonl behind.

use std::path::Path;

use assert_cmd::Command;
use serde_json::{Value, json};

fn mk() -> Command {
    Command::cargo_bin("kubectl-modekeeper").unwrap()
}

fn events(out: &Path) -> Vec<Value> {
    std::fs::read_to_string(out.join("explain.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn files(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    v.sort();
    v
}

/// The plan the first implementation's closed-loop wrote for the bursty trace.
const BURSTY: &str = r#"[{"apiVersion":"apps/v1","kind":"Deployment","namespace":"default","name":"trainer","reason":"coalesced",
  "patch":{"metadata":{"annotations":{"modekeeper/knob.dataloader_prefetch_factor":"2","modekeeper/knob.concurrency":"4"}},
  "spec":{"template":{"metadata":{"annotations":{"modekeeper/knob.dataloader_prefetch_factor":"2","modekeeper/knob.concurrency":"4"}}}}}}]"#;

#[test]
fn renders_script_report_and_events() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(tmp.path().join("plan.json"), BURSTY).unwrap();
    let out = mk()
        .current_dir(tmp.path())
        .args(["k8s", "render", "--plan", "plan.json", "--out", "out"])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(stdout.starts_with("rendered plan.json (1 item)\n  deployment/trainer -n default: concurrency, dataloader_prefetch_factor\n"), "{stdout}");

    let dir = tmp.path().join("out");
    let names = files(&dir);
    assert_eq!(names.len(), 4, "{names:?}");
    assert!(
        names.contains(&"k8s_plan.kubectl.sh".into())
            && names.contains(&"k8s_render_latest.json".into())
    );
    assert!(
        names
            .iter()
            .any(|n| n.starts_with("k8s_render_2") && n.ends_with(".json"))
    );

    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.join("k8s_plan.kubectl.sh"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o755);
    }
    let script = std::fs::read_to_string(dir.join("k8s_plan.kubectl.sh")).unwrap();
    let digest = "sha256:cbce2211e3325bce4574165c8b182e17ad2db08c218dc02b2dbf6895d9af86ef";
    insta::assert_snapshot!("render_bursty_script", script);
    assert!(script.contains(digest));

    let report: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("k8s_render_latest.json")).unwrap())
            .unwrap();
    assert_eq!(report["schema_version"], "k8s_render.v1");
    assert_eq!(report["plan_digest"], digest);
    assert_eq!(report["plan_format"], "array");
    assert_eq!(
        (
            &report["items"],
            &report["namespace"],
            &report["name"],
            &report["kind"]
        ),
        (
            &json!(1),
            &json!("default"),
            &json!("trainer"),
            &json!("Deployment")
        )
    );
    assert_eq!(
        report["targets"],
        json!([{"index": 0, "kind": "Deployment", "namespace": "default", "name": "trainer", "knobs": ["concurrency", "dataloader_prefetch_factor"]}])
    );
    assert_eq!(report["artifacts"]["script"], "out/k8s_plan.kubectl.sh");

    let ev = events(&dir);
    let names: Vec<&str> = ev.iter().map(|e| e["event"].as_str().unwrap()).collect();
    assert_eq!(
        names,
        [
            "k8s_render_start",
            "k8s_kubectl_plan_written",
            "k8s_render_report"
        ]
    );
    assert_eq!(ev[0]["payload"], json!({"plan": "plan.json", "out": "out"}));
    assert_eq!(
        ev[1]["payload"],
        json!({"path": "out/k8s_plan.kubectl.sh", "items": 1, "plan_digest": digest})
    );
    assert_eq!(ev[2]["payload"]["latest"], "out/k8s_render_latest.json");

    // -o json prints the report.
    let out = mk()
        .current_dir(tmp.path())
        .args([
            "-o",
            "json",
            "k8s",
            "render",
            "--plan",
            "plan.json",
            "--out",
            "out2",
        ])
        .output()
        .unwrap();
    let printed: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(printed["plan_digest"], digest);
}

#[test]
fn the_same_plan_in_every_form_renders_the_same_digest() {
    let tmp = tempfile::tempdir().unwrap();
    let item: Value = serde_json::from_str::<Value>(BURSTY).unwrap()[0].clone();
    let forms = [
        ("array", json!([item])),
        ("object", item.clone()),
        (
            "envelope",
            json!({"schema_version": "k8s_plan.v1", "items": [item]}),
        ),
    ];
    let mut digests = vec![];
    for (name, doc) in forms {
        std::fs::write(tmp.path().join(format!("{name}.json")), doc.to_string()).unwrap();
        let out = mk()
            .current_dir(tmp.path())
            .args([
                "-o",
                "json",
                "k8s",
                "render",
                "--plan",
                &format!("{name}.json"),
                "--out",
                name,
            ])
            .output()
            .unwrap();
        assert!(out.status.success());
        let report: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(report["plan_format"], name);
        digests.push(report["plan_digest"].as_str().unwrap().to_string());
    }
    assert!(digests.windows(2).all(|w| w[0] == w[1]), "{digests:?}");
}

#[test]
fn an_empty_plan_renders_a_script_without_kubectl() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(tmp.path().join("plan.json"), "[]").unwrap();
    mk().current_dir(tmp.path())
        .args(["k8s", "render", "--plan", "plan.json", "--out", "out"])
        .assert()
        .success();
    let script = std::fs::read_to_string(tmp.path().join("out/k8s_plan.kubectl.sh")).unwrap();
    assert!(!script.contains("kubectl"), "{script}");
    let status = std::process::Command::new("bash")
        .arg(tmp.path().join("out/k8s_plan.kubectl.sh"))
        .output()
        .unwrap();
    assert!(status.status.success());
    let report: Value = serde_json::from_str(
        &std::fs::read_to_string(tmp.path().join("out/k8s_render_latest.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(
        (&report["items"], &report["namespace"], &report["name"]),
        (&json!(0), &Value::Null, &Value::Null)
    );
}

/// (plan text, explain kind, index, stderr line after "error: plan.json: ")
fn invalid_cases() -> Vec<(&'static str, &'static str, Option<u64>, &'static str)> {
    vec![
        (
            "{",
            "invalid_json",
            None,
            "invalid JSON: EOF while parsing an object at line 1 column 1",
        ),
        (
            "\"plan\"",
            "invalid_shape",
            None,
            "a plan must be an array of items, a k8s_plan.v1 envelope or a single item object",
        ),
        (
            r#"[{"namespace":"ns1","patch":"nope"}]"#,
            "invalid_item",
            Some(0),
            "plan item at index 0: name: missing",
        ),
        (
            r#"{"schema_version":"k8s_plan.v1","items":[{"namespace":"ns1","name":"dep1","patch":{"spec":{"replicas":1}}}]}"#,
            "invalid_item",
            Some(0),
            "plan item at index 0: patch.spec.replicas: not allowed (a plan may only set modekeeper/knob.* annotations)",
        ),
        (
            r#"[{"namespace":"ns1; touch /tmp/mk_injected_by_plan","name":"dep1$(id)","patch":{"spec":{"replicas":1}}}]"#,
            "invalid_item",
            Some(0),
            "plan item at index 0: namespace: \"ns1; touch /tmp/mk_injected_by_plan\" is not a DNS-1123 label (lowercase letters, digits, '-', at most 63)",
        ),
        (
            r#"[{"namespace":"ns1","name":"dep1","patch":{"metadata":{"annotations":{"modekeeper/knob.concurrency":"4","modekeeper/knob.concurrency":"100000"}}}}]"#,
            "invalid_json",
            None,
            "invalid JSON: duplicate key modekeeper/knob.concurrency at line 1 column 133",
        ),
        (
            r#"[{"namespace":"ns1","name":"dep1","patch":{"metadata":{"annotations":{"modekeeper/note":"O'Reilly"}}}}]"#,
            "invalid_item",
            Some(0),
            "plan item at index 0: patch.metadata.annotations: key modekeeper/note is not a modekeeper/knob.* annotation",
        ),
    ]
}

#[test]
fn invalid_plans_leave_only_explain_and_exit_2() {
    for (i, (text, kind, index, message)) in invalid_cases().into_iter().enumerate() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::write(tmp.path().join("plan.json"), text).unwrap();
        let out = mk()
            .current_dir(tmp.path())
            .args(["k8s", "render", "--plan", "plan.json", "--out", "out"])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "case {i}");
        assert!(out.stdout.is_empty());
        let stderr = String::from_utf8(out.stderr).unwrap();
        assert_eq!(stderr, format!("error: plan.json: {message}\n"), "case {i}");
        let dir = tmp.path().join("out");
        assert_eq!(
            files(&dir),
            ["explain.jsonl"],
            "case {i}: no partial artifacts"
        );
        let ev = events(&dir);
        assert_eq!(ev.len(), 2);
        assert_eq!(ev[1]["event"], "k8s_render_error");
        assert_eq!(
            ev[1]["payload"],
            json!({"kind": kind, "plan": "plan.json", "error": format!("plan.json: {message}"), "index": index}),
            "case {i}"
        );
    }
}

#[test]
fn a_missing_plan_is_not_found() {
    let tmp = tempfile::tempdir().unwrap();
    let out = mk()
        .current_dir(tmp.path())
        .args(["k8s", "render", "--plan", "absent.json", "--out", "out"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        String::from_utf8(out.stderr).unwrap(),
        "error: absent.json: plan not found\n"
    );
    assert_eq!(files(&tmp.path().join("out")), ["explain.jsonl"]);
    assert_eq!(
        events(&tmp.path().join("out"))[1]["payload"]["kind"],
        "not_found"
    );
}

#[test]
fn a_usage_error_names_the_missing_argument() {
    for cmd in [["k8s", "apply"], ["k8s", "render"]] {
        let out = mk().args(cmd).output().unwrap();
        assert_eq!(out.status.code(), Some(2));
        let err = String::from_utf8(out.stderr).unwrap();
        assert_eq!(
            err,
            "error: the following required arguments were not provided: --plan <PATH> (see --help)\n",
            "{cmd:?}"
        );
    }
}

#[cfg(unix)]
#[test]
fn a_symlink_planted_as_explain_jsonl_is_not_followed() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(tmp.path().join("plan.json"), BURSTY).unwrap();
    let victim = tmp.path().join("victim");
    std::fs::write(&victim, "precious\n").unwrap();
    let out_dir = tmp.path().join("out");
    std::fs::create_dir(&out_dir).unwrap();
    std::os::unix::fs::symlink(&victim, out_dir.join("explain.jsonl")).unwrap();
    let out = mk()
        .current_dir(tmp.path())
        .args(["k8s", "render", "--plan", "plan.json", "--out", "out"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(
        err.contains("explain.jsonl (a symlink is refused)"),
        "{err}"
    );
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious\n");
    assert_eq!(files(&out_dir), ["explain.jsonl"], "nothing else written");
}

#[test]
fn help_text() {
    let out = mk().args(["k8s", "render", "--help"]).output().unwrap();
    insta::assert_snapshot!("k8s_render_help", String::from_utf8(out.stdout).unwrap());
}
