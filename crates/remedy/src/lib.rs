//! Closing the loop: what bulwark does by itself when something breaks or is about to.
//!
//! - `engine`: `[[remediations]]` matched against the bus (alerts, events, anomalies,
//!   probes) and against measures held over a while (metric triggers); each firing passes
//!   the rule's guards (`policy::remedy`), the disruption budget and the global action
//!   budget, then acts, waits for approval, or only records; every decision is an
//!   [`bus::EventKind::Remediation`] event.
//! - `act`: the actions, through the [`Host`] (the running stack) or by themselves
//!   (runbook commands through `launch`, webhooks).
//! - `anomaly`: per replica, trends of memory, descriptors and threads forecast to a limit
//!   (`policy::trend`), and drift of each service's latency and error ratio; the default
//!   pack replaces a replica forecast to run out of memory before it does.
//! - `autoscale`: Kubernetes HPA decisions (`policy::autoscale`) on measures from the
//!   proxy's outcomes (`measures`) and the resource sampler.
//!
//! Decisions are pure functions in `policy`; this crate is the I/O shell around them.

mod act;
mod anomaly;
mod autoscale;
mod engine;
mod measures;
mod metrics;
mod trigger;

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub(crate) use bus::now_ms;
use serde::Serialize;

pub use anomaly::{Detector, Usage};
pub use autoscale::{AutoscaleStatus, Autoscaling, Inputs};
pub use engine::Remedy;
pub use measures::{Measures, Reading, Window};

/// A boxed future, for the [`Host`]'s slow calls.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// One replica as the engine sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Replica {
    /// Its index in the service.
    pub index: u32,
    /// Its process, while it runs.
    pub pid: Option<u32>,
    /// Whether its readiness probe passes.
    pub ready: bool,
    /// Taken out of the proxy's rotation by a remediation.
    pub held_out: bool,
    /// When its current process started.
    pub started_at_ms: Option<u64>,
}

/// A service's size and disruption budget.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Size {
    /// The replica count asked for.
    pub desired: u32,
    /// Replicas that must stay ready through voluntary disruptions.
    pub min_available: spec::Amount,
    /// A rollout holds the service.
    pub rolling_out: bool,
}

/// What remediation can see of, and do to, the running stack. Implemented by the binary
/// over the supervisor, the rollouts, the switchboard and the observability plane.
pub trait Host: Send + Sync + 'static {
    /// The service's replicas (`None`: no such service).
    fn replicas(&self, service: &str) -> Option<Vec<Replica>>;
    /// The service's size and budget.
    fn size(&self, service: &str) -> Option<Size>;
    /// Restarts one replica, or every replica one after another.
    fn restart(&self, service: &str, index: Option<u32>) -> Result<(), String>;
    /// Starts a fresh replica, waits until it is ready, then drains and stops `index`.
    fn replace(
        &self,
        service: &str,
        index: u32,
        timeout: Duration,
    ) -> BoxFuture<'_, Result<u32, String>>;
    /// Sets the replica count; returns the count before.
    fn scale(&self, service: &str, to: u32) -> Result<u32, String>;
    /// Takes a replica out of the proxy's rotation, or puts it back.
    fn hold_out(&self, service: &str, index: u32, out: bool) -> Result<(), String>;
    /// A replica's in-flight counter (draining awaits it).
    fn load(&self, service: &str, index: u32) -> Option<Arc<bus::Load>>;
    /// Aborts the service's rollout under way.
    fn rollback(&self, service: &str) -> Result<(), String>;
    /// Sets a run-time switch.
    fn set_switch(
        &self,
        name: &str,
        value: spec::SwitchValue,
        by: &str,
    ) -> BoxFuture<'_, Result<(), String>>;
    /// Silences the service's alerts (only `slo`'s, when given) for `hold`; returns the
    /// silence's id.
    fn silence(
        &self,
        service: &str,
        slo: Option<&str>,
        hold: Duration,
        comment: String,
    ) -> BoxFuture<'_, Result<String, String>>;
    /// The id of the service's open incident.
    fn incident(&self, service: &str) -> Option<u64>;
    /// An action waits for approval (`waiting`), or no longer does: tell the alert sinks.
    fn approval(&self, record: &ActionRecord, waiting: bool);
}

