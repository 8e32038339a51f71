//! Cluster mode, capacity and the cluster-wide status (issue 16): agents declare their
//! node's capacity (`--capacity`), the scheduler places replicas by their service's
//! `[resources]` requests and leaves the one no node can take unplaced, with the reason in
//! its `placement_changed` event and in `bulwark nodes`; `bulwark status --etcd` lists
//! every node's replicas from etcd alone, and a killed node's go with its lease; an
//! agent's incidents, SLO view and SLO series name its node.

use std::time::{Duration, Instant};

use serde_json::Value;

use crate::cluster_harness::{Cluster, TTL};
use crate::cluster_schedule::{placements, quickstart6, scheduler, web};
use crate::harness::{eventually, output_text, signal};

/// `web` with `replicas` replicas of 64 MiB each.
fn stack(replicas: u32) -> String {
    format!(
        r#"
[services.web]
run = ["{{bulwark}}", "demo", "--port", "{{port}}"]
replicas = {replicas}
[services.web.resources]
memory = "64MiB"
[services.web.readiness]
http = "/ready"
period = "200ms"
"#
    )
}

fn apply(c: &Cluster, name: &str, text: &str) {
    let file = c.dir.path().join(name);
    std::fs::write(&file, text).unwrap();
    let path = file.display().to_string();
    let out = c.bulwark(0, &["apply", "-f", &path, "--etcd", &c.etcd.urls]);
    assert!(out.status.success(), "{}", output_text(&out));
}

/// `bulwark status --etcd --json` on host 0.
fn cluster_status(c: &Cluster) -> Value {
    let out = c.bulwark(0, &["status", "--etcd", &c.etcd.urls, "--json"]);
    assert!(out.status.success(), "status --etcd: {}", output_text(&out));
    serde_json::from_slice(&out.stdout).unwrap()
}

/// The replicas in `status` that run, are ready and have an address.
fn ready_rows(status: &Value) -> Vec<Value> {
    status["replicas"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["state"] == "running" && r["ready"] == true && r["address"].is_string())
        .cloned()
        .collect()
}

/// The scheduler's last `placement_changed` event.
fn last_placement_event(c: &Cluster) -> Option<Value> {
    let boss = scheduler(c, 0)?;
    let i: usize = boss[1..].parse().unwrap();
    c.events(i)
        .into_iter()
        .rfind(|e| e["type"] == "placement_changed")
}

fn three_alive(c: &Cluster) {
    eventually("3 alive nodes", Duration::from_secs(15), || {
        (c.nodes(0).iter().filter(|n| n["state"] == "alive").count() == 3).then_some(())
    });
}

