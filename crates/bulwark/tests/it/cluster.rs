//! Cluster mode, first layer (issue 16): three hosts (network namespaces), a 3-member etcd
//! 3.4 cluster (one member per host), a `bulwark agent` on each; nodes join, get lost
//! (kill -9, a cut link), leave (SIGTERM), rejoin; `apply` stores revisions; one etcd
//! member down changes nothing; an unreachable etcd is a quick, clear error.

use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::cluster_harness::{Cluster, TTL};
use crate::harness::{BULWARK, eventually, output_text, signal};
use crate::hosts::Hosts;

#[test]
fn nodes_join_with_labels_a_killed_agent_is_lost_and_a_stopped_one_leaves_at_once() {
    let c = Cluster::with_agents(3);
    let nodes = eventually("3 alive nodes", Duration::from_secs(10), || {
        let n = c.nodes(0);
        (n.iter().filter(|n| n["state"] == "alive").count() == 3).then_some(n)
    });
    for (i, n) in nodes.iter().enumerate() {
        assert_eq!(n["name"], format!("h{i}"));
        assert_eq!(n["labels"]["zone"], format!("z{i}"), "{n}");
        assert_eq!(n["address"], "127.0.0.1:7700");
    }
    // The table too.
    let out = c.bulwark(1, &["nodes", "--etcd", &c.etcd.urls]);
    let table = output_text(&out);
    assert!(
        table.contains("NAME") && table.contains("zone=z2"),
        "{table}"
    );
    // Every agent saw every node join (the others' and its own).
    for i in 0..3 {
        eventually("node_joined of h2", Duration::from_secs(10), || {
            (c.count(i, "node_joined", "h2") == 1).then_some(())
        });
    }

    // kill -9: the lease expires, the node is lost, the others say so.
    signal(c.agents[2].unwrap(), 9);
    let killed = Instant::now();
    eventually("h2 lost", TTL + Duration::from_secs(10), || {
        (c.state_of(0, "h2").as_deref() == Some("lost")).then_some(())
    });
    let lost_after = killed.elapsed();
    assert!(
        lost_after >= TTL - Duration::from_secs(1),
        "lost after {lost_after:?}, before its lease could expire"
    );
    for i in 0..2 {
        eventually("node_lost of h2", Duration::from_secs(5), || {
            (c.count(i, "node_lost", "h2") == 1).then_some(())
        });
    }
    eprintln!("h2 lost {lost_after:?} after kill -9 (TTL {TTL:?})");

    // SIGTERM: the agent leaves, revoking its lease: gone from the list at once.
    signal(c.agents[1].unwrap(), 15);
    let stopped = Instant::now();
    eventually("h1 gone", Duration::from_secs(5), || {
        c.state_of(0, "h1").is_none().then_some(())
    });
    assert!(
        stopped.elapsed() < TTL,
        "h1 gone after {:?}: the lease was not revoked",
        stopped.elapsed()
    );
    eventually("node_left of h1", Duration::from_secs(5), || {
        (c.count(0, "node_left", "h1") == 1).then_some(())
    });
    assert_eq!(
        c.count(0, "node_lost", "h1"),
        0,
        "a node that left is not lost"
    );
    // h2 stays listed as lost, h0 alive.
    assert_eq!(c.state_of(0, "h2").as_deref(), Some("lost"));
    assert_eq!(c.state_of(0, "h0").as_deref(), Some("alive"));

    let c = a_second_h0_is_refused_and_a_restarted_one_rejoins(c);
    nothing_is_left_behind(c);
}

