use std::time::Duration;

/// How one proxied request ended, as the client saw it. The proxy reports one per request;
/// observability (SLIs, golden signals) consumes them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestOutcome<'a> {
    /// The service the request arrived at.
    pub service: &'a str,
    /// The status sent to the client (bulwark's own 502/503/504/429 included).
    pub status: u16,
    /// From request received to response headers sent.
    pub duration: Duration,
    /// Set when bulwark itself produced the answer rather than a replica.
    pub local: Option<LocalReason>,
    /// The revision of the replica that answered, when one did.
    pub revision: Option<u32>,
}

/// Why bulwark answered by itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LocalReason {
    /// No replica was ready (503).
    NoReplica,
    /// Every try failed to connect, was reset, or ended without a response (502).
    UpstreamFailed,
    /// The request (or a try) ran out of time (504).
    Timeout,
    /// Load shedding: over the in-flight limit or queue (503 with Retry-After).
    Shed,
    /// Over a rate limit (429).
    RateLimited,
    /// An injected fault answered.
    Injected,
    /// The client's request was malformed (4xx).
    BadRequest,
    /// The external authorization check said no; its answer went to the client.
    AuthDenied,
    /// The external authorization check could not decide and the service fails closed
    /// (503).
    AuthUnavailable,
}

/// Receives request outcomes on the proxy's hot path: implementations must be cheap
/// (atomics, short critical sections) and must not block.
pub trait OutcomeSink: Send + Sync + 'static {
    /// Takes note of one finished request; called once per request, on the hot path.
    fn record(&self, outcome: &RequestOutcome<'_>);
}
