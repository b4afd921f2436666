//! Artifacts through the built binary: `--keep N` retention of timestamped reports, `support-bundle`
//! (secrets redacted, symlinks not followed, size capped), `doctor` against kube-sim, and the
//! Prometheus source failing loudly when the step-time query has no series.

mod apply_support;
mod closed_loop_support;
mod k8s_common;

use std::fs;
use std::io::{Read, Write};
use std::path::Path;
use std::process::Command;

use closed_loop_support::{bin, std_bin, trace};
use k8s_common::{KNOB, standard};
use kube_sim::{KubeSim, Rule, WorkloadSeed};
use serde_json::{Value, json};

fn stamped(dir: &Path, name: &str) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| {
            n.starts_with(&format!("{name}_2"))
                && n.ends_with("Z.json")
                && fs::symlink_metadata(dir.join(n)).unwrap().is_file()
        })
        .collect();
    v.sort();
    v
}

#[test]
fn keep_prunes_old_timestamped_reports_and_nothing_else() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    fs::create_dir_all(&out).unwrap();
    // A file of the user's with a name like ours but a symlink: never followed, never deleted.
    let precious = tmp.path().join("precious.json");
    fs::write(&precious, "keep me").unwrap();
    let link = out.join("observe_20000101T000000_000Z.json");
    std::os::unix::fs::symlink(&precious, &link).unwrap();
    fs::write(out.join("observe_notes.json"), "{}").unwrap();
    let mut runs = Vec::new();
    for _ in 0..4 {
        bin()
            .args(["observe", "--keep", "2", "--path"])
            .arg(trace("stable"))
            .arg("--out")
            .arg(&out)
            .assert()
            .success();
        runs.push(stamped(&out, "observe"));
    }
    let last = runs.last().unwrap();
    assert_eq!(last.len(), 2, "{runs:?}");
    // The newest two: the previous run's and the last run's.
    assert_eq!(last[0], *runs[2].last().unwrap());
    assert!(!runs[2].contains(&last[1]));
    assert!(!last.contains(&runs[0][0]));
    assert!(out.join("observe_latest.json").is_file());
    assert!(out.join("observe_notes.json").is_file());
    assert!(
        fs::symlink_metadata(&link)
            .unwrap()
            .file_type()
            .is_symlink()
    );
    assert_eq!(fs::read_to_string(&precious).unwrap(), "keep me");
    // The default keeps 20: one more run without --keep deletes nothing.
    bin()
        .args(["observe", "--path"])
        .arg(trace("stable"))
        .arg("--out")
        .arg(&out)
        .assert()
        .success();
    assert_eq!(stamped(&out, "observe").len(), 3);
}

/// Entries of a .tar.gz as (path, bytes), read with the system's tar.
fn untar(archive: &Path, into: &Path) -> Vec<(String, Vec<u8>)> {
    fs::create_dir_all(into).unwrap();
    let st = Command::new("tar")
        .arg("-xzf")
        .arg(archive)
        .arg("-C")
        .arg(into)
        .status()
        .unwrap();
    assert!(st.success());
    let mut out = Vec::new();
    fn walk(base: &Path, d: &Path, out: &mut Vec<(String, Vec<u8>)>) {
        for e in fs::read_dir(d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                walk(base, &p, out);
            } else {
                let rel = p.strip_prefix(base).unwrap().to_str().unwrap().to_string();
                out.push((rel, fs::read(&p).unwrap()));
            }
        }
    }
    walk(into, into, &mut out);
    out.sort();
    out
}

