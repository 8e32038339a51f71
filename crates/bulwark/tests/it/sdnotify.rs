//! systemd's notify protocol (issue 14, acceptance 5): a replica that speaks it is ready
//! only after `READY=1` and restarted when its `WATCHDOG=1` stops; its socket ignores
//! other processes and shrugs off floods; bulwark itself speaks it to its manager; and
//! `bulwark systemd-unit` prints a unit systemd accepts.

use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::harness::*;

const APP: &str = include_str!("notify_app.py");

/// A stack of one service `app` running `notify_app.py ARGS`, exposed on a port of its
/// own, with `[services.app.notify]` holding `notify`.
fn app_stack(args: &str, notify: &str) -> (Stack, u16) {
    let port = free_port();
    let mut stack = Stack::prepare("");
    let script = stack.dir.path().join("notify_app.py");
    std::fs::write(&script, APP).unwrap();
    let args: Vec<String> = args.split_whitespace().map(|a| format!("{a:?}")).collect();
    let toml = format!(
        "[services.app]\nrun = [\"python3\", {script:?}, {}]\nstop_grace = \"2s\"\n\
         [services.app.expose]\nlisten = \"127.0.0.1:{port}\"\n\
         [services.app.notify]\n{notify}\n\n[api]\nlisten = \"127.0.0.1:0\"\n",
        args.join(", ")
    );
    std::fs::write(stack.dir.path().join("stack.toml"), toml).unwrap();
    stack.launch();
    (stack, port)
}

pub(crate) fn at_ms(e: &Value) -> u64 {
    e["at_ms"].as_u64().unwrap()
}

pub(crate) fn event(events: &[Value], pred: impl Fn(&Value) -> bool) -> Option<Value> {
    events.iter().find(|e| pred(e)).cloned()
}

/// `NAME` from the environment of process `pid`.
pub(crate) fn env_of(pid: u32, name: &str) -> Option<String> {
    let environ = std::fs::read(format!("/proc/{pid}/environ")).unwrap();
    environ.split(|&b| b == 0).find_map(|kv| {
        let kv = String::from_utf8_lossy(kv);
        kv.strip_prefix(&format!("{name}=")).map(str::to_owned)
    })
}

#[test]
fn a_notify_app_is_ready_only_after_ready_1_and_restarted_when_its_watchdog_stops() {
    // READY=1 3 s after start; WATCHDOG=1 every 200 ms until 7 s after start.
    let (stack, port) = app_stack("3 0.2 7", "watchdog = \"1s\"");
    let r = stack.wait_notify_status("app", "starting");
    let pid = r["pid"].as_u64().unwrap() as u32;
    assert_eq!(r["ready"], false, "ready before READY=1: {r}");
    assert_eq!(
        env_of(pid, "WATCHDOG_USEC").as_deref(),
        Some("1000000"),
        "the replica is told its watchdog as systemd tells it"
    );
    // The app listens from the start (the implied TCP readiness probe passes), yet no
    // request reaches it before READY=1.
    let (code, body) = get(format!("127.0.0.1:{port}").parse().unwrap(), "/");
    assert_eq!(code, 503, "served before READY=1: {body}");
    let shown = output_text(&stack.cli(&["status"]));
    assert!(shown.contains("status: starting"), "{shown}");

    let r = stack.wait_notify_status("app", "serving");
    eventually("the replica to be ready", Duration::from_secs(10), || {
        (stack.first_replica("app")["ready"] == true).then_some(())
    });
    assert_eq!(r["pid"], pid);
    let (code, body) = get(format!("127.0.0.1:{port}").parse().unwrap(), "/");
    assert_eq!((code, body.as_str()), (200, "hello from the notify app\n"));

    // The watchdog stops 7 s after start and is 1 s: a restart, with the event saying why.
    let failed = eventually("a watchdog timeout", Duration::from_secs(30), || {
        event(&stack.events(), |e| {
            e["type"] == "probe_failed" && e["probe"] == "watchdog"
        })
    });
    assert!(
        failed["reason"]
            .as_str()
            .unwrap()
            .starts_with("watchdog timeout: no WATCHDOG=1 within 1s"),
        "{failed}"
    );
    let events = stack.events();
    let started = event(&events, |e| {
        e["type"] == "replica_started" && e["pid"] == pid
    })
    .unwrap();
    let ready = event(&events, |e| e["type"] == "replica_ready").unwrap();
    let ready_after = at_ms(&ready) - at_ms(&started);
    assert!(
        ready_after >= 3_000,
        "ready {ready_after} ms after start, before READY=1"
    );
    let timeout_after = at_ms(&failed) - at_ms(&started);
    assert!(
        (7_600..=7_000 + 1_000 + 2_500).contains(&timeout_after),
        "watchdog timeout {timeout_after} ms after start: the last WATCHDOG=1 went out \
         between 6 800 and 7 000 ms after the app's start and the watchdog is 1 000 ms"
    );
    let restarted = eventually("a new incarnation", Duration::from_secs(30), || {
        let r = stack.first_replica("app");
        (r["pid"].as_u64().is_some_and(|p| p as u32 != pid) && r["restarts"] == 1).then_some(r)
    });
    assert_eq!(
        restarted["ready"], false,
        "a new incarnation starts unready: {restarted}"
    );
    println!("ready {ready_after} ms after start; watchdog timeout {timeout_after} ms after start");
}

