use std::sync::{Arc, RwLock};
use std::time::Duration;

use bus::Endpoints;
use hyper::service::service_fn;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use spec::Expose;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};

use crate::body::UpstreamBody;
use crate::forward::{Hooks, Route};
use crate::metrics::ProxyMetrics;
use crate::service::Policy;

/// The pooled client to a service's replicas (keep-alive pools per replica address).
pub(crate) type Upstream = Client<HttpConnector, UpstreamBody>;

fn upstream(e: &Expose) -> Upstream {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    connector.set_connect_timeout(Some(e.timeouts.connect));
    Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(30))
        .pool_max_idle_per_host(1024)
        .pool_timer(TokioTimer::new())
        .timer(TokioTimer::new())
        .http2_only(e.upstream_http2)
        .build(connector)
}

/// A service's forwarding state, shared by its listener and by routes from other
/// services. Cheap to clone.
#[derive(Clone)]
pub struct RouteHandle(pub(crate) Arc<Route>);

impl RouteHandle {
    pub fn new(
        service: &str,
        expose: Expose,
        endpoints: watch::Receiver<Arc<Endpoints>>,
        metrics: &ProxyMetrics,
        outcomes: Option<Arc<dyn bus::OutcomeSink>>,
        hooks: Arc<Hooks>,
    ) -> RouteHandle {
        let route = Arc::new(Route {
            service: service.to_owned(),
            endpoints,
            client: RwLock::new(Arc::new(upstream(&expose))),
            policy: RwLock::new(Arc::new(Policy::new(expose, std::time::Instant::now()))),
            metrics: metrics.for_service(service),
            registry: (metrics.clone(), service.to_owned()),
            outcomes,
            hooks: hooks.clone(),
        });
        hooks
            .mesh
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(service.to_owned(), route.clone());
        RouteHandle(route)
    }

    /// Applies a changed configuration to new requests; requests in flight finish under
    /// the old one. Passive-health state starts afresh.
    pub fn reconfigure(&self, expose: Expose) {
        let client_changed = {
            let old = self.0.policy();
            old.expose.timeouts.connect != expose.timeouts.connect
                || old.expose.upstream_http2 != expose.upstream_http2
        };
        if client_changed {
            *self.0.client.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(upstream(&expose));
        }
        *self.0.policy.write().unwrap_or_else(|e| e.into_inner()) =
            Arc::new(Policy::new(expose, std::time::Instant::now()));
    }

    pub fn expose(&self) -> Expose {
        self.0.policy().expose.clone()
    }
}

/// Serves `route` on `socket` until `shutdown` turns true, then stops accepting, lets
/// requests in flight finish (up to `drain`), and returns.
///
/// # Cancel safety
/// Not cancel safe: dropping the future drops open connections abruptly. Use `shutdown`.
pub async fn serve(
    socket: TcpListener,
    route: RouteHandle,
    mut shutdown: watch::Receiver<bool>,
    drain: Duration,
) {
    let route = route.0;
    let (max_conns, header_read) = {
        let p = route.policy();
        (
            p.expose.limits.max_connections as usize,
            p.expose.timeouts.header_read,
        )
    };
    let conns = Arc::new(Semaphore::new(max_conns));
    let mut server = auto::Builder::new(TokioExecutor::new());
    server
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(header_read)
        .keep_alive(true);
    let graceful = GracefulShutdown::new();
    loop {
        tokio::select! {
            accepted = socket.accept() => {
                let (stream, peer) = match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        // Out of file descriptors and the like: back off instead of spinning.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                // Over the connection limit: close at once rather than queue without bound.
                let Ok(permit) = conns.clone().try_acquire_owned() else {
                    route.metrics.shed.inc();
                    drop(stream);
                    continue;
                };
                let _ = stream.set_nodelay(true);
                let route = route.clone();
                let svc = service_fn(move |req| {
                    let route = route.clone();
                    async move { route.handle(req, peer).await }
                });
                let conn = server.serve_connection_with_upgrades(TokioIo::new(stream), svc).into_owned();
                let conn = graceful.watch(conn);
                tokio::spawn(async move {
                    let _ = conn.await;
                    drop(permit);
                });
            }
            _ = async { let _ = shutdown.wait_for(|s| *s).await; } => break,
        }
    }
    drop(socket);
    let _ = tokio::time::timeout(drain, graceful.shutdown()).await;
}