#[test]
fn support_bundle_redacts_secrets_skips_links_and_keys_and_caps_the_size() {
    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path().join("run");
    bin()
        .args(["observe", "--path"])
        .arg(trace("stable"))
        .arg("--out")
        .arg(&run)
        .assert()
        .success();
    const TOKEN: &str = "sha256~PLANTEDtokenVALUE0123456789";
    fs::write(
        run.join("notes.log"),
        format!(
            "curl -H 'Authorization: Bearer {TOKEN}' https://api:6443\nkubectl --token={TOKEN}\n"
        ),
    )
    .unwrap();
    fs::write(
        run.join("kubeconfig.yaml"),
        format!(
            "users:\n- name: u\n  user:\n    token: {TOKEN}\n    client-key-data: S0VZREFUQQ==\n"
        ),
    )
    .unwrap();
    fs::write(
        run.join("extra.json"),
        json!({"url": format!("https://bob:{TOKEN}@prom:9090"), "private_key": TOKEN, "kept": "visible"}).to_string(),
    )
    .unwrap();
    fs::write(run.join("evidence.key"), TOKEN).unwrap();
    let outside = tmp.path().join("outside-secret.txt");
    fs::write(&outside, TOKEN).unwrap();
    std::os::unix::fs::symlink(&outside, run.join("linked.txt")).unwrap();
    fs::create_dir(run.join("sub")).unwrap();
    fs::write(run.join("sub/big.log"), "x".repeat(300_000)).unwrap();

    let archive = tmp.path().join("bundle.tar.gz");
    let o = bin()
        .args(["-o", "json", "support-bundle", "--in"])
        .arg(&run)
        .arg("--out")
        .arg(&archive)
        .args(["--max-bytes", "250000"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let m: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(m["schema_version"], "support_bundle.v1");
    let entries = untar(&archive, &tmp.path().join("x"));
    let all: Vec<u8> = entries.iter().flat_map(|(_, b)| b.clone()).collect();
    let all = String::from_utf8(all).unwrap();
    assert!(
        !all.contains("PLANTEDtoken"),
        "a token leaked into the bundle"
    );
    assert!(!all.contains("S0VZREFUQQ"));
    assert!(all.contains("\"kept\":\"visible\""));
    let names: Vec<&str> = entries.iter().map(|(n, _)| n.as_str()).collect();
    for want in [
        "modekeeper-support/manifest.json",
        "modekeeper-support/observe_latest.json",
        "modekeeper-support/notes.log",
        "modekeeper-support/explain.jsonl",
    ] {
        assert!(names.contains(&want), "{names:?}");
    }
    for gone in ["linked.txt", "evidence.key", "sub/big.log"] {
        assert!(
            !names.iter().any(|n| n.ends_with(gone)),
            "{gone} in {names:?}"
        );
    }
    let skipped: Vec<(String, String)> = m["skipped"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["path"].as_str().unwrap().to_string(),
                s["reason"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    for (p, r) in [
        ("linked.txt", "symlink"),
        ("evidence.key", "secret_file"),
        ("sub/big.log", "size_cap"),
    ] {
        assert!(
            skipped.contains(&(p.to_string(), r.to_string())),
            "{skipped:?}"
        );
    }
    assert!(m["redactions_total"].as_u64().unwrap() >= 5, "{m:#}");
    let content: u64 = m["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["bytes"].as_u64().unwrap())
        .sum();
    assert!(content <= 250_000);
    // The outside file is untouched and no archive is left in the run directory.
    assert_eq!(fs::read_to_string(&outside).unwrap(), TOKEN);

    // Bad input: one line, exit 2, no archive.
    let none = tmp.path().join("none.tar.gz");
    let o = bin()
        .args(["support-bundle", "--in"])
        .arg(tmp.path().join("missing"))
        .arg("--out")
        .arg(&none)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert_eq!(String::from_utf8_lossy(&o.stderr).lines().count(), 1);
    assert!(!none.exists());
}

const TELEMETRY: &str = r#"{"step": 10, "step_time_ms": 412.5, "loss": 2.31}"#;

fn doctor_sim() -> KubeSim {
    standard()
        .workload(
            WorkloadSeed::deployment("ml", "wired")
                .template_annotation(KNOB, "4")
                .volume(json!({"name": "podinfo", "downwardAPI": {"items": [
                    {"path": "annotations", "fieldRef": {"fieldPath": "metadata.annotations"}}]}}))
                .log("trainer", "loading data")
                .log("trainer", TELEMETRY),
        )
        .workload(WorkloadSeed::deployment("ml", "bare").log("trainer", "hello"))
        .token(
            "nolog",
            "carol",
            [Rule::allow(["get"], "apps", ["deployments"]).in_namespace("ml")],
        )
        .start_blocking()
        .unwrap()
}

fn doctor(sim: &KubeSim, dir: &Path, token: &str, args: &[&str]) -> (i32, Value, String) {
    let kc = dir.join(format!("kubeconfig-{token}"));
    sim.write_kubeconfig(&kc, token).unwrap();
    let o = std_bin()
        .env("HOME", dir)
        .env_remove("MODEKEEPER_KEYRING")
        .env_remove("MODEKEEPER_LICENSE_PATH")
        .args(["-o", "json", "doctor", "-n", "ml", "--kubeconfig"])
        .arg(&kc)
        .args(args)
        .output()
        .unwrap();
    let v: Value = serde_json::from_slice(&o.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&o.stderr)));
    (
        o.status.code().unwrap_or(-1),
        v,
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

fn status<'a>(v: &'a Value, name: &str) -> &'a Value {
    v["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no check {name}: {v:#}"))
}

#[test]
fn doctor_passes_a_wired_trainer_and_says_how_to_fix_the_rest() {
    let sim = doctor_sim();
    let tmp = tempfile::tempdir().unwrap();
    // A development license trusted through --keyring.
    let keys = tmp.path().join("keys");
    let o = bin()
        .args(["-o", "json", "license", "keygen", "--out"])
        .arg(&keys)
        .output()
        .unwrap();
    let k: Value = serde_json::from_slice(&o.stdout).unwrap();
    let lic = tmp.path().join("license.json");
    bin()
        .args([
            "license",
            "mint",
            "--key",
            k["private_key"].as_str().unwrap(),
        ])
        .args([
            "--subject",
            "t",
            "--entitlements",
            "apply",
            "--expires",
            "now+1d",
            "--out",
        ])
        .arg(&lic)
        .assert()
        .success();
    let lic_args = [
        "--license",
        lic.to_str().unwrap(),
        "--keyring",
        k["keyring"].as_str().unwrap(),
    ];
    let mut args = vec!["--deployment", "wired"];
    args.extend(lic_args);
    let (code, v, err) = doctor(&sim, tmp.path(), "t0", &args);
    assert_eq!(v["schema_version"], "doctor.v1");
    for name in [
        "kubeconfig",
        "api",
        "rbac",
        "workload",
        "knob_annotations",
        "knob_volume",
        "telemetry",
        "license",
        "policy_lock",
    ] {
        assert_eq!(status(&v, name)["status"], "pass", "{name}: {v:#}");
    }
    assert_eq!(
        status(&v, "keyring")["status"],
        "warn",
        "an override is worth a warning"
    );
    assert_eq!((code, v["ok"].clone()), (0, json!(true)), "{err}");

    // Not wired: no knob annotations, no volume, no telemetry; no license. Exit 2, a fix each.
    let (code, v, err) = doctor(&sim, tmp.path(), "t0", &["--deployment", "bare"]);
    assert_eq!(code, 2, "{v:#}");
    assert!(err.contains("check(s) failed"), "{err}");
    for name in ["knob_annotations", "knob_volume", "telemetry", "license"] {
        let c = status(&v, name);
        assert_eq!(c["status"], "fail", "{name}: {v:#}");
        assert!(c["fix"].as_str().is_some_and(|f| !f.is_empty()), "{name}");
    }

    // A user who may only get deployments: RBAC fails with the Role to grant.
    let (code, v, _) = doctor(&sim, tmp.path(), "nolog", &["--deployment", "wired"]);
    assert_eq!(code, 2);
    let rbac = status(&v, "rbac");
    assert_eq!(rbac["status"], "fail", "{v:#}");
    assert!(
        rbac["detail"]
            .as_str()
            .unwrap()
            .contains("patch deployments"),
        "{rbac:#}"
    );
    assert!(!rbac["commands"].as_array().unwrap().is_empty(), "{rbac:#}");

    // A missing workload, and a server that does not answer: the checks after it are skipped.
    let (code, v, _) = doctor(&sim, tmp.path(), "t0", &["--deployment", "nope"]);
    assert_eq!(code, 2);
    assert_eq!(status(&v, "workload")["status"], "fail");
    assert_eq!(status(&v, "telemetry")["status"], "skip");
    let kc = tmp.path().join("dead");
    fs::write(
        &kc,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: http://127.0.0.1:{}\ncontexts:\n- name: x\n  context: {{cluster: c, user: u, namespace: ml}}\ncurrent-context: x\nusers:\n- name: u\n  user: {{}}\n",
            k8s_common::closed_port()
        ),
    )
    .unwrap();
    let o = std_bin()
        .env("HOME", tmp.path())
        .args(["doctor", "--request-timeout", "2s", "--kubeconfig"])
        .arg(&kc)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(text.contains("api               fail"), "{text}");
    assert!(text.contains("fix: check the server address"), "{text}");
    assert!(text.contains("rbac              skip"), "{text}");
}

/// A Prometheus that answers every query with no series (only DCGM metrics scraped, say).
fn empty_prometheus() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", l.local_addr().unwrap());
    std::thread::spawn(move || {
        for mut c in l.incoming().flatten() {
            let mut req = Vec::new();
            let mut b = [0u8; 1024];
            while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                match c.read(&mut b) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => req.extend_from_slice(&b[..n]),
                }
            }
            let body = r#"{"status":"success","data":{"resultType":"matrix","result":[]}}"#;
            let _ = write!(
                c,
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    url
}

#[test]
fn prometheus_without_step_time_series_exits_2_and_says_so() {
    let url = empty_prometheus();
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("w");
    let o = std_bin()
        .args([
            "closed-loop",
            "watch",
            "--source",
            "prometheus",
            "--prom-url",
            &url,
        ])
        .args(["--prom-start", "now-1h", "--prom-end", "now-50m", "--out"])
        .arg(&out)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&o.stderr);
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert_eq!(o.status.code(), Some(2), "{stderr}\n{stdout}");
    assert!(
        stderr.contains("the step-time query `modekeeper_step_time_ms` returned no series"),
        "{stderr}"
    );
    assert!(
        stdout.contains("source_event=no_step_time_series"),
        "plain status lines name the event: {stdout}"
    );
    let explain = fs::read_to_string(out.join("explain.jsonl")).unwrap();
    let events: Vec<Value> = explain
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .filter(|e: &Value| e["event"] == "watch_source_event")
        .collect();
    assert_eq!(events.len(), 1, "{explain}");
    assert_eq!(events[0]["payload"]["kind"], "no_step_time_series");
}

/// The recording rules docs/telemetry.md gives are valid Prometheus rules.
#[test]
fn the_documented_recording_rules_pass_promtool() {
    let doc = fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/telemetry.md"))
        .unwrap();
    let start = doc.find("# prometheus rules file").expect("the recipe");
    let end = start + doc[start..].find("```").unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let rules = tmp.path().join("rules.yml");
    fs::write(&rules, &doc[start..end]).unwrap();
    let o = match Command::new("promtool")
        .arg("check")
        .arg("rules")
        .arg(&rules)
        .output()
    {
        Ok(o) => o,
        Err(_) if std::env::var("MODEKEEPER_SKIP_PROMETHEUS").is_ok_and(|v| v == "1") => return,
        Err(e) => panic!(
            "promtool: {e} (scripts/setup.sh installs it; MODEKEEPER_SKIP_PROMETHEUS=1 skips)"
        ),
    };
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stdout));
}

