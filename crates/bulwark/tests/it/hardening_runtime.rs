//! Hardening of the runtime: replicas survive journal writes, blocked or closed stdout,
//! leftovers and orphans are cleaned up, exec probes are bounded, file limits are raised.

use std::io::Read;
use std::net::SocketAddr;
use std::process::Stdio;
use std::time::{Duration, Instant};

use crate::harness::*;

fn restarts(svc: &serde_json::Value) -> Vec<u64> {
    svc["replicas"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["restarts"].as_u64().unwrap())
        .collect()
}

/// Fields of `/proc/<pid>/stat` after the command name: state, ppid, ...
fn stat_fields(pid: u32) -> Option<Vec<String>> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    Some(
        s.rsplit_once(')')?
            .1
            .split_whitespace()
            .map(str::to_owned)
            .collect(),
    )
}

fn zombie_children_of(parent: u32) -> Vec<u32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&p| stat_fields(p).is_some_and(|f| f[0] == "Z" && f[1] == parent.to_string()))
        .collect()
}

/// `(soft, hard)` "Max open files" of a process.
fn nofile(pid: u32) -> (String, String) {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap();
    let f: Vec<&str> = line.split_whitespace().collect();
    (f[3].to_owned(), f[4].to_owned())
}

fn serves(proxy: SocketAddr) -> bool {
    (0..5).all(|_| get(proxy, "/").0 == 200)
}

