//! `closed-loop run` as a command: the artifacts and explain events it writes, `-o json`, knobs and
//! targets from flags, invalid input (one stderr line, exit 2, only explain.jsonl), and replay
//! equivalence (same trace twice, and `--replay DIR`, give byte-identical decisions and plans).

mod closed_loop_support;

use std::fs;
use std::path::Path;

use closed_loop_support::*;
use serde_json::Value;

fn stderr(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn a_run_writes_every_artifact_and_the_explain_sequence() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let o = run_ok(&trace("straggler"), &out, &[]);
    let text = String::from_utf8(o.stdout).unwrap();
    assert!(text.contains("INPUT-STRAGGLER"), "{text}");
    assert!(text.contains("RECOVER-RELOCK"), "{text}");
    assert!(text.contains("k8s_plan.json"), "{text}");
    assert!(text.contains("dataloader_num_workers 4 → 5"), "{text}");

    let files = listing(&out);
    for f in [
        "closed_loop_latest.json",
        "decision_trace_latest.jsonl",
        "explain.jsonl",
        "k8s_plan.json",
        "k8s_plan.kubectl.sh",
        "policy_bundle_latest.json",
        "summary.md",
    ] {
        assert!(files.iter().any(|x| x == f), "{f} missing: {files:?}");
    }
    assert!(
        files
            .iter()
            .any(|f| f.starts_with("closed_loop_2") && f.ends_with(".json")),
        "timestamped report: {files:?}"
    );
    assert!(
        !files.iter().any(|f| f.starts_with(".modekeeper-")),
        "no temp files left: {files:?}"
    );
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = fs::metadata(out.join("k8s_plan.kubectl.sh"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o755);
    }
    let script = fs::read_to_string(out.join("k8s_plan.kubectl.sh")).unwrap();
    assert!(script.contains(
        "kubectl -n 'default' patch 'deployment/trainer' --type merge -p '{\"spec\":{\"template\":{\"metadata\":{\"annotations\":{\"modekeeper/knob.dataloader_num_workers\":\"5\"}}}}}'"
    ), "{script}");

    assert_eq!(
        explain_events(&out),
        [
            "closed_loop_start",
            "closed_loop_observe_source",
            "closed_loop_decisions",
            "closed_loop_plan_written",
            "closed_loop_report",
            "closed_loop_stop"
        ]
    );

    let r = json(&out.join("closed_loop_latest.json"));
    assert_eq!(r["schema_version"], "closed_loop.v1");
    assert_eq!(r["mode"], "plan_only");
    assert_eq!(r["passport"]["name"], "safe");
    assert!(
        r["passport"]["sha256"]
            .as_str()
            .unwrap()
            .starts_with("sha256:")
    );
    assert_eq!(r["policies"][0]["id"], "safe-chords");
    assert!(
        r["policies"][0]["digest"]
            .as_str()
            .unwrap()
            .starts_with("sha256:")
    );
    assert_eq!(r["knobs_source"], "passport_baseline");
    assert_eq!(r["knobs_before"]["dataloader_num_workers"], 4);
    assert_eq!(r["knobs_after"]["dataloader_num_workers"], 5);
    assert_eq!(r["target"]["defaulted"], true);
    let first = &r["proposed"][0];
    assert_eq!(first["knob"], "dataloader_num_workers");
    assert_eq!(first["chord"], "INPUT-STRAGGLER");
    // safe-chords widens by half (4 → 6) within the step limit it is shown (1): no shortening.
    assert!(first.get("limited_by").is_none(), "{first}");
    assert_eq!(first["to"], 5);
    assert!(first["window"]["first_step"].as_u64().unwrap() >= 1150);
    // The relock to 4 comes during the knob's 180 s cooldown (the recovery is shorter).
    assert!(r["blocked_by_reason"]["cooldown"].as_u64().unwrap() >= 1);
    let segs: Vec<&str> = r["chords"]["segments"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["chord"].as_str().unwrap())
        .collect();
    assert_eq!(
        segs,
        [
            "NORMAL-HOLD",
            "INPUT-STRAGGLER",
            "RECOVER-RELOCK",
            "NORMAL-HOLD"
        ]
    );
    assert_eq!(
        r["plan_path"].as_str().unwrap(),
        out.join("k8s_plan.json").to_str().unwrap()
    );
    assert_eq!(r["plan_items"], 1);
    assert_eq!(r["ingest"]["records_emitted"], 3300);
    // Without --apply: plan only, one "not requested" result per accepted change.
    assert_eq!(r["apply_requested"], false);
    assert_eq!(
        r["apply_decision_summary"],
        "apply not requested (plan only)"
    );
    assert_eq!(
        r["results"].as_array().unwrap().len(),
        r["proposed"].as_array().unwrap().len()
    );
    assert!(
        r["results"]
            .as_array()
            .unwrap()
            .iter()
            .all(|x| x["reason"] == "not_requested")
    );
    assert!(!text.contains("  apply "), "{text}");

    let b = json(&out.join("policy_bundle_latest.json"));
    assert_eq!(b["schema_version"], "policy_bundle.v1");
    assert_eq!(b["wit_versions"], serde_json::json!(["1.0.0"]));
    assert_eq!(b["engine"]["name"], "wasmtime");
    assert_eq!(b["policies"][0]["digest"], r["policies"][0]["digest"]);
    assert_eq!(b["policies"][0]["origin"], "embedded");
    assert_eq!(b["passport"]["sha256"], r["passport"]["sha256"]);
    assert_eq!(b["passport"]["document"]["schema_version"], "passport.v1");
    assert_eq!(b["plan"]["sha256"], r["plan_digest"]);
    assert_eq!(b["decision_trace"]["sha256"], r["decision_trace"]["sha256"]);

    let md = fs::read_to_string(out.join("summary.md")).unwrap();
    assert!(md.starts_with("# ModeKeeper closed-loop run"));
    assert!(
        md.contains("| dataloader_num_workers | 4 | 5 (changed) |"),
        "{md}"
    );
}

