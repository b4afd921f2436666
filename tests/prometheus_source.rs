//! `PrometheusSource` against a real Prometheus server (Debian's `prometheus` package).
//!
//! A synthetic training run (4 ranks on 2 nodes, 3,000 points 5 s apart, a known drift in step time,
//! DCGM GPU metrics per GPU) is written as OpenMetrics text, backfilled with
//! `promtool tsdb create-blocks-from openmetrics` a few hours in the past, and served by a Prometheus
//! started on a free loopback port (once, shared by the tests; a watchdog shell stops it and removes
//! its data when this test process exits). The server also scrapes itself every second, for the live
//! test. Some tests talk to it through a TCP proxy that can cut every connection mid-response.
//!
//! Without `prometheus` and `promtool` on PATH these tests fail, unless MODEKEEPER_SKIP_PROMETHEUS=1 is
//! set outside CI. `scripts/setup.sh` installs them.

mod prom_support;
mod watch_support;

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use modekeeper::telemetry::live::{
    LiveSource, Poll, PromConfig, PromQueries, PrometheusSource, SourceEvent,
};
use modekeeper::telemetry::{Format, Ingest, IngestOptions};
use prom_support::Prometheus;
use serde_json::Value;

/// Points per series and their spacing.
const N: usize = 3000;
const SPACING_MS: i64 = 5_000;
/// (node, rank) of the synthetic job.
const RANKS: [(&str, u32); 4] = [("node-a", 0), ("node-a", 1), ("node-b", 2), ("node-b", 3)];
const NODES: [&str; 2] = ["node-a", "node-b"];
const GPUS: u32 = 2;

// ---------------------------------------------------------------------------------------------
// The synthetic run: the values every record must carry.

fn step_time(i: usize, rank: u32) -> f64 {
    // A linear drift of 30 ms over the run, a per-rank offset, a deterministic jitter of 0..10 ms.
    let jitter = ((i * 7919 + rank as usize * 104_729) % 1000) as f64 / 100.0;
    ((100.0 + 30.0 * i as f64 / N as f64 + 2.0 * rank as f64 + jitter) * 1000.0).round() / 1000.0
}
fn step(i: usize) -> u64 {
    10 * i as u64 + 10
}
fn loss(i: usize, rank: u32) -> f64 {
    ((3.0 * (-(i as f64) / 1000.0).exp() + 0.01 * rank as f64) * 1e6).round() / 1e6
}
fn data_wait(i: usize, rank: u32) -> f64 {
    ((i + rank as usize) % 50) as f64 * 0.5
}
fn gpu_util(i: usize, node: usize, gpu: u32) -> f64 {
    (50 + (i * 3 + gpu as usize * 17 + node * 5) % 50) as f64
}
fn fb_used(i: usize, node: usize, gpu: u32) -> f64 {
    (40_000 + (i % 100) * 10 + gpu as usize + node) as f64
}
fn fb_free(i: usize, node: usize, gpu: u32) -> f64 {
    80_000.0 - fb_used(i, node, gpu)
}
/// What the default queries give for a rank's node: the mean over its GPUs.
fn node_gpu_util(i: usize, node: usize) -> f64 {
    (0..GPUS).map(|g| gpu_util(i, node, g)).sum::<f64>() / f64::from(GPUS)
}
fn node_gpu_mem(i: usize, node: usize) -> f64 {
    (0..GPUS)
        .map(|g| 100.0 * fb_used(i, node, g) / (fb_used(i, node, g) + fb_free(i, node, g)))
        .sum::<f64>()
        / f64::from(GPUS)
}

