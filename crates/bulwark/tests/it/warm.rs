//! Warm restarts (`[services.NAME.warm]`, issue 14): a replica that starts in 3 s is
//! checkpointed with CRIU once ready, and when killed it is restored from the checkpoint,
//! ready far sooner than a cold start; a damaged checkpoint falls back to a cold start.
//! Real CRIU (scripts/criu/install builds it), real processes, as root.

use std::time::{Duration, Instant};

use serde_json::Value;

use crate::harness::{Stack, alive, eventually, free_port, get, signal};

/// The slow demo: 503 for 3 s after it starts, a readiness probe every 50 ms, checkpointed
/// 300 ms after it is ready, exposed on `port`.
fn warm_stack(port: u16) -> String {
    let demo = r#"["{bulwark}", "demo", "--port", "{port}", "--startup-delay", "3s"]"#;
    warm_stack_of(demo, port)
}

/// [`warm_stack`] of the service that `run` (a TOML array) starts.
fn warm_stack_of(run: &str, port: u16) -> String {
    format!(
        r#"
[services.slow]
run = {run}
stop_grace = "2s"
[services.slow.backoff]
initial = "10ms"
max = "100ms"
[services.slow.readiness]
http = "/healthz"
period = "50ms"
failure_threshold = 1
[services.slow.warm]
after = "300ms"
[services.slow.expose]
listen = "127.0.0.1:{port}"
"#
    )
}

fn event(stack: &Stack, ty: &str, after: u64) -> Option<Value> {
    stack
        .events()
        .into_iter()
        .find(|e| e["type"] == ty && e["seq"].as_u64().unwrap() > after)
}

fn last_seq(stack: &Stack) -> u64 {
    stack
        .events()
        .last()
        .map_or(0, |e| e["seq"].as_u64().unwrap())
}

/// Kills the ready replica with SIGKILL and returns how long until it was ready again.
fn kill_to_ready(stack: &Stack) -> (u32, Duration) {
    let r = stack.wait_ready("slow", 1)["replicas"][0].clone();
    let pid = r["pid"].as_u64().unwrap() as u32;
    let restarts = r["restarts"].as_u64().unwrap();
    let t = Instant::now();
    signal(pid, libc::SIGKILL);
    stack.wait_service("slow", "ready again", Duration::from_secs(30), |s| {
        let r = &s["replicas"][0];
        r["ready"] == true && r["restarts"].as_u64() > Some(restarts)
    });
    (pid, t.elapsed())
}

/// Waits for a `replica_checkpointed` after `after` (a seq); a `replica_checkpoint_failed`
/// fails the test at once, with CRIU's reason.
fn checkpoint(stack: &Stack, after: u64) -> Value {
    eventually("a checkpoint", Duration::from_secs(30), || {
        if let Some(failed) = event(stack, "replica_checkpoint_failed", after) {
            panic!("the checkpoint failed: {failed}");
        }
        event(stack, "replica_checkpointed", after)
    })
}

/// Kills the replica; it must come back through a restore, as the same pid, a child of
/// `up`, well before a cold start could be ready. Returns its pid.
fn kill_and_restore(stack: &Stack) -> u32 {
    let before = last_seq(stack);
    let (pid, took) = kill_to_ready(stack);
    let restored = event(stack, "replica_restored", before)
        .unwrap_or_else(|| panic!("no replica_restored event: {:#?}", stack.events()));
    assert_eq!(restored["pid"].as_u64(), Some(pid as u64), "{restored}");
    assert!(
        took < Duration::from_millis(1500),
        "restored kill→ready took {took:?}"
    );
    eprintln!("restored kill→ready: {took:?}, {restored}");
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let ppid: u32 = stat
        .rsplit_once(')')
        .unwrap()
        .1
        .split_whitespace()
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(ppid, stack.pid(), "the restored process is up's own child");
    pid
}

/// Kills the replica; it must come back cold (≥ 3 s) after a `replica_restore_failed`
/// whose reason contains `why`.
fn kill_and_start_cold(stack: &Stack, why: &str) {
    let before = last_seq(stack);
    let (_, took) = kill_to_ready(stack);
    let failed = event(stack, "replica_restore_failed", before)
        .unwrap_or_else(|| panic!("no replica_restore_failed event: {:#?}", stack.events()));
    assert!(failed["reason"].as_str().unwrap().contains(why), "{failed}");
    assert!(event(stack, "replica_restored", before).is_none());
    assert!(
        took >= Duration::from_secs(3),
        "a cold start took only {took:?}"
    );
    eprintln!("cold kill→ready: {took:?}, {failed}");
}

