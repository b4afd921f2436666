//! Helpers for the k8s tests: a standard emulated cluster, running the built binary against it,
//! the real kubectl, and a "mutating admission" proxy that rewrites dry-run answers.

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use kube_sim::{KubeSim, KubeSimBuilder, KubeconfigOptions, Rule, WorkloadSeed};
use serde_json::{Value, json};

pub const KNOB: &str = "modekeeper/knob.grad_accum_steps";
pub const BIN: &str = env!("CARGO_BIN_EXE_kubectl-modekeeper");

/// Namespace `ml` with Deployment `trainer` (knob at 4 on the object and its template) and
/// StatefulSet `db`; tokens `t0` (alice, admin) and `ro` (bob: get/list in `ml` only).
pub fn standard() -> KubeSimBuilder {
    KubeSim::builder()
        .namespace("ml")
        .workload(
            WorkloadSeed::deployment("ml", "trainer")
                .annotation(KNOB, "4")
                .template_annotation(KNOB, "4"),
        )
        .workload(WorkloadSeed::statefulset("ml", "db").template_annotation(KNOB, "2"))
        .token("t0", "alice", [Rule::admin()])
        .token(
            "ro",
            "bob",
            [Rule::allow(["get", "list"], "*", ["*"]).in_namespace("ml")],
        )
}

/// A plan item setting the knob on the pod template.
pub fn item(namespace: &str, name: &str, value: &str) -> Value {
    json!({"namespace": namespace, "name": name,
           "patch": {"spec": {"template": {"metadata": {"annotations": {KNOB: value}}}}}})
}

/// A scratch directory with a kubeconfig for the emulator and a plan.
pub struct Case {
    pub dir: tempfile::TempDir,
    pub kubeconfig: PathBuf,
}

impl Case {
    pub fn new(sim: &KubeSim, token: &str) -> Case {
        let dir = tempfile::tempdir().expect("tempdir");
        let kubeconfig = dir.path().join("kubeconfig");
        sim.write_kubeconfig(&kubeconfig, token)
            .expect("kubeconfig");
        Case { dir, kubeconfig }
    }

    /// A case whose kubeconfig points at `server` (plain or https URL) with `token`.
    pub fn with_server(server: &str, token: Option<&str>) -> Case {
        let dir = tempfile::tempdir().expect("tempdir");
        let kubeconfig = dir.path().join("kubeconfig");
        let opts = KubeconfigOptions {
            token: token.map(str::to_string),
            ..KubeconfigOptions::default()
        };
        std::fs::write(
            &kubeconfig,
            kube_sim::kubeconfig::render(server, None, &opts),
        )
        .expect("kubeconfig");
        Case { dir, kubeconfig }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn out(&self) -> PathBuf {
        self.dir.path().join("out")
    }

    pub fn write_plan(&self, plan: &Value) -> PathBuf {
        let p = self.dir.path().join("plan.json");
        std::fs::write(&p, serde_json::to_vec_pretty(plan).unwrap()).unwrap();
        p
    }

    /// `kubectl-modekeeper` with this case's kubeconfig, HOME and no KUBECONFIG.
    pub fn command(&self) -> Command {
        let mut c = Command::new(BIN);
        c.env_remove("KUBECONFIG")
            .env_remove("KUBERNETES_SERVICE_HOST")
            .env("HOME", self.dir.path())
            .stdin(Stdio::null());
        c
    }

    /// `k8s verify --plan <plan> --out <out> --kubeconfig <kc> ARGS`.
    pub fn verify(&self, plan: &Value, args: &[&str]) -> Run {
        let plan = self.write_plan(plan);
        let out = self
            .command()
            .args(["k8s", "verify", "--plan"])
            .arg(&plan)
            .arg("--out")
            .arg(self.out())
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .args(args)
            .output()
            .expect("run kubectl-modekeeper");
        Run::new(out, &self.out())
    }
}

/// One run of the binary and what it left in the out directory.
#[derive(Debug)]
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
    pub report: Option<Value>,
    pub explain: Vec<Value>,
}

