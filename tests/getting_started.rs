//! docs/getting-started.md, run as written: every fenced block marked `sh test` (or `sh test exit=N`),
//! in order, one command per line (`\` continues a line), through `sh` with the real kubectl and the
//! built plugin on PATH, against kube-sim. A thread plays the trainer: once the Deployment has a pod,
//! its log fills with real telemetry. So the guide cannot drift from the plugin again.
//!
//! Skipped with a message when `kubectl` is not on PATH.

mod k8s_common;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use k8s_common::{BIN, kubectl_or_skip};
use kube_sim::{KubeSim, ResourceKind, Rule};

const NS: &str = "modekeeper-demo";

/// One command of the guide and the exit code it must end with.
#[derive(Debug)]
struct Step {
    command: String,
    exit: i32,
}

/// The commands of the `sh test` blocks, in order.
fn tested_commands(markdown: &str) -> Vec<Step> {
    let mut steps = Vec::new();
    let mut block: Option<i32> = None;
    let mut pending = String::new();
    for line in markdown.lines() {
        match (&block, line.trim_start().strip_prefix("```")) {
            (None, Some(info)) => {
                let mut words = info.split_whitespace();
                if words.next() == Some("sh") && words.next() == Some("test") {
                    let exit = words
                        .find_map(|w| w.strip_prefix("exit="))
                        .map(|n| n.parse().expect("exit=N"))
                        .unwrap_or(0);
                    block = Some(exit);
                } else if !info.trim().is_empty() {
                    block = None;
                }
            }
            (Some(_), Some(_)) => {
                assert!(pending.is_empty(), "a block ends in a continued line");
                block = None;
            }
            (Some(exit), None) => {
                let l = line.trim();
                if let Some(head) = l.strip_suffix('\\') {
                    pending.push_str(head.trim_end());
                    pending.push(' ');
                    continue;
                }
                pending.push_str(l);
                let command = std::mem::take(&mut pending);
                if !command.trim().is_empty() && !command.trim_start().starts_with('#') {
                    steps.push(Step {
                        command,
                        exit: *exit,
                    });
                }
            }
            (None, None) => {}
        }
    }
    steps
}

#[test]
fn the_extractor_reads_marked_blocks_only() {
    let md = "```sh\nnot me\n```\n```sh test\na \\\n  b\n# a comment\nc\n```\ntext\n```sh test exit=2\nd\n```\n";
    let got: Vec<(String, i32)> = tested_commands(md)
        .into_iter()
        .map(|s| (s.command, s.exit))
        .collect();
    assert_eq!(
        got,
        [("a b".to_string(), 0), ("c".into(), 0), ("d".into(), 2)]
    );
}

fn telemetry_lines(n: usize) -> Vec<String> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/traces/straggler.jsonl.gz");
    let f = std::fs::File::open(path).unwrap();
    BufReader::new(flate2::read::GzDecoder::new(f))
        .lines()
        .take(n)
        .map(Result::unwrap)
        .collect()
}

