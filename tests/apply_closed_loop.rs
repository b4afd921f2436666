//! `closed-loop run --apply` on the real drift trace against kube-sim: plan -> verify -> gated
//! apply in one run, the report's apply fields and one `results` entry per proposal (also when
//! blocked), and the rollback plan undoing it through `k8s verify` + `k8s apply`.

mod closed_loop_support;
mod k8s_common;

use std::path::{Path, PathBuf};
use std::process::Output;

use closed_loop_support::{bin, json, trace};
use k8s_common::{KNOB, standard};
use kube_sim::{KubeSim, ResourceKind};
use modekeeper::license::{self, Keyring, LicenseClaims};
use serde_json::Value;

const MICRO: &str = "modekeeper/knob.microbatch_size";

/// The safe passport with step limits wide enough for DRIFT-RETUNE's halving/doubling, and
/// `gates.apply` as given (every built-in template is plan-only).
fn drift_passport_with(dir: &Path, apply: bool) -> PathBuf {
    let mut p: Value =
        serde_json::to_value(modekeeper::passport::template("safe").unwrap().unwrap()).unwrap();
    p["name"] = "safe-drift".into();
    p["gates"]["apply"] = apply.into();
    for k in ["microbatch_size", "grad_accum_steps"] {
        p["knobs"][k]["max_delta_per_step"] = serde_json::json!({"absolute": 32});
    }
    let path = dir.join(if apply {
        "passport.json"
    } else {
        "passport-plan-only.json"
    });
    std::fs::write(&path, serde_json::to_vec_pretty(&p).unwrap()).unwrap();
    path
}

fn drift_passport(dir: &Path) -> PathBuf {
    drift_passport_with(dir, true)
}

struct Setup {
    sim: KubeSim,
    dir: tempfile::TempDir,
    kubeconfig: PathBuf,
    keyring: PathBuf,
    license: PathBuf,
    passport: PathBuf,
    claims: LicenseClaims,
    key: ed25519_dalek::SigningKey,
}

fn setup() -> Setup {
    let sim = standard().start_blocking().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    sim.write_kubeconfig(&kubeconfig, "t0").unwrap();
    let key = license::generate_signing_key().unwrap();
    let keyring = dir.path().join("keyring.json");
    std::fs::write(
        &keyring,
        Keyring::from_keys([key.verifying_key()]).to_json(),
    )
    .unwrap();
    let now = chrono::Utc::now().timestamp();
    let claims = LicenseClaims {
        license_id: "lic-closed-loop".into(),
        subject: "test cluster".into(),
        issued_at: now - 60,
        not_before: now - 60,
        expires_at: now + 3600,
        entitlements: ["apply".to_string()].into(),
        bindings: Default::default(),
    };
    let license = dir.path().join("license.json");
    std::fs::write(&license, license::mint(&key, &claims, true).unwrap()).unwrap();
    let passport = drift_passport(dir.path());
    Setup {
        sim,
        dir,
        kubeconfig,
        keyring,
        license,
        passport,
        claims,
        key,
    }
}

impl Setup {
    fn closed_loop(&self, out: &Path, extra: &[&str], envs: &[(&str, &str)]) -> Output {
        self.decide("run", out, extra, envs)
    }

    /// `closed-loop watch` over the drift trace (read once, to its end or `--max-iterations`).
    fn watch(&self, out: &Path, extra: &[&str], envs: &[(&str, &str)]) -> Output {
        self.decide("watch", out, extra, envs)
    }

    /// `closed-loop SUB` over the drift trace, against the emulator, under the drift passport.
    fn decide(&self, sub: &str, out: &Path, extra: &[&str], envs: &[(&str, &str)]) -> Output {
        self.decide_under(&self.passport, sub, out, extra, envs)
    }

    /// [`Self::decide`] under another passport.
    fn decide_under(
        &self,
        passport: &Path,
        sub: &str,
        out: &Path,
        extra: &[&str],
        envs: &[(&str, &str)],
    ) -> Output {
        let mut c = bin();
        c.env_remove("MODEKEEPER_KILL_SWITCH")
            .env_remove("MODEKEEPER_KEYRING")
            .env_remove("MODEKEEPER_LICENSE_PATH")
            .env("HOME", self.dir.path());
        for (k, v) in envs {
            c.env(k, v);
        }
        c.args(["closed-loop", sub, "--source", "file", "--path"])
            .arg(trace("drift"))
            .arg("--out")
            .arg(out)
            .args(["-n", "ml", "--deployment", "trainer", "--passport"])
            .arg(passport)
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .args(extra)
            .output()
            .unwrap()
    }

