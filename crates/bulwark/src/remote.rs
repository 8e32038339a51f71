//! Cross-node proxying: each service's endpoints as the proxy sees them in cluster mode are
//! this node's ready replicas (the supervisor's snapshots, unchanged) plus the other nodes'
//! ready ones from the cluster watch (`endpoints/<node>/<service>/<index>`). Another node's
//! replica is [`bus::REMOTE_REPLICA`] + its cluster index; it leaves the set the moment its
//! key goes (its node's lease expired). Which of them a request goes to (this node's first,
//! `prefer_local`) is the proxy's choice.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use bus::{Endpoint, Endpoints, Load};
use cluster::ClusterEndpoints;
use tokio::sync::watch;

/// Another node's replica as last seen: when it was first seen ready at this address (its
/// slow start), and its in-flight count (this node's requests only).
type Seen = HashMap<(String, u32, SocketAddr), (Instant, Arc<Load>)>;

/// The other nodes' ready, reachable endpoints of `service`, in cluster index order. An
/// address on loopback or unspecified is another machine's own: not reachable from here
/// (its agent has no `--advertise`), so left out.
pub fn remote(
    all: &ClusterEndpoints,
    me: &str,
    service: &str,
    seen: &mut Seen,
    now: Instant,
) -> Vec<Endpoint> {
    let mut out = Vec::new();
    let mut kept = Seen::new();
    for ((node, s, index), e) in all {
        if node == me || s != service || !e.ready {
            continue;
        }
        let Some(addr) = e
            .address
            .as_deref()
            .and_then(|a| a.parse::<SocketAddr>().ok())
        else {
            continue;
        };
        if addr.ip().is_loopback() || addr.ip().is_unspecified() {
            continue;
        }
        let key = (node.clone(), *index, addr);
        let (since, load) = seen
            .remove(&key)
            .unwrap_or_else(|| (now, Arc::new(Load::default())));
        out.push(Endpoint {
            replica: bus::REMOTE_REPLICA.saturating_add(*index),
            addr,
            revision: 1,
            ready_since: since,
            load: load.clone(),
        });
        kept.insert(key, (since, load));
    }
    *seen = kept;
    out
}

/// This node's snapshot with the other nodes' endpoints added, under `version`. During a
/// rollout (a split) or for a `[leader]` service the set stays this node's: the other
/// nodes' revisions and leaders are not published.
pub fn merged(local: &Endpoints, remote: Vec<Endpoint>, version: u64) -> Endpoints {
    let mut ready = local.ready.clone();
    if local.split.is_none() && local.leader.is_none() && !local.mixed {
        ready.extend(remote);
    }
    Endpoints {
        version,
        ready,
        split: local.split.clone(),
        mixed: local.mixed,
        leader: local.leader.clone(),
    }
}

/// Feeds `tx` with `local` merged with `cluster`'s endpoints of `service` on every change
/// of either, until the supervisor drops the service's channel.
async fn follow(
    service: String,
    me: String,
    mut local: watch::Receiver<Arc<Endpoints>>,
    mut cluster: watch::Receiver<Arc<ClusterEndpoints>>,
    tx: watch::Sender<Arc<Endpoints>>,
) {
    let mut seen = Seen::new();
    let mut following = true;
    // Version 1 is the channel's first value (this node's replicas only).
    let mut version = 1u64;
    loop {
        let snap = local.borrow_and_update().clone();
        let remote = match following {
            true => remote(
                &cluster.borrow_and_update(),
                &me,
                &service,
                &mut seen,
                Instant::now(),
            ),
            // The cluster watch ended (the agent leaves): this node's replicas only.
            false => Vec::new(),
        };
        version += 1;
        tx.send_replace(Arc::new(merged(&snap, remote, version)));
        let cluster_changed = async {
            match following {
                true => cluster.changed().await.is_ok(),
                false => std::future::pending().await,
            }
        };
        tokio::select! {
            r = local.changed() => if r.is_err() { return },
            ok = cluster_changed => following = ok,
        }
    }
}

