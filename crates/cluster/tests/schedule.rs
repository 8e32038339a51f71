//! The scheduler's etcd side against a real etcd 3.4 (one member on loopback, free ports,
//! its data in a temporary directory, killed at the end even on failure): one holder of the
//! scheduler key, writes fenced by its token, a large placement in several transactions,
//! endpoints that vanish with their lease (from etcd and from the cluster watch); records
//! that do not parse left out of the cluster watch.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use cluster::schedule::{self, Campaign, Endpoint, NodeEndpoints};
use cluster::{Keys, Placements};

/// One etcd member, killed on drop.
struct Etcd {
    child: Child,
    url: String,
    _dir: tempfile::TempDir,
}

impl Drop for Etcd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn etcd() -> Etcd {
    let dir = tempfile::tempdir().unwrap();
    let (client, peer) = (free_port(), free_port());
    let url = format!("http://127.0.0.1:{client}");
    let peer_url = format!("http://127.0.0.1:{peer}");
    let child = Command::new("etcd")
        .args(["--name", "m0", "--data-dir"])
        .arg(dir.path().join("data"))
        .args([
            "--listen-client-urls",
            &url,
            "--advertise-client-urls",
            &url,
        ])
        .args(["--listen-peer-urls", &peer_url])
        .args(["--initial-advertise-peer-urls", &peer_url])
        .args(["--initial-cluster", &format!("m0={peer_url}")])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("etcd 3.4 is installed (Debian: etcd-server; scripts/test installs it)");
    Etcd {
        child,
        url,
        _dir: dir,
    }
}

