//! The seams between layers: typed events on one bus, and endpoint snapshots.
//!
//! Architecture invariant: this crate knows nothing of processes or HTTP. `runtime`
//! publishes, everything else subscribes; endpoints flow from `runtime` to `proxy` through a
//! `watch` channel of immutable snapshots (like Kubernetes EndpointSlices).
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod endpoints;
mod event;
mod outcome;

pub use endpoints::{
    Endpoint, Endpoints, LeaderRouting, Leading, Load, LoadGuard, REMOTE_REPLICA, Split,
};
pub use event::{Bus, Event, EventKind, Exit, Follower, ProbeKind, Subscription};
pub use outcome::{LocalReason, OutcomeSink, RequestOutcome};

/// Wall-clock milliseconds since the Unix epoch, the time every event, incident and record
/// carries (0 for a clock before 1970).
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}
