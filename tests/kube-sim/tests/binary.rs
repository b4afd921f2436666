//! The `kube-sim` binary: reads a seed, prints its URL first, writes a kubeconfig, serves until
//! killed.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Child, Command, Stdio};

struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

const SEED: &str = r#"{
  "namespaces": ["ml"],
  "workloads": [{"kind": "Deployment", "namespace": "ml", "name": "trainer",
                 "templateAnnotations": {"modekeeper/knob.grad_accum_steps": "4"},
                 "logs": {"trainer": ["step=1 loss=2.0"]}}],
  "tokens": [{"token": "t0", "user": "alice", "rules": [{"verbs": ["*"], "apiGroups": ["*"], "resources": ["*"]}]}],
  "faults": [{"method": "PATCH", "path": "/apis/apps/v1/namespaces/ml/deployments/*", "nth": 1,
              "action": {"type": "status", "code": 500, "message": "first patch fails"}}]
}"#;

#[test]
fn serves_a_seed_and_prints_its_url_first() {
    let dir = tempfile::tempdir().unwrap();
    let seed = dir.path().join("seed.json");
    let kubeconfig = dir.path().join("kubeconfig");
    std::fs::write(&seed, SEED).unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_kube-sim"))
        .args(["--port", "0", "--seed"])
        .arg(&seed)
        .arg("--kubeconfig-out")
        .arg(&kubeconfig)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut server = Server(child);
    let mut first = String::new();
    BufReader::new(server.0.stdout.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    let url = first.trim_end();
    let addr = url
        .strip_prefix("http://127.0.0.1:")
        .expect("URL on the first line");
    assert!(addr.parse::<u16>().unwrap() > 0);
    let config = std::fs::read_to_string(&kubeconfig).unwrap();
    assert!(
        config.contains(&format!("server: \"https://127.0.0.1:{addr}\"")),
        "{config}"
    );
    assert!(config.contains("token: \"t0\"") && config.contains("certificate-authority-data: "));

    let mut s = std::net::TcpStream::connect(format!("127.0.0.1:{addr}")).unwrap();
    write!(s, "GET /apis/apps/v1/namespaces/ml/deployments/trainer HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer t0\r\nConnection: close\r\n\r\n").unwrap();
    let mut raw = String::new();
    s.read_to_string(&mut raw).unwrap();
    assert!(
        raw.starts_with("HTTP/1.1 200 OK") && raw.contains("modekeeper/knob.grad_accum_steps"),
        "{raw}"
    );

    let Some(bin) = common::kubectl_or_skip("binary_with_kubectl") else {
        return;
    };
    let kubectl = |args: &[&str]| -> common::Run {
        Command::new(&bin)
            .arg("--kubeconfig")
            .arg(&kubeconfig)
            .arg("--cache-dir")
            .arg(dir.path().join("cache"))
            .args(args)
            .env_remove("KUBECONFIG")
            .stdin(Stdio::null())
            .output()
            .unwrap()
            .into()
    };
    assert_eq!(
        kubectl(&["get", "ns", "-o", "name"]).ok().stdout,
        "namespace/default\nnamespace/ml\n"
    );
    assert_eq!(
        kubectl(&["-n", "ml", "logs", "deploy/trainer"]).ok().stdout,
        "step=1 loss=2.0\n"
    );
    let patch = [
        "-n",
        "ml",
        "patch",
        "deploy/trainer",
        "--type",
        "merge",
        "-p",
        r#"{"metadata":{"annotations":{"a":"b"}}}"#,
    ];
    let first = kubectl(&patch).failed();
    assert_eq!(
        first.stderr,
        "Error from server (InternalError): Internal error occurred: first patch fails\n"
    );
    assert_eq!(
        kubectl(&patch).ok().stdout,
        "deployment.apps/trainer patched\n"
    );
}

#[test]
fn a_bad_seed_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let seed = dir.path().join("seed.json");
    std::fs::write(&seed, r#"{"workloads": [{"name": "no-namespace"}]}"#).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_kube-sim"))
        .arg("--seed")
        .arg(&seed)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.starts_with("kube-sim: ") && stderr.contains("missing field `namespace`"),
        "{stderr}"
    );
    assert!(out.stdout.is_empty());
    let usage = Command::new(env!("CARGO_BIN_EXE_kube-sim"))
        .arg("--bogus")
        .output()
        .unwrap();
    assert_eq!(usage.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&usage.stderr).contains("usage: kube-sim"));
}

