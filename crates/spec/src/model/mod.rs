//! Domain types: what the program runs on, after validation.
//!
//! Invariant: every value here is already checked. Durations are resolved, thresholds are
//! at least 1, addresses parse, `depends_on` names existing services and has no cycle,
//! and [`Stack::services`] is in dependency order (a service comes after everything it
//! depends on). Code downstream of `spec` never re-validates.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

pub use nix::sys::signal::Signal;

mod chaos;
mod degrade;
pub use chaos::*;
mod rollout;
pub use degrade::*;
pub use rollout::*;
mod remedy;
pub use remedy::*;
mod placement;
pub use placement::*;
mod resources;
pub use resources::*;
mod secret;
pub use secret::*;

pub use crate::keys::auth::Auth;
pub use crate::keys::container::{Container, Mount, Network, ROOTFS_PATH, program_in};
pub use crate::keys::leader::{Leader, LeaderRoute};
pub use crate::keys::notify::Notify;
pub use crate::keys::warm::{Restore, Warm};
pub use crate::keys::{
    Backoff, Breaker, Hedge, Hook, JournalSettings, Keep, Limits, Outlier, RestartRule, Retries,
    SloAlerts, SupervisorSettings, Timeouts,
};

/// A validated stack file.
#[derive(Debug, Clone, PartialEq)]
pub struct Stack {
    /// Services in dependency order: dependencies first. Stop in reverse. Among services
    /// with no order between them, the one earlier in the file comes first.
    pub services: Vec<Service>,
    /// The local control API.
    pub api: Api,
    /// Stack-wide supervision limits.
    pub supervisor: SupervisorSettings,
    /// Alert grouping and notification sinks.
    pub alerts: Alerts,
    /// How long the journal keeps records.
    pub journal: JournalSettings,
    /// Backups, in file order.
    pub backups: Vec<Backup>,
    /// Chaos experiments, in file order.
    pub experiments: Vec<Experiment>,
    /// Run-time switches, in file order; names are unique.
    pub switches: Vec<Switch>,
    /// Automated remediations, in file order; names are unique.
    pub remediations: Vec<Remediation>,
    /// Stack-wide limits on automated actions.
    pub remediation: RemediationSettings,
    /// Anomaly detection and its default pack.
    pub anomaly: AnomalySettings,
}

impl Stack {
    /// The service called `name`, if the stack has one.
    pub fn service(&self, name: &str) -> Option<&Service> {
        self.services.iter().find(|s| s.name == name)
    }
}

