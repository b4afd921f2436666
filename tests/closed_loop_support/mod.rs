//! Shared helpers for the `closed-loop run` tests: run the built binary with an isolated policy
//! directory and a compile cache shared by the test binary (compiling components in a debug build is
//! slow; the cache is keyed by digest and checked, so it cannot change a decision), read artifacts.
#![allow(dead_code)]

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Output;

use assert_cmd::Command;
use serde_json::Value;

/// The built binary with an isolated policy directory and the shared compile cache, as a std
/// `Command` (for spawning long-running commands such as `closed-loop watch`).
pub fn std_bin() -> std::process::Command {
    let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_kubectl-modekeeper"));
    c.env_remove("_")
        .env_remove("KUBECONFIG")
        .env(
            "MODEKEEPER_POLICY_DIR",
            Path::new(env!("CARGO_TARGET_TMPDIR")).join("closed-loop-no-policy-dir"),
        )
        .env(
            "MODEKEEPER_CACHE_DIR",
            Path::new(env!("CARGO_TARGET_TMPDIR")).join("closed-loop-policy-cache"),
        );
    c
}

pub fn bin() -> Command {
    Command::from_std(std_bin())
}

/// Runs `observe` on `path` into `out`, which must succeed; the report and what it printed.
pub fn observe_ok(path: &Path, out: &Path) -> (Value, String) {
    let o = bin()
        .args(["observe", "--source", "file", "--path"])
        .arg(path)
        .arg("--out")
        .arg(out)
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "stderr: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let report =
        serde_json::from_slice(&fs::read(out.join("observe_latest.json")).unwrap()).unwrap();
    (report, String::from_utf8(o.stdout).unwrap())
}

pub fn trace(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/traces")
        .join(format!("{name}.jsonl.gz"))
}

pub fn labels(name: &str) -> Value {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/traces")
        .join(format!("{name}.labels.json"));
    serde_json::from_str(&fs::read_to_string(p).unwrap()).unwrap()
}

/// `closed-loop run --source file --path <path> --out <out> <extra…>`.
pub fn run(path: &Path, out: &Path, extra: &[&str]) -> Output {
    bin()
        .args(["closed-loop", "run", "--source", "file", "--path"])
        .arg(path)
        .arg("--out")
        .arg(out)
        .args(extra)
        .output()
        .unwrap()
}

/// Like [`run`], asserting success.
pub fn run_ok(path: &Path, out: &Path, extra: &[&str]) -> Output {
    let o = run(path, out, extra);
    assert!(
        o.status.success(),
        "exit {:?}\nstderr: {}",
        o.status.code(),
        String::from_utf8_lossy(&o.stderr)
    );
    o
}

pub fn json(path: &Path) -> Value {
    serde_json::from_slice(&fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display())))
        .unwrap()
}

pub fn trace_lines(out: &Path) -> Vec<Value> {
    fs::read_to_string(out.join("decision_trace_latest.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

pub fn explain_events(out: &Path) -> Vec<String> {
    fs::read_to_string(out.join("explain.jsonl"))
        .unwrap()
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["event"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect()
}

/// The `safe` template, permitting TIMEOUT-GUARD on a governed `timeout_ms` (baseline 5000 ms, the
/// catalogue default; one step may go up to ten times the current value), written to `dir`.
pub fn passport_with_timeout_guard(dir: &Path) -> PathBuf {
    let safe = modekeeper::passport::template("safe").unwrap().unwrap();
    let mut v: Value = serde_json::from_str(&safe.to_json_pretty()).unwrap();
    v["name"] = "safe-timeout".into();
    v["advanced_chords"] = serde_json::json!(["TIMEOUT-GUARD"]);
    v["knobs"]["timeout_ms"] = serde_json::json!({
        "min": 1000, "max": 120000, "baseline": 5000,
        "max_delta_per_step": {"relative": 10}, "cooldown_s": 600, "actuation": "cold"
    });
    let p = dir.join("safe-timeout.json");
    fs::write(&p, serde_json::to_string_pretty(&v).unwrap()).unwrap();
    p
}

/// Files in `dir`, sorted.
pub fn listing(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}