/// A second agent under a live node's name is refused, naming it, after waiting two of its
/// TTLs for the name's lease to expire; an agent killed and started again at once (a crash
/// and a restart) waits for its previous lease and joins again.
fn a_second_h0_is_refused_and_a_restarted_one_rejoins(mut c: Cluster) -> Cluster {
    let t = Instant::now();
    let args = [
        "--state-dir",
        &format!("{}/dup", c.dir.path().display()),
        "agent",
        "--etcd",
        &c.etcd.urls,
        "--node",
        "h0",
        "--ttl",
        "2s",
    ];
    let out = c.bulwark(2, &args);
    let text = output_text(&out);
    assert!(
        !out.status.success() && text.contains("`h0` is already registered"),
        "{text}"
    );
    assert!(t.elapsed() < Duration::from_secs(15), "{:?}", t.elapsed());
    signal(c.agents[0].unwrap(), 9);
    let first = c.nodes(0)[0]["started_at_ms"].as_u64().unwrap();
    c.start_agent(0);
    eventually("h0 alive again, restarted", TTL * 3, || {
        let n = c.nodes(0).into_iter().find(|n| n["name"] == "h0")?;
        (n["state"] == "alive" && n["started_at_ms"].as_u64() > Some(first)).then_some(())
    });

    c
}

/// Drops the cluster and checks no process and no namespace of this test outlived it.
fn nothing_is_left_behind(c: Cluster) {
    let pids: Vec<u32> = c
        .etcd
        .pids
        .iter()
        .chain(c.agents.iter().flatten())
        .copied()
        .collect();
    drop(c);
    for pid in pids {
        assert!(
            !crate::harness::alive(pid),
            "process {pid} outlived the test's hosts"
        );
    }
    let out = std::process::Command::new("ip")
        .args(["netns", "list"])
        .output()
        .unwrap();
    let ours = crate::hosts::own_prefix();
    let list = String::from_utf8_lossy(&out.stdout);
    assert!(!list.contains(&ours), "namespaces left behind:\n{list}");
}

#[test]
fn a_cut_off_host_is_lost_by_the_others_and_rejoins_when_healed() {
    let c = Cluster::with_agents(3);
    eventually("3 alive nodes", Duration::from_secs(10), || {
        (c.nodes(0).iter().filter(|n| n["state"] == "alive").count() == 3).then_some(())
    });
    c.hosts.cut(2);
    eventually(
        "h2 lost after the cut",
        TTL + Duration::from_secs(15),
        || (c.state_or_none(0, "h2").as_deref() == Some("lost")).then_some(()),
    );
    for i in 0..2 {
        eventually("node_lost of h2", Duration::from_secs(5), || {
            (c.count(i, "node_lost", "h2") == 1).then_some(())
        });
    }
    // The cut-off side cannot list the cluster: a clear error, quickly.
    let t = Instant::now();
    let out = c.bulwark(
        2,
        &["nodes", "--etcd", &c.etcd.urls, "--etcd-timeout", "2s"],
    );
    assert!(!out.status.success());
    assert!(
        output_text(&out).contains("cannot reach etcd"),
        "{}",
        output_text(&out)
    );
    assert!(
        t.elapsed() < Duration::from_secs(10),
        "took {:?}",
        t.elapsed()
    );

    c.hosts.heal(2);
    eventually("h2 alive again", Duration::from_secs(30), || {
        (c.state_or_none(0, "h2").as_deref() == Some("alive")).then_some(())
    });
    eventually("h2 joined twice", Duration::from_secs(5), || {
        (c.count(0, "node_joined", "h2") == 2).then_some(())
    });
    // The agent on h2 is still the one started: it registered again by itself.
    assert!(crate::harness::alive(c.agents[2].unwrap()));
}

#[test]
fn one_etcd_member_killed_changes_nothing_for_the_nodes() {
    let c = Cluster::with_agents(3);
    eventually("3 alive nodes", Duration::from_secs(10), || {
        (c.nodes(1).iter().filter(|n| n["state"] == "alive").count() == 3).then_some(())
    });
    signal(c.etcd.pids[0], 9);
    // Two leases' worth of time: every agent keeps its lease through the other members
    // (a leader election included, when the killed member led).
    let until = Instant::now() + 2 * TTL;
    while Instant::now() < until {
        let nodes = c.nodes(1);
        let alive = nodes.iter().filter(|n| n["state"] == "alive").count();
        assert_eq!(alive, 3, "{nodes:?}");
        std::thread::sleep(Duration::from_millis(500));
    }
    for i in 0..3 {
        for n in ["h0", "h1", "h2"] {
            assert_eq!(c.count(i, "node_lost", n), 0, "agent h{i} saw {n} lost");
        }
    }
}

