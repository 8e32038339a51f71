//! TLS passed through by SNI (`[expose.tls] passthrough = true`): one listener per address
//! serves every TCP service that passes TLS through on it. It reads the client's hello
//! (rustls parses it; nothing is answered and nothing decrypted), picks the service that
//! claims its SNI name (an exact name first, then a wildcard, else the address's default),
//! and relays every byte, the hello included, to a replica of that service as its own TCP
//! mode would. The replicas hold the certificates and end the TLS.
//!
//! Invariants: a connection holds at most [`MAX_HELLO`] bytes and one of the address's
//! hello permits until its hello is whole, and is closed when the hello is not whole
//! within the longest `timeouts.header_read` of the address's services; a hello nobody
//! claims closes the connection and counts `sni_unclaimed` under the address. Once
//! picked, a connection is the service's: its connection limit, metrics, toxics and
//! idle timeout apply.

use std::io;
use std::sync::Arc;
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use spec::SniName;
use tokio::net::TcpStream;
use tokio::sync::{Semaphore, watch};

use super::{ConnResult, Shared, Start, accept_loop, connection};

/// Most bytes read for a client's hello, its record headers included: a hello of 16 KiB
/// (one full TLS record; browsers send under 2 KiB, post-quantum key shares included).
pub const MAX_HELLO: usize = 16 * 1024 + 5 * 4;

/// The services of one address, swapped whole when a reload changes them.
pub(crate) struct Routes {
    /// Exact names first, then wildcards; each with its service's index in `services`.
    names: Vec<(SniName, usize)>,
    default: Option<usize>,
    services: Vec<Route>,
    /// The longest `timeouts.header_read` of the services: the hello must be whole by then.
    hello_deadline: Duration,
    /// Connections still reading their hello: at most the services' `max_connections`
    /// added up.
    hellos: Arc<Semaphore>,
}

/// One service of an address.
pub(crate) struct Route {
    shared: Arc<Shared>,
    /// Its `limits.max_connections`, shared with the address's other workers.
    slots: Arc<Semaphore>,
}

/// A service that passes TLS through on an address, as the edge knows it.
pub(crate) struct Member {
    pub service: String,
    pub expose: spec::Expose,
    pub endpoints: watch::Receiver<Arc<bus::Endpoints>>,
    pub toxics: watch::Receiver<Vec<spec::Toxic>>,
    /// Its connection limit (kept across reloads while `max_connections` is unchanged).
    pub slots: Arc<Semaphore>,
}

impl Routes {
    /// The routes of `members`; `faults` and `injected` are the stack's toxic switches.
    pub(crate) fn new(
        members: Vec<Member>,
        metrics: &super::TcpMetrics,
        faults: &watch::Receiver<bool>,
        injected: &Arc<crate::Injected>,
    ) -> Routes {
        let mut names = Vec::new();
        let mut default = None;
        let mut hello_deadline = Duration::ZERO;
        let mut hellos = 0usize;
        let mut services = Vec::with_capacity(members.len());
        for (i, m) in members.into_iter().enumerate() {
            if let Some(pass) = &m.expose.passthrough {
                names.extend(pass.sni.iter().map(|n| (n.clone(), i)));
                if pass.default {
                    default = default.or(Some(i));
                }
            }
            hello_deadline = hello_deadline.max(m.expose.timeouts.header_read);
            hellos = hellos.saturating_add(m.expose.limits.max_connections as usize);
            services.push(Route {
                shared: Arc::new(Shared {
                    metrics: metrics.for_service(&m.service),
                    endpoints: m.endpoints,
                    connect_timeout: m.expose.timeouts.connect,
                    idle: m.expose.timeouts.idle,
                    toxics: m.toxics,
                    faults: faults.clone(),
                    service: m.service,
                    injected: injected.clone(),
                }),
                slots: m.slots,
            });
        }
        // Stable: exact names before wildcards, each in the order written.
        names.sort_by_key(|(n, _)| matches!(n, SniName::Wildcard(_)));
        Routes {
            names,
            default,
            services,
            hello_deadline,
            hellos: Arc::new(Semaphore::new(hellos.min(Semaphore::MAX_PERMITS))),
        }
    }

    /// The service for a hello naming `name` (`None`: no SNI).
    fn pick(&self, name: Option<&str>) -> Option<&Route> {
        claimant(&self.names, self.default, name).map(|i| &self.services[i])
    }
}

/// Who takes a hello naming `name`: the first of `names` (exact names first) that matches,
/// else `default`.
fn claimant(
    names: &[(SniName, usize)],
    default: Option<usize>,
    name: Option<&str>,
) -> Option<usize> {
    name.and_then(|n| names.iter().find(|(p, _)| p.matches(n)))
        .map(|(_, i)| *i)
        .or(default)
}