fn openmetrics(base_ms: i64) -> String {
    let mut s = String::with_capacity(10 << 20);
    let ts = |i: usize| {
        let ms = base_ms + i as i64 * SPACING_MS;
        format!("{}.{:03}", ms / 1000, ms % 1000)
    };
    type Gen = fn(usize, u32) -> f64;
    let training: [(&str, Gen); 4] = [
        ("modekeeper_step_time_ms", step_time),
        ("modekeeper_step", |i, _| step(i) as f64),
        ("modekeeper_loss", loss),
        ("modekeeper_data_wait_ms", data_wait),
    ];
    for (name, f) in training {
        writeln!(s, "# TYPE {name} gauge").unwrap();
        for (r, (node, rank)) in RANKS.iter().enumerate() {
            let labels = format!(
                r#"Hostname="{node}",instance="10.0.0.{r}:8000",job="trainer",rank="{rank}""#
            );
            for i in 0..N {
                writeln!(s, "{name}{{{labels}}} {} {}", f(i, *rank), ts(i)).unwrap();
            }
        }
    }
    type GpuGen = fn(usize, usize, u32) -> f64;
    let dcgm: [(&str, GpuGen); 3] = [
        ("DCGM_FI_DEV_GPU_UTIL", gpu_util),
        ("DCGM_FI_DEV_FB_USED", fb_used),
        ("DCGM_FI_DEV_FB_FREE", fb_free),
    ];
    for (name, f) in dcgm {
        writeln!(s, "# TYPE {name} gauge").unwrap();
        for (n, node) in NODES.iter().enumerate() {
            for g in 0..GPUS {
                let labels =
                    format!(r#"Hostname="{node}",gpu="{g}",instance="10.0.1.{n}:9400",job="dcgm""#);
                for i in 0..N {
                    writeln!(s, "{name}{{{labels}}} {} {}", f(i, n, g), ts(i)).unwrap();
                }
            }
        }
    }
    s.push_str("# EOF\n");
    s
}

// ---------------------------------------------------------------------------------------------
// The server.

struct Server {
    url: String,
    /// Timestamp of point 0 (a multiple of a minute, ~6 h ago).
    base_ms: i64,
    /// A static is never dropped: the watchdog stops the server and removes its files once this
    /// test process is gone.
    _prometheus: Prometheus,
    _watchdog: Child,
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

fn server() -> Option<&'static Server> {
    static SERVER: OnceLock<Option<Server>> = OnceLock::new();
    SERVER.get_or_init(start_server).as_ref()
}

fn start_server() -> Option<Server> {
    let t0 = Instant::now();
    // Old enough that the whole run lies in finished 2 h blocks, well inside the 15 d retention.
    let base_ms = (now_ms() - 6 * 3600 * 1000) / 60_000 * 60_000;
    let prometheus = Prometheus::start(
        |addr| {
            format!(
                "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n  - job_name: self\n    static_configs:\n      - targets: ['{addr}']\n"
            )
        },
        &[],
        Some(&openmetrics(base_ms)),
        &[],
    )?;
    let watchdog = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "while kill -0 {me} 2>/dev/null; do sleep 0.5; done; kill {pid} 2>/dev/null; \
             sleep 2; kill -9 {pid} 2>/dev/null; rm -rf '{dir}'",
            me = std::process::id(),
            pid = prometheus.pid(),
            dir = prometheus.dir.path().display()
        ))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start the watchdog");
    eprintln!(
        "prometheus ready at {} after {:.1}s (backfill included)",
        prometheus.url,
        t0.elapsed().as_secs_f64()
    );
    Some(Server {
        url: prometheus.url.clone(),
        base_ms,
        _prometheus: prometheus,
        _watchdog: watchdog,
    })
}

fn http_get(addr: &str, path: &str) -> Option<String> {
    let mut s = TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").ok()?;
    let mut r = String::new();
    s.read_to_string(&mut r).ok()?;
    Some(r)
}

// ---------------------------------------------------------------------------------------------
// A TCP proxy that can cut every connection in the middle of a response.

#[derive(Default)]
struct ProxyState {
    conns: Mutex<Vec<TcpStream>>,
    /// Connections accepted before this instant are dropped at once (the server "is down").
    refuse_until: Mutex<Option<Instant>>,
    /// Cut everything once this many more response bytes have gone through.
    cut_after: Mutex<Option<u64>>,
    to_client: AtomicU64,
    cuts: AtomicU32,
    /// Request lines seen (`GET /api/v1/query_range?... HTTP/1.1`).
    requests: Mutex<Vec<String>>,
}

