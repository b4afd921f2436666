//! The controller's HTTP port: `GET /metrics` (Prometheus text), `/healthz` (liveness: 200 while
//! the process serves), `/readyz` (readiness: 200 once [`Health::set_ready`] said so, else 503).
//!
//! Anything in the cluster can reach this port, so every resource a client can hold is bounded
//! ([`Limits`]): the time to send a request's headers (a slowloris client is dropped, and others are
//! served meanwhile), the header size, the number of open connections (more are closed at once
//! rather than queued) and a connection's lifetime (a client that never reads its response). Bad
//! input gets hyper's 4xx, never a panic. HTTP/1 only; request bodies are never read.
//!
//! Wiring: bind `--listen` with `tokio::net::TcpListener::bind` (a bind error is the caller's one
//! clear line), `tokio::spawn(serve(listener, metrics, health, shutdown))` with `shutdown` the
//! controller's stop signal, `health.set_ready(true)` once the watches have synced. `/metrics` is
//! encoded on the runtime thread that serves it (about 25 ms and 950 KB for 1,000 workloads, measured
//! in a debug build on a loaded 2-core machine).

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use hyper::body::Incoming;
use hyper::header::{ALLOW, CONTENT_TYPE, HeaderValue};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tokio::task::JoinSet;

use super::metrics::{self, ControllerMetrics};

/// Liveness and readiness, shared between the controller and the server.
#[derive(Debug, Default)]
pub struct Health {
    ready: AtomicBool,
}

impl Health {
    /// Not ready until told.
    pub fn new() -> Self {
        Self::default()
    }

    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::Release);
    }

    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }
}

/// What one client may hold of the server.
#[derive(Clone, Debug)]
pub struct Limits {
    /// From a connection's first byte (or the end of its last response) to the end of a request's
    /// headers. Prometheus and the kubelet send theirs at once.
    pub header_read_timeout: Duration,
    /// The whole connection, keep-alive included: a client that stops reading its response, or
    /// keeps a connection forever, lets it go by then.
    pub connection_lifetime: Duration,
    /// Open connections; one more is closed as soon as it is accepted.
    pub max_connections: usize,
    /// The read buffer, hence the largest request head (at least 8 KiB: hyper's minimum).
    pub max_header_bytes: usize,
    /// After shutdown, how long in-flight responses may take before their connections are dropped.
    pub drain: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            header_read_timeout: Duration::from_secs(5),
            // Prometheus' default scrape timeout is 10 s; keep-alive reconnects cost nothing.
            connection_lifetime: Duration::from_secs(60),
            max_connections: 64,
            max_header_bytes: 16 * 1024,
            drain: Duration::from_secs(5),
        }
    }
}

/// Serves until `shutdown` completes, then lets in-flight requests finish (at most
/// [`Limits::drain`]) and returns. Accept errors (out of file descriptors) are waited out, not
/// returned: the controller must keep serving its probes.
pub async fn serve(
    listener: TcpListener,
    metrics: Arc<ControllerMetrics>,
    health: Arc<Health>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    serve_with(listener, metrics, health, shutdown, Limits::default()).await
}

/// [`serve`] with explicit [`Limits`].
pub async fn serve_with(
    listener: TcpListener,
    metrics: Arc<ControllerMetrics>,
    health: Arc<Health>,
    shutdown: impl Future<Output = ()> + Send + 'static,
    limits: Limits,
) -> std::io::Result<()> {
    // Values hyper or tokio would panic on: a buffer under hyper's minimum, a deadline past what
    // `Instant` can hold, more permits than a semaphore has.
    const DAY: Duration = Duration::from_secs(86_400);
    let limits = Arc::new(Limits {
        max_header_bytes: limits.max_header_bytes.max(8 * 1024),
        header_read_timeout: limits.header_read_timeout.min(DAY),
        connection_lifetime: limits.connection_lifetime.min(DAY),
        max_connections: limits.max_connections.min(Semaphore::MAX_PERMITS),
        ..limits
    });
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let (stop_tx, stop_rx) = watch::channel(());
    let mut connections = JoinSet::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => {
                let stream = match accepted {
                    Ok((stream, _peer)) => stream,
                    Err(_) => {
                        // EMFILE and friends: accepting again at once would spin.
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                // Reap finished connections so that the set stays as small as the open ones.
                while connections.try_join_next().is_some() {}
                let Ok(slot) = slots.clone().try_acquire_owned() else {
                    drop(stream);
                    continue;
                };
                connections.spawn(connection(
                    stream,
                    slot,
                    Arc::clone(&metrics),
                    Arc::clone(&health),
                    Arc::clone(&limits),
                    stop_rx.clone(),
                ));
            }
        }
    }
    drop(listener);
    let _ = stop_tx.send(());
    let drained = async { while connections.join_next().await.is_some() {} };
    let _ = tokio::time::timeout(limits.drain, drained).await;
    // Dropping the set aborts what is left.
    Ok(())
}

