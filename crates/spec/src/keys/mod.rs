//! Every key of the stack file, declared once: its type, its kind (TOML type, range or
//! choices), its default and its doc. The reader, the reference (`docs/stack-file.md`),
//! the JSON Schema and `bulwark explain` all come from here.
//!
//! To add a key: one entry here, then its use in `check` (where the domain type is built).
//! `cargo test -p reference` then fails until `docs/stack-file.md` is regenerated
//! (`BULWARK_BLESS=1 cargo test -p reference --test reference`).

use std::net::SocketAddr;
use std::time::Duration;

use toml::Spanned;

// The whole vocabulary of declarations, so that a key of a new type needs no import.
use crate::model::*;
use crate::schema::Omitted::{self, ByTable, Optional, Required};
use crate::schema::*;
use crate::section;

pub(crate) mod auth;
pub(crate) use auth::*;
pub(crate) mod chaos;
pub(crate) use chaos::*;
pub(crate) mod container;
pub(crate) mod degrade;
pub(crate) mod leader;
pub(crate) mod notify;
pub(crate) mod placement;
pub(crate) mod remedy;
pub(crate) mod resources;
pub(crate) mod rollout;
pub(crate) mod warm;
pub(crate) use degrade::*;

/// A count with no upper limit but the type's.
const MANY: i64 = u32::MAX as i64;

section! {
    /// The stack file.
    pub(crate) struct StackTable {
        /// The services, one `[services.NAME]` table each. NAME starts with an ASCII letter
        /// and holds ASCII letters, digits, `-` and `_`.
        services: Vec<(Spanned<String>, Spanned<ServiceTable>)> =
            map("NAME", table::<ServiceTable>()), Optional("");
        /// The local control API served by `bulwark up`.
        api: ApiTable = table::<ApiTable>(), Omitted::Table;
        /// Stack-wide supervision limits.
        supervisor: SupervisorTable = table::<SupervisorTable>(), Omitted::Table;
        /// How alert notifications are grouped and where they go.
        alerts: AlertsTable = table::<AlertsTable>(), Omitted::Table;
        /// How long the durable journal keeps what it records.
        journal: JournalTable = table::<JournalTable>(), Omitted::Table;
        /// Backups in restic's repository format, verified and restore-drilled on schedules.
        backups: Vec<BackupTable> = tables::<BackupTable>(), Optional("");
        /// Chaos experiments, run by `bulwark chaos run NAME` or on their schedules.
        experiments: Vec<ExperimentTable> = tables::<ExperimentTable>(), Optional("");
        /// Run-time switches, one `[switches.NAME]` table each (NAME as for services).
        switches: Vec<(Spanned<String>, Spanned<SwitchTable>)> =
            map("NAME", table::<SwitchTable>()), Optional("");
        /// Automated remediations: a trigger, actions, and the guards that keep them safe.
        remediations: Vec<remedy::RemediationTable> = tables::<remedy::RemediationTable>(), Optional("");
        /// Stack-wide limits on automated actions.
        remediation: remedy::RemediationSettingsTable = table::<remedy::RemediationSettingsTable>(), Omitted::Table;
        /// Anomaly detection and its default pack.
        anomaly: remedy::AnomalyTable = table::<remedy::AnomalyTable>(), Omitted::Table;
    }
}

section! {
    /// The local control API served by `bulwark up`.
    pub(crate) struct ApiTable {
        /// The API's address; port 0 picks a free one (written to the state directory).
        /// A non-loopback address needs `[api.tls]`.
        listen: SocketAddr = address(), r#""127.0.0.1:7700""#;
        /// HTTPS for the API, with the keys and meaning of `expose.tls` (certificates by
        /// SNI, files read again when they change, `client_ca` for mTLS). Required on a
        /// non-loopback `listen`. The CLI then verifies the API against the CA in
        /// `BULWARK_CACERT`.
        tls: TlsTable = table::<TlsTable>(), Optional("plain HTTP, on a loopback address only");
        /// The role of a client authenticated by its certificate (with `tls.client_ca`) and
        /// sending no token; a token, when sent, decides instead. Audited as `CN=` and the
        /// certificate's subject common name.
        client_role: ClientRole = choice(ClientRole::CHOICES), r#""viewer""#;
        /// Deprecated, without effect: a non-loopback `listen` needs `[api.tls]` instead.
        allow_remote: bool = boolean(), "false";
    }
}

section! {
    /// Stack-wide supervision limits.
    pub(crate) struct SupervisorTable => #[derive(Debug, Clone, PartialEq)] pub struct SupervisorSettings: Default {
        /// Replicas restarting (spawned, not yet started) at once across the whole stack:
        /// the restart-storm guard.
        max_concurrent_restarts: u32 = int(1, MANY), "8";
    }
}

section! {
    /// How long the durable journal keeps what it records.
    pub(crate) struct JournalTable => #[derive(Debug, Clone, PartialEq)] pub struct JournalSettings: Default {
        /// Resolved alerts, ended incidents and expired silences older than this are
        /// pruned, at start and hourly.
        retention: Duration = duration().long(), r#""30d""#;
    }
}

section! {
    /// How alert notifications are grouped and where they go.
    pub(crate) struct AlertsTable {
        /// Notices of one service arriving within this long go out together
        /// (Alertmanager's 30s is tuned for fleets; one machine wants to know sooner).
        group_wait: Duration = duration(), r#""1s""#;
        /// A still-firing alert is notified again after this long; "0s" turns reminders off.
        repeat_interval: Duration = duration().long(), r#""4h""#;
        /// Where notifications go; each entry has exactly one of `log`, `webhook`, `exec`.
        sinks: Vec<SinkTable> = tables::<SinkTable>(), Optional("one `log` sink");
    }
}

