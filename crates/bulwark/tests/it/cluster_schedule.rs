//! Cluster mode, the scheduler (issue 16): three agents place the quickstart's 6 replicas
//! 2/2/2 (by etcd's keys and by the processes each agent runs); a kill -9 of an agent puts
//! its replicas on the survivors, measured from the kill to all 6 ready; a node that joins
//! again moves nothing; a killed scheduler is replaced by another agent; etcd's writes at
//! rest and for a node loss, measured.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::cluster_harness::{Cluster, TTL};
use crate::harness::{alive, eventually, output_text, signal};

/// The quickstart with 6 replicas.
pub fn quickstart6() -> String {
    let quickstart = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../examples/quickstart.toml"
    ))
    .unwrap();
    assert!(quickstart.contains("\nreplicas = 3\n"));
    quickstart.replacen("\nreplicas = 3\n", "\nreplicas = 6\n", 1)
}

/// Three agents, all alive, then the quickstart with 6 replicas applied.
pub fn three_agents_and_the_quickstart() -> Cluster {
    let c = Cluster::with_agents(3);
    eventually("3 alive nodes", Duration::from_secs(15), || {
        (c.nodes(0).iter().filter(|n| n["state"] == "alive").count() == 3).then_some(())
    });
    let file = c.dir.path().join("stack.toml");
    std::fs::write(&file, quickstart6()).unwrap();
    let path = file.display().to_string();
    let out = c.bulwark(0, &["apply", "-f", &path, "--etcd", &c.etcd.urls]);
    assert!(out.status.success(), "{}", output_text(&out));
    c
}

/// `placements/<service>/<index>` -> node, as etcd holds them.
pub fn placements(c: &Cluster) -> BTreeMap<String, String> {
    let prefix = "/bulwark/default/placements/";
    let out = c.hosts.run(
        0,
        "etcdctl",
        &["--endpoints", &c.etcd.urls, "get", "--prefix", prefix],
    );
    assert!(out.status.success(), "etcdctl: {}", output_text(&out));
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let lines: Vec<&str> = text.lines().collect();
    lines
        .chunks(2)
        .filter_map(|kv| match kv {
            [k, v] => Some((k.trim_start_matches(prefix).to_owned(), (*v).to_owned())),
            _ => None,
        })
        .collect()
}

/// Replicas per node in `placements`.
fn per_node(placements: &BTreeMap<String, String>) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    for node in placements.values() {
        *out.entry(node.clone()).or_default() += 1;
    }
    out
}

/// Agent `i`'s `web` as `status --json` shows it (Null while it does not answer).
pub fn web(c: &Cluster, i: usize) -> Value {
    let out = c.bulwark(i, &["--state-dir", &c.state_dir(i), "status", "--json"]);
    let v: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    v["services"][0].clone()
}

/// Agent `i`'s ready replicas whose process is alive.
pub fn running(c: &Cluster, i: usize) -> usize {
    let web = web(c, i);
    web["replicas"]
        .as_array()
        .map(|rs| {
            rs.iter()
                .filter(|r| r["ready"] == true)
                .filter(|r| r["pid"].as_u64().is_some_and(|p| alive(p as u32)))
                .count()
        })
        .unwrap_or(0)
}

/// Which node `bulwark nodes` names as the scheduler.
pub fn scheduler(c: &Cluster, i: usize) -> Option<String> {
    c.nodes(i)
        .into_iter()
        .find(|n| n["scheduler"] == true)
        .map(|n| n["name"].as_str().unwrap().to_owned())
}

