use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use bus::Endpoints;
use hyper::Request;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use spec::Expose;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};

use crate::conn::{Conn, Counted, Watched, after};
use crate::forward::{Hooks, ServiceProxy};
use crate::metrics::ProxyMetrics;
use crate::service::ServicePolicy;
use crate::tls::TlsListener;

/// A handle on a service's proxy (its forwarding state), shared by its listener and by
/// routes from other services. Cheap to clone.
#[derive(Clone)]
pub struct ServiceProxyHandle(pub(crate) Arc<ServiceProxy>);

impl ServiceProxyHandle {
    pub fn new(
        service: &str,
        expose: Expose,
        endpoints: watch::Receiver<Arc<Endpoints>>,
        metrics: &ProxyMetrics,
        outcomes: Option<Arc<dyn bus::OutcomeSink>>,
        hooks: Arc<Hooks>,
    ) -> ServiceProxyHandle {
        let proxy = Self::build(
            (service, service),
            expose,
            endpoints,
            metrics,
            outcomes,
            hooks,
            false,
        );
        proxy
            .hooks
            .services
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(service.to_owned(), proxy.clone());
        ServiceProxyHandle(proxy)
    }

    /// The proxy of a blue-green preview listener: `service`'s new revision only. Routes
    /// do not lead here, and its requests count in no SLO (it is not what users see).
    pub fn preview(
        service: &str,
        expose: Expose,
        endpoints: watch::Receiver<Arc<Endpoints>>,
        metrics: &ProxyMetrics,
        outcomes: Option<Arc<dyn bus::OutcomeSink>>,
        hooks: Arc<Hooks>,
    ) -> ServiceProxyHandle {
        // Metrics under the preview's name; requests and outcomes under the service's.
        let name = format!("{service}-preview");
        let proxy = Self::build(
            (service, &name),
            expose,
            endpoints,
            metrics,
            outcomes,
            hooks,
            true,
        );
        ServiceProxyHandle(proxy)
    }

    /// `service` names its requests and outcomes, `name` its metrics.
    fn build(
        (service, name): (&str, &str),
        expose: Expose,
        endpoints: watch::Receiver<Arc<Endpoints>>,
        metrics: &ProxyMetrics,
        outcomes: Option<Arc<dyn bus::OutcomeSink>>,
        hooks: Arc<Hooks>,
        preview: bool,
    ) -> Arc<ServiceProxy> {
        let proxy = Arc::new(ServiceProxy {
            service: service.to_owned(),
            endpoints,
            policy: ArcSwap::from_pointee(ServicePolicy::new(expose, std::time::Instant::now())),
            metrics: metrics.for_service(name),
            registry: (metrics.clone(), name.to_owned()),
            outcomes,
            hooks,
            preview,
        });
        follow_endpoints(&proxy);
        proxy
    }

    /// Applies a changed configuration to new requests; requests in flight finish under
    /// the old one. Passive-health state starts afresh, and so do the replicas'
    /// connection pools.
    pub fn reconfigure(&self, expose: Expose) {
        let mut policy = ServicePolicy::new(expose, std::time::Instant::now());
        if let (Some(new), Some(old)) = (&mut policy.fallback, &self.0.policy().fallback) {
            new.keep_copies(old);
        }
        self.0.policy.store(Arc::new(policy));
        self.0.sync_now();
    }

    pub fn expose(&self) -> Expose {
        self.0.policy().expose.clone()
    }
}

/// Takes in each endpoints snapshot as it is published (and the current one now), so a
/// replica's pool opens its first connection when the replica becomes ready, not when a
/// request first picks it. Ends with the proxy or the snapshots' sender.
fn follow_endpoints(proxy: &Arc<ServiceProxy>) {
    let Ok(rt) = tokio::runtime::Handle::try_current() else {
        return;
    };
    let weak = Arc::downgrade(proxy);
    let mut rx = proxy.endpoints.clone();
    proxy.sync_now();
    rt.spawn(async move {
        while rx.changed().await.is_ok() {
            let Some(proxy) = weak.upgrade() else { return };
            proxy.sync_now();
        }
    });
}