#[test]
fn a_killed_warm_replica_is_restored_from_its_checkpoint_and_a_broken_one_starts_cold() {
    let port = free_port();
    let mut stack = Stack::start(&warm_stack(port));
    let dumped = checkpoint(&stack, 0);
    assert!(dumped["dump_ms"].as_u64().unwrap() < 2000, "{dumped}");

    // Killed: restored, and it serves and logs as before.
    kill_and_restore(&stack);
    let (status, body) = get(format!("127.0.0.1:{port}").parse().unwrap(), "/");
    assert_eq!(status, 200, "{body}");
    // Its output still reaches bulwark: the demo logs a fault change.
    let replica = format!("127.0.0.1:{}", stack.first_replica("slow")["port"]);
    get(replica.parse().unwrap(), "/fault/slow?ms=1");
    eventually(
        "a log line of the restored replica",
        Duration::from_secs(10),
        || {
            let out = String::from_utf8(stack.cli(&["logs", "slow/0"]).stdout).unwrap();
            out.to_lowercase().contains("slow").then_some(())
        },
    );
    get(replica.parse().unwrap(), "/fault/reset");

    // A damaged checkpoint: a replica_restore_failed event and a cold start.
    let dir = stack.state_dir().join("warm/slow-0");
    for f in std::fs::read_dir(&dir).unwrap().flatten() {
        let name = f.file_name().to_string_lossy().into_owned();
        if name.starts_with("pages-") || name.starts_with("core-") {
            std::fs::remove_file(f.path()).unwrap();
        }
    }
    let seq = last_seq(&stack);
    kill_and_start_cold(&stack, "criu restore");
    let (status, _) = get(format!("127.0.0.1:{port}").parse().unwrap(), "/");
    assert_eq!(status, 200);

    // The cold replica is checkpointed again; a reload that changes the service's spec
    // makes that checkpoint stale: the next start is cold.
    checkpoint(&stack, seq);
    let file = stack.dir.path().join("stack.toml");
    let text = std::fs::read_to_string(&file).unwrap();
    std::fs::write(
        &file,
        text.replace("after = \"300ms\"", "after = \"350ms\""),
    )
    .unwrap();
    let out = stack.cli(&["reload"]);
    assert!(out.status.success(), "{out:?}");
    let seq = last_seq(&stack);
    kill_and_start_cold(&stack, "spec changed");

    // Stopped while a restored replica runs: nothing of it is left.
    checkpoint(&stack, seq);
    let restored = kill_and_restore(&stack);
    let procs = stack.descendants();
    assert!(procs.contains(&restored), "{procs:?} {restored}");
    stack.terminate(Duration::from_secs(20));
    for p in procs {
        assert!(!alive(p), "pid {p} outlived bulwark up");
    }
}

#[test]
fn a_restored_replica_dies_with_a_killed_bulwark() {
    let stack = Stack::start(&warm_stack(free_port()));
    checkpoint(&stack, 0);
    let restored = kill_and_restore(&stack);
    // Its parent-death signal was restored, tied to bulwark's launcher thread.
    signal(stack.pid(), libc::SIGKILL);
    eventually("the restored replica gone", Duration::from_secs(10), || {
        (!alive(restored)).then_some(())
    });
}

#[test]
fn check_reports_the_criu_it_found_and_refuses_what_cannot_be_restored() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("stack.toml");
    let run = |toml: &str, criu: Option<&str>| {
        std::fs::write(&file, toml).unwrap();
        let mut cmd = std::process::Command::new(crate::harness::BULWARK);
        cmd.args(["check", "-f"]).arg(&file);
        if let Some(c) = criu {
            cmd.env("BULWARK_CRIU", c);
        }
        let out = cmd.output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        (out.status.code(), text)
    };
    let warm = "[services.w]\nrun = [\"x\"]\n[services.w.warm]\nafter = \"1s\"\n";
    let (code, out) = run(warm, None);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("warm restarts (w): CRIU 4."), "{out}");
    let (code, out) = run(warm, Some("/nonexistent/criu"));
    assert_eq!(code, Some(2), "{out}");
    assert!(
        out.contains("[warm] of service w: BULWARK_CRIU names /nonexistent/criu"),
        "{out}"
    );
    let container = format!("{warm}[services.w.container]\nrootfs = \"r\"\n");
    let (code, out) = run(&container, None);
    assert_eq!(code, Some(2), "{out}");
    assert!(
        out.contains("warm restarts are not supported for a service with [services.w.container]"),
        "{out}"
    );
}