impl Run {
    pub fn new(o: std::process::Output, out: &Path) -> Run {
        let report = std::fs::read(out.join("k8s_verify_latest.json"))
            .ok()
            .map(|b| serde_json::from_slice(&b).expect("report is JSON"));
        let explain = std::fs::read_to_string(out.join("explain.jsonl"))
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).expect("explain line is JSON"))
            .collect();
        Run {
            code: o.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
            report,
            explain,
        }
    }

    /// The report of a run that wrote one: exit 0 when it is ok, 2 when verify found a blocker.
    pub fn report(&self) -> &Value {
        let r = self
            .report
            .as_ref()
            .unwrap_or_else(|| panic!("no report was written: {self:#?}"));
        let want = if r["ok"] == true { 0 } else { 2 };
        assert_eq!(self.code, want, "exit code: {self:#?}");
        r
    }

    /// The report's blocker as (kind, index).
    pub fn blocker(&self) -> (String, Value) {
        let b = &self.report()["verify_blocker"];
        assert!(b.is_object(), "no blocker: {:#}", self.report());
        (b["kind"].as_str().unwrap().to_string(), b["index"].clone())
    }

    pub fn item(&self, i: usize) -> &Value {
        &self.report()["checks"]["items"][i]
    }

    pub fn events(&self, name: &str) -> Vec<&Value> {
        self.explain
            .iter()
            .filter(|e| e["event"] == name)
            .map(|e| &e["payload"])
            .collect()
    }
}

/// A local port nothing listens on.
pub fn closed_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

/// `kubectl` on PATH, or None (the caller skips, saying so).
pub fn kubectl_or_skip(test: &str) -> Option<PathBuf> {
    let found = std::env::var_os("PATH").and_then(|p| {
        std::env::split_paths(&p)
            .map(|d| d.join("kubectl"))
            .find(|p| p.is_file())
    });
    if found.is_none() {
        eprintln!("SKIPPED {test}: kubectl not found on PATH");
    }
    found
}

