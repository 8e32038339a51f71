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
    format!(
        r#"
[services.slow]
run = ["{{bulwark}}", "demo", "--port", "{{port}}", "--startup-delay", "3s"]
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

#[test]
fn a_killed_warm_replica_is_restored_from_its_checkpoint_and_a_broken_one_starts_cold() {
    let port = free_port();
    let mut stack = Stack::start(&warm_stack(port));
    let checkpointed = eventually("a checkpoint", Duration::from_secs(30), || {
        event(&stack, "replica_checkpointed", 0)
    });
    assert!(
        checkpointed["dump_ms"].as_u64().unwrap() < 2000,
        "{checkpointed}"
    );

    // Killed: restored, same pid, ready well under the 3 s a cold start takes.
    let before = last_seq(&stack);
    let (pid, took) = kill_to_ready(&stack);
    let restored = event(&stack, "replica_restored", before)
        .unwrap_or_else(|| panic!("no replica_restored event: {:#?}", stack.events()));
    assert_eq!(restored["pid"].as_u64(), Some(pid as u64), "{restored}");
    assert!(
        took < Duration::from_millis(1500),
        "restored kill→ready took {took:?}"
    );
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
    let before = last_seq(&stack);
    let (_, took) = kill_to_ready(&stack);
    let failed = event(&stack, "replica_restore_failed", before).expect("a failure event");
    assert!(
        failed["reason"].as_str().unwrap().contains("criu restore"),
        "{failed}"
    );
    assert!(event(&stack, "replica_restored", before).is_none());
    assert!(
        took >= Duration::from_secs(3),
        "a cold start took only {took:?}"
    );
    let (status, _) = get(format!("127.0.0.1:{port}").parse().unwrap(), "/");
    assert_eq!(status, 200);

    // Stopped: nothing of it is left, restored or not.
    let procs = stack.descendants();
    stack.terminate(Duration::from_secs(20));
    for p in procs {
        assert!(!alive(p), "pid {p} outlived bulwark up");
    }
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
