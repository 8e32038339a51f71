use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::sync::Notify;

/// The ready replicas of one service at one moment. Immutable: a change publishes a new
/// snapshot, so readers never lock while they pick a replica.
#[derive(Debug, Default)]
pub struct Endpoints {
    /// Increases with every snapshot of the same service.
    pub version: u64,
    /// The replicas to balance over, each ready to take requests.
    pub ready: Vec<Endpoint>,
    /// During a canary or blue-green rollout: how requests divide between the new
    /// revision and the others.
    pub split: Option<Split>,
    /// More than one revision runs (a rollout): outcomes say which one answered.
    pub mixed: bool,
    /// For a service with `[leader]`: which requests go to the leader, and the leader
    /// (if any is ready now), whose requests carry its fencing token.
    pub leader: Option<LeaderRouting>,
}

/// Leader routing of a service with `[services.NAME.leader]`.
#[derive(Debug, Clone, PartialEq)]
pub struct LeaderRouting {
    /// Which requests only the leader may answer.
    pub route: spec::LeaderRoute,
    /// The current leader, present only while its promoted incarnation is ready and in
    /// the snapshot's `ready` list: leader traffic finds no replica otherwise (never a
    /// standby, never the old leader's new incarnation).
    pub current: Option<Leading>,
    /// The token of the term one of this node's replicas holds, routable or not (in
    /// cluster mode, a claim that outranks every older one another node still publishes).
    pub held: Option<u64>,
}

/// The leader of a service, as the proxy routes to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Leading {
    /// Its replica index (an entry of `ready`).
    pub replica: u32,
    /// Its fencing token, sent in the `Bulwark-Fencing-Token` header.
    pub token: u64,
}

impl LeaderRouting {
    /// Whether a request must go to the leader; `safe`: its method is one that only
    /// reads (GET, HEAD, OPTIONS, TRACE).
    pub fn to_leader(&self, safe: bool) -> bool {
        match self.route {
            spec::LeaderRoute::Leader => true,
            spec::LeaderRoute::All => false,
            spec::LeaderRoute::Writes => !safe,
        }
    }
}

impl Endpoints {
    /// The current leader (a `[leader]` service) as a one-entry slice of `ready`; empty
    /// when no leader is ready, or the service has none.
    pub fn leader_only(&self) -> &[Endpoint] {
        let at = self
            .leader
            .as_ref()
            .and_then(|l| l.current)
            .and_then(|c| self.ready.iter().position(|e| e.replica == c.replica));
        match at {
            Some(i) => &self.ready[i..=i],
            None => &[],
        }
    }
}

/// How requests divide between a rollout's new revision and the stable one.
#[derive(Debug, Clone, PartialEq)]
pub struct Split {
    /// The new revision.
    pub canary: u32,
    /// Percent of requests (0 to 100) sent to it.
    pub weight: f64,
    /// What keeps a client on one side; otherwise each request is drawn by weight.
    pub sticky: Option<spec::Sticky>,
}

impl Split {
    /// Whether a request goes to the new revision: `key` is the hash of its sticky value
    /// (if the split is sticky and the request has one), `draw` a uniform number in
    /// `[0, 1)` for the others.
    pub fn to_canary(&self, key: Option<u64>, draw: f64) -> bool {
        let at = match key {
            // The top 53 bits of the hash, as a fraction: the same client lands on the
            // same side for as long as the weight does not cross its point.
            Some(k) => (k >> 11) as f64 / (1u64 << 53) as f64,
            None => draw,
        };
        at * 100.0 < self.weight
    }
}

/// In cluster mode, another node's replica with cluster index `i` is
/// [`Endpoint::replica`] `REMOTE_REPLICA + i`: above any local index, so the proxy's
/// per-replica state, events and restart wishes never mistake it for a local replica.
pub const REMOTE_REPLICA: u32 = 1 << 24;

/// One ready replica incarnation the proxy may send requests to.
#[derive(Debug, Clone)]
pub struct Endpoint {
    /// Replica index within its service.
    pub replica: u32,
    /// Where the replica listens.
    pub addr: SocketAddr,
    /// The revision of the service it runs (1 for the version `up` started with).
    pub revision: u32,
    /// When this incarnation became ready (slow start ramps from here).
    pub ready_since: std::time::Instant,
    /// Work in flight on this replica incarnation. The proxy holds a [`LoadGuard`] per
    /// request; the supervisor waits for it to drain before it signals a replica to stop.
    pub load: Arc<Load>,
}

impl Endpoint {
    /// Another node's replica (cluster mode), not one this node's supervisor runs.
    pub fn is_remote(&self) -> bool {
        self.replica >= REMOTE_REPLICA
    }
}

/// Counts users of one replica incarnation.
///
/// Invariant: `inflight` equals the number of live [`LoadGuard`]s; `drained` wakes when it
/// reaches zero, so draining is event-driven, not polled.
#[derive(Debug, Default)]
pub struct Load {
    inflight: AtomicUsize,
    idle: Notify,
}

impl Load {
    /// Counts one more user until the returned guard is dropped.
    pub fn acquire(self: &Arc<Self>) -> LoadGuard {
        self.inflight.fetch_add(1, Ordering::Relaxed);
        LoadGuard(self.clone())
    }

    /// How many guards are live right now.
    pub fn inflight(&self) -> usize {
        self.inflight.load(Ordering::Relaxed)
    }

    /// Resolves once nothing is in flight.
    ///
    /// # Cancel safety
    /// Cancel safe: dropping the future loses nothing.
    pub async fn drained(&self) {
        loop {
            let idle = self.idle.notified();
            if self.inflight.load(Ordering::Acquire) == 0 {
                return;
            }
            idle.await;
        }
    }
}

/// Releases one unit of [`Load`] when dropped.
#[derive(Debug)]
pub struct LoadGuard(Arc<Load>);

impl Drop for LoadGuard {
    fn drop(&mut self) {
        if self.0.inflight.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.idle.notify_waiters();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test(start_paused = true)]
    async fn drained_wakes_when_last_guard_drops() {
        let load = Arc::new(Load::default());
        let a = load.acquire();
        let b = load.acquire();
        assert_eq!(load.inflight(), 2);
        let waiter = tokio::spawn({
            let load = load.clone();
            async move { load.drained().await }
        });
        drop(a);
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert!(!waiter.is_finished(), "one request is still in flight");
        drop(b);
        tokio::time::timeout(Duration::from_secs(1), waiter)
            .await
            .expect("drained after the last guard")
            .unwrap();
        assert_eq!(load.inflight(), 0);
    }
}