section! {
    /// An alert sink: exactly one of `log = true`, `webhook = "http://…"`, `exec = [..]`.
    pub(crate) struct SinkTable {
        /// Write notifications to bulwark's log.
        log: bool = Bool::only_true("is not a sink; remove the entry to have no log sink"), Optional("");
        /// POST each notification as JSON (Alertmanager-like), retried with backoff.
        webhook: http::Uri = text("an http:// URL such as \"http://127.0.0.1:9000/hook\"", webhook_url),
            Optional("");
        /// Run this command with the JSON notification on stdin.
        exec: Vec<String> = command(), Optional("");
        /// How long one delivery may take (a command's process group is then killed).
        timeout: Duration = duration().positive(), r#""5s""#;
        /// Webhook tries in all before the notification is dropped.
        attempts: u32 = int(1, 100), "5";
    }
}

fn webhook_url(s: &str) -> Result<http::Uri, String> {
    s.parse::<http::Uri>()
        .ok()
        .filter(|u| u.scheme_str() == Some("http") && u.host().is_some_and(|h| !h.is_empty()))
        .ok_or_else(|| " (https is not supported yet: put a local relay in front)".to_owned())
}

section! {
    /// One supervised program, run as one or more replicas.
    pub(crate) struct ServiceTable {
        /// The command and its arguments, never through a shell. `{bulwark}` (this binary),
        /// `{port}` (the replica's port, also `$PORT`), `{addr}` (the address it is reached
        /// at: 127.0.0.1, or its container's own with `network = "private"`), `{index}` and
        /// `{service}` are substituted (in exec probes and hooks too); an empty argument is
        /// passed as is, only the program must be named.
        run: Vec<String> = command(), Required(r#"run = ["./server", "--port", "{port}"]"#);
        /// How many copies run at once.
        replicas: u32 = int(0, 1000), "1";
        /// Whether a replica whose process exited is started again: `on-failure` after a
        /// non-zero exit or death by a signal.
        restart: RestartPolicy = choice(RestartPolicy::CHOICES), r#""always""#;
        /// Rules checked in order before `restart`; death by a signal matches none.
        restart_rules: Vec<RestartRuleTable> = tables::<RestartRuleTable>(), Optional("");
        /// Environment variables (strings, with the substitutions of `run`). Replicas also
        /// get `PORT`, `BULWARK_SERVICE`, `BULWARK_INDEX` and `BULWARK_REPLICA`.
        env: Vec<(Spanned<String>, Spanned<String>)> = map("NAME", string().quote_hint()), Optional("");
        /// Files of environment variables in dotenv format (`KEY=VALUE` lines, `#` comments,
        /// an optional `export`, values optionally in quotes), relative to the stack file's
        /// directory and read when the stack is loaded (`up`, `reload`, `check`). Later
        /// files win over earlier ones, and `env` over them all.
        env_files: Vec<Spanned<String>> = list(spanned(text("a file path", directory))), Optional("");
        /// Secret environment variables: `NAME = "FILE"` (relative to the stack file's
        /// directory). The value is the file's content without its trailing newlines, read
        /// when the stack is loaded; the file must be a regular file of at most 64 KiB that
        /// only its owner can read (`chmod 600`). A value is never shown: the API and
        /// `bulwark status` give names only, and where bulwark echoes a replica's output
        /// (`bulwark logs`, `up`'s own output, events) every secret of the service of 4
        /// bytes or more is replaced by `***`.
        secrets: Vec<(Spanned<String>, Spanned<String>)> =
            map("NAME", text("a file path", directory)), Optional("");
        /// The working directory, relative to the stack file's directory.
        cwd: String = text("a directory path", directory), Optional("bulwark's own");
        /// The signal that asks a replica to stop, sent to its process group (then SIGCONT,
        /// so a stopped process can act on it). `TERM`, `sigterm` and `SIGTERM` all work.
        stop_signal: Signal = text("a signal name such as \"SIGTERM\", \"INT\" or \"QUIT\"", signal),
            r#""SIGTERM""#;
        /// Drain and stop signal, then SIGKILL of the whole process group after this long.
        stop_grace: Duration = duration(), r#""10s""#;
        /// The disruption budget: replicas that must stay ready through voluntary
        /// disruptions (chaos experiments refuse to start or to break more), as a count or
        /// a percentage of `replicas` rounded up (Kubernetes' `minAvailable`).
        min_available: Amount = count_or_percent(1000), "0";
        /// How a change that needs new processes reaches the replicas.
        rollout: rollout::RolloutTable = table::<rollout::RolloutTable>(), Omitted::Table;
        /// Services started first, each until it has a ready replica; stopped after this one.
        depends_on: Vec<Spanned<String>> = list(spanned(string())), Optional("");
        /// Delays between restarts of a replica that keeps exiting.
        backoff: BackoffTable = table::<BackoffTable>(), Omitted::Table;
        /// Gates liveness and readiness until the replica has come up.
        startup: ProbeTable = table::<ProbeTable>(), Optional("no startup probe");
        /// Restarts the replica when it fails `failure_threshold` times in a row.
        liveness: ProbeTable = table::<ProbeTable>(), Optional("no liveness probe");
        /// Takes the replica out of the balancer while failing. With `expose` and no
        /// readiness probe, a TCP readiness probe is implied.
        readiness: ProbeTable = table::<ProbeTable>(), Optional("none, or TCP with `expose`");
        /// Run the replicas in OCI containers through runc (the `oci` driver).
        container: container::ContainerTable = table::<container::ContainerTable>(), Optional("plain processes");
        /// systemd's notify protocol: readiness (`READY=1`) and a watchdog pushed by the
        /// replica, its `STATUS=` line.
        notify: notify::NotifyTable = table::<notify::NotifyTable>(), Optional("no notify socket");
        /// Warm restarts: a dead replica is restored from a checkpoint of a warmed-up one.
        warm: warm::WarmTable = table::<warm::WarmTable>(), Optional("cold starts only");
        /// One leader among the replicas, the others standbys, with fencing tokens.
        leader: leader::LeaderTable = table::<leader::LeaderTable>(), Optional("every replica is alike");
        /// The proxy in front of the service.
        expose: ExposeTable = table::<ExposeTable>(), Optional("not exposed");
        /// Service-level objectives, measured by the proxy (needs `expose`).
        slo: Vec<SloTable> = tables::<SloTable>(), Optional("");
        /// Autoscaling between `min` and `max` replicas on a target measure.
        autoscale: remedy::AutoscaleTable = table::<remedy::AutoscaleTable>(), Optional("a fixed count");
        /// What the anomaly detector forecasts this service's replicas against.
        anomaly: remedy::ServiceAnomalyTable = table::<remedy::ServiceAnomalyTable>(), Omitted::Table;
        /// Memory, CPU and process limits of each replica (cgroups).
        resources: resources::ResourcesTable = table::<resources::ResourcesTable>(), Optional("no limits");
        /// What follows when the kernel's OOM killer kills a replica (past
        /// `resources.memory`, or with the machine out of memory): `restart` as `restart`
        /// and `restart_rules` say, or `stop` and stay stopped until a restart is asked for.
        on_oom: OnOom = choice(OnOom::CHOICES), r#""restart""#;
        /// Which replicas the kernel kills first when the machine runs out of memory
        /// (their `oom_score_adj`: `critical` -500, `high` -250, `normal` 0, `low` 500).
        /// bulwark itself is at -900, so it goes after them all.
        priority: Priority = choice(Priority::CHOICES), r#""normal""#;
        /// Where the replicas run in cluster mode: spread, constraints on node labels,
        /// anti-affinity, `max_per_node` (requests are `resources`).
        placement: placement::PlacementTable = table::<placement::PlacementTable>(),
            Optional("spread over nodes, then zones");
    }
}

fn directory(s: &str) -> Result<String, String> {
    if s.is_empty() {
        Err("; omit it to use the stack file's directory".into())
    } else if s.contains('\0') {
        Err("; it must not contain a NUL character".into())
    } else {
        Ok(s.to_owned())
    }
}

/// `TERM`, `sigterm` and `SIGTERM` all name the same signal: people write all three.
fn signal(s: &str) -> Result<Signal, String> {
    let upper = s.trim().to_ascii_uppercase();
    let bare = upper.trim_start_matches("SIG");
    format!("SIG{bare}").parse().map_err(|_| {
        let names = Signal::iterator().map(|s| s.as_str().trim_start_matches("SIG"));
        crate::problem::suggest(bare, names)
            .map(|s| format!("; did you mean \"SIG{s}\"?"))
            .unwrap_or_default()
    })
}

section! {
    /// A restart rule: `{ exit_codes = [3], action = "stop" }`.
    pub(crate) struct RestartRuleTable => #[derive(Debug, Clone, PartialEq, Eq)] pub struct RestartRule {
        /// The exit codes the rule matches.
        exit_codes: Vec<i32> =
            list(int(0, 255)).non_empty("list the exit codes this rule applies to"), Required("");
        /// What to do when it matches.
        action: RestartAction = choice(RestartAction::CHOICES), Required("");
    }
}

