//! Domain types: what the program runs on, after validation.
//!
//! Invariant: every value here is already checked. Durations are resolved, thresholds are
//! at least 1, addresses parse, `depends_on` names existing services and has no cycle,
//! and [`Stack::services`] is in dependency order (a service comes after everything it
//! depends on). Code downstream of `spec` never re-validates.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

pub use nix::sys::signal::Signal;

/// A validated stack file.
#[derive(Debug, Clone, PartialEq)]
pub struct Stack {
    /// Services in dependency order: dependencies first. Stop in reverse. Among services
    /// with no order between them, the one earlier in the file comes first.
    pub services: Vec<Service>,
    pub api: Api,
    pub supervisor: Supervisor,
    pub alerts: Alerts,
}

impl Stack {
    pub fn service(&self, name: &str) -> Option<&Service> {
        self.services.iter().find(|s| s.name == name)
    }
}

/// `[api]`: the local control API served by `bulwark up`.
#[derive(Debug, Clone, PartialEq)]
pub struct Api {
    /// Default `127.0.0.1:7700`. Port 0 picks a free port (written to the state directory).
    pub listen: SocketAddr,
}

impl Api {
    pub const DEFAULT_LISTEN: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 7700);
}

impl Default for Api {
    fn default() -> Self {
        Api {
            listen: Api::DEFAULT_LISTEN,
        }
    }
}

/// `[supervisor]`: stack-wide supervision limits.
#[derive(Debug, Clone, PartialEq)]
pub struct Supervisor {
    /// How many replicas may be restarting (spawned, not yet started) at once across the
    /// whole stack. Prevents restart storms. Default 8.
    pub max_concurrent_restarts: u32,
}

impl Supervisor {
    pub const DEFAULT_MAX_CONCURRENT_RESTARTS: u32 = 8;
}

