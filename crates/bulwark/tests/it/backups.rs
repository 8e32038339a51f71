//! Backups, judged by Debian's `restic` as the independent reader: scheduled snapshots it
//! lists, checks and restores byte for byte; a Redis database under writes drilled into a
//! scratch replica; a flipped byte found, alerted, marked, and the last good snapshot kept;
//! a failing backup turned into an RPO alert.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use serde_json::Value;

use crate::harness::{Stack, eventually};

const PASSWORD: &str = "correct horse battery staple";

/// `restic` on `repo`, with the password; panics unless it succeeds.
fn restic(repo: &Path, args: &[&str]) -> String {
    let out = Command::new("restic")
        .arg("-r")
        .arg(repo)
        .args(args)
        .env("RESTIC_PASSWORD", PASSWORD)
        .env("RESTIC_CACHE_DIR", repo.with_extension("cache"))
        .output()
        .expect("restic is installed (scripts/test installs it)");
    assert!(
        out.status.success(),
        "restic {args:?}: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `bulwark backup ARGS --json`, parsed; panics unless it succeeds.
fn backup_json(stack: &Stack, args: &[&str]) -> Value {
    let mut all = vec!["backup"];
    all.extend_from_slice(args);
    all.push("--json");
    let out = stack.cli(&all);
    assert!(
        out.status.success(),
        "bulwark {all:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn get_json(stack: &Stack, path: &str) -> Value {
    let (code, body) = stack.call("GET", path, "127.0.0.1", true);
    assert_eq!(code, 200, "{path}: {body}");
    serde_json::from_str(&body).unwrap()
}

/// Every regular file under `dir`, by path relative to it, with its bytes.
fn files(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                todo.push(p);
            } else {
                out.insert(
                    p.strip_prefix(dir).unwrap().to_path_buf(),
                    std::fs::read(&p).unwrap(),
                );
            }
        }
    }
    out
}

/// Pseudo-random bytes (incompressible enough to make real packs).
fn noise(n: usize, seed: u64) -> Vec<u8> {
    let mut x = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// Processes whose parent is `parent` and whose command name is `name`.
fn children_named(parent: u32, name: &str) -> Vec<u32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
                let (head, rest) = stat.rsplit_once(')').unwrap_or(("", ""));
                let comm = head.split_once('(').map_or("", |(_, c)| c);
                let ppid = rest.split_whitespace().nth(1);
                comm == name && ppid == Some(&parent.to_string())
            })
        })
        .collect()
}

fn firing(stack: &Stack, name: &str) -> Option<Value> {
    get_json(stack, "/v1/alerts")
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["name"] == name && a["state"] == "firing")
        .cloned()
}

#[test]
fn scheduled_backups_are_what_restic_lists_checks_and_restores_byte_for_byte() {
    let mut stack = Stack::prepare(
        r#"
[services.files]
run = ["sleep", "1000"]
cwd = "."

[[backups]]
name = "files"
service = "files"
paths = ["data"]
schedule = "* * * * * *"
repository = "repo"
password_file = "pw"
keep = { last = 1000 }

[[backups]]
name = "state"
state = true
schedule = "*/2 * * * * *"
repository = "repo-state"
password_file = "pw"
"#,
    );
    let dir = stack.dir.path().to_path_buf();
    std::fs::write(dir.join("pw"), format!("{PASSWORD}\n")).unwrap();
    let data = dir.join("data");
    std::fs::create_dir_all(data.join("nested/deeper")).unwrap();
    std::fs::write(data.join("hello.txt"), "hello\n").unwrap();
    std::fs::write(data.join("empty"), "").unwrap();
    std::fs::write(data.join("nested/big.bin"), noise(3 << 20, 1)).unwrap();
    std::fs::write(data.join("nested/deeper/small.bin"), noise(1000, 2)).unwrap();
    stack.launch();

    // A snapshot is listed from the repository as soon as restic wrote it, and verified a
    // moment later (CI listed the third in between, `verified: false`): wait for three
    // verified ones, and none damaged.
    let ours = eventually(
        "three verified snapshots of `files`",
        Duration::from_secs(60),
        || {
            let list = backup_json(&stack, &["list", "files"]);
            let verified = list
                .as_array()
                .unwrap()
                .iter()
                .filter(|s| s["verified"] == true)
                .count();
            (verified >= 3).then_some(list)
        },
    );
    assert!(
        ours.as_array()
            .unwrap()
            .iter()
            .all(|s| s["damaged"] == false),
        "{ours:#}"
    );
    let metrics = stack.call("GET", "/metrics", "127.0.0.1", false).1;
    for m in [
        "bulwark_backup_last_success_timestamp_seconds{backup=\"files\"}",
        "bulwark_backup_age_seconds{backup=\"files\"}",
        "bulwark_backup_verified{backup=\"files\"} 1",
        "bulwark_backup_runs_total{backup=\"files\",result=\"ok\"}",
    ] {
        assert!(metrics.contains(m), "{m} in /metrics:\n{metrics}");
    }
    eventually(
        "a backup of bulwark's journal",
        Duration::from_secs(30),
        || {
            (!backup_json(&stack, &["list", "state"])
                .as_array()
                .unwrap()
                .is_empty())
            .then_some(())
        },
    );
    stack.terminate(Duration::from_secs(30));
    restic_reads_what_bulwark_wrote(&dir, &data, &ours);
}

