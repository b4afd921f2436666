//! A session's telemetry, from its pods' logs or from its Prometheus series, behind one async
//! face: poll for lines, a cursor to resume after them, source events, the newest line's time.
//!
//! The Prometheus reader is blocking (ureq); each poll runs it on tokio's blocking pool with no
//! wait of its own and sleeps on the runtime until the next grid point is due, so a session costs a
//! blocking thread only while a query is on the wire.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::Value;
use std::sync::Arc;

use tokio::sync::Semaphore;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::k8s::PodLogStream;
use crate::telemetry::live::{
    LiveSource, Poll, PromConfig, PromCursor, PrometheusSource, SourceEvent,
};

pub enum Telemetry {
    Pods(PodLogStream),
    Prometheus(PromStream),
}

impl Telemetry {
    /// As [`LiveSource::poll`]: waits at most `wait`, returns early once a line arrived.
    /// Cancel-safe: lines are handed out only in the step that returns them.
    pub async fn poll(&mut self, out: &mut Vec<Vec<u8>>, wait: Duration) -> anyhow::Result<Poll> {
        match self {
            Telemetry::Pods(s) => s.poll(out, wait).await,
            Telemetry::Prometheus(s) => s.poll(out, wait).await,
        }
    }

    pub fn cursor(&self) -> Value {
        match self {
            Telemetry::Pods(s) => s.cursor(),
            Telemetry::Prometheus(s) => s.cursor.clone(),
        }
    }

    pub fn drain_events(&mut self) -> Vec<SourceEvent> {
        match self {
            Telemetry::Pods(s) => s.drain_events(),
            Telemetry::Prometheus(s) => std::mem::take(&mut s.events),
        }
    }

    /// The time of the newest line handed out: the kubelet's, or the grid point's.
    pub fn last_line_time(&self) -> Option<DateTime<Utc>> {
        match self {
            Telemetry::Pods(s) => s.last_line_time(),
            Telemetry::Prometheus(s) => s
                .last_ts_ms()
                .and_then(DateTime::<Utc>::from_timestamp_millis),
        }
    }
}

/// Whether a saved cursor is one this kind of source wrote: a session whose source changed starts
/// over instead of handing a pod-log position to Prometheus (or the reverse).
pub fn cursor_fits(cursor: &Value, prometheus: bool) -> bool {
    let pods = cursor.get("kind").and_then(Value::as_str) == Some("k8s");
    if prometheus {
        !pods && serde_json::from_value::<PromCursor>(cursor.clone()).is_ok()
    } else {
        pods
    }
}

type Polled = (PrometheusSource, Vec<Vec<u8>>, anyhow::Result<Poll>);

/// One answer's body, at most. A page is held whole while it is turned into lines (~13× its
/// answer), so the controller's cap is far below `closed-loop watch`'s 128 MiB: a workload whose
/// page is larger gets an error that says to lower `page_steps`, not the controller OOM-killed
/// with every session in it.
pub const BODY_CAP: u64 = 8 << 20;
/// Prometheus reads running at once in one controller: their pages' memory and the blocking
/// threads they hold are bounded by this, whatever the fleet (others wait their turn).
pub const READS_AT_ONCE: usize = 4;

/// [`PrometheusSource`] on the blocking pool.
pub struct PromStream {
    /// Here between polls; on the blocking pool while one runs.
    source: Option<PrometheusSource>,
    /// The poll running now. Kept across a cancelled `poll` so the next one takes its result: no
    /// line is lost and the source is never run twice at once.
    inflight: Option<JoinHandle<Polled>>,
    /// As of the lines handed out.
    cursor: Value,
    events: Vec<SourceEvent>,
    /// Shared by the controller's Prometheus sessions ([`READS_AT_ONCE`]).
    reads: Arc<Semaphore>,
}

impl PromStream {
    /// Opens the source (one request per query: a PromQL error or an unreachable server fails
    /// here), after `cursor` when given.
    pub async fn open(
        cfg: PromConfig,
        cursor: Option<Value>,
        reads: Arc<Semaphore>,
    ) -> anyhow::Result<PromStream> {
        let permit = reads.clone().acquire_owned().await?;
        let source = tokio::task::spawn_blocking(move || {
            let _permit = permit;
            PrometheusSource::open_with_limit(cfg, cursor.as_ref(), BODY_CAP)
        })
        .await
        .map_err(|e| anyhow::anyhow!("the Prometheus reader failed: {e}"))??;
        Ok(PromStream {
            cursor: source.cursor(),
            source: Some(source),
            inflight: None,
            events: Vec::new(),
            reads,
        })
    }

    fn last_ts_ms(&self) -> Option<i64> {
        serde_json::from_value::<PromCursor>(self.cursor.clone())
            .ok()
            .and_then(|c| c.last_ts_ms)
    }