    fn k8s(&self, verb: &str, plan: &Path, out: &Path, extra: &[&str]) -> Output {
        let mut c = bin();
        c.env_remove("MODEKEEPER_KILL_SWITCH")
            .env("HOME", self.dir.path())
            .args(["k8s", verb, "--plan"])
            .arg(plan)
            .arg("--out")
            .arg(out)
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .args(extra)
            .output()
            .unwrap()
    }

    fn lic_args(&self) -> Vec<&str> {
        vec![
            "--license",
            self.license.to_str().unwrap(),
            "--keyring",
            self.keyring.to_str().unwrap(),
        ]
    }

    fn template(&self, key: &str) -> Option<String> {
        self.sim
            .template_annotation(ResourceKind::Deployment, "ml", "trainer", key)
    }

    fn writes(&self) -> usize {
        self.sim
            .requests()
            .iter()
            .filter(|r| r.method == "PATCH" && !r.query.contains("dryRun"))
            .count()
    }
}

/// The Events stored about Deployment ml/trainer, oldest first: (type, reason, message).
fn trainer_events(s: &Setup) -> Vec<(String, String, String)> {
    k8s_common::deployment_events(&s.sim, "ml", "trainer")
}

fn code(o: &Output) -> i32 {
    o.status.code().unwrap_or(-1)
}

#[test]
fn closed_loop_apply_on_the_drift_trace_then_rollback() {
    let s = setup();
    let out = s.dir.path().join("out");
    let mut args = vec!["--apply"];
    args.extend(s.lic_args());
    let o = s.closed_loop(&out, &args, &[]);
    assert_eq!(code(&o), 0, "{}", String::from_utf8_lossy(&o.stderr));

    let r = json(&out.join("closed_loop_latest.json"));
    assert_eq!(r["mode"], "apply");
    assert_eq!(r["apply_requested"], true);
    assert_eq!(r["verify_ok"], true);
    assert_eq!(r["license_ok"], true);
    assert_eq!(r["keyring_override"], true);
    assert_eq!(r["apply_attempted"], true);
    assert_eq!(r["apply_ok"], true);
    assert_eq!(r["apply_blocked_reason"], Value::Null);
    assert_eq!(r["apply_decision_summary"], "apply executed: ok");
    let proposed = r["proposed"].as_array().unwrap();
    let results = r["results"].as_array().unwrap();
    assert!(!proposed.is_empty());
    assert_eq!(results.len(), proposed.len());
    assert!(
        results
            .iter()
            .all(|x| x["applied"] == true && x["reason"] == "k8s_apply"),
        "{results:?}"
    );

    // The Deployment's pod template carries the planned value.
    let plan = json(&out.join("k8s_plan.json"));
    let planned = plan["items"][0]["patch"]["spec"]["template"]["metadata"]["annotations"][KNOB]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(planned, "8", "DRIFT-RETUNE doubles grad_accum_steps 4 -> 8");
    assert_eq!(s.template(KNOB).as_deref(), Some(planned.as_str()));
    assert_eq!(s.template(MICRO).as_deref(), Some("16"));
    assert_eq!(s.writes(), 1);

    // Both reports sit next to the plan and tie to it.
    let verify = json(Path::new(r["k8s_verify_report_path"].as_str().unwrap()));
    assert_eq!(verify["plan_digest"], plan["plan_digest"]);
    let apply = json(Path::new(r["k8s_apply_report_path"].as_str().unwrap()));
    assert_eq!(apply["schema_version"], "k8s_apply.v1");
    assert_eq!(apply["plan_digest"], plan["plan_digest"]);
    assert_eq!(apply["changed_items"], serde_json::json!([0]));

    // The rollback plan restores grad_accum_steps and removes microbatch_size (it was absent).
    let rb = PathBuf::from(r["rollback_plan_path"].as_str().unwrap());
    let rb_out = s.dir.path().join("rollback");
    assert_eq!(code(&s.k8s("verify", &rb, &rb_out, &[])), 0);
    let o = s.k8s("apply", &rb, &rb_out, &s.lic_args());
    assert_eq!(code(&o), 0, "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(s.template(KNOB).as_deref(), Some("4"));
    assert_eq!(s.template(MICRO), None);
}

#[test]
fn closed_loop_apply_blocked_still_writes_the_plan_and_one_result_per_proposal() {
    let s = setup();
    let out = s.dir.path().join("out");
    // No license anywhere.
    let o = s.closed_loop(
        &out,
        &["--apply", "--keyring", s.keyring.to_str().unwrap()],
        &[],
    );
    assert_eq!(code(&o), 2, "{}", String::from_utf8_lossy(&o.stderr));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("apply blocked: license_missing"), "{err}");
    let r = json(&out.join("closed_loop_latest.json"));
    assert_eq!(r["verify_ok"], true, "verify ran; the license blocked");
    assert_eq!(r["apply_attempted"], false);
    assert_eq!(r["apply_ok"], Value::Null);
    assert_eq!(r["apply_blocked_reason"], "license_missing");
    let results = r["results"].as_array().unwrap();
    assert_eq!(results.len(), r["proposed"].as_array().unwrap().len());
    assert!(!results.is_empty());
    assert!(
        results
            .iter()
            .all(|x| x["blocked"] == true && x["reason"] == "license_missing")
    );
    assert!(out.join("k8s_plan.json").exists());
    assert_eq!(s.writes(), 0);
    assert_eq!(s.template(KNOB).as_deref(), Some("4"));
}