impl Default for Supervisor {
    fn default() -> Self {
        Supervisor {
            max_concurrent_restarts: Supervisor::DEFAULT_MAX_CONCURRENT_RESTARTS,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Service {
    pub name: String,
    /// Command template. `{bulwark}` is replaced by this binary's path, `{port}` by the
    /// replica's port, `{index}` by its index, `{service}` by the service name.
    pub run: Vec<String>,
    pub replicas: u32,
    pub restart: RestartPolicy,
    /// Evaluated in order before `restart`; the first rule that matches an exit code wins.
    pub restart_rules: Vec<RestartRule>,
    pub env: BTreeMap<String, String>,
    /// Working directory, resolved against the stack file's directory.
    pub cwd: Option<PathBuf>,
    pub stop_signal: Signal,
    pub stop_grace: Duration,
    pub backoff: Backoff,
    pub startup: Option<Probe>,
    pub liveness: Option<Probe>,
    /// When `expose` is set and no readiness probe is given, a TCP readiness probe with
    /// default timings is filled in, so the proxy never routes to a port nobody listens on.
    pub readiness: Option<Probe>,
    pub depends_on: Vec<String>,
    pub expose: Option<Expose>,
    /// `[[services.NAME.slo]]`, in file order; names are unique within the service.
    /// Invariant: non-empty only when `expose` is set (SLIs come from bulwark's proxy).
    pub slos: Vec<Slo>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RestartPolicy {
    Always,
    OnFailure,
    Never,
}

/// `[[services.NAME.restart_rules]]`: `exit_codes = [..]`, `action = "restart" | "stop"`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RestartRule {
    pub exit_codes: Vec<i32>,
    pub action: RestartAction,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RestartAction {
    Restart,
    Stop,
}

/// Crash-loop backoff. Invariant: `initial <= max`, `multiplier >= 1`, `0 <= jitter < 1`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Backoff {
    pub initial: Duration,
    pub max: Duration,
    /// A replica that stayed up this long has its backoff reset.
    pub reset_after: Duration,
    pub multiplier: f64,
    /// Fraction by which a delay may be shortened at random (never below `initial`).
    pub jitter: f64,
}

impl Backoff {
    /// `initial = "250ms"`, `max = "30s"`, `reset_after = "60s"`, `multiplier = 2.0`,
    /// `jitter = 0.2`.
    pub const DEFAULT: Backoff = Backoff {
        initial: Duration::from_millis(250),
        max: Duration::from_secs(30),
        reset_after: Duration::from_secs(60),
        multiplier: 2.0,
        jitter: 0.2,
    };
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff::DEFAULT
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Probe {
    pub action: ProbeAction,
    pub period: Duration,
    pub timeout: Duration,
    pub initial_delay: Duration,
    /// Consecutive failures that count as failed. Invariant: >= 1.
    pub failure_threshold: u32,
    /// Consecutive successes that count as succeeded. Invariant: >= 1 (and == 1 for
    /// liveness and startup, as in Kubernetes).
    pub success_threshold: u32,
}

/// Which of a service's three probes a [`Probe`] is; they differ in defaults and rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ProbeKind {
    /// Gates the other two: until it succeeds, liveness and readiness are not run.
    Startup,
    /// Failing: restart the replica.
    Liveness,
    /// Failing: take the replica out of the balancer.
    Readiness,
}

impl ProbeKind {
    /// The probe's key in a service table (`startup`, `liveness`, `readiness`).
    pub fn key(self) -> &'static str {
        match self {
            ProbeKind::Startup => "startup",
            ProbeKind::Liveness => "liveness",
            ProbeKind::Readiness => "readiness",
        }
    }
}

impl Probe {
    /// A probe of `kind` with every timing at its default.
    ///
    /// Startup polls faster (250ms) and tolerates 120 failures: 30 s to come up, during
    /// which liveness does not run, so a slow start is not mistaken for a crash loop.
    pub fn defaults(kind: ProbeKind, action: ProbeAction) -> Probe {
        match kind {
            ProbeKind::Startup => Probe {
                action,
                period: Duration::from_millis(250),
                timeout: Duration::from_secs(1),
                initial_delay: Duration::ZERO,
                failure_threshold: 120,
                success_threshold: 1,
            },
            ProbeKind::Liveness | ProbeKind::Readiness => Probe {
                action,
                period: Duration::from_secs(1),
                timeout: Duration::from_secs(1),
                initial_delay: Duration::ZERO,
                failure_threshold: 3,
                success_threshold: 1,
            },
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProbeAction {
    /// GET on the replica's port; healthy when 200 <= status < 400.
    Http { path: String },
    /// Healthy when a TCP connection to the replica's port succeeds.
    Tcp,
    /// Healthy when the command exits 0.
    Exec { command: Vec<String> },
}

#[derive(Debug, Clone, PartialEq)]
pub struct Expose {
    pub listen: SocketAddr,
    pub balance: Balance,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Balance {
    /// Power of two choices over in-flight requests (default).
    P2c,
    RoundRobin,
}

/// `[[services.NAME.slo]]`: a service level objective over the requests bulwark's proxy
/// answers for the service.
///
/// Invariant: `0 < objective < 1`, `period >= 1m`, a latency threshold is `> 0`.
#[derive(Debug, Clone, PartialEq)]
pub struct Slo {
    /// Unique within its service; lowercase ASCII letters, digits, `-` and `_`.
    pub name: String,
    pub kind: SloKind,
    /// The target share of good requests as a fraction (`objective = 99.9` in the file
    /// is `0.999` here).
    pub objective: f64,
    /// The rolling window the objective is measured over (default 30 days). Alert windows
    /// are the SRE Workbook's 30-day windows scaled by `period / 30d`.
    pub period: Duration,
    pub alerts: SloAlerts,
}

impl Slo {
    /// `period` when the file does not set one: 30 days, as in the SRE Workbook.
    pub const DEFAULT_PERIOD: Duration = Duration::from_secs(30 * 24 * 3600);
    /// The shortest `period` accepted.
    pub const MIN_PERIOD: Duration = Duration::from_secs(60);

    /// The error budget as a fraction of requests: `1 - objective`.
    pub fn error_budget(&self) -> f64 {
        1.0 - self.objective
    }
}

/// What an SLO measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SloKind {
    /// Share of requests that did not fail. Failed: status >= 500, or bulwark answered
    /// by itself because no replica was ready, every try failed, the request timed out, or
    /// it was shed. 4xx are the client's doing and count as good, except 429 when
    /// `count_429` is set (`count_429_as_error = true`).
    Availability { count_429: bool },
    /// Share of successful requests (status < 500, answered by a replica) that were
    /// faster than `threshold`. Failed requests are left to the availability SLO.
    Latency { threshold: Duration },
}

/// `[services.NAME.slo.alerts]`: which burn-rate alerts are raised, and their guards.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SloAlerts {
    /// Fast burn (14.4x over 1h and 5m, or 6x over 6h and 30m, scaled). Default on.
    pub page: bool,
    /// Slow burn (1x over 3d and 6h, scaled). Default on.
    pub ticket: bool,
    /// Minimum-traffic guard: a burn alert is not raised while its long window saw fewer
    /// requests than this. Default 10.
    pub min_requests: u64,
    /// Alert when the service got no request at all for this long. Default off.
    pub no_data: Option<Duration>,
}

impl SloAlerts {
    pub const DEFAULT: SloAlerts = SloAlerts {
        page: true,
        ticket: true,
        min_requests: 10,
        no_data: None,
    };
}

impl Default for SloAlerts {
    fn default() -> Self {
        SloAlerts::DEFAULT
    }
}

/// `[alerts]`: how alert notifications are grouped and where they go.
#[derive(Debug, Clone, PartialEq)]
pub struct Alerts {
    /// Notices of one service arriving within this long go out together. Default 1 s
    /// (Alertmanager's 30 s is tuned for big fleets; one machine wants to know sooner).
    pub group_wait: Duration,
    /// A still-firing alert is notified again after this long. Default 4 h (as
    /// Alertmanager); 0 turns reminders off.
    pub repeat_interval: Duration,
    /// Default: one `log` sink.
    pub sinks: Vec<AlertSink>,
}

impl Alerts {
    pub const DEFAULT_GROUP_WAIT: Duration = Duration::from_secs(1);
    pub const DEFAULT_REPEAT_INTERVAL: Duration = Duration::from_secs(4 * 3600);
    pub const DEFAULT_SINK_TIMEOUT: Duration = Duration::from_secs(5);
    pub const DEFAULT_WEBHOOK_ATTEMPTS: u32 = 5;
}

impl Default for Alerts {
    fn default() -> Self {
        Alerts {
            group_wait: Alerts::DEFAULT_GROUP_WAIT,
            repeat_interval: Alerts::DEFAULT_REPEAT_INTERVAL,
            sinks: vec![AlertSink::Log],
        }
    }
}

/// `[[alerts.sinks]]`: exactly one of `log = true`, `webhook = "http://…"`, `exec = [..]`.
#[derive(Debug, Clone, PartialEq)]
pub enum AlertSink {
    Log,
    /// A JSON POST, retried with backoff up to `attempts` times. Plain HTTP only.
    Webhook {
        url: http::Uri,
        timeout: Duration,
        attempts: u32,
    },
    /// A command run with the JSON payload on stdin.
    Exec {
        command: Vec<String>,
        timeout: Duration,
    },
}