struct Proxy {
    url: String,
    state: Arc<ProxyState>,
}

impl Proxy {
    fn start(upstream: &str) -> Proxy {
        let upstream: SocketAddr = upstream.trim_start_matches("http://").parse().unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let state = Arc::new(ProxyState::default());
        let st = state.clone();
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { continue };
                let refusing = st
                    .refuse_until
                    .lock()
                    .unwrap()
                    .is_some_and(|t| Instant::now() < t);
                if refusing {
                    let _ = client.shutdown(Shutdown::Both);
                    continue;
                }
                let Ok(server) = TcpStream::connect(upstream) else {
                    continue;
                };
                {
                    let mut conns = st.conns.lock().unwrap();
                    conns.push(client.try_clone().unwrap());
                    conns.push(server.try_clone().unwrap());
                }
                let (c2, s2) = (client.try_clone().unwrap(), server.try_clone().unwrap());
                let st_up = st.clone();
                std::thread::spawn(move || pump_requests(client, s2, &st_up));
                let st_down = st.clone();
                std::thread::spawn(move || pump_responses(server, c2, &st_down));
            }
        });
        Proxy { url, state }
    }

    /// Cuts every connection once `bytes` more response bytes have been forwarded, then refuses
    /// connections for `down`.
    fn cut_after(&self, bytes: u64) {
        *self.state.cut_after.lock().unwrap() =
            Some(self.state.to_client.load(Ordering::SeqCst) + bytes);
    }

    fn requests(&self) -> Vec<String> {
        self.state.requests.lock().unwrap().clone()
    }
}

impl ProxyState {
    fn cut(&self, down: Duration) {
        *self.refuse_until.lock().unwrap() = Some(Instant::now() + down);
        for c in self.conns.lock().unwrap().drain(..) {
            let _ = c.shutdown(Shutdown::Both);
        }
        self.cuts.fetch_add(1, Ordering::SeqCst);
    }
}

fn pump_requests(mut from: TcpStream, mut to: TcpStream, st: &ProxyState) {
    let mut buf = [0u8; 16 * 1024];
    let mut text = Vec::new();
    while let Ok(n) = from.read(&mut buf) {
        if n == 0 || to.write_all(&buf[..n]).is_err() {
            break;
        }
        text.extend_from_slice(&buf[..n]);
        while let Some(i) = text.windows(2).position(|w| w == b"\r\n") {
            let line = String::from_utf8_lossy(&text[..i]).into_owned();
            if line.starts_with("GET ") {
                st.requests.lock().unwrap().push(line);
            }
            text.drain(..i + 2);
        }
    }
    let _ = to.shutdown(Shutdown::Write);
}

fn pump_responses(mut from: TcpStream, mut to: TcpStream, st: &ProxyState) {
    let mut buf = [0u8; 16 * 1024];
    while let Ok(n) = from.read(&mut buf) {
        if n == 0 {
            break;
        }
        let total = st.to_client.fetch_add(n as u64, Ordering::SeqCst) + n as u64;
        let cut = { st.cut_after.lock().unwrap().is_some_and(|at| total >= at) };
        if cut {
            // Half of this chunk goes through, then the connection dies mid-response.
            let _ = to.write_all(&buf[..n / 2]);
            *st.cut_after.lock().unwrap() = None;
            st.cut(Duration::from_secs(1));
            break;
        }
        if to.write_all(&buf[..n]).is_err() {
            break;
        }
    }
    let _ = to.shutdown(Shutdown::Both);
}

/// start, end and step (ms) of a logged `query_range` request, with its query's first characters.
fn range_of(request: &str) -> Option<(String, i64, i64, i64)> {
    let q = request.split_once('?')?.1.split(' ').next()?;
    let mut m = HashMap::new();
    for kv in q.split('&') {
        let (k, v) = kv.split_once('=')?;
        m.insert(k, v);
    }
    let ms =
        |k: &str| -> Option<i64> { Some((m.get(k)?.parse::<f64>().ok()? * 1000.0).round() as i64) };
    Some((
        m.get("query")?.to_string(),
        ms("start")?,
        ms("end")?,
        ms("step")?,
    ))
}

