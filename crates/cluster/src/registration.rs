//! A node's registration: its record under a lease, kept alive from one task.

use std::time::Duration;

use etcd_client::{Compare, CompareOp, PutOptions, Txn, TxnOp, TxnOpResponse};
use tokio::sync::watch;
use tokio::time::Instant;

use crate::{Error, Etcd, Keys, NodeRecord, error::bounded};

/// How a node registers.
#[derive(Debug, Clone, Copy)]
pub struct RegistrationOptions {
    /// The lease's time to live: how long after its agent stops answering a node is lost.
    /// Keepalives go out every third of it. Whole seconds (etcd's unit), at least 2 s.
    pub ttl: Duration,
}

impl Default for RegistrationOptions {
    fn default() -> Self {
        RegistrationOptions {
            ttl: Duration::from_secs(5),
        }
    }
}

/// Whether this node holds its lease, as the next layers need to know.
///
/// While it is [`Unreachable`](Connection::Unreachable), a node keeps the replicas it runs
/// (fail static: a partition must not stop a service that still serves its side), starts
/// nothing new, and a singleton leader on it must stop before `until` of the last
/// [`Registered`](Connection::Registered): after that instant the lease may have expired
/// and another node may have been given its work.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Connection {
    /// The lease is held: etcd answered a keepalive, and the lease is surely valid until
    /// `until` (measured from when the keepalive was sent).
    Registered {
        /// The lease's id.
        lease: i64,
        /// Until when the lease is surely valid.
        until: Instant,
    },
    /// etcd does not answer; the lease may still be valid until `until`.
    Unreachable {
        /// The lease being kept, if one was granted (while registering again: the old one,
        /// kept if etcd still holds it when it answers).
        lease: Option<i64>,
        /// Until when the last granted lease is surely valid.
        until: Option<Instant>,
        /// The last error, in words.
        error: String,
    },
}

/// A registered node: its lease is kept alive until [`leave`](Registration::leave) (or
/// the end of the process, after which the lease expires within its TTL).
pub struct Registration {
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<Option<i64>>,
    connection: watch::Receiver<Connection>,
    etcd: Etcd,
    keys: Keys,
    node: String,
}

