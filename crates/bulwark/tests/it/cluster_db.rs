//! A replicated database failed over across machines (issue 16, acceptance 3): PostgreSQL
//! 15 (Debian's) as `[leader]` service `db`, 2 replicas at most one per node on three
//! hosts, exposed in TCP mode on every host (`route = "leader"`), run by `cluster_db.sh`
//! (Patroni's way: every incarnation starts as a standby; the election promotes one; the
//! standby clones and streams from the leader through its own host's listener; synchronous
//! replication, so an acknowledged commit is on the standby too).
//!
//! A writer inserts rows one by one through the listener of the host that runs no replica
//! (every connection crosses to the leader's host); kill -9 of the leader's agent (its
//! postgres dies with it); the standby is promoted with a greater token; the lost replica
//! is placed on the third host, clones the new leader and becomes its synchronous standby;
//! the writer goes on through the same listener; every acknowledged id is readable after.
//! The old leader's agent, started again, stays out: it runs no replica and never leads.

use std::collections::BTreeSet;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::cluster_harness::{Cluster, TTL};
use crate::cluster_leader::{db, leaders, one_leader};
use crate::harness::{alive, eventually, output_text, replicas_in, signal};

const BIN: &str = "/usr/lib/postgresql/15/bin";
/// Every host's listener for `db`.
const LISTEN: u16 = 5440;

fn stack(script: &str, root: &Path, etcd: &str) -> String {
    let root = root.display();
    format!(
        r#"
[services.db]
run = ["sh", "{script}", "start", "{{index}}", "{{port}}"]
replicas = 2
stop_signal = "SIGINT"
env = {{ PGROOT = "{root}", LISTEN = "{LISTEN}", ETCD = "{etcd}" }}
[services.db.placement]
max_per_node = 1
[services.db.readiness]
exec = ["sh", "{script}", "ready", "{{port}}"]
period = "300ms"
[services.db.expose]
listen = "127.0.0.1:{LISTEN}"
protocol = "tcp"
[services.db.leader]
route = "leader"
promote = ["sh", "{script}", "promote", "{{port}}"]
demote = ["sh", "{script}", "demote", "{{port}}"]
command_timeout = "30s"
"#
    )
}

/// `sql` through host `i`'s listener (so to the cluster's leader): its output, or what
/// psql said when it failed (or took more than 20 s: a commit waiting for a standby that
/// never comes is not acknowledged).
fn psql(c: &Cluster, i: usize, sql: &str) -> Result<String, String> {
    let psql = format!("{BIN}/psql");
    let port = LISTEN.to_string();
    let args = [
        "PGCONNECT_TIMEOUT=3",
        "timeout",
        "20",
        &psql,
        "-h",
        "127.0.0.1",
        "-p",
        &port,
        "-U",
        "postgres",
        "-d",
        "postgres",
        "-tAq",
        "-v",
        "ON_ERROR_STOP=1",
        "-c",
        sql,
    ];
    let out = c.hosts.run(i, "env", &args);
    match out.status.success() {
        true => Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned()),
        false => Err(output_text(&out)),
    }
}

/// The pid of the postmaster running in data directory `data`.
fn postmaster(data: &Path) -> u32 {
    let text = std::fs::read_to_string(data.join("postmaster.pid")).expect("postmaster.pid");
    text.lines()
        .next()
        .and_then(|l| l.trim().parse().ok())
        .expect("a pid")
}

/// Kills every postgres of the test (each data directory's postmaster) when dropped: they
/// die with their agents, this is for a test that fails half-way.
struct Postgres(PathBuf);

impl Drop for Postgres {
    fn drop(&mut self) {
        let machines = std::fs::read_dir(&self.0).into_iter().flatten().flatten();
        for m in machines {
            for d in std::fs::read_dir(m.path()).into_iter().flatten().flatten() {
                if d.path().join("postmaster.pid").exists() {
                    signal(postmaster(&d.path()), 9);
                }
            }
        }
    }
}

/// Sets the flag when dropped (the writer stops, whatever happens in the test).
struct Stop(Arc<AtomicBool>);

impl Drop for Stop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// Inserts ids 1, 2, ... one by one through host `i`'s listener until `stop`: every id
/// acknowledged, with when.
fn writer(
    c: &Arc<Cluster>,
    i: usize,
    stop: &Arc<AtomicBool>,
) -> std::thread::JoinHandle<Vec<(u64, Instant)>> {
    let (c, stop) = (c.clone(), stop.clone());
    std::thread::spawn(move || {
        let mut acked = Vec::new();
        let mut id = 0u64;
        while !stop.load(Ordering::Relaxed) {
            id += 1;
            let sql = format!("INSERT INTO t VALUES ({id}) RETURNING id");
            let sent = Instant::now();
            let out = psql(&c, i, &sql);
            if sent.elapsed() > Duration::from_secs(2) {
                eprintln!("insert {id} took {:?}: {out:?}", sent.elapsed());
            }
            match out {
                Ok(out) if out == id.to_string() => acked.push((id, Instant::now())),
                _ => std::thread::sleep(Duration::from_millis(50)),
            }
        }
        acked
    })
}

/// The host whose agent runs a ready standby of `db`, among `among`.
fn standby_host(c: &Cluster, among: &[usize]) -> Option<usize> {
    among.iter().copied().find(|&i| {
        db(c, i).is_some_and(|s| {
            replicas_in(&s)
                .iter()
                .any(|r| r["role"] == "standby" && r["ready"] == true)
        })
    })
}