/// Running advanced chord policies in an applying loop takes the `chords.advanced` entitlement as
/// well as `apply`; without it nothing is written, with it the same run applies.
#[test]
fn closed_loop_apply_with_advanced_policies_needs_the_advanced_entitlement() {
    let s = setup();
    let out = s.dir.path().join("out");
    let mut args = vec!["--apply", "--enable-advanced", "timeout-guard"];
    args.extend(s.lic_args());
    let o = s.closed_loop(&out, &args, &[]);
    assert_eq!(code(&o), 2, "{}", String::from_utf8_lossy(&o.stderr));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("apply blocked: entitlement_missing"), "{err}");
    assert!(err.contains("chords.advanced"), "{err}");
    let r = json(&out.join("closed_loop_latest.json"));
    assert_eq!(r["apply_blocked_reason"], "entitlement_missing");
    assert!(!r["proposed"].as_array().unwrap().is_empty());
    assert_eq!(s.writes(), 0);

    let mut claims = s.claims.clone();
    claims.entitlements = ["apply".to_string(), "chords.advanced".to_string()].into();
    std::fs::write(&s.license, license::mint(&s.key, &claims, true).unwrap()).unwrap();
    let out = s.dir.path().join("out-advanced");
    let o = s.closed_loop(&out, &args, &[]);
    assert_eq!(code(&o), 0, "{}", String::from_utf8_lossy(&o.stderr));
    let r = json(&out.join("closed_loop_latest.json"));
    assert_eq!(r["apply_ok"], true);
    assert!(s.writes() > 0);

    // Without advanced policies, `apply` alone is enough (the first license's case).
    claims.entitlements = ["apply".to_string()].into();
    std::fs::write(&s.license, license::mint(&s.key, &claims, true).unwrap()).unwrap();
    let mut args = vec!["--apply"];
    args.extend(s.lic_args());
    let o = s.closed_loop(&s.dir.path().join("out-base"), &args, &[]);
    assert_eq!(code(&o), 0, "{}", String::from_utf8_lossy(&o.stderr));
}

#[test]
fn closed_loop_apply_with_the_kill_switch_does_not_touch_the_cluster() {
    let s = setup();
    let out = s.dir.path().join("out");
    let mut args = vec!["--apply"];
    args.extend(s.lic_args());
    let o = s.closed_loop(&out, &args, &[("MODEKEEPER_KILL_SWITCH", "1")]);
    assert_eq!(code(&o), 2);
    let r = json(&out.join("closed_loop_latest.json"));
    assert_eq!(r["apply_blocked_reason"], "kill_switch_active");
    assert_eq!(r["kill_switch_active"], true);
    assert_eq!(r["verify_ok"], Value::Null);
    assert_eq!(
        r["results"].as_array().unwrap().len(),
        r["proposed"].as_array().unwrap().len()
    );
    assert!(
        s.sim.requests().is_empty(),
        "no request at all, not even verify"
    );
    let apply = json(Path::new(r["k8s_apply_report_path"].as_str().unwrap()));
    assert_eq!(apply["block_reason"], "kill_switch_active");
}

