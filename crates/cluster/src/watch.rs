//! The cluster as one agent sees it: alive and lost nodes, the stack's revision, the
//! scheduler's key and the replicas' placements, kept from etcd's watch (no polling), with
//! an event per change of nodes or stack.

use std::collections::BTreeMap;
use std::time::Duration;

use etcd_client::{EventType, GetOptions, KeyValue, Txn, TxnOp, TxnOpResponse, WatchOptions};
use tokio::sync::{broadcast, watch};

use crate::keys::KeyKind;
use crate::stack::StackRevision;
use crate::{
    Error, Etcd, Keys, NodeInfo, NodeRecord, NodeState, error::bounded, error::bounded_read,
};

/// What changed in the cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClusterEvent {
    /// A node registered (first time, or again after it was lost).
    Joined(NodeRecord),
    /// A node's lease expired: its agent was killed, hung or cut off.
    Lost(NodeRecord),
    /// A node left on purpose (its agent was stopped).
    Left(NodeRecord),
    /// A stack was applied.
    StackApplied {
        /// Its revision.
        revision: u64,
    },
    /// This agent cannot read etcd any more: the state below is as last seen.
    Disconnected {
        /// Why, in words.
        error: String,
    },
    /// This agent reads etcd again.
    Reconnected,
}

/// Which node runs each replica, by service and index (`placements/<service>/<index>`).
pub type Placements = BTreeMap<(String, u32), String>;

/// Every published endpoint, by node, service and index (`endpoints/<node>/<service>/<index>`).
pub type ClusterEndpoints = BTreeMap<(String, String, u32), crate::schedule::Endpoint>;

/// Who holds the scheduler's key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SchedulerKey {
    /// The scheduling node.
    pub node: String,
    /// The key's create revision: the holder's fencing token.
    pub create_revision: i64,
    /// The lease it is held under.
    pub lease: i64,
}

/// The cluster as last seen from etcd.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClusterState {
    /// Every member, alive or lost, by name.
    pub nodes: BTreeMap<String, NodeInfo>,
    /// The applied stack's revision, if one was applied.
    pub stack_revision: Option<u64>,
    /// Which node runs each replica.
    pub placements: Placements,
    /// The scheduler, if one holds the key.
    pub scheduler: Option<SchedulerKey>,
    /// etcd's revision this state is as of.
    pub revision: i64,
    /// Whether etcd answers now (when not, the rest is as last seen).
    pub connected: bool,
}

impl ClusterState {
    /// The names of the alive nodes.
    pub fn alive(&self) -> impl Iterator<Item = &str> {
        self.nodes
            .values()
            .filter(|n| n.state == NodeState::Alive)
            .map(|n| n.record.name.as_str())
    }
}

