//! Shared by the `closed-loop watch` tests: a synthetic day of training telemetry, progress and
//! peak-memory probes of a running watch.
#![allow(dead_code)]

use std::fs;
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::Value;

/// Runs a bounded `closed-loop watch` (`watch()` builds the command) again and again, each run
/// resuming from the last one's state, until its source ends. `early` sees the report of every run
/// that stopped before; returns how many runs it took and the last report.
pub fn watch_until_source_ended(
    mut watch: impl FnMut() -> std::process::Command,
    max_rounds: u32,
    mut early: impl FnMut(&Value),
) -> (u32, Value) {
    for round in 1..=max_rounds {
        let o = watch().output().unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let r: Value = serde_json::from_slice(&o.stdout).unwrap();
        if r["stop_reason"] == "source_ended" {
            return (round, r);
        }
        early(&r);
    }
    panic!("the source did not end within {max_rounds} runs");
}

/// A day of training at 10 steps/s, compressed: steady, an input stall in the middle, short bursts.
pub fn soak_line(step: u64, steps: u64) -> String {
    let t0 = 1_780_000_000_000i64;
    let x = step as f64 / steps as f64;
    // A tiny deterministic noise source.
    let h = step.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 40;
    let noise = (h % 1000) as f64 / 1000.0 - 0.5;
    let mut st = 100.0 + 6.0 * noise;
    let mut wait = 4.0 + 2.0 * noise;
    if (0.40..0.60).contains(&x) {
        // The input pipeline falls behind: the step waits on data.
        wait += 60.0 * ((x - 0.40) / 0.05).min(1.0);
        st += wait;
    }
    if step % 7_000 < 15 {
        st *= 4.0;
    }
    let loss = 2.0 + 3.0 / (1.0 + step as f64 / 5_000.0) + 0.01 * noise;
    format!(
        "{{\"ts\": {}, \"step\": {step}, \"step_time_ms\": {st:.3}, \"loss\": {loss:.5}, \"data_wait_ms\": {:.3}, \"gpu_util_pct\": {:.1}, \"node\": \"n1\", \"rank\": 0}}\n",
        t0 + step as i64 * 100,
        wait,
        92.0 + 4.0 * noise
    )
}

pub fn soak_hours() -> f64 {
    std::env::var("MODEKEEPER_SOAK_HOURS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2.0)
}

pub fn soak_steps() -> u64 {
    (soak_hours() * 36_000.0) as u64
}

pub fn peak_rss_kib(pid: u32) -> Option<u64> {
    let s = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines()
        .find(|l| l.starts_with("VmHWM:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// `watch_latest.json`'s `restarts`: tells which process of a restarted watch wrote it.
pub fn restarts(out: &Path) -> u64 {
    fs::read(out.join("watch_latest.json"))
        .ok()
        .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
        .and_then(|v| v["restarts"].as_u64())
        .unwrap_or(0)
}

pub fn windows_total(out: &Path) -> u64 {
    fs::read(out.join("watch_latest.json"))
        .ok()
        .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
        .and_then(|v| v["windows_total"].as_u64())
        .unwrap_or(0)
}

pub fn wait_for(what: &str, limit: Duration, mut f: impl FnMut() -> bool) {
    let t = Instant::now();
    while !f() {
        assert!(t.elapsed() < limit, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// SIGTERM to a running watch; asserts it ends cleanly (flushes and exits 0).
pub fn stop_with_sigterm(mut watch: std::process::Child) {
    std::process::Command::new("kill")
        .args(["-TERM", &watch.id().to_string()])
        .status()
        .unwrap();
    let status = watch.wait().unwrap();
    assert!(
        status.success(),
        "SIGTERM ends the watch cleanly: {status:?}"
    );
}