impl Registration {
    /// Registers `record` (its lease and its member record), then keeps the lease alive
    /// from a task of its own. Fails when etcd does not answer, or when the name stays taken
    /// by another lease for two TTLs (a live agent); later losses of the lease are
    /// re-registered by the task.
    pub async fn start(
        etcd: &Etcd,
        keys: &Keys,
        record: NodeRecord,
        options: RegistrationOptions,
    ) -> Result<Self, Error> {
        crate::keys::check_name("node name", &record.name)?;
        let ttl = options.ttl.max(Duration::from_secs(2));
        // A name still held is waited for, a while: the holder may be this agent's previous
        // run (killed, restarted at once), whose lease expires within its TTL. A live
        // holder keeps it, and this is an error after two TTLs.
        let patience = Instant::now() + 2 * ttl;
        let (lease, sent) = loop {
            let sent = Instant::now();
            match register(etcd, keys, &record, ttl).await {
                Err(Error::NodeTaken { lease, .. }) if Instant::now() < patience => {
                    tracing::info!(
                        node = %record.name,
                        holder = format_args!("{lease:x}"),
                        "the node's name is held by another lease; waiting for it to expire"
                    );
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
                other => break (other?, sent),
            }
        };
        let until = sent + ttl;
        let (connection_tx, connection) = watch::channel(Connection::Registered { lease, until });
        let (stop, stop_rx) = watch::channel(false);
        let task = tokio::spawn(keep_registered(
            Keeper {
                etcd: etcd.clone(),
                keys: keys.clone(),
                record: record.clone(),
                ttl,
                connection: connection_tx,
                stop: stop_rx,
            },
            lease,
        ));
        tracing::info!(node = %record.name, lease = format_args!("{lease:x}"), "registered in etcd");
        Ok(Registration {
            stop,
            task,
            connection,
            etcd: etcd.clone(),
            keys: keys.clone(),
            node: record.name,
        })
    }

    /// Whether the lease is held, live.
    pub fn connection(&self) -> watch::Receiver<Connection> {
        self.connection.clone()
    }

    /// Leaves the cluster: stops the keepalives, deletes the member record and the node's
    /// key in one transaction (other nodes see it leave, not get lost), and revokes the
    /// lease. Bounded by the connection's timeout.
    pub async fn leave(self) -> Result<(), Error> {
        self.stop.send_replace(true);
        let lease = self.task.await.ok().flatten();
        let txn = Txn::new().and_then([
            TxnOp::delete(self.keys.member(&self.node), None),
            TxnOp::delete(self.keys.node(&self.node), None),
        ]);
        let mut client = self.etcd.client.clone();
        bounded("leave", self.etcd.timeout, client.txn(txn)).await?;
        if let Some(lease) = lease {
            bounded(
                "revoke the lease",
                self.etcd.timeout,
                client.lease_revoke(lease),
            )
            .await?;
        }
        tracing::info!(node = %self.node, "left the cluster");
        Ok(())
    }
}

/// Grants a lease and puts the node's key under it (and its member record), unless another
/// live agent holds the name.
async fn register(
    etcd: &Etcd,
    keys: &Keys,
    record: &NodeRecord,
    ttl: Duration,
) -> Result<i64, Error> {
    let mut client = etcd.client.clone();
    let ttl_s = i64::try_from(ttl.as_secs()).unwrap_or(i64::MAX);
    let lease = bounded(
        "grant a lease",
        etcd.timeout,
        client.lease_grant(ttl_s, None),
    )
    .await?
    .id();
    let value = serde_json::to_vec(record).expect("a node record serializes");
    let node = keys.node(&record.name);
    let txn = Txn::new()
        .when([Compare::create_revision(node.clone(), CompareOp::Equal, 0)])
        .and_then([
            TxnOp::put(
                node.clone(),
                value.clone(),
                Some(PutOptions::new().with_lease(lease)),
            ),
            TxnOp::put(keys.member(&record.name), value, None),
        ])
        .or_else([TxnOp::get(node, None)]);
    let resp = bounded("register the node", etcd.timeout, client.txn(txn)).await;
    match resp {
        Ok(r) if r.succeeded() => Ok(lease),
        other => {
            let _ = bounded("revoke", etcd.timeout, client.lease_revoke(lease)).await;
            let r = other?;
            let holder = r
                .op_responses()
                .into_iter()
                .find_map(|o| match o {
                    TxnOpResponse::Get(g) => g.kvs().first().map(|kv| kv.lease()),
                    _ => None,
                })
                .unwrap_or(0);
            Err(Error::NodeTaken {
                node: record.name.clone(),
                lease: holder,
            })
        }
    }
}

struct Keeper {
    etcd: Etcd,
    keys: Keys,
    record: NodeRecord,
    ttl: Duration,
    connection: watch::Sender<Connection>,
    stop: watch::Receiver<bool>,
}

/// Why [`Keeper::keep`] returned.
enum Kept {
    Stopped,
    Expired(String),
}

/// The registration's task: keeps the lease; when it is lost, registers again with a new
/// one. Returns the lease held when told to stop.
async fn keep_registered(mut k: Keeper, mut lease: i64) -> Option<i64> {
    loop {
        match k.keep(lease).await {
            Kept::Stopped => return Some(lease),
            Kept::Expired(why) => {
                tracing::warn!(node = %k.record.name, "lost the lease ({why}); registering again");
            }
        }
        lease = k.register_again(lease).await?;
        tracing::info!(node = %k.record.name, lease = format_args!("{lease:x}"), "registered again");
    }
}

impl Keeper {
    /// Keeps `lease` alive, one keepalive every third of the TTL on one stream, until it is
    /// surely gone (etcd says so, or no keepalive was answered for a whole TTL) or the
    /// registration stops.
    ///
    /// # Cancel safety
    /// Not meant to be cancelled: the stop signal is one of its own branches.
    async fn keep(&mut self, lease: i64) -> Kept {
        let period = self.ttl / 3;
        let mut until = Instant::now() + self.ttl;
        let mut tick = tokio::time::interval(period);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut stream = None;
        loop {
            tokio::select! {
                _ = self.stop.wait_for(|s| *s) => return Kept::Stopped,
                _ = tick.tick() => {}
            }
            if Instant::now() >= until {
                return Kept::Expired("no keepalive answered for a whole TTL".into());
            }
            if stream.is_none() {
                let mut client = self.etcd.client.clone();
                match bounded("keepalive", period, client.lease_keep_alive(lease)).await {
                    Ok(s) => stream = Some(s),
                    Err(e) => {
                        self.unreachable(lease, until, &e);
                        continue;
                    }
                }
            }
            let Some((keeper, answers)) = stream.as_mut() else {
                continue;
            };
            let sent = Instant::now();
            let answer = tokio::time::timeout(period, async {
                keeper.keep_alive().await?;
                answers.message().await
            })
            .await;
            match answer {
                Ok(Ok(Some(a))) if a.ttl() > 0 => {
                    until = sent + Duration::from_secs(a.ttl().unsigned_abs());
                    self.connection.send_if_modified(|c| {
                        let fresh = Connection::Registered { lease, until };
                        let changed = !matches!(c, Connection::Registered { .. });
                        *c = fresh;
                        changed
                    });
                }
                Ok(Ok(Some(_))) => return Kept::Expired("etcd says the lease expired".into()),
                Ok(Ok(None)) => {
                    stream = None;
                    self.unreachable(lease, until, &"the keepalive stream ended");
                }
                Ok(Err(e)) => {
                    stream = None;
                    self.unreachable(lease, until, &e);
                }
                Err(_) => {
                    stream = None;
                    self.unreachable(lease, until, &"no keepalive answer in time");
                }
            }
        }
    }