/// Follows the cluster from etcd: [`state`](ClusterWatch::state) is the latest
/// [`ClusterState`], [`subscribe`](ClusterWatch::subscribe) gives every [`ClusterEvent`],
/// [`endpoints`](ClusterWatch::endpoints) every node's published endpoints (a channel of
/// its own: an endpoint's readiness changes often, and the scheduler need not wake for it).
/// One watch stream on the cluster's prefix; after an error it reads the whole cluster
/// again and reports the differences as events, so no change is missed, only merged.
pub struct ClusterWatch {
    state: watch::Receiver<ClusterState>,
    events: broadcast::Sender<ClusterEvent>,
    endpoints: watch::Receiver<std::sync::Arc<ClusterEndpoints>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for ClusterWatch {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl ClusterWatch {
    /// Reads the cluster once (an error if etcd does not answer), then follows it.
    pub async fn start(etcd: &Etcd, keys: &Keys) -> Result<Self, Error> {
        let (first, mut view) = snapshot(etcd, keys).await?;
        view.connected = true;
        let (state_tx, state) = watch::channel(view.state(first.revision));
        let (events, _) = broadcast::channel(1024);
        let (endpoints_tx, endpoints) = watch::channel(std::sync::Arc::new(view.endpoints.clone()));
        let follower = Follower {
            endpoints: endpoints_tx,
            etcd: etcd.clone(),
            keys: keys.clone(),
            view,
            revision: first.revision,
            state: state_tx,
            events: events.clone(),
        };
        let task = tokio::spawn(follower.run());
        Ok(ClusterWatch {
            state,
            events,
            endpoints,
            task,
        })
    }

    /// The latest state, live.
    pub fn state(&self) -> watch::Receiver<ClusterState> {
        self.state.clone()
    }

    /// Every node's published endpoints, live; a key is gone the moment etcd deletes it
    /// (its node's lease expired, or the node removed it).
    pub fn endpoints(&self) -> watch::Receiver<std::sync::Arc<ClusterEndpoints>> {
        self.endpoints.clone()
    }

    /// Every event from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<ClusterEvent> {
        self.events.subscribe()
    }
}

/// What the follower holds: members, alive nodes and the stack's revision.
#[derive(Default)]
struct View {
    members: BTreeMap<String, NodeRecord>,
    alive: BTreeMap<String, NodeRecord>,
    stack: Option<u64>,
    placements: Placements,
    scheduler: Option<SchedulerKey>,
    endpoints: ClusterEndpoints,
    connected: bool,
}

impl View {
    fn state(&self, revision: i64) -> ClusterState {
        let mut nodes = BTreeMap::new();
        for (name, record) in &self.members {
            let state = NodeState::Lost;
            nodes.insert(
                name.clone(),
                NodeInfo {
                    record: record.clone(),
                    state,
                },
            );
        }
        for (name, record) in &self.alive {
            let state = NodeState::Alive;
            nodes.insert(
                name.clone(),
                NodeInfo {
                    record: record.clone(),
                    state,
                },
            );
        }
        ClusterState {
            nodes,
            stack_revision: self.stack,
            placements: self.placements.clone(),
            scheduler: self.scheduler.clone(),
            revision,
            connected: self.connected,
        }
    }

