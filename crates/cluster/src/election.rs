//! Leader election on etcd: [`EtcdElection`], the cluster-wide [`store::Election`].
//!
//! A group's term is the key `/bulwark/<cluster>/leaders/<group>`, put under the node's
//! lease (the [`Registration`](crate::Registration)'s) by a transaction that succeeds only
//! while the key is absent. Its fencing token is the key's create revision: etcd's revision
//! counter only grows, cluster-wide, across every key, so each term's token is greater than
//! every one before it, and a restart of an agent (or of etcd) never reuses one.
//!
//! # The fence: a leader stops before its lease can have expired
//! The lease is kept alive by the registration: a keepalive *sent* at `s` and answered
//! makes etcd extend the lease to at least `s + T` (etcd starts the TTL when it receives the
//! keepalive, after `s`; a new etcd leader extends every lease again). So the lease, and the
//! term, surely hold until `s + T`, measured on this node's monotonic clock: no clocks are
//! compared across machines, only their *rates* matter, and they differ by far less than
//! the margin. A term is held here only until the **fence** `s + T/2`
//! (`policy::leader::lease_fence`): past it, `renew` says the term is lost without asking
//! etcd, `valid_until` tells the caller to renew by then (`runtime::leader` wakes at it),
//! and `resign` does not wait for etcd. The other half of the TTL is the margin for the
//! depose (the leader leaves the proxy's routing, its token file says `standby`:
//! milliseconds), a paused process, and clock rates. With keepalives every T/3 (the
//! registration's), one keepalive lost, or answered more than T/6 late, demotes the leader:
//! safety over availability.
//!
//! A node cut off from etcd therefore stops its leaders within T/2 of its last answered
//! keepalive, while the majority side can only take the group once the lease expired, at
//! least T after it: the two never lead at the same time.
//!
//! Every call is bounded by the connection's timeout, and the calls of a held term by its
//! fence too. The trait is blocking: calls run on the agent's runtime (`Handle::block_on`)
//! from the blocking pool, where `runtime::leader` makes them.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use etcd_client::{
    Compare, CompareOp, EventType, PutOptions, Txn, TxnOp, TxnOpResponse, WatchOptions,
};
use store::{ElectionError, Term};
use tokio::sync::watch;

use crate::error::{bounded, bounded_read};
use crate::{Connection, Error, Etcd, Keys};

/// The cluster-wide election of one agent: its campaigns go under its node's lease.
pub struct EtcdElection {
    etcd: Etcd,
    keys: Keys,
    node: String,
    ttl: Duration,
    runtime: tokio::runtime::Handle,
    /// The registration's connection, once the node is registered.
    connection: watch::Sender<Option<watch::Receiver<Connection>>>,
    /// The terms granted here and not over yet: group → (token, lease).
    terms: Mutex<BTreeMap<String, (u64, i64)>>,
    /// Makes each campaign's value unique (so a campaign that timed out can be undone
    /// without touching a later one).
    campaigns: AtomicU64,
    /// Set by [`close`](EtcdElection::close): waits return at once.
    closed: watch::Sender<bool>,
}

impl std::fmt::Debug for EtcdElection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdElection")
            .field("node", &self.node)
            .finish_non_exhaustive()
    }
}

impl EtcdElection {
    /// The election of node `node`, whose registration's lease has time to live `ttl`;
    /// calls run on `runtime`. It grants nothing before [`attach`](Self::attach).
    pub fn new(
        etcd: &Etcd,
        keys: &Keys,
        node: &str,
        ttl: Duration,
        runtime: tokio::runtime::Handle,
    ) -> Self {
        EtcdElection {
            etcd: etcd.clone(),
            keys: keys.clone(),
            node: node.to_owned(),
            ttl,
            runtime,
            connection: watch::Sender::new(None),
            terms: Mutex::new(BTreeMap::new()),
            campaigns: AtomicU64::new(0),
            closed: watch::Sender::new(false),
        }
    }

