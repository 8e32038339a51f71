//! Orchestration: the process and oci drivers, probes, the replica lifecycle and the supervisor.
//!
//! Architecture invariant: `runtime` knows nothing about HTTP routing. It publishes which
//! replicas are ready as [`bus::Endpoints`] snapshots and everything that happens as
//! [`bus::Event`]s; the proxy and observability layers subscribe.

mod driver;
mod handle;
mod leader;
mod logs;
mod metrics;
mod notify;
mod probe;
mod redact;
mod reload;
mod repair;
mod replica;
mod resources;
mod restarts;
mod revisions;
mod signal;
mod supervisor;
pub mod warm;

pub use driver::init as container_init;
pub use driver::{Identity, Processes, command, free_port, netns, oci};
pub use logs::{LogLine, Logs, Stream};
pub use metrics::Metrics;
pub use redact::Redactor;
pub use reload::Reloaded;
pub use repair::ReplaceError;
pub use resources::{CgroupSupport, limits, usage};
pub use revisions::{RevisionReplica, RevisionView};
pub use supervisor::{ControlError, Options, ReplicaStatus, Role, ServiceStatus, Supervisor};

/// Where a replica is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplicaState {
    /// Waiting for the services it depends on to be ready.
    Pending,
    /// Spawned; the startup probe has not passed yet.
    Starting,
    /// Startup passed; liveness and readiness probes run.
    Running,
    /// Being drained and stopped.
    Stopping,
    /// Waiting out the backoff before a restart.
    Backoff,
    /// Waiting out the backoff, after dying young several times in a row.
    CrashLooping,
    /// Ended and the restart policy says to leave it down.
    Exited,
    /// Stopped on request.
    Stopped,
    /// Killed by the kernel's OOM killer and left down (`on_oom = "stop"`).
    OomKilled,
}

impl ReplicaState {
    pub const ALL: [ReplicaState; 9] = [
        ReplicaState::Pending,
        ReplicaState::Starting,
        ReplicaState::Running,
        ReplicaState::Stopping,
        ReplicaState::Backoff,
        ReplicaState::CrashLooping,
        ReplicaState::Exited,
        ReplicaState::Stopped,
        ReplicaState::OomKilled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ReplicaState::Pending => "pending",
            ReplicaState::Starting => "starting",
            ReplicaState::Running => "running",
            ReplicaState::Stopping => "stopping",
            ReplicaState::Backoff => "backoff",
            ReplicaState::CrashLooping => "crash-looping",
            ReplicaState::Exited => "exited",
            ReplicaState::Stopped => "stopped",
            ReplicaState::OomKilled => "oom-killed",
        }
    }
}
