//! One leader per `[leader]` service cluster-wide (issue 16, acceptance 2): three hosts,
//! a 3-member etcd, an agent on each running one replica of `db` (three replicas, at most
//! one per node, placed as the agents join), so three candidates for one etcd election.
//! Exactly one leads; kill -9 of its agent hands the leadership to another host within
//! the lease's TTL and a margin, with a greater token; a leader cut off from etcd stops
//! before the majority side elects another, which never overlap in time.
//! A hung leader's agent (SIGSTOP) is replaced, and deposes its leader when it wakes.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::cluster_harness::{Cluster, TTL};
use crate::harness::{eventually, output_text, replicas_in, signal};

/// `db`: one demo replica per agent, with `[leader]`.
pub const STACK: &str = r#"
[services.db]
run = ["{bulwark}", "demo", "--port", "{port}"]
replicas = 3
[services.db.placement]
max_per_node = 1
[services.db.readiness]
http = "/ready"
period = "200ms"
[services.db.leader]
"#;

/// Three hosts with etcd, the stack applied, an agent on each, every replica ready.
pub fn cluster() -> Cluster {
    let mut c = Cluster::new(3);
    let file = c.dir.path().join("stack.toml");
    std::fs::write(&file, STACK).unwrap();
    let path = file.display().to_string();
    let out = c.bulwark(0, &["apply", "-f", &path, "--etcd", &c.etcd.urls]);
    assert!(out.status.success(), "{}", output_text(&out));
    for i in 0..3 {
        c.start_agent(i);
    }
    for i in 0..3 {
        eventually("db ready on every agent", Duration::from_secs(30), || {
            db(&c, i).filter(|s| s["ready"] == 1).map(|_| ())
        });
    }
    c
}

/// `db` in agent `i`'s `status --json` (None while it does not answer).
pub fn db(c: &Cluster, i: usize) -> Option<Value> {
    let out = c.bulwark(i, &["--state-dir", &c.state_dir(i), "status", "--json"]);
    let v: Value = serde_json::from_slice(&out.stdout).ok()?;
    v["services"]
        .as_array()?
        .iter()
        .find(|s| s["name"] == "db")
        .cloned()
}

/// The leader's token on agent `i`, per its API.
fn leading(c: &Cluster, i: usize) -> Option<u64> {
    let s = db(c, i)?;
    let r = replicas_in(&s).iter().find(|r| r["role"] == "leader")?;
    r["token"].as_u64()
}

/// Every agent in `among` that says its replica leads: (host, token).
pub fn leaders(c: &Cluster, among: &[usize]) -> Vec<(usize, u64)> {
    among
        .iter()
        .filter_map(|&i| leading(c, i).map(|t| (i, t)))
        .collect()
}

/// Waits until exactly one agent of `among` leads, with a token above `above`.
pub fn one_leader(c: &Cluster, among: &[usize], above: u64, within: Duration) -> (usize, u64) {
    eventually("exactly one leader cluster-wide", within, || {
        let l = leaders(c, among);
        assert!(l.len() <= 1, "two leaders at once: {l:?}");
        l.first().copied().filter(|&(_, t)| t > above)
    })
}

/// What agent `i`'s replica reads in its token file: the token while it is told it leads.
fn token_file(c: &Cluster, i: usize) -> Option<u64> {
    let path = format!("{}/leader/db-0.env", c.state_dir(i));
    let text = std::fs::read_to_string(path).ok()?;
    if !text.contains("BULWARK_ROLE=leader") {
        return None;
    }
    text.lines()
        .find_map(|l| l.strip_prefix("BULWARK_FENCING_TOKEN="))
        .and_then(|t| t.parse().ok())
}

/// The term in etcd: (holder, create revision).
fn etcd_term(c: &Cluster) -> Option<(String, u64)> {
    let out = c.hosts.run(
        0,
        "etcdctl",
        &[
            "--endpoints",
            &c.etcd.urls,
            "get",
            "/bulwark/default/leaders/db",
            "-w",
            "json",
        ],
    );
    let v: Value = serde_json::from_slice(&out.stdout).ok()?;
    let kv = &v["kvs"][0];
    let value = kv["value"].as_str()?;
    let value = String::from_utf8(base64_decode(value)).ok()?;
    Some((value, kv["create_revision"].as_u64()?))
}

