//! Cluster mode on etcd, first layer: where things live in etcd ([`keys`]), a connection
//! that fails fast and names its URLs ([`connect`]), a node's registration under a lease
//! ([`Registration`]), the watch of the cluster that turns etcd's events into alive/lost
//! nodes and stack revisions ([`ClusterWatch`], [`ClusterState`]), and the applied stack
//! with its revisions ([`stack`]), the scheduler's election, placements and published
//! endpoints ([`schedule`]), and the cluster-wide leader election of `[leader]` services
//! with fencing tokens ([`EtcdElection`]).
//!
//! Architecture invariants: etcd is the only shared state between agents; nothing here
//! starts or stops a replica (later layers read [`ClusterState`] and decide). Every call to
//! etcd is bounded by a timeout, so an unreachable cluster is an error, never a hang. What
//! a node does while it cannot reach etcd is written on [`Connection`]: it keeps what it
//! runs and starts nothing.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod connect;
mod election;
mod error;
pub mod keys;
mod node;
mod registration;
pub mod schedule;
pub mod stack;
mod watch;

pub use connect::{Etcd, connect};
pub use election::EtcdElection;
pub use error::Error;
pub use keys::Keys;
pub use node::{Capacity, NodeInfo, NodeRecord, NodeState, list_nodes};
pub use registration::{Connection, Registration, RegistrationOptions};
pub use watch::{
    ClusterEndpoints, ClusterEvent, ClusterState, ClusterWatch, Placements, SchedulerKey,
};

/// Wall-clock milliseconds since the Unix epoch (0 for a clock before 1970).
pub(crate) fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}
