//! Cluster mode's `prefer_local`, over real sockets with `demo` replicas on 127.0.0.1: with
//! another node's replica in the set (`bus::REMOTE_REPLICA` + its index), requests go to
//! this node's while one is healthy, to the other node's once this node's is ejected, and
//! to both with `prefer_local = false`.

mod common;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;

use bus::{Endpoint, Endpoints, Load, REMOTE_REPLICA};
use common::*;
use tokio::net::TcpListener;

async fn named(name: &str) -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let cfg = demo::Config {
        name: name.into(),
        ..demo::Config::new(addr)
    };
    tokio::spawn(demo::serve(l, cfg));
    addr
}

/// This node's replica 0 at `local`, another node's replica 1 at `remote`.
fn local_and_remote(local: SocketAddr, remote: SocketAddr) -> Arc<Endpoints> {
    let at = |replica, addr| Endpoint {
        replica,
        addr,
        revision: 1,
        ready_since: std::time::Instant::now(),
        load: Arc::new(Load::default()),
    };
    Arc::new(Endpoints {
        version: 2,
        ready: vec![at(0, local), at(REMOTE_REPLICA + 1, remote)],
        split: None,
        mixed: false,
        leader: None,
    })
}

/// Who answered `n` GETs, by the demo's name in the body.
async fn answers(p: &Proxy, n: usize) -> BTreeMap<String, usize> {
    let mut c = connect(p.addr).await;
    let mut by = BTreeMap::new();
    for _ in 0..n {
        let (status, _, body) = get(&mut c, "/").await;
        assert_eq!(status, 200, "{body}");
        let who = body
            .split_whitespace()
            .nth(2)
            .unwrap_or_default()
            .to_owned();
        *by.entry(who).or_default() += 1;
    }
    by
}

#[tokio::test]
async fn this_nodes_healthy_replica_first_the_other_nodes_when_it_is_not() {
    let (local, remote) = (named("local").await, named("remote").await);
    let p = start_to(local, DEADLINE, |_| {}).await;
    p.endpoints.send_replace(local_and_remote(local, remote));
    let by = answers(&p, 40).await;
    assert_eq!(by.get("local"), Some(&40), "{by:?}");
    // This node's replica is gone (nothing listens): its tries fail over to the other
    // node's, and once it is ejected every request goes there.
    let dead = TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap()
        .local_addr()
        .unwrap();
    p.endpoints.send_replace(local_and_remote(dead, remote));
    let by = answers(&p, 40).await;
    assert_eq!(by.get("remote"), Some(&40), "{by:?}");
}

#[tokio::test]
async fn without_prefer_local_every_nodes_replicas_take_requests() {
    let (local, remote) = (named("local").await, named("remote").await);
    let p = start_to(local, DEADLINE, |e| e.prefer_local = false).await;
    p.endpoints.send_replace(local_and_remote(local, remote));
    let by = answers(&p, 60).await;
    assert!(
        by.get("local") > Some(&5) && by.get("remote") > Some(&5),
        "{by:?}"
    );
}