section! {
    /// Crash-loop backoff: the restart delay grows from `initial` to `max`. Invariant:
    /// `initial <= max`, `multiplier >= 1`, `0 <= jitter < 1`.
    pub(crate) struct BackoffTable => #[derive(Debug, Clone, Copy, PartialEq)] pub struct Backoff: Default {
        /// The first delay.
        initial: Duration = duration().positive(), r#""250ms""#;
        /// The longest delay.
        max: Duration = duration(), r#""30s""#;
        /// A replica that stayed up this long has its backoff reset.
        reset_after: Duration = duration(), r#""60s""#;
        /// How much each delay grows over the previous one.
        multiplier: f64 = number(1.0, f64::MAX), "2.0";
        /// Fraction by which a delay may be shortened at random (never below `initial`).
        jitter: f64 = number(0.0, 1.0).below_max(), "0.2";
    }
}

section! {
    /// A probe: exactly one of `http`, `tcp`, `exec`, and its timings (as in Kubernetes).
    pub(crate) struct ProbeTable {
        /// GET this path on the replica's port; healthy if 200 ≤ status < 400.
        http: String = text("a path starting with `/`", http_path), Optional("");
        /// Healthy when a TCP connection to the replica's port succeeds.
        tcp: bool = Bool::only_true("is not a probe action; use `tcp = true` to probe by connecting to \
            the replica's port, or set `http` or `exec` instead"), Optional("");
        /// Healthy when this command exits 0.
        exec: Vec<String> = command(), Optional("");
        /// Time between two checks (Kubernetes: 10s).
        period: Duration = duration().positive(), ByTable(&[("startup", r#""250ms""#)], r#""1s""#);
        /// How long one check may take.
        timeout: Duration = duration().positive(), r#""1s""#;
        /// Time after the replica starts before the first check.
        initial_delay: Duration = duration(), r#""0s""#;
        /// Consecutive failures that count as failed (startup: 120, 30 s to come up).
        failure_threshold: u32 = int(1, MANY), ByTable(&[("startup", "120")], "3");
        /// Consecutive successes that count as succeeded; 1 for liveness and startup.
        success_threshold: u32 = int(1, MANY), "1";
    }
}

fn http_path(s: &str) -> Result<String, String> {
    if s.chars().any(|c| c.is_whitespace() || c.is_control()) {
        // It goes into a request line as written.
        Err(" (spaces and control characters must be percent-encoded, as %20)".into())
    } else if s.starts_with('/') {
        Ok(s.to_owned())
    } else {
        Err(format!("; did you mean \"/{}\"?", s.trim_start()))
    }
}

section! {
    /// The proxy in front of a service, and its policies.
    pub(crate) struct ExposeTable {
        /// `IP:PORT` the proxy serves for this service.
        listen: SocketAddr = address(), Required(r#"listen = "127.0.0.1:8080""#);
        /// `http`, or `tcp` (connections balanced; toxics apply).
        protocol: Protocol = choice(Protocol::CHOICES),
            r#""http""#;
        /// `p2c`: two random replicas, the lower peak-EWMA latency × (in-flight + 1) wins
        /// (within 15 % of each other: fewer in flight, then a coin; a replica without a
        /// response for 1 s is tried again); `weighted` needs `weights`, `hash` needs `hash_on` (ring hash, ~1/N of keys move
        /// when a replica leaves).
        balance: BalanceName = choice(BalanceName::CHOICES), r#""p2c""#;
        /// What `balance = "hash"` hashes.
        hash_on: HashOn = text("\"header:NAME\", \"cookie:NAME\" or \"client-address\"", hash_on),
            Optional("");
        /// Weights by replica index, for `balance = "weighted"`.
        weights: Vec<u32> = list(int(0, 1_000_000)), Optional("");
        /// Ramp a just-ready replica's share of traffic over this long ("0s": off); with
        /// `p2c`, the ramp is its chance of taking part in a comparison.
        slow_start: Duration = duration(), r#""0s""#;
        /// Cluster mode: send requests to this node's own replicas while one of them is
        /// healthy (ready, not ejected, breaker closed), and to other nodes' ready replicas
        /// only when none is; `false` balances over every node's replicas alike.
        prefer_local: bool = boolean(), "true";
        /// `http2` speaks HTTP/2 (prior knowledge) to replicas.
        upstream: bool = choice(&[("http1", false), ("http2", true)]), r#""http1""#;
        /// Added to requests that lack it, passed to the replica and returned.
        request_id_header: String = string().non_empty(), r#""x-request-id""#;
        /// How long the proxy waits.
        timeouts: TimeoutsTable = table::<TimeoutsTable>(), Omitted::Table;
        /// When and how failed tries are retried.
        retries: RetriesTable = table::<RetriesTable>(), Omitted::Table;
        /// Hedged requests (with the table present).
        hedge: HedgeTable = table::<HedgeTable>(), Optional("off");
        /// Passive health checking: ejecting replicas that fail.
        outlier: OutlierTable = table::<OutlierTable>(), Omitted::Table;
        /// Per-replica circuit breakers.
        breaker: BreakerTable = table::<BreakerTable>(), Omitted::Table;
        /// Connection and concurrency limits (bulkheads).
        limits: LimitsTable = table::<LimitsTable>(), Omitted::Table;
        /// A token-bucket request rate limit; over it: 429 with `Retry-After`.
        rate_limit: RateLimitTable = table::<RateLimitTable>(), Optional("no limit");
        /// Faults injected into HTTP requests.
        faults: Vec<FaultTable> = tables::<FaultTable>(), Optional("");
        /// Connection faults for `protocol = "tcp"` (the Toxiproxy set).
        toxics: Vec<ToxicTable> = tables::<ToxicTable>(), Optional("");
        /// Header routes first, then weighted splits (percent); the rest stays.
        routes: Vec<RouteTable> = tables::<RouteTable>(), Optional("");
        /// What a client gets when no replica can answer.
        fallback: FallbackTable = table::<FallbackTable>(), Optional("bulwark's own 502, 503 or 504");
        /// TLS for the listener's clients: terminated, or in TCP mode passed through by SNI.
        tls: TlsTable = table::<TlsTable>(), Optional("plain HTTP or TCP");
        /// TLS to the replicas (HTTP only).
        upstream_tls: UpstreamTlsTable = table::<UpstreamTlsTable>(), Optional("plain HTTP");
        /// An external authorization check before forwarding (HTTP only).
        auth: AuthTable = table::<AuthTable>(), Optional("no check");
    }
}

section! {
    /// TLS from the proxy to the replicas: their certificates verified against `ca` for
    /// `server_name`, and optionally a client certificate of the proxy's own. The files
    /// are read at start and when a reload changes `[expose]` (not watched).
    pub(crate) struct UpstreamTlsTable {
        /// The CAs that sign the replicas' certificates, a PEM file relative to the stack
        /// file's directory.
        ca: String = text("a file path", directory), Optional("required unless `insecure_skip_verify`");
        /// The name sent by SNI and that the replicas' certificates must be valid for.
        server_name: String = text("a DNS name or an IP address", server_name),
            Optional("the replica's IP address");
        /// Accept any certificate from the replicas (encryption without authentication):
        /// only for replicas on this machine whose certificates cannot be verified.
        insecure_skip_verify: bool = boolean(), "false";
        /// The proxy's client certificate chain, for replicas that ask for one (PEM).
        cert: String = text("a file path", directory), Optional("none");
        /// Its private key (PEM).
        key: String = text("a file path", directory), Optional("none; required with `cert`");
    }
}

section! {
    /// TLS for a listener's clients (rustls), terminated by the proxy: on an HTTP listener
    /// HTTP/2 and HTTP/1.1 are offered by ALPN; in TCP mode the plaintext is relayed to a
    /// replica (no ALPN). The files are read again when they change, for new connections
    /// (open ones keep theirs). Or, in TCP mode, `passthrough = true`: TLS is not
    /// terminated; the client's hello is read for its SNI name and every byte, the hello
    /// included, goes to a replica of the service that claims the name (`sni`), so several
    /// TCP services can share one `listen` address (HAProxy's `req.ssl_sni`, Traefik's
    /// `HostSNI` with `passthrough`).
    pub(crate) struct TlsTable {
        /// The certificates with their keys, PEM files relative to the stack file's
        /// directory. A client's SNI name picks the first certificate valid for it; the
        /// first is served when none is (or without SNI).
        certificates: Vec<CertTable> = tables::<CertTable>(),
            Optional("required unless `passthrough = true`");
        /// The oldest TLS version accepted.
        min_version: TlsVersion = choice(TlsVersion::CHOICES),
            r#""1.2""#;
        /// Client certificates (mTLS): the CAs that sign them, a PEM file relative to the
        /// stack file's directory (read again when it changes, like the certificates).
        client_ca: String = text("a file path", directory), Optional("no client certificate asked for");
        /// With `client_ca`: `required` refuses a client without a valid certificate;
        /// `optional` also lets in one without any (a certificate presented must be valid).
        client_verify: ClientVerify = choice(ClientVerify::CHOICES), r#""required""#;
        /// TCP mode only: do not terminate TLS; forward it untouched to the replicas, which
        /// hold the certificates (the proxy never sees a key or a byte of plaintext). The
        /// client's hello must arrive whole within 16 KiB and `timeouts.header_read` (the
        /// longest of the services sharing the address), else the connection is closed.
        passthrough: bool = boolean(), "false";
        /// With `passthrough`: the SNI names this service takes on its `listen` address,
        /// `a.example` or `*.b.example` (one label for `*`). An exact name wins over a
        /// wildcard; no name may be claimed by two services of one address.
        sni: Vec<crate::model::SniName> = list(text("a DNS name such as \"a.example\" or \"*.b.example\"", sni_name)).non_empty("name the SNI names, or leave `sni` out to take every name"),
            Optional("every name (the address's default)");
        /// With `passthrough`: also take hellos without SNI, or with a name no service on
        /// the address claims (one service per address). Without it such a connection is
        /// closed and counted (`bulwark_proxy_policy_events_total{event="sni_unclaimed"}`).
        default: bool = boolean(), Optional("true without `sni`, else false");
    }
}

section! {
    /// A certificate and its private key.
    pub(crate) struct CertTable {
        /// The certificate chain, leaf first (PEM).
        cert: String = text("a file path", directory), Required(r#"cert = "web.pem""#);
        /// Its private key (PEM: PKCS#8, PKCS#1 or SEC1).
        key: String = text("a file path", directory), Required(r#"key = "web.key""#);
    }
}

/// An SNI name a passthrough service claims.
fn sni_name(s: &str) -> Result<crate::model::SniName, String> {
    crate::model::SniName::parse(s).ok_or_else(String::new)
}

/// A name TLS can verify a certificate for.
fn server_name(s: &str) -> Result<String, String> {
    rustls_pki_types::ServerName::try_from(s)
        .map(|_| s.to_owned())
        .map_err(|_| String::new())
}

fn hash_on(s: &str) -> Result<HashOn, String> {
    match s.split_once(':') {
        Some(("header", name)) if !name.is_empty() => Ok(HashOn::Header(name.to_ascii_lowercase())),
        Some(("cookie", name)) if !name.is_empty() => Ok(HashOn::Cookie(name.to_owned())),
        None if s == "client-address" => Ok(HashOn::ClientAddress),
        _ => Err(String::new()),
    }
}

section! {
    /// How long the proxy waits.
    pub(crate) struct TimeoutsTable => #[derive(Debug, Clone, Copy, PartialEq, Eq)] pub struct Timeouts: Default {
        /// To connect to a replica.
        connect: Duration = duration().positive(), r#""1s""#;
        /// For a whole request, every try included.
        request: Duration = duration().positive(), r#""15s""#;
        /// For a quiet connection (for HTTP/1 the shorter of `idle` and `header_read` also
        /// closes idle keep-alive connections).
        idle: Duration = duration().positive(), r#""60s""#;
        /// For a request's head: stops slowloris.
        header_read: Duration = duration().positive(), r#""10s""#;
    }
}

section! {
    /// When and how failed tries are retried, always on a different replica.
    pub(crate) struct RetriesTable => #[derive(Debug, Clone, PartialEq)] pub struct Retries: Default {
        /// Tries in all (2: one retry).
        // Envoy: 1 retry, so 2 tries.
        attempts: u32 = int(1, 10), "2";
        /// What is retried; `status` retries the codes of `statuses`. By default an
        /// idempotent request that got 502, 503 or 504 from one replica is tried once on
        /// another, within the budget: a replica that fails costs its clients nothing
        /// before it is ejected.
        on: Vec<RetryCondition> = list(choice(RetryCondition::CHOICES)), r#"["connect-failure", "reset", "gateway-error"]"#;
        /// Status codes retried with `on = [.., "status"]`.
        statuses: Vec<u16> = list(int(100, 599)), "[]";
        /// How long one try may take ("0s": no limit but `timeouts.request`).
        per_try_timeout: Duration = duration(), r#""0s""#;
        /// The first delay before a retry, doubling to 10×, jittered; a replica's
        /// `Retry-After` (seconds) replaces it.
        // Envoy's 25 ms, capped at 250 ms.
        backoff: Duration = duration(), r#""25ms""#;
        /// Retries allowed over 10 s, as a share of requests (linkerd's budget).
        budget_percent: f64 = number(0.0, 100.0).unit("percent"), "20";
        /// Retries allowed per second on top of `budget_percent`.
        budget_min_per_second: u32 = int(0, 1_000_000), "10";
        /// `all` lets POST and PATCH be retried too.
        all_methods as "methods": bool = choice(&[("idempotent", false), ("all", true)]),
            r#""idempotent""#;
        /// Larger request bodies stream through once and are never retried.
        max_body: usize = int(0, 64 * 1024 * 1024).unit("bytes"), "65536";
    }
}

section! {
    /// Hedging: an idempotent request slower than the percentile gets a second try on
    /// another replica; the first answer wins.
    pub(crate) struct HedgeTable => #[derive(Debug, Clone, Copy, PartialEq)] pub struct Hedge: Default {
        /// The latency percentile past which a request is hedged.
        percentile: f64 = number(1.0, 99.99), "95.0";
        /// Never hedge sooner than this.
        min_delay: Duration = duration(), r#""5ms""#;
    }
}

section! {
    /// Passive health checking (Envoy's outlier detection).
    pub(crate) struct OutlierTable => #[derive(Debug, Clone, Copy, PartialEq)] pub struct Outlier: Default {
        /// `false` turns outlier detection off.
        enabled: bool = boolean(), "true";
        /// Eject after this many 5xx in a row (0: never).
        consecutive_5xx: u32 = int(0, 10_000), "5";
        /// Eject after this many gateway errors (502, 503, 504, connect failures) in a row.
        consecutive_gateway_errors: u32 = int(0, 10_000), "5";
        /// Or when the success rate falls below this.
        success_rate: f64 = number(0.0, 100.0).unit("percent"), "80.0";
        /// Requests needed in the window before the success rate counts.
        success_rate_min_requests: u32 = int(1, 1_000_000), "20";
        /// The window the success rate is measured over.
        success_rate_window: Duration = duration().positive(), r#""10s""#;
        /// The first ejection's length; it grows with each ejection (jittered).
        base_ejection: Duration = duration().positive(), r#""1s""#;
        /// The longest ejection.
        max_ejection: Duration = duration().positive(), r#""60s""#;
        /// At most this share of replicas ejected, and never the last healthy one.
        max_ejection_percent: f64 = number(0.0, 100.0).unit("percent"), "50.0";
        /// Below this share of healthy replicas, traffic spreads over all of them.
        panic_threshold: f64 = number(0.0, 100.0).unit("percent"), "50.0";
        /// Ask the supervisor to restart an ejected replica.
        restart_ejected: bool = boolean(), "false";
    }
}

section! {
    /// Per-replica circuit breakers, on connect failures, resets and timeouts.
    pub(crate) struct BreakerTable => #[derive(Debug, Clone, Copy, PartialEq, Eq)] pub struct Breaker: Default {
        /// Open after this many failures in a row (0: off).
        consecutive_failures: u32 = int(0, 10_000), "5";
        /// How long it stays open before letting one request through (half-open).
        cooldown: Duration = duration().positive(), r#""5s""#;
        /// The longest it stays open, as cooldowns grow.
        max_cooldown: Duration = duration().positive(), r#""60s""#;
    }
}

section! {
    /// Bulkheads: over them, 503 at once with `Retry-After: 1`; memory stays bounded.
    pub(crate) struct LimitsTable => #[derive(Debug, Clone, Copy, PartialEq, Eq)] pub struct Limits: Default {
        /// Client connections at once.
        max_connections: u32 = int(1, 10_000_000), "10000";
        /// Requests forwarded at once.
        max_inflight: u32 = int(1, 10_000_000), "1024";
        /// Requests waiting for an in-flight slot.
        queue: u32 = int(0, 10_000_000), "1024";
        /// How long a request may wait in the queue.
        queue_timeout: Duration = duration(), r#""1s""#;
    }
}

