//! Remediation rules, anomaly detection and autoscaling, as checked.

use std::time::Duration;

use super::{ProbeKind, SwitchValue};

pub use crate::keys::remedy::{AnomalySettings, RemediationSettings};

/// `[[remediations]]`: when something happens, do these actions, within guards.
#[derive(Debug, Clone, PartialEq)]
pub struct Remediation {
    /// Unique among remediations.
    pub name: String,
    /// What triggers it.
    pub when: Trigger,
    /// Only this service's triggers (`when.service`); any service when `None`.
    pub service: Option<String>,
    /// The actions, in order. Never empty.
    pub actions: Vec<Action>,
    /// Act, wait for approval, or only record.
    pub mode: RemedyMode,
    /// The rule's own guards.
    pub guards: Guards,
    /// `approve`: how long an action waits for an answer.
    pub approve_timeout: Duration,
    /// `approve`: what happens when nobody answered in time.
    pub on_timeout: ApproveTimeout,
}

/// A rule's rate limit, back-off, cooldown and concurrency.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Guards {
    /// Actions started within `per`, at most. At least 1.
    pub limit: u32,
    /// The rate limit's window.
    pub per: Duration,
    /// The first back-off (0: none).
    pub backoff: Duration,
    /// The longest back-off.
    pub backoff_max: Duration,
    /// Quiet time after an action ends.
    pub cooldown: Duration,
    /// Actions of the rule running at once. At least 1.
    pub max_concurrent: u32,
}

/// What triggers a remediation.
#[derive(Debug, Clone, PartialEq)]
pub enum Trigger {
    /// A burn-rate alert fires, of this severity, for this SLO (any when `None`).
    Alert {
        /// Which severities.
        severity: AlertSeverity,
        /// Only this SLO.
        slo: Option<String>,
    },
    /// An event of this type happens.
    Event(EventType),
    /// The anomaly detector reports this.
    Anomaly(AnomalyKind),
    /// A probe of this kind fails on a replica.
    ProbeFailing(ProbeKind),
    /// A measure of the service stays beyond a bound for a while.
    Metric {
        /// Which measure.
        metric: MetricKind,
        /// Above or below what.
        bound: Bound,
        /// How long it must hold.
        hold: Duration,
    },
}

/// A metric trigger's condition.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Bound {
    /// Holds while the measure is above this.
    Above(f64),
    /// Holds while the measure is below this.
    Below(f64),
}

impl Bound {
    /// Whether `value` is beyond the bound.
    pub fn holds(self, value: f64) -> bool {
        match self {
            Bound::Above(b) => value > b,
            Bound::Below(b) => value < b,
        }
    }
}

crate::spelled! {
    /// Which alerts trigger a rule.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub enum AlertSeverity {
        /// Page alerts only.
        Page = "page",
        /// Ticket alerts only.
        Ticket = "ticket",
        /// Both.
        Any = "any",
    }
}

impl AlertSeverity {
    /// Whether an alert of `severity` (`page`, `ticket`) matches.
    pub fn matches(self, severity: &str) -> bool {
        match self {
            AlertSeverity::Page => severity == "page",
            AlertSeverity::Ticket => severity == "ticket",
            AlertSeverity::Any => true,
        }
    }
}

crate::spelled! {
    /// The events a rule can be triggered by.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub enum EventType {
        /// A replica keeps crashing.
        CrashLooping = "crash-looping",
        /// A replica's process exited.
        ReplicaExited = "replica-exited",
        /// The kernel's OOM killer killed a replica.
        OomKilled = "oom-killed",
        /// The proxy ejected a replica.
        ReplicaEjected = "replica-ejected",
        /// A replica could not be started.
        SpawnFailed = "spawn-failed",
        /// A replica stopped being ready.
        ReplicaUnready = "replica-unready",
        /// A rollout was aborted.
        RolloutAborted = "rollout-aborted",
        /// An incident was opened.
        IncidentOpened = "incident-opened",
    }
}