#[test]
fn a_foreign_ready_1_is_ignored_a_flood_stalls_nothing_reloading_and_stopping_take_it_out() {
    // Never ready by itself; READY=1 on its second SIGUSR1.
    let (stack, port) = app_stack("-1 0 0", "");
    let r = stack.wait_notify_status("app", "starting");
    let pid = r["pid"].as_u64().unwrap() as u32;
    let socket = PathBuf::from(env_of(pid, "NOTIFY_SOCKET").expect("NOTIFY_SOCKET set"));
    assert_eq!(env_of(pid, "WATCHDOG_USEC"), None, "no watchdog declared");
    assert_eq!(
        socket.parent(),
        Some(stack.state_dir().join("notify").as_path())
    );
    let dir_mode = std::fs::metadata(socket.parent().unwrap())
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(
        dir_mode & 0o777,
        0o700,
        "the sockets' directory is bulwark's alone"
    );

    // This test process is outside the replica's process group.
    let foreign = UnixDatagram::unbound().unwrap();
    foreign.send_to(b"READY=1\nSTATUS=forged", &socket).unwrap();
    // The app's own datagram comes after the forged one on the same socket: once it shows,
    // the forged one was read (and dropped).
    signal(pid, libc::SIGUSR1);
    let r = stack.wait_notify_status("app", "signalled 1");
    assert_eq!(
        r["ready"], false,
        "a foreign READY=1 made the replica ready: {r}"
    );
    let (code, _) = get(format!("127.0.0.1:{port}").parse().unwrap(), "/");
    assert_eq!(code, 503);

    let (sent, latencies) = flood_while_calling(&stack, &socket, Duration::from_secs(3));
    let worst = latencies.iter().max().unwrap();
    let mut sorted = latencies.clone();
    sorted.sort();
    let median = sorted[sorted.len() / 2];
    println!(
        "{sent} garbage datagrams in 3 s; {} status calls meanwhile, median {median:?}, worst {worst:?}",
        latencies.len()
    );
    assert!(sent >= 1_000, "the flood sent only {sent} datagrams");
    assert!(
        *worst < Duration::from_millis(1_500),
        "the API stalled for {worst:?}"
    );

    // The socket still works for the replica, which is still the same process.
    signal(pid, libc::SIGUSR1);
    let r = stack.wait_notify_status("app", "signalled 2");
    assert_eq!(r["pid"], pid);
    assert_eq!(r["restarts"], 0);
    eventually(
        "ready after its own READY=1",
        Duration::from_secs(10),
        || (stack.first_replica("app")["ready"] == true).then_some(()),
    );
    let (code, _) = get(format!("127.0.0.1:{port}").parse().unwrap(), "/");
    assert_eq!(code, 200);

    // RELOADING=1: unready until the next READY=1.
    signal(pid, libc::SIGHUP);
    let r = stack.wait_notify_status("app", "reloading");
    assert_eq!(r["ready"], false, "ready while reloading: {r}");
    signal(pid, libc::SIGUSR1);
    stack.wait_notify_status("app", "signalled 3");
    eventually("ready again after READY=1", Duration::from_secs(10), || {
        (stack.first_replica("app")["ready"] == true).then_some(())
    });

    // STOPPING=1: out of the balancer while the process still runs.
    signal(pid, libc::SIGUSR2);
    let r = stack.wait_notify_status("app", "stopping");
    assert_eq!(
        (r["ready"].clone(), r["pid"].clone()),
        (Value::from(false), Value::from(pid))
    );
    assert!(alive(pid));
    let (code, _) = get(format!("127.0.0.1:{port}").parse().unwrap(), "/");
    assert_eq!(
        code, 503,
        "a replica that said STOPPING=1 still gets requests"
    );
    let said = |e: &Value| {
        e["reason"]
            .as_str()
            .is_some_and(|r| r.contains("STOPPING=1"))
    };
    let events = stack.events();
    assert!(
        event(&events, |e| e["type"] == "replica_unready" && said(e)).is_some(),
        "no replica_unready event saying STOPPING=1: {events:?}"
    );
}

