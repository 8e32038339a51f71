//! The TCP mode of the proxy (`protocol = "tcp"`): connections, not requests, are balanced
//! over the ready replicas, and bytes are copied both ways, through Toxiproxy-style toxics.
//!
//! Life of a connection: accept → pick a ready replica (P2C over connections in flight) →
//! connect within `connect_timeout`, on failure another untried replica (at most
//! [`MAX_TRIES`]) → decide the toxics for this connection → copy both directions until
//! both have ended (a half-close is passed on), or until no byte passed either way for
//! `timeouts.idle` → close. With no ready replica, or `limits.max_connections` already
//! open, the client connection is closed at once.
//!
//! With TLS terminated (`expose.tls`), the handshake comes first, within
//! `timeouts.header_read`, and the plaintext is relayed. With TLS passed through by SNI
//! (`sni.rs`), one listener serves every service of its address: it reads the client's
//! hello, picks the service that claims its name, and sends the hello to the replica
//! before relaying the rest untouched.
//!
//! Invariants: a [`bus::LoadGuard`] on the chosen replica is held for the whole life of the
//! proxied connection (the supervisor drains on it); toxics act only while the global kill
//! switch reads `true`; a direction holds a buffer only while data flows (an idle
//! connection holds none), sized to what arrives (4 KiB, doubling up to 16 KiB).

mod metrics;
mod plan;
mod pump;
pub(crate) mod sni;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bus::{Endpoint, Endpoints, LoadGuard};
use prometheus_client::metrics::counter::Counter;
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::conn::Activity;
use crate::tls::TlsListener;
pub use metrics::TcpMetrics;
use metrics::{ConnResult, ServiceTcpMetrics};
use plan::Plan;
use pump::{Pump, Source, Stop, faults_on};

/// Replicas tried per client connection, each a different one.
pub const MAX_TRIES: usize = 3;

/// One exposed TCP service: its bound socket and what it forwards to.
pub struct TcpListener {
    pub service: String,
    pub socket: tokio::net::TcpListener,
    /// The ready replicas; each connection picks from the snapshot current when it opens.
    pub endpoints: watch::Receiver<Arc<Endpoints>>,
    /// For each try to connect to a replica.
    pub connect_timeout: Duration,
    /// `limits.max_connections`: client connections open at once; one over it is closed
    /// at once (counted as `over_limit`).
    pub max_connections: u32,
    /// `timeouts.idle`: a connection with no byte either way for this long is closed
    /// (counted as `idle`). Zero: never.
    pub idle: Duration,
    /// Replaced on reload; applies to connections opened afterwards.
    pub toxics: watch::Receiver<Vec<spec::Toxic>>,
    /// Global kill switch: `false` turns every toxic off at once, including on open
    /// connections; `true` lets the toxics each connection drew act again.
    pub faults_enabled: watch::Receiver<bool>,
    /// Toxics injected at run time (chaos experiments), per replica.
    pub injected: Arc<crate::Injected>,
}

/// What every connection task of one service's listener shares (read-only).
pub(crate) struct Shared {
    metrics: ServiceTcpMetrics,
    endpoints: watch::Receiver<Arc<Endpoints>>,
    connect_timeout: Duration,
    idle: Duration,
    toxics: watch::Receiver<Vec<spec::Toxic>>,
    faults: watch::Receiver<bool>,
    service: String,
    injected: Arc<crate::Injected>,
}

/// Serves until `shutdown` turns true (or its sender is dropped), then stops accepting,
/// waits up to `drain` for open connections to end, closes the rest, and returns.
///
/// # Cancel safety
/// Not cancel safe: dropping the future closes open connections abruptly (and their
/// results go uncounted). Use `shutdown`.
pub async fn serve_tcp(
    l: TcpListener,
    metrics: &TcpMetrics,
    shutdown: watch::Receiver<bool>,
    drain: Duration,
) {
    let slots = Arc::new(Semaphore::new(l.max_connections as usize));
    serve_tcp_shared(l, slots, metrics, None, shutdown, drain).await;
}

