//! `bulwark agent`: cluster mode's node. It registers in etcd under a lease, follows the
//! cluster's nodes onto the event bus, campaigns for the cluster's scheduler (see
//! [`crate::scheduler`]), and runs `up`'s wiring on the replicas of the applied stack that
//! the scheduler placed on its node (see [`crate::placed`]) — reloading its copy at each
//! new revision or placement — and publishes their endpoints under its lease; with no
//! stack applied yet it runs none and serves the usual API. Its `[leader]` services elect
//! their leader cluster-wide, in etcd ([`cluster::EtcdElection`], under the node's lease):
//! the agents running one of their replicas are candidates, one wins.

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
    let capacity = crate::capacity::parse(&args.capacity, crate::capacity::detect())?;
    cluster::keys::check_name("--node", &args.node)?;
    let (etcd, keys) = crate::cluster_cmd::connect(&args.etcd).await?;
    let state_dir = state_dir.unwrap_or_else(api::state_dir::default_dir);
    // The agent's copy of the cluster's stack: `up`'s reload reads it.
    let file = state_dir.join(STACK_FILE);
    // Nothing is placed here before the agent joins: its copy starts with no replica, and
    // the placement it then reads reloads it.
    let mine = crate::placed::Shared::default();
    let stack = match cluster::stack::current(&etcd, &keys).await? {
        Some(applied) => {
            tokio::fs::create_dir_all(&state_dir).await?;
            let local = crate::placed::local_stack(&applied.text, &crate::placed::Mine::new())
                .map_err(|e| anyhow::anyhow!("the cluster's stack does not parse: {e}"))?;
            tokio::fs::write(&file, local)
                .await
                .with_context(|| format!("cannot write {}", file.display()))?;
            match load(&file).await {
                Ok(stack) => Some(stack),
                Err(errors) => {
                    tracing::error!(
                        revision = applied.revision,
                        "the cluster's stack cannot run here; running none until the next apply:\n{errors}"
                    );
                    None
                }
            }
        }
        None => None,
    };
    let mut stack = match stack {
        Some(s) => s,
        // No stack yet: the agent's own settings, checked as a stack file is (`--api` is
        // `[api] listen`).
        None => match spec::parse_agent("", std::path::Path::new("--api")) {
            Ok(s) => s,
            Err(errors) => {
                eprintln!("{errors}");
                return Ok(ExitCode::from(2));
            }
        },
    };
    if let Some(api) = args.api {
        // The API is the node's, not the stack's: a plain-HTTP one must be on loopback.
        if stack.api.tls.is_none() && !api.ip().is_loopback() {
            anyhow::bail!(
                "--api {api}: the API speaks plain HTTP on a loopback address only; use \
                 127.0.0.1:PORT (TLS for the agent's API is not wired yet)"
            );
        }
        stack.api.listen = api;
    }
    // `[leader]` services elect one leader cluster-wide, under the node's lease.
    let election = Arc::new(cluster::EtcdElection::new(
        &etcd,
        &keys,
        &args.node,
        *args.ttl,
        tokio::runtime::Handle::current(),
    ));
    let agent = Agent {
        advertise: args.advertise,
        remote: tokio::sync::watch::channel(Arc::default()).0,
        etcd,
        keys,
        node: args.node,
        labels,
        capacity,
        ttl: *args.ttl,
        mine,
        election,
    };
    let up = UpArgs {
        file,
        workers: Some(1),
        quiet: true,
    };
    crate::up::serve(up, stack, Some(state_dir), Some(agent)).await
}

/// The agent's copy of the cluster's stack, in its state directory.
const STACK_FILE: &str = "cluster-stack.toml";

/// Checks the stack file on the blocking pool.
async fn load(file: &std::path::Path) -> Result<spec::Stack, spec::Errors> {
    let file = file.to_owned();
    tokio::task::spawn_blocking(move || spec::load(&file))
        .await
        .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()))
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
    capacity: cluster::Capacity,
    ttl: std::time::Duration,
    mine: crate::placed::Shared,
    election: Arc<cluster::EtcdElection>,
    advertise: Option<std::net::IpAddr>,
    /// Every node's endpoints, fed from the cluster watch once the agent joins.
    remote: tokio::sync::watch::Sender<Arc<cluster::ClusterEndpoints>>,
}

/// A node in the cluster: registered, and following the others onto the bus.
pub struct Membership {
    registration: Registration,
    _watch: ClusterWatch,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    etcd: cluster::Etcd,
    keys: cluster::Keys,
    node: String,
    state: tokio::sync::watch::Receiver<cluster::ClusterState>,
    mine: crate::placed::Shared,
    stack_changes: Option<tokio::sync::mpsc::Receiver<u64>>,
    election: Arc<cluster::EtcdElection>,
    advertise: Option<std::net::IpAddr>,
}

impl Agent {
    /// This node's name (`--node`).
    pub fn node(&self) -> &str {
        &self.node
    }

    /// The election of the `[leader]` services: cluster-wide, in etcd. It grants terms
    /// once the node is registered ([`join`](Self::join)).
    pub fn election(&self) -> Arc<dyn store::Election> {
        self.election.clone()
    }