crate::spelled! {
    /// What the anomaly detector reports.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
    pub enum AnomalyKind {
        /// A replica's memory is forecast to reach its limit within the horizon.
        MemoryLeak = "memory-leak",
        /// The service's p99 latency drifted above its own baseline.
        LatencyDrift = "latency-drift",
        /// The service's error ratio drifted above its own baseline.
        ErrorDrift = "error-drift",
        /// A replica's open file descriptors are forecast to reach their limit.
        FdGrowth = "fd-growth",
        /// A replica's threads are forecast to reach their limit.
        ThreadGrowth = "thread-growth",
    }
}

impl AnomalyKind {
    /// Parses [`AnomalyKind::as_str`].
    pub fn parse(s: &str) -> Option<AnomalyKind> {
        Self::CHOICES.iter().find(|(n, _)| *n == s).map(|(_, k)| *k)
    }
}

crate::spelled! {
    /// A measure a metric trigger watches.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub enum MetricKind {
        /// Requests in flight per ready replica.
        InFlight = "in-flight",
        /// Requests per second per ready replica.
        RequestRate = "request-rate",
        /// Percent of requests that failed.
        ErrorRatio = "error-ratio",
        /// The p99 latency, in milliseconds.
        LatencyP99 = "latency-p99",
        /// CPU cores per replica.
        Cpu = "cpu",
        /// MiB of the largest replica.
        Memory = "memory",
        /// Ready replicas.
        Ready = "ready",
    }
}

crate::spelled! {
    /// How a rule acts.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub enum RemedyMode {
        /// Act.
        Auto = "auto",
        /// Wait for `bulwark approve`.
        Approve = "approve",
        /// Only record what would have been done.
        DryRun = "dry-run",
    }
}

crate::spelled! {
    /// What an unanswered approval comes to.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub enum ApproveTimeout {
        /// Nothing is done.
        Deny = "deny",
        /// It is done.
        Act = "act",
    }
}

crate::spelled! {
    /// The `action` key, before its other keys are checked.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub enum ActionKind {
        #[allow(missing_docs)]
        RestartReplica = "restart-replica",
        #[allow(missing_docs)]
        ReplaceReplica = "replace-replica",
        #[allow(missing_docs)]
        RestartService = "restart-service",
        #[allow(missing_docs)]
        Scale = "scale",
        #[allow(missing_docs)]
        Eject = "eject",
        #[allow(missing_docs)]
        Drain = "drain",
        #[allow(missing_docs)]
        Rollback = "rollback",
        #[allow(missing_docs)]
        Switch = "switch",
        #[allow(missing_docs)]
        Silence = "silence",
        #[allow(missing_docs)]
        Run = "run",
        #[allow(missing_docs)]
        Webhook = "webhook",
    }
}

/// One action of a remediation. `service: None` means the trigger's service.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Restart one replica (the trigger's, else the longest-running).
    RestartReplica {
        /// The service.
        service: Option<String>,
    },
    /// Start a fresh replica, wait until it is ready, then drain and stop the old one.
    ReplaceReplica {
        /// The service.
        service: Option<String>,
        /// How long the new replica may take to be ready.
        timeout: Duration,
    },
    /// Restart every replica, one at a time, each ready before the next.
    RestartService {
        /// The service.
        service: Option<String>,
    },
    /// Set the replica count.
    Scale {
        /// The service.
        service: Option<String>,
        /// To this count, or by this step.
        to: ScaleTo,
    },
    /// Take a replica out of the proxy's rotation for a while.
    Eject {
        /// The service.
        service: Option<String>,
        /// How long.
        hold: Duration,
    },
    /// Take a replica out of rotation, wait until its requests finish, keep it out a while.
    Drain {
        /// The service.
        service: Option<String>,
        /// How long it stays out after draining.
        hold: Duration,
        /// How long draining may take.
        timeout: Duration,
    },
    /// Abort the service's rollout under way (rolling back to the stable revision).
    Rollback {
        /// The service.
        service: Option<String>,
    },
    /// Set a run-time switch.
    Switch {
        /// The switch.
        name: String,
        /// Its new value.
        value: SwitchValue,
    },
    /// Silence the triggering alert (its service and SLO) for a while.
    Silence {
        /// How long.
        hold: Duration,
    },
    /// Run a runbook command with the trigger as JSON on stdin and in the environment.
    Run {
        /// The command.
        command: Vec<String>,
        /// Killed (and failed) after this long.
        timeout: Duration,
    },
    /// POST the trigger as JSON.
    Webhook {
        /// Where.
        url: http::Uri,
        /// Failed after this long.
        timeout: Duration,
    },
}