#[test]
fn watch_apply_applies_each_decision_once_across_restarts() {
    let s = setup();
    let out = s.dir.path().join("watch");
    let mut args = vec!["--apply", "--max-iterations", "6", "-o", "json"];
    args.extend(s.lic_args());
    let mut rounds = 0;
    loop {
        let o = s.watch(&out, &args, &[]);
        assert_eq!(code(&o), 0, "{}", String::from_utf8_lossy(&o.stderr));
        let r: Value = serde_json::from_slice(&o.stdout).unwrap();
        rounds += 1;
        if r["stop_reason"] == "source_ended" {
            break;
        }
        assert!(rounds < 20);
    }
    let w = json(&out.join("watch_latest.json"));
    assert_eq!(w["mode"], "apply");
    assert_eq!(w["apply_ok_total"], 1, "{w:#}");
    assert_eq!(w["apply_attempted_total"], 1);
    assert_eq!(w["last_apply"]["outcome"], "applied");
    assert_eq!(w["knobs_last_applied"]["grad_accum_steps"], 8.0);
    assert_eq!(s.template(KNOB).as_deref(), Some("8"));
    // One write for the one decision, however many times the watch was restarted around it.
    assert_eq!(s.writes(), 1);
    assert!(rounds > 2);
    let explain = std::fs::read_to_string(out.join("explain.jsonl")).unwrap();
    assert_eq!(explain.matches("\"watch_apply\"").count(), 1);
    // Issue 16: the apply is an Event on the Deployment, as the real kubectl shows it.
    let events = trainer_events(&s);
    let applied: Vec<_> = events.iter().filter(|e| e.1 == "KnobsApplied").collect();
    assert_eq!(applied.len(), 1, "{events:?}");
    assert_eq!(applied[0].0, "Normal");
    assert!(
        applied[0].2.contains("grad_accum_steps 4 -> 8"),
        "{events:?}"
    );
    assert_eq!(explain.matches("\"watch_k8s_event\"").count(), events.len());
    if let Some(kubectl) = k8s_common::kubectl_or_skip("watch_apply_events") {
        let o = std::process::Command::new(kubectl)
            .arg("--kubeconfig")
            .arg(&s.kubeconfig)
            .arg("--cache-dir")
            .arg(s.dir.path().join("kubectl-cache"))
            .args(["get", "events", "-n", "ml"])
            .env("HOME", s.dir.path())
            .output()
            .unwrap();
        let table = String::from_utf8_lossy(&o.stdout);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let row = table
            .lines()
            .find(|l| l.contains("KnobsApplied"))
            .unwrap_or_else(|| panic!("{table}"));
        assert!(
            row.contains("Normal")
                && row.contains("deployment/trainer")
                && row.contains("grad_accum_steps 4 -> 8"),
            "{table}"
        );
    }
}

/// An Event the server refuses is a warning, never a stop: the apply happens all the same.
#[test]
fn a_refused_event_does_not_stop_the_watch() {
    let s = setup();
    // Everything the apply needs, nothing in events.k8s.io.
    s.sim.set_rules(
        "t0",
        ["", "apps", "authorization.k8s.io"].map(|g| kube_sim::Rule::allow(["*"], g, ["*"])),
    );
    let out = s.dir.path().join("watch");
    let mut args = vec!["--apply", "-o", "json"];
    args.extend(s.lic_args());
    let o = s.watch(&out, &args, &[]);
    assert_eq!(code(&o), 0, "{}", String::from_utf8_lossy(&o.stderr));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("warning: cannot post the Kubernetes Event KnobsApplied"),
        "{err}"
    );
    assert_eq!(s.template(KNOB).as_deref(), Some("8"));
    assert!(s.sim.list(ResourceKind::Event, None).is_empty());
    let explain = std::fs::read_to_string(out.join("explain.jsonl")).unwrap();
    let counts: Vec<Value> = explain
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|e| e["event"] == "watch_events")
        .collect();
    assert_eq!(counts.len(), 1);
    assert_eq!(counts[0]["payload"]["posted"], 0);
    assert!(counts[0]["payload"]["failed"].as_u64().unwrap() >= 1);
    assert!(explain.contains("\"watch_event_failed\""));
}

#[test]
fn watch_apply_under_the_kill_switch_writes_nothing_and_exits_2() {
    let s = setup();
    let out = s.dir.path().join("watch");
    let mut args = vec!["--apply"];
    args.extend(s.lic_args());
    let o = s.watch(&out, &args, &[("MODEKEEPER_KILL_SWITCH", "1")]);
    assert_eq!(code(&o), 2, "{}", String::from_utf8_lossy(&o.stderr));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("blocked") && err.contains("kill_switch"),
        "{err}"
    );
    let w = json(&out.join("watch_latest.json"));
    assert_eq!(w["apply_blocked_total"], 1);
    assert_eq!(w["apply_ok_total"], 0);
    assert_eq!(s.writes(), 0);
    assert_eq!(s.template(KNOB).as_deref(), Some("4"));
    // The block is a Warning on the Deployment that says why, and the only Event: the change
    // never reached the cluster, so no effect verdict judges it (windows bounded in time leave
    // enough of the trace after the decision for one).
    let events = trainer_events(&s);
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(
        (events[0].0.as_str(), events[0].1.as_str()),
        ("Warning", "ApplyBlocked")
    );
    assert!(events[0].2.contains("kill_switch_active"), "{events:?}");
    no_verdict_on_a_change_not_applied(&out, "blocked:kill_switch_active");

    // A license that is missing blocks the same way: no write, no verdict.
    let out = s.dir.path().join("watch-unlicensed");
    let o = s.watch(
        &out,
        &["--apply", "--keyring", s.keyring.to_str().unwrap()],
        &[],
    );
    assert_eq!(code(&o), 2, "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(s.writes(), 0);
    let events = trainer_events(&s);
    assert!(
        events.iter().all(|e| !e.1.starts_with("Effect")),
        "{events:?}"
    );
    let w = json(&out.join("watch_latest.json"));
    let outcome = w["last_apply"]["outcome"].as_str().unwrap().to_string();
    assert!(outcome.starts_with("blocked:license"), "{outcome}");
    no_verdict_on_a_change_not_applied(&out, &outcome);
}