/// Where an action stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Decision {
    /// Started.
    Acted,
    /// Held back by a guard.
    Skipped,
    /// Waits for `bulwark approve` or `deny`.
    Waiting,
    /// Approved: about to act.
    Approved,
    /// Denied (by someone, or by an unanswered approval with `on_timeout = "deny"`).
    Denied,
    /// An action failed; the rest were not run.
    Failed,
    /// Every action succeeded.
    Done,
    /// Only recorded (`mode = "dry-run"`).
    DryRun,
}

impl Decision {
    /// The word in events, metrics and `bulwark actions`.
    pub fn as_str(self) -> &'static str {
        match self {
            Decision::Acted => "acted",
            Decision::Skipped => "skipped",
            Decision::Waiting => "waiting",
            Decision::Approved => "approved",
            Decision::Denied => "denied",
            Decision::Failed => "failed",
            Decision::Done => "done",
            Decision::DryRun => "dry-run",
        }
    }
}

/// One decision of a remediation, as `bulwark actions` lists it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ActionRecord {
    /// Unique in this run; `bulwark approve ID`.
    pub id: u64,
    /// The rule (`default:replace-before-oom` for the default pack).
    pub rule: String,
    /// The service acted on.
    pub service: String,
    /// The replica acted on, if one.
    pub replica: Option<u32>,
    /// The actions, in order.
    pub actions: Vec<String>,
    /// `auto`, `approve` or `dry-run`.
    pub mode: String,
    /// Where it stands.
    pub decision: Decision,
    /// The guard that held it back.
    pub guard: Option<String>,
    /// What triggered it, in words.
    pub trigger: String,
    /// Figures, reasons, a runbook's output.
    pub detail: String,
    /// When it was first decided, ms since the epoch.
    pub at_ms: u64,
    /// When it last changed.
    pub updated_ms: u64,
    /// `approve`: when an unanswered approval times out.
    pub expires_ms: Option<u64>,
}

/// Why `approve` or `deny` was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AnswerError {
    /// No action has this id.
    #[error("no remediation action #{0}; `bulwark actions` lists them")]
    Unknown(u64),
    /// The action does not wait for approval.
    #[error("remediation action #{id} does not wait for approval: it is {decision}")]
    NotWaiting {
        /// The action.
        id: u64,
        /// Where it stands.
        decision: &'static str,
    },
}

/// The records of this run, newest last, bounded.
#[derive(Default)]
pub(crate) struct Records {
    list: Mutex<std::collections::VecDeque<ActionRecord>>,
}

/// Records kept for `bulwark actions`; older ones are in the journal's events.
const RECORDS_MAX: usize = 1000;

impl Records {
    fn lock(&self) -> std::sync::MutexGuard<'_, std::collections::VecDeque<ActionRecord>> {
        self.list.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn upsert(&self, r: &ActionRecord) {
        let mut list = self.lock();
        if let Some(old) = list.iter_mut().rev().find(|o| o.id == r.id) {
            *old = r.clone();
            return;
        }
        if list.len() >= RECORDS_MAX {
            list.pop_front();
        }
        list.push_back(r.clone());
    }

    pub(crate) fn all(&self) -> Vec<ActionRecord> {
        self.lock().iter().cloned().collect()
    }
}

/// The shared pieces every part of the crate reads.
pub(crate) struct Shared {
    pub bus: Arc<bus::Bus>,
    pub host: Arc<dyn Host>,
    pub records: Records,
    pub metrics: metrics::Metrics,
}