/// `[services.NAME]`: one supervised program, run as one or more replicas.
#[derive(Debug, Clone, PartialEq)]
pub struct Service {
    /// The service's name (its key in the stack file), unique in the stack.
    pub name: String,
    /// Command template. `{bulwark}` is replaced by this binary's path, `{port}` by the
    /// replica's port, `{addr}` by its address, `{index}` by its index, `{service}` by the
    /// service name.
    pub run: Vec<String>,
    /// How many copies of the process run at once.
    pub replicas: u32,
    /// Whether a replica is started again after its process exits.
    pub restart: RestartPolicy,
    /// Evaluated in order before `restart`; the first rule that matches an exit code wins.
    pub restart_rules: Vec<RestartRule>,
    /// Environment variables set for the replica, on top of bulwark's own environment:
    /// `env_files` in order, then `env`.
    pub env: BTreeMap<String, String>,
    /// Environment variables whose values came from `secrets` files; no name is also in
    /// `env`. Never shown: see [`Secret`].
    pub secrets: BTreeMap<String, Secret>,
    /// Working directory, resolved against the stack file's directory.
    pub cwd: Option<PathBuf>,
    /// The signal that asks a replica to stop.
    pub stop_signal: Signal,
    /// How long a replica may take to stop after `stop_signal` before its process group is killed.
    pub stop_grace: Duration,
    /// Delays between restarts of a replica that keeps exiting.
    pub backoff: Backoff,
    /// Gates liveness and readiness until the replica has come up.
    pub startup: Option<Probe>,
    /// Restarts the replica when it fails.
    pub liveness: Option<Probe>,
    /// When `expose` is set and no readiness probe is given, a TCP readiness probe with
    /// default timings is filled in, so the proxy never routes to a port nobody listens on.
    pub readiness: Option<Probe>,
    /// systemd's notify protocol on a socket of the replica's own, if it speaks it.
    pub notify: Option<Notify>,
    /// Warm restarts from a checkpoint, if the service has `[warm]`.
    pub warm: Option<Warm>,
    /// One leader among the replicas, with fencing tokens.
    pub leader: Option<Leader>,
    /// The disruption budget: replicas that must stay ready through voluntary
    /// disruptions.
    pub min_available: Amount,
    /// How a change that needs new processes reaches the replicas.
    pub rollout: Rollout,
    /// Services that must be ready before this one is started.
    pub depends_on: Vec<String>,
    /// The container the replicas run in (the `oci` driver); `None`: plain processes.
    pub container: Option<Container>,
    /// The proxy in front of the service, if it takes traffic through bulwark.
    pub expose: Option<Expose>,
    /// `[[services.NAME.slo]]`, in file order; names are unique within the service.
    /// Invariant: non-empty only when `expose` is set (SLIs come from bulwark's proxy).
    pub slos: Vec<Slo>,
    /// Autoscaling, if the count follows a target measure.
    pub autoscale: Option<Autoscale>,
    /// What the anomaly detector forecasts this service's replicas against.
    pub anomaly: ServiceAnomaly,
    /// `[services.NAME.resources]`: each replica's cgroup limits.
    pub resources: Resources,
    /// What follows an OOM kill.
    pub on_oom: OnOom,
    /// Who the kernel kills first under memory pressure.
    pub priority: Priority,
    /// `[services.NAME.placement]`: where the replicas run in cluster mode.
    pub placement: PlacementRules,
}

crate::spelled! {
    /// When a replica whose process exited is started again.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub enum RestartPolicy {
        /// Restart after every exit.
        Always = "always",
        /// Restart only after a non-zero exit or a kill by a signal.
        OnFailure = "on-failure",
        /// Never restart; the replica stays down.
        Never = "never",
    }
}

crate::spelled! {
    /// What a matching restart rule does.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub enum RestartAction {
        /// Start the replica again (after backoff).
        Restart = "restart",
        /// Leave the replica stopped.
        Stop = "stop",
    }
}

/// How one probe checks a replica, and how often.
#[derive(Debug, Clone, PartialEq)]
pub struct Probe {
    /// What the probe does.
    pub action: ProbeAction,
    /// Time between two checks.
    pub period: Duration,
    /// How long one check may take before it counts as failed.
    pub timeout: Duration,
    /// Time after the replica starts before the first check.
    pub initial_delay: Duration,
    /// Consecutive failures that count as failed. Invariant: >= 1.
    pub failure_threshold: u32,
    /// Consecutive successes that count as succeeded. Invariant: >= 1 (and == 1 for
    /// liveness and startup, as in Kubernetes).
    pub success_threshold: u32,
}

crate::spelled! {
    /// Which of a service's three probes a [`Probe`] is (its key in a service table); they
    /// differ in defaults and rules. Events and metrics name a probe by it too (serialized
    /// as `liveness`, `readiness`, `startup`).
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
    #[serde(rename_all = "snake_case")]
    pub enum ProbeKind {
        /// Failing: restart the replica.
        Liveness = "liveness",
        /// Failing: take the replica out of the balancer.
        Readiness = "readiness",
        /// Gates the other two: until it succeeds, liveness and readiness are not run.
        Startup = "startup",
        /// `[services.NAME.notify] watchdog`: no `WATCHDOG=1` in time; restart the replica.
        Watchdog = "watchdog",
    }
}

/// What a probe does to check a replica.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProbeAction {
    /// GET on the replica's port; healthy when 200 <= status < 400.
    Http {
        /// The path requested, e.g. `/healthz`.
        path: String,
    },
    /// Healthy when a TCP connection to the replica's port succeeds.
    Tcp,
    /// Healthy when the command exits 0.
    Exec {
        /// The program and its arguments.
        command: Vec<String>,
    },
}