section! {
    /// A token-bucket rate limit.
    pub(crate) struct RateLimitTable {
        /// Requests per second.
        rate: f64 = number(0.001, 10_000_000.0).unit("requests per second"), Required("rate = 100");
        /// Requests allowed at once above the rate.
        burst: u32 = int(1, 10_000_000), Optional("`rate`, rounded up (one second's worth)");
        /// What is limited: `service` (all requests), `client-address` or `header:NAME`.
        key: RateKey = text("\"service\", \"client-address\" or \"header:NAME\"", rate_key),
            r#""service""#;
        /// Most keys tracked at once (memory bound).
        max_keys: u32 = int(1, 10_000_000), "100000";
    }
}

fn rate_key(s: &str) -> Result<RateKey, String> {
    match s.split_once(':') {
        Some(("header", h)) if !h.is_empty() => Ok(RateKey::Header(h.to_ascii_lowercase())),
        None if s == "service" => Ok(RateKey::Service),
        None if s == "client-address" => Ok(RateKey::ClientAddress),
        _ => Err(String::new()),
    }
}

section! {
    /// A fault injected by the proxy: `percent` and/or `header`, and one of `delay`,
    /// `abort`, `reset`.
    pub(crate) struct FaultTable {
        /// Share of requests affected ("0": off).
        percent: f64 = number(0.0, 100.0).unit("percent"), Optional("100 with `header`");
        /// Only requests carrying this header.
        header: String = string().non_empty(), Optional("every request");
        /// Delay the request this long.
        delay: Duration = duration(), Optional("");
        /// Answer with this status instead of forwarding.
        abort: u16 = int(200, 599), Optional("");
        /// Reset the client's connection.
        reset: bool = boolean(), Optional("");
    }
}

