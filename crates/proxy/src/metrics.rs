use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ServiceLabels {
    service: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StatusLabels {
    service: String,
    status_class: &'static str,
}

/// The proxy's metric families. Per-service handles are resolved once per listener, so
/// the request path only touches atomics.
#[derive(Clone)]
pub struct ProxyMetrics {
    requests: Family<StatusLabels, Counter>,
    duration: Family<ServiceLabels, Histogram>,
    retries: Family<ServiceLabels, Counter>,
    inflight: Family<ServiceLabels, Gauge>,
    events: Family<EventLabels, Counter>,
    replica_requests: Family<ReplicaStatusLabels, Counter>,
    replica_state: Family<ReplicaStateLabels, Gauge>,
    fallbacks: Family<FallbackLabels, Counter>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FallbackLabels {
    service: String,
    /// `static`, `service`, `stale`.
    kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReplicaStatusLabels {
    service: String,
    replica: String,
    status_class: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReplicaStateLabels {
    service: String,
    replica: String,
    /// `breaker_open`, `ejected`.
    state: &'static str,
}

/// One replica's counters, resolved when it joins so recording is atomics only.
pub(crate) struct ReplicaMetrics {
    by_class: [Counter; 6],
    pub breaker_open: Gauge,
    pub ejected: Gauge,
}

impl ReplicaMetrics {
    /// Index 0 counts tries that got no response (connect failure, reset, timeout).
    pub fn tried(&self, status: Option<u16>) {
        let i = status.map_or(0, |s| (s / 100).clamp(1, 5) as usize);
        self.by_class[i].inc();
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EventLabels {
    service: String,
    event: &'static str,
}

impl ProxyMetrics {
    pub fn register(registry: &mut Registry) -> Self {
        let m = ProxyMetrics {
            requests: Family::default(),
            duration: Family::new_with_constructor(|| {
                Histogram::new([
                    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                    10.0,
                ])
            }),
            retries: Family::default(),
            inflight: Family::default(),
            events: Family::default(),
            replica_requests: Family::default(),
            replica_state: Family::default(),
            fallbacks: Family::default(),
        };
        registry.register(
            "bulwark_proxy_requests",
            "Requests answered by the proxy, by status class",
            m.requests.clone(),
        );
        registry.register(
            // OpenTelemetry's `http.server.request.duration`, in seconds.
            "http_server_request_duration_seconds",
            "Time from request received to response headers sent",
            m.duration.clone(),
        );
        registry.register(
            "bulwark_proxy_retries",
            "Requests sent again to another replica after a failed try",
            m.retries.clone(),
        );
        registry.register(
            "bulwark_proxy_inflight_requests",
            "Requests the proxy is working on (saturation)",
            m.inflight.clone(),
        );
        registry.register(
            "bulwark_proxy_replica_requests",
            "Tries sent to each replica by status class (`none`: no response)",
            m.replica_requests.clone(),
        );
        registry.register(
            "bulwark_proxy_replica_state",
            "1 while a replica's breaker is open or it is ejected",
            m.replica_state.clone(),
        );
        registry.register(
            "bulwark_fallbacks",
            "Answers given by a service's fallback because no replica could answer or a switch was off",
            m.fallbacks.clone(),
        );
        registry.register(
            "bulwark_proxy_policy_events",
            "Policy decisions: retry budget exhausted, ejections, rate-limited, shed, injected faults, hedges, gRPC failures, failed TLS handshakes, TLS hellos that named no service (sni_unclaimed) or did not arrive whole (tls_hello_failed), under the listener's address, external authorization denied, unavailable (fail closed) or failed open",
            m.events.clone(),
        );
        m
    }

    /// One policy event's counter of `service` (for the TCP listeners, which have no
    /// [`ServiceMetrics`]; an SNI listener counts what no service claimed under its address).
    pub(crate) fn event(&self, service: &str, event: &'static str) -> Counter {
        self.events
            .get_or_create(&EventLabels {
                service: service.to_owned(),
                event,
            })
            .clone()
    }

    pub(crate) fn for_replica(&self, service: &str, replica: u32) -> ReplicaMetrics {
        let r = replica.to_string();
        let class = |c| {
            self.replica_requests
                .get_or_create(&ReplicaStatusLabels {
                    service: service.to_owned(),
                    replica: r.clone(),
                    status_class: c,
                })
                .clone()
        };
        let state = |st| {
            self.replica_state
                .get_or_create(&ReplicaStateLabels {
                    service: service.to_owned(),
                    replica: r.clone(),
                    state: st,
                })
                .clone()
        };
        ReplicaMetrics {
            by_class: [
                class("none"),
                class("1xx"),
                class("2xx"),
                class("3xx"),
                class("4xx"),
                class("5xx"),
            ],
            breaker_open: state("breaker_open"),
            ejected: state("ejected"),
        }
    }

    pub(crate) fn for_service(&self, service: &str) -> ServiceMetrics {
        let s = || service.to_owned();
        let class = |c| {
            self.requests
                .get_or_create(&StatusLabels {
                    service: s(),
                    status_class: c,
                })
                .clone()
        };
        let event = |e: &'static str| {
            self.events
                .get_or_create(&EventLabels {
                    service: s(),
                    event: e,
                })
                .clone()
        };
        ServiceMetrics {
            by_class: [
                class("1xx"),
                class("2xx"),
                class("3xx"),
                class("4xx"),
                class("5xx"),
            ],
            duration: self
                .duration
                .get_or_create(&ServiceLabels { service: s() })
                .clone(),
            retries: self
                .retries
                .get_or_create(&ServiceLabels { service: s() })
                .clone(),
            inflight: self
                .inflight
                .get_or_create(&ServiceLabels { service: s() })
                .clone(),
            budget_exhausted: event("retry_budget_exhausted"),
            ejections: event("ejection"),
            rate_limited: event("rate_limited"),
            shed: event("shed"),
            injected: event("fault_injected"),
            hedges: event("hedge"),
            grpc_failures: event("grpc_failure"),
            tls_failed: event("tls_handshake_failed"),
            auth_denied: event("auth_denied"),
            auth_unavailable: event("auth_unavailable"),
            auth_failed_open: event("auth_failed_open"),
            fallback_static: self.fallback(service, "static"),
            fallback_service: self.fallback(service, "service"),
            fallback_stale: self.fallback(service, "stale"),
        }
    }

    fn fallback(&self, service: &str, kind: &'static str) -> Counter {
        self.fallbacks
            .get_or_create(&FallbackLabels {
                service: service.to_owned(),
                kind,
            })
            .clone()
    }
}

pub(crate) struct ServiceMetrics {
    by_class: [Counter; 5],
    pub duration: Histogram,
    pub retries: Counter,
    pub inflight: Gauge,
    pub budget_exhausted: Counter,
    pub ejections: Counter,
    pub rate_limited: Counter,
    pub shed: Counter,
    pub injected: Counter,
    pub hedges: Counter,
    pub grpc_failures: Counter,
    /// TLS handshakes that failed or did not finish within `timeouts.header_read` (a
    /// connection closed before any handshake, as by a TCP health check, counts too).
    pub tls_failed: Counter,
    /// `[expose.auth]` said no (its answer went to the client).
    pub auth_denied: Counter,
    /// `[expose.auth]` did not decide and `on_error = "deny"`: 503 (fail closed).
    pub auth_unavailable: Counter,
    /// `[expose.auth]` did not decide and `on_error = "allow"`: forwarded (fail open).
    pub auth_failed_open: Counter,
    pub fallback_static: Counter,
    pub fallback_service: Counter,
    pub fallback_stale: Counter,
}

impl ServiceMetrics {
    pub fn answered(&self, status: u16) {
        let i = (status / 100).clamp(1, 5) as usize - 1;
        self.by_class[i].inc();
    }
}