/// The endpoints each service's proxy follows in cluster mode: one merging task per
/// service, started at the first ask and shared by every later one (a reload asks again).
#[derive(Clone)]
pub struct Merger {
    me: String,
    cluster: watch::Receiver<Arc<ClusterEndpoints>>,
    merged: Arc<Mutex<BTreeMap<String, watch::Receiver<Arc<Endpoints>>>>>,
}

impl Merger {
    pub fn new(me: String, cluster: watch::Receiver<Arc<ClusterEndpoints>>) -> Merger {
        Merger {
            me,
            cluster,
            merged: Arc::default(),
        }
    }

    /// `service`'s merged endpoints, given its local ones (`None`: no such service).
    pub fn endpoints(
        &self,
        service: &str,
        local: Option<watch::Receiver<Arc<Endpoints>>>,
    ) -> Option<watch::Receiver<Arc<Endpoints>>> {
        let mut all = self.merged.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(rx) = all.get(service)
            && rx.has_changed().is_ok()
        {
            return Some(rx.clone());
        }
        let local = local?;
        let first = merged(&local.borrow(), Vec::new(), 1);
        let (tx, rx) = watch::channel(Arc::new(first));
        let task = follow(
            service.to_owned(),
            self.me.clone(),
            local,
            self.cluster.clone(),
            tx,
        );
        tokio::spawn(task);
        all.insert(service.to_owned(), rx.clone());
        Some(rx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cluster::schedule::Endpoint as Published;

    fn published(list: &[(&str, &str, u32, &str, bool)]) -> ClusterEndpoints {
        list.iter()
            .map(|(n, s, i, a, ready)| {
                let e = Published {
                    address: Some((*a).to_owned()),
                    ready: *ready,
                };
                (((*n).to_owned(), (*s).to_owned(), *i), e)
            })
            .collect()
    }

    #[test]
    fn other_nodes_ready_reachable_replicas_of_the_service_are_added() {
        let all = published(&[
            ("a", "web", 0, "10.0.0.1:9000", true),
            ("b", "web", 1, "10.0.0.2:9000", true),
            ("b", "web", 2, "10.0.0.2:9001", false),
            ("b", "db", 0, "10.0.0.2:9100", true),
            ("c", "web", 3, "127.0.0.1:9000", true),
            ("c", "web", 4, "10.0.0.3:9000", true),
        ]);
        let mut seen = Seen::new();
        let t0 = Instant::now();
        let out = remote(&all, "a", "web", &mut seen, t0);
        let got: Vec<(u32, String)> = out
            .iter()
            .map(|e| (e.replica - bus::REMOTE_REPLICA, e.addr.to_string()))
            .collect();
        assert_eq!(
            got,
            [
                (1, "10.0.0.2:9000".to_owned()),
                (4, "10.0.0.3:9000".to_owned())
            ]
        );
        assert!(out.iter().all(Endpoint::is_remote));
        // Seen again: the same slow-start origin and load; a key gone is dropped.
        let _ = out[0].load.acquire();
        let later = t0 + std::time::Duration::from_secs(3);
        let mut fewer = all.clone();
        fewer.remove(&("c".to_owned(), "web".to_owned(), 4));
        let again = remote(&fewer, "a", "web", &mut seen, later);
        assert_eq!(again.len(), 1);
        assert_eq!(again[0].ready_since, t0);
        assert!(Arc::ptr_eq(&again[0].load, &out[0].load));
        assert_eq!(seen.len(), 1);
    }

    #[test]
    fn a_rollout_or_a_leader_keeps_the_set_local() {
        let all = published(&[("b", "web", 1, "10.0.0.2:9000", true)]);
        let remote = || remote(&all, "a", "web", &mut Seen::new(), Instant::now());
        let local = Endpoints::default();
        assert_eq!(merged(&local, remote(), 7).ready.len(), 1);
        assert_eq!(merged(&local, remote(), 7).version, 7);
        let mixed = Endpoints {
            mixed: true,
            ..Endpoints::default()
        };
        assert!(merged(&mixed, remote(), 8).ready.is_empty());
    }
}
