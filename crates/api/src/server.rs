//! Serves the API: HTTP/1.1 in plain text (an h2c preface is a malformed request, not
//! HTTP/2); over TLS (`[api.tls]`, the proxy's acceptor) HTTP/2 or HTTP/1.1 by ALPN. With
//! the same kind of limits as the proxy's listeners, so a slow, idle or flooding client
//! cannot pin bulwark's control plane.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper::body::Incoming;
use hyper::server::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use tokio::net::TcpListener;
use tokio::sync::{Notify, Semaphore, watch};
use tower_service::Service;

use crate::security::CertCaller;
use crate::tokens::{Role, TokenInfo};

/// The API server's limits.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Connections open at once; one more is closed as soon as it is accepted.
    pub max_connections: usize,
    /// From accepting a connection, or from the end of its previous response, to the end of
    /// the next request's headers; a connection that sends nothing (or too slowly) in that
    /// time is closed. This is also the keep-alive idle timeout, and the time a TLS
    /// handshake may take.
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

/// TLS on the API: the acceptor (certificates reloaded when their files change) and the
/// role of a client known by its certificate.
#[derive(Clone)]
pub struct Tls {
    pub listener: Arc<proxy::TlsListener>,
    pub client_role: Role,
}

/// Requests at once on one HTTP/2 connection.
const H2_MAX_STREAMS: u32 = 32;
/// HTTP/2 pings: a peer that does not answer one within this long is gone.
const H2_PING: Duration = Duration::from_secs(20);

/// Serves `app` on `socket`, over TLS with `tls`, until `shutdown` turns true.
pub async fn serve(
    socket: TcpListener,
    app: Router,
    limits: Limits,
    tls: Option<Tls>,
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
    let mut h2 = http2::Builder::new(TokioExecutor::new());
    h2.timer(TokioTimer::new())
        .max_concurrent_streams(H2_MAX_STREAMS)
        .max_header_list_size(u32::try_from(limits.max_header_bytes).unwrap_or(u32::MAX))
        .keep_alive_interval(H2_PING)
        .keep_alive_timeout(H2_PING);
    let graceful = GracefulShutdown::new();
    loop {
        tokio::select! {
            accepted = socket.accept() => {
                let (stream, peer) = match accepted {
                    Ok(a) => a,
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
                let Some(tls) = &tls else {
                    let conn = graceful.watch(http.serve_connection(TokioIo::new(stream), service(&app, None, None)));
                    tokio::spawn(async move {
                        let _ = conn.await;
                        drop(permit);
                    });
                    continue;
                };
                let secure = Secure { tls: tls.clone(), http: http.clone(), h2: h2.clone(), app: app.clone() };
                let (deadline, graceful) = (limits.header_read, graceful.watcher());
                tokio::spawn(async move {
                    secure.serve(stream, peer, deadline, graceful).await;
                    drop(permit);
                });
            }
            _ = async { let _ = shutdown.wait_for(|s| *s).await; } => break,
        }
    }
    drop(socket);
    let _ = tokio::time::timeout(limits.drain, graceful.shutdown()).await;
}

/// What a TLS connection is served with.
struct Secure {
    tls: Tls,
    http: http1::Builder,
    h2: http2::Builder<TokioExecutor>,
    app: Router,
}

impl Secure {
    /// The handshake, within `deadline` (a client that says nothing is closed then), then
    /// the connection by the protocol ALPN chose.
    async fn serve(
        self,
        stream: tokio::net::TcpStream,
        peer: std::net::SocketAddr,
        deadline: Duration,
        graceful: Watcher,
    ) {
        let acceptor = self.tls.listener.acceptor();
        let stream = match tokio::time::timeout(deadline, acceptor.accept(stream)).await {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => {
                tracing::debug!(peer = %peer, error = %e, "API TLS handshake failed");
                return;
            }
            Err(_) => {
                tracing::debug!(peer = %peer, "API TLS handshake timed out");
                return;
            }
        };
        let session = stream.get_ref().1;
        // Only a certificate rustls verified against `client_ca` is here.
        let caller = session
            .peer_certificates()
            .and_then(|chain| chain.first())
            .map(|leaf| {
                let cn = crate::cert::subject_cn(leaf).unwrap_or_else(|| "?".to_owned());
                CertCaller(TokenInfo {
                    name: format!("CN={cn}"),
                    role: self.tls.client_role,
                    created: String::new(),
                })
            });
        let h2 = session.alpn_protocol() == Some(b"h2");
        let io = TokioIo::new(stream);
        if !h2 {
            let svc = service(&self.app, caller, None);
            let _ = graceful.watch(self.http.serve_connection(io, svc)).await;
            return;
        }
        // hyper's HTTP/2 server has no header-read timeout: a client that finished the
        // handshake must send its first request within the same deadline, or be closed.
        let first = Arc::new(Notify::new());
        let svc = service(&self.app, caller, Some(first.clone()));
        let conn = graceful.watch(self.h2.serve_connection(io, svc));
        tokio::pin!(conn);
        tokio::select! {
            _ = &mut conn => return,
            () = first.notified() => {}
            () = tokio::time::sleep(deadline) => {
                tracing::debug!(peer = %peer, "no request on an API HTTP/2 connection in time; closing it");
                return;
            }
        }
        let _ = conn.await;
    }
}

/// `app` as a hyper service; with `caller`, each request carries the client's certificate
/// identity for the token check; `first` is told of every request.
fn service(app: &Router, caller: Option<CertCaller>, first: Option<Arc<Notify>>) -> Api {
    Api {
        app: app.clone(),
        caller,
        first,
    }
}

#[derive(Clone)]
struct Api {
    app: Router,
    caller: Option<CertCaller>,
    first: Option<Arc<Notify>>,
}

impl hyper::service::Service<hyper::Request<Incoming>> for Api {
    type Response = axum::response::Response;
    type Error = std::convert::Infallible;
    type Future = axum::routing::future::RouteFuture<std::convert::Infallible>;

    fn call(&self, mut req: hyper::Request<Incoming>) -> Self::Future {
        if let Some(c) = &self.caller {
            req.extensions_mut().insert(c.clone());
        }
        if let Some(first) = &self.first {
            first.notify_one();
        }
        self.app.clone().call(req)
    }
}
