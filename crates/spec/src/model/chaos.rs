//! Chaos experiments, after validation.

use std::path::PathBuf;
use std::time::Duration;

use super::{FaultAction, Schedule, Signal, Toxic};
pub use crate::keys::chaos::AbortWhen;

/// A number of replicas, or a share of them (`min_available`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Amount {
    /// This many.
    Count(u32),
    /// This percentage (0 to 100) of the desired replicas.
    Percent(f64),
}

impl Amount {
    /// How many of `total` replicas, a percentage rounded up (as Kubernetes rounds
    /// `minAvailable`).
    pub fn of(self, total: u32) -> u32 {
        match self {
            Amount::Count(n) => n,
            Amount::Percent(p) => {
                let n = (f64::from(total) * p / 100.0).ceil();
                // `p` is within 0..=100, so `n` is within 0..=total.
                n.clamp(0.0, f64::from(total)) as u32
            }
        }
    }
}

/// `[[experiments]]`: one chaos experiment.
#[derive(Debug, Clone, PartialEq)]
pub struct Experiment {
    /// Unique among experiments.
    pub name: String,
    /// Which replicas of which service.
    pub target: Target,
    /// What is broken.
    pub fault: ChaosFault,
    /// How long the fault lasts.
    pub duration: Duration,
    /// Probes that must pass before, during and after the fault.
    pub steady_state: Vec<SteadyProbe>,
    /// When it stops early.
    pub abort_when: AbortWhen,
    /// Commands always run after the fault, in order.
    pub rollbacks: Vec<Vec<String>>,
    /// When it runs by itself.
    pub schedule: ChaosSchedule,
}

/// An experiment's target. Invariant: `service` exists in the stack.
#[derive(Debug, Clone, PartialEq)]
pub struct Target {
    /// The service.
    pub service: String,
    /// Which of its replicas.
    pub pick: Pick,
}

/// How many replicas a fault hits, chosen at random when it starts.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Pick {
    /// One.
    One,
    /// Every replica.
    All,
    /// This many (at least 1; all if the service has fewer).
    Fixed(u32),
    /// This percentage (above 0, at most 100), rounded up.
    Percent(f64),
}

crate::spelled! {
    /// `target.mode` as written.
    #[derive(Debug, Clone, Copy, PartialEq)]
    pub enum TargetMode {
        /// `one`.
        One = "one",
        /// `all`.
        All = "all",
        /// `fixed`.
        Fixed = "fixed",
        /// `percent`.
        Percent = "percent",
    }
}

crate::spelled! {
    /// `fault.type` as written.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub enum ChaosFaultKind {
        /// `kill`.
        Kill = "kill",
        /// `stop`.
        Stop = "stop",
        /// `restart`.
        Restart = "restart",
        /// `http-delay`.
        HttpDelay = "http-delay",
        /// `http-abort`.
        HttpAbort = "http-abort",
        /// `http-reset`.
        HttpReset = "http-reset",
        /// `tcp`.
        Tcp = "tcp",
        /// `cpu`.
        Cpu = "cpu",
        /// `memory`.
        Memory = "memory",
        /// `dependency`.
        Dependency = "dependency",
        /// `disk-fill`.
        DiskFill = "disk-fill",
    }
}

/// What an experiment breaks.
#[derive(Debug, Clone, PartialEq)]
pub enum ChaosFault {
    /// Send this signal to each target replica's process group, once.
    Kill(Signal),
    /// SIGSTOP each target replica's process group; SIGCONT when the fault ends.
    Stop,
    /// Restart each target replica gracefully, once.
    Restart,
    /// Requests the proxy sends to a target replica: delayed, answered with a status, or
    /// reset, for this percentage of them.
    Http {
        /// What happens to a request.
        action: FaultAction,
        /// The share affected, above 0 and at most 100.
        percent: f64,
    },
    /// A toxic on connections to the target replicas (`protocol = "tcp"`).
    Tcp(Toxic),
    /// A stressor process keeping this many threads busy.
    Cpu {
        /// Busy threads.
        workers: u32,
    },
    /// A stressor process holding this much memory.
    Memory {
        /// Mebibytes allocated and touched.
        mib: u64,
    },
    /// Requests arriving on service `to`'s listener delayed or failed. Invariant: `to`
    /// exists and is exposed over HTTP.
    Dependency {
        /// The service depended on.
        to: String,
        /// What happens to a request.
        action: FaultAction,
        /// The share affected.
        percent: f64,
    },
    /// A file in `path` grown until the file system has `leave` bytes free.
    DiskFill {
        /// The directory (resolved against the stack file's directory).
        path: PathBuf,
        /// Free bytes left.
        leave: u64,
    },
}

