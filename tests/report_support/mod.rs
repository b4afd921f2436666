//! Helpers shared by the report tests: the binary, observe runs, the fixture directory.
#![allow(dead_code)]

use std::fs;
use std::path::{Path, PathBuf};

use assert_cmd::Command;

pub fn bin() -> Command {
    let mut c = Command::cargo_bin("kubectl-modekeeper").unwrap();
    c.env_remove("_");
    c
}

pub fn repo(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
}

/// The real traces, sorted by name.
pub fn traces() -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = fs::read_dir(repo("tests/data/traces"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().ends_with(".jsonl.gz"))
        .collect();
    v.sort();
    v
}

/// `observe --path trace --out out`; panics unless it succeeds. Returns stdout.
pub fn observe(trace: &Path, out: &Path) -> String {
    let o = bin()
        .args(["observe", "--path"])
        .arg(trace)
        .arg("--out")
        .arg(out)
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "observe {}: {}",
        trace.display(),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8(o.stdout).unwrap()
}

/// `report --in dir --out html [extra]`; panics unless it succeeds. Returns (stdout, html).
pub fn report(dir: &Path, html: &Path, extra: &[&str]) -> (String, String) {
    let o = bin()
        .args(["report", "--in"])
        .arg(dir)
        .arg("--out")
        .arg(html)
        .args(extra)
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "report {}: {}",
        dir.display(),
        String::from_utf8_lossy(&o.stderr)
    );
    (
        String::from_utf8(o.stdout).unwrap(),
        fs::read_to_string(html).unwrap(),
    )
}

/// The hand-made closed-loop fixture (decision_trace_event.v1 lines, verify ok, apply blocked).
pub fn closed_loop_fixture() -> PathBuf {
    repo("tests/data/report/closed-loop")
}

/// Every `data-points="N"` on the page.
pub fn data_points(html: &str) -> Vec<usize> {
    html.match_indices("data-points=\"")
        .map(|(i, m)| {
            let rest = &html[i + m.len()..];
            rest[..rest.find('"').unwrap()].parse().unwrap()
        })
        .collect()
}