/// The policy events an address counts under its own name (no service claimed them).
#[derive(Clone)]
pub(crate) struct Events {
    /// A hello without SNI or with a name nobody claims, and no default.
    pub unclaimed: Counter,
    /// No whole TLS hello within the deadline and [`MAX_HELLO`] bytes.
    pub hello_failed: Counter,
    /// Over the hello permits: closed at once.
    pub shed: Counter,
}

/// Serves one address's socket until `shutdown`, then drains like [`super::serve_tcp`].
pub(crate) async fn serve_sni(
    socket: tokio::net::TcpListener,
    routes: watch::Receiver<Arc<Routes>>,
    events: Events,
    shutdown: watch::Receiver<bool>,
    drain: Duration,
) {
    let name = socket
        .local_addr()
        .map_or_else(|_| "tls passthrough".to_owned(), |a| a.to_string());
    let accepted = move |client: TcpStream| {
        let routes = routes.borrow().clone();
        let Ok(permit) = routes.hellos.clone().try_acquire_owned() else {
            events.shed.inc();
            return None;
        };
        let events = events.clone();
        Some(async move {
            let hello = tokio::time::timeout(routes.hello_deadline, read_hello(&client)).await;
            drop(permit);
            let hello = match hello {
                Ok(Ok(hello)) => hello,
                Ok(Err(e)) => {
                    tracing::debug!(error = %e, "TLS hello refused");
                    events.hello_failed.inc();
                    return;
                }
                Err(_) => {
                    tracing::debug!("TLS hello not whole in time");
                    events.hello_failed.inc();
                    return;
                }
            };
            let Some(route) = routes.pick(hello.name.as_deref()) else {
                tracing::debug!(sni = ?hello.name, "no service claims this TLS hello's name");
                events.unclaimed.inc();
                return;
            };
            let Ok(slot) = route.slots.clone().try_acquire_owned() else {
                route.shared.metrics.open().set(ConnResult::OverLimit);
                return;
            };
            connection(&route.shared, client, Start::Hello(hello.bytes)).await;
            drop(slot);
        })
    };
    accept_loop(socket, &name, shutdown, drain, accepted).await;
}

/// A client's hello: every byte read (to send on untouched) and its SNI name.
pub(crate) struct Hello {
    pub bytes: Vec<u8>,
    pub name: Option<String>,
}

/// Why no hello was read.
#[derive(Debug, thiserror::Error)]
pub enum HelloError {
    #[error("reading the hello: {0}")]
    Io(#[from] io::Error),
    #[error("the client closed before its hello was whole")]
    Closed,
    #[error("no whole TLS hello within {MAX_HELLO} bytes")]
    TooLong,
    #[error("not a TLS client hello: {0}")]
    Invalid(rustls::Error),
}

/// Reads from `client` until its hello is whole.
///
/// # Cancel safety
/// Cancel safe, as far as it goes: dropped, it loses what it read (the connection is then
/// closed).
async fn read_hello(client: &TcpStream) -> Result<Hello, HelloError> {
    let mut reader = HelloReader::default();
    let mut chunk = [0u8; 4096];
    loop {
        client.readable().await?;
        let want = reader.room().min(chunk.len());
        let n = match client.try_read(&mut chunk[..want]) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(e.into()),
        };
        if let Some(hello) = reader.feed(&chunk[..n])? {
            return Ok(hello);
        }
    }
}

/// A hello read piece by piece, bounded by [`MAX_HELLO`]: the bytes kept and rustls'
/// parser fed with them.
#[derive(Default)]
pub struct HelloReader {
    bytes: Vec<u8>,
    acceptor: rustls::server::Acceptor,
}

impl HelloReader {
    /// How many more bytes may be fed.
    pub fn room(&self) -> usize {
        MAX_HELLO - self.bytes.len()
    }

    /// Takes the next bytes read (empty: the client closed). `Ok(None)`: more are
    /// needed. The bytes past [`HelloReader::room`] are refused (`TooLong`), unread.
    pub fn feed(&mut self, mut chunk: &[u8]) -> Result<Option<Hello>, HelloError> {
        if chunk.is_empty() {
            return Err(HelloError::Closed);
        }
        if chunk.len() > self.room() {
            return Err(HelloError::TooLong);
        }
        self.bytes.extend_from_slice(chunk);
        while !chunk.is_empty() {
            if self.acceptor.read_tls(&mut chunk)? == 0 {
                break;
            }
        }
        match self.acceptor.accept() {
            Ok(None) if self.room() == 0 => Err(HelloError::TooLong),
            Ok(None) => Ok(None),
            Ok(Some(accepted)) => Ok(Some(Hello {
                name: accepted.client_hello().server_name().map(str::to_owned),
                bytes: std::mem::take(&mut self.bytes),
            })),
            Err((e, _)) => Err(HelloError::Invalid(e)),
        }
    }
}

#[cfg(test)]
mod tests;