section! {
    /// A connection fault for `protocol = "tcp"`: `type` and the type's keys.
    pub(crate) struct ToxicTable {
        /// `latency` (`latency`, `jitter`), `bandwidth` (`rate`), `reset-peer` (`timeout`),
        /// `timeout` (`timeout`), `slow-close` (`delay`), `slicer` (`average_size`,
        /// `size_variation`, `delay`), `limit-data` (`bytes`).
        kind as "type": ToxicType = choice(ToxicType::CHOICES), Required("");
        /// Share of connections affected, 0 to 1.
        toxicity: f64 = number(0.0, 1.0), "1.0";
        /// `downstream` (to the client) or `upstream` (to the replica).
        direction: Direction = choice(Direction::CHOICES), r#""downstream""#;
        /// `latency`: added delay.
        latency: Duration = duration(), r#""0s""#;
        /// `latency`: random extra delay, up to this.
        jitter: Duration = duration(), r#""0s""#;
        /// `bandwidth`: bytes per second.
        rate: u64 = int(1, MANY).unit("bytes per second"), "1048576";
        /// `reset-peer`, `timeout`: after this long ("0s": at once / forever).
        timeout: Duration = duration(), r#""0s""#;
        /// `slow-close`, `slicer`: delay before closing, or between slices.
        delay: Duration = duration(), r#""0s""#;
        /// `slicer`: average slice size.
        average_size: usize = int(1, 1 << 20).unit("bytes"), "64";
        /// `slicer`: slice size variation.
        size_variation: usize = int(0, 1 << 20).unit("bytes"), "0";
        /// `limit-data`: close the connection after this many bytes.
        bytes: u64 = int(0, i64::MAX).unit("bytes"), "0";
    }
}

