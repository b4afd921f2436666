//! `closed-loop watch --source k8s` end to end: the built binary follows a Deployment's pod logs in
//! kube-sim while they are written, through a cut log stream and a kill -9 with a restart, and
//! decides exactly like an offline `closed-loop run` over the same records; memory stays flat.
//! Length: `MODEKEEPER_SOAK_HOURS_K8S` hours at 10 steps/s (default 1; the soak script runs 24).

mod closed_loop_support;
mod k8s_common;
mod watch_support;

use std::fs;
use std::process::{Child, Stdio};
use std::time::Duration;

use closed_loop_support::{json, run_ok};
use k8s_common::Case;
use kube_sim::{Fault, KubeSim, ResourceKind, Rule, WorkloadSeed};
use watch_support::*;

fn hours() -> f64 {
    std::env::var("MODEKEEPER_SOAK_HOURS_K8S")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1.0)
}

fn spawn_watch(case: &Case, out: &std::path::Path) -> Child {
    closed_loop_support::std_bin()
        .env_remove("KUBERNETES_SERVICE_HOST")
        .args([
            "closed-loop",
            "watch",
            "--source",
            "k8s",
            "--deployment",
            "trainer",
        ])
        .args(["-n", "ml", "--kubeconfig"])
        .arg(&case.kubeconfig)
        .arg("--out")
        .arg(out)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

#[test]
fn pod_logs_through_a_cut_stream_and_a_kill_decide_like_the_offline_run() {
    let sim = KubeSim::builder()
        .namespace("ml")
        .workload(
            WorkloadSeed::deployment("ml", "trainer")
                .replicas(1)
                .log("trainer", "starting trainer"),
        )
        .token("t0", "alice", [Rule::admin()])
        .start_blocking()
        .unwrap();
    let case = Case::new(&sim, "t0");
    let pod = sim
        .pod_names(ResourceKind::Deployment, "ml", "trainer")
        .remove(0);
    let out = case.path().join("watch");
    let steps = (hours() * 36_000.0) as u64;
    let window = 50;
    // The first follow stream is cut after 5,000 lines.
    let cut = sim
        .inject_fault(Fault::drop_log_stream("/api/v1/namespaces/ml/pods/*/log", 5_000).times(1));
    let mut watch = spawn_watch(&case, &out);
    let lines: Vec<String> = (1..=steps)
        .map(|s| soak_line(s, steps).trim_end().to_string())
        .collect();
    let limit = Duration::from_secs(600);
    let hour = 36_000 / window;
    let mut rss_first = None;
    for (i, chunk) in lines.chunks(1_200).enumerate() {
        sim.append_logs("ml", &pod, "trainer", chunk);
        std::thread::sleep(Duration::from_millis(10));
        if i == 10 {
            // kill -9 mid-stream, once a few windows are in the state file.
            wait_for("the first windows", limit, || windows_total(&out) >= 100);
            rss_first = peak_rss_kib(watch.id());
            watch.kill().unwrap();
            watch.wait().unwrap();
            watch = spawn_watch(&case, &out);
            wait_for("the restarted watch", limit, || restarts(&out) == 1);
        }
    }
    let expected = steps / window;
    wait_for("the end of the data", limit, || {
        windows_total(&out) >= expected - 1
    });
    let rss_end = peak_rss_kib(watch.id());
    stop_with_sigterm(watch);
    assert_eq!(sim.fault_fired(cut), 1, "the stream was cut");

    // The offline run over the same records (a file of the JSON lines).
    let file = case.path().join("records.jsonl");
    fs::write(&file, lines.join("\n") + "\n").unwrap();
    let run_out = case.path().join("run");
    run_ok(&file, &run_out, &[]);
    let run_trace = fs::read_to_string(run_out.join("decision_trace_latest.jsonl")).unwrap();
    let watch_trace = fs::read_to_string(out.join("decision_trace_latest.jsonl")).unwrap();
    let want: Vec<&str> = run_trace.lines().take(expected as usize - 1).collect();
    let got: Vec<&str> = watch_trace.lines().collect();
    assert_eq!(got.len(), want.len());
    assert!(got == want, "decisions differ from the offline run");

    let w = json(&out.join("watch_latest.json"));
    assert_eq!(w["stop_reason"], "signal");
    assert_eq!(w["restarts"], 1);
    assert_eq!(w["observe_ingest"]["duplicates"], 0, "nothing read twice");
    assert_eq!(w["observe_ingest"]["late_dropped"], 0);
    assert_eq!(
        w["observe_ingest"]["log_lines"], 1,
        "the one ordinary log line"
    );
    let explain = fs::read_to_string(out.join("explain.jsonl")).unwrap();
    assert!(explain.contains("\"reconnected\""), "the cut is recorded");
    assert!(explain.contains("\"watch_resume\""));
    if let (Some(a), Some(b)) = (rss_first, rss_end) {
        eprintln!(
            "pod-log soak: {} h at 10 steps/s; peak RSS {a} KiB (first process), {b} KiB (resumed, to the end)",
            hours()
        );
        let _ = hour;
        assert!(b <= a + a / 2 + 8192, "memory grows: {a} KiB, then {b} KiB");
    }
}