// ---------------------------------------------------------------------------------------------
// Reading a source and checking its lines.

fn config(url: &str, srv: &Server, step_ms: i64) -> PromConfig {
    let mut c = PromConfig::new(url, srv.base_ms);
    c.end_ms = Some(srv.base_ms + (N as i64 - 1) * SPACING_MS);
    c.step = Duration::from_millis(step_ms as u64);
    c
}

/// Polls until the source ends; returns its lines and events.
fn drain(src: &mut PrometheusSource) -> (Vec<Vec<u8>>, Vec<SourceEvent>) {
    let mut lines = Vec::new();
    let mut events = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let p = src
            .poll(&mut lines, Duration::from_millis(200))
            .expect("poll");
        events.extend(src.drain_events());
        if p == Poll::Ended {
            return (lines, events);
        }
        assert!(Instant::now() < deadline, "the source never ended");
    }
}

/// Checks that `lines` hold exactly one record per (grid timestamp, rank) of the range read at
/// `step_ms`, each with the values of the latest generated point at or before it.
fn check_records(srv: &Server, lines: &[Vec<u8>], step_ms: i64) {
    let last = srv.base_ms + (N as i64 - 1) * SPACING_MS;
    let grid = (last - srv.base_ms) / step_ms + 1;
    let mut seen: BTreeMap<(i64, u32), usize> = BTreeMap::new();
    let mut prev_ts = i64::MIN;
    for (k, line) in lines.iter().enumerate() {
        let v: Value = serde_json::from_slice(line).unwrap_or_else(|e| {
            panic!(
                "line {k} is not JSON ({e}): {}",
                String::from_utf8_lossy(line)
            )
        });
        let ts = v["ts"].as_i64().unwrap();
        assert!(ts >= prev_ts, "line {k}: time runs backwards");
        prev_ts = ts;
        let rank = v["rank"].as_u64().unwrap() as u32;
        *seen.entry((ts, rank)).or_default() += 1;
        assert!(
            ts >= srv.base_ms && ts <= last,
            "line {k}: ts {ts} outside the run"
        );
        assert_eq!((ts - srv.base_ms) % step_ms, 0, "line {k}: off the grid");
        let i = ((ts - srv.base_ms) / SPACING_MS) as usize;
        let (node, _) = RANKS[rank as usize];
        let n = NODES.iter().position(|x| *x == node).unwrap();
        let ctx = || format!("line {k}: {}", String::from_utf8_lossy(line));
        assert_eq!(v["node"], node, "{}", ctx());
        assert_eq!(
            v["step_time_ms"].as_f64(),
            Some(step_time(i, rank)),
            "{}",
            ctx()
        );
        assert_eq!(v["step"].as_u64(), Some(step(i)), "{}", ctx());
        assert_eq!(v["loss"].as_f64(), Some(loss(i, rank)), "{}", ctx());
        assert_eq!(
            v["data_wait_ms"].as_f64(),
            Some(data_wait(i, rank)),
            "{}",
            ctx()
        );
        assert_eq!(
            v["gpu_util_pct"].as_f64(),
            Some(node_gpu_util(i, n)),
            "{}",
            ctx()
        );
        let mem = v["gpu_mem_util_pct"].as_f64().unwrap();
        assert!((mem - node_gpu_mem(i, n)).abs() < 1e-9, "{}", ctx());
        assert!(
            v.get("comm_ms").is_none(),
            "no comm metric was generated: {}",
            ctx()
        );
    }
    let dup: Vec<_> = seen.iter().filter(|(_, c)| **c > 1).take(5).collect();
    assert!(dup.is_empty(), "records handed out twice: {dup:?}");
    assert_eq!(
        seen.len() as i64,
        grid * RANKS.len() as i64,
        "every (timestamp, rank) of the range, exactly once"
    );
    // The shared telemetry parser takes every line as a record.
    let mut ingest = Ingest::new(Format::Jsonl, &IngestOptions::default());
    let mut records = 0u64;
    for l in lines {
        ingest.push_line(l, &mut |_| records += 1);
    }
    let stats = ingest.finish(&mut |_| records += 1);
    assert_eq!(stats.skipped_total(), 0, "{stats:?}");
    assert_eq!(stats.records_parsed, lines.len() as u64);
}

