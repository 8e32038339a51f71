//! Chaos experiments: break replicas on purpose, under a steady-state hypothesis, and
//! count what it cost.
//!
//! Stages of one experiment, each in its own module: the pre-flight gate and the choice of
//! targets ([`engine`]), the fault and its undoing ([`fault`]), the steady-state probes
//! ([`probe`]) judged on bulwark's own request outcomes ([`outcomes`]), the watch for
//! abort, detection and recovery, and the rollbacks (`run`). [`schedule`] starts
//! experiments on cron times or as a monkey.
//!
//! Architecture invariant: this crate reaches the supervisor and the observability plane
//! only through [`Host`]; it injects HTTP and TCP faults through the proxy's
//! [`proxy::Injected`] and publishes what it does on the event bus.

mod engine;
mod fault;
pub mod outcomes;
mod probe;
mod run;
mod schedule;

use std::path::PathBuf;

pub(crate) use bus::now_ms;
use nix::sys::signal::Signal;
use serde::{Deserialize, Serialize};

pub use engine::{Chaos, RunningView, Status, remove_leftover_fills};
pub use outcomes::{Outcomes, Tee};

/// What the experiments need from the rest of bulwark.
pub trait Host: Send + Sync + 'static {
    /// The replicas of `service` with their process and readiness; `None` if the service
    /// is not in the stack.
    fn replicas(&self, service: &str) -> Option<Vec<Replica>>;
    /// How many replicas `service` should run, and its disruption budget.
    fn budget(&self, service: &str) -> Option<(u32, spec::Amount)>;
    /// Restarts replica `index` of `service` gracefully.
    fn restart(&self, service: &str, index: u32) -> Result<(), String>;
    /// Sends `sig` to every process of replica `index` of `service` (its process group, or
    /// every process of its container) if it still runs as `pid`; returns whether it did.
    /// Blocking (it may read procfs and cgroupfs).
    fn signal(&self, service: &str, index: u32, pid: u32, sig: Signal) -> bool;
    /// A page alert firing for `service`, if one is.
    fn paging(&self, service: &str) -> Option<String>;
    /// An open incident of `service`, if one is.
    fn incident(&self, service: &str) -> Option<String>;
    /// SLO `slo`'s burn rate over its shortest page window.
    fn burn_rate(&self, service: &str, slo: &str) -> Option<f64>;
    /// This binary (the stressors are `bulwark chaos-stress`).
    fn bulwark(&self) -> PathBuf;
}

/// One replica, as experiments see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Replica {
    /// Its index.
    pub index: u32,
    /// Its process (leader of its process group), while one runs.
    pub pid: Option<u32>,
    /// In the balancer.
    pub ready: bool,
}

/// What started an experiment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Trigger {
    /// `bulwark chaos run`.
    Manual,
    /// Its cron schedule.
    Cron,
    /// The monkey.
    Monkey,
    /// `bulwark verify`.
    Verify,
}

impl Trigger {
    /// As shown in events.
    pub fn as_str(self) -> &'static str {
        match self {
            Trigger::Manual => "manual",
            Trigger::Cron => "cron",
            Trigger::Monkey => "monkey",
            Trigger::Verify => "verify",
        }
    }
}

/// How an experiment ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Outcome {
    /// The steady state held before, during and after, and the service recovered.
    Passed,
    /// A probe failed (below the abort threshold), or the service did not recover within
    /// [`RECOVERY_WINDOW`] of the fault's end.
    Failed,
    /// A probe failed `failure_threshold` times in a row.
    Aborted,
    /// `bulwark chaos halt` or `bulwark faults off`.
    Halted,
}

impl Outcome {
    /// As shown in events.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Passed => "passed",
            Outcome::Failed => "failed",
            Outcome::Aborted => "aborted",
            Outcome::Halted => "halted",
        }
    }
}

/// How long after the fault ends an experiment waits for the service to recover.
pub const RECOVERY_WINDOW: std::time::Duration = std::time::Duration::from_secs(30);

/// A rollback command's result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RollbackResult {
    /// The command, as written.
    pub command: Vec<String>,
    /// It exited 0 in time.
    pub ok: bool,
    /// Its exit and output tail when it failed.
    pub detail: String,
}

/// One experiment run, from gate to recovery.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// Unique while `up` runs.
    pub id: u64,
    /// The experiment's name.
    pub name: String,
    /// The target service.
    pub service: String,
    /// What started it.
    pub trigger: Trigger,
    /// What was broken, in words.
    pub fault: String,
    /// The fault's type.
    pub kind: String,
    /// The replicas hit.
    pub replicas: Vec<u32>,
    /// When the fault was injected, ms since the epoch.
    pub fault_at_ms: u64,
    /// When it was removed.
    pub fault_end_ms: u64,
    /// When the experiment ended (rollbacks run, recovery seen or given up on).
    pub ended_ms: u64,
    /// Fault → bulwark's first reaction (an exit, a failed probe, an ejection, an alert).
    pub detect_ms: Option<u64>,
    /// The event that was that reaction.
    pub detected_by: Option<String>,
    /// Fault → every replica ready and the steady state holding again.
    pub recover_ms: Option<u64>,
    /// How it ended.
    pub outcome: Outcome,
    /// Why it failed or was aborted.
    pub reason: Option<String>,
    /// Failed probe checks, in order (at most 20 kept).
    pub failed_checks: Vec<String>,
    /// Each rollback, in order.
    pub rollbacks: Vec<RollbackResult>,
    /// Requests the service answered from the fault to the end, and how many failed.
    pub requests: u64,
    /// Of which failed (5xx).
    pub failed_requests: u64,
}

/// Why an experiment did not start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// No experiment of that name.
    Unknown(String),
    /// A guard said no; nothing was broken.
    Gate(String),
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refusal::Unknown(n) => write!(
                f,
                "no experiment named `{n}`; `bulwark chaos list` shows them"
            ),
            Refusal::Gate(why) => write!(f, "not started: {why}"),
        }
    }
}

impl std::error::Error for Refusal {}