#[test]
fn replicas_fill_declared_capacity_and_the_one_left_over_is_unplaced_with_the_reason() {
    let mut c = Cluster::new(3);
    c.capacity = Some("cpu=1,memory=100MiB".to_owned());
    for i in 0..3 {
        c.start_agent(i);
    }
    three_alive(&c);
    // Every event an agent publishes says which node it comes from.
    for i in 0..3 {
        let events = c.events(i);
        let from = format!("h{i}");
        assert!(
            !events.is_empty() && events.iter().all(|e| e["origin"] == from.as_str()),
            "{events:?}"
        );
    }
    apply(&c, "four.toml", &stack(4));
    // One replica per node: a second 64 MiB does not fit in 100 MiB.
    let placed = eventually("3 replicas placed", Duration::from_secs(30), || {
        let p = placements(&c);
        let mut nodes: Vec<&String> = p.values().collect();
        nodes.sort();
        (nodes == ["h0", "h1", "h2"]).then_some(p)
    });
    assert!(!placed.contains_key("web/3"), "{placed:?}");
    let event = eventually(
        "the unplaced replica's event",
        Duration::from_secs(10),
        || {
            last_placement_event(&c)
                .filter(|e| e["unplaced"].as_array().is_some_and(|u| !u.is_empty()))
        },
    );
    let why = event["unplaced"][0].as_str().unwrap().to_owned();
    assert!(
        why.starts_with("web/3 has no node: 0 of 3 nodes can take it: 3 lack free capacity")
            && why.contains("64 MiB")
            && why.contains("(h0, h1, h2)"),
        "{event}"
    );
    // `bulwark nodes`: what is requested of each node's capacity, and the reason.
    let table = output_text(&c.bulwark(0, &["nodes", "--etcd", &c.etcd.urls]));
    assert!(table.contains("CPU 0/1  MEM 64MiB/100MiB"), "{table}");
    assert!(table.contains(&why), "{table}");
    eprintln!("{table}");
    for n in c.nodes(0) {
        assert_eq!(n["capacity"]["memory"], 100u64 << 20, "{n}");
        assert_eq!(n["capacity"]["cpu"], 1.0, "{n}");
        assert_eq!(n["requested"]["memory"], 64u64 << 20, "{n}");
    }
    // The three placed run and are ready, one per node.
    let rows = eventually("3 ready replicas", Duration::from_secs(30), || {
        let rows = ready_rows(&cluster_status(&c));
        (rows.len() == 3).then_some(rows)
    });
    let mut nodes: Vec<&str> = rows.iter().map(|r| r["node"].as_str().unwrap()).collect();
    nodes.sort_unstable();
    assert_eq!(nodes, ["h0", "h1", "h2"]);

    // Three wanted: the reason is cleared, and nothing moves.
    apply(&c, "three.toml", &stack(3));
    let cleared = eventually("the reason cleared", Duration::from_secs(10), || {
        last_placement_event(&c).filter(|e| e["unplaced"] == Value::Array(vec![]))
    });
    assert_eq!(cleared["moves"], Value::Array(vec![]), "{cleared}");
    let table = output_text(&c.bulwark(0, &["nodes", "--etcd", &c.etcd.urls]));
    assert!(!table.contains("has no node"), "{table}");
    assert_eq!(cluster_status(&c)["unplaced"], Value::Array(vec![]));
    assert_eq!(placements(&c), placed);

    // h1's only replica killed: h1's agent opens an incident, and it names h1.
    let pid = web(&c, 1)["replicas"][0]["pid"]
        .as_u64()
        .expect("web's pid on h1");
    signal(pid as u32, 9);
    let state = c.state_dir(1);
    let incident = eventually("h1's incident", Duration::from_secs(15), || {
        let out = c.bulwark(1, &["--state-dir", &state, "incidents", "--json"]);
        let v: Value = serde_json::from_slice(&out.stdout).ok()?;
        v["incidents"].as_array()?.first().cloned()
    });
    assert_eq!(incident["service"], "web", "{incident}");
    assert_eq!(incident["node"], "h1", "{incident}");
    let text = output_text(&c.bulwark(1, &["--state-dir", &state, "incidents"]));
    assert!(
        text.contains(&format!("#{} web on h1 [", incident["id"])),
        "{text}"
    );
}

