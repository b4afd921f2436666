//! The controller's observable side: its HTTP port (`/metrics`, `/healthz`, `/readyz`) served on
//! 127.0.0.1:0 and driven by real clients (ureq, raw TCP for the hostile ones), the metrics checked
//! by `promtool`, and docs/controller.md's "Observe" section kept in step with the code.
//!
//! `promtool` and `prometheus` come with the Debian `prometheus` package (scripts/setup.sh); without
//! them on PATH the tests that run them fail, unless MODEKEEPER_SKIP_PROMETHEUS=1 outside CI.

mod prom_support;

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use modekeeper::controller::http::{self, Health, Limits};
use modekeeper::controller::metrics::{ControllerMetrics, WorkloadLabels};
use prom_support::{Prometheus, have};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// A server on its own thread and current-thread runtime, stopped (and joined) on drop.
struct Server {
    addr: SocketAddr,
    metrics: Arc<ControllerMetrics>,
    health: Arc<Health>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<std::io::Result<()>>>,
}

impl Server {
    fn start(limits: Limits) -> Server {
        let metrics = Arc::new(ControllerMetrics::new());
        let health = Arc::new(Health::new());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let (addr_tx, addr_rx) = std::sync::mpsc::channel();
        let (m, h) = (Arc::clone(&metrics), Arc::clone(&health));
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
                addr_tx.send(listener.local_addr()?).unwrap();
                let shutdown = async move {
                    let _ = stopped.await;
                };
                http::serve_with(listener, m, h, shutdown, limits).await
            })
        });
        let addr = addr_rx.recv_timeout(Duration::from_secs(10)).unwrap();
        Server {
            addr,
            metrics,
            health,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Stops the server and returns how long `serve` took to return.
    fn stop(&mut self) -> Duration {
        let t = Instant::now();
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            t.join().unwrap().unwrap();
        }
        t.elapsed()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            self.stop();
        }
    }
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(10)))
        .build()
        .into()
}

struct Reply {
    status: u16,
    content_type: String,
    allow: String,
    body: String,
}

fn call(agent: &ureq::Agent, method: &str, url: &str) -> Reply {
    let req = ureq::http::Request::builder()
        .method(method)
        .uri(url)
        .body(())
        .unwrap();
    let mut r = agent
        .run(req)
        .unwrap_or_else(|e| panic!("{method} {url}: {e}"));
    let header = |name: &str| {
        r.headers()
            .get(name)
            .map(|v| v.to_str().unwrap().to_string())
            .unwrap_or_default()
    };
    let (content_type, allow) = (header("content-type"), header("allow"));
    Reply {
        status: r.status().as_u16(),
        content_type,
        allow,
        body: r
            .body_mut()
            .with_config()
            .limit(64 << 20)
            .read_to_string()
            .unwrap(),
    }
}

fn workload(i: usize) -> WorkloadLabels {
    WorkloadLabels {
        kind: "Deployment".into(),
        namespace: format!("team-{}", i % 7),
        name: format!("trainer-{i}"),
    }
}

/// Every metric has a series: a workload that did a bit of everything, fleet-wide values set.
fn populate(m: &ControllerMetrics, workloads: usize) {
    for i in 0..workloads {
        let w = workload(i);
        m.window_evaluated(&w, Duration::from_micros(200 + i as u64));
        m.set_active_chord(&w, if i % 2 == 0 { "steady" } else { "burst" });
        m.proposals(&w, 1);
        m.incident(&w, "straggler");
        m.applied(&w);
        m.apply_blocked(&w, "kill_switch");
        m.apply_failed(&w);
        m.lines_read(&w, 500);
        m.ingest_lag(&w, Duration::from_millis(800));
        m.checkpoint_failed(&w);
    }
    m.decision_latency(Duration::from_millis(120));
    m.sessions(workloads, 0);
    m.shard_leader(0, true);
}

/// Connects and sends `bytes` without reading anything yet.
fn raw(addr: SocketAddr, bytes: &[u8]) -> TcpStream {
    let mut s = TcpStream::connect(addr).unwrap();
    s.write_all(bytes).unwrap();
    s
}

