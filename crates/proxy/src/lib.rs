//! Edge and balancer: accepts HTTP/1.1 (and HTTP/2 with prior knowledge) on a service's
//! `expose.listen` address and forwards each request to a ready replica.
//!
//! Architecture invariant: `proxy` never starts or signals a process. It learns which
//! replicas are ready only from the [`bus::Endpoints`] snapshots it is given, and it holds a
//! [`bus::LoadGuard`] for every request in flight so the supervisor can drain a replica.
//!
//! Life of a request: accept → pick a ready replica (P2C over in-flight, or round robin)
//! → forward on a pooled keep-alive connection → on a failure that is safe to retry, try
//! another replica (at most [`MAX_ATTEMPTS`]) → stream the response back.

mod balance;
mod body;
mod forward;
mod metrics;
mod server;

pub use metrics::ProxyMetrics;
pub use server::{Listener, serve};

/// Tries per request, each on a different replica.
pub const MAX_ATTEMPTS: usize = 3;
/// Request bodies up to this size are buffered so the request can be retried.
pub const REPLAY_LIMIT: usize = 64 * 1024;