/// The host's pid of the process that is `ns_pid` in its own pid namespace, among `up`'s
/// descendants.
fn host_pid(stack: &Stack, ns_pid: u64) -> u32 {
    stack
        .descendants()
        .into_iter()
        .find(|p| {
            std::fs::read_to_string(format!("/proc/{p}/status"))
                .ok()
                .and_then(|s| {
                    let line = s.lines().find(|l| l.starts_with("NSpid:"))?;
                    line.split_whitespace().last()?.parse::<u64>().ok()
                })
                == Some(ns_pid)
        })
        .unwrap_or_else(|| panic!("no descendant of up is pid {ns_pid} in its namespace"))
}

/// CI's red runs: the job ran in a pid namespace whose session leader was outside it,
/// and so was every replica left in bulwark's session: `criu dump` refused them all ("A
/// session leader of ... is outside of its pid namespace"). `up` runs here the same way:
/// in a new pid namespace, under a shell that stays in the session of the test outside it.
/// Its replica, leader of a session of its own, is checkpointed and restored.
#[test]
fn a_replica_is_checkpointed_and_restored_when_up_runs_in_a_session_led_from_outside_its_pid_namespace()
 {
    let mut stack = Stack::prepare(&warm_stack(free_port()));
    // `; :` keeps the shell as the namespace's pid 1 and up as its child, as in a container.
    stack.launch_via(
        &[
            "unshare",
            "--pid",
            "--fork",
            "--mount-proc",
            "--kill-child",
            "sh",
            "-c",
            "\"$0\" \"$@\"; :",
        ],
        None,
    );
    checkpoint(&stack, 0);
    let r = stack.wait_ready("slow", 1)["replicas"][0].clone();
    let ns_pid = r["pid"].as_u64().unwrap();
    let restarts = r["restarts"].as_u64().unwrap();
    let pid = host_pid(&stack, ns_pid);
    let before = last_seq(&stack);
    signal(pid, libc::SIGKILL);
    stack.wait_service("slow", "ready again", Duration::from_secs(30), |s| {
        let r = &s["replicas"][0];
        r["ready"] == true && r["restarts"].as_u64() > Some(restarts)
    });
    let restored = event(&stack, "replica_restored", before)
        .unwrap_or_else(|| panic!("no replica_restored event: {:#?}", stack.events()));
    assert_eq!(restored["pid"].as_u64(), Some(ns_pid), "{restored}");
}

/// A slow replica (ready 3 s after it starts, on `$PORT`) that also holds a connection
/// its own second listener never accepts: a connection in flight, as a probe's or a
/// client's is when it arrives while CRIU dumps. Then it serves as
/// [`crate::proxy::ONE_AT_A_TIME`] does.
const IN_FLIGHT: &str = r#"
import socket, time
waiting = socket.socket()
waiting.bind(("127.0.0.1", 0))
waiting.listen(8)
client = socket.create_connection(waiting.getsockname())
time.sleep(3)
"#;

/// CI's red run of stop 31: a readiness probe's connection arrived during `criu dump`,
/// which refused it ("In-flight connection (l)") and the replica was never checkpointed.
/// A connection waiting in an accept queue is the running replica's to serve; the
/// checkpoint leaves it out (`--skip-in-flight`), and the restore serves.
#[test]
fn a_replica_with_a_connection_waiting_to_be_accepted_is_checkpointed_and_restored() {
    let port = free_port();
    let program = format!("{IN_FLIGHT}{}", crate::proxy::ONE_AT_A_TIME);
    let run = format!(r#"["python3", "-c", {program:?}]"#);
    let mut stack = Stack::start(&warm_stack_of(&run, port));
    checkpoint(&stack, 0);
    kill_and_restore(&stack);
    let (status, body) = get(format!("127.0.0.1:{port}").parse().unwrap(), "/");
    assert_eq!((status, body.as_str()), (200, "ok"));
    stack.terminate(Duration::from_secs(20));
}