section! {
    /// A route to another service: `to` and `header = "x-canary: 1"` or `weight = 10`.
    pub(crate) struct RouteTable {
        /// The service requests go to.
        to: String = string().non_empty(), Required(r#"to = "web-canary""#);
        /// Share of requests, in percent (weighted split).
        weight: f64 = number(0.0, 100.0).unit("percent"), Optional("");
        /// Requests carrying this header and value.
        header: (String, String) = text("\"NAME: VALUE\" such as \"x-canary: 1\"", route_header),
            Optional("");
        /// A `[switches]` name: while it is off for a request, the request gets the
        /// service's fallback instead (which the service then needs).
        switch: String = string().non_empty(), Optional("always on");
    }
}

fn route_header(s: &str) -> Result<(String, String), String> {
    match s.split_once(':') {
        Some((name, value)) if !name.trim().is_empty() => {
            Ok((name.trim().to_ascii_lowercase(), value.trim().to_owned()))
        }
        _ => Err(String::new()),
    }
}

section! {
    /// A service-level objective, measured by the proxy.
    pub(crate) struct SloTable {
        /// Unique within the service; used in metrics, alerts and URLs.
        name: String = text("a name of lowercase ASCII letters, digits, `-` and `_`", slo_name),
            Required(r#"name = "availability""#);
        /// `availability` (bad: 5xx, timeouts, resets, shed, no replica) or `latency`
        /// (successful requests slower than `threshold` are bad).
        kind: SloKindName = choice(SloKindName::CHOICES), Required("");
        /// The objective, in percent: 99.9 means 99.9 % of requests are good.
        objective: f64 = number(0.0, 100.0).above_min().below_max().unit("percent"),
            Required("objective = 99.9");
        /// The SLO's period (from 1m; short ones are for trying things out).
        period: Duration = duration().long().at_least(Duration::from_secs(60), "SLO periods are usually \"30d\" or \"28d\", \
            and short ones such as \"1h\" are for trying things out"), r#""30d""#;
        /// Availability: count 429 (rate limited) answers as bad.
        count_429_as_error: bool = boolean(), "false";
        /// Latency: the latency a good request stays under.
        threshold: Duration = duration().positive(), Optional("required for latency SLOs");
        /// Which burn-rate alerts are raised, and their guards.
        alerts: SloAlertsTable = table::<SloAlertsTable>(), Omitted::Table;
    }
}

/// SLO names end up in metric labels, alert labels and URLs: keep them plain.
fn slo_name(s: &str) -> Result<String, String> {
    let plain = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_';
    let valid = !s.is_empty() && s.chars().all(plain);
    valid.then(|| s.to_owned()).ok_or_else(String::new)
}

section! {
    /// An SLO's burn-rate alerts: SRE Workbook windows scaled to the period.
    pub(crate) struct SloAlertsTable => #[derive(Debug, Clone, Copy, PartialEq, Eq)] pub struct SloAlerts: Default {
        /// Fast burn: 14.4× over 1h and 5m, or 6× over 6h and 30m; inhibits the ticket.
        page: bool = boolean(), "true";
        /// Slow burn: 1× over 3d and 6h.
        ticket: bool = boolean(), "true";
        /// No burn alert while the long window saw fewer requests than this.
        min_requests: u64 = int(0, MANY), "10";
        /// Alert when the service got no request at all for this long ("0s": off).
        no_data: Duration = duration().long(), r#""0s""#;
    }
}

section! {
    /// A backup: what is saved (a service's paths, or bulwark's own journal), where, when,
    /// how long it is kept, and how it is proven restorable.
    pub(crate) struct BackupTable {
        /// Unique among backups; used in metrics, alerts, the API and the CLI.
        name: String = text("a name of lowercase ASCII letters, digits, `-` and `_`", slo_name),
            Required(r#"name = "db""#);
        /// The service whose data this is: hooks and drills run in its context
        /// (environment, working directory, `{port}`, `{addr}`).
        service: String = string().non_empty(), Optional("needs `state = true` instead");
        /// Directories or files to save, relative to the service's `cwd` (bulwark's own
        /// working directory when it has none, as for the service itself).
        paths: Vec<String> = list(string().non_empty()).non_empty("name what to save"),
            Optional("required with `service`");
        /// Save bulwark's own journal instead (a consistent copy taken while it runs).
        state: bool = boolean(), "false";
        /// When to run, in cron syntax: five fields, or six with seconds first; `@daily`
        /// and the other nicknames work. Times are the machine's local time.
        schedule: Schedule = text("a cron schedule such as \"0 3 * * *\"", schedule),
            Required(r#"schedule = "0 * * * *""#);
        /// The restic repository (a local directory, relative to the stack file's
        /// directory), created by the first backup. One that held snapshots and is gone is
        /// not replaced (its disk may be unmounted) unless an empty directory stands in its
        /// place. `restic` reads everything bulwark writes.
        repository: String = text("a directory path", directory),
            Required(r#"repository = "/var/backups/db""#);
        /// The file holding the repository's password (never the stack file itself);
        /// relative to the stack file's directory. Surrounding whitespace and a byte-order
        /// mark are not part of it, as with `restic --password-file`.
        password_file: String = text("a file path", directory),
            Required(r#"password_file = "/etc/bulwark/restic-password""#);
        /// Recovery point objective: alert when the newest verified backup is older than
        /// this.
        rpo: Duration = duration().long().positive(), Optional("twice the schedule's interval");
        /// Recovery time objective: alert when a restore drill takes longer than this.
        rto: Duration = duration().positive(), Optional("no RTO alert");
        /// Commands run before and after each backup.
        hooks: HooksTable = table::<HooksTable>(), Omitted::Table;
        /// Which snapshots are kept after each backup (restic's `forget` rules); the
        /// newest verified snapshot is always kept.
        keep: KeepTable = table::<KeepTable>(), Omitted::Table;
        /// Scheduled read-back of the repository.
        verify: VerifyTable = table::<VerifyTable>(), Omitted::Table;
        /// Scheduled restore drills into a scratch replica, which measure the RTO.
        drill: DrillTable = table::<DrillTable>(), Optional("no drills");
    }
}

/// Cron syntax, checked by the scheduler's own parser so that what is accepted here runs.
fn schedule(s: &str) -> Result<Schedule, String> {
    Schedule::parse(s).map_err(|e| format!(" ({e})"))
}

section! {
    /// The commands around a backup.
    pub(crate) struct HooksTable {
        /// Run before the data is read, e.g. a database's snapshot or flush command.
        pre: HookTable = table::<HookTable>(), Optional("none");
        /// Run after the backup, whether it succeeded or not.
        post: HookTable = table::<HookTable>(), Optional("none");
    }
}

section! {
    /// A hook: a command run in the service's context (its environment and working
    /// directory; `{port}` and `{addr}` are a running replica's, a ready one first).
    pub(crate) struct HookTable => #[derive(Debug, Clone, PartialEq, Eq)] pub struct Hook {
        /// The command and its arguments, never through a shell.
        run: Vec<String> = command(), Required(r#"run = ["redis-cli", "-p", "{port}", "SAVE"]"#);
        /// How long it may take; its process group is then killed and it has failed.
        timeout: Duration = duration().positive(), r#""1m""#;
        /// `fail`: a failed pre-hook cancels the backup; `continue`: it is logged and the
        /// backup goes on.
        on_error: OnError = choice(OnError::CHOICES),
            r#""fail""#;
    }
}

section! {
    /// restic's keep rules, applied after each backup. The defaults are kopia's.
    pub(crate) struct KeepTable => #[derive(Debug, Clone, Copy, PartialEq, Eq)] pub struct Keep {
        /// The newest snapshots, whatever their age.
        last: u32 = int(0, MANY), "10";
        /// The newest snapshot of each of this many hours.
        hourly: u32 = int(0, MANY), "48";
        /// The newest snapshot of each of this many days.
        daily: u32 = int(0, MANY), "7";
        /// The newest snapshot of each of this many ISO weeks.
        weekly: u32 = int(0, MANY), "4";
        /// The newest snapshot of each of this many months.
        monthly: u32 = int(0, MANY), "24";
        /// The newest snapshot of each of this many years.
        yearly: u32 = int(0, MANY), "3";
    }
}

section! {
    /// Verification: the repository's structure, and a rotating part of its data read
    /// back and checked against its SHA-256 names. Corruption is an alert and an incident,
    /// and the snapshots it touches are marked damaged.
    pub(crate) struct VerifyTable {
        /// When to verify, in cron syntax. Every new snapshot is also read back right
        /// after it is written.
        schedule: Schedule = text("a cron schedule such as \"0 3 * * *\"", schedule),
            r#""30 4 * * *""#;
        /// Each run reads one part of the data, in turn, so all of it is read every
        /// `parts` runs (restic's `--read-data-subset n/parts`); 1 reads it all each time.
        parts: u32 = int(1, 10000), "1";
    }
}

section! {
    /// A restore drill: the newest verified snapshot restored into a scratch directory, a
    /// scratch replica of the service started on it (never in the balancer), a check run
    /// against it; the time from the start of the restore to a passing check is the
    /// measured RTO.
    pub(crate) struct DrillTable {
        /// When to drill, in cron syntax.
        schedule: Schedule = text("a cron schedule such as \"0 3 * * *\"", schedule),
            r#""0 5 * * 0""#;
        /// A command that passes (exit 0) once the restored data is all there, e.g. a
        /// query that counts rows. `{port}` is the scratch replica's port, `{dir}` the
        /// restore directory.
        check: Vec<String> = command(), Optional("needs `http` instead");
        /// An HTTP path that must answer 2xx on the scratch replica's port.
        http: String = text("a path starting with `/`", http_path), Optional("needs `check` instead");
        /// The scratch replica's command; by default the service's own `run`, with every
        /// saved path replaced by its restored copy and a port of its own.
        run: Vec<String> = command(), Optional("the service's `run`");
        /// How long the whole drill may take before it has failed.
        timeout: Duration = duration().positive(), r#""10m""#;
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::ExperimentsFile;
    use crate::schema::Omitted::ByTable;
    use crate::schema::{Section, duration, int};
    use crate::section;

    /// Every declared default reads as its key's kind (defaults are read when a key is
    /// left out, where a failure could only be silent): building the declarations checks
    /// each, in every table it depends on.
    #[test]
    fn every_default_reads() {
        crate::declarations();
        ExperimentsFile::table_doc();
    }

    /// Tables declared wrong on purpose: they are only read.
    #[allow(dead_code, reason = "the tables are read, never used")]
    mod wrong {
        use super::*;

        section! {
            /// A table whose default is out of its key's range.
            pub(crate) struct OutOfRange {
                /// Tries.
                retries: u32 = int(1, 10), "0";
            }
        }

        section! {
            /// A table whose default is wrong only as `startup`.
            pub(crate) struct WrongAsStartup {
                /// Time between two checks.
                period: Duration = duration().positive(), ByTable(&[("startup", r#""0s""#)], r#""1s""#);
            }
        }
    }
    use wrong::{OutOfRange, WrongAsStartup};

    #[test]
    #[should_panic(expected = "OutOfRange().retries` does not read")]
    fn a_default_that_does_not_read_is_caught() {
        OutOfRange::table_doc();
    }

    #[test]
    #[should_panic(expected = "WrongAsStartup(startup).period` does not read")]
    fn a_default_of_one_table_that_does_not_read_is_caught() {
        WrongAsStartup::table_doc();
    }
}