/// How many standbys stream synchronously from the leader, as it says.
fn sync_standbys(c: &Cluster, via: usize) -> Option<u32> {
    let sql = "SELECT count(*) FROM pg_stat_replication \
               WHERE state = 'streaming' AND sync_state = 'sync'";
    psql(c, via, sql).ok()?.parse().ok()
}

#[test]
fn postgres_leader_killed_under_writes_standby_promoted_no_acknowledged_write_lost() {
    let mut c = Cluster::new(3);
    c.advertise = true;
    // postgres (not root) reaches its data under the test's directory.
    std::fs::set_permissions(c.dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let root = c.dir.path().join("pg");
    std::fs::create_dir(&root).unwrap();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/it/cluster_db.sh");
    let file = c.dir.path().join("stack.toml");
    std::fs::write(&file, stack(script, &root, &c.etcd.urls)).unwrap();
    let path = file.display().to_string();
    let out = c.bulwark(0, &["apply", "-f", &path, "--etcd", &c.etcd.urls]);
    assert!(out.status.success(), "{}", output_text(&out));
    for i in 0..3 {
        c.start_agent(i);
    }
    let c = Arc::new(c);
    let _postgres = Postgres(root.clone());
    let all = [0, 1, 2];

    // A leader, and a standby streaming from it synchronously (through its listener).
    let (old, t1) = one_leader(&c, &all, 0, Duration::from_secs(40));
    let others: Vec<usize> = all.iter().copied().filter(|&i| i != old).collect();
    let standby = eventually("a ready standby", Duration::from_secs(30), || {
        standby_host(&c, &others)
    });
    let free = others.iter().copied().find(|&i| i != standby).unwrap();
    eventually("a synchronous standby", Duration::from_secs(30), || {
        (sync_standbys(&c, free)? == 1).then_some(())
    });
    psql(&c, free, "CREATE TABLE t (id bigint PRIMARY KEY)").expect("create the table");

    // Writes through the host that runs no replica: every one crosses to the leader.
    let stop = Arc::new(AtomicBool::new(false));
    let stopper = Stop(stop.clone());
    let writes = writer(&c, free, &stop);
    std::thread::sleep(Duration::from_secs(2));
    let postmaster = postmaster(&root.join(format!("agent{old}/db-0")));
    signal(c.agents[old].unwrap(), 9);
    let killed = Instant::now();
    // Its postgres dies with it (the parent-death signal), as on a machine that dies.
    eventually(
        "the old leader's postgres gone",
        Duration::from_secs(5),
        || (!alive(postmaster)).then_some(()),
    );

    let rest = [standby, free];
    let (new, t2) = one_leader(&c, &rest, t1, TTL + Duration::from_secs(15));
    let elected = killed.elapsed();
    assert_eq!(new, standby, "the standby is promoted");
    assert!(t2 > t1);
    // The lost replica is placed on the third host, clones the new leader and streams.
    eventually(
        "a synchronous standby again",
        Duration::from_secs(30),
        || (sync_standbys(&c, free)? == 1).then_some(()),
    );
    let resynced = killed.elapsed();
    std::thread::sleep(Duration::from_secs(2));
    drop(stopper);
    let acked = writes.join().unwrap();

    let before = acked.iter().filter(|(_, at)| *at < killed).count();
    // The outage: the longest wait between two acknowledged writes (a commit may still be
    // acknowledged by the old leader in the instant after the kill, before it dies).
    let resumed = acked
        .windows(2)
        .max_by_key(|w| w[1].1 - w[0].1)
        .map(|w| w[1].1)
        .filter(|at| *at > killed);
    let failover = resumed.expect("writes acknowledged again after the kill") - killed;
    let stored: BTreeSet<u64> = psql(&c, free, "SELECT id FROM t ORDER BY id")
        .expect("read the table")
        .lines()
        .map(|l| l.parse().unwrap())
        .collect();
    let lost: Vec<u64> = acked
        .iter()
        .map(|(id, _)| *id)
        .filter(|id| !stored.contains(id))
        .collect();
    eprintln!(
        "leader h{old} (token {t1}) killed under writes; h{new} leads with {t2} after \
         {elected:?}; a synchronous standby again after {resynced:?}; first acknowledged \
         write after the outage {failover:?}; {} acknowledged ({before} before the kill), {} lost",
        acked.len(),
        lost.len()
    );
    assert!(before > 0, "no write acknowledged before the kill");
    assert!(acked.len() > before, "no write acknowledged after the kill");
    assert_eq!(lost, Vec::<u64>::new(), "acknowledged writes lost");
    assert_eq!(leaders(&c, &rest), vec![(new, t2)]);

    // The old leader's agent back: it stays out (both replicas are placed elsewhere, at
    // most one per node), and the new leader leads alone, a lease later too.
    let mut c = Arc::try_unwrap(c).unwrap_or_else(|_| panic!("the writer holds the cluster"));
    c.start_agent(old);
    eventually("the old leader's node alive", TTL * 2, || {
        (c.state_or_none(new, &format!("h{old}"))? == "alive").then_some(())
    });
    std::thread::sleep(TTL);
    let back = db(&c, old).expect("db on the restarted agent");
    assert!(replicas_in(&back).is_empty(), "{back}");
    assert_eq!(leaders(&c, &all), vec![(new, t2)]);
}
