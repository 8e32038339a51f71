//! Cluster mode under etcd faults (issue 16, acceptance 4), with the quickstart's 6
//! replicas placed 2/2/2 and its `[expose]` listener on every host: one etcd member killed
//! (the leader) changes nothing for the services; quorum lost (two members stopped for
//! three TTLs) fails static — every listener keeps answering, no replica stops or restarts,
//! no placement changes — and the cluster converges when quorum returns; a `[leader]`
//! service stops leading during the outage and is led again, with a greater token, after.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::cluster_harness::{Cluster, TTL};
use crate::cluster_leader::{db, leaders, one_leader};
use crate::cluster_schedule::{placements, spread_two_each, three_agents_and_the_quickstart, web};
use crate::harness::{alive, eventually, output_text, signal};

const SIGCONT: i32 = 18;
const SIGSTOP: i32 = 19;

/// The pids of agent `i`'s replicas, sorted.
fn pids(c: &Cluster, i: usize) -> Vec<u64> {
    let mut pids: Vec<u64> = web(c, i)["replicas"]
        .as_array()
        .map(|rs| rs.iter().filter_map(|r| r["pid"].as_u64()).collect())
        .unwrap_or_default();
    pids.sort_unstable();
    pids
}

/// Whether host `i`'s `[expose]` listener answers `GET /` with 200.
fn serves(c: &Cluster, i: usize) -> bool {
    let out = c.hosts.run(
        i,
        "curl",
        &[
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "--max-time",
            "2",
            "http://127.0.0.1:8080/",
        ],
    );
    String::from_utf8_lossy(&out.stdout) == "200"
}

/// The quickstart placed 2/2/2, every listener answering: the placement and each host's
/// replica pids.
fn settled(c: &Cluster) -> (BTreeMap<String, String>, Vec<Vec<u64>>) {
    let placed = spread_two_each(c);
    for i in 0..3 {
        eventually(
            &format!("h{i}'s listener answers 200"),
            Duration::from_secs(15),
            || serves(c, i).then_some(()),
        );
    }
    let pids: Vec<Vec<u64>> = (0..3).map(|i| pids(c, i)).collect();
    assert!(pids.iter().all(|p| p.len() == 2), "{pids:?}");
    (placed, pids)
}

/// For `span`: every host's listener answers 200 and runs the same replica processes.
fn steady(c: &Cluster, before: &[Vec<u64>], span: Duration) {
    let until = Instant::now() + span;
    while Instant::now() < until {
        for (i, pids) in before.iter().enumerate() {
            assert!(serves(c, i), "h{i}'s listener stopped answering 200");
            let now = self::pids(c, i);
            assert_eq!(&now, pids, "h{i}'s replicas were stopped or restarted");
            assert!(
                pids.iter().all(|&p| alive(p as u32)),
                "a replica of h{i} died"
            );
        }
        std::thread::sleep(Duration::from_millis(300));
    }
}

/// Which host's etcd member leads (by `etcdctl endpoint status`).
fn etcd_leader(c: &Cluster) -> usize {
    let out = c.hosts.run(
        0,
        "etcdctl",
        &[
            "--endpoints",
            &c.etcd.urls,
            "endpoint",
            "status",
            "-w",
            "json",
        ],
    );
    assert!(out.status.success(), "etcdctl: {}", output_text(&out));
    let status: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
    let ours = |s: &Value| s["Status"]["header"]["member_id"] == s["Status"]["leader"];
    let leader = status.iter().find(|s| ours(s)).expect("an etcd leader");
    let url = leader["Endpoint"].as_str().unwrap();
    c.etcd.urls.split(',').position(|u| u == url).unwrap()
}

/// Whether agent `i` follows the cluster: the last thing its log says of the cluster watch
/// is not that it is cut off (what an operator reads; a cut-off agent starts nothing and,
/// as the scheduler, decides nothing).
fn follows(c: &Cluster, i: usize) -> bool {
    let log = c.dir.path().join(format!("agent{i}.log"));
    let log = std::fs::read_to_string(log).unwrap_or_default();
    let cut = log.rfind("cannot follow the cluster: keeping what runs");
    let back = log.rfind("following the cluster again");
    cut.is_none_or(|cut| back.is_some_and(|back| back > cut))
}

/// How many `kind` events agent `i` emitted.
fn count(c: &Cluster, i: usize, kind: &str) -> usize {
    c.events(i).iter().filter(|e| e["type"] == kind).count()
}

#[test]
fn one_etcd_member_killed_changes_nothing_for_the_services() {
    let c = three_agents_and_the_quickstart();
    let (placed, pids) = settled(&c);
    let leader = etcd_leader(&c);
    signal(c.etcd.pids[leader], 9);
    // Two leases' worth: a leader election, and every agent keeps its lease through the
    // other members.
    steady(&c, &pids, 2 * TTL);
    assert_eq!(placements(&c), placed, "a placement changed");
    for i in 0..3 {
        assert_eq!(count(&c, i, "node_lost"), 0, "agent h{i} saw a node lost");
    }
}