/// A listener that terminates TLS: its certificates and the handshake's deadline.
pub(crate) struct Terminate {
    pub tls: Arc<TlsListener>,
    /// `timeouts.header_read`: the handshake must end within it.
    pub header_read: Duration,
    /// The service's `tls_handshake_failed` policy event.
    pub failed: Counter,
}

/// [`serve_tcp`] on one of a listener's sockets; `slots` is the listener's connection
/// limit, shared by its sockets. With `tls`, each connection's TLS is ended first.
pub(crate) async fn serve_tcp_shared(
    l: TcpListener,
    slots: Arc<Semaphore>,
    metrics: &TcpMetrics,
    tls: Option<Arc<Terminate>>,
    shutdown: watch::Receiver<bool>,
    drain: Duration,
) {
    let TcpListener {
        service,
        socket,
        endpoints,
        connect_timeout,
        max_connections: _,
        idle,
        toxics,
        faults_enabled,
        injected,
    } = l;
    let shared = Arc::new(Shared {
        metrics: metrics.for_service(&service),
        endpoints,
        connect_timeout,
        idle,
        toxics,
        faults: faults_enabled,
        service: service.clone(),
        injected,
    });
    let accepted = move |client: TcpStream| {
        // Over the connection limit: close at once rather than queue without bound.
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            shared.metrics.open().set(ConnResult::OverLimit);
            return None;
        };
        let (shared, tls) = (shared.clone(), tls.clone());
        Some(async move {
            let start = match tls {
                Some(t) => Start::Terminate(t),
                None => Start::Plain,
            };
            connection(&shared, client, start).await;
            drop(permit);
        })
    };
    accept_loop(socket, &service, shutdown, drain, accepted).await;
}