#[test]
fn json_output_is_the_report() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let o = run_ok(&trace("stable"), &out, &["-o", "json"]);
    let printed: Value = serde_json::from_slice(&o.stdout).unwrap();
    let written = json(&out.join("closed_loop_latest.json"));
    assert_eq!(printed, written);
    assert_eq!(printed["proposed"], serde_json::json!([]));
    assert_eq!(printed["plan_items"], 0);
    let script = fs::read_to_string(out.join("k8s_plan.kubectl.sh")).unwrap();
    assert!(
        !script.contains("kubectl -n"),
        "an empty plan runs no kubectl: {script}"
    );
}

#[test]
fn knobs_and_target_come_from_flags() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    run_ok(
        &trace("straggler"),
        &out,
        &[
            "--knobs",
            "dataloader_num_workers=2,concurrency=6",
            "-n",
            "ml-team",
            "--statefulset",
            "gpt-trainer",
            "--passport",
            "perf",
        ],
    );
    let r = json(&out.join("closed_loop_latest.json"));
    assert_eq!(r["knobs_source"], "flags");
    assert_eq!(r["knobs_before"]["dataloader_num_workers"], 2);
    assert_eq!(r["knobs_before"]["concurrency"], 6);
    assert_eq!(
        r["knobs_before"]["microbatch_size"], 32,
        "the rest at the baseline"
    );
    assert_eq!(r["target"]["defaulted"], false);
    // The policy starts from the given values: INPUT-STRAGGLER widens 2 workers by half, 2 → 3.
    let widen = r["proposed"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["chord"] == "INPUT-STRAGGLER")
        .expect("the straggler widens the input pipeline");
    assert_eq!(
        (widen["from"].as_u64(), widen["to"].as_u64()),
        (Some(2), Some(3))
    );
    assert_ne!(r["knobs_after"], r["knobs_before"]);
    let plan = json(&out.join("k8s_plan.json"));
    assert_eq!(plan["schema_version"], "k8s_plan.v2");
    let items = plan["items"].as_array().unwrap();
    let it = items
        .iter()
        .find(|i| i["kind"] == "StatefulSet")
        .expect("the cold knob (dataloader_num_workers) rolls out on the template");
    assert_eq!(it["namespace"], "ml-team");
    assert_eq!(it["name"], "gpt-trainer");
    assert_eq!(it["takes_effect"], "rollout");
    // Hot knobs of the perf passport go to the knobs ConfigMap, never on the template.
    let tpl = it["patch"]["spec"]["template"]["metadata"]["annotations"]
        .as_object()
        .unwrap();
    assert!(tpl.contains_key("modekeeper/knob.dataloader_num_workers"));
    for hot in ["concurrency", "dataloader_prefetch_factor"] {
        assert!(
            !tpl.contains_key(&format!("modekeeper/knob.{hot}")),
            "{hot}"
        );
    }
    for cm in items.iter().filter(|i| i["kind"] == "ConfigMap") {
        assert_eq!(cm["name"], "gpt-trainer-modekeeper-knobs");
        assert_eq!(cm["takes_effect"], "live");
    }
    let script = fs::read_to_string(out.join("k8s_plan.kubectl.sh")).unwrap();
    assert!(
        script.contains("patch 'statefulset/gpt-trainer'"),
        "{script}"
    );
    let trace = trace_lines(&out);
    assert_eq!(trace[0]["passport"]["name"], "perf");
}