#[test]
fn status_with_etcd_lists_every_nodes_replicas_and_a_killed_nodes_go_with_its_lease() {
    let c = Cluster::with_agents(3);
    three_alive(&c);
    apply(
        &c,
        "stack.toml",
        &format!("{}\n{}", quickstart6(), crate::cluster_leader::STACK),
    );
    let status = eventually(
        "9 ready replicas, 3 per node, db's leader",
        Duration::from_secs(60),
        || {
            let status = cluster_status(&c);
            let rows = ready_rows(&status);
            let per = |n: &str| rows.iter().filter(|r| r["node"] == n).count();
            let spread = ["h0", "h1", "h2"].iter().all(|n| per(n) == 3);
            // db's leader elected too.
            let led = rows.iter().any(|r| r["role"] == "leader");
            (rows.len() == 9 && spread && led).then_some(status)
        },
    );
    let rows = ready_rows(&status);
    let leaders: Vec<&Value> = rows.iter().filter(|r| r["role"] == "leader").collect();
    assert_eq!(leaders.len(), 1, "{status}");
    assert!(
        leaders[0]["token"].as_i64().is_some_and(|t| t > 0),
        "{status}"
    );
    let followers = rows.iter().filter(|r| r["role"] == "follower").count();
    assert_eq!(followers, 2, "{status}");
    assert!(
        rows.iter()
            .filter(|r| r["service"] == "web")
            .all(|r| r["role"].is_null())
    );
    let table = output_text(&c.bulwark(0, &["status", "--etcd", &c.etcd.urls]));
    assert!(
        table.contains("NODE") && table.contains("leader (token"),
        "{table}"
    );
    assert!(table.contains("3 alive"), "{table}");
    eprintln!("{table}");

    // kill -9 of an agent that does not schedule: its replicas go once its lease expires.
    let boss = scheduler(&c, 0).expect("a scheduler");
    let victim = (0..3).rev().find(|i| format!("h{i}") != boss).unwrap();
    let name = format!("h{victim}");
    signal(c.agents[victim].unwrap(), 9);
    let killed = Instant::now();
    let status = eventually(
        &format!("{name}'s replicas gone"),
        TTL + Duration::from_secs(15),
        || {
            let status = cluster_status(&c);
            let listed = status["replicas"].as_array().unwrap();
            listed
                .iter()
                .all(|r| r["node"] != name.as_str())
                .then_some(status)
        },
    );
    eprintln!(
        "kill -9 of {name} -> its replicas gone from `status --etcd` in {:?}",
        killed.elapsed()
    );
    // Its web replicas moved to the survivors; its db replica has nowhere to go.
    let web_rows = eventually(
        "6 web replicas on the survivors",
        Duration::from_secs(30),
        || {
            let rows = ready_rows(&cluster_status(&c));
            let web: Vec<Value> = rows.into_iter().filter(|r| r["service"] == "web").collect();
            (web.len() == 6).then_some(web)
        },
    );
    assert!(web_rows.iter().all(|r| r["node"] != name.as_str()));
    let db = |s: &Value| {
        let unplaced = s["unplaced"].as_array().unwrap();
        unplaced
            .iter()
            .any(|u| u.as_str().unwrap().starts_with("db/"))
            .then_some(())
    };
    if db(&status).is_none() {
        eventually(
            "db's third replica unplaced",
            Duration::from_secs(10),
            || db(&cluster_status(&c)),
        );
    }
}

/// An agent started on an applied stack with an SLO: its SLO view (`bulwark slo`, JSON and
/// human) and its `bulwark_slo_*` series name its node.
#[test]
fn an_agents_slo_view_and_series_name_its_node() {
    let mut c = Cluster::new(1);
    let text = r#"
[services.web]
run = ["{bulwark}", "demo", "--port", "{port}"]
[services.web.expose]
listen = "127.0.0.1:8080"
[[services.web.slo]]
name = "availability"
kind = "availability"
objective = 99.0
period = "1h"
"#;
    apply(&c, "slo.toml", text);
    c.start_agent(0);
    let state = c.state_dir(0);
    let reports = eventually("h0's SLO report", Duration::from_secs(15), || {
        let out = c.bulwark(0, &["--state-dir", &state, "slo", "--json"]);
        let v: Value = serde_json::from_slice(&out.stdout).ok()?;
        v.as_array().filter(|a| !a.is_empty()).cloned()
    });
    assert!(reports.iter().all(|r| r["node"] == "h0"), "{reports:?}");
    let table = output_text(&c.bulwark(0, &["--state-dir", &state, "slo"]));
    assert!(table.contains("node h0\nSERVICE"), "{table}");
    let out = c
        .hosts
        .run(0, "curl", &["-sf", "http://127.0.0.1:7700/metrics"]);
    assert!(out.status.success(), "metrics: {}", output_text(&out));
    let metrics = String::from_utf8_lossy(&out.stdout);
    let series: Vec<&str> = metrics
        .lines()
        .filter(|l| l.starts_with("bulwark_slo_"))
        .collect();
    assert!(
        series
            .iter()
            .any(|l| l.starts_with("bulwark_slo_requests_total{"))
            && series.iter().all(|l| l.contains("node=\"h0\"")),
        "{series:?}"
    );
}