/// `[services.NAME.expose]`: the proxy in front of a service and its policies.
///
/// Every policy has a default a user can trust without tuning; each default is written
/// next to its field with the anchor it is compared with.
#[derive(Debug, Clone, PartialEq)]
pub struct Expose {
    /// The address the proxy listens on for this service.
    pub listen: SocketAddr,
    /// Whether the proxy speaks HTTP or forwards raw TCP.
    pub protocol: Protocol,
    /// How the proxy picks a replica for each request or connection.
    pub balance: Balance,
    /// Ramp a just-ready replica's share of traffic over this long (0: off, the default,
    /// as in Envoy and HAProxy).
    pub slow_start: Duration,
    /// Cluster mode: this node's healthy replicas first, other nodes' only when none is
    /// (default true).
    pub prefer_local: bool,
    /// Speak HTTP/2 (prior knowledge) to replicas instead of HTTP/1.1.
    pub upstream_http2: bool,
    /// Added to requests that lack it, and returned to the client. Default `x-request-id`.
    pub request_id_header: String,
    /// Proxy timeouts.
    pub timeouts: Timeouts,
    /// When and how failed tries are retried.
    pub retries: Retries,
    /// Opt-in.
    pub hedge: Option<Hedge>,
    /// Passive health checking: ejecting replicas that fail.
    pub outlier: Outlier,
    /// Per-replica circuit breakers.
    pub breaker: Breaker,
    /// Connection and concurrency limits (bulkheads).
    pub limits: Limits,
    /// A request rate limit, if any.
    pub rate_limit: Option<RateLimit>,
    /// Faults injected into HTTP requests, for testing resilience.
    pub faults: Vec<Fault>,
    /// Connection-level faults for `protocol = "tcp"` (the Toxiproxy set).
    pub toxics: Vec<Toxic>,
    /// Header routes first, then weighted splits; the rest goes to this service.
    pub routes: Vec<Route>,
    /// What a client gets when no replica can answer, if anything but bulwark's own error.
    pub fallback: Option<Fallback>,
    /// TLS terminated for the listener's clients; `None`: plain HTTP or TCP (or TLS passed
    /// through).
    pub tls: Option<Tls>,
    /// TLS passed through untouched to the replicas, picked by the client's SNI name
    /// (`protocol = "tcp"` only; never together with `tls`).
    pub passthrough: Option<Passthrough>,
    /// TLS to the replicas; `None`: plain HTTP.
    pub upstream_tls: Option<UpstreamTls>,
    /// An external authorization check before forwarding; `None`: none.
    pub auth: Option<Auth>,
}

crate::spelled! {
    /// What the proxy does when an external authorization check cannot be made.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub enum AuthFailure {
        /// Fail closed: 503.
        Deny = "deny",
        /// Fail open: forward the request unauthenticated.
        Allow = "allow",
    }
}

/// TLS from the proxy to a service's replicas.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamTls {
    /// The CAs of the replicas' certificates (absolute); `None` only with `insecure`.
    pub ca: Option<PathBuf>,
    /// SNI and the name verified; `None`: the replica's IP address.
    pub server_name: Option<String>,
    /// No verification of the replicas' certificates.
    pub insecure: bool,
    /// The proxy's client certificate, for replicas that ask for one.
    pub client: Option<CertFiles>,
}

/// TLS passed through by SNI: the proxy reads the client's hello, never decrypts, and
/// forwards every byte to a replica of the service that claims the name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Passthrough {
    /// The names this service takes on its address.
    pub sni: Vec<SniName>,
    /// Also takes hellos without SNI or with a name no service on the address claims.
    pub default: bool,
}

/// A server name a passthrough service claims: `a.example`, or `*.b.example` (one label
/// in place of `*`, as in certificates). Lowercase; compared without regard to case.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum SniName {
    /// This name exactly.
    Exact(String),
    /// Any name of one more label ending with this suffix (kept with its leading dot).
    Wildcard(String),
}