fn last_grid_ts(srv: &Server) -> i64 {
    srv.base_ms + (N as i64 - 1) * SPACING_MS
}

// ---------------------------------------------------------------------------------------------

#[test]
fn every_point_comes_back_once_with_its_values() {
    let Some(srv) = server() else { return };
    let mut src = PrometheusSource::open(config(&srv.url, srv, SPACING_MS), None).unwrap();
    assert_eq!(src.cursor(), serde_json::json!({"last_ts_ms": null}));
    let (lines, events) = drain(&mut src);
    assert_eq!(lines.len(), N * RANKS.len());
    check_records(srv, &lines, SPACING_MS);
    assert!(events.is_empty(), "{events:?}");
    assert_eq!(src.cursor()["last_ts_ms"], last_grid_ts(srv));
    assert_eq!(src.describe()["kind"], "prometheus");
    // Ended stays ended.
    let mut more = Vec::new();
    assert_eq!(src.poll(&mut more, Duration::ZERO).unwrap(), Poll::Ended);
    assert!(more.is_empty());
}

#[test]
fn pages_a_range_longer_than_prometheus_allows_in_one_query() {
    let Some(srv) = server() else { return };
    let proxy = Proxy::start(&srv.url);
    // 1 s resolution over the ~4.2 h run: 14,996 grid points, more than the 11,000 one query may ask.
    let cfg = config(&proxy.url, srv, 1_000);
    let mut src = PrometheusSource::open(cfg, None).unwrap();
    let (lines, events) = drain(&mut src);
    assert!(events.is_empty(), "{events:?}");
    let grid = (last_grid_ts(srv) - srv.base_ms) / 1_000 + 1;
    assert!(grid > 11_000);
    assert_eq!(lines.len() as i64, grid * RANKS.len() as i64);
    // Between two generated points the series holds its last value: check_records compares each
    // record with the latest point at or before its timestamp.
    check_records(srv, &lines, 1_000);
    // The step-time query was asked in contiguous pages of at most 10,000 points.
    let mut pages: Vec<(i64, i64)> = proxy
        .requests()
        .iter()
        .filter_map(|r| range_of(r))
        .filter(|(q, s, e, _)| q == "modekeeper_step_time_ms" && s != e)
        .map(|(_, s, e, step)| {
            assert_eq!(step, 1_000);
            assert!(
                (e - s) / step < 10_000,
                "a page of {} points",
                (e - s) / step + 1
            );
            (s, e)
        })
        .collect();
    pages.sort();
    assert_eq!(pages.len(), 2, "{pages:?}");
    assert_eq!(pages[0].0, srv.base_ms);
    assert_eq!(pages[1].0, pages[0].1 + 1_000);
    assert_eq!(pages[1].1, last_grid_ts(srv));
}

#[test]
fn a_connection_cut_mid_response_is_retried_without_gap_or_duplicate() {
    let Some(srv) = server() else { return };
    let proxy = Proxy::start(&srv.url);
    let mut cfg = config(&proxy.url, srv, SPACING_MS);
    cfg.page_steps = 500;
    let mut src = PrometheusSource::open(cfg, None).unwrap();
    let mut lines = Vec::new();
    src.poll(&mut lines, Duration::from_secs(5)).unwrap();
    assert!(!lines.is_empty() && lines.len() < N * RANKS.len());
    // The next page's answers die after 50 KB, and the "server" stays away for a second.
    proxy.cut_after(50_000);
    let (rest, events) = drain(&mut src);
    assert_eq!(
        proxy.state.cuts.load(Ordering::SeqCst),
        1,
        "the proxy cut once"
    );
    lines.extend(rest);
    let kinds: Vec<&str> = events.iter().map(|e| e.kind.as_str()).collect();
    assert_eq!(kinds, ["disconnected", "reconnected"], "{events:?}");
    let reconnected = &events[1].detail;
    assert!(
        reconnected["attempts"].as_u64().unwrap() >= 1,
        "{reconnected}"
    );
    assert!(
        reconnected["down_ms"].as_u64().unwrap() >= 500,
        "{reconnected}"
    );
    check_records(srv, &lines, SPACING_MS);
}