/// Runs with `extra` expecting exit 2, one stderr line containing `needle`, and nothing in `--out`
/// but explain.jsonl ending in closed_loop_error, closed_loop_stop.
fn rejects(path: &Path, extra: &[&str], needle: &str) {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let o = run(path, &out, extra);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(2), "{extra:?}: stderr {err}");
    assert_eq!(
        err.trim_end().lines().count(),
        1,
        "{extra:?}: one line: {err}"
    );
    assert!(err.contains(needle), "{extra:?}: {err}");
    assert!(o.stdout.is_empty());
    assert_eq!(listing(&out), ["explain.jsonl"], "{extra:?}");
    let ev = explain_events(&out);
    assert_eq!(
        ev[ev.len() - 2..],
        [
            "closed_loop_error".to_string(),
            "closed_loop_stop".to_string()
        ],
        "{extra:?}: {ev:?}"
    );
}

#[test]
fn invalid_input_is_one_line_exit_2_and_only_explain() {
    let t = trace("stable");
    rejects(&t, &["--knobs", "concurrency"], "is not KNOB=VALUE");
    rejects(
        &t,
        &["--knobs", "concurrency=lots"],
        "is not a finite number",
    );
    rejects(
        &t,
        &["--knobs", "timeout_ms=9000"],
        "does not govern timeout_ms",
    );
    rejects(&t, &["--passport", "turbo"], "neither a template");
    rejects(&t, &["--policy", "no-such-policy"], "unknown policy");
    rejects(&t, &["--enable-advanced", "WARP-DRIVE"], "unknown policy");
    rejects(
        &t,
        &["--enable-advanced", "COMM-CONGESTION,safe-chords"],
        "not an advanced policy",
    );
    rejects(&t, &["--deployment", "Bad_Name"], "DNS-1123");
    rejects(&t, &["-n", "ns; rm -rf /"], "DNS-1123");
    rejects(
        Path::new("/definitely/not/here.jsonl"),
        &[],
        "telemetry file not found",
    );
    let tmp = tempfile::tempdir().unwrap();
    let bad = tmp.path().join("p.json");
    fs::write(&bad, r#"{"schema_version": "passport.v1", "name": "x"}"#).unwrap();
    rejects(
        &t,
        &["--passport", bad.to_str().unwrap()],
        "missing (required)",
    );
    let junk = tmp.path().join("junk.jsonl");
    fs::write(&junk, "not telemetry\nstill not\n").unwrap();
    rejects(&junk, &[], "no usable telemetry record");
}

#[test]
fn a_pinned_policy_digest_must_match() {
    let tmp = tempfile::tempdir().unwrap();
    let safe = modekeeper::passport::template("safe").unwrap().unwrap();
    let mut v: Value = serde_json::from_str(&safe.to_json_pretty()).unwrap();
    v["policies"] = serde_json::json!([{"id": "safe-chords", "sha256": "00".repeat(32)}]);
    let p = tmp.path().join("pinned.json");
    fs::write(&p, v.to_string()).unwrap();
    rejects(
        &trace("stable"),
        &["--passport", p.to_str().unwrap()],
        "pins policy safe-chords",
    );
}

#[test]
fn the_same_trace_twice_gives_identical_decisions_and_plan() {
    let tmp = tempfile::tempdir().unwrap();
    let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
    let pp = passport_with_timeout_guard(tmp.path());
    let args = [
        "--passport",
        pp.to_str().unwrap(),
        "--enable-advanced",
        "TIMEOUT-GUARD",
    ];
    run_ok(&trace("near_hang"), &a, &args);
    run_ok(&trace("near_hang"), &b, &args);
    for f in [
        "decision_trace_latest.jsonl",
        "k8s_plan.json",
        "k8s_plan.kubectl.sh",
    ] {
        assert_eq!(
            fs::read(a.join(f)).unwrap(),
            fs::read(b.join(f)).unwrap(),
            "{f} differs between two runs"
        );
    }
}

#[test]
fn replay_rederives_an_earlier_run_byte_for_byte() {
    let tmp = tempfile::tempdir().unwrap();
    let first = tmp.path().join("first");
    let pp = passport_with_timeout_guard(tmp.path());
    run_ok(
        &trace("near_hang"),
        &first,
        &[
            "--passport",
            pp.to_str().unwrap(),
            "--enable-advanced",
            "TIMEOUT-GUARD",
            "--knobs",
            "concurrency=6",
            "-n",
            "ml",
        ],
    );
    // The passport file may be gone: the bundle carries it.
    fs::remove_file(&pp).unwrap();
    let again = tmp.path().join("again");
    let o = bin()
        .args(["closed-loop", "run", "--replay"])
        .arg(&first)
        .arg("--out")
        .arg(&again)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("decision trace identical, plan identical")
    );
    for f in ["decision_trace_latest.jsonl", "k8s_plan.json"] {
        assert_eq!(
            fs::read(first.join(f)).unwrap(),
            fs::read(again.join(f)).unwrap(),
            "{f}"
        );
    }
    let r = json(&again.join("closed_loop_latest.json"));
    assert_eq!(r["replay"]["identical"], true);
    assert_eq!(r["knobs_source"], "replay");
    assert_eq!(r["knobs_before"]["concurrency"], 6);
    assert_eq!(r["target"]["namespace"], "ml");
    assert_eq!(
        r["policies"],
        json(&first.join("closed_loop_latest.json"))["policies"]
    );
    assert!(explain_events(&again).contains(&"closed_loop_replay".to_string()));

    // Replaying into the same directory compares with what was there before.
    let o = bin()
        .args(["closed-loop", "run", "--replay"])
        .arg(&again)
        .arg("--out")
        .arg(&again)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(
        json(&again.join("closed_loop_latest.json"))["replay"]["identical"],
        true
    );
}