impl SniName {
    /// Parses `a.example` or `*.b.example`: a DNS name (not an IP address: SNI carries
    /// none), at most one `*`, and only as the whole first label.
    pub fn parse(s: &str) -> Option<SniName> {
        let lower = s.to_ascii_lowercase();
        let (wild, name) = match lower.strip_prefix("*.") {
            Some(rest) => (true, rest),
            None => (false, lower.as_str()),
        };
        let dns = rustls_pki_types::DnsName::try_from(name).is_ok()
            && name.parse::<std::net::IpAddr>().is_err()
            && !name.contains('*')
            && !name.ends_with('.');
        if !dns {
            return None;
        }
        Some(if wild {
            SniName::Wildcard(format!(".{name}"))
        } else {
            SniName::Exact(name.to_owned())
        })
    }

    /// Whether `name` (as a client sent it) is this one; case does not matter.
    pub fn matches(&self, name: &str) -> bool {
        match self {
            SniName::Exact(n) => n.eq_ignore_ascii_case(name),
            SniName::Wildcard(suffix) => {
                name.len() > suffix.len()
                    && name.is_char_boundary(name.len() - suffix.len())
                    && name[name.len() - suffix.len()..].eq_ignore_ascii_case(suffix)
                    && !name[..name.len() - suffix.len()].contains('.')
            }
        }
    }
}

impl std::fmt::Display for SniName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SniName::Exact(n) => f.write_str(n),
            SniName::Wildcard(suffix) => write!(f, "*{suffix}"),
        }
    }
}

/// TLS termination on a listener.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tls {
    /// Certificate and key files (absolute); the first is the default.
    pub certificates: Vec<CertFiles>,
    /// The oldest version accepted.
    pub min_version: TlsVersion,
    /// The CAs of client certificates (absolute); `None`: none asked for.
    pub client_ca: Option<PathBuf>,
    /// Whether a client without a certificate is let in (with `client_ca`).
    pub client_verify: ClientVerify,
}

/// The local control API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Api {
    /// Where it listens.
    pub listen: std::net::SocketAddr,
    /// HTTPS (and mTLS with `client_ca`); `None`: plain HTTP, on loopback only.
    pub tls: Option<Tls>,
    /// The role of a client known by its certificate alone.
    pub client_role: ClientRole,
}

crate::spelled! {
    /// What an API client authenticated by its certificate may do (the API's token roles).
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub enum ClientRole {
        /// Reads.
        Viewer = "viewer",
        /// Reads and acts (restart, scale, silence, faults, rollouts).
        Operator = "operator",
        /// Everything, reloads and tokens included.
        Admin = "admin",
    }
}

crate::spelled! {
    /// Whether a TLS listener with `client_ca` needs a client certificate.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub enum ClientVerify {
        /// No valid certificate, no connection.
        Required = "required",
        /// A client without a certificate is let in; one that presents an invalid one is not.
        Optional = "optional",
    }
}

/// A certificate chain and its private key, PEM files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertFiles {
    /// The chain, leaf first.
    pub cert: PathBuf,
    /// The private key.
    pub key: PathBuf,
}

crate::spelled! {
    /// A TLS protocol version.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub enum TlsVersion {
        /// TLS 1.2 (and 1.3).
        Tls12 = "1.2",
        /// TLS 1.3 only.
        Tls13 = "1.3",
    }
}

crate::spelled! {
    /// How the proxy handles a service's traffic.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub enum Protocol {
        /// HTTP/1.1 and HTTP/2 (prior knowledge) in; requests balanced one by one.
        Http = "http",
        /// Raw TCP: connections balanced, bytes copied both ways.
        Tcp = "tcp",
    }
}

crate::spelled! {
    /// How the proxy picks a replica.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub enum Balance names BalanceName {
        /// Power of two choices over peak-EWMA latency × (in-flight + 1) (default, as
        /// linkerd2-proxy), compared as `policy::P2c` does: near ties go to fewer in flight,
        /// then a coin.
        P2c = "p2c",
        /// Each replica in turn.
        RoundRobin = "round-robin",
        /// Fewest requests in flight (over all replicas).
        LeastRequest = "least-request",
        /// Random, proportional to per-replica weights (by replica index; missing: 1).
        Weighted(Vec<u32>) = "weighted",
        /// Consistent hashing for session affinity: about 1/N of keys move when a replica
        /// leaves.
        Hash(HashOn) = "hash",
    }
}

