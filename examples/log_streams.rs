//! Load and memory bench of `PodLogStream` (not in CI; see `scripts/bench-log-streams.sh`):
//! follows N Deployments `t0000`.. (as `kube-sim-bench` seeds them) with one stream each on one
//! multi-thread runtime sharing one `KubeCluster`, and reports lines per second, the ingest lag
//! (now minus the newest kubelet timestamp handed out, right after each poll) and this process's
//! RSS per stream.
//!
//! `cargo run --example log_streams -- KUBECONFIG N SECONDS [RATE]`

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use chrono::Utc;
use modekeeper::k8s::{ConnectOptions, KubeCluster, LogTarget, PodLogStream, WorkloadRef};

/// 1 ms buckets up to 10 s (the last one holds everything later).
const LAG_BUCKETS: usize = 10_001;

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

fn percentile(h: &[AtomicU64], q: f64) -> Option<usize> {
    let total: u64 = h.iter().map(|b| b.load(Ordering::Relaxed)).sum();
    if total == 0 {
        return None;
    }
    let want = ((total as f64) * q).ceil().max(1.0) as u64;
    let mut seen = 0;
    for (ms, b) in h.iter().enumerate() {
        seen += b.load(Ordering::Relaxed);
        if seen >= want {
            return Some(ms);
        }
    }
    None
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [kubeconfig, n, seconds, rest @ ..] = args.as_slice() else {
        anyhow::bail!("usage: log_streams KUBECONFIG N SECONDS [RATE]");
    };
    let n: usize = n.parse()?;
    let seconds: u64 = seconds.parse()?;
    let rate: f64 = rest.first().map(|r| r.parse()).transpose()?.unwrap_or(10.0);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let opts = ConnectOptions::from_flags(Some(kubeconfig), None, None, Some(30_000));
    let cluster = Arc::new(rt.block_on(KubeCluster::connect(&opts))?);
    let rss_base = rss_kib();
    let lines = Arc::new(AtomicU64::new(0));
    let lag: Arc<Vec<AtomicU64>> = Arc::new((0..LAG_BUCKETS).map(|_| AtomicU64::new(0)).collect());
    let measuring = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let opened = Instant::now();
    let mut tasks = vec![];
    for i in 0..n {
        let target = LogTarget {
            namespace: None,
            workload: WorkloadRef::Deployment(format!("t{i:04}")),
            container: None,
            since_seconds: Some(0),
        };
        let mut s = rt.block_on(PodLogStream::open(&cluster, target, None))?;
        if (i + 1) % 100 == 0 {
            eprintln!(
                "log_streams: {} open after {:.1} s",
                i + 1,
                opened.elapsed().as_secs_f64()
            );
        }
        let (lines, lag, measuring) = (lines.clone(), lag.clone(), measuring.clone());
        tasks.push(rt.spawn(async move {
            let mut batch = vec![];
            loop {
                batch.clear();
                if let Err(e) = s.poll(&mut batch, Duration::from_secs(1)).await {
                    eprintln!("log_streams: t{i:04}: {e:#}");
                    return;
                }
                if batch.is_empty() || !measuring.load(Ordering::Relaxed) {
                    continue;
                }
                lines.fetch_add(batch.len() as u64, Ordering::Relaxed);
                if let Some(t) = s.last_line_time() {
                    let ms = (Utc::now() - t).num_milliseconds().max(0) as usize;
                    lag[ms.min(LAG_BUCKETS - 1)].fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    eprintln!(
        "log_streams: {n} streams open in {:.1} s",
        opened.elapsed().as_secs_f64()
    );
    // A few seconds to settle (every stream connected, the backlog read), then measure.
    std::thread::sleep(Duration::from_secs(3));
    measuring.store(true, Ordering::Relaxed);
    let start = Instant::now();
    let mut rss_max = 0;
    for t in 1..=seconds {
        std::thread::sleep(Duration::from_secs(1));
        let rss = rss_kib();
        rss_max = rss_max.max(rss);
        eprintln!(
            "log_streams: t={t}s lines={} rss={:.1} MiB",
            lines.load(Ordering::Relaxed),
            rss as f64 / 1024.0
        );
    }
    let elapsed = start.elapsed().as_secs_f64();
    let got = lines.load(Ordering::Relaxed) as f64;
    let fmt = |p: Option<usize>| p.map_or("-".to_string(), |ms| format!("{ms}"));
    println!(
        "streams={n} lines_per_s={:.0} expected_per_s={:.0} rss_base_mib={:.1} rss_max_mib={:.1} \
         kib_per_stream={:.1} lag_p50_ms={} lag_p99_ms={}",
        got / elapsed,
        n as f64 * rate,
        rss_base as f64 / 1024.0,
        rss_max as f64 / 1024.0,
        (rss_max.saturating_sub(rss_base)) as f64 / n.max(1) as f64,
        fmt(percentile(&lag, 0.5)),
        fmt(percentile(&lag, 0.99)),
    );
    for t in tasks {
        t.abort();
    }
    Ok(())
}