/// Accepts until `shutdown` turns true, runs what `accepted` makes of each connection (if
/// anything: `None` closes it), then drains for up to `drain` and aborts what is left.
pub(crate) async fn accept_loop<F, C>(
    socket: tokio::net::TcpListener,
    name: &str,
    mut shutdown: watch::Receiver<bool>,
    drain: Duration,
    mut accepted: F,
) where
    F: FnMut(TcpStream) -> Option<C>,
    C: Future<Output = ()> + Send + 'static,
{
    let mut conns = JoinSet::new();
    // Cancel safety of the branches: `accept`, `join_next` and `wait_for` are cancel safe,
    // so a branch that loses the race loses nothing.
    loop {
        tokio::select! {
            got = socket.accept() => {
                let client = match got {
                    Ok((client, _)) => client,
                    Err(e) => {
                        // Out of file descriptors and the like: back off instead of spinning.
                        tracing::warn!(listener = %name, error = %e, "tcp accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                if let Some(conn) = accepted(client) {
                    conns.spawn(conn);
                }
            }
            Some(joined) = conns.join_next() => {
                if let Err(e) = joined {
                    tracing::error!(listener = %name, error = %e, "tcp connection task failed");
                }
            }
            // The `Ref` from `wait_for` is not `Send`: drop it inside the branch future.
            () = async { let _ = shutdown.wait_for(|s| *s).await; } => break,
        }
    }
    drop(socket);
    let open = conns.len();
    if open > 0 {
        tracing::info!(listener = %name, open, ?drain, "tcp listener draining");
    }
    let drained =
        tokio::time::timeout(drain, async { while conns.join_next().await.is_some() {} }).await;
    if drained.is_err() {
        tracing::warn!(listener = %name, open = conns.len(), "tcp drain deadline passed, closing");
    }
    // Aborts what is left and waits, so every load guard is released on return.
    conns.shutdown().await;
}

/// What comes before the relay on a connection.
pub(crate) enum Start {
    /// Nothing: bytes are relayed as they come.
    Plain,
    /// The TLS handshake, ended by the proxy.
    Terminate(Arc<Terminate>),
    /// A client's TLS hello already read (passed through by SNI): sent to the replica
    /// first.
    Hello(Vec<u8>),
}

/// One client connection, from accept to close.
pub(crate) async fn connection(shared: &Shared, client: TcpStream, start: Start) {
    let mut tracked = shared.metrics.open();
    let _ = client.set_nodelay(true);
    let (result, guard) = match start {
        Start::Plain => proxied(shared, client, &[]).await,
        Start::Hello(hello) => proxied(shared, client, &hello).await,
        Start::Terminate(t) => {
            // Counted before the socket closes (see the HTTP listener's `tls`); in a block
            // of its own, so the finished handshake is not kept beside the connection.
            let tls = {
                let handshake = t.tls.acceptor().accept(client).into_fallible();
                tokio::pin!(handshake);
                match tokio::time::timeout(t.header_read, &mut handshake).await {
                    Ok(Ok(tls)) => Some(tls),
                    Ok(Err((e, socket))) => {
                        tracing::debug!(service = %shared.service, error = %e, "TLS handshake failed");
                        t.failed.inc();
                        drop(socket);
                        None
                    }
                    Err(_) => {
                        tracing::debug!(service = %shared.service, "TLS handshake timed out");
                        t.failed.inc();
                        None
                    }
                }
            };
            match tls {
                Some(tls) => proxied(shared, tls, &[]).await,
                None => (ConnResult::TlsFailed, None),
            }
        }
    };
    // Count before releasing the replica, so a drained replica's connections are counted.
    tracked.set(result);
    drop(tracked);
    drop(guard);
}

/// Connects `client` to a replica, sends it `head`, and relays until the end. Returns how
/// it ended and the load guard on the replica, if one was reached.
async fn proxied<C: Downstream>(
    shared: &Shared,
    client: C,
    head: &[u8],
) -> (ConnResult, Option<LoadGuard>) {
    let (mut upstream, guard, replica) = match connect(shared).await {
        Ok(connected) => connected,
        // Dropping the client closes it at once.
        Err(result) => return (result, None),
    };
    if !head.is_empty() {
        if let Err(e) = upstream.write_all(head).await {
            tracing::debug!(error = %e, "tcp relay failed");
            return (ConnResult::Error, Some(guard));
        }
        shared.metrics.upstream_bytes.inc_by(head.len() as u64);
    }
    let (plan, live) = match shared.injected.toxics(&shared.service, replica) {
        None => (
            Plan::decide(&shared.toxics.borrow(), rand::random::<f64>),
            None,
        ),
        Some((injected, live)) => {
            let mut all = shared.toxics.borrow().clone();
            all.extend(injected);
            (Plan::decide(&all, rand::random::<f64>), Some(live))
        }
    };
    let result = relay(shared, client, upstream, plan, live).await;
    (result, Some(guard))
}

/// A client's side of a proxied connection: a TCP socket, or TLS ended on one.
pub(crate) trait Downstream: Send {
    type Rd<'a>: Source
    where
        Self: 'a;
    type Wr<'a>: AsyncWrite + Unpin + Send
    where
        Self: 'a;
    /// Its two directions, to copy concurrently.
    fn halves(&mut self) -> (Self::Rd<'_>, Self::Wr<'_>);
    /// The socket under it (to reset it).
    fn tcp(&self) -> &TcpStream;
}

impl Downstream for TcpStream {
    type Rd<'a> = tokio::net::tcp::ReadHalf<'a>;
    type Wr<'a> = tokio::net::tcp::WriteHalf<'a>;
    fn halves(&mut self) -> (Self::Rd<'_>, Self::Wr<'_>) {
        self.split()
    }
    fn tcp(&self) -> &TcpStream {
        self
    }
}

impl Downstream for tokio_rustls::server::TlsStream<TcpStream> {
    type Rd<'a> = tokio::io::ReadHalf<&'a mut Self>;
    type Wr<'a> = tokio::io::WriteHalf<&'a mut Self>;
    fn halves(&mut self) -> (Self::Rd<'_>, Self::Wr<'_>) {
        tokio::io::split(self)
    }
    fn tcp(&self) -> &TcpStream {
        self.get_ref().0
    }
}

/// Connects to a ready replica: P2C first, then the least loaded untried replica.
///
/// Returns the stream and the load guard held on that replica, or why none was reached.
async fn connect(shared: &Shared) -> Result<(TcpStream, LoadGuard, u32), ConnResult> {
    let snapshot = shared.endpoints.borrow().clone();
    let mut tried = [0u32; MAX_TRIES];
    let mut n = 0;
    // `[leader]` with `route = "leader"`: only the current leader takes connections.
    let ready = match &snapshot.leader {
        Some(l) if l.to_leader(false) => snapshot.leader_only(),
        _ => &snapshot.ready[..],
    };
    while n < MAX_TRIES {
        let Some(ep) = pick(ready, &tried[..n]) else {
            break;
        };
        tried[n] = ep.replica;
        n += 1;
        // Held while connecting too, so concurrent picks see this replica as busier.
        let guard = ep.load.acquire();
        match tokio::time::timeout(shared.connect_timeout, TcpStream::connect(ep.addr)).await {
            Ok(Ok(stream)) => {
                let _ = stream.set_nodelay(true);
                return Ok((stream, guard, ep.replica));
            }
            Ok(Err(e)) => {
                tracing::debug!(replica = ep.replica, addr = %ep.addr, error = %e, "tcp connect failed");
            }
            Err(_) => {
                tracing::debug!(replica = ep.replica, addr = %ep.addr, "tcp connect timed out");
            }
        }
    }
    Err(if n == 0 {
        ConnResult::NoReplica
    } else {
        ConnResult::ConnectFailed
    })
}

/// Power of two choices among the replicas not in `tried`: two distinct random
/// candidates, the one with fewer connections in flight wins (ties to the first drawn).
fn pick<'a>(ready: &'a [Endpoint], tried: &[u32]) -> Option<&'a Endpoint> {
    let mut untried = ready.iter().filter(|e| !tried.contains(&e.replica));
    let n = untried.clone().count();
    match n {
        0 => None,
        1 => untried.next(),
        _ => {
            let a = rand::random_range(0..n);
            let mut b = rand::random_range(0..n - 1);
            if b >= a {
                b += 1;
            }
            let ea = untried.clone().nth(a)?;
            let eb = untried.nth(b)?;
            Some(if eb.load.inflight() < ea.load.inflight() {
                eb
            } else {
                ea
            })
        }
    }
}