    fn unreachable(&self, lease: i64, until: Instant, error: &dyn std::fmt::Display) {
        let error = error.to_string();
        tracing::warn!(node = %self.record.name, %error, "etcd does not answer the lease's keepalive");
        self.connection.send_replace(Connection::Unreachable {
            lease: Some(lease),
            until: Some(until),
            error,
        });
    }

    /// Registers with a new lease, retrying (at most every 2 s) until it works or the
    /// registration stops (`None`). When the old lease still holds the node's key it is
    /// the one kept (returned): it outlived the outage (a new etcd leader extends every
    /// lease), and revoking it would show the node lost to everyone and drop what else it
    /// holds (endpoints, leader terms).
    async fn register_again(&mut self, old: i64) -> Option<i64> {
        let mut delay = self.ttl / 10;
        loop {
            match register(&self.etcd, &self.keys, &self.record, self.ttl).await {
                Ok(lease) => return Some(lease),
                Err(Error::NodeTaken { lease, .. }) if lease == old => {
                    tracing::info!(node = %self.record.name, lease = format_args!("{old:x}"), "the lease outlived the outage; keeping it");
                    return Some(old);
                }
                Err(e) => {
                    // The old lease is still the one kept if it outlives the outage: a
                    // resignation under it goes on trying (its key would block every
                    // campaign otherwise), though nothing is trusted to it (no `until`).
                    self.connection.send_replace(Connection::Unreachable {
                        lease: Some(old),
                        until: None,
                        error: e.to_string(),
                    });
                }
            }
            tokio::select! {
                _ = self.stop.wait_for(|s| *s) => return None,
                () = tokio::time::sleep(delay) => {}
            }
            delay = (delay * 2).min(Duration::from_secs(2));
        }
    }
}