    /// The events that lead from `self` to `next`.
    fn diff(&self, next: &View) -> Vec<ClusterEvent> {
        let mut out = Vec::new();
        for (name, record) in &self.alive {
            if !next.alive.contains_key(name) {
                out.push(match next.members.contains_key(name) {
                    true => ClusterEvent::Lost(record.clone()),
                    false => ClusterEvent::Left(record.clone()),
                });
            }
        }
        for (name, record) in &next.alive {
            if self.alive.get(name) != Some(record) {
                out.push(ClusterEvent::Joined(record.clone()));
            }
        }
        if let (Some(rev), true) = (next.stack, next.stack != self.stack) {
            out.push(ClusterEvent::StackApplied { revision: rev });
        }
        out
    }
}

struct First {
    revision: i64,
}

/// The whole cluster at one revision.
async fn snapshot(etcd: &Etcd, keys: &Keys) -> Result<(First, View), Error> {
    let txn = Txn::new().and_then([
        TxnOp::get(keys.members(), Some(GetOptions::new().with_prefix())),
        TxnOp::get(keys.nodes(), Some(GetOptions::new().with_prefix())),
        TxnOp::get(keys.stack(), None),
        TxnOp::get(keys.placements(), Some(GetOptions::new().with_prefix())),
        TxnOp::get(keys.scheduler(), None),
        TxnOp::get(keys.endpoints(), Some(GetOptions::new().with_prefix())),
    ]);
    let resp = bounded_read("read the cluster", etcd.timeout, || {
        let (mut client, txn) = (etcd.client.clone(), txn.clone());
        async move { client.txn(txn).await }
    })
    .await?;
    let revision = resp.header().map_or(0, |h| h.revision());
    let gets: Vec<_> = resp
        .op_responses()
        .into_iter()
        .filter_map(|r| match r {
            TxnOpResponse::Get(g) => Some(g),
            _ => None,
        })
        .collect();
    let mut view = View::default();
    let kvs = |i: usize| gets.get(i).map(|g| g.kvs()).unwrap_or_default();
    // A record that does not parse is left out and logged, as the watch does: one bad key
    // must not keep the whole cluster unread.
    for kv in kvs(0) {
        if let Some(r) = parsed(NodeRecord::parse(kv)) {
            view.members.insert(r.name.clone(), r);
        }
    }
    for kv in kvs(1) {
        if let Some(r) = parsed(NodeRecord::parse(kv)) {
            view.alive.insert(r.name.clone(), r);
        }
    }
    if let Some(kv) = kvs(2).first() {
        view.stack = parsed(StackRevision::parse(kv)).map(|s| s.revision);
    }
    for kv in kvs(3) {
        let key = String::from_utf8_lossy(kv.key());
        if let Some(KeyKind::Placement(service, index)) = keys.classify(&key) {
            let node = String::from_utf8_lossy(kv.value()).into_owned();
            view.placements.insert((service.to_owned(), index), node);
        }
    }
    view.scheduler = kvs(4).first().map(scheduler_key);
    for kv in kvs(5) {
        let key = String::from_utf8_lossy(kv.key());
        if let Some(KeyKind::Endpoint(node, service, index)) = keys.classify(&key)
            && let Ok(e) = serde_json::from_slice(kv.value())
        {
            let id = (node.to_owned(), service.to_owned(), index);
            view.endpoints.insert(id, e);
        }
    }
    Ok((First { revision }, view))
}

/// `Ok`'s value; an `Err` is logged.
fn parsed<T>(record: Result<T, Error>) -> Option<T> {
    record.map_err(|e| tracing::warn!("{e}")).ok()
}

struct Follower {
    etcd: Etcd,
    keys: Keys,
    view: View,
    revision: i64,
    state: watch::Sender<ClusterState>,
    events: broadcast::Sender<ClusterEvent>,
    endpoints: watch::Sender<std::sync::Arc<ClusterEndpoints>>,
}

impl Follower {
    /// Follows the watch while the view is whole; once it ends, reads the cluster again,
    /// until a read succeeds. A watch only ever starts from a view read whole: one started
    /// after a failed read would run while the view still said "cut off", and an agent whose
    /// watch then never ended stayed cut off (deciding nothing, if it was the scheduler).
    async fn run(mut self) {
        let mut delay = Duration::from_millis(100);
        loop {
            if self.view.connected {
                match self.follow().await {
                    Ok(()) => delay = Duration::from_millis(100),
                    Err(e) => self.disconnected(&e),
                }
            }
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_secs(2));
            match snapshot(&self.etcd, &self.keys).await {
                Ok((first, mut next)) => {
                    next.connected = true;
                    if !self.view.connected {
                        let _ = self.events.send(ClusterEvent::Reconnected);
                    }
                    for e in self.view.diff(&next) {
                        self.emit(e);
                    }
                    self.view = next;
                    self.revision = first.revision;
                    self.publish();
                }
                Err(e) => self.disconnected(&e),
            }
        }
    }

    fn disconnected(&mut self, e: &dyn std::fmt::Display) {
        if self.view.connected {
            tracing::warn!(error = %e, "cannot follow the cluster in etcd");
            self.view.connected = false;
            let _ = self.events.send(ClusterEvent::Disconnected {
                error: e.to_string(),
            });
            self.publish();
        }
    }

    fn emit(&self, e: ClusterEvent) {
        tracing::info!(event = ?e, "cluster");
        let _ = self.events.send(e);
    }

    fn publish(&self) {
        self.state.send_replace(self.view.state(self.revision));
        self.endpoints.send_if_modified(|e| {
            let changed = **e != self.view.endpoints;
            if changed {
                *e = std::sync::Arc::new(self.view.endpoints.clone());
            }
            changed
        });
    }