/// The issue's reproduction: `bulwark silence add web --for 1m` (and incidents, alerts)
/// made the journal write through `block_in_place`, tokio later retired that thread, and
/// replicas it had spawned died of their parent-death signal ~10 s later.
#[test]
fn journal_writes_do_not_kill_healthy_replicas() {
    let port = free_port();
    let toml = format!(
        "{}\n{}",
        crate::proxy::demo_stack(port, 3),
        Demo::new("other").ready_every("100ms").build()
    );
    let stack = Stack::start(&toml);
    let before = stack.wait_ready("web", 3);
    stack.wait_ready("other", 1);
    let pids = replica_pids(&before);
    assert_eq!(pids.len(), 3);
    // Silences (journal writes from API handlers)...
    for i in 0..5 {
        let out = stack.cli(&[
            "silence",
            "add",
            "web",
            "--for",
            "1m",
            "--comment",
            &format!("maintenance {i}"),
        ]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // ... and an incident: `other` loses its only ready replica when restarted.
    let (code, body) = stack.call("POST", "/v1/services/other/restart", "127.0.0.1", true);
    assert!(code < 300, "{code} {body}");
    eventually(
        "an incident to be recorded",
        Duration::from_secs(30),
        || {
            let (code, body) = stack.call("GET", "/v1/incidents", "127.0.0.1", true);
            (code == 200 && body.contains("other")).then_some(())
        },
    );
    // Tokio retires an idle blocking thread after 10 s; give it time to do its worst.
    std::thread::sleep(Duration::from_secs(15));
    let after = stack.service("web");
    assert_eq!(restarts(&after), vec![0, 0, 0], "{after}");
    assert_eq!(replica_pids(&after), pids, "{after}");
    for p in pids {
        assert!(alive(p), "replica {p} died");
    }
    assert!(serves(format!("127.0.0.1:{port}").parse().unwrap()));
}

/// A replica that prints a lot, next to a served one.
fn chatty_stack(port: u16) -> String {
    format!(
        "{}\n{}",
        crate::proxy::demo_stack(port, 2),
        r#"
[services.chatty]
run = ["sh", "-c", "while :; do seq -f 'chatty line %g with some padding to fill pipes' 1 2000; sleep 0.05; done"]
"#
    )
}

fn dropped_lines(stack: &Stack) -> u64 {
    let (code, body) = stack.call("GET", "/metrics", "127.0.0.1", true);
    assert_eq!(code, 200);
    body.lines()
        .find_map(|l| l.strip_prefix("bulwark_log_lines_dropped_total "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no bulwark_log_lines_dropped_total in:\n{body}"))
}

fn assert_unharmed(stack: &Stack, port: u16, chatty_pid: u32) {
    let began = Instant::now();
    let chatty = stack.service("chatty");
    assert!(
        began.elapsed() < Duration::from_secs(2),
        "the API answered in {:?}",
        began.elapsed()
    );
    assert_eq!(restarts(&chatty), vec![0], "{chatty}");
    assert_eq!(replica_pids(&chatty), vec![chatty_pid], "{chatty}");
    assert_eq!(restarts(&stack.service("web")), vec![0, 0]);
    assert!(serves(format!("127.0.0.1:{port}").parse().unwrap()));
    assert!(!stack.stderr().contains("panicked"), "{}", stack.stderr());
    assert!(alive(stack.pid()), "bulwark up is running");
}

/// `up` on the chatty stack with its stdout going into a pipe; returns the stack, the proxy's
/// port and the pipe's reading end.
fn chatty_up() -> (Stack, u16, std::io::PipeReader) {
    let port = free_port();
    let mut stack = Stack::prepare(&chatty_stack(port));
    let (reader, writer) = std::io::pipe().unwrap();
    stack.launch_via(&[], Some(Stdio::from(writer)));
    (stack, port, reader)
}

/// Once everything is ready, lets the chatty replica write for 5 s, then checks that
/// nothing was harmed and that the lines that could not be written were dropped, and counted.
fn assert_chatter_stalls_nothing(stack: &Stack, port: u16) {
    stack.wait_ready("web", 2);
    let chatty = stack.wait_ready("chatty", 1);
    let pid = replica_pids(&chatty)[0];
    // A pipe (64 KiB) fills within milliseconds; from then on every echoed line waits.
    std::thread::sleep(Duration::from_secs(5));
    assert_unharmed(stack, port, pid);
    assert!(
        dropped_lines(stack) > 1000,
        "lines were dropped, and counted"
    );
}

#[test]
fn a_stdout_nobody_reads_stalls_nothing() {
    let (stack, port, reader) = chatty_up();
    assert_chatter_stalls_nothing(&stack, port);
    // The replica's own output is still collected for `bulwark logs`.
    let (code, body) = stack.call("GET", "/v1/logs/chatty", "127.0.0.1", true);
    assert_eq!(code, 200);
    assert!(
        body.contains("chatty line"),
        "{}",
        &body[..body.len().min(500)]
    );
    drop(reader);
}

#[test]
fn a_closed_stdout_panics_nothing_and_kills_no_replica() {
    let (stack, port, mut reader) = chatty_up();
    // `bulwark up | head -c 1`: read a little, then hang up.
    let mut first = [0u8; 1];
    let _ = reader.read(&mut first);
    drop(reader);
    assert_chatter_stalls_nothing(&stack, port);
}

#[test]
fn what_a_replica_leaves_in_its_group_dies_with_it() {
    let files = tempfile::tempdir().unwrap();
    let bg = files.path().join("bg");
    let toml = format!(
        r#"
[services.leaver]
run = ["sh", "-c", "sleep 1000 & echo $! > {}; exec sleep 1"]
restart = "never"
"#,
        bg.display()
    );
    let stack = Stack::start(&toml);
    let pid: u32 = eventually("the leftover's pid", Duration::from_secs(30), || {
        std::fs::read_to_string(&bg).ok()?.trim().parse().ok()
    });
    stack.wait_service(
        "leaver",
        "the leader to exit",
        Duration::from_secs(30),
        |s| s["replicas"][0]["state"] == "exited",
    );
    eventually(
        "the leftover sleep to be killed",
        Duration::from_secs(10),
        || (!alive(pid)).then_some(()),
    );
}

#[test]
fn orphans_of_replicas_are_reaped_by_bulwark() {
    let files = tempfile::tempdir().unwrap();
    let orphan = files.path().join("orphan");
    let toml = format!(
        r#"
[services.web]
run = ["sh", "-c", "(sleep 2 & echo $! > {}); exec \"$0\" demo --port {{port}}", "{{bulwark}}"]
[services.web.readiness]
http = "/ready"
period = "100ms"
"#,
        orphan.display()
    );
    let stack = Stack::start(&toml);
    stack.wait_ready("web", 1);
    let up = stack.pid();
    let pid: u32 = eventually("the orphan's pid", Duration::from_secs(30), || {
        std::fs::read_to_string(&orphan).ok()?.trim().parse().ok()
    });
    // Its parent subshell is gone: it re-parents to bulwark (a subreaper), not init.
    let ppid = stat_fields(pid).map(|f| f[1].clone());
    assert_eq!(
        ppid,
        Some(up.to_string()),
        "the orphan re-parented to bulwark"
    );
    // It exits after 2 s; bulwark must reap it.
    std::thread::sleep(Duration::from_secs(3));
    eventually(
        "no zombie child of bulwark",
        Duration::from_secs(10),
        || zombie_children_of(up).is_empty().then_some(()),
    );
    assert!(stat_fields(pid).is_none(), "the orphan was reaped");
}

#[test]
fn a_timed_out_exec_probe_leaves_nothing_behind() {
    let files = tempfile::tempdir().unwrap();
    let bg = files.path().join("bg");
    let toml = Demo::new("web")
        .with(&format!(
            r#"[services.web.liveness]
exec = ["sh", "-c", "sleep 100 & echo $! >> {}; sleep 100"]
period = "1s"
timeout = "1s"
failure_threshold = 1000"#,
            bg.display()
        ))
        .build();
    let stack = Stack::start(&toml);
    let pids: Vec<u32> = eventually("three probe runs", Duration::from_secs(30), || {
        let pids: Vec<u32> = std::fs::read_to_string(&bg)
            .ok()?
            .lines()
            .filter_map(|l| l.trim().parse().ok())
            .collect();
        (pids.len() >= 3).then_some(pids)
    });
    // The first two runs timed out a while ago: their whole groups must be gone.
    for p in &pids[..2] {
        eventually(
            "a timed-out probe's sleep to die",
            Duration::from_secs(10),
            || (!alive(*p)).then_some(()),
        );
    }
    let failures = stack
        .events()
        .into_iter()
        .filter(|e| e["type"] == "probe_failed")
        .count();
    assert_eq!(failures, 0, "below the failure threshold");
}

#[test]
fn the_open_file_limit_is_raised_and_a_shortfall_is_named() {
    let port = free_port();
    let toml = Demo::new("web")
        .ready_every("100ms")
        .expose(port)
        .with("[services.web.expose.limits]\nmax_connections = 10000")
        .build();
    let mut stack = Stack::prepare(&toml);
    stack.launch_via(
        &[
            "sh",
            "-c",
            "ulimit -S -n 256 && ulimit -H -n 512 && exec \"$0\" \"$@\"",
        ],
        None,
    );
    let svc = stack.wait_ready("web", 1);
    assert_eq!(
        nofile(stack.pid()),
        ("512".into(), "512".into()),
        "the soft limit was raised to the hard one"
    );
    let replica = replica_pids(&svc)[0];
    assert_eq!(
        nofile(replica).0,
        "256",
        "replicas get the limit bulwark was started with"
    );
    let err = stack.stderr();
    assert!(
        err.contains("open-file limit too low") && err.contains("limits.max_connections"),
        "{err}"
    );
    assert!(err.contains("hard limit 512"), "{err}");
}

/// The regression: `up` started with a descriptor it should not have had (CI's agent left
/// a socket to every process) passed it on to every replica, so `criu dump` refused them
/// (the socket's peer is outside) and a pipe's reader would wait on replicas for its EOF.
/// The harness starts every `up` so (`STRAY_FD`); here its replicas are checked for it.
#[test]
fn replicas_inherit_no_descriptor_up_was_started_with() {
    let stack = Stack::start(&Demo::new("web").replicas(2).ready_every("100ms").build());
    let stray = stray_socket_of(stack.pid());
    assert!(stray.starts_with("socket:["), "{stray}");
    for pid in replica_pids(&stack.wait_ready("web", 2)) {
        let held: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
            .unwrap()
            .flatten()
            .filter_map(|e| std::fs::read_link(e.path()).ok())
            .map(|l| l.to_string_lossy().into_owned())
            .collect();
        assert!(
            !held.contains(&stray),
            "replica {pid} holds {stray}: {held:?}"
        );
    }
}