/// What a consistent-hash balancer hashes to pick a replica.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HashOn {
    /// The value of this request header.
    Header(String),
    /// The value of this cookie.
    Cookie(String),
    /// The client's IP address.
    ClientAddress,
}

crate::spelled! {
    /// A failure `retries.on` retries. Default: connection failures (refused, failed to
    /// connect) and resets (connection closed before a response — idempotent requests only).
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub enum RetryCondition {
        /// Connecting to the replica failed.
        ConnectFailure = "connect-failure",
        /// The connection was closed before a response (idempotent requests only).
        Reset = "reset",
        /// A try ran out of its `per_try_timeout`.
        PerTryTimeout = "per-try-timeout",
        /// Any 5xx answer.
        Status5xx = "5xx",
        /// 502, 503, 504 (and connection failures).
        GatewayError = "gateway-error",
        /// The status codes of `statuses`.
        Status = "status",
    }
}

impl Retries {
    /// Whether failures of this kind are retried.
    pub fn retries_on(&self, condition: RetryCondition) -> bool {
        self.on.contains(&condition)
    }
}

/// Token bucket; over it: 429 with `Retry-After`.
#[derive(Debug, Clone, PartialEq)]
pub struct RateLimit {
    /// Requests per second allowed on average, per key.
    pub rate: f64,
    /// The bucket's capacity: how many requests may come at once after a quiet spell, per key.
    pub burst: u32,
    /// What requests are counted by.
    pub key: RateKey,
    /// Distinct keys remembered at most (least recently used ones are forgotten).
    pub max_keys: u32,
}

/// What a rate limit counts requests by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RateKey {
    /// One bucket for the whole service.
    Service,
    /// One bucket per client IP address.
    ClientAddress,
    /// One bucket per value of this request header.
    Header(String),
}

/// `[[services.NAME.expose.faults]]`: injected by the proxy. 0 % means off.
#[derive(Debug, Clone, PartialEq)]
pub struct Fault {
    /// Share of requests (0..=100) it applies to.
    pub percent: f64,
    /// Only requests carrying this header (any value).
    pub header: Option<String>,
    /// What the fault does to a request.
    pub action: FaultAction,
}

/// What an injected fault does to a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultAction {
    /// Wait this long before forwarding the request.
    Delay(Duration),
    /// Answer at once with this status code.
    Abort(u16),
    /// Close the client connection without an answer.
    Reset,
}

/// `[[services.NAME.expose.routes]]`: send matching requests, or a share of them, to
/// another service (a canary, a new version).
#[derive(Debug, Clone, PartialEq)]
pub struct Route {
    /// The service that gets the matching requests.
    pub to: String,
    /// Which requests the route takes.
    pub matcher: RouteMatch,
    /// The switch the route depends on: while it is off for a request, the request gets
    /// the service's fallback instead.
    pub switch: Option<String>,
}

/// Which requests a route takes.
#[derive(Debug, Clone, PartialEq)]
pub enum RouteMatch {
    /// Requests whose header `name` equals `value`.
    Header {
        /// The header's name.
        name: String,
        /// The value it must equal.
        value: String,
    },
    /// This percentage of the other requests.
    Weight(f64),
}

/// `[[services.NAME.expose.toxics]]`: a Toxiproxy-style fault on TCP connections.
///
/// Invariant: `0 <= toxicity <= 1`; a toxicity of 0 never applies (0 % means off).
#[derive(Debug, Clone, PartialEq)]
pub struct Toxic {
    /// What the toxic does.
    pub kind: ToxicKind,
    /// Share of connections the toxic applies to, decided once per connection.
    pub toxicity: f64,
    /// Which way of the connection it acts on.
    pub direction: Direction,
}

