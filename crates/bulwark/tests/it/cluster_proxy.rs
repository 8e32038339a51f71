//! Cluster mode, cross-node proxying (issue 16): three agents with `--advertise`, the
//! quickstart with 6 replicas listening on every address, `prefer_local = false`; load at
//! 200 req/s open-loop through host 0's listener reaches the replicas of all three hosts;
//! kill -9 of host 2's agent costs at most the requests in flight at the kill, none once
//! its lease expired, and all 6 replicas are ready on the survivors within 10 s.

use std::collections::BTreeMap;
use std::io::Read;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::cluster_harness::{Cluster, TTL};
use crate::harness::{BULWARK, eventually, output_text, signal};

/// Another node's replica `i` in the proxy's labels (`bus::REMOTE_REPLICA + i`).
const REMOTE_REPLICA: u64 = 1 << 24;

/// The quickstart with 6 replicas on every address of their host, balanced over all nodes.
fn stack() -> String {
    let quickstart = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../examples/quickstart.toml"
    ))
    .unwrap();
    let run = "\"--port\", \"{port}\"]";
    let listen = "listen = \"127.0.0.1:8080\"\n";
    for s in ["\nreplicas = 3\n", run, listen] {
        assert!(quickstart.contains(s), "{s}");
    }
    quickstart
        .replacen("\nreplicas = 3\n", "\nreplicas = 6\n", 1)
        .replacen(run, "\"--port\", \"{port}\", \"--host\", \"0.0.0.0\"]", 1)
        .replacen(listen, &format!("{listen}prefer_local = false\n"), 1)
}

/// `bulwark load` run inside host 0, killed if the test fails.
struct HostLoad(Child);

impl HostLoad {
    fn finish(mut self) -> Value {
        let mut out = String::new();
        let mut stdout = self.0.stdout.take().unwrap();
        stdout.read_to_string(&mut out).unwrap();
        assert!(self.0.wait().unwrap().success(), "bulwark load: {out}");
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("bad load report {out:?}: {e}"))
    }
}

impl Drop for HostLoad {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Each alive node's ready endpoints (`web/3`...), as `bulwark nodes` shows them.
fn ready(c: &Cluster) -> BTreeMap<String, Vec<String>> {
    c.nodes(0)
        .iter()
        .filter(|n| n["state"] == "alive")
        .map(|n| {
            let ready = n["ready"].as_array().unwrap();
            let ready = ready.iter().map(|r| r.as_str().unwrap().to_owned());
            (n["name"].as_str().unwrap().to_owned(), ready.collect())
        })
        .collect()
}

/// Tries host 0's proxy sent to each replica label (local index, or REMOTE_REPLICA + the
/// cluster index), from its /metrics.
fn tries(c: &Cluster) -> BTreeMap<u64, u64> {
    let out = c
        .hosts
        .run(0, "curl", &["-sf", "http://127.0.0.1:7700/metrics"]);
    assert!(out.status.success(), "metrics: {}", output_text(&out));
    let mut by = BTreeMap::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Some(rest) = line.strip_prefix("bulwark_proxy_replica_requests_total{") else {
            continue;
        };
        let replica = rest
            .split("replica=\"")
            .nth(1)
            .and_then(|r| r.split('"').next())
            .and_then(|r| r.parse::<u64>().ok());
        let n = line.rsplit(' ').next().and_then(|n| n.parse::<f64>().ok());
        if let (Some(r), Some(n)) = (replica, n) {
            *by.entry(r).or_default() += n as u64;
        }
    }
    by
}

/// Three agents with `--advertise`, the stack applied, 2 ready endpoints on each node
/// (returned: each node's).
fn three_advertising_agents() -> (Cluster, BTreeMap<String, Vec<String>>) {
    let mut c = Cluster::new(3);
    c.advertise = true;
    for i in 0..3 {
        c.start_agent(i);
    }
    eventually("3 alive nodes", Duration::from_secs(15), || {
        (ready(&c).len() == 3).then_some(())
    });
    let file = c.dir.path().join("stack.toml");
    std::fs::write(&file, stack()).unwrap();
    let path = file.display().to_string();
    let out = c.bulwark(0, &["apply", "-f", &path, "--etcd", &c.etcd.urls]);
    assert!(out.status.success(), "{}", output_text(&out));
    let before = eventually(
        "2 ready endpoints on each node",
        Duration::from_secs(40),
        || {
            let r = ready(&c);
            (r.len() == 3 && r.values().all(|v| v.len() == 2)).then_some(r)
        },
    );
    // The published addresses are the hosts'.
    let prefix = "/bulwark/default/endpoints/h1/";
    let args = ["--endpoints", &c.etcd.urls, "get", "--prefix", prefix];
    let text = output_text(&c.hosts.run(0, "etcdctl", &args));
    assert!(text.contains(&format!("\"{}:", c.hosts.addr(1))), "{text}");
    (c, before)
}

