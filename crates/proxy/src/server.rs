use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use bus::Endpoints;
use http::HeaderValue;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use spec::Expose;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};

use crate::body::Inbound;
use crate::conn::{Conn, Counted, H2_PREFACE, LINGER, Linger, Watched, after};
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
/// replica joins the balancer (and an HTTP/2 replica's pool opens its connection) when it
/// becomes ready, not when a request first picks it. Ends with the proxy or the
/// snapshots' sender.
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
/// While a listener drains, how often an `h1` connection with a request in flight is
/// looked at, to close it once that request is answered.
const DRAIN_CHECK: Duration = Duration::from_millis(20);

/// Which engine serves HTTP/1.1 client connections: `BULWARK_HTTP1=h1` (bulwark's own,
/// `crates/h1`, the default) or `hyper` (hyper's, as before it). HTTP/2 is hyper's either
/// way. Read once, at the first listener.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Http1 {
    Hyper,
    H1,
}

impl Http1 {
    const DEFAULT: Http1 = Http1::H1;

    pub(crate) fn get() -> Http1 {
        static CHOSEN: std::sync::OnceLock<Http1> = std::sync::OnceLock::new();
        *CHOSEN.get_or_init(|| match std::env::var("BULWARK_HTTP1").as_deref() {
            Ok("h1") => Http1::H1,
            Ok("hyper") => Http1::Hyper,
            Ok(other) => {
                tracing::warn!(
                    value = other,
                    "BULWARK_HTTP1 is h1 or hyper; using the default"
                );
                Http1::DEFAULT
            }
            Err(_) => Http1::DEFAULT,
        })
    }
}

/// The `h1` engine's limits: the proxy's own; no timers (the connection's clock in
/// `conn.rs` keeps `header_read` and `idle` for both engines).
fn h1_config() -> h1::Config {
    h1::Config {
        max_head_bytes: MAX_HEAD_BYTES,
        max_headers: MAX_HEADERS,
        max_body_bytes: None,
        idle_timeout: None,
        header_timeout: None,
        linger: Some(LINGER),
        date: true,
    }
}

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
    let listener = Arc::new(Listener::new(proxy.clone(), tls, shutdown.clone()));
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
                // Tasks of their own sizes: the future of an idle plain `h1` connection
                // must not be as large as a TLS handshake or a hyper connection.
                let (this, watcher) = (listener.clone(), graceful.watcher());
                match (&listener.tls, &listener.h1) {
                    (Some(_), _) => drop(tokio::spawn(this.tls(stream, conn, watcher))),
                    (None, Some(_)) => drop(tokio::spawn(this.plain(stream, conn, watcher))),
                    (None, None) => {
                        let served = watcher.watch(listener.serve_hyper(stream, conn.clone()));
                        drop(tokio::spawn(watch_connection(served, conn, None)));
                    }
                }
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

/// What every connection accepted on one listener socket shares.
struct Listener {
    proxy: Arc<ServiceProxy>,
    /// HTTP/2 always; HTTP/1.1 too under `BULWARK_HTTP1=hyper`.
    hyper: auto::Builder<TokioExecutor>,
    /// `Some` when bulwark's own engine serves HTTP/1.1.
    h1: Option<Arc<h1::Config>>,
    tls: Option<Arc<TlsListener>>,
    /// Turns true when the listener starts to drain.
    shutdown: watch::Receiver<bool>,
}

impl Listener {
    fn new(
        proxy: Arc<ServiceProxy>,
        tls: Option<Arc<TlsListener>>,
        shutdown: watch::Receiver<bool>,
    ) -> Listener {
        let h1 = (Http1::get() == Http1::H1).then(|| Arc::new(h1_config()));
        Listener {
            proxy,
            hyper: hyper_builder(),
            h1,
            tls,
            shutdown,
        }
    }