impl Action {
    /// The action's name in the stack file.
    pub fn name(&self) -> &'static str {
        match self {
            Action::RestartReplica { .. } => "restart-replica",
            Action::ReplaceReplica { .. } => "replace-replica",
            Action::RestartService { .. } => "restart-service",
            Action::Scale { .. } => "scale",
            Action::Eject { .. } => "eject",
            Action::Drain { .. } => "drain",
            Action::Rollback { .. } => "rollback",
            Action::Switch { .. } => "switch",
            Action::Silence { .. } => "silence",
            Action::Run { .. } => "run",
            Action::Webhook { .. } => "webhook",
        }
    }

    /// Whether the action takes a replica out of service (so the disruption budget applies).
    pub fn disrupts(&self) -> bool {
        matches!(
            self,
            Action::RestartReplica { .. }
                | Action::RestartService { .. }
                | Action::Eject { .. }
                | Action::Drain { .. }
                | Action::Scale {
                    to: ScaleTo::By(..0),
                    ..
                }
                | Action::Scale {
                    to: ScaleTo::Count(_),
                    ..
                }
        )
    }

    /// The service named by the action itself, if any.
    pub fn service(&self) -> Option<&str> {
        match self {
            Action::RestartReplica { service }
            | Action::ReplaceReplica { service, .. }
            | Action::RestartService { service }
            | Action::Scale { service, .. }
            | Action::Eject { service, .. }
            | Action::Drain { service, .. }
            | Action::Rollback { service } => service.as_deref(),
            _ => None,
        }
    }
}

/// A scale action's target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScaleTo {
    /// This many replicas.
    Count(u32),
    /// This many more (or fewer).
    By(i64),
}

/// `[services.NAME.anomaly]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServiceAnomaly {
    /// Look for anomalies in this service.
    pub enabled: bool,
    /// The memory a replica may reach, in bytes (`None`: the machine's).
    pub memory_limit: Option<u64>,
}

impl Default for ServiceAnomaly {
    fn default() -> Self {
        ServiceAnomaly {
            enabled: true,
            memory_limit: None,
        }
    }
}

/// `[services.NAME.autoscale]`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Autoscale {
    /// Fewest replicas (≥ 1).
    pub min: u32,
    /// Most replicas (≥ `min`).
    pub max: u32,
    /// The measure kept at its value per replica.
    pub target: ScaleTarget,
    /// How often the count is decided.
    pub interval: Duration,
    /// No change within this share of the target.
    pub tolerance: f64,
    /// Scale-up stabilization window.
    pub up_window: Duration,
    /// Scale-down stabilization window.
    pub down_window: Duration,
    /// Growth per period: this percentage…
    pub up_percent: f64,
    /// …or this many replicas, whichever is more.
    pub up_replicas: u32,
    /// Shrinking per period, in percent.
    pub down_percent: f64,
    /// The rate policies' period.
    pub period: Duration,
    /// Cover crashed or ejected replicas with extra ones.
    pub cover_failures: bool,
}

/// What autoscaling aims at, per ready replica.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ScaleTarget {
    /// Requests in flight.
    InFlight(f64),
    /// Requests per second.
    RequestRate(f64),
    /// CPU cores.
    Cpu(f64),
    /// The service's p99 latency.
    LatencyP99(Duration),
}

impl ScaleTarget {
    /// The measure's name, as in the stack file.
    pub fn name(self) -> &'static str {
        match self {
            ScaleTarget::InFlight(_) => "in_flight",
            ScaleTarget::RequestRate(_) => "request_rate",
            ScaleTarget::Cpu(_) => "cpu",
            ScaleTarget::LatencyP99(_) => "latency_p99",
        }
    }

    /// The target as a number (latency in milliseconds).
    pub fn value(self) -> f64 {
        match self {
            ScaleTarget::InFlight(v) | ScaleTarget::RequestRate(v) | ScaleTarget::Cpu(v) => v,
            ScaleTarget::LatencyP99(d) => d.as_secs_f64() * 1000.0,
        }
    }
}