    /// Ends every [`wait_free`](store::Election::wait_free) under way and to come (the
    /// agent is leaving: a blocked wait would hold its runtime's shutdown).
    pub fn close(&self) {
        self.closed.send_replace(true);
    }

    /// Campaigns from now on under the lease of this registration's connection.
    pub fn attach(&self, connection: watch::Receiver<Connection>) {
        self.connection.send_replace(Some(connection));
    }

    fn terms(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, (u64, i64)>> {
        self.terms.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The node's lease and its fence, if the fence has not passed.
    fn lease(&self) -> Result<(i64, Instant), String> {
        let state = self
            .connection
            .borrow()
            .as_ref()
            .map(|c| c.borrow().clone());
        let (lease, until, error) = match state {
            None => return Err("the node is not registered yet".into()),
            Some(Connection::Registered { lease, until }) => (Some(lease), Some(until), None),
            Some(Connection::Unreachable {
                lease,
                until,
                error,
            }) => (lease, until, Some(error)),
        };
        let why = error.unwrap_or_else(|| "its keepalives are late".into());
        match (lease, until) {
            (Some(lease), Some(until)) => {
                let fence = policy::leader::lease_fence(until.into_std(), self.ttl);
                if Instant::now() < fence {
                    Ok((lease, fence))
                } else {
                    Err(format!(
                        "the node's lease is past its fence (half its TTL since the last \
                         answered keepalive): {why}"
                    ))
                }
            }
            _ => Err(format!("the node holds no lease: {why}")),
        }
    }

    /// The lease, waiting (within the timeout) for the node's registration.
    fn lease_for_campaign(&self) -> Result<(i64, Instant), ElectionError> {
        if self.connection.borrow().is_none() {
            let mut rx = self.connection.subscribe();
            let _ = self.runtime.block_on(tokio::time::timeout(
                self.etcd.timeout,
                rx.wait_for(Option::is_some),
            ));
        }
        self.lease().map_err(ElectionError::Unavailable)
    }

    fn lost(term: &Term) -> ElectionError {
        ElectionError::Lost {
            group: term.group.clone(),
            holder: term.holder.clone(),
            token: term.token,
        }
    }

    fn key(&self, group: &str) -> String {
        self.keys.leader(group)
    }
}

fn unavailable(e: Error) -> ElectionError {
    ElectionError::Unavailable(e.to_string())
}

impl store::Election for EtcdElection {
    fn campaign(&self, group: &str, candidate: &str) -> Result<Term, ElectionError> {
        let (lease, _) = self.lease_for_campaign()?;
        let key = self.key(group);
        let n = self.campaigns.fetch_add(1, Ordering::Relaxed);
        let holder = format!("{candidate}@{}", self.node);
        // The value names the holder and this campaign; the term's holder is the name.
        let value = format!("{holder} #{lease:x}.{n}");
        let txn = Txn::new()
            .when([Compare::create_revision(key.clone(), CompareOp::Equal, 0)])
            .and_then([TxnOp::put(
                key.clone(),
                value.clone(),
                Some(PutOptions::new().with_lease(lease)),
            )])
            .or_else([TxnOp::get(key.clone(), None)]);
        let mut client = self.etcd.client.clone();
        let answer = self
            .runtime
            .block_on(bounded("campaign", self.etcd.timeout, client.txn(txn)));
        let resp = match answer {
            Ok(r) => r,
            Err(e) => {
                // It may have been applied all the same: undo it, or the key would stay
                // under a live lease with nobody leading.
                self.undo(key, value);
                return Err(unavailable(e));
            }
        };
        if !resp.succeeded() {
            let held = resp.op_responses().into_iter().find_map(|o| match o {
                TxnOpResponse::Get(g) => g.kvs().first().cloned(),
                _ => None,
            });
            let (holder, token) = held.map_or((String::new(), 0), |kv| {
                let v = String::from_utf8_lossy(kv.value()).into_owned();
                (name_of(&v).to_owned(), kv.create_revision().unsigned_abs())
            });
            return Err(ElectionError::Held {
                group: group.to_owned(),
                holder,
                token,
            });
        }
        let token = resp.header().map_or(0, |h| h.revision()).unsigned_abs();
        self.terms().insert(group.to_owned(), (token, lease));
        tracing::info!(group, %holder, token, lease = format_args!("{lease:x}"), "took the leadership in etcd");
        Ok(Term {
            group: group.to_owned(),
            holder,
            token,
        })
    }

    /// A lost term stays known here until the caller resigns it: its key may outlive the
    /// fence (etcd answers again before the lease expired), and only `resign` deletes it.
    fn renew(&self, term: &Term) -> Result<(), ElectionError> {
        let ours = self.terms().get(&term.group).copied();
        let Some((token, lease)) = ours.filter(|(t, _)| *t == term.token) else {
            return Err(Self::lost(term));
        };
        let current = self.lease();
        let fence = match current {
            Ok((l, fence)) if l == lease => fence,
            Ok(_) | Err(_) => {
                tracing::warn!(
                    group = term.group,
                    token,
                    "the term's lease is past its fence or gone: stop leading"
                );
                return Err(Self::lost(term));
            }
        };
        // Asked within the fence: a late answer cannot keep a term past it.
        let budget = self
            .etcd
            .timeout
            .min(fence.saturating_duration_since(Instant::now()));
        let mut client = self.etcd.client.clone();
        let key = self.key(&term.group);
        let answer = self
            .runtime
            .block_on(bounded("renew", budget, client.get(key, None)));
        match answer {
            Ok(r) => {
                let kv = r.kvs().first();
                if kv.is_some_and(|kv| {
                    kv.create_revision().unsigned_abs() == token && kv.lease() == lease
                }) {
                    Ok(())
                } else {
                    Err(Self::lost(term))
                }
            }
            Err(_) if Instant::now() >= fence => Err(Self::lost(term)),
            Err(e) => Err(unavailable(e)),
        }
    }

    fn resign(&self, term: &Term) -> Result<(), ElectionError> {
        let lease = {
            let mut terms = self.terms();
            match terms.get(&term.group) {
                Some(&(t, lease)) if t == term.token => {
                    terms.remove(&term.group);
                    lease
                }
                _ => return Ok(()),
            }
        };
        let deleting = self.runtime.spawn(delete_term(
            self.etcd.clone(),
            self.key(&term.group),
            term.token,
            lease,
            self.connection.subscribe(),
        ));
        // Waited for while the lease is surely held; past the fence the key goes in the
        // background (or with the lease), and the leader is not kept waiting for etcd.
        if let Ok((_, fence)) = self.lease() {
            let budget = self
                .etcd
                .timeout
                .min(fence.saturating_duration_since(Instant::now()));
            let _ = self
                .runtime
                .block_on(tokio::time::timeout(budget, deleting));
        }
        Ok(())
    }

    fn observe(&self, group: &str) -> Result<Option<Term>, ElectionError> {
        let key = self.key(group);
        let resp = self
            .runtime
            .block_on(bounded_read("observe", self.etcd.timeout, || {
                let (mut client, key) = (self.etcd.client.clone(), key.clone());
                async move { client.get(key, None).await }
            }))
            .map_err(unavailable)?;
        Ok(resp.kvs().first().map(|kv| Term {
            group: group.to_owned(),
            holder: name_of(&String::from_utf8_lossy(kv.value())).to_owned(),
            token: kv.create_revision().unsigned_abs(),
        }))
    }

    fn wait_free(&self, group: &str, timeout: Duration) -> Result<(), ElectionError> {
        let (etcd, key) = (self.etcd.clone(), self.key(group));
        let mut closed = self.closed.subscribe();
        self.runtime.block_on(async move {
            // After a failure, a second's pause: the caller campaigns again at once.
            let free = async {
                let r = until_free(etcd, key).await;
                if r.is_err() {
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
                r
            };
            tokio::select! {
                r = free => r.map_err(unavailable),
                () = tokio::time::sleep(timeout) => Ok(()),
                _ = closed.wait_for(|c| *c) => Ok(()),
            }
        })
    }

    fn valid_until(&self, term: &Term) -> Option<Instant> {
        let ours = self.terms().get(&term.group).copied();
        match (ours, self.lease()) {
            (Some((t, lease)), Ok((l, fence))) if t == term.token && l == lease => Some(fence),
            _ => Some(Instant::now()),
        }
    }
}

impl EtcdElection {
    /// Deletes `key` if it still holds `value` (a campaign whose answer was lost), in the
    /// background, until done or the node's lease (and the key with it) is gone.
    fn undo(&self, key: String, value: String) {
        let (etcd, connection) = (self.etcd.clone(), self.connection.subscribe());
        let lease = self.lease().map_or(0, |(l, _)| l);
        self.runtime.spawn(async move {
            loop {
                let txn = Txn::new()
                    .when([Compare::value(key.clone(), CompareOp::Equal, value.clone())])
                    .and_then([TxnOp::delete(key.clone(), None)]);
                let mut client = etcd.client.clone();
                if bounded("undo a campaign", etcd.timeout, client.txn(txn))
                    .await
                    .is_ok()
                    || !holds(&connection, lease)
                {
                    return;
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        });
    }
}

/// Whether the node still has lease `lease` (granted, maybe unconfirmed lately).
fn holds(connection: &watch::Receiver<Option<watch::Receiver<Connection>>>, lease: i64) -> bool {
    let state = connection.borrow().as_ref().map(|c| c.borrow().clone());
    match state {
        Some(Connection::Registered { lease: l, .. }) => l == lease,
        Some(Connection::Unreachable { lease: l, .. }) => l == Some(lease),
        None => false,
    }
}

/// Deletes a term's key if it is still that term's (its create revision is the token),
/// retried every second until etcd answers or the lease it was under is gone.
async fn delete_term(
    etcd: Etcd,
    key: String,
    token: u64,
    lease: i64,
    connection: watch::Receiver<Option<watch::Receiver<Connection>>>,
) {
    let revision = i64::try_from(token).unwrap_or(i64::MAX);
    loop {
        let txn = Txn::new()
            .when([Compare::create_revision(
                key.clone(),
                CompareOp::Equal,
                revision,
            )])
            .and_then([TxnOp::delete(key.clone(), None)]);
        let mut client = etcd.client.clone();
        match bounded("resign", etcd.timeout, client.txn(txn)).await {
            Ok(_) => return,
            Err(e) if !holds(&connection, lease) => {
                tracing::debug!(%key, "not resigned ({e}); the lease is gone, and the key with it");
                return;
            }
            Err(e) => tracing::warn!(%key, token, "cannot resign yet, trying again: {e}"),
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// Returns once `key` is absent or changes.
async fn until_free(etcd: Etcd, key: String) -> Result<(), Error> {
    let mut client = etcd.client.clone();
    let now = bounded(
        "read a leader key",
        etcd.timeout,
        client.get(key.clone(), None),
    )
    .await?;
    if now.kvs().is_empty() {
        return Ok(());
    }
    let revision = now.header().map_or(0, |h| h.revision());
    let options = WatchOptions::new().with_start_revision(revision + 1);
    let watching = client.watch(key.as_str(), Some(options));
    let (_watcher, mut stream) = bounded("watch a leader key", etcd.timeout, watching).await?;
    while let Some(resp) = stream.message().await? {
        if resp.canceled()
            || resp
                .events()
                .iter()
                .any(|e| e.event_type() == EventType::Delete || e.event_type() == EventType::Put)
        {
            return Ok(());
        }
    }
    Err(Error::BadRecord {
        key,
        detail: "the watch ended".into(),
    })
}

/// The holder's name in a key's value (`NAME #CAMPAIGN`).
pub(crate) fn name_of(value: &str) -> &str {
    value.split_once(" #").map_or(value, |(name, _)| name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_holder_is_read_back_without_the_campaign() {
        assert_eq!(name_of("db/0@h1 #7a.3"), "db/0@h1");
        assert_eq!(name_of("written by hand"), "written by hand");
    }
}
