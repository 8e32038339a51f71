//! Rollouts: a changed service reaches its new revision by a rolling update, canary steps
//! or a blue-green switch, judged against the stable revision from the proxy's own
//! request outcomes, and rolled back by itself when the judgement, a page alert or the
//! progress deadline says so.
//!
//! Stages, one module each: the manager and its commands ([`Rollouts`], `manager`), one
//! rollout's life (`run`: the strategies, the waits, the rollback), the outcomes by
//! revision the analysis reads ([`stats`]), and the revisions in the journal
//! ([`record`]). Decisions are pure functions in `policy::rollout`.
//!
//! Architecture invariant: replicas are started, stopped and weighted only through the
//! supervisor's revision calls; alerts are raised through [`Host`].

mod manager;
pub mod record;
mod run;
pub mod stats;

use serde::{Deserialize, Serialize};

pub use manager::Rollouts;
pub use record::Revision;
pub use stats::Versions;

/// What rollouts need from the observability plane.
pub trait Host: Send + Sync + 'static {
    /// The summary of a page alert firing for `service`, if one is.
    fn paging(&self, service: &str) -> Option<String>;
    /// Raises `service`'s rollout-failed page (an alert and an incident).
    fn raise(&self, service: &str, summary: String);
    /// Resolves it.
    fn clear(&self, service: &str);
}

/// Asked of a running rollout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Command {
    /// Hold where it is.
    Pause,
    /// Go on (a paused step starts its pause afresh).
    Resume,
    /// End the current step now (`full`: skip every remaining step).
    Promote {
        /// Skip the remaining steps too.
        full: bool,
    },
    /// Give up: traffic back to the stable revision, new replicas stopped.
    Abort,
}

/// Where a rollout is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Phase {
    /// Moving on by itself.
    Progressing,
    /// Held (asked to, an inconclusive analysis, or a step that waits for promotion).
    Paused,
    /// Going back to the stable revision.
    RollingBack,
    /// The new revision is the stable one.
    Completed,
    /// Failed and rolled back.
    RolledBack,
    /// Aborted and rolled back.
    Aborted,
}

impl Phase {
    /// Whether the rollout is over.
    pub fn ended(self) -> bool {
        matches!(self, Phase::Completed | Phase::RolledBack | Phase::Aborted)
    }
}

/// One analysis verdict.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Verdict {
    /// When (ms since the epoch).
    pub at_ms: u64,
    /// `pass`, `fail` or `inconclusive`.
    pub verdict: String,
    /// The figures behind it.
    pub detail: String,
}

/// A rollout's progress, as `bulwark rollout status` shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Status {
    /// The service.
    pub service: String,
    /// The new revision.
    pub revision: u32,
    /// The stable revision it replaces.
    pub from: u32,
    /// `rolling`, `canary` or `blue-green`.
    pub strategy: String,
    /// Where it is.
    pub phase: Phase,
    /// The current step, in words.
    pub step: String,
    /// Percent of requests on the new revision (canary, blue-green).
    pub weight: Option<f64>,
    /// Replicas the service wants.
    pub desired: u32,
    /// Old replicas running.
    pub old: u32,
    /// Of which ready.
    pub old_ready: u32,
    /// New replicas running.
    pub new: u32,
    /// Of which ready.
    pub new_ready: u32,
    /// The last verdicts, newest last (at most 20).
    pub verdicts: Vec<Verdict>,
    /// The analysis of the current window so far, with its figures.
    #[serde(default)]
    pub analysis: Option<String>,
    /// When the rollout started (ms since the epoch).
    pub started_ms: u64,
    /// When the current step started (ms since the epoch).
    pub step_started_ms: u64,
    /// Why it is paused, failed or aborted.
    pub message: Option<String>,
}

/// Why a rollout call was refused.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("no service named {0:?} in the stack file")]
    UnknownService(String),
    #[error(
        "service {service:?} is already rolling out revision {revision}; wait for it, or \
         `bulwark rollout abort {service}`"
    )]
    Running { service: String, revision: u32 },
    #[error("service {0:?} has no rollout under way")]
    NotRunning(String),
    #[error(
        "service {service:?}: revision {revision} is not known to this bulwark (revisions \
         from before its start cannot be restored; see `bulwark rollout history {service}`)"
    )]
    UnknownRevision { service: String, revision: u32 },
    #[error("service {service:?} already runs revision {revision}'s settings; nothing to roll out")]
    Unchanged { service: String, revision: u32 },
    #[error(transparent)]
    Control(#[from] runtime::ControlError),
}