    pub async fn poll(&mut self, out: &mut Vec<Vec<u8>>, wait: Duration) -> anyhow::Result<Poll> {
        let deadline = Instant::now() + wait;
        loop {
            let handle = match &mut self.inflight {
                Some(h) => h,
                None => {
                    if self.source.is_none() {
                        anyhow::bail!("the Prometheus reader was lost to an earlier failure");
                    }
                    // Before the source leaves: a poll cancelled while it waits keeps it.
                    let permit = self.reads.clone().acquire_owned().await?;
                    let mut source = self.source.take().expect("checked above");
                    self.inflight.insert(tokio::task::spawn_blocking(move || {
                        let _permit = permit;
                        let mut lines = Vec::new();
                        let r = source.poll(&mut lines, Duration::ZERO);
                        (source, lines, r)
                    }))
                }
            };
            let joined = handle.await;
            self.inflight = None;
            let (mut source, lines, polled) =
                joined.map_err(|e| anyhow::anyhow!("the Prometheus reader failed: {e}"))?;
            self.events.extend(source.drain_events());
            self.cursor = source.cursor();
            let idle = source.idle_for();
            self.source = Some(source);
            let got = !lines.is_empty();
            out.extend(lines);
            match polled? {
                Poll::Ended => return Ok(Poll::Ended),
                Poll::Open if got => return Ok(Poll::Open),
                Poll::Open => {}
            }
            let now = Instant::now();
            if now >= deadline {
                return Ok(Poll::Open);
            }
            // At least a millisecond (a source with nothing due never spins), at most to the
            // deadline. Not `clamp`: with less than a millisecond left its bounds cross (a panic).
            tokio::time::sleep(idle.max(Duration::from_millis(1)).min(deadline - now)).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_cursor_of_the_other_source_is_no_position() {
        let pods = json!({"kind": "k8s", "namespace": "ml", "pods": {}});
        let prom = json!({"last_ts_ms": 1_000});
        assert!(cursor_fits(&pods, false));
        assert!(!cursor_fits(&pods, true));
        assert!(cursor_fits(&prom, true));
        assert!(!cursor_fits(&prom, false));
        assert!(!cursor_fits(&json!({"last_ts_ms": "soon"}), true));
    }

    /// A loopback "Prometheus" that answers every query with no series.
    fn empty_prometheus() -> String {
        crate::telemetry::live::serve_loopback(|c| {
            use std::io::Write;
            let body = r#"{"status":"success","data":{"resultType":"matrix","result":[]}}"#;
            let _ = write!(
                c,
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        })
    }

    fn reads() -> Arc<Semaphore> {
        Arc::new(Semaphore::new(READS_AT_ONCE))
    }

    /// A workload's series count is its owner's to choose (a label with many values), and one
    /// page of `series` × `points` grid points is read, and turned into lines, whole (~13× its
    /// answer: 400 series of a 10,000-point page, a 56 MB answer under `watch`'s 128 MiB cap, took
    /// some 750 MB). In the controller an answer over [`BODY_CAP`] is that workload's error,
    /// saying what to lower, never the OOM kill of every session; the reads at once are bounded
    /// too, so a fleet catching up holds at most [`READS_AT_ONCE`] such pages.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_workload_s_page_over_the_cap_is_its_error_not_the_controller_s_memory() {
        use std::io::Write;
        let (series, points) = (80usize, 10_000usize);
        let mut body =
            String::from(r#"{"status":"success","data":{"resultType":"matrix","result":["#);
        for k in 0..series {
            body.push_str(if k > 0 { "," } else { "" });
            body.push_str(&format!(r#"{{"metric":{{"rank":"{k}"}},"values":["#));
            for i in 0..points {
                body.push_str(if i > 0 { "," } else { "" });
                body.push_str(&format!(r#"[{i},"{}.5"]"#, 100 + i % 7));
            }
            body.push_str("]}");
        }
        body.push_str("]}}");
        assert!(body.len() as u64 > BODY_CAP, "{}", body.len());
        let body = Arc::new(body);
        let b = body.clone();
        let url = crate::telemetry::live::serve_loopback(move |c| {
            let _ = write!(
                c,
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                b.len()
            );
            let _ = c.write_all(b.as_bytes());
        });
        let mut cfg = PromConfig::new(&url, 0);
        cfg.end_ms = Some((points as i64 - 1) * 1000);
        cfg.step = Duration::from_secs(1);
        cfg.page_steps = points as u64;
        cfg.timeout = Duration::from_secs(60);
        cfg.queries.step = None;
        cfg.queries.loss = None;
        cfg.queries.data_wait_ms = None;
        cfg.queries.gpu_util_pct = None;
        cfg.queries.gpu_mem_util_pct = None;
        cfg.queries.comm_ms = None;
        let reads = reads();
        let e = match PromStream::open(cfg, None, reads.clone()).await {
            Ok(mut s) => {
                let mut out = Vec::new();
                s.poll(&mut out, Duration::from_secs(30)).await.unwrap_err()
            }
            Err(e) => e,
        };
        let msg = format!("{e:#}");
        assert!(
            msg.contains("larger than 8 MiB") && msg.contains("lower page_steps"),
            "{msg}"
        );
        // Its permit went back with it.
        assert_eq!(reads.available_permits(), READS_AT_ONCE);
    }

    /// A poll whose wait has less than a millisecond left when the source turns out idle returns
    /// (it once asked `Duration::clamp` for a minimum above its maximum: a panic that killed the
    /// session's task). The next grid point is a minute away, so every poll finds nothing due and
    /// comes back from the blocking pool well inside a 999 µs wait.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_wait_that_runs_out_within_a_millisecond_ends_the_poll() {
        let now = chrono::Utc::now().timestamp_millis();
        let mut cfg = PromConfig::new(&empty_prometheus(), now);
        cfg.step = Duration::from_secs(60);
        cfg.lag = Duration::from_secs(30);
        cfg.timeout = Duration::from_secs(10);
        let mut s = PromStream::open(cfg, None, reads()).await.unwrap();
        let mut out = Vec::new();
        for _ in 0..200 {
            let started = Instant::now();
            let p = s.poll(&mut out, Duration::from_micros(999)).await.unwrap();
            assert_eq!(p, Poll::Open);
            // Never much past the wait (a sleep that ignored the deadline would show here).
            assert!(started.elapsed() < Duration::from_millis(500));
        }
        assert!(out.is_empty());
    }
}
