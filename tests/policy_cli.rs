//! The `policy` subcommands, driven through the binary as a user would.

mod policy_support;

use assert_cmd::Command;
use policy_support::{data, trace_path};
use predicates::str::contains;

fn cmd(policy_dir: &std::path::Path, cache: &std::path::Path) -> Command {
    let mut c = Command::cargo_bin("kubectl-modekeeper").unwrap();
    c.env("MODEKEEPER_POLICY_DIR", policy_dir)
        .env("MODEKEEPER_CACHE_DIR", cache);
    c
}

#[test]
fn list_inspect_add_lock_verify() {
    let tmp = tempfile::tempdir().unwrap();
    let (dir, cache) = (tmp.path().join("policies"), tmp.path().join("cache"));
    cmd(&dir, &cache)
        .args(["policy", "list"])
        .assert()
        .success()
        .stdout(contains("safe-chords"))
        .stdout(contains("timeout-guard"));
    cmd(&dir, &cache)
        .args(["policy", "inspect", "timeout-guard"])
        .assert()
        .success()
        .stdout(contains("knobs        timeout_ms"))
        .stdout(contains("advanced     yes"))
        .stdout(contains(
            "export evaluate: func(input: window-input) -> evaluation;",
        ));

    let hostile = data("policies/hostile-panic.wasm");
    cmd(&dir, &cache)
        .args(["policy", "add"])
        .arg(&hostile)
        .assert()
        .success()
        .stdout(contains("added hostile-panic 0.1.0"));
    let out = cmd(&dir, &cache)
        .args(["-o", "json", "policy", "list"])
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
    assert!(
        v["policies"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["id"] == "hostile-panic")
    );
    cmd(&dir, &cache)
        .args(["policy", "verify"])
        .assert()
        .success()
        .stdout(contains("ok"));

    // Tamper with the added component: verify fails with exit 2, lock re-pins it.
    std::fs::write(
        dir.join("hostile-panic-0.1.0.wasm"),
        std::fs::read(data("policies/hostile-spin.wasm")).unwrap(),
    )
    .unwrap();
    cmd(&dir, &cache)
        .args(["policy", "verify"])
        .assert()
        .code(2)
        .stdout(contains("mismatch"));
    cmd(&dir, &cache)
        .args(["policy", "lock"])
        .assert()
        .success()
        .stdout(contains("hostile-spin"));
    cmd(&dir, &cache)
        .args(["policy", "verify"])
        .assert()
        .success();
}

#[test]
fn test_scores_a_labelled_trace() {
    let tmp = tempfile::tempdir().unwrap();
    let (dir, cache) = (tmp.path().join("policies"), tmp.path().join("cache"));
    let labels = data("traces/straggler.labels.json");
    cmd(&dir, &cache)
        .args(["policy", "test", "--trace"])
        .arg(trace_path("straggler"))
        .arg("--labels")
        .arg(&labels)
        .assert()
        .success()
        .stdout(contains("INPUT-STRAGGLER"))
        .stdout(contains("false alarms 0 in"));
    // Second run loads the compiled component from the cache it just wrote.
    assert!(
        std::fs::read_dir(cache.join("compiled"))
            .unwrap()
            .next()
            .is_some()
    );
    let out = cmd(&dir, &cache)
        .args([
            "-o",
            "json",
            "policy",
            "test",
            "--enable-advanced",
            "timeout-guard",
            "--trace",
        ])
        .arg(trace_path("near_hang"))
        .arg("--labels")
        .arg(data("traces/near_hang.labels.json"))
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
    let seg = v["report"]["segments"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["regime"] == "NEAR-HANG")
        .unwrap()
        .clone();
    assert_eq!(seg["outcome"], "detected");
    assert_eq!(v["policies"].as_array().unwrap().len(), 2);
}

#[test]
fn advanced_policy_needs_explicit_enable() {
    let tmp = tempfile::tempdir().unwrap();
    let (dir, cache) = (tmp.path().join("p"), tmp.path().join("c"));
    cmd(&dir, &cache)
        .args(["policy", "test", "--policy", "timeout-guard", "--trace"])
        .arg(trace_path("near_hang"))
        .assert()
        .code(2)
        .stderr(contains("--enable-advanced timeout-guard"));
    cmd(&dir, &cache)
        .args([
            "policy",
            "test",
            "--enable-advanced",
            "safe-chords",
            "--trace",
        ])
        .arg(trace_path("near_hang"))
        .assert()
        .code(2)
        .stderr(contains("not an advanced policy"));
    cmd(&dir, &cache)
        .args(["policy", "inspect", "no-such-policy"])
        .assert()
        .code(2)
        .stderr(contains("unknown policy"));
}

#[cfg(unix)]
#[test]
fn add_refuses_a_device_without_reading_it() {
    let tmp = tempfile::tempdir().unwrap();
    let (dir, cache) = (tmp.path().join("policies"), tmp.path().join("cache"));
    let out = cmd(&dir, &cache)
        .args(["policy", "add", "/dev/zero"])
        .timeout(std::time::Duration::from_secs(30))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        String::from_utf8(out.stderr).unwrap(),
        "error: not a policy component: /dev/zero: not a regular file (a character device)\n"
    );
}
