//! `roi --in DIR`: GPU-hours per judged change from a `closed-loop run` output, their total, the
//! `--gpus` factor, and the refusal of a directory without a report.

mod closed_loop_support;

use closed_loop_support::*;
use serde_json::Value;

fn roi_json(dir: &std::path::Path, gpus: &str) -> Value {
    let o = bin()
        .args([
            "roi",
            "--in",
            dir.to_str().unwrap(),
            "--gpus",
            gpus,
            "-o",
            "json",
        ])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    serde_json::from_slice(&o.stdout).unwrap()
}

#[test]
fn gpu_hours_per_change_and_in_total() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    run_ok(&trace("combo"), &out, &[]);
    let report = json(&out.join("closed_loop_latest.json"));
    let r1 = roi_json(&out, "1");
    let r8 = roi_json(&out, "8");
    assert_eq!(r1["schema_version"], "roi.v1");
    let changes = r1["changes"].as_array().unwrap();
    assert_eq!(changes.len(), report["effects"].as_array().unwrap().len());
    assert!(!changes.is_empty(), "the combo trace has changes");
    // Each change counts until the next one, the last until the end of the telemetry.
    let last = report["run"]["last_step"].as_u64().unwrap();
    let mut end = last;
    for c in changes.iter().rev() {
        let at = c["change_step"].as_u64().unwrap();
        assert_eq!(c["steps"].as_u64().unwrap(), end - at);
        end = at;
    }
    let sum: f64 = changes
        .iter()
        .filter_map(|c| c["gpu_hours_saved"].as_f64())
        .sum();
    let total = r1["gpu_hours_saved_total"].as_f64().unwrap();
    assert!((sum - total).abs() < 0.002, "{sum} vs {total}");
    let t8 = r8["gpu_hours_saved_total"].as_f64().unwrap();
    assert!((t8 - 8.0 * total).abs() < 0.01, "{t8} vs 8 × {total}");
    let [lo, hi] = [0, 1].map(|i| r1["gpu_hours_interval_total"][i].as_f64().unwrap());
    assert!(lo <= total && total <= hi, "{lo} ≤ {total} ≤ {hi}");
    // The human form shows the same total.
    let text = bin()
        .args(["roi", "--in", out.to_str().unwrap()])
        .output()
        .unwrap();
    let text = String::from_utf8(text.stdout).unwrap();
    assert!(
        text.contains(&format!("total: {total:+.3} GPU-h")),
        "{text}"
    );
}

#[test]
fn a_directory_without_a_report_is_invalid_input() {
    let tmp = tempfile::tempdir().unwrap();
    let o = bin()
        .args(["roi", "--in", tmp.path().to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8(o.stderr).unwrap();
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("closed_loop_latest.json"), "{err}");
    assert!(o.stdout.is_empty());
}

fn gpu_pod(gpus: u32) -> Value {
    serde_json::json!({"spec": {"restartPolicy": "Never", "containers": [
        {"name": "trainer", "image": "trainer:1",
         "resources": {"limits": {"nvidia.com/gpu": gpus.to_string(), "cpu": "8"}}},
        {"name": "logs", "image": "fluent-bit:3"}]}})
}

/// `--gpus-from-cluster`: the GPUs of the run's workload (a PyTorchJob: 1 master + 3 workers, 8
/// GPUs each = 32) read from the cluster, with where the figure came from; a workload that asks for
/// no GPUs is refused with one line and exit 2, and the flag conflicts with `--gpus`.
#[test]
fn gpus_come_from_the_workloads_containers_and_replicas() {
    use kube_sim::{KubeSim, ResourceKind, Rule};
    let sim = KubeSim::builder()
        .namespace("ml")
        .object(
            ResourceKind::PyTorchJob,
            serde_json::json!({"metadata": {"name": "ddp", "namespace": "ml"},
                   "spec": {"pytorchReplicaSpecs": {
                       "Master": {"replicas": 1, "template": gpu_pod(8)},
                       "Worker": {"replicas": 3, "template": gpu_pod(8)}}}}),
        )
        .object(
            ResourceKind::Job,
            serde_json::json!({"metadata": {"name": "cpu", "namespace": "ml"},
                   "spec": {"parallelism": 2, "template": gpu_pod(0)}}),
        )
        .token("t0", "alice", [Rule::admin()])
        .start_blocking()
        .unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let kubeconfig = tmp.path().join("kubeconfig");
    sim.write_kubeconfig(&kubeconfig, "t0").unwrap();
    let out = tmp.path().join("out");
    run_ok(&trace("combo"), &out, &["--pytorchjob", "ddp", "-n", "ml"]);
    let roi = |dir: &std::path::Path, extra: &[&str]| {
        bin()
            .args(["roi", "--in", dir.to_str().unwrap(), "--kubeconfig"])
            .arg(&kubeconfig)
            .args(extra)
            .output()
            .unwrap()
    };
    let o = roi(&out, &["--gpus-from-cluster", "-o", "json"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let r: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(r["gpus"], 32);
    let source = r["gpus_source"].as_str().unwrap();
    assert!(
        source.contains("pytorchjob.kubeflow.org/ddp in ml")
            && source.contains("Worker: 3 pod(s) × 8"),
        "{source}"
    );
    let one = roi_json(&out, "1");
    assert_eq!(one["gpus_source"], "--gpus");
    let [t1, t32] = [&one, &r].map(|v| v["gpu_hours_saved_total"].as_f64().unwrap());
    assert!((t32 - 32.0 * t1).abs() < 0.05, "{t32} vs 32 × {t1}");

    // A Job whose pods ask for no GPU: refused, pointing at --gpus.
    let cpu = tmp.path().join("cpu");
    run_ok(&trace("combo"), &cpu, &["--job", "cpu", "-n", "ml"]);
    let o = roi(&cpu, &["--gpus-from-cluster"]);
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8(o.stderr).unwrap();
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains("asks for no GPUs") && err.contains("--gpus N"),
        "{err}"
    );
    assert!(o.stdout.is_empty());
    let o = roi(&out, &["--gpus-from-cluster", "--gpus", "4"]);
    assert_eq!(o.status.code(), Some(2));
}