/// How the relay ended.
enum End {
    /// Both directions reached end of stream.
    Done,
    /// A direction failed; `reset` when a peer reset its side, so the other side is reset
    /// too.
    Failed { reset: bool },
    /// `limit_data` or `timeout`: closed normally (FIN).
    ToxicClose,
    /// No byte either way for `timeouts.idle`.
    Idle,
    /// `reset_peer`: closed with RST.
    ToxicReset,
}

/// Copies both directions until both end, or a toxic or an error ends the connection.
async fn relay<C: Downstream>(
    shared: &Shared,
    mut client: C,
    mut upstream: TcpStream,
    plan: Plan,
    live: Option<crate::Live>,
) -> ConnResult {
    let opened = Instant::now();
    let activity = Activity::new();
    let end = {
        let (client_rd, client_wr) = client.halves();
        let (upstream_rd, upstream_wr) = upstream.split();
        let m = &shared.metrics;
        let up = Pump::new(plan.up, shared.faults.clone(), &m.upstream_bytes, &activity)
            .run(client_rd, upstream_wr);
        let down = Pump::new(
            plan.down,
            shared.faults.clone(),
            &m.downstream_bytes,
            &activity,
        )
        .run(upstream_rd, client_wr);
        let (mut f_reset, mut f_close) = (shared.faults.clone(), shared.faults.clone());
        // # Cancel safety
        // When a toxic timer wins, the copy futures are dropped with bytes possibly read
        // and not written; that is the point: the connection is being cut.
        tokio::select! {
            r = async { tokio::try_join!(up, down) } => match r {
                Ok(_) => End::Done,
                Err(Stop::Limit) => End::ToxicClose,
                Err(Stop::Io(e)) => {
                    tracing::debug!(error = %e, "tcp relay failed");
                    End::Failed { reset: e.kind() == std::io::ErrorKind::ConnectionReset }
                }
            },
            () = toxic_timer(plan.reset, opened, &mut f_reset) => End::ToxicReset,
            () = toxic_timer(plan.close, opened, &mut f_close) => End::ToxicClose,
            () = activity.idle_for(shared.idle) => End::Idle,
            // A connection that drew an injected toxic is closed when the injection ends:
            // the fault must not outlive its experiment on a pooled connection.
            () = async {
                match live {
                    Some(mut live) => crate::injected::ended(&mut live).await,
                    None => std::future::pending().await,
                }
            } => End::ToxicClose,
        }
    };
    match end {
        End::Done => ConnResult::Ok,
        End::Failed { reset } => {
            if reset {
                let _ = client.tcp().set_zero_linger();
                let _ = upstream.set_zero_linger();
            }
            ConnResult::Error
        }
        End::ToxicClose => ConnResult::Toxic,
        End::Idle => ConnResult::Idle,
        End::ToxicReset => {
            // SO_LINGER 0: closing sends RST and discards unsent data.
            let _ = client.tcp().set_zero_linger();
            let _ = upstream.set_zero_linger();
            ConnResult::Toxic
        }
    }
    // Both sockets close when dropped here.
}