/// restic lists every snapshot bulwark reported, checks the repository clean, restores
/// the newest byte for byte; the journal's copy opens as a journal.
fn restic_reads_what_bulwark_wrote(dir: &Path, data: &Path, ours: &Value) {
    // More snapshots only if one was being written when bulwark stopped.
    let repo = dir.join("repo");
    let listed: Value = serde_json::from_str(&restic(&repo, &["snapshots", "--json"])).unwrap();
    let restic_ids: Vec<&str> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap())
        .collect();
    for s in ours.as_array().unwrap() {
        assert!(
            restic_ids.contains(&s["id"].as_str().unwrap()),
            "{s} in {restic_ids:?}"
        );
    }
    let check = restic(&repo, &["check", "--read-data"]);
    assert!(check.contains("no errors were found"), "{check}");

    let target = dir.join("restored");
    restic(
        &repo,
        &["restore", "latest", "--target", target.to_str().unwrap()],
    );
    let restored = target.join(data.strip_prefix("/").unwrap());
    assert_eq!(
        files(&restored),
        files(data),
        "restic's restore differs from the source"
    );

    // The journal's copy is a journal: it opens, and holds the events of the run.
    let state_repo = dir.join("repo-state");
    let state_target = dir.join("restored-state");
    restic(
        &state_repo,
        &[
            "restore",
            "latest",
            "--target",
            state_target.to_str().unwrap(),
        ],
    );
    let copy = files(&state_target);
    let (path, _) = copy
        .iter()
        .find(|(p, _)| p.ends_with("journal.redb"))
        .expect("the journal's copy was saved");
    let journal =
        store::Embedded::open(&state_target.join(path)).expect("the copy opens as a journal");
    let events = store::Store::read(&journal, "events", 0, 10).unwrap();
    assert!(!events.is_empty(), "the copy holds the run's events");
}

