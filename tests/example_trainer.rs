//! The example trainer (examples/trainer/train.py) picks up a hot knob from its mounted knobs
//! ConfigMap while running: the test runs it as a process (simulated steps, no PyTorch) against a
//! directory laid out like a kubelet ConfigMap volume, swaps the value the way the kubelet does
//! (a new `..data` directory behind an atomically renamed symlink), and watches the records of the
//! same process change knob value with the step count still rising.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

const KNOB: &str = "dataloader_prefetch_factor";

/// Writes `value` into a kubelet-style ConfigMap volume at `dir` (`..<n>/KNOB`, `..data` ->
/// `..<n>`, `KNOB` -> `..data/KNOB`), replacing `..data` atomically.
fn kubelet_write(dir: &Path, generation: u32, value: &str) {
    let ts = dir.join(format!("..{generation}"));
    std::fs::create_dir_all(&ts).unwrap();
    std::fs::write(ts.join(KNOB), value).unwrap();
    let tmp = dir.join("..data_tmp");
    let _ = std::fs::remove_file(&tmp);
    std::os::unix::fs::symlink(ts.file_name().unwrap(), &tmp).unwrap();
    std::fs::rename(&tmp, dir.join("..data")).unwrap();
    let link = dir.join(KNOB);
    if std::fs::symlink_metadata(&link).is_err() {
        std::os::unix::fs::symlink(format!("..data/{KNOB}"), &link).unwrap();
    }
}

#[test]
fn the_example_trainer_picks_up_a_changed_knob_file_without_restarting() {
    if Command::new("python3").arg("--version").output().is_err() {
        eprintln!("skipped: python3 not found");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let knobs = dir.path().join("knobs");
    std::fs::create_dir(&knobs).unwrap();
    kubelet_write(&knobs, 1, "3");
    let annotations = dir.path().join("annotations");
    std::fs::write(&annotations, "modekeeper/knob.grad_accum_steps=\"4\"\n").unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/trainer/train.py");
    let mut child = Command::new("python3")
        .arg(&script)
        .args(["--no-torch", "--steps", "100000", "--step-sleep-ms", "5"])
        .args(["--poll-s", "0.05", "--annotations"])
        .arg(&annotations)
        .arg("--knobs-dir")
        .arg(&knobs)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let pid = child.id();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut seen_before: Option<u64> = None;
    let mut changed_at: Option<u64> = None;
    let mut last_step = 0;
    let mut started_pid = None;
    while Instant::now() < deadline {
        let Some(Ok(line)) = lines.next() else { break };
        if let Some(p) = line.split("(pid ").nth(1) {
            started_pid = p.trim_end_matches(')').parse::<u32>().ok();
        }
        let Ok(rec) = serde_json::from_str::<Value>(&line) else {
            continue;
        };
        let step = rec["step"].as_u64().unwrap();
        assert!(
            step >= last_step,
            "steps never go back (no restart): {step} < {last_step}"
        );
        last_step = step;
        assert_eq!(
            rec["knobs"]["grad_accum_steps"], 4,
            "the annotation still counts"
        );
        match rec["knobs"][KNOB].as_u64() {
            Some(3) if seen_before.is_none() => {
                seen_before = Some(step);
                // The ConfigMap changes while the trainer runs.
                kubelet_write(&knobs, 2, "6");
            }
            Some(6) => {
                changed_at = Some(step);
                break;
            }
            _ => {}
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(started_pid, Some(pid), "one process, started once");
    let before = seen_before.expect("the first value was read from the knobs directory");
    let after = changed_at.expect("the new value reached the running trainer");
    assert!(after > before, "{before} -> {after}");
}