/// Runs the real kubectl against a case's kubeconfig (own HOME and discovery cache).
pub fn kubectl(bin: &Path, case: &Case, args: &[&str]) -> (i32, String, String) {
    let o = Command::new(bin)
        .arg("--kubeconfig")
        .arg(&case.kubeconfig)
        .arg("--cache-dir")
        .arg(case.path().join("kube-cache"))
        .arg("--request-timeout=20s")
        .args(args)
        .env_remove("KUBECONFIG")
        .env("HOME", case.path())
        .stdin(Stdio::null())
        .output()
        .expect("run kubectl");
    (
        o.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

/// A plain-HTTP proxy in front of the emulator that behaves like a mutating admission webhook on
/// dry-run PATCHes: `mutate` rewrites the object the server would store. Everything else passes
/// through unchanged. Stops when dropped.
pub struct MutatingProxy {
    pub port: u16,
    stop: Arc<AtomicBool>,
    pub mutated: Arc<AtomicU64>,
}

type Mutation = fn(&mut Value);

impl MutatingProxy {
    pub fn start(upstream: std::net::SocketAddr, mutate: Mutation) -> MutatingProxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        listener.set_nonblocking(true).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let mutated = Arc::new(AtomicU64::new(0));
        let (stop2, mutated2) = (stop.clone(), mutated.clone());
        std::thread::spawn(move || {
            while !stop2.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((conn, _)) => {
                        let (stop3, mutated3) = (stop2.clone(), mutated2.clone());
                        std::thread::spawn(move || {
                            serve(conn, upstream, mutate, &stop3, &mutated3);
                        });
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        MutatingProxy {
            port,
            stop,
            mutated,
        }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

impl Drop for MutatingProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Reads an HTTP/1.1 message head (through the blank line) and its Content-Length body.
fn read_message(r: &mut BufReader<TcpStream>) -> Option<(Vec<String>, Vec<u8>)> {
    let mut head = vec![];
    loop {
        let mut line = String::new();
        if r.read_line(&mut line).ok()? == 0 {
            return None;
        }
        let line = line.trim_end().to_string();
        if line.is_empty() {
            break;
        }
        head.push(line);
    }
    let header = |name: &str| {
        head.iter().find_map(|h| {
            let (k, v) = h.split_once(':')?;
            k.eq_ignore_ascii_case(name).then(|| v.trim().to_string())
        })
    };
    let mut body = vec![];
    if let Some(n) = header("content-length") {
        body.resize(n.parse().ok()?, 0);
        r.read_exact(&mut body).ok()?;
    } else if header("transfer-encoding").is_some_and(|t| t.eq_ignore_ascii_case("chunked")) {
        loop {
            let mut size = String::new();
            r.read_line(&mut size).ok()?;
            let n = usize::from_str_radix(size.trim(), 16).ok()?;
            let mut chunk = vec![0; n + 2];
            r.read_exact(&mut chunk).ok()?;
            if n == 0 {
                break;
            }
            body.extend_from_slice(&chunk[..n]);
        }
    }
    Some((head, body))
}

fn write_message(w: &mut TcpStream, head: &[String], body: &[u8]) -> std::io::Result<()> {
    let mut out = String::new();
    out.push_str(&head[0]);
    out.push_str("\r\n");
    for h in &head[1..] {
        let name = h.split(':').next().unwrap_or_default().to_ascii_lowercase();
        if ["content-length", "transfer-encoding", "connection"].contains(&name.as_str()) {
            continue;
        }
        out.push_str(h);
        out.push_str("\r\n");
    }
    out.push_str(&format!("content-length: {}\r\n\r\n", body.len()));
    w.write_all(out.as_bytes())?;
    w.write_all(body)?;
    w.flush()
}

fn serve(
    conn: TcpStream,
    upstream: std::net::SocketAddr,
    mutate: Mutation,
    stop: &AtomicBool,
    mutated: &AtomicU64,
) {
    conn.set_nonblocking(false).ok();
    conn.set_read_timeout(Some(Duration::from_secs(30))).ok();
    let mut client_w = conn.try_clone().unwrap();
    let mut client_r = BufReader::new(conn);
    while !stop.load(Ordering::Relaxed) {
        let Some((mut head, body)) = read_message(&mut client_r) else {
            return;
        };
        let dry_run_patch = head[0].starts_with("PATCH ") && head[0].contains("dryRun=All");
        // One upstream connection per request keeps the proxy simple.
        head.push("connection: close".into());
        let Ok(up) = TcpStream::connect(upstream) else {
            return;
        };
        let mut up_w = up.try_clone().unwrap();
        if write_message(&mut up_w, &head, &body).is_err() {
            return;
        }
        let Some((resp_head, mut resp_body)) = read_message(&mut BufReader::new(up)) else {
            return;
        };
        if dry_run_patch
            && resp_head[0].contains(" 200 ")
            && let Ok(mut v) = serde_json::from_slice::<Value>(&resp_body)
        {
            mutate(&mut v);
            resp_body = serde_json::to_vec(&v).unwrap();
            mutated.fetch_add(1, Ordering::Relaxed);
        }
        if write_message(&mut client_w, &resp_head, &resp_body).is_err() {
            return;
        }
    }
}

/// A state ConfigMap the controller would write for `summary` (through the store's own encoder),
/// as a kube-sim seed object in `controller_ns`.
pub fn state_object(
    controller_ns: &str,
    summary: &modekeeper::controller::store::WorkloadSummary,
) -> Value {
    use modekeeper::controller::store::{StoredSession, to_configmap};
    let cm = to_configmap(
        controller_ns,
        &summary.key(),
        &StoredSession {
            state: None,
            summary: summary.clone(),
        },
    )
    .expect("state ConfigMap");
    json!({"metadata": {"name": cm.name, "namespace": cm.namespace, "labels": cm.labels,
                        "annotations": cm.annotations},
           "data": cm.data})
}

/// For `fleet`: opted-in Deployments `ml/trainer` (a running session) and `ml/idle` (none yet),
/// StatefulSet `team-b/db` (a session in error), `ml/plain` (not opted in), and the state of
/// `ml/gone` (no such workload). The state needs the workloads' uids: seed it with
/// [`seed_fleet_state`] once the sim runs.
pub fn fleet_sim() -> KubeSimBuilder {
    KubeSim::builder()
        .namespace("ml")
        .namespace("team-b")
        .namespace("modekeeper-system")
        .workload(WorkloadSeed::deployment("ml", "trainer").label("modekeeper.io/enabled", "true"))
        .workload(WorkloadSeed::deployment("ml", "idle").label("modekeeper.io/enabled", "true"))
        .workload(WorkloadSeed::deployment("ml", "plain"))
        .workload(WorkloadSeed::statefulset("team-b", "db").label("modekeeper.io/enabled", "true"))
        .token("t0", "alice", [Rule::admin()])
}

/// Writes the state ConfigMaps of [`fleet_sim`]'s sessions (times relative to now, so ages print
/// the same whenever the test runs within the hour).
pub fn seed_fleet_state(sim: &KubeSim) {
    use modekeeper::controller::store::{
        LastDecision, LastEvent, ProposalSummary, SessionStatus, WorkloadKey, WorkloadSummary,
    };
    use modekeeper::plan::WorkloadKind;
    let ago = |h: i64| {
        (chrono::Utc::now() - chrono::Duration::hours(h))
            .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
    };
    let uid = |kind: kube_sim::ResourceKind, ns: &str, name: &str| {
        sim.get(kind, ns, name).unwrap()["metadata"]["uid"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let key = |kind, ns: &str, name: &str, uid: String| WorkloadKey {
        kind,
        namespace: ns.into(),
        name: name.into(),
        uid,
    };
    let trainer = key(
        WorkloadKind::Deployment,
        "ml",
        "trainer",
        uid(kube_sim::ResourceKind::Deployment, "ml", "trainer"),
    );
    let mut s = WorkloadSummary::new(&trainer, "modekeeper-controller-0", 0, &ago(0));
    s.status = SessionStatus::Running;
    s.active_chord = Some("BURST-ABSORB".into());
    s.knobs = [
        ("concurrency".to_string(), 5.0),
        ("dataloader_prefetch_factor".to_string(), 3.0),
    ]
    .into();
    s.last_decision = Some(LastDecision {
        window: 41,
        chord: "BURST-ABSORB".into(),
        proposals: vec![ProposalSummary {
            knob: "concurrency".into(),
            from: 4.0,
            to: 5.0,
        }],
        at: ago(4),
    });
    s.apply_status = "applied".into();
    s.last_event = Some(LastEvent {
        reason: "KnobsApplied".into(),
        note: "concurrency 4 -> 5".into(),
        at: ago(30),
    });
    s.windows_evaluated = 42;
    let db = key(
        WorkloadKind::StatefulSet,
        "team-b",
        "db",
        uid(kube_sim::ResourceKind::StatefulSet, "team-b", "db"),
    );
    let mut e = WorkloadSummary::new(&db, "modekeeper-controller-1", 0, &ago(0));
    e.status = SessionStatus::Error;
    e.error = Some("no telemetry container in the pods".into());
    let gone = key(WorkloadKind::Deployment, "ml", "gone", "0000-gone".into());
    let mut g = WorkloadSummary::new(&gone, "modekeeper-controller-0", 0, &ago(50));
    g.status = SessionStatus::Running;
    g.apply_status = "proposed (apply off)".into();
    for summary in [s, e, g] {
        let obj = state_object("modekeeper-system", &summary);
        sim.add_object(kube_sim::ResourceKind::ConfigMap, obj)
            .expect("seed state");
    }
}
