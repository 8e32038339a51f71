//! `bulwark agent`: cluster mode's node. It registers in etcd under a lease, follows the
//! cluster's nodes onto the event bus, and serves the usual API (`up`'s wiring, with a
//! local stack of no service: replicas come from the cluster in a later layer).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use bus::{Bus, EventKind};
use cluster::{ClusterEvent, ClusterWatch, Connection, NodeRecord, Registration};

use crate::cli::{AgentArgs, UpArgs};

/// `bulwark agent`.
pub async fn run(args: AgentArgs, state_dir: Option<PathBuf>) -> anyhow::Result<ExitCode> {
    let labels = parse_labels(&args.labels)?;
    cluster::keys::check_name("--node", &args.node)?;
    // The agent's own settings, checked as a stack file is: `--api` is `[api] listen`.
    let source = args
        .api
        .map_or_else(String::new, |a| format!("[api]\nlisten = \"{a}\"\n"));
    let stack = match spec::parse_agent(&source, std::path::Path::new("--api")) {
        Ok(s) => s,
        Err(errors) => {
            eprintln!("{errors}");
            return Ok(ExitCode::from(2));
        }
    };
    let (etcd, keys) = crate::cluster_cmd::connect(&args.etcd).await?;
    let agent = Agent {
        etcd,
        keys,
        node: args.node,
        labels,
        ttl: *args.ttl,
    };
    let up = UpArgs {
        file: PathBuf::from(format!("(agent {})", agent.node)),
        workers: Some(1),
        quiet: true,
    };
    crate::up::serve(up, stack, state_dir, Some(agent)).await
}

/// `k=v` pairs, each key a name that can be a label.
fn parse_labels(given: &[String]) -> anyhow::Result<BTreeMap<String, String>> {
    let mut labels = BTreeMap::new();
    for l in given.iter().filter(|l| !l.is_empty()) {
        let (k, v) = l
            .split_once('=')
            .with_context(|| format!("--labels: `{l}` is not KEY=VALUE (e.g. zone=a)"))?;
        cluster::keys::check_name("--labels key", k)?;
        cluster::keys::check_name("--labels value", v)?;
        if labels.insert(k.to_owned(), v.to_owned()).is_some() {
            anyhow::bail!("--labels: `{k}` is given twice");
        }
    }
    Ok(labels)
}

/// What `up` needs to run as a cluster agent.
pub struct Agent {
    etcd: cluster::Etcd,
    keys: cluster::Keys,
    node: String,
    labels: BTreeMap<String, String>,
    ttl: std::time::Duration,
}

/// A node in the cluster: registered, and following the others onto the bus.
pub struct Membership {
    registration: Registration,
    _watch: ClusterWatch,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Agent {
    /// Follows the cluster (so this node's own join is an event too), then registers with
    /// the API's bound address.
    pub async fn join(self, bus: Arc<Bus>, api: SocketAddr) -> anyhow::Result<Membership> {
        let watch = ClusterWatch::start(&self.etcd, &self.keys).await?;
        let events = watch.subscribe();
        let record = NodeRecord {
            name: self.node.clone(),
            labels: self.labels,
            api: api.to_string(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            started_at_ms: bus::now_ms(),
        };
        let options = cluster::RegistrationOptions { ttl: self.ttl };
        let registration = Registration::start(&self.etcd, &self.keys, record, options).await?;
        let tasks = vec![
            tokio::spawn(forward(events, bus)),
            tokio::spawn(log_connection(registration.connection(), self.node)),
        ];
        Ok(Membership {
            registration,
            _watch: watch,
            tasks,
        })
    }
}

impl Membership {
    /// Leaves the cluster (the lease revoked: the others see it at once).
    pub async fn leave(self) {
        for t in &self.tasks {
            t.abort();
        }
        if let Err(e) = self.registration.leave().await {
            tracing::warn!("could not leave the cluster, the lease will expire instead: {e}");
        }
    }
}

/// The cluster's node events onto the bus.
async fn forward(mut events: tokio::sync::broadcast::Receiver<ClusterEvent>, bus: Arc<Bus>) {
    loop {
        let event = match events.recv().await {
            Ok(e) => e,
            Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                bus.record_gap("cluster watch", n);
                continue;
            }
            Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
        };
        let kind = match event {
            ClusterEvent::Joined(r) => EventKind::NodeJoined {
                labels: r.labels.iter().map(|(k, v)| format!("{k}={v}")).collect(),
                node: r.name,
                address: r.api,
            },
            ClusterEvent::Lost(r) => EventKind::NodeLost { node: r.name },
            ClusterEvent::Left(r) => EventKind::NodeLeft { node: r.name },
            ClusterEvent::StackApplied { revision } => {
                tracing::info!(revision, "a stack was applied to the cluster");
                continue;
            }
            ClusterEvent::Disconnected { error } => {
                tracing::warn!(%error, "cannot follow the cluster: keeping what runs, starting nothing");
                continue;
            }
            ClusterEvent::Reconnected => {
                tracing::info!("following the cluster again");
                continue;
            }
        };
        bus.publish(kind);
    }
}

async fn log_connection(mut c: tokio::sync::watch::Receiver<Connection>, node: String) {
    while c.changed().await.is_ok() {
        match &*c.borrow_and_update() {
            Connection::Registered { lease, .. } => {
                tracing::info!(%node, lease = format_args!("{lease:x}"), "holding the node's lease");
            }
            Connection::Unreachable { error, .. } => {
                tracing::warn!(%node, %error, "etcd unreachable: keeping what runs, starting nothing");
            }
        }
    }
}