    /// One plain client connection of an `h1` listener, from its accept to its end (see
    /// [`serve`] for its deadlines): the engine chosen, the requests served.
    async fn plain(self: Arc<Self>, stream: TcpStream, conn: Arc<Conn>, graceful: Watcher) {
        let Some(config) = &self.h1 else { return };
        // A plain connection is HTTP/2 only with prior knowledge: its first bytes say so.
        // The sniffing runs under the first request's deadline. The served future is made
        // inside the awaited call, not bound to a local first: a local moved into the
        // call keeps its own room in this future's state (rust-lang/rust#62958).
        let watch = conn.clone();
        let drain = self.drain();
        watch_connection(
            async {
                match sniff_h2(&stream).await {
                    Some(false) => {
                        drop(graceful);
                        let _ = serve_h1(stream, conn, &self.proxy, config).await;
                    }
                    // Boxed: hyper's connection inline would make every idle `h1`
                    // connection's future as large as it.
                    Some(true) => self.hyper_boxed(stream, conn, graceful).await,
                    None => {}
                }
            },
            watch,
            drain,
        )
        .await;
    }

    /// Hyper serving an HTTP/2 connection an `h1` listener received, on the heap.
    fn hyper_boxed(
        &self,
        stream: TcpStream,
        conn: Arc<Conn>,
        graceful: Watcher,
    ) -> Pin<Box<dyn Future<Output = ()> + Send>> {
        let served = graceful.watch(self.serve_hyper(stream, conn));
        Box::pin(async move {
            let _ = served.await;
        })
    }

    /// One TLS client connection: the handshake, under the head's deadline, in the
    /// connection's task, then the engine ALPN chose.
    async fn tls(self: Arc<Self>, stream: TcpStream, conn: Arc<Conn>, graceful: Watcher) {
        let Some(tls) = &self.tls else { return };
        let peer = conn.peer;
        let header_read = conn.header_read();
        // The socket stays open until the failure is counted (the handshake gives it back
        // on an error, and is dropped only on return): a client that sees the close then
        // reads the metric finds it counted.
        // In a block of its own: the finished handshake is not kept beside the connection.
        let stream = {
            let handshake = tls.acceptor().accept(stream).into_fallible();
            tokio::pin!(handshake);
            match tokio::time::timeout(header_read, &mut handshake).await {
                Ok(Ok(stream)) => stream,
                Ok(Err((e, socket))) => {
                    self.proxy.metrics.tls_failed.inc();
                    drop(socket);
                    return tracing::debug!(peer = %peer, error = %e, "TLS handshake failed");
                }
                Err(_) => {
                    self.proxy.metrics.tls_failed.inc();
                    return tracing::debug!(peer = %peer, "TLS handshake timed out");
                }
            }
        };
        let h2 = stream.get_ref().1.alpn_protocol() == Some(b"h2");
        match &self.h1 {
            Some(config) if !h2 => {
                drop(graceful);
                let (watch, drain) = (conn.clone(), self.drain());
                watch_connection(serve_h1(stream, conn, &self.proxy, config), watch, drain).await;
            }
            _ => {
                let watch = conn.clone();
                watch_connection(graceful.watch(self.serve_hyper(stream, conn)), watch, None).await;
            }
        }
    }

    /// The listener's drain signal, for a connection served by `h1` (hyper's have
    /// `GracefulShutdown`).
    fn drain(&self) -> Option<watch::Receiver<bool>> {
        Some(self.shutdown.clone())
    }

    /// One client connection served by hyper, over plain TCP or TLS.
    fn serve_hyper<IO: Linger>(
        &self,
        io: IO,
        conn: Arc<Conn>,
    ) -> impl hyper_util::server::graceful::GracefulConnection + use<IO> {
        let io = TokioIo::new(Watched::new(io, conn.clone()));
        let proxy = self.proxy.clone();
        let svc = service_fn(move |req: Request<Incoming>| {
            let proxy = proxy.clone();
            let ticket = conn.begin(req.version() == http::Version::HTTP_2);
            async move {
                let res = proxy.handle(req.map(Inbound::Hyper), ticket.conn()).await?;
                Ok::<_, crate::forward::InjectedReset>(res.map(|b| Counted::new(b, ticket)))
            }
        });
        self.hyper
            .serve_connection_with_upgrades(io, svc)
            .into_owned()
    }
}

fn hyper_builder() -> auto::Builder<TokioExecutor> {
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
    server
}