    /// Follows the watch from the revision after the view's until it ends.
    async fn follow(&mut self) -> Result<(), Error> {
        let mut client = self.etcd.client.clone();
        let options = WatchOptions::new()
            .with_prefix()
            .with_prev_key()
            .with_start_revision(self.revision + 1);
        let watching = client.watch(self.keys.root(), Some(options));
        let (_watcher, mut stream) =
            bounded("watch the cluster", self.etcd.timeout, watching).await?;
        while let Some(resp) = stream.message().await? {
            if resp.canceled() || resp.compact_revision() > 0 {
                return Err(Error::BadRecord {
                    key: self.keys.root().to_owned(),
                    detail: format!("the watch was cancelled: {}", resp.cancel_reason()),
                });
            }
            for ev in resp.events() {
                let Some(kv) = ev.kv() else { continue };
                self.apply(ev.event_type(), kv, ev.prev_kv());
                self.revision = self.revision.max(kv.mod_revision());
            }
            if let Some(h) = resp.header() {
                self.revision = self.revision.max(h.revision());
            }
            self.publish();
        }
        Ok(())
    }

    fn apply(&mut self, kind: EventType, kv: &KeyValue, prev: Option<&KeyValue>) {
        let key = String::from_utf8_lossy(kv.key()).into_owned();
        let Some(which) = self.keys.classify(&key) else {
            return;
        };
        let put = kind == EventType::Put;
        match (which, put) {
            (KeyKind::Node(name), true) => match NodeRecord::parse(kv) {
                Ok(r) => {
                    let fresh = self.view.alive.get(name) != Some(&r);
                    self.view.alive.insert(name.to_owned(), r.clone());
                    if fresh {
                        self.emit(ClusterEvent::Joined(r));
                    }
                }
                Err(e) => tracing::warn!("{e}"),
            },
            (KeyKind::Node(name), false) => {
                let record = self
                    .view
                    .alive
                    .remove(name)
                    .or_else(|| prev.and_then(|p| NodeRecord::parse(p).ok()));
                if let Some(r) = record {
                    self.emit(match self.view.members.contains_key(name) {
                        true => ClusterEvent::Lost(r),
                        false => ClusterEvent::Left(r),
                    });
                }
            }
            (KeyKind::Member(name), true) => {
                if let Ok(r) = NodeRecord::parse(kv) {
                    self.view.members.insert(name.to_owned(), r);
                }
            }
            (KeyKind::Member(name), false) => {
                self.view.members.remove(name);
            }
            (KeyKind::Stack, true) => {
                if let Ok(s) = StackRevision::parse(kv) {
                    self.view.stack = Some(s.revision);
                    self.emit(ClusterEvent::StackApplied {
                        revision: s.revision,
                    });
                }
            }
            (KeyKind::Stack, false) => self.view.stack = None,
            (KeyKind::Placement(service, index), true) => {
                let node = String::from_utf8_lossy(kv.value()).into_owned();
                self.view
                    .placements
                    .insert((service.to_owned(), index), node);
            }
            (KeyKind::Placement(service, index), false) => {
                self.view.placements.remove(&(service.to_owned(), index));
            }
            (KeyKind::Scheduler, true) => self.view.scheduler = Some(scheduler_key(kv)),
            (KeyKind::Scheduler, false) => self.view.scheduler = None,
            (KeyKind::Endpoint(node, service, index), true) => {
                let id = (node.to_owned(), service.to_owned(), index);
                match serde_json::from_slice(kv.value()) {
                    Ok(e) => _ = self.view.endpoints.insert(id, e),
                    Err(e) => tracing::warn!(%key, "an endpoint that does not parse: {e}"),
                }
            }
            (KeyKind::Endpoint(node, service, index), false) => {
                let id = (node.to_owned(), service.to_owned(), index);
                self.view.endpoints.remove(&id);
            }
        }
    }
}

fn scheduler_key(kv: &KeyValue) -> SchedulerKey {
    SchedulerKey {
        node: String::from_utf8_lossy(kv.value()).into_owned(),
        create_revision: kv.create_revision(),
        lease: kv.lease(),
    }
}