/// Floods `socket` from two threads of this process (oversized, binary, and forged
/// `READY=1`/`WATCHDOG=trigger` datagrams) for `how_long`, while calling the API's
/// status; returns how many datagrams went out and each call's latency.
pub(crate) fn flood_while_calling(
    stack: &Stack,
    socket: &Path,
    how_long: Duration,
) -> (u64, Vec<Duration>) {
    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicU64::new(0));
    let floods: Vec<_> = (0..2)
        .map(|t| {
            let (stop, sent, socket) = (stop.clone(), sent.clone(), socket.to_owned());
            std::thread::spawn(move || {
                let sock = UnixDatagram::unbound().unwrap();
                sock.set_write_timeout(Some(Duration::from_millis(100)))
                    .unwrap();
                let oversized = vec![b'A'; 64 * 1024];
                let binary: Vec<u8> = (0..4096u32).map(|i| (i * 7 + t) as u8).collect();
                let forged = b"READY=1\nWATCHDOG=trigger\nSTOPPING=1\nSTATUS=forged\n".repeat(50);
                let mut i = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let msg: &[u8] = match i % 3 {
                        0 => &oversized,
                        1 => &binary,
                        _ => &forged,
                    };
                    if sock.send_to(msg, &socket).is_ok() {
                        sent.fetch_add(1, Ordering::Relaxed);
                    }
                    i += 1;
                }
            })
        })
        .collect();
    let mut latencies = Vec::new();
    let end = Instant::now() + how_long;
    while Instant::now() < end {
        let t = Instant::now();
        stack.status();
        latencies.push(t.elapsed());
        std::thread::sleep(Duration::from_millis(20));
    }
    stop.store(true, Ordering::Relaxed);
    for f in floods {
        f.join().unwrap();
    }
    (sent.load(Ordering::Relaxed), latencies)
}

/// What a manager's notify socket received, message by message.
fn received(sock: &UnixDatagram, until: Instant) -> Vec<(Instant, String)> {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while Instant::now() < until {
        sock.set_read_timeout(Some(
            until
                .saturating_duration_since(Instant::now())
                .max(Duration::from_millis(1)),
        ))
        .unwrap();
        if let Ok(n) = sock.recv(&mut buf) {
            got.push((
                Instant::now(),
                String::from_utf8_lossy(&buf[..n]).into_owned(),
            ));
        }
    }
    got
}