/// Resolves `after` the connection opened (Toxiproxy's reset_peer counts from the first
/// data instead), as soon as toxics are enabled from then on; never for `None`. So a
/// deadline that passes while the kill switch is off fires when it is turned back on.
///
/// # Cancel safety
/// Cancel safe.
async fn toxic_timer(after: Option<Duration>, opened: Instant, faults: &mut watch::Receiver<bool>) {
    let Some(after) = after else {
        return std::future::pending().await;
    };
    tokio::time::sleep_until(crate::conn::after(opened, after)).await;
    faults_on(faults).await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use bus::Load;

    fn eps(n: u32) -> Vec<Endpoint> {
        (0..n)
            .map(|i| Endpoint {
                replica: i,
                addr: ([127, 0, 0, 1], 1000 + i as u16).into(),
                revision: 1,
                ready_since: std::time::Instant::now(),
                load: Arc::new(Load::default()),
            })
            .collect()
    }

    #[test]
    fn p2c_prefers_the_less_loaded_and_skips_tried() {
        let ready = eps(2);
        let _busy: Vec<_> = (0..3).map(|_| ready[0].load.acquire()).collect();
        for _ in 0..50 {
            assert_eq!(pick(&ready, &[]).unwrap().replica, 1);
        }
        assert_eq!(pick(&ready, &[1]).unwrap().replica, 0);
        assert!(pick(&ready, &[0, 1]).is_none());
        assert!(pick(&[], &[]).is_none());
    }

    #[test]
    fn p2c_reaches_every_replica() {
        let ready = eps(3);
        let mut seen = [0u32; 3];
        for _ in 0..300 {
            seen[pick(&ready, &[]).unwrap().replica as usize] += 1;
        }
        assert!(seen.iter().all(|&c| c > 30), "{seen:?}");
        // Among untried replicas only.
        for _ in 0..50 {
            assert_eq!(pick(&ready, &[0, 2]).unwrap().replica, 1);
            assert_ne!(pick(&ready, &[0]).unwrap().replica, 0);
        }
    }
}