#[test]
fn replay_reports_a_divergence() {
    let tmp = tempfile::tempdir().unwrap();
    let first = tmp.path().join("first");
    run_ok(&trace("burst"), &first, &[]);
    // Tamper with line 30 of the recorded trace.
    let path = first.join("decision_trace_latest.jsonl");
    let text = fs::read_to_string(&path).unwrap();
    let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
    lines[29] = lines[29].replace("\"samples\":50", "\"samples\":49");
    fs::write(&path, lines.join("\n") + "\n").unwrap();
    let again = tmp.path().join("again");
    let o = bin()
        .args(["closed-loop", "run", "--replay"])
        .arg(&first)
        .arg("--out")
        .arg(&again)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let err = stderr(&o);
    assert!(
        err.contains("diverged") && err.contains("trace line 30"),
        "{err}"
    );
    let r = json(&again.join("closed_loop_latest.json"));
    assert_eq!(r["replay"]["identical"], false);
    assert_eq!(r["replay"]["decision_trace"]["first_difference_line"], 30);
    assert_eq!(r["replay"]["plan"]["identical"], true);
}

#[test]
fn replay_takes_no_input_flags() {
    let tmp = tempfile::tempdir().unwrap();
    let o = bin()
        .args(["closed-loop", "run", "--replay"])
        .arg(tmp.path())
        .args(["--passport", "perf", "--out"])
        .arg(tmp.path().join("o"))
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("cannot be used with"), "{}", stderr(&o));
    // A directory without a run is invalid input.
    let o = bin()
        .args(["closed-loop", "run", "--replay"])
        .arg(tmp.path())
        .arg("--out")
        .arg(tmp.path().join("o"))
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("closed_loop_latest.json"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn a_job_target_gets_every_knob_through_its_configmap_and_a_pytorchjob_its_role_templates() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let args = |flag: &'static str, name: &'static str| {
        vec![
            "--knobs",
            "dataloader_num_workers=2,concurrency=6",
            "-n",
            "ml",
            flag,
            name,
            "--passport",
            "perf",
        ]
    };
    run_ok(&trace("straggler"), &out, &args("--job", "train"));
    let plan = json(&out.join("k8s_plan.json"));
    let items = plan["items"].as_array().unwrap();
    assert_eq!(items.len(), 1, "{plan:#}");
    assert_eq!(items[0]["kind"], "ConfigMap");
    assert_eq!(items[0]["name"], "train-modekeeper-knobs");
    // dataloader_num_workers is cold: a Job's template is immutable, so it waits for a new pod.
    assert!(items[0]["patch"]["data"]["dataloader_num_workers"].is_string());
    assert_eq!(items[0]["takes_effect"], "next_pod_start");
    assert_eq!(items[0]["restart_required"], true);
    let r = json(&out.join("closed_loop_latest.json"));
    assert_eq!(r["target"]["kind"], "Job");

    let out = tmp.path().join("out-ddp");
    run_ok(&trace("straggler"), &out, &args("--pytorchjob", "ddp"));
    let plan = json(&out.join("k8s_plan.json"));
    let ddp = plan["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["kind"] == "PyTorchJob")
        .expect("the cold knob goes to the replica templates");
    let roles = ddp["patch"]["spec"]["pytorchReplicaSpecs"]
        .as_object()
        .unwrap();
    assert_eq!(roles.keys().collect::<Vec<_>>(), ["Master", "Worker"]);
    assert_eq!(ddp["takes_effect"], "rollout");
    let script = fs::read_to_string(out.join("k8s_plan.kubectl.sh")).unwrap();
    assert!(
        script.contains("patch 'pytorchjob.kubeflow.org/ddp'"),
        "{script}"
    );
}
