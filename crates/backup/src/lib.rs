//! Backups that are proven: scheduled snapshots in restic's repository format, read back
//! as they are written, verified on a schedule, restore-drilled into scratch replicas, with
//! RPO and RTO measured and alerted on.
//!
//! Stages of one backup run, each in its own module: hooks ([`hooks`]) around the
//! snapshot, the snapshot and its read-back ([`repo`], through rustic_core), retention
//! (the pure rule in `policy::retention`), and the record kept in bulwark's journal
//! ([`record`]). Verification and drills ([`drill`]) work on the same repository, one
//! operation at a time ([`engine`]); [`schedule`] runs them on their cron schedules and
//! watches the RPO.
//!
//! Architecture invariant: this crate reaches the rest of bulwark only through [`Host`]
//! (the service's context, the journal's consistent copy, alerts), so it knows nothing
//! of the supervisor's or the observability plane's types.

mod drill;
mod engine;
mod hooks;
mod metrics;
mod record;
mod repo;
mod schedule;

use std::path::{Path, PathBuf};
use std::sync::Arc;

pub use engine::{Backups, DrillReport, RunReport, SnapshotView, Status, VerifyReport};
pub use record::{DrillRecord, Mark, Record, RunRecord, VerifyRecord};
pub use repo::in_part;

/// What a backup needs from the rest of bulwark.
pub trait Host: Send + Sync + 'static {
    /// The service's current settings, and the address and port of a running replica
    /// (for `{addr}` and `{port}` in hooks), if one runs.
    fn service(&self, name: &str) -> Option<(Arc<spec::Service>, Option<std::net::SocketAddr>)>;
    /// Writes a consistent copy of bulwark's journal to `dest`.
    fn export_state(&self, dest: &Path) -> Result<(), String>;
    /// Raises (`summary` given) or resolves (`None`) alert `alert` about backup `backup`.
    fn alert(&self, backup: &str, alert: &str, urgency: Urgency, summary: Option<String>);
    /// This binary, for `{bulwark}`.
    fn bulwark(&self) -> PathBuf;
}

/// How soon a person should look.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Urgency {
    /// Now: data may be lost (corruption, RPO exceeded).
    Page,
    /// Soon: recovery is slower or less certain than promised.
    Ticket,
}

/// What went wrong in a backup operation; each names the backup and what to do.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No `[[backups]]` entry has this name.
    #[error("no backup named `{0}`; `bulwark backup list` shows them")]
    Unknown(String),
    /// The password file could not be used.
    #[error("cannot use the password file {path}: {detail}")]
    Password {
        /// The file.
        path: PathBuf,
        /// Why.
        detail: String,
    },
    /// rustic_core failed.
    #[error("cannot {op} the repository {path}: {detail}")]
    Repository {
        /// The repository.
        path: PathBuf,
        /// What was being done.
        op: &'static str,
        /// rustic's message.
        detail: String,
    },
    /// A hook failed with `on_error = "fail"`.
    #[error("the {which} hook failed: {detail}")]
    Hook {
        /// `pre` or `post`.
        which: &'static str,
        /// Its exit and the tail of its output.
        detail: String,
    },
    /// The service is not in the stack any more, or runs no replica the hook needs.
    #[error("{0}")]
    Service(String),
    /// bulwark's journal could not be copied.
    #[error("cannot copy bulwark's journal: {0}")]
    State(String),
    /// There is no snapshot to work on.
    #[error("{0}")]
    NoSnapshot(String),
    /// A drill did not pass.
    #[error("the drill failed: {0}")]
    Drill(String),
    /// Local I/O (scratch directories).
    #[error("{what}: {source}")]
    Io {
        /// What was being done, with the path.
        what: String,
        /// The OS error.
        source: std::io::Error,
    },
}