impl ChaosFault {
    /// Its `type`.
    pub fn kind(&self) -> ChaosFaultKind {
        match self {
            ChaosFault::Kill(_) => ChaosFaultKind::Kill,
            ChaosFault::Stop => ChaosFaultKind::Stop,
            ChaosFault::Restart => ChaosFaultKind::Restart,
            ChaosFault::Http { action, .. } => match action {
                FaultAction::Delay(_) => ChaosFaultKind::HttpDelay,
                FaultAction::Abort(_) => ChaosFaultKind::HttpAbort,
                FaultAction::Reset => ChaosFaultKind::HttpReset,
            },
            ChaosFault::Tcp(_) => ChaosFaultKind::Tcp,
            ChaosFault::Cpu { .. } => ChaosFaultKind::Cpu,
            ChaosFault::Memory { .. } => ChaosFaultKind::Memory,
            ChaosFault::Dependency { .. } => ChaosFaultKind::Dependency,
            ChaosFault::DiskFill { .. } => ChaosFaultKind::DiskFill,
        }
    }

    /// Whether it takes the target replicas out of service (so the disruption budget
    /// counts them as disrupted): process faults, and HTTP or TCP faults on every try to
    /// them (the proxy ejects them).
    pub fn disrupts_replicas(&self) -> bool {
        match self {
            ChaosFault::Kill(_) | ChaosFault::Stop | ChaosFault::Restart | ChaosFault::Tcp(_) => {
                true
            }
            ChaosFault::Http { action, percent } => {
                *percent >= 100.0 && !matches!(action, FaultAction::Delay(_))
            }
            _ => false,
        }
    }
}

crate::spelled! {
    /// `steady_state.type` as written.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub enum SteadyKind {
        /// `http`.
        Http = "http",
        /// `error-ratio`.
        ErrorRatio = "error-ratio",
        /// `latency`.
        Latency = "latency",
        /// `burn-rate`.
        BurnRate = "burn-rate",
        /// `ready`.
        Ready = "ready",
        /// `command`.
        Command = "command",
    }
}

/// One steady-state probe.
#[derive(Debug, Clone, PartialEq)]
pub struct SteadyProbe {
    /// The service it is about. Invariant: exists in the stack.
    pub service: String,
    /// What is checked, and its tolerance.
    pub check: SteadyCheck,
}

/// What a steady-state probe checks.
#[derive(Debug, Clone, PartialEq)]
pub enum SteadyCheck {
    /// GET `url` answers `status` within `timeout`.
    Http {
        /// The URL (http://).
        url: http::Uri,
        /// The status expected.
        status: u16,
        /// How long the request may take.
        timeout: Duration,
    },
    /// The share of the service's requests that failed (5xx, or no answer) over
    /// `window` is at most `max`. Invariant: `0 <= max <= 1`.
    ErrorRatio {
        /// The tolerance.
        max: f64,
        /// The sliding window.
        window: Duration,
        /// No verdict (a pass) below this many requests in the window.
        min_requests: u64,
    },
    /// The `percentile` of the service's request durations over `window` is at most `max`.
    Latency {
        /// Which percentile (above 0, at most 100).
        percentile: f64,
        /// The tolerance.
        max: Duration,
        /// The sliding window.
        window: Duration,
        /// No verdict (a pass) below this many requests in the window.
        min_requests: u64,
    },
    /// SLO `slo`'s burn rate over its shortest alert window is at most `max`. Invariant:
    /// the SLO exists on the service.
    BurnRate {
        /// The SLO's name.
        slo: String,
        /// The tolerance.
        max: f64,
    },
    /// At least `min` replicas are ready.
    Ready {
        /// The fewest.
        min: u32,
    },
    /// The command exits 0 within `timeout`.
    Command {
        /// The command.
        run: Vec<String>,
        /// How long it may take.
        timeout: Duration,
    },
}

/// When an experiment runs by itself.
#[derive(Debug, Clone, PartialEq)]
pub enum ChaosSchedule {
    /// Only when asked: `bulwark chaos run NAME`.
    OnDemand,
    /// At each cron time.
    Cron(Box<Schedule>),
    /// At random times within a window.
    Monkey(Monkey),
}

/// The monkey mode: faults at random, on average every `mean_interval`, never closer than
/// `min_gap`, only on `days` between `hours`.
#[derive(Debug, Clone, PartialEq)]
pub struct Monkey {
    /// The mean time between faults.
    pub mean_interval: Duration,
    /// The shortest time between two faults.
    pub min_gap: Duration,
    /// The days it may act on.
    pub days: Vec<jiff::civil::Weekday>,
    /// Minutes of the day: from (inclusive), to (exclusive). Invariant: from < to <= 1440.
    pub hours: (u16, u16),
    /// Only log what it would do.
    pub leashed: bool,
}
