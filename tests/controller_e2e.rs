//! `kubectl modekeeper controller` end to end on kube-sim, running the built binary as the
//! Deployment `install` writes would: a workload opts in by label → its pod logs are followed →
//! windows decided → the decision applied through the gates → Events on the workload; killed and
//! restarted it resumes without repeating anything; two replicas elect one leader per shard and
//! the standby takes over within the lease duration, applying nothing twice; the cluster kill
//! switch blocks every apply and the Events say why; an un-labelled workload's session stops.
//! Every test runs the controller as `install` sets it up: with its Deployment's arguments and the
//! token of its ServiceAccount, holding exactly the rules `install`'s Roles and bindings grant
//! (tests/rbac_support), so a rule the controller needs and `install` lacks fails here as a 403.

mod apply_support;
mod closed_loop_support;
mod k8s_common;
mod prom_support;
mod rbac_support;

use std::fmt::Write as _;
use std::io::{BufRead, BufReader, Read};
use std::path::PathBuf;
use std::process::{Child, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine;
use kube_sim::{KubeSim, ResourceKind, WorkloadSeed};
use modekeeper::license::{self, Keyring};
use serde_json::{Value, json};

use apply_support::claims;
use k8s_common::KNOB;
use prom_support::Prometheus;

const SYSTEM: &str = "modekeeper-system";
const ENABLED: &str = "modekeeper.io/enabled";
/// The controller's ServiceAccount.
const CONTROLLER: &str = "modekeeper-controller";

/// The drift trace's records: one decision (grad_accum_steps 4 -> 8) under the drift passport.
fn drift_lines() -> Vec<String> {
    let mut text = String::new();
    flate2::read::GzDecoder::new(std::fs::File::open(closed_loop_support::trace("drift")).unwrap())
        .read_to_string(&mut text)
        .unwrap();
    text.lines().map(str::to_string).collect()
}

/// The safe passport with DRIFT-RETUNE's step limits and `gates.apply` on (built-in templates
/// are plan-only), as the operator's passports ConfigMap carries it.
fn drift_passport() -> String {
    let mut p: Value =
        serde_json::to_value(modekeeper::passport::template("safe").unwrap().unwrap()).unwrap();
    p["name"] = "safe-drift".into();
    p["gates"]["apply"] = true.into();
    for k in ["microbatch_size", "grad_accum_steps"] {
        p["knobs"][k]["max_delta_per_step"] = json!({"absolute": 32});
    }
    serde_json::to_string_pretty(&p).unwrap()
}

fn configmap(name: &str, data: Value) -> Value {
    json!({"apiVersion": "v1", "kind": "ConfigMap",
           "metadata": {"namespace": SYSTEM, "name": name}, "data": data})
}

struct Fixture {
    _shared: Option<std::sync::RwLockReadGuard<'static, ()>>,
    sim: KubeSim,
    dir: tempfile::TempDir,
    kubeconfig: PathBuf,
    pod: String,
    /// The controller's arguments from the Deployment `install` printed (but `--listen`).
    args: Vec<String>,
}

/// Namespace `ml` with the opted-in Deployment `trainer` (knob at 4, passport `safe-drift`) and
/// a StatefulSet `db` that did not opt in; the controller's namespace with its settings, the
/// passports ConfigMap and the license Secret.
/// The takeover test times a failover against the lease duration: it runs alone, the others
/// (each starting controllers that compile their policies) share the machine.
static TIMING: std::sync::RwLock<()> = std::sync::RwLock::new(());

fn fixture(settings: Value) -> Fixture {
    fixture_installed(settings, &[])
}

/// [`fixture`] for the controller `install ARGS` sets up.
fn fixture_installed(settings: Value, install: &[&str]) -> Fixture {
    let shared = TIMING.read().unwrap_or_else(|e| e.into_inner());
    let mut f = fixture_unlocked_installed(settings, install);
    f._shared = Some(shared);
    f
}

fn fixture_unlocked(settings: Value) -> Fixture {
    fixture_unlocked_installed(settings, &[])
}

/// The controller runs with the token of the ServiceAccount `install -n modekeeper-system ARGS`
/// creates, holding exactly the rules its Roles and bindings grant, and with the arguments of its
/// Deployment.
fn fixture_unlocked_installed(settings: Value, install: &[&str]) -> Fixture {
    let mut install_args = vec!["-n", SYSTEM];
    install_args.extend_from_slice(install);
    let objects = rbac_support::install_objects(&install_args);
    let rules = rbac_support::rules_for(&objects, SYSTEM, CONTROLLER);
    let deployment = objects.iter().find(|o| o["kind"] == "Deployment").unwrap();
    let args: Vec<String> = deployment["spec"]["template"]["spec"]["containers"][0]["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap().to_string())
        .filter(|a| a != "controller" && !a.starts_with("--listen"))
        .collect();
    let key = license::generate_signing_key().unwrap();
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    let lic = license::mint(&key, &claims(&["apply"]), true).unwrap();
    let keyring = Keyring::from_keys([key.verifying_key()]).to_json();
    let sim = KubeSim::builder()
        .namespace("ml")
        .namespace(SYSTEM)
        .workload(
            WorkloadSeed::deployment("ml", "trainer")
                .label(ENABLED, "true")
                .annotation("modekeeper.io/passport", "safe-drift")
                .annotation(KNOB, "4")
                .template_annotation(KNOB, "4")
                .log("trainer", "starting trainer"),
        )
        .workload(WorkloadSeed::statefulset("ml", "db").template_annotation(KNOB, "2"))
        .object(
            ResourceKind::ConfigMap,
            configmap("modekeeper-settings", settings),
        )
        .object(
            ResourceKind::ConfigMap,
            configmap(
                "modekeeper-passports",
                json!({"safe-drift.json": drift_passport()}),
            ),
        )
        .object(
            ResourceKind::Secret,
            json!({"apiVersion": "v1", "kind": "Secret",
                   "metadata": {"namespace": SYSTEM, "name": "modekeeper-license"},
                   "data": {"license.json": b64(&lic), "keyring.json": b64(&keyring)}}),
        )
        .token(
            "t0",
            &rbac_support::service_account_user(SYSTEM, CONTROLLER),
            rules,
        )
        .start_blocking()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    sim.write_kubeconfig(&kubeconfig, "t0").unwrap();
    let pod = sim
        .pod_names(ResourceKind::Deployment, "ml", "trainer")
        .remove(0);
    Fixture {
        _shared: None,
        sim,
        dir,
        kubeconfig,
        pod,
        args,
    }
}

/// One controller process and what it printed.
struct Replica {
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
    /// The thread copying its stderr into `lines`: done once the process has exited.
    reader: Option<std::thread::JoinHandle<()>>,
    name: String,
}

impl Replica {
    fn start(f: &Fixture, name: &str) -> Replica {
        let mut child = closed_loop_support::std_bin()
            .env_remove("KUBERNETES_SERVICE_HOST")
            .env_remove("MODEKEEPER_KILL_SWITCH")
            .env("HOME", f.dir.path())
            .env("POD_NAME", name)
            .env("POD_NAMESPACE", SYSTEM)
            .arg("controller")
            .args(&f.args)
            .arg("--kubeconfig")
            .arg(&f.kubeconfig)
            .args(["--listen", "127.0.0.1:0"])
            .args(["--lease-duration", "3s", "--renew-deadline", "2s"])
            .args(["--retry-period", "300ms", "--settings-every", "300ms"])
            .args(["--checkpoint-every", "1s", "--request-timeout", "5s"])
            .arg("--work-dir")
            .arg(f.dir.path().join(format!("work-{name}")))
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let lines = Arc::new(Mutex::new(Vec::new()));
        let stderr = child.stderr.take().unwrap();
        let sink = lines.clone();
        let reader = std::thread::spawn(move || {
            for l in BufReader::new(stderr).lines().map_while(Result::ok) {
                sink.lock().unwrap().push(l);
            }
        });
        Replica {
            child,
            lines,
            reader: Some(reader),
            name: name.into(),
        }
    }

    fn log(&self) -> String {
        self.lines.lock().unwrap().join("\n")
    }

    /// The address it serves /metrics on.
    fn addr(&self) -> String {
        wait_for("the metrics address", Duration::from_secs(30), || {
            self.log().contains("serving /metrics")
        });
        let log = self.log();
        let line = log
            .lines()
            .find(|l| l.contains("serving /metrics"))
            .unwrap();
        line.rsplit(' ').next().unwrap().to_string()
    }

    fn get(&self, path: &str) -> (u16, String) {
        let url = format!("http://{}{path}", self.addr());
        match ureq::get(&url).call() {
            Ok(mut r) => (r.status().as_u16(), r.body_mut().read_to_string().unwrap()),
            Err(ureq::Error::StatusCode(c)) => (c, String::new()),
            Err(e) => panic!("{url}: {e}"),
        }
    }

    fn kill(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    /// SIGTERM, and it must stop by itself, cleanly.
    fn stop(mut self) -> String {
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                // Its last lines may still be in the pipe: read to the end first.
                if let Some(reader) = self.reader.take() {
                    reader.join().unwrap();
                }
                assert!(status.success(), "{status}: {}", self.log());
                return self.log();
            }
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "did not stop: {}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn wait_for(what: &str, limit: Duration, f: impl FnMut() -> bool) {
    wait_or(what, limit, f, String::new)
}

/// [`wait_for`], telling `context()` (the controller's log, the Events) when it times out.
fn wait_or(what: &str, limit: Duration, mut f: impl FnMut() -> bool, context: impl Fn() -> String) {
    let start = Instant::now();
    while !f() {
        assert!(
            start.elapsed() < limit,
            "timed out waiting for {what}\n{}",
            context()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Events about Deployment ml/trainer, oldest first: (type, reason, message).
fn events(sim: &KubeSim) -> Vec<(String, String, String)> {
    k8s_common::deployment_events(sim, "ml", "trainer")
}

fn reasons(sim: &KubeSim, reason: &str) -> Vec<String> {
    events(sim)
        .into_iter()
        .filter(|e| e.1 == reason)
        .map(|e| e.2)
        .collect()
}

/// The requests the API server refused with 403 Forbidden: `verb resource in namespace: METHOD
/// path?query`.
fn forbidden(sim: &KubeSim) -> Vec<String> {
    sim.requests()
        .iter()
        .filter(|r| r.status == 403)
        .map(|r| {
            let i = kube_sim::request_info::request_info(&r.method, &r.path, &r.query);
            format!(
                "{} {} {:?} in {:?}: {} {}?{}",
                i.verb,
                i.resource_with_sub(),
                i.api_group,
                i.namespace,
                r.method,
                r.path,
                r.query
            )
        })
        .collect()
}

/// Writes to workloads: PATCHes that are not dry runs.
fn writes(sim: &KubeSim) -> usize {
    sim.requests()
        .iter()
        .filter(|r| {
            r.method == "PATCH" && !r.query.contains("dryRun") && r.path.contains("/deployments/")
        })
        .count()
}

/// The trainer's state ConfigMap, once there is one.
fn state_configmap(sim: &KubeSim) -> Option<Value> {
    sim.list(ResourceKind::ConfigMap, Some(SYSTEM))
        .into_iter()
        .find(|c| {
            c["metadata"]["annotations"]["modekeeper.io/workload"]
                .as_str()
                .is_some_and(|w| w.ends_with("/ml/trainer"))
        })
}

/// Its name.
fn state_configmap_name(sim: &KubeSim) -> String {
    let cm = state_configmap(sim).expect("a state ConfigMap");
    cm["metadata"]["name"].as_str().unwrap().to_string()
}

/// A data key of the trainer's state ConfigMap, parsed, once there is one.
fn state_key(sim: &KubeSim, key: &str) -> Option<Value> {
    state_configmap(sim).and_then(|c| serde_json::from_str(c["data"][key].as_str()?).ok())
}

/// Its `summary.json`.
fn summary(sim: &KubeSim) -> Option<Value> {
    state_key(sim, "summary.json")
}

/// Its `state.json`.
fn state(sim: &KubeSim) -> Option<Value> {
    state_key(sim, "state.json")
}

fn windows(sim: &KubeSim) -> u64 {
    summary(sim).map_or(0, |s| s["windows_evaluated"].as_u64().unwrap_or(0))
}

/// The windows decided once no more come (unchanged for 2 s).
fn settled_windows(sim: &KubeSim) -> u64 {
    let mut last = (windows(sim), Instant::now());
    let start = Instant::now();
    loop {
        std::thread::sleep(Duration::from_millis(200));
        let now = windows(sim);
        if now != last.0 {
            last = (now, Instant::now());
        } else if last.1.elapsed() >= Duration::from_secs(2) {
            return now;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "windows never settled"
        );
    }
}

/// Windows an uninterrupted session decides over the whole drift trace (windows of 50 steps or
/// closed early by the wall cap and slow spikes; the last ones held back by the release lag of a
/// source that never ends).
fn windows_uninterrupted() -> u64 {
    // Called by a test that holds its share of TIMING already.
    let f = fixture_unlocked(settings(false, "off"));
    let c = Replica::start(&f, "replica-ref");
    feed(&f, &drift_lines());
    wait_for("windows", Duration::from_secs(60), || windows(&f.sim) > 10);
    let n = settled_windows(&f.sim);
    c.stop();
    n
}

fn settings(apply: bool, kill_switch: &str) -> Value {
    json!({"apply": apply.to_string(), "kill-switch": kill_switch})
}

fn feed(f: &Fixture, lines: &[String]) {
    for chunk in lines.chunks(200) {
        f.sim.append_logs("ml", &f.pod, "trainer", chunk);
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Replica `replica-a` on `f`, fed `lines`, once it has saved two windows.
fn started_with_windows(f: &Fixture, lines: &[String]) -> Replica {
    let c = Replica::start(f, "replica-a");
    feed(f, lines);
    wait_for("windows saved", Duration::from_secs(60), || {
        windows(&f.sim) >= 2
    });
    c
}

fn template_knob(f: &Fixture) -> Option<String> {
    f.sim
        .template_annotation(ResourceKind::Deployment, "ml", "trainer", KNOB)
}

#[test]
fn an_opted_in_workload_is_decided_applied_once_and_told_in_events_and_metrics() {
    let f = fixture(settings(true, "off"));
    let c = Replica::start(&f, "replica-a");
    let (code, _) = c.get("/healthz");
    assert_eq!(code, 200);
    wait_for("ready", Duration::from_secs(30), || {
        c.get("/readyz").0 == 200
    });
    feed(&f, &drift_lines());
    wait_or(
        "the apply",
        Duration::from_secs(90),
        || !reasons(&f.sim, "KnobsApplied").is_empty(),
        || format!("{}\n{:#?}\n{:#?}", c.log(), events(&f.sim), summary(&f.sim)),
    );
    assert_eq!(template_knob(&f).as_deref(), Some("8"), "{}", c.log());
    let applied = reasons(&f.sim, "KnobsApplied");
    assert_eq!(applied.len(), 1, "{:?}", events(&f.sim));
    assert!(
        applied[0].contains("grad_accum_steps 4 -> 8"),
        "{applied:?}"
    );
    let proposed = reasons(&f.sim, "KnobsProposed");
    assert!(!proposed.is_empty(), "{:?}", events(&f.sim));
    assert_eq!(writes(&f.sim), 1);
    // The StatefulSet that did not opt in is left alone.
    assert!(
        f.sim
            .list(ResourceKind::Event, Some("ml"))
            .iter()
            .all(|e| e["involvedObject"]["name"] != "db")
    );
    wait_for("the summary", Duration::from_secs(10), || {
        summary(&f.sim).is_some_and(|s| s["apply_status"] == "applied")
    });
    let s = summary(&f.sim).unwrap();
    assert_eq!(s["status"], "running");
    assert_eq!(s["replica"], "replica-a");
    assert_eq!(s["knobs"]["grad_accum_steps"], 8.0);
    let n = settled_windows(&f.sim);
    assert!(n > 20, "{n}");
    let (code, metrics) = c.get("/metrics");
    assert_eq!(code, 200);
    for m in [
        "modekeeper_windows_evaluated_total",
        "modekeeper_applies_total",
        "modekeeper_decision_latency_seconds",
    ] {
        assert!(metrics.contains(m), "{m} missing:\n{metrics}");
    }
    let log = c.stop();
    assert!(log.contains("stopped"), "{log}");
    assert_eq!(summary(&f.sim).unwrap()["status"], "stopped");
    assert_eq!(forbidden(&f.sim), Vec::<String>::new(), "{log}");
}

/// The flow of the briefing under exactly the RBAC `install ARGS` prints: opt-in by label →
/// decision → gated apply (settings, license Secret, Lease, state ConfigMap) → Events, then the
/// un-label → the session stops. The API server refuses nothing the controller asks.
fn the_flow_under_install_s_rbac(install: &[&str]) {
    let f = fixture_installed(settings(true, "off"), install);
    let c = Replica::start(&f, "replica-a");
    feed(&f, &drift_lines());
    wait_or(
        "the apply",
        Duration::from_secs(90),
        || !reasons(&f.sim, "KnobsApplied").is_empty(),
        || {
            format!(
                "{}\n{:#?}\n{:?}",
                c.log(),
                events(&f.sim),
                forbidden(&f.sim)
            )
        },
    );
    assert_eq!(template_knob(&f).as_deref(), Some("8"), "{}", c.log());
    assert_eq!(writes(&f.sim), 1);
    assert!(!reasons(&f.sim, "KnobsProposed").is_empty());
    // The gates read the settings and the license before the apply, and the state is kept.
    let system = |method: &str, what: &str| {
        f.sim
            .count_requests(method, &format!("/api/v1/namespaces/{SYSTEM}/{what}"))
    };
    assert!(system("GET", "secrets/modekeeper-license") >= 1);
    assert!(system("GET", "configmaps/modekeeper-settings") >= 1);
    assert!(system("POST", "configmaps") >= 1);
    assert!(
        f.sim
            .get(ResourceKind::Lease, SYSTEM, "modekeeper-controller-shard-0")
            .is_some()
    );
    wait_for("the summary", Duration::from_secs(10), || {
        summary(&f.sim).is_some_and(|s| s["apply_status"] == "applied")
    });
    f.sim
        .modify(ResourceKind::Deployment, "ml", "trainer", "kubectl", |o| {
            o["metadata"]["labels"]
                .as_object_mut()
                .unwrap()
                .remove(ENABLED);
        });
    wait_or(
        "the session to stop",
        Duration::from_secs(20),
        || summary(&f.sim).is_some_and(|s| s["status"] == "stopped"),
        || c.log(),
    );
    let log = c.stop();
    assert_eq!(forbidden(&f.sim), Vec::<String>::new(), "{log}");
    // Every request was the ServiceAccount's.
    let user = rbac_support::service_account_user(SYSTEM, CONTROLLER);
    let others: Vec<_> = f
        .sim
        .requests()
        .into_iter()
        .filter(|r| r.user.as_deref() != Some(user.as_str()))
        .map(|r| format!("{:?} {} {}", r.user, r.method, r.path))
        .collect();
    assert_eq!(others, Vec::<String>::new());
}

#[test]
fn under_install_s_cluster_role_nothing_is_forbidden() {
    the_flow_under_install_s_rbac(&[]);
}

/// With `--watch-namespace`, Roles in the watched namespaces instead of the ClusterRole: the
/// controller's own namespace is not among them.
#[test]
fn under_install_s_roles_per_watched_namespace_nothing_is_forbidden() {
    the_flow_under_install_s_rbac(&["--watch-namespace", "ml"]);
}

/// A hot knob travels in the workload's knobs ConfigMap, in the watched namespace: under the Roles
/// of `install --watch-namespace ml` the controller reads and patches it, and is refused nothing.
#[test]
fn a_hot_knob_under_install_s_roles_patches_the_knobs_configmap() {
    let f = fixture_installed(settings(true, "off"), &["--watch-namespace", "ml"]);
    let knobs = "trainer-modekeeper-knobs";
    f.sim
        .add_object(
            ResourceKind::ConfigMap,
            json!({"apiVersion": "v1", "kind": "ConfigMap",
                   "metadata": {"namespace": "ml", "name": knobs},
                   "data": {"grad_accum_steps": "4"}}),
        )
        .unwrap();
    f.sim
        .modify(
            ResourceKind::ConfigMap,
            SYSTEM,
            "modekeeper-passports",
            "operator",
            |cm| {
                let text = cm["data"]["safe-drift.json"].as_str().unwrap().to_string();
                let mut p: Value = serde_json::from_str(&text).unwrap();
                p["knobs"]["grad_accum_steps"]["actuation"] = "hot".into();
                cm["data"]["safe-drift.json"] = p.to_string().into();
            },
        )
        .unwrap();
    let c = Replica::start(&f, "replica-a");
    feed(&f, &drift_lines());
    wait_or(
        "the apply",
        Duration::from_secs(90),
        || !reasons(&f.sim, "KnobsApplied").is_empty(),
        || {
            format!(
                "{}\n{:#?}\n{:?}",
                c.log(),
                events(&f.sim),
                forbidden(&f.sim)
            )
        },
    );
    let cm = f.sim.get(ResourceKind::ConfigMap, "ml", knobs).unwrap();
    assert_eq!(cm["data"]["grad_accum_steps"], "8", "{}", c.log());
    // The template is left alone: the knob went to the ConfigMap.
    assert_eq!(template_knob(&f).as_deref(), Some("4"));
    let log = c.stop();
    assert_eq!(forbidden(&f.sim), Vec::<String>::new(), "{log}");
}

#[test]
fn killed_and_restarted_it_resumes_and_repeats_nothing() {
    let f = fixture(settings(true, "off"));
    let lines = drift_lines();
    let (a, b) = (lines.len() / 3, lines.len() * 3 / 4);
    let c = Replica::start(&f, "replica-a");
    feed(&f, &lines[..a]);
    wait_for("a few windows saved", Duration::from_secs(60), || {
        windows(&f.sim) >= 3
    });
    // kill -9 before the decision ...
    let log1 = c.log();
    c.kill();
    let c = Replica::start(&f, "replica-a");
    feed(&f, &lines[a..b]);
    wait_or(
        "the apply",
        Duration::from_secs(90),
        || !reasons(&f.sim, "KnobsApplied").is_empty(),
        || c.log(),
    );
    // ... and right after its apply.
    let log2 = c.log();
    c.kill();
    let c = Replica::start(&f, "replica-a");
    feed(&f, &lines[b..]);
    wait_or(
        "the resumed session",
        Duration::from_secs(60),
        || c.log().contains("resumed after window"),
        || c.log(),
    );
    // Every window exactly once: as many as an uninterrupted session decides over these lines.
    let n = settled_windows(&f.sim);
    let log = format!("{log1}\n--- restarted\n{log2}\n--- restarted\n{}", c.stop());
    assert!(log.contains("resumed after window"), "{log}");
    assert_eq!(
        n,
        windows_uninterrupted(),
        "{log}\n{:#}",
        state(&f.sim).unwrap()["totals"]
    );
    let state = state(&f.sim).unwrap();
    assert_eq!(state["totals"]["restarts"], 2, "{state:#}");
    assert_eq!(writes(&f.sim), 1, "{log}");
    assert_eq!(reasons(&f.sim, "KnobsApplied").len(), 1);
    let proposed = reasons(&f.sim, "KnobsProposed");
    assert_eq!(proposed.len(), 1, "a decision told twice: {proposed:?}");
}

#[test]
fn two_replicas_one_leader_applies_and_the_standby_takes_over_within_the_lease() {
    let _alone = TIMING.write().unwrap_or_else(|e| e.into_inner());
    let f = fixture_unlocked(settings(true, "off"));
    let lines = drift_lines();
    let (first, rest) = lines.split_at(lines.len() / 4);
    let a = Replica::start(&f, "replica-a");
    let b = Replica::start(&f, "replica-b");
    let holder = |sim: &KubeSim| -> Option<String> {
        sim.get(ResourceKind::Lease, SYSTEM, "modekeeper-controller-shard-0")
            .and_then(|l| l["spec"]["holderIdentity"].as_str().map(str::to_string))
    };
    wait_for("a leader", Duration::from_secs(30), || {
        holder(&f.sim).is_some()
    });
    let leader = holder(&f.sim).unwrap();
    feed(&f, first);
    wait_for("windows saved", Duration::from_secs(60), || {
        windows(&f.sim) >= 2
    });
    assert_eq!(summary(&f.sim).unwrap()["replica"], leader.as_str());
    let (dead, standby) = if leader == a.name { (a, b) } else { (b, a) };
    let killed = Instant::now();
    dead.kill();
    wait_for("the takeover", Duration::from_secs(20), || {
        holder(&f.sim).as_deref() == Some(standby.name.as_str())
    });
    // Within the lease duration (3 s) plus a retry round and scheduling slack.
    assert!(
        killed.elapsed() < Duration::from_secs(6),
        "{:?}",
        killed.elapsed()
    );
    feed(&f, rest);
    wait_for("the apply", Duration::from_secs(90), || {
        !reasons(&f.sim, "KnobsApplied").is_empty()
    });
    assert_eq!(summary(&f.sim).unwrap()["replica"], standby.name.as_str());
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(writes(&f.sim), 1);
    assert_eq!(reasons(&f.sim, "KnobsApplied").len(), 1);
    standby.stop();
}

#[test]
fn the_cluster_kill_switch_blocks_every_apply_and_the_events_say_why() {
    let f = fixture(settings(true, "on"));
    let c = Replica::start(&f, "replica-a");
    feed(&f, &drift_lines());
    wait_for("the block", Duration::from_secs(90), || {
        !reasons(&f.sim, "ApplyBlocked").is_empty()
    });
    let blocked = reasons(&f.sim, "ApplyBlocked");
    assert!(
        blocked[0].contains("kill_switch_cluster") && blocked[0].contains("kill_switch_active"),
        "{blocked:?}"
    );
    assert_eq!(writes(&f.sim), 0);
    assert_eq!(template_knob(&f).as_deref(), Some("4"));
    let (_, metrics) = c.get("/metrics");
    assert!(metrics.contains("kill_switch_active"), "{metrics}");
    // Every window decided: the change the cluster never got is never judged (no Effect Event),
    // though the trace goes on long enough after the decision for a verdict.
    let n = settled_windows(&f.sim);
    assert!(n > 40, "{n}");
    let all = events(&f.sim);
    assert!(all.iter().all(|e| !e.1.starts_with("Effect")), "{all:?}");
    c.stop();
}

/// The straggler trace's records: an INPUT-STRAGGLER change that slows the job down.
fn straggler_lines() -> Vec<String> {
    let mut text = String::new();
    flate2::read::GzDecoder::new(
        std::fs::File::open(closed_loop_support::trace("straggler")).unwrap(),
    )
    .read_to_string(&mut text)
    .unwrap();
    text.lines().map(str::to_string).collect()
}

/// A rollback decided while `apply` was off is the session's latest decision after a restart:
/// with `apply` on again the new replica applies it, and tells it as `RolledBack` (the state
/// keeps whether the decision was the loop's rollback).
#[test]
fn a_rollback_decided_before_a_restart_is_applied_after_it_as_rolled_back() {
    let f = fixture(settings(true, "off"));
    // The drift passport with gates.auto_rollback, for the trainer.
    let mut p: Value = serde_json::from_str(&drift_passport()).unwrap();
    p["name"] = "safe-rollback".into();
    p["gates"]["auto_rollback"] = true.into();
    f.sim
        .modify(
            ResourceKind::ConfigMap,
            SYSTEM,
            "modekeeper-passports",
            "test",
            |cm| cm["data"]["safe-rollback.json"] = p.to_string().into(),
        )
        .unwrap();
    f.sim
        .modify(ResourceKind::Deployment, "ml", "trainer", "test", |d| {
            d["metadata"]["annotations"]["modekeeper.io/passport"] = "safe-rollback".into()
        })
        .unwrap();
    let lines = straggler_lines();
    let c = Replica::start(&f, "replica-a");
    // Up to just before the change at once; then a few lines at a time, each batch only once the
    // session has read (and so decided, and applied) the one before: each decision is applied
    // right after its window, as with a live trainer, however loaded the machine (a fixed pace
    // let a slow round take several windows, and windows after a decision but before its apply
    // count as "before").
    feed(&f, &lines[..1150]);
    let mut fed = 1150;
    let read = |f: &Fixture| {
        state(&f.sim)
            .and_then(|s| s["source_cursor"]["pods"][f.pod.as_str()]["lines"].as_u64())
            .unwrap_or(0)
    };
    let mut slowly = |f: &Fixture, until: &dyn Fn() -> bool, what: &str| {
        while !until() {
            assert!(fed < lines.len(), "the trace ended before {what}");
            let next = (fed + 10).min(lines.len());
            f.sim
                .append_logs("ml", &f.pod, "trainer", &lines[fed..next]);
            fed = next;
            // The pod's log starts with one line of its own.
            wait_for("the batch read", Duration::from_secs(30), || {
                read(f) > fed as u64
            });
        }
    };
    slowly(
        &f,
        &|| !reasons(&f.sim, "KnobsApplied").is_empty(),
        "the change",
    );
    // Apply off: the loop goes on deciding, and its rollback is not applied.
    f.sim
        .modify(
            ResourceKind::ConfigMap,
            SYSTEM,
            "modekeeper-settings",
            "test",
            |cm| cm["data"]["apply"] = "false".into(),
        )
        .unwrap();
    let rollback_decided =
        || state(&f.sim).is_some_and(|s| s["latest_decision"]["rollback"] == true);
    slowly(&f, &rollback_decided, "the rollback");
    let log1 = c.stop();
    assert_eq!(writes(&f.sim), 1, "{log1}\n{:?}", events(&f.sim));
    assert!(
        reasons(&f.sim, "EffectHurt").len() == 1,
        "{:?}",
        events(&f.sim)
    );
    assert!(reasons(&f.sim, "RolledBack").is_empty());

    f.sim
        .modify(
            ResourceKind::ConfigMap,
            SYSTEM,
            "modekeeper-settings",
            "test",
            |cm| cm["data"]["apply"] = "true".into(),
        )
        .unwrap();
    let c = Replica::start(&f, "replica-a");
    wait_or(
        "the rollback's apply",
        Duration::from_secs(60),
        || !reasons(&f.sim, "RolledBack").is_empty(),
        || format!("{}\n{:#?}", c.log(), events(&f.sim)),
    );
    let log2 = c.stop();
    assert_eq!(writes(&f.sim), 2, "{log2}");
    let rolled = reasons(&f.sim, "RolledBack");
    assert_eq!(rolled.len(), 1, "{:?}", events(&f.sim));
    assert!(rolled[0].contains("dataloader_num_workers"), "{rolled:?}");
    assert_eq!(reasons(&f.sim, "KnobsApplied").len(), 1, "the change only");
}

#[test]
fn an_unlabelled_workload_s_session_stops_cleanly() {
    let f = fixture(settings(false, "off"));
    let c = Replica::start(&f, "replica-a");
    let lines = drift_lines();
    feed(&f, &lines[..lines.len() / 2]);
    wait_for("windows", Duration::from_secs(60), || windows(&f.sim) >= 2);
    f.sim
        .modify(ResourceKind::Deployment, "ml", "trainer", "kubectl", |o| {
            o["metadata"]["labels"]
                .as_object_mut()
                .unwrap()
                .remove(ENABLED);
        });
    wait_for("the session to stop", Duration::from_secs(20), || {
        summary(&f.sim).is_some_and(|s| s["status"] == "stopped")
    });
    let stopped_at = windows(&f.sim);
    feed(&f, &lines[lines.len() / 2..]);
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(windows(&f.sim), stopped_at, "{}", c.log());
    // Apply off: proposals only, never a write.
    assert_eq!(writes(&f.sim), 0);
    let (_, metrics) = c.get("/metrics");
    assert!(
        !metrics.contains("name=\"trainer\""),
        "a stopped session's series stay:\n{metrics}"
    );
    c.stop();
}

/// A replica whose shard was taken over (another holds the Lease and has written the state
/// since) stops without a SessionError and without writing over the new owner's state.
#[test]
fn a_replica_that_lost_its_shard_leaves_the_new_owners_state_alone() {
    let f = fixture(settings(false, "off"));
    let lines = drift_lines();
    let c = started_with_windows(&f, &lines[..lines.len() / 3]);
    let name = state_configmap_name(&f.sim);
    // Another replica takes the shard and checkpoints the session as its own.
    f.sim.modify(
        ResourceKind::Lease,
        SYSTEM,
        "modekeeper-controller-shard-0",
        "ghost",
        |l| {
            l["spec"]["holderIdentity"] = "replica-b".into();
            l["spec"]["leaseDurationSeconds"] = 3600.into();
        },
    );
    f.sim
        .modify(ResourceKind::ConfigMap, SYSTEM, &name, "ghost", |cm| {
            let mut s: Value =
                serde_json::from_str(cm["data"]["summary.json"].as_str().unwrap()).unwrap();
            s["replica"] = "replica-b".into();
            cm["data"]["summary.json"] = s.to_string().into();
        })
        .unwrap();
    wait_or(
        "the shard lost",
        Duration::from_secs(20),
        || c.log().contains("leading shards [] of 1"),
        || c.log(),
    );
    std::thread::sleep(Duration::from_secs(3));
    let s = summary(&f.sim).unwrap();
    assert_eq!(s["replica"], "replica-b", "{s:#}\n{}", c.log());
    assert_ne!(s["status"], "error", "{s:#}\n{}", c.log());
    let errors = reasons(&f.sim, "SessionError");
    assert!(errors.is_empty(), "{errors:?}\n{}", c.log());
    c.stop();
}

/// A decision told as an Event just before a graceful stop (a rolling upgrade) is still posted:
/// the resumed session will not tell it again.
#[test]
fn events_queued_before_a_graceful_stop_are_posted() {
    let f = fixture(settings(false, "off"));
    // A slow Events endpoint: the Events queued last are still in flight at the stop.
    f.sim.inject_fault(
        kube_sim::Fault::delay("**/events", Duration::from_millis(1500)).method("POST"),
    );
    let c = Replica::start(&f, "replica-a");
    feed(&f, &drift_lines());
    wait_or(
        "the decision saved",
        Duration::from_secs(90),
        || summary(&f.sim).is_some_and(|s| !s["last_decision"].is_null()),
        || c.log(),
    );
    let log = c.stop();
    std::thread::sleep(Duration::from_secs(2));
    let proposed = reasons(&f.sim, "KnobsProposed");
    assert_eq!(proposed.len(), 1, "{:?}\n{log}", events(&f.sim));
}

/// The ingest lag is the age of the newest record when it was ingested, not the time since the
/// trainer last wrote: a paused trainer or a finished Job must not look like a lagging controller
/// (the sample alert fires at 60 s).
#[test]
fn a_quiet_trainer_does_not_grow_the_ingest_lag() {
    let f = fixture(settings(false, "off"));
    let lines = drift_lines();
    let c = started_with_windows(&f, &lines[..lines.len() / 3]);
    let lag = || -> f64 {
        let (_, metrics) = c.get("/metrics");
        metrics
            .lines()
            .find(|l| l.starts_with("modekeeper_ingest_lag_seconds{") && l.contains("\"trainer\""))
            .and_then(|l| l.rsplit(' ').next()?.parse().ok())
            .unwrap_or_else(|| panic!("no ingest lag:\n{metrics}"))
    };
    // Every line fed read (the seeded "starting trainer" one too) before the trainer goes quiet.
    let fed = (lines.len() / 3 + 1) as f64;
    let read = || -> f64 {
        let (_, metrics) = c.get("/metrics");
        metrics
            .lines()
            .find(|l| l.starts_with("modekeeper_lines_read_total{") && l.contains("\"trainer\""))
            .and_then(|l| l.rsplit(' ').next()?.parse().ok())
            .unwrap_or(0.0)
    };
    wait_for("every line read", Duration::from_secs(60), || read() >= fed);
    std::thread::sleep(Duration::from_millis(1500));
    let before = lag();
    std::thread::sleep(Duration::from_secs(3));
    let after = lag();
    assert!(
        after < before + 1.0,
        "the lag grew from {before} to {after} with no new line"
    );
    c.stop();
}

/// A workload deleted and created again under its name (a new uid) gets a new session; the old
/// one's stop must not take the new one's metric series with it (they share their labels).
#[test]
fn a_recreated_workload_keeps_its_new_sessions_metrics() {
    let f = fixture(settings(false, "off"));
    let lines = drift_lines();
    let c = started_with_windows(&f, &lines[..lines.len() / 4]);
    let old_state = state_configmap_name(&f.sim);
    // The old session's last checkpoint is slow: the new session runs meanwhile.
    f.sim.inject_fault(kube_sim::Fault::delay(
        format!("/api/v1/namespaces/{SYSTEM}/configmaps/{old_state}"),
        Duration::from_secs(3),
    ));
    assert!(f.sim.delete(ResourceKind::Deployment, "ml", "trainer"));
    let pods = f
        .sim
        .add_workload(
            WorkloadSeed::deployment("ml", "trainer")
                .label(ENABLED, "true")
                .annotation("modekeeper.io/passport", "safe-drift")
                .annotation(KNOB, "4")
                .template_annotation(KNOB, "4")
                .log("trainer", "starting trainer"),
        )
        .unwrap();
    let new_pod = pods[0].clone();
    wait_or(
        "the new session",
        Duration::from_secs(20),
        || {
            c.log()
                .matches("session started from the beginning")
                .count()
                >= 2
        },
        || c.log(),
    );
    for chunk in lines.chunks(200) {
        f.sim.append_logs("ml", &new_pod, "trainer", chunk);
        std::thread::sleep(Duration::from_millis(20));
    }
    let series = || c.get("/metrics").1.contains("name=\"trainer\"");
    wait_or(
        "the new session's series",
        Duration::from_secs(20),
        series,
        || c.log(),
    );
    // Past the old session's slow stop.
    std::thread::sleep(Duration::from_secs(5));
    let (_, metrics) = c.get("/metrics");
    assert!(
        metrics.contains("name=\"trainer\""),
        "the new session's series went with the old one:\n{metrics}\n{}",
        c.log()
    );
    c.stop();
}

/// A session in error is tried again after the retry period or a change that can fix it (its
/// annotations or spec), not on every status update of its workload: a Deployment's status
/// changes with every pod, and each try costs API calls (times every workload in error).
#[test]
fn a_failed_session_is_not_retried_on_every_status_update() {
    let f = fixture(settings(false, "off"));
    let c = Replica::start(&f, "replica-a");
    wait_for("the session", Duration::from_secs(30), || {
        c.log().contains("session started")
    });
    f.sim
        .modify(ResourceKind::Deployment, "ml", "trainer", "kubectl", |o| {
            o["metadata"]["annotations"]["modekeeper.io/passport"] = "no-such-passport".into();
        });
    wait_or(
        "the SessionError",
        Duration::from_secs(20),
        || !reasons(&f.sim, "SessionError").is_empty(),
        || c.log(),
    );
    let passports = "/api/v1/namespaces/modekeeper-system/configmaps/modekeeper-passports";
    std::thread::sleep(Duration::from_millis(500));
    let before = f.sim.count_requests("GET", passports);
    for i in 0..10 {
        f.sim
            .modify(
                ResourceKind::Deployment,
                "ml",
                "trainer",
                "kube-controller-manager",
                |o| {
                    o["status"]["observedGeneration"] = (100 + i).into();
                },
            )
            .unwrap();
        std::thread::sleep(Duration::from_millis(200));
    }
    std::thread::sleep(Duration::from_millis(500));
    let tries = f.sim.count_requests("GET", passports) - before;
    assert!(
        tries <= 1,
        "{tries} tries for 10 status updates\n{}",
        c.log()
    );
    c.stop();
}

#[test]
fn controller_help_and_bad_flags() {
    let o = closed_loop_support::std_bin()
        .args(["controller", "--help"])
        .env("COLUMNS", "100")
        .output()
        .unwrap();
    assert!(o.status.success());
    insta::assert_snapshot!("controller_help", String::from_utf8(o.stdout).unwrap());
    // Lease timings that could make two leaders: one line, exit 2, nothing started.
    let o = closed_loop_support::std_bin()
        .args([
            "controller",
            "--lease-duration",
            "2s",
            "--renew-deadline",
            "3s",
        ])
        .args(["-n", "x", "--listen", "127.0.0.1:0"])
        .output()
        .unwrap();
    let err = String::from_utf8(o.stderr).unwrap();
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("renew deadline"), "{err}");
}

/// The drift trace as Prometheus series, one sample a second from `base_ms`: the trainer's (its
/// namespace, its pod) and three decoys the workload's selector must leave out, with step times
/// ten times longer — the same pod name in another namespace, a pod of a workload whose name only
/// starts like the trainer's, and a pod of a sibling `trainer-big`.
fn drift_openmetrics(pod: &str, base_ms: i64) -> String {
    let records: Vec<Value> = drift_lines()
        .iter()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let series = [
        ("ml", pod, 1.0),
        ("other", pod, 10.0),
        ("ml", "trainerx-0", 10.0),
        ("ml", "trainer-big-5b8f7c9d4-x2kqz", 10.0),
    ];
    let mut out = String::new();
    for (metric, field) in [
        ("modekeeper_step_time_ms", "step_time_ms"),
        ("modekeeper_step", "step"),
        ("modekeeper_loss", "loss"),
        ("modekeeper_data_wait_ms", "data_wait_ms"),
        ("DCGM_FI_DEV_GPU_UTIL", "gpu_util_pct"),
    ] {
        writeln!(out, "# TYPE {metric} gauge").unwrap();
        for (ns, pod, scale) in series {
            for (i, r) in records.iter().enumerate() {
                let Some(v) = r[field].as_f64() else { continue };
                let v = if field == "step_time_ms" {
                    v * scale
                } else {
                    v
                };
                let ts = base_ms + i as i64 * 1000;
                writeln!(
                    out,
                    "{metric}{{namespace=\"{ns}\",pod=\"{pod}\"}} {v} {}",
                    ts / 1000
                )
                .unwrap();
            }
        }
    }
    out.push_str("# EOF\n");
    out
}

/// Source `prometheus`: the workload's series in a real Prometheus (backfilled hours ago, the
/// workload created just before them) are read from its creation, decided like its pod logs, and
/// applied once; the decoy series of another namespace and of a look-alike workload are never read.
#[test]
fn a_workload_read_from_prometheus_is_decided_from_its_own_series_only() {
    let f = fixture(settings(true, "off"));
    // Whole minutes, in finished 2 h blocks; the workload was created a minute before its series.
    let base_ms = (chrono::Utc::now().timestamp_millis() - 3 * 3600 * 1000) / 60_000 * 60_000;
    // A sample stays current for half a second only (less than the grid's step), so a grid point
    // after the last one finds none.
    let Some(prom) = Prometheus::start(
        |_| "global:\n  scrape_interval: 1m\n".into(),
        &[],
        Some(&drift_openmetrics(&f.pod, base_ms)),
        &["--query.lookback-delta=500ms"],
    ) else {
        return;
    };
    let created = chrono::DateTime::from_timestamp_millis(base_ms - 60_000)
        .unwrap()
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    f.sim
        .modify(ResourceKind::Deployment, "ml", "trainer", "test", |v| {
            v["metadata"]["creationTimestamp"] = json!(created);
        })
        .unwrap();
    f.sim
        .modify(
            ResourceKind::ConfigMap,
            SYSTEM,
            "modekeeper-settings",
            "test",
            |v| {
                v["data"] = json!({
                    "apply": "true",
                    "source": "prometheus",
                    "prometheus-url": prom.url,
                    "prometheus-lookback": "4h",
                    "prometheus-config": r#"{"step": "1s", "lag": "2s"}"#,
                });
            },
        )
        .unwrap();
    let c = Replica::start(&f, "replica-a");
    wait_or(
        "the apply",
        Duration::from_secs(120),
        || !reasons(&f.sim, "KnobsApplied").is_empty(),
        || format!("{}\n{:#?}\n{:#?}", c.log(), events(&f.sim), summary(&f.sim)),
    );
    let applied = reasons(&f.sim, "KnobsApplied");
    assert_eq!(applied.len(), 1, "{:?}", events(&f.sim));
    assert!(
        applied[0].contains("grad_accum_steps 4 -> 8"),
        "{applied:?}"
    );
    assert_eq!(template_knob(&f).as_deref(), Some("8"));
    assert_eq!(writes(&f.sim), 1);
    let started = reasons(&f.sim, "SessionStarted");
    assert!(
        started[0].contains(&format!("started at {created} of its Prometheus series")),
        "{started:?}"
    );
    // Every one of the trainer's 1,696 samples, read once, and not one of the decoys'.
    let want = format!(
        r#"modekeeper_lines_read_total{{kind="Deployment",namespace="ml",name="trainer"}} {}"#,
        drift_lines().len()
    );
    wait_or(
        "every sample read",
        Duration::from_secs(30),
        || c.get("/metrics").1.contains(&want),
        || {
            let m = c.get("/metrics").1;
            let read: Vec<&str> = m.lines().filter(|l| l.contains("lines_read")).collect();
            format!("{read:?}\n{}", c.log())
        },
    );
    let state = state(&f.sim).unwrap();
    assert_eq!(state["config"]["source"]["kind"], "prometheus", "{state}");
    assert!(
        state["config"]["source"]["queries"]["step_time_ms"]
            .as_str()
            .unwrap()
            .contains(r#"{namespace="ml",pod=~"trainer-[bcdfghjklmnpqrstvwxz2456789]{1,10}-[bcdfghjklmnpqrstvwxz2456789]{5}"}"#),
        "{state}"
    );
    assert!(state["source_cursor"]["last_ts_ms"].as_i64().unwrap() > base_ms);
    // Killed and restarted, it resumes at its saved grid point: not one sample read again, nothing
    // decided or applied twice.
    c.kill();
    let c = Replica::start(&f, "replica-b");
    wait_or(
        "the resumed session",
        Duration::from_secs(60),
        || reasons(&f.sim, "SessionStarted").len() == 2,
        || format!("{}\n{:#?}", c.log(), events(&f.sim)),
    );
    let resumed = reasons(&f.sim, "SessionStarted");
    assert!(resumed[1].contains("resumed after window"), "{resumed:?}");
    std::thread::sleep(Duration::from_secs(2));
    let metrics = c.get("/metrics").1;
    assert!(
        !metrics
            .lines()
            .any(|l| l.starts_with("modekeeper_lines_read_total{") && !l.ends_with(" 0")),
        "samples read again after the restart:\n{metrics}"
    );
    assert_eq!(reasons(&f.sim, "KnobsApplied").len(), 1);
    assert_eq!(writes(&f.sim), 1);
    c.stop();
    drop(prom);
}

/// The source of a running session changed from pod logs to Prometheus: its pod-log position
/// means nothing to Prometheus, so the new session reads from the workload's creation (at most
/// the lookback back), and it says so, not that it continued at a saved position it dropped.
/// (The SessionStarted Event of a restart within six minutes is a series update of the first,
/// whose note stays: the log carries the new one.)
#[test]
fn a_session_whose_source_changed_says_where_it_starts() {
    let Some(prom) = Prometheus::start(
        |_| "global:\n  scrape_interval: 1m\n".into(),
        &[],
        None,
        &[],
    ) else {
        return;
    };
    let mut s = settings(false, "off");
    s["prometheus-url"] = json!(prom.url);
    let f = fixture(s);
    let c = Replica::start(&f, "replica-a");
    wait_or(
        "the pod-log session",
        Duration::from_secs(60),
        || reasons(&f.sim, "SessionStarted").len() == 1,
        || c.log(),
    );
    f.sim
        .modify(ResourceKind::Deployment, "ml", "trainer", "kubectl", |o| {
            o["metadata"]["annotations"]["modekeeper.io/source"] = "prometheus".into();
        })
        .unwrap();
    let restarted = || {
        c.log()
            .lines()
            .find(|l| l.contains(": session ") && l.contains("source changed"))
            .map(str::to_string)
    };
    wait_or(
        "the Prometheus session",
        Duration::from_secs(60),
        || restarted().is_some(),
        || c.log(),
    );
    let line = restarted().unwrap();
    assert!(line.contains("of its Prometheus series"), "{line}");
    assert!(!line.contains("saved source position"), "{line}");
    assert_eq!(
        state(&f.sim).unwrap()["config"]["source"]["kind"],
        "prometheus"
    );
    c.stop();
    drop(prom);
}

/// A Prometheus that accepts connections and never answers (a hung server, a full queue): a
/// session opening its source has a query on the wire for up to the query timeout (60 s, for
/// each of its queries in turn). A controller told to stop then stops at once: the session does
/// not wait for the answer, nor the process for the blocking thread still waiting on it.
#[test]
fn a_controller_stops_while_a_prometheus_query_hangs() {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", l.local_addr().unwrap());
    let accepted = Arc::new(Mutex::new(Vec::new()));
    let held = accepted.clone();
    std::thread::spawn(move || {
        for c in l.incoming().flatten() {
            held.lock().unwrap().push(c);
        }
    });
    let mut s = settings(false, "off");
    s["source"] = json!("prometheus");
    s["prometheus-url"] = json!(url);
    let f = fixture(s);
    let c = Replica::start(&f, "replica-a");
    wait_or(
        "a query on the wire",
        Duration::from_secs(60),
        || !accepted.lock().unwrap().is_empty(),
        || c.log(),
    );
    std::thread::sleep(Duration::from_millis(500));
    let start = Instant::now();
    let log = c.stop();
    assert!(
        start.elapsed() < Duration::from_secs(10),
        "stopped after {:?}: {log}",
        start.elapsed()
    );
    assert!(!log.contains("did not stop"), "{log}");
}

/// A workload whose selector matches no step-time series in Prometheus (the scrape config names
/// its labels otherwise, a typo in its annotation) has nothing to decide from: its owner is told
/// in a Warning Event on the workload, not only in the controller's log.
#[test]
fn a_workload_without_series_in_prometheus_is_told_so() {
    let Some(prom) = Prometheus::start(
        |_| "global:\n  scrape_interval: 1m\n".into(),
        &[],
        None,
        &[],
    ) else {
        return;
    };
    let mut s = settings(false, "off");
    s["source"] = json!("prometheus");
    s["prometheus-url"] = json!(prom.url);
    s["prometheus-config"] = json!(r#"{"step": "1s", "lag": "1s"}"#);
    let f = fixture(s);
    let c = Replica::start(&f, "replica-a");
    wait_or(
        "the NoTelemetry Event",
        Duration::from_secs(60),
        || !reasons(&f.sim, "NoTelemetry").is_empty(),
        || format!("{}\n{:#?}", c.log(), events(&f.sim)),
    );
    let told = reasons(&f.sim, "NoTelemetry");
    assert!(
        told[0].contains(r#"modekeeper_step_time_ms{namespace="ml",pod=~"trainer-[bcdfghjklmnpqrstvwxz2456789]{1,10}-"#)
            && told[0].contains("returned no series"),
        "{told:?}"
    );
    let warning = events(&f.sim)
        .into_iter()
        .any(|e| e.0 == "Warning" && e.1 == "NoTelemetry");
    assert!(warning, "{:?}", events(&f.sim));
    c.stop();
    drop(prom);
}
