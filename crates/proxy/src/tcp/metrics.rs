use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::{Registry, Unit};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ServiceLabels {
    service: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabels {
    service: String,
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DirectionLabels {
    service: String,
    direction: &'static str,
}

/// How a client connection to the TCP proxy ended (the `result` label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ConnResult {
    /// Both directions reached end of stream.
    Ok,
    /// An I/O error on either side (a reset, a broken pipe).
    Error,
    /// No replica was ready: the client connection was closed at once.
    NoReplica,
    /// Every replica tried refused or timed out.
    ConnectFailed,
    /// Closed by a toxic (reset_peer, timeout or limit_data).
    Toxic,
    /// Still open when the drain deadline passed at shutdown.
    Aborted,
    /// No byte either way for `timeouts.idle`.
    Idle,
    /// Closed at once: `limits.max_connections` were already open.
    OverLimit,
    /// The TLS handshake of a listener that terminates TLS failed or did not end within
    /// `timeouts.header_read`.
    TlsFailed,
}

impl ConnResult {
    const ALL: [ConnResult; 9] = [
        ConnResult::Ok,
        ConnResult::Error,
        ConnResult::NoReplica,
        ConnResult::ConnectFailed,
        ConnResult::Toxic,
        ConnResult::Aborted,
        ConnResult::Idle,
        ConnResult::OverLimit,
        ConnResult::TlsFailed,
    ];

    fn label(self) -> &'static str {
        match self {
            ConnResult::Ok => "ok",
            ConnResult::Error => "error",
            ConnResult::NoReplica => "no_replica",
            ConnResult::ConnectFailed => "connect_failed",
            ConnResult::Toxic => "toxic",
            ConnResult::Aborted => "aborted",
            ConnResult::Idle => "idle",
            ConnResult::OverLimit => "over_limit",
            ConnResult::TlsFailed => "tls_failed",
        }
    }
}

/// The TCP proxy's metric families:
///
/// - `bulwark_tcp_connections_total{service,result}`: client connections by how they ended
///   (`ok`, `error`, `no_replica`, `connect_failed`, `toxic`, `aborted`, `idle`,
///   `over_limit`, `tls_failed`);
/// - `bulwark_tcp_bytes_total{service,direction}`: bytes relayed, `upstream` (client to
///   replica) and `downstream`;
/// - `bulwark_tcp_active_connections{service}`: client connections open now.
///
/// Invariant: per-service handles are resolved once per listener, so the data path only
/// touches atomics.
#[derive(Clone, Debug)]
pub struct TcpMetrics {
    connections: Family<ResultLabels, Counter>,
    bytes: Family<DirectionLabels, Counter>,
    active: Family<ServiceLabels, Gauge>,
}

impl TcpMetrics {
    pub fn register(registry: &mut Registry) -> Self {
        let m = TcpMetrics {
            connections: Family::default(),
            bytes: Family::default(),
            active: Family::default(),
        };
        registry.register(
            "bulwark_tcp_connections",
            "Client connections accepted by the TCP proxy, by how they ended",
            m.connections.clone(),
        );
        registry.register_with_unit(
            "bulwark_tcp",
            "Bytes relayed by the TCP proxy, by direction (upstream: client to replica)",
            Unit::Bytes,
            m.bytes.clone(),
        );
        registry.register(
            "bulwark_tcp_active_connections",
            "Client connections the TCP proxy holds open",
            m.active.clone(),
        );
        m
    }

    /// Resolves every handle one listener needs. Creates the series at zero, so a
    /// dashboard sees them before the first connection.
    pub(crate) fn for_service(&self, service: &str) -> ServiceTcpMetrics {
        let bytes = |direction| {
            self.bytes
                .get_or_create(&DirectionLabels {
                    service: service.to_owned(),
                    direction,
                })
                .clone()
        };
        ServiceTcpMetrics {
            results: ConnResult::ALL.map(|r| {
                self.connections
                    .get_or_create(&ResultLabels {
                        service: service.to_owned(),
                        result: r.label(),
                    })
                    .clone()
            }),
            upstream_bytes: bytes("upstream"),
            downstream_bytes: bytes("downstream"),
            active: self
                .active
                .get_or_create(&ServiceLabels {
                    service: service.to_owned(),
                })
                .clone(),
        }
    }
}

/// One listener's resolved handles (clones share the atomics of the family's series).
#[derive(Debug)]
pub(crate) struct ServiceTcpMetrics {
    /// Indexed by `ConnResult as usize` (same order as [`ConnResult::ALL`]).
    results: [Counter; 9],
    pub upstream_bytes: Counter,
    pub downstream_bytes: Counter,
    pub active: Gauge,
}

impl ServiceTcpMetrics {
    /// Counts the connection as open until the returned guard records how it ended.
    pub fn open(&self) -> Tracked<'_> {
        self.active.inc();
        Tracked {
            metrics: self,
            result: ConnResult::Aborted,
        }
    }
}

/// One open client connection in the metrics.
///
/// Invariant: `active` was incremented once for this guard and is decremented once, on
/// drop, together with one increment of `connections_total{result}`. A connection task
/// aborted at the end of the drain therefore still counts, as `aborted`.
pub(crate) struct Tracked<'a> {
    metrics: &'a ServiceTcpMetrics,
    result: ConnResult,
}

impl Tracked<'_> {
    pub fn set(&mut self, result: ConnResult) {
        self.result = result;
    }
}

impl Drop for Tracked<'_> {
    fn drop(&mut self) {
        self.metrics.results[self.result as usize].inc();
        self.metrics.active.dec();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn results_index_their_counters() {
        for (i, r) in ConnResult::ALL.into_iter().enumerate() {
            assert_eq!(r as usize, i, "{r:?}");
        }
        let mut registry = Registry::default();
        let m = TcpMetrics::register(&mut registry).for_service("s");
        drop(m.open()); // never told how it ended: counted as aborted
        let mut t = m.open();
        t.set(ConnResult::NoReplica);
        drop(t);
        assert_eq!(m.results[ConnResult::Aborted as usize].get(), 1);
        assert_eq!(m.results[ConnResult::NoReplica as usize].get(), 1);
        assert_eq!(m.active.get(), 0);
    }
}