/// Host 0's proxy sends requests to its own replicas and to both other hosts', about a
/// third each.
fn spread_over_all_hosts(c: &Cluster, before: &BTreeMap<String, Vec<String>>) {
    let node_of = |label: u64| -> String {
        if label < REMOTE_REPLICA {
            return "h0".to_owned();
        }
        let name = format!("web/{}", label - REMOTE_REPLICA);
        before
            .iter()
            .find(|(_, r)| r.contains(&name))
            .map_or_else(|| format!("? {name}"), |(n, _)| n.clone())
    };
    let spread = eventually(
        "requests on every host's replicas",
        Duration::from_secs(10),
        || {
            let mut per_node: BTreeMap<String, u64> = BTreeMap::new();
            for (label, n) in tries(c) {
                *per_node.entry(node_of(label)).or_default() += n;
            }
            let all = ["h0", "h1", "h2"]
                .iter()
                .all(|h| per_node.get(*h) > Some(&20));
            all.then_some(per_node)
        },
    );
    eprintln!("tries by node through h0's proxy: {spread:?}");
    let total: u64 = spread.values().sum();
    for (node, n) in &spread {
        // p2c over 6 equal replicas: a third each, within a wide margin.
        assert!(*n * 6 > total, "{node} got {n} of {total}: {spread:?}");
    }
}

/// The load's report: at most the requests in flight at the kill failed, none once the
/// killed node's lease expired.
fn only_in_flight_requests_failed(report: &Value, kill_s: u64) {
    let failed = report["failed"]["total"].as_u64().unwrap();
    let timeline = report["timeline"].as_array().unwrap();
    let per_second: Vec<(u64, u64)> = timeline
        .iter()
        .map(|s| (s["t"].as_u64().unwrap(), s["failed"].as_u64().unwrap()))
        .collect();
    eprintln!(
        "load: {} sent, {} ok, {failed} failed {} (kill at t={kill_s} s); failed per second {per_second:?}",
        report["sent"], report["ok"], report["failed"]
    );
    assert!(report["sent"].as_u64().unwrap() >= 4000, "{report}");
    // Requests in flight at the kill: at 200 req/s and well under 50 ms each, 10 at most.
    assert!(failed <= 10, "{failed} failed: {}", report["failed"]);
    // None once its lease expired (a second of margin for the watch event).
    let expired = kill_s + TTL.as_secs() + 1;
    let late: Vec<_> = per_second
        .iter()
        .filter(|(t, f)| *t > expired && *f > 0)
        .collect();
    assert!(
        late.is_empty(),
        "failures after the lease expired: {late:?}"
    );
}

#[test]
fn every_proxy_balances_over_all_nodes_and_a_killed_node_costs_only_in_flight_requests() {
    let (c, before) = three_advertising_agents();
    let url = "http://127.0.0.1:8080/";
    let args = [
        "load",
        url,
        "--rate",
        "200",
        "--duration",
        "22s",
        "--json",
        "--timeout",
        "5s",
    ];
    let load = HostLoad(
        c.hosts
            .command(0, BULWARK, &args)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let started = Instant::now();
    spread_over_all_hosts(&c, &before);

    // Steady load for 6 s before the kill (a fixed point of the run, not a wait).
    std::thread::sleep(Duration::from_secs(6).saturating_sub(started.elapsed()));
    signal(c.agents[2].unwrap(), 9);
    let killed = Instant::now();
    let kill_s = (killed - started).as_secs();
    eventually(
        "6 ready replicas on the survivors",
        Duration::from_secs(30),
        || {
            let r = ready(&c);
            let n: usize = r.values().map(Vec::len).sum();
            (!r.contains_key("h2") && n == 6).then_some(())
        },
    );
    let failover = killed.elapsed();
    eprintln!("kill -9 of h2's agent -> 6 replicas ready on h0 and h1 in {failover:?}");
    only_in_flight_requests_failed(&load.finish(), kill_s);
    assert!(
        failover < Duration::from_secs(10),
        "replicas ready again {failover:?} after the kill"
    );
}