/// etcdctl's JSON carries values in base64.
fn base64_decode(s: &str) -> Vec<u8> {
    let table = |c: u8| -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        } as u32)
    };
    let (mut out, mut acc, mut bits) = (Vec::new(), 0u32, 0);
    for v in s.bytes().filter_map(table) {
        acc = (acc << 6) | v;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    out
}

#[test]
fn one_leader_cluster_wide_a_killed_leaders_agent_fails_over_a_stopped_one_hands_over() {
    let c = Arc::new(cluster());
    let all = [0, 1, 2];
    let (first, t1) = one_leader(&c, &all, 0, Duration::from_secs(30));
    // The same leader everywhere one looks: its agent's API, its token file, etcd's key
    // (whose create revision is the token); the others are standbys.
    assert_eq!(token_file(&c, first), Some(t1));
    let (holder, revision) = etcd_term(&c).expect("the leader key in etcd");
    assert_eq!(revision, t1, "{holder}");
    assert!(holder.starts_with(&format!("db/0@h{first} #")), "{holder}");
    // And it stays one: every agent looked at for a while (a lease's worth).
    let until = Instant::now() + TTL;
    while Instant::now() < until {
        assert_eq!(leaders(&c, &all), vec![(first, t1)]);
        for i in all.iter().filter(|&&i| i != first) {
            assert_eq!(
                token_file(&c, *i),
                None,
                "agent h{i} told its replica it leads"
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }

    // kill -9 of the leader's agent (its replica dies with it): no resign, the lease
    // expires, another host's replica is elected with a greater token.
    signal(c.agents[first].unwrap(), 9);
    let killed = Instant::now();
    let rest: Vec<usize> = all.iter().copied().filter(|&i| i != first).collect();
    let (second, t2) = one_leader(&c, &rest, t1, TTL + Duration::from_secs(15));
    let after = killed.elapsed();
    eprintln!("leader h{first} (token {t1}) killed; h{second} leads with {t2} after {after:?}");
    assert!(t2 > t1);
    assert!(
        after < TTL + Duration::from_secs(5),
        "a new leader only {after:?} after the kill (the lease's TTL is {TTL:?})"
    );
    // The lease was last renewed at most a third of its TTL before the kill.
    assert!(
        after >= TTL / 2,
        "a new leader after {after:?}, before the old one's lease could expire"
    );
    assert_eq!(token_file(&c, second), Some(t2));
    let (holder, revision) = etcd_term(&c).expect("the leader key in etcd");
    assert_eq!(revision, t2, "{holder}");
    let elected = c
        .events(second)
        .into_iter()
        .filter(|e| e["type"] == "leader_elected" && e["token"] == t2)
        .count();
    assert_eq!(elected, 1, "leader_elected with token {t2} on h{second}");

    // SIGTERM of the new leader's agent: its leader steps down (resigns, token file
    // `standby`) before the agent leaves the cluster, and the last host leads at once
    // (not a lease later), never at the same time.
    let last = rest.iter().copied().find(|&i| i != second).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let recorder = record(&c, &rest, &stop);
    let stopper = Stop(stop);
    let pid = c.agents[second].unwrap();
    signal(pid, 15);
    let stopped = Instant::now();
    let (_, t3) = one_leader(&c, &[last], t2, TTL);
    eprintln!(
        "h{second} stopped; h{last} leads with {t3} after {:?}",
        stopped.elapsed()
    );
    eventually("the stopped agent exits", Duration::from_secs(20), || {
        (!crate::harness::alive(pid)).then_some(())
    });
    assert_eq!(
        token_file(&c, second),
        None,
        "the stopped leader was not demoted"
    );
    drop(stopper);
    let spells = spells(&recorder.join().unwrap());
    assert_eq!(
        spells.iter().map(|s| (s.0, s.1)).collect::<Vec<_>>(),
        vec![(t2, second), (t3, last)]
    );
    no_overlap(&spells);
}

/// Every (host, token, instant) at which a replica was told it leads, from polling the
/// token files (what the replicas read) of `hosts` (whose agents are alive: a killed one
/// leaves its file as it was) every 10 ms until `stop`.
fn record(
    c: &Arc<Cluster>,
    hosts: &[usize],
    stop: &Arc<AtomicBool>,
) -> std::thread::JoinHandle<Vec<(usize, u64, Instant)>> {
    let (c, stop, hosts) = (c.clone(), stop.clone(), hosts.to_vec());
    std::thread::spawn(move || {
        let mut seen = Vec::new();
        while !stop.load(Ordering::Relaxed) {
            for &i in &hosts {
                if let Some(t) = token_file(&c, i) {
                    seen.push((i, t, Instant::now()));
                }
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        seen
    })
}

/// The spells of leadership in `seen`, in the order they began: (token, host, first,
/// last sample). Asserts each token was held by one host only, in one spell.
fn spells(seen: &[(usize, u64, Instant)]) -> Vec<(u64, usize, Instant, Instant)> {
    let mut by_token: BTreeMap<u64, (usize, Instant, Instant)> = BTreeMap::new();
    for &(host, token, at) in seen {
        let e = by_token.entry(token).or_insert((host, at, at));
        assert_eq!(e.0, host, "token {token} led on two hosts");
        e.2 = at;
    }
    let mut spells: Vec<_> = by_token
        .into_iter()
        .map(|(t, (h, first, last))| (t, h, first, last))
        .collect();
    spells.sort_by_key(|s| s.2);
    spells
}

/// Each spell ends before the next begins, and tokens strictly increase.
fn no_overlap(spells: &[(u64, usize, Instant, Instant)]) {
    for w in spells.windows(2) {
        let (a, b) = (&w[0], &w[1]);
        assert!(a.0 < b.0, "tokens do not increase: {a:?} then {b:?}");
        assert!(
            a.3 < b.2,
            "h{} led with {} until after h{} began with {}: overlap",
            a.1,
            a.0,
            b.1,
            b.0
        );
    }
}

/// Stops a recorder when dropped (whatever happens in the test).
struct Stop(Arc<AtomicBool>);

impl Drop for Stop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// Acceptance 2: the leader's host is cut off. It stops leading before the majority side
/// elects another (no overlap in time, tokens strictly increasing), keeps its replica
/// running (fail static), and after the heal does not lead with its stale token.
#[test]
fn a_cut_off_leader_stops_before_the_majority_elects_another_and_never_overlaps() {
    let c = Arc::new(cluster());
    let all = [0, 1, 2];
    let (old, t1) = one_leader(&c, &all, 0, Duration::from_secs(30));
    let stop = Arc::new(AtomicBool::new(false));
    let recorder = record(&c, &all, &stop);
    let stopper = Stop(stop);
    std::thread::sleep(Duration::from_millis(500));

    c.hosts.cut(old);
    let cut = Instant::now();
    let rest: Vec<usize> = all.iter().copied().filter(|&i| i != old).collect();
    let (new, t2) = one_leader(&c, &rest, t1, TTL + Duration::from_secs(20));
    eprintln!(
        "h{old} (token {t1}) cut off; h{new} leads with {t2} after {:?}",
        cut.elapsed()
    );
    // The cut-off host demoted its replica by itself, and keeps running it (fail static).
    eventually("the cut-off leader demoted", Duration::from_secs(5), || {
        token_file(&c, old).is_none().then_some(())
    });
    let s = db(&c, old).expect("the cut-off agent still answers");
    assert_eq!(s["ready"], 1, "{s}");
    assert!(
        replicas_in(&s).iter().all(|r| r["role"] == "standby"),
        "{s}"
    );

    c.hosts.heal(old);
    let healed = Instant::now();
    eventually(
        "the healed host alive again",
        Duration::from_secs(30),
        || {
            let out = c.bulwark(new, &["nodes", "--etcd", &c.etcd.urls, "--json"]);
            let nodes: Vec<Value> = serde_json::from_slice(&out.stdout).ok()?;
            let h = nodes.iter().find(|n| n["name"] == format!("h{old}"))?;
            (h["state"] == "alive").then_some(())
        },
    );
    // A lease's worth after it is back: it leads neither with its stale token nor at all
    // (the group is held). The majority side may elect again meanwhile, with a greater
    // token: its leader steps down by design when a keepalive is answered late (a sixth of
    // the TTL), as one can be while the healed host's etcd member catches up on a loaded
    // machine (seen once in a rehearsal: h2 led with 25, then with 32).
    while healed.elapsed() < 2 * TTL {
        let l = leaders(&c, &all);
        assert!(l.len() <= 1, "two leaders at once: {l:?}");
        assert!(
            l.iter().all(|&(h, t)| h != old && t >= t2),
            "after the heal of h{old} (token {t1}), h{new} leading with {t2}: {l:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    drop(stopper);
    let seen = recorder.join().unwrap();

    let spells = spells(&seen);
    eprintln!("leadership spells (token, host, from cut, to cut):");
    for (t, h, first, last) in &spells {
        let rel = |i: &Instant| {
            i.checked_duration_since(cut)
                .map_or(-(cut - *i).as_secs_f64(), |d| d.as_secs_f64())
        };
        eprintln!("  {t} h{h} {:+.2}s .. {:+.2}s", rel(first), rel(last));
    }
    // The old leader's spell, then the new one's; any later one (an election again, see
    // above) on the majority side.
    let hosts: Vec<(u64, usize)> = spells.iter().map(|s| (s.0, s.1)).collect();
    assert_eq!(
        hosts[..2.min(hosts.len())],
        [(t1, old), (t2, new)],
        "the old leader's spell, then the new one's: {hosts:?}"
    );
    assert!(
        hosts[2..].iter().all(|&(_, h)| h != old),
        "the healed host led again: {hosts:?}"
    );
    no_overlap(&spells);
    // The old leader stopped before its lease could have expired on the majority's side:
    // a TTL after the cut at the earliest (its last keepalive was answered by the majority
    // before the cut, or by an etcd leader cut off with it, at most about an election
    // timeout after the cut, and the majority's new etcd leader extends every lease by a
    // whole TTL); the fence stops it half a TTL after that keepalive was sent.
    let stopped = spells[0].3.saturating_duration_since(cut);
    assert!(
        stopped < TTL,
        "the cut-off leader led {stopped:?} after the cut, when its lease may have expired"
    );
}

/// A cut shorter than the lease: the leader steps down at its fence all the same (it
/// cannot know the cut is short); after the heal its term's key, still under a live lease,
/// is deleted by its resignation, and a leader is elected again with a greater token.
#[test]
fn a_leader_cut_off_briefly_steps_down_and_a_leader_is_elected_again_after_the_heal() {
    let c = cluster();
    let all = [0, 1, 2];
    let (old, t1) = one_leader(&c, &all, 0, Duration::from_secs(30));
    c.hosts.cut(old);
    let cut = Instant::now();
    eventually("the cut-off leader steps down", TTL, || {
        token_file(&c, old).is_none().then_some(())
    });
    let stepped = cut.elapsed();
    c.hosts.heal(old);
    let (new, t2) = one_leader(&c, &all, t1, 4 * TTL);
    eprintln!(
        "h{old} (token {t1}) stepped down {stepped:?} after the cut; h{new} leads with {t2} \
         {:?} after it",
        cut.elapsed()
    );
    assert_eq!(token_file(&c, new), Some(t2));
}

/// A hung node (its agent SIGSTOPped, its replica still running): its lease expires, another
/// host leads with a greater token; woken, the agent deposes its own leader at once (its
/// fence passed long ago: token file `standby`, not a leader in its API) and never leads
/// again with its old token.
#[test]
fn a_hung_leaders_agent_is_replaced_and_deposes_its_leader_when_it_wakes() {
    const SIGSTOP: i32 = 19;
    const SIGCONT: i32 = 18;
    let c = cluster();
    let all = [0, 1, 2];
    let (hung, t1) = one_leader(&c, &all, 0, Duration::from_secs(30));
    let agent = c.agents[hung].unwrap();
    signal(agent, SIGSTOP);
    let stopped = Instant::now();
    let rest: Vec<usize> = all.iter().copied().filter(|&i| i != hung).collect();
    let (next, t2) = one_leader(&c, &rest, t1, TTL + Duration::from_secs(15));
    eprintln!(
        "h{hung}'s agent stopped (leader, token {t1}); h{next} leads with {t2} after {:?}",
        stopped.elapsed()
    );
    assert!(t2 > t1);
    assert!(
        stopped.elapsed() >= TTL / 2,
        "a new leader before the hung node's lease could expire"
    );
    let lost = format!("h{hung}");
    eventually("the hung node lost", Duration::from_secs(10), || {
        (c.count(next, "node_lost", &lost) >= 1).then_some(())
    });
    signal(agent, SIGCONT);
    let woke = Instant::now();
    eventually(
        "the woken agent deposes its leader",
        Duration::from_secs(10),
        || (token_file(&c, hung).is_none() && leading(&c, hung).is_none()).then_some(()),
    );
    eprintln!(
        "h{hung} woke and deposed its leader after {:?}",
        woke.elapsed()
    );
    // And the leadership stays where it went, with the newer token, for a lease's worth.
    let until = Instant::now() + TTL;
    while Instant::now() < until {
        assert_eq!(leaders(&c, &all), vec![(next, t2)]);
        assert_eq!(
            token_file(&c, hung),
            None,
            "h{hung} told its replica it leads"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}
