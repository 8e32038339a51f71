use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::AtomicUsize;
use std::time::Duration;

use bus::Endpoints;
use hyper::service::service_fn;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::forward::Route;
use crate::metrics::ProxyMetrics;

/// One exposed service's listener and what it forwards to.
pub struct Listener {
    pub service: String,
    pub balance: spec::Balance,
    pub socket: TcpListener,
    pub endpoints: watch::Receiver<Arc<Endpoints>>,
    /// Told how every request ended (SLIs).
    pub outcomes: Option<Arc<dyn bus::OutcomeSink>>,
}

/// Serves until `shutdown` turns true, then stops accepting, lets requests in flight finish
/// (up to `drain`), and returns.
///
/// # Cancel safety
/// Not cancel safe: dropping the future drops open connections abruptly. Use `shutdown`.
pub async fn serve(
    l: Listener,
    metrics: &ProxyMetrics,
    mut shutdown: watch::Receiver<bool>,
    drain: Duration,
) {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    connector.set_connect_timeout(Some(Duration::from_secs(1)));
    let client = Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(30))
        .pool_max_idle_per_host(1024)
        .pool_timer(TokioTimer::new())
        .timer(TokioTimer::new())
        .build(connector);
    let route = Arc::new(Route {
        metrics: metrics.for_service(&l.service),
        service: l.service,
        balance: l.balance,
        endpoints: l.endpoints,
        cursor: AtomicUsize::new(0),
        client,
        outcomes: l.outcomes,
    });
    let mut server = auto::Builder::new(TokioExecutor::new());
    server
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(Duration::from_secs(30))
        .keep_alive(true);
    let graceful = GracefulShutdown::new();
    loop {
        tokio::select! {
            accepted = l.socket.accept() => {
                let (stream, _) = match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        // Out of file descriptors and the like: back off instead of spinning.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                let route = route.clone();
                let svc = service_fn(move |req| {
                    let route = route.clone();
                    async move { Ok::<_, Infallible>(route.handle(req).await) }
                });
                let conn = server.serve_connection(TokioIo::new(stream), svc).into_owned();
                let conn = graceful.watch(conn);
                tokio::spawn(async move {
                    let _ = conn.await;
                });
            }
            _ = async { let _ = shutdown.wait_for(|s| *s).await; } => break,
        }
    }
    drop(l.socket);
    let _ = tokio::time::timeout(drain, graceful.shutdown()).await;
}
