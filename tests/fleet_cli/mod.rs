//! `fleet` through the built binary against kube-sim (included by `install_cli.rs`: the
//! controller's commands share a test binary): the table, -n/-A, --all, -o json against the
//! published schema, a tampered state ConfigMap, a user without some permissions, the help text.

use std::process::Command;

use kube_sim::{KubeSim, ResourceKind, Rule};
use serde_json::Value;

use super::k8s_common::{Case, fleet_sim, seed_fleet_state};

const BIN: &str = env!("CARGO_BIN_EXE_kubectl-modekeeper");

fn fleet(case: &Case, args: &[&str]) -> (i32, String, String) {
    let o = Command::new(BIN)
        .env_remove("KUBECONFIG")
        .arg("fleet")
        .arg("--kubeconfig")
        .arg(&case.kubeconfig)
        .args(args)
        .output()
        .unwrap();
    (
        o.status.code().unwrap_or(-1),
        String::from_utf8(o.stdout).unwrap(),
        String::from_utf8(o.stderr).unwrap(),
    )
}

fn started() -> KubeSim {
    let sim = fleet_sim().start_blocking().unwrap();
    seed_fleet_state(&sim);
    sim
}

/// The AGE column (the workloads were created when the sim started) as `<age>`.
fn without_ages(table: &str) -> String {
    table
        .lines()
        .enumerate()
        .map(|(i, l)| match (i, l.rfind(' ')) {
            (0, _) | (_, None) => l.to_string(),
            (_, Some(at)) => format!("{}<age>", &l[..=at]),
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn fleet_table_across_namespaces() {
    let sim = started();
    let case = Case::new(&sim, "t0");
    let (code, out, err) = fleet(&case, &["-A"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(err, "");
    insta::assert_snapshot!("fleet_all_namespaces", without_ages(&out));
    // The orphan (ml/gone) only with --all, as stopped.
    let (code, out, _) = fleet(&case, &["-A", "--all"]);
    assert_eq!(code, 0);
    let gone = out.lines().find(|l| l.contains(" gone ")).expect(&out);
    assert!(gone.contains("stopped (not opted in)"), "{out}");
    assert!(!out.contains("plain"), "{out}");
}

#[test]
fn fleet_lists_one_namespace_like_kubectl_get() {
    let sim = started();
    let case = Case::new(&sim, "t0");
    let (code, out, _) = fleet(&case, &["-n", "team-b"]);
    assert_eq!(code, 0);
    let rows: Vec<&str> = out.lines().skip(1).collect();
    assert_eq!(rows.len(), 1, "{out}");
    let cells: Vec<&str> = rows[0].split_whitespace().collect();
    assert_eq!(
        &cells[..4],
        ["team-b", "StatefulSet", "db", "error"],
        "{out}"
    );
    assert!(
        rows[0].contains("error: no telemetry container in the pods"),
        "{out}"
    );
    // No -n: the kubeconfig context's namespace (kube-sim's: default), where nothing opted in.
    let (code, out, err) = fleet(&case, &[]);
    assert_eq!((code, out.as_str()), (0, ""));
    assert_eq!(err, "No opted-in workloads found in namespace default.\n");
}

#[test]
fn fleet_json_names_every_row() {
    let sim = started();
    let case = Case::new(&sim, "t0");
    let (code, out, err) = fleet(&case, &["-A", "--all", "-o", "json"]);
    assert_eq!(code, 0, "{err}");
    let doc: Value = serde_json::from_str(&out).unwrap();
    let schema: Value = serde_json::from_str(
        &std::fs::read_to_string(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("schemas/modekeeper.fleet.v1.schema.json"),
        )
        .unwrap(),
    )
    .unwrap();
    let v = jsonschema::validator_for(&schema).unwrap();
    let errors: Vec<String> = v.iter_errors(&doc).map(|e| e.to_string()).collect();
    assert!(errors.is_empty(), "{errors:?}");
    assert_eq!(doc["namespace"], Value::Null);
    let rows: Vec<(String, String)> = doc["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["name"].as_str().unwrap().to_string(),
                r["state"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let want = [
        ("gone", "orphaned"),
        ("idle", "no_session_yet"),
        ("trainer", "session"),
        ("db", "session"),
    ];
    assert_eq!(
        rows,
        want.map(|(a, b)| (a.to_string(), b.to_string())),
        "{out}"
    );
    assert_eq!(doc["items"][2]["session"]["knobs"]["concurrency"], 5.0);
    // YAML carries the same document.
    let (code, yaml, _) = fleet(&case, &["-A", "-o", "yaml"]);
    assert_eq!(code, 0);
    assert!(
        yaml.contains("\"schema_version\": \"modekeeper.fleet.v1\"\n"),
        "{yaml}"
    );
}

#[test]
fn a_tampered_state_is_a_warning_not_a_row() {
    let sim = started();
    let case = Case::new(&sim, "t0");
    let trainer_uid = sim.deployment("ml", "trainer").unwrap()["metadata"]["uid"]
        .as_str()
        .unwrap()
        .to_string();
    let name = modekeeper::controller::store::state_configmap_name(&trainer_uid);
    sim.modify(
        ResourceKind::ConfigMap,
        "modekeeper-system",
        &name,
        "mallory",
        |cm| {
            cm["data"]["summary.json"] = Value::String("{\"schema_version\": 1".into());
        },
    )
    .unwrap();
    let (code, out, err) = fleet(&case, &["-n", "ml"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        err.starts_with(&format!(
            "warning: state ConfigMap modekeeper-system/{name}: summary.json is not a summary"
        )),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1, "{err}");
    let trainer = out.lines().find(|l| l.contains("trainer")).unwrap();
    assert!(trainer.contains("no session yet"), "{out}");
}

#[test]
fn missing_permissions_are_one_warning_each() {
    let sim = fleet_sim()
        .token(
            "dev",
            "dev",
            [Rule::allow(["list"], "apps", ["deployments"])],
        )
        .start_blocking()
        .unwrap();
    seed_fleet_state(&sim);
    let case = Case::new(&sim, "dev");
    let (code, out, err) = fleet(&case, &["-A"]);
    assert_eq!(code, 0, "{err}");
    let warnings: Vec<&str> = err.lines().collect();
    assert_eq!(warnings.len(), 5, "{err}");
    assert!(warnings.iter().all(|w| w.starts_with("warning: ")), "{err}");
    assert!(
        warnings[0].starts_with(
            "warning: cannot list statefulsets.apps in all namespaces (forbidden), skipped: "
        ),
        "{err}"
    );
    assert!(
        warnings[4].starts_with(
            "warning: cannot read the controller's state in namespace modekeeper-system (forbidden), sessions not shown: "
        ),
        "{err}"
    );
    // The Deployments it may list, with their sessions unknown rather than "no session yet".
    let rows: Vec<&str> = out.lines().skip(1).collect();
    assert_eq!(rows.len(), 2, "{out}");
    assert!(rows.iter().all(|r| r.contains(" unknown ")), "{out}");

    // An unreachable server is a failure, exit 1.
    let dead = Case::with_server(
        &format!("http://127.0.0.1:{}", super::k8s_common::closed_port()),
        Some("t"),
    );
    let (code, out, err) = fleet(&dead, &["-A", "--request-timeout", "2s"]);
    assert_eq!((code, out.as_str()), (1, ""), "{err}");
    assert!(err.starts_with("error: fleet: unreachable"), "{err}");
}

#[test]
fn fleet_help_text() {
    let o = Command::new(BIN)
        .args(["fleet", "--help"])
        .output()
        .unwrap();
    insta::assert_snapshot!("fleet_help", String::from_utf8(o.stdout).unwrap());
}