async fn connection(
    stream: TcpStream,
    _slot: OwnedSemaphorePermit,
    metrics: Arc<ControllerMetrics>,
    health: Arc<Health>,
    limits: Arc<Limits>,
    mut stop: watch::Receiver<()>,
) {
    let _ = stream.set_nodelay(true);
    let service = service_fn(move |req: Request<Incoming>| {
        let response = respond(&req, &metrics, &health);
        async move { Ok::<_, Infallible>(response) }
    });
    let conn = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_buf_size(limits.max_header_bytes)
        .max_headers(64)
        .keep_alive(true)
        .serve_connection(TokioIo::new(stream), service);
    let mut conn = std::pin::pin!(conn);
    let mut lifetime = std::pin::pin!(tokio::time::sleep(limits.connection_lifetime));
    let mut stopping = false;
    loop {
        tokio::select! {
            // A client's protocol error ends its connection only: nothing to report.
            _ = conn.as_mut() => return,
            // Dropping the connection closes the socket.
            () = &mut lifetime => return,
            _ = stop.changed(), if !stopping => {
                stopping = true;
                // Finishes the response in flight, then closes (an idle connection at once).
                conn.as_mut().graceful_shutdown();
            }
        }
    }
}

fn respond(
    req: &Request<Incoming>,
    metrics: &ControllerMetrics,
    health: &Health,
) -> Response<String> {
    let path = req.uri().path();
    if !matches!(path, "/metrics" | "/healthz" | "/readyz") {
        return text(StatusCode::NOT_FOUND, "not found\n");
    }
    if req.method() != Method::GET && req.method() != Method::HEAD {
        let mut r = text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n");
        r.headers_mut()
            .insert(ALLOW, HeaderValue::from_static("GET, HEAD"));
        return r;
    }
    match path {
        "/metrics" => {
            let mut r = Response::new(metrics.encode());
            r.headers_mut().insert(
                CONTENT_TYPE,
                HeaderValue::from_static(metrics::CONTENT_TYPE),
            );
            r
        }
        "/healthz" => text(StatusCode::OK, "ok\n"),
        _ if health.is_ready() => text(StatusCode::OK, "ready\n"),
        _ => text(StatusCode::SERVICE_UNAVAILABLE, "not ready\n"),
    }
}

fn text(status: StatusCode, body: &'static str) -> Response<String> {
    let mut r = Response::new(body.to_string());
    *r.status_mut() = status;
    r.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The controller spawns the server on its runtime: the future must be `Send`.
    #[test]
    fn the_server_future_is_send() {
        fn send<T: Send>(_: &T) {}
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let listener = rt.block_on(TcpListener::bind("127.0.0.1:0")).unwrap();
        let _guard = rt.enter();
        let fut = serve(
            listener,
            Arc::new(ControllerMetrics::new()),
            Arc::new(Health::new()),
            async {},
        );
        send(&fut);
    }

    /// Limits at the extremes are clamped, not a panic when a connection comes.
    #[test]
    fn extreme_limits_do_not_panic() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            let limits = Limits {
                header_read_timeout: Duration::MAX,
                connection_lifetime: Duration::MAX,
                max_connections: usize::MAX,
                max_header_bytes: 0,
                drain: Duration::MAX,
            };
            let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
            let server = tokio::spawn(serve_with(
                listener,
                Arc::new(ControllerMetrics::new()),
                Arc::new(Health::new()),
                async {
                    let _ = stopped.await;
                },
                limits,
            ));
            let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                .await
                .unwrap();
            let mut reply = String::new();
            s.read_to_string(&mut reply).await.unwrap();
            assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
            stop.send(()).unwrap();
            server.await.unwrap().unwrap();
        });
    }

    #[test]
    fn health_starts_not_ready() {
        let h = Health::new();
        assert!(!h.is_ready());
        h.set_ready(true);
        assert!(h.is_ready());
    }
}