#[test]
fn apply_stores_checked_revisions_and_refuses_what_check_refuses() {
    let c = Cluster::new(3);
    let dir = c.dir.path();
    let good = dir.join("stack.toml");
    let quickstart = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../examples/quickstart.toml"
    ))
    .unwrap();
    std::fs::write(&good, &quickstart).unwrap();
    let path = good.display().to_string();
    let apply = |args: &[&str]| {
        let mut all = vec!["apply", "--etcd", &c.etcd.urls];
        all.extend_from_slice(args);
        c.bulwark(0, &all)
    };
    let out = apply(&["-f", &path]);
    assert!(out.status.success(), "{}", output_text(&out));
    assert!(
        output_text(&out).contains("stored as revision 1"),
        "{}",
        output_text(&out)
    );
    let out = apply(&["-f", &path]);
    assert!(
        output_text(&out).contains("unchanged, revision 1"),
        "{}",
        output_text(&out)
    );
    std::fs::write(&good, format!("{quickstart}\n# a second revision\n")).unwrap();
    let out = apply(&["-f", &path, "--json"]);
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        (v["revision"].as_u64(), v["stored"].as_bool()),
        (Some(2), Some(true))
    );

    // A broken file: refused with check's own words and exit status, nothing stored.
    let bad = dir.join("bad.toml");
    std::fs::write(&bad, "[services.web]\nrun = [\"x\"]\nreplicas = \"two\"\n").unwrap();
    let bad = bad.display().to_string();
    let refused = apply(&["-f", &bad]);
    let check = c.bulwark(0, &["check", "-f", &bad]);
    assert_eq!(refused.status.code(), Some(2));
    assert_eq!(check.status.code(), Some(2));
    assert_eq!(
        String::from_utf8_lossy(&refused.stderr),
        String::from_utf8_lossy(&check.stderr)
    );
    assert!(String::from_utf8_lossy(&refused.stderr).contains("bad.toml:3:"));

    let out = apply(&["--history", "--json"]);
    let h: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
    let revisions: Vec<u64> = h.iter().map(|r| r["revision"].as_u64().unwrap()).collect();
    assert_eq!(revisions, vec![1, 2]);
    assert_eq!(h[0]["file"], path.as_str());
    let table = output_text(&apply(&["--history"]));
    assert!(
        table.contains("REVISION") && table.lines().count() == 3,
        "{table}"
    );
}

#[test]
fn an_unreachable_etcd_is_a_clear_error_within_the_timeout() {
    // Nothing listens: refused at once.
    let port = crate::harness::free_port();
    let url = format!("http://127.0.0.1:{port}");
    let t = Instant::now();
    let out = std::process::Command::new(BULWARK)
        .args(["nodes", "--etcd", &url, "--etcd-timeout", "2s"])
        .output()
        .unwrap();
    let text = output_text(&out);
    assert!(!out.status.success());
    assert!(
        text.contains(&url) && text.contains("check that etcd runs"),
        "{text}"
    );
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
    // A host that does not answer at all (a black hole): bounded by --etcd-timeout.
    let hosts = Hosts::new(1);
    let t = Instant::now();
    let dark = "http://10.77.0.99:2379";
    let out = hosts.run(
        0,
        BULWARK,
        &[
            "agent",
            "--etcd",
            dark,
            "--node",
            "a",
            "--etcd-timeout",
            "2s",
        ],
    );
    let text = output_text(&out);
    assert!(!out.status.success());
    assert!(
        text.contains(dark) && text.contains("within 2000 ms"),
        "{text}"
    );
    assert!(t.elapsed() < Duration::from_secs(6), "{:?}", t.elapsed());
    // Not a URL.
    let out = std::process::Command::new(BULWARK)
        .args(["apply", "--history", "--etcd", "127.0.0.1:2379"])
        .output()
        .unwrap();
    assert!(
        output_text(&out).contains("write http://HOST:2379"),
        "{}",
        output_text(&out)
    );
}

