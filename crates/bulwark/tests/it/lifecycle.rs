//! Issue 2, acceptance 6: stopping bulwark leaves nothing running.

use std::time::{Duration, Instant};

use crate::harness::*;

fn stack_with_stubborn(port: u16) -> String {
    Demo::new("web")
        .replicas(2)
        .expose(port)
        .with(
            r#"
[services.stubborn]
run = ["sh", "-c", "trap 'echo got-term' TERM; echo started; while true; do sleep 0.1; done"]
stop_grace = "1s"
depends_on = ["web"]

[services.polite]
run = ["sh", "-c", "trap 'echo got-int; exit 0' INT; trap 'echo wrong-signal' TERM; while true; do sleep 0.1; done"]
stop_signal = "INT"
"#,
        )
        .build()
}

#[test]
fn sigterm_stops_every_replica_and_kills_the_stubborn_after_grace() {
    let port = free_port();
    let mut stack = Stack::start(&stack_with_stubborn(port));
    stack.wait_ready("web", 2);
    stack.wait_ready("stubborn", 1);
    stack.wait_ready("polite", 1);
    eventually("stubborn to print", Duration::from_secs(10), || {
        stack
            .stdout()
            .contains("stubborn/0 | started")
            .then_some(())
    });
    let before = stack.descendants();
    assert!(before.len() >= 4, "replicas are running: {before:?}");
    let began = Instant::now();
    let status = stack.terminate(Duration::from_secs(30));
    assert!(
        status.success(),
        "up exits 0 on SIGTERM: {status}\n{}",
        stack.stderr()
    );
    assert!(
        began.elapsed() >= Duration::from_millis(900),
        "waited for the grace"
    );
    // the stubborn replica got its stop signal, ignored it, and was killed
    assert!(
        stack.stdout().contains("stubborn/0 | got-term"),
        "{}",
        stack.stdout()
    );
    assert!(
        stack.stderr().contains("stop grace expired"),
        "{}",
        stack.stderr()
    );
    eventually("no process left", Duration::from_secs(5), || {
        stack.descendants().is_empty().then_some(())
    });
    for p in before {
        assert!(!alive(p), "{p} survived");
    }
}

#[test]
fn kill_nine_of_up_leaves_no_replica() {
    let port = free_port();
    let stack = Stack::start(&stack_with_stubborn(port));
    stack.wait_ready("web", 2);
    stack.wait_ready("stubborn", 1);
    let before = stack.descendants();
    assert!(before.len() >= 3, "{before:?}");
    signal(stack.pid(), libc::SIGKILL);
    eventually(
        "every replica to die with bulwark",
        Duration::from_secs(10),
        || before.iter().all(|&p| !alive(p)).then_some(()),
    );
}

#[test]
fn dependencies_start_in_order_and_stop_in_reverse() {
    let toml = r#"
[services.app]
run = ["sh", "-c", "trap 'echo bye; exit 0' TERM; while true; do sleep 0.05; done"]
depends_on = ["db"]
[services.db]
run = ["{bulwark}", "demo", "--port", "{port}", "--startup-delay", "1s"]
[services.db.readiness]
http = "/ready"
period = "100ms"
"#;
    let mut stack = Stack::start(toml);
    stack.wait_ready("app", 1);
    let seq = |events: &[serde_json::Value], ty: &str, svc: &str| {
        events
            .iter()
            .find(|e| e["type"] == ty && e["service"] == svc)
            .unwrap_or_else(|| panic!("no {ty} of {svc} in {events:?}"))["seq"]
            .as_u64()
            .unwrap()
    };
    let events = stack.events();
    assert!(
        seq(&events, "replica_ready", "db") < seq(&events, "replica_started", "app"),
        "{events:?}"
    );
    // Follow the event stream across the shutdown to see the stop order.
    let mut follower = std::process::Command::new(BULWARK)
        .args(["events", "--follow", "--json"])
        .env("BULWARK_STATE_DIR", stack.state_dir())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let lines = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let reader = {
        let lines = lines.clone();
        let out = follower.stdout.take().unwrap();
        std::thread::spawn(move || {
            use std::io::BufRead;
            for l in std::io::BufReader::new(out).lines().map_while(Result::ok) {
                lines.lock().unwrap().push(l);
            }
        })
    };
    // The backlog arrives first, so one line means the stream is open.
    eventually("the follower to connect", Duration::from_secs(10), || {
        (!lines.lock().unwrap().is_empty()).then_some(())
    });
    assert!(stack.terminate(Duration::from_secs(30)).success());
    let _ = follower.wait();
    reader.join().unwrap();
    let stream: Vec<serde_json::Value> = lines
        .lock()
        .unwrap()
        .iter()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    assert!(
        seq(&stream, "replica_exited", "app") < seq(&stream, "replica_stopping", "db"),
        "app stopped before db: {stream:?}"
    );
    assert!(stack.stdout().contains("app/0 | bye"), "{}", stack.stdout());
}