#[test]
fn resumes_after_its_cursor() {
    let Some(srv) = server() else { return };
    let mut cfg = config(&srv.url, srv, SPACING_MS);
    cfg.page_steps = 2_000;
    let mut src = PrometheusSource::open(cfg.clone(), None).unwrap();
    let mut lines = Vec::new();
    src.poll(&mut lines, Duration::from_secs(5)).unwrap();
    // One poll hands out whole timestamps, ~4096 lines: the cursor is inside the first page.
    assert!(
        lines.len() >= 4096 && lines.len() < 2_000 * RANKS.len(),
        "{}",
        lines.len()
    );
    let cursor = src.cursor();
    let last: Value = serde_json::from_slice(lines.last().unwrap()).unwrap();
    assert_eq!(cursor["last_ts_ms"], last["ts"]);
    drop(src);
    // As watch does: the cursor goes through its state file as JSON text.
    let saved: Value = serde_json::from_str(&cursor.to_string()).unwrap();
    let mut src = PrometheusSource::open(cfg.clone(), Some(&saved)).unwrap();
    let (rest, events) = drain(&mut src);
    assert!(events.is_empty(), "{events:?}");
    lines.extend(rest);
    check_records(srv, &lines, SPACING_MS);
    // A cursor at the very end: nothing more, and the source ends.
    let mut src = PrometheusSource::open(cfg, Some(&src.cursor())).unwrap();
    let (rest, _) = drain(&mut src);
    assert!(rest.is_empty());
}

#[test]
fn promql_and_url_errors_are_one_clear_line() {
    let Some(srv) = server() else { return };
    let mut cfg = config(&srv.url, srv, SPACING_MS);
    cfg.queries.loss = Some("rate(modekeeper_loss[5m]".into());
    let e = PrometheusSource::open(cfg, None)
        .err()
        .expect("a bad query opens");
    let msg = format!("{e:#}");
    assert!(!msg.contains('\n'), "{msg}");
    assert!(
        msg.starts_with(
            "Prometheus rejected the loss query `rate(modekeeper_loss[5m]`: bad_data: "
        ),
        "{msg}"
    );
    assert!(msg.contains("parse error"), "{msg}");

    // A query that parses but is an execution error.
    let mut cfg = config(&srv.url, srv, SPACING_MS);
    cfg.queries = PromQueries {
        step_time_ms: "modekeeper_step_time_ms + on(job) modekeeper_loss".into(),
        ..PromQueries::default()
    };
    let msg = format!(
        "{:#}",
        PrometheusSource::open(cfg, None).err().expect("opens")
    );
    assert!(
        msg.contains("step_time_ms query") && msg.contains("execution"),
        "{msg}"
    );

    let cfg = config(&format!("{}/nothing-here", srv.url), srv, SPACING_MS);
    let msg = format!(
        "{:#}",
        PrometheusSource::open(cfg, None).err().expect("opens")
    );
    assert!(msg.contains("is not a Prometheus API (HTTP 404)"), "{msg}");
}