/// After an outage: all three nodes alive again with their endpoints, the same placement,
/// the same replica processes, no `placement_changed` beyond `changes`; the `node_lost`
/// events each agent saw.
fn converges(
    c: &Cluster,
    placed: &BTreeMap<String, String>,
    pids: &[Vec<u64>],
    changes: &[usize],
) -> Vec<usize> {
    let back = Instant::now();
    eventually("3 alive nodes again", Duration::from_secs(30), || {
        let alive = (0..3)
            .filter(|i| c.state_or_none(0, &format!("h{i}")).as_deref() == Some("alive"))
            .count();
        (alive == 3).then_some(())
    });
    // A watch that came back after a failed read once left its agent cut off for good.
    eventually(
        "every agent follows the cluster again",
        Duration::from_secs(20),
        || (0..3).all(|i| follows(c, i)).then_some(()),
    );
    let nodes = c.ready_per_node(
        2,
        "2 ready endpoints per node again",
        Duration::from_secs(20),
    );
    eprintln!(
        "quorum back -> 3 alive nodes with their endpoints in {:?}",
        back.elapsed()
    );
    assert_eq!(nodes.len(), 3, "{nodes:?}");
    // Nothing moved, and nothing moves once the cluster sees everyone again (the
    // scheduler's settling window included).
    steady(c, pids, 2 * TTL);
    assert_eq!(&placements(c), placed, "a placement changed");
    let after: Vec<usize> = (0..3).map(|i| count(c, i, "placement_changed")).collect();
    assert_eq!(after, changes, "placement_changed events after the outage");
    let lost: Vec<usize> = (0..3).map(|i| count(c, i, "node_lost")).collect();
    eprintln!("node_lost events seen by h0..h2 over the outage: {lost:?}");
    lost
}

#[test]
fn quorum_lost_fails_static_and_the_cluster_converges_when_it_returns() {
    let c = three_agents_and_the_quickstart();
    let (placed, pids) = settled(&c);
    let changes: Vec<usize> = (0..3).map(|i| count(&c, i, "placement_changed")).collect();
    // The leader and one more member stop: the last one has no quorum. The leader, woken,
    // still leads, and revokes every lease it did not see kept: all nodes are lost at once.
    let leader = etcd_leader(&c);
    let stopped = [leader, (leader + 1) % 3];
    for &m in &stopped {
        signal(c.etcd.pids[m], SIGSTOP);
    }
    // Three TTLs: every agent gives its lease up as unanswered.
    steady(&c, &pids, 3 * TTL);
    for &m in &stopped {
        signal(c.etcd.pids[m], SIGCONT);
    }
    converges(&c, &placed, &pids, &changes);
}

#[test]
fn quorum_lost_by_two_kills_keeps_every_lease_when_the_members_restart() {
    let mut c = three_agents_and_the_quickstart();
    let (placed, pids) = settled(&c);
    let changes: Vec<usize> = (0..3).map(|i| count(&c, i, "placement_changed")).collect();
    let leader = etcd_leader(&c);
    let killed = [leader, (leader + 1) % 3];
    for &m in &killed {
        signal(c.etcd.pids[m], 9);
    }
    steady(&c, &pids, 3 * TTL);
    for &m in &killed {
        c.etcd.restart(&c.hosts, m, c.dir.path());
    }
    // A new etcd leader extends every lease: the agents keep theirs (not revoke them to
    // register again), so no node is ever lost.
    let lost = converges(&c, &placed, &pids, &changes);
    assert_eq!(
        lost,
        [0, 0, 0],
        "node_lost events though every lease survived"
    );
}

#[test]
fn a_leader_steps_down_without_quorum_and_one_leads_again_with_a_greater_token_after() {
    let mut c = crate::cluster_leader::cluster();
    let all = [0, 1, 2];
    let (_, token) = one_leader(&c, &all, 0, Duration::from_secs(30));
    let pid = |c: &Cluster, i: usize| db(c, i).map(|s| s["replicas"][0]["pid"].clone());
    let pids: Vec<_> = all.iter().map(|&i| pid(&c, i)).collect();
    let leader = etcd_leader(&c);
    let killed = [leader, (leader + 1) % 3];
    for &m in &killed {
        signal(c.etcd.pids[m], 9);
    }
    // The leader stops at its fence (half a TTL after its last answered keepalive).
    eventually("no leader without quorum", TTL, || {
        leaders(&c, &all).is_empty().then_some(())
    });
    let until = Instant::now() + 2 * TTL;
    while Instant::now() < until {
        assert!(leaders(&c, &all).is_empty(), "a leader without quorum");
        std::thread::sleep(Duration::from_millis(300));
    }
    for &m in &killed {
        c.etcd.restart(&c.hosts, m, c.dir.path());
    }
    let back = Instant::now();
    // Every lease outlived the outage (kept): the old term is resigned, not left to block
    // the next campaign forever.
    let (_, again) = one_leader(&c, &all, token, Duration::from_secs(30));
    eprintln!("quorum back -> a leader again in {:?}", back.elapsed());
    assert!(again > token, "token {again} after {token}");
    let after: Vec<_> = all.iter().map(|&i| pid(&c, i)).collect();
    assert_eq!(after, pids, "a db replica was restarted");
}