/// A watch whose decision the gates refused judges no change: no verdict in its report or its
/// decision trace, and its summary says the decision was not applied.
fn no_verdict_on_a_change_not_applied(out: &Path, outcome: &str) {
    let w = json(&out.join("watch_latest.json"));
    assert!(w["proposed_total"].as_u64().unwrap() >= 1, "{w:#}");
    assert_eq!(w["last_apply"]["outcome"], outcome);
    assert_eq!(w["effects_total"], 0, "{:#}", w["effects"]);
    let trace = std::fs::read_to_string(out.join("decision_trace_latest.jsonl")).unwrap();
    assert!(trace.lines().count() > 20);
    for l in trace.lines() {
        let ev: Value = serde_json::from_str(l).unwrap();
        assert_eq!(ev["effects"], serde_json::json!([]), "{l}");
    }
    let summary = std::fs::read_to_string(out.join("watch_summary.md")).unwrap();
    assert!(
        summary.contains(&format!(
            "not applied ({outcome}); its effect is not judged"
        )),
        "{summary}"
    );
}

/// Issue 11 item 6: `closed-loop run --passport safe --apply --license L` patched the cluster,
/// though every template says `gates.apply: false`. A plan-only passport blocks before the cluster
/// is contacted (not even verify).
#[test]
fn closed_loop_apply_under_a_plan_only_passport_does_not_touch_the_cluster() {
    let s = setup();
    let plan_only = drift_passport_with(s.dir.path(), false);
    let out = s.dir.path().join("out");
    let mut args = vec!["--apply"];
    args.extend(s.lic_args());
    let o = s.decide_under(&plan_only, "run", &out, &args, &[]);
    assert_eq!(code(&o), 2, "{}", String::from_utf8_lossy(&o.stderr));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("apply blocked: passport_apply_disabled"),
        "{err}"
    );
    let r = json(&out.join("closed_loop_latest.json"));
    assert_eq!(r["apply_blocked_reason"], "passport_apply_disabled");
    assert_eq!(r["passport_allows_apply"], false);
    assert!(
        r["results"]
            .as_array()
            .unwrap()
            .iter()
            .all(|x| x["reason"] == "passport_apply_disabled")
    );
    assert!(s.sim.requests().is_empty(), "no request at all");
    // The plan records the passport it was made under.
    let plan = json(&out.join("k8s_plan.json"));
    assert_eq!(plan["passport"]["name"], "safe-drift");
    assert!(
        plan["passport"]["sha256"]
            .as_str()
            .unwrap()
            .starts_with("sha256:")
    );
    // ...so `k8s apply` of that plan needs the same passport, and it says plan-only.
    let v = s.dir.path().join("v");
    let o = s.k8s("verify", &out.join("k8s_plan.json"), &v, &[]);
    assert_eq!(code(&o), 0);
    let mut a = s.lic_args();
    a.extend(["--passport", plan_only.to_str().unwrap()]);
    let o = s.k8s("apply", &out.join("k8s_plan.json"), &v, &a);
    assert_eq!(code(&o), 2);
    assert!(String::from_utf8_lossy(&o.stderr).contains("passport_apply_disabled"));
    assert_eq!(s.writes(), 0);

    // watch --apply: the same gate.
    let o = s.decide_under(&plan_only, "watch", &s.dir.path().join("watch"), &args, &[]);
    assert_eq!(code(&o), 2, "{}", String::from_utf8_lossy(&o.stderr));
    assert!(String::from_utf8_lossy(&o.stderr).contains("passport_apply_disabled"));
    assert_eq!(s.writes(), 0);
    assert_eq!(s.template(KNOB).as_deref(), Some("4"));
}