#[test]
fn the_control_api_drives_a_running_binary() {
    let dir = tempfile::tempdir().unwrap();
    let seed = dir.path().join("seed.json");
    std::fs::write(&seed, SEED).unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_kube-sim"))
        .arg("--seed")
        .arg(&seed)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut server = Server(child);
    let mut first = String::new();
    BufReader::new(server.0.stdout.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    let addr: std::net::SocketAddr = first
        .trim_end()
        .trim_start_matches("http://")
        .parse()
        .unwrap();
    let call = |method: &str, path: &str, body: &str| {
        common::http_to(
            addr,
            method,
            path,
            &[("Content-Type", "application/json")],
            body.as_bytes(),
        )
    };
    let auth = [("Authorization", "Bearer t0")];

    let appended = call(
        "POST",
        "/kube-sim/v1/logs",
        r#"{"namespace": "ml", "workload": "trainer", "lines": ["step=2", "step=3"]}"#,
    )
    .json();
    let pod = appended["pods"][0].as_str().unwrap().to_string();
    let log = common::http_to(
        addr,
        "GET",
        &format!("/api/v1/namespaces/ml/pods/{pod}/log"),
        &auth,
        b"",
    );
    assert_eq!(log.text(), "step=1 loss=2.0\nstep=2\nstep=3\n");

    let restarted = call(
        "POST",
        "/kube-sim/v1/restart",
        &format!(r#"{{"namespace": "ml", "pod": "{pod}"}}"#),
    )
    .json();
    assert_eq!(restarted["restarts"][0]["restartCount"], 1);
    assert_eq!(
        call(
            "POST",
            "/kube-sim/v1/logs",
            r#"{"namespace": "ml", "pod": "nope", "lines": []}"#
        )
        .status,
        404
    );
    assert_eq!(
        call("POST", "/kube-sim/v1/logs", r#"{"namespace": "ml"}"#).status,
        400
    );

    let id = call(
        "POST",
        "/kube-sim/v1/faults",
        r#"{"path": "/version", "action": {"type": "status", "code": 503}}"#,
    )
    .json()["id"]
        .as_u64()
        .unwrap();
    assert_eq!(
        common::http_to(addr, "GET", "/version", &auth, b"").status,
        503
    );
    assert_eq!(
        call("GET", &format!("/kube-sim/v1/faults/{id}"), "").json()["fired"],
        1
    );
    assert_eq!(
        call("DELETE", &format!("/kube-sim/v1/faults/{id}"), "").status,
        200
    );
    assert_eq!(
        common::http_to(addr, "GET", "/version", &auth, b"").status,
        200
    );

    assert_eq!(
        call(
            "PUT",
            "/kube-sim/v1/tokens/t0/rules",
            r#"[{"verbs": ["get"], "apiGroups": [""], "resources": ["namespaces"]}]"#
        )
        .status,
        200
    );
    assert_eq!(
        common::http_to(
            addr,
            "GET",
            "/apis/apps/v1/namespaces/ml/deployments/trainer",
            &auth,
            b""
        )
        .status,
        403
    );
    assert_eq!(
        call("PUT", "/kube-sim/v1/tokens/nope/rules", "[]").status,
        404
    );

    let requests = call("GET", "/kube-sim/v1/requests", "").json();
    let seen: Vec<(&str, u64)> = requests
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["path"].as_str().unwrap(), r["status"].as_u64().unwrap()))
        .collect();
    assert_eq!(
        seen,
        [
            (
                format!("/api/v1/namespaces/ml/pods/{pod}/log").as_str(),
                200
            ),
            ("/version", 503),
            ("/version", 200),
            ("/apis/apps/v1/namespaces/ml/deployments/trainer", 403)
        ],
        "control calls are not logged"
    );
    assert_eq!(call("DELETE", "/kube-sim/v1/requests", "").status, 200);
    assert_eq!(
        call("GET", "/kube-sim/v1/requests", "").json(),
        serde_json::json!([])
    );
    assert_eq!(call("GET", "/kube-sim/v1/nothing", "").status, 404);
}
