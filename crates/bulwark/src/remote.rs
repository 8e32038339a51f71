//! Cross-node proxying: each service's endpoints as the proxy sees them in cluster mode are
//! this node's ready replicas (the supervisor's snapshots, unchanged) plus the other nodes'
//! ready ones from the cluster watch (`endpoints/<node>/<service>/<index>`). Another node's
//! replica is [`bus::REMOTE_REPLICA`] + its cluster index; it leaves the set the moment its
//! key goes (its node's lease expired). Which of them a request goes to (this node's first,
//! `prefer_local`) is the proxy's choice. For a `[leader]` service each endpoint also says
//! whether it leads (its fencing token), and every node's proxy routes leader traffic to the
//! cluster's one leader, wherever it runs (`policy::leader::routed`).

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use bus::{Endpoint, Endpoints, LeaderRouting, Leading, Load};
use cluster::ClusterEndpoints;
use policy::leader::Claim;
use tokio::sync::watch;

/// Another node's replica as last seen: when it was first seen ready at this address (its
/// slow start), and its in-flight count (this node's requests only).
type Seen = HashMap<(String, u32, SocketAddr), (Instant, Arc<Load>)>;

/// The other nodes' endpoints of `service` as one proxy uses them.
#[derive(Debug, Default)]
pub struct Remote {
    /// The ready, reachable ones, in cluster index order.
    pub ready: Vec<Endpoint>,
    /// Every published leader's claim (a `[leader]` service), ready or not: an unready
    /// newer leader still outranks an older one (`policy::leader::routed`).
    pub claims: Vec<Claim>,
}

/// The other nodes' endpoints of `service` in `all`. An address on loopback or
/// unspecified is another machine's own: not reachable from here (its agent has no
/// `--advertise`), so left out (its leader claim too, as not ready).
pub fn remote(
    all: &ClusterEndpoints,
    me: &str,
    service: &str,
    seen: &mut Seen,
    now: Instant,
) -> Remote {
    let mut out = Remote::default();
    let mut kept = Seen::new();
    for ((node, s, index), e) in all {
        if node == me || s != service {
            continue;
        }
        let replica = bus::REMOTE_REPLICA.saturating_add(*index);
        let addr = e
            .address
            .as_deref()
            .and_then(|a| a.parse::<SocketAddr>().ok())
            .filter(|a| !a.ip().is_loopback() && !a.ip().is_unspecified());
        let usable = e.ready && addr.is_some();
        if let Some(token) = e.leader {
            out.claims.push(Claim {
                replica,
                token,
                ready: usable,
            });
        }
        let Some(addr) = addr.filter(|_| usable) else {
            continue;
        };
        let key = (node.clone(), *index, addr);
        let (since, load) = seen
            .remove(&key)
            .unwrap_or_else(|| (now, Arc::new(Load::default())));
        out.ready.push(Endpoint {
            replica,
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
/// rollout (a split) the set stays this node's: the other nodes' revisions are not
/// published. For a `[leader]` service every proxy routes leader traffic to the cluster's
/// leader wherever it runs: the claim `policy::leader::routed` picks among this node's
/// (its term, routable or not) and the other nodes' published ones.
pub fn merged(local: &Endpoints, remote: Remote, version: u64) -> Endpoints {
    let mut ready = local.ready.clone();
    let split = local.split.is_some() || local.mixed;
    let leader = local.leader.as_ref().map(|l| {
        let mine = l.held.map(|token| match l.current {
            Some(c) if c.token == token => Claim {
                replica: c.replica,
                token,
                ready: true,
            },
            _ => Claim {
                replica: u32::MAX,
                token,
                ready: false,
            },
        });
        let mut claims: Vec<Claim> = mine.into_iter().collect();
        if !split {
            claims.extend(remote.claims.iter().copied());
        }
        LeaderRouting {
            current: policy::leader::routed(&claims).map(|c| Leading {
                replica: c.replica,
                token: c.token,
            }),
            ..l.clone()
        }
    });
    if !split {
        ready.extend(remote.ready);
    }
    Endpoints {
        version,
        ready,
        split: local.split.clone(),
        mixed: local.mixed,
        leader,
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
            false => Remote::default(),
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
        let first = merged(&local.borrow(), Remote::default(), 1);
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
                    leader: None,
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
        let out = remote(&all, "a", "web", &mut seen, t0).ready;
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
        let again = remote(&fewer, "a", "web", &mut seen, later).ready;
        assert_eq!(again.len(), 1);
        assert_eq!(again[0].ready_since, t0);
        assert!(Arc::ptr_eq(&again[0].load, &out[0].load));
        assert_eq!(seen.len(), 1);
    }

    #[test]
    fn a_rollout_keeps_the_set_local() {
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

    /// Leader routing of `db` on node `a` (which runs replica 0, local index 0), given
    /// what the nodes publish and this node's term.
    fn leader_on_a(all: &ClusterEndpoints, current: Option<u64>, held: Option<u64>) -> Endpoints {
        let local = Endpoints {
            leader: Some(LeaderRouting {
                route: spec::LeaderRoute::Leader,
                current: current.map(|token| Leading { replica: 0, token }),
                held,
            }),
            ..Endpoints::default()
        };
        let r = remote(all, "a", "db", &mut Seen::new(), Instant::now());
        merged(&local, r, 2)
    }

    #[test]
    fn every_proxy_routes_leader_traffic_to_the_clusters_leader_wherever_it_runs() {
        let mut all = published(&[
            ("b", "db", 1, "10.0.0.2:5432", true),
            ("c", "db", 2, "10.0.0.3:5432", true),
        ]);
        let key = |n: &str, i| (n.to_owned(), "db".to_owned(), i);
        all.get_mut(&key("b", 1)).unwrap().leader = Some(40);
        // A standby on `a`: b's leader is routed to, among all the replicas.
        let e = leader_on_a(&all, None, None);
        assert_eq!(e.ready.len(), 2);
        let b1 = bus::REMOTE_REPLICA + 1;
        let routed = e.leader.as_ref().unwrap().current;
        assert_eq!(
            routed,
            Some(Leading {
                replica: b1,
                token: 40
            })
        );
        assert_eq!(e.leader_only()[0].addr.to_string(), "10.0.0.2:5432");
        // `a` leads with a greater token while b's old claim is still published: a's.
        let e = leader_on_a(&all, Some(57), Some(57));
        assert_eq!(
            e.leader.unwrap().current,
            Some(Leading {
                replica: 0,
                token: 57
            })
        );
        // a's leader holds the term but is not ready: nobody, never b's older claim.
        let e = leader_on_a(&all, None, Some(57));
        assert_eq!(e.leader.unwrap().current, None);
        // c leads with a greater token, not ready yet: nobody; ready: c.
        all.get_mut(&key("c", 2)).unwrap().leader = Some(61);
        all.get_mut(&key("c", 2)).unwrap().ready = false;
        assert_eq!(leader_on_a(&all, None, None).leader.unwrap().current, None);
        all.get_mut(&key("c", 2)).unwrap().ready = true;
        let routed = leader_on_a(&all, None, None).leader.unwrap().current;
        assert_eq!(routed.map(|l| l.token), Some(61));
    }
}