/// A Redis client that SETs k1, k2, ... in order and counts what Redis acknowledged.
struct Writer {
    acked: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Writer {
    fn start(port: u16) -> Writer {
        let acked = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (a, s) = (acked.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            let conn = TcpStream::connect(("127.0.0.1", port)).unwrap();
            let mut reader = BufReader::new(conn.try_clone().unwrap());
            let mut conn = conn;
            let mut i = 0u64;
            while !s.load(Ordering::Relaxed) {
                i += 1;
                write!(conn, "SET k{i} v{i}\r\n").unwrap();
                let mut line = String::new();
                reader.read_line(&mut line).unwrap();
                assert_eq!(line, "+OK\r\n");
                a.store(i, Ordering::SeqCst);
                std::thread::sleep(Duration::from_micros(200));
            }
        });
        Writer {
            acked,
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[test]
fn a_redis_database_under_writes_is_drilled_and_every_row_committed_before_the_backup_is_back() {
    let mut stack = Stack::prepare(
        r#"
[services.db]
run = ["redis-server", "--port", "{port}", "--bind", "127.0.0.1", "--dir", "data", "--save", "", "--appendonly", "no"]
cwd = "."

[[backups]]
name = "db"
service = "db"
paths = ["data"]
schedule = "0 0 1 1 *"
repository = "repo"
password_file = "pw"
rto = "10s"
hooks.pre = { run = ["redis-cli", "-p", "{port}", "SAVE"], timeout = "30s" }

[backups.drill]
check = ["sh", "check.sh", "{port}"]
timeout = "10s"
"#,
    );
    let dir = stack.dir.path().to_path_buf();
    std::fs::write(dir.join("pw"), PASSWORD).unwrap();
    std::fs::create_dir_all(dir.join("data")).unwrap();
    // Passes when every key k1..kN (N from the file `expected`) exists.
    std::fs::write(
        dir.join("check.sh"),
        "n=$(cat expected)\n\
         got=$(redis-cli -p \"$1\" EVAL \"local c=0 for i=1,tonumber(ARGV[1]) do c=c+redis.call('exists','k'..i) end return c\" 0 \"$n\")\n\
         test \"$got\" = \"$n\"\n",
    )
    .unwrap();
    stack.launch();
    let db = stack.wait_service("db", "running", Duration::from_secs(30), |s| {
        s["replicas"][0]["state"] == "running"
    });
    let port = db["replicas"][0]["port"].as_u64().unwrap() as u16;
    let writer = eventually("redis to accept writes", Duration::from_secs(30), || {
        TcpStream::connect(("127.0.0.1", port))
            .ok()
            .map(|_| Writer::start(port))
    });
    eventually("some writes", Duration::from_secs(30), || {
        (writer.acked.load(Ordering::SeqCst) > 500).then_some(())
    });
    // Everything acknowledged before the backup starts must come back.
    let committed = writer.acked.load(Ordering::SeqCst);
    std::fs::write(dir.join("expected"), committed.to_string()).unwrap();
    let run = backup_json(&stack, &["run", "db"]);
    assert_eq!(run["verified"], true, "{run:#}");
    assert!(
        writer.acked.load(Ordering::SeqCst) > committed,
        "writes went on during the backup"
    );

    let drill = backup_json(&stack, &["drill", "db"]);
    assert_eq!(drill["passed"], true, "{drill:#}");
    assert_eq!(drill["snapshot"], run["snapshot"]);
    let rto = drill["rto_ms"].as_u64().unwrap();
    assert!(rto > 0 && rto < 10_000, "measured RTO {rto} ms");
    assert!(drill["restore_ms"].as_u64().unwrap() <= rto);
    assert_eq!(drill["rto_objective_ms"], 10_000);
    drop(writer);

    // The drill is recorded and measured, and left nothing running or on disk.
    let status = backup_json(&stack, &["list"]);
    assert_eq!(status[0]["record"]["last_drill"]["rto_ms"], rto);
    let metrics = stack.call("GET", "/metrics", "127.0.0.1", false).1;
    assert!(
        metrics.contains("bulwark_backup_drill_rto_seconds{backup=\"db\"}"),
        "{metrics}"
    );
    let scratch = stack.state_dir().join("backups/drills/db");
    assert!(!scratch.exists(), "{} was removed", scratch.display());
    // (By parent: redis rewrites its environment with its process title.)
    let redis = children_named(stack.pid(), "redis-server");
    assert_eq!(redis.len(), 1, "only the real replica runs: {redis:?}");
    assert!(firing(&stack, "backup-drill:db").is_none());

    // The drill's check can fail: then it is an alert, with the reason.
    std::fs::write(dir.join("expected"), (committed * 1000).to_string()).unwrap();
    let out = stack.cli(&["backup", "drill", "db"]);
    assert!(!out.status.success());
    let alert = eventually("the drill alert", Duration::from_secs(10), || {
        firing(&stack, "backup-drill:db")
    });
    assert_eq!(alert["severity"], "ticket");
    assert!(
        alert["summary"]
            .as_str()
            .unwrap()
            .contains("did not pass within its timeout of 10s"),
        "{alert}"
    );
    // Why: the check gave up by itself, with its last failure (not a bare timeout around it
    // that left the scratch replica a zombie while the alert was already out).
    assert!(
        alert["summary"].as_str().unwrap().contains("last check:"),
        "{alert}"
    );
    assert_eq!(
        children_named(stack.pid(), "redis-server").len(),
        1,
        "the scratch replica is gone"
    );
}

#[test]
fn a_flipped_byte_is_found_alerted_and_marked_and_the_last_good_snapshot_outlives_retention() {
    let mut stack = Stack::prepare(
        r#"
[services.files]
run = ["sleep", "1000"]
cwd = "."

[[backups]]
name = "files"
service = "files"
paths = ["data"]
schedule = "0 0 1 1 *"
repository = "repo"
password_file = "pw"
keep = { last = 2, hourly = 0, daily = 0, weekly = 0, monthly = 0, yearly = 0 }
"#,
    );
    let dir = stack.dir.path().to_path_buf();
    std::fs::write(dir.join("pw"), PASSWORD).unwrap();
    let data = dir.join("data");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(data.join("first.bin"), noise(1 << 20, 3)).unwrap();
    stack.launch();
    let packs = || -> Vec<PathBuf> {
        let mut all = Vec::new();
        for d in std::fs::read_dir(dir.join("repo/data")).unwrap() {
            for f in std::fs::read_dir(d.unwrap().path()).unwrap() {
                all.push(f.unwrap().path());
            }
        }
        all
    };

    let good = backup_json(&stack, &["run", "files"])["snapshot"]
        .as_str()
        .unwrap()
        .to_owned();
    let before = packs();
    std::fs::write(data.join("second.bin"), noise(1 << 20, 4)).unwrap();
    let second = backup_json(&stack, &["run", "files"]);
    assert_eq!(second["forgotten"], serde_json::json!([]));
    let second = second["snapshot"].as_str().unwrap().to_owned();
    let new_pack = packs()
        .into_iter()
        .find(|p| !before.contains(p))
        .expect("the second run wrote a pack");

    // One byte flipped in the pack only the second snapshot needs.
    let mut bytes = std::fs::read(&new_pack).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x01;
    std::fs::write(&new_pack, &bytes).unwrap();

    let verify = backup_json(&stack, &["verify", "files"]);
    assert_eq!(
        verify["damaged"],
        serde_json::json!([second.clone()]),
        "{verify:#}"
    );
    let alert = eventually("the corruption alert", Duration::from_secs(10), || {
        firing(&stack, "backup-corrupt:files")
    });
    assert_eq!(alert["severity"], "page");
    let incidents = get_json(&stack, "/v1/incidents");
    assert!(
        incidents.to_string().contains("backup-corrupt:files"),
        "a page opens an incident: {incidents:#}"
    );
    let list = backup_json(&stack, &["list", "files"]);
    let state: BTreeMap<&str, (bool, bool)> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["id"].as_str().unwrap(),
                (s["verified"] == true, s["damaged"] == true),
            )
        })
        .collect();
    assert_eq!(state.get(second.as_str()), Some(&(false, true)), "{list:#}");

