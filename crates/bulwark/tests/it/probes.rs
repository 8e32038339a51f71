//! Issue 2, acceptance 2 and 5: liveness restarts a hung replica; a slow starter is not
//! killed and joins the balancer only when ready.

use std::time::Duration;

use crate::harness::*;

#[test]
fn hung_replicas_are_restarted_by_liveness() {
    let port = free_port();
    let stack = Stack::start(&crate::proxy::demo_stack(port, 2));
    let svc = stack.wait_ready("web", 2);
    let r0 = &svc["replicas"][0];
    let r1 = &svc["replicas"][1];
    let (pid0, pid1) = (
        r0["pid"].as_u64().unwrap() as u32,
        r1["pid"].as_u64().unwrap() as u32,
    );
    // replica 0: frozen by SIGSTOP; replica 1: stops answering (demo /fault/hang)
    signal(pid0, libc::SIGSTOP);
    let p1 = format!("127.0.0.1:{}", r1["port"]).parse().unwrap();
    assert_eq!(get(p1, "/fault/hang").0, 200);
    let svc = stack.wait_service(
        "web",
        "both hung replicas replaced",
        Duration::from_secs(30),
        |s| {
            let reps = s["replicas"].as_array().unwrap();
            reps.iter()
                .all(|r| r["ready"] == true && r["restarts"].as_u64() >= Some(1))
        },
    );
    let pids = replica_pids(&svc);
    assert!(!pids.contains(&pid0) && !pids.contains(&pid1), "{svc}");
    assert!(!alive(pid0) && !alive(pid1), "hung processes are gone");
    let failed: Vec<_> = stack
        .events()
        .into_iter()
        .filter(|e| e["type"] == "probe_failed" && e["probe"] == "liveness")
        .collect();
    assert!(failed.len() >= 2, "{failed:?}");
    assert!(
        failed[0]["reason"]
            .as_str()
            .unwrap()
            .contains("liveness probe failed 3 times"),
        "{failed:?}"
    );
}

#[test]
fn slow_starter_is_not_killed_and_joins_only_when_ready() {
    let port = free_port();
    let toml = Demo::with_args("slow", &["--startup-delay", "2s"])
        .startup_probe()
        .with(
            r#"[services.slow.liveness]
http = "/healthz"
period = "100ms"
failure_threshold = 2"#,
        )
        .ready_every("100ms")
        .expose(port)
        .build();
    let stack = Stack::start(&toml);
    let addr = format!("127.0.0.1:{port}").parse().unwrap();
    // Before it is ready the proxy has nobody to send to.
    let (code, _) = get(addr, "/");
    assert_eq!(code, 503);
    let svc = stack.wait_ready("slow", 1);
    assert_eq!(
        svc["replicas"][0]["restarts"], 0,
        "liveness did not kill the slow starter"
    );
    assert_eq!(get(addr, "/").0, 200);
    let events = stack.events();
    let at = |t: &str| {
        events
            .iter()
            .find(|e| e["type"] == t)
            .unwrap_or_else(|| panic!("no {t} in {events:?}"))["at_ms"]
            .as_u64()
            .unwrap()
    };
    let waited = at("replica_ready") - at("replica_started");
    assert!(
        waited >= 1900,
        "ready only after the 2 s startup, was {waited} ms"
    );
    assert!(
        !events.iter().any(|e| e["type"] == "probe_failed"),
        "{events:?}"
    );
}

#[test]
fn exec_and_tcp_probes() {
    let dir = tempfile::tempdir().unwrap();
    let flag = dir.path().join("ready");
    let port = free_port();
    let files = format!(
        r#"
[services.files]
run = ["sh", "-c", "while true; do sleep 0.1; done"]
[services.files.readiness]
exec = ["test", "-f", "{flag}"]
period = "100ms"
success_threshold = 2
failure_threshold = 2
"#,
        flag = flag.display()
    );
    let echo = Demo::new("echo")
        .with("[services.echo.liveness]\ntcp = true\nperiod = \"100ms\"")
        .expose(port)
        .build();
    let toml = format!("{files}{echo}");
    let stack = Stack::start(&toml);
    // exposed without a readiness probe: the default TCP readiness admits it
    stack.wait_ready("echo", 1);
    assert_eq!(
        get(format!("127.0.0.1:{port}").parse().unwrap(), "/").0,
        200
    );
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        stack.service("files")["ready"],
        0,
        "exec probe fails while the file is missing"
    );
    std::fs::write(&flag, "").unwrap();
    stack.wait_ready("files", 1);
    std::fs::remove_file(&flag).unwrap();
    stack.wait_ready("files", 0);
    let unready = stack
        .events()
        .into_iter()
        .find(|e| e["type"] == "replica_unready")
        .unwrap();
    assert!(
        unready["reason"]
            .as_str()
            .unwrap()
            .contains("exec \"test\""),
        "{unready}"
    );
    assert_eq!(
        stack.service("files")["replicas"][0]["restarts"],
        0,
        "readiness never restarts"
    );
    assert_eq!(stack.service("echo")["replicas"][0]["restarts"], 0);
}