/// Largest request head (request line and headers) accepted, HTTP/1 read buffer and
/// HTTP/2 header list alike: 64 KiB (nginx allows 1 KiB + 4 × 8 KiB, HAProxy 16 KiB
/// buffers; hyper's own default is ~400 KiB). Over it: 431, connection closed.
pub const MAX_HEAD_BYTES: usize = 64 * 1024;
/// Most header fields in one HTTP/1 request (nginx and HAProxy: about 100). Over it: 431.
pub const MAX_HEADERS: usize = 100;
/// HTTP/2 streams open at once per connection (nginx `http2_max_concurrent_streams`: 128).
/// Over it the client's new streams are refused (`REFUSED_STREAM`).
pub const H2_MAX_STREAMS: u32 = 128;
/// HTTP/2 keep-alive: a PING after this long without a frame from the client, and the
/// connection is closed if no answer comes within [`H2_PING_TIMEOUT`]. Finds dead peers
/// behind NATs long before `timeouts.idle` would (gRPC's minimum client interval is
/// 10 s; hyper's default ping timeout is 20 s).
pub const H2_PING_INTERVAL: Duration = Duration::from_secs(30);
pub const H2_PING_TIMEOUT: Duration = Duration::from_secs(20);
/// HTTP/2 rapid reset (CVE-2023-44487): streams reset by the client before we accepted
/// them, at most this many pending at once (h2's default) before the connection is closed
/// with `ENHANCE_YOUR_CALM`.
pub const H2_MAX_PENDING_RESETS: usize = 20;
/// HTTP/2 "MadeYouReset" (CVE-2025-8671): streams we had to reset for the client's
/// protocol errors, per connection, before it is closed (h2's default).
pub const H2_MAX_LOCAL_RESETS: usize = 1024;
/// After the drain period, how long tunnels and connections still open get to close.
const CLOSE_GRACE: Duration = Duration::from_secs(1);

/// The connection limit (`limits.max_connections`) of one listener, shared by the sockets
/// its workers accept on.
#[derive(Clone)]
pub(crate) struct ConnLimit {
    permits: Arc<Semaphore>,
    max: u32,
}

impl ConnLimit {
    pub(crate) fn new(max: u32) -> ConnLimit {
        ConnLimit {
            permits: Arc::new(Semaphore::new(max as usize)),
            max,
        }
    }
}

/// Serves `proxy` on `socket` until `shutdown` turns true, then stops accepting, lets
/// requests in flight (and upgraded tunnels) finish up to `drain`, closes what is left,
/// and returns.
///
/// Per connection: the first request must begin within `timeouts.header_read` of the
/// accept (also for HTTP/2, whose preface is read first); a later HTTP/1 request head has
/// `header_read` from its first byte; with nothing in flight the connection is closed
/// after `timeouts.idle`.
///
/// # Cancel safety
/// Not cancel safe: dropping the future closes open connections abruptly. Use `shutdown`.
pub async fn serve(
    socket: TcpListener,
    proxy: ServiceProxyHandle,
    shutdown: watch::Receiver<bool>,
    drain: Duration,
) {
    let limit = ConnLimit::new(proxy.0.policy().expose.limits.max_connections);
    serve_shared(socket, proxy, limit, None, shutdown, drain).await;
}

