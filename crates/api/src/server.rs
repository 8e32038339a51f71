//! Serves the API: HTTP/1.1 only (an h2c preface is a malformed request, not HTTP/2), with
//! the same kind of limits as the proxy's listeners, so a slow, idle or flooding client
//! cannot pin bulwark's control plane.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};
use tower_service::Service;

/// The API server's limits.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Connections open at once; one more is closed as soon as it is accepted.
    pub max_connections: usize,
    /// From accepting a connection, or from the end of its previous response, to the end of
    /// the next request's headers; a connection that sends nothing (or too slowly) in that
    /// time is closed. This is also the keep-alive idle timeout.
    pub header_read: Duration,
    /// Bytes of request line and headers; more is answered 431.
    pub max_header_bytes: usize,
    pub max_headers: usize,
    /// How long shutdown waits for open requests (event and log streams never end).
    pub drain: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: 256,
            header_read: Duration::from_secs(10),
            max_header_bytes: 16 * 1024,
            max_headers: 64,
            drain: Duration::from_secs(1),
        }
    }
}

/// Serves `app` on `socket` until `shutdown` turns true.
pub async fn serve(
    socket: TcpListener,
    app: Router,
    limits: Limits,
    mut shutdown: watch::Receiver<bool>,
) {
    let conns = Arc::new(Semaphore::new(limits.max_connections));
    let mut http = http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_read)
        // hyper's floor for its read buffer is 8 KiB.
        .max_buf_size(limits.max_header_bytes.max(8192))
        .max_headers(limits.max_headers)
        .keep_alive(true);
    let graceful = GracefulShutdown::new();
    loop {
        tokio::select! {
            accepted = socket.accept() => {
                let stream = match accepted {
                    Ok((s, _)) => s,
                    Err(e) => {
                        tracing::warn!(error = %e, "API accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let Ok(permit) = conns.clone().try_acquire_owned() else {
                    tracing::warn!(max = limits.max_connections, "API connection limit reached; closing a new connection");
                    drop(stream);
                    continue;
                };
                let app = app.clone();
                let svc = service_fn(move |req: hyper::Request<Incoming>| {
                    let mut app = app.clone();
                    async move { app.call(req).await }
                });
                let conn = graceful.watch(http.serve_connection(TokioIo::new(stream), svc));
                tokio::spawn(async move {
                    let _ = conn.await;
                    drop(permit);
                });
            }
            _ = async { let _ = shutdown.wait_for(|s| *s).await; } => break,
        }
    }
    drop(socket);
    let _ = tokio::time::timeout(limits.drain, graceful.shutdown()).await;
}
