//! A real Prometheus for tests: Debian's `prometheus` and `promtool` (scripts/setup.sh installs
//! them), started on a free loopback port with a test's scrape configs and, optionally, data
//! backfilled from OpenMetrics text; stopped when dropped.

#![allow(dead_code)]

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Whether `bin` (promtool, prometheus) is on PATH; without it the test fails, or is skipped when
/// MODEKEEPER_SKIP_PROMETHEUS=1 outside CI (CI installs it: scripts/setup.sh).
pub fn have(bin: &str) -> bool {
    let on_path = std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(bin).is_file()));
    if on_path {
        return true;
    }
    let in_ci = std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false");
    if !in_ci && std::env::var("MODEKEEPER_SKIP_PROMETHEUS").is_ok_and(|v| v == "1") {
        eprintln!("skipped: no {bin} on PATH and MODEKEEPER_SKIP_PROMETHEUS=1");
        return false;
    }
    panic!(
        "no `{bin}` on PATH (scripts/setup.sh installs it; MODEKEEPER_SKIP_PROMETHEUS=1 skips locally)"
    );
}

pub struct Prometheus {
    pub url: String,
    pub dir: tempfile::TempDir,
    child: Child,
}

impl Prometheus {
    /// `config(addr)` is the whole prometheus.yml (`addr` is where it will listen, for a
    /// self-scrape), `files` (name, text) are written beside it (rule files); `backfill`,
    /// OpenMetrics text written into its TSDB
    /// with `promtool tsdb create-blocks-from openmetrics` before it starts; `flags` are added to
    /// its command line. `None` when the binaries are missing and the test may skip.
    pub fn start(
        config: impl FnOnce(&str) -> String,
        files: &[(&str, &str)],
        backfill: Option<&str>,
        flags: &[&str],
    ) -> Option<Prometheus> {
        if !have("prometheus") || (backfill.is_some() && !have("promtool")) {
            return None;
        }
        let dir = tempfile::Builder::new()
            .prefix("prometheus-")
            .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
            .unwrap();
        let data = dir.path().join("data");
        if let Some(text) = backfill {
            let om = dir.path().join("backfill.om");
            std::fs::write(&om, text).unwrap();
            let out = Command::new("promtool")
                .args(["tsdb", "create-blocks-from", "openmetrics"])
                .arg(&om)
                .arg(&data)
                .output()
                .expect("run promtool");
            assert!(
                out.status.success(),
                "promtool failed: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let yml = dir.path().join("prometheus.yml");
        std::fs::write(&yml, config(&format!("127.0.0.1:{port}"))).unwrap();
        for (name, text) in files {
            std::fs::write(dir.path().join(name), text).unwrap();
        }
        let log = std::fs::File::create(dir.path().join("prometheus.log")).unwrap();
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", yml.display()))
            .arg(format!("--storage.tsdb.path={}", data.display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .args(flags)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start prometheus");
        let p = Prometheus {
            url: format!("http://127.0.0.1:{port}"),
            dir,
            child,
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        let agent = ureq::Agent::new_with_defaults();
        while agent
            .get(format!("{}/-/ready", p.url))
            .call()
            .map_or(true, |r| r.status() != 200)
        {
            assert!(
                Instant::now() < deadline,
                "prometheus did not get ready; its log:\n{}",
                p.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        Some(p)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("prometheus.log")).unwrap_or_default()
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