crate::spelled! {
    /// Which way a toxic acts: on bytes from the client to the replica, or back.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub enum Direction {
        /// Bytes from the client to the replica.
        Upstream = "upstream",
        /// Bytes from the replica back to the client.
        Downstream = "downstream",
    }
}

crate::spelled! {
    /// What a toxic does to a TCP connection.
    #[derive(Debug, Clone, PartialEq)]
    pub enum ToxicKind names ToxicType {
        /// Delays every chunk by `latency` ± `jitter`.
        Latency {
            /// The mean delay.
            latency: Duration,
            /// How far a delay may differ from the mean.
            jitter: Duration,
        } = "latency",
        /// Limits throughput to `rate` bytes per second.
        Bandwidth {
            /// Bytes per second.
            rate: u64,
        } = "bandwidth",
        /// Resets the connection (RST) after `timeout` (0: at once).
        ResetPeer {
            /// The wait before the reset; 0 resets at once.
            timeout: Duration,
        } = "reset-peer",
        /// Stops all data; closes the connection after `timeout` (0: never).
        Timeout {
            /// Time until the stalled connection is closed; 0 keeps it open.
            timeout: Duration,
        } = "timeout",
        /// Delays the close of the connection by `delay`.
        SlowClose {
            /// How long the close is held back.
            delay: Duration,
        } = "slow-close",
        /// Splits data into chunks of `average_size` ± `size_variation` bytes, `delay` apart.
        Slicer {
            /// Mean chunk size, in bytes.
            average_size: usize,
            /// How far a chunk's size may differ from the mean, in bytes.
            size_variation: usize,
            /// Pause between chunks.
            delay: Duration,
        } = "slicer",
        /// Closes the connection once `bytes` bytes have passed.
        LimitData {
            /// Bytes let through before the close.
            bytes: u64,
        } = "limit-data",
    }
}

/// `[[services.NAME.slo]]`: a service level objective over the requests bulwark's proxy
/// answers for the service.
///
/// Invariant: `0 < objective < 1`, `period >= 1m`, a latency threshold is `> 0`.
#[derive(Debug, Clone, PartialEq)]
pub struct Slo {
    /// Unique within its service; lowercase ASCII letters, digits, `-` and `_`.
    pub name: String,
    /// What the SLO measures.
    pub kind: SloKind,
    /// The target share of good requests as a fraction (`objective = 99.9` in the file
    /// is `0.999` here).
    pub objective: f64,
    /// The rolling window the objective is measured over (default 30 days). Alert windows
    /// are the SRE Workbook's 30-day windows scaled by `period / 30d`.
    pub period: Duration,
    /// Which burn-rate alerts the SLO raises.
    pub alerts: SloAlerts,
}

impl Slo {
    /// The error budget as a fraction of requests: `1 - objective`.
    pub fn error_budget(&self) -> f64 {
        1.0 - self.objective
    }
}