    /// Each service's endpoints for the proxy: this node's replicas and, once the agent
    /// has joined, the other nodes' (see [`crate::remote`]).
    pub fn merger(&self) -> crate::remote::Merger {
        crate::remote::Merger::new(self.node.clone(), self.remote.subscribe())
    }

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
            capacity: Some(self.capacity),
        };
        let options = cluster::RegistrationOptions { ttl: self.ttl };
        let registration = Registration::start(&self.etcd, &self.keys, record, options).await?;
        self.election.attach(registration.connection());
        let (stack_tx, stack_changes) = tokio::sync::mpsc::channel(4);
        let scheduler = crate::scheduler::Scheduler {
            etcd: self.etcd.clone(),
            keys: self.keys.clone(),
            node: self.node.clone(),
            connection: registration.connection(),
            state: watch.state(),
            bus: bus.clone(),
            ttl: self.ttl,
        };
        let tasks = vec![
            tokio::spawn(follow_placement(
                watch.state(),
                self.node.clone(),
                stack_tx.clone(),
            )),
            tokio::spawn(forward(events, bus, stack_tx)),
            tokio::spawn(log_connection(registration.connection(), self.node.clone())),
            tokio::spawn(scheduler.run()),
            tokio::spawn(follow_endpoints(watch.endpoints(), self.remote)),
        ];
        Ok(Membership {
            registration,
            state: watch.state(),
            _watch: watch,
            tasks,
            etcd: self.etcd,
            keys: self.keys,
            node: self.node,
            mine: self.mine,
            stack_changes: Some(stack_changes),
            election: self.election,
            advertise: self.advertise,
        })
    }
}

impl Membership {
    /// The revisions applied to the cluster from now on (once; `None` the second time).
    pub fn stack_changes(&mut self) -> tokio::sync::mpsc::Receiver<u64> {
        self.stack_changes
            .take()
            .unwrap_or_else(|| tokio::sync::mpsc::channel(1).1)
    }

    /// Writes the cluster's applied stack into `file` with this node's placed replicas
    /// (see [`crate::placed`]), for `up`'s reload to read.
    pub async fn fetch_stack(&self, file: &std::path::Path) -> anyhow::Result<()> {
        let applied = cluster::stack::current(&self.etcd, &self.keys)
            .await?
            .context("the stack was removed from etcd")?;
        let mine = crate::placed::mine(&self.state.borrow().placements, &self.node);
        let local = crate::placed::local_stack(&applied.text, &mine)
            .map_err(|e| anyhow::anyhow!("the cluster's stack does not parse: {e}"))?;
        tokio::fs::write(file, local)
            .await
            .with_context(|| format!("cannot write {}", file.display()))?;
        let placed: Vec<String> = mine
            .iter()
            .flat_map(|(s, ix)| ix.iter().map(move |i| format!("{s}/{i}")))
            .collect();
        tracing::info!(node = %self.node, replicas = ?placed, "running the replicas placed here");
        *self.mine.lock().unwrap_or_else(|e| e.into_inner()) = mine;
        Ok(())
    }

    /// Publishes this node's replicas (address, readiness) under its lease, from now on.
    pub fn publish_endpoints(&mut self, supervisor: runtime::Supervisor, bus: &Arc<Bus>) {
        let publisher = crate::endpoints_pub::Publisher {
            etcd: self.etcd.clone(),
            keys: self.keys.clone(),
            node: self.node.clone(),
            connection: self.registration.connection(),
            mine: self.mine.clone(),
            advertise: self.advertise,
            supervisor,
            events: bus.follow("endpoint publisher"),
        };
        self.tasks.push(tokio::spawn(publisher.run()));
    }

    /// Leaves the cluster (the lease revoked: the others see it at once, and the terms of
    /// its leaders, which stepped down before, are gone).
    pub async fn leave(self) {
        self.election.close();
        for t in &self.tasks {
            t.abort();
        }
        if let Err(e) = self.registration.leave().await {
            tracing::warn!("could not leave the cluster, the lease will expire instead: {e}");
        }
    }
}

/// A notice on `changes` whenever the replicas placed on `node` change.
async fn follow_placement(
    mut state: tokio::sync::watch::Receiver<cluster::ClusterState>,
    node: String,
    changes: tokio::sync::mpsc::Sender<u64>,
) {
    let mut last = crate::placed::Mine::new();
    loop {
        let (mine, revision) = {
            let s = state.borrow_and_update();
            (
                crate::placed::mine(&s.placements, &node),
                s.stack_revision.unwrap_or(0),
            )
        };
        if mine != last && revision > 0 {
            last = mine;
            // A full queue already holds a notice, and any notice reads the newest.
            let _ = changes.try_send(revision);
        }
        if state.changed().await.is_err() {
            return;
        }
    }
}

/// The cluster watch's endpoints into the channel the proxies' mergers follow.
async fn follow_endpoints(
    mut from: tokio::sync::watch::Receiver<Arc<cluster::ClusterEndpoints>>,
    to: tokio::sync::watch::Sender<Arc<cluster::ClusterEndpoints>>,
) {
    loop {
        to.send_replace(from.borrow_and_update().clone());
        if from.changed().await.is_err() {
            return;
        }
    }
}

/// The cluster's node events onto the bus.
async fn forward(
    mut events: tokio::sync::broadcast::Receiver<ClusterEvent>,
    bus: Arc<Bus>,
    stack: tokio::sync::mpsc::Sender<u64>,
) {
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
                // A full queue already holds a notice, and any notice reads the newest.
                let _ = stack.try_send(revision);
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

/// The next stack revision applied to the cluster; never, outside cluster mode.
///
/// # Cancel safety
/// Cancel safe: `mpsc::Receiver::recv` is.
pub async fn next_revision(changes: &mut Option<tokio::sync::mpsc::Receiver<u64>>) -> Option<u64> {
    match changes {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}