    // The next backup reuses the damaged data, so it is damaged too. The keep rules
    // (last = 2) would keep only it and the second; the first, the newest good one, stays.
    let out = stack.cli(&["backup", "run", "files"]);
    assert!(!out.status.success(), "a damaged snapshot fails its run");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("reuses data found damaged earlier"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let list = backup_json(&stack, &["list", "files"]);
    let snaps = list.as_array().unwrap();
    assert_eq!(snaps.len(), 3, "{list:#}");
    assert_eq!(snaps[0]["id"], good.as_str(), "{list:#}");
    assert_eq!(
        (&snaps[0]["verified"], &snaps[0]["damaged"]),
        (&Value::Bool(true), &Value::Bool(false))
    );
    assert!(snaps[1..].iter().all(|s| s["damaged"] == true), "{list:#}");
    let in_restic = restic(&dir.join("repo"), &["snapshots", "--json"]);
    assert!(
        in_restic.contains(&good),
        "restic still lists {good}: {in_restic}"
    );
    let status = backup_json(&stack, &["list"]);
    assert_eq!(status[0]["newest_verified"], good.as_str());

    latest_is_the_newest_good_snapshot(&stack, &dir, &data, &good);
}

/// `latest` restores the newest good snapshot, not the newest damaged one; a relative
/// target is refused.
fn latest_is_the_newest_good_snapshot(stack: &Stack, dir: &Path, data: &Path, good: &str) {
    let target = dir.join("restored");
    let out = stack.cli(&[
        "backup",
        "restore",
        "latest",
        "--to",
        target.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains(&good[..8]));
    let restored = target.join(data.strip_prefix("/").unwrap());
    assert_eq!(
        std::fs::read(restored.join("first.bin")).unwrap(),
        noise(1 << 20, 3)
    );
    assert!(
        !restored.join("second.bin").exists(),
        "the good snapshot predates second.bin"
    );
    let (code, body) = stack.call(
        "POST",
        "/v1/backups/files/restore?snapshot=latest&to=relative/dir",
        "127.0.0.1",
        true,
    );
    assert_eq!(code, 400, "{body}");
}

#[test]
fn a_failing_backup_raises_the_rpo_alert_once_the_rpo_passes_and_a_good_one_resolves_it() {
    let mut stack = Stack::prepare(
        r#"
[services.files]
run = ["sleep", "1000"]
cwd = "."

[[backups]]
name = "files"
service = "files"
paths = ["data"]
schedule = "* * * * * *"
repository = "repo"
password_file = "pw"
rpo = "3s"
hooks.pre = { run = ["sh", "-c", "test ! -e broken"] }
"#,
    );
    let dir = stack.dir.path().to_path_buf();
    std::fs::write(dir.join("pw"), PASSWORD).unwrap();
    std::fs::create_dir_all(dir.join("data")).unwrap();
    std::fs::write(dir.join("broken"), "").unwrap();
    stack.launch();
    let alert = eventually("the RPO alert", Duration::from_secs(20), || {
        firing(&stack, "backup-rpo:files")
    });
    assert_eq!(alert["severity"], "page");
    assert!(
        alert["summary"].as_str().unwrap().contains("RPO 3s"),
        "{alert}"
    );
    let status = backup_json(&stack, &["list"]);
    let record = &status[0]["record"];
    assert!(record["runs_failed"].as_u64().unwrap() >= 2, "{status:#}");
    assert!(
        record["last_run"]["error"]
            .as_str()
            .unwrap()
            .contains("the pre hook failed"),
        "{status:#}"
    );
    std::fs::remove_file(dir.join("broken")).unwrap();
    eventually("the RPO alert to resolve", Duration::from_secs(20), || {
        firing(&stack, "backup-rpo:files").is_none().then_some(())
    });
}