/// Runs one connection until it ends, its deadline passes (see [`serve`]), or the
/// listener closes what is left after draining. With `drain` (an `h1` connection), once
/// the listener starts to drain the connection is closed as soon as it is between
/// requests; the answer in flight then says `Connection: close`.
async fn watch_connection<F: std::future::Future>(
    served: F,
    conn: Arc<Conn>,
    mut drain: Option<watch::Receiver<bool>>,
) {
    let mut closing = conn.closing.clone();
    // On the heap: pinned here, an argument would be moved into a local of its own and
    // take its room twice in this future (rust-lang/rust#62958).
    let mut served = Box::pin(served);
    let timer = tokio::time::sleep_until(
        conn.first_deadline()
            .min(after(tokio::time::Instant::now(), conn.idle)),
    );
    tokio::pin!(timer);
    loop {
        tokio::select! {
            _ = &mut served => return,
            () = &mut timer => {
                let now = tokio::time::Instant::now();
                if conn.draining() && conn.quiet() {
                    return;
                }
                let Some(next) = conn.next_check(now) else {
                    tracing::debug!(peer = %conn.peer, "closing an idle client connection");
                    conn.time_out();
                    return;
                };
                let next = if conn.draining() { next.min(now + DRAIN_CHECK) } else { next };
                timer.as_mut().reset(next);
            }
            () = draining(drain.as_mut()), if drain.is_some() && !conn.draining() => {
                conn.drain();
                if conn.quiet() {
                    return;
                }
                let next = timer.deadline().min(tokio::time::Instant::now() + DRAIN_CHECK);
                timer.as_mut().reset(next);
            }
            // The `Ref` from `wait_for` is not `Send`: drop it inside the branch future.
            () = async { let _ = closing.wait_for(|c| *c).await; } => return,
        }
    }
}

/// Resolves when the listener starts to drain (or is gone).
///
/// # Cancel safety
/// Cancel safe.
async fn draining(drain: Option<&mut watch::Receiver<bool>>) {
    if let Some(d) = drain {
        let _ = d.wait_for(|s| *s).await;
    }
}

/// Whether a plain connection may speak HTTP/2 with prior knowledge: `Some(true)` when its
/// first bytes are the preface, or a part of it so far (hyper's auto-detection, which
/// reads and rewinds, then decides: it serves HTTP/1.1 as well); `Some(false)` when they
/// cannot begin it. `None`: it closed (or failed) first. Peeked, not read, so that the
/// engine chosen reads them; an idle `h1` connection carries no rewind buffer for them.
/// One peek: bytes already there keep a socket readable, so waiting for more of the
/// preface by peeking again would poll (a client that sends `PRI` and stalls once cost
/// a wakeup every 5 ms until its deadline).
///
/// # Cancel safety
/// Cancel safe: nothing is consumed.
async fn sniff_h2(stream: &TcpStream) -> Option<bool> {
    let mut first = [0u8; H2_PREFACE.len()];
    let n = stream.peek(&mut first).await.ok()?;
    (n > 0).then(|| first[..n] == H2_PREFACE[..n])
}

/// One client connection served by `h1`, over plain TCP or TLS. Not an `async fn`: its
/// arguments would be kept in its state beside the engine's future that holds them.
fn serve_h1<IO: Linger>(
    io: IO,
    conn: Arc<Conn>,
    proxy: &Arc<ServiceProxy>,
    config: &Arc<h1::Config>,
) -> impl Future<Output = Result<(), h1::Error>> + Send + use<IO> {
    let io = Watched::new(io, conn.clone());
    let proxy = proxy.clone();
    let service = move |req: Request<h1::RequestBody>| {
        let proxy = proxy.clone();
        let ticket = conn.begin(false);
        async move {
            let handled = proxy.handle(req.map(Inbound::H1), ticket.conn()).await;
            let draining = ticket.conn().draining();
            match handled {
                Ok(mut res) => {
                    if draining {
                        // The listener drains: this answer is the connection's last.
                        res.headers_mut()
                            .insert(http::header::CONNECTION, HeaderValue::from_static("close"));
                    }
                    res.map(|b| Counted::new(b, ticket))
                }
                // Dropped unanswered, as hyper does when a service fails.
                Err(crate::forward::InjectedReset) => {
                    let body = http_body_util::Either::Right(Default::default());
                    let mut res = Response::new(Counted::new(body, ticket));
                    res.extensions_mut().insert(h1::Reset);
                    res
                }
            }
        }
    };
    h1::serve(io, service, config.clone())
}