#[test]
fn follows_the_present_without_an_end() {
    let Some(srv) = server() else { return };
    // The server's own scrapes, every second: `up` is 1 for the self-scrape target. Its first scrape
    // comes a few seconds after start (target discovery is throttled to 5 s).
    let addr = srv.url.trim_start_matches("http://");
    let deadline = Instant::now() + Duration::from_secs(30);
    while !http_get(addr, "/api/v1/query?query=up").is_some_and(|r| r.contains("\"self\"")) {
        assert!(Instant::now() < deadline, "prometheus never scraped itself");
        std::thread::sleep(Duration::from_millis(200));
    }
    let mut cfg = PromConfig::new(&srv.url, now_ms() - 2_000);
    cfg.step = Duration::from_secs(1);
    cfg.lag = Duration::from_secs(1);
    cfg.queries = PromQueries {
        step_time_ms: r#"100 * up{job="self"}"#.into(),
        step: None,
        loss: None,
        data_wait_ms: None,
        gpu_util_pct: None,
        gpu_mem_util_pct: None,
        comm_ms: None,
    };
    let mut src = PrometheusSource::open(cfg, None).unwrap();
    let mut lines = Vec::new();
    let until = Instant::now() + Duration::from_secs(5);
    while Instant::now() < until {
        assert_eq!(
            src.poll(&mut lines, Duration::from_millis(300)).unwrap(),
            Poll::Open
        );
    }
    let ts: Vec<i64> = lines
        .iter()
        .map(|l| {
            let v: Value = serde_json::from_slice(l).unwrap();
            assert_eq!(v["step_time_ms"], 100.0);
            // No step query: the step is the grid point's index.
            assert_eq!(
                v["step"].as_i64().unwrap(),
                v["ts"].as_i64().unwrap() / 1000
            );
            assert!(v["node"].as_str().unwrap().starts_with("127.0.0.1:"), "{v}");
            v["ts"].as_i64().unwrap()
        })
        .collect();
    assert!(ts.len() >= 3, "{ts:?}");
    assert!(
        ts.windows(2).all(|w| w[1] == w[0] + 1_000),
        "one line per second, in order: {ts:?}"
    );
    assert!(
        *ts.last().unwrap() >= now_ms() - 5_000,
        "kept up with the present: {ts:?}"
    );
    assert_eq!(src.cursor()["last_ts_ms"], *ts.last().unwrap());
}

/// `closed-loop watch --source prometheus` (the built binary), stopped every few windows and
/// restarted, decides exactly like `closed-loop run` over the records the source hands out.
#[test]
fn watch_over_prometheus_decides_like_a_run_over_the_same_records() {
    let Some(srv) = server() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let mut src = PrometheusSource::open(config(&srv.url, srv, SPACING_MS), None).unwrap();
    let (lines, _) = drain(&mut src);
    let file = tmp.path().join("records.jsonl");
    let text: Vec<u8> = lines
        .iter()
        .flat_map(|l| l.iter().copied().chain(std::iter::once(b'\n')))
        .collect();
    std::fs::write(&file, text).unwrap();
    let bin = env!("CARGO_BIN_EXE_kubectl-modekeeper");
    let cache = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("closed-loop-policy-cache");
    let cmd = || {
        let mut c = Command::new(bin);
        c.env_remove("_")
            .env("MODEKEEPER_CACHE_DIR", &cache)
            .env("MODEKEEPER_POLICY_DIR", tmp.path().join("no-policies"));
        c
    };
    let run_out = tmp.path().join("run");
    let o = cmd()
        .args(["closed-loop", "run", "--path"])
        .arg(&file)
        .arg("--out")
        .arg(&run_out)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let watch_out = tmp.path().join("watch");
    let (start, end) = (srv.base_ms.to_string(), last_grid_ts(srv).to_string());
    let (rounds, r) = watch_support::watch_until_source_ended(
        || {
            let mut c = cmd();
            c.args([
                "closed-loop",
                "watch",
                "--source",
                "prometheus",
                "--prom-url",
                &srv.url,
            ])
            .args([
                "--prom-start",
                &start,
                "--prom-end",
                &end,
                "--prom-step",
                "5s",
                "--max-iterations",
                "200",
            ])
            .args(["-o", "json", "--out"])
            .arg(&watch_out);
            c
        },
        20,
        |_| {},
    );
    assert_eq!(
        r["observe_ingest"]["records_emitted"],
        (N * RANKS.len()) as u64
    );
    assert_eq!(r["source"]["describe"]["kind"], "prometheus");
    assert!(rounds > 1);
    let a = std::fs::read(run_out.join("decision_trace_latest.jsonl")).unwrap();
    let b = std::fs::read(watch_out.join("decision_trace_latest.jsonl")).unwrap();
    assert!(!a.is_empty() && a == b, "decision traces differ");
}