/// Issue 11 item 7: `loop.knobs.concurrency` edited to 100000 in watch_state.json made
/// `watch --apply` write it (the passport allows 1..16). A resumed state is checked against the
/// passport and refused (exit 2), and nothing reaches the cluster.
#[test]
fn a_tampered_watch_state_is_refused_and_never_applied() {
    let s = setup();
    let mut args = vec!["--apply"];
    args.extend(s.lic_args());
    for (i, value) in [
        serde_json::json!(100000),
        serde_json::json!(1e308),
        serde_json::json!(-3),
    ]
    .into_iter()
    .enumerate()
    {
        let out = s.dir.path().join(format!("watch{i}"));
        // A few windows, before any decision: the state file exists, nothing was applied.
        let o = s.watch(&out, &["--max-iterations", "2"], &[]);
        assert_eq!(code(&o), 0, "{}", String::from_utf8_lossy(&o.stderr));
        let state_path = out.join("watch_state.json");
        let mut st = json(&state_path);
        st["loop"]["knobs"]["concurrency"] = value.clone();
        std::fs::write(&state_path, st.to_string()).unwrap();
        let o = s.watch(&out, &args, &[]);
        assert_eq!(
            code(&o),
            2,
            "{value}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(
            err.contains("loop.knobs.concurrency") && err.contains("outside"),
            "{err}"
        );
        assert_eq!(s.writes(), 0);
    }
    assert_eq!(s.template("modekeeper/knob.concurrency"), None);
}

/// Issue 11 item 10: the kill switch could not stop a running watch (it read the environment
/// only). `MODEKEEPER_KILL_SWITCH_FILE` is read before every apply: touching the file while the
/// watch runs blocks its next apply.
#[test]
fn touching_the_kill_switch_file_stops_a_running_watchs_next_apply() {
    use std::io::{Read, Write};
    let s = setup();
    let mut text = String::new();
    flate2::read::GzDecoder::new(std::fs::File::open(trace("drift")).unwrap())
        .read_to_string(&mut text)
        .unwrap();
    let lines: Vec<&str> = text.lines().collect();
    let data = s.dir.path().join("live.jsonl");
    let head = 200;
    std::fs::write(&data, lines[..head].join("\n") + "\n").unwrap();
    let switch = s.dir.path().join("stop");
    let out = s.dir.path().join("watch");
    let mut c = closed_loop_support::std_bin();
    c.env_remove("MODEKEEPER_KILL_SWITCH")
        .env("HOME", s.dir.path())
        .env("MODEKEEPER_KILL_SWITCH_FILE", &switch)
        .args([
            "closed-loop",
            "watch",
            "--source",
            "file",
            "--follow",
            "--path",
        ])
        .arg(&data)
        .arg("--out")
        .arg(&out)
        .args(["-n", "ml", "--deployment", "trainer", "--passport"])
        .arg(&s.passport)
        .arg("--kubeconfig")
        .arg(&s.kubeconfig)
        .arg("--apply")
        .args(s.lic_args())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    let mut watch = c.spawn().unwrap();
    let limit = std::time::Duration::from_secs(120);
    let windows = |out: &Path| {
        std::fs::read(out.join("watch_latest.json"))
            .ok()
            .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
            .and_then(|v| v["windows_total"].as_u64())
            .unwrap_or(0)
    };
    let t = std::time::Instant::now();
    while windows(&out) < 2 {
        assert!(t.elapsed() < limit, "no windows");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    // The watch is running and has applied nothing; now the switch is pulled.
    std::fs::write(&switch, "").unwrap();
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(&data)
        .unwrap();
    f.write_all((lines[head..].join("\n") + "\n").as_bytes())
        .unwrap();
    drop(f);
    let explain = out.join("explain.jsonl");
    let t = std::time::Instant::now();
    while !std::fs::read_to_string(&explain)
        .unwrap_or_default()
        .contains("\"watch_apply\"")
    {
        assert!(t.elapsed() < limit, "no apply decision");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    std::process::Command::new("kill")
        .args(["-TERM", &watch.id().to_string()])
        .status()
        .unwrap();
    let status = watch.wait().unwrap();
    assert_eq!(
        status.code(),
        Some(2),
        "the blocked apply ends the watch with 2"
    );
    let ev: Vec<Value> = std::fs::read_to_string(&explain)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .filter(|e: &Value| e["event"] == "watch_apply")
        .collect();
    assert_eq!(ev.len(), 1);
    assert_eq!(ev[0]["payload"]["outcome"], "blocked:kill_switch_active");
    assert_eq!(s.writes(), 0);
    // Not even a verify: the only requests are the Warning Event that says why (the workload's
    // GET for its uid, the Event's POST).
    let other: Vec<String> = s
        .sim
        .requests()
        .iter()
        .filter(|r| {
            !(r.path
                .starts_with("/apis/events.k8s.io/v1/namespaces/ml/events")
                || (r.method == "GET"
                    && r.path == "/apis/apps/v1/namespaces/ml/deployments/trainer"))
        })
        .map(|r| format!("{} {}?{}", r.method, r.path, r.query))
        .collect();
    assert!(other.is_empty(), "not even a verify: {other:?}");
    // The block, and no verdict on the change the cluster never got.
    let events = trainer_events(&s);
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0].1, "ApplyBlocked");
    assert_eq!(s.template(KNOB).as_deref(), Some("4"));
}

