//! Connections to one replica, kept open between requests: bulwark's own pool on hyper's
//! client connections, one per replica, held by the balancer's per-replica state (so the
//! pick that chose the replica also hands over its pool, with no lookup by address).
//!
//! HTTP/1.1: idle connections are kept last-in first-out; a request takes one, and gives
//! it back when its response body has been read to the end ([`Lease`]); a connection
//! whose body was dropped early, or that was upgraded, is not given back. HTTP/2: one
//! shared connection per replica, multiplexed. A request that a pooled connection closed
//! before writing it (a keep-alive race with the replica) is sent again on a new one.
//! A replica that joins gets one connection opened at once ([`Pool::warm`]), so its first
//! request does not pay for the connect.
//!
//! Each proxy worker has its own idle list (and HTTP/2 connection): a connection's task
//! runs on the worker that opened it, and a request only takes one of its own worker's, so
//! forwarding never wakes another thread.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::header::{self, HeaderValue};
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{Request, Response, Uri};
use hyper::body::Incoming;
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::net::TcpStream;

use crate::upstream_tls::{Stream, Upstream};
use tokio::time::Instant;

use crate::body::UpstreamBody;
use crate::workers::{self, Workers};

/// An idle HTTP/1.1 connection is closed after this long unused (hyper-util's default).
const IDLE_TIMEOUT: Duration = Duration::from_secs(30);
/// Idle HTTP/1.1 connections kept per replica; more are closed when given back.
const MAX_IDLE: usize = 1024;

/// The connections to one replica.
pub(crate) struct Pool {
    addr: SocketAddr,
    /// The replica's `ADDR:PORT` (`127.0.0.1:PORT`, or its container's own address): the
    /// `Host` of a request that came without one, and the authority of every HTTP/2 request.
    authority: Authority,
    host: HeaderValue,
    connect_timeout: Duration,
    http2: bool,
    /// Plain TCP or TLS.
    upstream: Upstream,
    /// Per worker: HTTP/1.1 connections not in use, oldest first.
    idle: Box<[Mutex<Idle>]>,
    /// Per worker: the HTTP/2 connection, shared by the worker's requests.
    shared: Box<[Mutex<Option<http2::SendRequest<UpstreamBody>>>]>,
}

/// Idle HTTP/1.1 connections, each with the time it was given back.
type Idle = Vec<(http1::SendRequest<UpstreamBody>, Instant)>;

/// Why a request got no response from the replica.
#[derive(Debug)]
pub(crate) enum PoolError {
    /// No connection could be opened (refused, unreachable, connect timeout, or an
    /// HTTP/2 handshake that failed).
    Connect(String),
    /// The connection failed after the request was handed to it, before a response head.
    Send(hyper::Error),
}

/// An HTTP/1.1 connection lent to one request, given back to its pool by
/// [`Lease::give_back`] once the response body has ended.
pub(crate) struct Lease {
    pool: Arc<Pool>,
    tx: http1::SendRequest<UpstreamBody>,
    /// The worker whose idle list it goes back to (the one its task runs on).
    worker: usize,
}

impl Lease {
    pub(crate) fn give_back(self) {
        self.pool.put(self.worker, self.tx);
    }
}

impl Pool {
    /// `workers`: how many idle lists to keep, one per proxy worker. `(http2, upstream)`:
    /// the protocol spoken to the replica and how it is reached.
    pub(crate) fn new(
        addr: SocketAddr,
        connect_timeout: Duration,
        (http2, upstream): (bool, Upstream),
        workers: usize,
    ) -> Arc<Pool> {
        // A socket address always formats as a valid authority and header value.
        let text = addr.to_string();
        let authority = Authority::try_from(text.as_str())
            .unwrap_or_else(|_| Authority::from_static("127.0.0.1"));
        let host =
            HeaderValue::from_str(&text).unwrap_or_else(|_| HeaderValue::from_static("127.0.0.1"));
        Arc::new(Pool {
            addr,
            authority,
            host,
            connect_timeout,
            http2,
            upstream,
            idle: (0..workers.max(1)).map(|_| Mutex::default()).collect(),
            shared: (0..workers.max(1)).map(|_| Mutex::default()).collect(),
        })
    }

    /// Opens each worker's shared HTTP/2 connection in the background, on that worker.
    /// An HTTP/1.1 pool opens nothing ahead: an idle connection would hold a replica that
    /// serves one connection at a time (Python's http.server, a gunicorn sync worker) until
    /// a request came on it, its probes timing out meanwhile (nginx and HAProxy open none
    /// ahead either); its connections are opened for requests.
    pub(crate) fn warm(self: &Arc<Self>, workers: &Workers) {
        if !self.http2 {
            return;
        }
        for (worker, rt) in workers.handles().iter().enumerate() {
            let pool = self.clone();
            rt.spawn(async move {
                if let Ok(tx) = pool.connect_h2().await {
                    pool.lock_shared(worker).get_or_insert(tx);
                }
            });
        }
    }

    /// The current worker's slot (the first one off the data plane, as in tests).
    fn slot(&self) -> usize {
        workers::index() % self.idle.len()
    }