/// etcd's load per agent at rest: every client message the members receive (lease
/// keepalives, watch traffic, reads), from their own /metrics over a window with nothing
/// else talking to them. The model (ARCHITECTURE.md, "Cluster") says 3 keepalives per TTL.
#[test]
fn etcd_load_per_agent_at_rest_is_three_keepalives_per_ttl() {
    let c = Cluster::with_agents(3);
    eventually("3 alive nodes", Duration::from_secs(10), || {
        (c.nodes(0).iter().filter(|n| n["state"] == "alive").count() == 3).then_some(())
    });
    // The window runs from the start of one reading to the start of the next: each member
    // is read at the same offset in both.
    let start = Instant::now();
    let before = c.etcd.messages_received(&c.hosts);
    std::thread::sleep(Duration::from_secs(15));
    let window = start.elapsed();
    let after = c.etcd.messages_received(&c.hosts);
    // /metrics is plain HTTP, not gRPC: reading it is not counted. A 15 s window holds 9 or
    // 10 keepalive periods of each agent.
    let per_agent = (after - before) / 3.0 / window.as_secs_f64();
    let model = 3.0 / TTL.as_secs_f64();
    eprintln!("etcd load at rest: {per_agent:.2} messages/s per agent (model {model:.2})");
    assert!(
        per_agent > 0.5 * model && per_agent < 1.5 * model,
        "{per_agent:.2} messages/s per agent"
    );
}

/// Every agent runs the replicas of the applied stack that the scheduler placed on it: the
/// stack applied before it started, then each new revision, reloaded in place. The files
/// the stack names are read by each agent from its state directory; the scheduler, which
/// runs where they are not, places the replicas all the same.
#[test]
fn agents_run_the_applied_stack_and_each_new_revision() {
    let mut c = Cluster::new(3);
    let file = c.dir.path().join("stack.toml");
    let stack = |replicas: u32| {
        format!(
            "[services.web]\nrun = [\"{{bulwark}}\", \"demo\", \"--port\", \"{{port}}\"]\n\
             replicas = {replicas}\nenv_files = [\"web.env\"]\nsecrets = {{ DB_PASSWORD = \"db-password\" }}\n\
             [services.web.readiness]\nhttp = \"/ready\"\nperiod = \"200ms\"\n\
             [services.web.expose]\nlisten = \"127.0.0.1:8080\"\n"
        )
    };
    // Next to the stack file, for `apply`'s check, and in each agent's state directory.
    for dir in [c.dir.path().to_owned()]
        .into_iter()
        .chain((0..2).map(|i| c.state_dir(i).into()))
    {
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("web.env"), "GREETING=hello-from-web.env\n").unwrap();
        let secret = dir.join("db-password");
        std::fs::write(&secret, "correct horse\n").unwrap();
        std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    std::fs::write(&file, stack(2)).unwrap();
    let path = file.display().to_string();
    let apply = |c: &Cluster| {
        let out = c.bulwark(0, &["apply", "-f", &path, "--etcd", &c.etcd.urls]);
        assert!(out.status.success(), "{}", output_text(&out));
    };
    apply(&c);
    for i in 0..2 {
        c.start_agent(i);
    }
    let ready = |c: &Cluster, i: usize| -> u64 {
        let out = c.bulwark(i, &["--state-dir", &c.state_dir(i), "status", "--json"]);
        let v: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
        v["services"][0]["ready"].as_u64().unwrap_or(0)
    };
    // The replicas are placed as the agents join: the first alive takes what it can.
    eventually(
        "2 ready replicas over the 2 agents",
        Duration::from_secs(30),
        || (ready(&c, 0) + ready(&c, 1) == 2).then_some(()),
    );
    for i in (0..2).filter(|&i| ready(&c, i) > 0) {
        // Served through the agent's proxy on its host, with the env file's greeting.
        let out = c.hosts.run(i, "curl", &["-sf", "http://127.0.0.1:8080/"]);
        assert!(out.status.success(), "{}", output_text(&out));
        let body = String::from_utf8_lossy(&out.stdout);
        assert!(body.starts_with("hello-from-web.env from web/"), "{body}");
    }
    // A new revision: each agent reloads it.
    std::fs::write(&file, stack(3)).unwrap();
    apply(&c);
    eventually(
        "3 ready replicas over the 2 agents after revision 2",
        Duration::from_secs(30),
        || (ready(&c, 0) + ready(&c, 1) == 3).then_some(()),
    );
}