/// Reads until the server closes the connection (or `within` passes: then panics).
fn read_until_closed(s: &mut TcpStream, within: Duration) -> String {
    s.set_read_timeout(Some(within)).unwrap();
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == ErrorKind::ConnectionReset => break,
            Err(e) => panic!("the server did not close the connection within {within:?}: {e}"),
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn promtool(args: &[&str], stdin: Option<&str>) -> Option<std::process::Output> {
    if !have("promtool") {
        return None;
    }
    let mut child = Command::new("promtool")
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run promtool");
    if let Some(text) = stdin {
        child
            .stdin
            .take()
            .unwrap()
            .write_all(text.as_bytes())
            .unwrap();
    }
    Some(child.wait_with_output().unwrap())
}

#[test]
fn status_codes_and_content_types() {
    let server = Server::start(Limits::default());
    populate(&server.metrics, 1);
    let a = agent();

    let m = call(&a, "GET", &server.url("/metrics"));
    assert_eq!(m.status, 200);
    assert_eq!(m.content_type, "text/plain; version=0.0.4; charset=utf-8");
    assert!(
        m.body.contains(
            r#"modekeeper_applies_total{kind="Deployment",namespace="team-0",name="trainer-0"} 1"#
        ),
        "{}",
        m.body
    );
    // A query string does not change the resource.
    assert_eq!(call(&a, "GET", &server.url("/metrics?x=1")).status, 200);
    let head = call(&a, "HEAD", &server.url("/metrics"));
    assert_eq!((head.status, head.body.as_str()), (200, ""));

    assert_eq!(call(&a, "GET", &server.url("/healthz")).status, 200);
    // Not ready until the controller says so, and back when it says otherwise.
    let r = call(&a, "GET", &server.url("/readyz"));
    assert_eq!((r.status, r.body.as_str()), (503, "not ready\n"));
    server.health.set_ready(true);
    assert_eq!(call(&a, "GET", &server.url("/readyz")).status, 200);
    server.health.set_ready(false);
    assert_eq!(call(&a, "GET", &server.url("/readyz")).status, 503);
    // Liveness does not depend on readiness.
    assert_eq!(call(&a, "GET", &server.url("/healthz")).status, 200);

    for path in [
        "/",
        "/metricsx",
        "/metrics/",
        "/healthz/../metrics",
        "/debug/pprof",
    ] {
        assert_eq!(call(&a, "GET", &server.url(path)).status, 404, "{path}");
    }
    for method in ["POST", "PUT", "DELETE", "PATCH", "OPTIONS"] {
        for path in ["/metrics", "/healthz", "/readyz"] {
            let r = call(&a, method, &server.url(path));
            assert_eq!(r.status, 405, "{method} {path}");
            assert_eq!(r.allow, "GET, HEAD", "{method} {path}");
        }
    }
    // An unknown path is 404 whatever the method.
    assert_eq!(call(&a, "POST", &server.url("/nope")).status, 404);
}

#[test]
fn clients_that_never_finish_their_headers_do_not_block_others_and_are_dropped() {
    let header_read_timeout = Duration::from_millis(800);
    let server = Server::start(Limits {
        header_read_timeout,
        ..Limits::default()
    });
    // Slowloris: requests whose headers never end, and a connection that never says anything.
    let mut slow: Vec<TcpStream> = (0..8)
        .map(|_| raw(server.addr, b"GET /metrics HTTP/1.1\r\nHost: x\r\nX-Slow: "))
        .collect();
    slow.push(raw(server.addr, b""));
    // Meanwhile everyone else is served at once.
    let a = agent();
    let t = Instant::now();
    for _ in 0..5 {
        assert_eq!(call(&a, "GET", &server.url("/healthz")).status, 200);
    }
    assert!(
        t.elapsed() < header_read_timeout,
        "scrapes waited for the slow clients: {:?}",
        t.elapsed()
    );
    // And the slow ones are let go after the header timeout, not kept forever.
    for s in &mut slow {
        read_until_closed(s, header_read_timeout * 5);
    }
    assert!(t.elapsed() >= header_read_timeout / 2, "{:?}", t.elapsed());
}

#[test]
fn connections_past_the_limit_are_closed_and_the_server_recovers() {
    let header_read_timeout = Duration::from_millis(600);
    let server = Server::start(Limits {
        header_read_timeout,
        max_connections: 4,
        ..Limits::default()
    });
    let mut held: Vec<TcpStream> = (0..4).map(|_| raw(server.addr, b"GE")).collect();
    // Accepted in order: the fifth has no slot and is closed before the holders time out.
    let t = Instant::now();
    let mut fifth = raw(server.addr, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n");
    let reply = read_until_closed(&mut fifth, Duration::from_secs(5));
    assert_eq!(reply, "", "served past the connection limit");
    assert!(t.elapsed() < header_read_timeout, "{:?}", t.elapsed());
    for s in &mut held {
        read_until_closed(s, header_read_timeout * 5);
    }
    // The slots are back.
    assert_eq!(call(&agent(), "GET", &server.url("/healthz")).status, 200);
}

#[test]
fn bad_requests_get_an_error_and_never_take_the_server_down() {
    let server = Server::start(Limits::default());
    populate(&server.metrics, 3);
    let huge = format!(
        "GET /metrics HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
        "a".repeat(64 * 1024)
    );
    let many: String = (0..200).map(|i| format!("X-H{i}: v\r\n")).collect();
    // (what, bytes, acceptable starts of the reply: hyper's exact 4xx is its business, a 2xx is not).
    let cases: Vec<(&str, Vec<u8>, &[&str])> = vec![
        ("head too large", huge.into_bytes(), &["HTTP/1.1 431"]),
        (
            "too many headers",
            format!("GET /metrics HTTP/1.1\r\nHost: x\r\n{many}\r\n").into_bytes(),
            &["HTTP/1.1 431"],
        ),
        (
            "garbage",
            b"\x00\xff\xfe garbage\r\n\r\n".to_vec(),
            &["HTTP/1.1 400"],
        ),
        (
            "a request target that is not a path",
            b"GET metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".to_vec(),
            &["HTTP/1.1 400", "HTTP/1.1 404"],
        ),
        (
            "HTTP/2 preface on an HTTP/1 port",
            b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec(),
            &["", "HTTP/1.1 4", "HTTP/1.1 505"],
        ),
        (
            "a body the server does not read",
            b"POST /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000\r\n\r\nabc".to_vec(),
            &["HTTP/1.1 405"],
        ),
    ];
    for (what, bytes, expect) in cases {
        let mut s = raw(server.addr, &bytes);
        // The server answers and closes (after an error, or as asked); the client never sends more.
        let reply = read_until_closed(&mut s, Duration::from_secs(10));
        assert!(
            expect.iter().any(|e| if e.is_empty() {
                reply.is_empty()
            } else {
                reply.starts_with(e)
            }),
            "{what}: {reply:?}"
        );
        // Still serving.
        assert_eq!(
            call(&agent(), "GET", &server.url("/metrics")).status,
            200,
            "{what}"
        );
    }
}

#[test]
fn many_concurrent_scrapes_of_a_large_fleet_all_get_the_whole_exposition() {
    let server = Server::start(Limits::default());
    populate(&server.metrics, 300);
    let url = server.url("/metrics");
    let t = Instant::now();
    let bodies: Vec<usize> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..24)
            .map(|_| {
                scope.spawn(|| {
                    let a = agent();
                    (0..8)
                        .map(|_| {
                            let r = call(&a, "GET", &url);
                            assert_eq!(r.status, 200);
                            // Complete: the last family's sample of the last workload is there.
                            assert!(
                                r.body.contains(r#"name="trainer-299"} 1"#),
                                "a truncated exposition"
                            );
                            r.body.lines().count()
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect()
    });
    assert_eq!(bodies.len(), 24 * 8);
    // 300 workloads × 10 per-workload families, plus headers and fleet-wide series.
    assert!(
        bodies.iter().all(|&n| n == bodies[0] && n > 3000),
        "{bodies:?}"
    );
    eprintln!(
        "{} scrapes of {} lines in {:?}",
        bodies.len(),
        bodies[0],
        t.elapsed()
    );
}

#[test]
fn shutdown_finishes_promptly_with_idle_and_slow_connections_open() {
    let mut server = Server::start(Limits::default());
    let a = agent();
    // A keep-alive connection left idle in the agent's pool, and a slow client mid-headers.
    assert_eq!(call(&a, "GET", &server.url("/healthz")).status, 200);
    let _slow = raw(server.addr, b"GET /metrics HTTP/1.1\r\n");
    let took = server.stop();
    // The default drain bound is 5 s; the idle connection closes at once, the slow one is cut then.
    assert!(took < Duration::from_secs(8), "{took:?}");
    assert!(
        TcpStream::connect_timeout(&server.addr, Duration::from_secs(2)).is_err(),
        "still listening after shutdown"
    );
}

#[test]
fn the_exposition_passes_promtool_check_metrics() {
    let server = Server::start(Limits::default());
    populate(&server.metrics, 3);
    // A label value from the cluster with every character that needs escaping.
    server.metrics.applied(&WorkloadLabels {
        kind: "Deployment".into(),
        namespace: "ml".into(),
        name: "odd\"name\\with\nnewline".into(),
    });
    let body = call(&agent(), "GET", &server.url("/metrics")).body;
    let Some(o) = promtool(&["check", "metrics"], Some(&body)) else {
        return;
    };
    assert!(
        o.status.success(),
        "promtool check metrics:\n{}{}\n{body}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
}

/// The "Observe" section of docs/controller.md.
fn observe_section() -> String {
    let doc = std::fs::read_to_string(format!("{ROOT}/docs/controller.md")).unwrap();
    let start = doc
        .find("## Observe")
        .expect("docs/controller.md has an Observe section");
    let rest = &doc[start + 1..];
    let end = rest.find("\n## ").map_or(doc.len(), |e| start + 1 + e);
    doc[start..end].to_string()
}

#[test]
fn the_docs_list_every_metric_the_controller_exports() {
    let section = observe_section();
    let m = ControllerMetrics::new();
    assert!(!m.metric_names().is_empty());
    for name in m.metric_names() {
        assert!(
            section.contains(&format!("| `{name}` |")),
            "docs/controller.md (Observe) does not document metric {name}"
        );
    }
    // And lists none that the code does not export.
    for line in section.lines() {
        let Some(rest) = line.strip_prefix("| `modekeeper_") else {
            continue;
        };
        let name = format!("modekeeper_{}", &rest[..rest.find('`').unwrap()]);
        assert!(
            m.metric_names().contains(&name),
            "docs/controller.md documents {name}, which the controller does not export"
        );
    }
    for endpoint in ["/metrics", "/healthz", "/readyz"] {
        assert!(section.contains(endpoint), "{endpoint}");
    }
}

#[test]
fn the_documented_alert_rules_pass_promtool_and_use_exported_metrics() {
    let section = observe_section();
    let start = section
        .find("# prometheus rules file")
        .expect("the sample alert rules");
    let end = start + section[start..].find("```").unwrap();
    let rules = &section[start..end];
    let names = ControllerMetrics::new().metric_names().to_vec();
    // Every metric an expression names is exported (a histogram by its _bucket/_count/_sum).
    for word in rules.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
        if !word.starts_with("modekeeper_") {
            continue;
        }
        let base = ["_bucket", "_count", "_sum"]
            .iter()
            .find_map(|s| word.strip_suffix(s))
            .filter(|b| names.iter().any(|n| n == b))
            .unwrap_or(word);
        assert!(
            names.iter().any(|n| n == base),
            "the alert rules use {word}"
        );
    }
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("rules.yml");
    std::fs::write(&file, rules).unwrap();
    let Some(o) = promtool(&["check", "rules", file.to_str().unwrap()], None) else {
        return;
    };
    assert!(
        o.status.success(),
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
}

/// `/api/v1/query` of a Prometheus: the result vector's (labels, value) pairs.
fn instant_query(agent: &ureq::Agent, prom: &str, expr: &str) -> Vec<(serde_json::Value, f64)> {
    let Ok(mut r) = agent
        .get(format!("{prom}/api/v1/query"))
        .query("query", expr)
        .call()
    else {
        return Vec::new();
    };
    let Ok(text) = r.body_mut().read_to_string() else {
        return Vec::new();
    };
    let Ok(v) = serde_json::from_str::<serde_json::Value>(&text) else {
        return Vec::new();
    };
    v["data"]["result"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|s| {
            let value = s["value"][1]
                .as_str()
                .unwrap_or("NaN")
                .parse()
                .unwrap_or(f64::NAN);
            (s["metric"].clone(), value)
        })
        .collect()
}

/// A real Prometheus (Debian's `prometheus`) scrapes the port with its own content negotiation, and
/// evaluates the documented alert rules over what it scraped: each alert goes pending or firing for
/// the workload in that trouble, and not for a healthy one.
#[test]
fn a_real_prometheus_scrapes_the_port_and_the_documented_alerts_fire_for_the_right_workloads() {
    let server = Server::start(Limits::default());
    let m = &server.metrics;
    let (healthy, lagging, blocked) = (workload(1), workload(2), workload(3));
    m.ingest_lag(&lagging, Duration::from_secs(120));
    m.ingest_lag(&healthy, Duration::from_millis(300));
    m.window_evaluated(&lagging, Duration::from_micros(100));
    m.apply_blocked(&blocked, "license_missing");
    m.shard_leader(0, true);
    m.shard_leader(1, false);
    m.sessions(3, 0);

    let section = observe_section();
    let start = section.find("# prometheus rules file").unwrap();
    let end = start + section[start..].find("```").unwrap();
    let Some(prometheus) = Prometheus::start(
        |_| {
            format!(
                "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nrule_files: [rules.yml]\n\
             scrape_configs:\n  - job_name: modekeeper\n    static_configs:\n      - targets: ['{}']\n",
                server.addr
            )
        },
        &[("rules.yml", &section[start..end])],
        None,
        &[],
    ) else {
        return;
    };

    let a = agent();
    let wanted = [
        ("ModeKeeperIngestLag", "name", "trainer-2"),
        ("ModeKeeperApplyBlocked", "name", "trainer-3"),
        ("ModeKeeperNoWindowEvaluated", "name", "trainer-2"),
        ("ModeKeeperShardWithoutLeader", "shard", "1"),
    ];
    let deadline = Instant::now() + Duration::from_secs(90);
    let alerts = loop {
        // The healthy workload keeps evaluating, the blocked one keeps being blocked.
        m.window_evaluated(&healthy, Duration::from_micros(100));
        m.apply_blocked(&blocked, "license_missing");
        let alerts = instant_query(&a, &prometheus.url, "ALERTS");
        let seen = |(name, key, value): &(&str, &str, &str)| {
            alerts
                .iter()
                .any(|(l, _)| l["alertname"] == *name && (key.is_empty() || l[*key] == *value))
        };
        if wanted.iter().all(seen) {
            break alerts;
        }
        assert!(
            Instant::now() < deadline,
            "alerts after 90 s: {alerts:?}\nprometheus log:\n{}",
            prometheus.log()
        );
        std::thread::sleep(Duration::from_millis(500));
    };
    // Only the workloads in trouble.
    for (l, _) in &alerts {
        assert_ne!(
            l["name"], "trainer-1",
            "an alert for the healthy workload: {l}"
        );
        assert_ne!(l["shard"], "0", "an alert for a led shard: {l}");
        assert_ne!(l["alertname"], "ModeKeeperSlowDecisions", "{l}");
        // One workload still evaluates: the fleet is not stalled.
        assert_ne!(l["alertname"], "ModeKeeperFleetStalled", "{l}");
    }
    // The scrape itself: up, and the values as set.
    assert_eq!(
        instant_query(&a, &prometheus.url, r#"up{job="modekeeper"}"#)
            .first()
            .map(|(_, v)| *v),
        Some(1.0)
    );
    let lag = instant_query(
        &a,
        &prometheus.url,
        r#"modekeeper_ingest_lag_seconds{name="trainer-2"}"#,
    );
    assert_eq!(lag.first().map(|(_, v)| *v), Some(120.0), "{lag:?}");
}