/// The HTML report of plan -> verify -> apply (a development license, a knob the workload did not
/// set): the decisions card counts the apply, a note explains the proposal's assumed `from`, and
/// the keyring override is on the page.
#[test]
fn report_of_a_plan_applied_separately_does_not_contradict_itself() {
    // The trainer's (empty) knobs ConfigMap: the plan sends hot knobs there (k8s_plan.v2).
    let sim = standard()
        .object(
            kube_sim::ResourceKind::ConfigMap,
            json!({"metadata": {"name": "trainer-modekeeper-knobs", "namespace": "ml"}, "data": {}}),
        )
        .start_blocking()
        .unwrap();
    let case = k8s_common::Case::new(&sim, "t0");
    let dev = apply_support::Dev::new();
    let lic = dev.good();
    let out = case.path().join("out");
    let passport = apply_support::passport_file(case.path(), "applicable", true);
    let o = bin()
        .args(["closed-loop", "run", "--path"])
        .arg(trace("burst"))
        .arg("--out")
        .arg(&out)
        .args(["-n", "ml", "--deployment", "trainer", "--passport"])
        .arg(&passport)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let plan = out.join("k8s_plan.json");
    apply_support::verify(&case, &out, &plan, true);
    let mut args = apply_support::lic_args(&dev, &lic);
    args.extend(["--passport", passport.to_str().unwrap()]);
    let a = apply_support::run_apply(&case, &out, &plan, &args, &[]);
    assert_eq!(a.code, 0, "{a:#?}");
    let r = a.report();
    let unset: Vec<&Value> = r["actions"][0]["changes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["from"].is_null())
        .collect();
    assert!(
        !unset.is_empty(),
        "the burst plan sets a knob the workload did not have: {r:#}"
    );
    let knob = unset[0]["knob"].as_str().unwrap();
    let html = case.path().join("r.html");
    let o = bin()
        .args(["-o", "json", "report", "--in"])
        .arg(&out)
        .arg("--out")
        .arg(&html)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    let notes: Vec<&str> = v["notes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n.as_str().unwrap())
        .collect();
    assert!(
        notes
            .iter()
            .any(|n| n.starts_with(&format!("{knob}: the plan's"))
                && n.contains("did not set it before the apply")),
        "{notes:?}"
    );
    let page = fs::read_to_string(&html).unwrap();
    // Every change of every action (a v2 plan may hold a ConfigMap item and a template item).
    let applied: usize = r["actions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["changes"].as_array().map_or(0, Vec::len))
        .sum();
    assert!(
        page.contains(&format!("blocked · {applied} applied</div>")),
        "the decisions card counts the {applied} applied change(s)"
    );
    assert!(!page.contains("blocked · 0 applied"));
    assert!(
        page.contains(&format!("{knob} unset →")),
        "the apply card says unset"
    );
    assert!(
        page.contains("keyring override"),
        "a development license is visible on the page"
    );
}