/// `gates.auto_rollback: true`: on the straggler trace the watch applies the INPUT-STRAGGLER change,
/// the effect check judges it `hurt`, and the rollback is the next decision — applied through the same
/// gated apply (license, verify, passport gate), one write each.
#[test]
fn watch_apply_applies_an_auto_rollback_through_the_same_gates() {
    let s = setup();
    let passport = auto_rollback_passport(&s);
    let watch = |out: &Path, envs: &[(&str, &str)]| watch_straggler(&s, &passport, out, envs);
    // A few windows per round, so the change and its rollback are separate decisions (one read of
    // the whole trace would apply only the net state: nothing); one window per round until the
    // change is applied, right after its window as a live watch does (the trace slows down right
    // after the change: an apply rounds later would leave that before it, where the effect check
    // counts it).
    let out = s.dir.path().join("watch");
    for round in 0.. {
        let o = watch(&out, &[]);
        assert_eq!(code(&o), 0, "{}", String::from_utf8_lossy(&o.stderr));
        let r: Value = serde_json::from_slice(&o.stdout).unwrap();
        if r["stop_reason"] == "source_ended" {
            break;
        }
        assert!(round < 60);
    }
    let w = json(&out.join("watch_latest.json"));
    assert!(
        w["last_decision"]["reason"]
            .as_str()
            .unwrap()
            .starts_with("rollback: "),
        "{w:#}"
    );
    let knob = "modekeeper/knob.dataloader_num_workers";
    assert_eq!(w["apply_ok_total"], 2, "{w:#}");
    assert_eq!(s.writes(), 2);
    assert_eq!(w["effects"][0]["verdict"], "hurt");
    let back = &w["effects"][0]["rollback"][0];
    assert_eq!(
        s.template(knob).as_deref(),
        Some(back["to"].to_string().as_str()),
        "the cluster ends where the hurt change started"
    );
    // The story on the Deployment: applied, judged hurt (Warning), rolled back (Warning).
    let events = trainer_events(&s);
    let reasons: Vec<(&str, &str)> = events
        .iter()
        .map(|e| (e.0.as_str(), e.1.as_str()))
        .collect();
    let at = |r: &str| {
        reasons
            .iter()
            .position(|x| x.1 == r)
            .unwrap_or_else(|| panic!("{r}: {events:?}"))
    };
    assert!(
        at("KnobsApplied") < at("EffectHurt") && at("EffectHurt") < at("RolledBack"),
        "{events:?}"
    );
    assert_eq!(reasons[at("EffectHurt")].0, "Warning");
    assert_eq!(reasons[at("RolledBack")].0, "Warning");
    assert!(events[at("EffectHurt")].2.contains("hurt"), "{events:?}");
}

/// No bypass: the kill switch, turned on after the INPUT-STRAGGLER change was applied, blocks the
/// auto-rollback like any apply — the cluster keeps the hurt value.
#[test]
fn the_kill_switch_blocks_an_auto_rollback_too() {
    let s = setup();
    let passport = auto_rollback_passport(&s);
    let watch = |out: &Path, envs: &[(&str, &str)]| watch_straggler(&s, &passport, out, envs);
    let out = s.dir.path().join("watch");
    let mut killed = false;
    for round in 0.. {
        let env: &[(&str, &str)] = if killed {
            &[("MODEKEEPER_KILL_SWITCH", "1")]
        } else {
            &[]
        };
        let o = watch(&out, env);
        assert!(
            [0, 2].contains(&code(&o)),
            "{}",
            String::from_utf8_lossy(&o.stderr)
        );
        killed |= s.writes() == 1;
        let w = json(&out.join("watch_latest.json"));
        if w["stop_reason"] == "source_ended" {
            break;
        }
        assert!(round < 60);
    }
    let w = json(&out.join("watch_latest.json"));
    assert_eq!(w["effects"][0]["verdict"], "hurt");
    assert!(
        w["last_decision"]["reason"]
            .as_str()
            .unwrap()
            .starts_with("rollback: ")
    );
    assert_eq!(s.writes(), 1, "the rollback was not written");
    assert!(w["apply_blocked_total"].as_u64().unwrap() >= 1, "{w:#}");
    let events = trainer_events(&s);
    assert!(
        events.iter().any(|e| e.0 == "Warning"
            && e.1 == "ApplyBlocked"
            && e.2.starts_with("rollback of the decision")
            && e.2.contains("kill_switch_active")),
        "{events:?}"
    );
    assert!(!events.iter().any(|e| e.1 == "RolledBack"), "{events:?}");
    let applied = w["effects"][0]["knobs"][0]["to"].to_string();
    assert_eq!(
        s.template("modekeeper/knob.dataloader_num_workers")
            .as_deref(),
        Some(applied.as_str())
    );
}