/// [`serve`] on one of a listener's sockets, under the listener's connection limit; the
/// drain waits for the connections of every socket of the listener.
/// With `tls`, each connection's handshake must end within `timeouts.header_read`.
pub(crate) async fn serve_shared(
    socket: TcpListener,
    proxy: ServiceProxyHandle,
    limit: ConnLimit,
    tls: Option<Arc<TlsListener>>,
    mut shutdown: watch::Receiver<bool>,
    drain: Duration,
) {
    let proxy = proxy.0;
    let ConnLimit {
        permits: conns,
        max: max_conns,
    } = limit;
    let (closing_tx, closing) = watch::channel(false);
    let mut server = auto::Builder::new(TokioExecutor::new());
    server
        .http1()
        .timer(TokioTimer::new())
        // Our own per-connection timer enforces `header_read` (hyper's would start the
        // moment a keep-alive connection goes idle, overriding `timeouts.idle`).
        .header_read_timeout(None)
        .keep_alive(true)
        .max_buf_size(MAX_HEAD_BYTES)
        .max_headers(MAX_HEADERS);
    server
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(H2_PING_INTERVAL)
        .keep_alive_timeout(H2_PING_TIMEOUT)
        .max_concurrent_streams(H2_MAX_STREAMS)
        .max_pending_accept_reset_streams(H2_MAX_PENDING_RESETS)
        .max_local_error_reset_streams(H2_MAX_LOCAL_RESETS)
        .max_header_list_size(MAX_HEAD_BYTES as u32);
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
                    proxy.metrics.shed.inc();
                    drop(stream);
                    continue;
                };
                let _ = stream.set_nodelay(true);
                let (idle, header_read) = {
                    let p = proxy.policy();
                    (p.expose.timeouts.idle, p.expose.timeouts.header_read)
                };
                let conn = Arc::new(Conn::new(peer, idle, header_read, closing.clone(), permit));
                let Some(tls) = &tls else {
                    let served = serve_connection(&server, stream, conn.clone(), &proxy);
                    tokio::spawn(watch_connection(graceful.watch(served), conn));
                    continue;
                };
                // The handshake runs in the connection's task, under the head's deadline.
                let (acceptor, server, proxy) = (tls.acceptor(), server.clone(), proxy.clone());
                let graceful = graceful.watcher();
                tokio::spawn(async move {
                    match tokio::time::timeout(header_read, acceptor.accept(stream)).await {
                        Ok(Ok(stream)) => {
                            let served = serve_connection(&server, stream, conn.clone(), &proxy);
                            watch_connection(graceful.watch(served), conn).await;
                        }
                        Ok(Err(e)) => {
                            proxy.metrics.tls_failed.inc();
                            tracing::debug!(peer = %peer, error = %e, "TLS handshake failed");
                        }
                        Err(_) => {
                            proxy.metrics.tls_failed.inc();
                            tracing::debug!(peer = %peer, "TLS handshake timed out");
                        }
                    }
                });
            }
            _ = async { let _ = shutdown.wait_for(|s| *s).await; } => break,
        }
    }
    drop(socket);
    // Every connection, tunnels included, holds a permit until it is closed.
    let all = || conns.acquire_many(max_conns);
    let drained = tokio::time::timeout(drain, async {
        graceful.shutdown().await;
        let _ = all().await;
    })
    .await;
    if drained.is_err() {
        tracing::warn!(service = %proxy.service, "drain deadline passed, closing connections");
    }
    closing_tx.send_replace(true);
    let _ = tokio::time::timeout(CLOSE_GRACE, all()).await;
}

/// One client connection served by `proxy`, over plain TCP or TLS.
fn serve_connection<IO>(
    server: &auto::Builder<TokioExecutor>,
    io: IO,
    conn: Arc<Conn>,
    proxy: &Arc<ServiceProxy>,
) -> impl hyper_util::server::graceful::GracefulConnection + use<IO>
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let io = TokioIo::new(Watched::new(io, conn.clone()));
    let proxy = proxy.clone();
    let svc = service_fn(move |req: Request<Incoming>| {
        let proxy = proxy.clone();
        let ticket = conn.begin(req.version() == http::Version::HTTP_2);
        async move {
            let res = proxy.handle(req, ticket.conn()).await?;
            Ok::<_, crate::forward::InjectedReset>(res.map(|b| Counted::new(b, ticket)))
        }
    });
    server.serve_connection_with_upgrades(io, svc).into_owned()
}

/// Runs one connection until it ends, its deadline passes (see [`serve`]), or the
/// listener closes what is left after draining.
async fn watch_connection<F: std::future::Future>(served: F, conn: Arc<Conn>) {
    let mut closing = conn.closing.clone();
    tokio::pin!(served);
    let timer = tokio::time::sleep_until(
        conn.first_deadline()
            .min(after(tokio::time::Instant::now(), conn.idle)),
    );
    tokio::pin!(timer);
    loop {
        tokio::select! {
            _ = &mut served => return,
            () = &mut timer => {
                let Some(next) = conn.next_check(tokio::time::Instant::now()) else {
                    tracing::debug!(peer = %conn.peer, "closing an idle client connection");
                    conn.time_out();
                    return;
                };
                timer.as_mut().reset(next);
            }
            // The `Ref` from `wait_for` is not `Send`: drop it inside the branch future.
            () = async { let _ = closing.wait_for(|c| *c).await; } => return,
        }
    }
}