#[test]
fn bulwark_up_tells_its_manager_ready_status_watchdog_reloading_and_stopping() {
    let mut stack = Stack::prepare(&Demo::new("web").build());
    let path = stack.dir.path().join("manager.sock");
    let manager = UnixDatagram::bind(&path).unwrap();
    stack.env("NOTIFY_SOCKET", path.to_str().unwrap());
    // A watchdog of 1 s: bulwark pings every 500 ms.
    stack.env("WATCHDOG_USEC", "1000000");
    stack.launch();
    let got = received(&manager, Instant::now() + Duration::from_secs(3));
    let first = &got.first().expect("a message within 3 s").1;
    assert!(first.starts_with("READY=1\nSTATUS="), "{got:?}");
    let pings: Vec<Instant> = got
        .iter()
        .filter(|(_, m)| m.lines().any(|l| l == "WATCHDOG=1"))
        .map(|(at, _)| *at)
        .collect();
    assert!(
        pings.len() >= 4,
        "{} pings in 3 s at 500 ms: {got:?}",
        pings.len()
    );
    let widest = pings.windows(2).map(|w| w[1] - w[0]).max().unwrap();
    assert!(
        widest < Duration::from_secs(1),
        "pings {widest:?} apart: late for the watchdog"
    );
    let web = stack.wait_ready("web", 1);
    let statuses = received(&manager, Instant::now() + Duration::from_secs(2));
    let all: Vec<&String> = got.iter().chain(&statuses).map(|(_, m)| m).collect();
    assert!(
        all.iter()
            .any(|m| m.contains("STATUS=1/1 replicas ready in 1 service")),
        "{all:?}"
    );
    // bulwark's socket is its own: the replica does not inherit it.
    let replica = replica_pids(&web)[0];
    assert_eq!(env_of(replica, "NOTIFY_SOCKET"), None);
    assert_eq!(env_of(replica, "WATCHDOG_USEC"), None);

    // A reload (SIGHUP, as the unit's ExecReload sends) is framed by RELOADING=1 and
    // READY=1.
    signal(stack.pid(), libc::SIGHUP);
    let reload = received(&manager, Instant::now() + Duration::from_secs(2));
    let at = |line: &str| {
        reload
            .iter()
            .position(|(_, m)| m.lines().any(|l| l == line))
    };
    let reloading = at("RELOADING=1").unwrap_or_else(|| panic!("no RELOADING=1: {reload:?}"));
    assert!(
        reload[reloading + 1..]
            .iter()
            .any(|(_, m)| m.lines().any(|l| l == "READY=1")),
        "no READY=1 after RELOADING=1: {reload:?}"
    );

    stack.terminate(Duration::from_secs(30));
    let rest = received(&manager, Instant::now() + Duration::from_millis(300));
    assert!(
        rest.iter().any(|(_, m)| m.starts_with("STOPPING=1")),
        "no STOPPING=1 after SIGTERM: {rest:?}"
    );
}

#[test]
fn systemd_unit_prints_a_notify_unit_that_systemd_accepts() {
    let toml = "[services.db]\nrun = [\"sleep\", \"600\"]\nstop_grace = \"20s\"\n\
                [services.web]\nrun = [\"sleep\", \"600\"]\nstop_grace = \"5s\"\n\
                depends_on = [\"db\"]\n";
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("my stack.toml");
    std::fs::write(&file, toml).unwrap();
    let out = Command::new(BULWARK)
        .args(["systemd-unit", "-f"])
        .arg(&file)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", output_text(&out));
    let unit = String::from_utf8(out.stdout).unwrap();
    let value = |key: &str| {
        unit.lines()
            .find_map(|l| l.strip_prefix(&format!("{key}=")))
            .unwrap_or_else(|| panic!("no {key}= in\n{unit}"))
            .to_owned()
    };
    assert_eq!(value("Type"), "notify");
    assert_eq!(
        value("ExecStart"),
        format!(
            "\"{}\" up -f \"{}\"",
            Path::new(BULWARK).display(),
            file.display()
        )
    );
    assert_eq!(value("ExecReload"), "/bin/kill -HUP $MAINPID");
    assert_eq!(value("WatchdogSec"), "30s");
    assert_eq!(value("KillMode"), "mixed");
    // 20 s + 5 s of grace in a row, and 15 s for the journal, audit log and API.
    assert_eq!(value("TimeoutStopSec"), "40s");
    assert_eq!(value("Restart"), "on-failure");
    assert_eq!(value("NoNewPrivileges"), "yes");

    let unit_file = dir.path().join("bulwark-test.service");
    std::fs::write(&unit_file, &unit).unwrap();
    match Command::new("systemd-analyze")
        .arg("verify")
        .arg(&unit_file)
        .output()
    {
        Ok(verified) => assert!(
            verified.status.success() && verified.stderr.is_empty(),
            "systemd-analyze verify:\n{}\n{unit}",
            output_text(&verified)
        ),
        Err(e) => println!("systemd-analyze not found ({e}); checked by parsing only"),
    }

    std::fs::write(&file, "[services.web]\nrun = []\n").unwrap();
    let bad = Command::new(BULWARK)
        .args(["systemd-unit", "-f"])
        .arg(&file)
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(2));
    assert!(
        output_text(&bad).contains("my stack.toml"),
        "{}",
        output_text(&bad)
    );
}