crate::spelled! {
    /// What an SLO measures.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub enum SloKind names SloKindName {
        /// Share of requests that did not fail. Failed: status >= 500, or bulwark answered
        /// by itself because no replica was ready, every try failed, the request timed out, or
        /// it was shed. 4xx are the client's doing and count as good, except 429 when
        /// `count_429` is set (`count_429_as_error = true`).
        Availability {
            /// Whether 429 (rate limited) answers count as failures.
            count_429: bool,
        } = "availability",
        /// Share of successful requests (status < 500, answered by a replica) that were
        /// faster than `threshold`. Failed requests are left to the availability SLO.
        Latency {
            /// The latency a good request stays under.
            threshold: Duration,
        } = "latency",
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

/// `[[alerts.sinks]]`: exactly one of `log = true`, `webhook = "http://…"`, `exec = [..]`.
#[derive(Debug, Clone, PartialEq)]
pub enum AlertSink {
    /// Write notifications to bulwark's log.
    Log,
    /// A JSON POST, retried with backoff up to `attempts` times. Plain HTTP only.
    Webhook {
        /// Where the notification is posted.
        url: http::Uri,
        /// How long one attempt may take.
        timeout: Duration,
        /// Tries in all before the notification is dropped.
        attempts: u32,
    },
    /// A command run with the JSON payload on stdin.
    Exec {
        /// The program and its arguments.
        command: Vec<String>,
        /// How long the command may run before its process group is killed.
        timeout: Duration,
    },
}

/// A backup, checked: its service exists, its paths are resolved.
#[derive(Debug, Clone, PartialEq)]
pub struct Backup {
    /// Unique among backups.
    pub name: String,
    /// What is saved.
    pub source: BackupSource,
    /// When backups run.
    pub schedule: Schedule,
    /// The restic repository; joined onto the stack file's directory.
    pub repository: PathBuf,
    /// The repository password's file, joined onto the stack file's directory.
    pub password_file: PathBuf,
    /// Recovery point objective; `None`: twice the schedule's interval.
    pub rpo: Option<Duration>,
    /// Recovery time objective for drills; `None`: no RTO alert.
    pub rto: Option<Duration>,
    /// Run before each backup.
    pub pre: Option<Hook>,
    /// Run after each backup.
    pub post: Option<Hook>,
    /// Retention.
    pub keep: Keep,
    /// Scheduled verification.
    pub verify: Verify,
    /// Scheduled restore drills.
    pub drill: Option<Drill>,
}

/// What a backup saves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BackupSource {
    /// Paths of a service, resolved against its working directory.
    Service {
        /// The service's name.
        service: String,
        /// Absolute, or joined onto the service's working directory.
        paths: Vec<PathBuf>,
    },
    /// bulwark's own journal.
    State,
}

impl BackupSource {
    /// The service whose context hooks and drills run in.
    pub fn service(&self) -> Option<&str> {
        match self {
            BackupSource::Service { service, .. } => Some(service),
            BackupSource::State => None,
        }
    }
}

crate::spelled! {
    /// What a failed hook does to its backup.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub enum OnError {
        /// A failed pre-hook cancels the backup.
        Fail = "fail",
        /// It is logged and the backup goes on.
        Continue = "continue",
    }
}

/// Scheduled verification of a repository.
#[derive(Debug, Clone, PartialEq)]
pub struct Verify {
    /// When it runs.
    pub schedule: Schedule,
    /// Each run reads one of this many parts of the data, in turn.
    pub parts: u32,
}

/// Scheduled restore drills.
#[derive(Debug, Clone, PartialEq)]
pub struct Drill {
    /// When they run.
    pub schedule: Schedule,
    /// What proves the restored replica whole.
    pub check: DrillCheck,
    /// `None`: the service's own `run`, with saved paths replaced by restored ones.
    pub run: Option<Vec<String>>,
    /// How long a whole drill may take.
    pub timeout: Duration,
}

/// A drill's check against the scratch replica.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DrillCheck {
    /// A command that exits 0 (`{port}` and `{dir}` substituted).
    Command(Vec<String>),
    /// A path that answers 2xx.
    Http(String),
}

/// A cron schedule (five fields, or six with seconds), as written and parsed.
#[derive(Debug, Clone)]
pub struct Schedule {
    text: String,
    cron: croner::Cron,
}

impl Schedule {
    /// Parses cron syntax; the error says what is wrong.
    pub fn parse(text: &str) -> Result<Schedule, String> {
        let cron = croner::parser::CronParser::builder()
            .seconds(croner::parser::Seconds::Optional)
            .build()
            .parse(text.trim())
            .map_err(|e| e.to_string())?;
        Ok(Schedule {
            text: text.trim().to_owned(),
            cron,
        })
    }

    /// The first run strictly after `after`, in `after`'s time zone; `None` if the
    /// pattern never fires again (such as 30 February).
    pub fn next_after(&self, after: &jiff::Zoned) -> Option<jiff::Zoned> {
        self.cron.find_next_occurrence(after, false).ok()
    }

    /// As written.
    pub fn as_str(&self) -> &str {
        &self.text
    }
}

impl PartialEq for Schedule {
    fn eq(&self, other: &Self) -> bool {
        self.text == other.text
    }
}