#[test]
fn getting_started_runs_as_written_against_kube_sim() {
    let Some(kubectl) = kubectl_or_skip("getting_started_runs_as_written_against_kube_sim") else {
        return;
    };
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let guide = std::fs::read_to_string(repo.join("docs/getting-started.md")).unwrap();
    let steps = tested_commands(&guide);
    assert!(steps.len() >= 12, "{steps:#?}");
    for want in [
        "kubectl modekeeper plan ",
        "kubectl modekeeper render ",
        "kubectl modekeeper verify ",
    ] {
        assert!(
            steps.iter().any(|s| s.command.starts_with(want)),
            "the guide runs `{want}`: {steps:#?}"
        );
    }

    // The namespace is the guide's to create.
    let sim = KubeSim::builder()
        .token("demo", "demo-admin", [Rule::admin()])
        .start_blocking()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path();
    let kubeconfig = work.join("kubeconfig");
    sim.write_kubeconfig(&kubeconfig, "demo").unwrap();
    // The guide runs from a checkout: its relative paths (examples/) resolve against the repo.
    std::os::unix::fs::symlink(repo.join("examples"), work.join("examples")).unwrap();
    let bin = work.join("bin");
    std::fs::create_dir(&bin).unwrap();
    std::os::unix::fs::symlink(BIN, bin.join("kubectl-modekeeper")).unwrap();
    std::os::unix::fs::symlink(kubectl, bin.join("kubectl")).unwrap();
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );

    let mut trainer_started = false;
    for (i, step) in steps.iter().enumerate() {
        let o = Command::new("sh")
            .arg("-c")
            .arg(&step.command)
            .current_dir(work)
            .env("PATH", &path)
            .env("KUBECONFIG", &kubeconfig)
            .env("HOME", work)
            .env("XDG_CONFIG_HOME", work.join(".config"))
            .env("MODEKEEPER_POLICY_DIR", work.join("policies"))
            .env(
                "MODEKEEPER_CACHE_DIR",
                Path::new(env!("CARGO_TARGET_TMPDIR")).join("getting-started-cache"),
            )
            .env_remove("MODEKEEPER_LICENSE_PATH")
            .env_remove("MODEKEEPER_KEYRING")
            .env_remove("KUBERNETES_SERVICE_HOST")
            .output()
            .unwrap();
        assert_eq!(
            o.status.code(),
            Some(step.exit),
            "step {i}: `{}`\n--- stdout\n{}\n--- stderr\n{}",
            step.command,
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        // The trainer: as soon as its pod exists, it has printed its telemetry.
        if !trainer_started {
            let deadline = Instant::now() + Duration::from_secs(5);
            while Instant::now() < deadline {
                if let Some(pod) = sim
                    .pod_names(ResourceKind::Deployment, NS, "trainer")
                    .first()
                {
                    sim.append_logs(NS, pod, "trainer", telemetry_lines(3000));
                    trainer_started = true;
                    break;
                }
                if sim.deployment(NS, "trainer").is_none() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }
    assert!(trainer_started, "the guide never deployed the trainer");

    // What the guide promised: a plan for the context's namespace, rendered and verified ok, an
    // apply refused without changing anything, the knob where the rollback put it.
    let out = work.join("out/demo");
    let plan: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("k8s_plan.json")).unwrap()).unwrap();
    assert_eq!(plan["items"][0]["namespace"], NS, "{plan:#}");
    assert!(out.join("k8s_plan.kubectl.sh").is_file());
    assert!(out.join("report.html").is_file());
    let verify: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("k8s_verify_latest.json")).unwrap())
            .unwrap();
    assert_eq!(verify["ok"], true, "{verify:#}");
    let apply: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("k8s_apply_latest.json")).unwrap()).unwrap();
    assert_eq!(apply["ok"], false, "{apply:#}");
    let dep = sim.deployment(NS, "trainer").unwrap();
    assert_eq!(
        dep["spec"]["template"]["metadata"]["annotations"]["modekeeper/knob.grad_accum_steps"],
        "4"
    );
    let writes = sim
        .requests()
        .iter()
        .filter(|r| r.method == "PATCH" && r.path.ends_with("/deployments/trainer"))
        .filter(|r| !r.query.contains("dryRun"))
        .count();
    assert_eq!(
        writes, 2,
        "the guide's apply --server-side and its rollback patch only"
    );
}

/// The README's first run: its `sh test` blocks, in an empty directory (no checkout), with nothing
/// but kubectl and the plugin on PATH and no cluster.
#[test]
fn the_readme_first_run_needs_only_the_plugin() {
    let Some(kubectl) = kubectl_or_skip("the_readme_first_run_needs_only_the_plugin") else {
        return;
    };
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let readme = std::fs::read_to_string(repo.join("README.md")).unwrap();
    let first_run = &readme[readme.find("## First run").unwrap()..];
    let first_run = &first_run[..first_run.find("\n## ").unwrap()];
    let steps = tested_commands(first_run);
    let commands: Vec<&str> = steps.iter().map(|s| s.command.as_str()).collect();
    assert!(
        commands
            .iter()
            .any(|c| c.contains("observe --example combo"))
            && commands
                .iter()
                .any(|c| c.contains("plan --example straggler"))
            && commands
                .iter()
                .any(|c| c.starts_with("kubectl modekeeper render")),
        "{commands:#?}"
    );
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path();
    let bin = work.join("bin");
    std::fs::create_dir(&bin).unwrap();
    std::os::unix::fs::symlink(BIN, bin.join("kubectl-modekeeper")).unwrap();
    std::os::unix::fs::symlink(kubectl, bin.join("kubectl")).unwrap();
    let path = format!("{}:/usr/bin:/bin", bin.display());
    for step in &steps {
        let o = Command::new("sh")
            .arg("-c")
            .arg(&step.command)
            .current_dir(work)
            .env("PATH", &path)
            .env("HOME", work)
            .env("XDG_CONFIG_HOME", work.join(".config"))
            .env("XDG_CACHE_HOME", work.join(".cache"))
            .env("XDG_DATA_HOME", work.join(".local/share"))
            .env_remove("MODEKEEPER_CACHE_DIR")
            .env_remove("MODEKEEPER_POLICY_DIR")
            .env_remove("KUBECONFIG")
            .env_remove("KUBERNETES_SERVICE_HOST")
            .output()
            .unwrap();
        assert_eq!(
            o.status.code(),
            Some(step.exit),
            "`{}`\n--- stdout\n{}\n--- stderr\n{}",
            step.command,
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
    }
    assert!(work.join("out/observe/report.html").is_file());
    assert!(work.join("out/plan/k8s_plan.kubectl.sh").is_file());
    // The examples were written to the user's cache, not next to the outputs.
    assert!(
        work.join(".cache/modekeeper/examples/combo.stdout.log.gz")
            .is_file()
    );
}
