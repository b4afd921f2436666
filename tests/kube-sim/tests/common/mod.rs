//! Helpers shared by the integration tests: running the real `kubectl` against an emulator,
//! and a tiny HTTP/1.1 client for requests kubectl does not make.

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use kube_sim::{KubeSim, KubeconfigOptions, Rule};

/// `kubectl` on PATH, or None (the caller skips with a message).
pub fn kubectl_path() -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join("kubectl"))
        .find(|p| p.is_file())
}

/// Returns None (after saying why) when kubectl is not installed.
pub fn kubectl_or_skip(test: &str) -> Option<PathBuf> {
    let k = kubectl_path();
    if k.is_none() {
        eprintln!("SKIPPED {test}: kubectl not found on PATH");
    }
    k
}

/// The rules most tests give the admin token.
pub fn admin() -> Vec<Rule> {
    vec![Rule::admin()]
}

/// Read-only on everything a verify needs.
pub fn reader() -> Vec<Rule> {
    vec![Rule::allow(["get", "list"], "*", ["*"])]
}

/// The standard cluster: namespace `ml`, Deployment `trainer` with a knob and two log lines,
/// tokens `t0` (alice, admin) and `ro` (bob, read-only).
pub fn standard() -> kube_sim::KubeSimBuilder {
    KubeSim::builder()
        .namespace("ml")
        .workload(
            kube_sim::WorkloadSeed::deployment("ml", "trainer")
                .annotation("modekeeper/knob.grad_accum_steps", "4")
                .template_annotation("modekeeper/knob.grad_accum_steps", "4")
                .log("trainer", "step=1 loss=2.0")
                .log("trainer", "step=2 loss=1.9"),
        )
        .token("t0", "alice", admin())
        .token("ro", "bob", reader())
}

/// Runs kubectl against one emulator with its own kubeconfig and discovery cache.
pub struct Kubectl {
    pub bin: PathBuf,
    pub dir: tempfile::TempDir,
    pub kubeconfig: PathBuf,
}

/// The result of one kubectl run.
#[derive(Debug)]
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    pub fn ok(self) -> Self {
        assert_eq!(self.code, 0, "kubectl failed: {self:?}");
        self
    }

    pub fn failed(self) -> Self {
        assert_ne!(self.code, 0, "kubectl unexpectedly succeeded: {self:?}");
        self
    }
}

impl From<Output> for Run {
    fn from(o: Output) -> Self {
        Run {
            code: o.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        }
    }
}

impl Kubectl {
    pub fn new(bin: PathBuf, sim: &KubeSim, token: Option<&str>) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let kubeconfig = dir.path().join("kubeconfig");
        let k = Kubectl {
            bin,
            dir,
            kubeconfig,
        };
        k.write_config(sim, token, false);
        k
    }

    pub fn write_config(&self, sim: &KubeSim, token: Option<&str>, plain_http: bool) {
        let opts = KubeconfigOptions {
            token: token.map(str::to_string),
            plain_http,
            ..KubeconfigOptions::default()
        };
        sim.write_kubeconfig_with(&self.kubeconfig, &opts)
            .expect("kubeconfig");
    }

    pub fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(&self.bin);
        c.arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .arg("--cache-dir")
            .arg(self.dir.path().join("cache"))
            .args(args)
            .env_remove("KUBECONFIG")
            .env("HOME", self.dir.path())
            .stdin(Stdio::null());
        c
    }

    /// Runs `kubectl ARGS` (bounded by `--request-timeout=20s` unless the args set one).
    pub fn run(&self, args: &[&str]) -> Run {
        let mut all: Vec<&str> = vec![];
        if !args.iter().any(|a| a.starts_with("--request-timeout")) {
            all.push("--request-timeout=20s");
        }
        all.extend_from_slice(args);
        self.command(&all).output().expect("running kubectl").into()
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }
}

/// A line-reader over a child's stdout with a deadline per line.
pub struct Lines {
    rx: std::sync::mpsc::Receiver<String>,
}

impl Lines {
    pub fn new(out: impl Read + Send + 'static) -> Self {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Lines { rx }
    }

    pub fn next(&self, timeout: Duration) -> Option<String> {
        self.rx.recv_timeout(timeout).ok()
    }
}

/// A minimal HTTP/1.1 response.
#[derive(Debug)]
pub struct HttpResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl HttpResponse {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// One plain-HTTP request (`Connection: close`), body read to the end (chunked decoded).
pub fn http(
    sim: &KubeSim,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> HttpResponse {
    http_to(sim.addr(), method, path, headers, body)
}

/// Like [`http`], to any address.
pub fn http_to(
    addr: std::net::SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> HttpResponse {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\nContent-Length: {}\r\n",
        addr,
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).unwrap();
    s.write_all(body).unwrap();
    let mut raw = vec![];
    s.read_to_end(&mut raw).expect("read response");
    parse_response(&raw)
}

fn parse_response(raw: &[u8]) -> HttpResponse {
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("header end");
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    let mut body = raw[split + 4..].to_vec();
    let chunked = headers
        .iter()
        .any(|(k, v)| k.eq_ignore_ascii_case("transfer-encoding") && v.contains("chunked"));
    if chunked {
        let mut out = vec![];
        let mut rest: &[u8] = &body;
        while let Some(eol) = rest.windows(2).position(|w| w == b"\r\n") {
            let size = usize::from_str_radix(std::str::from_utf8(&rest[..eol]).unwrap().trim(), 16)
                .unwrap();
            if size == 0 {
                break;
            }
            out.extend_from_slice(&rest[eol + 2..eol + 2 + size]);
            rest = &rest[eol + 2 + size + 2..];
        }
        body = out;
    }
    HttpResponse {
        status,
        headers,
        body,
    }
}

pub fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}