async fn connect(e: &Etcd) -> cluster::Etcd {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        match cluster::connect(std::slice::from_ref(&e.url), Duration::from_secs(2)).await {
            Ok(c) => return c,
            Err(err) if tokio::time::Instant::now() > deadline => panic!("etcd: {err}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

async fn lease(etcd: &cluster::Etcd, ttl: i64) -> i64 {
    etcd.client().lease_grant(ttl, None).await.unwrap().id()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_scheduler_fenced_writes_chunked_placements_and_endpoints_under_a_lease() {
    let e = etcd();
    let etcd = connect(&e).await;
    let keys = Keys::new("t").unwrap();
    let (a, b) = (lease(&etcd, 30).await, lease(&etcd, 30).await);

    // One holder; the holder campaigning again keeps its token.
    let Campaign::Won { token } = schedule::campaign(&etcd, &keys, "a", a).await.unwrap() else {
        panic!("the first campaign wins");
    };
    let again = schedule::campaign(&etcd, &keys, "a", a).await.unwrap();
    assert_eq!(again, Campaign::Won { token });
    let other = schedule::campaign(&etcd, &keys, "b", b).await.unwrap();
    assert_eq!(other, Campaign::Held { by: "a".into() });

    // 300 placements: more than one transaction holds, all written.
    let new: Placements = (0..300)
        .map(|i| (("web".to_owned(), i), format!("n{}", i % 3)))
        .collect();
    let written = schedule::write_placements(&etcd, &keys, token, &Placements::new(), &new)
        .await
        .unwrap();
    assert!(written.is_some());
    let (read, holder) = schedule::placements(&etcd, &keys).await.unwrap();
    assert_eq!(read, new);
    assert_eq!(holder.as_deref(), Some("a"));

    // The holder's lease ends: its token writes nothing, the other wins a new token.
    etcd.client().lease_revoke(a).await.unwrap();
    let moved: Placements = new.keys().map(|k| (k.clone(), "n0".to_owned())).collect();
    let stale = schedule::write_placements(&etcd, &keys, token, &new, &moved)
        .await
        .unwrap();
    assert_eq!(stale, None, "a write with an old token");
    assert_eq!(schedule::placements(&etcd, &keys).await.unwrap().0, new);
    let Campaign::Won { token: next } = schedule::campaign(&etcd, &keys, "b", b).await.unwrap()
    else {
        panic!("the key is free");
    };
    assert!(next > token);

    // Endpoints: written under a lease, changed and removed, gone with the lease.
    let at = |port: u16, ready| Endpoint {
        address: Some(format!("127.0.0.1:{port}")),
        ready,
        leader: None,
    };
    let first = NodeEndpoints::from([
        (("web".to_owned(), 0), at(9000, false)),
        (("web".to_owned(), 3), at(9001, true)),
    ]);
    let empty = NodeEndpoints::new();
    // What every agent's proxies follow.
    let watch = cluster::ClusterWatch::start(&etcd, &keys).await.unwrap();
    let followed = watch.endpoints();
    schedule::publish_endpoints(&etcd, &keys, "n0", b, &empty, &first)
        .await
        .unwrap();
    // A leader's endpoint carries its token.
    let leads = Endpoint {
        leader: Some(57),
        ..at(9000, true)
    };
    let second = NodeEndpoints::from([(("web".to_owned(), 0), leads.clone())]);
    schedule::publish_endpoints(&etcd, &keys, "n0", b, &first, &second)
        .await
        .unwrap();
    let all = schedule::endpoints(&etcd, &keys).await.unwrap();
    let listed: Vec<_> = all
        .iter()
        .map(|((n, s, i), e)| (n.as_str(), s.as_str(), *i, e.ready))
        .collect();
    assert_eq!(listed, [("n0", "web", 0, true)]);
    assert_eq!(all[&("n0".to_owned(), "web".to_owned(), 0)], leads);
    let seen = |want: cluster::ClusterEndpoints| {
        let mut followed = followed.clone();
        async move {
            let wait = followed.wait_for(|e| **e == want);
            tokio::time::timeout(Duration::from_secs(10), wait)
                .await
                .is_ok()
        }
    };
    assert!(seen(all.clone()).await, "the watch shows what etcd holds");
    etcd.client().lease_revoke(b).await.unwrap();
    assert!(schedule::endpoints(&etcd, &keys).await.unwrap().is_empty());
    // Gone from the watch with the lease.
    assert!(seen(cluster::ClusterEndpoints::new()).await);
    assert_eq!(schedule::placements(&etcd, &keys).await.unwrap().1, None);
}

/// A record that does not parse (written by hand, or by another version) is left out of
/// the cluster's view with a warning, by the first read as by the watch: one bad key never
/// keeps the whole cluster unread (a read that failed on it kept the cluster watch cut
/// off for good).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_that_does_not_parse_is_left_out_of_the_cluster_watch() {
    let e = etcd();
    let etcd = connect(&e).await;
    let keys = Keys::new("t").unwrap();
    let mut client = etcd.client();
    for key in [keys.member("bad"), keys.node("bad"), keys.stack()] {
        client.put(key, "not json", None).await.unwrap();
    }
    let watch = cluster::ClusterWatch::start(&etcd, &keys)
        .await
        .expect("the cluster reads with a bad record in it");
    let mut state = watch.state();
    assert!(state.borrow().connected);
    assert_eq!(state.borrow().stack_revision, None);
    assert_eq!(state.borrow().alive().count(), 0);
    // A good record, written next, shows; the bad one never does.
    let record = cluster::NodeRecord {
        name: "n1".to_owned(),
        labels: Default::default(),
        api: "127.0.0.1:7700".to_owned(),
        version: "0.1.0".to_owned(),
        started_at_ms: 0,
        capacity: None,
    };
    let json = serde_json::to_string(&record).unwrap();
    client.put(keys.node("n1"), json, None).await.unwrap();
    let seen = state.wait_for(|s| s.alive().any(|n| n == "n1"));
    let seen = tokio::time::timeout(Duration::from_secs(10), seen).await;
    let seen = seen.expect("n1 alive within 10 s").unwrap();
    let names: Vec<&str> = seen.alive().collect();
    assert_eq!(names, ["n1"]);
}
