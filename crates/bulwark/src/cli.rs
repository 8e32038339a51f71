use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum, ValueHint};

/// A self-healing runtime for services: supervised replicas, probes, restarts and a
/// fault-tolerant proxy, in one binary.
#[derive(Parser)]
#[command(name = "bulwark", version)]
pub struct Cli {
    /// Where `up` keeps its API address and token (the other commands read them).
    /// Default: $XDG_STATE_HOME/bulwark or ~/.local/state/bulwark.
    #[arg(long, global = true, env = "BULWARK_STATE_DIR")]
    pub state_dir: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum Command {
    /// Run a stack in the foreground until Ctrl-C or SIGTERM.
    Up(UpArgs),
    /// Cluster mode: register this machine as node NAME in etcd (a lease, kept alive),
    /// follow the other nodes (events `node_joined`, `node_lost`, `node_left`), take part
    /// in electing the cluster's scheduler, run the replicas of the applied stack that it
    /// places on this node, reloading at each new revision or placement, publish their
    /// endpoints, and serve the usual API. SIGTERM leaves the cluster at once (the lease is
    /// revoked), then stops the replicas.
    Agent(AgentArgs),
    /// Cluster mode: every node that joined, alive or lost, with the replicas placed on it, from etcd.
    Nodes {
        #[command(flatten)]
        etcd: EtcdArgs,
        #[arg(long)]
        json: bool,
    },
    /// Cluster mode: check a stack file exactly as `check` does and store it in etcd as the
    /// cluster's next revision; --history lists the stored revisions.
    Apply(ApplyArgs),
    /// Validate a stack file; exit status 2 lists every problem with file:line:column.
    Check {
        #[arg(short = 'f', long = "file")]
        file: PathBuf,
        /// Also check this file of `[[experiments]]` against the stack's services.
        #[arg(long, value_hint = ValueHint::FilePath)]
        experiments: Option<PathBuf>,
    },
    /// Print a systemd unit that runs this stack (`Type=notify`, watchdog, stop timeout
    /// from the services' grace), for /etc/systemd/system.
    SystemdUnit {
        #[arg(short = 'f', long = "file", value_hint = ValueHint::FilePath)]
        file: PathBuf,
    },
    /// Show every replica's state; with --etcd, every node's replicas cluster-wide, read
    /// from etcd (no agent's API needed).
    Status {
        #[arg(long)]
        json: bool,
        /// Cluster mode: etcd's client URLs, comma-separated.
        #[arg(long, value_delimiter = ',')]
        etcd: Vec<String>,
        /// Cluster mode: the cluster's name.
        #[arg(long, env = "BULWARK_CLUSTER", default_value = "default")]
        cluster: String,
        /// Cluster mode: how long to wait for etcd before giving up.
        #[arg(long, default_value = "5s", requires = "etcd")]
        etcd_timeout: humantime::Duration,
    },
    /// The on-call view in the terminal, live: every replica (state, readiness, pid,
    /// restarts, last exit, age) under its service's ready/desired count, firing alerts,
    /// open incidents and the latest events. Keys: up/down or j/k select, Enter the
    /// selected replica's stderr tail, r restart it (asks y/n), ? help, q quit.
    Top {
        /// Print one frame as text and exit (no terminal needed).
        #[arg(long, visible_alias = "plain")]
        once: bool,
    },
    /// Show what happened; --follow streams new events.
    Events {
        #[arg(long)]
        follow: bool,
        #[arg(long)]
        json: bool,
    },
    /// Show a service's (or one replica's) recent output.
    Logs {
        /// SERVICE or SERVICE/INDEX
        target: String,
        #[arg(long)]
        follow: bool,
    },
    /// Restart one replica, or all of a service's replicas one by one.
    Restart {
        /// SERVICE or SERVICE/INDEX
        target: String,
    },
    /// Change a service's number of replicas.
    Scale { service: String, replicas: u32 },
    /// SLOs: objective, SLI, error budget, burn rate per window, alert state, time to
    /// exhaustion. `slo rules` exports Prometheus rules (no running bulwark needed).
    Slo {
        #[command(subcommand)]
        cmd: Option<SloCmd>,
        #[arg(long)]
        json: bool,
    },
    /// Incidents with their timelines; MTTD, MTTR, MTBF and availability per service.
    Incidents {
        #[arg(long)]
        json: bool,
    },
    /// Firing alerts, then resolved ones, newest first.
    Alerts {
        #[arg(long)]
        json: bool,
    },
    /// Silence alerts now or later (a maintenance window); silenced alerts are still recorded.
    Silence {
        #[command(subcommand)]
        cmd: SilenceCmd,
    },
    /// Backups: their state, and a backup, verification, restore drill or restore now.
    Backup {
        #[command(subcommand)]
        cmd: BackupCmd,
    },
    /// Chaos experiments: list them, run one, see what runs, halt them all.
    Chaos {
        #[command(subcommand)]
        cmd: ChaosCmd,
    },
    /// Rollouts: progress, pause, resume, promote, abort, undo, history.
    Rollout {
        #[command(subcommand)]
        cmd: RolloutCmd,
    },
    /// Prove a stack's resilience: each fault kind in turn under open-loop load, scored.
    Verify(VerifyArgs),
    /// Apply the changed stack file to the running `up` without a restart (also: SIGHUP).
    Reload,
    /// The global fault kill switch: `off` removes every injected fault at once.
    Faults {
        #[arg(value_parser = ["on", "off"])]
        state: String,
    },
    /// Run-time switches (`[switches]`): list them, or set one on, off or to a percentage.
    Switch {
        #[command(subcommand)]
        cmd: SwitchCmd,
    },
    /// The audit log: every API call that changed something, or was refused for its token,
    /// with who made it, and every action bulwark took by itself (admin). --json prints one
    /// JSON object per line, --cef one Common Event Format line per record, for a SIEM.
    Audit {
        #[arg(long)]
        json: bool,
        #[arg(long, conflicts_with = "json")]
        cef: bool,
        /// Only records after this id.
        #[arg(long, default_value_t = 0)]
        after: u64,
        /// At most this many records (up to 10000).
        #[arg(long, default_value_t = 1000)]
        limit: usize,
    },
    /// API tokens with roles (viewer: reads; operator: also acts; admin: also reloads and
    /// manages tokens). Other commands use BULWARK_TOKEN if set, else the owner's token.
    Token {
        #[command(subcommand)]
        cmd: TokenCmd,
    },
    /// A one-time login link (60 s, single use) to the web dashboard, with the role of the
    /// token used (BULWARK_TOKEN or the owner's); it opens nothing, it prints the link.
    Dashboard,
    /// Remediation decisions: acted, skipped by a guard (which), waiting for approval,
    /// approved, denied, failed, done, dry run.
    Actions {
        #[arg(long)]
        json: bool,
    },
    /// Approve a remediation action that waits for approval (`mode = "approve"`).
    Approve {
        /// The action's id (`bulwark actions`).
        id: u64,
    },
    /// Deny a remediation action that waits for approval: nothing is done.
    Deny {
        /// The action's id (`bulwark actions`).
        id: u64,
    },
    /// Convert a Docker Compose file, or Kubernetes Deployments and Services, into a stack
    /// file: the stack on stdout (or OUT), one line on stderr per field not carried over.
    Import {
        #[command(subcommand)]
        from: ImportCmd,
    },
    /// The demo workload: an HTTP service with injectable faults.
    Demo(DemoArgs),
    /// An open-loop HTTP load generator.
    Load(LoadArgs),
    /// Print a Grafana dashboard (JSON, import it in Grafana) of the metrics bulwark exports
    /// on /metrics: rates, errors, latency, replicas, restarts, ejections, SLOs, alerts, CPU
    /// and memory, with a Prometheus data source and service variable. With -f, made for
    /// that stack file (no SLO panels if it has no SLO).
    Grafana {
        #[arg(short = 'f', long = "file", value_hint = ValueHint::FilePath)]
        file: Option<PathBuf>,
    },
    /// Print the stack file's JSON Schema (for editors: Taplo / Even Better TOML), or
    /// with --markdown the reference (docs/stack-file.md).
    Schema {
        #[arg(long)]
        markdown: bool,
    },
    /// Explain a stack-file key: its doc, type, default and an example. KEY is a dotted
    /// path (`services.web.expose.retries.attempts`) or its unique end (`retries.attempts`).
    Explain { key: String },
    /// Print a shell completion script.
    ///
    /// bash: `source <(bulwark completions bash)` in ~/.bashrc; zsh: save it as `_bulwark` in
    /// a directory of $fpath; fish: save it as ~/.config/fish/completions/bulwark.fish.
    Completions { shell: Shell },
    /// Print the man page (read it with `man -l <(bulwark man)`).
    Man {
        /// Write bulwark.1 and one page per subcommand (bulwark-SUB.1) into this directory
        /// instead.
        #[arg(long, value_hint = ValueHint::DirPath)]
        out: Option<PathBuf>,
    },
}

/// A shell `bulwark completions` writes a script for.
#[derive(Clone, Copy, ValueEnum)]
pub enum Shell {
    Bash,
    Zsh,
    Fish,
}

impl From<Shell> for clap_complete::Shell {
    fn from(shell: Shell) -> Self {
        match shell {
            Shell::Bash => clap_complete::Shell::Bash,
            Shell::Zsh => clap_complete::Shell::Zsh,
            Shell::Fish => clap_complete::Shell::Fish,
        }
    }
}

#[derive(Subcommand)]
pub enum SloCmd {
    /// Write Prometheus recording and alerting rules equivalent to bulwark's burn-rate
    /// engine, and a `promtool test rules` file demonstrating the page alert.
    Rules {
        #[arg(short = 'f', long = "file")]
        file: PathBuf,
        /// Directory for `bulwark-slo.rules.yml` and `bulwark-slo.rules.test.yml`.
        #[arg(long, default_value = ".")]
        out: PathBuf,
    },
}

#[derive(Subcommand)]
pub enum ImportCmd {
    /// A Docker Compose file: each service with a `command` runs on the host.
    Compose {
        file: PathBuf,
        /// Write the stack file here instead of to stdout.
        #[arg(short = 'o', long = "out")]
        out: Option<PathBuf>,
    },
    /// Kubernetes manifests: a service per Deployment container (probes included), exposed
    /// where a Service selects it.
    K8s {
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// Write the stack file here instead of to stdout.
        #[arg(short = 'o', long = "out")]
        out: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
pub enum BackupCmd {
    /// Every backup with its newest verified snapshot, last run, verification and drill;
    /// with NAME, that backup's snapshots.
    List {
        name: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Take a snapshot now (hooks, read-back and keep rules included).
    Run {
        name: String,
        #[arg(long)]
        json: bool,
    },
    /// Check the repository and read back its next part of the data now.
    Verify {
        name: String,
        #[arg(long)]
        json: bool,
    },
    /// Restore the newest verified snapshot into a scratch replica and time it (the RTO).
    Drill {
        name: String,
        #[arg(long)]
        json: bool,
    },
    /// Restore a snapshot (an id or its start, or `latest`) into an empty directory, under
    /// the paths it was saved from, as `restic restore --target` does.
    Restore {
        snapshot: String,
        /// The directory to restore into (created; must be empty).
        #[arg(long, value_hint = ValueHint::DirPath)]
        to: PathBuf,
        /// The backup; needed when several backups could hold SNAPSHOT.
        #[arg(long)]
        backup: Option<String>,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
pub enum RolloutCmd {
    /// A service's rollout: step, weights, replicas old/new/ready, verdicts, time in step.
    Status {
        service: String,
        /// Follow it live until it ends.
        #[arg(long)]
        watch: bool,
        #[arg(long)]
        json: bool,
    },
    /// Roll out what the stack file says of SERVICE now (e.g. again after a rollback).
    Start {
        service: String,
        #[arg(long)]
        json: bool,
    },
    /// Hold the rollout where it is.
    Pause {
        service: String,
        #[arg(long)]
        json: bool,
    },
    /// Go on (a paused step starts its pause afresh).
    Resume {
        service: String,
        #[arg(long)]
        json: bool,
    },
    /// End the current step now; --full skips every remaining step.
    Promote {
        service: String,
        #[arg(long)]
        full: bool,
        #[arg(long)]
        json: bool,
    },
    /// Give up: traffic back on the stable revision at once, new replicas stopped.
    Abort {
        service: String,
        #[arg(long)]
        json: bool,
    },
    /// During a rollout, abort it; otherwise roll the previous revision (or N) out again.
    Undo {
        service: String,
        #[arg(long = "to-revision")]
        to_revision: Option<u32>,
        #[arg(long)]
        json: bool,
    },
    /// Every revision of SERVICE: strategy, what changed, outcome.
    History {
        service: String,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
pub enum ChaosCmd {
    /// The experiments of the stack file, with their schedules.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Run experiment NAME now (pre-flight gate first) and print its report when it ends;
    /// exit status 1 unless the steady state held.
    Run {
        name: String,
        /// Take NAME from this file of `[[experiments]]` instead of the stack file.
        #[arg(short = 'f', long = "file", value_hint = ValueHint::FilePath)]
        file: Option<PathBuf>,
        /// Answer once it has started, not when it ends.
        #[arg(long)]
        no_wait: bool,
        #[arg(long)]
        json: bool,
    },
    /// Running experiments and the latest reports.
    Status {
        #[arg(long)]
        json: bool,
    },
    /// Stop every running experiment (faults undone, rollbacks run) and turn faults off
    /// until `bulwark faults on`.
    Halt {
        #[arg(long)]
        json: bool,
    },
}

#[derive(Args)]
pub struct VerifyArgs {
    /// The stack file.
    #[arg(short = 'f', long = "file", value_hint = ValueHint::FilePath)]
    pub file: PathBuf,
    /// Use the stack already running (`bulwark up -f FILE`) instead of starting one.
    #[arg(long)]
    pub attach: bool,
    /// Only these services (repeatable); default: every service exposed over HTTP.
    #[arg(long = "service")]
    pub services: Vec<String>,
    /// The fault kinds, in order.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "kill,stop,http-abort,http-reset,http-delay"
    )]
    pub faults: Vec<String>,
    /// Open-loop load on each service during its faults, requests per second.
    #[arg(long, default_value_t = 200.0)]
    pub load: f64,
    /// How long each fault lasts.
    #[arg(long, default_value = "5s")]
    pub fault_duration: humantime::Duration,
    /// Quiet time between two faults, after the service has recovered.
    #[arg(long, default_value = "2s")]
    pub settle: humantime::Duration,
    /// Write verify.json, verify.md and verify.junit.xml here.
    #[arg(long, value_hint = ValueHint::DirPath)]
    pub report: Option<PathBuf>,
    /// Exit non-zero when the resilience score is below this (0-100).
    #[arg(long)]
    pub min_score: Option<f64>,
    /// Print the scorecard as JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Subcommand)]
pub enum SilenceCmd {
    Add {
        service: String,
        /// Only this SLO (default: every alert of the service).
        #[arg(long)]
        slo: Option<String>,
        /// Only `page` or `ticket` alerts.
        #[arg(long)]
        severity: Option<String>,
        /// How long the silence lasts.
        #[arg(long = "for", default_value = "1h")]
        duration: humantime::Duration,
        /// Start later (a maintenance window).
        #[arg(long)]
        start_in: Option<humantime::Duration>,
        #[arg(long, default_value = "")]
        comment: String,
    },
    List {
        #[arg(long)]
        json: bool,
    },
    Rm {
        id: String,
    },
}

#[derive(Subcommand)]
pub enum SwitchCmd {
    /// Every switch: its value, its default and what it does.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Set a switch: `on`, `off` or a percentage such as `25%` (kept across restarts).
    Set { name: String, value: String },
}

#[derive(Subcommand)]
pub enum TokenCmd {
    /// Make a token; it is printed once (only its SHA-256 is kept).
    Create {
        name: String,
        #[arg(long, value_parser = ["viewer", "operator", "admin"])]
        role: String,
    },
    /// Every token but the owner's: name, role, when it was made.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Revoke a token: refused from the next request on.
    Revoke { name: String },
}

#[derive(Args)]
pub struct UpArgs {
    #[arg(short = 'f', long = "file")]
    pub file: PathBuf,
    /// Proxy worker threads, each with its own runtime and its own socket on every
    /// exposed address (default: one per core). Supervision, probes and the API run on
    /// threads of their own.
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub workers: Option<u16>,
    /// Do not echo replica output to stdout.
    #[arg(long)]
    pub quiet: bool,
}

#[derive(Args)]
pub struct DemoArgs {
    #[arg(long, env = "PORT")]
    pub port: u16,
    /// The address to listen on: `0.0.0.0` in a container with a private network.
    #[arg(long, default_value = "127.0.0.1")]
    pub host: std::net::IpAddr,
    /// Answer 503 on every endpoint for this long after starting.
    #[arg(long, default_value = "0s")]
    pub startup_delay: humantime::Duration,
    /// Serve a TCP echo instead of HTTP.
    #[arg(long)]
    pub tcp: bool,
    /// `/` answers --fail-status with this probability from the start (a bad version).
    #[arg(long, env = "DEMO_FAIL_RATIO", default_value_t = 0.0)]
    pub fail_ratio: f32,
    /// The status of those failures.
    #[arg(long, env = "DEMO_FAIL_STATUS", default_value_t = 500)]
    pub fail_status: u16,
    /// `/` waits this long from the start (a slow version).
    #[arg(long, env = "DEMO_SLOW", default_value = "0s")]
    pub slow: humantime::Duration,
    /// Leak this many MiB per second from the start (a leaking version).
    #[arg(long, env = "DEMO_LEAK_RATE", default_value_t = 0.0)]
    pub leak_rate: f64,
    /// CPU each `GET /` burns (a service with a per-request cost).
    #[arg(long, env = "DEMO_COST", default_value = "0s")]
    pub cost: humantime::Duration,
    /// sd_notify (with `NOTIFY_SOCKET` set): send `READY=1` this long after starting.
    #[arg(long)]
    pub notify_ready_after: Option<humantime::Duration>,
    /// sd_notify: send `WATCHDOG=1` at this interval.
    #[arg(long)]
    pub notify_watchdog_every: Option<humantime::Duration>,
    /// sd_notify: stop the `WATCHDOG=1` pings this long after starting (a hung replica).
    #[arg(long, requires = "notify_watchdog_every")]
    pub notify_stop_watchdog_after: Option<humantime::Duration>,
}

#[derive(Args)]
pub struct LoadArgs {
    pub url: String,
    /// Requests per second, sent on schedule whether or not earlier ones returned.
    #[arg(long, default_value_t = 100.0)]
    pub rate: f64,
    #[arg(long, default_value = "10s")]
    pub duration: humantime::Duration,
    /// Most requests in flight at once.
    #[arg(long, default_value_t = load::DEFAULT_CONCURRENCY)]
    pub concurrency: usize,
    /// Per-request timeout.
    #[arg(long, default_value = "5s")]
    pub timeout: humantime::Duration,
    #[arg(long, default_value = "GET")]
    pub method: String,
    #[arg(long)]
    pub body: Option<String>,
    /// Extra header, "Name: value"; repeatable.
    #[arg(long = "header", short = 'H')]
    pub header: Vec<String>,
    /// Print one JSON object instead of a summary.
    #[arg(long)]
    pub json: bool,
}

/// Where the cluster's etcd is.
#[derive(Args, Clone)]
pub struct EtcdArgs {
    /// etcd's client URLs, comma-separated (http://HOST:2379,...).
    #[arg(long, env = "BULWARK_ETCD", value_delimiter = ',', required = true)]
    pub etcd: Vec<String>,
    /// The cluster's name: several clusters can share one etcd.
    #[arg(long, env = "BULWARK_CLUSTER", default_value = "default")]
    pub cluster: String,
    /// How long to wait for etcd before giving up.
    #[arg(long, default_value = "5s")]
    pub etcd_timeout: humantime::Duration,
}

#[derive(Args)]
pub struct AgentArgs {
    #[command(flatten)]
    pub etcd: EtcdArgs,
    /// This node's name, unique in the cluster.
    #[arg(long)]
    pub node: String,
    /// This node's labels, for placement: `zone=a,disk=ssd`.
    #[arg(long, value_delimiter = ',')]
    pub labels: Vec<String>,
    /// What the replicas placed here may request in all: `cpu=2,memory=4GiB` (cores,
    /// sizes as in the stack file); a key left out is the machine's (its CPUs and memory,
    /// within bulwark's cgroup limits).
    #[arg(long, value_delimiter = ',')]
    pub capacity: Vec<String>,
    /// Where the agent serves its API (as `[api] listen`; a loopback address unless the
    /// API has TLS).
    #[arg(long)]
    pub api: Option<std::net::SocketAddr>,
    /// The IP address other machines reach this one on: its replicas' endpoints are
    /// published with it, so other agents' proxies can send them requests (the replicas
    /// must listen on it or on 0.0.0.0). Without it they are published on 127.0.0.1 and
    /// only this node's proxy uses them.
    #[arg(long)]
    pub advertise: Option<std::net::IpAddr>,
    /// The node's lease: how long after the agent stops answering the node is lost.
    #[arg(long, default_value = "5s")]
    pub ttl: humantime::Duration,
}

#[derive(Args)]
pub struct ApplyArgs {
    #[command(flatten)]
    pub etcd: EtcdArgs,
    /// The stack file.
    #[arg(
        short = 'f',
        long = "file",
        value_hint = ValueHint::FilePath,
        required_unless_present = "history",
        conflicts_with = "history"
    )]
    pub file: Option<PathBuf>,
    /// List the stored revisions instead.
    #[arg(long)]
    pub history: bool,
    #[arg(long)]
    pub json: bool,
}
