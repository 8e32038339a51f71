//! A cluster for the tests: three (or `n`) hosts as network namespaces, a 3-member etcd
//! 3.4 cluster (one member per host) and a `bulwark agent` per host, shared by cluster.rs,
//! cluster_schedule.rs, cluster_leader.rs and cluster_capacity.rs.

use std::process::Output;
use std::time::Duration;

use serde_json::Value;

use crate::harness::{BULWARK, eventually, output_text};
use crate::hosts::{EtcdCluster, Hosts};

/// The agents' lease (the default).
pub const TTL: Duration = Duration::from_secs(5);

pub struct Cluster {
    pub etcd: EtcdCluster,
    // Fields drop in order: every process is killed (and the namespaces deleted) before
    // the directory with their data and logs is removed.
    pub hosts: Hosts,
    pub dir: tempfile::TempDir,
    pub agents: Vec<Option<u32>>,
    /// Agents started from now on publish their replicas on their host's address
    /// (`--advertise`).
    pub advertise: bool,
    /// Agents started from now on declare this `--capacity` (None: the machine's).
    pub capacity: Option<String>,
}

impl Cluster {
    /// `n` hosts with an etcd member each, no agent yet.
    pub fn new(n: usize) -> Cluster {
        let hosts = Hosts::new(n);
        let dir = tempfile::tempdir().unwrap();
        let etcd = EtcdCluster::start(&hosts, n, dir.path());
        Cluster {
            etcd,
            hosts,
            dir,
            agents: vec![None; n],
            advertise: false,
            capacity: None,
        }
    }

    /// `n` hosts, etcd, and an agent on each (`h0`.. with `zone=z0`..).
    pub fn with_agents(n: usize) -> Cluster {
        let mut c = Cluster::new(n);
        for i in 0..n {
            c.start_agent(i);
        }
        c
    }

    pub fn state_dir(&self, i: usize) -> String {
        self.dir
            .path()
            .join(format!("agent{i}"))
            .display()
            .to_string()
    }

    pub fn start_agent(&mut self, i: usize) -> u32 {
        let (state, node, zone) = (self.state_dir(i), format!("h{i}"), format!("zone=z{i}"));
        let addr = self.hosts.addr(i);
        let mut args = vec![
            "--state-dir",
            &state,
            "agent",
            "--etcd",
            &self.etcd.urls,
            "--node",
            &node,
            "--labels",
            &zone,
            "--api",
            "127.0.0.1:7700",
        ];
        if self.advertise {
            args.extend(["--advertise", &addr]);
        }
        if let Some(capacity) = &self.capacity {
            args.extend(["--capacity", capacity]);
        }
        let log = self.dir.path().join(format!("agent{i}.log"));
        let pid = self
            .hosts
            .spawn(self.hosts.command(i, BULWARK, &args), &log);
        self.agents[i] = Some(pid);
        eventually(
            &format!("agent h{i} serves its API"),
            Duration::from_secs(30),
            || {
                let out = self.bulwark(i, &["--state-dir", &state, "status", "--json"]);
                out.status.success().then_some(())
            },
        );
        pid
    }

    /// The bulwark CLI, run on host `i`.
    pub fn bulwark(&self, i: usize, args: &[&str]) -> Output {
        self.hosts.run(i, BULWARK, args)
    }

    /// `bulwark nodes --json` on host `i`, with every etcd URL.
    pub fn nodes(&self, i: usize) -> Vec<Value> {
        let out = self.bulwark(i, &["nodes", "--etcd", &self.etcd.urls, "--json"]);
        assert!(out.status.success(), "bulwark nodes: {}", output_text(&out));
        serde_json::from_slice::<Vec<Value>>(&out.stdout).unwrap()
    }

    /// Waits until every node, as agent 0's `nodes` shows them, has `n` ready endpoints;
    /// returns them.
    pub fn ready_per_node(&self, n: usize, what: &str, within: Duration) -> Vec<Value> {
        eventually(what, within, || {
            let nodes = self.nodes(0);
            nodes
                .iter()
                .all(|node| node["ready"].as_array().is_some_and(|r| r.len() == n))
                .then_some(nodes)
        })
    }

    /// `name`'s state in `bulwark nodes` (None: not listed).
    pub fn state_of(&self, i: usize, name: &str) -> Option<String> {
        self.nodes(i)
            .iter()
            .find(|n| n["name"] == name)
            .map(|n| n["state"].as_str().unwrap().to_owned())
    }

    /// [`Cluster::state_of`], or None while etcd cannot answer: a leader election after a
    /// cut or a heal, which callers wait out with `eventually`.
    pub fn state_or_none(&self, i: usize, name: &str) -> Option<String> {
        let out = self.bulwark(i, &["nodes", "--etcd", &self.etcd.urls, "--json"]);
        if !out.status.success() {
            eprintln!("bulwark nodes (tried again): {}", output_text(&out));
            return None;
        }
        serde_json::from_slice::<Vec<Value>>(&out.stdout)
            .unwrap()
            .iter()
            .find(|n| n["name"] == name)
            .map(|n| n["state"].as_str().unwrap().to_owned())
    }

    /// The events of agent `i` (`bulwark events --json`).
    pub fn events(&self, i: usize) -> Vec<Value> {
        let out = self.bulwark(i, &["--state-dir", &self.state_dir(i), "events", "--json"]);
        assert!(
            out.status.success(),
            "bulwark events: {}",
            output_text(&out)
        );
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    /// How many `kind` events about `node` agent `i` emitted.
    pub fn count(&self, i: usize, kind: &str, node: &str) -> usize {
        self.events(i)
            .iter()
            .filter(|e| e["type"] == kind && e["node"] == node)
            .count()
    }
}

impl Drop for Cluster {
    /// A failed test shows the end of every agent's log.
    fn drop(&mut self) {
        if !std::thread::panicking() {
            return;
        }
        for i in 0..self.agents.len() {
            let log = self.dir.path().join(format!("agent{i}.log"));
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            let tail: Vec<&str> = text.lines().rev().take(40).collect();
            eprintln!("--- agent{i}.log (last lines) ---");
            for l in tail.into_iter().rev() {
                eprintln!("{l}");
            }
        }
    }
}