/// The drift passport with `gates.auto_rollback: true`.
fn auto_rollback_passport(s: &Setup) -> PathBuf {
    let mut p: Value = serde_json::from_slice(&std::fs::read(&s.passport).unwrap()).unwrap();
    p["gates"]["auto_rollback"] = true.into();
    let passport = s.dir.path().join("auto-rollback.json");
    std::fs::write(&passport, serde_json::to_vec_pretty(&p).unwrap()).unwrap();
    passport
}

/// `closed-loop watch --apply` over the straggler trace: one window per round until the first
/// write, then six.
fn watch_straggler(s: &Setup, passport: &Path, out: &Path, envs: &[(&str, &str)]) -> Output {
    watch_straggler_round(s, passport, out, envs, true)
}

/// One round of the straggler trace, with `--apply` or planning only: one window until the first
/// write (its decision is applied right after its window), then six.
fn watch_straggler_round(
    s: &Setup,
    passport: &Path,
    out: &Path,
    envs: &[(&str, &str)],
    apply: bool,
) -> Output {
    let mut c = bin();
    c.env_remove("MODEKEEPER_KILL_SWITCH")
        .env_remove("MODEKEEPER_KEYRING")
        .env_remove("MODEKEEPER_LICENSE_PATH")
        .env("HOME", s.dir.path());
    for (k, v) in envs {
        c.env(k, v);
    }
    c.args(["closed-loop", "watch", "--source", "file", "--path"])
        .arg(trace("straggler"))
        .arg("--out")
        .arg(out)
        .args(["-n", "ml", "--deployment", "trainer", "--passport"])
        .arg(passport)
        .arg("--kubeconfig")
        .arg(&s.kubeconfig)
        .args(["--max-iterations", if s.writes() == 0 { "1" } else { "6" }])
        .args(["-o", "json"]);
    if apply {
        c.arg("--apply").args(s.lic_args());
    }
    c.output().unwrap()
}

/// A rollback the loop decided while it did not apply (a watch restarted without `--apply`, a
/// controller stopped between telling a decision and applying it) is still the latest decision
/// after a restart: the next `--apply` applies it, and tells it as the rollback it is.
#[test]
fn a_rollback_decided_before_a_restart_is_applied_after_it_as_rolled_back() {
    let s = setup();
    let passport = auto_rollback_passport(&s);
    let out = s.dir.path().join("watch");
    let round = |apply: bool| {
        let o = watch_straggler_round(&s, &passport, &out, &[], apply);
        assert_eq!(code(&o), 0, "{}", String::from_utf8_lossy(&o.stderr));
        json(&out.join("watch_latest.json"))
    };
    // Applying, until the INPUT-STRAGGLER change reached the cluster.
    for n in 0.. {
        round(true);
        if s.writes() == 1 {
            break;
        }
        assert!(n < 200, "no apply");
    }
    // Planning only (six windows a round), until the loop decided the rollback of that change
    // (judged hurt).
    for n in 0.. {
        let w = round(false);
        let reason = w["last_decision"]["reason"].as_str().unwrap_or("");
        if reason.starts_with("rollback: ") {
            break;
        }
        assert_ne!(w["stop_reason"], "source_ended", "no rollback: {w:#}");
        assert!(n < 200);
    }
    assert_eq!(s.writes(), 1, "not applied while planning");
    let state = json(&out.join("watch_state.json"));
    assert_eq!(state["latest_decision"]["rollback"], true, "{state:#}");
    // Restarted with --apply: the rollback is applied, as a rollback.
    let w = round(true);
    assert_eq!(s.writes(), 2, "{w:#}");
    assert_eq!(w["last_apply"]["outcome"], "applied");
    assert_eq!(w["last_apply"]["rollback"], true);
    let events = trainer_events(&s);
    let reasons: Vec<&str> = events.iter().map(|e| e.1.as_str()).collect();
    assert_eq!(
        reasons.iter().filter(|r| **r == "RolledBack").count(),
        1,
        "{events:?}"
    );
    assert_eq!(
        reasons.iter().filter(|r| **r == "KnobsApplied").count(),
        1,
        "the first change only: {events:?}"
    );
    let back = &w["effects"][0]["rollback"][0];
    assert_eq!(
        s.template("modekeeper/knob.dataloader_num_workers")
            .as_deref(),
        Some(back["to"].to_string().as_str()),
        "the cluster ends where the hurt change started"
    );
}
