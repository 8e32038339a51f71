//! Edge and balancer: accepts HTTP/1.1 and HTTP/2 (prior knowledge) on a service's
//! `expose.listen` address and forwards each request to a ready replica, applying the
//! service's resilience policies (from the pure `policy` crate).
//!
//! Architecture invariant: `proxy` never starts or signals a process. It learns which
//! replicas are ready only from the [`bus::Endpoints`] snapshots it is given, holds a
//! [`bus::LoadGuard`] for every request in flight so the supervisor can drain a replica,
//! and reports ejections as events (and restart wishes on a channel) instead of acting.
//!
//! Life of a request: accept (connection limit) → fault injection → rate limit →
//! external authorization (`[expose.auth]`, fail closed or open as declared) →
//! bulkhead (in-flight limit, bounded queue) → route (header match, weighted split) →
//! pick a replica (balancer; ejected replicas and open breakers skipped unless in panic
//! mode) → forward on a connection from its pool (`pool.rs`) (per-try timeout, hedging) → on a retriable
//! failure, within the budget and the deadline, back off and try another replica →
//! stream the response back; record the result for passive health.

mod auth;
mod body;
mod conn;
pub mod edge;
mod fallback;
mod forward;
mod headers;
mod injected;
mod metrics;
mod pool;
mod server;
mod service;
mod stale;
mod switches;
mod tcp;
mod tls;
mod tunnel;
mod upstream_tls;
mod workers;

pub use edge::Listeners;
pub use forward::{Hooks, InjectedReset, ServiceStats};
pub use injected::{Injected, Injection, Live};
pub use metrics::ProxyMetrics;
pub use server::{ServiceProxyHandle, serve};
pub use service::ReplicaStats;
pub use switches::{Persist, SWITCHES_HEADER, SetError, SwitchStatus, Switchboard};
pub use tcp::{TcpListener as TcpExpose, TcpMetrics, serve_tcp};
pub use tls::{TlsError, TlsListener};
pub use workers::Workers;