/// 2/2/2 by etcd's keys, by each agent's running ready replicas and by the endpoints each
/// publishes as ready.
pub fn spread_two_each(c: &Cluster) -> BTreeMap<String, String> {
    let placed = eventually("6 replicas placed 2/2/2", Duration::from_secs(30), || {
        let p = placements(c);
        let counts: Vec<usize> = per_node(&p).into_values().collect();
        (p.len() == 6 && counts == [2, 2, 2]).then_some(p)
    });
    for i in 0..3 {
        eventually(
            &format!("2 ready replicas running on h{i}"),
            Duration::from_secs(30),
            || (running(c, i) == 2).then_some(()),
        );
    }
    let nodes = c.ready_per_node(2, "2 ready endpoints per node", Duration::from_secs(10));
    for n in &nodes {
        assert_eq!(n["replicas"].as_array().unwrap().len(), 2, "{n}");
    }
    placed
}

#[test]
fn six_replicas_spread_2_2_2_and_a_killed_agents_run_on_the_survivors_within_10s() {
    let mut c = three_agents_and_the_quickstart();
    let before = spread_two_each(&c);
    let table = output_text(&c.bulwark(0, &["nodes", "--etcd", &c.etcd.urls]));
    assert!(
        table.contains("REPLICAS") && table.contains("(2 ready)"),
        "{table}"
    );
    // Kill an agent that does not schedule (its replicas die with it: PDEATHSIG).
    let boss = scheduler(&c, 0).expect("a scheduler");
    let victim = (0..3).rev().find(|i| format!("h{i}") != boss).unwrap();
    let name = format!("h{victim}");
    let pids: Vec<u64> = web(&c, victim)["replicas"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|r| r["pid"].as_u64())
        .collect();
    signal(c.agents[victim].unwrap(), 9);
    let killed = Instant::now();
    let survivors: Vec<usize> = (0..3).filter(|&i| i != victim).collect();
    eventually(
        "6 ready replicas on the survivors",
        Duration::from_secs(30),
        || (survivors.iter().map(|&i| running(&c, i)).sum::<usize>() == 6).then_some(()),
    );
    let failover = killed.elapsed();
    eprintln!("kill -9 of agent {name} -> its replicas ready on the survivors in {failover:?}");
    let after = placements(&c);
    assert_eq!(after.len(), 6);
    assert!(after.values().all(|n| *n != name), "{after:?}");
    for (replica, node) in &before {
        if *node != name {
            assert_eq!(
                after[replica], *node,
                "{replica} moved though its node lives"
            );
        }
    }
    for p in pids {
        assert!(!alive(p as u32), "replica {p} outlived its agent");
    }
    assert!(
        failover < Duration::from_secs(10),
        "replicas ready again {failover:?} after the kill"
    );
    // The scheduler said what moved.
    let i = boss[1..].parse::<usize>().unwrap();
    let moved: Vec<Value> = c
        .events(i)
        .into_iter()
        .filter(|e| e["type"] == "placement_changed")
        .collect();
    let last = moved.last().expect("a placement_changed event");
    assert_eq!(last["moves"].as_array().unwrap().len(), 2, "{last}");
    assert!(
        last["moves"][0].as_str().unwrap().contains("node lost"),
        "{last}"
    );
    // Its endpoints went with its lease.
    let gone = c.nodes(0).into_iter().find(|n| n["name"] == name.as_str());
    assert_eq!(gone.map(|n| n["ready"].clone()), Some(Value::Array(vec![])));

    // The node comes back: it joins, and nothing moves to it.
    c.start_agent(victim);
    eventually(&format!("{name} alive again"), TTL * 3, || {
        (c.state_of(0, &name).as_deref() == Some("alive")).then_some(())
    });
    // The scheduler saw the join (on the watch it decides from); then a few seconds in
    // which nothing may move.
    eventually(
        "the scheduler saw the join",
        Duration::from_secs(10),
        || (c.count(i, "node_joined", &name) == 2).then_some(()),
    );
    let until = Instant::now() + Duration::from_secs(3);
    while Instant::now() < until {
        assert_eq!(placements(&c), after, "a rejoining node moved replicas");
        std::thread::sleep(Duration::from_millis(500));
    }
    assert_eq!(running(&c, victim), 0);
    let changes = c
        .events(i)
        .iter()
        .filter(|e| e["type"] == "placement_changed")
        .count();
    assert_eq!(changes, moved.len(), "a placement change after the rejoin");
}