    /// Sends `req` (whose URI carries at least the path) to the replica on a pooled
    /// connection, or a new one. The lease, if any, goes back once the body has ended.
    pub(crate) async fn send(
        self: &Arc<Self>,
        mut req: Request<UpstreamBody>,
    ) -> Result<(Response<Incoming>, Option<Lease>), PoolError> {
        let worker = self.slot();
        if self.http2 {
            *req.uri_mut() = self.absolute(req.uri());
            *req.version_mut() = http::Version::HTTP_2;
            let mut tx = match self.shared_h2(worker) {
                Some(tx) => tx,
                None => {
                    let tx = self.connect_h2().await?;
                    *self.lock_shared(worker) = Some(tx.clone());
                    tx
                }
            };
            return match tx.send_request(req).await {
                Ok(res) => Ok((res, None)),
                Err(e) => Err(PoolError::Send(e)),
            };
        }
        *req.version_mut() = http::Version::HTTP_11;
        if !req.headers().contains_key(header::HOST) {
            req.headers_mut().insert(header::HOST, self.host.clone());
        }
        let mut req = req;
        // A pooled connection the replica closed before our request was written gives
        // the request back: it is sent again on a new connection, once.
        let mut fresh = false;
        loop {
            let mut tx = match self.take_idle(worker).await {
                Some(tx) => tx,
                None => {
                    fresh = true;
                    self.connect_h1().await?
                }
            };
            match tx.try_send_request(req).await {
                Ok(res) => {
                    return Ok((
                        res,
                        Some(Lease {
                            pool: self.clone(),
                            tx,
                            worker,
                        }),
                    ));
                }
                Err(mut e) => match e.take_message() {
                    Some(unsent) if !fresh => req = unsent,
                    _ => return Err(PoolError::Send(e.into_error())),
                },
            }
        }
    }

    /// The URI an HTTP/2 request needs: scheme, the replica's authority, the path.
    fn absolute(&self, uri: &Uri) -> Uri {
        let mut parts = http::uri::Parts::default();
        parts.scheme = Some(Scheme::HTTP);
        parts.authority = Some(self.authority.clone());
        parts.path_and_query = Some(
            uri.path_and_query()
                .cloned()
                .unwrap_or_else(|| PathAndQuery::from_static("/")),
        );
        Uri::from_parts(parts).unwrap_or_default()
    }

    /// The newest idle connection still open and ready for a request. One whose previous
    /// response has just been read becomes ready only once its task has seen that: a
    /// ready one is preferred, so the wait (which the replica's latency sample would
    /// include) is taken only when no other is at hand.
    async fn take_idle(&self, worker: usize) -> Option<http1::SendRequest<UpstreamBody>> {
        loop {
            let mut tx = {
                let mut idle = self.lock_idle(worker);
                match idle.iter().rposition(|(tx, _)| tx.is_ready()) {
                    Some(i) => return Some(idle.remove(i).0),
                    None => idle.pop()?.0,
                }
            };
            // Ready at once when idle; a connection whose previous response has just been
            // read becomes ready as soon as its task has seen that. A closed one errs.
            if !tx.is_closed() && tx.ready().await.is_ok() {
                return Some(tx);
            }
        }
    }

    fn put(&self, worker: usize, tx: http1::SendRequest<UpstreamBody>) {
        if tx.is_closed() {
            return;
        }
        let now = Instant::now();
        let mut idle = self.lock_idle(worker);
        // Oldest first: those unused for too long are closed (dropped) from the front.
        let stale = idle
            .iter()
            .take_while(|(_, since)| now.duration_since(*since) >= IDLE_TIMEOUT)
            .count();
        idle.drain(..stale);
        if idle.len() < MAX_IDLE {
            idle.push((tx, now));
        }
    }

    fn shared_h2(&self, worker: usize) -> Option<http2::SendRequest<UpstreamBody>> {
        let shared = self.lock_shared(worker);
        shared.as_ref().filter(|tx| !tx.is_closed()).cloned()
    }

    /// A new connection to the replica (with its TLS handshake, if any), both within
    /// the connect timeout.
    async fn open(&self) -> Result<TokioIo<Stream>, PoolError> {
        let connect = async {
            let stream = TcpStream::connect(self.addr).await?;
            let _ = stream.set_nodelay(true);
            match &self.upstream {
                Upstream::Plain => Ok(Stream::Plain(stream)),
                Upstream::Tls(tls) => {
                    Ok(Stream::Tls(Box::new(tls.connect(stream, self.addr).await?)))
                }
                Upstream::Broken(why) => Err(std::io::Error::other(why.to_string())),
            }
        };
        match tokio::time::timeout(self.connect_timeout, connect).await {
            Ok(Ok(s)) => Ok(TokioIo::new(s)),
            Ok(Err(e)) => Err(PoolError::Connect(e.to_string())),
            Err(_) => Err(PoolError::Connect(format!(
                "connect timed out after {:?}",
                self.connect_timeout
            ))),
        }
    }

    async fn connect_h1(&self) -> Result<http1::SendRequest<UpstreamBody>, PoolError> {
        let io = self.open().await?;
        let (tx, conn) = http1::handshake(io)
            .await
            .map_err(|e| PoolError::Connect(e.to_string()))?;
        let addr = self.addr;
        tokio::spawn(async move {
            if let Err(e) = conn.with_upgrades().await {
                tracing::debug!(replica = %addr, error = %e, "upstream connection ended");
            }
        });
        Ok(tx)
    }

    async fn connect_h2(&self) -> Result<http2::SendRequest<UpstreamBody>, PoolError> {
        let io = self.open().await?;
        let (tx, conn) = http2::Builder::new(TokioExecutor::new())
            .timer(TokioTimer::new())
            .handshake(io)
            .await
            .map_err(|e| PoolError::Connect(e.to_string()))?;
        let addr = self.addr;
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(replica = %addr, error = %e, "upstream connection ended");
            }
        });
        Ok(tx)
    }

    fn lock_idle(&self, worker: usize) -> std::sync::MutexGuard<'_, Idle> {
        self.idle[worker].lock().unwrap_or_else(|e| e.into_inner())
    }

    fn lock_shared(
        &self,
        worker: usize,
    ) -> std::sync::MutexGuard<'_, Option<http2::SendRequest<UpstreamBody>>> {
        self.shared[worker]
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }
}