#[test]
fn a_killed_scheduler_is_replaced_and_its_replicas_rescheduled() {
    let c = three_agents_and_the_quickstart();
    spread_two_each(&c);
    let boss = scheduler(&c, 0).expect("a scheduler");
    let i = boss[1..].parse::<usize>().unwrap();
    assert!(
        c.events(i).iter().any(|e| e["type"] == "scheduler_elected"),
        "no scheduler_elected event on {boss}"
    );
    signal(c.agents[i].unwrap(), 9);
    let killed = Instant::now();
    let other = (0..3).find(|&j| j != i).unwrap();
    let next = eventually("another scheduler", TTL + Duration::from_secs(15), || {
        scheduler(&c, other).filter(|n| *n != boss)
    });
    let takeover = killed.elapsed();
    let j = next[1..].parse::<usize>().unwrap();
    assert!(
        c.events(j).iter().any(|e| e["type"] == "scheduler_elected"),
        "no scheduler_elected event on {next}"
    );
    // The new scheduler placed the old one's replicas.
    let survivors: Vec<usize> = (0..3).filter(|&k| k != i).collect();
    eventually(
        "6 ready replicas on the survivors",
        Duration::from_secs(30),
        || (survivors.iter().map(|&k| running(&c, k)).sum::<usize>() == 6).then_some(()),
    );
    let failover = killed.elapsed();
    eprintln!(
        "kill -9 of the scheduler {boss} -> {next} schedules after {takeover:?}, \
         replicas ready after {failover:?}"
    );
    let p = placements(&c);
    assert!(p.len() == 6 && p.values().all(|n| *n != boss), "{p:?}");
}

/// Ready endpoints over every node, as agent 0's `nodes` shows them.
fn ready_endpoints(c: &Cluster) -> usize {
    c.nodes(0)
        .iter()
        .filter_map(|n| n["ready"].as_array().map(Vec::len))
        .sum()
}

/// etcd's writes (raft entries, from the members' `/metrics`) at rest and for a node loss
/// with its failover, against the model in ARCHITECTURE.md, "Cluster": none at rest (lease
/// keepalives are not raft entries); a loss costs the lease's revoke, the scheduler's
/// placement transaction and the moved replicas' endpoints as they start and get ready.
#[test]
fn etcd_takes_no_write_at_rest_and_a_handful_for_a_node_loss_and_its_failover() {
    let c = three_agents_and_the_quickstart();
    spread_two_each(&c);
    let writes = || c.etcd.raft_writes(&c.hosts);
    let start = writes();
    std::thread::sleep(Duration::from_secs(10));
    let at_rest = writes() - start;

    let boss = scheduler(&c, 0).expect("a scheduler");
    let victim = (0..3).rev().find(|i| format!("h{i}") != boss).unwrap();
    let (before, messages) = (writes(), c.etcd.messages_received(&c.hosts));
    signal(c.agents[victim].unwrap(), 9);
    let killed = Instant::now();
    let survivors: Vec<usize> = (0..3).filter(|&i| i != victim).collect();
    eventually(
        "6 ready replicas on the survivors, published",
        Duration::from_secs(30),
        || {
            let running: usize = survivors.iter().map(|&i| running(&c, i)).sum();
            (running == 6 && ready_endpoints(&c) == 6).then_some(())
        },
    );
    let took = killed.elapsed();
    let churn = writes() - before;
    let per_agent = (c.etcd.messages_received(&c.hosts) - messages) / 2.0 / took.as_secs_f64();
    eprintln!(
        "etcd writes: {at_rest} in 10 s at rest; {churn} for the loss of a node with 2 \
         replicas and their failover ({took:?}); {per_agent:.2} client messages/s per \
         surviving agent meanwhile"
    );
    assert_eq!(at_rest, 0.0, "raft writes at rest");
    assert!(
        (1.0..=16.0).contains(&churn),
        "{churn} raft writes for one node loss"
    );
}
